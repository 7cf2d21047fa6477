//! The VMM's register-only services reached the DDK way, by `VxDCall` to
//! device 1: the reference's registers in and out, the same context and
//! Windows-version rules as the typed methods, and service hooks that see
//! the calls.

use vmm_plugin_api::prelude::*;
use vmm_testkit::{Scenario, ScriptDevice, json};

use crate::common::{notes, on_go};

/// `VxDCall` VMM service `ordinal` with `regs`: the result and the
/// registers afterwards.
fn vmm_call(vmm: &Vmm<'_>, ordinal: u16, regs: Regs) -> (Result<(), VmmError>, Regs) {
    let mut call = ServiceCall { regs, args: [0; 8] };
    let r = vmm.vxd_call(0x0001_0000 | ordinal as u32, &mut call);
    (r, call.regs)
}

fn cf(r: &Regs) -> bool {
    r.flags & CF_MASK != 0
}

fn zf(r: &Regs) -> bool {
    r.flags & ZF_MASK != 0
}

/// A machine whose SCRIPT device runs `body` 10 ms after boot, in the
/// system VM outside interrupt time.
fn after_boot(windows: &str, body: impl Fn(&ScriptDevice, &Vmm<'_>) + 'static) -> Scenario {
    let body = std::rc::Rc::new(body);
    Scenario::new("[386Enh]\ndevice = [\"SCRIPT\"]\n").set(&format!("machine.windows=\"{windows}\"")).script(
        move |_dev, vmm, msg| {
            if msg.message == INIT_COMPLETE {
                let b = body.clone();
                vmm.set_global_time_out(10, move |dev: &ScriptDevice, vmm, _| b(dev, vmm)).unwrap();
            }
            Carry::Clear
        },
    )
}

#[test]
fn vxdcall_sets_and_gets_interrupt_vectors_in_registers() {
    let run = after_boot("4.0", |dev, vmm| {
        // Set_V86_Int_Vector: EAX = int, CX = segment, EDX = offset.
        let (r, out) = vmm_call(vmm, 0x43, Regs { eax: 0x66, ecx: 0x1234, edx: 0x5678, ..Default::default() });
        dev.note(vmm, format!("set {r:?} cf={}", cf(&out)));
        // Get_V86_Int_Vector: CX = segment, EDX = offset; ECX's high word kept.
        let (r, out) = vmm_call(vmm, 0x42, Regs { eax: 0x66, ecx: 0xAAAA_0000, ..Default::default() });
        dev.note(vmm, format!("get {r:?} cf={} ecx={:08X} edx={:08X}", cf(&out), out.ecx, out.edx));
        // Get_PM_Int_Vector: ZF set while the vector is the default.
        let (r, out) = vmm_call(vmm, 0x44, Regs { eax: 0x31, ..Default::default() });
        let typed = vmm.get_pm_int_vector(0x31).unwrap();
        dev.note(
            vmm,
            format!(
                "pm {r:?} zf={} same={}",
                zf(&out),
                out.ecx as u16 == typed.0.selector && out.edx == typed.0.offset as u32 && typed.1
            ),
        );
        // An interrupt number past 0xFF is refused as through the typed method.
        let (r, out) = vmm_call(vmm, 0x42, Regs { eax: 0x100, ..Default::default() });
        dev.note(vmm, format!("bad {r:?} cf={}", cf(&out)));
    })
    .run();
    run.assert_ok();
    let ok = format!("{:?}", Ok::<(), VmmError>(()));
    let refused = format!("{:?}", Err::<(), _>(VmmError::VIOLATION));
    assert_eq!(
        notes(&run),
        [
            format!("set {ok} cf=false"),
            format!("get {ok} cf=false ecx=AAAA1234 edx=00005678"),
            format!("pm {ok} zf=true same=true"),
            format!("bad {refused} cf=true"),
        ]
    );
    run.trace().expect(json!({"kind": "violation", "code": "INVALID_PARAMETER", "service": "Get_V86_Int_Vector"}));
}

#[test]
fn vxdcall_reports_fault_hook_addresses_in_edx_esi_edi() {
    let run = after_boot("4.0", |dev, vmm| {
        let (r, out) = vmm_call(vmm, 0x7E, Regs { eax: 0x0D, edx: 1, esi: 1, edi: 1, ..Default::default() });
        let typed = vmm.get_fault_hook_addrs(0x0D).unwrap();
        dev.note(
            vmm,
            format!(
                "{r:?} cf={} same={}",
                cf(&out),
                [out.edx, out.esi, out.edi] == [typed.v86, typed.pm, typed.vmm].map(|h| h.map_or(0, |h| h.0))
            ),
        );
        // INT 2 (NMI) has no fault hooks: CF set.
        let (r, out) = vmm_call(vmm, 0x7E, Regs { eax: 0x02, ..Default::default() });
        dev.note(vmm, format!("nmi {r:?} cf={}", cf(&out)));
    })
    .run();
    run.assert_ok();
    let ok = format!("{:?}", Ok::<(), VmmError>(()));
    assert_eq!(notes(&run), [format!("{ok} cf=false same=true"), format!("nmi {ok} cf=true")]);
}

#[test]
fn a_hook_on_adjust_execution_time_sees_its_vxdcalls() {
    let run = Scenario::new("[386Enh]\ndevice = [\"SCRIPT\"]\n")
        .script(|_dev, vmm, msg| {
            if msg.message == DEVICE_INIT {
                vmm.hook_device_service(0x0001_0037, true, |dev: &ScriptDevice, vmm, call: &mut HookedCall<'_>| {
                    let (eax, ebx) = (call.regs().eax, call.regs().ebx);
                    let sys = vmm.get_sys_vm_handle().0;
                    let chained = call.chain(vmm);
                    dev.note(vmm, format!("hook eax={eax} sys={} chained {chained:?}", ebx == sys));
                })
                .unwrap();
            }
            if msg.message == INIT_COMPLETE {
                vmm.set_global_time_out(10, |dev: &ScriptDevice, vmm, _| {
                    let sys = vmm.get_sys_vm_handle().0;
                    let (r, out) = vmm_call(vmm, 0x37, Regs { eax: 2, ebx: sys, ..Default::default() });
                    dev.note(vmm, format!("call {r:?} cf={}", cf(&out)));
                    // A VM handle that is not live fails as through the typed
                    // method (the violation); past a hook the caller sees CF.
                    let (r, out) = vmm_call(vmm, 0x37, Regs { eax: 2, ebx: 0x0007_0009, ..Default::default() });
                    dev.note(vmm, format!("bad {r:?} cf={}", cf(&out)));
                })
                .unwrap();
            }
            Carry::Clear
        })
        .run();
    run.assert_ok();
    let ok = format!("{:?}", Ok::<(), VmmError>(()));
    let refused = format!("{:?}", Err::<(), _>(VmmError::VIOLATION));
    assert_eq!(
        notes(&run),
        [
            format!("hook eax=2 sys=true chained {ok}"),
            format!("call {ok} cf=false"),
            format!("hook eax=2 sys=false chained {refused}"),
            format!("bad {ok} cf=true"),
        ]
    );
    run.trace().expect(json!({"kind": "violation", "code": "INVALID_VM_HANDLE", "service": "Adjust_Execution_Time"}));
}

#[test]
fn a_callback_taking_vmm_service_stays_refused_by_vxdcall() {
    let run = after_boot("4.0", |dev, vmm| {
        // Set_Global_Time_Out takes a callback procedure in ESI.
        let (r, out) = vmm_call(vmm, 0x3C, Regs { eax: 10, esi: 0x1234, ..Default::default() });
        dev.note(vmm, format!("{r:?} cf={}", cf(&out)));
    })
    .run();
    run.assert_ok();
    assert_eq!(notes(&run), [format!("{:?} cf=true", Err::<(), _>(VmmError::VIOLATION))]);
    run.trace().expect(json!({"kind": "violation", "code": "VMM_SERVICE_BY_VXDCALL"}));
}

#[test]
fn a_synchronous_vmm_service_by_vxdcall_at_interrupt_time_is_refused() {
    let run = on_go("[[interrupt]]\nname = \"go\"\nat = 10\n", |dev, vmm| {
        // Simulate_Int is not on the asynchronous list.
        let (r, out) = vmm_call(vmm, 0x46, Regs { eax: 0x21, ..Default::default() });
        dev.note(vmm, format!("{r:?} cf={}", cf(&out)));
    })
    .run();
    run.assert_ok();
    assert_eq!(notes(&run), [format!("{:?} cf=true", Err::<(), _>(VmmError::VIOLATION))]);
    run.trace().expect(json!({"kind": "violation", "code": "SYNC_SERVICE_AT_INTERRUPT", "service": "Simulate_Int"}));
}

#[test]
fn a_windows_95_vmm_service_by_vxdcall_under_windows_3_1_is_an_invalid_dynamic_link() {
    let run = after_boot("3.1", |_dev, vmm| {
        // Remove_IO_Handler (0x116) is new in 4.0.
        let _ = vmm_call(vmm, 0x116, Regs { edx: 0x3F8, ..Default::default() });
    })
    .run();
    let e = run.expect_error().to_string();
    assert!(e.contains("Invalid VxD dynamic link call") && e.contains("service 0116"), "{e}");
}

#[test]
fn vxdcall_simulates_port_input_into_al() {
    let run = after_boot("4.0", |dev, vmm| {
        // _Simulate_VM_IO: EDX = port, ECX = Byte_Input; AL = the data, the
        // rest of EAX kept.
        let (r, out) =
            vmm_call(vmm, 0x130, Regs { eax: 0x1234_5600, ecx: BYTE_INPUT, edx: 0x21, ..Default::default() });
        let typed = vmm.simulate_vm_io(BYTE_INPUT, 0x21, 0).unwrap();
        dev.note(vmm, format!("{r:?} cf={} high={:06X} same={}", cf(&out), out.eax >> 8, out.eax & 0xFF == typed));
    })
    .run();
    run.assert_ok();
    assert_eq!(notes(&run), [format!("{:?} cf=false high=123456 same=true", Ok::<(), VmmError>(()))]);
}

#[test]
fn system_control_by_vxdcall_broadcasts_a_private_message_with_its_registers() {
    let run = Scenario::new("[386Enh]\ndevice = [\"SCRIPT\"]\n")
        .script(|dev, vmm, msg| {
            if msg.message == 0x7000_0005 {
                dev.note(vmm, format!("got vm={:#x} edx={} esi={} edi={}", msg.vm.0, msg.edx, msg.esi, msg.edi));
            }
            if msg.message == INIT_COMPLETE {
                vmm.set_global_time_out(10, |dev: &ScriptDevice, vmm, _| {
                    let sys = vmm.get_sys_vm_handle().0;
                    let regs = Regs { eax: 0x7000_0005, ebx: sys, edx: 1, esi: 2, edi: 3, ..Default::default() };
                    let (r, out) = vmm_call(vmm, 0x93, regs);
                    dev.note(vmm, format!("{r:?} cf={}", cf(&out)));
                    // A message the VMM alone sends is refused, as through the typed method.
                    let (r, _) = vmm_call(vmm, 0x93, Regs { eax: INIT_COMPLETE, ..Default::default() });
                    dev.note(vmm, format!("{r:?}"));
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
            format!("got vm={:#x} edx=1 esi=2 edi=3", crate::common::SYS),
            format!("{:?} cf=false", Ok::<(), VmmError>(())),
            format!("{:?}", Err::<(), _>(VmmError::VIOLATION)),
        ]
    );
    let t = run.trace();
    t.expect(json!({"kind": "control", "device": "SCRIPT", "number": 0x7000_0005u32}));
    t.expect(json!({"kind": "violation", "code": "CONTROL_NOT_SENDABLE", "service": "System_Control"}));
}

#[test]
fn semaphores_and_the_critical_section_by_vxdcall_use_the_ddk_registers() {
    let run = after_boot("4.0", |dev, vmm| {
        // Create_Semaphore: ECX = tokens, EAX = the handle.
        let (r, out) = vmm_call(vmm, 0x25, Regs { ecx: 1, ..Default::default() });
        let sem = out.eax;
        dev.note(vmm, format!("create {r:?} cf={} handle={}", cf(&out), sem != 0));
        let (r, _) = vmm_call(vmm, 0x27, Regs { eax: sem, ..Default::default() });
        dev.note(vmm, format!("wait {r:?}"));
        let (r, _) = vmm_call(vmm, 0x28, Regs { eax: sem, ..Default::default() });
        dev.note(vmm, format!("signal {r:?}"));
        let (r, _) = vmm_call(vmm, 0x26, Regs { eax: sem, ..Default::default() });
        dev.note(vmm, format!("destroy {r:?}"));
        // A destroyed handle is refused by the same check as the typed call.
        let (r, out) = vmm_call(vmm, 0x28, Regs { eax: sem, ..Default::default() });
        dev.note(vmm, format!("stale {r:?} cf={}", cf(&out)));
        // Begin_Critical_Section, then Get_Crit_Section_Status: ECX = claims,
        // EBX = owner, CF = the priority is at least Critical_Section_Boost.
        let (r, _) = vmm_call(vmm, 0x1F, Regs::default());
        let (_, s) = vmm_call(vmm, 0x29, Regs::default());
        let sys = vmm.get_sys_vm_handle().0;
        dev.note(vmm, format!("begin {r:?} claims={} owner={} cf={}", s.ecx, s.ebx == sys, cf(&s)));
        let (r, _) = vmm_call(vmm, 0x20, Regs::default());
        let (_, s) = vmm_call(vmm, 0xF1, Regs::default());
        dev.note(vmm, format!("end {r:?} claims={} cf={}", s.ecx, cf(&s)));
    })
    .run();
    run.assert_ok();
    let ok = format!("{:?}", Ok::<(), VmmError>(()));
    let n = notes(&run);
    assert_eq!(
        n[..4],
        [
            format!("create {ok} cf=false handle=true"),
            format!("wait {ok}"),
            format!("signal {ok}"),
            format!("destroy {ok}"),
        ]
    );
    assert!(n[4].starts_with("stale Err(") && n[4].ends_with("cf=true"), "{n:?}");
    assert_eq!(n[5..], [format!("begin {ok} claims=1 owner=true cf=true"), format!("end {ok} claims=0 cf=false")]);
}

#[test]
fn vxdcall_cancels_a_time_out_by_esi_and_walks_the_vm_list_in_ebx() {
    let run = after_boot("4.0", |dev, vmm| {
        let h = vmm.set_global_time_out(50, |dev: &ScriptDevice, vmm, _| dev.note(vmm, "ran")).unwrap();
        // Cancel_Time_Out: ESI = the handle; a second cancel is stale.
        let (r, out) = vmm_call(vmm, 0x3E, Regs { esi: h.0, ..Default::default() });
        dev.note(vmm, format!("cancel {r:?} cf={}", cf(&out)));
        let (r, out) = vmm_call(vmm, 0x3E, Regs { esi: h.0, ..Default::default() });
        dev.note(vmm, format!("again {r:?} cf={}", cf(&out)));
        // Get_Next_VM_Handle: EBX in, EBX out; the list is circular.
        let sys = vmm.get_sys_vm_handle().0;
        let (r, out) = vmm_call(vmm, 0x3B, Regs { ebx: sys, ..Default::default() });
        dev.note(vmm, format!("next {r:?} {}", out.ebx == vmm.get_next_vm_handle(VmHandle(sys)).unwrap().0));
    })
    .run();
    run.assert_ok();
    let ok = format!("{:?}", Ok::<(), VmmError>(()));
    let refused = format!("{:?}", Err::<(), _>(VmmError::VIOLATION));
    assert_eq!(
        notes(&run),
        [format!("cancel {ok} cf=false"), format!("again {refused} cf=true"), format!("next {ok} true")]
    );
    let t = run.trace();
    t.expect(json!({"kind": "violation", "code": "STALE_TIMEOUT_HANDLE", "service": "Cancel_Time_Out"}));
    assert_eq!(t.count(json!({"kind": "debug_string", "text": "ran"})), 0, "the cancelled time-out never ran");
}

#[test]
fn nested_execution_by_vxdcall_pushes_calls_and_pops_on_the_client_stack() {
    let run = after_boot("4.0", |dev, vmm| {
        let sys = vmm.get_sys_vm_handle();
        let c = vmm.client(sys).unwrap();
        // Outside a nested-execution block Simulate_Push is refused, as typed.
        let (r, _) = vmm_call(vmm, 0x4D, Regs { eax: 0x1234, ..Default::default() });
        dev.note(vmm, format!("outside {r:?}"));
        // Begin_Nest_Exec, Simulate_Push (EAX), Simulate_Pop (EAX out).
        let (r, _) = vmm_call(vmm, 0x83, Regs::default());
        let sp = c.get().esp;
        let (p, _) = vmm_call(vmm, 0x4D, Regs { eax: 0xBEEF, ..Default::default() });
        let pushed = sp - c.get().esp;
        let (q, out) = vmm_call(vmm, 0x4E, Regs::default());
        dev.note(vmm, format!("begin {r:?} push {p:?} by {pushed} pop {q:?} eax={:X}", out.eax));
        // Simulate_Far_Call: CX = segment, EDX = offset; Simulate_Far_Ret back.
        let before = c.get();
        let (call, _) = vmm_call(vmm, 0x48, Regs { ecx: 0x010F, edx: 0x0010, ..Default::default() });
        let at = c.get();
        let (ret, _) = vmm_call(vmm, 0x4A, Regs::default());
        let back = c.get();
        dev.note(
            vmm,
            format!(
                "call {call:?} at {:04X}:{:04X} ret {ret:?} back={}",
                at.cs,
                at.eip,
                (back.cs, back.eip, back.esp) == (before.cs, before.eip, before.esp)
            ),
        );
        let (r, _) = vmm_call(vmm, 0x86, Regs::default());
        dev.note(vmm, format!("end {r:?}"));
    })
    .run();
    run.assert_ok();
    let ok = format!("{:?}", Ok::<(), VmmError>(()));
    let refused = format!("{:?}", Err::<(), _>(VmmError::VIOLATION));
    let n = notes(&run);
    assert_eq!(n[0], format!("outside {refused}"));
    assert!(
        n[1].starts_with(&format!("begin {ok} push {ok} by ")) && n[1].ends_with(&format!("pop {ok} eax=BEEF")),
        "{n:?}"
    );
    assert_eq!(n[2..], [format!("call {ok} at 010F:0010 ret {ok} back=true"), format!("end {ok}")]);
    run.trace().expect(json!({"kind": "violation", "code": "UNBALANCED_NEST_EXEC", "service": "Simulate_Push"}));
}
