//! Fault hooks of protected-mode and ring-0 code and `Simulate_Int` in
//! protected mode (virtual-hardware reference, sections 4.1 and 4.3; the
//! protected-mode side of scenarios 30 and 36): a Rust Windows
//! application's `Ring3::fault` offered to `Hook_PM_Fault` hooks before
//! and behind the VM's own handler, crashing the application when nothing
//! handles it; a device's page fault in ring 0 offered to `Hook_VMM_Fault`
//! hooks at interrupt time; `Get_Fault_Hook_Addrs`; `Unhook_PM_Fault` /
//! `Unhook_VMM_Fault`; `Simulate_Int` and a Rust `INT n` in protected mode
//! reaching the PM vector (a PM call-back, or a Rust handler) and not the
//! V86 hooks; the same `Ring3::fault` in a DOS VM as a V86 fault; hooks
//! left at a dynamic device's unload.

use std::cell::RefCell;
use std::collections::VecDeque;

use vmm_plugin_api::prelude::*;
use vmm_testkit::{Run, Scenario, ScriptDevice, json};

use crate::common::{DOS1, SYS, notes, outputs};

// ---- the ring-3 side: FAULTAPP, a Windows application -------------------------------------

/// A Windows application whose command line is a list of steps separated
/// by `;`: `install N` (its export 1 becomes the handler of vector N, hex,
/// through `Ring3::set_int_vector`), `dllhandler N` (the same with
/// FAULTDLL's export 1; `dllhandler N faulting`: its export 2), `fault N` (`Ring3::fault` of
/// exception N: 0, 3, 6 or D; prints the result and AX; a fault nothing
/// handled ends the step), `int N` (`Ring3::int`; prints the result and
/// AX), `sleep MS`, `exit`. Export 1, the handler,
/// prints `handler` and sets AX = 0xF00D.
struct FaultApp {
    steps: RefCell<VecDeque<String>>,
}

impl FaultApp {
    fn run(&self, r3: &Ring3<'_>) -> Step {
        loop {
            let Some(step) = self.steps.borrow_mut().pop_front() else { return Step::exit(0) };
            let words: Vec<&str> = step.split_whitespace().collect();
            let hex = |i: usize| words.get(i).and_then(|w| u32::from_str_radix(w, 16).ok()).unwrap_or(0);
            match words[0] {
                "install" => {
                    let handler = r3.export_address(1).unwrap();
                    r3.set_int_vector(hex(1) as u8, Some(handler)).unwrap();
                }
                "dllhandler" => {
                    // An interrupt handler called at event time lives in a
                    // DLL's FIXED segment (KB Q72899).
                    let dll = r3.load_library("FAULTDLL").unwrap();
                    let handler = r3.get_proc_address_ordinal(dll, 1 + u16::from(words.len() > 2)).unwrap();
                    r3.set_int_vector(hex(1) as u8, Some(handler)).unwrap();
                }
                "fault" => {
                    let e = match hex(1) {
                        0 => Exception::DivideError,
                        3 => Exception::Breakpoint,
                        6 => Exception::InvalidOpcode,
                        _ => Exception::GeneralProtection,
                    };
                    r3.regs().set_ax(0x1111);
                    let r = r3.fault(e);
                    r3.print(&format!("fault {:02X}: {:?} ax={:04X}", e.vector(), r.is_ok(), r3.regs().ax()));
                    if r.is_err() {
                        // Crashed when the step returns: nothing after this runs.
                        return Step::yield_now();
                    }
                }
                "int" => {
                    r3.regs().set_ax(0x2222);
                    let r = r3.int(hex(1) as u8);
                    r3.print(&format!("int {:02X}: {:?} ax={:04X}", hex(1), r.is_ok(), r3.regs().ax()));
                }
                "sleep" => return Step::sleep(words.get(1).and_then(|w| w.parse().ok()).unwrap_or(0)),
                "exit" => return Step::exit(0),
                other => r3.print(&format!("unknown step {other}")),
            }
        }
    }
}

impl Module for FaultApp {
    const MODULE: ModuleDef = ModuleDef::windows_app("FAULTAPP")
        .segments(&[Segment::fixed("_TEXT")])
        .exports(&[Export::new("Handler", 1, 0, 0)]);

    fn create(_: &Ring3<'_>) -> Result<Self, String> {
        Ok(FaultApp { steps: RefCell::new(VecDeque::new()) })
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
            r3.print("handler");
            r3.regs().set_ax(0xF00D);
        }
        0
    }
}

/// FAULTDLL: export 1 in a FIXED segment, an interrupt handler that sets
/// AX = 0xD11D (called at event time it may call no API but PostMessage);
/// export 2 raises a #GP (`Ring3::fault`) and sets AX = 0xDEAD when
/// nothing handled it.
struct FaultDll;

impl Module for FaultDll {
    const MODULE: ModuleDef = ModuleDef::windows_dll("FAULTDLL")
        .segments(&[Segment::fixed("_TEXT")])
        .exports(&[Export::new("IntHandler", 1, 0, 0), Export::new("FaultingHandler", 2, 0, 0)]);

    fn create(_: &Ring3<'_>) -> Result<Self, String> {
        Ok(FaultDll)
    }

    fn start(&self, _r3: &Ring3<'_>, _args: &str) -> Step {
        // A DLL is not started.
        Step::exit(1)
    }

    fn call(&self, r3: &Ring3<'_>, ordinal: u16, _args: PascalArgs<'_>) -> u32 {
        if ordinal == 1 {
            r3.regs().set_ax(0xD11D);
        }
        if ordinal == 2 {
            let r = r3.fault(Exception::GeneralProtection);
            r3.regs().set_ax(if r.is_ok() { 1 } else { 0xDEAD });
        }
        0
    }
}

/// A machine running Windows `windows` with SCRIPT (`control`) and
/// FAULTAPP started with `steps`, and the manifest's `extra` lines.
fn machine(
    windows: &str,
    steps: &str,
    extra: &str,
    control: impl Fn(&ScriptDevice, &Vmm<'_>, ControlMessage) -> Carry + 'static,
) -> Run {
    let load = if steps.is_empty() { String::new() } else { format!("[windows]\nload = [\"FAULTAPP {steps}\"]\n") };
    Scenario::new(&format!(
        "[machine]\nuntil = 200\nwindows = \"{windows}\"\n[386Enh]\ndevice = [\"SCRIPT\"]\n{load}{extra}"
    ))
    .module::<FaultApp>()
    .module::<FaultDll>()
    .script(control)
    .run()
}

/// A PM fault hook of SCRIPT on `vector` that notes its call and handles
/// the fault with AX = `ax` (or passes it on when `ax` is 0).
fn pm_hook(vmm: &Vmm<'_>, vector: u8, ax: u16) -> FaultHookHandle {
    vmm.hook_pm_fault(vector, move |dev: &ScriptDevice, vmm: &Vmm<'_>, n, vm| {
        dev.note(vmm, format!("pm hook {ax:04X}: fault {n:02X} vm={:#x}", vm.0));
        if ax == 0 {
            return HookAction::PassOn;
        }
        vmm.client(vm).unwrap().set_ax(ax);
        HookAction::Consume
    })
    .unwrap()
}

fn fault_hooks(run: &Run) -> Vec<(String, String, bool)> {
    run.trace()
        .matching(json!({"kind": "fault_hook"}))
        .into_iter()
        .map(|r| {
            (r["mode"].as_str().unwrap().to_string(), r["stage"].as_str().unwrap().to_string(), r["handled"] == true)
        })
        .collect()
}

// ---- protected-mode faults ----------------------------------------------------------------------

#[test]
fn a_pm_fault_nothing_handles_crashes_the_application() {
    let run = machine("3.1", "fault D; exit", "", |_, _, _| Carry::Clear);
    run.assert_ok();
    assert_eq!(outputs(&run), ["fault 0D: false ax=1111"]);
    let t = run.trace();
    t.expect_in_order(&[
        json!({"kind": "pm_fault", "vm": SYS, "vector": 13, "module": "FAULTAPP"}),
        json!({"kind": "program_ended", "module": "FAULTAPP", "reason": "crashed"}),
    ]);
    assert!(fault_hooks(&run).is_empty());
    // The system VM goes on: only the application ended.
    t.expect_none(json!({"kind": "vm_destroyed", "vm": SYS}));
}

#[test]
fn a_pm_fault_hook_from_sys_critical_init_sees_only_what_the_vm_has_no_handler_for() {
    // Scenario 36 in protected mode. Early hook (Sys_Critical_Init), no
    // handler of the application's: the hook handles it.
    let early = |_: &ScriptDevice, vmm: &Vmm<'_>, msg: ControlMessage| {
        if msg.message == SYS_CRITICAL_INIT {
            pm_hook(vmm, 0x0D, 0xBEEF);
        }
        Carry::Clear
    };
    let run = machine("3.1", "fault D", "", early);
    run.assert_ok();
    assert_eq!(outputs(&run), ["fault 0D: true ax=BEEF"]);
    assert_eq!(fault_hooks(&run), [("pm".into(), "behind".into(), true)]);
    assert_eq!(notes(&run), [format!("pm hook BEEF: fault 0D vm={SYS:#x}")]);
    run.trace().expect_in_order(&[json!({"kind": "program_ended", "module": "FAULTAPP", "reason": "exited"})]);

    // Early hook, the application installed a handler: the hook never sees it.
    let run = machine("3.1", "install D; fault D", "", early);
    run.assert_ok();
    assert_eq!(outputs(&run), ["handler", "fault 0D: true ax=F00D"]);
    assert!(fault_hooks(&run).is_empty());

    // Late hook (Init_Complete): first, even though the application has a handler.
    let late = |_: &ScriptDevice, vmm: &Vmm<'_>, msg: ControlMessage| {
        if msg.message == INIT_COMPLETE {
            pm_hook(vmm, 0x0D, 0xCCCC);
        }
        Carry::Clear
    };
    let run = machine("3.1", "install D; fault D", "", late);
    run.assert_ok();
    assert_eq!(outputs(&run), ["fault 0D: true ax=CCCC"]);
    assert_eq!(fault_hooks(&run), [("pm".into(), "front".into(), true)]);
}

#[test]
fn pm_fault_hooks_are_called_newest_first_and_pass_on_with_carry() {
    // Two late hooks on 06h: the newer passes (carry set), the older
    // handles it. A V86 fault hook on the same number never sees it.
    let run = machine("3.1", "fault 6", "", |_, vmm, msg| {
        if msg.message == DEVICE_INIT {
            vmm.hook_v86_fault(0x06, |_: &ScriptDevice, _: &Vmm<'_>, _, _| HookAction::Consume).unwrap();
            pm_hook(vmm, 0x06, 0x0A0A);
            pm_hook(vmm, 0x06, 0);
        }
        Carry::Clear
    });
    run.assert_ok();
    assert_eq!(
        notes(&run),
        [format!("pm hook 0000: fault 06 vm={SYS:#x}"), format!("pm hook 0A0A: fault 06 vm={SYS:#x}")]
    );
    assert_eq!(fault_hooks(&run), [("pm".into(), "front".into(), false), ("pm".into(), "front".into(), true)]);
    assert_eq!(outputs(&run), ["fault 06: true ax=0A0A"]);
}

#[test]
fn a_pm_fault_goes_to_the_pm_vector_a_device_set_to_a_call_back() {
    // Set_PM_Int_Vector(00h) to a PM call-back before Sys_VM_Init: every
    // VM's default. The divide error enters the call-back with an
    // interrupt frame; it answers in AX and returns with Simulate_Iret.
    let run = machine("3.1", "fault 0", "", |_, vmm, msg| {
        if msg.message == DEVICE_INIT {
            let cb = vmm
                .allocate_pm_call_back(0xD1, |dev: &ScriptDevice, vmm: &Vmm<'_>, e: CallBackEntry| {
                    dev.note(vmm, format!("call-back ref={:X}", e.ref_data));
                    vmm.client(e.vm).unwrap().set_ax(0x0D1F);
                    vmm.simulate_iret().unwrap();
                })
                .unwrap();
            vmm.set_pm_int_vector(0x00, cb).unwrap();
        }
        Carry::Clear
    });
    run.assert_ok();
    assert_eq!(notes(&run), ["call-back ref=D1"]);
    assert_eq!(outputs(&run), ["fault 00: true ax=0D1F"]);
    assert_eq!(run.trace().count(json!({"kind": "call_back", "vm": SYS, "device": "SCRIPT"})), 1);
    assert_eq!(run.trace().count(json!({"kind": "pm_fault"})), 0);
}

#[test]
fn a_pm_fault_every_hook_passes_on_still_crashes_the_application() {
    let run = machine("3.1", "fault 3", "", |_, vmm, msg| {
        if msg.message == SYS_CRITICAL_INIT || msg.message == INIT_COMPLETE {
            pm_hook(vmm, 0x03, 0);
        }
        Carry::Clear
    });
    run.assert_ok();
    assert_eq!(fault_hooks(&run), [("pm".into(), "front".into(), false), ("pm".into(), "behind".into(), false)]);
    assert_eq!(run.trace().count(json!({"kind": "pm_fault", "vector": 3})), 1);
    assert_eq!(run.trace().count(json!({"kind": "program_ended", "reason": "crashed"})), 1);
}

// ---- hook management ---------------------------------------------------------------------------

#[test]
fn get_fault_hook_addrs_names_the_first_hook_of_each_mode_and_unhook_takes_it_out() {
    let run = machine("4.0", "", "", |_, vmm, msg| {
        if msg.message == DEVICE_INIT {
            let pass = |_: &ScriptDevice, _: &Vmm<'_>, _: u8, _: VmHandle| HookAction::PassOn;
            let none = vmm.get_fault_hook_addrs(0x0D).unwrap();
            let v86 = vmm.hook_v86_fault(0x0D, pass).unwrap();
            let pm1 = vmm.hook_pm_fault(0x0D, pass).unwrap();
            let pm2 = vmm.hook_pm_fault(0x0D, pass).unwrap();
            let vmm_hook = vmm.hook_vmm_fault(0x0D, pass).unwrap();
            let all = vmm.get_fault_hook_addrs(0x0D).unwrap();
            note_eq(vmm, "none", none == FaultHooks::default());
            note_eq(vmm, "all", all == FaultHooks { v86: Some(v86), pm: Some(pm2), vmm: Some(vmm_hook) });
            vmm.unhook_fault(FaultMode::Pm, 0x0D, pm2).unwrap();
            note_eq(vmm, "pm1 first", vmm.get_fault_hook_addrs(0x0D).unwrap().pm == Some(pm1));
            // A PM hook's handle is not a VMM hook: each mode is its own chain.
            dev_note(vmm, format!("wrong mode: {:?}", vmm.unhook_fault(FaultMode::Vmm, 0x0D, pm1)));
            vmm.unhook_fault(FaultMode::Vmm, 0x0D, vmm_hook).unwrap();
            vmm.unhook_fault(FaultMode::V86, 0x0D, v86).unwrap();
            dev_note(vmm, format!("again: {:?}", vmm.unhook_fault(FaultMode::V86, 0x0D, v86)));
            let left = vmm.get_fault_hook_addrs(0x0D).unwrap();
            note_eq(vmm, "pm1 only", left == FaultHooks { v86: None, pm: Some(pm1), vmm: None });
            dev_note(vmm, format!("2: {:?} {:?}", vmm.hook_pm_fault(2, pass).err(), vmm.get_fault_hook_addrs(2).err()));
            dev_note(vmm, format!("50: {:?}", vmm.hook_vmm_fault(0x50, pass).err()));
        }
        Carry::Clear
    });
    run.assert_ok();
    assert_eq!(
        notes(&run),
        [
            "none true".to_string(),
            "all true".into(),
            "pm1 first true".into(),
            format!("wrong mode: {:?}", Err::<(), _>(VmmError::NOT_FOUND)),
            format!("again: {:?}", Err::<(), _>(VmmError::NOT_FOUND)),
            "pm1 only true".into(),
            format!("2: {:?} {:?}", Some(VmmError::FAILED), Some(VmmError::FAILED)),
            format!("50: {:?}", Some(VmmError::FAILED)),
        ]
    );
}

fn dev_note(vmm: &Vmm<'_>, text: String) {
    vmm.out_debug_string(&text);
}

fn note_eq(vmm: &Vmm<'_>, what: &str, ok: bool) {
    dev_note(vmm, format!("{what} {ok}"));
}

#[test]
fn unhooking_a_pm_fault_hook_is_windows_95_only() {
    let run = machine("3.1", "", "", |_, vmm, msg| {
        if msg.message == DEVICE_INIT {
            let h = vmm.hook_pm_fault(0x0D, |_: &ScriptDevice, _: &Vmm<'_>, _, _| HookAction::PassOn).unwrap();
            let _ = vmm.unhook_fault(FaultMode::Pm, 0x0D, h);
        }
        Carry::Clear
    });
    assert_eq!(run.trace().count(json!({"kind": "fatal_error"})), 1, "{:?}", run.trace().tail(5));
}

// ---- ring-0 faults -------------------------------------------------------------------------------

/// SCRIPT reads linear address 0xDEAD0000 (inside no heap block) from an
/// event at 10 ms; `hook` installs its VMM fault hooks at Device_Init.
fn ring0_fault(hook: impl Fn(&Vmm<'_>) + 'static) -> Run {
    machine("3.1", "", "[[interrupt]]\nname = \"go\"\nat = 10\n", move |_, vmm, msg| {
        if msg.message == DEVICE_INIT {
            hook(vmm);
            vmm.register_interrupt("go", |_: &ScriptDevice, vmm, _| {
                let sys = vmm.get_sys_vm_handle();
                vmm.schedule_vm_event(sys, |dev: &ScriptDevice, vmm, _| {
                    let mut buf = [0u8; 4];
                    let r = vmm.mem_read(0xDEAD_0000, &mut buf);
                    dev.note(vmm, format!("mem_read {r:?}"));
                })
                .unwrap();
            })
            .unwrap();
        }
        Carry::Clear
    })
}

#[test]
fn a_devices_page_fault_in_ring_0_goes_to_the_vmm_fault_hooks_at_interrupt_time() {
    let run = ring0_fault(|vmm| {
        vmm.hook_vmm_fault_at(0x0E, |dev: &ScriptDevice, vmm: &Vmm<'_>, n, vm, address| {
            // Only asynchronous services: a synchronous one is refused.
            let sync = vmm.get_pm_int_vector(0x31).err();
            dev.note(vmm, format!("vmm hook {n:02X} vm={:#x} at {address:08X}, sync service: {sync:?}", vm.0));
            HookAction::Consume
        })
        .unwrap();
    });
    run.assert_ok();
    assert_eq!(
        notes(&run),
        [
            format!("vmm hook 0E vm={SYS:#x} at DEAD0000, sync service: {:?}", Some(VmmError::VIOLATION)),
            format!("mem_read {:?}", Err::<(), _>(VmmError::FAILED)),
        ]
    );
    assert_eq!(fault_hooks(&run), [("vmm".into(), "front".into(), true)]);
    let t = run.trace();
    assert_eq!(t.count(json!({"kind": "violation", "code": "SYNC_SERVICE_AT_INTERRUPT"})), 1);
    assert_eq!(t.count(json!({"kind": "violation", "code": "BAD_POINTER"})), 0, "the hook handled the fault");
}

#[test]
fn a_vmm_fault_hook_from_sys_critical_init_still_sees_a_devices_page_fault() {
    // The VMM has no handling of its own for a device's bad pointer, so a
    // hook behind it (installed during Sys_Critical_Init) is offered the
    // fault too, after the front hooks passed it on.
    let run = machine("3.1", "", "[[interrupt]]\nname = \"go\"\nat = 10\n", |_, vmm, msg| {
        if msg.message == SYS_CRITICAL_INIT {
            vmm.hook_vmm_fault(0x0E, |_: &ScriptDevice, _: &Vmm<'_>, _, _| HookAction::Consume).unwrap();
        }
        if msg.message == DEVICE_INIT {
            vmm.hook_vmm_fault(0x0E, |_: &ScriptDevice, _: &Vmm<'_>, _, _| HookAction::PassOn).unwrap();
            vmm.register_interrupt("go", |_: &ScriptDevice, vmm, _| {
                let sys = vmm.get_sys_vm_handle();
                vmm.schedule_vm_event(sys, |dev: &ScriptDevice, vmm, _| {
                    let r = vmm.mem_write(0, &[1, 2]);
                    dev.note(vmm, format!("mem_write {r:?}"));
                })
                .unwrap();
            })
            .unwrap();
        }
        Carry::Clear
    });
    run.assert_ok();
    assert_eq!(notes(&run), [format!("mem_write {:?}", Err::<(), _>(VmmError::FAILED))]);
    assert_eq!(fault_hooks(&run), [("vmm".into(), "front".into(), false), ("vmm".into(), "behind".into(), true)]);
    assert_eq!(run.violations(), 0);
}

#[test]
fn a_ring_0_page_fault_no_hook_handles_is_the_bad_pointer_violation() {
    // A hook that passes it on, and none at all: the access is refused
    // with the violation, as without fault hooks.
    for pass in [true, false] {
        let run = ring0_fault(move |vmm| {
            if pass {
                vmm.hook_vmm_fault(0x0E, |_: &ScriptDevice, _: &Vmm<'_>, _, _| HookAction::PassOn).unwrap();
            }
        });
        assert_eq!(notes(&run), [format!("mem_read {:?}", Err::<(), _>(VmmError::VIOLATION))]);
        assert_eq!(run.trace().count(json!({"kind": "violation", "code": "BAD_POINTER", "service": "mem_read"})), 1);
        assert_eq!(fault_hooks(&run).len(), usize::from(pass));
    }
}

// ---- Simulate_Int in protected mode -------------------------------------------------------------

/// SCRIPT hooks V86 interrupt 60h (noting it), runs `init` at Device_Init,
/// and at 10 ms in a system-VM event simulates INT `vector` inside a
/// nested execution block and resumes the VM.
fn simulate_pm(steps: &str, vector: u8, init: impl Fn(&Vmm<'_>) + 'static) -> Run {
    machine("3.1", steps, "[[interrupt]]\nname = \"go\"\nat = 10\n", move |_, vmm, msg| {
        if msg.message == DEVICE_INIT {
            vmm.hook_v86_int_chain(vector, |dev: &ScriptDevice, vmm: &Vmm<'_>, n, _| {
                dev.note(vmm, format!("v86 hook {n:02X}"));
                HookAction::Consume
            })
            .unwrap();
            init(vmm);
            vmm.register_interrupt("go", move |_: &ScriptDevice, vmm, _| {
                let sys = vmm.get_sys_vm_handle();
                vmm.schedule_vm_event(sys, move |dev: &ScriptDevice, vmm, _| {
                    let c = vmm.client(sys).unwrap();
                    let before = c.get();
                    c.set_ax(0x1234);
                    vmm.begin_nest_exec().unwrap();
                    let r = vmm.simulate_int(vector).and_then(|_| vmm.resume_exec());
                    let ax = c.ax();
                    vmm.end_nest_exec().unwrap();
                    let after = c.get();
                    let back = (before.cs, before.eip, before.esp) == (after.cs, after.eip, after.esp);
                    dev.note(vmm, format!("simulate_int {r:?} ax={ax:04X} back={back}"));
                })
                .unwrap();
            })
            .unwrap();
        }
        Carry::Clear
    })
}

#[test]
fn simulate_int_in_protected_mode_enters_the_pm_vector_and_not_the_v86_hooks() {
    // The PM vector is a PM call-back: it runs (with the interrupt frame
    // on the stack, which it pops with Simulate_Iret); the V86 hook of the
    // same vector does not see the interrupt.
    let run = simulate_pm("", 0x60, |vmm| {
        let cb = vmm
            .allocate_pm_call_back(0x60, |dev: &ScriptDevice, vmm: &Vmm<'_>, e: CallBackEntry| {
                let c = vmm.client(e.vm).unwrap();
                dev.note(vmm, format!("pm call-back ax={:04X}", c.ax()));
                c.set_ax(0x6060);
                vmm.simulate_iret().unwrap();
            })
            .unwrap();
        vmm.set_pm_int_vector(0x60, cb).unwrap();
    });
    run.assert_ok();
    assert_eq!(notes(&run), ["pm call-back ax=1234", "simulate_int Ok(()) ax=6060 back=true"]);
    run.trace().expect_none(json!({"kind": "int_hook"}));
}

#[test]
fn simulate_int_in_protected_mode_reflects_an_unset_pm_vector_to_v86() {
    // Still the VMM's default (Get_PM_Int_Vector: ZF): reflected to V86,
    // where the V86 hook sees it (and consumes it).
    let run = simulate_pm("", 0x60, |_| {});
    run.assert_ok();
    assert_eq!(notes(&run), ["v86 hook 60", "simulate_int Ok(()) ax=1234 back=true"]);
    assert_eq!(run.trace().count(json!({"kind": "int_hook", "vector": 0x60, "vm": SYS, "passed": false})), 1);
    // A device that put back the default it read (VDMAD's unhook) leaves
    // the reflection in place.
    let run = simulate_pm("", 0x60, |vmm| {
        let (old, _) = vmm.get_pm_int_vector(0x60).unwrap();
        vmm.set_pm_int_vector(0x60, old).unwrap();
    });
    run.assert_ok();
    assert_eq!(notes(&run), ["v86 hook 60", "simulate_int Ok(()) ax=1234 back=true"]);
}

#[test]
fn simulate_int_in_protected_mode_calls_the_rust_handler_the_application_installed() {
    // FAULTAPP installs FAULTDLL's export as the handler of 61h and
    // sleeps; the device's Simulate_Int(61h) in the system VM enters it
    // when the VM resumes, and its return is the IRET.
    let run = simulate_pm("dllhandler 61; sleep 50", 0x61, |_| {});
    run.assert_ok();
    assert_eq!(notes(&run), ["simulate_int Ok(()) ax=D11D back=true"]);
    let call = json!({"kind": "far_call", "vm": SYS, "module": "FAULTDLL", "export": "IntHandler", "isr": true});
    assert_eq!(run.trace().count(call), 1);
    assert_eq!(run.violations(), 0);
}

#[test]
fn an_int_of_protected_mode_code_goes_to_its_pm_vector_before_any_v86_hook() {
    // The application's own INT 62h: a device's PM call-back in the PM
    // vector takes it (the V86 hook of 62h never sees it); once the
    // application installs its own handler in the same (one) PM vector,
    // its handler takes it: the last write wins (docs/semantics.md).
    // INT 63h, whose PM vector is the default, is reflected to V86: the
    // V86 hook consumes it.
    let run = machine("3.1", "int 62; install 62; int 62; int 63", "", |_, vmm, msg| {
        if msg.message == DEVICE_INIT {
            for v in [0x62, 0x63] {
                vmm.hook_v86_int_chain(v, |dev: &ScriptDevice, vmm: &Vmm<'_>, n, vm| {
                    dev.note(vmm, format!("v86 hook {n:02X}"));
                    vmm.client(vm).unwrap().set_ax(0x8686);
                    HookAction::Consume
                })
                .unwrap();
            }
            let cb = vmm
                .allocate_pm_call_back(0, |dev: &ScriptDevice, vmm: &Vmm<'_>, e: CallBackEntry| {
                    let c = vmm.client(e.vm).unwrap();
                    dev.note(vmm, format!("pm call-back ax={:04X}", c.ax()));
                    c.set_ax(0x6262);
                    vmm.simulate_iret().unwrap();
                })
                .unwrap();
            vmm.set_pm_int_vector(0x62, cb).unwrap();
        }
        Carry::Clear
    });
    run.assert_ok();
    assert_eq!(notes(&run), ["pm call-back ax=2222", "v86 hook 63"]);
    assert_eq!(outputs(&run), ["int 62: true ax=6262", "handler", "int 62: true ax=F00D", "int 63: true ax=8686"]);

    // Without a device's PM vector the application's handler takes it.
    let run = machine("3.1", "install 62; int 62", "", |_, vmm, msg| {
        if msg.message == DEVICE_INIT {
            vmm.hook_v86_int_chain(0x62, |_: &ScriptDevice, _: &Vmm<'_>, _, _| HookAction::Consume).unwrap();
        }
        Carry::Clear
    });
    run.assert_ok();
    assert_eq!(outputs(&run), ["handler", "int 62: true ax=F00D"]);
    run.trace().expect_none(json!({"kind": "int_hook"}));
}

// ---- the same call in V86 mode ---------------------------------------------------------------

/// FAULTAPP's steps as a Rust DOS program (V86 code in a DOS VM).
struct FaultDos(FaultApp);

impl Module for FaultDos {
    const MODULE: ModuleDef = ModuleDef::dos_program("FAULTDOS")
        .segments(&[Segment::fixed("_TEXT")])
        .exports(&[Export::new("Handler", 1, 0, 0)]);

    fn create(r3: &Ring3<'_>) -> Result<Self, String> {
        FaultApp::create(r3).map(FaultDos)
    }

    fn start(&self, r3: &Ring3<'_>, args: &str) -> Step {
        self.0.start(r3, args)
    }

    fn resume(&self, r3: &Ring3<'_>, wake: Wake) -> Step {
        self.0.resume(r3, wake)
    }
}

fn dos_machine(control: impl Fn(&ScriptDevice, &Vmm<'_>, ControlMessage) -> Carry + 'static) -> Run {
    Scenario::new(
        "[machine]\nuntil = 200\n[386Enh]\ndevice = [\"SCRIPT\"]\n[[vm]]\nname = \"DOS1\"\nprogram = \"FAULTDOS\"\nargs = \"fault          D\"\n",
    )
    .module::<FaultDos>()
    .script(control)
    .run()
}

#[test]
fn ring3_fault_in_a_dos_vm_is_a_v86_fault() {
    // No hook: the V86 default, the DOS VM's program ends and the VM goes.
    let run = dos_machine(|_, _, _| Carry::Clear);
    run.assert_ok();
    assert_eq!(outputs(&run), ["fault 0D: false ax=1111"]);
    let t = run.trace();
    t.expect_in_order(&[
        json!({"kind": "v86_fault", "vm": DOS1, "vector": 13}),
        json!({"kind": "program_ended", "module": "FAULTDOS", "reason": "crashed"}),
    ]);
    assert_eq!(t.count(json!({"kind": "pm_fault"})), 0);

    // A Hook_V86_Fault hook handles it; a Hook_PM_Fault hook never sees it.
    let run = dos_machine(|_, vmm, msg| {
        if msg.message == DEVICE_INIT {
            pm_hook(vmm, 0x0D, 0x0BAD);
            vmm.hook_v86_fault(0x0D, |_: &ScriptDevice, vmm: &Vmm<'_>, _, vm| {
                vmm.client(vm).unwrap().set_ax(0x0086);
                HookAction::Consume
            })
            .unwrap();
        }
        Carry::Clear
    });
    run.assert_ok();
    assert_eq!(outputs(&run), ["fault 0D: true ax=0086"]);
    assert_eq!(fault_hooks(&run), [("v86".into(), "front".into(), true)]);
    run.trace().expect_in_order(&[json!({"kind": "program_ended", "module": "FAULTDOS", "reason": "exited"})]);

    // The VM's handler in V86: a call-back a device put in its V86 vector.
    let run = dos_machine(|_, vmm, msg| {
        if msg.message == DEVICE_INIT {
            let cb = vmm
                .allocate_v86_call_back(0, |_: &ScriptDevice, vmm: &Vmm<'_>, e: CallBackEntry| {
                    vmm.client(e.vm).unwrap().set_ax(0x0CB0);
                    vmm.simulate_iret().unwrap();
                })
                .unwrap();
            vmm.set_v86_int_vector(0x0D, cb).unwrap();
        }
        Carry::Clear
    });
    run.assert_ok();
    assert_eq!(outputs(&run), ["fault 0D: true ax=0CB0"]);
    assert_eq!(run.trace().count(json!({"kind": "call_back", "vm": DOS1})), 1);
}

#[test]
fn a_fault_nothing_handles_in_a_handler_a_device_entered_fails_only_that_call() {
    // FAULTDLL's export 2 is the PM handler of 61h; the device's
    // Simulate_Int enters it from an event (nested execution), outside any
    // step of FAULTAPP. Its #GP has no handler: `pm_fault`, the call fails
    // (AX = DEAD), and FAULTAPP, whose step was not running, goes on and
    // exits normally.
    let run = simulate_pm("dllhandler 61 faulting; sleep 50; exit", 0x61, |_| {});
    run.assert_ok();
    assert_eq!(notes(&run), ["simulate_int Ok(()) ax=DEAD back=true"]);
    let t = run.trace();
    assert_eq!(t.count(json!({"kind": "pm_fault", "vm": SYS, "vector": 13, "module": "FAULTDLL"})), 1);
    t.expect_in_order(&[json!({"kind": "program_ended", "module": "FAULTAPP", "reason": "exited"})]);
}

/// A dynamic device that hooks PM fault 0Dh and VMM fault 0Eh when it
/// loads and never unhooks.
struct Faulter;

impl VxD for Faulter {
    const DEVICE: Device = Device::new("FAULTER").dynamic();

    fn create(_: &Vmm<'_>) -> Result<Self, String> {
        Ok(Faulter)
    }

    fn control(&self, vmm: &Vmm<'_>, msg: ControlMessage) -> Carry {
        if msg.message == SYS_DYNAMIC_DEVICE_INIT {
            vmm.hook_pm_fault(0x0D, |_: &Faulter, _: &Vmm<'_>, _, _| HookAction::PassOn).unwrap();
            vmm.hook_vmm_fault(0x0E, |_: &Faulter, _: &Vmm<'_>, _, _| HookAction::PassOn).unwrap();
        }
        Carry::Clear
    }
}

#[test]
fn a_device_unloaded_with_pm_and_vmm_fault_hooks_leaks_them_and_they_go() {
    let mut s = Scenario::new("[386Enh]\ndevice = [\"*VXDLDR\", \"SCRIPT\"]\n")
        .script(|_, _, _| Carry::Clear)
        .device::<Faulter>()
        .boot();
    s.machine().load_dynamic_device("FAULTER", true).unwrap();
    s.machine().unload_dynamic_device("FAULTER").unwrap();
    let run = s.finish();
    let t = run.trace();
    let leaks = t.values(json!({"kind": "violation", "code": "UNLOAD_LEAK", "device": "FAULTER"}), "message");
    assert_eq!(leaks.len(), 2, "{leaks:?}");
    assert!(leaks[0].as_str().unwrap().contains("the Hook_PM_Fault hook of fault 0Dh"), "{leaks:?}");
    assert!(leaks[1].as_str().unwrap().contains("the Hook_VMM_Fault hook of fault 0Eh"), "{leaks:?}");
    t.expect(json!({"kind": "device_unloaded", "device": "FAULTER", "leaks": 2}));
}
