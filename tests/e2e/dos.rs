//! Real DOS programs in DOS VMs: machine code run by the V86 monitor.
//! POSTDOS.COM (C, built here with `bcc -Md`) posts through VPOSTD to
//! POSTAPP; DOSASM.COM (nasm) does port I/O and installs interrupt
//! handlers; small programs written out byte by byte check the DOS
//! subset, virtual time, the step budget, MZ loading and the errors of
//! `[[vm]] program`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use vmm_testkit::{Scenario, Trace, json};

const WM_VPOSTD: u64 = 0x0500;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

fn tool(program: &str, args: &[&str], dir: &Path) {
    let out = Command::new(program).args(args).current_dir(dir).output().unwrap_or_else(|e| {
        panic!(
            "cannot run `{program}` ({e}): the DOS program tests need bcc, bin86, elks-libc and nasm \
             (`apt-get install bcc bin86 elks-libc nasm`; .ci/run installs them)"
        )
    });
    assert!(
        out.status.success(),
        "`{program} {}` failed:\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The directory holding POSTDOS.COM (from plugins/postdos-c/postdos.c,
/// `bcc -Md`), DOSASM.COM (from plugins/dosasm/dosasm.asm, nasm) and
/// COMTERM.COM (plugins/comterm/comterm.asm, nasm), built
/// once per test process into a directory of its own.
pub(crate) fn dos_programs() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("vmm-dos-programs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("program directory");
        let root = repo();
        let c = root.join("plugins/postdos-c/postdos.c");
        let asm = root.join("plugins/dosasm/dosasm.asm");
        tool("bcc", &["-Md", "-o", "POSTDOS.COM", c.to_str().unwrap()], &dir);
        tool("nasm", &["-f", "bin", "-o", "DOSASM.COM", asm.to_str().unwrap()], &dir);
        let comterm = root.join("plugins/comterm/comterm.asm");
        tool("nasm", &["-f", "bin", "-o", "COMTERM.COM", comterm.to_str().unwrap()], &dir);
        dir
    })
}

/// A directory of its own holding `files`.
fn program_dir(test: &str, files: &[(&str, &[u8])]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vmm-dos-{test}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("directory");
    for (name, bytes) in files {
        std::fs::write(dir.join(name), bytes).expect("program file");
    }
    dir
}

fn postdos_c() -> Scenario {
    Scenario::new(include_str!("../../plugins/postdos-c/system.ini")).plugin_dir(dos_programs())
}

/// `(wParam, lParam)` → how many times POSTAPP read it.
fn delivered(t: &Trace) -> BTreeMap<(u64, u64), usize> {
    let mut seen = BTreeMap::new();
    for r in t.matching(json!({"kind": "message_delivered", "msg": WM_VPOSTD})) {
        *seen.entry((r["wparam"].as_u64().unwrap(), r["lparam"].as_u64().unwrap())).or_insert(0) += 1;
    }
    seen
}

fn every_message_once(t: &Trace) {
    let expected: BTreeMap<(u64, u64), usize> =
        (1..=6).map(|l| ((2, l), 1)).chain((1..=4).map(|l| ((3, l), 1))).collect();
    assert_eq!(delivered(t), expected, "{}", t.tail(30));
}

#[test]
fn the_real_postdos_com_posts_every_message_once_in_lifo_order() {
    let run = postdos_c().set("machine.order=lifo").run();
    run.assert_ok();
    let t = run.trace();
    assert_eq!(run.violations(), 0, "{}", t.tail(20));
    every_message_once(t);
    // The machine code reached VPOSTD the way the Rust module does: INT 2Fh
    // 1683h and 1684h, then a far call per message into the V86 API entry.
    for (vm, posts) in [(0x0001_0002u64, 6), (0x0001_0003, 4)] {
        t.expect(json!({"kind": "int2f", "vm": vm, "ax": 0x1683, "out_bx": vm & 0xFF}));
        t.expect(json!({"kind": "int2f", "vm": vm, "ax": 0x1684, "bx": 0x4321, "es_di": 0xFF00_4321u64}));
        let calls = t.count(json!({"kind": "api_call", "device": "VPOSTD", "mode": "v86", "vm": vm, "carry": false}));
        assert_eq!(calls, posts);
        t.expect(json!({"kind": "program_ended", "vm": vm, "module": "POSTDOS.COM", "exit_code": 0}));
    }
    // wParam is the VM ID, DX:AX the sequence number, from the C code's registers.
    let first = t.expect(json!({"kind": "api_call", "vm": 0x0001_0002u64, "mode": "v86"}));
    assert_eq!(first["regs_in"]["ebx"].as_u64().unwrap() & 0xFFFF, 2);
    assert_eq!(first["regs_in"]["eax"].as_u64().unwrap() & 0xFFFF, 1);
    // DOS1 waits 250 ms between posts (INT 15h AH=86h) in virtual time.
    let posts: Vec<u64> = t
        .matching(json!({"kind": "api_call", "vm": 0x0001_0002u64, "mode": "v86"}))
        .iter()
        .map(|r| r["t"].as_u64().unwrap())
        .collect();
    assert_eq!(posts, vec![0, 250, 500, 750, 1000, 1250]);
    t.expect(json!({"kind": "program_output", "module": "POSTDOS.COM", "text": "VM 2 posted 6 messages, 0 refused"}));
    assert!(t.count(json!({"kind": "v86_slice", "program": "POSTDOS.COM"})) >= 10);
}

#[test]
fn the_real_postdos_com_posts_every_message_once_in_random_order() {
    for seed in [1, 7, 1992] {
        let run = postdos_c().set("machine.order=random").set(&format!("machine.seed={seed}")).run();
        run.assert_ok();
        assert_eq!(run.violations(), 0, "seed {seed}: {}", run.trace().tail(20));
        every_message_once(run.trace());
    }
    // And the manifest's [expect] holds under many random schedules.
    assert_eq!(postdos_c().explore(0..8), 8);
}

#[test]
fn postdos_com_prints_each_refusal_and_knows_when_vpostd_is_missing() {
    // No window registered with VPOSTD: every post is refused with AX=1.
    let run = Scenario::new(
        "[386Enh]\ndevice = [\"VPOSTD.386\"]\n[[vm]]\nname = \"DOS1\"\nprogram = \"POSTDOS.COM\"\n\
         args = \"count=2 interval=0\"\n",
    )
    .plugin_dir(dos_programs())
    .run();
    run.assert_ok();
    let t = run.trace();
    assert_eq!(t.count(json!({"kind": "api_call", "device": "VPOSTD", "mode": "v86", "carry": true})), 2);
    for n in 1..=2 {
        t.expect(json!({"kind": "program_output", "text": format!(
            "message {n} refused (CF set): no Windows application has registered with VPOSTD (AX=1)"
        )}));
    }
    t.expect(json!({"kind": "program_ended", "module": "POSTDOS.COM", "exit_code": 3}));

    let run = Scenario::new("[386Enh]\ndevice = [\"*SHELL\"]\n[[vm]]\nprogram = \"POSTDOS.COM\"\n")
        .plugin_dir(dos_programs())
        .run();
    run.assert_ok();
    let t = run.trace();
    t.expect(json!({"kind": "int2f", "ax": 0x1684, "bx": 0x4321, "es_di": 0}));
    t.expect(json!({"kind": "program_output", "text": "VPOSTD.386 is not installed"}));
    t.expect(json!({"kind": "program_ended", "module": "POSTDOS.COM", "exit_code": 1}));
}

#[test]
fn dosasm_does_port_io_and_runs_its_own_interrupt_handlers() {
    let run = Scenario::new(include_str!("../../plugins/dosasm/system.ini")).plugin_dir(dos_programs()).run();
    run.assert_ok();
    let t = run.trace();
    assert_eq!(run.violations(), 0, "{}", t.tail(20));
    let io: Vec<(u64, u64, String, u64)> = t
        .matching(json!({"kind": "io"}))
        .iter()
        .map(|r| {
            (
                r["port"].as_u64().unwrap(),
                r["size"].as_u64().unwrap(),
                r["direction"].as_str().unwrap().to_string(),
                r["value"].as_u64().unwrap(),
            )
        })
        .collect();
    let expected = [
        (0x64, 8, "in", 0xFF),
        (0x3F8, 8, "in", 0xFF),
        (0x80, 8, "out", 0xFF),
        (0x20, 8, "out", 0x0B),
        (0x3F8, 16, "out", 0x1234),
    ];
    let expected: Vec<(u64, u64, String, u64)> =
        expected.iter().map(|(p, s, d, v)| (*p, *s, d.to_string(), *v)).collect();
    assert_eq!(io, expected);
    // CLI before the port I/O and STI after it reached the VMM's view of IF.
    t.expect_in_order(&[
        json!({"kind": "if_flag", "enabled": false}),
        json!({"kind": "io", "port": 0x64, "handled_by": "hardware"}),
        json!({"kind": "io", "port": 0x3F8, "direction": "out"}),
        json!({"kind": "if_flag", "enabled": true}),
    ]);
    // INT 60h reflected through the VM's vector table to the handler, three
    // times; INT 21h through the hook, which chains on to the host's DOS.
    assert_eq!(t.count(json!({"kind": "v86_interrupt", "vector": 0x60, "handler": "vm"})), 3);
    assert_eq!(t.count(json!({"kind": "v86_interrupt", "vector": 0x21, "handler": "vm"})), 2);
    t.expect(json!({"kind": "program_output", "module": "DOSASM.COM", "text": "INT 60h handler ran 3 times"}));
    // Exit code 2: the hook saw two calls; 1 would mean a port did not read 0xFF.
    t.expect(json!({"kind": "program_ended", "module": "DOSASM.COM", "exit_code": 2, "reason": "exited"}));
}

/// `MOV CX,1000; l: LOOP l; MOV AX,4C07h; INT 21h`: 1003 instructions.
const LOOP_1000: &[u8] = &[0xB9, 0xE8, 0x03, 0xE2, 0xFE, 0xB8, 0x07, 0x4C, 0xCD, 0x21];

#[test]
fn virtual_time_follows_the_instruction_count_and_the_step_budget() {
    let dir = program_dir("loop", &[("LOOP.COM", LOOP_1000)]);
    let run = Scenario::new("[machine]\ninstruction_time = \"100ns\"\n[[vm]]\nname = \"L\"\nprogram = \"LOOP.COM\"\n")
        .plugin_dir(&dir)
        .run();
    run.assert_ok();
    let t = run.trace();
    let slice = t.expect(json!({"kind": "v86_slice", "program": "LOOP.COM", "exit": "exit"}));
    assert_eq!(slice["instructions"], 1003);
    let started = t.expect(json!({"kind": "program_started", "module": "LOOP.COM"}))["t_ns"].as_u64().unwrap();
    let ended = t.expect(json!({"kind": "program_ended", "module": "LOOP.COM", "exit_code": 7}));
    assert_eq!(ended["t_ns"].as_u64().unwrap() - started, 100_300);

    // A budget of 100 instructions per step: the run is cut into 11 steps,
    // the same instructions in all.
    let run = Scenario::new("[machine]\nv86_step = 100\n[[vm]]\nname = \"L\"\nprogram = \"LOOP.COM\"\n")
        .plugin_dir(&dir)
        .run();
    run.assert_ok();
    let t = run.trace();
    let counts: Vec<u64> =
        t.matching(json!({"kind": "v86_slice"})).iter().map(|r| r["instructions"].as_u64().unwrap()).collect();
    assert_eq!(counts.len(), 11);
    assert_eq!(counts.iter().sum::<u64>(), 1003);
    assert_eq!(t.count(json!({"kind": "v86_slice", "exit": "budget"})), 10);
}

#[test]
fn an_unknown_dos_call_is_a_violation_record_and_the_program_goes_on() {
    // MOV AH,99h; INT 21h; SBB AL,AL (0xFF: CF set); MOV AH,4Ch; INT 21h
    let dir = program_dir("unknown", &[("ODD.COM", &[0xB4, 0x99, 0xCD, 0x21, 0x18, 0xC0, 0xB4, 0x4C, 0xCD, 0x21])]);
    let run = Scenario::new("[[vm]]\nname = \"ODD\"\nprogram = \"ODD.COM\"\n").plugin_dir(&dir).run();
    run.assert_ok();
    let t = run.trace();
    let v = t.expect(json!({"kind": "violation", "code": "UNSUPPORTED_INTERRUPT"}));
    assert!(v["message"].as_str().unwrap().contains("ODD.COM called INT 21h AH=99h"), "{v}");
    t.expect(json!({"kind": "program_ended", "module": "ODD.COM", "exit_code": 0xFF, "reason": "exited"}));
}

#[test]
fn a_small_mz_exe_is_loaded_with_its_relocations() {
    // Code at 0000: MOV AX,seg data (0002, relocated); MOV DS,AX; MOV DX,0;
    // MOV AH,9; INT 21h; MOV AX,4C00h; INT 21h. Data at paragraph 2: "MZ ok$".
    let mut body =
        vec![0xB8, 0x02, 0x00, 0x8E, 0xD8, 0xBA, 0x00, 0x00, 0xB4, 0x09, 0xCD, 0x21, 0xB8, 0x00, 0x4C, 0xCD, 0x21];
    body.resize(32, 0x90);
    body.extend_from_slice(b"MZ ok$");
    let mut exe = vec![0u8; 32];
    exe[0..2].copy_from_slice(b"MZ");
    let size = 32 + body.len() as u16;
    exe[2..4].copy_from_slice(&size.to_le_bytes()); // bytes in the last page
    exe[4..6].copy_from_slice(&1u16.to_le_bytes()); // pages
    exe[6..8].copy_from_slice(&1u16.to_le_bytes()); // relocations
    exe[8..10].copy_from_slice(&2u16.to_le_bytes()); // header paragraphs
    exe[0x0E..0x10].copy_from_slice(&0x10u16.to_le_bytes()); // SS
    exe[0x10..0x12].copy_from_slice(&0x100u16.to_le_bytes()); // SP
    exe[0x18..0x1A].copy_from_slice(&0x1Cu16.to_le_bytes()); // relocation table
    exe[0x1C..0x20].copy_from_slice(&[0x01, 0x00, 0x00, 0x00]); // 0000:0001
    exe.extend_from_slice(&body);
    let dir = program_dir("mz", &[("HELLO.EXE", &exe)]);
    let run = Scenario::new("[[vm]]\nname = \"EXE\"\nprogram = \"HELLO.EXE\"\n").plugin_dir(&dir).run();
    run.assert_ok();
    let t = run.trace();
    t.expect(json!({"kind": "program_output", "module": "HELLO.EXE", "text": "MZ ok"}));
    t.expect(json!({"kind": "program_ended", "module": "HELLO.EXE", "exit_code": 0}));
}

#[test]
fn program_errors_name_the_file_and_why() {
    let mut bad_mz = vec![0u8; 64];
    bad_mz[0..2].copy_from_slice(b"MZ");
    bad_mz[4..6].copy_from_slice(&9u16.to_le_bytes()); // 9 pages: more than the file
    bad_mz[8..10].copy_from_slice(&2u16.to_le_bytes());
    let big = vec![0x90u8; 0xFF01];
    let huge = vec![0x90u8; 0xA_0001];
    let dir =
        program_dir("errors", &[("BIG.COM", &big), ("BAD.EXE", &bad_mz), ("OK.COM", &[0xC3]), ("HUGE.EXE", &huge)]);
    let cases = [
        ("MISSING.COM", "", "program file `MISSING.COM` not found (searched:"),
        ("BIG.COM", "", "a .COM program holds at most 65280 bytes"),
        ("BAD.EXE", "", "bad MZ header: the pages it declares make 4608 bytes, but the file has only 64"),
        ("OK.COM", &"x".repeat(130), "the command line is 130 characters; DOS passes at most 125"),
        ("HUGE.EXE", "", "the file is 655361 bytes; a DOS program is at most 655360 bytes"),
    ];
    for (file, args, why) in cases {
        let run = Scenario::new(&format!("[[vm]]\nname = \"D\"\nprogram = \"{file}\"\nargs = \"{args}\"\n"))
            .plugin_dir(&dir)
            .run();
        let e = run.expect_error().to_string();
        assert!(e.starts_with("manifest#1:1:"), "{e}");
        assert!(e.contains(file), "{e}");
        assert!(e.contains(why), "{file}: {e}");
        if file != "MISSING.COM" {
            assert!(e.contains(&dir.join(file).display().to_string()), "{e}");
        }
    }
    // POSTDOS.EXE is not a file, but a DOS program plugin POSTDOS exists: the
    // error says how to name it.
    let run = Scenario::new("[[vm]]\nname = \"D\"\nprogram = \"POSTDOS.EXE\"\n")
        .plugin_dir(&dir)
        .plugin_dir(vmm_testkit::plugin_dir())
        .run();
    let e = run.expect_error().to_string();
    assert!(e.contains("program file `POSTDOS.EXE` not found"), "{e}");
    assert!(e.contains("to run the DOS program plugin `POSTDOS` instead"), "{e}");
    assert!(e.contains("vmm builds plugin crates but not DOS programs"), "{e}");
    assert!(e.contains("(program = \"POSTDOS\")"), "{e}");
    // A name without an extension is still a Rust module.
    let run = Scenario::new("[[vm]]\nname = \"D\"\nprogram = \"NOSUCHMODULE\"\n").plugin_dir(&dir).run();
    let e = run.expect_error().to_string();
    assert!(e.contains("NOSUCHMODULE") && !e.contains("program file"), "{e}");
}

#[test]
fn cli_and_sti_in_machine_code_gate_events_waiting_for_interrupts() {
    use vmm_plugin_api::prelude::*;
    use vmm_testkit::ScriptDevice;
    const DOS1: u32 = 0x0001_0002;
    // CLI; wait 30 ms (INT 15h AH=86h, CX:DX = 30000 us); STI; wait 10 ms; INT 20h
    let code: &[u8] = &[
        0xFA, 0xB9, 0x00, 0x00, 0xBA, 0x30, 0x75, 0xB4, 0x86, 0xCD, 0x15, 0xFB, 0xBA, 0x10, 0x27, 0xB4, 0x86, 0xCD,
        0x15, 0xCD, 0x20,
    ];
    let dir = program_dir("sti", &[("STI.COM", code)]);
    let run = Scenario::new(
        "[386Enh]\ndevice = [\"SCRIPT\"]\n[[vm]]\nname = \"DOS1\"\nprogram = \"STI.COM\"\n\
         [[interrupt]]\nname = \"go\"\nat = 5\n",
    )
    .plugin_dir(&dir)
    .script(|_, vmm, msg| {
        if msg.message == DEVICE_INIT {
            vmm.register_interrupt("go", |_: &ScriptDevice, vmm, _| {
                vmm.call_priority_vm_event(
                    0x1000,
                    VmHandle(DOS1),
                    PEF_WAIT_FOR_STI,
                    0,
                    |dev: &ScriptDevice, vmm, _| {
                        dev.note(vmm, format!("ran t={}", vmm.get_system_time()));
                    },
                )
                .unwrap();
            })
            .unwrap();
        }
        Carry::Clear
    })
    .run();
    run.assert_ok();
    let t = run.trace();
    t.expect(json!({"kind": "if_flag", "vm": DOS1, "enabled": false}));
    let sti = t.expect(json!({"kind": "if_flag", "vm": DOS1, "enabled": true}))["t"].as_u64().unwrap();
    let ran: Vec<String> = t
        .values(json!({"kind": "debug_string", "device": "SCRIPT"}), "text")
        .into_iter()
        .map(|v| v.as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(ran, [format!("ran t={sti}")]);
    assert!(sti >= 30, "STI at {sti}");
}

#[test]
fn the_timeline_shows_machine_code_running_in_its_vm() {
    let dir = program_dir("timeline", &[("LOOP.COM", LOOP_1000)]);
    let mut m =
        Scenario::new("[[vm]]\nname = \"L\"\nprogram = \"LOOP.COM\"\n").plugin_dir(&dir).machine().expect("machine");
    m.boot().expect("boot");
    m.run().expect("run");
    let timeline = vmm_host::timeline::chrome_trace(&m.trace());
    let events = timeline["traceEvents"].as_array().unwrap();
    let slice = events.iter().find(|e| e["cat"] == "v86").expect("a v86 slice");
    assert_eq!(slice["name"], "LOOP.COM: 1003 instructions (exit)");
    assert_eq!(slice["ph"], "X");
    // 1003 instructions at the default 50 ns: 50.15 us.
    assert_eq!(slice["dur"].as_f64().unwrap(), 50.15);
    let track = events.iter().find(|e| e["name"] == "thread_name" && e["tid"] == slice["tid"]).expect("track name");
    assert_eq!(track["args"]["name"], "L");
}

#[test]
fn dos_calls_answer_as_documented() {
    let programs: [(&str, &[u8], u64); 5] = [
        // MOV AX,1685h; MOV BX,99 (no such VM); INT 2Fh; SBB AL,AL; exit: the
        // VMM's INT 2Fh handler set CF, and the program sees it.
        ("SWITCH.COM", &[0xB8, 0x85, 0x16, 0xBB, 0x63, 0x00, 0xCD, 0x2F, 0x18, 0xC0, 0xB4, 0x4C, 0xCD, 0x21], 0xFF),
        // MOV AH,30h; INT 21h; MOV AH,4Ch; INT 21h: exit code = major version.
        ("VER.COM", &[0xB4, 0x30, 0xCD, 0x21, 0xB4, 0x4C, 0xCD, 0x21], 7),
        // MOV AH,4Ah; MOV BX,FFFFh; INT 21h; MOV AL,BH; JC +2; MOV AL,0; exit:
        // too big, so CF and BX = the largest block, 9000h paragraphs.
        (
            "RESIZE.COM",
            &[0xB4, 0x4A, 0xBB, 0xFF, 0xFF, 0xCD, 0x21, 0x88, 0xF8, 0x72, 0x02, 0xB0, 0x00, 0xB4, 0x4C, 0xCD, 0x21],
            0x90,
        ),
        // MOV AX,4400h; MOV BX,1; INT 21h; MOV AL,DL; exit: device information of stdout.
        ("IOCTL.COM", &[0xB8, 0x00, 0x44, 0xBB, 0x01, 0x00, 0xCD, 0x21, 0x88, 0xD0, 0xB4, 0x4C, 0xCD, 0x21], 0xD3),
        // MOV AH,40h; MOV BX,9; MOV CX,1; INT 21h; exit with AL: invalid handle (6).
        ("WRITE.COM", &[0xB4, 0x40, 0xBB, 0x09, 0x00, 0xB9, 0x01, 0x00, 0xCD, 0x21, 0xB4, 0x4C, 0xCD, 0x21], 6),
    ];
    let files: Vec<(&str, &[u8])> = programs.iter().map(|(n, b, _)| (*n, *b)).collect();
    let dir = program_dir("calls", &files);
    for (name, _, code) in programs {
        let run = Scenario::new(&format!("[[vm]]\nname = \"D\"\nprogram = \"{name}\"\n")).plugin_dir(&dir).run();
        run.assert_ok();
        assert_eq!(run.violations(), 0, "{name}: {}", run.trace().tail(10));
        run.trace().expect(json!({"kind": "program_ended", "module": name, "exit_code": code}));
    }
    // Under Windows 3.1 the DOS is 5.00.
    let run = Scenario::new("[machine]\nwindows = \"3.1\"\n[[vm]]\nname = \"D\"\nprogram = \"VER.COM\"\n")
        .plugin_dir(&dir)
        .run();
    run.trace().expect(json!({"kind": "program_ended", "module": "VER.COM", "exit_code": 5}));
}

#[test]
fn random_machine_code_never_crashes_the_emulator() {
    // 40 programs of 512 random bytes (SplitMix64, fixed seed): whatever they
    // do (faults, unknown calls, port I/O, jumps anywhere, INT 2Fh with any
    // AX), each ends with a record, not a host panic, and the run is
    // deterministic.
    let mut state = 0x1992_u64;
    let mut next = move || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let programs: Vec<(String, Vec<u8>)> =
        (0..40).map(|i| (format!("R{i}.COM"), (0..512).map(|_| next() as u8).collect())).collect();
    let files: Vec<(&str, &[u8])> = programs.iter().map(|(n, b)| (n.as_str(), b.as_slice())).collect();
    let dir = program_dir("random", &files);
    let mut ended = 0;
    for (name, _) in &programs {
        let scenario = Scenario::new(&format!(
            "[machine]\nuntil = \"5ms\"\nviolations = \"log\"\n[386Enh]\ndevice = [\"*SHELL\"]\n\
             [[vm]]\nname = \"R\"\nprogram = \"{name}\"\n"
        ))
        .plugin_dir(&dir);
        let run = scenario.run();
        let t = run.trace();
        t.expect_none(json!({"kind": "plugin_error"}));
        if t.count(json!({"kind": "program_ended", "module": name})) == 1 {
            ended += 1;
        }
        assert!(t.count(json!({"kind": "v86_slice", "program": name})) >= 1, "{name}: {}", t.tail(10));
        // The same program and seed give the same trace.
        assert_eq!(scenario.run().trace().records(), t.records(), "{name} is not deterministic");
    }
    // Most random programs fault or exit quickly.
    assert!(ended >= 20, "only {ended} of 40 ended");
}

#[test]
fn a_program_polling_the_bios_tick_count_sees_virtual_time_pass() {
    // MOV AX,40h; MOV ES,AX; MOV BX,[ES:6Ch]; l: CMP BX,[ES:6Ch]; JE l; MOV AX,4C00h; INT 21h
    let code: &[u8] = &[
        0xB8, 0x40, 0x00, 0x8E, 0xC0, 0x26, 0x8B, 0x1E, 0x6C, 0x00, 0x26, 0x3B, 0x1E, 0x6C, 0x00, 0x74, 0xF9, 0xB8,
        0x00, 0x4C, 0xCD, 0x21,
    ];
    let dir = program_dir("ticks", &[("TICK.COM", code)]);
    let run = Scenario::new("[[vm]]\nname = \"T\"\nprogram = \"TICK.COM\"\n").plugin_dir(&dir).run();
    run.assert_ok();
    let t = run.trace();
    // One tick is 65,536 / 1,193,180 s = 54.9 ms; the program sees it at the
    // start of the first run after it (runs are 0.5 ms long).
    let ended = t.expect(json!({"kind": "program_ended", "module": "TICK.COM", "exit_code": 0}));
    let ns = ended["t_ns"].as_u64().unwrap();
    assert!((54_925_000..55_500_000).contains(&ns), "ended at {ns} ns");
}

#[test]
fn invalid_v86_machine_values_are_refused_with_the_key_named() {
    let cases = [
        ("instruction_time = 0", "manifest#1:2:20", "instruction_time must be longer than 0"),
        ("instruction_time = \"2ms\"", "manifest#1:2:20", "instruction_time must be at most"),
        ("instruction_time = \"fast\"", "manifest#1:2:20", "instruction_time: invalid duration"),
        ("v86_step = 0", "manifest#1:2:12", "v86_step must be 1 to 100000000 instructions per step, got 0"),
        ("v86_step = -3", "manifest#1:2:12", "v86_step must be 1 to 100000000 instructions per step, got -3"),
        ("v86_step = 100000001", "manifest#1:2:12", "got 100000001"),
    ];
    for (line, place, message) in cases {
        let run = Scenario::new(&format!("[machine]\n{line}\n")).run();
        let e = run.expect_error().to_string();
        assert!(e.contains(place) && e.contains(message), "{line}: {e}");
    }
}
