//! End-to-end tests: every test boots a machine from an inline manifest,
//! with plugins built from this workspace, and asserts on the trace.
//!
//! One test binary, with modules named by concept: the plugins are built
//! once (a nested `cargo build`, see `vmm_testkit::plugin_dir`).

mod boundaries;
mod common;
mod depth;
mod dos;
mod dynamic;
mod explore;
mod faults;
mod foundation;
mod fuzz;
mod hooks;
mod io;
mod kit;
mod limits;
mod loader;
mod pm_vectors;
mod rebuild;
mod ring3;
mod robust_sched;
mod shell;
mod trace_order;
mod v86_vectors;
mod vcomd;
mod violations;
mod vmint;
mod vmm_core;
mod vmm_vxdcall;
mod vpicd;
mod vpostd;
