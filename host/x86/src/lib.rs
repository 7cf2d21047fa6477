//! `vmm-x86`: an 80286 (and 80386) real-mode interpreter for the VMM's DOS
//! virtual machines.
//!
//! A real VMM runs DOS programs in virtual-8086 mode and gets control back
//! whenever the program does something the VMM must see: a software
//! interrupt, port I/O, a call into a VxD's V86 API, a change of the
//! interrupt flag. This crate is that CPU, as a library with no
//! dependencies, no `unsafe` and no global state, written so that a monitor
//! can be built on it:
//!
//! * [`Cpu`] is the whole processor state as plain data (`Clone`,
//!   `PartialEq`, `Debug`, public fields). Saving a VM is cloning it.
//! * [`Cpu::run`] executes up to a budget of instructions over a [`Bus`]
//!   (memory only) and returns an [`Exit`]: why it stopped
//!   ([`ExitReason`]) and how many instructions ran, so the monitor can
//!   advance virtual time by instruction count.
//! * Nothing calls back into the monitor except memory reads and writes and
//!   [`Bus::is_breakpoint`]. Everything else is an exit, after which the
//!   monitor changes what it wants and calls [`Cpu::run`] again.
//!
//! The same state, memory and budget always give the same exit and the
//! same final state; splitting a budget into slices changes nothing.
//!
//! # Exits and how to resume
//!
//! | [`ExitReason`] | Where the CPU stands | To resume |
//! |---|---|---|
//! | `Interrupt { vector, kind }` (`INT n`, `INT3`, taken `INTO`) | past the instruction | [`Cpu::deliver_interrupt`] reflects it through the vector table, or emulate it and run on |
//! | `In { port, size }` (`IN`, each element of `INS`/`REP INS`) | before the instruction, nothing done | [`Cpu::complete_in`] with the value, then run: the instruction (element) executes with it |
//! | `Out { port, size, value }` (`OUT`, each element of `OUTS`) | past the instruction (element) | run |
//! | `StringIo { port, size, output, segment, rep, addr32, next_ip }` (`INS`/`OUTS`, with [`Cpu::string_io`] set) | before the instruction, nothing done | do the elements (memory, SI/DI, CX), set IP to `next_ip`, run |
//! | `Breakpoint { cs, ip }` (a far `CALL`/`JMP`, `RETF`, `IRET` or an interrupt the CPU delivered arrived at an address [`Bus::is_breakpoint`] accepts) | at the entry point, return address pushed | emulate, pop the return address ([`Cpu::pop`]), run |
//! | `InterruptFlag { enabled }` (`CLI`, `STI`, `POPF`, `IRET` changed IF) | past the instruction | run |
//! | `Halt` | past the `HLT` | run when the VM has work |
//! | `Fault { vector }` (#DE 0, #BR 5, #UD 6, #SS 12, #GP 13) | at the faulting instruction's first prefix | [`Cpu::deliver_interrupt`], or fix and run |
//! | `Budget` | between instructions | run |
//!
//! Faults and software interrupts can also be delivered by the CPU itself,
//! as the processor does (push FLAGS, CS, IP; clear IF and TF; continue at
//! the vector in the table at physical 0): set [`Cpu::faults`] or
//! [`Cpu::interrupts`] to [`Delivery::Deliver`]. A `REP` string instruction
//! runs one element per instruction counted, with IP left on its prefix
//! until CX reaches zero, so it can stop between any two elements.
//!
//! # Example
//!
//! ```
//! use vmm_x86::{AX, CS, Cpu, ExitReason, IntKind, Memory};
//!
//! // MOV AH,09h; MOV DX,0100h; INT 21h at 1000:0000
//! let mut mem = Memory::new(0x11_0000);
//! mem.load(0x1_0000, &[0xB4, 0x09, 0xBA, 0x00, 0x01, 0xCD, 0x21]);
//! let mut cpu = Cpu::new();
//! cpu.sregs[CS] = 0x1000;
//!
//! let exit = cpu.run(&mut mem, 1_000);
//! assert_eq!(exit.reason, ExitReason::Interrupt { vector: 0x21, kind: IntKind::Int });
//! assert_eq!(exit.instructions, 3);
//! assert_eq!((cpu.regs[AX] >> 8, cpu.ip), (0x09, 7));
//! ```
//!
//! # What is emulated
//!
//! The 80286's real-mode instruction set, including the 80186/80286
//! additions (`PUSHA`/`POPA`, `BOUND`, `ENTER`/`LEAVE`, `INS`/`OUTS`,
//! `PUSH imm`, `IMUL r,r/m,imm`, shifts by an immediate) and its
//! differences from the 8086: `PUSH SP` pushes the old SP, shift and rotate
//! counts are masked to 5 bits, a word operand at offset 0xFFFF and an
//! instruction longer than ten bytes raise #GP (13), undefined opcodes and
//! invalid operand forms (`LEA` of a register, `MOV CS,r/m`, ...) raise #UD
//! (6), #DE pushes the address of the dividing instruction, `IDIV` accepts
//! the quotients -0x80 / -0x8000, IOPL and NT cannot be set, `SALC` (D6)
//! works and coprocessor escapes (D8-DF) do nothing. Addresses are 24 bits:
//! `segment * 16 + offset` reaches 0x10FFEF with [`Cpu::a20`] set (as in
//! the test suite) and wraps at 1 MiB without it.
//!
//! # The 80386 model
//!
//! With [`Cpu::model`] = [`Model::I80386`] the interpreter also takes the
//! 80386's real-mode additions: the FS and GS prefixes (64h, 65h) and
//! registers (`MOV` to and from them, `PUSH`/`POP FS`/`GS`), the `0F`
//! forms DOS programs meet (`Jcc rel16/32`, `SETcc`, `MOVZX`/`MOVSX`,
//! `IMUL r,r/m`, `BT`/`BTS`/`BTR`/`BTC` (register and immediate bit
//! offsets; a register offset addresses a bit string in memory),
//! `SHLD`/`SHRD`, `BSF`/`BSR`, `LSS`/`LFS`/`LGS`), instructions up to 15
//! bytes long, and the operand- and address-size prefixes:
//!
//! * **66h** makes every form with a word operand take a dword: the ALU
//!   operations, `MOV`, `XCHG`, `INC`/`DEC`, `NOT`/`NEG`,
//!   `MUL`/`IMUL`/`DIV`/`IDIV` (EDX:EAX; #DE when the quotient does not
//!   fit), shifts, rotates and `SHLD`/`SHRD` (counts masked to 5 bits),
//!   `BT*`, `BSF`/`BSR`, `MOVZX`/`MOVSX` to a 32-bit register, `PUSH`/`POP`
//!   (of segment registers too: a dword slot), `PUSHAD`/`POPAD`,
//!   `PUSHFD`/`POPFD`, `CWDE`/`CDQ`, the string instructions (dword
//!   elements), `IN`/`OUT`/`INS`/`OUTS` ([`Size::Dword`]), `ENTER`/`LEAVE`
//!   (EBP), `LDS`/`LES`/`LSS`/`LFS`/`LGS` (a 16:32 pointer), and the near
//!   and far `CALL`/`JMP`/`RET`, `Jcc` and `IRETD` with 32-bit offsets and
//!   dword stack slots.
//! * **67h** makes addresses 32 bits: ModRM with a SIB byte (base, index
//!   scaled by 1, 2, 4 or 8), disp8/disp32, a 32-bit `moffs`; EBP and ESP
//!   as a base address SS. String instructions use ESI, EDI and (with
//!   `REP`) ECX, `XLAT` uses EBX, `LOOP`/`LOOPcc`/`JECXZ` count and test
//!   ECX.
//!
//! Both may be combined, and prefixes that change nothing (`66h` on
//! `MOV AL,imm8`, on `INT n`, ...) are accepted. The real-mode rules the
//! 80386 manual gives apply to these forms:
//!
//! * Every segment ends at offset 0xFFFF. An operand any byte of which lies
//!   beyond it (a 32-bit address above 0xFFFF, a dword at 0xFFFD, a push
//!   across the top of the stack) raises #SS (12) when the segment is SS
//!   and #GP (13) otherwise. A 32-bit address wraps at 4 GiB before the
//!   check.
//! * A near or far transfer (`JMP`, `Jcc`, `LOOP`, `CALL`, `RET`, `RETF`,
//!   `IRETD`) to an offset above 0xFFFF raises #GP; with a 16-bit operand
//!   size the offset wraps as on the 80286. [`Cpu::ip`] stays 16 bits
//!   wide: EIP's high half is always zero in real mode.
//! * The stack stays 16 bits wide: pushes and pops move SP and keep ESP's
//!   high half whatever the operand size.
//! * `POPFD` and `IRETD` load only the low half of EFLAGS (with the
//!   80286's rules for IOPL, NT and bit 15); the high half (RF, VM) reads
//!   as zero in the image `PUSHFD` pushes and is never set.
//! * `MOV r32,Sreg` zero-extends the selector.
//! * An instruction with either prefix that faults changes nothing: no
//!   register (SP included), no memory. A string element that faults
//!   leaves SI, DI and CX as they were before it, so the instruction
//!   restarts with that element (the 80286 has already advanced them).
//!
//! The 80386 forms are checked by unit tests (`tests/i386.rs`,
//! `tests/i386_32bit.rs`: hand-assembled encodings with the results the
//! 80386 manual defines, and random programs), not by hardware captures.
//! Everything else about the model is the 80286's.
//!
//! # Checked against a real 80286
//!
//! `tests/singlestep.rs` runs the 65,000 tests of the SingleStepTests 80286
//! real-mode suite (200 for each of 325 instruction forms, captured on a
//! Harris 80C286; `tests/data/80286-real-mode/`) and prints the pass rate
//! per form. **All 65,000 pass; the exception list is empty.** The only
//! relaxation is the one the suite itself calls for: flags Intel documents
//! as undefined after an instruction are not compared (after `MUL`/`IMUL`
//! SF ZF AF PF; `DIV`/`IDIV` all six; `AAA`/`AAS` OF SF ZF PF; `DAA`/`DAS`
//! OF; `AAM`/`AAD` OF AF CF; shifts AF, and OF when the count is not one;
//! rotates OF when the count is not one). Where the interpreter computes
//! them anyway it does so the obvious way, not the 80286's way.
//!
//! Details the suite showed and the interpreter follows: a string element
//! that faults has already advanced SI/DI past its access and counted CX
//! down (`CMPS` reads ES:DI first and counts after that read; a faulting
//! `REP` write has counted CX once more), and `AAS` borrows from AH as a
//! word subtraction.
//!
//! # What is not emulated
//!
//! * Protected mode and the system instructions (`LMSW`, `SMSW`,
//!   `LOADALL`, `MOV CRn`, ...): #UD.
//! * On the 80386 model: protected mode, virtual-8086 mode and the 32-bit
//!   system state (control, debug and test registers, the high half of
//!   EFLAGS), instructions that run past offset 0xFFFF of CS (IP wraps as
//!   on the 80286), and its other differences from the 80286 in 16-bit
//!   forms without 66h/67h: IOPL and NT stay read-only in FLAGS, a word at
//!   SS:0xFFFF raises #GP rather than #SS, and a faulting string element
//!   advances SI/DI/CX as on the 80286.
//! * The trap flag (kept in FLAGS, never acted on), hardware interrupts
//!   and NMI (the monitor delivers them with [`Cpu::deliver_interrupt`]
//!   between runs), the interrupt shadow after `MOV SS`/`POP SS`/`STI`.
//! * Timing, the prefetch queue (code that modifies the bytes about to run
//!   sees the change at once), bus locking (`LOCK` is accepted and
//!   ignored), an 80287 (escapes do nothing), shutdown on a fault while
//!   delivering a fault.
//! * The values of undefined flags (see above).

#![forbid(unsafe_code)]

mod bus;
mod cpu;
mod exec;

pub use bus::{Bus, Memory};
pub use cpu::{
    AX, BP, BX, CS, CX, Cpu, DI, DS, DX, Delivery, ES, Exit, ExitReason, FS, GS, IntKind, Model, SI, SP, SS, Size,
    flags, vector,
};
