//! Decoding and executing one instruction.

use crate::bus::Bus;

mod wide;
use crate::cpu::flags::{AF, CF, DF, IF, OF, PF, RESERVED_ONE, SF, WRITABLE, ZF};
use crate::cpu::vector::{BOUND_RANGE, BREAKPOINT, DIVIDE_ERROR, GENERAL_PROTECTION, INVALID_OPCODE, OVERFLOW};
use crate::cpu::{
    AX, BP, BX, CS, CX, Cpu, DI, DS, DX, Delivery, ES, ExitReason, FS, GS, IntKind, Model, SI, SP, SS, Size, Step,
};

/// A fault: the exception vector.
pub(crate) type Fault = u8;
type R<T> = Result<T, Fault>;

/// PF for each value of a result's low byte: set when the number of set
/// bits is even.
const PARITY: [u16; 256] = {
    let mut t = [0; 256];
    let mut i = 0;
    while i < 256 {
        if (i as u8).count_ones().is_multiple_of(2) {
            t[i] = PF;
        }
        i += 1;
    }
    t
};

/// The prefix bytes: segment overrides, LOCK, REPNE, REP (and FS/GS and
/// the operand- and address-size prefixes, which only the 80386 takes as
/// prefixes).
const PREFIX: [bool; 256] = {
    let mut t = [false; 256];
    t[0x64] = true;
    t[0x65] = true;
    t[0x26] = true;
    t[0x2E] = true;
    t[0x36] = true;
    t[0x3E] = true;
    t[0xF0] = true;
    t[0xF2] = true;
    t[0xF3] = true;
    t[0x66] = true;
    t[0x67] = true;
    t
};

/// Where an r/m operand lives.
#[derive(Clone, Copy)]
enum Ea {
    Reg(u8),
    Mem { seg: usize, off: u16 },
}

/// The prefixes of the instruction being executed.
#[derive(Clone, Copy)]
pub(crate) struct Prefix {
    seg: Option<usize>,
    /// 0, 0xF2 (REPNE) or 0xF3 (REP/REPE).
    rep: u8,
    /// 66h: 32-bit operands (80386 only).
    o32: bool,
    /// 67h: 32-bit addresses (80386 only).
    a32: bool,
}

impl Prefix {
    fn seg(self, default: usize) -> usize {
        self.seg.unwrap_or(default)
    }
}

/// SF, ZF and PF for a result of width `w`.
#[inline(always)]
fn szp(r: u32, w: bool) -> u16 {
    let r = r & mask(w);
    let sf = if w { (r >> 8) as u16 } else { r as u16 } & SF;
    let zf = if r == 0 { ZF } else { 0 };
    sf | zf | PARITY[(r & 0xFF) as usize]
}

#[inline]
fn mask(w: bool) -> u32 {
    if w { 0xFFFF } else { 0xFF }
}

/// The mask of an `n`-byte operand (`n` is 1, 2 or 4).
#[inline]
fn mask_n(n: u32) -> u32 {
    u32::MAX >> (32 - 8 * n)
}

/// The sign bit of an `n`-byte operand.
#[inline]
fn sign_n(n: u32) -> u32 {
    1 << (8 * n - 1)
}

/// SF, ZF and PF for an `n`-byte result.
#[inline]
fn szp_n(r: u32, n: u32) -> u16 {
    let r = r & mask_n(n);
    let sf = ((r >> (8 * n - 1)) as u16 & 1) * SF;
    let zf = if r == 0 { ZF } else { 0 };
    sf | zf | PARITY[(r & 0xFF) as usize]
}

impl Cpu {
    // ---- flags ----

    #[inline]
    fn flag(&self, f: u16) -> bool {
        self.flags & f != 0
    }

    #[inline]
    fn set_flag(&mut self, f: u16, on: bool) {
        if on {
            self.flags |= f;
        } else {
            self.flags &= !f;
        }
    }

    /// Sets SF, ZF and PF from a result.
    #[inline]
    fn set_szp(&mut self, r: u32, w: bool) {
        self.flags = (self.flags & !(SF | ZF | PF)) | szp(r, w);
    }

    /// Sets SF, ZF and PF from an `n`-byte result.
    fn set_szp_n(&mut self, r: u32, n: u32) {
        self.flags = (self.flags & !(SF | ZF | PF)) | szp_n(r, n);
    }

    /// The eight ALU operations of opcodes 00-3F and group 1, in encoding
    /// order: ADD OR ADC SBB AND SUB XOR CMP. Returns the result (CMP's is
    /// not stored by the caller). The flags are computed without branches:
    /// this is the interpreter's hottest code.
    #[inline(always)]
    fn alu(&mut self, op: u8, a: u32, b: u32, w: bool) -> u32 {
        let bits = if w { 16 } else { 8 };
        let carry_in = u32::from(self.flags & CF);
        let (r, of) = match op {
            0 | 2 => {
                let r = a + b + if op == 2 { carry_in } else { 0 };
                (r, (a ^ r) & (b ^ r))
            }
            3 | 5 | 7 => {
                let r = a.wrapping_sub(b).wrapping_sub(if op == 3 { carry_in } else { 0 });
                (r, (a ^ b) & (a ^ r))
            }
            // OR, AND, XOR; the 80286 clears AF as well as CF and OF.
            _ => {
                let r = match op {
                    1 => a | b,
                    4 => a & b,
                    _ => a ^ b,
                };
                let f = self.flags & !(CF | OF | AF | SF | ZF | PF);
                self.flags = f | szp(r, w);
                return r;
            }
        };
        // Both operands are below 2^bits, so bit `bits` of the wide
        // result is the carry (or borrow).
        let cf = (r >> bits) & 1;
        let of = ((of >> (bits - 1)) & 1) << 11;
        let af = (a ^ b ^ r) & u32::from(AF);
        let r = r & mask(w);
        let f = self.flags & !(CF | OF | AF | SF | ZF | PF);
        self.flags = f | (cf | of | af) as u16 | szp(r, w);
        r
    }

    #[inline]
    fn inc_dec(&mut self, a: u32, dec: bool, w: bool) -> u32 {
        let cf = self.flags & CF;
        let r = self.alu(if dec { 5 } else { 0 }, a, 1, w);
        self.flags = (self.flags & !CF) | cf;
        r
    }

    /// Group 2: ROL ROR RCL RCR SHL SHR SAL SAR of an `n`-byte operand by
    /// `count` (masked to 5 bits).
    fn shift(&mut self, op: u8, val: u32, count: u8, n: u32) -> u32 {
        let count = count & 0x1F;
        if count == 0 {
            return val;
        }
        let m = mask_n(n);
        let s = sign_n(n);
        let mut v = val & m;
        let mut cf = self.flag(CF);
        match op {
            0 => {
                for _ in 0..count {
                    cf = v & s != 0;
                    v = ((v << 1) | u32::from(cf)) & m;
                }
                self.set_flag(OF, (v & s != 0) != cf);
            }
            1 => {
                for _ in 0..count {
                    cf = v & 1 != 0;
                    v = (v >> 1) | if cf { s } else { 0 };
                }
                self.set_flag(OF, ((v ^ (v << 1)) & s) != 0);
            }
            2 => {
                for _ in 0..count {
                    let out = v & s != 0;
                    v = ((v << 1) | u32::from(cf)) & m;
                    cf = out;
                }
                self.set_flag(OF, (v & s != 0) != cf);
            }
            3 => {
                for _ in 0..count {
                    let out = v & 1 != 0;
                    v = (v >> 1) | if cf { s } else { 0 };
                    cf = out;
                }
                self.set_flag(OF, ((v ^ (v << 1)) & s) != 0);
            }
            4 | 6 => {
                for _ in 0..count {
                    cf = v & s != 0;
                    v = (v << 1) & m;
                }
                self.set_flag(OF, (v & s != 0) != cf);
                self.set_szp_n(v, n);
                self.flags &= !AF;
            }
            5 => {
                let mut last = v;
                for _ in 0..count {
                    last = v;
                    cf = v & 1 != 0;
                    v >>= 1;
                }
                self.set_flag(OF, ((last ^ v) & s) != 0 || (count == 1 && val & s != 0));
                self.set_szp_n(v, n);
                self.flags &= !AF;
            }
            _ => {
                for _ in 0..count {
                    cf = v & 1 != 0;
                    v = (v >> 1) | (v & s);
                }
                self.flags &= !OF;
                self.set_szp_n(v, n);
                self.flags &= !AF;
            }
        }
        self.set_flag(CF, cf);
        v
    }

    // ---- registers ----

    /// The low 16 bits of general register `i` (AX for EAX, ...).
    #[inline]
    pub fn r16(&self, i: usize) -> u16 {
        self.regs[i & 7] as u16
    }

    /// Sets the low 16 bits of general register `i`, keeping the high 16.
    #[inline]
    pub fn set_r16(&mut self, i: usize, v: u16) {
        let x = &mut self.regs[i & 7];
        *x = (*x & 0xFFFF_0000) | u32::from(v);
    }

    #[inline]
    fn reg8(&self, r: u8) -> u8 {
        let v = self.r16(usize::from(r & 3));
        if r & 4 == 0 { v as u8 } else { (v >> 8) as u8 }
    }

    #[inline]
    fn set_reg8(&mut self, r: u8, v: u8) {
        let x = &mut self.regs[usize::from(r & 3)];
        if r & 4 == 0 {
            *x = (*x & !0xFF) | u32::from(v);
        } else {
            *x = (*x & !0xFF00) | (u32::from(v) << 8);
        }
    }

    #[inline]
    fn reg(&self, r: u8, w: bool) -> u32 {
        if w { u32::from(self.r16(usize::from(r & 7))) } else { u32::from(self.reg8(r)) }
    }

    #[inline]
    fn set_reg(&mut self, r: u8, v: u32, w: bool) {
        if w {
            self.set_r16(usize::from(r & 7), v as u16);
        } else {
            self.set_reg8(r, v as u8);
        }
    }

    // ---- memory ----

    #[inline]
    fn read8<B: Bus + ?Sized>(&self, bus: &mut B, seg: usize, off: u16) -> u8 {
        bus.read8(self.lin(seg, off))
    }

    #[inline]
    fn write8<B: Bus + ?Sized>(&self, bus: &mut B, seg: usize, off: u16, v: u8) {
        bus.write8(self.lin(seg, off), v);
    }

    /// A word operand; the 80286 faults on one at offset 0xFFFF.
    #[inline]
    fn read16<B: Bus + ?Sized>(&self, bus: &mut B, seg: usize, off: u16) -> R<u16> {
        if off == 0xFFFF {
            return Err(GENERAL_PROTECTION);
        }
        let a = self.lin(seg, off);
        if self.a20 || a < 0xF_FFFF {
            Ok(bus.read16(a))
        } else {
            Ok(u16::from_le_bytes([bus.read8(a), bus.read8(self.lin(seg, off + 1))]))
        }
    }

    #[inline]
    fn write16<B: Bus + ?Sized>(&self, bus: &mut B, seg: usize, off: u16, v: u16) -> R<()> {
        if off == 0xFFFF {
            return Err(GENERAL_PROTECTION);
        }
        let a = self.lin(seg, off);
        if self.a20 || a < 0xF_FFFF {
            bus.write16(a, v);
        } else {
            let [lo, hi] = v.to_le_bytes();
            bus.write8(a, lo);
            bus.write8(self.lin(seg, off + 1), hi);
        }
        Ok(())
    }

    #[inline]
    fn read_mem<B: Bus + ?Sized>(&self, bus: &mut B, seg: usize, off: u16, w: bool) -> R<u32> {
        if w { self.read16(bus, seg, off).map(u32::from) } else { Ok(u32::from(self.read8(bus, seg, off))) }
    }

    #[inline]
    fn write_mem<B: Bus + ?Sized>(&self, bus: &mut B, seg: usize, off: u16, v: u32, w: bool) -> R<()> {
        if w {
            self.write16(bus, seg, off, v as u16)
        } else {
            self.write8(bus, seg, off, v as u8);
            Ok(())
        }
    }

    #[inline(always)]
    fn read_ea<B: Bus + ?Sized>(&self, bus: &mut B, ea: Ea, w: bool) -> R<u32> {
        match ea {
            Ea::Reg(r) => Ok(self.reg(r, w)),
            Ea::Mem { seg, off } => self.read_mem(bus, seg, off, w),
        }
    }

    #[inline(always)]
    fn write_ea<B: Bus + ?Sized>(&mut self, bus: &mut B, ea: Ea, v: u32, w: bool) -> R<()> {
        match ea {
            Ea::Reg(r) => {
                self.set_reg(r, v, w);
                Ok(())
            }
            Ea::Mem { seg, off } => self.write_mem(bus, seg, off, v, w),
        }
    }

    fn push16<B: Bus + ?Sized>(&mut self, bus: &mut B, v: u16) -> R<()> {
        let sp = self.r16(SP).wrapping_sub(2);
        self.write16(bus, SS, sp, v)?;
        self.set_r16(SP, sp);
        Ok(())
    }

    fn pop16<B: Bus + ?Sized>(&mut self, bus: &mut B) -> R<u16> {
        let sp = self.r16(SP);
        let v = self.read16(bus, SS, sp)?;
        self.set_r16(SP, sp.wrapping_add(2));
        Ok(v)
    }

    // ---- fetch and decode ----

    #[inline]
    fn fetch8<B: Bus + ?Sized>(&mut self, bus: &mut B) -> u8 {
        let b = bus.read8(self.lin(CS, self.ip));
        self.ip = self.ip.wrapping_add(1);
        b
    }

    #[inline]
    fn fetch16<B: Bus + ?Sized>(&mut self, bus: &mut B) -> u16 {
        let lo = self.fetch8(bus);
        let hi = self.fetch8(bus);
        u16::from_le_bytes([lo, hi])
    }

    #[inline]
    fn fetch(&mut self, bus: &mut (impl Bus + ?Sized), w: bool) -> u32 {
        if w { u32::from(self.fetch16(bus)) } else { u32::from(self.fetch8(bus)) }
    }

    /// Decodes a ModRM byte and its displacement: the reg field and the
    /// r/m operand.
    #[inline(always)]
    fn modrm<B: Bus + ?Sized>(&mut self, bus: &mut B, p: Prefix) -> (u8, Ea) {
        let m = self.fetch8(bus);
        let reg = (m >> 3) & 7;
        if m >= 0xC0 {
            return (reg, Ea::Reg(m & 7));
        }
        (reg, self.modrm_mem(bus, p, m))
    }

    /// The memory operand of ModRM byte `m` (mod 0-2).
    fn modrm_mem<B: Bus + ?Sized>(&mut self, bus: &mut B, p: Prefix, m: u8) -> Ea {
        let md = m >> 6;
        let rm = m & 7;
        let r = |i: usize| self.r16(i);
        let (base, seg) = match rm {
            0 => (r(BX).wrapping_add(r(SI)), DS),
            1 => (r(BX).wrapping_add(r(DI)), DS),
            2 => (r(BP).wrapping_add(r(SI)), SS),
            3 => (r(BP).wrapping_add(r(DI)), SS),
            4 => (r(SI), DS),
            5 => (r(DI), DS),
            6 if md == 0 => (0, DS),
            6 => (r(BP), SS),
            _ => (r(BX), DS),
        };
        let disp = match md {
            0 if rm == 6 => self.fetch16(bus),
            0 => 0,
            1 => self.fetch8(bus) as i8 as u16,
            _ => self.fetch16(bus),
        };
        Ea::Mem { seg: p.seg(seg), off: base.wrapping_add(disp) }
    }

    fn cond(&self, cc: u8) -> bool {
        let f = |x| self.flag(x);
        let r = match cc >> 1 {
            0 => f(OF),
            1 => f(CF),
            2 => f(ZF),
            3 => f(CF) || f(ZF),
            4 => f(SF),
            5 => f(PF),
            6 => f(SF) != f(OF),
            _ => f(ZF) || (f(SF) != f(OF)),
        };
        r != (cc & 1 != 0)
    }

    fn jump_rel8<B: Bus + ?Sized>(&mut self, bus: &mut B, taken: bool) {
        let d = self.fetch8(bus) as i8 as u16;
        if taken {
            self.ip = self.ip.wrapping_add(d);
        }
    }

    /// Sets FLAGS from a value `POPF` or `IRET` popped, keeping the bits
    /// real mode cannot change; reports a change of IF.
    fn load_flags(&mut self, v: u16) -> Option<ExitReason> {
        let was = self.flag(IF);
        self.flags = (v & WRITABLE) | RESERVED_ONE;
        let now = self.flag(IF);
        (was != now).then_some(ExitReason::InterruptFlag { enabled: now })
    }

    pub(crate) fn far_arrival<B: Bus + ?Sized>(&self, bus: &B) -> Option<ExitReason> {
        let (cs, ip) = (self.sregs[CS], self.ip);
        bus.is_breakpoint(cs, ip).then_some(ExitReason::Breakpoint { cs, ip })
    }

    fn software_interrupt<B: Bus + ?Sized>(&mut self, bus: &mut B, vector: u8, kind: IntKind) -> Step {
        match self.interrupts {
            Delivery::Exit => Step::Stop(ExitReason::Interrupt { vector, kind }),
            Delivery::Deliver => {
                self.deliver_interrupt(bus, vector);
                Self::stop_if(self.far_arrival(bus))
            }
        }
    }

    fn stop_if(reason: Option<ExitReason>) -> Step {
        match reason {
            Some(r) => Step::Stop(r),
            None => Step::Next,
        }
    }

    // ---- execution ----

    /// Executes one instruction (one element of a REP string instruction).
    /// Inlined into the one caller, the run loop.
    #[inline(always)]
    pub(crate) fn step<B: Bus + ?Sized>(&mut self, bus: &mut B) -> R<Step> {
        let start = self.ip;
        let mut p = Prefix { seg: None, rep: 0, o32: false, a32: false };
        let mut op = self.fetch8(bus);
        // Prefixes: the last of a kind wins. Ten bytes of them already make
        // the instruction too long (and a segment full of them must not
        // spin forever).
        let i386 = self.model == Model::I80386;
        let max_len = if i386 { 15 } else { 10 };
        while PREFIX[usize::from(op)] {
            match op {
                0x26 => p.seg = Some(ES),
                0x2E => p.seg = Some(CS),
                0x36 => p.seg = Some(SS),
                0x3E => p.seg = Some(DS),
                0x64 if i386 => p.seg = Some(FS),
                0x65 if i386 => p.seg = Some(GS),
                0x66 if i386 => p.o32 = true,
                0x67 if i386 => p.a32 = true,
                // Opcodes the 80286 does not have.
                0x64..=0x67 => break,
                0xF2 | 0xF3 => p.rep = op,
                _ => {}
            }
            if self.ip.wrapping_sub(start) >= max_len {
                return Err(GENERAL_PROTECTION);
            }
            op = self.fetch8(bus);
        }
        // With 66h or 67h, the forms they change run elsewhere (`wide.rs`).
        if (p.o32 | p.a32)
            && let Some(step) = self.step_wide(bus, op, p, start, max_len)?
        {
            return Ok(step);
        }
        // The 80286 refuses an instruction longer than ten bytes, the 80386
        // one longer than fifteen; only a run of prefixes can make one
        // that long.
        let prefixes = self.ip.wrapping_sub(start).wrapping_sub(1);
        if prefixes >= max_len - 6 && self.overlong(bus, op, start, max_len, p) {
            return Err(GENERAL_PROTECTION);
        }
        let w = op & 1 != 0;
        match op {
            // The ALU forms, one instance each so that the operation and
            // operand order are constants in the hottest path.
            0x00 => self.alu_form::<0x00>(bus, p)?,
            0x01 => self.alu_form::<0x01>(bus, p)?,
            0x02 => self.alu_form::<0x02>(bus, p)?,
            0x03 => self.alu_form::<0x03>(bus, p)?,
            0x04 => self.alu_form::<0x04>(bus, p)?,
            0x05 => self.alu_form::<0x05>(bus, p)?,
            0x08 => self.alu_form::<0x08>(bus, p)?,
            0x09 => self.alu_form::<0x09>(bus, p)?,
            0x0A => self.alu_form::<0x0A>(bus, p)?,
            0x0B => self.alu_form::<0x0B>(bus, p)?,
            0x0C => self.alu_form::<0x0C>(bus, p)?,
            0x0D => self.alu_form::<0x0D>(bus, p)?,
            0x10 => self.alu_form::<0x10>(bus, p)?,
            0x11 => self.alu_form::<0x11>(bus, p)?,
            0x12 => self.alu_form::<0x12>(bus, p)?,
            0x13 => self.alu_form::<0x13>(bus, p)?,
            0x14 => self.alu_form::<0x14>(bus, p)?,
            0x15 => self.alu_form::<0x15>(bus, p)?,
            0x18 => self.alu_form::<0x18>(bus, p)?,
            0x19 => self.alu_form::<0x19>(bus, p)?,
            0x1A => self.alu_form::<0x1A>(bus, p)?,
            0x1B => self.alu_form::<0x1B>(bus, p)?,
            0x1C => self.alu_form::<0x1C>(bus, p)?,
            0x1D => self.alu_form::<0x1D>(bus, p)?,
            0x20 => self.alu_form::<0x20>(bus, p)?,
            0x21 => self.alu_form::<0x21>(bus, p)?,
            0x22 => self.alu_form::<0x22>(bus, p)?,
            0x23 => self.alu_form::<0x23>(bus, p)?,
            0x24 => self.alu_form::<0x24>(bus, p)?,
            0x25 => self.alu_form::<0x25>(bus, p)?,
            0x28 => self.alu_form::<0x28>(bus, p)?,
            0x29 => self.alu_form::<0x29>(bus, p)?,
            0x2A => self.alu_form::<0x2A>(bus, p)?,
            0x2B => self.alu_form::<0x2B>(bus, p)?,
            0x2C => self.alu_form::<0x2C>(bus, p)?,
            0x2D => self.alu_form::<0x2D>(bus, p)?,
            0x30 => self.alu_form::<0x30>(bus, p)?,
            0x31 => self.alu_form::<0x31>(bus, p)?,
            0x32 => self.alu_form::<0x32>(bus, p)?,
            0x33 => self.alu_form::<0x33>(bus, p)?,
            0x34 => self.alu_form::<0x34>(bus, p)?,
            0x35 => self.alu_form::<0x35>(bus, p)?,
            0x38 => self.alu_form::<0x38>(bus, p)?,
            0x39 => self.alu_form::<0x39>(bus, p)?,
            0x3A => self.alu_form::<0x3A>(bus, p)?,
            0x3B => self.alu_form::<0x3B>(bus, p)?,
            0x3C => self.alu_form::<0x3C>(bus, p)?,
            0x3D => self.alu_form::<0x3D>(bus, p)?,
            0x06 | 0x0E | 0x16 | 0x1E => self.push16(bus, self.sregs[usize::from(op >> 3)])?,
            0x07 | 0x17 | 0x1F => {
                let v = self.pop16(bus)?;
                self.sregs[usize::from(op >> 3)] = v;
            }
            0x27 | 0x2F => self.decimal_adjust(op == 0x2F),
            0x37 | 0x3F => self.ascii_adjust(op == 0x3F),
            0x40..=0x4F => {
                let r = op & 7;
                let v = self.inc_dec(self.reg(r, true), op >= 0x48, true);
                self.set_reg(r, v, true);
            }
            0x50..=0x57 => {
                // The 80286 pushes SP as it was before the push.
                let v = self.r16(usize::from(op & 7));
                self.push16(bus, v)?;
            }
            0x58..=0x5F => {
                let v = self.pop16(bus)?;
                self.set_r16(usize::from(op & 7), v);
            }
            0x60 => {
                let sp = self.r16(SP);
                for r in [AX, CX, DX, BX] {
                    self.push16(bus, self.r16(r))?;
                }
                self.push16(bus, sp)?;
                for r in [BP, SI, DI] {
                    self.push16(bus, self.r16(r))?;
                }
            }
            0x61 => {
                let sp = self.r16(SP);
                let mut v = [0u16; 8];
                for (i, slot) in v.iter_mut().enumerate() {
                    *slot = self.read16(bus, SS, sp.wrapping_add(2 * i as u16))?;
                }
                for (i, r) in [DI, SI, BP, SP, BX, DX, CX, AX].into_iter().enumerate() {
                    if r != SP {
                        self.set_r16(r, v[i]);
                    }
                }
                self.set_r16(SP, sp.wrapping_add(16));
            }
            0x62 => {
                let (reg, ea) = self.modrm(bus, p);
                let Ea::Mem { seg, off } = ea else { return Err(INVALID_OPCODE) };
                let lo = self.read16(bus, seg, off)? as i16;
                let hi = self.read16(bus, seg, off.wrapping_add(2))? as i16;
                let v = self.r16(usize::from(reg)) as i16;
                if v < lo || v > hi {
                    return Err(BOUND_RANGE);
                }
            }
            0x68 => {
                let v = self.fetch16(bus);
                self.push16(bus, v)?;
            }
            0x6A => {
                let v = self.fetch8(bus) as i8 as u16;
                self.push16(bus, v)?;
            }
            0x69 | 0x6B => {
                let (reg, ea) = self.modrm(bus, p);
                let a = self.read_ea(bus, ea, true)? as u16 as i16;
                let b = if op == 0x69 { self.fetch16(bus) as i16 } else { i16::from(self.fetch8(bus) as i8) };
                let r = i32::from(a) * i32::from(b);
                self.set_r16(usize::from(reg), r as u16);
                self.set_mul_flags(r != i32::from(r as i16), u32::from(r as u16), true);
            }
            0x6C..=0x6F | 0xA4..=0xA7 | 0xAA..=0xAF => return self.string(bus, op, p, start),
            0x70..=0x7F => {
                let taken = self.cond(op & 0xF);
                self.jump_rel8(bus, taken);
            }
            0x80..=0x83 => {
                let (alu, ea) = self.modrm(bus, p);
                let a = self.read_ea(bus, ea, w)?;
                let b = if op == 0x83 { u32::from(self.fetch8(bus) as i8 as u16) } else { self.fetch(bus, w) };
                let r = self.alu(alu, a, b, w);
                if alu != 7 {
                    self.write_ea(bus, ea, r, w)?;
                }
            }
            0x84 | 0x85 => {
                let (reg, ea) = self.modrm(bus, p);
                let a = self.read_ea(bus, ea, w)?;
                self.alu(4, a, self.reg(reg, w), w);
            }
            0x86 | 0x87 => {
                let (reg, ea) = self.modrm(bus, p);
                let a = self.read_ea(bus, ea, w)?;
                let b = self.reg(reg, w);
                self.write_ea(bus, ea, b, w)?;
                self.set_reg(reg, a, w);
            }
            0x88 | 0x89 => {
                let (reg, ea) = self.modrm(bus, p);
                self.write_ea(bus, ea, self.reg(reg, w), w)?;
            }
            0x8A | 0x8B => {
                let (reg, ea) = self.modrm(bus, p);
                let v = self.read_ea(bus, ea, w)?;
                self.set_reg(reg, v, w);
            }
            0x8C => {
                let (reg, ea) = self.modrm(bus, p);
                if reg > self.last_sreg() {
                    return Err(INVALID_OPCODE);
                }
                self.write_ea(bus, ea, u32::from(self.sregs[usize::from(reg)]), true)?;
            }
            0x8D => {
                let (reg, ea) = self.modrm(bus, p);
                let Ea::Mem { off, .. } = ea else { return Err(INVALID_OPCODE) };
                self.set_r16(usize::from(reg), off);
            }
            0x8E => {
                let (reg, ea) = self.modrm(bus, p);
                if reg > self.last_sreg() || usize::from(reg) == CS {
                    return Err(INVALID_OPCODE);
                }
                let v = self.read_ea(bus, ea, true)?;
                self.sregs[usize::from(reg)] = v as u16;
            }
            0x8F => {
                let (reg, ea) = self.modrm(bus, p);
                if reg != 0 {
                    return Err(INVALID_OPCODE);
                }
                let sp = self.r16(SP);
                let v = self.read16(bus, SS, sp)?;
                self.set_r16(SP, sp.wrapping_add(2));
                if let Err(e) = self.write_ea(bus, ea, u32::from(v), true) {
                    self.set_r16(SP, sp);
                    return Err(e);
                }
            }
            0x90..=0x97 => {
                let other = usize::from(op & 7);
                let (a, b) = (self.r16(AX), self.r16(other));
                self.set_r16(AX, b);
                self.set_r16(other, a);
            }
            0x98 => self.set_r16(AX, self.r16(AX) as u8 as i8 as u16),
            0x99 => self.set_r16(DX, if self.r16(AX) & 0x8000 != 0 { 0xFFFF } else { 0 }),
            0x9A => {
                let ip = self.fetch16(bus);
                let cs = self.fetch16(bus);
                return self.call_far(bus, cs, ip);
            }
            0x9B => {}
            0x9C => self.push16(bus, self.flags & (WRITABLE | RESERVED_ONE))?,
            0x9D => {
                let v = self.pop16(bus)?;
                return Ok(Self::stop_if(self.load_flags(v)));
            }
            0x9E => {
                let ah = self.r16(AX) >> 8;
                let keep = SF | ZF | AF | PF | CF;
                self.flags = (self.flags & !keep) | (ah & keep);
            }
            0x9F => {
                let f = self.flags & 0xFF;
                self.set_r16(AX, (self.r16(AX) & 0xFF) | (f << 8));
            }
            0xA0..=0xA3 => {
                let off = self.fetch16(bus);
                let seg = p.seg(DS);
                if op & 2 == 0 {
                    let v = self.read_mem(bus, seg, off, w)?;
                    self.set_reg(0, v, w);
                } else {
                    self.write_mem(bus, seg, off, self.reg(0, w), w)?;
                }
            }
            0xA8 | 0xA9 => {
                let b = self.fetch(bus, w);
                self.alu(4, self.reg(0, w), b, w);
            }
            0xB0..=0xBF => {
                let w = op & 8 != 0;
                let v = self.fetch(bus, w);
                self.set_reg(op & 7, v, w);
            }
            0xC0 | 0xC1 | 0xD0..=0xD3 => {
                let (sub, ea) = self.modrm(bus, p);
                let a = self.read_ea(bus, ea, w)?;
                let count = match op {
                    0xC0 | 0xC1 => self.fetch8(bus),
                    0xD0 | 0xD1 => 1,
                    _ => self.r16(CX) as u8,
                };
                let r = self.shift(sub, a, count, if w { 2 } else { 1 });
                self.write_ea(bus, ea, r, w)?;
            }
            0xC2 | 0xC3 => {
                let n = if op == 0xC2 { self.fetch16(bus) } else { 0 };
                let ip = self.pop16(bus)?;
                self.ip = ip;
                self.set_r16(SP, self.r16(SP).wrapping_add(n));
            }
            0xC4 | 0xC5 => {
                let (reg, ea) = self.modrm(bus, p);
                let Ea::Mem { seg, off } = ea else { return Err(INVALID_OPCODE) };
                let v = self.read16(bus, seg, off)?;
                let s = self.read16(bus, seg, off.wrapping_add(2))?;
                self.set_r16(usize::from(reg), v);
                self.sregs[if op == 0xC4 { ES } else { DS }] = s;
            }
            0xC6 | 0xC7 => {
                let (reg, ea) = self.modrm(bus, p);
                if reg != 0 {
                    return Err(INVALID_OPCODE);
                }
                let v = self.fetch(bus, w);
                self.write_ea(bus, ea, v, w)?;
            }
            0xC8 => {
                let size = self.fetch16(bus);
                let level = self.fetch8(bus) & 0x1F;
                self.enter(bus, size, level)?;
            }
            0xC9 => {
                let bp = self.r16(BP);
                let v = self.read16(bus, SS, bp)?;
                self.set_r16(BP, v);
                self.set_r16(SP, bp.wrapping_add(2));
            }
            0xCA | 0xCB => {
                let n = if op == 0xCA { self.fetch16(bus) } else { 0 };
                let sp = self.r16(SP);
                let ip = self.read16(bus, SS, sp)?;
                let cs = self.read16(bus, SS, sp.wrapping_add(2))?;
                self.set_r16(SP, sp.wrapping_add(4).wrapping_add(n));
                self.ip = ip;
                self.sregs[CS] = cs;
                return Ok(Self::stop_if(self.far_arrival(bus)));
            }
            0xCC => return Ok(self.software_interrupt(bus, BREAKPOINT, IntKind::Int3)),
            0xCD => {
                let n = self.fetch8(bus);
                return Ok(self.software_interrupt(bus, n, IntKind::Int));
            }
            0xCE => {
                if self.flag(OF) {
                    return Ok(self.software_interrupt(bus, OVERFLOW, IntKind::Into));
                }
            }
            0xCF => {
                let sp = self.r16(SP);
                let ip = self.read16(bus, SS, sp)?;
                let cs = self.read16(bus, SS, sp.wrapping_add(2))?;
                let f = self.read16(bus, SS, sp.wrapping_add(4))?;
                self.set_r16(SP, sp.wrapping_add(6));
                self.ip = ip;
                self.sregs[CS] = cs;
                let if_change = self.load_flags(f);
                return Ok(Self::stop_if(self.far_arrival(bus).or(if_change)));
            }
            0xD4 => {
                let base = self.fetch8(bus);
                if base == 0 {
                    return Err(DIVIDE_ERROR);
                }
                let al = self.r16(AX) as u8;
                let r = u16::from(al / base) << 8 | u16::from(al % base);
                self.set_r16(AX, r);
                self.set_szp(u32::from(r & 0xFF), false);
                self.flags &= !(OF | AF | CF);
            }
            0xD5 => {
                let base = self.fetch8(bus);
                let [al, ah] = self.r16(AX).to_le_bytes();
                let prod = (u32::from(ah) * u32::from(base)) & 0xFF;
                let r = self.alu(0, u32::from(al), prod, false);
                self.set_r16(AX, r as u16);
            }
            0xD6 => {
                let v = if self.flag(CF) { 0xFF } else { 0 };
                self.set_reg8(0, v);
            }
            0xD7 => {
                let off = self.r16(BX).wrapping_add(self.r16(AX) & 0xFF);
                let v = self.read8(bus, p.seg(DS), off);
                self.set_reg8(0, v);
            }
            // Coprocessor escapes: without an 80287 they decode their
            // operand, fault on a memory operand at offset 0xFFFF as a word
            // access would (the 80286 does), and do nothing else.
            0xD8..=0xDF => {
                if let (_, Ea::Mem { seg, off }) = self.modrm(bus, p) {
                    self.read16(bus, seg, off)?;
                }
            }
            0xE0..=0xE3 => {
                let taken = if op == 0xE3 {
                    self.r16(CX) == 0
                } else {
                    let cx = self.r16(CX).wrapping_sub(1);
                    self.set_r16(CX, cx);
                    cx != 0
                        && match op {
                            0xE0 => !self.flag(ZF),
                            0xE1 => self.flag(ZF),
                            _ => true,
                        }
                };
                self.jump_rel8(bus, taken);
            }
            0xE4 | 0xE5 | 0xEC | 0xED => {
                let port = if op & 8 == 0 { u16::from(self.fetch8(bus)) } else { self.r16(DX) };
                let Some(v) = self.pending_in.take() else {
                    return Ok(Step::Wait(ExitReason::In { port, size: size(w) }));
                };
                self.set_reg(0, v, w);
            }
            0xE6 | 0xE7 | 0xEE | 0xEF => {
                let port = if op & 8 == 0 { u16::from(self.fetch8(bus)) } else { self.r16(DX) };
                let value = self.reg(0, w);
                return Ok(Step::Stop(ExitReason::Out { port, size: size(w), value }));
            }
            0xE8 => {
                let d = self.fetch16(bus);
                self.push16(bus, self.ip)?;
                self.ip = self.ip.wrapping_add(d);
            }
            0xE9 => {
                let d = self.fetch16(bus);
                self.ip = self.ip.wrapping_add(d);
            }
            0xEA => {
                let ip = self.fetch16(bus);
                let cs = self.fetch16(bus);
                self.ip = ip;
                self.sregs[CS] = cs;
                return Ok(Self::stop_if(self.far_arrival(bus)));
            }
            0xEB => self.jump_rel8(bus, true),
            0xF4 => return Ok(Step::Stop(ExitReason::Halt)),
            0xF5 => self.flags ^= CF,
            0xF6 | 0xF7 => return self.group3(bus, p, w),
            0xF8 | 0xF9 => self.set_flag(CF, op & 1 != 0),
            0xFA | 0xFB => {
                let was = self.flag(IF);
                self.set_flag(IF, op & 1 != 0);
                if was != (op & 1 != 0) {
                    return Ok(Step::Stop(ExitReason::InterruptFlag { enabled: op & 1 != 0 }));
                }
            }
            0xFC | 0xFD => self.set_flag(DF, op & 1 != 0),
            0xFE | 0xFF => return self.group45(bus, p, w),
            0x0F if self.model == Model::I80386 => return self.two_byte(bus, p),
            _ => return Err(INVALID_OPCODE),
        }
        Ok(Step::Next)
    }

    /// Whether the instruction at `start` whose opcode `op` follows its
    /// prefixes `p` is longer than `max_len` bytes. A form that raises #UD
    /// is not (the processor decodes it first).
    #[cold]
    #[inline(never)]
    fn overlong<B: Bus + ?Sized>(&self, bus: &mut B, op: u8, start: u16, max_len: u16, p: Prefix) -> bool {
        let opcode_at = self.ip.wrapping_sub(1).wrapping_sub(start);
        if op == 0x0F && self.model == Model::I80386 {
            return self.overlong_0f(bus, opcode_at, max_len, p);
        }
        let modrm = bus.read8(self.lin(CS, self.ip));
        let (md, reg) = (modrm >> 6, (modrm >> 3) & 7);
        let has_modrm = matches!(op,
            0x00..=0x3F if op & 7 < 4)
            || matches!(op, 0x62 | 0x69 | 0x6B | 0x80..=0x8F | 0xC0 | 0xC1 | 0xC4..=0xC7 | 0xD0..=0xD3 | 0xD8..=0xDF | 0xF6 | 0xF7 | 0xFE | 0xFF);
        let invalid = match op {
            0x0F | 0x63..=0x67 | 0xF1 => true,
            0x62 | 0x8D | 0xC4 | 0xC5 => md == 3,
            0x8C => reg > self.last_sreg(),
            0x8E => reg > self.last_sreg() || reg == 1,
            0x8F | 0xC6 | 0xC7 => reg != 0,
            0xFE => reg > 1,
            0xFF => reg == 7 || (md == 3 && (reg == 3 || reg == 5)),
            _ => false,
        };
        if invalid {
            return false;
        }
        // A word immediate or displacement is a dword with 66h.
        let word: u16 = if p.o32 { 4 } else { 2 };
        let imm: u16 = match op {
            0x00..=0x3F if op & 7 == 4 => 1,
            0x00..=0x3F if op & 7 == 5 => word,
            0x6A | 0x6B | 0x70..=0x7F | 0x80 | 0x82 | 0x83 | 0xA8 | 0xB0..=0xB7 => 1,
            0xC0 | 0xC1 | 0xC6 | 0xCD | 0xD4 | 0xD5 | 0xE0..=0xE7 | 0xEB => 1,
            0x68 | 0x69 | 0x81 | 0xA9 | 0xB8..=0xBF | 0xC7 | 0xE8 | 0xE9 => word,
            0xA0..=0xA3 => {
                if p.a32 {
                    4
                } else {
                    2
                }
            }
            0xC2 | 0xCA => 2,
            0xC8 => 3,
            0x9A | 0xEA => word + 2,
            0xF6 if reg < 2 => 1,
            0xF7 if reg < 2 => word,
            _ => 0,
        };
        let operand = if has_modrm { self.modrm_len(bus, self.ip, p.a32) } else { 0 };
        opcode_at + 1 + operand + imm > max_len
    }

    /// [`Cpu::overlong`] for an 80386 `0F` form.
    fn overlong_0f<B: Bus + ?Sized>(&self, bus: &mut B, opcode_at: u16, max_len: u16, p: Prefix) -> bool {
        let op = bus.read8(self.lin(CS, self.ip));
        let modrm = bus.read8(self.lin(CS, self.ip.wrapping_add(1)));
        let (md, reg) = (modrm >> 6, (modrm >> 3) & 7);
        let known = matches!(op,
            0x80..=0xA1 | 0xA3..=0xA5 | 0xA8 | 0xA9 | 0xAB..=0xAD | 0xAF | 0xB2..=0xB7 | 0xBA..=0xBF);
        let invalid = !known || (op == 0xBA && reg < 4) || (matches!(op, 0xB2 | 0xB4 | 0xB5) && md == 3);
        if invalid {
            return false;
        }
        let has_modrm = !matches!(op, 0x80..=0x8F | 0xA0 | 0xA1 | 0xA8 | 0xA9);
        let imm: u16 = match op {
            0x80..=0x8F if p.o32 => 4,
            0x80..=0x8F => 2,
            0xA4 | 0xAC | 0xBA => 1,
            _ => 0,
        };
        let operand = if has_modrm { self.modrm_len(bus, self.ip.wrapping_add(1), p.a32) } else { 0 };
        opcode_at + 2 + operand + imm > max_len
    }

    /// The length of the ModRM byte at `at` with its SIB byte and
    /// displacement.
    fn modrm_len<B: Bus + ?Sized>(&self, bus: &mut B, at: u16, a32: bool) -> u16 {
        let modrm = bus.read8(self.lin(CS, at));
        let (md, rm) = (modrm >> 6, modrm & 7);
        let disp = match (a32, md) {
            (_, 3) => 0,
            (false, 0) if rm == 6 => 2,
            (false, 0) => 0,
            (_, 1) => 1,
            (false, _) => 2,
            (true, 0) if rm == 5 => 4,
            (true, 0) => 0,
            (true, _) => 4,
        };
        let sib = a32 && md != 3 && rm == 4;
        let base_disp = if sib && md == 0 && bus.read8(self.lin(CS, at.wrapping_add(1))) & 7 == 5 { 4 } else { 0 };
        1 + u16::from(sib) + disp + base_disp
    }

    /// The highest segment register number `MOV` to or from a segment
    /// register accepts: DS on the 80286, GS on the 80386.
    fn last_sreg(&self) -> u8 {
        if self.model == Model::I80386 { GS as u8 } else { DS as u8 }
    }

    /// The 80386's `0F` forms, at 16-bit operand size.
    fn two_byte<B: Bus + ?Sized>(&mut self, bus: &mut B, p: Prefix) -> R<Step> {
        let op = self.fetch8(bus);
        match op {
            0x80..=0x8F => {
                let d = self.fetch16(bus);
                if self.cond(op & 0xF) {
                    self.ip = self.ip.wrapping_add(d);
                }
            }
            0x90..=0x9F => {
                let (_, ea) = self.modrm(bus, p);
                let v = u32::from(self.cond(op & 0xF));
                self.write_ea(bus, ea, v, false)?;
            }
            0xA0 | 0xA8 => self.push16(bus, self.sregs[if op == 0xA0 { FS } else { GS }])?,
            0xA1 | 0xA9 => {
                let v = self.pop16(bus)?;
                self.sregs[if op == 0xA1 { FS } else { GS }] = v;
            }
            0xA3 | 0xAB | 0xB3 | 0xBB => {
                let (reg, ea) = self.modrm(bus, p);
                let bit = self.r16(usize::from(reg));
                // A memory operand is a bit string: the signed offset in
                // the register selects the word as well as the bit.
                let ea = match ea {
                    Ea::Mem { seg, off } => {
                        let words = ((bit as i16) >> 4) as u16;
                        Ea::Mem { seg, off: off.wrapping_add(words.wrapping_mul(2)) }
                    }
                    reg => reg,
                };
                self.bit_test(bus, (op >> 3) & 3, ea, bit & 15)?;
            }
            0xBA => {
                let (sub, ea) = self.modrm(bus, p);
                if sub < 4 {
                    return Err(INVALID_OPCODE);
                }
                let bit = u16::from(self.fetch8(bus) & 15);
                self.bit_test(bus, sub - 4, ea, bit)?;
            }
            0xA4 | 0xA5 | 0xAC | 0xAD => {
                let (reg, ea) = self.modrm(bus, p);
                let count = if op & 1 == 0 { self.fetch8(bus) } else { self.r16(CX) as u8 } & 0x1F;
                let d = self.read_ea(bus, ea, true)?;
                if count != 0 {
                    let r = self.double_shift(op < 0xA8, d, self.reg(reg, true), count);
                    self.write_ea(bus, ea, r, true)?;
                }
            }
            0xAF => {
                let (reg, ea) = self.modrm(bus, p);
                let a = self.read_ea(bus, ea, true)? as u16 as i16;
                let b = self.r16(usize::from(reg)) as i16;
                let r = i32::from(a) * i32::from(b);
                self.set_r16(usize::from(reg), r as u16);
                self.set_mul_flags(r != i32::from(r as i16), u32::from(r as u16), true);
            }
            0xB2 | 0xB4 | 0xB5 => {
                let (reg, ea) = self.modrm(bus, p);
                let Ea::Mem { seg, off } = ea else { return Err(INVALID_OPCODE) };
                let v = self.read16(bus, seg, off)?;
                let s = self.read16(bus, seg, off.wrapping_add(2))?;
                self.set_r16(usize::from(reg), v);
                self.sregs[match op {
                    0xB2 => SS,
                    0xB4 => FS,
                    _ => GS,
                }] = s;
            }
            0xB6 | 0xB7 | 0xBE | 0xBF => {
                let (reg, ea) = self.modrm(bus, p);
                let wide = op & 1 != 0;
                let v = self.read_ea(bus, ea, wide)?;
                let v = if wide || op < 0xB8 { v as u16 } else { v as u8 as i8 as u16 };
                self.set_r16(usize::from(reg), v);
            }
            0xBC | 0xBD => {
                let (reg, ea) = self.modrm(bus, p);
                let v = self.read_ea(bus, ea, true)? as u16;
                self.set_flag(ZF, v == 0);
                if v != 0 {
                    let index = if op == 0xBC { v.trailing_zeros() } else { 15 - v.leading_zeros() };
                    self.set_r16(usize::from(reg), index as u16);
                }
            }
            _ => return Err(INVALID_OPCODE),
        }
        Ok(Step::Next)
    }

    /// `BT` (0), `BTS` (1), `BTR` (2), `BTC` (3) of bit `bit` of a word:
    /// CF gets the bit, then the bit is left, set, cleared or flipped.
    fn bit_test<B: Bus + ?Sized>(&mut self, bus: &mut B, kind: u8, ea: Ea, bit: u16) -> R<()> {
        let v = self.read_ea(bus, ea, true)?;
        let m = 1 << bit;
        self.set_flag(CF, v & m != 0);
        let r = match kind {
            0 => return Ok(()),
            1 => v | m,
            2 => v & !m,
            _ => v ^ m,
        };
        self.write_ea(bus, ea, r, true)
    }

    /// `SHLD` (`left`) / `SHRD` of word `d` by `count` (1-31) with the bits
    /// of `s` shifted in. Counts above 16 leave the result undefined; here
    /// they shift the 32-bit pair further.
    fn double_shift(&mut self, left: bool, d: u32, s: u32, count: u8) -> u32 {
        let count = u32::from(count);
        let (r, cf) = if left {
            let pair = (u64::from(d) << 16) | u64::from(s);
            ((pair << count) >> 16, (pair >> (32 - count)) & 1)
        } else {
            let pair = (u64::from(s) << 16) | u64::from(d);
            (pair >> count, (pair >> (count - 1)) & 1)
        };
        let r = (r & 0xFFFF) as u32;
        self.set_flag(CF, cf != 0);
        self.set_flag(OF, (r ^ d) & 0x8000 != 0);
        self.flags &= !AF;
        self.set_szp(r, true);
        r
    }

    /// Opcodes 00-3F with (opcode & 7) < 6: the ALU operation in bits 3-5,
    /// r/m,reg / reg,r/m / AL|AX,imm in bits 0-2.
    #[inline(always)]
    fn alu_form<const OP: u8>(&mut self, bus: &mut (impl Bus + ?Sized), p: Prefix) -> R<()> {
        let alu = OP >> 3;
        let w = OP & 1 != 0;
        if OP & 7 >= 4 {
            let b = self.fetch(bus, w);
            let r = self.alu(alu, self.reg(0, w), b, w);
            if alu != 7 {
                self.set_reg(0, r, w);
            }
            return Ok(());
        }
        let (reg, ea) = self.modrm(bus, p);
        let a = self.read_ea(bus, ea, w)?;
        let b = self.reg(reg, w);
        if OP & 2 == 0 {
            let r = self.alu(alu, a, b, w);
            if alu != 7 {
                self.write_ea(bus, ea, r, w)?;
            }
        } else {
            let r = self.alu(alu, b, a, w);
            if alu != 7 {
                self.set_reg(reg, r, w);
            }
        }
        Ok(())
    }

    fn set_mul_flags(&mut self, overflow: bool, low: u32, w: bool) {
        self.set_flag(CF, overflow);
        self.set_flag(OF, overflow);
        self.set_szp(low, w);
        self.flags &= !AF;
    }

    fn call_far<B: Bus + ?Sized>(&mut self, bus: &mut B, cs: u16, ip: u16) -> R<Step> {
        let sp = self.r16(SP);
        self.write16(bus, SS, sp.wrapping_sub(2), self.sregs[CS])?;
        self.write16(bus, SS, sp.wrapping_sub(4), self.ip)?;
        self.set_r16(SP, sp.wrapping_sub(4));
        self.sregs[CS] = cs;
        self.ip = ip;
        Ok(Self::stop_if(self.far_arrival(bus)))
    }

    fn enter<B: Bus + ?Sized>(&mut self, bus: &mut B, size: u16, level: u8) -> R<()> {
        let saved = (self.r16(SP), self.r16(BP));
        let result = (|| {
            self.push16(bus, self.r16(BP))?;
            let frame = self.r16(SP);
            if level > 0 {
                for _ in 1..level {
                    self.set_r16(BP, self.r16(BP).wrapping_sub(2));
                    let v = self.read16(bus, SS, self.r16(BP))?;
                    self.push16(bus, v)?;
                }
                self.push16(bus, frame)?;
            }
            self.set_r16(BP, frame);
            self.set_r16(SP, self.r16(SP).wrapping_sub(size));
            Ok(())
        })();
        if result.is_err() {
            self.set_r16(SP, saved.0);
            self.set_r16(BP, saved.1);
        }
        result
    }

    fn decimal_adjust(&mut self, sub: bool) {
        let al = self.r16(AX) as u8;
        let cf = self.flag(CF);
        let mut r = al;
        let mut new_cf = false;
        if al & 0x0F > 9 || self.flag(AF) {
            let (v, c) = if sub { r.overflowing_sub(6) } else { r.overflowing_add(6) };
            r = v;
            new_cf = cf || c;
            self.flags |= AF;
        } else {
            self.flags &= !AF;
        }
        if al > 0x99 || cf {
            r = if sub { r.wrapping_sub(0x60) } else { r.wrapping_add(0x60) };
            new_cf = true;
        }
        self.set_flag(CF, new_cf);
        self.set_reg8(0, r);
        self.set_szp(u32::from(r), false);
    }

    fn ascii_adjust(&mut self, sub: bool) {
        let ax = self.r16(AX);
        if ax & 0x0F > 9 || self.flag(AF) {
            // The 80286 adjusts AX as a word, so a borrow from AL also
            // reaches AH.
            let r = if sub { ax.wrapping_sub(6).wrapping_sub(0x100) } else { ax.wrapping_add(0x106) };
            self.set_r16(AX, r & 0xFF0F);
            self.flags |= AF | CF;
        } else {
            self.set_r16(AX, ax & 0xFF0F);
            self.flags &= !(AF | CF);
        }
    }

    /// Group 3 (F6/F7): TEST NOT NEG MUL IMUL DIV IDIV.
    fn group3<B: Bus + ?Sized>(&mut self, bus: &mut B, p: Prefix, w: bool) -> R<Step> {
        let (sub, ea) = self.modrm(bus, p);
        let a = self.read_ea(bus, ea, w)?;
        match sub {
            0 | 1 => {
                let b = self.fetch(bus, w);
                self.alu(4, a, b, w);
            }
            2 => self.write_ea(bus, ea, !a & mask(w), w)?,
            3 => {
                let r = self.alu(5, 0, a, w);
                self.write_ea(bus, ea, r, w)?;
            }
            4 => {
                if w {
                    let r = u32::from(self.r16(AX)) * a;
                    self.set_r16(AX, r as u16);
                    self.set_r16(DX, (r >> 16) as u16);
                    self.set_mul_flags(r >> 16 != 0, r, true);
                } else {
                    let r = (self.r16(AX) & 0xFF) * a as u16;
                    self.set_r16(AX, r);
                    self.set_mul_flags(r >> 8 != 0, u32::from(r), false);
                }
            }
            5 => {
                if w {
                    let r = i32::from(self.r16(AX) as i16) * i32::from(a as u16 as i16);
                    self.set_r16(AX, r as u16);
                    self.set_r16(DX, (r >> 16) as u16);
                    self.set_mul_flags(r != i32::from(r as i16), r as u32, true);
                } else {
                    let r = i16::from(self.r16(AX) as u8 as i8) * i16::from(a as u8 as i8);
                    self.set_r16(AX, r as u16);
                    self.set_mul_flags(r != i16::from(r as i8), r as u32, false);
                }
            }
            6 => {
                if a == 0 {
                    return Err(DIVIDE_ERROR);
                }
                if w {
                    let n = u32::from(self.r16(DX)) << 16 | u32::from(self.r16(AX));
                    let q = n / a;
                    if q > 0xFFFF {
                        return Err(DIVIDE_ERROR);
                    }
                    self.set_r16(AX, q as u16);
                    self.set_r16(DX, (n % a) as u16);
                } else {
                    let n = u32::from(self.r16(AX));
                    let q = n / a;
                    if q > 0xFF {
                        return Err(DIVIDE_ERROR);
                    }
                    self.set_r16(AX, ((n % a) << 8 | q) as u16);
                }
            }
            _ => {
                if a == 0 {
                    return Err(DIVIDE_ERROR);
                }
                if w {
                    let n = i64::from((u32::from(self.r16(DX)) << 16 | u32::from(self.r16(AX))) as i32);
                    let d = i64::from(a as u16 as i16);
                    let q = n / d;
                    if !(-0x8000..=0x7FFF).contains(&q) {
                        return Err(DIVIDE_ERROR);
                    }
                    self.set_r16(AX, q as u16);
                    self.set_r16(DX, (n % d) as u16);
                } else {
                    let n = i32::from(self.r16(AX) as i16);
                    let d = i32::from(a as u8 as i8);
                    let q = n / d;
                    if !(-0x80..=0x7F).contains(&q) {
                        return Err(DIVIDE_ERROR);
                    }
                    self.set_r16(AX, u16::from_le_bytes([q as u8, (n % d) as u8]));
                }
            }
        }
        Ok(Step::Next)
    }

    /// Groups 4 and 5 (FE/FF): INC DEC CALL CALLF JMP JMPF PUSH.
    fn group45<B: Bus + ?Sized>(&mut self, bus: &mut B, p: Prefix, w: bool) -> R<Step> {
        let (sub, ea) = self.modrm(bus, p);
        match (sub, w) {
            (0 | 1, _) => {
                let a = self.read_ea(bus, ea, w)?;
                let r = self.inc_dec(a, sub == 1, w);
                self.write_ea(bus, ea, r, w)?;
            }
            (2, true) => {
                let target = self.read_ea(bus, ea, true)? as u16;
                self.push16(bus, self.ip)?;
                self.ip = target;
            }
            (4, true) => self.ip = self.read_ea(bus, ea, true)? as u16,
            (3 | 5, true) => {
                let Ea::Mem { seg, off } = ea else { return Err(INVALID_OPCODE) };
                let ip = self.read16(bus, seg, off)?;
                let cs = self.read16(bus, seg, off.wrapping_add(2))?;
                if sub == 3 {
                    return self.call_far(bus, cs, ip);
                }
                self.ip = ip;
                self.sregs[CS] = cs;
                return Ok(Self::stop_if(self.far_arrival(bus)));
            }
            (6, true) => {
                let v = self.read_ea(bus, ea, true)? as u16;
                self.push16(bus, v)?;
            }
            _ => return Err(INVALID_OPCODE),
        }
        Ok(Step::Next)
    }

    /// String instructions, one element per step: a `REP` form leaves IP
    /// at its first prefix until CX reaches zero, so it can be interrupted
    /// and resumed between elements.
    fn string<B: Bus + ?Sized>(&mut self, bus: &mut B, op: u8, p: Prefix, start: u16) -> R<Step> {
        let w = op & 1 != 0;
        if p.rep != 0 && self.r16(CX) == 0 {
            return Ok(Step::Next);
        }
        let port = self.r16(DX);
        if self.string_io && matches!(op, 0x6C..=0x6F) {
            return Ok(Step::Wait(self.string_io_exit(op, p, size(w))));
        }
        let pending = match op {
            0x6C | 0x6D => match self.pending_in.take() {
                Some(v) => v,
                None => return Ok(Step::Wait(ExitReason::In { port, size: size(w) })),
            },
            _ => 0,
        };
        // The 80286 counts CX down and advances SI/DI as it issues each
        // access, so a fault on an element leaves them advanced past the
        // access that faulted; CMPS counts after its first read.
        let count = |cpu: &mut Self| {
            if p.rep != 0 {
                cpu.set_r16(CX, cpu.r16(CX).wrapping_sub(1));
            }
        };
        if !matches!(op, 0xA6 | 0xA7) {
            count(self);
        }
        let src = p.seg(DS);
        let mut exit = None;
        let mut compares = false;
        match op {
            0x6C | 0x6D => self.string_write(bus, pending, w, p.rep != 0)?,
            0x6E | 0x6F => {
                let value = self.string_read(bus, src, SI, w)?;
                exit = Some(ExitReason::Out { port, size: size(w), value });
            }
            0xA4 | 0xA5 => {
                let v = self.string_read(bus, src, SI, w)?;
                self.string_write(bus, v, w, p.rep != 0)?;
            }
            0xA6 | 0xA7 => {
                // The 80286 reads ES:DI first.
                let b = self.string_read(bus, ES, DI, w)?;
                count(self);
                let a = self.string_read(bus, src, SI, w)?;
                self.alu(7, a, b, w);
                compares = true;
            }
            0xAA | 0xAB => self.string_write(bus, self.reg(0, w), w, p.rep != 0)?,
            0xAC | 0xAD => {
                let v = self.string_read(bus, src, SI, w)?;
                self.set_reg(0, v, w);
            }
            _ => {
                let b = self.string_read(bus, ES, DI, w)?;
                self.alu(7, self.reg(0, w), b, w);
                compares = true;
            }
        }
        if p.rep != 0 {
            let done = self.r16(CX) == 0 || (compares && self.flag(ZF) != (p.rep == 0xF3));
            if !done {
                self.ip = start;
            }
        }
        Ok(Self::stop_if(exit))
    }

    /// The [`ExitReason::StringIo`] of `INS`/`OUTS` (opcode `op`), IP past
    /// its opcode.
    pub(crate) fn string_io_exit(&self, op: u8, p: Prefix, size: Size) -> ExitReason {
        let output = op >= 0x6E;
        let segment = if output { self.sregs[p.seg(DS)] } else { self.sregs[ES] };
        ExitReason::StringIo {
            port: self.r16(DX),
            size,
            output,
            segment,
            rep: p.rep != 0,
            addr32: p.a32,
            next_ip: self.ip,
        }
    }

    /// The step of SI or DI for one element, by DF and width.
    fn string_delta(&self, w: bool) -> u16 {
        let d = if w { 2 } else { 1 };
        if self.flag(DF) { 0u16.wrapping_sub(d) } else { d }
    }

    /// Reads one string element at `seg:index` and advances the index.
    fn string_read<B: Bus + ?Sized>(&mut self, bus: &mut B, seg: usize, index: usize, w: bool) -> R<u32> {
        let off = self.r16(index);
        self.set_r16(index, off.wrapping_add(self.string_delta(w)));
        self.read_mem(bus, seg, off, w)
    }

    /// Writes one string element at ES:DI and advances DI. When the write
    /// of a `REP` element faults, the 80286 has already counted CX down
    /// for the next element.
    fn string_write<B: Bus + ?Sized>(&mut self, bus: &mut B, v: u32, w: bool, rep: bool) -> R<()> {
        let off = self.r16(DI);
        self.set_r16(DI, off.wrapping_add(self.string_delta(w)));
        let result = self.write_mem(bus, ES, off, v, w);
        if result.is_err() && rep && self.r16(CX) != 0 {
            self.set_r16(CX, self.r16(CX) - 1);
        }
        result
    }
}

fn size(w: bool) -> Size {
    if w { Size::Word } else { Size::Byte }
}
