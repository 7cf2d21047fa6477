//! Watching plugin build outputs for hot reload (`vmm run --watch`).
//!
//! cargo replaces a plugin by removing the old file and hard-linking the
//! finished new one into `target/<profile>/` (see
//! `reference/plugin-abi.md` §3.4): a watch on the file itself goes deaf
//! after the first rebuild. So the watcher watches each plugin's
//! *directory*, non-recursively, and reacts to a create, a rename onto, or
//! a data write of one of the watched file names. A change counts once the
//! file has been quiet for the debounce interval, its size and modification
//! time did not move over that interval nor while it was read (a file
//! written in pieces is not taken half-written), and its content hash
//! differs from what was last handled; the run loop then reloads the device
//! at its next safe point.
//!
//! The watcher also checks the image ([`crate::image::check`]): a file
//! that is truncated gets a grace period to be completed; one that stays
//! damaged is handed over as a rejected change (a `plugin_rejected`
//! record, the old code keeps running). Either way the file stays watched:
//! the next build is considered again.
//!
//! The watcher thread only sends requests: the VMM stays on one thread.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use notify::event::{EventKind, ModifyKind, RenameMode};
use notify::{RecommendedWatcher, RecursiveMode, Watcher as _};

/// The default debounce interval.
pub const DEFAULT_DEBOUNCE: Duration = Duration::from_millis(25);

/// A rebuilt plugin, ready to be loaded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// The device whose file changed.
    pub device: String,
    /// The file.
    pub file: PathBuf,
    /// When the first file-system event of this change arrived (the start
    /// of the reload latency).
    pub noticed: Instant,
    /// The new content hash (16 hex digits, as in `device_loaded`).
    pub build: String,
    /// Why the file cannot be loaded, when it was refused before loading.
    pub rejected: Option<crate::image::Defect>,
}

/// A file's size and modification time.
type Stamp = Option<(u64, Option<std::time::SystemTime>)>;

fn stamp(file: &Path) -> Stamp {
    let meta = std::fs::metadata(file).ok()?;
    Some((meta.len(), meta.modified().ok()))
}

/// A file with events not yet handled.
struct Pending {
    /// The first event.
    first: Instant,
    /// The last event (or when the quiet interval restarts).
    last: Instant,
    /// Size and modification time at `last`.
    stamp: Stamp,
    /// A truncated file got its grace period.
    graced: bool,
}

/// Changes ready to be loaded, and the condition `wait` sleeps on.
type Ready = Arc<(Mutex<Vec<Change>>, Condvar)>;

/// Watches the files of loaded plugin devices.
pub struct Watcher {
    _fs: RecommendedWatcher,
    ready: Ready,
    flag: Arc<AtomicBool>,
    targets: Arc<Mutex<HashMap<PathBuf, (String, String)>>>,
}

impl std::fmt::Debug for Watcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watcher").finish_non_exhaustive()
    }
}

impl Watcher {
    /// Watch `files`: `(device, file, build)` where `build` is the content
    /// hash of the code that runs now. Changes must be quiet for
    /// `debounce` before they count.
    pub fn new(files: &[(String, PathBuf, String)], debounce: Duration) -> notify::Result<Watcher> {
        let targets: HashMap<PathBuf, (String, String)> =
            files.iter().map(|(d, f, b)| (f.clone(), (d.clone(), b.clone()))).collect();
        let targets = Arc::new(Mutex::new(targets));
        let ready = Arc::new((Mutex::new(Vec::new()), Condvar::new()));
        let flag = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel::<(PathBuf, Instant)>();
        let names: Vec<(PathBuf, std::ffi::OsString)> =
            files.iter().filter_map(|(_, f, _)| Some((f.clone(), f.file_name()?.to_os_string()))).collect();
        let mut fs = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            let Ok(event) = res else { return };
            let relevant = matches!(
                event.kind,
                EventKind::Create(_)
                    | EventKind::Modify(ModifyKind::Name(RenameMode::To | RenameMode::Both | RenameMode::Any))
                    | EventKind::Modify(ModifyKind::Data(_))
            );
            if !relevant {
                return;
            }
            let now = Instant::now();
            for path in &event.paths {
                if let Some((file, _)) =
                    names.iter().find(|(f, n)| path.file_name() == Some(n.as_os_str()) && same_dir(f, path))
                {
                    let _ = tx.send((file.clone(), now));
                }
            }
        })?;
        let mut dirs: Vec<PathBuf> = files.iter().filter_map(|(_, f, _)| f.parent().map(Path::to_path_buf)).collect();
        dirs.sort();
        dirs.dedup();
        for d in &dirs {
            fs.watch(d, RecursiveMode::NonRecursive)?;
        }
        let (ready2, flag2, targets2) = (ready.clone(), flag.clone(), targets.clone());
        thread::Builder::new()
            .name("vmm-watch".to_string())
            .spawn(move || debounce_loop(rx, debounce, ready2, flag2, targets2))
            .map_err(notify::Error::io)?;
        Ok(Watcher { _fs: fs, ready, flag, targets })
    }

    /// The flag `has_changes` reads, for code that must notice it without
    /// the watcher (the wall-clock pacing of a watched run).
    pub(crate) fn ready_flag(&self) -> Arc<AtomicBool> {
        self.flag.clone()
    }

    /// Whether changes are ready (cheap: the run loop asks at every step).
    pub fn has_changes(&self) -> bool {
        self.flag.load(Ordering::Relaxed)
    }

    /// Take the ready changes.
    pub fn take(&self) -> Vec<Change> {
        let (lock, _) = &*self.ready;
        let mut r = lock.lock().unwrap_or_else(|p| p.into_inner());
        self.flag.store(false, Ordering::Relaxed);
        std::mem::take(&mut *r)
    }

    /// Block until changes are ready or `timeout` passes.
    pub fn wait(&self, timeout: Duration) -> Vec<Change> {
        let (lock, cvar) = &*self.ready;
        let guard = lock.lock().unwrap_or_else(|p| p.into_inner());
        let (mut r, _) = cvar.wait_timeout_while(guard, timeout, |r| r.is_empty()).unwrap_or_else(|p| p.into_inner());
        self.flag.store(false, Ordering::Relaxed);
        std::mem::take(&mut *r)
    }

    /// Record what now runs from `file` (after a reload, or after a reload
    /// that kept the old code: then the same content is not offered again).
    pub fn set_build(&self, file: &Path, device: &str, build: &str) {
        let mut t = self.targets.lock().unwrap_or_else(|p| p.into_inner());
        t.insert(file.to_path_buf(), (device.to_string(), build.to_string()));
    }
}

fn same_dir(watched: &Path, event: &Path) -> bool {
    match (watched.parent(), event.parent()) {
        (Some(a), Some(b)) => a == b || a.canonicalize().ok() == b.canonicalize().ok(),
        _ => false,
    }
}

/// The watcher thread: collect events per file; once a file has been quiet
/// (and unchanged) for `debounce`, read, hash and check it, and offer it if
/// its content is new.
fn debounce_loop(
    rx: mpsc::Receiver<(PathBuf, Instant)>,
    debounce: Duration,
    ready: Ready,
    flag: Arc<AtomicBool>,
    targets: Arc<Mutex<HashMap<PathBuf, (String, String)>>>,
) {
    // A truncated file may still be being written: it is looked at again
    // after this long before it counts as damaged.
    let grace = (debounce * 4).max(Duration::from_millis(250));
    let mut pending: HashMap<PathBuf, Pending> = HashMap::new();
    loop {
        let wait = pending.values().map(|p| (p.last + debounce).saturating_duration_since(Instant::now())).min();
        let got = match wait {
            Some(w) => rx.recv_timeout(w),
            None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        match got {
            Ok((file, at)) => {
                let now = stamp(&file);
                let p = pending.entry(file).or_insert(Pending { first: at, last: at, stamp: None, graced: false });
                p.last = at;
                p.stamp = now;
                // A truncated file that grows gets a new grace period: only
                // one that stays cut short for that long is refused.
                p.graced = false;
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => return,
            Err(RecvTimeoutError::Timeout) => {}
        }
        let now = Instant::now();
        let quiet: Vec<PathBuf> =
            pending.iter().filter(|(_, p)| now >= p.last + debounce).map(|(f, _)| f.clone()).collect();
        for file in quiet {
            let Some(mut p) = pending.remove(&file) else { continue };
            let before = stamp(&file);
            // cargo links the finished file in one step; a file that is
            // gone now will announce itself again.
            if before.is_none() {
                continue;
            }
            // Changed without an event, or while it was read: wait again.
            let again = |mut p: Pending, pending: &mut HashMap<PathBuf, Pending>, stamp: Stamp| {
                p.last = Instant::now();
                p.stamp = stamp;
                pending.insert(file.clone(), p);
            };
            if before != p.stamp {
                again(p, &mut pending, before);
                continue;
            }
            let read = crate::loader::read_plugin_file(&file);
            let after = stamp(&file);
            if after != before {
                again(p, &mut pending, after);
                continue;
            }
            let (build, rejected) = match read {
                Ok(bytes) => {
                    let build = format!("{:016x}", crate::loader::content_hash(&bytes));
                    (build, crate::image::check(&bytes).err())
                }
                Err(crate::LoadCause::Rejected(defect)) => (String::new(), Some(defect)),
                Err(_) => continue,
            };
            if rejected.as_ref().is_some_and(|d| matches!(d.code, "truncated" | "empty")) && !p.graced {
                p.graced = true;
                p.last = Instant::now() + grace.saturating_sub(debounce);
                pending.insert(file, p);
                continue;
            }
            let device = {
                let t = targets.lock().unwrap_or_else(|p| p.into_inner());
                match t.get(&file) {
                    Some((device, known)) if *known != build || build.is_empty() => Some(device.clone()),
                    _ => None,
                }
            };
            let Some(device) = device else { continue };
            let (lock, cvar) = &*ready;
            let mut r = lock.lock().unwrap_or_else(|p| p.into_inner());
            r.retain(|c| c.file != file);
            r.push(Change { device, file, noticed: p.first, build, rejected });
            flag.store(true, Ordering::Relaxed);
            cvar.notify_all();
        }
    }
}
