//! Checking a plugin file's image before the dynamic loader maps it.
//!
//! The dynamic loader trusts the file it is given: a truncated or damaged
//! shared library makes it fault (SIGBUS on a mapping past the end of the
//! file, SIGSEGV on a wild table pointer) or stop the process with an
//! assertion, and nothing the host does afterwards can help. So the loader
//! hands it only files that pass [`check`]: an ELF64 shared object for the
//! host's machine whose headers, segments and every table the dynamic
//! loader reads while it maps, relocates and initializes the file (dynamic
//! section, symbol, string, hash and version tables, relocations,
//! initializer arrays) lie inside the file and point inside the image.
//!
//! What is not checked: the bytes of code and data themselves. A file
//! damaged there loads, and misbehaves like any buggy plugin.
//!
//! The headers are read with the `object` crate; the tables the dynamic
//! loader reads through the mapped image are read here, by virtual address,
//! the way it reads them.

use object::LittleEndian as LE;
use object::elf;
use object::read::elf::{FileHeader, ProgramHeader, SectionHeader};

/// Why a file is not a plugin the dynamic loader can safely map: a stable
/// code (the `defect` of a `plugin_rejected` record) and a sentence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Defect {
    /// `not_elf`, `wrong_class`, `wrong_endianness`, `wrong_machine`,
    /// `not_a_shared_object`, `bad_header`, `truncated`, `bad_segments`,
    /// `bad_sections`, `no_dynamic_segment`, `bad_dynamic`, `bad_symbols`,
    /// `bad_versions`, `bad_hash_table`, `bad_relocations`, `empty`,
    /// `not_a_regular_file`, `too_large`.
    pub code: &'static str,
    /// What is wrong, for people.
    pub detail: String,
}

impl Defect {
    pub(crate) fn new(code: &'static str, detail: impl Into<String>) -> Self {
        Defect { code, detail: detail.into() }
    }
}

impl std::fmt::Display for Defect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.detail, self.code)
    }
}

/// The machine plugins must be built for: the host's.
#[cfg(target_arch = "x86_64")]
const HOST_MACHINE: u16 = elf::EM_X86_64.0;
#[cfg(target_arch = "aarch64")]
const HOST_MACHINE: u16 = elf::EM_AARCH64.0;
#[cfg(target_arch = "riscv64")]
const HOST_MACHINE: u16 = elf::EM_RISCV.0;

/// Size of one `Elf64_Rela`, `Elf64_Sym` and `Elf64_Dyn`.
const RELA: u64 = 24;
const SYM: u64 = 24;
const DYN: u64 = 16;

/// Bound on the address space an image may span (a damaged size would
/// otherwise ask for terabytes).
const MAX_SPAN: u64 = 1 << 32;

fn machine_name(m: u16) -> String {
    let known = [
        (elf::EM_386.0, "x86 (32-bit)"),
        (elf::EM_X86_64.0, "x86-64"),
        (elf::EM_AARCH64.0, "AArch64"),
        (elf::EM_ARM.0, "ARM (32-bit)"),
        (elf::EM_RISCV.0, "RISC-V"),
        (elf::EM_PPC64.0, "PowerPC64"),
        (elf::EM_S390.0, "S/390"),
        (elf::EM_MIPS.0, "MIPS"),
    ];
    known.iter().find(|(k, _)| *k == m).map(|(_, n)| n.to_string()).unwrap_or_else(|| format!("machine {m}"))
}

/// Check that `data`, a plugin file's bytes, is an image the dynamic
/// loader can map, relocate and initialize without faulting.
pub fn check(data: &[u8]) -> Result<(), Defect> {
    let len = data.len() as u64;
    if data.is_empty() {
        return Err(Defect::new("empty", "the file is empty"));
    }
    if data.len() < 4 || data[..4] != *b"\x7fELF" {
        return Err(Defect::new(
            "not_elf",
            "the file does not start with the ELF magic number: it is not a shared library",
        ));
    }
    if data.len() < 6 {
        return Err(Defect::new("truncated", format!("the file ends inside the ELF header ({len} bytes)")));
    }
    if data[4] != elf::ELFCLASS64.0 {
        return Err(Defect::new(
            "wrong_class",
            format!("a 32-bit ELF file: this host loads 64-bit {} plugins", machine_name(HOST_MACHINE)),
        ));
    }
    if data[5] != elf::ELFDATA2LSB.0 {
        return Err(Defect::new("wrong_endianness", "a big-endian ELF file: this host is little-endian"));
    }
    if data.len() < std::mem::size_of::<elf::FileHeader64<LE>>() {
        return Err(Defect::new("truncated", format!("the file ends inside the ELF header ({len} of 64 bytes)")));
    }
    let header = elf::FileHeader64::<LE>::parse(data).map_err(|e| Defect::new("bad_header", e.to_string()))?;
    let e = LE;
    let machine = header.e_machine(e).0;
    if machine != HOST_MACHINE {
        return Err(Defect::new(
            "wrong_machine",
            format!("built for {}, but this host runs on {}", machine_name(machine), machine_name(HOST_MACHINE)),
        ));
    }
    let kind = header.e_type(e);
    if kind != elf::ET_DYN {
        let what = match kind {
            elf::ET_EXEC => "an executable",
            elf::ET_REL => "an object file (.o)",
            elf::ET_CORE => "a core dump",
            _ => "not a shared object",
        };
        return Err(Defect::new("not_a_shared_object", format!("{what}, not a shared library (ELF type ET_DYN)")));
    }
    if header.e_version(e) != u32::from(elf::EV_CURRENT.0) {
        return Err(Defect::new("bad_header", format!("ELF version {} (expected 1)", header.e_version(e))));
    }
    if usize::from(header.e_ehsize(e)) != std::mem::size_of::<elf::FileHeader64<LE>>() {
        return Err(Defect::new("bad_header", format!("ELF header size {} (expected 64)", header.e_ehsize(e))));
    }

    // Program and section header tables.
    let table_end = |off: u64, n: u64, size: u64| off.checked_add(n.checked_mul(size)?);
    let (phoff, phnum) = (header.e_phoff(e), u64::from(header.e_phnum(e)));
    match table_end(phoff, phnum, 56) {
        Some(end) if end <= len => {}
        _ => {
            return Err(Defect::new(
                "truncated",
                format!(
                    "the program header table ({phnum} entries at {phoff:#x}) extends past the end of the file ({len} bytes)"
                ),
            ));
        }
    }
    let phdrs = header.program_headers(e, data).map_err(|err| Defect::new("bad_segments", err.to_string()))?;
    let (shoff, shnum) = (header.e_shoff(e), u64::from(header.e_shnum(e)));
    if shoff != 0 {
        match table_end(shoff, shnum, 64) {
            Some(end) if end <= len => {}
            _ => {
                return Err(Defect::new(
                    "truncated",
                    format!(
                        "the section header table ({shnum} entries at {shoff:#x}) extends past the end of the file ({len} bytes)"
                    ),
                ));
            }
        }
    }
    let shdrs = header.section_headers(e, data).map_err(|err| Defect::new("bad_sections", err.to_string()))?;
    if !shdrs.is_empty() && u64::from(header.e_shstrndx(e).0) >= shdrs.len() as u64 {
        return Err(Defect::new("bad_sections", "the section name table index is out of range"));
    }
    for (i, s) in shdrs.iter().enumerate() {
        let (off, size) = (s.sh_offset(e), s.sh_size(e));
        let ty = s.sh_type(e);
        if i == 0 || ty == elf::SHT_NOBITS || ty == elf::SHT_NULL {
            continue;
        }
        if off.checked_add(size).is_none_or(|end| end > len) {
            return Err(Defect::new(
                "truncated",
                format!("section {i} (file bytes {off:#x}+{size:#x}) extends past the end of the file ({len} bytes)"),
            ));
        }
    }

    // Segments.
    let image = Image::new(data, phdrs)?;
    image.check_dynamic()
}

/// A loadable segment: where it goes in memory and where its bytes are.
#[derive(Clone, Copy, Debug)]
struct Load {
    vaddr: u64,
    memsz: u64,
    offset: u64,
    filesz: u64,
    flags: u32,
}

impl Load {
    fn contains(&self, addr: u64, size: u64) -> bool {
        addr >= self.vaddr && addr.checked_add(size).is_some_and(|end| end <= self.vaddr + self.memsz)
    }
}

/// The image as the dynamic loader sees it once mapped.
struct Image<'a> {
    data: &'a [u8],
    loads: Vec<Load>,
    dynamic: (u64, u64),
    tls: Option<(u64, u64)>,
}

fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap_or([0; 8]))
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap_or([0; 4]))
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(b[at..at + 2].try_into().unwrap_or([0; 2]))
}

/// The values of the dynamic entries the checks need.
#[derive(Default)]
struct Dynamic {
    needed: Vec<u64>,
    strings: Vec<(&'static str, u64)>,
    addr: std::collections::HashMap<i64, u64>,
    val: std::collections::HashMap<i64, u64>,
}

impl Dynamic {
    fn addr(&self, tag: elf::DynamicTag) -> Option<u64> {
        self.addr.get(&tag.0).copied()
    }
    fn val(&self, tag: elf::DynamicTag) -> Option<u64> {
        self.val.get(&tag.0).copied()
    }
}

impl<'a> Image<'a> {
    fn new(data: &'a [u8], phdrs: &[elf::ProgramHeader64<LE>]) -> Result<Self, Defect> {
        let e = LE;
        let len = data.len() as u64;
        let page = 4096u64;
        let mut loads: Vec<Load> = Vec::new();
        let mut dynamic = None;
        let mut tls = None;
        for (i, p) in phdrs.iter().enumerate() {
            let (ty, off, filesz) = (p.p_type(e), p.p_offset(e), p.p_filesz(e));
            let (vaddr, memsz, align) = (p.p_vaddr(e), p.p_memsz(e), p.p_align(e));
            let bad = |what: String| Err(Defect::new("bad_segments", format!("segment {i}: {what}")));
            if ty == elf::PT_NULL || ty == elf::PT_GNU_STACK {
                continue;
            }
            if off.checked_add(filesz).is_none_or(|end| end > len) {
                return Err(Defect::new(
                    "truncated",
                    format!(
                        "segment {i} (file bytes {off:#x}+{filesz:#x}) extends past the end of the file ({len} bytes)"
                    ),
                ));
            }
            if filesz > memsz {
                return bad(format!("{filesz:#x} bytes in the file but {memsz:#x} in memory"));
            }
            if vaddr.checked_add(memsz).is_none_or(|end| end > MAX_SPAN) {
                return bad(format!("memory range {vaddr:#x}+{memsz:#x} is out of bounds"));
            }
            if ty == elf::PT_DYNAMIC && dynamic.replace((vaddr, memsz)).is_some() {
                return bad("a second dynamic segment".to_string());
            }
            match ty {
                elf::PT_LOAD => {
                    if align > 1 && (!align.is_power_of_two() || align < page || (vaddr % align) != (off % align)) {
                        return bad(format!(
                            "alignment {align:#x} does not fit address {vaddr:#x} and offset {off:#x}"
                        ));
                    }
                    if let Some(prev) = loads.last()
                        && vaddr < prev.vaddr + prev.memsz
                    {
                        return bad("loadable segments overlap or are out of order".to_string());
                    }
                    loads.push(Load { vaddr, memsz, offset: off, filesz, flags: p.p_flags(e).0 });
                }
                elf::PT_TLS => {
                    if align > 1 && !align.is_power_of_two() {
                        return bad(format!("TLS alignment {align:#x} is not a power of two"));
                    }
                    tls = Some((vaddr, memsz));
                }
                _ => {}
            }
        }
        if loads.is_empty() {
            return Err(Defect::new("bad_segments", "no loadable segment"));
        }
        let Some(dynamic) = dynamic else {
            return Err(Defect::new("no_dynamic_segment", "no dynamic segment: the dynamic loader cannot link it"));
        };
        let image = Image { data, loads, dynamic, tls };
        // Segments the loader reads through the mapped image.
        for (i, p) in phdrs.iter().enumerate() {
            let (ty, vaddr, filesz, memsz) = (p.p_type(e), p.p_vaddr(e), p.p_filesz(e), p.p_memsz(e));
            let inside = match ty {
                elf::PT_DYNAMIC | elf::PT_NOTE | elf::PT_GNU_PROPERTY => image.bytes(vaddr, filesz).is_some(),
                elf::PT_TLS | elf::PT_GNU_EH_FRAME | elf::PT_PHDR => {
                    image.bytes(vaddr, filesz).is_some() && image.mapped(vaddr, memsz)
                }
                elf::PT_GNU_RELRO => image.mapped(vaddr, memsz),
                _ => true,
            };
            if !inside {
                return Err(Defect::new(
                    "bad_segments",
                    format!("segment {i} ({vaddr:#x}+{memsz:#x}) lies outside the loadable segments"),
                ));
            }
            if ty == elf::PT_NOTE || ty == elf::PT_GNU_PROPERTY {
                image.check_notes(i, vaddr, filesz)?;
            }
        }
        Ok(image)
    }

    /// `size` bytes at `addr` that come from the file, if they do.
    fn bytes(&self, addr: u64, size: u64) -> Option<&'a [u8]> {
        let l = self.loads.iter().find(|l| addr >= l.vaddr && addr < l.vaddr + l.memsz.max(1))?;
        let rel = addr - l.vaddr;
        if rel.checked_add(size)? > l.filesz {
            return None;
        }
        let start = (l.offset + rel) as usize;
        self.data.get(start..start + size as usize)
    }

    /// Whether `addr..addr+size` is mapped (file bytes or zero fill).
    fn mapped(&self, addr: u64, size: u64) -> bool {
        self.loads.iter().any(|l| l.contains(addr, size))
    }

    fn writable(&self, addr: u64, size: u64) -> bool {
        self.loads.iter().any(|l| l.contains(addr, size) && l.flags & elf::PF_W.0 != 0)
    }

    fn executable(&self, addr: u64) -> bool {
        self.loads.iter().any(|l| l.contains(addr, 1) && l.flags & elf::PF_X.0 != 0)
    }

    /// The image's address range.
    fn span(&self) -> (u64, u64) {
        let last = self.loads[self.loads.len() - 1];
        (self.loads[0].vaddr, last.vaddr + last.memsz)
    }

    fn check_notes(&self, i: usize, vaddr: u64, size: u64) -> Result<(), Defect> {
        let bytes = self.bytes(vaddr, size).unwrap_or_default();
        let mut at = 0usize;
        while at + 12 <= bytes.len() {
            let namesz = le32(bytes, at) as usize;
            let descsz = le32(bytes, at + 4) as usize;
            let next = namesz
                .checked_add(3)
                .map(|n| n & !3)
                .and_then(|n| n.checked_add(descsz.checked_add(3)? & !3))
                .and_then(|n| n.checked_add(at + 12));
            match next {
                Some(n) if n <= bytes.len() => at = n,
                _ => {
                    return Err(Defect::new(
                        "bad_segments",
                        format!("segment {i}: a note runs past the segment's end"),
                    ));
                }
            }
        }
        Ok(())
    }

    fn check_dynamic(&self) -> Result<(), Defect> {
        let bad = |code: &'static str, what: String| Err(Defect::new(code, what));
        let (vaddr, size) = self.dynamic;
        let Some(raw) = self.bytes(vaddr, size) else {
            return bad("bad_dynamic", "the dynamic segment is not in the file".to_string());
        };
        let mut d = Dynamic::default();
        let mut ended = false;
        for entry in raw.chunks_exact(DYN as usize) {
            let (tag, value) = (le64(entry, 0) as i64, le64(entry, 8));
            if tag == elf::DT_NULL.0 {
                ended = true;
                break;
            }
            let t = elf::DynamicTag(tag);
            match t {
                elf::DT_NEEDED => d.needed.push(value),
                elf::DT_SONAME => d.strings.push(("DT_SONAME", value)),
                elf::DT_RPATH => d.strings.push(("DT_RPATH", value)),
                elf::DT_RUNPATH => d.strings.push(("DT_RUNPATH", value)),
                elf::DT_STRTAB
                | elf::DT_SYMTAB
                | elf::DT_RELA
                | elf::DT_JMPREL
                | elf::DT_HASH
                | elf::DT_GNU_HASH
                | elf::DT_VERSYM
                | elf::DT_VERNEED
                | elf::DT_VERDEF
                | elf::DT_INIT
                | elf::DT_FINI
                | elf::DT_INIT_ARRAY
                | elf::DT_FINI_ARRAY
                | elf::DT_PREINIT_ARRAY
                | elf::DT_RELR
                | elf::DT_REL => {
                    d.addr.insert(tag, value);
                }
                _ => {
                    d.val.insert(tag, value);
                }
            }
        }
        if !ended {
            return bad("bad_dynamic", "the dynamic section has no DT_NULL end marker".to_string());
        }
        let entry = |tag: elf::DynamicTag, name: &str| -> Result<u64, Defect> {
            d.addr(tag).ok_or_else(|| Defect::new("bad_dynamic", format!("no {name} entry in the dynamic section")))
        };
        if d.addr(elf::DT_REL).is_some() || d.val(elf::DT_RELSZ).is_some() {
            return bad("bad_dynamic", "DT_REL relocations: this machine uses RELA relocations only".to_string());
        }
        if d.val(elf::DT_TEXTREL).is_some() {
            return bad("bad_dynamic", "text relocations (DT_TEXTREL) are not supported".to_string());
        }
        if d.addr(elf::DT_PREINIT_ARRAY).is_some() {
            return bad("bad_dynamic", "a shared library cannot have DT_PREINIT_ARRAY".to_string());
        }
        for (tag, name, want) in [
            (elf::DT_RELAENT, "DT_RELAENT", RELA),
            (elf::DT_SYMENT, "DT_SYMENT", SYM),
            (elf::DT_RELRENT, "DT_RELRENT", 8),
            (elf::DT_PLTREL, "DT_PLTREL", elf::DT_RELA.0 as u64),
        ] {
            if let Some(v) = d.val(tag)
                && v != want
            {
                return bad("bad_dynamic", format!("{name} is {v} (expected {want})"));
            }
        }

        // Strings.
        let strtab = entry(elf::DT_STRTAB, "DT_STRTAB")?;
        let strsz = d.val(elf::DT_STRSZ).unwrap_or(0);
        let Some(strings) = self.bytes(strtab, strsz).filter(|s| s.last() == Some(&0)) else {
            return bad(
                "bad_dynamic",
                format!("the string table ({strtab:#x}+{strsz:#x}) is not in the file or not terminated"),
            );
        };
        let string = |off: u64| -> Option<&[u8]> {
            let s = strings.get(off as usize..)?;
            s.iter().position(|&b| b == 0).map(|n| &s[..n])
        };
        for (name, off) in d.strings.iter().copied().chain(d.needed.iter().map(|&o| ("DT_NEEDED", o))) {
            if string(off).is_none() {
                return bad(
                    "bad_dynamic",
                    format!("{name} names string {off:#x}, past the string table ({strsz:#x} bytes)"),
                );
            }
        }
        let needed: Vec<&[u8]> = d.needed.iter().filter_map(|&o| string(o)).collect();

        // Symbols: their number comes from the hash table, as for the loader.
        let nsyms = self.check_hash(&d)?;
        let symtab = entry(elf::DT_SYMTAB, "DT_SYMTAB")?;
        let Some(syms) = self.bytes(symtab, nsyms * SYM) else {
            return bad("bad_symbols", format!("the symbol table ({nsyms} symbols at {symtab:#x}) is not in the file"));
        };
        let (lo, hi) = self.span();
        for (i, sym) in syms.chunks_exact(SYM as usize).enumerate() {
            let name = u64::from(le32(sym, 0));
            let info = sym[4];
            let shndx = le16(sym, 6);
            let value = le64(sym, 8);
            if string(name).is_none() {
                return bad("bad_symbols", format!("symbol {i}'s name is past the string table"));
            }
            let defined = shndx != elf::SHN_UNDEF.0 && shndx != elf::SHN_ABS.0;
            if !defined || i == 0 {
                continue;
            }
            let in_range = if info & 0xF == elf::STT_TLS.0 {
                self.tls.is_some_and(|(_, size)| value <= size)
            } else {
                value >= lo && value <= hi
            };
            if !in_range {
                return bad("bad_symbols", format!("symbol {i} has value {value:#x}, outside the image"));
            }
        }

        // Versions.
        let max_version = self.check_versions(&d, &string, &needed)?;
        if let Some(versym) = d.addr(elf::DT_VERSYM) {
            let Some(v) = self.bytes(versym, nsyms * 2) else {
                return bad("bad_versions", format!("the symbol version table at {versym:#x} is not in the file"));
            };
            for (i, ix) in v.chunks_exact(2).enumerate() {
                let ix = le16(ix, 0) & 0x7FFF;
                if ix > max_version.max(1) {
                    return bad("bad_versions", format!("symbol {i} has version index {ix}, which is not defined"));
                }
            }
        }

        // Relocations.
        self.check_relocations(&d, nsyms)?;

        // Initializers and finalizers.
        for (tag, name) in [(elf::DT_INIT, "DT_INIT"), (elf::DT_FINI, "DT_FINI")] {
            if let Some(a) = d.addr(tag)
                && !self.executable(a)
            {
                return bad("bad_dynamic", format!("{name} {a:#x} is not in an executable segment"));
            }
        }
        Ok(())
    }

    /// The number of dynamic symbols, from DT_GNU_HASH or DT_HASH, each
    /// checked so that a lookup stays inside it.
    fn check_hash(&self, d: &Dynamic) -> Result<u64, Defect> {
        let bad = |what: String| Err(Defect::new("bad_hash_table", what));
        if let Some(at) = d.addr(elf::DT_GNU_HASH) {
            let Some(h) = self.bytes(at, 16) else {
                return bad(format!("the GNU hash table at {at:#x} is not in the file"));
            };
            let (nbuckets, symoffset, nbloom, shift) =
                (u64::from(le32(h, 0)), u64::from(le32(h, 4)), u64::from(le32(h, 8)), le32(h, 12));
            if nbuckets == 0 || nbloom == 0 || !nbloom.is_power_of_two() || shift >= 64 {
                return bad(format!(
                    "the GNU hash table header is invalid ({nbuckets} buckets, {nbloom} bloom words, shift {shift})"
                ));
            }
            let buckets_at = at + 16 + nbloom * 8;
            let Some(buckets) = self.bytes(buckets_at, nbuckets * 4) else {
                return bad("the GNU hash table's buckets are not in the file".to_string());
            };
            let chains_at = buckets_at + nbuckets * 4;
            let mut nsyms = symoffset;
            for b in buckets.chunks_exact(4) {
                let first = u64::from(le32(b, 0));
                if first == 0 {
                    continue;
                }
                if first < symoffset {
                    return bad(format!(
                        "a GNU hash bucket starts at symbol {first}, below its first hashed symbol {symoffset}"
                    ));
                }
                let mut i = first;
                loop {
                    let Some(c) = self.bytes(chains_at + (i - symoffset) * 4, 4) else {
                        return bad(format!("the GNU hash chain of symbol {i} runs past the file"));
                    };
                    if le32(c, 0) & 1 == 1 {
                        break;
                    }
                    i += 1;
                }
                nsyms = nsyms.max(i + 1);
            }
            return Ok(nsyms);
        }
        if let Some(at) = d.addr(elf::DT_HASH) {
            let Some(h) = self.bytes(at, 8) else {
                return bad(format!("the hash table at {at:#x} is not in the file"));
            };
            let (nbucket, nchain) = (u64::from(le32(h, 0)), u64::from(le32(h, 4)));
            let Some(words) = self.bytes(at + 8, (nbucket + nchain) * 4).filter(|_| nbucket > 0) else {
                return bad("the hash table's buckets or chains are not in the file".to_string());
            };
            if words.chunks_exact(4).any(|w| u64::from(le32(w, 0)) >= nchain) {
                return bad("a hash table entry names a symbol past the table".to_string());
            }
            return Ok(nchain);
        }
        bad("no symbol hash table (DT_GNU_HASH or DT_HASH)".to_string())
    }

    /// Version needs and definitions; the highest version index defined.
    fn check_versions<'s>(
        &self,
        d: &Dynamic,
        string: &dyn Fn(u64) -> Option<&'s [u8]>,
        needed: &[&[u8]],
    ) -> Result<u16, Defect> {
        let bad = |what: String| Err(Defect::new("bad_versions", what));
        let mut max = 1u16;
        if let Some(mut at) = d.addr(elf::DT_VERNEED) {
            let count = d.val(elf::DT_VERNEEDNUM).unwrap_or(0);
            for n in 0..count {
                let Some(v) = self.bytes(at, 16) else {
                    return bad(format!("version need {n} at {at:#x} is not in the file"));
                };
                let (version, cnt, file, aux, next) =
                    (le16(v, 0), le16(v, 2), u64::from(le32(v, 4)), u64::from(le32(v, 8)), u64::from(le32(v, 12)));
                if version != 1 {
                    return bad(format!("version need {n} has version {version} (expected 1)"));
                }
                match string(file) {
                    Some(name) if needed.contains(&name) => {}
                    Some(name) => {
                        return bad(format!(
                            "version need {n} is for {}, which is not a needed library",
                            String::from_utf8_lossy(name)
                        ));
                    }
                    None => return bad(format!("version need {n}'s file name is past the string table")),
                }
                let mut a = at + aux;
                for k in 0..cnt {
                    let Some(x) = self.bytes(a, 16) else {
                        return bad(format!("version need {n}, entry {k} is not in the file"));
                    };
                    if string(u64::from(le32(x, 8))).is_none() {
                        return bad(format!("version need {n}, entry {k}: its name is past the string table"));
                    }
                    max = max.max(le16(x, 6) & 0x7FFF);
                    a += u64::from(le32(x, 12));
                }
                if next == 0 && n + 1 < count {
                    return bad(format!("DT_VERNEEDNUM is {count}, but the list ends after {}", n + 1));
                }
                at += next;
            }
        }
        if let Some(mut at) = d.addr(elf::DT_VERDEF) {
            let count = d.val(elf::DT_VERDEFNUM).unwrap_or(0);
            for n in 0..count {
                let Some(v) = self.bytes(at, 20) else {
                    return bad(format!("version definition {n} at {at:#x} is not in the file"));
                };
                let (version, ndx, cnt, aux, next) =
                    (le16(v, 0), le16(v, 4), le16(v, 6), u64::from(le32(v, 12)), u64::from(le32(v, 16)));
                if version != 1 {
                    return bad(format!("version definition {n} has version {version} (expected 1)"));
                }
                max = max.max(ndx & 0x7FFF);
                let mut a = at + aux;
                for k in 0..cnt {
                    let Some(x) = self.bytes(a, 8) else {
                        return bad(format!("version definition {n}, name {k} is not in the file"));
                    };
                    if string(u64::from(le32(x, 0))).is_none() {
                        return bad(format!("version definition {n}, name {k} is past the string table"));
                    }
                    a += u64::from(le32(x, 4));
                }
                if next == 0 && n + 1 < count {
                    return bad(format!("DT_VERDEFNUM is {count}, but the list ends after {}", n + 1));
                }
                at += next;
            }
        }
        Ok(max)
    }

    fn check_relocations(&self, d: &Dynamic, nsyms: u64) -> Result<(), Defect> {
        let bad = |what: String| Err(Defect::new("bad_relocations", what));
        let (lo, hi) = self.span();
        let arrays: Vec<(u64, u64)> = [
            (d.addr(elf::DT_INIT_ARRAY), d.val(elf::DT_INIT_ARRAYSZ)),
            (d.addr(elf::DT_FINI_ARRAY), d.val(elf::DT_FINI_ARRAYSZ)),
        ]
        .into_iter()
        .filter_map(|(a, s)| Some((a?, s.unwrap_or(0))))
        .collect();
        for &(at, size) in &arrays {
            if !size.is_multiple_of(8) || !self.writable(at, size) {
                return bad(format!("the initializer array at {at:#x}+{size:#x} is not in a writable segment"));
            }
        }
        // Each initializer slot must be filled by a relocation that points
        // into code.
        let mut slots: Vec<(u64, bool)> =
            arrays.iter().flat_map(|&(at, size)| (0..size / 8).map(move |k| (at + k * 8, false))).collect();
        let tables = [
            ("DT_RELA", d.addr(elf::DT_RELA), d.val(elf::DT_RELASZ)),
            ("DT_JMPREL", d.addr(elf::DT_JMPREL), d.val(elf::DT_PLTRELSZ)),
        ];
        for (name, at, size) in tables {
            let Some(at) = at else { continue };
            let size = size.unwrap_or(0);
            if !size.is_multiple_of(RELA) {
                return bad(format!("{name}'s size {size:#x} is not a multiple of {RELA}"));
            }
            let Some(relocs) = self.bytes(at, size) else {
                return bad(format!("the {name} relocations ({at:#x}+{size:#x}) are not in the file"));
            };
            let count = d.val(elf::DT_RELACOUNT).unwrap_or(0);
            let mut last_relative = 0u64;
            for (i, r) in relocs.chunks_exact(RELA as usize).enumerate() {
                let (offset, info, addend) = (le64(r, 0), le64(r, 8), le64(r, 16));
                let (ty, sym) = ((info & 0xFFFF_FFFF) as u32, info >> 32);
                // The loader applies the first DT_RELACOUNT ones as relative
                // relocations (and stops if one is not).
                let relative = ty == elf::R_X86_64_RELATIVE.0;
                if name == "DT_RELA" && (i as u64) < count && !relative {
                    return bad(format!(
                        "DT_RELACOUNT says the first {count} relocations are relative, but relocation {i} has type {ty}"
                    ));
                }
                if !offset.is_multiple_of(8) {
                    return bad(format!("{name} relocation {i} writes to {offset:#x}, which is not 8-byte aligned"));
                }
                // Linkers sort the relative relocations by address; a
                // damaged address breaks the order (and would leave the
                // slot it was meant for unrelocated).
                if relative && (i as u64) < count {
                    if offset <= last_relative {
                        return bad(format!(
                            "{name} relocation {i} writes to {offset:#x}, out of the address order of the relative relocations"
                        ));
                    }
                    last_relative = offset;
                }
                if !self.writable(offset, 8) {
                    return bad(format!("{name} relocation {i} writes to {offset:#x}, outside the writable segments"));
                }
                if sym >= nsyms {
                    return bad(format!("{name} relocation {i} names symbol {sym}, past the {nsyms} symbols"));
                }
                if relative && (addend < lo || addend > hi) {
                    return bad(format!("{name} relocation {i} points at {addend:#x}, outside the image"));
                }
                check_relocation_type(name, i, ty, relative, addend, self)?;
                if let Some(slot) = slots.iter_mut().find(|(a, _)| *a == offset) {
                    slot.1 = !relative || self.executable(addend);
                }
            }
        }
        if let Some(at) = d.addr(elf::DT_RELR) {
            let size = d.val(elf::DT_RELRSZ).unwrap_or(0);
            let Some(words) = self.bytes(at, size).filter(|_| size.is_multiple_of(8)) else {
                return bad(format!("the DT_RELR relocations ({at:#x}+{size:#x}) are not in the file"));
            };
            // Each relocated word holds its target in the file.
            let mut relocate = |target: u64| -> Result<(), Defect> {
                let value = self.bytes(target, 8).map(|b| le64(b, 0));
                match value {
                    Some(v) if self.writable(target, 8) && v >= lo && v <= hi => {
                        if let Some(slot) = slots.iter_mut().find(|(a, _)| *a == target) {
                            slot.1 = self.executable(v);
                        }
                        Ok(())
                    }
                    _ => Err(Defect::new(
                        "bad_relocations",
                        format!(
                            "a DT_RELR relocation of {target:#x} writes outside the writable segments or points outside the image"
                        ),
                    )),
                }
            };
            let mut base = 0u64;
            for w in words.chunks_exact(8) {
                let w = le64(w, 0);
                if w & 1 == 0 {
                    relocate(w)?;
                    base = w + 8;
                } else {
                    for bit in 1..64 {
                        if w >> bit & 1 == 1 {
                            relocate(base + (bit - 1) * 8)?;
                        }
                    }
                    base += 63 * 8;
                }
            }
        }
        if let Some(&(slot, _)) = slots.iter().find(|(_, ok)| !ok) {
            return bad(format!("the initializer at {slot:#x} is not relocated to code"));
        }
        Ok(())
    }
}

/// The relocation types the dynamic loader applies in a shared library.
#[cfg(target_arch = "x86_64")]
fn check_relocation_type(
    name: &str,
    i: usize,
    ty: u32,
    relative: bool,
    addend: u64,
    image: &Image,
) -> Result<(), Defect> {
    let known = [
        elf::R_X86_64_NONE.0,
        elf::R_X86_64_64.0,
        elf::R_X86_64_PC32.0,
        elf::R_X86_64_GLOB_DAT.0,
        elf::R_X86_64_JUMP_SLOT.0,
        elf::R_X86_64_RELATIVE.0,
        elf::R_X86_64_32.0,
        elf::R_X86_64_DTPMOD64.0,
        elf::R_X86_64_DTPOFF64.0,
        elf::R_X86_64_TPOFF64.0,
        elf::R_X86_64_SIZE64.0,
        elf::R_X86_64_TLSDESC.0,
        elf::R_X86_64_IRELATIVE.0,
    ];
    if !relative && !known.contains(&ty) {
        return Err(Defect::new("bad_relocations", format!("{name} relocation {i} has unknown type {ty}")));
    }
    if ty == elf::R_X86_64_IRELATIVE.0 && !image.executable(addend) {
        return Err(Defect::new(
            "bad_relocations",
            format!("{name} relocation {i} calls {addend:#x}, which is not code"),
        ));
    }
    Ok(())
}

#[cfg(not(target_arch = "x86_64"))]
fn check_relocation_type(_: &str, _: usize, _: u32, _: bool, _: u64, _: &Image) -> Result<(), Defect> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vmm::rng::Rng;

    /// This test binary: an ELF shared object of this machine (a
    /// position-independent executable), with every table a plugin has.
    fn sample() -> Vec<u8> {
        std::fs::read(std::env::current_exe().unwrap()).unwrap()
    }

    #[test]
    fn an_intact_image_passes() {
        assert_eq!(check(&sample()), Ok(()));
    }

    #[test]
    fn headers_that_are_not_elf_for_this_machine_are_named() {
        let good = sample();
        let code = |edit: &dyn Fn(&mut Vec<u8>)| {
            let mut b = good[..4096].to_vec();
            edit(&mut b);
            check(&b).unwrap_err().code
        };
        assert_eq!(check(&[]).unwrap_err().code, "empty");
        assert_eq!(code(&|b| b[0] = b'M'), "not_elf");
        assert_eq!(code(&|b| b[4] = 1), "wrong_class");
        assert_eq!(code(&|b| b[5] = 2), "wrong_endianness");
        assert_eq!(code(&|b| b[18] ^= 0x40), "wrong_machine");
        assert_eq!(code(&|b| b[16] = 1), "not_a_shared_object");
        assert_eq!(check(&good[..40]).unwrap_err().code, "truncated");
        assert_eq!(check(&good[..good.len() / 2]).unwrap_err().code, "truncated");
    }

    #[test]
    fn damaged_images_are_refused_or_accepted_but_never_panic() {
        // Seeded damage of every kind the fault-injection tests use, many
        // times: the check must answer, whatever the bytes.
        let mut data = sample();
        let len = data.len();
        let mut rng = Rng::new(0x1A2B_3C4D);
        let (mut refused, mut tries) = (0, 0);
        for round in 0..300 {
            tries += 1;
            match round % 3 {
                0 => refused += usize::from(check(&data[..rng.below(len)]).is_err()),
                1 => {
                    // A few flipped bits in the first megabyte (headers and
                    // the dynamic-linking tables), undone afterwards.
                    let span = len.min(1 << 20);
                    let flips: Vec<(usize, u8)> =
                        (0..=rng.below(4)).map(|_| (rng.below(span), 1 << rng.below(8))).collect();
                    for &(at, bit) in &flips {
                        data[at] ^= bit;
                    }
                    refused += usize::from(check(&data).is_err());
                    for &(at, bit) in flips.iter().rev() {
                        data[at] ^= bit;
                    }
                }
                _ => {
                    // A random header field.
                    let at = rng.below(64 + 56 * 12);
                    let old = data[at];
                    data[at] = rng.next_u64() as u8;
                    refused += usize::from(check(&data).is_err());
                    data[at] = old;
                }
            }
        }
        assert_eq!(check(&data), Ok(()), "the damage was undone");
        assert!(refused > tries / 3, "{refused} of {tries} refused");
    }
}
