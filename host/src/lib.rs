//! `vmm`: an emulator of the Windows 3.1/95 Virtual Machine Manager that
//! hosts VxDs written as Rust plugins.
//!
//! The library is what the `vmm` binary, the end-to-end tests and plugin
//! authors' own tests drive: build a [`Manifest`], create a [`Machine`],
//! boot it, run it, shut it down, and read its trace. See ARCHITECTURE.md
//! for the map of the modules.

pub(crate) mod abi;
pub mod boot;
pub mod bounded;
pub(crate) mod builtin;
pub mod cargo;
pub(crate) mod dispatch;
pub mod dynamic;
pub mod error;
pub mod expect;
pub mod explore;
pub mod hw;
pub mod image;
pub mod loader;
pub mod machine;
pub mod manifest;
mod origin;
pub(crate) mod profile;
mod reclaim;
pub mod resolve;
pub(crate) mod ring3;
pub(crate) mod shell;
pub mod time;
pub mod timeline;
pub mod trace;
pub mod violation;
pub mod vmm;
mod vpicd;
mod vxdldr;
#[cfg(feature = "watch")]
pub mod watch;

pub use error::{Error, LoadCause, Result};
pub use machine::{Machine, MachineOptions, Phase};
pub use manifest::{Manifest, ManifestBuilder};
pub use trace::{TraceEvent, TraceRecord};
