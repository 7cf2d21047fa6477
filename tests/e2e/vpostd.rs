//! The VPOSTD port end to end: POSTDOS in DOS VMs posts through VPOSTD's V86
//! API, VPOSTD delivers by priority event and nested execution into
//! POSTHOST's FIXED callback, POSTAPP's window procedure receives the
//! message. The four plugins are the workspace's cdylibs; the test devices
//! below are linked in.

use core::cell::Cell;
use std::collections::BTreeMap;

use serde_json::Value;
use vmm_plugin_api::prelude::*;
use vmm_testkit::{Scenario, Trace, json};

const SYS: u64 = 0x0001_0001;
const DOS1: u64 = 0x0001_0002;
const VPOSTD: u32 = 0x4321;
const VPOSTD_POST: u32 = 1;
const VPOSTD_GET_STATS: u32 = 2;
const WM_VPOSTD: u64 = 0x0500;

const DEVICES: &str = r#"
[386Enh]
device = ["*SHELL", "VPOSTD.386"]
"#;

fn machine(rest: &str) -> Scenario {
    Scenario::new(&format!("{DEVICES}\n{rest}"))
}

/// `(wParam, lParam)` of every WM_USER+0x100 the window's task read, in
/// order.
fn delivered(t: &Trace) -> Vec<(u64, u64)> {
    t.matching(json!({"kind": "message_delivered", "msg": WM_VPOSTD}))
        .into_iter()
        .map(|r| (r["wparam"].as_u64().unwrap(), r["lparam"].as_u64().unwrap()))
        .collect()
}

fn notes<'a>(t: &'a Trace, note: &str) -> Vec<&'a Value> {
    t.matching(json!({"kind": "note", "device": "VPOSTD", "note": note}))
}

fn times(records: &[&Value]) -> Vec<u64> {
    records.iter().map(|r| r["t"].as_u64().unwrap()).collect()
}

#[test]
fn a_dos_program_posts_and_the_window_gets_every_message() {
    let run = machine(
        r#"
[windows]
load = ["POSTAPP"]

[[vm]]
name = "DOS1"
program = "POSTDOS"
args = "count=3 interval=100"
"#,
    )
    .run();
    run.assert_ok();
    let t = run.trace();
    assert_eq!(run.violations(), 0, "{}", t.tail(20));

    // POSTHOST registered POSTAPP's window and its FIXED callback through the
    // PM API, from the system VM.
    t.expect(json!({"kind": "int2f", "vm": SYS, "ax": 0x1684, "bx": VPOSTD}));
    t.expect(json!({"kind": "api_call", "device": "VPOSTD", "mode": "pm", "vm": SYS, "carry": false}));
    let reg = t.expect(json!({"kind": "note", "note": "registered"}));
    let hwnd = reg["fields"]["hwnd"].as_u64().unwrap();
    t.expect(json!({"kind": "window_created", "hwnd": hwnd, "class": "PostAppWindow"}));

    // POSTDOS found the V86 API and posted three times, CF clear.
    t.expect(json!({"kind": "int2f", "vm": DOS1, "ax": 0x1684, "bx": VPOSTD}));
    assert_eq!(t.count(json!({"kind": "api_call", "device": "VPOSTD", "mode": "v86", "vm": DOS1, "carry": false})), 3);

    // Each post is one priority event on the system VM that waits for STI
    // and for the critical section to be free.
    let scheduled = t.matching(json!({"kind": "event_scheduled", "device": "VPOSTD"}));
    assert_eq!(scheduled.len(), 3);
    for e in scheduled {
        assert_eq!(e["event"], "priority");
        assert_eq!(e["vm"], SYS);
        assert_eq!(e["flags"], (PEF_WAIT_FOR_STI | PEF_WAIT_NOT_CRIT) as u64);
        assert_eq!(e["callback"], "Vpostd::deliver");
    }

    // Nested execution into POSTHOST!PostCallback, entered like an ISR,
    // which PostMessage'd exactly what VPOSTD pushed.
    assert_eq!(t.count(json!({"kind": "nest_exec", "vm": SYS, "action": "begin", "v86": false})), 3);
    assert_eq!(t.count(json!({"kind": "nest_exec", "vm": SYS, "action": "end", "depth": 0})), 3);
    assert_eq!(
        t.count(
            json!({"kind": "far_call", "vm": SYS, "module": "POSTHOST", "export": "PostCallback", "isr": true, "result": 1})
        ),
        3
    );
    for (i, p) in t.matching(json!({"kind": "message_posted", "msg": WM_VPOSTD})).into_iter().enumerate() {
        assert_eq!((p["hwnd"].as_u64(), p["wparam"].as_u64()), (Some(hwnd), Some(2)));
        assert_eq!(p["lparam"], i as u64 + 1);
        assert_eq!(p["result"], true);
    }

    // POSTAPP's window procedure got them in order and told the user which
    // VM posted, with a system-modal message box.
    assert_eq!(delivered(t), [(2, 1), (2, 2), (2, 3)]);
    let boxes = t.matching(json!({"kind": "message_box", "caption": "POSTAPP"}));
    let texts: Vec<&str> = boxes.iter().map(|b| b["text"].as_str().unwrap()).collect();
    assert_eq!(texts, ["VM 2 posted message 1", "VM 2 posted message 2", "VM 2 posted message 3"]);
    assert!(boxes.iter().all(|b| b["system_modal"] == true));
    t.expect(json!({"kind": "program_ended", "module": "POSTDOS", "exit_code": 0}));

    // Per-VM counters in the control block area.
    let called = notes(t, "post_called");
    assert_eq!(called.len(), 3);
    assert!(called.iter().all(|n| n["fields"]["vm"] == DOS1 && n["fields"]["result"] == true));
}

#[test]
fn two_dos_vms_each_get_every_message_through_exactly_once() {
    let run = machine(
        r#"
[windows]
load = ["POSTAPP quiet"]

[[vm]]
name = "DOS1"
program = "POSTDOS"
args = "count=5 interval=70"

[[vm]]
name = "DOS2"
program = "POSTDOS"
args = "count=5 interval=90"
at = "10ms"
"#,
    )
    .run();
    run.assert_ok();
    let t = run.trace();
    let mut got = delivered(t);
    assert_eq!(got.len(), 10);
    got.sort();
    let want: Vec<(u64, u64)> = (1..=5).map(|l| (2, l)).chain((1..=5).map(|l| (3, l))).collect();
    assert_eq!(got, want);
    // Each VM's own messages arrive in the order it posted them.
    for vm in [2, 3] {
        let order: Vec<u64> = delivered(t).into_iter().filter(|(w, _)| *w == vm).map(|(_, l)| l).collect();
        assert_eq!(order, [1, 2, 3, 4, 5]);
    }
    assert_eq!(t.count(json!({"kind": "program_output", "module": "POSTAPP", "text": "VM 3 posted message 4"})), 1);
}

#[test]
fn delivery_waits_while_the_system_vm_has_interrupts_disabled() {
    let run = machine(
        r#"
[windows]
load = ["POSTAPP quiet"]

[[vm]]
name = "DOS1"
program = "POSTDOS"
args = "count=1"
at = "100ms"

[[action]]
at = "50ms"
vm = "system"
action = "cli"

[[action]]
at = "300ms"
vm = "system"
action = "sti"
"#,
    )
    .run();
    run.assert_ok();
    let t = run.trace();
    assert_eq!(times(&notes(t, "post_queued")), [100]);
    assert_eq!(times(&notes(t, "post_called")), [300]);
    let ev = t.expect(json!({"kind": "event_dispatched", "device": "VPOSTD"}));
    assert_eq!(ev["t"], 300);
    assert!(ev["waited_ns"].as_u64().unwrap() >= 199_000_000, "{ev}");
    t.expect_in_order(&[
        json!({"kind": "action", "vm": SYS, "action": "sti"}),
        json!({"kind": "nest_exec", "action": "begin"}),
        json!({"kind": "message_delivered", "msg": WM_VPOSTD, "wparam": 2, "lparam": 1}),
    ]);
}

#[test]
fn delivery_waits_while_the_system_vm_holds_the_critical_section() {
    // The post arrives while the system VM has interrupts disabled; before
    // it enables them it claims the critical section (INT 2Fh 1681h), so
    // the event must wait past the STI for the release.
    let run = machine(
        r#"
[windows]
load = ["POSTAPP quiet"]

[[vm]]
name = "DOS1"
program = "POSTDOS"
args = "count=1"
at = "100ms"

[[action]]
at = "50ms"
vm = "system"
action = "cli"

[[action]]
at = "150ms"
vm = "system"
action = "begin_critical"

[[action]]
at = "200ms"
vm = "system"
action = "sti"

[[action]]
at = "400ms"
vm = "system"
action = "end_critical"
"#,
    )
    .run();
    run.assert_ok();
    let t = run.trace();
    assert_eq!(times(&notes(t, "post_queued")), [100]);
    t.expect(json!({"kind": "crit_section", "action": "claim", "vm": SYS, "t": 150}));
    t.expect(json!({"kind": "action", "action": "sti", "t": 200}));
    assert_eq!(times(&notes(t, "post_called")), [400]);
    t.expect_in_order(&[
        json!({"kind": "crit_section", "action": "release", "vm": SYS, "claims": 0}),
        json!({"kind": "event_dispatched", "device": "VPOSTD"}),
    ]);
}

#[test]
fn delivery_waits_while_a_dos_vm_holds_the_critical_section() {
    // As a DOS call does: DOS1 holds the critical section around its post.
    let run = machine(
        r#"
[windows]
load = ["POSTAPP quiet"]

[[vm]]
name = "DOS1"
program = "POSTDOS"
args = "count=3 interval=200"

[[action]]
at = "150ms"
vm = "DOS1"
action = "begin_critical"

[[action]]
at = "300ms"
vm = "DOS1"
action = "end_critical"
"#,
    )
    .run();
    run.assert_ok();
    let t = run.trace();
    assert_eq!(times(&notes(t, "post_queued")), [0, 200, 400]);
    assert_eq!(times(&notes(t, "post_called")), [0, 300, 400]);
    assert_eq!(delivered(t), [(2, 1), (2, 2), (2, 3)]);
}

#[test]
fn a_full_queue_is_retried_after_100_ms_and_nothing_is_lost() {
    let run = machine(
        r#"
[windows]
load = ["POSTAPP queue=1 busy=250 quiet"]

[[vm]]
name = "DOS1"
program = "POSTDOS"
args = "count=3 interval=0"
"#,
    )
    .run();
    run.assert_ok();
    let t = run.trace();
    let failed = t.matching(json!({"kind": "note", "note": "post_called", "fields": {"result": false}}));
    assert!(!failed.is_empty(), "the queue never filled up\n{}", t.tail(40));
    // Every refusal by PostMessage is a queue_full drop in USER, and a retry
    // 100 ms later by Set_VM_Time_Out on the system VM.
    assert_eq!(t.count(json!({"kind": "message_dropped", "msg": WM_VPOSTD, "reason": "queue_full"})), failed.len());
    let retries = notes(t, "post_retry");
    assert_eq!(retries.len(), failed.len());
    assert!(retries.iter().all(|r| r["fields"]["after_ms"] == 100));
    let timeouts = t.matching(json!({"kind": "timeout_scheduled", "device": "VPOSTD", "timer": "vm", "ms": 100}));
    assert_eq!(timeouts.len(), failed.len());
    assert!(timeouts.iter().all(|r| r["vm"] == SYS));
    // The calls of the retried post are 100 ms of system-VM time apart.
    let post = failed[0]["fields"]["post"].clone();
    let calls = times(&t.matching(json!({"kind": "note", "note": "post_called", "fields": {"post": post}})));
    assert!(calls.len() >= 2);
    assert!(calls.windows(2).all(|w| w[1] - w[0] == 100), "{calls:?}");
    // Nothing lost, nothing twice.
    assert_eq!(delivered(t), [(2, 1), (2, 2), (2, 3)]);
}

#[test]
fn the_retry_interval_comes_from_the_manifest() {
    let run = machine(
        r#"
[VPOSTD]
RetryInterval = 40

[windows]
load = ["POSTAPP queue=1 busy=250 quiet"]

[[vm]]
name = "DOS1"
program = "POSTDOS"
args = "count=3 interval=0"
"#,
    )
    .run();
    run.assert_ok();
    let t = run.trace();
    let retries = notes(t, "post_retry");
    assert!(!retries.is_empty());
    assert!(retries.iter().all(|r| r["fields"]["after_ms"] == 40));
    assert_eq!(delivered(t), [(2, 1), (2, 2), (2, 3)]);
}

#[test]
fn without_a_registered_application_posdos_reports_cf() {
    let run = machine(
        r#"
[[vm]]
name = "DOS1"
program = "POSTDOS"
args = "count=2 interval=50"
"#,
    )
    .run();
    run.assert_ok();
    let t = run.trace();
    let calls = t.matching(json!({"kind": "api_call", "device": "VPOSTD", "mode": "v86"}));
    assert_eq!(calls.len(), 2);
    for c in &calls {
        assert_eq!(c["carry"], true);
        assert_eq!(c["regs_out"]["eax"].as_u64().unwrap() & 0xFFFF, 1, "AX = ERR_NOT_REGISTERED");
    }
    let refused = notes(t, "post_refused");
    assert_eq!(refused.len(), 2);
    assert!(refused.iter().all(|r| r["fields"]["reason"] == "not_registered"));
    t.expect(json!({
        "kind": "program_output",
        "module": "POSTDOS",
        "text": "message 1 refused (CF set): no Windows application has registered with VPOSTD"
    }));
    t.expect(json!({"kind": "program_output", "module": "POSTDOS", "text": "VM 2 posted 0 messages, 2 refused"}));
    t.expect(json!({"kind": "program_ended", "module": "POSTDOS", "exit_code": 3}));
    t.expect_none(json!({"kind": "event_scheduled", "device": "VPOSTD"}));
}

#[test]
fn postdos_without_vpostd_says_so() {
    let run = Scenario::new(
        r#"
[386Enh]
device = ["*SHELL"]

[[vm]]
name = "DOS1"
program = "POSTDOS"
"#,
    )
    .run();
    run.assert_ok();
    let t = run.trace();
    t.expect(json!({"kind": "program_output", "module": "POSTDOS", "text": "VPOSTD.386 is not installed"}));
    t.expect(json!({"kind": "program_ended", "module": "POSTDOS", "exit_code": 1}));
}

#[test]
fn postapp_registering_after_postdos_started_gets_the_later_posts() {
    let run = machine(
        r#"
[windows]
load = ["POSTAPP register-after=250 quiet"]

[[vm]]
name = "DOS1"
program = "POSTDOS"
args = "count=5 interval=100"
"#,
    )
    .run();
    run.assert_ok();
    let t = run.trace();
    let reg = times(&notes(t, "registered"));
    assert_eq!(reg, [250]);
    let refused = times(&notes(t, "post_refused"));
    assert_eq!(refused, [0, 100, 200]);
    assert!(times(&notes(t, "post_queued")).iter().all(|&q| q >= 250));
    assert_eq!(delivered(t), [(2, 4), (2, 5)]);
    t.expect(json!({"kind": "program_ended", "module": "POSTDOS", "exit_code": 3}));
}

#[test]
fn postapp_unregisters_when_its_window_closes() {
    let run = machine(
        r#"
[windows]
load = ["POSTAPP quit-after=2 quiet"]

[[vm]]
name = "DOS1"
program = "POSTDOS"
args = "count=4 interval=100"
"#,
    )
    .run();
    run.assert_ok();
    let t = run.trace();
    assert_eq!(delivered(t), [(2, 1), (2, 2)]);
    let un = t.expect(json!({"kind": "note", "note": "unregistered"}));
    assert_eq!(un["fields"]["was_registered"], true);
    t.expect(json!({"kind": "program_output", "module": "POSTAPP", "text": "2 messages received (VM 2: 2)"}));
    t.expect(json!({"kind": "program_ended", "module": "POSTAPP", "exit_code": 0}));
    t.expect(json!({"kind": "module_freed", "module": "POSTHOST", "refcount": 0}));
    assert_eq!(notes(t, "post_refused").len(), 2);
}

#[test]
fn a_moveable_callback_breaks_the_isr_rule_and_the_post_is_dropped() {
    let run = machine(
        r#"
[windows]
load = ["POSTAPP moveable quiet"]

[[vm]]
name = "DOS1"
program = "POSTDOS"
args = "count=2 interval=100"
"#,
    )
    .run();
    run.assert_ok();
    let t = run.trace();
    let v = t.matching(json!({"kind": "violation", "code": "NOT_FIXED_SEGMENT"}));
    assert_eq!(v.len(), 2);
    assert!(v[0]["message"].as_str().unwrap().contains("POSTHOST!PostCallbackMoveable"), "{}", v[0]);
    assert_eq!(v[0]["device"], "VPOSTD");
    let dropped = notes(t, "post_dropped");
    assert_eq!(dropped.len(), 2);
    assert!(dropped.iter().all(|d| d["fields"]["reason"] == "callback_failed"));
    assert!(delivered(t).is_empty());
    // VPOSTD ended its nests and restored the system VM: the machine goes on.
    assert_eq!(t.count(json!({"kind": "nest_exec", "action": "end", "depth": 0})), 2);
    t.expect_none(json!({"kind": "violation", "code": "NEST_EXEC_NOT_ENDED"}));
    t.expect(json!({"kind": "program_ended", "module": "POSTDOS", "exit_code": 0}));
}

// ---- VxD-to-VxD posts, interrupt-time re-entry, limits -----------------------------------

/// POSTIRQ: posts through `VPOSTD_Post` from its interrupt handler, at
/// interrupt time, until `[POSTIRQ] Budget` posts were accepted (wParam
/// 0xFFFF, lParam 1, 2, ...); a global time-out at `[POSTIRQ] FlushAt` ms
/// posts whatever budget the interrupts left. Every result is a `note` (`irq_post`).
/// `[POSTIRQ] StatsAt` ms: query `VPOSTD_Get_Stats` for DOS1 and for an
/// invalid VM handle.
struct PostIrq {
    left: Cell<u32>,
    next: Cell<u32>,
}

impl PostIrq {
    fn post(&self, vmm: &Vmm<'_>) {
        if self.left.get() == 0 {
            return;
        }
        let seq = self.next.get();
        let mut call = ServiceCall {
            regs: Regs { ebx: vmm.get_sys_vm_handle().0, ecx: 0xFFFF, edx: seq, ..Regs::default() },
            args: [0; 8],
        };
        let ok = vmm.vxd_call((VPOSTD << 16) | VPOSTD_POST, &mut call).is_ok();
        let cf = call.regs.flags & CF_MASK != 0;
        if ok && !cf {
            self.left.set(self.left.get() - 1);
            self.next.set(seq + 1);
        }
        let _ = vmm.trace_note(
            "irq_post",
            &[("lparam", seq.into()), ("called", ok.into()), ("carry", cf.into()), ("eax", call.regs.eax.into())],
        );
    }

    fn setting(vmm: &Vmm<'_>, key: &str) -> u32 {
        vmm.get_profile_decimal_int(Some("POSTIRQ"), key, 0).map(|p| p.value as u32).unwrap_or(0)
    }
}

impl VxD for PostIrq {
    const DEVICE: Device = Device::new("POSTIRQ");

    fn create(_vmm: &Vmm<'_>) -> Result<Self, String> {
        Ok(PostIrq { left: Cell::new(0), next: Cell::new(1) })
    }

    fn control(&self, vmm: &Vmm<'_>, msg: ControlMessage) -> Carry {
        if msg.message == DEVICE_INIT {
            self.left.set(Self::setting(vmm, "Budget"));
            vmm.register_interrupt("POSTIRQ", |dev: &PostIrq, vmm, _| dev.post(vmm)).unwrap();
            let flush = Self::setting(vmm, "FlushAt");
            if flush > 0 {
                vmm.set_global_time_out(flush, |dev: &PostIrq, vmm, _| {
                    for _ in 0..dev.left.get() {
                        dev.post(vmm);
                    }
                })
                .unwrap();
            }
            let stats = Self::setting(vmm, "StatsAt");
            if stats > 0 {
                vmm.set_global_time_out(stats, |_: &PostIrq, vmm, _| {
                    for vm in [DOS1 as u32, 0xDEAD] {
                        let mut call = ServiceCall { regs: Regs { ebx: vm, ..Regs::default() }, args: [0; 8] };
                        vmm.vxd_call((VPOSTD << 16) | VPOSTD_GET_STATS, &mut call).unwrap();
                        let cf = call.regs.flags & CF_MASK != 0;
                        let _ = vmm.trace_note(
                            "stats",
                            &[
                                ("vm", vm.into()),
                                ("carry", cf.into()),
                                ("eax", call.regs.eax.into()),
                                ("ecx", call.regs.ecx.into()),
                            ],
                        );
                    }
                })
                .unwrap();
            }
        }
        Carry::Clear
    }
}

pub(crate) fn with_postirq(rest: &str) -> Scenario {
    Scenario::new(&format!(
        r#"
[386Enh]
device = ["*SHELL", "VPOSTD.386", "POSTIRQ"]
{rest}"#
    ))
    .device::<PostIrq>()
}

#[test]
fn vpostd_counts_posts_per_vm_in_the_control_block() {
    let run = with_postirq(
        r#"
[POSTIRQ]
StatsAt = 350

[windows]
load = ["POSTAPP register-after=150 quiet"]

[[vm]]
name = "DOS1"
program = "POSTDOS"
args = "count=5 interval=100"
"#,
    )
    .run();
    run.assert_ok();
    let t = run.trace();
    let stats = t.matching(json!({"kind": "note", "device": "POSTIRQ", "note": "stats"}));
    assert_eq!(stats.len(), 2);
    // Posts at 0 and 100 were refused, 200 and 300 accepted.
    assert_eq!(stats[0]["fields"], json!({"vm": DOS1, "carry": false, "eax": 2, "ecx": 2}));
    assert_eq!(stats[1]["fields"]["carry"], true);
    assert_eq!(stats[1]["fields"]["eax"], 5, "ERR_INVALID_VM");
}

#[test]
fn posts_from_interrupt_time_wait_and_too_many_are_refused() {
    let run = with_postirq(
        r#"
[VPOSTD]
MaxPending = 2

[POSTIRQ]
Budget = 4

[windows]
load = ["POSTAPP quiet"]

[[action]]
at = "50ms"
vm = "system"
action = "cli"

[[action]]
at = "500ms"
vm = "system"
action = "sti"

[[interrupt]]
name = "POSTIRQ"
at = "100ms"
every = "10ms"
count = 4
"#,
    )
    .run();
    run.assert_ok();
    let t = run.trace();
    let posts = t.matching(json!({"kind": "note", "device": "POSTIRQ", "note": "irq_post"}));
    let carry: Vec<bool> = posts.iter().map(|p| p["fields"]["carry"].as_bool().unwrap()).collect();
    assert_eq!(carry, [false, false, true, true]);
    assert!(posts[2..].iter().all(|p| p["fields"]["eax"] == 2), "ERR_TOO_MANY_PENDING");
    let refused = notes(t, "post_refused");
    assert!(refused.iter().all(|r| r["fields"]["reason"] == "too_many_pending" && r["fields"]["vm"] == SYS));
    assert_eq!(times(&notes(t, "post_called")), [500, 500]);
    assert_eq!(delivered(t), [(0xFFFF, 1), (0xFFFF, 2)]);
}

/// Run the re-entry scenario with `seed` in random order mode; the
/// delivered `(wParam, lParam)` pairs, sorted, and whether an interrupt
/// re-entered VPOSTD during its own nested execution.
fn random_run(seed: u64) -> (Vec<(u64, u64)>, bool) {
    let run = with_postirq(&format!(
        r#"
[machine]
order = "random"
seed = {seed}
inject_rate = 0.3

[POSTIRQ]
Budget = 10
FlushAt = 900

[windows]
load = ["POSTAPP queue=3 busy=15 quiet"]

[[vm]]
name = "DOS1"
program = "POSTDOS"
args = "count=10 interval=30"

[[vm]]
name = "DOS2"
program = "POSTDOS"
args = "count=10 interval=0"
at = "40ms"

[[interrupt]]
name = "POSTIRQ"
at = "5ms"
every = "45ms"
count = 3
"#
    ))
    .run();
    run.assert_ok();
    let t = run.trace();
    assert_eq!(run.violations(), 0, "seed {seed}: {}", t.tail(30));
    let mut reentered = false;
    let mut depth = 0;
    for r in t.records() {
        match (r["kind"].as_str(), r["action"].as_str()) {
            (Some("nest_exec"), Some("begin")) => depth += 1,
            (Some("nest_exec"), Some("end")) => depth -= 1,
            (Some("note"), _) if depth > 0 && r["note"] == "post_queued" => reentered = true,
            _ => {}
        }
    }
    let mut got = delivered(t);
    got.sort();
    (got, reentered)
}

#[test]
fn a_thousand_random_orders_with_reentry_deliver_every_message_exactly_once() {
    let want: Vec<(u64, u64)> =
        (1..=10).map(|l| (2, l)).chain((1..=10).map(|l| (3, l))).chain((1..=10).map(|l| (0xFFFF, l))).collect();
    let mut reentered = 0;
    let mut totals = BTreeMap::new();
    for seed in 0..1000 {
        let (got, re) = random_run(seed);
        assert_eq!(got, want, "seed {seed}");
        *totals.entry(got.len()).or_insert(0) += 1;
        reentered += usize::from(re);
    }
    assert_eq!(totals.len(), 1, "every seed delivers the same total: {totals:?}");
    // The injection really re-entered VPOSTD while it was calling the DLL.
    assert!(reentered > 100, "only {reentered} of 1000 runs re-entered VPOSTD during delivery");
}

#[test]
fn the_same_seed_gives_the_same_run() {
    let a = with_postirq(
        "[machine]\norder = \"random\"\nseed = 77\n[POSTIRQ]\nBudget = 3\nFlushAt = 500\n\
         [windows]\nload = [\"POSTAPP quiet\"]\n[[vm]]\nname = \"DOS1\"\nprogram = \"POSTDOS\"\nargs = \"count=4 interval=0\"\n",
    );
    let (x, y) = (a.run(), a.run());
    x.assert_ok();
    assert_eq!(x.trace().records(), y.trace().records());
}

// ---- bad configuration -----------------------------------------------------------------------

#[test]
fn a_bad_retry_interval_stops_the_machine_naming_the_key() {
    for (value, expect) in [
        ("0", "VPOSTD: [VPOSTD] RetryInterval = 0 is out of range (1 to 60000)"),
        ("\"soon\"", "VPOSTD: [VPOSTD] RetryInterval = \"soon\" is not a decimal number"),
    ] {
        let run = machine(&format!("[VPOSTD]\nRetryInterval = {value}\n")).run();
        let e = run.expect_error().to_string();
        assert!(e.contains(expect), "{e}");
        run.trace().expect(json!({"kind": "fatal_error", "device": "VPOSTD"}));
    }
}

/// HOG: takes almost all of the control block at Device_Init.
struct Hog;

impl VxD for Hog {
    const DEVICE: Device = Device::new("HOG");

    fn create(_vmm: &Vmm<'_>) -> Result<Self, String> {
        Ok(Hog)
    }

    fn control(&self, vmm: &Vmm<'_>, msg: ControlMessage) -> Carry {
        if msg.message == DEVICE_INIT {
            // The control block holds 64 KB; the VMM's own fields take the
            // first 256 bytes. Leave 4.
            vmm.allocate_device_cb_area(0x1_0000 - 0x100 - 4, 0).unwrap();
        }
        Carry::Clear
    }
}

#[test]
fn no_room_in_the_control_block_is_a_fatal_memory_error() {
    let run = Scenario::new("[386Enh]\ndevice = [\"HOG\", \"VPOSTD.386\"]\n").device::<Hog>().run();
    let e = run.expect_error().to_string();
    let fatal = run.trace().expect(json!({"kind": "fatal_error", "device": "VPOSTD"}));
    assert!(fatal["message"].as_str().unwrap().to_ascii_lowercase().contains("memory"), "{fatal} / {e}");
}

// ---- hot reload under traffic ----------------------------------------------------------------

#[test]
fn a_hundred_reloads_of_vpostd_under_traffic_deliver_every_message_exactly_once() {
    let mut m = machine(
        r#"
[windows]
load = ["POSTAPP queue=3 busy=9 quiet"]

[[vm]]
name = "DOS1"
program = "POSTDOS"
args = "count=150 interval=7"

[[vm]]
name = "DOS2"
program = "POSTDOS"
args = "count=150 interval=0"
at = "300ms"
"#,
    )
    .machine()
    .expect("manifest");
    m.boot().expect("boot");
    let file = m.plugin_devices().into_iter().find(|(d, _, _)| d == "VPOSTD").map(|(_, f, _)| f).unwrap();
    let mut handed = 0;
    for i in 0..100 {
        m.run_for(vmm_host::time::Duration::from_millis(9 + (i % 7))).expect("run");
        let report = m.reload_device("VPOSTD", &file);
        assert!(report.ok(), "reload {i}: {report:?}");
        assert_eq!(report.leaks, 0, "reload {i}: VPOSTD releases everything in Sys_Dynamic_Device_Exit");
        handed += report.state_bytes.unwrap_or(0);
    }
    m.run().expect("run");
    m.shutdown().expect("shutdown");
    assert_eq!(m.violation_count(), 0);
    let t = Trace::of(&m);
    assert_eq!(t.count(json!({"kind": "reload", "device": "VPOSTD", "result": "ok"})), 100);
    let mut got = delivered(&t);
    let n = got.len();
    got.sort();
    got.dedup();
    assert_eq!(got.len(), n, "a message arrived twice");
    let want: Vec<(u64, u64)> = (1..=150).map(|l| (2, l)).chain((1..=150).map(|l| (3, l))).collect();
    assert_eq!(got, want);
    assert!(handed > 100 * 10, "state was handed over each time ({handed} bytes)");
    // Some reloads happened with posts in flight, and some with a retry pending.
    let unloading = t.matching(json!({"kind": "note", "device": "VPOSTD", "note": "unloading"}));
    assert!(unloading.iter().any(|n| n["fields"]["pending"].as_u64() > Some(0)), "never reloaded mid-delivery");
    assert!(t.count(json!({"kind": "note", "note": "post_retry"})) > 0);
}
