//! The code built into the host, named with a `*` as `device=*SHELL` named
//! a device inside WIN386.EXE: devices (`[386Enh] device = ["*SHELL"]`),
//! each a [`Builtin`] owning its state, and ring-3 modules
//! (`[windows] load = ["*RUNDLL ..."]`), written against the SDK like any
//! plugin and linked in. Adding one is its own file and a line here.

use std::rc::Rc;

use crate::loader::PluginLibrary;
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

/// The built-in ring-3 module `name` refers to (`*RUNDLL` or
/// `*RUNDLL.EXE`), as a library like a plugin file's.
pub(crate) fn module(name: &str) -> Option<&'static PluginLibrary> {
    crate::ring3::rundll::library(name)
}
