//! The machine-readable trace: one JSON object per VMM event, written as
//! JSON Lines with `--trace FILE` and kept in memory for tests.
//!
//! Every record has `t` (virtual milliseconds), `t_ns` (virtual
//! nanoseconds) and `kind`; the other fields depend on the kind and are
//! documented on each [`TraceEvent`] variant and in `docs/trace.md`.

use std::io::{self, Write};

use serde::Serialize;

use crate::time::Instant;

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
        /// A stable reason code: `load_error`, `duplicate_id`,
        /// `abort_device_load`, `abort_win386_load`,
        /// `real_mode_init_failed`, `init_failed`.
        reason: &'static str,
        /// Human-readable detail.
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
        /// `unloaded`, `init_refused`, `init_failed`.
        reason: &'static str,
        /// Resources it still owned (each also a `violation`).
        leaks: u32,
    },
    /// A device's code was swapped for a rebuilt copy (hot reload), or the
    /// swap was refused and the old code kept.
    Reload {
        /// DDB name.
        device: String,
        /// `ok`, `replaced`, `load_failed`, `layout_mismatch`, `not_a_device`,
        /// `create_failed`, `exit_refused`, `restore_refused`, `init_refused`.
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
        /// `cancelled`, `vm_destroyed`, `shutdown`, `unloaded`.
        reason: &'static str,
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
        /// `terminated`, `program_ended`, `nuked`, `create_failed`,
        /// `critical_init_failed`, `init_failed`, `shutdown`.
        reason: &'static str,
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
        /// `cancelled`, `vm_destroyed`, `shutdown`, `unloaded`.
        reason: &'static str,
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
        /// Why: `adjust` (Adjust_Exec_Priority), `event` (a priority
        /// event's boost), `unboost`, `critical_section`.
        reason: &'static str,
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
        /// `exited`, `crashed` (it panicked), `fatal`, `vm_destroyed`,
        /// `load_failed`.
        reason: &'static str,
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
        /// `queue_full`, `no_queue`, `no_task`, `window_destroyed`.
        reason: &'static str,
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
        regs_in: crate::ring3::int2f::RegSnapshot,
        /// Client registers after.
        regs_out: crate::ring3::int2f::RegSnapshot,
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
    /// `_SHELL_CallAtAppyTime` queued an appy-time event.
    AppyScheduled {
        /// The appy-time event handle.
        handle: u32,
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
        /// `cancelled`.
        reason: &'static str,
    },
    /// A pending appy-time event will never run.
    AppyDropped {
        /// The handle.
        handle: u32,
        /// The device that requested it.
        device: String,
        /// The callback's name.
        callback: String,
        /// `shutdown`: the machine shut down with it pending (or it was
        /// requested during shutdown).
        reason: &'static str,
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
    /// The machine stopped with a fatal error.
    FatalError {
        /// The message.
        message: String,
        /// The device that caused it.
        device: Option<String>,
    },
}

/// Where trace records go.
pub struct Trace {
    capture: bool,
    records: Vec<TraceRecord>,
    writer: Option<Box<dyn Write>>,
    write_error: Option<io::Error>,
    count: u64,
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
        Trace { capture, records: Vec::new(), writer, write_error: None, count: 0 }
    }

    /// Whether records are wanted at all.
    #[inline]
    pub fn enabled(&self) -> bool {
        self.capture || self.writer.is_some()
    }

    /// Record an event at `t`.
    pub fn emit(&mut self, t: Instant, event: TraceEvent) {
        self.count += 1;
        let record = TraceRecord { t: t.as_millis(), t_ns: t.as_nanos(), event };
        if let Some(w) = self.writer.as_mut()
            && self.write_error.is_none()
        {
            let result =
                serde_json::to_writer(&mut *w, &record).map_err(io::Error::from).and_then(|()| w.write_all(b"\n"));
            if let Err(e) = result {
                self.write_error = Some(e);
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
