//! The `vmm` binary: commands, exit status, error paragraphs, trace files.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::common;

use common::text;
use vmm_testkit::plugin_dir;

fn vmm(dir: &Path, args: &[&str]) -> Output {
    common::vmm_command(dir, args).env("RUST_LOG", "warn").output().expect("run vmm")
}

/// `vmm` with only `args` (for commands without plugin options).
fn vmm_bare(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vmm")).args(args).current_dir(dir).output().expect("run vmm")
}

fn scratch(name: &str, manifest: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("cli-{name}"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("system.ini"), manifest).unwrap();
    dir
}

#[test]
fn list_prints_the_device_table_in_init_order() {
    let dir = scratch("list", "[386Enh]\ndevice = [\"*SHELL\", \"vhello\", \"VCOUNTD.386\"]\n");
    let out = vmm(&dir, &["list", "system.ini"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines[0].starts_with("NAME") && lines[0].contains("INIT ORDER") && lines[0].contains("SERVICES"));
    assert!(lines[1].starts_with("VHELLO") && lines[1].contains("0x0000") && lines[1].contains("0x80000000"));
    assert!(lines[2].starts_with("VCOUNTD") && lines[2].contains("0x3A10") && lines[2].trim_end().ends_with('3'));
    assert!(lines[3].starts_with("SHELL") && lines[3].contains("0xB0000000") && lines[3].contains("*SHELL"));
}

#[test]
fn list_shows_files_below_the_current_directory_by_relative_path() {
    let dir = scratch("list-rel", "[386Enh]\ndevice = [\"vcountd\"]\n[machine]\nplugin_path = [\"plugins\"]\n");
    let lib = format!("libvcountd{}", std::env::consts::DLL_SUFFIX);
    std::fs::create_dir_all(dir.join("plugins")).unwrap();
    std::fs::copy(plugin_dir().join(&lib), dir.join("plugins").join(&lib)).unwrap();
    let out = vmm_bare(&dir, &["list", "system.ini", "--build", "never"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let row = stdout.lines().find(|l| l.starts_with("VCOUNTD")).unwrap_or_default();
    assert!(row.contains(&format!(" plugins/{lib} ")), "{stdout}");
}

#[test]
fn help_says_what_vmm_does_with_examples_and_where_the_docs_are() {
    let out = vmm_bare(Path::new("."), &["--help"]);
    assert!(out.status.success());
    let help = text(&out.stdout);
    for want in ["`vmm` alone is `vmm run`", "./system.ini", "Examples:", "vmm new vxd", "docs/trace.md"] {
        assert!(help.contains(want), "{want} missing from:\n{help}");
    }
    let run = text(&vmm_bare(Path::new("."), &["run", "--help"]).stdout);
    assert!(run.contains("events that are ready at the same moment"), "{run}");
    assert!(run.contains("--profile") && run.contains("target/debug"), "{run}");
}

#[test]
fn check_reports_and_exits_zero() {
    let dir =
        scratch("check", "[386Enh]\ndevice = [\"vcountd\", \"fixture-misbehave\"]\n[FXBAD]\nfail = \"Device_Init\"\n");
    let out = vmm(&dir, &["check", "system.ini"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("2 device(s) loaded, 1 initialized"), "{stdout}");
    assert!(stdout.contains("FXBAD"), "{stdout}");
}

#[test]
fn run_writes_a_json_lines_trace_and_defaults_to_system_ini() {
    let dir = scratch("run", "[386Enh]\ndevice = [\"vcountd\"]\n");
    let out = vmm(&dir, &["run", "--trace", "out.jsonl"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let trace = std::fs::read_to_string(dir.join("out.jsonl")).unwrap();
    let records: Vec<serde_json::Value> = trace.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(records.iter().all(|r| r["t"].is_u64() && r["kind"].is_string()));
    assert!(records.iter().any(|r| r["kind"] == "control" && r["message"] == "Sys_Critical_Exit"));
}

#[test]
fn errors_exit_non_zero_with_one_paragraph() {
    let dir = scratch("dup", "[386Enh]\ndevice = [\"fixture-dup-a\", \"fixture-dup-b\"]\n");
    let out = vmm(&dir, &["run", "system.ini"]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    let error_lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(error_lines.len(), 1, "{stderr}");
    assert!(error_lines[0].contains("duplicate device ID 0x3F00") && error_lines[0].contains("FXDUPB"), "{stderr}");
}

#[test]
fn set_overrides_a_manifest_key() {
    let dir = scratch("set", "[386Enh]\ndevice = [\"vcountd\", \"vhello\"]\n");
    let out = vmm(&dir, &["run", "system.ini", "--set", "VCOUNTD.Start=7", "--trace", "t.jsonl"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let trace = std::fs::read_to_string(dir.join("t.jsonl")).unwrap();
    assert!(trace.contains("VCOUNTD total is now 8"), "{trace}");
}

#[test]
fn a_bad_manifest_names_file_line_and_column() {
    let dir = scratch("bad", "[386Enh]\ndevice = [\"vcountd\"]\n\n[machine]\nordr = \"lifo\"\n");
    let out = vmm(&dir, &["check", "system.ini"]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(stderr.contains("error: system.ini:5:1: unknown field `ordr`"), "{stderr}");
}

/// The repository's default machine, copied into a scratch directory.
fn default_machine(name: &str) -> PathBuf {
    let manifest = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../system.ini")).unwrap();
    scratch(name, &manifest)
}

#[test]
fn the_default_machine_tells_the_story_of_its_messages() {
    let dir = default_machine("demo");
    let out = vmm(&dir, &["run", "--trace", "demo.jsonl", "--timeline", "demo.json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.starts_with("What happened to each message:\n"), "{stdout}");
    assert!(stdout.contains("registered with VPOSTD; its callback is POSTHOST!PostCallback"), "{stdout}");
    assert!(stdout.contains("waited for the system VM to enable interrupts"), "{stdout}");
    assert!(stdout.contains("to leave the critical section"), "{stdout}");
    assert!(stdout.contains("the window's queue was full"), "{stdout}");
    let table: Vec<&str> = stdout.lines().skip_while(|l| !l.starts_with("VM ")).collect();
    assert_eq!(table[0].split_whitespace().collect::<Vec<_>>(), ["VM", "POSTED", "DELIVERED", "RETRIED", "DROPPED"]);
    assert!(table[1].starts_with("DOS1 (VM 2)") && table[1].contains("  6  "), "{stdout}");
    assert!(table[2].starts_with("DOS2 (VM 3)") && table[2].contains("  4  "), "{stdout}");
    assert!(table.iter().skip(1).all(|l| l.trim_end().ends_with(" 0")), "nothing dropped: {stdout}");
    // The timeline opens in Perfetto: a JSON object with trace events.
    let timeline: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("demo.json")).unwrap()).unwrap();
    assert!(timeline["traceEvents"].as_array().is_some_and(|e| !e.is_empty()));

    // `vmm story` tells the same story from the trace file.
    let again = vmm_bare(&dir, &["story", "demo.jsonl"]);
    assert!(again.status.success(), "{}", text(&again.stderr));
    assert_eq!(text(&again.stdout), stdout);
}

#[test]
fn no_story_and_story_errors() {
    let dir = default_machine("no-story");
    let out = vmm(&dir, &["run", "--no-story", "--trace", "t.jsonl"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "");
    std::fs::write(dir.join("other.jsonl"), "{\"t\":0,\"kind\":\"machine\"}\n").unwrap();
    let out = vmm_bare(&dir, &["story", "other.jsonl"]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("the trace has no post notes"), "{}", text(&out.stderr));
    std::fs::write(dir.join("bad.jsonl"), "{\"t\":0}\nnot json\n").unwrap();
    let out = vmm_bare(&dir, &["story", "bad.jsonl"]);
    assert!(text(&out.stderr).contains("line 2: not a trace record"), "{}", text(&out.stderr));
}

#[test]
fn run_watch_reloads_a_rebuilt_device_and_prints_one_line() {
    // A private copy of VPOSTD, so the test can "rebuild" it.
    let dir = scratch("watch", "[386Enh]\ndevice = [\"VPOSTD.386\"]\n[machine]\nrealtime = true\n");
    let lib = format!("libvpostd{}", std::env::consts::DLL_SUFFIX);
    let bytes = std::fs::read(plugin_dir().join(&lib)).unwrap();
    let plugins = dir.join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    std::fs::write(plugins.join(&lib), &bytes).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_vmm"))
        .args(["run", "system.ini", "--build", "never", "--watch", "--until", "3s", "--trace", "w.jsonl"])
        .arg("--plugin-dir")
        .arg(&plugins)
        .current_dir(&dir)
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(800));
    // What cargo does: the finished file appears under its name at once.
    let mut rebuilt = bytes.clone();
    rebuilt.extend_from_slice(b"rebuilt");
    std::fs::write(plugins.join("next.tmp"), &rebuilt).unwrap();
    std::fs::rename(plugins.join("next.tmp"), plugins.join(&lib)).unwrap();
    let out = child.wait_with_output().unwrap();
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    // Human output goes to stderr only, without colour when it is not a terminal.
    assert!(!stdout.contains("reload"), "{stdout}");
    assert!(!stderr.contains('\u{1b}'), "ANSI escape codes in a piped stderr: {stderr:?}");
    assert!(stderr.contains("stopped at 3000 ms of virtual time: the --until time was reached"), "{stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with("reload ")).collect();
    assert_eq!(lines.len(), 1, "{stdout}\n{stderr}");
    assert!(lines[0].starts_with("reload VPOSTD: ok in "), "{stderr}");
    assert!(stderr.contains("watching") && stderr.contains("plugin libraries mapped: 2 copies"), "{stderr}");
    let trace = std::fs::read_to_string(dir.join("w.jsonl")).unwrap();
    assert_eq!(trace.lines().filter(|l| l.contains("\"kind\":\"reload\"")).count(), 1);

    // Without --watch nothing is watched.
    let out = vmm(&dir, &["run", "system.ini", "--until", "10ms"]);
    assert!(out.status.success());
    assert!(!text(&out.stderr).contains("watching"), "{}", text(&out.stderr));
}

/// Send `signal` to the child.
fn send(signal: i32, child: &std::process::Child) {
    let pid = libc::pid_t::try_from(child.id()).unwrap();
    // SAFETY: kill(2) takes plain integers; the child is ours and has not
    // been waited for, so the pid is still its own.
    assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
}

/// Start `vmm run ARGS` with stderr piped to a channel, line by line.
fn spawn_run(dir: &Path, args: &[&str]) -> (std::process::Child, std::sync::mpsc::Receiver<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_vmm"))
        .arg("run")
        .args(args)
        .arg("--plugin-dir")
        .arg(plugin_dir())
        .args(["--build", "never"])
        .current_dir(dir)
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    (child, rx)
}

/// Wait (at most a minute) for a stderr line containing `what`.
fn wait_for(lines: &std::sync::mpsc::Receiver<String>, what: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while let Ok(line) = lines.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now())) {
        if line.contains(what) {
            return;
        }
    }
    panic!("vmm never printed a line with `{what}`");
}

/// Every line of a trace file, parsed (panics on a line that is not a
/// whole record).
fn records(path: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.is_empty() || text.ends_with('\n'), "the trace ends mid-record");
    text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect()
}

/// A `--watch` run of the demo in real time (five minutes of posts),
/// stopped by `signal` once it runs: the machine shuts down, the trace is
/// complete, the story is told, and `vmm` exits 128 + the signal.
fn a_signal_stops_a_watch_run(signal: i32, status: i32) {
    let dir = default_machine(&format!("signal-{signal}"));
    std::fs::copy(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../plugins/vpostd/watch.ini"), dir.join("watch.ini"))
        .unwrap();
    let (child, lines) = spawn_run(&dir, &["system.ini", "watch.ini", "--watch", "--trace", "t.jsonl"]);
    wait_for(&lines, "watching");
    std::thread::sleep(std::time::Duration::from_millis(300));
    send(signal, &child);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(status));
    let trace = records(&dir.join("t.jsonl"));
    let has = |kind: &str, key: &str, value: &str| trace.iter().any(|r| r["kind"] == kind && r[key] == value);
    assert!(has("phase", "phase", "running"));
    assert!(has("phase", "phase", "system_exit"));
    assert!(has("control", "message", "Sys_Critical_Exit"));
    assert_eq!(trace.last().unwrap()["phase"], "stopped");
    // The story was told, and `vmm story` tells it again from the file.
    let stdout = text(&out.stdout);
    assert!(stdout.starts_with("What happened to each message:\n"), "{stdout}");
    let again = vmm_bare(&dir, &["story", "t.jsonl"]);
    assert!(again.status.success(), "{}", text(&again.stderr));
    assert_eq!(text(&again.stdout), stdout);
}

#[test]
fn sigint_stops_a_watch_run_completes_the_trace_tells_the_story_and_exits_130() {
    a_signal_stops_a_watch_run(libc::SIGINT, 130);
}

#[test]
fn sigterm_stops_a_watch_run_completes_the_trace_tells_the_story_and_exits_143() {
    a_signal_stops_a_watch_run(libc::SIGTERM, 143);
}

#[test]
fn a_second_signal_exits_at_once_and_the_trace_ends_on_a_record_boundary() {
    // FXSTALL spends a minute in System_Exit: the first signal's shutdown
    // cannot finish before the second one arrives.
    let dir = scratch(
        "second-signal",
        "[386Enh]\ndevice = [\"vcountd\", \"fixture-stall\"]\n[FXSTALL]\nSystem_Exit_Ms = 60000\n\
         [machine]\nrealtime = true\nuntil = \"5min\"\n",
    );
    let started = std::time::Instant::now();
    let (child, lines) = spawn_run(&dir, &["system.ini", "--watch", "--trace", "t.jsonl"]);
    wait_for(&lines, "watching");
    send(libc::SIGINT, &child);
    wait_for(&lines, "stopping at the next safe point");
    // Time to reach FXSTALL's System_Exit, where it stays for a minute.
    std::thread::sleep(std::time::Duration::from_secs(1));
    send(libc::SIGTERM, &child);
    let out = child.wait_with_output().unwrap();
    // The second signal's status: it did not wait for the shutdown.
    assert_eq!(out.status.code(), Some(143));
    assert!(started.elapsed() < std::time::Duration::from_secs(50));
    let trace = records(&dir.join("t.jsonl"));
    // Whole records, up to where the machine was: the records buffered
    // when the second signal came were flushed.
    assert!(trace.iter().any(|r| r["kind"] == "phase" && r["phase"] == "system_exit"));
    assert!(!trace.iter().any(|r| r["kind"] == "phase" && r["phase"] == "stopped"));
}

#[test]
fn story_on_a_cut_trace_tells_the_complete_records_and_warns() {
    let dir = default_machine("cut");
    let out = vmm(&dir, &["run", "--trace", "full.jsonl"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let full = std::fs::read(dir.join("full.jsonl")).unwrap();
    // Cut in the middle of a record two thirds of the way in.
    let mut cut_at = full.len() * 2 / 3;
    while full[cut_at - 1] == b'\n' || full[cut_at] == b'\n' {
        cut_at += 1;
    }
    let complete = full[..cut_at].iter().rposition(|&b| b == b'\n').unwrap() + 1;
    assert!(complete < cut_at);
    std::fs::write(dir.join("cut.jsonl"), &full[..cut_at]).unwrap();
    std::fs::write(dir.join("complete.jsonl"), &full[..complete]).unwrap();
    let cut = vmm_bare(&dir, &["story", "cut.jsonl"]);
    assert!(cut.status.success(), "{}", text(&cut.stderr));
    let whole = vmm_bare(&dir, &["story", "complete.jsonl"]);
    assert!(whole.status.success(), "{}", text(&whole.stderr));
    assert_eq!(text(&cut.stdout), text(&whole.stdout));
    let stderr = text(&cut.stderr);
    assert!(stderr.contains("cut.jsonl") && stderr.contains(&format!("from byte {complete}")), "{stderr}");
    assert!(!text(&whole.stderr).contains("cut"), "{}", text(&whole.stderr));
}

#[test]
fn an_unwritable_trace_or_timeline_path_fails_before_boot() {
    // A device that is not there: had the machine been built, that would
    // have been the error.
    let dir = scratch("paths", "[386Enh]\ndevice = [\"no-such-device\"]\n");
    let out = vmm(&dir, &["run", "--trace", "/nonexistent-dir/x.jsonl"]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(stderr.contains("error: /nonexistent-dir/x.jsonl: cannot write the --trace file"), "{stderr}");
    assert!(!stderr.contains("no-such-device"), "{stderr}");

    let out = vmm(&dir, &["run", "--timeline", "/nonexistent-dir/x.json", "--trace", "t.jsonl"]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(stderr.contains("error: /nonexistent-dir/x.json: cannot write the --timeline file"), "{stderr}");
    assert!(!stderr.contains("no-such-device"), "{stderr}");
    assert!(std::fs::metadata(dir.join("t.jsonl")).map_or(true, |m| m.len() == 0), "no record was written");

    let out = vmm(&dir, &["check", "--trace", "/nonexistent-dir/x.jsonl"]);
    assert!(text(&out.stderr).contains("cannot write the --trace file"), "{}", text(&out.stderr));
}

#[test]
fn recursion_past_the_depth_limit_is_an_error_not_a_crash() {
    for via in ["vxdcall", "event"] {
        let dir = scratch(
            &format!("deep-{via}"),
            &format!("[386Enh]\ndevice = [\"fixture-deep\"]\n[FXDEEP]\nDepth = 15000\nVia = \"{via}\"\n"),
        );
        let out = vmm(&dir, &["run", "--trace", "t.jsonl"]);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
        let stderr = text(&out.stderr);
        assert!(stderr.contains("error: ") && stderr.contains("nested too deep"), "{stderr}");
        let trace = records(&dir.join("t.jsonl"));
        assert!(trace.iter().any(|r| r["kind"] == "fatal_error" && r["device"] == "FXDEEP"));
    }
}

#[test]
fn trace_limit_stops_a_long_run_with_a_whole_trace_and_a_clear_error() {
    let dir = scratch(
        "trace-limit",
        "[386Enh]\ndevice = [\"*SHELL\", \"VPOSTD.386\"]\n[windows]\nload = [\"POSTAPP quiet\"]\n\
         [[vm]]\nname = \"DOS1\"\nprogram = \"POSTDOS\"\nargs = \"count=1000000 interval=1\"\n",
    );
    let out = vmm(&dir, &["run", "--trace", "t.jsonl", "--trace-limit", "1MB", "--no-story"]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(errors[0].contains("trace reached its size limit of 1000000 bytes"), "{stderr}");
    let trace = std::fs::read_to_string(dir.join("t.jsonl")).unwrap();
    assert!(trace.len() <= 1_000_000, "{} bytes", trace.len());
    assert!(trace.len() > 900_000, "{} bytes", trace.len());
    let records: Vec<serde_json::Value> = trace.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let last = records.last().unwrap();
    assert_eq!(last["kind"], "trace_limit", "{last}");
    assert_eq!(last["limit"], 1_000_000);
    assert_eq!(records.iter().filter(|r| r["kind"] == "trace_limit").count(), 1);
}

#[test]
fn bad_trace_limits_and_machine_values_are_refused_before_the_run() {
    let dir = scratch("bad-limits", "[386Enh]\ndevice = [\"vcountd\"]\n");
    let out = vmm(&dir, &["run", "--trace-limit", "5 parsecs"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("--trace-limit"), "{}", text(&out.stderr));
    let out = vmm(&dir, &["run", "--set", "machine.ring3_step=0"]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("error: --set #1 (machine.ring3_step=0):2:14: ring3_step must be longer than 0"),
        "{stderr}"
    );
}

#[test]
fn seeds_of_2_to_the_63_and_above_are_accepted() {
    let dir = scratch("seed", "[386Enh]\ndevice = [\"vcountd\"]\n");
    for seed in ["9223372036854775808", "18446744073709551615"] {
        let out = vmm(&dir, &["run", "--order", "random", "--seed", seed, "--trace", "seed.jsonl"]);
        assert!(out.status.success(), "--seed {seed}: {}", text(&out.stderr));
        let trace = std::fs::read_to_string(dir.join("seed.jsonl")).unwrap();
        let first: serde_json::Value = serde_json::from_str(trace.lines().next().unwrap()).unwrap();
        assert_eq!(first["kind"], "machine");
        assert_eq!(first["seed"].as_u64(), Some(seed.parse().unwrap()), "{first}");
    }
}

#[test]
fn a_run_cut_short_by_until_is_held_only_to_what_any_part_of_a_good_run_satisfies() {
    // At 500 ms posts are still on their way: the default machine's
    // `same_count` speaks of whole runs, its `none` rules of every part.
    let dir = default_machine("until-expect");
    let out = vmm(&dir, &["run", "--until", "500ms", "--no-story"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // A `none` rule still holds a cut run to account.
    std::fs::write(
        dir.join("strict.ini"),
        "[expect]\nnone = [{ kind = \"note\", where = { note = \"post_dropped\" } }]\n",
    )
    .unwrap();
    let out = vmm(&dir, &["run", "system.ini", "strict.ini", "--until", "500ms", "--no-story"]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("strict.ini:2:"), "{}", text(&out.stderr));
}

/// `plugins/postdos-c/system.ini` in a scratch directory, with POSTDOS.COM
/// compiled there by Debian's 16-bit C compiler (`bcc -Md`).
fn postdos_c_machine(name: &str) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let manifest = std::fs::read_to_string(root.join("plugins/postdos-c/system.ini")).unwrap();
    let dir = scratch(name, &manifest);
    let out = Command::new("bcc")
        .args(["-Md", "-o", "POSTDOS.COM"])
        .arg(root.join("plugins/postdos-c/postdos.c"))
        .current_dir(&dir)
        .output()
        .expect("bcc: apt-get install bcc bin86 elks-libc (.ci/run installs them)");
    assert!(out.status.success(), "bcc -Md failed: {}{}", text(&out.stdout), text(&out.stderr));
    dir
}

#[test]
fn the_real_postdos_com_machine_delivers_every_message_under_lifo_and_random_order() {
    let dir = postdos_c_machine("postdos-c");
    for order in
        [&["--order", "lifo"][..], &["--order", "random", "--seed", "7"], &["--order", "random", "--seed", "99"]]
    {
        let mut args = vec!["run", "system.ini"];
        args.extend_from_slice(order);
        // `vmm run` checks the manifest's [expect] (exactly-once delivery, no
        // violation) and fails if it does not hold.
        let out = vmm(&dir, &args);
        assert!(out.status.success(), "{order:?}: {}", text(&out.stderr));
        let stdout = text(&out.stdout);
        let table: Vec<Vec<&str>> =
            stdout.lines().filter(|l| l.starts_with("DOS")).map(|l| l.split_whitespace().collect()).collect();
        assert_eq!(table.len(), 2, "{stdout}");
        // VM, POSTED, DELIVERED, ..., DROPPED
        assert_eq!((table[0][0], table[0][3], table[0][4], table[0][6]), ("DOS1", "6", "6", "0"), "{stdout}");
        assert_eq!((table[1][0], table[1][3], table[1][4], table[1][6]), ("DOS2", "4", "4", "0"), "{stdout}");
        if order[1] == "lifo" {
            // The same story as the default demo's: the burst overflows the queue.
            assert!(stdout.contains("DOS2 (VM 3) posted wParam 3 lParam 4: the window's queue was full"), "{stdout}");
        }
    }
}

/// `plugins/vcomd/contention.ini` (and `windows.ini`) as
/// `vcomd/contention.ini` in a scratch directory, beside `comterm/` (its `plugin_path`) holding comterm.asm
/// and, with `build`, COMTERM.COM assembled there by nasm.
fn contention_machine(name: &str, build: bool) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("cli-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    for sub in ["vcomd", "comterm"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    for ini in ["contention.ini", "windows.ini"] {
        std::fs::copy(root.join("plugins/vcomd").join(ini), dir.join("vcomd").join(ini)).unwrap();
    }
    std::fs::copy(root.join("plugins/comterm/comterm.asm"), dir.join("comterm/comterm.asm")).unwrap();
    if build {
        let out = Command::new("nasm")
            .args(["-f", "bin", "-o", "COMTERM.COM", "comterm.asm"])
            .current_dir(dir.join("comterm"))
            .output()
            .expect("nasm: apt-get install nasm (.ci/run installs it)");
        assert!(out.status.success(), "nasm failed: {}{}", text(&out.stdout), text(&out.stderr));
    }
    dir
}

#[test]
fn the_contention_demo_tells_who_held_com1_when_and_what_each_vm_read() {
    let dir = contention_machine("contention", true);
    for order in
        [&["--order", "lifo"][..], &["--order", "random", "--seed", "7"], &["--order", "random", "--seed", "99"]]
    {
        let mut args = vec!["run", "vcomd/contention.ini"];
        args.extend_from_slice(order);
        // `vmm run` checks the manifest's [expect] (who got the port, the
        // one dialog, what each COMTERM printed) and fails if it does not hold.
        let out = vmm(&dir, &args);
        assert!(out.status.success(), "{order:?}: {}", text(&out.stderr));
        let stdout = text(&out.stdout);
        assert!(stdout.starts_with("Who had COM1 (VCOMD decides):\n"), "{stdout}");
        for line in [
            "    0 ms  TERM-A (VM 2) took it: nobody held it",
            "  150 ms  TERM-B (VM 3) asked for it; the user kept it with TERM-A (VM 2) (the dialog was answered No)",
            "  250 ms  TERM-B (VM 3) was refused 3 times: it lost a contention before",
            "  400 ms  TERM-A (VM 2) let it go",
            "  450 ms  TERM-B (VM 3) took it: nobody held it",
        ] {
            assert!(stdout.contains(line), "{order:?}: no `{line}` in\n{stdout}");
        }
        let table: Vec<Vec<&str>> =
            stdout.lines().filter(|l| l.starts_with("TERM-")).map(|l| l.split_whitespace().collect()).collect();
        // The last column: IRQ 4 simulated into each VM, one per byte it
        // read (COMTERM's handler read it).
        assert!(stdout.contains("IRQ 4 GOT"), "{stdout}");
        assert_eq!(table[0], ["TERM-A", "(VM", "2)", "0-400", "ms", "AAAA", "0", "4"], "{stdout}");
        assert_eq!(table[1], ["TERM-B", "(VM", "3)", "450-950", "ms", "BBBBBB", "7", "6"], "{stdout}");
    }
    // The same story again from the trace file.
    let out = vmm(&dir, &["run", "vcomd/contention.ini", "--no-story", "--trace", "contention.jsonl"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).is_empty());
    let out = vmm_bare(&dir, &["story", "contention.jsonl"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("  400 ms  TERM-A (VM 2) let it go"), "{}", text(&out.stdout));
}

#[test]
fn the_contention_demo_with_windows_tells_when_windows_asked_for_com1_and_when_it_had_it() {
    let dir = contention_machine("contention-windows", true);
    let out = vmm(&dir, &["run", "vcomd/windows.ini"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    for line in [
        "   300 ms  Windows (system VM) asked for it; the user kept it with TERM-A (VM 2) (the dialog was answered No)",
        "  1000 ms  Windows (system VM) took it: nobody held it",
        "  1050 ms  Windows (system VM) let it go",
    ] {
        assert!(stdout.contains(line), "no `{line}` in\n{stdout}");
    }
    let windows: Vec<&str> =
        stdout.lines().find(|l| l.starts_with("Windows (system VM)")).unwrap().split_whitespace().collect();
    assert_eq!(windows[3..], ["1000-1050", "ms", "WIN", "0", "0"], "{stdout}");
}

#[test]
fn the_contention_demo_without_comterm_names_the_command_that_builds_it() {
    let dir = contention_machine("contention-unbuilt", false);
    let out = vmm(&dir, &["run", "vcomd/contention.ini"]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(stderr.contains("vcomd/contention.ini:"), "{stderr}");
    assert!(stderr.contains("program file `COMTERM.COM` not found"), "{stderr}");
    // Paths as the user gave them, from the directory vmm runs in.
    let build = "its source is here: build it with `nasm -f bin -o comterm/COMTERM.COM comterm/comterm.asm`";
    assert!(stderr.contains(build), "no `{build}` in {stderr}");
}
