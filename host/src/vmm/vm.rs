//! Virtual machines: the control block of each VM (handle, ID, status,
//! client registers, ring-3 stack, priority, execution time, per-device
//! control-block areas) and the generational table that validates handles.

use std::cell::UnsafeCell;
use std::collections::BTreeSet;
use std::rc::Rc;

use vmm_plugin_api::abi::ClientRegs;
use vmm_plugin_api::ddk::{
    BLOCK_ENABLE_INTS, BLOCK_FORCE_SVC_INTS, BLOCK_POLL, BLOCK_SVC_IF_INTS_LOCKED, BLOCK_SVC_INTS, IF_MASK,
    VMSTAT_PM_APP, VMSTAT_PM_EXEC, VMSTAT_V86INTSLOCKED,
};

use crate::time::Duration;
use crate::vmm::ids::VmId;
use crate::vmm::limits::{CB_START, cb_area_end};

/// Size of each VM's simulated ring-3 stack segment.
pub(crate) const STACK_SIZE: usize = 0x1_0000;
/// A VM's stack segment: 64 KiB, so a 16-bit SP indexes it without a
/// bounds check.
pub(crate) type Stack = [u8; STACK_SIZE];

/// Initial stack pointer.
pub(crate) const STACK_TOP: u32 = 0xFFFE;
/// The system VM's stack selector and a DOS VM's stack segment.
pub(crate) const PM_STACK_SELECTOR: u32 = 0x0037;
/// V86 stack segment.
pub(crate) const V86_STACK_SEGMENT: u32 = 0x9000;
/// Base execution priority of every VM.
pub(crate) const BASE_PRIORITY: u32 = 100;

/// Where a VM is in its lifecycle.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum VmLife {
    /// Create_VM / VM_Critical_Init / VM_Init in progress.
    Creating,
    /// Runs.
    Running,
    /// Being destroyed (VM_Terminate / VM_Not_Executeable / Destroy_VM).
    Terminating,
}

/// Why a VM cannot run at the moment.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum Blocked {
    /// Waiting for the critical section.
    Crit,
    /// Waiting on a semaphore.
    Semaphore(crate::vmm::crit::SemaphoreHandle),
}

/// A VM's control block.
pub(crate) struct Vm {
    pub(crate) handle: VmId,
    pub(crate) id: u32,
    pub(crate) name: Rc<str>,
    pub(crate) status: u32,
    pub(crate) life: VmLife,
    client: Box<UnsafeCell<ClientRegs>>,
    pub(crate) base_priority: u32,
    /// Every boost: the devices' own (`Adjust_Exec_Priority`, kept
    /// `PEF_Dont_Unboost` boosts), the critical section's, and those of
    /// pending and running priority events.
    pub(crate) boost: i64,
    /// The part of `boost` that pending and running priority events hold.
    pub(crate) event_boost: i64,
    pub(crate) exec_time: Duration,
    pub(crate) cb_area: Vec<u8>,
    /// Nested execution blocks: the CS:IP and mode to restore.
    pub(crate) nest: Vec<NestFrame>,
    /// Whether the VM's current ring-3 code runs in protected mode.
    pub(crate) pm: bool,
    /// `Adjust_Execution_Time` milliseconds waiting for the VM's next
    /// time slice.
    pub(crate) slice_adjust_ms: std::cell::Cell<i32>,
    /// `Suspend_VM` count.
    pub(crate) suspend_count: u32,
    /// Waiting for the critical section or a semaphore.
    pub(crate) blocked: Option<Blocked>,
    /// The `BLOCK_*` flags of that wait.
    pub(crate) block_flags: u32,
    /// The simulated ring-3 stack segment (SS), addressed by SP.
    pub(crate) stack: Box<Stack>,
}

/// One `Begin_Nest_Exec` block.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) struct NestFrame {
    pub(crate) cs: u32,
    pub(crate) eip: u32,
    pub(crate) pm: bool,
    /// The block was begun with `Begin_Nest_V86_Exec`.
    pub(crate) v86: bool,
}

impl Vm {
    pub(crate) fn new(handle: VmId, id: u32, name: Rc<str>, is_system: bool, cb_size: usize) -> Self {
        let pm = is_system;
        let client = ClientRegs {
            eflags: IF_MASK | 0x2,
            ss: if pm { PM_STACK_SELECTOR } else { V86_STACK_SEGMENT },
            esp: STACK_TOP,
            ..ClientRegs::default()
        };
        Vm {
            handle,
            id,
            name,
            status: if is_system { VMSTAT_PM_APP | VMSTAT_PM_EXEC } else { 0 },
            life: VmLife::Creating,
            client: Box::new(UnsafeCell::new(client)),
            base_priority: BASE_PRIORITY,
            boost: 0,
            event_boost: 0,
            exec_time: Duration::ZERO,
            cb_area: vec![0; cb_size],
            nest: Vec::new(),
            pm,
            slice_adjust_ms: std::cell::Cell::new(0),
            suspend_count: 0,
            blocked: None,
            block_flags: 0,
            stack: vec![0; STACK_SIZE].into_boxed_slice().try_into().expect("STACK_SIZE bytes"),
        }
    }

    /// The stable address of the client register block.
    pub(crate) fn client_ptr(&self) -> *mut ClientRegs {
        self.client.get()
    }

    /// A copy of the client registers.
    pub(crate) fn client(&self) -> ClientRegs {
        // SAFETY: the block is only accessed through raw reads and writes,
        // never through a long-lived reference, so this read cannot alias a
        // live `&mut`.
        unsafe { self.client.get().read() }
    }

    /// Replace the client registers.
    pub(crate) fn set_client(&self, regs: ClientRegs) {
        // SAFETY: as in `client`.
        unsafe { self.client.get().write(regs) }
    }

    /// Set or clear the client IF.
    pub(crate) fn set_interrupts(&self, enabled: bool) {
        let mut c = self.client();
        if enabled {
            c.eflags |= IF_MASK;
        } else {
            c.eflags &= !IF_MASK;
        }
        self.set_client(c);
    }

    /// Whether the scheduler may run it.
    pub(crate) fn schedulable(&self) -> bool {
        self.life == VmLife::Running && self.suspend_count == 0 && self.blocked.is_none()
    }

    /// Whether the VM is blocked but its events run (`Block_Svc_Ints`,
    /// `Block_Force_Svc_Ints`, or `Block_Svc_If_Ints_Locked` while its V86
    /// interrupts are locked).
    pub(crate) fn serves_events(&self) -> bool {
        self.blocked.is_some()
            && (self.block_flags & (BLOCK_SVC_INTS | BLOCK_FORCE_SVC_INTS) != 0
                || (self.block_flags & BLOCK_SVC_IF_INTS_LOCKED != 0 && self.status & VMSTAT_V86INTSLOCKED != 0))
    }

    /// Whether the VM is blocked with `Block_Poll` (it keeps the CPU).
    pub(crate) fn polling(&self) -> bool {
        self.blocked.is_some() && self.block_flags & BLOCK_POLL != 0
    }

    /// Whether events waiting for interrupts to be enabled may run: the VM
    /// has them enabled, or it serves events while blocked with
    /// `Block_Enable_Ints`.
    #[inline]
    pub(crate) fn sti_for_events(&self) -> bool {
        self.interrupts_enabled() || (self.block_flags & BLOCK_ENABLE_INTS != 0 && self.serves_events())
    }

    /// Whether the VM has interrupts enabled.
    #[inline]
    pub(crate) fn interrupts_enabled(&self) -> bool {
        // SAFETY: as in `client`; only the flags word is read.
        let eflags = unsafe { std::ptr::addr_of!((*self.client.get()).eflags).read() };
        eflags & IF_MASK != 0
    }

    /// Base priority plus boosts, clamped to the DDK's range: what the
    /// scheduler compares.
    pub(crate) fn priority(&self) -> u32 {
        (self.base_priority as i64 + self.boost).clamp(1, 0x4000_0000) as u32
    }

    /// The priority that tells whether the VM is in a critical section or a
    /// time-critical operation (`PEF_Wait_Not_Crit`, `PEF_Wait_Not_HW_Int`,
    /// `Call_When_Not_Critical`, `Get_Crit_Section_Status`'s carry): the
    /// priority without the boosts of its pending and running priority
    /// events. However many events wait, their boosts never make a
    /// critical section of their own (docs/semantics.md).
    pub(crate) fn crit_priority(&self) -> u32 {
        (self.base_priority as i64 + self.boost - self.event_boost).clamp(1, 0x4000_0000) as u32
    }
}

struct Slot {
    generation: u16,
    vm: Option<Vm>,
}

/// All VMs, addressed by generational handles: the handle of a destroyed
/// VM never validates again (until its 16-bit generation wraps).
///
/// Creating a VM costs O(log n): the lowest free slot and the lowest free
/// VM ID come from ordered sets of the ones given back, not from a scan.
#[derive(Default)]
pub(crate) struct VmTable {
    slots: Vec<Slot>,
    /// Empty slots, by index (the lowest is reused first).
    free_slots: BTreeSet<usize>,
    /// VM IDs given back by destroyed VMs below `next_id`.
    free_ids: BTreeSet<u32>,
    /// The lowest VM ID never handed out.
    next_id: u32,
    /// Bumped by every mutable access: a scheduling decision taken at one
    /// epoch holds as long as the epoch does.
    epoch: u64,
    /// The end of the control-block areas allocated so far.
    cb_size: u32,
}

impl VmTable {
    /// The number of mutable accesses so far.
    #[inline]
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Invalidate decisions taken on the current state (something outside
    /// the table that they depend on changed).
    pub(crate) fn touch(&mut self) {
        self.epoch += 1;
    }

    /// Add a VM; `make` receives its handle and ID.
    pub(crate) fn insert(&mut self, make: impl FnOnce(VmId, u32) -> Vm) -> VmId {
        self.epoch += 1;
        // The lowest ID no live VM has (IDs start at 1).
        let id = match self.free_ids.pop_first() {
            Some(id) => id,
            None => {
                self.next_id = self.next_id.max(1);
                self.next_id += 1;
                self.next_id - 1
            }
        };
        let index = match self.free_slots.pop_first() {
            Some(i) => i,
            None => {
                self.slots.push(Slot { generation: 0, vm: None });
                self.slots.len() - 1
            }
        };
        let slot = &mut self.slots[index];
        slot.generation = slot.generation.wrapping_add(1).max(1);
        let handle = VmId::from_raw(((slot.generation as u32) << 16) | (index as u32 + 1));
        slot.vm = Some(make(handle, id));
        handle
    }

    fn index(handle: VmId) -> Option<usize> {
        let low = (handle.raw() & 0xFFFF) as usize;
        low.checked_sub(1)
    }

    /// The VM with this handle, if it is alive.
    pub(crate) fn get(&self, handle: VmId) -> Option<&Vm> {
        let slot = self.slots.get(Self::index(handle)?)?;
        slot.vm.as_ref().filter(|vm| vm.handle == handle)
    }

    /// Mutable access.
    pub(crate) fn get_mut(&mut self, handle: VmId) -> Option<&mut Vm> {
        self.epoch += 1;
        let slot = self.slots.get_mut(Self::index(handle)?)?;
        slot.vm.as_mut().filter(|vm| vm.handle == handle)
    }

    /// Remove a destroyed VM; its handle stops validating.
    pub(crate) fn remove(&mut self, handle: VmId) -> Option<Vm> {
        self.epoch += 1;
        let index = Self::index(handle)?;
        let slot = self.slots.get_mut(index)?;
        if slot.vm.as_ref().is_none_or(|vm| vm.handle != handle) {
            return None;
        }
        let vm = slot.vm.take()?;
        self.free_slots.insert(index);
        self.free_ids.insert(vm.id);
        Some(vm)
    }

    /// Live VMs in table order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Vm> {
        self.slots.iter().filter_map(|s| s.vm.as_ref())
    }

    /// Mutable iteration.
    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = &mut Vm> {
        self.epoch += 1;
        self.slots.iter_mut().filter_map(|s| s.vm.as_mut())
    }

    /// `Get_Next_VM_Handle`: the next live VM after `handle`, circularly.
    pub(crate) fn next(&self, handle: VmId) -> Option<VmId> {
        let start = Self::index(handle)?;
        self.get(handle)?;
        let n = self.slots.len();
        (1..=n).map(|k| (start + k) % n).find_map(|i| self.slots[i].vm.as_ref().map(|vm| vm.handle))
    }

    /// `_Allocate_Device_CB_Area`: reserve `bytes` (dword aligned) in
    /// every VM's control block, present and future; the area's offset, or
    /// `None` when it does not fit in what is left of the 64 KB block (and
    /// nothing is reserved). Offsets start past the VMM's own fields, so 0
    /// is never an area.
    pub(crate) fn allocate_cb_area(&mut self, bytes: u32) -> Option<u32> {
        let base = self.cb_size.max(CB_START);
        let end = cb_area_end(base, bytes)?;
        self.cb_size = end;
        for vm in self.iter_mut() {
            if vm.cb_area.len() < end as usize {
                vm.cb_area.resize(end as usize, 0);
            }
        }
        Some(base)
    }

    /// The control-block size every VM has (what areas were allocated).
    pub(crate) fn cb_size(&self) -> usize {
        self.cb_size as usize
    }

    /// Whether `range` lies inside the allocated control-block areas.
    pub(crate) fn cb_allocated(&self, range: &std::ops::Range<usize>) -> bool {
        range.start >= CB_START as usize && range.end <= self.cb_size as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vm(h: VmId, id: u32) -> Vm {
        Vm::new(h, id, Rc::from("t"), false, 0)
    }

    #[test]
    fn handles_are_generational() {
        let mut t = VmTable::default();
        let a = t.insert(vm);
        let b = t.insert(vm);
        assert_eq!(t.get(a).unwrap().id, 1);
        assert_eq!(t.get(b).unwrap().id, 2);
        assert_eq!(t.next(a), Some(b));
        assert_eq!(t.next(b), Some(a));
        t.remove(b);
        assert!(t.get(b).is_none(), "a destroyed VM's handle is stale");
        let c = t.insert(vm);
        assert_ne!(c, b, "the slot is reused with a new generation");
        assert!(t.get(b).is_none());
        assert_eq!(t.get(c).unwrap().id, 2, "VM IDs are reused");
        assert!(t.get(VmId::NONE).is_none());
        assert!(t.get(VmId::from_raw(0xDEAD_BEEF)).is_none());
    }

    #[test]
    fn the_lowest_free_slot_and_id_are_reused_first() {
        let mut t = VmTable::default();
        let h: Vec<VmId> = (0..5).map(|_| t.insert(vm)).collect();
        t.remove(h[3]);
        t.remove(h[1]);
        let a = t.insert(vm);
        assert_eq!((a.raw() & 0xFFFF, t.get(a).unwrap().id), (2, 2), "slot 2 and ID 2 first");
        let b = t.insert(vm);
        assert_eq!((b.raw() & 0xFFFF, t.get(b).unwrap().id), (4, 4));
        let c = t.insert(vm);
        assert_eq!((c.raw() & 0xFFFF, t.get(c).unwrap().id), (6, 6), "then new ones");
    }
}
