//! The interface a monitor builds on: every exit, where it leaves the CPU,
//! and how the monitor resumes.

use vmm_x86::{
    AX, BP, BX, Bus, CS, CX, Cpu, DI, DX, Delivery, ES, Exit, ExitReason, IntKind, Memory, SP, SS, Size, flags, vector,
};

const CODE_SEG: u16 = 0x1000;
const STACK_SEG: u16 = 0x2000;

/// A CPU at 1000:0000 running `code`, its stack at 2000:FFFE, with 1 MiB +
/// 64 KiB of RAM.
fn machine(code: &[u8]) -> (Cpu, Memory) {
    let mut mem = Memory::new(0x11_0000);
    mem.load(u32::from(CODE_SEG) << 4, code);
    let mut cpu = Cpu::new();
    cpu.sregs[CS] = CODE_SEG;
    cpu.sregs[SS] = STACK_SEG;
    cpu.regs[SP] = 0xFFFE;
    (cpu, mem)
}

fn stack_word(cpu: &Cpu, mem: &mut Memory, index: u16) -> u16 {
    let a = cpu.linear(SS, cpu.r16(SP).wrapping_add(2 * index));
    mem.read16(a)
}

#[test]
fn int_n_exits_past_the_instruction_and_can_be_reflected() {
    // MOV AX,1234h; INT 21h
    let (mut cpu, mut mem) = machine(&[0xB8, 0x34, 0x12, 0xCD, 0x21]);
    mem.load(0x21 * 4, &[0x00, 0x05, 0x00, 0x30]); // handler 3000:0500
    cpu.flags |= flags::IF;
    let exit = cpu.run(&mut mem, 100);
    assert_eq!(exit, Exit { reason: ExitReason::Interrupt { vector: 0x21, kind: IntKind::Int }, instructions: 2 });
    assert_eq!((cpu.ip, cpu.regs[AX]), (5, 0x1234));

    cpu.deliver_interrupt(&mut mem, 0x21);
    assert_eq!((cpu.sregs[CS], cpu.ip), (0x3000, 0x0500));
    assert_eq!(cpu.flags & flags::IF, 0);
    assert_eq!(stack_word(&cpu, &mut mem, 0), 5, "return IP");
    assert_eq!(stack_word(&cpu, &mut mem, 1), CODE_SEG, "return CS");
    assert_ne!(stack_word(&cpu, &mut mem, 2) & flags::IF, 0, "FLAGS as they were");
}

#[test]
fn int3_and_a_taken_into_exit_with_their_kind() {
    // INT3; MOV AL,7Fh; ADD AL,1 (sets OF); INTO
    let (mut cpu, mut mem) = machine(&[0xCC, 0xB0, 0x7F, 0x04, 0x01, 0xCE]);
    let e = cpu.run(&mut mem, 100);
    assert_eq!(e.reason, ExitReason::Interrupt { vector: vector::BREAKPOINT, kind: IntKind::Int3 });
    let e = cpu.run(&mut mem, 100);
    assert_eq!(e.reason, ExitReason::Interrupt { vector: vector::OVERFLOW, kind: IntKind::Into });
    assert_eq!((e.instructions, cpu.ip), (3, 6));
}

#[test]
fn in_stops_before_the_instruction_and_complete_in_finishes_it() {
    // IN AL,60h; IN AX,DX; HLT
    let (mut cpu, mut mem) = machine(&[0xE4, 0x60, 0xED, 0xF4]);
    cpu.regs[DX] = 0x3F8;
    let e = cpu.run(&mut mem, 100);
    assert_eq!(e, Exit { reason: ExitReason::In { port: 0x60, size: Size::Byte }, instructions: 0 });
    assert_eq!(cpu.ip, 0, "nothing of the IN has happened");
    // Running again without a value asks again.
    assert_eq!(cpu.run(&mut mem, 100), e);

    cpu.complete_in(0xAB);
    let e = cpu.run(&mut mem, 100);
    assert_eq!(e, Exit { reason: ExitReason::In { port: 0x3F8, size: Size::Word }, instructions: 1 });
    assert_eq!(cpu.regs[AX] & 0xFF, 0xAB);
    cpu.complete_in(0xBEEF);
    assert_eq!(cpu.run(&mut mem, 100).reason, ExitReason::Halt);
    assert_eq!(cpu.regs[AX], 0xBEEF);
}

#[test]
fn rep_insb_exits_once_per_element_and_resumes() {
    // REP INSB; HLT
    let (mut cpu, mut mem) = machine(&[0xF3, 0x6C, 0xF4]);
    cpu.regs[CX] = 3;
    cpu.regs[DX] = 0x60;
    cpu.sregs[ES] = 0x3000;
    cpu.regs[DI] = 0x10;
    for value in [0x11, 0x22, 0x33] {
        let e = cpu.run(&mut mem, 100);
        assert_eq!(e.reason, ExitReason::In { port: 0x60, size: Size::Byte });
        assert_eq!(cpu.ip, 0, "positioned at the REP prefix");
        cpu.complete_in(value);
    }
    let e = cpu.run(&mut mem, 100);
    assert_eq!(e, Exit { reason: ExitReason::Halt, instructions: 2 });
    assert_eq!(&mem.bytes()[0x30010..0x30013], &[0x11, 0x22, 0x33]);
    assert_eq!((cpu.regs[CX], cpu.regs[DI]), (0, 0x13));
}

#[test]
fn out_and_rep_outsw_exit_after_each_write_with_the_value() {
    // MOV AL,41h; OUT 0E9h,AL; REP OUTSW
    let (mut cpu, mut mem) = machine(&[0xB0, 0x41, 0xE6, 0xE9, 0xF3, 0x6F]);
    let e = cpu.run(&mut mem, 100);
    assert_eq!(e, Exit { reason: ExitReason::Out { port: 0xE9, size: Size::Byte, value: 0x41 }, instructions: 2 });
    assert_eq!(cpu.ip, 4);
    cpu.regs[CX] = 2;
    cpu.regs[DX] = 0x1F0;
    mem.load(0, &[0x34, 0x12, 0x78, 0x56]); // DS:SI = 0000:0000
    for value in [0x1234, 0x5678] {
        let e = cpu.run(&mut mem, 100);
        assert_eq!(e.reason, ExitReason::Out { port: 0x1F0, size: Size::Word, value });
    }
    assert_eq!((cpu.regs[CX], cpu.ip), (0, 6));
}

#[test]
fn with_string_io_ins_and_outs_stop_once_before_the_instruction() {
    // REP ES: OUTSB (prefixes F3 26); INSW; REP OUTSB with CX = 0; 66h REP INSD (80386); HLT
    let code = [0xF3, 0x26, 0x6E, 0x6D, 0xF3, 0x6E, 0x66, 0xF3, 0x6D, 0xF4];
    let (mut cpu, mut mem) = machine(&code);
    cpu.string_io = true;
    cpu.model = vmm_x86::Model::I80386;
    cpu.sregs[ES] = 0x5000;
    cpu.regs[CX] = 3;
    cpu.regs[DX] = 0x330;
    let e = cpu.run(&mut mem, 100);
    let outs = ExitReason::StringIo {
        port: 0x330,
        size: Size::Byte,
        output: true,
        segment: 0x5000,
        rep: true,
        addr32: false,
        next_ip: 3,
    };
    assert_eq!(e, Exit { reason: outs, instructions: 0 });
    assert_eq!((cpu.ip, cpu.regs[CX]), (0, 3), "nothing of it happened");
    // The monitor does the elements and moves IP on.
    cpu.ip = 3;
    let e = cpu.run(&mut mem, 100);
    let ins = ExitReason::StringIo {
        port: 0x330,
        size: Size::Word,
        output: false,
        segment: 0x5000,
        rep: false,
        addr32: false,
        next_ip: 4,
    };
    assert_eq!(e.reason, ins);
    cpu.ip = 4;
    cpu.regs[CX] = 0;
    // REP with CX = 0 does nothing: on to the HLT.
    assert_eq!(cpu.run(&mut mem, 100).reason, ExitReason::Halt);
    // The 80386's dword form stops as well.
    cpu.ip = 6;
    cpu.regs[CX] = 2;
    let e = cpu.run(&mut mem, 100);
    let insd = ExitReason::StringIo {
        port: 0x330,
        size: Size::Dword,
        output: false,
        segment: 0x5000,
        rep: true,
        addr32: false,
        next_ip: 9,
    };
    assert_eq!((e.reason, cpu.ip, cpu.regs[CX]), (insd, 6, 2));
}

#[test]
fn cli_sti_popf_and_iret_exit_only_when_they_change_if() {
    // STI; STI; CLI; PUSH 0202h; POPF; PUSHF; PUSH CS; PUSH 000Eh; CLI; IRET (to the HLT); NOP; HLT
    let code = [0xFB, 0xFB, 0xFA, 0x68, 0x02, 0x02, 0x9D, 0x9C, 0x0E, 0x68, 0x0F, 0x00, 0xFA, 0xCF, 0x90, 0xF4];
    let (mut cpu, mut mem) = machine(&code);
    let mut seen = Vec::new();
    loop {
        let e = cpu.run(&mut mem, 100);
        match e.reason {
            ExitReason::InterruptFlag { enabled } => seen.push((enabled, cpu.ip)),
            ExitReason::Halt => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(seen, [(true, 1), (false, 3), (true, 7), (false, 13), (true, 15)]);
}

#[test]
fn a_far_call_into_a_breakpoint_stops_there_with_the_return_address_pushed() {
    // CALL F000:0100
    let (mut cpu, mut mem) = machine(&[0x9A, 0x00, 0x01, 0x00, 0xF0]);
    mem.add_breakpoint(0xF000, 0x0100);
    let e = cpu.run(&mut mem, 100);
    assert_eq!(e, Exit { reason: ExitReason::Breakpoint { cs: 0xF000, ip: 0x0100 }, instructions: 1 });
    assert_eq!(stack_word(&cpu, &mut mem, 0), 5);
    assert_eq!(stack_word(&cpu, &mut mem, 1), CODE_SEG);
    // The monitor returns for the entry point.
    cpu.ip = cpu.pop(&mut mem);
    cpu.sregs[CS] = cpu.pop(&mut mem);
    assert_eq!((cpu.sregs[CS], cpu.ip, cpu.regs[SP]), (CODE_SEG, 5, 0xFFFE));
}

#[test]
fn a_fault_exits_at_the_faulting_instruction_or_is_delivered() {
    // ES: DIV BL (BL = 0)
    let code = [0x26, 0xF6, 0xF3, 0xF4];
    let (mut cpu, mut mem) = machine(&code);
    let e = cpu.run(&mut mem, 100);
    assert_eq!(e, Exit { reason: ExitReason::Fault { vector: vector::DIVIDE_ERROR }, instructions: 1 });
    assert_eq!(cpu.ip, 0, "at the prefix, as the processor pushes it");

    let (mut cpu, mut mem) = machine(&code);
    mem.load(0, &[0x00, 0x02, 0x00, 0x40]); // #DE handler 4000:0200
    mem.load(0x40200, &[0xF4]);
    cpu.faults = Delivery::Deliver;
    let e = cpu.run(&mut mem, 100);
    assert_eq!(e.reason, ExitReason::Halt);
    assert_eq!((cpu.sregs[CS], cpu.ip), (0x4000, 0x0201));
    assert_eq!(stack_word(&cpu, &mut mem, 0), 0, "the faulting IP");
}

#[test]
fn undefined_opcodes_and_forms_raise_invalid_opcode() {
    // 0F 0B; LEA AX,BX (mod = 3); MOV CS,AX; FE /2
    for code in [&[0x0F, 0x0B][..], &[0x8D, 0xC3], &[0x8E, 0xC8], &[0xFE, 0xD0]] {
        let (mut cpu, mut mem) = machine(code);
        let e = cpu.run(&mut mem, 10);
        assert_eq!(e.reason, ExitReason::Fault { vector: vector::INVALID_OPCODE }, "{code:02X?}");
    }
}

#[test]
fn a_word_at_offset_ffff_and_an_eleven_byte_instruction_raise_gp() {
    // MOV AX,[FFFFh]
    let (mut cpu, mut mem) = machine(&[0xA1, 0xFF, 0xFF]);
    assert_eq!(cpu.run(&mut mem, 10).reason, ExitReason::Fault { vector: vector::GENERAL_PROTECTION });
    // Seven segment prefixes and ADD WORD [BX+1234h],5678h: eleven bytes.
    let mut code = vec![0x2E; 7];
    code.extend([0x81, 0x87, 0x34, 0x12, 0x78, 0x56]);
    let (mut cpu, mut mem) = machine(&code);
    assert_eq!(cpu.run(&mut mem, 10).reason, ExitReason::Fault { vector: vector::GENERAL_PROTECTION });
    // A segment full of prefixes ends the same way.
    let (mut cpu, mut mem) = machine(&[0x26; 0x1_0000]);
    assert_eq!(cpu.run(&mut mem, 10).reason, ExitReason::Fault { vector: vector::GENERAL_PROTECTION });
}

#[test]
fn the_budget_bounds_a_run_and_runs_are_deterministic() {
    // a: INC AX; LOOP a; JMP $
    let (mut cpu, mut mem) = machine(&[0x40, 0xE2, 0xFD, 0xEB, 0xFE]);
    cpu.regs[CX] = 10;
    let (mut cpu2, mut mem2) = (cpu.clone(), mem.clone());
    let e = cpu.run(&mut mem, 1000);
    assert_eq!(e, Exit { reason: ExitReason::Budget, instructions: 1000 });
    assert_eq!(cpu.regs[AX], 10);
    assert_eq!(cpu.run(&mut mem, 0).instructions, 0);
    // The same work split into slices ends in the same state.
    let mut total = 0;
    while total < 1000 {
        total += cpu2.run(&mut mem2, 7.min(1000 - total)).instructions;
    }
    assert_eq!((cpu2, mem2), (cpu, mem));
}

#[test]
fn with_a20_off_addresses_wrap_at_one_megabyte() {
    // MOV AL,[ES:0010h] with ES = FFFF
    let (mut cpu, mut mem) = machine(&[0x26, 0xA0, 0x10, 0x00, 0xF4]);
    cpu.sregs[ES] = 0xFFFF;
    mem.load(0x0, &[0x11]);
    mem.load(0x10_0000, &[0x22]);
    cpu.run(&mut mem, 10);
    assert_eq!(cpu.regs[AX] & 0xFF, 0x22);
    let (mut cpu, mut mem2) = machine(&[0x26, 0xA0, 0x10, 0x00, 0xF4]);
    mem2.load(0x0, &[0x11]);
    cpu.sregs[ES] = 0xFFFF;
    cpu.a20 = false;
    cpu.run(&mut mem2, 10);
    assert_eq!(cpu.regs[AX] & 0xFF, 0x11);
}

/// Random bytes as code and data, random registers, every delivery mode:
/// the interpreter must always come back with an exit.
#[test]
fn random_programs_never_panic() {
    let mut seed = 0x2545_F491_4F6C_DD1D_u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut mem = Memory::new(0x11_0000);
    for round in 0..300 {
        for b in mem.bytes_mut().chunks_mut(8) {
            b.copy_from_slice(&next().to_le_bytes()[..b.len()]);
        }
        let mut cpu = Cpu::new();
        for r in &mut cpu.regs {
            *r = next() as u32;
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

#[test]
fn sixteen_bit_code_keeps_the_high_halves_of_the_registers() {
    // PUSHA; MOV AH,12h; XCHG AX,DI; MUL CX; DIV BX; POPA; INC SP; DEC SP; CWD; HLT
    let code = [0x60, 0xB4, 0x12, 0x97, 0xF7, 0xE1, 0xF7, 0xF3, 0x61, 0x44, 0x4C, 0x99, 0xF4];
    let (mut cpu, mut mem) = machine(&code);
    for (i, r) in cpu.regs.iter_mut().enumerate() {
        *r = 0xA5A5_0000 | (*r & 0xFFFF) | (i as u32 + 1);
    }
    cpu.regs[BX] |= 0x100;
    assert_eq!(cpu.run(&mut mem, 100).reason, ExitReason::Halt);
    for (i, r) in cpu.regs.iter().enumerate() {
        assert_eq!(r >> 16, 0xA5A5, "register {i}: {r:08X}");
    }
}

#[test]
fn enter_builds_a_nested_frame_and_leave_unwinds_it() {
    // ENTER 6,2; LEAVE; HLT
    let (mut cpu, mut mem) = machine(&[0xC8, 0x06, 0x00, 0x02, 0xC9, 0xF4]);
    cpu.regs[SP] = 0x0100;
    cpu.regs[BP] = 0x0200;
    let ss = u32::from(STACK_SEG) << 4;
    mem.load(ss + 0x01FE, &[0x11, 0x11]); // the enclosing frame's link
    assert_eq!(cpu.run(&mut mem, 1).reason, ExitReason::Budget);
    assert_eq!((cpu.regs[BP], cpu.regs[SP]), (0x00FE, 0x00F4));
    assert_eq!(mem.read16(ss + 0x00FE), 0x0200, "old BP");
    assert_eq!(mem.read16(ss + 0x00FC), 0x1111, "copied frame link");
    assert_eq!(mem.read16(ss + 0x00FA), 0x00FE, "this frame");
    assert_eq!(cpu.run(&mut mem, 10).reason, ExitReason::Halt);
    assert_eq!((cpu.regs[BP], cpu.regs[SP]), (0x0200, 0x0100));
}

#[test]
fn an_interrupt_the_cpu_delivers_into_a_breakpoint_stops_there() {
    // INT 2Fh with vector 2Fh at the breakpoint F000:0200
    let (mut cpu, mut mem) = machine(&[0xCD, 0x2F]);
    mem.load(0x2F * 4, &[0x00, 0x02, 0x00, 0xF0]);
    mem.add_breakpoint(0xF000, 0x0200);
    cpu.interrupts = Delivery::Deliver;
    let e = cpu.run(&mut mem, 100);
    assert_eq!(e, Exit { reason: ExitReason::Breakpoint { cs: 0xF000, ip: 0x0200 }, instructions: 1 });
    assert_eq!(stack_word(&cpu, &mut mem, 0), 2, "return IP");
}
