//! Service hooks, control messages sent by devices, Windows 95's event
//! additions (`Call_Restricted_Event`, the 4.0 `Call_When_Not_Critical`)
//! and the VM-lifetime services: the scenarios of the virtual-hardware
//! reference's section 10 (items 39-49), each asserting on the trace.

use vmm_plugin_api::prelude::*;
use vmm_testkit::{Scenario, ScriptDevice, json};

use crate::common::{DOS1, SYS, notes};

/// A scenario whose SCRIPT device registers interrupt source `go` at
/// Device_Init with `handler`, and a manifest adding `extra`.
fn on_go(extra: &str, handler: impl Fn(&ScriptDevice, &Vmm<'_>) + 'static) -> Scenario {
    let handler = std::rc::Rc::new(handler);
    Scenario::new(&format!("[386Enh]\ndevice = [\"SCRIPT\"]\n{extra}")).script(move |_dev, vmm, msg| {
        if msg.message == DEVICE_INIT {
            let h = handler.clone();
            vmm.register_interrupt("go", move |dev: &ScriptDevice, vmm, _irq| h(dev, vmm)).unwrap();
        }
        Carry::Clear
    })
}

fn note_when_run(tag: &'static str) -> impl FnOnce(&ScriptDevice, &Vmm<'_>, Event) + 'static {
    move |dev: &ScriptDevice, vmm: &Vmm<'_>, ev: Event| {
        dev.note(vmm, format!("{tag} t={} vm={:#x} timed_out={}", vmm.get_system_time(), ev.vm.0, ev.timed_out));
    }
}

/// DOS1 holds the critical section from 5 to 40 ms; `go` is raised at 10.
const DOS1_CRITICAL_5_TO_40: &str = r#"
    [[vm]]
    name = "DOS1"
    [[action]]
    at = 5
    vm = "DOS1"
    action = "begin_critical"
    [[action]]
    at = 40
    vm = "DOS1"
    action = "end_critical"
    [[interrupt]]
    name = "go"
    at = 10
"#;

// ---- Call_Restricted_Event (scenarios 42-44) -------------------------------------

#[test]
fn a_global_restricted_event_runs_in_the_first_vm_not_critical() {
    let run = on_go(DOS1_CRITICAL_5_TO_40, |_dev, vmm| {
        let h =
            vmm.call_restricted_event(HIGH_PRI_DEVICE_BOOST, None, PEF_WAIT_NOT_CRIT, 0, note_when_run("G")).unwrap();
        assert!(!h.is_null(), "at interrupt time the event waits");
    })
    .run();
    run.assert_ok();
    let t = run.trace();
    t.expect(
        json!({"kind": "event_scheduled", "event": "restricted", "vm": null, "flags": PEF_WAIT_NOT_CRIT, "t": 10}),
    );
    // It runs at the release, in the VM about to run then; its boost is
    // applied to that VM just before the callback, and removed after.
    let ran = t.expect(json!({"kind": "event_dispatched", "event": "restricted", "t": 40, "target": null}));
    let vm = ran["vm"].as_u64().unwrap() as u32;
    assert_eq!(notes(&run), [format!("G t=40 vm={vm:#x} timed_out=false")]);
    t.expect_in_order(&[
        json!({"kind": "crit_section", "action": "release", "vm": DOS1}),
        json!({"kind": "priority", "vm": vm, "boost": HIGH_PRI_DEVICE_BOOST, "reason": "event", "t": 40}),
        json!({"kind": "priority", "vm": vm, "boost": -(HIGH_PRI_DEVICE_BOOST as i64), "reason": "unboost"}),
        // The record of a call comes when it returns, after what it caused.
        json!({"kind": "event_dispatched", "event": "restricted"}),
    ]);
    // Nothing was boosted while it waited.
    t.expect_none(json!({"kind": "priority", "reason": "event", "t": 10}));
}

#[test]
fn a_restricted_event_whose_restrictions_hold_runs_inline() {
    let run = on_go("[[vm]]\nname = \"DOS1\"\n[[interrupt]]\nname = \"go\"\nat = 10\n", |_dev, vmm| {
        vmm.schedule_global_event(|dev: &ScriptDevice, vmm, _| {
            let h = vmm.call_restricted_event(0, None, PEF_WAIT_NOT_CRIT, 0, note_when_run("inline")).unwrap();
            dev.note(vmm, format!("returned null={}", h.is_null()));
            // PEF_Always_Sched defers it even so.
            let h = vmm.call_restricted_event(0, None, PEF_ALWAYS_SCHED, 0, note_when_run("later")).unwrap();
            dev.note(vmm, format!("returned null={}", h.is_null()));
        })
        .unwrap();
    })
    .run();
    run.assert_ok();
    assert_eq!(
        notes(&run),
        [
            "inline t=10 vm=0x10001 timed_out=false",
            "returned null=true",
            "returned null=false",
            "later t=10 vm=0x10001 timed_out=false"
        ]
    );
    run.trace().expect(json!({"kind": "event_dispatched", "event": "restricted", "inline": true}));
}

#[test]
fn a_vm_event_boosted_to_time_critical_never_meets_not_crit_and_times_out() {
    let run = on_go("[[interrupt]]\nname = \"go\"\nat = 10\n", |_dev, vmm| {
        let sys = vmm.get_sys_vm_handle();
        vmm.call_restricted_event(
            TIME_CRITICAL_BOOST,
            Some(sys),
            PEF_WAIT_NOT_CRIT | PEF_TIME_OUT | PEF_DONT_UNBOOST,
            100,
            note_when_run("T"),
        )
        .unwrap();
    })
    .run();
    run.assert_ok();
    // Its own boost makes the VM time-critical: the restriction never holds,
    // and the time-out runs it with carry set at 110 ms.
    assert_eq!(notes(&run), ["T t=110 vm=0x10001 timed_out=true"]);
    let t = run.trace();
    t.expect(json!({"kind": "event_scheduled", "event": "restricted", "vm": SYS, "boost": TIME_CRITICAL_BOOST, "timeout_ms": 100}));
    t.expect(json!({"kind": "priority", "vm": SYS, "boost": TIME_CRITICAL_BOOST, "reason": "event", "t": 10}));
    t.expect(json!({"kind": "event_dispatched", "event": "restricted", "timed_out": true, "t": 110}));
    // The boost goes, PEF_Dont_Unboost notwithstanding.
    t.expect(
        json!({"kind": "priority", "vm": SYS, "boost": -(TIME_CRITICAL_BOOST as i64), "reason": "unboost", "t": 110}),
    );
}

#[test]
fn a_cancelled_restricted_event_never_runs_and_its_boost_goes() {
    let run = on_go(DOS1_CRITICAL_5_TO_40, |dev, vmm| {
        let h = vmm
            .call_restricted_event(
                HIGH_PRI_DEVICE_BOOST,
                Some(VmHandle(DOS1)),
                PEF_WAIT_NOT_CRIT,
                0,
                note_when_run("X"),
            )
            .unwrap();
        vmm.cancel_restricted_event(h).unwrap();
        vmm.cancel_restricted_event(EventHandle(0)).unwrap();
        dev.note(vmm, "cancelled");
        // A handle used again is stale.
        assert!(vmm.cancel_restricted_event(h).is_err());
    })
    .run();
    run.assert_ok();
    assert_eq!(notes(&run), ["cancelled"]);
    let t = run.trace();
    t.expect(json!({"kind": "event_cancelled", "event": "restricted", "vm": DOS1, "reason": "cancelled"}));
    t.expect(
        json!({"kind": "priority", "vm": DOS1, "boost": -(HIGH_PRI_DEVICE_BOOST as i64), "reason": "unboost", "t": 10}),
    );
    t.expect(json!({"kind": "violation", "code": "STALE_EVENT_HANDLE"}));
    t.expect_none(json!({"kind": "event_dispatched", "event": "restricted"}));
}

#[test]
fn restricted_event_arguments_are_checked() {
    let run = on_go("[[interrupt]]\nname = \"go\"\nat = 10\n", |dev, vmm| {
        let thread = vmm.call_restricted_event(0, None, PEF_THREAD_EVENT, 0, note_when_run("no"));
        let later = vmm.call_restricted_event(0, None, 0x4000, 0, note_when_run("no"));
        let vm = vmm.call_restricted_event(0, Some(VmHandle(0x0005_0009)), 0, 0, note_when_run("no"));
        let priority =
            vmm.call_priority_vm_event(0, vmm.get_sys_vm_handle(), PEF_ALWAYS_SCHED, 0, note_when_run("no")).unwrap();
        let wrong = vmm.cancel_restricted_event(priority);
        dev.note(vmm, format!("{thread:?} {later:?} {vm:?} {wrong:?}"));
        vmm.cancel_priority_vm_event(priority).unwrap();
    })
    .run();
    run.assert_ok();
    let t = run.trace();
    assert_eq!(t.count(json!({"kind": "violation", "code": "RESERVED_FLAGS", "service": "Call_Restricted_Event"})), 2);
    t.expect(json!({"kind": "violation", "code": "INVALID_VM_HANDLE", "service": "Call_Restricted_Event"}));
    t.expect(json!({"kind": "violation", "code": "WRONG_EVENT_KIND", "service": "Cancel_Restricted_Event"}));
    t.expect_none(json!({"kind": "debug_string", "text": "no"}));
}

#[test]
fn restricted_events_do_not_exist_under_windows_31() {
    let run = on_go("[[interrupt]]\nname = \"go\"\nat = 10\n", |_dev, vmm| {
        let _ = vmm.call_restricted_event(0, None, 0, 0, note_when_run("no"));
    })
    .set("machine.windows=\"3.1\"")
    .run();
    let e = run.expect_error().to_string();
    assert!(e.contains("Invalid VxD dynamic link call to device number 0001, service 015A"), "{e}");
}

// ---- Call_When_Not_Critical under Windows 95 (scenario 45) ---------------------------

#[test]
fn call_when_not_critical_is_a_global_restricted_event_under_windows_95() {
    let run = on_go(DOS1_CRITICAL_5_TO_40, |_dev, vmm| {
        vmm.schedule_global_event(|_dev: &ScriptDevice, vmm, _| {
            for tag in ["one", "two"] {
                vmm.call_when_not_critical(move |dev: &ScriptDevice, vmm, _vm| {
                    dev.note(vmm, format!("{tag} t={}", vmm.get_system_time()));
                })
                .unwrap();
            }
            // Documented as doing nothing: both still run.
            vmm.cancel_call_when_not_critical().unwrap();
        })
        .unwrap();
    })
    .set("machine.order=\"fifo\"")
    .run();
    run.assert_ok();
    assert_eq!(notes(&run), ["one t=40", "two t=40"]);
    let t = run.trace();
    assert_eq!(
        t.count(json!({"kind": "event_scheduled", "event": "restricted", "vm": null, "flags": PEF_WAIT_NOT_CRIT, "boost": 0})),
        2
    );
}

#[test]
fn cancel_call_when_not_critical_does_not_exist_under_windows_31() {
    let run = on_go("[[interrupt]]\nname = \"go\"\nat = 10\n", |_dev, vmm| {
        vmm.schedule_global_event(|_dev: &ScriptDevice, vmm, _| {
            let _ = vmm.cancel_call_when_not_critical();
        })
        .unwrap();
    })
    .set("machine.windows=\"3.1\"")
    .run();
    let e = run.expect_error().to_string();
    assert!(e.contains("service 012A"), "{e}");
}
