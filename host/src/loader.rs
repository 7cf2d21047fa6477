//! Loading plugin files. **The only module that touches dlopen.**
//!
//! Every plugin file is copied to a unique path before it is opened: the
//! dynamic loader returns the already-loaded library for a path it has seen,
//! and a rebuilt file overwritten in place would crash the old code. The copy
//! is opened with `abi_stable::library::lib_header_from_path` and checked
//! with `init_root_module` — never `RootModule::load_from*`, which caches the
//! first library forever.
//!
//! Before the copy is opened it is checked ([`crate::image::check`]): the
//! dynamic loader faults or aborts the process on a truncated or damaged
//! file, so it only ever sees files that pass. The file is read with a
//! bound ([`crate::bounded`]), the copy's name is removed as soon as it is
//! open (on every path), and copies left by processes that ended while the
//! dynamic loader read them are removed before this process's first load.
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
use crate::image::{self, Defect};

/// A live instance of a loaded library's code: the instance pointer its
/// factory returned and its entry points. The machine calls a device or a
/// ring-3 module through it.
#[derive(Copy, Clone)]
pub(crate) struct Inst {
    pub(crate) this: *const core::ffi::c_void,
    pub(crate) vtable: vmm_plugin_api::abi::InstanceVtable_Ref,
}

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

/// Read a plugin file: a regular file of at most
/// [`MAX_PLUGIN_BYTES`](crate::bounded::MAX_PLUGIN_BYTES) bytes.
pub fn read_plugin_file(path: &Path) -> Result<Vec<u8>, LoadCause> {
    use crate::bounded::{self, ReadError};
    bounded::read(path, bounded::MAX_PLUGIN_BYTES, true).map_err(|e| match e {
        ReadError::NotRegular(_) => LoadCause::Rejected(Defect::new("not_a_regular_file", e.to_string())),
        ReadError::TooLarge { .. } => LoadCause::Rejected(Defect::new("too_large", e.to_string())),
        ReadError::Io(e) => LoadCause::Open(e.to_string()),
    })
}

/// Load (or reuse) the plugin in `path`.
///
/// The file is read (bounded), copied to a path of this process's own,
/// and the copy — the bytes the dynamic loader will map — is checked by
/// [`image::check`] before it is opened. The copy's name is removed as
/// soon as the library is open, whatever the outcome.
pub fn load(path: &Path) -> Result<&'static PluginLibrary, LoadCause> {
    clean_stale_copies();
    let stamp = stamp(path);
    if let Some(st) = &stamp {
        let known = hashes().lock().unwrap_or_else(|p| p.into_inner()).get(st).cloned();
        if let Some(build) = known
            && let Some(lib) = cache().lock().unwrap_or_else(|p| p.into_inner()).get(&build)
        {
            return Ok(lib);
        }
    }
    let bytes = read_plugin_file(path)?;
    let build = format!("{:016x}", content_hash(&bytes));
    if let Some(lib) = cache().lock().unwrap_or_else(|p| p.into_inner()).get(&build) {
        if let Some(st) = stamp {
            hashes().lock().unwrap_or_else(|p| p.into_inner()).insert(st, build.clone());
        }
        return Ok(lib);
    }
    let copy = Copy::write(path, &build, &bytes)?;
    drop(bytes);
    // Check the copy, not the original: the original may change at any
    // time (a build writing it), the copy is what gets mapped.
    let mapped = read_plugin_file(&copy.path)?;
    image::check(&mapped).map_err(LoadCause::Rejected)?;
    let size = mapped.len() as u64;
    drop(mapped);
    let (root, info) = open_copy(&copy.path)?;
    drop(copy);
    COPIES.fetch_add(1, Ordering::Relaxed);
    COPY_BYTES.fetch_add(size, Ordering::Relaxed);
    let lib: &'static PluginLibrary = Box::leak(Box::new(PluginLibrary {
        path: path.to_path_buf(),
        build: build.clone(),
        root,
        info,
        file_size: size,
    }));
    if let Some(st) = stamp {
        hashes().lock().unwrap_or_else(|p| p.into_inner()).insert(st, build.clone());
    }
    cache().lock().unwrap_or_else(|p| p.into_inner()).insert(build, lib);
    Ok(lib)
}

/// The prefix of the directories plugin copies live in:
/// `vmm-plugins-<pid>-<sequence>` in the temporary directory.
const COPY_DIR_PREFIX: &str = "vmm-plugins-";

/// The file in a copy directory its owner keeps locked while it loads.
const LOCK_FILE: &str = "lock";

/// A plugin copy on disk. Dropping it removes the file and its directory
/// (the mapping keeps the inode alive), on success, on error and when a
/// panic unwinds, unless `VMM_KEEP_PLUGIN_COPIES` is set (then the next
/// `vmm` started after this process ends removes it).
struct Copy {
    path: PathBuf,
    /// The directory's `lock` file, locked for the copy's life: another
    /// process removes the directory only when it can take the lock, so
    /// liveness does not depend on seeing the owner's PID (containers and
    /// PID namespaces share a temporary directory but not PIDs).
    _lock: std::fs::File,
}

impl Copy {
    /// Write `bytes` to a fresh path, in a directory of its own: loads on
    /// several threads (a test suite) never share a directory one of them
    /// removes.
    fn write(original: &Path, build: &str, bytes: &[u8]) -> Result<Copy, LoadCause> {
        use std::io::Write;
        let (n, dir, lock) = Self::fresh_dir()?;
        let stem = original.file_stem().and_then(|s| s.to_str()).unwrap_or("plugin");
        let ext = original.extension().and_then(|s| s.to_str()).unwrap_or(std::env::consts::DLL_EXTENSION);
        let copy = Copy { path: dir.join(format!("{stem}-{n}-{}.{ext}", &build[..8])), _lock: lock };
        let written = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&copy.path)
            .and_then(|mut f| f.write_all(bytes));
        written.map_err(|e| LoadCause::Open(format!("cannot copy to {}: {e}", copy.path.display())))?;
        Ok(copy)
    }
}

impl Copy {
    /// A new directory of this process's, its `lock` file locked. Never an
    /// existing one: a directory of that name is a stale one of an ended
    /// process that had this PID (PIDs are reused, in containers soon),
    /// which another process may be removing right now. And if such a
    /// clean-up took the new directory's lock before this process did (it
    /// saw an unlocked lock file) and removed the directory, the lock held
    /// is on a removed file: try another name.
    fn fresh_dir() -> Result<(u64, PathBuf, std::fs::File), LoadCause> {
        const TRIES: usize = 64;
        let mut last = String::new();
        for _ in 0..TRIES {
            let n = SEQUENCE.fetch_add(1, Ordering::Relaxed);
            let dir = std::env::temp_dir().join(format!("{COPY_DIR_PREFIX}{}-{n}", std::process::id()));
            match std::fs::create_dir(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    last = format!("{} exists", dir.display());
                    continue;
                }
                Err(e) => return Err(LoadCause::Open(format!("cannot create {}: {e}", dir.display()))),
            }
            let lock_path = dir.join(LOCK_FILE);
            let lock = std::fs::File::create(&lock_path)
                .and_then(|f| f.lock().map(|()| f))
                .map_err(|e| LoadCause::Open(format!("cannot lock {}: {e}", lock_path.display())))?;
            if same_file(&lock, &lock_path) {
                return Ok((n, dir, lock));
            }
            last = format!("{} was removed before its lock was taken", dir.display());
        }
        Err(LoadCause::Open(format!("no fresh directory for a plugin copy after {TRIES} tries ({last})")))
    }
}

/// Whether `path` still names the file `file` has open (a clean-up may
/// have removed it in between).
fn same_file(file: &std::fs::File, path: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        match (file.metadata(), std::fs::metadata(path)) {
            (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
            _ => false,
        }
    }
    #[cfg(not(unix))]
    {
        let _ = file;
        path.exists()
    }
}

impl Drop for Copy {
    fn drop(&mut self) {
        if std::env::var_os("VMM_KEEP_PLUGIN_COPIES").is_none() {
            let _ = std::fs::remove_file(&self.path);
            if let Some(dir) = self.path.parent() {
                let _ = std::fs::remove_file(dir.join(LOCK_FILE));
                let _ = std::fs::remove_dir(dir);
            }
        }
    }
}

/// Remove the plugin copies that processes which have ended left in the
/// temporary directory (a process killed while the dynamic loader read a
/// copy). Runs once per process, before its first load; copies of live
/// processes are left alone. Returns the directories removed.
pub fn clean_stale_copies() -> usize {
    static DONE: OnceLock<usize> = OnceLock::new();
    *DONE.get_or_init(|| clean_stale_copies_in(&std::env::temp_dir()))
}

/// [`clean_stale_copies`] in `dir`.
pub fn clean_stale_copies_in(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(copy_dir_owner) else { continue };
        if pid == std::process::id() {
            continue;
        }
        let path = entry.path();
        // The owner holds the directory's lock while it loads: a lock this
        // process can take means the owner is gone, whatever its PID says.
        // (A directory without a lock file falls back on the PID.)
        let lock = std::fs::OpenOptions::new().write(true).open(path.join(LOCK_FILE));
        let _held = match lock {
            Ok(file) => match file.try_lock() {
                Ok(()) => file,
                Err(_) => continue,
            },
            Err(_) if process_alive(pid) => continue,
            Err(_) => {
                // No lock file: a copy from before locks, of a process that has ended.
                match std::fs::File::open(&path) {
                    Ok(f) => f,
                    Err(_) => continue,
                }
            }
        };
        if std::fs::read_dir(&path)
            .map(|files| files.flatten().all(|f| std::fs::remove_file(f.path()).is_ok()))
            .unwrap_or(false)
            && std::fs::remove_dir(&path).is_ok()
        {
            tracing::info!("removed {}, a plugin copy left by process {pid}, which has ended", path.display());
            removed += 1;
        }
    }
    removed
}

/// The process that owns a copy directory named `vmm-plugins-<pid>-<n>`.
fn copy_dir_owner(name: &str) -> Option<u32> {
    let (pid, n) = name.strip_prefix(COPY_DIR_PREFIX)?.split_once('-')?;
    n.parse::<u64>().ok()?;
    pid.parse().ok()
}

/// Whether process `pid` runs. Without a way to tell, every process is
/// taken to run (nothing is removed).
fn process_alive(pid: u32) -> bool {
    if cfg!(target_os = "linux") {
        Path::new("/proc").join(pid.to_string()).exists() || !Path::new("/proc/self").exists()
    } else {
        true
    }
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

/// abi_stable's layout report is thousands of lines. Keep what differs:
/// each `Error:` with the type it was found in and the expected and found
/// values, innermost type first, and say how much was left out.
pub fn summarize_layout_error(full: &str) -> String {
    let lines: Vec<&str> = full.lines().map(str::trim).collect();
    let mut findings: Vec<String> = Vec::new();
    // The type of the last "Layout of expected type" block.
    let mut current_type: Option<&str> = None;
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        if line == "Layout of expected type:" {
            current_type = lines[i + 1..].iter().take(4).find_map(|l| l.strip_prefix("type:")).map(str::trim);
        }
        if let Some(what) = line.strip_prefix("Error:") {
            let value = |label: &str| {
                lines[i + 1..]
                    .iter()
                    .take(8)
                    .position(|l| *l == label)
                    .and_then(|p| lines.get(i + 2 + p))
                    .map(|v| v.trim().to_string())
                    .filter(|v| !v.is_empty())
            };
            let mut f = format!("{}: {}", current_type.unwrap_or("a type"), what.trim());
            if let (Some(e), Some(x)) = (value("Expected:"), value("Found:")) {
                f.push_str(&format!(" (the host has {e}, the plugin {x})"));
            }
            if !findings.contains(&f) {
                findings.push(f);
            }
        }
        i += 1;
    }
    if findings.is_empty() {
        // Not the usual shape: the first lines that name a problem.
        findings = lines
            .iter()
            .filter(|l| {
                let lower = l.to_ascii_lowercase();
                (lower.contains("error") && !lower.starts_with("0 error")) || lower.contains("mismatch")
            })
            .take(6)
            .map(|l| l.to_string())
            .collect();
    }
    if findings.is_empty() {
        findings = lines.iter().filter(|l| !l.is_empty()).take(4).map(|l| l.to_string()).collect();
    }
    // Innermost (most specific) differences come last in the report.
    findings.reverse();
    let shown = findings.len().min(6);
    let mut s = findings[..shown].join("; ");
    if findings.len() > shown {
        s.push_str(&format!("; and {} more difference(s)", findings.len() - shown));
    }
    s.push_str(&format!(
        " ({} lines of abi_stable's report; rebuild the plugin against this vmm-plugin-api)",
        lines.len()
    ));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_never_reuses_a_directory_an_ended_process_with_this_pid_left() {
        // Stale directories with this process's PID and the next sequence
        // numbers, as an earlier process with the same PID left them.
        let next = SEQUENCE.load(Ordering::Relaxed);
        let stale: Vec<PathBuf> = (next..next + 4)
            .map(|n| std::env::temp_dir().join(format!("{COPY_DIR_PREFIX}{}-{n}", std::process::id())))
            .collect();
        for d in &stale {
            std::fs::create_dir_all(d).unwrap();
            std::fs::write(d.join("old.so"), b"old").unwrap();
        }
        let copy = Copy::write(Path::new("libx.so"), &"0".repeat(16), b"new").unwrap();
        let dir = copy.path.parent().unwrap().to_path_buf();
        assert!(!stale.contains(&dir), "{} was a stale directory", dir.display());
        assert_eq!(std::fs::read(&copy.path).unwrap(), b"new");
        for d in &stale {
            assert_eq!(std::fs::read(d.join("old.so")).unwrap(), b"old", "a stale directory was written into");
            std::fs::remove_dir_all(d).unwrap();
        }
        drop(copy);
        assert!(!dir.exists());
    }

    #[test]
    fn hash_is_stable_and_content_sensitive() {
        assert_eq!(content_hash(b"abc"), content_hash(b"abc"));
        assert_ne!(content_hash(b"abc"), content_hash(b"abd"));
        assert_ne!(content_hash(b""), content_hash(b"\0"));
    }

    #[test]
    fn layout_summary_names_each_difference_and_its_type() {
        // The shape of abi_stable's report (whitespace and filler shortened).
        let block =
            |ty: &str| format!("Layout of expected type:\n    --- Type Layout ---\n    type:{ty}\n    size:20\n");
        let long = format!(
            "Compared <this>:\n{}{}\n{}\nError:incompatible type size\nExpected:\n    24\nFound:\n    28\n\
             2 error(s)inside:\n{}{}\nError:incompatible type size\nExpected:\n    20\nFound:\n    24\n\n\
             Error:too many fields\nExpected:\n    6\nFound:\n    7\n",
            "    filler\n".repeat(300),
            block("PluginRoot"),
            block("RResult"),
            "    filler\n".repeat(300),
            block("VmInfo"),
        );
        let s = summarize_layout_error(&long);
        assert!(s.starts_with("VmInfo: too many fields (the host has 6, the plugin 7)"), "{s}");
        assert!(s.contains("VmInfo: incompatible type size (the host has 20, the plugin 24)"), "{s}");
        assert!(s.contains("RResult: incompatible type size (the host has 24, the plugin 28)"), "{s}");
        assert!(s.contains("lines of abi_stable's report"), "{s}");
        assert!(s.len() < 500, "{s}");
    }

    #[test]
    fn missing_file_is_an_open_error() {
        assert!(matches!(load(Path::new("/nonexistent/libx.so")), Err(LoadCause::Open(_))));
    }
}
