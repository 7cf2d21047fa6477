//! I/O port trapping: the port table, trapping state, Simulate_IO, the
//! context rules, and DOS programs' IN/OUT reaching a trapping device.

use vmm_plugin_api::prelude::*;
use vmm_testkit::{Scenario, ScriptDevice, json};

use crate::common::{DOS1, assemble, notes};

/// A UART at 0x3F8 (COM1's data port) and 0x3F9: reads of 0x3F8 return
/// `A` (0x41), 0x3F9 returns 0x07; writes are noted. Installed at
/// `Device_Init`.
struct Uart;

impl VxD for Uart {
    const DEVICE: Device = Device::new("UART");
    fn create(_: &Vmm<'_>) -> Result<Self, String> {
        Ok(Uart)
    }
    fn control(&self, vmm: &Vmm<'_>, msg: ControlMessage) -> Carry {
        if msg.message == DEVICE_INIT {
            vmm.install_mult_io_handlers(&[0x3F8, 0x3F9], |_: &Uart, vmm: &Vmm<'_>, io: IoAccess| {
                if !io.is_byte() {
                    // Only byte I/O is required of a handler. The VM's
                    // registers are its client registers.
                    let ax = vmm.client(io.vm).map(|c| u64::from(c.ax())).unwrap_or(0);
                    let _ = vmm.trace_note("uart_wide", &[("client_ax", ax.into())]);
                    return vmm.simulate_io(io).unwrap_or(0);
                }
                if io.is_output() {
                    let _ = vmm.trace_note(
                        "uart_out",
                        &[("port", u64::from(io.port).into()), ("data", u64::from(io.data).into())],
                    );
                    0
                } else if io.port == 0x3F8 {
                    0x41
                } else {
                    0x07
                }
            })
            .unwrap();
        }
        Carry::Clear
    }
}

fn io_records(run: &vmm_testkit::Run) -> Vec<(u64, String, u64, u64, String)> {
    run.trace()
        .matching(json!({"kind": "io"}))
        .iter()
        .map(|r| {
            (
                r["port"].as_u64().unwrap(),
                r["direction"].as_str().unwrap().to_string(),
                r["size"].as_u64().unwrap(),
                r["value"].as_u64().unwrap(),
                r["handled_by"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn rec(port: u64, dir: &str, size: u64, value: u64, by: &str) -> (u64, String, u64, u64, String) {
    (port, dir.to_string(), size, value, by.to_string())
}

/// SCRIPT (after UART) runs `go` at t=10 in an event, with a DOS VM.
fn with_uart(windows: &str, go: impl Fn(&ScriptDevice, &Vmm<'_>) + 'static) -> Scenario {
    let go = std::rc::Rc::new(go);
    Scenario::new(&format!(
        "[machine]\nwindows = \"{windows}\"\n[386Enh]\ndevice = [\"UART\", \"SCRIPT\"]\n[[vm]]\nname = \"DOS1\"\n\
         [[interrupt]]\nname = \"go\"\nat = 10\n"
    ))
    .device::<Uart>()
    .script(move |_dev, vmm, msg| {
        if msg.message == DEVICE_INIT {
            let go = go.clone();
            vmm.register_interrupt("go", move |_: &ScriptDevice, vmm, _| {
                let go = go.clone();
                vmm.schedule_global_event(move |dev: &ScriptDevice, vmm, _| go(dev, vmm)).unwrap();
            })
            .unwrap();
        }
        Carry::Clear
    })
}

#[test]
fn one_handler_per_port_a_second_install_returns_carry() {
    let run = with_uart("4.0", |dev, vmm| {
        let r = vmm.install_io_handler(0x3F8, |_: &ScriptDevice, _: &Vmm<'_>, _| 0x99);
        dev.note(vmm, format!("second install: {r:?}"));
        // The first handler still gets every access.
        let v = vmm.simulate_vm_io(BYTE_INPUT, 0x3F8, 0).unwrap();
        dev.note(vmm, format!("read {v:#x}"));
        // Install_Mult_IO_Handlers: the first taken port is reported, the
        // ports before it stay installed.
        let r = vmm.install_mult_io_handlers(&[0x2F8, 0x3F9, 0x2FA], |_: &ScriptDevice, _: &Vmm<'_>, _| 0x55);
        dev.note(vmm, format!("mult: {r:?}"));
        let v = vmm.simulate_vm_io(BYTE_INPUT, 0x2F8, 0).unwrap();
        dev.note(vmm, format!("2F8 {v:#x}"));
    })
    .run();
    run.assert_ok();
    assert_eq!(
        notes(&run),
        [
            "second install: Err(VmmError { code: 8 })",
            "read 0x41",
            "mult: Err((1017, VmmError { code: 8 }))",
            "2F8 0x55"
        ]
    );
    assert_eq!(io_records(&run), [rec(0x3F8, "in", 8, 0x41, "UART"), rec(0x2F8, "in", 8, 0x55, "SCRIPT")]);
    assert_eq!(run.violations(), 0);
}

#[test]
fn global_and_local_trapping_decide_between_the_handler_and_the_hardware() {
    let run = with_uart("4.0", |dev, vmm| {
        let sys = vmm.get_sys_vm_handle();
        let dos1 = VmHandle(DOS1);
        let port = 0x330;
        vmm.install_io_handler(port, |_: &ScriptDevice, _: &Vmm<'_>, _| 0x30).unwrap();
        // Simulate_IO of a byte is the hardware's; _Simulate_VM_IO goes
        // through the table as the current VM (the system VM here).
        let v = vmm.simulate_io(IoAccess { vm: sys, io_type: BYTE_INPUT, port, data: 0 }).unwrap();
        assert_eq!(v, 0xFF);
        vmm.disable_local_trapping(dos1, port).unwrap();
        dev.note(vmm, format!("sys {:#x}", vmm.simulate_vm_io(BYTE_INPUT, port, 0).unwrap()));
        vmm.disable_local_trapping(sys, port).unwrap();
        dev.note(vmm, format!("sys off {:#x}", vmm.simulate_vm_io(BYTE_INPUT, port, 0).unwrap()));
        // A global change overwrites every VM's local setting.
        vmm.enable_global_trapping(port).unwrap();
        dev.note(vmm, format!("global on {:#x}", vmm.simulate_vm_io(BYTE_INPUT, port, 0).unwrap()));
        vmm.disable_global_trapping(port).unwrap();
        dev.note(vmm, format!("global off {:#x}", vmm.simulate_vm_io(BYTE_INPUT, port, 0).unwrap()));
        vmm.enable_local_trapping(sys, port).unwrap();
        dev.note(vmm, format!("local on {:#x}", vmm.simulate_vm_io(BYTE_INPUT, port, 0).unwrap()));
        // Remove: trapping goes with the handler; a second remove is CF.
        vmm.remove_io_handler(port).unwrap();
        dev.note(vmm, format!("removed {:#x}", vmm.simulate_vm_io(BYTE_INPUT, port, 0).unwrap()));
        dev.note(vmm, format!("again: {:?}", vmm.remove_io_handler(port)));
    })
    .run();
    run.assert_ok();
    assert_eq!(
        notes(&run),
        [
            "sys 0x30",
            "sys off 0xff",
            "global on 0x30",
            "global off 0xff",
            "local on 0x30",
            "removed 0xff",
            "again: Err(VmmError { code: 7 })"
        ]
    );
    let by: Vec<String> = io_records(&run).into_iter().map(|r| r.4).collect();
    assert_eq!(by, ["hardware", "SCRIPT", "hardware", "SCRIPT", "hardware", "SCRIPT", "hardware"]);
    assert_eq!(run.violations(), 0);
}

#[test]
fn simulate_io_breaks_a_word_into_bytes_through_the_port_table() {
    let run = with_uart("4.0", |dev, vmm| {
        // UART's handler gets the word, hands it to Simulate_IO: the low
        // byte comes back to it for 0x3F8, the high byte for 0x3F9.
        let v = vmm.simulate_vm_io(WORD_INPUT, 0x3F8, 0).unwrap();
        dev.note(vmm, format!("word in {v:#x}"));
        vmm.simulate_vm_io(WORD_OUTPUT, 0x3F8, 0xBBAA).unwrap();
        // 0x3FA is nobody's: its half goes to the hardware.
        let v = vmm.simulate_vm_io(WORD_INPUT, 0x3F9, 0).unwrap();
        dev.note(vmm, format!("3F9 word {v:#x}"));
    })
    .run();
    run.assert_ok();
    assert_eq!(notes(&run), ["word in 0x741", "3F9 word 0xff07"]);
    assert_eq!(
        io_records(&run),
        [
            rec(0x3F8, "in", 8, 0x41, "UART"),
            rec(0x3F9, "in", 8, 0x07, "UART"),
            rec(0x3F8, "in", 16, 0x0741, "UART"),
            rec(0x3F8, "out", 8, 0xAA, "UART"),
            rec(0x3F9, "out", 8, 0xBB, "UART"),
            rec(0x3F8, "out", 16, 0xBBAA, "UART"),
            rec(0x3F9, "in", 8, 0x07, "UART"),
            rec(0x3FA, "in", 8, 0xFF, "hardware"),
            rec(0x3F9, "in", 16, 0xFF07, "UART"),
        ]
    );
    run.trace().expect_in_order(&[
        json!({"kind": "note", "note": "uart_out", "fields": {"port": 0x3F8, "data": 0xAA}}),
        json!({"kind": "note", "note": "uart_out", "fields": {"port": 0x3F9, "data": 0xBB}}),
    ]);
}

#[test]
fn changing_another_devices_port_or_a_bad_vm_handle_is_a_violation() {
    let run = with_uart("4.0", |dev, vmm| {
        dev.note(vmm, format!("disable: {:?}", vmm.disable_global_trapping(0x3F8)));
        dev.note(vmm, format!("remove: {:?}", vmm.remove_io_handler(0x3F8)));
        dev.note(vmm, format!("unowned: {:?}", vmm.enable_global_trapping(0x1234)));
        dev.note(vmm, format!("bad vm: {:?}", vmm.disable_local_trapping(VmHandle(0xDEAD_0001), 0x3F8)));
        dev.note(vmm, format!("bad type: {:?}", vmm.simulate_vm_io(0x18, 0x3F8, 0)));
    })
    .run();
    run.assert_ok();
    assert_eq!(
        notes(&run),
        [
            "disable: Err(VmmError { code: 2 })",
            "remove: Err(VmmError { code: 2 })",
            "unowned: Err(VmmError { code: 2 })",
            "bad vm: Err(VmmError { code: 2 })",
            "bad type: Err(VmmError { code: 2 })"
        ]
    );
    let t = run.trace();
    assert_eq!(t.count(json!({"kind": "violation", "code": "IO_PORT_NOT_OWNED"})), 4);
    t.expect(json!({"kind": "violation", "code": "IO_PORT_NOT_OWNED", "service": "Remove_IO_Handler"}));
    t.expect(json!({"kind": "violation", "code": "INVALID_VM_HANDLE", "service": "Disable_Local_Trapping"}));
}

#[test]
fn under_windows_3_1_install_is_init_only_and_remove_does_not_exist() {
    let run = with_uart("3.1", |dev, vmm| {
        let r = vmm.install_io_handler(0x300, |_: &ScriptDevice, _: &Vmm<'_>, _| 0);
        dev.note(vmm, format!("late install: {r:?}"));
    })
    .run();
    run.assert_ok();
    assert_eq!(notes(&run), ["late install: Err(VmmError { code: 2 })"]);
    run.trace().expect(json!({"kind": "violation", "code": "INIT_ONLY_SERVICE", "service": "Install_IO_Handler"}));

    let run = with_uart("3.1", |_dev, vmm| {
        let _ = vmm.remove_io_handler(0x3F8);
    })
    .run();
    let e = run.expect_error().to_string();
    assert!(e.contains("Invalid VxD dynamic link call to device number 0001, service 0116"), "{e}");
}

#[test]
fn a_dos_programs_in_and_out_reach_the_trapping_device() {
    let run =
        Scenario::new(&include_str!("../../plugins/dosasm/system.ini").replace("device = [", "device = [\"UART\", "))
            .device::<Uart>()
            .plugin_dir(crate::dos::dos_programs())
            .run();
    run.assert_ok();
    let t = run.trace();
    assert_eq!(run.violations(), 0, "{}", t.tail(20));
    // DOSASM reads 0x64 (nobody's) and 0x3F8, writes 0x80, 0x20 and the
    // word 0x1234 to 0x3F8, which UART splits through Simulate_IO.
    assert_eq!(
        io_records(&run),
        [
            rec(0x64, "in", 8, 0xFF, "hardware"),
            rec(0x3F8, "in", 8, 0x41, "UART"),
            // AL still holds what UART answered.
            rec(0x80, "out", 8, 0x41, "hardware"),
            rec(0x20, "out", 8, 0x0B, "hardware"),
            rec(0x3F8, "out", 8, 0x34, "UART"),
            rec(0x3F9, "out", 8, 0x12, "UART"),
            rec(0x3F8, "out", 16, 0x1234, "UART"),
        ]
    );
    t.expect(json!({"kind": "io", "port": 0x3F8, "direction": "in", "value": 0x41, "handled_by": "UART"}));
    // OUT DX, AX with AX = 0x1234: the handler saw it in Client_AX.
    t.expect(json!({"kind": "note", "note": "uart_wide", "fields": {"client_ax": 0x1234}}));
    t.expect(json!({"kind": "io", "vm": DOS1, "port": 0x3F8}));
}

/// A Rust DOS program that talks to the UART through the SDK's port I/O:
/// reads 0x3F8, writes "hi" with `REP OUTSB`, reads the word at 0x3F8,
/// and reads 0x60 (nobody's).
struct PortProg;

impl Module for PortProg {
    const MODULE: ModuleDef = ModuleDef::dos_program("PORTPROG").segments(&[Segment::moveable("_TEXT")]);

    fn create(_: &Ring3<'_>) -> Result<Self, String> {
        Ok(PortProg)
    }

    fn start(&self, r3: &Ring3<'_>, _args: &str) -> Step {
        let b = r3.in_byte(0x3F8).unwrap();
        r3.rep_outsb(0x3F8, b"hi").unwrap();
        let w = r3.in_word(0x3F8).unwrap();
        let kb = r3.in_byte(0x60).unwrap();
        r3.print(&format!("{b:#x} {w:#x} {kb:#x}"));
        Step::exit(0)
    }
}

#[test]
fn a_rust_ring3_program_does_port_io_through_the_sdk() {
    let run = Scenario::new("[386Enh]\ndevice = [\"UART\"]\n[[vm]]\nname = \"DOS1\"\nprogram = \"PORTPROG\"\n")
        .device::<Uart>()
        .module::<PortProg>()
        .run();
    run.assert_ok();
    run.trace().expect(json!({"kind": "program_output", "text": "0x41 0x741 0xff"}));
    assert_eq!(
        io_records(&run),
        [
            rec(0x3F8, "in", 8, 0x41, "UART"),
            rec(0x3F8, "out", 8, b'h' as u64, "UART"),
            rec(0x3F8, "out", 8, b'i' as u64, "UART"),
            rec(0x3F8, "in", 8, 0x41, "UART"),
            rec(0x3F9, "in", 8, 0x07, "UART"),
            rec(0x3F8, "in", 16, 0x0741, "UART"),
            rec(0x60, "in", 8, 0xFF, "hardware"),
        ]
    );
    run.trace().expect(json!({"kind": "io", "vm": DOS1, "port": 0x60}));
}

#[test]
fn the_timeline_shows_each_port_access_on_its_vms_track() {
    let mut m = Scenario::new("[386Enh]\ndevice = [\"UART\"]\n[[vm]]\nname = \"DOS1\"\nprogram = \"PORTPROG\"\n")
        .device::<Uart>()
        .module::<PortProg>()
        .machine()
        .expect("machine");
    m.boot().expect("boot");
    m.run().expect("run");
    let timeline = vmm_host::timeline::chrome_trace(&m.trace());
    let events = timeline["traceEvents"].as_array().unwrap();
    let io: Vec<&serde_json::Value> = events.iter().filter(|e| e["cat"] == "io").collect();
    assert_eq!(io.len(), 7);
    assert_eq!(io[0]["name"], "IN 0x03F8 = 0x41 (UART)");
    assert_eq!(io[1]["name"], "OUT 0x03F8, 0x68 (UART)");
    assert_eq!(io[6]["name"], "IN 0x0060 = 0xFF (hardware)");
    let track = events.iter().find(|e| e["name"] == "thread_name" && e["tid"] == io[0]["tid"]).expect("track name");
    assert_eq!(track["args"]["name"], "DOS1");
}

/// STRDEV traps 0x330: a string access (any form other than a byte) goes
/// to `Simulate_IO`, as the DDK's handlers do, with the client registers
/// noted before and after; a byte input reads 'a', 'b', 'c', ...; a byte
/// output is noted.
struct StrDev {
    next: std::cell::Cell<u8>,
}

impl VxD for StrDev {
    const DEVICE: Device = Device::new("STRDEV");
    fn create(_: &Vmm<'_>) -> Result<Self, String> {
        Ok(StrDev { next: std::cell::Cell::new(b'a') })
    }
    fn control(&self, vmm: &Vmm<'_>, msg: ControlMessage) -> Carry {
        if msg.message == DEVICE_INIT {
            vmm.install_io_handler(0x330, |d: &StrDev, vmm: &Vmm<'_>, io: IoAccess| {
                if !io.is_byte() {
                    let c = io.client(vmm).unwrap();
                    let regs = |when: &str| {
                        let c = c.get();
                        format!("{when} si={:#x} di={:#x} cx={}", c.esi, c.edi, c.ecx & 0xFFFF)
                    };
                    let before = regs("before");
                    let seg_is_ds = io.segment() == c.get().ds as u16;
                    let v = vmm.simulate_io(io).unwrap();
                    let text = format!("type={:#x} ds={seg_is_ds} {before} {}", io.io_type & 0xFFFF, regs("after"));
                    vmm.out_debug_string(&text);
                    return v;
                }
                if io.is_output() {
                    vmm.out_debug_string(&format!("out {:?}", io.data as u8 as char));
                    0
                } else {
                    let b = d.next.get();
                    d.next.set(b + 1);
                    u32::from(b)
                }
            })
            .unwrap();
        }
        Carry::Clear
    }
}

/// STRIO.COM: `REP OUTSB` of "HELLO" forward then backward to 0x330,
/// `REP INSB` of three bytes from 0x330 sent on to 0x81 (nobody's) with
/// `REP OUTSB`, then one `OUTSW` to 0x330. After each REP OUTSB to 0x330
/// it writes SI and CX to port 0x80 (nobody's) as words.
/// Where STRIO's `msg` starts in the file (nasm places it after the code).
const STRIO_MSG_OFFSET: u32 = 0x45;

const STRIO: &str = r#"
org 100h
    mov dx, 330h
    mov si, msg
    mov cx, 5
    cld
    rep outsb
    mov ax, si
    out 80h, ax
    mov ax, cx
    out 80h, ax
    mov si, msg+4
    mov cx, 5
    std
    rep outsb
    cld
    mov ax, si
    out 80h, ax
    mov ax, cx
    out 80h, ax
    mov di, buf
    mov cx, 3
    rep insb
    mov si, buf
    mov cx, 3
    mov dx, 81h
    rep outsb
    mov dx, 330h
    mov si, msg
    outsw
    mov ax, 4C00h
    int 21h
msg db "HELLO"
buf db 0, 0, 0
"#;

fn string_io_run() -> vmm_testkit::Run {
    Scenario::new("[386Enh]\ndevice = [\"STRDEV\"]\n[[vm]]\nname = \"DOS1\"\nprogram = \"STRIO.COM\"\n")
        .device::<StrDev>()
        .plugin_dir(assemble("io", "strio", &[("STRIO.COM", STRIO)]))
        .run()
}

fn strdev_notes(run: &vmm_testkit::Run) -> Vec<String> {
    run.trace()
        .values(json!({"kind": "debug_string", "device": "STRDEV"}), "text")
        .into_iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

/// Scenario 4: `REP OUTSB` with CX = 5, DF = 0 reaches the handler once
/// with ECX = 0x64 | segment << 16; Simulate_IO gives it the five bytes in
/// order; Client_CX ends 0 and Client_SI 5 further on, as the program sees.
#[test]
fn rep_outsb_reaches_the_handler_once_and_simulate_io_gives_it_each_byte() {
    let run = string_io_run();
    run.assert_ok();
    assert_eq!(run.violations(), 0, "{}", run.trace().tail(20));
    let notes = strdev_notes(&run);
    let msg = 0x100 + STRIO_MSG_OFFSET;
    let mut expect: Vec<String> = "HELLO".chars().map(|c| format!("out {c:?}")).collect();
    expect.push(format!("type=0x64 ds=true before si={msg:#x} di=0x0 cx=5 after si={:#x} di=0x0 cx=0", msg + 5));
    assert_eq!(notes[..6], expect[..]);
    let io = io_records(&run);
    let hello: Vec<_> = b"HELLO".iter().map(|&b| rec(0x330, "out", 8, b as u64, "STRDEV")).collect();
    assert_eq!(io[..5], hello[..]);
    // The program goes on after the instruction with SI and CX as left.
    assert_eq!(io[5..7], [rec(0x80, "out", 16, msg as u64 + 5, "hardware"), rec(0x80, "out", 16, 0, "hardware")]);
    // Virtual time: 25 other instructions, and one per string element
    // (5 + 5 + 3 + 3 + 1), as the interpreter counts REP elements.
    let ran: u64 =
        run.trace().values(json!({"kind": "v86_slice"}), "instructions").iter().map(|v| v.as_u64().unwrap()).sum();
    assert_eq!(ran, 25 + 17);
}

/// Scenario 5: the same with DF = 1: Reverse_IO (0x100) is set and the
/// bytes go from the last to the first, SI moving down.
#[test]
fn rep_outsb_with_df_set_is_reverse_io_and_addresses_decrement() {
    let run = string_io_run();
    run.assert_ok();
    let notes = strdev_notes(&run);
    let msg = 0x100 + STRIO_MSG_OFFSET;
    let mut expect: Vec<String> = "OLLEH".chars().map(|c| format!("out {c:?}")).collect();
    expect.push(format!("type=0x164 ds=true before si={:#x} di=0x0 cx=5 after si={:#x} di=0x0 cx=0", msg + 4, msg - 1));
    assert_eq!(notes[6..12], expect[..]);
    let io = io_records(&run);
    let olleh: Vec<_> = b"OLLEH".iter().map(|&b| rec(0x330, "out", 8, b as u64, "STRDEV")).collect();
    assert_eq!(io[7..12], olleh[..]);
    assert_eq!(io[12..14], [rec(0x80, "out", 16, msg as u64 - 1, "hardware"), rec(0x80, "out", 16, 0, "hardware")]);
}

/// `REP INSB` from a trapped port fills ES:DI through the handler's byte
/// inputs; a string access to a port nobody traps reaches the hardware
/// model element by element; `OUTSW` without REP is one word element
/// (String_IO without Rep_IO), split again by the handler's Simulate_IO.
#[test]
fn rep_insb_fills_the_buffer_and_an_untrapped_string_access_reaches_the_hardware_per_element() {
    let run = string_io_run();
    run.assert_ok();
    let notes = strdev_notes(&run);
    let buf = 0x100 + STRIO_MSG_OFFSET + 5;
    assert_eq!(
        notes[12],
        format!(
            "type=0x60 ds=true before si={:#x} di={buf:#x} cx=3 after si={:#x} di={:#x} cx=0",
            buf - 6,
            buf - 6,
            buf + 3
        )
    );
    let io = io_records(&run);
    assert_eq!(
        io[14..],
        [
            rec(0x330, "in", 8, 0x61, "STRDEV"),
            rec(0x330, "in", 8, 0x62, "STRDEV"),
            rec(0x330, "in", 8, 0x63, "STRDEV"),
            rec(0x81, "out", 8, 0x61, "hardware"),
            rec(0x81, "out", 8, 0x62, "hardware"),
            rec(0x81, "out", 8, 0x63, "hardware"),
            // OUTSW: the word element goes to the handler, which splits it.
            rec(0x330, "out", 8, b'H' as u64, "STRDEV"),
            rec(0x331, "out", 8, b'E' as u64, "hardware"),
            rec(0x330, "out", 16, 0x4548, "STRDEV"),
        ]
    );
    let msg = 0x100 + STRIO_MSG_OFFSET;
    assert_eq!(
        notes[13..],
        [
            "out 'H'".to_string(),
            format!(
                "type=0xc ds=false before si={msg:#x} di={:#x} cx=0 after si={msg:#x} di={:#x} cx=0",
                buf + 3,
                buf + 3
            ),
            format!(
                "type=0x2c ds=true before si={msg:#x} di={:#x} cx=0 after si={:#x} di={:#x} cx=0",
                buf + 3,
                msg + 2,
                buf + 3
            ),
        ]
    );
}

/// PORTB traps 0x3FA and notes which VM each access came from and that
/// VM's Client_EAX (the registers of the VM whose access was split).
struct PortB;

impl VxD for PortB {
    const DEVICE: Device = Device::new("PORTB");
    fn create(_: &Vmm<'_>) -> Result<Self, String> {
        Ok(PortB)
    }
    fn control(&self, vmm: &Vmm<'_>, msg: ControlMessage) -> Carry {
        if msg.message == DEVICE_INIT {
            vmm.install_io_handler(0x3FA, |_: &PortB, vmm: &Vmm<'_>, io: IoAccess| {
                let eax = io.client(vmm).map(|c| c.get().eax).unwrap_or(0);
                vmm.out_debug_string(&format!(
                    "vm={:#x} type={:#x} data={:#x} client_eax={eax:#x}",
                    io.vm.0, io.io_type, io.data
                ));
                0
            })
            .unwrap();
        }
        Carry::Clear
    }
}

/// OUTD.COM: `OUT DX, EAX` (80386) to 0x3F8 with EAX = 44332211h.
const OUTD: &str = r#"
org 100h
    mov dx, 3F8h
    mov eax, 44332211h
    out dx, eax
    mov ax, 4C00h
    int 21h
"#;

/// Scenarios 3 and 6: a dword `OUT` to UART's byte-only port becomes, by
/// its Simulate_IO, four byte outputs port..port+3, low byte first (not
/// two words); 0x3FA reaches another device's handler (PORTB) with the
/// same VM and its client registers, 0x3FB (nobody's) the hardware.
#[test]
fn a_dword_out_splits_into_four_bytes_each_reaching_whoever_traps_its_port() {
    let run =
        Scenario::new("[386Enh]\ndevice = [\"UART\", \"PORTB\"]\n[[vm]]\nname = \"DOS1\"\nprogram = \"OUTD.COM\"\n")
            .device::<Uart>()
            .device::<PortB>()
            .plugin_dir(assemble("io", "outd", &[("OUTD.COM", OUTD)]))
            .run();
    run.assert_ok();
    assert_eq!(run.violations(), 0, "{}", run.trace().tail(20));
    assert_eq!(
        io_records(&run),
        [
            rec(0x3F8, "out", 8, 0x11, "UART"),
            rec(0x3F9, "out", 8, 0x22, "UART"),
            rec(0x3FA, "out", 8, 0x33, "PORTB"),
            rec(0x3FB, "out", 8, 0x44, "hardware"),
            rec(0x3F8, "out", 32, 0x4433_2211, "UART"),
        ]
    );
    let portb: Vec<String> = run
        .trace()
        .values(json!({"kind": "debug_string", "device": "PORTB"}), "text")
        .into_iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(portb, [format!("vm={DOS1:#x} type=0x4 data=0x33 client_eax=0x44332211")]);
    run.trace().expect(json!({"kind": "io", "vm": DOS1, "port": 0x3FA, "handled_by": "PORTB"}));
}

/// STRPROG, Rust ring-3 code: `REP OUTSB` of "abc" and `REP INSB` of two
/// bytes from 0x330 (STRDEV's), `OUTSB` of one byte, and `REP OUTSW` to
/// 0x82 (nobody's).
struct StrProg;

impl Module for StrProg {
    const MODULE: ModuleDef = ModuleDef::dos_program("STRPROG").segments(&[Segment::moveable("_TEXT")]);

    fn create(_: &Ring3<'_>) -> Result<Self, String> {
        Ok(StrProg)
    }

    fn start(&self, r3: &Ring3<'_>, _args: &str) -> Step {
        r3.rep_outsb(0x330, b"abc").unwrap();
        let mut buf = [0u8; 2];
        r3.rep_insb(0x330, &mut buf).unwrap();
        r3.outsb(0x330, b'z').unwrap();
        r3.rep_outsw(0x82, &[0x1234]).unwrap();
        r3.print(&format!("in {:?}", std::str::from_utf8(&buf).unwrap()));
        Step::exit(0)
    }
}

/// The SDK's string forms for Rust ring-3 code are one access each, as a
/// DOS program's: the handler sees String_IO (and Rep_IO for the REP
/// forms) with the client's DS:SI / ES:DI at a block holding the data.
#[test]
fn the_sdks_string_forms_reach_the_handler_once_with_the_client_at_the_buffer() {
    let run = Scenario::new("[386Enh]\ndevice = [\"STRDEV\"]\n[[vm]]\nname = \"DOS1\"\nprogram = \"STRPROG\"\n")
        .device::<StrDev>()
        .module::<StrProg>()
        .run();
    run.assert_ok();
    assert_eq!(run.violations(), 0, "{}", run.trace().tail(20));
    run.trace().expect(json!({"kind": "program_output", "text": "in \"ab\""}));
    let notes = strdev_notes(&run);
    assert_eq!(
        notes,
        [
            "out 'a'",
            "out 'b'",
            "out 'c'",
            "type=0x64 ds=true before si=0x0 di=0x0 cx=3 after si=0x3 di=0x0 cx=0",
            "type=0x60 ds=false before si=0x0 di=0x0 cx=2 after si=0x0 di=0x2 cx=0",
            "out 'z'",
            "type=0x24 ds=true before si=0x0 di=0x0 cx=0 after si=0x1 di=0x0 cx=0",
        ]
    );
    assert_eq!(
        io_records(&run),
        [
            rec(0x330, "out", 8, b'a' as u64, "STRDEV"),
            rec(0x330, "out", 8, b'b' as u64, "STRDEV"),
            rec(0x330, "out", 8, b'c' as u64, "STRDEV"),
            rec(0x330, "in", 8, b'a' as u64, "STRDEV"),
            rec(0x330, "in", 8, b'b' as u64, "STRDEV"),
            rec(0x330, "out", 8, b'z' as u64, "STRDEV"),
            // Nobody's port: the word element reaches the hardware.
            rec(0x82, "out", 16, 0x1234, "hardware"),
        ]
    );
}

/// STRPROG32, Rust ring-3 code: the word and dword string forms: `REP
/// OUTSD` of one dword to 0x330 (STRDEV's), then to 0x82 (nobody's) `REP
/// OUTSD` of two dwords, `REP INSD` of two, `OUTSD`, `INSW`, `OUTSW` and
/// `INSD`.
struct StrProg32;

impl Module for StrProg32 {
    const MODULE: ModuleDef = ModuleDef::dos_program("STRPROG32").segments(&[Segment::moveable("_TEXT")]);

    fn create(_: &Ring3<'_>) -> Result<Self, String> {
        Ok(StrProg32)
    }

    fn start(&self, r3: &Ring3<'_>, _args: &str) -> Step {
        r3.rep_outsd(0x330, &[u32::from_le_bytes(*b"wxyz")]).unwrap();
        r3.rep_outsd(0x82, &[0xAABB_CCDD, 0x1122_3344]).unwrap();
        let mut two = [0u32; 2];
        r3.rep_insd(0x82, &mut two).unwrap();
        r3.outsd(0x82, 0x0506_0708).unwrap();
        let w = r3.insw(0x82).unwrap();
        r3.outsw(0x82, 0x0102).unwrap();
        let d = r3.insd(0x82).unwrap();
        r3.print(&format!("in {:#x} {:#x} {w:#x} {d:#x}", two[0], two[1]));
        Step::exit(0)
    }
}

/// The SDK's word and dword string forms are one access each too: STRDEV
/// sees Dword_Output with String_IO and Rep_IO (0x74); on a port nobody
/// traps each element reaches the hardware at its size.
#[test]
fn the_sdks_word_and_dword_string_forms_are_one_access_of_their_size() {
    let run = Scenario::new("[386Enh]\ndevice = [\"STRDEV\"]\n[[vm]]\nname = \"DOS1\"\nprogram = \"STRPROG32\"\n")
        .device::<StrDev>()
        .module::<StrProg32>()
        .run();
    run.assert_ok();
    assert_eq!(run.violations(), 0, "{}", run.trace().tail(20));
    run.trace().expect(json!({"kind": "program_output", "text": "in 0xffffffff 0xffffffff 0xffff 0xffffffff"}));
    let notes = strdev_notes(&run);
    assert_eq!(notes.last().map(|n| &n[..9]), Some("type=0x74"), "{notes:?}");
    let hardware: Vec<_> = io_records(&run).into_iter().filter(|r| r.0 == 0x82).collect();
    assert_eq!(
        hardware,
        [
            rec(0x82, "out", 32, 0xAABB_CCDD, "hardware"),
            rec(0x82, "out", 32, 0x1122_3344, "hardware"),
            rec(0x82, "in", 32, 0xFFFF_FFFF, "hardware"),
            rec(0x82, "in", 32, 0xFFFF_FFFF, "hardware"),
            rec(0x82, "out", 32, 0x0506_0708, "hardware"),
            rec(0x82, "in", 16, 0xFFFF, "hardware"),
            rec(0x82, "out", 16, 0x0102, "hardware"),
            rec(0x82, "in", 32, 0xFFFF_FFFF, "hardware"),
        ]
    );
}

/// Scenario 11: Install_Mult_IO_Handlers whose third entry is already
/// trapped returns carry with EDX = that port; the first two stay
/// installed (no rollback) and the fourth is not tried.
/// Remove_Mult_IO_Handlers tries every port and reports the first failure.
#[test]
fn install_mult_stops_at_a_trapped_port_and_keeps_the_entries_before_it() {
    let run = with_uart("4.0", |dev, vmm| {
        let r = vmm.install_mult_io_handlers(&[0x2F8, 0x2F9, 0x3F8, 0x2FA], |_: &ScriptDevice, _: &Vmm<'_>, io| {
            u32::from(io.port as u8)
        });
        dev.note(vmm, format!("install: {r:x?}"));
        for port in [0x2F8, 0x2F9, 0x3F8, 0x2FA] {
            dev.note(vmm, format!("{port:#x} reads {:#x}", vmm.simulate_vm_io(BYTE_INPUT, port, 0).unwrap()));
        }
        let r = vmm.remove_mult_io_handlers(&[0x2F8, 0x2FA, 0x2F9]);
        dev.note(vmm, format!("remove: {r:x?}"));
        dev.note(vmm, format!("0x2f9 reads {:#x}", vmm.simulate_vm_io(BYTE_INPUT, 0x2F9, 0).unwrap()));
        // UART's port: a violation, reported with its port.
        let r = vmm.remove_mult_io_handlers(&[0x3F9]);
        dev.note(vmm, format!("stranger: {r:x?}"));
    })
    .run();
    run.assert_ok();
    assert_eq!(
        notes(&run),
        [
            "install: Err((3f8, VmmError { code: 8 }))",
            "0x2f8 reads 0xf8",
            "0x2f9 reads 0xf9",
            "0x3f8 reads 0x41",
            "0x2fa reads 0xff",
            "remove: Err((2fa, VmmError { code: 7 }))",
            "0x2f9 reads 0xff",
            "stranger: Err((3f9, VmmError { code: 2 }))",
        ]
    );
    let t = run.trace();
    assert_eq!(t.count(json!({"kind": "violation"})), 1);
    t.expect(json!({"kind": "violation", "code": "IO_PORT_NOT_OWNED", "service": "Remove_Mult_IO_Handlers"}));
}

/// Under Windows 3.1 Install_Mult_IO_Handlers is init-only (late: a
/// violation naming it, nothing installed) and Remove_Mult_IO_Handlers
/// does not exist.
#[test]
fn under_windows_3_1_install_mult_is_init_only_and_remove_mult_does_not_exist() {
    let run = with_uart("3.1", |dev, vmm| {
        let r = vmm.install_mult_io_handlers(&[0x300, 0x301], |_: &ScriptDevice, _: &Vmm<'_>, _| 0);
        dev.note(vmm, format!("late install: {r:x?}"));
    })
    .run();
    run.assert_ok();
    assert_eq!(notes(&run), ["late install: Err((300, VmmError { code: 2 }))"]);
    run.trace()
        .expect(json!({"kind": "violation", "code": "INIT_ONLY_SERVICE", "service": "Install_Mult_IO_Handlers"}));

    let run = with_uart("3.1", |_dev, vmm| {
        let _ = vmm.remove_mult_io_handlers(&[0x3F8]);
    })
    .run();
    let e = run.expect_error().to_string();
    assert!(e.contains("Invalid VxD dynamic link call to device number 0001, service 0117"), "{e}");
}

/// A32.COM: `REP OUTSB` with the address-size prefix (67h): ESI and ECX.
const A32: &str = r#"
org 100h
    mov dx, 330h
    mov esi, msg
    mov ecx, 2
    a32 rep outsb
    mov ax, 4C00h
    int 21h
msg db "AB"
"#;

/// With the 67h prefix the handler sees Addr_32_IO (0x80) and Simulate_IO
/// counts ECX down and moves ESI.
#[test]
fn a_32_bit_address_string_access_is_addr_32_io_and_uses_esi_and_ecx() {
    let run = Scenario::new("[386Enh]\ndevice = [\"STRDEV\"]\n[[vm]]\nname = \"DOS1\"\nprogram = \"A32.COM\"\n")
        .device::<StrDev>()
        .plugin_dir(assemble("io", "a32", &[("A32.COM", A32)]))
        .run();
    run.assert_ok();
    assert_eq!(run.violations(), 0, "{}", run.trace().tail(20));
    assert_eq!(
        strdev_notes(&run),
        ["out 'A'", "out 'B'", "type=0xe4 ds=true before si=0x117 di=0x0 cx=2 after si=0x119 di=0x0 cx=0"]
    );
}

/// PICPROG, Rust ring-3 code: `REP OUTSB` of one byte (0xFF) to the
/// master PIC's mask port, `OUT 20h, AX` (a word), then reads the mask.
struct PicProg;

impl Module for PicProg {
    const MODULE: ModuleDef = ModuleDef::dos_program("PICPROG").segments(&[Segment::moveable("_TEXT")]);

    fn create(_: &Ring3<'_>) -> Result<Self, String> {
        Ok(PicProg)
    }

    fn start(&self, r3: &Ring3<'_>, _args: &str) -> Step {
        r3.rep_outsb(0x21, &[0xFF]).unwrap();
        let masked = r3.in_byte(0x21).unwrap();
        // OCW3 "read IRR" to 20h, mask 0xFB to 21h in one word.
        r3.out_word(0x20, 0xFB0A).unwrap();
        let mask = r3.in_byte(0x21).unwrap();
        r3.print(&format!("{masked:#x} {mask:#x}"));
        Step::exit(0)
    }
}

/// VPICD's PIC ports are host handlers in the port table: a string or
/// word access reaches them as one access and comes back through
/// Simulate_IO byte by byte, each port's byte to its handler (VPICD again,
/// re-entered from inside its own call).
#[test]
fn a_host_handler_in_the_port_table_takes_string_and_word_accesses_through_simulate_io() {
    let run = Scenario::new("[386Enh]\ndevice = [\"*VPICD\"]\n[[vm]]\nname = \"DOS1\"\nprogram = \"PICPROG\"\n")
        .module::<PicProg>()
        .run();
    run.assert_ok();
    assert_eq!(run.violations(), 0, "{}", run.trace().tail(20));
    run.trace().expect(json!({"kind": "program_output", "text": "0xff 0xfb"}));
    assert_eq!(
        io_records(&run),
        [
            rec(0x21, "out", 8, 0xFF, "VPICD"),
            rec(0x21, "in", 8, 0xFF, "VPICD"),
            rec(0x20, "out", 8, 0x0A, "VPICD"),
            rec(0x21, "out", 8, 0xFB, "VPICD"),
            rec(0x20, "out", 16, 0xFB0A, "VPICD"),
            rec(0x21, "in", 8, 0xFB, "VPICD"),
        ]
    );
}

/// Simulate_IO of a string form whose buffer is no memory of the VM (a
/// Rust VM's segment that is no block of it) stops with a violation of
/// Simulate_IO naming the pointer; a malformed IOType is refused as before.
#[test]
fn simulate_io_of_a_string_form_outside_the_vms_memory_is_a_bad_far_pointer() {
    let run = with_uart("4.0", |dev, vmm| {
        let sys = vmm.get_sys_vm_handle();
        let io = IoAccess { vm: sys, io_type: 0x1234_0000 | STRING_IO | BYTE_OUTPUT, port: 0x3F8, data: 0 };
        dev.note(vmm, format!("bad buffer: {:?}", vmm.simulate_io(io)));
        let io = IoAccess { vm: sys, io_type: 0x0200 | STRING_IO, port: 0x3F8, data: 0 };
        dev.note(vmm, format!("bad type: {:?}", vmm.simulate_io(io)));
    })
    .run();
    run.assert_ok();
    assert_eq!(notes(&run), ["bad buffer: Err(VmmError { code: 2 })", "bad type: Err(VmmError { code: 2 })"]);
    let t = run.trace();
    t.expect(json!({"kind": "violation", "code": "BAD_FAR_POINTER", "service": "Simulate_IO"}));
    t.expect(json!({"kind": "violation", "code": "IO_PORT_NOT_OWNED", "service": "Simulate_IO"}));
    assert_eq!(t.count(json!({"kind": "io"})), 0, "no element was performed");
}
