#![forbid(unsafe_code)]
//! Placeholder docs.

mod bus;
mod cpu;
mod exec;

pub use bus::{Bus, Memory};
pub use cpu::{
    AX, BP, BX, CS, CX, Cpu, DI, DS, DX, Delivery, ES, Exit, ExitReason, IntKind, SI, SP, SS, Size, flags, vector,
};
