//! A plugin's `tracing` events reach the host's subscriber through the
//! logging bridge. Its own test binary: it installs a process-wide
//! subscriber, which tracing's per-callsite interest cache needs to be
//! reliable.

use std::sync::{Arc, Mutex};

use vmm_testkit::Scenario;

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

#[test]
fn plugin_log_lines_reach_the_host_subscriber() {
    let sink = Sink::default();
    let writer = sink.clone();
    tracing_subscriber::fmt().with_writer(move || writer.clone()).with_ansi(false).init();
    let run = Scenario::new("[386Enh]\ndevice = [\"vcountd\"]\n[VCOUNTD]\nStart = 5\n").run();
    run.assert_ok();
    let out = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
    assert!(out.contains("VCOUNTD starts counting at 5"), "{out}");
    assert!(out.contains("device=\"VCOUNTD\""), "{out}");
    assert!(out.contains("target=\"vcountd\""), "the plugin's own target is kept: {out}");
}
