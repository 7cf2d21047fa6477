//! The test kit: boot machines from inline manifests, drive them, and assert
//! on their trace. Used by this workspace's end-to-end tests and by plugin
//! authors' own tests: add `vmm-host` as a dev-dependency.
//!
//! ```no_run
//! use vmm_testkit::{Duration, Scenario, json};
//!
//! // The whole run: boot, run to the end, shut down.
//! let run = Scenario::new(r#"
//!     [386Enh]
//!     device = ["vcountd"]
//!     [VCOUNTD]
//!     Start = 5
//! "#).run();
//! run.assert_ok();
//! run.trace().expect(json!({"kind": "control", "device": "VCOUNTD", "message": "Device_Init"}));
//!
//! // Step by step: boot, drive time, look, go on.
//! let mut s = Scenario::new("[386Enh]\ndevice = [\"vcountd\"]").boot();
//! s.run_until(Duration::from_millis(50));
//! assert_eq!(s.now(), Duration::from_millis(50));
//! s.finish().assert_ok();
//! ```
//!
//! **Where plugins come from.** A plugin crate's own tests call
//! [`Scenario::this_crate`]: the kit builds the crate's `cdylib` (and the
//! DLLs it declares in `[package.metadata.vmm] uses`) once per test process
//! with a nested `cargo build`, since cargo does not build `cdylib` crates
//! for `cargo test`. Otherwise plugins are found in [`plugin_dir`], the
//! build output of the workspace the test runs in. Set `VMM_PLUGIN_DIR` to
//! use prebuilt plugins instead. Devices and ring-3 modules can also be
//! linked into the test itself ([`Scenario::device`], [`Scenario::module`]),
//! with no plugin file at all.
//!
//! **Isolation.** Every [`Scenario`] boots its own machine; nothing is shared
//! between tests but the per-process cache of plugin builds. It works the
//! same under `cargo test` (tests on threads of one process) and
//! cargo-nextest (one process per test).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::{Arc, Mutex, OnceLock};

pub use serde_json::{Value, json};
pub use vmm_host::explore::{Schedule, Strategy};
use vmm_plugin_api::abi::PluginRoot_Ref;
pub use vmm_plugin_api::abi::{ApiMode, ClientRegs, Regs, ServiceCall};
use vmm_plugin_api::prelude::*;

/// The most runs `Scenario::explore` spends shrinking a failure.
const SHRINK_RUNS: u64 = 200;

use vmm_host::error::Error;
use vmm_host::machine::{Machine, MachineOptions, RunEnd};
use vmm_host::manifest::ManifestBuilder;
use vmm_host::resolve::SearchPath;
pub use vmm_host::time::Duration;

/// The cargo profile the kit builds plugins with: the one the tests
/// themselves were built with (`dev` for `cargo test`, `release` for
/// `cargo test --release`).
const KIT_PROFILE: &str = if cfg!(debug_assertions) { "dev" } else { "release" };

/// The directory holding the plugins of the workspace the test runs in,
/// built on first use (once per process).
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
    let (root, packages) = vmm_host::cargo::workspace_plugins(dir)?;
    let names: Vec<String> = packages.iter().map(|p| p.package.clone()).collect();
    artifact_dir(vmm_host::cargo::build(&root, &names, KIT_PROFILE, vmm_host::cargo::Progress::Capture)?)
}

/// Build the plugin crate in `dir` (the directory of its `Cargo.toml`) and
/// the DLLs it declares in `[package.metadata.vmm] uses`; the directory of
/// the artifacts. Each crate is built once per process (later calls return
/// the first result); concurrent builds wait for each other on cargo's lock.
pub fn plugin_crate_dir(dir: &Path) -> Result<PathBuf, String> {
    type Slot = Arc<OnceLock<Result<PathBuf, String>>>;
    static BUILT: Mutex<BTreeMap<PathBuf, Slot>> = Mutex::new(BTreeMap::new());
    let key = dir.canonicalize().map_err(|e| format!("plugin crate {}: {e}", dir.display()))?;
    let slot = BUILT.lock().unwrap_or_else(|p| p.into_inner()).entry(key.clone()).or_default().clone();
    slot.get_or_init(|| {
        let (root, packages) = vmm_host::cargo::crate_plugins(&key)?;
        let names: Vec<String> = packages.iter().map(|p| p.package.clone()).collect();
        artifact_dir(vmm_host::cargo::build(&root, &names, KIT_PROFILE, vmm_host::cargo::Progress::CaptureWithTests)?)
    })
    .clone()
}

/// The directory cargo put the `cdylib` artifacts in.
fn artifact_dir(artifacts: BTreeMap<String, PathBuf>) -> Result<PathBuf, String> {
    artifacts
        .values()
        .next()
        .and_then(|p| p.parent())
        .map(Path::to_path_buf)
        .ok_or_else(|| "cargo built no cdylib plugins".to_string())
}

/// A machine to run, from inline manifest text plus overrides. Each
/// scenario is independent: two tests can boot different device sets from
/// their own inline manifests, with no file on disk.
#[derive(Clone, Default)]
pub struct Scenario {
    texts: Vec<String>,
    sets: Vec<String>,
    plugin_dirs: Vec<PathBuf>,
    plugin_crates: Vec<PathBuf>,
    in_process: Vec<(String, PluginRoot_Ref)>,
    script: Option<Script>,
    script_api: Option<ScriptApi>,
    no_trace: bool,
    schedule: Option<vmm_host::explore::Schedule>,
    record_schedule: bool,
}

impl std::fmt::Debug for Scenario {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scenario")
            .field("texts", &self.texts)
            .field("sets", &self.sets)
            .field("plugin_dirs", &self.plugin_dirs)
            .field("plugin_crates", &self.plugin_crates)
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

    /// Answer SHELL's message boxes, the contention dialog of
    /// `SHELL_Resolve_Contention` among them, with `answers` in order
    /// (`"IDYES"`, `"IDNO"`, ... or `"6"`): `[shell] answers` in a layer of
    /// its own. Past the last one, `[windows] message_box_answer` answers.
    pub fn shell_answers(self, answers: &[&str]) -> Self {
        let list: Vec<String> = answers
            .iter()
            .map(|a| if a.chars().all(|c| c.is_ascii_digit()) { a.to_string() } else { format!("{a:?}") })
            .collect();
        self.layer(&format!("[shell]\nanswers = [{}]\n", list.join(", ")))
    }

    /// Search `dir` for plugins before the workspace's build output.
    pub fn plugin_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.plugin_dirs.push(dir.into());
        self
    }

    /// Load plugins from the crate in `dir` (the directory of its
    /// `Cargo.toml`), built when the machine is created (once per process,
    /// see [`plugin_crate_dir`]) with the DLLs it declares in
    /// `[package.metadata.vmm] uses`. Its output is searched before the
    /// workspace's; the workspace's plugins are built only if the manifest
    /// names one the crate does not provide.
    pub fn plugin_crate(mut self, dir: impl Into<PathBuf>) -> Self {
        self.plugin_crates.push(dir.into());
        self
    }

    /// [`Scenario::plugin_crate`] for the crate whose tests are running: the
    /// plugin under test. Reads `CARGO_MANIFEST_DIR`, which `cargo test` and
    /// cargo-nextest set for test processes.
    #[track_caller]
    pub fn this_crate(self) -> Self {
        match std::env::var_os("CARGO_MANIFEST_DIR") {
            Some(dir) => self.plugin_crate(PathBuf::from(dir)),
            None => panic!(
                "Scenario::this_crate needs CARGO_MANIFEST_DIR, which cargo test and cargo nextest set; \
                 outside them use Scenario::plugin_crate(env!(\"CARGO_MANIFEST_DIR\"))"
            ),
        }
    }

    /// Do not keep trace records (for benchmarks and long soaks).
    pub fn without_trace(mut self) -> Self {
        self.no_trace = true;
        self
    }

    /// Replay `schedule` (a `.schedule` file's [`Schedule::parse`]d text,
    /// as `vmm run --schedule` does): its order and seed, and its
    /// decisions at their steps.
    ///
    /// [`Schedule::parse`]: vmm_host::explore::Schedule::parse
    pub fn replay(mut self, schedule: vmm_host::explore::Schedule) -> Self {
        self.schedule = Some(schedule);
        self
    }

    /// Record the run's decisions that differ from the default order
    /// ([`Run::schedule`]).
    pub fn recording(mut self) -> Self {
        self.record_schedule = true;
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
        let (manifest, options) = self.parts()?;
        Ok(Machine::new(manifest, options))
    }

    /// Run the scenario under every seed of `seeds` in random order (as
    /// `vmm explore` does, on this thread: the scenario's scripts and linked
    /// devices stay on it). A run fails on a violation, a plugin panic, a
    /// fatal error (deadlock and livelock included) or a broken `[expect]`;
    /// the first failing seed panics with its failure, the `Scenario::set`
    /// calls and the `vmm run` flags that replay it, and its shrunk
    /// schedule. Returns how many runs passed.
    #[track_caller]
    pub fn explore(&self, seeds: std::ops::Range<u64>) -> u64 {
        self.explore_with(Strategy::Random, seeds)
    }

    /// [`Scenario::explore`] with a strategy: `Strategy::Random`, or
    /// `Strategy::pct(depth)` (its steps measured first, as `vmm explore
    /// --strategy pct` does).
    #[track_caller]
    pub fn explore_with(&self, strategy: Strategy, seeds: std::ops::Range<u64>) -> u64 {
        let parts = || match self.parts() {
            Ok((_, options)) => options,
            Err(e) => panic!("the machine cannot be built: {e}"),
        };
        let manifest = match self.parts() {
            Ok((manifest, _)) => manifest,
            Err(e) => panic!("the machine cannot be built: {e}"),
        };
        let strategy = match strategy {
            Strategy::Pct { depth, steps: None } => match vmm_host::explore::calibrate(&manifest, &parts) {
                Ok(steps) => Strategy::Pct { depth, steps: Some(steps) },
                Err(e) => panic!("the machine cannot run: {e}"),
            },
            s => s,
        };
        let mut runs = 0;
        for seed in seeds {
            match vmm_host::explore::run_seed_with(&manifest, strategy, seed, parts(), None) {
                Ok(None) => runs += 1,
                Ok(Some(f)) => {
                    let sets: String = strategy.settings(seed).iter().map(|s| format!(".set(\"{s}\")")).collect();
                    let shrunk = match vmm_host::explore::shrink(&manifest, strategy, &f, SHRINK_RUNS, &parts) {
                        Ok(Some(s)) => {
                            let (c0, i0) = s.original.sizes();
                            let (c1, i1) = s.schedule.sizes();
                            format!(
                                "\nshrunk: {c0} choice(s) and {i0} injected interrupt(s) -> {c1} and {i1}; \
                                 save this as a file and replay it with vmm run MANIFEST --schedule FILE:\n{}",
                                s.schedule.to_text()
                            )
                        }
                        Ok(None) => "\n(the failure did not repeat when recorded: not shrunk)".to_string(),
                        Err(e) => format!("\n(shrinking failed: {e})"),
                    };
                    panic!(
                        "seed {seed} fails after {runs} passing run(s): {}: {}\nreplay: scenario{sets}.run() \
                         (or vmm run MANIFEST {}){shrunk}",
                        f.signature,
                        f.message,
                        strategy.run_flags(seed)
                    )
                }
                Err(e) => panic!("seed {seed}: the machine cannot run: {e}"),
            }
        }
        runs
    }

    /// The merged manifest and the machine options of one machine.
    fn parts(&self) -> Result<(vmm_host::manifest::Manifest, MachineOptions), Error> {
        let mut b = ManifestBuilder::new();
        for (i, t) in self.texts.iter().enumerate() {
            b = b.text(format!("manifest#{}", i + 1), t.clone(), ".");
        }
        for s in &self.sets {
            b = b.set(s.clone());
        }
        let manifest = b.build()?;
        let mut plugin_dirs = self.plugin_dirs.clone();
        for c in &self.plugin_crates {
            plugin_dirs.push(plugin_crate_dir(c).map_err(Error::Build)?);
        }
        if self.needs_workspace_plugins(&manifest, &plugin_dirs) {
            plugin_dirs.push(plugin_dir().to_path_buf());
        }
        NEXT_SCRIPT.with(|s| *s.borrow_mut() = (self.script.clone(), self.script_api.clone()));
        let mut in_process = self.in_process.clone();
        in_process.push((KIT_PM.to_string(), vmm_plugin_api::ring3::in_process::<ApiCaller<true>>()));
        in_process.push((KIT_V86.to_string(), vmm_plugin_api::ring3::in_process::<ApiCaller<false>>()));
        Ok((
            manifest,
            MachineOptions {
                capture_trace: !self.no_trace,
                trace: None,
                plugin_dirs,
                in_process,
                schedule: self.schedule.clone(),
                record_schedule: self.record_schedule,
            },
        ))
    }

    /// Whether the workspace's plugins must be built: the manifest names a
    /// plugin that is neither linked in nor (with plugin crates) found in
    /// the directories given, or has VXDLDR, which can load any plugin by
    /// name while the machine runs.
    fn needs_workspace_plugins(&self, m: &vmm_host::manifest::Manifest, dirs: &[PathBuf]) -> bool {
        if self.plugin_crates.is_empty()
            && m.devices.iter().any(|d| d.builtin().is_some_and(|b| b.eq_ignore_ascii_case("VXDLDR")))
        {
            return true;
        }
        let linked = |n: &str| {
            let lib = vmm_host::resolve::library_name(n);
            self.in_process.iter().any(|(name, _)| vmm_host::resolve::library_name(name) == lib)
        };
        let mut files = m.plugin_names().into_iter().filter(|n| !linked(n)).peekable();
        if self.plugin_crates.is_empty() {
            return files.peek().is_some();
        }
        let mut search = SearchPath::default();
        for d in dirs.iter().rev() {
            search.prepend(d.clone());
        }
        files.any(|n| search.find(&n).is_none())
    }

    /// Boot, run to the end and shut down; never panics on machine errors
    /// (they are in [`Run::error`]).
    pub fn run(&self) -> Run {
        let mut machine = match self.machine() {
            Ok(m) => m,
            Err(e) => return Run { error: Some(e), trace: Trace::default(), violations: 0, schedule: None },
        };
        let mut result = machine.boot();
        if result.is_ok() {
            result = machine.run().map(|_| ());
        }
        if result.is_ok() {
            result = machine.shutdown();
        }
        Run::of(&machine, result.err())
    }

    /// Boot the machine and hand it over for driving step by step (see
    /// [`Session`]). Panics with the error and the end of the trace if the
    /// machine cannot be built or does not boot: test a failing boot with
    /// [`Scenario::run`].
    #[track_caller]
    pub fn boot(&self) -> Session {
        let mut machine = match self.machine() {
            Ok(m) => m,
            Err(e) => panic!("the machine cannot be built: {e}"),
        };
        if let Err(e) = machine.boot() {
            panic!("the machine did not boot: {e}\n{}", Trace::of(&machine).tail(20));
        }
        Session { machine }
    }
}

/// A booted machine driven by the test: move virtual time, raise
/// interrupts, create VMs, start programs, call services and APIs, and look
/// at the trace at any point. [`Session::finish`] runs it to the end and
/// returns the [`Run`].
///
/// Methods that drive the machine panic (with the error and the end of the
/// trace) if it stops with a fatal error; [`Session::machine`] gives the
/// [`Machine`] itself for tests that expect one.
pub struct Session {
    machine: Machine,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").field("now", &self.now()).finish_non_exhaustive()
    }
}

impl Session {
    /// Virtual time since boot.
    pub fn now(&self) -> Duration {
        Duration::from_nanos(self.machine.now().as_nanos())
    }

    /// Run for `d` of virtual time.
    #[track_caller]
    pub fn run_for(&mut self, d: Duration) -> &mut Self {
        let r = self.machine.run_for(d).map(|_| ());
        self.check(r)
    }

    /// Run until virtual time `t` (since boot); nothing happens if it has
    /// passed.
    #[track_caller]
    pub fn run_until(&mut self, t: Duration) -> &mut Self {
        let d = t.saturating_sub(self.now());
        if d.is_zero() {
            return self;
        }
        self.run_for(d)
    }

    /// Raise the interrupt source a device registered as `name` and run the
    /// machine for 1 ns: its handler runs at once, and so do the events it
    /// schedules for a VM that can take them then.
    #[track_caller]
    pub fn raise_interrupt(&mut self, name: &str) -> &mut Self {
        let r = self.machine.raise_interrupt(name);
        self.check(r);
        self.run_for(Duration::from_nanos(1))
    }

    /// Assert physical IRQ `irq` (VPICD must be loaded) and run the
    /// machine for 1 ns: the virtualizing devices' `Hw_Int` procedures run
    /// at once, and the virtual interrupt reaches a VM that can take it.
    #[track_caller]
    pub fn raise_irq(&mut self, irq: u8) -> &mut Self {
        let r = self.machine.raise_physical_irq(irq);
        self.check(r);
        self.run_for(Duration::from_nanos(1))
    }

    /// Stop asserting physical IRQ `irq` (VPICD must be loaded) and run
    /// the machine for 1 ns. On a level-triggered line (`[[irq]] trigger =
    /// "level"`) the request drops, so the next `VPICD_Phys_EOI` does not
    /// take the interrupt again; on an edge-triggered line (the default)
    /// nothing changes.
    #[track_caller]
    pub fn lower_irq(&mut self, irq: u8) -> &mut Self {
        let r = self.machine.lower_physical_irq(irq);
        self.check(r);
        self.run_for(Duration::from_nanos(1))
    }

    /// The system VM's handle.
    #[track_caller]
    pub fn system_vm(&self) -> u32 {
        self.vm("system").unwrap_or_else(|| panic!("the machine has no system VM"))
    }

    /// The handle of the VM named `name` (`system`, or a `[[vm]]` or
    /// [`Session::create_vm`] name).
    pub fn vm(&self, name: &str) -> Option<u32> {
        self.machine.vm(name)
    }

    /// Create a DOS VM now; `None` if a device refused it (the trace says
    /// which).
    #[track_caller]
    pub fn create_vm(&mut self, name: &str) -> Option<u32> {
        let vm = self.machine.create_vm(name);
        self.check(Ok(()));
        vm
    }

    /// Start a ring-3 program now: a Windows application in the system VM,
    /// a DOS program in a DOS VM. It takes its first step when time is
    /// driven. `None` if it could not be loaded.
    #[track_caller]
    pub fn start_program(&mut self, vm: u32, program: &str, args: &str) -> Option<u32> {
        let id = self.machine.start_program(vm, program, args);
        self.check(Ok(()));
        id
    }

    /// Enable or disable a VM's interrupts (STI / CLI).
    pub fn set_interrupts(&mut self, vm: u32, enabled: bool) -> &mut Self {
        self.machine.set_interrupts(vm, enabled);
        self
    }

    /// `VxDCall (device_id << 16) | ordinal` from outside the machine with
    /// `regs`; the registers afterwards (CF in `flags`).
    #[track_caller]
    pub fn call_service(&mut self, device_id: u16, ordinal: u16, regs: Regs) -> Regs {
        let mut call = ServiceCall { regs, args: [0; 8] };
        let r = self.machine.call_service(((device_id as u32) << 16) | ordinal as u32, &mut call);
        self.check(r);
        call.regs
    }

    /// Call device `device_id`'s PM API the way a Windows application does:
    /// INT 2Fh AX=1684h for the entry point, then a far call with `regs`
    /// (general registers, ES, DS, FS, GS and the arithmetic flags). The
    /// caller's registers afterwards, or `None` if INT 2Fh returned a null
    /// entry (no such device, or no PM API). Virtual time moves on while
    /// the caller, a task of the system VM, gets its turn. The caller is
    /// the kit's application `KITPM` (its DOS twin is `KITV86`), linked
    /// into every machine the kit builds; its `program_started`,
    /// `int2f`, `api_call` and `program_ended` records are in the trace.
    #[track_caller]
    pub fn call_pm_api(&mut self, device_id: u16, regs: ClientRegs) -> Option<ClientRegs> {
        self.call_api(ApiMode::Pm, device_id, regs)
    }

    /// [`Session::call_pm_api`] for the V86 API, from a DOS program in a new
    /// DOS VM (destroyed when it ends).
    #[track_caller]
    pub fn call_v86_api(&mut self, device_id: u16, regs: ClientRegs) -> Option<ClientRegs> {
        self.call_api(ApiMode::V86, device_id, regs)
    }

    /// Call a device's API in `mode` (see [`Session::call_pm_api`]).
    #[track_caller]
    pub fn call_api(&mut self, mode: ApiMode, device_id: u16, regs: ClientRegs) -> Option<ClientRegs> {
        match self.try_call_api(mode, device_id, regs) {
            Ok(out) => out,
            Err(e) => panic!("the API call failed: {e}\n{}", self.tail()),
        }
    }

    /// [`Session::call_api`] that returns the machine's error (a fatal
    /// error during the call, a caller that could not run) instead of
    /// panicking.
    pub fn try_call_api(
        &mut self,
        mode: ApiMode,
        device_id: u16,
        regs: ClientRegs,
    ) -> Result<Option<ClientRegs>, Error> {
        let caller_failed = |message: String| Error::Fatal { message, device: None };
        API_CALL.with(|c| *c.borrow_mut() = ApiCallState::Request { device_id, regs });
        let (vm, program) = match mode {
            ApiMode::V86 => match self.machine.create_vm(KIT_V86) {
                Some(vm) => (vm, KIT_V86),
                None => return Err(caller_failed("a device refused to create the DOS VM for the API call".into())),
            },
            ApiMode::Pm => (self.system_vm(), KIT_PM),
        };
        if self.machine.start_program(vm, program, "").is_none() {
            return Err(caller_failed(format!("the API caller {program} did not start")));
        }
        // The caller runs at its VM's next turn; a VM kept from running
        // (blocked, suspended, a higher-priority VM busy) delays it.
        for _ in 0..1000 {
            if let ApiCallState::Done(result) = API_CALL.with(|c| c.borrow().clone()) {
                API_CALL.with(|c| *c.borrow_mut() = ApiCallState::Idle);
                return Ok(result);
            }
            self.machine.run_for(Duration::from_millis(1))?;
        }
        Err(caller_failed(format!("the API caller {program} did not get to run within 1 s of virtual time")))
    }

    /// The trace so far.
    pub fn trace(&self) -> Trace {
        Trace::of(&self.machine)
    }

    /// How many violations were reported so far.
    pub fn violations(&self) -> u64 {
        self.machine.violation_count()
    }

    /// The machine itself.
    pub fn machine(&mut self) -> &mut Machine {
        &mut self.machine
    }

    /// Run to the natural end (or `[machine] until`), shut down, and return
    /// the run.
    pub fn finish(mut self) -> Run {
        let mut result = self.machine.run().map(|_: RunEnd| ());
        if result.is_ok() {
            result = self.machine.shutdown();
        }
        Run::of(&self.machine, result.err())
    }

    /// Shut down now and return the run.
    pub fn shutdown(mut self) -> Run {
        let result = self.machine.shutdown();
        Run::of(&self.machine, result.err())
    }

    #[track_caller]
    fn check(&mut self, r: Result<(), Error>) -> &mut Self {
        if let Err(e) = r {
            panic!("the machine stopped: {e}\n{}", self.tail());
        }
        self
    }

    fn tail(&self) -> String {
        self.trace().tail(20)
    }
}

/// The outcome of [`Scenario::run`] and [`Session::finish`].
#[derive(Debug)]
pub struct Run {
    error: Option<Error>,
    trace: Trace,
    violations: u64,
    schedule: Option<vmm_host::explore::Schedule>,
}

impl Run {
    fn of(machine: &Machine, error: Option<Error>) -> Run {
        let schedule = Some(machine.schedule());
        Run { error, trace: Trace::of(machine), violations: machine.violation_count(), schedule }
    }

    /// The run's decisions that differ from the default order (empty
    /// unless [`Scenario::recording`]).
    pub fn schedule(&self) -> vmm_host::explore::Schedule {
        self.schedule.clone().unwrap_or_else(|| vmm_host::explore::Schedule {
            order: vmm_host::manifest::Order::Lifo,
            seed: 0,
            decisions: Vec::new(),
        })
    }

    /// The error the machine stopped with, if any.
    pub fn error(&self) -> Option<&Error> {
        self.error.as_ref()
    }

    /// The error, or a panic naming the trace's last records.
    #[track_caller]
    pub fn expect_error(&self) -> &Error {
        match &self.error {
            Some(e) => e,
            None => panic!("expected the run to fail, but it succeeded\n{}", self.trace.tail(20)),
        }
    }

    /// Panic (with the error and the end of the trace) unless the run
    /// succeeded.
    #[track_caller]
    pub fn assert_ok(&self) {
        if let Some(e) = &self.error {
            panic!("the run failed: {e}\n{}", self.trace.tail(20));
        }
    }

    /// Panic unless the run succeeded and reported no violation: under the
    /// default policy a broken VMM rule refuses the call but the run goes
    /// on, so [`Run::assert_ok`] alone passes it. The message names the
    /// first `violation` record and shows the end of the trace.
    #[track_caller]
    pub fn assert_clean(&self) {
        self.assert_ok();
        if self.violations != 0 {
            let first = self.trace.matching(json!({"kind": "violation"})).first().map(|v| v.to_string());
            panic!(
                "the run reported {} violation(s); the first: {}\n{}",
                self.violations,
                first.unwrap_or_else(|| "(not in the trace)".into()),
                self.trace.tail(20)
            );
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
/// The `expect*` assertions fail with a readable diff: the records nearest
/// to the pattern and, for each, the fields that differ.
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

/// The fields of `pattern` that `record` does not match, one line each
/// (`regs_out.eax: expected 1, found 0`); empty if it matches.
pub fn differences(record: &Value, pattern: &Value) -> Vec<String> {
    fn walk(record: &Value, pattern: &Value, path: &str, out: &mut Vec<String>) {
        match (record, pattern) {
            (Value::Object(r), Value::Object(p)) => {
                for (k, pv) in p {
                    let at = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                    match r.get(k) {
                        Some(rv) => walk(rv, pv, &at, out),
                        None => out.push(format!("{at}: expected {pv}, missing")),
                    }
                }
            }
            (r, p) if r != p => {
                let at = if path.is_empty() { "record" } else { path };
                out.push(format!("{at}: expected {p}, found {r}"));
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(record, pattern, "", &mut out);
    out
}

impl Trace {
    /// The trace of a machine (with `capture_trace`).
    pub fn of(machine: &Machine) -> Self {
        Trace { records: machine.trace().iter().map(|r| serde_json::to_value(r).unwrap_or(Value::Null)).collect() }
    }

    /// A trace from records (as [`Trace::records`] gives them).
    pub fn from_records(records: Vec<Value>) -> Self {
        Trace { records }
    }

    /// A trace from a `--trace` file's text (JSON Lines); the error names
    /// the line that is not a record.
    pub fn from_json_lines(text: &str) -> Result<Self, String> {
        let mut records = Vec::new();
        for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            records.push(serde_json::from_str(line).map_err(|e| format!("line {}: not a trace record: {e}", i + 1))?);
        }
        Ok(Trace { records })
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

    /// The first matching record, or a panic showing the nearest records
    /// and how each differs from the pattern.
    #[track_caller]
    pub fn expect(&self, pattern: Value) -> &Value {
        match self.records.iter().find(|r| matches(r, &pattern)) {
            Some(r) => r,
            None => panic!("no trace record matches {pattern}\n{}", self.near(&pattern, 0)),
        }
    }

    /// Panic if any record matches.
    #[track_caller]
    pub fn expect_none(&self, pattern: Value) {
        if let Some(i) = self.records.iter().position(|r| matches(r, &pattern)) {
            panic!("expected no record matching {pattern}, found #{i}: {}", self.records[i]);
        }
    }

    /// Assert that records matching `patterns` appear in this order (other
    /// records may come between them).
    #[track_caller]
    pub fn expect_in_order(&self, patterns: &[Value]) {
        let mut at = 0;
        for (i, p) in patterns.iter().enumerate() {
            match self.records[at..].iter().position(|r| matches(r, p)) {
                Some(pos) => at += pos + 1,
                None => {
                    let earlier = match self.records[..at].iter().position(|r| matches(r, p)) {
                        Some(e) => format!(
                            "it matches record #{e}, before record #{} that the previous pattern matched: \
                             the order differs\n",
                            at - 1
                        ),
                        None => String::new(),
                    };
                    panic!(
                        "pattern #{i} {p} does not occur after record #{}\n{earlier}{}",
                        at.saturating_sub(1),
                        self.near(p, at)
                    )
                }
            }
        }
    }

    /// The values of `field` in the records matching `pattern`.
    pub fn values(&self, pattern: Value, field: &str) -> Vec<Value> {
        self.matching(pattern).into_iter().filter_map(|r| r.get(field).cloned()).collect()
    }

    /// The records from `from` on that come nearest to `pattern`: those of
    /// the same kind first, then the fewest differing fields.
    fn near(&self, pattern: &Value, from: usize) -> String {
        let kind = pattern.get("kind");
        let candidates = || self.records.iter().enumerate().skip(from);
        let same = candidates().filter(|(_, r)| kind.is_none() || r.get("kind") == kind).count();
        let mut s = match kind {
            Some(k) => format!("{same} record(s) of kind {k} among {} searched", self.records.len() - from),
            None => format!("{} record(s) searched", self.records.len() - from),
        };
        if same == 0 {
            let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
            for (_, r) in candidates() {
                *kinds.entry(r.get("kind").map(|k| k.to_string()).unwrap_or_default()).or_default() += 1;
            }
            let list: Vec<String> = kinds.iter().map(|(k, n)| format!("{k} ({n})")).collect();
            let _ = write!(s, "; the kinds there: {}", list.join(", "));
            return s;
        }
        s.push_str("; the nearest:\n");
        let mut ranked: Vec<(bool, usize, usize, Vec<String>)> = candidates()
            .map(|(i, r)| {
                let diff = differences(r, pattern);
                (kind.is_some() && r.get("kind") != kind, diff.len(), i, diff)
            })
            .collect();
        ranked.sort_by_key(|(other_kind, n, i, _)| (*other_kind, *n, *i));
        for (_, _, i, diff) in ranked.into_iter().take(5) {
            let _ = writeln!(s, "  #{i} {}", self.records[i]);
            for d in diff {
                let _ = writeln!(s, "      {d}");
            }
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

/// The module name of the kit's PM API caller (a Windows application).
const KIT_PM: &str = "KITPM";
/// The module name of the kit's V86 API caller (a DOS program).
const KIT_V86: &str = "KITV86";

/// The state of [`Session::call_api`], handed to the caller program (which
/// runs on the test's thread, inside the machine).
#[derive(Clone)]
enum ApiCallState {
    Idle,
    Request { device_id: u16, regs: ClientRegs },
    Done(Option<ClientRegs>),
}

thread_local! {
    static API_CALL: RefCell<ApiCallState> = const { RefCell::new(ApiCallState::Idle) };
}

/// The arithmetic flags a caller may set for an API call (CF, PF, AF, ZF,
/// SF, OF); the rest of EFLAGS stays the VM's.
const STATUS_FLAGS: u32 = 0x08D5;

/// The kit's API caller: a Windows application (`PM`) or a DOS program
/// that finds a device's API entry with INT 2Fh AX=1684h and far-calls it.
struct ApiCaller<const PM: bool>;

impl<const PM: bool> Module for ApiCaller<PM> {
    const MODULE: ModuleDef = if PM { ModuleDef::windows_app(KIT_PM) } else { ModuleDef::dos_program(KIT_V86) };

    fn create(_: &Ring3<'_>) -> Result<Self, String> {
        Ok(ApiCaller)
    }

    fn start(&self, r3: &Ring3<'_>, _args: &str) -> Step {
        let ApiCallState::Request { device_id, regs: wanted } = API_CALL.with(|c| c.borrow().clone()) else {
            return Step::exit(1);
        };
        let regs = r3.regs();
        regs.set_ax(W386_GET_DEVICE_API);
        regs.set_bx(device_id);
        let entry = match r3.int(0x2F) {
            Ok(()) => FarPtr::new(regs.es() as u16, regs.di()),
            Err(_) => FarPtr::new(0, 0),
        };
        let result = if entry.is_null() {
            None
        } else {
            let mut c = regs.get();
            c.eax = wanted.eax;
            c.ebx = wanted.ebx;
            c.ecx = wanted.ecx;
            c.edx = wanted.edx;
            c.esi = wanted.esi;
            c.edi = wanted.edi;
            c.ebp = wanted.ebp;
            c.es = wanted.es;
            c.ds = wanted.ds;
            c.fs = wanted.fs;
            c.gs = wanted.gs;
            c.eflags = (c.eflags & !STATUS_FLAGS) | (wanted.eflags & STATUS_FLAGS);
            regs.set(c);
            // A refused call (a violation) still leaves the registers as
            // they are: the caller sees CF and its own values.
            let _ = r3.call(entry, &[]);
            Some(regs.get())
        };
        API_CALL.with(|c| *c.borrow_mut() = ApiCallState::Done(result));
        Step::exit(0)
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
