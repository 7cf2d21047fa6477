//! A 16450-style UART with a loopback plug on its connector: COM1 at
//! 0x3F8-0x3FF when the manifest says `[machine] com1 = "loopback"`.
//!
//! Registers (offset from the base; DLAB is LCR bit 7):
//!
//! | Offset | Read | Write |
//! |---|---|---|
//! | 0 | RBR (DLAB 0), DLL (DLAB 1) | THR (DLAB 0), DLL (DLAB 1) |
//! | 1 | IER (DLAB 0), DLM (DLAB 1) | IER, DLM |
//! | 2 | IIR | FCR (ignored: a 16450 has no FIFO control) |
//! | 3 | LCR | LCR |
//! | 4 | MCR | MCR |
//! | 5 | LSR | (ignored) |
//! | 6 | MSR | (ignored) |
//! | 7 | SCR | SCR |
//!
//! The plug wires transmit to receive (and RTS to CTS, DTR to DSR, DCD and
//! RI), so every byte written to THR arrives at once in the receive buffer:
//! transmission takes no time, THR is always empty (LSR THRE and TEMT are
//! always set). The receive buffer holds [`RX_FIFO`] bytes; a byte that
//! arrives when it is full is lost and sets the overrun bit (LSR OE,
//! cleared by reading LSR). With MCR LOOP set the UART's own loopback
//! gives the same data path, and the modem inputs follow MCR as the 8250
//! data sheet says (CTS = RTS, DSR = DTR, RI = OUT1, DCD = OUT2).
//!
//! The interrupt line ([`Uart::interrupt_line`]) is high when MCR OUT2 is
//! set (the PC's gate between the UART and the PIC) and an interrupt
//! condition enabled in IER is pending, in the 8250's priority order:
//! line status (OE), received data, THR empty, modem status. Reading IIR
//! when it reports THR empty clears that condition; writing THR clears it
//! and, the byte being sent at once, sets it again.

use std::collections::VecDeque;

/// Bytes the receive buffer holds.
pub const RX_FIFO: usize = 16;

/// The UART's eight ports from its base.
pub const PORTS: u16 = 8;

/// The PIC input COM1's interrupt line drives.
pub const IRQ: u8 = 4;

/// LCR: divisor latch access.
pub const LCR_DLAB: u8 = 0x80;
/// MCR bits.
pub const MCR_DTR: u8 = 0x01;
/// MCR: request to send.
pub const MCR_RTS: u8 = 0x02;
/// MCR: OUT1.
pub const MCR_OUT1: u8 = 0x04;
/// MCR: OUT2, the interrupt gate.
pub const MCR_OUT2: u8 = 0x08;
/// MCR: internal loopback.
pub const MCR_LOOP: u8 = 0x10;
/// IER: received data available.
pub const IER_RDA: u8 = 0x01;
/// IER: THR empty.
pub const IER_THRE: u8 = 0x02;
/// IER: receiver line status.
pub const IER_RLS: u8 = 0x04;
/// IER: modem status.
pub const IER_MS: u8 = 0x08;
/// LSR: data ready.
pub const LSR_DR: u8 = 0x01;
/// LSR: overrun error.
pub const LSR_OE: u8 = 0x02;
/// LSR: THR empty.
pub const LSR_THRE: u8 = 0x20;
/// LSR: transmitter empty.
pub const LSR_TEMT: u8 = 0x40;
/// IIR: no interrupt pending.
pub const IIR_NONE: u8 = 0x01;

/// One UART's registers and receive buffer.
#[derive(Clone, Debug)]
pub struct Uart {
    rx: VecDeque<u8>,
    ier: u8,
    lcr: u8,
    mcr: u8,
    scr: u8,
    dll: u8,
    dlm: u8,
    overrun: bool,
    /// The THR-empty interrupt condition (cleared by an IIR read that
    /// reports it or a THR write).
    thre_pending: bool,
    /// The modem inputs last reported by an MSR read (delta bits).
    msr_seen: u8,
}

impl Default for Uart {
    fn default() -> Self {
        // After reset: 8250 defaults; divisor 12 (9600 baud), modem
        // inputs low.
        Uart {
            rx: VecDeque::with_capacity(RX_FIFO),
            ier: 0,
            lcr: 0,
            mcr: 0,
            scr: 0,
            dll: 12,
            dlm: 0,
            overrun: false,
            thre_pending: false,
            msr_seen: 0,
        }
    }
}

impl Uart {
    /// A UART after reset.
    pub fn new() -> Self {
        Uart::default()
    }

    fn dlab(&self) -> bool {
        self.lcr & LCR_DLAB != 0
    }

    /// The modem inputs (MSR bits 4-7) the plug or the internal loopback
    /// give.
    fn modem_inputs(&self) -> u8 {
        let m = self.mcr;
        let bit = |on: bool, b: u8| if on { b } else { 0 };
        if m & MCR_LOOP != 0 {
            bit(m & MCR_RTS != 0, 0x10)
                | bit(m & MCR_DTR != 0, 0x20)
                | bit(m & MCR_OUT1 != 0, 0x40)
                | bit(m & MCR_OUT2 != 0, 0x80)
        } else {
            // The plug: RTS to CTS; DTR to DSR, RI and DCD.
            bit(m & MCR_RTS != 0, 0x10) | if m & MCR_DTR != 0 { 0xE0 } else { 0 }
        }
    }

    /// MSR delta bits: which inputs changed since the last MSR read (RI's
    /// is the trailing edge only).
    fn msr_deltas(&self) -> u8 {
        let now = self.modem_inputs();
        let changed = now ^ self.msr_seen;
        let mut d = (changed >> 4) & 0x0B; // DCTS, DDSR, DDCD
        if changed & 0x40 != 0 && now & 0x40 == 0 {
            d |= 0x04; // TERI
        }
        d
    }

    fn lsr(&self) -> u8 {
        let mut v = LSR_THRE | LSR_TEMT;
        if !self.rx.is_empty() {
            v |= LSR_DR;
        }
        if self.overrun {
            v |= LSR_OE;
        }
        v
    }

    /// The interrupt the IIR reports (bits 0-2).
    fn iir(&self) -> u8 {
        if self.ier & IER_RLS != 0 && self.overrun {
            0x06
        } else if self.ier & IER_RDA != 0 && !self.rx.is_empty() {
            0x04
        } else if self.ier & IER_THRE != 0 && self.thre_pending {
            0x02
        } else if self.ier & IER_MS != 0 && self.msr_deltas() != 0 {
            0x00
        } else {
            IIR_NONE
        }
    }

    /// The UART's interrupt output as the PIC sees it: OUT2 set and an
    /// enabled condition pending. The one place the line is computed.
    pub fn interrupt_line(&self) -> bool {
        self.mcr & MCR_OUT2 != 0 && self.iir() & IIR_NONE == 0
    }

    /// A byte arrives on the receive line.
    fn receive(&mut self, byte: u8) {
        if self.rx.len() >= RX_FIFO {
            self.overrun = true;
        } else {
            self.rx.push_back(byte);
        }
    }

    /// Read the register at `offset` (0-7) from the base.
    pub fn read(&mut self, offset: u16) -> u8 {
        match offset & 7 {
            0 if self.dlab() => self.dll,
            0 => self.rx.pop_front().unwrap_or(0),
            1 if self.dlab() => self.dlm,
            1 => self.ier,
            2 => {
                let iir = self.iir();
                if iir == 0x02 {
                    self.thre_pending = false;
                }
                iir
            }
            3 => self.lcr,
            4 => self.mcr,
            5 => {
                let v = self.lsr();
                self.overrun = false;
                v
            }
            6 => {
                let v = self.modem_inputs() | self.msr_deltas();
                self.msr_seen = self.modem_inputs();
                v
            }
            _ => self.scr,
        }
    }

    /// Write `value` to the register at `offset` (0-7) from the base.
    pub fn write(&mut self, offset: u16, value: u8) {
        match offset & 7 {
            0 if self.dlab() => self.dll = value,
            0 => {
                // Sent at once through the plug: THR is empty again.
                self.receive(value);
                self.thre_pending = true;
            }
            1 if self.dlab() => self.dlm = value,
            1 => {
                let enabling_thre = value & IER_THRE != 0 && self.ier & IER_THRE == 0;
                self.ier = value & 0x0F;
                if enabling_thre {
                    // THR is empty: enabling its interrupt raises it.
                    self.thre_pending = true;
                }
            }
            3 => self.lcr = value,
            4 => self.mcr = value & 0x1F,
            7 => self.scr = value,
            _ => {} // FCR, LSR and MSR writes do nothing on a 16450.
        }
    }

    /// The divisor latch (DLM:DLL).
    pub fn divisor(&self) -> u16 {
        u16::from_le_bytes([self.dll, self.dlm])
    }

    /// Bytes waiting in the receive buffer.
    pub fn pending(&self) -> usize {
        self.rx.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transmit_loops_back_to_receive_in_order() {
        let mut u = Uart::new();
        assert_eq!(u.read(5) & LSR_DR, 0);
        for b in b"Hi!" {
            u.write(0, *b);
        }
        assert_eq!(u.read(5), LSR_THRE | LSR_TEMT | LSR_DR);
        assert_eq!([u.read(0), u.read(0), u.read(0)], *b"Hi!");
        assert_eq!(u.read(5), LSR_THRE | LSR_TEMT);
        assert_eq!(u.read(0), 0, "an empty buffer reads 0");
    }

    #[test]
    fn a_full_buffer_loses_the_byte_and_reports_overrun_once() {
        let mut u = Uart::new();
        for b in 0..=RX_FIFO as u8 {
            u.write(0, b);
        }
        assert_eq!(u.pending(), RX_FIFO);
        assert_eq!(u.read(5) & LSR_OE, LSR_OE);
        assert_eq!(u.read(5) & LSR_OE, 0);
        assert_eq!(u.read(0), 0, "the first byte is kept, the last lost");
    }

    #[test]
    fn dlab_switches_ports_0_and_1_to_the_divisor_latch() {
        let mut u = Uart::new();
        u.write(3, LCR_DLAB | 0x03);
        u.write(0, 0x0C);
        u.write(1, 0x00);
        u.write(3, 0x03);
        assert_eq!(u.divisor(), 12);
        assert_eq!(u.pending(), 0, "a divisor write sends nothing");
        u.write(1, 0xFF);
        assert_eq!(u.read(1), 0x0F, "IER keeps its four bits");
        u.write(7, 0x5A);
        assert_eq!(u.read(7), 0x5A);
    }

    #[test]
    fn the_interrupt_line_needs_an_enabled_condition_and_out2() {
        let mut u = Uart::new();
        u.write(0, b'x');
        assert!(!u.interrupt_line(), "IER 0");
        u.write(1, IER_RDA);
        assert_eq!(u.read(2), 0x04);
        assert!(!u.interrupt_line(), "OUT2 clear: the gate to the PIC is shut");
        u.write(4, MCR_OUT2 | MCR_DTR | MCR_RTS);
        assert!(u.interrupt_line());
        u.read(0);
        assert!(!u.interrupt_line(), "reading the byte clears it");
        // THR empty: raised by enabling it, cleared by the IIR read that reports it.
        u.write(1, IER_RDA | IER_THRE);
        assert!(u.interrupt_line());
        assert_eq!(u.read(2), 0x02);
        assert_eq!(u.read(2), IIR_NONE);
        assert!(!u.interrupt_line());
        // Received data outranks THR empty.
        u.write(0, b'y');
        assert_eq!(u.read(2), 0x04);
        u.read(0);
        assert_eq!(u.read(2), 0x02);
    }

    #[test]
    fn the_plug_wires_rts_to_cts_and_dtr_to_dsr_dcd_ri() {
        let mut u = Uart::new();
        assert_eq!(u.read(6), 0);
        u.write(4, MCR_DTR | MCR_RTS);
        assert_eq!(u.read(6), 0xF0 | 0x0B, "inputs high, deltas of CTS, DSR, DCD");
        assert_eq!(u.read(6), 0xF0, "deltas cleared by the read");
        u.write(1, IER_MS);
        u.write(4, MCR_OUT2 | MCR_RTS);
        assert!(u.interrupt_line(), "DSR, DCD and RI fell");
        assert_eq!(u.read(6) & 0x0F, 0x0E, "DDSR, TERI, DDCD");
        assert!(!u.interrupt_line());
        u.write(4, MCR_LOOP | MCR_OUT1);
        assert_eq!(u.read(6) & 0xF0, 0x40, "internal loopback: RI = OUT1");
    }
}
