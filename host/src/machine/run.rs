//! The scheduler and the run loop: timers fire, interrupts are taken, the
//! highest-priority runnable VM is chosen, events run just before the VMM
//! returns to their VM (global events first), ring-3 code takes a step, and
//! when nothing is left to do at this moment, virtual time jumps to the next
//! thing that will happen.
//!
//! The state this acts on (virtual time, the time slice, the pending events,
//! the timers) belongs to the [`Scheduler`](crate::vmm::scheduler::Scheduler):
//! the loop changes it only through the scheduler's methods.
//!
//! The loop is re-entrant: a VM that blocks (on the critical section or a
//! semaphore) in the middle of a device's code runs a nested loop that
//! executes the other VMs until it may continue, so blocking never blocks
//! the host thread. Waits nest on the host stack: an outer waiter resumes
//! after the inner ones.

use vmm_plugin_api::abi::{Regs, VmmError};
use vmm_plugin_api::ddk::{BLOCK_THREAD_IDLE, CF_MASK, CRITICAL_SECTION_BOOST, PEF_DONT_UNBOOST, TIME_CRITICAL_BOOST};

use crate::machine::Core;
use crate::manifest::ActionKind;
use crate::time::Instant;
use crate::trace::{CallOutcome, CancelReason, PriorityReason, StuckEvent, StuckVm, TraceEvent};
use crate::violation::Violation;
use crate::vmm::callback::Callback;
use crate::vmm::context::Context;
use crate::vmm::events::EventHandle;
use crate::vmm::events::{
    CLASS_STI, Conditions, EventKind, EventRec, class_of, condition_names, conditions_needed, runnable_classes,
};
use crate::vmm::ids::{InstanceId, VmId};
use crate::vmm::scheduler::Work;
use crate::vmm::timers::TimeoutHandle;
use crate::vmm::timers::{Due, TimerKind};
use crate::vmm::vm::Blocked;

/// Why a run loop ended.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum LoopEnd {
    /// The loop's condition holds.
    Done,
    /// Nothing will ever happen again.
    Quiescent,
    /// `--until` was reached or a stop was requested.
    Stopped,
    /// A fatal error stopped the machine.
    Fatal,
}

impl Core {
    // ---- the loop ---------------------------------------------------------------

    /// Run until `done` holds (checked between steps). `waiter` is the VM
    /// that waits in this loop (for nested waits).
    pub(crate) fn run_until(&self, done: &dyn Fn(&Core) -> bool, waiter: Option<VmId>) -> LoopEnd {
        if let Some(w) = waiter {
            self.waiters.borrow_mut().push(w);
            self.vms.borrow_mut().touch();
        }
        let end = self.run_loop(done);
        if waiter.is_some() {
            self.waiters.borrow_mut().pop();
            self.vms.borrow_mut().touch();
        }
        end
    }

    fn run_loop(&self, done: &dyn Fn(&Core) -> bool) -> LoopEnd {
        loop {
            if self.is_fatal() {
                return LoopEnd::Fatal;
            }
            if self.run.stop_requested() {
                return LoopEnd::Stopped;
            }
            if self.run.interrupted() {
                self.run.request_stop();
                return LoopEnd::Stopped;
            }
            if done(self) {
                return LoopEnd::Done;
            }
            if self.fire_due_timers() {
                continue;
            }
            if self.take_pending_interrupts() {
                continue;
            }
            let vm = self.pick_vm();
            if let Some(vm) = vm
                && self.cur_vm.get() != vm
            {
                // Only a switch can change what `done` saw above.
                self.switch_vm(vm);
                if done(self) {
                    return LoopEnd::Done;
                }
            }
            if self.dispatch_events(vm) {
                continue;
            }
            if let Some(vm) = vm {
                let before = self.sched.now();
                if self.ring3_step(vm) {
                    if self.sched.now() == before {
                        self.count_work(Work::Ring3, InstanceId::HOST);
                    }
                    continue;
                }
            }
            if !self.idle(vm) {
                return self.quiescent();
            }
        }
    }

    /// Nothing will ever happen again (or only the stop timer will): a
    /// normal end, unless something still waits: then it waits forever, a
    /// `DEADLOCK`.
    fn quiescent(&self) -> LoopEnd {
        if self.waits_forever() {
            self.report_deadlock();
            return LoopEnd::Fatal;
        }
        LoopEnd::Quiescent
    }

    /// Whether an event is pending or a VM is blocked.
    fn waits_forever(&self) -> bool {
        self.sched.events_pending()
            || !self.waiters.borrow().is_empty()
            || self.vms.borrow().iter().any(|v| v.blocked.is_some())
    }

    /// The top-level run: until the machine is quiescent or `until`.
    pub(crate) fn run_machine(&self) -> LoopEnd {
        if let Some(until) = self.manifest.machine.until {
            self.sched.timer_at(Instant::ZERO + until, TimerKind::Stop);
        }
        self.run.top_level(|| self.run_until(&|_| false, None))
    }

    // ---- choosing a VM -------------------------------------------------------------

    /// Whether `vm` has something to do: ring-3 code, pending events or
    /// VM time-outs, the rest of a device call it is waiting in (a
    /// blocking wait, nested execution), or (the system VM) appy-time
    /// events ready to run.
    pub(crate) fn wants_cpu(&self, vm: VmId) -> bool {
        // Cheapest checks first.
        self.sched.events_pending_for(vm)
            || self.waiters.borrow().contains(&vm)
            || self.sched.vm_has_timeouts(vm)
            || self.ring3_ready(vm)
            || (vm == self.sys_vm.get() && self.appy_ready())
    }

    /// The VM to run: the highest execution priority among the schedulable
    /// VMs; among equals, the ones with work share time slices round-robin;
    /// with no work anywhere, the system VM idles.
    ///
    /// A VM blocked with `Block_Svc_Ints` (or its variants) competes too
    /// while it has an event ready to run (it runs only its events), and a
    /// VM blocked with `Block_Poll` keeps the CPU from every VM that does
    /// not have a higher priority.
    pub(crate) fn pick_vm(&self) -> Option<VmId> {
        // A VM alone at the top priority stays the choice until a VM changes
        // (priority, state, the table) or a wait begins or ends.
        let epoch = self.vms.borrow().epoch();
        if let Some(vm) = self.sched.remembered_pick(epoch)
            && self.flagged_waits.get() == 0
        {
            return Some(vm);
        }
        let waiters = self.waiters.borrow();
        let outer = &waiters[..waiters.len().saturating_sub(1)];
        if self.flagged_waits.get() == 0 {
            let (vm, alone) = self.pick_among(|v| v.schedulable() && !outer.contains(&v.handle));
            if alone && let Some(vm) = vm {
                self.sched.remember_pick(epoch, vm);
            }
            return vm;
        }
        let poller = {
            let vms = self.vms.borrow();
            vms.iter().filter(|v| v.polling()).map(|v| (v.priority(), v.handle)).max()
        };
        let (picked, _) = self.pick_among(|v| {
            let runs = (v.schedulable() && !outer.contains(&v.handle))
                || (v.serves_events() && self.has_ready_event(v.handle));
            runs && poller.is_none_or(|(floor, p)| v.priority() > floor || v.handle == p)
        });
        picked.or(poller.map(|(_, p)| p))
    }

    /// [`Core::pick_vm`] among the VMs `eligible` accepts; and whether the
    /// choice was the only VM at the top priority (then it depends on
    /// nothing but the VMs' states).
    fn pick_among(&self, eligible: impl Fn(&crate::vmm::vm::Vm) -> bool) -> (Option<VmId>, bool) {
        let cur = self.cur_vm.get();
        let vms = self.vms.borrow();
        // One pass: the top priority, whether the current VM has it, and how
        // many share it.
        let mut top = 0u32;
        let mut tied = 0usize;
        let mut cur_top = false;
        let mut only = VmId::NONE;
        for v in vms.iter().filter(|v| eligible(v)) {
            let p = v.priority();
            if p > top {
                (top, tied, cur_top) = (p, 0, false);
            }
            if p == top {
                tied += 1;
                cur_top |= v.handle == cur;
                only = v.handle;
            }
        }
        match tied {
            0 => return (None, false),
            1 => return (Some(only), true),
            _ => {}
        }
        let slice_over = self.sched.slice_over(self.manifest.machine.time_slice);
        // Whether the current VM wants the CPU, asked once.
        let cur_wants = cur_top && self.wants_cpu(cur);
        if cur_wants && !slice_over {
            return (Some(cur), false);
        }
        // Round-robin among the tied VMs with work: the next after the
        // current one, else the first.
        let mut first_wanting = None;
        let mut next_wanting = None;
        for v in vms.iter().filter(|v| eligible(v) && v.priority() == top) {
            let wants = if v.handle == cur { cur_wants } else { self.wants_cpu(v.handle) };
            if !wants {
                continue;
            }
            first_wanting.get_or_insert(v.handle);
            if v.handle > cur && next_wanting.is_none() {
                next_wanting = Some(v.handle);
            }
        }
        if let Some(h) = next_wanting.or(first_wanting) {
            return (Some(h), false);
        }
        // Nobody has work: the current VM keeps the CPU, else the system VM
        // idles.
        let sys = self.sys_vm.get();
        if cur_top {
            return (Some(cur), false);
        }
        if vms.iter().any(|v| eligible(v) && v.handle == sys && v.priority() == top) {
            return (Some(sys), false);
        }
        (vms.iter().find(|v| eligible(v) && v.priority() == top).map(|v| v.handle), false)
    }

    /// Whether `vm` has an event that may run now.
    fn has_ready_event(&self, vm: VmId) -> bool {
        let classes = self.sched.event_classes(vm);
        classes != 0 && classes & runnable_classes(self.unsatisfied_for(vm, classes)) != 0
    }

    /// Whether `vm`'s own events may run: it is not blocked, or it is
    /// blocked in a wait that services them.
    fn events_may_run(&self, vm: VmId) -> bool {
        self.flagged_waits.get() == 0
            || self.vms.borrow().get(vm).is_none_or(|v| v.blocked.is_none() || v.serves_events())
    }

    /// Whether a schedulable VM other than `vm` has a higher priority.
    pub(crate) fn higher_priority_vm(&self, vm: VmId) -> bool {
        let vms = self.vms.borrow();
        let waiters = self.waiters.borrow();
        let Some(p) = vms.get(vm).map(|v| v.priority()) else { return false };
        vms.iter().any(|v| v.handle != vm && v.schedulable() && !waiters.contains(&v.handle) && v.priority() > p)
    }

    /// Make `vm` the current VM (if it is not), calling the task-switch
    /// hooks.
    pub(crate) fn switch_to(&self, vm: VmId) {
        if self.cur_vm.get() != vm {
            self.switch_vm(vm);
        }
    }

    /// `Adjust_Execution_Time`: the current VM's slice now, another VM's
    /// next one.
    pub(crate) fn adjust_execution_time(&self, vm: VmId, ms: i32) {
        if vm == self.cur_vm.get() {
            self.sched.adjust_slice(ms);
        } else if let Some(v) = self.vms.borrow().get(vm) {
            v.slice_adjust_ms.set(v.slice_adjust_ms.get().saturating_add(ms));
        }
    }

    /// Switch from the current VM to another one.
    fn switch_vm(&self, vm: VmId) {
        let old = self.cur_vm.get();
        self.cur_vm.set(vm);
        self.sched.start_slice();
        let adjust = self.vms.borrow().get(vm).map_or(0, |v| v.slice_adjust_ms.take());
        if adjust != 0 {
            self.sched.adjust_slice(adjust);
        }
        self.trace(|| TraceEvent::VmSwitch { from: old.raw(), vm: vm.raw() });
        // Call_When_Task_Switched: installation order, EAX = old, EBX = new.
        let count = self.hooks.borrow().task_switched.len();
        for i in 0..count {
            let Some(mut cb) = self.hooks.borrow_mut().task_switched[i].take() else { continue };
            let mut regs = Regs { eax: old.raw(), ebx: vm.raw(), ..Regs::default() };
            cb.call(self, Context::Event, &mut regs);
            self.hooks.borrow_mut().task_switched[i] = Some(cb);
        }
    }

    // ---- events --------------------------------------------------------------------

    /// The wait conditions of `vm` right now.
    pub(crate) fn conditions(&self, vm: VmId) -> Conditions {
        let vms = self.vms.borrow();
        let Some(v) = vms.get(vm) else { return Conditions::default() };
        // Events' own boosts do not make a critical or time-critical
        // operation (docs/semantics.md).
        let priority = v.crit_priority();
        let crit_free = self.crit.borrow().owner().is_none();
        Conditions {
            sti: v.sti_for_events(),
            not_crit: crit_free && priority < CRITICAL_SECTION_BOOST,
            not_hw_int: self.context() != Context::Interrupt && priority < TIME_CRITICAL_BOOST,
            not_nested: v.nest.is_empty(),
            in_pm: v.pm,
        }
    }

    /// The wait-condition bits (see [`Conditions::unsatisfied`]) that do
    /// not hold for `vm` right now, among those the events pending in
    /// `classes` wait for: the conditions cost more than the common
    /// answer, events that wait for none of them.
    #[inline(always)]
    fn unsatisfied_for(&self, vm: VmId, classes: u64) -> usize {
        let needed = conditions_needed(classes);
        if needed == 0 {
            return 0;
        }
        if needed == CLASS_STI {
            // The common case (PEF_Wait_For_STI alone): one flag to read.
            let enabled = self.vms.borrow().get(vm).is_some_and(|v| v.sti_for_events());
            return if enabled { 0 } else { CLASS_STI };
        }
        self.conditions(vm).unsatisfied() & needed
    }

    /// Run one ready event: the global ones first, then those of `vm` if it
    /// is about to run, then (the system VM) an appy-time event. Returns
    /// whether one ran.
    pub(crate) fn dispatch_events(&self, vm: Option<VmId>) -> bool {
        let order = self.manifest.machine.order;
        let next = self.sched.take_next_event(
            vm,
            |vm| self.events_may_run(vm),
            |vm, classes| self.unsatisfied_for(vm, classes),
            order,
            &self.schedule,
        );
        if let Some((h, slot)) = next {
            // The record is moved once, out of the slab into this frame, and
            // lent from here.
            let mut taken = None;
            self.sched.take_picked_event(slot, &mut taken);
            if let Some(rec) = taken.as_mut() {
                self.run_event_inline(h, rec, false, false);
            }
            if let Some(rec) = taken {
                rec.cb.release();
            }
            return true;
        }
        let Some(vm) = vm else { return false };
        self.run_not_critical() || self.dispatch_appy(Some(vm))
    }

    /// Run an event's callback (it is already out of the pending set, so its
    /// handle is stale from here on), remove its boost afterwards, and
    /// release the callback.
    pub(crate) fn run_event(&self, handle: EventHandle, mut rec: EventRec, inline: bool, timed_out: bool) {
        self.run_event_inline(handle, &mut rec, inline, timed_out);
        rec.cb.release();
    }

    /// [`Core::run_event`] on a lent record, inlined into the caller: event
    /// dispatch keeps the record in its own frame, so it is not copied on
    /// the way, and releases the callback itself.
    #[inline(always)]
    fn run_event_inline(&self, handle: EventHandle, rec: &mut EventRec, inline: bool, timed_out: bool) {
        self.count_work(Work::Event, rec.cb.owner());
        let vm = self.cur_vm.get();
        // ESI: the event's own handle (0 inline), so a device can forget it.
        let mut regs =
            Regs { ebx: vm.raw(), esi: handle.raw(), flags: if timed_out { CF_MASK } else { 0 }, ..Regs::default() };
        let depth = self.nest_mark();
        // The wait ends here, at dispatch (the callback may block and
        // return later).
        let dispatched = self.sched.now();
        if rec.boost != 0 && rec.target.is_none() {
            // A global restricted event's boost goes to the VM that runs it,
            // once its restrictions are met.
            self.add_boost(vm, rec.boost as i64, PriorityReason::Event);
        }
        let result = rec.cb.call_inline(self, Context::Event, &mut regs);
        self.check_nest_balance(vm, depth, "an event callback", || rec.cb.owner());
        if rec.boost != 0 {
            self.unboost_ran(rec, vm, timed_out);
        }
        if self.trace_on {
            let waited = dispatched.since(rec.scheduled_at);
            self.trace_dispatched(if inline { 0 } else { handle.raw() }, rec, vm, inline, timed_out, waited, result);
        }
    }

    /// The `event_dispatched` record of an event that ran. (Apart from
    /// `run_event`, so that with tracing off the hot path builds nothing.)
    #[cold]
    #[inline(never)]
    #[allow(clippy::too_many_arguments)] // the record's fields, handed over from the hot path
    fn trace_dispatched(
        &self,
        handle: u32,
        rec: &EventRec,
        vm: VmId,
        inline: bool,
        timed_out: bool,
        waited: crate::time::Duration,
        result: CallOutcome,
    ) {
        self.trace(|| TraceEvent::EventDispatched {
            handle,
            event: rec.kind.name(),
            vm: vm.raw(),
            target: (!rec.target.is_none()).then_some(rec.target.raw()),
            inline,
            timed_out,
            waited_ns: waited.as_nanos(),
            device: self.instance_name(rec.cb.owner()).to_string(),
            callback: rec.cb.name(),
            result,
        });
    }

    /// Remove the boost of an event that ran in `vm` (unless
    /// `PEF_Dont_Unboost` and it did not time out).
    #[cold]
    #[inline(never)]
    fn unboost_ran(&self, rec: &EventRec, vm: VmId, timed_out: bool) {
        let keep = rec.flags & PEF_DONT_UNBOOST != 0 && !timed_out;
        match rec.kind {
            EventKind::Priority if keep => {
                // PEF_Dont_Unboost: the boost stays, as the device's own.
                self.keep_event_boost(rec.target, rec.boost as i64);
            }
            EventKind::Priority => self.event_boost(rec.target, -(rec.boost as i64), PriorityReason::Unboost),
            // A restricted event's boost is the VM's own (Adjust_Exec_Priority):
            // with PEF_Dont_Unboost it simply stays.
            EventKind::Restricted if !keep => {
                let target = if rec.target.is_none() { vm } else { rec.target };
                self.add_boost(target, -(rec.boost as i64), PriorityReason::Unboost);
            }
            _ => {}
        }
    }

    /// Add `delta` to `vm`'s boost.
    pub(crate) fn add_boost(&self, vm: VmId, delta: i64, reason: PriorityReason) {
        let priority = {
            let mut vms = self.vms.borrow_mut();
            let Some(v) = vms.get_mut(vm) else { return };
            v.boost += delta;
            v.priority()
        };
        self.trace(|| TraceEvent::Priority { vm: vm.raw(), boost: delta, priority, reason });
    }

    /// Add `delta` to the boost `vm`'s pending (or running) priority
    /// events hold: it raises the VM's priority but is no critical or
    /// time-critical operation of the VM (see [`Vm::crit_priority`]).
    ///
    /// [`Vm::crit_priority`]: crate::vmm::vm::Vm::crit_priority
    pub(crate) fn event_boost(&self, vm: VmId, delta: i64, reason: PriorityReason) {
        let priority = {
            let mut vms = self.vms.borrow_mut();
            let Some(v) = vms.get_mut(vm) else { return };
            v.boost += delta;
            v.event_boost += delta;
            v.priority()
        };
        self.trace(|| TraceEvent::Priority { vm: vm.raw(), boost: delta, priority, reason });
    }

    /// A `PEF_Dont_Unboost` event returned: its boost stays on the VM as an
    /// ordinary boost (the device lowers it with `Adjust_Exec_Priority`).
    fn keep_event_boost(&self, vm: VmId, boost: i64) {
        if let Some(v) = self.vms.borrow_mut().get_mut(vm) {
            v.event_boost -= boost;
        }
    }

    /// Count an event callback of `instance` (see [`Core::count_work`]).
    #[inline]
    pub(crate) fn count_dispatch(&self) {
        self.count_work(Work::Event, InstanceId::HOST);
    }

    /// Count a unit of work done at this instant (by `instance`, 0 for the
    /// host); `[machine] livelock_limit` of them without virtual time
    /// advancing is a livelock, and stops the machine.
    #[inline]
    pub(crate) fn count_work(&self, kind: Work, instance: InstanceId) {
        let n = self.sched.count_work(kind, instance);
        if n == self.manifest.machine.livelock_limit {
            self.report_livelock();
        }
    }

    /// The livelock guard tripped: a `livelock` record naming what spun, a
    /// `LIVELOCK` violation and a fatal error.
    #[cold]
    #[inline(never)]
    fn report_livelock(&self) {
        let crate::vmm::scheduler::SpinCount { units, events, interrupts, timers, ring3, last } =
            self.sched.spin_count();
        let device = (!last.is_host()).then(|| self.instance_name(last).to_string());
        self.trace(|| TraceEvent::Livelock {
            units,
            events,
            interrupts,
            timers,
            ring3_steps: ring3,
            device: device.clone(),
        });
        let message = format!(
            "virtual time stood still at {} ms over {units} units of work ({events} event callbacks, {interrupts} \
             interrupts taken, {timers} timers fired, {ring3} ring-3 steps){}; raise [machine] livelock_limit if \
             this is intended",
            self.sched.now().as_millis(),
            device.as_deref().map(|d| format!("; the last callback was {d}'s")).unwrap_or_default(),
        );
        self.violation(Violation::Livelock, message.clone(), None);
        self.set_fatal(format!("livelock: {message}"), device);
    }

    /// Nothing that waits can ever run: a `deadlock` record naming the
    /// waiting events (device, handle, VM, the conditions that do not hold)
    /// and blocked VMs, a `DEADLOCK` violation and a fatal error.
    #[cold]
    #[inline(never)]
    pub(crate) fn report_deadlock(&self) {
        if self.is_fatal() {
            return;
        }
        let now = self.sched.now();
        // (Building the records borrows the VM table and the critical
        // section, never the events.)
        let stuck_events: Vec<StuckEvent> = self.sched.events_where(|handle, e| {
            Some(StuckEvent {
                handle: handle.raw(),
                event: e.kind.name(),
                vm: e.target.raw(),
                device: self.instance_name(e.cb.owner()).to_string(),
                callback: e.cb.name(),
                flags: e.flags,
                waits_for: self.why_event_waits(e.target, e.flags),
                waited_ns: now.since(e.scheduled_at).as_nanos(),
            })
        });
        let owner = self.crit.borrow().owner();
        let stuck_vms: Vec<StuckVm> = self
            .vms
            .borrow()
            .iter()
            .filter_map(|v| {
                let waits_for = match v.blocked? {
                    Blocked::Crit => "critical_section",
                    Blocked::Semaphore(_) => "semaphore",
                };
                Some(StuckVm {
                    vm: v.handle.raw(),
                    name: v.name.to_string(),
                    waits_for,
                    owner: (waits_for == "critical_section").then_some(owner).flatten().map(VmId::raw),
                })
            })
            .collect();
        let message = self.deadlock_message(&stuck_events, &stuck_vms);
        self.trace(|| TraceEvent::Deadlock { events: stuck_events, vms: stuck_vms });
        self.violation(Violation::Deadlock, message.clone(), None);
        self.set_fatal(format!("deadlock: {message}"), None);
    }

    /// What keeps a pending event of `vm` with `flags` from running.
    fn why_event_waits(&self, vm: VmId, flags: u32) -> Vec<&'static str> {
        let mut why = Vec::new();
        if vm.is_none() {
            // A global restricted event: the conditions no VM meets.
            let handles: Vec<VmId> = self.vms.borrow().iter().map(|v| v.handle).collect();
            let unmet = handles.into_iter().fold(class_of(flags), |u, h| u & self.conditions(h).unsatisfied());
            why.extend(condition_names(unmet));
            if why.is_empty() {
                why.push("vm_not_scheduled");
            }
            return why;
        }
        let state = self.vms.borrow().get(vm).map(|v| (v.suspend_count > 0, v.blocked.is_some() && !v.serves_events()));
        match state {
            None => why.push("vm_gone"),
            Some((suspended, blocked)) => {
                if suspended {
                    why.push("vm_suspended");
                }
                if blocked {
                    why.push("vm_blocked");
                }
            }
        }
        if !vm.is_none() {
            why.extend(condition_names(self.conditions(vm).unsatisfied() & class_of(flags)));
        }
        if why.is_empty() {
            why.push("vm_not_scheduled");
        }
        why
    }

    /// One sentence for a deadlock's violation and fatal error.
    fn deadlock_message(&self, events: &[StuckEvent], vms: &[StuckVm]) -> String {
        const SHOWN: usize = 4;
        // The trace's records carry the handles' numbers.
        let vm_name = |vm: u32| {
            let name = self.vms.borrow().get(VmId::from_raw(vm)).map(|v| v.name.to_string()).unwrap_or_default();
            format!("{name} (VM {vm:#x})")
        };
        let mut parts: Vec<String> = vms
            .iter()
            .map(|v| match (v.waits_for, v.owner) {
                ("critical_section", Some(o)) => {
                    format!("{} waits for the critical section, which {} holds", vm_name(v.vm), vm_name(o))
                }
                (what, _) => format!("{} waits for a {}", vm_name(v.vm), what.replace('_', " ")),
            })
            .collect();
        for e in events.iter().take(SHOWN) {
            parts.push(format!(
                "{}'s {} event {:#x} ({}) for {} waits for {}",
                e.device,
                e.event,
                e.handle,
                e.callback,
                vm_name(e.vm),
                e.waits_for.join(" and ")
            ));
        }
        if events.len() > SHOWN {
            parts.push(format!("{} more pending event(s)", events.len() - SHOWN));
        }
        format!(
            "{} pending event(s) and {} blocked VM(s) can never run, and nothing scheduled can change that: {}",
            events.len(),
            vms.len(),
            parts.join("; ")
        )
    }

    /// Cancel a pending event (any kind), tracing why.
    pub(crate) fn cancel_event(&self, handle: EventHandle, reason: CancelReason) -> bool {
        let rec = self.sched.remove_event(handle);
        let Some(rec) = rec else { return false };
        if rec.kind == EventKind::Priority && rec.boost != 0 {
            // The boost goes even with PEF_Dont_Unboost.
            self.event_boost(rec.target, -(rec.boost as i64), PriorityReason::Unboost);
        } else if rec.kind == EventKind::Restricted && rec.boost != 0 && !rec.target.is_none() {
            // A global one's boost was not applied yet.
            self.add_boost(rec.target, -(rec.boost as i64), PriorityReason::Unboost);
        }
        let device = self.instance_name(rec.cb.owner());
        self.trace(|| TraceEvent::EventCancelled {
            handle: handle.raw(),
            event: rec.kind.name(),
            vm: (!rec.target.is_none()).then_some(rec.target.raw()),
            device: device.to_string(),
            reason,
        });
        drop(rec);
        true
    }

    /// `Call_When_Not_Critical`: after a release, the newest registration
    /// runs once the critical section is free and the current VM's priority
    /// is below `Critical_Section_Boost`.
    pub(crate) fn run_not_critical(&self) -> bool {
        let ready = self.crit.borrow().not_critical_due();
        if !ready || self.context() == Context::Interrupt {
            return false;
        }
        let vm = self.cur_vm.get();
        if self.vms.borrow().get(vm).is_none_or(|v| v.crit_priority() >= CRITICAL_SECTION_BOOST) {
            return false;
        }
        let cb = self.crit.borrow_mut().take_not_critical();
        let Some(mut cb) = cb else { return false };
        self.count_work(Work::Event, cb.owner());
        let mut regs = Regs { ebx: vm.raw(), ..Regs::default() };
        let result = cb.call(self, Context::Event, &mut regs);
        let device = self.instance_name(cb.owner());
        self.trace(|| TraceEvent::EventDispatched {
            handle: 0,
            event: "not_critical",
            vm: vm.raw(),
            target: None,
            inline: false,
            timed_out: false,
            waited_ns: 0,
            device: device.to_string(),
            callback: cb.name(),
            result,
        });
        true
    }

    // ---- timers ----------------------------------------------------------------------

    /// Fire one timer that is due now (system-time timers, then the current
    /// VM's execution-time time-outs). Returns whether one fired.
    pub(crate) fn fire_due_timers(&self) -> bool {
        if let Some((at, kind)) = self.sched.pop_due_timer() {
            self.count_work(Work::Timer, InstanceId::HOST);
            self.fire_timer(at, kind);
            return true;
        }
        if !self.sched.has_vm_timeouts() {
            return false;
        }
        let vm = self.cur_vm.get();
        let exec = self.vms.borrow().get(vm).map(|v| v.exec_time);
        if let Some(exec) = exec {
            let next = self.sched.next_vm_timeout(vm);
            if let Some((due, handle)) = next
                && due <= exec
            {
                self.count_work(Work::Timer, InstanceId::HOST);
                self.fire_timeout(handle, (exec.saturating_sub(due)).as_millis() as u32);
                return true;
            }
        }
        false
    }

    fn fire_timer(&self, at: Instant, kind: TimerKind) {
        match kind {
            TimerKind::Timeout(h) => {
                let late = self.sched.now().since(at).as_millis() as u32;
                self.fire_timeout(h, late);
            }
            TimerKind::EventTimeout(h, seq) => {
                let rec = self.sched.remove_timed_out_event(h, seq);
                if let Some(rec) = rec {
                    self.run_event(h, rec, false, true);
                }
            }
            TimerKind::AppyTimeout(h, seq) => self.appy_timed_out(crate::shell::state::AppyHandle::from_raw(h), seq),
            TimerKind::Interrupt(index, rep) => self.fire_manifest_interrupt(index, rep),
            TimerKind::Action(index) => self.fire_action(index),
            TimerKind::CreateVm(index) => self.create_manifest_vm(index),
            TimerKind::Wake(program) => self.ring3_wake(program),
            TimerKind::Stop => self.run.request_stop(),
            TimerKind::VirtualIret { vm, irq, seq } => self.vpicd_iret(vm, irq, Some(seq)),
            TimerKind::PhysIrq(index, rep) => self.fire_manifest_irq(index, rep),
            TimerKind::PhysIrqLower(irq) => self.lower_physical_irq(irq),
            TimerKind::IrqConflict(vm) => {
                if self.vm_valid(vm) {
                    self.destroy_vm(
                        vm,
                        vmm_plugin_api::ddk::VNE_CRASHED,
                        false,
                        crate::trace::DestroyReason::IrqConflict,
                    );
                }
            }
            TimerKind::EndVm(vm, flags) => self.end_vm_now(vm, flags),
        }
    }

    /// Run an expired time-out's callback (EBX = current VM, ECX = ms late).
    fn fire_timeout(&self, handle: TimeoutHandle, late_ms: u32) {
        let rec = self.sched.remove_timeout(handle);
        let Some(rec) = rec else { return };
        self.sched.blame(rec.cb.owner());
        let vm = self.cur_vm.get();
        let timer = if matches!(rec.due, Due::Exec(..)) { "vm" } else { "global" };
        let ms = rec.ms;
        let mut cb = rec.cb;
        let mut regs = Regs { ebx: vm.raw(), ecx: late_ms, ..Regs::default() };
        let depth = self.nest_mark();
        let result = cb.call(self, Context::Event, &mut regs);
        self.check_nest_balance(vm, depth, "a time-out callback", || cb.owner());
        self.trace(|| TraceEvent::Timeout {
            handle: handle.raw(),
            timer,
            vm: vm.raw(),
            ms,
            late_ms,
            device: self.instance_name(cb.owner()).to_string(),
            callback: cb.name(),
            result,
        });
    }

    /// Cancel a pending time-out, tracing why.
    pub(crate) fn cancel_timeout(&self, handle: TimeoutHandle, reason: CancelReason) -> bool {
        let rec = self.sched.remove_timeout(handle);
        let Some(rec) = rec else { return false };
        let device = self.instance_name(rec.cb.owner());
        self.trace(|| TraceEvent::TimeoutCancelled { handle: handle.raw(), device: device.to_string(), reason });
        true
    }

    // ---- idle -------------------------------------------------------------------------

    /// Nothing can run at this moment: call the idle handlers once, then
    /// advance virtual time to the next thing that will happen. Returns
    /// `false` if nothing ever will.
    fn idle(&self, vm: Option<VmId>) -> bool {
        let now = self.sched.now();
        if self.sched.first_idle_now(|| self.system_idle(vm)) && self.call_idle_handlers() {
            return true;
        }
        let mut next = self.sched.next_timer_due();
        // The end of a VM time-out or of the slice, if time must advance for
        // one of them.
        let mut next_vm_work = None;
        if let Some(vm) = vm {
            let remaining = {
                let exec = self.vms.borrow().get(vm).map(|v| v.exec_time);
                let due = self.sched.next_vm_timeout(vm);
                match (exec, due) {
                    (Some(exec), Some((due, _))) => Some(due.saturating_sub(exec)),
                    _ => None,
                }
            };
            if let Some(r) = remaining {
                next = Some(next.map_or(now + r, |n| n.min(now + r)));
                next_vm_work = Some(now + r);
            }
            // Another VM with work at the same priority gets the rest of the
            // slice's time.
            // (Not while `vm` polls: it keeps the CPU from them.)
            let polls = self.flagged_waits.get() > 0 && self.vms.borrow().get(vm).is_some_and(|v| v.polling());
            let others_want = !polls && self.others_with_work(vm);
            if others_want {
                let end = self.sched.slice_end(self.manifest.machine.time_slice);
                next = Some(next.map_or(end, |n| n.min(end)));
                next_vm_work = Some(end);
            }
        }
        let Some(next) = next else { return false };
        // Only the stop timer (`until`, `run_for`) is ahead, and nothing
        // else can change this moment's state: what waits now waits
        // forever. Report it now, not at the stop.
        let only_stop = next_vm_work.is_none() && self.sched.only_stop_timers();
        if only_stop && self.waits_forever() {
            return false;
        }
        self.advance_to(next.max(now), vm);
        true
    }

    /// Whether the system VM is idle when nothing can run and `vm` was
    /// chosen: it was chosen and is not blocked, or it is blocked with
    /// `Block_Thread_Idle`.
    fn system_idle(&self, vm: Option<VmId>) -> bool {
        let sys = self.sys_vm.get();
        if self.flagged_waits.get() > 0
            && let Some(v) = self.vms.borrow().get(sys)
            && v.blocked.is_some()
        {
            return v.block_flags & BLOCK_THREAD_IDLE != 0;
        }
        vm == Some(sys)
    }

    /// Whether a schedulable VM other than `vm`, at `vm`'s priority, has work.
    fn others_with_work(&self, vm: VmId) -> bool {
        let others: Vec<VmId> = {
            let vms = self.vms.borrow();
            let p = vms.get(vm).map(|v| v.priority()).unwrap_or(0);
            vms.iter().filter(|v| v.handle != vm && v.schedulable() && v.priority() == p).map(|v| v.handle).collect()
        };
        others.into_iter().any(|h| self.wants_cpu(h))
    }

    /// Move virtual time to `to` (or, when pacing is interrupted by a
    /// rebuilt plugin, to where the wall clock got), charging the time to
    /// `vm`'s execution.
    pub(crate) fn advance_to(&self, to: Instant, vm: Option<VmId>) {
        let now = self.sched.now();
        if to <= now {
            return;
        }
        let to = self.pace(to).max(now);
        if let Some(vm) = vm
            && let Some(v) = self.vms.borrow_mut().get_mut(vm)
        {
            v.exec_time += to.since(now);
        }
        self.sched.advance(to);
    }

    /// Charge `d` of execution to the current VM (a ring-3 step).
    pub(crate) fn charge(&self, d: crate::time::Duration) {
        let vm = self.cur_vm.get();
        self.advance_to(self.sched.now() + d, Some(vm));
    }

    /// With `--realtime`, wait until the wall clock catches up with `to`;
    /// the virtual time reached. A watched run (`--watch`) stops waiting
    /// when a rebuilt plugin is ready, so it is reloaded at once, and any
    /// run when it is interrupted (a signal), so it stops at once.
    fn pace(&self, to: Instant) -> Instant {
        if !self.manifest.machine.realtime || !self.run.is_top_level() {
            return to;
        }
        let start = self.run.wall_start();
        let target = start + std::time::Duration::from_nanos(to.as_nanos());
        // Sleep in short slices when something may cut the wait short.
        let wakers = self.run.pace_wakers();
        let wakes = wakers.is_some();
        let woken = || wakers.as_ref().is_some_and(|w| w());
        loop {
            let wall = std::time::Instant::now();
            if target <= wall {
                return to;
            }
            if woken() {
                let reached =
                    Instant::ZERO + crate::time::Duration::from_nanos(wall.duration_since(start).as_nanos() as u64);
                return reached.min(to);
            }
            let left = target - wall;
            std::thread::sleep(if wakes { left.min(std::time::Duration::from_millis(5)) } else { left });
        }
    }

    /// `Call_When_Idle`: the chain runs in installation order until a
    /// handler consumes the idle call (carry clear). Returns whether any
    /// handler ran.
    fn call_idle_handlers(&self) -> bool {
        let ran = self.run_idle_chain();
        ran && (self.sched.events_pending() || self.sched.timers_pending())
    }

    /// KERNEL's idle call (INT 2Fh AX=1689h) from the system VM: when
    /// every other VM is idle too (none wants the CPU), the
    /// `Call_When_Idle` chain runs. Returns whether it ran.
    pub(crate) fn kernel_idle(&self) -> bool {
        let sys = self.sys_vm.get();
        let others: Vec<VmId> = self.vms.borrow().iter().filter(|v| v.handle != sys).map(|v| v.handle).collect();
        if others.into_iter().any(|vm| self.vms.borrow().get(vm).is_some_and(|v| v.schedulable()) && self.wants_cpu(vm))
        {
            return false;
        }
        self.run_idle_chain()
    }

    /// `Call_When_Idle`: `callback` joins the end of the idle chain; its
    /// handle (the slot's index + 1).
    pub(crate) fn add_idle_handler(&self, owner: InstanceId, callback: Callback) -> u32 {
        let mut hooks = self.hooks.borrow_mut();
        hooks.idle.push(Some(callback));
        hooks.idle_meta.push((owner, false));
        hooks.idle.len() as u32
    }

    /// `Cancel_Call_When_Idle`: `NOT_FOUND` unless `handle` is an idle
    /// handler `owner` installed and has not cancelled. A handler running
    /// now is dropped when it returns.
    pub(crate) fn cancel_idle_handler(&self, owner: InstanceId, handle: u32) -> Result<(), VmmError> {
        let taken = {
            let mut hooks = self.hooks.borrow_mut();
            let i = (handle as usize).wrapping_sub(1);
            match hooks.idle_meta.get_mut(i) {
                Some(meta) if meta.0 == owner && !meta.1 => {
                    meta.1 = true;
                    hooks.idle[i].take()
                }
                _ => return Err(VmmError::NOT_FOUND),
            }
        };
        // Released outside the borrow: a plugin's drop may call back.
        drop(taken);
        Ok(())
    }

    /// `Call_When_Idle`'s chain, in installation order, until a handler
    /// consumes the idle call (carry clear). Returns whether any ran.
    fn run_idle_chain(&self) -> bool {
        let count = self.hooks.borrow().idle.len();
        let sys = self.sys_vm.get();
        let mut ran = false;
        for i in 0..count {
            let Some(mut cb) = self.hooks.borrow_mut().idle[i].take() else { continue };
            let mut regs = Regs { ebx: sys.raw(), ..Regs::default() };
            let result = cb.call(self, Context::Event, &mut regs);
            let cancelled = self.hooks.borrow().idle_meta.get(i).is_some_and(|m| m.1);
            if cancelled {
                // Cancel_Call_When_Idle from inside its own call.
                drop(cb);
            } else {
                self.hooks.borrow_mut().idle[i] = Some(cb);
            }
            ran = true;
            if result == CallOutcome::Clear {
                break;
            }
        }
        ran
    }

    // ---- manifest-driven happenings -------------------------------------------------------

    /// Schedule the manifest's VMs, interrupts and actions (at boot).
    pub(crate) fn schedule_manifest(&self) {
        let m = &self.manifest;
        for (i, vm) in m.vms.iter().enumerate() {
            self.sched.timer_at(Instant::ZERO + vm.at, TimerKind::CreateVm(i));
        }
        for (i, irq) in m.interrupts.iter().enumerate() {
            self.sched.timer_at(Instant::ZERO + irq.at, TimerKind::Interrupt(i, 0));
        }
        for (i, e) in m.irqs.iter().enumerate() {
            self.vpicd.state.borrow_mut().set_level(e.irq, e.level);
            self.sched.timer_at(Instant::ZERO + e.at, TimerKind::PhysIrq(i, 0));
        }
        for (i, a) in m.actions.iter().enumerate() {
            self.sched.timer_at(Instant::ZERO + a.at, TimerKind::Action(i));
        }
    }

    fn fire_action(&self, index: usize) {
        let action = self.manifest.actions[index].clone();
        let Some(vm) = self.vm_by_name(&action.vm) else {
            tracing::warn!("{}: [[action]] for VM `{}`, which does not exist now", action.origin, action.vm);
            return;
        };
        let name = match action.action {
            ActionKind::Cli => "cli",
            ActionKind::Sti => "sti",
            ActionKind::BeginCritical => "begin_critical",
            ActionKind::EndCritical => "end_critical",
        };
        self.trace(|| TraceEvent::Action { vm: vm.raw(), action: name });
        match action.action {
            ActionKind::Cli => self.set_vm_interrupts(vm, false),
            ActionKind::Sti => self.set_vm_interrupts(vm, true),
            ActionKind::BeginCritical => self.vm_begin_critical(vm),
            ActionKind::EndCritical => {
                // A VM that does not own the section is reported as a
                // violation by end_critical_for; the action has no caller to
                // return the error to.
                let _ = self.end_critical_for(vm, 1, "[[action]] end_critical");
            }
        }
    }

    /// Set or clear a VM's interrupt flag (CLI / STI).
    pub(crate) fn set_vm_interrupts(&self, vm: VmId, enabled: bool) {
        if let Some(v) = self.vms.borrow().get(vm) {
            v.set_interrupts(enabled);
        }
        if enabled {
            // A virtual interrupt held while the VM had them disabled.
            self.vpicd_vm_runs(vm);
        }
    }

    /// The VM named `name` (`system` or a `[[vm]]` name).
    pub(crate) fn vm_by_name(&self, name: &str) -> Option<VmId> {
        if name.eq_ignore_ascii_case("system") {
            return Some(self.sys_vm.get());
        }
        self.vms.borrow().iter().find(|v| v.name.eq_ignore_ascii_case(name)).map(|v| v.handle)
    }
}
