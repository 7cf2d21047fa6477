//! The machine's side of nested execution: the nested-execution services
//! on a VM's client registers and stack (rules and stack operations in
//! `vmm/nest.rs`), the balance check after a call into a device, and
//! `Resume_Exec`, which runs events, other VMs and ring-3 code until the VM
//! returns to the VMM's break point.

use vmm_plugin_api::abi::{ClientRegs, VmmError};
use vmm_plugin_api::ddk::VMSTAT_PM_APP;

use crate::machine::Core;
use crate::ring3::state::{NEST_BREAKPOINT, PM_IRET_POINT, Target};
use crate::trace::TraceEvent;
use crate::violation::Violation;
use crate::vmm::context::Context;
use crate::vmm::ids::{InstanceId, VmId};
use crate::vmm::nest::{self, NestMark, RESUME_LIMIT, StackError, read_stack, retf};
use crate::vmm::vm::{NestFrame, Stack};

impl From<StackError> for VmmError {
    fn from(e: StackError) -> Self {
        match e {
            StackError::Full => VmmError::OUT_OF_MEMORY,
            StackError::Empty => VmmError::FAILED,
        }
    }
}

impl Core {
    /// The number of open nested-execution blocks of `vm`.
    #[inline]
    pub(crate) fn nest_depth(&self, vm: VmId) -> usize {
        self.vms.borrow().get(vm).map_or(0, |v| v.nest.len())
    }

    /// Where nested execution stands before a call into a device, for
    /// [`Core::check_nest_balance`] after it.
    #[inline]
    pub(crate) fn nest_mark(&self) -> NestMark {
        self.nest.mark()
    }

    /// After a device returned to the VMM: every nested block it began must
    /// be ended. Extra blocks are reported, naming the device (`owner`: the
    /// instance that was called, asked only then), and closed.
    #[inline]
    pub(crate) fn check_nest_balance(&self, vm: VmId, mark: NestMark, what: &str, owner: impl FnOnce() -> InstanceId) {
        let open = self.nest.open_since(mark);
        if open > 0 {
            self.close_unbalanced_nest(vm, open, what, owner());
        }
    }

    #[cold]
    fn close_unbalanced_nest(&self, vm: VmId, open: u64, what: &str, owner: InstanceId) {
        // After a fatal error the device was stopped before it could end
        // its blocks: not its fault, only the blocks are closed.
        if self.is_fatal() {
            for _ in 0..open {
                if self.end_nest(vm).is_err() {
                    break;
                }
            }
            return;
        }
        self.as_caller(owner, || {
            self.violation(
                Violation::NestExecNotEnded,
                format!(
                    "{open} nested execution block(s) were still open when {what} returned; every Begin_Nest_Exec \
                     needs its End_Nest_Exec"
                ),
                Some("End_Nest_Exec"),
            )
        });
        for _ in 0..open {
            if self.end_nest(vm).is_err() {
                break;
            }
        }
    }

    /// Whether nested execution may begin now (a `NEST_EXEC_ILLEGAL`
    /// violation when not).
    fn nest_allowed(&self, service: &'static str) -> bool {
        match nest::forbidden(self.context(), self.stack.message()) {
            None => true,
            Some(why) => !self.violation(
                Violation::NestExecIllegal,
                format!("{service} {why}, where nested execution is not allowed"),
                Some(service),
            ),
        }
    }

    fn with_client<T>(&self, vm: VmId, f: impl FnOnce(&mut ClientRegs, &mut Stack) -> T) -> Result<T, VmmError> {
        let mut vms = self.vms.borrow_mut();
        let v = vms.get_mut(vm).ok_or(VmmError::INVALID_HANDLE)?;
        // SAFETY: the client block is only ever accessed through short-lived
        // accesses like this one; no other reference to it is alive while
        // the host works on it (the vms borrow is held).
        let c = unsafe { &mut *v.client_ptr() };
        Ok(f(c, &mut v.stack))
    }

    /// `Begin_Nest_Exec` / `Begin_Nest_V86_Exec`.
    pub(crate) fn begin_nest(&self, vm: VmId, v86: bool) -> Result<(), VmmError> {
        if !self.nest_allowed(if v86 { "Begin_Nest_V86_Exec" } else { "Begin_Nest_Exec" }) {
            return Err(VmmError::VIOLATION);
        }
        let depth = {
            let mut vms = self.vms.borrow_mut();
            let v = vms.get_mut(vm).ok_or(VmmError::INVALID_HANDLE)?;
            let mut c = v.client();
            v.nest.push(NestFrame { cs: c.cs, eip: c.eip, pm: v.pm, v86 });
            // The system VM runs Windows, a protected-mode application.
            v.pm = !v86 && (v.status & VMSTAT_PM_APP != 0);
            c.cs = NEST_BREAKPOINT >> 16;
            c.eip = NEST_BREAKPOINT & 0xFFFF;
            v.set_client(c);
            v.nest.len()
        };
        self.nest.begin();
        self.trace(|| TraceEvent::NestExec { vm: vm.raw(), action: "begin", depth, v86 });
        Ok(())
    }

    /// `End_Nest_Exec`.
    pub(crate) fn end_nest(&self, vm: VmId) -> Result<(), VmmError> {
        let popped = {
            let mut vms = self.vms.borrow_mut();
            let v = vms.get_mut(vm).ok_or(VmmError::INVALID_HANDLE)?;
            v.nest.pop().map(|f| {
                let mut c = v.client();
                c.cs = f.cs;
                c.eip = f.eip;
                v.pm = f.pm;
                v.set_client(c);
                (v.nest.len(), f.v86)
            })
        };
        match popped {
            Some((depth, v86)) => {
                self.nest.end();
                self.trace(|| TraceEvent::NestExec { vm: vm.raw(), action: "end", depth, v86 });
                Ok(())
            }
            None => Err(self.refuse(
                Violation::UnbalancedNestExec,
                "End_Nest_Exec without a matching Begin_Nest_Exec",
                Some("End_Nest_Exec"),
            )),
        }
    }

    fn require_nest(&self, vm: VmId, service: &'static str) -> Result<(), VmmError> {
        if self.nest_depth(vm) == 0 {
            return Err(self.refuse(
                Violation::UnbalancedNestExec,
                format!("{service} outside a nested execution block (call Begin_Nest_Exec first)"),
                Some(service),
            ));
        }
        Ok(())
    }

    /// `Simulate_Push` (inside a nested block).
    pub(crate) fn simulate_push(&self, vm: VmId, value: u32) -> Result<(), VmmError> {
        self.simulate_allowed(vm, "Simulate_Push")?;
        Ok(self.with_client_stack(vm, |c, stack| nest::simulate_push(c, stack, value))??)
    }

    /// `Simulate_Pop` (inside a nested block).
    pub(crate) fn simulate_pop(&self, vm: VmId) -> Result<u32, VmmError> {
        self.simulate_allowed(vm, "Simulate_Pop")?;
        Ok(self.with_client_stack(vm, |c, stack| nest::simulate_pop(c, stack))??)
    }

    /// `Simulate_Far_Call` (inside a nested block).
    pub(crate) fn simulate_far_call(&self, vm: VmId, segment: u16, offset: u32) -> Result<(), VmmError> {
        self.simulate_allowed(vm, "Simulate_Far_Call")?;
        self.with_client_stack(vm, |c, stack| nest::simulate_far_call(c, stack, segment, offset))??;
        // A Call_When_VM_Returns registration takes this return address.
        self.frame_built(vm);
        Ok(())
    }

    /// `Simulate_Int`: the `Hook_V86_Int_Chain` hooks, then (when every
    /// hook passed it on) an IRET frame to the VM's vector: the host's
    /// handler of `n` unless a device set it. On a VM whose code is Rust
    /// only inside a nested block; on a DOS program's VM wherever its
    /// registers are current (a hook, a call-back, an event).
    pub(crate) fn simulate_int(&self, vm: VmId, n: u8) -> Result<(), VmmError> {
        if !self.vm_has_memory(vm) {
            self.require_nest(vm, "Simulate_Int")?;
        }
        self.simulate_int_in(vm, n)
    }

    /// `Resume_Exec`: run `vm` until it returns to the nest's break point.
    pub(crate) fn resume_exec(&self, vm: VmId) -> Result<(), VmmError> {
        self.require_nest(vm, "Resume_Exec")?;
        let isr = matches!(self.context(), Context::Event | Context::Interrupt);
        for _ in 0..RESUME_LIMIT {
            self.nested_dispatch_point(vm)?;
            let (cs, ip) =
                self.vms.borrow().get(vm).map(|v| (v.client().cs, v.client().eip)).ok_or(VmmError::INVALID_HANDLE)?;
            let target_ptr = ((cs & 0xFFFF) << 16) | (ip & 0xFFFF);
            if target_ptr != NEST_BREAKPOINT && self.vm_has_memory(vm) {
                // Machine code: the interpreter runs the VM until it is
                // back at the break point.
                self.resume_machine_code(vm)?;
                continue;
            }
            if Core::is_return_point(target_ptr) {
                // Back through a frame a Call_When_VM_Returns took.
                if !self.vm_returned(vm, target_ptr) {
                    return Err(self.refuse(
                        Violation::BadFarPointer,
                        format!(
                            "Resume_Exec reached {:04X}:{:04X}, a Call_When_VM_Returns break point that is not this \
                             VM's",
                            target_ptr >> 16,
                            target_ptr & 0xFFFF
                        ),
                        Some("Resume_Exec"),
                    ));
                }
                continue;
            }
            if target_ptr == PM_IRET_POINT {
                // A Rust export called as a PM interrupt handler returned:
                // its IRET.
                self.with_client(vm, |c, stack| nest::iret(c, stack))?;
                continue;
            }
            if self.is_call_back(target_ptr) {
                // The call-back moves CS:IP itself.
                self.enter_call_back(vm, target_ptr)?;
                continue;
            }
            let target = self.ring3.borrow().resolve(target_ptr);
            match target {
                Target::Breakpoint => return Ok(()),
                Target::Export { module, export } => {
                    let arg_bytes = self.ring3.borrow().export_arg_bytes(module, export);
                    // The return address, then the arguments, as they lie on
                    // the stack.
                    let mut buf = [0u8; 68];
                    let mut big = Vec::new();
                    let frame: &[u8] = if 4 + arg_bytes <= buf.len() {
                        self.with_client(vm, |c, stack| read_stack(c, stack, 0, &mut buf[..4 + arg_bytes]))?;
                        &buf[..4 + arg_bytes]
                    } else {
                        big.resize(4 + arg_bytes, 0);
                        self.with_client(vm, |c, stack| read_stack(c, stack, 0, &mut big))?;
                        &big
                    };
                    // Returning to the IRET point: entered as a PM interrupt
                    // handler (`Simulate_Int`), with no arguments, and its
                    // registers are what it left (no DX:AX result).
                    let handler = u32::from_le_bytes([frame[0], frame[1], frame[2], frame[3]]) == PM_IRET_POINT;
                    let (args, arg_bytes) = if handler { (&[][..], 0) } else { (&frame[4..], arg_bytes) };
                    let result = self.ring3_far_call(target_ptr, args, isr);
                    let value = result.as_ref().copied().unwrap_or(0);
                    self.with_client(vm, |c, stack| {
                        if !handler {
                            c.eax = (c.eax & 0xFFFF_0000) | (value & 0xFFFF);
                            c.edx = (c.edx & 0xFFFF_0000) | (value >> 16);
                        }
                        retf(c, stack, arg_bytes);
                    })?;
                    result?;
                }
                Target::Api { .. } => {
                    let r = self.ring3_far_call(target_ptr, &[], false);
                    self.with_client(vm, |c, stack| retf(c, stack, 0))?;
                    r?;
                }
                Target::Interrupt(n) => {
                    let r = self.ring3_int(n);
                    self.with_client(vm, |c, stack| nest::iret(c, stack))?;
                    r?;
                }
                Target::Unloaded { .. } | Target::Nothing => {
                    // Reported by the far call; abandon the nested call.
                    let r = self.ring3_far_call(target_ptr, &[], isr);
                    self.with_client(vm, |c, _| {
                        c.cs = NEST_BREAKPOINT >> 16;
                        c.eip = NEST_BREAKPOINT & 0xFFFF;
                    })?;
                    return r.map(|_| ());
                }
            }
        }
        Err(self.refuse(
            Violation::ResumeRunaway,
            format!("Resume_Exec ran {RESUME_LIMIT} far calls without the VM returning to the break point"),
            Some("Resume_Exec"),
        ))
    }

    /// Inside `Resume_Exec`: run the events that are ready (the VM's and the
    /// global ones), and let a VM of higher priority run, until `vm` is
    /// current again.
    fn nested_dispatch_point(&self, vm: VmId) -> Result<(), VmmError> {
        if self.is_fatal() || self.run.stop_requested() {
            return Err(VmmError::FATAL);
        }
        if self.context() == Context::Interrupt {
            // At interrupt time nothing else may run.
            return Ok(());
        }
        while self.dispatch_events(Some(vm)) {
            if self.is_fatal() {
                return Err(VmmError::FATAL);
            }
        }
        // A task switch happens here only for a VM of higher priority (an
        // interrupt's boosted event elsewhere); equals wait for the end of
        // the nested block.
        if self.higher_priority_vm(vm) {
            let end = self.run_until(&|c: &Core| c.cur_vm.get() == vm, Some(vm));
            if end != crate::machine::run::LoopEnd::Done {
                return Err(VmmError::FATAL);
            }
        }
        Ok(())
    }
}
