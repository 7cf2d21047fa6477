//! The `vmm` binary as its users run it: one test binary (it needs
//! `vmm` itself, which only this package's tests are given), with modules
//! by concern. The plugins are built once per process.

mod commands;
mod common;
mod damaged_plugins;
mod explore;
mod scaffold;
