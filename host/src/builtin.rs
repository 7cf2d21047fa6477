//! Devices built into the host, listed as `*NAME` in `[386Enh] device`
//! (as `device=*SHELL` named a device inside WIN386.EXE).

use std::rc::Rc;

use vmm_plugin_api::abi::{ApiMode, Carry, ClientRegs, ControlArgs, ServiceCall};

use crate::machine::Core;
use crate::registry::DeviceInfo;

/// A device implemented by the host.
pub(crate) trait Builtin {
    /// Its DDB.
    fn info(&self, core: &Core) -> DeviceInfo;
    /// Its control procedure.
    fn control(&self, core: &Core, args: &ControlArgs) -> Carry {
        let _ = (core, args);
        Carry::Clear
    }
    /// A service by ordinal, called by `caller` (an instance number).
    fn service(&self, core: &Core, caller: u32, ordinal: u16, call: &mut ServiceCall) -> Carry;
    /// Its V86 or PM API procedure, called by ring-3 code of `vm` with the
    /// VM's client registers. The default answers nothing.
    fn api(&self, core: &Core, mode: ApiMode, vm: u32, client: &mut ClientRegs) {
        let _ = (core, mode, vm, client);
    }
}

/// The built-in devices this host provides.
pub(crate) const BUILTINS: [&str; 2] = ["SHELL", "VXDLDR"];

/// Create the built-in device `name` (without the `*`).
pub(crate) fn create(name: &str) -> Option<Rc<dyn Builtin>> {
    match name.to_ascii_uppercase().as_str() {
        "SHELL" => Some(Rc::new(crate::shell::Shell)),
        "VXDLDR" => Some(Rc::new(crate::vxdldr::Vxdldr::default())),
        _ => None,
    }
}
