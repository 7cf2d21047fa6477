//! The test kit as a plugin author uses it: device sets per test with no
//! file on disk, a machine driven step by step, API calls, failure messages
//! that show what differed, and plugin crates found with their DLLs.

use std::cell::Cell;
use std::path::{Path, PathBuf};

use vmm_plugin_api::prelude::*;
use vmm_testkit::{ClientRegs, Duration, Regs, Scenario, Trace, differences, json};

// ---- device set A: a counter and a device that calls it ------------------

/// Exports `COUNTER_Add` (EAX in, new total out).
struct Counter {
    total: Cell<u32>,
}

impl VxD for Counter {
    const DEVICE: Device = Device::new("COUNTER").id(0x3B00).services(&["COUNTER_Get_Version", "COUNTER_Add"]);
    fn create(_: &Vmm<'_>) -> Result<Self, String> {
        Ok(Counter { total: Cell::new(0) })
    }
    fn service(&self, _: &Vmm<'_>, ordinal: u16, call: &mut ServiceCall) -> Carry {
        if ordinal != 1 {
            return Carry::Set;
        }
        self.total.set(self.total.get() + call.regs.eax);
        call.regs.eax = self.total.get();
        Carry::Clear
    }
}

/// Adds 2 to COUNTER at `Device_Init`.
struct Adder;

impl VxD for Adder {
    const DEVICE: Device = Device::new("ADDER");
    fn create(_: &Vmm<'_>) -> Result<Self, String> {
        Ok(Adder)
    }
    fn control(&self, vmm: &Vmm<'_>, msg: ControlMessage) -> Carry {
        if msg.message == DEVICE_INIT {
            let mut call = ServiceCall { regs: Regs { eax: 2, ..Regs::default() }, args: [0; 8] };
            let _ = vmm.vxd_call((0x3B00 << 16) | 1, &mut call);
        }
        Carry::Clear
    }
}

// ---- device set B: an interrupt source with a V86 and a PM API -----------

/// Registers interrupt `tick`; each tick schedules a global event that
/// notes how many ticks it handled. Its API (V86 and PM) returns the tick
/// count in AX, times the caller's BX.
struct Ticker {
    ticks: Cell<u32>,
}

impl VxD for Ticker {
    const DEVICE: Device = Device::new("TICKER").id(0x3B01).v86_api().pm_api();
    fn create(_: &Vmm<'_>) -> Result<Self, String> {
        Ok(Ticker { ticks: Cell::new(0) })
    }
    fn control(&self, vmm: &Vmm<'_>, msg: ControlMessage) -> Carry {
        if msg.message == DEVICE_INIT {
            let _ = vmm.register_interrupt("tick", |dev: &Ticker, vmm, _irq| {
                dev.ticks.set(dev.ticks.get() + 1);
                let _ = vmm.schedule_global_event(|dev: &Ticker, vmm, _ev| {
                    let _ = vmm.trace_note("ticks", &[("n", dev.ticks.get().into())]);
                });
            });
        }
        Carry::Clear
    }
    fn v86_api(&self, vmm: &Vmm<'_>, call: ApiCall<'_>) {
        self.pm_api(vmm, call)
    }
    fn pm_api(&self, _: &Vmm<'_>, call: ApiCall<'_>) {
        call.client.set_ax((self.ticks.get() as u16).wrapping_mul(call.client.bx()));
        call.client.set_carry(false);
    }
}

#[test]
fn device_set_a_boots_from_an_inline_manifest() {
    let run = Scenario::new("[386Enh]\ndevice = [\"COUNTER\", \"ADDER\"]").device::<Counter>().device::<Adder>().run();
    run.assert_ok();
    let t = run.trace();
    t.expect(json!({"kind": "vxd_call", "caller": "ADDER", "service": "COUNTER_Add", "result": "clear"}));
    t.expect_none(json!({"kind": "device_loaded", "device": "TICKER"}));
}

#[test]
fn device_set_b_boots_in_the_next_test_with_nothing_of_set_a() {
    let run = Scenario::new("[386Enh]\ndevice = [\"TICKER\"]").device::<Ticker>().run();
    run.assert_ok();
    run.trace().expect(json!({"kind": "device_loaded", "device": "TICKER", "id": 0x3B01}));
    run.trace().expect_none(json!({"kind": "device_loaded", "device": "COUNTER"}));
}

#[test]
fn a_session_drives_time_and_interrupts_and_shows_the_trace_between() {
    let mut s = Scenario::new("[386Enh]\ndevice = [\"TICKER\"]").device::<Ticker>().boot();
    s.run_until(Duration::from_millis(30));
    assert_eq!(s.now(), Duration::from_millis(30));
    assert_eq!(s.trace().count(json!({"kind": "interrupt"})), 0);

    s.raise_interrupt("tick");
    let t = s.trace();
    t.expect(json!({"kind": "interrupt", "name": "tick", "device": "TICKER", "t": 30}));
    t.expect(json!({"kind": "note", "device": "TICKER", "note": "ticks", "fields": {"n": 1}}));

    s.run_for(Duration::from_millis(5)).raise_interrupt("tick");
    s.trace().expect(json!({"kind": "note", "note": "ticks", "fields": {"n": 2}, "t": 35}));

    let run = s.finish();
    run.assert_ok();
    assert_eq!(run.trace().count(json!({"kind": "interrupt", "name": "tick"})), 2);
}

#[test]
#[should_panic(expected = "no interrupt source named `tock`")]
fn raising_an_unknown_interrupt_names_it() {
    Scenario::new("[386Enh]\ndevice = [\"TICKER\"]").device::<Ticker>().boot().raise_interrupt("tock");
}

#[test]
fn a_session_calls_apis_the_way_ring_3_does() {
    let mut s = Scenario::new("[386Enh]\ndevice = [\"TICKER\"]").device::<Ticker>().boot();
    s.raise_interrupt("tick").raise_interrupt("tick");
    let pm = s.call_pm_api(0x3B01, ClientRegs { ebx: 21, ..ClientRegs::default() }).unwrap();
    assert_eq!(pm.eax & 0xFFFF, 42);
    let v86 = s.call_v86_api(0x3B01, ClientRegs { ebx: 5, ..ClientRegs::default() }).unwrap();
    assert_eq!(v86.eax & 0xFFFF, 10);
    assert_eq!(s.call_pm_api(0x3B77, ClientRegs::default()), None, "no device 3B77h: INT 2Fh returns 0:0");
    let run = s.finish();
    run.assert_ok();
    let t = run.trace();
    t.expect_in_order(&[
        json!({"kind": "int2f", "ax": 0x1684, "bx": 0x3B01}),
        json!({"kind": "api_call", "device": "TICKER", "mode": "pm", "regs_in": {"ebx": 21}, "carry": false}),
        json!({"kind": "vm_created", "name": "KITV86"}),
        json!({"kind": "api_call", "device": "TICKER", "mode": "v86", "regs_out": {"eax": 10}}),
        json!({"kind": "vm_destroyed", "reason": "program_ended"}),
    ]);
}

#[test]
fn a_session_starts_programs_and_creates_vms() {
    /// A DOS program that prints its arguments.
    struct Echo;
    impl Module for Echo {
        const MODULE: ModuleDef = ModuleDef::dos_program("ECHO");
        fn create(_: &Ring3<'_>) -> Result<Self, String> {
            Ok(Echo)
        }
        fn start(&self, r3: &Ring3<'_>, args: &str) -> Step {
            r3.print(args);
            Step::exit(7)
        }
    }
    let mut s = Scenario::new("[386Enh]\ndevice = []").module::<Echo>().boot();
    let vm = s.create_vm("DOS9").expect("no device refuses");
    assert_eq!(s.vm("DOS9"), Some(vm));
    s.start_program(vm, "ECHO", "hello there").expect("ECHO loads");
    s.run_for(Duration::from_millis(1));
    let t = s.trace();
    t.expect(json!({"kind": "program_output", "vm": vm, "module": "ECHO", "text": "hello there"}));
    t.expect(json!({"kind": "program_ended", "module": "ECHO", "exit_code": 7}));
    assert_eq!(s.vm("DOS9"), None, "a DOS program's VM ends with it");
    assert_eq!(s.start_program(s.system_vm(), "NOSUCH", ""), None);
    s.finish().assert_ok();
}

#[test]
fn services_are_called_from_the_session() {
    let mut s = Scenario::new("[386Enh]\ndevice = [\"COUNTER\"]").device::<Counter>().boot();
    let regs = s.call_service(0x3B00, 1, Regs { eax: 5, ..Regs::default() });
    assert_eq!((regs.eax, regs.flags & CF_MASK), (5, 0));
    let regs = s.call_service(0x3B00, 1, Regs { eax: 6, ..Regs::default() });
    assert_eq!(regs.eax, 11);
    s.shutdown().assert_ok();
}

// ---- failure messages ------------------------------------------------------

/// The panic message of `f`.
fn panic_message(f: impl FnOnce() + std::panic::UnwindSafe) -> String {
    let payload = std::panic::catch_unwind(f).expect_err("the assertion passed");
    payload.downcast_ref::<String>().cloned().unwrap_or_default()
}

#[test]
fn a_failed_expect_shows_the_nearest_records_and_the_fields_that_differ() {
    let run = Scenario::new("[386Enh]\ndevice = [\"COUNTER\", \"ADDER\"]").device::<Counter>().device::<Adder>().run();
    let trace = run.trace().clone();
    let message = panic_message(move || {
        trace.expect(json!({"kind": "vxd_call", "caller": "ADDER", "service": "COUNTER_Sub"}));
    });
    assert!(message.starts_with("no trace record matches"), "{message}");
    assert!(message.contains("1 record(s) of kind \"vxd_call\""), "{message}");
    assert!(message.contains("service: expected \"COUNTER_Sub\", found \"COUNTER_Add\""), "{message}");

    let trace = run.trace().clone();
    let message = panic_message(move || {
        trace.expect(json!({"kind": "appy_dispatched"}));
    });
    assert!(message.contains("0 record(s) of kind \"appy_dispatched\""), "{message}");
    assert!(message.contains("\"vxd_call\" (1)"), "the kinds present are listed: {message}");

    let trace = run.trace().clone();
    let message = panic_message(move || {
        trace.expect_in_order(&[
            json!({"kind": "control", "device": "ADDER", "message": "Init_Complete"}),
            json!({"kind": "vxd_call", "caller": "ADDER"}),
        ]);
    });
    assert!(message.contains("the order differs"), "{message}");
}

#[test]
fn differences_name_nested_fields() {
    let record = json!({"kind": "api_call", "regs_out": {"eax": 1, "ebx": 2}});
    assert_eq!(
        differences(&record, &json!({"kind": "api_call", "regs_out": {"eax": 3}, "carry": true})),
        ["carry: expected true, missing", "regs_out.eax: expected 3, found 1"]
    );
    assert!(differences(&record, &json!({"regs_out": {"ebx": 2}})).is_empty());
    assert_eq!(Trace::default().count(json!({})), 0);
}

// ---- plugin crates ---------------------------------------------------------

#[test]
fn a_plugin_crate_is_built_with_the_dlls_it_uses() {
    // APPYDEMO loads APPYDLL.DLL by name; its package says so in `uses`.
    let appydemo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/appydemo");
    let run =
        Scenario::new(&std::fs::read_to_string(appydemo.join("appydemo.ini")).unwrap()).plugin_crate(&appydemo).run();
    run.assert_ok();
    run.trace().expect(json!({"kind": "module_loaded", "module": "APPYDLL"}));
}

/// A crate directory with `Cargo.toml` text and an empty `src/lib.rs`.
fn fixture_crate(root: &Path, name: &str, toml: &str) -> PathBuf {
    let dir = root.join(name);
    std::fs::create_dir_all(dir.join("src")).unwrap();
    std::fs::write(dir.join("Cargo.toml"), toml).unwrap();
    std::fs::write(dir.join("src/lib.rs"), "").unwrap();
    dir
}

#[test]
fn the_dlls_a_standalone_crate_uses_come_from_its_dependencies() {
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("kit-uses");
    let _ = std::fs::remove_dir_all(&root);
    let lib = r#"
        [lib]
        crate-type = ["cdylib", "rlib"]
    "#;
    fixture_crate(
        &root,
        "usedll",
        &format!(
            r#"
        [package]
        name = "usedll"
        edition = "2024"
        {lib}[workspace]
    "#
        ),
    );
    let vxd = fixture_crate(
        &root,
        "usevxd",
        &format!(
            r#"
                [package]
                name = "usevxd"
                edition = "2024"
                {lib}[workspace]
                [dev-dependencies]
                usedll = {{ path = "../usedll" }}
                [package.metadata.vmm]
                uses = ["USEDLL.DLL"]
            "#
        ),
    );
    let (_, packages) = vmm_host::cargo::crate_plugins(&vxd).unwrap();
    let names: Vec<&str> = packages.iter().map(|p| p.package.as_str()).collect();
    assert_eq!(names, ["usevxd", "usedll"]);
    // The kit builds a DLL that is only a dev-dependency (a plain
    // `cargo build -p usedll` makes cargo's feature resolver panic).
    let built = vmm_testkit::plugin_crate_dir(&vxd).expect("the crate and its dev-dependency build");
    assert!(built.join("libusedll.so").is_file() && built.join("libusevxd.so").is_file(), "{}", built.display());

    let lonely = fixture_crate(
        &root,
        "lonely",
        &format!(
            r#"
                [package]
                name = "lonely"
                edition = "2024"
                {lib}[workspace]
                [package.metadata.vmm]
                uses = ["NOWHERE"]
            "#
        ),
    );
    let err = vmm_host::cargo::crate_plugins(&lonely).unwrap_err();
    assert!(err.contains("uses `NOWHERE`") && err.contains("libnowhere.so"), "{err}");

    let plain = fixture_crate(
        &root,
        "plain",
        r#"
        [package]
        name = "plain"
        edition = "2024"
        [workspace]
    "#,
    );
    let err = vmm_host::cargo::crate_plugins(&plain).unwrap_err();
    assert!(err.contains("no cdylib target"), "{err}");
}

#[test]
fn a_failing_plugin_build_shows_cargos_whole_error() {
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("kit-broken");
    let _ = std::fs::remove_dir_all(&root);
    let broken = fixture_crate(
        &root,
        "broken",
        r#"
            [package]
            name = "broken"
            edition = "2024"
            [lib]
            crate-type = ["cdylib", "rlib"]
            [workspace]
        "#,
    );
    std::fs::write(broken.join("src/lib.rs"), "pub fn f() -> u8 { \"not a number\" }\n").unwrap();
    let err = vmm_testkit::plugin_crate_dir(&broken).unwrap_err();
    // The command, the compiler's diagnostic with its location, and cargo's
    // closing line: nothing cut.
    assert!(err.contains("cargo build --profile dev -p broken"), "{err}");
    assert!(err.contains("error[E0308]: mismatched types"), "{err}");
    assert!(err.contains("src/lib.rs:1:"), "{err}");
    assert!(err.contains("could not compile `broken`"), "{err}");
}

#[test]
fn assert_clean_fails_a_run_that_reported_a_violation_and_names_it() {
    // A synchronous service at interrupt time: the call is refused, the
    // run goes on and succeeds, so assert_ok passes it; assert_clean does
    // not.
    let run = crate::common::on_go(crate::common::GO_AT_10, |_dev, vmm| {
        let _ = vmm.cancel_time_out(TimeoutHandle(0x1234_5678));
    })
    .run();
    run.assert_ok();
    let message = panic_message(move || run.assert_clean());
    assert!(message.starts_with("the run reported 1 violation(s); the first:"), "{message}");
    assert!(message.contains("SYNC_SERVICE_AT_INTERRUPT"), "{message}");

    let clean = crate::common::on_go(crate::common::GO_AT_10, |_dev, vmm| {
        let _ = vmm.get_system_time();
    })
    .run();
    clean.assert_clean();
}
