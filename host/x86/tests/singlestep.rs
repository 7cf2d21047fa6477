//! The interpreter against the SingleStepTests 80286 real-mode suite:
//! 65,000 single-instruction tests captured on a real 80C286 (see
//! `tests/data/80286-real-mode/README.md`).
//!
//! Every test runs from its initial state until the `HLT` placed after the
//! instruction, with faults and software interrupts delivered through the
//! vector table; registers, flags (less the flags the processor leaves
//! undefined, see [`undefined_flags`]) and every byte of memory written must
//! match the captured final state. The test prints the pass rate per form and
//! fails if a test not in [`KNOWN_FAILURES`] fails, or if one in it passes.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use flate2::read::GzDecoder;
use serde::Deserialize;
use vmm_x86::{Bus, Cpu, Delivery, ExitReason, flags};

/// Tests that fail on purpose: `(form, hash)`. Kept in step with the crate
/// docs' exception list.
const KNOWN_FAILURES: &[(&str, &str)] = &[];

#[derive(Deserialize)]
struct Test {
    name: String,
    bytes: Vec<u8>,
    initial: State,
    #[serde(rename = "final")]
    fin: State,
    exception: Option<Exception>,
    hash: String,
}

#[derive(Deserialize)]
struct State {
    regs: BTreeMap<String, u16>,
    ram: Vec<(u32, u8)>,
}

#[derive(Deserialize)]
struct Exception {}

/// 16 MB of RAM that remembers what was written, so one buffer serves all
/// tests and unexpected writes are caught.
struct TestBus {
    ram: Vec<u8>,
    written: Vec<u32>,
}

impl Bus for TestBus {
    fn read8(&mut self, addr: u32) -> u8 {
        self.ram[(addr & 0xFF_FFFF) as usize]
    }
    fn write8(&mut self, addr: u32, value: u8) {
        let a = addr & 0xFF_FFFF;
        self.written.push(a);
        self.ram[a as usize] = value;
    }
}

const REG_NAMES: [&str; 8] = ["ax", "cx", "dx", "bx", "sp", "bp", "si", "di"];
const SREG_NAMES: [&str; 4] = ["es", "cs", "ss", "ds"];

/// Flags the processor leaves undefined after the instruction of `form`
/// (Intel's 80286 reference), which the comparison ignores.
fn undefined_flags(form: &str, t: &Test) -> u16 {
    use flags::{AF, CF, OF, PF, SF, ZF};
    let (op, sub) = form.split_once('.').unwrap_or((form, ""));
    match op {
        "27" | "2F" => OF,
        "37" | "3F" => OF | SF | ZF | PF,
        "D4" | "D5" => OF | AF | CF,
        "69" | "6B" => SF | ZF | AF | PF,
        "F6" | "F7" if sub == "4" || sub == "5" => SF | ZF | AF | PF,
        "F6" | "F7" if sub == "6" || sub == "7" => OF | SF | ZF | AF | PF | CF,
        "C0" | "C1" | "D0" | "D1" | "D2" | "D3" => {
            let count = match op {
                "D0" | "D1" => 1,
                "D2" | "D3" => t.initial.regs["cx"] as u8,
                // The count byte is the last before the HLT.
                _ => t.bytes[t.bytes.len() - 2],
            } & 0x1F;
            let shift = sub >= "4";
            match count {
                0 => 0,
                1 if shift => AF,
                1 => 0,
                _ if shift => AF | OF,
                _ => OF,
            }
        }
        _ => 0,
    }
}

/// Runs one test; `Err` describes the first difference.
fn check(form: &str, t: &Test, bus: &mut TestBus) -> Result<(), String> {
    for &a in &bus.written {
        bus.ram[a as usize] = 0;
    }
    bus.written.clear();
    for &(a, v) in &t.initial.ram {
        bus.ram[a as usize] = v;
    }
    let reg = |n: &str| t.initial.regs[n];
    let mut cpu = Cpu::new();
    for (i, n) in REG_NAMES.iter().enumerate() {
        cpu.regs[i] = u32::from(reg(n));
    }
    for (i, n) in SREG_NAMES.iter().enumerate() {
        cpu.sregs[i] = reg(n);
    }
    cpu.ip = reg("ip");
    cpu.flags = (reg("flags") & flags::WRITABLE) | flags::RESERVED_ONE;
    cpu.faults = Delivery::Deliver;
    cpu.interrupts = Delivery::Deliver;

    let mut steps = 0;
    loop {
        let exit = cpu.run(bus, 1000);
        steps += exit.instructions;
        match exit.reason {
            ExitReason::Halt => break,
            ExitReason::In { .. } => cpu.complete_in(0xFFFF),
            ExitReason::Out { .. } | ExitReason::InterruptFlag { .. } => {}
            other => return Err(format!("stopped with {other:?} after {steps} instructions")),
        }
        if steps > 100_000 {
            return Err("no HLT".into());
        }
    }

    let undefined = undefined_flags(form, t);
    let want = |n: &str| t.fin.regs.get(n).copied().unwrap_or_else(|| reg(n));
    let mut diffs = Vec::new();
    // All 32 bits of a register: the 80286 must not touch the high half.
    let got_regs = REG_NAMES.iter().zip(cpu.regs);
    let got_sregs = SREG_NAMES.iter().zip(cpu.sregs.map(u32::from));
    for (n, got) in got_regs.chain(got_sregs).chain([(&"ip", u32::from(cpu.ip))]) {
        if got != u32::from(want(n)) {
            diffs.push(format!("{n} {got:04X} want {:04X}", want(n)));
        }
    }
    let want_flags = if t.fin.regs.contains_key("flags") {
        want("flags")
    } else {
        (reg("flags") & flags::WRITABLE) | flags::RESERVED_ONE
    };
    if (cpu.flags ^ want_flags) & !undefined != 0 {
        diffs.push(format!("flags {:04X} want {want_flags:04X}", cpu.flags));
    }
    let mut expected: BTreeMap<u32, u8> = BTreeMap::new();
    for &(a, _) in &t.initial.ram {
        expected.insert(a, bus_initial(t, a));
    }
    for &(a, v) in &t.fin.ram {
        expected.insert(a, v);
    }
    let mut touched: Vec<u32> = bus.written.clone();
    touched.extend(expected.keys());
    touched.sort_unstable();
    touched.dedup();
    // Where the exception pushed FLAGS: the suite's `flag_address` is one
    // byte short when SP was odd, so take it from the final SS:SP.
    let flag_bytes = t.exception.as_ref().map(|_| {
        let (ss, sp) = (u32::from(want("ss")), want("sp"));
        (ss << 4) + u32::from(sp.wrapping_add(4))
    });
    for a in touched {
        let want = expected.get(&a).copied().unwrap_or(0);
        let got = bus.ram[a as usize];
        let ignore = match flag_bytes {
            Some(f) if a == f => undefined as u8,
            Some(f) if a == f + 1 => (undefined >> 8) as u8,
            _ => 0,
        };
        if (got ^ want) & !ignore != 0 {
            diffs.push(format!("[{a:06X}] {got:02X} want {want:02X}"));
        }
    }
    if diffs.is_empty() { Ok(()) } else { Err(diffs.join(", ")) }
}

fn bus_initial(t: &Test, a: u32) -> u8 {
    t.initial.ram.iter().rev().find(|&&(x, _)| x == a).map_or(0, |&(_, v)| v)
}

#[test]
fn singlestep_80286_real_mode() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/80286-real-mode");
    let mut forms: Vec<_> = std::fs::read_dir(&dir)
        .expect("test data folder")
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            Some(name.strip_suffix(".jsonl.gz")?.to_owned())
        })
        .collect();
    forms.sort();
    assert_eq!(forms.len(), 325, "the suite has 325 forms");
    let only = std::env::var("X86_FORM").ok();
    let verbose = std::env::var("X86_VERBOSE").is_ok();

    let mut bus = TestBus { ram: vec![0; 1 << 24], written: Vec::new() };
    let (mut total, mut passed) = (0, 0);
    let mut unexpected = Vec::new();
    let mut report = String::new();
    for form in &forms {
        if only.as_ref().is_some_and(|o| o != form) {
            continue;
        }
        let file = File::open(dir.join(format!("{form}.jsonl.gz"))).expect("open form");
        let (mut n, mut ok) = (0, 0);
        for line in BufReader::new(GzDecoder::new(file)).lines() {
            let line = line.expect("read line");
            let t: Test = serde_json::from_str(&line).expect("parse test");
            let known = KNOWN_FAILURES.contains(&(form.as_str(), t.hash.as_str()));
            let result = check(form, &t, &mut bus);
            n += 1;
            match (&result, known) {
                (Ok(()), false) => ok += 1,
                (Err(_), true) => {}
                (Ok(()), true) => unexpected.push(format!("{form} {} ({}): passes but is listed", t.name, t.hash)),
                (Err(e), false) => {
                    if verbose || unexpected.len() < 40 {
                        unexpected.push(format!("{form} {} ({}): {e}", t.name, t.hash));
                    } else {
                        unexpected.push(String::new());
                    }
                }
            }
        }
        total += n;
        passed += ok;
        report.push_str(&format!("{form:>6} {ok:>4}/{n:<4}{}", if ok == n { "\n" } else { "  <--\n" }));
    }
    println!("{report}passed {passed} of {total}");
    let shown: Vec<_> = unexpected.iter().filter(|s| !s.is_empty()).collect();
    assert!(
        unexpected.is_empty(),
        "{} unexpected results:\n{}",
        unexpected.len(),
        shown.iter().map(|s| s.as_str()).collect::<Vec<_>>().join("\n")
    );
}
