//! VCD's protected-mode API: how the system VM's COMM.DRV asks for a COM
//! port (section 8.1.7 of the virtual-hardware reference; KB Q76564's
//! trigger 7).
//!
//! The entry is found with INT 2Fh AX=1684h BX=000Eh (VCD's device ID,
//! [`VCD_DEVICE_ID`]) and far-called with the function in DX and the port
//! number (1 = COM1, the only port VCOMD has) in CX. Only the system VM
//! may call it: another VM gets CF set and AX = [`ERR_NOT_SYSTEM_VM`].
//!
//! | DX | Function | Entry | Exit |
//! |---|---|---|---|
//! | 0 | Get_Version | — | AX = 030Ah |
//! | 1 | Get_Port_Array | — | AX = a bit per port (bit 0: COM1) |
//! | 2 | Get_Port_Behavior | CX = port | BX:AX = AutoAssign: FFFF:FFFF ask, 0 take, else ms of idle time |
//! | 3 | Set_Port_Behavior | CX = port, BX:AX = as above | the rule from now on |
//! | 4 | Acquire_Port | CX = port, AL = flags | CF clear: the system VM owns the port; CF **and ZF** set: a DOS VM keeps it |
//! | 5 | Free_Port | CX = port | CF clear; CF set if the system VM did not own it |
//! | 6 | Steal_Port | CX = port | CF clear: the system VM owns it, taken from anyone without asking |
//!
//! Acquire_Port is an ownership request of the system VM, decided as any
//! other (`request`: a free port, AutoAssign 0, an idle owner, a refusal
//! without a dialog for a VM that lost before, else SHELL's dialog). AL bit
//! 0 (force) clears the system VM's lost-a-contention mark first, so the
//! user is asked again; bits 1 (a 3.1 COMM.DRV) and 2 (a mouse on the port)
//! change nothing here. Every function that moves the port leaves a
//! `contention` record (`free`, `steal`, `idle`, `user_kept`, `user_gave`,
//! `refused` for Acquire_Port, `steal_port` for Steal_Port, `released` for
//! Free_Port); each call is a `vcomd_pm_api` note (vm, function, port).

use vmm_plugin_api::prelude::*;

use crate::{Rule, Vcomd};

/// VCD's device ID: the BX of INT 2Fh AX=1684h that finds this API.
pub const VCD_DEVICE_ID: u16 = 0x000E;
/// Get_Version's AX (VCD 3.10).
pub const VERSION: u16 = 0x030A;

/// DX: the functions.
pub const GET_VERSION: u16 = 0;
/// DX = 1.
pub const GET_PORT_ARRAY: u16 = 1;
/// DX = 2.
pub const GET_PORT_BEHAVIOR: u16 = 2;
/// DX = 3.
pub const SET_PORT_BEHAVIOR: u16 = 3;
/// DX = 4.
pub const ACQUIRE_PORT: u16 = 4;
/// DX = 5.
pub const FREE_PORT: u16 = 5;
/// DX = 6.
pub const STEAL_PORT: u16 = 6;

/// Acquire_Port's AL bit 0: ask again even after a lost contention.
pub const ACQUIRE_FORCE: u8 = 0x01;

/// AX when CF is set: the caller is not the system VM.
pub const ERR_NOT_SYSTEM_VM: u16 = 1;
/// AX when CF is set: CX names a port VCOMD does not have.
pub const ERR_NO_SUCH_PORT: u16 = 2;
/// AX when CF is set: DX is not a function.
pub const ERR_BAD_FUNCTION: u16 = 3;
/// AX when CF is set: Free_Port of a port the system VM does not own.
pub const ERR_NOT_OWNER: u16 = 4;
/// AX when CF (and ZF) are set: Acquire_Port lost, a DOS VM keeps the port.
pub const ERR_OWNED_BY_DOS: u16 = 5;
/// AX when CF is set: Set_Port_Behavior with a value below -1.
pub const ERR_BAD_BEHAVIOR: u16 = 6;

fn fail(c: &Client<'_>, code: u16, zero: bool) {
    c.set_ax(code);
    let f = c.eflags() | CF_MASK;
    c.set_eflags(if zero { f | ZF_MASK } else { f & !ZF_MASK });
}

fn ok(c: &Client<'_>) {
    c.set_eflags(c.eflags() & !(CF_MASK | ZF_MASK));
}

/// AutoAssign as the API carries it in BX:AX.
pub fn behavior_value(rule: Rule) -> u32 {
    match rule {
        Rule::Ask => u32::MAX,
        Rule::Steal => 0,
        Rule::IdleMs(ms) => ms,
    }
}

/// The rule a Set_Port_Behavior value asks for; `None` below -1.
pub fn behavior_rule(value: u32) -> Option<Rule> {
    match value as i32 {
        -1 => Some(Rule::Ask),
        0 => Some(Rule::Steal),
        ms if ms > 0 => Some(Rule::IdleMs(ms as u32)),
        _ => None,
    }
}

impl Vcomd {
    /// The API procedure (INT 2Fh AX=1684h BX=000Eh in the system VM).
    pub(crate) fn pm_api_call(&self, vmm: &Vmm<'_>, call: ApiCall<'_>) {
        let c = call.client;
        let (function, port) = (c.dx(), c.cx());
        let _ = vmm.trace_note(
            "vcomd_pm_api",
            &[("vm", call.vm.into()), ("function", u32::from(function).into()), ("port", u32::from(port).into())],
        );
        if !vmm.test_sys_vm_handle(call.vm) {
            return fail(&c, ERR_NOT_SYSTEM_VM, false);
        }
        match function {
            GET_VERSION => {
                c.set_ax(VERSION);
                return ok(&c);
            }
            GET_PORT_ARRAY => {
                c.set_ax(0x0001);
                return ok(&c);
            }
            GET_PORT_BEHAVIOR..=STEAL_PORT => {}
            _ => return fail(&c, ERR_BAD_FUNCTION, false),
        }
        if port != 1 {
            return fail(&c, ERR_NO_SUCH_PORT, false);
        }
        let sys = call.vm;
        match function {
            GET_PORT_BEHAVIOR => {
                let v = behavior_value(self.rule.get());
                c.set_ax(v as u16);
                c.set_bx((v >> 16) as u16);
                ok(&c);
            }
            SET_PORT_BEHAVIOR => match behavior_rule((u32::from(c.bx()) << 16) | u32::from(c.ax())) {
                Some(rule) => {
                    self.rule.set(rule);
                    info!("VCOMD: COM1's AutoAssign set through the PM API: {rule:?}");
                    ok(&c);
                }
                None => fail(&c, ERR_BAD_BEHAVIOR, false),
            },
            ACQUIRE_PORT => {
                if self.owner.get() == Some(sys) {
                    return ok(&c);
                }
                if c.al() & ACQUIRE_FORCE != 0 {
                    self.vms.borrow_mut().entry(sys).or_default().contended = false;
                }
                if self.request(vmm, sys) { ok(&c) } else { fail(&c, ERR_OWNED_BY_DOS, true) }
            }
            FREE_PORT => {
                if self.owner.get() != Some(sys) {
                    return fail(&c, ERR_NOT_OWNER, false);
                }
                self.release(vmm, sys);
                ok(&c);
            }
            STEAL_PORT => {
                if self.owner.get() != Some(sys) {
                    self.take(vmm, sys, crate::Decision::StealPort);
                }
                ok(&c);
            }
            _ => unreachable!("functions checked above"),
        }
    }
}
