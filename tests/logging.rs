//! What the host and its plugins log reaches the process's `tracing`
//! subscriber: a plugin's own events through the logging bridge, and a
//! violation's log line with its code.
//!
//! Its own test binary: these tests install a process-wide subscriber,
//! which tracing's per-callsite interest cache needs to be reliable, and
//! which would capture every other test's lines if it shared their process.
//! The subscriber is installed once and its output kept in one buffer; each
//! test looks for its own lines.

use std::sync::{Arc, Mutex, OnceLock};

use vmm_plugin_api::prelude::*;
use vmm_testkit::{Scenario, json};

#[derive(Clone, Default)]
struct Sink(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Sink {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The process's log, captured from the first call on.
fn log() -> &'static Sink {
    static SINK: OnceLock<Sink> = OnceLock::new();
    SINK.get_or_init(|| {
        let sink = Sink::default();
        let writer = sink.clone();
        tracing_subscriber::fmt().with_writer(move || writer.clone()).with_ansi(false).init();
        sink
    })
}

fn captured(sink: &Sink) -> String {
    String::from_utf8(sink.0.lock().unwrap().clone()).unwrap()
}

#[test]
fn plugin_log_lines_reach_the_host_subscriber() {
    let sink = log();
    let run = Scenario::new("[386Enh]\ndevice = [\"vcountd\"]\n[VCOUNTD]\nStart = 5\n").run();
    run.assert_ok();
    let out = captured(sink);
    assert!(out.contains("VCOUNTD starts counting at 5"), "{out}");
    assert!(out.contains("device=\"VCOUNTD\""), "{out}");
    assert!(out.contains("target=\"vcountd\""), "the plugin's own target is kept: {out}");
}

/// A device that frees a block it never allocated: `BAD_HEAP_FREE`.
fn double_free() -> Scenario {
    Scenario::new("[386Enh]\ndevice = [\"SCRIPT\"]").script(|_, vmm, msg| {
        if msg.message == DEVICE_INIT {
            vmm.heap_free(0x1234);
        }
        Carry::Clear
    })
}

#[test]
fn a_violation_names_its_code_in_the_log_line_the_trace_and_the_fatal_error() {
    let sink = log();

    let run = double_free().run();
    run.assert_ok();
    let record = run.trace().expect(json!({"kind": "violation", "code": "BAD_HEAP_FREE", "device": "SCRIPT"}));
    assert!(record["message"].as_str().unwrap().contains("_HeapFree"), "{record}");
    let log = captured(sink);
    let line = log.lines().find(|l| l.contains("violation")).unwrap_or_else(|| panic!("no violation line:\n{log}"));
    assert!(line.contains("code=\"BAD_HEAP_FREE\"") && line.contains("device=\"SCRIPT\""), "{line}");

    let run = double_free().set("machine.violations=\"fatal\"").run();
    let err = run.expect_error().to_string();
    assert!(err.contains("violation BAD_HEAP_FREE"), "{err}");
    run.trace().expect(json!({"kind": "fatal_error", "device": "SCRIPT"}));
}
