//! What many test modules share: the handles of the first VMs and the
//! texts a run's trace holds.

use vmm_testkit::{Run, Trace, json};

/// The system VM's handle.
pub const SYS: u32 = 0x0001_0001;
/// The first DOS VM's handle.
pub const DOS1: u32 = 0x0001_0002;
/// The second DOS VM's handle.
pub const DOS2: u32 = 0x0001_0003;

/// The debug strings the SCRIPT device wrote, in order.
pub fn notes(run: &Run) -> Vec<String> {
    notes_in(run.trace())
}

/// The debug strings the SCRIPT device wrote into `trace`, in order.
pub fn notes_in(trace: &Trace) -> Vec<String> {
    texts(trace, json!({"kind": "debug_string", "device": "SCRIPT"}))
}

/// The lines ring-3 programs printed, in order.
pub fn outputs(run: &Run) -> Vec<String> {
    texts(run.trace(), json!({"kind": "program_output"}))
}

fn texts(trace: &Trace, selector: vmm_testkit::Value) -> Vec<String> {
    trace.values(selector, "text").into_iter().map(|v| v.as_str().unwrap_or_default().to_string()).collect()
}

/// The manifest lines that raise interrupt source `go` (registered by a
/// test's SCRIPT device) at 10 ms.
pub const GO_AT_10: &str = "[[interrupt]]\nname = \"go\"\nat = 10\n";
