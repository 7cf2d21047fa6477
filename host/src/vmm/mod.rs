//! The VMM proper: VMs, time, scheduling, events, the critical section,
//! semaphores, nested execution and the ring-0 heap.

pub(crate) mod callback;
pub mod context;
pub(crate) mod crit;
pub(crate) mod events;
pub(crate) mod heap;
pub(crate) mod ids;
pub(crate) mod io;
pub(crate) mod irq;
pub(crate) mod limits;
pub(crate) mod nest;
pub(crate) mod rng;
pub mod schedule;
pub(crate) mod scheduler;
pub(crate) mod service_hooks;
pub(crate) mod services;
pub(crate) mod slab;
pub(crate) mod timers;
pub(crate) mod vectors;
pub(crate) mod vm;
pub(crate) mod vpicd;
