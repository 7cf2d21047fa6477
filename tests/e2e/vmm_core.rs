//! The VMM core: VMs, time, the scheduler, events and their documented
//! semantics, the critical section, semaphores, interrupts, contexts, and
//! ordering. Each test scripts the `SCRIPT` device (linked into this test
//! binary) and asserts on the trace.

use vmm_plugin_api::prelude::*;
use vmm_testkit::{Scenario, ScriptDevice, json};

use crate::common::{DOS1, DOS2, GO_AT_10, SYS, note_when_run, notes, on_go};

/// The run stopped with a deadlock, reported as a `DEADLOCK` violation.
fn expect_deadlock(run: &vmm_testkit::Run) {
    let e = run.expect_error().to_string();
    assert!(e.contains("deadlock"), "{e}");
    run.trace().expect(json!({"kind": "violation", "code": "DEADLOCK"}));
}

// ---- priority events ------------------------------------------------------------

#[test]
fn a_priority_event_waits_for_the_vm_to_enable_interrupts() {
    let run = on_go(
        r#"
            [[action]]
            at = 5
            vm = "system"
            action = "cli"
            [[action]]
            at = 50
            vm = "system"
            action = "sti"
            [[interrupt]]
            name = "go"
            at = 10
        "#,
        |_dev, vmm| {
            let sys = vmm.get_sys_vm_handle();
            let h = vmm
                .call_priority_vm_event(HIGH_PRI_DEVICE_BOOST as i32, sys, PEF_WAIT_FOR_STI, 0, note_when_run("A"))
                .unwrap();
            assert!(!h.is_null(), "at interrupt time the event is always scheduled");
        },
    )
    .run();
    run.assert_ok();
    assert_eq!(notes(&run), ["A t=50 vm=0x10001 timed_out=false"]);
    let t = run.trace();
    t.expect(json!({"kind": "event_scheduled", "event": "priority", "vm": SYS, "flags": PEF_WAIT_FOR_STI, "t": 10}));
    t.expect(
        json!({"kind": "event_dispatched", "event": "priority", "t": 50, "inline": false, "waited_ns": 40_000_000}),
    );
}

#[test]
fn a_priority_event_waits_for_the_critical_section() {
    let run = on_go(crate::common::DOS1_CRITICAL_5_TO_40, |_dev, vmm| {
        let sys = vmm.get_sys_vm_handle();
        vmm.call_priority_vm_event(
            HIGH_PRI_DEVICE_BOOST as i32,
            sys,
            PEF_WAIT_FOR_STI | PEF_WAIT_NOT_CRIT,
            0,
            note_when_run("A"),
        )
        .unwrap();
    })
    .run();
    run.assert_ok();
    assert_eq!(notes(&run), ["A t=40 vm=0x10001 timed_out=false"]);
    let t = run.trace();
    // The owner runs with Critical_Section_Boost, above the event's boost.
    t.expect(json!({"kind": "crit_section", "action": "claim", "vm": DOS1, "t": 5}));
    t.expect(json!({"kind": "crit_section", "action": "release", "vm": DOS1, "t": 40}));
    t.expect_in_order(&[
        json!({"kind": "crit_section", "action": "release"}),
        json!({"kind": "vm_switch", "vm": SYS}),
        json!({"kind": "event_dispatched", "event": "priority"}),
    ]);
}

#[test]
fn a_time_out_fires_while_the_critical_section_stays_held() {
    let run = on_go(
        r#"
            [[action]]
            at = 5
            vm = "system"
            action = "begin_critical"
            [[action]]
            at = 100
            vm = "system"
            action = "end_critical"
            [[interrupt]]
            name = "go"
            at = 10
        "#,
        |_dev, vmm| {
            let sys = vmm.get_sys_vm_handle();
            vmm.call_priority_vm_event(
                HIGH_PRI_DEVICE_BOOST as i32,
                sys,
                PEF_WAIT_NOT_CRIT | PEF_TIME_OUT | PEF_DONT_UNBOOST,
                20,
                note_when_run("A"),
            )
            .unwrap();
        },
    )
    .run();
    run.assert_ok();
    // The callback runs anyway at 10 + 20 ms, told (CF) that it timed out.
    assert_eq!(notes(&run), ["A t=30 vm=0x10001 timed_out=true"]);
    let t = run.trace();
    t.expect(json!({"kind": "event_dispatched", "t": 30, "timed_out": true}));
    // The boost goes even with PEF_Dont_Unboost.
    t.expect(
        json!({"kind": "priority", "vm": SYS, "boost": -(HIGH_PRI_DEVICE_BOOST as i64), "reason": "unboost", "t": 30}),
    );
}

#[test]
fn dont_unboost_keeps_the_boost_and_the_default_removes_it() {
    for (flags, expect_unboost) in [(0, true), (PEF_DONT_UNBOOST, false)] {
        let run = on_go(GO_AT_10, move |_dev, vmm| {
            let sys = vmm.get_sys_vm_handle();
            vmm.call_priority_vm_event(0x1000, sys, flags, 0, note_when_run("A")).unwrap();
        })
        .run();
        run.assert_ok();
        let t = run.trace();
        t.expect(json!({"kind": "priority", "vm": SYS, "boost": 0x1000, "reason": "event"}));
        let unboosts = t.count(json!({"kind": "priority", "vm": SYS, "reason": "unboost"}));
        assert_eq!(unboosts == 1, expect_unboost, "flags {flags:#x}");
    }
}

#[test]
fn a_cancelled_event_never_runs_and_a_handle_that_already_ran_is_stale() {
    // Cancel_Priority_VM_Event is not asynchronous: call it from events.
    let run = on_go(
        r#"
        [[interrupt]]
        name = "go"
        at = 10
        [[interrupt]]
        name = "go"
        at = 20
    "#,
        |_dev, vmm| {
            vmm.schedule_global_event(|dev: &ScriptDevice, vmm, _| {
                let sys = vmm.get_sys_vm_handle();
                let first = dev.state.borrow().is_empty();
                if first {
                    // First time: schedule two, cancel the second at once.
                    let a = vmm.call_priority_vm_event(0x10, sys, PEF_ALWAYS_SCHED, 0, note_when_run("A")).unwrap();
                    let b = vmm.call_priority_vm_event(0x10, sys, PEF_ALWAYS_SCHED, 0, note_when_run("B")).unwrap();
                    vmm.cancel_priority_vm_event(b).unwrap();
                    dev.state.borrow_mut().push(a.0);
                } else {
                    // Second time: A ran meanwhile; its handle is stale.
                    let a = EventHandle(dev.state.borrow()[0]);
                    let r = vmm.cancel_priority_vm_event(a);
                    dev.note(vmm, format!("late cancel: {r:?}"));
                }
            })
            .unwrap();
        },
    )
    .run();
    run.assert_ok();
    assert_eq!(notes(&run), ["A t=10 vm=0x10001 timed_out=false", "late cancel: Err(VmmError { code: 2 })"]);
    let t = run.trace();
    t.expect(json!({"kind": "event_cancelled", "event": "priority", "reason": "cancelled", "t": 10}));
    t.expect(json!({"kind": "violation", "code": "STALE_EVENT_HANDLE", "service": "Cancel_Priority_VM_Event"}));
    // Cancelling also removed B's boost.
    assert_eq!(t.count(json!({"kind": "priority", "reason": "unboost"})), 2);
}

#[test]
fn two_pending_events_run_lifo_by_default_and_fifo_on_request() {
    let scenario = on_go(GO_AT_10, |_dev, vmm| {
        let sys = vmm.get_sys_vm_handle();
        vmm.call_priority_vm_event(0, sys, 0, 0, note_when_run("first")).unwrap();
        vmm.call_priority_vm_event(0, sys, 0, 0, note_when_run("second")).unwrap();
    });
    let lifo = scenario.clone().run();
    lifo.assert_ok();
    assert_eq!(notes(&lifo).iter().map(|n| n.split(' ').next().unwrap()).collect::<Vec<_>>(), ["second", "first"]);
    let fifo = scenario.set("machine.order=\"fifo\"").run();
    assert_eq!(notes(&fifo).iter().map(|n| n.split(' ').next().unwrap()).collect::<Vec<_>>(), ["first", "second"]);
}

#[test]
fn a_priority_event_for_the_current_vm_runs_inline_with_handle_zero_unless_always_sched() {
    let run = Scenario::new(
        r#"
        [386Enh]
        device = ["SCRIPT"]
    "#,
    )
    .script(|dev, vmm, msg| {
        if msg.message == SYS_VM_INIT {
            let sys = vmm.get_sys_vm_handle();
            let h = vmm.call_priority_vm_event(0, sys, 0, 0, note_when_run("inline")).unwrap();
            dev.note(vmm, format!("returned {:#x}", h.0));
            let h = vmm.call_priority_vm_event(0, sys, PEF_ALWAYS_SCHED, 0, note_when_run("scheduled")).unwrap();
            dev.note(vmm, format!("returned null: {}", h.is_null()));
        }
        Carry::Clear
    })
    .run();
    run.assert_ok();
    assert_eq!(
        notes(&run),
        [
            "inline t=0 vm=0x10001 timed_out=false",
            "returned 0x0",
            "returned null: false",
            "scheduled t=0 vm=0x10001 timed_out=false"
        ]
    );
    run.trace().expect(json!({"kind": "event_dispatched", "handle": 0, "inline": true}));
}

#[test]
fn reserved_flag_bits_are_rejected() {
    let run = on_go(
        r#"
        [[interrupt]]
        name = "go"
        at = 1
    "#,
        |dev, vmm| {
            let sys = vmm.get_sys_vm_handle();
            let r = vmm.call_priority_vm_event(0, sys, 0x4000, 0, note_when_run("never"));
            dev.note(vmm, format!("{r:?}"));
            // Thread flags need threads, which this VMM does not have.
            let r = vmm.call_priority_vm_event(0, sys, PEF_THREAD_EVENT, 0, note_when_run("never"));
            dev.note(vmm, format!("{r:?}"));
        },
    )
    .run();
    run.assert_ok();
    assert_eq!(notes(&run), ["Err(VmmError { code: 2 })", "Err(VmmError { code: 2 })"]);
    assert_eq!(run.trace().count(json!({"kind": "violation", "code": "RESERVED_FLAGS"})), 2);
    // Windows 3.1 knows only bits 0-4.
    let run = on_go(
        r#"
        [machine]
        windows = "3.1"
        [[interrupt]]
        name = "go"
        at = 1
    "#,
        |dev, vmm| {
            let sys = vmm.get_sys_vm_handle();
            let r = vmm.call_priority_vm_event(0, sys, PEF_WAIT_NOT_NESTED_EXEC, 0, note_when_run("never"));
            dev.note(vmm, format!("{r:?}"));
        },
    )
    .run();
    assert_eq!(notes(&run), ["Err(VmmError { code: 2 })"]);
}

// ---- other events -----------------------------------------------------------------

#[test]
fn global_events_run_before_vm_events() {
    let run = on_go(GO_AT_10, |_dev, vmm| {
        let sys = vmm.get_sys_vm_handle();
        vmm.schedule_vm_event(sys, note_when_run("vm")).unwrap();
        vmm.schedule_global_event(note_when_run("global")).unwrap();
    })
    .run();
    run.assert_ok();
    assert_eq!(notes(&run), ["global t=10 vm=0x10001 timed_out=false", "vm t=10 vm=0x10001 timed_out=false"]);
}

#[test]
fn a_vm_event_runs_only_when_its_vm_runs() {
    let run = on_go(
        r#"
        [[vm]]
        name = "DOS1"
        [[interrupt]]
        name = "go"
        at = 10
    "#,
        |_dev, vmm| {
            let dos = VmHandle(DOS1);
            vmm.schedule_vm_event(dos, note_when_run("dos")).unwrap();
        },
    )
    .run();
    run.assert_ok();
    assert_eq!(notes(&run), ["dos t=10 vm=0x10002 timed_out=false"]);
    run.trace().expect_in_order(&[
        json!({"kind": "event_scheduled", "event": "vm", "vm": DOS1}),
        json!({"kind": "vm_switch", "from": SYS, "vm": DOS1}),
        json!({"kind": "event_dispatched", "event": "vm", "vm": DOS1}),
    ]);
}

#[test]
fn call_global_and_call_vm_event_run_inline_outside_interrupts() {
    let run = Scenario::new(
        r#"
        [386Enh]
        device = ["SCRIPT"]
        [[interrupt]]
        name = "go"
        at = 5
    "#,
    )
    .script(|dev, vmm, msg| {
        match msg.message {
            DEVICE_INIT => {
                vmm.register_interrupt("go", |dev: &ScriptDevice, vmm, _| {
                    let h = vmm.call_global_event(note_when_run("global-at-irq")).unwrap();
                    dev.note(vmm, format!("at irq: null={}", h.is_null()));
                })
                .unwrap();
            }
            SYS_VM_INIT => {
                let h = vmm.call_global_event(note_when_run("global")).unwrap();
                dev.note(vmm, format!("null={}", h.is_null()));
                let h = vmm.call_vm_event(msg.vm, note_when_run("vm")).unwrap();
                dev.note(vmm, format!("null={}", h.is_null()));
            }
            _ => {}
        }
        Carry::Clear
    })
    .run();
    run.assert_ok();
    assert_eq!(
        notes(&run),
        [
            "global t=0 vm=0x10001 timed_out=false",
            "null=true",
            "vm t=0 vm=0x10001 timed_out=false",
            "null=true",
            "at irq: null=false",
            "global-at-irq t=5 vm=0x10001 timed_out=false",
        ]
    );
}

#[test]
fn cancel_vm_and_global_events_and_the_wrong_cancel_service_is_a_violation() {
    let run = on_go(GO_AT_10, |dev, vmm| {
        let sys = vmm.get_sys_vm_handle();
        let v = vmm.schedule_vm_event(sys, note_when_run("vm")).unwrap();
        let g = vmm.schedule_global_event(note_when_run("global")).unwrap();
        let p = vmm.call_priority_vm_event(0, sys, 0, 0, note_when_run("priority")).unwrap();
        dev.note(vmm, format!("{:?}", vmm.cancel_vm_event(sys, p)));
        dev.note(vmm, format!("{:?}", vmm.cancel_vm_event(sys, v)));
        dev.note(vmm, format!("{:?}", vmm.cancel_global_event(g)));
        dev.note(vmm, format!("{:?}", vmm.cancel_global_event(EventHandle(0))));
    })
    .run();
    run.assert_ok();
    assert_eq!(
        notes(&run),
        ["Err(VmmError { code: 2 })", "Ok(())", "Ok(())", "Ok(())", "priority t=10 vm=0x10001 timed_out=false"]
    );
    run.trace().expect(json!({"kind": "violation", "code": "WRONG_EVENT_KIND", "service": "Cancel_VM_Event"}));
}

#[test]
fn call_when_vm_ints_enabled_runs_at_once_or_at_sti() {
    let run = on_go(
        r#"
            [[action]]
            at = 5
            vm = "system"
            action = "cli"
            [[action]]
            at = 30
            vm = "system"
            action = "sti"
            [[interrupt]]
            name = "go"
            at = 10
        "#,
        |_dev, vmm| {
            // At interrupt time the current VM (system) has IF clear.
            vmm.schedule_global_event(|dev: &ScriptDevice, vmm, _| {
                vmm.call_when_vm_ints_enabled(|dev: &ScriptDevice, vmm, vm| {
                    dev.note(vmm, format!("ints enabled t={} vm={:#x}", vmm.get_system_time(), vm.0));
                })
                .unwrap();
                dev.note(vmm, "registered");
            })
            .unwrap();
        },
    )
    .set("machine.order=\"lifo\"")
    .run();
    run.assert_ok();
    assert_eq!(notes(&run), ["registered", "ints enabled t=30 vm=0x10001"]);
}

#[test]
fn call_when_not_critical_runs_only_the_newest_per_release_under_windows_31() {
    let run = on_go(
        r#"
            [[action]]
            at = 5
            vm = "system"
            action = "begin_critical"
            [[action]]
            at = 20
            vm = "system"
            action = "end_critical"
            [[action]]
            at = 30
            vm = "system"
            action = "begin_critical"
            [[action]]
            at = 40
            vm = "system"
            action = "end_critical"
            [[interrupt]]
            name = "go"
            at = 10
        "#,
        |_dev, vmm| {
            vmm.schedule_global_event(|_dev: &ScriptDevice, vmm, _| {
                for tag in ["one", "two", "three"] {
                    vmm.call_when_not_critical(move |dev: &ScriptDevice, vmm, _vm| {
                        dev.note(vmm, format!("{tag} t={}", vmm.get_system_time()));
                    })
                    .unwrap();
                }
            })
            .unwrap();
        },
    )
    .set("machine.windows=\"3.1\"")
    .run();
    run.assert_ok();
    assert_eq!(notes(&run), ["three t=20", "two t=40"]);
}

// ---- time --------------------------------------------------------------------------

#[test]
fn global_time_outs_fire_on_system_time_and_can_be_cancelled() {
    let run = on_go(GO_AT_10, |dev, vmm| {
        vmm.schedule_global_event(|_dev: &ScriptDevice, vmm, _| {
            vmm.set_global_time_out(25, |dev: &ScriptDevice, vmm, t| {
                dev.note(vmm, format!("fired t={} late={}", vmm.get_system_time(), t.late_ms));
            })
            .unwrap();
            let h = vmm.set_global_time_out(30, |_: &ScriptDevice, _, _| {}).unwrap();
            vmm.cancel_time_out(h).unwrap();
            let again = vmm.cancel_time_out(h);
            assert!(again.is_err());
        })
        .unwrap();
        dev.note(vmm, "scheduled");
    })
    .run();
    run.assert_ok();
    assert_eq!(notes(&run), ["scheduled", "fired t=35 late=0"]);
    let t = run.trace();
    t.expect(json!({"kind": "timeout_scheduled", "timer": "global", "ms": 25}));
    t.expect(json!({"kind": "timeout", "timer": "global", "t": 35, "late_ms": 0}));
    t.expect(json!({"kind": "timeout_cancelled", "reason": "cancelled"}));
    t.expect(json!({"kind": "violation", "code": "STALE_TIMEOUT_HANDLE"}));
}

#[test]
fn a_vm_time_out_counts_that_vms_execution_time_under_time_slicing() {
    let run = Scenario::new(
        r#"
        [386Enh]
        device = ["SCRIPT"]
        [[vm]]
        name = "DOS1"
        [[vm]]
        name = "DOS2"
    "#,
    )
    .script(|_dev, vmm, msg| {
        if msg.message == VM_INIT {
            vmm.set_vm_time_out(100, msg.vm, |dev: &ScriptDevice, vmm, t| {
                let exec = vmm.get_vm_exec_time(t.vm).unwrap();
                dev.note(vmm, format!("vm={:#x} t={} exec={exec}", t.vm.0, vmm.get_system_time()));
            })
            .unwrap();
        }
        Carry::Clear
    })
    .run();
    run.assert_ok();
    // The two VMs share 20 ms slices: each has run 100 ms after 180 / 200.
    assert_eq!(notes(&run), [format!("vm={DOS1:#x} t=180 exec=100"), format!("vm={DOS2:#x} t=200 exec=100")]);
    let switches = run.trace().values(json!({"kind": "vm_switch"}), "t");
    assert_eq!(switches[..5], [json!(0), json!(20), json!(40), json!(60), json!(80)]);
}

#[test]
fn until_stops_the_machine_at_a_virtual_time() {
    let run = on_go(
        r#"
        [machine]
        until = "55ms"
        [[interrupt]]
        name = "go"
        at = 10
        every = 10
    "#,
        |dev, vmm| {
            dev.note(vmm, format!("tick {}", vmm.get_system_time()));
        },
    )
    .run();
    run.assert_ok();
    assert_eq!(notes(&run), ["tick 10", "tick 20", "tick 30", "tick 40", "tick 50"]);
    run.trace().expect(json!({"kind": "phase", "phase": "stopped", "t": 55}));
}

// ---- scheduler ------------------------------------------------------------------------

#[test]
fn adjust_exec_priority_makes_the_scheduler_switch() {
    let run = on_go(
        r#"
        [[vm]]
        name = "DOS1"
        [[interrupt]]
        name = "go"
        at = 10
    "#,
        |_dev, vmm| {
            // Adjust_Exec_Priority is synchronous: call it from a global event.
            vmm.schedule_global_event(|_: &ScriptDevice, vmm, _| {
                vmm.adjust_exec_priority(VmHandle(DOS1), 0x1000).unwrap();
                // The raised VM runs; lower it again from a VM event there.
                vmm.schedule_vm_event(VmHandle(DOS1), |dev: &ScriptDevice, vmm, ev| {
                    dev.note(vmm, format!("in {:#x} priority={}", ev.vm.0, vmm.get_vm_info(ev.vm).unwrap().priority));
                    vmm.adjust_exec_priority(ev.vm, -0x1000).unwrap();
                })
                .unwrap();
            })
            .unwrap();
        },
    )
    .run();
    run.assert_ok();
    assert_eq!(notes(&run), [format!("in 0x10002 priority={}", 100 + 0x1000)]);
    let t = run.trace();
    t.expect(json!({"kind": "priority", "vm": DOS1, "boost": 0x1000, "reason": "adjust"}));
    t.expect(json!({"kind": "vm_switch", "vm": DOS1, "t": 10}));
}

#[test]
fn an_out_of_range_priority_is_refused() {
    let run = on_go(
        r#"
        [[interrupt]]
        name = "go"
        at = 1
    "#,
        |dev, vmm| {
            vmm.schedule_global_event(|dev: &ScriptDevice, vmm, ev| {
                let r = vmm.adjust_exec_priority(ev.vm, 0x7000_0000);
                dev.note(vmm, format!("{r:?}"));
            })
            .unwrap();
            let _ = dev;
        },
    )
    .run();
    assert_eq!(notes(&run), ["Err(VmmError { code: 2 })"]);
    run.trace().expect(json!({"kind": "violation", "code": "PRIORITY_RANGE"}));
}

#[test]
fn task_switch_hooks_run_in_installation_order_on_every_switch() {
    let run = Scenario::new(
        r#"
        [386Enh]
        device = ["SCRIPT"]
        [[vm]]
        name = "DOS1"
        at = 10
    "#,
    )
    .script(|_dev, vmm, msg| {
        if msg.message == DEVICE_INIT {
            for tag in ["A", "B"] {
                vmm.call_when_task_switched(move |dev: &ScriptDevice, vmm, old, new| {
                    dev.note(vmm, format!("{tag} {:#x}->{:#x}", old.0, new.0));
                })
                .unwrap();
            }
        }
        if msg.message == VM_INIT {
            vmm.schedule_vm_event(msg.vm, |_: &ScriptDevice, _, _| {}).unwrap();
        }
        Carry::Clear
    })
    .run();
    run.assert_ok();
    assert_eq!(
        notes(&run)[..4],
        ["A 0x10001->0x10002", "B 0x10001->0x10002", "A 0x10002->0x10001", "B 0x10002->0x10001"]
    );
}

#[test]
fn idle_handlers_form_a_chain_until_one_consumes() {
    let run = on_go(GO_AT_10, |_dev, _vmm| {})
        .script(|_dev, vmm, msg| {
            if msg.message == DEVICE_INIT {
                for (tag, pass) in [("first", true), ("second", false), ("third", true)] {
                    vmm.call_when_idle(move |dev: &ScriptDevice, vmm, _vm| {
                        dev.note(vmm, format!("{tag} t={}", vmm.get_system_time()));
                        Carry::from_failed(pass)
                    })
                    .unwrap();
                }
                vmm.register_interrupt("go", |_: &ScriptDevice, _, _| {}).unwrap();
            }
            Carry::Clear
        })
        .run();
    run.assert_ok();
    let n = notes(&run);
    assert!(n.starts_with(&["first t=0".to_string(), "second t=0".to_string()]), "{n:?}");
    assert!(!n.iter().any(|s| s.starts_with("third")), "{n:?}");
}

// ---- VMs --------------------------------------------------------------------------------

#[test]
fn dos_vms_get_the_creation_and_destruction_messages() {
    let run = Scenario::new(
        r#"
        [386Enh]
        device = ["SCRIPT"]
        [[vm]]
        name = "DOS1"
        at = 10
    "#,
    )
    .script(|_, _, _| Carry::Clear)
    .run();
    run.assert_ok();
    let t = run.trace();
    let msgs: Vec<_> = t
        .matching(json!({"kind": "control", "device": "SCRIPT", "vm": DOS1}))
        .into_iter()
        .map(|r| r["message"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        msgs,
        [
            "Create_VM",
            "VM_Critical_Init",
            "VM_Init",
            "VM_Terminate",
            "VM_Terminate2",
            "VM_Not_Executeable",
            "VM_Not_Executeable2",
            "Destroy_VM",
            "Destroy_VM2"
        ]
    );
    t.expect(json!({"kind": "vm_created", "vm": DOS1, "id": 2, "name": "DOS1", "t": 10}));
    t.expect(json!({"kind": "vm_destroyed", "vm": DOS1, "reason": "shutdown", "flags": 0}));
    t.expect_in_order(&[
        json!({"kind": "vm_destroyed", "vm": DOS1}),
        json!({"kind": "control", "message": "Sys_VM_Terminate"}),
    ]);
}

#[test]
fn a_device_failing_create_vm_fails_the_creation() {
    let run = Scenario::new(
        r#"
        [386Enh]
        device = ["SCRIPT", "vcountd"]
        [[vm]]
        name = "DOS1"
        at = 10
    "#,
    )
    .script(|_, _, msg| Carry::from_failed(msg.message == CREATE_VM))
    .run();
    run.assert_ok();
    let t = run.trace();
    t.expect(json!({"kind": "control", "device": "SCRIPT", "message": "Create_VM", "result": "set"}));
    // The broadcast stopped at the failing device; everyone learns the VM is
    // not executeable (VNE_CreateFail) and destroyed.
    t.expect_none(json!({"kind": "control", "device": "VCOUNTD", "message": "Create_VM"}));
    t.expect(json!({"kind": "control", "device": "VCOUNTD", "message": "VM_Not_Executeable", "edx": VNE_CREATEFAIL}));
    t.expect(json!({"kind": "control", "device": "VCOUNTD", "message": "Destroy_VM"}));
    t.expect(json!({"kind": "vm_destroyed", "reason": "create_failed", "flags": VNE_CREATEFAIL}));
    t.expect_none(json!({"kind": "vm_created"}));
    t.expect_none(json!({"kind": "control", "message": "VM_Init"}));
}

#[test]
fn events_scheduled_for_a_dying_vm_go_with_it() {
    // The device schedules an event for the VM from each of its VM_Terminate,
    // VM_Not_Executeable and Destroy_VM handlers (the handle is valid in all
    // three). None of them runs, each is cancelled with the VM, and the next
    // VM, which reuses the dead VM's table slot, starts with none of them.
    let mut s = Scenario::new(
        r#"
        [386Enh]
        device = ["SCRIPT"]
    "#,
    )
    .script(|dev, vmm, msg| {
        if matches!(msg.message, CREATE_VM | VM_TERMINATE | VM_NOT_EXECUTEABLE | DESTROY_VM) {
            let tag = control_message_name(msg.message);
            let h = vmm.call_priority_vm_event(0, msg.vm, PEF_ALWAYS_SCHED, 0, note_when_run(tag));
            dev.note(vmm, format!("{tag} scheduled={}", h.is_ok()));
        }
        Carry::Clear
    })
    .boot();
    let dos1 = s.create_vm("DOS1").expect("DOS1");
    s.machine().destroy_vm(dos1);
    let dos2 = s.create_vm("DOS2").expect("DOS2");
    assert_eq!(dos2 & 0xFFFF, dos1 & 0xFFFF, "DOS2 reuses DOS1's slot");
    assert_ne!(dos2, dos1);
    s.run_for(vmm_host::time::Duration::from_millis(10));
    let t = s.trace();
    let ran: Vec<String> = t
        .values(json!({"kind": "debug_string", "device": "SCRIPT"}), "text")
        .into_iter()
        .filter_map(|v| v.as_str().filter(|s| s.contains("t=")).map(|s| s.to_string()))
        .collect();
    assert_eq!(ran, [format!("Create_VM t=0 vm={dos2:#x} timed_out=false")], "only DOS2's own event runs");
    assert_eq!(t.count(json!({"kind": "event_cancelled", "vm": dos1, "reason": "vm_destroyed"})), 4);
    assert_eq!(t.count(json!({"kind": "debug_string", "text": "Destroy_VM scheduled=true"})), 1);
    assert_eq!(s.violations(), 0);
}

#[test]
fn vm_handle_services_and_stale_vm_handles() {
    let run = Scenario::new(
        r#"
            [386Enh]
            device = ["SCRIPT"]
            [[vm]]
            name = "DOS1"
            at = 10
            [[interrupt]]
            name = "go"
            at = 20
        "#,
    )
    .script(|dev, vmm, msg| {
        match msg.message {
            DEVICE_INIT => {
                vmm.register_interrupt("go", |dev: &ScriptDevice, vmm, _| {
                    let sys = vmm.get_sys_vm_handle();
                    let cur = vmm.get_cur_vm_handle();
                    let next = vmm.get_next_vm_handle(sys).unwrap();
                    dev.note(
                        vmm,
                        format!(
                            "reenter={} cur_is_sys={} next={:#x} wraps={}",
                            vmm.get_vmm_reenter_count(),
                            vmm.test_sys_vm_handle(cur),
                            next.0,
                            vmm.get_next_vm_handle(next).unwrap() == sys
                        ),
                    );
                })
                .unwrap();
            }
            SYS_VM_INIT => {
                dev.note(
                    vmm,
                    format!("reenter={} valid={}", vmm.get_vmm_reenter_count(), vmm.validate_vm_handle(msg.vm)),
                );
            }
            DESTROY_VM => dev.state.borrow_mut().push(msg.vm.0),
            SYS_VM_TERMINATE => {
                let old = VmHandle(dev.state.borrow()[0]);
                dev.note(vmm, format!("after destroy valid={}", vmm.validate_vm_handle(old)));
                dev.note(vmm, format!("{:?}", vmm.get_vm_info(old)));
                dev.note(vmm, format!("{:?}", vmm.get_vm_info(VmHandle(0xDEAD_BEEF)).map(|_| ())));
            }
            _ => {}
        }
        Carry::Clear
    })
    .run();
    run.assert_ok();
    assert_eq!(
        notes(&run),
        [
            "reenter=0 valid=true",
            "reenter=1 cur_is_sys=true next=0x10002 wraps=true",
            "after destroy valid=false",
            "Err(VmmError { code: 2 })",
            "Err(VmmError { code: 2 })",
        ]
    );
    assert_eq!(run.trace().count(json!({"kind": "violation", "code": "INVALID_VM_HANDLE"})), 2);
}

#[test]
fn control_block_areas_are_per_vm() {
    let run = Scenario::new(
        r#"
        [386Enh]
        device = ["SCRIPT"]
        [[vm]]
        name = "DOS1"
        [[vm]]
        name = "DOS2"
    "#,
    )
    .script(|dev, vmm, msg| {
        match msg.message {
            DEVICE_INIT => {
                let off = vmm.allocate_device_cb_area(8, 0).unwrap();
                dev.state.borrow_mut().push(off);
                vmm.cb_write_u32(msg.vm, off, 0x5151).unwrap();
            }
            CREATE_VM => {
                let off = dev.state.borrow()[0];
                let fresh = vmm.cb_read_u32(msg.vm, off).unwrap();
                vmm.cb_write_u32(msg.vm, off, msg.vm.0).unwrap();
                dev.note(vmm, format!("fresh={fresh:#x}"));
            }
            SYS_VM_TERMINATE => {
                let off = dev.state.borrow()[0];
                dev.note(vmm, format!("sys={:#x}", vmm.cb_read_u32(msg.vm, off).unwrap()));
                let r = vmm.cb_read_u32(msg.vm, off + 8);
                dev.note(vmm, format!("{r:?}"));
                let late = vmm.allocate_device_cb_area(4, 0);
                dev.note(vmm, format!("late={late:?}"));
            }
            _ => {}
        }
        Carry::Clear
    })
    .run();
    run.assert_ok();
    assert_eq!(notes(&run), ["fresh=0x0", "fresh=0x0", "sys=0x5151", "Err(VmmError { code: 2 })", "late=None"]);
    let t = run.trace();
    t.expect(json!({"kind": "violation", "code": "BAD_CB_OFFSET"}));
    t.expect(json!({"kind": "violation", "code": "INIT_ONLY_SERVICE", "service": "_Allocate_Device_CB_Area"}));
}

// ---- critical section and semaphores -------------------------------------------------------

#[test]
fn a_vm_blocks_on_the_critical_section_until_it_is_released() {
    let run = on_go(
        r#"
            [[vm]]
            name = "DOS1"
            [[action]]
            at = 5
            vm = "system"
            action = "begin_critical"
            [[action]]
            at = 40
            vm = "system"
            action = "end_critical"
            [[interrupt]]
            name = "go"
            at = 10
        "#,
        |_dev, vmm| {
            vmm.call_priority_vm_event(0x1000_0000, VmHandle(DOS1), 0, 0, |dev: &ScriptDevice, vmm, _| {
                dev.note(vmm, format!("claiming t={}", vmm.get_system_time()));
                vmm.begin_critical_section(0).unwrap();
                let s = vmm.get_crit_section_status().unwrap();
                dev.note(vmm, format!("owned t={} claims={} owner={:#x}", vmm.get_system_time(), s.claims, s.owner.0));
                vmm.end_critical_section().unwrap();
            })
            .unwrap();
        },
    )
    .run();
    run.assert_ok();
    assert_eq!(notes(&run), ["claiming t=10", "owned t=40 claims=1 owner=0x10002"]);
    run.trace().expect_in_order(&[
        json!({"kind": "crit_section", "action": "wait", "vm": DOS1, "t": 10}),
        json!({"kind": "crit_section", "action": "release", "vm": SYS, "t": 40}),
        json!({"kind": "crit_section", "action": "grant", "vm": DOS1, "t": 40}),
    ]);
}

#[test]
fn claim_release_status_and_misuse_of_the_critical_section() {
    let run = on_go(GO_AT_10, |_dev, vmm| {
        vmm.schedule_global_event(|dev: &ScriptDevice, vmm, _| {
            vmm.claim_critical_section(3, 0).unwrap();
            let s = vmm.get_crit_status_no_block();
            dev.note(vmm, format!("claims={} high={}", s.claims, s.high_priority));
            vmm.release_critical_section(1).unwrap();
            dev.note(vmm, format!("suspend with 2 claims: {:?}", vmm.end_crit_and_suspend().map(|_| "no")));
            vmm.release_critical_section(1).unwrap();
            dev.note(vmm, format!("release too many: {:?}", vmm.release_critical_section(5)));
            vmm.end_critical_section().unwrap();
            dev.note(vmm, format!("not owned: {:?}", vmm.end_critical_section()));
            let s = vmm.get_crit_section_status().unwrap();
            dev.note(vmm, format!("free: claims={} owner_is_cur={}", s.claims, s.owner == vmm.get_cur_vm_handle()));
        })
        .unwrap();
    })
    .run();
    run.assert_ok();
    assert_eq!(
        notes(&run),
        [
            "claims=3 high=true",
            "suspend with 2 claims: Err(VmmError { code: 8 })",
            "release too many: Err(VmmError { code: 2 })",
            "not owned: Err(VmmError { code: 2 })",
            "free: claims=0 owner_is_cur=true",
        ]
    );
    let t = run.trace();
    t.expect(json!({"kind": "violation", "code": "CRIT_COUNT"}));
    t.expect(json!({"kind": "violation", "code": "CRIT_NOT_OWNED"}));
}

#[test]
fn a_semaphore_blocks_a_vm_not_the_host_until_an_interrupt_signals_it() {
    let run = Scenario::new(
        r#"
            [386Enh]
            device = ["SCRIPT"]
            [[vm]]
            name = "DOS1"
            [[interrupt]]
            name = "wait"
            at = 10
            [[interrupt]]
            name = "signal"
            at = 60
        "#,
    )
    .script(|dev, vmm, msg| {
        if msg.message == DEVICE_INIT {
            let sem = vmm.create_semaphore(0).unwrap();
            dev.state.borrow_mut().push(sem.0);
            vmm.register_interrupt("wait", |_: &ScriptDevice, vmm, _| {
                vmm.schedule_vm_event(VmHandle(DOS1), |dev: &ScriptDevice, vmm, _| {
                    let sem = SemaphoreHandle(dev.state.borrow()[0]);
                    dev.note(vmm, format!("waiting t={}", vmm.get_system_time()));
                    vmm.wait_semaphore(sem, 0).unwrap();
                    dev.note(vmm, format!("woke t={}", vmm.get_system_time()));
                })
                .unwrap();
            })
            .unwrap();
            vmm.register_interrupt("signal", |dev: &ScriptDevice, vmm, _| {
                let sem = SemaphoreHandle(dev.state.borrow()[0]);
                vmm.signal_semaphore(sem).unwrap();
            })
            .unwrap();
        }
        Carry::Clear
    })
    .run();
    run.assert_ok();
    assert_eq!(notes(&run), ["waiting t=10", "woke t=60"]);
    run.trace().expect_in_order(&[
        json!({"kind": "semaphore", "action": "block", "vm": DOS1, "t": 10}),
        json!({"kind": "semaphore", "action": "wake", "vm": DOS1, "t": 60}),
        json!({"kind": "vm_switch", "vm": DOS1, "t": 60}),
    ]);
}

#[test]
fn waiting_forever_is_a_deadlock() {
    let run = on_go(GO_AT_10, |_dev, vmm| {
        vmm.schedule_global_event(|_: &ScriptDevice, vmm, _| {
            let sem = vmm.create_semaphore(0).unwrap();
            let _ = vmm.wait_semaphore(sem, 0);
        })
        .unwrap();
    })
    .run();
    expect_deadlock(&run);
}

#[test]
fn semaphore_tokens_and_stale_semaphore_handles() {
    let run = on_go(GO_AT_10, |_dev, vmm| {
        vmm.schedule_global_event(|dev: &ScriptDevice, vmm, _| {
            let sem = vmm.create_semaphore(2).unwrap();
            vmm.wait_semaphore(sem, 0).unwrap();
            vmm.wait_semaphore(sem, 0).unwrap();
            vmm.signal_semaphore(sem).unwrap();
            vmm.wait_semaphore(sem, 0).unwrap();
            vmm.destroy_semaphore(sem).unwrap();
            dev.note(vmm, format!("{:?}", vmm.signal_semaphore(sem)));
        })
        .unwrap();
    })
    .run();
    run.assert_ok();
    assert_eq!(notes(&run), ["Err(VmmError { code: 2 })"]);
    run.trace().expect(json!({"kind": "violation", "code": "INVALID_SEMAPHORE"}));
}

/// DOS1 blocks on a semaphore at t=10 (in a VM event) with `flags`;
/// interrupt `poke` at t=20 runs `poke`; `signal` at t=60 wakes DOS1.
fn blocked_dos1(flags: u32, extra: &str, poke: impl Fn(&ScriptDevice, &Vmm<'_>) + 'static) -> Scenario {
    let poke = std::rc::Rc::new(poke);
    Scenario::new(&format!(
        r#"
            [386Enh]
            device = ["SCRIPT"]
            [[vm]]
            name = "DOS1"
            [[vm]]
            name = "DOS2"
            {extra}[[interrupt]]
            name = "wait"
            at = 10
            [[interrupt]]
            name = "poke"
            at = 20
            [[interrupt]]
            name = "signal"
            at = 60
        "#
    ))
    .script(move |dev, vmm, msg| {
        if msg.message == DEVICE_INIT {
            let sem = vmm.create_semaphore(0).unwrap();
            dev.state.borrow_mut().push(sem.0);
            vmm.register_interrupt("wait", move |_: &ScriptDevice, vmm, _| {
                vmm.schedule_vm_event(VmHandle(DOS1), move |dev: &ScriptDevice, vmm, _| {
                    let sem = SemaphoreHandle(dev.state.borrow()[0]);
                    dev.note(vmm, format!("waiting t={}", vmm.get_system_time()));
                    let r = vmm.wait_semaphore(sem, flags);
                    dev.note(vmm, format!("woke t={} {r:?}", vmm.get_system_time()));
                })
                .unwrap();
            })
            .unwrap();
            let p = poke.clone();
            vmm.register_interrupt("poke", move |dev: &ScriptDevice, vmm, _| p(dev, vmm)).unwrap();
            vmm.register_interrupt("signal", |dev: &ScriptDevice, vmm, _| {
                let sem = SemaphoreHandle(dev.state.borrow()[0]);
                vmm.signal_semaphore(sem).unwrap();
            })
            .unwrap();
        }
        Carry::Clear
    })
}

/// A VM event for DOS1 that notes when it ran and whether DOS1 was blocked.
fn poke_dos1(_dev: &ScriptDevice, vmm: &Vmm<'_>) {
    vmm.schedule_vm_event(VmHandle(DOS1), |dev: &ScriptDevice, vmm, ev| {
        let status = vmm.get_vm_info(VmHandle(DOS1)).unwrap().status;
        dev.note(
            vmm,
            format!("event t={} vm={:#x} blocked={}", vmm.get_system_time(), ev.vm.0, status & VMSTAT_BLOCKED != 0),
        );
    })
    .unwrap();
}

#[test]
fn a_blocked_vm_runs_no_events_unless_it_waits_with_block_svc_ints() {
    let run = blocked_dos1(0, "", poke_dos1).run();
    run.assert_ok();
    assert_eq!(notes(&run), ["waiting t=10", "woke t=60 Ok(())", "event t=60 vm=0x10002 blocked=false"]);
    run.trace().expect(json!({"kind": "semaphore", "action": "block", "vm": DOS1, "flags": 0}));

    for flags in [BLOCK_SVC_INTS, BLOCK_FORCE_SVC_INTS | BLOCK_SVC_INTS] {
        let run = blocked_dos1(flags, "", poke_dos1).run();
        run.assert_ok();
        assert_eq!(
            notes(&run),
            ["waiting t=10", "event t=20 vm=0x10002 blocked=true", "woke t=60 Ok(())"],
            "flags {flags:#x}"
        );
        let t = run.trace();
        t.expect(json!({"kind": "semaphore", "action": "block", "vm": DOS1, "flags": flags}));
        t.expect_in_order(&[
            json!({"kind": "vm_switch", "vm": DOS1, "t": 20}),
            json!({"kind": "event_dispatched", "event": "vm", "vm": DOS1, "t": 20}),
            json!({"kind": "semaphore", "action": "wake", "vm": DOS1, "t": 60}),
        ]);
    }
}

#[test]
fn block_svc_if_ints_locked_services_nothing_while_v86_interrupts_are_not_locked() {
    // Nothing in the machine locks a VM's V86 interrupts, so the flag alone
    // behaves like no flag.
    let run = blocked_dos1(BLOCK_SVC_IF_INTS_LOCKED, "", poke_dos1).run();
    run.assert_ok();
    assert_eq!(notes(&run), ["waiting t=10", "woke t=60 Ok(())", "event t=60 vm=0x10002 blocked=false"]);
}

#[test]
fn block_enable_ints_lets_a_blocked_vm_with_interrupts_disabled_run_events_that_wait_for_sti() {
    let cli = r#"
            [[action]]
            at = 5
            vm = "DOS1"
            action = "cli"
            [[action]]
            at = 80
            vm = "DOS1"
            action = "sti"
        "#;
    let poke = |_: &ScriptDevice, vmm: &Vmm<'_>| {
        vmm.call_priority_vm_event(0, VmHandle(DOS1), PEF_WAIT_FOR_STI, 0, note_when_run("sti-event")).unwrap();
    };
    // Block_Svc_Ints alone: the event waits for the VM's own STI at t=80.
    let run = blocked_dos1(BLOCK_SVC_INTS, cli, poke).run();
    run.assert_ok();
    assert_eq!(notes(&run), ["waiting t=10", "woke t=60 Ok(())", "sti-event t=80 vm=0x10002 timed_out=false"]);
    // With Block_Enable_Ints, interrupts count as enabled while it waits.
    let run = blocked_dos1(BLOCK_SVC_INTS | BLOCK_ENABLE_INTS, cli, poke).run();
    run.assert_ok();
    assert_eq!(notes(&run), ["waiting t=10", "sti-event t=20 vm=0x10002 timed_out=false", "woke t=60 Ok(())"]);
    // Without a Block_Svc_* flag, Block_Enable_Ints does nothing.
    let run = blocked_dos1(BLOCK_ENABLE_INTS, cli, poke).run();
    run.assert_ok();
    assert_eq!(notes(&run), ["waiting t=10", "woke t=60 Ok(())", "sti-event t=80 vm=0x10002 timed_out=false"]);
}

#[test]
fn block_poll_keeps_the_cpu_from_vms_of_equal_priority_but_not_from_higher_ones() {
    let poke = |_: &ScriptDevice, vmm: &Vmm<'_>| {
        vmm.schedule_vm_event(VmHandle(DOS2), note_when_run("dos2")).unwrap();
        vmm.call_priority_vm_event(HIGH_PRI_DEVICE_BOOST as i32, VmHandle(SYS), 0, 0, note_when_run("boosted-sys"))
            .unwrap();
    };
    // Without Block_Poll the other VMs run while DOS1 waits.
    let run = blocked_dos1(0, "", poke).run();
    run.assert_ok();
    let n = notes(&run);
    assert!(n.contains(&"dos2 t=20 vm=0x10003 timed_out=false".to_string()), "{n:?}");
    assert!(n.contains(&"boosted-sys t=20 vm=0x10001 timed_out=false".to_string()), "{n:?}");
    // With it, only the boosted system VM runs; DOS2 waits for DOS1 to wake.
    let run = blocked_dos1(BLOCK_POLL, "", poke).run();
    run.assert_ok();
    assert_eq!(
        notes(&run),
        [
            "waiting t=10",
            "boosted-sys t=20 vm=0x10001 timed_out=false",
            "woke t=60 Ok(())",
            "dos2 t=60 vm=0x10003 timed_out=false"
        ]
    );
}

#[test]
fn polling_for_a_semaphore_only_an_equal_vm_would_signal_is_a_deadlock() {
    let run = on_go(
        r#"
            [[vm]]
            name = "DOS1"
            [[vm]]
            name = "DOS2"
            [[interrupt]]
            name = "go"
            at = 10
        "#,
        |_, vmm| {
            vmm.schedule_global_event(|dev: &ScriptDevice, vmm, _| {
                let sem = vmm.create_semaphore(0).unwrap();
                dev.state.borrow_mut().push(sem.0);
                vmm.schedule_vm_event(VmHandle(DOS1), |dev: &ScriptDevice, vmm, _| {
                    let sem = SemaphoreHandle(dev.state.borrow()[0]);
                    let _ = vmm.wait_semaphore(sem, BLOCK_POLL);
                })
                .unwrap();
                vmm.schedule_vm_event(VmHandle(DOS2), |dev: &ScriptDevice, vmm, _| {
                    let sem = SemaphoreHandle(dev.state.borrow()[0]);
                    vmm.signal_semaphore(sem).unwrap();
                })
                .unwrap();
            })
            .unwrap();
        },
    )
    .run();
    expect_deadlock(&run);
}

#[test]
fn block_thread_idle_lets_the_idle_handlers_run_while_the_system_vm_waits() {
    let case = |flags: u32| {
        Scenario::new(
            r#"
                [386Enh]
                device = ["SCRIPT"]
                [[interrupt]]
                name = "go"
                at = 10
                [[interrupt]]
                name = "signal"
                at = 60
            "#,
        )
        .script(move |dev, vmm, msg| {
            if msg.message != DEVICE_INIT {
                return Carry::Clear;
            }
            let sem = vmm.create_semaphore(0).unwrap();
            dev.state.borrow_mut().extend([sem.0, 0]);
            vmm.call_when_idle(|dev: &ScriptDevice, vmm, _| {
                if dev.state.borrow()[1] == 1 {
                    dev.state.borrow_mut()[1] = 2;
                    dev.note(vmm, format!("idle while waiting t={}", vmm.get_system_time()));
                }
                Carry::Set
            })
            .unwrap();
            vmm.register_interrupt("signal", |dev: &ScriptDevice, vmm, _| {
                vmm.signal_semaphore(SemaphoreHandle(dev.state.borrow()[0])).unwrap();
            })
            .unwrap();
            vmm.register_interrupt("go", move |_: &ScriptDevice, vmm, _| {
                vmm.schedule_vm_event(vmm.get_sys_vm_handle(), move |dev: &ScriptDevice, vmm, _| {
                    let sem = SemaphoreHandle(dev.state.borrow()[0]);
                    dev.state.borrow_mut()[1] = 1;
                    vmm.wait_semaphore(sem, flags).unwrap();
                    dev.state.borrow_mut()[1] = 3;
                    dev.note(vmm, format!("woke t={}", vmm.get_system_time()));
                })
                .unwrap();
            })
            .unwrap();
            Carry::Clear
        })
        .run()
    };
    let run = case(BLOCK_THREAD_IDLE);
    run.assert_ok();
    assert_eq!(notes(&run), ["idle while waiting t=10", "woke t=60"]);
    let run = case(0);
    run.assert_ok();
    assert_eq!(notes(&run), ["woke t=60"]);
}

#[test]
fn reserved_block_flags_are_rejected() {
    let case = |manifest: &str, flags: u32| {
        let run = on_go(&format!("{manifest}[[interrupt]]\nname = \"go\"\nat = 10\n"), move |_dev, vmm| {
            vmm.schedule_global_event(move |dev: &ScriptDevice, vmm, _| {
                let sem = vmm.create_semaphore(1).unwrap();
                dev.note(vmm, format!("wait {:?}", vmm.wait_semaphore(sem, flags)));
                dev.note(vmm, format!("crit {:?}", vmm.begin_critical_section(flags)));
            })
            .unwrap();
        })
        .run();
        run.assert_ok();
        let count = run.trace().count(json!({"kind": "violation", "code": "RESERVED_FLAGS"}));
        (notes(&run), count)
    };
    let bad = "Err(VmmError { code: 2 })";
    assert_eq!(case("", 0x40), (vec![format!("wait {bad}"), format!("crit {bad}")], 2));
    assert_eq!(
        case(
            r#"
        [machine]
        windows = "3.1"
    "#,
            BLOCK_THREAD_IDLE
        )
        .1,
        2
    );
    let (n, count) = case("", BLOCK_THREAD_IDLE | BLOCK_SVC_INTS);
    assert_eq!((n[0].as_str(), count), ("wait Ok(())", 0));
    let (n, _) = case("", BLOCK_POLL);
    assert_eq!(
        n,
        ["wait Ok(())".to_string(), format!("crit {bad}")],
        "Block_Poll is not allowed for the critical section"
    );
}

// ---- contexts -------------------------------------------------------------------------------

#[test]
fn synchronous_services_at_interrupt_time_are_violations() {
    let run = on_go(GO_AT_10, |dev, vmm| {
        let sys = vmm.get_sys_vm_handle();
        // Asynchronous services are fine.
        vmm.call_priority_vm_event(0, sys, 0, 0, |_: &ScriptDevice, _, _| {}).unwrap();
        vmm.get_crit_status_no_block();
        // Synchronous ones are not.
        let results = [
            vmm.get_crit_section_status().map(|_| ()),
            vmm.begin_critical_section(0),
            vmm.set_global_time_out(5, |_: &ScriptDevice, _, _| {}).map(|_| ()).ok_or(VmmError::VIOLATION),
            vmm.heap_allocate(16, 0).map(|_| ()).ok_or(VmmError::VIOLATION),
            vmm.call_when_idle(|_: &ScriptDevice, _, _| Carry::Clear),
            vmm.adjust_exec_priority(sys, 1),
            vmm.create_semaphore(0).map(|_| ()),
        ];
        dev.note(vmm, format!("{}", results.iter().filter(|r| r.is_err()).count()));
    })
    .run();
    run.assert_ok();
    assert_eq!(notes(&run), ["7"]);
    let services: Vec<_> = run
        .trace()
        .values(json!({"kind": "violation", "code": "SYNC_SERVICE_AT_INTERRUPT", "context": "interrupt"}), "service");
    assert_eq!(
        services,
        [
            "Get_Crit_Section_Status",
            "Begin_Critical_Section",
            "Set_Global_Time_Out",
            "_HeapAllocate",
            "Call_When_Idle",
            "Adjust_Exec_Priority",
            "Create_Semaphore"
        ]
    );
}

#[test]
fn the_fatal_violation_policy_stops_the_machine() {
    let run = on_go(
        r#"
        [machine]
        violations = "fatal"
        [[interrupt]]
        name = "go"
        at = 10
    "#,
        |_dev, vmm| {
            let _ = vmm.get_crit_section_status();
        },
    )
    .run();
    let e = run.expect_error().to_string();
    assert!(e.contains("SYNC_SERVICE_AT_INTERRUPT"), "{e}");
    run.trace().expect(json!({"kind": "control", "message": "System_Exit"}));
}

#[test]
fn the_log_violation_policy_lets_the_call_proceed() {
    let run = on_go(
        r#"
        [machine]
        violations = "log"
        [[interrupt]]
        name = "go"
        at = 10
    "#,
        |dev, vmm| {
            dev.note(vmm, format!("{}", vmm.get_crit_section_status().is_ok()));
        },
    )
    .run();
    run.assert_ok();
    assert_eq!(notes(&run), ["true"]);
    run.trace().expect(json!({"kind": "violation", "code": "SYNC_SERVICE_AT_INTERRUPT"}));
}

// ---- interrupts and ordering --------------------------------------------------------------------

#[test]
fn manifest_interrupts_repeat_and_unknown_sources_are_errors() {
    let run = on_go(
        r#"
        [[interrupt]]
        name = "go"
        at = 10
        every = "15ms"
        count = 3
    "#,
        |dev, vmm| {
            dev.note(vmm, format!("irq t={} reenter={}", vmm.get_system_time(), vmm.get_vmm_reenter_count()));
        },
    )
    .run();
    run.assert_ok();
    assert_eq!(notes(&run), ["irq t=10 reenter=1", "irq t=25 reenter=1", "irq t=40 reenter=1"]);
    run.trace().expect(json!({"kind": "interrupt", "name": "go", "device": "SCRIPT", "injected": false}));

    let run = on_go(
        r#"
        [[interrupt]]
        name = "nope"
        at = 10
    "#,
        |_, _| {},
    )
    .run();
    let e = run.expect_error().to_string();
    assert!(e.contains("`nope`") && e.contains("registered: go"), "{e}");
}

/// Six events ready at once plus injected re-entry: the order depends on
/// the seed and only on the seed.
fn random_scenario(seed: u64) -> Scenario {
    on_go(GO_AT_10, |dev, vmm| {
        let n = dev.state.borrow().len();
        if n >= 2 {
            return;
        }
        dev.state.borrow_mut().push(0);
        let sys = vmm.get_sys_vm_handle();
        for tag in ["a", "b", "c", "d", "e", "f"] {
            vmm.call_priority_vm_event(0, sys, 0, 0, move |dev: &ScriptDevice, vmm, _| {
                // A service call: a boundary where random mode may inject the
                // interrupt again, re-entering the device before the other
                // handlers run.
                let t = vmm.get_system_time();
                let _ = vmm.get_crit_section_status();
                dev.note(vmm, format!("{tag}@{t}"));
            })
            .unwrap();
        }
    })
    .set("machine.order=\"random\"")
    .set("machine.inject_rate=0.5")
    .set(&format!("machine.seed={seed}"))
}

#[test]
fn the_same_seed_gives_an_identical_trace_and_another_seed_another() {
    let a = random_scenario(1).run();
    let b = random_scenario(1).run();
    let c = random_scenario(2).run();
    a.assert_ok();
    assert_eq!(a.trace().records(), b.trace().records(), "same seed, byte-identical trace");
    assert_ne!(notes(&a), notes(&c), "another seed, another order");
    a.trace().expect(json!({"kind": "machine", "seed": 1, "order": "random"}));
}

#[test]
fn random_mode_re_enters_a_device_before_its_handlers_run() {
    // Over a few seeds, at least one run injects the interrupt at a service
    // boundary inside an event callback, so the device schedules new events
    // before the old ones have all run.
    let mut reentered = false;
    for seed in 1..=20 {
        let run = random_scenario(seed).run();
        run.assert_ok();
        let t = run.trace();
        if t.count(json!({"kind": "interrupt", "injected": true})) > 0 {
            t.expect_in_order(&[
                json!({"kind": "event_dispatched"}),
                json!({"kind": "interrupt", "injected": true}),
                json!({"kind": "event_dispatched"}),
            ]);
            // Every event still runs exactly once.
            assert_eq!(t.count(json!({"kind": "event_scheduled"})), t.count(json!({"kind": "event_dispatched"})));
            reentered = true;
        }
    }
    assert!(reentered, "no seed in 1..=20 injected an interrupt");
}

#[test]
fn devices_write_structured_notes_into_the_trace() {
    let run = Scenario::new(
        r#"
        [386Enh]
        device = ["SCRIPT"]
    "#,
    )
    .script(|_, vmm, msg| {
        if msg.message == DEVICE_INIT {
            let ok = vmm.trace_note(
                "hello",
                &[("count", 3u32.into()), ("delta", (-2i32).into()), ("on", true.into()), ("who", "VPOSTD".into())],
            );
            assert!(ok.is_ok());
            // Bad names and duplicate fields are refused and reported.
            assert_eq!(vmm.trace_note("Bad Name", &[]), Err(VmmError::VIOLATION));
            assert_eq!(vmm.trace_note("x", &[("a", 1u8.into()), ("a", 2u8.into())]), Err(VmmError::VIOLATION));
            assert_eq!(vmm.trace_note("x", &[("", 1u8.into())]), Err(VmmError::VIOLATION));
            let names: [String; 33] = core::array::from_fn(|i| format!("f{i}"));
            let many: [(&str, NoteValue<'_>); 33] = core::array::from_fn(|i| (names[i].as_str(), NoteValue::UInt(1)));
            assert_eq!(vmm.trace_note("x", &many), Err(VmmError::INVALID_PARAMETER));
            let most: [(&str, NoteValue<'_>); 32] = core::array::from_fn(|i| many[i]);
            assert!(vmm.trace_note("x", &most).is_ok());
        }
        Carry::Clear
    })
    .run();
    run.assert_ok();
    let t = run.trace();
    let n = t.expect(json!({"kind": "note", "device": "SCRIPT", "note": "hello"}));
    assert_eq!(n["fields"], json!({"count": 3, "delta": -2, "on": true, "who": "VPOSTD"}));
    let v = t.matching(json!({"kind": "violation", "code": "INVALID_PARAMETER", "service": "trace_note"}));
    assert_eq!(v.len(), 3, "the SDK refuses 33 fields itself");
    assert!(v[0]["message"].as_str().unwrap().contains("`Bad Name`"));
    assert!(v[1]["message"].as_str().unwrap().contains("field `a` twice"));
    assert_eq!(t.count(json!({"kind": "note", "note": "x"})), 1);
}
