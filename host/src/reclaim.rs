//! Unload hygiene. Windows 95's VXDLDR "performs no cleanup": a dynamic
//! VxD that unloads with an event pending, a time-out set, a hook
//! installed or heap memory allocated leaves the VMM holding pointers into
//! code that is gone (Driver Verifier's bug check 0xCE). The host knows
//! every such item by its owner, so at unload it cancels or frees each one,
//! reports it as an `UNLOAD_LEAK` violation naming what it was (the list is
//! the author's to fix), and the instance's callbacks can never run again.

use crate::machine::Core;
use crate::trace::CancelReason;
use crate::violation::Violation;
use crate::vmm::ids::InstanceId;

impl Core {
    /// Cancel or free everything `instance` (device `name`) still owns;
    /// how many items there were.
    pub(crate) fn reclaim(&self, instance: InstanceId, name: &str) -> u32 {
        let mut leaks: Vec<String> = Vec::new();

        // Events (including Call_When_VM_Ints_Enabled), oldest first.
        let events: Vec<(crate::vmm::events::EventHandle, &'static str, String)> =
            self.sched.events_where(|h, e| (e.cb.owner() == instance).then(|| (h, e.kind.name(), e.cb.name())));
        for (h, kind, callback) in events {
            self.cancel_event(h, CancelReason::Unloaded);
            leaks.push(format!("a pending {kind} event ({callback}, handle {h:#010X})"));
        }

        // Time-outs.
        let timeouts: Vec<(crate::vmm::timers::TimeoutHandle, u32, String)> =
            self.sched.timeouts_where(|h, r| (r.cb.owner() == instance).then(|| (h, r.ms, r.cb.name())));
        for (h, ms, callback) in timeouts {
            self.cancel_timeout(h, CancelReason::Unloaded);
            leaks.push(format!("a {ms} ms time-out ({callback}, handle {h:#010X})"));
        }

        // Call_When_Not_Critical registrations.
        let not_critical: Vec<String> =
            self.crit.borrow_mut().remove_not_critical_of(instance).iter().map(|cb| cb.name()).collect();
        for callback in not_critical {
            leaks.push(format!("a Call_When_Not_Critical registration ({callback})"));
        }

        // Call_When_Task_Switched and Call_When_Idle hooks.
        let hooks: Vec<String> = {
            let mut guard = self.hooks.borrow_mut();
            let hooks = &mut *guard;
            let mut found = Vec::new();
            for (kind, list) in
                [("Call_When_Task_Switched", &mut hooks.task_switched), ("Call_When_Idle", &mut hooks.idle)]
            {
                for slot in list.iter_mut() {
                    if slot.as_ref().is_some_and(|cb| cb.owner() == instance) {
                        let cb = slot.take();
                        found.push(format!("a {kind} hook ({})", cb.map(|c| c.name()).unwrap_or_default()));
                    }
                }
            }
            found
        };
        leaks.extend(hooks);

        // Service hooks (Hook_Device_Service).
        for (service, handle, cb) in self.service_hooks.remove_owned_by(instance) {
            leaks.push(format!("a hook on service {service:#010X} ({}, handle {handle})", cb.name()));
            let now = self.service_hooks.retire(cb);
            drop(now);
        }

        // I/O handlers (`Remove_IO_Handler` was not called).
        leaks.extend(self.io_reclaim(instance));
        leaks.extend(self.vpicd_reclaim(instance));

        // Interrupt and fault hooks, Call_When_VM_Returns registrations,
        // call-backs' callbacks.
        leaks.extend(self.vectors_reclaim(instance));

        // Interrupt sources.
        for irq in self.irqs.remove_owned_by(instance) {
            leaks.push(format!("the interrupt source `{irq}`"));
        }

        // Semaphores (VMs waiting on one are released).
        let sems = self.sems.borrow().owned_by(instance);
        for h in sems {
            let _ = self.as_caller(instance, || self.destroy_semaphore(h));
            leaks.push(format!("semaphore {h:#010X}"));
        }

        // Appy-time requests and broadcast hooks (SHELL).
        leaks.extend(self.shell_reclaim(instance, name));

        // Heap blocks.
        let blocks = self.heap.borrow().blocks_of(instance);
        for (addr, size) in blocks {
            self.heap.borrow_mut().free(addr);
            leaks.push(format!("a {size}-byte heap block at {addr:#010X}"));
        }

        let n = leaks.len() as u32;
        for what in leaks {
            self.as_caller(instance, || {
                self.violation(
                    Violation::UnloadLeak,
                    format!(
                        "{name} left {what} at unload; VXDLDR performs no cleanup, so release it in \
                         Sys_Dynamic_Device_Exit (the host has cancelled it)"
                    ),
                    None,
                )
            });
        }
        n
    }
}
