//! Application time ("appy time"): the moments the system VM runs the
//! message server (MSGSRV32), an application, so that a VxD may do what a
//! Win16 application can. `_SHELL_CallAtAppyTime` queues one-shot
//! callbacks; the scheduler dispatches them when the system VM is about to
//! run, the critical section is free and the system VM is not blocked, in
//! the machine's event order. `CAAFL_TIMEOUT` gives up after a time-out
//! (the callback is told, in event context); once shutdown begins nothing
//! is dispatched and what is pending is reported dropped.

use vmm_plugin_api::abi::{Regs, VmmError};
use vmm_plugin_api::ddk::{CAAFL_RING0, CAAFL_TIMEOUT, QAAFL_APPYAVAIL, QAAFL_APPYNOW};

use crate::machine::{Core, Phase};
use crate::manifest::Order;
use crate::shell::{AppyHandle, AppyRec, Server};
use crate::time::Duration;
use crate::trace::{CancelReason, TraceEvent};
use crate::violation::Violation;
use crate::vmm::callback::Callback;
use crate::vmm::context::Context;
use crate::vmm::ids::VmId;
use crate::vmm::schedule::{Candidate, DecisionKind, Task};
use crate::vmm::timers::TimerKind;

impl Core {
    /// Whether appy-time events can be dispatched: Windows runs (after
    /// `Sys_VM_Init` and the `[windows] load` applications), shutdown has
    /// not begun, and the message server exists and has not faulted.
    pub(crate) fn appy_available(&self) -> bool {
        self.phase.get() == Phase::Running && self.shell.server.get() == Server::Running
    }

    /// Whether the code running now runs at appy time: inside an appy-time
    /// callback (or a service it calls), not in a timed-out one.
    pub(crate) fn at_appy_time(&self) -> bool {
        self.context() == Context::Appy
    }

    /// The rule of the appy-time-only services; `false` refuses the call.
    pub(crate) fn appy_only(&self, service: &'static str) -> bool {
        if self.at_appy_time() {
            return true;
        }
        let context = self.context().name();
        !self.violation(
            Violation::AppyOnlyService,
            format!(
                "{service} may be called only at appy time, from a _SHELL_CallAtAppyTime callback (not one told \
                 CAAFL_TIMEOUT); it was called in {context} context"
            ),
            Some(service),
        )
    }

    /// `_SHELL_QueryAppyTimeAvailable`.
    pub(crate) fn query_appy_time_available(&self) -> u32 {
        if !self.appy_available() {
            return 0;
        }
        QAAFL_APPYAVAIL | if self.at_appy_time() { QAAFL_APPYNOW } else { 0 }
    }

    /// `_SHELL_CallAtAppyTime`: the handle, 0 when refused or out of memory.
    pub(crate) fn call_at_appy_time(&self, cb: Callback, flags: u32, timeout_ms: u32) -> u32 {
        const SERVICE: &str = "_SHELL_CallAtAppyTime";
        let reserved = flags & !(CAAFL_RING0 | CAAFL_TIMEOUT);
        if reserved != 0
            && self.violation(
                Violation::InvalidParameter,
                format!("{SERVICE} dwFlags {flags:#X} sets reserved bits {reserved:#X} (only CAAFL_RING0 and CAAFL_TIMEOUT exist)"),
                Some(SERVICE),
            )
        {
            return 0;
        }
        let seq = self.shell.appy_seq.get() + 1;
        self.shell.appy_seq.set(seq);
        let now = self.sched.now();
        let label = if self.trace_on { cb.label() } else { "" };
        let owner = cb.owner();
        let handle = self.shell.appy.borrow_mut().insert(AppyRec { flags, seq, scheduled_at: now, cb });
        let Some(handle) = handle else { return 0 };
        let timeout = (flags & CAAFL_TIMEOUT != 0).then_some(timeout_ms);
        if let Some(ms) = timeout {
            self.sched.timer_at(now + Duration::from_millis(ms as u64), TimerKind::AppyTimeout(handle.raw(), seq));
        }
        self.trace(|| TraceEvent::AppyScheduled {
            handle: handle.raw(),
            seq,
            device: self.instance_name(owner).to_string(),
            callback: crate::vmm::callback::shorten(label),
            flags,
            timeout_ms: timeout,
            available: self.appy_available(),
        });
        handle.raw()
    }

    /// `_SHELL_CancelAppyTimeEvent`.
    pub(crate) fn cancel_appy_time_event(&self, handle: AppyHandle) -> Result<(), VmmError> {
        const SERVICE: &str = "_SHELL_CancelAppyTimeEvent";
        if handle.raw() == 0 {
            return Ok(());
        }
        let rec = self.shell.appy.borrow_mut().remove(handle);
        let Some(rec) = rec else {
            return Err(self.refuse(
                Violation::StaleAppyHandle,
                format!(
                    "{SERVICE} was given appy-time event handle {handle:#010X}, which is not pending (its callback \
                     already ran, it was cancelled, or it never existed)"
                ),
                Some(SERVICE),
            ));
        };
        self.forget_appy_timeout(handle, &rec);
        self.trace(|| TraceEvent::AppyCancelled {
            handle: handle.raw(),
            device: self.instance_name(rec.cb.owner()).to_string(),
            callback: rec.cb.name(),
            reason: CancelReason::Cancelled,
        });
        Ok(())
    }

    /// Whether a pending appy-time event may run now: the system VM is about
    /// to run its own code (not blocked, not waiting inside a device call,
    /// not in nested execution, interrupts enabled), the critical section is
    /// free, and no appy-time callback is already running.
    #[inline]
    pub(crate) fn appy_ready(&self) -> bool {
        self.shell.appy.borrow().len() != 0 && self.appy_ready_slow()
    }

    fn appy_ready_slow(&self) -> bool {
        if self.shell.appy.borrow().len() == 0
            || !self.appy_available()
            || self.shell.appy_depth.get() != 0
            || self.context() == Context::Interrupt
            || self.crit.borrow().owner().is_some()
        {
            return false;
        }
        let sys = self.sys_vm.get();
        if self.waiters.borrow().contains(&sys) {
            return false;
        }
        self.vms.borrow().get(sys).is_some_and(|v| v.schedulable() && v.nest.is_empty() && v.interrupts_enabled())
    }

    /// A dispatch point: run one ready appy-time event if `vm` (about to
    /// run) is the system VM. Returns whether one ran.
    pub(crate) fn dispatch_appy(&self, vm: Option<VmId>) -> bool {
        if vm != Some(self.sys_vm.get()) || !self.appy_ready() {
            return false;
        }
        let handle = {
            let appy = self.shell.appy.borrow();
            let mut pending: Vec<(u64, AppyHandle)> = appy.iter().map(|(h, r)| (r.seq, h)).collect();
            pending.sort_unstable();
            // The DDK promises no order: the machine's order decides, the
            // random mode with the seeded generator.
            match self.manifest.machine.order {
                Order::Lifo => pending.last().map(|p| p.1),
                Order::Fifo => pending.first().map(|p| p.1),
                Order::Random | Order::Pct => {
                    // Oldest first, as `pending`; an appy-time event's pct
                    // task is its owner and callback.
                    let mut candidates: Vec<Candidate> = appy
                        .iter()
                        .map(|(_, r)| Candidate {
                            seq: r.seq,
                            task: Task { owner: r.cb.owner(), code: r.cb.identity(), target: VmId::NONE },
                        })
                        .collect();
                    candidates.sort_unstable_by_key(|c| c.seq);
                    if candidates.is_empty() {
                        None
                    } else {
                        let seq = self.schedule.borrow_mut().choose(DecisionKind::Appy, &candidates);
                        pending.iter().find(|p| p.0 == seq).map(|p| p.1)
                    }
                }
            }
        };
        let rec = handle.and_then(|h| self.shell.appy.borrow_mut().remove(h));
        match (handle, rec) {
            (Some(h), Some(rec)) => {
                self.forget_appy_timeout(h, &rec);
                self.run_appy(h, rec, false);
                true
            }
            _ => false,
        }
    }

    /// An appy-time event's `CAAFL_TIMEOUT` expired: if it is still pending
    /// (the same request, not a recycled handle), run its callback now, in
    /// event context, told `CAAFL_TIMEOUT`.
    pub(crate) fn appy_timed_out(&self, handle: AppyHandle, seq: u64) {
        let live = self.shell.appy.borrow().get(handle).is_some_and(|r| r.seq == seq);
        if !live || self.phase.get() != Phase::Running {
            return;
        }
        let rec = self.shell.appy.borrow_mut().remove(handle);
        if let Some(rec) = rec {
            self.run_appy(handle, rec, true);
        }
    }

    /// An event left the queue before its `CAAFL_TIMEOUT`: remove the timer.
    pub(crate) fn forget_appy_timeout(&self, handle: AppyHandle, rec: &AppyRec) {
        if rec.flags & CAAFL_TIMEOUT != 0 {
            self.sched.cancel_timer(TimerKind::AppyTimeout(handle.raw(), rec.seq));
        }
    }

    /// Call an appy-time callback: at appy time in the system VM, as the
    /// message server's task, or (timed out) in event context in whatever VM
    /// is current.
    fn run_appy(&self, handle: AppyHandle, rec: AppyRec, timed_out: bool) {
        self.count_dispatch();
        let vm = self.cur_vm.get();
        let AppyRec { flags, scheduled_at, mut cb, .. } = rec;
        let delivered = (flags & CAAFL_RING0) | if timed_out { CAAFL_TIMEOUT } else { 0 };
        let mut regs = Regs { eax: delivered, ebx: vm.raw(), ..Regs::default() };
        let depth = self.nest_mark();
        // The wait ends at dispatch (the callback may block and return later).
        let waited_ns = self.sched.now().since(scheduled_at).as_nanos();
        let (context, result) = if timed_out {
            (Context::Event, cb.call(self, Context::Event, &mut regs))
        } else {
            self.shell.appy_depth.set(self.shell.appy_depth.get() + 1);
            let previous_task = self.current_task.replace(self.shell.server_task.get());
            let result = cb.call(self, Context::Appy, &mut regs);
            self.current_task.set(previous_task);
            self.shell.appy_depth.set(self.shell.appy_depth.get() - 1);
            (Context::Appy, result)
        };
        self.check_nest_balance(vm, depth, "an appy-time callback", || cb.owner());
        self.trace(|| TraceEvent::AppyDispatched {
            handle: handle.raw(),
            device: self.instance_name(cb.owner()).to_string(),
            callback: cb.name(),
            vm: vm.raw(),
            flags: delivered,
            timed_out,
            context: context.name(),
            waited_ns,
            result,
        });
    }

    /// Shutdown: every pending appy-time event is dropped, never to run.
    /// Called when shutdown begins and again as the machine stops (for
    /// requests made during the exit messages).
    pub(crate) fn drop_appy_events(&self) {
        let mut pending: Vec<(u64, AppyHandle)> = self.shell.appy.borrow().iter().map(|(h, r)| (r.seq, h)).collect();
        pending.sort_unstable();
        for (_, handle) in pending {
            let rec = self.shell.appy.borrow_mut().remove(handle);
            let Some(rec) = rec else { continue };
            self.forget_appy_timeout(handle, &rec);
            self.trace(|| TraceEvent::AppyDropped {
                handle: handle.raw(),
                device: self.instance_name(rec.cb.owner()).to_string(),
                callback: rec.cb.name(),
                reason: CancelReason::Shutdown,
            });
            drop(rec);
        }
    }

    /// Windows has started (`Sys_VM_Init` done, the `[windows] load`
    /// applications started): the message server starts and appy time
    /// becomes available. The first of those applications is the shell.
    pub(crate) fn start_message_server(&self) {
        self.shell.shell_task.set(self.first_windows_task());
        if self.manifest.machine.windows_version.0 < 4 || !self.manifest.shell.message_server {
            return;
        }
        let task = self.create_task();
        self.shell.server_task.set(task);
        self.shell.server.set(Server::Running);
        tracing::debug!("the message server runs as task {task:#06X}: appy time is available");
    }

    /// The message server faulted in ring-3 code it ran for `service`:
    /// appy time is unavailable from now on.
    pub(crate) fn message_server_fault(&self, module: &str, service: &'static str, message: String) {
        if self.shell.server.get() == Server::Faulted {
            return;
        }
        self.shell.server.set(Server::Faulted);
        tracing::error!("the message server faulted in {module} during {service}: appy time is no longer available");
        self.trace(|| TraceEvent::MessageServerFault { module: module.to_string(), service, message });
    }
}
