//! Loading plugin files. **The only module that touches dlopen.**
//!
//! Every plugin file is copied to a unique path before it is opened: the
//! dynamic loader returns the already-loaded library for a path it has seen,
//! and a rebuilt file overwritten in place would crash the old code. The copy
//! is opened with `abi_stable::library::lib_header_from_path` and checked
//! with `init_root_module` — never `RootModule::load_from*`, which caches the
//! first library forever.
//!
//! abi_stable never unloads a library, so loaded libraries are kept for the
//! life of the process. Within a process, a file whose content was already
//! loaded reuses that library (each device load still gets its own instance
//! from the plugin's factory); changed content is a new copy.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use abi_stable::library::{LibraryError, RootModule, RootModuleError, lib_header_from_path};
use vmm_plugin_api::abi::{PluginInfo, PluginRoot_Ref};

use crate::error::LoadCause;

/// abi_stable's exported root-module symbol.
const ROOT_SYMBOL: &[u8] = b"_1as_0lib_1header_0root_bmodule_bloader\0";

/// A loaded plugin file.
pub struct PluginLibrary {
    /// The file the manifest named (before copying).
    pub path: PathBuf,
    /// 64-bit content hash, as 16 hex digits: the plugin's build identity.
    pub build: String,
    /// The root module.
    pub root: PluginRoot_Ref,
    /// What the plugin says about itself.
    pub info: PluginInfo,
    /// Bytes of the file, a bound on what the copy maps.
    pub file_size: u64,
}

impl std::fmt::Debug for PluginLibrary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginLibrary").field("path", &self.path).field("build", &self.build).finish_non_exhaustive()
    }
}

// SAFETY: the root module and info point into a library that is never
// unloaded; they are immutable 'static data and plain function pointers.
unsafe impl Send for PluginLibrary {}
// SAFETY: as above.
unsafe impl Sync for PluginLibrary {}

/// Statistics of the libraries loaded by this process.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct LoaderStats {
    /// Distinct library copies mapped (never unmapped).
    pub copies: u64,
    /// Sum of their file sizes.
    pub bytes: u64,
}

fn cache() -> &'static Mutex<HashMap<String, &'static PluginLibrary>> {
    static CACHE: OnceLock<Mutex<HashMap<String, &'static PluginLibrary>>> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(HashMap::new()))
}

static SEQUENCE: AtomicU64 = AtomicU64::new(0);
static COPIES: AtomicU64 = AtomicU64::new(0);
static COPY_BYTES: AtomicU64 = AtomicU64::new(0);

/// What the libraries loaded so far hold.
pub fn stats() -> LoaderStats {
    LoaderStats { copies: COPIES.load(Ordering::Relaxed), bytes: COPY_BYTES.load(Ordering::Relaxed) }
}

/// A stable 64-bit hash of a file's bytes (FNV-1a over 8-byte words).
pub fn content_hash(bytes: &[u8]) -> u64 {
    const PRIME: u64 = 0x0000_0100_0000_01B3;
    let mut h: u64 = 0xCBF2_9CE4_8422_2325 ^ bytes.len() as u64;
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        h = (h ^ w).wrapping_mul(PRIME);
    }
    for &b in chunks.remainder() {
        h = (h ^ b as u64).wrapping_mul(PRIME);
    }
    h
}

/// A plugin linked into the host process (see
/// `vmm_plugin_api::device::in_process`): no file, no copy, no layout
/// check (the types are the host's own).
pub fn in_process(name: &str, root: PluginRoot_Ref) -> &'static PluginLibrary {
    let info = (root.info())();
    Box::leak(Box::new(PluginLibrary {
        path: PathBuf::from(format!("<in-process {name}>")),
        build: String::new(),
        root,
        info,
        file_size: 0,
    }))
}

/// What identifies a file's version without reading it: path, size and
/// modification time (nanoseconds on the platforms we run on).
type FileStamp = (PathBuf, u64, Option<std::time::SystemTime>);

/// Content hashes of files already read, by stamp: a machine that loads
/// the same unchanged plugins again (a test suite boots thousands) does not
/// read and hash megabytes each time.
fn hashes() -> &'static Mutex<HashMap<FileStamp, String>> {
    static HASHES: OnceLock<Mutex<HashMap<FileStamp, String>>> = OnceLock::new();
    HASHES.get_or_init(|| Mutex::new(HashMap::new()))
}

fn stamp(path: &Path) -> Option<FileStamp> {
    let meta = std::fs::metadata(path).ok()?;
    Some((path.to_path_buf(), meta.len(), meta.modified().ok()))
}

/// Load (or reuse) the plugin in `path`.
pub fn load(path: &Path) -> Result<&'static PluginLibrary, LoadCause> {
    let stamp = stamp(path);
    if let Some(st) = &stamp {
        let known = hashes().lock().unwrap_or_else(|p| p.into_inner()).get(st).cloned();
        if let Some(build) = known
            && let Some(lib) = cache().lock().unwrap_or_else(|p| p.into_inner()).get(&build)
        {
            return Ok(lib);
        }
    }
    let bytes = std::fs::read(path).map_err(|e| LoadCause::Open(e.to_string()))?;
    let build = format!("{:016x}", content_hash(&bytes));
    if let Some(st) = stamp {
        hashes().lock().unwrap_or_else(|p| p.into_inner()).insert(st, build.clone());
    }
    if let Some(lib) = cache().lock().unwrap_or_else(|p| p.into_inner()).get(&build) {
        return Ok(lib);
    }
    let copy = copy_path(path, &build).map_err(LoadCause::Open)?;
    std::fs::write(&copy, &bytes).map_err(|e| LoadCause::Open(format!("cannot copy to {}: {e}", copy.display())))?;
    let result = open_copy(&copy);
    if std::env::var_os("VMM_KEEP_PLUGIN_COPIES").is_none() {
        // The mapping keeps the inode alive; the name is not needed.
        let _ = std::fs::remove_file(&copy);
        if let Some(dir) = copy.parent() {
            let _ = std::fs::remove_dir(dir);
        }
    }
    let (root, info) = result?;
    COPIES.fetch_add(1, Ordering::Relaxed);
    COPY_BYTES.fetch_add(bytes.len() as u64, Ordering::Relaxed);
    let lib: &'static PluginLibrary = Box::leak(Box::new(PluginLibrary {
        path: path.to_path_buf(),
        build: build.clone(),
        root,
        info,
        file_size: bytes.len() as u64,
    }));
    cache().lock().unwrap_or_else(|p| p.into_inner()).insert(build, lib);
    Ok(lib)
}

/// A fresh path for a copy, in a directory of its own: loads on several
/// threads (a test suite) never share a directory one of them removes.
fn copy_path(original: &Path, build: &str) -> Result<PathBuf, String> {
    let n = SEQUENCE.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("vmm-plugins-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let stem = original.file_stem().and_then(|s| s.to_str()).unwrap_or("plugin");
    let ext = original.extension().and_then(|s| s.to_str()).unwrap_or(std::env::consts::DLL_EXTENSION);
    Ok(dir.join(format!("{stem}-{n}-{}.{ext}", &build[..8])))
}

fn open_copy(copy: &Path) -> Result<(PluginRoot_Ref, PluginInfo), LoadCause> {
    // Open once with libloading to tell "not a library" from "not a plugin"
    // precisely; abi_stable's own open below reuses the loaded object.
    // SAFETY: loading a plugin runs its initializers; plugins are trusted
    // code by design (the emulator is an in-process host).
    let probe = unsafe { libloading::Library::new(copy) }.map_err(|e| LoadCause::Open(e.to_string()))?;
    // SAFETY: only the symbol's presence is checked; it is not dereferenced.
    let has_root = unsafe { probe.get::<*const u8>(ROOT_SYMBOL) }.is_ok();
    if !has_root {
        return Err(LoadCause::NotAbiStable);
    }
    let header = lib_header_from_path(copy).map_err(map_library_error)?;
    let root = header.init_root_module::<PluginRoot_Ref>().map_err(map_library_error)?;
    drop(probe);
    let info = (root.info())();
    Ok((root, info))
}

fn map_library_error(e: LibraryError) -> LoadCause {
    match e {
        LibraryError::OpenError { err, .. } => LoadCause::Open(err.to_string()),
        LibraryError::GetSymbolError { .. } => LoadCause::NotAbiStable,
        LibraryError::InvalidAbiHeader(h) => LoadCause::AbiStableVersion(format!("{h:?}")),
        LibraryError::ParseVersionError(p) => LoadCause::IncompatibleVersion {
            host: PluginRoot_Ref::VERSION_STRINGS.version.to_string(),
            plugin: format!("(unparsable: {p})"),
        },
        LibraryError::IncompatibleVersionNumber { expected_version, actual_version, .. } => {
            LoadCause::IncompatibleVersion { host: expected_version.to_string(), plugin: actual_version.to_string() }
        }
        LibraryError::RootModule { err: RootModuleError::Unwound, .. } => LoadCause::ConstructorPanic,
        LibraryError::RootModule { err: RootModuleError::Returned(e), .. } => LoadCause::Constructor(e.to_string()),
        LibraryError::AbiInstability(e) => LoadCause::LayoutMismatch(summarize_layout_error(&e.to_string())),
        LibraryError::InvalidCAbi { expected, found } => {
            LoadCause::LayoutMismatch(format!("C ABI differs: expected {expected}, found {found}"))
        }
        LibraryError::Many(list) => list
            .into_iter()
            .next()
            .map(map_library_error)
            .unwrap_or_else(|| LoadCause::Open("unknown abi_stable error".to_string())),
    }
}

/// abi_stable's layout report is hundreds of lines. Keep the lines that say
/// what differs, and say how much was left out.
pub fn summarize_layout_error(full: &str) -> String {
    let mut kept: Vec<&str> = Vec::new();
    let lines: Vec<&str> = full.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    for line in &lines {
        let lower = line.to_ascii_lowercase();
        let interesting = lower.contains("error")
            || lower.contains("mismatch")
            || lower.starts_with("expected")
            || lower.starts_with("found")
            || lower.contains("too many")
            || lower.contains("field");
        if interesting && !kept.contains(line) && line.len() < 300 {
            kept.push(line);
        }
        if kept.len() == 8 {
            break;
        }
    }
    if kept.is_empty() {
        kept.extend(lines.iter().take(4));
    }
    let omitted = lines.len().saturating_sub(kept.len());
    let mut s = kept.join(" | ");
    if omitted > 0 {
        s.push_str(&format!(" ({omitted} more lines of abi_stable's report omitted)"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_stable_and_content_sensitive() {
        assert_eq!(content_hash(b"abc"), content_hash(b"abc"));
        assert_ne!(content_hash(b"abc"), content_hash(b"abd"));
        assert_ne!(content_hash(b""), content_hash(b"\0"));
    }

    #[test]
    fn layout_summary_is_short() {
        let long = "Error: mismatch\n".to_string() + &"  nested detail line\n".repeat(200) + "Expected: 6 Found: 5\n";
        let s = summarize_layout_error(&long);
        assert!(s.contains("Error: mismatch"));
        assert!(s.contains("Expected: 6"));
        assert!(s.contains("omitted"));
        assert!(s.len() < 400, "{s}");
    }

    #[test]
    fn missing_file_is_an_open_error() {
        assert!(matches!(load(Path::new("/nonexistent/libx.so")), Err(LoadCause::Open(_))));
    }
}
