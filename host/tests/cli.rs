//! The `vmm` binary: commands, exit status, error paragraphs, trace files.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use vmm_host::testkit::plugin_dir;

fn vmm(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vmm"))
        .args(args)
        .arg("--plugin-dir")
        .arg(plugin_dir())
        .args(["--build", "never"])
        .current_dir(dir)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run vmm")
}

/// `vmm` with only `args` (for commands without plugin options).
fn vmm_bare(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vmm")).args(args).current_dir(dir).output().expect("run vmm")
}

fn scratch(name: &str, manifest: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("cli-{name}"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("system.ini"), manifest).unwrap();
    dir
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn list_prints_the_device_table_in_init_order() {
    let dir = scratch("list", "[386Enh]\ndevice = [\"*SHELL\", \"vhello\", \"VCOUNTD.386\"]\n");
    let out = vmm(&dir, &["list", "system.ini"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines[0].starts_with("NAME") && lines[0].contains("INIT ORDER") && lines[0].contains("SERVICES"));
    assert!(lines[1].starts_with("VHELLO") && lines[1].contains("0x0000") && lines[1].contains("0x80000000"));
    assert!(lines[2].starts_with("VCOUNTD") && lines[2].contains("0x3A10") && lines[2].trim_end().ends_with('3'));
    assert!(lines[3].starts_with("SHELL") && lines[3].contains("0xB0000000") && lines[3].contains("*SHELL"));
}

#[test]
fn check_reports_and_exits_zero() {
    let dir =
        scratch("check", "[386Enh]\ndevice = [\"vcountd\", \"fixture-misbehave\"]\n[FXBAD]\nfail = \"Device_Init\"\n");
    let out = vmm(&dir, &["check", "system.ini"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("2 device(s) loaded, 1 initialized"), "{stdout}");
    assert!(stdout.contains("FXBAD"), "{stdout}");
}

#[test]
fn run_writes_a_json_lines_trace_and_defaults_to_system_ini() {
    let dir = scratch("run", "[386Enh]\ndevice = [\"vcountd\"]\n");
    let out = vmm(&dir, &["run", "--trace", "out.jsonl"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let trace = std::fs::read_to_string(dir.join("out.jsonl")).unwrap();
    let records: Vec<serde_json::Value> = trace.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(records.iter().all(|r| r["t"].is_u64() && r["kind"].is_string()));
    assert!(records.iter().any(|r| r["kind"] == "control" && r["message"] == "Sys_Critical_Exit"));
}

#[test]
fn errors_exit_non_zero_with_one_paragraph() {
    let dir = scratch("dup", "[386Enh]\ndevice = [\"fixture-dup-a\", \"fixture-dup-b\"]\n");
    let out = vmm(&dir, &["run", "system.ini"]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    let error_lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(error_lines.len(), 1, "{stderr}");
    assert!(error_lines[0].contains("duplicate device ID 0x3F00") && error_lines[0].contains("FXDUPB"), "{stderr}");
}

#[test]
fn set_overrides_a_manifest_key() {
    let dir = scratch("set", "[386Enh]\ndevice = [\"vcountd\", \"vhello\"]\n");
    let out = vmm(&dir, &["run", "system.ini", "--set", "VCOUNTD.Start=7", "--trace", "t.jsonl"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let trace = std::fs::read_to_string(dir.join("t.jsonl")).unwrap();
    assert!(trace.contains("VCOUNTD total is now 8"), "{trace}");
}

#[test]
fn a_bad_manifest_names_file_line_and_column() {
    let dir = scratch("bad", "[386Enh]\ndevice = [\"vcountd\"]\n\n[machine]\nordr = \"lifo\"\n");
    let out = vmm(&dir, &["check", "system.ini"]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(stderr.contains("error: system.ini:5:1: unknown field `ordr`"), "{stderr}");
}

/// The repository's default machine, copied into a scratch directory.
fn default_machine(name: &str) -> PathBuf {
    let manifest = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../system.ini")).unwrap();
    scratch(name, &manifest)
}

#[test]
fn the_default_machine_tells_the_story_of_its_messages() {
    let dir = default_machine("demo");
    let out = vmm(&dir, &["run", "--trace", "demo.jsonl", "--timeline", "demo.json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.starts_with("What happened to each message:\n"), "{stdout}");
    assert!(stdout.contains("registered with VPOSTD; its callback is POSTHOST!PostCallback"), "{stdout}");
    assert!(stdout.contains("waited for the system VM to enable interrupts"), "{stdout}");
    assert!(stdout.contains("to leave the critical section"), "{stdout}");
    assert!(stdout.contains("the window's queue was full"), "{stdout}");
    let table: Vec<&str> = stdout.lines().skip_while(|l| !l.starts_with("VM ")).collect();
    assert_eq!(table[0].split_whitespace().collect::<Vec<_>>(), ["VM", "POSTED", "DELIVERED", "RETRIED", "DROPPED"]);
    assert!(table[1].starts_with("DOS1 (VM 2)") && table[1].contains("  6  "), "{stdout}");
    assert!(table[2].starts_with("DOS2 (VM 3)") && table[2].contains("  4  "), "{stdout}");
    assert!(table.iter().skip(1).all(|l| l.trim_end().ends_with(" 0")), "nothing dropped: {stdout}");
    // The timeline opens in Perfetto: a JSON object with trace events.
    let timeline: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("demo.json")).unwrap()).unwrap();
    assert!(timeline["traceEvents"].as_array().is_some_and(|e| !e.is_empty()));

    // `vmm story` tells the same story from the trace file.
    let again = vmm_bare(&dir, &["story", "demo.jsonl"]);
    assert!(again.status.success(), "{}", text(&again.stderr));
    assert_eq!(text(&again.stdout), stdout);
}

#[test]
fn no_story_and_story_errors() {
    let dir = default_machine("no-story");
    let out = vmm(&dir, &["run", "--no-story", "--trace", "t.jsonl"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "");
    std::fs::write(dir.join("other.jsonl"), "{\"t\":0,\"kind\":\"machine\"}\n").unwrap();
    let out = vmm_bare(&dir, &["story", "other.jsonl"]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("the trace has no VPOSTD records"), "{}", text(&out.stderr));
    std::fs::write(dir.join("bad.jsonl"), "{\"t\":0}\nnot json\n").unwrap();
    let out = vmm_bare(&dir, &["story", "bad.jsonl"]);
    assert!(text(&out.stderr).contains("line 2: not a trace record"), "{}", text(&out.stderr));
}

#[test]
fn run_watch_reloads_a_rebuilt_device_and_prints_one_line() {
    // A private copy of VPOSTD, so the test can "rebuild" it.
    let dir = scratch("watch", "[386Enh]\ndevice = [\"VPOSTD.386\"]\n[machine]\nrealtime = true\n");
    let lib = format!("libvpostd{}", std::env::consts::DLL_SUFFIX);
    let bytes = std::fs::read(plugin_dir().join(&lib)).unwrap();
    let plugins = dir.join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    std::fs::write(plugins.join(&lib), &bytes).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_vmm"))
        .args(["run", "system.ini", "--build", "never", "--watch", "--until", "3s", "--trace", "w.jsonl"])
        .arg("--plugin-dir")
        .arg(&plugins)
        .current_dir(&dir)
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(800));
    // What cargo does: the finished file appears under its name at once.
    let mut rebuilt = bytes.clone();
    rebuilt.extend_from_slice(b"rebuilt");
    std::fs::write(plugins.join("next.tmp"), &rebuilt).unwrap();
    std::fs::rename(plugins.join("next.tmp"), plugins.join(&lib)).unwrap();
    let out = child.wait_with_output().unwrap();
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    let lines: Vec<&str> = stdout.lines().filter(|l| l.starts_with("reload ")).collect();
    assert_eq!(lines.len(), 1, "{stdout}\n{stderr}");
    assert!(lines[0].starts_with("reload VPOSTD: ok in "), "{stdout}");
    assert!(stderr.contains("watching") && stderr.contains("plugin libraries mapped: 2 copies"), "{stderr}");
    let trace = std::fs::read_to_string(dir.join("w.jsonl")).unwrap();
    assert_eq!(trace.lines().filter(|l| l.contains("\"kind\":\"reload\"")).count(), 1);

    // Without --watch nothing is watched.
    let out = vmm(&dir, &["run", "system.ini", "--until", "10ms"]);
    assert!(out.status.success());
    assert!(!text(&out.stderr).contains("watching"), "{}", text(&out.stderr));
}

#[test]
fn seeds_of_2_to_the_63_and_above_are_accepted() {
    let dir = scratch("seed", "[386Enh]\ndevice = [\"vcountd\"]\n");
    for seed in ["9223372036854775808", "18446744073709551615"] {
        let out = vmm(&dir, &["run", "--order", "random", "--seed", seed, "--trace", "seed.jsonl"]);
        assert!(out.status.success(), "--seed {seed}: {}", text(&out.stderr));
        let trace = std::fs::read_to_string(dir.join("seed.jsonl")).unwrap();
        let first: serde_json::Value = serde_json::from_str(trace.lines().next().unwrap()).unwrap();
        assert_eq!(first["kind"], "machine");
        assert_eq!(first["seed"].as_u64(), Some(seed.parse().unwrap()), "{first}");
    }
}
