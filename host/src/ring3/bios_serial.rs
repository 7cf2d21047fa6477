//! INT 14h, the BIOS's serial-port services, for ring-3 code of any VM
//! (DOS machine code and Rust modules alike). The BIOS reaches the UART as
//! a program would, through the port table: a device that traps COM1
//! (VCOMD) sees each access as the calling VM's, and its own INT 14h hook
//! (Hook_V86_Int_Chain) sees the call first.
//!
//! | AH | Function | What it does here |
//! |---|---|---|
//! | 00h | Initialize | AL: baud (bits 7-5: 110 … 9600), parity, stop bits and word length (bits 4-0) into the divisor latch and LCR; IER = 0; returns AH = LSR, AL = MSR |
//! | 01h | Send AL | Reads LSR; when the transmitter holding register is empty writes AL to THR and returns AH = that LSR, else AH bit 7 (time-out) |
//! | 02h | Receive | Reads LSR; with data ready returns AL = RBR and AH = LSR's error bits, else AH = error bits + bit 7 (time-out) |
//! | 03h | Status | AH = LSR, AL = MSR |
//!
//! DX is the port: 0 is COM1 (base 3F8h); any other returns AH = 80h
//! (time-out) without touching a port, as a BIOS does for a port it has
//! no base address for. The BIOS's wait is not modelled: the time-out
//! comes at once, a program polls again. Other functions (the extended
//! 04h/05h) are an `UNSUPPORTED_INTERRUPT` violation with CF set.

use vmm_plugin_api::abi::VmmError;

use crate::machine::Core;
use crate::violation::Violation;
use crate::vmm::io::{BYTE_INPUT, BYTE_OUTPUT};

/// COM1's base port.
const COM1: u16 = 0x3F8;
/// AH bit 7: time-out.
const TIME_OUT: u8 = 0x80;
/// The divisors of AL bits 7-5 (110, 150, 300, 600, 1200, 2400, 4800,
/// 9600 baud at 1.8432 MHz).
const DIVISORS: [u16; 8] = [1047, 768, 384, 192, 96, 48, 24, 12];

impl Core {
    /// INT 14h on the current VM's client registers.
    pub(crate) fn bios_int14(&self) -> Result<(), VmmError> {
        let vm = self.cur_vm.get();
        let Some(c) = self.client_of(vm) else { return Err(VmmError::INVALID_HANDLE) };
        let (ah, al, dx) = ((c.eax >> 8) as u8, c.eax as u8, c.edx as u16);
        if dx != 0 {
            self.set_ax14(vm, TIME_OUT, al);
            return Ok(());
        }
        let inb = |off: u16| self.port_io(vm, COM1 + off, BYTE_INPUT, 0) as u8;
        let outb = |off: u16, v: u8| {
            self.port_io(vm, COM1 + off, BYTE_OUTPUT, u32::from(v));
        };
        let (ah_out, al_out) = match ah {
            0x00 => {
                let lcr = al & 0x1F;
                let divisor = DIVISORS[usize::from(al >> 5)];
                outb(3, lcr | 0x80);
                outb(0, divisor as u8);
                outb(1, (divisor >> 8) as u8);
                outb(3, lcr);
                outb(1, 0);
                (inb(5), inb(6))
            }
            0x01 => {
                let lsr = inb(5);
                if lsr & 0x20 != 0 {
                    outb(0, al);
                    (lsr & 0x7F, al)
                } else {
                    (lsr | TIME_OUT, al)
                }
            }
            0x02 => {
                let lsr = inb(5);
                if lsr & 0x01 != 0 { (lsr & 0x1E, inb(0)) } else { ((lsr & 0x1E) | TIME_OUT, al) }
            }
            0x03 => (inb(5), inb(6)),
            _ => {
                return Err(self.refuse(
                    Violation::UnsupportedInterrupt,
                    format!(
                        "INT 14h AH={ah:02X}h: this emulator's BIOS serves the serial functions 00h-03h only; CF \
                         is set"
                    ),
                    Some("INT"),
                ));
            }
        };
        self.set_ax14(vm, ah_out, al_out);
        Ok(())
    }

    /// AX of INT 14h's return, on the client registers as the handlers left
    /// them.
    fn set_ax14(&self, vm: crate::vmm::ids::VmId, ah: u8, al: u8) {
        if let Some(mut c) = self.client_of(vm) {
            c.eax = (c.eax & 0xFFFF_0000) | (u32::from(ah) << 8) | u32::from(al);
            self.set_client_of(vm, c);
        }
    }
}
