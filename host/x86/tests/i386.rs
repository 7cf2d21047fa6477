//! The 80386 model: its FS/GS and `0F` forms at 16-bit operand size, and
//! that the 80286 model refuses them and the 66h/67h prefixes.

use vmm_x86::{AX, BX, CS, CX, Cpu, DS, DX, ExitReason, FS, GS, Memory, Model, SI, SP, SS, flags, vector};

/// An 80386 at 1000:0000 running `code`, DS = 3000, stack at 2000:FFFE.
fn i386(code: &[u8]) -> (Cpu, Memory) {
    let mut mem = Memory::new(0x11_0000);
    mem.load(0x1_0000, code);
    let mut cpu = Cpu::new();
    cpu.model = Model::I80386;
    cpu.sregs[CS] = 0x1000;
    cpu.sregs[DS] = 0x3000;
    cpu.sregs[SS] = 0x2000;
    cpu.regs[SP] = 0xFFFE;
    (cpu, mem)
}

fn run_to_hlt(cpu: &mut Cpu, mem: &mut Memory) {
    assert_eq!(cpu.run(mem, 1000).reason, ExitReason::Halt, "{cpu:X?}");
}

fn cf(cpu: &Cpu) -> bool {
    cpu.flags & flags::CF != 0
}

#[test]
fn setcc_and_a_near_jcc() {
    // CMP AX,BX; SETB AL; SETNZ CL; SETZ DL; JB +0100h; HLT ... HLT at +0100h
    let mut code = vec![0x39, 0xD8, 0x0F, 0x92, 0xC0, 0x0F, 0x95, 0xC1, 0x0F, 0x94, 0xC2, 0x0F, 0x82, 0x00, 0x01, 0xF4];
    code.resize(0x10F, 0x90);
    code.push(0xF4);
    let (mut cpu, mut mem) = i386(&code);
    cpu.regs[AX] = 1;
    cpu.regs[BX] = 2;
    cpu.regs[DX] = 0xFF;
    run_to_hlt(&mut cpu, &mut mem);
    assert_eq!((cpu.regs[AX] & 0xFF, cpu.regs[CX] & 0xFF, cpu.regs[DX] & 0xFF), (1, 1, 0));
    assert_eq!(cpu.ip, 0x110, "the JB took its 16-bit displacement");
}

#[test]
fn movzx_and_movsx() {
    // MOVZX AX,BL; MOVSX CX,BL; MOVSX DX,byte [SI]; HLT
    let (mut cpu, mut mem) = i386(&[0x0F, 0xB6, 0xC3, 0x0F, 0xBE, 0xCB, 0x0F, 0xBE, 0x14, 0xF4]);
    cpu.regs[BX] = 0x80;
    cpu.regs[SI] = 0x10;
    mem.load(0x30010, &[0x7F]);
    run_to_hlt(&mut cpu, &mut mem);
    assert_eq!((cpu.regs[AX], cpu.regs[CX], cpu.regs[DX]), (0x0080, 0xFF80, 0x007F));
}

#[test]
fn fs_and_gs_as_registers_and_prefixes() {
    // MOV AX,3000h; MOV FS,AX; PUSH FS; POP GS; MOV AL,FS:[0010h];
    // MOV BL,GS:[0011h]; MOV CX,GS; HLT
    let code = [
        0xB8, 0x00, 0x30, 0x8E, 0xE0, 0x0F, 0xA0, 0x0F, 0xA9, 0x64, 0xA0, 0x10, 0x00, 0x65, 0x8A, 0x1E, 0x11, 0x00,
        0x8C, 0xE9, 0xF4,
    ];
    let (mut cpu, mut mem) = i386(&code);
    cpu.sregs[DS] = 0;
    mem.load(0x30010, &[0xAA, 0xBB]);
    run_to_hlt(&mut cpu, &mut mem);
    assert_eq!((cpu.sregs[FS], cpu.sregs[GS], cpu.regs[CX]), (0x3000, 0x3000, 0x3000));
    assert_eq!((cpu.regs[AX] & 0xFF, cpu.regs[BX] & 0xFF), (0xAA, 0xBB));
    assert_eq!(cpu.regs[SP], 0xFFFE);
}

#[test]
fn imul_of_two_registers_sets_cf_and_of_on_overflow() {
    // IMUL AX,BX; HLT
    let (mut cpu, mut mem) = i386(&[0x0F, 0xAF, 0xC3, 0xF4]);
    cpu.regs[AX] = 0xFFFD;
    cpu.regs[BX] = 1000;
    run_to_hlt(&mut cpu, &mut mem);
    assert_eq!((cpu.regs[AX], cf(&cpu)), (0xF448, false));

    let (mut cpu, mut mem) = i386(&[0x0F, 0xAF, 0xC3, 0xF4]);
    cpu.regs[AX] = 300;
    cpu.regs[BX] = 300;
    run_to_hlt(&mut cpu, &mut mem);
    assert_eq!((cpu.regs[AX], cf(&cpu), cpu.flags & flags::OF != 0), (0x5F90, true, true));
}

#[test]
fn bt_bts_btr_btc_on_a_register() {
    let steps: [(&[u8], u32, bool); 4] = [
        (&[0x0F, 0xBA, 0xE3, 0x01], 0b1010, true),  // BT BX,1
        (&[0x0F, 0xBA, 0xEB, 0x02], 0b1110, false), // BTS BX,2
        (&[0x0F, 0xBA, 0xF3, 0x03], 0b0110, true),  // BTR BX,3
        (&[0x0F, 0xBA, 0xFB, 0x00], 0b0111, false), // BTC BX,0
    ];
    let mut code: Vec<u8> = steps.iter().flat_map(|s| s.0.iter().copied()).collect();
    code.push(0xF4);
    let (mut cpu, mut mem) = i386(&code);
    cpu.regs[BX] = 0b1010;
    for (_, bx, carry) in steps {
        assert_eq!(cpu.run(&mut mem, 1).reason, ExitReason::Budget);
        assert_eq!((cpu.regs[BX], cf(&cpu)), (bx, carry));
    }
}

#[test]
fn a_bit_offset_in_a_register_addresses_a_bit_string_in_memory() {
    // BT [SI],AX; BTS [SI],CX; HLT
    let (mut cpu, mut mem) = i386(&[0x0F, 0xA3, 0x04, 0x0F, 0xAB, 0x0C, 0xF4]);
    cpu.regs[SI] = 0x10;
    cpu.regs[AX] = 35; // word SI+4, bit 3
    cpu.regs[CX] = 0xFFFF; // -1: word SI-2, bit 15
    mem.load(0x30014, &[0x08, 0x00]);
    assert_eq!(cpu.run(&mut mem, 1).reason, ExitReason::Budget);
    assert!(cf(&cpu));
    run_to_hlt(&mut cpu, &mut mem);
    assert!(!cf(&cpu));
    assert_eq!(&mem.bytes()[0x3000E..0x30010], &[0x00, 0x80]);
}

#[test]
fn shld_and_shrd() {
    // SHLD AX,BX,4; SHRD AX,BX,CL; HLT
    let (mut cpu, mut mem) = i386(&[0x0F, 0xA4, 0xD8, 0x04, 0x0F, 0xAD, 0xD8, 0xF4]);
    cpu.regs[AX] = 0x1234;
    cpu.regs[BX] = 0xABCD;
    cpu.regs[CX] = 8;
    assert_eq!(cpu.run(&mut mem, 1).reason, ExitReason::Budget);
    assert_eq!((cpu.regs[AX], cf(&cpu)), (0x234A, true));
    run_to_hlt(&mut cpu, &mut mem);
    assert_eq!((cpu.regs[AX], cf(&cpu)), (0xCD23, false));
    assert_eq!(cpu.flags & flags::SF, flags::SF);
}

#[test]
fn bsf_and_bsr() {
    // BSF CX,AX; BSR DX,AX; HLT
    let (mut cpu, mut mem) = i386(&[0x0F, 0xBC, 0xC8, 0x0F, 0xBD, 0xD0, 0xF4]);
    cpu.regs[AX] = 0x0110;
    run_to_hlt(&mut cpu, &mut mem);
    assert_eq!((cpu.regs[CX], cpu.regs[DX], cpu.flags & flags::ZF), (4, 8, 0));

    let (mut cpu, mut mem) = i386(&[0x0F, 0xBC, 0xC8, 0xF4]);
    cpu.regs[CX] = 0x5555;
    run_to_hlt(&mut cpu, &mut mem);
    assert_eq!((cpu.regs[CX], cpu.flags & flags::ZF), (0x5555, flags::ZF));
}

#[test]
fn lss_lfs_and_lgs_load_a_far_pointer() {
    // LSS SP,[0020h]; LFS BX,[0020h]; LGS CX,[0020h]; HLT
    let code = [0x0F, 0xB2, 0x26, 0x20, 0x00, 0x0F, 0xB4, 0x1E, 0x20, 0x00, 0x0F, 0xB5, 0x0E, 0x20, 0x00, 0xF4];
    let (mut cpu, mut mem) = i386(&code);
    mem.load(0x30020, &[0x34, 0x12, 0x00, 0x50]);
    run_to_hlt(&mut cpu, &mut mem);
    assert_eq!((cpu.sregs[SS], cpu.regs[SP]), (0x5000, 0x1234));
    assert_eq!((cpu.sregs[FS], cpu.regs[BX], cpu.sregs[GS], cpu.regs[CX]), (0x5000, 0x1234, 0x5000, 0x1234));
}

#[test]
fn the_80286_model_refuses_what_only_the_80386_has() {
    for code in [&[0x0F, 0x82, 0x00, 0x01][..], &[0x64, 0xA0, 0x10, 0x00], &[0x8E, 0xE0], &[0x0F, 0xA0]] {
        let (mut cpu, mut mem) = i386(code);
        cpu.model = Model::I80286;
        let e = cpu.run(&mut mem, 10);
        assert_eq!(e.reason, ExitReason::Fault { vector: vector::INVALID_OPCODE }, "{code:02X?}");
    }
}

#[test]
fn the_80286_model_refuses_the_operand_and_address_size_prefixes() {
    for code in [&[0x66, 0x40][..], &[0x67, 0x8B, 0x00], &[0x2E, 0x66, 0x67, 0x90], &[0x0F, 0xFF]] {
        let (mut cpu, mut mem) = i386(code);
        cpu.model = Model::I80286;
        let e = cpu.run(&mut mem, 10);
        assert_eq!(e.reason, ExitReason::Fault { vector: vector::INVALID_OPCODE }, "{code:02X?}");
    }
}

#[test]
fn the_80386_allows_fifteen_bytes_per_instruction() {
    // Seven CS: prefixes and ADD WORD [BX+1234h],5678h: 13 bytes, #GP on
    // the 80286, fine on the 80386.
    let mut code = vec![0x2E; 7];
    code.extend([0x81, 0x87, 0x34, 0x12, 0x78, 0x56, 0xF4]);
    let (mut cpu, mut mem) = i386(&code);
    run_to_hlt(&mut cpu, &mut mem);
    // Ten prefixes and JB rel16 (0F 82): 14 bytes, fine; twelve: 16, #GP.
    for (prefixes, reason) in [(10, ExitReason::Halt), (12, ExitReason::Fault { vector: vector::GENERAL_PROTECTION })] {
        let mut code = vec![0x3E; prefixes];
        code.extend([0x0F, 0x82, 0x00, 0x00, 0xF4]);
        let (mut cpu, mut mem) = i386(&code);
        assert_eq!(cpu.run(&mut mem, 10).reason, reason, "{prefixes} prefixes");
    }
}
