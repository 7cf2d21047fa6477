//! The bus: how the CPU reaches memory, and how the monitor marks its entry points.

/// Physical memory as the CPU sees it, and the monitor's breakpoints.
///
/// Addresses are physical and at most 24 bits wide (the 80286 bus). The CPU
/// never calls the bus for anything but memory and the breakpoint question:
/// port I/O, interrupts, faults and `HLT` come back from [`crate::Cpu::run`]
/// as an [`crate::Exit`] instead.
pub trait Bus {
    /// Reads the byte at physical address `addr`.
    fn read8(&mut self, addr: u32) -> u8;

    /// Writes the byte at physical address `addr`.
    fn write8(&mut self, addr: u32, value: u8);

    /// Reads the little-endian word at `addr` and `addr + 1`. The CPU only
    /// calls it when both bytes lie inside its address space; override it
    /// for speed.
    fn read16(&mut self, addr: u32) -> u16 {
        u16::from_le_bytes([self.read8(addr), self.read8(addr.wrapping_add(1))])
    }

    /// Writes the little-endian word at `addr` and `addr + 1`.
    fn write16(&mut self, addr: u32, value: u16) {
        let [lo, hi] = value.to_le_bytes();
        self.write8(addr, lo);
        self.write8(addr.wrapping_add(1), hi);
    }

    /// Whether `cs:ip` is an entry point of the monitor. The CPU asks after
    /// each far transfer (`CALL`/`JMP` far, `RETF`, `IRET`, and an
    /// interrupt or fault it delivers through the vector table itself) and,
    /// when the answer is yes, stops with [`crate::ExitReason::Breakpoint`]
    /// before executing anything there. [`crate::Cpu::deliver_interrupt`],
    /// called by the monitor, does not ask.
    fn is_breakpoint(&self, cs: u16, ip: u16) -> bool {
        let _ = (cs, ip);
        false
    }
}

/// Plain RAM starting at physical address 0, with a list of breakpoints.
///
/// Reads past the end return `0xFF` (an open bus) and writes past the end
/// are dropped, as on a machine with less memory than address space.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Memory {
    bytes: Vec<u8>,
    breakpoints: Vec<(u16, u16)>,
}

impl Memory {
    /// `size` bytes of zeroed RAM.
    pub fn new(size: usize) -> Self {
        Memory { bytes: vec![0; size], breakpoints: Vec::new() }
    }

    /// The RAM's bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The RAM's bytes, for loading programs and inspecting results.
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.bytes
    }

    /// Copies `data` to physical address `addr` (what does not fit is dropped).
    pub fn load(&mut self, addr: u32, data: &[u8]) {
        for (i, &b) in data.iter().enumerate() {
            self.write8(addr.wrapping_add(i as u32), b);
        }
    }

    /// Makes `cs:ip` an entry point of the monitor (see [`Bus::is_breakpoint`]).
    pub fn add_breakpoint(&mut self, cs: u16, ip: u16) {
        if !self.breakpoints.contains(&(cs, ip)) {
            self.breakpoints.push((cs, ip));
        }
    }
}

impl Bus for Memory {
    #[inline]
    fn read8(&mut self, addr: u32) -> u8 {
        self.bytes.get(addr as usize).copied().unwrap_or(0xFF)
    }

    #[inline]
    fn write8(&mut self, addr: u32, value: u8) {
        if let Some(b) = self.bytes.get_mut(addr as usize) {
            *b = value;
        }
    }

    #[inline]
    fn read16(&mut self, addr: u32) -> u16 {
        let a = addr as usize;
        match self.bytes.get(a..a.wrapping_add(2)) {
            Some(w) => u16::from_le_bytes([w[0], w[1]]),
            None => u16::from_le_bytes([self.read8(addr), self.read8(addr.wrapping_add(1))]),
        }
    }

    #[inline]
    fn write16(&mut self, addr: u32, value: u16) {
        let a = addr as usize;
        match self.bytes.get_mut(a..a.wrapping_add(2)) {
            Some(w) => w.copy_from_slice(&value.to_le_bytes()),
            None => {
                let [lo, hi] = value.to_le_bytes();
                self.write8(addr, lo);
                self.write8(addr.wrapping_add(1), hi);
            }
        }
    }

    fn is_breakpoint(&self, cs: u16, ip: u16) -> bool {
        !self.breakpoints.is_empty() && self.breakpoints.contains(&(cs, ip))
    }
}
