//! Simulated hardware interrupt sources. A device registers a source with a
//! handler; the manifest (`[[interrupt]]`), a test, the device itself, or
//! the explored orders' injection raises it, and the handler runs at
//! interrupt time, where only asynchronous services are legal. The
//! sources' table is here; registering, requesting and taking them is the
//! machine's (`machine/irq.rs`).

use crate::vmm::callback::Callback;
use crate::vmm::slab::{Handle, Slab, TAG_IRQ};

/// An interrupt source's handle.
pub(crate) type IrqHandle = Handle<Irq>;

/// A registered interrupt source.
pub(crate) struct Irq {
    /// The name the manifest refers to.
    pub(crate) name: String,
    /// The handler (taken out while it runs).
    pub(crate) handler: Option<Callback>,
    /// Requests not yet taken.
    pub(crate) pending: u32,
}

/// The interrupt-source table.
pub(crate) fn sources() -> Slab<Irq> {
    Slab::new(TAG_IRQ)
}
