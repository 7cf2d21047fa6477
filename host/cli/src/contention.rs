//! The story of a contended device (`contention` records, as VCOMD writes
//! them for COM1): who held it when, each decision, the dialogs, and the
//! bytes each VM read from the UART. Read a record at a time, like the
//! message story; memory grows with the decisions (repeated refusals at one
//! instant are counted on one line), not with the bytes read.

use std::collections::BTreeMap;
use std::fmt;

use serde_json::Value;

fn u(r: &Value, key: &str) -> Option<u64> {
    r.get(key).and_then(Value::as_u64)
}

fn s<'a>(r: &'a Value, key: &str) -> &'a str {
    r.get(key).and_then(Value::as_str).unwrap_or("")
}

/// The data port of a COM port's UART, by name (`COM1` → 0x3F8).
fn data_port(resource: &str) -> Option<u64> {
    match resource {
        "COM1" => Some(0x3F8),
        "COM2" => Some(0x2F8),
        "COM3" => Some(0x3E8),
        "COM4" => Some(0x2E8),
        _ => None,
    }
}

/// A COM port's IRQ (the PC's usual wiring).
fn port_irq(resource: &str) -> Option<u64> {
    match resource {
        "COM1" | "COM3" => Some(4),
        "COM2" | "COM4" => Some(3),
        _ => None,
    }
}

/// The bytes per VM the table shows (the rest are counted).
const SHOWN_BYTES: usize = 32;

/// One contended resource.
#[derive(Clone, Debug, Default)]
struct Resource {
    /// The device that decides.
    device: String,
    /// The data port, for a COM port.
    data_port: Option<u64>,
    /// Its IRQ, for a COM port.
    irq: Option<u64>,
    owner: Option<u64>,
    /// Lines: time and text.
    lines: Vec<(u64, String)>,
    /// The last line was this refusal (contender, time) and how many
    /// followed it at that time: repeats are counted, not repeated.
    last_refusal: Option<(u64, u64, u32)>,
    /// Per VM: when it held the resource (from, to) and the bytes read.
    held: BTreeMap<u64, Vec<(u64, Option<u64>)>>,
    /// The first [`SHOWN_BYTES`] bytes each VM read, and how many it read.
    bytes: BTreeMap<u64, (Vec<u8>, u64)>,
    refused: BTreeMap<u64, u32>,
    /// Per VM: the resource's interrupts simulated into it.
    interrupts: BTreeMap<u64, u64>,
}

/// Reads `contention`, `shell_message`, `vm_created`, `io` and
/// `virtual_irq` records, and `control` records of `Sys_VM_Init` (whose VM
/// is the system VM: "Windows").
#[derive(Clone, Debug, Default)]
pub struct Contention {
    resources: BTreeMap<String, Resource>,
    names: BTreeMap<u64, String>,
    /// The answer of the last contention dialog not yet tied to a decision.
    dialog: Option<u64>,
}

/// The kinds of record it reads.
pub const KINDS: &[&str] = &["contention", "shell_message", "vm_created", "io", "virtual_irq", "control"];

impl Contention {
    fn name(&self, vm: u64) -> String {
        self.names.get(&vm).cloned().unwrap_or_else(|| format!("VM {vm:#x}"))
    }

    /// Read one record, in trace order.
    pub fn record(&mut self, r: &Value) {
        let t = u(r, "t").unwrap_or(0);
        match s(r, "kind") {
            "vm_created" => {
                if let Some(vm) = u(r, "vm") {
                    self.names.insert(vm, format!("{} (VM {})", s(r, "name"), u(r, "id").unwrap_or(0)));
                }
            }
            "control" if s(r, "message") == "Sys_VM_Init" => {
                if let Some(vm) = u(r, "vm") {
                    self.names.insert(vm, "Windows (system VM)".to_string());
                }
            }
            "shell_message" if s(r, "service") == "SHELL_Resolve_Contention" => self.dialog = u(r, "answer"),
            "io" if s(r, "direction") == "in" && s(r, "handled_by") == "hardware" => {
                let (Some(port), Some(vm), Some(value)) = (u(r, "port"), u(r, "vm"), u(r, "value")) else { return };
                for res in self.resources.values_mut() {
                    if res.owner == Some(vm) && res.data_port == Some(port) {
                        let (shown, total) = res.bytes.entry(vm).or_default();
                        if shown.len() < SHOWN_BYTES {
                            shown.push(value as u8);
                        }
                        *total += 1;
                    }
                }
            }
            "virtual_irq" if s(r, "step") == "delivered" => {
                let (Some(irq), Some(vm)) = (u(r, "irq"), u(r, "vm")) else { return };
                for res in self.resources.values_mut().filter(|res| res.irq == Some(irq)) {
                    *res.interrupts.entry(vm).or_default() += 1;
                }
            }
            "contention" => self.decision(t, r),
            _ => {}
        }
    }

    fn decision(&mut self, t: u64, r: &Value) {
        let resource = s(r, "resource").to_string();
        let (owner, contender) = (u(r, "owner").unwrap_or(0), u(r, "contender").unwrap_or(0));
        let decision = s(r, "decision").to_string();
        let dialog = self.dialog.take();
        let (owner_name, contender_name) = (self.name(owner), self.name(contender));
        let res = self.resources.entry(resource.clone()).or_default();
        if res.device.is_empty() {
            res.device = s(r, "device").to_string();
            res.data_port = data_port(&resource);
            res.irq = port_irq(&resource);
        }
        if decision == "refused" {
            *res.refused.entry(contender).or_default() += 1;
            if let Some((who, at, n)) = &mut res.last_refusal
                && *who == contender
                && *at == t
            {
                *n += 1;
                let times = *n;
                if let Some(line) = res.lines.last_mut() {
                    line.1 = format!("{contender_name} was refused {times} times: it lost a contention before");
                }
                return;
            }
            res.last_refusal = Some((contender, t, 1));
            res.lines.push((t, format!("{contender_name} was refused: it lost a contention before")));
            return;
        }
        res.last_refusal = None;
        let answered = dialog.map(|a| match a {
            6 => " (the dialog was answered Yes)".to_string(),
            7 => " (the dialog was answered No)".to_string(),
            a => format!(" (the dialog was answered {a})"),
        });
        let text = match decision.as_str() {
            "free" => format!("{contender_name} took it: nobody held it"),
            "steal" => format!("{contender_name} took it from {owner_name} (AutoAssign 0: no warning)"),
            "idle" => format!("{contender_name} took it from {owner_name}, idle longer than AutoAssign"),
            "steal_port" => format!("{contender_name} took it from {owner_name} (COMM.DRV's Steal_Port: no warning)"),
            "user_gave" => format!(
                "{contender_name} asked for it; the user gave it to {contender_name}{}",
                answered.unwrap_or_default()
            ),
            "user_kept" => format!(
                "{contender_name} asked for it; the user kept it with {owner_name}{}",
                answered.unwrap_or_default()
            ),
            "unresolved" => format!("{contender_name} asked for it; SHELL could not ask, {owner_name} keeps it"),
            "released" => format!("{owner_name} let it go"),
            other => format!("{contender_name} and {owner_name}: {other}"),
        };
        res.lines.push((t, text));
        let new_owner = match decision.as_str() {
            "free" | "steal" | "idle" | "user_gave" | "steal_port" => Some(contender),
            "released" => None,
            _ => res.owner,
        };
        if new_owner != res.owner {
            if let Some(old) = res.owner
                && let Some(last) = res.held.entry(old).or_default().last_mut()
            {
                last.1 = Some(t);
            }
            if let Some(new) = new_owner {
                res.held.entry(new).or_default().push((t, None));
            }
            res.owner = new_owner;
        }
    }

    /// The story, if any device recorded a contention decision.
    pub fn finish(self) -> Option<ContentionStory> {
        (!self.resources.is_empty()).then_some(ContentionStory { inner: self })
    }
}

/// What [`Contention::finish`] tells.
#[derive(Clone, Debug)]
pub struct ContentionStory {
    inner: Contention,
}

fn bytes_text(bytes: Option<&(Vec<u8>, u64)>) -> String {
    let Some((shown, total)) = bytes.filter(|(_, total)| *total > 0) else { return "-".to_string() };
    let mut text: String = shown
        .iter()
        .map(|&b| if b.is_ascii_graphic() { (b as char).to_string() } else { format!("\\x{b:02X}") })
        .collect();
    if *total > shown.len() as u64 {
        text.push_str(&format!("... ({total} bytes)"));
    }
    text
}

impl fmt::Display for ContentionStory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.inner;
        for (resource, res) in &c.resources {
            writeln!(f, "Who had {resource} ({} decides):", res.device)?;
            let width = res.lines.last().map_or(1, |(t, _)| t.to_string().len());
            for (t, text) in &res.lines {
                writeln!(f, "  {t:>width$} ms  {text}")?;
            }
            writeln!(f)?;
            let mut vms: Vec<u64> = res.held.keys().chain(res.refused.keys()).copied().collect();
            vms.sort_unstable();
            vms.dedup();
            let rows: Vec<[String; 5]> = vms
                .iter()
                .map(|vm| {
                    let held: Vec<String> = res
                        .held
                        .get(vm)
                        .map(|spans| {
                            spans
                                .iter()
                                .map(|(from, to)| match to {
                                    Some(to) => format!("{from}-{to} ms"),
                                    None => format!("{from} ms-"),
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    [
                        c.name(*vm),
                        if held.is_empty() { "never".to_string() } else { held.join(", ") },
                        bytes_text(res.bytes.get(vm)),
                        res.refused.get(vm).copied().unwrap_or(0).to_string(),
                        res.interrupts.get(vm).copied().unwrap_or(0).to_string(),
                    ]
                })
                .collect();
            let irq = res.irq.map_or_else(|| "INTERRUPTS".to_string(), |irq| format!("IRQ {irq} GOT"));
            write!(f, "{}", crate::cli::table(["VM", "HELD", "READ FROM THE UART", "REFUSED", irq.as_str()], &rows))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn who_held_the_port_when_and_what_each_vm_read() {
        let mut c = Contention::default();
        let records = [
            json!({"t": 0, "kind": "vm_created", "vm": 2, "id": 2, "name": "A"}),
            json!({"t": 0, "kind": "vm_created", "vm": 3, "id": 3, "name": "B"}),
            json!({"t": 0, "kind": "contention", "device": "VCOMD", "resource": "COM1", "owner": 0, "contender": 2, "decision": "free"}),
            json!({"t": 1, "kind": "virtual_irq", "irq": 4, "vm": 2, "step": "requested"}),
            json!({"t": 1, "kind": "virtual_irq", "irq": 4, "vm": 2, "step": "delivered"}),
            json!({"t": 1, "kind": "virtual_irq", "irq": 3, "vm": 2, "step": "delivered"}),
            json!({"t": 1, "kind": "io", "vm": 2, "port": 0x3F8, "direction": "in", "value": 65, "handled_by": "hardware"}),
            json!({"t": 1, "kind": "io", "vm": 2, "port": 0x3F8, "direction": "in", "value": 65, "handled_by": "VCOMD"}),
            json!({"t": 5, "kind": "shell_message", "service": "SHELL_Resolve_Contention", "answer": 7}),
            json!({"t": 5, "kind": "contention", "device": "VCOMD", "resource": "COM1", "owner": 2, "contender": 3, "decision": "user_kept"}),
            json!({"t": 6, "kind": "contention", "device": "VCOMD", "resource": "COM1", "owner": 2, "contender": 3, "decision": "refused"}),
            json!({"t": 6, "kind": "contention", "device": "VCOMD", "resource": "COM1", "owner": 2, "contender": 3, "decision": "refused"}),
            json!({"t": 9, "kind": "contention", "device": "VCOMD", "resource": "COM1", "owner": 2, "contender": 0, "decision": "released"}),
            json!({"t": 10, "kind": "contention", "device": "VCOMD", "resource": "COM1", "owner": 0, "contender": 3, "decision": "free"}),
            json!({"t": 11, "kind": "io", "vm": 3, "port": 0x3F8, "direction": "in", "value": 1, "handled_by": "hardware"}),
        ];
        for r in &records {
            c.record(r);
        }
        let text = c.finish().unwrap().to_string();
        assert!(text.contains("Who had COM1 (VCOMD decides):"), "{text}");
        assert!(
            text.contains(" 5 ms  B (VM 3) asked for it; the user kept it with A (VM 2) (the dialog was answered No)"),
            "{text}"
        );
        assert!(text.contains(" 6 ms  B (VM 3) was refused 2 times: it lost a contention before"), "{text}");
        assert!(text.contains(" 9 ms  A (VM 2) let it go"), "{text}");
        let rows: Vec<Vec<&str>> = text
            .lines()
            .filter(|l| l.starts_with("A ") || l.starts_with("B "))
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert!(text.contains("IRQ 4 GOT"), "{text}");
        assert_eq!(rows[0], ["A", "(VM", "2)", "0-9", "ms", "A", "0", "1"], "{text}");
        assert_eq!(rows[1], ["B", "(VM", "3)", "10", "ms-", "\\x01", "2", "0"], "{text}");
    }

    #[test]
    fn the_table_shows_the_first_bytes_and_counts_the_rest() {
        let mut c = Contention::default();
        c.record(&json!({"t": 0, "kind": "contention", "device": "VCOMD", "resource": "COM1", "owner": 0, "contender": 2, "decision": "free"}));
        for _ in 0..100 {
            c.record(&json!({"t": 1, "kind": "io", "vm": 2, "port": 0x3F8, "direction": "in", "value": 90, "handled_by": "hardware"}));
        }
        let text = c.finish().unwrap().to_string();
        assert!(text.contains(&format!("{}... (100 bytes)", "Z".repeat(SHOWN_BYTES))), "{text}");
    }

    #[test]
    fn windows_comm_drivers_steal_moves_the_port_and_says_so() {
        let mut c = Contention::default();
        let records = [
            json!({"t": 0, "kind": "vm_created", "vm": 2, "id": 2, "name": "A"}),
            json!({"t": 0, "kind": "contention", "device": "VCOMD", "resource": "COM1", "owner": 0, "contender": 2, "decision": "free"}),
            json!({"t": 7, "kind": "contention", "device": "VCOMD", "resource": "COM1", "owner": 2, "contender": 1, "decision": "steal_port"}),
            json!({"t": 9, "kind": "contention", "device": "VCOMD", "resource": "COM1", "owner": 1, "contender": 0, "decision": "released"}),
        ];
        for r in &records {
            c.record(r);
        }
        let text = c.finish().unwrap().to_string();
        assert!(text.contains("7 ms  VM 0x1 took it from A (VM 2) (COMM.DRV's Steal_Port: no warning)"), "{text}");
        assert!(text.contains("9 ms  VM 0x1 let it go"), "{text}");
        assert!(text.lines().any(|l| l.starts_with("A (VM 2)") && l.contains("0-7 ms")), "{text}");
        // Sys_VM_Init names the system VM.
        let mut c = Contention::default();
        c.record(&json!({"t": 0, "kind": "control", "device": "VCOMD", "message": "Sys_VM_Init", "vm": 1}));
        c.record(&records[1]);
        c.record(&records[2]);
        let text = c.finish().unwrap().to_string();
        assert!(text.contains("7 ms  Windows (system VM) took it from VM 0x2"), "{text}");
    }

    #[test]
    fn no_contention_no_story() {
        let mut c = Contention::default();
        c.record(&json!({"t": 0, "kind": "io", "vm": 2, "port": 0x3F8, "direction": "in", "value": 65, "handled_by": "hardware"}));
        assert!(c.finish().is_none());
    }
}
