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

use vmm_host::testkit::{ClientRegs, Scenario, json};

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
    std::fs::copy(Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.lock"), dir.join("Cargo.lock")).unwrap();

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
    let plugin_api = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugin-api").canonicalize().unwrap();
    let host = Path::new(env!("CARGO_MANIFEST_DIR")).canonicalize().unwrap();

    let dir = scratch("sdk-path");
    let out = vmm_new(&["app", "bypath", "--sdk-path", plugin_api.to_str().unwrap(), "--dir", dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let toml = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
    assert!(toml.contains(&format!("vmm-plugin-api = {{ path = \"{}\" }}", plugin_api.display())), "{toml}");
    assert!(toml.contains(&format!("vmm-host = {{ path = \"{}\" }}", host.display())), "{toml}");
    assert!(toml.contains("\n[workspace]\n"), "a workspace of its own: {toml}");

    let dir = scratch("sdk-version");
    let out = vmm_new(&["dos", "byver", "--sdk-version", "0.1", "--dir", dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let toml = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
    assert!(toml.contains("vmm-plugin-api = \"0.1\""), "{toml}");
    assert!(toml.contains(&format!("vmm-host = {{ path = \"{}\" }}", host.display())), "{toml}");

    let out = vmm_new(&["vxd", "both", "--sdk-version", "0.1", "--sdk-path", "x"]);
    assert!(!out.status.success() && text(&out.stderr).contains("cannot be used with"), "{}", text(&out.stderr));
}
