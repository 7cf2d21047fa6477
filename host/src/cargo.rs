//! Building plugins with cargo: `cargo test` and `cargo run` do not build
//! `cdylib` crates that are not dependencies, so the CLI (for plugins it
//! cannot find), the test kit and the end-to-end tests run one nested
//! `cargo build` and read the artifacts from its JSON messages.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;

/// The cargo to run: the one running us (`$CARGO`), else `cargo` on `PATH`.
pub fn cargo_program() -> PathBuf {
    std::env::var_os("CARGO").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("cargo"))
}

/// A `cdylib` package of a cargo workspace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PluginPackage {
    /// Package name (for `-p`).
    pub package: String,
    /// Library name (the file is `lib<lib_name>.so`).
    pub lib_name: String,
    /// Plugins it loads at run time (`LoadLibrary`), from
    /// `[package.metadata.vmm] uses = ["POSTHOST"]`: built along with it.
    pub uses: Vec<String>,
}

#[derive(Deserialize)]
struct Metadata {
    packages: Vec<MetaPackage>,
    workspace_root: PathBuf,
}

#[derive(Deserialize)]
struct MetaPackage {
    name: String,
    targets: Vec<MetaTarget>,
    #[serde(default)]
    metadata: Option<PackageMetadata>,
}

#[derive(Deserialize)]
struct PackageMetadata {
    #[serde(default)]
    vmm: Option<VmmMetadata>,
}

#[derive(Deserialize)]
struct VmmMetadata {
    #[serde(default)]
    uses: Vec<String>,
}

#[derive(Deserialize)]
struct MetaTarget {
    name: String,
    crate_types: Vec<String>,
}

/// The `cdylib` packages of the workspace containing `dir`, and its root.
pub fn workspace_plugins(dir: &Path) -> Result<(PathBuf, Vec<PluginPackage>), String> {
    let out = Command::new(cargo_program())
        .args(["metadata", "--no-deps", "--format-version", "1", "--offline"])
        .current_dir(dir)
        .output()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !out.status.success() {
        return Err(first_error_line(&String::from_utf8_lossy(&out.stderr)));
    }
    let meta: Metadata = serde_json::from_slice(&out.stdout).map_err(|e| format!("cannot read cargo metadata: {e}"))?;
    let plugins = meta
        .packages
        .into_iter()
        .filter_map(|p| {
            let lib = p.targets.into_iter().find(|t| t.crate_types.iter().any(|c| c == "cdylib"))?;
            let uses = p.metadata.and_then(|m| m.vmm).map(|v| v.uses).unwrap_or_default();
            Some(PluginPackage { package: p.name, lib_name: lib.name.replace('-', "_"), uses })
        })
        .collect();
    Ok((meta.workspace_root, plugins))
}

#[derive(Deserialize)]
struct Message {
    reason: String,
    #[serde(default)]
    target: Option<ArtifactTarget>,
    #[serde(default)]
    filenames: Vec<PathBuf>,
}

#[derive(Deserialize)]
struct ArtifactTarget {
    name: String,
    kind: Vec<String>,
}

/// Build `packages` (release or dev profile) in the workspace at `dir`;
/// returns library name → artifact path.
pub fn build(dir: &Path, packages: &[String], release: bool) -> Result<BTreeMap<String, PathBuf>, String> {
    if packages.is_empty() {
        return Ok(BTreeMap::new());
    }
    let mut cmd = Command::new(cargo_program());
    cmd.arg("build").arg("--message-format=json-render-diagnostics").current_dir(dir);
    if release {
        cmd.arg("--release");
    }
    for p in packages {
        cmd.arg("-p").arg(p);
    }
    let out = cmd.output().map_err(|e| format!("cannot run cargo: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "`cargo build` failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .rev()
                .take(30)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n")
        ));
    }
    let mut artifacts = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<Message>(line) else { continue };
        if msg.reason != "compiler-artifact" {
            continue;
        }
        let Some(target) = msg.target else { continue };
        if !target.kind.iter().any(|k| k == "cdylib") {
            continue;
        }
        if let Some(file) = msg
            .filenames
            .into_iter()
            .find(|f| f.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.ends_with(std::env::consts::DLL_SUFFIX)))
        {
            artifacts.insert(target.name.replace('-', "_"), file);
        }
    }
    Ok(artifacts)
}

fn first_error_line(stderr: &str) -> String {
    stderr
        .lines()
        .find(|l| l.contains("error"))
        .unwrap_or_else(|| stderr.lines().next().unwrap_or("cargo failed"))
        .trim()
        .to_string()
}
