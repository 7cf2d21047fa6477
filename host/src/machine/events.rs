//! Scheduling events for the services that take a callback
//! (`Call_Priority_VM_Event`, `Schedule_*_Event`, `Call_*_Event`, and
//! SHELL's and VXDLDR's own events): run it inline where the DDK allows,
//! else schedule it, with its `event_scheduled` record.

use vmm_plugin_api::abi::VmmError;
use vmm_plugin_api::ddk::{PEF_ALWAYS_SCHED, PEF_TIME_OUT};

use crate::machine::Core;
use crate::trace::{PriorityReason, TraceEvent};
use crate::vmm::callback::{Callback, shorten};
use crate::vmm::context::Context;
use crate::vmm::events::EventHandle;
use crate::vmm::events::{EventKind, EventRec};
use crate::vmm::ids::{InstanceId, VmId};

impl Core {
    /// Schedule an event, tracing it; its handle.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    pub(crate) fn schedule(
        &self,
        caller: InstanceId,
        kind: EventKind,
        target: VmId,
        flags: u32,
        boost: i32,
        timeout_ms: Option<u32>,
        cb: Callback,
    ) -> Result<u32, VmmError> {
        let handle = self.sched.schedule_event(kind, target, flags, boost, timeout_ms, cb);
        let Some(handle) = handle else { return Err(VmmError::OUT_OF_MEMORY) };
        if boost != 0 {
            self.boost_pending(kind, target, boost);
        }
        if self.trace_on {
            self.trace_scheduled(caller, handle, timeout_ms);
        }
        Ok(handle.raw())
    }

    /// The `event_scheduled` record of the pending event `handle`. (Apart from
    /// `schedule`, so that with tracing off the hot path builds nothing.)
    #[cold]
    #[inline(never)]
    fn trace_scheduled(&self, caller: InstanceId, handle: EventHandle, timeout_ms: Option<u32>) {
        let Some((kind, target, flags, boost, label, seq)) =
            self.sched.with_event(handle, |e| (e.kind, e.target, e.flags, e.boost, e.cb.label(), e.seq))
        else {
            return;
        };
        self.trace(|| TraceEvent::EventScheduled {
            handle: handle.raw(),
            seq,
            event: kind.name(),
            vm: (!target.is_none()).then_some(target.raw()),
            flags,
            boost,
            timeout_ms,
            device: self.instance_name(caller).to_string(),
            callback: shorten(label),
        });
    }

    /// Run an event inline, inside the service call.
    pub(crate) fn run_inline(
        &self,
        kind: EventKind,
        target: VmId,
        flags: u32,
        boost: i32,
        cb: Callback,
    ) -> Result<u32, VmmError> {
        if boost != 0 {
            self.boost_pending(kind, target, boost);
        }
        let rec = EventRec { kind, target, flags, boost, seq: 0, scheduled_at: self.sched.now(), cb };
        self.run_event(EventHandle::from_raw(0), rec, true, false);
        Ok(0)
    }

    /// The boost of a VM event that is about to wait or run: a priority
    /// event's is an event boost (no critical operation); a restricted
    /// event's is the VM's own, as `Adjust_Exec_Priority` gives it; a
    /// global restricted event's waits until the event runs.
    #[cold]
    #[inline(never)]
    fn boost_pending(&self, kind: EventKind, target: VmId, boost: i32) {
        match kind {
            EventKind::Restricted if target.is_none() => {}
            EventKind::Restricted => self.add_boost(target, boost as i64, PriorityReason::Event),
            _ => self.event_boost(target, boost as i64, PriorityReason::Event),
        }
    }

    pub(crate) fn at_interrupt(&self) -> bool {
        self.context() == Context::Interrupt
    }

    /// `Call_Priority_VM_Event` after its arguments were checked: run `cb`
    /// inline when the DDK allows it (not at interrupt time, `vm` current, no
    /// `PEF_Always_Sched`, the wait conditions hold now), else schedule it.
    /// Returns 0 when it ran, else the event handle. SHELL schedules its own
    /// events (`_SHELL_PostMessage`, `SHELL_Message`) through here too.
    #[inline(always)]
    pub(crate) fn priority_event(
        &self,
        caller: InstanceId,
        boost: i32,
        vm: VmId,
        flags: u32,
        timeout_ms: u32,
        cb: Callback,
    ) -> Result<u32, VmmError> {
        let inline = !self.at_interrupt()
            && vm == self.cur_vm.get()
            && flags & PEF_ALWAYS_SCHED == 0
            && self.vms.borrow().get(vm).is_some_and(|v| v.schedulable())
            && self.conditions(vm).allow_flags(flags);
        if inline {
            return self.run_inline(EventKind::Priority, vm, flags, boost, cb);
        }
        let timeout = (flags & PEF_TIME_OUT != 0).then_some(timeout_ms);
        self.schedule(caller, EventKind::Priority, vm, flags, boost, timeout, cb)
    }
}

impl Core {
    /// `Call_Restricted_Event` (4.0) after its arguments were checked: `vm`
    /// 0 makes a global event. It runs inline when nothing stands in the
    /// way (not at interrupt time, the target current or the event global,
    /// no `PEF_Always_Sched`, the current VM schedulable and meeting the
    /// restrictions now), else it waits; with `PEF_Time_Out` it runs after
    /// `timeout_ms` anyway (carry set). Returns 0 when it ran, else the
    /// event handle.
    pub(crate) fn restricted_event(
        &self,
        caller: InstanceId,
        boost: i32,
        vm: VmId,
        flags: u32,
        timeout_ms: u32,
        cb: Callback,
    ) -> Result<u32, VmmError> {
        let cur = self.cur_vm.get();
        let inline = !self.at_interrupt()
            && (vm.is_none() || vm == cur)
            && flags & PEF_ALWAYS_SCHED == 0
            && self.vms.borrow().get(cur).is_some_and(|v| v.schedulable())
            && self.restrictions_met(cur, vm, flags, boost);
        if inline {
            return self.run_inline(EventKind::Restricted, vm, flags, boost, cb);
        }
        let timeout = (flags & PEF_TIME_OUT != 0).then_some(timeout_ms);
        self.schedule(caller, EventKind::Restricted, vm, flags, boost, timeout, cb)
    }

    /// Whether `cur` meets a restricted event's conditions now, counting
    /// the boost a VM event would add to its VM before it runs (a VM event
    /// boosted to `Critical_Section_Boost` never meets `PEF_Wait_Not_Crit`).
    fn restrictions_met(&self, cur: VmId, vm: VmId, flags: u32, boost: i32) -> bool {
        let mut c = self.conditions(cur);
        if !vm.is_none() && boost > 0 {
            let p = self.vms.borrow().get(cur).map_or(0, |v| v.crit_priority() as i64) + boost as i64;
            c.not_crit &= p < vmm_plugin_api::ddk::CRITICAL_SECTION_BOOST as i64;
            c.not_hw_int &= p < vmm_plugin_api::ddk::TIME_CRITICAL_BOOST as i64;
        }
        c.allow_flags(flags)
    }
}
