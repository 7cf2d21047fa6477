//! Ring-3 code inside the VMs: Windows tasks in the system VM and DOS
//! programs in DOS VMs. The scheduler asks this layer whether a VM has
//! ring-3 work and lets it take one step at a time.

use crate::machine::Core;

impl Core {
    /// Whether `vm` has a ring-3 step ready to run.
    pub(crate) fn ring3_ready(&self, _vm: u32) -> bool {
        false
    }

    /// Run one ring-3 step of `vm`; whether one ran.
    pub(crate) fn ring3_step(&self, _vm: u32) -> bool {
        false
    }

    /// Start `program` with `args` in `vm`.
    pub(crate) fn start_program(&self, vm: u32, program: &str, _args: &str) {
        tracing::warn!("VM {vm:#x}: cannot start `{program}`: this build does not run ring-3 programs");
    }

    /// `vm` is being destroyed: forget its ring-3 state.
    pub(crate) fn ring3_vm_destroyed(&self, _vm: u32) {}
}
