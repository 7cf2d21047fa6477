//! Devices built into the host, listed as `*NAME` in `[386Enh] device`
//! (as `device=*SHELL` named a device inside WIN386.EXE).

use std::rc::Rc;

use crate::machine::Core;
use crate::machine::device::Builtin;

/// The built-in devices this host provides.
pub(crate) const BUILTINS: [&str; 3] = ["SHELL", "VXDLDR", "VPICD"];

/// The built-in device `name` (without the `*`) of `core`. SHELL is the
/// machine's own (`Core::shell`: the scheduler reaches its appy-time
/// events); the others are made here.
pub(crate) fn create(core: &Core, name: &str) -> Option<Rc<dyn Builtin>> {
    match name.to_ascii_uppercase().as_str() {
        "SHELL" => Some(core.shell.clone()),
        "VXDLDR" => Some(Rc::new(crate::vxdldr::Vxdldr::default())),
        "VPICD" => Some(core.vpicd.clone()),
        _ => None,
    }
}
