//! The test kit: boot machines from inline manifests and assert on their
//! trace. Used by this workspace's end-to-end tests and by plugin authors'
//! own tests (add `vmm-host` as a dev-dependency).
//!
//! ```no_run
//! use vmm_host::testkit::{Scenario, json};
//!
//! let run = Scenario::new(r#"
//!     [386Enh]
//!     device = ["vcountd"]
//!     [VCOUNTD]
//!     Start = 5
//! "#).run();
//! run.assert_ok();
//! run.trace().expect(json!({"kind": "control", "device": "VCOUNTD", "message": "Device_Init"}));
//! ```
//!
//! Plugins are found in [`plugin_dir`]: the build output of the cargo
//! workspace the test runs in, built once per test process with a nested
//! `cargo build` (cargo does not build `cdylib` crates for `cargo test`).
//! Set `VMM_PLUGIN_DIR` to use prebuilt plugins instead.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::OnceLock;

pub use serde_json::{Value, json};
use vmm_plugin_api::abi::PluginRoot_Ref;
use vmm_plugin_api::prelude::*;

use crate::error::Error;
use crate::machine::{Machine, MachineOptions};
use crate::manifest::ManifestBuilder;

/// The directory holding the workspace's plugins, built on first use.
///
/// Panics with cargo's output if the build fails: a test cannot proceed
/// without its plugins.
pub fn plugin_dir() -> &'static Path {
    static DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let dir = DIR.get_or_init(|| {
        if let Some(dir) = std::env::var_os("VMM_PLUGIN_DIR") {
            return Ok(PathBuf::from(dir));
        }
        let start = std::env::var_os("CARGO_MANIFEST_DIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
        build_workspace_plugins(&start)
    });
    match dir {
        Ok(d) => d,
        Err(e) => panic!("cannot build the plugins for the tests: {e}"),
    }
}

/// Build every `cdylib` package of the workspace containing `dir`; the
/// directory of the artifacts.
pub fn build_workspace_plugins(dir: &Path) -> Result<PathBuf, String> {
    let (root, packages) = crate::cargo::workspace_plugins(dir)?;
    let names: Vec<String> = packages.iter().map(|p| p.package.clone()).collect();
    let artifacts = crate::cargo::build(&root, &names, !cfg!(debug_assertions))?;
    artifacts
        .values()
        .next()
        .and_then(|p| p.parent())
        .map(Path::to_path_buf)
        .ok_or_else(|| "the workspace has no cdylib plugins".to_string())
}

/// A machine to run, from inline manifest text plus overrides.
#[derive(Clone, Default)]
pub struct Scenario {
    texts: Vec<String>,
    sets: Vec<String>,
    plugin_dirs: Vec<PathBuf>,
    in_process: Vec<(String, PluginRoot_Ref)>,
    script: Option<Script>,
    script_api: Option<ScriptApi>,
    no_trace: bool,
}

impl std::fmt::Debug for Scenario {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scenario")
            .field("texts", &self.texts)
            .field("sets", &self.sets)
            .field("plugin_dirs", &self.plugin_dirs)
            .field("in_process", &self.in_process.iter().map(|(n, _)| n).collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Scenario {
    /// A scenario from manifest text (TOML `system.ini`).
    pub fn new(manifest: &str) -> Self {
        Scenario { texts: vec![manifest.to_string()], ..Scenario::default() }
    }

    /// Add a later manifest layer (it overrides the earlier ones).
    pub fn layer(mut self, manifest: &str) -> Self {
        self.texts.push(manifest.to_string());
        self
    }

    /// Add a `SECTION.KEY=VALUE` override.
    pub fn set(mut self, assignment: &str) -> Self {
        self.sets.push(assignment.to_string());
        self
    }

    /// Search `dir` for plugins before the workspace's build output.
    pub fn plugin_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.plugin_dirs.push(dir.into());
        self
    }

    /// Do not keep trace records (for benchmarks and long soaks).
    pub fn without_trace(mut self) -> Self {
        self.no_trace = true;
        self
    }

    /// Link device `D` into the machine: the manifest names it by its DDB
    /// name, no plugin file is involved.
    pub fn device<D: VxD>(mut self) -> Self {
        self.in_process.push((D::DEVICE.name.to_string(), vmm_plugin_api::device::in_process::<D>()));
        self
    }

    /// Give the `SCRIPT` test device (see [`ScriptDevice`]) its control
    /// procedure. List `SCRIPT` in the manifest's device list.
    pub fn script(mut self, control: impl Fn(&ScriptDevice, &Vmm<'_>, ControlMessage) -> Carry + 'static) -> Self {
        self.script = Some(Rc::new(control));
        if !self.in_process.iter().any(|(n, _)| n == "SCRIPT") {
            self = self.device::<ScriptDevice>();
        }
        self
    }

    /// Give the `SCRIPT` device its V86 and PM API procedure.
    pub fn script_api(mut self, api: impl Fn(&ScriptDevice, &Vmm<'_>, ApiCall<'_>) + 'static) -> Self {
        self.script_api = Some(Rc::new(api));
        if self.script.is_none() {
            self = self.script(|_, _, _| Carry::Clear);
        }
        self
    }

    /// Link ring-3 module `M` (a DLL, application or DOS program) into the
    /// machine under its module name.
    pub fn module<M: Module>(mut self) -> Self {
        self.in_process.push((M::MODULE.name.to_string(), vmm_plugin_api::ring3::in_process::<M>()));
        self
    }

    /// Build the machine without booting it.
    pub fn machine(&self) -> Result<Machine, Error> {
        let mut b = ManifestBuilder::new();
        for (i, t) in self.texts.iter().enumerate() {
            b = b.text(format!("manifest#{}", i + 1), t.clone(), ".");
        }
        for s in &self.sets {
            b = b.set(s.clone());
        }
        let manifest = b.build()?;
        let mut plugin_dirs = self.plugin_dirs.clone();
        if self.needs_plugin_files(&manifest) {
            plugin_dirs.push(plugin_dir().to_path_buf());
        }
        NEXT_SCRIPT.with(|s| *s.borrow_mut() = (self.script.clone(), self.script_api.clone()));
        Ok(Machine::new(
            manifest,
            MachineOptions {
                capture_trace: !self.no_trace,
                trace: None,
                plugin_dirs,
                in_process: self.in_process.clone(),
            },
        ))
    }

    /// Whether the manifest names a plugin that is not linked in (so the
    /// workspace's plugins must be built).
    fn needs_plugin_files(&self, m: &crate::manifest::Manifest) -> bool {
        let linked = |n: &str| {
            let lib = crate::resolve::library_name(n);
            self.in_process.iter().any(|(name, _)| crate::resolve::library_name(name) == lib)
        };
        m.devices.iter().any(|d| d.builtin().is_none() && !linked(&d.name))
            || m.tsr.iter().any(|t| !linked(&t.device))
            || m.windows.load.iter().any(|(n, _)| !linked(n.split(' ').next().unwrap_or(n)))
            || m.vms.iter().filter_map(|v| v.program.as_deref()).any(|p| !linked(p))
            || m.programs.values().any(|p| !linked(&p.module))
    }

    /// Boot, run to the end and shut down; never panics on machine errors
    /// (they are in [`Run::error`]).
    pub fn run(&self) -> Run {
        let mut machine = match self.machine() {
            Ok(m) => m,
            Err(e) => return Run { error: Some(e), trace: Trace::default(), violations: 0 },
        };
        let mut result = machine.boot();
        if result.is_ok() {
            result = machine.run().map(|_| ());
        }
        if result.is_ok() {
            result = machine.shutdown();
        }
        Run { error: result.err(), trace: Trace::of(&machine), violations: machine.violation_count() }
    }
}

/// The outcome of [`Scenario::run`].
#[derive(Debug)]
pub struct Run {
    error: Option<Error>,
    trace: Trace,
    violations: u64,
}

impl Run {
    /// The error the machine stopped with, if any.
    pub fn error(&self) -> Option<&Error> {
        self.error.as_ref()
    }

    /// The error, or a panic naming the trace's last records.
    pub fn expect_error(&self) -> &Error {
        match &self.error {
            Some(e) => e,
            None => panic!("expected the run to fail, but it succeeded\n{}", self.trace.tail(20)),
        }
    }

    /// Panic (with the error and the end of the trace) unless the run
    /// succeeded.
    pub fn assert_ok(&self) {
        if let Some(e) = &self.error {
            panic!("the run failed: {e}\n{}", self.trace.tail(20));
        }
    }

    /// The trace.
    pub fn trace(&self) -> &Trace {
        &self.trace
    }

    /// How many violations were reported.
    pub fn violations(&self) -> u64 {
        self.violations
    }
}

/// A trace as JSON values, exactly as `--trace` writes them, with queries.
#[derive(Clone, Debug, Default)]
pub struct Trace {
    records: Vec<Value>,
}

/// Whether `record` has every field of `pattern` with an equal value
/// (objects match recursively by subset).
pub fn matches(record: &Value, pattern: &Value) -> bool {
    match (record, pattern) {
        (Value::Object(r), Value::Object(p)) => p.iter().all(|(k, v)| r.get(k).is_some_and(|rv| matches(rv, v))),
        (r, p) => r == p,
    }
}

impl Trace {
    /// The trace of a machine (with `capture_trace`).
    pub fn of(machine: &Machine) -> Self {
        Trace { records: machine.trace().iter().map(|r| serde_json::to_value(r).unwrap_or(Value::Null)).collect() }
    }

    /// All records.
    pub fn records(&self) -> &[Value] {
        &self.records
    }

    /// Records containing every field of `pattern`.
    pub fn matching(&self, pattern: Value) -> Vec<&Value> {
        self.records.iter().filter(|r| matches(r, &pattern)).collect()
    }

    /// How many records match.
    pub fn count(&self, pattern: Value) -> usize {
        self.matching(pattern).len()
    }

    /// The first matching record, or a panic showing the nearest records of
    /// the same kind.
    pub fn expect(&self, pattern: Value) -> &Value {
        match self.records.iter().find(|r| matches(r, &pattern)) {
            Some(r) => r,
            None => panic!("no trace record matches {pattern}\n{}", self.near(&pattern)),
        }
    }

    /// Panic if any record matches.
    pub fn expect_none(&self, pattern: Value) {
        if let Some(r) = self.records.iter().find(|r| matches(r, &pattern)) {
            panic!("expected no record matching {pattern}, found {r}");
        }
    }

    /// Assert that records matching `patterns` appear in this order (other
    /// records may come between them).
    pub fn expect_in_order(&self, patterns: &[Value]) {
        let mut at = 0;
        for (i, p) in patterns.iter().enumerate() {
            match self.records[at..].iter().position(|r| matches(r, p)) {
                Some(pos) => at += pos + 1,
                None => panic!(
                    "pattern #{i} {p} does not occur after the records matched so far (position {at})\n{}",
                    self.near(p)
                ),
            }
        }
    }

    /// The values of `field` in the records matching `pattern`.
    pub fn values(&self, pattern: Value, field: &str) -> Vec<Value> {
        self.matching(pattern).into_iter().filter_map(|r| r.get(field).cloned()).collect()
    }

    fn near(&self, pattern: &Value) -> String {
        let kind = pattern.get("kind");
        let same: Vec<&Value> = self.records.iter().filter(|r| kind.is_none() || r.get("kind") == kind).collect();
        let mut s = format!("{} record(s) of that kind:\n", same.len());
        for r in same.iter().take(30) {
            let _ = writeln!(s, "  {r}");
        }
        s
    }

    /// The last `n` records, one per line.
    pub fn tail(&self, n: usize) -> String {
        let mut s = String::from("last trace records:\n");
        for r in self.records.iter().rev().take(n).collect::<Vec<_>>().into_iter().rev() {
            let _ = writeln!(s, "  {r}");
        }
        s
    }
}

/// The control procedure of a [`ScriptDevice`].
pub type Script = Rc<dyn Fn(&ScriptDevice, &Vmm<'_>, ControlMessage) -> Carry>;

/// The API procedure of a [`ScriptDevice`].
pub type ScriptApi = Rc<dyn Fn(&ScriptDevice, &Vmm<'_>, ApiCall<'_>)>;

thread_local! {
    static NEXT_SCRIPT: RefCell<(Option<Script>, Option<ScriptApi>)> = const { RefCell::new((None, None)) };
}

/// A device whose control procedure is a closure given by the test
/// ([`Scenario::script`]), for scenario tests of VMM services: the closure
/// calls services, registers callbacks (which receive the device back), and
/// records what happened with [`ScriptDevice::note`], which lands in the
/// trace as a `debug_string` record of device `SCRIPT`.
///
/// Its DDB: name `SCRIPT`, ID 0x3FF0, a V86 and a PM API, services
/// `SCRIPT_Get_Version` and `SCRIPT_Note` (EAX = a number to note).
pub struct ScriptDevice {
    control: Option<Script>,
    api: Option<ScriptApi>,
    /// Scratch state for the script: handles, counters.
    pub state: RefCell<Vec<u32>>,
}

impl ScriptDevice {
    /// Record `text` in the trace (`debug_string`, device `SCRIPT`).
    pub fn note(&self, vmm: &Vmm<'_>, text: impl AsRef<str>) {
        vmm.out_debug_string(text.as_ref());
    }
}

impl VxD for ScriptDevice {
    const DEVICE: Device =
        Device::new("SCRIPT").id(0x3FF0).v86_api().pm_api().services(&["SCRIPT_Get_Version", "SCRIPT_Note"]);

    fn create(_vmm: &Vmm<'_>) -> Result<Self, String> {
        let (control, api) = NEXT_SCRIPT.with(|s| s.borrow().clone());
        Ok(ScriptDevice { control, api, state: RefCell::new(Vec::new()) })
    }

    fn control(&self, vmm: &Vmm<'_>, msg: ControlMessage) -> Carry {
        match &self.control {
            Some(script) => script(self, vmm, msg),
            None => Carry::Clear,
        }
    }

    fn v86_api(&self, vmm: &Vmm<'_>, call: ApiCall<'_>) {
        match &self.api {
            Some(api) => api(self, vmm, call),
            None => call.client.set_carry(true),
        }
    }

    fn pm_api(&self, vmm: &Vmm<'_>, call: ApiCall<'_>) {
        self.v86_api(vmm, call)
    }

    fn service(&self, vmm: &Vmm<'_>, ordinal: u16, call: &mut ServiceCall) -> Carry {
        if ordinal == 1 {
            self.note(vmm, format!("note {}", call.regs.eax));
            return Carry::Clear;
        }
        Carry::Set
    }
}
