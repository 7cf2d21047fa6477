//! The machine's side of the critical section and semaphores
//! (`vmm/crit.rs` holds their state and rules): boosts, blocking the
//! waiting VM and running the others, trace records and violations; and
//! the VM states they use (blocked, suspended).

use vmm_plugin_api::abi::VmmError;
use vmm_plugin_api::ddk::{CRITICAL_SECTION_BOOST, VM_SUSPEND, VMSTAT_BLOCKED};

use crate::machine::Core;
use crate::machine::run::LoopEnd;
use crate::trace::{PriorityReason, TraceEvent};
use crate::violation::Violation;
use crate::vmm::context::Context;
use crate::vmm::crit::SemaphoreHandle;
use crate::vmm::crit::{Claim, ReleaseError, SemSignal, SemWait};
use crate::vmm::ids::{InstanceId, VmId};
use crate::vmm::vm::Blocked;

impl Core {
    fn crit_trace(&self, action: &'static str, vm: VmId) {
        self.crit_trace_flags(action, vm, 0);
    }

    fn crit_trace_flags(&self, action: &'static str, vm: VmId, flags: u32) {
        let claims = self.crit.borrow().claims();
        self.trace(|| TraceEvent::CritSection { action, vm: vm.raw(), claims, flags });
    }

    /// Give the critical section to `vm` with `count` claims (it is free).
    fn crit_take(&self, vm: VmId, count: u32, action: &'static str) {
        self.crit.borrow_mut().take(vm, count);
        self.add_boost(vm, CRITICAL_SECTION_BOOST as i64, PriorityReason::CriticalSection);
        self.crit_trace(action, vm);
    }

    /// Claim the critical section for the current VM, blocking it (other
    /// VMs run meanwhile) while another VM owns it.
    /// `flags` are the wait's `BLOCK_*` flags.
    pub(crate) fn claim_critical(&self, service: &'static str, count: u32, flags: u32) -> Result<(), VmmError> {
        let vm = self.cur_vm.get();
        let claim = self.crit.borrow().claim(vm);
        match claim {
            Claim::Free => {
                self.crit_take(vm, count, "claim");
                Ok(())
            }
            Claim::Owned { claims } => {
                self.add_claims(service, claims, count)?;
                self.crit_trace("claim", vm);
                Ok(())
            }
            Claim::Busy => {
                self.crit.borrow_mut().wait(vm, count);
                self.block(vm, Blocked::Crit, flags);
                self.crit_trace_flags("wait", vm, flags);
                self.wait_unblocked(vm)
            }
        }
    }

    /// Claim the critical section for `vm` from outside its code (an
    /// `[[action]]`, INT 2Fh 1681h from a program): a VM that must wait is
    /// marked blocked and gets the section when it is released.
    pub(crate) fn vm_begin_critical(&self, vm: VmId) {
        let claim = self.crit.borrow().claim(vm);
        match claim {
            Claim::Free => self.crit_take(vm, 1, "claim"),
            Claim::Owned { claims } => {
                if self.add_claims("INT 2Fh AX=1681h", claims, 1).is_ok() {
                    self.crit_trace("claim", vm);
                }
            }
            Claim::Busy => {
                self.crit.borrow_mut().wait(vm, 1);
                self.block(vm, Blocked::Crit, 0);
                self.crit_trace("wait", vm);
            }
        }
    }

    /// Add `count` claims to the owner's: the claim count is a dword and
    /// never wraps.
    fn add_claims(&self, service: &'static str, claims: u32, count: u32) -> Result<(), VmmError> {
        let total = self.count_add(
            service,
            "the critical section's claim count",
            claims.into(),
            count.into(),
            u32::MAX.into(),
        )?;
        self.crit.borrow_mut().set_claims(total as u32);
        Ok(())
    }

    /// Release `count` claims of `vm`; at zero the section is free (or
    /// handed to the first waiter).
    pub(crate) fn end_critical_for(&self, vm: VmId, count: u32, service: &'static str) -> Result<(), VmmError> {
        let released = self.crit.borrow_mut().release(vm, count);
        match released {
            Err(ReleaseError::NotOwned { owner }) => Err(self.refuse(
                Violation::CritNotOwned,
                format!("{service} by a VM that does not own the critical section (owner: {owner:?})"),
                Some(service),
            )),
            Err(ReleaseError::TooMany { claims }) => Err(self.refuse(
                Violation::CritCount,
                format!("{service} releases {count} claims but the critical section has only {claims}"),
                Some(service),
            )),
            Ok(true) => {
                self.crit_freed(vm);
                Ok(())
            }
            Ok(false) => {
                self.crit_trace("release", vm);
                Ok(())
            }
        }
    }

    /// The section was freed by `vm`: hand it to the first waiter, or mark
    /// the release for `Call_When_Not_Critical`.
    fn crit_freed(&self, vm: VmId) {
        self.add_boost(vm, -(CRITICAL_SECTION_BOOST as i64), PriorityReason::CriticalSection);
        self.crit_trace("release", vm);
        let next = self.crit.borrow_mut().next_waiter();
        match next {
            Some((w, n)) => {
                self.unblock(w);
                self.crit_take(w, n, "grant");
            }
            None => self.crit.borrow_mut().mark_released(),
        }
    }

    /// `End_Crit_And_Suspend`: release the only claim and suspend the
    /// current VM.
    pub(crate) fn end_crit_and_suspend(&self) -> Result<(), VmmError> {
        let vm = self.cur_vm.get();
        let ok = self.crit.borrow().claim(vm) == Claim::Owned { claims: 1 };
        if !ok {
            return Err(VmmError::FAILED);
        }
        if vm == self.sys_vm.get() {
            return Err(self.refuse(
                Violation::SuspendSystemVm,
                "End_Crit_And_Suspend in the system VM, which cannot be suspended",
                Some("End_Crit_And_Suspend"),
            ));
        }
        self.end_critical_for(vm, 1, "End_Crit_And_Suspend")?;
        self.suspend_vm(vm).map(|_| ())
    }

    /// Mark `vm` blocked (VMStat_Blocked) with the wait's `BLOCK_*` flags.
    pub(crate) fn block(&self, vm: VmId, why: Blocked, flags: u32) {
        if let Some(v) = self.vms.borrow_mut().get_mut(vm) {
            v.blocked = Some(why);
            v.block_flags = flags;
            v.status |= VMSTAT_BLOCKED;
            if flags != 0 {
                self.flagged_waits.set(self.flagged_waits.get() + 1);
            }
        }
    }

    pub(crate) fn unblock(&self, vm: VmId) {
        if let Some(v) = self.vms.borrow_mut().get_mut(vm)
            && v.blocked.is_some()
        {
            if v.block_flags != 0 {
                self.flagged_waits.set(self.flagged_waits.get() - 1);
            }
            v.blocked = None;
            v.block_flags = 0;
            v.status &= !VMSTAT_BLOCKED;
        }
    }

    fn is_blocked(&self, vm: VmId) -> bool {
        self.vms.borrow().get(vm).is_some_and(|v| v.blocked.is_some())
    }

    /// Run the other VMs until `vm` is unblocked and scheduled again. A
    /// wait nothing can end is reported by the run loop (`DEADLOCK`, with
    /// every blocked VM and pending event), as soon as it is certain.
    fn wait_unblocked(&self, vm: VmId) -> Result<(), VmmError> {
        let end = self.run_until(&|c: &Core| !c.is_blocked(vm) && c.cur_vm.get() == vm, Some(vm));
        match end {
            LoopEnd::Done => Ok(()),
            LoopEnd::Quiescent => {
                // The loop reports a stuck waiter itself; this is a safety net.
                self.report_deadlock();
                Err(VmmError::FATAL)
            }
            LoopEnd::Stopped | LoopEnd::Fatal => Err(VmmError::FATAL),
        }
    }

    /// `Suspend_VM`: the VM stops being scheduled; VM_Suspend on the first
    /// suspension.
    pub(crate) fn suspend_vm(&self, vm: VmId) -> Result<u32, VmmError> {
        let current = self.vms.borrow().get(vm).map(|v| v.suspend_count).ok_or(VmmError::INVALID_HANDLE)?;
        let count = self.count_add("Suspend_VM", "the VM's suspend count", current.into(), 1, u32::MAX.into())? as u32;
        if let Some(v) = self.vms.borrow_mut().get_mut(vm) {
            v.suspend_count = count;
        }
        if count == 1 {
            self.trace(|| TraceEvent::VmSuspend { vm: vm.raw(), suspended: true });
            self.broadcast_vm_message(VM_SUSPEND, vm, 0, Context::Control);
        }
        Ok(count)
    }

    /// `Resume_VM`: on the last resume, VM_Resume; a device that fails it
    /// backs the resume out (the VM stays suspended, CF set).
    pub(crate) fn resume_vm(&self, vm: VmId, no_fail: bool) -> Result<(), VmmError> {
        let count = self.vms.borrow().get(vm).map(|v| v.suspend_count).ok_or(VmmError::INVALID_HANDLE)?;
        if count == 0 {
            return Err(VmmError::FAILED);
        }
        if count == 1 {
            let failed = self.broadcast_vm_message(vmm_plugin_api::ddk::VM_RESUME, vm, 0, Context::Control);
            if failed && !no_fail {
                return Err(VmmError::FAILED);
            }
            self.trace(|| TraceEvent::VmSuspend { vm: vm.raw(), suspended: false });
        }
        if let Some(v) = self.vms.borrow_mut().get_mut(vm) {
            v.suspend_count = v.suspend_count.saturating_sub(1);
        }
        Ok(())
    }

    // ---- semaphores ----------------------------------------------------------------

    pub(crate) fn create_semaphore(&self, owner: InstanceId, tokens: i32) -> Result<SemaphoreHandle, VmmError> {
        let h = self.sems.borrow_mut().create(owner, tokens).ok_or(VmmError::OUT_OF_MEMORY)?;
        self.sem_trace("create", h, self.cur_vm.get(), tokens, owner);
        Ok(h)
    }

    pub(crate) fn destroy_semaphore(&self, h: SemaphoreHandle) -> Result<(), VmmError> {
        let (tokens, owner, waiters) = self.sems.borrow_mut().destroy(h).ok_or(VmmError::INVALID_HANDLE)?;
        self.sem_trace("destroy", h, self.cur_vm.get(), tokens, owner);
        if !waiters.is_empty() {
            self.violation(
                Violation::SemaphoreInUse,
                format!("Destroy_Semaphore while {} VM(s) wait on it; they are released", waiters.len()),
                Some("Destroy_Semaphore"),
            );
            for w in waiters {
                self.unblock(w);
            }
        }
        Ok(())
    }

    fn sem_trace(&self, action: &'static str, handle: SemaphoreHandle, vm: VmId, tokens: i32, owner: InstanceId) {
        self.sem_trace_flags(action, handle, vm, tokens, owner, 0);
    }

    fn sem_trace_flags(
        &self,
        action: &'static str,
        handle: SemaphoreHandle,
        vm: VmId,
        tokens: i32,
        owner: InstanceId,
        flags: u32,
    ) {
        let device = self.instance_name(owner);
        self.trace(|| TraceEvent::Semaphore {
            action,
            handle: handle.raw(),
            vm: vm.raw(),
            tokens,
            device: device.to_string(),
            flags,
        });
    }

    /// `flags` are the wait's `BLOCK_*` flags.
    pub(crate) fn wait_semaphore(&self, h: SemaphoreHandle, flags: u32) -> Result<(), VmmError> {
        let vm = self.cur_vm.get();
        let wait = self.sems.borrow_mut().wait(h, vm).ok_or(VmmError::INVALID_HANDLE)?;
        match wait {
            SemWait::Took { tokens, owner } => {
                self.sem_trace_flags("wait", h, vm, tokens, owner, flags);
                Ok(())
            }
            SemWait::Queued { owner } => {
                self.block(vm, Blocked::Semaphore(h), flags);
                self.sem_trace_flags("block", h, vm, 0, owner, flags);
                self.wait_unblocked(vm)?;
                if self.sems.borrow().contains(h) { Ok(()) } else { Err(VmmError::INVALID_HANDLE) }
            }
        }
    }

    pub(crate) fn signal_semaphore(&self, h: SemaphoreHandle) -> Result<(), VmmError> {
        let tokens = self.sems.borrow().tokens(h).ok_or(VmmError::INVALID_HANDLE)?;
        if tokens == i32::MAX {
            self.count_add("Signal_Semaphore", "the semaphore's token count", tokens.into(), 1, i32::MAX.into())?;
        }
        let signal = self.sems.borrow_mut().signal(h).ok_or(VmmError::INVALID_HANDLE)?;
        match signal {
            SemSignal::Woke { vm, tokens, owner } => {
                self.unblock(vm);
                self.sem_trace("wake", h, vm, tokens, owner);
            }
            SemSignal::Added { tokens, owner } => self.sem_trace("signal", h, self.cur_vm.get(), tokens, owner),
        }
        Ok(())
    }
}
