//! Devices built into the host, listed as `*NAME` in `[386Enh] device`
//! (as `device=*SHELL` named a device inside WIN386.EXE).

use std::rc::Rc;

use crate::machine::device::Builtin;

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
