//! The SHELL device and its state: the pending appy-time events, the
//! message server, the broadcast hooks and the message server's local heap.
//! The built-in device (`*SHELL` in the device list) is this value; the
//! machine holds it too (`Core::shell`), so that the scheduler can dispatch
//! appy-time events. SHELL's services in the other files of `shell/` act
//! on it. Every cell is borrowed for one step, never across a call into a
//! plugin.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;

use crate::time::Instant;
use crate::vmm::callback::Callback;
use crate::vmm::ids::VmId;
use crate::vmm::slab::{Handle, Slab, TAG_APPY, TAG_BROADCAST_HOOK};

/// A pending appy-time event's handle (`_SHELL_CallAtAppyTime`).
pub(crate) type AppyHandle = Handle<AppyRec>;
/// A broadcast hook's handle (`_SHELL_HookSystemBroadcast`).
pub(crate) type HookHandle = Handle<HookRec>;

/// Where the message server (MSGSRV32, the application appy-time callbacks
/// run in) is in its life.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Default)]
pub(crate) enum Server {
    /// Windows has not finished starting (or `[shell] message_server` is
    /// off): appy time is not available yet.
    #[default]
    NotStarted,
    /// Appy time is available.
    Running,
    /// It faulted in a call made for an appy-time service: appy time is
    /// unavailable for good.
    Faulted,
}

/// The SHELL device: its state (its services are `impl Builtin for Shell`
/// in `shell/mod.rs`).
pub(crate) struct Shell {
    /// Pending appy-time events.
    pub(super) appy: RefCell<Slab<AppyRec>>,
    /// Sequence numbers of appy-time events (their request order).
    pub(super) appy_seq: Cell<u64>,
    /// Appy-time callbacks on the host stack (they never nest).
    pub(super) appy_depth: Cell<u32>,
    /// The message server.
    pub(super) server: Cell<Server>,
    /// The message server's task (the current task at appy time).
    pub(super) server_task: Cell<u16>,
    /// The shell's task: the first `[windows] load` application.
    pub(super) shell_task: Cell<u16>,
    /// `_SHELL_HookSystemBroadcast` hooks.
    pub(super) hooks: RefCell<Slab<HookRec>>,
    /// Registration order of hooks (ties of equal call order).
    pub(super) hook_seq: Cell<u64>,
    /// The message server's local heap (`_SHELL_LocalAllocEx`).
    pub(super) local: RefCell<LocalHeap>,
    /// How many of `[shell] answers` message boxes have used.
    pub(super) answers_used: Cell<usize>,
    /// Messages the VMM queued for the user about a VM it is ending
    /// (VPICD's IRQ conflict): SHELL shows them, system-modal, when the
    /// VM becomes not executeable.
    pub(super) system_messages: RefCell<Vec<SystemMessage>>,
}

/// A message for the user about a VM the VMM ends, queued by the machine
/// (which may not call SHELL itself) and shown by SHELL.
pub(crate) struct SystemMessage {
    /// The VM being ended.
    pub(crate) vm: VmId,
    /// The device on whose behalf it is shown.
    pub(crate) device: &'static str,
    pub(crate) text: String,
}

impl Shell {
    /// Queue a message for the user about `vm`, which the VMM is ending;
    /// one per VM and device however often it is queued. SHELL shows it
    /// when the VM becomes not executeable.
    pub(crate) fn queue_system_message(&self, message: SystemMessage) {
        let mut queued = self.system_messages.borrow_mut();
        if !queued.iter().any(|m| m.vm == message.vm && m.device == message.device) {
            queued.push(message);
        }
    }

    /// Drop the messages queued about `vm` (it is gone; no SHELL showed
    /// them).
    pub(crate) fn forget_system_messages(&self, vm: VmId) {
        self.system_messages.borrow_mut().retain(|m| m.vm != vm);
    }
}

impl Default for Shell {
    fn default() -> Self {
        Shell {
            appy: RefCell::new(Slab::new(TAG_APPY)),
            appy_seq: Cell::new(0),
            appy_depth: Cell::new(0),
            server: Cell::new(Server::NotStarted),
            server_task: Cell::new(0),
            shell_task: Cell::new(0),
            hooks: RefCell::new(Slab::new(TAG_BROADCAST_HOOK)),
            hook_seq: Cell::new(0),
            local: RefCell::new(LocalHeap::default()),
            answers_used: Cell::new(0),
            system_messages: RefCell::new(Vec::new()),
        }
    }
}

/// A pending appy-time event.
pub(crate) struct AppyRec {
    /// `CAAFL_*` as registered.
    pub(super) flags: u32,
    /// Request order (and the identity its time-out timer checks).
    pub(super) seq: u64,
    pub(super) scheduled_at: Instant,
    pub(super) cb: Callback,
}

/// A broadcast hook (taken out of its slot while it runs).
pub(crate) struct HookRec {
    pub(super) order: u32,
    pub(super) seq: u64,
    pub(super) cb: Option<Callback>,
}

// ---- the message server's local heap ----------------------------------------

/// The selector of the message server's data segment. It is not of the
/// form module segments get (0x0107, 0x010F, ...), so it never aliases
/// code.
pub(crate) const LOCAL_HEAP_SELECTOR: u16 = 0x00A7;
/// The segment's size.
pub(crate) const SEGMENT_SIZE: u32 = 0x1_0000;
/// Offsets below this hold the local heap's own header.
const FIRST_OFFSET: u32 = 0x0010;
/// Each block is preceded by an arena header, as in Win16.
const ARENA: u32 = 4;
/// Blocks start on dword boundaries.
const ALIGN: u32 = 4;

/// The local heap's blocks (offset → size) and where its segment lives.
#[derive(Default)]
pub(crate) struct LocalHeap {
    /// Linear address of the segment (0 until the first allocation).
    base: u32,
    blocks: BTreeMap<u32, u32>,
}

fn span(size: u32) -> u32 {
    (size + ARENA).next_multiple_of(ALIGN)
}

impl LocalHeap {
    /// First fit: the offset of a new block of `size` bytes.
    pub(crate) fn allocate(&mut self, size: u32) -> Option<u32> {
        let need = span(size);
        let mut cursor = FIRST_OFFSET;
        let mut found = None;
        for (&offset, &len) in &self.blocks {
            let start = offset - ARENA;
            if start - cursor >= need {
                found = Some(cursor);
                break;
            }
            cursor = start + span(len);
        }
        let start = match found {
            Some(s) => s,
            None if SEGMENT_SIZE - cursor >= need => cursor,
            None => return None,
        };
        self.blocks.insert(start + ARENA, size);
        Some(start + ARENA)
    }

    /// Free the block at `offset`; `false` if there is none.
    pub(crate) fn free(&mut self, offset: u32) -> bool {
        self.blocks.remove(&offset).is_some()
    }

    /// The segment's linear address (0 until it is allocated).
    pub(crate) fn base(&self) -> u32 {
        self.base
    }

    /// Where the segment was allocated.
    pub(crate) fn set_base(&mut self, base: u32) {
        self.base = base;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_heap_blocks_are_first_fit_and_the_segment_runs_out() {
        let mut h = LocalHeap::default();
        let a = h.allocate(10).unwrap();
        let b = h.allocate(10).unwrap();
        assert_eq!(a, FIRST_OFFSET + ARENA);
        assert_eq!(b, a + span(10));
        assert!(h.free(a));
        assert!(!h.free(a), "a block is freed once");
        assert_eq!(h.allocate(8), Some(a), "the freed hole is reused");
        assert!(h.allocate(0xF000).is_some());
        assert_eq!(h.allocate(0x2000), None, "64 KB is all there is");
    }
}
