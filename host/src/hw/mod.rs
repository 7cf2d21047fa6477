//! Hardware models: what an untrapped port reaches. A model is plain data
//! with no knowledge of the machine (it imports nothing of the crate);
//! `machine/io.rs` routes a VM's untrapped access to it.

pub mod uart;
