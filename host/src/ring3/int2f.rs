//! INT 2Fh, the Windows multiplex interrupt, as ring-3 code sees it:
//! 1600h version, 1680h release time slice, 1681h/1682h begin/end critical
//! section, 1683h current VM ID, 1684h device API entry point, 1685h switch
//! VMs and call back, 1689h KERNEL's idle call. Plus the far calls ring-3 code makes: into exported
//! procedures and into VxD API entry points.

use vmm_plugin_api::abi::{ApiMode, Carry, ClientRegs, Regs, VmmError};
use vmm_plugin_api::ddk::*;

use crate::machine::Core;
use crate::ring3::{INT_SELECTOR, PM_API_SELECTOR, Target, V86_API_SEGMENT};
use crate::trace::{CallOutcome, TraceEvent};
use crate::violation::Violation;
use crate::vmm::callback::Callback;
use crate::vmm::context::Context;
use crate::vmm::events::EventKind;
use crate::vmm::ids::{InstanceId, VmId};

fn set_carry(c: &mut ClientRegs, on: bool) {
    if on {
        c.eflags |= CF_MASK;
    } else {
        c.eflags &= !CF_MASK;
    }
}

impl Core {
    /// Execute `INT n` for ring-3 code of the current VM.
    pub(crate) fn ring3_int(&self, n: u8) -> Result<(), VmmError> {
        match n {
            0x2F => self.int2f(),
            0x14 => self.bios_int14(),
            _ => Err(self.refuse(
                Violation::UnsupportedInterrupt,
                format!("INT {n:02X}h has no handler in this emulator (only INT 14h and 2Fh are provided)"),
                Some("INT"),
            )),
        }
    }

    /// The INT 2Fh handler, on the current VM's client registers.
    fn int2f(&self) -> Result<(), VmmError> {
        let vm = self.cur_vm.get();
        let Some(mut c) = self.client_of(vm) else { return Err(VmmError::INVALID_HANDLE) };
        let before = c;
        let ax = c.eax as u16;
        match ax {
            W386_GET_VERSION => {
                let (major, minor) = self.manifest.machine.windows_version;
                c.eax = (c.eax & 0xFFFF_0000) | ((minor as u32) << 8) | major as u32;
            }
            W386_RELEASE_TIME_SLICE => {
                c.eax &= 0xFFFF_FF00;
                // The rest of the slice goes to the others.
                self.sched.end_slice();
            }
            W386_KERNEL_IDLE if vm == self.sys_vm.get() => {
                // Windows is idle: the rest of the slice goes to the others,
                // and when they are idle too the idle handlers run.
                self.sched.end_slice();
                self.set_client_of(vm, c);
                self.kernel_idle();
                c = self.client_of(vm).unwrap_or(c);
            }
            W386_BEGIN_CRITICAL => {
                self.set_client_of(vm, c);
                self.claim_critical("INT 2Fh AX=1681h", 1, 0)?;
                c = self.client_of(vm).unwrap_or(c);
            }
            W386_END_CRITICAL => {
                self.set_client_of(vm, c);
                let _ = self.end_critical_for(vm, 1, "INT 2Fh AX=1682h");
                c = self.client_of(vm).unwrap_or(c);
            }
            W386_GET_CUR_VM_ID => {
                let id = self.vms.borrow().get(vm).map(|v| v.id).unwrap_or(0);
                c.ebx = (c.ebx & 0xFFFF_0000) | id;
            }
            W386_GET_DEVICE_API => {
                let id = c.ebx as u16;
                let pm = self.vms.borrow().get(vm).is_some_and(|v| v.pm);
                let entry = self.api_entry(id, pm);
                c.es = (entry >> 16) & 0xFFFF;
                c.edi = (c.edi & 0xFFFF_0000) | (entry & 0xFFFF);
            }
            W386_SWITCH_AND_CALL => {
                let error = self.switch_and_call(&c);
                set_carry(&mut c, error != 0);
                if error != 0 {
                    c.eax = (c.eax & 0xFFFF_0000) | error;
                }
            }
            _ => {}
        }
        self.set_client_of(vm, c);
        self.trace(|| TraceEvent::Int2f {
            vm: vm.raw(),
            ax,
            bx: before.ebx as u16,
            out_ax: c.eax as u16,
            out_bx: c.ebx as u16,
            es_di: ((c.es & 0xFFFF) << 16) | (c.edi & 0xFFFF),
            carry: c.eflags & CF_MASK != 0,
        });
        Ok(())
    }

    /// INT 2Fh 1684h: the API entry of device `id` for a caller in protected
    /// mode (`pm`) or V86 mode, or 0:0.
    fn api_entry(&self, id: u16, pm: bool) -> u32 {
        let reg = self.registry.borrow();
        let Some(i) = reg.by_id(id) else { return 0 };
        let info = &reg.slots[i].info;
        if pm && info.has_pm_api {
            ((PM_API_SELECTOR as u32) << 16) | id as u32
        } else if !pm && info.has_v86_api {
            ((V86_API_SEGMENT as u32) << 16) | id as u32
        } else {
            0
        }
    }

    /// INT 2Fh 1685h: BX = VM ID, CX = flags, DX:SI = boost, ES:DI =
    /// callback. Schedules the ring-3 callback in the target VM the way
    /// Call_Priority_VM_Event schedules a VxD's. Returns the error code (0:
    /// none; 1 bad VM ID, 2 bad boost, 3 bad flags).
    fn switch_and_call(&self, c: &ClientRegs) -> u32 {
        let id = c.ebx & 0xFFFF;
        let flags = c.ecx & 0xFFFF;
        let boost = ((c.edx & 0xFFFF) << 16) | (c.esi & 0xFFFF);
        let callback = ((c.es & 0xFFFF) << 16) | (c.edi & 0xFFFF);
        let Some(target) = self.vms.borrow().iter().find(|v| v.id == id).map(|v| v.handle) else { return 1 };
        if boost > RESERVED_HIGH_BOOST {
            return 2;
        }
        if flags & !(SVC_WAIT_FOR_STI | SVC_WAIT_NOT_CRIT) as u32 != 0 {
            return 3;
        }
        let mut pef = 0;
        if flags & SVC_WAIT_FOR_STI as u32 != 0 {
            pef |= PEF_WAIT_FOR_STI;
        }
        if flags & SVC_WAIT_NOT_CRIT as u32 != 0 {
            pef |= PEF_WAIT_NOT_CRIT;
        }
        let owner = self.current_caller().unwrap_or(InstanceId::HOST);
        let cb = Callback::host(owner, "INT 2Fh 1685h call-back", move |core: &Core, _regs: &mut Regs| {
            core.nested_ring3_call(callback);
            Carry::Clear
        });
        let handle = self.sched.schedule_event(EventKind::Priority, target, pef, boost as i32, None, cb);
        if let Some(handle) = handle {
            if boost != 0 {
                self.event_boost(target, boost as i64, crate::trace::PriorityReason::Event);
            }
            self.trace(|| TraceEvent::EventScheduled {
                handle: handle.raw(),
                seq: self.sched.with_event(handle, |e| e.seq).unwrap_or(0),
                event: "priority",
                vm: Some(target.raw()),
                flags: pef,
                boost: boost as i32,
                timeout_ms: None,
                device: self.instance_name(owner).to_string(),
                callback: "INT 2Fh 1685h call-back".to_string(),
            });
        }
        0
    }

    /// Run a ring-3 callback in the current VM by nested execution (for INT
    /// 2Fh 1685h). The VMM calls it as the VM's own code, not as a VxD's
    /// event-time far call, so the ISR rule does not apply.
    fn nested_ring3_call(&self, callback: u32) {
        let vm = self.cur_vm.get();
        let Some(saved) = self.client_of(vm) else { return };
        let owner = self.current_caller().unwrap_or(InstanceId::HOST);
        self.with_frame(owner, Context::Vm, || {
            if self.begin_nest(vm, false).is_ok() {
                let _ = self.simulate_far_call(vm, (callback >> 16) as u16, callback & 0xFFFF);
                let _ = self.resume_exec(vm);
                let _ = self.end_nest(vm);
            }
        });
        self.set_client_of(vm, saved);
    }

    /// A far call made by ring-3 code (or for it): into an export, a VxD API
    /// entry, or an interrupt handler. `args` are the PASCAL argument bytes
    /// of an export. Returns DX:AX.
    /// `INT n` executed by Rust ring-3 code: in protected mode the VM's PM
    /// vector when one is set (a PM call-back entered with an interrupt
    /// frame, or an export called as the handler); otherwise (V86, or a PM
    /// vector still the VMM's default, which reflects to V86) the devices'
    /// hooks (`Hook_V86_Int_Chain`), then the VM's V86 vector when it is a
    /// call-back or an export (a Rust DOS program's handler), else the
    /// host's handler.
    pub(crate) fn ring3_code_int(&self, n: u8) -> Result<(), VmmError> {
        let vm = self.cur_vm.get();
        if let Some(handler) = self.pm_int_handler(vm, n) {
            if self.is_call_back(handler) {
                return self.ring3_call_back(vm, handler, &[], true).map(|_| ());
            }
            return self.ring3_far_call(handler, &[], false).map(|_| ());
        }
        if self.v86_int_chain(vm, n) {
            return Ok(());
        }
        if let Some(vector) = self.v86_vector_handler(vm, n) {
            if self.is_call_back(vector) {
                return self.ring3_call_back(vm, vector, &[], true).map(|_| ());
            }
            // A Rust DOS program's handler (its `set_int_vector`, or a
            // device pointed the vector at an export): called, its return
            // is the IRET.
            if matches!(self.ring3.borrow().resolve(vector), Target::Export { .. }) {
                return self.ring3_far_call(vector, &[], false).map(|_| ());
            }
            if self.v86_vector_points_nowhere(vm, n, vector) {
                return Err(VmmError::VIOLATION);
            }
        }
        self.ring3_int(n)
    }

    /// `vm` runs Rust code in V86 and its V86 vector `n` holds `vector`,
    /// which is neither a call-back nor an export of a loaded module:
    /// nothing of it can run (Windows would jump into garbage). The
    /// `BAD_FAR_POINTER` violation; whether the interrupt is refused
    /// (policy `error` or `fatal`), else the VMM's own handler serves it.
    pub(crate) fn v86_vector_points_nowhere(&self, vm: VmId, n: u8, vector: u32) -> bool {
        self.violation(
            Violation::BadFarPointer,
            format!(
                "INT {n:02X}h in VM {:#x}: its V86 vector {:04X}:{:04X} is neither a call-back nor an export of a \
                 loaded module; the VMM's handler serves it",
                vm.raw(),
                vector >> 16,
                vector & 0xFFFF
            ),
            Some("INT"),
        )
    }

    /// A far call from Rust ring-3 code: to a call-back, or as
    /// [`Core::ring3_far_call`].
    pub(crate) fn ring3_code_far_call(&self, target: u32, args: &[u8]) -> Result<u32, VmmError> {
        if self.is_call_back(target) {
            return self.ring3_call_back(self.cur_vm.get(), target, args, false);
        }
        self.ring3_far_call(target, args, false)
    }

    pub(crate) fn ring3_far_call(&self, target: u32, args: &[u8], isr: bool) -> Result<u32, VmmError> {
        let resolved = self.ring3.borrow().resolve(target);
        let vm = self.cur_vm.get();
        match resolved {
            Target::Export { module, export } => {
                if isr && !self.isr_entry_allowed(module, export, target) {
                    return Err(VmmError::VIOLATION);
                }
                let r = self.call_export(module, export, args, isr);
                let (result, outcome) = match r {
                    Ok(v) => (v, CallOutcome::Clear),
                    Err(o) => (0, o),
                };
                self.trace(|| {
                    let r3 = self.ring3.borrow();
                    TraceEvent::FarCall {
                        vm: vm.raw(),
                        target: format!("{:04X}:{:04X}", target >> 16, target & 0xFFFF),
                        module: r3.modules[module].name.to_string(),
                        export: r3.modules[module].exports[export].name.clone(),
                        isr,
                        result,
                        outcome,
                    }
                });
                Ok(result)
            }
            Target::Api { device_id, mode } => {
                self.api_call(device_id, mode, vm)?;
                Ok(self.client_of(vm).map(|c| ((c.edx & 0xFFFF) << 16) | (c.eax & 0xFFFF)).unwrap_or(0))
            }
            Target::Interrupt(n) => {
                self.ring3_int(n)?;
                Ok(0)
            }
            Target::Breakpoint => Ok(0),
            Target::Unloaded { module } => {
                let name = self.ring3.borrow().modules[module].name.clone();
                Err(self.refuse(
                    Violation::BadFarPointer,
                    format!(
                        "far call to {:04X}:{:04X} in module {name}, which was unloaded",
                        target >> 16,
                        target & 0xFFFF
                    ),
                    Some("far call"),
                ))
            }
            Target::Nothing => Err(self.refuse(
                Violation::BadFarPointer,
                format!(
                    "far call to {:04X}:{:04X}, which is not the address of any exported procedure or API entry",
                    target >> 16,
                    target & 0xFFFF
                ),
                Some("far call"),
            )),
        }
    }

    /// A ring-3 caller reached device `device_id`'s API entry for `mode`:
    /// call the API procedure with the VM's client registers.
    pub(crate) fn api_call(&self, device_id: u16, mode: ApiMode, vm: VmId) -> Result<(), VmmError> {
        let target = {
            let reg = self.registry.borrow();
            reg.by_id(device_id).map(|i| {
                let s = &reg.slots[i];
                let has = match mode {
                    ApiMode::V86 => s.info.has_v86_api,
                    ApiMode::Pm => s.info.has_pm_api,
                };
                (s.instance, s.name.clone(), has)
            })
        };
        let Some((instance, name, has)) = target.filter(|t| t.2) else {
            return Err(self.refuse(
                Violation::BadFarPointer,
                format!("far call to the API entry of device {device_id:#06X}, which is not loaded or has no such API"),
                Some("far call"),
            ));
        };
        let _ = has;
        let Some(client) = self.vms.borrow().get(vm).map(|v| v.client_ptr()) else {
            return Err(VmmError::INVALID_HANDLE);
        };
        // The registers before the call, for the trace only.
        let tracing = self.trace_on;
        let before = if tracing { self.client_of(vm).unwrap_or_default() } else { ClientRegs::default() };
        let depth = self.nest_mark();
        let outcome = self.device_api(instance, mode, vm, client);
        self.check_nest_balance(vm, depth, "an API procedure", || instance);
        if matches!(outcome, CallOutcome::Panic | CallOutcome::Error | CallOutcome::Skipped) {
            // The caller sees a failed call.
            if let Some(mut c) = self.client_of(vm) {
                set_carry(&mut c, true);
                self.set_client_of(vm, c);
            }
        }
        if !tracing {
            return Ok(());
        }
        let after = self.client_of(vm).unwrap_or_default();
        self.trace(|| TraceEvent::ApiCall {
            device: name.to_string(),
            vm: vm.raw(),
            mode: if mode == ApiMode::V86 { "v86" } else { "pm" },
            regs_in: before.into(),
            regs_out: after.into(),
            carry: after.eflags & CF_MASK != 0,
            result: outcome,
        });
        Ok(())
    }

    /// The far pointer of the host's handler of `INT n` (what
    /// `Simulate_Int` points CS:IP at).
    pub(crate) fn int_vector(n: u8) -> u32 {
        ((INT_SELECTOR as u32) << 16) | n as u32
    }
}
