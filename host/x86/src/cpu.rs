//! The CPU state, the exits and the run loop.

use crate::bus::Bus;

/// Index of AX (EAX) in [`Cpu::regs`] (the registers are in encoding order).
pub const AX: usize = 0;
/// Index of CX in [`Cpu::regs`].
pub const CX: usize = 1;
/// Index of DX in [`Cpu::regs`].
pub const DX: usize = 2;
/// Index of BX in [`Cpu::regs`].
pub const BX: usize = 3;
/// Index of SP in [`Cpu::regs`].
pub const SP: usize = 4;
/// Index of BP in [`Cpu::regs`].
pub const BP: usize = 5;
/// Index of SI in [`Cpu::regs`].
pub const SI: usize = 6;
/// Index of DI in [`Cpu::regs`].
pub const DI: usize = 7;

/// Index of ES in [`Cpu::sregs`] (the segment registers are in encoding order).
pub const ES: usize = 0;
/// Index of CS in [`Cpu::sregs`].
pub const CS: usize = 1;
/// Index of SS in [`Cpu::sregs`].
pub const SS: usize = 2;
/// Index of DS in [`Cpu::sregs`].
pub const DS: usize = 3;
/// Index of FS in [`Cpu::sregs`] (kept, not used by the 80286).
pub const FS: usize = 4;
/// Index of GS in [`Cpu::sregs`] (kept, not used by the 80286).
pub const GS: usize = 5;

/// The bits of [`Cpu::flags`].
pub mod flags {
    /// Carry.
    pub const CF: u16 = 0x0001;
    /// Always one in the FLAGS image.
    pub const RESERVED_ONE: u16 = 0x0002;
    /// Parity (of the low byte of a result).
    pub const PF: u16 = 0x0004;
    /// Auxiliary (BCD) carry.
    pub const AF: u16 = 0x0010;
    /// Zero.
    pub const ZF: u16 = 0x0040;
    /// Sign.
    pub const SF: u16 = 0x0080;
    /// Trap (single step). Kept, not acted on.
    pub const TF: u16 = 0x0100;
    /// Interrupt enable.
    pub const IF: u16 = 0x0200;
    /// Direction of string instructions.
    pub const DF: u16 = 0x0400;
    /// Overflow.
    pub const OF: u16 = 0x0800;
    /// The bits real-mode code can change on an 80286: IOPL, NT and bit 15
    /// read as zero.
    pub const WRITABLE: u16 = CF | PF | AF | ZF | SF | TF | IF | DF | OF;
}

/// Exception vectors the interpreter raises.
pub mod vector {
    /// #DE: divide error (`DIV`, `IDIV`, `AAM 0`).
    pub const DIVIDE_ERROR: u8 = 0;
    /// `INT3`.
    pub const BREAKPOINT: u8 = 3;
    /// `INTO` with OF set.
    pub const OVERFLOW: u8 = 4;
    /// #BR: `BOUND` range exceeded.
    pub const BOUND_RANGE: u8 = 5;
    /// #UD: undefined opcode or invalid operand form.
    pub const INVALID_OPCODE: u8 = 6;
    /// #SS: on the 80386 model with an operand- or address-size prefix, a
    /// stack or SS-based operand that does not fit below offset 0x10000.
    pub const STACK_FAULT: u8 = 12;
    /// #GP: a word operand at offset 0xFFFF (on the 80386 model with an
    /// operand- or address-size prefix: any operand that does not fit
    /// below offset 0x10000, and a jump to an offset above 0xFFFF).
    pub const GENERAL_PROTECTION: u8 = 13;
}

/// The processor the interpreter is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Model {
    /// An 80286 in real mode (the hardware-checked model). The operand-
    /// and address-size prefixes (66h, 67h) raise #UD.
    I80286,
    /// An 80386 in real mode: the 80286's instructions plus the FS/GS
    /// prefixes, `MOV`/`PUSH`/`POP` of FS and GS, the `0F` forms DOS
    /// programs meet (`Jcc rel16/32`, `SETcc`, `MOVZX`/`MOVSX`,
    /// `IMUL r,r/m`, `BT`/`BTS`/`BTR`/`BTC`, `SHLD`/`SHRD`, `BSF`/`BSR`,
    /// `LSS`/`LFS`/`LGS`), and the operand- (66h) and address-size (67h)
    /// prefixes: 32-bit operands and 32-bit addresses under the real-mode
    /// limit of 0xFFFF (see the crate docs). Instructions may be 15 bytes
    /// long.
    I80386,
}

/// What the CPU does with a fault or a software interrupt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Delivery {
    /// Stop and return it to the monitor as an [`ExitReason`].
    Exit,
    /// Deliver it the way the processor does: push FLAGS, CS and IP, clear
    /// IF and TF, and continue at the handler in the interrupt vector table
    /// (physical address `vector * 4`).
    Deliver,
}

/// The width of a port access.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Size {
    /// 8 bits (`AL`).
    Byte,
    /// 16 bits (`AX`).
    Word,
    /// 32 bits (`EAX`; the 80386 model with the operand-size prefix).
    Dword,
}

/// How a software interrupt was raised.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IntKind {
    /// `INT n` (`CD n`).
    Int,
    /// `INT3` (`CC`).
    Int3,
    /// `INTO` (`CE`) with OF set.
    Into,
}

/// Why [`Cpu::run`] stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ExitReason {
    /// The budget of instructions is used up.
    Budget,
    /// A software interrupt (with [`Cpu::interrupts`] = [`Delivery::Exit`]).
    /// IP is past the instruction: [`Cpu::deliver_interrupt`] reflects it
    /// through the vector table, or the monitor emulates it and resumes.
    Interrupt {
        /// The vector (`n`, 3 or 4).
        vector: u8,
        /// The instruction that raised it.
        kind: IntKind,
    },
    /// `IN`/`INS` needs a value. Nothing of the instruction has happened
    /// (IP is at its first prefix): call [`Cpu::complete_in`] with the value
    /// and run again, which executes it (one element of a string form).
    In {
        /// The port.
        port: u16,
        /// The width.
        size: Size,
    },
    /// `INS`/`OUTS` (with or without `REP`), with [`Cpu::string_io`] set:
    /// the whole instruction as one access, for a monitor that traps it as
    /// Windows does (the VMM's handler sees one string access and performs
    /// its elements itself). Nothing of it has happened (IP is at its first
    /// prefix); the monitor does the elements (memory, SI/DI, CX) and sets
    /// IP to `next_ip`. A `REP` form with CX = 0 does not stop here: it
    /// does nothing.
    StringIo {
        /// The port (DX).
        port: u16,
        /// The width of one element.
        size: Size,
        /// `OUTS` (read from memory at `segment`:SI) rather than `INS`
        /// (written to ES:DI).
        output: bool,
        /// The segment of the memory operand, overrides applied (ES for
        /// `INS`).
        segment: u16,
        /// A `REP` prefix: CX elements.
        rep: bool,
        /// The address-size prefix (67h): ESI/EDI and ECX.
        addr32: bool,
        /// The IP of the next instruction.
        next_ip: u16,
    },
    /// `OUT`/`OUTS` wrote `value` to `port` (one element of a string form).
    /// The instruction or element has completed; run again to go on.
    Out {
        /// The port.
        port: u16,
        /// The width.
        size: Size,
        /// The value written (zero-extended for a byte).
        value: u32,
    },
    /// A far transfer arrived at an entry point of the monitor
    /// ([`Bus::is_breakpoint`]): a far `CALL`/`JMP`, `RETF`, `IRET`, or an
    /// interrupt or fault the CPU delivered itself. CS:IP is the entry
    /// point, the return address (if any) is on the stack; nothing there
    /// has run.
    Breakpoint {
        /// The entry point's segment.
        cs: u16,
        /// The entry point's offset.
        ip: u16,
    },
    /// `CLI`, `STI`, `POPF` or `IRET` changed IF; the instruction has
    /// completed, [`Cpu::flags`] holds the new value. (An `IRET` that also
    /// arrives at a breakpoint reports the breakpoint.)
    InterruptFlag {
        /// The new IF.
        enabled: bool,
    },
    /// `HLT`; IP is past it.
    Halt,
    /// A fault (with [`Cpu::faults`] = [`Delivery::Exit`]); IP is at the
    /// faulting instruction's first prefix, as the processor would push it.
    Fault {
        /// The exception vector (see [`vector`]).
        vector: u8,
    },
}

/// What [`Cpu::run`] returns: why it stopped and how far it got.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Exit {
    /// Why it stopped.
    pub reason: ExitReason,
    /// Instructions executed by this call (each element of a `REP` string
    /// instruction counts as one, and so does an instruction that faulted;
    /// an instruction stopped by [`ExitReason::In`] is not counted until it
    /// runs).
    pub instructions: u64,
}

/// An 80286 in real mode: every register, plain data.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Cpu {
    /// EAX, ECX, EDX, EBX, ESP, EBP, ESI, EDI (index with [`AX`] ...
    /// [`DI`]). The 80286 uses the low 16 bits ([`Cpu::r16`]) and never
    /// changes the high 16, which a 32-bit monitor (a V86 client's
    /// `Client_EAX` ...) keeps there.
    pub regs: [u32; 8],
    /// ES, CS, SS, DS, FS, GS (index with [`ES`] ... [`GS`]). The 80286
    /// has no FS and GS; they are kept for the monitor.
    pub sregs: [u16; 6],
    /// The instruction pointer (in real mode EIP's high half is always
    /// zero: a transfer beyond 0xFFFF faults).
    pub ip: u16,
    /// FLAGS (see [`flags`]).
    pub flags: u16,
    /// Whether address line 20 is enabled: `true` gives the 80286's
    /// addresses up to `0x10FFEF`; `false` wraps them at 1 MiB as an 8086.
    pub a20: bool,
    /// What a fault does.
    pub faults: Delivery,
    /// What `INT n`, `INT3` and a taken `INTO` do.
    pub interrupts: Delivery,
    /// The processor.
    pub model: Model,
    /// The value for the next `IN`/`INS`, set by [`Cpu::complete_in`].
    pub pending_in: Option<u32>,
    /// Whether `INS`/`OUTS` stop as one [`ExitReason::StringIo`] (the
    /// monitor performs the elements) instead of one `In`/`Out` exit per
    /// element. Off by default.
    pub string_io: bool,
}

impl Default for Cpu {
    fn default() -> Self {
        Self::new()
    }
}

/// The result of one instruction, inside the interpreter.
pub(crate) enum Step {
    /// Completed, go on.
    Next,
    /// Completed, then stop.
    Stop(ExitReason),
    /// Not started; stop with IP restored.
    Wait(ExitReason),
}

impl Cpu {
    /// The state after reset, except that CS:IP is 0000:0000 (the monitor
    /// places the program) and both fault and interrupt delivery exit. The
    /// model is the 80286.
    pub fn new() -> Self {
        Cpu {
            regs: [0; 8],
            sregs: [0; 6],
            ip: 0,
            flags: flags::RESERVED_ONE,
            a20: true,
            faults: Delivery::Exit,
            interrupts: Delivery::Exit,
            model: Model::I80286,
            pending_in: None,
            string_io: false,
        }
    }

    /// Runs at most `budget` instructions and returns why it stopped.
    ///
    /// The same state, memory and budget always give the same result.
    pub fn run<B: Bus + ?Sized>(&mut self, bus: &mut B, budget: u64) -> Exit {
        let mut done = 0;
        while done < budget {
            let start = self.ip;
            match self.step(bus) {
                Ok(Step::Next) => done += 1,
                Ok(Step::Stop(reason)) => {
                    return Exit { reason, instructions: done + 1 };
                }
                Ok(Step::Wait(reason)) => {
                    self.ip = start;
                    return Exit { reason, instructions: done };
                }
                Err(vector) => {
                    self.ip = start;
                    done += 1;
                    match self.faults {
                        Delivery::Deliver => {
                            self.deliver_interrupt(bus, vector);
                            if let Some(reason) = self.far_arrival(bus) {
                                return Exit { reason, instructions: done };
                            }
                        }
                        Delivery::Exit => {
                            return Exit { reason: ExitReason::Fault { vector }, instructions: done };
                        }
                    }
                }
            }
        }
        Exit { reason: ExitReason::Budget, instructions: done }
    }

    /// Supplies the value an [`ExitReason::In`] asked for; the next
    /// [`Cpu::run`] executes the `IN` with it. A byte access uses the low
    /// 8 bits, a word access the low 16 (the width is 32 bits so a 32-bit
    /// access fits).
    pub fn complete_in(&mut self, value: u32) {
        self.pending_in = Some(value);
    }

    /// Delivers interrupt `vector` as the processor does: pushes FLAGS, CS
    /// and IP, clears IF and TF, and loads CS:IP from the vector table.
    pub fn deliver_interrupt<B: Bus + ?Sized>(&mut self, bus: &mut B, vector: u8) {
        self.push_unchecked(bus, self.flags);
        self.push_unchecked(bus, self.sregs[CS]);
        self.push_unchecked(bus, self.ip);
        self.flags &= !(flags::IF | flags::TF);
        let entry = u32::from(vector) * 4;
        self.ip = self.read_phys16(bus, entry);
        self.sregs[CS] = self.read_phys16(bus, entry + 2);
    }

    /// Pushes a word on the stack (SS:SP), as `PUSH` does.
    pub fn push<B: Bus + ?Sized>(&mut self, bus: &mut B, value: u16) {
        self.push_unchecked(bus, value);
    }

    /// Pops a word from the stack (SS:SP), as `POP` does.
    pub fn pop<B: Bus + ?Sized>(&mut self, bus: &mut B) -> u16 {
        let sp = self.r16(SP);
        let v = self.read_wrapped16(bus, SS, sp);
        self.set_r16(SP, sp.wrapping_add(2));
        v
    }

    /// The physical address of `segment:offset` (segment register index
    /// `sreg`, one of [`ES`] ... [`GS`]), after the A20 gate.
    ///
    /// # Panics
    ///
    /// If `sreg` is above [`GS`], as indexing [`Cpu::sregs`] would.
    pub fn linear(&self, sreg: usize, offset: u16) -> u32 {
        self.physical(self.sregs[sreg], offset)
    }

    /// The address in segment register `sreg` (an internal index, always
    /// ES ... GS).
    #[inline]
    pub(crate) fn lin(&self, sreg: usize, offset: u16) -> u32 {
        self.physical(self.sregs[sreg], offset)
    }

    #[inline]
    fn physical(&self, segment: u16, offset: u16) -> u32 {
        let a = (u32::from(segment) << 4) + u32::from(offset);
        // Without A20, bit 20 (the only bit above it a sum can reach) is cleared.
        a & (0xF_FFFF | (u32::from(self.a20) << 20))
    }

    fn push_unchecked<B: Bus + ?Sized>(&mut self, bus: &mut B, value: u16) {
        let sp = self.r16(SP).wrapping_sub(2);
        self.set_r16(SP, sp);
        let [lo, hi] = value.to_le_bytes();
        bus.write8(self.lin(SS, sp), lo);
        bus.write8(self.lin(SS, sp.wrapping_add(1)), hi);
    }

    fn read_wrapped16<B: Bus + ?Sized>(&self, bus: &mut B, sreg: usize, off: u16) -> u16 {
        let lo = bus.read8(self.lin(sreg, off));
        let hi = bus.read8(self.lin(sreg, off.wrapping_add(1)));
        u16::from_le_bytes([lo, hi])
    }

    fn read_phys16<B: Bus + ?Sized>(&self, bus: &mut B, addr: u32) -> u16 {
        u16::from_le_bytes([bus.read8(addr), bus.read8(addr + 1)])
    }
}
