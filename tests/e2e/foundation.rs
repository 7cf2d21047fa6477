//! The device list and the system control messages: init order, the
//! device-ID rules of KB Q84000, the init phases, the exits, VxDCall and the
//! profile services.

use vmm_host::Error;
use vmm_testkit::{Scenario, json};

#[test]
fn boots_and_shuts_down_with_every_phase_in_order() {
    let run = Scenario::new(
        r#"
        [386Enh]
        device = ["vcountd", "vhello"]
        "#,
    )
    .run();
    run.assert_ok();
    let t = run.trace();
    let messages: Vec<_> = t.values(json!({"kind": "control", "device": "VCOUNTD"}), "message").into_iter().collect();
    assert_eq!(
        messages,
        [
            "Sys_Critical_Init",
            "Device_Init",
            "Init_Complete",
            "Sys_VM_Init",
            "Sys_VM_Terminate",
            "Sys_VM_Terminate2",
            "System_Exit",
            "System_Exit2",
            "Sys_Critical_Exit",
            "Sys_Critical_Exit2",
        ]
    );
    // Each phase reaches every device before the next phase starts.
    t.expect_in_order(&[
        json!({"kind": "control", "device": "VHELLO", "message": "Sys_Critical_Init"}),
        json!({"kind": "control", "device": "VCOUNTD", "message": "Device_Init"}),
        json!({"kind": "control", "device": "VHELLO", "message": "Device_Init"}),
        json!({"kind": "control", "device": "VCOUNTD", "message": "Init_Complete"}),
    ]);
    t.expect_none(json!({"kind": "violation"}));
}

#[test]
fn init_order_sorts_the_list_and_ties_keep_load_order() {
    let run = Scenario::new(
        r#"
        [386Enh]
        device = ["*SHELL", "vhello", "vcountd"]
        "#,
    )
    .run();
    run.assert_ok();
    let order: Vec<_> = run.trace().values(json!({"kind": "control", "message": "Device_Init"}), "device");
    // SHELL_Init_Order (0xB0000000) comes after Undefined_Init_Order
    // (0x80000000); VHELLO and VCOUNTD tie and keep the manifest's order.
    assert_eq!(order, ["VHELLO", "VCOUNTD", "SHELL"]);
}

#[test]
fn undefined_device_id_listed_twice_loads_twice() {
    let run = Scenario::new(
        r#"
        [386Enh]
        device = ["vhello", "vhello"]
        [VHELLO]
        Greeting = "twice"
        "#,
    )
    .run();
    run.assert_ok();
    let t = run.trace();
    let instances = t.values(json!({"kind": "device_loaded", "device": "VHELLO"}), "instance");
    assert_eq!(instances.len(), 2);
    assert_ne!(instances[0], instances[1], "each load is its own instance");
    assert_eq!(t.count(json!({"kind": "debug_string", "text": "twice"})), 2);
    assert_eq!(t.count(json!({"kind": "control", "device": "VHELLO", "message": "Device_Init"})), 2);
}

#[test]
fn a_duplicate_id_that_is_not_handled_stops_windows() {
    let run = Scenario::new(
        r#"
        [386Enh]
        device = ["fixture-dup-a", "fixture-dup-b"]
        "#,
    )
    .run();
    match run.expect_error() {
        Error::DuplicateDeviceId { id, first, second, first_file, second_file } => {
            assert_eq!(*id, 0x3F00);
            assert_eq!((first.as_str(), second.as_str()), ("FXDUPA", "FXDUPB"));
            assert!(first_file.to_string_lossy().contains("fixture_dup_a"));
            assert!(second_file.to_string_lossy().contains("fixture_dup_b"));
        }
        other => panic!("unexpected error {other}"),
    }
    let message = run.expect_error().to_string();
    assert!(message.contains("0x3F00") && message.contains("FXDUPA") && message.contains("FXDUPB"), "{message}");
    let t = run.trace();
    t.expect(json!({"kind": "real_mode_init", "device": "FXDUPB", "flags": 1, "answer": 0}));
    t.expect(json!({"kind": "device_rejected", "device": "FXDUPB", "reason": "duplicate_id"}));
    t.expect_none(json!({"kind": "control"}));
}

#[test]
fn a_duplicate_that_aborts_its_own_load_lets_windows_continue() {
    let run = Scenario::new(
        r#"
        [386Enh]
        device = ["fixture-dup-a", "fixture-dup-polite"]
        "#,
    )
    .run();
    run.assert_ok();
    let t = run.trace();
    // ABORT_DEVICE_LOAD | NO_FAIL_MESSAGE = 0x8001.
    t.expect(json!({"kind": "real_mode_init", "device": "FXDUPP", "flags": 1, "answer": 0x8001}));
    t.expect(json!({"kind": "device_rejected", "device": "FXDUPP", "reason": "abort_device_load"}));
    t.expect(json!({"kind": "control", "device": "FXDUPA", "message": "Sys_VM_Init"}));
    t.expect_none(json!({"kind": "control", "device": "FXDUPP"}));
}

#[test]
fn int2f_startup_requests_carry_their_flags_and_reference_data() {
    let run = Scenario::new(
        r#"
        [[tsr]]
        name = "MYTSR"
        device = "fixture-dup-a"
        reference_data = 0x1234
        [386Enh]
        device = ["fixture-dup-polite"]
        "#,
    )
    .run();
    run.assert_ok();
    let t = run.trace();
    // The 1605h list is loaded first, with LOADING_FROM_INT2F.
    t.expect(json!({"kind": "real_mode_init", "device": "FXDUPA", "flags": 4, "reference_data": 0x1234}));
    t.expect(json!({"kind": "device_loaded", "device": "FXDUPA", "from_int2f": true}));
    // The SYSTEM.INI copy sees DUPLICATE_DEVICE_ID | DUPLICATE_FROM_INT2F.
    t.expect(json!({"kind": "real_mode_init", "device": "FXDUPP", "flags": 3}));
}

#[test]
fn a_device_with_services_but_no_id_loads_with_a_violation() {
    let run = Scenario::new(
        r#"
        [386Enh]
        device = ["vcountd", "fixture-no-id"]
        "#,
    )
    .run();
    run.assert_ok();
    let t = run.trace();
    let v = t.expect(json!({"kind": "violation", "code": "API_WITHOUT_ID", "device": "FXNOID"}));
    assert!(v["message"].as_str().unwrap().contains("2 services"), "{v}");
    t.expect(json!({"kind": "device_loaded", "device": "FXNOID"}));
    t.expect(json!({"kind": "control", "device": "FXNOID", "message": "Device_Init"}));
    assert_eq!(t.count(json!({"kind": "device_rejected"})), 0);
}

#[test]
fn a_device_failing_device_init_is_dropped_and_gets_nothing_more() {
    let run = Scenario::new(
        r#"
        [386Enh]
        device = ["fixture-misbehave", "vcountd"]
        [FXBAD]
        fail = "Device_Init"
        "#,
    )
    .run();
    run.assert_ok();
    let t = run.trace();
    let got = t.values(json!({"kind": "control", "device": "FXBAD"}), "message");
    assert_eq!(got, ["Sys_Critical_Init", "Device_Init"]);
    t.expect(json!({"kind": "control", "device": "FXBAD", "message": "Device_Init", "result": "set"}));
    t.expect(json!({"kind": "device_rejected", "device": "FXBAD", "reason": "init_failed"}));
    // The others carry on.
    t.expect(json!({"kind": "control", "device": "VCOUNTD", "message": "Sys_Critical_Exit"}));
}

#[test]
fn a_device_failing_sys_critical_init_is_dropped_too() {
    let run = Scenario::new(
        r#"
        [386Enh]
        device = ["fixture-misbehave"]
        [FXBAD]
        fail = "Sys_Critical_Init"
        "#,
    )
    .run();
    run.assert_ok();
    assert_eq!(run.trace().values(json!({"kind": "control", "device": "FXBAD"}), "message"), ["Sys_Critical_Init"]);
}

#[test]
fn failing_sys_vm_init_makes_windows_exit() {
    let run = Scenario::new(
        r#"
        [386Enh]
        device = ["vcountd", "fixture-misbehave"]
        [FXBAD]
        fail = "Sys_VM_Init"
        "#,
    )
    .run();
    assert!(matches!(run.expect_error(), Error::SysVmInitFailed { device } if device == "FXBAD"));
    let t = run.trace();
    t.expect(json!({"kind": "control", "device": "VCOUNTD", "message": "System_Exit"}));
    t.expect(json!({"kind": "control", "device": "VCOUNTD", "message": "Sys_Critical_Exit"}));
    t.expect_none(json!({"kind": "control", "message": "Sys_VM_Terminate"}));
}

#[test]
fn fatal_error_handler_skips_sys_vm_terminate_but_sends_the_exits() {
    let run = Scenario::new(
        r#"
        [386Enh]
        device = ["vcountd", "fixture-misbehave"]
        [FXBAD]
        fatal = "Init_Complete"
        "#,
    )
    .run();
    match run.expect_error() {
        Error::Fatal { message, device } => {
            assert_eq!(message, "fixture: fatal error in Init_Complete");
            assert_eq!(device.as_deref(), Some("FXBAD"));
        }
        other => panic!("unexpected error {other}"),
    }
    let t = run.trace();
    t.expect(json!({"kind": "fatal_error", "device": "FXBAD"}));
    t.expect(json!({"kind": "control", "device": "FXBAD", "message": "Init_Complete", "result": "fatal_exit"}));
    t.expect_in_order(&[
        json!({"kind": "fatal_error"}),
        json!({"kind": "control", "device": "VCOUNTD", "message": "System_Exit"}),
        json!({"kind": "control", "device": "FXBAD", "message": "System_Exit"}),
        json!({"kind": "control", "device": "VCOUNTD", "message": "Sys_Critical_Exit"}),
    ]);
    t.expect_none(json!({"kind": "control", "message": "Sys_VM_Terminate"}));
    t.expect_none(json!({"kind": "control", "message": "Sys_VM_Init"}));
}

#[test]
fn xx2_messages_go_in_reverse_init_order_to_4_0_devices_only() {
    let run = Scenario::new(
        r#"
        [386Enh]
        device = ["vcountd", "fixture-dup-a", "vhello"]
        "#,
    )
    .run();
    run.assert_ok();
    let t = run.trace();
    assert_eq!(
        t.values(json!({"kind": "control", "message": "System_Exit"}), "device"),
        ["VCOUNTD", "FXDUPA", "VHELLO"]
    );
    // VHELLO is a 3.10 device: no System_Exit2.
    assert_eq!(t.values(json!({"kind": "control", "message": "System_Exit2"}), "device"), ["FXDUPA", "VCOUNTD"]);
    t.expect_in_order(&[
        json!({"kind": "control", "device": "VHELLO", "message": "System_Exit"}),
        json!({"kind": "control", "device": "FXDUPA", "message": "System_Exit2"}),
        json!({"kind": "control", "device": "VCOUNTD", "message": "Sys_Critical_Exit"}),
    ]);
}

#[test]
fn vxdcall_reaches_another_devices_services() {
    let run = Scenario::new(
        r#"
        [386Enh]
        device = ["vcountd", "vhello"]
        [VCOUNTD]
        Start = 40
        [VHELLO]
        Add = 2
        Call = ["0x3A100002", "0x3A100000"]
        "#,
    )
    .run();
    run.assert_ok();
    let t = run.trace();
    t.expect(json!({"kind": "vxd_call", "caller": "VHELLO", "device_id": 0x3A10, "ordinal": 1, "service": "VCOUNTD_Add", "result": "clear"}));
    t.expect(json!({"kind": "debug_string", "text": "VCOUNTD total is now 42"}));
    t.expect(json!({"kind": "debug_string", "text": "service 0x3A100002: returned EAX=0x2A CF=0"}));
    // Get_Version answers the device version 1.2 as AH.AL.
    t.expect(json!({"kind": "debug_string", "text": "service 0x3A100000: returned EAX=0x102 CF=0"}));
}

#[test]
fn get_version_of_a_missing_device_returns_carry_set() {
    let run = Scenario::new(
        r#"
        [386Enh]
        device = ["vhello"]
        "#,
    )
    .run();
    run.assert_ok();
    let t = run.trace();
    t.expect(json!({"kind": "vxd_call", "device_id": 0x3A10, "ordinal": 0, "result": "set"}));
    t.expect(json!({"kind": "debug_string", "text": "VCOUNTD is not loaded"}));
}

#[test]
fn any_other_call_to_a_missing_device_is_the_invalid_dynamic_link_fatal_error() {
    let run = Scenario::new(
        r#"
        [386Enh]
        device = ["vhello"]
        [VHELLO]
        Call = "0x3A100001"
        "#,
    )
    .run();
    match run.expect_error() {
        Error::Fatal { message, device } => {
            assert_eq!(message, "Invalid VxD dynamic link call to device number 3A10, service 0001");
            assert_eq!(device.as_deref(), Some("VHELLO"));
        }
        other => panic!("unexpected error {other}"),
    }
}

#[test]
fn a_call_past_the_end_of_a_service_table_is_fatal_too() {
    let run = Scenario::new(
        r#"
        [386Enh]
        device = ["vcountd", "vhello"]
        [VHELLO]
        Call = "0x3A100007"
        "#,
    )
    .run();
    assert!(
        run.expect_error().to_string().contains("Invalid VxD dynamic link call to device number 3A10, service 0007"),
        "{}",
        run.expect_error()
    );
}

#[test]
fn profile_values_follow_the_ddk_present_empty_missing_rules() {
    // Present.
    let run = Scenario::new(
        r#"
        [386Enh]
        device = ["vcountd", "vhello"]
        [VCOUNTD]
        Start = 10
    "#,
    )
    .run();
    run.assert_ok();
    run.trace().expect(json!({"kind": "debug_string", "text": "VCOUNTD total is now 11"}));
    // Present but empty: the default (0) is used.
    let run = Scenario::new(
        r#"
        [386Enh]
        device = ["vcountd", "vhello"]
        [vcountd]
        start = ""
    "#,
    )
    .run();
    run.trace().expect(json!({"kind": "debug_string", "text": "VCOUNTD total is now 1"}));
    // Invalid counts as missing: the default again.
    let run = Scenario::new(
        r#"
        [386Enh]
        device = ["vcountd", "vhello"]
        [VCOUNTD]
        Start = "ten"
    "#,
    )
    .run();
    run.trace().expect(json!({"kind": "debug_string", "text": "VCOUNTD total is now 1"}));
}

#[test]
fn profile_services_are_illegal_after_init() {
    let run = Scenario::new(
        r#"
        [386Enh]
        device = ["fixture-misbehave"]
        [FXBAD]
        late_profile = true
        "#,
    )
    .run();
    run.assert_ok();
    run.trace().expect(json!({
        "kind": "violation",
        "code": "INIT_ONLY_SERVICE",
        "device": "FXBAD",
        "service": "Get_Profile_String",
    }));
}

#[test]
fn a_panic_in_each_entry_point_never_takes_the_host_down() {
    // In the factory: the device cannot be created, boot fails cleanly.
    let run = Scenario::new(
        r#"
        [386Enh]
        device = ["fixture-misbehave"]
        [FXBAD]
        panic = "create"
    "#,
    )
    .run();
    assert!(matches!(run.expect_error(), Error::Load { .. }), "{}", run.expect_error());
    run.trace().expect(json!({"kind": "plugin_error", "device": "FXBAD", "entry": "create", "error": "panic"}));

    // In real-mode init: the device is not loaded, Windows runs.
    let run = Scenario::new(
        r#"
            [386Enh]
            device = ["fixture-misbehave", "vcountd"]
            [FXBAD]
            panic = "real_mode_init"
        "#,
    )
    .run();
    run.assert_ok();
    run.trace().expect(json!({"kind": "device_rejected", "device": "FXBAD", "reason": "real_mode_init_failed"}));

    // In a control message: the device is marked failed, the rest run.
    let run = Scenario::new(
        r#"
            [386Enh]
            device = ["fixture-misbehave", "vcountd"]
            [FXBAD]
            panic = "Device_Init"
        "#,
    )
    .run();
    run.assert_ok();
    let t = run.trace();
    let e = t.expect(json!({"kind": "plugin_error", "device": "FXBAD", "entry": "control", "error": "panic"}));
    let message = e["message"].as_str().unwrap_or_default();
    assert!(message.contains("fixture: panic in Device_Init") && message.contains("lib.rs:"), "{message}");
    t.expect(json!({"kind": "control", "device": "FXBAD", "message": "Device_Init", "result": "panic"}));
    t.expect_none(json!({"kind": "control", "device": "FXBAD", "message": "Init_Complete"}));
    t.expect(json!({"kind": "control", "device": "VCOUNTD", "message": "Sys_Critical_Exit"}));

    // In a service called by another device: the caller sees carry set.
    let run = Scenario::new(
        r#"
            [386Enh]
            device = ["fixture-misbehave", "vhello"]
            [FXBAD]
            panic = "service"
            [VHELLO]
            Call = "0x3F100001"
        "#,
    )
    .run();
    run.assert_ok();
    let t = run.trace();
    t.expect(json!({"kind": "plugin_error", "device": "FXBAD", "entry": "service", "error": "panic"}));
    t.expect(json!({"kind": "vxd_call", "caller": "VHELLO", "device_id": 0x3F10, "ordinal": 1, "result": "panic"}));
}

#[test]
fn re_entering_a_device_while_its_state_is_borrowed_is_a_reentrancy_violation() {
    let run = Scenario::new(
        r#"
            [386Enh]
            device = ["fixture-misbehave", "vhello"]
            [VHELLO]
            Call = "0x3F100002"
        "#,
    )
    .run();
    run.assert_ok();
    let t = run.trace();
    t.expect(json!({"kind": "plugin_error", "device": "FXBAD", "entry": "service", "error": "reentrancy"}));
    t.expect(json!({"kind": "violation", "code": "REENTRANCY", "device": "FXBAD"}));
    // Not a panic: the device keeps working.
    t.expect(json!({"kind": "control", "device": "FXBAD", "message": "Sys_Critical_Exit", "result": "clear"}));
}

#[test]
fn real_mode_init_can_abort_windows() {
    let run = Scenario::new(
        r#"
        [386Enh]
        device = ["fixture-misbehave"]
        [FXBAD]
        answer = "abort_win386"
    "#,
    )
    .run();
    assert!(matches!(run.expect_error(), Error::AbortWin386Load { device } if device == "FXBAD"));
    run.trace().expect(json!({"kind": "device_rejected", "device": "FXBAD", "reason": "abort_win386_load"}));
    run.trace().expect_none(json!({"kind": "control"}));
}

#[test]
fn an_invalid_real_mode_init_answer_is_a_violation_and_skips_the_device() {
    let run = Scenario::new(
        r#"
        [386Enh]
        device = ["fixture-misbehave"]
        [FXBAD]
        answer = "bogus"
    "#,
    )
    .run();
    run.assert_ok();
    run.trace().expect(json!({"kind": "violation", "code": "BAD_REAL_MODE_INIT_ANSWER", "device": "FXBAD"}));
    run.trace().expect_none(json!({"kind": "control", "device": "FXBAD"}));
}

#[test]
fn manifest_errors_name_the_layer_line_and_column() {
    // A one-line manifest: the error names a position in it.
    let run = Scenario::new("[386Enh]\ndevice = []\n[machine]\nsed = 3\n").run();
    match run.expect_error() {
        Error::Manifest { file, line, column, message } => {
            assert_eq!((file.as_str(), *line, *column), ("manifest#1", 4, 1));
            assert!(message.contains("unknown field `sed`"), "{message}");
        }
        other => panic!("unexpected error {other}"),
    }
}

#[test]
fn an_unknown_builtin_device_is_an_error_listing_the_builtins() {
    // A one-line manifest: the error names a position in it.
    let run = Scenario::new("[386Enh]\ndevice = [\"*VTD\"]\n").run();
    let text = run.expect_error().to_string();
    assert!(text.contains("*SHELL") && text.contains("part of WIN386"), "{text}");
    assert!(text.starts_with("manifest#1:2:"), "{text}");
}
