//! Execution contexts: what the VMM was doing when a device's code runs,
//! which decides the services it may call.

use serde::Serialize;

/// The context a device's code runs in.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Context {
    /// Real-mode init and the three init phases (`Sys_Critical_Init`,
    /// `Device_Init`, `Init_Complete`): profile services are legal.
    Init,
    /// Other system control messages.
    Control,
    /// On behalf of a VM: an API procedure, a service called from one.
    Vm,
    /// An event, time-out or "call when" callback ("event time").
    Event,
    /// A simulated hardware interrupt that re-entered the VMM: only
    /// asynchronous services are legal.
    Interrupt,
    /// An appy-time callback in the system VM.
    Appy,
    /// Ring-3 code of a program or DLL.
    Ring3,
}

impl Context {
    /// The name used in traces and messages.
    pub fn name(self) -> &'static str {
        match self {
            Context::Init => "init",
            Context::Control => "control",
            Context::Vm => "vm",
            Context::Event => "event",
            Context::Interrupt => "interrupt",
            Context::Appy => "appy",
            Context::Ring3 => "ring3",
        }
    }
}
