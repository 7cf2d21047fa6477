//! Deep recursion through the VMM: a device's service that `VxDCall`s
//! itself, an event callback that runs the next event inline. Past
//! `MAX_CALL_DEPTH` nested plugin calls the machine stops with a fatal
//! error naming the device and the depth, and the process lives on, on the
//! default 2 MiB test thread too.

use vmm_host::machine::MAX_CALL_DEPTH;
use vmm_testkit::{Run, Scenario, json};

fn deep(via: &str, depth: u32) -> Run {
    Scenario::new(&format!(
        r#"
        [386Enh]
        device = ["FXDEEP"]
        [FXDEEP]
        Depth = {depth}
        Via = "{via}"
        "#
    ))
    .device::<fixture_deep::Deep>()
    .run()
}

fn expect_too_deep(run: &Run, entry: &str) {
    let message = format!(
        "plugin calls nested too deep: calling FXDEEP's {entry} entry point would be call {} on the stack (the limit is \
         {MAX_CALL_DEPTH})",
        MAX_CALL_DEPTH + 1
    );
    let t = run.trace();
    t.expect(json!({"kind": "fatal_error", "device": "FXDEEP", "message": message}));
    t.expect_none(json!({"kind": "note", "device": "FXDEEP", "note": "bottom"}));
    assert_eq!(t.count(json!({"kind": "fatal_error"})), 1);
    t.expect(json!({"kind": "phase", "phase": "stopped"}));
}

#[test]
fn a_service_that_vxdcalls_itself_15000_deep_is_a_fatal_error_naming_the_device_and_the_depth() {
    let run = deep("vxdcall", 15_000);
    run.expect_error();
    expect_too_deep(&run, "service");
}

#[test]
fn inline_call_global_events_nested_15000_deep_are_a_fatal_error_naming_the_device_and_the_depth() {
    let run = deep("event", 15_000);
    run.expect_error();
    expect_too_deep(&run, "callback");
}

#[test]
fn recursion_within_the_limit_reaches_the_bottom() {
    // Init_Complete is the first call on the stack: the levels below it
    // can go MAX_CALL_DEPTH - 1 deep.
    for via in ["vxdcall", "event"] {
        let run = deep(via, MAX_CALL_DEPTH - 1);
        run.assert_ok();
        run.trace().expect(
            json!({"kind": "note", "device": "FXDEEP", "note": "bottom", "fields": {"depth": MAX_CALL_DEPTH - 1}}),
        );
    }
}

#[test]
fn the_limit_is_reached_at_the_same_call_every_run() {
    for via in ["vxdcall", "event"] {
        let a = deep(via, MAX_CALL_DEPTH);
        let b = deep(via, MAX_CALL_DEPTH);
        assert_eq!(a.trace().records(), b.trace().records());
        a.trace().expect(json!({"kind": "fatal_error", "device": "FXDEEP"}));
    }
}

/// Prints the host stack one level of each kind costs in this build
/// (`cargo test -p vmm-e2e --test e2e -- depth:: --ignored --nocapture`, with
/// and without `--release`); ARCHITECTURE.md has the numbers.
#[test]
#[ignore = "a measurement, not a check"]
fn measure_the_stack_a_level_costs() {
    for via in ["vxdcall", "event"] {
        let levels = 200;
        let run = Scenario::new(&format!(
            "[386Enh]\ndevice = [\"FXDEEP\"]\n[FXDEEP]\nDepth = {levels}\nVia = \"{via}\"\nMeasure = true\n"
        ))
        .device::<fixture_deep::Deep>()
        .run();
        run.assert_ok();
        let fields = run.trace().values(json!({"kind": "note", "note": "bottom"}), "fields");
        let bytes = fields[0]["stack_bytes"].as_u64().unwrap();
        println!("{via}: {} bytes per level", bytes / levels as u64);
    }
}

#[test]
fn the_limit_holds_on_a_2_mib_thread() {
    // Whatever RUST_MIN_STACK says, on a thread with cargo test's default
    // stack.
    std::thread::Builder::new()
        .stack_size(2 * 1024 * 1024)
        .spawn(|| {
            for (via, entry) in [("vxdcall", "service"), ("event", "callback")] {
                let run = deep(via, 15_000);
                run.expect_error();
                expect_too_deep(&run, entry);
            }
        })
        .unwrap()
        .join()
        .unwrap();
}
