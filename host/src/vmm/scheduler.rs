//! The scheduler's state: virtual time (`Get_System_Time`), the current
//! VM's time slice, the pending events (`Schedule_*_Event`,
//! `Call_Priority_VM_Event`, `Call_When_VM_Ints_Enabled`), the timers
//! (`Set_*_Time_Out` and every other happening at a moment of system time),
//! the remembered VM choice and the livelock guard's count.
//!
//! [`Scheduler`] owns this state behind private fields: only its methods
//! change the event queues, the timers and the clock. The run loop that
//! acts on it (choosing a VM, calling callbacks, going idle) is in
//! [`crate::vmm::sched`], on the machine, because it calls plugins.
//!
//! Each method borrows what it needs for one step and releases it before
//! returning (or before calling the closure it is given, where it says
//! so), so no borrow is held across a call into a plugin.

use std::cell::{Cell, RefCell};

use crate::manifest::Order;
use crate::time::{Duration, Instant};
use crate::vmm::callback::Callback;
use crate::vmm::events::{EventHandle, EventKind, EventRec, Events};
use crate::vmm::ids::{InstanceId, VmId};
use crate::vmm::schedule::Source;
use crate::vmm::timers::{TimeoutHandle, TimeoutRec, TimerKind, Timers};

/// What a unit of work was (for the livelock guard's report).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum Work {
    /// An event callback (events, `Call_When_Not_Critical`, appy time).
    Event,
    /// An interrupt taken.
    Interrupt,
    /// A timer fired.
    Timer,
    /// A ring-3 step.
    Ring3,
}

/// Units of work done since virtual time last advanced: the livelock
/// guard. Counted whether or not a trace is kept.
#[derive(Default)]
struct Spin {
    total: Cell<u64>,
    events: Cell<u64>,
    interrupts: Cell<u64>,
    timers: Cell<u64>,
    ring3: Cell<u64>,
    /// The instance whose callback ran last (0: the host's own work).
    last: Cell<InstanceId>,
}

/// The livelock guard's counts (see [`Scheduler::count_work`]).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) struct SpinCount {
    pub(crate) units: u64,
    pub(crate) events: u64,
    pub(crate) interrupts: u64,
    pub(crate) timers: u64,
    pub(crate) ring3: u64,
    /// The instance whose callback ran last (0: the host's own work).
    pub(crate) last: InstanceId,
}

/// Events, timers and the time slice.
pub(crate) struct Scheduler {
    /// Virtual system time.
    now: Cell<Instant>,
    /// When the current VM's time slice began.
    slice_start: Cell<Instant>,
    events: RefCell<Events>,
    timers: RefCell<Timers>,
    /// The last VM choice that only VM states decided, with the VM table
    /// epoch it was taken at.
    pick_memo: Cell<Option<(u64, VmId)>>,
    /// Work done since virtual time last advanced.
    spin: Spin,
    /// When the idle handlers last ran.
    idle_notified: Cell<Option<Instant>>,
}

impl Default for Scheduler {
    fn default() -> Self {
        Scheduler {
            now: Cell::new(Instant::ZERO),
            slice_start: Cell::new(Instant::ZERO),
            events: RefCell::new(Events::default()),
            timers: RefCell::new(Timers::default()),
            pick_memo: Cell::new(None),
            spin: Spin::default(),
            idle_notified: Cell::new(None),
        }
    }
}

impl Scheduler {
    // ---- time ------------------------------------------------------------------------

    /// The virtual system time.
    #[inline(always)]
    pub(crate) fn now(&self) -> Instant {
        self.now.get()
    }

    /// Move virtual time to `to` (never back): the livelock guard starts
    /// counting again.
    pub(crate) fn advance(&self, to: Instant) {
        debug_assert!(to >= self.now.get(), "virtual time went back");
        self.now.set(to.max(self.now.get()));
        self.reset_spin();
    }

    /// A VM's time slice begins now.
    #[inline]
    pub(crate) fn start_slice(&self) {
        self.slice_start.set(self.now.get());
    }

    /// `Adjust_Execution_Time` of the current VM: its slice lasts `ms`
    /// longer (shorter when negative; a slice never starts before time 0).
    pub(crate) fn adjust_slice(&self, ms: i32) {
        let start = self.slice_start.get().as_nanos();
        let delta = u64::from(ms.unsigned_abs()) * 1_000_000;
        let moved = if ms >= 0 { start.saturating_add(delta) } else { start.saturating_sub(delta) };
        self.slice_start.set(Instant::ZERO + Duration::from_nanos(moved));
    }

    /// End the current time slice at once (the current VM yields).
    pub(crate) fn end_slice(&self) {
        self.slice_start.set(Instant::ZERO);
    }

    /// Whether the current slice has lasted `slice` or longer.
    #[inline]
    pub(crate) fn slice_over(&self, slice: Duration) -> bool {
        self.now.get().since(self.slice_start.get()) >= slice
    }

    /// When the current slice of length `slice` ends (a new slice's end if
    /// it is over).
    pub(crate) fn slice_end(&self, slice: Duration) -> Instant {
        let now = self.now.get();
        let end = self.slice_start.get() + slice;
        if end <= now { now + slice } else { end }
    }

    /// Whether the idle handlers are due: they have not run at this moment
    /// and `idle()` says the system is idle. If so, they count as run at
    /// this moment from here on (`idle` is not asked when they already
    /// ran).
    pub(crate) fn first_idle_now(&self, idle: impl FnOnce() -> bool) -> bool {
        let now = self.now.get();
        if self.idle_notified.get() != Some(now) && idle() {
            self.idle_notified.set(Some(now));
            return true;
        }
        false
    }

    // ---- the remembered VM choice ------------------------------------------------------

    /// The VM chosen at VM table epoch `epoch`, if that choice is
    /// remembered.
    #[inline(always)]
    pub(crate) fn remembered_pick(&self, epoch: u64) -> Option<VmId> {
        self.pick_memo.get().filter(|(at, _)| *at == epoch).map(|(_, vm)| vm)
    }

    /// Remember that VM states alone chose `vm` at epoch `epoch`.
    #[inline]
    pub(crate) fn remember_pick(&self, epoch: u64, vm: VmId) {
        self.pick_memo.set(Some((epoch, vm)));
    }

    // ---- the livelock guard ------------------------------------------------------------

    /// Count a unit of work done at this instant (by `instance`, 0 for the
    /// host); the count of all units since time last advanced.
    #[inline(always)]
    pub(crate) fn count_work(&self, kind: Work, instance: InstanceId) -> u64 {
        let spin = &self.spin;
        let n = spin.total.get() + 1;
        spin.total.set(n);
        let c = match kind {
            Work::Event => &spin.events,
            Work::Interrupt => &spin.interrupts,
            Work::Timer => &spin.timers,
            Work::Ring3 => &spin.ring3,
        };
        c.set(c.get() + 1);
        if !instance.is_host() {
            spin.last.set(instance);
        }
        n
    }

    /// Name `instance` as the one whose callback ran last.
    pub(crate) fn blame(&self, instance: InstanceId) {
        self.spin.last.set(instance);
    }

    /// The work counted since virtual time last advanced.
    pub(crate) fn spin_count(&self) -> SpinCount {
        let s = &self.spin;
        SpinCount {
            units: s.total.get(),
            events: s.events.get(),
            interrupts: s.interrupts.get(),
            timers: s.timers.get(),
            ring3: s.ring3.get(),
            last: s.last.get(),
        }
    }

    fn reset_spin(&self) {
        let s = &self.spin;
        for c in [&s.total, &s.events, &s.interrupts, &s.timers, &s.ring3] {
            c.set(0);
        }
        s.last.set(InstanceId::HOST);
    }

    // ---- events ------------------------------------------------------------------------

    /// Make an event pending, scheduled now, with a `PEF_Time_Out` of
    /// `timeout_ms` if given; its handle (`None` if the table is full).
    #[inline(always)]
    pub(crate) fn schedule_event(
        &self,
        kind: EventKind,
        target: VmId,
        flags: u32,
        boost: i32,
        timeout_ms: Option<u32>,
        cb: Callback,
    ) -> Option<EventHandle> {
        let now = self.now.get();
        let handle = self.events.borrow_mut().insert(kind, target, flags, boost, now, cb)?;
        if let Some(ms) = timeout_ms {
            self.set_event_timeout(handle, now + Duration::from_millis(ms as u64));
        }
        Some(handle)
    }

    #[cold]
    #[inline(never)]
    fn set_event_timeout(&self, handle: EventHandle, at: Instant) {
        let seq = self.events.borrow().slab.get(handle).map(|e| e.seq).unwrap_or(0);
        self.timers.borrow_mut().at(at, TimerKind::EventTimeout(handle, seq));
    }

    /// `f` of the pending event `handle` (`None` if it is not pending). The
    /// events stay borrowed while `f` runs: it must not call a plugin.
    pub(crate) fn with_event<R>(&self, handle: EventHandle, f: impl FnOnce(&EventRec) -> R) -> Option<R> {
        self.events.borrow().slab.get(handle).map(f)
    }

    /// `f` of every pending event that it accepts, with its sequence
    /// number, oldest first. The events stay borrowed while `f` runs: it
    /// must not call a plugin.
    pub(crate) fn events_where<R>(&self, mut f: impl FnMut(EventHandle, &EventRec) -> Option<R>) -> Vec<R> {
        let events = self.events.borrow();
        let mut found: Vec<(u64, R)> = events.slab.iter().filter_map(|(h, e)| f(h, e).map(|r| (e.seq, r))).collect();
        found.sort_unstable_by_key(|(seq, _)| *seq);
        found.into_iter().map(|(_, r)| r).collect()
    }

    /// Every pending event's handle, oldest first.
    pub(crate) fn event_handles(&self) -> Vec<EventHandle> {
        self.events.borrow().handles()
    }

    /// Whether any event is pending.
    #[inline]
    pub(crate) fn events_pending(&self) -> bool {
        self.events.borrow().len() > 0
    }

    /// Whether any event is pending for `vm` (0: global).
    #[inline]
    pub(crate) fn events_pending_for(&self, vm: VmId) -> bool {
        self.events.borrow().pending(vm)
    }

    /// The wait classes that may have events pending for `vm` (see
    /// [`Events::classes`]).
    #[inline]
    pub(crate) fn event_classes(&self, vm: VmId) -> u64 {
        self.events.borrow().classes(vm)
    }

    /// Take a pending event out (cancelled): its record.
    pub(crate) fn remove_event(&self, handle: EventHandle) -> Option<EventRec> {
        self.events.borrow_mut().remove(handle)
    }

    /// Take the pending event `handle` out if it is still the one numbered
    /// `seq` (its time-out expired).
    pub(crate) fn remove_timed_out_event(&self, handle: EventHandle, seq: u64) -> Option<EventRec> {
        self.events.borrow_mut().remove_seq(handle, seq)
    }

    /// Take out every pending event targeted at `vm`.
    pub(crate) fn drain_events(&self, vm: VmId) -> Vec<(EventHandle, EventRec)> {
        self.events.borrow_mut().drain(vm)
    }

    /// Choose the next event to run and take it out of its queue: a global
    /// one first (restricted global events only when `vm` meets their
    /// restrictions), else, if `vm` is given and
    /// `may_run(vm)` allows, one of `vm`'s whose wait class needs none of
    /// the conditions `unsatisfied(vm, classes)` reports as not holding
    /// (see [`Events::take_next`]). Its handle and slab slot, for
    /// [`Scheduler::take_picked_event`]. The events stay borrowed while the
    /// closures run: they must not touch them or call a plugin.
    #[inline(always)]
    pub(crate) fn take_next_event(
        &self,
        vm: Option<VmId>,
        may_run: impl FnOnce(VmId) -> bool,
        unsatisfied: impl Fn(VmId, u64) -> usize,
        order: Order,
        schedule: &RefCell<Source>,
    ) -> Option<(EventHandle, usize)> {
        let mut events = self.events.borrow_mut();
        // Global events wait for nothing, except restricted ones (asked
        // about only when such are pending): their restrictions are those
        // of the VM about to run, and with none chosen they wait.
        let mut next = events.take_next(
            VmId::NONE,
            |classes| vm.map_or(usize::MAX, |vm| unsatisfied(vm, classes)),
            order,
            schedule,
        );
        if next.is_none()
            && let Some(vm) = vm
            && may_run(vm)
        {
            next = events.take_next(vm, |classes| unsatisfied(vm, classes), order, schedule);
        }
        next
    }

    /// Move the record of the event [`Scheduler::take_next_event`] chose
    /// into `out` (which holds `None`).
    #[inline(always)]
    pub(crate) fn take_picked_event(&self, slot: usize, out: &mut Option<EventRec>) {
        self.events.borrow_mut().take_picked(slot, out)
    }

    // ---- timers ------------------------------------------------------------------------

    /// Schedule `kind` at `at`; timers due at the same moment fire in the
    /// order they were scheduled.
    pub(crate) fn timer_at(&self, at: Instant, kind: TimerKind) {
        self.timers.borrow_mut().at(at, kind);
    }

    /// Schedule `kind` `after` from now.
    pub(crate) fn timer_after(&self, after: Duration, kind: TimerKind) {
        let at = self.now.get() + after;
        self.timers.borrow_mut().at(at, kind);
    }

    /// Remove a timer that must not fire.
    pub(crate) fn cancel_timer(&self, kind: TimerKind) {
        self.timers.borrow_mut().cancel(kind);
    }

    /// Take out the earliest timer if it is due now: when it was due, and
    /// what it is.
    #[inline]
    pub(crate) fn pop_due_timer(&self) -> Option<(Instant, TimerKind)> {
        let now = self.now.get();
        let mut timers = self.timers.borrow_mut();
        if timers.next_due().is_some_and(|at| at <= now) { timers.pop_due(now) } else { None }
    }

    /// When the next timer is due.
    pub(crate) fn next_timer_due(&self) -> Option<Instant> {
        self.timers.borrow().next_due()
    }

    /// Whether every scheduled timer is a `Stop` (`Set_VM_Time_Out`s
    /// aside).
    pub(crate) fn only_stop_timers(&self) -> bool {
        self.timers.borrow().only_stops()
    }

    /// Whether any timer other than `Stop` is scheduled.
    pub(crate) fn timers_pending(&self) -> bool {
        self.timers.borrow().has_pending()
    }

    /// Add a time-out; its handle (`None` if the table is full).
    pub(crate) fn add_timeout(&self, rec: TimeoutRec) -> Option<TimeoutHandle> {
        self.timers.borrow_mut().add_timeout(rec)
    }

    /// Take out a time-out (cancelled or expired).
    pub(crate) fn remove_timeout(&self, handle: TimeoutHandle) -> Option<TimeoutRec> {
        self.timers.borrow_mut().remove_timeout(handle)
    }

    /// `f` of every pending time-out that it accepts. The timers stay
    /// borrowed while `f` runs: it must not call a plugin.
    pub(crate) fn timeouts_where<R>(&self, mut f: impl FnMut(TimeoutHandle, &TimeoutRec) -> Option<R>) -> Vec<R> {
        self.timers.borrow().timeouts.iter().filter_map(|(h, r)| f(h, r)).collect()
    }

    /// Whether any VM has a pending `Set_VM_Time_Out`.
    #[inline]
    pub(crate) fn has_vm_timeouts(&self) -> bool {
        self.timers.borrow().has_vm_timeouts()
    }

    /// Whether `vm` has a pending `Set_VM_Time_Out`.
    #[inline]
    pub(crate) fn vm_has_timeouts(&self, vm: VmId) -> bool {
        self.timers.borrow().vm_has_timeouts(vm)
    }

    /// The earliest `Set_VM_Time_Out` of `vm`: (due execution time, handle).
    #[inline]
    pub(crate) fn next_vm_timeout(&self, vm: VmId) -> Option<(Duration, TimeoutHandle)> {
        self.timers.borrow().next_vm_timeout(vm)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_advances_and_clears_the_livelock_count() {
        let s = Scheduler::default();
        assert_eq!(s.count_work(Work::Event, InstanceId::from_raw(7)), 1);
        assert_eq!(s.count_work(Work::Timer, InstanceId::HOST), 2);
        let c = s.spin_count();
        assert_eq!((c.units, c.events, c.timers, c.last), (2, 1, 1, InstanceId::from_raw(7)));
        s.advance(Instant::ZERO + Duration::from_millis(5));
        assert_eq!(s.now(), Instant::ZERO + Duration::from_millis(5));
        assert_eq!(
            s.spin_count(),
            SpinCount { units: 0, events: 0, interrupts: 0, timers: 0, ring3: 0, last: InstanceId::HOST }
        );
    }

    #[test]
    fn the_slice_ends_at_its_length_or_a_new_one_begins() {
        let s = Scheduler::default();
        let slice = Duration::from_millis(20);
        s.advance(Instant::ZERO + Duration::from_millis(10));
        s.start_slice();
        s.advance(Instant::ZERO + Duration::from_millis(25));
        assert!(!s.slice_over(slice));
        assert_eq!(s.slice_end(slice), Instant::ZERO + Duration::from_millis(30));
        s.end_slice();
        assert!(s.slice_over(slice));
        assert_eq!(s.slice_end(slice), Instant::ZERO + Duration::from_millis(45));
    }

    #[test]
    fn idle_handlers_are_due_once_per_moment_while_idle() {
        let s = Scheduler::default();
        assert!(!s.first_idle_now(|| false));
        assert!(s.first_idle_now(|| true));
        assert!(!s.first_idle_now(|| panic!("not asked again at the same moment")));
        s.advance(Instant::ZERO + Duration::from_millis(1));
        assert!(s.first_idle_now(|| true));
    }

    #[test]
    fn due_timers_come_out_in_time_then_schedule_order() {
        let s = Scheduler::default();
        let at = Instant::ZERO + Duration::from_millis(3);
        s.timer_at(at, TimerKind::Action(1));
        s.timer_after(Duration::from_millis(3), TimerKind::Action(2));
        s.timer_at(Instant::ZERO + Duration::from_millis(1), TimerKind::Stop);
        assert_eq!(s.pop_due_timer(), None);
        assert!(!s.only_stop_timers());
        s.advance(at);
        assert_eq!(s.pop_due_timer(), Some((Instant::ZERO + Duration::from_millis(1), TimerKind::Stop)));
        assert_eq!(s.pop_due_timer(), Some((at, TimerKind::Action(1))));
        s.cancel_timer(TimerKind::Action(2));
        assert_eq!(s.pop_due_timer(), None);
        assert!(s.only_stop_timers() && !s.timers_pending());
    }
}
