//! The scheduler in users' hands: a burst of posts whose boosts pile up,
//! waits that can never end (`DEADLOCK`), work that keeps virtual time
//! still (`LIVELOCK`), teardown at shutdown, and `[machine]` values that
//! make no sense.

use std::cell::Cell;

use vmm_plugin_api::prelude::*;
use vmm_testkit::{Scenario, ScriptDevice, json};

const SYS: u64 = 0x0001_0001;
const WM_VPOSTD: u64 = 0x0500;
const VPOSTD_ID: u16 = 0x4321;

/// VPOSTD with POSTAPP registered, and `rest`.
fn vpostd(rest: &str) -> Scenario {
    Scenario::new(&format!(
        "[386Enh]\ndevice = [\"*SHELL\", \"VPOSTD.386\"]\n[windows]\nload = [\"POSTAPP queue=120 quiet\"]\n{rest}"
    ))
}

/// BURSTDOS: a DOS program that makes `count=N` VPOSTD posts in its first
/// ring-3 step (no time passes between them), then exits.
struct BurstDos {
    refused: Cell<u32>,
}

impl Module for BurstDos {
    const MODULE: ModuleDef = ModuleDef::dos_program("BURSTDOS").segments(&[Segment::moveable("_TEXT")]);

    fn create(_r3: &Ring3<'_>) -> Result<Self, String> {
        Ok(BurstDos { refused: Cell::new(0) })
    }

    fn start(&self, r3: &Ring3<'_>, args: &str) -> Step {
        let count: u32 = args.strip_prefix("count=").and_then(|n| n.parse().ok()).unwrap_or(1);
        let regs = r3.regs();
        regs.set_ax(0x1683);
        let _ = r3.int(0x2F);
        let vm_id = regs.bx();
        regs.set_ax(0x1684);
        regs.set_bx(VPOSTD_ID);
        regs.set_es_raw(0);
        regs.set_di(0);
        let _ = r3.int(0x2F);
        let entry = FarPtr::new(regs.es() as u16, regs.di());
        if entry.is_null() {
            return Step::exit(1);
        }
        for seq in 1..=count {
            regs.set_bx(vm_id);
            regs.set_dx(0);
            regs.set_ax(seq as u16);
            if r3.call(entry, &[]).is_err() || regs.carry() {
                self.refused.set(self.refused.get() + 1);
            }
        }
        Step::exit(self.refused.get())
    }

    fn resume(&self, _r3: &Ring3<'_>, _wake: Wake) -> Step {
        Step::exit(0)
    }
}

#[test]
fn posts_made_in_one_step_are_all_delivered_however_many_boosts_pile_up() {
    // 256 pending events of High_Pri_Device_Boost add up to
    // Critical_Section_Boost on the system VM: their own boosts must not
    // read as a critical section their PEF_Wait_Not_Crit waits out.
    let run =
        vpostd("[VPOSTD]\nMaxPending = 4096\n[[vm]]\nname = \"DOS1\"\nprogram = \"BURSTDOS\"\nargs = \"count=256\"\n")
            .module::<BurstDos>()
            .run();
    run.assert_ok();
    let t = run.trace();
    assert_eq!(t.count(json!({"kind": "note", "device": "VPOSTD", "note": "post_queued"})), 256, "{}", t.tail(10));
    t.expect(json!({"kind": "priority", "vm": SYS, "priority": 100 + 256 * 0x1000}));
    t.expect(json!({"kind": "program_ended", "module": "BURSTDOS", "exit_code": 0}));
    assert_eq!(t.count(json!({"kind": "message_delivered", "msg": WM_VPOSTD})), 256, "{}", t.tail(10));
    t.expect_none(json!({"kind": "note", "device": "VPOSTD", "note": "post_dropped"}));
    t.expect_none(json!({"kind": "deadlock"}));
}

/// VPOSTD with one post from DOS1 at 20 ms while the system VM has
/// interrupts disabled for good (from 10 ms): the post's event waits for
/// STI forever.
fn post_into_a_cli_forever(rest: &str) -> Scenario {
    vpostd(&format!(
        "[[action]]\nat = 10\nvm = \"system\"\naction = \"cli\"\n\
         [[vm]]\nname = \"DOS1\"\nat = 20\nprogram = \"POSTDOS\"\nargs = \"count=1\"\n{rest}"
    ))
}

/// The run ended with a deadlock naming VPOSTD's event, at `t` ms.
fn expect_vpostd_deadlock(t: &vmm_testkit::Trace) -> u64 {
    let d = t.expect(json!({"kind": "deadlock"}));
    let events = d["events"].as_array().expect("events");
    assert_eq!(events.len(), 1, "{d}");
    let e = &events[0];
    assert_eq!(e["device"], "VPOSTD", "{d}");
    assert_eq!(e["vm"], SYS, "{d}");
    assert_eq!(e["event"], "priority", "{d}");
    assert_eq!(e["waits_for"], json!(["PEF_Wait_For_STI"]), "{d}");
    let handle = e["handle"].as_u64().unwrap();
    t.expect(json!({"kind": "event_scheduled", "handle": handle, "device": "VPOSTD"}));
    let at = d["t"].as_u64().unwrap();
    t.expect_in_order(&[
        json!({"kind": "deadlock"}),
        json!({"kind": "violation", "code": "DEADLOCK"}),
        json!({"kind": "fatal_error"}),
    ]);
    let fatal = t.expect(json!({"kind": "fatal_error"}));
    let message = fatal["message"].as_str().unwrap();
    assert!(message.contains("VPOSTD") && message.contains("PEF_Wait_For_STI"), "{message}");
    at
}

#[test]
fn a_pending_event_that_can_never_run_is_a_deadlock_naming_it() {
    let run = post_into_a_cli_forever("").run();
    let e = run.expect_error().to_string();
    assert!(e.contains("deadlock"), "{e}");
    expect_vpostd_deadlock(run.trace());
}

#[test]
fn a_deadlock_is_reported_when_it_happens_even_with_until_ahead() {
    let run = post_into_a_cli_forever("[machine]\nuntil = \"10s\"\n").run();
    assert!(run.expect_error().to_string().contains("deadlock"));
    let at = expect_vpostd_deadlock(run.trace());
    assert!(at < 1_000, "reported at {at} ms, not when the machine got stuck");
}

#[test]
fn run_for_reports_a_deadlock_too() {
    let mut session = post_into_a_cli_forever("").boot();
    let r = session.machine().run_for(vmm_host::time::Duration::from_secs(10));
    let e = r.expect_err("a deadlock").to_string();
    assert!(e.contains("deadlock"), "{e}");
    let at = expect_vpostd_deadlock(&session.trace());
    assert!(at < 1_000, "reported at {at} ms");
}

#[test]
fn a_dos_vm_still_running_at_shutdown_is_torn_down_once() {
    let run = vpostd(
        "[machine]\nuntil = \"500ms\"\n[[vm]]\nname = \"DOS1\"\nprogram = \"POSTDOS\"\nargs = \"count=6 interval=250\"\n",
    )
    .run();
    run.assert_ok();
    let t = run.trace();
    let dos1 = t.expect(json!({"kind": "vm_created", "name": "DOS1"}))["vm"].clone();
    assert_eq!(t.count(json!({"kind": "vm_destroyed", "vm": dos1})), 1, "{}", t.tail(30));
    t.expect(json!({"kind": "vm_destroyed", "vm": dos1, "reason": "shutdown"}));
    for message in ["VM_Terminate", "VM_Not_Executeable", "Destroy_VM"] {
        assert_eq!(
            t.count(json!({"kind": "control", "device": "VPOSTD", "message": message, "vm": dos1})),
            1,
            "{message}"
        );
    }
}

// ---- livelock ---------------------------------------------------------------

/// A global event that schedules itself again: work forever at one instant.
fn spin(_dev: &ScriptDevice, vmm: &Vmm<'_>, _ev: Event) {
    vmm.schedule_global_event(spin).unwrap();
}

/// SCRIPT starts an endless chain of global events at Sys_VM_Init.
fn spinning() -> Scenario {
    Scenario::new("[386Enh]\ndevice = [\"SCRIPT\"]\n[machine]\nlivelock_limit = 5000\n").script(|_dev, vmm, msg| {
        if msg.message == SYS_VM_INIT {
            vmm.schedule_global_event(spin).unwrap();
        }
        Carry::Clear
    })
}

#[test]
fn work_that_keeps_virtual_time_still_is_a_livelock() {
    let run = spinning().run();
    let e = run.expect_error().to_string();
    assert!(e.contains("livelock") && e.contains("SCRIPT"), "{e}");
    let t = run.trace();
    let l = t.expect(json!({"kind": "livelock", "units": 5000, "device": "SCRIPT"}));
    assert!(l["events"].as_u64().unwrap() >= 4999, "{l}");
    t.expect_in_order(&[
        json!({"kind": "livelock"}),
        json!({"kind": "violation", "code": "LIVELOCK"}),
        json!({"kind": "fatal_error", "device": "SCRIPT"}),
    ]);
}

#[test]
fn a_livelock_is_detected_without_a_trace() {
    let run = spinning().without_trace().run();
    let e = run.expect_error().to_string();
    assert!(e.contains("livelock") && e.contains("5000 units of work"), "{e}");
}

#[test]
fn an_interrupt_storm_at_one_instant_is_a_livelock() {
    // The handler schedules an event that raises the interrupt again: the
    // guard counts interrupts taken and events alike.
    let run = Scenario::new(
        "[386Enh]\ndevice = [\"SCRIPT\"]\n[machine]\nlivelock_limit = 3000\n[[interrupt]]\nname = \"storm\"\nat = 5\n",
    )
    .script(|_dev, vmm, msg| {
        if msg.message == DEVICE_INIT {
            vmm.register_interrupt("storm", |_: &ScriptDevice, vmm, irq| {
                vmm.schedule_global_event(move |_: &ScriptDevice, vmm: &Vmm<'_>, _| {
                    vmm.request_interrupt(irq).unwrap();
                })
                .unwrap();
            })
            .unwrap();
        }
        Carry::Clear
    })
    .run();
    assert!(run.expect_error().to_string().contains("livelock"));
    let l = run.trace().expect(json!({"kind": "livelock", "units": 3000, "t": 5}));
    assert!(l["interrupts"].as_u64().unwrap() >= 1000 && l["events"].as_u64().unwrap() >= 1000, "{l}");
}

// ---- [machine] values -------------------------------------------------------------

#[test]
fn invalid_machine_values_are_refused_with_the_key_named() {
    let cases = [
        ("ring3_step = 0", "manifest#1:4:14", "ring3_step must be longer than 0"),
        ("ring3_step = \"0us\"", "manifest#1:4:14", "ring3_step must be longer than 0"),
        ("ring3_step = \"2s\"", "manifest#1:4:14", "ring3_step must be at most 1000ms"),
        ("time_slice = 0", "manifest#1:4:14", "time_slice must be longer than 0"),
        ("time_slice = \"10m\"", "manifest#1:4:14", "time_slice must be at most"),
        ("until = 0", "manifest#1:4:9", "until must be longer than 0"),
        ("until = \"60d\"", "manifest#1:4:9", "until: invalid duration"),
        ("until = \"100000m\"", "manifest#1:4:9", "until must be at most"),
        ("inject_rate = 1.5", "manifest#1:4:15", "inject_rate must be between 0 and 1"),
        ("inject_rate = nan", "manifest#1:4:15", "inject_rate must be between 0 and 1, got NaN"),
        ("inject_rate = -0.1", "manifest#1:4:15", "inject_rate must be between 0 and 1"),
        ("livelock_limit = 0", "manifest#1:4:18", "livelock_limit must be at least 1"),
        ("livelock_limit = -5", "manifest#1:4:18", "livelock_limit must be at least 1"),
        ("trace_limit = 10", "manifest#1:4:15", "trace_limit must be at least 1024 bytes"),
        ("trace_limit = \"5 parsecs\"", "manifest#1:4:15", "trace_limit: invalid size"),
        ("trace_limit = -1", "manifest#1:4:15", "trace_limit must not be negative"),
        ("pct_depth = 0", "manifest#1:4:13", "pct_depth must be from 1 to 1000, got 0"),
        ("pct_depth = 1001", "manifest#1:4:13", "pct_depth must be from 1 to 1000, got 1001"),
        ("pct_steps = 0", "manifest#1:4:13", "pct_steps must be at least 1, got 0"),
        ("pct_steps = -3", "manifest#1:4:13", "pct_steps must be at least 1, got -3"),
        ("order = \"sideways\"", "manifest#1:4:9", "unknown order `sideways`: expected lifo, fifo, random or pct"),
    ];
    for (line, place, message) in cases {
        // The value sits on line 4 of this manifest.
        let manifest = format!("[386Enh]\ndevice = []\n[machine]\n{line}\n");
        let run = Scenario::new(&manifest).run();
        let e = run.expect_error().to_string();
        assert!(e.contains(place) && e.contains(message), "{line}: {e}");
    }
}
