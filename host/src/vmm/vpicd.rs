//! VPICD's state and its rules: the IRQ descriptors devices virtualized
//! (ownership, sharing order), the physical PIC (request, in service,
//! masks), and each VM's virtual PIC (requests by device, in service, IRET
//! pending, mask, vector bases, the initialization sequence). Private
//! state; the rules return domain results the machine turns into plugin
//! calls, records and violations (`machine/vpicd.rs`).
//!
//! Virtual priority is the 8259's fixed order with the slave's IRQs 8-15
//! at IRQ 2's place (`docs/semantics.md`, "VPICD").

use std::collections::{BTreeMap, VecDeque};

use crate::vmm::callback::Callback;
use crate::vmm::ids::{InstanceId, VmId};
use crate::vmm::slab::{Handle, Slab, TAG_VPICD};

/// IRQs 0-15 (two cascaded 8259s).
pub(crate) const IRQS: u8 = 16;
/// Devices that may share one IRQ.
pub(crate) const MAX_SHARERS: usize = 32;
/// A virtualized IRQ's handle (`VPICD_Virtualize_IRQ`).
pub(crate) type VirtHandle = Handle<Virt>;

/// Who requests an IRQ in a VM: a device that virtualized it, or VPICD's
/// default handling of an un-virtualized IRQ.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum Requester {
    Device(VirtHandle),
    Default,
}

impl Requester {
    /// The device's handle (`None` for the default handling).
    pub(crate) fn device(self) -> Option<VirtHandle> {
        match self {
            Requester::Device(h) => Some(h),
            Requester::Default => None,
        }
    }
}
/// IRQs unmasked when Windows starts (timer, keyboard, cascade, floppy,
/// real-time clock, coprocessor, hard disk): global under the default
/// handling; the rest are owned by the first VM that unmasks them.
pub(crate) const STARTUP_UNMASKED: u16 = (1 << 0) | (1 << 1) | (1 << 2) | (1 << 6) | (1 << 8) | (1 << 13) | (1 << 14);

/// The five procedures of `VPICD_IRQ_Descriptor`.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum Proc {
    HwInt = 0,
    VirtInt = 1,
    Eoi = 2,
    MaskChange = 3,
    Iret = 4,
}

/// A virtualized IRQ: one device's descriptor.
pub(crate) struct Virt {
    pub(crate) irq: u8,
    pub(crate) options: u16,
    pub(crate) owner: InstanceId,
    /// Taken out while they run.
    procs: [Option<Callback>; 5],
    pub(crate) iret_time_out: u32,
    pub(crate) hw_int_ref: u32,
}

/// Why `VPICD_Virtualize_IRQ` failed.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum VirtError {
    /// Not 0-15.
    BadIrq,
    /// Virtualized by a device that does not share (or this one does not).
    Taken { owner: InstanceId },
    /// 32 devices share it already.
    Full,
    /// No handle left.
    NoRoom,
}

/// How the physical PIC treats an IRQ's mask.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Default)]
enum PhysMode {
    /// Masked iff every VM masks it.
    #[default]
    Auto,
    Masked,
    Unmasked,
}

#[derive(Copy, Clone, Debug, Default)]
struct Phys {
    mode: PhysMode,
    in_service: bool,
    /// The IRR bit: latched by an edge; the line itself on a level line.
    request: bool,
    /// Level-triggered line (`[[irq]] trigger = "level"`).
    level: bool,
}

/// A `VPICD_Call_When_Hw_Int` hook: called on every physical interrupt
/// VPICD takes, before the IRQ's `Hw_Int` procedures.
struct HwIntHook {
    id: u64,
    owner: InstanceId,
    /// Taken out while it runs.
    cb: Option<Callback>,
}

/// The default handling of an un-virtualized IRQ (section 3.4).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum DefaultRoute {
    /// Each interrupt goes to the current VM.
    Global,
    /// To the owner; `None` until a VM unmasks it.
    Owned(Option<VmId>),
}

/// Where a VM's initialization sequence of a PIC is.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Default)]
enum Icw {
    #[default]
    Ready,
    /// ICW1 written: ICW2 (the base) next; `icw4` if ICW1 asked for it.
    Base { icw4: bool },
    /// ICW3 next.
    Cascade { icw4: bool },
    /// ICW4 next.
    Mode,
}

/// A VM's virtual PIC pair.
struct VmPic {
    imr: u16,
    /// Requesters of each IRQ.
    requests: [Vec<Requester>; IRQS as usize],
    isr: u16,
    iret_pending: u16,
    /// The requesters each simulated interrupt was delivered for.
    delivered: [Vec<Requester>; IRQS as usize],
    /// Which delivery an IRET time-out belongs to.
    iret_seq: [u64; IRQS as usize],
    bases: [u8; 2],
    icw: [Icw; 2],
    read_isr: [bool; 2],
    /// The Time_Critical boost VPICD gave it.
    boosted: bool,
    /// Simulated interrupts the VM's ring-3 code has not yet entered.
    ring3: VecDeque<(u8, u8)>,
}

impl VmPic {
    fn new(imr: u16) -> Self {
        VmPic {
            imr,
            requests: Default::default(),
            isr: 0,
            iret_pending: 0,
            delivered: Default::default(),
            iret_seq: [0; IRQS as usize],
            bases: [0x08, 0x70],
            icw: [Icw::Ready; 2],
            read_isr: [false; 2],
            boosted: false,
            ring3: VecDeque::new(),
        }
    }
}

/// The 8259 priority of `irq`: 0 highest; the slave's IRQs at IRQ 2's place.
pub(crate) fn priority(irq: u8) -> u8 {
    match irq {
        0..=2 => irq,
        8..=15 => irq - 5,
        _ => irq + 8,
    }
}

/// What a write to a PIC's command port (0x20 / 0xA0) does.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum Command {
    /// An EOI of this IRQ (non-specific: the highest in service; specific).
    Eoi(u8),
    /// An EOI with nothing in service, an ICW1, an OCW3.
    Nothing,
}

/// What a write to a PIC's data port (0x21 / 0xA1) does.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum Data {
    /// The mask changed: the IRQs masked and unmasked by the write.
    Mask { masked: u16, unmasked: u16 },
    /// An initialization word.
    Init,
}

/// VPICD's whole state.
pub(crate) struct VpicdState {
    virts: Slab<Virt>,
    /// Handles of each IRQ in virtualization order.
    chains: [Vec<VirtHandle>; IRQS as usize],
    phys: [Phys; IRQS as usize],
    routes: [DefaultRoute; IRQS as usize],
    vms: BTreeMap<VmId, VmPic>,
    seq: u64,
    /// `VPICD_Call_When_Hw_Int` hooks in installation order.
    hw_int_hooks: Vec<HwIntHook>,
    hook_seq: u64,
}

impl Default for VpicdState {
    fn default() -> Self {
        let routes = std::array::from_fn(|i| {
            if STARTUP_UNMASKED & (1 << i) != 0 { DefaultRoute::Global } else { DefaultRoute::Owned(None) }
        });
        VpicdState {
            virts: Slab::new(TAG_VPICD),
            chains: Default::default(),
            phys: Default::default(),
            routes,
            vms: BTreeMap::new(),
            seq: 0,
            hw_int_hooks: Vec::new(),
            hook_seq: 0,
        }
    }
}

impl VpicdState {
    // ---- descriptors -----------------------------------------------------------------------

    /// `VPICD_Virtualize_IRQ`. A refused descriptor's callbacks are
    /// dropped (released in the plugin).
    pub(crate) fn virtualize(
        &mut self,
        irq: u16,
        options: u16,
        owner: InstanceId,
        procs: [Option<Callback>; 5],
        iret_time_out: u32,
        hw_int_ref: u32,
    ) -> Result<VirtHandle, VirtError> {
        if irq >= IRQS as u16 {
            return Err(VirtError::BadIrq);
        }
        let chain = &self.chains[irq as usize];
        let share = options & vmm_plugin_api::ddk::VPICD_OPT_CAN_SHARE != 0;
        if let Some(&first) = chain.first() {
            let all_share = chain
                .iter()
                .all(|h| self.virts.get(*h).is_some_and(|v| v.options & vmm_plugin_api::ddk::VPICD_OPT_CAN_SHARE != 0));
            if !share || !all_share {
                let owner = self.virts.get(first).map_or(InstanceId::HOST, |v| v.owner);
                return Err(VirtError::Taken { owner });
            }
            if chain.len() >= MAX_SHARERS {
                return Err(VirtError::Full);
            }
        }
        let irq = irq as u8;
        let Some((handle, slot)) = self.virts.vacant() else { return Err(VirtError::NoRoom) };
        *slot = Some(Virt { irq, options, owner, procs, iret_time_out, hw_int_ref });
        self.chains[irq as usize].push(handle);
        Ok(handle)
    }

    /// `VPICD_Force_Default_Behavior`: the descriptor goes (its callbacks
    /// with it), and with it every request it made.
    pub(crate) fn unvirtualize(&mut self, handle: VirtHandle) -> Option<Virt> {
        let v = self.virts.remove(handle)?;
        self.chains[v.irq as usize].retain(|h| *h != handle);
        let who = Requester::Device(handle);
        for pic in self.vms.values_mut() {
            pic.requests[v.irq as usize].retain(|h| *h != who);
            pic.delivered[v.irq as usize].retain(|h| *h != who);
        }
        Some(v)
    }

    pub(crate) fn virt(&self, handle: VirtHandle) -> Option<&Virt> {
        self.virts.get(handle)
    }

    /// The descriptors `owner` still has.
    pub(crate) fn owned_by(&self, owner: InstanceId) -> Vec<VirtHandle> {
        self.virts.iter().filter(|(_, v)| v.owner == owner).map(|(h, _)| h).collect()
    }

    /// Take a procedure out to call it (put it back with [`Self::put_proc`]).
    pub(crate) fn take_proc(&mut self, handle: VirtHandle, proc: Proc) -> Option<Callback> {
        self.virts.get_mut(handle).and_then(|v| v.procs[proc as usize].take())
    }

    /// Put back a procedure taken out; dropped if the handle went meanwhile.
    pub(crate) fn put_proc(&mut self, handle: VirtHandle, proc: Proc, cb: Callback) -> Option<Callback> {
        match self.virts.get_mut(handle) {
            Some(v) if v.procs[proc as usize].is_none() => {
                v.procs[proc as usize] = Some(cb);
                None
            }
            _ => Some(cb),
        }
    }

    /// The handles of `irq`, last virtualized first (the order shared
    /// IRQs' `Hw_Int` procedures are called in).
    pub(crate) fn chain(&self, irq: u8) -> Vec<VirtHandle> {
        self.chains[irq as usize].iter().rev().copied().collect()
    }

    pub(crate) fn virtualized(&self, irq: u8) -> bool {
        !self.chains[irq as usize].is_empty()
    }

    pub(crate) fn count(&self, irq: u8) -> u32 {
        self.chains[irq as usize].len() as u32
    }

    // ---- VPICD_Call_When_Hw_Int --------------------------------------------------------------

    /// Add a hook; whether one was installed before it (the DDK's "next
    /// proc in chain").
    pub(crate) fn add_hw_int_hook(&mut self, owner: InstanceId, cb: Callback) -> bool {
        self.hook_seq += 1;
        let had = !self.hw_int_hooks.is_empty();
        self.hw_int_hooks.push(HwIntHook { id: self.hook_seq, owner, cb: Some(cb) });
        had
    }

    /// Whether any hook is installed.
    pub(crate) fn has_hw_int_hooks(&self) -> bool {
        !self.hw_int_hooks.is_empty()
    }

    /// The hooks' ids, last installed first (the order they are called in).
    pub(crate) fn hw_int_hook_ids(&self) -> Vec<u64> {
        self.hw_int_hooks.iter().rev().map(|h| h.id).collect()
    }

    /// Take hook `id` out to call it (put it back with [`Self::put_hw_int_hook`]).
    pub(crate) fn take_hw_int_hook(&mut self, id: u64) -> Option<Callback> {
        self.hw_int_hooks.iter_mut().find(|h| h.id == id).and_then(|h| h.cb.take())
    }

    /// Put back a hook taken out; returned if it was removed meanwhile.
    pub(crate) fn put_hw_int_hook(&mut self, id: u64, cb: Callback) -> Option<Callback> {
        match self.hw_int_hooks.iter_mut().find(|h| h.id == id) {
            Some(h) if h.cb.is_none() => {
                h.cb = Some(cb);
                None
            }
            _ => Some(cb),
        }
    }

    /// Remove `owner`'s hooks (its unload); how many it had.
    pub(crate) fn remove_hw_int_hooks(&mut self, owner: InstanceId) -> usize {
        let before = self.hw_int_hooks.len();
        self.hw_int_hooks.retain(|h| h.owner != owner);
        before - self.hw_int_hooks.len()
    }

    // ---- default handling ------------------------------------------------------------------

    pub(crate) fn route(&self, irq: u8) -> DefaultRoute {
        self.routes[irq as usize]
    }

    pub(crate) fn set_route(&mut self, irq: u8, route: DefaultRoute) {
        self.routes[irq as usize] = route;
    }

    // ---- a VM's virtual PIC ----------------------------------------------------------------

    fn pic(&mut self, vm: VmId) -> &mut VmPic {
        self.vms.entry(vm).or_insert_with(|| VmPic::new(!STARTUP_UNMASKED))
    }

    /// A VM was destroyed.
    pub(crate) fn forget_vm(&mut self, vm: VmId) {
        self.vms.remove(&vm);
        for r in &mut self.routes {
            if *r == DefaultRoute::Owned(Some(vm)) {
                *r = DefaultRoute::Owned(None);
            }
        }
    }

    /// Add `who`'s request of `irq` in `vm`; whether it was not set yet.
    pub(crate) fn set_request(&mut self, vm: VmId, irq: u8, who: Requester) -> bool {
        let r = &mut self.pic(vm).requests[irq as usize];
        if r.contains(&who) {
            return false;
        }
        r.push(who);
        true
    }

    /// Drop `who`'s request; whether it had one.
    pub(crate) fn clear_request(&mut self, vm: VmId, irq: u8, who: Requester) -> bool {
        let r = &mut self.pic(vm).requests[irq as usize];
        let before = r.len();
        r.retain(|h| *h != who);
        r.len() != before
    }

    pub(crate) fn requested(&self, vm: VmId, irq: u8) -> bool {
        self.vms.get(&vm).is_some_and(|p| !p.requests[irq as usize].is_empty())
    }

    pub(crate) fn requesters(&self, vm: VmId, irq: u8) -> Vec<Requester> {
        self.vms.get(&vm).map(|p| p.requests[irq as usize].clone()).unwrap_or_default()
    }

    /// Whether `vm` has any request set.
    pub(crate) fn any_request(&self, vm: VmId) -> bool {
        self.vms.get(&vm).is_some_and(|p| p.requests.iter().any(|r| !r.is_empty()))
    }

    /// The IRQ to simulate into `vm` next: requested, unmasked, and of
    /// higher priority than every IRQ in service.
    pub(crate) fn next_deliverable(&self, vm: VmId) -> Option<u8> {
        let p = self.vms.get(&vm)?;
        let blocked_at = (0..IRQS).filter(|i| p.isr & (1 << i) != 0).map(priority).min().unwrap_or(u8::MAX);
        (0..IRQS)
            .filter(|&i| !p.requests[i as usize].is_empty() && p.imr & (1 << i) == 0 && priority(i) < blocked_at)
            .min_by_key(|&i| priority(i))
    }

    /// Start simulating `irq` into `vm` for the requesters that remain:
    /// in service, IRET pending; the delivery's sequence number.
    pub(crate) fn begin_delivery(&mut self, vm: VmId, irq: u8) -> u64 {
        self.seq += 1;
        let seq = self.seq;
        let p = self.pic(vm);
        p.isr |= 1 << irq;
        p.iret_pending |= 1 << irq;
        p.delivered[irq as usize] = p.requests[irq as usize].clone();
        p.iret_seq[irq as usize] = seq;
        seq
    }

    /// The vector `vm` maps `irq` to.
    pub(crate) fn vector(&mut self, vm: VmId, irq: u8) -> u8 {
        let p = self.pic(vm);
        if irq < 8 { p.bases[0] + irq } else { p.bases[1] + (irq - 8) }
    }

    /// The IRQ `vm` maps `vector` to.
    pub(crate) fn irq_of_vector(&mut self, vm: VmId, vector: u8) -> Option<u8> {
        let p = self.pic(vm);
        (0..IRQS).find(|&i| (if i < 8 { p.bases[0] + i } else { p.bases[1] + (i - 8) }) == vector)
    }

    /// An EOI of `irq` in `vm`: whether it was in service.
    pub(crate) fn end_service(&mut self, vm: VmId, irq: u8) -> bool {
        let p = self.pic(vm);
        let was = p.isr & (1 << irq) != 0;
        p.isr &= !(1 << irq);
        was
    }

    /// The IRET of `irq`'s simulated interrupt in `vm` (a time-out names
    /// its delivery by `seq`): the requesters it was delivered for, if an
    /// IRET was pending.
    pub(crate) fn iret(&mut self, vm: VmId, irq: u8, seq: Option<u64>) -> Option<Vec<Requester>> {
        let p = self.vms.get_mut(&vm)?;
        if p.iret_pending & (1 << irq) == 0 || seq.is_some_and(|s| s != p.iret_seq[irq as usize]) {
            return None;
        }
        p.iret_pending &= !(1 << irq);
        Some(std::mem::take(&mut p.delivered[irq as usize]))
    }

    /// Set or clear the VM's boost mark; whether it changed.
    pub(crate) fn mark_boost(&mut self, vm: VmId, on: bool) -> bool {
        let p = self.pic(vm);
        let changed = p.boosted != on;
        p.boosted = on;
        changed
    }

    /// Whether the VM waits for nothing of VPICD's any more: no request,
    /// no IRET pending.
    pub(crate) fn idle(&self, vm: VmId) -> bool {
        self.vms.get(&vm).is_none_or(|p| p.iret_pending == 0 && p.requests.iter().all(Vec::is_empty))
    }

    /// Queue a simulated interrupt for the VM's ring-3 code.
    pub(crate) fn push_ring3(&mut self, vm: VmId, irq: u8, vector: u8) {
        self.pic(vm).ring3.push_back((irq, vector));
    }

    /// The next simulated interrupt the VM's ring-3 code must enter.
    pub(crate) fn pop_ring3(&mut self, vm: VmId) -> Option<(u8, u8)> {
        self.vms.get_mut(&vm).and_then(|p| p.ring3.pop_front())
    }

    /// Whether `vm`'s ring-3 code has a simulated interrupt to enter.
    pub(crate) fn has_ring3(&self, vm: VmId) -> bool {
        self.vms.get(&vm).is_some_and(|p| !p.ring3.is_empty())
    }

    /// Whether any VM's ring-3 code has a simulated interrupt to enter.
    pub(crate) fn ring3_waiting(&self) -> bool {
        self.vms.values().any(|p| !p.ring3.is_empty())
    }

    // ---- the VM's PIC ports ----------------------------------------------------------------

    /// A write to command port 0x20 (`slave` false) or 0xA0.
    pub(crate) fn write_command(&mut self, vm: VmId, slave: bool, value: u8) -> Command {
        let p = self.pic(vm);
        let s = slave as usize;
        let range = if slave { 8..16u8 } else { 0..8u8 };
        if value & 0x10 != 0 {
            // ICW1: everything masked is left as is; the base follows.
            p.icw[s] = Icw::Base { icw4: value & 0x01 != 0 };
            return Command::Nothing;
        }
        if value & 0x08 != 0 {
            // OCW3: which register a read returns.
            if value & 0x02 != 0 {
                p.read_isr[s] = value & 0x01 != 0;
            }
            return Command::Nothing;
        }
        match value & 0xE0 {
            // Non-specific EOI: the highest priority in service.
            0x20 => range
                .filter(|i| p.isr & (1 << i) != 0)
                .min_by_key(|&i| priority(i))
                .map_or(Command::Nothing, Command::Eoi),
            // Specific EOI.
            0x60 => {
                let irq = range.start + (value & 7);
                Command::Eoi(irq)
            }
            _ => Command::Nothing,
        }
    }

    /// A write to data port 0x21 (`slave` false) or 0xA1.
    pub(crate) fn write_data(&mut self, vm: VmId, slave: bool, value: u8) -> Data {
        let p = self.pic(vm);
        let s = slave as usize;
        match p.icw[s] {
            Icw::Base { icw4 } => {
                p.bases[s] = value & 0xF8;
                p.icw[s] = Icw::Cascade { icw4 };
                Data::Init
            }
            Icw::Cascade { icw4 } => {
                p.icw[s] = if icw4 { Icw::Mode } else { Icw::Ready };
                Data::Init
            }
            Icw::Mode => {
                p.icw[s] = Icw::Ready;
                Data::Init
            }
            Icw::Ready => {
                let shift = if slave { 8 } else { 0 };
                let old = p.imr;
                let new = (old & !(0xFF << shift)) | ((value as u16) << shift);
                p.imr = new;
                Data::Mask { masked: new & !old, unmasked: old & !new }
            }
        }
    }

    /// A read of port 0x20/0xA0 (IRR, or ISR after OCW3) or 0x21/0xA1 (IMR).
    /// The IRR bit of an IRQ a device virtualized with
    /// `VPICD_Opt_Read_Hw_IRR` is the physical PIC's.
    pub(crate) fn read(&mut self, vm: VmId, port: u16) -> u8 {
        let slave = port & 0x80 != 0;
        let shift = if slave { 8 } else { 0 };
        let p = self.pic(vm);
        let reg = if port & 1 != 0 {
            p.imr
        } else if p.read_isr[slave as usize] {
            p.isr
        } else {
            let virt = (0..IRQS).filter(|&i| !p.requests[i as usize].is_empty()).fold(0u16, |a, i| a | (1 << i));
            let hw_irr = self.read_hw_irr_mask();
            let phys = (0..IRQS).filter(|&i| self.phys[i as usize].request).fold(0u16, |a, i| a | (1 << i));
            (virt & !hw_irr) | (phys & hw_irr)
        };
        (reg >> shift) as u8
    }

    /// The IRQs some device virtualized with `VPICD_Opt_Read_Hw_IRR`.
    fn read_hw_irr_mask(&self) -> u16 {
        (0..IRQS)
            .filter(|&i| {
                self.chains[i as usize].iter().any(|h| {
                    self.virts.get(*h).is_some_and(|v| v.options & vmm_plugin_api::ddk::VPICD_OPT_READ_HW_IRR != 0)
                })
            })
            .fold(0u16, |a, i| a | (1 << i))
    }

    // ---- status ------------------------------------------------------------------------

    /// `VPICD_Get_Complete_Status` of `irq` in `vm` for the requester `who`.
    pub(crate) fn status(&mut self, vm: VmId, irq: u8, who: Option<Requester>, all_vms: &[VmId]) -> u32 {
        use vmm_plugin_api::ddk::*;
        let phys = self.phys[irq as usize];
        let phys_masked = self.phys_masked(irq, all_vms);
        let route = self.routes[irq as usize];
        let p = self.pic(vm);
        let bit = 1u16 << irq;
        let mut s = 0;
        if p.iret_pending & bit != 0 {
            s |= VPICD_STAT_IRET_PENDING;
        }
        if p.isr & bit != 0 {
            s |= VPICD_STAT_IN_SERVICE;
        }
        if phys_masked {
            s |= VPICD_STAT_PHYS_MASK;
        }
        if phys.in_service {
            s |= VPICD_STAT_PHYS_IN_SERV;
        }
        if p.imr & bit != 0 {
            s |= VPICD_STAT_VIRT_MASK;
        }
        if !p.requests[irq as usize].is_empty() {
            s |= VPICD_STAT_VIRT_REQ;
        }
        if phys.request {
            s |= VPICD_STAT_PHYS_REQ;
        }
        if who.is_some_and(|w| p.requests[irq as usize].contains(&w)) {
            s |= VPICD_STAT_VIRT_DEV_REQ;
        }
        match route {
            DefaultRoute::Global => s |= VPICD_STAT_GLOBAL,
            DefaultRoute::Owned(Some(_)) => s |= VPICD_STAT_OWNED_BY_VM,
            DefaultRoute::Owned(None) => {}
        }
        s
    }

    // ---- the physical PIC --------------------------------------------------------------

    /// Whether the real PIC masks `irq`: the override, else masked iff
    /// every VM (`all_vms`) masks it virtually.
    pub(crate) fn phys_masked(&self, irq: u8, all_vms: &[VmId]) -> bool {
        match self.phys[irq as usize].mode {
            PhysMode::Masked => true,
            PhysMode::Unmasked => false,
            PhysMode::Auto => all_vms
                .iter()
                .all(|vm| self.vms.get(vm).map_or(STARTUP_UNMASKED & (1 << irq) == 0, |p| p.imr & (1 << irq) != 0)),
        }
    }

    /// `Physically_Mask` (Some(true)), `Physically_Unmask` (Some(false)),
    /// `Set_Auto_Masking` (None).
    pub(crate) fn set_phys_mode(&mut self, irq: u8, mode: Option<bool>) {
        self.phys[irq as usize].mode = match mode {
            Some(true) => PhysMode::Masked,
            Some(false) => PhysMode::Unmasked,
            None => PhysMode::Auto,
        };
    }

    /// Make `irq`'s line level-triggered (`true`) or edge-triggered.
    pub(crate) fn set_level(&mut self, irq: u8, level: bool) {
        self.phys[irq as usize].level = level;
    }

    /// The device asserts `irq`: the request bit is set; whether the
    /// interrupt is taken now (unmasked, not in service already). An edge
    /// line's request is consumed when taken; a level line's stays while
    /// the line is asserted.
    pub(crate) fn phys_raise(&mut self, irq: u8, masked: bool) -> bool {
        let p = &mut self.phys[irq as usize];
        p.request = true;
        if masked || p.in_service {
            return false;
        }
        p.request = p.level;
        p.in_service = true;
        true
    }

    /// The device stops asserting `irq`: a level line's request drops (an
    /// edge line's latched request stays); whether the line was asserted.
    pub(crate) fn phys_lower(&mut self, irq: u8) -> bool {
        let p = &mut self.phys[irq as usize];
        if !p.level {
            return false;
        }
        std::mem::replace(&mut p.request, false)
    }

    /// `VPICD_Phys_EOI`: whether a request waits to be taken now.
    pub(crate) fn phys_eoi(&mut self, irq: u8) -> bool {
        let p = &mut self.phys[irq as usize];
        p.in_service = false;
        p.request
    }

    pub(crate) fn phys_request(&self, irq: u8) -> bool {
        self.phys[irq as usize].request
    }

    pub(crate) fn phys_in_service(&self, irq: u8) -> bool {
        self.phys[irq as usize].in_service
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priority_is_the_8259_order_with_the_slave_at_irq_2() {
        let mut order: Vec<u8> = (0..16).collect();
        order.sort_by_key(|&i| priority(i));
        assert_eq!(order, vec![0, 1, 2, 8, 9, 10, 11, 12, 13, 14, 15, 3, 4, 5, 6, 7]);
    }

    /// A device's requester with handle number `n` (these tests need no
    /// descriptor behind it).
    fn dev(n: u32) -> Requester {
        Requester::Device(Handle::from_raw(n))
    }

    #[test]
    fn a_request_waits_behind_a_higher_irq_in_service_and_while_masked() {
        let mut s = VpicdState::default();
        s.write_data(VmId::from_raw(1), false, 0x00);
        s.write_data(VmId::from_raw(1), true, 0x00);
        s.set_request(VmId::from_raw(1), 5, dev(7));
        s.set_request(VmId::from_raw(1), 3, dev(7));
        assert_eq!(s.next_deliverable(VmId::from_raw(1)), Some(3));
        s.begin_delivery(VmId::from_raw(1), 3);
        assert_eq!(s.next_deliverable(VmId::from_raw(1)), None, "IRQ 5 is below IRQ 3 in service");
        assert_eq!(s.write_command(VmId::from_raw(1), false, 0x20), Command::Eoi(3));
        s.end_service(VmId::from_raw(1), 3);
        s.clear_request(VmId::from_raw(1), 3, dev(7));
        assert_eq!(s.next_deliverable(VmId::from_raw(1)), Some(5));
        assert_eq!(s.write_data(VmId::from_raw(1), false, 0x20), Data::Mask { masked: 0x20, unmasked: 0 });
        assert_eq!(s.next_deliverable(VmId::from_raw(1)), None);
    }

    #[test]
    fn a_shared_request_drops_when_every_device_cleared_it() {
        let mut s = VpicdState::default();
        assert!(s.set_request(VmId::from_raw(1), 5, dev(7)));
        assert!(!s.set_request(VmId::from_raw(1), 5, dev(7)), "set twice by one device is one request");
        assert!(s.set_request(VmId::from_raw(1), 5, dev(9)));
        assert!(s.clear_request(VmId::from_raw(1), 5, dev(7)));
        assert!(s.requested(VmId::from_raw(1), 5), "device 9's request stands");
        assert!(s.clear_request(VmId::from_raw(1), 5, dev(9)));
        assert!(!s.requested(VmId::from_raw(1), 5));
        assert!(!s.clear_request(VmId::from_raw(1), 5, dev(9)));
    }

    #[test]
    fn reprogramming_the_base_moves_the_vectors() {
        let mut s = VpicdState::default();
        assert_eq!(s.vector(VmId::from_raw(1), 5), 0x0D);
        assert_eq!(s.vector(VmId::from_raw(1), 10), 0x72);
        assert_eq!(s.write_command(VmId::from_raw(1), false, 0x11), Command::Nothing);
        for w in [0x50, 0x04, 0x01] {
            assert_eq!(s.write_data(VmId::from_raw(1), false, w), Data::Init);
        }
        assert_eq!(s.vector(VmId::from_raw(1), 5), 0x55);
        assert_eq!(s.irq_of_vector(VmId::from_raw(1), 0x55), Some(5));
        assert_eq!(s.irq_of_vector(VmId::from_raw(2), 0x55), None, "other VMs keep their mapping");
    }
}
