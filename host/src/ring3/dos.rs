//! The DOS subset the host serves to machine-code programs: what a DOS
//! program's start-up code and a simple program use, and nothing that
//! needs a disk.
//!
//! | Call | What it does here |
//! |---|---|
//! | INT 20h, INT 21h AH=00h | End the program, exit code 0 |
//! | INT 21h AH=02h | Write DL to the console |
//! | INT 21h AH=06h | DL≠FFh: write DL; DL=FFh: no key waiting (ZF set) |
//! | INT 21h AH=09h | Write the `$`-terminated string at DS:DX |
//! | INT 21h AH=19h | Current drive: C: |
//! | INT 21h AH=25h / 35h | Set / get interrupt vector AL (the VM's vector table) |
//! | INT 21h AH=30h | DOS version: 5.00 under Windows 3.1, 7.00 under Windows 95 |
//! | INT 21h AH=3Eh | Close: handles 0-4 close, others are invalid (error 6) |
//! | INT 21h AH=3Fh | Read: handle 0 is at end of file (AX=0), others are invalid |
//! | INT 21h AH=40h | Write: handles 1 and 2 to the console, 3 and 4 dropped, others invalid |
//! | INT 21h AH=42h | Seek: on handles 0-4 (devices) DX:AX=0 |
//! | INT 21h AH=44h | IOCTL: AL=00h device information of handles 0-4 (character devices; 0-2 the console), AL=01h accepted, AL=06h/07h status (no input waiting, output ready) |
//! | INT 21h AH=48h / 49h | Allocate BX paragraphs (AX = the segment; first fit past the program's block, error 8 and the largest free size in BX) / free the block at ES (error 9 if it is none) |
//! | INT 21h AH=4Ah | Resize the program's block (ES = its PSP) or an allocated one within conventional memory: error 8 and the largest size in BX when it does not fit, 9 for another ES |
//! | INT 21h AH=4Ch | End the program with exit code AL |
//! | INT 21h AH=51h / 62h | The PSP's segment in BX |
//! | INT 21h AH=59h | The last error in AX |
//! | INT 10h AH=0Eh | Write AL to the console; AH=0Fh: text mode 3, 80 columns |
//! | INT 14h AH=00h-03h | The BIOS's serial services on COM1, through the port table (`bios_serial.rs`) |
//! | INT 15h AH=86h | Wait CX:DX microseconds: the program sleeps that long in virtual time |
//! | INT 16h AH=01h/11h | No key waiting (ZF set) |
//! | INT 1Ah AH=00h | Ticks since midnight (18.2 Hz) from the virtual clock; the BIOS data area's count at 0040:006C follows it, updated at the start of every run |
//!
//! Any other function is a `violation` record (`UNSUPPORTED_INTERRUPT`,
//! naming the call), and returns with CF set and AX=1 (invalid function);
//! the program goes on. Failed calls set CF and the DOS error code in AX.

use vmm_plugin_api::abi::StepKind;
use vmm_plugin_api::ddk::ZF_MASK;
use vmm_x86::{AX, BX, CX, DS, DX, ES};

use crate::machine::Core;
use crate::ring3::machine_code::{DosMachine, Flow, PSP_SEGMENT, set_carry};
use crate::violation::Violation;
use crate::vmm::ids::VmId;

/// DOS error codes.
const INVALID_FUNCTION: u16 = 1;
const INVALID_HANDLE: u16 = 6;
const NOT_ENOUGH_MEMORY: u16 = 8;
const INVALID_BLOCK: u16 = 9;

fn set16(m: &mut DosMachine, r: usize, v: u16) {
    m.cpu.regs[r] = (m.cpu.regs[r] & 0xFFFF_0000) | v as u32;
}

fn set_al(m: &mut DosMachine, v: u8) {
    m.cpu.regs[AX] = (m.cpu.regs[AX] & 0xFFFF_FF00) | v as u32;
}

fn set_zero(m: &mut DosMachine, on: bool) {
    if on {
        m.cpu.flags |= ZF_MASK as u16;
    } else {
        m.cpu.flags &= !(ZF_MASK as u16);
    }
}

/// What a call does when it is done.
enum Done {
    /// Success: CF clear.
    Ok,
    /// Failure with this DOS error code: CF set, AX = the code.
    Err(u16),
    /// The program stops for this step.
    Flow(Flow),
    /// Not provided.
    Unknown,
}

impl Core {
    /// INT 20h, 21h, 10h, 15h, 16h and 1Ah for a machine-code program.
    pub(crate) fn dos_int(&self, vm: VmId, m: &mut DosMachine, n: u8) -> Flow {
        let ax = m.cpu.regs[AX] as u16;
        let ah = (ax >> 8) as u8;
        let done = match n {
            0x20 => Done::Flow(exit(0)),
            0x21 => self.int21(vm, m, ah),
            0x10 => match ah {
                0x0E => {
                    self.v86_output(vm, m, &[ax as u8]);
                    Done::Ok
                }
                0x0F => {
                    set16(m, AX, 0x5003);
                    m.cpu.regs[BX] &= 0xFFFF_00FF;
                    Done::Ok
                }
                _ => Done::Unknown,
            },
            0x15 if ah == 0x86 => {
                let us = ((m.cpu.regs[CX] & 0xFFFF) << 16) | (m.cpu.regs[DX] & 0xFFFF);
                set_carry(&mut m.cpu, false);
                let ms = us.div_ceil(1000);
                return if ms == 0 {
                    Flow::Go
                } else {
                    Flow::Step(vmm_plugin_api::abi::Step { kind: StepKind::Sleep, value: ms }, "sleep")
                };
            }
            0x16 if ah == 0x01 || ah == 0x11 => {
                set_zero(m, true);
                return Flow::Go;
            }
            0x1A if ah == 0x00 => {
                let ticks = bios_ticks(self.sched.now().as_nanos());
                set16(m, CX, (ticks >> 16) as u16);
                set16(m, DX, ticks as u16);
                set_al(m, 0);
                return Flow::Go;
            }
            _ => Done::Unknown,
        };
        match done {
            Done::Ok => {
                set_carry(&mut m.cpu, false);
                Flow::Go
            }
            Done::Err(code) => {
                m.last_error = code;
                set16(m, AX, code);
                set_carry(&mut m.cpu, true);
                Flow::Go
            }
            Done::Flow(f) => f,
            Done::Unknown => {
                let what = if n == 0x21 || n == 0x10 {
                    format!("INT {n:02X}h AH={ah:02X}h")
                } else {
                    format!("INT {n:02X}h AX={ax:04X}h")
                };
                self.violation(
                    Violation::UnsupportedInterrupt,
                    format!(
                        "{} called {what}, which this emulator's DOS does not provide (see the DOS subset in the \
                         guide); it returns CF set, AX=1 (invalid function)",
                        m.name
                    ),
                    Some("INT"),
                );
                m.last_error = INVALID_FUNCTION;
                set16(m, AX, INVALID_FUNCTION);
                set_carry(&mut m.cpu, true);
                Flow::Go
            }
        }
    }

    fn int21(&self, vm: VmId, m: &mut DosMachine, ah: u8) -> Done {
        let handle = m.cpu.regs[BX] as u16;
        let al = m.cpu.regs[AX] as u8;
        match ah {
            0x00 => Done::Flow(exit(0)),
            0x02 => {
                let c = m.cpu.regs[DX] as u8;
                self.v86_output(vm, m, &[c]);
                set_al(m, c);
                Done::Ok
            }
            0x06 => {
                let c = m.cpu.regs[DX] as u8;
                if c == 0xFF {
                    set_zero(m, true);
                    set_al(m, 0);
                } else {
                    self.v86_output(vm, m, &[c]);
                    set_al(m, c);
                }
                Done::Ok
            }
            0x09 => {
                let (seg, mut off) = (m.cpu.sregs[DS], m.cpu.regs[DX] as u16);
                let mut text = Vec::new();
                // At most one segment: a string without `$` ends there.
                for _ in 0..0x1_0000 {
                    let b = m.mem.read_bytes(seg, off, 1)[0];
                    if b == b'$' {
                        break;
                    }
                    text.push(b);
                    off = off.wrapping_add(1);
                }
                self.v86_output(vm, m, &text);
                set_al(m, b'$');
                Done::Ok
            }
            0x19 => {
                set_al(m, 2);
                Done::Ok
            }
            0x25 => {
                let at = al as u32 * 4;
                let (seg, off) = (m.cpu.sregs[DS], m.cpu.regs[DX] as u16);
                m.mem.set_word(at, off);
                m.mem.set_word(at + 2, seg);
                Done::Ok
            }
            0x35 => {
                let v = m.mem.vector(al);
                m.cpu.sregs[ES] = (v >> 16) as u16;
                set16(m, BX, v as u16);
                Done::Ok
            }
            0x30 => {
                let (major, minor) = if self.manifest.machine.windows_version.0 >= 4 { (7, 0) } else { (5, 0) };
                set16(m, AX, ((minor as u16) << 8) | major);
                set16(m, BX, 0xFF00);
                set16(m, CX, 0);
                Done::Ok
            }
            0x3E | 0x42 if handle > 4 => Done::Err(INVALID_HANDLE),
            0x3E => Done::Ok,
            0x42 => {
                set16(m, AX, 0);
                set16(m, DX, 0);
                Done::Ok
            }
            0x3F => match handle {
                0 => {
                    set16(m, AX, 0);
                    Done::Ok
                }
                _ => Done::Err(INVALID_HANDLE),
            },
            0x40 => {
                let count = m.cpu.regs[CX] as u16;
                match handle {
                    1 | 2 => {
                        let bytes = m.mem.read_bytes(m.cpu.sregs[DS], m.cpu.regs[DX] as u16, count as usize);
                        self.v86_output(vm, m, &bytes);
                    }
                    3 | 4 => {}
                    _ => return Done::Err(INVALID_HANDLE),
                }
                set16(m, AX, count);
                Done::Ok
            }
            0x44 => match al {
                _ if handle > 4 && matches!(al, 0x00 | 0x01 | 0x06 | 0x07) => Done::Err(INVALID_HANDLE),
                0x00 => {
                    // Character device; the console is stdin/stdout.
                    let info = match handle {
                        0..=2 => 0x80D3,
                        3 => 0x80C0,
                        _ => 0xA8C0,
                    };
                    set16(m, DX, info);
                    Done::Ok
                }
                0x01 => Done::Ok,
                0x06 => {
                    set_al(m, if handle == 0 { 0x00 } else { 0xFF });
                    Done::Ok
                }
                0x07 => {
                    set_al(m, 0xFF);
                    Done::Ok
                }
                _ => Done::Unknown,
            },
            0x48 => match m.allocate(m.cpu.regs[BX] as u16) {
                Ok(segment) => {
                    set16(m, AX, segment);
                    Done::Ok
                }
                Err(largest) => {
                    set16(m, BX, largest);
                    Done::Err(NOT_ENOUGH_MEMORY)
                }
            },
            0x49 => {
                if m.free(m.cpu.sregs[ES]) {
                    Done::Ok
                } else {
                    Done::Err(INVALID_BLOCK)
                }
            }
            0x4A => match m.resize(m.cpu.sregs[ES], m.cpu.regs[BX] as u16) {
                Ok(()) => Done::Ok,
                Err(Some(most)) => {
                    set16(m, BX, most);
                    Done::Err(NOT_ENOUGH_MEMORY)
                }
                Err(None) => Done::Err(INVALID_BLOCK),
            },
            0x4C => Done::Flow(exit(al as u32)),
            0x51 | 0x62 => {
                set16(m, BX, PSP_SEGMENT);
                Done::Ok
            }
            0x59 => {
                let e = m.last_error;
                set16(m, AX, e);
                set16(m, BX, 0);
                set16(m, CX, 0);
                Done::Ok
            }
            _ => Done::Unknown,
        }
    }
}

/// The BIOS tick count at `ns` of virtual time: 1,193,180 / 65,536 ticks
/// per second since boot, which is midnight; it wraps after a day.
pub(crate) fn bios_ticks(ns: u64) -> u32 {
    (ns as u128 * 1_193_180 / 65_536 / 1_000_000_000 % 0x1800B0) as u32
}

fn exit(code: u32) -> Flow {
    Flow::Step(vmm_plugin_api::abi::Step { kind: StepKind::Exit, value: code }, "exit")
}
