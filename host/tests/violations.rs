//! Every rule the host enforces has its section in `docs/violations.md`,
//! and a violation names its code in the log line, in the trace record and
//! in the fatal error it can become.
//!
//! The rules are the variants of `vmm_host::violation::Violation`: the host
//! cannot report a code that is not one, so comparing the enum with the
//! document's sections covers every code the host can emit.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use vmm_host::violation::Violation;
use vmm_plugin_api::prelude::*;
use vmm_testkit::{Scenario, json};

/// The `## CODE` sections of docs/violations.md, in order, with their text.
fn documented_codes(doc: &str) -> Vec<(String, String)> {
    doc.split("\n## ")
        .skip(1)
        .map(|part| {
            let (title, body) = part.split_once('\n').unwrap_or((part, ""));
            (title.trim().to_string(), body.to_string())
        })
        .collect()
}

#[test]
fn every_rule_has_its_section_in_docs_violations_md_and_every_section_is_a_rule() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/violations.md")).unwrap();
    let sections = documented_codes(&doc);
    let by_code: BTreeMap<&str, &str> = sections.iter().map(|(c, b)| (c.as_str(), b.as_str())).collect();
    assert_eq!(by_code.len(), sections.len(), "docs/violations.md has a section twice");
    for rule in Violation::ALL {
        let Some(body) = by_code.get(rule.code()) else {
            panic!("{rule:?} ({}) has no section in docs/violations.md", rule.code());
        };
        for part in ["**Rule.**", "**Windows.**", "**Fix.**"] {
            assert!(body.contains(part), "docs/violations.md: the section of {rule} has no {part}");
        }
    }
    let codes: Vec<&str> = Violation::ALL.iter().map(|r| r.code()).collect();
    let titles: Vec<&str> = sections.iter().map(|(c, _)| c.as_str()).collect();
    assert_eq!(titles, codes, "docs/violations.md's sections and the Violation enum differ (or are in another order)");
}

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
    let sink = Sink::default();
    let writer = sink.clone();
    tracing_subscriber::fmt().with_writer(move || writer.clone()).with_ansi(false).init();

    let run = double_free().run();
    run.assert_ok();
    let record = run.trace().expect(json!({"kind": "violation", "code": "BAD_HEAP_FREE", "device": "SCRIPT"}));
    assert!(record["message"].as_str().unwrap().contains("_HeapFree"), "{record}");
    let log = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
    let line = log.lines().find(|l| l.contains("violation")).unwrap_or_else(|| panic!("no violation line:\n{log}"));
    assert!(line.contains("code=\"BAD_HEAP_FREE\"") && line.contains("device=\"SCRIPT\""), "{line}");

    let run = double_free().set("machine.violations=\"fatal\"").run();
    let err = run.expect_error().to_string();
    assert!(err.contains("violation BAD_HEAP_FREE"), "{err}");
    run.trace().expect(json!({"kind": "fatal_error", "device": "SCRIPT"}));
}
