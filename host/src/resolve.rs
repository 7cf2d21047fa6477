//! Finding plugin files: a manifest names a plugin the way SYSTEM.INI named a
//! VxD (`VPOSTD.386`, `vpostd`, or a path), and the name resolves through the
//! plugin search path to a shared library built by cargo
//! (`libvpostd.so` on Linux).

use std::path::{Path, PathBuf};

use crate::manifest::Manifest;

/// Directories searched for plugin files, in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SearchPath {
    dirs: Vec<PathBuf>,
    base: PathBuf,
}

impl SearchPath {
    /// The search path of a manifest: `[machine] plugin_path` entries, then
    /// the manifest's directory, then the directory of the running `vmm`
    /// executable (where `cargo build` puts plugins next to it).
    pub fn for_manifest(m: &Manifest) -> Self {
        let mut dirs: Vec<PathBuf> = m.machine.plugin_path.clone();
        dirs.push(m.base_dir.clone());
        if let Some(exe_dir) = std::env::current_exe().ok().and_then(|e| e.parent().map(Path::to_path_buf)) {
            dirs.push(exe_dir);
        }
        let mut unique: Vec<PathBuf> = Vec::new();
        for d in dirs {
            if !unique.contains(&d) {
                unique.push(d);
            }
        }
        SearchPath { dirs: unique, base: m.base_dir.clone() }
    }

    /// Put `dir` first.
    pub fn prepend(&mut self, dir: PathBuf) {
        self.dirs.retain(|d| d != &dir);
        self.dirs.insert(0, dir);
    }

    /// The directories, in order.
    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// Find `name`'s file.
    pub fn find(&self, name: &str) -> Option<PathBuf> {
        if is_path(name) {
            // A path that names something other than a file is found, so
            // that loading it says what it is.
            let p = tidy(self.base.join(name));
            return p.exists().then_some(p);
        }
        let file = library_file_name(name);
        self.dirs.iter().map(|d| tidy(d.join(&file))).find(|p| p.is_file())
    }
}

impl SearchPath {
    /// Find the machine-code program file `name` (`POSTDOS.COM`). The
    /// program search path is the plugin search path: a name with a `/` is
    /// a path from the manifest's directory; any other name is looked up in
    /// each directory in order, as written, then in lower case, then in
    /// upper case (DOS file names ignore case).
    pub fn find_program(&self, name: &str) -> Option<PathBuf> {
        if name.contains('/') || name.contains('\\') {
            let p = tidy(self.base.join(name.replace('\\', "/")));
            return p.exists().then_some(p);
        }
        let spellings = [name.to_string(), name.to_ascii_lowercase(), name.to_ascii_uppercase()];
        self.dirs.iter().find_map(|d| spellings.iter().map(|n| tidy(d.join(n))).find(|p| p.is_file()))
    }
}

/// `path` without `.` components (`./libx.so` found from the manifest's
/// directory `.` is `libx.so`, not `././libx.so`).
fn tidy(path: PathBuf) -> PathBuf {
    let tidy: PathBuf = path.components().filter(|c| *c != std::path::Component::CurDir).collect();
    if tidy.as_os_str().is_empty() { PathBuf::from(".") } else { tidy }
}

/// Whether `name` is a path rather than a module name.
fn is_path(name: &str) -> bool {
    name.contains('/') || name.contains('\\') || name.ends_with(std::env::consts::DLL_SUFFIX)
}

/// The library (crate) name a module name maps to: `VPOSTD.386` →
/// `vpostd`, `POSTHOST.DLL` → `posthost`, `my-vxd` → `my_vxd`.
pub fn library_name(name: &str) -> String {
    let base = Path::new(name).file_name().and_then(|n| n.to_str()).unwrap_or(name);
    let stem = match base.rsplit_once('.') {
        Some((stem, ext))
            if ["386", "vxd", "dll", "exe", "com", "drv"].contains(&ext.to_ascii_lowercase().as_str()) =>
        {
            stem
        }
        _ => base,
    };
    stem.to_ascii_lowercase().replace('-', "_")
}

/// The shared-library file name cargo gives a library: `libvpostd.so` on
/// Linux.
pub fn library_file_name(name: &str) -> String {
    format!("{}{}{}", std::env::consts::DLL_PREFIX, library_name(name), std::env::consts::DLL_SUFFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_names_map_to_crate_libraries() {
        assert_eq!(library_name("VPOSTD.386"), "vpostd");
        assert_eq!(library_name("POSTHOST.DLL"), "posthost");
        assert_eq!(library_name("postapp"), "postapp");
        assert_eq!(library_name("fixture-panic"), "fixture_panic");
        assert!(library_file_name("VPOSTD.386").contains("vpostd"));
    }

    #[test]
    fn found_paths_carry_no_dot_components() {
        assert_eq!(tidy(Path::new(".").join("./libx.so")), PathBuf::from("libx.so"));
        assert_eq!(tidy(PathBuf::from("./plugins/./libx.so")), PathBuf::from("plugins/libx.so"));
        assert_eq!(tidy(PathBuf::from("/a/./b")), PathBuf::from("/a/b"));
        assert_eq!(tidy(PathBuf::from(".")), PathBuf::from("."));
    }
}
