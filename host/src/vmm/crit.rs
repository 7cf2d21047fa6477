//! The critical section (one, global, with a claim count and an owner VM)
//! and semaphores: their state and rules. Both block a VM, never the host
//! thread; the machine (`machine/crit.rs`) marks a VM that must wait as
//! blocked, traces each step and runs the other VMs.

use std::collections::VecDeque;

use crate::vmm::callback::Callback;
use crate::vmm::ids::{InstanceId, VmId};
use crate::vmm::slab::{Handle, Slab, TAG_SEMAPHORE};

/// A semaphore's handle (`Create_Semaphore`).
pub(crate) type SemaphoreHandle = Handle<Semaphore>;

/// The global critical section.
#[derive(Default)]
pub(crate) struct CritSection {
    /// The owning VM.
    owner: Option<VmId>,
    /// Claim count.
    claims: u32,
    /// VMs waiting for it, with the claims each asked for.
    waiters: VecDeque<(VmId, u32)>,
    /// `Call_When_Not_Critical` registrations, oldest first.
    not_critical: Vec<Callback>,
    /// A release happened and the newest `Call_When_Not_Critical` callback
    /// has not run for it yet.
    release_pending: bool,
}

/// What a claim by `vm` finds.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum Claim {
    /// The section is free: `take` it.
    Free,
    /// `vm` owns it: add the claims (`add_claims`).
    Owned { claims: u32 },
    /// Another VM owns it: `vm` waits.
    Busy,
}

/// A release the rules refuse.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum ReleaseError {
    /// `vm` does not own the section (`CRIT_NOT_OWNED`).
    NotOwned { owner: Option<VmId> },
    /// More claims than there are (`CRIT_COUNT`).
    TooMany { claims: u32 },
}

impl CritSection {
    /// The owning VM, if any.
    pub(crate) fn owner(&self) -> Option<VmId> {
        self.owner
    }

    /// The claim count (0 when free).
    pub(crate) fn claims(&self) -> u32 {
        self.claims
    }

    /// What a claim by `vm` finds.
    pub(crate) fn claim(&self, vm: VmId) -> Claim {
        match self.owner {
            None => Claim::Free,
            Some(o) if o == vm => Claim::Owned { claims: self.claims },
            Some(_) => Claim::Busy,
        }
    }

    /// Give the free section to `vm` with `count` claims.
    pub(crate) fn take(&mut self, vm: VmId, count: u32) {
        debug_assert!(self.owner.is_none(), "the critical section is taken while owned");
        self.owner = Some(vm);
        self.claims = count;
    }

    /// Set the owner's claim count to `total` (checked by the caller
    /// against the dword range).
    pub(crate) fn set_claims(&mut self, total: u32) {
        self.claims = total;
    }

    /// `vm` waits for `count` claims, after the VMs already waiting.
    pub(crate) fn wait(&mut self, vm: VmId, count: u32) {
        self.waiters.push_back((vm, count));
    }

    /// Release `count` of `vm`'s claims. `Ok(true)` when the section became
    /// free: the caller hands it to [`Self::next_waiter`] or marks the
    /// release for `Call_When_Not_Critical`.
    pub(crate) fn release(&mut self, vm: VmId, count: u32) -> Result<bool, ReleaseError> {
        if self.owner != Some(vm) {
            return Err(ReleaseError::NotOwned { owner: self.owner });
        }
        if count > self.claims {
            return Err(ReleaseError::TooMany { claims: self.claims });
        }
        self.claims -= count;
        if self.claims == 0 {
            self.owner = None;
            return Ok(true);
        }
        Ok(false)
    }

    /// The first VM waiting, with the claims it asked for.
    pub(crate) fn next_waiter(&mut self) -> Option<(VmId, u32)> {
        self.waiters.pop_front()
    }

    /// A dying VM stops waiting.
    pub(crate) fn forget_waiter(&mut self, vm: VmId) {
        self.waiters.retain(|(w, _)| *w != vm);
    }

    /// The section was freed with nobody waiting: the newest
    /// `Call_When_Not_Critical` registration is due.
    pub(crate) fn mark_released(&mut self) {
        self.release_pending = true;
    }

    /// `Call_When_Not_Critical`: register `cb`.
    pub(crate) fn call_when_not_critical(&mut self, cb: Callback) {
        self.not_critical.push(cb);
    }

    /// Whether a `Call_When_Not_Critical` callback is due: a release
    /// happened, the section is free and a registration waits.
    pub(crate) fn not_critical_due(&self) -> bool {
        self.release_pending && self.owner.is_none() && !self.not_critical.is_empty()
    }

    /// The newest registration, taken for the release it answers.
    pub(crate) fn take_not_critical(&mut self) -> Option<Callback> {
        self.release_pending = false;
        self.not_critical.pop()
    }

    /// Remove the registrations of `instance` (an unloading device) and
    /// return them.
    pub(crate) fn remove_not_critical_of(&mut self, instance: InstanceId) -> Vec<Callback> {
        let (mine, others) = std::mem::take(&mut self.not_critical).into_iter().partition(|cb| cb.owner() == instance);
        self.not_critical = others;
        mine
    }
}

/// A semaphore.
pub(crate) struct Semaphore {
    /// Tokens (may be negative only at creation).
    tokens: i32,
    /// VMs waiting, in order.
    waiters: VecDeque<VmId>,
    /// The instance that created it.
    owner: InstanceId,
}

/// What `Wait_Semaphore` finds.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum SemWait {
    /// A token was taken; `tokens` are left.
    Took { tokens: i32, owner: InstanceId },
    /// No token: the VM is queued and must block.
    Queued { owner: InstanceId },
}

/// What `Signal_Semaphore` did.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum SemSignal {
    /// The first waiter is woken (the token goes to it).
    Woke { vm: VmId, tokens: i32, owner: InstanceId },
    /// Nobody waited: the semaphore has one more token.
    Added { tokens: i32, owner: InstanceId },
}

/// The semaphore table: handles are slab handles tagged as semaphores.
pub(crate) struct Semaphores {
    table: Slab<Semaphore>,
}

impl Default for Semaphores {
    fn default() -> Self {
        Semaphores { table: Slab::new(TAG_SEMAPHORE) }
    }
}

impl Semaphores {
    /// `Create_Semaphore`: `None` when the table is full.
    pub(crate) fn create(&mut self, owner: InstanceId, tokens: i32) -> Option<SemaphoreHandle> {
        self.table.insert(Semaphore { tokens, waiters: VecDeque::new(), owner })
    }

    /// `Destroy_Semaphore`: the semaphore's tokens, creator and the VMs
    /// that were waiting on it (the caller releases them).
    pub(crate) fn destroy(&mut self, h: SemaphoreHandle) -> Option<(i32, InstanceId, VecDeque<VmId>)> {
        self.table.remove(h).map(|s| (s.tokens, s.owner, s.waiters))
    }

    /// Whether `h` names a live semaphore.
    pub(crate) fn contains(&self, h: SemaphoreHandle) -> bool {
        self.table.contains(h)
    }

    /// The token count of `h`.
    pub(crate) fn tokens(&self, h: SemaphoreHandle) -> Option<i32> {
        self.table.get(h).map(|s| s.tokens)
    }

    /// `Wait_Semaphore` by `vm`; `None` for a stale handle.
    pub(crate) fn wait(&mut self, h: SemaphoreHandle, vm: VmId) -> Option<SemWait> {
        let s = self.table.get_mut(h)?;
        if s.tokens > 0 {
            s.tokens -= 1;
            Some(SemWait::Took { tokens: s.tokens, owner: s.owner })
        } else {
            s.waiters.push_back(vm);
            Some(SemWait::Queued { owner: s.owner })
        }
    }

    /// `Signal_Semaphore`; `None` for a stale handle. The caller checks the
    /// token count's range first.
    pub(crate) fn signal(&mut self, h: SemaphoreHandle) -> Option<SemSignal> {
        let s = self.table.get_mut(h)?;
        Some(match s.waiters.pop_front() {
            Some(vm) => SemSignal::Woke { vm, tokens: s.tokens, owner: s.owner },
            None => {
                s.tokens += 1;
                SemSignal::Added { tokens: s.tokens, owner: s.owner }
            }
        })
    }

    /// The semaphores `instance` created.
    pub(crate) fn owned_by(&self, instance: InstanceId) -> Vec<SemaphoreHandle> {
        self.table.iter().filter(|(_, s)| s.owner == instance).map(|(h, _)| h).collect()
    }

    /// A dying VM stops waiting on every semaphore.
    pub(crate) fn forget_waiter(&mut self, vm: VmId) {
        for (_, s) in self.table.iter_mut() {
            s.waiters.retain(|w| *w != vm);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vm(n: u32) -> VmId {
        VmId::from_raw(n)
    }

    #[test]
    fn the_section_is_owned_until_its_last_claim_is_released() {
        let mut c = CritSection::default();
        assert_eq!(c.claim(vm(1)), Claim::Free);
        c.take(vm(1), 2);
        assert_eq!(c.claim(vm(1)), Claim::Owned { claims: 2 });
        assert_eq!(c.claim(vm(2)), Claim::Busy);
        c.wait(vm(2), 1);
        assert_eq!(c.release(vm(2), 1), Err(ReleaseError::NotOwned { owner: Some(vm(1)) }));
        assert_eq!(c.release(vm(1), 3), Err(ReleaseError::TooMany { claims: 2 }));
        assert_eq!(c.release(vm(1), 1), Ok(false));
        assert_eq!(c.release(vm(1), 1), Ok(true));
        assert_eq!((c.owner(), c.claims()), (None, 0));
        assert_eq!(c.next_waiter(), Some((vm(2), 1)));
        assert_eq!(c.next_waiter(), None);
    }

    #[test]
    fn semaphores_queue_waiters_in_order_and_hand_tokens_to_them() {
        let mut s = Semaphores::default();
        let h = s.create(InstanceId::from_raw(7), 1).unwrap();
        assert_eq!(s.wait(h, vm(1)), Some(SemWait::Took { tokens: 0, owner: InstanceId::from_raw(7) }));
        assert_eq!(s.wait(h, vm(2)), Some(SemWait::Queued { owner: InstanceId::from_raw(7) }));
        assert_eq!(s.wait(h, vm(3)), Some(SemWait::Queued { owner: InstanceId::from_raw(7) }));
        s.forget_waiter(vm(2));
        assert_eq!(s.signal(h), Some(SemSignal::Woke { vm: vm(3), tokens: 0, owner: InstanceId::from_raw(7) }));
        assert_eq!(s.signal(h), Some(SemSignal::Added { tokens: 1, owner: InstanceId::from_raw(7) }));
        assert_eq!(s.owned_by(InstanceId::from_raw(7)), [h]);
        let (tokens, owner, waiters) = s.destroy(h).unwrap();
        assert_eq!((tokens, owner, waiters.len()), (1, InstanceId::from_raw(7), 0));
        assert!(!s.contains(h) && s.wait(h, vm(1)).is_none() && s.signal(h).is_none());
    }
}
