//! Faults of ring-3 code written in Rust. A Rust module's code is
//! protected-mode code in the system VM (a Windows application or DLL) and
//! V86 code in a DOS VM; the processor exceptions it can raise are those of
//! the instructions `Ring3::fault` executes (`DIV` by zero 00h, `INT3` 03h,
//! `UD2` 06h, a load of an invalid selector 0Dh). The VMM offers each, as
//! Windows does, to the fault hooks of the code's mode installed after
//! `Sys_Critical_Init` (`Hook_PM_Fault`, `Hook_V86_Fault`), then to the
//! VM's own handler (protected mode: the VM's one PM vector, whoever wrote
//! it last, `Set_PM_Int_Vector` or `Ring3::set_int_vector`; V86: the
//! VM's V86 vector, a device's call-back or the program's own export),
//! then to the hooks installed during `Sys_Critical_Init`. When
//! nothing handles it the program is crashed when its step returns (a
//! `pm_fault` or `v86_fault` record, then `program_ended` with reason
//! `crashed`), as KERNEL ends an application that faulted and Windows
//! closes a DOS box whose program did.

use vmm_plugin_api::abi::VmmError;

use crate::machine::Core;
use crate::ring3::state::Target;
use crate::trace::TraceEvent;
use crate::vmm::ids::{InstanceId, VmId};
use crate::vmm::vectors::{FaultKind, FaultStage};

impl Core {
    /// `Ring3::fault`: code of `owner` raised exception `n` (00h-1Fh but
    /// not the NMI, 02h). `Ok` when a hook or the VM's handler handled it
    /// (the code goes on after the instruction); `FAILED` when nothing did
    /// (the program whose step is running ends when the step returns; a
    /// fault outside any program's step, in a handler a device entered by
    /// nested execution, only fails the call).
    pub(crate) fn ring3_fault(&self, owner: InstanceId, n: u8) -> Result<(), VmmError> {
        if n == 2 || n > 0x1F {
            return Err(VmmError::INVALID_PARAMETER);
        }
        let vm = self.cur_vm.get();
        let pm = self.vms.borrow().get(vm).map(|v| v.pm).ok_or(VmmError::INVALID_HANDLE)?;
        let kind = if pm { FaultKind::Pm } else { FaultKind::V86 };
        let handled = self.fault_hooks(kind, vm, n, FaultStage::Front)
            || self.ring3_fault_handler(vm, pm, n)
            || self.fault_hooks(kind, vm, n, FaultStage::Behind);
        if self.is_fatal() {
            return Err(VmmError::FATAL);
        }
        if handled {
            return Ok(());
        }
        let module = self.instance_name(owner).to_string();
        tracing::warn!("{module}: exception {n:02X}h in VM {vm:#x} with no handler; the program ends");
        if pm {
            self.trace(|| TraceEvent::PmFault { vm: vm.raw(), vector: n, module });
        } else {
            let cs_ip = self.client_of(vm).map_or(0, |c| ((c.cs & 0xFFFF) << 16) | (c.eip & 0xFFFF));
            self.trace(|| TraceEvent::V86Fault { vm: vm.raw(), vector: n, cs_ip });
        }
        self.ring3.borrow_mut().crash_pending = Some(vm);
        Err(VmmError::FAILED)
    }

    /// The VM's own handler of exception `n`, entered as the processor
    /// enters an interrupt handler: whether there was one and it returned.
    fn ring3_fault_handler(&self, vm: VmId, pm: bool, n: u8) -> bool {
        let target = if pm {
            self.pm_int_handler(vm, n)
        } else {
            // A device's call-back, or the program's own export (its
            // `Ring3::set_int_vector`).
            self.v86_vector_handler(vm, n)
                .filter(|&v| self.is_call_back(v) || matches!(self.ring3.borrow().resolve(v), Target::Export { .. }))
        };
        let Some(target) = target else { return false };
        if self.is_call_back(target) {
            return self.ring3_call_back(vm, target, &[], true).is_ok();
        }
        self.ring3_far_call(target, &[], false).is_ok()
    }
}
