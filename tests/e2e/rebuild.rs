//! Hot reload with a real rebuild: a copy of the RELOADME fixture (and of
//! the plugin API it builds against) in a temporary workspace, loaded into
//! a machine that watches its build output; the test edits the source,
//! rebuilds with cargo and sees the new code run without a restart; then it
//! breaks the plugin's ABI, rebuilds, and sees the old code kept.
//!
//! The temporary workspace builds into this workspace's target directory,
//! with this workspace's lock file, so only the copied crates compile.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use vmm_host::dynamic::ReloadReport;
use vmm_host::watch::Watcher;
use vmm_plugin_api::ServiceCall;
use vmm_plugin_api::ddk::vxd_service;
use vmm_testkit::{Scenario, Trace, json};

const PROBE_ID: u16 = 0x3F30;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// This workspace's target directory, from cargo.
fn target_dir() -> PathBuf {
    let out = cargo()
        .args(["metadata", "--format-version", "1", "--no-deps", "--offline"])
        .current_dir(workspace())
        .output()
        .expect("cargo metadata");
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).expect("metadata JSON");
    PathBuf::from(meta["target_directory"].as_str().expect("target_directory"))
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// Edit `file`, replacing `old` (which must occur) with `new`.
fn edit(file: &Path, old: &str, new: &str) {
    let text = std::fs::read_to_string(file).unwrap();
    assert!(text.contains(old), "{} does not contain {old:?}", file.display());
    std::fs::write(file, text.replacen(old, new, 1)).unwrap();
}

/// Lay out the temporary workspace: the plugin API and the probe.
fn lay_out(dir: &Path) {
    let _ = std::fs::remove_dir_all(dir);
    let ws = workspace();
    write(
        &dir.join("Cargo.toml"),
        "[workspace]\nresolver = \"3\"\nmembers = [\"plugin-api\", \"probe\"]\n\n\
         [profile.dev]\npanic = \"unwind\"\ndebug = \"line-tables-only\"\n",
    );
    std::fs::copy(ws.join("Cargo.lock"), dir.join("Cargo.lock")).unwrap();
    copy_dir(&ws.join("plugin-api/src"), &dir.join("plugin-api/src"));
    write(
        &dir.join("plugin-api/Cargo.toml"),
        "[package]\nname = \"vmm-plugin-api\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\n[dependencies]\n\
         abi_stable = { version = \"=0.11.3\", default-features = false }\ntracing = \"0.1\"\n",
    );
    copy_dir(&ws.join("plugins/fixtures/reloadable/src"), &dir.join("probe/src"));
    write(
        &dir.join("probe/Cargo.toml"),
        "[package]\nname = \"vmm-reload-probe\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\n\
         [lib]\ncrate-type = [\"cdylib\"]\n\n[dependencies]\nvmm-plugin-api = { path = \"../plugin-api\" }\n",
    );
}

/// `cargo build` the probe; its artifact.
fn build(dir: &Path, target: &Path) -> Result<PathBuf, String> {
    let out = cargo()
        .args(["build", "-p", "vmm-reload-probe", "--offline"])
        .env("CARGO_TARGET_DIR", target)
        .current_dir(dir)
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(target.join("debug").join(format!("libvmm_reload_probe{}", std::env::consts::DLL_SUFFIX)))
}

fn generation(m: &mut vmm_host::Machine) -> u32 {
    let mut call = ServiceCall::default();
    m.call_service(vxd_service(PROBE_ID, 1), &mut call).unwrap();
    call.regs.eax
}

fn counter(m: &mut vmm_host::Machine, bump: bool) -> u32 {
    let mut call = ServiceCall::default();
    m.call_service(vxd_service(PROBE_ID, if bump { 3 } else { 2 }), &mut call).unwrap();
    call.regs.eax
}

/// Run the machine watching, while `change` runs on another thread; the
/// first reload's report.
fn reload_after(
    m: &mut vmm_host::Machine,
    watcher: &Watcher,
    change: impl FnOnce() -> Result<PathBuf, String> + Send + 'static,
) -> ReloadReport {
    let (tx, rx) = mpsc::channel();
    let worker = std::thread::spawn(move || {
        let r = change();
        let _ = tx.send(r.is_ok());
        r
    });
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut report = None;
    m.run_watching(watcher, Some(deadline), &mut |r| {
        report = Some(r.clone());
        ControlFlow::Break(())
    })
    .unwrap();
    let built = worker.join().unwrap();
    let _ = rx.try_recv();
    report.unwrap_or_else(|| panic!("no reload within the deadline; the build said {built:?}"))
}

#[test]
fn a_rebuilt_plugin_runs_without_a_restart_and_a_broken_abi_keeps_the_old_code() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("reload-probe");
    let target = target_dir();
    lay_out(&dir);
    let started = Instant::now();
    let first = build(&dir, &target).expect("the probe builds");
    let first_build = started.elapsed();

    let mut m = Scenario::new("[386Enh]\ndevice = [\"vmm-reload-probe\"]\n")
        .plugin_dir(first.parent().unwrap())
        .machine()
        .expect("manifest");
    m.boot().expect("boot");
    assert_eq!(generation(&mut m), 1);
    counter(&mut m, true);
    counter(&mut m, true);
    let watcher = Watcher::new(&m.plugin_devices(), Duration::from_millis(25)).expect("watch");

    // Edit the code, rebuild: the new generation runs, with the counter.
    let (d, t) = (dir.clone(), target.clone());
    let report = reload_after(&mut m, &watcher, move || {
        edit(&d.join("probe/src/lib.rs"), "pub const GENERATION: u32 = 1;", "pub const GENERATION: u32 = 2;");
        build(&d, &t)
    });
    assert_eq!(report.result, "ok", "{report:?}");
    assert_eq!(report.state_bytes, Some(8));
    assert_ne!(report.old_build, report.new_build);
    assert!(report.latency_ms < 5_000.0, "{report:?}");
    assert_eq!(generation(&mut m), 2, "the rebuilt code runs");
    assert_eq!(counter(&mut m, false), 2, "with the old instance's state");

    // Break the ABI (a type the host checks gains a field), rebuild: the
    // layout check refuses it and generation 2 keeps running.
    let (d, t) = (dir.clone(), target.clone());
    let report = reload_after(&mut m, &watcher, move || {
        edit(
            &d.join("plugin-api/src/abi.rs"),
            "    pub exec_time_ms: u32,\n}",
            "    pub exec_time_ms: u32,\n    /// A field the host does not know.\n    pub extra: u32,\n}",
        );
        edit(&d.join("probe/src/lib.rs"), "pub const GENERATION: u32 = 2;", "pub const GENERATION: u32 = 3;");
        build(&d, &t)
    });
    assert_eq!(report.result, "layout_mismatch", "{report:?}");
    assert!(report.message.as_deref().unwrap_or("").contains("VmInfo"), "{report:?}");
    assert_eq!(generation(&mut m), 2, "the old code runs on");
    assert_eq!(counter(&mut m, false), 2);
    m.shutdown().unwrap();
    let trace = Trace::of(&m);
    let results: Vec<_> = trace.values(json!({"kind": "reload"}), "result");
    assert_eq!(results, [json!("ok"), json!("layout_mismatch")]);
    eprintln!("first build of the probe took {first_build:?}; whole test {:?}", started.elapsed());
}
