//! VPICD (device 3): owning IRQs, virtual requests, delivery into a VM's
//! ring-3 code (a Rust DOS module and a machine-code program), EOI and
//! IRET, masking, the IRET time-out, the default handling of IRQs nobody
//! virtualized, and the bad arguments. The scenarios of the reference's
//! section 10 (12-27), each named after the behaviour.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;

use vmm_plugin_api::prelude::*;
use vmm_testkit::{Scenario, ScriptDevice, Trace, json};

use crate::common::{DOS1, DOS2, SYS, assemble, notes, outputs};

// ---- the ring-3 side: IRQAPP, a Rust DOS program ---------------------------------------------

/// A DOS program driven by its command line (`;`-separated):
/// `install V` (its export 1 handles vector V), `unmask N` / `mask N`
/// (IRQ N in its virtual PIC), `irr` (prints the master PIC's IRR), `cli`, `sti`, `noeoi` (the handler sends no
/// EOI), `yield K` (K steps), `sleep MS`, `exit`. The handler prints `handler` and
/// sends a non-specific EOI to the PIC of the vector's IRQ.
struct IrqApp {
    steps: RefCell<VecDeque<String>>,
    eoi: Cell<bool>,
    slave: Cell<bool>,
}

impl IrqApp {
    fn run(&self, r3: &Ring3<'_>) -> Step {
        loop {
            let Some(step) = self.steps.borrow_mut().pop_front() else { return Step::yield_now() };
            let words: Vec<&str> = step.split_whitespace().collect();
            let num = |i: usize| words.get(i).and_then(|w| w.parse::<u32>().ok()).unwrap_or(0);
            match words[0] {
                "install" => {
                    let handler = r3.export_address(1).unwrap();
                    r3.set_int_vector(num(1) as u8, Some(handler)).unwrap();
                    self.slave.set(num(1) >= 0x70);
                }
                "unmask" | "mask" => {
                    let irq = num(1);
                    let port = if irq >= 8 { 0xA1 } else { 0x21 };
                    let imr = r3.in_byte(port).unwrap();
                    let bit = 1u8 << (irq % 8);
                    let new = if words[0] == "mask" { imr | bit } else { imr & !bit };
                    r3.out_byte(port, new).unwrap();
                }
                "irr" => {
                    // OCW3: read the IRR.
                    r3.out_byte(0x20, 0x0A).unwrap();
                    r3.print(&format!("irr={:#04x}", r3.in_byte(0x20).unwrap()));
                }
                "cli" => r3.cli(),
                "sti" => r3.sti(),
                "noeoi" => self.eoi.set(false),
                "yield" => {
                    let k = num(1);
                    if k > 1 {
                        self.steps.borrow_mut().push_front(format!("yield {}", k - 1));
                    }
                    return Step::yield_now();
                }
                "exit" => return Step::exit(0),
                "sleep" => return Step::sleep(num(1)),
                other => r3.print(&format!("unknown command {other}")),
            }
        }
    }
}

impl Module for IrqApp {
    const MODULE: ModuleDef = ModuleDef::dos_program("IRQAPP")
        .segments(&[Segment::fixed("_TEXT")])
        .exports(&[Export::new("IrqHandler", 1, 0, 0)]);

    fn create(_: &Ring3<'_>) -> Result<Self, String> {
        Ok(IrqApp { steps: RefCell::new(VecDeque::new()), eoi: Cell::new(true), slave: Cell::new(false) })
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
            if self.eoi.get() {
                if self.slave.get() {
                    r3.out_byte(0xA0, 0x20).unwrap();
                }
                r3.out_byte(0x20, 0x20).unwrap();
            }
        }
        0
    }
}

// ---- the ring-0 side ----------------------------------------------------------------------------

/// The manifest: VPICD, the devices `devices` (SCRIPT last), Windows
/// `windows`, and a DOS VM running IRQAPP with `args` (none if empty).
fn machine(windows: &str, devices: &[&str], args: &str, extra: &str) -> String {
    machine_until(windows, devices, args, extra, 200)
}

/// [`machine`], stopping at `until` ms.
fn machine_until(windows: &str, devices: &[&str], args: &str, extra: &str, until: u32) -> String {
    let mut list: Vec<String> = vec!["\"*VPICD\"".into()];
    list.extend(devices.iter().map(|d| format!("\"{d}\"")));
    let vm = if args.is_empty() {
        String::new()
    } else {
        format!("[[vm]]\nname = \"DOS1\"\nprogram = \"IRQAPP\"\nargs = \"{args}\"\n")
    };
    format!(
        "[machine]\nwindows = \"{windows}\"\nuntil = {until}\n[386Enh]\ndevice = [{}]\n{vm}{extra}",
        list.join(", ")
    )
}

/// The handle SCRIPT keeps in its state slot 0.
fn handle(dev: &ScriptDevice) -> VpicdHandle {
    VpicdHandle(dev.state.borrow()[0])
}

/// IRQ 5's descriptor for SCRIPT, every procedure noting its call.
fn noting(irq: u8) -> IrqDescriptor<ScriptDevice> {
    IrqDescriptor::new(irq, |dev: &ScriptDevice, vmm: &Vmm<'_>, e: IrqEvent| {
        dev.note(vmm, format!("hw_int vm={:#x}", e.vm.0));
        true
    })
    .virt_int(|dev: &ScriptDevice, vmm: &Vmm<'_>, e: IrqEvent| {
        dev.note(vmm, format!("virt_int vm={:#x}", e.vm.0));
        true
    })
    .eoi(|dev: &ScriptDevice, vmm: &Vmm<'_>, e: IrqEvent| {
        dev.note(vmm, "eoi");
        let _ = vmm.vpicd().clear_int_request(e.handle, e.vm);
    })
    .mask_change(|dev: &ScriptDevice, vmm: &Vmm<'_>, _e: IrqEvent, masking: bool| {
        dev.note(vmm, format!("mask_change masking={masking}"));
    })
    .iret(|dev: &ScriptDevice, vmm: &Vmm<'_>, _e: IrqEvent, timed_out: bool| {
        dev.note(vmm, format!("iret timed_out={timed_out}"));
    })
}

/// SCRIPT virtualizes `descriptor()` at Device_Init (its handle in state
/// slot 0) and runs `go` in an event of `vm` at `at` ms.
fn scenario(
    manifest: String,
    descriptor: impl Fn() -> IrqDescriptor<ScriptDevice> + 'static,
    at: u32,
    vm: u32,
    go: impl Fn(&ScriptDevice, &Vmm<'_>) + 'static,
) -> Scenario {
    let go = std::rc::Rc::new(go);
    Scenario::new(&manifest).module::<IrqApp>().script(move |dev, vmm, msg| {
        if msg.message == DEVICE_INIT {
            let h = vmm.vpicd().virtualize_irq(descriptor()).expect("virtualize");
            // Physical interrupts reach the device whatever the VMs' masks.
            vmm.vpicd().physically_unmask(h).unwrap();
            dev.state.borrow_mut().push(h.0);
            let go = go.clone();
            vmm.set_global_time_out(at, move |_: &ScriptDevice, vmm, _| {
                let go = go.clone();
                vmm.schedule_vm_event(VmHandle(vm), move |dev: &ScriptDevice, vmm, _| go(dev, vmm)).unwrap();
            });
        }
        Carry::Clear
    })
}

/// Count one more call in SCRIPT's state (after the handle in slot 0);
/// the calls so far.
fn count_call(dev: &ScriptDevice) -> usize {
    let mut s = dev.state.borrow_mut();
    s.push(0);
    s.len() - 1
}

/// The `virtual_irq` steps of `irq` in order, as `step@vm`.
fn steps(t: &Trace, irq: u64) -> Vec<String> {
    t.matching(json!({"kind": "virtual_irq", "irq": irq}))
        .iter()
        .map(|r| format!("{}@{:#x}", r["step"].as_str().unwrap(), r["vm"].as_u64().unwrap()))
        .collect()
}

/// The index of the first record matching `pattern`.
fn position(t: &Trace, pattern: vmm_testkit::Value) -> Option<usize> {
    let want = t.matching(pattern);
    let first = *want.first()?;
    t.records().iter().position(|r| std::ptr::eq(r, first))
}

fn at(vm: u32, step: &str) -> String {
    format!("{step}@{vm:#x}")
}

// ---- scenarios ------------------------------------------------------------------------------------

/// Scenario 17: VM current, interrupts enabled, IRQ unmasked: Virt_Int
/// runs before Set_Int_Request returns; the VM's handler runs, its EOI
/// reaches the EOI procedure, its return is the IRET.
#[test]
fn set_int_request_from_an_event_simulates_before_it_returns() {
    let run = scenario(
        machine("4.0", &["SCRIPT"], "install 13; unmask 5; yield 50", ""),
        || noting(5),
        20,
        DOS1,
        |dev, vmm| {
            dev.note(vmm, "before");
            vmm.vpicd().set_int_request(handle(dev), VmHandle(DOS1)).unwrap();
            dev.note(vmm, "after");
        },
    )
    .run();
    run.assert_ok();
    assert_eq!(
        notes(&run),
        ["mask_change masking=false", "before", "virt_int vm=0x10002", "after", "eoi", "iret timed_out=false"]
    );
    assert_eq!(
        steps(run.trace(), 5),
        [at(DOS1, "requested"), at(DOS1, "delivered"), at(DOS1, "eoi"), at(DOS1, "cleared"), at(DOS1, "iret")]
    );
    assert_eq!(outputs(&run), ["handler"]);
    // The Time_Critical boost while the request was pending, taken back at the IRET.
    let boosts: Vec<i64> = run
        .trace()
        .matching(json!({"kind": "priority", "reason": "virtual_irq"}))
        .iter()
        .map(|r| r["boost"].as_i64().unwrap())
        .collect();
    assert_eq!(boosts, [TIME_CRITICAL_BOOST as i64, -(TIME_CRITICAL_BOOST as i64)]);
}

/// Scenario 16: the request waits while the VM has interrupts disabled
/// (boosted meanwhile) and is simulated at its STI.
#[test]
fn a_request_waits_for_sti_with_the_time_critical_boost() {
    let run = scenario(
        machine("4.0", &["SCRIPT"], "install 13; unmask 5; cli; yield 1000; sti", ""),
        || noting(5),
        5,
        DOS1,
        |dev, vmm| {
            vmm.vpicd().set_int_request(handle(dev), VmHandle(DOS1)).unwrap();
            dev.note(vmm, "requested");
        },
    )
    .run();
    run.assert_ok();
    let t = run.trace();
    assert_eq!(notes(&run)[1..3], ["requested".to_string(), "virt_int vm=0x10002".to_string()], "{}", t.tail(40));
    let requested = position(t, json!({"kind": "virtual_irq", "step": "requested"})).unwrap();
    let sti = position(t, json!({"kind": "if_flag", "vm": DOS1, "enabled": true})).unwrap();
    let delivered = position(t, json!({"kind": "virtual_irq", "step": "delivered"})).unwrap();
    let boost =
        position(t, json!({"kind": "priority", "reason": "virtual_irq", "boost": TIME_CRITICAL_BOOST})).unwrap();
    assert!(
        requested < sti && sti < delivered,
        "{requested} {sti} {delivered} {:?}",
        t.matching(json!({"kind": "if_flag"}))
    );
    assert!(boost < sti, "boosted while the request waits");
    assert_eq!(outputs(&run), ["handler"]);
}

/// Scenario 18: a request cleared before delivery is never simulated.
#[test]
fn clear_before_delivery_cancels_the_interrupt() {
    // IRQAPP keeps IRQ 5 masked (as at start-up) until later.
    let run = scenario(
        machine("4.0", &["SCRIPT"], "install 13; yield 1000; unmask 5", ""),
        || noting(5),
        5,
        DOS1,
        |dev, vmm| {
            vmm.vpicd().set_int_request(handle(dev), VmHandle(DOS1)).unwrap();
            vmm.vpicd().clear_int_request(handle(dev), VmHandle(DOS1)).unwrap();
        },
    )
    .run();
    run.assert_ok();
    assert_eq!(steps(run.trace(), 5), [at(DOS1, "requested"), at(DOS1, "cleared")]);
    assert!(!notes(&run).iter().any(|n| n.starts_with("virt_int")));
    assert!(outputs(&run).is_empty());
}

/// Scenario 19: an EOI procedure that leaves the request set gets the
/// interrupt simulated again (level-triggered); here it clears it the
/// second time.
#[test]
fn an_eoi_that_leaves_the_request_set_simulates_it_again() {
    let run = scenario(
        machine("4.0", &["SCRIPT"], "install 13; unmask 5; yield 80", ""),
        || {
            IrqDescriptor::new(5, |_: &ScriptDevice, _: &Vmm<'_>, _| true).eoi(
                |dev: &ScriptDevice, vmm: &Vmm<'_>, e: IrqEvent| {
                    let n = count_call(dev);
                    dev.note(vmm, format!("eoi {n}"));
                    if n == 2 {
                        vmm.vpicd().clear_int_request(e.handle, e.vm).unwrap();
                    }
                },
            )
        },
        10,
        DOS1,
        |dev, vmm| vmm.vpicd().set_int_request(handle(dev), VmHandle(DOS1)).unwrap(),
    )
    .run();
    run.assert_ok();
    assert_eq!(notes(&run), ["eoi 1", "eoi 2"]);
    assert_eq!(outputs(&run), ["handler", "handler"]);
    assert_eq!(
        steps(run.trace(), 5),
        [
            at(DOS1, "requested"),
            at(DOS1, "delivered"),
            at(DOS1, "eoi"),
            at(DOS1, "iret"),
            at(DOS1, "delivered"),
            at(DOS1, "eoi"),
            at(DOS1, "cleared"),
            at(DOS1, "iret"),
        ]
    );
}

/// Scenario 20: the VM's writes to its PIC's mask reach Mask_Change:
/// masking with ECX non-zero, unmasking with 0.
#[test]
fn masking_in_the_virtual_pic_calls_mask_change() {
    let run = scenario(
        machine("4.0", &["SCRIPT"], "unmask 5; mask 5; unmask 5; mask 3; exit", ""),
        || noting(5),
        1000,
        DOS1,
        |_, _| {},
    )
    .run();
    run.assert_ok();
    assert_eq!(
        notes(&run),
        ["mask_change masking=false", "mask_change masking=true", "mask_change masking=false"],
        "{}",
        run.trace().tail(40)
    );
}

/// Scenario 12: `_Simulate_VM_IO(20h, Byte_Output, 20h)` is the VM's EOI.
#[test]
fn simulate_vm_io_of_an_eoi_is_the_vms_eoi() {
    let run = scenario(
        machine("4.0", &["SCRIPT"], "noeoi; install 13; unmask 5; yield 80", ""),
        || noting(5),
        10,
        DOS1,
        |dev, vmm| {
            vmm.vpicd().set_int_request(handle(dev), VmHandle(DOS1)).unwrap();
            let s = vmm.vpicd().get_complete_status(handle(dev), VmHandle(DOS1)).unwrap();
            dev.note(vmm, format!("in service {}", s & VPICD_STAT_IN_SERVICE != 0));
            let h = handle(dev);
            vmm.set_global_time_out(20, move |dev: &ScriptDevice, vmm, _| {
                vmm.schedule_vm_event(VmHandle(DOS1), move |dev: &ScriptDevice, vmm, _| {
                    dev.note(vmm, "simulating the EOI");
                    vmm.simulate_vm_io(BYTE_OUTPUT, 0x20, 0x20).unwrap();
                    let s = vmm.vpicd().get_complete_status(h, VmHandle(DOS1)).unwrap();
                    dev.note(vmm, format!("in service {}", s & VPICD_STAT_IN_SERVICE != 0));
                })
                .unwrap();
                let _ = dev;
            });
        },
    )
    .run();
    run.assert_ok();
    assert_eq!(
        notes(&run),
        [
            "mask_change masking=false",
            "virt_int vm=0x10002",
            "in service true",
            "iret timed_out=false",
            "simulating the EOI",
            "eoi",
            "in service false"
        ]
    );
    let eoi = run.trace().matching(json!({"kind": "io", "port": 0x20, "direction": "out", "value": 0x20}));
    assert_eq!(eoi.len(), 1);
    assert_eq!(eoi[0]["handled_by"], "VPICD");
}

/// Scenario 13: one IRQ, one non-sharing owner: a second Virtualize_IRQ
/// (sharing or not) returns carry; the first owner still gets the IRQ.
#[test]
fn a_second_virtualize_of_an_unshared_irq_returns_carry() {
    let run = scenario(
        machine("4.0", &["SCRIPT"], "", "[[irq]]\nirq = 5\nat = 20\n"),
        || noting(5),
        10,
        SYS,
        |dev, vmm| {
            let plain = vmm.vpicd().virtualize_irq(IrqDescriptor::new(5, |_: &ScriptDevice, _: &Vmm<'_>, _| true));
            let shared = vmm.vpicd().virtualize_irq(
                IrqDescriptor::new(5, |_: &ScriptDevice, _: &Vmm<'_>, _| true).options(VPICD_OPT_CAN_SHARE),
            );
            dev.note(vmm, format!("{:?} {:?}", plain.map_err(|e| e.code), shared.map_err(|e| e.code)));
            dev.note(vmm, format!("count {}", vmm.vpicd().get_virtualization_count(5).unwrap()));
        },
    )
    .run();
    run.assert_ok();
    assert_eq!(
        notes(&run),
        [
            format!("Err({}) Err({})", VmmError::FAILED.code, VmmError::FAILED.code),
            "count 1".into(),
            format!("hw_int vm={SYS:#x}")
        ]
    );
    assert_eq!(run.violations(), 0);
}

/// SHARER: virtualizes IRQ 5 sharing it at Device_Init (before SCRIPT);
/// its Hw_Int claims the interrupt when its state says so.
struct Sharer {
    claim: Cell<bool>,
}

impl VxD for Sharer {
    const DEVICE: Device = Device::new("SHARER");
    fn create(vmm: &Vmm<'_>) -> Result<Self, String> {
        let claim = vmm.get_profile_string(Some("SHARER"), "claim").ok().flatten().is_some_and(|e| e.value == "yes");
        Ok(Sharer { claim: Cell::new(claim) })
    }
    fn control(&self, vmm: &Vmm<'_>, msg: ControlMessage) -> Carry {
        if msg.message == DEVICE_INIT {
            let d = IrqDescriptor::new(5, |s: &Sharer, vmm: &Vmm<'_>, _| {
                vmm.out_debug_string("sharer hw_int");
                s.claim.get()
            })
            .options(VPICD_OPT_CAN_SHARE);
            let h = vmm.vpicd().virtualize_irq(d).unwrap();
            vmm.vpicd().physically_unmask(h).unwrap();
        }
        Carry::Clear
    }
}

/// Scenario 14: two devices share IRQ 5: the last to virtualize (SCRIPT)
/// is called first; "not mine" passes the interrupt on, "mine" stops it.
#[test]
fn a_shared_irq_calls_the_last_virtualized_first_until_one_claims_it() {
    let sharing = |script_claims: bool| {
        move || {
            IrqDescriptor::new(5, move |dev: &ScriptDevice, vmm: &Vmm<'_>, _| {
                dev.note(vmm, "script hw_int");
                script_claims
            })
            .options(VPICD_OPT_CAN_SHARE)
        }
    };
    let hw = |t: &Trace| -> Vec<String> {
        t.matching(json!({"kind": "debug_string"})).iter().map(|r| r["text"].as_str().unwrap().to_string()).collect()
    };
    for (claims, expected) in [(false, vec!["script hw_int", "sharer hw_int"]), (true, vec!["script hw_int"])] {
        let manifest = machine("4.0", &["SHARER", "SCRIPT"], "", "[SHARER]\nclaim = \"yes\"\n");
        let mut session = scenario(manifest, sharing(claims), 1000, SYS, |_, _| {}).device::<Sharer>().boot();
        session.raise_irq(5);
        let run = session.finish();
        run.assert_ok();
        assert_eq!(hw(run.trace()), expected, "SCRIPT claims: {claims}");
    }
}

/// A VM with no program of the emulator's (here the system VM) runs only
/// its vector table's default handlers: the interrupt is simulated, the
/// default handler sends the EOI and returns.
#[test]
fn a_vm_without_programs_takes_interrupts_through_its_default_handlers() {
    let run = scenario(
        machine("4.0", &["SCRIPT"], "", ""),
        || noting(5),
        10,
        SYS,
        |dev, vmm| {
            // The system VM has IRQ 5 masked at start-up.
            vmm.simulate_vm_io(BYTE_OUTPUT, 0x21, 0x00).unwrap();
            vmm.vpicd().set_int_request(handle(dev), VmHandle(SYS)).unwrap();
        },
    )
    .run();
    run.assert_ok();
    let once = ["requested", "delivered", "eoi", "cleared", "iret"].map(|s| at(SYS, s));
    assert_eq!(steps(run.trace(), 5), once);
    assert!(notes(&run).contains(&"iret timed_out=false".to_string()));
}

/// Scenario 22: Force_Default_Behavior un-virtualizes: the IRQ can be
/// virtualized again, and the old handle is invalid (a violation).
#[test]
fn force_default_behavior_frees_the_irq_and_invalidates_the_handle() {
    let run = scenario(
        machine("4.0", &["SCRIPT"], "", ""),
        || noting(5),
        10,
        SYS,
        |dev, vmm| {
            let v = vmm.vpicd();
            let old = handle(dev);
            v.force_default_behavior(old).unwrap();
            let again = v.virtualize_irq(IrqDescriptor::new(5, |_: &ScriptDevice, _: &Vmm<'_>, _| true));
            dev.note(vmm, format!("again ok {}", again.is_ok()));
            let stale = v.set_int_request(old, VmHandle(SYS));
            dev.note(vmm, format!("stale {:?}", stale.map_err(|e| e.code)));
        },
    )
    .run();
    assert_eq!(notes(&run), ["again ok true".to_string(), format!("stale Err({})", VmmError::VIOLATION.code)]);
    assert_eq!(run.trace().matching(json!({"kind": "violation", "code": "BAD_IRQ_HANDLE"})).len(), 1);
}

/// Scenario 21: Get_IRQ_Complete_Status's carry says whether a device
/// virtualized the IRQ: clear before Virtualize_IRQ, set after it, clear
/// again after Force_Default_Behavior.
#[test]
fn get_irq_complete_status_sets_carry_once_the_irq_is_virtualized() {
    let run = scenario(
        machine("4.0", &["SCRIPT"], "", ""),
        || noting(5),
        10,
        SYS,
        |dev, vmm| {
            let v = vmm.vpicd();
            let carry = |irq| v.get_irq_complete_status(irq).map(|s| s.virtualized);
            dev.note(vmm, format!("9 before {:?}", carry(9)));
            let h = v.virtualize_irq(IrqDescriptor::new(9, |_: &ScriptDevice, _: &Vmm<'_>, _| true)).unwrap();
            dev.note(vmm, format!("9 after {:?}", carry(9)));
            v.force_default_behavior(h).unwrap();
            dev.note(vmm, format!("9 default again {:?}", carry(9)));
            dev.note(vmm, format!("5 {:?}", carry(5)));
        },
    )
    .run();
    run.assert_ok();
    assert_eq!(notes(&run), ["9 before Ok(false)", "9 after Ok(true)", "9 default again Ok(false)", "5 Ok(true)"]);
    assert_eq!(run.violations(), 0);
}

/// Scenario 25: Virtualize_IRQ at interrupt time (from a Hw_Int procedure)
/// is refused: it is not asynchronous.
#[test]
fn virtualize_irq_at_interrupt_time_is_refused() {
    let mut session = scenario(
        machine("4.0", &["SCRIPT"], "", ""),
        || {
            IrqDescriptor::new(5, |dev: &ScriptDevice, vmm: &Vmm<'_>, _| {
                let r = vmm.vpicd().virtualize_irq(IrqDescriptor::new(9, |_: &ScriptDevice, _: &Vmm<'_>, _| true));
                dev.note(vmm, format!("{:?}", r.map_err(|e| e.code)));
                true
            })
        },
        1000,
        SYS,
        |_, _| {},
    )
    .boot();
    session.raise_irq(5);
    let run = session.finish();
    assert_eq!(notes(&run), [format!("Err({})", VmmError::VIOLATION.code)]);
    let v = run.trace().matching(json!({"kind": "violation", "code": "SYNC_SERVICE_AT_INTERRUPT"}));
    assert_eq!(v.len(), 1);
    assert_eq!(v[0]["service"], "VPICD_Virtualize_IRQ");
}

/// Scenario 26: VPICD_Opt_Ref_Data hands VID_Hw_Int_Ref to Hw_Int in EDX.
#[test]
fn ref_data_reaches_hw_int_in_edx() {
    let mut session = scenario(
        machine("4.0", &["SCRIPT"], "", ""),
        || {
            IrqDescriptor::new(5, |dev: &ScriptDevice, vmm: &Vmm<'_>, e: IrqEvent| {
                dev.note(vmm, format!("edx={:#x}", e.ref_data));
                true
            })
            .ref_data(0x1234)
        },
        1000,
        SYS,
        |_, _| {},
    )
    .boot();
    session.raise_irq(5);
    let run = session.finish();
    run.assert_ok();
    assert_eq!(notes(&run), ["edx=0x1234"]);
}

/// Scenario 27: under 4.0 with Virt_Int_Reject, a Virt_Int procedure that
/// returns carry set withdraws the request: nothing is simulated.
#[test]
fn virt_int_reject_withdraws_the_request() {
    let run = scenario(
        machine("4.0", &["SCRIPT"], "install 13; unmask 5; yield 50", ""),
        || {
            IrqDescriptor::new(5, |_: &ScriptDevice, _: &Vmm<'_>, _| true).options(VPICD_OPT_VIRT_INT_REJECT).virt_int(
                |dev: &ScriptDevice, vmm: &Vmm<'_>, _| {
                    dev.note(vmm, "reject");
                    false
                },
            )
        },
        10,
        DOS1,
        |dev, vmm| vmm.vpicd().set_int_request(handle(dev), VmHandle(DOS1)).unwrap(),
    )
    .run();
    run.assert_ok();
    assert_eq!(notes(&run), ["reject"]);
    assert_eq!(steps(run.trace(), 5), [at(DOS1, "requested"), at(DOS1, "cleared")]);
    assert!(outputs(&run).is_empty());
}

/// Scenario 24: an IRQ unmasked at start-up (IRQ 6) is global: an
/// interrupt nobody virtualized goes to the VM that is current when it
/// arrives, whose default handler (no handler of its own) sends the EOI.
#[test]
fn a_global_irq_goes_to_the_current_vm() {
    let run = Scenario::new(&machine("4.0", &[], "yield 1000", "[[irq]]\nirq = 6\nat = 5\nevery = 5\ncount = 2\n"))
        .module::<IrqApp>()
        .run();
    run.assert_ok();
    let t = run.trace();
    let first = position(t, json!({"kind": "virtual_irq", "irq": 6})).unwrap();
    let current = t.records()[..first]
        .iter()
        .rev()
        .find(|r| r["kind"] == "vm_switch")
        .map_or(SYS as u64, |r| r["vm"].as_u64().unwrap()) as u32;
    let once = ["requested", "delivered", "eoi", "cleared", "iret"].map(|s| at(current, s));
    assert_eq!(steps(t, 6), [once.clone(), once].concat(), "{}", t.tail(30));
}

/// Scenario 23: IRQ 10 is masked at start-up, so owned: the first VM to
/// unmask it owns it and gets its interrupts; a second VM that unmasks it
/// is terminated.
#[test]
fn an_owned_irq_goes_to_the_first_vm_to_unmask_it_and_a_second_is_terminated() {
    let manifest = format!(
        "{}[[vm]]\nname = \"DOS2\"\nprogram = \"IRQAPP\"\nargs = \"yield 20; unmask 10; yield 50\"\nat = 1\n\
         [[irq]]\nirq = 10\nat = 10\n",
        machine("4.0", &[], "install 114; unmask 10; yield 100", "")
    );
    let run = Scenario::new(&manifest).module::<IrqApp>().run();
    let t = run.trace();
    assert_eq!(steps(t, 10)[..2], [at(DOS1, "requested"), at(DOS1, "delivered")], "{}", t.tail(30));
    assert_eq!(outputs(&run), ["handler"]);
    let gone = t.matching(json!({"kind": "vm_destroyed", "vm": DOS2}));
    assert_eq!(gone.len(), 1, "{}", t.tail(30));
    assert_eq!(gone[0]["reason"], "irq_conflict");
    assert_eq!(gone[0]["flags"], VNE_CRASHED);
}

// ---- a machine-code DOS program --------------------------------------------------------------------

/// A `.COM` that hooks INT 0Dh (IRQ 5) with INT 21h AH=25h, unmasks IRQ 5,
/// enables interrupts and halts until its handler ran twice; the handler
/// counts, sends the EOI and IRETs. Then it prints `got 2` and exits.
const IRQCOM: &str = r#"
org 100h
    mov ax, 250Dh
    mov dx, handler
    int 21h
    in al, 21h
    and al, 0DFh
    out 21h, al
    sti
idle:
    hlt
    cmp byte [count], 2
    jb idle
    mov ah, 09h
    mov dx, msg
    int 21h
    mov ax, 4C00h
    int 21h
handler:
    push ax
    inc byte [cs:count]
    mov al, 20h
    out 20h, al
    pop ax
    iret
count: db 0
msg: db 'got 2', 13, 10, '$'
"#;

fn irqcom_dir() -> std::path::PathBuf {
    assemble("vpicd", "irqcom", &[("IRQCOM.COM", IRQCOM)])
}

/// A DOS program's handler is entered through its vector table with FLAGS,
/// CS and IP pushed; its `OUT 20h` is the EOI and its `IRET` VPICD's IRET.
#[test]
fn a_dos_programs_handler_gets_the_interrupt_through_its_vector_table() {
    let manifest = machine("4.0", &["SCRIPT"], "", "[[vm]]\nname = \"DOS1\"\nprogram = \"IRQCOM.COM\"\n");
    let run = scenario(
        manifest,
        || noting(5),
        20,
        DOS1,
        |dev, vmm| {
            vmm.vpicd().set_int_request(handle(dev), VmHandle(DOS1)).unwrap();
            let h = handle(dev);
            vmm.set_global_time_out(20, move |_: &ScriptDevice, vmm, _| {
                vmm.schedule_vm_event(VmHandle(DOS1), move |_: &ScriptDevice, vmm, _| {
                    vmm.vpicd().set_int_request(h, VmHandle(DOS1)).unwrap();
                })
                .unwrap();
            });
        },
    )
    .plugin_dir(irqcom_dir())
    .run();
    run.assert_ok();
    assert_eq!(outputs(&run), ["got 2"]);
    let s = steps(run.trace(), 5);
    assert_eq!(s.iter().filter(|x| x.starts_with("iret@")).count(), 2, "{s:?}");
    assert_eq!(s.iter().filter(|x| x.starts_with("eoi@")).count(), 2, "{s:?}");
    assert!(notes(&run).iter().filter(|n| *n == "iret timed_out=false").count() == 2);
}

/// A `Hook_V86_Int_Chain` hook sees a hardware interrupt before the
/// program's handler: the first one it takes (sending the EOI as the
/// handler would), the others it passes on to the program's vector.
#[test]
fn a_v86_int_chain_hook_sees_hardware_interrupts_before_the_programs_handler() {
    let manifest = machine("4.0", &["SCRIPT"], "", "[[vm]]\nname = \"DOS1\"\nprogram = \"IRQCOM.COM\"\n");
    let run = scenario(
        manifest,
        || noting(5),
        20,
        DOS1,
        |dev, vmm| {
            let h = handle(dev);
            let seen = Cell::new(0u32);
            vmm.hook_v86_int_chain(0x0D, move |_: &ScriptDevice, vmm: &Vmm<'_>, _n, vm| {
                seen.set(seen.get() + 1);
                if seen.get() == 1 {
                    vmm.vpicd().virtual_eoi(h, vm).unwrap();
                    HookAction::Consume
                } else {
                    HookAction::PassOn
                }
            })
            .unwrap();
            for k in 0..3 {
                vmm.set_global_time_out(20 * k, move |_: &ScriptDevice, vmm, _| {
                    vmm.schedule_vm_event(VmHandle(DOS1), move |_: &ScriptDevice, vmm, _| {
                        vmm.vpicd().set_int_request(h, VmHandle(DOS1)).unwrap();
                    })
                    .unwrap();
                });
            }
        },
    )
    .plugin_dir(irqcom_dir())
    .run();
    run.assert_ok();
    let t = run.trace();
    let passed: Vec<bool> = t
        .matching(json!({"kind": "int_hook", "vector": 0x0D}))
        .iter()
        .map(|r| r["passed"].as_bool().unwrap())
        .collect();
    assert_eq!(passed, [false, true, true]);
    assert_eq!(outputs(&run), ["got 2"], "the program's handler ran for the two passed on");
    let s = steps(t, 5);
    assert_eq!(s.iter().filter(|x| x.starts_with("iret@")).count(), 3, "{s:?}");
    assert_eq!(s.iter().filter(|x| x.starts_with("eoi@")).count(), 3, "{s:?}");
}

// ---- bad arguments and the manifest ------------------------------------------------------------------

#[test]
fn an_irq_above_15_is_a_violation() {
    let run = scenario(
        machine("4.0", &["SCRIPT"], "", ""),
        || noting(5),
        10,
        SYS,
        |dev, vmm| {
            let r = vmm.vpicd().virtualize_irq(IrqDescriptor::new(16, |_: &ScriptDevice, _: &Vmm<'_>, _| true));
            dev.note(vmm, format!("{:?}", r.map_err(|e| e.code)));
            let r = vmm.vpicd().convert_irq_to_int(16, VmHandle(SYS));
            dev.note(vmm, format!("{:?}", r.map_err(|e| e.code)));
        },
    )
    .run();
    let v = format!("Err({})", VmmError::VIOLATION.code);
    assert_eq!(notes(&run), [v.clone(), v]);
    assert_eq!(run.trace().matching(json!({"kind": "violation", "code": "BAD_IRQ"})).len(), 2);
}

#[test]
fn virtualize_irq_by_vxdcall_is_refused_and_register_services_work() {
    let run = scenario(
        machine("3.1", &["SCRIPT"], "", ""),
        || noting(5),
        10,
        SYS,
        |dev, vmm| {
            let mut call = ServiceCall::default();
            call.regs.eax = 5;
            let cf = vmm.vxd_call(0x0003_000B, &mut call).map(|()| call.regs.flags & 1);
            dev.note(vmm, format!("irq status cf={cf:?}"));
            let mut call = ServiceCall::default();
            call.regs.eax = 5;
            call.regs.ebx = SYS;
            let vec = vmm.vxd_call(0x0003_000D, &mut call).map(|()| call.regs.eax);
            dev.note(vmm, format!("vector {vec:?}"));
            // EDI → a VPICD_IRQ_Descriptor (3.1: 0x1C bytes) for IRQ 7.
            let d = vmm.heap_allocate(0x1C, 0).unwrap();
            let mut bytes = [0u8; 0x1C];
            bytes[0] = 7;
            vmm.mem_write(d, &bytes).unwrap();
            let mut call = ServiceCall::default();
            call.regs.edi = d;
            let cf = vmm.vxd_call(0x0003_0001, &mut call).map(|()| call.regs.flags & 1);
            dev.note(vmm, format!("virtualize cf={cf:?}"));
        },
    )
    .run();
    assert_eq!(notes(&run), ["irq status cf=Ok(1)", "vector Ok(13)", "virtualize cf=Ok(1)"]);
    let v = run.trace().matching(json!({"kind": "violation", "code": "VPICD_SERVICE_BY_VXDCALL"}));
    assert_eq!(v.len(), 1);
    assert!(v[0]["message"].as_str().unwrap().contains("IRQ 7 (options 0x0000"), "{v:?}");
}

#[test]
fn irq_entries_in_the_manifest_are_checked() {
    for (entry, why) in [
        ("irq = 16\nat = 5", "irq must be 0-15"),
        ("irq = 3\nat = 5\ncount = 0", "count must be a positive number"),
        ("irq = 3\nat = 5\nevery = 0", "every must be longer than 0"),
        ("irq = 3", "missing field `at`"),
    ] {
        let err = Scenario::new(&format!("[386Enh]\ndevice = [\"*VPICD\"]\n[[irq]]\n{entry}\n")).machine().err();
        let text = err.map(|e| e.to_string()).unwrap_or_default();
        assert!(text.contains(why), "{entry}: {text}");
    }
}

#[test]
fn irq_entries_without_vpicd_are_an_error() {
    // A one-line manifest: the error names a position in it.
    let run = Scenario::new("[386Enh]\ndevice = []\n[[irq]]\nirq = 4\nat = 5\n").run();
    let text = run.expect_error().to_string();
    assert!(text.contains("add \"*VPICD\"") && text.contains("IRQ 4") && text.contains("manifest#1:3"), "{text}");
}

#[test]
fn raising_an_irq_without_vpicd_is_an_error_of_the_test_kit() {
    let mut m = Scenario::new("[386Enh]\ndevice = []\n").machine().unwrap();
    m.boot().unwrap();
    assert!(m.raise_physical_irq(5).unwrap_err().to_string().contains("VPICD is not loaded"));
    let _ = DOS2;
}

/// Pacing as VCD does it (one character per IRET): the IRET procedure sets
/// the next request, which is simulated once the handler returned.
#[test]
fn an_iret_procedure_may_set_the_next_request() {
    let run = scenario(
        machine("4.0", &["SCRIPT"], "install 13; unmask 5", ""),
        || {
            IrqDescriptor::new(5, |_: &ScriptDevice, _: &Vmm<'_>, _| true)
                .eoi(|_: &ScriptDevice, vmm: &Vmm<'_>, e: IrqEvent| {
                    vmm.vpicd().clear_int_request(e.handle, e.vm).unwrap()
                })
                .iret(|dev: &ScriptDevice, vmm: &Vmm<'_>, e: IrqEvent, _| {
                    let n = count_call(dev) + 1;
                    if n <= 3 {
                        vmm.vpicd().set_int_request(e.handle, e.vm).unwrap();
                    }
                })
        },
        10,
        DOS1,
        |dev, vmm| vmm.vpicd().set_int_request(handle(dev), VmHandle(DOS1)).unwrap(),
    )
    .run();
    run.assert_ok();
    assert_eq!(outputs(&run), ["handler"; 3]);
    let once = ["requested", "delivered", "eoi", "cleared", "iret"].map(|s| at(DOS1, s));
    assert_eq!(steps(run.trace(), 5), [once.clone(), once.clone(), once].concat());
}

// ---- a device built as a plugin (plugins/fixtures/vpicd) ---------------------------------------------

/// IRQDEV, a separately built plugin, owns IRQ 5: the `[[irq]]` hardware
/// reaches its `Hw_Int`, the VM that unmasked the IRQ gets the interrupt,
/// and the device's procedures see the EOI and the IRET.
#[test]
fn a_plugin_device_owns_an_irq_and_the_vm_that_unmasked_it_gets_the_interrupts() {
    let manifest = format!(
        "{}[IRQDEV]\nirq = 5\n",
        machine(
            "4.0",
            &["fixture-vpicd"],
            "install 13; unmask 5",
            "[[irq]]\nirq = 5\nat = 10\nevery = 10\ncount = 3\n"
        )
    );
    let run = Scenario::new(&manifest).module::<IrqApp>().run();
    run.assert_ok();
    assert_eq!(outputs(&run), ["handler"; 3]);
    let irets = run.trace().matching(json!({"kind": "note", "note": "irqdev_iret"}));
    assert_eq!(irets.len(), 3, "{}", run.trace().tail(30));
    assert!(irets.iter().all(|r| r["fields"]["vm"] == DOS1 && r["fields"]["timed_out"] == false), "{irets:?}");
}

/// A dynamic device un-virtualizes its IRQ at `Sys_Dynamic_Device_Exit`
/// (then it can virtualize it again when loaded again); one that does not
/// gets an `UNLOAD_LEAK` naming the IRQ, and the host un-virtualizes it.
#[test]
fn a_dynamic_device_that_keeps_its_irq_at_unload_leaks_it() {
    for keep in [false, true] {
        let mut m =
            Scenario::new(&format!("[386Enh]\ndevice = [\"*VPICD\", \"*VXDLDR\"]\n[IRQDEV]\nkeep_on_exit = {keep}\n"))
                .machine()
                .unwrap();
        m.boot().unwrap();
        m.load_dynamic_device("fixture-vpicd", true).unwrap();
        m.unload_dynamic_device("IRQDEV").unwrap();
        m.load_dynamic_device("fixture-vpicd", true).unwrap();
        m.shutdown().unwrap();
        let t = Trace::of(&m);
        let leaks = t.matching(json!({"kind": "violation", "code": "UNLOAD_LEAK", "device": "IRQDEV"}));
        let inits = t.matching(json!({"kind": "control", "device": "IRQDEV", "message": "Sys_Dynamic_Device_Init"}));
        assert_eq!(inits.len(), 2);
        assert!(inits.iter().all(|r| r["result"] == "clear"), "virtualized again after the unload: {inits:?}");
        if keep {
            assert_eq!(leaks.len(), 1, "{}", t.tail(20));
            assert!(leaks[0]["message"].as_str().unwrap().contains("virtualized IRQ 5"), "{leaks:?}");
        } else {
            assert!(leaks.is_empty(), "{leaks:?}");
        }
    }
}

/// A physical interrupt that arrives while the IRQ is physically masked
/// waits in the IRR (`Test_Phys_Request`, `Phys_Req`); `Physically_Unmask`
/// lets it in.
#[test]
fn a_physically_masked_irq_waits_until_it_is_unmasked() {
    let run = scenario(
        machine("4.0", &["SCRIPT"], "", "[[irq]]\nirq = 5\nat = 15\n"),
        || noting(5),
        10,
        SYS,
        |dev, vmm| {
            let h = handle(dev);
            vmm.vpicd().physically_mask(h).unwrap();
            vmm.set_global_time_out(10, move |dev: &ScriptDevice, vmm, _| {
                let v = vmm.vpicd();
                let s = v.get_complete_status(h, VmHandle(SYS)).unwrap();
                dev.note(
                    vmm,
                    format!(
                        "held {} phys_mask {} phys_req {}",
                        v.test_phys_request(h).unwrap(),
                        s & VPICD_STAT_PHYS_MASK != 0,
                        s & VPICD_STAT_PHYS_REQ != 0
                    ),
                );
                v.physically_unmask(h).unwrap();
                dev.note(vmm, format!("held {}", v.test_phys_request(h).unwrap()));
            });
        },
    )
    .run();
    run.assert_ok();
    assert_eq!(notes(&run), ["held true phys_mask true phys_req true", "hw_int vm=0x10001", "held false"]);
}

/// Under Windows 3.1 VPICD has its 3.1 services only: `VPICD_Virtual_EOI`
/// (4.0) is the fatal "Invalid VxD dynamic link call".
#[test]
fn virtual_eoi_does_not_exist_under_windows_3_1() {
    let run = scenario(
        machine("3.1", &["SCRIPT"], "", ""),
        || noting(5),
        10,
        SYS,
        |dev, vmm| {
            let _ = vmm.vpicd().virtual_eoi(handle(dev), VmHandle(SYS));
            dev.note(vmm, "returned");
        },
    )
    .run();
    assert!(run.expect_error().to_string().contains("Invalid VxD dynamic link call"), "{:?}", run.error());
    assert!(notes(&run).is_empty());
}

/// `--timeline` shows each `virtual_irq` step on its VM's track.
#[test]
fn the_timeline_shows_virtual_irq_steps_on_the_vms_track() {
    let mut m = scenario(
        machine("4.0", &["SCRIPT"], "install 13; unmask 5", ""),
        || noting(5),
        10,
        DOS1,
        |dev, vmm| {
            vmm.vpicd().set_int_request(handle(dev), VmHandle(DOS1)).unwrap();
        },
    )
    .machine()
    .unwrap();
    m.boot().unwrap();
    m.run().unwrap();
    let timeline = vmm_host::timeline::chrome_trace(&m.trace());
    let events = timeline["traceEvents"].as_array().unwrap();
    let steps: Vec<&str> =
        events.iter().filter(|e| e["cat"] == "virtual_irq").map(|e| e["name"].as_str().unwrap()).collect();
    assert_eq!(steps, ["IRQ 5 requested", "IRQ 5 delivered", "IRQ 5 eoi", "IRQ 5 cleared", "IRQ 5 iret"]);
    let first = events.iter().find(|e| e["cat"] == "virtual_irq").unwrap();
    let track = events.iter().find(|e| e["name"] == "thread_name" && e["tid"] == first["tid"]).expect("track name");
    assert_eq!(track["args"]["name"], "DOS1");
}

/// Hardware interrupts do not wait for a sleeping Rust program: its
/// handler runs when the interrupt is simulated, and the program sleeps on.
#[test]
fn a_sleeping_rust_program_takes_its_interrupt_at_once() {
    let run = scenario(
        machine("4.0", &["SCRIPT"], "install 13; unmask 5; sleep 100; exit", ""),
        || noting(5),
        10,
        DOS1,
        |dev, vmm| vmm.vpicd().set_int_request(handle(dev), VmHandle(DOS1)).unwrap(),
    )
    .run();
    run.assert_ok();
    let t = run.trace();
    let handler = t.matching(json!({"kind": "program_output", "text": "handler"}));
    assert_eq!(handler.len(), 1, "{}", t.tail(20));
    assert_eq!(handler[0]["t"], 10);
    let ended = t.matching(json!({"kind": "program_ended", "module": "IRQAPP"}));
    assert_eq!(ended[0]["t"], 100, "the program slept on");
}

/// A request for a VM that is not running waits for it, boosted, and is
/// simulated when that VM runs.
#[test]
fn a_request_for_another_vm_is_simulated_when_that_vm_runs() {
    let run = scenario(
        machine("4.0", &["SCRIPT"], "install 13; unmask 5; sleep 150", ""),
        || noting(5),
        10,
        SYS,
        |dev, vmm| {
            vmm.vpicd().set_int_request(handle(dev), VmHandle(DOS1)).unwrap();
            dev.note(vmm, "requested from the system VM");
        },
    )
    .run();
    run.assert_ok();
    let t = run.trace();
    let notes = notes(&run);
    assert_eq!(notes[1..3], ["requested from the system VM".to_string(), "virt_int vm=0x10002".to_string()]);
    let requested = position(t, json!({"kind": "virtual_irq", "step": "requested", "vm": DOS1})).unwrap();
    let switch = t.records()[requested..].iter().position(|r| r["kind"] == "vm_switch" && r["vm"] == DOS1).unwrap();
    let delivered = position(t, json!({"kind": "virtual_irq", "step": "delivered", "vm": DOS1})).unwrap();
    assert!(requested + switch < delivered, "{}", t.tail(30));
    assert_eq!(outputs(&run), ["handler"]);
}

/// A request no EOI procedure ever clears (level-triggered, the device
/// never serviced) keeps the VM taking interrupts, but the machine goes on:
/// each costs virtual time, and the run ends at `until`.
#[test]
fn a_request_never_cleared_does_not_stall_the_machine() {
    let run = scenario(
        machine_until("4.0", &["SCRIPT"], "unmask 5", "", 30),
        || IrqDescriptor::new(5, |_: &ScriptDevice, _: &Vmm<'_>, _| true),
        10,
        DOS1,
        |dev, vmm| vmm.vpicd().set_int_request(handle(dev), VmHandle(DOS1)).unwrap(),
    )
    .run();
    run.assert_ok();
    let t = run.trace();
    let delivered = t.count(json!({"kind": "virtual_irq", "step": "delivered"}));
    // One default handler per ring-3 step (50 us) for 20 ms.
    assert!((300..=400).contains(&delivered), "{delivered}");
    assert_eq!(t.matching(json!({"kind": "phase", "phase": "stopped"}))[0]["t"], 30);
}

/// A `.COM` whose IRQ 5 handler sends the EOI and never returns (it loops
/// with interrupts disabled).
const STUCKCOM: &str = r#"
org 100h
    mov ax, 250Dh
    mov dx, handler
    int 21h
    in al, 21h
    and al, 0DFh
    out 21h, al
    sti
idle:
    hlt
    jmp idle
handler:
    mov al, 20h
    out 20h, al
stuck:
    jmp stuck
"#;

/// Scenario 15: the VM's handler never executes its IRET, so after the
/// default `VID_IRET_Time_Out` of 500 ms VPICD calls IRET_Proc with carry
/// set.
#[test]
fn a_handler_that_never_irets_times_out_after_500_ms() {
    let manifest = machine_until("4.0", &["SCRIPT"], "", "[[vm]]\nname = \"DOS1\"\nprogram = \"STUCK.COM\"\n", 600);
    let run = scenario(
        manifest,
        || noting(5),
        1,
        DOS1,
        |dev, vmm| {
            vmm.vpicd().set_int_request(handle(dev), VmHandle(DOS1)).unwrap();
        },
    )
    .plugin_dir(assemble("vpicd", "stuck", &[("STUCK.COM", STUCKCOM)]))
    .run();
    run.assert_ok();
    let t = run.trace();
    let delivered = t.matching(json!({"kind": "virtual_irq", "step": "delivered"}));
    let timeout = t.matching(json!({"kind": "virtual_irq", "step": "iret_timeout"}));
    assert_eq!((delivered.len(), timeout.len()), (1, 1), "{:?}", t.matching(json!({"kind": "virtual_irq"})));
    assert_eq!(timeout[0]["t"].as_u64().unwrap() - delivered[0]["t"].as_u64().unwrap(), 500);
    assert_eq!(t.count(json!({"kind": "virtual_irq", "step": "eoi"})), 1, "the handler's EOI came");
    assert!(notes(&run).contains(&"iret timed_out=true".to_string()));
}

/// Under random orders (events chosen at random, simulated interrupts
/// injected at service calls) a device that owns an IRQ and two DOS VMs
/// that take it never break a rule, panic or deadlock.
#[test]
fn vpicd_holds_up_under_random_orders() {
    let manifest = format!(
        "{}[[vm]]\nname = \"DOS2\"\nprogram = \"IRQAPP\"\nargs = \"install 13; unmask 5; yield 200\"\n[IRQDEV]\nirq = 5\n",
        machine_until(
            "4.0",
            &["fixture-vpicd"],
            "install 13; unmask 5; cli; yield 100; sti; yield 100",
            "[[irq]]\nirq = 5\nat = 1\nevery = 1\ncount = 20\n",
            30
        )
    );
    let passed = Scenario::new(&manifest).module::<IrqApp>().explore(0..20);
    assert_eq!(passed, 20);
}

// ---- VPICD_Call_When_Hw_Int -------------------------------------------------------------------

/// SCRIPT virtualizes IRQ 5 (noting) and installs two
/// `VPICD_Call_When_Hw_Int` hooks, A then B, at Device_Init.
fn hooking(manifest: &str) -> Scenario {
    Scenario::new(manifest).module::<IrqApp>().script(|dev, vmm, msg| {
        if msg.message == DEVICE_INIT {
            let h = vmm.vpicd().virtualize_irq(noting(5)).expect("virtualize");
            vmm.vpicd().physically_unmask(h).unwrap();
            for name in ["A", "B"] {
                let before = vmm
                    .vpicd()
                    .call_when_hw_int(move |dev: &ScriptDevice, vmm: &Vmm<'_>, e: HwIntEvent| {
                        dev.note(vmm, format!("{name} irq={} vm={:#x}", e.irq, e.vm.0));
                    })
                    .unwrap();
                dev.note(vmm, format!("installed {name} after another={before}"));
            }
        }
        Carry::Clear
    })
}

/// The filter chain runs on every physical interrupt VPICD takes, last
/// installed first, before the IRQ's Hw_Int; an IRQ nobody virtualized
/// (IRQ 1, global) reaches it too; a masked IRQ (10) is not taken, so no
/// hook runs.
#[test]
fn call_when_hw_int_hooks_see_every_interrupt_last_installed_first_before_hw_int() {
    let mut session = hooking(&machine("3.1", &["SCRIPT"], "", "")).boot();
    session.run_until(vmm_testkit::Duration::from_millis(5));
    session.raise_irq(5).raise_irq(10).raise_irq(1);
    let run = session.finish();
    run.assert_ok();
    let sys = format!("{SYS:#x}");
    assert_eq!(
        notes(&run),
        [
            "installed A after another=false".to_string(),
            "installed B after another=true".to_string(),
            format!("B irq=5 vm={sys}"),
            format!("A irq=5 vm={sys}"),
            format!("hw_int vm={sys}"),
            format!("B irq=1 vm={sys}"),
            format!("A irq=1 vm={sys}"),
        ]
    );
    // IRQ 1 went on to the default handling: a request for the current VM.
    assert_eq!(steps(run.trace(), 1).first().map(String::as_str), Some(format!("requested@{sys}").as_str()));
}

/// By VxDCall the hook is a procedure address, which means nothing to the
/// emulator: carry, and a violation naming the typed method.
#[test]
fn call_when_hw_int_by_vxdcall_is_refused_naming_the_typed_method() {
    let run = scenario(
        machine("3.1", &["SCRIPT"], "", ""),
        || noting(5),
        10,
        SYS,
        |dev, vmm| {
            let mut call = ServiceCall::default();
            call.regs.esi = 0x8000_1234;
            let cf = vmm.vxd_call(0x0003_000F, &mut call).map(|()| call.regs.flags & 1);
            dev.note(vmm, format!("cf={cf:?}"));
        },
    )
    .run();
    assert_eq!(notes(&run), ["cf=Ok(1)"]);
    let v = run.trace().matching(json!({"kind": "violation", "code": "VPICD_SERVICE_BY_VXDCALL"}));
    assert_eq!(v.len(), 1);
    let text = v[0]["message"].as_str().unwrap();
    assert!(text.contains("VPICD_Call_When_Hw_Int") && text.contains("call_when_hw_int"), "{text}");
}

/// A hook runs at interrupt time: asynchronous services only (a
/// `VPICD_Virtualize_IRQ` from it is refused).
#[test]
fn a_call_when_hw_int_hook_runs_at_interrupt_time() {
    let hook = Scenario::new(&machine("4.0", &["SCRIPT"], "", "")).script(|_, vmm, msg| {
        if msg.message == DEVICE_INIT {
            let h = vmm.vpicd().virtualize_irq(noting(5)).unwrap();
            vmm.vpicd().physically_unmask(h).unwrap();
            vmm.vpicd()
                .call_when_hw_int(|dev: &ScriptDevice, vmm: &Vmm<'_>, _: HwIntEvent| {
                    let r = vmm.vpicd().virtualize_irq(IrqDescriptor::new(9, |_: &ScriptDevice, _: &Vmm<'_>, _| true));
                    dev.note(vmm, format!("hook virtualize {:?}", r.map_err(|e| e.code)));
                })
                .unwrap();
        }
        Carry::Clear
    });
    let mut session = hook.boot();
    session.raise_irq(5);
    let run = session.finish();
    assert_eq!(
        notes(&run),
        [format!("hook virtualize Err({})", VmmError::VIOLATION.code), format!("hw_int vm={SYS:#x}")]
    );
    let v = run.trace().matching(json!({"kind": "violation", "code": "SYNC_SERVICE_AT_INTERRUPT"}));
    assert_eq!(v.len(), 1);
    assert_eq!(v[0]["service"], "VPICD_Virtualize_IRQ");
}

/// No service removes a Call_When_Hw_Int hook: a dynamic device that
/// installed one leaks it at unload, and its hook no longer runs.
#[test]
fn a_dynamic_device_with_a_call_when_hw_int_hook_leaks_it_at_unload() {
    let mut m = Scenario::new("[386Enh]\ndevice = [\"*VPICD\", \"*VXDLDR\"]\n[IRQDEV]\nhw_int_hook = true\n")
        .machine()
        .unwrap();
    m.boot().unwrap();
    m.load_dynamic_device("fixture-vpicd", true).unwrap();
    m.raise_physical_irq(1).unwrap();
    m.unload_dynamic_device("IRQDEV").unwrap();
    m.raise_physical_irq(1).unwrap();
    m.shutdown().unwrap();
    let t = Trace::of(&m);
    assert_eq!(t.count(json!({"kind": "note", "note": "irqdev_hook", "fields": {"irq": 1}})), 1, "{}", t.tail(20));
    let leaks = t.matching(json!({"kind": "violation", "code": "UNLOAD_LEAK", "device": "IRQDEV"}));
    assert_eq!(leaks.len(), 1, "{}", t.tail(20));
    assert!(leaks[0]["message"].as_str().unwrap().contains("a VPICD_Call_When_Hw_Int hook"), "{leaks:?}");
}

// ---- level-triggered lines --------------------------------------------------------------------------

/// SCRIPT virtualizes IRQ 5 (Hw_Int notes and leaves the interrupt in
/// service) and calls VPICD_Phys_EOI at 20 and 40 ms.
fn phys_eoi_at_20_and_40(manifest: &str) -> Scenario {
    Scenario::new(manifest).script(|_, vmm, msg| {
        if msg.message == DEVICE_INIT {
            let d = IrqDescriptor::new(5, |dev: &ScriptDevice, vmm: &Vmm<'_>, _| {
                dev.note(vmm, "hw_int");
                true
            });
            let h = vmm.vpicd().virtualize_irq(d).expect("virtualize");
            vmm.vpicd().physically_unmask(h).unwrap();
            for at in [20, 40] {
                vmm.set_global_time_out(at, move |dev: &ScriptDevice, vmm, _| {
                    let irr = vmm.vpicd().test_phys_request(h).unwrap();
                    dev.note(vmm, format!("phys_eoi at {at} irr={irr}"));
                    vmm.vpicd().phys_eoi(h).unwrap();
                });
            }
        }
        Carry::Clear
    })
}

/// A `Hw_Int` that ends a still-asserted level line from inside the
/// interrupt is called once more when the handlers return; then the
/// request waits in the IRR (no storm at one instant) until the next
/// `Phys_EOI` outside interrupt time takes it.
#[test]
fn a_level_line_ended_inside_hw_int_is_taken_once_more_then_waits() {
    let manifest = machine("4.0", &["SCRIPT"], "", "[[irq]]\nirq = 5\nat = 10\ntrigger = \"level\"\n");
    let run = Scenario::new(&manifest)
        .script(|_, vmm, msg| {
            if msg.message == DEVICE_INIT {
                let d = IrqDescriptor::new(5, |dev: &ScriptDevice, vmm: &Vmm<'_>, e: IrqEvent| {
                    dev.note(vmm, "hw_int");
                    vmm.vpicd().phys_eoi(e.handle).unwrap();
                    true
                });
                let h = vmm.vpicd().virtualize_irq(d).unwrap();
                vmm.vpicd().physically_unmask(h).unwrap();
                vmm.set_global_time_out(20, move |dev: &ScriptDevice, vmm, _| {
                    let irr = vmm.vpicd().test_phys_request(h).unwrap();
                    let status = vmm.vpicd().get_complete_status(h, vmm.get_cur_vm_handle()).unwrap();
                    dev.note(vmm, format!("at 20 irr={irr} phys_in_serv={}", status & VPICD_STAT_PHYS_IN_SERV != 0));
                    vmm.vpicd().phys_eoi(h).unwrap();
                });
            }
            Carry::Clear
        })
        .run();
    run.assert_ok();
    assert_eq!(notes(&run), ["hw_int", "hw_int", "at 20 irr=true phys_in_serv=false", "hw_int", "hw_int"]);
}

/// A level-triggered line still asserted when the handler ends the
/// physical interrupt interrupts again at once; lowered, it does not. An
/// edge-triggered line (the default) interrupts once per assertion.
#[test]
fn a_level_line_still_asserted_after_phys_eoi_interrupts_again() {
    for (trigger, expected) in [
        ("level", vec!["hw_int", "phys_eoi at 20 irr=true", "hw_int", "phys_eoi at 40 irr=false"]),
        ("edge", vec!["hw_int", "phys_eoi at 20 irr=false", "phys_eoi at 40 irr=false"]),
    ] {
        let manifest =
            machine("4.0", &["SCRIPT"], "", &format!("[[irq]]\nirq = 5\nat = 10\ntrigger = \"{trigger}\"\n"));
        let mut session = phys_eoi_at_20_and_40(&manifest).boot();
        session.run_until(vmm_testkit::Duration::from_millis(30));
        session.lower_irq(5);
        let run = session.finish();
        run.assert_ok();
        assert_eq!(notes(&run), expected, "{trigger}");
    }
}

/// A level line under VPICD's default handling: the VM's EOI ends the
/// physical interrupt, the line is still asserted, so the owner VM gets the
/// interrupt again; once the line is lowered the interrupts stop.
#[test]
fn a_level_line_under_default_handling_interrupts_the_vm_until_lowered() {
    let manifest = format!(
        "{}[[irq]]\nirq = 10\nat = 10\ntrigger = \"level\"\n",
        machine("4.0", &[], "install 114; unmask 10; yield 1000", "")
    );
    let handled = |t: &Trace| t.count(json!({"kind": "program_output", "text": "handler"}));
    let mut session = Scenario::new(&manifest).module::<IrqApp>().boot();
    session.run_until(vmm_testkit::Duration::from_millis(12));
    let asserted = handled(&session.trace());
    session.lower_irq(10);
    let run = session.finish();
    run.assert_ok();
    let total = handled(run.trace());
    assert!(asserted >= 2, "the line stayed asserted: interrupted again after each EOI ({asserted})");
    assert!(total <= asserted + 1, "lowered: at most the interrupt in flight ends ({asserted} -> {total})");
    let steps = steps(run.trace(), 10);
    assert_eq!(steps.iter().filter(|s| s.starts_with("delivered")).count(), total, "{steps:?}");
}

/// A level `[[irq]]` entry with `hold` lowers its line by itself: here
/// at 25 ms, between the two physical EOIs.
#[test]
fn a_level_entry_holds_its_line_for_hold() {
    let manifest = machine("4.0", &["SCRIPT"], "", "[[irq]]\nirq = 5\nat = 10\ntrigger = \"level\"\nhold = \"15ms\"\n");
    let run = phys_eoi_at_20_and_40(&manifest).run();
    run.assert_ok();
    assert_eq!(notes(&run), ["hw_int", "phys_eoi at 20 irr=true", "hw_int", "phys_eoi at 40 irr=false"]);
}

#[test]
fn a_bad_trigger_and_two_modes_for_one_line_are_manifest_errors() {
    for (entries, why) in [
        ("[[irq]]\nirq = 3\nat = 5\ntrigger = \"Rising\"\n", "trigger must be \"edge\" or \"level\", got \"Rising\""),
        (
            "[[irq]]\nirq = 3\nat = 5\n[[irq]]\nirq = 3\nat = 9\ntrigger = \"level\"\n",
            "IRQ 3 is level-triggered here but edge-triggered in the entry at",
        ),
        ("[[irq]]\nirq = 3\nat = 5\nhold = 5\n", "hold applies to a level-triggered line"),
        ("[[irq]]\nirq = 3\nat = 5\ntrigger = \"level\"\nhold = 0\n", "hold must be longer than 0"),
    ] {
        let err = Scenario::new(&format!("[386Enh]\ndevice = [\"*VPICD\"]\n{entries}")).machine().err();
        let text = err.map(|e| e.to_string()).unwrap_or_default();
        assert!(text.contains(why), "{entries}: {text}");
    }
}

#[test]
fn lowering_an_irq_without_vpicd_is_an_error_of_the_test_kit() {
    let mut m = Scenario::new("[386Enh]\ndevice = []\n").machine().unwrap();
    m.boot().unwrap();
    assert!(m.lower_physical_irq(5).unwrap_err().to_string().contains("VPICD is not loaded"));
}

// ---- VPICD_Opt_Read_Hw_IRR ---------------------------------------------------------------------------

/// With VPICD_Opt_Read_Hw_IRR a VM reading its virtual PIC's IRR sees the
/// physical request bit of the IRQ (here held by the physical mask);
/// without it, the virtual request (none).
#[test]
fn read_hw_irr_lets_the_vm_read_the_physical_request_bit() {
    for (options, expected) in [(VPICD_OPT_READ_HW_IRR, "irr=0x20"), (0, "irr=0x00")] {
        let manifest = format!("{}[[irq]]\nirq = 5\nat = 5\n", machine("3.1", &["SCRIPT"], "sleep 20; irr", ""));
        let run = Scenario::new(&manifest)
            .module::<IrqApp>()
            .script(move |_, vmm, msg| {
                if msg.message == DEVICE_INIT {
                    let d = IrqDescriptor::new(5, |_: &ScriptDevice, _: &Vmm<'_>, _| true).options(options);
                    let h = vmm.vpicd().virtualize_irq(d).unwrap();
                    vmm.vpicd().physically_mask(h).unwrap();
                }
                Carry::Clear
            })
            .run();
        run.assert_ok();
        assert_eq!(outputs(&run), [expected], "options {options:#x}");
    }
}

// ---- scenario 23's message ----------------------------------------------------------------------------

/// Scenario 23, the user's side: the second VM to unmask an owned IRQ is
/// terminated and SHELL tells the user to restart (a system-modal message
/// on VPICD's behalf, before the VM is gone), once however often the VM
/// unmasks it before it is gone.
#[test]
fn the_second_unmasker_of_an_owned_irq_is_told_to_restart() {
    let manifest = format!(
        "{}[[vm]]\nname = \"DOS2\"\nprogram = \"IRQAPP\"\nargs = \"yield 20; unmask 10; mask 10; unmask 10; yield 50\"\nat = 1\n",
        machine("4.0", &["*SHELL"], "install 114; unmask 10; yield 100", "")
    );
    let run = Scenario::new(&manifest).module::<IrqApp>().run();
    let t = run.trace();
    let shown = t.matching(json!({"kind": "shell_message", "service": "SHELL_SYSMODAL_Message", "device": "VPICD"}));
    assert_eq!(shown.len(), 1, "{}", t.tail(30));
    assert_eq!(shown[0]["vm"], DOS2);
    let text = shown[0]["text"].as_str().unwrap();
    assert!(text.contains("IRQ 10") && text.contains("DOS1") && text.contains("restart"), "{text}");
    let message = position(t, json!({"kind": "shell_message", "device": "VPICD"})).unwrap();
    let gone = position(t, json!({"kind": "vm_destroyed", "vm": DOS2, "reason": "irq_conflict"})).unwrap();
    assert!(message < gone);
}
