//! Every violation code the host can emit has its section in
//! `docs/violations.md`, and a violation names its code in the log line, in
//! the trace record and in the fatal error it can become.
//!
//! The codes are found in the host's sources: the first argument of every
//! `violation(...)` call, and of every call of a function that passes one
//! of its own parameters on as the code (`stale(core, service, "CODE", ..)`),
//! however deep such forwarding goes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use vmm_plugin_api::prelude::*;
use vmm_testkit::{Scenario, json};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The source with comments removed (`blank_strings` false) or, in a
/// source already without comments, with the insides of string and
/// character literals blanked (`true`). Blanking keeps every byte offset,
/// so a position found in the blanked text is the same in the other.
fn lex(src: &str, blank_strings: bool) -> String {
    let b = src.as_bytes();
    let mut out: Vec<u8> = Vec::with_capacity(b.len());
    let mut i = 0;
    let literal = |out: &mut Vec<u8>, from: usize, to: usize, open: usize, close: usize| {
        if blank_strings {
            out.extend_from_slice(&b[from..from + open]);
            out.extend(b[from + open..to - close].iter().map(|c| if *c == b'\n' { b'\n' } else { b' ' }));
            out.extend_from_slice(&b[to - close..to]);
        } else {
            out.extend_from_slice(&b[from..to]);
        }
    };
    while i < b.len() {
        if b[i..].starts_with(b"//") {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if b[i..].starts_with(b"/*") {
            let end = src[i + 2..].find("*/").map_or(b.len(), |e| i + 2 + e + 2);
            out.extend(b[i..end].iter().map(|c| if *c == b'\n' { b'\n' } else { b' ' }));
            i = end;
        } else if b[i] == b'"' || (b[i] == b'r' && matches!(b.get(i + 1), Some(b'"' | b'#'))) {
            let (end, open, close) = string_end(src, i);
            literal(&mut out, i, end, open, close);
            i = end;
        } else if b[i] == b'\''
            && let Some(end) = char_end(src, i)
        {
            literal(&mut out, i, end, 1, 1);
            i = end;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).expect("lexing keeps UTF-8")
}

/// The end of the string literal starting at `i` (plain or raw), with the
/// lengths of its opening and closing delimiters.
fn string_end(src: &str, i: usize) -> (usize, usize, usize) {
    let b = src.as_bytes();
    if b[i] == b'r' {
        let hashes = b[i + 1..].iter().take_while(|c| **c == b'#').count();
        let close = format!("\"{}", "#".repeat(hashes));
        let body = i + 2 + hashes;
        let end = src[body..].find(&close).map_or(b.len(), |e| body + e + close.len());
        return (end, 2 + hashes, close.len());
    }
    let mut j = i + 1;
    while j < b.len() {
        match b[j] {
            b'\\' => j += 2,
            b'"' => return (j + 1, 1, 1),
            _ => j += 1,
        }
    }
    (b.len(), 1, 0)
}

/// The end of the character literal starting at `i`, or `None` for a
/// lifetime.
fn char_end(src: &str, i: usize) -> Option<usize> {
    let rest = &src[i + 1..];
    if let Some(escaped) = rest.strip_prefix('\\') {
        return escaped.get(1..).and_then(|r| r.find('\'')).map(|e| i + 3 + e + 1);
    }
    let c = rest.chars().next()?;
    rest[c.len_utf8()..].starts_with('\'').then(|| i + 1 + c.len_utf8() + 1)
}

/// The arguments of the call whose `(` is at `open`, as trimmed text of
/// `src`; `blank` is `src` with its literals blanked.
fn call_args(src: &str, blank: &str, open: usize) -> Vec<String> {
    let b = blank.as_bytes();
    let (mut depth, mut start, mut args) = (0usize, open + 1, Vec::new());
    for (i, c) in b.iter().enumerate().skip(open) {
        match c {
            b'(' | b'[' | b'{' => depth += 1,
            b')' | b']' | b'}' => {
                depth -= 1;
                if depth == 0 {
                    args.push(src[start..i].trim().to_string());
                    return args.into_iter().filter(|a| !a.is_empty()).collect();
                }
            }
            b',' if depth == 1 => {
                args.push(src[start..i].trim().to_string());
                start = i + 1;
            }
            _ => {}
        }
    }
    args
}

/// Positions of the `(` of calls of `name` in a blanked source (not its
/// definition, not a longer name).
fn calls_of<'a>(blank: &'a str, name: &'a str) -> impl Iterator<Item = usize> + 'a {
    blank.match_indices(name).filter_map(move |(at, _)| {
        let before = blank[..at].chars().next_back();
        let after = at + name.len();
        let is_ident = |c: char| c.is_alphanumeric() || c == '_';
        if before.is_some_and(is_ident) || !blank[after..].starts_with('(') || blank[..at].trim_end().ends_with("fn") {
            return None;
        }
        Some(after)
    })
}

/// The function enclosing `at`: its name and parameter names.
fn enclosing_fn(src: &str, blank: &str, at: usize) -> (String, Vec<String>) {
    let fn_at = blank[..at].rfind("fn ").expect("a call outside any function");
    let rest = &blank[fn_at + 3..];
    let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
    let open = fn_at + 3 + rest.find('(').unwrap();
    // A method's receiver is not among the arguments of `x.method(...)`.
    let params = call_args(src, blank, open)
        .iter()
        .map(|p| p.split(':').next().unwrap_or("").trim().trim_start_matches("mut ").to_string())
        .filter(|p| !matches!(p.as_str(), "self" | "&self" | "&mut self"))
        .collect();
    (name, params)
}

/// Every violation code the host's sources (without comments) pass to
/// `violation`, directly or through forwarding functions, with where; and
/// the forwarding functions found.
fn emitted_codes(sources: &[(PathBuf, String)]) -> (BTreeMap<String, String>, BTreeSet<String>) {
    let blanked: Vec<String> = sources.iter().map(|(_, s)| lex(s, true)).collect();
    let mut codes = BTreeMap::new();
    let mut forwarders: BTreeMap<String, usize> = BTreeMap::from([("violation".to_string(), 0)]);
    let mut done: BTreeSet<String> = BTreeSet::new();
    while let Some((name, index)) = forwarders.iter().find(|(n, _)| !done.contains(*n)).map(|(n, i)| (n.clone(), *i)) {
        done.insert(name.clone());
        for ((path, src), blank) in sources.iter().zip(&blanked) {
            for open in calls_of(blank, &name) {
                let args = call_args(src, blank, open);
                let Some(arg) = args.get(index) else { continue };
                let place = format!("{}:{}", path.display(), src[..open].lines().count());
                if let Some(code) = arg.strip_prefix('"').and_then(|a| a.strip_suffix('"')) {
                    codes.entry(code.to_string()).or_insert(place);
                    continue;
                }
                // Not a literal: it must be a parameter of the caller, which
                // then forwards its callers' codes.
                let ident: String = arg.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                let (caller, params) = enclosing_fn(src, blank, open);
                let Some(i) = params.iter().position(|p| *p == ident) else {
                    panic!("{place}: {name} is given the code `{arg}`, which is neither a literal nor a parameter");
                };
                forwarders.entry(caller).or_insert(i);
            }
        }
    }
    (codes, forwarders.into_keys().collect())
}

/// The `## CODE` sections of docs/violations.md, with their text.
fn documented_codes(doc: &str) -> BTreeMap<String, String> {
    let mut sections = BTreeMap::new();
    for part in doc.split("\n## ").skip(1) {
        let (title, body) = part.split_once('\n').unwrap_or((part, ""));
        sections.insert(title.trim().to_string(), body.to_string());
    }
    sections
}

#[test]
fn every_violation_code_the_host_emits_is_documented() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    files.sort();
    let sources: Vec<(PathBuf, String)> = files
        .into_iter()
        .map(|f| {
            let text = lex(&std::fs::read_to_string(&f).unwrap(), false);
            (f.strip_prefix(root).unwrap().to_path_buf(), text)
        })
        .collect();
    let (codes, forwarders) = emitted_codes(&sources);
    // The scan sees the emitters it must: direct calls, the stale-handle
    // helper, and the plugins' own reports (whose codes are the plugins').
    for f in ["violation", "stale", "report_violation"] {
        assert!(forwarders.contains(f), "the scan missed the forwarding function {f}: {forwarders:?}");
    }
    for known in ["SYNC_SERVICE_AT_INTERRUPT", "BAD_POINTER", "STALE_EVENT_HANDLE", "REENTRANCY", "DEADLOCK"] {
        assert!(codes.contains_key(known), "the scan missed {known}: {codes:?}");
    }

    let doc = std::fs::read_to_string(root.join("../docs/violations.md")).unwrap();
    let sections = documented_codes(&doc);
    let missing: Vec<String> = codes
        .iter()
        .filter(|(c, _)| !sections.contains_key(*c))
        .map(|(c, at)| format!("{c} (emitted at {at})"))
        .collect();
    assert!(missing.is_empty(), "violation codes without a section in docs/violations.md:\n{}", missing.join("\n"));
    for (code, body) in &sections {
        assert!(codes.contains_key(code), "docs/violations.md documents {code}, which the host never emits");
        for part in ["**Rule.**", "**Windows.**", "**Fix.**"] {
            assert!(body.contains(part), "docs/violations.md: the section of {code} has no {part}");
        }
    }
}

#[test]
fn the_scan_follows_forwarding_and_refuses_what_it_cannot_read() {
    let src = lex(
        r#"
        fn helper(core: &Core, service: &str, code: &str) { core.violation(code, "m", None); }
        fn method(&self, code: &str) { self.violation(code, "m", None); }
        fn c() { core.method("FROM_METHOD"); }
        fn outer(x: u32, what: &str) { helper(core, "S", what) }
        fn a() { outer(1, "FROM_OUTER"); helper(core, "S", "FROM_HELPER"); core.violation("DIRECT", f(1, (2, 3)), None); }
        // core.violation("IN_A_COMMENT", "", None);
        fn b() { let s = "violation(\"IN_A_STRING\""; let q = ['"', '\'']; }
        "#,
        false,
    );
    let (codes, forwarders) = emitted_codes(&[(PathBuf::from("x.rs"), src)]);
    assert_eq!(codes.keys().collect::<Vec<_>>(), ["DIRECT", "FROM_HELPER", "FROM_METHOD", "FROM_OUTER"]);
    assert_eq!(forwarders.into_iter().collect::<Vec<_>>(), ["helper", "method", "outer", "violation"]);

    let opaque = lex("fn c(core: &Core) { let k = pick(); core.violation(k, \"m\", None); }", false);
    let err = std::panic::catch_unwind(|| emitted_codes(&[(PathBuf::from("y.rs"), opaque)])).unwrap_err();
    let message = err.downcast_ref::<String>().unwrap();
    assert!(message.contains("y.rs:1: violation is given the code `k`"), "{message}");
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
