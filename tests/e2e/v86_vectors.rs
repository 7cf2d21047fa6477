//! A Rust DOS program's interrupt handlers live in its VM's V86 vector
//! table (virtual-hardware reference, sections 3.5 and 4): its
//! `Ring3::set_int_vector` writes the entry `Set_V86_Int_Vector` writes
//! and `Get_V86_Int_Vector` reads (not the PM table), the last write wins,
//! and every way into a V86 vector reaches it: the program's `INT n` after
//! the `Hook_V86_Int_Chain` hooks pass it on, `Exec_Int`, and VPICD's
//! hardware interrupts into the DOS VM.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;

use vmm_plugin_api::prelude::*;
use vmm_testkit::{Run, Scenario, ScriptDevice, json};

use crate::common::{DOS1, notes, outputs};

// ---- the ring-3 side: V86VEC, a Rust DOS program ----------------------------------------------

/// A DOS program whose command line is a list of steps separated by `;`:
/// `address` (prints export 1's address), `install V` (export 1 handles
/// vector V, hex), `swap V` (the same, printing `previous V: SSSS:OOOO`
/// or `previous V: default`), `reset V` (`set_int_vector(V, None)`),
/// `set V PTR` (`set_int_vector(V, PTR)`, PTR hex, printing the result),
/// `get V` (prints `vector V: SSSS:OOOO` or `vector V: default`), `int V`
/// (`Ring3::int` with AX = 2222h, printing AX after it), `unmask N` (IRQ N
/// in its virtual PIC; the handler then sends an EOI), `quiet` (the
/// handler prints nothing: called from event time it may not call DOS),
/// `fault V` (`Ring3::fault` of exception V with AX = 1111h, printing
/// whether it was handled and AX), `sleep MS`, `exit`. Export 1, the handler, prints `handler` and sets
/// AX = F00Dh.
struct V86VecApp {
    steps: RefCell<VecDeque<String>>,
    eoi: Cell<bool>,
    quiet: Cell<bool>,
}

fn far(p: FarPtr) -> String {
    format!("{:04X}:{:04X}", p.selector, p.offset)
}

impl V86VecApp {
    fn run(&self, r3: &Ring3<'_>) -> Step {
        loop {
            let Some(step) = self.steps.borrow_mut().pop_front() else { return Step::yield_now() };
            let words: Vec<&str> = step.split_whitespace().collect();
            let hex = |i: usize| words.get(i).and_then(|w| u32::from_str_radix(w, 16).ok()).unwrap_or(0);
            match words[0] {
                "address" => r3.print(&format!("address {}", far(r3.export_address(1).unwrap()))),
                "install" => {
                    r3.set_int_vector(hex(1) as u8, Some(r3.export_address(1).unwrap())).unwrap();
                }
                "swap" => {
                    let old = r3.set_int_vector(hex(1) as u8, Some(r3.export_address(1).unwrap())).unwrap();
                    r3.print(&format!("previous {:02X}: {}", hex(1), old.map_or("default".into(), far)));
                }
                "reset" => {
                    r3.set_int_vector(hex(1) as u8, None).unwrap();
                }
                "set" => {
                    let p = FarPtr::from_u32(hex(2));
                    let r = r3.set_int_vector(hex(1) as u8, Some(p));
                    r3.print(&format!("set {:02X} {}: {:?}", hex(1), far(p), r.map(|o| o.map(far))));
                }
                "get" => {
                    let v = r3.get_int_vector(hex(1) as u8).unwrap();
                    r3.print(&format!("vector {:02X}: {}", hex(1), v.map_or("default".into(), far)));
                }
                "int" => {
                    r3.regs().set_ax(0x2222);
                    let r = r3.int(hex(1) as u8);
                    r3.print(&format!("int {:02X}: {:?} ax={:04X}", hex(1), r.is_ok(), r3.regs().ax()));
                }
                "unmask" => {
                    self.eoi.set(true);
                    let imr = r3.in_byte(0x21).unwrap();
                    r3.out_byte(0x21, imr & !(1u8 << hex(1))).unwrap();
                }
                "quiet" => self.quiet.set(true),
                "fault" => {
                    let e = match hex(1) {
                        0 => Exception::DivideError,
                        3 => Exception::Breakpoint,
                        6 => Exception::InvalidOpcode,
                        _ => Exception::GeneralProtection,
                    };
                    r3.regs().set_ax(0x1111);
                    let r = r3.fault(e);
                    r3.print(&format!("fault {:02X}: {:?} ax={:04X}", hex(1), r.is_ok(), r3.regs().ax()));
                }
                "sleep" => return Step::sleep(words.get(1).and_then(|w| w.parse().ok()).unwrap_or(0)),
                "exit" => return Step::exit(0),
                other => r3.print(&format!("unknown step {other}")),
            }
        }
    }
}

impl Module for V86VecApp {
    const MODULE: ModuleDef = ModuleDef::dos_program("V86VEC")
        .segments(&[Segment::fixed("_TEXT")])
        .exports(&[Export::new("Handler", 1, 0, 0)]);

    fn create(_: &Ring3<'_>) -> Result<Self, String> {
        Ok(V86VecApp { steps: RefCell::new(VecDeque::new()), eoi: Cell::new(false), quiet: Cell::new(false) })
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
            if !self.quiet.get() {
                r3.print("handler");
            }
            r3.regs().set_ax(0xF00D);
            if self.eoi.get() {
                r3.out_byte(0x20, 0x20).unwrap();
            }
        }
        0
    }
}

// ---- the ring-0 side ----------------------------------------------------------------------------

/// A machine running Windows 3.1 with `devices` (SCRIPT last, running
/// `control`) and a DOS VM running V86VEC with `steps`.
fn machine(
    devices: &str,
    steps: &str,
    control: impl Fn(&ScriptDevice, &Vmm<'_>, ControlMessage) -> Carry + 'static,
) -> Run {
    Scenario::new(&format!(
        "[machine]\nuntil = 200\nwindows = \"3.1\"\n[386Enh]\ndevice = [{devices}\"SCRIPT\"]\n\
         [[vm]]\nname = \"DOS1\"\nprogram = \"V86VEC\"\nargs = \"{steps}\"\n"
    ))
    .module::<V86VecApp>()
    .script(control)
    .run()
}

/// At `at` ms, in an event of the DOS VM, run `f`.
fn in_dos_vm_at(vmm: &Vmm<'_>, at: u32, f: impl Fn(&ScriptDevice, &Vmm<'_>) + 'static) {
    let f = std::rc::Rc::new(f);
    vmm.set_global_time_out(at, move |_: &ScriptDevice, vmm, _| {
        let f = f.clone();
        vmm.schedule_vm_event(VmHandle(DOS1), move |dev: &ScriptDevice, vmm, _| f(dev, vmm)).unwrap();
    });
}

/// Notes `Get_V86_Int_Vector(v)` and `Get_PM_Int_Vector(v)` of the
/// current VM as `v86 V: SSSS:OOOO pm V: SSSS:OOOO default|set`.
fn note_both(dev: &ScriptDevice, vmm: &Vmm<'_>, v: u8) {
    let v86 = vmm.get_v86_int_vector(v).unwrap();
    let (pm, default) = vmm.get_pm_int_vector(v).unwrap();
    dev.note(
        vmm,
        format!("v86 {v:02X}: {} pm {v:02X}: {} {}", far(v86), far(pm), if default { "default" } else { "set" }),
    );
}

/// A V86 call-back of SCRIPT that notes `tag` with the VM's AX, answers
/// AX = `ax` and returns with `Simulate_Iret`.
fn call_back(vmm: &Vmm<'_>, tag: &'static str, ax: u16) -> FarPtr {
    vmm.allocate_v86_call_back(0, move |dev: &ScriptDevice, vmm: &Vmm<'_>, e: CallBackEntry| {
        let c = vmm.client(e.vm).unwrap();
        dev.note(vmm, format!("{tag} ax={:04X}", c.ax()));
        c.set_ax(ax);
        vmm.simulate_iret().unwrap();
    })
    .unwrap()
}

fn handler_calls(run: &Run) -> usize {
    run.trace().count(json!({"kind": "far_call", "vm": DOS1, "module": "V86VEC", "export": "Handler"}))
}

// ---- scenarios ------------------------------------------------------------------------------------

#[test]
fn a_rust_dos_programs_handler_is_visible_to_get_v86_int_vector_and_not_to_get_pm_int_vector() {
    let run = machine(
        "",
        "address; get 60; sleep 20; install 60; get 60; sleep 20; reset 60; get 60; sleep 100",
        |_, vmm, msg| {
            if msg.message == DEVICE_INIT {
                for at in [10, 30, 50] {
                    in_dos_vm_at(vmm, at, |dev, vmm| note_both(dev, vmm, 0x60));
                }
            }
            Carry::Clear
        },
    );
    run.assert_clean();
    let out = outputs(&run);
    let address = out[0].strip_prefix("address ").expect("address printed").to_string();
    assert_eq!(
        out[1..],
        ["vector 60: default".to_string(), format!("vector 60: {address}"), "vector 60: default".into()]
    );
    assert_eq!(
        notes(&run),
        [
            "v86 60: FFFE:0060 pm 60: FFFE:0060 default".to_string(),
            format!("v86 60: {address} pm 60: FFFE:0060 default"),
            "v86 60: FFFE:0060 pm 60: FFFE:0060 default".into(),
        ]
    );
}

#[test]
fn the_last_write_to_a_dos_programs_v86_vector_wins_whoever_made_it() {
    // The device's Set_V86_Int_Vector at 10 ms overwrites the program's
    // handler: the program's get_int_vector reads the call-back and INT
    // 61h enters it. The program's set_int_vector returns the call-back as
    // the previous entry and overwrites it: INT 61h calls its handler and
    // Get_V86_Int_Vector sees it.
    let run =
        machine("", "install 61; sleep 20; get 61; int 61; swap 61; int 61; address; sleep 100", |_, vmm, msg| {
            if msg.message == DEVICE_INIT {
                let cb = call_back(vmm, "v86 call-back", 0x6161);
                in_dos_vm_at(vmm, 10, move |dev, vmm| {
                    vmm.set_v86_int_vector(0x61, cb).unwrap();
                    note_both(dev, vmm, 0x61);
                });
                in_dos_vm_at(vmm, 50, |dev, vmm| note_both(dev, vmm, 0x61));
            }
            Carry::Clear
        });
    run.assert_clean();
    let out = outputs(&run);
    let address = out[5].strip_prefix("address ").expect("address printed").to_string();
    assert_eq!(
        out[..5],
        ["vector 61: FD00:0000", "int 61: true ax=6161", "previous 61: FD00:0000", "handler", "int 61: true ax=F00D"]
    );
    assert_eq!(
        notes(&run),
        [
            "v86 61: FD00:0000 pm 61: FFFE:0061 default".to_string(),
            "v86 call-back ax=2222".into(),
            format!("v86 61: {address} pm 61: FFFE:0061 default"),
        ]
    );
    assert_eq!(run.trace().count(json!({"kind": "call_back", "vm": DOS1, "device": "SCRIPT"})), 1);
    assert_eq!(handler_calls(&run), 1);
}

#[test]
fn a_v86_int_chain_hook_that_passes_on_reaches_the_dos_programs_handler() {
    // SCRIPT hooks INT 62h and passes every call on: the program's INT 62h
    // passes the hook, then calls its own handler (its return is the IRET).
    let run = machine("", "install 62; int 62; sleep 50", |_, vmm, msg| {
        if msg.message == DEVICE_INIT {
            vmm.hook_v86_int_chain(0x62, |dev: &ScriptDevice, vmm: &Vmm<'_>, n, _vm| {
                dev.note(vmm, format!("hook {n:02X}"));
                HookAction::PassOn
            })
            .unwrap();
        }
        Carry::Clear
    });
    run.assert_clean();
    assert_eq!(notes(&run), ["hook 62"]);
    assert_eq!(outputs(&run), ["handler", "int 62: true ax=F00D"]);
    let t = run.trace();
    assert_eq!(t.count(json!({"kind": "int_hook", "vector": 0x62, "vm": DOS1, "passed": true})), 1);
    assert_eq!(handler_calls(&run), 1);
}

#[test]
fn exec_int_in_a_dos_vm_calls_the_rust_programs_handler_after_the_hooks_pass_it_on() {
    // A device's Exec_Int 63h in the DOS VM (an event): the hook passes it
    // on, the frame goes to the program's handler, whose return is the
    // IRET: AX is what the handler left.
    let run = machine("", "install 63; quiet; sleep 100", |_, vmm, msg| {
        if msg.message == DEVICE_INIT {
            vmm.hook_v86_int_chain(0x63, |dev: &ScriptDevice, vmm: &Vmm<'_>, n, _vm| {
                dev.note(vmm, format!("hook {n:02X}"));
                HookAction::PassOn
            })
            .unwrap();
            in_dos_vm_at(vmm, 20, |dev, vmm| {
                let c = vmm.client(VmHandle(DOS1)).unwrap();
                c.set_ax(0x1234);
                vmm.begin_nest_exec().unwrap();
                let r = vmm.exec_int(0x63);
                let ax = c.ax();
                vmm.end_nest_exec().unwrap();
                dev.note(vmm, format!("exec_int {r:?} ax={ax:04X}"));
            });
        }
        Carry::Clear
    });
    run.assert_clean();
    assert_eq!(notes(&run), ["hook 63", "exec_int Ok(()) ax=F00D"]);
    let call = json!({"kind": "far_call", "vm": DOS1, "module": "V86VEC", "export": "Handler", "isr": true});
    assert_eq!(run.trace().count(call), 1);
}

#[test]
fn a_vpicd_interrupt_into_the_dos_vm_reaches_the_rust_programs_v86_handler() {
    // IRQ 5 (vector 0Dh in the DOS VM's virtual PIC) virtualized by
    // SCRIPT; the program installs its handler and unmasks the IRQ; at
    // 20 ms the device requests it: the program's export runs (its EOI,
    // then its return is the IRET). At 60 ms the device points V86 vector
    // 0Dh at its call-back (the last write): the next request enters the
    // call-back instead.
    let run = machine("\"*VPICD\", ", "install D; unmask 5; sleep 150; exit", |dev, vmm, msg| {
        if msg.message == DEVICE_INIT {
            let h = vmm
                .vpicd()
                .virtualize_irq(
                    IrqDescriptor::new(5, |_: &ScriptDevice, _: &Vmm<'_>, _: IrqEvent| true)
                        .eoi(|_: &ScriptDevice, vmm: &Vmm<'_>, e: IrqEvent| {
                            let _ = vmm.vpicd().clear_int_request(e.handle, e.vm);
                        })
                        .iret(|dev: &ScriptDevice, vmm: &Vmm<'_>, _e: IrqEvent, timed_out: bool| {
                            dev.note(vmm, format!("iret timed_out={timed_out}"));
                        }),
                )
                .expect("virtualize");
            dev.state.borrow_mut().push(h.0);
            let cb = vmm
                .allocate_v86_call_back(0, move |dev: &ScriptDevice, vmm: &Vmm<'_>, e: CallBackEntry| {
                    dev.note(vmm, "call-back");
                    let _ = vmm.vpicd().clear_int_request(h, e.vm);
                    vmm.simulate_iret().unwrap();
                })
                .unwrap();
            in_dos_vm_at(vmm, 20, move |_, vmm| vmm.vpicd().set_int_request(h, VmHandle(DOS1)).unwrap());
            in_dos_vm_at(vmm, 60, move |_, vmm| vmm.set_v86_int_vector(0x0D, cb).unwrap());
            in_dos_vm_at(vmm, 80, move |_, vmm| vmm.vpicd().set_int_request(h, VmHandle(DOS1)).unwrap());
        }
        Carry::Clear
    });
    run.assert_clean();
    assert_eq!(outputs(&run), ["handler"]);
    assert_eq!(notes(&run), ["iret timed_out=false", "call-back", "iret timed_out=false"]);
    assert_eq!(handler_calls(&run), 1);
    assert_eq!(run.trace().count(json!({"kind": "call_back", "vm": DOS1, "device": "SCRIPT"})), 1);
}

#[test]
fn set_int_vector_in_a_dos_program_refuses_a_pm_call_back_and_takes_a_v86_one() {
    // A PM call-back and an address that is nothing are no V86 handler
    // (BAD_POINTER, the entry stays); a V86 call-back is taken (INT 64h
    // enters it), and the default read back makes the entry the default.
    let run = machine(
        "",
        "set 64 FFF60000; set 64 12340010; set 64 FD000000; int 64; set 64 FFFE0064; get 64",
        |_, vmm, msg| {
            if msg.message == DEVICE_INIT {
                vmm.allocate_pm_call_back(0, |_: &ScriptDevice, _: &Vmm<'_>, _: CallBackEntry| {}).unwrap();
                call_back(vmm, "v86 call-back", 0x6464);
            }
            Carry::Clear
        },
    );
    run.assert_ok();
    let refused = "Err(VmmError { code: 2 })";
    assert_eq!(
        outputs(&run),
        [
            format!("set 64 FFF6:0000: {refused}"),
            format!("set 64 1234:0010: {refused}"),
            "set 64 FD00:0000: Ok(None)".into(),
            "int 64: true ax=6464".into(),
            "set 64 FFFE:0064: Ok(Some(\"FD00:0000\"))".into(),
            "vector 64: default".into(),
        ]
    );
    assert_eq!(notes(&run), ["v86 call-back ax=2222"]);
    assert_eq!(run.trace().count(json!({"kind": "violation", "code": "BAD_POINTER", "device": "V86VEC"})), 2);
}

#[test]
fn a_devices_default_v86_vector_is_overwritten_by_the_dos_programs_handler_and_comes_back_at_reset() {
    // Set_V86_Int_Vector before Sys_VM_Init: every VM's default table. The
    // program's handler replaces it in its VM; `None` puts back the entry
    // the VM started with, the device's call-back.
    let run = machine("", "swap 66; int 66; reset 66; int 66", |_, vmm, msg| {
        if msg.message == DEVICE_INIT {
            let cb = call_back(vmm, "default call-back", 0x6666);
            vmm.set_v86_int_vector(0x66, cb).unwrap();
        }
        Carry::Clear
    });
    run.assert_clean();
    assert_eq!(outputs(&run), ["previous 66: FD00:0000", "handler", "int 66: true ax=F00D", "int 66: true ax=6666"]);
    assert_eq!(notes(&run), ["default call-back ax=2222"]);
}

#[test]
fn a_v86_fault_of_a_dos_program_is_offered_to_its_own_handler_in_its_v86_vector() {
    // The program's handler of exception 06h takes its fault (the
    // program goes on); 0Dh has none and the program ends.
    let run = machine("", "install 6; fault 6; fault D; exit", |_, _, _| Carry::Clear);
    run.assert_ok();
    assert_eq!(outputs(&run), ["handler", "fault 06: true ax=F00D", "fault 0D: false ax=1111"]);
    let t = run.trace();
    assert_eq!(t.count(json!({"kind": "v86_fault", "vm": DOS1, "vector": 6})), 0);
    t.expect_in_order(&[
        json!({"kind": "v86_fault", "vm": DOS1, "vector": 13}),
        json!({"kind": "program_ended", "module": "V86VEC", "reason": "crashed"}),
    ]);
    assert_eq!(handler_calls(&run), 1);
}

#[test]
fn a_v86_vector_that_points_at_no_code_is_a_bad_far_pointer_not_a_silent_fallback() {
    // SCRIPT points the DOS VM's vector 63h at 1234:5678, neither a
    // call-back nor an export: the program's INT 63h is the
    // BAD_FAR_POINTER violation (refused under the default policy), not a
    // quiet call of the VMM's own handler.
    let run = machine("", "sleep 20; int 63; sleep 50", |_, vmm, msg| {
        if msg.message == DEVICE_INIT {
            in_dos_vm_at(vmm, 10, |_dev, vmm| {
                vmm.set_v86_int_vector(0x63, FarPtr::from_u32(0x1234_5678)).unwrap();
            });
        }
        Carry::Clear
    });
    run.assert_ok();
    assert_eq!(outputs(&run), ["int 63: false ax=2222"]);
    run.trace().expect(json!({"kind": "violation", "code": "BAD_FAR_POINTER", "service": "INT"}));
    assert_eq!(run.violations(), 1);
}
