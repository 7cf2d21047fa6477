//! Schedule exploration: run one machine under many seeds of the random
//! order (events ready at the same moment in a seeded order, interrupts
//! injected at service-call boundaries) and collect the runs that fail.
//!
//! A run fails on the first of: a `violation` record (deadlocks and
//! livelocks write one too), a plugin panic (`plugin_error` with `error`
//! `panic`), a fatal error, or a broken `[expect]` expectation. Each worker
//! thread builds its own [`Machine`] for every run (a machine stays on the
//! thread that made it); plugin files are loaded once per process. Runs
//! keep no trace: the records stream through the oracle and are dropped. A
//! failing run is deterministic, so with [`Options::out`] it is run again
//! with its trace written to a file.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::error::{Error, Result};
use crate::expect::{Checker, record_kind};
use crate::machine::{Machine, MachineOptions};
use crate::manifest::{Manifest, Order};

/// A range of seeds, `start..end` (end excluded).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Seeds {
    /// The first seed.
    pub start: u64,
    /// One past the last seed.
    pub end: u64,
}

impl Seeds {
    /// Parse `A..B` (B excluded) or `A..=B` (B included).
    pub fn parse(text: &str) -> std::result::Result<Seeds, String> {
        let bad = || format!("`{text}` is not a seed range: write A..B (B excluded) or A..=B, for example 0..1000");
        let (a, b, inclusive) = match text.split_once("..=") {
            Some((a, b)) => (a, b, true),
            None => text.split_once("..").map(|(a, b)| (a, b, false)).ok_or_else(bad)?,
        };
        let a: u64 = a.trim().parse().map_err(|_| bad())?;
        let b: u64 = b.trim().parse().map_err(|_| bad())?;
        let end = if inclusive { b.checked_add(1).ok_or_else(bad)? } else { b };
        if end < a {
            return Err(format!("the seed range `{text}` ends before it starts"));
        }
        Ok(Seeds { start: a, end })
    }

    /// The number of seeds.
    pub fn len(&self) -> u64 {
        self.end - self.start
    }

    /// Whether the range is empty.
    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }
}

/// One shard of a seed range: `I/N`, I from 1 to N (as `cargo nextest
/// --partition count:I/N`). Shard I takes the seeds whose index in the
/// range is I-1 modulo N, so the N shards split the range exactly: every
/// seed in one shard, none in two.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Shard {
    /// 1-based shard number.
    pub index: u64,
    /// Number of shards.
    pub count: u64,
}

impl Shard {
    /// Parse `I/N`.
    pub fn parse(text: &str) -> std::result::Result<Shard, String> {
        let bad = || format!("`{text}` is not a shard: write I/N with 1 <= I <= N, for example 1/4");
        let (i, n) = text.split_once('/').ok_or_else(bad)?;
        let index: u64 = i.trim().parse().map_err(|_| bad())?;
        let count: u64 = n.trim().parse().map_err(|_| bad())?;
        if index == 0 || count == 0 || index > count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }

    /// How many seeds of `range` this shard has.
    pub fn len(self, range: Seeds) -> u64 {
        let first = self.index - 1;
        if range.len() <= first { 0 } else { (range.len() - first - 1) / self.count + 1 }
    }

    /// Whether this shard of `range` has no seed.
    pub fn is_empty(self, range: Seeds) -> bool {
        self.len(range) == 0
    }

    /// The `i`th seed of this shard of `range`, if it has that many.
    pub fn seed(self, range: Seeds, i: u64) -> Option<u64> {
        // Below `range.end`, so no overflow.
        (i < self.len(range)).then(|| range.start + (self.index - 1) + i * self.count)
    }

    /// The seeds of `range` in this shard, in order.
    pub fn seeds(self, range: Seeds) -> impl Iterator<Item = u64> {
        (0..self.len(range)).filter_map(move |i| self.seed(range, i))
    }
}

/// How to explore.
pub struct Options {
    /// The seeds.
    pub seeds: Seeds,
    /// Only this shard of them.
    pub shard: Option<Shard>,
    /// Worker threads (at least 1).
    pub jobs: usize,
    /// Stop at the first failure (runs already started finish).
    pub fail_fast: bool,
    /// Write the trace of each failing run here, as `seed-N.jsonl`.
    pub out: Option<PathBuf>,
    /// Plugin directories searched before the manifest's.
    pub plugin_dirs: Vec<PathBuf>,
    /// Told after every run: runs done, failures so far.
    pub progress: Option<Box<dyn Fn(u64, u64) + Sync>>,
}

/// What a failure is, for grouping: the record kind (`violation`,
/// `plugin_error`, `fatal_error`, `expect`), the device, and the code (a
/// violation's code, the failed entry point, the broken expectation).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Signature {
    /// The kind.
    pub kind: String,
    /// The device, if one is to blame.
    pub device: Option<String>,
    /// The code.
    pub code: String,
}

impl std::fmt::Display for Signature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} in {}", self.kind, self.code, self.device.as_deref().unwrap_or("the machine"))
    }
}

/// A failing run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// Its seed.
    pub seed: u64,
    /// What failed.
    pub signature: Signature,
    /// The first failure's message.
    pub message: String,
    /// Its trace, with [`Options::out`].
    pub trace: Option<PathBuf>,
}

/// The result of an exploration.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Runs made.
    pub runs: u64,
    /// The failing runs, by seed.
    pub failures: Vec<Failure>,
    /// Wall-clock time taken.
    pub elapsed: std::time::Duration,
}

impl Report {
    /// The failures grouped by signature, seeds in order.
    pub fn groups(&self) -> BTreeMap<&Signature, Vec<&Failure>> {
        let mut groups: BTreeMap<&Signature, Vec<&Failure>> = BTreeMap::new();
        for f in &self.failures {
            groups.entry(&f.signature).or_default().push(f);
        }
        groups
    }

    /// Runs per second of wall-clock time.
    pub fn rate(&self) -> f64 {
        self.runs as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// The manifest of one run: `base` in random order with `seed`.
pub fn run_manifest(base: &Manifest, seed: u64) -> Manifest {
    let mut m = base.clone();
    m.machine.order = Order::Random;
    m.machine.seed = Some(seed);
    m
}

/// Run `manifest` under every seed of `options`. An error that is no
/// failure of a schedule (a plugin that does not load, a manifest naming a
/// missing VM) ends the exploration with that error.
pub fn explore(manifest: &Manifest, options: &Options) -> Result<Report> {
    let started = std::time::Instant::now();
    let shard = options.shard.unwrap_or(Shard { index: 1, count: 1 });
    let next = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let runs = AtomicU64::new(0);
    let failures = Mutex::new(Vec::new());
    let error: Mutex<Option<Error>> = Mutex::new(None);
    let worker = || {
        loop {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            let i = next.fetch_add(1, Ordering::Relaxed);
            // Seeds are computed, not listed: a range of 2^64 seeds costs no memory.
            let Some(seed) = shard.seed(options.seeds, i) else { return };
            match run_seed(manifest, seed, &options.plugin_dirs, None) {
                Ok(None) => {}
                Ok(Some(mut failure)) => {
                    if let Some(dir) = &options.out {
                        match write_trace(manifest, seed, &options.plugin_dirs, dir) {
                            Ok(path) => failure.trace = Some(path),
                            Err(e) => {
                                error.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(e);
                                stop.store(true, Ordering::Relaxed);
                            }
                        }
                    }
                    failures.lock().unwrap_or_else(|p| p.into_inner()).push(failure);
                    if options.fail_fast {
                        stop.store(true, Ordering::Relaxed);
                    }
                }
                Err(e) => {
                    error.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(e);
                    stop.store(true, Ordering::Relaxed);
                }
            }
            let done = runs.fetch_add(1, Ordering::Relaxed) + 1;
            if let Some(progress) = &options.progress {
                progress(done, failures.lock().unwrap_or_else(|p| p.into_inner()).len() as u64);
            }
        }
    };
    std::thread::scope(|s| {
        for _ in 0..options.jobs.max(1) {
            s.spawn(worker);
        }
    });
    if let Some(e) = error.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(e);
    }
    let mut failures = failures.into_inner().unwrap_or_else(|p| p.into_inner());
    failures.sort_by_key(|f| f.seed);
    Ok(Report { runs: runs.into_inner(), failures, elapsed: started.elapsed() })
}

/// Run `manifest` once in random order with `seed`; the failure, if the
/// run fails. With `trace`, the trace is written there too.
pub fn run_seed(
    manifest: &Manifest,
    seed: u64,
    plugin_dirs: &[PathBuf],
    trace: Option<Box<dyn Write>>,
) -> Result<Option<Failure>> {
    let options = MachineOptions { plugin_dirs: plugin_dirs.to_vec(), ..MachineOptions::default() };
    run_seed_with(manifest, seed, options, trace)
}

/// [`run_seed`] with the machine's options given (plugins linked into the
/// process, as the test kit's scenarios have); their trace settings are
/// replaced by the oracle's.
pub fn run_seed_with(
    manifest: &Manifest,
    seed: u64,
    options: MachineOptions,
    trace: Option<Box<dyn Write>>,
) -> Result<Option<Failure>> {
    let mut m = run_manifest(manifest, seed);
    if trace.is_none() {
        // Nothing is kept, so no size limit applies.
        m.machine.trace_limit = u64::MAX;
    }
    let state = Rc::new(RefCell::new(Oracle::new(Checker::new(&m.expect), trace)));
    let sink = OracleSink { state: state.clone(), partial: Vec::new() };
    let mut machine = Machine::new(m, MachineOptions { capture_trace: false, trace: Some(Box::new(sink)), ..options });
    let mut complete = true;
    let result = machine
        .boot()
        .and_then(|()| machine.run())
        .map(|end| complete = end == crate::machine::RunEnd::Quiescent)
        .and_then(|()| machine.shutdown());
    let written = machine.finish_trace();
    drop(machine);
    let state = Rc::try_unwrap(state).map(RefCell::into_inner).unwrap_or_else(|rc| rc.borrow().clone_result());
    if let Err(e) = result {
        if !is_schedule_failure(&e) {
            return Err(e);
        }
        if state.first.is_none() {
            let (device, message) = match &e {
                Error::Fatal { device, message } => (device.clone(), message.clone()),
                other => (None, other.to_string()),
            };
            let signature = Signature { kind: "fatal_error".into(), device, code: "FATAL".into() };
            return Ok(Some(Failure { seed, signature, message, trace: None }));
        }
    }
    written?;
    if let Some((signature, message)) = state.first {
        return Ok(Some(Failure { seed, signature, message, trace: None }));
    }
    // A run `[machine] until` cut short is held to what any part of a
    // good run satisfies.
    if let Some(b) = state.checker.broken_after(complete).into_iter().next() {
        let signature = Signature { kind: "expect".into(), device: None, code: b.expectation.clone() };
        return Ok(Some(Failure { seed, signature, message: b.to_string(), trace: None }));
    }
    Ok(None)
}

/// Whether `e` ends a run because of what happened in it (a schedule can
/// cause it), rather than because the machine could not be set up.
fn is_schedule_failure(e: &Error) -> bool {
    matches!(e, Error::Fatal { .. } | Error::SysVmInitFailed { .. } | Error::AbortWin386Load { .. })
}

fn write_trace(manifest: &Manifest, seed: u64, plugin_dirs: &[PathBuf], dir: &std::path::Path) -> Result<PathBuf> {
    let io = |path: &std::path::Path, e: std::io::Error| Error::Io {
        path: path.to_path_buf(),
        message: format!("cannot write the trace of a failing run: {e}"),
    };
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    let path = dir.join(format!("seed-{seed}.jsonl"));
    let file = std::fs::File::create(&path).map_err(|e| io(&path, e))?;
    run_seed(manifest, seed, plugin_dirs, Some(Box::new(std::io::BufWriter::new(file))))?;
    Ok(path)
}

/// What a run's records told so far.
struct Oracle {
    checker: Checker,
    /// The first record that fails the run.
    first: Option<(Signature, String)>,
    /// Where the records also go (a failing run's trace file).
    copy: Option<Box<dyn Write>>,
}

impl Oracle {
    fn new(checker: Checker, copy: Option<Box<dyn Write>>) -> Self {
        Oracle { checker, first: None, copy }
    }

    fn clone_result(&self) -> Oracle {
        Oracle { checker: self.checker.clone(), first: self.first.clone(), copy: None }
    }

    fn line(&mut self, line: &[u8]) -> std::io::Result<()> {
        if let Some(copy) = &mut self.copy {
            copy.write_all(line)?;
            copy.write_all(b"\n")?;
        }
        if self.first.is_none()
            && let Some(kind @ ("violation" | "plugin_error" | "fatal_error")) = record_kind(line)
            && let Ok(r) = serde_json::from_slice::<serde_json::Value>(line)
        {
            let text = |k: &str| r.get(k).and_then(|v| v.as_str()).map(str::to_string);
            let code = match kind {
                "violation" => text("code"),
                // A panic fails the run; other plugin errors show as the
                // violation or fatal error they lead to.
                "plugin_error" if text("error").as_deref() == Some("panic") => {
                    Some(format!("panic in {}", text("entry").unwrap_or_default()))
                }
                "plugin_error" => None,
                _ => Some("FATAL".to_string()),
            };
            if let Some(code) = code {
                let signature = Signature { kind: kind.to_string(), device: text("device"), code };
                self.first = Some((signature, text("message").unwrap_or_default()));
            }
        }
        self.checker.line(line);
        Ok(())
    }
}

/// The machine's trace writer during an exploration: whole records go to
/// the [`Oracle`].
struct OracleSink {
    state: Rc<RefCell<Oracle>>,
    partial: Vec<u8>,
}

impl Write for OracleSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.write_all(buf)?;
        Ok(buf.len())
    }

    fn write_all(&mut self, mut buf: &[u8]) -> std::io::Result<()> {
        let mut state = self.state.borrow_mut();
        while let Some(end) = buf.iter().position(|&b| b == b'\n') {
            if self.partial.is_empty() {
                state.line(&buf[..end])?;
            } else {
                self.partial.extend_from_slice(&buf[..end]);
                let line = std::mem::take(&mut self.partial);
                state.line(&line)?;
            }
            buf = &buf[end + 1..];
        }
        self.partial.extend_from_slice(buf);
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match &mut self.state.borrow_mut().copy {
            Some(copy) => copy.flush(),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_ranges_and_shards_parse_and_split_exactly() {
        assert_eq!(Seeds::parse("3..10"), Ok(Seeds { start: 3, end: 10 }));
        assert_eq!(Seeds::parse("3..=10"), Ok(Seeds { start: 3, end: 11 }));
        assert!(Seeds::parse("10..3").is_err() && Seeds::parse("x..3").is_err() && Seeds::parse("5").is_err());
        assert!(Shard::parse("0/2").is_err() && Shard::parse("3/2").is_err() && Shard::parse("1/0").is_err());
        let range = Seeds { start: 7, end: 7 + 103 };
        let mut all: Vec<u64> = (1..=4).flat_map(|i| Shard::parse(&format!("{i}/4")).unwrap().seeds(range)).collect();
        all.sort();
        assert_eq!(all, (range.start..range.end).collect::<Vec<_>>());
        let huge = Seeds { start: 0, end: u64::MAX };
        let last = Shard { index: 3, count: 3 };
        assert_eq!(last.len(huge), u64::MAX / 3);
        assert_eq!(last.seed(huge, last.len(huge) - 1), Some(u64::MAX - 1));
        assert_eq!(last.seed(huge, last.len(huge)), None);
        assert!(Shard { index: 5, count: 5 }.is_empty(Seeds { start: 1, end: 5 }));
    }
}
