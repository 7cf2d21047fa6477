//! Schedule exploration: run one machine under many seeds of an explored
//! order (random or pct: events ready at the same moment in a seeded
//! order, interrupts injected at service-call boundaries), collect the
//! runs that fail, and shrink the first schedule of each failure.
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
pub use crate::vmm::schedule::{Decision, DecisionKind, Schedule};

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

/// The schedule strategy of an exploration.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Strategy {
    /// Random order: uniform choices among the ready events, interrupts
    /// injected at service-call boundaries (`vmm run --order random`).
    Random,
    /// Pct order (`vmm run --order pct`): random task priorities,
    /// `depth - 1` change points among the first `steps` steps (`None`:
    /// measured by [`calibrate`] before the exploration).
    Pct {
        /// The bug depth (at least 1).
        depth: u32,
        /// The steps the change points are drawn among.
        steps: Option<u64>,
    },
}

impl Strategy {
    /// Pct with depth `depth`, its steps measured.
    pub fn pct(depth: u32) -> Strategy {
        Strategy::Pct { depth, steps: None }
    }

    /// The order that runs it.
    pub fn order(self) -> Order {
        match self {
            Strategy::Random => Order::Random,
            Strategy::Pct { .. } => Order::Pct,
        }
    }

    /// Its name: `random` or `pct`.
    pub fn name(self) -> &'static str {
        match self {
            Strategy::Random => "random",
            Strategy::Pct { .. } => "pct",
        }
    }

    /// The `vmm run` flags that replay the run of `seed`.
    pub fn run_flags(self, seed: u64) -> String {
        match self {
            Strategy::Random => format!("--order random --seed {seed}"),
            Strategy::Pct { depth, steps } => {
                let steps = steps.map(|k| format!(" --pct-steps {k}")).unwrap_or_default();
                format!("--order pct --seed {seed} --pct-depth {depth}{steps}")
            }
        }
    }

    /// The manifest settings (`--set` / `Scenario::set`) that replay the
    /// run of `seed`.
    pub fn settings(self, seed: u64) -> Vec<String> {
        let mut v = vec![format!("machine.order={}", self.name()), format!("machine.seed={seed}")];
        if let Strategy::Pct { depth, steps } = self {
            v.push(format!("machine.pct_depth={depth}"));
            if let Some(k) = steps {
                v.push(format!("machine.pct_steps={k}"));
            }
        }
        v
    }
}

/// How to explore.
pub struct Options {
    /// The seeds.
    pub seeds: Seeds,
    /// Only this shard of them.
    pub shard: Option<Shard>,
    /// The strategy.
    pub strategy: Strategy,
    /// Worker threads (at least 1).
    pub jobs: usize,
    /// Stop at the first failure (runs already started finish).
    pub fail_fast: bool,
    /// Write the trace of each failing run here, as `seed-N.jsonl`, and
    /// the shrunk schedule of each signature, as `seed-N.schedule`.
    pub out: Option<PathBuf>,
    /// The most runs shrinking one failure may make (0: no shrinking).
    pub shrink_runs: u64,
    /// Plugin directories searched before the manifest's.
    pub plugin_dirs: Vec<PathBuf>,
    /// Told after every run: runs done, failures so far.
    pub progress: Option<Box<dyn Fn(u64, u64) + Sync>>,
}

/// The default [`Options::shrink_runs`].
pub const DEFAULT_SHRINK_RUNS: u64 = 500;

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

/// A failing run's schedule, shrunk: the fewest decisions away from the
/// default order found that still fail with the same signature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shrunk {
    /// The failing run's seed.
    pub seed: u64,
    /// The run's own schedule (its decisions that differ from the default).
    pub original: Schedule,
    /// The shrunk schedule; replaying it fails with the same signature.
    pub schedule: Schedule,
    /// Runs shrinking made.
    pub runs: u64,
    /// Where it was written ([`Options::out`]).
    pub file: Option<PathBuf>,
}

/// The result of an exploration.
#[derive(Clone, Debug)]
pub struct Report {
    /// The strategy, with pct's steps measured.
    pub strategy: Strategy,
    /// Runs made.
    pub runs: u64,
    /// The failing runs, by seed.
    pub failures: Vec<Failure>,
    /// Wall-clock time taken.
    pub elapsed: std::time::Duration,
    /// The first failing run of each signature, shrunk (unless shrinking
    /// is off, or the run did not fail again when recorded).
    pub shrunk: BTreeMap<Signature, Shrunk>,
    /// Pct: the tasks and steps measured before the runs (the steps as
    /// given, with `steps` set), and the depth.
    pub pct: Option<PctBound>,
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

/// The manifest of one run: `base` in `strategy`'s order with `seed`.
pub fn run_manifest(base: &Manifest, strategy: Strategy, seed: u64) -> Manifest {
    let mut m = base.clone();
    m.machine.order = strategy.order();
    m.machine.seed = Some(seed);
    if let Strategy::Pct { depth, steps } = strategy {
        m.machine.pct_depth = depth;
        m.machine.pct_steps = steps.unwrap_or(m.machine.pct_steps);
    }
    m
}

/// The seeds [`calibrate`] measures pct's steps with.
pub const CALIBRATION_SEEDS: std::ops::Range<u64> = 0..4;

/// Pct's steps for `manifest`: the most choices among at least two tasks
/// a run makes under pct without change points, over the
/// [`CALIBRATION_SEEDS`] (at least 1). Measured once per exploration, so
/// every run (and every shard) draws its change points among the same
/// steps, and the replay command states them.
pub fn calibrate(manifest: &Manifest, options: &dyn Fn() -> MachineOptions) -> Result<u64> {
    Ok(measure(manifest, options)?.steps)
}

/// What pct's calibration runs showed.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct PctBound {
    /// The most tasks a run had (n, at least 1).
    pub tasks: u64,
    /// The most steps a run made (k, at least 1).
    pub steps: u64,
    /// The depth (d).
    pub depth: u32,
    /// The most steps a calibration run made (0: no run had a choice
    /// between two tasks).
    pub measured_steps: u64,
}

impl PctBound {
    /// PCT's guarantee: the least probability that one run finds a bug of
    /// depth d among n tasks and k steps, 1/(n·k^(d-1)).
    pub fn per_run(&self) -> f64 {
        1.0 / (self.tasks as f64 * (self.steps as f64).powi(self.depth as i32 - 1))
    }

    /// The most probability that `runs` runs all miss such a bug.
    pub fn miss(&self, runs: u64) -> f64 {
        (1.0 - self.per_run()).powf(runs as f64)
    }
}

/// [`calibrate`]'s runs: the most steps and tasks a run had.
fn measure(manifest: &Manifest, options: &dyn Fn() -> MachineOptions) -> Result<PctBound> {
    let mut bound = PctBound { tasks: 1, steps: 1, depth: 1, measured_steps: 0 };
    for seed in CALIBRATION_SEEDS {
        let run = run_with(manifest, Strategy::Pct { depth: 1, steps: Some(1) }, seed, options(), None)?;
        bound.measured_steps = bound.measured_steps.max(run.pct_steps);
        bound.tasks = bound.tasks.max(run.pct_tasks);
    }
    bound.steps = bound.measured_steps.max(1);
    Ok(bound)
}

/// Run `manifest` under every seed of `options`. An error that is no
/// failure of a schedule (a plugin that does not load, a manifest naming a
/// missing VM) ends the exploration with that error.
pub fn explore(manifest: &Manifest, options: &Options) -> Result<Report> {
    let started = std::time::Instant::now();
    let machine_options = || MachineOptions { plugin_dirs: options.plugin_dirs.clone(), ..MachineOptions::default() };
    let mut pct = None;
    let strategy = match options.strategy {
        Strategy::Pct { depth, steps } => {
            let measured = PctBound { depth, ..measure(manifest, &machine_options)? };
            let steps = steps.unwrap_or(measured.steps);
            pct = Some(PctBound { steps, ..measured });
            Strategy::Pct { depth, steps: Some(steps) }
        }
        s => s,
    };
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
            match run_seed_with(manifest, strategy, seed, machine_options(), None) {
                Ok(None) => {}
                Ok(Some(mut failure)) => {
                    if let Some(dir) = &options.out {
                        match write_trace(manifest, strategy, seed, &options.plugin_dirs, dir) {
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
    let mut report = Report {
        strategy,
        runs: runs.into_inner(),
        failures,
        elapsed: started.elapsed(),
        shrunk: BTreeMap::new(),
        pct,
    };
    if options.shrink_runs > 0 {
        // The first failing run of each signature, after the exploration:
        // the same runs are shrunk whatever the number of jobs.
        let firsts: Vec<Failure> = report.groups().into_values().map(|f| f[0].clone()).collect();
        for failure in firsts {
            if let Some(mut shrunk) = shrink(manifest, strategy, &failure, options.shrink_runs, &machine_options)? {
                if let Some(dir) = &options.out {
                    shrunk.file = Some(write_schedule(&shrunk.schedule, dir)?);
                }
                report.shrunk.insert(failure.signature.clone(), shrunk);
            }
        }
    }
    report.elapsed = started.elapsed();
    Ok(report)
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
    run_seed_with(manifest, Strategy::Random, seed, options, trace)
}

/// Run `manifest` once in `strategy`'s order with `seed`, with the
/// machine's options given (plugins linked into the process, as the test
/// kit's scenarios have; their trace settings are replaced by the
/// oracle's): the failure, if the run fails.
pub fn run_seed_with(
    manifest: &Manifest,
    strategy: Strategy,
    seed: u64,
    options: MachineOptions,
    trace: Option<Box<dyn Write>>,
) -> Result<Option<Failure>> {
    Ok(run_with(manifest, strategy, seed, options, trace)?.failure)
}

/// What one run showed.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// Its failure, if it failed.
    pub failure: Option<Failure>,
    /// Its decisions ([`MachineOptions::record_schedule`]), or the
    /// schedule it replayed ([`MachineOptions::schedule`]) as applied.
    pub schedule: Schedule,
    /// The pct order's steps it made.
    pub pct_steps: u64,
    /// The pct order's tasks it saw.
    pub pct_tasks: u64,
}

/// [`run_seed_with`], and what else the run showed. With
/// [`MachineOptions::schedule`], the run replays that schedule.
pub fn run_with(
    manifest: &Manifest,
    strategy: Strategy,
    seed: u64,
    options: MachineOptions,
    trace: Option<Box<dyn Write>>,
) -> Result<Outcome> {
    let mut m = run_manifest(manifest, strategy, seed);
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
    let schedule = machine.schedule();
    let pct_steps = machine.pct_steps();
    let pct_tasks = machine.pct_tasks();
    drop(machine);
    let outcome = |failure| Outcome { failure, schedule: schedule.clone(), pct_steps, pct_tasks };
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
            return Ok(outcome(Some(Failure { seed, signature, message, trace: None })));
        }
    }
    written?;
    if let Some((signature, message)) = state.first {
        return Ok(outcome(Some(Failure { seed, signature, message, trace: None })));
    }
    // A run `[machine] until` cut short is held to what any part of a
    // good run satisfies.
    if let Some(b) = state.checker.broken_after(complete).into_iter().next() {
        let signature = Signature { kind: "expect".into(), device: None, code: b.expectation.clone() };
        return Ok(outcome(Some(Failure { seed, signature, message: b.to_string(), trace: None })));
    }
    Ok(outcome(None))
}

/// Shrink `failure`'s schedule, as proptest shrinks an input: record the
/// run's decisions, then replay changed schedules (no injected
/// interrupts; nothing; a shorter prefix, after which the default order
/// runs; one decision fewer), keeping a change only while the run still
/// fails with the same signature, until no change helps or `budget` runs
/// are made. `None` if the recorded run does not fail the same way.
pub fn shrink(
    manifest: &Manifest,
    strategy: Strategy,
    failure: &Failure,
    budget: u64,
    options: &dyn Fn() -> MachineOptions,
) -> Result<Option<Shrunk>> {
    let seed = failure.seed;
    let recorded = run_with(manifest, strategy, seed, MachineOptions { record_schedule: true, ..options() }, None)?;
    if recorded.failure.as_ref().map(|f| &f.signature) != Some(&failure.signature) {
        return Ok(None);
    }
    let original = recorded.schedule;
    let mut runs = 1;
    // The replay of `candidate`, as applied, if it fails the same way.
    let attempt = |candidate: &Schedule, runs: &mut u64| -> Result<Option<Schedule>> {
        *runs += 1;
        let options = MachineOptions { schedule: Some(candidate.clone()), record_schedule: true, ..options() };
        let out = run_with(manifest, strategy, seed, options, None)?;
        Ok((out.failure.map(|f| f.signature).as_ref() == Some(&failure.signature)).then_some(out.schedule))
    };
    let with = |s: &Schedule, decisions: Vec<Decision>| Schedule { decisions, ..s.clone() };
    let mut best = original.clone();
    // The replay of the whole schedule fails the same way (a check of
    // determinism); it also is the schedule as replay applies it.
    match attempt(&best, &mut runs)? {
        Some(applied) => best = applied,
        None => return Ok(None),
    }
    let mut changed = true;
    while changed && runs < budget {
        changed = false;
        // No injected interrupts at all.
        if best.count(DecisionKind::Interrupt) > 0 {
            let fewer = best.decisions.iter().filter(|d| d.kind != DecisionKind::Interrupt).copied().collect();
            if let Some(s) = attempt(&with(&best, fewer), &mut runs)? {
                best = s;
                changed = true;
            }
        }
        // The shortest prefix that still fails (binary search).
        let (mut lo, mut hi) = (0, best.decisions.len());
        while lo < hi && runs < budget {
            let mid = (lo + hi) / 2;
            match attempt(&with(&best, best.decisions[..mid].to_vec()), &mut runs)? {
                Some(s) => {
                    changed |= s.decisions.len() < best.decisions.len();
                    hi = s.decisions.len().min(mid);
                    best = s;
                }
                None => lo = mid + 1,
            }
        }
        // One decision fewer, from the last.
        let mut i = best.decisions.len();
        while i > 0 && runs < budget {
            i -= 1;
            let mut fewer = best.decisions.clone();
            fewer.remove(i);
            if let Some(s) = attempt(&with(&best, fewer), &mut runs)? {
                best = s;
                changed = true;
                i = i.min(best.decisions.len());
            }
        }
    }
    Ok(Some(Shrunk { seed, original, schedule: best, runs, file: None }))
}

/// Whether `e` ends a run because of what happened in it (a schedule can
/// cause it), rather than because the machine could not be set up.
fn is_schedule_failure(e: &Error) -> bool {
    matches!(e, Error::Fatal { .. } | Error::SysVmInitFailed { .. } | Error::AbortWin386Load { .. })
}

fn io_error(path: &std::path::Path, what: &str, e: std::io::Error) -> Error {
    Error::Io { path: path.to_path_buf(), message: format!("cannot write {what}: {e}") }
}

fn write_trace(
    manifest: &Manifest,
    strategy: Strategy,
    seed: u64,
    plugin_dirs: &[PathBuf],
    dir: &std::path::Path,
) -> Result<PathBuf> {
    let what = "the trace of a failing run";
    std::fs::create_dir_all(dir).map_err(|e| io_error(dir, what, e))?;
    let path = dir.join(format!("seed-{seed}.jsonl"));
    let file = std::fs::File::create(&path).map_err(|e| io_error(&path, what, e))?;
    let options = MachineOptions { plugin_dirs: plugin_dirs.to_vec(), ..MachineOptions::default() };
    run_seed_with(manifest, strategy, seed, options, Some(Box::new(std::io::BufWriter::new(file))))?;
    Ok(path)
}

fn write_schedule(schedule: &Schedule, dir: &std::path::Path) -> Result<PathBuf> {
    let what = "a shrunk schedule";
    std::fs::create_dir_all(dir).map_err(|e| io_error(dir, what, e))?;
    let path = dir.join(format!("seed-{}.schedule", schedule.seed));
    std::fs::write(&path, schedule.to_text()).map_err(|e| io_error(&path, what, e))?;
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
    fn the_pct_bound_is_one_over_n_k_to_the_d_minus_one() {
        let b = PctBound { tasks: 2, steps: 12, depth: 2, measured_steps: 12 };
        assert_eq!(1.0 / b.per_run(), 24.0);
        assert!((b.miss(200) - (23.0f64 / 24.0).powi(200)).abs() < 1e-12);
        let deeper = PctBound { depth: 3, ..b };
        assert_eq!(1.0 / deeper.per_run(), 288.0);
        assert_eq!(PctBound { depth: 1, ..b }.per_run(), 0.5);
    }

    #[test]
    fn strategies_name_their_replay() {
        assert_eq!(Strategy::Random.run_flags(7), "--order random --seed 7");
        assert_eq!(Strategy::Random.settings(7), ["machine.order=random", "machine.seed=7"]);
        let pct = Strategy::Pct { depth: 2, steps: Some(12) };
        assert_eq!(pct.run_flags(u64::MAX), format!("--order pct --seed {} --pct-depth 2 --pct-steps 12", u64::MAX));
        assert_eq!(
            pct.settings(3),
            ["machine.order=pct", "machine.seed=3", "machine.pct_depth=2", "machine.pct_steps=12"]
        );
        let m = run_manifest(&Manifest::default(), pct, 5);
        assert_eq!(
            (m.machine.order, m.machine.seed, m.machine.pct_depth, m.machine.pct_steps),
            (Order::Pct, Some(5), 2, 12)
        );
    }

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
