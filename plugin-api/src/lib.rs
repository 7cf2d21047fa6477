//! # Writing VxDs for `vmm`
//!
//! `vmm` emulates the Windows 3.1/95 Virtual Machine Manager. It loads
//! virtual devices (VxDs) written in Rust as `cdylib` plugins, sends them the
//! system control messages, and gives them the VMM services a real VxD used,
//! with the documented semantics. This crate is the whole contract: add it
//! as the only dependency, implement [`VxD`], and export the device with
//! [`declare_virtual_device!`].
//!
//! This documentation is the guide:
//!
//! 1. [A first VxD in ten minutes](#a-first-vxd-in-ten-minutes)
//! 2. [The model in five points](#the-model-in-five-points)
//! 3. [Events and re-entrancy](#events-and-re-entrancy)
//! 4. [Ring 3: DLLs, applications and DOS programs](#ring-3-dlls-applications-and-dos-programs)
//! 5. [Nested execution and the ISR rule](#nested-execution-and-the-isr-rule)
//! 6. [Appy time](#appy-time)
//! 7. [Testing](#testing)
//! 8. [Dynamic devices and hot reload](#dynamic-devices-and-hot-reload)
//! 9. [Logging](#logging) and [compatibility](#compatibility)
//!
//! ## A first VxD in ten minutes
//!
//! **1. Create it.** `vmm new` writes a crate of its own (a cargo workspace
//! of its own too, so it can live anywhere):
//!
//! ```text
//! $ vmm new vxd hello --id 0x3A20
//! created VxD hello (HELLO, device ID 0x3A20) in hello
//! $ cd hello
//! ```
//!
//! It holds `Cargo.toml` (this crate as the dependency, `crate-type =
//! ["cdylib", "rlib"]`, `panic = "unwind"`), `src/lib.rs` (the device),
//! `system.ini` (a machine that loads it) and `tests/machine.rs` (tests that
//! boot that machine). Without `--id` the device has `UNDEFINED_DEVICE_ID`
//! and no API; `vmm new dll`, `vmm new app` and `vmm new dos` start a DLL,
//! a Windows application and a DOS program the same way.
//!
//! **2. Build and test it.** `cargo test` builds the VxD, boots the machine
//! of `system.ini` with it, and checks the machine's trace: the device was
//! loaded, `Device_Init` reached it, its PM API answers through INT 2Fh.
//!
//! **3. Run it.** `vmm run system.ini` boots the same machine (building the
//! crate first); `vmm list system.ini` shows its DDB; `vmm run system.ini
//! --trace run.jsonl` writes every event of the run (the records are
//! described in `vmm`'s `docs/trace.md`).
//!
//! **4. Change it.** The generated `src/lib.rs` is a device like this one:
//!
//! ```
//! use vmm_plugin_api::prelude::*;
//!
//! /// A device that counts the VMs it has seen.
//! pub struct Hello {
//!     vms: core::cell::Cell<u32>,
//! }
//!
//! impl VxD for Hello {
//!     // The DDB: name, version, ID, init order, APIs, service table.
//!     const DEVICE: Device = Device::new("HELLO").version(1, 0);
//!
//!     // The factory: every load is a new instance with its own state.
//!     fn create(_vmm: &Vmm<'_>) -> Result<Self, String> {
//!         Ok(Hello { vms: core::cell::Cell::new(0) })
//!     }
//!
//!     // The control procedure: match on the DDK message numbers.
//!     fn control(&self, vmm: &Vmm<'_>, msg: ControlMessage) -> Carry {
//!         match msg.message {
//!             DEVICE_INIT => info!("Hello is initializing in VM {:?}", vmm.get_sys_vm_handle()),
//!             CREATE_VM => self.vms.set(self.vms.get() + 1),
//!             _ => {}
//!         }
//!         Carry::Clear // unhandled messages return with carry clear
//!     }
//! }
//!
//! declare_virtual_device!(Hello);
//! ```
//!
//! and its `system.ini` (TOML) lists it the way SYSTEM.INI listed a VxD:
//!
//! ```toml
//! [386Enh]
//! device = ["*SHELL", "HELLO.386"]
//! ```
//!
//! `HELLO.386`, `hello` and `HELLO` all mean the library cargo builds,
//! `libhello.so`. Add a `[[vm]]` table for a DOS VM, `[[interrupt]]` to
//! raise an interrupt source at a virtual time, or a profile section
//! (`[HELLO]`) the device reads with [`Vmm::get_profile_string`]; `vmm`'s
//! README lists every key.
//!
//! To write a crate by hand instead, `Cargo.toml` needs:
//!
//! ```toml
//! [lib]
//! crate-type = ["cdylib", "rlib"]
//!
//! [dependencies]
//! vmm-plugin-api = { path = "../vmm/plugin-api" }
//!
//! [profile.dev]
//! panic = "unwind"
//! ```
//!
//! ## The model in five points
//!
//! 1. **One instance per load.** `create` is a factory. A device listed
//!    twice with `UNDEFINED_DEVICE_ID` is loaded twice, as Windows did;
//!    two devices with the same non-zero ID stop Windows unless the second
//!    answers `ABORT_DEVICE_LOAD` in [`VxD::real_mode_init`] (KB Q84000).
//! 2. **`&self` everywhere.** The VMM re-enters devices: an event can run
//!    inline inside a service call, an interrupt can arrive during an API
//!    call. Keep state in [`ReentrancyCell`] or `Cell`; a borrow conflict is
//!    reported as a `REENTRANCY` violation rather than undefined behaviour.
//! 3. **Services are typed.** [`Vmm`] has one method per VMM service, named
//!    after it (`call_priority_vm_event` is `Call_Priority_VM_Event`), with
//!    the DDK's constants in [`ddk`]. Callbacks are closures that get the
//!    device back as `&Self`.
//! 4. **Contexts are checked.** A synchronous service called at interrupt
//!    time, a profile service after init, an unbalanced nested execution:
//!    each is a `violation` record in the trace with a stable code, where real
//!    Windows would have crashed later.
//! 5. **Panics are contained.** Every entry point runs inside
//!    `catch_unwind`; a panic becomes an error result, the host marks the
//!    instance failed, and the machine goes on. Build with `panic = "unwind"`
//!    (the default); the export macro refuses `panic = "abort"`.
//!
//! ## Events and re-entrancy
//!
//! A VxD does its work when the VMM lets it: in events. The rules the
//! emulator enforces are those of the DDK and KB Q75009:
//!
//! * `Call_Priority_VM_Event` runs the callback later, in the target VM, once
//!   its `PEF_*` conditions hold (`PEF_WAIT_FOR_STI`, `PEF_WAIT_NOT_CRIT`,
//!   ...), boosting the VM meanwhile. It runs inline (returning the null
//!   handle) only if you are not at interrupt time, the target is the
//!   current VM, `PEF_ALWAYS_SCHED` is clear and the conditions hold now.
//! * Anything can happen before the callback runs: your device can be
//!   re-entered and schedule again, and several pending callbacks run in no
//!   guaranteed order (usually LIFO; `vmm run --order random --seed N`
//!   shuffles them and re-enters devices with injected interrupts, `--order
//!   pct` gives their sources random priorities that change at a few points,
//!   and `vmm explore` runs thousands of such schedules).
//! * At interrupt time (a handler registered with
//!   [`Vmm::register_interrupt`]) only asynchronous services are legal;
//!   schedule an event and do the rest there.
//!
//! ```
//! use core::cell::Cell;
//! use vmm_plugin_api::prelude::*;
//!
//! pub struct Counter {
//!     pending: Cell<u32>,
//! }
//!
//! impl Counter {
//!     /// Called from an interrupt handler: only async services here.
//!     fn on_irq(&self, vmm: &Vmm<'_>) {
//!         self.pending.set(self.pending.get() + 1);
//!         let sys = vmm.get_sys_vm_handle();
//!         let _ = vmm.call_priority_vm_event(
//!             HIGH_PRI_DEVICE_BOOST as i32,
//!             sys,
//!             PEF_WAIT_FOR_STI | PEF_WAIT_NOT_CRIT,
//!             0,
//!             // The callback gets the device back; take *all* pending
//!             // work, since other callbacks may run before or after it.
//!             |dev: &Counter, vmm: &Vmm<'_>, _ev: Event| {
//!                 let n = dev.pending.replace(0);
//!                 vmm.out_debug_string(&format!("handled {n} interrupts"));
//!             },
//!         );
//!     }
//! }
//!
//! impl VxD for Counter {
//!     const DEVICE: Device = Device::new("COUNTER");
//!     fn create(_: &Vmm<'_>) -> Result<Self, String> {
//!         Ok(Counter { pending: Cell::new(0) })
//!     }
//!     fn control(&self, vmm: &Vmm<'_>, msg: ControlMessage) -> Carry {
//!         if msg.message == DEVICE_INIT {
//!             let _ = vmm.register_interrupt("counter", |dev: &Counter, vmm, _irq| dev.on_irq(vmm));
//!         }
//!         Carry::Clear
//!     }
//! }
//! ```
//!
//! Time-outs (`set_global_time_out`, `set_vm_time_out`), the critical
//! section, semaphores and the "call when" services follow the same pattern:
//! a closure that receives `&Self`.
//!
//! ## Ring 3: DLLs, applications and DOS programs
//!
//! Programs running in the VMs are plugins too: implement [`Module`] and
//! export it with [`declare_module!`]. A module declares its segments and
//! exports; programs run as cooperative step machines: `start` and `resume`
//! each return a [`Step`](ring3::Step) (wait for a message, sleep, yield, exit).
//!
//! A DOS program finds a VxD's V86 API with INT 2Fh AX=1684h and far-calls
//! it with its registers set:
//!
//! ```
//! use vmm_plugin_api::prelude::*;
//!
//! pub struct Ping;
//!
//! impl Module for Ping {
//!     const MODULE: ModuleDef = ModuleDef::dos_program("PING");
//!     fn create(_: &Ring3<'_>) -> Result<Self, String> {
//!         Ok(Ping)
//!     }
//!     fn start(&self, r3: &Ring3<'_>, _args: &str) -> Step {
//!         let regs = r3.regs();
//!         regs.set_ax(0x1684); // get device API entry point
//!         regs.set_bx(0x3A10); // device ID
//!         r3.int(0x2F).unwrap();
//!         let entry = FarPtr::new(regs.es() as u16, regs.di());
//!         if entry.is_null() {
//!             r3.print("the device has no V86 API");
//!             return Step::exit(1);
//!         }
//!         regs.set_ax(1); // function 1
//!         r3.call(entry, &[]).unwrap();
//!         if regs.carry() { Step::exit(2) } else { Step::sleep(100) } // then `resume`
//!     }
//!     fn resume(&self, _r3: &Ring3<'_>, _wake: Wake) -> Step {
//!         Step::exit(0)
//!     }
//! }
//!
//! declare_module!(Ping);
//! ```
//!
//! A Windows application creates a window whose procedure is one of its
//! exports, and returns `Step::get_message()`; the default `resume` is the
//! standard `GetMessage` / `DispatchMessage` loop:
//!
//! ```
//! use vmm_plugin_api::prelude::*;
//!
//! pub struct Hello;
//!
//! impl Module for Hello {
//!     const MODULE: ModuleDef = ModuleDef::windows_app("HELLO")
//!         .segments(&[Segment::moveable("_TEXT")])
//!         .exports(&[Export::new("WndProc", 1, 0, 10)]);
//!     fn create(_: &Ring3<'_>) -> Result<Self, String> {
//!         Ok(Hello)
//!     }
//!     fn start(&self, r3: &Ring3<'_>, _args: &str) -> Step {
//!         let hwnd = r3.create_window("Hello", "Hello", 1, None).unwrap();
//!         r3.post_message(hwnd, WM_USER, 0, 0);
//!         Step::get_message()
//!     }
//!     fn call(&self, r3: &Ring3<'_>, ordinal: u16, args: PascalArgs<'_>) -> u32 {
//!         let [hwnd, msg, wparam, lparam] = args.params([2, 2, 2, 4]);
//!         if ordinal == 1 && msg as u16 == WM_USER {
//!             r3.message_box(Some(Hwnd(hwnd as u16)), "Hello, world", "Hello", MB_OK);
//!             r3.post_quit_message(0);
//!         }
//!         r3.def_window_proc(Hwnd(hwnd as u16), msg as u16, wparam as u16, lparam)
//!     }
//! }
//!
//! declare_module!(Hello);
//! ```
//!
//! ## Nested execution and the ISR rule
//!
//! A VxD runs ring-3 code of a VM by *nested execution*: it saves the
//! VM's client state, opens a nested block (`Begin_Nest_Exec`), pushes the
//! arguments and points CS:IP at the procedure (`Simulate_Push`,
//! `Simulate_Far_Call`), lets the VM run until the procedure returns
//! (`Resume_Exec`), then closes the block and restores the state. While
//! `Resume_Exec` runs, events of that VM and global events are dispatched
//! and higher-priority VMs may run: your device can be re-entered.
//!
//! The rules, each a `violation` when broken:
//!
//! * every `Begin_Nest_Exec` has its `End_Nest_Exec` before the callback
//!   or API procedure returns (`NEST_EXEC_NOT_ENDED`), and the `Simulate_*`
//!   calls happen inside the block (`UNBALANCED_NEST_EXEC`);
//! * no nested execution at interrupt time or at appy time
//!   (`NEST_EXEC_ILLEGAL`);
//! * a procedure called from an event or at interrupt time runs like an
//!   interrupt service routine (KB Q72899): it must live in a FIXED segment
//!   of a DLL (`NOT_FIXED_SEGMENT`) and may call only `PostMessage` and
//!   `PostAppMessage` (`ISR_CALL`).
//!
//! The DLL side: a callback in a FIXED segment that only posts.
//!
//! ```
//! use vmm_plugin_api::prelude::*;
//!
//! pub struct Callbacks;
//!
//! impl Module for Callbacks {
//!     const MODULE: ModuleDef = ModuleDef::windows_dll("CALLBACKS")
//!         .segments(&[Segment::fixed("CALLBACK_TEXT")])
//!         // BOOL FAR PASCAL Notify(HWND, WORD msg, WORD wParam, LONG lParam)
//!         .exports(&[Export::new("Notify", 1, 0, 10)]);
//!     fn create(_: &Ring3<'_>) -> Result<Self, String> {
//!         Ok(Callbacks)
//!     }
//!     fn start(&self, _r3: &Ring3<'_>, _args: &str) -> Step {
//!         Step::exit(1) // LibMain: non-zero means "loaded"
//!     }
//!     fn call(&self, r3: &Ring3<'_>, ordinal: u16, args: PascalArgs<'_>) -> u32 {
//!         let [hwnd, msg, wparam, lparam] = args.params([2, 2, 2, 4]);
//!         match ordinal {
//!             1 => u32::from(r3.post_message(Hwnd(hwnd as u16), msg as u16, wparam as u16, lparam)),
//!             _ => 0,
//!         }
//!     }
//! }
//!
//! declare_module!(Callbacks);
//! ```
//!
//! The VxD side of that call (in an event callback, with its state saved):
//!
//! ```no_run
//! # use vmm_plugin_api::prelude::*;
//! fn call_back(vmm: &Vmm<'_>, callback: FarPtr, hwnd: Hwnd, wparam: u16, lparam: u32) -> Result<bool, VmmError> {
//!     let saved = vmm.save_client_state()?;
//!     vmm.begin_nest_exec()?;
//!     // PASCAL order: the first parameter is pushed first.
//!     for word in [hwnd.0 as u32, (WM_USER + 0x100) as u32, wparam as u32, lparam >> 16, lparam & 0xFFFF] {
//!         vmm.simulate_push(word)?;
//!     }
//!     vmm.simulate_far_call(callback)?;
//!     vmm.resume_exec()?; // events may run and VMs may switch in here
//!     let posted = vmm.client(vmm.get_cur_vm_handle())?.ax() != 0;
//!     vmm.end_nest_exec()?;
//!     vmm.restore_client_state(&saved)?;
//!     Ok(posted)
//! }
//! ```
//!
//! ## Trapping I/O ports
//!
//! A device virtualizes hardware by trapping its ports: `install_io_handler`
//! puts one handler on a port (one per port: a second install, by anyone,
//! is `Err(VmmError::FAILED)`, the DDK's carry), and every `IN`/`OUT` a VM
//! makes to it from then on calls the handler instead of reaching the
//! hardware. A handler needs to serve only bytes: it hands anything else
//! to `simulate_io`, which calls it back once per byte (port, port + 1,
//! ...). `disable_local_trapping` gives one VM the real port (the owner of
//! a COM port, say); `enable_global_trapping` / `disable_global_trapping`
//! set every VM at once. A port nobody traps reads as all ones and drops
//! writes; every access is an `io` record in the trace (`handled_by`: your
//! device or `hardware`).
//!
//! ```no_run
//! # use vmm_plugin_api::prelude::*;
//! struct Latch;
//!
//! impl VxD for Latch {
//!     const DEVICE: Device = Device::new("LATCH");
//!     fn create(_: &Vmm<'_>) -> Result<Self, String> {
//!         Ok(Latch)
//!     }
//!     fn control(&self, vmm: &Vmm<'_>, msg: ControlMessage) -> Carry {
//!         if msg.message == DEVICE_INIT {
//!             // Under Windows 3.1 this is legal only during initialization.
//!             let installed = vmm.install_io_handler(0x378, |_: &Latch, vmm: &Vmm<'_>, io: IoAccess| {
//!                 if !io.is_byte() {
//!                     return vmm.simulate_io(io).unwrap_or(0xFF);
//!                 }
//!                 if io.is_output() { 0 } else { 0x7F } // an idle printer's status
//!             });
//!             if installed.is_err() {
//!                 return Carry::Set; // someone else virtualizes the port
//!             }
//!         }
//!         Carry::Clear
//!     }
//! }
//! ```
//!
//! String forms reach the handler as one access, as on Windows: a DOS
//! program's `REP OUTSB` (or a Rust module's [`Ring3::rep_outsb`]; the SDK
//! has `ins`/`outs` and `rep_ins`/`rep_outs` in byte, word and dword sizes,
//! always forward, DF clear) calls it
//! once with [`IoAccess::is_string`] (and [`IoAccess::is_rep`],
//! [`IoAccess::is_reverse`] when the VM's direction flag is set); the data
//! is in the VM's memory at [`IoAccess::segment`] and the client's SI
//! (output) or DI (input), CX elements with `REP`. [`IoAccess::client`]
//! gives the VM's client registers (the DDK's EBP). Handing the access to
//! `simulate_io` performs the elements one by one through the port table,
//! each a byte (or word, or dword) access that comes back to the handler,
//! and leaves the registers as the instruction would: CX = 0, SI/DI moved
//! past the data.
//!
//! A device with a range of ports installs them in one call,
//! `install_mult_io_handlers` (the DDK's table of ports): it stops at the
//! first port someone else traps and reports it, and the ports before it
//! stay yours (there is no rollback: remove them yourself if you give up).
//! `remove_mult_io_handlers` (Windows 95) removes a range again.
//!
//! ```no_run
//! # use vmm_plugin_api::prelude::*;
//! /// Eight ports at 0x280 that read as their offset; a string read is
//! /// counted and then done by the VMM.
//! struct Card;
//!
//! impl VxD for Card {
//!     const DEVICE: Device = Device::new("CARD");
//!     fn create(_: &Vmm<'_>) -> Result<Self, String> {
//!         Ok(Card)
//!     }
//!     fn control(&self, vmm: &Vmm<'_>, msg: ControlMessage) -> Carry {
//!         if msg.message == DEVICE_INIT {
//!             let ports: Vec<u16> = (0x280..0x288).collect();
//!             let handler = |_: &Card, vmm: &Vmm<'_>, io: IoAccess| {
//!                 if io.is_string() {
//!                     let count = match io.client(vmm) {
//!                         Ok(c) if io.is_rep() => u32::from(c.cx()),
//!                         _ => 1,
//!                     };
//!                     let fields = [("port", u64::from(io.port).into()), ("count", u64::from(count).into())];
//!                     let _ = vmm.trace_note("card_string", &fields);
//!                 }
//!                 if !io.is_byte() {
//!                     return vmm.simulate_io(io).unwrap_or(0xFF);
//!                 }
//!                 if io.is_output() { 0 } else { u32::from(io.port - 0x280) }
//!             };
//!             if let Err((port, _)) = vmm.install_mult_io_handlers(&ports, handler) {
//!                 // The ports before `port` are ours: give them back.
//!                 let ours: Vec<u16> = ports.into_iter().take_while(|&p| p != port).collect();
//!                 let _ = vmm.remove_mult_io_handlers(&ours);
//!                 return Carry::Set;
//!             }
//!         }
//!         Carry::Clear
//!     }
//! }
//! ```
//!
//! A dynamic device removes its handlers (`remove_io_handler`) in
//! `Sys_Dynamic_Device_Exit`; changing the trapping of a port you did not
//! install is the `IO_PORT_NOT_OWNED` violation. The rules are in
//! `docs/semantics.md` ("I/O port trapping").
//!
//! ## Owning an IRQ (VPICD)
//!
//! With `*VPICD` in the device list, a device owns an IRQ by virtualizing
//! it: an [`IrqDescriptor`] names the IRQ and the procedures VPICD calls.
//! `Hw_Int` runs at interrupt time for every physical interrupt (only
//! asynchronous services there: no `virtualize_irq`, events instead of
//! waits) and usually asks VPICD to simulate the interrupt into the VM
//! that owns the device with `set_int_request`. VPICD does so when that VM
//! can take it: interrupts enabled, the IRQ unmasked in its virtual PIC, no
//! higher IRQ in service. `Virt_Int` runs first (the point of no return),
//! then the VM's own handler; the VM's `OUT 20h, 20h` reaches your `EOI`
//! procedure, where a level-triggered device clears its request (or the
//! interrupt is simulated again at once), and the handler's `IRET` your
//! `IRET` procedure (`timed_out` if it did not come within the descriptor's
//! time-out, 500 ms by default). Two devices may share an IRQ if both set
//! `VPICD_OPT_CAN_SHARE`: the last to virtualize is called first and says
//! "not mine" with `false`.
//!
//! ```no_run
//! # use vmm_plugin_api::prelude::*;
//! # use std::cell::Cell;
//! /// A device on IRQ 5 whose interrupts belong to the VM that unmasked
//! /// the IRQ last.
//! struct Dev5 {
//!     irq: Cell<Option<VpicdHandle>>,
//!     owner: Cell<VmHandle>,
//! }
//!
//! impl VxD for Dev5 {
//!     const DEVICE: Device = Device::new("DEV5");
//!     fn create(vmm: &Vmm<'_>) -> Result<Self, String> {
//!         Ok(Dev5 { irq: Cell::new(None), owner: Cell::new(vmm.get_sys_vm_handle()) })
//!     }
//!     fn control(&self, vmm: &Vmm<'_>, msg: ControlMessage) -> Carry {
//!         if msg.message == DEVICE_INIT {
//!             let d = IrqDescriptor::new(5, |dev: &Dev5, vmm: &Vmm<'_>, e: IrqEvent| {
//!                 // Interrupt time: service the hardware, pass it on.
//!                 let _ = vmm.vpicd().phys_eoi(e.handle);
//!                 let _ = vmm.vpicd().set_int_request(e.handle, dev.owner.get());
//!                 true // mine
//!             })
//!             .eoi(|_: &Dev5, vmm: &Vmm<'_>, e: IrqEvent| {
//!                 // The VM's EOI: the request is served.
//!                 let _ = vmm.vpicd().clear_int_request(e.handle, e.vm);
//!             })
//!             .mask_change(|dev: &Dev5, _: &Vmm<'_>, e: IrqEvent, masking: bool| {
//!                 if !masking {
//!                     dev.owner.set(e.vm);
//!                 }
//!             });
//!             match vmm.vpicd().virtualize_irq(d) {
//!                 Ok(h) => self.irq.set(Some(h)),
//!                 Err(_) => return Carry::Set, // another device owns IRQ 5
//!             }
//!         }
//!         Carry::Clear
//!     }
//! }
//! ```
//!
//! A DOS program takes the interrupt through its vector table (`INT 21h
//! AH=25h`); a Rust DOS module installs an export as its handler with
//! [`Ring3::set_int_vector`], which writes the same table (its VM's V86
//! vectors, what `get_v86_int_vector` reads). Test it with `[[irq]]` entries (`irq = 5`,
//! `at`, `every`, `count`) or the test kit's `Session::raise_irq(5)`, and
//! assert on the `virtual_irq` records (`requested`, `delivered`, `eoi`,
//! `iret`, ...). A dynamic device calls `force_default_behavior` in
//! `Sys_Dynamic_Device_Exit`, or it cannot virtualize the IRQ again after a
//! reload. The rules are in `docs/semantics.md` ("VPICD").
//!
//! **Watching every hardware interrupt.** A device that must notice
//! interrupts it does not own (VDMAD watches for terminal counts) calls
//! [`Vpicd::call_when_hw_int`]: its closure runs at interrupt time for
//! every physical interrupt VPICD takes, whatever the IRQ, with the IRQ and
//! the current VM ([`HwIntEvent`]), hooks last installed first and before
//! the IRQ's `Hw_Int`. It only watches: when it returns, VPICD goes on down
//! the chain. No service removes it, so a dynamic device should not
//! install one (its unload reports the hook as a leak).
//!
//! ```no_run
//! # use vmm_plugin_api::prelude::*;
//! # struct Dma;
//! # fn f(vmm: &Vmm<'_>) -> Result<(), VmmError> {
//! vmm.vpicd().call_when_hw_int(|_: &Dma, vmm: &Vmm<'_>, e: HwIntEvent| {
//!     let _ = vmm.trace_note("hw_int_seen", &[("irq", u64::from(e.irq).into())]);
//! })?;
//! # Ok(()) }
//! ```
//!
//! **Level-triggered hardware.** `[[irq]]` lines are edge-triggered: each
//! assertion is one interrupt. `trigger = "level"` makes the line follow
//! the device: while it stays asserted (for the entry's `hold`, or until
//! the test kit's `Session::lower_irq(5)`), `VPICD_Phys_EOI` takes the
//! interrupt again at once, so a `Hw_Int` that ends the physical interrupt
//! without quieting its device is called again:
//!
//! ```toml
//! [[irq]]
//! irq = 5
//! at = "10ms"
//! trigger = "level"   # or "edge" (the default)
//! hold = "2ms"        # level only: the line drops after 2 ms
//! ```
//!
//! **Probing the IRQ from the VM.** With `VPICD_OPT_READ_HW_IRR` in the
//! descriptor's options, a VM reading its virtual PIC's IRR (`OUT 20h, 0Ah`
//! then `IN 20h`) sees the physical request bit of the IRQ, so a DOS driver
//! can find its interrupt line (the 3.1 mouse device sets it).
//!
//! ## Virtualizing a device
//!
//! Most real VxDs virtualize a piece of hardware that several VMs want: they
//! trap its ports, decide which VM owns it, let the owner through to the
//! hardware, and answer everybody else themselves. The pattern, on COM2's
//! eight ports:
//!
//! 1. At `Device_Init`, `install_mult_io_handlers` on the device's ports.
//!    `Err((port, _))` means another device virtualizes it: give up
//!    (`Carry::Set`).
//! 2. In the handler, serve only bytes (`simulate_io` splits the rest).
//!    The owner's accesses go to the hardware with `simulate_io`; another
//!    VM's are answered by the device (here: reads 0xFF, writes dropped).
//! 3. Decide ownership where a VM first needs the device: here the first
//!    VM to touch it owns it. Record each decision with
//!    `trace_contention`, so tests and `vmm run` can tell who had it when.
//! 4. On `Destroy_VM` of the owner, free the device (`"released"`).
//!
//! ```
//! use core::cell::Cell;
//! use vmm_plugin_api::prelude::*;
//! use vmm_testkit::{Scenario, json};
//!
//! const COM2: u16 = 0x2F8;
//!
//! pub struct Com2 {
//!     owner: Cell<Option<VmHandle>>,
//! }
//!
//! impl Com2 {
//!     fn access(&self, vmm: &Vmm<'_>, io: IoAccess) -> u32 {
//!         if !io.is_byte() {
//!             return vmm.simulate_io(io).unwrap_or(u32::MAX); // a byte per port, back here
//!         }
//!         match self.owner.get() {
//!             Some(owner) if owner == io.vm => {}
//!             Some(owner) => {
//!                 let _ = vmm.trace_contention("COM2", Some(owner), Some(io.vm), "refused");
//!                 return if io.is_output() { 0 } else { 0xFF }; // "no modem here"
//!             }
//!             None => {
//!                 let _ = vmm.trace_contention("COM2", None, Some(io.vm), "free");
//!                 self.owner.set(Some(io.vm));
//!             }
//!         }
//!         vmm.simulate_io(io).unwrap_or(0xFF) // the owner reaches the hardware
//!     }
//! }
//!
//! impl VxD for Com2 {
//!     const DEVICE: Device = Device::new("COM2VD");
//!     fn create(_: &Vmm<'_>) -> Result<Self, String> {
//!         Ok(Com2 { owner: Cell::new(None) })
//!     }
//!     fn control(&self, vmm: &Vmm<'_>, msg: ControlMessage) -> Carry {
//!         match msg.message {
//!             DEVICE_INIT => {
//!                 let ports: Vec<u16> = (COM2..COM2 + 8).collect();
//!                 match vmm.install_mult_io_handlers(&ports, |d: &Com2, vmm: &Vmm<'_>, io| d.access(vmm, io)) {
//!                     Ok(()) => Carry::Clear,
//!                     Err(_) => Carry::Set, // another device virtualizes COM2
//!                 }
//!             }
//!             DESTROY_VM if self.owner.get() == Some(msg.vm) => {
//!                 self.owner.set(None);
//!                 let _ = vmm.trace_contention("COM2", Some(msg.vm), None, "released");
//!                 Carry::Clear
//!             }
//!             _ => Carry::Clear,
//!         }
//!     }
//! }
//!
//! /// A DOS program that reads COM2's line status register.
//! pub struct Probe;
//!
//! impl Module for Probe {
//!     const MODULE: ModuleDef = ModuleDef::dos_program("PROBE").segments(&[Segment::moveable("_TEXT")]);
//!     fn create(_: &Ring3<'_>) -> Result<Self, String> {
//!         Ok(Probe)
//!     }
//!     fn start(&self, r3: &Ring3<'_>, _args: &str) -> Step {
//!         let lsr = r3.in_byte(COM2 + 5).unwrap();
//!         r3.print(&format!("LSR {lsr:#04x}"));
//!         Step::sleep(100) // keep the port a while, then the VM ends
//!     }
//!     fn resume(&self, _: &Ring3<'_>, _: Wake) -> Step {
//!         Step::exit(0)
//!     }
//! }
//!
//! # fn main() {
//! // Two VMs, the second 50 ms later: the first owns COM2 until it ends.
//! let run = Scenario::new(
//!     "[386Enh]\ndevice = [\"COM2VD\"]\n\
//!      [[vm]]\nname = \"A\"\nprogram = \"PROBE\"\n[[vm]]\nname = \"B\"\nat = \"50ms\"\nprogram = \"PROBE\"\n",
//! )
//! .device::<Com2>()
//! .module::<Probe>()
//! .run();
//! run.assert_ok();
//! let t = run.trace();
//! assert_eq!(t.count(json!({"kind": "contention", "device": "COM2VD", "decision": "free"})), 1);
//! assert_eq!(t.count(json!({"kind": "contention", "decision": "refused"})), 1);
//! t.expect(json!({"kind": "contention", "decision": "released"}));
//! // No UART on COM2 here: the owner read the open bus through simulate_io.
//! t.expect(json!({"kind": "io", "port": 0x2FD, "value": 0xFF, "handled_by": "hardware"}));
//! # }
//! ```
//!
//! With `[machine] com1 = "loopback"` COM1 has a UART the owner really talks
//! to. `plugins/vcomd` is the full device: Windows 3.1 VCD's contention
//! model (ownership triggers, `[VCOMD] AutoAssign`, the contention dialog
//! through [`Shell::shell_resolve_contention`], answered from `[shell]
//! answers` or, in tests, `Scenario::shell_answers`; each VM's virtual UART);
//! `plugins/vcomd/contention.ini` runs it with two DOS VMs and its tests
//! (`tests/e2e/vcomd.rs`) check, under many random schedules, that no byte
//! of the UART reaches a VM that did not own the port.
//!
//! **Owning its IRQ.** A device that decides who owns a port also decides
//! where the port's interrupts go. Like Windows 3.1's VCD, virtualize the
//! IRQ through VPICD ([`Vmm::vpicd`], `*VPICD` in the device list) when the
//! port is first assigned: `Hw_Int` runs at interrupt time for each
//! physical interrupt and requests it for the owner (or says "not mine",
//! `false`, so a device sharing the IRQ gets it); the `EOI` procedure runs
//! when the owner's handler sends EOI to its virtual PIC and ends the
//! physical interrupt and the request. A simulated source (`[[irq]]`,
//! `Session::raise_irq`, or COM1's UART model) raises the physical IRQ:
//!
//! ```
//! use core::cell::Cell;
//!
//! use vmm_plugin_api::prelude::*;
//! use vmm_testkit::{Scenario, json};
//!
//! pub struct Com2Irq {
//!     owner: Cell<Option<VmHandle>>,
//!     irq: Cell<Option<VpicdHandle>>,
//! }
//!
//! impl Com2Irq {
//!     /// The first access of a free port assigns it; the first assignment
//!     /// virtualizes IRQ 3.
//!     fn access(&self, vmm: &Vmm<'_>, io: IoAccess) -> u32 {
//!         match self.owner.get() {
//!             Some(owner) if owner != io.vm => return if io.is_output() { 0 } else { 0xFF },
//!             Some(_) => {}
//!             None => {
//!                 self.owner.set(Some(io.vm));
//!                 if self.irq.get().is_none() {
//!                     self.irq.set(self.virtualize(vmm));
//!                 }
//!             }
//!         }
//!         vmm.simulate_io(io).unwrap_or(0xFF)
//!     }
//!
//!     fn virtualize(&self, vmm: &Vmm<'_>) -> Option<VpicdHandle> {
//!         let d = IrqDescriptor::new(3, |d: &Com2Irq, vmm: &Vmm<'_>, e: IrqEvent| match d.owner.get() {
//!             Some(owner) => vmm.vpicd().set_int_request(e.handle, owner).is_ok(),
//!             None => false, // not mine
//!         })
//!         .options(VPICD_OPT_CAN_SHARE)
//!         .eoi(|_: &Com2Irq, vmm: &Vmm<'_>, e: IrqEvent| {
//!             let _ = vmm.vpicd().phys_eoi(e.handle);
//!             let _ = vmm.vpicd().clear_int_request(e.handle, e.vm);
//!         });
//!         vmm.vpicd().virtualize_irq(d).ok()
//!     }
//! }
//!
//! impl VxD for Com2Irq {
//!     const DEVICE: Device = Device::new("COM2VD");
//!     fn create(_: &Vmm<'_>) -> Result<Self, String> {
//!         Ok(Com2Irq { owner: Cell::new(None), irq: Cell::new(None) })
//!     }
//!     fn control(&self, vmm: &Vmm<'_>, msg: ControlMessage) -> Carry {
//!         if msg.message == DEVICE_INIT {
//!             let ports: Vec<u16> = (0x2F8..0x300).collect();
//!             let trapped = vmm.install_mult_io_handlers(&ports, |d: &Com2Irq, vmm: &Vmm<'_>, io| d.access(vmm, io));
//!             return if trapped.is_ok() { Carry::Clear } else { Carry::Set };
//!         }
//!         Carry::Clear
//!     }
//! }
//!
//! /// Touches COM2, unmasks IRQ 3 at its virtual PIC, waits 100 ms.
//! pub struct Touch;
//!
//! impl Module for Touch {
//!     const MODULE: ModuleDef = ModuleDef::dos_program("TOUCH").segments(&[Segment::moveable("_TEXT")]);
//!     fn create(_: &Ring3<'_>) -> Result<Self, String> {
//!         Ok(Touch)
//!     }
//!     fn start(&self, r3: &Ring3<'_>, _args: &str) -> Step {
//!         r3.in_byte(0x2FD).unwrap();
//!         let imr = r3.in_byte(0x21).unwrap();
//!         r3.out_byte(0x21, imr & !0x08).unwrap();
//!         Step::sleep(100)
//!     }
//!     fn resume(&self, _: &Ring3<'_>, _: Wake) -> Step {
//!         Step::exit(0)
//!     }
//! }
//!
//! # fn main() {
//! // A and B both touch COM2; A got it first. IRQ 3 fires at 20 ms.
//! let run = Scenario::new(
//!     "[386Enh]\ndevice = [\"*VPICD\", \"COM2VD\"]\n[[vm]]\nname = \"A\"\nprogram = \"TOUCH\"\n\
//!      [[vm]]\nname = \"B\"\nat = \"5ms\"\nprogram = \"TOUCH\"\n[[irq]]\nirq = 3\nat = \"20ms\"\n",
//! )
//! .device::<Com2Irq>()
//! .module::<Touch>()
//! .run();
//! run.assert_ok();
//! let t = run.trace();
//! let a = t.expect(json!({"kind": "vm_created", "name": "A"}))["vm"].clone();
//! // Simulated into the owner only (B has no handler of its own: VPICD's
//! // default handler sends the EOI), then the EOI and the IRET.
//! for step in ["delivered", "eoi", "cleared", "iret"] {
//!     let only: Vec<_> = t.matching(json!({"kind": "virtual_irq", "irq": 3, "step": step}));
//!     assert_eq!(only.len(), 1, "{step}");
//!     assert_eq!(only[0]["vm"], a, "{step}");
//! }
//! # }
//! ```
//!
//! VCOMD does the same for IRQ 4 (`plugins/vcomd/src/irq.rs`): its
//! decisions (request for an owner that set OUT2, quiet the UART for one
//! that did not, make the current VM the owner of a free port it armed)
//! are plain functions with unit tests; its EOI procedure also stamps the
//! port's last use, and its `Mask_Change` procedure makes a VM that
//! unmasks IRQ 4 ask for the port. COMTERM reads each byte in its IRQ 4 handler, and the
//! tests check that IRQ 4 is never simulated into a VM that did not own
//! COM1 at that moment.
//!
//! **The Windows side and the BIOS.** Windows' own COMM.DRV asks for a
//! port through the device's protected-mode API: give the device an ID
//! and `.pm_api()` in its [`Device`], and answer in [`VxD::pm_api`] (the
//! system VM finds the entry with INT 2Fh AX=1684h BX=the ID and far-calls
//! it; [`ApiCall`] carries its registers). VCOMD has VCD's ID, 000Eh, and
//! VCD's functions in DX (`plugins/vcomd/src/pm_api.rs`): Acquire_Port is
//! an ownership request like a DOS VM's access (CF and ZF when a DOS VM
//! keeps the port), Free_Port and Steal_Port, Get/Set_Port_Behavior for
//! AutoAssign; a Windows application in the tests stands in for COMM.DRV.
//! DOS programs that use the port through the BIOS (INT 14h, whose
//! accesses the device traps like any other) are seen with
//! [`Vmm::hook_v86_int_chain`]: VCOMD's hook stamps the owner's last use
//! and passes every call on ([`HookAction::PassOn`]).
//!
//! ## Appy time
//!
//! A VxD cannot call Windows code whenever it likes: ring 3 may be in the
//! middle of anything. Windows 95's SHELL device offers *application time*
//! ("appy time"): moments when the system VM runs the message server,
//! MSGSRV32, an application, so a VxD may do what a Win16 application
//! can. Register a one-shot callback with [`Shell::call_at_appy_time`]
//! (from [`Vmm::shell`]); inside it the appy-time-only services work:
//! [`Shell::load_library`], [`Shell::get_proc_address`],
//! [`Shell::call_dll`], [`Shell::free_library`], [`Shell::local_alloc_ex`],
//! [`Shell::local_free`] and [`Shell::shell_execute`]. Anywhere else they
//! are an `APPY_ONLY_SERVICE` violation (on Windows they "may crash the
//! system").
//!
//! The rules the emulator enforces, from the Windows 95 DDK:
//!
//! * Appy time is not available before Windows has finished starting, once
//!   shutdown begins, or ever again after the message server faulted
//!   ([`Shell::query_appy_time_available`] returns 0 then). A request made
//!   earlier waits; one pending at shutdown never runs (the trace says
//!   `appy_dropped`).
//! * Events are not dispatched while the critical section is held or the
//!   system VM waits on a semaphore, and in no guaranteed order.
//! * With `CAAFL_TIMEOUT` the callback runs after the time-out at the
//!   latest, told [`AppyTime::timed_out`]: then it is *not* appy time.
//! * Nested execution (`Begin_Nest_Exec`) is illegal at appy time; call
//!   16-bit code with `_SHELL_CallDll` instead. If that code faults, the
//!   message server is gone and appy time with it.
//!
//! ```
//! use core::cell::Cell;
//! use vmm_plugin_api::prelude::*;
//!
//! pub struct Notify {
//!     pending: Cell<Option<AppyHandle>>,
//! }
//!
//! impl Notify {
//!     fn at_appy_time(&self, vmm: &Vmm<'_>, appy: AppyTime) {
//!         self.pending.set(None); // the handle is dead once we are called
//!         if appy.timed_out() {
//!             vmm.out_debug_string("Windows never came up: no notification");
//!             return;
//!         }
//!         let shell = vmm.shell();
//!         match shell.load_library("NOTIFY.DLL") {
//!             Ok(dll) => {
//!                 // PASCAL: the first parameter is pushed first.
//!                 let args = PascalArgs::encode(&[(2, 1), (2, 0x0400)]);
//!                 if let Some(show) = shell.get_proc_address(dll, "ShowNotice") {
//!                     shell.call_dll_address(show, &args);
//!                 }
//!                 shell.free_library(dll);
//!             }
//!             // 0-31: KERNEL's LoadLibrary error (2: file not found, ...).
//!             Err(code) => vmm.out_debug_string(&format!("NOTIFY.DLL did not load: {code}")),
//!         }
//!         if let Err(code) = shell.shell_execute(&ShexPacket::open("README.TXT")) {
//!             vmm.out_debug_string(&format!("ShellExecute failed: {code}"));
//!         }
//!     }
//! }
//!
//! impl VxD for Notify {
//!     const DEVICE: Device = Device::new("NOTIFY");
//!     fn create(_: &Vmm<'_>) -> Result<Self, String> {
//!         Ok(Notify { pending: Cell::new(None) })
//!     }
//!     fn control(&self, vmm: &Vmm<'_>, msg: ControlMessage) -> Carry {
//!         match msg.message {
//!             // Windows has not started yet: ask to be called when it has,
//!             // or after 10 s at the latest.
//!             DEVICE_INIT => {
//!                 let h = vmm.shell().call_at_appy_time(CAAFL_TIMEOUT, 10_000, |dev: &Notify, vmm, appy| {
//!                     dev.at_appy_time(vmm, appy)
//!                 });
//!                 self.pending.set(h);
//!             }
//!             SYS_VM_TERMINATE => {
//!                 if let Some(h) = self.pending.take() {
//!                     let _ = vmm.shell().cancel_appy_time_event(h);
//!                 }
//!             }
//!             _ => {}
//!         }
//!         Carry::Clear
//!     }
//! }
//! ```
//!
//! SHELL's other services are there too: message boxes
//! ([`Shell::shell_sysmodal_message`], [`Shell::shell_message`]), system
//! broadcasts ([`Shell::broadcast_system_message`],
//! [`Shell::hook_system_broadcast`]) and [`Shell::post_message`], Windows
//! 95's built-in replacement for the VPOSTD pattern: it posts a message
//! into the system VM from any context, even an interrupt handler. The
//! workspace's `plugins/appydemo` is a complete example.
//!
//! ## Testing
//!
//! `vmm`'s test kit, the `vmm-testkit` crate, boots machines from inline
//! manifests inside `cargo test` and checks what happened by the machine's
//! trace, record by record. Add it as a dev-dependency (`vmm new` does):
//!
//! ```toml
//! [dev-dependencies]
//! vmm-testkit = { path = "../vmm/host/testkit" }
//! ```
//!
//! **The plugin under test.** `Scenario::this_crate` builds your crate's
//! `cdylib` with a nested `cargo build` (cargo does not build a `cdylib` for
//! `cargo test`) once per test process, together with the programs and DLLs
//! your package lists in `[package.metadata.vmm] uses = ["MYDLL"]` (members
//! of your workspace, or normal dependencies), and loads plugins from its
//! output. If that build fails, the test's panic message carries cargo's
//! whole error output. `vmm new dos|app|dll NAME`, run in a VxD's
//! directory, adds such a member and a test that runs the two together. Each test boots its own machine, so it works the same
//! under `cargo test` and under cargo-nextest's process per test:
//!
//! ```no_run
//! use vmm_testkit::{ClientRegs, Scenario, json};
//!
//! #[test]
//! fn hello_loads_and_its_api_answers() {
//!     // In a generated crate: Scenario::new(include_str!("../system.ini")).
//!     let machine = Scenario::new("[386Enh]\ndevice = [\"*SHELL\", \"HELLO.386\"]").this_crate();
//!
//!     // The whole run: boot, run until nothing is left to do, shut down.
//!     // assert_clean: it succeeded and broke no VMM rule (a refused call
//!     // is a `violation` record; assert_ok alone would pass it).
//!     let run = machine.run();
//!     run.assert_clean();
//!     run.trace().expect(json!({"kind": "control", "device": "HELLO", "message": "Device_Init"}));
//!
//!     // Or step by step: INT 2Fh AX=1684h, then a far call with these registers.
//!     let mut session = machine.boot();
//!     let out = session.call_pm_api(0x3A20, ClientRegs { eax: 0x0000, ..ClientRegs::default() });
//!     assert_eq!(out.map(|r| r.eax & 0xFFFF), Some(0x0100));
//!     session.finish().assert_ok();
//! }
//! # fn main() {}
//! ```
//!
//! **Device sets per test.** A scenario is a manifest (plus layers and
//! `--set`-style overrides), so each test picks its own devices, with no
//! file on disk. Devices can also be linked into the test itself with
//! `Scenario::device` (and ring-3 modules with `Scenario::module`):
//! that is how the examples below run as they are.
//!
//! ```
//! use core::cell::Cell;
//! use vmm_testkit::{Scenario, json};
//! use vmm_plugin_api::prelude::*;
//!
//! /// Adds EAX to its total: `ADDER_Add`, ordinal 1.
//! pub struct Adder { total: Cell<u32> }
//!
//! impl VxD for Adder {
//!     const DEVICE: Device = Device::new("ADDER").id(0x3B00).services(&["ADDER_Get_Version", "ADDER_Add"]);
//!     fn create(_: &Vmm<'_>) -> Result<Self, String> {
//!         Ok(Adder { total: Cell::new(0) })
//!     }
//!     fn service(&self, _: &Vmm<'_>, ordinal: u16, call: &mut ServiceCall) -> Carry {
//!         if ordinal != 1 {
//!             return Carry::Set;
//!         }
//!         self.total.set(self.total.get() + call.regs.eax);
//!         call.regs.eax = self.total.get();
//!         Carry::Clear
//!     }
//! }
//!
//! // Set A: ADDER with SHELL.
//! let run = Scenario::new("[386Enh]\ndevice = [\"*SHELL\", \"ADDER\"]").device::<Adder>().run();
//! run.assert_ok();
//! run.trace().expect(json!({"kind": "device_loaded", "device": "ADDER", "id": 0x3B00}));
//!
//! // Set B: ADDER alone, under Windows 3.1.
//! let run = Scenario::new("[386Enh]\ndevice = [\"ADDER\"]").set("machine.windows=\"3.1\"").device::<Adder>().run();
//! run.assert_ok();
//! run.trace().expect_none(json!({"kind": "device_loaded", "device": "SHELL"}));
//! ```
//!
//! **Driving the machine.** `Scenario::boot` hands over a `Session`: run
//! to a virtual time and look at the trace, raise an interrupt source,
//! create a VM, start a program, call a service or an API, and finish.
//!
//! ```
//! use core::cell::Cell;
//! use vmm_testkit::{Duration, Regs, Scenario, json};
//! use vmm_plugin_api::prelude::*;
//!
//! /// Counts interrupts; an event notes the count.
//! pub struct Ticks { n: Cell<u32> }
//!
//! impl VxD for Ticks {
//!     const DEVICE: Device = Device::new("TICKS").id(0x3B01).services(&["TICKS_Get_Version", "TICKS_Count"]);
//!     fn create(_: &Vmm<'_>) -> Result<Self, String> {
//!         Ok(Ticks { n: Cell::new(0) })
//!     }
//!     fn control(&self, vmm: &Vmm<'_>, msg: ControlMessage) -> Carry {
//!         if msg.message == DEVICE_INIT {
//!             let _ = vmm.register_interrupt("tick", |dev: &Ticks, vmm, _irq| {
//!                 dev.n.set(dev.n.get() + 1);
//!                 let _ = vmm.schedule_global_event(|dev: &Ticks, vmm, _ev| {
//!                     let _ = vmm.trace_note("ticks", &[("n", dev.n.get().into())]);
//!                 });
//!             });
//!         }
//!         Carry::Clear
//!     }
//!     fn service(&self, _: &Vmm<'_>, ordinal: u16, call: &mut ServiceCall) -> Carry {
//!         call.regs.eax = self.n.get();
//!         Carry::from_failed(ordinal != 1)
//!     }
//! }
//!
//! let mut s = Scenario::new("[386Enh]\ndevice = [\"TICKS\"]").device::<Ticks>().boot();
//! s.run_until(Duration::from_millis(20));
//! s.raise_interrupt("tick");
//! s.trace().expect(json!({"kind": "interrupt", "name": "tick", "t": 20}));
//! s.trace().expect(json!({"kind": "note", "note": "ticks", "fields": {"n": 1}}));
//! assert_eq!(s.call_service(0x3B01, 1, Regs::default()).eax, 1); // VxDCall TICKS_Count
//! let run = s.finish();
//! run.assert_ok();
//! assert_eq!(run.violations(), 0);
//! ```
//!
//! **When an assertion fails**, the message shows the records nearest to
//! the pattern and, for each, the fields that differ:
//!
//! ```text
//! no trace record matches {"device":"HELLO","kind":"control","message":"Device_Init","result":"set"}
//! 5 record(s) of kind "control" among 31 searched; the nearest:
//!   #12 {"device":"HELLO","kind":"control","message":"Device_Init","number":1,"result":"clear",...}
//!       result: expected "set", found "clear"
//! ```
//!
//! A `--trace` file can be checked the same way:
//! `Trace::from_json_lines(&std::fs::read_to_string("run.jsonl")?)`.
//!
//! **Exploring schedules.** Your device must not depend on the order in
//! which its events run (KB Q75009). `Scenario::explore(0..200)` runs the
//! scenario under 200 seeds of the random order, `explore_with` under a
//! strategy: `Strategy::Random`, or `Strategy::pct(depth)`, PCT (random
//! priorities for each event source, `depth - 1` priority change points per
//! run), which finds a bug that needs `depth` orderings in a known share of
//! runs. A run fails on a violation (report your own invariants with
//! `Vmm::report_violation`), a panic, a fatal error, a deadlock or livelock,
//! or a broken `[expect]`. The first failing seed panics with its failure,
//! the `Scenario::set` calls and the `vmm run` flags that replay it, and its
//! schedule *shrunk*: the fewest decisions away from the default order (the
//! newest ready event first, no injected interrupt) that still fail the same
//! way. Save that text as a file to replay it with `vmm run MANIFEST
//! --schedule FILE`, or in a test:
//!
//! ```no_run
//! use vmm_testkit::{Scenario, Schedule, Strategy, json};
//!
//! let scenario = Scenario::new("[386Enh]\ndevice = [\"ORDERED.386\"]").this_crate();
//! // Passes, or panics with the seed, the replay and the shrunk schedule.
//! scenario.explore_with(Strategy::pct(3), 0..500);
//! // A shrunk schedule from an earlier failure, kept as a regression test.
//! let text = std::fs::read_to_string("tests/ordered.schedule").unwrap();
//! let schedule = Schedule::parse(&text).unwrap();
//! let run = scenario.clone().replay(schedule).run();
//! run.trace().expect_none(json!({"kind": "violation"}));
//! ```
//!
//! ### Testing against a real DOS program
//!
//! A Rust DOS module is a model of a DOS client. To see what your V86 API
//! does with a real one, run real machine code: write the client in C (or
//! assembly), build it to a `.COM` and name the file, with its extension,
//! in `[[vm]] program`. The V86 monitor loads it as DOS would and runs it on
//! the `vmm-x86` interpreter; its INT 2Fh 1684h returns your device's
//! entry point, and its far call to that entry calls your API procedure
//! with its real registers as the client registers. The trace records the
//! boundary: `int2f`, `api_call` (registers in and out, CF), `v86_interrupt`,
//! `io` (port I/O), `if_flag`, `program_output` (what it printed), `v86_slice`
//! (instructions per run) and `program_ended` (its exit code).
//!
//! The client in C, for Debian's 16-bit compiler (`apt-get install bcc
//! bin86 elks-libc`; `bcc -Md` makes a `.COM`; `#asm` blocks reach the
//! registers; globals are `_name` in the assembly):
//!
//! ```text
//! unsigned r_ax, r_bx, r_di, r_es, r_cf;
//! unsigned entry[2];                       /* offset, segment */
//!
//! get_entry()                              /* INT 2Fh AX=1684h BX=device ID */
//! {
//! #asm
//!     mov ax,#0x1684
//!     mov bx,#0x3A10
//!     xor di,di
//!     mov es,di
//!     int 0x2F
//!     mov [_entry],di
//!     mov [_entry+2],es
//! #endasm
//! }
//!
//! call_api()                               /* far call with AX = r_ax */
//! {
//! #asm
//!     mov ax,[_r_ax]
//!     callf [_entry]
//!     mov [_r_ax],ax
//!     sbb ax,ax
//!     mov [_r_cf],ax
//! #endasm
//! }
//!
//! int main() { get_entry(); r_ax = 1; call_api(); return r_cf ? 2 : 0; }
//! ```
//!
//! `plugins/postdos-c/postdos.c` is a complete client (VPOSTD's DOS side,
//! with a command line, waits and error reports). The test builds the
//! program once per process and puts its directory on the search path
//! with `Scenario::plugin_dir` (the program search path is the plugin
//! search path):
//!
//! ```no_run
//! use std::path::PathBuf;
//! use std::process::Command;
//! use vmm_testkit::{Scenario, json};
//!
//! fn client_dir() -> PathBuf {
//!     let dir = std::env::temp_dir().join(format!("hello-client-{}", std::process::id()));
//!     std::fs::create_dir_all(&dir).unwrap();
//!     let src = concat!(env!("CARGO_MANIFEST_DIR"), "/client/client.c");
//!     let ok = Command::new("bcc").args(["-Md", "-o", "CLIENT.COM", src]).current_dir(&dir).status();
//!     assert!(ok.is_ok_and(|s| s.success()), "bcc -Md failed (apt-get install bcc bin86 elks-libc)");
//!     dir
//! }
//!
//! #[test]
//! fn a_real_dos_client_calls_the_v86_api() {
//!     let run = Scenario::new(
//!         "[386Enh]\ndevice = [\"HELLO.386\"]\n[[vm]]\nname = \"DOS1\"\nprogram = \"CLIENT.COM\"\n",
//!     )
//!     .this_crate()
//!     .plugin_dir(client_dir())
//!     .run();
//!     run.assert_ok();
//!     let t = run.trace();
//!     t.expect(json!({"kind": "int2f", "ax": 0x1684, "bx": 0x3A10, "es_di": 0xFF00_3A10u32}));
//!     t.expect(json!({"kind": "api_call", "device": "HELLO", "mode": "v86", "carry": false}));
//!     t.expect(json!({"kind": "program_ended", "module": "CLIENT.COM", "exit_code": 0}));
//! }
//! # fn main() {}
//! ```
//!
//! The program's registers are the VM's `Client_Reg_Struc` while your API
//! procedure runs: what you set there (AX, CF, ES:DI ...) is what the
//! program sees when the far call returns. An unhandled DOS call shows as
//! an `UNSUPPORTED_INTERRUPT` violation naming it, a fault as `v86_fault`.
//! Its port I/O goes through the I/O port table: a port your device traps
//! reaches its handler, any other reads all ones (`io` records show each
//! access and who served it). The DOS subset and the VM's memory layout are listed in
//! `docs/semantics.md`; an assembly example that hooks interrupts and does
//! port I/O is `plugins/dosasm/dosasm.asm`.
//!
//! ## Dynamic devices and hot reload
//!
//! A device can be loaded while Windows runs (VXDLDR's
//! `VXDLDR_LoadDevice`, a manifest entry `{ name = "MYVXD.386", dynamic =
//! true }` with `*VXDLDR` in the list) and unloaded again. It then gets
//! `Sys_Dynamic_Device_Init` instead of the three init phases (the
//! init-only services are legal there) and `Sys_Dynamic_Device_Exit` before
//! it goes; either may be refused with carry set. Declare it with
//! [`Device::dynamic`]. VXDLDR does no cleanup: whatever the device still
//! owns when it leaves (a pending event, a time-out, a hook, a heap block,
//! ...) is an `UNLOAD_LEAK` violation, one per item. So keep your handles
//! and release them in `Sys_Dynamic_Device_Exit`; an event callback learns
//! its own handle from [`Event::handle`], which keeps the list exact.
//!
//! ```
//! use core::cell::Cell;
//! use vmm_testkit::{Scenario, json};
//! use vmm_plugin_api::prelude::*;
//!
//! /// Ticks every 100 ms while loaded.
//! pub struct Pulse { timer: Cell<Option<TimeoutHandle>>, beats: Cell<u32> }
//!
//! impl Pulse {
//!     fn arm(&self, vmm: &Vmm<'_>) {
//!         let t = vmm.set_global_time_out(100, |dev: &Pulse, vmm, _| {
//!             dev.beats.set(dev.beats.get() + 1);
//!             dev.arm(vmm);
//!         });
//!         self.timer.set(t);
//!     }
//! }
//!
//! impl VxD for Pulse {
//!     const DEVICE: Device = Device::new("PULSE").dynamic();
//!     fn create(_: &Vmm<'_>) -> Result<Self, String> {
//!         Ok(Pulse { timer: Cell::new(None), beats: Cell::new(0) })
//!     }
//!     fn control(&self, vmm: &Vmm<'_>, msg: ControlMessage) -> Carry {
//!         match msg.message {
//!             DEVICE_INIT | SYS_DYNAMIC_DEVICE_INIT => self.arm(vmm),
//!             // Without this the pending time-out is an UNLOAD_LEAK.
//!             SYS_DYNAMIC_DEVICE_EXIT => {
//!                 if let Some(t) = self.timer.take() {
//!                     let _ = vmm.cancel_time_out(t);
//!                 }
//!             }
//!             _ => {}
//!         }
//!         Carry::Clear
//!     }
//! }
//!
//! let mut s = Scenario::new("[386Enh]\ndevice = [\"*VXDLDR\"]").device::<Pulse>().boot();
//! s.machine().load_dynamic_device("PULSE", true).unwrap();
//! s.run_for(vmm_testkit::Duration::from_millis(350));
//! s.machine().unload_dynamic_device("PULSE").unwrap();
//! let run = s.finish();
//! run.assert_ok();
//! run.trace().expect(json!({"kind": "device_unloaded", "device": "PULSE", "leaks": 0}));
//! assert_eq!(run.violations(), 0);
//! ```
//!
//! **Hot reload.** `vmm run --watch` watches the file of every loaded
//! device and, when cargo rebuilds one, swaps the code at the next safe
//! point: the new copy is loaded and layout-checked, the old instance gets
//! `Sys_Dynamic_Device_Exit`, what its [`VxD::save_state`] returns goes to
//! the new instance's [`VxD::restore_state`], and the new instance gets
//! `Sys_Dynamic_Device_Init`. Ring-3 code keeps the API entry points it
//! holds and reaches the new code. If the new copy fails to load, fails the
//! layout check, panics, refuses the state or refuses its init, the old
//! instance keeps running (initialized again with its own state). So a
//! reloadable device handles the two dynamic messages and, to keep its
//! state, implements the pair; state is bytes, so version your format and
//! refuse one you cannot read (`restore_state` returning `Err` keeps the
//! old code). VPOSTD (`plugins/vpostd`) hands its queue of pending posts and
//! its registration over this way. Tests drive the same path with
//! `Machine::reload_device(name, file)`.
//!
//! ## Restricted events, service hooks, control messages, ending VMs
//!
//! **Windows 95 events.** [`Vmm::call_restricted_event`] runs a callback
//! once its `PEF_WAIT_*` restrictions hold: in a given VM, or (`None`) in
//! the first VM that meets them, a global event. Its boost is the VM's
//! own, so a VM event boosted to `CRITICAL_SECTION_BOOST` never meets
//! `PEF_WAIT_NOT_CRIT`: give such an event `PEF_TIME_OUT` and test
//! [`Event::timed_out`]. Under Windows 95 [`Vmm::call_when_not_critical`]
//! is such a global event, and `Cancel_Call_When_Not_Critical` does
//! nothing.
//!
//! **Service hooks.** [`Vmm::hook_device_service`] puts a closure in front
//! of a service: every `VxDCall` of it (from any device, through typed SDK
//! wrappers such as [`Vmm::vxdldr`] too) runs the newest hook first. The
//! hook sees and may change the registers ([`HookedCall::call`]) and
//! decides whether the previous handler runs ([`HookedCall::chain`], the
//! DDK's `JMP [pPrevVar]`: the VMM keeps the links). Declare Windows 95
//! `HOOK_PROC`s (`hook_proc = true`): only they can be removed
//! ([`Vmm::unhook_device_service`]), and only while no old-style hook sits
//! above them. A hook on a VMM register service (`Adjust_Execution_Time`,
//! `Get_V86_Int_Vector`, `Simulate_IO`, ...) sees the `VxDCall`s of it
//! ([`Vmm::vxd_call`] to device 1); the typed [`Vmm`] methods pass no hook.
//!
//! ```no_run
//! # use vmm_plugin_api::prelude::*;
//! # struct Spy;
//! # fn f(vmm: &Vmm<'_>) -> Result<(), VmmError> {
//! // Count the loads other devices ask VXDLDR for, and let them through.
//! let load = vxd_service(VXDLDR_DEVICE_ID, VXDLDR_LOAD_DEVICE);
//! let hook = vmm.hook_device_service(load, true, |_: &Spy, vmm: &Vmm<'_>, call: &mut HookedCall<'_>| {
//!     let _ = vmm.note("load_seen").field("flags", call.regs().eax).write();
//!     let _ = call.chain(vmm);
//! })?;
//! // ... and in Sys_Dynamic_Device_Exit (a hook left behind is an UNLOAD_LEAK):
//! vmm.unhook_device_service(load, hook)?;
//! # Ok(()) }
//! ```
//!
//! **Control messages.** A device sends `Set_Device_Focus` and private
//! messages (0x70000000-0x7FFFFFFF): [`Vmm::system_control`] to every
//! device in init order (until one sets carry), [`Vmm::directed_sys_control`]
//! to one device. The VMM's own messages are not a device's to send
//! (`CONTROL_NOT_SENDABLE`).
//!
//! **Ending a VM.** [`Vmm::nuke_vm`] and [`Vmm::crash_cur_vm`] end a VM
//! without `VM_Terminate`: devices get `VM_Not_Executeable` with
//! `VNE_NUKED` / `VNE_CRASHED`, then `Destroy_VM`. The current VM ends as
//! soon as your code returns; the system VM cannot end alone (Windows
//! stops with a fatal error). Prefer failing a ring-3 call (carry) to
//! ending its VM.
//!
//! **VXDLDR** is typed too: `vmm.vxdldr().load_device("MYVXD.386", true)`,
//! `unload_device`, `get_device_list`, ... ([`Vxdldr`]), each the `VxDCall`
//! a VxD makes. **Notes** with values computed at run time:
//! `vmm.note("name").field("text", a_string).field("maybe", an_option).write()`
//! (`None` is a JSON null).
//!
//! ## Hooking interrupts and call-backs
//!
//! A device sees the interrupts of every VM through
//! `hook_v86_int_chain(vector, f)`: `f` runs for each interrupt that reaches
//! the V86 vector (a DOS program's `INT n`, a Rust module's `INT n`,
//! `simulate_int`, hardware interrupts), newest hook first, with the VM's
//! client registers current (`vmm.client(vm)`). Return
//! [`HookAction::Consume`] to end the interrupt there (the VM goes on after
//! its `INT` with the registers you left) or [`HookAction::PassOn`] for the
//! next hook and, after the last, the VM's own handler. Each call is an
//! `int_hook` record. Under Windows 3.1 hook during initialization; under
//! Windows 95 also later, and `unhook_v86_int_chain` takes the handle back.
//! To watch the back end of an interrupt, call `call_when_vm_returns` from
//! the hook and pass the interrupt on: your callback runs when the VM's
//! handler `IRET`s (and/or at the time-out).
//!
//! A call-back is a ring-3 address that enters your device in ring 0:
//! `allocate_v86_call_back(ref_data, f)` (or `allocate_pm_call_back`) gives
//! it. Hand it out in a vector (`set_v86_int_vector`), in client registers,
//! or in a data structure; ring-3 code reaches it with a `CALL FAR` or an
//! `INT`. The VMM pops nothing: `f` moves the VM on with
//! `simulate_far_ret` after a far call, `simulate_iret` after an interrupt,
//! or `simulate_far_jmp` to chain to an old handler.
//!
//! ```no_run
//! # use vmm_plugin_api::prelude::*;
//! use vmm_plugin_api::{CallBackEntry, HookAction};
//!
//! struct Dma;
//!
//! impl VxD for Dma {
//!     const DEVICE: Device = Device::new("MYDMA");
//!     fn create(_: &Vmm<'_>) -> Result<Self, String> {
//!         Ok(Dma)
//!     }
//!     fn control(&self, vmm: &Vmm<'_>, msg: ControlMessage) -> Carry {
//!         if msg.message == DEVICE_INIT {
//!             // INT 2Fh AX=1680h is ours; everything else goes on.
//!             let _ = vmm.hook_v86_int_chain(0x2F, |_: &Dma, vmm: &Vmm<'_>, _, vm| {
//!                 let c = vmm.client(vm).unwrap();
//!                 if c.ax() == 0x1680 {
//!                     c.set_al(0);
//!                     HookAction::Consume
//!                 } else {
//!                     HookAction::PassOn
//!                 }
//!             });
//!             // INT 4Bh in every VM enters this call-back (set before
//!             // Sys_VM_Init, the vector is every VM's default).
//!             if let Ok(entry) = vmm.allocate_v86_call_back(0, |_: &Dma, vmm: &Vmm<'_>, e: CallBackEntry| {
//!                 let c = vmm.client(e.vm).unwrap();
//!                 c.set_ax(0x0000);
//!                 c.set_carry(false);
//!                 let _ = vmm.simulate_iret(); // it was reached by INT 4Bh
//!             }) {
//!                 let _ = vmm.set_v86_int_vector(0x4B, entry);
//!             }
//!         }
//!         Carry::Clear
//!     }
//! }
//! ```
//!
//! `hook_v86_fault` offers your device V86 faults (a DOS program's #GP):
//! hooked during `Sys_Critical_Init` it sees only the faults the VMM does
//! not handle (the program has no handler of its own), hooked later every
//! fault first; consume a fault only after moving CS:IP past it. The
//! services on the client frame (`simulate_iret`, `simulate_far_jmp`,
//! `simulate_far_ret(_n)`, `build_int_stack_frame`, `simulate_int`) work on
//! a DOS program's VM wherever its registers are current (a hook, a
//! call-back, an event), and on a VM whose code is Rust inside a
//! nested-execution block or a call-back. The rules are in
//! `docs/semantics.md` ("Interrupts inside VMs and call-backs").
//!
//! Faults of protected-mode ring-3 code (a Windows application's
//! [`Ring3::fault`], which executes `DIV` by zero, `INT3`, `UD2` or a load
//! of a bad selector) go to `hook_pm_fault` hooks under the same rules: a
//! hook from `Sys_Critical_Init` sees only what the VM has no handler for
//! (its PM vector still the default: neither `set_pm_int_vector` nor
//! `Ring3::set_int_vector` wrote it), a later one every fault first. When nothing handles it the
//! application is ended (`pm_fault`). Faults of ring-0 code go to
//! `hook_vmm_fault` / `hook_vmm_fault_at`: the VMM raises one, a page fault
//! (0Eh) with its linear address, when a device's `mem_read` or
//! `mem_write` touches an address inside no heap block; consuming it turns
//! the `BAD_POINTER` violation into a plain `Err(FAILED)`. Such a hook runs
//! as at interrupt time: only asynchronous services. `unhook_fault(mode,
//! vector, handle)` (Windows 95) and `get_fault_hook_addrs(vector)` cover
//! all three modes ([`FaultMode`]). `simulate_int` on a VM running
//! protected-mode code enters its PM vector (a PM call-back, or the
//! application's handler) when one is set, and reflects to V86 (the
//! `hook_v86_int_chain` hooks) only when it is not. A VM has one PM vector
//! table: `set_pm_int_vector` and the application's
//! `Ring3::set_int_vector` write the same entry, the last write wins, and
//! `get_pm_int_vector` returns what the application installed; take the
//! old vector before you set yours if you chain to it. A Rust DOS program
//! runs V86 code: its `Ring3::set_int_vector` writes its VM's V86 vector
//! table instead, the entry `set_v86_int_vector` writes and
//! `get_v86_int_vector` reads, and `simulate_int` / `exec_int`, its own
//! `Ring3::int` and VPICD's interrupts reach its handler after the
//! `hook_v86_int_chain` hooks pass them on.
//!
//! ```no_run
//! # use vmm_plugin_api::prelude::*;
//! struct Guard;
//!
//! impl VxD for Guard {
//!     const DEVICE: Device = Device::new("GUARD");
//!     fn create(_: &Vmm<'_>) -> Result<Self, String> {
//!         Ok(Guard)
//!     }
//!     fn control(&self, vmm: &Vmm<'_>, msg: ControlMessage) -> Carry {
//!         if msg.message == INIT_COMPLETE {
//!             // Every UD2 of a Windows application, before its own handler:
//!             // answer AX = 0 and let it go on.
//!             let _ = vmm.hook_pm_fault(0x06, |_: &Guard, vmm: &Vmm<'_>, _, vm| {
//!                 vmm.client(vm).unwrap().set_ax(0);
//!                 HookAction::Consume
//!             });
//!             // Recover from our own bad pointers (interrupt-time rules).
//!             let _ = vmm.hook_vmm_fault_at(0x0E, |_: &Guard, _: &Vmm<'_>, _, _, address| {
//!                 if address >= 0xC000_0000 { HookAction::Consume } else { HookAction::PassOn }
//!             });
//!         }
//!         Carry::Clear
//!     }
//! }
//! ```
//!
//! ## Logging
//!
//! Use `tracing` through this crate (`info!`, `warn!`, ... are in the
//! prelude). The SDK forwards each event to the host, so it appears in the
//! host's output with the device name, filtered by `RUST_LOG`.
//!
//! ## Compatibility
//!
//! The crate version is the ABI version. The host checks every type layout
//! at load time and refuses a plugin built against an older minor version
//! of this crate, naming the file and the versions.
//!
//! Services added within a version are appended to their table (see
//! [`abi`]); a plugin that calls one on an older host gets
//! `VmmError::NOT_AVAILABLE`. Appended so far: `HostServices::trace_note`,
//! `trace_enabled`, `log_level`, and the I/O trapping services
//! `install_io_handler`, `remove_io_handler`, `set_global_trapping`,
//! `set_local_trapping`, `simulate_io`, `simulate_vm_io`; `trace_contention`;
//! `Ring3Services::r3_global_alloc`, `r3_global_free`, `r3_write_far`,
//! `r3_port_io`; `VmServices::is_ring3_export`
//! ([`Vmm::is_ring3_export`]); `HostServices::vpicd` (the VPICD table,
//! [`Vmm::vpicd`]) and `Ring3Services::r3_set_int_vector`
//! ([`Ring3::set_int_vector`]).
//! Then: `call_restricted_event`, `cancel_restricted_event`,
//! `cancel_call_when_not_critical`, `nuke_vm`, `crash_cur_vm`,
//! `hook_device_service`, `unhook_device_service`, `hooked_call`,
//! `call_previous_hook`, `trace_note_nulls`, `system_control`.
//!
//! Interrupts inside VMs and call-backs, appended to `HostServices`:
//! `hook_v86_int_chain`, `unhook_v86_int_chain`, `get_v86_int_vector`,
//! `set_v86_int_vector`, `get_pm_int_vector`, `set_pm_int_vector`,
//! `simulate_iret`, `simulate_far_jmp`, `simulate_far_ret_n`,
//! `build_int_stack_frame`, `allocate_call_back`, `call_when_vm_returns`,
//! `hook_v86_fault`, `unhook_v86_fault`. Appended to `VmServices`:
//! `adjust_execution_time` ([`Vmm::adjust_execution_time`]).
//! Fault hooks of protected-mode and ring-0 code, appended to
//! `HostServices`: `hook_fault`, `unhook_fault`, `get_fault_hook_addrs`;
//! to `Ring3Services`: `r3_fault` ([`Ring3::fault`]).
//! Then, to `HostServices`: `call_when_idle_handle` and
//! `cancel_call_when_idle` ([`Vmm::call_when_idle_cancellable`],
//! [`Vmm::cancel_call_when_idle`]).
//! The VM's one PM vector table, appended to `Ring3Services`:
//! `r3_get_int_vector` ([`Ring3::get_int_vector`]).
//!
//! String port I/O and the Mult services: `Ring3Services::r3_string_io`
//! ([`Ring3::rep_outsb`] and the other string forms; on an older host
//! they fall back to one access per element);
//! `HostServices::install_mult_io_handlers`, `remove_mult_io_handlers`
//! ([`Vmm::install_mult_io_handlers`], [`Vmm::remove_mult_io_handlers`];
//! on an older host one service call per port).
//!
//! ## Errors
//!
//! A service refused because the call broke a VMM rule returns
//! [`VmmError::VIOLATION`] (and writes a `violation` record), whatever the
//! rule. After a fatal error (`Fatal_Error_Handler`, an invalid `VxDCall`,
//! a violation under `violations = "fatal"`, a deadlock) a service returns
//! [`VmmError::FATAL`] and the SDK does not return to your code: it unwinds
//! to the entry point the host called, so no more of the device's code
//! runs.

#![deny(missing_docs)]
#![allow(non_local_definitions)] // emitted by abi_stable's derives

pub mod abi;
mod callback;
pub mod client;
pub mod ddk;
pub mod device;
mod guard;
pub mod handles;
mod log;
pub mod ring3;
pub mod shell;
pub mod vmm;
pub mod vpicd;
pub mod vxdldr;

pub use abi::{Carry, ClientRegs, CritStatus, ProfileStatus, Regs, ServiceCall, VmInfo, VmmError};
pub use client::Client;
pub use device::{ApiCall, ControlMessage, Device, RealModeInit, VxD};
pub use guard::ReentrancyCell;
pub use handles::{
    AppyHandle, EventHandle, FarPtr, HInstance, HTask, Hwnd, IrqHandle, SemaphoreHandle, SysBHookHandle, TimeoutHandle,
    VmHandle,
};
pub use ring3::Exception;
pub use ring3::{Export, Module, ModuleDef, PascalArgs, Ring3, Segment, Wake};
pub use shell::{AppyTime, LocalMemory, Shell, ShexPacket, SystemBroadcast};
pub use tracing;
pub use vmm::{CallBackEntry, FaultHookHandle, HookAction, IdleHandle, IntHookHandle, VmReturn};
pub use vmm::{ClientState, CritSectionStatus, Event, IoAccess, NoteValue, Profile, ProfileEntry, Timeout, Vmm};
pub use vmm::{FaultHooks, FaultMode};
pub use vmm::{HookHandle, HookedCall, IntoNoteArg, NoteArg, NoteBuilder};
pub use vpicd::{HwIntEvent, IrqDescriptor, IrqEvent, Vpicd, VpicdHandle};
pub use vxdldr::{DeviceListEntry, LoadedDevice, Vxdldr, VxdldrError};

/// One import for plugin authors: the traits, handles, services, DDK
/// constants and logging macros.
pub mod prelude {
    pub use crate::abi::{ApiMode, RealModeInitResult};
    pub use crate::ddk::*;
    pub use crate::ring3::{Export, Module, ModuleDef, ModuleKind, Msg, PascalArgs, Ring3, Segment, Step, Wake};
    pub use crate::shell::{AppyTime, LocalMemory, Shell, ShexPacket, SystemBroadcast};
    pub use crate::vpicd::{HwIntEvent, IrqDescriptor, IrqEvent, Vpicd, VpicdHandle};
    pub use crate::{
        ApiCall, AppyHandle, Carry, Client, ClientRegs, ControlMessage, CritSectionStatus, Device, Event, EventHandle,
        FarPtr, HInstance, HTask, Hwnd, IoAccess, IrqHandle, NoteValue, Profile, ProfileEntry, ProfileStatus,
        RealModeInit, ReentrancyCell, Regs, SemaphoreHandle, ServiceCall, SysBHookHandle, Timeout, TimeoutHandle,
        VmHandle, VmInfo, Vmm, VmmError, VxD, declare_module, declare_virtual_device,
    };
    pub use crate::{CallBackEntry, FaultHookHandle, HookAction, IdleHandle, IntHookHandle, VmReturn};
    pub use crate::{Exception, FaultHooks, FaultMode};
    pub use crate::{HookHandle, HookedCall, Vxdldr, VxdldrError};
    pub use tracing::{debug, error, info, trace, warn};
}

/// Items the export macros expand to; not part of the public API.
#[doc(hidden)]
pub mod __private {
    pub use abi_stable;
    pub use abi_stable::library::{
        __call_root_module_loader as call_root_module_loader, CheckTypeLayout, LibHeader, RootModuleResult,
    };
}
