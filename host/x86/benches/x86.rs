//! Interpreter speed on a tight loop, beside the same loop written in Rust,
//! in one run. Results and the command are in BENCHMARKS.md.
//!
//! * `x86/interpreter`: one million instructions of
//!   `l: ADD AX,BX; INC BX; XOR DX,AX; LOOP l; JMP l` (the JMP runs once per
//!   65,536 turns) on an 80286 in real mode, in one `Cpu::run`.
//! * `x86/rust`: the same arithmetic on `u16`s for as many turns.
//!
//! Both report elements per second, one element being one x86 instruction
//! (a Rust turn does the work of four).

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use vmm_x86::{CS, Cpu, ExitReason, Memory};

const INSTRUCTIONS: u64 = 1_000_000;

/// l: ADD AX,BX; INC BX; XOR DX,AX; LOOP l; JMP l
const LOOP: [u8; 9] = [0x01, 0xD8, 0x43, 0x31, 0xC2, 0xE2, 0xF9, 0xEB, 0xF7];

fn tight_loop(c: &mut Criterion) {
    let mut group = c.benchmark_group("x86");
    group.throughput(Throughput::Elements(INSTRUCTIONS)).sample_size(20).measurement_time(Duration::from_secs(5));

    let mut mem = Memory::new(0x11_0000);
    mem.load(0x1_0000, &LOOP);
    let mut cpu = Cpu::new();
    cpu.sregs[CS] = 0x1000;
    group.bench_function("interpreter", |b| {
        b.iter(|| {
            let exit = cpu.run(black_box(&mut mem), INSTRUCTIONS);
            assert_eq!(exit.reason, ExitReason::Budget);
            black_box(cpu.regs)
        })
    });

    let (mut ax, mut bx, mut cx, mut dx) = (0u16, 0u16, 0u16, 0u16);
    group.bench_function("rust", |b| {
        b.iter(|| {
            for _ in 0..INSTRUCTIONS / 4 {
                ax = ax.wrapping_add(black_box(bx));
                bx = bx.wrapping_add(1);
                dx ^= ax;
                cx = cx.wrapping_sub(1);
            }
            black_box((ax, bx, cx, dx))
        })
    });
    group.finish();
}

criterion_group!(benches, tight_loop);
criterion_main!(benches);
