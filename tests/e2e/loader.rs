//! Loading plugin files: every way a file can fail to be a plugin gets an
//! error naming the file and the cause, and the host keeps running.

use vmm_host::{Error, LoadCause};
use vmm_testkit::{Scenario, json};

fn load_error(device: &str) -> (String, LoadCause, String) {
    let run = Scenario::new(&format!(
        r#"
        [386Enh]
        device = ["vcountd", "{device}"]
    "#
    ))
    .run();
    let error = run.expect_error();
    let text = error.to_string();
    match error {
        Error::Load { name, cause, file } => {
            assert_eq!(name, device);
            assert!(text.contains(&file.display().to_string()), "the message names the file: {text}");
            run.trace().expect(json!({"kind": "device_rejected", "device": device, "reason": "load_error"}));
            // Nothing was initialized: the error is reported before boot.
            run.trace().expect_none(json!({"kind": "control"}));
            (name.clone(), cause.clone(), text)
        }
        other => panic!("unexpected error {other}"),
    }
}

#[test]
fn a_library_that_is_not_abi_stable_is_refused() {
    let (_, cause, text) = load_error("fixture-not-abi-stable");
    assert_eq!(cause, LoadCause::NotAbiStable);
    assert!(text.contains("not an abi_stable plugin"), "{text}");
}

#[test]
fn an_incompatible_interface_version_is_refused_naming_both_versions() {
    let (_, cause, text) = load_error("fixture-old-interface");
    match cause {
        LoadCause::IncompatibleVersion { host, plugin } => {
            assert_eq!(plugin, "0.0.9");
            assert_eq!(host, env!("CARGO_PKG_VERSION"));
        }
        other => panic!("unexpected cause {other:?}"),
    }
    assert!(text.contains("incompatible interface version"), "{text}");
}

#[test]
fn a_layout_mismatch_is_refused_with_a_short_summary() {
    let (_, cause, text) = load_error("fixture-skewed-layout");
    assert!(matches!(cause, LoadCause::LayoutMismatch(_)), "{cause:?}");
    assert!(text.contains("layout mismatch"), "{text}");
    assert!(text.lines().count() <= 2 && text.len() < 1500, "summarised, not abi_stable's whole report: {text}");
}

#[test]
fn a_constructor_error_is_refused_with_its_message() {
    let (_, cause, text) = load_error("fixture-ctor-error");
    assert!(matches!(cause, LoadCause::Constructor(_)), "{cause:?}");
    assert!(text.contains("the constructor refuses to build the root module"), "{text}");
}

#[test]
fn a_constructor_panic_is_refused_without_taking_the_host_down() {
    let (_, cause, _) = load_error("fixture-ctor-panic");
    assert_eq!(cause, LoadCause::ConstructorPanic);
}

#[test]
fn a_missing_plugin_lists_the_directories_searched() {
    let (_, cause, text) = load_error("no-such-vxd");
    assert!(matches!(cause, LoadCause::NotFound { .. }), "{cause:?}");
    assert!(text.contains("searched"), "{text}");
}

#[test]
fn the_same_plugin_loaded_twice_in_a_process_gives_independent_instances() {
    // Two machines in one process load the same file: one library copy,
    // separate instances with separate state.
    let a = Scenario::new(
        r#"
        [386Enh]
        device = ["vcountd", "vhello"]
        [VCOUNTD]
        Start = 100
    "#,
    )
    .run();
    let b = Scenario::new(
        r#"
        [386Enh]
        device = ["vcountd", "vhello"]
    "#,
    )
    .run();
    a.trace().expect(json!({"kind": "debug_string", "text": "VCOUNTD total is now 101"}));
    b.trace().expect(json!({"kind": "debug_string", "text": "VCOUNTD total is now 1"}));
}

#[test]
fn no_code_path_uses_the_caching_root_module_loader() {
    // RootModule::load_from* returns the first library forever; reloads and
    // independent copies depend on never calling it.
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    for dir in ["host/src", "plugin-api/src"] {
        for entry in walk(&std::path::Path::new(root).join(dir)) {
            let text = std::fs::read_to_string(&entry).unwrap();
            for forbidden in ["load_from_directory", "load_from_file", "::load_from("] {
                assert!(!text.contains(forbidden), "{} uses {forbidden}", entry.display());
            }
        }
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
    out
}

/// A copy of the VCOUNTD plugin with `damage` done to it, in a directory
/// of its own.
fn damaged_copy(name: &str, damage: impl FnOnce(&mut Vec<u8>)) -> std::path::PathBuf {
    let mut bytes = std::fs::read(vmm_testkit::plugin_dir().join("libvcountd.so")).unwrap();
    damage(&mut bytes);
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("loader-{name}"));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("libvcountd.so");
    std::fs::write(&file, bytes).unwrap();
    file
}

#[test]
fn a_truncated_plugin_is_refused_before_loading_with_a_plugin_rejected_record() {
    let file = damaged_copy("truncated", |b| b.truncate(b.len() / 2));
    let run = Scenario::new(&format!(
        r#"
        [386Enh]
        device = ["vhello", "{}"]
    "#,
        file.display()
    ))
    .run();
    match run.expect_error() {
        Error::Load { cause: LoadCause::Rejected(defect), file: f, .. } => {
            assert_eq!(defect.code, "truncated");
            assert_eq!(f, &file);
        }
        other => panic!("unexpected error {other}"),
    }
    let text = run.expect_error().to_string();
    assert!(text.contains("libvcountd.so") && text.contains("extends past the end of the file"), "{text}");
    run.trace().expect_in_order(&[
        json!({"kind": "plugin_rejected", "file": file.display().to_string(), "defect": "truncated"}),
        json!({"kind": "device_rejected", "reason": "load_error", "file": file.display().to_string()}),
    ]);
    run.trace().expect_none(json!({"kind": "control"}));
}

#[test]
#[cfg(target_arch = "x86_64")]
fn a_plugin_for_another_machine_is_refused_naming_it() {
    let file = damaged_copy("machine", |b| b[18..20].copy_from_slice(&183u16.to_le_bytes()));
    let run = Scenario::new(&format!(
        r#"
        [386Enh]
        device = ["{}"]
    "#,
        file.display()
    ))
    .run();
    let text = run.expect_error().to_string();
    assert!(text.contains("built for AArch64"), "{text}");
    run.trace().expect(json!({"kind": "plugin_rejected", "defect": "wrong_machine"}));
}
