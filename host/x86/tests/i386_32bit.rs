//! The 80386 model's operand-size (66h) and address-size (67h) prefixes in
//! real mode.
//!
//! Each case is an instruction assembled once (NASM, `bits 16`; the source
//! is the comment beside the bytes) and the registers, flags and memory
//! the Intel 80386 manual's definition of it gives. A case checks every
//! general and segment register: those it does not name must keep their
//! values. A fault must leave IP at the first prefix and FLAGS unchanged.

use vmm_x86::flags::{AF, CF, DF, IF, OF, PF, RESERVED_ONE, SF, ZF};
use vmm_x86::{
    AX, BP, BX, CS, CX, Cpu, DI, DS, DX, Delivery, ES, ExitReason, FS, Memory, Model, SI, SP, SS, Size, vector,
};

/// A register a case sets or checks.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Loc {
    /// A general register, all 32 bits.
    R(usize),
    /// A segment register.
    S(usize),
    /// The instruction pointer.
    Ip,
}
use Loc::{Ip, R, S};

/// The six arithmetic flags.
const ARITH: u16 = CF | PF | AF | ZF | SF | OF;

struct Case {
    name: &'static str,
    /// The offset in CS (1000h) the code starts at.
    at: u16,
    /// The code; a HLT follows it.
    code: &'static [u8],
    set: &'static [(Loc, u32)],
    /// FLAGS before (RESERVED_ONE is added).
    flags: u16,
    /// Memory before: physical address and bytes.
    mem: &'static [(u32, &'static [u8])],
    want: &'static [(Loc, u32)],
    /// (mask, value) of FLAGS after.
    want_flags: (u16, u16),
    want_mem: &'static [(u32, &'static [u8])],
    exit: ExitReason,
}

const BASE: Case = Case {
    name: "",
    at: 0,
    code: &[],
    set: &[],
    flags: 0,
    mem: &[],
    want: &[],
    want_flags: (0, 0),
    want_mem: &[],
    exit: ExitReason::Halt,
};

const fn fault(vector: u8) -> ExitReason {
    ExitReason::Fault { vector }
}
const GP: ExitReason = fault(vector::GENERAL_PROTECTION);
const SS_FAULT: ExitReason = fault(vector::STACK_FAULT);
const DE: ExitReason = fault(vector::DIVIDE_ERROR);

/// CS = 1000h, DS = 3000h, SS = 2000h, ES = 4000h, SP = FFFEh.
fn machine(at: u16, code: &[u8]) -> (Cpu, Memory) {
    let mut mem = Memory::new(0x11_0000);
    let mut code = code.to_vec();
    code.push(0xF4);
    mem.load(0x1_0000 + u32::from(at), &code);
    let mut cpu = Cpu::new();
    cpu.model = Model::I80386;
    cpu.sregs[CS] = 0x1000;
    cpu.sregs[DS] = 0x3000;
    cpu.sregs[SS] = 0x2000;
    cpu.sregs[ES] = 0x4000;
    cpu.regs[SP] = 0xFFFE;
    cpu.ip = at;
    (cpu, mem)
}

fn get(cpu: &Cpu, loc: Loc) -> u32 {
    match loc {
        R(i) => cpu.regs[i],
        S(i) => u32::from(cpu.sregs[i]),
        Ip => u32::from(cpu.ip),
    }
}

fn run(c: &Case) {
    let (mut cpu, mut mem) = machine(c.at, c.code);
    cpu.flags = RESERVED_ONE | c.flags;
    for &(loc, v) in c.set {
        match loc {
            R(i) => cpu.regs[i] = v,
            S(i) => cpu.sregs[i] = v as u16,
            Ip => cpu.ip = v as u16,
        }
    }
    for &(addr, bytes) in c.mem {
        mem.load(addr, bytes);
    }
    let before = cpu.clone();
    let exit = cpu.run(&mut mem, 1_000_000);
    let name = c.name;
    assert_eq!(exit.reason, c.exit, "{name}: {cpu:X?}");
    for &(loc, v) in c.want {
        assert_eq!(get(&cpu, loc), v, "{name}: {loc:?} = {:X}, want {v:X}", get(&cpu, loc));
    }
    let named = |loc| c.want.iter().any(|&(l, _)| l == loc);
    for i in 0..8 {
        if !named(R(i)) {
            assert_eq!(cpu.regs[i], before.regs[i], "{name}: register {i} changed");
        }
    }
    for i in 0..6 {
        if !named(S(i)) {
            assert_eq!(cpu.sregs[i], before.sregs[i], "{name}: segment register {i} changed");
        }
    }
    let (mask, value) = c.want_flags;
    assert_eq!(cpu.flags & mask, value, "{name}: flags {:04X}", cpu.flags);
    if let ExitReason::Fault { .. } = c.exit {
        if !named(Ip) {
            assert_eq!(cpu.ip, before.ip, "{name}: IP of a fault");
        }
        assert_eq!(cpu.flags, before.flags, "{name}: flags of a fault");
    }
    for &(addr, bytes) in c.want_mem {
        assert_eq!(&mem.bytes()[addr as usize..addr as usize + bytes.len()], bytes, "{name}: memory at {addr:X}");
    }
}

fn run_all(cases: &[Case]) {
    for c in cases {
        run(c);
    }
}

#[test]
fn alu_at_32_bits() {
    run_all(&[
        Case {
            name: "add eax,ebx: signed overflow",
            code: &[0x66, 0x01, 0xD8], // add eax,ebx
            set: &[(R(AX), 0x7FFF_FFFF), (R(BX), 1)],
            want: &[(R(AX), 0x8000_0000)],
            want_flags: (ARITH, OF | SF | AF | PF),
            ..BASE
        },
        Case {
            name: "add eax,ebx: carry out of bit 31",
            code: &[0x66, 0x01, 0xD8], // add eax,ebx
            set: &[(R(AX), 0xFFFF_FFFF), (R(BX), 1)],
            want: &[(R(AX), 0)],
            want_flags: (ARITH, CF | ZF | AF | PF),
            ..BASE
        },
        Case {
            name: "sub eax,ebx: signed overflow",
            code: &[0x66, 0x29, 0xD8], // sub eax,ebx
            set: &[(R(AX), 0x8000_0000), (R(BX), 1)],
            want: &[(R(AX), 0x7FFF_FFFF)],
            want_flags: (ARITH, OF | AF | PF),
            ..BASE
        },
        Case {
            name: "sub eax,ebx: borrow",
            code: &[0x66, 0x29, 0xD8], // sub eax,ebx
            set: &[(R(AX), 0), (R(BX), 1)],
            want: &[(R(AX), 0xFFFF_FFFF)],
            want_flags: (ARITH, CF | SF | AF | PF),
            ..BASE
        },
        Case {
            name: "adc eax,1 with CF",
            code: &[0x66, 0x83, 0xD0, 0x01], // adc eax,1
            set: &[(R(AX), 0xFFFF_FFFE)],
            flags: CF,
            want: &[(R(AX), 0)],
            want_flags: (ARITH, CF | ZF | AF | PF),
            ..BASE
        },
        Case {
            name: "sbb eax,imm32 with CF",
            code: &[0x66, 0x1D, 0x01, 0x00, 0x00, 0x00], // sbb eax,strict dword 1
            set: &[(R(AX), 0)],
            flags: CF,
            want: &[(R(AX), 0xFFFF_FFFE)],
            want_flags: (ARITH, CF | SF | AF),
            ..BASE
        },
        Case {
            name: "cmp eax,-1 (sign-extended imm8)",
            code: &[0x66, 0x83, 0xF8, 0xFF], // cmp eax,-1
            set: &[(R(AX), 0xFFFF_FFFF)],
            want_flags: (ARITH, ZF | PF),
            ..BASE
        },
        Case {
            name: "xor eax,eax clears CF OF AF",
            code: &[0x66, 0x31, 0xC0], // xor eax,eax
            set: &[(R(AX), 0x8000_0005)],
            flags: CF | OF | AF | SF,
            want: &[(R(AX), 0)],
            want_flags: (ARITH, ZF | PF),
            ..BASE
        },
        Case {
            name: "and eax,imm32",
            code: &[0x66, 0x25, 0x00, 0x00, 0xFF, 0xFF], // and eax,0xFFFF0000
            set: &[(R(AX), 0x8000_1234)],
            want: &[(R(AX), 0x8000_0000)],
            want_flags: (ARITH, SF | PF),
            ..BASE
        },
        Case {
            name: "add [bx+si],ecx",
            code: &[0x66, 0x01, 0x08], // add [bx+si],ecx
            set: &[(R(BX), 0x10), (R(SI), 4), (R(CX), 0x8000_0000)],
            mem: &[(0x3_0014, &[0x00, 0x00, 0x00, 0x80])],
            want_flags: (ARITH, CF | ZF | OF | PF),
            want_mem: &[(0x3_0014, &[0, 0, 0, 0])],
            ..BASE
        },
        Case {
            name: "add dword [bx],imm32",
            code: &[0x66, 0x81, 0x07, 0x78, 0x56, 0x34, 0x12], // add dword [bx],0x12345678
            set: &[(R(BX), 0x10)],
            mem: &[(0x3_0010, &[0x11, 0x11, 0x11, 0x11])],
            want_mem: &[(0x3_0010, &[0x89, 0x67, 0x45, 0x23])],
            want_flags: (ARITH, 0),
            ..BASE
        },
        Case {
            name: "inc eax keeps CF",
            code: &[0x66, 0x40], // inc eax
            set: &[(R(AX), 0x7FFF_FFFF)],
            flags: CF,
            want: &[(R(AX), 0x8000_0000)],
            want_flags: (ARITH, CF | OF | SF | AF | PF),
            ..BASE
        },
        Case {
            name: "dec ecx keeps CF",
            code: &[0x66, 0x49], // dec ecx
            set: &[(R(CX), 0)],
            want: &[(R(CX), 0xFFFF_FFFF)],
            want_flags: (ARITH, SF | AF | PF),
            ..BASE
        },
        Case {
            name: "neg eax of the most negative number",
            code: &[0x66, 0xF7, 0xD8], // neg eax
            set: &[(R(AX), 0x8000_0000)],
            want: &[(R(AX), 0x8000_0000)],
            want_flags: (ARITH, CF | OF | SF | PF),
            ..BASE
        },
        Case {
            name: "not ebx leaves the flags",
            code: &[0x66, 0xF7, 0xD3], // not ebx
            set: &[(R(BX), 0x0F0F_0F0F)],
            flags: CF | ZF,
            want: &[(R(BX), 0xF0F0_F0F0)],
            want_flags: (ARITH, CF | ZF),
            ..BASE
        },
        Case {
            name: "test eax,imm32",
            code: &[0x66, 0xA9, 0x00, 0x00, 0x00, 0x80], // test eax,0x80000000
            set: &[(R(AX), 0x8000_0000)],
            flags: CF | OF,
            want_flags: (ARITH, SF | PF),
            ..BASE
        },
    ]);
}

#[test]
fn moves_and_conversions_at_32_bits() {
    run_all(&[
        Case {
            name: "mov eax,imm32",
            code: &[0x66, 0xB8, 0x78, 0x56, 0x34, 0x12], // mov eax,0x12345678
            want: &[(R(AX), 0x1234_5678)],
            ..BASE
        },
        Case {
            name: "mov [moffs16],eax",
            code: &[0x66, 0xA3, 0x10, 0x00], // mov [0x10],eax
            set: &[(R(AX), 0x1234_5678)],
            want_mem: &[(0x3_0010, &[0x78, 0x56, 0x34, 0x12])],
            ..BASE
        },
        Case {
            name: "mov ebx,[bx]",
            code: &[0x66, 0x8B, 0x1F], // mov ebx,[bx]
            set: &[(R(BX), 0x20)],
            mem: &[(0x3_0020, &[0xEF, 0xBE, 0xAD, 0xDE])],
            want: &[(R(BX), 0xDEAD_BEEF)],
            ..BASE
        },
        Case {
            name: "xchg eax,edx",
            code: &[0x66, 0x92], // xchg eax,edx
            set: &[(R(AX), 1), (R(DX), 0xFFFF_FFFF)],
            want: &[(R(AX), 0xFFFF_FFFF), (R(DX), 1)],
            ..BASE
        },
        Case {
            name: "cwde",
            code: &[0x66, 0x98], // cwde
            set: &[(R(AX), 0x1234_8000)],
            want: &[(R(AX), 0xFFFF_8000)],
            ..BASE
        },
        Case {
            name: "cdq of a negative EAX",
            code: &[0x66, 0x99], // cdq
            set: &[(R(AX), 0x8000_0000), (R(DX), 0x1234)],
            want: &[(R(DX), 0xFFFF_FFFF)],
            ..BASE
        },
        Case {
            name: "cdq of a positive EAX",
            code: &[0x66, 0x99], // cdq
            set: &[(R(AX), 0x7FFF_FFFF), (R(DX), 0xFFFF_FFFF)],
            want: &[(R(DX), 0)],
            ..BASE
        },
        Case {
            name: "movzx eax,bl and movsx eax,bx",
            code: &[0x66, 0x0F, 0xB6, 0xC3, 0x66, 0x0F, 0xBF, 0xCB], // movzx eax,bl; movsx ecx,bx
            set: &[(R(AX), 0xFFFF_FFFF), (R(BX), 0x8080)],
            want: &[(R(AX), 0x80), (R(CX), 0xFFFF_8080)],
            ..BASE
        },
        Case {
            name: "movzx ecx,word [si] and movsx edx,byte [si]",
            code: &[0x66, 0x0F, 0xB7, 0x0C, 0x66, 0x0F, 0xBE, 0x14], // movzx ecx,word [si]; movsx edx,byte [si]
            set: &[(R(SI), 0x10), (R(CX), 0xAAAA_AAAA)],
            mem: &[(0x3_0010, &[0xFF, 0xFF])],
            want: &[(R(CX), 0xFFFF), (R(DX), 0xFFFF_FFFF)],
            ..BASE
        },
        Case {
            name: "lea eax,[ebx+ecx*4+10h]",
            code: &[0x66, 0x67, 0x8D, 0x44, 0x8B, 0x10], // lea eax,[ebx+ecx*4+0x10]
            set: &[(R(BX), 0x100), (R(CX), 3)],
            want: &[(R(AX), 0x11C)],
            ..BASE
        },
        Case {
            name: "lea ax,[ebx+ecx*4+10h] keeps the low half of the address",
            code: &[0x67, 0x8D, 0x44, 0x8B, 0x10], // lea ax,[ebx+ecx*4+0x10]
            set: &[(R(AX), 0xFFFF_0000), (R(BX), 0x1234_5678), (R(CX), 0)],
            want: &[(R(AX), 0xFFFF_5688)],
            ..BASE
        },
        Case {
            name: "lea eax,[bx+si] wraps at 16 bits",
            code: &[0x66, 0x8D, 0x00], // lea eax,[bx+si]
            set: &[(R(AX), 0xFFFF_FFFF), (R(BX), 0xFFFF), (R(SI), 2)],
            want: &[(R(AX), 1)],
            ..BASE
        },
        Case {
            name: "mov eax,ds zero-extends",
            code: &[0x66, 0x8C, 0xD8], // mov eax,ds
            set: &[(R(AX), 0xFFFF_FFFF)],
            want: &[(R(AX), 0x3000)],
            ..BASE
        },
        Case {
            name: "mov [bx],ds with 66h writes a word",
            code: &[0x66, 0x8C, 0x1F], // o32 mov [bx],ds
            set: &[(R(BX), 0x10)],
            mem: &[(0x3_0010, &[0xAA; 4])],
            want_mem: &[(0x3_0010, &[0x00, 0x30, 0xAA, 0xAA])],
            ..BASE
        },
        Case {
            name: "mov ds,[ebx]",
            code: &[0x67, 0x8E, 0x1B], // mov ds,[ebx]
            set: &[(R(BX), 0x10)],
            mem: &[(0x3_0010, &[0x34, 0x12])],
            want: &[(S(DS), 0x1234)],
            ..BASE
        },
    ]);
}

#[test]
fn the_stack_at_32_bits() {
    run_all(&[
        Case {
            name: "push eax",
            code: &[0x66, 0x50], // push eax
            set: &[(R(AX), 0x1234_5678)],
            want: &[(R(SP), 0xFFFA)],
            want_mem: &[(0x2_FFFA, &[0x78, 0x56, 0x34, 0x12])],
            ..BASE
        },
        Case {
            name: "push dword imm32 and imm8",
            code: &[0x66, 0x68, 0x78, 0x56, 0x34, 0x12, 0x66, 0x6A, 0xFF], // push dword 0x12345678; push dword -1
            want: &[(R(SP), 0xFFF6)],
            want_mem: &[(0x2_FFF6, &[0xFF, 0xFF, 0xFF, 0xFF, 0x78, 0x56, 0x34, 0x12])],
            ..BASE
        },
        Case {
            name: "pop ebx",
            code: &[0x66, 0x5B], // pop ebx
            set: &[(R(SP), 0x100)],
            mem: &[(0x2_0100, &[0xEF, 0xBE, 0xAD, 0xDE])],
            want: &[(R(BX), 0xDEAD_BEEF), (R(SP), 0x104)],
            ..BASE
        },
        Case {
            name: "push es pushes a dword",
            code: &[0x66, 0x06], // o32 push es
            mem: &[(0x2_FFFA, &[0xAA; 4])],
            want: &[(R(SP), 0xFFFA)],
            want_mem: &[(0x2_FFFA, &[0x00, 0x40, 0x00, 0x00])],
            ..BASE
        },
        Case {
            name: "pushad",
            code: &[0x66, 0x60], // pushad
            set: &[
                (R(AX), 0xA0A0_A0A0),
                (R(CX), 0xC1C1_C1C1),
                (R(DX), 0xD2D2_D2D2),
                (R(BX), 0xB3B3_B3B3),
                (R(SP), 0x1234_0100),
                (R(BP), 0xB5B5_B5B5),
                (R(SI), 0x5151_5151),
                (R(DI), 0xD7D7_D7D7),
            ],
            want: &[(R(SP), 0x1234_00E0)],
            want_mem: &[(
                0x2_00E0,
                &[
                    0xD7, 0xD7, 0xD7, 0xD7, 0x51, 0x51, 0x51, 0x51, 0xB5, 0xB5, 0xB5, 0xB5, 0x00, 0x01, 0x34, 0x12,
                    0xB3, 0xB3, 0xB3, 0xB3, 0xD2, 0xD2, 0xD2, 0xD2, 0xC1, 0xC1, 0xC1, 0xC1, 0xA0, 0xA0, 0xA0, 0xA0,
                ],
            )],
            ..BASE
        },
        Case {
            name: "popad skips ESP",
            code: &[0x66, 0x61], // popad
            set: &[(R(SP), 0x00E0)],
            mem: &[(
                0x2_00E0,
                &[
                    7, 0, 0, 0x70, 6, 0, 0, 0x60, 5, 0, 0, 0x50, 4, 0, 0, 0x40, 3, 0, 0, 0x30, 2, 0, 0, 0x20, 1, 0, 0,
                    0x10, 0, 0, 0, 0x80,
                ],
            )],
            want: &[
                (R(DI), 0x7000_0007),
                (R(SI), 0x6000_0006),
                (R(BP), 0x5000_0005),
                (R(SP), 0x0100),
                (R(BX), 0x3000_0003),
                (R(DX), 0x2000_0002),
                (R(CX), 0x1000_0001),
                (R(AX), 0x8000_0000),
            ],
            ..BASE
        },
        Case {
            // The high half (VM, RF) is not set in real mode; IOPL, NT and
            // bit 15 stay clear as on the 80286.
            name: "popfd then pushfd",
            code: &[0x66, 0x68, 0xD5, 0xF0, 0xFF, 0xFF, 0x66, 0x9D, 0x66, 0x9C, 0x66, 0x5B], // push dword 0xFFFFF0D5; popfd; pushfd; pop ebx
            want: &[(R(BX), 0x0000_00D7)],
            want_flags: (0xFFFF, RESERVED_ONE | CF | PF | AF | ZF | SF),
            ..BASE
        },
        Case {
            name: "enter 4,0 with a 32-bit operand size",
            code: &[0x66, 0xC8, 0x04, 0x00, 0x00], // o32 enter 4,0
            set: &[(R(BP), 0x1111_2222)],
            want: &[(R(BP), 0x1111_FFFA), (R(SP), 0xFFF6)],
            want_mem: &[(0x2_FFFA, &[0x22, 0x22, 0x11, 0x11])],
            ..BASE
        },
        Case {
            name: "enter 8,2 with a 32-bit operand size: a nested frame of dwords",
            code: &[0x66, 0xC8, 0x08, 0x00, 0x02], // o32 enter 8,2
            set: &[(R(SP), 0x0100), (R(BP), 0xAAAA_0200)],
            mem: &[(0x2_01FC, &[0x11, 0x11, 0x11, 0x11])],
            want: &[(R(BP), 0xAAAA_00FC), (R(SP), 0x00EC)],
            want_mem: &[(0x2_00F4, &[0xFC, 0, 0, 0, 0x11, 0x11, 0x11, 0x11, 0x00, 0x02, 0xAA, 0xAA])],
            ..BASE
        },
        Case {
            name: "leave with a 32-bit operand size",
            code: &[0x66, 0xC9], // o32 leave
            set: &[(R(BP), 0xAAAA_FFFA), (R(SP), 0xFFF0)],
            mem: &[(0x2_FFFA, &[0x22, 0x22, 0x11, 0x11])],
            want: &[(R(BP), 0x1111_2222), (R(SP), 0xFFFE)],
            ..BASE
        },
        Case {
            name: "push eax across the top of the stack segment: #SS",
            code: &[0x66, 0x50], // push eax
            set: &[(R(SP), 2)],
            exit: SS_FAULT,
            ..BASE
        },
        Case {
            name: "pushad with too little stack writes nothing",
            code: &[0x66, 0x60], // pushad
            set: &[(R(SP), 0x12)],
            exit: SS_FAULT,
            want_mem: &[(0x2_0000, &[0; 0x12]), (0x2_FFF0, &[0; 0x10])],
            ..BASE
        },
    ]);
}

#[test]
fn multiply_and_divide_at_32_bits() {
    run_all(&[
        Case {
            name: "mul ebx into EDX",
            code: &[0x66, 0xF7, 0xE3], // mul ebx
            set: &[(R(AX), 0x8000_0000), (R(BX), 4)],
            want: &[(R(AX), 0), (R(DX), 2)],
            want_flags: (CF | OF, CF | OF),
            ..BASE
        },
        Case {
            name: "mul ebx within EAX",
            code: &[0x66, 0xF7, 0xE3], // mul ebx
            set: &[(R(AX), 3), (R(BX), 5), (R(DX), 0xFFFF)],
            flags: CF | OF,
            want: &[(R(AX), 15), (R(DX), 0)],
            want_flags: (CF | OF, 0),
            ..BASE
        },
        Case {
            name: "mul dword [bx]",
            code: &[0x66, 0xF7, 0x27], // mul dword [bx]
            set: &[(R(AX), 0xFFFF_FFFF), (R(BX), 0x10)],
            mem: &[(0x3_0010, &[0xFF, 0xFF, 0xFF, 0xFF])],
            want: &[(R(AX), 1), (R(DX), 0xFFFF_FFFE)],
            want_flags: (CF | OF, CF | OF),
            ..BASE
        },
        Case {
            name: "imul ebx, a negative product that fits",
            code: &[0x66, 0xF7, 0xEB], // imul ebx
            set: &[(R(AX), 0xFFFF_FFFE), (R(BX), 3)],
            flags: CF | OF,
            want: &[(R(AX), 0xFFFF_FFFA), (R(DX), 0xFFFF_FFFF)],
            want_flags: (CF | OF, 0),
            ..BASE
        },
        Case {
            name: "imul ebx, 2^31 does not fit",
            code: &[0x66, 0xF7, 0xEB], // imul ebx
            set: &[(R(AX), 0x4000_0000), (R(BX), 2)],
            want: &[(R(AX), 0x8000_0000), (R(DX), 0)],
            want_flags: (CF | OF, CF | OF),
            ..BASE
        },
        Case {
            name: "imul eax,ebx overflows",
            code: &[0x66, 0x0F, 0xAF, 0xC3], // imul eax,ebx
            set: &[(R(AX), 0x1_0000), (R(BX), 0x1_0000)],
            want: &[(R(AX), 0)],
            want_flags: (CF | OF, CF | OF),
            ..BASE
        },
        Case {
            name: "imul ecx,ebx,imm8",
            code: &[0x66, 0x6B, 0xCB, 0xF6], // imul ecx,ebx,-10
            set: &[(R(BX), 5)],
            flags: CF | OF,
            want: &[(R(CX), 0xFFFF_FFCE)],
            want_flags: (CF | OF, 0),
            ..BASE
        },
        Case {
            name: "imul ecx,ebx,imm32",
            code: &[0x66, 0x69, 0xCB, 0x00, 0x00, 0x01, 0x00], // imul ecx,ebx,0x10000
            set: &[(R(BX), 0x1_0000)],
            want: &[(R(CX), 0)],
            want_flags: (CF | OF, CF | OF),
            ..BASE
        },
        Case {
            name: "div ebx of EDX:EAX",
            code: &[0x66, 0xF7, 0xF3], // div ebx
            set: &[(R(DX), 1), (R(AX), 5), (R(BX), 2)],
            want: &[(R(AX), 0x8000_0002), (R(DX), 1)],
            ..BASE
        },
        Case {
            name: "div ebx: quotient too large",
            code: &[0x66, 0xF7, 0xF3], // div ebx
            set: &[(R(DX), 2), (R(AX), 0), (R(BX), 2)],
            exit: DE,
            ..BASE
        },
        Case {
            name: "div ebx by zero",
            code: &[0x66, 0xF7, 0xF3], // div ebx
            set: &[(R(AX), 5), (R(BX), 0)],
            exit: DE,
            ..BASE
        },
        Case {
            name: "idiv ebx rounds toward zero",
            code: &[0x66, 0xF7, 0xFB], // idiv ebx
            set: &[(R(DX), 0xFFFF_FFFF), (R(AX), 0xFFFF_FFF9), (R(BX), 2)],
            want: &[(R(AX), 0xFFFF_FFFD), (R(DX), 0xFFFF_FFFF)],
            ..BASE
        },
        Case {
            name: "idiv ebx: quotient -2^31 fits",
            code: &[0x66, 0xF7, 0xFB], // idiv ebx
            set: &[(R(DX), 0), (R(AX), 0x8000_0000), (R(BX), 0xFFFF_FFFF)],
            want: &[(R(AX), 0x8000_0000), (R(DX), 0)],
            ..BASE
        },
        Case {
            name: "idiv ebx: quotient 2^31 does not",
            code: &[0x66, 0xF7, 0xFB], // idiv ebx
            set: &[(R(DX), 0), (R(AX), 0x8000_0000), (R(BX), 1)],
            exit: DE,
            ..BASE
        },
        Case {
            name: "idiv ebx: -2^63 / -1",
            code: &[0x66, 0xF7, 0xFB], // idiv ebx
            set: &[(R(DX), 0x8000_0000), (R(AX), 0), (R(BX), 0xFFFF_FFFF)],
            exit: DE,
            ..BASE
        },
    ]);
}

#[test]
fn shifts_and_rotates_at_32_bits() {
    run_all(&[
        Case {
            name: "shl eax,1",
            code: &[0x66, 0xD1, 0xE0], // shl eax,1
            set: &[(R(AX), 0x8000_0001)],
            want: &[(R(AX), 2)],
            want_flags: (CF | OF | ZF | SF | PF, CF | OF),
            ..BASE
        },
        Case {
            name: "shr eax,cl masks the count to 5 bits",
            code: &[0x66, 0xD3, 0xE8], // shr eax,cl
            set: &[(R(AX), 3), (R(CX), 33)],
            want: &[(R(AX), 1)],
            want_flags: (CF, CF),
            ..BASE
        },
        Case {
            name: "sar eax,4",
            code: &[0x66, 0xC1, 0xF8, 0x04], // sar eax,4
            set: &[(R(AX), 0x8000_0000)],
            flags: CF,
            want: &[(R(AX), 0xF800_0000)],
            want_flags: (CF | SF | ZF, SF),
            ..BASE
        },
        Case {
            name: "rol eax,8",
            code: &[0x66, 0xC1, 0xC0, 0x08], // rol eax,8
            set: &[(R(AX), 0x1234_5678)],
            flags: CF,
            want: &[(R(AX), 0x3456_7812)],
            want_flags: (CF, 0),
            ..BASE
        },
        Case {
            name: "rcr eax,1",
            code: &[0x66, 0xD1, 0xD8], // rcr eax,1
            set: &[(R(AX), 2)],
            flags: CF,
            want: &[(R(AX), 0x8000_0001)],
            want_flags: (CF | OF, OF),
            ..BASE
        },
        Case {
            name: "shl dword [bx],4",
            code: &[0x66, 0xC1, 0x27, 0x04], // shl dword [bx],4
            set: &[(R(BX), 0x10)],
            mem: &[(0x3_0010, &[0x78, 0x56, 0x34, 0x12])],
            want_mem: &[(0x3_0010, &[0x80, 0x67, 0x45, 0x23])],
            want_flags: (CF, CF),
            ..BASE
        },
        Case {
            name: "shld eax,ebx,4",
            code: &[0x66, 0x0F, 0xA4, 0xD8, 0x04], // shld eax,ebx,4
            set: &[(R(AX), 0x1234_5678), (R(BX), 0x9ABC_DEF0)],
            want: &[(R(AX), 0x2345_6789)],
            want_flags: (CF | OF | ZF | SF | PF, CF),
            ..BASE
        },
        Case {
            name: "shld eax,ebx,36 counts 4",
            code: &[0x66, 0x0F, 0xA4, 0xD8, 0x24], // shld eax,ebx,36
            set: &[(R(AX), 0x1234_5678), (R(BX), 0x9ABC_DEF0)],
            want: &[(R(AX), 0x2345_6789)],
            want_flags: (CF, CF),
            ..BASE
        },
        Case {
            name: "shld eax,ebx,cl counts CL mod 32",
            code: &[0x66, 0x0F, 0xA5, 0xD8], // shld eax,ebx,cl
            set: &[(R(AX), 0x1234_5678), (R(BX), 0x9ABC_DEF0), (R(CX), 0x24)],
            want: &[(R(AX), 0x2345_6789)],
            want_flags: (CF, CF),
            ..BASE
        },
        Case {
            name: "shld eax,ebx,32 does nothing",
            code: &[0x66, 0x0F, 0xA4, 0xD8, 0x20], // shld eax,ebx,32
            set: &[(R(AX), 0x1234_5678), (R(BX), 0x9ABC_DEF0)],
            flags: CF | ZF,
            want_flags: (ARITH, CF | ZF),
            ..BASE
        },
        Case {
            name: "shrd eax,ebx,8",
            code: &[0x66, 0x0F, 0xAC, 0xD8, 0x08], // shrd eax,ebx,8
            set: &[(R(AX), 0x1234_5678), (R(BX), 0x9ABC_DEF0)],
            flags: CF,
            want: &[(R(AX), 0xF012_3456)],
            want_flags: (CF | OF | ZF | SF | PF, OF | SF | PF),
            ..BASE
        },
    ]);
}

#[test]
fn bit_tests_and_scans_at_32_bits() {
    run_all(&[
        Case {
            name: "bt eax,31",
            code: &[0x66, 0x0F, 0xBA, 0xE0, 0x1F], // bt eax,31
            set: &[(R(AX), 0x8000_0000)],
            want_flags: (CF, CF),
            ..BASE
        },
        Case {
            name: "btc eax,33 masks the bit number to 5 bits",
            code: &[0x66, 0x0F, 0xBA, 0xF8, 0x21], // btc eax,33
            set: &[(R(AX), 0)],
            flags: CF,
            want: &[(R(AX), 2)],
            want_flags: (CF, 0),
            ..BASE
        },
        Case {
            name: "btr ecx,edx masks a register bit number",
            code: &[0x66, 0x0F, 0xB3, 0xD1], // btr ecx,edx
            set: &[(R(CX), 0xFF), (R(DX), 36)],
            want: &[(R(CX), 0xEF)],
            want_flags: (CF, CF),
            ..BASE
        },
        Case {
            name: "bts [10h],ebx addresses the next dword",
            code: &[0x66, 0x0F, 0xAB, 0x1E, 0x10, 0x00], // bts [0x10],ebx
            set: &[(R(BX), 35)],
            flags: CF,
            want_flags: (CF, 0),
            want_mem: &[(0x3_0010, &[0, 0, 0, 0, 0x08, 0, 0, 0])],
            ..BASE
        },
        Case {
            name: "bt [10h],ebx with a negative bit offset",
            code: &[0x66, 0x0F, 0xA3, 0x1E, 0x10, 0x00], // bt [0x10],ebx
            set: &[(R(BX), 0xFFFF_FFFF)],
            mem: &[(0x3_000F, &[0x80])],
            want_flags: (CF, CF),
            ..BASE
        },
        Case {
            name: "bsf eax,ebx",
            code: &[0x66, 0x0F, 0xBC, 0xC3], // bsf eax,ebx
            set: &[(R(BX), 0x0010_0000)],
            flags: ZF,
            want: &[(R(AX), 20)],
            want_flags: (ZF, 0),
            ..BASE
        },
        Case {
            name: "bsr eax,ebx",
            code: &[0x66, 0x0F, 0xBD, 0xC3], // bsr eax,ebx
            set: &[(R(BX), 0x8000_0001)],
            want: &[(R(AX), 31)],
            want_flags: (ZF, 0),
            ..BASE
        },
        Case {
            name: "bsf eax,ebx of zero",
            code: &[0x66, 0x0F, 0xBC, 0xC3], // bsf eax,ebx
            set: &[(R(AX), 0x1234), (R(BX), 0)],
            want_flags: (ZF, ZF),
            ..BASE
        },
    ]);
}

#[test]
fn string_instructions_with_dwords_and_32_bit_indexes() {
    run_all(&[
        Case {
            name: "rep movsd",
            code: &[0xF3, 0x66, 0xA5], // rep movsd
            set: &[(R(CX), 3), (R(SI), 0), (R(DI), 0)],
            mem: &[(0x3_0000, &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12])],
            want: &[(R(CX), 0), (R(SI), 12), (R(DI), 12)],
            want_mem: &[(0x4_0000, &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12])],
            ..BASE
        },
        Case {
            // ECX, not CX (which is zero), counts; the third element would
            // lie above 0FFFFh and faults with EDI and ECX as before it.
            name: "a32 rep stosd uses ECX and EDI",
            code: &[0xF3, 0x66, 0x67, 0xAB], // a32 rep stosd
            set: &[(R(CX), 0x1_0000), (R(DI), 0xFFF8), (R(AX), 0xAABB_CCDD)],
            want: &[(R(CX), 0xFFFE), (R(DI), 0x1_0000)],
            want_mem: &[(0x4_FFF8, &[0xDD, 0xCC, 0xBB, 0xAA, 0xDD, 0xCC, 0xBB, 0xAA])],
            exit: GP,
            ..BASE
        },
        Case {
            name: "repne scasd",
            code: &[0xF2, 0x66, 0xAF], // repne scasd
            set: &[(R(AX), 0x2222_2222), (R(CX), 5), (R(DI), 0)],
            mem: &[(0x4_0000, &[0x11, 0x11, 0x11, 0x11, 0x22, 0x22, 0x22, 0x22, 0x33, 0x33, 0x33, 0x33])],
            want: &[(R(CX), 3), (R(DI), 8)],
            want_flags: (ZF, ZF),
            ..BASE
        },
        Case {
            name: "cmpsd",
            code: &[0x66, 0xA7], // cmpsd
            set: &[(R(SI), 0), (R(DI), 0)],
            mem: &[(0x3_0000, &[1, 0, 0, 0]), (0x4_0000, &[2, 0, 0, 0])],
            want: &[(R(SI), 4), (R(DI), 4)],
            want_flags: (ARITH, CF | SF | AF | PF),
            ..BASE
        },
        Case {
            name: "lodsd backwards",
            code: &[0x66, 0xAD], // lodsd
            set: &[(R(SI), 8)],
            flags: DF,
            mem: &[(0x3_0008, &[0x78, 0x56, 0x34, 0x12])],
            want: &[(R(AX), 0x1234_5678), (R(SI), 4)],
            ..BASE
        },
        Case {
            name: "a32 movsb from ESI above 0FFFFh: #GP, nothing moved",
            code: &[0x67, 0xA4], // a32 movsb
            set: &[(R(SI), 0x1_0000), (R(DI), 0)],
            exit: GP,
            ..BASE
        },
    ]);
}

#[test]
fn near_transfers_and_loops() {
    run_all(&[
        Case {
            name: "jecxz tests ECX",
            code: &[0x67, 0xE3, 0x01, 0xF4], // a32 jecxz +1; hlt; (hlt)
            set: &[(R(CX), 0x1_0000)],
            want: &[(Ip, 4)],
            ..BASE
        },
        Case {
            name: "jcxz tests CX",
            code: &[0xE3, 0x01, 0xF4], // jcxz +1; hlt; (hlt)
            set: &[(R(CX), 0x1_0000)],
            want: &[(Ip, 4)],
            ..BASE
        },
        Case {
            name: "a32 loop counts ECX",
            code: &[0x67, 0xE2, 0x01, 0xF4], // a32 loop +1; hlt; (hlt)
            set: &[(R(CX), 0x1_0001)],
            want: &[(R(CX), 0x1_0000), (Ip, 5)],
            ..BASE
        },
        Case {
            name: "loop counts CX",
            code: &[0xE2, 0x01, 0xF4], // loop +1; hlt; (hlt)
            set: &[(R(CX), 0x1_0001)],
            want: &[(R(CX), 0x1_0000), (Ip, 3)],
            ..BASE
        },
        Case {
            name: "call rel32 pushes a dword",
            code: &[0x66, 0xE8, 0x01, 0x00, 0x00, 0x00, 0xF4], // o32 call +1; hlt; (hlt)
            want: &[(R(SP), 0xFFFA), (Ip, 8)],
            want_mem: &[(0x2_FFFA, &[0x06, 0x00, 0x00, 0x00])],
            ..BASE
        },
        Case {
            name: "o32 ret pops a dword",
            code: &[0x66, 0xC3], // o32 ret
            mem: &[(0x2_FFFE - 4, &[0x10, 0x00, 0x00, 0x00]), (0x1_0010, &[0xF4])],
            set: &[(R(SP), 0xFFFA)],
            want: &[(R(SP), 0xFFFE), (Ip, 0x11)],
            ..BASE
        },
        Case {
            name: "o32 ret to an offset above 0FFFFh: #GP, nothing popped",
            code: &[0x66, 0xC3], // o32 ret
            mem: &[(0x2_FFFA, &[0x00, 0x00, 0x01, 0x00])],
            set: &[(R(SP), 0xFFFA)],
            exit: GP,
            ..BASE
        },
        Case {
            name: "jmp rel32 beyond 0FFFFh: #GP",
            code: &[0x66, 0xE9, 0x00, 0x00, 0x01, 0x00], // o32 jmp +0x10000
            exit: GP,
            ..BASE
        },
        Case {
            name: "jmp rel32 below zero does not wrap: #GP",
            code: &[0x66, 0xE9, 0xF9, 0xFF, 0xFF, 0xFF], // o32 jmp -7
            exit: GP,
            ..BASE
        },
        Case {
            name: "jmp rel16 wraps",
            at: 0xFFF0,
            code: &[0xEB, 0x7F], // jmp short +7Fh
            mem: &[(0x1_0071, &[0xF4])],
            want: &[(Ip, 0x72)],
            ..BASE
        },
        Case {
            name: "o32 jmp short beyond 0FFFFh: #GP",
            at: 0xFFF0,
            code: &[0x66, 0xEB, 0x7F], // o32 jmp short +7Fh
            exit: GP,
            ..BASE
        },
        Case {
            name: "jz rel32",
            code: &[0x66, 0x0F, 0x84, 0x01, 0x00, 0x00, 0x00, 0xF4], // o32 jz +1; hlt; (hlt)
            flags: ZF,
            want: &[(Ip, 9)],
            ..BASE
        },
        Case {
            name: "call dword [bx] and o32 jmp near through memory",
            code: &[0x66, 0xFF, 0x17], // o32 call [bx]
            set: &[(R(BX), 0x10)],
            mem: &[(0x3_0010, &[0x20, 0x00, 0x00, 0x00]), (0x1_0020, &[0xF4])],
            want: &[(R(SP), 0xFFFA), (Ip, 0x21)],
            want_mem: &[(0x2_FFFA, &[0x03, 0x00, 0x00, 0x00])],
            ..BASE
        },
    ]);
}

#[test]
fn far_transfers_with_32_bit_offsets() {
    run_all(&[
        Case {
            name: "jmp far ptr16:32",
            code: &[0x66, 0xEA, 0x10, 0x00, 0x00, 0x00, 0x00, 0x20], // jmp dword 0x2000:0x10
            mem: &[(0x2_0010, &[0xF4])],
            want: &[(S(CS), 0x2000), (Ip, 0x11)],
            ..BASE
        },
        Case {
            name: "jmp far to an offset above 0FFFFh: #GP",
            code: &[0x66, 0xEA, 0x00, 0x00, 0x01, 0x00, 0x00, 0x20], // jmp dword 0x2000:0x10000
            exit: GP,
            ..BASE
        },
        Case {
            name: "call far ptr16:32 and o32 retf",
            code: &[0x66, 0x9A, 0x10, 0x00, 0x00, 0x00, 0x00, 0x50], // call dword 0x5000:0x10
            mem: &[(0x5_0010, &[0x66, 0xCB])],                       // o32 retf
            want: &[(Ip, 9)],
            want_mem: &[(0x2_FFF6, &[0x08, 0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x00])],
            ..BASE
        },
        Case {
            name: "call far dword [bx]",
            code: &[0x66, 0xFF, 0x1F], // call far dword [bx]
            set: &[(R(BX), 0x10)],
            mem: &[(0x3_0010, &[0x20, 0x00, 0x00, 0x00, 0x00, 0x50]), (0x5_0020, &[0xF4])],
            want: &[(S(CS), 0x5000), (Ip, 0x21), (R(SP), 0xFFF6)],
            want_mem: &[(0x2_FFF6, &[0x03, 0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x00])],
            ..BASE
        },
        Case {
            name: "call far ptr16:32 above 0FFFFh: #GP, nothing pushed",
            code: &[0x66, 0x9A, 0x00, 0x00, 0x01, 0x00, 0x00, 0x50], // call dword 0x5000:0x10000
            exit: GP,
            want_mem: &[(0x2_FFF6, &[0; 8])],
            ..BASE
        },
        Case {
            name: "o32 retf to an offset above 0FFFFh: #GP",
            code: &[0x66, 0xCB], // o32 retf
            set: &[(R(SP), 0xFFF6)],
            mem: &[(0x2_FFF6, &[0x00, 0x00, 0x01, 0x00, 0x00, 0x50, 0x00, 0x00])],
            exit: GP,
            ..BASE
        },
        Case {
            // VM and RF (bits 17, 16) are not set in real mode.
            name: "iretd",
            code: &[0x66, 0xCF], // o32 iret
            set: &[(R(SP), 0xFFF2)],
            mem: &[(0x2_FFF2, &[0x20, 0, 0, 0, 0x00, 0x10, 0, 0, 0x01, 0x00, 0x03, 0x00]), (0x1_0020, &[0xF4])],
            want: &[(R(SP), 0xFFFE), (Ip, 0x21)],
            want_flags: (0xFFFF, RESERVED_ONE | CF),
            ..BASE
        },
        Case {
            name: "iretd to an offset above 0FFFFh: #GP",
            code: &[0x66, 0xCF], // o32 iret
            set: &[(R(SP), 0xFFF2)],
            mem: &[(0x2_FFF2, &[0x00, 0, 0x01, 0, 0x00, 0x10, 0, 0, 0x01, 0x00, 0x03, 0x00])],
            exit: GP,
            ..BASE
        },
        Case {
            name: "iretd that sets IF",
            code: &[0x66, 0xCF], // o32 iret
            set: &[(R(SP), 0xFFF2)],
            mem: &[(0x2_FFF2, &[0x20, 0, 0, 0, 0x00, 0x10, 0, 0, 0x00, 0x02, 0x00, 0x00])],
            want: &[(R(SP), 0xFFFE), (Ip, 0x20)],
            want_flags: (IF, IF),
            exit: ExitReason::InterruptFlag { enabled: true },
            ..BASE
        },
    ]);
}

#[test]
fn thirty_two_bit_addresses() {
    run_all(&[
        Case {
            name: "mov ax,[ebx]",
            code: &[0x67, 0x8B, 0x03], // mov ax,[ebx]
            set: &[(R(BX), 0x10)],
            mem: &[(0x3_0010, &[0x34, 0x12])],
            want: &[(R(AX), 0x1234)],
            ..BASE
        },
        Case {
            name: "mov bx,[disp32]",
            code: &[0x67, 0x8B, 0x1D, 0x20, 0x00, 0x00, 0x00], // mov bx,[dword 0x20]
            mem: &[(0x3_0020, &[0x34, 0x12])],
            want: &[(R(BX), 0x1234)],
            ..BASE
        },
        Case {
            name: "mov eax,[moffs32]",
            code: &[0x66, 0x67, 0xA1, 0x20, 0x00, 0x00, 0x00], // mov eax,[dword 0x20]
            mem: &[(0x3_0020, &[0x78, 0x56, 0x34, 0x12])],
            want: &[(R(AX), 0x1234_5678)],
            ..BASE
        },
        Case {
            name: "mov al,[moffs32] above 0FFFFh: #GP",
            code: &[0x67, 0xA0, 0x00, 0x00, 0x01, 0x00], // mov al,[dword 0x10000]
            exit: GP,
            ..BASE
        },
        Case {
            name: "mov ax,[ecx*4+10h]: scaled index, no base",
            code: &[0x67, 0x8B, 0x04, 0x8D, 0x10, 0x00, 0x00, 0x00], // mov ax,[ecx*4+0x10]
            set: &[(R(CX), 2)],
            mem: &[(0x3_0018, &[0x34, 0x12])],
            want: &[(R(AX), 0x1234)],
            ..BASE
        },
        Case {
            name: "mov ax,[ebp+4] is SS-based",
            code: &[0x67, 0x8B, 0x45, 0x04], // mov ax,[ebp+4]
            set: &[(R(BP), 0x10)],
            mem: &[(0x2_0014, &[0x34, 0x12])],
            want: &[(R(AX), 0x1234)],
            ..BASE
        },
        Case {
            name: "mov ax,[esp] is SS-based",
            code: &[0x67, 0x8B, 0x04, 0x24], // mov ax,[esp]
            set: &[(R(SP), 0x100)],
            mem: &[(0x2_0100, &[0x34, 0x12])],
            want: &[(R(AX), 0x1234)],
            ..BASE
        },
        Case {
            name: "SIB index 4 is no index",
            code: &[0x67, 0x8B, 0x04, 0x63], // mov ax,[ebx] (SIB: scale 2, no index, base EBX)
            set: &[(R(BX), 0x10), (R(SP), 0x100)],
            mem: &[(0x3_0010, &[0x34, 0x12])],
            want: &[(R(AX), 0x1234)],
            ..BASE
        },
        Case {
            name: "add [ebx+esi*2+100h],al",
            code: &[0x67, 0x00, 0x84, 0x73, 0x00, 0x01, 0x00, 0x00], // add [ebx+esi*2+0x100],al
            set: &[(R(BX), 0x10), (R(SI), 8), (R(AX), 1)],
            mem: &[(0x3_0120, &[0x41])],
            want_mem: &[(0x3_0120, &[0x42])],
            ..BASE
        },
        Case {
            name: "mov eax,[ecx*4+10h] with both prefixes",
            code: &[0x66, 0x67, 0x8B, 0x04, 0x8D, 0x10, 0x00, 0x00, 0x00], // mov eax,[ecx*4+0x10]
            set: &[(R(CX), 2)],
            mem: &[(0x3_0018, &[0x78, 0x56, 0x34, 0x12])],
            want: &[(R(AX), 0x1234_5678)],
            ..BASE
        },
        Case {
            name: "an address wraps at 4 GiB",
            code: &[0x67, 0x8B, 0x43, 0x01], // mov ax,[ebx+1]
            set: &[(R(BX), 0xFFFF_FFFF)],
            mem: &[(0x3_0000, &[0x34, 0x12])],
            want: &[(R(AX), 0x1234)],
            ..BASE
        },
        Case {
            name: "a segment override",
            code: &[0x26, 0x67, 0x8B, 0x03], // mov ax,[es:ebx]
            set: &[(R(BX), 0x10)],
            mem: &[(0x4_0010, &[0x34, 0x12])],
            want: &[(R(AX), 0x1234)],
            ..BASE
        },
        Case {
            name: "a word at 0FFFFh: #GP",
            code: &[0x67, 0x8B, 0x03], // mov ax,[ebx]
            set: &[(R(BX), 0xFFFF)],
            exit: GP,
            ..BASE
        },
        Case {
            name: "an address above 0FFFFh: #GP",
            code: &[0x67, 0x8B, 0x03], // mov ax,[ebx]
            set: &[(R(BX), 0x1_0000)],
            exit: GP,
            ..BASE
        },
        Case {
            name: "an SS-based address above 0FFFFh: #SS",
            code: &[0x67, 0x8B, 0x45, 0x00], // mov ax,[ebp]
            set: &[(R(BP), 0x1_0000)],
            exit: SS_FAULT,
            ..BASE
        },
        Case {
            name: "a dword at 0FFFDh: #GP",
            code: &[0x66, 0x8B, 0x07], // mov eax,[bx]
            set: &[(R(BX), 0xFFFD)],
            exit: GP,
            ..BASE
        },
        Case {
            name: "a dword at 0FFFCh fits",
            code: &[0x66, 0x8B, 0x07], // mov eax,[bx]
            set: &[(R(BX), 0xFFFC)],
            mem: &[(0x3_FFFC, &[0x78, 0x56, 0x34, 0x12])],
            want: &[(R(AX), 0x1234_5678)],
            ..BASE
        },
        Case {
            name: "a32 xlatb adds AL to EBX",
            code: &[0x67, 0xD7], // a32 xlatb
            set: &[(R(BX), 0x1_0010), (R(AX), 5)],
            exit: GP,
            ..BASE
        },
        Case {
            name: "a32 xlatb",
            code: &[0x67, 0xD7], // a32 xlatb
            set: &[(R(BX), 0x10), (R(AX), 5)],
            mem: &[(0x3_0015, &[0x99])],
            want: &[(R(AX), 0x99)],
            ..BASE
        },
        Case {
            name: "prefixes that change nothing: mov al,imm8",
            code: &[0x66, 0x67, 0xB0, 0x12], // mov al,0x12 (with 66h 67h)
            set: &[(R(AX), 0xFFFF_FFFF)],
            want: &[(R(AX), 0xFFFF_FF12)],
            ..BASE
        },
    ]);
}

#[test]
fn fifteen_bytes_with_32_bit_forms() {
    // ds ds o32 a32 mov dword [eax+eax*1+100h],12345678h: 15 bytes, fine;
    // one more prefix: 16, #GP.
    const MOV: [u8; 13] = [0x66, 0x67, 0xC7, 0x84, 0x00, 0x00, 0x01, 0x00, 0x00, 0x78, 0x56, 0x34, 0x12];
    for (prefixes, exit) in [(2, ExitReason::Halt), (3, GP)] {
        let mut code = vec![0x3E; prefixes];
        code.extend(MOV);
        let (mut cpu, mut mem) = machine(0, &code);
        cpu.regs[AX] = 0;
        assert_eq!(cpu.run(&mut mem, 10).reason, exit, "{prefixes} prefixes");
        let want: &[u8] = if exit == GP { &[0; 4] } else { &[0x78, 0x56, 0x34, 0x12] };
        assert_eq!(&mem.bytes()[0x3_0100..0x3_0104], want);
    }
}

#[test]
fn dword_port_io() {
    // in eax,dx; out 40h,eax; outsd; insd
    let (mut cpu, mut mem) = machine(0, &[0x66, 0xED, 0x66, 0xE7, 0x40, 0x66, 0x6F, 0x66, 0x6D]);
    cpu.regs[DX] = 0x3F8;
    cpu.regs[SI] = 0x10;
    cpu.regs[DI] = 0x20;
    mem.load(0x3_0010, &[0x44, 0x33, 0x22, 0x11]);
    let e = cpu.run(&mut mem, 10);
    assert_eq!((e.reason, e.instructions, cpu.ip), (ExitReason::In { port: 0x3F8, size: Size::Dword }, 0, 0));
    cpu.complete_in(0x1234_5678);
    let e = cpu.run(&mut mem, 10);
    assert_eq!(e.reason, ExitReason::Out { port: 0x40, size: Size::Dword, value: 0x1234_5678 });
    assert_eq!(cpu.regs[AX], 0x1234_5678);
    let e = cpu.run(&mut mem, 10);
    assert_eq!(e.reason, ExitReason::Out { port: 0x3F8, size: Size::Dword, value: 0x1122_3344 });
    assert_eq!(cpu.regs[SI], 0x14);
    let e = cpu.run(&mut mem, 10);
    assert_eq!(e.reason, ExitReason::In { port: 0x3F8, size: Size::Dword });
    cpu.complete_in(0xCAFE_BABE);
    assert_eq!(cpu.run(&mut mem, 10).reason, ExitReason::Halt);
    assert_eq!(&mem.bytes()[0x4_0020..0x4_0024], &[0xBE, 0xBA, 0xFE, 0xCA]);
    assert_eq!(cpu.regs[DI], 0x24);
}

#[test]
fn popfd_reports_a_change_of_if() {
    // push dword 200h; popfd
    let (mut cpu, mut mem) = machine(0, &[0x66, 0x68, 0x00, 0x02, 0x00, 0x00, 0x66, 0x9D]);
    assert_eq!(cpu.run(&mut mem, 10).reason, ExitReason::InterruptFlag { enabled: true });
    assert_eq!((cpu.ip, cpu.regs[SP]), (8, 0xFFFE));
}

#[test]
fn lfs_loads_a_32_bit_offset() {
    // lfs eax,[bx]
    let (mut cpu, mut mem) = machine(0, &[0x66, 0x0F, 0xB4, 0x07]);
    cpu.regs[BX] = 0x10;
    mem.load(0x3_0010, &[0x78, 0x56, 0x34, 0x12, 0x00, 0x50]);
    assert_eq!(cpu.run(&mut mem, 10).reason, ExitReason::Halt);
    assert_eq!((cpu.regs[AX], cpu.sregs[FS]), (0x1234_5678, 0x5000));
}

/// Random programs rich in 66h and 67h, with random registers and both
/// delivery modes: the interpreter always comes back with an exit.
#[test]
fn random_32_bit_programs_never_panic() {
    let mut seed = 0x9E37_79B9_7F4A_7C15_u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut mem = Memory::new(0x11_0000);
    for round in 0..200 {
        for b in mem.bytes_mut().chunks_mut(8) {
            let mut word = next().to_le_bytes();
            // About one byte in four is an operand- or address-size prefix.
            for x in &mut word[..2] {
                if *x & 3 == 0 {
                    *x = if *x & 4 == 0 { 0x66 } else { 0x67 };
                }
            }
            b.copy_from_slice(&word[..b.len()]);
        }
        let mut cpu = Cpu::new();
        cpu.model = Model::I80386;
        for r in &mut cpu.regs {
            // Small values make in-range 32-bit addresses likely.
            *r = if next() % 2 == 0 { next() as u32 & 0xFFFF } else { next() as u32 };
        }
        for s in &mut cpu.sregs {
            *s = next() as u16;
        }
        cpu.ip = next() as u16;
        cpu.flags = next() as u16;
        cpu.a20 = round % 2 == 0;
        let deliver = if round % 3 == 0 { Delivery::Exit } else { Delivery::Deliver };
        (cpu.faults, cpu.interrupts) = (deliver, deliver);
        let mut executed = 0;
        while executed < 20_000 {
            let e = cpu.run(&mut mem, 5_000);
            executed += e.instructions.max(1);
            match e.reason {
                ExitReason::In { .. } => cpu.complete_in(next() as u32),
                ExitReason::Fault { vector } | ExitReason::Interrupt { vector, .. } => {
                    cpu.deliver_interrupt(&mut mem, vector);
                }
                ExitReason::Halt => cpu.ip = next() as u16,
                _ => {}
            }
        }
    }
}
