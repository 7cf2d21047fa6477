//! Machine code in a DOS VM, as data: the program image (`.COM`, or MZ
//! `.EXE` with its relocations), the VM's 1 MiB + 64 KiB of memory as the
//! CPU's bus, and the CPU with the program's memory blocks
//! ([`DosMachine`]). The V86 monitor (`v86.rs`) runs it; this file knows
//! nothing of the machine around it.

use vmm_plugin_api::abi::{ClientRegs, Step, StepKind};
use vmm_plugin_api::ddk::CF_MASK;
use vmm_x86::{AX, BP, BX, Bus, CS, CX, Cpu, DI, DS, DX, Delivery, ES, FS, GS, Memory, Model, SI, SP, SS, flags};

use crate::ring3::addresses::V86_API_SEGMENT;

/// Bytes of memory a DOS VM with a machine-code program has: 1 MiB + 64 KiB.
pub(crate) const MEMORY_BYTES: usize = 0x11_0000;
/// The segment of the VMM's interrupt handlers (`F000:n` serves `INT n`).
pub(crate) const HOST_SEGMENT: u16 = 0xF000;
/// `F000:0100+irq`: where the frame of a simulated hardware interrupt
/// returns to, so the VMM sees the handler's `IRET` (VPICD).
pub(crate) const HW_IRET_BASE: u16 = 0x0100;
/// The environment block's segment.
const ENV_SEGMENT: u16 = 0x0FE0;
/// The PSP's segment.
pub(crate) const PSP_SEGMENT: u16 = 0x1000;
/// The first segment past conventional memory.
pub(crate) const MEMORY_TOP: u16 = 0xA000;
/// The largest `.COM` file: the 64 KiB segment less the PSP and a stack word.
pub(crate) const MAX_COM: usize = 0xFF00;
/// The largest program file read at all.
pub(crate) const MAX_FILE: u64 = 0xA_0000;
/// The longest command tail DOS passes (PSP 80h..FFh, with its length and CR).
pub(crate) const MAX_TAIL: usize = 126;

/// A program file, checked and ready to load.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Image {
    /// A `.COM`: the bytes loaded at PSP:0100h.
    Com(Vec<u8>),
    /// An MZ `.EXE`.
    Exe(Exe),
}

/// An MZ `.EXE`'s load module and its header fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Exe {
    /// The load module (the file past the header, up to the image size).
    pub(crate) image: Vec<u8>,
    /// Relocations: (segment, offset) in the load module.
    pub(crate) relocations: Vec<(u16, u16)>,
    /// Initial CS:IP and SS:SP, relative to the load segment.
    pub(crate) cs: u16,
    pub(crate) ip: u16,
    pub(crate) ss: u16,
    pub(crate) sp: u16,
    /// Paragraphs needed past the load module (`e_minalloc`).
    pub(crate) min_alloc: u16,
}

fn word(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

/// Check a program file (`name` for the messages only). A file that starts
/// with `MZ` (or `ZM`) is an `.EXE` whatever its name, as DOS decides;
/// anything else is a `.COM` image. The error says why it cannot run.
pub(crate) fn parse(bytes: &[u8]) -> Result<Image, String> {
    if bytes.is_empty() {
        return Err("the file is empty".into());
    }
    if !(bytes.starts_with(b"MZ") || bytes.starts_with(b"ZM")) {
        if bytes.len() > MAX_COM {
            return Err(format!(
                "the file is {} bytes; a .COM program holds at most {MAX_COM} bytes (one 64 KiB segment less the PSP \
                 and the stack)",
                bytes.len()
            ));
        }
        return Ok(Image::Com(bytes.to_vec()));
    }
    if bytes.len() < 0x1C {
        return Err(format!("bad MZ header: the file is {} bytes, the header alone takes 28", bytes.len()));
    }
    let (last_page, pages, relocs, header_paras) = (word(bytes, 2), word(bytes, 4), word(bytes, 6), word(bytes, 8));
    let min_alloc = word(bytes, 0x0A);
    let (ss, sp, ip, cs, reloc_at) =
        (word(bytes, 0x0E), word(bytes, 0x10), word(bytes, 0x14), word(bytes, 0x16), word(bytes, 0x18));
    if last_page >= 512 {
        return Err(format!("bad MZ header: bytes in the last page is {last_page}, more than a page (512)"));
    }
    if pages == 0 {
        return Err("bad MZ header: the page count is 0".into());
    }
    let image_end = pages as usize * 512 - if last_page == 0 { 0 } else { 512 - last_page as usize };
    if image_end > bytes.len() {
        return Err(format!(
            "bad MZ header: the pages it declares make {image_end} bytes, but the file has only {}",
            bytes.len()
        ));
    }
    let header = header_paras as usize * 16;
    if header < 0x1C || header > image_end {
        return Err(format!(
            "bad MZ header: the header is {header} bytes ({header_paras} paragraphs), outside 28..={image_end} (the \
             image)"
        ));
    }
    let table_end = reloc_at as usize + relocs as usize * 4;
    if relocs > 0 && (reloc_at < 0x1C || table_end > header) {
        return Err(format!(
            "bad MZ header: the relocation table ({relocs} entries at offset {reloc_at:#x}) is not inside the \
             {header}-byte header"
        ));
    }
    let image = bytes[header..image_end].to_vec();
    let relocations: Vec<(u16, u16)> = (0..relocs as usize)
        .map(|i| {
            let at = reloc_at as usize + 4 * i;
            (word(bytes, at + 2), word(bytes, at))
        })
        .collect();
    for (i, &(seg, off)) in relocations.iter().enumerate() {
        let at = seg as usize * 16 + off as usize;
        if at + 2 > image.len() {
            return Err(format!(
                "bad MZ header: relocation {i} ({seg:04X}:{off:04X}) points past the {}-byte load image",
                image.len()
            ));
        }
    }
    let paras = image.len().div_ceil(16) + min_alloc as usize;
    let room = (MEMORY_TOP - PSP_SEGMENT - 0x10) as usize;
    if paras > room {
        return Err(format!(
            "the program needs {} KiB (image and minimum allocation), but a DOS VM has {} KiB free",
            paras * 16 / 1024,
            room * 16 / 1024
        ));
    }
    Ok(Image::Exe(Exe { image, relocations, cs, ip, ss, sp, min_alloc }))
}

/// The VM's memory (the interpreter's [`Memory`]), with the VMM's entry
/// points as its breakpoints: the host's interrupt handlers (`F000:n`) and
/// VxD API entries (`FF00:<ID>`).
pub(crate) struct DosMemory {
    mem: Memory,
}

impl Bus for DosMemory {
    #[inline]
    fn read8(&mut self, addr: u32) -> u8 {
        self.mem.read8(addr)
    }

    #[inline]
    fn write8(&mut self, addr: u32, value: u8) {
        self.mem.write8(addr, value)
    }

    #[inline]
    fn read16(&mut self, addr: u32) -> u16 {
        self.mem.read16(addr)
    }

    #[inline]
    fn write16(&mut self, addr: u32, value: u16) {
        self.mem.write16(addr, value)
    }

    fn is_breakpoint(&self, cs: u16, ip: u16) -> bool {
        (cs == HOST_SEGMENT && ip < HW_IRET_BASE + 16)
            || cs == V86_API_SEGMENT
            || cs == crate::vmm::vectors::V86_CALLBACK_SEGMENT
            || cs == crate::vmm::vectors::RETURN_SEGMENT
            || ((cs as u32) << 16 | ip as u32) == crate::ring3::addresses::NEST_BREAKPOINT
    }
}

impl DosMemory {
    /// Memory of no bytes: what a program's memory leaves behind while the
    /// VMM holds it during a call (`Core::v86_call_vmm`).
    pub(crate) fn empty() -> Self {
        DosMemory { mem: Memory::new(0) }
    }

    /// The byte at linear address `addr` (0 past the end).
    pub(crate) fn byte(&self, addr: u32) -> u8 {
        self.mem.bytes().get(addr as usize).copied().unwrap_or(0)
    }

    /// Write the byte at linear address `addr` (dropped past the end).
    pub(crate) fn set_byte(&mut self, addr: u32, value: u8) {
        if let Some(b) = self.mem.bytes_mut().get_mut(addr as usize) {
            *b = value;
        }
    }

    /// Set the vector table entry of `INT n` (`segment << 16 | offset`).
    pub(crate) fn set_vector(&mut self, n: u8, vector: u32) {
        let a = n as u32 * 4;
        self.set_word(a, vector as u16);
        self.set_word(a + 2, (vector >> 16) as u16);
    }

    pub(crate) fn load(&mut self, addr: u32, data: &[u8]) {
        let a = addr as usize;
        self.mem.bytes_mut()[a..a + data.len()].copy_from_slice(data);
    }

    pub(crate) fn word(&self, addr: u32) -> u16 {
        let (a, b) = (addr as usize, self.mem.bytes());
        u16::from_le_bytes([b[a], b[a + 1]])
    }

    pub(crate) fn set_word(&mut self, addr: u32, v: u16) {
        self.load(addr, &v.to_le_bytes());
    }

    /// The vector table entry of `INT n`, as `segment << 16 | offset`.
    pub(crate) fn vector(&self, n: u8) -> u32 {
        let a = n as u32 * 4;
        ((self.word(a + 2) as u32) << 16) | self.word(a) as u32
    }

    /// Up to `max` bytes at `seg:off` (wrapping in the segment).
    pub(crate) fn read_bytes(&mut self, seg: u16, off: u16, len: usize) -> Vec<u8> {
        (0..len).map(|i| self.read8(((seg as u32) << 4) + off.wrapping_add(i as u16) as u32)).collect()
    }
}

/// A machine-code program's whole state: its CPU, its VM's memory, and what
/// the DOS subset keeps for it.
pub(crate) struct DosMachine {
    pub(crate) cpu: Cpu,
    pub(crate) mem: DosMemory,
    /// The file name, as the trace shows it.
    pub(crate) name: String,
    /// The segment past the program's memory block (INT 21h AH=4Ah).
    pub(crate) block_end: u16,
    /// Blocks allocated with INT 21h AH=48h: (segment, paragraphs), by segment.
    pub(crate) blocks: Vec<(u16, u16)>,
    /// The code of the last failed DOS call (INT 21h AH=59h).
    pub(crate) last_error: u16,
    /// Output not yet ended by a newline.
    pub(crate) line: Vec<u8>,
}

impl DosMachine {
    /// A VM's memory with `image` loaded as DOS would load it, called
    /// `name`, with the command tail `args`.
    pub(crate) fn new(name: &str, path: &str, image: &Image, args: &str) -> Result<DosMachine, String> {
        if args.len() > MAX_TAIL - 1 {
            return Err(format!("the command line is {} characters; DOS passes at most {}", args.len(), MAX_TAIL - 1));
        }
        let mut mem = DosMemory { mem: Memory::new(MEMORY_BYTES) };
        for n in 0..=255u8 {
            mem.set_word(n as u32 * 4, n as u16);
            mem.set_word(n as u32 * 4 + 2, HOST_SEGMENT);
            // IRET, should a near transfer ever reach the handler.
            mem.load(((HOST_SEGMENT as u32) << 4) + n as u32, &[0xCF]);
        }
        mem.load(((HOST_SEGMENT as u32) << 4) + HW_IRET_BASE as u32, &[0xCF; 16]);
        // BIOS data area: 640 KiB of conventional memory.
        mem.set_word(0x413, 640);
        // The environment: one variable, then the program's path.
        let mut env = b"COMSPEC=C:\\COMMAND.COM\0\0\x01\0".to_vec();
        env.extend_from_slice(format!("C:\\{}", path.to_ascii_uppercase()).as_bytes());
        env.push(0);
        env.truncate(((PSP_SEGMENT - ENV_SEGMENT) as usize) * 16);
        mem.load((ENV_SEGMENT as u32) << 4, &env);
        // The PSP.
        let psp = (PSP_SEGMENT as u32) << 4;
        mem.load(psp, &[0xCD, 0x20]);
        mem.set_word(psp + 2, MEMORY_TOP);
        for (at, vector) in [(0x0A, 0x22u8), (0x0E, 0x23), (0x12, 0x24)] {
            let v = mem.vector(vector);
            mem.set_word(psp + at, v as u16);
            mem.set_word(psp + at + 2, (v >> 16) as u16);
        }
        mem.set_word(psp + 0x16, PSP_SEGMENT);
        let mut jft = [0xFFu8; 20];
        jft[..5].copy_from_slice(&[1, 1, 1, 0, 2]);
        mem.load(psp + 0x18, &jft);
        mem.set_word(psp + 0x2C, ENV_SEGMENT);
        mem.set_word(psp + 0x32, 20);
        mem.set_word(psp + 0x34, 0x18);
        mem.set_word(psp + 0x36, PSP_SEGMENT);
        mem.load(psp + 0x50, &[0xCD, 0x21, 0xCB]);
        for fcb in [0x5C, 0x6C] {
            mem.load(psp + fcb + 1, b"           ");
        }
        let tail = if args.is_empty() { String::new() } else { format!(" {args}") };
        mem.load(psp + 0x80, &[tail.len() as u8]);
        mem.load(psp + 0x81, tail.as_bytes());
        mem.load(psp + 0x81 + tail.len() as u32, &[0x0D]);

        let mut cpu = Cpu::new();
        cpu.model = Model::I80386;
        cpu.faults = Delivery::Exit;
        cpu.interrupts = Delivery::Exit;
        // INS/OUTS reach the port table as one access.
        cpu.string_io = true;
        cpu.flags |= flags::IF;
        for s in [ES, DS] {
            cpu.sregs[s] = PSP_SEGMENT;
        }
        match image {
            Image::Com(bytes) => {
                mem.load(psp + 0x100, bytes);
                for s in [CS, SS] {
                    cpu.sregs[s] = PSP_SEGMENT;
                }
                cpu.ip = 0x100;
                // A near RET from the program lands on PSP:0000 (INT 20h).
                cpu.regs[SP] = 0xFFFE;
                mem.set_word(psp + 0xFFFE, 0);
                cpu.regs[CX] = 0x00FF;
            }
            Image::Exe(exe) => {
                let load = PSP_SEGMENT + 0x10;
                let base = (load as u32) << 4;
                mem.load(base, &exe.image);
                for &(seg, off) in &exe.relocations {
                    let at = base + seg as u32 * 16 + off as u32;
                    let v = mem.word(at).wrapping_add(load);
                    mem.set_word(at, v);
                }
                cpu.sregs[CS] = load.wrapping_add(exe.cs);
                cpu.ip = exe.ip;
                cpu.sregs[SS] = load.wrapping_add(exe.ss);
                cpu.regs[SP] = exe.sp as u32;
            }
        }
        Ok(DosMachine {
            cpu,
            mem,
            name: name.to_string(),
            block_end: MEMORY_TOP,
            blocks: Vec::new(),
            last_error: 0,
            line: Vec::new(),
        })
    }
}

/// The program's registers into the client register structure.
pub(crate) fn to_client(cpu: &Cpu, c: &mut ClientRegs) {
    c.eax = cpu.regs[AX];
    c.ecx = cpu.regs[CX];
    c.edx = cpu.regs[DX];
    c.ebx = cpu.regs[BX];
    c.esp = cpu.regs[SP];
    c.ebp = cpu.regs[BP];
    c.esi = cpu.regs[SI];
    c.edi = cpu.regs[DI];
    c.eip = cpu.ip as u32;
    c.eflags = (c.eflags & 0xFFFF_0000) | cpu.flags as u32;
    c.cs = cpu.sregs[CS] as u32;
    c.ss = cpu.sregs[SS] as u32;
    c.ds = cpu.sregs[DS] as u32;
    c.es = cpu.sregs[ES] as u32;
    c.fs = cpu.sregs[FS] as u32;
    c.gs = cpu.sregs[GS] as u32;
}

/// The client register structure into the program's registers (IOPL, NT
/// and bit 15 are the CPU's own).
pub(crate) fn from_client(cpu: &mut Cpu, c: &ClientRegs) {
    cpu.regs = [c.eax, c.ecx, c.edx, c.ebx, c.esp, c.ebp, c.esi, c.edi];
    cpu.ip = c.eip as u16;
    let fixed = flags::RESERVED_ONE;
    cpu.flags = ((c.eflags as u16) & 0x0FD5) | fixed;
    cpu.sregs = [c.es as u16, c.cs as u16, c.ss as u16, c.ds as u16, c.fs as u16, c.gs as u16];
}

/// How a run of the program went on after an exit was handled.
pub(crate) enum Flow {
    /// Run on.
    Go,
    /// End the run and give the scheduler this step.
    Step(Step, &'static str),
    /// The program crashed: end it.
    Crash,
}

/// What a run returns to the ring-3 scheduler.
pub(crate) enum Ran {
    /// Nested execution (`Resume_Exec`) came back to its break point.
    NestReturn,
    /// A step as a Rust module would return it (sleep, yield, exit).
    Step(Step),
    /// The budget ran out: the program is ready to run on.
    Preempted,
    /// The program crashed.
    Crashed,
}

pub(crate) fn step(kind: StepKind, value: u32) -> Step {
    Step { kind, value }
}

/// Return from an interrupt handler the VMM served for a handler of the
/// program's that chained on: pop IP, CS and FLAGS as `IRET` does, keeping
/// the status flags the service set (as DOS returns with `RETF 2`).
pub(crate) fn v86_iret(m: &mut DosMachine) {
    m.cpu.ip = m.cpu.pop(&mut m.mem);
    m.cpu.sregs[CS] = m.cpu.pop(&mut m.mem);
    let popped = m.cpu.pop(&mut m.mem);
    let keep = flags::IF | flags::TF | flags::DF;
    m.cpu.flags = (popped & keep) | (m.cpu.flags & !keep);
}

pub(crate) fn set_carry(cpu: &mut Cpu, on: bool) {
    if on {
        cpu.flags |= CF_MASK as u16;
    } else {
        cpu.flags &= !(CF_MASK as u16);
    }
}

impl DosMachine {
    /// The free paragraphs from `from` up to the next allocated block or the
    /// end of conventional memory (`from` must not be inside a block).
    fn room_at(&self, from: u16, except: Option<u16>) -> u16 {
        let next = self.blocks.iter().filter(|b| Some(b.0) != except && b.0 >= from).map(|b| b.0).min();
        next.unwrap_or(MEMORY_TOP) - from
    }

    /// INT 21h AH=48h: the first free gap of `paras` paragraphs past the
    /// program's block; the largest gap when none is big enough.
    pub(crate) fn allocate(&mut self, paras: u16) -> Result<u16, u16> {
        let mut starts = vec![self.block_end];
        starts.extend(self.blocks.iter().map(|b| b.0 + b.1));
        starts.sort_unstable();
        let mut largest = 0;
        for start in starts {
            if self.blocks.iter().any(|b| start >= b.0 && start < b.0 + b.1) {
                continue;
            }
            let room = self.room_at(start, None);
            if room >= paras && paras > 0 {
                self.blocks.push((start, paras));
                self.blocks.sort_unstable();
                return Ok(start);
            }
            largest = largest.max(room);
        }
        Err(largest)
    }

    /// INT 21h AH=49h.
    pub(crate) fn free(&mut self, segment: u16) -> bool {
        let before = self.blocks.len();
        self.blocks.retain(|b| b.0 != segment);
        self.blocks.len() != before
    }

    /// INT 21h AH=4Ah on the program's block (the PSP) or an allocated one:
    /// the most it can grow to when `paras` does not fit.
    pub(crate) fn resize(&mut self, segment: u16, paras: u16) -> Result<(), Option<u16>> {
        let most = if segment == PSP_SEGMENT {
            self.room_at(PSP_SEGMENT, None)
        } else if self.blocks.iter().any(|b| b.0 == segment) {
            self.room_at(segment, Some(segment))
        } else {
            return Err(None);
        };
        if paras > most {
            return Err(Some(most));
        }
        if segment == PSP_SEGMENT {
            self.block_end = PSP_SEGMENT + paras;
        } else if let Some(b) = self.blocks.iter_mut().find(|b| b.0 == segment) {
            b.1 = paras;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mz(pages: u16, last: u16, header_paras: u16, relocs: &[(u16, u16)], body: &[u8]) -> Vec<u8> {
        let mut h = vec![0u8; header_paras as usize * 16];
        h[0..2].copy_from_slice(b"MZ");
        h[2..4].copy_from_slice(&last.to_le_bytes());
        h[4..6].copy_from_slice(&pages.to_le_bytes());
        h[6..8].copy_from_slice(&(relocs.len() as u16).to_le_bytes());
        h[8..10].copy_from_slice(&header_paras.to_le_bytes());
        h[0x10..0x12].copy_from_slice(&0x100u16.to_le_bytes());
        h[0x18..0x1A].copy_from_slice(&0x1Cu16.to_le_bytes());
        for (i, (seg, off)) in relocs.iter().enumerate() {
            let at = 0x1C + 4 * i;
            h[at..at + 2].copy_from_slice(&off.to_le_bytes());
            h[at + 2..at + 4].copy_from_slice(&seg.to_le_bytes());
        }
        h.extend_from_slice(body);
        h
    }

    #[test]
    fn a_com_is_any_file_without_the_mz_signature() {
        assert_eq!(parse(&[0xC3]).unwrap(), Image::Com(vec![0xC3]));
        assert!(parse(&[]).unwrap_err().contains("empty"));
        let e = parse(&vec![0x90; MAX_COM + 1]).unwrap_err();
        assert!(e.contains("65281 bytes") && e.contains("at most 65280"), "{e}");
    }

    #[test]
    fn an_exe_is_loaded_with_its_relocations() {
        // Header of 2 paragraphs, a 16-byte body with a word to relocate at 0.
        let file = mz(1, 32 + 16, 2, &[(0, 0)], &[0x34, 0x12, 0xC3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        let Image::Exe(exe) = parse(&file).unwrap() else { panic!("not an exe") };
        assert_eq!(exe.image.len(), 16);
        let m = DosMachine::new("T.EXE", "T.EXE", &Image::Exe(exe), "").unwrap();
        let load = PSP_SEGMENT + 0x10;
        assert_eq!(m.mem.word((load as u32) << 4), 0x1234 + load);
        assert_eq!((m.cpu.sregs[CS], m.cpu.ip, m.cpu.sregs[DS]), (load, 0, PSP_SEGMENT));
    }

    #[test]
    fn bad_mz_headers_say_why() {
        let cases: [(Vec<u8>, &str); 5] = [
            (b"MZ\0\0".to_vec(), "the header alone takes 28"),
            (mz(4, 0, 2, &[], &[0; 16]), "only 48"),
            (mz(1, 600, 2, &[], &[0; 16]), "more than a page"),
            (mz(1, 48, 4, &[], &[0; 16]), "outside 28..=48"),
            (mz(1, 48, 2, &[(1, 0)], &[0; 16]), "relocation 0 (0001:0000) points past"),
        ];
        for (file, why) in cases {
            let e = parse(&file).unwrap_err();
            assert!(e.contains(why), "{e:?} should say {why:?}");
        }
    }

    #[test]
    fn dos_memory_blocks_fit_between_the_program_and_the_end_of_memory() {
        let mut m = DosMachine::new("P.COM", "P.COM", &Image::Com(vec![0xC3]), "").unwrap();
        // The program owns everything until it shrinks its block.
        assert_eq!(m.allocate(1), Err(0));
        m.resize(PSP_SEGMENT, 0x1000).unwrap();
        let a = m.allocate(0x100).unwrap();
        assert_eq!(a, PSP_SEGMENT + 0x1000);
        let b = m.allocate(0x100).unwrap();
        assert_eq!(b, a + 0x100);
        // The program's block cannot grow over them; the answer is its room.
        assert_eq!(m.resize(PSP_SEGMENT, 0x2000), Err(Some(0x1000)));
        assert!(m.free(a));
        assert!(!m.free(a));
        // The gap left is reused first fit.
        assert_eq!(m.allocate(0x80), Ok(a));
        assert_eq!(m.resize(b, 0x200), Ok(()));
        assert_eq!(m.resize(0x1234, 1), Err(None));
        let largest = MEMORY_TOP - (b + 0x200);
        assert_eq!(m.allocate(0xFFFF), Err(largest));
    }

    #[test]
    fn the_psp_holds_the_command_tail_and_int_20h() {
        let m = DosMachine::new("P.COM", "P.COM", &Image::Com(vec![0xC3]), "count=3").unwrap();
        let psp = (PSP_SEGMENT as u32) << 4;
        let b = m.mem.mem.bytes();
        assert_eq!(&b[psp as usize..psp as usize + 2], &[0xCD, 0x20]);
        assert_eq!(b[psp as usize + 0x80], 8);
        assert_eq!(&b[psp as usize + 0x81..psp as usize + 0x8A], b" count=3\r");
        assert_eq!((m.cpu.sregs[CS], m.cpu.ip, m.cpu.regs[SP]), (PSP_SEGMENT, 0x100, 0xFFFE));
        assert_eq!(m.mem.vector(0x21), ((HOST_SEGMENT as u32) << 16) | 0x21);
        assert!(DosMachine::new("P.COM", "P.COM", &Image::Com(vec![0xC3]), &"x".repeat(126)).is_err());
    }
}
