//! When each record is written relative to what it describes
//! (docs/trace.md, "Order of records"): a record of a call that runs
//! device or ring-3 code is written when the call returns, after every
//! record the code wrote; a record of a moment is written at that moment,
//! before what follows from it. These tests pin that order for the kinds a
//! test author meets most: if the documented order changes, they fail.

use vmm_plugin_api::prelude::*;
use vmm_testkit::{Scenario, ScriptDevice, Value, json};

use crate::common::{DOS1, SYS};

const INSIDE_ID: u16 = 0x3FE8;
const SCRIPT_ID: u16 = 0x3FF0;

/// Write the note `name` (no fields) into the trace.
fn note(vmm: &Vmm<'_>, name: &str) {
    vmm.trace_note(name, &[]).unwrap();
}

/// The pattern of the note `name`.
fn noted(name: &str) -> Value {
    json!({"kind": "note", "note": name})
}

/// The pattern of the line `text` printed by a ring-3 program.
fn printed(text: &str) -> Value {
    json!({"kind": "program_output", "text": text})
}

/// A device that writes a note from inside each of its entry points:
/// real-mode init (`in_real_mode_init`), `Device_Init` (`in_control`), its
/// PM API (`in_api`) and its service 1, `INSIDE_Note` (`in_service`).
struct Inside;

impl VxD for Inside {
    const DEVICE: Device =
        Device::new("INSIDE").id(INSIDE_ID).pm_api().services(&["INSIDE_Get_Version", "INSIDE_Note"]);

    fn create(_: &Vmm<'_>) -> Result<Self, String> {
        Ok(Inside)
    }

    fn real_mode_init(&self, vmm: &Vmm<'_>, init: RealModeInit) -> RealModeInitResult {
        note(vmm, "in_real_mode_init");
        init.answer(DEVICE_LOAD_OK)
    }

    fn control(&self, vmm: &Vmm<'_>, msg: ControlMessage) -> Carry {
        if msg.message == DEVICE_INIT {
            note(vmm, "in_control");
        }
        Carry::Clear
    }

    fn pm_api(&self, vmm: &Vmm<'_>, call: ApiCall<'_>) {
        note(vmm, "in_api");
        call.client.set_carry(false);
    }

    fn service(&self, vmm: &Vmm<'_>, _ordinal: u16, _call: &mut ServiceCall) -> Carry {
        note(vmm, "in_service");
        Carry::Clear
    }
}

/// A Windows DLL whose LibMain prints `libmain` and whose export 1, `Speak`
/// (FIXED, one word of arguments), prints `speak N`.
struct OrderDll;

impl Module for OrderDll {
    const MODULE: ModuleDef = ModuleDef::windows_dll("ORDERDLL")
        .segments(&[Segment::fixed("_TEXT")])
        .exports(&[Export::new("Speak", 1, 0, 2)]);

    fn create(_: &Ring3<'_>) -> Result<Self, String> {
        Ok(OrderDll)
    }

    fn start(&self, r3: &Ring3<'_>, _args: &str) -> Step {
        r3.print("libmain");
        Step::exit(1)
    }

    fn call(&self, r3: &Ring3<'_>, ordinal: u16, args: PascalArgs<'_>) -> u32 {
        let [n] = args.params([2]);
        if ordinal == 1 {
            r3.print(&format!("speak {n}"));
        }
        n
    }
}

/// A Windows application that prints `first`; loads ORDERDLL and far-calls
/// `Speak(1)` itself; hands `Speak` to the SCRIPT device's PM API (CX:BX),
/// which calls it by nested execution; sends its window a message (the
/// window procedure prints `wndproc`); prints `last` and exits.
struct OrderApp;

impl Module for OrderApp {
    const MODULE: ModuleDef = ModuleDef::windows_app("ORDERAPP")
        .segments(&[Segment::moveable("_TEXT")])
        .exports(&[Export::new("WndProc", 1, 0, 10)]);

    fn create(_: &Ring3<'_>) -> Result<Self, String> {
        Ok(OrderApp)
    }

    fn start(&self, r3: &Ring3<'_>, _args: &str) -> Step {
        r3.print("first");
        let dll = r3.load_library("ORDERDLL").unwrap();
        let speak = r3.get_proc_address(dll, "Speak").unwrap();
        r3.call(speak, &PascalArgs::encode(&[(2, 1)])).unwrap();
        let regs = r3.regs();
        regs.set_ax(W386_GET_DEVICE_API);
        regs.set_bx(SCRIPT_ID);
        r3.int(0x2F).unwrap();
        let entry = FarPtr::new(regs.es() as u16, regs.di());
        regs.set_cx(speak.selector);
        regs.set_bx(speak.offset);
        r3.call(entry, &[]).unwrap();
        let hwnd = r3.create_window("OrderApp", "Order", 1, None).unwrap();
        r3.send_message(hwnd, WM_USER, 0, 0);
        r3.print("last");
        Step::exit(0)
    }

    fn call(&self, r3: &Ring3<'_>, ordinal: u16, args: PascalArgs<'_>) -> u32 {
        let [hwnd, msg, wparam, lparam] = args.params([2, 2, 2, 4]);
        if ordinal == 1 && msg as u16 == WM_USER {
            r3.print("wndproc");
        }
        r3.def_window_proc(Hwnd(hwnd as u16), msg as u16, wparam as u16, lparam)
    }
}

/// SCRIPT's PM API: call the far pointer in CX:BX with the argument 2 by
/// nested execution, with a note before and after.
fn call_back_nested(_: &ScriptDevice, vmm: &Vmm<'_>, call: ApiCall<'_>) {
    let target = FarPtr::new(call.client.cx(), call.client.bx());
    let saved = vmm.save_client_state().unwrap();
    note(vmm, "before_nest");
    vmm.begin_nest_exec().unwrap();
    vmm.simulate_push(2).unwrap();
    vmm.simulate_far_call(target).unwrap();
    vmm.resume_exec().unwrap();
    vmm.end_nest_exec().unwrap();
    note(vmm, "after_nest");
    vmm.restore_client_state(&saved).unwrap();
    call.client.set_carry(false);
}

// ---- device code: written when the call returns -----------------------------------------------

#[test]
fn real_mode_init_and_control_records_follow_the_notes_the_device_wrote_inside() {
    let run = Scenario::new(
        r#"
        [386Enh]
        device = ["INSIDE"]
    "#,
    )
    .device::<Inside>()
    .run();
    run.assert_ok();
    run.trace().expect_in_order(&[
        json!({"kind": "phase", "phase": "real_mode_init"}),
        noted("in_real_mode_init"),
        json!({"kind": "real_mode_init", "device": "INSIDE", "result": "clear"}),
        json!({"kind": "device_loaded", "device": "INSIDE"}),
        json!({"kind": "phase", "phase": "device_init"}),
        noted("in_control"),
        json!({"kind": "control", "device": "INSIDE", "message": "Device_Init", "result": "clear"}),
        json!({"kind": "phase", "phase": "init_complete"}),
    ]);
}

#[test]
fn a_vxd_call_record_follows_the_services_notes_and_precedes_the_callers_next_ones() {
    let run = Scenario::new(
        r#"
        [386Enh]
        device = ["INSIDE", "SCRIPT"]
    "#,
    )
    .device::<Inside>()
    .script(|_, vmm, msg| {
        if msg.message == DEVICE_INIT {
            note(vmm, "before_call");
            let mut call = ServiceCall::default();
            vmm.vxd_call(vxd_service(INSIDE_ID, 1), &mut call).unwrap();
            note(vmm, "after_call");
        }
        Carry::Clear
    })
    .run();
    run.assert_ok();
    run.trace().expect_in_order(&[
        noted("before_call"),
        noted("in_service"),
        json!({"kind": "vxd_call", "caller": "SCRIPT", "device_id": INSIDE_ID, "ordinal": 1, "service": "INSIDE_Note"}),
        noted("after_call"),
        json!({"kind": "control", "device": "SCRIPT", "message": "Device_Init"}),
    ]);
}

#[test]
fn an_api_call_record_follows_the_handlers_notes() {
    let mut session = Scenario::new(
        r#"
        [386Enh]
        device = ["INSIDE"]
    "#,
    )
    .device::<Inside>()
    .boot();
    session.call_pm_api(INSIDE_ID, ClientRegs::default()).unwrap();
    let run = session.finish();
    run.assert_ok();
    run.trace().expect_in_order(&[
        json!({"kind": "program_started", "module": "KITPM"}),
        json!({"kind": "int2f", "ax": W386_GET_DEVICE_API, "bx": INSIDE_ID}),
        noted("in_api"),
        json!({"kind": "api_call", "device": "INSIDE", "mode": "pm", "result": "clear"}),
        json!({"kind": "program_ended", "module": "KITPM"}),
    ]);
}

// ---- callbacks: written when the callback returns; interrupts when taken ------------------------

#[test]
fn an_event_dispatched_record_follows_the_callbacks_notes_inline_or_scheduled() {
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
            // Not at interrupt time: Call_Global_Event runs it inline,
            // before the service returns.
            vmm.call_global_event(|_: &ScriptDevice, vmm, _| note(vmm, "in_inline_event")).unwrap();
            note(vmm, "after_inline_event");
            vmm.register_interrupt("go", |_: &ScriptDevice, vmm, _| {
                note(vmm, "in_interrupt");
                vmm.schedule_global_event(|_: &ScriptDevice, vmm, _| note(vmm, "in_event")).unwrap();
            })
            .unwrap();
        }
        Carry::Clear
    })
    .run();
    run.assert_ok();
    let t = run.trace();
    t.expect_in_order(&[
        noted("in_inline_event"),
        json!({"kind": "event_dispatched", "device": "SCRIPT", "event": "global", "inline": true, "handle": 0}),
        noted("after_inline_event"),
        json!({"kind": "control", "device": "SCRIPT", "message": "Device_Init"}),
    ]);
    // The interrupt record is the moment the interrupt is taken: the
    // handler runs after it.
    t.expect_in_order(&[
        json!({"kind": "interrupt", "name": "go", "device": "SCRIPT"}),
        noted("in_interrupt"),
        json!({"kind": "event_scheduled", "device": "SCRIPT", "event": "global"}),
        noted("in_event"),
        json!({"kind": "event_dispatched", "device": "SCRIPT", "event": "global", "inline": false}),
    ]);
}

#[test]
fn a_timeout_record_follows_the_callbacks_notes() {
    let run = Scenario::new(
        r#"
        [386Enh]
        device = ["SCRIPT"]
    "#,
    )
    .script(|_, vmm, msg| {
        if msg.message == DEVICE_INIT {
            vmm.set_global_time_out(5, |_: &ScriptDevice, vmm, _| note(vmm, "in_timeout")).unwrap();
        }
        Carry::Clear
    })
    .run();
    run.assert_ok();
    run.trace().expect_in_order(&[
        json!({"kind": "timeout_scheduled", "device": "SCRIPT", "ms": 5}),
        noted("in_timeout"),
        json!({"kind": "timeout", "device": "SCRIPT", "ms": 5, "result": "clear"}),
    ]);
}

#[test]
fn an_appy_dispatched_record_follows_the_callbacks_notes() {
    let run = Scenario::new(
        r#"
        [386Enh]
        device = ["*SHELL", "SCRIPT"]
    "#,
    )
    .script(|_, vmm, msg| {
        if msg.message == DEVICE_INIT {
            vmm.shell().call_at_appy_time(0, 0, |_: &ScriptDevice, vmm, _| note(vmm, "in_appy")).unwrap();
        }
        Carry::Clear
    })
    .run();
    run.assert_ok();
    run.trace().expect_in_order(&[
        json!({"kind": "appy_scheduled", "device": "SCRIPT"}),
        noted("in_appy"),
        json!({"kind": "appy_dispatched", "device": "SCRIPT", "vm": SYS, "context": "appy", "result": "clear"}),
    ]);
}

// ---- ring 3 ----------------------------------------------------------------------------------

fn ring3_run() -> vmm_testkit::Run {
    let run = Scenario::new(
        r#"
        [386Enh]
        device = ["SCRIPT"]
        [windows]
        load = ["ORDERAPP"]
    "#,
    )
    .script_api(call_back_nested)
    .module::<OrderApp>()
    .module::<OrderDll>()
    .run();
    run.assert_ok();
    run
}

#[test]
fn program_started_precedes_the_programs_first_output_and_program_ended_follows_its_last() {
    let run = ring3_run();
    run.trace().expect_in_order(&[
        json!({"kind": "program_started", "module": "ORDERAPP"}),
        printed("first"),
        printed("last"),
        json!({"kind": "program_ended", "module": "ORDERAPP", "reason": "exited"}),
        // The window it never destroyed goes with it, after its end.
        json!({"kind": "window_destroyed", "class": "OrderApp"}),
    ]);
}

#[test]
fn a_far_call_record_follows_what_the_called_code_wrote() {
    let run = ring3_run();
    let t = run.trace();
    // LoadLibrary: LibMain runs before the module_loaded record.
    t.expect_in_order(&[
        printed("first"),
        printed("libmain"),
        json!({"kind": "module_loaded", "module": "ORDERDLL"}),
        printed("speak 1"),
        json!({"kind": "far_call", "module": "ORDERDLL", "export": "Speak", "isr": false, "result": 1}),
        json!({"kind": "int2f", "ax": W386_GET_DEVICE_API, "bx": SCRIPT_ID}),
    ]);
}

#[test]
fn nest_exec_records_are_moments_around_the_nested_code() {
    let run = ring3_run();
    run.trace().expect_in_order(&[
        noted("before_nest"),
        json!({"kind": "nest_exec", "action": "begin", "vm": SYS, "depth": 1}),
        printed("speak 2"),
        json!({"kind": "far_call", "module": "ORDERDLL", "export": "Speak", "result": 2}),
        json!({"kind": "nest_exec", "action": "end", "vm": SYS, "depth": 0}),
        noted("after_nest"),
        json!({"kind": "api_call", "device": "SCRIPT", "mode": "pm"}),
    ]);
}

#[test]
fn message_sent_precedes_the_window_procedure_and_its_far_call_record() {
    let run = ring3_run();
    run.trace().expect_in_order(&[
        json!({"kind": "window_created", "class": "OrderApp"}),
        json!({"kind": "message_sent", "msg": WM_USER}),
        printed("wndproc"),
        json!({"kind": "far_call", "module": "ORDERAPP", "export": "WndProc"}),
        printed("last"),
    ]);
}

// ---- moments that set something off --------------------------------------------------------

/// A DOS program that prints `dos` and exits.
struct OrderDos;

impl Module for OrderDos {
    const MODULE: ModuleDef = ModuleDef::dos_program("ORDERDOS");

    fn create(_: &Ring3<'_>) -> Result<Self, String> {
        Ok(OrderDos)
    }

    fn start(&self, r3: &Ring3<'_>, _args: &str) -> Step {
        r3.print("dos");
        Step::exit(0)
    }
}

#[test]
fn vm_switch_precedes_the_task_switch_hooks_and_a_dos_vm_precedes_its_program() {
    let run = Scenario::new(
        r#"
        [386Enh]
        device = ["SCRIPT"]
        [[vm]]
        name = "DOS1"
        program = "ORDERDOS"
    "#,
    )
    .script(|_, vmm, msg| {
        if msg.message == DEVICE_INIT {
            vmm.call_when_task_switched(|_: &ScriptDevice, vmm, old, new| {
                vmm.trace_note("switched", &[("from", old.0.into()), ("to", new.0.into())]).unwrap();
            })
            .unwrap();
        }
        Carry::Clear
    })
    .module::<OrderDos>()
    .run();
    run.assert_ok();
    run.trace().expect_in_order(&[
        json!({"kind": "control", "device": "SCRIPT", "message": "VM_Init", "vm": DOS1}),
        json!({"kind": "vm_created", "vm": DOS1}),
        json!({"kind": "program_started", "vm": DOS1, "module": "ORDERDOS"}),
        json!({"kind": "vm_switch", "from": SYS, "vm": DOS1}),
        json!({"kind": "note", "note": "switched", "fields": {"from": SYS, "to": DOS1}}),
        printed("dos"),
        json!({"kind": "program_ended", "vm": DOS1, "module": "ORDERDOS"}),
        json!({"kind": "control", "device": "SCRIPT", "message": "Destroy_VM", "vm": DOS1}),
        json!({"kind": "vm_switch", "from": DOS1, "vm": SYS}),
        json!({"kind": "note", "note": "switched", "fields": {"from": DOS1, "to": SYS}}),
        json!({"kind": "vm_destroyed", "vm": DOS1}),
    ]);
}

#[test]
fn shell_message_precedes_the_callback_that_gets_the_answer() {
    let run = Scenario::new(
        r#"
        [386Enh]
        device = ["*SHELL", "SCRIPT"]
    "#,
    )
    .script(|_, vmm, msg| {
        if msg.message == DEVICE_INIT {
            let sys = vmm.get_sys_vm_handle();
            vmm.shell()
                .shell_message(sys, MB_OK, "Hello", None, |_: &ScriptDevice, vmm, _| note(vmm, "answered"))
                .unwrap();
        }
        Carry::Clear
    })
    .run();
    run.assert_ok();
    run.trace().expect_in_order(&[
        json!({"kind": "event_scheduled", "device": "SHELL", "callback": "SHELL_Message"}),
        json!({"kind": "shell_message", "service": "SHELL_Message", "text": "Hello", "answer": IDOK}),
        noted("answered"),
        json!({"kind": "event_dispatched", "device": "SHELL", "callback": "SHELL_Message"}),
    ]);
}

#[test]
fn fatal_error_is_written_inside_the_call_that_ends_in_it() {
    let run = Scenario::new(
        r#"
        [386Enh]
        device = ["SCRIPT"]
    "#,
    )
    .script(|_, vmm, msg| {
        if msg.message == DEVICE_INIT {
            note(vmm, "before_fatal");
            vmm.fatal_error_handler("stop here", 0);
        }
        Carry::Clear
    })
    .run();
    run.expect_error();
    run.trace().expect_in_order(&[
        noted("before_fatal"),
        json!({"kind": "fatal_error", "device": "SCRIPT", "message": "stop here"}),
        json!({"kind": "control", "device": "SCRIPT", "message": "Device_Init", "result": "fatal_exit"}),
        json!({"kind": "phase", "phase": "system_exit"}),
        json!({"kind": "phase", "phase": "stopped"}),
    ]);
}

#[test]
fn a_call_record_carries_the_time_it_returned_when_the_code_blocked() {
    // DOS1's event waits on a semaphore at 10 ms; an interrupt at 60 ms
    // signals it, and the callback returns then.
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
                    note(vmm, "waiting");
                    vmm.wait_semaphore(SemaphoreHandle(dev.state.borrow()[0]), 0).unwrap();
                    note(vmm, "woke");
                })
                .unwrap();
            })
            .unwrap();
            vmm.register_interrupt("signal", |dev: &ScriptDevice, vmm, _| {
                vmm.signal_semaphore(SemaphoreHandle(dev.state.borrow()[0])).unwrap();
            })
            .unwrap();
        }
        Carry::Clear
    })
    .run();
    run.assert_ok();
    run.trace().expect_in_order(&[
        json!({"kind": "note", "note": "waiting", "t": 10}),
        json!({"kind": "semaphore", "action": "block", "vm": DOS1, "t": 10}),
        json!({"kind": "interrupt", "name": "signal", "t": 60}),
        json!({"kind": "note", "note": "woke", "t": 60}),
        // Written at 60 ms, but the event waited no time before it ran:
        // `waited_ns` ends at dispatch, not at the return.
        json!({"kind": "event_dispatched", "device": "SCRIPT", "event": "vm", "target": DOS1, "t": 60, "waited_ns": 0}),
    ]);
}
