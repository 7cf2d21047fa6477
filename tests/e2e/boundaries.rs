//! The layers ARCHITECTURE.md draws, checked in the host's imports: every
//! `crate::MODULE` path in a file's code (comments and `#[cfg(test)]`
//! modules aside) must be allowed by the file's layer.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Configuration and loading: they describe and load a machine and import
/// no emulation.
const BOTTOM: &[&str] =
    &["bounded", "cargo", "error", "expect", "image", "loader", "manifest", "origin", "resolve", "time"];

/// What the emulation is made of above the bottom layer. The bottom layer
/// imports none of these; `vmm/` imports none but itself (`vmm`), the
/// trace and the violation codes.
const EMULATION: &[&str] = &[
    "abi", "boot", "builtin", "dispatch", "dynamic", "explore", "machine", "profile", "reclaim", "ring3", "shell",
    "timeline", "vmm", "vxdldr", "watch", "vpicd", "hw",
];

/// What the machine (`host/src/machine/`), the composition root, may
/// import: the bottom layer, the subsystems under `vmm/`, the trace, the
/// violation codes, and the state of SHELL and ring 3. The services that act on the
/// machine (SHELL's, ring 3's, boot, dispatch, VXDLDR, the ABI shims)
/// import it; it imports none of them, so no import cycle runs through it.
const MACHINE_MAY_IMPORT: &[&str] =
    &["machine", "vmm", "trace", "violation", "timeline", "shell::state", "ring3::state", "ring3::machine_code", "hw"];

fn host_src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../host/src")
}

/// The top-level modules a file's code names as `crate::NAME`.
fn imports(file: &Path) -> BTreeSet<String> {
    let text = std::fs::read_to_string(file).unwrap();
    let code = match text.find("#[cfg(test)]\nmod tests") {
        Some(at) => &text[..at],
        None => &text[..],
    };
    let mut found = BTreeSet::new();
    for line in code.lines() {
        let line = line.split("//").next().unwrap_or("");
        let mut rest = line;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            let name: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            if !name.is_empty() {
                found.insert(name);
            }
        }
        // `use crate::{a, b::c}` names several modules at once.
        if let Some(group) = line.trim_start().strip_prefix("use crate::{") {
            for part in group.split(',') {
                let name: String = part.trim().chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                if !name.is_empty() {
                    found.insert(name);
                }
            }
        }
    }
    found
}

/// The `crate::` paths a file's code names, to two segments where the
/// second is a module (`shell::state`), else to one (`trace`).
fn import_paths(file: &Path) -> BTreeSet<String> {
    let text = std::fs::read_to_string(file).unwrap();
    let code = match text.find("#[cfg(test)]\nmod tests") {
        Some(at) => &text[..at],
        None => &text[..],
    };
    let segment = |s: &str| s.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect::<String>();
    let mut found = BTreeSet::new();
    for line in code.lines() {
        let line = line.split("//").next().unwrap_or("");
        let mut rest = line;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            let first = segment(rest);
            let after = &rest[first.len()..];
            let second = after.strip_prefix("::").map(segment).unwrap_or_default();
            if second.starts_with(|c: char| c.is_ascii_lowercase()) {
                found.insert(format!("{first}::{second}"));
            } else if !first.is_empty() {
                found.insert(first);
            }
        }
    }
    found
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "rs"))
        .collect();
    out.sort();
    out
}

#[test]
fn configuration_and_loading_import_no_emulation() {
    let src = host_src();
    let mut broken = Vec::new();
    for name in BOTTOM {
        let file = src.join(format!("{name}.rs"));
        assert!(file.exists(), "{} is gone: update BOTTOM", file.display());
        for import in imports(&file) {
            if EMULATION.contains(&import.as_str()) {
                broken.push(format!("host/src/{name}.rs imports crate::{import}"));
            }
        }
    }
    assert!(broken.is_empty(), "the bottom layer imports emulation:\n{}", broken.join("\n"));
}

#[test]
fn the_vmm_subsystems_import_no_machine_shell_ring3_or_loader() {
    let allowed = ["vmm", "trace", "violation", "time", "manifest"];
    let mut broken = Vec::new();
    for file in rust_files(&host_src().join("vmm")) {
        let stem = file.file_stem().unwrap().to_str().unwrap().to_string();
        let outside: Vec<String> = imports(&file)
            .into_iter()
            .filter(|i| !allowed.contains(&i.as_str()) && (EMULATION.contains(&i.as_str()) || i == "loader"))
            .collect();
        if !outside.is_empty() {
            broken.push(format!("host/src/vmm/{stem}.rs imports {}", outside.join(", ")));
        }
    }
    assert!(broken.is_empty(), "vmm/ imports what sits above it:\n{}", broken.join("\n"));
}

#[test]
fn the_vmm_subsystems_return_domain_errors_not_the_abis() {
    // A subsystem's errors are its own (`PortError`, `StackError`, ...);
    // the machine maps them to the `VmmError` a service returns.
    let mut broken = Vec::new();
    for file in rust_files(&host_src().join("vmm")) {
        let text = std::fs::read_to_string(&file).unwrap();
        let code = text.find("#[cfg(test)]\nmod tests").map_or(&text[..], |at| &text[..at]);
        for (n, line) in code.lines().enumerate() {
            let line = line.split("//").next().unwrap_or("");
            if line.contains("VmmError") || line.contains("VmmResult") {
                let stem = file.file_stem().unwrap().to_str().unwrap();
                broken.push(format!("host/src/vmm/{stem}.rs:{}: {}", n + 1, line.trim()));
            }
        }
    }
    assert!(broken.is_empty(), "vmm/ speaks the ABI's error type:\n{}", broken.join("\n"));
}

#[test]
fn the_hardware_models_import_nothing_of_the_machine() {
    // `hw/` is plain data below everything: a model imports no module of
    // the crate but its own.
    let mut broken = Vec::new();
    for file in rust_files(&host_src().join("hw")) {
        let stem = file.file_stem().unwrap().to_str().unwrap().to_string();
        let outside: Vec<String> = imports(&file).into_iter().filter(|i| i != "hw").collect();
        if !outside.is_empty() {
            broken.push(format!("host/src/hw/{stem}.rs imports {}", outside.join(", ")));
        }
    }
    assert!(broken.is_empty(), "hw/ imports the machine or its services:\n{}", broken.join("\n"));
}

#[test]
fn the_machine_imports_no_service_that_acts_on_it() {
    let mut broken = Vec::new();
    for file in rust_files(&host_src().join("machine")) {
        let name = file.file_name().unwrap().to_str().unwrap().to_string();
        for path in import_paths(&file) {
            let top = path.split("::").next().unwrap();
            let allowed = BOTTOM.contains(&top)
                || MACHINE_MAY_IMPORT.contains(&top)
                || MACHINE_MAY_IMPORT.contains(&path.as_str());
            if !allowed {
                broken.push(format!("host/src/machine/{name} imports crate::{path}"));
            }
        }
    }
    assert!(broken.is_empty(), "the machine imports code that imports it:\n{}", broken.join("\n"));
}

#[test]
fn the_path_scan_keeps_a_module_under_a_module() {
    let dir = std::env::temp_dir().join(format!("vmm-boundaries-paths-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("x.rs");
    std::fs::write(
        &file,
        "use crate::shell::state::S;\nuse crate::trace::{A, B};\nfn f() { crate::machine::Core::go(); }\n",
    )
    .unwrap();
    let found: Vec<String> = import_paths(&file).into_iter().collect();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(found, ["machine", "shell::state", "trace"]);
}

#[test]
fn the_import_scan_sees_paths_groups_and_skips_comments_and_tests() {
    let dir = std::env::temp_dir().join(format!("vmm-boundaries-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("x.rs");
    std::fs::write(
        &file,
        "use crate::{machine::Core, trace};\n\
         // use crate::shell;\n\
         fn f() { crate::ring3::go(); } // crate::boot\n\
         #[cfg(test)]\nmod tests {\n    use crate::loader;\n}\n",
    )
    .unwrap();
    let found: Vec<String> = imports(&file).into_iter().collect();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(found, ["machine", "ring3", "trace"]);
}
