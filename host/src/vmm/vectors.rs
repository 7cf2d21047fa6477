//! Interrupts inside VMs, as state and rules: the V86 interrupt hook chains
//! (`Hook_V86_Int_Chain`), the fault hook chains (`Hook_V86_Fault`,
//! `Hook_PM_Fault`, `Hook_VMM_Fault`), the protected-mode vector tables
//! (one per VM, written by `Set_PM_Int_Vector` and `Ring3::set_int_vector`
//! alike: the last write wins), the V86 vector tables of VMs whose memory the VMM does not hold (a DOS program's real
//! table lives in its memory; a Rust DOS program's `Ring3::set_int_vector`
//! writes its VM's entry here), the call-backs into ring 0
//! (`Allocate_V86_Call_Back`, `Allocate_PM_Call_Back`) and the
//! `Call_When_VM_Returns` break points.
//!
//! A hook is taken out of its slot while it runs (so a hook that unhooks
//! itself, or hooks again, from inside its call is safe) and put back after
//! it unless it was unhooked meanwhile. The machine (`machine/vectors.rs`)
//! calls the hooks, writes the records and reports the violations.

use std::collections::BTreeMap;

use crate::vmm::callback::Callback;
use crate::vmm::ids::{InstanceId, VmId};

/// The V86 segment of the call-backs `Allocate_V86_Call_Back` hands out
/// (the offset is the call-back's number).
pub(crate) const V86_CALLBACK_SEGMENT: u16 = 0xFD00;
/// The selector of the call-backs `Allocate_PM_Call_Back` hands out.
pub(crate) const PM_CALLBACK_SELECTOR: u16 = 0xFFF6;
/// The V86 segment of the break points `Call_When_VM_Returns` puts in an
/// interrupt frame (the offset is the registration's number).
pub(crate) const RETURN_SEGMENT: u16 = 0xFC00;
/// How many call-backs of each kind there are (the DDK does not say; the
/// VMM's pool is generous and fixed: `FAILED` when it is used up).
pub(crate) const MAX_CALL_BACKS: usize = 1024;
/// How many `Call_When_VM_Returns` registrations may wait at once.
pub(crate) const MAX_RETURNS: usize = 1024;
/// The highest interrupt number a fault hook may take (VDAG30 ch. 28).
pub(crate) const MAX_FAULT: u8 = 0x4F;

/// One hook of a chain.
struct Hook {
    id: u32,
    owner: InstanceId,
    /// `None` while it runs.
    callback: Option<Callback>,
    /// Fault hooks: installed during `Sys_Critical_Init` (behind the
    /// VMM's own handling).
    early: bool,
}

/// A hook taken out of its chain to be called.
pub(crate) struct Taken {
    pub(crate) id: u32,
    pub(crate) owner: InstanceId,
    pub(crate) callback: Callback,
}

/// Which fault chain: faults of V86 code (a DOS program's machine code),
/// of protected-mode ring-3 code (a Rust module's `Ring3::fault`), or of
/// ring-0 code (a device's access to linear memory that is not there).
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum FaultKind {
    V86,
    Pm,
    Vmm,
}

impl FaultKind {
    /// The `mode` of a `fault_hook` record.
    pub(crate) fn mode(self) -> &'static str {
        match self {
            FaultKind::V86 => "v86",
            FaultKind::Pm => "pm",
            FaultKind::Vmm => "vmm",
        }
    }

    /// The service that hooks this chain.
    pub(crate) fn service(self) -> &'static str {
        match self {
            FaultKind::V86 => "Hook_V86_Fault",
            FaultKind::Pm => "Hook_PM_Fault",
            FaultKind::Vmm => "Hook_VMM_Fault",
        }
    }
}

/// Where the hook of a fault chain sits relative to the VMM's own handling.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum FaultStage {
    /// Hooks installed after `Sys_Critical_Init`: called first.
    Front,
    /// Hooks installed during `Sys_Critical_Init`: called only for what the
    /// VMM does not handle.
    Behind,
}

/// A call-back into ring 0.
pub(crate) struct CallBack {
    pub(crate) owner: InstanceId,
    pub(crate) ref_data: u32,
    /// `None` while it runs.
    pub(crate) callback: Option<Callback>,
}

/// A `Call_When_VM_Returns` registration.
pub(crate) struct Return {
    pub(crate) vm: VmId,
    pub(crate) owner: InstanceId,
    pub(crate) ref_data: u32,
    /// The time-out as given (ms; 0 none, negative: call at the time-out
    /// *and* at the return).
    pub(crate) timeout_ms: i32,
    pub(crate) callback: Option<Callback>,
    /// The real return address (`CS << 16 | IP`), once a frame was built.
    pub(crate) original: Option<u32>,
    /// The time-out's timer, while it is pending.
    pub(crate) timer: Option<crate::vmm::timers::TimeoutHandle>,
    /// The time-out was reported.
    pub(crate) timed_out: bool,
}

/// Why a vector service refused.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum VectorError {
    /// The interrupt number is out of range for the service.
    BadNumber,
    /// No such hook (or not the caller's).
    NotFound,
    /// The pool is used up.
    Exhausted,
}

/// All of it; one value in the machine (`Core::vectors`).
#[derive(Default)]
pub(crate) struct Vectors {
    next_id: u32,
    /// V86 interrupt chains: the newest hook last.
    chains: BTreeMap<u8, Vec<Hook>>,
    /// Fault chains, by kind and number: the newest hook last.
    faults: BTreeMap<(FaultKind, u8), Vec<Hook>>,
    /// PM vectors set before `Sys_VM_Init` (every VM's default).
    pm_default: BTreeMap<u8, (u16, u32)>,
    /// PM vectors per VM: the VM's one PM table (its IDT as the VMM
    /// keeps it), whoever wrote the entry; 16:16 values.
    pm: BTreeMap<(VmId, u8), (u16, u32)>,
    /// V86 vectors set before `Sys_VM_Init` (every VM's default table).
    v86_default: BTreeMap<u8, u32>,
    /// V86 vectors of VMs whose memory the VMM does not hold.
    v86: BTreeMap<(VmId, u8), u32>,
    v86_call_backs: Vec<CallBack>,
    pm_call_backs: Vec<CallBack>,
    /// `Call_When_VM_Returns` registrations, by number (the break point's
    /// offset); ended ones are `None` and reused.
    returns: Vec<Option<Return>>,
}

impl Vectors {
    fn new_id(&mut self) -> u32 {
        self.next_id += 1;
        self.next_id
    }

    /// Whether anything hooks V86 interrupt `n`: one map lookup, the whole
    /// cost of an unhooked interrupt.
    #[inline]
    pub(crate) fn hooked(&self, n: u8) -> bool {
        self.chains.get(&n).is_some_and(|c| !c.is_empty())
    }

    /// `Hook_V86_Int_Chain`: the hook's handle.
    pub(crate) fn hook_int(&mut self, n: u8, owner: InstanceId, callback: Callback) -> u32 {
        let id = self.new_id();
        self.chains.entry(n).or_default().push(Hook { id, owner, callback: Some(callback), early: false });
        id
    }

    /// `Unhook_V86_Int_Chain`: the hook `id` of `owner` on `n` (dropped
    /// after its call if it is running).
    pub(crate) fn unhook_int(&mut self, n: u8, owner: InstanceId, id: u32) -> Result<Option<Callback>, VectorError> {
        let chain = self.chains.get_mut(&n).ok_or(VectorError::NotFound)?;
        let at = chain.iter().position(|h| h.id == id && h.owner == owner).ok_or(VectorError::NotFound)?;
        Ok(chain.remove(at).callback)
    }

    /// The handles of the hooks on `n`, newest first: the order of a call.
    pub(crate) fn int_chain(&self, n: u8) -> Vec<u32> {
        self.chains.get(&n).map_or_else(Vec::new, |c| c.iter().rev().map(|h| h.id).collect())
    }

    /// Take hook `id` of `n` out to call it (`None`: unhooked meanwhile,
    /// or running already).
    pub(crate) fn take_int(&mut self, n: u8, id: u32) -> Option<Taken> {
        take(self.chains.get_mut(&n)?, id)
    }

    /// Put a hook back after its call (dropped if it was unhooked).
    pub(crate) fn put_int(&mut self, n: u8, taken: Taken) -> Option<Callback> {
        match self.chains.get_mut(&n) {
            Some(chain) => put(chain, taken),
            None => Some(taken.callback),
        }
    }

    /// `Hook_V86_Fault` / `Hook_PM_Fault`: the hook's handle and the handle
    /// of the hook it sits in front of (0: none).
    pub(crate) fn hook_fault(
        &mut self,
        kind: FaultKind,
        n: u8,
        owner: InstanceId,
        callback: Callback,
        early: bool,
    ) -> Result<(u32, u32), VectorError> {
        if n == 2 || n > MAX_FAULT {
            return Err(VectorError::BadNumber);
        }
        let id = self.new_id();
        let chain = self.faults.entry((kind, n)).or_default();
        let previous = chain.iter().rev().find(|h| h.early == early).map_or(0, |h| h.id);
        chain.push(Hook { id, owner, callback: Some(callback), early });
        Ok((id, previous))
    }

    /// `Unhook_V86_Fault` / `Unhook_PM_Fault`.
    pub(crate) fn unhook_fault(
        &mut self,
        kind: FaultKind,
        n: u8,
        owner: InstanceId,
        id: u32,
    ) -> Result<Option<Callback>, VectorError> {
        if n == 2 || n > MAX_FAULT {
            return Err(VectorError::BadNumber);
        }
        let chain = self.faults.get_mut(&(kind, n)).ok_or(VectorError::NotFound)?;
        let at = chain.iter().position(|h| h.id == id && h.owner == owner).ok_or(VectorError::NotFound)?;
        Ok(chain.remove(at).callback)
    }

    /// The fault hooks of `stage` on `n`, newest first.
    pub(crate) fn fault_chain(&self, kind: FaultKind, n: u8, stage: FaultStage) -> Vec<u32> {
        let early = stage == FaultStage::Behind;
        self.faults
            .get(&(kind, n))
            .map_or_else(Vec::new, |c| c.iter().rev().filter(|h| h.early == early).map(|h| h.id).collect())
    }

    /// `Get_Fault_Hook_Addrs`: the hook of `kind` a fault `n` is offered
    /// to first (the newest in front, else the newest behind), 0 when the
    /// VMM's own handling comes first.
    pub(crate) fn first_fault_hook(&self, kind: FaultKind, n: u8) -> u32 {
        let Some(chain) = self.faults.get(&(kind, n)) else { return 0 };
        let newest = |early: bool| chain.iter().rev().find(|h| h.early == early).map(|h| h.id);
        newest(false).or_else(|| newest(true)).unwrap_or(0)
    }

    pub(crate) fn take_fault(&mut self, kind: FaultKind, n: u8, id: u32) -> Option<Taken> {
        take(self.faults.get_mut(&(kind, n))?, id)
    }

    pub(crate) fn put_fault(&mut self, kind: FaultKind, n: u8, taken: Taken) -> Option<Callback> {
        match self.faults.get_mut(&(kind, n)) {
            Some(chain) => put(chain, taken),
            None => Some(taken.callback),
        }
    }

    /// `Get_PM_Int_Vector`: the vector and whether it is still the default
    /// (the VMM's reflection to V86: `None`).
    pub(crate) fn pm_vector(&self, vm: VmId, n: u8) -> Option<(u16, u32)> {
        self.pm.get(&(vm, n)).or_else(|| self.pm_default.get(&n)).copied()
    }

    /// `Set_PM_Int_Vector`: for `vm`, or (`None`, before `Sys_VM_Init`)
    /// every VM's default.
    pub(crate) fn set_pm_vector(&mut self, vm: Option<VmId>, n: u8, selector: u16, offset: u32) {
        match vm {
            Some(vm) => {
                self.pm.insert((vm, n), (selector, offset));
            }
            None => {
                self.pm_default.insert(n, (selector, offset));
            }
        }
    }

    /// Put `vm`'s PM vector `n` back to the entry the VM started with
    /// (every VM's default, else the VMM's reflection to V86).
    pub(crate) fn reset_pm_vector(&mut self, vm: VmId, n: u8) {
        self.pm.remove(&(vm, n));
    }

    /// A VM's V86 vector from the tables the VMM keeps (VMs whose memory it
    /// does not hold), or the default table's entry.
    pub(crate) fn v86_vector(&self, vm: VmId, n: u8) -> Option<u32> {
        self.v86.get(&(vm, n)).or_else(|| self.v86_default.get(&n)).copied()
    }

    /// Put `vm`'s V86 vector `n` back to the entry the VM started with
    /// (the default table's, else the host's handler).
    pub(crate) fn reset_v86_vector(&mut self, vm: VmId, n: u8) {
        self.v86.remove(&(vm, n));
    }

    /// The default V86 table's entry for `n` (set before `Sys_VM_Init`).
    pub(crate) fn v86_default(&self, n: u8) -> Option<u32> {
        self.v86_default.get(&n).copied()
    }

    /// The entries of the default V86 table (set before `Sys_VM_Init`),
    /// for a new DOS program's memory.
    pub(crate) fn v86_defaults(&self) -> impl Iterator<Item = (u8, u32)> + '_ {
        self.v86_default.iter().map(|(&n, &v)| (n, v))
    }

    /// The entries of `vm`'s own V86 table the VMM keeps.
    pub(crate) fn v86_of(&self, vm: VmId) -> impl Iterator<Item = (u8, u32)> + '_ {
        self.v86.range((vm, 0)..=(vm, 0xFF)).map(|(&(_, n), &v)| (n, v))
    }

    /// `Set_V86_Int_Vector` in the VMM's tables: for `vm` or (`None`) the
    /// default table.
    pub(crate) fn set_v86_vector(&mut self, vm: Option<VmId>, n: u8, vector: u32) {
        match vm {
            Some(vm) => {
                self.v86.insert((vm, n), vector);
            }
            None => {
                self.v86_default.insert(n, vector);
            }
        }
    }

    /// A VM was destroyed: its tables go.
    pub(crate) fn forget_vm(&mut self, vm: VmId) {
        self.pm.retain(|k, _| k.0 != vm);
        self.v86.retain(|k, _| k.0 != vm);
    }

    /// `Allocate_V86_Call_Back` (`pm` false) / `Allocate_PM_Call_Back`:
    /// the call-back's far pointer.
    pub(crate) fn allocate_call_back(
        &mut self,
        pm: bool,
        owner: InstanceId,
        ref_data: u32,
        callback: Callback,
    ) -> Result<u32, (VectorError, Callback)> {
        let (pool, base) = if pm {
            (&mut self.pm_call_backs, PM_CALLBACK_SELECTOR)
        } else {
            (&mut self.v86_call_backs, V86_CALLBACK_SEGMENT)
        };
        if pool.len() >= MAX_CALL_BACKS {
            return Err((VectorError::Exhausted, callback));
        }
        pool.push(CallBack { owner, ref_data, callback: Some(callback) });
        Ok(((base as u32) << 16) | (pool.len() - 1) as u32)
    }

    /// The call-back at far pointer `ptr`: (pm, number), or `None` when it
    /// is not one.
    pub(crate) fn call_back_at(&self, ptr: u32) -> Option<(bool, usize)> {
        let (seg, off) = ((ptr >> 16) as u16, (ptr & 0xFFFF) as usize);
        match seg {
            V86_CALLBACK_SEGMENT if off < self.v86_call_backs.len() => Some((false, off)),
            PM_CALLBACK_SELECTOR if off < self.pm_call_backs.len() => Some((true, off)),
            _ => None,
        }
    }

    /// Take call-back `number` out to call it: owner, reference data and
    /// callback (`None` while it runs already).
    pub(crate) fn take_call_back(&mut self, pm: bool, number: usize) -> Option<(InstanceId, u32, Callback)> {
        let pool = if pm { &mut self.pm_call_backs } else { &mut self.v86_call_backs };
        let cb = pool.get_mut(number)?;
        Some((cb.owner, cb.ref_data, cb.callback.take()?))
    }

    pub(crate) fn put_call_back(&mut self, pm: bool, number: usize, callback: Callback) {
        let pool = if pm { &mut self.pm_call_backs } else { &mut self.v86_call_backs };
        if let Some(cb) = pool.get_mut(number) {
            cb.callback = Some(callback);
        }
    }

    /// `Call_When_VM_Returns`: the registration's number.
    pub(crate) fn add_return(&mut self, r: Return) -> Result<usize, (VectorError, Return)> {
        if let Some(free) = self.returns.iter().position(Option::is_none) {
            self.returns[free] = Some(r);
            return Ok(free);
        }
        if self.returns.len() >= MAX_RETURNS {
            return Err((VectorError::Exhausted, r));
        }
        self.returns.push(Some(r));
        Ok(self.returns.len() - 1)
    }

    /// The registration of `vm` still waiting for its interrupt frame.
    pub(crate) fn unframed_return(&self, vm: VmId) -> Option<usize> {
        self.returns.iter().position(|r| r.as_ref().is_some_and(|r| r.vm == vm && r.original.is_none()))
    }

    pub(crate) fn return_mut(&mut self, number: usize) -> Option<&mut Return> {
        self.returns.get_mut(number)?.as_mut()
    }

    /// End registration `number`.
    pub(crate) fn end_return(&mut self, number: usize) -> Option<Return> {
        self.returns.get_mut(number)?.take()
    }

    /// Everything `owner` still has (unload): hooks and call-backs, named.
    pub(crate) fn take_owned(&mut self, owner: InstanceId) -> (Vec<String>, Vec<Callback>) {
        let mut names = Vec::new();
        let mut callbacks = Vec::new();
        for (n, chain) in &mut self.chains {
            chain.retain_mut(|h| {
                if h.owner != owner {
                    return true;
                }
                names.push(format!("the Hook_V86_Int_Chain hook of INT {n:02X}h"));
                callbacks.extend(h.callback.take());
                false
            });
        }
        for ((kind, n), chain) in &mut self.faults {
            chain.retain_mut(|h| {
                if h.owner != owner {
                    return true;
                }
                names.push(format!("the {} hook of fault {n:02X}h", kind.service()));
                callbacks.extend(h.callback.take());
                false
            });
        }
        for r in &mut self.returns {
            if r.as_ref().is_some_and(|r| r.owner == owner) {
                let r = r.take().expect("checked");
                names.push(format!("a Call_When_VM_Returns of VM {:#x}", r.vm));
                callbacks.extend(r.callback);
            }
        }
        // Call-backs stay allocated (there is no service to free one, so
        // this is no leak, and their addresses may be anywhere in a VM):
        // their callbacks go; a VM that reaches one later is refused.
        for pool in [&mut self.v86_call_backs, &mut self.pm_call_backs] {
            for cb in pool.iter_mut().filter(|cb| cb.owner == owner) {
                callbacks.extend(cb.callback.take());
            }
        }
        (names, callbacks)
    }
}

fn take(chain: &mut [Hook], id: u32) -> Option<Taken> {
    let h = chain.iter_mut().find(|h| h.id == id)?;
    Some(Taken { id, owner: h.owner, callback: h.callback.take()? })
}

fn put(chain: &mut [Hook], taken: Taken) -> Option<Callback> {
    match chain.iter_mut().find(|h| h.id == taken.id) {
        Some(h) => {
            h.callback = Some(taken.callback);
            None
        }
        None => Some(taken.callback),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vmm::callback::TestHost;
    use vmm_plugin_api::abi::Carry;

    fn cb() -> Callback {
        Callback::host(InstanceId::from_raw(1), "t", |_: &TestHost, _| Carry::Set)
    }

    #[test]
    fn hooks_are_called_newest_first_and_survive_unhooking_during_their_call() {
        let (a, b) = (InstanceId::from_raw(1), InstanceId::from_raw(2));
        let mut v = Vectors::default();
        assert!(!v.hooked(0x21));
        let h1 = v.hook_int(0x21, a, cb());
        let h2 = v.hook_int(0x21, b, cb());
        assert_eq!(v.int_chain(0x21), [h2, h1]);
        let taken = v.take_int(0x21, h2).unwrap();
        assert!(v.take_int(0x21, h2).is_none(), "running already");
        assert_eq!(v.unhook_int(0x21, a, h2).err(), Some(VectorError::NotFound), "not a's hook");
        assert!(v.unhook_int(0x21, b, h2).unwrap().is_none(), "unhooked while it runs");
        assert!(v.put_int(0x21, taken).is_some(), "given back to drop");
        assert_eq!(v.int_chain(0x21), [h1]);
        assert_eq!(v.unhook_int(0x21, b, 999).err(), Some(VectorError::NotFound));
    }

    #[test]
    fn fault_hooks_keep_their_stage_and_numbers_are_checked() {
        let a = InstanceId::from_raw(1);
        let mut v = Vectors::default();
        assert_eq!(v.hook_fault(FaultKind::V86, 2, a, cb(), false).err(), Some(VectorError::BadNumber));
        assert_eq!(v.hook_fault(FaultKind::V86, 0x50, a, cb(), false).err(), Some(VectorError::BadNumber));
        let (early, prev) = v.hook_fault(FaultKind::V86, 0x0D, a, cb(), true).unwrap();
        assert_eq!(prev, 0);
        let (late, _) = v.hook_fault(FaultKind::V86, 0x0D, a, cb(), false).unwrap();
        let (later, prev) = v.hook_fault(FaultKind::V86, 0x0D, a, cb(), false).unwrap();
        assert_eq!(prev, late);
        assert_eq!(v.fault_chain(FaultKind::V86, 0x0D, FaultStage::Front), [later, late]);
        assert_eq!(v.fault_chain(FaultKind::V86, 0x0D, FaultStage::Behind), [early]);
        assert!(v.fault_chain(FaultKind::V86, 0x0E, FaultStage::Front).is_empty());
        assert_eq!(v.first_fault_hook(FaultKind::V86, 0x0D), later);
        // Each mode is its own chain.
        assert_eq!(v.first_fault_hook(FaultKind::Pm, 0x0D), 0);
        let (pm, prev) = v.hook_fault(FaultKind::Pm, 0x0D, a, cb(), true).unwrap();
        assert_eq!((v.first_fault_hook(FaultKind::Pm, 0x0D), prev), (pm, 0));
        assert!(v.fault_chain(FaultKind::Vmm, 0x0D, FaultStage::Behind).is_empty());
        assert_eq!(v.unhook_fault(FaultKind::Vmm, 0x0D, a, pm).err(), Some(VectorError::NotFound));
        assert!(v.unhook_fault(FaultKind::Pm, 0x0D, a, pm).is_ok());
    }

    #[test]
    fn call_backs_have_addresses_in_their_segment_until_the_pool_is_used_up() {
        let a = InstanceId::from_raw(1);
        let mut v = Vectors::default();
        let p = v.allocate_call_back(false, a, 0xCAFE, cb()).ok().unwrap();
        assert_eq!(p, (V86_CALLBACK_SEGMENT as u32) << 16);
        assert_eq!(v.call_back_at(p), Some((false, 0)));
        let q = v.allocate_call_back(true, a, 1, cb()).ok().unwrap();
        assert_eq!(v.call_back_at(q), Some((true, 0)));
        assert_eq!(v.call_back_at(p + 1), None);
        for _ in 1..MAX_CALL_BACKS {
            v.allocate_call_back(false, a, 0, cb()).ok().unwrap();
        }
        assert_eq!(v.allocate_call_back(false, a, 0, cb()).err().map(|e| e.0), Some(VectorError::Exhausted));
        let (owner, r, c) = v.take_call_back(false, 0).unwrap();
        assert_eq!((owner, r), (a, 0xCAFE));
        assert!(v.take_call_back(false, 0).is_none());
        v.put_call_back(false, 0, c);
        assert!(v.take_call_back(false, 0).is_some());
    }

    #[test]
    fn vectors_fall_back_to_the_default_tables() {
        let mut v = Vectors::default();
        assert_eq!(v.pm_vector(VmId::from_raw(1), 0x31), None);
        v.set_pm_vector(None, 0x31, 0x47, 0x10);
        v.set_pm_vector(Some(VmId::from_raw(2)), 0x31, 0x57, 0x20);
        assert_eq!(v.pm_vector(VmId::from_raw(1), 0x31), Some((0x47, 0x10)));
        assert_eq!(v.pm_vector(VmId::from_raw(2), 0x31), Some((0x57, 0x20)));
        v.set_v86_vector(Some(VmId::from_raw(2)), 0x4B, 0xFD00_0000);
        assert_eq!(v.v86_vector(VmId::from_raw(2), 0x4B), Some(0xFD00_0000));
        v.set_v86_vector(None, 0x4B, 0xFD00_0001);
        assert_eq!(v.v86_default(0x4B), Some(0xFD00_0001));
        v.reset_v86_vector(VmId::from_raw(2), 0x4B);
        assert_eq!(v.v86_vector(VmId::from_raw(2), 0x4B), Some(0xFD00_0001), "back to the default table's");
        v.set_v86_vector(Some(VmId::from_raw(2)), 0x4B, 0xFD00_0000);
        v.reset_pm_vector(VmId::from_raw(2), 0x31);
        assert_eq!(v.pm_vector(VmId::from_raw(2), 0x31), Some((0x47, 0x10)), "back to every VM's default");
        v.set_pm_vector(Some(VmId::from_raw(2)), 0x31, 0x57, 0x20);
        v.forget_vm(VmId::from_raw(2));
        assert_eq!(v.pm_vector(VmId::from_raw(2), 0x31), Some((0x47, 0x10)));
        assert_eq!(v.v86_vector(VmId::from_raw(2), 0x4B), Some(0xFD00_0001), "the VM's own entry went");
        assert_eq!(v.v86_vector(VmId::from_raw(2), 0x4C), None);
    }
}
