//! Service hooks, control messages sent by devices, Windows 95's event
//! additions (`Call_Restricted_Event`, the 4.0 `Call_When_Not_Critical`)
//! and the VM-lifetime services: the scenarios of the virtual-hardware
//! reference's section 10 (items 39-49), each asserting on the trace.

use vmm_plugin_api::prelude::*;
use vmm_testkit::{Scenario, ScriptDevice, json};

use crate::common::{DOS1, DOS1_CRITICAL_5_TO_40, SYS, note_when_run, notes, on_go};

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

// ---- Call_When_Idle and KERNEL's idle call (scenario 46) ----------------------------

/// A Windows application that makes KERNEL's idle call (INT 2Fh AX=1689h)
/// and exits.
struct KernelIdle;

impl Module for KernelIdle {
    const MODULE: ModuleDef = ModuleDef::windows_app("KIDLE").segments(&[Segment::moveable("_TEXT")]);

    fn create(_: &Ring3<'_>) -> Result<Self, String> {
        Ok(KernelIdle)
    }

    fn start(&self, r3: &Ring3<'_>, _args: &str) -> Step {
        r3.regs().set_ax(W386_KERNEL_IDLE);
        r3.int(0x2F).unwrap();
        Step::exit(0)
    }
}

/// A DOS program that keeps the CPU busy for `args` steps.
struct Busy {
    left: std::cell::Cell<u32>,
}

impl Module for Busy {
    const MODULE: ModuleDef = ModuleDef::dos_program("BUSY").segments(&[Segment::moveable("_TEXT")]);

    fn create(_: &Ring3<'_>) -> Result<Self, String> {
        Ok(Busy { left: std::cell::Cell::new(0) })
    }

    fn start(&self, _r3: &Ring3<'_>, args: &str) -> Step {
        self.left.set(args.trim().parse().unwrap_or(0));
        Step::yield_now()
    }

    fn resume(&self, _r3: &Ring3<'_>, _wake: Wake) -> Step {
        let left = self.left.get();
        if left == 0 {
            return Step::exit(0);
        }
        self.left.set(left - 1);
        Step::yield_now()
    }
}

/// Two idle handlers, A (carry from `a_consumes`) then B, and KERNEL's
/// idle call at start-up, with `extra` in the manifest.
fn idle_chain(a_consumes: bool, extra: &str) -> vmm_testkit::Run {
    Scenario::new(&format!("[386Enh]\ndevice = [\"SCRIPT\"]\n[windows]\nload = [\"KIDLE\"]\n{extra}"))
        .script(move |_dev, vmm, msg| {
            if msg.message == DEVICE_INIT {
                vmm.call_when_idle(move |dev: &ScriptDevice, vmm, vm| {
                    dev.note(vmm, format!("A vm={:#x}", vm.0));
                    if a_consumes { Carry::Clear } else { Carry::Set }
                })
                .unwrap();
                vmm.call_when_idle(|dev: &ScriptDevice, vmm, _vm| {
                    dev.note(vmm, "B");
                    Carry::Clear
                })
                .unwrap();
            }
            Carry::Clear
        })
        .module::<KernelIdle>()
        .module::<Busy>()
        .run()
}

#[test]
fn kernel_idle_call_runs_the_idle_handlers_in_installation_order_until_one_consumes() {
    let run = idle_chain(true, "");
    run.assert_ok();
    let t = run.trace();
    // Inside the INT 2Fh (its record comes when it returns): A, which
    // consumes the idle time, so B is not called.
    t.expect_in_order(&[
        json!({"kind": "debug_string", "device": "SCRIPT", "text": format!("A vm={SYS:#x}")}),
        json!({"kind": "int2f", "vm": SYS, "ax": W386_KERNEL_IDLE}),
    ]);
    t.expect_none(json!({"kind": "debug_string", "text": "B"}));

    let run = idle_chain(false, "");
    run.assert_ok();
    run.trace().expect_in_order(&[
        json!({"kind": "debug_string", "text": format!("A vm={SYS:#x}")}),
        json!({"kind": "debug_string", "text": "B"}),
        json!({"kind": "int2f", "vm": SYS, "ax": W386_KERNEL_IDLE}),
    ]);
}

#[test]
fn kernel_idle_call_does_not_run_the_idle_handlers_while_a_dos_vm_is_busy() {
    let run = idle_chain(true, "[[vm]]\nname = \"DOS1\"\nprogram = \"BUSY\"\nargs = \"50\"\nat = 0\n");
    run.assert_ok();
    let t = run.trace();
    let int2f = t.expect(json!({"kind": "int2f", "vm": SYS, "ax": W386_KERNEL_IDLE}));
    // The first idle call of the chain comes only once DOS1 is done.
    let first_idle = t.expect(json!({"kind": "debug_string", "text": format!("A vm={SYS:#x}")}));
    let ended = t.expect(json!({"kind": "program_ended", "vm": DOS1}));
    assert!(first_idle["t_ns"].as_u64() >= ended["t_ns"].as_u64(), "{first_idle} {ended} {int2f}");
}

/// A Windows application that makes KERNEL's idle call twice, 10 ms apart.
struct KernelIdleTwice;

impl Module for KernelIdleTwice {
    const MODULE: ModuleDef = ModuleDef::windows_app("KIDLE2").segments(&[Segment::moveable("_TEXT")]);

    fn create(_: &Ring3<'_>) -> Result<Self, String> {
        Ok(KernelIdleTwice)
    }

    fn start(&self, r3: &Ring3<'_>, _args: &str) -> Step {
        r3.regs().set_ax(W386_KERNEL_IDLE);
        r3.int(0x2F).unwrap();
        Step::sleep(10)
    }

    fn resume(&self, r3: &Ring3<'_>, _wake: Wake) -> Step {
        r3.regs().set_ax(W386_KERNEL_IDLE);
        r3.int(0x2F).unwrap();
        Step::exit(0)
    }
}

/// Idle handler A (cancellable; cancels itself during its first call when
/// `self_cancel`, passing the idle call on), then B (consumes), KIDLE2's
/// two idle calls; `at_init` runs after both are installed.
fn cancellable_idle(self_cancel: bool, at_init: fn(&ScriptDevice, &Vmm<'_>)) -> vmm_testkit::Run {
    Scenario::new("[386Enh]\ndevice = [\"SCRIPT\"]\n[windows]\nload = [\"KIDLE2\"]\n")
        .script(move |dev, vmm, msg| {
            if msg.message == DEVICE_INIT {
                let a = vmm
                    .call_when_idle_cancellable(move |dev: &ScriptDevice, vmm, _vm| {
                        dev.note(vmm, "A");
                        if self_cancel {
                            let h = IdleHandle(dev.state.borrow()[0]);
                            dev.note(vmm, format!("A cancels itself: {:?}", vmm.cancel_call_when_idle(h)));
                        }
                        Carry::Set
                    })
                    .unwrap();
                dev.state.borrow_mut().push(a.0);
                vmm.call_when_idle(|dev: &ScriptDevice, vmm, _vm| {
                    dev.note(vmm, "B");
                    Carry::Clear
                })
                .unwrap();
                at_init(dev, vmm);
            }
            Carry::Clear
        })
        .module::<KernelIdleTwice>()
        .run()
}

#[test]
fn cancel_call_when_idle_removes_a_handler_and_the_idle_chain_skips_it_from_then_on() {
    // Cancelled at once: only B runs, at both idle calls. The handle is
    // gone after that; 0 and a handle never given are not found either.
    let run = cancellable_idle(false, |dev, vmm| {
        let h = IdleHandle(dev.state.borrow()[0]);
        let results = [h, h, IdleHandle(0), IdleHandle(77)].map(|h| vmm.cancel_call_when_idle(h));
        let expected = [Ok(()), Err(VmmError::NOT_FOUND), Err(VmmError::NOT_FOUND), Err(VmmError::NOT_FOUND)];
        dev.note(vmm, format!("as expected: {}", results == expected));
    });
    run.assert_ok();
    // The idle chain runs at KERNEL's two idle calls and at the run loop's
    // idle moments: B every time, A never.
    let n = notes(&run);
    assert_eq!(n[0], "as expected: true");
    assert!(n.len() >= 3 && n[1..].iter().all(|x| x == "B"), "{n:?}");
    run.trace().expect_none(json!({"kind": "violation"}));

    // Not cancelled: A then B, each time.
    let run = cancellable_idle(false, |_, _| {});
    run.assert_ok();
    let n = notes(&run);
    assert!(n.len() >= 4 && n.chunks(2).all(|p| p == ["A", "B"]), "{n:?}");
}

#[test]
fn an_idle_handler_that_cancels_itself_finishes_its_call_and_is_not_called_again() {
    let run = cancellable_idle(true, |_, _| {});
    run.assert_ok();
    // Its carry (set) still passes that idle call on to B; then only B.
    let n = notes(&run);
    assert_eq!(n[..3], ["A", "A cancels itself: Ok(())", "B"]);
    assert!(n.len() >= 4 && n[3..].iter().all(|x| x == "B"), "{n:?}");
}

#[test]
fn cancel_call_when_idle_does_not_exist_under_windows_31() {
    let run = on_go("[[interrupt]]\nname = \"go\"\nat = 10\n", |_dev, vmm| {
        vmm.schedule_global_event(|_dev: &ScriptDevice, vmm, _| {
            let _ = vmm.cancel_call_when_idle(IdleHandle(1));
        })
        .unwrap();
    })
    .set("machine.windows=\"3.1\"")
    .run();
    let e = run.expect_error().to_string();
    assert!(e.contains("service 012B"), "{e}");
}

#[test]
fn a_thread_event_is_refused_with_an_error_that_says_the_vmm_has_no_threads() {
    // Call_Restricted_Event's thread forms (PEF_Thread_Event,
    // PEF_Wait_For_Thread_STI) name a thread handle, which no service of
    // this VMM hands out: refused, and the callback never runs.
    let run = on_go("[[interrupt]]\nname = \"go\"\nat = 10\n", |dev, vmm| {
        let sys = Some(vmm.get_sys_vm_handle());
        let event = vmm.call_restricted_event(0, sys, PEF_THREAD_EVENT, 0, note_when_run("no"));
        let sti = vmm.call_restricted_event(0, sys, PEF_WAIT_FOR_THREAD_STI, 0, note_when_run("no"));
        dev.note(vmm, format!("{:?} {:?}", event.err(), sti.err()));
    })
    .run();
    run.assert_ok();
    let t = run.trace();
    let refused =
        t.matching(json!({"kind": "violation", "code": "RESERVED_FLAGS", "service": "Call_Restricted_Event"}));
    assert_eq!(refused.len(), 2);
    for r in &refused {
        let text = r["message"].as_str().unwrap_or_default();
        assert!(text.contains("no thread handles") && text.contains("schedule a VM event instead"), "{r}");
    }
    t.expect_none(json!({"kind": "debug_string", "text": "no"}));
}

// ---- Set_VM_Time_Out (scenario 47) --------------------------------------------------

#[test]
fn a_vm_time_out_fires_after_that_vm_ran_its_time_not_wall_time() {
    // Ten DOS VMs share 10 ms slices round-robin, so DOS2 runs 10 ms in
    // every 100: its 50 ms come after about 500 ms of system time.
    let vms: String = (1..=10).map(|i| format!("[[vm]]\nname = \"DOS{i}\"\n")).collect();
    let run = Scenario::new(&format!("[386Enh]\ndevice = [\"SCRIPT\"]\n[machine]\ntime_slice = \"10ms\"\n{vms}"))
        .script(|_dev, vmm, msg| {
            if msg.message == VM_INIT {
                let ms = if msg.vm.0 == crate::common::DOS2 { 50 } else { 600 };
                vmm.set_vm_time_out(ms, msg.vm, |dev: &ScriptDevice, vmm, t| {
                    let exec = vmm.get_vm_exec_time(t.vm).unwrap();
                    dev.note(
                        vmm,
                        format!("vm={:#x} t={} exec={exec} late={}", t.vm.0, vmm.get_system_time(), t.late_ms),
                    );
                })
                .unwrap();
            }
            Carry::Clear
        })
        .run();
    run.assert_ok();
    let first = &notes(&run)[0];
    assert_eq!(first, &format!("vm={:#x} t=420 exec=50 late=0", crate::common::DOS2));
    run.trace().expect(json!({"kind": "timeout", "timer": "vm", "vm": crate::common::DOS2, "t": 420, "late_ms": 0}));
}

// ---- Adjust_Execution_Time ------------------------------------------------------------

/// How long each slice lasted, in ms, as `(vm, ms)`, from the `vm_switch`
/// records.
fn slices(t: &vmm_testkit::Trace) -> Vec<(u64, u64)> {
    let switches = t.matching(json!({"kind": "vm_switch"}));
    switches
        .windows(2)
        .map(|w| {
            (
                w[0]["vm"].as_u64().unwrap(),
                (w[1]["t_ns"].as_u64().unwrap() - w[0]["t_ns"].as_u64().unwrap()) / 1_000_000,
            )
        })
        .collect()
}

#[test]
fn adjust_execution_time_lengthens_the_current_slice_and_another_vms_next_one() {
    // Two DOS VMs share 10 ms slices. DOS1's event (in DOS1's slice) gives
    // DOS1 5 ms less and DOS2 15 ms more: DOS1's slice ends after 5 ms,
    // DOS2's next lasts 25 ms, and the slices after are 10 ms again.
    let run = Scenario::new(
        "[386Enh]\ndevice = [\"SCRIPT\"]\n[machine]\ntime_slice = \"10ms\"\nuntil = 100\n\
         [[vm]]\nname = \"DOS1\"\n[[vm]]\nname = \"DOS2\"\n",
    )
    .script(|_dev, vmm, msg| {
        if msg.message == VM_INIT {
            // A pending VM time-out keeps each VM wanting the CPU (as in
            // the Set_VM_Time_Out test above): they share it by slices.
            vmm.set_vm_time_out(1000, msg.vm, |_: &ScriptDevice, _, _| {}).unwrap();
        }
        if msg.message == VM_INIT && msg.vm.0 == DOS1 {
            vmm.set_global_time_out(30, |_: &ScriptDevice, vmm, _| {
                vmm.schedule_vm_event(VmHandle(DOS1), |dev: &ScriptDevice, vmm, e| {
                    vmm.adjust_execution_time(e.vm, -5).unwrap();
                    vmm.adjust_execution_time(VmHandle(crate::common::DOS2), 15).unwrap();
                    dev.note(vmm, format!("adjusted at {}", vmm.get_system_time()));
                })
                .unwrap();
            });
        }
        Carry::Clear
    })
    .run();
    run.assert_ok();
    let t = run.trace();
    let at: u64 = notes(&run)[0].trim_start_matches("adjusted at ").parse().unwrap();
    let switches = t.matching(json!({"kind": "vm_switch"}));
    let i = switches.iter().position(|r| r["t_ns"].as_u64().unwrap() / 1_000_000 > at).unwrap();
    let s = slices(t);
    // The slice DOS1 was in when its event ran, then DOS2's, then normal.
    assert_eq!(s[i - 1].0, DOS1 as u64, "{s:?}");
    let dos1_start = switches[i - 1]["t_ns"].as_u64().unwrap() / 1_000_000;
    assert_eq!(s[i - 1].1, 5.max(at - dos1_start), "DOS1's slice was 5 ms shorter: {s:?} at {at}");
    assert_eq!(s[i], (crate::common::DOS2 as u64, 25), "{s:?}");
    assert_eq!(s[i + 1].1, 10, "{s:?}");
}

#[test]
fn adjust_execution_time_of_a_stale_vm_is_refused() {
    let run = Scenario::new("[386Enh]\ndevice = [\"SCRIPT\"]\n")
        .script(|dev, vmm, msg| {
            if msg.message == SYS_VM_INIT {
                let refused = vmm.adjust_execution_time(VmHandle(0xDEAD_0001), 2) == Err(VmmError::VIOLATION);
                dev.note(vmm, format!("refused={refused}"));
            }
            Carry::Clear
        })
        .run();
    assert_eq!(notes(&run), ["refused=true"]);
    run.trace().expect(json!({"kind": "violation", "code": "INVALID_VM_HANDLE"}));
}

// ---- Nuke_VM and Crash_Cur_VM (scenarios 48-49) ---------------------------------------

/// Every VM message SCRIPT receives about DOS VMs, as notes.
fn note_vm_messages(dev: &ScriptDevice, vmm: &Vmm<'_>, msg: &ControlMessage) {
    let name = match msg.message {
        VM_TERMINATE => "VM_Terminate",
        VM_NOT_EXECUTEABLE => "VM_Not_Executeable",
        DESTROY_VM => "Destroy_VM",
        _ => return,
    };
    dev.note(vmm, format!("{name} vm={:#x} edx={:#x}", msg.vm.0, msg.edx));
}

/// SCRIPT notes every VM message about DOS VMs and runs `handler` in a
/// global event when `go` is raised at 10 ms; DOS1 exists.
fn ending(handler: impl Fn(&ScriptDevice, &Vmm<'_>) + 'static) -> Scenario {
    let handler = std::rc::Rc::new(handler);
    Scenario::new("[386Enh]\ndevice = [\"SCRIPT\"]\n[[vm]]\nname = \"DOS1\"\n[[interrupt]]\nname = \"go\"\nat = 10\n")
        .script(move |dev, vmm, msg| {
            if msg.message == DEVICE_INIT {
                let h = handler.clone();
                vmm.register_interrupt("go", move |_dev: &ScriptDevice, vmm, _irq| {
                    let h = h.clone();
                    vmm.schedule_global_event(move |dev: &ScriptDevice, vmm, _| h(dev, vmm)).unwrap();
                })
                .unwrap();
            }
            note_vm_messages(dev, vmm, &msg);
            Carry::Clear
        })
}

#[test]
fn nuke_vm_of_another_vm_skips_vm_terminate_and_returns() {
    let run = ending(|dev, vmm| {
        vmm.nuke_vm(VmHandle(DOS1)).unwrap();
        dev.note(vmm, format!("returned valid={}", vmm.validate_vm_handle(VmHandle(DOS1))));
    })
    .run();
    run.assert_ok();
    assert_eq!(
        notes(&run),
        [
            format!("VM_Not_Executeable vm={DOS1:#x} edx={VNE_NUKED:#x}"),
            format!("Destroy_VM vm={DOS1:#x} edx=0x0"),
            "returned valid=false".to_string(),
        ]
    );
    let t = run.trace();
    t.expect(json!({"kind": "vm_destroyed", "vm": DOS1, "flags": VNE_NUKED, "reason": "nuked", "t": 10}));
    t.expect_none(json!({"kind": "control", "message": "VM_Terminate", "vm": DOS1}));
}

#[test]
fn nuke_vm_of_the_current_vm_ends_it_when_the_device_returns() {
    let run = ending(|_dev, vmm| {
        vmm.schedule_vm_event(VmHandle(DOS1), |dev: &ScriptDevice, vmm, ev| {
            assert_eq!(ev.vm, VmHandle(DOS1));
            vmm.nuke_vm(VmHandle(DOS1)).unwrap();
            dev.note(vmm, format!("returned valid={}", vmm.validate_vm_handle(VmHandle(DOS1))));
        })
        .unwrap();
    })
    .run();
    run.assert_ok();
    assert_eq!(
        notes(&run),
        [
            "returned valid=true".to_string(),
            format!("VM_Not_Executeable vm={DOS1:#x} edx={VNE_NUKED:#x}"),
            format!("Destroy_VM vm={DOS1:#x} edx=0x0"),
        ]
    );
    run.trace().expect(json!({"kind": "vm_destroyed", "vm": DOS1, "flags": VNE_NUKED, "reason": "nuked"}));
}

#[test]
fn crash_cur_vm_in_a_dos_vm_ends_it_as_crashed() {
    let run = ending(|_dev, vmm| {
        vmm.schedule_vm_event(VmHandle(DOS1), |_dev: &ScriptDevice, vmm, _| vmm.crash_cur_vm().unwrap()).unwrap();
    })
    .run();
    run.assert_ok();
    assert_eq!(
        notes(&run),
        [format!("VM_Not_Executeable vm={DOS1:#x} edx={VNE_CRASHED:#x}"), format!("Destroy_VM vm={DOS1:#x} edx=0x0")]
    );
    run.trace().expect(json!({"kind": "vm_destroyed", "vm": DOS1, "flags": VNE_CRASHED, "reason": "crashed"}));
}

#[test]
fn crash_cur_vm_in_the_system_vm_is_a_fatal_exit() {
    let run = ending(|dev, vmm| {
        let _ = vmm.crash_cur_vm();
        dev.note(vmm, "not reached");
    })
    .run();
    let e = run.expect_error().to_string();
    assert!(e.contains("Crash_Cur_VM in the system VM"), "{e}");
    let t = run.trace();
    t.expect(json!({"kind": "fatal_error", "device": "SCRIPT", "t": 10}));
    t.expect_none(json!({"kind": "debug_string", "text": "not reached"}));
    // The DOS VM is not terminated normally: the crash exit sends no VM_Terminate.
    t.expect_none(json!({"kind": "control", "message": "VM_Terminate"}));
}

#[test]
fn nuke_vm_of_the_system_vm_ends_windows() {
    let run = ending(|_dev, vmm| {
        let _ = vmm.nuke_vm(vmm.get_sys_vm_handle());
    })
    .run();
    let e = run.expect_error().to_string();
    assert!(e.contains("Nuke_VM of the system VM"), "{e}");
}

#[test]
fn nuke_vm_arguments_and_context_are_checked() {
    let run = Scenario::new(
        "[386Enh]\ndevice = [\"SCRIPT\"]\n[[vm]]\nname = \"DOS1\"\n[[interrupt]]\nname = \"go\"\nat = 10\n",
    )
    .script(|_dev, vmm, msg| {
        if msg.message == DEVICE_INIT {
            vmm.register_interrupt("go", |dev: &ScriptDevice, vmm, _irq| {
                let at_interrupt = vmm.nuke_vm(VmHandle(DOS1));
                dev.note(vmm, format!("{at_interrupt:?}"));
                vmm.schedule_global_event(|dev: &ScriptDevice, vmm, _| {
                    let bad = vmm.nuke_vm(VmHandle(0x0007_0009));
                    dev.note(vmm, format!("{bad:?}"));
                })
                .unwrap();
            })
            .unwrap();
        }
        Carry::Clear
    })
    .run();
    run.assert_ok();
    let t = run.trace();
    t.expect(json!({"kind": "violation", "code": "SYNC_SERVICE_AT_INTERRUPT", "service": "Nuke_VM"}));
    t.expect(json!({"kind": "violation", "code": "INVALID_VM_HANDLE", "service": "Nuke_VM"}));
    // DOS1 lived on until shutdown.
    t.expect(json!({"kind": "vm_destroyed", "vm": DOS1, "reason": "shutdown"}));
}

// ---- Hook_Device_Service / Unhook_Device_Service (scenarios 39-41) ----------------------

/// `SCRIPT_Note` (SCRIPT's service 1: notes EAX).
const SCRIPT_NOTE: u32 = 0x3FF0_0001;

/// A hook that notes its name and EAX, adds `add` to EAX, and chains.
fn adder(name: &'static str, add: u32) -> impl Fn(&ScriptDevice, &Vmm<'_>, &mut HookedCall<'_>) + 'static {
    move |dev: &ScriptDevice, vmm: &Vmm<'_>, call: &mut HookedCall<'_>| {
        dev.note(vmm, format!("{name} eax={}", call.regs().eax));
        call.call().regs.eax += add;
        call.chain(vmm).unwrap();
    }
}

/// SCRIPT hooks `SCRIPT_Note` at Device_Init with X (adds 100) then Y
/// (adds 10), each a HOOK_PROC or not as given; the handles go to its
/// state. `then` runs at Init_Complete.
fn hooked(x_proc: bool, y_proc: bool, then: impl Fn(&ScriptDevice, &Vmm<'_>) + 'static) -> vmm_testkit::Session {
    Scenario::new("[386Enh]\ndevice = [\"SCRIPT\"]\n")
        .script(move |dev, vmm, msg| {
            if msg.message == DEVICE_INIT {
                let x = vmm.hook_device_service(SCRIPT_NOTE, x_proc, adder("X", 100)).unwrap();
                let y = vmm.hook_device_service(SCRIPT_NOTE, y_proc, adder("Y", 10)).unwrap();
                dev.state.borrow_mut().extend([x.0, y.0]);
            }
            if msg.message == INIT_COMPLETE {
                then(dev, vmm);
            }
            Carry::Clear
        })
        .boot()
}

fn call_note(s: &mut vmm_testkit::Session, eax: u32) -> Regs {
    s.call_service(0x3FF0, 1, Regs { eax, ..Regs::default() })
}

#[test]
fn a_hooked_service_runs_the_newest_hook_first_down_to_the_service() {
    let mut s = hooked(false, false, |_, _| {});
    let out = call_note(&mut s, 1);
    assert_eq!(out.eax, 111);
    assert_eq!(out.flags & CF_MASK, 0);
    let run = s.finish();
    run.assert_ok();
    assert_eq!(notes(&run), ["Y eax=1", "X eax=11", "note 111"]);
    run.trace()
        .expect(json!({"kind": "vxd_call", "caller": "<host>", "device_id": 0x3FF0, "ordinal": 1, "result": "clear"}));
}

#[test]
fn unhooking_a_hook_proc_from_the_middle_relinks_the_chain() {
    let mut s = hooked(true, true, |dev, vmm| {
        let x = HookHandle(dev.state.borrow()[0]);
        vmm.unhook_device_service(SCRIPT_NOTE, x).unwrap();
        let again = vmm.unhook_device_service(SCRIPT_NOTE, x);
        dev.note(vmm, format!("again {again:?}"));
    });
    let out = call_note(&mut s, 1);
    assert_eq!(out.eax, 11);
    let run = s.finish();
    run.assert_ok();
    assert_eq!(
        notes(&run),
        [format!("again {:?}", Err::<(), _>(VmmError::NOT_FOUND)), "Y eax=1".into(), "note 11".into()]
    );
}

#[test]
fn a_hook_below_an_old_style_hook_cannot_be_unhooked() {
    let mut s = hooked(true, false, |dev, vmm| {
        let x = HookHandle(dev.state.borrow()[0]);
        let r = vmm.unhook_device_service(SCRIPT_NOTE, x);
        dev.note(vmm, format!("unhook X {r:?}"));
        // The old-style hook on top can itself be removed.
        let y = HookHandle(dev.state.borrow()[1]);
        vmm.unhook_device_service(SCRIPT_NOTE, y).unwrap();
        dev.note(vmm, format!("then X {:?}", vmm.unhook_device_service(SCRIPT_NOTE, x)));
    });
    let out = call_note(&mut s, 1);
    assert_eq!(out.eax, 1);
    let run = s.finish();
    run.assert_ok();
    assert_eq!(
        notes(&run),
        [format!("unhook X {:?}", Err::<(), _>(VmmError::FAILED)), "then X Ok(())".into(), "note 1".into()]
    );
}

#[test]
fn a_hook_on_a_vmm_service_answers_its_vxdcalls() {
    let mut s = Scenario::new("[386Enh]\ndevice = [\"SCRIPT\"]\n")
        .script(|_dev, vmm, msg| {
            if msg.message == DEVICE_INIT {
                // Get_System_Time: the hook answers without chaining.
                vmm.hook_device_service(0x0001_003F, true, |_: &ScriptDevice, _vmm, call: &mut HookedCall<'_>| {
                    call.call().regs.eax = 0x1234;
                    call.set_carry(false);
                })
                .unwrap();
                // Get_VMM_Version: chains, then changes the answer.
                vmm.hook_device_service(0x0001_0000, true, |dev: &ScriptDevice, vmm, call: &mut HookedCall<'_>| {
                    call.chain(vmm).unwrap();
                    dev.note(vmm, format!("version {:#x} from service {:#x}", call.regs().eax, call.service()));
                    call.call().regs.eax = 0x030A;
                })
                .unwrap();
            }
            Carry::Clear
        })
        .boot();
    assert_eq!(s.call_service(1, GET_SYSTEM_TIME, Regs::default()).eax, 0x1234);
    assert_eq!(s.call_service(1, GET_VMM_VERSION, Regs::default()).eax, 0x030A);
    let run = s.finish();
    run.assert_ok();
    assert_eq!(notes(&run), ["version 0x400 from service 0x10000"]);
}

#[test]
fn hook_device_service_refuses_unknown_services_and_unhook_needs_windows_95() {
    let run = Scenario::new("[386Enh]\ndevice = [\"SCRIPT\"]\n")
        .script(|dev, vmm, msg| {
            if msg.message == DEVICE_INIT {
                let none = |_: &ScriptDevice, _: &Vmm<'_>, _: &mut HookedCall<'_>| {};
                let device = vmm.hook_device_service(0x4321_0000, true, none);
                let ordinal = vmm.hook_device_service(0x3FF0_0002, true, none);
                let vmm_ordinal = vmm.hook_device_service(0x0001_0007, true, none);
                dev.note(vmm, format!("{device:?} {ordinal:?} {vmm_ordinal:?}"));
                let _ = vmm.unhook_device_service(SCRIPT_NOTE, HookHandle(1));
            }
            Carry::Clear
        })
        .set("machine.windows=\"3.1\"")
        .run();
    let e = run.expect_error().to_string();
    assert!(e.contains("service 011C"), "{e}");
    let not_found = format!("{:?}", Err::<HookHandle, _>(VmmError::NOT_FOUND));
    assert_eq!(notes(&run), [format!("{not_found} {not_found} {not_found}")]);
}

// ---- typed VXDLDR calls ---------------------------------------------------------------

#[test]
fn devices_drive_vxdldr_through_typed_calls_that_service_hooks_see() {
    let run = Scenario::new("[386Enh]\ndevice = [\"*VXDLDR\", \"SCRIPT\"]\n")
        .script(|_dev, vmm, msg| {
            if msg.message == DEVICE_INIT {
                // The typed calls are VxDCalls: a hook on VXDLDR_LoadDevice sees them.
                let load = vxd_service(VXDLDR_DEVICE_ID, VXDLDR_LOAD_DEVICE);
                vmm.hook_device_service(load, true, |dev: &ScriptDevice, vmm, call: &mut HookedCall<'_>| {
                    let mut name = String::new();
                    let mut byte = [0u8];
                    while vmm.mem_read(call.regs().edx + name.len() as u32, &mut byte).is_ok() && byte[0] != 0 {
                        name.push(byte[0] as char);
                    }
                    dev.note(vmm, format!("hook saw load of {name}"));
                    call.chain(vmm).unwrap();
                })
                .unwrap();
            }
            if msg.message == INIT_COMPLETE {
                vmm.set_global_time_out(10, |dev: &ScriptDevice, vmm, _| {
                    let ldr = vmm.vxdldr();
                    dev.note(vmm, format!("version {:#x}", ldr.get_version().unwrap()));
                    let loaded = ldr.load_device("fixture-reloadable", false).unwrap();
                    let list = ldr.get_device_list().unwrap();
                    let entry = &list[0];
                    dev.note(
                        vmm,
                        format!(
                            "list {} {:#06x} count={} init={} ddb_ok={}",
                            entry.name,
                            entry.device_id,
                            entry.load_count,
                            entry.initialized,
                            entry.ddb == loaded.ddb
                        ),
                    );
                    ldr.dev_init_succeeded(loaded.device_info).unwrap();
                    let again = ldr.dev_init_succeeded(loaded.device_info).unwrap_err();
                    dev.note(vmm, format!("again {}", again.name()));
                    ldr.unload_device_by_name("RELOADME").unwrap();
                    ldr.load_device("fixture-reloadable", true).unwrap();
                    ldr.unload_device(0x3F30).unwrap();
                    let gone = ldr.unload_device(0x3F30).unwrap_err();
                    let missing = ldr.load_device("nothing-here", true).unwrap_err();
                    dev.note(vmm, format!("{} {}", gone.name(), missing.name()));
                    assert_eq!(missing, VxdldrError::Loader(VXDLDR_ERR_FILE_OPEN_ERROR));
                })
                .unwrap();
            }
            Carry::Clear
        })
        .run();
    run.assert_ok();
    assert_eq!(
        notes(&run),
        [
            "version 0x400",
            "hook saw load of fixture-reloadable",
            "list RELOADME 0x3f30 count=1 init=false ddb_ok=true",
            "again VXDLDR_ERR_DEVICE_REFUSED",
            "hook saw load of fixture-reloadable",
            "hook saw load of nothing-here",
            "VXDLDR_ERR_NO_SUCH_DEVICE VXDLDR_ERR_FILE_OPEN_ERROR",
        ]
    );
    let t = run.trace();
    // Only the load with VXDLDR_INIT_DEVICE sent Sys_Dynamic_Device_Init.
    assert_eq!(t.count(json!({"kind": "control", "device": "RELOADME", "message": "Sys_Dynamic_Device_Init"})), 1);
    assert_eq!(t.count(json!({"kind": "control", "device": "RELOADME", "message": "Sys_Dynamic_Device_Exit"})), 2);
}

#[test]
fn without_vxdldr_its_typed_version_call_says_not_loaded() {
    let run = on_go("[[interrupt]]\nname = \"go\"\nat = 10\n", |dev, vmm| {
        dev.note(vmm, format!("{:?}", vmm.vxdldr().get_version()));
    })
    .run();
    run.assert_ok();
    assert_eq!(notes(&run), ["Err(NotLoaded)"]);
}

// ---- trace notes with owned and optional values ------------------------------------------

#[test]
fn trace_notes_take_owned_strings_and_optional_values() {
    let run = on_go("[[interrupt]]\nname = \"go\"\nat = 10\n", |_dev, vmm| {
        let owner: Option<VmHandle> = None;
        let text = format!("COM{}", 1);
        vmm.trace_note("borrowed", &[("port", (&text).into()), ("owner", owner.into()), ("count", Some(3u32).into())])
            .unwrap();
        vmm.note("owned")
            .field("port", text.clone())
            .field("owner", owner)
            .field("vm", Some(vmm.get_sys_vm_handle()))
            .field("nothing", None::<String>)
            .field("flag", true)
            .write()
            .unwrap();
        // Bad names are refused as for trace_note.
        let bad = vmm.note("Bad Name").field("x", 1u8).write();
        assert_eq!(bad, Err(VmmError::VIOLATION));
    })
    .run();
    run.assert_ok();
    let t = run.trace();
    t.expect(json!({"kind": "note", "note": "borrowed", "fields": {"port": "COM1", "owner": null, "count": 3}}));
    t.expect(json!({
        "kind": "note",
        "note": "owned",
        "fields": {"port": "COM1", "owner": null, "vm": SYS, "nothing": null, "flag": true}
    }));
    t.expect(json!({"kind": "violation", "code": "INVALID_PARAMETER", "service": "trace_note"}));
}

// ---- System_Control and Directed_Sys_Control (section 6.3) ------------------------------------

/// SCRIPT (first in init order, failing private message 0x70000002) and
/// VCOUNTD; SCRIPT runs `handler` in a global event at 10 ms and notes the
/// Set_Device_Focus and private messages it receives.
fn senders(extra: &str, handler: impl Fn(&ScriptDevice, &Vmm<'_>) + 'static) -> Scenario {
    let handler = std::rc::Rc::new(handler);
    Scenario::new(&format!(
        "[386Enh]\ndevice = [\"SCRIPT\", \"VCOUNTD\"]\n[[vm]]\nname = \"DOS1\"\n[[interrupt]]\nname = \"go\"\nat = 10\n{extra}"
    ))
    .script(move |dev, vmm, msg| {
        if msg.message == DEVICE_INIT {
            let h = handler.clone();
            vmm.register_interrupt("go", move |_dev: &ScriptDevice, vmm, _irq| {
                let h = h.clone();
                vmm.schedule_global_event(move |dev: &ScriptDevice, vmm, _| h(dev, vmm)).unwrap();
            })
            .unwrap();
        }
        if msg.message == SET_DEVICE_FOCUS || msg.message >= BEGIN_RESERVED_PRIVATE_SYSTEM_CONTROL {
            dev.note(
                vmm,
                format!("got {:#x} vm={:#x} edx={:#x} esi={:#x} edi={:#x}", msg.message, msg.vm.0, msg.edx, msg.esi, msg.edi),
            );
            return Carry::from_failed(msg.message == 0x7000_0002);
        }
        Carry::Clear
    })
}

#[test]
fn set_device_focus_is_broadcast_to_every_device_with_its_registers() {
    let run = senders("", |dev, vmm| {
        let r = vmm.system_control(SET_DEVICE_FOCUS, Some(VmHandle(DOS1)), 0, 1, SYS);
        dev.note(vmm, format!("{r:?}"));
    })
    .run();
    run.assert_ok();
    assert_eq!(notes(&run), [format!("got 0xf vm={DOS1:#x} edx=0x0 esi=0x1 edi={SYS:#x}"), "Ok(())".to_string()]);
    let t = run.trace();
    t.expect_in_order(&[
        json!({"kind": "control", "device": "SCRIPT", "message": "Set_Device_Focus", "vm": DOS1}),
        json!({"kind": "control", "device": "VCOUNTD", "message": "Set_Device_Focus", "vm": DOS1}),
    ]);
}

#[test]
fn private_messages_are_broadcast_until_a_failure_or_directed_to_one_device() {
    let run = senders("", |dev, vmm| {
        let failed = vmm.system_control(0x7000_0002, None, 2, 0, 0);
        let directed = vmm.directed_sys_control(0x3FF0, 0x7000_0001, None, 1, 2, 3);
        let missing = vmm.directed_sys_control(0x4321, 0x7000_0001, None, 0, 0, 0);
        dev.note(vmm, format!("{failed:?} {directed:?} {missing:?}"));
    })
    .run();
    run.assert_ok();
    assert_eq!(
        notes(&run),
        [
            "got 0x70000002 vm=0x0 edx=0x2 esi=0x0 edi=0x0".to_string(),
            "got 0x70000001 vm=0x0 edx=0x1 esi=0x2 edi=0x3".to_string(),
            format!(
                "{:?} {:?} {:?}",
                Err::<(), _>(VmmError::FAILED),
                Ok::<(), VmmError>(()),
                Err::<(), _>(VmmError::NOT_FOUND)
            ),
        ]
    );
    let t = run.trace();
    t.expect(json!({"kind": "control", "device": "SCRIPT", "message": "Private_Control_Message", "number": 0x7000_0002u32, "result": "set"}));
    // The broadcast stopped at SCRIPT's failure; the directed message went to SCRIPT alone.
    t.expect_none(json!({"kind": "control", "device": "VCOUNTD", "message": "Private_Control_Message"}));
    t.expect_none(json!({"kind": "violation"}));
}

#[test]
fn a_device_may_not_send_the_vmms_own_messages() {
    let run = senders("", |dev, vmm| {
        let init = vmm.system_control(INIT_COMPLETE, None, 0, 0, 0);
        let create = vmm.directed_sys_control(0x3FF0, CREATE_VM, Some(VmHandle(DOS1)), 0, 0, 0);
        let bad_vm = vmm.system_control(SET_DEVICE_FOCUS, Some(VmHandle(0x0009_0009)), 0, 0, 0);
        dev.note(vmm, format!("{init:?} {create:?} {bad_vm:?}"));
    })
    .run();
    run.assert_ok();
    let t = run.trace();
    assert_eq!(t.count(json!({"kind": "violation", "code": "CONTROL_NOT_SENDABLE"})), 2);
    t.expect(json!({"kind": "violation", "code": "CONTROL_NOT_SENDABLE", "service": "Directed_Sys_Control"}));
    t.expect(json!({"kind": "violation", "code": "INVALID_VM_HANDLE", "service": "System_Control"}));
    assert_eq!(t.count(json!({"kind": "control", "message": "Init_Complete"})), 2, "only at boot");
}

#[test]
fn directed_sys_control_does_not_exist_under_windows_31() {
    let run = senders("[machine]\nwindows = \"3.1\"\n", |_dev, vmm| {
        let _ = vmm.directed_sys_control(0x3FF0, 0x7000_0001, None, 0, 0, 0);
    })
    .run();
    let e = run.expect_error().to_string();
    assert!(e.contains("service 0147"), "{e}");
}

// ---- what is left waiting or behind ----------------------------------------------------

#[test]
fn a_global_restricted_event_that_can_never_run_is_a_deadlock_naming_its_restriction() {
    let run = on_go(
        "[[action]]\nat = 5\nvm = \"system\"\naction = \"begin_critical\"\n[[interrupt]]\nname = \"go\"\nat = 10\n",
        |_dev, vmm| {
            vmm.call_restricted_event(0, None, PEF_WAIT_NOT_CRIT, 0, note_when_run("never")).unwrap();
        },
    )
    .run();
    let e = run.expect_error().to_string();
    assert!(e.contains("deadlock"), "{e}");
    let t = run.trace();
    let d = t.expect(json!({"kind": "deadlock"}));
    assert_eq!(d["events"][0]["event"], "restricted");
    assert_eq!(d["events"][0]["waits_for"], json!(["PEF_Wait_Not_Crit"]));
}

/// A dynamic device that hooks `SCRIPT_Note` when it loads and never
/// unhooks.
struct Hooker;

impl VxD for Hooker {
    const DEVICE: Device = Device::new("HOOKER").dynamic();

    fn create(_: &Vmm<'_>) -> Result<Self, String> {
        Ok(Hooker)
    }

    fn control(&self, vmm: &Vmm<'_>, msg: ControlMessage) -> Carry {
        if msg.message == SYS_DYNAMIC_DEVICE_INIT {
            vmm.hook_device_service(SCRIPT_NOTE, true, |_: &Hooker, vmm: &Vmm<'_>, call: &mut HookedCall<'_>| {
                call.call().regs.eax += 1000;
                let _ = call.chain(vmm);
            })
            .unwrap();
        }
        Carry::Clear
    }
}

#[test]
fn a_device_unloaded_with_a_hook_installed_leaks_it_and_the_hook_goes() {
    let mut s = Scenario::new("[386Enh]\ndevice = [\"*VXDLDR\", \"SCRIPT\"]\n")
        .script(|_, _, _| Carry::Clear)
        .device::<Hooker>()
        .boot();
    s.machine().load_dynamic_device("HOOKER", true).unwrap();
    assert_eq!(call_note(&mut s, 1).eax, 1001);
    s.machine().unload_dynamic_device("HOOKER").unwrap();
    assert_eq!(call_note(&mut s, 1).eax, 1);
    let run = s.finish();
    assert_eq!(notes(&run), ["note 1001", "note 1"]);
    let t = run.trace();
    let leak = t.expect(json!({"kind": "violation", "code": "UNLOAD_LEAK", "device": "HOOKER"}));
    assert!(leak["message"].as_str().unwrap().contains("a hook on service 0x3FF00001"), "{leak}");
    t.expect(json!({"kind": "device_unloaded", "device": "HOOKER", "leaks": 1}));
}
