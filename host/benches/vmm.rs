//! Criterion benchmarks of the VMM core, each beside a baseline measured in
//! the same run. Results and the command that produced them are in
//! BENCHMARKS.md.
//!
//! * `priority_events/*`: schedule + dispatch of one priority event from
//!   plugin code (the callback schedules the next), with n other events
//!   pending; baselines: a `Vec` and a `BinaryHeap` of boxed closures with n
//!   entries.
//! * `service_call/*`: `Get_Cur_VM_Handle` called from plugin code, beside
//!   a direct (not inlined) Rust call.
//! * `ring3/*`: a DOS program's V86 API round trip and a nested far call,
//!   beside direct calls.
//! * `vpostd/*`: the VPOSTD route, per message, from POSTDOS's V86 API call
//!   to POSTAPP's window procedure; and the same route to a window handle
//!   that does not exist (PostMessage returns TRUE without queueing), which
//!   leaves out the queue, GetMessage and the window procedure.
//! * `vpostd/real_postdos_com_to_window_procedure`: the same route per
//!   message with VPOSTD's DOS side as real machine code (POSTDOS.COM,
//!   built from `plugins/postdos-c/postdos.c` with `bcc -Md`) run by the
//!   V86 monitor, beside `dos_to_window_procedure` (the Rust module).
//! * `v86/tight_loop_in_a_dos_vm`: instructions per second of a tight loop
//!   (`LOOP` to itself, 2^20 instructions) in a DOS VM, through the whole
//!   monitor and scheduler (a run of the interpreter per `[machine]
//!   v86_step`); the bare interpreter and the same loop in Rust are
//!   `host/x86/benches/x86.rs`.
//! * `vm_creation/*`: a machine with 10^3 and 10^4 `[[vm]]` entries booted,
//!   run and shut down, beside the machine without VMs: the time the VMs
//!   add grows tenfold from 10^3 to 10^4, so creating (and destroying) VMs
//!   is linear.
//! * `livelock_guard/*`: host time until the livelock guard, at its default
//!   limit, stops a chain of events at one instant, with and without a
//!   trace.
//! * `virtual_irq/*`: one virtual interrupt from `VPICD_Set_Int_Request`
//!   to the VM's handler (a Rust DOS module's export), its EOI (`OUT 20h`
//!   through the port table to the device's EOI procedure, which clears
//!   the request) and its IRET (the device's IRET procedure, which sets
//!   the next request), beside the same steps as direct Rust calls.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use vmm_host::Machine;
use vmm_plugin_api::ServiceCall;
use vmm_plugin_api::ddk::vxd_service;
use vmm_plugin_api::prelude::*;
use vmm_testkit::{Scenario, json};

const FXBENCH: u16 = 0x3F20;

/// The baselines' unit of work: a boxed one-shot closure.
type Job = Box<dyn FnOnce(&mut u64)>;

/// The virtual time one timed run of `priority_events/vmm` covers (the
/// chain takes none of it).
const PAIRS_RUN: vmm_host::time::Duration = vmm_host::time::Duration::from_millis(1);

fn bench_machine() -> Machine {
    let mut m =
        Scenario::new("[386Enh]\ndevice = [\"fixture-bench\"]\n[machine]\nlivelock_limit = 9223372036854775807\n")
            .without_trace()
            .machine()
            .expect("manifest");
    m.boot().expect("boot");
    m
}

fn service(m: &mut Machine, ordinal: u16, eax: u32) -> u32 {
    let mut call = ServiceCall::default();
    call.regs.eax = eax;
    m.call_service(vxd_service(FXBENCH, ordinal), &mut call).expect("service call");
    call.regs.eax
}

fn priority_events(c: &mut Criterion) {
    let mut group = c.benchmark_group("priority_events");
    group.throughput(Throughput::Elements(1)).sample_size(20).measurement_time(Duration::from_secs(4));
    for pending in [100u32, 10_000, 1_000_000] {
        let mut m = bench_machine();
        service(&mut m, 2, pending);
        group.bench_with_input(BenchmarkId::new("vmm", pending), &pending, |b, _| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                let mut left = iters;
                while left > 0 {
                    let k = left.min(u32::MAX as u64) as u32;
                    service(&mut m, 3, k);
                    // The chain runs at one instant; the filler events
                    // stay pending (the stop ends the run, not a deadlock).
                    m.run_for(PAIRS_RUN).expect("run");
                    left -= k as u64;
                }
                start.elapsed()
            })
        });
        drop(m);

        group.bench_with_input(BenchmarkId::new("baseline_vec", pending), &pending, |b, &n| {
            let mut v: Vec<Job> = (0..n).map(|_| Box::new(|x: &mut u64| *x += 1) as Job).collect();
            let mut acc = 0u64;
            b.iter(|| {
                v.push(Box::new(|x: &mut u64| *x += 1));
                let f = v.pop().expect("pushed");
                f(&mut acc);
            });
            black_box(acc);
        });

        group.bench_with_input(BenchmarkId::new("baseline_binary_heap", pending), &pending, |b, &n| {
            type Item = (Reverse<u64>, usize);
            let mut heap: BinaryHeap<Item> = BinaryHeap::new();
            let mut slots: Vec<Option<Job>> = Vec::new();
            for i in 0..n as u64 {
                slots.push(Some(Box::new(|x: &mut u64| *x += 1)));
                heap.push((Reverse(i + 1_000_000_000), slots.len() - 1));
            }
            let mut seq = 0u64;
            let mut acc = 0u64;
            b.iter(|| {
                seq += 1;
                slots.push(Some(Box::new(|x: &mut u64| *x += 1)));
                heap.push((Reverse(seq), slots.len() - 1));
                let (_, i) = heap.pop().expect("pushed");
                if let Some(f) = slots[i].take() {
                    f(&mut acc);
                }
                slots.pop();
            });
            black_box(acc);
        });
    }
    group.finish();
}

#[inline(never)]
fn direct_get_cur_vm_handle(cur: &std::cell::Cell<u32>) -> u32 {
    cur.get()
}

fn service_call(c: &mut Criterion) {
    let mut group = c.benchmark_group("service_call");
    group.throughput(Throughput::Elements(1)).sample_size(30);
    let mut m = bench_machine();
    group.bench_function("get_cur_vm_handle_from_plugin", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            let mut left = iters;
            while left > 0 {
                let k = left.min(u32::MAX as u64) as u32;
                black_box(service(&mut m, 1, k));
                left -= k as u64;
            }
            start.elapsed()
        })
    });
    let cur = std::cell::Cell::new(0x0001_0001u32);
    group.bench_function("direct_rust_call", |b| b.iter(|| black_box(direct_get_cur_vm_handle(black_box(&cur)))));
    group.finish();
}

/// A machine that runs BENCHDOS with `args` in a DOS VM; `run()` runs it.
fn dos_machine(args: &str) -> Machine {
    let mut m = Scenario::new(&format!(
        "[386Enh]\ndevice = [\"fixture-bench\"]\n[machine]\nlivelock_limit = 9223372036854775807\n\
         [[vm]]\nname = \"DOS1\"\nprogram = \"fixture-bench-dos\"\nargs = \"{args}\"\n"
    ))
    .without_trace()
    .machine()
    .expect("manifest");
    m.boot().expect("boot");
    m
}

/// Time `iters` units of work done by machines of at most `batch` units
/// each (`make(k)` boots one for `k` units); booting is not timed.
fn time_runs(iters: u64, batch: u64, mut make: impl FnMut(u64) -> Machine) -> Duration {
    let mut total = Duration::ZERO;
    let mut left = iters;
    while left > 0 {
        let k = left.min(batch);
        let mut m = make(k);
        let start = Instant::now();
        m.run().expect("run");
        total += start.elapsed();
        left -= k;
    }
    total
}

/// Time `run()` of machines whose DOS programs make `iters` calls in all.
fn time_dos(what: &str, iters: u64) -> Duration {
    time_runs(iters, 10_000_000, |k| dos_machine(&format!("{what} {k}")))
}

#[inline(never)]
fn direct_api(ax: &mut u16) {
    *ax = black_box(*ax).wrapping_add(1);
}

#[inline(never)]
fn direct_nop(a: u32, b: u32) -> u32 {
    a + b
}

fn ring3_calls(c: &mut Criterion) {
    let mut group = c.benchmark_group("ring3");
    group.throughput(Throughput::Elements(1)).sample_size(20);
    group.bench_function("dos_api_round_trip", |b| b.iter_custom(|iters| time_dos("api", iters)));
    group.bench_function("direct_call_for_api", |b| {
        let mut ax = 1u16;
        b.iter(|| direct_api(black_box(&mut ax)))
    });
    group.bench_function("nested_far_call", |b| b.iter_custom(|iters| time_dos("nest", iters)));
    group.bench_function("direct_call_for_far_call", |b| b.iter(|| direct_nop(black_box(3), black_box(1))));
    group.finish();
}

/// A Windows application that registers window handle 0x7777, which does
/// not exist, with VPOSTD through POSTHOST, then waits in its message loop
/// (so POSTHOST, whose callback VPOSTD calls, stays loaded).
struct BenchReg;

impl Module for BenchReg {
    const MODULE: ModuleDef = ModuleDef::windows_app("BENCHREG").segments(&[Segment::moveable("_TEXT")]);

    fn create(_: &Ring3<'_>) -> Result<Self, String> {
        Ok(BenchReg)
    }

    fn start(&self, r3: &Ring3<'_>, _args: &str) -> Step {
        let lib = r3.load_library("POSTHOST").expect("POSTHOST.DLL");
        let register = r3.get_proc_address(lib, "RegisterPostWindow").expect("RegisterPostWindow");
        let ok = r3.call(register, &PascalArgs::encode(&[(2, 0x7777), (2, 0)])).expect("call");
        assert_eq!(ok, 1, "VPOSTD refused the registration");
        Step::get_message()
    }
}

/// A machine where POSTDOS posts `count` messages as fast as they are
/// taken, to POSTAPP (`to_window`) or to a window that does not exist.
fn vpostd_machine(count: u64, to_window: bool) -> Machine {
    let app = if to_window { "POSTAPP" } else { "BENCHREG" };
    let mut m = Scenario::new(&format!(
        "[386Enh]\ndevice = [\"VPOSTD.386\"]\n[machine]\nlivelock_limit = 9223372036854775807\n[windows]\nload = [\"{app}\"]\n\
         [[vm]]\nname = \"DOS1\"\nprogram = \"POSTDOS\"\nargs = \"count={count} interval=0\"\n"
    ))
    .module::<BenchReg>()
    .without_trace()
    .machine()
    .expect("manifest");
    m.boot().expect("boot");
    m
}

fn time_vpostd(iters: u64, to_window: bool) -> Duration {
    time_runs(iters, 2_000_000, |k| vpostd_machine(k, to_window))
}

/// The baseline: the same route as plain Rust, with no emulator: the post
/// goes into a queue, a callback taken from a table posts it into a second
/// queue, and a "window procedure" builds the same text POSTAPP shows.
#[inline(never)]
fn direct_route(posts: &mut std::collections::VecDeque<(u16, u32)>, n: u32) -> usize {
    type Callback = fn(&mut std::collections::VecDeque<(u16, u16, u32)>, u16, u32) -> bool;
    fn post(q: &mut std::collections::VecDeque<(u16, u16, u32)>, w: u16, l: u32) -> bool {
        q.push_back((0x0500, w, l));
        true
    }
    let callbacks: [Callback; 1] = [post];
    let mut window_queue = std::collections::VecDeque::new();
    let mut shown = 0;
    for seq in 1..=n {
        posts.push_back((2, seq));
        let (w, l) = posts.pop_front().expect("posted");
        black_box(callbacks[black_box(0)])(&mut window_queue, w, l);
        let (_msg, w, l) = window_queue.pop_front().expect("queued");
        let text = postapp::PostApp::describe(w, l);
        shown += black_box(text).len();
    }
    shown
}

/// Both routes deliver every message (a benchmark of a failure path would
/// look fast or slow for the wrong reason): a short traced run of each.
fn check_vpostd_routes() {
    for to_window in [true, false] {
        let app = if to_window { "POSTAPP" } else { "BENCHREG" };
        let run = Scenario::new(&format!(
            "[386Enh]\ndevice = [\"VPOSTD.386\"]\n[windows]\nload = [\"{app}\"]\n\
             [[vm]]\nname = \"DOS1\"\nprogram = \"POSTDOS\"\nargs = \"count=10 interval=0\"\n"
        ))
        .module::<BenchReg>()
        .run();
        run.assert_ok();
        let t = run.trace();
        assert_eq!(t.count(json!({"kind": "note", "note": "post_dropped"})), 0, "{app}: posts were dropped");
        let called = t.count(json!({"kind": "note", "note": "post_called", "fields": {"result": true}}));
        assert_eq!(called, 10, "{app}: every post reaches PostMessage, which accepts it");
    }
}

/// The directory of the benchmarks' DOS programs: POSTDOS.COM (compiled
/// with `bcc -Md`) and LOOP.COM (the tight loop), made once.
fn dos_programs() -> &'static std::path::Path {
    static DIR: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("vmm-bench-dos-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("directory");
        let source = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/postdos-c/postdos.c");
        let out = std::process::Command::new("bcc")
            .args(["-Md", "-o", "POSTDOS.COM"])
            .arg(&source)
            .current_dir(&dir)
            .output()
            .expect("bcc (apt-get install bcc bin86 elks-libc)");
        assert!(out.status.success(), "bcc: {}", String::from_utf8_lossy(&out.stderr));
        std::fs::write(dir.join("LOOP.COM"), TIGHT_LOOP).expect("LOOP.COM");
        dir
    })
}

/// `MOV DX,16; o: XOR CX,CX; i: LOOP i; DEC DX; JNZ o; INT 20h`.
const TIGHT_LOOP: &[u8] = &[0xBA, 0x10, 0x00, 0x31, 0xC9, 0xE2, 0xFE, 0x4A, 0x75, 0xF9, 0xCD, 0x20];
/// The instructions it executes: MOV, 16 × (XOR + 65,536 LOOP + DEC + JNZ), INT 20h.
const TIGHT_LOOP_INSTRUCTIONS: u64 = 1 + 16 * (65_536 + 3) + 1;

fn com_machine(manifest: &str) -> Machine {
    let mut m = Scenario::new(manifest).plugin_dir(dos_programs()).without_trace().machine().expect("manifest");
    m.boot().expect("boot");
    m
}

/// POSTDOS.COM posting `count` messages as fast as they are taken to POSTAPP.
fn vpostd_com_machine(count: u64) -> Machine {
    com_machine(&format!(
        "[386Enh]\ndevice = [\"VPOSTD.386\"]\n[machine]\nlivelock_limit = 9223372036854775807\n[windows]\n\
         load = [\"POSTAPP\"]\n[[vm]]\nname = \"DOS1\"\nprogram = \"POSTDOS.COM\"\nargs = \"count={count} interval=0\"\n"
    ))
}

/// The real POSTDOS.COM delivers every message (a short traced run).
fn check_vpostd_com_route() {
    let run = Scenario::new(
        "[386Enh]\ndevice = [\"VPOSTD.386\"]\n[windows]\nload = [\"POSTAPP\"]\n\
         [[vm]]\nname = \"DOS1\"\nprogram = \"POSTDOS.COM\"\nargs = \"count=10 interval=0\"\n",
    )
    .plugin_dir(dos_programs())
    .run();
    run.assert_ok();
    let t = run.trace();
    assert_eq!(t.count(json!({"kind": "message_delivered", "msg": 0x0500})), 10, "{}", t.tail(10));
}

fn v86(c: &mut Criterion) {
    let mut group = c.benchmark_group("v86");
    group.throughput(Throughput::Elements(TIGHT_LOOP_INSTRUCTIONS)).sample_size(20);
    let manifest = "[machine]\nlivelock_limit = 9223372036854775807\n[[vm]]\nname = \"L\"\nprogram = \"LOOP.COM\"\n";
    let check = Scenario::new(manifest).plugin_dir(dos_programs()).run();
    check.assert_ok();
    let ran: u64 = check
        .trace()
        .values(json!({"kind": "v86_slice"}), "instructions")
        .iter()
        .map(|v| v.as_u64().unwrap_or(0))
        .sum();
    assert_eq!(ran, TIGHT_LOOP_INSTRUCTIONS);
    group.bench_function("tight_loop_in_a_dos_vm", |b| {
        b.iter_custom(|iters| time_runs(iters, 1, |_| com_machine(manifest)))
    });
    group.finish();
}

fn vpostd(c: &mut Criterion) {
    check_vpostd_routes();
    check_vpostd_com_route();
    let mut group = c.benchmark_group("vpostd");
    group.throughput(Throughput::Elements(1)).sample_size(20).measurement_time(Duration::from_secs(6));
    group.bench_function("dos_to_window_procedure", |b| b.iter_custom(|iters| time_vpostd(iters, true)));
    group.bench_function("real_postdos_com_to_window_procedure", |b| {
        b.iter_custom(|iters| time_runs(iters, 2_000_000, vpostd_com_machine))
    });
    group.bench_function("dos_to_postmessage_no_queue", |b| b.iter_custom(|iters| time_vpostd(iters, false)));
    group.bench_function("baseline_direct_rust_route", |b| {
        let mut posts = std::collections::VecDeque::new();
        b.iter_custom(|iters| {
            let start = Instant::now();
            let mut left = iters;
            while left > 0 {
                let k = left.min(1_000_000);
                black_box(direct_route(&mut posts, k as u32));
                left -= k;
            }
            start.elapsed()
        })
    });
    group.finish();
}

/// A machine with `n` `[[vm]]` entries (no program): booted, run (the VMs
/// are created at t = 0) and shut down (each is destroyed).
fn vm_machine_text(n: usize) -> String {
    let mut text = String::from("[386Enh]\ndevice = [\"*SHELL\"]\n");
    for i in 0..n {
        text.push_str(&format!("[[vm]]\nname = \"V{i}\"\n"));
    }
    text
}

fn vm_creation(c: &mut Criterion) {
    let mut group = c.benchmark_group("vm_creation");
    group.sample_size(10).measurement_time(Duration::from_secs(10));
    // n = 0 is the machine alone: (T(10^4) - T(0)) / (T(10^3) - T(0))
    // near 10 means creating VMs is linear.
    for n in [0usize, 1_000, 10_000] {
        let text = vm_machine_text(n);
        group.bench_with_input(BenchmarkId::new("vmm", n), &n, |b, &n| {
            b.iter(|| {
                let mut m = Scenario::new(&text).without_trace().machine().expect("manifest");
                m.boot().expect("boot");
                m.run().expect("run");
                assert!(n == 0 || m.vm(&format!("V{}", n - 1)).is_some());
                m.shutdown().expect("shutdown");
            })
        });
    }
    group.finish();
}

/// Host time until the livelock guard, at its default limit, stops a chain
/// of events that keeps virtual time still (FXBENCH_Chain without end),
/// without a trace and with one kept in memory.
fn livelock_guard(c: &mut Criterion) {
    let mut group = c.benchmark_group("livelock_guard");
    group.sample_size(10).measurement_time(Duration::from_secs(20));
    for traced in [false, true] {
        let name = if traced { "trace" } else { "no_trace" };
        group.bench_function(name, |b| {
            b.iter(|| {
                let mut scenario = Scenario::new("[386Enh]\ndevice = [\"fixture-bench\"]\n");
                if !traced {
                    scenario = scenario.without_trace();
                }
                let mut m = scenario.machine().expect("manifest");
                m.boot().expect("boot");
                service(&mut m, 3, u32::MAX);
                let e = m.run().expect_err("a livelock");
                assert!(e.to_string().contains("livelock"), "{e}");
            })
        });
    }
    group.finish();
}

/// A device that traps port 0x3F8 and answers reads with 0x41.
struct TrapDev;

impl VxD for TrapDev {
    const DEVICE: Device = Device::new("TRAPDEV");
    fn create(_: &Vmm<'_>) -> Result<Self, String> {
        Ok(TrapDev)
    }
    fn control(&self, vmm: &Vmm<'_>, msg: ControlMessage) -> Carry {
        if msg.message == DEVICE_INIT {
            vmm.install_io_handler(0x3F8, |_: &TrapDev, _: &Vmm<'_>, io: IoAccess| black_box(io.data) | 0x41).unwrap();
        }
        Carry::Clear
    }
}

/// A Rust DOS program: `OUT port, AL` `count` times (args `port count`,
/// decimal), then exits.
struct OutLoop;

impl Module for OutLoop {
    const MODULE: ModuleDef = ModuleDef::dos_program("OUTLOOP").segments(&[Segment::moveable("_TEXT")]);

    fn create(_: &Ring3<'_>) -> Result<Self, String> {
        Ok(OutLoop)
    }

    fn start(&self, r3: &Ring3<'_>, args: &str) -> Step {
        let mut it = args.split_whitespace().map(|a| a.parse::<u64>().expect("a number"));
        let (port, count) = (it.next().unwrap() as u16, it.next().unwrap());
        for i in 0..count {
            r3.out_byte(port, i as u8).unwrap();
        }
        Step::exit(0)
    }
}

fn time_outs(port: u16, iters: u64) -> Duration {
    time_runs(iters, 10_000_000, |k| {
        let mut m = Scenario::new(&format!(
            "[386Enh]\ndevice = [\"TRAPDEV\"]\n[[vm]]\nname = \"DOS1\"\nprogram = \"OUTLOOP\"\nargs = \"{port} {k}\"\n"
        ))
        .device::<TrapDev>()
        .module::<OutLoop>()
        .without_trace()
        .machine()
        .expect("manifest");
        m.boot().expect("boot");
        m
    })
}

#[inline(never)]
fn direct_handler(port: u16, data: u32) -> u32 {
    if port == 0x3F8 { data | 0x41 } else { 0xFF }
}

fn port_io(c: &mut Criterion) {
    let mut group = c.benchmark_group("port_io");
    group.throughput(Throughput::Elements(1)).sample_size(20);
    group.bench_function("trapped_out_from_ring3", |b| b.iter_custom(|iters| time_outs(0x3F8, iters)));
    group.bench_function("untrapped_out_from_ring3", |b| b.iter_custom(|iters| time_outs(0x2F8, iters)));
    group.bench_function("direct_call_for_handler", |b| b.iter(|| direct_handler(black_box(0x3F8), black_box(7))));
    group.finish();
}

/// IRQBENCH: virtualizes IRQ 5; the VM's unmask and every IRET set the
/// next request for that VM until `[IRQBENCH] count` interrupts ran.
struct IrqBench {
    left: std::cell::Cell<u64>,
}

impl VxD for IrqBench {
    const DEVICE: Device = Device::new("IRQBENCH");
    fn create(vmm: &Vmm<'_>) -> Result<Self, String> {
        let n =
            vmm.get_profile_string(Some("IRQBENCH"), "count").ok().flatten().map_or(0, |e| e.value.parse().unwrap());
        Ok(IrqBench { left: std::cell::Cell::new(n) })
    }
    fn control(&self, vmm: &Vmm<'_>, msg: ControlMessage) -> Carry {
        if msg.message == DEVICE_INIT {
            let next = |dev: &IrqBench, vmm: &Vmm<'_>, e: IrqEvent| {
                if dev.left.get() > 0 {
                    dev.left.set(dev.left.get() - 1);
                    vmm.vpicd().set_int_request(e.handle, e.vm).unwrap();
                }
            };
            let d = IrqDescriptor::new(5, |_: &IrqBench, _: &Vmm<'_>, _| true)
                .eoi(|_: &IrqBench, vmm: &Vmm<'_>, e: IrqEvent| vmm.vpicd().clear_int_request(e.handle, e.vm).unwrap())
                .mask_change(move |dev: &IrqBench, vmm: &Vmm<'_>, e: IrqEvent, masking: bool| {
                    if !masking {
                        next(dev, vmm, e)
                    }
                })
                .iret(move |dev: &IrqBench, vmm: &Vmm<'_>, e: IrqEvent, _| next(dev, vmm, e));
            vmm.vpicd().virtualize_irq(d).unwrap();
        }
        Carry::Clear
    }
}

/// A Rust DOS program whose export 1 handles INT 0Dh (IRQ 5) and sends the
/// EOI; it unmasks IRQ 5, takes `args` interrupts, and exits.
struct IrqLoop {
    left: std::cell::Cell<u64>,
}

impl Module for IrqLoop {
    const MODULE: ModuleDef = ModuleDef::dos_program("IRQLOOP")
        .segments(&[Segment::fixed("_TEXT")])
        .exports(&[Export::new("Handler", 1, 0, 0)]);

    fn create(_: &Ring3<'_>) -> Result<Self, String> {
        Ok(IrqLoop { left: std::cell::Cell::new(0) })
    }

    fn start(&self, r3: &Ring3<'_>, args: &str) -> Step {
        self.left.set(args.parse().expect("a count"));
        r3.set_int_vector(0x0D, r3.export_address(1)).unwrap();
        let imr = r3.in_byte(0x21).unwrap();
        r3.out_byte(0x21, imr & !0x20).unwrap();
        Step::yield_now()
    }

    fn resume(&self, _r3: &Ring3<'_>, _wake: Wake) -> Step {
        if self.left.get() == 0 { Step::exit(0) } else { Step::yield_now() }
    }

    fn call(&self, r3: &Ring3<'_>, _ordinal: u16, _args: PascalArgs<'_>) -> u32 {
        self.left.set(self.left.get().saturating_sub(1));
        r3.out_byte(0x20, 0x20).unwrap();
        0
    }
}

fn time_virtual_irqs(iters: u64) -> Duration {
    time_runs(iters, 1_000_000, |k| {
        let mut m = Scenario::new(&format!(
            "[386Enh]\ndevice = [\"*VPICD\", \"IRQBENCH\"]\n[IRQBENCH]\ncount = {k}\n\
             [[vm]]\nname = \"DOS1\"\nprogram = \"IRQLOOP\"\nargs = \"{k}\"\n[machine]\nlivelock_limit = 9223372036854775807\n"
        ))
        .device::<IrqBench>()
        .module::<IrqLoop>()
        .without_trace()
        .machine()
        .expect("manifest");
        m.boot().expect("boot");
        m
    })
}

/// The same steps as direct Rust calls: request, handler, EOI, IRET.
#[inline(never)]
fn direct_virtual_irq(state: &mut [u32; 4]) {
    #[inline(never)]
    fn step(s: &mut u32, v: u32) {
        *s = black_box(*s).wrapping_add(v);
    }
    step(&mut state[0], 1); // Set_Int_Request
    step(&mut state[1], 0x0D); // the handler
    step(&mut state[2], 0x20); // EOI
    step(&mut state[3], 1); // IRET
}

fn virtual_irq(c: &mut Criterion) {
    let mut group = c.benchmark_group("virtual_irq");
    group.throughput(Throughput::Elements(1)).sample_size(20);
    group.bench_function("set_int_request_to_handler_eoi_iret", |b| b.iter_custom(time_virtual_irqs));
    group.bench_function("direct_calls_for_the_same_steps", |b| {
        let mut s = [0u32; 4];
        b.iter(|| direct_virtual_irq(black_box(&mut s)))
    });
    group.finish();
}

criterion_group!(
    benches,
    priority_events,
    service_call,
    ring3_calls,
    port_io,
    virtual_irq,
    vpostd,
    v86,
    vm_creation,
    livelock_guard
);
criterion_main!(benches);
