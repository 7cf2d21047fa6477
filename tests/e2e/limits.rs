//! Extreme arguments and the promises violations make: no count, size or
//! handle wraps (in release builds too: CI runs this module with
//! `--release`), a refused call returns `VIOLATION`, nothing of a device
//! runs after a fatal error, and the records name who broke the rule.

use std::sync::atomic::{AtomicU32, Ordering};

use vmm_plugin_api::prelude::*;
use vmm_testkit::{ClientRegs, Scenario, ScriptDevice, Value, json};

use crate::common::notes;

/// A SCRIPT device that runs `f` in its Device_Init.
fn at_device_init(extra: &str, f: impl Fn(&ScriptDevice, &Vmm<'_>) + 'static) -> Scenario {
    Scenario::new(&format!(
        r#"
        [386Enh]
        device = ["SCRIPT"]
        {extra}"#
    ))
    .script(move |dev, vmm, msg| {
        if msg.message == DEVICE_INIT {
            f(dev, vmm);
        }
        Carry::Clear
    })
}

/// A SCRIPT device that runs `f` in a global event scheduled at
/// Init_Complete (an event callback: nested execution is legal there).
fn in_an_event(extra: &str, f: impl Fn(&ScriptDevice, &Vmm<'_>) + Clone + 'static) -> Scenario {
    Scenario::new(&format!(
        r#"
        [386Enh]
        device = ["SCRIPT"]
        {extra}"#
    ))
    .script(move |_dev, vmm, msg| {
        if msg.message == INIT_COMPLETE {
            let f = f.clone();
            vmm.schedule_global_event(move |dev: &ScriptDevice, vmm, _| f(dev, vmm)).unwrap();
        }
        Carry::Clear
    })
}

#[test]
fn a_cb_area_of_0xffffffff_reserves_nothing_and_the_next_area_is_correct() {
    let run = at_device_init("", |dev, vmm| {
        let huge = vmm.allocate_device_cb_area(0xFFFF_FFFF, 0);
        let almost = vmm.allocate_device_cb_area(0xFFFF_FFFD, 0);
        let a = vmm.allocate_device_cb_area(6, 0);
        let b = vmm.allocate_device_cb_area(4, 0);
        let rest = vmm.allocate_device_cb_area(0x1_0000 - 0x108 - 4, 0);
        let full = vmm.allocate_device_cb_area(4, 0);
        dev.note(vmm, format!("{huge:x?} {almost:x?} {a:x?} {b:x?} {rest:x?} {full:x?}"));
    })
    .run();
    run.assert_ok();
    assert_eq!(notes(&run), ["None None Some(100) Some(108) Some(10c) None"]);
}

#[test]
fn a_semaphore_at_i32_max_refuses_a_signal_and_keeps_its_tokens() {
    let run = at_device_init("", |dev, vmm| {
        let s = vmm.create_semaphore(i32::MAX).unwrap();
        let signal = vmm.signal_semaphore(s);
        let wait = vmm.wait_semaphore(s, 0);
        let again = vmm.signal_semaphore(s);
        dev.note(vmm, format!("{signal:?} {wait:?} {again:?}"));
        vmm.destroy_semaphore(s).unwrap();
    })
    .run();
    run.assert_ok();
    assert_eq!(notes(&run), ["Err(VmmError { code: 2 }) Ok(()) Ok(())"]);
    let t = run.trace();
    let v = t.expect(json!({"kind": "violation", "code": "COUNT_OVERFLOW", "service": "Signal_Semaphore"}));
    assert!(v["message"].as_str().unwrap().contains("2147483647"), "{v}");
    let tokens = t.values(json!({"kind": "semaphore", "device": "SCRIPT"}), "tokens");
    // create, the wait takes one, the signal gives it back, destroy.
    assert_eq!(tokens, [json!(i32::MAX), json!(i32::MAX - 1), json!(i32::MAX), json!(i32::MAX)]);
}

#[test]
fn claims_past_2_to_the_32_are_refused_and_the_owner_and_count_stay_consistent() {
    let run = at_device_init("", |dev, vmm| {
        let sys = vmm.get_sys_vm_handle();
        vmm.claim_critical_section(0xFFFF_FFFF, 0).unwrap();
        let more = vmm.claim_critical_section(1, 0);
        let begin = vmm.begin_critical_section(0);
        let s = vmm.get_crit_section_status().unwrap();
        dev.note(vmm, format!("{more:?} {begin:?} claims={:#x} owner_is_sys={}", s.claims, s.owner == sys));
        vmm.release_critical_section(0xFFFF_FFFF).unwrap();
        let s = vmm.get_crit_section_status().unwrap();
        let end = vmm.end_critical_section();
        dev.note(vmm, format!("claims={} {end:?}", s.claims));
    })
    .run();
    run.assert_ok();
    assert_eq!(
        notes(&run),
        [
            "Err(VmmError { code: 2 }) Err(VmmError { code: 2 }) claims=0xffffffff owner_is_sys=true",
            "claims=0 Err(VmmError { code: 2 })",
        ]
    );
    let t = run.trace();
    assert_eq!(t.count(json!({"kind": "violation", "code": "COUNT_OVERFLOW"})), 2);
    t.expect(json!({"kind": "violation", "code": "CRIT_NOT_OWNED", "service": "End_Critical_Section"}));
}

#[test]
fn a_stale_event_handle_is_refused_after_its_slot_was_reused_past_255_times() {
    let run = in_an_event("", |dev, vmm| {
        let sys = vmm.get_sys_vm_handle();
        let schedule = |tag: &'static str| {
            vmm.call_priority_vm_event(0, sys, PEF_ALWAYS_SCHED, 0, move |dev: &ScriptDevice, vmm, _| {
                dev.note(vmm, format!("{tag} ran"))
            })
            .unwrap()
        };
        let stale = schedule("first");
        vmm.cancel_priority_vm_event(stale).unwrap();
        // 255 more events in the same slot: with 8-bit generations the next
        // one had the stale handle's generation again.
        for _ in 0..255 {
            let h = schedule("between");
            vmm.cancel_priority_vm_event(h).unwrap();
        }
        let live = schedule("live");
        let same_slot = live.0 & 0xF_FFFF == stale.0 & 0xF_FFFF;
        let r = vmm.cancel_priority_vm_event(stale);
        dev.note(vmm, format!("same slot {same_slot}, distinct {}: {r:?}", live != stale));
    })
    .run();
    run.assert_ok();
    assert_eq!(notes(&run), ["same slot true, distinct true: Err(VmmError { code: 2 })", "live ran"]);
    run.trace().expect(json!({"kind": "violation", "code": "STALE_EVENT_HANDLE"}));
}

#[test]
fn simulate_push_and_far_call_outside_a_nested_block_are_refused() {
    let run = in_an_event("", |dev, vmm| {
        let sys = vmm.get_sys_vm_handle();
        let before = vmm.client(sys).unwrap().get();
        let push = vmm.simulate_push(0x1234);
        let call = vmm.simulate_far_call(FarPtr::new(0x010F, 0x0010));
        let pop = vmm.simulate_pop();
        let int = vmm.simulate_int(0x2F);
        let after = vmm.client(sys).unwrap().get();
        let same = (before.cs, before.eip, before.esp) == (after.cs, after.eip, after.esp);
        dev.note(vmm, format!("{push:?} {call:?} {pop:?} {int:?} unchanged={same}"));
    })
    .run();
    run.assert_ok();
    let refused = "Err(VmmError { code: 2 })";
    assert_eq!(notes(&run), [format!("{refused} {refused} {refused} {refused} unchanged=true")]);
    let t = run.trace();
    for service in ["Simulate_Push", "Simulate_Far_Call", "Simulate_Pop", "Simulate_Int"] {
        t.expect(json!({"kind": "violation", "code": "UNBALANCED_NEST_EXEC", "service": service, "device": "SCRIPT"}));
    }
}

#[test]
fn the_client_stack_never_wraps() {
    let run = in_an_event("", |dev, vmm| {
        vmm.begin_nest_exec().unwrap();
        let sys = vmm.get_sys_vm_handle();
        let c = vmm.client(sys).unwrap();
        let mut regs = c.get();
        let top = regs.esp & 0xFFFF;
        // Two bytes of room left: one word fits, a far call's two do not.
        regs.esp = (regs.esp & 0xFFFF_0000) | 2;
        c.set(regs);
        let push = vmm.simulate_push(1);
        let full = vmm.simulate_push(2);
        regs.esp = (regs.esp & 0xFFFF_0000) | 2;
        c.set(regs);
        let call = vmm.simulate_far_call(FarPtr::new(0x010F, 0x0010));
        let sp = c.get().esp & 0xFFFF;
        regs.esp = (regs.esp & 0xFFFF_0000) | top;
        c.set(regs);
        let empty = vmm.simulate_pop();
        vmm.end_nest_exec().unwrap();
        dev.note(vmm, format!("{push:?} {full:?} {call:?} sp={sp} {empty:?}"));
    })
    .run();
    run.assert_ok();
    assert_eq!(
        notes(&run),
        ["Ok(()) Err(VmmError { code: 5 }) Err(VmmError { code: 5 }) sp=2 Err(VmmError { code: 8 })"]
    );
}

#[test]
fn nest_exec_not_ended_names_the_device_whose_event_left_it_open() {
    let run = in_an_event("", |_dev, vmm| {
        vmm.begin_nest_exec().unwrap();
    })
    .run();
    run.assert_ok();
    let v = run.trace().expect(json!({"kind": "violation", "code": "NEST_EXEC_NOT_ENDED"}));
    assert_eq!(v["device"], "SCRIPT", "{v}");
    assert!(v["message"].as_str().unwrap().contains("an event callback"), "{v}");
}

#[test]
fn a_violation_returns_violation_for_stale_handles_and_bad_far_pointers() {
    let run = in_an_event("", |dev, vmm| {
        let stale_event = vmm.cancel_priority_vm_event(EventHandle(0x8FF0_0077));
        let stale_timeout = vmm.cancel_time_out(TimeoutHandle(0x4FF0_0077));
        let bad_vm = vmm.get_vm_info(VmHandle(0xDEAD_BEEF)).map(|_| ());
        vmm.begin_nest_exec().unwrap();
        vmm.simulate_far_call(FarPtr::new(0x1234, 0x5678)).unwrap();
        let resume = vmm.resume_exec();
        vmm.end_nest_exec().unwrap();
        dev.note(vmm, format!("{stale_event:?} {stale_timeout:?} {bad_vm:?} {resume:?}"));
    })
    .run();
    run.assert_ok();
    let refused = "Err(VmmError { code: 2 })";
    assert_eq!(notes(&run), [format!("{refused} {refused} {refused} {refused}")]);
    let t = run.trace();
    for code in ["STALE_EVENT_HANDLE", "STALE_TIMEOUT_HANDLE", "INVALID_VM_HANDLE", "BAD_FAR_POINTER"] {
        t.expect(json!({"kind": "violation", "code": code, "device": "SCRIPT"}));
    }
}

/// How far the fatal scenario's device got.
static AFTER_FATAL: AtomicU32 = AtomicU32::new(0);

#[test]
fn under_violations_fatal_no_device_code_runs_after_the_fatal_error() {
    let run = Scenario::new(
        r#"
        [machine]
        violations = "fatal"
        [386Enh]
        device = ["SCRIPT"]
    "#,
    )
    .script(|dev, vmm, msg| {
        match msg.message {
            DEVICE_INIT => {
                // A pending time-out and event that must never run.
                vmm.set_global_time_out(5, |dev: &ScriptDevice, vmm, _| dev.note(vmm, "time-out ran")).unwrap();
                vmm.schedule_global_event(|dev: &ScriptDevice, vmm, _| dev.note(vmm, "event ran")).unwrap();
                let _ = vmm.cancel_time_out(TimeoutHandle(0x4FF0_0077));
                // Not reached: the violation above was fatal.
                AFTER_FATAL.fetch_add(1, Ordering::SeqCst);
                dev.note(vmm, "after the violation");
            }
            SYSTEM_EXIT | SYS_CRITICAL_EXIT => {
                // The crash exit still sends these; the device's
                // services refuse, and its first one unwinds.
                let _ = vmm.trace_note("at_exit", &[]);
                AFTER_FATAL.fetch_add(100, Ordering::SeqCst);
            }
            _ => {}
        }
        Carry::Clear
    })
    .run();
    let e = run.expect_error().to_string();
    assert!(e.contains("violation STALE_TIMEOUT_HANDLE"), "{e}");
    assert_eq!(AFTER_FATAL.load(Ordering::SeqCst), 0, "device code ran after the fatal error");
    let records = run.trace().records();
    let fatal = records.iter().position(|r| r["kind"] == "fatal_error").expect("a fatal_error record");
    let after: Vec<&Value> = records[fatal + 1..].iter().collect();
    for r in &after {
        let kind = r["kind"].as_str().unwrap();
        let ok = match kind {
            "control" => matches!(
                r["message"].as_str().unwrap(),
                "Device_Init" | "System_Exit" | "Sys_Critical_Exit" | "System_Exit2" | "Sys_Critical_Exit2"
            ),
            "phase" | "event_cancelled" | "timeout_cancelled" => true,
            _ => false,
        };
        assert!(ok, "a record after fatal_error that the crash exit does not document: {r}");
    }
    assert!(after.iter().any(|r| r["message"] == "Sys_Critical_Exit"), "the crash exit ran");
    assert!(!notes(&run).iter().any(|n| n.contains("ran") || n.contains("after")), "{:?}", notes(&run));
}

#[test]
fn vpostd_refuses_a_callback_that_is_not_a_dll_export() {
    let mut s = Scenario::new(
        r#"
        [386Enh]
        device = ["*SHELL", "VPOSTD.386"]
    "#,
    )
    .boot();
    for (cx, bx) in [(0xFFFF, 0xFFF0), (0x003B, 0x4321), (0x1234, 0x0010)] {
        let regs = ClientRegs { eax: 0x1004, ecx: cx, ebx: bx, ..ClientRegs::default() };
        let out = s.call_pm_api(0x4321, regs).expect("VPOSTD has a PM API");
        assert!(out.eflags & CF_MASK != 0, "{cx:04X}:{bx:04X} was accepted");
        assert_eq!(out.eax & 0xFFFF, 6, "{cx:04X}:{bx:04X}");
    }
    let run = s.finish();
    run.assert_ok();
    let t = run.trace();
    let refused = t.matching(json!({"kind": "note", "device": "VPOSTD", "note": "registration_refused"}));
    assert_eq!(refused.len(), 3);
    assert_eq!(refused[0]["fields"]["reason"], "invalid_callback");
    assert_eq!(refused[0]["fields"]["callback"], "FFFF:FFF0");
    assert_eq!(t.count(json!({"kind": "note", "device": "VPOSTD", "note": "registered"})), 0);
}

#[test]
fn a_device_without_an_id_under_violations_fatal_stops_the_boot_naming_the_code() {
    let run = Scenario::new(
        r#"
            [machine]
            violations = "fatal"
            [386Enh]
            device = ["vcountd", "fixture-no-id"]
        "#,
    )
    .run();
    let e = run.expect_error().to_string();
    assert!(e.contains("violation API_WITHOUT_ID"), "{e}");
    let t = run.trace();
    t.expect(json!({"kind": "fatal_error", "device": "FXNOID"}));
    assert_eq!(t.count(json!({"kind": "control", "message": "Device_Init"})), 0, "no device code ran");
}

#[test]
fn a_nested_block_ends_in_the_mode_it_began_in() {
    let run = in_an_event("", |_dev, vmm| {
        vmm.begin_nest_v86_exec().unwrap();
        vmm.begin_nest_exec().unwrap();
        vmm.end_nest_exec().unwrap();
        vmm.end_nest_exec().unwrap();
    })
    .run();
    run.assert_ok();
    run.trace().expect_in_order(&[
        json!({"kind": "nest_exec", "action": "begin", "depth": 1, "v86": true}),
        json!({"kind": "nest_exec", "action": "begin", "depth": 2, "v86": false}),
        json!({"kind": "nest_exec", "action": "end", "depth": 1, "v86": false}),
        json!({"kind": "nest_exec", "action": "end", "depth": 0, "v86": true}),
    ]);
}
