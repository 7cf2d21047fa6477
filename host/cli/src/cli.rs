//! The `vmm` command line: `run`, `check`, `list`, `explore`, `story`, `new`. Human output goes
//! through `tracing` (stderr, `RUST_LOG` honoured); machine output through
//! `--trace`.

use std::cell::RefCell;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Mutex};

use clap::{Args, Parser, Subcommand};

use vmm_host::error::{Error, Result};
use vmm_host::machine::{Machine, MachineOptions, RunEnd};
use vmm_host::manifest::{BuildPolicy, Manifest, ManifestBuilder};
use vmm_host::resolve::{SearchPath, library_name};

use crate::story::Teller;

/// The `vmm` command line.
#[derive(Parser, Debug)]
#[command(
    name = "vmm",
    version,
    about = "An emulator of the Windows 3.1/95 Virtual Machine Manager that hosts VxD plugins",
    long_about = "An emulator of the Windows 3.1/95 Virtual Machine Manager that hosts VxDs written in Rust \
                  as plugins. It reads a system.ini written in TOML, loads the VxDs it lists, sends the system \
                  control messages, runs the system VM and DOS VMs, and writes what happened as a trace.\n\n\
                  `vmm` alone is `vmm run`: it runs the machine of ./system.ini.",
    after_help = "Examples:\n  \
                  vmm                                     run ./system.ini\n  \
                  vmm run system.ini --trace run.jsonl    run it and write the trace (docs/trace.md)\n  \
                  vmm new vxd hello --id 0x3A20           start a VxD crate with a machine and tests\n  \
                  vmm run system.ini --watch              run it and hot-reload the VxDs cargo rebuilds\n  \
                  vmm explore system.ini --runs 1000      run it under 1000 random schedules, report failures\n\n\
                  Docs: README.md of vmm's sources; the plugin guide: `cargo doc -p vmm-plugin-api --open`; \
                  the trace: docs/trace.md; violation codes: docs/violations.md."
)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Boot a machine, run it to its natural end (or --until), shut it down.
    Run(RunArgs),
    /// Boot the machine (init phases, Sys_VM_Init, `[windows] load`) and shut it down at once; report.
    Check(CommonArgs),
    /// Show the device list: name, ID, init order, file, APIs, services.
    List(CommonArgs),
    /// Run the machine under many seeds of the random or pct order and report the runs that fail.
    #[command(after_help = "A run fails on a violation, a plugin panic, a fatal error (deadlock and livelock \
                            included) or a broken [expect] expectation. Each failure comes with the `vmm run` \
                            command that replays it exactly; the first failing run of each kind is shrunk to \
                            the fewest decisions away from the default order that still fail the same way.\
                            \n\nExamples:\n  \
                            vmm explore system.ini --runs 1000\n  \
                            vmm explore system.ini --strategy pct --pct-depth 2 --runs 1000\n  \
                            vmm explore system.ini --seeds 0..10000 --shard 2/4 --out failures")]
    Explore(ExploreArgs),
    /// Tell the story of the messages (and of the devices VMs fought over) of a run again, from
    /// its `--trace` file.
    Story {
        /// A JSON-lines trace written by `vmm run --trace`.
        #[arg(value_name = "TRACE")]
        trace: PathBuf,
    },
    /// Create a plugin crate with a system.ini that runs it and a test.
    New {
        #[command(subcommand)]
        what: NewCommand,
    },
}

/// `vmm new`'s kinds of plugin.
#[derive(Subcommand, Debug)]
enum NewCommand {
    /// A VxD: a DDB and a control procedure handling Device_Init (with --id, a PM API too).
    Vxd {
        #[command(flatten)]
        args: NewArgs,
        /// The device ID (0xNNNN); the VxD gets a PM API that answers. Without it: Undefined_Device_ID, no API.
        #[arg(long, value_name = "0xNNNN")]
        id: Option<String>,
    },
    /// A 16-bit Windows DLL, run by the host's built-in *RUNDLL.
    Dll(NewArgs),
    /// A Windows application, started in the system VM.
    App(NewArgs),
    /// A DOS program, run in a DOS VM.
    Dos(NewArgs),
}

#[derive(Args, Debug)]
struct NewArgs {
    /// The name: the crate's in lower case, the DDB or module name (1 to 8 characters) in upper case.
    #[arg(value_name = "NAME")]
    name: String,
    /// Create the crate in this directory instead of ./NAME.
    #[arg(long, value_name = "PATH")]
    dir: Option<PathBuf>,
    /// Depend on vmm-plugin-api at this path (a vmm checkout's plugin-api; the test kit comes from ../host).
    #[arg(long, value_name = "DIR", conflicts_with = "sdk_version")]
    sdk_path: Option<PathBuf>,
    /// Depend on vmm-plugin-api of this version from the registry.
    #[arg(long, value_name = "VERSION")]
    sdk_version: Option<String>,
}

/// What makes a machine: its manifests, overrides and plugins (every
/// command that boots one: run, check, list, explore).
#[derive(Args, Debug, Default)]
struct MachineArgs {
    /// Manifest files (TOML system.ini); later files override earlier ones.
    #[arg(value_name = "MANIFEST")]
    manifests: Vec<PathBuf>,
    /// Override a manifest key: SECTION.KEY=VALUE (repeatable).
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
    set: Vec<String>,
    /// Extra plugin directory, searched first (repeatable).
    #[arg(long = "plugin-dir", value_name = "DIR")]
    plugin_dir: Vec<PathBuf>,
    /// When to build the plugins the manifest names (and the DLLs they use)
    /// with cargo, if they are packages of the manifest's cargo workspace:
    /// always (default; a no-op when they are up to date), missing, never.
    #[arg(long, value_name = "WHEN")]
    build: Option<String>,
    /// The cargo profile plugins are built with and loaded from: dev
    /// (default: what a plain `cargo build` makes, in target/debug), release
    /// (`cargo build --release`, target/release), or a custom profile.
    /// With --watch, a rebuild in this profile is what reloads.
    #[arg(long, value_name = "PROFILE")]
    profile: Option<String>,
}

#[derive(Args, Debug, Default)]
struct CommonArgs {
    #[command(flatten)]
    machine: MachineArgs,
    /// Write the JSON-lines trace here.
    #[arg(long, value_name = "FILE")]
    trace: Option<PathBuf>,
}

#[derive(Args, Debug, Default)]
struct RunArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Stop at this virtual time (for example 500ms, 2s).
    #[arg(long, value_name = "DURATION")]
    until: Option<String>,
    /// Stop the run when the --trace file would grow past SIZE (for
    /// example 500MB, 2GiB; default 1GiB, or [machine] trace_limit).
    #[arg(long, value_name = "SIZE", value_parser = vmm_host::manifest::parse_size)]
    trace_limit: Option<u64>,
    /// The order in which events that are ready at the same moment run: lifo (default), fifo,
    /// random (seeded; also injects interrupts that re-enter the devices), pct (seeded random
    /// priorities of the events' sources with a few priority change points; injects as random).
    #[arg(long, value_name = "ORDER")]
    order: Option<String>,
    /// Seed for the random and pct orders.
    #[arg(long)]
    seed: Option<u64>,
    /// Pct order: the bug depth D, with D-1 priority change points (default 3; 1 to 1000).
    #[arg(long, value_name = "D", value_parser = clap::value_parser!(u32).range(1..=vmm_host::manifest::MAX_PCT_DEPTH as i64))]
    pct_depth: Option<u32>,
    /// Pct order: the number of steps the change points are drawn among (default 100; the replay
    /// commands of `vmm explore --strategy pct` give the number it measured).
    #[arg(long, value_name = "K", value_parser = clap::value_parser!(u64).range(1..))]
    pct_steps: Option<u64>,
    /// Replay a schedule file (`vmm explore --out DIR` writes DIR/seed-N.schedule): its order,
    /// its seed and its decisions; at every other step the default order (newest ready event).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["order", "seed"])]
    schedule: Option<PathBuf>,
    /// Pace virtual time to the wall clock.
    #[arg(long)]
    realtime: bool,
    /// Write a Chrome trace / Perfetto timeline here.
    #[arg(long, value_name = "FILE")]
    timeline: Option<PathBuf>,
    /// Do not tell the story of the messages (told when a device writes post notes, as VPOSTD
    /// does) or of contended devices (`contention` records, as VCOMD writes); reading the
    /// records for it costs time on long runs.
    #[arg(long)]
    no_story: bool,
    /// Hot reload: watch each loaded plugin device's file and swap in its
    /// rebuilt code while the machine runs (until Ctrl-C or --until).
    #[arg(long)]
    watch: bool,
    /// With --watch: how long a rebuilt file must be quiet before it is
    /// loaded, in milliseconds (default 25).
    #[arg(long, value_name = "MS", requires = "watch")]
    watch_debounce: Option<u64>,
}

#[derive(Args, Debug)]
struct ExploreArgs {
    #[command(flatten)]
    machine: MachineArgs,
    /// The seeds: A..B (B excluded) or A..=B.
    #[arg(long, value_name = "A..B", conflicts_with_all = ["runs", "seed"])]
    seeds: Option<String>,
    /// Run N seeds, from --seed (default 100 runs).
    #[arg(long, value_name = "N")]
    runs: Option<u64>,
    /// The first seed of --runs (default 0).
    #[arg(long, value_name = "S")]
    seed: Option<u64>,
    /// Worker threads, each with its own machine (default: the cores available).
    #[arg(long, value_name = "N")]
    jobs: Option<usize>,
    /// The schedule strategy: random (seeded random order with interrupt injection, as `vmm run
    /// --order random`) or pct (random priorities of the events' sources, --pct-depth - 1
    /// priority change points, as `vmm run --order pct`).
    #[arg(long, value_name = "STRATEGY", default_value = "random")]
    strategy: String,
    /// Pct: the bug depth D, with D-1 priority change points per run (default 3).
    #[arg(long, value_name = "D")]
    pct_depth: Option<u32>,
    /// Pct: the steps the change points are drawn among (default: measured before the runs, as
    /// the most choices a run makes over the seeds 0..4 without change points).
    #[arg(long, value_name = "K")]
    pct_steps: Option<u64>,
    /// The most runs shrinking the first failing schedule of each signature may make (0: no
    /// shrinking).
    #[arg(long, value_name = "N", default_value_t = vmm_host::explore::DEFAULT_SHRINK_RUNS)]
    shrink_runs: u64,
    /// Run only shard I of N of the seeds (1 <= I <= N): the seeds whose index in the range is I-1 modulo N.
    #[arg(long, value_name = "I/N")]
    shard: Option<String>,
    /// Stop at the first failing run.
    #[arg(long)]
    fail_fast: bool,
    /// Write the trace of each failing run to DIR/seed-N.jsonl, and the shrunk schedule of each
    /// failure to DIR/seed-N.schedule (`vmm run --schedule` replays it).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
}

/// Parse the process arguments and run; the exit status.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // An exploration's thousands of runs would repeat every run's log
    // lines, violations and panics (the report lists them): no logs, unless
    // RUST_LOG asks for them.
    init_logging(if matches!(cli.command, Some(Command::Explore(_))) { "off" } else { "info" });
    let result = match cli.command {
        None => run(RunArgs::default()),
        Some(Command::Run(args)) => run(args),
        Some(Command::Check(args)) => check(args).map(|()| ExitCode::SUCCESS),
        Some(Command::List(args)) => list(args).map(|()| ExitCode::SUCCESS),
        Some(Command::Explore(args)) => explore(args),
        Some(Command::Story { trace }) => story(&trace).map(|()| ExitCode::SUCCESS),
        Some(Command::New { what }) => new_plugin(what).map(|()| ExitCode::SUCCESS),
    };
    result.unwrap_or_else(|e| {
        report(&e);
        ExitCode::FAILURE
    })
}

/// The one `error:` paragraph of a failed command.
fn report(e: &Error) {
    let _ = std::io::stdout().flush();
    eprintln!("error: {e}");
}

fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour only for a person at a terminal (and not with NO_COLOR).
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()) && std::env::var_os("NO_COLOR").is_none())
        .with_target(false)
        .without_time()
        .try_init();
}

/// Read the manifests and overrides (default `system.ini`).
fn manifest(args: &MachineArgs, extra_sets: &[String]) -> Result<Manifest> {
    let mut builder = ManifestBuilder::new();
    if args.manifests.is_empty() {
        builder = builder.file("system.ini")?;
    }
    for m in &args.manifests {
        builder = builder.file(m)?;
    }
    for s in args.set.iter().chain(extra_sets) {
        builder = builder.set(s.clone());
    }
    builder.build()
}

/// Build, with cargo, the workspace plugins the manifest needs that are not
/// on the search path (or all of them with `always`). Returns directories to
/// search first.
fn build_plugins(m: &Manifest, policy: BuildPolicy, profile: &str, extra_dirs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    if policy == BuildPolicy::Never {
        return Ok(Vec::new());
    }
    let mut search = SearchPath::for_manifest(m);
    for d in extra_dirs.iter().rev() {
        search.prepend(d.clone());
    }
    let dir: &Path = if m.base_dir.as_os_str().is_empty() { Path::new(".") } else { &m.base_dir };
    let mut packages = None;
    let mut names = m.plugin_names();
    // The DLLs a program loads at run time, declared by its package.
    let mut i = 0;
    while i < names.len() {
        let missing = policy == BuildPolicy::Always || search.find(&names[i]).is_none();
        if missing {
            let pkgs = packages.get_or_insert_with(|| vmm_host::cargo::workspace_plugins(dir).map(|(_, p)| p));
            if let Ok(pkgs) = pkgs {
                let lib = library_name(&names[i]);
                if let Some(p) = pkgs.iter().find(|p| p.lib_name == lib) {
                    for u in &p.uses {
                        if !names.iter().any(|n| library_name(n) == library_name(u)) {
                            names.push(u.clone());
                        }
                    }
                }
            }
        }
        i += 1;
    }
    let wanted: Vec<String> =
        names.into_iter().filter(|n| policy == BuildPolicy::Always || search.find(n).is_none()).collect();
    if wanted.is_empty() {
        return Ok(Vec::new());
    }
    let packages = packages.unwrap_or_else(|| vmm_host::cargo::workspace_plugins(dir).map(|(_, p)| p));
    let Ok(packages) = packages else {
        // Not inside a cargo workspace: the loader reports what is missing.
        return Ok(Vec::new());
    };
    let to_build: Vec<String> = wanted
        .iter()
        .filter_map(|n| {
            let lib = library_name(n);
            packages.iter().find(|p| p.lib_name == lib).map(|p| p.package.clone())
        })
        .collect();
    if to_build.is_empty() {
        return Ok(Vec::new());
    }
    tracing::info!("building {} with cargo (profile {profile})", to_build.join(", "));
    let artifacts =
        vmm_host::cargo::build(dir, &to_build, profile, vmm_host::cargo::Progress::Show).map_err(Error::Build)?;
    let mut dirs: Vec<PathBuf> = artifacts.values().filter_map(|p| p.parent().map(Path::to_path_buf)).collect();
    dirs.sort();
    dirs.dedup();
    Ok(dirs)
}

fn machine(args: &CommonArgs, m: Manifest) -> Result<Machine> {
    let trace = TraceFile::open(args.trace.as_deref())?;
    machine_with(args, m, false, trace.map(|t| Box::new(t) as Box<dyn Write>), None)
}

fn machine_with(
    args: &CommonArgs,
    m: Manifest,
    capture_trace: bool,
    trace: Option<Box<dyn Write>>,
    schedule: Option<vmm_host::explore::Schedule>,
) -> Result<Machine> {
    let plugin_dirs = plugin_dirs(&args.machine, &m)?;
    Ok(Machine::new(m, MachineOptions { capture_trace, trace, plugin_dirs, schedule, ..MachineOptions::default() }))
}

/// The plugin directories of a machine: `--plugin-dir`, then what cargo
/// built for it (per `--build` or `[machine] build`, in `--profile`).
fn plugin_dirs(args: &MachineArgs, m: &Manifest) -> Result<Vec<PathBuf>> {
    let policy = match &args.build {
        Some(b) => b.parse().map_err(|e: String| Error::Build(e))?,
        None => m.machine.build,
    };
    let mut dirs = args.plugin_dir.clone();
    dirs.extend(build_plugins(m, policy, args.profile.as_deref().unwrap_or("dev"), &args.plugin_dir)?);
    Ok(dirs)
}

/// The `--trace` file, opened before anything runs, and shared with the
/// signal thread, which flushes it when a second signal ends the process at
/// once. Records reach it whole (one `write_all` each, under the lock), so
/// the file always ends on a record boundary.
#[derive(Clone)]
struct TraceFile {
    file: Arc<Mutex<std::io::BufWriter<std::fs::File>>>,
}

impl TraceFile {
    fn open(path: Option<&Path>) -> Result<Option<TraceFile>> {
        let Some(path) = path else { return Ok(None) };
        let file = std::fs::File::create(path).map_err(|e| cannot_write(path, "--trace", &e))?;
        Ok(Some(TraceFile { file: Arc::new(Mutex::new(std::io::BufWriter::with_capacity(64 * 1024, file))) }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, std::io::BufWriter<std::fs::File>> {
        self.file.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Write for TraceFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.lock().write(buf)
    }

    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.lock().write_all(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.lock().flush()
    }
}

fn cannot_write(path: &Path, flag: &str, e: &std::io::Error) -> Error {
    Error::Io { path: path.to_path_buf(), message: format!("cannot write the {flag} file: {e}") }
}

/// Where `vmm run`'s trace records go: the `--trace` file and the story,
/// which reads them as they are written (so the story never needs the
/// whole trace in memory).
struct TraceSink {
    file: Option<TraceFile>,
    teller: Option<Rc<RefCell<Teller>>>,
    /// The manifest's `[expect]`, counting the records.
    checker: Option<Rc<RefCell<vmm_host::expect::Checker>>>,
    /// The start of a record not yet complete (records normally arrive
    /// whole).
    partial: Vec<u8>,
}

impl TraceSink {
    fn tell(&mut self, mut buf: &[u8]) {
        if self.teller.is_none() && self.checker.is_none() {
            return;
        }
        let mut teller = self.teller.as_ref().map(|t| t.borrow_mut());
        let mut checker = self.checker.as_ref().map(|c| c.borrow_mut());
        while let Some(end) = buf.iter().position(|&b| b == b'\n') {
            let line = if self.partial.is_empty() {
                &buf[..end]
            } else {
                self.partial.extend_from_slice(&buf[..end]);
                &self.partial[..]
            };
            if let Some(checker) = &mut checker {
                checker.line(line);
            }
            // The host's own records: they parse.
            if let Some(teller) = &mut teller {
                let _ = teller.line(line);
            }
            self.partial.clear();
            buf = &buf[end + 1..];
        }
        self.partial.extend_from_slice(buf);
    }
}

impl Write for TraceSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.write_all(buf)?;
        Ok(buf.len())
    }

    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.tell(buf);
        match &mut self.file {
            Some(file) => file.write_all(buf),
            None => Ok(()),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match &mut self.file {
            Some(file) => file.flush(),
            None => Ok(()),
        }
    }
}

/// SIGINT and SIGTERM during `vmm run`: the first stops the machine at its
/// next safe point (it then shuts down, completes the trace and tells the
/// story; `vmm` exits 128 + the signal's number: 130, 143); a second one
/// flushes the trace file's whole records and exits at once with
/// 128 + its number.
struct Signals {
    stop: Arc<AtomicBool>,
    first: Arc<AtomicI32>,
}

impl Signals {
    fn install(trace: Option<TraceFile>) -> Result<Signals> {
        use signal_hook::consts::{SIGINT, SIGTERM};
        let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])
            .map_err(|e| Error::Io { path: PathBuf::from("<signals>"), message: e.to_string() })?;
        let stop = Arc::new(AtomicBool::new(false));
        let first = Arc::new(AtomicI32::new(0));
        let (stop2, first2) = (stop.clone(), first.clone());
        std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                for signal in signals.forever() {
                    if first2.load(Ordering::SeqCst) == 0 {
                        first2.store(signal, Ordering::SeqCst);
                        stop2.store(true, Ordering::SeqCst);
                        eprintln!(
                            "vmm: {}: stopping at the next safe point (again to exit at once)",
                            signal_name(signal)
                        );
                        continue;
                    }
                    if let Some(trace) = &trace {
                        // Wait a moment for a record being written; never
                        // for a machine stuck inside plugin code.
                        for _ in 0..50 {
                            if let Ok(mut f) = trace.file.try_lock() {
                                let _ = f.flush();
                                break;
                            }
                            std::thread::sleep(std::time::Duration::from_millis(2));
                        }
                    }
                    eprintln!("vmm: {}: exiting at once", signal_name(signal));
                    signal_hook::low_level::exit(128 + signal);
                }
            })
            .map_err(|e| Error::Io { path: PathBuf::from("<signals>"), message: e.to_string() })?;
        Ok(Signals { stop, first })
    }

    /// The first signal received, if any.
    fn received(&self) -> Option<i32> {
        match self.first.load(Ordering::SeqCst) {
            0 => None,
            s => Some(s),
        }
    }
}

fn signal_name(signal: i32) -> &'static str {
    match signal {
        signal_hook::consts::SIGINT => "SIGINT",
        signal_hook::consts::SIGTERM => "SIGTERM",
        _ => "signal",
    }
}

fn run(args: RunArgs) -> Result<ExitCode> {
    let mut sets = Vec::new();
    if let Some(u) = &args.until {
        sets.push(format!("machine.until=\"{u}\""));
    }
    if let Some(limit) = args.trace_limit {
        sets.push(format!("machine.trace_limit=\"{limit}\""));
    }
    if let Some(o) = &args.order {
        sets.push(format!("machine.order=\"{o}\""));
    }
    if let Some(s) = args.seed {
        // A string: a TOML integer cannot hold seeds of 2^63 and above.
        sets.push(format!("machine.seed=\"{s}\""));
    }
    if let Some(d) = args.pct_depth {
        sets.push(format!("machine.pct_depth={d}"));
    }
    if let Some(k) = args.pct_steps {
        sets.push(format!("machine.pct_steps={k}"));
    }
    let schedule = match &args.schedule {
        Some(path) => {
            let bad =
                |reason: String| Error::InvalidInput { what: "--schedule", value: path.display().to_string(), reason };
            let text = std::fs::read_to_string(path).map_err(|e| bad(format!("cannot read it: {e}")))?;
            let schedule = vmm_host::explore::Schedule::parse(&text).map_err(bad)?;
            let order = if schedule.order == vmm_host::manifest::Order::Pct { "pct" } else { "random" };
            sets.push(format!("machine.order=\"{order}\""));
            sets.push(format!("machine.seed=\"{}\"", schedule.seed));
            Some(schedule)
        }
        None => None,
    };
    if args.realtime {
        sets.push("machine.realtime=true".to_string());
    }
    let m = manifest(&args.common.machine, &sets)?;
    // The story reads the records as they are written; it is told if a
    // device wrote post notes.
    let tell = !args.no_story;
    // Output files first: a path that cannot be written fails before
    // anything is built or booted.
    if let Some(path) = &args.timeline {
        std::fs::File::create(path).map_err(|e| cannot_write(path, "--timeline", &e))?;
    }
    let trace_file = TraceFile::open(args.common.trace.as_deref())?;
    let signals = Signals::install(trace_file.clone())?;
    let teller = tell.then(|| Rc::new(RefCell::new(Teller::new())));
    let checker = (!m.expect.is_empty()).then(|| Rc::new(RefCell::new(vmm_host::expect::Checker::new(&m.expect))));
    let sink: Option<Box<dyn Write>> = (trace_file.is_some() || teller.is_some() || checker.is_some()).then(|| {
        Box::new(TraceSink { file: trace_file, teller: teller.clone(), checker: checker.clone(), partial: Vec::new() })
            as _
    });
    let result = run_to_end(&args, m, schedule, sink, &signals, teller.as_ref());
    match (signals.received(), result) {
        // The run ended: what the manifest expects of it must hold (of a
        // run cut short by `until`, what holds of any part of a good run).
        (None, Ok(end)) => match checker {
            Some(c) => c.borrow().result_after(end == RunEnd::Quiescent).map(|()| ExitCode::SUCCESS),
            None => Ok(ExitCode::SUCCESS),
        },
        (None, Err(e)) => Err(e),
        (Some(signal), result) => {
            if let Err(e) = result {
                report(&e);
            }
            Ok(ExitCode::from(128 + signal as u8))
        }
    }
}

/// `vmm run` from the machine's creation to the story.
fn run_to_end(
    args: &RunArgs,
    m: Manifest,
    schedule: Option<vmm_host::explore::Schedule>,
    sink: Option<Box<dyn Write>>,
    signals: &Signals,
    teller: Option<&Rc<RefCell<Teller>>>,
) -> Result<RunEnd> {
    let mut machine = machine_with(&args.common, m, args.timeline.is_some(), sink, schedule)?;
    machine.interrupt_on(signals.stop.clone());
    tracing::info!("seed {} (order {:?})", machine.seed(), machine.manifest().machine.order);
    let result = if args.watch {
        let debounce = args.watch_debounce.map(std::time::Duration::from_millis);
        run_watching(&mut machine, debounce.unwrap_or(vmm_host::watch::DEFAULT_DEBOUNCE), signals)
    } else {
        run_machine(&mut machine, signals)
    };
    let mapped = vmm_host::loader::stats();
    tracing::info!(
        "plugin libraries mapped: {} cop{}, {:.1} MB (libraries are never unmapped; each reload adds one)",
        mapped.copies,
        if mapped.copies == 1 { "y" } else { "ies" },
        mapped.bytes as f64 / 1e6
    );
    if let Some(path) = &args.timeline {
        machine.write_timeline(path)?;
        tracing::info!("timeline written to {} (open it in https://ui.perfetto.dev)", path.display());
    }
    let end = result?;
    machine.finish_trace()?;
    if let Some(teller) = teller {
        let teller = std::mem::take(&mut *teller.borrow_mut());
        if let Some(story) = teller.finish() {
            let _ = std::io::stderr().flush();
            print!("{story}");
        }
    }
    Ok(end)
}

/// `vmm explore`: the machine under many seeds; failing seeds grouped by
/// signature on stdout, each with its replay command, the first of each
/// shrunk; exit 1 if any failed.
fn explore(args: ExploreArgs) -> Result<ExitCode> {
    use vmm_host::explore::{Options, Seeds, Shard, Strategy};
    let bad = |what: &'static str, value: &str, reason: String| Error::InvalidInput {
        what,
        value: value.to_string(),
        reason,
    };
    let depth = args.pct_depth.unwrap_or(vmm_host::manifest::DEFAULT_PCT_DEPTH);
    if !(1..=vmm_host::manifest::MAX_PCT_DEPTH).contains(&depth) {
        let reason = format!("give a depth from 1 to {}", vmm_host::manifest::MAX_PCT_DEPTH);
        return Err(bad("--pct-depth", &depth.to_string(), reason));
    }
    if args.pct_steps == Some(0) {
        return Err(bad("--pct-steps", "0", "give at least 1 step".to_string()));
    }
    let strategy = match args.strategy.as_str() {
        "random" => Strategy::Random,
        "pct" => Strategy::Pct { depth, steps: args.pct_steps },
        other => return Err(bad("--strategy", other, "the strategies are: random, pct".to_string())),
    };
    if strategy == Strategy::Random && (args.pct_depth.is_some() || args.pct_steps.is_some()) {
        let (flag, value) = match (args.pct_depth, args.pct_steps) {
            (Some(d), _) => ("--pct-depth", d.to_string()),
            (None, k) => ("--pct-steps", k.unwrap_or_default().to_string()),
        };
        return Err(bad(flag, &value, "it applies to --strategy pct only".to_string()));
    }
    let seeds = match (&args.seeds, args.runs) {
        (Some(text), _) => Seeds::parse(text).map_err(|e| bad("--seeds", text, e))?,
        (None, runs) => {
            let start = args.seed.unwrap_or(0);
            let runs = runs.unwrap_or(100);
            let end = start
                .checked_add(runs)
                .ok_or_else(|| bad("--runs", &runs.to_string(), "the seeds would pass 2^64 - 1".to_string()))?;
            Seeds { start, end }
        }
    };
    let shard = match &args.shard {
        Some(text) => Some(Shard::parse(text).map_err(|e| bad("--shard", text, e))?),
        None => None,
    };
    if args.jobs == Some(0) {
        return Err(bad("--jobs", "0", "give at least 1 worker".to_string()));
    }
    let jobs = args.jobs.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let m = manifest(&args.machine, &[])?;
    let plugin_dirs = plugin_dirs(&args.machine, &m)?;
    let total = shard.map_or(seeds.len(), |s| s.len(seeds));
    let bar = progress_bar(total);
    let progress = {
        let bar = bar.clone();
        move |done: u64, failures: u64| {
            bar.set_position(done);
            if failures > 0 {
                bar.set_message(format!("{failures} failing"));
            }
        }
    };
    let options = Options {
        seeds,
        shard,
        strategy,
        jobs,
        fail_fast: args.fail_fast,
        out: args.out.clone(),
        shrink_runs: args.shrink_runs,
        plugin_dirs,
        progress: (!bar.is_hidden()).then(|| Box::new(progress) as Box<dyn Fn(u64, u64) + Sync>),
    };
    let report = vmm_host::explore::explore(&m, &options);
    bar.finish_and_clear();
    let report = report?;
    let replay = replay_prefix(&args);
    if let Some(b) = report.pct.filter(|b| b.measured_steps == 0) {
        println!(
            "pct: depth {}; no calibration run had a choice between two tasks, so the seeds differ only in \
             injected interrupts",
            b.depth
        );
    } else if let Some(b) = report.pct {
        println!(
            "pct: depth {}, change points among {} step(s), {} task(s): one run finds a bug of depth {} with \
             probability at least 1/{:.0}; {} run(s) all miss it with probability at most {:.2e}",
            b.depth,
            b.steps,
            b.tasks,
            b.depth,
            1.0 / b.per_run(),
            report.runs,
            b.miss(report.runs)
        );
    }
    for (signature, failures) in report.groups() {
        println!("{signature}: {} failing run(s)", failures.len());
        println!("  {}", failures[0].message);
        for f in &failures {
            let trace = f.trace.as_ref().map(|p| format!("  # trace: {}", p.display())).unwrap_or_default();
            println!("  seed {}: {replay} {}{trace}", f.seed, report.strategy.run_flags(f.seed));
        }
        if args.shrink_runs > 0 && !report.shrunk.contains_key(signature) {
            println!("  not shrunk: seed {} did not fail the same way when run again to record it", failures[0].seed);
        }
        if let Some(shrunk) = report.shrunk.get(signature) {
            let (c0, i0) = shrunk.original.sizes();
            let (c1, i1) = shrunk.schedule.sizes();
            println!(
                "  shrunk seed {}: {c0} choice(s) and {i0} injected interrupt(s) away from the default order \
                 -> {c1} and {i1} ({} run(s))",
                shrunk.seed, shrunk.runs
            );
            match &shrunk.file {
                Some(file) => println!(
                    "  replay the shrunk schedule: {replay} --schedule {}",
                    shell_quote(&file.display().to_string())
                ),
                None => {
                    println!("  shrunk schedule (write it to a file with --out, replay with vmm run --schedule FILE):");
                    for line in shrunk.schedule.to_text().lines().filter(|l| !l.starts_with('#')) {
                        println!("    {line}");
                    }
                }
            }
        }
    }
    println!(
        "explored {} run(s) in {:.2} s: {} failing, {:.1} runs/s ({jobs} job(s), strategy {})",
        report.runs,
        report.elapsed.as_secs_f64(),
        report.failures.len(),
        report.rate(),
        report.strategy.name()
    );
    Ok(if report.failures.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// The progress bar of an exploration on stderr: hidden when stderr is no
/// terminal or `CI` is set (indicatif also hides it for `TERM=dumb`).
fn progress_bar(total: u64) -> indicatif::ProgressBar {
    let attended = std::io::IsTerminal::is_terminal(&std::io::stderr()) && std::env::var_os("CI").is_none();
    if !attended {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::with_draw_target(Some(total), indicatif::ProgressDrawTarget::stderr());
    let style =
        indicatif::ProgressStyle::with_template("explore {bar:30} {pos}/{len} runs, {rate} runs/s, eta {eta} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .with_key("rate", |state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(w, "{:.0}", state.per_sec());
            });
    bar.set_style(style);
    bar
}

/// `vmm run` with the manifests and options of an exploration, shell-quoted.
fn replay_prefix(args: &ExploreArgs) -> String {
    let mut words = vec!["vmm".to_string(), "run".to_string()];
    let args = &args.machine;
    words.extend(args.manifests.iter().map(|m| m.display().to_string()));
    for s in &args.set {
        words.extend(["--set".to_string(), s.clone()]);
    }
    for d in &args.plugin_dir {
        words.extend(["--plugin-dir".to_string(), d.display().to_string()]);
    }
    if let Some(p) = &args.profile {
        words.extend(["--profile".to_string(), p.clone()]);
    }
    words.iter().map(|w| shell_quote(w)).collect::<Vec<_>>().join(" ")
}

fn shell_quote(word: &str) -> String {
    if !word.is_empty() && word.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:,@%+".contains(c)) {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

/// `vmm story TRACE`: read the trace a line at a time (memory grows with
/// the posts on their way, not with the trace). A last line cut short (a
/// run killed while writing) is left out with a warning naming the byte
/// offset where the complete records end; any other line that is not a
/// record is an error.
fn story(path: &Path) -> Result<()> {
    use std::io::BufRead;
    let io = |e: std::io::Error| Error::Io { path: path.to_path_buf(), message: e.to_string() };
    let mut reader = std::io::BufReader::new(std::fs::File::open(path).map_err(io)?);
    let mut teller = Teller::new();
    let mut line = Vec::new();
    let (mut offset, mut number) = (0u64, 0u64);
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line).map_err(io)?;
        if n == 0 {
            break;
        }
        number += 1;
        let complete = line.last() == Some(&b'\n');
        let text = line.trim_ascii();
        if !text.is_empty()
            && let Err(e) = teller.line(text)
        {
            if complete {
                return Err(Error::Io {
                    path: path.to_path_buf(),
                    message: format!("line {number}: not a trace record: {e}"),
                });
            }
            tracing::warn!(
                "{}: the trace was cut: its last line (line {number}, from byte {offset}) is not a complete record; \
                 the story is told from the {} bytes of complete records before it",
                path.display(),
                offset
            );
        }
        offset += n as u64;
    }
    match teller.finish() {
        Some(story) => {
            print!("{story}");
            Ok(())
        }
        None => Err(Error::Io {
            path: path.to_path_buf(),
            message: "the trace has no post notes (post_queued, ...; docs/trace.md, \"The message story\") and \
                      no contention records: no device in the machine posted messages or decided a contention"
                .to_string(),
        }),
    }
}

fn new_plugin(what: NewCommand) -> Result<()> {
    use crate::scaffold::{Kind, NewPlugin, Sdk};
    let (kind, args, id) = match what {
        NewCommand::Vxd { args, id } => (Kind::Vxd, args, id),
        NewCommand::Dll(args) => (Kind::Dll, args, None),
        NewCommand::App(args) => (Kind::App, args, None),
        NewCommand::Dos(args) => (Kind::Dos, args, None),
    };
    let sdk = match (args.sdk_path, args.sdk_version) {
        (Some(p), _) => Some(Sdk::Path(p)),
        (None, Some(v)) => Some(Sdk::Version(v)),
        (None, None) => None,
    };
    let created = crate::scaffold::create(&NewPlugin { kind, name: args.name, id, dir: args.dir, sdk })?;
    let id = created.device_id.map(|id| format!(", device ID {id:#06X}")).unwrap_or_default();
    println!("created {kind} {} ({}{id}) in {}", created.crate_name, created.module_name, created.dir.display());
    for f in &created.files {
        println!("  {}", f.display());
    }
    match &created.workspace {
        Some(joined) => {
            println!("joined the workspace at {} (one target/, one Cargo.lock)", joined.root.display());
            if let Some(host) = &joined.host_package {
                println!(
                    "  {host} builds it with its plugin: [package.metadata.vmm] uses lists {}",
                    created.module_name
                );
            }
            if let Some(test) = &joined.test {
                println!("  {} runs the two together", test.display());
            }
            println!("next:\n  cargo test --workspace\n  vmm run {}", created.dir.join("system.ini").display());
        }
        None => println!("next:\n  cd {}\n  cargo test\n  vmm run system.ini", created.dir.display()),
    }
    Ok(())
}

fn run_machine(machine: &mut Machine, signals: &Signals) -> Result<RunEnd> {
    machine.boot()?;
    let end = machine.run()?;
    stopped(machine, end, signals);
    machine.shutdown().map(|()| end)
}

/// The summary line of a run's end.
fn stopped(machine: &Machine, end: vmm_host::machine::RunEnd, signals: &Signals) {
    let why = match (signals.received(), end) {
        (Some(signal), _) => format!("interrupted by {}", signal_name(signal)),
        (None, vmm_host::machine::RunEnd::Quiescent) => "nothing is left to do".to_string(),
        (None, vmm_host::machine::RunEnd::Until) => "the --until time was reached".to_string(),
    };
    tracing::info!("stopped at {} ms of virtual time: {why}", machine.now().as_millis());
}

/// `vmm run --watch`: boot, then run while reloading rebuilt devices, one
/// line per reload on stdout.
fn run_watching(machine: &mut Machine, debounce: std::time::Duration, signals: &Signals) -> Result<RunEnd> {
    machine.boot()?;
    let files = machine.plugin_devices();
    let watcher = vmm_host::watch::Watcher::new(&files, debounce)
        .map_err(|e| Error::Io { path: PathBuf::from("--watch"), message: e.to_string() })?;
    for (device, file, _) in &files {
        tracing::info!("watching {} for {device}", file.display());
    }
    let end = machine.run_watching(&watcher, None, &mut |r| {
        let state = match r.state_bytes {
            Some(n) => format!(", {n} bytes of state handed over"),
            None => String::new(),
        };
        let leaks = if r.leaks > 0 { format!(", {} leak(s) reclaimed", r.leaks) } else { String::new() };
        let why = r.message.as_deref().map(|m| format!(": {m}")).unwrap_or_default();
        // Human output, like every log line: stderr.
        eprintln!(
            "reload {}: {} in {:.1} ms ({} -> {}{state}{leaks}){why}",
            r.device,
            r.result,
            r.latency_ms,
            short(&r.old_build),
            short(&r.new_build)
        );
        std::ops::ControlFlow::Continue(())
    })?;
    stopped(machine, end, signals);
    machine.shutdown().map(|()| end)
}

fn short(build: &str) -> &str {
    if build.is_empty() { "?" } else { &build[..build.len().min(8)] }
}

fn check(args: CommonArgs) -> Result<()> {
    let m = manifest(&args.machine, &[])?;
    let mut machine = machine(&args, m)?;
    machine.boot()?;
    machine.shutdown()?;
    machine.finish_trace()?;
    let devices = machine.devices();
    let active = devices.iter().filter(|d| d.active).count();
    println!(
        "ok: {} device(s) loaded, {} initialized, {} violation(s)",
        devices.len(),
        active,
        machine.violation_count()
    );
    for d in devices.iter().filter(|d| !d.active) {
        println!("  {} ({}) was not initialized", d.info.name, d.file);
    }
    Ok(())
}

fn list(args: CommonArgs) -> Result<()> {
    let m = manifest(&args.machine, &[])?;
    let mut machine = machine(&args, m)?;
    machine.load_devices()?;
    let rows: Vec<[String; 6]> = machine
        .devices()
        .into_iter()
        .map(|d| {
            let apis = match (d.info.has_v86_api, d.info.has_pm_api) {
                (true, true) => "V86,PM",
                (true, false) => "V86",
                (false, true) => "PM",
                (false, false) => "-",
            };
            [
                d.info.name.clone(),
                format!("{:#06X}", d.info.device_id),
                format!("{:#010X}", d.info.init_order),
                relative_to_cwd(&d.file),
                apis.to_string(),
                d.info.services.len().to_string(),
            ]
        })
        .collect();
    print!("{}", table(["NAME", "ID", "INIT ORDER", "FILE", "APIS", "SERVICES"], &rows));
    Ok(())
}

/// A path as the user typed it: relative to the current directory when it
/// lies below it.
fn relative_to_cwd(file: &str) -> String {
    let path = Path::new(file);
    let below = std::env::current_dir().ok().and_then(|cwd| path.strip_prefix(&cwd).ok().map(Path::to_path_buf));
    let path = below.as_deref().unwrap_or(path);
    if path.is_absolute() {
        return path.display().to_string();
    }
    let clean: PathBuf = path.components().filter(|c| *c != std::path::Component::CurDir).collect();
    clean.display().to_string()
}

/// Format rows as an aligned text table.
pub fn table<const N: usize>(header: [&str; N], rows: &[[String; N]]) -> String {
    let mut widths = header.map(str::len);
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let line = |cells: Vec<&str>, out: &mut String| {
        let text: Vec<String> = cells.iter().zip(widths).map(|(c, w)| format!("{c:<w$}")).collect();
        out.push_str(text.join("  ").trim_end());
        out.push('\n');
    };
    line(header.to_vec(), &mut out);
    for r in rows {
        line(r.iter().map(String::as_str).collect(), &mut out);
    }
    out
}
