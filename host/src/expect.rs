//! The manifest's `[expect]` section: what must hold of a run's trace, checked
//! when the run ends (by `vmm run`, `vmm explore` and the test kit alike).
//!
//! ```toml
//! [expect]
//! # No record of these kinds (or matching these filters).
//! none = ["violation", { kind = "note", where = { note = "post_dropped" } }]
//! # Counts of records: equals, min and max, any of them.
//! count = [{ kind = "message_delivered", min = 1 }, { kind = "vm_created", equals = 2 }]
//! # Pairs of selections that must have as many records each.
//! same_count = [[{ kind = "note", where = { note = "post_queued" } }, "message_delivered"]]
//! ```
//!
//! A selection is a record kind (`"violation"`), or a table with `kind` and
//! an optional `where` table: every key of `where` names a field of the
//! record (a dotted path such as `fields.post` reaches into a `note`'s
//! fields) whose value must equal the one given.
//!
//! The check reads the JSON-lines trace as it is written ([`Checker::line`]):
//! it keeps counters, never the records.

use std::collections::BTreeMap;
use std::fmt;

use crate::origin::Origin;

/// The record kinds of the trace (docs/trace.md), which a selection may name.
pub const KINDS: &[&str] = &[
    "phase",
    "real_mode_init",
    "device_loaded",
    "device_rejected",
    "plugin_rejected",
    "vxdldr",
    "device_unloaded",
    "reload",
    "control",
    "vxd_call",
    "plugin_error",
    "violation",
    "note",
    "debug_string",
    "machine",
    "event_scheduled",
    "event_dispatched",
    "event_cancelled",
    "vm_switch",
    "vm_created",
    "vm_destroyed",
    "timeout_scheduled",
    "timeout",
    "timeout_cancelled",
    "crit_section",
    "semaphore",
    "interrupt",
    "priority",
    "vm_suspend",
    "action",
    "program_started",
    "program_ended",
    "program_output",
    "module_loaded",
    "module_freed",
    "window_created",
    "window_destroyed",
    "message_posted",
    "message_dropped",
    "message_delivered",
    "message_sent",
    "message_box",
    "far_call",
    "nest_exec",
    "int2f",
    "api_call",
    "if_flag",
    "v86_slice",
    "v86_interrupt",
    "io",
    "v86_fault",
    "appy_scheduled",
    "appy_dispatched",
    "appy_cancelled",
    "appy_dropped",
    "message_server_fault",
    "shell_message",
    "shell_execute",
    "broadcast",
    "deadlock",
    "livelock",
    "trace_limit",
    "fatal_error",
    "virtual_irq",
    "contention",
    "int_hook",
    "fault_hook",
    "call_back",
    "vm_return",
    "pm_fault",
];

/// Records of one kind, optionally filtered by field values.
#[derive(Clone, Debug, PartialEq)]
pub struct Selector {
    /// The record kind (`violation`, `message_delivered`, ...).
    pub kind: String,
    /// Field path → the value it must have.
    pub filter: BTreeMap<String, serde_json::Value>,
}

impl Selector {
    /// Whether `record` (of kind [`Selector::kind`]) passes the filter.
    fn matches(&self, record: &serde_json::Value) -> bool {
        self.filter.iter().all(|(path, want)| {
            let mut v = record;
            for part in path.split('.') {
                match v.get(part) {
                    Some(next) => v = next,
                    None => return false,
                }
            }
            v == want
        })
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.kind)?;
        if !self.filter.is_empty() {
            let parts: Vec<String> = self.filter.iter().map(|(k, v)| format!("{k} = {v}")).collect();
            write!(f, " where {{ {} }}", parts.join(", "))?;
        }
        Ok(())
    }
}

/// One expectation of `[expect]`.
#[derive(Clone, Debug, PartialEq)]
pub enum Rule {
    /// `none`: no record matches.
    None(Selector),
    /// `count`: the number of matching records is within bounds.
    Count {
        /// The records counted.
        selector: Selector,
        /// `equals`.
        equals: Option<u64>,
        /// `min`.
        min: Option<u64>,
        /// `max`.
        max: Option<u64>,
    },
    /// `same_count`: the two selections have as many records each.
    SameCount(Selector, Selector),
}

/// An expectation and where it was written.
#[derive(Clone, Debug, PartialEq)]
pub struct Expectation {
    /// What must hold.
    pub rule: Rule,
    /// Its place in the manifest.
    pub origin: Origin,
}

impl fmt::Display for Expectation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.rule {
            Rule::None(s) => write!(f, "none = [{s}]"),
            Rule::Count { selector, equals, min, max } => {
                write!(f, "count of {selector}")?;
                for (name, v) in [("equals", equals), ("min", min), ("max", max)] {
                    if let Some(v) = v {
                        write!(f, ", {name} = {v}")?;
                    }
                }
                Ok(())
            }
            Rule::SameCount(a, b) => write!(f, "same_count of {a} and {b}"),
        }
    }
}

/// A broken expectation: which one, and what the run did instead.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Broken {
    /// Where the expectation was written.
    pub origin: Origin,
    /// The expectation, as written.
    pub expectation: String,
    /// What the run did instead.
    pub found: String,
}

impl fmt::Display for Broken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: expectation `{}` does not hold: {}", self.origin, self.expectation, self.found)
    }
}

/// Counts the records each expectation looks at, fed one JSON line at a
/// time.
#[derive(Clone, Debug)]
pub struct Checker {
    expectations: Vec<Expectation>,
    /// Per expectation: its counts (one, or two for `same_count`).
    counts: Vec<[u64; 2]>,
    /// Per `none` expectation: the first record that broke it.
    first: Vec<Option<String>>,
}

impl Checker {
    /// A checker for `expectations` (a manifest's [`crate::Manifest::expect`]).
    pub fn new(expectations: &[Expectation]) -> Self {
        Checker {
            expectations: expectations.to_vec(),
            counts: vec![[0; 2]; expectations.len()],
            first: vec![None; expectations.len()],
        }
    }

    /// Whether there is anything to check.
    pub fn is_empty(&self) -> bool {
        self.expectations.is_empty()
    }

    /// Feed one trace record, as JSON text (a line of the trace).
    pub fn line(&mut self, line: &[u8]) {
        let Some(kind) = record_kind(line) else { return };
        let mut parsed: Option<Option<serde_json::Value>> = None;
        let mut record = |line: &[u8]| parsed.get_or_insert_with(|| serde_json::from_slice(line).ok()).clone();
        for (i, e) in self.expectations.iter().enumerate() {
            let selectors: [Option<&Selector>; 2] = match &e.rule {
                Rule::None(s) | Rule::Count { selector: s, .. } => [Some(s), None],
                Rule::SameCount(a, b) => [Some(a), Some(b)],
            };
            for (side, s) in selectors.into_iter().enumerate() {
                let Some(s) = s else { continue };
                if s.kind != kind {
                    continue;
                }
                if !s.filter.is_empty() && !record(line).is_some_and(|r| s.matches(&r)) {
                    continue;
                }
                self.counts[i][side] += 1;
                if matches!(e.rule, Rule::None(_)) && self.first[i].is_none() {
                    self.first[i] = Some(String::from_utf8_lossy(line).trim().to_string());
                }
            }
        }
    }

    /// The expectations that do not hold, in the order they were written.
    pub fn broken(&self) -> Vec<Broken> {
        self.broken_after(true)
    }

    /// [`Checker::broken`] for a run that ran to its end (`complete`) or
    /// was cut short (`[machine] until`, `--until`): a cut run is held
    /// only to what every part of a good run satisfies, `none` and a
    /// `count`'s `max`; `equals`, `min` and `same_count` speak of a whole
    /// run (a post still on its way at the cut is not a lost one).
    pub fn broken_after(&self, complete: bool) -> Vec<Broken> {
        let mut out = Vec::new();
        for (i, e) in self.expectations.iter().enumerate() {
            let [n, m] = self.counts[i];
            let (equals, min) = match &e.rule {
                Rule::Count { equals, min, .. } if complete => (*equals, *min),
                _ => (None, None),
            };
            let found = match &e.rule {
                Rule::None(_) if n > 0 => {
                    Some(format!("{n} record(s) matched, the first: {}", self.first[i].as_deref().unwrap_or("")))
                }
                Rule::Count { max, .. }
                    if equals.is_some_and(|x| n != x) || min.is_some_and(|x| n < x) || max.is_some_and(|x| n > x) =>
                {
                    Some(format!("the run has {n}"))
                }
                Rule::SameCount(a, b) if complete && n != m => Some(format!("the run has {n} of {a} but {m} of {b}")),
                _ => None,
            };
            if let Some(found) = found {
                out.push(Broken { origin: e.origin.clone(), expectation: e.to_string(), found });
            }
        }
        out
    }
}

/// The `kind` of a JSON trace line, read without parsing the record (the
/// trace writes `t`, `t_ns`, then `kind`).
pub fn record_kind(line: &[u8]) -> Option<&str> {
    const KEY: &[u8] = b"\"kind\":\"";
    let at = line.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let len = line[at..].iter().position(|&b| b == b'"')?;
    std::str::from_utf8(&line[at..at + len]).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin() -> Origin {
        Origin { file: "system.ini".into(), line: 3, column: 1 }
    }

    fn sel(kind: &str, filter: &[(&str, serde_json::Value)]) -> Selector {
        Selector { kind: kind.into(), filter: filter.iter().map(|(k, v)| (k.to_string(), v.clone())).collect() }
    }

    #[test]
    fn the_kinds_are_the_documented_ones() {
        let doc = include_str!("../../docs/trace.md");
        let documented: Vec<&str> =
            doc.lines().filter_map(|l| l.strip_prefix("### ")).flat_map(|h| h.split('`').skip(1).step_by(2)).collect();
        assert_eq!(KINDS, documented.as_slice());
    }

    #[test]
    fn counts_follow_kinds_and_filters() {
        let note = sel("note", &[("note", "post_queued".into())]);
        let rules = vec![
            Expectation { rule: Rule::None(sel("violation", &[])), origin: origin() },
            Expectation { rule: Rule::SameCount(note, sel("message_delivered", &[])), origin: origin() },
            Expectation {
                rule: Rule::Count {
                    selector: sel("note", &[("fields.post", 2.into())]),
                    equals: Some(1),
                    min: None,
                    max: None,
                },
                origin: origin(),
            },
        ];
        let mut c = Checker::new(&rules);
        c.line(br#"{"t":0,"t_ns":0,"kind":"note","device":"V","note":"post_queued","fields":{"post":1}}"#);
        c.line(br#"{"t":0,"t_ns":0,"kind":"note","device":"V","note":"post_called","fields":{"post":2}}"#);
        c.line(br#"{"t":1,"t_ns":1,"kind":"message_delivered","task":1}"#);
        assert!(c.broken().is_empty(), "{:?}", c.broken());
        c.line(br#"{"t":2,"t_ns":2,"kind":"message_delivered","task":1}"#);
        c.line(br#"{"t":2,"t_ns":2,"kind":"violation","code":"X"}"#);
        let broken = c.broken();
        assert_eq!(broken.len(), 2, "{broken:?}");
        assert!(broken[0].found.contains("\"code\":\"X\""), "{}", broken[0]);
        assert!(broken[1].found.contains("1 of note where { note = \"post_queued\" } but 2"), "{}", broken[1]);
        assert!(broken[1].to_string().starts_with("system.ini:3:1: expectation `same_count of"), "{}", broken[1]);
    }
}
