//! What many test modules share: the handles of the first VMs and the
//! texts a run's trace holds.

use vmm_plugin_api::prelude::*;
use vmm_testkit::{Run, Scenario, ScriptDevice, Trace, json};

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

/// A scenario whose SCRIPT device registers interrupt source `go` at
/// Device_Init with `handler`, and a manifest adding `extra`.
pub fn on_go(extra: &str, handler: impl Fn(&ScriptDevice, &Vmm<'_>) + 'static) -> Scenario {
    let handler = std::rc::Rc::new(handler);
    Scenario::new(&format!("[386Enh]\ndevice = [\"SCRIPT\"]\n{extra}")).script(move |_dev, vmm, msg| {
        if msg.message == DEVICE_INIT {
            let h = handler.clone();
            vmm.register_interrupt("go", move |dev: &ScriptDevice, vmm, _irq| h(dev, vmm)).unwrap();
        }
        Carry::Clear
    })
}

/// An event callback that notes its tag, the time, the VM and whether it
/// timed out.
pub fn note_when_run(tag: &'static str) -> impl FnOnce(&ScriptDevice, &Vmm<'_>, Event) + 'static {
    move |dev: &ScriptDevice, vmm: &Vmm<'_>, ev: Event| {
        dev.note(vmm, format!("{tag} t={} vm={:#x} timed_out={}", vmm.get_system_time(), ev.vm.0, ev.timed_out));
    }
}

/// A directory of its own holding each `(file, nasm source)` assembled
/// (`module` and `test` name it).
pub fn assemble(module: &str, test: &str, programs: &[(&str, &str)]) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("vmm-{module}-{test}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (name, source) in programs {
        let asm = format!("{name}.asm");
        std::fs::write(dir.join(&asm), source).unwrap();
        let out = std::process::Command::new("nasm")
            .args(["-f", "bin", "-o", name, &asm])
            .current_dir(&dir)
            .output()
            .expect("nasm (apt-get install nasm)");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    dir
}

/// A ring-3 test module's command line as its steps: split at `;`,
/// trimmed, empty ones dropped.
pub fn script_steps(args: &str) -> std::collections::VecDeque<String> {
    args.split(';').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect()
}

/// DOS1 holds the critical section from 5 to 40 ms; `go` is raised at 10.
pub const DOS1_CRITICAL_5_TO_40: &str = r#"
    [[vm]]
    name = "DOS1"
    [[action]]
    at = 5
    vm = "DOS1"
    action = "begin_critical"
    [[action]]
    at = 40
    vm = "DOS1"
    action = "end_critical"
    [[interrupt]]
    name = "go"
    at = 10
"#;
