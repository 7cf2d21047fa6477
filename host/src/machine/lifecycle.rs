//! VM creation and destruction with their control messages:
//! Create_VM → VM_Critical_Init → VM_Init, and VM_Terminate →
//! VM_Not_Executeable → Destroy_VM (each followed by its `xx2` twin in
//! reverse order for 4.0 devices).
//!
//! A device that fails Create_VM, VM_Critical_Init or VM_Init fails the
//! creation: the broadcast stops at that device, and every device then gets
//! VM_Not_Executeable with `VNE_CreateFail` / `VNE_CrInitFail` /
//! `VNE_InitFail` and Destroy_VM.

use std::rc::Rc;

use vmm_plugin_api::abi::{ClientRegs, ControlArgs};
use vmm_plugin_api::ddk::*;

use crate::machine::Core;
use crate::trace::{CallOutcome, CancelReason, DestroyReason, TraceEvent};
use crate::vmm::context::Context;
use crate::vmm::ids::VmId;
use crate::vmm::vm::{Vm, VmLife};

/// The `xx2` twin of an exit-type VM message.
fn twin(message: u32) -> Option<u32> {
    match message {
        VM_TERMINATE => Some(VM_TERMINATE2),
        VM_NOT_EXECUTEABLE => Some(VM_NOT_EXECUTEABLE2),
        DESTROY_VM => Some(DESTROY_VM2),
        VM_SUSPEND => Some(VM_SUSPEND2),
        _ => None,
    }
}

impl Core {
    /// Create the system VM (its Create_VM and VM_Critical_Init phases are
    /// folded into Device_Init, as in WIN386) and make it current.
    pub(crate) fn create_system_vm(&self) {
        if !self.sys_vm.get().is_none() {
            return;
        }
        let cb = self.vms.borrow().cb_size();
        let handle = self.vms.borrow_mut().insert(|h, id| Vm::new(h, id, std::rc::Rc::from("system"), true, cb));
        if let Some(vm) = self.vms.borrow_mut().get_mut(handle) {
            vm.life = VmLife::Running;
        }
        self.sys_vm.set(handle);
        self.cur_vm.set(handle);
    }

    /// A copy of `vm`'s client registers (`None`: no such VM).
    pub(crate) fn client_of(&self, vm: VmId) -> Option<ClientRegs> {
        self.vms.borrow().get(vm).map(|v| v.client())
    }

    /// Replace `vm`'s client registers (nothing if there is no such VM).
    pub(crate) fn set_client_of(&self, vm: VmId, c: ClientRegs) {
        if let Some(v) = self.vms.borrow().get(vm) {
            v.set_client(c);
        }
    }

    /// Whether `handle` names a live VM. (The system VM, once created, is
    /// never destroyed: its handle needs no lookup.)
    #[inline]
    pub(crate) fn vm_valid(&self, handle: VmId) -> bool {
        (!handle.is_none() && handle == self.sys_vm.get()) || self.vms.borrow().get(handle).is_some()
    }

    /// Send `message` about `vm` to every live device in init order (and its
    /// twin in reverse to 4.0 devices). With `stop_on_failure`, the
    /// broadcast stops at the first device that sets carry. Returns whether
    /// one did.
    pub(crate) fn broadcast_vm_message(&self, message: u32, vm: VmId, edx: u32, context: Context) -> bool {
        self.broadcast_vm(message, vm, edx, context, false)
    }

    fn broadcast_vm(&self, message: u32, vm: VmId, edx: u32, context: Context, stop_on_failure: bool) -> bool {
        let mut failed = false;
        for idx in self.recipients(false, |s| s.initialized) {
            let outcome = self.send_control(idx, message, Some(vm), edx, context);
            if outcome == CallOutcome::Set {
                failed = true;
                if stop_on_failure {
                    return true;
                }
            }
        }
        if let Some(twin) = twin(message) {
            for idx in self.recipients(true, |s| s.initialized && s.info.sdk_version >= DDK_VERSION_400) {
                self.send_control(idx, twin, Some(vm), edx, context);
            }
        }
        failed
    }

    /// Run `f` with `vm` as the current VM (for the VM's own init and
    /// termination messages), then restore the previous one.
    fn as_current<T>(&self, vm: VmId, f: impl FnOnce() -> T) -> T {
        let old = self.cur_vm.replace(vm);
        let r = f();
        if self.vms.borrow().get(old).is_some() {
            self.cur_vm.set(old);
        } else {
            self.cur_vm.set(self.sys_vm.get());
        }
        r
    }

    /// Create a DOS VM named `name`; its handle, or `None` if a device
    /// refused it.
    pub(crate) fn create_vm(&self, name: &str, program: Option<(String, String)>) -> Option<VmId> {
        let cb = self.vms.borrow().cb_size();
        let name: Rc<str> = Rc::from(name);
        let vm = self.vms.borrow_mut().insert(|h, id| Vm::new(h, id, name.clone(), false, cb));
        let steps = [
            (CREATE_VM, VNE_CREATEFAIL, DestroyReason::CreateFailed),
            (VM_CRITICAL_INIT, VNE_CRINITFAIL, DestroyReason::CriticalInitFailed),
            (VM_INIT, VNE_INITFAIL, DestroyReason::InitFailed),
        ];
        for (message, flag, reason) in steps {
            let failed = if message == CREATE_VM {
                self.broadcast_vm(message, vm, 0, Context::Control, true)
            } else {
                self.as_current(vm, || self.broadcast_vm(message, vm, 0, Context::Control, true))
            };
            if failed {
                tracing::warn!("creating VM {name} failed in {}", control_message_name(message));
                self.destroy_vm(vm, flag, false, reason);
                return None;
            }
        }
        let id = {
            let mut vms = self.vms.borrow_mut();
            let v = vms.get_mut(vm)?;
            v.life = VmLife::Running;
            v.id
        };
        self.trace(|| TraceEvent::VmCreated { vm: vm.raw(), id, name: name.to_string() });
        if let Some((program, args)) = program {
            self.start_program(vm, &program, &args);
        }
        Some(vm)
    }

    /// A `[[vm]]` entry's time has come.
    pub(crate) fn create_manifest_vm(&self, index: usize) {
        let e = self.manifest.vms[index].clone();
        self.create_vm(&e.name, e.program.map(|p| (p, e.args)));
    }

    /// Destroy `vm`: with `normal`, VM_Terminate first (skipped when a
    /// running VM is killed), then VM_Not_Executeable with `flags`, then
    /// Destroy_VM. Its pending events and time-outs are cancelled.
    pub(crate) fn destroy_vm(&self, vm: VmId, flags: u32, normal: bool, reason: DestroyReason) {
        // The system VM lives as long as the machine (`vm_valid` relies on it).
        debug_assert_ne!(vm, self.sys_vm.get(), "the system VM is never destroyed");
        // A VM is destroyed once: its teardown ends its programs, and a DOS
        // program's end asks for its VM's destruction again.
        let Some((id, name)) = self.vms.borrow_mut().get_mut(vm).and_then(|v| {
            if v.life == VmLife::Terminating {
                return None;
            }
            v.life = VmLife::Terminating;
            Some((v.id, v.name.clone()))
        }) else {
            return;
        };
        if normal {
            self.as_current(vm, || self.broadcast_vm_message(VM_TERMINATE, vm, 0, Context::Control));
        }
        self.broadcast_vm_message(VM_NOT_EXECUTEABLE, vm, flags, Context::Control);
        self.release_vm_resources(vm);
        self.broadcast_vm_message(DESTROY_VM, vm, 0, Context::Control);
        // Events a device scheduled for the VM in its Destroy_VM handler go
        // with it too (its handle was still valid there).
        self.cancel_vm_events(vm);
        // A VM destroyed in a blocking wait leaves the scheduler's count of
        // flagged waits.
        self.unblock(vm);
        self.vms.borrow_mut().remove(vm);
        self.io_forget_vm(vm);
        self.vpicd_forget_vm(vm);
        self.vectors_forget_vm(vm);
        if self.cur_vm.get() == vm {
            self.switch_to(self.sys_vm.get());
        }
        self.trace(|| TraceEvent::VmDestroyed { vm: vm.raw(), id, name: name.to_string(), flags, reason });
    }

    /// Cancel what refers to a dying VM: its events, its time-outs, its
    /// claims on the critical section, its semaphore waits.
    fn release_vm_resources(&self, vm: VmId) {
        self.cancel_vm_events(vm);
        let timeouts = self
            .sched
            .timeouts_where(|h, r| matches!(r.due, crate::vmm::timers::Due::Exec(v, _) if v == vm).then_some(h));
        for h in timeouts {
            self.cancel_timeout(h, CancelReason::VmDestroyed);
        }
        let owned = self.crit.borrow().owner() == Some(vm);
        if owned {
            let claims = self.crit.borrow().claims();
            let _ = self.end_critical_for(vm, claims, "Destroy_VM");
        }
        self.crit.borrow_mut().forget_waiter(vm);
        self.sems.borrow_mut().forget_waiter(vm);
        self.ring3_vm_destroyed(vm);
    }

    /// Cancel the pending events of a dying VM.
    fn cancel_vm_events(&self, vm: VmId) {
        let events = self.sched.drain_events(vm);
        for (h, rec) in events {
            self.trace(|| TraceEvent::EventCancelled {
                handle: h.raw(),
                event: rec.kind.name(),
                vm: Some(vm.raw()),
                device: self.instance_name(rec.cb.owner()).to_string(),
                reason: CancelReason::VmDestroyed,
            });
        }
    }

    /// Terminate every DOS VM normally (at shutdown), newest first.
    pub(crate) fn destroy_dos_vms(&self) {
        let sys = self.sys_vm.get();
        let mut dos: Vec<VmId> = self.vms.borrow().iter().filter(|v| v.handle != sys).map(|v| v.handle).collect();
        dos.reverse();
        for vm in dos {
            self.destroy_vm(vm, 0, true, DestroyReason::Shutdown);
        }
    }
}

/// `Nuke_VM` and `Crash_Cur_VM` (virtual-hardware reference 7.5): a VM
/// ended without `VM_Terminate`.
impl Core {
    /// End `vm` the abrupt way, with `VNE_Nuked` or `VNE_Crashed` in
    /// VM_Not_Executeable. The system VM cannot end alone: Windows stops
    /// with a fatal error naming `service` and the caller. The current VM
    /// is destroyed as soon as the device returns (at the run loop's next
    /// step: it never runs again); another VM at once.
    pub(crate) fn end_vm(&self, vm: VmId, flags: u32, service: &str, by: &str) {
        if vm == self.sys_vm.get() {
            let what = if flags & VNE_CRASHED != 0 {
                "the system VM crashed (Crash_Cur_VM in the system VM): Windows ends with a fatal error"
            } else {
                "Nuke_VM of the system VM: Windows ends"
            };
            self.set_fatal(format!("{what} ({service} called by {by})"), Some(by.to_string()));
            return;
        }
        if vm == self.cur_vm.get() || self.at_interrupt() {
            self.sched.timer_at(self.sched.now(), crate::vmm::timers::TimerKind::EndVm(vm, flags));
            return;
        }
        self.end_vm_now(vm, flags);
    }

    /// Destroy a VM that `Nuke_VM` / `Crash_Cur_VM` ended (if it still
    /// lives): VM_Not_Executeable with `flags`, then Destroy_VM.
    pub(crate) fn end_vm_now(&self, vm: VmId, flags: u32) {
        if vm == self.sys_vm.get() || self.vms.borrow().get(vm).is_none() {
            return;
        }
        let reason = if flags & VNE_CRASHED != 0 { DestroyReason::Crashed } else { DestroyReason::Nuked };
        self.destroy_vm(vm, flags, false, reason);
    }
}

/// `System_Control` and `Directed_Sys_Control` (virtual-hardware
/// reference 6.3): control messages a device sends.
impl Core {
    /// Whether a device may send `message`: `Set_Device_Focus` or a
    /// private message.
    pub(crate) fn sendable(message: u32) -> bool {
        message == SET_DEVICE_FOCUS
            || (BEGIN_RESERVED_PRIVATE_SYSTEM_CONTROL..=END_RESERVED_PRIVATE_SYSTEM_CONTROL).contains(&message)
    }

    /// Send `args` to `target` (a device's slot) or, with `None`, to every
    /// initialized device in init order until one sets carry. Returns
    /// whether one did.
    pub(crate) fn send_device_message(&self, target: Option<usize>, args: &ControlArgs) -> bool {
        let vm = (args.vm != 0).then_some(VmId::from_raw(args.vm));
        let regs = (args.esi, args.edi);
        match target {
            Some(idx) => {
                self.send_control_regs(idx, args.message, vm, args.edx, regs, Context::Control) != CallOutcome::Clear
            }
            None => {
                for idx in self.recipients(false, |s| s.initialized) {
                    let outcome = self.send_control_regs(idx, args.message, vm, args.edx, regs, Context::Control);
                    if outcome != CallOutcome::Clear || self.is_fatal() {
                        return true;
                    }
                }
                false
            }
        }
    }
}
