//! Service hooks (`Hook_Device_Service`, `Unhook_Device_Service`): for
//! each hooked service (its `(device ID << 16) | ordinal` dword), the
//! chain of hooks, the newest on top. A `VxDCall` of a hooked service
//! calls the top hook; each hook may chain to the one below it, and the
//! bottom one to the service itself. The machine calls the hooks
//! (`dispatch.rs`); this file owns the chains and their rules.
//!
//! A hook installed as a Windows 95 `HOOK_PROC` can be unhooked; an
//! old-style hook (Windows 3.1's only kind) cannot be, and it blocks the
//! unhooking of every hook below it (the VMM cannot re-link around it).

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;

use vmm_plugin_api::abi::ServiceCall;

use crate::vmm::callback::{Callback, SharedCall};
use crate::vmm::ids::InstanceId;

/// One hook of a chain.
struct Hook {
    handle: u32,
    cb: Callback,
    hook_proc: bool,
}

/// What comes after a hook (or the top of a chain) when a call runs down
/// the chain.
pub(crate) enum Next {
    /// This hook: its handle and entry.
    Hook(u32, SharedCall),
    /// The hooked service itself.
    Service,
    /// The hook named is no longer in the chain (it was unhooked).
    Gone,
}

/// Why `Unhook_Device_Service` failed.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum UnhookError {
    /// No such hook on that service.
    NotFound,
    /// An old-style hook (not a `HOOK_PROC`) is above it.
    OldStyleAbove,
}

/// A hooked call in flight: the call's registers and arguments (owned by
/// the caller of the service, alive until the chain returns) and who
/// called the service.
#[derive(Copy, Clone)]
struct Frame {
    call: *mut ServiceCall,
    caller: InstanceId,
}

/// Every service hook, and the hooked calls in flight.
#[derive(Default)]
pub(crate) struct ServiceHooks {
    /// Some service is hooked (the one check an unhooked `VxDCall` pays).
    any: Cell<bool>,
    chains: RefCell<BTreeMap<u32, Vec<Hook>>>,
    /// The last handle given (handles are never reused within a run).
    last: Cell<u32>,
    frames: RefCell<Vec<Frame>>,
    /// Hooks removed while a hooked call ran: released once none runs.
    retired: RefCell<Vec<Callback>>,
}

/// The service dword without `VxDJmp`'s bit 15.
pub(crate) fn normalize(service: u32) -> u32 {
    service & 0xFFFF_7FFF
}

impl ServiceHooks {
    /// Whether any service is hooked.
    #[inline(always)]
    pub(crate) fn any(&self) -> bool {
        self.any.get()
    }

    /// Whether `service` is hooked.
    pub(crate) fn hooked(&self, service: u32) -> bool {
        self.chains.borrow().contains_key(&normalize(service))
    }

    /// Put `cb` on top of `service`'s chain; its handle (`None` when the
    /// handles ran out).
    pub(crate) fn hook(&self, service: u32, cb: Callback, hook_proc: bool) -> Option<u32> {
        let handle = self.last.get().checked_add(1)?;
        self.last.set(handle);
        self.chains.borrow_mut().entry(normalize(service)).or_default().push(Hook { handle, cb, hook_proc });
        self.any.set(true);
        Some(handle)
    }

    /// Take hook `handle` out of `service`'s chain: possible when every
    /// hook above it is a `HOOK_PROC`. Its callback, to release.
    pub(crate) fn unhook(&self, service: u32, handle: u32) -> Result<Callback, UnhookError> {
        let service = normalize(service);
        let mut chains = self.chains.borrow_mut();
        let chain = chains.get_mut(&service).ok_or(UnhookError::NotFound)?;
        let at = chain.iter().position(|h| h.handle == handle).ok_or(UnhookError::NotFound)?;
        if chain[at + 1..].iter().any(|h| !h.hook_proc) {
            return Err(UnhookError::OldStyleAbove);
        }
        let hook = chain.remove(at);
        if chain.is_empty() {
            chains.remove(&service);
        }
        self.any.set(!chains.is_empty());
        Ok(hook.cb)
    }

    /// Take out every hook `owner` installed (unload): (service, handle,
    /// callback) of each.
    pub(crate) fn remove_owned_by(&self, owner: InstanceId) -> Vec<(u32, u32, Callback)> {
        let mut chains = self.chains.borrow_mut();
        let mut out = Vec::new();
        for (&service, chain) in chains.iter_mut() {
            let mut i = 0;
            while i < chain.len() {
                if chain[i].cb.owner() == owner {
                    let h = chain.remove(i);
                    out.push((service, h.handle, h.cb));
                } else {
                    i += 1;
                }
            }
        }
        chains.retain(|_, c| !c.is_empty());
        self.any.set(!chains.is_empty());
        out
    }

    /// What runs after hook `below` of `service` (`None`: the top of the
    /// chain).
    pub(crate) fn next(&self, service: u32, below: Option<u32>) -> Next {
        let chains = self.chains.borrow();
        let Some(chain) = chains.get(&normalize(service)) else {
            return if below.is_none() { Next::Service } else { Next::Gone };
        };
        let at = match below {
            None => chain.len(),
            Some(handle) => match chain.iter().position(|h| h.handle == handle) {
                Some(at) => at,
                None => return Next::Gone,
            },
        };
        match at.checked_sub(1).map(|i| &chain[i]) {
            Some(h) => match h.cb.shared() {
                Some(entry) => Next::Hook(h.handle, entry),
                None => Next::Service,
            },
            None => Next::Service,
        }
    }

    /// A hooked call begins running hooks.
    pub(crate) fn enter(&self, call: *mut ServiceCall, caller: InstanceId) {
        self.frames.borrow_mut().push(Frame { call, caller });
    }

    /// The innermost hooked call ended: once none runs, retired hooks are
    /// released (returned, to drop outside the borrow).
    pub(crate) fn leave(&self) -> Vec<Callback> {
        let mut frames = self.frames.borrow_mut();
        frames.pop();
        if frames.is_empty() { std::mem::take(&mut *self.retired.borrow_mut()) } else { Vec::new() }
    }

    /// The innermost hooked call: its registers and arguments, and the
    /// original caller of the service.
    pub(crate) fn current(&self) -> Option<(*mut ServiceCall, InstanceId)> {
        self.frames.borrow().last().map(|f| (f.call, f.caller))
    }

    /// Release `cb` now, or once no hooked call runs (its code may be on
    /// the stack).
    pub(crate) fn retire(&self, cb: Callback) -> Option<Callback> {
        if self.frames.borrow().is_empty() {
            return Some(cb);
        }
        self.retired.borrow_mut().push(cb);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vmm::callback::TestHost;

    fn cb() -> Callback {
        Callback::host(InstanceId::HOST, "test", |_: &TestHost, _| vmm_plugin_api::abi::Carry::Clear)
    }

    #[test]
    fn unhooking_needs_hook_procs_above() {
        let hooks = ServiceHooks::default();
        let x = hooks.hook(0x3FF0_0001, cb(), true).unwrap();
        let y = hooks.hook(0x3FF0_0001, cb(), false).unwrap();
        assert!(hooks.any() && hooks.hooked(0x3FF0_8001));
        assert_eq!(hooks.unhook(0x3FF0_0001, x).err(), Some(UnhookError::OldStyleAbove));
        assert_eq!(hooks.unhook(0x3FF0_0002, x).err(), Some(UnhookError::NotFound));
        assert!(hooks.unhook(0x3FF0_0001, y).is_ok());
        assert!(hooks.unhook(0x3FF0_0001, x).is_ok());
        assert!(!hooks.any());
        assert_eq!(hooks.unhook(0x3FF0_0001, x).err(), Some(UnhookError::NotFound));
    }
}
