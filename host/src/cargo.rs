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
    manifest_path: PathBuf,
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
    let meta = metadata(dir, false)?;
    let plugins = meta.packages.into_iter().filter_map(|p| plugin_package(p).map(|(_, p)| p)).collect();
    Ok((meta.workspace_root, plugins))
}

/// `cargo metadata` of the workspace containing `dir`: its own packages, or
/// (`with_deps`) every package of its dependency graph.
fn metadata(dir: &Path, with_deps: bool) -> Result<Metadata, String> {
    let mut cmd = Command::new(cargo_program());
    cmd.args(["metadata", "--format-version", "1"]).current_dir(dir);
    if !with_deps {
        cmd.args(["--no-deps", "--offline"]);
    }
    let out = cmd.output().map_err(|e| format!("cannot run cargo: {e}"))?;
    if !out.status.success() {
        return Err(first_error_line(&String::from_utf8_lossy(&out.stderr)));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("cannot read cargo metadata: {e}"))
}

/// The plugin a package builds, if it has a `cdylib` target; with its
/// manifest path.
fn plugin_package(p: MetaPackage) -> Option<(PathBuf, PluginPackage)> {
    let lib = p.targets.into_iter().find(|t| t.crate_types.iter().any(|c| c == "cdylib"))?;
    let uses = p.metadata.and_then(|m| m.vmm).map(|v| v.uses).unwrap_or_default();
    Some((p.manifest_path, PluginPackage { package: p.name, lib_name: lib.name.replace('-', "_"), uses }))
}

/// The plugin crate whose `Cargo.toml` is in `dir`, and the packages of the
/// DLLs it loads by name (`[package.metadata.vmm] uses`): members of its
/// workspace or packages of its dependency graph. Returns the workspace
/// root and the packages to build, the crate's own first.
pub fn crate_plugins(dir: &Path) -> Result<(PathBuf, Vec<PluginPackage>), String> {
    let manifest = dir.join("Cargo.toml");
    let manifest = manifest.canonicalize().map_err(|e| format!("{}: {e}", manifest.display()))?;
    let meta = metadata(dir, false)?;
    let root = meta.workspace_root.clone();
    let members: Vec<(PathBuf, PluginPackage)> = meta.packages.into_iter().filter_map(plugin_package).collect();
    let Some((_, this)) = members.iter().find(|(m, _)| m.canonicalize().ok().as_ref() == Some(&manifest)) else {
        return Err(format!(
            "{} has no cdylib target: a plugin crate needs `crate-type = [\"cdylib\", \"rlib\"]` in [lib]",
            manifest.display()
        ));
    };
    let mut wanted = vec![this.clone()];
    let mut missing = Vec::new();
    for name in &this.uses {
        let lib = crate::resolve::library_name(name);
        match members.iter().find(|(_, p)| p.lib_name == lib) {
            Some((_, p)) => wanted.push(p.clone()),
            None => missing.push((name.clone(), lib)),
        }
    }
    if !missing.is_empty() {
        // Not a member: look through the dependency graph.
        let graph: Vec<PluginPackage> =
            metadata(dir, true)?.packages.into_iter().filter_map(|p| plugin_package(p).map(|(_, p)| p)).collect();
        for (name, lib) in missing {
            let p = graph.iter().find(|p| p.lib_name == lib).ok_or_else(|| {
                format!(
                    "{}: [package.metadata.vmm] uses `{name}`, but no package of its workspace or dependencies \
                     builds {}; add that DLL's crate as a dependency or a workspace member",
                    manifest.display(),
                    crate::resolve::library_file_name(name.as_str())
                )
            })?;
            wanted.push(p.clone());
        }
    }
    Ok((root, wanted))
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

/// How a nested `cargo build` reports.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Progress {
    /// cargo's own output (`Compiling ...`, warnings, errors) goes to this
    /// process's stderr as it happens: what a person at the `vmm` command
    /// line sees.
    Show,
    /// cargo's output is captured; a failure's error carries all of it
    /// (the test kit: a test's panic message shows the whole error).
    Capture,
    /// As `Capture`, and the packages' test targets are built too, so cargo resolves features as
    /// `cargo test` did and reuses the dependencies the running tests were
    /// built with (a plain `cargo build -p` resolves them without the
    /// dev-dependencies and would compile `abi_stable` and the rest again).
    CaptureWithTests,
}

/// Build `packages` with cargo's profile `profile` (`dev` is what a plain
/// `cargo build` makes, in `target/debug`; `release` is `--release`, in
/// `target/release`; any custom profile of the workspace works) in the
/// workspace at `dir`; returns library name → artifact path.
pub fn build(
    dir: &Path,
    packages: &[String],
    profile: &str,
    progress: Progress,
) -> Result<BTreeMap<String, PathBuf>, String> {
    if packages.is_empty() {
        return Ok(BTreeMap::new());
    }
    let mut cmd = Command::new(cargo_program());
    cmd.arg("build").arg("--message-format=json-render-diagnostics").arg("--profile").arg(profile).current_dir(dir);
    for p in packages {
        cmd.arg("-p").arg(p);
    }
    match progress {
        Progress::Show => {
            cmd.stderr(std::process::Stdio::inherit());
        }
        Progress::CaptureWithTests => {
            cmd.args(["--lib", "--tests"]);
        }
        Progress::Capture => {}
    }
    let out = cmd.output().map_err(|e| format!("cannot run cargo: {e}"))?;
    if !out.status.success() {
        let command = format!("cargo build --profile {profile} -p {}", packages.join(" -p "));
        return Err(match progress {
            Progress::Show => format!("`{command}` in {} failed (cargo's errors are above)", dir.display()),
            Progress::Capture | Progress::CaptureWithTests => {
                format!("`{command}` in {} failed:\n{}", dir.display(), String::from_utf8_lossy(&out.stderr).trim_end())
            }
        });
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
