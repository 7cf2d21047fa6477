//! # Writing VxDs for `vmm`
//!
//! `vmm` emulates the Windows 3.1/95 Virtual Machine Manager. It loads
//! virtual devices (VxDs) written in Rust as `cdylib` plugins, sends them the
//! system control messages, and gives them the VMM services a real VxD used,
//! with the documented semantics. This crate is the whole contract: add it
//! as the only dependency, implement [`VxD`], and export the device with
//! [`declare_virtual_device!`].
//!
//! ## A first VxD
//!
//! `Cargo.toml`:
//!
//! ```toml
//! [package]
//! name = "hello"
//! edition = "2024"
//!
//! [lib]
//! crate-type = ["cdylib", "rlib"]
//!
//! [dependencies]
//! vmm-plugin-api = { path = "../vmm/plugin-api" }
//! ```
//!
//! `src/lib.rs`:
//!
//! ```
//! use vmm_plugin_api::prelude::*;
//!
//! /// A device that counts the VMs it has seen.
//! pub struct Hello {
//!     vms: core::cell::Cell<u32>,
//! }
//!
//! impl VxD for Hello {
//!     // The DDB: name, version, ID, init order, APIs, service table.
//!     const DEVICE: Device = Device::new("HELLO").version(1, 0);
//!
//!     // The factory: every load is a new instance with its own state.
//!     fn create(_vmm: &Vmm<'_>) -> Result<Self, String> {
//!         Ok(Hello { vms: core::cell::Cell::new(0) })
//!     }
//!
//!     // The control procedure: match on the DDK message numbers.
//!     fn control(&self, vmm: &Vmm<'_>, msg: ControlMessage) -> Carry {
//!         match msg.message {
//!             DEVICE_INIT => info!("Hello is initializing in VM {:?}", vmm.get_sys_vm_handle()),
//!             CREATE_VM => self.vms.set(self.vms.get() + 1),
//!             _ => {}
//!         }
//!         Carry::Clear // unhandled messages return with carry clear
//!     }
//! }
//!
//! declare_virtual_device!(Hello);
//! ```
//!
//! `system.ini` (TOML) next to the build output:
//!
//! ```toml
//! [386Enh]
//! device = ["*SHELL", "hello"]
//! ```
//!
//! Then `vmm run system.ini` boots a machine with it, and `vmm list
//! system.ini` shows its DDB.
//!
//! ## The model in five points
//!
//! 1. **One instance per load.** `create` is a factory. A device listed
//!    twice with `UNDEFINED_DEVICE_ID` is loaded twice, as Windows did;
//!    two devices with the same non-zero ID stop Windows unless the second
//!    answers `ABORT_DEVICE_LOAD` in [`VxD::real_mode_init`] (KB Q84000).
//! 2. **`&self` everywhere.** The VMM re-enters devices: an event can run
//!    inline inside a service call, an interrupt can arrive during an API
//!    call. Keep state in [`ReentrancyCell`] or `Cell`; a borrow conflict is
//!    reported as a `REENTRANCY` violation rather than undefined behaviour.
//! 3. **Services are typed.** [`Vmm`] has one method per VMM service, named
//!    after it (`call_priority_vm_event` is `Call_Priority_VM_Event`), with
//!    the DDK's constants in [`ddk`]. Callbacks are closures that get the
//!    device back as `&Self`.
//! 4. **Contexts are checked.** A synchronous service called at interrupt
//!    time, a profile service after init, an unbalanced nested execution:
//!    each is a `violation` record in the trace with a stable code, where real
//!    Windows would have crashed later.
//! 5. **Panics are contained.** Every entry point runs inside
//!    `catch_unwind`; a panic becomes an error result, the host marks the
//!    instance failed, and the machine goes on. Build with `panic = "unwind"`
//!    (the default); the export macro refuses `panic = "abort"`.
//!
//! ## Events and re-entrancy
//!
//! A VxD does its work when the VMM lets it: in events. The rules the
//! emulator enforces are those of the DDK and KB Q75009:
//!
//! * `Call_Priority_VM_Event` runs the callback later, in the target VM, once
//!   its `PEF_*` conditions hold (`PEF_WAIT_FOR_STI`, `PEF_WAIT_NOT_CRIT`,
//!   ...), boosting the VM meanwhile. It runs inline (returning the null
//!   handle) only if you are not at interrupt time, the target is the
//!   current VM, `PEF_ALWAYS_SCHED` is clear and the conditions hold now.
//! * Anything can happen before the callback runs: your device can be
//!   re-entered and schedule again, and several pending callbacks run in no
//!   guaranteed order (usually LIFO; `vmm run --order random --seed N`
//!   shuffles them and re-enters devices with injected interrupts).
//! * At interrupt time (a handler registered with
//!   [`Vmm::register_interrupt`]) only asynchronous services are legal;
//!   schedule an event and do the rest there.
//!
//! ```
//! use core::cell::Cell;
//! use vmm_plugin_api::prelude::*;
//!
//! pub struct Counter {
//!     pending: Cell<u32>,
//! }
//!
//! impl Counter {
//!     /// Called from an interrupt handler: only async services here.
//!     fn on_irq(&self, vmm: &Vmm<'_>) {
//!         self.pending.set(self.pending.get() + 1);
//!         let sys = vmm.get_sys_vm_handle();
//!         let _ = vmm.call_priority_vm_event(
//!             HIGH_PRI_DEVICE_BOOST as i32,
//!             sys,
//!             PEF_WAIT_FOR_STI | PEF_WAIT_NOT_CRIT,
//!             0,
//!             // The callback gets the device back; take *all* pending
//!             // work, since other callbacks may run before or after it.
//!             |dev: &Counter, vmm: &Vmm<'_>, _ev: Event| {
//!                 let n = dev.pending.replace(0);
//!                 vmm.out_debug_string(&format!("handled {n} interrupts"));
//!             },
//!         );
//!     }
//! }
//!
//! impl VxD for Counter {
//!     const DEVICE: Device = Device::new("COUNTER");
//!     fn create(_: &Vmm<'_>) -> Result<Self, String> {
//!         Ok(Counter { pending: Cell::new(0) })
//!     }
//!     fn control(&self, vmm: &Vmm<'_>, msg: ControlMessage) -> Carry {
//!         if msg.message == DEVICE_INIT {
//!             let _ = vmm.register_interrupt("counter", |dev: &Counter, vmm, _irq| dev.on_irq(vmm));
//!         }
//!         Carry::Clear
//!     }
//! }
//! ```
//!
//! Time-outs (`set_global_time_out`, `set_vm_time_out`), the critical
//! section, semaphores and the "call when" services follow the same pattern:
//! a closure that receives `&Self`.
//!
//! ## Logging
//!
//! Use `tracing` through this crate (`info!`, `warn!`, ... are in the
//! prelude). The SDK forwards each event to the host, so it appears in the
//! host's output with the device name, filtered by `RUST_LOG`.
//!
//! ## Compatibility
//!
//! The crate version is the ABI version. The host checks every type layout
//! at load time and refuses a plugin built against an older minor version
//! of this crate, naming the file and the versions.

#![deny(missing_docs)]
#![allow(non_local_definitions)] // emitted by abi_stable's derives

pub mod abi;
mod callback;
pub mod client;
pub mod ddk;
pub mod device;
mod guard;
pub mod handles;
mod log;
pub mod vmm;

pub use abi::{Carry, ClientRegs, CritStatus, ProfileStatus, Regs, ServiceCall, VmInfo, VmmError};
pub use client::Client;
pub use device::{ApiCall, ControlMessage, Device, RealModeInit, VxD};
pub use guard::ReentrancyCell;
pub use handles::{EventHandle, FarPtr, HInstance, HTask, Hwnd, IrqHandle, SemaphoreHandle, TimeoutHandle, VmHandle};
pub use tracing;
pub use vmm::{CritSectionStatus, Event, Profile, ProfileEntry, Timeout, Vmm};

/// One import for plugin authors: the traits, handles, services, DDK
/// constants and logging macros.
pub mod prelude {
    pub use crate::abi::{ApiMode, RealModeInitResult};
    pub use crate::ddk::*;
    pub use crate::{
        ApiCall, Carry, Client, ClientRegs, ControlMessage, CritSectionStatus, Device, Event, EventHandle, FarPtr,
        HInstance, HTask, Hwnd, IrqHandle, Profile, ProfileEntry, ProfileStatus, RealModeInit, ReentrancyCell, Regs,
        SemaphoreHandle, ServiceCall, Timeout, TimeoutHandle, VmHandle, VmInfo, Vmm, VmmError, VxD,
        declare_virtual_device,
    };
    pub use tracing::{debug, error, info, trace, warn};
}

/// Items the export macros expand to; not part of the public API.
#[doc(hidden)]
pub mod __private {
    pub use abi_stable;
    pub use abi_stable::library::{
        __call_root_module_loader as call_root_module_loader, CheckTypeLayout, LibHeader, RootModuleResult,
    };
}
