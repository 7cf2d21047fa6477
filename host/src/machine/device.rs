//! The device interface: how the machine calls a device's control
//! procedure, its services and its API procedure, whatever its code is: a
//! plugin instance (through its `InstanceVtable`, guarded by
//! [`Core::invoke`]) or a device built into the host ([`Builtin`]). Boot,
//! `VxDCall` dispatch and ring 3's API calls go through these three
//! methods only.

use std::rc::Rc;

use vmm_plugin_api::abi::{ApiMode, Carry, ClientRegs, ControlArgs, ServiceCall};

use crate::machine::Core;
use crate::machine::registry::{DeviceInfo, Inst};
use crate::trace::CallOutcome;
use crate::vmm::context::Context;
use crate::vmm::ids::{InstanceId, VmId};

/// The code of a live instance (the instance table's, `Core::instances`):
/// a plugin's device or ring-3 module, or a device built into the host.
#[derive(Clone)]
pub(crate) enum InstanceCode {
    /// A plugin instance.
    Plugin { inst: Inst },
    /// A device built into the host (`*SHELL`, `*VXDLDR`, `*VPICD`).
    Builtin(Rc<dyn Builtin>),
}

/// A device implemented by the host (`*SHELL`, `*VXDLDR`). Its state is
/// its own; adding one is a file with the type and an entry in
/// `builtin::create`.
pub(crate) trait Builtin {
    /// Its DDB.
    fn info(&self, core: &Core) -> DeviceInfo;
    /// Its control procedure.
    fn control(&self, core: &Core, args: &ControlArgs) -> Carry {
        let _ = (core, args);
        Carry::Clear
    }
    /// A service by ordinal, called by `caller` (an instance number).
    fn service(&self, core: &Core, caller: InstanceId, ordinal: u16, call: &mut ServiceCall) -> Carry;
    /// Its V86 or PM API procedure, called by ring-3 code of `vm` with the
    /// VM's client registers. The default answers nothing.
    fn api(&self, core: &Core, mode: ApiMode, vm: VmId, client: &mut ClientRegs) {
        let _ = (core, mode, vm, client);
    }
}

impl Core {
    /// The code of `instance` (`None` for the host, an unknown number or a
    /// released instance).
    #[inline]
    pub(crate) fn instance_code(&self, instance: InstanceId) -> Option<InstanceCode> {
        let instances = self.instances.borrow();
        instances.get(instance.index()?)?.code.clone()
    }

    /// Send a control message to the device `instance`.
    pub(crate) fn device_control(&self, instance: InstanceId, context: Context, args: &ControlArgs) -> CallOutcome {
        let Some(code) = self.instance_code(instance) else { return CallOutcome::Skipped };
        match code {
            InstanceCode::Builtin(b) => self.with_frame(instance, context, || b.control(self, args)).into(),
            InstanceCode::Plugin { inst } => {
                match self.invoke(instance, "control", context, |cx| (inst.vtable.control())(inst.this, cx, args)) {
                    Ok(c) => c.into(),
                    Err(o) => o,
                }
            }
        }
    }

    /// Call service `ordinal` of the device `instance` for
    /// `caller`.
    pub(crate) fn device_service(
        &self,
        instance: InstanceId,
        caller: InstanceId,
        ordinal: u16,
        context: Context,
        call: &mut ServiceCall,
    ) -> CallOutcome {
        let Some(code) = self.instance_code(instance) else { return CallOutcome::Skipped };
        match code {
            InstanceCode::Builtin(b) => {
                CallOutcome::from(self.with_frame(instance, context, || b.service(self, caller, ordinal, call)))
            }
            InstanceCode::Plugin { inst } => {
                match self.invoke(instance, "service", context, |cx| {
                    (inst.vtable.service())(inst.this, cx, ordinal as u32, call)
                }) {
                    Ok(c) => CallOutcome::from(c),
                    Err(o) => o,
                }
            }
        }
    }

    /// Call the API procedure of the device `instance` for
    /// ring-3 code of `vm`, whose client registers are at `client`.
    pub(crate) fn device_api(
        &self,
        instance: InstanceId,
        mode: ApiMode,
        vm: VmId,
        client: *mut ClientRegs,
    ) -> CallOutcome {
        let Some(code) = self.instance_code(instance) else { return CallOutcome::Skipped };
        match code {
            InstanceCode::Plugin { inst } => {
                match self.invoke(instance, "api", Context::Vm, |cx| {
                    (inst.vtable.api())(inst.this, cx, mode, vm.raw(), client)
                }) {
                    Ok(()) => CallOutcome::Clear,
                    Err(o) => o,
                }
            }
            InstanceCode::Builtin(b) => {
                let mut regs = self.client_of(vm).unwrap_or_default();
                self.with_frame(instance, Context::Vm, || b.api(self, mode, vm, &mut regs));
                self.set_client_of(vm, regs);
                CallOutcome::Clear
            }
        }
    }
}
