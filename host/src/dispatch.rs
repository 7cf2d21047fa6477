//! `VxDCall` dispatch: `(device_id << 16) | ordinal` to a device's service
//! table, with Windows' rules for missing devices and ordinals.

use vmm_plugin_api::abi::{Carry, ServiceCall, VmmError};
use vmm_plugin_api::ddk::{CF_MASK, VMM_DEVICE_ID};

use crate::abi::vxdcall::set_flag;
use crate::machine::Core;
use crate::trace::{CallOutcome, TraceEvent};
use crate::violation::Violation;
use crate::vmm::ids::InstanceId;
use crate::vmm::ids::VmId;

impl Core {
    /// Dispatch a `VxDCall` from `caller`. Returns `Err(FATAL)` after the
    /// fatal "Invalid VxD dynamic link call".
    pub(crate) fn vxd_call(&self, caller: InstanceId, service: u32, call: &mut ServiceCall) -> Result<(), VmmError> {
        if self.service_hooks.any() && self.service_hooks.hooked(service) {
            return self.run_hooks(caller, service, None, call);
        }
        self.vxd_call_unhooked(caller, service, call)
    }

    /// Run `service`'s hook chain from below hook `below` (`None`: from its
    /// top) down to the service itself, for `caller`'s call.
    pub(crate) fn run_hooks(
        &self,
        caller: InstanceId,
        service: u32,
        below: Option<u32>,
        call: &mut ServiceCall,
    ) -> Result<(), VmmError> {
        use crate::vmm::service_hooks::Next;
        match self.service_hooks.next(service, below) {
            Next::Service => self.vxd_call_unhooked(caller, service, call),
            Next::Gone => Err(VmmError::NOT_FOUND),
            Next::Hook(handle, entry) => {
                // The hook learns the service (EAX) and its own handle (ESI);
                // the call's registers and arguments it reads through
                // `hooked_call`.
                let mut regs = vmm_plugin_api::abi::Regs {
                    eax: crate::vmm::service_hooks::normalize(service),
                    esi: handle,
                    ..Default::default()
                };
                self.service_hooks.enter(call as *mut ServiceCall, caller);
                let outcome = entry.call(self, self.context(), &mut regs);
                let retired = self.service_hooks.leave();
                drop(retired);
                if !matches!(outcome, CallOutcome::Clear | CallOutcome::Set) {
                    // A hook that failed (panicked, was skipped) fails the call.
                    call.regs.flags |= CF_MASK;
                }
                if self.is_fatal() { Err(VmmError::FATAL) } else { Ok(()) }
            }
        }
    }

    /// [`Core::vxd_call`] past the service hooks.
    fn vxd_call_unhooked(&self, caller: InstanceId, service: u32, call: &mut ServiceCall) -> Result<(), VmmError> {
        let device_id = (service >> 16) as u16;
        // Bit 15 of the ordinal marks VxDJmp; the service is the same.
        let ordinal = (service & 0x7FFF) as u16;
        if device_id == VMM_DEVICE_ID {
            return self.vmm_vxd_call(caller, ordinal, call);
        }
        let target = {
            let reg = self.registry.borrow();
            reg.by_id(device_id).map(|i| {
                let s = &reg.slots[i];
                (s.instance, s.info.services.get(ordinal as usize).cloned(), s.info.services.len())
            })
        };
        let invalid = |core: &Core| {
            core.invalid_dynamic_link(caller, device_id, ordinal);
            Err(VmmError::FATAL)
        };
        let Some((instance, name, count)) = target else {
            if ordinal == 0 {
                // The documented presence test: Get_Version of a device that
                // is not loaded returns AX = 0 with carry set.
                call.regs.eax = 0;
                call.regs.flags |= CF_MASK;
                self.trace(|| TraceEvent::VxdCall {
                    caller: self.instance_name(caller).to_string(),
                    device_id,
                    ordinal,
                    service: None,
                    result: CallOutcome::Set,
                });
                return Ok(());
            }
            return invalid(self);
        };
        if ordinal as usize >= count && ordinal != 0 {
            return invalid(self);
        }
        let context = self.context();
        let outcome = self.device_service(instance, caller, ordinal, context, call);
        match outcome {
            CallOutcome::Clear => call.regs.flags &= !CF_MASK,
            _ => call.regs.flags |= CF_MASK,
        }
        self.trace(|| TraceEvent::VxdCall {
            caller: self.instance_name(caller).to_string(),
            device_id,
            ordinal,
            service: name.clone(),
            result: outcome,
        });
        if self.is_fatal() { Err(VmmError::FATAL) } else { Ok(()) }
    }

    /// Stop the machine with Windows' "Invalid VxD dynamic link call": a call
    /// to a device that is not loaded, or to an ordinal past its service
    /// table.
    pub(crate) fn invalid_dynamic_link(&self, caller: InstanceId, device_id: u16, ordinal: u16) {
        let message = format!("Invalid VxD dynamic link call to device number {device_id:04X}, service {ordinal:04X}");
        let by = self.instance_name(caller).to_string();
        self.set_fatal(message, Some(by));
    }

    /// The VMM's own register-convention services through `VxDCall`.
    fn vmm_vxd_call(&self, caller: InstanceId, ordinal: u16, call: &mut ServiceCall) -> Result<(), VmmError> {
        use vmm_plugin_api::ddk::*;
        let r = &mut call.regs;
        let set_zf = |r: &mut vmm_plugin_api::abi::Regs, on: bool| set_flag(r, ZF_MASK, on);
        let set_cf = |r: &mut vmm_plugin_api::abi::Regs, on: bool| set_flag(r, CF_MASK, on);
        match ordinal {
            GET_VMM_VERSION => {
                r.eax = self.vmm_version();
                r.ecx = 0;
                set_cf(r, false);
            }
            GET_CUR_VM_HANDLE => r.ebx = self.cur_vm.get().raw(),
            GET_SYS_VM_HANDLE => r.ebx = self.sys_vm.get().raw(),
            TEST_CUR_VM_HANDLE => set_zf(r, r.ebx == self.cur_vm.get().raw()),
            TEST_SYS_VM_HANDLE => set_zf(r, r.ebx == self.sys_vm.get().raw()),
            VALIDATE_VM_HANDLE => {
                let ok = self.vm_valid(VmId::from_raw(r.ebx));
                set_cf(r, !ok);
            }
            GET_SYSTEM_TIME => r.eax = self.sched.now().system_time_ms(),
            _ => {
                if let Some(done) = crate::abi::vxdcall::register_service(self, caller, ordinal, r) {
                    return done;
                }
                let refuse = self.violation(
                    Violation::VmmServiceByVxdcall,
                    format!(
                        "VMM service {} ({ordinal:#06X}) is not answered through VxDCall (it takes a callback \
                         procedure or a pointer, or is not register-only here); call the Vmm method of the same name",
                        crate::vmm::services::by_ordinal(ordinal).map_or("unknown", |s| s.name)
                    ),
                    Some("VxDCall"),
                );
                set_cf(r, true);
                if refuse {
                    return Err(VmmError::VIOLATION);
                }
            }
        }
        Ok(())
    }

    /// `Get_VMM_Version`: AH.AL.
    pub(crate) fn vmm_version(&self) -> u32 {
        let (major, minor) = self.manifest.machine.windows_version;
        ((major as u32) << 8) | minor as u32
    }
}

impl From<CallOutcome> for Carry {
    fn from(o: CallOutcome) -> Self {
        Carry::from_failed(o != CallOutcome::Clear)
    }
}

impl Core {
    /// Whether `service` names a service `Hook_Device_Service` can hook: a
    /// VMM service of this Windows version's table or an ordinal of a
    /// loaded device's service table.
    pub(crate) fn hookable(&self, service: u32) -> bool {
        let device_id = (service >> 16) as u16;
        let ordinal = (service & 0x7FFF) as u16;
        if device_id == VMM_DEVICE_ID {
            return crate::vmm::services::by_ordinal(ordinal)
                .is_some_and(|_| self.manifest.machine.windows_version.0 >= 4 || ordinal < 0x100);
        }
        let reg = self.registry.borrow();
        reg.by_id(device_id).is_some_and(|i| (ordinal as usize) < reg.slots[i].info.services.len())
    }
}
