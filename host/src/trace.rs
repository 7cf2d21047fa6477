//! The machine-readable trace: one JSON object per VMM event, written as
//! JSON Lines with `--trace FILE` and kept in memory for tests.
//!
//! Every record has `t` (virtual milliseconds), `t_ns` (virtual
//! nanoseconds) and `kind`; the other fields depend on the kind and are
//! documented on each [`TraceEvent`] variant and in `docs/trace.md`.

use std::io::{self, Write};

use serde::Serialize;

use crate::time::Instant;

/// Declares a reason enum: one variant per documented value, serialized as
/// the value's string (so the trace format is the strings users script
/// against).
macro_rules! reasons {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal,)* }) => {
        $(#[$meta])*
        #[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)*
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)*];

            /// Every value's string, in declaration order.
            pub const NAMES: &'static [&'static str] = &[$($text,)*];

            /// The value as it appears in the trace.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)*
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }
    };
}

reasons! {
    /// Why a device was refused (`device_rejected`).
    RejectReason {
        /// The file could not be loaded or is not a VxD plugin.
        LoadError = "load_error",
        /// Its device ID is taken (KB Q84000).
        DuplicateId = "duplicate_id",
        /// Real-mode init returned `ABORT_DEVICE_LOAD`.
        AbortDeviceLoad = "abort_device_load",
        /// Real-mode init returned `ABORT_WIN386_LOAD`.
        AbortWin386Load = "abort_win386_load",
        /// Real-mode init failed otherwise (a panic or an error).
        RealModeInitFailed = "real_mode_init_failed",
        /// An init phase failed.
        InitFailed = "init_failed",
    }
}

reasons! {
    /// Why a dynamically loaded device left (`device_unloaded`).
    UnloadReason {
        /// `VXDLDR_UnloadDevice` (or a reload that changed its name or ID).
        Unloaded = "unloaded",
        /// `Sys_Dynamic_Device_Init` returned carry set.
        InitRefused = "init_refused",
        /// Its dynamic init panicked or failed.
        InitFailed = "init_failed",
    }
}

reasons! {
    /// Why something pending was removed or will never run
    /// (`event_cancelled`, `timeout_cancelled`, `appy_cancelled`,
    /// `appy_dropped`).
    CancelReason {
        /// Its owner cancelled it.
        Cancelled = "cancelled",
        /// Its VM was destroyed.
        VmDestroyed = "vm_destroyed",
        /// The machine shut down with it pending.
        Shutdown = "shutdown",
        /// Its device was unloaded.
        Unloaded = "unloaded",
    }
}

reasons! {
    /// Why a VM was destroyed (`vm_destroyed`).
    DestroyReason {
        /// Its owner terminated it.
        Terminated = "terminated",
        /// Its program ended.
        ProgramEnded = "program_ended",
        /// It was nuked.
        Nuked = "nuked",
        /// `Create_VM` failed.
        CreateFailed = "create_failed",
        /// `VM_Critical_Init` failed.
        CriticalInitFailed = "critical_init_failed",
        /// `VM_Init` failed.
        InitFailed = "init_failed",
        /// The machine shut down.
        Shutdown = "shutdown",
        /// It unmasked an IRQ another VM owns (VPICD's default handling).
        IrqConflict = "irq_conflict",
        /// `Crash_Cur_VM`.
        Crashed = "crashed",
    }
}

reasons! {
    /// Why a VM's execution priority changed (`priority`).
    PriorityReason {
        /// `Adjust_Exec_Priority`.
        Adjust = "adjust",
        /// A priority event's boost.
        Event = "event",
        /// The boost of an event that ran, taken back.
        Unboost = "unboost",
        /// The critical section's boost.
        CriticalSection = "critical_section",
        /// VPICD's Time_Critical boost while a virtual interrupt is pending.
        VirtualIrq = "virtual_irq",
    }
}

reasons! {
    /// Why a program ended (`program_ended`).
    EndReason {
        /// It exited.
        Exited = "exited",
        /// It panicked.
        Crashed = "crashed",
        /// The machine stopped with a fatal error.
        Fatal = "fatal",
        /// Its VM was destroyed.
        VmDestroyed = "vm_destroyed",
        /// Its module could not be loaded.
        LoadFailed = "load_failed",
    }
}

reasons! {
    /// Why a window message was lost (`message_dropped`).
    DropReason {
        /// The task's queue was full.
        QueueFull = "queue_full",
        /// The task has no queue.
        NoQueue = "no_queue",
        /// No task owns the window.
        NoTask = "no_task",
        /// The window went before the message was dispatched.
        WindowDestroyed = "window_destroyed",
        /// `_SHELL_PostShellMessage` found no shell window.
        NoShellWindow = "no_shell_window",
    }
}

/// One trace record.
#[derive(Clone, Debug, Serialize)]
pub struct TraceRecord {
    /// Virtual time, whole milliseconds since boot.
    pub t: u64,
    /// Virtual time, nanoseconds since boot.
    pub t_ns: u64,
    /// The event.
    #[serde(flatten)]
    pub event: TraceEvent,
}

/// How a control message, service or callback returned.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CallOutcome {
    /// Carry clear.
    Clear,
    /// Carry set.
    Set,
    /// The plugin panicked.
    Panic,
    /// The plugin was re-entered while its state was borrowed.
    Reentrancy,
    /// The plugin called Fatal_Error_Handler.
    FatalExit,
    /// The instance had already failed; it was not called.
    Skipped,
    /// Another plugin error.
    Error,
}

/// The events of a run. The serialized `kind` is the variant name in
/// snake case.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TraceEvent {
    /// A boot or shutdown phase begins: `real_mode_init`,
    /// `sys_critical_init`, `device_init`, `init_complete`, `sys_vm_init`,
    /// `running`, `sys_vm_terminate`, `system_exit`, `sys_critical_exit`,
    /// `stopped`.
    Phase {
        /// The phase.
        phase: &'static str,
    },
    /// A device was accepted into the device list.
    DeviceLoaded {
        /// DDB name.
        device: String,
        /// Device ID.
        id: u16,
        /// Init order.
        init_order: u32,
        /// Version as `major.minor`.
        version: String,
        /// The file it came from (`*NAME` for built-ins).
        file: String,
        /// Content hash of the file (hex), empty for built-ins.
        build: String,
        /// Loaded because a TSR asked through INT 2Fh 1605h.
        from_int2f: bool,
        /// Has a V86 API.
        v86_api: bool,
        /// Has a PM API.
        pm_api: bool,
        /// Number of services.
        services: usize,
        /// Instance number (one per load).
        instance: u32,
    },
    /// A device was not loaded or was dropped.
    DeviceRejected {
        /// DDB name (or the manifest name if the file never loaded).
        device: String,
        /// Device ID, if known.
        id: Option<u16>,
        /// The file.
        file: String,
        /// Why (see [`RejectReason`]).
        reason: RejectReason,
        /// Human-readable detail.
        message: String,
    },
    /// A plugin file was refused before the dynamic loader saw it: not a
    /// regular file, too large, or an image it cannot map safely.
    PluginRejected {
        /// The file.
        file: String,
        /// A stable code: `truncated`, `not_elf`, `wrong_machine`, ...
        /// (see `image::Defect`).
        defect: &'static str,
        /// What is wrong, for people.
        message: String,
    },
    /// A system control message was sent to a device.
    Control {
        /// The receiving device.
        device: String,
        /// DDK name of the message.
        message: &'static str,
        /// Message number.
        number: u32,
        /// EBX, the VM handle, when the message has one.
        vm: Option<u32>,
        /// EDX parameter (VNE_* flags and the like), when non-zero.
        #[serde(skip_serializing_if = "Option::is_none")]
        edx: Option<u32>,
        /// How it returned.
        result: CallOutcome,
    },
    /// Real-mode initialization of a device.
    RealModeInit {
        /// The device.
        device: String,
        /// BX flags passed in.
        flags: u32,
        /// EDX reference data passed in (from the TSR's startup info).
        reference_data: u32,
        /// AX answer (`DEVICE_LOAD_OK`, ... `| NO_FAIL_MESSAGE`).
        answer: u32,
        /// How the call returned.
        result: CallOutcome,
    },
    /// A plugin entry point failed (panic, re-entrancy, ...).
    PluginError {
        /// The device or module.
        device: String,
        /// Which entry point: `control`, `api`, `service`, `callback`, ...
        entry: &'static str,
        /// `panic`, `reentrancy`, `type_mismatch`, `error`.
        error: &'static str,
        /// The message (panic text with location).
        message: String,
    },
    /// A VMM rule was broken.
    Violation {
        /// Stable code, for example `SYNC_SERVICE_AT_INTERRUPT`.
        code: String,
        /// One sentence: what happened and why it is wrong.
        message: String,
        /// The device that broke it.
        device: Option<String>,
        /// The service involved.
        service: Option<&'static str>,
        /// The execution context (`init`, `interrupt`, `event`, ...).
        context: &'static str,
    },
    /// A device's own structured record (`Vmm::trace_note`).
    Note {
        /// The device.
        device: String,
        /// The note's name.
        note: String,
        /// Its fields.
        fields: serde_json::Map<String, serde_json::Value>,
    },
    /// A VXDLDR operation (by `VxDCall`, the ring-3 API, or a manifest
    /// `dynamic` entry).
    Vxdldr {
        /// `load`, `unload`, `dev_init_succeeded`, `dev_init_failed`.
        op: &'static str,
        /// The file or device name (or the DeviceInfo value).
        name: String,
        /// The calling device (null for ring-3 callers).
        caller: Option<String>,
        /// `ok` or the DDK error name (`VXDLDR_ERR_DUPLICATE_DEVICE`, ...).
        result: &'static str,
        /// Why it failed.
        message: Option<String>,
    },
    /// A dynamically loaded device left (`VXDLDR_UnloadDevice`, a refused
    /// dynamic init, or a reload that changed its name or ID).
    DeviceUnloaded {
        /// DDB name.
        device: String,
        /// Device ID.
        id: u16,
        /// The file its code came from.
        file: String,
        /// Why (see [`UnloadReason`]).
        reason: UnloadReason,
        /// Resources it still owned (each also a `violation`).
        leaks: u32,
    },
    /// A device's code was swapped for a rebuilt copy (hot reload), or the
    /// swap was refused and the old code kept.
    Reload {
        /// DDB name.
        device: String,
        /// `ok`, `replaced`, `loaded`, `load_failed`, `layout_mismatch`,
        /// `not_a_device`, `create_failed`, `exit_refused`, `restore_refused`,
        /// `init_refused`.
        result: &'static str,
        /// Content hash of the code before.
        old_build: String,
        /// Content hash of the new file.
        new_build: String,
        /// Bytes of state handed over, or null.
        state_bytes: Option<usize>,
        /// Resources the old instance still owned.
        leaks: u32,
        /// Wall-clock milliseconds from noticing the change to the new code
        /// running (the one field that is not deterministic).
        latency_ms: f64,
        /// Why the old code was kept, or what changed.
        message: Option<String>,
    },
    /// `Out_Debug_String`.
    DebugString {
        /// The device.
        device: String,
        /// The text.
        text: String,
    },
    /// A `VxDCall` between devices.
    VxdCall {
        /// Calling device.
        caller: String,
        /// Target device ID.
        device_id: u16,
        /// Service ordinal.
        ordinal: u16,
        /// Service name from the target's table, if known.
        service: Option<String>,
        /// How it returned.
        result: CallOutcome,
    },
    /// The machine's settings, first record of every run.
    Machine {
        /// The random seed (printed by every run).
        seed: u64,
        /// Event order: `lifo`, `fifo` or `random`.
        order: crate::manifest::Order,
        /// Windows version as `major.minor`.
        windows: String,
    },
    /// An event was scheduled (it did not run inline).
    EventScheduled {
        /// The event handle.
        handle: u32,
        /// The event's sequence number in the run (from 1), as schedule
        /// files name events.
        seq: u64,
        /// `priority`, `vm`, `global`, `ints_enabled`.
        event: &'static str,
        /// Target VM (null for global events).
        vm: Option<u32>,
        /// `PEF_*` flags.
        flags: u32,
        /// Priority boost applied to the target VM.
        boost: i32,
        /// `PEF_Time_Out` milliseconds, when given.
        timeout_ms: Option<u32>,
        /// The scheduling device.
        device: String,
        /// The callback's name.
        callback: String,
    },
    /// An event callback ran.
    EventDispatched {
        /// The handle (0 when it ran inline, as the service returned).
        handle: u32,
        /// `priority`, `vm`, `global`, `ints_enabled`, `not_critical`.
        event: &'static str,
        /// The current VM when it ran (EBX).
        vm: u32,
        /// The VM it was scheduled for (null for global events).
        target: Option<u32>,
        /// It ran inside the scheduling service call.
        inline: bool,
        /// Its `PEF_Time_Out` expired first (callback saw CF set).
        timed_out: bool,
        /// Virtual nanoseconds between scheduling and dispatch.
        waited_ns: u64,
        /// The device.
        device: String,
        /// The callback's name.
        callback: String,
        /// How the callback returned.
        result: CallOutcome,
    },
    /// A pending event was removed without running.
    EventCancelled {
        /// The handle.
        handle: u32,
        /// The kind of event.
        event: &'static str,
        /// Target VM.
        vm: Option<u32>,
        /// The device that scheduled it.
        device: String,
        /// Why (see [`CancelReason`]).
        reason: CancelReason,
    },
    /// The scheduler switched VMs.
    VmSwitch {
        /// Previous VM.
        from: u32,
        /// New VM (also the record's `vm`).
        vm: u32,
    },
    /// A VM was created (after Create_VM, VM_Critical_Init, VM_Init).
    VmCreated {
        /// The handle.
        vm: u32,
        /// `CB_VMID`.
        id: u32,
        /// The manifest name.
        name: String,
    },
    /// A VM was destroyed.
    VmDestroyed {
        /// The handle.
        vm: u32,
        /// `CB_VMID`.
        id: u32,
        /// The manifest name.
        name: String,
        /// The `VNE_*` flags of VM_Not_Executeable.
        flags: u32,
        /// Why (see [`DestroyReason`]).
        reason: DestroyReason,
    },
    /// A time-out was set.
    TimeoutScheduled {
        /// The handle.
        handle: u32,
        /// `global` or `vm`.
        timer: &'static str,
        /// The VM whose execution time counts (`vm` time-outs).
        vm: Option<u32>,
        /// Milliseconds.
        ms: u32,
        /// The device.
        device: String,
        /// The callback's name.
        callback: String,
    },
    /// A time-out expired and its callback ran.
    Timeout {
        /// The handle.
        handle: u32,
        /// `global` or `vm`.
        timer: &'static str,
        /// The current VM when it ran.
        vm: u32,
        /// The time-out that was set, in milliseconds.
        ms: u32,
        /// How late, in milliseconds (ECX).
        late_ms: u32,
        /// The device.
        device: String,
        /// The callback's name.
        callback: String,
        /// How the callback returned.
        result: CallOutcome,
    },
    /// A time-out was cancelled before it expired.
    TimeoutCancelled {
        /// The handle.
        handle: u32,
        /// The device.
        device: String,
        /// Why (see [`CancelReason`]).
        reason: CancelReason,
    },
    /// The critical section changed hands or count.
    CritSection {
        /// `claim`, `release`, `wait` (the VM blocks), `grant` (a waiter
        /// gets it).
        action: &'static str,
        /// The VM.
        vm: u32,
        /// Claim count afterwards.
        claims: u32,
        /// The `BLOCK_*` flags the claim was made with (0 where none apply).
        flags: u32,
    },
    /// A semaphore operation.
    Semaphore {
        /// `create`, `destroy`, `wait`, `block`, `signal`, `wake`.
        action: &'static str,
        /// The handle.
        handle: u32,
        /// The VM concerned.
        vm: u32,
        /// Tokens afterwards.
        tokens: i32,
        /// The `BLOCK_*` flags of a `wait` or `block` (0 otherwise).
        flags: u32,
        /// The device that created the semaphore.
        device: String,
    },
    /// A simulated hardware interrupt was taken.
    Interrupt {
        /// The source handle.
        irq: u32,
        /// Its name.
        name: String,
        /// The device whose handler ran.
        device: String,
        /// Raised by the random order mode at a service-call boundary.
        injected: bool,
        /// The current VM.
        vm: u32,
    },
    /// A VM's execution priority changed.
    Priority {
        /// The VM.
        vm: u32,
        /// The change.
        boost: i64,
        /// The priority afterwards.
        priority: u32,
        /// Why (see [`PriorityReason`]).
        reason: PriorityReason,
    },
    /// A VM was suspended or resumed.
    VmSuspend {
        /// The VM.
        vm: u32,
        /// Suspended (true) or resumed.
        suspended: bool,
    },
    /// An `[[action]]` of the manifest changed a VM's state.
    Action {
        /// The VM.
        vm: u32,
        /// `cli`, `sti`, `begin_critical`, `end_critical`.
        action: &'static str,
    },
    /// A ring-3 program started.
    ProgramStarted {
        /// Its VM.
        vm: u32,
        /// Module name.
        module: String,
        /// `windows_app` or `dos_program`.
        #[serde(rename = "module_kind")]
        kind: &'static str,
        /// Task handle (Windows applications).
        task: Option<u16>,
        /// Command-line arguments.
        args: String,
    },
    /// A ring-3 program ended.
    ProgramEnded {
        /// Its VM.
        vm: u32,
        /// Module name.
        module: String,
        /// Task handle (Windows applications).
        task: Option<u16>,
        /// Exit code, if it exited.
        exit_code: Option<u32>,
        /// Why (see [`EndReason`]).
        reason: EndReason,
    },
    /// A line a program printed.
    ProgramOutput {
        /// Its VM.
        vm: u32,
        /// Module name.
        module: String,
        /// The line.
        text: String,
    },
    /// `PostMessage` / `PostAppMessage` returned.
    MessagePosted {
        /// The posting VM.
        vm: u32,
        /// The receiving task (null if none).
        task: Option<u16>,
        /// Window (0 for PostAppMessage, 0xFFFF broadcast).
        hwnd: u16,
        /// Message number.
        msg: u16,
        /// wParam.
        wparam: u16,
        /// lParam.
        lparam: u32,
        /// What the function returned.
        result: bool,
        /// `queued`, `dropped` (queue full or no queue), `invalid_hwnd`
        /// (not posted, TRUE returned as in 3.1), `broadcast`.
        note: &'static str,
    },
    /// A message was lost.
    MessageDropped {
        /// The task it was for (0 if unknown).
        task: u16,
        /// Window.
        hwnd: u16,
        /// Message number.
        msg: u16,
        /// wParam.
        wparam: u16,
        /// lParam.
        lparam: u32,
        /// Why (see [`DropReason`]).
        reason: DropReason,
    },
    /// A task retrieved a message (GetMessage, or PeekMessage removing it).
    MessageDelivered {
        /// The task.
        task: u16,
        /// Window (0 for PostAppMessage messages).
        hwnd: u16,
        /// Message number.
        msg: u16,
        /// wParam.
        wparam: u16,
        /// lParam.
        lparam: u32,
        /// When it was posted (ms).
        posted_ms: u32,
    },
    /// `SendMessage` called a window procedure.
    MessageSent {
        /// The window's task.
        task: Option<u16>,
        /// Window.
        hwnd: u16,
        /// Message number.
        msg: u16,
        /// wParam.
        wparam: u16,
        /// lParam.
        lparam: u32,
    },
    /// A ring-3 `MessageBox` (SHELL's message boxes are `ShellMessage`).
    MessageBox {
        /// The task that showed it (ring 3).
        task: Option<u16>,
        /// Always null (kept for compatibility; SHELL's message boxes are
        /// `shell_message` records).
        device: Option<String>,
        /// Text.
        text: String,
        /// Caption.
        caption: String,
        /// `MB_*` flags.
        flags: u32,
        /// The answer (`IDOK` = 1 ...).
        answer: u32,
        /// `MB_SYSTEMMODAL` was set.
        system_modal: bool,
    },
    /// A window was created.
    WindowCreated {
        /// Its task.
        task: u16,
        /// Handle.
        hwnd: u16,
        /// Class name.
        class: String,
        /// Title.
        title: String,
    },
    /// A window was destroyed.
    WindowDestroyed {
        /// Its task.
        task: u16,
        /// Handle.
        hwnd: u16,
        /// Class name.
        class: String,
    },
    /// `LoadLibrary` loaded (or referenced again) a DLL.
    ModuleLoaded {
        /// Module name.
        module: String,
        /// Module kind.
        #[serde(rename = "module_kind")]
        kind: &'static str,
        /// Module handle.
        hinstance: u16,
        /// Reference count afterwards.
        refcount: u32,
    },
    /// `FreeLibrary`.
    ModuleFreed {
        /// Module name.
        module: String,
        /// Module handle.
        hinstance: u16,
        /// Reference count afterwards (0: unloaded).
        refcount: u32,
    },
    /// A far call into an exported ring-3 procedure.
    FarCall {
        /// The VM it ran in.
        vm: u32,
        /// `SSSS:OOOO`.
        target: String,
        /// Module.
        module: String,
        /// Export name.
        export: String,
        /// Entered like an ISR (from event or interrupt time, KB Q72899).
        isr: bool,
        /// DX:AX.
        result: u32,
        /// How the call returned.
        outcome: CallOutcome,
    },
    /// `Begin_Nest_Exec` / `End_Nest_Exec`.
    NestExec {
        /// The VM.
        vm: u32,
        /// `begin` or `end`.
        action: &'static str,
        /// Open blocks afterwards.
        depth: usize,
        /// `Begin_Nest_V86_Exec`.
        v86: bool,
    },
    /// INT 2Fh from ring 3.
    Int2f {
        /// The VM.
        vm: u32,
        /// AX in (the function).
        ax: u16,
        /// BX in.
        bx: u16,
        /// AX out.
        out_ax: u16,
        /// BX out.
        out_bx: u16,
        /// ES:DI out (1684h: the API entry).
        es_di: u32,
        /// CF out.
        carry: bool,
    },
    /// A ring-3 caller called a VxD's API entry.
    ApiCall {
        /// The device.
        device: String,
        /// The calling VM (EBX).
        vm: u32,
        /// `v86` or `pm`.
        mode: &'static str,
        /// Client registers before.
        regs_in: RegSnapshot,
        /// Client registers after.
        regs_out: RegSnapshot,
        /// CF in the client flags afterwards (the API's error report).
        carry: bool,
        /// How the API procedure returned.
        result: CallOutcome,
    },
    /// Ring-3 code executed CLI or STI.
    IfFlag {
        /// The VM.
        vm: u32,
        /// Interrupts enabled afterwards.
        enabled: bool,
    },
    /// A machine-code DOS program ran from one return to the scheduler to
    /// the next.
    V86Slice {
        /// The VM.
        vm: u32,
        /// The program file's name.
        program: String,
        /// Instructions executed.
        instructions: u64,
        /// The virtual time they took (`instructions` × `[machine]
        /// instruction_time`); the run began at the record's time.
        duration_ns: u64,
        /// Why it stopped (`budget`, `yield`, `sleep`, `halt`, `exit`,
        /// `fault`).
        exit: &'static str,
        /// CS:IP where it stopped, as `CS << 16 | IP`.
        cs_ip: u32,
    },
    /// A machine-code DOS program executed a software interrupt.
    V86Interrupt {
        /// The VM.
        vm: u32,
        /// The vector.
        vector: u8,
        /// AX at the interrupt (the function).
        ax: u16,
        /// Who handled it: `host` (the VMM's handler) or `vm` (reflected
        /// through the VM's interrupt vector table to the program's handler).
        handler: &'static str,
    },
    /// A port access went through the I/O port table (a VM's `IN`/`OUT`,
    /// `Simulate_IO`, `_Simulate_VM_IO`).
    Io {
        /// The VM on whose behalf.
        vm: u32,
        /// The port.
        port: u16,
        /// `in` or `out`.
        direction: &'static str,
        /// Access width in bits (8, 16, 32).
        size: u8,
        /// The value written, or read (what the handler or hardware returned).
        value: u32,
        /// The device whose handler served it, or `hardware`.
        handled_by: String,
    },
    /// A machine-code DOS program faulted with no handler of its own; the
    /// VM is ended.
    V86Fault {
        /// The VM.
        vm: u32,
        /// The exception vector.
        vector: u8,
        /// CS:IP of the faulting instruction, as `CS << 16 | IP`.
        cs_ip: u32,
    },
    /// `_SHELL_CallAtAppyTime` queued an appy-time event.
    AppyScheduled {
        /// The appy-time event handle.
        handle: u32,
        /// Its sequence number in the run (from 1), as schedule files name
        /// appy-time events.
        seq: u64,
        /// The requesting device.
        device: String,
        /// The callback's name.
        callback: String,
        /// `CAAFL_*` flags as registered.
        flags: u32,
        /// `dwTimeout` with `CAAFL_TIMEOUT`, else null.
        timeout_ms: Option<u32>,
        /// Appy time was available when it was requested.
        available: bool,
    },
    /// An appy-time callback ran: at appy time, or in event context when its
    /// `CAAFL_TIMEOUT` expired first.
    AppyDispatched {
        /// The handle (stale from here on).
        handle: u32,
        /// The device.
        device: String,
        /// The callback's name.
        callback: String,
        /// The current VM (the system VM at appy time).
        vm: u32,
        /// `dwFlags` the callback received.
        flags: u32,
        /// The time-out expired first (`CAAFL_TIMEOUT` in `flags`).
        timed_out: bool,
        /// `appy`, or `event` for a timed-out callback.
        context: &'static str,
        /// Virtual nanoseconds between the request and the call.
        waited_ns: u64,
        /// How the callback returned.
        result: CallOutcome,
    },
    /// `_SHELL_CancelAppyTimeEvent` removed a pending appy-time event.
    AppyCancelled {
        /// The handle.
        handle: u32,
        /// The device that requested it.
        device: String,
        /// The callback's name.
        callback: String,
        /// Why (see [`CancelReason`]).
        reason: CancelReason,
    },
    /// A pending appy-time event will never run.
    AppyDropped {
        /// The handle.
        handle: u32,
        /// The device that requested it.
        device: String,
        /// The callback's name.
        callback: String,
        /// Why (see [`CancelReason`]).
        reason: CancelReason,
    },
    /// A SHELL message box was shown and answered (`SHELL_SYSMODAL_Message`,
    /// `SHELL_Message`, `SHELL_Resolve_Contention`).
    ShellMessage {
        /// The service that showed it.
        service: &'static str,
        /// The device that asked for it.
        device: String,
        /// The responsible VM (EBX).
        vm: u32,
        /// The `SHELL_Message` event handle (null for the synchronous ones).
        handle: Option<u32>,
        /// Text.
        text: String,
        /// Caption (the standard one when the caller passed none).
        caption: String,
        /// `MB_*` flags.
        flags: u32,
        /// The answer (`IDOK` = 1 ...).
        answer: u32,
        /// Where the answer came from: `manifest` (the next of `[shell]
        /// answers`), `default` (`[windows] message_box_answer`), or
        /// `default_button` (the configured answer is not one of the box's
        /// buttons, so the default button answered).
        source: &'static str,
        /// `window` (a dialog in Windows) or `full_screen` (before Windows
        /// runs, or `MB_NOWINDOW`).
        display: &'static str,
    },
    /// `_SHELL_ShellExecute` returned.
    ShellExecute {
        /// The calling device.
        device: String,
        /// `shex_dwTotalSize` (null if the packet is shorter than its header).
        total_size: Option<u32>,
        /// `shex_dwSize`.
        size: Option<u32>,
        /// The verb (`open` for `shex_ibOp` 0).
        verb: Option<String>,
        /// The file.
        file: Option<String>,
        /// The parameters.
        params: Option<String>,
        /// The working directory (the Windows directory for `shex_ibDir` 0).
        dir: Option<String>,
        /// `dwReserved` (`shex_ibEnv` in the DDK text).
        reserved: Option<u32>,
        /// `shex_nCmdShow`.
        show: Option<u32>,
        /// The ring-3 module started, if any.
        module: Option<String>,
        /// What the service returned: above 32 the module handle, else the
        /// error.
        result: u32,
        /// Why the packet was refused: `short_packet`, `bad_size`,
        /// `bad_total_size`, `bad_offset`, `unterminated_string`,
        /// `missing_file`, `reserved_not_zero`; null for a valid packet.
        error: Option<&'static str>,
        /// The header field `error` is about (`shex_ibFile` ...).
        field: Option<&'static str>,
    },
    /// `_SHELL_BroadcastSystemMessage` returned.
    Broadcast {
        /// The broadcasting device.
        device: String,
        /// `BSF_*` flags.
        flags: u32,
        /// `*lpdwRecipients` on entry (`BSM_*`; null for a NULL pointer).
        recipients: Option<u32>,
        /// The recipient classes that got the message (`*lpdwRecipients`
        /// afterwards).
        delivered: u32,
        /// Message number.
        msg: u32,
        /// wParam.
        wparam: u32,
        /// lParam.
        lparam: u32,
        /// Broadcast hooks called.
        hooks: u32,
        /// Windows reached.
        windows: u32,
        /// Made at appy time.
        appy: bool,
        /// 1 (success), 0 (a `BSF_QUERY` recipient refused), -1 (could not
        /// broadcast).
        result: i32,
        /// The recipient that refused a query: `device NAME` or
        /// `hwnd 0xNNNN`.
        refused_by: Option<String>,
    },
    /// The message server (MSGSRV32) faulted in a ring-3 call made for an
    /// appy-time service: appy time is unavailable for good.
    MessageServerFault {
        /// The ring-3 module whose code faulted.
        module: String,
        /// The service that made the call (`_SHELL_CallDll`, ...).
        service: &'static str,
        /// What happened.
        message: String,
    },
    /// Nothing that waits can ever run: the machine stops with a `DEADLOCK`
    /// violation and a fatal error right after this record. Written at the
    /// moment the machine got stuck (also when `until` was still ahead).
    Deadlock {
        /// The pending events that can never run, oldest first.
        events: Vec<StuckEvent>,
        /// The VMs blocked in a wait nothing can end.
        vms: Vec<StuckVm>,
    },
    /// Virtual time stood still over `[machine] livelock_limit` units of
    /// work: the machine stops with a `LIVELOCK` violation and a fatal
    /// error right after this record.
    Livelock {
        /// Units of work since virtual time last advanced.
        units: u64,
        /// Of which: event callbacks (events, `Call_When_Not_Critical`,
        /// appy time).
        events: u64,
        /// Interrupts taken.
        interrupts: u64,
        /// Timers fired (time-outs, manifest timers, wake-ups).
        timers: u64,
        /// Ring-3 steps.
        ring3_steps: u64,
        /// The device whose callback ran last (null: the host's own work).
        device: Option<String>,
    },
    /// The trace file reached `--trace-limit` (`[machine] trace_limit`):
    /// the last record of the file. The machine stops and shuts down
    /// normally; nothing more is written.
    TraceLimit {
        /// The limit, in bytes.
        limit: u64,
        /// Bytes written before this record.
        bytes: u64,
    },
    /// The machine stopped with a fatal error.
    FatalError {
        /// The message.
        message: String,
        /// The device that caused it.
        device: Option<String>,
    },
    /// A step of a virtual interrupt VPICD handles: `requested` /
    /// `cleared` (a device set or cleared the VM's request, or the default
    /// handling did), `delivered` (simulated into the VM), `eoi` (the VM's
    /// EOI or `VPICD_Virtual_EOI`), `iret` (the VM returned from it),
    /// `iret_timeout` (`VID_IRET_Time_Out` passed first).
    VirtualIrq {
        /// The IRQ, 0-15.
        irq: u8,
        /// The VM.
        vm: u32,
        /// The step.
        step: &'static str,
    },
    /// A device decided who may use a resource two VMs want (VCOMD's COM
    /// port): written by the device through the SDK
    /// (`Vmm::trace_contention`) when it decides.
    Contention {
        /// The device that decided.
        device: String,
        /// What is contended (`COM1`).
        resource: String,
        /// The VM that held it (0: nobody).
        owner: u32,
        /// The VM that wants it (0 for `released`).
        contender: u32,
        /// What was decided (the device's vocabulary; VCOMD's in
        /// `docs/trace.md`).
        decision: String,
    },
    // ---- interrupts inside VMs and call-backs ----------------------------------------
    /// A `Hook_V86_Int_Chain` hook was called for an interrupt reaching a
    /// V86 vector (`INT n`, `Simulate_Int`, a hardware interrupt).
    IntHook {
        /// The interrupt number.
        vector: u8,
        /// The VM.
        vm: u32,
        /// The hooking device.
        device: String,
        /// It returned carry set: on to the next hook (or the VM's handler).
        passed: bool,
    },
    /// A `Hook_V86_Fault` / `Hook_PM_Fault` / `Hook_VMM_Fault` hook was
    /// offered a fault.
    FaultHook {
        /// The fault (exception) number.
        vector: u8,
        /// The VM.
        vm: u32,
        /// The hooking device.
        device: String,
        /// `front` (installed after `Sys_Critical_Init`, before the VMM's own
        /// handling) or `behind` (installed during it, after).
        stage: &'static str,
        /// It returned carry clear: the fault is handled.
        handled: bool,
        /// Whose fault: `v86` (V86 code), `pm` (protected-mode ring-3
        /// code), `vmm` (ring-0 code).
        mode: &'static str,
    },
    /// Ring-3 code reached a call-back (`Allocate_V86_Call_Back`,
    /// `Allocate_PM_Call_Back`) and its callback ran.
    CallBack {
        /// The VM.
        vm: u32,
        /// The call-back's address, `segment << 16 | offset`.
        address: u32,
        /// The allocating device.
        device: String,
        /// The callback's outcome.
        outcome: CallOutcome,
    },
    /// A `Call_When_VM_Returns` callback ran.
    VmReturn {
        /// The VM.
        vm: u32,
        /// The registering device.
        device: String,
        /// `timeout` (carry set) or `return` (the VM returned through the
        /// interrupt frame).
        why: &'static str,
        /// The callback's outcome.
        outcome: CallOutcome,
    },
    /// Protected-mode ring-3 code faulted (`Ring3::fault`) and nothing
    /// handled it (no fault hook, no PM vector): the program ends.
    PmFault {
        /// The VM.
        vm: u32,
        /// The exception vector.
        vector: u8,
        /// The module whose code faulted.
        module: String,
    },
}

/// A pending event that can never run (in a [`TraceEvent::Deadlock`]).
#[derive(Clone, Debug, Serialize)]
pub struct StuckEvent {
    /// The event handle.
    pub handle: u32,
    /// `priority`, `vm`, `ints_enabled`.
    pub event: &'static str,
    /// The VM it waits to run in.
    pub vm: u32,
    /// The scheduling device.
    pub device: String,
    /// The callback's name.
    pub callback: String,
    /// Its `PEF_*` flags.
    pub flags: u32,
    /// What does not hold: `PEF_Wait_For_STI`, `PEF_Wait_Not_Crit`,
    /// `PEF_Wait_Not_HW_Int`, `PEF_Wait_Not_Nested_Exec`, `PEF_Wait_In_PM`
    /// (its wait conditions), `vm_suspended`, `vm_blocked` (the VM waits
    /// without serving events), `vm_not_scheduled` (a VM of higher
    /// priority keeps the CPU).
    pub waits_for: Vec<&'static str>,
    /// Virtual nanoseconds it has waited.
    pub waited_ns: u64,
}

/// A VM blocked in a wait that can never end (in a [`TraceEvent::Deadlock`]).
#[derive(Clone, Debug, Serialize)]
pub struct StuckVm {
    /// The VM.
    pub vm: u32,
    /// Its name.
    pub name: String,
    /// `critical_section` or `semaphore`.
    pub waits_for: &'static str,
    /// The critical section's owner (for `critical_section`).
    pub owner: Option<u32>,
}

/// Bytes kept free under the trace limit for the final `trace_limit`
/// record.
const LIMIT_RESERVE: u64 = 256;

/// Where trace records go.
pub struct Trace {
    capture: bool,
    records: Vec<TraceRecord>,
    writer: Option<Box<dyn Write>>,
    write_error: Option<io::Error>,
    count: u64,
    /// The most bytes the writer may receive (`--trace-limit`).
    limit: u64,
    /// Bytes given to the writer so far.
    written: u64,
    /// The limit was reached: the `trace_limit` record is written and the
    /// writer takes nothing more.
    limited: bool,
    /// One record's JSON, serialized here whole, measured, then handed to
    /// the writer in one `write_all`, so a buffered writer only ever holds
    /// and flushes whole records (a trace cut short ends on a record
    /// boundary).
    line: Vec<u8>,
}

impl Default for Trace {
    fn default() -> Self {
        Trace::new(false, None)
    }
}

impl std::fmt::Debug for Trace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trace").field("capture", &self.capture).field("count", &self.count).finish()
    }
}

impl Trace {
    /// A trace that keeps records in memory (`capture`) and/or writes JSON
    /// Lines to `writer`.
    pub fn new(capture: bool, writer: Option<Box<dyn Write>>) -> Self {
        Trace {
            capture,
            records: Vec::new(),
            writer,
            write_error: None,
            count: 0,
            limit: u64::MAX,
            written: 0,
            limited: false,
            line: Vec::new(),
        }
    }

    /// Stop writing once the file would grow past `limit` bytes: the last
    /// record written is then a `trace_limit` record, and the file stays
    /// whole JSON lines.
    pub fn set_limit(&mut self, limit: u64) {
        self.limit = limit;
    }

    /// Whether the writer reached its limit (see [`Trace::set_limit`]).
    pub fn limit_reached(&self) -> bool {
        self.limited
    }

    /// Bytes given to the writer so far.
    pub fn bytes_written(&self) -> u64 {
        self.written
    }

    /// Whether records are wanted at all.
    #[inline]
    pub fn enabled(&self) -> bool {
        self.capture || self.writer.is_some()
    }

    /// Record an event at `t`.
    pub fn emit(&mut self, t: Instant, event: TraceEvent) {
        if self.limited {
            // Past the limit nothing is kept: the file and the captured
            // records end alike, with the `trace_limit` record.
            return;
        }
        self.count += 1;
        let record = TraceRecord { t: t.as_millis(), t_ns: t.as_nanos(), event };
        if self.writer.is_some() && self.write_error.is_none() {
            self.line.clear();
            let fits = match serde_json::to_writer(&mut self.line, &record) {
                Ok(()) => {
                    self.line.push(b'\n');
                    self.written.saturating_add(self.line.len() as u64).saturating_add(LIMIT_RESERVE) <= self.limit
                }
                Err(e) => {
                    self.write_error = Some(e.into());
                    true
                }
            };
            if !fits {
                self.limited = true;
                let last = TraceRecord {
                    t: record.t,
                    t_ns: record.t_ns,
                    event: TraceEvent::TraceLimit { limit: self.limit, bytes: self.written },
                };
                self.line.clear();
                if let Err(e) = serde_json::to_writer(&mut self.line, &last) {
                    self.write_error = Some(e.into());
                }
                self.line.push(b'\n');
                if self.capture {
                    self.records.push(last);
                }
            }
            if self.write_error.is_none()
                && let Some(w) = self.writer.as_mut()
            {
                match w.write_all(&self.line) {
                    Ok(()) => self.written += self.line.len() as u64,
                    Err(e) => self.write_error = Some(e),
                }
            }
            if !fits {
                // The record that did not fit is not kept either.
                return;
            }
        }
        if self.capture {
            self.records.push(record);
        }
    }

    /// Records kept in memory.
    pub fn records(&self) -> &[TraceRecord] {
        &self.records
    }

    /// Take the records kept in memory.
    pub fn take_records(&mut self) -> Vec<TraceRecord> {
        std::mem::take(&mut self.records)
    }

    /// Flush the writer; report the first write error.
    pub fn finish(&mut self) -> io::Result<()> {
        if let Some(e) = self.write_error.take() {
            return Err(e);
        }
        if let Some(w) = self.writer.as_mut() {
            w.flush()?;
        }
        Ok(())
    }
}

/// The registers an API call trace shows.
#[derive(Copy, Clone, Debug, Serialize, PartialEq, Eq)]
pub struct RegSnapshot {
    /// EAX.
    pub eax: u32,
    /// EBX.
    pub ebx: u32,
    /// ECX.
    pub ecx: u32,
    /// EDX.
    pub edx: u32,
    /// ESI.
    pub esi: u32,
    /// EDI.
    pub edi: u32,
    /// ES.
    pub es: u32,
    /// EFLAGS (CF is bit 0).
    pub eflags: u32,
}

impl From<vmm_plugin_api::abi::ClientRegs> for RegSnapshot {
    fn from(c: vmm_plugin_api::abi::ClientRegs) -> Self {
        RegSnapshot {
            eax: c.eax,
            ebx: c.ebx,
            ecx: c.ecx,
            edx: c.edx,
            esi: c.esi,
            edi: c.edi,
            es: c.es,
            eflags: c.eflags,
        }
    }
}

#[cfg(test)]
mod reason_tests {
    use super::*;

    /// The text of `docs/trace.md`'s section that names `kind` in its
    /// heading.
    fn section(doc: &str, kind: &str) -> String {
        let tag = format!("`{kind}`");
        let start = doc
            .split("\n### ")
            .find(|part| part.lines().next().is_some_and(|h| h.contains(&tag)))
            .unwrap_or_else(|| panic!("docs/trace.md has no section for {kind}"));
        start.to_string()
    }

    #[test]
    fn every_reason_is_documented_with_its_record_kind() {
        let doc = include_str!("../../docs/trace.md");
        let table: [(&str, &[&str]); 10] = [
            ("device_rejected", RejectReason::NAMES),
            ("device_unloaded", UnloadReason::NAMES),
            ("event_cancelled", CancelReason::NAMES),
            ("timeout_cancelled", CancelReason::NAMES),
            ("appy_cancelled", &[CancelReason::Cancelled.as_str()]),
            ("appy_dropped", &[CancelReason::Shutdown.as_str(), CancelReason::Unloaded.as_str()]),
            ("vm_destroyed", DestroyReason::NAMES),
            ("priority", PriorityReason::NAMES),
            ("program_ended", EndReason::NAMES),
            ("message_dropped", DropReason::NAMES),
        ];
        for (kind, reasons) in table {
            let text = section(doc, kind);
            for r in reasons {
                assert!(text.contains(&format!("`{r}`")), "docs/trace.md's {kind} section does not name reason `{r}`");
            }
        }
    }

    #[test]
    fn a_reason_serializes_as_its_string() {
        let json = serde_json::to_string(&CancelReason::VmDestroyed).unwrap();
        assert_eq!(json, "\"vm_destroyed\"");
        assert_eq!(DropReason::NoShellWindow.to_string(), "no_shell_window");
    }
}
