//! The message story of a run, told from its trace: which VM posted what,
//! what the delivery waited for, when the window read it, and a summary
//! table per VM. `vmm run` prints it when a device wrote post notes; `vmm
//! story TRACE` tells it again from a `--trace` file.
//!
//! Everything comes from trace records: the post notes of the first device
//! that writes them (`registered`, `unregistered`, `post_queued`,
//! `post_refused`, `post_called`, `post_retry`, `post_requeued`,
//! `post_dropped`: a vocabulary any device may use, documented in
//! docs/trace.md; VPOSTD is the example), the window's `message_delivered`
//! and `message_dropped`, and the records that explain waits (`action` and
//! `if_flag` of the system VM, `crit_section`). Nothing here names a
//! device.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;

use serde_json::Value;

/// The notes a posting device writes for the story (docs/trace.md, "The
/// message story"): any device may write them; VPOSTD does.
const POST_NOTES: &[&str] = &[
    "registered",
    "unregistered",
    "registration_refused",
    "post_queued",
    "post_refused",
    "post_called",
    "post_retry",
    "post_requeued",
    "post_dropped",
];

/// A step on a post's way.
#[derive(Clone, Debug)]
enum Step {
    /// Told as is.
    Text(String),
    /// PostMessage found the queue full at these times; VPOSTD retried
    /// after this many ms.
    Full(Vec<u64>, Option<u64>),
}

/// One post, from the V86 API (or a VxD) to the window.
#[derive(Clone, Debug, Default)]
struct Post {
    vm: u64,
    wparam: u64,
    lparam: u64,
    queued_ms: u64,
    /// Waiting for VPOSTD's event (queued or requeued, not yet called).
    waiting: bool,
    /// The system VM has had interrupts disabled during this wait.
    sti_pending: bool,
    /// This VM has held the critical section during this wait.
    crit_pending: Option<u64>,
    /// An older post was being retried during this wait.
    behind_retry: bool,
    /// What happened, in order.
    steps: Vec<Step>,
    /// When PostMessage last accepted it.
    handed_ms: Option<u64>,
    delivered: Option<(u64, u64)>,
    dropped: Option<(u64, String)>,
}

/// Per-VM totals.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    /// Posts the VM made (accepted or refused).
    pub posted: u32,
    /// Posts whose message the window's task read from its queue.
    pub delivered: u32,
    /// Retries after PostMessage found the queue full.
    pub retried: u32,
    /// Posts refused with CF set, dropped by VPOSTD, or lost by Windows.
    pub dropped: u32,
}

/// The story of one run.
#[derive(Clone, Debug, Default)]
pub struct Story {
    /// Story lines, in time order.
    pub lines: Vec<String>,
    /// Totals by VM handle.
    pub totals: BTreeMap<u64, Totals>,
    /// Display names by VM handle.
    names: HashMap<u64, String>,
    /// Module names by task handle.
    tasks: HashMap<u64, String>,
    /// Posts neither delivered nor dropped when the trace ends.
    pub unaccounted: u32,
    /// The device whose post notes the story tells.
    poster: String,
    /// Whether a device wrote post notes (the message story is told).
    posts: bool,
    /// Who held a contended device when (`contention` records).
    contention: Option<crate::contention::ContentionStory>,
}

fn u(r: &Value, key: &str) -> Option<u64> {
    r.get(key).and_then(Value::as_u64)
}

fn s<'a>(r: &'a Value, key: &str) -> &'a str {
    r.get(key).and_then(Value::as_str).unwrap_or("")
}

/// `a`, `a and b`, `a, b and c`.
fn list(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

/// The kinds of record the story reads; [`Teller::line`] parses no other
/// record further than its kind.
const KINDS: &[&str] = &[
    "control",
    "vm_created",
    "program_started",
    "far_call",
    "action",
    "if_flag",
    "crit_section",
    "message_delivered",
    "message_dropped",
    "note",
];

/// A story line: when, and where it sorts among lines of the same time
/// (the order the story has always had: other events in trace order, then
/// registrations, then posts by number).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct LineKey {
    t: u64,
    class: u8,
    seq: u64,
}

/// Tells the story while the trace is read, one record at a time, in trace
/// order. It keeps the posts still on their way and the story's own lines;
/// a post is told (its line written and its state dropped) as soon as the
/// window has read it or it was dropped, so memory does not grow with the
/// trace.
#[derive(Debug, Default)]
pub struct Teller {
    story: Story,
    sys_vm: Option<u64>,
    /// The system VM's interrupt flag (enabled until a record says not).
    sys_cli: bool,
    crit_owner: Option<u64>,
    /// Posts on their way, by VPOSTD's post number.
    posts: BTreeMap<u64, Post>,
    /// The story lines told so far, with where each sorts.
    told: Vec<(LineKey, String)>,
    /// Lines other than posts told so far (their `seq`).
    other_lines: u64,
    /// Far-call targets by address: `MODULE!export`.
    callbacks: HashMap<String, String>,
    registrations: Vec<(u64, u64, String)>,
    /// The device whose post notes the story follows (the first to write
    /// one); other devices' post notes are not mixed in.
    poster: Option<String>,
    /// The message the posts go out as, when the device's notes say
    /// (`msg`); otherwise any message with a post's wParam and lParam.
    msg: Option<u64>,
    /// VPOSTD is waiting for a retry time-out.
    retrying: bool,
    /// Posts PostMessage accepted and the window has not read, by
    /// (wParam, lParam), oldest first.
    in_queue: HashMap<(u64, u64), VecDeque<u64>>,
    /// The story of contended devices.
    contention: crate::contention::Contention,
}

/// Just the kind of a record, read without building the record.
#[derive(serde::Deserialize)]
struct Kind<'a> {
    #[serde(borrow, default)]
    kind: std::borrow::Cow<'a, str>,
}

impl Teller {
    /// A teller that has read nothing yet.
    pub fn new() -> Self {
        Teller::default()
    }

    /// Read one JSON-lines record (without its newline). A record of a
    /// kind the story does not read costs one scan of the line.
    pub fn line(&mut self, line: &[u8]) -> serde_json::Result<()> {
        let kind: Kind<'_> = serde_json::from_slice(line)?;
        let (story, mut contention) = (KINDS.contains(&&*kind.kind), crate::contention::KINDS.contains(&&*kind.kind));
        if contention && kind.kind == "control" {
            // Of the control records only Sys_VM_Init's (one per run) is read.
            contention = line.windows(b"Sys_VM_Init".len()).any(|w| w == b"Sys_VM_Init");
        }
        if story || contention {
            let record: Value = serde_json::from_slice(line)?;
            if story {
                self.record(&record);
            }
            if contention {
                self.contention.record(&record);
            }
        }
        Ok(())
    }

    /// How many posts are still on their way (told when the trace ends).
    #[cfg(test)]
    pub fn pending(&self) -> usize {
        self.posts.len()
    }

    fn other(&mut self, t: u64, text: String) {
        self.told.push((LineKey { t, class: 0, seq: self.other_lines }, text));
        self.other_lines += 1;
    }

    /// Tell post `id` now if nothing can change its line any more: the
    /// window read it, or it was dropped before PostMessage took it.
    fn settle(&mut self, id: u64) {
        let done = self
            .posts
            .get(&id)
            .is_some_and(|p| p.delivered.is_some() || (p.dropped.is_some() && p.handed_ms.is_none()));
        if done && let Some(p) = self.posts.remove(&id) {
            self.tell_post(id, &p);
        }
    }

    fn tell_post(&mut self, id: u64, p: &Post) {
        let totals = self.story.totals.entry(p.vm).or_default();
        if p.delivered.is_some() {
            totals.delivered += 1;
        } else if p.dropped.is_some() {
            totals.dropped += 1;
        } else {
            self.story.unaccounted += 1;
        }
        let text = self.story.describe(p);
        self.told.push((LineKey { t: p.queued_ms, class: 2, seq: id }, text));
    }

    /// Read one record (a trace record as JSON), in trace order.
    pub fn record(&mut self, r: &Value) {
        let t = u(r, "t").unwrap_or(0);
        let story = &mut self.story;
        match s(r, "kind") {
            "control" if s(r, "message") == "Sys_VM_Init" => {
                if let Some(vm) = u(r, "vm") {
                    self.sys_vm = Some(vm);
                    story.names.insert(vm, "the system VM".to_string());
                }
            }
            "vm_created" => {
                if let Some(vm) = u(r, "vm") {
                    story.names.insert(vm, format!("{} (VM {})", s(r, "name"), u(r, "id").unwrap_or(0)));
                }
            }
            "program_started" => {
                if let Some(task) = u(r, "task") {
                    story.tasks.insert(task, s(r, "module").to_string());
                }
            }
            "far_call" => {
                let target = s(r, "target");
                if !self.callbacks.contains_key(target) {
                    self.callbacks.insert(target.to_string(), format!("{}!{}", s(r, "module"), s(r, "export")));
                }
            }
            "action" | "if_flag" if self.sys_vm.is_some() && u(r, "vm") == self.sys_vm => {
                let enabled = match (s(r, "kind"), s(r, "action")) {
                    ("if_flag", _) => r.get("enabled").and_then(Value::as_bool),
                    (_, "cli") => Some(false),
                    (_, "sti") => Some(true),
                    _ => None,
                };
                match enabled {
                    Some(false) => {
                        for p in self.posts.values_mut().filter(|p| p.waiting) {
                            p.sti_pending = true;
                        }
                    }
                    Some(true) if self.sys_cli => {
                        for p in self.posts.values_mut().filter(|p| p.waiting && p.sti_pending) {
                            p.sti_pending = false;
                            p.steps.push(Step::Text(format!(
                                "waited for the system VM to enable interrupts (STI at {t} ms)"
                            )));
                        }
                    }
                    _ => {}
                }
                if let Some(e) = enabled {
                    self.sys_cli = !e;
                }
            }
            "crit_section" => match s(r, "action") {
                "claim" | "grant" => {
                    let vm = u(r, "vm").unwrap_or(0);
                    self.crit_owner = Some(vm);
                    for p in self.posts.values_mut().filter(|p| p.waiting) {
                        p.crit_pending.get_or_insert(vm);
                    }
                }
                "release" if u(r, "claims") == Some(0) => {
                    self.crit_owner = None;
                    for p in self.posts.values_mut().filter(|p| p.waiting) {
                        if let Some(owner) = p.crit_pending.take() {
                            let who = story.name(owner);
                            p.steps.push(Step::Text(format!(
                                "waited for {who} to leave the critical section (at {t} ms)"
                            )));
                        }
                    }
                }
                _ => {}
            },
            "message_delivered" | "message_dropped" if self.msg.is_none_or(|m| u(r, "msg") == Some(m)) => {
                // A queue_full drop is PostMessage's FALSE, which VPOSTD
                // retries; it is told with the post.
                if s(r, "reason") == "queue_full" {
                    return;
                }
                let key = (u(r, "wparam").unwrap_or(0), u(r, "lparam").unwrap_or(0));
                let Some(ids) = self.in_queue.get_mut(&key) else { return };
                let Some(id) = ids.pop_front() else { return };
                if ids.is_empty() {
                    self.in_queue.remove(&key);
                }
                if let Some(p) = self.posts.get_mut(&id) {
                    if s(r, "kind") == "message_delivered" {
                        p.delivered = Some((t, u(r, "task").unwrap_or(0)));
                    } else {
                        p.dropped = Some((t, format!("Windows dropped the message: {}", s(r, "reason"))));
                    }
                }
                // Out of the window's queue: nothing changes its line now.
                if let Some(p) = self.posts.remove(&id) {
                    self.tell_post(id, &p);
                }
            }
            "note" if POST_NOTES.contains(&s(r, "note")) => {
                let device = s(r, "device");
                match &self.poster {
                    None => {
                        self.poster = Some(device.to_string());
                        self.story.poster = device.to_string();
                    }
                    Some(p) if p != device => return,
                    Some(_) => {}
                }
                self.post_note(t, r);
            }
            _ => {}
        }
    }

    fn post_note(&mut self, t: u64, r: &Value) {
        let f = r.get("fields").unwrap_or(&Value::Null);
        if let Some(msg) = u(f, "msg") {
            self.msg = Some(msg);
        }
        let id = u(f, "post").unwrap_or(0);
        match s(r, "note") {
            "registered" => self.registrations.push((t, u(f, "hwnd").unwrap_or(0), s(f, "callback").to_string())),
            "unregistered" => self.other(t, format!("window {:#06x} unregistered", u(f, "hwnd").unwrap_or(0))),
            "post_queued" => {
                let vm = u(f, "vm").unwrap_or(0);
                self.story.totals.entry(vm).or_default().posted += 1;
                let post = Post {
                    vm,
                    wparam: u(f, "wparam").unwrap_or(0),
                    lparam: u(f, "lparam").unwrap_or(0),
                    queued_ms: t,
                    waiting: true,
                    behind_retry: self.retrying,
                    sti_pending: self.sys_cli,
                    crit_pending: self.crit_owner,
                    ..Post::default()
                };
                if let Some(old) = self.posts.insert(id, post) {
                    // The same number again (a trace of two runs): tell the
                    // first as it stands.
                    self.tell_post(id, &old);
                }
            }
            "post_requeued" => {
                self.retrying = false;
                if let Some(p) = self.posts.get_mut(&id) {
                    p.waiting = true;
                    p.sti_pending = self.sys_cli;
                    p.crit_pending = self.crit_owner;
                }
            }
            "post_refused" => {
                let vm = u(f, "vm").unwrap_or(0);
                let totals = self.story.totals.entry(vm).or_default();
                totals.posted += 1;
                totals.dropped += 1;
                let why = match s(f, "reason") {
                    "not_registered" => "no application had registered",
                    "too_many_pending" => "too many posts were waiting",
                    other => other,
                };
                let text = format!(
                    "{} posted wParam {} lParam {}: refused, {why} (the caller got CF set)",
                    self.story.name(vm),
                    u(f, "wparam").unwrap_or(0),
                    u(f, "lparam").unwrap_or(0)
                );
                self.other(t, text);
            }
            "post_called" => {
                if let Some(p) = self.posts.get_mut(&id) {
                    if std::mem::take(&mut p.behind_retry) {
                        let poster = self.poster.clone().unwrap_or_default();
                        p.steps.push(Step::Text(format!("waited behind an older post {poster} was retrying")));
                    }
                    p.waiting = false;
                    p.sti_pending = false;
                    p.crit_pending = None;
                    if f.get("result").and_then(Value::as_bool).unwrap_or(false) {
                        p.handed_ms = Some(t);
                        self.in_queue.entry((p.wparam, p.lparam)).or_default().push_back(id);
                    } else if let Some(Step::Full(times, _)) = p.steps.last_mut() {
                        times.push(t);
                    } else {
                        p.steps.push(Step::Full(vec![t], None));
                    }
                }
            }
            "post_retry" => {
                self.retrying = true;
                if let Some(p) = self.posts.get_mut(&id) {
                    if let Some(Step::Full(_, after)) = p.steps.last_mut() {
                        *after = u(f, "after_ms");
                    }
                    self.story.totals.entry(p.vm).or_default().retried += 1;
                }
                for (_, p) in self.posts.iter_mut().filter(|(other, p)| **other != id && p.waiting) {
                    p.behind_retry = true;
                }
            }
            "post_dropped" => {
                if let Some(p) = self.posts.get_mut(&id) {
                    p.waiting = false;
                    let why = match s(f, "reason") {
                        "shutdown" => "the machine stopped first".to_string(),
                        "unregistered" => "the application had unregistered".to_string(),
                        other => format!("{}: {}", other.replace('_', " "), s(f, "detail")),
                    };
                    p.dropped = Some((t, why));
                }
                self.settle(id);
            }
            _ => {}
        }
    }

    /// The story of what was read; `None` when no device wrote a post note
    /// or a `contention` record.
    pub fn finish(mut self) -> Option<Story> {
        let contention = std::mem::take(&mut self.contention).finish();
        let Some(poster) = self.poster.clone() else {
            return contention.map(|c| Story { contention: Some(c), ..Story::default() });
        };
        for (i, (t, hwnd, callback)) in std::mem::take(&mut self.registrations).into_iter().enumerate() {
            let code = self.callbacks.get(&callback).map(|c| format!("{c} at {callback}")).unwrap_or(callback);
            self.told.push((
                LineKey { t, class: 1, seq: i as u64 },
                format!("window {hwnd:#06x} registered with {poster}; its callback is {code}"),
            ));
        }
        for (id, p) in std::mem::take(&mut self.posts) {
            self.tell_post(id, &p);
        }
        let mut told = std::mem::take(&mut self.told);
        told.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let width = told.last().map_or(1, |(k, _)| k.t.to_string().len());
        let mut story = self.story;
        story.posts = true;
        story.contention = contention;
        story.lines = told.into_iter().map(|(k, text)| format!("{:>width$} ms  {text}", k.t)).collect();
        Some(story)
    }
}

impl Story {
    /// Tell the story of `records` (a trace, in order); `None` when no
    /// device wrote a post note.
    #[cfg(test)]
    pub fn tell(records: &[Value]) -> Option<Story> {
        let mut teller = Teller::new();
        for r in records {
            teller.record(r);
        }
        teller.finish()
    }

    fn name(&self, vm: u64) -> String {
        self.names.get(&vm).cloned().unwrap_or_else(|| format!("VM {vm:#x}"))
    }

    /// One post's line.
    fn describe(&self, p: &Post) -> String {
        let mut steps: Vec<String> = p
            .steps
            .iter()
            .map(|step| match step {
                Step::Text(t) => t.clone(),
                Step::Full(times, after) => {
                    let at: Vec<String> = times.iter().map(|t| format!("{t} ms")).collect();
                    let again = match (after, times.len()) {
                        (Some(ms), 1) => format!(", {} retried {ms} ms later", self.poster),
                        (Some(ms), _) => format!(", {} retried {ms} ms later each time", self.poster),
                        (None, _) => String::new(),
                    };
                    format!("the window's queue was full at {}{again}", list(&at))
                }
            })
            .collect();
        match (&p.delivered, &p.dropped) {
            (Some((read, task)), _) => {
                let reader = self.tasks.get(task).cloned().unwrap_or_else(|| format!("task {task:#06x}"));
                match p.handed_ms {
                    Some(h) if h != *read => steps.push(format!("queued at {h} ms, {reader} read it at {read} ms")),
                    _ => steps.push(format!("{reader} read it at {read} ms")),
                }
            }
            (None, Some((t, why))) => steps.push(format!("dropped at {t} ms: {why}")),
            (None, None) if p.handed_ms.is_some() => {
                steps.push("still in the window's queue when the machine stopped".to_string())
            }
            (None, None) => steps.push("still on its way when the machine stopped".to_string()),
        }
        format!("{} posted wParam {} lParam {}: {}", self.name(p.vm), p.wparam, p.lparam, steps.join("; "))
    }

    /// The summary table.
    pub fn table(&self) -> String {
        let rows: Vec<[String; 5]> = self
            .totals
            .iter()
            .map(|(vm, t)| {
                [
                    self.name(*vm),
                    t.posted.to_string(),
                    t.delivered.to_string(),
                    t.retried.to_string(),
                    t.dropped.to_string(),
                ]
            })
            .collect();
        crate::cli::table(["VM", "POSTED", "DELIVERED", "RETRIED", "DROPPED"], &rows)
    }
}

impl fmt::Display for Story {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.posts {
            return match &self.contention {
                Some(c) => write!(f, "{c}"),
                None => Ok(()),
            };
        }
        writeln!(f, "What happened to each message:")?;
        for l in &self.lines {
            writeln!(f, "  {l}")?;
        }
        writeln!(f)?;
        write!(f, "{}", self.table())?;
        if self.unaccounted > 0 {
            writeln!(f, "{} post(s) were still on their way when the machine stopped.", self.unaccounted)?;
        }
        if let Some(c) = &self.contention {
            writeln!(f)?;
            write!(f, "{c}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::{Story, Teller};

    fn note(t: u64, note: &str, fields: Value) -> Value {
        json!({"t": t, "kind": "note", "device": "VPOSTD", "note": note, "fields": fields})
    }

    #[test]
    fn a_settled_post_leaves_no_state_behind() {
        let mut teller = Teller::new();
        teller.record(&json!({"t": 0, "kind": "control", "message": "Sys_VM_Init", "vm": 1}));
        for id in 1..=1000u64 {
            let (wparam, lparam) = (2, id);
            teller.record(&note(id, "post_queued", json!({"post": id, "vm": 2, "wparam": wparam, "lparam": lparam})));
            teller.record(&note(id, "post_called", json!({"post": id, "result": true})));
            assert_eq!(teller.pending(), 1);
            teller.record(&json!({"t": id, "kind": "message_delivered", "msg": 0x500, "wparam": wparam, "lparam": lparam, "task": 9}));
            assert_eq!(teller.pending(), 0);
            assert!(teller.in_queue.is_empty());
        }
        // A post dropped before PostMessage took it is settled too.
        teller.record(&note(2000, "post_queued", json!({"post": 2000, "vm": 2, "wparam": 2, "lparam": 0})));
        teller.record(&note(2001, "post_dropped", json!({"post": 2000, "reason": "unregistered"})));
        assert_eq!(teller.pending(), 0);
        let story = teller.finish().unwrap();
        assert_eq!(story.lines.len(), 1001);
        assert_eq!(story.totals[&2], super::Totals { posted: 1001, delivered: 1000, retried: 0, dropped: 1 });
    }

    #[test]
    fn any_device_that_writes_post_notes_gets_a_story_under_its_own_name() {
        let of = |device: &str, t: u64, note: &str, fields: Value| json!({"t": t, "kind": "note", "device": device, "note": note, "fields": fields});
        let records = vec![
            json!({"t": 0, "kind": "control", "message": "Sys_VM_Init", "vm": 1}),
            of("XPOST", 0, "registered", json!({"hwnd": 0x1004, "callback": "010F:0010"})),
            // The device says which message its posts go out as.
            of("XPOST", 1, "post_queued", json!({"post": 1, "vm": 2, "wparam": 7, "lparam": 1, "msg": 0x0401})),
            of("XPOST", 2, "post_called", json!({"post": 1, "result": false})),
            of("XPOST", 2, "post_retry", json!({"post": 1, "after_ms": 40})),
            of("XPOST", 42, "post_called", json!({"post": 1, "result": true})),
            // Another device's post notes are not mixed into XPOST's story.
            of("OTHER", 43, "post_queued", json!({"post": 1, "vm": 3, "wparam": 9, "lparam": 9})),
            // Another message with the same parameters is not XPOST's.
            json!({"t": 44, "kind": "message_delivered", "msg": 0x0500, "wparam": 7, "lparam": 1, "task": 9}),
            json!({"t": 50, "kind": "message_delivered", "msg": 0x0401, "wparam": 7, "lparam": 1, "task": 9}),
        ];
        let text = Story::tell(&records).unwrap().to_string();
        assert!(text.contains("registered with XPOST"), "{text}");
        assert!(text.contains("XPOST retried 40 ms later"), "{text}");
        assert!(text.contains("read it at 50 ms"), "{text}");
        assert!(!text.contains("VPOSTD") && !text.contains("VM 0x3"), "{text}");
    }

    #[test]
    fn a_line_is_read_like_its_record() {
        let mut teller = Teller::new();
        teller.line(br#"{"t":5,"kind":"note","device":"VPOSTD","note":"post_refused","fields":{"vm":2,"wparam":2,"lparam":1,"reason":"not_registered"}}"#).unwrap();
        teller.line(br#"{"t":6,"kind":"phase","phase":"stopped"}"#).unwrap();
        assert!(teller.line(b"{\"t\":7,").is_err());
        let story = teller.finish().unwrap();
        assert_eq!(
            story.lines,
            ["5 ms  VM 0x2 posted wParam 2 lParam 1: refused, no application had registered (the caller got CF set)"]
        );
    }

    #[test]
    fn no_vpostd_no_story() {
        assert!(Story::tell(&[json!({"t": 0, "kind": "machine"})]).is_none());
    }

    #[test]
    fn refusals_drops_and_unfinished_posts_are_all_accounted_for() {
        let records = vec![
            json!({"t": 0, "kind": "control", "message": "Sys_VM_Init", "vm": 1}),
            json!({"t": 0, "kind": "vm_created", "vm": 2, "id": 2, "name": "DOS1"}),
            note(5, "post_refused", json!({"vm": 2, "wparam": 2, "lparam": 1, "reason": "not_registered"})),
            note(10, "registered", json!({"hwnd": 0x1004, "callback": "010F:0010"})),
            note(20, "post_queued", json!({"post": 1, "vm": 2, "wparam": 2, "lparam": 2})),
            json!({"t": 25, "kind": "action", "vm": 1, "action": "cli"}),
            note(30, "post_queued", json!({"post": 2, "vm": 2, "wparam": 2, "lparam": 3})),
            json!({"t": 40, "kind": "crit_section", "action": "claim", "vm": 2, "claims": 1}),
            json!({"t": 50, "kind": "action", "vm": 1, "action": "sti"}),
            json!({"t": 60, "kind": "crit_section", "action": "release", "vm": 2, "claims": 0}),
            note(60, "post_called", json!({"post": 1, "result": false})),
            note(60, "post_retry", json!({"post": 1, "after_ms": 100})),
            note(160, "post_requeued", json!({"post": 1})),
            note(160, "post_called", json!({"post": 1, "result": true})),
            note(160, "post_called", json!({"post": 2, "result": true})),
            json!({"t": 170, "kind": "message_delivered", "msg": 0x500, "wparam": 2, "lparam": 2, "task": 9}),
            note(180, "post_queued", json!({"post": 3, "vm": 2, "wparam": 2, "lparam": 4})),
            note(190, "post_dropped", json!({"post": 3, "reason": "shutdown"})),
        ];
        let story = Story::tell(&records).unwrap();
        let text = story.to_string();
        assert!(
            text.contains("DOS1 (VM 2) posted wParam 2 lParam 1: refused, no application had registered"),
            "{text}"
        );
        assert!(
            text.contains(
                "lParam 2: waited for the system VM to enable interrupts (STI at 50 ms); waited for DOS1 (VM 2) to \
                 leave the critical section (at 60 ms); the window's queue was full at 60 ms, VPOSTD retried 100 ms \
                 later; queued at 160 ms, task 0x0009 read it at 170 ms"
            ),
            "{text}"
        );
        assert!(text.contains("lParam 3: waited for the system VM"), "{text}");
        assert!(text.contains("waited behind an older post VPOSTD was retrying"), "{text}");
        assert!(text.contains("still in the window's queue when the machine stopped"), "{text}");
        assert!(text.contains("lParam 4: dropped at 190 ms: the machine stopped first"), "{text}");
        let t = story.totals[&2];
        assert_eq!((t.posted, t.delivered, t.retried, t.dropped), (4, 1, 1, 2));
        assert_eq!(story.unaccounted, 1);
        assert!(text.ends_with("1 post(s) were still on their way when the machine stopped.\n"), "{text}");
    }
}
