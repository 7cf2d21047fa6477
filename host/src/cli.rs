//! The `vmm` command line: `run`, `check`, `list`, `story`, `new`. Human output goes
//! through `tracing` (stderr, `RUST_LOG` honoured); machine output through
//! `--trace`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::error::{Error, Result};
use crate::machine::{Machine, MachineOptions};
use crate::manifest::{BuildPolicy, Manifest, ManifestBuilder};
use crate::resolve::{SearchPath, library_name};

/// The `vmm` command line.
#[derive(Parser, Debug)]
#[command(
    name = "vmm",
    version,
    about = "An emulator of the Windows 3.1/95 Virtual Machine Manager that hosts VxD plugins"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Boot a machine, run it to its natural end (or --until), shut it down.
    Run(RunArgs),
    /// Load and validate the devices, run the init phases, report, exit.
    Check(CommonArgs),
    /// Show the device list: name, ID, init order, file, APIs, services.
    List(CommonArgs),
    /// Tell the story of a VPOSTD run again from its `--trace` file.
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

#[derive(Args, Debug, Default)]
struct CommonArgs {
    /// Manifest files (TOML system.ini); later files override earlier ones.
    #[arg(value_name = "MANIFEST")]
    manifests: Vec<PathBuf>,
    /// Override a manifest key: SECTION.KEY=VALUE (repeatable).
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
    set: Vec<String>,
    /// Extra plugin directory, searched first (repeatable).
    #[arg(long = "plugin-dir", value_name = "DIR")]
    plugin_dir: Vec<PathBuf>,
    /// When to build workspace plugins with cargo: always (default), missing, never.
    #[arg(long, value_name = "WHEN")]
    build: Option<String>,
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
    /// Event order: lifo (default), fifo, random.
    #[arg(long, value_name = "ORDER")]
    order: Option<String>,
    /// Seed for the random order mode.
    #[arg(long)]
    seed: Option<u64>,
    /// Pace virtual time to the wall clock.
    #[arg(long)]
    realtime: bool,
    /// Write a Chrome trace / Perfetto timeline here.
    #[arg(long, value_name = "FILE")]
    timeline: Option<PathBuf>,
    /// Do not print the story of the messages when VPOSTD is in the machine.
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

/// Parse the process arguments and run; the exit status.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let result = match cli.command {
        None => run(RunArgs::default()),
        Some(Command::Run(args)) => run(args),
        Some(Command::Check(args)) => check(args),
        Some(Command::List(args)) => list(args),
        Some(Command::Story { trace }) => story(&trace),
        Some(Command::New { what }) => new_plugin(what),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = std::io::stdout().flush();
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .without_time()
        .try_init();
}

/// Read the manifests and overrides (default `system.ini`).
fn manifest(args: &CommonArgs, extra_sets: &[String]) -> Result<Manifest> {
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
fn build_plugins(m: &Manifest, policy: BuildPolicy, extra_dirs: &[PathBuf]) -> Result<Vec<PathBuf>> {
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
            let pkgs = packages.get_or_insert_with(|| crate::cargo::workspace_plugins(dir).map(|(_, p)| p));
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
    let packages = packages.unwrap_or_else(|| crate::cargo::workspace_plugins(dir).map(|(_, p)| p));
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
    tracing::info!("building {} with cargo", to_build.join(", "));
    let artifacts = crate::cargo::build(dir, &to_build, !cfg!(debug_assertions)).map_err(Error::Build)?;
    let mut dirs: Vec<PathBuf> = artifacts.values().filter_map(|p| p.parent().map(Path::to_path_buf)).collect();
    dirs.sort();
    dirs.dedup();
    Ok(dirs)
}

fn machine(args: &CommonArgs, m: Manifest) -> Result<Machine> {
    machine_with(args, m, false)
}

fn machine_with(args: &CommonArgs, m: Manifest, capture_trace: bool) -> Result<Machine> {
    let policy = match &args.build {
        Some(b) => b.parse().map_err(|e: String| Error::Build(e))?,
        None => m.machine.build,
    };
    let mut plugin_dirs = args.plugin_dir.clone();
    plugin_dirs.extend(build_plugins(&m, policy, &args.plugin_dir)?);
    let trace: Option<Box<dyn Write>> = match &args.trace {
        Some(path) => Some(Box::new(std::io::BufWriter::new(
            std::fs::File::create(path).map_err(|e| Error::Io { path: path.clone(), message: e.to_string() })?,
        ))),
        None => None,
    };
    Ok(Machine::new(m, MachineOptions { capture_trace, trace, plugin_dirs, ..MachineOptions::default() }))
}

fn run(args: RunArgs) -> Result<()> {
    let mut sets = Vec::new();
    if let Some(u) = &args.until {
        sets.push(format!("machine.until=\"{u}\""));
    }
    if let Some(o) = &args.order {
        sets.push(format!("machine.order=\"{o}\""));
    }
    if let Some(s) = args.seed {
        // A string: a TOML integer cannot hold seeds of 2^63 and above.
        sets.push(format!("machine.seed=\"{s}\""));
    }
    if args.realtime {
        sets.push("machine.realtime=true".to_string());
    }
    let m = manifest(&args.common, &sets)?;
    let tell = !args.no_story && m.devices.iter().any(|d| library_name(&d.name) == "vpostd");
    let mut machine = machine_with(&args.common, m, args.timeline.is_some() || tell)?;
    tracing::info!("seed {} (order {:?})", machine.seed(), machine.manifest().machine.order);
    let result = if args.watch {
        let debounce = args.watch_debounce.map(std::time::Duration::from_millis);
        run_watching(&mut machine, debounce.unwrap_or(crate::watch::DEFAULT_DEBOUNCE))
    } else {
        run_machine(&mut machine)
    };
    let mapped = crate::loader::stats();
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
    result?;
    machine.finish_trace()?;
    if tell {
        let records: Vec<serde_json::Value> =
            machine.trace().iter().filter_map(|r| serde_json::to_value(r).ok()).collect();
        if let Some(story) = crate::story::Story::tell(&records) {
            let _ = std::io::stderr().flush();
            print!("{story}");
        }
    }
    Ok(())
}

fn story(path: &Path) -> Result<()> {
    let io = |e: std::io::Error| Error::Io { path: path.to_path_buf(), message: e.to_string() };
    let text = std::fs::read_to_string(path).map_err(io)?;
    let mut records = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let record = serde_json::from_str(line).map_err(|e| Error::Io {
            path: path.to_path_buf(),
            message: format!("line {}: not a trace record: {e}", i + 1),
        })?;
        records.push(record);
    }
    match crate::story::Story::tell(&records) {
        Some(story) => {
            print!("{story}");
            Ok(())
        }
        None => Err(Error::Io {
            path: path.to_path_buf(),
            message: "the trace has no VPOSTD records: was VPOSTD in the machine?".to_string(),
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
    println!("next:\n  cd {}\n  cargo test\n  vmm run system.ini", created.dir.display());
    Ok(())
}

fn run_machine(machine: &mut Machine) -> Result<()> {
    machine.boot()?;
    let end = machine.run()?;
    tracing::info!(
        "stopped at t={}ms ({})",
        machine.now().as_millis(),
        match end {
            crate::machine::RunEnd::Quiescent => "nothing left to do",
            crate::machine::RunEnd::Until => "--until reached",
        }
    );
    machine.shutdown()
}

/// `vmm run --watch`: boot, then run while reloading rebuilt devices, one
/// line per reload on stdout.
fn run_watching(machine: &mut Machine, debounce: std::time::Duration) -> Result<()> {
    machine.boot()?;
    let files = machine.plugin_devices();
    let watcher = crate::watch::Watcher::new(&files, debounce)
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
        println!(
            "reload {}: {} in {:.1} ms ({} -> {}{state}{leaks}){why}",
            r.device,
            r.result,
            r.latency_ms,
            short(&r.old_build),
            short(&r.new_build)
        );
        let _ = std::io::stdout().flush();
        std::ops::ControlFlow::Continue(())
    })?;
    tracing::info!("stopped at t={}ms ({:?})", machine.now().as_millis(), end);
    machine.shutdown()
}

fn short(build: &str) -> &str {
    if build.is_empty() { "?" } else { &build[..build.len().min(8)] }
}

fn check(args: CommonArgs) -> Result<()> {
    let m = manifest(&args, &[])?;
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
    let m = manifest(&args, &[])?;
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
                d.file.clone(),
                apis.to_string(),
                d.info.services.len().to_string(),
            ]
        })
        .collect();
    print!("{}", table(["NAME", "ID", "INIT ORDER", "FILE", "APIS", "SERVICES"], &rows));
    Ok(())
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
