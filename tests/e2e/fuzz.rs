//! Fuzz targets, run as property tests on stable: the manifest parser and
//! merger, API calls with arbitrary client registers (INT 2Fh AX=1684h and
//! a far call, from a Windows application and from a DOS program), and
//! `VxDCall` with arbitrary ordinals and registers. The host never panics
//! and answers only in documented ways.
//!
//! Every target uses a fixed seed, so CI runs the same cases each time.
//! CI runs a few dozen to a few hundred cases each; for a long run set
//! `PROPTEST_CASES` (see the README): `PROPTEST_CASES=100000 cargo test
//! --release -p vmm-e2e fuzz_`.

use std::cell::Cell;
use std::collections::BTreeSet;

use proptest::prelude::*;
use proptest::test_runner::RngSeed;
use vmm_host::{Error, Manifest, ManifestBuilder};
use vmm_plugin_api::prelude::*;
use vmm_testkit::{ClientRegs, Regs, Scenario, ServiceCall, Trace, Value, json};

/// A fixed seed, no persistence; `PROPTEST_CASES` overrides `cases`.
fn config(cases: u32, seed: u64) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(cases);
    ProptestConfig { cases, rng_seed: RngSeed::Fixed(seed), failure_persistence: None, ..ProptestConfig::default() }
}

// ---- manifests -----------------------------------------------------------------

/// A TOML value of the kinds manifests hold, valid for a key or not.
fn value() -> impl Strategy<Value = String> {
    let scalar = prop_oneof![
        any::<i64>().prop_map(|i| i.to_string()),
        (-3i64..200).prop_map(|i| i.to_string()),
        prop_oneof![Just("0.5"), Just("1.5"), Just("-0.25"), Just("nan"), Just("inf")].prop_map(str::to_string),
        any::<bool>().prop_map(|b| b.to_string()),
        "[0-9]{1,5}(ms|s|us|ns| parsecs)?|-3ms|1\\.5s|0ms".prop_map(|d| format!("\"{d}\"")),
        "lifo|fifo|random|error|fatal|log|3\\.1|4\\.0|3\\.10|IDYES|IDNO|IDOK|IDMAYBE|always|never|missing|cli|sti|\
         begin_critical|end_critical|system|DOS1|VCOUNTD|\\*SHELL|POSTDOS\\.EXE|tick"
            .prop_map(|w| format!("\"{w}\"")),
        any::<String>().prop_map(|s| toml::Value::String(s).to_string()),
    ];
    prop_oneof![
        4 => scalar.clone(),
        1 => proptest::collection::vec(scalar, 0..4).prop_map(|v| format!("[{}]", v.join(", "))),
        1 => ("[A-Z]{1,8}", any::<bool>()).prop_map(|(n, d)| format!("[{{ name = \"{n}\", dynamic = {d} }}]")),
        1 => Just("{ a = 1 }".to_string()),
    ]
}

/// A table section: a known or unknown name, keys known there or not.
fn table() -> impl Strategy<Value = String> {
    let name = prop_oneof![
        Just("machine"),
        Just("386Enh"),
        Just("windows"),
        Just("shell"),
        Just("programs"),
        Just("VCOUNTD"),
        Just("vcountd"),
        Just("Profile"),
        Just("386enh"),
        Just("Machine"),
    ];
    let key = prop_oneof![
        "seed|order|inject_rate|until|realtime|violations|windows|time_slice|ring3_step|plugin_path|build",
        "livelock_limit|trace_limit|device|Device|devices|load|queue_size|message_box_answer|answers|message_server",
        "Start|Name|\"edit\\.com\"|\"\\.txt\"|bogus|KeyboardDelay",
    ];
    (name, proptest::collection::vec((key, value()), 0..5)).prop_map(|(name, keys)| {
        let body: String = keys.iter().map(|(k, v)| format!("{k} = {v}\n")).collect();
        format!("[{name}]\n{body}")
    })
}

/// An array-of-tables entry: `[[vm]]`, `[[tsr]]`, `[[interrupt]]`, `[[action]]`.
fn entry() -> impl Strategy<Value = String> {
    let name = prop_oneof![Just("vm"), Just("tsr"), Just("interrupt"), Just("action")];
    let key = "name|at|program|args|windowed|device|reference_data|every|count|vm|action|bogus";
    (name, proptest::collection::vec((key, value()), 0..5)).prop_map(|(name, keys)| {
        let body: String = keys.iter().map(|(k, v)| format!("{k} = {v}\n")).collect();
        format!("[[{name}]]\n{body}")
    })
}

/// Sections of a manifest, in order.
fn sections() -> impl Strategy<Value = Vec<String>> {
    proptest::collection::vec(prop_oneof![3 => table(), 1 => entry()], 0..7)
}

/// Manifest text: generated sections, sometimes damaged by a stray
/// character or cut short, or arbitrary text.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => sections().prop_map(|s| s.concat()),
        2 => (sections(), any::<prop::sample::Index>(), any::<char>()).prop_map(|(s, at, c)| {
            let mut t = s.concat();
            let mut i = at.index(t.len() + 1);
            while !t.is_char_boundary(i) {
                i -= 1;
            }
            t.insert(i, c);
            t
        }),
        1 => (sections(), any::<prop::sample::Index>()).prop_map(|(s, at)| {
            let t = s.concat();
            let mut i = at.index(t.len() + 1);
            while !t.is_char_boundary(i) {
                i -= 1;
            }
            t[..i].to_string()
        }),
        1 => any::<String>(),
    ]
}

/// A `--set` assignment, well-formed or not.
fn assignment() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => ("machine|386Enh|windows|shell|VCOUNTD|Other", "[A-Za-z_]{1,12}", value())
            .prop_map(|(s, k, v)| format!("{s}.{k}={v}")),
        1 => any::<String>(),
    ]
}

/// An error must be a manifest error whose place lies inside its source.
fn check_error(err: &Error, sources: &[(String, String)]) -> Result<(), TestCaseError> {
    let Error::Manifest { file, line, column, .. } = err else {
        return Err(TestCaseError::fail(format!("not a manifest error: {err:?}")));
    };
    prop_assert!(*line >= 1 && *column >= 1, "{err}");
    if let Some((_, text)) = sources.iter().find(|(name, _)| name == file) {
        let lines: Vec<&str> = text.split('\n').collect();
        prop_assert!(*line <= lines.len(), "line {line} of {} lines: {err}", lines.len());
        prop_assert!(*column <= lines[*line - 1].chars().count() + 1, "{err}");
    } else {
        prop_assert!(file.starts_with("--set #"), "an error in an unknown file: {err}");
        prop_assert!(*line <= 2, "a --set layer has two lines: {err}");
    }
    Ok(())
}

/// What a manifest says, without where it said it.
fn summary(m: &Manifest) -> String {
    let devices: Vec<_> = m.devices.iter().map(|d| (&d.name, d.dynamic)).collect();
    let tsr: Vec<_> = m.tsr.iter().map(|t| (&t.name, &t.device, t.reference_data)).collect();
    let vms: Vec<_> = m.vms.iter().map(|v| (&v.name, v.windowed, &v.program, &v.args, v.at)).collect();
    let load: Vec<_> = m.windows.load.iter().map(|(l, _)| l).collect();
    let irqs: Vec<_> = m.interrupts.iter().map(|i| (&i.name, i.at, i.every, i.count)).collect();
    let actions: Vec<_> = m.actions.iter().map(|a| (a.at, &a.vm, a.action)).collect();
    let programs: Vec<_> = m.programs.iter().map(|(k, p)| (k, &p.module)).collect();
    format!(
        "{:?}\n{devices:?}\n{tsr:?}\n{vms:?}\n{load:?} {} {}\n{irqs:?}\n{actions:?}\n{programs:?}\n{:?}\n{:?}",
        m.machine, m.windows.queue_size, m.windows.message_box_answer, m.shell, m.profile
    )
}

fn build(layers: &[(String, String)], sets: &[String]) -> Result<Manifest, Error> {
    let mut b = ManifestBuilder::new();
    for (name, text) in layers {
        b = b.text(name.clone(), text.clone(), ".");
    }
    for s in sets {
        b = b.set(s.clone());
    }
    b.build()
}

proptest! {
    #![proptest_config(config(512, 0x4D41_4E49))]

    /// Arbitrary manifest text never panics the parser; every error names
    /// a place inside the text.
    #[test]
    fn fuzz_manifest_text_never_panics(text in text()) {
        let sources = [("fuzz.ini".to_string(), text)];
        if let Err(e) = build(&sources, &[]) {
            check_error(&e, &sources)?;
        }
    }

    /// Layers and `--set`s: no panic, errors point into their own layer,
    /// and merging is consistent: a manifest split into two layers means
    /// what it meant as one, and `--set S.k=V` means what a last layer
    /// `[S] k = V` means.
    #[test]
    fn fuzz_manifest_layers_and_sets_merge_consistently(
        parts in sections(),
        split in any::<prop::sample::Index>(),
        more in proptest::collection::vec(text(), 0..3),
        sets in proptest::collection::vec(assignment(), 0..3),
        set in ("machine|386Enh|windows|shell|VCOUNTD|Other", "seed|until|device|queue_size|answers|Start|x", value()),
    ) {
        let mut layers: Vec<(String, String)> = vec![("a.ini".to_string(), parts.concat())];
        layers.extend(more.into_iter().enumerate().map(|(i, t)| (format!("l{i}.ini"), t)));
        match build(&layers, &sets) {
            Ok(_) => {}
            Err(e) => check_error(&e, &layers)?,
        }

        let whole = build(&layers[..1], &[]);
        let k = split.index(parts.len() + 1);
        let halves = [("a1.ini".to_string(), parts[..k].concat()), ("a2.ini".to_string(), parts[k..].concat())];
        if let Ok(whole) = &whole {
            let split = build(&halves, &[]);
            prop_assert!(split.is_ok(), "one layer parsed, its halves did not: {:?}", split.err());
            prop_assert_eq!(summary(whole), summary(&split.unwrap()));
        }

        let (section, key, v) = set;
        let by_set = build(&layers[..1], &[format!("{section}.{key}={v}")]);
        let as_layer = [layers[0].clone(), ("set.ini".to_string(), format!("[{section}]\n{key} = {v}\n"))];
        let by_layer = build(&as_layer, &[]);
        // A value that is not TOML is taken as a string by --set only.
        if toml::from_str::<toml::Table>(&format!("v = {v}")).is_ok() {
            match (&by_set, &by_layer) {
                (Ok(a), Ok(b)) => prop_assert_eq!(summary(a), summary(b)),
                (Err(_), Err(_)) => {}
                (a, b) => prop_assert!(false, "--set and a layer disagree: {:?} / {:?}", a.as_ref().err(), b.as_ref().err()),
            }
        }
    }
}

// ---- API calls and VxDCall ------------------------------------------------------

/// FUZZAPI's device ID.
const FUZZ_ID: u16 = 0x3C00;

/// A device whose API and services hand the caller's registers to VMM
/// services, whatever they are: AH picks the service, the other registers
/// are its arguments.
struct FuzzApi {
    events: Cell<u32>,
}

impl FuzzApi {
    fn dispatch(&self, vmm: &Vmm<'_>, r: ClientRegs) -> Carry {
        let (ah, ebx, ecx, edx, esi) = ((r.eax >> 8) as u8, r.ebx, r.ecx, r.edx, r.esi);
        let ok = match ah % 12 {
            0 => {
                let _ = vmm.get_vm_info(VmHandle(ebx));
                vmm.validate_vm_handle(VmHandle(ebx))
            }
            1 => {
                let mut buf = vec![0; (ecx & 0xFFF) as usize];
                vmm.mem_read(ebx, &mut buf).is_ok() && vmm.mem_write(edx, &buf).is_ok()
            }
            2 => vmm
                .call_priority_vm_event(edx as i32, VmHandle(ebx), ecx, esi & 0xFFFF, |dev: &FuzzApi, _, _| {
                    dev.events.set(dev.events.get() + 1)
                })
                .is_ok(),
            3 => {
                vmm.cancel_priority_vm_event(EventHandle(ebx)).is_ok() | vmm.cancel_time_out(TimeoutHandle(ecx)).is_ok()
            }
            4 => vmm.set_vm_time_out(ecx & 0xFFFF, VmHandle(ebx), |_: &FuzzApi, _, _| {}).is_some(),
            5 => {
                let mut call =
                    ServiceCall { regs: Regs { eax: ecx, ebx: edx, ecx: esi, ..Regs::default() }, args: [edx; 8] };
                vmm.vxd_call(ebx, &mut call).is_ok()
            }
            6 => {
                let ok = vmm.begin_nest_exec().is_ok();
                let _ = vmm.simulate_push(ecx);
                let _ = vmm.simulate_far_call(FarPtr::from_u32(ebx));
                let _ = vmm.resume_exec();
                ok && vmm.end_nest_exec().is_ok()
            }
            7 => {
                let ok = vmm.claim_critical_section(ecx & 0x7, edx).is_ok();
                ok && vmm.release_critical_section(esi & 0x7).is_ok()
            }
            8 => vmm.adjust_exec_priority(VmHandle(ebx), edx as i32).is_ok(),
            9 => vmm.signal_semaphore(SemaphoreHandle(ebx)).is_ok(),
            10 => vmm.shell().post_message(Hwnd(ebx as u16), ecx, edx as u16, esi),
            _ => vmm.heap_allocate(ecx & 0xFFFF, edx).is_some_and(|a| vmm.heap_free(a)),
        };
        Carry::from_failed(!ok)
    }
}

impl VxD for FuzzApi {
    const DEVICE: Device =
        Device::new("FUZZAPI").id(FUZZ_ID).v86_api().pm_api().services(&["FUZZAPI_Get_Version", "FUZZAPI_Call"]);
    fn create(_: &Vmm<'_>) -> Result<Self, String> {
        Ok(FuzzApi { events: Cell::new(0) })
    }
    fn v86_api(&self, vmm: &Vmm<'_>, call: ApiCall<'_>) {
        let carry = self.dispatch(vmm, call.client.get());
        call.client.set_carry(carry == Carry::Set);
    }
    fn pm_api(&self, vmm: &Vmm<'_>, call: ApiCall<'_>) {
        self.v86_api(vmm, call)
    }
    fn service(&self, vmm: &Vmm<'_>, ordinal: u16, call: &mut ServiceCall) -> Carry {
        if ordinal != 1 {
            return Carry::Set;
        }
        let r = call.regs;
        self.dispatch(
            vmm,
            ClientRegs { eax: r.eax, ebx: r.ebx, ecx: r.ecx, edx: r.edx, esi: r.esi, ..ClientRegs::default() },
        )
    }
}

/// The violation codes docs/violations.md documents.
fn documented_codes() -> BTreeSet<String> {
    let doc = include_str!("../../docs/violations.md");
    doc.lines().filter_map(|l| l.strip_prefix("## ")).map(|c| c.trim().to_string()).collect()
}

/// The documented outcomes of a run: it ends, or stops with a fatal error
/// that is not the host's own (an "Invalid VxD dynamic link call", a
/// deadlock); violations carry documented codes; no code panicked.
fn check_outcome(trace: &Trace, error: Option<&Error>) -> Result<(), TestCaseError> {
    let codes = documented_codes();
    for v in trace.matching(json!({"kind": "violation"})) {
        let code = v["code"].as_str().unwrap_or_default();
        prop_assert!(codes.contains(code), "an undocumented violation code: {v}");
    }
    let panics = trace.matching(json!({"kind": "plugin_error", "error": "panic"}));
    prop_assert!(panics.is_empty(), "a panic: {:?}", panics);
    for f in trace.matching(json!({"kind": "fatal_error"})) {
        let message = f["message"].as_str().unwrap_or_default();
        prop_assert!(!message.contains("internal error"), "a host panic: {f}");
    }
    if let Some(e) = error {
        prop_assert!(matches!(e, Error::Fatal { .. }), "{e}");
        prop_assert!(!e.to_string().contains("internal error"), "a host panic: {e}");
    }
    Ok(())
}

/// A machine with FUZZAPI, SHELL and an application to post to.
fn fuzz_machine() -> Scenario {
    Scenario::new("[386Enh]\ndevice = [\"*SHELL\", \"FUZZAPI\"]").device::<FuzzApi>()
}

fn client_regs() -> impl Strategy<Value = ClientRegs> {
    let word = prop_oneof![any::<u32>(), 0u32..0x100, Just(0x0001_0001u32), Just(0xFFFF_FFFF)];
    let ah = prop_oneof![0u32..12, any::<u32>()];
    (ah, any::<u8>(), [word.clone(), word.clone(), word.clone(), word.clone(), word.clone(), word], any::<[u32; 5]>())
        .prop_map(|(ah, al, [ebx, ecx, edx, esi, edi, ebp], [es, ds, fs, gs, eflags])| ClientRegs {
            eax: ((ah & 0xFF) << 8) | al as u32,
            ebx,
            ecx,
            edx,
            esi,
            edi,
            ebp,
            es,
            ds,
            fs,
            gs,
            eflags,
            ..ClientRegs::default()
        })
}

proptest! {
    #![proptest_config(config(64, 0x4150_4931))]

    /// Arbitrary registers into FUZZAPI's V86 and PM APIs (and INT 2Fh
    /// AX=1684h with arbitrary device IDs), through the route ring-3 code
    /// takes: the host never panics and answers in documented ways.
    #[test]
    fn fuzz_api_calls_with_arbitrary_registers(
        calls in proptest::collection::vec(
            (any::<bool>(), prop_oneof![4 => Just(FUZZ_ID), 1 => Just(0x17u16), 1 => any::<u16>()], client_regs()),
            1..6,
        ),
    ) {
        let mut s = fuzz_machine().boot();
        for (pm, id, regs) in calls {
            let mode = if pm { ApiMode::Pm } else { ApiMode::V86 };
            // A fatal error (an invalid VxDCall) ends the machine; the
            // outcome check below says whether it was a documented one.
            if s.try_call_api(mode, id, regs).is_err() {
                break;
            }
        }
        let trace = s.trace();
        let error = s.machine().shutdown().err();
        check_outcome(&trace, error.as_ref())?;
        // The documented outcomes (docs/trace.md), less `panic`.
        let outcomes = ["clear", "set", "reentrancy", "fatal_exit", "skipped", "error"];
        for call in trace.matching(json!({"kind": "api_call"})) {
            prop_assert!(outcomes.contains(&call["result"].as_str().unwrap_or_default()), "{call}");
        }
    }

    /// `VxDCall` from outside the machine and from a device, with arbitrary
    /// ordinals and registers, to the VMM, SHELL, FUZZAPI and devices that
    /// do not exist: only the documented outcomes.
    #[test]
    fn fuzz_vxdcall_with_arbitrary_ordinals_and_registers(
        calls in proptest::collection::vec(
            (
                prop_oneof![Just(1u16), Just(0x17u16), Just(FUZZ_ID), any::<u16>()],
                prop_oneof![3 => 0u16..0x40, 1 => any::<u16>()],
                any::<[u32; 8]>(),
                any::<[u32; 8]>(),
            ),
            1..8,
        ),
    ) {
        let mut s = fuzz_machine().boot();
        let mut error = None;
        for (device, ordinal, r, args) in calls {
            let regs = Regs { eax: r[0], ebx: r[1], ecx: r[2], edx: r[3], esi: r[4], edi: r[5], ebp: r[6], flags: r[7] };
            let mut call = ServiceCall { regs, args };
            let refused = s.machine().call_service(((device as u32) << 16) | ordinal as u32, &mut call).err();
            // A refused call leaves the machine running, with a violation
            // record saying why; a fatal error stops it.
            if let Some(e) = refused {
                let t = s.trace();
                if t.count(json!({"kind": "fatal_error"})) > 0 {
                    error = Some(e);
                    break;
                }
                prop_assert!(t.count(json!({"kind": "violation"})) > 0, "refused without a violation: {e}");
            }
        }
        if error.is_none() {
            error = s.machine().run_for(vmm_host::time::Duration::from_millis(50)).err();
        }
        let trace = s.trace();
        let shutdown = s.machine().shutdown().err();
        check_outcome(&trace, error.as_ref().or(shutdown.as_ref()))?;
        if let Some(Error::Fatal { message, .. }) = &error {
            // Ending the system VM (Crash_Cur_VM, Nuke_VM by VxDCall) is
            // Windows' own fatal exit.
            let known = message.contains("Invalid VxD dynamic link call")
                || message.contains("Crash_Cur_VM in the system VM")
                || message.contains("Nuke_VM of the system VM")
                || trace.count(json!({"kind": "violation", "code": "DEADLOCK"})) > 0
                || trace.count(json!({"kind": "violation", "code": "LIVELOCK"})) > 0;
            prop_assert!(known, "an undocumented fatal error: {message}");
        }
    }
}

#[test]
fn fuzz_outcome_check_catches_what_it_must() {
    let fails = |record: Value| check_outcome(&Trace::from_records(vec![record]), None).is_err();
    assert!(fails(json!({"kind": "violation", "code": "MADE_UP"})));
    assert!(fails(json!({"kind": "plugin_error", "error": "panic"})));
    assert!(fails(json!({"kind": "fatal_error", "message": "internal error in the host's X: boom"})));
    assert!(!fails(json!({"kind": "violation", "code": "BAD_POINTER"})));
}
