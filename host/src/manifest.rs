//! The machine manifest: `system.ini` written in TOML, merged from several
//! files and `--set SECTION.KEY=VALUE` overrides, with every error pointing
//! at a file, line and column.
//!
//! Sections owned by the emulator (`[machine]`, `[windows]`, `[programs]`,
//! `[shell]`, `[[vm]]`, `[[tsr]]`, `[[interrupt]]`, `[[action]]`) have fixed keys;
//! unknown keys there are errors. `[386Enh]` holds the `device` list plus
//! any profile keys devices read with `Get_Profile_*`. Every other table is
//! a profile section for the devices (`[VPOSTD]`), matched
//! case-insensitively as Windows matched INI sections.
//!
//! Merge rules (later layers win):
//! * scalar keys and `[386Enh] device` replace the earlier value;
//! * arrays of tables (`[[vm]]`, `[[tsr]]`, `[[interrupt]]`, `[[action]]`)
//!   append to the earlier list;
//! * profile sections and `[programs]` merge key by key.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::error::{Error, Result};
use crate::time::Duration;

pub use crate::origin::Origin;

/// One input text: a manifest file or a `--set` override.
#[derive(Clone, Debug)]
struct Source {
    name: String,
    text: String,
    dir: PathBuf,
    /// Byte offsets where lines start, found on first use: an origin is a
    /// binary search, not a scan from the top (a manifest with ten
    /// thousand `[[vm]]` entries asks for ten thousand origins).
    line_starts: std::cell::OnceCell<Vec<usize>>,
}

impl Source {
    fn new(name: String, text: String, dir: PathBuf) -> Self {
        Source { name, text, dir, line_starts: std::cell::OnceCell::new() }
    }

    fn origin(&self, span: &Range<usize>) -> Origin {
        let mut start = span.start.min(self.text.len());
        while !self.text.is_char_boundary(start) {
            start -= 1;
        }
        let starts = self
            .line_starts
            .get_or_init(|| std::iter::once(0).chain(self.text.match_indices('\n').map(|(i, _)| i + 1)).collect());
        let line = starts.partition_point(|&s| s <= start);
        let column = self.text[starts[line - 1]..start].chars().count() + 1;
        Origin { file: self.name.clone(), line, column }
    }

    fn error(&self, span: &Range<usize>, message: impl Into<String>) -> Error {
        let o = self.origin(span);
        Error::Manifest { file: o.file, line: o.line, column: o.column, message: message.into() }
    }
}

/// Order among events ready at the same moment.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Order {
    /// Newest first (KB Q75009's "usually").
    #[default]
    Lifo,
    /// Oldest first.
    Fifo,
    /// Seeded random order, plus interrupt injection at service-call
    /// boundaries.
    Random,
    /// Seeded PCT order (random task priorities with `pct_depth - 1`
    /// priority change points), interrupts injected as in random order.
    Pct,
}

impl Order {
    /// Whether the order is explored (random or pct): its choices come
    /// from the machine's schedule source.
    #[inline(always)]
    pub fn explored(self) -> bool {
        matches!(self, Order::Random | Order::Pct)
    }
}

impl std::str::FromStr for Order {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "lifo" => Ok(Order::Lifo),
            "fifo" => Ok(Order::Fifo),
            "random" => Ok(Order::Random),
            "pct" => Ok(Order::Pct),
            _ => Err(format!("unknown order `{s}`: expected lifo, fifo, random or pct")),
        }
    }
}

/// What a VMM rule violation does.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Default)]
pub enum ViolationPolicy {
    /// Record it and return an error to the caller (the default).
    #[default]
    Error,
    /// Record it and stop the machine with a fatal error.
    Fatal,
    /// Record it and let the call proceed where it can.
    Log,
}

impl std::str::FromStr for ViolationPolicy {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "error" => Ok(ViolationPolicy::Error),
            "fatal" => Ok(ViolationPolicy::Fatal),
            "log" => Ok(ViolationPolicy::Log),
            _ => Err(format!("unknown violation policy `{s}`: expected error, fatal or log")),
        }
    }
}

/// `[machine] com1`: what is plugged into COM1 (ports 0x3F8-0x3FF).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Default)]
pub enum SerialPort {
    /// No UART: the ports are open bus like any other unemulated port
    /// (reads 0xFF, writes dropped).
    #[default]
    None,
    /// A 16450 UART with a loopback plug: what is sent is received
    /// (`hw/uart.rs`).
    Loopback,
}

impl std::str::FromStr for SerialPort {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "none" => Ok(SerialPort::None),
            "loopback" => Ok(SerialPort::Loopback),
            _ => Err(format!(
                "unknown com1 device `{s}`: expected none (no UART) or loopback (a UART with a loopback plug)"
            )),
        }
    }
}

/// When the CLI builds plugins with cargo.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Default)]
pub enum BuildPolicy {
    /// Build only the plugins that are not found on the search path.
    Missing,
    /// Run cargo for the workspace's plugins the manifest needs before
    /// booting (the default: a no-op when they are up to date, and never a
    /// stale plugin after an edit).
    #[default]
    Always,
    /// Never run cargo.
    Never,
}

impl std::str::FromStr for BuildPolicy {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "missing" => Ok(BuildPolicy::Missing),
            "always" => Ok(BuildPolicy::Always),
            "never" => Ok(BuildPolicy::Never),
            _ => Err(format!("unknown build policy `{s}`: expected missing, always or never")),
        }
    }
}

/// `[machine]`: emulator settings.
#[derive(Clone, Debug, PartialEq)]
pub struct MachineSettings {
    /// Seed of the random order mode (printed by every run).
    pub seed: Option<u64>,
    /// Event order.
    pub order: Order,
    /// Probability (0..=1) of an injected interrupt at a service-call
    /// boundary in random mode.
    pub inject_rate: f64,
    /// Pct order: the bug depth `d`; `d - 1` priority change points
    /// (at least 1).
    pub pct_depth: u32,
    /// Pct order: the steps (choices among at least two tasks) the change
    /// points are drawn among (at least 1).
    pub pct_steps: u64,
    /// Stop at this virtual time.
    pub until: Option<Duration>,
    /// Pace virtual time to the wall clock.
    pub realtime: bool,
    /// What a violation does.
    pub violations: ViolationPolicy,
    /// Windows version reported to devices and programs, `(major, minor)`.
    pub windows_version: (u8, u8),
    /// Time slice among VMs of equal priority (`MinTimeSlice`).
    pub time_slice: Duration,
    /// Virtual time one ring-3 step takes.
    pub ring3_step: Duration,
    /// Virtual time one instruction of a machine-code DOS program takes.
    pub instruction_time: Duration,
    /// Instructions a machine-code DOS program runs per step at most, before
    /// the scheduler looks at the other VMs again.
    pub v86_step: u64,
    /// Extra plugin directories, resolved against the manifest that named
    /// them.
    pub plugin_path: Vec<PathBuf>,
    /// When the CLI builds plugins with cargo.
    pub build: BuildPolicy,
    /// Units of work (event callbacks, interrupts taken, timers fired,
    /// ring-3 steps) that may run without virtual time advancing before the
    /// machine stops as livelocked (at least 1).
    pub livelock_limit: u64,
    /// The most bytes the trace file may take (`--trace-limit`); the run
    /// stops when it would grow past it.
    pub trace_limit: u64,
    /// What is plugged into COM1.
    pub com1: SerialPort,
}

/// The default `[machine] livelock_limit`: far above anything a machine
/// does at one instant (a burst of thousands of posts is thousands of
/// units), and reached in about a second of host time with a trace kept,
/// a few tens of milliseconds without (`livelock_guard` in BENCHMARKS.md).
pub const DEFAULT_LIVELOCK_LIMIT: u64 = 500_000;

/// The default `[machine] pct_depth`: two change points.
pub const DEFAULT_PCT_DEPTH: u32 = 3;

/// The default `[machine] pct_steps`.
pub const DEFAULT_PCT_STEPS: u64 = 100;

/// The largest `[machine] pct_depth`.
pub const MAX_PCT_DEPTH: u32 = 1000;

/// The default `[machine] trace_limit`: 1 GiB.
pub const DEFAULT_TRACE_LIMIT: u64 = 1 << 30;

/// The smallest `[machine] trace_limit`: room for a few records and the
/// final `trace_limit` one.
pub const MIN_TRACE_LIMIT: u64 = 1024;

/// The longest `[machine] ring3_step`.
const MAX_RING3_STEP: Duration = Duration::from_secs(1);

/// The longest `[machine] instruction_time`.
const MAX_INSTRUCTION_TIME: Duration = Duration::from_millis(1);

/// The most `[machine] v86_step` instructions.
const MAX_V86_STEP: u64 = 100_000_000;

/// The longest `[machine] time_slice`.
const MAX_TIME_SLICE: Duration = Duration::from_secs(60);

/// The latest `[machine] until`: 2^32 - 1 ms, where the system time a
/// device reads (`Get_System_Time`, milliseconds in 32 bits) wraps.
const MAX_UNTIL: Duration = Duration::from_millis(u32::MAX as u64);

/// Parse a size in bytes: a whole number, optionally with a unit: `B`,
/// `KB`, `MB`, `GB`, `TB` (powers of 1000) or `KiB`, `MiB`, `GiB`, `TiB`
/// (powers of 1024), case-insensitive; a fraction is allowed with a unit
/// (`1.5GB`).
pub fn parse_size(text: &str) -> std::result::Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" | "k" => 1_000,
        "mb" | "m" => 1_000_000,
        "gb" | "g" => 1_000_000_000,
        "tb" | "t" => 1_000_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        other => {
            return Err(format!("invalid size `{text}`: unknown unit `{other}` (use B, KB, MB, GB, KiB, MiB or GiB)"));
        }
    };
    if let Ok(n) = number.parse::<u64>() {
        return n.checked_mul(scale).ok_or_else(|| format!("invalid size `{text}`: out of range"));
    }
    let value: f64 = number
        .parse()
        .map_err(|_| format!("invalid size `{text}`: expected a number with a unit, such as 500MB or 2GiB"))?;
    let bytes = value * scale as f64;
    if !bytes.is_finite() || bytes < 0.0 || bytes >= u64::MAX as f64 {
        return Err(format!("invalid size `{text}`: out of range"));
    }
    Ok(bytes.round() as u64)
}

impl Default for MachineSettings {
    fn default() -> Self {
        MachineSettings {
            seed: None,
            order: Order::Lifo,
            inject_rate: 0.05,
            pct_depth: DEFAULT_PCT_DEPTH,
            pct_steps: DEFAULT_PCT_STEPS,
            until: None,
            realtime: false,
            violations: ViolationPolicy::Error,
            windows_version: (4, 0),
            time_slice: Duration::from_millis(20),
            ring3_step: Duration::from_micros(50),
            instruction_time: Duration::from_nanos(50),
            v86_step: 10_000,
            plugin_path: Vec::new(),
            build: BuildPolicy::Always,
            livelock_limit: DEFAULT_LIVELOCK_LIMIT,
            trace_limit: DEFAULT_TRACE_LIMIT,
            com1: SerialPort::None,
        }
    }
}

/// One `[386Enh] device` entry.
#[derive(Clone, Debug, PartialEq)]
pub struct DeviceEntry {
    /// The name as written: `*SHELL` for a built-in device, else a plugin
    /// name or path.
    pub name: String,
    /// Loaded through VXDLDR at run time instead of at boot.
    pub dynamic: bool,
    /// Where it was written.
    pub origin: Origin,
}

impl DeviceEntry {
    /// The built-in device name for `*NAME` entries.
    pub fn builtin(&self) -> Option<&str> {
        self.name.strip_prefix('*')
    }
}

/// One `[[tsr]]` entry: a device requested through the INT 2Fh AX=1605h
/// startup broadcast.
#[derive(Clone, Debug, PartialEq)]
pub struct TsrEntry {
    /// The TSR's name (for messages).
    pub name: String,
    /// The VxD file it asks Windows to load (`SIS_Virt_Dev_File_Ptr`).
    pub device: String,
    /// `SIS_Reference_Data`, passed to the device's real-mode init.
    pub reference_data: u32,
    /// Where it was written.
    pub origin: Origin,
}

/// One `[[vm]]` entry: a DOS VM.
#[derive(Clone, Debug, PartialEq)]
pub struct VmEntry {
    /// Name for traces (default `DOS<n>`).
    pub name: String,
    /// The VM runs in a window rather than full screen (its PIF's display
    /// usage, reported by `SHELL_GetVMInfo`).
    pub windowed: bool,
    /// DOS program to run, if any: a ring-3 plugin name (`POSTDOS`), or a
    /// machine-code file on the program search path (`POSTDOS.COM`, see
    /// [`is_program_file`]).
    pub program: Option<String>,
    /// Command-line arguments.
    pub args: String,
    /// When to create the VM.
    pub at: Duration,
    /// Where it was written.
    pub origin: Origin,
}

/// `[windows]`: the system VM's ring-3 side.
#[derive(Clone, Debug, PartialEq)]
pub struct WindowsSettings {
    /// Applications started in the system VM, in order.
    pub load: Vec<(String, Origin)>,
    /// `DefaultQueueSize`: messages per task queue.
    pub queue_size: u32,
    /// Answer given to message boxes (`IDOK` ...), so runs never block.
    pub message_box_answer: u32,
}

impl Default for WindowsSettings {
    fn default() -> Self {
        WindowsSettings { load: Vec::new(), queue_size: 8, message_box_answer: 1 }
    }
}

/// `[shell]`: the SHELL device's side of the run.
#[derive(Clone, Debug, PartialEq)]
pub struct ShellSettings {
    /// Answers to SHELL's message boxes, used in order; when they run out,
    /// `[windows] message_box_answer` answers.
    pub answers: Vec<u32>,
    /// Whether the message server (MSGSRV32) starts with Windows. Without
    /// it, appy time never becomes available.
    pub message_server: bool,
}

impl Default for ShellSettings {
    fn default() -> Self {
        ShellSettings { answers: Vec::new(), message_server: true }
    }
}

/// `[[interrupt]]`: raise a registered interrupt source at virtual times.
#[derive(Clone, Debug, PartialEq)]
pub struct InterruptEntry {
    /// The source name the device registered.
    pub name: String,
    /// First time.
    pub at: Duration,
    /// Period for repeats.
    pub every: Option<Duration>,
    /// Number of times (default 1, or unbounded with `every`).
    pub count: Option<u32>,
    /// Where it was written.
    pub origin: Origin,
}

/// A `[[irq]]` entry: the simulated hardware asserts a physical IRQ
/// (VPICD).
#[derive(Clone, Debug)]
pub struct IrqEntry {
    /// The IRQ, 0-15.
    pub irq: u8,
    /// First time.
    pub at: Duration,
    /// Period for repeats.
    pub every: Option<Duration>,
    /// Number of times (default 1, or unbounded with `every`).
    pub count: Option<u32>,
    /// `trigger = "level"`: the line is level-triggered (it stays asserted
    /// until `hold` passes or the test kit lowers it; a `VPICD_Phys_EOI`
    /// while it is asserted interrupts again); `"edge"` (the default):
    /// each assertion is one interrupt.
    pub level: bool,
    /// `hold` (level lines only): how long each assertion lasts; `None`:
    /// until the test kit lowers the line.
    pub hold: Option<Duration>,
    /// Where it was written.
    pub origin: Origin,
}

/// What an `[[action]]` does to a VM.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ActionKind {
    /// Clear the VM's interrupt flag.
    Cli,
    /// Set the VM's interrupt flag.
    Sti,
    /// The VM claims the critical section (as INT 2Fh 1681h).
    BeginCritical,
    /// The VM releases the critical section (as INT 2Fh 1682h).
    EndCritical,
}

impl std::str::FromStr for ActionKind {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "cli" => Ok(ActionKind::Cli),
            "sti" => Ok(ActionKind::Sti),
            "begin_critical" => Ok(ActionKind::BeginCritical),
            "end_critical" => Ok(ActionKind::EndCritical),
            _ => Err(format!("unknown action `{s}`: expected cli, sti, begin_critical or end_critical")),
        }
    }
}

/// `[[action]]`: change a VM's state at a virtual time (for testing waits).
#[derive(Clone, Debug, PartialEq)]
pub struct ActionEntry {
    /// When.
    pub at: Duration,
    /// Which VM: `"system"` or a `[[vm]]` name.
    pub vm: String,
    /// What.
    pub action: ActionKind,
    /// Where it was written.
    pub origin: Origin,
}

/// Profile data: sections and keys compared case-insensitively; a key may
/// repeat (an array value), for `Get_Next_Profile_String`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Profile {
    sections: BTreeMap<String, BTreeMap<String, Vec<String>>>,
}

impl Profile {
    /// All values of `key` in `section`, in order.
    pub fn values(&self, section: &str, key: &str) -> Option<&[String]> {
        self.sections
            .get(&section.to_ascii_lowercase())
            .and_then(|s| s.get(&key.to_ascii_lowercase()))
            .map(Vec::as_slice)
    }

    fn set(&mut self, section: &str, key: &str, values: Vec<String>) {
        self.sections.entry(section.to_ascii_lowercase()).or_default().insert(key.to_ascii_lowercase(), values);
    }

    /// Every (section, key) pair, for diagnostics.
    pub fn keys(&self) -> impl Iterator<Item = (&str, &str)> {
        self.sections.iter().flat_map(|(s, keys)| keys.keys().map(move |k| (s.as_str(), k.as_str())))
    }
}

/// `[programs]`: what `_SHELL_ShellExecute` runs for a file name or an
/// extension.
#[derive(Clone, Debug, PartialEq)]
pub struct ProgramEntry {
    /// The ring-3 plugin to start.
    pub module: String,
    /// Where it was written.
    pub origin: Origin,
}

/// A fully merged manifest.
#[derive(Clone, Debug, Default)]
pub struct Manifest {
    /// Display names of the inputs, in order.
    pub inputs: Vec<String>,
    /// Directory of the first manifest file: relative names resolve here.
    pub base_dir: PathBuf,
    /// `[machine]`.
    pub machine: MachineSettings,
    /// `[386Enh] device`, in load order.
    pub devices: Vec<DeviceEntry>,
    /// `[[tsr]]`, in broadcast order.
    pub tsr: Vec<TsrEntry>,
    /// `[[vm]]`.
    pub vms: Vec<VmEntry>,
    /// `[windows]`.
    pub windows: WindowsSettings,
    /// `[[interrupt]]`.
    pub interrupts: Vec<InterruptEntry>,
    /// `[[action]]`.
    pub actions: Vec<ActionEntry>,
    /// `[[irq]]`: physical IRQs the simulated hardware asserts.
    pub irqs: Vec<IrqEntry>,
    /// `[programs]`, keys lower-cased.
    pub programs: BTreeMap<String, ProgramEntry>,
    /// `[shell]`.
    pub shell: ShellSettings,
    /// Profile sections, including `[386Enh]`'s other keys.
    pub profile: Profile,
    /// `[expect]`: what must hold of the run's trace, in the order written
    /// (every layer's expectations, appended).
    pub expect: Vec<crate::expect::Expectation>,
}

impl Manifest {
    /// Every plugin the manifest names, sorted and without duplicates:
    /// devices (not `*` built-ins), `[[tsr]]` devices, `[windows] load`
    /// applications, `[[vm]]` programs, `[programs]` modules, and the DLL a
    /// built-in `*RUNDLL` entry loads.
    pub fn plugin_names(&self) -> Vec<String> {
        let load = self.windows.load.iter().filter_map(|(line, _)| {
            let (program, args) = line.trim().split_once(char::is_whitespace).unwrap_or((line.trim(), ""));
            if program.starts_with('*') {
                rundll_command_line(args).ok().map(|(dll, _)| dll.to_string())
            } else {
                Some(program.to_string())
            }
        });
        let mut names: Vec<String> = self
            .tsr
            .iter()
            .map(|t| t.device.clone())
            .chain(self.devices.iter().filter(|d| d.builtin().is_none()).map(|d| d.name.clone()))
            .chain(load)
            .chain(self.vms.iter().filter_map(|v| v.program.clone()).filter(|p| !is_program_file(p)))
            .chain(self.programs.values().map(|p| p.module.clone()))
            .collect();
        names.sort();
        names.dedup();
        names
    }
}

/// Whether a `[[vm]] program` names a machine-code file (`.COM` or `.EXE`,
/// any case) rather than a ring-3 plugin (a name without an extension).
pub fn is_program_file(name: &str) -> bool {
    let ext = name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase());
    matches!(ext.as_deref(), Some("com" | "exe"))
}

// ---- raw, per-layer schema -------------------------------------------------

const RESERVED: [&str; 11] =
    ["machine", "386Enh", "windows", "programs", "vm", "tsr", "interrupt", "action", "shell", "expect", "irq"];

#[derive(Deserialize)]
struct RawLayer {
    machine: Option<Spanned<RawMachine>>,
    #[serde(rename = "386Enh")]
    enh: Option<Spanned<RawEnh>>,
    windows: Option<Spanned<RawWindows>>,
    programs: Option<Spanned<BTreeMap<String, Spanned<String>>>>,
    shell: Option<Spanned<RawShell>>,
    vm: Option<Vec<Spanned<RawVm>>>,
    tsr: Option<Vec<Spanned<RawTsr>>>,
    interrupt: Option<Vec<Spanned<RawInterrupt>>>,
    action: Option<Vec<Spanned<RawAction>>>,
    expect: Option<Spanned<RawExpect>>,
    irq: Option<Vec<Spanned<RawIrq>>>,
    #[serde(flatten)]
    profile: BTreeMap<String, toml::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExpect {
    none: Option<Vec<Spanned<toml::Value>>>,
    count: Option<Vec<Spanned<RawCount>>>,
    same_count: Option<Vec<Spanned<Vec<Spanned<toml::Value>>>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCount {
    kind: Spanned<String>,
    #[serde(rename = "where")]
    filter: Option<Spanned<toml::Table>>,
    equals: Option<Spanned<i64>>,
    min: Option<Spanned<i64>>,
    max: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMachine {
    seed: Option<Spanned<RawSeed>>,
    order: Option<Spanned<String>>,
    inject_rate: Option<Spanned<f64>>,
    pct_depth: Option<Spanned<i64>>,
    pct_steps: Option<Spanned<i64>>,
    until: Option<Spanned<RawDuration>>,
    realtime: Option<bool>,
    violations: Option<Spanned<String>>,
    windows: Option<Spanned<String>>,
    time_slice: Option<Spanned<RawDuration>>,
    ring3_step: Option<Spanned<RawDuration>>,
    instruction_time: Option<Spanned<RawDuration>>,
    v86_step: Option<Spanned<i64>>,
    plugin_path: Option<Vec<String>>,
    build: Option<Spanned<String>>,
    livelock_limit: Option<Spanned<i64>>,
    trace_limit: Option<Spanned<RawSize>>,
    com1: Option<Spanned<String>>,
}

/// A size: a number of bytes or a string such as `"500MB"`, `"2GiB"`.
#[derive(Deserialize)]
#[serde(untagged)]
enum RawSize {
    Bytes(i64),
    Text(String),
}

#[derive(Deserialize)]
struct RawEnh {
    #[serde(alias = "Device", alias = "DEVICE")]
    device: Option<Vec<Spanned<RawDevice>>>,
    #[serde(flatten)]
    profile: BTreeMap<String, toml::Value>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawDevice {
    Name(String),
    Table(RawDeviceTable),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDeviceTable {
    name: String,
    #[serde(default)]
    dynamic: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWindows {
    load: Option<Vec<Spanned<String>>>,
    queue_size: Option<Spanned<i64>>,
    message_box_answer: Option<Spanned<toml::Value>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawShell {
    answers: Option<Vec<Spanned<toml::Value>>>,
    message_server: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVm {
    name: Option<String>,
    windowed: Option<bool>,
    program: Option<String>,
    args: Option<RawArgs>,
    at: Option<Spanned<RawDuration>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawArgs {
    Line(String),
    List(Vec<String>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTsr {
    name: Option<String>,
    device: String,
    reference_data: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInterrupt {
    name: String,
    at: Spanned<RawDuration>,
    every: Option<Spanned<RawDuration>>,
    count: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIrq {
    irq: Spanned<i64>,
    at: Spanned<RawDuration>,
    every: Option<Spanned<RawDuration>>,
    count: Option<Spanned<i64>>,
    trigger: Option<Spanned<String>>,
    hold: Option<Spanned<RawDuration>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAction {
    at: Spanned<RawDuration>,
    vm: String,
    action: Spanned<String>,
}

/// A duration: an integer number of milliseconds or a string such as
/// `"250ms"`, `"1.5s"`, `"40us"`.
#[derive(Deserialize)]
#[serde(untagged)]
enum RawDuration {
    Millis(i64),
    Text(String),
}

impl RawDuration {
    fn parse(&self) -> std::result::Result<Duration, String> {
        match self {
            RawDuration::Millis(ms) if *ms >= 0 => Ok(Duration::from_millis(*ms as u64)),
            RawDuration::Millis(ms) => Err(format!("duration must not be negative, got {ms}")),
            RawDuration::Text(t) => Duration::parse(t),
        }
    }
}

/// The `every` and `count` of a repeating entry (`[[interrupt]]`,
/// `[[irq]]`): a period longer than 0, a positive count.
fn repetition(
    src: &Source,
    every: Option<&Spanned<RawDuration>>,
    count: Option<&Spanned<i64>>,
) -> Result<(Option<Duration>, Option<u32>)> {
    let count = match count {
        Some(c) => Some(
            u32::try_from(*c.get_ref())
                .ok()
                .filter(|c| *c > 0)
                .ok_or_else(|| src.error(&c.span(), "count must be a positive number"))?,
        ),
        None => None,
    };
    let every = match every {
        Some(e) => {
            let d = duration(src, e)?;
            if d.is_zero() {
                return Err(src.error(&e.span(), "every must be longer than 0"));
            }
            Some(d)
        }
        None => None,
    };
    Ok((every, count))
}

fn duration(src: &Source, d: &Spanned<RawDuration>) -> Result<Duration> {
    d.get_ref().parse().map_err(|e| src.error(&d.span(), e))
}

fn parsed<T: std::str::FromStr<Err = String>>(src: &Source, s: &Spanned<String>) -> Result<T> {
    s.get_ref().parse().map_err(|e| src.error(&s.span(), e))
}

// ---- loading -----------------------------------------------------------------

/// Builds a [`Manifest`] from files, inline texts and overrides, in order.
#[derive(Default)]
pub struct ManifestBuilder {
    sources: Vec<Source>,
    sets: Vec<String>,
}

impl ManifestBuilder {
    /// An empty builder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add a manifest file.
    pub fn file(mut self, path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let io = |message: String| Error::Io { path: path.to_path_buf(), message };
        let bytes =
            crate::bounded::read(path, crate::bounded::MAX_MANIFEST_BYTES, false).map_err(|e| io(e.to_string()))?;
        let text = String::from_utf8(bytes).map_err(|e| io(format!("not UTF-8 text: {e}")))?;
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let dir = if dir.as_os_str().is_empty() { PathBuf::from(".") } else { dir };
        self.sources.push(Source::new(path.display().to_string(), text, dir));
        Ok(self)
    }

    /// Add manifest text (for tests and the test kit); `dir` resolves its
    /// relative paths.
    pub fn text(mut self, name: impl Into<String>, text: impl Into<String>, dir: impl Into<PathBuf>) -> Self {
        self.sources.push(Source::new(name.into(), text.into(), dir.into()));
        self
    }

    /// Add a `SECTION.KEY=VALUE` override. VALUE is TOML (a number, a
    /// boolean, `"text"`, `[...]`); anything that does not parse as TOML is
    /// taken as a string.
    pub fn set(mut self, assignment: impl Into<String>) -> Self {
        self.sets.push(assignment.into());
        self
    }

    /// Parse, validate and merge everything.
    pub fn build(self) -> Result<Manifest> {
        let mut sources = self.sources;
        let base_dir = sources.first().map(|s| s.dir.clone()).unwrap_or_else(|| PathBuf::from("."));
        for (i, set) in self.sets.iter().enumerate() {
            sources.push(set_source(i + 1, set, &base_dir)?);
        }
        let mut manifest = Manifest { base_dir, ..Manifest::default() };
        for src in &sources {
            manifest.inputs.push(src.name.clone());
            let layer: RawLayer = toml::from_str(&src.text).map_err(|e| {
                let span = e.span().unwrap_or(0..0);
                src.error(&span, e.message().to_string())
            })?;
            merge_layer(&mut manifest, src, layer)?;
        }
        Ok(manifest)
    }
}

/// Turn `SECTION.KEY=VALUE` into a one-key TOML layer.
fn set_source(n: usize, assignment: &str, dir: &Path) -> Result<Source> {
    let name = format!("--set #{n} ({assignment})");
    let bad = |message: String| Error::Manifest { file: name.clone(), line: 1, column: 1, message };
    let (path, value) = assignment.split_once('=').ok_or_else(|| bad("expected SECTION.KEY=VALUE".to_string()))?;
    let (section, key) = path
        .trim()
        .rsplit_once('.')
        .ok_or_else(|| bad(format!("`{path}` must be SECTION.KEY, for example machine.seed")))?;
    if section.is_empty() || key.is_empty() {
        return Err(bad(format!("`{path}` must be SECTION.KEY, for example machine.seed")));
    }
    let value = value.trim();
    let toml_value = match toml::from_str::<toml::Table>(&format!("v = {value}")) {
        Ok(t) => t.get("v").cloned().unwrap_or_else(|| toml::Value::String(value.to_string())),
        Err(_) => toml::Value::String(value.to_string()),
    };
    // The value is written inline: a table value stays the key's value
    // instead of becoming a section of its own.
    let text = format!("[{}]\n{} = {toml_value}\n", toml_key(section.trim()), toml_key(key.trim()));
    Ok(Source::new(name, text, dir.to_path_buf()))
}

fn toml_key(section: &str) -> String {
    if section.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
        section.to_string()
    } else {
        format!("\"{}\"", section.replace('\\', "\\\\").replace('"', "\\\""))
    }
}

fn merge_layer(m: &mut Manifest, src: &Source, layer: RawLayer) -> Result<()> {
    if let Some(machine) = layer.machine {
        merge_machine(&mut m.machine, src, machine.into_inner())?;
    }
    if let Some(enh) = layer.enh {
        let enh = enh.into_inner();
        if let Some(devices) = enh.device {
            m.devices = devices.iter().map(|d| device_entry(src, d)).collect::<Result<_>>()?;
            // As in SYSTEM.INI, the list is also the profile's repeated
            // `device=` key (`Get_Profile_String` / `Get_Next_Profile_String`).
            m.profile.set("386Enh", "device", m.devices.iter().map(|d| d.name.clone()).collect());
        }
        for (key, value) in enh.profile {
            if edit_distance(&key.to_ascii_lowercase(), "device") <= 2 {
                let span = find_key(&src.text, &key);
                return Err(src.error(&span, format!("unknown key `{key}` in [386Enh]; did you mean `device`?")));
            }
            m.profile.set("386Enh", &key, profile_values(src, "386Enh", &key, value)?);
        }
    }
    if let Some(windows) = layer.windows {
        let w = windows.into_inner();
        if let Some(load) = w.load {
            m.windows.load = load.iter().map(|l| (l.get_ref().clone(), src.origin(&l.span()))).collect();
        }
        if let Some(q) = w.queue_size {
            let v = *q.get_ref();
            if !(1..=120).contains(&v) {
                return Err(src.error(
                    &q.span(),
                    format!(
                        "queue_size {v} is out of range: a Windows 3.1 task queue holds 1 to 120 messages (default 8)"
                    ),
                ));
            }
            m.windows.queue_size = v as u32;
        }
        if let Some(a) = w.message_box_answer {
            m.windows.message_box_answer = message_box_answer(a.get_ref()).map_err(|e| src.error(&a.span(), e))?;
        }
    }
    if let Some(shell) = layer.shell {
        let sh = shell.into_inner();
        if let Some(answers) = sh.answers {
            m.shell.answers = answers
                .iter()
                .map(|a| message_box_answer(a.get_ref()).map_err(|e| src.error(&a.span(), e)))
                .collect::<Result<_>>()?;
        }
        if let Some(on) = sh.message_server {
            m.shell.message_server = on;
        }
    }
    if let Some(programs) = layer.programs {
        for (name, module) in programs.into_inner() {
            m.programs.insert(
                name.to_ascii_lowercase(),
                ProgramEntry { module: module.get_ref().clone(), origin: src.origin(&module.span()) },
            );
        }
    }
    // Names taken so far, lower case (a set: ten thousand VMs must not cost
    // a hundred million comparisons).
    let mut taken: std::collections::HashSet<String> = m.vms.iter().map(|v| v.name.to_ascii_lowercase()).collect();
    for vm in layer.vm.unwrap_or_default() {
        let origin = src.origin(&vm.span());
        let v = vm.into_inner();
        let at = match &v.at {
            Some(at) => duration(src, at)?,
            None => Duration::ZERO,
        };
        let n = m.vms.len() + 2;
        let name = v.name.unwrap_or_else(|| format!("DOS{n}"));
        if name.eq_ignore_ascii_case("system") || !taken.insert(name.to_ascii_lowercase()) {
            return Err(Error::Manifest {
                file: origin.file,
                line: origin.line,
                column: origin.column,
                message: format!("VM name `{name}` is already taken"),
            });
        }
        let args = match v.args {
            None => String::new(),
            Some(RawArgs::Line(s)) => s,
            Some(RawArgs::List(l)) => l.join(" "),
        };
        m.vms.push(VmEntry { name, windowed: v.windowed.unwrap_or(false), program: v.program, args, at, origin });
    }
    for tsr in layer.tsr.unwrap_or_default() {
        let origin = src.origin(&tsr.span());
        let t = tsr.into_inner();
        let reference_data = match t.reference_data {
            Some(r) => {
                u32::try_from(*r.get_ref()).map_err(|_| src.error(&r.span(), "reference_data must fit in 32 bits"))?
            }
            None => 0,
        };
        let name = t.name.unwrap_or_else(|| t.device.clone());
        m.tsr.push(TsrEntry { name, device: t.device, reference_data, origin });
    }
    for irq in layer.interrupt.unwrap_or_default() {
        let origin = src.origin(&irq.span());
        let i = irq.into_inner();
        let (every, count) = repetition(src, i.every.as_ref(), i.count.as_ref())?;
        m.interrupts.push(InterruptEntry { name: i.name, at: duration(src, &i.at)?, every, count, origin });
    }
    for entry in layer.irq.unwrap_or_default() {
        let origin = src.origin(&entry.span());
        let i = entry.into_inner();
        let irq = u8::try_from(*i.irq.get_ref())
            .ok()
            .filter(|n| *n < 16)
            .ok_or_else(|| src.error(&i.irq.span(), "irq must be 0-15 (two cascaded 8259s)"))?;
        let (every, count) = repetition(src, i.every.as_ref(), i.count.as_ref())?;
        let level = match &i.trigger {
            None => false,
            Some(t) => match t.get_ref().to_ascii_lowercase().as_str() {
                "edge" => false,
                "level" => true,
                _ => {
                    let got = t.get_ref();
                    return Err(src.error(&t.span(), format!("trigger must be \"edge\" or \"level\", got \"{got}\"")));
                }
            },
        };
        // One line, one trigger mode.
        if let Some(other) = m.irqs.iter().find(|e| e.irq == irq && e.level != level) {
            let span = i.trigger.as_ref().map_or(i.irq.span(), |t| t.span());
            return Err(src.error(
                &span,
                format!(
                    "IRQ {irq} is {} here but {} in the entry at {}: a line has one trigger mode",
                    if level { "level-triggered" } else { "edge-triggered" },
                    if other.level { "level-triggered" } else { "edge-triggered" },
                    other.origin
                ),
            ));
        }
        let hold = match &i.hold {
            None => None,
            Some(h) if !level => {
                return Err(src.error(&h.span(), "hold applies to a level-triggered line: add trigger = \"level\""));
            }
            Some(h) => Some(duration(src, h)?).filter(|d| !d.is_zero()).map(Some).ok_or_else(|| {
                src.error(&h.span(), "hold must be longer than 0 (leave it out to hold the line until lowered)")
            })?,
        };
        m.irqs.push(IrqEntry { irq, at: duration(src, &i.at)?, every, count, level, hold, origin });
    }
    for action in layer.action.unwrap_or_default() {
        let origin = src.origin(&action.span());
        let a = action.into_inner();
        m.actions.push(ActionEntry { at: duration(src, &a.at)?, vm: a.vm, action: parsed(src, &a.action)?, origin });
    }
    if let Some(expect) = layer.expect {
        merge_expect(m, src, expect)?;
    }
    for (section, value) in layer.profile {
        if let Some(reserved) = RESERVED.iter().find(|r| r.eq_ignore_ascii_case(&section)) {
            let span = find_section(&src.text, &section);
            return Err(src.error(
                &span,
                format!("section [{section}] differs from [{reserved}] only in case; write [{reserved}]"),
            ));
        }
        let toml::Value::Table(table) = value else {
            let span = find_key(&src.text, &section);
            return Err(src.error(
                &span,
                format!("top-level key `{section}` must be a [section]: profile data lives in sections"),
            ));
        };
        for (key, value) in table {
            m.profile.set(&section, &key, profile_values(src, &section, &key, value)?);
        }
    }
    Ok(())
}

/// `[expect]`: append the layer's expectations.
fn merge_expect(m: &mut Manifest, src: &Source, expect: Spanned<RawExpect>) -> Result<()> {
    use crate::expect::{Expectation, Rule};
    let e = expect.into_inner();
    for s in e.none.unwrap_or_default() {
        m.expect.push(Expectation { rule: Rule::None(selector(src, &s)?), origin: src.origin(&s.span()) });
    }
    for c in e.count.unwrap_or_default() {
        let origin = src.origin(&c.span());
        let span = c.span();
        let c = c.into_inner();
        let bound = |b: &Option<Spanned<i64>>, name: &str| -> Result<Option<u64>> {
            b.as_ref()
                .map(|b| {
                    u64::try_from(*b.get_ref())
                        .map_err(|_| src.error(&b.span(), format!("{name} must not be negative, got {}", b.get_ref())))
                })
                .transpose()
        };
        let (equals, min, max) = (bound(&c.equals, "equals")?, bound(&c.min, "min")?, bound(&c.max, "max")?);
        if equals.is_none() && min.is_none() && max.is_none() {
            return Err(src.error(&span, "a count needs `equals`, `min` or `max`"));
        }
        if let (Some(lo), Some(hi)) = (min, max)
            && lo > hi
        {
            return Err(src.error(&span, format!("min {lo} is above max {hi}: no run can pass")));
        }
        let selector = selector_of(src, &c.kind, c.filter.as_ref())?;
        m.expect.push(Expectation { rule: Rule::Count { selector, equals, min, max }, origin });
    }
    for pair in e.same_count.unwrap_or_default() {
        let origin = src.origin(&pair.span());
        let [a, b] = pair.get_ref().as_slice() else {
            return Err(src.error(
                &pair.span(),
                format!("same_count takes pairs of selections, [A, B]; this one has {}", pair.get_ref().len()),
            ));
        };
        m.expect.push(Expectation { rule: Rule::SameCount(selector(src, a)?, selector(src, b)?), origin });
    }
    Ok(())
}

/// An `[expect]` selection: `"kind"` or `{ kind = "...", where = { ... } }`.
fn selector(src: &Source, v: &Spanned<toml::Value>) -> Result<crate::expect::Selector> {
    let bad = || {
        src.error(
            &v.span(),
            "a selection is a record kind (\"violation\") or { kind = \"...\", where = { FIELD = VALUE } }",
        )
    };
    match v.get_ref() {
        toml::Value::String(kind) => selector_of(src, &Spanned::new(v.span(), kind.clone()), None),
        toml::Value::Table(t) => {
            if let Some(key) = t.keys().find(|k| *k != "kind" && *k != "where") {
                return Err(
                    src.error(&v.span(), format!("unknown key `{key}` in a selection: expected `kind`, `where`"))
                );
            }
            let Some(toml::Value::String(kind)) = t.get("kind") else { return Err(bad()) };
            let filter = match t.get("where") {
                None => None,
                Some(toml::Value::Table(w)) => Some(Spanned::new(v.span(), w.clone())),
                Some(_) => return Err(src.error(&v.span(), "`where` must be a table of FIELD = VALUE")),
            };
            selector_of(src, &Spanned::new(v.span(), kind.clone()), filter.as_ref())
        }
        _ => Err(bad()),
    }
}

fn selector_of(
    src: &Source,
    kind: &Spanned<String>,
    filter: Option<&Spanned<toml::Table>>,
) -> Result<crate::expect::Selector> {
    let k = kind.get_ref();
    if !crate::expect::KINDS.contains(&k.as_str()) {
        let near = crate::expect::KINDS.iter().find(|c| edit_distance(c, k) <= 2);
        let hint = near.map(|c| format!("; did you mean `{c}`?")).unwrap_or_default();
        return Err(
            src.error(&kind.span(), format!("unknown trace record kind `{k}` (docs/trace.md lists them){hint}"))
        );
    }
    let mut fields = BTreeMap::new();
    if let Some(f) = filter {
        for (key, value) in f.get_ref() {
            let json = match value {
                toml::Value::Table(_) | toml::Value::Array(_) | toml::Value::Datetime(_) => {
                    return Err(
                        src.error(&f.span(), format!("`where` value of `{key}` must be a string, number or boolean"))
                    );
                }
                v => serde_json::to_value(v).unwrap_or(serde_json::Value::Null),
            };
            fields.insert(key.clone(), json);
        }
    }
    Ok(crate::expect::Selector { kind: k.clone(), filter: fields })
}

/// `[machine] seed`: any `u64`. A TOML integer stops at 2^63 - 1, so a
/// larger seed is written as a string (decimal or `0x` hex).
enum RawSeed {
    Int(i64),
    Text(String),
}

impl<'de> Deserialize<'de> for RawSeed {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Seed;
        impl serde::de::Visitor<'_> for Seed {
            type Value = RawSeed;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a seed: an integer, or a string for seeds of 2^63 and above")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> std::result::Result<RawSeed, E> {
                Ok(RawSeed::Int(v))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> std::result::Result<RawSeed, E> {
                Ok(RawSeed::Text(v.to_string()))
            }
        }
        d.deserialize_any(Seed)
    }
}

/// The seed a `[machine] seed` value names, or why it names none.
fn seed_value(raw: &RawSeed) -> std::result::Result<u64, String> {
    match raw {
        RawSeed::Int(n) => u64::try_from(*n).map_err(|_| "seed must not be negative".to_string()),
        RawSeed::Text(t) => {
            let t = t.trim();
            let parsed = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => t.parse::<u64>(),
            };
            parsed.map_err(|_| {
                format!(
                    "seed `{}` is not a number from 0 to 18446744073709551615 (decimal, or hex with 0x)",
                    t.escape_debug()
                )
            })
        }
    }
}

fn merge_machine(m: &mut MachineSettings, src: &Source, raw: RawMachine) -> Result<()> {
    if let Some(seed) = raw.seed {
        m.seed = Some(seed_value(seed.get_ref()).map_err(|e| src.error(&seed.span(), e))?);
    }
    if let Some(order) = &raw.order {
        m.order = parsed(src, order)?;
    }
    if let Some(rate) = raw.inject_rate {
        let r = *rate.get_ref();
        if !(0.0..=1.0).contains(&r) {
            return Err(src.error(&rate.span(), format!("inject_rate must be between 0 and 1, got {r}")));
        }
        m.inject_rate = r;
    }
    if let Some(d) = raw.pct_depth {
        let v = *d.get_ref();
        if !(1..=MAX_PCT_DEPTH as i64).contains(&v) {
            return Err(src.error(&d.span(), format!("pct_depth must be from 1 to {MAX_PCT_DEPTH}, got {v}")));
        }
        m.pct_depth = v as u32;
    }
    if let Some(k) = raw.pct_steps {
        let v = *k.get_ref();
        if v < 1 {
            return Err(src.error(&k.span(), format!("pct_steps must be at least 1, got {v}")));
        }
        m.pct_steps = v as u64;
    }
    if let Some(until) = &raw.until {
        m.until = Some(bounded(src, "until", until, Duration::from_nanos(1), MAX_UNTIL)?);
    }
    if let Some(rt) = raw.realtime {
        m.realtime = rt;
    }
    if let Some(v) = &raw.violations {
        m.violations = parsed(src, v)?;
    }
    if let Some(w) = &raw.windows {
        m.windows_version = match w.get_ref().as_str() {
            "3.1" | "3.10" => (3, 10),
            "4.0" | "4.00" => (4, 0),
            other => {
                return Err(src.error(&w.span(), format!("unknown Windows version `{other}`: expected 3.1 or 4.0")));
            }
        };
    }
    if let Some(ts) = &raw.time_slice {
        m.time_slice = bounded(src, "time_slice", ts, Duration::from_micros(1), MAX_TIME_SLICE)?;
    }
    if let Some(step) = &raw.ring3_step {
        // A step of no time would let a program run forever at one instant.
        m.ring3_step = bounded(src, "ring3_step", step, Duration::from_nanos(1), MAX_RING3_STEP)?;
    }
    if let Some(t) = &raw.instruction_time {
        m.instruction_time = bounded(src, "instruction_time", t, Duration::from_nanos(1), MAX_INSTRUCTION_TIME)?;
    }
    if let Some(n) = &raw.v86_step {
        m.v86_step = u64::try_from(*n.get_ref()).ok().filter(|n| (1..=MAX_V86_STEP).contains(n)).ok_or_else(|| {
            src.error(
                &n.span(),
                format!("v86_step must be 1 to {MAX_V86_STEP} instructions per step, got {}", n.get_ref()),
            )
        })?;
    }
    if let Some(paths) = raw.plugin_path {
        m.plugin_path = paths.into_iter().map(|p| src.dir.join(p)).collect();
    }
    if let Some(b) = &raw.build {
        m.build = parsed(src, b)?;
    }
    if let Some(l) = raw.livelock_limit {
        m.livelock_limit = u64::try_from(*l.get_ref()).ok().filter(|&n| n >= 1).ok_or_else(|| {
            src.error(
                &l.span(),
                format!(
                    "livelock_limit must be at least 1 (units of work without virtual time advancing), got {}",
                    l.get_ref()
                ),
            )
        })?;
    }
    if let Some(l) = &raw.trace_limit {
        let bytes = match l.get_ref() {
            RawSize::Bytes(n) => u64::try_from(*n).map_err(|_| format!("trace_limit must not be negative, got {n}")),
            RawSize::Text(t) => parse_size(t).map_err(|e| format!("trace_limit: {e}")),
        }
        .map_err(|e| src.error(&l.span(), e))?;
        if bytes < MIN_TRACE_LIMIT {
            return Err(src.error(
                &l.span(),
                format!("trace_limit must be at least {MIN_TRACE_LIMIT} bytes (1KiB), got {bytes}"),
            ));
        }
        m.trace_limit = bytes;
    }
    if let Some(c) = &raw.com1 {
        m.com1 = parsed(src, c)?;
    }
    Ok(())
}

/// A `[machine]` duration `key` that must lie in `min..=max`.
fn bounded(src: &Source, key: &str, d: &Spanned<RawDuration>, min: Duration, max: Duration) -> Result<Duration> {
    let v = d.get_ref().parse().map_err(|e| src.error(&d.span(), format!("{key}: {e}")))?;
    if v.is_zero() {
        return Err(src.error(&d.span(), format!("{key} must be longer than 0")));
    }
    if v < min {
        return Err(src.error(&d.span(), format!("{key} must be at least {min}, got {v}")));
    }
    if v > max {
        return Err(src.error(&d.span(), format!("{key} must be at most {max}, got {v}")));
    }
    Ok(v)
}

fn device_entry(src: &Source, d: &Spanned<RawDevice>) -> Result<DeviceEntry> {
    let origin = src.origin(&d.span());
    let (name, dynamic) = match d.get_ref() {
        RawDevice::Name(n) => (n.clone(), false),
        RawDevice::Table(t) => (t.name.clone(), t.dynamic),
    };
    if name.trim().is_empty() || name == "*" {
        return Err(src.error(&d.span(), "empty device name"));
    }
    Ok(DeviceEntry { name, dynamic, origin })
}

fn profile_values(src: &Source, section: &str, key: &str, value: toml::Value) -> Result<Vec<String>> {
    let scalar = |v: toml::Value| -> Option<String> {
        match v {
            toml::Value::String(s) => Some(s),
            toml::Value::Integer(i) => Some(i.to_string()),
            toml::Value::Float(f) => Some(f.to_string()),
            toml::Value::Boolean(b) => Some(if b { "1" } else { "0" }.to_string()),
            _ => None,
        }
    };
    let bad = || {
        let span = find_key(&src.text, key);
        src.error(
            &span,
            format!("profile key [{section}] {key} must be a string, number, boolean or an array of those"),
        )
    };
    match value {
        toml::Value::Array(items) => items.into_iter().map(|v| scalar(v).ok_or_else(bad)).collect(),
        other => Ok(vec![scalar(other).ok_or_else(bad)?]),
    }
}

fn message_box_answer(v: &toml::Value) -> std::result::Result<u32, String> {
    const NAMES: [(&str, u32); 7] =
        [("IDOK", 1), ("IDCANCEL", 2), ("IDABORT", 3), ("IDRETRY", 4), ("IDIGNORE", 5), ("IDYES", 6), ("IDNO", 7)];
    match v {
        toml::Value::Integer(i) if (1..=7).contains(i) => Ok(*i as u32),
        toml::Value::String(s) => {
            NAMES.iter().find(|(n, _)| n.eq_ignore_ascii_case(s)).map(|(_, v)| *v).ok_or_else(|| {
                format!("unknown answer `{s}`: expected IDOK, IDCANCEL, IDABORT, IDRETRY, IDIGNORE, IDYES or IDNO")
            })
        }
        _ => Err("message_box_answer must be an ID* name or a number from 1 to 7".to_string()),
    }
}

/// Best-effort location of `key = ` in a text (for values whose spans serde
/// cannot keep).
fn find_key(text: &str, key: &str) -> Range<usize> {
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim_start();
        let bare = trimmed.trim_start_matches('"');
        if bare.starts_with(key) && bare[key.len()..].trim_start_matches('"').trim_start().starts_with('=') {
            let start = offset + (line.len() - trimmed.len());
            return start..start + key.len();
        }
        offset += line.len();
    }
    0..0
}

/// Best-effort location of a `[section]` header.
fn find_section(text: &str, section: &str) -> Range<usize> {
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let t = line.trim();
        if t.starts_with('[') && t.trim_matches(|c| c == '[' || c == ']').trim_matches('"') == section {
            let start = offset + (line.len() - line.trim_start().len());
            return start..start + t.len();
        }
        offset += line.len();
    }
    0..0
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb)).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Split a `*RUNDLL` command line `DLLNAME,Entry` into the DLL and the export name.
pub(crate) fn rundll_command_line(args: &str) -> std::result::Result<(&str, &str), String> {
    let args = args.trim();
    let Some((dll, entry)) = args.split_once(',') else {
        return Err(format!("`{args}` is not DLLNAME,Entry (for example HELLO.DLL,Hello)"));
    };
    let (dll, entry) = (dll.trim(), entry.trim());
    if dll.is_empty() || entry.is_empty() {
        return Err(format!("`{args}` is not DLLNAME,Entry (for example HELLO.DLL,Hello)"));
    }
    if entry.contains(char::is_whitespace) {
        return Err(format!(
            "`{args}`: arguments after the entry point are not supported (the entry gets lpszCmdLine NULL)"
        ));
    }
    Ok((dll, entry))
}

#[cfg(test)]
mod tests {
    #[test]
    fn program_files_are_named_with_com_or_exe() {
        for file in ["POSTDOS.COM", "postdos.exe", "dir/Hello.Exe"] {
            assert!(super::is_program_file(file), "{file}");
        }
        for module in ["POSTDOS", "POSTDOS.DLL", "libpostdos.so", "COM", "x.comx"] {
            assert!(!super::is_program_file(module), "{module}");
        }
    }

    use super::*;

    #[test]
    fn the_command_line_is_dll_comma_entry() {
        assert_eq!(rundll_command_line(" HELLO.DLL,Hello "), Ok(("HELLO.DLL", "Hello")));
        assert!(rundll_command_line("HELLO.DLL").unwrap_err().contains("DLLNAME,Entry"));
        assert!(rundll_command_line("HELLO.DLL,").is_err());
        assert!(rundll_command_line("HELLO.DLL,Hello now").unwrap_err().contains("lpszCmdLine"));
    }

    fn parse(text: &str) -> Result<Manifest> {
        ManifestBuilder::new().text("test.ini", text, ".").build()
    }

    #[test]
    fn a_seed_takes_the_whole_u64_range() {
        let top = parse("[machine]\nseed = \"18446744073709551615\"\n").unwrap();
        assert_eq!(top.machine.seed, Some(u64::MAX));
        let hex = parse("[machine]\nseed = \"0x8000000000000000\"\n").unwrap();
        assert_eq!(hex.machine.seed, Some(1 << 63));
        let int = parse("[machine]\nseed = 9223372036854775807\n").unwrap();
        assert_eq!(int.machine.seed, Some(i64::MAX as u64));
        let set = ManifestBuilder::new().set("machine.seed=18446744073709551615").build().unwrap();
        assert_eq!(set.machine.seed, Some(u64::MAX), "--set falls back to a string");
        for bad in ["seed = -1", "seed = \"18446744073709551616\"", "seed = \"seven\""] {
            let err = parse(&format!("[machine]\n{bad}\n")).unwrap_err();
            match err {
                Error::Manifest { line, message, .. } => {
                    assert_eq!(line, 2, "{message}");
                    assert!(message.contains("seed"), "{message}");
                }
                other => panic!("unexpected error {other}"),
            }
        }
    }

    #[test]
    fn expect_takes_none_count_and_same_count_and_appends_layers() {
        use crate::expect::Rule;
        let text = "[expect]\nnone = [\"violation\", { kind = \"note\", where = { note = \"post_dropped\", \"fields.post\" = 2 } }]\n\
                    count = [{ kind = \"vm_created\", equals = 2 }, { kind = \"message_delivered\", min = 1, max = 9 }]\n\
                    same_count = [[{ kind = \"note\", where = { note = \"post_queued\" } }, \"message_delivered\"]]\n";
        let m = ManifestBuilder::new().text("test.ini", text, ".").set("expect.none=[\"deadlock\"]").build().unwrap();
        assert_eq!(m.expect.len(), 6);
        let Rule::None(s) = &m.expect[1].rule else { panic!("{:?}", m.expect[1]) };
        assert_eq!((s.kind.as_str(), s.filter.len()), ("note", 2));
        assert_eq!(s.filter["fields.post"], serde_json::json!(2));
        assert!(matches!(&m.expect[3].rule, Rule::Count { equals: None, min: Some(1), max: Some(9), .. }));
        assert!(
            matches!(&m.expect[4].rule, Rule::SameCount(a, b) if a.kind == "note" && b.kind == "message_delivered")
        );
        assert_eq!((m.expect[2].origin.line, m.expect[2].origin.column), (3, 10));
        assert!(matches!(&m.expect[5].rule, Rule::None(s) if s.kind == "deadlock"), "--set appends");
    }

    #[test]
    fn bad_expect_shapes_name_file_line_and_column() {
        for (bad, line, column, want) in [
            ("nothing = []", 2, 1, "unknown field `nothing`"),
            ("none = [\"violations\"]", 2, 9, "did you mean `violation`?"),
            ("none = [3]", 2, 9, "a selection is a record kind"),
            ("none = [{ kind = \"note\", wher = {} }]", 2, 9, "unknown key `wher`"),
            ("none = [{ kind = \"note\", where = { fields = [1] } }]", 2, 9, "string, number or boolean"),
            ("count = [{ kind = \"note\" }]", 2, 10, "needs `equals`, `min` or `max`"),
            ("count = [{ kind = \"note\", equals = -1 }]", 2, 36, "must not be negative"),
            ("count = [{ kind = \"note\", min = 3, max = 2 }]", 2, 10, "min 3 is above max 2"),
            ("count = [{ kind = \"note\", equal = 2 }]", 2, 27, "unknown field `equal`"),
            ("same_count = [[\"note\"]]", 2, 15, "pairs of selections"),
        ] {
            match parse(&format!("[expect]\n{bad}\n")) {
                Err(Error::Manifest { file, line: l, column: c, message }) => {
                    assert_eq!((file.as_str(), l, c), ("test.ini", line, column), "{bad}: {message}");
                    assert!(message.contains(want), "{bad}: {message}");
                }
                other => panic!("{bad}: {other:?}"),
            }
        }
    }

    #[test]
    fn unknown_key_names_file_line_and_column() {
        let err = parse("[machine]\nseed = 1\nordr = \"lifo\"\n").unwrap_err();
        match err {
            Error::Manifest { file, line, column, message } => {
                assert_eq!((file.as_str(), line, column), ("test.ini", 3, 1));
                assert!(message.contains("unknown field `ordr`"), "{message}");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn later_layers_override_and_arrays_of_tables_append() {
        let m = ManifestBuilder::new()
            .text("a.ini", "[386Enh]\ndevice = [\"A\"]\n[[vm]]\nname = \"one\"\n[X]\nk = 1\nj = 2\n", ".")
            .text(
                "b.ini",
                "[386Enh]\ndevice = [\"B\", { name = \"C\", dynamic = true }]\n[[vm]]\nname = \"two\"\n[x]\nK = 3\n",
                ".",
            )
            .set("machine.seed=7")
            .set("X.j=\"hello\"")
            .build()
            .unwrap();
        let names: Vec<_> = m.devices.iter().map(|d| (d.name.as_str(), d.dynamic)).collect();
        assert_eq!(names, [("B", false), ("C", true)]);
        assert_eq!(m.vms.iter().map(|v| v.name.as_str()).collect::<Vec<_>>(), ["one", "two"]);
        assert_eq!(m.profile.values("x", "k").unwrap(), ["3"]);
        assert_eq!(m.profile.values("X", "J").unwrap(), ["hello"]);
        assert_eq!(m.machine.seed, Some(7));
        assert_eq!(m.devices[1].origin.file, "b.ini");
        assert_eq!(m.devices[1].origin.line, 2);
    }

    #[test]
    fn a_table_given_to_set_stays_the_value_of_its_key() {
        // Found by the manifest fuzz target: `--set machine.seed={ a = 1 }`
        // used to become a profile section [seed] and was accepted.
        let err = ManifestBuilder::new().set("machine.seed={ a = 1 }").build().unwrap_err().to_string();
        assert!(err.contains("--set #1") && err.contains("expected a seed"), "{err}");
        let m = ManifestBuilder::new().set("VCOUNTD.Start=[1, 2]").set("Odd.\"odd key\"=x").build().unwrap();
        assert_eq!(m.profile.values("vcountd", "start").unwrap(), ["1", "2"]);
        assert!(m.profile.keys().all(|(s, _)| s != "seed"));
    }

    #[test]
    fn set_without_section_is_an_error() {
        let err = ManifestBuilder::new().set("seed=1").build().unwrap_err();
        assert!(err.to_string().contains("SECTION.KEY"), "{err}");
    }

    #[test]
    fn near_miss_of_device_is_an_error() {
        let err = parse("[386Enh]\ndevices = [\"A\"]\n").unwrap_err();
        assert!(err.to_string().contains("did you mean `device`"), "{err}");
        assert!(err.to_string().contains("test.ini:2:1"), "{err}");
    }

    #[test]
    fn reserved_section_in_other_case_is_an_error() {
        let err = parse("[386enh]\ndevice = [\"A\"]\n").unwrap_err();
        assert!(err.to_string().contains("only in case"), "{err}");
    }

    #[test]
    fn durations_and_ranges_are_validated() {
        assert!(parse("[machine]\nuntil = \"5 parsecs\"\n").unwrap_err().to_string().contains("test.ini:2:9"));
        assert!(parse("[windows]\nqueue_size = 0\n").unwrap_err().to_string().contains("out of range"));
        assert_eq!(parse("[machine]\nuntil = \"1.5s\"\n").unwrap().machine.until, Some(Duration::from_millis(1500)));
        assert_eq!(parse("[machine]\nuntil = 250\n").unwrap().machine.until, Some(Duration::from_millis(250)));
    }

    #[test]
    fn com1_is_none_or_a_loopback_uart() {
        assert_eq!(parse("").unwrap().machine.com1, SerialPort::None);
        assert_eq!(parse("[machine]\ncom1 = \"loopback\"\n").unwrap().machine.com1, SerialPort::Loopback);
        assert_eq!(parse("[machine]\ncom1 = \"None\"\n").unwrap().machine.com1, SerialPort::None);
        let err = parse("[machine]\nseed = 1\ncom1 = \"modem\"\n").unwrap_err().to_string();
        assert!(err.contains(":3:") && err.contains("unknown com1 device `modem`"), "{err}");
        assert!(err.contains("loopback"), "{err}");
        let err = parse("[machine]\ncom1 = 1\n").unwrap_err().to_string();
        assert!(err.contains(":2:"), "{err}");
    }

    #[test]
    fn the_shell_section_takes_answers_and_the_message_server() {
        let m = parse("[shell]\nanswers = [\"IDYES\", 7]\nmessage_server = false\n[[vm]]\nwindowed = true\n").unwrap();
        assert_eq!(m.shell.answers, [6, 7]);
        assert!(!m.shell.message_server);
        assert!(m.vms[0].windowed);
        assert!(parse("").unwrap().shell.message_server, "on by default");
        let err = parse("[shell]\nanswers = [\"IDOK\", \"IDMAYBE\"]\n").unwrap_err().to_string();
        assert!(err.contains("test.ini:2:20") && err.contains("IDMAYBE"), "{err}");
        let err = parse("[shell]\nanswer = 1\n").unwrap_err().to_string();
        assert!(err.contains("unknown field `answer`"), "{err}");
    }

    #[test]
    fn profile_arrays_are_repeated_keys() {
        let m = parse("[386Enh]\ndevice = []\nKeyboardDelay = [\"1\", 2, true]\n").unwrap();
        assert_eq!(m.profile.values("386ENH", "keyboarddelay").unwrap(), ["1", "2", "1"]);
        // The device list is the repeated `device=` key, as in SYSTEM.INI.
        let m = parse("[386Enh]\ndevice = [\"*VPICD\", { name = \"VCOMD.386\", dynamic = true }]\n").unwrap();
        assert_eq!(m.profile.values("386Enh", "device").unwrap(), ["*VPICD", "VCOMD.386"]);
        let err = parse("[VPOSTD]\nnested = { a = 1 }\n").unwrap_err();
        assert!(err.to_string().contains("must be a string"), "{err}");
    }
}
