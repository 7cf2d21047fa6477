//! Every rule the host enforces has its section in `docs/violations.md`.
//! (That a violation names its code in the log line, the trace record and
//! the fatal error is tested in `tests/logging.rs`, which owns the
//! process-wide log subscriber.)
//!
//! The rules are the variants of `vmm_host::violation::Violation`: the host
//! cannot report a code that is not one, so comparing the enum with the
//! document's sections covers every code the host can emit.

use std::collections::BTreeMap;

use vmm_host::violation::Violation;

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
