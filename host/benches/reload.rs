//! Hot-reload latency: from a rebuilt plugin file appearing in the watched
//! directory to the new code's `Sys_Dynamic_Device_Init` returning, through
//! the whole `--watch` path (file-system event, debounce, content hash,
//! copy, layout check, exit, state handover, init). The file is VPOSTD's
//! release build with a few bytes appended, so each version is new content
//! and the same code; it appears by rename, the way cargo links it.
//!
//! Baseline in the same run: the same path with hot-lib-reloader's default
//! debounce of 500 ms. Besides criterion's mean, the bench prints the
//! median and worst of 50 reloads and the mapped memory added per reload;
//! BENCHMARKS.md records them.

use std::ops::ControlFlow;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use vmm_host::Machine;
use vmm_host::watch::Watcher;
use vmm_testkit::{Scenario, plugin_dir};

struct Setup {
    machine: Machine,
    watcher: Watcher,
    dir: PathBuf,
    file: PathBuf,
    bytes: Vec<u8>,
}

/// Versions are unique in the process, so every one is new content (a new
/// mapped copy), whichever setup publishes it.
static VERSION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

fn setup(debounce: Duration, tag: &str) -> Setup {
    let original = plugin_dir().join(format!("libvpostd{}", std::env::consts::DLL_SUFFIX));
    let bytes = std::fs::read(&original).expect("VPOSTD is built");
    let dir = std::env::temp_dir().join(format!("vmm-reload-bench-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join(original.file_name().unwrap());
    std::fs::write(&file, &bytes).unwrap();
    let mut machine = Scenario::new("[386Enh]\ndevice = [\"VPOSTD.386\"]\n")
        .plugin_dir(&dir)
        .without_trace()
        .machine()
        .expect("manifest");
    machine.boot().expect("boot");
    let watcher = Watcher::new(&machine.plugin_devices(), debounce).expect("watch");
    Setup { machine, watcher, dir, file, bytes }
}

impl Setup {
    /// Publish a new version (rename into place) and run until it is
    /// loaded; the latency.
    fn reload_once(&mut self) -> Duration {
        let version = VERSION.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut bytes = self.bytes.clone();
        bytes.extend_from_slice(&version.to_le_bytes());
        let tmp = self.dir.join("next.tmp");
        std::fs::write(&tmp, &bytes).unwrap();
        let start = Instant::now();
        std::fs::rename(&tmp, &self.file).unwrap();
        let mut ok = false;
        self.machine
            .run_watching(&self.watcher, Some(start + Duration::from_secs(10)), &mut |r| {
                ok = r.ok();
                ControlFlow::Break(())
            })
            .expect("run");
        assert!(ok, "the reload failed");
        start.elapsed()
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn report(name: &str, debounce: Duration) {
    let mut s = setup(debounce, &format!("{name}-report"));
    let before = vmm_host::loader::stats();
    let mut times: Vec<Duration> = (0..50).map(|_| s.reload_once()).collect();
    let after = vmm_host::loader::stats();
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    eprintln!(
        "{name}: 50 reloads: median {:.1} ms, worst {:.1} ms; mapped per reload {:.0} KB ({} copies)",
        ms(times[24]),
        ms(times[49]),
        (after.bytes - before.bytes) as f64 / 50.0 / 1000.0,
        after.copies - before.copies
    );
}

fn reload(c: &mut Criterion) {
    report("debounce_25ms", Duration::from_millis(25));
    report("baseline_debounce_500ms", Duration::from_millis(500));
    let mut group = c.benchmark_group("reload");
    group.sample_size(10).measurement_time(Duration::from_secs(10));
    let mut fast = setup(Duration::from_millis(25), "fast");
    group
        .bench_function("watch_debounce_25ms", |b| b.iter_custom(|iters| (0..iters).map(|_| fast.reload_once()).sum()));
    let mut slow = setup(Duration::from_millis(500), "slow");
    group.bench_function("baseline_hot_lib_reloader_debounce_500ms", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| slow.reload_once()).sum())
    });
    group.finish();
}

criterion_group!(benches, reload);
criterion_main!(benches);
