//! WINCOMM.EXE: a Windows application that uses COM1 the way Windows 3.1's
//! COMM.DRV opens a port: through VCD's protected-mode API (VCOMD answers
//! it; INT 2Fh AX=1684h BX=000Eh, function in DX, port number in CX).
//!
//! Command line: `AT... TEXT`: at each time in ms (system time) it asks for
//! COM1 with `Acquire_Port`. When a DOS application keeps the port (CF
//! and ZF set) it prints `WINCOMM: COM1 is in use by a DOS application`
//! and tries again at the next time; once it has the port it writes TEXT
//! to the UART, reads it back by polling LSR (no interrupts: OUT2 stays
//! clear), prints `WINCOMM sent TEXT, got ...`, keeps the port open for
//! [`HOLD_MS`], gives it back with `Free_Port` and exits 0. Exit code 1 if it never got the port, 2 for
//! a bad command line or no VCD API.

use core::cell::{Cell, RefCell};
use std::collections::VecDeque;

use vmm_plugin_api::prelude::*;

/// VCD's device ID.
pub const VCD_DEVICE_ID: u16 = 0x000E;
/// VCD PM API functions (DX).
pub const ACQUIRE_PORT: u16 = 4;
/// DX = 5.
pub const FREE_PORT: u16 = 5;

const COM1: u16 = 0x3F8;

/// The application.
pub struct WinComm {
    /// The times still to try, and the text.
    plan: RefCell<(VecDeque<u32>, String)>,
    /// It has the port (and gives it back at its next step).
    holding: Cell<bool>,
}

/// How long WINCOMM keeps the port open after its bytes came back (ms).
pub const HOLD_MS: u32 = 50;

impl WinComm {
    /// Call VCD's PM API with DX = `function`, CX = 1 (COM1), AL = 0: CF
    /// and ZF after it. `None` without the API.
    fn vcd(r3: &Ring3<'_>, function: u16) -> Option<(bool, bool)> {
        let regs = r3.regs();
        regs.set_ax(W386_GET_DEVICE_API);
        regs.set_bx(VCD_DEVICE_ID);
        regs.set_es_raw(0);
        regs.set_di(0);
        r3.int(0x2F).ok()?;
        let entry = FarPtr::new(regs.es() as u16, regs.di());
        if entry.is_null() {
            return None;
        }
        regs.set_dx(function);
        regs.set_cx(1);
        regs.set_ax(0);
        r3.call(entry, &[]).ok()?;
        Some((regs.carry(), regs.zero()))
    }

    /// Send `text` and read it back (the UART on COM1 loops it back).
    fn talk(r3: &Ring3<'_>, text: &str) -> String {
        let mut got = String::new();
        for b in text.bytes() {
            let _ = r3.out_byte(COM1, b);
            let mut byte = None;
            for _ in 0..16 {
                if r3.in_byte(COM1 + 5).unwrap_or(0) & 0x01 != 0 {
                    byte = r3.in_byte(COM1).ok();
                    break;
                }
            }
            got.push(byte.map_or('?', char::from));
        }
        got
    }

    fn next(&self, r3: &Ring3<'_>) -> Step {
        if self.holding.replace(false) {
            let _ = Self::vcd(r3, FREE_PORT);
            return Step::exit(0);
        }
        loop {
            let (at, text) = {
                let plan = self.plan.borrow();
                (plan.0.front().copied(), plan.1.clone())
            };
            let Some(at) = at else { return Step::exit(1) };
            let now = r3.get_system_time();
            if now < at {
                return Step::sleep(at - now);
            }
            self.plan.borrow_mut().0.pop_front();
            match Self::vcd(r3, ACQUIRE_PORT) {
                None => {
                    r3.print("WINCOMM: no VCD API (INT 2Fh AX=1684h BX=000Eh)");
                    return Step::exit(2);
                }
                Some((true, true)) => r3.print("WINCOMM: COM1 is in use by a DOS application"),
                Some((true, false)) => r3.print("WINCOMM: COM1 cannot be opened"),
                Some((false, _)) => {
                    let got = Self::talk(r3, &text);
                    r3.print(&format!("WINCOMM sent {text}, got {got}"));
                    self.holding.set(true);
                    return Step::sleep(HOLD_MS);
                }
            }
        }
    }
}

impl Module for WinComm {
    const MODULE: ModuleDef = ModuleDef::windows_app("WINCOMM").segments(&[Segment::moveable("_TEXT")]);

    fn create(_: &Ring3<'_>) -> Result<Self, String> {
        Ok(WinComm { plan: RefCell::new((VecDeque::new(), String::new())), holding: Cell::new(false) })
    }

    fn start(&self, r3: &Ring3<'_>, args: &str) -> Step {
        let words: Vec<&str> = args.split_whitespace().collect();
        let Some((text, times)) = words.split_last() else {
            r3.print("WINCOMM: usage: WINCOMM AT... TEXT");
            return Step::exit(2);
        };
        let times: Result<VecDeque<u32>, _> = times.iter().map(|t| t.parse::<u32>()).collect();
        match times {
            Ok(times) if !times.is_empty() => *self.plan.borrow_mut() = (times, text.to_string()),
            _ => {
                r3.print("WINCOMM: usage: WINCOMM AT... TEXT (times in ms)");
                return Step::exit(2);
            }
        }
        self.next(r3)
    }

    fn resume(&self, r3: &Ring3<'_>, _wake: Wake) -> Step {
        self.next(r3)
    }
}

declare_module!(WinComm);
