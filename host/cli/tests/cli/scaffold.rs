//! `vmm new`: each kind of generated crate is formatted, builds, passes its
//! own generated tests, and the VxD it builds loads into a machine with
//! another device set.
//!
//! The generated crates build into this workspace's target directory with a
//! copy of its `Cargo.lock`, so they reuse the dependencies already
//! compiled here instead of building their own.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

use vmm_testkit::{ClientRegs, Scenario, json};

/// This workspace's target directory (`CARGO_TARGET_TMPDIR` is its `tmp`).
fn target_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).parent().expect("the target directory").to_path_buf()
}

/// A fresh directory for a generated crate (not created: `vmm new` does).
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("scaffold").join(name);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).unwrap();
    }
    std::fs::create_dir_all(dir.parent().unwrap()).unwrap();
    dir
}

fn vmm_new(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vmm")).arg("new").args(args).output().expect("run vmm")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `vmm new KIND NAME ... --dir DIR`, then the checks every generated crate
/// passes: rustfmt has nothing to change, `cargo test` builds it without
/// warnings and its tests pass. Returns the crate's directory.
fn generate_and_test(kind: &str, name: &str, extra: &[&str], tests: usize) -> PathBuf {
    let dir = scratch(name);
    let mut args = vec![kind, name, "--dir", dir.to_str().unwrap()];
    args.extend_from_slice(extra);
    let out = vmm_new(&args);
    assert!(out.status.success(), "vmm new {args:?}: {}", text(&out.stderr));
    std::fs::copy(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../Cargo.lock"), dir.join("Cargo.lock")).unwrap();

    let cargo = PathBuf::from(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    let rustfmt = Some(cargo.with_file_name("rustfmt")).filter(|p| p.is_file()).unwrap_or_else(|| "rustfmt".into());
    let fmt = Command::new(rustfmt)
        .args(["--edition", "2024", "--check", "src/lib.rs", "tests/machine.rs"])
        .current_dir(&dir)
        .output()
        .expect("run rustfmt");
    assert!(fmt.status.success(), "the generated {kind} is not rustfmt-clean:\n{}", text(&fmt.stdout));

    let test = Command::new(&cargo)
        .arg("test")
        .current_dir(&dir)
        .env("CARGO_TARGET_DIR", target_dir())
        .env_remove("CARGO_MANIFEST_DIR")
        .output()
        .expect("run cargo test");
    let (stdout, stderr) = (text(&test.stdout), text(&test.stderr));
    assert!(test.status.success(), "cargo test of the generated {kind} failed:\n{stdout}\n{stderr}");
    assert!(
        stdout.contains(&format!("test result: ok. {tests} passed")),
        "expected {tests} generated tests to pass:\n{stdout}"
    );
    assert!(!stderr.contains("warning"), "the generated {kind} builds with warnings:\n{stderr}");
    dir
}

#[test]
fn every_kind_of_new_crate_builds_and_passes_its_own_tests() {
    let start = Instant::now();
    let kitvxd = generate_and_test("vxd", "kitvxd", &["--id", "0x3A30"], 4);
    let vxd = start.elapsed();
    generate_and_test("vxd", "kitnoid", &[], 2);
    generate_and_test("dll", "kitdll", &[], 1);
    generate_and_test("app", "kitapp", &[], 1);
    generate_and_test("dos", "kit-dos", &[], 2);
    eprintln!("scaffold: the VxD with an ID took {vxd:.1?}; all five kinds {:.1?}", start.elapsed());

    // The VxD in another device set: VCOUNTD and VHELLO from this workspace.
    let run = Scenario::new(
        r#"
        [386Enh]
        device = ["*SHELL", "vcountd", "KITVXD.386", "vhello"]
        [VCOUNTD]
        Start = 40
        "#,
    )
    .plugin_dir(target_dir().join("debug"))
    .run();
    run.assert_ok();
    let t = run.trace();
    for device in ["SHELL", "VCOUNTD", "KITVXD", "VHELLO"] {
        t.expect(json!({"kind": "device_loaded", "device": device}));
    }
    t.expect(json!({"kind": "device_loaded", "device": "KITVXD", "id": 0x3A30}));
    t.expect(json!({"kind": "note", "device": "KITVXD", "note": "device_init"}));
    t.expect(json!({"kind": "vxd_call", "caller": "VHELLO", "service": "VCOUNTD_Add"}));
    t.expect_none(json!({"kind": "violation"}));

    // And its PM API answers there, found through INT 2Fh like any other.
    let mut s =
        Scenario::new("[386Enh]\ndevice = [\"vcountd\", \"KITVXD.386\"]").plugin_dir(target_dir().join("debug")).boot();
    let out = s.call_pm_api(0x3A30, ClientRegs::default()).expect("KITVXD has a PM API");
    assert_eq!(out.eax & 0xFFFF, 0x0100);
    assert_eq!(s.call_pm_api(0x3A10, ClientRegs::default()), None, "VCOUNTD has no PM API");

    // Edit, rebuild, hot-reload: the machine runs on with the new code.
    let file = s.machine().plugin_devices().into_iter().find(|(d, _, _)| d == "KITVXD").unwrap().1;
    let lib = kitvxd.join("src/lib.rs");
    let source = std::fs::read_to_string(&lib).unwrap();
    assert!(source.contains(".version(1, 0)"));
    std::fs::write(&lib, source.replace(".version(1, 0)", ".version(1, 1)")).unwrap();
    let cargo = PathBuf::from(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    let build = Command::new(&cargo)
        .arg("build")
        .current_dir(&kitvxd)
        .env("CARGO_TARGET_DIR", target_dir())
        .output()
        .expect("run cargo build");
    assert!(build.status.success(), "{}", text(&build.stderr));
    let report = s.machine().reload_device("KITVXD", &file);
    assert_eq!(report.result, "ok", "{report:?}");
    assert_ne!(report.old_build, report.new_build, "the rebuilt file is new code");
    let out = s.call_pm_api(0x3A30, ClientRegs::default()).expect("the API entry still works");
    assert_eq!(out.eax & 0xFFFF, 0x0101, "the new version answers");
    s.finish().assert_ok();
}

#[test]
fn bad_names_ids_and_directories_are_refused() {
    let case = |args: &[&str]| {
        let out = vmm_new(args);
        assert!(!out.status.success(), "vmm new {args:?} succeeded");
        text(&out.stderr)
    };
    let dir = scratch("refused");
    let d = dir.to_str().unwrap();
    assert!(case(&["vxd", "waytoolong", "--dir", d]).contains("1 to 8"));
    assert!(case(&["vxd", "9lives", "--dir", d]).contains("starts with a letter"));
    assert!(case(&["app", "my.app", "--dir", d]).contains("`.` cannot be part of a crate name"));
    assert!(case(&["vxd", "okname", "--id", "0x17", "--dir", d]).contains("SHELL's ID"));
    assert!(case(&["vxd", "okname", "--id", "0x9000", "--dir", d]).contains("bit 15"));
    assert!(case(&["vxd", "okname", "--id", "zz", "--dir", d]).contains("0xNNNN"));
    assert!(
        case(&["vxd", "okname", "--sdk-path", "/nonexistent/plugin-api", "--dir", d]).contains("--sdk-path"),
        "a missing SDK path is named"
    );
    assert!(!dir.exists(), "nothing is written for refused input");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("notes.txt"), "mine").unwrap();
    let err = case(&["vxd", "okname", "--dir", d]);
    assert!(err.contains("exists and is not empty"), "{err}");
    assert_eq!(std::fs::read_to_string(dir.join("notes.txt")).unwrap(), "mine");
}

#[test]
fn the_sdk_comes_from_a_path_or_a_version() {
    let plugin_api = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../plugin-api").canonicalize().unwrap();
    let kit = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testkit").canonicalize().unwrap();

    let dir = scratch("sdk-path");
    let out = vmm_new(&["app", "bypath", "--sdk-path", plugin_api.to_str().unwrap(), "--dir", dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let toml = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
    assert!(toml.contains(&format!("vmm-plugin-api = {{ path = \"{}\" }}", plugin_api.display())), "{toml}");
    assert!(toml.contains(&format!("vmm-testkit = {{ path = \"{}\" }}", kit.display())), "{toml}");
    assert!(toml.contains("\n[workspace]\n"), "a workspace of its own: {toml}");

    let dir = scratch("sdk-version");
    let out = vmm_new(&["dos", "byver", "--sdk-version", "0.1", "--dir", dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let toml = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
    assert!(toml.contains("vmm-plugin-api = \"0.1\""), "{toml}");
    assert!(toml.contains(&format!("vmm-testkit = {{ path = \"{}\" }}", kit.display())), "{toml}");

    let out = vmm_new(&["vxd", "both", "--sdk-version", "0.1", "--sdk-path", "x"]);
    assert!(!out.status.success() && text(&out.stderr).contains("cannot be used with"), "{}", text(&out.stderr));
}

/// Lines of a child's stderr, as they come.
fn stderr_lines(child: &mut std::process::Child) -> std::sync::mpsc::Receiver<String> {
    use std::io::BufRead;
    let stderr = child.stderr.take().expect("piped stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Wait for a line that `want` accepts; every line seen, for the message.
fn wait_for(rx: &std::sync::mpsc::Receiver<String>, seen: &mut Vec<String>, want: impl Fn(&str) -> bool) -> bool {
    let deadline = Instant::now() + std::time::Duration::from_secs(600);
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(line) => {
                let found = want(&line);
                seen.push(line);
                if found {
                    return true;
                }
            }
            Err(_) => return false,
        }
    }
    false
}

#[test]
fn vmm_run_watch_reloads_a_new_vxd_after_a_plain_cargo_build() {
    // The loop the README prints, with default flags: `vmm new vxd`, then
    // `vmm run system.ini --watch`, an edit and a plain `cargo build`.
    let dir = scratch("hotvxd");
    let out = vmm_new(&["vxd", "hotvxd", "--id", "0x3A31", "--dir", dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    std::fs::copy(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../Cargo.lock"), dir.join("Cargo.lock")).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_vmm"))
        .args(["run", "system.ini", "--watch", "--trace", "watch.jsonl"])
        .current_dir(&dir)
        .env("CARGO_TARGET_DIR", target_dir())
        .env_remove("CARGO_MANIFEST_DIR")
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run vmm");
    let rx = stderr_lines(&mut child);
    let mut seen = Vec::new();
    let watching = wait_for(&rx, &mut seen, |l| l.contains("watching") && l.contains("libhotvxd"));
    if !watching {
        let _ = child.kill();
        panic!("vmm run --watch never started watching:\n{}", seen.join("\n"));
    }
    assert!(
        seen.iter().any(|l| l.contains("watching") && l.contains("/debug/libhotvxd")),
        "it watches what a plain `cargo build` writes:\n{}",
        seen.join("\n")
    );

    let lib = dir.join("src/lib.rs");
    let source = std::fs::read_to_string(&lib).unwrap();
    std::fs::write(&lib, source.replace(".version(1, 0)", ".version(1, 1)")).unwrap();
    let cargo = PathBuf::from(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    let build = Command::new(&cargo)
        .arg("build")
        .current_dir(&dir)
        .env("CARGO_TARGET_DIR", target_dir())
        .env_remove("CARGO_MANIFEST_DIR")
        .output()
        .expect("run cargo build");
    assert!(build.status.success(), "{}", text(&build.stderr));
    let reloaded = wait_for(&rx, &mut seen, |l| l.starts_with("reload HOTVXD: "));
    let _ = child.kill();
    let _ = child.wait();
    assert!(reloaded, "no reload after `cargo build`:\n{}", seen.join("\n"));
    let line = seen.last().unwrap();
    assert!(line.starts_with("reload HOTVXD: ok in "), "{line}");

    let trace = std::fs::read_to_string(dir.join("watch.jsonl")).unwrap();
    let reloads: Vec<serde_json::Value> = trace
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|r| r["kind"] == "reload")
        .collect();
    assert_eq!(reloads.len(), 1, "{trace}");
    assert_eq!(reloads[0]["device"], "HOTVXD");
    assert_eq!(reloads[0]["result"], "ok");
    assert_ne!(reloads[0]["old_build"], reloads[0]["new_build"]);
}

#[test]
fn vmm_new_inside_a_vxd_adds_a_member_wired_into_its_tests() {
    let root = scratch("wsvxd");
    let out = vmm_new(&["vxd", "wsvxd", "--id", "0x3A32", "--dir", root.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    std::fs::copy(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../Cargo.lock"), root.join("Cargo.lock")).unwrap();
    for (kind, name) in [("dos", "wsdos"), ("app", "wsapp")] {
        let out =
            Command::new(env!("CARGO_BIN_EXE_vmm")).args(["new", kind, name]).current_dir(&root).output().unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert!(text(&out.stdout).contains("joined the workspace"), "{}", text(&out.stdout));
        assert!(root.join(name).join("src/lib.rs").is_file());
        assert!(!root.join(name).join(".gitignore").exists(), "a member has no files of a workspace root");
        assert!(root.join(format!("tests/with_{name}.rs")).is_file());
    }
    let toml = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
    assert!(toml.contains("members = [\"wsdos\", \"wsapp\"]"), "{toml}");
    assert!(toml.contains("uses = [\"WSDOS\", \"WSAPP\"]"), "{toml}");
    let member = std::fs::read_to_string(root.join("wsdos/Cargo.toml")).unwrap();
    assert!(!member.contains("[workspace]") && !member.contains("[profile"), "{member}");
    let ini = std::fs::read_to_string(root.join("wsdos/system.ini")).unwrap();
    assert!(ini.contains("plugin_path = [\"../target/debug\"]"), "{ini}");

    // One `cargo test --workspace`: every crate's own tests, and the VxD
    // with each program.
    let cargo = PathBuf::from(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    let test = Command::new(&cargo)
        .args(["test", "--workspace"])
        .current_dir(&root)
        .env("CARGO_TARGET_DIR", target_dir())
        .env_remove("CARGO_MANIFEST_DIR")
        .output()
        .expect("run cargo test");
    let (stdout, stderr) = (text(&test.stdout), text(&test.stderr));
    assert!(test.status.success(), "{stdout}\n{stderr}");
    for t in ["wsvxd_runs_with_wsdos ... ok", "wsvxd_runs_with_wsapp ... ok", "wsdos_prints_the_windows_version ... ok"]
    {
        assert!(stdout.contains(t), "{t} missing:\n{stdout}");
    }
    assert!(!root.join("wsdos/target").exists() && !root.join("wsdos/Cargo.lock").exists(), "one target, one lock");
}
