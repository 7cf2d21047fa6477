//! `--timeline FILE`: the run as a Chrome trace (JSON object format), which
//! Perfetto (<https://ui.perfetto.dev>) and `chrome://tracing` open.
//!
//! Each VM is a track (thread) showing when it ran and what was dispatched
//! in it; a `VMM` track carries control messages, interrupts and
//! violations. Callbacks take no virtual time, so they appear as instant
//! markers; a VM's running spans and critical-section ownership are slices.
//! A machine-code DOS program's runs of the interpreter (`v86_slice`) are
//! slices on its VM's track, named with the instruction count, lasting the
//! virtual time the instructions took.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::trace::{TraceEvent, TraceRecord};

const PID: u32 = 1;
const VMM_TID: u32 = 0;

struct Builder {
    events: Vec<Value>,
    tids: BTreeMap<u32, u32>,
    running: Option<(u32, u64)>,
}

impl Builder {
    fn tid(&mut self, vm: u32) -> u32 {
        let next = self.tids.len() as u32 + 1;
        *self.tids.entry(vm).or_insert(next)
    }

    fn instant(&mut self, tid: u32, ts: f64, name: String, cat: &str, args: Value) {
        self.events.push(
            json!({"name": name, "cat": cat, "ph": "i", "s": "t", "ts": ts, "pid": PID, "tid": tid, "args": args}),
        );
    }

    fn slice(&mut self, tid: u32, start_ns: u64, end_ns: u64, name: &str, cat: &str) {
        self.events.push(json!({
            "name": name, "cat": cat, "ph": "X",
            "ts": start_ns as f64 / 1000.0, "dur": (end_ns.saturating_sub(start_ns)) as f64 / 1000.0,
            "pid": PID, "tid": tid,
        }));
    }
}

/// Build the Chrome trace of a run from its trace records.
pub fn chrome_trace(records: &[TraceRecord]) -> Value {
    let mut b = Builder { events: Vec::new(), tids: BTreeMap::new(), running: None };
    let mut names: BTreeMap<u32, String> = BTreeMap::new();
    let mut crit_open: BTreeMap<u32, u64> = BTreeMap::new();
    let end = records.last().map(|r| r.t_ns).unwrap_or(0);
    for r in records {
        let ts = r.t_ns as f64 / 1000.0;
        let args = serde_json::to_value(r).unwrap_or(Value::Null);
        match &r.event {
            TraceEvent::VmSwitch { from, vm } => {
                if b.running.is_none() {
                    b.running = Some((*from, 0));
                }
                if let Some((prev, since)) = b.running.take() {
                    let tid = b.tid(prev);
                    b.slice(tid, since, r.t_ns, "running", "vm");
                }
                b.running = Some((*vm, r.t_ns));
            }
            TraceEvent::VmCreated { vm, name, .. } => {
                names.insert(*vm, name.clone());
                let tid = b.tid(*vm);
                b.instant(tid, ts, format!("{name} created"), "vm", args);
            }
            TraceEvent::VmDestroyed { vm, name, reason, .. } => {
                let tid = b.tid(*vm);
                b.instant(tid, ts, format!("{name} destroyed ({reason})"), "vm", args);
            }
            TraceEvent::EventDispatched { vm, callback, event, .. } => {
                let tid = b.tid(*vm);
                b.instant(tid, ts, format!("{event} event: {callback}"), "event", args);
            }
            TraceEvent::Timeout { vm, callback, .. } => {
                let tid = b.tid(*vm);
                b.instant(tid, ts, format!("time-out: {callback}"), "timeout", args);
            }
            TraceEvent::CritSection { action, vm, .. } => match *action {
                "claim" | "grant" => {
                    crit_open.entry(*vm).or_insert(r.t_ns);
                }
                "release" => {
                    if let Some(start) = crit_open.remove(vm) {
                        let tid = b.tid(*vm);
                        b.slice(tid, start, r.t_ns, "critical section", "crit");
                    }
                }
                _ => {}
            },
            TraceEvent::V86Slice { vm, program, instructions, duration_ns, exit, .. } => {
                // Real code running in a DOS VM: one slice per run of the interpreter.
                let tid = b.tid(*vm);
                let name = format!("{program}: {instructions} instructions ({exit})");
                b.events.push(json!({
                    "name": name, "cat": "v86", "ph": "X",
                    "ts": ts, "dur": *duration_ns as f64 / 1000.0,
                    "pid": PID, "tid": tid, "args": args,
                }));
            }
            TraceEvent::Interrupt { name, .. } => b.instant(VMM_TID, ts, format!("IRQ {name}"), "interrupt", args),
            TraceEvent::Control { device, message, vm, .. } => {
                if *message == "Sys_VM_Init"
                    && let Some(vm) = vm
                {
                    names.insert(*vm, "system".to_string());
                    b.tid(*vm);
                }
                b.instant(VMM_TID, ts, format!("{message} → {device}"), "control", args)
            }
            TraceEvent::Violation { code, .. } => {
                b.instant(VMM_TID, ts, format!("violation {code}"), "violation", args)
            }
            TraceEvent::FatalError { message, .. } => {
                b.instant(VMM_TID, ts, format!("fatal: {message}"), "fatal", args)
            }
            TraceEvent::Action { vm, action } => {
                let tid = b.tid(*vm);
                b.instant(tid, ts, format!("action {action}"), "action", args);
            }
            TraceEvent::AppyDispatched { vm, callback, timed_out, .. } => {
                let tid = b.tid(*vm);
                let what = if *timed_out { "appy time-out" } else { "appy time" };
                b.instant(tid, ts, format!("{what}: {callback}"), "appy", args);
            }
            TraceEvent::ShellMessage { vm, text, answer, .. } => {
                let tid = b.tid(*vm);
                b.instant(tid, ts, format!("message \"{text}\" → {answer}"), "shell", args);
            }
            TraceEvent::Io { vm, port, direction, value, handled_by, .. } => {
                let tid = b.tid(*vm);
                let name = match *direction {
                    "in" => format!("IN {port:#06X} = {value:#X} ({handled_by})"),
                    _ => format!("OUT {port:#06X}, {value:#X} ({handled_by})"),
                };
                b.instant(tid, ts, name, "io", args);
            }
            TraceEvent::VirtualIrq { irq, vm, step } => {
                let tid = b.tid(*vm);
                b.instant(tid, ts, format!("IRQ {irq} {step}"), "virtual_irq", args);
            }
            TraceEvent::Contention { device, resource, owner, contender, decision } => {
                // On the contender's track (the owner's for a release).
                let tid = b.tid(if *contender != 0 { *contender } else { *owner });
                b.instant(tid, ts, format!("{resource}: {decision} ({device})"), "contention", args);
            }
            TraceEvent::Broadcast { msg, result, .. } => {
                b.instant(VMM_TID, ts, format!("broadcast {msg:#x} → {result}"), "shell", args)
            }
            TraceEvent::IntHook { vector, vm, device, passed } => {
                let tid = b.tid(*vm);
                let what = if *passed { "passed" } else { "consumed" };
                b.instant(tid, ts, format!("INT {vector:02X}h hook {device}: {what}"), "int", args);
            }
            TraceEvent::CallBack { vm, address, device, .. } => {
                let tid = b.tid(*vm);
                let at = format!("{:04X}:{:04X}", address >> 16, address & 0xFFFF);
                b.instant(tid, ts, format!("call-back {at} ({device})"), "int", args);
            }
            _ => {}
        }
    }
    if let Some((vm, since)) = b.running.take() {
        let tid = b.tid(vm);
        b.slice(tid, since, end, "running", "vm");
    }
    for (vm, start) in crit_open {
        let tid = b.tid(vm);
        b.slice(tid, start, end, "critical section", "crit");
    }
    let mut meta = vec![
        json!({"name": "process_name", "ph": "M", "pid": PID, "args": {"name": "vmm"}}),
        json!({"name": "thread_name", "ph": "M", "pid": PID, "tid": VMM_TID, "args": {"name": "VMM"}}),
    ];
    for (vm, tid) in &b.tids {
        let label = names.get(vm).cloned().unwrap_or_else(|| format!("VM {vm:#x}"));
        meta.push(json!({"name": "thread_name", "ph": "M", "pid": PID, "tid": tid, "args": {"name": label}}));
    }
    meta.extend(b.events);
    json!({"traceEvents": meta, "displayTimeUnit": "ms"})
}
