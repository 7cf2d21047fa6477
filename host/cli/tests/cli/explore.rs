//! `vmm explore`: many seeds, failing runs grouped with their replay
//! commands, shards that split a range exactly, and `[expect]` in `vmm run`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Output;

use crate::common;

use common::text;

fn vmm(dir: &Path, args: &[&str]) -> Output {
    common::vmm_command(dir, args).env_remove("RUST_LOG").output().expect("run vmm")
}

fn scratch(name: &str, manifest: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("explore-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("system.ini"), manifest).unwrap();
    dir
}

fn records(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect()
}

fn violations(path: &Path) -> Vec<serde_json::Value> {
    records(path).into_iter().filter(|r| r["kind"] == "violation").collect()
}

const ORDER_BUG: &str = "[386Enh]\ndevice = [\"fixture-orderbug\"]\n";

/// The failing seeds of an exploration's report, and its run count.
fn failing_seeds(stdout: &str) -> (BTreeSet<u64>, u64) {
    let seeds = stdout
        .lines()
        .filter_map(|l| l.trim().strip_prefix("seed "))
        .map(|l| l.split(':').next().unwrap().parse().unwrap())
        .collect();
    let summary = stdout.lines().find(|l| l.starts_with("explored ")).unwrap_or_else(|| panic!("{stdout}"));
    let runs = summary.split_whitespace().nth(1).unwrap().parse().unwrap();
    (seeds, runs)
}

#[test]
fn the_default_machine_passes_fifty_random_schedules_and_its_expectations() {
    let manifest = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../system.ini")).unwrap();
    assert!(manifest.contains("[expect]"), "system.ini states VPOSTD's exactly-once delivery");
    let dir = scratch("default", &manifest);
    let out = vmm(&dir, &["explore", "system.ini", "--runs", "50", "--jobs", "2"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert_eq!(failing_seeds(&stdout), (BTreeSet::new(), 50), "{stdout}");
    assert!(stdout.contains(": 0 failing,") && stdout.contains("runs/s"), "{stdout}");
}

#[test]
fn a_failing_schedule_is_reported_with_a_replay_command_that_reproduces_it() {
    let dir = scratch("orderbug", ORDER_BUG);
    // FIFO and LIFO order hide the bug.
    for order in ["fifo", "lifo"] {
        let trace = dir.join(format!("{order}.jsonl"));
        let out = vmm(&dir, &["run", "system.ini", "--order", order, "--trace", trace.to_str().unwrap()]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert!(violations(&trace).is_empty(), "{order}");
    }
    let out = vmm(&dir, &["explore", "system.ini", "--seeds", "0..20", "--out", "failures"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}{}", text(&out.stderr));
    let (seeds, runs) = failing_seeds(&stdout);
    assert_eq!(runs, 20);
    assert!(!seeds.is_empty() && seeds.len() < 20, "random order breaks some seeds, not all: {stdout}");
    assert!(stdout.starts_with("violation FXORDER_MIDDLE_NOT_SECOND in FXORDER: "), "{stdout}");
    let line = stdout.lines().find(|l| l.trim().starts_with("seed ")).unwrap();
    let seed: u64 = line.trim()["seed ".len()..].split(':').next().unwrap().parse().unwrap();
    let command = line.split_once(": ").unwrap().1.split("  # trace: ").next().unwrap();
    let words: Vec<&str> = command.split_whitespace().collect();
    assert_eq!(&words[..3], ["vmm", "run", "system.ini"], "{command}");
    assert!(command.ends_with(&format!("--order random --seed {seed}")), "{command}");
    // The replay fails the same way, record for record.
    let replay = dir.join("replay.jsonl");
    let mut args: Vec<&str> = words[1..].to_vec();
    args.extend(["--trace", replay.to_str().unwrap()]);
    let out = vmm(&dir, &args);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let kept = dir.join("failures").join(format!("seed-{seed}.jsonl"));
    assert_eq!(records(&replay), records(&kept), "the replay and the kept trace of seed {seed}");
    let v = violations(&replay);
    assert_eq!(v.len(), 1);
    assert_eq!((v[0]["code"].as_str(), v[0]["device"].as_str()), (Some("FXORDER_MIDDLE_NOT_SECOND"), Some("FXORDER")));
    // No trace is kept for a passing seed.
    let passing = (0..20).find(|s| !seeds.contains(s)).unwrap();
    assert!(!dir.join("failures").join(format!("seed-{passing}.jsonl")).exists());
}

#[test]
fn both_strategies_find_shrink_and_replay_the_order_bug() {
    for strategy in ["random", "pct"] {
        let dir = scratch(&format!("shrink-{strategy}"), ORDER_BUG);
        let out =
            vmm(&dir, &["explore", "system.ini", "--seeds", "0..20", "--strategy", strategy, "--out", "failures"]);
        let stdout = text(&out.stdout);
        assert_eq!(out.status.code(), Some(1), "{stdout}{}", text(&out.stderr));
        assert!(
            stdout.starts_with("violation FXORDER_MIDDLE_NOT_SECOND in FXORDER: ") || strategy == "pct",
            "{stdout}"
        );
        assert!(stdout.contains(&format!("strategy {strategy})")), "{stdout}");
        // The replay command of a failing seed reproduces its kept trace.
        let line = stdout.lines().find(|l| l.trim().starts_with("seed ")).unwrap();
        let seed: u64 = line.trim()["seed ".len()..].split(':').next().unwrap().parse().unwrap();
        let command = line.split_once(": ").unwrap().1.split("  # trace: ").next().unwrap();
        assert!(command.contains(&format!("--order {strategy} --seed {seed}")), "{command}");
        if strategy == "pct" {
            assert!(command.contains("--pct-depth 3 --pct-steps 2"), "{command}");
            // FXORDER: two tasks (`counted`, `middle`), two steps.
            let bound = "pct: depth 3, change points among 2 step(s), 2 task(s): one run finds a bug of depth 3 \
                         with probability at least 1/8; 20 run(s) all miss it with probability at most ";
            assert!(stdout.starts_with(bound), "{stdout}");
        }
        let replay = dir.join("replay.jsonl");
        let mut args: Vec<&str> = command.split_whitespace().skip(1).collect();
        args.extend(["--trace", replay.to_str().unwrap()]);
        let out = vmm(&dir, &args);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let kept = dir.join("failures").join(format!("seed-{seed}.jsonl"));
        assert_eq!(records(&replay), records(&kept), "{strategy}: the replay and the kept trace of seed {seed}");
        // The first failure is shrunk to one choice away from the default
        // order (the newest ready event first), and its schedule file
        // replays the failure.
        let shrunk =
            stdout.lines().find(|l| l.trim().starts_with("shrunk seed ")).unwrap_or_else(|| panic!("{stdout}"));
        assert!(shrunk.contains("-> 1 and 0 ("), "{shrunk}");
        let file = format!("failures/seed-{seed}.schedule");
        let text_of_file = std::fs::read_to_string(dir.join(&file)).unwrap();
        assert!(text_of_file.starts_with("vmm-schedule 1\n"), "{text_of_file}");
        assert!(text_of_file.contains(&format!("\norder {strategy}\nseed {seed}\n")), "{text_of_file}");
        assert_eq!(text_of_file.lines().filter(|l| l.starts_with("event ")).count(), 1, "{text_of_file}");
        let command = stdout.lines().find_map(|l| l.trim().strip_prefix("replay the shrunk schedule: ")).unwrap();
        assert!(
            command.starts_with("vmm run system.ini ") && command.ends_with(&format!(" --schedule {file}")),
            "{command}"
        );
        let shrunk_trace = dir.join("shrunk.jsonl");
        let out = vmm(&dir, &["run", "system.ini", "--schedule", &file, "--trace", shrunk_trace.to_str().unwrap()]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let v = violations(&shrunk_trace);
        assert_eq!(v.len(), 1, "{strategy}");
        assert_eq!(v[0]["code"], "FXORDER_MIDDLE_NOT_SECOND");
        assert_eq!(records(&shrunk_trace)[0]["order"], strategy);
    }
}

#[test]
fn bad_schedule_files_and_pct_flags_of_vmm_run_are_refused() {
    let dir = scratch("bad-schedule", ORDER_BUG);
    std::fs::write(dir.join("s.schedule"), "vmm-schedule 1\norder random\nseed 3\nevent 0 x\n").unwrap();
    let out = vmm(&dir, &["run", "system.ini", "--schedule", "s.schedule"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("--schedule `s.schedule` is refused") && stderr.contains("line 4: the value `x`"),
        "{stderr}"
    );
    let out = vmm(&dir, &["run", "system.ini", "--schedule", "missing.schedule"]);
    assert!(text(&out.stderr).contains("cannot read it"), "{}", text(&out.stderr));
    let out = vmm(&dir, &["run", "system.ini", "--schedule", "s.schedule", "--seed", "4"]);
    assert_eq!(out.status.code(), Some(2), "--schedule gives the seed");
    for (flag, value) in [("--pct-depth", "0"), ("--pct-depth", "1001"), ("--pct-steps", "0")] {
        let out = vmm(&dir, &["run", "system.ini", "--order", "pct", flag, value]);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flag} {value}: {stderr}");
        assert!(stderr.contains(&format!("invalid value '{value}' for '{flag}")), "{stderr}");
    }
}

#[test]
fn fail_fast_stops_at_the_first_failure() {
    let dir = scratch("fail-fast", ORDER_BUG);
    let out = vmm(&dir, &["explore", "system.ini", "--runs", "200", "--jobs", "1", "--fail-fast"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let (seeds, runs) = failing_seeds(&stdout);
    assert_eq!(seeds.len(), 1, "{stdout}");
    assert_eq!(runs, seeds.first().unwrap() + 1, "one job stops right after the first failing seed: {stdout}");
}

#[test]
fn shards_split_a_seed_range_exactly() {
    let dir = scratch("shards", ORDER_BUG);
    let whole = vmm(&dir, &["explore", "system.ini", "--seeds", "5..=44"]);
    let (all, runs) = failing_seeds(&text(&whole.stdout));
    assert_eq!(runs, 40);
    let mut union = BTreeSet::new();
    let mut total = 0;
    for i in 1..=3 {
        let shard = format!("{i}/3");
        let out = vmm(&dir, &["explore", "system.ini", "--seeds", "5..=44", "--shard", &shard]);
        let (seeds, runs) = failing_seeds(&text(&out.stdout));
        // Shard I takes the seeds whose index in the range is I-1 mod 3.
        assert!(seeds.iter().all(|s| (s - 5) % 3 == i - 1), "{shard}: {seeds:?}");
        assert_eq!(runs, [14, 13, 13][(i - 1) as usize], "{shard}");
        assert!(union.is_disjoint(&seeds), "{shard}");
        union.extend(seeds);
        total += runs;
    }
    assert_eq!((union, total), (all, 40));
}

#[test]
fn panics_and_fatal_errors_fail_runs_with_their_own_signatures() {
    for (name, section, want) in [
        ("panic", "panic = [\"Device_Init\"]", "plugin_error panic in control in FXBAD: 3 failing run(s)"),
        ("fatal", "fatal = \"Init_Complete\"", "fatal_error FATAL in FXBAD: 3 failing run(s)"),
    ] {
        let dir = scratch(name, &format!("[386Enh]\ndevice = [\"fixture-misbehave\"]\n[FXBAD]\n{section}\n"));
        let out = vmm(&dir, &["explore", "system.ini", "--runs", "3"]);
        let stdout = text(&out.stdout);
        assert_eq!(out.status.code(), Some(1), "{stdout}");
        assert!(stdout.starts_with(want), "{stdout}");
        assert!(out.stderr.is_empty(), "no log lines when stderr is not a terminal: {}", text(&out.stderr));
    }
}

#[test]
fn bad_explore_arguments_are_refused_with_one_error_paragraph() {
    let dir = scratch("bad-args", ORDER_BUG);
    for (args, want) in [
        (&["--shard", "4/3"][..], "--shard `4/3` is refused"),
        (&["--seeds", "9..3"], "ends before it starts"),
        (&["--strategy", "sideways"], "the strategies are: random, pct"),
        (&["--pct-depth", "2"], "it applies to --strategy pct only"),
        (&["--strategy", "pct", "--pct-depth", "0"], "give a depth from 1 to 1000"),
        (&["--strategy", "pct", "--pct-steps", "0"], "give at least 1 step"),
        (&["--jobs", "0"], "--jobs `0` is refused"),
    ] {
        let out = vmm(&dir, &[&["explore", "system.ini"][..], args].concat());
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(stderr.starts_with("error: ") && stderr.contains(want), "{args:?}: {stderr}");
    }
}

#[test]
fn vmm_run_fails_when_an_expectation_does_not_hold() {
    let manifest =
        format!("{ORDER_BUG}\n[expect]\nnone = [\"violation\"]\ncount = [{{ kind = \"vm_created\", max = 0 }}]\n");
    let dir = scratch("run-expect", &manifest);
    let ok = vmm(&dir, &["run", "system.ini"]);
    assert!(ok.status.success(), "LIFO order keeps the expectations: {}", text(&ok.stderr));
    // Seed 0 of the random order breaks FXORDER (found by the exploration above).
    let out = vmm(&dir, &["run", "system.ini", "--order", "random", "--seed", "0"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let error = stderr.lines().filter(|l| l.starts_with("error:")).collect::<Vec<_>>();
    assert_eq!(error.len(), 1, "{stderr}");
    assert!(error[0].starts_with("error: system.ini:5:9: expectation `none = [violation]` does not hold"), "{stderr}");
    assert!(error[0].contains("FXORDER_MIDDLE_NOT_SECOND"), "{stderr}");
}

#[test]
fn a_report_whose_reader_has_gone_ends_vmm_quietly() {
    use std::os::unix::process::ExitStatusExt;
    let dir = scratch("closed-pipe", ORDER_BUG);
    // Stdout is a pipe nobody reads: the reader is closed before vmm starts.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = common::vmm_command(&dir, &["explore", "system.ini", "--runs", "5", "--jobs", "1"])
        .env_remove("RUST_LOG")
        .stdout(writer)
        .output()
        .expect("run vmm");
    let stderr = text(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.signal(), Some(libc::SIGPIPE), "{:?}: {stderr}", out.status);
}
