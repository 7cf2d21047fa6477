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
