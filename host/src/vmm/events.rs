//! Pending events: global events, VM events, priority events and
//! `Call_When_VM_Ints_Enabled` requests, and how the next one to run is
//! chosen.
//!
//! Events wait in buckets by *wait class* (the set of `PEF_WAIT_*`
//! conditions they need), so choosing the next ready event costs a scan of
//! at most 64 bucket ends, however many events are pending. Cancelled and
//! timed-out events leave a dead entry behind that is skipped when it
//! reaches a bucket's end.

use std::collections::VecDeque;

use vmm_plugin_api::ddk::{
    PEF_PROCESS_LAST, PEF_WAIT_FOR_STI, PEF_WAIT_IN_PM, PEF_WAIT_NOT_CRIT, PEF_WAIT_NOT_HW_INT,
    PEF_WAIT_NOT_NESTED_EXEC,
};

use crate::manifest::Order;
use crate::time::Instant;
use crate::vmm::callback::Callback;
use crate::vmm::rng::Rng;
use crate::vmm::slab::{Slab, TAG_EVENT};

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
}

impl EventKind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            EventKind::Global => "global",
            EventKind::Vm => "vm",
            EventKind::Priority => "priority",
            EventKind::IntsEnabled => "ints_enabled",
        }
    }
}

/// A pending event.
pub(crate) struct EventRec {
    pub(crate) kind: EventKind,
    /// The VM it runs in (0 for global events).
    pub(crate) target: u32,
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

const CLASS_STI: usize = 1;
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
        class_of(flags) & unsatisfied(self) == 0
    }
}

/// The pending events of one VM (or the global ones), by wait class.
#[derive(Default)]
struct Queue {
    buckets: Vec<VecDeque<(u64, u32)>>,
    /// Bit `c` set: bucket `c` may hold entries.
    nonempty: u64,
    live: usize,
    /// Taken out of the buckets by `take_ready`, not yet removed from the
    /// slab.
    picked: usize,
}

impl Queue {
    fn push(&mut self, class: usize, seq: u64, handle: u32) {
        if self.buckets.is_empty() {
            self.buckets.resize_with(CLASSES, VecDeque::new);
        }
        self.buckets[class].push_back((seq, handle));
        self.nonempty |= 1 << class;
        self.live += 1;
    }
}

/// The classes whose conditions `cond` satisfies, as a bit mask.
fn unsatisfied(cond: &Conditions) -> usize {
    let mut u = 0;
    if !cond.sti {
        u |= CLASS_STI;
    }
    if !cond.not_crit {
        u |= CLASS_NOT_CRIT;
    }
    if !cond.not_hw_int {
        u |= CLASS_NOT_HW_INT;
    }
    if !cond.not_nested {
        u |= CLASS_NOT_NESTED;
    }
    if !cond.in_pm {
        u |= CLASS_IN_PM;
    }
    u
}

/// All pending events.
pub(crate) struct Events {
    pub(crate) slab: Slab<EventRec>,
    global: Queue,
    vms: Vec<(u32, Queue)>,
    seq: u64,
}

impl Default for Events {
    fn default() -> Self {
        Events { slab: Slab::new(TAG_EVENT), global: Queue::default(), vms: Vec::new(), seq: 0 }
    }
}

fn is_live(slab: &Slab<EventRec>, seq: u64, handle: u32) -> bool {
    slab.get(handle).is_some_and(|e| e.seq == seq)
}

impl Events {
    fn queue_mut(&mut self, vm: u32) -> &mut Queue {
        if vm == 0 {
            return &mut self.global;
        }
        match self.vms.iter().position(|(v, _)| *v == vm) {
            Some(i) => &mut self.vms[i].1,
            None => {
                self.vms.push((vm, Queue::default()));
                &mut self.vms.last_mut().expect("just pushed").1
            }
        }
    }

    /// Add a pending event; its handle (`None` if the table is full).
    pub(crate) fn insert(
        &mut self,
        kind: EventKind,
        target: u32,
        flags: u32,
        boost: i32,
        now: Instant,
        cb: Callback,
    ) -> Option<u32> {
        self.seq += 1;
        let seq = self.seq;
        let handle = self.slab.insert(EventRec { kind, target, flags, boost, seq, scheduled_at: now, cb })?;
        let class = class_of(flags);
        self.queue_mut(target).push(class, seq, handle);
        Some(handle)
    }

    /// Remove a pending event by handle (cancel, time-out, or after
    /// `take_ready` chose it).
    pub(crate) fn remove(&mut self, handle: u32) -> Option<EventRec> {
        let rec = self.slab.remove(handle)?;
        let q = self.queue_mut(rec.target);
        q.live -= 1;
        q.picked = q.picked.saturating_sub(1);
        Some(rec)
    }

    /// Whether any event is pending for `vm` (0: global).
    pub(crate) fn pending(&self, vm: u32) -> bool {
        if vm == 0 {
            return self.global.live > 0;
        }
        self.vms.iter().any(|(v, q)| *v == vm && q.live > 0)
    }

    /// Total pending events.
    pub(crate) fn len(&self) -> usize {
        self.slab.len()
    }

    /// Choose the next event of `vm` (0: the global events) that may run
    /// under `cond`, in the machine's order, and take it out of its queue.
    /// The record stays in the slab until [`Events::remove`] moves it out
    /// (once, where it is used).
    pub(crate) fn take_ready(&mut self, vm: u32, cond: &Conditions, order: Order, rng: &mut Rng) -> Option<u32> {
        let slab = &self.slab;
        let queue = if vm == 0 {
            &mut self.global
        } else {
            match self.vms.iter_mut().find(|(v, _)| *v == vm) {
                Some((_, q)) => q,
                None => return None,
            }
        };
        if queue.live == 0 {
            return None;
        }
        let blocked = unsatisfied(cond);
        // PEF_Process_Last events are skipped in the first pass.
        for last_pass in [false, true] {
            let mut candidates = 0u64;
            let mut bits = queue.nonempty;
            while bits != 0 {
                let class = bits.trailing_zeros() as usize;
                bits &= bits - 1;
                if class & blocked == 0 && ((class & CLASS_LAST != 0) == last_pass) {
                    candidates |= 1 << class;
                }
            }
            if candidates == 0 {
                continue;
            }
            let picked = match order {
                Order::Lifo | Order::Fifo => {
                    pick_ordered(&mut queue.buckets, &mut queue.nonempty, candidates, slab, order == Order::Lifo)
                }
                Order::Random => pick_random(&mut queue.buckets, &mut queue.nonempty, candidates, slab, rng),
            };
            if let Some(handle) = picked {
                queue.picked += 1;
                return Some(handle);
            }
        }
        None
    }

    /// Remove every pending event targeted at `vm` (0: the global ones).
    pub(crate) fn drain(&mut self, vm: u32) -> Vec<(u32, EventRec)> {
        let handles: Vec<u32> = self.slab.iter().filter(|(_, e)| e.target == vm).map(|(h, _)| h).collect();
        let out = handles.into_iter().filter_map(|h| self.remove(h).map(|r| (h, r))).collect();
        if vm == 0 {
            self.global = Queue::default();
        } else {
            self.vms.retain(|(v, _)| *v != vm);
        }
        out
    }

    /// Every pending handle, oldest first.
    pub(crate) fn handles(&self) -> Vec<u32> {
        let mut v: Vec<(u64, u32)> = self.slab.iter().map(|(h, e)| (e.seq, h)).collect();
        v.sort_unstable();
        v.into_iter().map(|(_, h)| h).collect()
    }
}

/// LIFO: the newest live entry at a bucket's back; FIFO: the oldest at a
/// front. Only buckets in `candidates` are looked at; dead entries at the
/// ends are dropped on the way, and emptied buckets leave `nonempty`.
fn pick_ordered(
    buckets: &mut [VecDeque<(u64, u32)>],
    nonempty: &mut u64,
    candidates: u64,
    slab: &Slab<EventRec>,
    lifo: bool,
) -> Option<u32> {
    let mut best: Option<(u64, usize)> = None;
    let mut bits = candidates;
    while bits != 0 {
        let class = bits.trailing_zeros() as usize;
        bits &= bits - 1;
        let b = &mut buckets[class];
        let end = loop {
            let e = if lifo { b.back() } else { b.front() };
            match e {
                Some(&(seq, h)) if is_live(slab, seq, h) => break Some(seq),
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
    let (_, h) = if lifo { b.pop_back() } else { b.pop_front() }?;
    if b.is_empty() {
        *nonempty &= !(1 << class);
    }
    Some(h)
}

/// Random: a uniformly chosen entry among the candidate buckets.
fn pick_random(
    buckets: &mut [VecDeque<(u64, u32)>],
    nonempty: &mut u64,
    candidates: u64,
    slab: &Slab<EventRec>,
    rng: &mut Rng,
) -> Option<u32> {
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
                if is_live(slab, seq, h) {
                    return Some(h);
                }
                break;
            }
            r -= b.len();
        }
    }
}
