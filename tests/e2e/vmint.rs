//! Interrupts inside VMs and call-backs (virtual-hardware reference,
//! sections 4, 5 and 7.3; scenarios 28-38 of section 10): the V86 hook
//! chain seen by a DOS program's `INT`, by `Simulate_Int` and not by
//! `Build_Int_Stack_Frame`; unhooking; the Windows 3.1 init rule;
//! `Call_When_VM_Returns` with a time-out; the PM vector table's default;
//! fault hooks before and behind the VMM; call-backs reached by `CALL FAR`
//! and by `INT` from machine code and from Rust ring-3 code.
//!
//! The DOS side is VMINT.COM (tests/e2e/programs/vmint.asm, nasm): its
//! command tail picks the steps it runs.

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use vmm_plugin_api::prelude::*;
use vmm_plugin_api::{CallBackEntry, HookAction, IntHookHandle};
use vmm_testkit::{Run, Scenario, ScriptDevice, json};

use crate::common::{DOS1, GO_AT_10, notes, outputs};

/// The directory holding VMINT.COM, assembled once per test process.
fn programs() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("vmm-vmint-programs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("program directory");
        let asm = Path::new(env!("CARGO_MANIFEST_DIR")).join("e2e/programs/vmint.asm");
        let out = std::process::Command::new("nasm")
            .args(["-f", "bin", "-o", "VMINT.COM", asm.to_str().unwrap()])
            .current_dir(&dir)
            .output()
            .unwrap_or_else(|e| panic!("cannot run nasm ({e}): the DOS program tests need nasm"));
        assert!(out.status.success(), "nasm failed: {}", String::from_utf8_lossy(&out.stderr));
        dir
    })
}

/// HOOKB: the second hook. `[HOOKB] vector` (hex) is hooked at
/// `Device_Init`; `action` is `pass`, `consume` (AX=0xB0B0) or `return`
/// (`Call_When_VM_Returns` with `[HOOKB] timeout` ms, then pass). `fault`
/// = `early` / `late` hooks fault 0Dh at `Sys_Critical_Init` /
/// `Init_Complete` (handled: IP past the 2-byte instruction, AX = 0xBEEF
/// early, 0xCCCC late).
struct HookB {
    action: Cell<&'static str>,
}

fn profile(vmm: &Vmm<'_>, section: &str, key: &str) -> Option<String> {
    vmm.get_profile_string(Some(section), key).ok().flatten().map(|e| e.value)
}

fn hex(vmm: &Vmm<'_>, section: &str, key: &str) -> Option<u8> {
    profile(vmm, section, key).and_then(|v| u8::from_str_radix(v.trim_start_matches("0x"), 16).ok())
}

fn note(vmm: &Vmm<'_>, text: String) {
    vmm.out_debug_string(&text);
}

impl HookB {
    fn fault_hook(vmm: &Vmm<'_>, ax: u16) {
        let r = vmm.hook_v86_fault(0x0D, move |_: &HookB, vmm: &Vmm<'_>, n, vm| {
            let c = vmm.client(vm).unwrap();
            note(vmm, format!("HOOKB fault {n:02X} at {:04X}", c.ip()));
            c.set_ip(c.ip().wrapping_add(2));
            c.set_ax(ax);
            HookAction::Consume
        });
        note(vmm, format!("HOOKB Hook_V86_Fault: {}", r.is_ok()));
    }
}

impl VxD for HookB {
    const DEVICE: Device = Device::new("HOOKB");
    fn create(_: &Vmm<'_>) -> Result<Self, String> {
        Ok(HookB { action: Cell::new("pass") })
    }
    fn control(&self, vmm: &Vmm<'_>, msg: ControlMessage) -> Carry {
        if !matches!(msg.message, SYS_CRITICAL_INIT | DEVICE_INIT | INIT_COMPLETE) {
            return Carry::Clear;
        }
        let fault = profile(vmm, "HOOKB", "fault");
        if msg.message == SYS_CRITICAL_INIT && fault.as_deref() == Some("early") {
            HookB::fault_hook(vmm, 0xBEEF);
        }
        if msg.message == INIT_COMPLETE && fault.as_deref() == Some("late") {
            HookB::fault_hook(vmm, 0xCCCC);
        }
        if msg.message == DEVICE_INIT
            && let Some(vector) = hex(vmm, "HOOKB", "vector")
        {
            self.action.set(match profile(vmm, "HOOKB", "action").as_deref() {
                Some("consume") => "consume",
                Some("return") => "return",
                _ => "pass",
            });
            let timeout: i32 = profile(vmm, "HOOKB", "timeout").and_then(|t| t.parse().ok()).unwrap_or(0);
            vmm.hook_v86_int_chain(vector, move |d: &HookB, vmm: &Vmm<'_>, n, vm| {
                let c = vmm.client(vm).unwrap();
                match d.action.get() {
                    "consume" if n != 0x21 || c.ah() == 0x30 => {
                        c.set_ax(0xB0B0);
                        HookAction::Consume
                    }
                    "return" => {
                        note(vmm, format!("HOOKB int {n:02X} returns to {:04X}", c.ip()));
                        vmm.call_when_vm_returns(timeout, 0x5A, |_: &HookB, vmm: &Vmm<'_>, r| {
                            note(
                                vmm,
                                format!(
                                    "returned ref={:X} cf={} zf={} at {} ms",
                                    r.ref_data,
                                    u8::from(r.timed_out),
                                    u8::from(r.after_time_out),
                                    vmm.get_system_time()
                                ),
                            );
                        })
                        .unwrap();
                        HookAction::PassOn
                    }
                    _ => HookAction::PassOn,
                }
            })
            .unwrap();
        }
        Carry::Clear
    }
}

/// A machine with SCRIPT (the first hook, H1, where the test hooks) and
/// HOOKB (H2, initialized after SCRIPT: its hook is called first), the
/// manifest's `extra` lines and VMINT.COM in a DOS VM with `steps`.
fn machine(windows: &str, extra: &str, steps: &str) -> Scenario {
    Scenario::new(&format!(
        "[machine]\nuntil = 5000\nwindows = \"{windows}\"\n[386Enh]\ndevice = [\"SCRIPT\", \"HOOKB\"]\n{extra}\n[[vm]]\nname = \
         \"DOS1\"\nprogram = \"VMINT.COM\"\nargs = \"{steps}\"\n"
    ))
    .device::<HookB>()
    .plugin_dir(programs())
    .script(|_, _, _| Carry::Clear)
}

/// SCRIPT's hook of `vector` at `Device_Init`: notes the call, consumes
/// (AX=0x1234) when `consume`, else passes.
fn script_hook(vmm: &Vmm<'_>, vector: u8, consume: bool) -> IntHookHandle {
    vmm.hook_v86_int_chain(vector, move |_: &ScriptDevice, vmm: &Vmm<'_>, n, vm| {
        let c = vmm.client(vm).unwrap();
        if n == 0x21 && c.ah() != 0x30 {
            return HookAction::PassOn;
        }
        note(vmm, format!("H1 {n:02X} ax={:04X}", c.ax()));
        if consume {
            c.set_ax(0x1234);
            HookAction::Consume
        } else {
            HookAction::PassOn
        }
    })
    .unwrap()
}

/// The debug strings HOOKB wrote, in order.
fn hookb_notes(run: &Run) -> Vec<String> {
    run.trace()
        .values(json!({"kind": "debug_string", "device": "HOOKB"}), "text")
        .into_iter()
        .map(|v| v.as_str().unwrap_or_default().to_string())
        .collect()
}

/// The `int_hook` records: (vector, device, passed).
fn hooks(run: &Run) -> Vec<(u64, String, bool)> {
    run.trace()
        .matching(json!({"kind": "int_hook"}))
        .iter()
        .map(|r| {
            assert_eq!(r["vm"], DOS1, "{r}");
            (r["vector"].as_u64().unwrap(), r["device"].as_str().unwrap().to_string(), r["passed"].as_bool().unwrap())
        })
        .collect()
}

fn hook(vector: u64, device: &str, passed: bool) -> (u64, String, bool) {
    (vector, device.to_string(), passed)
}

#[test]
fn the_newest_hook_runs_first_and_carry_clear_consumes_the_interrupt() {
    // Scenario 28: H1 then H2 hook INT 21h; H2 passes, H1 consumes: the
    // IVT handler (DOS) is not run, the program sees H1's AX.
    let run = machine("3.1", "[HOOKB]\nvector = \"21\"\naction = \"pass\"\n", "i")
        .script(|_, vmm, msg| {
            if msg.message == DEVICE_INIT {
                script_hook(vmm, 0x21, true);
            }
            Carry::Clear
        })
        .run();
    run.assert_ok();
    assert_eq!(outputs(&run), ["int21 ax=1234"]);
    assert_eq!(notes(&run), ["H1 21 ax=3000"]);
    // AH=30h consumed by H1; the exit (AH=4Ch) passed by both and served.
    assert_eq!(
        hooks(&run),
        [hook(0x21, "HOOKB", true), hook(0x21, "SCRIPT", false), hook(0x21, "HOOKB", true), hook(0x21, "SCRIPT", true)]
    );
    let served: Vec<u64> = run
        .trace()
        .matching(json!({"kind": "v86_interrupt", "vector": 0x21}))
        .iter()
        .map(|r| r["ax"].as_u64().unwrap())
        .collect();
    assert_eq!(served, [0x4C00], "the consumed INT 21h never reached DOS");
}

#[test]
fn when_every_hook_passes_the_vms_own_handler_runs_through_an_iret_frame() {
    // Scenario 29, on INT 21h (DOS answers) and on INT 60h (the program's
    // own handler: reflected through its vector table).
    let run = machine("3.1", "[HOOKB]\nvector = \"21\"\n", "i")
        .script(|_, vmm, msg| {
            if msg.message == DEVICE_INIT {
                script_hook(vmm, 0x21, false);
            }
            Carry::Clear
        })
        .run();
    run.assert_ok();
    assert_eq!(outputs(&run), ["int21 ax=0005"], "DOS 5.00 under Windows 3.1");
    let run = machine("3.1", "[HOOKB]\nvector = \"60\"\n", "v")
        .script(|_, vmm, msg| {
            if msg.message == DEVICE_INIT {
                script_hook(vmm, 0x60, false);
            }
            Carry::Clear
        })
        .run();
    run.assert_ok();
    assert_eq!(outputs(&run), ["isr60"]);
    assert_eq!(hooks(&run), [hook(0x60, "HOOKB", true), hook(0x60, "SCRIPT", true)]);
    assert_eq!(run.trace().count(json!({"kind": "v86_interrupt", "vector": 0x60, "handler": "vm"})), 1);
    // A consumed INT 60h never reaches the program's handler.
    let run = machine("3.1", "[HOOKB]\nvector = \"60\"\naction = \"consume\"\n", "v").run();
    run.assert_ok();
    assert!(outputs(&run).is_empty(), "{:?}", outputs(&run));
    assert_eq!(hooks(&run), [hook(0x60, "HOOKB", false)]);
}

/// SCRIPT's event in DOS1's context at 10 ms (VMINT.COM is in its 100 ms
/// wait then).
fn at_10ms_in_dos1(
    f: impl Fn(&ScriptDevice, &Vmm<'_>) + 'static,
) -> impl Fn(&ScriptDevice, &Vmm<'_>, ControlMessage) -> Carry {
    let f = std::rc::Rc::new(f);
    move |_, vmm, msg| {
        if msg.message == DEVICE_INIT {
            script_hook(vmm, 0x60, false);
            let f = f.clone();
            vmm.register_interrupt("go", move |_: &ScriptDevice, vmm, _| {
                let f = f.clone();
                vmm.schedule_vm_event(VmHandle(DOS1), move |d: &ScriptDevice, vmm, _| f(d, vmm)).unwrap();
            })
            .unwrap();
        }
        Carry::Clear
    }
}

#[test]
fn simulate_int_calls_the_hooks_as_a_real_int_does() {
    // Scenario 30: from a VxD's event, Simulate_Int(60h) on the DOS VM:
    // H2 then H1, then a frame to the program's handler, which runs when
    // the VM runs and returns to where the VM was.
    let run = machine("3.1", &format!("[HOOKB]\nvector = \"60\"\n{GO_AT_10}"), "s")
        .script(at_10ms_in_dos1(|_, vmm| {
            let r = vmm.simulate_int(0x60);
            note(vmm, format!("Simulate_Int: {r:?}"));
        }))
        .run();
    run.assert_ok();
    assert_eq!(notes(&run), ["H1 60 ax=8660", "Simulate_Int: Ok(())"]);
    assert_eq!(hooks(&run), [hook(0x60, "HOOKB", true), hook(0x60, "SCRIPT", true)]);
    assert_eq!(outputs(&run), ["isr60", "woke"]);
}

#[test]
fn build_int_stack_frame_calls_no_hook_and_leaves_flags_cs_ip_on_the_stack() {
    // Scenario 31. The frame is checked by popping it with Simulate_Iret
    // (CS:IP, FLAGS and SP come back as they were), then built again for
    // the program's handler, which runs and IRETs to where the VM was.
    let run = machine("3.1", &format!("[HOOKB]\nvector = \"60\"\n{GO_AT_10}"), "s")
        .script(at_10ms_in_dos1(|_, vmm| {
            let vm = VmHandle(DOS1);
            let before = vmm.client(vm).unwrap().get();
            let target = vmm.get_v86_int_vector(0x60).unwrap();
            vmm.build_int_stack_frame(target).unwrap();
            let c = vmm.client(vm).unwrap();
            note(
                vmm,
                format!(
                    "pushed {} bytes, at the handler: {}, IF cleared: {}",
                    (before.esp - c.esp()) & 0xFFFF,
                    target.to_u32() == (c.cs() << 16) | u32::from(c.ip()),
                    c.eflags() & IF_MASK == 0
                ),
            );
            vmm.simulate_iret().unwrap();
            let after = vmm.client(vm).unwrap().get();
            note(
                vmm,
                format!(
                    "popped back: {}",
                    (after.esp, after.cs, after.eip, after.eflags & 0xFFFF)
                        == (before.esp, before.cs, before.eip, before.eflags & 0xFFFF)
                ),
            );
            vmm.build_int_stack_frame(target).unwrap();
        }))
        .run();
    run.assert_ok();
    assert_eq!(notes(&run), ["pushed 6 bytes, at the handler: true, IF cleared: true", "popped back: true"]);
    assert!(hooks(&run).is_empty(), "no hook sees Build_Int_Stack_Frame");
    assert_eq!(outputs(&run), ["isr60", "woke"], "the handler IRETs to where the VM was");
}

#[test]
fn an_unhooked_hook_is_no_longer_called_and_unhooking_a_stranger_sets_carry() {
    // Scenario 32 (Windows 95): INT 60h, then (at 10 ms) H1 unhooks, then
    // INT 60h from Simulate_Int: H2 only. Unhooking a handle never hooked,
    // or another device's, is NOT_FOUND (carry).
    let run = machine("4.0", &format!("[HOOKB]\nvector = \"60\"\n{GO_AT_10}"), "vs")
        .script(|d, vmm, msg| {
            if msg.message == DEVICE_INIT {
                let h = script_hook(vmm, 0x60, false);
                d.state.borrow_mut().push(h.0);
                vmm.register_interrupt("go", move |_: &ScriptDevice, vmm, _| {
                    vmm.schedule_vm_event(VmHandle(DOS1), move |d: &ScriptDevice, vmm, _| {
                        let h = IntHookHandle(d.state.borrow()[0]);
                        note(vmm, format!("unhook: {:?}", vmm.unhook_v86_int_chain(0x60, h)));
                        note(vmm, format!("again: {:?}", vmm.unhook_v86_int_chain(0x60, h)));
                        note(vmm, format!("stranger: {:?}", vmm.unhook_v86_int_chain(0x60, IntHookHandle(h.0 + 1))));
                        vmm.simulate_int(0x60).unwrap();
                    })
                    .unwrap();
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
            "H1 60 ax=2560".to_string(),
            "unhook: Ok(())".into(),
            format!("again: {:?}", Err::<(), _>(VmmError::NOT_FOUND)),
            format!("stranger: {:?}", Err::<(), _>(VmmError::NOT_FOUND)),
        ]
    );
    assert_eq!(hooks(&run), [hook(0x60, "HOOKB", true), hook(0x60, "SCRIPT", true), hook(0x60, "HOOKB", true)]);
    assert_eq!(outputs(&run), ["isr60", "isr60", "woke"]);
}

#[test]
fn windows_3_1_refuses_a_hook_after_init_and_has_no_unhook() {
    // Scenario 33: after init, Hook_V86_Int_Chain is refused under 3.1
    // (INIT_ONLY_SERVICE) and allowed under 4.0; Unhook_V86_Int_Chain is
    // a 4.0 service (the fatal "Invalid VxD dynamic link call" under 3.1).
    for windows in ["3.1", "4.0"] {
        let run = machine(windows, GO_AT_10, "s")
            .script(at_10ms_in_dos1(|_, vmm| {
                let r = vmm.hook_v86_int_chain(0x61, |_: &ScriptDevice, _: &Vmm<'_>, _, _| HookAction::PassOn);
                note(vmm, format!("late hook: {}", r.is_ok()));
            }))
            .run();
        let late = if windows == "3.1" { "late hook: false" } else { "late hook: true" };
        assert_eq!(notes(&run), [late.to_string()], "{windows}");
        let refused = run
            .trace()
            .count(json!({"kind": "violation", "code": "INIT_ONLY_SERVICE", "service": "Hook_V86_Int_Chain"}));
        assert_eq!(refused, usize::from(windows == "3.1"), "{windows}");
    }
    let run = machine("3.1", GO_AT_10, "s")
        .script(at_10ms_in_dos1(|_, vmm| {
            let _ = vmm.unhook_v86_int_chain(0x60, IntHookHandle(1));
        }))
        .run();
    let e = run.expect_error().to_string();
    assert!(e.contains("Invalid VxD dynamic link call to device number 0001, service 0118"), "{e}");
}

#[test]
fn call_when_vm_returns_reports_the_time_out_then_the_iret_and_the_vm_goes_on() {
    // Scenario 34: the INT 13h hook asks Call_When_VM_Returns(-1000) and
    // passes; the program's handler takes 2 s. The callback runs with CF
    // at 1 s, then with ZF when the handler IRETs; the VM goes on at its
    // real return address.
    let run = machine("3.1", "[HOOKB]\nvector = \"13\"\naction = \"return\"\ntimeout = \"-1000\"\n", "r").run();
    run.assert_ok();
    let n = hookb_notes(&run);
    assert_eq!(n.len(), 3, "{n:?}");
    let ip = n[0].strip_prefix("HOOKB int 13 returns to ").expect("the hook's note").to_string();
    let at = |s: &str| s.rsplit(" at ").next().unwrap().trim_end_matches(" ms").parse::<u64>().unwrap();
    assert!(n[1].starts_with("returned ref=5A cf=1 zf=0"), "{n:?}");
    assert!((1000..1100).contains(&at(&n[1])), "the time-out at ~1 s: {n:?}");
    assert!(n[2].starts_with("returned ref=5A cf=0 zf=1"), "{n:?}");
    assert!((2000..2200).contains(&at(&n[2])), "the return at ~2 s: {n:?}");
    assert_eq!(outputs(&run), [format!("back from int13 at {ip}")]);
    let why: Vec<String> = run
        .trace()
        .values(json!({"kind": "vm_return"}), "why")
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(why, ["timeout", "return"]);
    // A positive time-out: one call, whichever comes first (the time-out
    // here); the return address is still restored.
    let run = machine("3.1", "[HOOKB]\nvector = \"13\"\naction = \"return\"\ntimeout = \"500\"\n", "r").run();
    run.assert_ok();
    let n = hookb_notes(&run);
    assert_eq!(n.len(), 2, "{n:?}");
    assert!(n[1].starts_with("returned ref=5A cf=1 zf=0"), "{n:?}");
    assert_eq!(outputs(&run).len(), 1);
    // No time-out: one call at the return.
    let run = machine("3.1", "[HOOKB]\nvector = \"13\"\naction = \"return\"\n", "r").run();
    run.assert_ok();
    let n = hookb_notes(&run);
    assert!(n[1].starts_with("returned ref=5A cf=0 zf=0"), "{n:?}");
    assert!((2000..2200).contains(&at(&n[1])), "{n:?}");
}

#[test]
fn an_unhooked_pm_vector_reports_zf_until_a_device_sets_it() {
    // Scenario 35, and the Sys_VM_Init rule: a vector set at Device_Init
    // is every VM's default; one set later is the current VM's only.
    let run = machine("3.1", GO_AT_10, "s")
        .script(|_, vmm, msg| {
            if msg.message == DEVICE_INIT {
                let (_, default) = vmm.get_pm_int_vector(0x31).unwrap();
                note(vmm, format!("init 31 default={default}"));
                vmm.set_pm_int_vector(0x31, FarPtr::new(0x0047, 0x0010)).unwrap();
                vmm.register_interrupt("go", |_: &ScriptDevice, vmm, _| {
                    vmm.schedule_vm_event(VmHandle(DOS1), |_: &ScriptDevice, vmm, _| {
                        let (v, default) = vmm.get_pm_int_vector(0x31).unwrap();
                        note(vmm, format!("dos 31 {:04X}:{:04X} default={default}", v.selector, v.offset));
                        let (_, default) = vmm.get_pm_int_vector(0x41).unwrap();
                        note(vmm, format!("dos 41 default={default}"));
                        vmm.set_pm_int_vector(0x41, FarPtr::new(0x0057, 0x0020)).unwrap();
                        let (v, default) = vmm.get_pm_int_vector(0x41).unwrap();
                        note(vmm, format!("dos 41 {:04X}:{:04X} default={default}", v.selector, v.offset));
                        let sys = vmm.get_sys_vm_handle();
                        vmm.schedule_vm_event(sys, |_: &ScriptDevice, vmm, _| {
                            let (_, default) = vmm.get_pm_int_vector(0x41).unwrap();
                            note(vmm, format!("sys 41 default={default}"));
                        })
                        .unwrap();
                    })
                    .unwrap();
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
            "init 31 default=true",
            "dos 31 0047:0010 default=false",
            "dos 41 default=true",
            "dos 41 0057:0020 default=false",
            "sys 41 default=true",
        ]
    );
}

#[test]
fn v86_vectors_live_in_a_dos_programs_own_table() {
    // Get/Set_V86_Int_Vector on a DOS program's VM read and write its real
    // vector table: the program's INT 21h AH=35h sees what a device set.
    let run = machine("3.1", GO_AT_10, "s")
        .script(at_10ms_in_dos1(|_, vmm| {
            let v = vmm.get_v86_int_vector(0x60).unwrap();
            note(vmm, format!("60 -> {:04X}:{:04X}", v.selector, v.offset));
            let d = vmm.get_v86_int_vector(0x22).unwrap();
            note(vmm, format!("22 -> {:04X}:{:04X}", d.selector, d.offset));
            vmm.set_v86_int_vector(0x66, v).unwrap();
            note(vmm, format!("66 -> {:?}", vmm.get_v86_int_vector(0x66).unwrap() == v));
            vmm.simulate_int(0x66).unwrap();
        }))
        .run();
    run.assert_ok();
    let n = notes(&run);
    assert!(n[0].starts_with("60 -> 1000:"), "the program's handler (PSP segment 1000h): {n:?}");
    assert_eq!(n[1], "22 -> F000:0022", "the VMM's handler");
    assert_eq!(n[2], "66 -> true");
    assert_eq!(outputs(&run), ["isr60", "woke"], "INT 66h now reaches the program's INT 60h handler");
}

#[test]
fn a_fault_hook_from_sys_critical_init_sees_only_what_the_vmm_does_not_handle() {
    // Scenario 36. The VMM handles a V86 #GP the program has a handler of
    // its own for (it reflects it there); otherwise the VM would crash.
    // Early hook (Sys_Critical_Init), no handler of the program's: the hook.
    let run = machine("3.1", "[HOOKB]\nfault = \"early\"\n", "f").run();
    run.assert_ok();
    assert_eq!(outputs(&run), ["fault ax=BEEF"]);
    let stages = |run: &Run| run.trace().values(json!({"kind": "fault_hook", "vector": 13}), "stage");
    assert_eq!(stages(&run), [json!("behind")]);
    // Early hook, the program handles it: the hook never sees it.
    let run = machine("3.1", "[HOOKB]\nfault = \"early\"\n", "g").run();
    run.assert_ok();
    assert_eq!(outputs(&run), ["fault ax=AAAA"]);
    assert!(stages(&run).is_empty());
    // Late hook (Init_Complete): first, even though the program has a handler.
    let run = machine("3.1", "[HOOKB]\nfault = \"late\"\n", "g").run();
    run.assert_ok();
    assert_eq!(outputs(&run), ["fault ax=CCCC"]);
    assert_eq!(stages(&run), [json!("front")]);
    // No hook, no handler: the VM's program ends (v86_fault).
    let run = machine("3.1", "", "f").run();
    assert_eq!(run.trace().count(json!({"kind": "v86_fault", "vector": 13})), 1);
    assert!(outputs(&run).is_empty());
}

#[test]
fn fault_hooks_refuse_nmi_and_numbers_past_4fh_and_unhook_by_handle() {
    let run = machine("4.0", "", "")
        .script(|_, vmm, msg| {
            if msg.message == DEVICE_INIT {
                let pass = |_: &ScriptDevice, _: &Vmm<'_>, _: u8, _: VmHandle| HookAction::PassOn;
                note(vmm, format!("2: {:?}", vmm.hook_v86_fault(2, pass).err()));
                note(vmm, format!("50: {:?}", vmm.hook_v86_fault(0x50, pass).err()));
                let h = vmm.hook_v86_fault(0x0D, pass).unwrap();
                note(vmm, format!("unhook: {:?}", vmm.unhook_v86_fault(0x0D, h)));
                note(vmm, format!("again: {:?}", vmm.unhook_v86_fault(0x0D, h).err()));
            }
            Carry::Clear
        })
        .run();
    run.assert_ok();
    assert_eq!(
        notes(&run),
        [
            format!("2: {:?}", Some(VmmError::FAILED)),
            format!("50: {:?}", Some(VmmError::FAILED)),
            "unhook: Ok(())".to_string(),
            format!("again: {:?}", Some(VmmError::NOT_FOUND)),
        ]
    );
}

/// SCRIPT allocates a V86 call-back (reference data 0xCAFE) at Device_Init
/// and puts it in vector 4Bh of every VM (before Sys_VM_Init: the default
/// table). The callback sets AX=0xBEEF, BX = the AX it was given, and
/// returns with Simulate_Far_Ret when AX was 1111h (the far call), else
/// with `int_return` (Simulate_Iret, or Simulate_Far_Ret to show that the
/// VMM pops nothing itself).
fn call_back_machine(iret: bool) -> Scenario {
    machine("3.1", "", "c").script(move |_, vmm, msg| {
        if msg.message == DEVICE_INIT {
            let cb = vmm
                .allocate_v86_call_back(0xCAFE, move |_: &ScriptDevice, vmm: &Vmm<'_>, e: CallBackEntry| {
                    let c = vmm.client(e.vm).unwrap();
                    let ax = c.ax();
                    note(vmm, format!("call-back vm={:#x} ref={:X} ax={ax:04X}", e.vm.0, e.ref_data));
                    c.set_bx(ax);
                    c.set_ax(0xBEEF);
                    if ax == 0x1111 || !iret {
                        vmm.simulate_far_ret().unwrap();
                    } else {
                        vmm.simulate_iret().unwrap();
                    }
                })
                .unwrap();
            note(vmm, format!("call-back at {:04X}:{:04X}", cb.selector, cb.offset));
            vmm.set_v86_int_vector(0x4B, cb).unwrap();
        }
        Carry::Clear
    })
}

#[test]
fn a_v86_call_back_reached_by_far_call_returns_with_simulate_far_ret() {
    // Scenarios 37 and 38 (the right way): CALL FAR to the address in
    // vector 4Bh, then INT 4Bh.
    let run = call_back_machine(true).run();
    run.assert_ok();
    assert_eq!(
        notes(&run),
        [
            "call-back at FD00:0000".to_string(),
            format!("call-back vm={DOS1:#x} ref=CAFE ax=1111"),
            format!("call-back vm={DOS1:#x} ref=CAFE ax=3333"),
        ]
    );
    assert_eq!(outputs(&run), ["far ax=BEEF bx=1111 sp=0000", "int ax=BEEF sp=0000"]);
    let addresses = run.trace().values(json!({"kind": "call_back", "vm": DOS1, "device": "SCRIPT"}), "address");
    assert_eq!(addresses, [json!(0xFD00_0000u32), json!(0xFD00_0000u32)]);
}

#[test]
fn a_call_back_reached_by_int_that_far_returns_leaves_flags_on_the_stack() {
    // Scenario 38: the VMM pops nothing for a call-back; a Simulate_Far_Ret
    // after an INT leaves FLAGS behind (the stack is 2 bytes off).
    let run = call_back_machine(false).run();
    run.assert_ok();
    assert_eq!(outputs(&run), ["far ax=BEEF bx=1111 sp=0000", "int ax=BEEF sp=0002"]);
}

#[test]
fn the_timeline_shows_hooks_and_call_backs_on_the_vms_track() {
    let mut m = call_back_machine(true).machine().expect("machine");
    m.boot().expect("boot");
    m.run().expect("run");
    let timeline = vmm_host::timeline::chrome_trace(&m.trace());
    let events = timeline["traceEvents"].as_array().unwrap();
    let names: Vec<&str> = events.iter().filter(|e| e["cat"] == "int").map(|e| e["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["call-back FD00:0000 (SCRIPT)", "call-back FD00:0000 (SCRIPT)"]);

    let mut m = machine("3.1", "[HOOKB]\nvector = \"60\"\naction = \"consume\"\n", "v").machine().expect("machine");
    m.boot().expect("boot");
    m.run().expect("run");
    let timeline = vmm_host::timeline::chrome_trace(&m.trace());
    let events = timeline["traceEvents"].as_array().unwrap();
    let hook = events.iter().find(|e| e["cat"] == "int").expect("an int_hook event");
    assert_eq!(hook["name"], "INT 60h hook HOOKB: consumed");
    let track = events.iter().find(|e| e["name"] == "thread_name" && e["tid"] == hook["tid"]).expect("track name");
    assert_eq!(track["args"]["name"], "DOS1");
}

/// A Rust DOS program: far-calls the call-back at FD00:0000 (AX=1111h,
/// two words of arguments), then executes INT 4Bh (AX=3333h), printing
/// what came back.
struct R3Cb;

impl Module for R3Cb {
    const MODULE: ModuleDef = ModuleDef::dos_program("R3CB").segments(&[Segment::moveable("_TEXT")]);

    fn create(_: &Ring3<'_>) -> Result<Self, String> {
        Ok(R3Cb)
    }

    fn start(&self, r3: &Ring3<'_>, _args: &str) -> Step {
        let regs = r3.regs();
        let sp = regs.sp();
        regs.set_ax(0x1111);
        let r = r3.call(FarPtr::new(0xFD00, 0), &[1, 0, 2, 0]);
        r3.print(&format!("far {r:X?} bx={:04X} sp same: {}", regs.bx(), regs.sp() == sp));
        regs.set_ax(0x3333);
        let r = r3.int(0x4B);
        r3.print(&format!("int {r:?} ax={:04X} bx={:04X} sp same: {}", regs.ax(), regs.bx(), regs.sp() == sp));
        Step::exit(0)
    }

    fn resume(&self, _: &Ring3<'_>, _: Wake) -> Step {
        Step::exit(0)
    }
}

#[test]
fn rust_ring3_code_reaches_a_call_back_by_far_call_and_through_its_vector() {
    // Scenario 37 and 38 from Rust ring-3 code (the SDK's far call and INT).
    let run = Scenario::new("[386Enh]\ndevice = [\"SCRIPT\"]\n[[vm]]\nname = \"DOS1\"\nprogram = \"R3CB\"\n")
        .module::<R3Cb>()
        .script(|_, vmm, msg| {
            if msg.message == DEVICE_INIT {
                let cb = vmm
                    .allocate_v86_call_back(0xCAFE, |_: &ScriptDevice, vmm: &Vmm<'_>, e: CallBackEntry| {
                        let c = vmm.client(e.vm).unwrap();
                        let ax = c.ax();
                        note(vmm, format!("call-back ref={:X} ax={ax:04X}", e.ref_data));
                        c.set_bx(ax);
                        c.set_ax(0xBEEF);
                        if ax == 0x1111 {
                            // RETF 4 by hand: the return address, then the
                            // two words of arguments as the caller gave them.
                            let ip = vmm.simulate_pop().unwrap();
                            let cs = vmm.simulate_pop().unwrap();
                            let args = (vmm.simulate_pop().unwrap(), vmm.simulate_pop().unwrap());
                            note(vmm, format!("args {args:?}"));
                            vmm.simulate_far_jmp(FarPtr::new(cs as u16, ip as u16)).unwrap();
                        } else {
                            vmm.simulate_iret().unwrap()
                        }
                    })
                    .unwrap();
                vmm.set_v86_int_vector(0x4B, cb).unwrap();
            }
            Carry::Clear
        })
        .run();
    run.assert_ok();
    assert_eq!(notes(&run), ["call-back ref=CAFE ax=1111", "args (1, 2)", "call-back ref=CAFE ax=3333"]);
    assert_eq!(outputs(&run), ["far Ok(BEEF) bx=1111 sp same: true", "int Ok(()) ax=BEEF bx=3333 sp same: true"]);
    assert_eq!(run.trace().count(json!({"kind": "call_back", "vm": DOS1})), 2);
}

#[test]
fn simulate_services_need_a_frame_on_a_rust_vm() {
    // Outside a nested block and a call-back, a VM whose code is Rust has
    // no client frame: Simulate_Iret is refused (UNBALANCED_NEST_EXEC).
    let run = Scenario::new("[386Enh]\ndevice = [\"SCRIPT\"]\n")
        .script(|_, vmm, msg| {
            if msg.message == SYS_VM_INIT {
                note(vmm, format!("{:?}", vmm.simulate_iret()));
                note(vmm, format!("{:?}", vmm.simulate_far_jmp(FarPtr::new(1, 2))));
            }
            Carry::Clear
        })
        .run();
    run.assert_ok();
    let refused = format!("{:?}", Err::<(), _>(VmmError::VIOLATION));
    assert_eq!(notes(&run), [refused.clone(), refused]);
    assert_eq!(run.trace().count(json!({"kind": "violation", "code": "UNBALANCED_NEST_EXEC"})), 2);
}

#[test]
fn nested_execution_runs_a_dos_programs_interrupt_handler_and_comes_back() {
    // Exec_Int(60h) in a nested V86 block, from an event for the DOS VM
    // while its program waits: the interpreter runs the program's own
    // handler until its IRET reaches the break point; CS:IP and SS:SP are
    // back afterwards.
    let run = machine("3.1", GO_AT_10, "s")
        .script(at_10ms_in_dos1(|_, vmm| {
            let vm = VmHandle(DOS1);
            let before = vmm.client(vm).unwrap().get();
            vmm.begin_nest_v86_exec().unwrap();
            let r = vmm.exec_int(0x60);
            vmm.end_nest_exec().unwrap();
            let after = vmm.client(vm).unwrap().get();
            note(
                vmm,
                format!(
                    "exec_int {r:?}, CS:IP and SS:SP back: {}",
                    (before.cs, before.eip, before.ss, before.esp) == (after.cs, after.eip, after.ss, after.esp)
                ),
            );
        }))
        .run();
    run.assert_ok();
    // Exec_Int is Simulate_Int: SCRIPT's hook of INT 60h sees it first.
    assert_eq!(notes(&run), ["H1 60 ax=8660", "exec_int Ok(()), CS:IP and SS:SP back: true"]);
    assert_eq!(outputs(&run), ["isr60", "woke"]);
    let isr = run.trace().values(json!({"kind": "program_output", "text": "isr60"}), "t");
    assert_eq!(isr, [json!(10)], "the handler ran inside the event, at 10 ms");

    // From inside the program's own call into the VMM (a hook of its INT
    // 21h) the program cannot be entered: BAD_FAR_POINTER.
    let run = machine("3.1", "", "i")
        .script(|_, vmm, msg| {
            if msg.message == DEVICE_INIT {
                vmm.hook_v86_int_chain(0x21, |_: &ScriptDevice, vmm: &Vmm<'_>, _, vm| {
                    if vmm.client(vm).unwrap().ah() == 0x30 {
                        vmm.begin_nest_v86_exec().unwrap();
                        note(vmm, format!("{:?}", vmm.exec_int(0x60)));
                        vmm.end_nest_exec().unwrap();
                    }
                    HookAction::PassOn
                })
                .unwrap();
            }
            Carry::Clear
        })
        .run();
    run.assert_ok();
    assert_eq!(notes(&run), [format!("{:?}", Err::<(), _>(VmmError::VIOLATION))]);
    assert_eq!(run.trace().count(json!({"kind": "violation", "code": "BAD_FAR_POINTER", "service": "Resume_Exec"})), 1);
    assert_eq!(outputs(&run), ["int21 ax=0005"], "the program goes on");
}

#[test]
fn call_when_vm_returns_works_in_nested_execution_of_a_rust_vm() {
    // In the system VM (Rust code): Call_When_VM_Returns, then Exec_Int(2Fh)
    // AX=1600h: the VMM's handler answers (4: Windows 95, the default), the IRET reaches the
    // registration's break point, the callback runs, and the block ends at
    // its own break point.
    let run = Scenario::new(&format!("[386Enh]\ndevice = [\"SCRIPT\"]\n{GO_AT_10}"))
        .script(|_, vmm, msg| {
            if msg.message == DEVICE_INIT {
                vmm.register_interrupt("go", |_: &ScriptDevice, vmm, _| {
                    let sys = vmm.get_sys_vm_handle();
                    vmm.schedule_vm_event(sys, |_: &ScriptDevice, vmm, _| {
                        let sys = vmm.get_sys_vm_handle();
                        vmm.begin_nest_v86_exec().unwrap();
                        vmm.call_when_vm_returns(0, 7, |_: &ScriptDevice, vmm: &Vmm<'_>, r| {
                            note(vmm, format!("returned ref={} cf={}", r.ref_data, u8::from(r.timed_out)));
                        })
                        .unwrap();
                        vmm.client(sys).unwrap().set_ax(0x1600);
                        let r = vmm.exec_int(0x2F);
                        let al = vmm.client(sys).unwrap().al();
                        vmm.end_nest_exec().unwrap();
                        note(vmm, format!("exec_int {r:?} al={al}"));
                    })
                    .unwrap();
                })
                .unwrap();
            }
            Carry::Clear
        })
        .run();
    run.assert_ok();
    assert_eq!(notes(&run), ["returned ref=7 cf=0", "exec_int Ok(()) al=4"]);
    assert_eq!(run.trace().values(json!({"kind": "vm_return"}), "why"), [json!("return")]);
}
