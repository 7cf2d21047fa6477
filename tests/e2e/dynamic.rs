//! Dynamic VxDs: VXDLDR's services and ring-3 API with every error code,
//! Sys_Dynamic_Device_Init / Exit and their refusals, the unload leak
//! report, and hot reload (state handover, every way the new code can be
//! refused, a new name or ID), through the library the way `--watch`
//! drives it. The RELOADME fixture (`plugins/fixtures/reloadable`) is the
//! device under test.

use std::cell::RefCell;

use vmm_host::Machine;
use vmm_plugin_api::ddk::vxd_service;
use vmm_plugin_api::prelude::*;
use vmm_testkit::{Scenario, ScriptDevice, Trace, json, plugin_dir};

use crate::common::notes_in;

const RELOADME: u16 = 0x3F30;

fn lib(name: &str) -> std::path::PathBuf {
    plugin_dir().join(format!("lib{name}{}", std::env::consts::DLL_SUFFIX))
}

fn booted(manifest: &str) -> Machine {
    let mut m = Scenario::new(manifest).module::<DosLoader>().machine().expect("manifest");
    m.boot().expect("boot");
    m
}

fn service(m: &mut Machine, ordinal: u16) -> u32 {
    let mut call = ServiceCall::default();
    m.call_service(vxd_service(RELOADME, ordinal), &mut call).expect("service call");
    call.regs.eax
}

fn trace_of(m: &Machine) -> Trace {
    Trace::of(m)
}

const BASE: &str = r#"
    [386Enh]
    device = ["*VXDLDR"]
"#;

#[test]
fn a_dynamic_device_gets_sys_dynamic_device_init_instead_of_the_init_phases() {
    let mut m = booted(BASE);
    m.load_dynamic_device("fixture-reloadable", true).unwrap();
    m.run_for(vmm_host::time::Duration::from_millis(1)).unwrap();
    assert_eq!(service(&mut m, 1), 1, "RELOADME_Get_Generation answers");
    let t = trace_of(&m);
    t.expect_in_order(&[
        json!({"kind": "phase", "phase": "running"}),
        json!({"kind": "device_loaded", "device": "RELOADME", "id": RELOADME}),
        json!({"kind": "control", "device": "RELOADME", "message": "Sys_Dynamic_Device_Init", "result": "clear"}),
        json!({"kind": "vxdldr", "op": "load", "result": "ok"}),
    ]);
    for phase in ["Sys_Critical_Init", "Device_Init", "Init_Complete", "Sys_VM_Init"] {
        t.expect_none(json!({"kind": "control", "device": "RELOADME", "message": phase}));
    }
    t.expect(json!({"kind": "note", "device": "RELOADME", "note": "reloadme_init"}));
    m.unload_dynamic_device("RELOADME").unwrap();
    let t = trace_of(&m);
    t.expect(json!({"kind": "control", "device": "RELOADME", "message": "Sys_Dynamic_Device_Exit"}));
    t.expect(json!({"kind": "device_unloaded", "device": "RELOADME", "reason": "unloaded", "leaks": 0}));
    m.shutdown().unwrap();
    // Unloaded devices get no exit messages.
    trace_of(&m).expect_none(json!({"kind": "control", "device": "RELOADME", "message": "System_Exit"}));
}

#[test]
fn vxdldr_reports_each_error_code() {
    let mut m = booted(
        r#"
        [386Enh]
        device = ["*VXDLDR", "fixture-dup-a"]
    "#,
    );
    let code = |r: Result<(), (u32, String)>| r.map_err(|(c, _)| c);
    assert_eq!(code(m.load_dynamic_device("no-such-plugin", true)), Err(VXDLDR_ERR_FILE_OPEN_ERROR));
    assert_eq!(code(m.load_dynamic_device("POSTHOST", true)), Err(VXDLDR_ERR_BAD_DEVICE_FILE), "a DLL is not a VxD");
    assert_eq!(code(m.load_dynamic_device("fixture-skewed-layout", true)), Err(VXDLDR_ERR_BAD_DEVICE_FILE));
    assert_eq!(code(m.load_dynamic_device("fixture-dup-b", true)), Err(VXDLDR_ERR_DUPLICATE_DEVICE), "ID 0x3F00 again");
    assert_eq!(code(m.unload_dynamic_device("NOSUCH")), Err(VXDLDR_ERR_NO_SUCH_DEVICE));
    assert_eq!(code(m.unload_dynamic_device("FXDUPA")), Err(VXDLDR_ERR_DEVICE_UNLOADABLE), "loaded at boot");
    let t = trace_of(&m);
    let results: Vec<String> =
        t.values(json!({"kind": "vxdldr"}), "result").iter().map(|v| v.as_str().unwrap().to_string()).collect();
    assert_eq!(
        results,
        [
            "VXDLDR_ERR_FILE_OPEN_ERROR",
            "VXDLDR_ERR_BAD_DEVICE_FILE",
            "VXDLDR_ERR_BAD_DEVICE_FILE",
            "VXDLDR_ERR_DUPLICATE_DEVICE",
            "VXDLDR_ERR_NO_SUCH_DEVICE",
            "VXDLDR_ERR_DEVICE_UNLOADABLE",
        ]
    );
    t.expect(json!({"kind": "device_rejected", "reason": "duplicate_id", "id": 0x3F00}));
    // The machine is consistent: the boot device still answers, nothing leaked.
    assert_eq!(m.devices().iter().filter(|d| d.active).count(), 2);
    m.shutdown().unwrap();
}

#[test]
fn refused_init_and_refused_exit() {
    let mut m = booted(&format!("{BASE}[RELOADME]\nRefuseInit = true\n"));
    let r = m.load_dynamic_device("fixture-reloadable", true);
    assert_eq!(r.map_err(|(c, _)| c), Err(VXDLDR_ERR_DEVICE_REFUSED));
    let t = trace_of(&m);
    t.expect(json!({"kind": "control", "device": "RELOADME", "message": "Sys_Dynamic_Device_Init", "result": "set"}));
    t.expect(json!({"kind": "device_unloaded", "device": "RELOADME", "reason": "init_refused"}));
    t.expect_none(json!({"kind": "control", "device": "RELOADME", "message": "Sys_Dynamic_Device_Exit"}));
    m.shutdown().unwrap();

    let mut m = booted(&format!("{BASE}[RELOADME]\nRefuseExit = true\n"));
    m.load_dynamic_device("fixture-reloadable", true).unwrap();
    let r = m.unload_dynamic_device("RELOADME");
    assert_eq!(r.map_err(|(c, _)| c), Err(VXDLDR_ERR_DEVICE_UNLOADABLE));
    assert_eq!(service(&mut m, 1), 1, "it stays loaded and keeps answering");
    m.shutdown().unwrap();
}

#[test]
fn a_second_load_counts_and_the_device_leaves_on_the_last_unload() {
    let mut m = booted(BASE);
    m.load_dynamic_device("fixture-reloadable", true).unwrap();
    m.load_dynamic_device("FIXTURE-RELOADABLE", true).unwrap();
    let t = trace_of(&m);
    assert_eq!(t.count(json!({"kind": "device_loaded", "device": "RELOADME"})), 1, "loaded once, counted twice");
    m.unload_dynamic_device("RELOADME").unwrap();
    assert_eq!(service(&mut m, 1), 1, "one load left");
    m.unload_dynamic_device("RELOADME").unwrap();
    let t = trace_of(&m);
    assert_eq!(t.count(json!({"kind": "control", "device": "RELOADME", "message": "Sys_Dynamic_Device_Exit"})), 1);
    assert_eq!(m.unload_dynamic_device("RELOADME").map_err(|(c, _)| c), Err(VXDLDR_ERR_NO_SUCH_DEVICE));
    m.shutdown().unwrap();
}

/// A SCRIPT device that, at its interrupt `go`'s time-out, drives VXDLDR
/// by `VxDCall` the way a VxD does, noting `op=carry:eax`.
fn vxdldr_script(steps: &'static [(&'static str, u16, u32, Option<&'static str>)]) -> Scenario {
    Scenario::new(
        r#"
        [386Enh]
        device = ["*VXDLDR", "SCRIPT"]
    "#,
    )
    .script(move |_dev, vmm, msg| {
        if msg.message == INIT_COMPLETE {
            vmm.set_global_time_out(10, move |dev: &ScriptDevice, vmm, _| {
                let mut info = 0u32;
                for (op, ordinal, eax, name) in steps {
                    let mut call = ServiceCall::default();
                    call.regs.eax = *eax;
                    let mut block = None;
                    if let Some(n) = name {
                        let at = vmm.heap_allocate(n.len() as u32 + 1, HEAPZEROINIT).unwrap();
                        vmm.mem_write(at, n.as_bytes()).unwrap();
                        call.regs.edx = at;
                        block = Some(at);
                    } else {
                        call.regs.edx = info;
                    }
                    vmm.vxd_call(vxd_service(VXDLDR_DEVICE_ID, *ordinal), &mut call).unwrap();
                    let carry = call.regs.flags & CF_MASK != 0;
                    if *ordinal == VXDLDR_LOAD_DEVICE && !carry {
                        info = call.regs.edx;
                    }
                    if *ordinal == VXDLDR_GET_DEVICE_LIST && call.regs.eax != 0 {
                        let mut entry = [0u8; 32];
                        vmm.mem_read(call.regs.eax, &mut entry).unwrap();
                        let name: String = entry[16..].iter().take_while(|b| **b != 0).map(|&b| b as char).collect();
                        let id = u16::from_le_bytes([entry[12], entry[13]]);
                        let count = u32::from_le_bytes([entry[4], entry[5], entry[6], entry[7]]);
                        dev.note(vmm, format!("list {name} {id:#06x} count={count} next={:#x}", entry[0]));
                    }
                    dev.note(vmm, format!("{op}={}:{}", u8::from(carry), if carry { call.regs.eax } else { 0 }));
                    if let Some(b) = block {
                        vmm.heap_free(b);
                    }
                }
            })
            .unwrap();
        }
        Carry::Clear
    })
}

#[test]
fn devices_drive_vxdldr_by_vxdcall() {
    let run = vxdldr_script(&[
        ("load_no_init", VXDLDR_LOAD_DEVICE, 0, Some("fixture-reloadable")),
        ("list", VXDLDR_GET_DEVICE_LIST, 0, None),
        ("succeeded", VXDLDR_DEV_INIT_SUCCEEDED, 0, None),
        ("succeeded_again", VXDLDR_DEV_INIT_SUCCEEDED, 0, None),
        ("unload_by_name", VXDLDR_UNLOAD_DEVICE, 0, Some("RELOADME")),
        ("load_no_init_2", VXDLDR_LOAD_DEVICE, 0, Some("fixture-reloadable")),
        ("failed", VXDLDR_DEV_INIT_FAILED, 0, None),
        ("version", VXDLDR_GET_VERSION, 0, None),
        ("missing", VXDLDR_LOAD_DEVICE, VXDLDR_INIT_DEVICE, Some("nothing-here")),
    ])
    .run();
    run.assert_ok();
    let t = run.trace();
    assert_eq!(
        notes_in(t),
        [
            "load_no_init=0:0",
            "list RELOADME 0x3f30 count=1 next=0x0",
            "list=0:0",
            "succeeded=0:0",
            "succeeded_again=1:7",
            "unload_by_name=0:0",
            "load_no_init_2=0:0",
            "failed=0:0",
            "version=0:0",
            "missing=1:3",
        ]
    );
    // Without VXDLDR_INIT_DEVICE the device got no Sys_Dynamic_Device_Init;
    // DevInitSucceeded made it a full device, which got the exit message.
    t.expect_none(json!({"kind": "control", "device": "RELOADME", "message": "Sys_Dynamic_Device_Init"}));
    assert_eq!(t.count(json!({"kind": "control", "device": "RELOADME", "message": "Sys_Dynamic_Device_Exit"})), 1);
    t.expect(json!({"kind": "device_unloaded", "device": "RELOADME", "reason": "init_failed"}));
    t.expect(json!({"kind": "vxdldr", "op": "load", "caller": "SCRIPT", "result": "VXDLDR_ERR_FILE_OPEN_ERROR"}));
}

/// A DOS program that loads and unloads RELOADME through VXDLDR's ring-3
/// API: `load NAME`, `unload ID`, `bad`.
struct DosLoader {
    steps: RefCell<Vec<String>>,
}

impl Module for DosLoader {
    const MODULE: ModuleDef = ModuleDef::dos_program("DOSLOAD").segments(&[Segment::moveable("_TEXT")]);

    fn create(_: &Ring3<'_>) -> Result<Self, String> {
        Ok(DosLoader { steps: RefCell::new(Vec::new()) })
    }

    fn start(&self, r3: &Ring3<'_>, args: &str) -> Step {
        *self.steps.borrow_mut() = args.split(';').map(str::to_string).collect();
        let regs = r3.regs();
        regs.set_ax(0x1684);
        regs.set_bx(VXDLDR_DEVICE_ID);
        r3.int(0x2F).unwrap();
        let entry = FarPtr::new(regs.es() as u16, regs.di());
        for step in self.steps.borrow().iter() {
            let words: Vec<&str> = step.split_whitespace().collect();
            match words.as_slice() {
                ["load", name] => {
                    let p = r3.far_string(name).unwrap();
                    regs.set_ax(VXDLDR_API_LOAD_DEVICE);
                    regs.set_ds_raw(p.selector as u32);
                    regs.set_dx(p.offset);
                }
                ["unload", id] => {
                    regs.set_ax(VXDLDR_API_UNLOAD_DEVICE);
                    regs.set_bx(u16::from_str_radix(id, 16).unwrap());
                }
                ["api"] => {
                    // RELOADME's own API: AX = generation, BX = counter.
                    regs.set_ax(0x1684);
                    regs.set_bx(RELOADME);
                    r3.int(0x2F).unwrap();
                    let own = FarPtr::new(regs.es() as u16, regs.di());
                    let r = r3.call(own, &[]);
                    r3.print(&format!(
                        "api {} ax={} bx={} cf={}",
                        r.is_ok(),
                        regs.ax(),
                        regs.bx(),
                        u8::from(regs.carry())
                    ));
                    continue;
                }
                _ => regs.set_ax(7),
            }
            let _ = r3.call(entry, &[]);
            r3.print(&format!("{step}: cf={} ax={}", u8::from(regs.carry()), regs.ax()));
        }
        Step::exit(0)
    }
}

#[test]
fn ring3_programs_load_and_unload_through_vxdldrs_api() {
    let run = Scenario::new(
        r#"
            [386Enh]
            device = ["*VXDLDR"]
            [[vm]]
            name = "DOS1"
            program = "DOSLOAD"
            args = "load fixture-reloadable;api;load fixture-reloadable;unload 3F30;unload 3F30;unload 3F30;bad"
        "#,
    )
    .module::<DosLoader>()
    .run();
    run.assert_ok();
    let out: Vec<String> = run
        .trace()
        .values(json!({"kind": "program_output", "module": "DOSLOAD"}), "text")
        .into_iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        out,
        [
            "load fixture-reloadable: cf=0 ax=1",
            "api true ax=1 bx=0 cf=0",
            "load fixture-reloadable: cf=0 ax=1",
            "unload 3F30: cf=0 ax=2",
            "unload 3F30: cf=0 ax=2",
            "unload 3F30: cf=1 ax=8",
            "bad: cf=1 ax=11",
        ]
    );
}

#[test]
fn manifest_devices_marked_dynamic_load_as_windows_starts() {
    // A one-line manifest: the errors and records name positions in it.
    let run =
        Scenario::new("[386Enh]\ndevice = [\"*VXDLDR\", { name = \"fixture-reloadable\", dynamic = true }]\n").run();
    run.assert_ok();
    let t = run.trace();
    t.expect_in_order(&[
        json!({"kind": "phase", "phase": "running"}),
        json!({"kind": "control", "device": "RELOADME", "message": "Sys_Dynamic_Device_Init"}),
    ]);
    let e = Scenario::new("[386Enh]\ndevice = [{ name = \"fixture-reloadable\", dynamic = true }]\n")
        .run()
        .expect_error()
        .to_string();
    assert!(e.contains("add \"*VXDLDR\"") && e.contains("manifest#1:2"), "{e}");
}

#[test]
fn unload_reclaims_and_reports_what_the_device_left_behind() {
    let mut m = booted(&format!("{BASE}[RELOADME]\nLeak = true\n"));
    m.load_dynamic_device("fixture-reloadable", true).unwrap();
    m.unload_dynamic_device("RELOADME").unwrap();
    m.run_for(vmm_host::time::Duration::from_secs(20)).unwrap();
    m.shutdown().unwrap();
    let t = trace_of(&m);
    let leaks: Vec<String> = t
        .matching(json!({"kind": "violation", "code": "UNLOAD_LEAK", "device": "RELOADME"}))
        .iter()
        .map(|v| v["message"].as_str().unwrap().to_string())
        .collect();
    let kinds = [
        "vm event",
        "time-out",
        "Call_When_Idle",
        "I/O handler of port 0x02E8",
        "interrupt source",
        "semaphore",
        "heap block",
    ];
    assert_eq!(leaks.len(), kinds.len(), "{leaks:#?}");
    for k in kinds {
        assert!(leaks.iter().any(|l| l.contains(k)), "no leak report mentions {k}: {leaks:#?}");
    }
    t.expect(json!({"kind": "device_unloaded", "device": "RELOADME", "leaks": kinds.len()}));
    t.expect(json!({"kind": "event_cancelled", "device": "RELOADME", "reason": "unloaded"}));
    t.expect(json!({"kind": "timeout_cancelled", "device": "RELOADME", "reason": "unloaded"}));
    // Nothing of the unloaded instance ever runs again.
    t.expect_none(json!({"kind": "debug_string", "device": "RELOADME"}));
}

// ---- hot reload -------------------------------------------------------------------------------

/// The file RELOADME's code came from.
fn reloadme_file(m: &Machine) -> std::path::PathBuf {
    m.plugin_devices().into_iter().find(|(d, _, _)| d == "RELOADME").map(|(_, f, _)| f).expect("RELOADME is loaded")
}

fn reloadable(extra: &str) -> Machine {
    let mut m = booted(&format!("{BASE}[RELOADME]\n{extra}\n"));
    m.load_dynamic_device("fixture-reloadable", true).unwrap();
    for _ in 0..3 {
        service(&mut m, 3);
    }
    m
}

#[test]
fn a_reload_swaps_the_code_and_hands_the_state_over() {
    let mut m = reloadable("");
    let report = m.reload_device("RELOADME", reloadme_file(&m));
    assert!(report.ok(), "{report:?}");
    assert_eq!(report.result, "ok");
    assert_eq!(report.state_bytes, Some(8));
    assert_eq!(report.leaks, 0);
    assert_eq!(report.old_build, report.new_build, "same file: a fresh instance of the same code");
    assert_eq!(service(&mut m, 2), 3, "the counter came along");
    let t = trace_of(&m);
    t.expect_in_order(&[
        json!({"kind": "control", "device": "RELOADME", "message": "Sys_Dynamic_Device_Exit", "result": "clear"}),
        json!({"kind": "control", "device": "RELOADME", "message": "Sys_Dynamic_Device_Init", "result": "clear"}),
        json!({"kind": "reload", "device": "RELOADME", "result": "ok", "state_bytes": 8}),
    ]);
    let inits = t.matching(json!({"kind": "note", "note": "reloadme_init"}));
    assert_eq!(inits.len(), 2);
    assert_ne!(inits[0]["fields"]["serial"], inits[1]["fields"]["serial"], "a new instance runs");
    assert_eq!(inits[1]["fields"]["counter"], 3);
    m.shutdown().unwrap();
}

#[test]
fn when_the_new_code_cannot_take_over_the_old_code_keeps_running() {
    for (switch, result) in [
        ("SuccessorRefusesInit = true", "init_refused"),
        ("SuccessorPanics = true", "init_refused"),
        ("SuccessorRejectsState = true", "restore_refused"),
        ("RefuseExit = true", "exit_refused"),
    ] {
        let mut m = reloadable(switch);
        let report = m.reload_device("RELOADME", reloadme_file(&m));
        assert_eq!(report.result, result, "{switch}: {report:?}");
        assert!(!report.ok());
        assert!(report.message.is_some());
        // The device's own words reach the report (and the reload line).
        let message = report.message.as_deref().unwrap_or_default();
        if switch.starts_with("SuccessorRejectsState") {
            assert!(message.contains("this version does not take the old state"), "{message}");
        }
        if switch.starts_with("SuccessorPanics") {
            assert!(message.contains("RELOADME's successor panics in Sys_Dynamic_Device_Init"), "{message}");
        }
        assert_eq!(service(&mut m, 2), 3, "{switch}: the old instance runs with its state");
        assert_eq!(service(&mut m, 1), 1);
        m.shutdown().unwrap();
        trace_of(&m).expect(json!({"kind": "reload", "result": result}));
    }
    for (file, result) in
        [(lib("fixture_skewed_layout"), "layout_mismatch"), (plugin_dir().join("libmissing.so"), "load_failed")]
    {
        let mut m = reloadable("");
        let report = m.reload_device("RELOADME", &file);
        assert_eq!(report.result, result, "{report:?}");
        assert_eq!(service(&mut m, 2), 3);
        m.shutdown().unwrap();
    }
}

#[test]
fn a_new_name_or_id_is_an_unload_and_a_load() {
    let mut m = reloadable("");
    let report = m.reload_device("RELOADME", lib("fixture_reloadable_renamed"));
    assert_eq!(report.result, "replaced", "{report:?}");
    m.shutdown().unwrap();
    let t = trace_of(&m);
    t.expect_in_order(&[
        json!({"kind": "device_unloaded", "device": "RELOADME"}),
        json!({"kind": "device_loaded", "device": "RELOAD2", "id": 0x3F31}),
        json!({"kind": "note", "device": "RELOAD2", "note": "reload2_init"}),
    ]);
}

#[test]
fn api_entry_points_held_by_ring3_code_reach_the_new_code() {
    let mut m = booted(
        r#"
            [386Enh]
            device = ["*VXDLDR", { name = "fixture-reloadable", dynamic = true }]
            [[vm]]
            name = "DOS1"
            program = "DOSLOAD"
            args = "api"
            at = "50ms"
        "#,
    );
    service(&mut m, 3);
    let report = m.reload_device("RELOADME", reloadme_file(&m));
    assert!(report.ok(), "{report:?}");
    service(&mut m, 3);
    m.run().unwrap();
    m.shutdown().unwrap();
    trace_of(&m).expect(json!({"kind": "program_output", "module": "DOSLOAD", "text": "api true ax=1 bx=2 cf=0"}));
}

// ---- damaged files, and watching -------------------------------------------------------------

/// A directory of its own under the test's temporary directory.
fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("dynamic-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// RELOADME's plugin cut to half its size, in `dir`.
fn truncated_reloadme(dir: &std::path::Path) -> std::path::PathBuf {
    let bytes = std::fs::read(lib("fixture_reloadable")).unwrap();
    let file = dir.join("libfixture_reloadable.so");
    std::fs::write(&file, &bytes[..bytes.len() / 2]).unwrap();
    file
}

#[test]
fn vxdldr_refuses_a_damaged_file_with_bad_device_file() {
    let file = truncated_reloadme(&scratch("vxdldr-damaged"));
    let mut m = booted(BASE);
    let r = m.load_dynamic_device(&file.display().to_string(), true);
    assert_eq!(r.map_err(|(c, _)| c), Err(VXDLDR_ERR_BAD_DEVICE_FILE));
    let t = trace_of(&m);
    t.expect_in_order(&[
        json!({"kind": "plugin_rejected", "file": file.display().to_string(), "defect": "truncated"}),
        json!({"kind": "vxdldr", "op": "load", "result": "VXDLDR_ERR_BAD_DEVICE_FILE"}),
    ]);
    // The machine is consistent: the good build loads and answers.
    m.load_dynamic_device("fixture-reloadable", true).unwrap();
    assert_eq!(service(&mut m, 1), 1);
    m.shutdown().unwrap();
}

#[test]
fn a_ring3_program_asking_vxdldr_for_a_damaged_file_gets_an_error_code() {
    let file = truncated_reloadme(&scratch("ring3-damaged"));
    let run = Scenario::new(&format!(
        r#"
            [386Enh]
            device = ["*VXDLDR"]
            [[vm]]
            name = "DOS1"
            program = "DOSLOAD"
            args = "load {};load fixture-reloadable;api"
        "#,
        file.display()
    ))
    .module::<DosLoader>()
    .run();
    run.assert_ok();
    let out: Vec<String> = run
        .trace()
        .values(json!({"kind": "program_output", "module": "DOSLOAD"}), "text")
        .into_iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        out,
        [
            format!("load {}: cf=1 ax={VXDLDR_ERR_BAD_DEVICE_FILE}", file.display()),
            "load fixture-reloadable: cf=0 ax=1".to_string(),
            "api true ax=1 bx=0 cf=0".to_string(),
        ]
    );
    run.trace().expect(json!({"kind": "plugin_rejected", "defect": "truncated"}));
}

/// Make `change` to watched files, then run watching until a reload
/// report that `done` accepts (each report is also collected).
fn run_until_reload(
    m: &mut Machine,
    watcher: &vmm_host::watch::Watcher,
    change: impl FnOnce() + Send + 'static,
    done: impl Fn(&vmm_host::dynamic::ReloadReport) -> bool,
) -> Vec<vmm_host::dynamic::ReloadReport> {
    let writer = std::thread::spawn(change);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut reports = Vec::new();
    while !reports.last().is_some_and(&done) {
        assert!(std::time::Instant::now() < deadline, "no reload within 30 s: {reports:?}");
        // Wait for the watcher first: the machine does not run ahead of it.
        while !watcher.has_changes() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        m.run_watching(watcher, Some(deadline), &mut |r| {
            reports.push(r.clone());
            std::ops::ControlFlow::Break(())
        })
        .unwrap();
    }
    writer.join().unwrap();
    reports
}

/// Replace `file` in one step (write beside it, rename onto it).
fn replace_file(file: &std::path::Path, bytes: &[u8]) {
    let tmp = file.with_extension("tmp");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, file).unwrap();
}

/// RELOADME loaded from a copy in a scratch directory, its counter at 3,
/// and a watcher on the copy.
fn watched_reloadme(name: &str) -> (Machine, std::path::PathBuf, vmm_host::watch::Watcher) {
    let file = scratch(name).join("libfixture_reloadable.so");
    std::fs::copy(lib("fixture_reloadable"), &file).unwrap();
    let mut m = booted(BASE);
    m.load_dynamic_device(&file.display().to_string(), true).unwrap();
    for _ in 0..3 {
        service(&mut m, 3);
    }
    let watcher = vmm_host::watch::Watcher::new(&m.plugin_devices(), std::time::Duration::from_millis(25)).unwrap();
    (m, file, watcher)
}

#[test]
fn a_plugin_written_in_two_pieces_is_reloaded_once_when_complete() {
    let (mut m, file, watcher) = watched_reloadme("pieces");
    // A new build: the same code with other bytes at the end.
    let mut next = std::fs::read(&file).unwrap();
    next.extend_from_slice(b"a later build");
    let want = format!("{:016x}", vmm_host::loader::content_hash(&next));
    let (f, bytes) = (file.clone(), next.clone());
    let reports = run_until_reload(
        &mut m,
        &watcher,
        move || {
            use std::io::Write;
            let mut out = std::fs::File::create(&f).unwrap();
            let half = bytes.len() / 2;
            out.write_all(&bytes[..half]).unwrap();
            out.flush().unwrap();
            std::thread::sleep(std::time::Duration::from_millis(150));
            out.write_all(&bytes[half..]).unwrap();
        },
        |r| r.ok(),
    );
    // Nothing more comes of it.
    std::thread::sleep(std::time::Duration::from_millis(400));
    assert!(!watcher.has_changes());
    let ok: Vec<_> = reports.iter().filter(|r| r.ok()).collect();
    assert_eq!(ok.len(), 1, "{reports:?}");
    assert_eq!(ok[0].result, "ok");
    assert_eq!(ok[0].new_build, want, "the complete file runs");
    // A pause longer than the watcher's grace shows the half file as
    // refused first; it never runs.
    for r in reports.iter().filter(|r| !r.ok()) {
        assert_eq!(r.result, "load_failed", "{r:?}");
        assert!(r.message.as_deref().unwrap_or("").contains("defect: truncated"), "{r:?}");
    }
    assert_eq!(service(&mut m, 2), 3, "the state came along");
    m.shutdown().unwrap();
    trace_of(&m).expect(json!({"kind": "reload", "device": "RELOADME", "result": "ok", "new_build": want}));
}

#[test]
fn a_damaged_rebuild_under_watch_is_refused_and_the_old_code_keeps_running() {
    let (mut m, file, watcher) = watched_reloadme("damaged");
    let good = std::fs::read(&file).unwrap();
    let mut damaged = good.clone();
    // Another machine's build.
    damaged[18..20].copy_from_slice(&(if cfg!(target_arch = "aarch64") { 62u16 } else { 183u16 }).to_le_bytes());
    let f = file.clone();
    let reports = run_until_reload(&mut m, &watcher, move || replace_file(&f, &damaged), |_| true);
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0].result, "load_failed", "{:?}", reports[0]);
    assert!(reports[0].message.as_deref().unwrap_or("").contains("wrong_machine"), "{:?}", reports[0]);
    assert_eq!(service(&mut m, 2), 3, "the old instance runs with its state");
    trace_of(&m)
        .expect(json!({"kind": "plugin_rejected", "file": file.display().to_string(), "defect": "wrong_machine"}));
    // The file is still watched: a good build after it is loaded.
    let mut next = good;
    next.extend_from_slice(b"fixed");
    let f = file.clone();
    let reports = run_until_reload(&mut m, &watcher, move || replace_file(&f, &next), |_| true);
    assert_eq!(reports[0].result, "ok", "{:?}", reports[0]);
    assert_eq!(service(&mut m, 2), 3);
    m.shutdown().unwrap();
}

#[test]
fn vpostd_swapped_for_another_device_comes_back_when_its_build_is_put_back() {
    // VPOSTD runs from a copy; DOS1 holds its V86 entry point and posts
    // at 0, 1000 and 2000 ms.
    let file = scratch("swap").join("libvpostd.so");
    std::fs::copy(lib("vpostd"), &file).unwrap();
    let vpostd = std::fs::read(&file).unwrap();
    let mut m = Scenario::new(&format!(
        r#"
            [386Enh]
            device = ["*SHELL", "*VXDLDR", "{}"]
            [windows]
            load = ["POSTAPP"]
            [[vm]]
            name = "DOS1"
            program = "POSTDOS"
            args = "count=3 interval=1000"
        "#,
        file.display()
    ))
    .machine()
    .expect("manifest");
    m.boot().expect("boot");
    m.run_for(vmm_host::time::Duration::from_millis(500)).unwrap();
    let watcher = vmm_host::watch::Watcher::new(&m.plugin_devices(), std::time::Duration::from_millis(25)).unwrap();

    // Another device's build in VPOSTD's file: VPOSTD leaves.
    let other = std::fs::read(lib("fixture_reloadable")).unwrap();
    let f = file.clone();
    let reports = run_until_reload(&mut m, &watcher, move || replace_file(&f, &other), |_| true);
    assert_eq!(reports[0].result, "replaced", "{:?}", reports[0]);
    m.run_for(vmm_host::time::Duration::from_millis(1000)).unwrap();

    // VPOSTD's build back: it loads again, with the state it left with.
    let f = file.clone();
    let reports = run_until_reload(&mut m, &watcher, move || replace_file(&f, &vpostd), |_| true);
    assert_eq!(reports[0].result, "replaced", "{:?}", reports[0]);
    assert_eq!(reports[0].device, "RELOADME");
    assert!(reports[0].state_bytes.is_some_and(|n| n > 0), "VPOSTD's state came back: {:?}", reports[0]);
    m.run().unwrap();
    m.shutdown().unwrap();

    let t = trace_of(&m);
    t.expect_in_order(&[
        json!({"kind": "device_unloaded", "device": "VPOSTD"}),
        json!({"kind": "device_loaded", "device": "RELOADME"}),
        json!({"kind": "device_unloaded", "device": "RELOADME"}),
        json!({"kind": "device_loaded", "device": "VPOSTD", "id": 0x4321}),
    ]);
    let delivered: Vec<(u64, u64)> = t
        .matching(json!({"kind": "message_delivered", "msg": 0x0500}))
        .into_iter()
        .map(|r| (r["wparam"].as_u64().unwrap(), r["lparam"].as_u64().unwrap()))
        .collect();
    assert_eq!(delivered, [(2, 1), (2, 3)], "the post made while VPOSTD was away was refused; the next got through");
    let out: Vec<String> = t
        .values(json!({"kind": "program_output", "module": "POSTDOS"}), "text")
        .into_iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert!(out.iter().any(|l| l.starts_with("message 2 refused")), "{out:?}");
    assert!(out.iter().any(|l| l.contains("posted 2 messages, 1 refused")), "{out:?}");
}

#[test]
fn a_file_whose_replacement_did_not_load_loads_its_device_again() {
    let file = scratch("nothing-runs").join("libfixture_reloadable.so");
    std::fs::copy(lib("fixture_reloadable"), &file).unwrap();
    let reloadme = std::fs::read(&file).unwrap();
    let mut m = booted(
        r#"
        [386Enh]
        device = ["*VXDLDR", "fixture-dup-a"]
    "#,
    );
    m.load_dynamic_device(&file.display().to_string(), true).unwrap();
    for _ in 0..3 {
        service(&mut m, 3);
    }
    let watcher = vmm_host::watch::Watcher::new(&m.plugin_devices(), std::time::Duration::from_millis(25)).unwrap();
    // FXDUPB has FXDUPA's ID: RELOADME leaves, FXDUPB is refused.
    let dup = std::fs::read(lib("fixture_dup_b")).unwrap();
    let f = file.clone();
    let reports = run_until_reload(&mut m, &watcher, move || replace_file(&f, &dup), |r| r.device == "RELOADME");
    let last = reports.last().unwrap();
    assert_eq!(last.result, "load_failed", "{last:?}");
    assert!(last.message.as_deref().unwrap_or("").contains("did not load"), "{last:?}");
    // RELOADME's build back: nothing runs from the file, so it is loaded,
    // with the state it left with.
    let f = file.clone();
    let reports = run_until_reload(&mut m, &watcher, move || replace_file(&f, &reloadme), |_| true);
    assert_eq!(reports[0].result, "loaded", "{:?}", reports[0]);
    assert_eq!(reports[0].device, "RELOADME");
    assert_eq!(reports[0].state_bytes, Some(8));
    assert_eq!(service(&mut m, 2), 3, "the counter came back");
    m.shutdown().unwrap();
    trace_of(&m).expect(json!({"kind": "reload", "device": "RELOADME", "result": "loaded"}));
}
