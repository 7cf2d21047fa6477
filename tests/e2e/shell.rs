//! SHELL (device 0x17): message boxes, appy time and its services (16-bit
//! DLLs, the local heap, ShellExecute), broadcasts and `_SHELL_PostMessage`.
//! The `SCRIPT` device plays the VxD; the ring-3 modules below play the
//! DLLs and programs; every test asserts on the trace.

use std::rc::Rc;

use vmm_plugin_api::prelude::*;
use vmm_testkit::{Run, Scenario, ScriptDevice, json};

use crate::common::{DOS1, GO_AT_10, SYS, notes, outputs};

// ---- ring-3 modules ------------------------------------------------------------------

/// A 16-bit DLL for the appy-time services:
/// 1 `Add(WORD a, WORD b)` (PASCAL): a + b;
/// 2 `Greet(LPSTR s)`: prints the string behind the far pointer, returns its length;
/// 3 `Count` (C convention, pops nothing): how many argument bytes it got;
/// 4 `Crash`: panics;
/// 5 `MakeWindow`: creates a top-level window (of the current task);
/// 6 `WndProc`: prints the message, answers 1;
/// 7 `Task`: `GetCurrentTask()`.
struct ShDll;

impl Module for ShDll {
    const MODULE: ModuleDef = ModuleDef::windows_dll("SHDLL").segments(&[Segment::fixed("_TEXT")]).exports(&[
        Export::new("Add", 1, 0, 4),
        Export::new("Greet", 2, 0, 4),
        Export::new("Count", 3, 0, 0),
        Export::new("Crash", 4, 0, 0),
        Export::new("MakeWindow", 5, 0, 0),
        Export::new("WndProc", 6, 0, 10),
        Export::new("Task", 7, 0, 0),
    ]);
    fn create(_: &Ring3<'_>) -> Result<Self, String> {
        Ok(ShDll)
    }
    fn start(&self, _: &Ring3<'_>, _: &str) -> Step {
        Step::exit(1)
    }
    fn call(&self, r3: &Ring3<'_>, ordinal: u16, args: PascalArgs<'_>) -> u32 {
        match ordinal {
            1 => {
                let [a, b] = args.params([2, 2]);
                a + b
            }
            2 => {
                let [ptr] = args.params([4]);
                let text = r3.read_far_string(FarPtr::from_u32(ptr)).unwrap_or_else(|e| format!("<{e}>"));
                r3.print(&format!("Greet: {text}"));
                text.len() as u32
            }
            3 => args.bytes().len() as u32,
            4 => panic!("SHDLL!Crash"),
            5 => r3.create_window("MsgSrvWnd", "hidden", 6, None).map_or(0, |h| h.0 as u32),
            6 => {
                let [hwnd, msg, wparam, _] = args.params([2, 2, 2, 4]);
                r3.print(&format!("SHDLL wndproc hwnd={hwnd:#x} msg={msg:#x} wp={wparam}"));
                1
            }
            7 => r3.get_current_task().0 as u32,
            _ => 0,
        }
    }
}

/// A DLL whose `LibMain` panics.
struct ShBoom;

impl Module for ShBoom {
    const MODULE: ModuleDef = ModuleDef::windows_dll("SHBOOM");
    fn create(_: &Ring3<'_>) -> Result<Self, String> {
        Ok(ShBoom)
    }
    fn start(&self, _: &Ring3<'_>, _: &str) -> Step {
        panic!("SHBOOM's LibMain")
    }
}

/// A DLL whose `LibMain` refuses to load.
struct ShNoLoad;

impl Module for ShNoLoad {
    const MODULE: ModuleDef = ModuleDef::windows_dll("SHNOLOAD");
    fn create(_: &Ring3<'_>) -> Result<Self, String> {
        Ok(ShNoLoad)
    }
    fn start(&self, _: &Ring3<'_>, _: &str) -> Step {
        Step::exit(0)
    }
}

/// A Windows application: prints its command line; with `stay` it keeps a
/// window (procedure: prints messages, answers 0 to message 0x7777, else 1)
/// and waits for messages, otherwise it exits.
struct ShView;

impl Module for ShView {
    const MODULE: ModuleDef = ModuleDef::windows_app("SHVIEW")
        .segments(&[Segment::moveable("_TEXT")])
        .exports(&[Export::new("WndProc", 1, 0, 10)]);
    fn create(_: &Ring3<'_>) -> Result<Self, String> {
        Ok(ShView)
    }
    fn start(&self, r3: &Ring3<'_>, args: &str) -> Step {
        r3.print(&format!("SHVIEW {args}"));
        if args.split_whitespace().any(|w| w == "stay") {
            r3.create_window("ShView", "Viewer", 1, None);
            Step::get_message()
        } else {
            Step::exit(0)
        }
    }
    fn call(&self, r3: &Ring3<'_>, _ordinal: u16, args: PascalArgs<'_>) -> u32 {
        let [hwnd, msg, wparam, lparam] = args.params([2, 2, 2, 4]);
        if msg as u16 == WM_DESTROY {
            return 0;
        }
        r3.print(&format!("SHVIEW wndproc hwnd={hwnd:#x} msg={msg:#x} wp={wparam} lp={lparam:#x}"));
        u32::from(msg != 0x7777)
    }
}

/// A DOS program: prints its command line and exits.
struct ShDos;

impl Module for ShDos {
    const MODULE: ModuleDef = ModuleDef::dos_program("SHDOS");
    fn create(_: &Ring3<'_>) -> Result<Self, String> {
        Ok(ShDos)
    }
    fn start(&self, r3: &Ring3<'_>, args: &str) -> Step {
        r3.print(&format!("SHDOS {args}"));
        Step::exit(0)
    }
}

// ---- helpers ---------------------------------------------------------------------------

/// A machine with SHELL, the SCRIPT device (whose control procedure is
/// `control`), every test module, and `extra` manifest text.
fn machine(extra: &str, control: impl Fn(&ScriptDevice, &Vmm<'_>, ControlMessage) + 'static) -> Scenario {
    Scenario::new(&format!("[386Enh]\ndevice = [\"*SHELL\", \"SCRIPT\"]\n{extra}"))
        .script(move |dev, vmm, msg| {
            control(dev, vmm, msg);
            Carry::Clear
        })
        .module::<ShDll>()
        .module::<ShBoom>()
        .module::<ShNoLoad>()
        .module::<ShView>()
        .module::<ShDos>()
}

/// A machine whose SCRIPT device asks for appy time 1 ms into the run
/// (when the `[windows] load` applications have made their windows) and
/// runs `body` then.
fn at_appy_time(extra: &str, body: impl Fn(&ScriptDevice, &Vmm<'_>) + 'static) -> Scenario {
    let body = Rc::new(body);
    on_go(
        &format!(
            r#"
        {extra}
        [[interrupt]]
        name = "go"
        at = 1
    "#
        ),
        move |_, vmm| {
            let body = body.clone();
            vmm.shell().call_at_appy_time(0, 0, move |dev: &ScriptDevice, vmm, _| body(dev, vmm)).unwrap();
        },
    )
}

/// A machine whose SCRIPT device registers interrupt source `go` (raised by
/// `extra`'s `[[interrupt]]`) with `handler`.
fn on_go(extra: &str, handler: impl Fn(&ScriptDevice, &Vmm<'_>) + 'static) -> Scenario {
    let handler = Rc::new(handler);
    machine(extra, move |_, vmm, msg| {
        if msg.message == DEVICE_INIT {
            let h = handler.clone();
            vmm.register_interrupt("go", move |dev: &ScriptDevice, vmm, _| h(dev, vmm)).unwrap();
        }
    })
}

/// Copy `bytes` into a new ring-0 heap block; its linear address.
fn heap_copy(vmm: &Vmm<'_>, bytes: &[u8]) -> u32 {
    let addr = vmm.heap_allocate(bytes.len().max(1) as u32, HEAPZEROINIT).unwrap();
    vmm.mem_write(addr, bytes).unwrap();
    addr
}

/// A NUL-terminated copy of `text` in the ring-0 heap.
fn heap_string(vmm: &Vmm<'_>, text: &str) -> u32 {
    heap_copy(vmm, format!("{text}\0").as_bytes())
}

/// `VxDCall` SHELL service `ordinal` with C arguments `args`; EAX and CF.
fn shell_cdecl(vmm: &Vmm<'_>, ordinal: u16, args: &[u32]) -> (u32, bool) {
    let mut call = ServiceCall::default();
    call.args[..args.len()].copy_from_slice(args);
    vmm.vxd_call(vxd_service(SHELL_DEVICE_ID, ordinal), &mut call).unwrap();
    (call.regs.eax, call.regs.flags & CF_MASK != 0)
}

/// `VxDCall` SHELL register service `ordinal` with `regs`; the registers
/// afterwards.
fn shell_regs(vmm: &Vmm<'_>, ordinal: u16, regs: Regs) -> Regs {
    let mut call = ServiceCall { regs, ..ServiceCall::default() };
    vmm.vxd_call(vxd_service(SHELL_DEVICE_ID, ordinal), &mut call).unwrap();
    call.regs
}

fn violation_codes(run: &Run) -> Vec<String> {
    run.trace()
        .values(json!({"kind": "violation"}), "code")
        .into_iter()
        .map(|v| v.as_str().unwrap_or_default().to_string())
        .collect()
}

// ---- appy time ---------------------------------------------------------------------------

#[test]
fn appy_time_requested_during_boot_runs_once_windows_has_started() {
    let run = machine(
        r#"
        [windows]
        load = ["SHVIEW stay"]
    "#,
        |dev, vmm, msg| {
            if msg.message == DEVICE_INIT {
                dev.note(vmm, format!("init: query {}", vmm.shell().query_appy_time_available()));
                let h = vmm.shell().call_at_appy_time(CAAFL_RING0, 0, |dev: &ScriptDevice, vmm, appy| {
                    let task = vmm.shell().call_dll("SHDLL", "Task", &[]);
                    dev.note(
                        vmm,
                        format!(
                            "appy: flags {} vm {:#x} query {} task {task:#x}",
                            appy.flags,
                            appy.vm.0,
                            vmm.shell().query_appy_time_available()
                        ),
                    );
                });
                dev.note(vmm, format!("handle null: {}", h.is_none()));
            }
        },
    )
    .run();
    run.assert_ok();
    let n = notes(&run);
    assert_eq!(n[..2], ["init: query 0", "handle null: false"]);
    // CAAFL_RING0 comes back; QAAFL_APPYAVAIL | QAAFL_APPYNOW inside the
    // callback; the message server is a task of its own, not the app's.
    assert!(n[2].starts_with("appy: flags 1 vm 0x10001 query 3 task 0x"), "{n:?}");
    let task = run.trace().expect(json!({"kind": "program_started", "module": "SHVIEW"}))["task"].as_u64().unwrap();
    assert!(!n[2].ends_with(&format!("{task:#x}")), "{n:?}");
    let t = run.trace();
    t.expect_in_order(&[
        json!({"kind": "appy_scheduled", "device": "SCRIPT", "flags": CAAFL_RING0, "timeout_ms": null, "available": false}),
        json!({"kind": "phase", "phase": "running"}),
        json!({"kind": "program_started", "module": "SHVIEW"}),
        json!({"kind": "appy_dispatched", "device": "SCRIPT", "vm": SYS, "flags": CAAFL_RING0, "timed_out": false, "context": "appy", "result": "clear"}),
    ]);
    t.expect_none(json!({"kind": "violation"}));
}

#[test]
fn query_appy_time_available_follows_the_machine_through_its_phases() {
    let run = machine(GO_AT_10, |dev, vmm, msg| {
        let q = vmm.shell().query_appy_time_available();
        match msg.message {
            DEVICE_INIT => {
                dev.note(vmm, format!("Device_Init {q}"));
                vmm.register_interrupt("go", |dev: &ScriptDevice, vmm, _| {
                    dev.note(vmm, format!("interrupt {}", vmm.shell().query_appy_time_available()));
                })
                .unwrap();
            }
            SYS_VM_INIT | SYS_VM_TERMINATE | SYSTEM_EXIT => dev.note(vmm, format!("{} {q}", msg.name())),
            _ => {}
        }
    })
    .run();
    run.assert_ok();
    // Asynchronous: callable at interrupt time. Non-zero outside appy time
    // means "available", without QAAFL_APPYNOW.
    assert_eq!(notes(&run), ["Device_Init 0", "Sys_VM_Init 0", "interrupt 1", "Sys_VM_Terminate 0", "System_Exit 0"]);
}

#[test]
fn appy_time_requested_during_shutdown_is_dropped_and_never_runs() {
    let run = machine("", |_, vmm, msg| {
        if msg.message == SYS_VM_TERMINATE || msg.message == SYSTEM_EXIT {
            let h = vmm.shell().call_at_appy_time(0, 0, |dev: &ScriptDevice, vmm, _| dev.note(vmm, "ran"));
            assert!(h.is_some(), "the request is accepted; it just never runs");
        }
    })
    .run();
    run.assert_ok();
    let t = run.trace();
    assert_eq!(t.count(json!({"kind": "appy_scheduled", "available": false})), 2);
    assert_eq!(t.count(json!({"kind": "appy_dropped", "device": "SCRIPT", "reason": "shutdown"})), 2);
    t.expect_none(json!({"kind": "appy_dispatched"}));
    t.expect_in_order(&[
        json!({"kind": "phase", "phase": "system_exit"}),
        json!({"kind": "appy_dropped"}),
        json!({"kind": "phase", "phase": "stopped"}),
    ]);
}

#[test]
fn without_a_message_server_appy_time_never_comes_and_the_event_is_dropped() {
    let run = at_appy_time(
        r#"
        [shell]
        message_server = false
    "#,
        |dev, vmm| dev.note(vmm, "ran"),
    )
    .run();
    run.assert_ok();
    assert!(notes(&run).is_empty());
    run.trace().expect(json!({"kind": "appy_dropped", "reason": "shutdown"}));
}

#[test]
fn a_held_critical_section_delays_appy_time() {
    let run = on_go(
        r#"
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
        |_, vmm| {
            vmm.shell()
                .call_at_appy_time(0, 0, |dev: &ScriptDevice, vmm, _| {
                    dev.note(vmm, format!("appy at {}", vmm.get_system_time()))
                })
                .unwrap();
        },
    )
    .run();
    run.assert_ok();
    assert_eq!(notes(&run), ["appy at 40"]);
    let t = run.trace();
    t.expect(json!({"kind": "appy_scheduled", "t": 10, "available": true}));
    t.expect(json!({"kind": "appy_dispatched", "t": 40, "waited_ns": 30_000_000}));
}

#[test]
fn a_system_vm_blocked_on_a_semaphore_delays_appy_time() {
    let run = on_go(GO_AT_10, |_, vmm| {
        let sys = vmm.get_sys_vm_handle();
        vmm.schedule_vm_event(sys, |dev: &ScriptDevice, vmm, _| {
            let sem = vmm.create_semaphore(0).unwrap();
            vmm.shell()
                .call_at_appy_time(0, 0, |dev: &ScriptDevice, vmm, _| {
                    dev.note(vmm, format!("appy at {}", vmm.get_system_time()))
                })
                .unwrap();
            vmm.set_global_time_out(50, move |dev: &ScriptDevice, vmm, _| {
                dev.note(vmm, format!("signal at {}", vmm.get_system_time()));
                vmm.signal_semaphore(sem).unwrap();
            });
            vmm.wait_semaphore(sem, BLOCK_SVC_INTS).unwrap();
            dev.note(vmm, format!("woke at {}", vmm.get_system_time()));
        })
        .unwrap();
    })
    .run();
    run.assert_ok();
    assert_eq!(notes(&run), ["signal at 60", "woke at 60", "appy at 60"]);
}

#[test]
fn caafl_timeout_runs_the_callback_told_it_timed_out_and_not_at_appy_time() {
    let run = machine(
        r#"
        [shell]
        message_server = false
    "#,
        |_, vmm, msg| {
            if msg.message == DEVICE_INIT {
                vmm.shell()
                    .call_at_appy_time(CAAFL_TIMEOUT | CAAFL_RING0, 50, |dev: &ScriptDevice, vmm, appy| {
                        let load = vmm.shell().load_library("SHDLL");
                        dev.note(
                            vmm,
                            format!(
                                "t={} timed_out={} ring0={} query={} load={load:?}",
                                vmm.get_system_time(),
                                appy.timed_out(),
                                appy.ring0(),
                                vmm.shell().query_appy_time_available()
                            ),
                        );
                    })
                    .unwrap();
            }
        },
    )
    .run();
    run.assert_ok();
    assert_eq!(notes(&run), ["t=50 timed_out=true ring0=true query=0 load=Err(0)"]);
    let t = run.trace();
    t.expect(json!({"kind": "appy_scheduled", "flags": CAAFL_TIMEOUT | CAAFL_RING0, "timeout_ms": 50}));
    t.expect(json!({"kind": "appy_dispatched", "t": 50, "timed_out": true, "context": "event", "flags": CAAFL_TIMEOUT | CAAFL_RING0}));
    let v = t.expect(json!({"kind": "violation", "code": "APPY_ONLY_SERVICE", "service": "_SHELL_LoadLibrary"}));
    assert_eq!(v["context"], "event");
    t.expect_none(json!({"kind": "appy_dropped"}));
}

#[test]
fn a_time_out_while_appy_time_is_held_off_reports_it_available_but_not_now() {
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
        |_, vmm| {
            vmm.shell()
                .call_at_appy_time(CAAFL_TIMEOUT, 20, |dev: &ScriptDevice, vmm, appy| {
                    let q = vmm.shell().query_appy_time_available();
                    dev.note(vmm, format!("t={} flags={} query={q}", vmm.get_system_time(), appy.flags));
                })
                .unwrap();
        },
    )
    .run();
    run.assert_ok();
    assert_eq!(notes(&run), ["t=30 flags=2 query=1"]);
}

#[test]
fn an_event_that_reaches_appy_time_first_is_not_called_again_by_its_time_out() {
    let run = machine("", |_, vmm, msg| {
        if msg.message == DEVICE_INIT {
            vmm.shell()
                .call_at_appy_time(CAAFL_TIMEOUT, 1000, |dev: &ScriptDevice, vmm, appy| {
                    dev.note(vmm, format!("t={} flags={}", vmm.get_system_time(), appy.flags))
                })
                .unwrap();
        }
    })
    .run();
    run.assert_ok();
    // CAAFL_TIMEOUT is a request flag; the callback sees it only when the
    // time-out expired.
    assert_eq!(notes(&run), ["t=0 flags=0"]);
    assert_eq!(run.trace().count(json!({"kind": "appy_dispatched"})), 1);
    // Its time-out went with it: nothing keeps the machine running.
    run.trace().expect(json!({"kind": "phase", "phase": "stopped", "t": 0}));
}

#[test]
fn a_cancelled_appy_time_event_never_runs_and_its_handle_goes_stale() {
    let run = machine(GO_AT_10, |dev, vmm, msg| match msg.message {
        DEVICE_INIT => {
            let h = vmm.shell().call_at_appy_time(0, 0, |dev: &ScriptDevice, vmm, _| dev.note(vmm, "ran")).unwrap();
            dev.state.borrow_mut().push(h.0);
            vmm.register_interrupt("go", |dev: &ScriptDevice, vmm, _| {
                let h = AppyHandle(dev.state.borrow()[0]);
                dev.note(vmm, format!("at interrupt: {:?}", vmm.shell().cancel_appy_time_event(h)));
            })
            .unwrap();
        }
        INIT_COMPLETE => {
            let h = AppyHandle(dev.state.borrow()[0]);
            let shell = vmm.shell();
            dev.note(vmm, format!("cancel: {:?}", shell.cancel_appy_time_event(h)));
            dev.note(vmm, format!("again: {:?}", shell.cancel_appy_time_event(h)));
            dev.note(vmm, format!("null: {:?}", shell.cancel_appy_time_event(AppyHandle(0))));
        }
        _ => {}
    })
    .run();
    run.assert_ok();
    assert_eq!(
        notes(&run),
        [
            "cancel: Ok(())",
            "again: Err(VmmError { code: 2 })",
            "null: Ok(())",
            "at interrupt: Err(VmmError { code: 2 })"
        ]
    );
    let t = run.trace();
    t.expect(json!({"kind": "appy_cancelled", "device": "SCRIPT", "reason": "cancelled"}));
    t.expect(json!({"kind": "violation", "code": "STALE_APPY_HANDLE", "service": "_SHELL_CancelAppyTimeEvent"}));
    // _SHELL_CancelAppyTimeEvent is not asynchronous.
    t.expect(
        json!({"kind": "violation", "code": "SYNC_SERVICE_AT_INTERRUPT", "service": "_SHELL_CancelAppyTimeEvent"}),
    );
    t.expect_none(json!({"kind": "appy_dispatched"}));
}

#[test]
fn appy_time_only_services_are_violations_outside_appy_time() {
    let run = on_go(GO_AT_10, |_, vmm| {
        vmm.schedule_global_event(|dev: &ScriptDevice, vmm, _| {
            let shell = vmm.shell();
            let results = [
                format!("{:?}", shell.load_library("SHDLL")),
                format!("{:?}", shell.get_proc_address(HInstance(0x0F10), "Add")),
                format!("{}", shell.call_dll("SHDLL", "Add", &[1, 0, 2, 0])),
                format!("{:?}", shell.local_alloc_ex(LPTR, 16, None)),
                format!("{}", shell.local_free(FarPtr::new(0xA7, 0x14))),
                format!("{:?}", shell.shell_execute(&ShexPacket::open("X.EXE"))),
            ];
            shell.free_library(HInstance(0x0F10));
            dev.note(vmm, results.join(" "));
        })
        .unwrap();
    })
    .run();
    run.assert_ok();
    assert_eq!(notes(&run), ["Err(0) None 0 None false Err(0)"]);
    let t = run.trace();
    for service in [
        "_SHELL_LoadLibrary",
        "_SHELL_GetProcAddress",
        "_SHELL_CallDll",
        "_SHELL_LocalAllocEx",
        "_SHELL_LocalFree",
        "_SHELL_ShellExecute",
        "_SHELL_FreeLibrary",
    ] {
        let v = t.expect(json!({"kind": "violation", "code": "APPY_ONLY_SERVICE", "service": service}));
        assert_eq!(v["device"], "SCRIPT");
        assert_eq!(v["context"], "event");
    }
    // Refused: nothing was loaded, allocated or started.
    t.expect_none(json!({"kind": "module_loaded"}));
    t.expect_none(json!({"kind": "shell_execute"}));
}

#[test]
fn appy_time_services_by_vxdcall_are_checked_the_same_way() {
    let run = machine("", |dev, vmm, msg| {
        if msg.message == INIT_COMPLETE {
            let name = heap_string(vmm, "SHDLL");
            let (eax, cf) = shell_cdecl(vmm, SHELL_LOAD_LIBRARY, &[name]);
            dev.note(vmm, format!("LoadLibrary at init: eax={eax} cf={cf}"));
            let (eax, _) = shell_cdecl(vmm, SHELL_CALL_AT_APPY_TIME, &[0x1234_5678, 0, 0, 0]);
            dev.note(vmm, format!("CallAtAppyTime by VxDCall: {eax}"));
        }
    })
    .run();
    run.assert_ok();
    assert_eq!(notes(&run), ["LoadLibrary at init: eax=0 cf=true", "CallAtAppyTime by VxDCall: 0"]);
    let t = run.trace();
    let v = t.expect(json!({"kind": "violation", "code": "APPY_ONLY_SERVICE", "service": "_SHELL_LoadLibrary"}));
    assert_eq!((v["device"].as_str(), v["context"].as_str()), (Some("SCRIPT"), Some("init")));
    let v =
        t.expect(json!({"kind": "violation", "code": "SHELL_SERVICE_BY_VXDCALL", "service": "_SHELL_CallAtAppyTime"}));
    assert!(v["message"].as_str().unwrap().contains("Shell::call_at_appy_time"), "{v}");
    t.expect(json!({"kind": "vxd_call", "caller": "SCRIPT", "device_id": 0x17, "ordinal": SHELL_LOAD_LIBRARY, "service": "_SHELL_LoadLibrary", "result": "set"}));
}

#[test]
fn pending_appy_time_events_run_in_the_machines_order_and_random_order_depends_on_the_seed() {
    fn order(sets: &[&str]) -> Vec<String> {
        let mut s = machine("", |_, vmm, msg| {
            if msg.message == DEVICE_INIT {
                for tag in ["a", "b", "c", "d", "e"] {
                    vmm.shell().call_at_appy_time(0, 0, move |dev: &ScriptDevice, vmm, _| dev.note(vmm, tag)).unwrap();
                }
            }
        });
        for set in sets {
            s = s.set(set);
        }
        let run = s.run();
        run.assert_ok();
        notes(&run)
    }
    assert_eq!(order(&[]), ["e", "d", "c", "b", "a"], "LIFO by default");
    assert_eq!(order(&["machine.order=\"fifo\""]), ["a", "b", "c", "d", "e"]);
    let seeded = |seed: u64| order(&["machine.order=\"random\"", &format!("machine.seed={seed}")]);
    assert_eq!(seeded(7), seeded(7), "a seed reproduces its order");
    let orders: std::collections::BTreeSet<Vec<String>> = (1..=8).map(seeded).collect();
    assert!(orders.len() > 1, "the random mode must exercise other orders: {orders:?}");
}

// ---- 16-bit DLLs at appy time ----------------------------------------------------------------

#[test]
fn a_vxd_loads_a_dll_links_a_function_and_calls_it_at_appy_time() {
    let run = at_appy_time("", |dev, vmm| {
        let shell = vmm.shell();
        let h = shell.load_library("SHDLL.DLL").unwrap();
        let add = shell.get_proc_address(h, "add").unwrap();
        let by_ordinal = shell.get_proc_address_ordinal(h, 1).unwrap();
        // PASCAL: a pushed first, so the buffer holds b, then a.
        let args = PascalArgs::encode(&[(2, 2), (2, 3)]);
        let direct = shell.call_dll_address(add, &args);
        let loaded = shell.call_dll("SHDLL.DLL", "Add", &PascalArgs::encode(&[(2, 40), (2, 2)]));
        let ordinal = shell.call_dll_ordinal("SHDLL", 1, &PascalArgs::encode(&[(2, 1), (2, 1)]));
        let cdecl = shell.call_dll("SHDLL", "Count", &[1, 2, 3, 4, 5, 6]);
        shell.free_library(h);
        dev.note(vmm, format!("{} {direct} {loaded} {ordinal} {cdecl}", add == by_ordinal));
    })
    .run();
    run.assert_ok();
    assert_eq!(notes(&run), ["true 5 42 2 6"]);
    let t = run.trace();
    t.expect_in_order(&[
        json!({"kind": "module_loaded", "module": "SHDLL", "refcount": 1}),
        json!({"kind": "far_call", "module": "SHDLL", "export": "Add", "isr": false, "result": 5}),
        // _SHELL_CallDll loads (a second reference) and frees around the call.
        json!({"kind": "module_loaded", "module": "SHDLL", "refcount": 2}),
        json!({"kind": "far_call", "export": "Add", "result": 42}),
        json!({"kind": "module_freed", "module": "SHDLL", "refcount": 1}),
        json!({"kind": "module_freed", "module": "SHDLL", "refcount": 0}),
    ]);
    t.expect_none(json!({"kind": "violation"}));
}

#[test]
fn call_dll_reports_load_and_link_failures_the_ddk_way() {
    let run = at_appy_time("", |dev, vmm| {
        let shell = vmm.shell();
        let results = [
            shell.call_dll("NOSUCH.DLL", "Add", &[]),
            shell.call_dll("SHNOLOAD", "Add", &[]),
            shell.call_dll("SHVIEW", "WndProc", &[0; 10]),
            shell.call_dll("SHDLL", "NoSuchExport", &[]),
            shell.call_dll("SHDLL", "Add", &[1, 0]),
            shell.call_dll_address(FarPtr::new(0x1234, 0x10), &[]),
        ];
        let loads = [shell.load_library("NOSUCH"), shell.load_library("SHNOLOAD"), shell.load_library("SHVIEW")];
        dev.note(vmm, format!("{results:?} {loads:?}"));
    })
    .run();
    run.assert_ok();
    // 2: file not found; 20: LibMain failed; 11: not a DLL; 0: no such
    // export, or a refused call.
    assert_eq!(notes(&run), ["[2, 20, 11, 0, 0, 0] [Err(2), Err(20), Err(11)]"]);
    let t = run.trace();
    let v = t.expect(json!({"kind": "violation", "code": "CALL_DLL_ARGS", "service": "_SHELL_CallDll"}));
    assert!(v["message"].as_str().unwrap().contains("SHDLL!Add pops 4 bytes"), "{v}");
    t.expect(json!({"kind": "violation", "code": "BAD_FAR_POINTER"}));
    // After the link failure the DLL was freed again.
    t.expect_in_order(&[
        json!({"kind": "module_loaded", "module": "SHDLL", "refcount": 1}),
        json!({"kind": "module_freed", "module": "SHDLL", "refcount": 0}),
    ]);
    t.expect_none(json!({"kind": "message_server_fault"}));
}

#[test]
fn the_dll_services_by_vxdcall_read_names_and_arguments_from_the_heap() {
    let run = at_appy_time("", |dev, vmm| {
        let (dll, add) = (heap_string(vmm, "SHDLL"), heap_string(vmm, "Add"));
        let args = heap_copy(vmm, &PascalArgs::encode(&[(2, 2), (2, 3)]));
        let (by_name, _) = shell_cdecl(vmm, SHELL_CALL_DLL, &[dll, add, 4, args]);
        let (by_ordinal, _) = shell_cdecl(vmm, SHELL_CALL_DLL, &[dll, 1, 4, args]);
        let (h, _) = shell_cdecl(vmm, SHELL_LOAD_LIBRARY, &[dll]);
        let (proc_addr, _) = shell_cdecl(vmm, SHELL_GET_PROC_ADDRESS, &[h, add]);
        let (raw, _) = shell_cdecl(vmm, SHELL_CALL_DLL, &[0, proc_addr, 4, args]);
        shell_cdecl(vmm, SHELL_FREE_LIBRARY, &[h]);
        // The argument buffer is only 4 bytes long.
        let (huge, cf) = shell_cdecl(vmm, SHELL_CALL_DLL, &[dll, add, 0xFFFF_FFFF, args]);
        dev.note(vmm, format!("{by_name} {by_ordinal} {} {raw} {huge} {cf}", proc_addr >> 16 != 0));
    })
    .run();
    run.assert_ok();
    assert_eq!(notes(&run), ["5 5 true 5 0 true"]);
    run.trace().expect(json!({"kind": "violation", "code": "BAD_POINTER", "service": "_SHELL_CallDll"}));
}

#[test]
fn a_dll_that_faults_takes_the_message_server_and_appy_time_down_for_good() {
    let run = machine(GO_AT_10, |_, vmm, msg| {
        if msg.message == DEVICE_INIT {
            vmm.shell()
                .call_at_appy_time(0, 0, |dev: &ScriptDevice, vmm, _| {
                    let shell = vmm.shell();
                    let r = shell.call_dll("SHDLL", "Crash", &[]);
                    let after = (shell.query_appy_time_available(), shell.load_library("SHDLL"));
                    dev.note(vmm, format!("crash {r}, then {after:?}"));
                    shell
                        .call_at_appy_time(CAAFL_TIMEOUT, 30, |dev: &ScriptDevice, vmm, appy| {
                            dev.note(
                                vmm,
                                format!("second: timed out {} at {}", appy.timed_out(), vmm.get_system_time()),
                            )
                        })
                        .unwrap();
                })
                .unwrap();
            vmm.register_interrupt("go", |dev: &ScriptDevice, vmm, _| {
                dev.note(vmm, format!("query later {}", vmm.shell().query_appy_time_available()))
            })
            .unwrap();
        }
    })
    .run();
    run.assert_ok();
    assert_eq!(notes(&run), ["crash 0, then (0, Err(0))", "query later 0", "second: timed out true at 30"]);
    let t = run.trace();
    t.expect(json!({"kind": "plugin_error", "device": "SHDLL", "entry": "call_export", "error": "panic"}));
    t.expect(json!({"kind": "message_server_fault", "module": "SHDLL", "service": "_SHELL_CallDll"}));
}

#[test]
fn a_libmain_that_faults_takes_the_message_server_down_too() {
    let run = at_appy_time("", |dev, vmm| {
        let r = vmm.shell().load_library("SHBOOM");
        dev.note(vmm, format!("{r:?} {}", vmm.shell().query_appy_time_available()));
    })
    .run();
    run.assert_ok();
    assert_eq!(notes(&run), ["Err(20) 0"]);
    run.trace().expect(json!({"kind": "message_server_fault", "module": "SHBOOM", "service": "_SHELL_LoadLibrary"}));
}

// ---- the local heap ------------------------------------------------------------------------

#[test]
fn local_alloc_ex_gives_a_16_16_and_a_flat_address_to_the_same_bytes() {
    let run = at_appy_time("", |dev, vmm| {
        let shell = vmm.shell();
        let s = shell.local_alloc_ex(LMEM_STRING, 0, Some(b"Hello, appy time\0garbage")).unwrap();
        let mut flat = [0u8; 17];
        vmm.mem_read(s.linear, &mut flat).unwrap();
        // The DLL reads the same bytes through the 16:16 address.
        let len = shell.call_dll("SHDLL", "Greet", &PascalArgs::encode(&[(4, s.address.to_u32())]));
        let z = shell.local_alloc_ex(LMEM_ZEROINIT, 8, None).unwrap();
        let mut zero = [0xFFu8; 8];
        vmm.mem_read(z.linear, &mut zero).unwrap();
        let copied = shell.local_alloc_ex(LMEM_FIXED, 4, Some(&[1, 2, 3, 4, 5])).unwrap();
        let mut four = [0u8; 4];
        vmm.mem_read(copied.linear, &mut four).unwrap();
        dev.note(
            vmm,
            format!(
                "{:?} {:?} {len} {zero:?} {four:?} {:#06x}",
                String::from_utf8_lossy(&flat),
                s.address.selector,
                s.address.offset
            ),
        );
        dev.note(
            vmm,
            format!(
                "free {} {} {}",
                shell.local_free(s.address),
                shell.local_free(z.address),
                shell.local_free(s.address)
            ),
        );
    })
    .run();
    run.assert_ok();
    let n = notes(&run);
    assert_eq!(n[0], "\"Hello, appy time\\0\" 167 16 [0, 0, 0, 0, 0, 0, 0, 0] [1, 2, 3, 4] 0x0014");
    assert_eq!(n[1], "free true true false");
    assert!(outputs(&run).contains(&"Greet: Hello, appy time".to_string()));
    let v = run.trace().expect(json!({"kind": "violation", "code": "BAD_LOCAL_FREE", "service": "_SHELL_LocalFree"}));
    assert!(v["message"].as_str().unwrap().contains("00A7:0014"), "{v}");
}

#[test]
fn a_local_block_without_lmem_zeroinit_keeps_what_was_there() {
    let run = at_appy_time("", |dev, vmm| {
        let shell = vmm.shell();
        let first = shell.local_alloc_ex(LMEM_STRING, 0, Some(b"leftover")).unwrap();
        shell.local_free(first.address);
        let raw = shell.local_alloc_ex(LMEM_FIXED, 8, None).unwrap();
        let mut bytes = [0u8; 8];
        vmm.mem_read(raw.linear, &mut bytes).unwrap();
        shell.local_free(raw.address);
        let zeroed = shell.local_alloc_ex(LPTR, 8, None).unwrap();
        let mut zero = [0xFFu8; 8];
        vmm.mem_read(zeroed.linear, &mut zero).unwrap();
        let same = raw.address == first.address && zeroed.address == first.address;
        dev.note(vmm, format!("{same} {:?} {zero:?}", String::from_utf8_lossy(&bytes)));
    })
    .run();
    run.assert_ok();
    assert_eq!(notes(&run), ["true \"leftover\" [0, 0, 0, 0, 0, 0, 0, 0]"]);
}

#[test]
fn local_alloc_ex_refuses_moveable_blocks_and_runs_out_at_64_kb() {
    let run = at_appy_time("", |dev, vmm| {
        let shell = vmm.shell();
        let moveable = shell.local_alloc_ex(LMEM_MOVEABLE, 16, None);
        let no_string = shell.local_alloc_ex(LMEM_STRING, 0, None);
        let big = shell.local_alloc_ex(0, 0xF000, None);
        let more = shell.local_alloc_ex(0, 0x2000, None);
        let small = shell.local_alloc_ex(0, 0x100, None);
        dev.note(
            vmm,
            format!(
                "{} {} {} {} {}",
                moveable.is_some(),
                no_string.is_some(),
                big.is_some(),
                more.is_some(),
                small.is_some()
            ),
        );
    })
    .run();
    run.assert_ok();
    assert_eq!(notes(&run), ["false false true false true"]);
    assert_eq!(
        run.trace().count(json!({"kind": "violation", "code": "INVALID_PARAMETER", "service": "_SHELL_LocalAllocEx"})),
        2
    );
}

#[test]
fn local_alloc_ex_by_vxdcall_returns_both_addresses_in_eax_and_edx() {
    let run = at_appy_time("", |dev, vmm| {
        let text = heap_string(vmm, "from the ring-0 heap");
        let mut call = ServiceCall::default();
        call.args[..3].copy_from_slice(&[LMEM_STRING, 0, text]);
        vmm.vxd_call(vxd_service(SHELL_DEVICE_ID, SHELL_LOCAL_ALLOC_EX), &mut call).unwrap();
        let mut back = [0u8; 21];
        vmm.mem_read(call.regs.edx, &mut back).unwrap();
        let (freed, _) = shell_cdecl(vmm, SHELL_LOCAL_FREE, &[call.regs.eax]);
        let (bad, cf) = shell_cdecl(vmm, SHELL_LOCAL_FREE, &[0x1234_5678]);
        dev.note(vmm, format!("{:#x} {:?} {freed} {bad:#x} {cf}", call.regs.eax >> 16, String::from_utf8_lossy(&back)));
    })
    .run();
    run.assert_ok();
    assert_eq!(notes(&run), ["0xa7 \"from the ring-0 heap\\0\" 0 0x12345678 true"]);
}

// ---- ShellExecute ------------------------------------------------------------------------------

const PROGRAMS: &str = r#"
    [programs]
    "viewer.exe" = "SHVIEW"
    ".txt" = "SHVIEW"
    "edit.com" = "SHDOS"
"#;

#[test]
fn shell_execute_starts_programs_and_opens_documents_with_their_association() {
    let run = at_appy_time(PROGRAMS, |dev, vmm| {
        let shell = vmm.shell();
        let results = [
            shell.shell_execute(&ShexPacket::open("VIEWER.EXE").params("-x file")),
            shell.shell_execute(&ShexPacket::open("C:\\DOCS\\README.TXT")),
            shell.shell_execute(&ShexPacket::open("NOTES.TXT").verb("print").dir("C:\\DOCS")),
            shell.shell_execute(&ShexPacket::open("c:\\dos\\edit.com").params("AUTOEXEC.BAT")),
            shell.shell_execute(&ShexPacket::open("REPORT.DOC")),
            shell.shell_execute(&ShexPacket::open("MISSING.EXE")),
            shell.shell_execute(&ShexPacket::open("VIEWER.EXE").verb("print")),
            shell.shell_execute(&ShexPacket::open("README.TXT").verb("explore")),
        ];
        let codes: Vec<String> = results
            .iter()
            .map(|r| match r {
                Ok(h) => format!("ok {}", h.0 > 32),
                Err(e) => format!("err {e}"),
            })
            .collect();
        dev.note(vmm, codes.join(", "));
    })
    .run();
    run.assert_ok();
    assert_eq!(notes(&run), ["ok true, ok true, ok true, ok true, err 31, err 2, err 31, err 31"]);
    let out = outputs(&run);
    assert!(out.contains(&"SHVIEW -x file".to_string()), "{out:?}");
    assert!(out.contains(&"SHVIEW C:\\DOCS\\README.TXT".to_string()), "{out:?}");
    assert!(out.contains(&"SHVIEW /p NOTES.TXT".to_string()), "{out:?}");
    assert!(out.contains(&"SHDOS AUTOEXEC.BAT".to_string()), "{out:?}");
    let t = run.trace();
    t.expect(json!({
        "kind": "shell_execute", "device": "SCRIPT", "verb": "open", "file": "VIEWER.EXE", "params": "-x file",
        "dir": "C:\\WINDOWS", "size": 32, "reserved": 0, "show": SW_SHOWNORMAL, "module": "SHVIEW", "error": null,
    }));
    t.expect(
        json!({"kind": "shell_execute", "verb": "print", "file": "NOTES.TXT", "dir": "C:\\DOCS", "module": "SHVIEW"}),
    );
    t.expect(json!({"kind": "shell_execute", "file": "REPORT.DOC", "result": SE_ERR_NOASSOC, "module": null}));
    t.expect(json!({"kind": "shell_execute", "file": "MISSING.EXE", "result": SE_ERR_FNF}));
    // The Windows program is a task of the system VM; the DOS program gets
    // a VM of its own.
    t.expect(json!({"kind": "program_started", "vm": SYS, "module": "SHVIEW", "args": "-x file"}));
    t.expect(json!({"kind": "vm_created", "vm": DOS1, "name": "EDIT"}));
    t.expect(json!({"kind": "program_started", "vm": DOS1, "module": "SHDOS", "module_kind": "dos_program"}));
    let hinstance = t.expect(json!({"kind": "shell_execute", "file": "VIEWER.EXE", "verb": "open"}))["result"].as_u64();
    assert!(hinstance.unwrap() > 32);
    t.expect_none(json!({"kind": "violation"}));
}

#[test]
fn a_malformed_shexpacket_returns_0_and_is_traced_without_being_read_out_of_bounds() {
    let good = ShexPacket::open("VIEWER.EXE").to_bytes();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("short_packet", good[..20].to_vec()),
        ("bad_size", patch(&good, 4, 36)),
        ("bad_total_size", patch(&good, 0, 500)),
        ("bad_offset", patch(&good, 12, 4)),
        ("bad_offset", patch(&good, 8, 200)),
        ("unterminated_string", {
            let mut b = good.clone();
            let last = b.len() - 1;
            b[last] = b'!';
            b
        }),
        ("missing_file", patch(&good, 12, 0)),
        ("reserved_not_zero", patch(&good, 24, 0x40)),
    ];
    let packets = cases.iter().map(|(_, b)| b.clone()).collect::<Vec<_>>();
    let run = at_appy_time(PROGRAMS, move |dev, vmm| {
        let results: Vec<u32> = packets.iter().map(|p| vmm.shell().shell_execute_raw(p)).collect();
        dev.note(vmm, format!("{results:?}"));
    })
    .run();
    run.assert_ok();
    assert_eq!(notes(&run), ["[0, 0, 0, 0, 0, 0, 0, 0]"]);
    let t = run.trace();
    let errors: Vec<_> = t.values(json!({"kind": "shell_execute"}), "error");
    assert_eq!(errors, cases.iter().map(|(e, _)| json!(e)).collect::<Vec<_>>());
    assert_eq!(t.count(json!({"kind": "violation", "code": "BAD_SHEXPACKET", "service": "_SHELL_ShellExecute"})), 8);
    t.expect(json!({"kind": "shell_execute", "error": "bad_offset", "field": "shex_ibFile", "size": 32, "result": 0}));
    t.expect(json!({"kind": "shell_execute", "error": "short_packet", "field": null, "total_size": null}));
    t.expect_none(json!({"kind": "program_started"}));
}

fn patch(bytes: &[u8], at: usize, value: u32) -> Vec<u8> {
    let mut b = bytes.to_vec();
    b[at..at + 4].copy_from_slice(&value.to_le_bytes());
    b
}

#[test]
fn shell_execute_by_vxdcall_reads_the_packet_from_the_heap_with_bounds_checks() {
    let run = at_appy_time(PROGRAMS, |dev, vmm| {
        let packet = ShexPacket::open("VIEWER.EXE").params("by-vxdcall").to_bytes();
        let at = heap_copy(vmm, &packet);
        let (ok, _) = shell_cdecl(vmm, SHELL_SHELL_EXECUTE, &[at]);
        // dwTotalSize says more than the heap block holds.
        let short = heap_copy(vmm, &patch(&packet, 0, packet.len() as u32 + 64));
        let (long, _) = shell_cdecl(vmm, SHELL_SHELL_EXECUTE, &[short]);
        let (wild, cf) = shell_cdecl(vmm, SHELL_SHELL_EXECUTE, &[0x0000_1000]);
        dev.note(vmm, format!("{} {long} {wild} {cf}", ok > 32));
    })
    .run();
    run.assert_ok();
    assert_eq!(notes(&run), ["true 0 0 true"]);
    let t = run.trace();
    t.expect(json!({"kind": "program_started", "module": "SHVIEW", "args": "by-vxdcall"}));
    t.expect(json!({"kind": "shell_execute", "error": "bad_total_size"}));
    t.expect(json!({"kind": "violation", "code": "BAD_POINTER", "service": "_SHELL_ShellExecute"}));
}

#[test]
fn arbitrary_packets_in_heap_memory_never_escape_their_block() {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};
    let run = at_appy_time(&format!("{PROGRAMS}[machine]\nviolations = \"log\"\n"), |dev, vmm| {
        // A fixed seed: the same packets in every run.
        let mut runner = TestRunner::new(Config {
            cases: 200,
            failure_persistence: None,
            rng_seed: proptest::test_runner::RngSeed::Fixed(0x0051_4E12),
            ..Config::default()
        });
        let packet = (
            proptest::collection::vec(any::<u8>(), 0..96),
            prop_oneof![Just(None), (0u32..128).prop_map(Some)],
            prop_oneof![Just(32u32), 0u32..64],
            0u32..128,
        );
        let outcome = runner.run(&packet, |(mut bytes, total, size, file)| {
            if bytes.len() >= 32 {
                bytes[4..8].copy_from_slice(&size.to_le_bytes());
                bytes[12..16].copy_from_slice(&file.to_le_bytes());
                bytes[24..28].copy_from_slice(&0u32.to_le_bytes());
                if let Some(t) = total {
                    bytes[0..4].copy_from_slice(&t.to_le_bytes());
                }
            }
            let at = heap_copy(vmm, &bytes);
            let (result, _) = shell_cdecl(vmm, SHELL_SHELL_EXECUTE, &[at]);
            // A result above 32 is a started program: possible only if the
            // packet named a file that exists.
            prop_assert!(result <= 32 || bytes.len() >= 32);
            vmm.heap_free(at);
            Ok(())
        });
        dev.note(vmm, format!("{outcome:?}"));
    })
    .run();
    run.assert_ok();
    assert_eq!(notes(&run), ["Ok(())"]);
    run.trace().expect_none(json!({"kind": "fatal_error"}));
    assert!(run.trace().count(json!({"kind": "shell_execute"})) >= 200);
}

#[test]
fn programs_must_be_plugins_shell_execute_can_start() {
    // Kept on one line: the position the error names is counted in it.
    let run = machine("[programs]\n\".hlp\" = \"SHDLL\"\n", |_, _, _| {}).run();
    let e = run.expect_error().to_string();
    assert!(e.contains("manifest#1:4:") && e.contains("windows_dll") && e.contains("SHDLL"), "{e}");
    let run = machine(
        r#"
        [programs]
        "x.exe" = "NOSUCHAPP"
    "#,
        |_, _, _| {},
    )
    .run();
    assert!(run.expect_error().to_string().contains("NOSUCHAPP"), "{}", run.expect_error());
}

// ---- message boxes -------------------------------------------------------------------------------

#[test]
fn sysmodal_messages_are_answered_from_the_manifest_and_fall_back_to_the_default_button() {
    let run = machine(
        r#"
            [shell]
            answers = ["IDNO", "IDRETRY", 7]
            [[vm]]
            name = "DOS1"
            at = 1
            [[interrupt]]
            name = "go"
            at = 5
        "#,
        |dev, vmm, msg| {
            if msg.message == DEVICE_INIT {
                let sys = vmm.get_sys_vm_handle();
                let a = vmm.shell().shell_sysmodal_message(sys, MB_YESNO, "Early warning", None);
                dev.note(vmm, format!("init {a}"));
                vmm.register_interrupt("go", |_: &ScriptDevice, vmm, _| {
                    vmm.schedule_global_event(|dev: &ScriptDevice, vmm, _| {
                        let shell = vmm.shell();
                        let b = shell.shell_sysmodal_message(
                            VmHandle(DOS1),
                            MB_YESNO | MB_DEFBUTTON2,
                            "Retry is no button here",
                            None,
                        );
                        let c =
                            shell.shell_sysmodal_message(VmHandle(DOS1), MB_OKCANCEL, "No OK either", Some("Caption"));
                        let d = shell.shell_sysmodal_message(VmHandle(DOS1), MB_OK, "Out of answers", Some(""));
                        dev.note(vmm, format!("{b} {c} {d}"));
                    })
                    .unwrap();
                })
                .unwrap();
            }
        },
    )
    .run();
    run.assert_ok();
    assert_eq!(notes(&run), ["init 7", "7 1 1"]);
    let t = run.trace();
    t.expect(json!({
        "kind": "shell_message", "service": "SHELL_SYSMODAL_Message", "device": "SCRIPT", "vm": SYS,
        "text": "Early warning", "caption": "Windows", "flags": MB_YESNO | MB_SYSTEMMODAL, "answer": IDNO,
        "source": "manifest", "display": "full_screen", "handle": null,
    }));
    // IDRETRY is not a button of MB_YESNO: the default button (No) answers.
    t.expect(json!({"kind": "shell_message", "text": "Retry is no button here", "caption": "DOS1", "answer": IDNO, "source": "default_button", "display": "window"}));
    // 7 (IDNO) is no button of MB_OKCANCEL: its first button answers.
    t.expect(json!({"kind": "shell_message", "text": "No OK either", "caption": "Caption", "answer": IDOK, "source": "default_button"}));
    t.expect(
        json!({"kind": "shell_message", "text": "Out of answers", "caption": "", "answer": IDOK, "source": "default"}),
    );
}

#[test]
fn a_hangsys_message_stops_the_machine_after_it_is_answered() {
    let run = machine("", |_, vmm, msg| {
        if msg.message == SYS_VM_INIT {
            vmm.shell().shell_sysmodal_message(vmm.get_sys_vm_handle(), MB_HANGSYS | MB_ICONHAND, "Parity error", None);
            vmm.out_debug_string("not reached");
        }
    })
    .run();
    let e = run.expect_error().to_string();
    assert!(e.contains("MB_HANGSYS") && e.contains("Parity error"), "{e}");
    run.trace().expect(json!({"kind": "shell_message", "text": "Parity error"}));
    run.trace().expect_none(json!({"kind": "debug_string", "text": "not reached"}));
}

#[test]
fn shell_message_answers_later_through_its_callback() {
    let run = machine(
        r#"
        [shell]
        answers = ["IDCANCEL"]
    "#,
        |dev, vmm, msg| {
            if msg.message == DEVICE_INIT {
                let sys = vmm.get_sys_vm_handle();
                let h = vmm.shell().shell_message(
                    sys,
                    MB_OKCANCEL | MB_ASAP,
                    "Disk full",
                    Some("VXD"),
                    |dev: &ScriptDevice, vmm, answer| {
                        dev.note(vmm, format!("answer {answer} at {}", vmm.get_system_time()))
                    },
                );
                dev.note(vmm, format!("queued {}", h.is_some()));
                let bad = vmm.shell().shell_message(sys, MB_OK | MB_HANGSYS, "no", None, |_: &ScriptDevice, _, _| {});
                dev.note(vmm, format!("hangsys {}", bad.is_some()));
            }
        },
    )
    .run();
    run.assert_ok();
    assert_eq!(notes(&run), ["queued true", "hangsys false", "answer 2 at 0"]);
    let t = run.trace();
    let handle = t.expect(json!({"kind": "event_scheduled", "device": "SHELL", "callback": "SHELL_Message", "boost": HIGH_PRI_DEVICE_BOOST}))["handle"].clone();
    t.expect(json!({"kind": "shell_message", "service": "SHELL_Message", "handle": handle, "answer": IDCANCEL, "caption": "VXD", "display": "window"}));
    t.expect(json!({"kind": "violation", "code": "INVALID_PARAMETER", "service": "SHELL_Message"}));
}

#[test]
fn shell_message_by_vxdcall_needs_its_buffers_until_the_message_is_shown() {
    let run = machine("", |dev, vmm, msg| {
        if msg.message == INIT_COMPLETE {
            let text = heap_string(vmm, "Kept");
            let sys = vmm.get_sys_vm_handle().0;
            let regs = shell_regs(vmm, SHELL_MESSAGE, Regs { eax: MB_OK, ebx: sys, ecx: text, ..Regs::default() });
            let freed = heap_string(vmm, "Freed too early");
            let regs2 = shell_regs(vmm, SHELL_MESSAGE, Regs { eax: MB_OK, ebx: sys, ecx: freed, ..Regs::default() });
            vmm.heap_free(freed);
            let with_cb = shell_regs(
                vmm,
                SHELL_MESSAGE,
                Regs { eax: MB_OK, ebx: sys, ecx: text, esi: 0x1234, ..Regs::default() },
            );
            dev.note(vmm, format!("{} {} {}", regs.flags & CF_MASK, regs2.flags & CF_MASK, with_cb.flags & CF_MASK));
        }
    })
    .run();
    run.assert_ok();
    assert_eq!(notes(&run), ["0 0 1"]);
    let t = run.trace();
    t.expect(json!({"kind": "shell_message", "text": "Kept"}));
    t.expect(json!({"kind": "shell_message", "text": "Freed too early"}));
    let v = t.expect(json!({"kind": "violation", "code": "BAD_POINTER", "service": "SHELL_Message"}));
    assert!(v["message"].as_str().unwrap().contains("must stay valid until the callback"), "{v}");
    t.expect(json!({"kind": "violation", "code": "SHELL_SERVICE_BY_VXDCALL", "service": "SHELL_Message"}));
}

#[test]
fn resolve_contention_asks_the_user_who_gets_the_device() {
    let run = machine(
        r#"
            [shell]
            answers = ["IDYES", "IDNO"]
            [[vm]]
            name = "DOS1"
            at = 1
            [[interrupt]]
            name = "go"
            at = 5
        "#,
        |dev, vmm, msg| {
            if msg.message == DEVICE_INIT {
                let sys = vmm.get_sys_vm_handle();
                dev.note(
                    vmm,
                    format!("at init {:?}", vmm.shell().shell_resolve_contention(sys, VmHandle(0x99), "COM1")),
                );
                vmm.register_interrupt("go", |_: &ScriptDevice, vmm, _| {
                    vmm.schedule_global_event(|dev: &ScriptDevice, vmm, _| {
                        let sys = vmm.get_sys_vm_handle();
                        let shell = vmm.shell();
                        let yes = shell.shell_resolve_contention(sys, VmHandle(DOS1), "COM1");
                        // By VxDCall: ESI points at the 8-byte, space-padded name.
                        let name = heap_copy(vmm, b"LPT1    ");
                        let no = shell_regs(
                            vmm,
                            SHELL_RESOLVE_CONTENTION,
                            Regs { eax: sys.0, ebx: DOS1, esi: name, ..Regs::default() },
                        );
                        let same = shell.shell_resolve_contention(sys, sys, "COM1");
                        dev.note(vmm, format!("{yes:?} {:#x} {same:?}", no.ebx));
                    })
                    .unwrap();
                })
                .unwrap();
            }
        },
    )
    .run();
    run.assert_ok();
    assert_eq!(notes(&run), ["at init None", "Some(VmHandle(0x10002)) 0x10001 Some(VmHandle(0x10001))"]);
    let t = run.trace();
    t.expect(json!({"kind": "violation", "code": "INVALID_VM_HANDLE", "service": "SHELL_Resolve_Contention"}));
    t.expect(
        json!({"kind": "shell_message", "service": "SHELL_Resolve_Contention", "vm": DOS1, "caption": "Device Conflict",
        "text": "The COM1 device is in use by Windows. Do you want to assign it to DOS1 instead?", "answer": IDYES}),
    );
    t.expect(json!({"kind": "shell_message", "service": "SHELL_Resolve_Contention", "answer": IDNO,
        "text": "The LPT1 device is in use by Windows. Do you want to assign it to DOS1 instead?"}));
}

#[test]
fn get_vm_info_reports_the_pif_settings_and_is_invalid_during_create_vm() {
    let run = machine(
        r#"
            [[vm]]
            name = "DOS1"
            at = 1
            windowed = true
            [[vm]]
            name = "DOS2"
            at = 2
        "#,
        |dev, vmm, msg| match msg.message {
            CREATE_VM => dev.note(vmm, format!("create {}", vmm.shell().shell_get_vm_info(msg.vm))),
            VM_INIT => dev.note(vmm, format!("{:#x} {:#x}", msg.vm.0, vmm.shell().shell_get_vm_info(msg.vm))),
            SYS_VM_INIT => dev.note(vmm, format!("system {:#x}", vmm.shell().shell_get_vm_info(msg.vm))),
            _ => {}
        },
    )
    .run();
    run.assert_ok();
    assert_eq!(notes(&run), ["system 0x0", "create 0", "0x10002 0x40000004", "create 0", "0x10003 0x40000000"]);
    assert_eq!(
        run.trace().count(json!({"kind": "violation", "code": "INVALID_PARAMETER", "service": "SHELL_GetVMInfo"})),
        2
    );
}

// ---- broadcasts -------------------------------------------------------------------------------

/// SCRIPT hooks system broadcasts four times (call orders CONFIGMG,
/// DEFAULT, REGISTRY, DEFAULT); each hook notes what it saw and answers 0
/// to message 0x6666. At appy time `body` runs.
fn broadcasting(extra: &str, body: impl Fn(&ScriptDevice, &Vmm<'_>) + 'static) -> Scenario {
    let body = Rc::new(body);
    let extra = format!(
        r#"
        [windows]
        load = ["SHVIEW stay"]
        {extra}
        [[interrupt]]
        name = "go"
        at = 1
    "#
    );
    machine(&extra, move |_, vmm, msg| {
        if msg.message == DEVICE_INIT {
            for (tag, order) in [
                ("configmg", SBH_CALL_ORDER_CONFIGMG),
                ("default1", 0),
                ("registry", SBH_CALL_ORDER_REGISTRY),
                ("default2", 0),
            ] {
                vmm.shell()
                    .hook_system_broadcast(order, move |dev: &ScriptDevice, vmm, b| {
                        dev.note(vmm, format!("hook {tag} msg={:#x} wp={} lp={:#x}", b.msg, b.wparam, b.lparam));
                        u32::from(b.msg != 0x6666)
                    })
                    .unwrap();
            }
            let body = body.clone();
            vmm.register_interrupt("go", move |_: &ScriptDevice, vmm, _| {
                let body = body.clone();
                vmm.shell().call_at_appy_time(0, 0, move |dev: &ScriptDevice, vmm, _| body(dev, vmm)).unwrap();
            })
            .unwrap();
        }
    })
}

#[test]
fn a_broadcast_reaches_the_recipients_asked_for_vxds_in_call_order_then_windows() {
    let run = broadcasting("", |dev, vmm| {
        let shell = vmm.shell();
        for (label, recipients) in [
            ("vxds", Some(BSM_VXDS)),
            ("apps", Some(BSM_APPLICATIONS)),
            ("all", Some(BSM_ALLCOMPONENTS)),
            ("null", None),
            ("drivers", Some(BSM_NETDRIVER | BSM_INSTALLABLEDRIVERS)),
        ] {
            let mut r = recipients.unwrap_or(0);
            let given = if recipients.is_some() { Some(&mut r) } else { None };
            let result = shell.broadcast_system_message(0, given, 0x0401, 7, 0xABCD);
            let shown = if recipients.is_some() { format!("{r:#x}") } else { "-".to_string() };
            dev.note(vmm, format!("{label}: result {result} recipients {shown}"));
        }
    })
    .run();
    run.assert_ok();
    let hooks = ["default1", "default2", "registry", "configmg"].map(|t| format!("hook {t} msg=0x401 wp=7 lp=0xabcd"));
    let n = notes(&run);
    // Ascending call order; the two DEFAULT hooks in registration order.
    assert_eq!(n[..5], [&hooks[..], &["vxds: result 1 recipients 0x1".to_string()]].concat());
    assert_eq!(n[5], "apps: result 1 recipients 0x8");
    assert_eq!(n[6..11], [&hooks[..], &["all: result 1 recipients 0x9".to_string()]].concat());
    assert_eq!(n[11..16], [&hooks[..], &["null: result 1 recipients -".to_string()]].concat());
    assert_eq!(n[16], "drivers: result 1 recipients 0x0");
    // Windows: SendMessage to the top-level window, three times.
    let t = run.trace();
    assert_eq!(t.count(json!({"kind": "message_sent", "msg": 0x401, "wparam": 7, "lparam": 0xABCD})), 3);
    t.expect(json!({"kind": "broadcast", "device": "SCRIPT", "recipients": BSM_VXDS, "delivered": BSM_VXDS, "hooks": 4, "windows": 0, "appy": true, "result": 1}));
    t.expect(json!({"kind": "broadcast", "recipients": null, "delivered": BSM_VXDS | BSM_APPLICATIONS, "hooks": 4, "windows": 1}));
}

#[test]
fn a_query_broadcast_stops_at_the_first_recipient_that_says_no() {
    let run = broadcasting("", |dev, vmm| {
        let shell = vmm.shell();
        let vxd_no = shell.broadcast_system_message(BSF_QUERY, None, 0x6666, 0, 0);
        // SHVIEW's window answers 0 to 0x7777.
        let window_no = shell.broadcast_system_message(BSF_QUERY, None, 0x7777, 0, 0);
        let mut apps = BSM_APPLICATIONS;
        let posted = shell.broadcast_system_message(BSF_POSTMESSAGE, Some(&mut apps), 0x0402, 1, 2);
        let both = shell.broadcast_system_message(BSF_QUERY | BSF_POSTMESSAGE, None, 0x0403, 0, 0);
        dev.note(vmm, format!("{vxd_no} {window_no} {posted} {both:#x}"));
    })
    .run();
    run.assert_ok();
    assert_eq!(notes(&run).last().unwrap(), "0 0 1 0xffffffff");
    let t = run.trace();
    // The first hook (CONFIGMG is last; DEFAULT first) refused: nobody else heard it.
    t.expect(json!({"kind": "broadcast", "msg": 0x6666, "result": 0, "hooks": 1, "windows": 0, "refused_by": "device SCRIPT"}));
    let refused = t.expect(json!({"kind": "broadcast", "msg": 0x7777, "result": 0, "hooks": 4, "windows": 1}));
    assert!(refused["refused_by"].as_str().unwrap().starts_with("hwnd 0x"), "{refused}");
    t.expect(json!({"kind": "message_posted", "msg": 0x402, "wparam": 1, "lparam": 2, "result": true}));
    t.expect_none(json!({"kind": "message_sent", "msg": 0x402}));
    t.expect(json!({"kind": "violation", "code": "INVALID_PARAMETER", "service": "_SHELL_BroadcastSystemMessage"}));
}

#[test]
fn outside_appy_time_a_broadcast_reaches_only_vxds_or_is_refused_while_windows_is_active() {
    let run = machine(
        r#"
            [windows]
            load = ["SHVIEW stay"]
            [[interrupt]]
            name = "go"
            at = 10
        "#,
        |dev, vmm, msg| match msg.message {
            DEVICE_INIT => {
                vmm.shell()
                    .hook_system_broadcast(0, |dev: &ScriptDevice, vmm, b| {
                        dev.note(vmm, format!("hook {:#x}", b.msg));
                        1
                    })
                    .unwrap();
                let mut r = BSM_ALLCOMPONENTS;
                let result = vmm.shell().broadcast_system_message(0, Some(&mut r), 0x0500, 0, 0);
                dev.note(vmm, format!("init: {result} {r:#x}"));
                vmm.register_interrupt("go", |_: &ScriptDevice, vmm, _| {
                    vmm.schedule_global_event(|dev: &ScriptDevice, vmm, _| {
                        let result = vmm.shell().broadcast_system_message(0, None, 0x0501, 0, 0);
                        dev.note(vmm, format!("event: {result:#x}"));
                    })
                    .unwrap();
                })
                .unwrap();
            }
            SYSTEM_EXIT => {
                let result = vmm.shell().broadcast_system_message(0, None, 0x0502, 0, 0);
                dev.note(vmm, format!("exit: {result}"));
            }
            _ => {}
        },
    )
    .run();
    run.assert_ok();
    // Before Windows runs and after it stops: VxDs only. While it is active
    // but not at appy time: -1, and a violation.
    assert_eq!(notes(&run), ["hook 0x500", "init: 1 0x1", "event: 0xffffffff", "hook 0x502", "exit: 1"]);
    let t = run.trace();
    t.expect(json!({"kind": "violation", "code": "APPY_ONLY_SERVICE", "service": "_SHELL_BroadcastSystemMessage", "context": "event"}));
    t.expect_none(json!({"kind": "message_sent"}));
}

#[test]
fn hooks_unhook_and_a_stale_hook_handle_is_reported() {
    let run = machine("", |dev, vmm, msg| {
        if msg.message == DEVICE_INIT {
            let shell = vmm.shell();
            let h = shell.hook_system_broadcast(0, |dev: &ScriptDevice, vmm, _| {
                dev.note(vmm, "heard");
                1
            });
            let h = h.unwrap();
            shell.broadcast_system_message(0, None, 1, 0, 0);
            let first = shell.unhook_system_broadcast(h);
            shell.broadcast_system_message(0, None, 2, 0, 0);
            let second = shell.unhook_system_broadcast(h);
            dev.note(vmm, format!("{first:?} {second:?} {:?}", shell.unhook_system_broadcast(SysBHookHandle(0))));
        }
    })
    .run();
    run.assert_ok();
    assert_eq!(notes(&run), ["heard", "Ok(()) Err(VmmError { code: 2 }) Ok(())"]);
    run.trace()
        .expect(json!({"kind": "violation", "code": "STALE_HOOK_HANDLE", "service": "_SHELL_UnhookSystemBroadcast"}));
}

#[test]
fn ignore_current_task_skips_the_message_servers_own_windows() {
    let run = broadcasting("", |dev, vmm| {
        let shell = vmm.shell();
        // A DLL function called at appy time creates a window: it belongs
        // to the message server's task, the current task at appy time.
        let h = shell.load_library("SHDLL").unwrap();
        let hwnd = shell.call_dll("SHDLL", "MakeWindow", &[]);
        let (mut r1, mut r2) = (BSM_APPLICATIONS, BSM_APPLICATIONS);
        let all = shell.broadcast_system_message(0, Some(&mut r1), 0x0410, 0, 0);
        let others = shell.broadcast_system_message(BSF_IGNORECURRENTTASK, Some(&mut r2), 0x0411, 0, 0);
        shell.free_library(h);
        dev.note(vmm, format!("{} {all} {others}", hwnd != 0));
    })
    .run();
    run.assert_ok();
    let out = outputs(&run);
    assert!(out.iter().any(|o| o.starts_with("SHDLL wndproc") && o.contains("msg=0x410")), "{out:?}");
    assert!(!out.iter().any(|o| o.starts_with("SHDLL wndproc") && o.contains("msg=0x411")), "{out:?}");
    assert!(out.iter().any(|o| o.starts_with("SHVIEW wndproc") && o.contains("msg=0x411")), "{out:?}");
    let t = run.trace();
    t.expect(json!({"kind": "broadcast", "msg": 0x410, "windows": 2}));
    t.expect(json!({"kind": "broadcast", "msg": 0x411, "windows": 1}));
}

// ---- _SHELL_PostMessage ------------------------------------------------------------------------

/// The SHVIEW window's handle (the first window created).
const VIEW_HWND: u16 = 0x1004;

#[test]
fn post_message_waits_for_the_critical_section_unless_told_not_to() {
    for (flags, posted_at) in [(0, 40), (SPM_UM_DONOTWAITFORCRIT, 10)] {
        let run = on_go(
            r#"
                [windows]
                load = ["SHVIEW stay"]
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
            move |dev, vmm| {
                // At interrupt time: _SHELL_PostMessage is asynchronous.
                let queued = vmm.shell().post_message_with_callback(
                    Hwnd(VIEW_HWND),
                    u32::from(WM_USER + 1) | flags,
                    3,
                    4,
                    |dev: &ScriptDevice, vmm, posted| {
                        let boosted = vmm.get_vm_info(vmm.get_sys_vm_handle()).unwrap().priority;
                        dev.note(vmm, format!("posted {posted} at {} priority {boosted:#x}", vmm.get_system_time()))
                    },
                );
                dev.note(vmm, format!("queued {queued}"));
            },
        )
        .run();
        run.assert_ok();
        let n = notes(&run);
        assert_eq!(n[0], "queued true");
        assert!(n[1].starts_with(&format!("posted true at {posted_at} priority ")), "{flags:#x}: {n:?}");
        // The callback runs with the system VM boosted by High_Pri_Device_Boost.
        let priority = u32::from_str_radix(n[1].rsplit("0x").next().unwrap(), 16).unwrap();
        assert!(priority >= HIGH_PRI_DEVICE_BOOST, "{n:?}");
        let t = run.trace();
        t.expect(json!({"kind": "message_posted", "hwnd": VIEW_HWND, "msg": WM_USER + 1, "wparam": 3, "lparam": 4, "result": true, "t": posted_at}));
        t.expect_none(json!({"kind": "violation"}));
    }
}

#[test]
fn post_message_runs_inline_when_it_can_unless_always_schedule() {
    let run = at_appy_time(
        r#"
        [windows]
        load = ["SHVIEW stay"]
    "#,
        |_, vmm| {
            let shell = vmm.shell();
            shell.post_message(Hwnd(VIEW_HWND), u32::from(WM_USER + 2), 0, 0);
            shell.post_message(Hwnd(VIEW_HWND), u32::from(WM_USER + 3) | SPM_UM_ALWAYSSCHEDULE, 0, 0);
        },
    )
    .run();
    run.assert_ok();
    let t = run.trace();
    t.expect(json!({"kind": "event_dispatched", "device": "SHELL", "callback": "_SHELL_PostMessage", "inline": true}));
    t.expect(json!({"kind": "event_scheduled", "device": "SHELL", "callback": "_SHELL_PostMessage", "flags": PEF_WAIT_FOR_STI | PEF_WAIT_NOT_CRIT | PEF_ALWAYS_SCHED, "boost": HIGH_PRI_DEVICE_BOOST}));
    t.expect(json!({"kind": "event_dispatched", "device": "SHELL", "callback": "_SHELL_PostMessage", "inline": false}));
    t.expect_in_order(&[
        json!({"kind": "message_posted", "msg": WM_USER + 2}),
        json!({"kind": "appy_dispatched"}),
        json!({"kind": "message_posted", "msg": WM_USER + 3}),
    ]);
}

#[test]
fn post_message_during_init_waits_for_windows_to_run() {
    let run = machine("", |dev, vmm, msg| {
        if msg.message == DEVICE_INIT {
            let queued = vmm.shell().post_message_with_callback(
                Hwnd(0x2222),
                u32::from(WM_USER),
                0,
                0,
                |dev: &ScriptDevice, vmm, posted| dev.note(vmm, format!("posted {posted}")),
            );
            dev.note(vmm, format!("queued {queued}"));
        }
    })
    .run();
    run.assert_ok();
    assert_eq!(notes(&run), ["queued true", "posted true"]);
    let t = run.trace();
    t.expect_in_order(&[
        json!({"kind": "event_scheduled", "device": "SHELL", "callback": "_SHELL_PostMessage"}),
        json!({"kind": "phase", "phase": "running"}),
        json!({"kind": "message_posted", "hwnd": 0x2222, "note": "invalid_hwnd"}),
    ]);
}

#[test]
fn post_message_with_wm_null_posts_nothing_but_reports_success() {
    let run = at_appy_time(
        r#"
        [windows]
        load = ["SHVIEW stay"]
    "#,
        |dev, vmm| {
            let q = vmm.shell().post_message_with_callback(
                Hwnd(VIEW_HWND),
                u32::from(WM_NULL),
                0,
                0,
                |dev: &ScriptDevice, vmm, posted| dev.note(vmm, format!("posted {posted}")),
            );
            dev.note(vmm, format!("queued {q}"));
        },
    )
    .run();
    run.assert_ok();
    assert_eq!(notes(&run), ["posted true", "queued true"]);
    run.trace().expect_none(json!({"kind": "message_posted"}));
}

#[test]
fn post_message_to_a_full_queue_tells_the_callback_it_failed() {
    let run = at_appy_time(
        r#"
        [windows]
        load = ["SHVIEW stay"]
        queue_size = 2
    "#,
        |_, vmm| {
            for i in 0..4 {
                vmm.shell().post_message_with_callback(
                    Hwnd(VIEW_HWND),
                    u32::from(WM_USER + i),
                    i,
                    0,
                    move |dev: &ScriptDevice, vmm, posted| dev.note(vmm, format!("{i}: {posted}")),
                );
            }
        },
    )
    .run();
    run.assert_ok();
    assert_eq!(notes(&run), ["0: true", "1: true", "2: false", "3: false"]);
    assert_eq!(run.trace().count(json!({"kind": "message_dropped", "reason": "queue_full"})), 2);
}

#[test]
fn post_message_rejects_reserved_bits_and_callbacks_by_vxdcall() {
    let run = at_appy_time(
        r#"
        [windows]
        load = ["SHVIEW stay"]
    "#,
        |dev, vmm| {
            let reserved = vmm.shell().post_message(Hwnd(VIEW_HWND), 0x0001_0400, 0, 0);
            let (wide, _) = shell_cdecl(vmm, SHELL_POST_MESSAGE, &[0x1_0000 | VIEW_HWND as u32, 0x400, 0, 0, 0, 0]);
            let (wparam, _) = shell_cdecl(vmm, SHELL_POST_MESSAGE, &[VIEW_HWND as u32, 0x400, 0x1_0000, 0, 0, 0]);
            let (callback, _) = shell_cdecl(vmm, SHELL_POST_MESSAGE, &[VIEW_HWND as u32, 0x400, 0, 0, 0xC000_1000, 5]);
            let (plain, _) = shell_cdecl(vmm, SHELL_POST_MESSAGE, &[VIEW_HWND as u32, 0x405, 5, 6, 0, 0]);
            dev.note(vmm, format!("{reserved} {wide} {wparam} {callback} {plain}"));
        },
    )
    .run();
    run.assert_ok();
    assert_eq!(notes(&run), ["false 0 0 0 1"]);
    let codes = violation_codes(&run);
    assert_eq!(codes, ["INVALID_PARAMETER", "INVALID_PARAMETER", "INVALID_PARAMETER", "SHELL_SERVICE_BY_VXDCALL"]);
    run.trace().expect(json!({"kind": "message_posted", "msg": 0x405, "wparam": 5, "lparam": 6}));
}

#[test]
fn post_shell_message_posts_to_the_first_applications_window() {
    let run = at_appy_time(
        r#"
        [windows]
        load = ["SHVIEW stay", "SHVIEW stay second"]
    "#,
        |dev, vmm| {
            let posted = vmm.shell().post_shell_message(9, 0x1234);
            dev.note(vmm, format!("{posted}"));
        },
    )
    .run();
    run.assert_ok();
    assert_eq!(notes(&run), ["true"]);
    // The shell is the first application of [windows] load.
    let shell_task = run.trace().expect(json!({"kind": "program_started", "args": "stay"}))["task"].clone();
    run.trace().expect(json!({"kind": "message_posted", "task": shell_task, "msg": WM_USER, "wparam": 9, "lparam": 0x1234, "result": true}));
    let run = at_appy_time("", |dev, vmm| dev.note(vmm, format!("{}", vmm.shell().post_shell_message(1, 2)))).run();
    assert_eq!(notes(&run), ["false"]);
    run.trace().expect(json!({"kind": "message_dropped", "reason": "no_shell_window"}));
}

// ---- the device itself -----------------------------------------------------------------------------

#[test]
fn under_windows_3_1_shell_has_only_its_3_x_services() {
    let run = machine(
        r#"
        [machine]
        windows = "3.1"
    "#,
        |dev, vmm, msg| {
            if msg.message == INIT_COMPLETE {
                dev.note(vmm, format!("{:?}", vmm.shell().shell_get_version()));
                let mut call = ServiceCall::default();
                call.regs.ebx = vmm.get_sys_vm_handle().0;
                vmm.vxd_call(vxd_service(SHELL_DEVICE_ID, SHELL_GET_VM_INFO), &mut call).unwrap();
                dev.note(vmm, format!("GetVMInfo cf={}", call.regs.flags & CF_MASK));
                vmm.shell().call_at_appy_time(0, 0, |_: &ScriptDevice, _, _| {});
                dev.note(vmm, "not reached");
            }
        },
    )
    .run();
    let e = run.expect_error().to_string();
    assert!(e.contains("Invalid VxD dynamic link call to device number 0017, service 000E"), "{e}");
    assert_eq!(notes(&run), ["(3, 10)", "GetVMInfo cf=0"]);
}

#[test]
fn shell_services_need_shell_in_the_device_list() {
    let run = Scenario::new(
        r#"
        [386Enh]
        device = ["SCRIPT"]
    "#,
    )
    .script(|_, vmm, msg| {
        if msg.message == DEVICE_INIT {
            vmm.shell().query_appy_time_available();
        }
        Carry::Clear
    })
    .run();
    let e = run.expect_error().to_string();
    assert!(e.contains("Invalid VxD dynamic link call to device number 0017, service 000D"), "{e}");
}

#[test]
fn the_services_shell_does_not_provide_are_reported_as_such() {
    let run = machine("", |dev, vmm, msg| {
        if msg.message == INIT_COMPLETE {
            let mut call = ServiceCall::default();
            let r = vmm.vxd_call(vxd_service(SHELL_DEVICE_ID, SHELL_EVENT), &mut call);
            dev.note(vmm, format!("{r:?} cf={}", call.regs.flags & CF_MASK));
        }
    })
    .run();
    run.assert_ok();
    assert_eq!(notes(&run), ["Ok(()) cf=1"]);
    run.trace().expect(json!({"kind": "violation", "code": "NOT_IMPLEMENTED", "service": "SHELL_Event"}));
}

// ---- the example: APPYDEMO ---------------------------------------------------------------------------

fn appydemo(sets: &[&str]) -> Run {
    let manifest = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../plugins/appydemo/appydemo.ini"))
        .expect("the example's manifest");
    let mut s = Scenario::new(&manifest);
    for set in sets {
        s = s.set(set);
    }
    s.run()
}

#[test]
fn the_appydemo_example_loads_its_dll_and_opens_its_readme_at_appy_time() {
    let run = appydemo(&[]);
    run.assert_ok();
    let t = run.trace();
    t.expect_in_order(&[
        json!({"kind": "appy_scheduled", "device": "APPYDEMO", "available": false}),
        json!({"kind": "module_loaded", "module": "APPYDLL"}),
        json!({"kind": "far_call", "module": "APPYDLL", "export": "Multiply", "result": 42}),
        json!({"kind": "far_call", "module": "APPYDLL", "export": "Announce"}),
        json!({"kind": "module_freed", "module": "APPYDLL", "refcount": 0}),
        json!({"kind": "program_started", "module": "APPYVIEW", "args": "README.TXT"}),
        json!({"kind": "shell_execute", "device": "APPYDEMO", "file": "README.TXT", "module": "APPYVIEW"}),
        // Written when the callback returns.
        json!({"kind": "appy_dispatched", "device": "APPYDEMO", "context": "appy", "timed_out": false}),
    ]);
    t.expect_none(json!({"kind": "violation"}));
    let out = outputs(&run);
    assert!(out.contains(&"announces: Hello from APPYDEMO, at appy time".to_string()), "{out:?}");
    assert!(out.contains(&"APPYVIEW opened README.TXT".to_string()), "{out:?}");
}

#[test]
fn the_appydemo_example_handles_a_dll_that_will_not_load() {
    let run = appydemo(&["APPYDEMO.Dll=\"MISSING.DLL\""]);
    run.assert_ok();
    let text: Vec<_> = run.trace().values(json!({"kind": "debug_string", "device": "APPYDEMO"}), "text");
    assert!(text.iter().any(|t| t.as_str().unwrap().contains("MISSING.DLL did not load (error 2)")), "{text:?}");
    run.trace().expect(json!({"kind": "shell_execute", "file": "README.TXT"}));
}

#[test]
fn the_appydemo_example_handles_appy_time_never_coming() {
    let run = appydemo(&["shell.message_server=false"]);
    run.assert_ok();
    let text: Vec<_> = run.trace().values(json!({"kind": "debug_string", "device": "APPYDEMO"}), "text");
    assert!(text.iter().any(|t| t.as_str().unwrap().contains("timed out")), "{text:?}");
    run.trace().expect(json!({"kind": "appy_dispatched", "device": "APPYDEMO", "timed_out": true}));
    run.trace().expect_none(json!({"kind": "module_loaded"}));
}

#[test]
fn the_appydemo_example_handles_a_document_nothing_opens() {
    let run = appydemo(&["APPYDEMO.Document=\"REPORT.DOC\""]);
    run.assert_ok();
    let text: Vec<_> = run.trace().values(json!({"kind": "debug_string", "device": "APPYDEMO"}), "text");
    assert!(text.iter().any(|t| t.as_str().unwrap().contains("ShellExecute(REPORT.DOC) failed: 31")), "{text:?}");
}
