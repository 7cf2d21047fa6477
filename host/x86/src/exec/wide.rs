//! The 80386's operand-size (66h) and address-size (67h) prefixes in real
//! mode.
//!
//! An instruction carrying either prefix runs here when the prefix changes
//! what it does; the others (`INT`, `CLC`, `MOV AL,imm`, ...) go back to
//! the 16-bit decoder, which stays free of width checks. Operands are
//! `n` bytes wide (1, 2 or 4) and offsets 32 bits wide.
//!
//! The real-mode rules the 80386 manual gives for these forms:
//!
//! * Every segment's limit is 0xFFFF. An operand any byte of which lies
//!   above it raises #SS (12) when it is SS-based (the stack, or an
//!   address through SS) and #GP (13) otherwise; nothing is changed.
//! * A near or far transfer to an offset above 0xFFFF raises #GP before
//!   anything is pushed or counted.
//! * The stack stays 16 bits wide (SP), whatever the operand size.

use super::*;
use crate::cpu::vector::STACK_FAULT;

/// An operand: a register number or a memory location with a 32-bit offset.
#[derive(Clone, Copy)]
enum Op {
    Reg(u8),
    Mem { seg: usize, off: u32 },
}

/// `v` as an `n`-byte signed number.
fn sext(v: u32, n: u32) -> i64 {
    match n {
        1 => i64::from(v as u8 as i8),
        2 => i64::from(v as u16 as i16),
        _ => i64::from(v as i32),
    }
}

/// The port-access width of an `n`-byte operand.
fn size_n(n: u32) -> Size {
    match n {
        1 => Size::Byte,
        2 => Size::Word,
        _ => Size::Dword,
    }
}

impl Cpu {
    /// Executes an instruction with a 66h or 67h prefix whose opcode `op`
    /// follows the prefixes; `None` when the prefixes do not change it and
    /// the 16-bit decoder runs it.
    #[cold]
    #[inline(never)]
    pub(super) fn step_wide<B: Bus + ?Sized>(
        &mut self,
        bus: &mut B,
        op: u8,
        p: Prefix,
        start: u16,
        max_len: u16,
    ) -> R<Option<Step>> {
        if matches!(
            op,
            0x27 | 0x2F
                | 0x37
                | 0x3F
                | 0x63
                | 0x9B
                | 0x9E
                | 0x9F
                | 0xA8
                | 0xB0..=0xB7
                | 0xCC..=0xCE
                | 0xD4..=0xD6
                | 0xE4
                | 0xE6
                | 0xEC
                | 0xEE
                | 0xF1
                | 0xF4
                | 0xF5
                | 0xF8..=0xFD
        ) {
            return Ok(None);
        }
        // The longest form without prefixes is eleven bytes (e.g. `MOV
        // dword [SIB+disp32],imm32`), so it takes five prefixes to make one
        // too long.
        let prefixes = self.ip.wrapping_sub(start).wrapping_sub(1);
        if prefixes + 11 > max_len && self.overlong(bus, op, start, max_len, p) {
            return Err(GENERAL_PROTECTION);
        }
        let os = if p.o32 { 4 } else { 2 };
        let n = if op & 1 != 0 { os } else { 1 };
        match op {
            0x00..=0x3F if op & 7 < 6 => {
                let alu = (op >> 3) & 7;
                if op & 7 >= 4 {
                    let b = self.fetch_n(bus, n);
                    let r = self.alu_n(alu, self.reg_n(0, n), b, n);
                    if alu != 7 {
                        self.set_reg_n(0, r, n);
                    }
                } else {
                    let (reg, ea) = self.modrm_w(bus, p);
                    let a = self.read_op(bus, ea, n)?;
                    let b = self.reg_n(reg, n);
                    if op & 2 == 0 {
                        let r = self.alu_n(alu, a, b, n);
                        if alu != 7 {
                            self.write_op(bus, ea, r, n)?;
                        }
                    } else {
                        let r = self.alu_n(alu, b, a, n);
                        if alu != 7 {
                            self.set_reg_n(reg, r, n);
                        }
                    }
                }
            }
            0x06 | 0x0E | 0x16 | 0x1E => self.push_all(bus, &[u32::from(self.sregs[usize::from(op >> 3)])], os)?,
            0x07 | 0x17 | 0x1F => {
                let v = self.pop_n(bus, os)?;
                self.sregs[usize::from(op >> 3)] = v as u16;
            }
            0x0F => return self.two_byte_wide(bus, p).map(Some),
            0x40..=0x4F => {
                let r = op & 7;
                let v = self.inc_dec_n(self.reg_n(r, os), op >= 0x48, os);
                self.set_reg_n(r, v, os);
            }
            // PUSH ESP pushes the value before the push.
            0x50..=0x57 => self.push_all(bus, &[self.reg_n(op & 7, os)], os)?,
            0x58..=0x5F => {
                let v = self.pop_n(bus, os)?;
                self.set_reg_n(op & 7, v, os);
            }
            0x60 => {
                let r = |i: usize| self.reg_n(i as u8, os);
                let v = [r(AX), r(CX), r(DX), r(BX), r(SP), r(BP), r(SI), r(DI)];
                self.push_all(bus, &v, os)?;
            }
            0x61 => {
                let v = self.pop_all::<B, 8>(bus, os)?;
                for (i, r) in [DI, SI, BP, SP, BX, DX, CX, AX].into_iter().enumerate() {
                    if r != SP {
                        self.set_reg_n(r as u8, v[i], os);
                    }
                }
            }
            0x62 => {
                let (reg, ea) = self.modrm_w(bus, p);
                let Op::Mem { seg, off } = ea else { return Err(INVALID_OPCODE) };
                self.check(seg, off, 2 * os)?;
                let lo = sext(self.rd(bus, seg, off, os)?, os);
                let hi = sext(self.rd(bus, seg, off + os, os)?, os);
                let v = sext(self.reg_n(reg, os), os);
                if v < lo || v > hi {
                    return Err(BOUND_RANGE);
                }
            }
            0x68 | 0x6A => {
                let v = if op == 0x68 { self.fetch_n(bus, os) } else { self.fetch8(bus) as i8 as u32 };
                self.push_all(bus, &[v], os)?;
            }
            0x69 | 0x6B => {
                let (reg, ea) = self.modrm_w(bus, p);
                let a = self.read_op(bus, ea, os)?;
                let b = if op == 0x69 { self.fetch_n(bus, os) } else { self.fetch8(bus) as i8 as u32 };
                self.imul_to(reg, a, b, os);
            }
            0x6C..=0x6F | 0xA4..=0xA7 | 0xAA..=0xAF => return self.string_wide(bus, op, p, start).map(Some),
            0x70..=0x7F => {
                let d = self.fetch8(bus) as i8 as u32;
                let taken = self.cond(op & 0xF);
                self.jump_rel(d, taken, p.o32)?;
            }
            0x80..=0x83 => {
                let n = if op == 0x81 || op == 0x83 { os } else { 1 };
                let (alu, ea) = self.modrm_w(bus, p);
                let a = self.read_op(bus, ea, n)?;
                let b = if op == 0x83 { self.fetch8(bus) as i8 as u32 } else { self.fetch_n(bus, n) };
                let r = self.alu_n(alu, a, b, n);
                if alu != 7 {
                    self.write_op(bus, ea, r, n)?;
                }
            }
            0x84 | 0x85 => {
                let (reg, ea) = self.modrm_w(bus, p);
                let a = self.read_op(bus, ea, n)?;
                self.alu_n(4, a, self.reg_n(reg, n), n);
            }
            0x86 | 0x87 => {
                let (reg, ea) = self.modrm_w(bus, p);
                let a = self.read_op(bus, ea, n)?;
                self.write_op(bus, ea, self.reg_n(reg, n), n)?;
                self.set_reg_n(reg, a, n);
            }
            0x88 | 0x89 => {
                let (reg, ea) = self.modrm_w(bus, p);
                self.write_op(bus, ea, self.reg_n(reg, n), n)?;
            }
            0x8A | 0x8B => {
                let (reg, ea) = self.modrm_w(bus, p);
                let v = self.read_op(bus, ea, n)?;
                self.set_reg_n(reg, v, n);
            }
            0x8C => {
                let (reg, ea) = self.modrm_w(bus, p);
                if reg > self.last_sreg() {
                    return Err(INVALID_OPCODE);
                }
                let v = u32::from(self.sregs[usize::from(reg)]);
                // A register takes the selector zero-extended to the
                // operand size; memory always takes a word.
                match ea {
                    Op::Reg(r) => self.set_reg_n(r, v, os),
                    mem => self.write_op(bus, mem, v, 2)?,
                }
            }
            0x8D => {
                let (reg, ea) = self.modrm_w(bus, p);
                let Op::Mem { off, .. } = ea else { return Err(INVALID_OPCODE) };
                self.set_reg_n(reg, off, os);
            }
            0x8E => {
                let (reg, ea) = self.modrm_w(bus, p);
                if reg > self.last_sreg() || usize::from(reg) == CS {
                    return Err(INVALID_OPCODE);
                }
                let v = self.read_op(bus, ea, 2)?;
                self.sregs[usize::from(reg)] = v as u16;
            }
            0x8F => {
                let (reg, ea) = self.modrm_w(bus, p);
                if reg != 0 {
                    return Err(INVALID_OPCODE);
                }
                let sp = self.r16(SP);
                let v = self.pop_n(bus, os)?;
                if let Err(e) = self.write_op(bus, ea, v, os) {
                    self.set_r16(SP, sp);
                    return Err(e);
                }
            }
            0x90..=0x97 => {
                let other = op & 7;
                let (a, b) = (self.reg_n(0, os), self.reg_n(other, os));
                self.set_reg_n(0, b, os);
                self.set_reg_n(other, a, os);
            }
            0x98 => {
                if p.o32 {
                    self.regs[AX] = self.r16(AX) as i16 as u32;
                } else {
                    self.set_r16(AX, self.r16(AX) as u8 as i8 as u16);
                }
            }
            0x99 => {
                let negative = self.reg_n(0, os) & sign_n(os) != 0;
                self.set_reg_n(DX as u8, if negative { u32::MAX } else { 0 }, os);
            }
            0x9A => {
                let ip = self.fetch_n(bus, os);
                let cs = self.fetch16(bus);
                return self.call_far_n(bus, cs, ip, os).map(Some);
            }
            0x9C => self.push_all(bus, &[u32::from(self.flags & (WRITABLE | RESERVED_ONE))], os)?,
            0x9D => {
                // POPFD: the high half of EFLAGS (VM, RF) is not set in real
                // mode; the low half follows the 80286's rules.
                let v = self.pop_n(bus, os)?;
                return Ok(Some(Self::stop_if(self.load_flags(v as u16))));
            }
            0xA0..=0xA3 => {
                let off = if p.a32 { self.fetch32(bus) } else { u32::from(self.fetch16(bus)) };
                let seg = p.seg(DS);
                if op & 2 == 0 {
                    let v = self.rd(bus, seg, off, n)?;
                    self.set_reg_n(0, v, n);
                } else {
                    self.wr(bus, seg, off, self.reg_n(0, n), n)?;
                }
            }
            0xA9 => {
                let b = self.fetch_n(bus, os);
                self.alu_n(4, self.reg_n(0, os), b, os);
            }
            0xB8..=0xBF => {
                let v = self.fetch_n(bus, os);
                self.set_reg_n(op & 7, v, os);
            }
            0xC0 | 0xC1 | 0xD0..=0xD3 => {
                let (sub, ea) = self.modrm_w(bus, p);
                let a = self.read_op(bus, ea, n)?;
                let count = match op {
                    0xC0 | 0xC1 => self.fetch8(bus),
                    0xD0 | 0xD1 => 1,
                    _ => self.r16(CX) as u8,
                };
                let r = self.shift(sub, a, count, n);
                self.write_op(bus, ea, r, n)?;
            }
            0xC2 | 0xC3 => {
                let extra = if op == 0xC2 { self.fetch16(bus) } else { 0 };
                let sp = self.r16(SP);
                let ip = self.rd(bus, SS, u32::from(sp), os)?;
                self.ip = Self::near_target(ip, p.o32)?;
                self.set_r16(SP, sp.wrapping_add(os as u16).wrapping_add(extra));
            }
            0xC4 | 0xC5 => {
                let (reg, ea) = self.modrm_w(bus, p);
                let (v, s) = self.far_pointer(bus, ea, os)?;
                self.set_reg_n(reg, v, os);
                self.sregs[if op == 0xC4 { ES } else { DS }] = s;
            }
            0xC6 | 0xC7 => {
                let (reg, ea) = self.modrm_w(bus, p);
                if reg != 0 {
                    return Err(INVALID_OPCODE);
                }
                let v = self.fetch_n(bus, n);
                self.write_op(bus, ea, v, n)?;
            }
            0xC8 => {
                let size = self.fetch16(bus);
                let level = self.fetch8(bus) & 0x1F;
                self.enter_n(bus, size, level, os)?;
            }
            0xC9 => {
                let bp = self.r16(BP);
                let v = self.rd(bus, SS, u32::from(bp), os)?;
                self.set_reg_n(BP as u8, v, os);
                self.set_r16(SP, bp.wrapping_add(os as u16));
            }
            0xCA | 0xCB => {
                let extra = if op == 0xCA { self.fetch16(bus) } else { 0 };
                let ([ip, cs], sp) = self.peek_all::<B, 2>(bus, os)?;
                let ip = Self::near_target(ip, true)?;
                self.set_r16(SP, sp.wrapping_add(extra));
                self.ip = ip;
                self.sregs[CS] = cs as u16;
                return Ok(Some(Self::stop_if(self.far_arrival(bus))));
            }
            0xCF => {
                let ([ip, cs, f], sp) = self.peek_all::<B, 3>(bus, os)?;
                let ip = Self::near_target(ip, true)?;
                self.set_r16(SP, sp);
                self.ip = ip;
                self.sregs[CS] = cs as u16;
                // IRETD: as POPFD, the high half of EFLAGS is not loaded.
                let if_change = self.load_flags(f as u16);
                return Ok(Some(Self::stop_if(self.far_arrival(bus).or(if_change))));
            }
            0xD7 => {
                let al = self.r16(AX) & 0xFF;
                let off = if p.a32 {
                    self.regs[BX].wrapping_add(u32::from(al))
                } else {
                    u32::from(self.r16(BX).wrapping_add(al))
                };
                let v = self.rd(bus, p.seg(DS), off, 1)?;
                self.set_reg8(0, v as u8);
            }
            0xD8..=0xDF => {
                if let (_, Op::Mem { seg, off }) = self.modrm_w(bus, p) {
                    self.check(seg, off, 2)?;
                }
            }
            0xE0..=0xE3 => {
                // The address size picks CX or ECX, the operand size the
                // width of the new IP.
                let d = self.fetch8(bus) as i8 as u32;
                let counter = if p.a32 { self.regs[CX] } else { u32::from(self.r16(CX)) };
                let (taken, counted) = if op == 0xE3 {
                    (counter == 0, counter)
                } else {
                    let c = counter.wrapping_sub(1);
                    let more = match op {
                        0xE0 => !self.flag(ZF),
                        0xE1 => self.flag(ZF),
                        _ => true,
                    };
                    let c = if p.a32 { c } else { c & 0xFFFF };
                    (c != 0 && more, c)
                };
                self.jump_rel(d, taken, p.o32)?;
                if p.a32 {
                    self.regs[CX] = counted;
                } else {
                    self.set_r16(CX, counted as u16);
                }
            }
            0xE5 | 0xED => {
                let port = if op & 8 == 0 { u16::from(self.fetch8(bus)) } else { self.r16(DX) };
                let Some(v) = self.pending_in.take() else {
                    return Ok(Some(Step::Wait(ExitReason::In { port, size: size_n(os) })));
                };
                self.set_reg_n(0, v, os);
            }
            0xE7 | 0xEF => {
                let port = if op & 8 == 0 { u16::from(self.fetch8(bus)) } else { self.r16(DX) };
                let value = self.reg_n(0, os);
                return Ok(Some(Step::Stop(ExitReason::Out { port, size: size_n(os), value })));
            }
            0xE8 => {
                let d = self.rel_n(bus, os);
                let target = Self::near_target(u32::from(self.ip).wrapping_add(d), p.o32)?;
                self.push_all(bus, &[u32::from(self.ip)], os)?;
                self.ip = target;
            }
            0xE9 | 0xEB => {
                let d = if op == 0xE9 { self.rel_n(bus, os) } else { self.fetch8(bus) as i8 as u32 };
                self.jump_rel(d, true, p.o32)?;
            }
            0xEA => {
                let ip = self.fetch_n(bus, os);
                let cs = self.fetch16(bus);
                self.ip = Self::near_target(ip, true)?;
                self.sregs[CS] = cs;
                return Ok(Some(Self::stop_if(self.far_arrival(bus))));
            }
            0xF6 | 0xF7 => self.group3_n(bus, p, n)?,
            0xFE | 0xFF => return self.group45_n(bus, p, n, os).map(Some),
            _ => return Err(INVALID_OPCODE),
        }
        Ok(Some(Step::Next))
    }

    // ---- operands ----

    fn reg_n(&self, r: u8, n: u32) -> u32 {
        match n {
            1 => u32::from(self.reg8(r)),
            2 => u32::from(self.r16(usize::from(r & 7))),
            _ => self.regs[usize::from(r & 7)],
        }
    }

    fn set_reg_n(&mut self, r: u8, v: u32, n: u32) {
        match n {
            1 => self.set_reg8(r, v as u8),
            2 => self.set_r16(usize::from(r & 7), v as u16),
            _ => self.regs[usize::from(r & 7)] = v,
        }
    }

    /// Whether an `n`-byte operand at `off` fits below the real-mode limit.
    fn check(&self, seg: usize, off: u32, n: u32) -> R<()> {
        if off > 0x1_0000 - n {
            return Err(if seg == SS { STACK_FAULT } else { GENERAL_PROTECTION });
        }
        Ok(())
    }

    fn rd<B: Bus + ?Sized>(&self, bus: &mut B, seg: usize, off: u32, n: u32) -> R<u32> {
        self.check(seg, off, n)?;
        let mut v = 0;
        for i in 0..n {
            v |= u32::from(bus.read8(self.lin(seg, (off + i) as u16))) << (8 * i);
        }
        Ok(v)
    }

    fn wr<B: Bus + ?Sized>(&self, bus: &mut B, seg: usize, off: u32, v: u32, n: u32) -> R<()> {
        self.check(seg, off, n)?;
        for i in 0..n {
            bus.write8(self.lin(seg, (off + i) as u16), (v >> (8 * i)) as u8);
        }
        Ok(())
    }

    fn read_op<B: Bus + ?Sized>(&self, bus: &mut B, o: Op, n: u32) -> R<u32> {
        match o {
            Op::Reg(r) => Ok(self.reg_n(r, n)),
            Op::Mem { seg, off } => self.rd(bus, seg, off, n),
        }
    }

    fn write_op<B: Bus + ?Sized>(&mut self, bus: &mut B, o: Op, v: u32, n: u32) -> R<()> {
        match o {
            Op::Reg(r) => {
                self.set_reg_n(r, v, n);
                Ok(())
            }
            Op::Mem { seg, off } => self.wr(bus, seg, off, v, n),
        }
    }

    /// A far pointer (`n`-byte offset, then a selector word) at a memory
    /// operand, read as one operand.
    fn far_pointer<B: Bus + ?Sized>(&self, bus: &mut B, ea: Op, n: u32) -> R<(u32, u16)> {
        let Op::Mem { seg, off } = ea else { return Err(INVALID_OPCODE) };
        self.check(seg, off, n + 2)?;
        Ok((self.rd(bus, seg, off, n)?, self.rd(bus, seg, off + n, 2)? as u16))
    }

    fn fetch32<B: Bus + ?Sized>(&mut self, bus: &mut B) -> u32 {
        let lo = self.fetch16(bus);
        let hi = self.fetch16(bus);
        u32::from(lo) | u32::from(hi) << 16
    }

    fn fetch_n<B: Bus + ?Sized>(&mut self, bus: &mut B, n: u32) -> u32 {
        match n {
            1 => u32::from(self.fetch8(bus)),
            2 => u32::from(self.fetch16(bus)),
            _ => self.fetch32(bus),
        }
    }

    /// A relative displacement of the operand size, sign-extended.
    fn rel_n<B: Bus + ?Sized>(&mut self, bus: &mut B, n: u32) -> u32 {
        sext(self.fetch_n(bus, n), n) as u32
    }

    /// Decodes a ModRM byte with 16- or 32-bit addressing.
    fn modrm_w<B: Bus + ?Sized>(&mut self, bus: &mut B, p: Prefix) -> (u8, Op) {
        let m = self.fetch8(bus);
        let reg = (m >> 3) & 7;
        if m >= 0xC0 {
            return (reg, Op::Reg(m & 7));
        }
        if !p.a32 {
            return match self.modrm_mem(bus, p, m) {
                Ea::Mem { seg, off } => (reg, Op::Mem { seg, off: u32::from(off) }),
                Ea::Reg(r) => (reg, Op::Reg(r)),
            };
        }
        let (md, rm) = (m >> 6, m & 7);
        // ESP and EBP as a base address the stack segment.
        let base_seg = |b: u8| if b == 4 || b == 5 { SS } else { DS };
        let (base, seg) = if rm == 4 {
            let sib = self.fetch8(bus);
            let (scale, index, b) = (sib >> 6, (sib >> 3) & 7, sib & 7);
            // Index 4 (ESP) means no index.
            let scaled = if index == 4 { 0 } else { self.regs[usize::from(index)] << scale };
            let (base, seg) =
                if b == 5 && md == 0 { (self.fetch32(bus), DS) } else { (self.regs[usize::from(b)], base_seg(b)) };
            (base.wrapping_add(scaled), seg)
        } else if rm == 5 && md == 0 {
            (self.fetch32(bus), DS)
        } else {
            (self.regs[usize::from(rm)], base_seg(rm))
        };
        let disp = match md {
            1 => self.fetch8(bus) as i8 as u32,
            2 => self.fetch32(bus),
            _ => 0,
        };
        (reg, Op::Mem { seg: p.seg(seg), off: base.wrapping_add(disp) })
    }

    // ---- the stack (16-bit SP at any operand size) ----

    /// Pushes `values` in order, `n` bytes each; nothing is written unless
    /// all fit.
    fn push_all<B: Bus + ?Sized>(&mut self, bus: &mut B, values: &[u32], n: u32) -> R<()> {
        let mut sp = self.r16(SP);
        for _ in values {
            sp = sp.wrapping_sub(n as u16);
            self.check(SS, u32::from(sp), n)?;
        }
        let mut sp = self.r16(SP);
        for &v in values {
            sp = sp.wrapping_sub(n as u16);
            self.wr(bus, SS, u32::from(sp), v, n)?;
        }
        self.set_r16(SP, sp);
        Ok(())
    }

    /// Reads the `K` values of `n` bytes a pop would take, and the SP
    /// after them, without changing anything.
    fn peek_all<B: Bus + ?Sized, const K: usize>(&self, bus: &mut B, n: u32) -> R<([u32; K], u16)> {
        let mut sp = self.r16(SP);
        let mut v = [0; K];
        for slot in &mut v {
            *slot = self.rd(bus, SS, u32::from(sp), n)?;
            sp = sp.wrapping_add(n as u16);
        }
        Ok((v, sp))
    }

    /// Pops `K` values of `n` bytes; nothing changes unless all can be read.
    fn pop_all<B: Bus + ?Sized, const K: usize>(&mut self, bus: &mut B, n: u32) -> R<[u32; K]> {
        let (v, sp) = self.peek_all::<B, K>(bus, n)?;
        self.set_r16(SP, sp);
        Ok(v)
    }

    fn pop_n<B: Bus + ?Sized>(&mut self, bus: &mut B, n: u32) -> R<u32> {
        self.pop_all::<B, 1>(bus, n).map(|[v]| v)
    }

    // ---- transfers ----

    /// The new IP for a target offset: with a 16-bit operand size it
    /// wraps, with a 32-bit one an offset above 0xFFFF is outside CS
    /// (#GP).
    fn near_target(target: u32, o32: bool) -> R<u16> {
        let t = if o32 { target } else { target & 0xFFFF };
        u16::try_from(t).map_err(|_| GENERAL_PROTECTION)
    }

    fn jump_rel(&mut self, d: u32, taken: bool, o32: bool) -> R<()> {
        if taken {
            self.ip = Self::near_target(u32::from(self.ip).wrapping_add(d), o32)?;
        }
        Ok(())
    }

    fn call_far_n<B: Bus + ?Sized>(&mut self, bus: &mut B, cs: u16, ip: u32, n: u32) -> R<Step> {
        let ip = Self::near_target(ip, true)?;
        self.push_all(bus, &[u32::from(self.sregs[CS]), u32::from(self.ip)], n)?;
        self.sregs[CS] = cs;
        self.ip = ip;
        Ok(Self::stop_if(self.far_arrival(bus)))
    }

    fn enter_n<B: Bus + ?Sized>(&mut self, bus: &mut B, size: u16, level: u8, n: u32) -> R<()> {
        let saved = (self.regs[SP], self.regs[BP]);
        let result = (|| {
            self.push_all(bus, &[self.reg_n(BP as u8, n)], n)?;
            let frame = self.r16(SP);
            if level > 0 {
                for _ in 1..level {
                    self.set_r16(BP, self.r16(BP).wrapping_sub(n as u16));
                    let v = self.rd(bus, SS, u32::from(self.r16(BP)), n)?;
                    self.push_all(bus, &[v], n)?;
                }
                self.push_all(bus, &[u32::from(frame)], n)?;
            }
            // The stack is 16 bits wide, so only BP takes the frame.
            self.set_r16(BP, frame);
            self.set_r16(SP, self.r16(SP).wrapping_sub(size));
            Ok(())
        })();
        if result.is_err() {
            (self.regs[SP], self.regs[BP]) = saved;
        }
        result
    }

    // ---- arithmetic ----

    /// [`Cpu::alu`] at any width.
    fn alu_n(&mut self, op: u8, a: u32, b: u32, n: u32) -> u32 {
        if n < 4 {
            return self.alu(op, a, b, n == 2);
        }
        let carry_in = u64::from(self.flags & CF);
        let (a64, b64) = (u64::from(a), u64::from(b));
        let (r, of) = match op {
            0 | 2 => {
                let r = a64 + b64 + if op == 2 { carry_in } else { 0 };
                (r, (a64 ^ r) & (b64 ^ r))
            }
            3 | 5 | 7 => {
                let r = a64.wrapping_sub(b64).wrapping_sub(if op == 3 { carry_in } else { 0 });
                (r, (a64 ^ b64) & (a64 ^ r))
            }
            _ => {
                let r = match op {
                    1 => a | b,
                    4 => a & b,
                    _ => a ^ b,
                };
                self.flags = (self.flags & !(CF | OF | AF | SF | ZF | PF)) | szp_n(r, 4);
                return r;
            }
        };
        let cf = (r >> 32) & 1 != 0;
        let of = (of >> 31) & 1 != 0;
        let af = (a64 ^ b64 ^ r) & u64::from(AF) != 0;
        let r = r as u32;
        self.flags = (self.flags & !(CF | OF | AF | SF | ZF | PF)) | szp_n(r, 4);
        self.set_flag(CF, cf);
        self.set_flag(OF, of);
        self.set_flag(AF, af);
        r
    }

    fn inc_dec_n(&mut self, a: u32, dec: bool, n: u32) -> u32 {
        let cf = self.flags & CF;
        let r = self.alu_n(if dec { 5 } else { 0 }, a, 1, n);
        self.flags = (self.flags & !CF) | cf;
        r
    }

    /// CF and OF for a product that does (not) fit its low half; SF, ZF
    /// and PF from the low half, AF cleared.
    fn set_mul_flags_n(&mut self, overflow: bool, low: u32, n: u32) {
        self.set_flag(CF, overflow);
        self.set_flag(OF, overflow);
        self.set_szp_n(low, n);
        self.flags &= !AF;
    }

    /// `IMUL reg, a, b` at `n` bytes (69h, 6Bh, 0F AFh).
    fn imul_to(&mut self, reg: u8, a: u32, b: u32, n: u32) {
        let r = sext(a, n) * sext(b, n);
        let low = r as u32 & mask_n(n);
        self.set_reg_n(reg, low, n);
        self.set_mul_flags_n(r != sext(low, n), low, n);
    }

    /// Group 3 (F6/F7) at `n` bytes: TEST NOT NEG MUL IMUL DIV IDIV. The
    /// wide forms use EDX:EAX.
    fn group3_n<B: Bus + ?Sized>(&mut self, bus: &mut B, p: Prefix, n: u32) -> R<()> {
        let (sub, ea) = self.modrm_w(bus, p);
        let a = self.read_op(bus, ea, n)?;
        let bits = 8 * n;
        let m = u64::from(mask_n(n));
        match sub {
            0 | 1 => {
                let b = self.fetch_n(bus, n);
                self.alu_n(4, a, b, n);
            }
            2 => self.write_op(bus, ea, !a & mask_n(n), n)?,
            3 => {
                let r = self.alu_n(5, 0, a, n);
                self.write_op(bus, ea, r, n)?;
            }
            4 | 5 => {
                let acc = self.reg_n(0, n);
                let (r, overflow) = if sub == 4 {
                    let r = u64::from(acc) * u64::from(a);
                    (r, r >> bits != 0)
                } else {
                    let r = sext(acc, n) * sext(a, n);
                    (r as u64, r != sext(r as u32 & mask_n(n), n))
                };
                self.store_wide_result(r & m, (r >> bits) & m, n);
                self.set_mul_flags_n(overflow, r as u32, n);
            }
            _ => {
                if a == 0 {
                    return Err(DIVIDE_ERROR);
                }
                let dividend = if n == 1 {
                    u64::from(self.r16(AX))
                } else {
                    u64::from(self.reg_n(DX as u8, n)) << bits | u64::from(self.reg_n(0, n))
                };
                let (q, r) = if sub == 6 {
                    let q = dividend / u64::from(a);
                    if q > m {
                        return Err(DIVIDE_ERROR);
                    }
                    (q, dividend % u64::from(a))
                } else {
                    // The dividend is 2n bytes wide, signed.
                    let shift = 64 - 2 * bits;
                    let num = i128::from(((dividend << shift) as i64) >> shift);
                    let d = i128::from(sext(a, n));
                    let q = num / d;
                    let half = 1i128 << (bits - 1);
                    if !(-half..half).contains(&q) {
                        return Err(DIVIDE_ERROR);
                    }
                    (q as u64 & m, (num % d) as u64 & m)
                };
                self.store_wide_result(q, r, n);
            }
        }
        Ok(())
    }

    /// Stores a double-width result: AH:AL for bytes, DX:AX or EDX:EAX.
    fn store_wide_result(&mut self, low: u64, high: u64, n: u32) {
        if n == 1 {
            self.set_r16(AX, u16::from_le_bytes([low as u8, high as u8]));
        } else {
            self.set_reg_n(0, low as u32, n);
            self.set_reg_n(DX as u8, high as u32, n);
        }
    }

    /// Groups 4 and 5 (FE/FF) at `n` bytes: INC DEC CALL CALLF JMP JMPF PUSH.
    fn group45_n<B: Bus + ?Sized>(&mut self, bus: &mut B, p: Prefix, n: u32, os: u32) -> R<Step> {
        let (sub, ea) = self.modrm_w(bus, p);
        match (sub, n != 1) {
            (0 | 1, _) => {
                let a = self.read_op(bus, ea, n)?;
                let r = self.inc_dec_n(a, sub == 1, n);
                self.write_op(bus, ea, r, n)?;
            }
            (2 | 4, true) => {
                let target = Self::near_target(self.read_op(bus, ea, os)?, p.o32)?;
                if sub == 2 {
                    self.push_all(bus, &[u32::from(self.ip)], os)?;
                }
                self.ip = target;
            }
            (3 | 5, true) => {
                let (ip, cs) = self.far_pointer(bus, ea, os)?;
                if sub == 3 {
                    return self.call_far_n(bus, cs, ip, os);
                }
                self.ip = Self::near_target(ip, true)?;
                self.sregs[CS] = cs;
                return Ok(Self::stop_if(self.far_arrival(bus)));
            }
            (6, true) => {
                let v = self.read_op(bus, ea, os)?;
                self.push_all(bus, &[v], os)?;
            }
            _ => return Err(INVALID_OPCODE),
        }
        Ok(Step::Next)
    }

    // ---- 0F forms ----

    /// The 80386's `0F` forms with 66h or 67h.
    fn two_byte_wide<B: Bus + ?Sized>(&mut self, bus: &mut B, p: Prefix) -> R<Step> {
        let op = self.fetch8(bus);
        let os = if p.o32 { 4 } else { 2 };
        match op {
            0x80..=0x8F => {
                let d = self.rel_n(bus, os);
                let taken = self.cond(op & 0xF);
                self.jump_rel(d, taken, p.o32)?;
            }
            0x90..=0x9F => {
                let (_, ea) = self.modrm_w(bus, p);
                let v = u32::from(self.cond(op & 0xF));
                self.write_op(bus, ea, v, 1)?;
            }
            0xA0 | 0xA8 => self.push_all(bus, &[u32::from(self.sregs[if op == 0xA0 { FS } else { GS }])], os)?,
            0xA1 | 0xA9 => {
                let v = self.pop_n(bus, os)?;
                self.sregs[if op == 0xA1 { FS } else { GS }] = v as u16;
            }
            0xA3 | 0xAB | 0xB3 | 0xBB => {
                let (reg, ea) = self.modrm_w(bus, p);
                let bit = self.reg_n(reg, os);
                // A memory operand is a bit string: the signed offset in
                // the register selects the word or dword as well as the bit.
                let ea = match ea {
                    Op::Mem { seg, off } => {
                        let units = sext(bit, os) >> (if os == 4 { 5 } else { 4 });
                        let off = off.wrapping_add((units * i64::from(os)) as u32);
                        Op::Mem { seg, off: if p.a32 { off } else { off & 0xFFFF } }
                    }
                    reg => reg,
                };
                self.bit_test_n(bus, (op >> 3) & 3, ea, bit & (8 * os - 1), os)?;
            }
            0xBA => {
                let (sub, ea) = self.modrm_w(bus, p);
                if sub < 4 {
                    return Err(INVALID_OPCODE);
                }
                let bit = u32::from(self.fetch8(bus)) & (8 * os - 1);
                self.bit_test_n(bus, sub - 4, ea, bit, os)?;
            }
            0xA4 | 0xA5 | 0xAC | 0xAD => {
                let (reg, ea) = self.modrm_w(bus, p);
                let count = if op & 1 == 0 { self.fetch8(bus) } else { self.r16(CX) as u8 } & 0x1F;
                let d = self.read_op(bus, ea, os)?;
                if count != 0 {
                    let s = self.reg_n(reg, os);
                    let r = if os == 2 {
                        self.double_shift(op < 0xA8, d, s, count)
                    } else {
                        self.double_shift32(op < 0xA8, d, s, u32::from(count))
                    };
                    self.write_op(bus, ea, r, os)?;
                }
            }
            0xAF => {
                let (reg, ea) = self.modrm_w(bus, p);
                let a = self.read_op(bus, ea, os)?;
                self.imul_to(reg, a, self.reg_n(reg, os), os);
            }
            0xB2 | 0xB4 | 0xB5 => {
                let (reg, ea) = self.modrm_w(bus, p);
                let (v, s) = self.far_pointer(bus, ea, os)?;
                self.set_reg_n(reg, v, os);
                self.sregs[match op {
                    0xB2 => SS,
                    0xB4 => FS,
                    _ => GS,
                }] = s;
            }
            0xB6 | 0xB7 | 0xBE | 0xBF => {
                let (reg, ea) = self.modrm_w(bus, p);
                let from = if op & 1 != 0 { 2 } else { 1 };
                let v = self.read_op(bus, ea, from)?;
                let v = if op < 0xB8 { v } else { sext(v, from) as u32 };
                self.set_reg_n(reg, v, os);
            }
            0xBC | 0xBD => {
                let (reg, ea) = self.modrm_w(bus, p);
                let v = self.read_op(bus, ea, os)?;
                self.set_flag(ZF, v == 0);
                if v != 0 {
                    let index = if op == 0xBC { v.trailing_zeros() } else { 31 - v.leading_zeros() };
                    self.set_reg_n(reg, index, os);
                }
            }
            _ => return Err(INVALID_OPCODE),
        }
        Ok(Step::Next)
    }

    /// `BT` (0), `BTS` (1), `BTR` (2), `BTC` (3) of bit `bit` of an
    /// `n`-byte operand.
    fn bit_test_n<B: Bus + ?Sized>(&mut self, bus: &mut B, kind: u8, ea: Op, bit: u32, n: u32) -> R<()> {
        let v = self.read_op(bus, ea, n)?;
        let m = 1 << bit;
        self.set_flag(CF, v & m != 0);
        let r = match kind {
            0 => return Ok(()),
            1 => v | m,
            2 => v & !m,
            _ => v ^ m,
        };
        self.write_op(bus, ea, r, n)
    }

    /// `SHLD` (`left`) / `SHRD` of dword `d` by `count` (1-31) with the
    /// bits of `s` shifted in. OF is set when the sign changed.
    fn double_shift32(&mut self, left: bool, d: u32, s: u32, count: u32) -> u32 {
        let (r, cf) = if left {
            ((d << count) | (s >> (32 - count)), (d >> (32 - count)) & 1)
        } else {
            ((d >> count) | (s << (32 - count)), (d >> (count - 1)) & 1)
        };
        self.set_flag(CF, cf != 0);
        self.set_flag(OF, (r ^ d) & 0x8000_0000 != 0);
        self.flags &= !AF;
        self.set_szp_n(r, 4);
        r
    }

    // ---- strings ----

    /// SI, DI or CX at the address size.
    fn index(&self, i: usize, a32: bool) -> u32 {
        if a32 { self.regs[i] } else { u32::from(self.r16(i)) }
    }

    fn set_index(&mut self, i: usize, v: u32, a32: bool) {
        if a32 {
            self.regs[i] = v;
        } else {
            self.set_r16(i, v as u16);
        }
    }

    /// String instructions with ESI/EDI/ECX (67h) and dword elements
    /// (66h), one element per step, as [`Cpu::string`]. An element that
    /// faults leaves SI, DI and CX as they were before it, so the
    /// instruction restarts there (the 80386's rule; the 80286 advances
    /// them).
    fn string_wide<B: Bus + ?Sized>(&mut self, bus: &mut B, op: u8, p: Prefix, start: u16) -> R<Step> {
        let saved = (self.regs[CX], self.regs[SI], self.regs[DI]);
        let result = self.string_element(bus, op, p, start);
        if result.is_err() {
            (self.regs[CX], self.regs[SI], self.regs[DI]) = saved;
        }
        result
    }

    fn string_element<B: Bus + ?Sized>(&mut self, bus: &mut B, op: u8, p: Prefix, start: u16) -> R<Step> {
        let n = if op & 1 == 0 {
            1
        } else if p.o32 {
            4
        } else {
            2
        };
        let a32 = p.a32;
        if p.rep != 0 && self.index(CX, a32) == 0 {
            return Ok(Step::Next);
        }
        let port = self.r16(DX);
        if self.string_io && matches!(op, 0x6C..=0x6F) {
            return Ok(Step::Wait(self.string_io_exit(op, p, size_n(n))));
        }
        let pending = match op {
            0x6C | 0x6D => match self.pending_in.take() {
                Some(v) => v,
                None => return Ok(Step::Wait(ExitReason::In { port, size: size_n(n) })),
            },
            _ => 0,
        };
        if p.rep != 0 {
            self.set_index(CX, self.index(CX, a32).wrapping_sub(1), a32);
        }
        let src = p.seg(DS);
        let mut exit = None;
        let mut compares = false;
        match op {
            0x6C | 0x6D => self.string_write_n(bus, pending, n, a32)?,
            0x6E | 0x6F => {
                let value = self.string_read_n(bus, src, SI, n, a32)?;
                exit = Some(ExitReason::Out { port, size: size_n(n), value });
            }
            0xA4 | 0xA5 => {
                let v = self.string_read_n(bus, src, SI, n, a32)?;
                self.string_write_n(bus, v, n, a32)?;
            }
            0xA6 | 0xA7 => {
                let a = self.string_read_n(bus, src, SI, n, a32)?;
                let b = self.string_read_n(bus, ES, DI, n, a32)?;
                self.alu_n(7, a, b, n);
                compares = true;
            }
            0xAA | 0xAB => self.string_write_n(bus, self.reg_n(0, n), n, a32)?,
            0xAC | 0xAD => {
                let v = self.string_read_n(bus, src, SI, n, a32)?;
                self.set_reg_n(0, v, n);
            }
            _ => {
                let b = self.string_read_n(bus, ES, DI, n, a32)?;
                self.alu_n(7, self.reg_n(0, n), b, n);
                compares = true;
            }
        }
        if p.rep != 0 {
            let done = self.index(CX, a32) == 0 || (compares && self.flag(ZF) != (p.rep == 0xF3));
            if !done {
                self.ip = start;
            }
        }
        Ok(Self::stop_if(exit))
    }

    /// Advances index register `i` past one `n`-byte element and returns
    /// its old value.
    fn advance(&mut self, i: usize, n: u32, a32: bool) -> u32 {
        let off = self.index(i, a32);
        let step = if self.flag(DF) { 0u32.wrapping_sub(n) } else { n };
        self.set_index(i, off.wrapping_add(step), a32);
        off
    }

    fn string_read_n<B: Bus + ?Sized>(&mut self, bus: &mut B, seg: usize, i: usize, n: u32, a32: bool) -> R<u32> {
        let off = self.advance(i, n, a32);
        self.rd(bus, seg, off, n)
    }

    fn string_write_n<B: Bus + ?Sized>(&mut self, bus: &mut B, v: u32, n: u32, a32: bool) -> R<()> {
        let off = self.advance(DI, n, a32);
        self.wr(bus, ES, off, v, n)
    }
}
