//! The schedule source: what decides, at each choice point of an explored
//! run, which ready event runs, which appy-time event runs, and whether an
//! interrupt is injected at a service-call boundary. Three sources:
//!
//! * **random**: uniform choices and injections with probability
//!   `inject_rate`, from two SplitMix64 streams of the seed (one for the
//!   choices, one for the injections, so an extra boundary never shifts
//!   a later choice);
//! * **pct**: probabilistic concurrency testing (Burckhardt et al., as
//!   shuttle implements it): every *task* (the source of an event: its
//!   owning device, its callback and its target VM) gets a random
//!   priority when it first has an event ready; each choice runs the
//!   oldest ready event of the highest-priority task; at `depth - 1`
//!   change points, drawn among the first `steps` steps, the task about
//!   to run is demoted below every other. Injections as in random mode;
//! * **replay**: a [`Schedule`] (a decision log), applied step by step;
//!   where it says nothing, or names an event that is not ready, the
//!   default: the newest ready event (LIFO), no injection.
//!
//! A *step* is a choice among at least two ready candidates (pct: among
//! at least two tasks), or a boundary where an interrupt could be
//! injected; steps are counted per kind. With recording on, every step
//! whose outcome differs from the default is written to the log, so the
//! log of a run replays it exactly.

use std::collections::HashMap;
use std::fmt::Write as _;

use crate::manifest::Order;
use crate::vmm::ids::{InstanceId, VmId};
use crate::vmm::rng::Rng;

/// The kind of a decision.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DecisionKind {
    /// Which ready event runs (value: the event's sequence number).
    Event,
    /// Which appy-time event runs (value: its sequence number).
    Appy,
    /// An interrupt injected at a service-call boundary (value: the
    /// source's index in registration order).
    Interrupt,
}

impl DecisionKind {
    const ALL: [DecisionKind; 3] = [DecisionKind::Event, DecisionKind::Appy, DecisionKind::Interrupt];

    /// The word of the schedule file.
    pub fn word(self) -> &'static str {
        match self {
            DecisionKind::Event => "event",
            DecisionKind::Appy => "appy",
            DecisionKind::Interrupt => "interrupt",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// One decision that departs from the default.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// What was decided.
    pub kind: DecisionKind,
    /// The step of that kind it was decided at (0-based).
    pub step: u64,
    /// The event's sequence number, or the interrupt source's index.
    pub value: u64,
}

/// A schedule: the decisions of one run that differ from the default
/// order (newest ready event first, no injected interrupt), in the order
/// they were made. Its text form is the `.schedule` file `vmm run
/// --schedule` replays (documented in the README).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Schedule {
    /// The strategy that found it: `random` or `pct`.
    pub order: Order,
    /// The run's seed.
    pub seed: u64,
    /// The decisions, in the order they were made.
    pub decisions: Vec<Decision>,
}

/// The first line of a schedule file.
const MAGIC: &str = "vmm-schedule 1";

impl Schedule {
    /// The number of decisions of `kind`.
    pub fn count(&self, kind: DecisionKind) -> usize {
        self.decisions.iter().filter(|d| d.kind == kind).count()
    }

    /// Choices (event and appy-time) and injected interrupts.
    pub fn sizes(&self) -> (usize, usize) {
        let injections = self.count(DecisionKind::Interrupt);
        (self.decisions.len() - injections, injections)
    }

    /// The text form.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let order = match self.order {
            Order::Pct => "pct",
            _ => "random",
        };
        let _ = writeln!(s, "{MAGIC}");
        let _ = writeln!(s, "# Replay: vmm run MANIFEST... --schedule THIS_FILE");
        let _ = writeln!(s, "# At every step not listed: the newest ready event, no injected interrupt.");
        let _ = writeln!(s, "order {order}");
        let _ = writeln!(s, "seed {}", self.seed);
        for d in &self.decisions {
            let _ = writeln!(s, "{} {} {}", d.kind.word(), d.step, d.value);
        }
        s
    }

    /// Parse the text form; errors name the line.
    pub fn parse(text: &str) -> Result<Schedule, String> {
        let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l.split('#').next().unwrap_or("").trim()));
        let mut lines = lines.by_ref().filter(|(_, l)| !l.is_empty());
        match lines.next() {
            Some((_, l)) if l == MAGIC => {}
            Some((n, l)) => return Err(format!("line {n}: expected `{MAGIC}` first, found `{l}`")),
            None => return Err(format!("the file is empty: a schedule starts with `{MAGIC}`")),
        }
        let mut order = None;
        let mut seed = None;
        let mut decisions = Vec::new();
        let mut last: [Option<u64>; 3] = [None; 3];
        for (n, line) in lines {
            let words: Vec<&str> = line.split_whitespace().collect();
            let number = |w: &str, what: &str| {
                w.parse::<u64>().map_err(|_| format!("line {n}: {what} `{w}` is not a number from 0 to 2^64 - 1"))
            };
            match words.as_slice() {
                ["order", o] => {
                    order = Some(match *o {
                        "random" => Order::Random,
                        "pct" => Order::Pct,
                        _ => return Err(format!("line {n}: unknown order `{o}`: expected random or pct")),
                    })
                }
                ["seed", s] => seed = Some(number(s, "the seed")?),
                [kind, step, value] => {
                    let kind = DecisionKind::ALL.into_iter().find(|k| k.word() == *kind).ok_or_else(|| {
                        format!("line {n}: unknown decision `{kind}`: expected event, appy or interrupt")
                    })?;
                    let step = number(step, "the step")?;
                    let value = number(value, "the value")?;
                    if last[kind.index()].is_some_and(|l| step <= l) {
                        return Err(format!(
                            "line {n}: {} step {step} is not after the previous {} step",
                            kind.word(),
                            kind.word()
                        ));
                    }
                    last[kind.index()] = Some(step);
                    decisions.push(Decision { kind, step, value });
                }
                _ => {
                    return Err(format!(
                        "line {n}: `{line}` is not `order ORDER`, `seed N` or `KIND STEP VALUE` \
                         (KIND: event, appy, interrupt)"
                    ));
                }
            }
        }
        let order = order.ok_or("the schedule has no `order random` or `order pct` line")?;
        let seed = seed.ok_or("the schedule has no `seed N` line")?;
        Ok(Schedule { order, seed, decisions })
    }
}

/// What a schedulable candidate belongs to, for pct's priorities: the
/// owning device instance, the callback's identity (its code) and the
/// target VM (0: global).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Task {
    pub(crate) owner: InstanceId,
    pub(crate) code: usize,
    pub(crate) target: VmId,
}

/// A ready candidate at a choice point.
#[derive(Copy, Clone, Debug)]
pub(crate) struct Candidate {
    pub(crate) seq: u64,
    pub(crate) task: Task,
}

/// The pct strategy's state.
struct Pct {
    /// Priorities of the tasks seen so far (higher runs first).
    priority: HashMap<Task, u64>,
    /// The pct steps (choices among at least two tasks) at which the
    /// task about to run is demoted, ascending.
    change_points: Vec<u64>,
    /// The depth: change point `i` (0-based) demotes to priority `i + 1`,
    /// below every initial priority (at least `depth`).
    depth: u32,
    /// Pct steps so far.
    steps: u64,
}

enum Mode {
    /// LIFO or FIFO: never asked.
    Fixed,
    Random,
    Pct(Box<Pct>),
    Replay(HashMap<(DecisionKind, u64), u64>),
}

/// The settings of a schedule source.
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    pub(crate) order: Order,
    pub(crate) seed: u64,
    pub(crate) inject_rate: f64,
    pub(crate) pct_depth: u32,
    pub(crate) pct_steps: u64,
}

/// The schedule source of a machine (`Core.schedule`).
pub(crate) struct Source {
    mode: Mode,
    order: Order,
    seed: u64,
    choices: Rng,
    injections: Rng,
    inject_rate: f64,
    /// Steps so far, per kind.
    steps: [u64; 3],
    /// The decisions made, when recording.
    record: Option<Vec<Decision>>,
}

/// The seed of the injection stream: a different SplitMix64 stream of the
/// same seed.
const INJECTION_STREAM: u64 = 0xD1B5_4A32_D192_ED03;

/// The seed of pct's change-point stream.
const CHANGE_POINT_STREAM: u64 = 0x8CB9_2BA7_2F3D_8DD7;

impl Source {
    /// The source of `settings`; with `replay`, that schedule's decisions
    /// instead of the strategy's. With `record`, decisions are logged.
    pub(crate) fn new(settings: &Settings, replay: Option<&Schedule>, record: bool) -> Source {
        let choices = Rng::new(settings.seed);
        let mode = match (replay, settings.order) {
            (Some(s), _) => Mode::Replay(s.decisions.iter().map(|d| ((d.kind, d.step), d.value)).collect()),
            (None, Order::Random) => Mode::Random,
            (None, Order::Pct) => {
                let depth = settings.pct_depth.max(1);
                let k = settings.pct_steps.max(1);
                // d - 1 distinct change points among steps 0..k (fewer when
                // k is smaller), from a stream of their own: the tasks'
                // priorities do not depend on the depth.
                let mut points = Rng::new(settings.seed ^ CHANGE_POINT_STREAM);
                let want = (depth as u64 - 1).min(k) as usize;
                let mut change_points: Vec<u64> = Vec::with_capacity(want);
                while change_points.len() < want {
                    let p = points.below(k as usize) as u64;
                    if !change_points.contains(&p) {
                        change_points.push(p);
                    }
                }
                change_points.sort_unstable();
                Mode::Pct(Box::new(Pct { priority: HashMap::new(), change_points, depth, steps: 0 }))
            }
            (None, _) => Mode::Fixed,
        };
        Source {
            mode,
            order: replay.map_or(settings.order, |s| s.order),
            seed: settings.seed,
            choices,
            injections: Rng::new(settings.seed ^ INJECTION_STREAM),
            inject_rate: settings.inject_rate,
            steps: [0; 3],
            record: record.then(Vec::new),
        }
    }

    /// The random mode without recording: the caller may draw from the
    /// choice stream directly (the events' fast pick).
    #[inline]
    pub(crate) fn plain_random(&mut self) -> Option<&mut Rng> {
        match (&self.mode, &self.record) {
            (Mode::Random, None) => Some(&mut self.choices),
            _ => None,
        }
    }

    /// The random mode (recording or not): its choice stream.
    pub(crate) fn random(&mut self) -> Option<&mut Rng> {
        match self.mode {
            Mode::Random => Some(&mut self.choices),
            _ => None,
        }
    }

    /// Log a choice the random mode made among `candidates` (the caller
    /// drew it with [`Source::random`]).
    pub(crate) fn note(&mut self, kind: DecisionKind, candidates: &[Candidate], chosen: u64) {
        if candidates.len() < 2 {
            return;
        }
        let step = self.next_step(kind);
        self.log(kind, step, chosen, newest(candidates));
    }

    /// Choose among `candidates` (not empty, in a fixed order: the caller
    /// lists them the same way in every run): the sequence number of the
    /// one to run.
    pub(crate) fn choose(&mut self, kind: DecisionKind, candidates: &[Candidate]) -> u64 {
        let default = newest(candidates);
        match &mut self.mode {
            Mode::Fixed => default,
            Mode::Random => {
                let chosen = candidates[self.choices.below(candidates.len())].seq;
                self.note(kind, candidates, chosen);
                chosen
            }
            Mode::Replay(decisions) => {
                if candidates.len() < 2 {
                    return default;
                }
                let wanted = decisions.get(&(kind, self.steps[kind.index()])).copied();
                let chosen = wanted.filter(|w| candidates.iter().any(|c| c.seq == *w)).unwrap_or(default);
                let step = self.next_step(kind);
                self.log(kind, step, chosen, default);
                chosen
            }
            Mode::Pct(pct) => {
                let chosen = pct.choose(candidates, &mut self.choices);
                self.note(kind, candidates, chosen);
                chosen
            }
        }
    }

    /// At a service-call boundary where one of `sources` interrupt
    /// sources could be injected: the index of the one to inject.
    pub(crate) fn inject(&mut self, sources: usize) -> Option<usize> {
        let step = self.next_step(DecisionKind::Interrupt);
        let pick = match &self.mode {
            Mode::Fixed => None,
            Mode::Random | Mode::Pct(_) => {
                self.injections.chance(self.inject_rate).then(|| self.injections.below(sources))
            }
            Mode::Replay(decisions) => decisions
                .get(&(DecisionKind::Interrupt, step))
                .and_then(|&v| usize::try_from(v).ok())
                .filter(|&v| v < sources),
        };
        if let Some(v) = pick
            && let Some(record) = &mut self.record
        {
            record.push(Decision { kind: DecisionKind::Interrupt, step, value: v as u64 });
        }
        pick
    }

    fn next_step(&mut self, kind: DecisionKind) -> u64 {
        let step = self.steps[kind.index()];
        self.steps[kind.index()] += 1;
        step
    }

    fn log(&mut self, kind: DecisionKind, step: u64, chosen: u64, default: u64) {
        if chosen != default
            && let Some(record) = &mut self.record
        {
            record.push(Decision { kind, step, value: chosen });
        }
    }

    /// The schedule recorded so far (empty without recording).
    pub(crate) fn recorded(&self) -> Schedule {
        Schedule { order: self.order, seed: self.seed, decisions: self.record.clone().unwrap_or_default() }
    }

    /// Pct tasks seen so far; 0 in the other modes.
    pub(crate) fn pct_tasks(&self) -> u64 {
        match &self.mode {
            Mode::Pct(p) => p.priority.len() as u64,
            _ => 0,
        }
    }

    /// Pct steps so far (choices among at least two tasks); 0 in the other
    /// modes.
    pub(crate) fn pct_steps(&self) -> u64 {
        match &self.mode {
            Mode::Pct(p) => p.steps,
            _ => 0,
        }
    }
}

/// The default choice: the newest candidate (LIFO, the machine's default
/// order and KB Q75009's "usually").
fn newest(candidates: &[Candidate]) -> u64 {
    candidates.iter().map(|c| c.seq).max().unwrap_or(0)
}

impl Pct {
    fn priority_of(&mut self, task: Task, rng: &mut Rng) -> u64 {
        let floor = self.depth as u64;
        // A newcomer lands at a uniformly random rank among the tasks seen
        // so far: a random priority above every demoted one.
        *self.priority.entry(task).or_insert_with(|| floor + rng.next_u64() % (u64::MAX - floor))
    }

    /// The highest-priority task among `candidates`, and whether there
    /// are at least two tasks.
    fn top(&mut self, candidates: &[Candidate], rng: &mut Rng) -> (Task, bool) {
        let mut best = (candidates[0].task, self.priority_of(candidates[0].task, rng));
        let mut several = false;
        for c in &candidates[1..] {
            if c.task != best.0 {
                several = true;
                let p = self.priority_of(c.task, rng);
                if p > best.1 {
                    best = (c.task, p);
                }
            }
        }
        (best.0, several)
    }

    fn choose(&mut self, candidates: &[Candidate], rng: &mut Rng) -> u64 {
        let (mut task, several) = self.top(candidates, rng);
        if several {
            let step = self.steps;
            self.steps += 1;
            if let Ok(i) = self.change_points.binary_search(&step) {
                // A change point: the task about to run drops below every
                // other, and the choice is made again.
                self.priority.insert(task, i as u64 + 1);
                task = self.top(candidates, rng).0;
            }
        }
        // Within a task, its events run oldest first (a thread's program
        // order).
        candidates.iter().filter(|c| c.task == task).map(|c| c.seq).min().unwrap_or(candidates[0].seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(code: usize) -> Task {
        Task { owner: InstanceId::from_raw(1), code, target: VmId::NONE }
    }

    #[test]
    fn schedule_text_round_trips_and_errors_name_the_line() {
        let s = Schedule {
            order: Order::Pct,
            seed: 42,
            decisions: vec![
                Decision { kind: DecisionKind::Event, step: 0, value: 7 },
                Decision { kind: DecisionKind::Interrupt, step: 3, value: 1 },
                Decision { kind: DecisionKind::Event, step: 2, value: 9 },
                Decision { kind: DecisionKind::Appy, step: 0, value: 2 },
            ],
        };
        assert_eq!(Schedule::parse(&s.to_text()), Ok(s.clone()));
        assert_eq!(s.sizes(), (3, 1));
        let bad = |text: &str| Schedule::parse(text).unwrap_err();
        assert!(bad("").contains("empty"));
        assert!(bad("order random\n").starts_with("line 1:"));
        assert!(bad("vmm-schedule 1\norder random\nseed 1\nevent 2 x\n").starts_with("line 4: the value `x`"));
        assert!(bad("vmm-schedule 1\norder random\nseed 1\nevent 2 1\nevent 2 3\n").starts_with("line 5:"));
        assert!(bad("vmm-schedule 1\norder sideways\n").contains("unknown order `sideways`"));
        assert!(bad("vmm-schedule 1\norder random\n").contains("no `seed N`"));
        assert!(bad("vmm-schedule 1\nseed 1\nswap 1 2\n").contains("unknown decision `swap`"));
    }

    fn settings(order: Order, seed: u64) -> Settings {
        Settings { order, seed, inject_rate: 0.5, pct_depth: 3, pct_steps: 4 }
    }

    #[test]
    fn a_recorded_run_replays_exactly() {
        // A toy program: at each step, three candidates of three tasks;
        // an interrupt boundary between steps.
        let cands = |i: u64| -> Vec<Candidate> {
            (0..3).map(|t| Candidate { seq: i * 10 + t, task: task(t as usize) }).collect()
        };
        for order in [Order::Random, Order::Pct] {
            for seed in 0..50 {
                let run = |src: &mut Source| -> Vec<u64> {
                    let mut out = Vec::new();
                    for i in 0..6 {
                        out.push(src.choose(DecisionKind::Event, &cands(i)));
                        out.push(src.inject(2).map_or(99, |v| v as u64));
                    }
                    out
                };
                let mut recording = Source::new(&settings(order, seed), None, true);
                let original = run(&mut recording);
                let schedule = recording.recorded();
                let mut plain = Source::new(&settings(order, seed), None, false);
                assert_eq!(run(&mut plain), original, "recording changes no choice");
                let mut replay = Source::new(&settings(Order::Lifo, 0), Some(&schedule), true);
                assert_eq!(run(&mut replay), original, "{order:?} seed {seed}");
                assert_eq!(replay.recorded().decisions, schedule.decisions);
                // The empty schedule is the default order.
                let empty = Schedule { decisions: Vec::new(), ..schedule };
                let mut default = Source::new(&settings(Order::Lifo, 0), Some(&empty), false);
                let got = run(&mut default);
                assert!(got.chunks(2).enumerate().all(|(i, c)| c == [i as u64 * 10 + 2, 99]), "{got:?}");
            }
        }
    }

    #[test]
    fn pct_runs_the_highest_priority_task_and_demotes_at_change_points() {
        // Two tasks, each with a ready event at every step: without change
        // points one task always wins.
        let cands = [Candidate { seq: 1, task: task(1) }, Candidate { seq: 2, task: task(2) }];
        let one = Settings { pct_depth: 1, ..settings(Order::Pct, 9) };
        let mut src = Source::new(&one, None, false);
        let first = src.choose(DecisionKind::Event, &cands);
        assert!((0..20).all(|_| src.choose(DecisionKind::Event, &cands) == first));
        assert_eq!(src.pct_steps(), 21);
        // Depth 2 with one step: the change point is step 0, so the task
        // that would run first is demoted there and the other wins.
        let mut winners = std::collections::BTreeSet::new();
        for seed in 0..40 {
            let two = Settings { pct_depth: 2, pct_steps: 1, ..settings(Order::Pct, seed) };
            let mut no_change = Source::new(&Settings { pct_depth: 1, ..two.clone() }, None, false);
            let mut src = Source::new(&two, None, false);
            let undisturbed = no_change.choose(DecisionKind::Event, &cands);
            let demoted = src.choose(DecisionKind::Event, &cands);
            assert_ne!(undisturbed, demoted, "seed {seed}");
            winners.insert(demoted);
        }
        assert_eq!(winners.len(), 2, "either task may win");
        // Within a task, oldest first.
        let same = [Candidate { seq: 5, task: task(1) }, Candidate { seq: 3, task: task(1) }];
        assert_eq!(Source::new(&one, None, false).choose(DecisionKind::Event, &same), 3);
    }
}
