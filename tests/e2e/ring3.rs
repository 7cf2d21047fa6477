//! Ring 3: DOS programs and INT 2Fh, Windows tasks, windows and message
//! queues, DLLs, VxD API calls by mode, nested execution and the ISR rule of
//! KB Q72899. The test modules below are linked into this test binary.

use std::cell::RefCell;
use std::collections::VecDeque;

use vmm_plugin_api::prelude::*;
use vmm_testkit::{Scenario, ScriptDevice, json};

use crate::common::{DOS1, SYS, notes, outputs};

// ---- test modules ------------------------------------------------------------------

/// A DOS program whose command line is a script of `;`-separated commands:
/// `version`, `vmid`, `api ID AX` (find the device's API with 1684h, call it
/// with AX), `crit`, `endcrit`, `cli`, `sti`, `sleep MS`, `yield`, `exit N`,
/// `getmessage`, `panic`, `switch VMID FLAGS` (1685h, calling back export 1).
struct DosTest {
    steps: RefCell<VecDeque<String>>,
}

impl DosTest {
    fn run(&self, r3: &Ring3<'_>) -> Step {
        loop {
            let Some(cmd) = self.steps.borrow_mut().pop_front() else { return Step::exit(0) };
            let words: Vec<&str> = cmd.split_whitespace().collect();
            let num = |i: usize| u32::from_str_radix(words.get(i).copied().unwrap_or("0"), 16).unwrap_or(0);
            let regs = r3.regs();
            match words.first().copied().unwrap_or("") {
                "version" => {
                    regs.set_ax(0x1600);
                    r3.int(0x2F).unwrap();
                    r3.print(&format!("version {}.{}", regs.al(), regs.ah()));
                }
                "vmid" => {
                    regs.set_ax(0x1683);
                    r3.int(0x2F).unwrap();
                    r3.print(&format!("vm id {}", regs.bx()));
                }
                "api" => {
                    regs.set_ax(0x1684);
                    regs.set_bx(num(1) as u16);
                    regs.set_es_raw(0);
                    regs.set_di(0);
                    r3.int(0x2F).unwrap();
                    let entry = FarPtr::new(regs.es() as u16, regs.di());
                    if entry.is_null() {
                        r3.print("no api");
                    } else {
                        regs.set_ax(num(2) as u16);
                        let _ = r3.call(entry, &[]);
                        r3.print(&format!("api cf={} ax={:#x}", u8::from(regs.carry()), regs.ax()));
                    }
                }
                "crit" => {
                    regs.set_ax(0x1681);
                    r3.int(0x2F).unwrap();
                }
                "endcrit" => {
                    regs.set_ax(0x1682);
                    r3.int(0x2F).unwrap();
                }
                "cli" => r3.cli(),
                "sti" => r3.sti(),
                "sleep" => return Step::sleep(words[1].parse().unwrap_or(0)),
                "yield" => return Step::yield_now(),
                "exit" => return Step::exit(words[1].parse().unwrap_or(0)),
                "getmessage" => return Step::get_message(),
                "panic" => panic!("DOSTEST was told to panic"),
                "switch" => {
                    let cb = r3.export_address(1).unwrap();
                    regs.set_ax(0x1685);
                    regs.set_bx(num(1) as u16);
                    regs.set_cx(num(2) as u16);
                    regs.set_dx(0);
                    regs.set_si(0x1000);
                    regs.set_es_raw(cb.selector as u32);
                    regs.set_di(cb.offset);
                    r3.int(0x2F).unwrap();
                    r3.print(&format!("switch cf={} ax={}", u8::from(regs.carry()), regs.ax()));
                }
                other => r3.print(&format!("unknown command {other}")),
            }
        }
    }
}

impl Module for DosTest {
    const MODULE: ModuleDef = ModuleDef::dos_program("DOSTEST")
        .segments(&[Segment::moveable("_TEXT")])
        .exports(&[Export::new("Callback", 1, 0, 0)]);

    fn create(_: &Ring3<'_>) -> Result<Self, String> {
        Ok(DosTest { steps: RefCell::new(VecDeque::new()) })
    }

    fn start(&self, r3: &Ring3<'_>, args: &str) -> Step {
        *self.steps.borrow_mut() = crate::common::script_steps(args);
        self.run(r3)
    }

    fn resume(&self, r3: &Ring3<'_>, _wake: Wake) -> Step {
        self.run(r3)
    }

    fn call(&self, r3: &Ring3<'_>, ordinal: u16, _args: PascalArgs<'_>) -> u32 {
        if ordinal == 1 {
            r3.print(&format!("callback ran in VM {:#x}", r3.vm().0));
        }
        0
    }
}

/// A DLL with callbacks for a VxD to far-call at event time:
/// 1 `FixedPost` (FIXED): PostMessage(hwnd, msg, wParam, lParam);
/// 2 `MovablePost` (MOVEABLE): the same;
/// 3 `FixedNaughty` (FIXED): calls GetCurrentTask first;
/// 4 `Panics` (FIXED).
struct DllTest;

fn post_from_args(r3: &Ring3<'_>, args: PascalArgs<'_>) -> u32 {
    let [hwnd, msg, wparam, lparam] = args.params([2, 2, 2, 4]);
    u32::from(r3.post_message(Hwnd(hwnd as u16), msg as u16, wparam as u16, lparam))
}

impl Module for DllTest {
    const MODULE: ModuleDef = ModuleDef::windows_dll("DLLTEST")
        .segments(&[Segment::fixed("CALLBACK_TEXT"), Segment::moveable("_TEXT")])
        .exports(&[
            Export::new("FixedPost", 1, 0, 10),
            Export::new("MovablePost", 2, 1, 10),
            Export::new("FixedNaughty", 3, 0, 10),
            Export::new("Panics", 4, 0, 0),
        ]);

    fn create(_: &Ring3<'_>) -> Result<Self, String> {
        Ok(DllTest)
    }

    fn start(&self, _r3: &Ring3<'_>, _args: &str) -> Step {
        Step::exit(1)
    }

    fn call(&self, r3: &Ring3<'_>, ordinal: u16, args: PascalArgs<'_>) -> u32 {
        match ordinal {
            1 | 2 => post_from_args(r3, args),
            3 => {
                let _ = r3.get_current_task();
                post_from_args(r3, args)
            }
            4 => panic!("DLLTEST!Panics"),
            _ => 0,
        }
    }
}

/// A Windows application. Its command line is `;`-separated:
/// `queue N` (SetMessageQueue), `post K` (post K WM_USER messages to its
/// window), `register EXPORT` (load DLLTEST and register EXPORT and its
/// window with the SCRIPT device's PM API), `register-self` (register its
/// own export 2), `appmsg` (PostAppMessage to itself), `quit` (post
/// WM_USER+99, which quits). The window procedure prints each message.
struct WinTest {
    hwnd: RefCell<Hwnd>,
}

impl WinTest {
    fn register(&self, r3: &Ring3<'_>, target: FarPtr) {
        let regs = r3.regs();
        regs.set_ax(0x1684);
        regs.set_bx(0x3FF0);
        regs.set_es_raw(0);
        regs.set_di(0);
        r3.int(0x2F).unwrap();
        let entry = FarPtr::new(regs.es() as u16, regs.di());
        regs.set_ax(self.hwnd.borrow().0);
        regs.set_cx(target.selector);
        regs.set_bx(target.offset);
        r3.call(entry, &[]).unwrap();
    }
}

impl Module for WinTest {
    const MODULE: ModuleDef = ModuleDef::windows_app("WINTEST")
        .segments(&[Segment::moveable("_TEXT"), Segment::fixed("FIXED_TEXT")])
        .exports(&[Export::new("WndProc", 1, 0, 10), Export::new("OwnCallback", 2, 1, 10)]);

    fn create(_: &Ring3<'_>) -> Result<Self, String> {
        Ok(WinTest { hwnd: RefCell::new(Hwnd(0)) })
    }

    fn start(&self, r3: &Ring3<'_>, args: &str) -> Step {
        let mut commands: Vec<&str> = args.split(';').map(str::trim).filter(|s| !s.is_empty()).collect();
        // SetMessageQueue comes first, before any window exists.
        if let Some(i) = commands.iter().position(|c| c.starts_with("queue")) {
            let n = commands.remove(i)[5..].trim().parse().unwrap_or(8);
            r3.print(&format!("SetMessageQueue({n}) = {}", r3.set_message_queue(n)));
        }
        let hwnd = r3.create_window("WinTest", "Win Test", 1, None).unwrap();
        *self.hwnd.borrow_mut() = hwnd;
        for c in commands {
            let words: Vec<&str> = c.split_whitespace().collect();
            match words[0] {
                "post" => {
                    let k: u16 = words[1].parse().unwrap();
                    let results: Vec<bool> = (0..k).map(|i| r3.post_message(hwnd, WM_USER + i, i, 0)).collect();
                    r3.print(&format!("posted {:?}", results.iter().map(|b| u8::from(*b)).collect::<Vec<_>>()));
                }
                "register" => {
                    let dll = r3.load_library("DLLTEST").unwrap();
                    let cb = r3.get_proc_address(dll, words[1]).unwrap();
                    self.register(r3, cb);
                }
                "register-self" => self.register(r3, r3.export_address(2).unwrap()),
                "appmsg" => {
                    let me = r3.get_current_task();
                    r3.print(&format!("app message: {}", r3.post_app_message(me, WM_USER + 7, 7, 0)));
                }
                "quit" => {
                    r3.post_message(hwnd, WM_USER + 99, 0, 0);
                }
                "box" => {
                    let answer = r3.message_box(Some(hwnd), "Hello from ring 3", "WinTest", MB_OK | MB_SYSTEMMODAL);
                    r3.print(&format!("box answered {answer}"));
                }
                other => r3.print(&format!("unknown command {other}")),
            }
        }
        Step::get_message()
    }

    fn resume(&self, r3: &Ring3<'_>, wake: Wake) -> Step {
        match wake {
            Wake::Message(m) if m.message == WM_QUIT => Step::exit(m.wparam as u32),
            Wake::Message(m) if m.hwnd == 0 => {
                r3.print(&format!("task message {:#x} wp={}", m.message, m.wparam));
                Step::get_message()
            }
            Wake::Message(m) => {
                r3.dispatch_message(&m);
                Step::get_message()
            }
            _ => Step::get_message(),
        }
    }

    fn call(&self, r3: &Ring3<'_>, ordinal: u16, args: PascalArgs<'_>) -> u32 {
        let [hwnd, msg, wparam, lparam] = args.params([2, 2, 2, 4]);
        match ordinal {
            1 => {
                if msg as u16 == WM_USER + 99 {
                    r3.post_quit_message(7);
                } else if msg as u16 != WM_DESTROY {
                    r3.print(&format!("wndproc msg={msg:#x} wp={wparam} lp={lparam:#x}"));
                }
                r3.def_window_proc(Hwnd(hwnd as u16), msg as u16, wparam as u16, lparam)
            }
            2 => post_from_args(r3, args),
            _ => 0,
        }
    }
}

// ---- helpers ---------------------------------------------------------------------------

fn dos(args: &str) -> String {
    format!(
        r#"
        [[vm]]
        name = "DOS1"
        program = "DOSTEST"
        args = "{args}"
    "#
    )
}

/// SCRIPT's API: `AX` in, `AX + 1` out; CF set unless AX was 5. A PM
/// caller registering a callback (`AX` = hwnd, `CX:BX` = far pointer) has it
/// stored in the device state.
fn echo_api(dev: &ScriptDevice, vmm: &Vmm<'_>, call: ApiCall<'_>) {
    let c = call.client;
    if call.mode == ApiMode::Pm && c.cx() != 0 {
        let mut s = dev.state.borrow_mut();
        s.clear();
        s.push(c.ax() as u32);
        s.push(((c.cx() as u32) << 16) | c.bx() as u32);
        vmm.out_debug_string(&format!("registered hwnd={:#x} callback={:04X}:{:04X}", c.ax(), c.cx(), c.bx()));
        c.set_carry(false);
        return;
    }
    c.set_ax(c.ax().wrapping_add(1));
    c.set_carry(c.ax() != 6);
}

/// At interrupt `go`, schedule a priority event in the system VM that calls
/// the registered callback by nested execution with (hwnd, WM_USER+0x100,
/// 0x1234, 0xCAFEF00D), like VPOSTD does.
fn deliver_at_go(dev: &ScriptDevice, vmm: &Vmm<'_>, msg: ControlMessage) -> Carry {
    let _ = dev;
    if msg.message == DEVICE_INIT {
        vmm.register_interrupt("go", |_: &ScriptDevice, vmm, _| {
            let sys = vmm.get_sys_vm_handle();
            vmm.call_priority_vm_event(
                HIGH_PRI_DEVICE_BOOST as i32,
                sys,
                PEF_WAIT_FOR_STI | PEF_WAIT_NOT_CRIT,
                0,
                deliver,
            )
            .unwrap();
        })
        .unwrap();
    }
    Carry::Clear
}

fn deliver(dev: &ScriptDevice, vmm: &Vmm<'_>, _ev: Event) {
    let (hwnd, callback) = {
        let s = dev.state.borrow();
        (s[0], s[1])
    };
    let saved = vmm.save_client_state().unwrap();
    vmm.begin_nest_exec().unwrap();
    for w in [hwnd, (WM_USER + 0x100) as u32, 0x1234, 0xCAFE, 0xF00D] {
        vmm.simulate_push(w).unwrap();
    }
    vmm.simulate_far_call(FarPtr::from_u32(callback)).unwrap();
    let r = vmm.resume_exec();
    let ax = vmm.client(vmm.get_cur_vm_handle()).unwrap().ax();
    vmm.end_nest_exec().unwrap();
    vmm.restore_client_state(&saved).unwrap();
    vmm.out_debug_string(&format!("callback returned ax={ax} ok={}", r.is_ok()));
}

fn windows(app_args: &str) -> String {
    format!(
        r#"
        [386Enh]
        device = ["SCRIPT"]
        [windows]
        load = ["WINTEST {app_args}"]
    "#
    )
}

// ---- DOS programs and INT 2Fh ------------------------------------------------------------------

#[test]
fn a_dos_program_uses_int_2f_and_calls_a_v86_api() {
    let run = Scenario::new(&format!(
        r#"
            [386Enh]
            device = ["SCRIPT"]
            {}"#,
        dos("version;vmid;api 3FF0 5;api 3FF0 1;api 4321 0;exit 3")
    ))
    .script_api(echo_api)
    .module::<DosTest>()
    .run();
    run.assert_ok();
    assert_eq!(outputs(&run), ["version 4.0", "vm id 2", "api cf=0 ax=0x6", "api cf=1 ax=0x2", "no api"]);
    let t = run.trace();
    t.expect(json!({"kind": "int2f", "vm": DOS1, "ax": 0x1684, "bx": 0x3FF0, "es_di": 0xFF00_3FF0u32}));
    t.expect(json!({"kind": "int2f", "vm": DOS1, "ax": 0x1684, "bx": 0x4321, "es_di": 0}));
    let api = t.expect(json!({"kind": "api_call", "device": "SCRIPT", "vm": DOS1, "mode": "v86"}));
    assert_eq!(api["regs_in"]["eax"], 5);
    assert_eq!(api["regs_out"]["eax"], 6);
    assert_eq!(api["carry"], false);
    t.expect(json!({"kind": "program_ended", "vm": DOS1, "module": "DOSTEST", "exit_code": 3, "reason": "exited"}));
    // The program's end terminates its VM with the control messages.
    t.expect_in_order(&[
        json!({"kind": "program_ended", "vm": DOS1}),
        json!({"kind": "control", "device": "SCRIPT", "message": "VM_Terminate", "vm": DOS1}),
        json!({"kind": "control", "device": "SCRIPT", "message": "Destroy_VM", "vm": DOS1}),
        json!({"kind": "vm_destroyed", "vm": DOS1, "reason": "program_ended"}),
    ]);
}

#[test]
fn the_api_entry_matches_the_callers_mode() {
    // A device with only a PM API: a DOS (V86) caller gets 0:0, Windows
    // code gets the PM entry.
    struct PmOnly;
    impl VxD for PmOnly {
        const DEVICE: Device = Device::new("PMONLY").id(0x3FE0).pm_api();
        fn create(_: &Vmm<'_>) -> Result<Self, String> {
            Ok(PmOnly)
        }
        fn pm_api(&self, _vmm: &Vmm<'_>, call: ApiCall<'_>) {
            call.client.set_ax(0x600D);
            call.client.set_carry(false);
        }
    }
    let run = Scenario::new(&format!(
        r#"
        [386Enh]
        device = ["PMONLY"]
        {}"#,
        dos("api 3FE0 0")
    ))
    .device::<PmOnly>()
    .module::<DosTest>()
    .run();
    run.assert_ok();
    assert_eq!(outputs(&run), ["no api"]);

    struct PmCaller;
    impl Module for PmCaller {
        const MODULE: ModuleDef = ModuleDef::windows_app("PMCALLER");
        fn create(_: &Ring3<'_>) -> Result<Self, String> {
            Ok(PmCaller)
        }
        fn start(&self, r3: &Ring3<'_>, _: &str) -> Step {
            let regs = r3.regs();
            regs.set_ax(0x1684);
            regs.set_bx(0x3FE0);
            r3.int(0x2F).unwrap();
            let entry = FarPtr::new(regs.es() as u16, regs.di());
            r3.call(entry, &[]).unwrap();
            r3.print(&format!("entry {entry} ax={:#x}", regs.ax()));
            Step::exit(0)
        }
    }
    let run = Scenario::new(
        r#"
        [386Enh]
        device = ["PMONLY"]
        [windows]
        load = ["PMCALLER"]
    "#,
    )
    .device::<PmOnly>()
    .module::<PmCaller>()
    .run();
    run.assert_ok();
    assert_eq!(outputs(&run), ["entry 003B:3FE0 ax=0x600d"]);
    run.trace().expect(json!({"kind": "api_call", "device": "PMONLY", "vm": SYS, "mode": "pm"}));
}

#[test]
fn a_dos_program_holding_the_critical_section_delays_a_priority_event() {
    let run = Scenario::new(&format!(
        r#"
            [386Enh]
            device = ["SCRIPT"]
            {}[[interrupt]]
            name = "go"
            at = 5
        "#,
        dos("crit;sleep 50;endcrit")
    ))
    .script(|_, vmm, msg| {
        if msg.message == DEVICE_INIT {
            vmm.register_interrupt("go", |_: &ScriptDevice, vmm, _| {
                let sys = vmm.get_sys_vm_handle();
                vmm.call_priority_vm_event(0x1000, sys, PEF_WAIT_NOT_CRIT, 0, |dev: &ScriptDevice, vmm, _| {
                    dev.note(vmm, format!("ran t={}", vmm.get_system_time()));
                })
                .unwrap();
            })
            .unwrap();
        }
        Carry::Clear
    })
    .module::<DosTest>()
    .run();
    run.assert_ok();
    let t = run.trace();
    let released = t.expect(json!({"kind": "crit_section", "action": "release", "vm": DOS1}))["t"].as_u64().unwrap();
    assert_eq!(notes(&run), [format!("ran t={released}")]);
    assert!(released >= 50, "released at {released}");
}

#[test]
fn cli_and_sti_from_a_program_gate_events_waiting_for_interrupts() {
    let run = Scenario::new(
        r#"
            [386Enh]
            device = ["SCRIPT"]
            [[vm]]
            name = "DOS1"
            program = "DOSTEST"
            args = "cli;sleep 30;sti;sleep 10"
            [[interrupt]]
            name = "go"
            at = 5
        "#,
    )
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
    .module::<DosTest>()
    .run();
    run.assert_ok();
    let t = run.trace();
    t.expect(json!({"kind": "if_flag", "vm": DOS1, "enabled": false}));
    let sti = t.expect(json!({"kind": "if_flag", "vm": DOS1, "enabled": true}))["t"].as_u64().unwrap();
    assert_eq!(notes(&run), [format!("ran t={sti}")]);
    assert!(sti >= 30);
}

#[test]
fn switch_vms_and_call_back_runs_ring3_code_in_the_other_vm() {
    let run = Scenario::new(&format!(
        r#"
            [386Enh]
            device = ["SCRIPT"]
            {}"#,
        dos("switch 1 1;switch 9 0;switch 1 8;sleep 10")
    ))
    .script(|_, _, _| Carry::Clear)
    .module::<DosTest>()
    .run();
    run.assert_ok();
    let out = outputs(&run);
    // AX is printed in decimal: 5765 is 1685h, unchanged on success.
    assert_eq!(out[..3], ["switch cf=0 ax=5765", "switch cf=1 ax=1", "switch cf=1 ax=3"]);
    assert!(out.contains(&format!("callback ran in VM {SYS:#x}")), "{out:?}");
    run.trace().expect_none(json!({"kind": "violation"}));
    run.trace().expect(json!({"kind": "event_scheduled", "event": "priority", "vm": SYS, "flags": PEF_WAIT_FOR_STI}));
}

#[test]
fn a_dos_program_cannot_wait_for_messages() {
    let run = Scenario::new(&format!(
        r#"
        [386Enh]
        device = ["SCRIPT"]
        {}"#,
        dos("getmessage")
    ))
    .module::<DosTest>()
    .script(|_, _, _| Carry::Clear)
    .run();
    run.assert_ok();
    run.trace().expect(json!({"kind": "violation", "code": "GET_MESSAGE_IN_DOS"}));
    run.trace().expect(json!({"kind": "program_ended", "reason": "crashed"}));
}

#[test]
fn a_panicking_program_crashes_its_vm_not_the_host() {
    let run = Scenario::new(&format!(
        r#"
        [386Enh]
        device = ["SCRIPT"]
        {}"#,
        dos("panic")
    ))
    .module::<DosTest>()
    .script(|_, _, _| Carry::Clear)
    .run();
    run.assert_ok();
    let t = run.trace();
    t.expect(json!({"kind": "plugin_error", "device": "DOSTEST", "entry": "start", "error": "panic"}));
    t.expect(json!({"kind": "vm_destroyed", "vm": DOS1, "flags": VNE_CRASHED, "reason": "program_ended"}));
    t.expect_none(json!({"kind": "control", "message": "VM_Terminate", "vm": DOS1}));
}

#[test]
fn a_panic_in_a_v86_api_procedure_reports_carry_to_the_caller() {
    let run = Scenario::new(&format!(
        r#"
            [386Enh]
            device = ["fixture-misbehave"]
            [FXBAD]
            panic = "v86_api"
            {}"#,
        dos("api 3F10 1")
    ))
    .module::<DosTest>()
    .run();
    run.assert_ok();
    assert_eq!(outputs(&run), ["api cf=1 ax=0x1"]);
    run.trace().expect(json!({"kind": "plugin_error", "device": "FXBAD", "entry": "api", "error": "panic"}));
    run.trace().expect(json!({"kind": "api_call", "device": "FXBAD", "result": "panic", "carry": true}));
}

// ---- Windows tasks, windows and queues ---------------------------------------------------------

#[test]
fn a_windows_app_posts_to_its_window_and_quits() {
    let run = Scenario::new(&windows("post 2;box;quit")).script(|_, _, _| Carry::Clear).module::<WinTest>().run();
    run.assert_ok();
    assert_eq!(
        outputs(&run),
        ["posted [1, 1]", "box answered 1", "wndproc msg=0x400 wp=0 lp=0x0", "wndproc msg=0x401 wp=1 lp=0x0"]
    );
    let t = run.trace();
    t.expect(json!({"kind": "program_started", "vm": SYS, "module": "WINTEST", "module_kind": "windows_app"}));
    t.expect(json!({"kind": "message_box", "text": "Hello from ring 3", "caption": "WinTest", "answer": 1, "system_modal": true}));
    t.expect(json!({"kind": "message_delivered", "msg": 0x401, "wparam": 1}));
    t.expect(json!({"kind": "program_ended", "module": "WINTEST", "exit_code": 7, "reason": "exited"}));
}

#[test]
fn post_message_fails_when_the_queue_is_full_and_the_message_is_dropped() {
    let run = Scenario::new(&windows("post 10")).script(|_, _, _| Carry::Clear).module::<WinTest>().run();
    run.assert_ok();
    assert_eq!(outputs(&run)[0], "posted [1, 1, 1, 1, 1, 1, 1, 1, 0, 0]");
    let t = run.trace();
    assert_eq!(t.count(json!({"kind": "message_dropped", "reason": "queue_full"})), 2);
    assert_eq!(t.count(json!({"kind": "message_posted", "result": false, "note": "dropped"})), 2);
    // The default queue holds 8; a bigger one holds all ten.
    let run = Scenario::new(&windows("queue 16;post 10")).script(|_, _, _| Carry::Clear).module::<WinTest>().run();
    assert_eq!(outputs(&run)[..2], ["SetMessageQueue(16) = true", "posted [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]"]);
    // DefaultQueueSize from the manifest.
    let run = Scenario::new(&format!("{}queue_size = 3\n", windows("post 5")))
        .script(|_, _, _| Carry::Clear)
        .module::<WinTest>()
        .run();
    assert_eq!(outputs(&run)[0], "posted [1, 1, 1, 0, 0]");
}

#[test]
fn set_message_queue_with_an_absurd_size_leaves_the_task_without_a_queue() {
    let run = Scenario::new(&windows("queue 0;post 2")).script(|_, _, _| Carry::Clear).module::<WinTest>().run();
    run.assert_ok();
    assert_eq!(outputs(&run)[..2], ["SetMessageQueue(0) = false", "posted [0, 0]"]);
    assert_eq!(run.trace().count(json!({"kind": "message_dropped", "reason": "no_queue"})), 2);
}

#[test]
fn post_app_message_arrives_with_a_null_hwnd() {
    let run = Scenario::new(&windows("appmsg")).script(|_, _, _| Carry::Clear).module::<WinTest>().run();
    run.assert_ok();
    assert_eq!(outputs(&run), ["app message: true", "task message 0x407 wp=7"]);
    run.trace().expect(json!({"kind": "message_delivered", "hwnd": 0, "msg": 0x407}));
}

#[test]
fn cooperative_tasks_take_turns_at_get_message() {
    let run = Scenario::new(
        r#"
            [386Enh]
            device = ["SCRIPT"]
            [windows]
            load = ["WINTEST post 2", "WINTEST post 1"]
        "#,
    )
    .script(|_, _, _| Carry::Clear)
    .module::<WinTest>()
    .run();
    run.assert_ok();
    let t = run.trace();
    let tasks: Vec<u64> =
        t.values(json!({"kind": "message_delivered"}), "task").iter().map(|v| v.as_u64().unwrap()).collect();
    // Task A's two messages and task B's one: each task runs one step
    // (one message) before the other gets its turn.
    assert_eq!(tasks.len(), 3);
    assert_ne!(tasks[0], tasks[1], "{tasks:?}");
}

#[test]
fn post_message_to_an_invalid_window_does_not_fail() {
    struct Poster;
    impl Module for Poster {
        const MODULE: ModuleDef = ModuleDef::windows_app("POSTER");
        fn create(_: &Ring3<'_>) -> Result<Self, String> {
            Ok(Poster)
        }
        fn start(&self, r3: &Ring3<'_>, _: &str) -> Step {
            r3.print(&format!(
                "{} {}",
                r3.post_message(Hwnd(0x7777), WM_USER, 0, 0),
                r3.post_message(Hwnd::BROADCAST, WM_USER, 0, 0)
            ));
            Step::exit(0)
        }
    }
    let run = Scenario::new(
        r#"
        [386Enh]
        device = []
        [windows]
        load = ["POSTER"]
    "#,
    )
    .module::<Poster>()
    .run();
    run.assert_ok();
    // 3.1: an invalid hwnd returns TRUE (nothing posted); a broadcast FALSE.
    assert_eq!(outputs(&run), ["true false"]);
    run.trace().expect(json!({"kind": "message_posted", "hwnd": 0x7777, "result": true, "note": "invalid_hwnd"}));
}

// ---- nested execution and the ISR rule -------------------------------------------------------------

fn nested(app_args: &str) -> vmm_testkit::Run {
    Scenario::new(&format!("{}[[interrupt]]\nname = \"go\"\nat = 10\n", windows(app_args)))
        .script(deliver_at_go)
        .script_api(echo_api)
        .module::<WinTest>()
        .module::<DllTest>()
        .run()
}

#[test]
fn a_vxd_calls_a_fixed_dll_callback_by_nested_execution() {
    let run = nested("register FixedPost");
    run.assert_ok();
    let t = run.trace();
    let n = notes(&run);
    assert!(n[0].starts_with("registered hwnd=0x1004 callback="), "{n:?}");
    assert_eq!(n[1], "callback returned ax=1 ok=true");
    t.expect(json!({"kind": "far_call", "module": "DLLTEST", "export": "FixedPost", "isr": true, "result": 1}));
    t.expect(json!({"kind": "message_posted", "hwnd": 0x1004, "msg": 0x500, "wparam": 0x1234, "lparam": 0xCAFE_F00Du32, "result": true}));
    t.expect(json!({"kind": "message_delivered", "hwnd": 0x1004, "msg": 0x500, "wparam": 0x1234}));
    t.expect_in_order(&[
        json!({"kind": "nest_exec", "action": "begin", "vm": SYS, "depth": 1}),
        json!({"kind": "far_call", "export": "FixedPost"}),
        json!({"kind": "nest_exec", "action": "end", "vm": SYS, "depth": 0}),
    ]);
    assert!(outputs(&run).contains(&"wndproc msg=0x500 wp=4660 lp=0xcafef00d".to_string()), "{:?}", outputs(&run));
    t.expect_none(json!({"kind": "violation"}));
}

#[test]
fn a_moveable_callback_breaks_the_isr_rule() {
    let run = nested("register MovablePost");
    run.assert_ok();
    let v = run.trace().expect(json!({"kind": "violation", "code": "NOT_FIXED_SEGMENT"}));
    let message = v["message"].as_str().unwrap();
    assert!(message.contains("DLLTEST!MovablePost") && message.contains("MOVEABLE"), "{message}");
    assert_eq!(notes(&run)[1], "callback returned ax=0 ok=false");
    run.trace().expect_none(json!({"kind": "message_posted", "msg": 0x500}));
}

#[test]
fn a_callback_in_an_application_breaks_the_isr_rule_even_if_fixed() {
    let run = nested("register-self");
    run.assert_ok();
    let v = run.trace().expect(json!({"kind": "violation", "code": "NOT_FIXED_SEGMENT"}));
    assert!(v["message"].as_str().unwrap().contains("FIXED is ignored for applications"), "{v}");
}

#[test]
fn a_callback_calling_anything_but_post_message_breaks_the_isr_rule() {
    let run = nested("register FixedNaughty");
    run.assert_ok();
    let v = run.trace().expect(json!({"kind": "violation", "code": "ISR_CALL", "service": "GetCurrentTask"}));
    assert!(v["message"].as_str().unwrap().contains("only PostMessage and PostAppMessage"), "{v}");
    // PostMessage itself was allowed.
    run.trace().expect(json!({"kind": "message_posted", "msg": 0x500, "result": true}));
}

#[test]
fn a_panicking_callback_returns_zero_and_the_host_goes_on() {
    let run = nested("register Panics");
    run.assert_ok();
    run.trace().expect(json!({"kind": "plugin_error", "device": "DLLTEST", "entry": "call_export", "error": "panic"}));
    run.trace().expect(json!({"kind": "far_call", "export": "Panics", "outcome": "panic", "result": 0}));
}

#[test]
fn a_far_call_into_an_unloaded_dll_is_reported() {
    // The app registers the DLL's callback, then ends (freeing the DLL)
    // before the VxD calls it.
    let run = Scenario::new(
        r#"
        [386Enh]
        device = ["SCRIPT"]
        [windows]
        load = ["WINTEST register FixedPost;quit"]
        [[interrupt]]
        name = "go"
        at = 10
    "#,
    )
    .script(deliver_at_go)
    .script_api(echo_api)
    .module::<WinTest>()
    .module::<DllTest>()
    .run();
    run.assert_ok();
    let t = run.trace();
    t.expect(json!({"kind": "module_freed", "module": "DLLTEST", "refcount": 0}));
    let v = t.expect(json!({"kind": "violation", "code": "BAD_FAR_POINTER"}));
    assert!(v["message"].as_str().unwrap().contains("unloaded"), "{v}");
}

#[test]
fn nested_execution_rules_are_enforced() {
    let run = Scenario::new(
        r#"
        [386Enh]
        device = ["SCRIPT"]
        [[interrupt]]
        name = "go"
        at = 10
    "#,
    )
    .script(|_, vmm, msg| {
        match msg.message {
            SYS_CRITICAL_INIT => {
                let r = vmm.begin_nest_exec();
                vmm.out_debug_string(&format!("in Sys_Critical_Init: {r:?}"));
            }
            DEVICE_INIT => {
                vmm.register_interrupt("go", |_: &ScriptDevice, vmm, _| {
                    let r = vmm.begin_nest_exec();
                    vmm.out_debug_string(&format!("at interrupt: {r:?}"));
                    vmm.schedule_global_event(|_: &ScriptDevice, vmm, _| {
                        vmm.out_debug_string(&format!("end without begin: {:?}", vmm.end_nest_exec()));
                        vmm.begin_nest_exec().unwrap();
                        vmm.simulate_push(0xAAAA).unwrap();
                        vmm.simulate_push(0xBBBB).unwrap();
                        let a = vmm.simulate_pop().unwrap();
                        let b = vmm.simulate_pop().unwrap();
                        vmm.out_debug_string(&format!("pop {a:#x} {b:#x}"));
                        let sys = vmm.get_sys_vm_handle();
                        let c = vmm.client(sys).unwrap();
                        c.set_ax(0x1600);
                        vmm.exec_int(0x2F).unwrap();
                        vmm.out_debug_string(&format!("exec_int 2F: al={} ah={}", c.al(), c.ah()));
                        // Returns with the block still open.
                    })
                    .unwrap();
                })
                .unwrap();
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
            "in Sys_Critical_Init: Err(VmmError { code: 2 })",
            "at interrupt: Err(VmmError { code: 2 })",
            "end without begin: Err(VmmError { code: 2 })",
            "pop 0xbbbb 0xaaaa",
            "exec_int 2F: al=4 ah=0",
        ]
    );
    let t = run.trace();
    // In Sys_Critical_Init nesting is illegal; at interrupt time the
    // service is refused first as a synchronous service.
    t.expect(
        json!({"kind": "violation", "code": "NEST_EXEC_ILLEGAL", "service": "Begin_Nest_Exec", "context": "init"}),
    );
    t.expect(json!({"kind": "violation", "code": "SYNC_SERVICE_AT_INTERRUPT", "service": "Begin_Nest_Exec"}));
    t.expect(json!({"kind": "violation", "code": "UNBALANCED_NEST_EXEC"}));
    t.expect(json!({"kind": "violation", "code": "NEST_EXEC_NOT_ENDED"}));
}

#[test]
fn a_far_call_to_nothing_is_reported() {
    let run = Scenario::new(
        r#"
        [386Enh]
        device = ["SCRIPT"]
        [[interrupt]]
        name = "go"
        at = 10
    "#,
    )
    .script(|_, vmm, msg| {
        if msg.message == DEVICE_INIT {
            vmm.register_interrupt("go", |_: &ScriptDevice, vmm, _| {
                vmm.schedule_global_event(|_: &ScriptDevice, vmm, _| {
                    vmm.begin_nest_exec().unwrap();
                    vmm.simulate_far_call(FarPtr::new(0x1234, 0x5678)).unwrap();
                    let r = vmm.resume_exec();
                    vmm.end_nest_exec().unwrap();
                    vmm.out_debug_string(&format!("{r:?}"));
                })
                .unwrap();
            })
            .unwrap();
        }
        Carry::Clear
    })
    .run();
    run.assert_ok();
    assert_eq!(notes(&run), ["Err(VmmError { code: 2 })"]);
    let v = run.trace().expect(json!({"kind": "violation", "code": "BAD_FAR_POINTER"}));
    assert!(v["message"].as_str().unwrap().contains("1234:5678"), "{v}");
}

#[test]
fn manifest_programs_must_exist_and_have_the_right_kind() {
    let run = Scenario::new(
        r#"
            [386Enh]
            device = []
            [[vm]]
            name = "D"
            program = "WINTEST"
        "#,
    )
    .module::<WinTest>()
    .run();
    let e = run.expect_error().to_string();
    assert!(e.contains("windows_app plugin, but a dos_program is needed"), "{e}");
    let run = Scenario::new(
        r#"
        [386Enh]
        device = []
        [windows]
        load = ["NOSUCHAPP"]
    "#,
    )
    .module::<WinTest>()
    .run();
    assert!(run.expect_error().to_string().contains("NOSUCHAPP"), "{}", run.expect_error());
}
