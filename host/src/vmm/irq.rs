//! Simulated hardware interrupt sources. A device registers a source with a
//! handler; the manifest (`[[interrupt]]`), a test, the device itself, or
//! the explored orders' injection raises it, and the handler runs at
//! interrupt time, where only asynchronous services are legal. The
//! sources' table and its requests are here; running a handler (context,
//! trace, scheduling) is the machine's (`machine/irq.rs`).

use std::cell::{Cell, RefCell};

use crate::vmm::callback::Callback;
use crate::vmm::ids::InstanceId;
use crate::vmm::slab::{Handle, Slab, TAG_IRQ};

/// An interrupt source's handle.
pub(crate) type IrqHandle = Handle<Irq>;

/// A registered interrupt source.
pub(crate) struct Irq {
    /// The name the manifest refers to.
    name: String,
    /// The handler (taken out while it runs).
    handler: Option<Callback>,
    /// Requests not yet taken.
    pending: u32,
}

/// Why a source was not registered.
pub(crate) enum RegisterError {
    /// A source of that name exists.
    Duplicate,
    /// The table is full.
    Full,
}

/// The interrupt-source table and whether any source has requests not yet
/// taken.
pub(crate) struct IrqSources {
    table: RefCell<Slab<Irq>>,
    pending: Cell<bool>,
}

impl IrqSources {
    pub(crate) fn new() -> Self {
        IrqSources { table: RefCell::new(Slab::new(TAG_IRQ)), pending: Cell::new(false) }
    }

    /// Register a source named `name` (names compare without case).
    pub(crate) fn register(&self, name: &str, handler: Callback) -> Result<IrqHandle, RegisterError> {
        if self.by_name(name).is_some() {
            return Err(RegisterError::Duplicate);
        }
        self.table
            .borrow_mut()
            .insert(Irq { name: name.to_string(), handler: Some(handler), pending: 0 })
            .ok_or(RegisterError::Full)
    }

    /// One more request of `irq`; `false` for a handle that is not live.
    /// Requests only ever count up to `u32::MAX`: beyond that they merge,
    /// as a PIC's request line does (never a wrap to 0).
    pub(crate) fn request(&self, irq: IrqHandle) -> bool {
        let mut table = self.table.borrow_mut();
        let Some(i) = table.get_mut(irq) else { return false };
        i.pending = i.pending.saturating_add(1);
        self.pending.set(true);
        true
    }

    /// The source named `name`.
    pub(crate) fn by_name(&self, name: &str) -> Option<IrqHandle> {
        self.table.borrow().iter().find(|(_, i)| i.name.eq_ignore_ascii_case(name)).map(|(h, _)| h)
    }

    /// The sources' names, in table order.
    pub(crate) fn names(&self) -> Vec<String> {
        self.table.borrow().iter().map(|(_, i)| i.name.clone()).collect()
    }

    /// Whether some source may have requests not yet taken.
    #[inline(always)]
    pub(crate) fn any_requested(&self) -> bool {
        self.pending.get()
    }

    /// The sources with requests, clearing the flag that says so.
    pub(crate) fn take_requested(&self) -> Vec<IrqHandle> {
        self.pending.set(false);
        self.table.borrow().iter().filter(|(_, i)| i.pending > 0).map(|(h, _)| h).collect()
    }

    /// Take one request of `irq`; `false` when it has none left.
    pub(crate) fn take_request(&self, irq: IrqHandle) -> bool {
        match self.table.borrow_mut().get_mut(irq) {
            Some(i) if i.pending > 0 => {
                i.pending -= 1;
                true
            }
            _ => false,
        }
    }

    /// Take `irq`'s handler out to run it, with the source's name (`None`
    /// while it runs, or for a handle that is not live).
    pub(crate) fn take_handler(&self, irq: IrqHandle) -> Option<(Callback, String)> {
        let mut table = self.table.borrow_mut();
        table.get_mut(irq).and_then(|i| i.handler.take().map(|cb| (cb, i.name.clone())))
    }

    /// Put a handler taken with [`IrqSources::take_handler`] back (dropped
    /// if its source went away meanwhile).
    pub(crate) fn put_handler(&self, irq: IrqHandle, handler: Callback) {
        if let Some(i) = self.table.borrow_mut().get_mut(irq) {
            i.handler = Some(handler);
        }
    }

    /// How many sources are registered.
    pub(crate) fn len(&self) -> usize {
        self.table.borrow().len()
    }

    /// The `n`th source in table order.
    pub(crate) fn nth(&self, n: usize) -> Option<IrqHandle> {
        self.table.borrow().iter().nth(n).map(|(h, _)| h)
    }

    /// Remove the sources whose handler `instance` owns; returns their
    /// names.
    pub(crate) fn remove_owned_by(&self, instance: InstanceId) -> Vec<String> {
        let owned: Vec<IrqHandle> = self
            .table
            .borrow()
            .iter()
            .filter(|(_, i)| i.handler.as_ref().is_some_and(|cb| cb.owner() == instance))
            .map(|(h, _)| h)
            .collect();
        // Dropped after the table is released: a callback's drop runs in
        // its plugin.
        let removed: Vec<Irq> = {
            let mut table = self.table.borrow_mut();
            owned.into_iter().filter_map(|h| table.remove(h)).collect()
        };
        removed.into_iter().map(|i| i.name).collect()
    }
}
