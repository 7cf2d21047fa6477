//! Virtual-time timers: everything that happens at a moment of system time
//! (global time-outs, priority-event and appy-time time-outs, manifest interrupts and
//! actions, VM creation, ring-3 sleeps), plus `Set_VM_Time_Out`s, which
//! expire on a VM's own execution time. The machine's timers belong to
//! its [`Scheduler`](crate::vmm::scheduler::Scheduler).

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap};

use crate::time::{Duration, Instant};
use crate::vmm::callback::Callback;
use crate::vmm::events::EventHandle;
use crate::vmm::ids::VmId;
use crate::vmm::slab::Handle;
use crate::vmm::slab::{Slab, TAG_TIMEOUT};

/// A time-out's handle (`Set_Global_Time_Out`, `Set_VM_Time_Out`).
pub(crate) type TimeoutHandle = Handle<TimeoutRec>;

/// Something that happens at a moment of system time.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum TimerKind {
    /// A `Set_Global_Time_Out` expires.
    Timeout(TimeoutHandle),
    /// A priority event's `PEF_Time_Out` expires (handle, sequence).
    EventTimeout(EventHandle, u64),
    /// An appy-time event's `CAAFL_TIMEOUT` expires (handle, sequence).
    AppyTimeout(u32, u64),
    /// A `[[interrupt]]` entry fires (index, repetition).
    Interrupt(usize, u32),
    /// An `[[action]]` entry fires.
    Action(usize),
    /// A `[[vm]]` entry's VM is created.
    CreateVm(usize),
    /// A ring-3 program's sleep ends (its program number).
    Wake(u32),
    /// The machine stops (`--until`).
    Stop,
    /// VPICD: a simulated interrupt's `VID_IRET_Time_Out` passes (the VM,
    /// the IRQ, and which delivery).
    VirtualIret { vm: VmId, irq: u8, seq: u64 },
    /// VPICD ends a VM that unmasked an IRQ another VM owns (not from inside
    /// the VM's own port access: at the next timer point).
    IrqConflict(VmId),
    /// A `[[irq]]` entry asserts its physical IRQ (index, repetition).
    PhysIrq(usize, u32),
    /// A level-triggered `[[irq]]` entry's `hold` passed: its line drops.
    PhysIrqLower(u8),
    /// A VM that `Nuke_VM` or `Crash_Cur_VM` ended while it was current is
    /// destroyed (VM, `VNE_*` flags).
    EndVm(VmId, u32),
}

/// When a time-out expires.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum Due {
    /// At this system time (`Set_Global_Time_Out`).
    System(Instant),
    /// When the VM's execution time reaches this (`Set_VM_Time_Out`).
    Exec(VmId, Duration),
}

/// A pending time-out.
pub(crate) struct TimeoutRec {
    pub(crate) due: Due,
    pub(crate) ms: u32,
    pub(crate) cb: Callback,
}

/// All timers.
pub(crate) struct Timers {
    heap: BinaryHeap<Reverse<(Instant, u64, TimerKind)>>,
    seq: u64,
    pub(crate) timeouts: Slab<TimeoutRec>,
    /// `Set_VM_Time_Out`s by (VM, due execution time, handle).
    vm_due: BTreeSet<(VmId, Duration, TimeoutHandle)>,
    /// `Stop` timers in the heap.
    stops: usize,
}

impl Default for Timers {
    fn default() -> Self {
        Timers { heap: BinaryHeap::new(), seq: 0, timeouts: Slab::new(TAG_TIMEOUT), vm_due: BTreeSet::new(), stops: 0 }
    }
}

impl Timers {
    /// Schedule `kind` at `due`; timers due at the same moment fire in the
    /// order they were scheduled.
    pub(crate) fn at(&mut self, due: Instant, kind: TimerKind) {
        self.seq += 1;
        self.stops += usize::from(kind == TimerKind::Stop);
        self.heap.push(Reverse((due, self.seq, kind)));
    }

    /// The earliest timer, if it is due at or before `now`.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<(Instant, TimerKind)> {
        match self.heap.peek() {
            Some(Reverse((due, _, _))) if *due <= now => {
                let (d, k) = self.heap.pop().map(|Reverse((d, _, k))| (d, k))?;
                self.stops -= usize::from(k == TimerKind::Stop);
                Some((d, k))
            }
            _ => None,
        }
    }

    /// Whether every timer in the heap is a `Stop` (nothing but the end of
    /// the run is scheduled; `Set_VM_Time_Out`s are not in the heap).
    pub(crate) fn only_stops(&self) -> bool {
        self.heap.len() == self.stops
    }

    /// When the next timer is due.
    pub(crate) fn next_due(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((d, _, _))| *d)
    }

    /// Remove a timer that must not fire (an appy-time event that ran or was
    /// cancelled before its time-out): a stale one would keep an otherwise
    /// idle machine running until it came due.
    pub(crate) fn cancel(&mut self, kind: TimerKind) {
        self.heap.retain(|Reverse((_, _, k))| *k != kind);
        self.stops = self.heap.iter().filter(|Reverse((_, _, k))| *k == TimerKind::Stop).count();
    }

    /// Whether any timer other than `Stop` is scheduled.
    pub(crate) fn has_pending(&self) -> bool {
        self.heap.iter().any(|Reverse((_, _, k))| *k != TimerKind::Stop)
    }

    /// Add a time-out; its handle.
    pub(crate) fn add_timeout(&mut self, rec: TimeoutRec) -> Option<TimeoutHandle> {
        let due = rec.due;
        let handle = self.timeouts.insert(rec)?;
        match due {
            Due::System(at) => self.at(at, TimerKind::Timeout(handle)),
            Due::Exec(vm, exec) => {
                self.vm_due.insert((vm, exec, handle));
            }
        }
        Some(handle)
    }

    /// Remove a time-out (cancelled or expired).
    pub(crate) fn remove_timeout(&mut self, handle: TimeoutHandle) -> Option<TimeoutRec> {
        let rec = self.timeouts.remove(handle)?;
        if let Due::Exec(vm, exec) = rec.due {
            self.vm_due.remove(&(vm, exec, handle));
        }
        Some(rec)
    }

    /// The earliest `Set_VM_Time_Out` of `vm`: (due execution time, handle).
    #[inline]
    pub(crate) fn next_vm_timeout(&self, vm: VmId) -> Option<(Duration, TimeoutHandle)> {
        if self.vm_due.is_empty() {
            return None;
        }
        self.vm_due
            .range((vm, Duration::ZERO, TimeoutHandle::from_raw(0))..)
            .next()
            .filter(|(v, _, _)| *v == vm)
            .map(|(_, d, h)| (*d, *h))
    }

    /// Whether any VM has a pending `Set_VM_Time_Out`.
    pub(crate) fn has_vm_timeouts(&self) -> bool {
        !self.vm_due.is_empty()
    }

    /// Whether `vm` has a pending `Set_VM_Time_Out`.
    #[inline]
    pub(crate) fn vm_has_timeouts(&self, vm: VmId) -> bool {
        self.next_vm_timeout(vm).is_some()
    }
}
