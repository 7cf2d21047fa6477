//! The V86 monitor: a DOS VM whose program is real machine code (a `.COM`
//! or a small MZ `.EXE`), run by the `vmm-x86` interpreter.
//!
//! The VM gets 1 MiB + 64 KiB of memory laid out as DOS would leave it:
//!
//! | Address | What |
//! |---|---|
//! | `0000:0000` | The interrupt vector table: every vector points at the VMM's handler `F000:n` |
//! | `0040:0000` | The BIOS data area (640 KiB of conventional memory at 0040:0013) |
//! | `0FE0:0000` | The environment (`COMSPEC`, then the program's path) |
//! | `1000:0000` | The PSP; a `.COM` at `1000:0100`, an `.EXE`'s load image at `1010:0000` |
//! | `A000:0000` | The end of conventional memory: the program's block ends here |
//! | `F000:00nn` | The VMM's handler of `INT nn`: a breakpoint address |
//! | `FF00:iiii` | Device `iiii`'s V86 API entry (what INT 2Fh 1684h returns): a breakpoint address |
//!
//! The program runs until it does something the VMM must see, and the
//! monitor ([`Core::v86_run`]) handles that exit:
//!
//! * **Software interrupts** whose vector still points at `F000:n` are
//!   served by the host: INT 2Fh goes to the same handler a Rust module's
//!   `INT 2Fh` reaches ([`Core::ring3_int`]), INT 21h and INT 20h to the
//!   DOS subset in [`crate::ring3::dos`]. A vector the program hooked is
//!   reflected through the VM's vector table to its handler; when that
//!   handler chains on (`JMP FAR`/`CALL FAR` to the old `F000:n`), the far
//!   transfer stops at the breakpoint and the host serves the interrupt
//!   and returns as `IRET` would.
//! * **A far call to `FF00:iiii`** (a VxD's V86 API entry) calls the
//!   device's V86 API procedure through the VMM with the program's
//!   registers as the client registers ([`Core::ring3_far_call`], as for a
//!   Rust module), then returns as `RETF` would.
//! * **`IN`/`OUT`** go through the I/O port table: a trapping device's
//!   handler, else the hardware model (open bus: reads all ones, writes
//!   dropped); each access is an `io` record.
//! * **`CLI`, `STI`, `POPF`, `IRET`** that change IF update the VM's client
//!   IF at once, so the VMM's view of the VM's interrupts (and so an event
//!   waiting with `PEF_Wait_For_STI`) follows the real code.
//! * **`HLT`** ends the run like INT 2Fh 1680h: the VM releases its slice.
//! * **A fault** with no handler of the program's ends the program.
//!
//! Virtual time advances by `[machine] instruction_time` per instruction
//! executed, and a run lasts at most `[machine] v86_step` instructions:
//! the same program and seed always give the same run.
//!
//! Where the virtual-hardware work plugs in: device hooks of V86
//! interrupts (`Hook_V86_Int_Chain`) run in [`Core::v86_interrupt`] before
//! the host's handler or the reflection (that is every `INT n` the program
//! executes, with the client registers current), and I/O trapping replaces
//! the open-bus answers of `ExitReason::In`/`Out` in [`Core::v86_run`].
//!
//! Between runs the VM's client registers (`Client_Reg_Struc`) hold the
//! program's registers; during a run they are written before every call
//! into the VMM and read back after it, so VxDs see and change exactly
//! what a real V86 client would show them.

use std::path::PathBuf;

use vmm_plugin_api::abi::{Step, StepKind, VmmError};
use vmm_x86::{AX, CS, CX, ExitReason, Size, flags};

use crate::machine::Core;
use crate::ring3::machine_code::*;
use crate::ring3::state::{NEST_BREAKPOINT, ProgState, Ring3Code};
use crate::trace::TraceEvent;
use crate::violation::Violation;
use crate::vmm::context::Context;
use crate::vmm::ids::{InstanceId, VmId};
use crate::vmm::io;
use crate::vmm::vectors::{FaultKind, FaultStage, MAX_FAULT, RETURN_SEGMENT, V86_CALLBACK_SEGMENT};

/// How many faults in a row one run may take without executing an
/// instruction (a hook that reports a fault handled but leaves CS:IP at
/// it).
const FAULT_LIMIT: u32 = 10_000;

/// The command that builds the missing program `name` from a source of
/// the same name in one of `dirs` (`comterm.asm` with nasm, `postdos.c`
/// with bcc), the file going where the source is.
fn build_command(name: &str, dirs: &[PathBuf]) -> Option<String> {
    if name.contains('/') || name.contains('\\') {
        return None;
    }
    let (stem, ext) = name.rsplit_once('.')?;
    if !ext.eq_ignore_ascii_case("com") {
        return None;
    }
    let stem = stem.to_ascii_lowercase();
    let show = |p: PathBuf| {
        // `a/b/../c` as `a/c`: the path a user types.
        let mut out = PathBuf::new();
        for c in p.components() {
            match c {
                std::path::Component::ParentDir if out.file_name().is_some() => {
                    out.pop();
                }
                c => out.push(c),
            }
        }
        out.display().to_string()
    };
    dirs.iter().find_map(|d| {
        let asm = d.join(format!("{stem}.asm"));
        let c = d.join(format!("{stem}.c"));
        let target = show(d.join(name));
        if asm.is_file() {
            Some(format!("build it with `nasm -f bin -o {target} {}`", show(asm)))
        } else if c.is_file() {
            Some(format!("build it with `bcc -Md -o {target} {}` (apt-get install bcc bin86 elks-libc)", show(c)))
        } else {
            None
        }
    })
}

impl Core {
    /// Read and check the program file `name` on the program search path;
    /// the path found and the image, or the path looked for (if any) and
    /// why the file cannot run.
    pub(crate) fn load_program_file(&self, name: &str) -> Result<(PathBuf, Image), String> {
        let Some(path) = self.search.find_program(name) else {
            let dirs: Vec<String> = self.search.dirs().iter().map(|d| d.display().to_string()).collect();
            let mut message = format!(
                "program file `{name}` not found (searched: {}): vmm builds plugin crates but not DOS programs, so \
                 build the file into one of these directories first",
                dirs.join(", ")
            );
            if let Some(build) = build_command(name, self.search.dirs()) {
                message.push_str(&format!("; its source is here: {build}"));
            }
            // A DOS program plugin of that name: the manifest may mean the Rust module.
            if let Ok(lib) = self.library_for(name)
                && lib.info.kind == vmm_plugin_api::abi::ModuleKind::DosProgram
            {
                let stem = name.rsplit_once('.').map_or(name, |(s, _)| s);
                message.push_str(&format!(
                    "; or, to run the DOS program plugin `{stem}` instead, name it without the extension \
                     (program = \"{stem}\"): a name with .COM or .EXE is a machine-code file"
                ));
            }
            return Err(message);
        };
        let bytes = crate::bounded::read(&path, MAX_FILE, true).map_err(|e| {
            let why = match e {
                crate::bounded::ReadError::TooLarge { size, .. } => format!(
                    "the file is {} bytes; a DOS program is at most {MAX_FILE} bytes (conventional memory)",
                    size.map_or("more than that".to_string(), |s| s.to_string())
                ),
                other => other.to_string(),
            };
            format!("program file `{name}` ({}): {why}", path.display())
        })?;
        let image = parse(&bytes).map_err(|e| format!("program file `{name}` ({}): {e}", path.display()))?;
        Ok((path, image))
    }

    /// Run a machine-code program for one step: at most `[machine]
    /// v86_step` instructions, less if it sleeps, yields, halts, exits or
    /// crashes. Its VM is the current VM; `instance` is the program's.
    pub(crate) fn v86_run(&self, instance: InstanceId, m: &mut DosMachine) -> Ran {
        let vm = self.cur_vm.get();
        if let Some(v) = self.vms.borrow().get(vm) {
            from_client(&mut m.cpu, &v.client());
        }
        // The BIOS data area's timer count, which programs poll to wait.
        let ticks = crate::ring3::dos::bios_ticks(self.sched.now().as_nanos());
        m.mem.load(0x46C, &ticks.to_le_bytes());
        let budget = self.manifest.machine.v86_step;
        let mut done = 0u64;
        let mut faults = 0u32;
        let (ran, why) = self.with_frame(instance, Context::Ring3, || {
            // Virtual interrupts that waited for this VM to run.
            self.v86_call_vmm(vm, m, |core| core.vpicd_vm_runs(vm));
            loop {
                self.v86_hw_ints(vm, m);
                if done >= budget {
                    break (Ran::Preempted, "budget");
                }
                let exit = m.cpu.run(&mut m.mem, budget - done);
                done += exit.instructions;
                if exit.instructions > 0 {
                    faults = 0;
                }
                let flow = match exit.reason {
                    ExitReason::Budget => Flow::Go,
                    ExitReason::Interrupt { vector, .. } => self.v86_interrupt(vm, m, vector),
                    ExitReason::Breakpoint { cs, ip } if cs == HOST_SEGMENT && ip >= HW_IRET_BASE => {
                        self.v86_hw_iret(vm, m, (ip - HW_IRET_BASE) as u8);
                        Flow::Go
                    }
                    ExitReason::Breakpoint { cs, ip } if cs == HOST_SEGMENT => {
                        // A handler of the program's chained on to the VMM's.
                        let flow = self.v86_host_int(vm, m, ip as u8);
                        let was = m.cpu.flags & flags::IF;
                        v86_iret(m);
                        self.v86_if_changed(vm, m, was);
                        flow
                    }
                    ExitReason::Breakpoint { cs, ip } if ((cs as u32) << 16 | ip as u32) == NEST_BREAKPOINT => {
                        if self.nest_depth(vm) > 0 {
                            // Back from the procedure Resume_Exec called.
                            break (Ran::NestReturn, "nest");
                        }
                        self.v86_stray_return(vm, m, NEST_BREAKPOINT)
                    }
                    ExitReason::Breakpoint { cs, ip } if cs == V86_CALLBACK_SEGMENT => {
                        // A call-back: its callback moves CS:IP (nothing is
                        // popped for it).
                        let ptr = ((cs as u32) << 16) | ip as u32;
                        if self.v86_call_vmm(vm, m, |core| core.enter_call_back(vm, ptr)).is_err() {
                            Flow::Crash
                        } else {
                            Flow::Go
                        }
                    }
                    ExitReason::Breakpoint { cs, ip } if cs == RETURN_SEGMENT => {
                        let ptr = ((cs as u32) << 16) | ip as u32;
                        if self.v86_call_vmm(vm, m, |core| core.vm_returned(vm, ptr)) {
                            Flow::Go
                        } else {
                            self.v86_stray_return(vm, m, ptr)
                        }
                    }
                    ExitReason::Breakpoint { cs, ip } => self.v86_api(vm, m, ((cs as u32) << 16) | ip as u32),
                    ExitReason::In { port, size } => {
                        // Through the port table: a trapping device's
                        // handler, else the hardware model (all ones).
                        let io_type = match size {
                            Size::Byte => io::BYTE_INPUT,
                            Size::Word => io::WORD_INPUT,
                            Size::Dword => io::DWORD_INPUT,
                        };
                        // The handler sees the program's registers as the
                        // client registers (and may change them).
                        let value = self.v86_call_vmm(vm, m, |core| core.port_io(vm, port, io_type, 0));
                        m.cpu.complete_in(value);
                        Flow::Go
                    }
                    ExitReason::Out { port, size, value } => {
                        let io_type = match size {
                            Size::Byte => io::BYTE_OUTPUT,
                            Size::Word => io::WORD_OUTPUT,
                            Size::Dword => io::DWORD_OUTPUT,
                        };
                        self.v86_call_vmm(vm, m, |core| core.port_io(vm, port, io_type, value));
                        Flow::Go
                    }
                    ExitReason::StringIo { port, size, output, segment, rep, addr32, next_ip } => {
                        // One access, as Windows traps it: the handler sees
                        // the string IOType with the client registers at
                        // the buffer, and performs the elements (usually by
                        // Simulate_IO).
                        let mut io_type = match size {
                            Size::Byte => io::BYTE_INPUT,
                            Size::Word => io::WORD_INPUT,
                            Size::Dword => io::DWORD_INPUT,
                        } | io::STRING_IO
                            | (u32::from(segment) << io::IO_SEG_SHIFT);
                        for (on, bit) in [
                            (output, io::OUTPUT),
                            (rep, io::REP_IO),
                            (addr32, io::ADDR_32_IO),
                            (m.cpu.flags & flags::DF != 0, io::REVERSE_IO),
                        ] {
                            if on {
                                io_type |= bit;
                            }
                        }
                        let (start, count) = (m.cpu.ip, m.cpu.regs[CX]);
                        // A buffer outside the program's memory cannot be:
                        // real-mode addresses always are inside it.
                        let _ = self.v86_call_vmm(vm, m, |core| core.string_port_io(vm, port, io_type));
                        if m.cpu.ip == start {
                            // The VMM, not the handler, moves past it.
                            m.cpu.ip = next_ip;
                        }
                        // Virtual time: one instruction per element done,
                        // as the interpreter counts REP elements.
                        let width = if addr32 { u32::MAX } else { 0xFFFF };
                        let elements = if rep { count.wrapping_sub(m.cpu.regs[CX]) & width } else { 1 };
                        done += u64::from(elements.max(1));
                        Flow::Go
                    }
                    ExitReason::InterruptFlag { enabled } => {
                        self.trace(|| TraceEvent::IfFlag { vm: vm.raw(), enabled });
                        self.set_vm_interrupts(vm, enabled);
                        Flow::Go
                    }
                    ExitReason::Halt => Flow::Step(step(StepKind::Yield, 0), "halt"),
                    ExitReason::Fault { vector } => {
                        faults += 1;
                        if faults > FAULT_LIMIT {
                            tracing::warn!(
                                "{}: {FAULT_LIMIT} faults in one run without the program getting on; it ends",
                                m.name
                            );
                            Flow::Crash
                        } else if self.v86_fault_hooked(vm, m, vector, FaultStage::Front) {
                            Flow::Go
                        } else if m.mem.vector(vector) >> 16 != HOST_SEGMENT as u32 {
                            self.v86_deliver(vm, m, vector)
                        } else if self.v86_fault_hooked(vm, m, vector, FaultStage::Behind) {
                            Flow::Go
                        } else {
                            let cs_ip = ((m.cpu.sregs[CS] as u32) << 16) | m.cpu.ip as u32;
                            tracing::warn!(
                                "{}: exception {vector} at {:04X}:{:04X}; the program ends",
                                m.name,
                                cs_ip >> 16,
                                cs_ip & 0xFFFF
                            );
                            self.trace(|| TraceEvent::V86Fault { vm: vm.raw(), vector, cs_ip });
                            Flow::Crash
                        }
                    }
                };
                match flow {
                    Flow::Go => {}
                    Flow::Step(s, why) => break (Ran::Step(s), why),
                    Flow::Crash => break (Ran::Crashed, "fault"),
                }
                if !self.vm_valid(vm) {
                    // A call the program made ended its VM.
                    break (Ran::Crashed, "exit");
                }
            }
        });
        if let Some(v) = self.vms.borrow().get(vm) {
            let mut c = v.client();
            to_client(&m.cpu, &mut c);
            v.set_client(c);
        }
        let exit = if matches!(ran, Ran::Step(Step { kind: StepKind::Exit, .. })) { "exit" } else { why };
        // At least a nanosecond: a run never takes no time.
        let ns = self.manifest.machine.instruction_time.as_nanos().saturating_mul(done).max(1);
        self.trace(|| TraceEvent::V86Slice {
            vm: vm.raw(),
            program: m.name.clone(),
            instructions: done,
            duration_ns: ns,
            exit,
            cs_ip: ((m.cpu.sregs[CS] as u32) << 16) | m.cpu.ip as u32,
        });
        self.charge(crate::time::Duration::from_nanos(ns));
        if matches!(ran, Ran::Step(Step { kind: StepKind::Exit, .. }) | Ran::Crashed) {
            self.v86_flush(vm, m);
        }
        ran
    }

    /// `INT n` executed by the program.
    fn v86_interrupt(&self, vm: VmId, m: &mut DosMachine, n: u8) -> Flow {
        // The devices' hooks first (Hook_V86_Int_Chain): one map lookup
        // when nothing hooks `n`.
        let hooked = self.vectors.borrow().hooked(n);
        if hooked && self.v86_call_vmm(vm, m, |core| core.v86_int_chain(vm, n)) {
            return Flow::Go;
        }
        let vector = m.mem.vector(n);
        let host = vector == ((HOST_SEGMENT as u32) << 16) | n as u32;
        let ax = m.cpu.regs[AX] as u16;
        self.trace(|| TraceEvent::V86Interrupt {
            vm: vm.raw(),
            vector: n,
            ax,
            handler: if host { "host" } else { "vm" },
        });
        if host { self.v86_host_int(vm, m, n) } else { self.v86_deliver(vm, m, n) }
    }

    /// Reflect interrupt `n` through the VM's vector table to the program's
    /// handler (which clears IF, as the processor does), or to the
    /// call-back a device put in the vector.
    fn v86_deliver(&self, vm: VmId, m: &mut DosMachine, n: u8) -> Flow {
        let was = m.cpu.flags & flags::IF;
        m.cpu.deliver_interrupt(&mut m.mem, n);
        self.v86_if_changed(vm, m, was);
        if self.vectors.borrow().unframed_return(vm).is_some() {
            // A Call_When_VM_Returns registration takes this frame.
            self.v86_call_vmm(vm, m, |core| core.frame_built(vm));
        }
        if m.cpu.sregs[CS] == V86_CALLBACK_SEGMENT {
            // The processor does not stop at a break point it did not
            // transfer to itself: the call-back is entered here.
            let ptr = ((m.cpu.sregs[CS] as u32) << 16) | m.cpu.ip as u32;
            if self.v86_call_vmm(vm, m, |core| core.enter_call_back(vm, ptr)).is_err() {
                return Flow::Crash;
            }
        }
        Flow::Go
    }

    /// IF was `was` and may have changed without an exit (an interrupt the
    /// monitor delivered, an `IRET` it emulated): the VMM's view follows.
    pub(crate) fn v86_if_changed(&self, vm: VmId, m: &DosMachine, was: u16) {
        let now = m.cpu.flags & flags::IF;
        if now != was {
            let enabled = now != 0;
            self.trace(|| TraceEvent::IfFlag { vm: vm.raw(), enabled });
            self.set_vm_interrupts(vm, enabled);
        }
    }

    /// The VMM's handler of `INT n`, on the program's registers.
    fn v86_host_int(&self, vm: VmId, m: &mut DosMachine, n: u8) -> Flow {
        match n {
            0x2F => {
                let ax = m.cpu.regs[AX] as u16;
                // The handler sets CF itself where a function fails (1685h).
                if self.v86_call_vmm(vm, m, |core| core.ring3_int(0x2F)).is_err() {
                    set_carry(&mut m.cpu, true);
                }
                if ax == vmm_plugin_api::ddk::W386_RELEASE_TIME_SLICE {
                    return Flow::Step(step(StepKind::Yield, 0), "yield");
                }
                Flow::Go
            }
            0x20 | 0x21 | 0x10 | 0x15 | 0x16 | 0x1A => self.dos_int(vm, m, n),
            0x14 => {
                // The BIOS's serial services, through the port table.
                let ok = self.v86_call_vmm(vm, m, |core| core.bios_int14()).is_ok();
                set_carry(&mut m.cpu, !ok);
                Flow::Go
            }
            // Vectors whose handler in DOS and the BIOS is an IRET when
            // software calls it: hardware interrupts, DOS idle, break.
            0x01 | 0x03 | 0x08..=0x0F | 0x1B | 0x1C | 0x23 | 0x24 | 0x28 | 0x70..=0x77 => Flow::Go,
            _ => {
                self.violation(
                    crate::violation::Violation::UnsupportedInterrupt,
                    format!(
                        "{} executed INT {n:02X}h (AX={:04X}h), which has no handler in this emulator's DOS VM (it \
                         serves INT 10h, 14h, 15h, 16h, 1Ah, 20h, 21h and 2Fh); CF is set and the program goes on",
                        m.name, m.cpu.regs[AX] as u16
                    ),
                    Some("INT"),
                );
                set_carry(&mut m.cpu, true);
                Flow::Go
            }
        }
    }

    /// `Resume_Exec` into `vm`, whose code is machine code: one run of its
    /// program from the client registers the nested block set up (CS:IP at
    /// the procedure, the break point's address on its stack), ending at
    /// the break point, the run's budget, or the program's end. Only a
    /// program between runs can be entered (a device called from the
    /// program's own call into the VMM cannot nest into it).
    pub(crate) fn resume_machine_code(&self, vm: VmId) -> Result<(), VmmError> {
        let taken = {
            let mut r3 = self.ring3.borrow_mut();
            r3.modules.iter_mut().enumerate().find_map(|(i, m)| match &mut m.code {
                Ring3Code::Machine(machine) if m.alive && m.vm == vm && machine.is_some() => {
                    machine.take().map(|b| (i, m.instance, b))
                }
                _ => None,
            })
        };
        let Some((module, instance, mut machine)) = taken else {
            return Err(self.refuse(
                Violation::BadFarPointer,
                format!(
                    "Resume_Exec into VM {vm:#x}, whose DOS program is inside its own call into the VMM: nested \
                     execution cannot enter it there (schedule an event for the VM instead)"
                ),
                Some("Resume_Exec"),
            ));
        };
        let ran = self.v86_run(instance, &mut machine);
        let id = {
            let mut r3 = self.ring3.borrow_mut();
            if r3.modules[module].alive {
                r3.modules[module].code = Ring3Code::Machine(Some(machine));
            }
            r3.programs.iter().find(|p| p.module == module && p.state != ProgState::Ended).map(|p| p.id)
        };
        match ran {
            Ran::NestReturn | Ran::Preempted => Ok(()),
            // A wait inside the nested procedure does not suspend the
            // block: it runs on.
            Ran::Step(s) if s.kind != StepKind::Exit => Ok(()),
            Ran::Step(s) => {
                if let Some(id) = id {
                    self.apply_step(id, s);
                }
                Err(VmmError::FAILED)
            }
            Ran::Crashed => {
                if let Some(id) = id {
                    self.end_program(id, None, crate::ring3::EndReason::Crashed);
                }
                Err(VmmError::FAILED)
            }
        }
    }

    /// Fault `n` offered to the fault hooks of `stage` (on the program's
    /// registers): whether one handled it.
    fn v86_fault_hooked(&self, vm: VmId, m: &mut DosMachine, n: u8, stage: FaultStage) -> bool {
        n <= MAX_FAULT && self.v86_call_vmm(vm, m, |core| core.fault_hooks(FaultKind::V86, vm, n, stage))
    }

    /// The program reached a `Call_When_VM_Returns` break point that is not
    /// (or no longer) a registration of its VM's: a far transfer to an
    /// address it was never given. It ends like a fault.
    fn v86_stray_return(&self, vm: VmId, m: &mut DosMachine, ptr: u32) -> Flow {
        tracing::warn!(
            "{}: jumped to {:04X}:{:04X}, a return break point that is not its VM's; the program ends",
            m.name,
            ptr >> 16,
            ptr & 0xFFFF
        );
        self.trace(|| TraceEvent::V86Fault { vm: vm.raw(), vector: 13, cs_ip: ptr });
        Flow::Crash
    }

    /// A far call to `target`, a VxD's V86 API entry (`FF00:id`).
    fn v86_api(&self, vm: VmId, m: &mut DosMachine, target: u32) -> Flow {
        let r = self.v86_call_vmm(vm, m, |core| core.ring3_far_call(target, &[], false).map(|_| ()));
        if r.is_err() {
            set_carry(&mut m.cpu, true);
        }
        // RETF.
        m.cpu.ip = m.cpu.pop(&mut m.mem);
        m.cpu.sregs[CS] = m.cpu.pop(&mut m.mem);
        Flow::Go
    }

    /// Call into the VMM with the program's registers as the client
    /// registers, and take back what the VMM left in them.
    pub(crate) fn v86_call_vmm<T>(&self, vm: VmId, m: &mut DosMachine, f: impl FnOnce(&Core) -> T) -> T {
        if let Some(v) = self.vms.borrow().get(vm) {
            let mut c = v.client();
            to_client(&m.cpu, &mut c);
            v.set_client(c);
        }
        // The VMM holds the program's memory meanwhile: the services reach
        // its stack and vector table (`Core::with_vm_memory`).
        let mem = std::mem::replace(&mut m.mem, DosMemory::empty());
        self.v86_mem.borrow_mut().push((vm, mem));
        let r = f(self);
        let held = self.v86_mem.borrow_mut().pop();
        if let Some((_, mem)) = held {
            m.mem = mem;
        }
        if let Some(v) = self.vms.borrow().get(vm) {
            from_client(&mut m.cpu, &v.client());
        }
        r
    }

    /// Characters the program wrote to the console: each whole line is a
    /// `program_output` record.
    pub(crate) fn v86_output(&self, vm: VmId, m: &mut DosMachine, bytes: &[u8]) {
        for &b in bytes {
            match b {
                b'\n' => self.v86_flush(vm, m),
                b'\r' => {}
                _ => m.line.push(b),
            }
        }
    }

    /// The line not yet ended by a newline, as a `program_output` record.
    fn v86_flush(&self, vm: VmId, m: &mut DosMachine) {
        if m.line.is_empty() {
            return;
        }
        let text = crate::shell::ansi(&std::mem::take(&mut m.line));
        tracing::info!("{}: {text}", m.name);
        self.trace(|| TraceEvent::ProgramOutput { vm: vm.raw(), module: m.name.clone(), text });
    }
}
