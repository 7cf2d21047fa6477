//! One protected-mode vector table per VM (virtual-hardware reference,
//! sections 3.5 and 4): a device's `Set_PM_Int_Vector` and a Rust
//! module's `Ring3::set_int_vector` write the same entry, the last write
//! wins, `Get_PM_Int_Vector` reads it, and every way into a PM vector (the
//! code's `INT n`, `Simulate_Int`, a PM fault, a VPICD interrupt into the
//! system VM) takes that entry: a PM call-back runs the device's callback,
//! an export calls the Rust handler, the default reflects to V86.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;

use vmm_plugin_api::prelude::*;
use vmm_testkit::{Run, Scenario, ScriptDevice, json};

use crate::common::{SYS, notes, outputs};

// ---- the ring-3 side: PMVECAPP, a Windows application -----------------------------------------

/// A Windows application whose command line is a list of steps separated
/// by `;`: `install V` (its export 1 becomes the handler of vector V, hex),
/// `dllhandler V` (the same with PMVECDLL's export 1), `swap V` (the same, printing the previous entry: `previous V: SSSS:OOOO`
/// or `previous V: default`), `reset V` (`set_int_vector(V, None)`),
/// `set V PTR` (`set_int_vector(V, PTR)`, PTR hex, printing the
/// result), `get V` (`Ring3::get_int_vector`, printing `vector V:
/// SSSS:OOOO` or `vector V: default`), `address` (prints export 1's address), `unmask N` (IRQ N in the
/// system VM's virtual PIC; the handler then sends an EOI), `int V`
/// (`Ring3::int`, printing AX after it), `sleep MS`, `exit`. Export 1,
/// the handler, prints `handler` and sets AX = 0xF00D.
struct PmVecApp {
    steps: RefCell<VecDeque<String>>,
    eoi: Cell<bool>,
}

fn far(p: FarPtr) -> String {
    format!("{:04X}:{:04X}", p.selector, p.offset)
}

impl PmVecApp {
    fn run(&self, r3: &Ring3<'_>) -> Step {
        loop {
            let Some(step) = self.steps.borrow_mut().pop_front() else { return Step::yield_now() };
            let words: Vec<&str> = step.split_whitespace().collect();
            let hex = |i: usize| words.get(i).and_then(|w| u32::from_str_radix(w, 16).ok()).unwrap_or(0);
            match words[0] {
                "install" => {
                    r3.set_int_vector(hex(1) as u8, Some(r3.export_address(1).unwrap())).unwrap();
                }
                "swap" => {
                    let old = r3.set_int_vector(hex(1) as u8, Some(r3.export_address(1).unwrap())).unwrap();
                    r3.print(&format!("previous {:02X}: {}", hex(1), old.map_or("default".into(), far)));
                }
                "dllhandler" => {
                    // An interrupt handler called at event time lives in a
                    // DLL's FIXED segment (KB Q72899).
                    let dll = r3.load_library("PMVECDLL").unwrap();
                    let handler = r3.get_proc_address_ordinal(dll, 1).unwrap();
                    r3.set_int_vector(hex(1) as u8, Some(handler)).unwrap();
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
                "reset" => {
                    r3.set_int_vector(hex(1) as u8, None).unwrap();
                }
                "address" => r3.print(&format!("address {}", far(r3.export_address(1).unwrap()))),
                "unmask" => {
                    self.eoi.set(true);
                    let imr = r3.in_byte(0x21).unwrap();
                    r3.out_byte(0x21, imr & !(1u8 << hex(1))).unwrap();
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

impl Module for PmVecApp {
    const MODULE: ModuleDef = ModuleDef::windows_app("PMVECAPP")
        .segments(&[Segment::fixed("_TEXT")])
        .exports(&[Export::new("Handler", 1, 0, 0)]);

    fn create(_: &Ring3<'_>) -> Result<Self, String> {
        Ok(PmVecApp { steps: RefCell::new(VecDeque::new()), eoi: Cell::new(false) })
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
            if self.eoi.get() {
                r3.out_byte(0x20, 0x20).unwrap();
            }
        }
        0
    }
}

/// PMVECDLL: export 1 in a FIXED segment, an interrupt handler that sets
/// AX = 0xD11D.
struct PmVecDll;

impl Module for PmVecDll {
    const MODULE: ModuleDef = ModuleDef::windows_dll("PMVECDLL")
        .segments(&[Segment::fixed("_TEXT")])
        .exports(&[Export::new("IntHandler", 1, 0, 0)]);

    fn create(_: &Ring3<'_>) -> Result<Self, String> {
        Ok(PmVecDll)
    }

    fn start(&self, _r3: &Ring3<'_>, _args: &str) -> Step {
        // A DLL is not started.
        Step::exit(1)
    }

    fn call(&self, r3: &Ring3<'_>, ordinal: u16, _args: PascalArgs<'_>) -> u32 {
        if ordinal == 1 {
            r3.regs().set_ax(0xD11D);
        }
        0
    }
}

// ---- the ring-0 side ----------------------------------------------------------------------------

/// A machine running Windows 3.1 with `devices` (SCRIPT last, running
/// `control`), PMVECAPP started with `steps`, and the manifest's `extra`
/// lines.
fn machine(
    devices: &str,
    steps: &str,
    extra: &str,
    control: impl Fn(&ScriptDevice, &Vmm<'_>, ControlMessage) -> Carry + 'static,
) -> Run {
    Scenario::new(&format!(
        "[machine]\nuntil = 200\nwindows = \"3.1\"\n[386Enh]\ndevice = [{devices}\"SCRIPT\"]\n\
         [windows]\nload = [\"PMVECAPP {steps}\"]\n{extra}"
    ))
    .module::<PmVecApp>()
    .module::<PmVecDll>()
    .script(control)
    .run()
}

/// A PM call-back of SCRIPT that notes `tag` with the VM's AX, answers
/// AX = `ax` and returns with `Simulate_Iret`.
fn call_back(vmm: &Vmm<'_>, tag: &'static str, ax: u16) -> FarPtr {
    vmm.allocate_pm_call_back(0, move |dev: &ScriptDevice, vmm: &Vmm<'_>, e: CallBackEntry| {
        let c = vmm.client(e.vm).unwrap();
        dev.note(vmm, format!("{tag} ax={:04X}", c.ax()));
        c.set_ax(ax);
        vmm.simulate_iret().unwrap();
    })
    .unwrap()
}

/// At `at` ms, in an event of the system VM, run `f`.
fn in_sys_vm_at(vmm: &Vmm<'_>, at: u32, f: impl Fn(&ScriptDevice, &Vmm<'_>) + 'static) {
    let f = std::rc::Rc::new(f);
    vmm.set_global_time_out(at, move |_: &ScriptDevice, vmm, _| {
        let f = f.clone();
        let sys = vmm.get_sys_vm_handle();
        vmm.schedule_vm_event(sys, move |dev: &ScriptDevice, vmm, _| f(dev, vmm)).unwrap();
    });
}

/// Notes `Get_PM_Int_Vector(v)` of the current VM as `get V: SSSS:OOOO default`.
fn note_get(dev: &ScriptDevice, vmm: &Vmm<'_>, v: u8) {
    let (p, default) = vmm.get_pm_int_vector(v).unwrap();
    dev.note(vmm, format!("get {v:02X}: {} {}", far(p), if default { "default" } else { "set" }));
}

// ---- scenarios ------------------------------------------------------------------------------------

#[test]
fn a_modules_handler_is_visible_to_get_pm_int_vector() {
    // Before the application installs its handler the vector is the
    // VMM's default (ZF); after, Get_PM_Int_Vector returns the export's
    // address; after `set_int_vector(V, None)`, the default again.
    let run = machine(
        "",
        "address; get 64; sleep 20; install 64; get 64; sleep 20; reset 64; get 64; sleep 100",
        "",
        |_, vmm, msg| {
            if msg.message == DEVICE_INIT {
                for at in [10, 30, 50] {
                    in_sys_vm_at(vmm, at, |dev, vmm| note_get(dev, vmm, 0x64));
                }
            }
            Carry::Clear
        },
    );
    run.assert_ok();
    let out = outputs(&run);
    let address = out[0].strip_prefix("address ").expect("address printed").to_string();
    assert_eq!(
        out[1..],
        ["vector 64: default".to_string(), format!("vector 64: {address}"), "vector 64: default".into()]
    );
    assert_eq!(
        notes(&run),
        ["get 64: FFFE:0064 default".to_string(), format!("get 64: {address} set"), "get 64: FFFE:0064 default".into()]
    );
    assert_eq!(run.violations(), 0);
}

#[test]
fn the_last_write_to_a_pm_vector_wins_whoever_made_it() {
    // The device's Set_PM_Int_Vector at 10 ms overwrites the application's
    // handler: the application's get_int_vector reads the call-back and
    // INT 65h enters it. Its set_int_vector returns the call-back as the
    // previous entry and overwrites it: INT 65h calls its handler, and
    // Get_PM_Int_Vector sees it.
    let run = machine("", "install 65; sleep 20; get 65; int 65; swap 65; int 65; sleep 100", "", |_, vmm, msg| {
        if msg.message == DEVICE_INIT {
            let cb = call_back(vmm, "pm call-back", 0x6565);
            vmm.set_global_time_out(10, move |_: &ScriptDevice, vmm, _| {
                let sys = vmm.get_sys_vm_handle();
                vmm.schedule_vm_event(sys, move |dev: &ScriptDevice, vmm, _| {
                    vmm.set_pm_int_vector(0x65, cb).unwrap();
                    note_get(dev, vmm, 0x65);
                })
                .unwrap();
            });
            in_sys_vm_at(vmm, 50, |dev, vmm| note_get(dev, vmm, 0x65));
        }
        Carry::Clear
    });
    run.assert_ok();
    let n = notes(&run);
    assert_eq!(n[..2], ["get 65: FFF6:0000 set", "pm call-back ax=2222"]);
    assert_eq!(
        outputs(&run),
        ["vector 65: FFF6:0000", "int 65: true ax=6565", "previous 65: FFF6:0000", "handler", "int 65: true ax=F00D"]
    );
    assert!(n[2].starts_with("get 65: ") && n[2].ends_with(" set") && !n[2].contains("FFF6"), "{n:?}");
    assert_eq!(run.trace().count(json!({"kind": "call_back", "vm": SYS, "device": "SCRIPT"})), 1);
}

#[test]
fn a_devices_default_for_every_vm_is_overwritten_by_the_modules_handler_and_comes_back_at_reset() {
    // Set_PM_Int_Vector before Sys_VM_Init: every VM's default entry. The
    // application's handler replaces it in the system VM; `None` puts
    // back the entry the VM started with, the device's call-back.
    let run = machine("", "swap 66; int 66; reset 66; int 66", "", |_, vmm, msg| {
        if msg.message == DEVICE_INIT {
            let cb = call_back(vmm, "default call-back", 0x6666);
            vmm.set_pm_int_vector(0x66, cb).unwrap();
        }
        Carry::Clear
    });
    run.assert_ok();
    assert_eq!(outputs(&run), ["previous 66: FFF6:0000", "handler", "int 66: true ax=F00D", "int 66: true ax=6666"]);
    assert_eq!(notes(&run), ["default call-back ax=2222"]);
}

#[test]
fn simulate_int_in_protected_mode_takes_the_modules_handler_over_an_earlier_device_entry() {
    // The device set the PM vector first; the application's handler came
    // later: the device's own Simulate_Int reaches the handler.
    let run = machine("", "dllhandler 67; sleep 50", "[[interrupt]]\nname = \"go\"\nat = 10\n", |_, vmm, msg| {
        if msg.message == DEVICE_INIT {
            let cb = call_back(vmm, "pm call-back", 0x6767);
            vmm.set_pm_int_vector(0x67, cb).unwrap();
            vmm.register_interrupt("go", move |_: &ScriptDevice, vmm, _| {
                let sys = vmm.get_sys_vm_handle();
                vmm.schedule_vm_event(sys, move |dev: &ScriptDevice, vmm, _| {
                    let c = vmm.client(sys).unwrap();
                    c.set_ax(0x1234);
                    vmm.begin_nest_exec().unwrap();
                    let r = vmm.simulate_int(0x67).and_then(|_| vmm.resume_exec());
                    let ax = c.ax();
                    vmm.end_nest_exec().unwrap();
                    dev.note(vmm, format!("simulate_int {r:?} ax={ax:04X}"));
                })
                .unwrap();
            })
            .unwrap();
        }
        Carry::Clear
    });
    run.assert_ok();
    assert_eq!(notes(&run), ["simulate_int Ok(()) ax=D11D"]);
    let call = json!({"kind": "far_call", "vm": SYS, "module": "PMVECDLL", "export": "IntHandler", "isr": true});
    assert_eq!(run.trace().count(call), 1);
    assert_eq!(run.trace().count(json!({"kind": "call_back"})), 0);
}

#[test]
fn a_vpicd_interrupt_into_the_system_vm_reaches_a_set_pm_int_vector_call_back() {
    // IRQ 5 (vector 0Dh) virtualized by SCRIPT; the application unmasks it
    // and installs its own handler, then the device points the system
    // VM's PM vector 0Dh at a call-back (the last write): the interrupt
    // VPICD simulates into the system VM enters the call-back, which
    // clears the request; its return is the IRET.
    let run = machine("\"*VPICD\", ", "install D; unmask 5; sleep 100; exit", "", |dev, vmm, msg| {
        if msg.message == DEVICE_INIT {
            let h = vmm
                .vpicd()
                .virtualize_irq(IrqDescriptor::new(5, |_: &ScriptDevice, _: &Vmm<'_>, _: IrqEvent| true).iret(
                    |dev: &ScriptDevice, vmm: &Vmm<'_>, _e: IrqEvent, timed_out: bool| {
                        dev.note(vmm, format!("iret timed_out={timed_out}"));
                    },
                ))
                .expect("virtualize");
            dev.state.borrow_mut().push(h.0);
            let cb = vmm
                .allocate_pm_call_back(0x0D, move |dev: &ScriptDevice, vmm: &Vmm<'_>, e: CallBackEntry| {
                    dev.note(vmm, format!("irq call-back ref={:X} vm={:#x}", e.ref_data, e.vm.0));
                    vmm.vpicd().clear_int_request(h, e.vm).unwrap();
                    vmm.simulate_iret().unwrap();
                })
                .unwrap();
            in_sys_vm_at(vmm, 10, move |_, vmm| {
                vmm.set_pm_int_vector(0x0D, cb).unwrap();
                vmm.vpicd().set_int_request(h, vmm.get_sys_vm_handle()).unwrap();
            });
        }
        Carry::Clear
    });
    run.assert_ok();
    assert_eq!(notes(&run), [format!("irq call-back ref=D vm={SYS:#x}"), "iret timed_out=false".into()]);
    assert!(outputs(&run).is_empty(), "the application's handler was overwritten");
    let t = run.trace();
    assert_eq!(t.count(json!({"kind": "call_back", "vm": SYS, "device": "SCRIPT"})), 1);
    t.expect_none(json!({"kind": "far_call", "module": "PMVECAPP"}));
}

#[test]
fn set_int_vector_refuses_what_is_no_pm_handler_and_leaves_the_entry() {
    // A V86 call-back and an address that is nothing are refused
    // (BAD_POINTER); a PM call-back and the default read back are
    // accepted as entries, as DPMI's set vector takes any address.
    let run = machine(
        "",
        "set 68 FD000000; set 68 12340010; set 68 FFF60000; int 68; set 68 FFFE0068; sleep 20",
        "",
        |_, vmm, msg| {
            if msg.message == DEVICE_INIT {
                vmm.allocate_v86_call_back(0, |_: &ScriptDevice, _: &Vmm<'_>, _: CallBackEntry| {}).unwrap();
                call_back(vmm, "pm call-back", 0x6868);
                in_sys_vm_at(vmm, 10, |dev, vmm| note_get(dev, vmm, 0x68));
            }
            Carry::Clear
        },
    );
    run.assert_ok();
    let refused = "Err(VmmError { code: 2 })";
    assert_eq!(
        outputs(&run),
        [
            format!("set 68 FD00:0000: {refused}"),
            format!("set 68 1234:0010: {refused}"),
            "set 68 FFF6:0000: Ok(None)".into(),
            "int 68: true ax=6868".into(),
            "set 68 FFFE:0068: Ok(Some(\"FFF6:0000\"))".into(),
        ]
    );
    // Written back to FFFE:n, the entry is the VMM's default again (ZF).
    assert_eq!(notes(&run), ["pm call-back ax=2222", "get 68: FFFE:0068 default"]);
    assert_eq!(run.trace().count(json!({"kind": "violation", "code": "BAD_POINTER"})), 2);
}

#[test]
fn a_vpicd_interrupt_into_a_system_vm_without_programs_reaches_its_pm_call_back_and_else_the_default_handler() {
    // No Windows application runs: the device's PM call-back on vector 0Eh
    // still takes IRQ 6 (it is ring-0 code behind a ring-3 address); on
    // vector 76h (IRQ 14), unset, the default handler serves it (EOI, IRET).
    // Both are unmasked when Windows starts.
    let run = Scenario::new("[machine]\nuntil = 100\nwindows = \"3.1\"\n[386Enh]\ndevice = [\"*VPICD\", \"SCRIPT\"]\n")
        .script(|_, vmm, msg| {
            if msg.message == DEVICE_INIT {
                let mut hs = Vec::new();
                for irq in [6, 14] {
                    let h = vmm
                        .vpicd()
                        .virtualize_irq(
                            IrqDescriptor::new(irq, |_: &ScriptDevice, _: &Vmm<'_>, _: IrqEvent| true)
                                .eoi(move |dev: &ScriptDevice, vmm: &Vmm<'_>, e: IrqEvent| {
                                    dev.note(vmm, format!("eoi irq={irq}"));
                                    let _ = vmm.vpicd().clear_int_request(e.handle, e.vm);
                                })
                                .iret(move |dev: &ScriptDevice, vmm: &Vmm<'_>, _: IrqEvent, _: bool| {
                                    dev.note(vmm, format!("iret irq={irq}"));
                                }),
                        )
                        .expect("virtualize");
                    hs.push(h);
                }
                let h6 = hs[0];
                let cb = vmm
                    .allocate_pm_call_back(0x0E, move |dev: &ScriptDevice, vmm: &Vmm<'_>, e: CallBackEntry| {
                        dev.note(vmm, format!("irq call-back vm={:#x}", e.vm.0));
                        vmm.vpicd().clear_int_request(h6, e.vm).unwrap();
                        vmm.simulate_iret().unwrap();
                    })
                    .unwrap();
                vmm.set_pm_int_vector(0x0E, cb).unwrap();
                in_sys_vm_at(vmm, 10, move |_, vmm| {
                    let sys = vmm.get_sys_vm_handle();
                    for &h in &hs {
                        vmm.vpicd().set_int_request(h, sys).unwrap();
                    }
                });
            }
            Carry::Clear
        })
        .run();
    run.assert_ok();
    assert_eq!(
        notes(&run),
        [format!("irq call-back vm={SYS:#x}"), "iret irq=6".into(), "eoi irq=14".into(), "iret irq=14".into()]
    );
    assert_eq!(run.trace().count(json!({"kind": "call_back", "vm": SYS, "device": "SCRIPT"})), 1);
}
