//! Pending events: global events, VM events, priority events and
//! `Call_When_VM_Ints_Enabled` requests, and how the next one to run is
//! chosen.
//!
//! Events wait in buckets by *wait class* (the set of `PEF_WAIT_*`
//! conditions they need), so choosing the next ready event costs a scan of
//! at most 64 bucket ends, however many events are pending. Cancelled and
//! timed-out events leave a dead entry behind that is skipped when it
//! reaches a bucket's end. The machine's pending events belong to its
//! [`Scheduler`](crate::vmm::scheduler::Scheduler).

use std::cell::RefCell;
use std::collections::VecDeque;

use vmm_plugin_api::ddk::{
    PEF_PROCESS_LAST, PEF_WAIT_FOR_STI, PEF_WAIT_IN_PM, PEF_WAIT_NOT_CRIT, PEF_WAIT_NOT_HW_INT,
    PEF_WAIT_NOT_NESTED_EXEC,
};

use crate::manifest::Order;
use crate::time::Instant;
use crate::vmm::callback::Callback;
use crate::vmm::ids::VmId;
use crate::vmm::rng::Rng;
use crate::vmm::schedule::{Candidate, DecisionKind, Source, Task};
use crate::vmm::slab::{Handle, Slab, TAG_EVENT};

/// A pending event's handle (`Schedule_*_Event`, `Call_*_Event`).
pub(crate) type EventHandle = Handle<EventRec>;

/// What kind of event.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum EventKind {
    /// `Schedule_Global_Event` / `Call_Global_Event`.
    Global,
    /// `Schedule_VM_Event` / `Call_VM_Event`.
    Vm,
    /// `Call_Priority_VM_Event`.
    Priority,
    /// `Call_When_VM_Ints_Enabled`.
    IntsEnabled,
    /// `Call_Restricted_Event` (4.0; and `Call_When_Not_Critical`, which
    /// 4.0 forwards to it): a VM event (`target` the VM) or a global one
    /// (`target` 0) that runs in the first VM meeting its restrictions.
    Restricted,
}

impl EventKind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            EventKind::Global => "global",
            EventKind::Vm => "vm",
            EventKind::Priority => "priority",
            EventKind::IntsEnabled => "ints_enabled",
            EventKind::Restricted => "restricted",
        }
    }
}

/// A pending event.
pub(crate) struct EventRec {
    pub(crate) kind: EventKind,
    /// The VM it runs in (0 for global events).
    pub(crate) target: VmId,
    pub(crate) flags: u32,
    pub(crate) boost: i32,
    pub(crate) seq: u64,
    pub(crate) scheduled_at: Instant,
    pub(crate) cb: Callback,
}

/// The conditions of a VM at a dispatch point.
#[derive(Copy, Clone, Debug, Default)]
pub(crate) struct Conditions {
    /// The VM has interrupts enabled.
    pub(crate) sti: bool,
    /// The critical section is free and the VM's priority is below
    /// `Critical_Section_Boost`.
    pub(crate) not_crit: bool,
    /// Not simulating a hardware interrupt, priority below
    /// `Time_Critical_Boost`.
    pub(crate) not_hw_int: bool,
    /// The VM is not in nested execution.
    pub(crate) not_nested: bool,
    /// The VM runs protected-mode code.
    pub(crate) in_pm: bool,
}

pub(crate) const CLASS_STI: usize = 1;
const CLASS_NOT_CRIT: usize = 2;
const CLASS_NOT_HW_INT: usize = 4;
const CLASS_NOT_NESTED: usize = 8;
const CLASS_IN_PM: usize = 16;
const CLASS_LAST: usize = 32;
const CLASSES: usize = 64;

/// The wait class of a set of `PEF_*` flags.
pub(crate) fn class_of(flags: u32) -> usize {
    let mut c = 0;
    if flags & PEF_WAIT_FOR_STI != 0 {
        c |= CLASS_STI;
    }
    if flags & PEF_WAIT_NOT_CRIT != 0 {
        c |= CLASS_NOT_CRIT;
    }
    if flags & PEF_WAIT_NOT_HW_INT != 0 {
        c |= CLASS_NOT_HW_INT;
    }
    if flags & PEF_WAIT_NOT_NESTED_EXEC != 0 {
        c |= CLASS_NOT_NESTED;
    }
    if flags & PEF_WAIT_IN_PM != 0 {
        c |= CLASS_IN_PM;
    }
    if flags & PEF_PROCESS_LAST != 0 {
        c |= CLASS_LAST;
    }
    c
}

impl Conditions {
    /// Whether events with `flags` may run now.
    pub(crate) fn allow_flags(&self, flags: u32) -> bool {
        class_of(flags) & self.unsatisfied() == 0
    }

    /// The wait-class bits whose conditions do not hold.
    pub(crate) fn unsatisfied(&self) -> usize {
        let mut u = 0;
        if !self.sti {
            u |= CLASS_STI;
        }
        if !self.not_crit {
            u |= CLASS_NOT_CRIT;
        }
        if !self.not_hw_int {
            u |= CLASS_NOT_HW_INT;
        }
        if !self.not_nested {
            u |= CLASS_NOT_NESTED;
        }
        if !self.in_pm {
            u |= CLASS_IN_PM;
        }
        u
    }
}

/// The `PEF_*` names of the wait conditions in `unsatisfied` (see
/// [`Conditions::unsatisfied`]).
pub(crate) fn condition_names(unsatisfied: usize) -> Vec<&'static str> {
    [
        (CLASS_STI, "PEF_Wait_For_STI"),
        (CLASS_NOT_CRIT, "PEF_Wait_Not_Crit"),
        (CLASS_NOT_HW_INT, "PEF_Wait_Not_HW_Int"),
        (CLASS_NOT_NESTED, "PEF_Wait_Not_Nested_Exec"),
        (CLASS_IN_PM, "PEF_Wait_In_PM"),
    ]
    .into_iter()
    .filter(|(bit, _)| unsatisfied & bit != 0)
    .map(|(_, name)| name)
    .collect()
}

/// The condition bits that choosing among the buckets in `classes` (see
/// [`Events::classes`]) needs to know: the union of their wait classes.
#[inline(always)]
pub(crate) fn conditions_needed(classes: u64) -> usize {
    // Classes 0 to 7 (the STI, not-critical and not-hardware-interrupt
    // conditions, the usual ones) by table, the others bit by bit.
    let mut needed = NEEDED_LOW[(classes & 0xFF) as usize] as usize;
    let mut bits = classes & !0xFF;
    while bits != 0 {
        needed |= bits.trailing_zeros() as usize;
        bits &= bits - 1;
    }
    needed & !CLASS_LAST
}

/// `NEEDED_LOW[b]`: the union of the classes 0 to 7 whose bits are set in
/// `b`.
const NEEDED_LOW: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let mut class = 0;
        while class < 8 {
            if b & (1 << class) != 0 {
                table[b] |= class as u8;
            }
            class += 1;
        }
        b += 1;
    }
    table
};

/// `RUNNABLE[u]`: the bucket bits of the classes that need none of the
/// conditions in `u` (a mask of unsatisfied condition bits).
const RUNNABLE: [u64; 32] = {
    let mut table = [0u64; 32];
    let mut u = 0;
    while u < 32 {
        let mut class = 0;
        while class < CLASSES {
            if class & u == 0 {
                table[u] |= 1 << class;
            }
            class += 1;
        }
        u += 1;
    }
    table
};

/// The bucket bits of the classes that may run when the conditions in
/// `unsatisfied` (see [`Conditions::unsatisfied`]) do not hold.
pub(crate) fn runnable_classes(unsatisfied: usize) -> u64 {
    RUNNABLE[unsatisfied & 31]
}

/// The bucket bits of the first pass: events without `PEF_Process_Last`.
const FIRST_PASS: u64 = (1 << CLASS_LAST) - 1;

/// The pending events of one VM (or the global ones), by wait class.
struct Queue {
    /// The VM whose events these are (0: the global events).
    vm: VmId,
    buckets: Box<[VecDeque<(u64, EventHandle)>; CLASSES]>,
    /// Bit `c` set: bucket `c` may hold entries (live or dead).
    nonempty: u64,
    /// Live events.
    live: usize,
    /// The newest sequence number ever queued in a bucket other than
    /// class 0's: no end of those buckets is newer (LIFO's quick answer
    /// for an event that waits for nothing).
    newest_waiting: u64,
}

impl Queue {
    #[cold]
    #[inline(never)]
    fn new(vm: VmId) -> Self {
        Queue {
            vm,
            buckets: Box::new(std::array::from_fn(|_| VecDeque::new())),
            nonempty: 0,
            live: 0,
            newest_waiting: 0,
        }
    }

    #[inline]
    fn push(&mut self, class: usize, seq: u64, handle: EventHandle) {
        self.buckets[class & (CLASSES - 1)].push_back((seq, handle));
        self.nonempty |= 1 << class;
        self.live += 1;
        if class != 0 {
            self.newest_waiting = seq;
        }
    }
}

/// All pending events.
pub(crate) struct Events {
    pub(crate) slab: Slab<EventRec>,
    /// The queues, indexed by the low 16 bits of the VM handle (a VM's slot
    /// in the VM table, plus one; 0 is the global queue). A queue with live
    /// events always belongs to a live VM: a VM's events are drained when
    /// it is destroyed, before its slot can be reused.
    queues: Vec<Queue>,
    seq: u64,
}

impl Default for Events {
    fn default() -> Self {
        Events { slab: Slab::new(TAG_EVENT), queues: vec![Queue::new(VmId::NONE)], seq: 0 }
    }
}

/// The slab slot of bucket entry `(seq, handle)` if its event is still
/// pending. The sequence number alone decides: every event gets a new one,
/// so a slot that holds the same number holds the same event (a cheaper
/// test than the handle's tag and generation).
#[inline(always)]
fn live_slot(slab: &Slab<EventRec>, seq: u64, handle: EventHandle) -> Option<usize> {
    let slot = slab.slot_of(handle);
    slab.at(slot).is_some_and(|e| e.seq == seq).then_some(slot)
}

/// The queue slot of `vm` (0: the global queue).
#[inline]
fn slot_of(vm: VmId) -> usize {
    (vm.raw() & 0xFFFF) as usize
}

impl Events {
    #[inline]
    fn queue(&self, vm: VmId) -> Option<&Queue> {
        self.queues.get(slot_of(vm)).filter(|q| q.vm == vm)
    }

    #[inline]
    fn queue_mut(&mut self, vm: VmId) -> &mut Queue {
        let slot = slot_of(vm);
        if slot >= self.queues.len() {
            self.queues.resize_with(slot + 1, || Queue::new(VmId::NONE));
        }
        let q = &mut self.queues[slot];
        if q.vm != vm {
            // The slot's previous VM is gone, and its events with it.
            debug_assert_eq!(q.live, 0, "events of a destroyed VM left pending");
            *q = Queue::new(vm);
        }
        q
    }

    /// Add a pending event; its handle (`None` if the table is full).
    #[inline(always)]
    pub(crate) fn insert(
        &mut self,
        kind: EventKind,
        target: VmId,
        flags: u32,
        boost: i32,
        now: Instant,
        cb: Callback,
    ) -> Option<EventHandle> {
        self.seq += 1;
        let seq = self.seq;
        let (handle, place) = self.slab.vacant()?;
        *place = Some(EventRec { kind, target, flags, boost, seq, scheduled_at: now, cb });
        self.queue_mut(target).push(class_of(flags), seq, handle);
        Some(handle)
    }

    /// Remove a pending event by handle (cancel).
    pub(crate) fn remove(&mut self, handle: EventHandle) -> Option<EventRec> {
        let rec = self.slab.remove(handle)?;
        self.queue_mut(rec.target).live -= 1;
        Some(rec)
    }

    /// Remove the pending event `handle` if it is still the one numbered
    /// `seq` (a time-out names the event it was set for).
    pub(crate) fn remove_seq(&mut self, handle: EventHandle, seq: u64) -> Option<EventRec> {
        let rec = self.slab.take_if(handle, |e| e.seq == seq)?;
        self.queue_mut(rec.target).live -= 1;
        Some(rec)
    }

    /// Whether any event is pending for `vm` (0: global).
    #[inline]
    pub(crate) fn pending(&self, vm: VmId) -> bool {
        self.queue(vm).is_some_and(|q| q.live > 0)
    }

    /// The wait classes that may have events pending for `vm` (0: global),
    /// one bit per class bucket; 0 when none is pending.
    #[inline]
    pub(crate) fn classes(&self, vm: VmId) -> u64 {
        match self.queue(vm) {
            Some(q) if q.live > 0 => q.nonempty,
            _ => 0,
        }
    }

    /// Total pending events.
    pub(crate) fn len(&self) -> usize {
        self.slab.len()
    }

    /// Choose the next event of `vm` (0: the global events) whose wait
    /// class needs none of the conditions that `unsatisfied` reports as not
    /// holding (see [`Conditions::unsatisfied`]; it is given the classes
    /// with events pending, and asked only when some are), in the machine's
    /// order, and take it out of its queue: its handle and slab slot. The
    /// caller takes the record with [`Events::take_picked`] (one move of
    /// the record, into the caller's frame).
    #[inline(always)]
    pub(crate) fn take_next(
        &mut self,
        vm: VmId,
        unsatisfied: impl FnOnce(u64) -> usize,
        order: Order,
        schedule: &RefCell<Source>,
    ) -> Option<(EventHandle, usize)> {
        let Events { slab, queues, .. } = self;
        let queue = queues.get_mut(slot_of(vm)).filter(|q| q.vm == vm && q.live > 0)?;
        let lifo = order == Order::Lifo;
        // An event that waits for nothing is ready whatever the conditions:
        // when it is at its bucket's end and beats every other bucket's end,
        // it is the answer, and the conditions need not be asked for.
        if !order.explored()
            && queue.nonempty & 1 != 0
            && let Some(picked) = pick_unconditional(queue, slab, lifo)
        {
            queue.live -= 1;
            return Some(picked);
        }
        let runnable = queue.nonempty & RUNNABLE[unsatisfied(queue.nonempty) & 31];
        // PEF_Process_Last events only when no other event is ready. (The
        // two passes are written out: a loop or a closure here costs the
        // hot path about 20 instructions per event.)
        let first = runnable & FIRST_PASS;
        let mut picked = None;
        if first != 0 {
            picked = match order {
                Order::Random | Order::Pct => pick_explored(queue, first, slab, &mut schedule.borrow_mut()),
                _ => pick_ordered(queue, first, slab, lifo),
            };
        }
        let last = runnable & !FIRST_PASS;
        if picked.is_none() && last != 0 {
            picked = match order {
                Order::Random | Order::Pct => pick_explored(queue, last, slab, &mut schedule.borrow_mut()),
                _ => pick_ordered(queue, last, slab, lifo),
            };
        }
        let picked = picked?;
        queue.live -= 1;
        Some(picked)
    }

    /// Move the record of an event [`Events::take_next`] picked into `out`
    /// (which holds `None`); its handle is stale from here on. The record
    /// lands straight in the caller's place, moved once.
    #[inline(always)]
    pub(crate) fn take_picked(&mut self, slot: usize, out: &mut Option<EventRec>) {
        self.slab.take_at_into(slot, out)
    }

    /// Remove every pending event targeted at `vm` (0: the global ones).
    pub(crate) fn drain(&mut self, vm: VmId) -> Vec<(EventHandle, EventRec)> {
        let handles: Vec<EventHandle> = self.slab.iter().filter(|(_, e)| e.target == vm).map(|(h, _)| h).collect();
        let out = handles.into_iter().filter_map(|h| self.remove(h).map(|r| (h, r))).collect();
        if let Some(q) = self.queues.get_mut(slot_of(vm)).filter(|q| q.vm == vm) {
            *q = Queue::new(vm);
        }
        out
    }

    /// Every pending handle, oldest first.
    pub(crate) fn handles(&self) -> Vec<EventHandle> {
        let mut v: Vec<(u64, EventHandle)> = self.slab.iter().map(|(h, e)| (e.seq, h)).collect();
        v.sort_unstable();
        v.into_iter().map(|(_, h)| h).collect()
    }
}

/// Take the newest (LIFO) or oldest (FIFO) live entry of one bucket out of
/// the bucket: its handle and slab slot (the record stays in the slab).
/// Dead entries on the way are dropped.
#[inline(always)]
fn take_end(b: &mut VecDeque<(u64, EventHandle)>, slab: &Slab<EventRec>, lifo: bool) -> Option<(EventHandle, usize)> {
    loop {
        let (seq, h) = if lifo { b.pop_back() } else { b.pop_front() }?;
        if let Some(slot) = live_slot(slab, seq, h) {
            return Some((h, slot));
        }
    }
}

/// The end (LIFO: back, FIFO: front) of the bucket of events that wait
/// for nothing, taken out of it, if it is live and newer (LIFO) or older
/// (FIFO) than the ends of all the other first-pass buckets. `None` means
/// "decide with the conditions" (a dead end anywhere is left to that path).
#[inline(always)]
fn pick_unconditional(queue: &mut Queue, slab: &Slab<EventRec>, lifo: bool) -> Option<(EventHandle, usize)> {
    let Queue { buckets, nonempty, newest_waiting, .. } = queue;
    let b0 = &buckets[0];
    let &(seq, handle) = if lifo { b0.back() } else { b0.front() }?;
    // LIFO: newer than anything ever queued in the other buckets, it beats
    // their ends without a look at them.
    let mut others = if lifo && seq > *newest_waiting { 0 } else { *nonempty & FIRST_PASS & !1 };
    while others != 0 {
        let class = others.trailing_zeros() as usize;
        others &= others - 1;
        let b = &buckets[class];
        if let Some(&(s, _)) = if lifo { b.back() } else { b.front() }
            && (if lifo { s > seq } else { s < seq })
        {
            return None;
        }
    }
    let slot = live_slot(slab, seq, handle)?;
    let b0 = &mut buckets[0];
    if lifo {
        b0.pop_back();
    } else {
        b0.pop_front();
    }
    if b0.is_empty() {
        *nonempty &= !1;
    }
    Some((handle, slot))
}

/// LIFO: the newest live entry at a bucket's back; FIFO: the oldest at a
/// front; taken out of its bucket (see [`take_end`]). Only buckets in
/// `candidates` are looked at; dead entries at the ends are dropped on the
/// way, and emptied buckets leave `nonempty`.
#[inline(always)]
fn pick_ordered(queue: &mut Queue, candidates: u64, slab: &Slab<EventRec>, lifo: bool) -> Option<(EventHandle, usize)> {
    let Queue { buckets, nonempty, .. } = queue;
    // One bucket to look at (the common case): its end is the answer.
    if candidates & (candidates - 1) == 0 {
        let class = candidates.trailing_zeros() as usize;
        let b = &mut buckets[class];
        let picked = take_end(b, slab, lifo);
        if b.is_empty() {
            *nonempty &= !(1 << class);
        }
        return picked;
    }
    let mut best: Option<(u64, usize)> = None;
    let mut bits = candidates;
    while bits != 0 {
        let class = bits.trailing_zeros() as usize;
        bits &= bits - 1;
        let b = &mut buckets[class];
        let end = loop {
            let e = if lifo { b.back() } else { b.front() };
            match e {
                Some(&(seq, h)) if live_slot(slab, seq, h).is_some() => break Some(seq),
                Some(_) => {
                    if lifo {
                        b.pop_back();
                    } else {
                        b.pop_front();
                    }
                }
                None => break None,
            }
        };
        match end {
            Some(seq) => {
                let better = match best {
                    None => true,
                    Some((s, _)) => (lifo && seq > s) || (!lifo && seq < s),
                };
                if better {
                    best = Some((seq, class));
                }
            }
            None => *nonempty &= !(1 << class),
        }
    }
    let (_, class) = best?;
    let b = &mut buckets[class];
    let picked = take_end(b, slab, lifo);
    if b.is_empty() {
        *nonempty &= !(1 << class);
    }
    picked
}

/// The pct task of an event: its owner, its callback's code, its target.
#[inline]
fn task_of(e: &EventRec) -> Task {
    Task { owner: e.cb.owner(), code: e.cb.identity(), target: e.target }
}

/// The explored orders: the schedule source chooses among the live
/// entries of the candidate buckets, and the choice is taken out of its
/// bucket. The random order without recording draws straight from the
/// buckets ([`pick_random`]); recording lists the candidates first, then
/// makes the same draw, so a recorded run is the run explored.
fn pick_explored(
    queue: &mut Queue,
    candidates: u64,
    slab: &Slab<EventRec>,
    schedule: &mut Source,
) -> Option<(EventHandle, usize)> {
    if let Some(rng) = schedule.plain_random() {
        return pick_random(queue, candidates, slab, rng);
    }
    // Listed by class, then by position: the same list in every run that
    // got here the same way.
    let mut live: Vec<Candidate> = Vec::new();
    let mut bits = candidates;
    while bits != 0 {
        let class = bits.trailing_zeros() as usize;
        bits &= bits - 1;
        for &(seq, h) in &queue.buckets[class] {
            if let Some(slot) = live_slot(slab, seq, h) {
                let rec = slab.at(slot).expect("live");
                live.push(Candidate { seq, task: task_of(rec) });
            }
        }
    }
    if let Some(rng) = schedule.random() {
        // The same draws as without recording (dead entries included).
        let picked = pick_random(queue, candidates, slab, rng)?;
        let seq = slab.at(picked.1).map_or(0, |e| e.seq);
        schedule.note(DecisionKind::Event, &live, seq);
        return Some(picked);
    }
    if live.is_empty() {
        return None;
    }
    let seq = schedule.choose(DecisionKind::Event, &live);
    let Queue { buckets, nonempty, .. } = queue;
    let mut bits = candidates;
    while bits != 0 {
        let class = bits.trailing_zeros() as usize;
        bits &= bits - 1;
        let b = &mut buckets[class];
        if let Some(i) = b.iter().position(|&(s, _)| s == seq) {
            let (seq, h) = b.swap_remove_back(i).expect("index in range");
            if b.is_empty() {
                *nonempty &= !(1 << class);
            }
            return live_slot(slab, seq, h).map(|slot| (h, slot));
        }
    }
    None
}

/// Random: a uniformly chosen entry among the candidate buckets, taken out
/// of its bucket (see [`take_end`]).
fn pick_random(
    queue: &mut Queue,
    candidates: u64,
    slab: &Slab<EventRec>,
    rng: &mut Rng,
) -> Option<(EventHandle, usize)> {
    let Queue { buckets, nonempty, .. } = queue;
    loop {
        let mut total = 0usize;
        let mut bits = candidates;
        while bits != 0 {
            let class = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            total += buckets[class].len();
        }
        if total == 0 {
            return None;
        }
        let mut r = rng.below(total);
        let mut bits = candidates;
        while bits != 0 {
            let class = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            let b = &mut buckets[class];
            if r < b.len() {
                let (seq, h) = b.swap_remove_back(r).expect("index in range");
                if b.is_empty() {
                    *nonempty &= !(1 << class);
                }
                if let Some(slot) = live_slot(slab, seq, h) {
                    return Some((h, slot));
                }
                break;
            }
            r -= b.len();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vmm::callback::TestHost;
    use crate::vmm::ids::InstanceId;

    /// The choice `take_next` must make, by brute force: among the pending
    /// events whose class is ready, the newest (LIFO) or oldest (FIFO),
    /// `PEF_Process_Last` ones only when no other is ready.
    fn expected(pending: &[(u64, EventHandle, usize)], unsatisfied: usize, lifo: bool) -> Option<EventHandle> {
        let ready = |last: bool| {
            let it = pending.iter().filter(move |(_, _, c)| c & unsatisfied == 0 && (c & CLASS_LAST != 0) == last);
            if lifo { it.max_by_key(|e| e.0) } else { it.min_by_key(|e| e.0) }.map(|e| e.1)
        };
        ready(false).or_else(|| ready(true))
    }

    #[test]
    fn take_next_picks_the_newest_or_oldest_ready_event() {
        // Random schedules, cancels and choices under random conditions,
        // checked against the brute-force choice, in both orders (this
        // covers the shortcut for events that wait for nothing and the
        // dead entries cancels leave at bucket ends).
        let flag_sets =
            [0, 0, PEF_WAIT_FOR_STI, PEF_WAIT_NOT_CRIT, PEF_WAIT_FOR_STI | PEF_WAIT_NOT_CRIT, PEF_PROCESS_LAST];
        for order in [Order::Lifo, Order::Fifo] {
            let settings =
                crate::vmm::schedule::Settings { order, seed: 7, inject_rate: 0.0, pct_depth: 1, pct_steps: 1 };
            let rng = RefCell::new(Source::new(&settings, None, false));
            let lifo = order == Order::Lifo;
            let mut ev = Events::default();
            let mut pending: Vec<(u64, EventHandle, usize)> = Vec::new();
            let mut script = Rng::new(0x2545_F491_4F6C_DD1D);
            let mut next = || script.next_u64();
            const VM: VmId = VmId::from_raw(0x0001_0001);
            for _ in 0..20_000 {
                match next() % 8 {
                    0..=3 => {
                        let flags = flag_sets[(next() % flag_sets.len() as u64) as usize];
                        let cb = Callback::host(InstanceId::from_raw(1), "t", |_: &TestHost, _| {
                            vmm_plugin_api::abi::Carry::Clear
                        });
                        let h = ev.insert(EventKind::Priority, VM, flags, 0, Instant::ZERO, cb).unwrap();
                        pending.push((ev.seq, h, class_of(flags)));
                    }
                    4 if !pending.is_empty() => {
                        let (_, h, _) = pending.swap_remove((next() % pending.len() as u64) as usize);
                        ev.remove(h).unwrap().cb.release();
                    }
                    _ => {
                        let unsatisfied = (next() % 4) as usize & (CLASS_STI | CLASS_NOT_CRIT);
                        let want = expected(&pending, unsatisfied, lifo);
                        let got = ev.take_next(VM, |_| unsatisfied, order, &rng).map(|(h, slot)| {
                            let mut rec = None;
                            ev.take_picked(slot, &mut rec);
                            rec.unwrap().cb.release();
                            h
                        });
                        assert_eq!(got, want, "{order:?}, unsatisfied {unsatisfied:#x}");
                        pending.retain(|e| Some(e.1) != got);
                    }
                }
                assert_eq!(ev.pending(VM), !pending.is_empty());
            }
        }
    }

    #[test]
    fn explored_orders_pick_only_ready_events_and_keep_process_last_last() {
        // Random (plain and recording) and pct: whatever they choose is a
        // ready event of the right pass, and all of them get to run.
        let flag_sets = [0, PEF_WAIT_FOR_STI, PEF_WAIT_NOT_CRIT, PEF_PROCESS_LAST];
        for (order, record) in [(Order::Random, false), (Order::Random, true), (Order::Pct, false), (Order::Pct, true)]
        {
            let settings =
                crate::vmm::schedule::Settings { order, seed: 11, inject_rate: 0.0, pct_depth: 3, pct_steps: 50 };
            let source = RefCell::new(Source::new(&settings, None, record));
            let mut ev = Events::default();
            let mut pending: Vec<(u64, EventHandle, usize)> = Vec::new();
            let mut script = Rng::new(0x5DEE_CE66_D1CE_4E5B);
            let mut next = || script.next_u64();
            const VM: VmId = VmId::from_raw(0x0001_0001);
            let names: [&'static str; 3] = ["a", "b", "c"];
            let mut chosen_not_newest = 0;
            for _ in 0..5_000 {
                match next() % 6 {
                    0..=2 => {
                        let flags = flag_sets[(next() % flag_sets.len() as u64) as usize];
                        // Three callbacks, so pct sees three tasks.
                        let name = names[(next() % 3) as usize];
                        let cb = Callback::host(InstanceId::from_raw(1), name, |_: &TestHost, _| {
                            vmm_plugin_api::abi::Carry::Clear
                        });
                        let h = ev.insert(EventKind::Priority, VM, flags, 0, Instant::ZERO, cb).unwrap();
                        pending.push((ev.seq, h, class_of(flags)));
                    }
                    3 if !pending.is_empty() => {
                        let (_, h, _) = pending.swap_remove((next() % pending.len() as u64) as usize);
                        ev.remove(h).unwrap().cb.release();
                    }
                    _ => {
                        let unsatisfied = (next() % 4) as usize & (CLASS_STI | CLASS_NOT_CRIT);
                        let ready = |last: bool| -> Vec<EventHandle> {
                            pending
                                .iter()
                                .filter(|(_, _, c)| c & unsatisfied == 0 && (c & CLASS_LAST != 0) == last)
                                .map(|e| e.1)
                                .collect()
                        };
                        let first = ready(false);
                        let allowed = if first.is_empty() { ready(true) } else { first };
                        let got = ev.take_next(VM, |_| unsatisfied, order, &source).map(|(h, slot)| {
                            let mut rec = None;
                            ev.take_picked(slot, &mut rec);
                            rec.unwrap().cb.release();
                            h
                        });
                        assert_eq!(got.is_some(), !allowed.is_empty(), "{order:?}");
                        if let Some(h) = got {
                            assert!(allowed.contains(&h), "{order:?}: {h:#x} is not ready");
                            chosen_not_newest += usize::from(expected(&pending, unsatisfied, true) != Some(h));
                        }
                        pending.retain(|e| Some(e.1) != got);
                    }
                }
                assert_eq!(ev.pending(VM), !pending.is_empty());
            }
            assert!(chosen_not_newest > 50, "{order:?} departs from LIFO ({chosen_not_newest} times)");
            if record {
                assert!(source.borrow().recorded().decisions.len() >= chosen_not_newest);
            }
        }
    }

    #[test]
    fn conditions_needed_is_the_union_of_the_pending_classes() {
        let by_bits =
            |classes: u64| (0..64).filter(|c| classes & (1u64 << c) != 0).fold(0usize, |n, c| n | c) & !CLASS_LAST;
        let mut rng = Rng::new(0x9E37_79B9_7F4A_7C15);
        for low in 0..=0xFFFFu64 {
            // Every combination of classes 0..15, with pseudo-random higher ones.
            let classes = low | (rng.next_u64() & !0xFFFF & (u64::MAX >> (low % 64)));
            assert_eq!(conditions_needed(classes), by_bits(classes), "classes {classes:#x}");
        }
    }
}
