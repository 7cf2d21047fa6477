//! The rules of the VMM a device can break, one variant per code.
//!
//! Each code has a section in `docs/violations.md` (the rule, what Windows
//! did, the fix); `tests/e2e/violations.rs` checks the two against each
//! other. The host reports a broken rule with `Core::violation`, which
//! writes the `violation` trace record with [`Violation::code`] as its
//! `code`. Devices may report codes of their own (`Vmm::report_violation`);
//! those are strings the device documents, not variants here.

macro_rules! violations {
    ($($(#[doc = $doc:literal])* $variant:ident = $code:literal,)*) => {
        /// A rule of the VMM, named by its stable code.
        #[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Violation {
            $($(#[doc = $doc])* $variant,)*
        }

        impl Violation {
            /// Every rule, in the order of `docs/violations.md`.
            pub const ALL: &[Violation] = &[$(Violation::$variant),*];

            /// The code: the `violation` record's `code` field and the
            /// section title in `docs/violations.md`.
            pub const fn code(self) -> &'static str {
                match self {
                    $(Violation::$variant => $code,)*
                }
            }
        }
    };
}

violations! {
    /// At hardware-interrupt time (a handler of a simulated interrupt, `Get_VMM_Reenter_Count`
    /// non-zero) only services declared `Async_Service` are legal: `Call_Priority_VM_Event`,
    /// `Schedule_VM_Event`, `Get_Cur_VM_Handle`, `Signal_Semaphore`, `Get_Crit_Status_No_Block`
    /// and the others of KB Q75864.
    SyncServiceAtInterrupt = "SYNC_SERVICE_AT_INTERRUPT",
    /// The profile services (`Get_Profile_*`) and `_Allocate_Device_CB_Area` exist only during
    /// initialization (the factory, real-mode init, `Sys_Critical_Init`, `Device_Init`,
    /// `Init_Complete`).
    InitOnlyService = "INIT_ONLY_SERVICE",
    /// A device's state must tolerate re-entry: an event can run inline inside a service call, an
    /// interrupt can arrive in the middle of an API procedure, a `VxDCall` can come back to the
    /// caller (KB Q75009).
    Reentrancy = "REENTRANCY",
    /// A callback registered by a device is invoked with that device's instance.
    CallbackTypeMismatch = "CALLBACK_TYPE_MISMATCH",
    /// Real-mode init answers `DEVICE_LOAD_OK`, `ABORT_DEVICE_LOAD` or `ABORT_WIN386_LOAD`,
    /// optionally ORed with `NO_FAIL_MESSAGE`.
    BadRealModeInitAnswer = "BAD_REAL_MODE_INIT_ANSWER",
    /// Some control messages cannot fail (`Sys_VM_Terminate`, `System_Exit`, `Sys_Critical_Exit`,
    /// `VM_Terminate`, `VM_Not_Executeable`, `Destroy_VM`, ...): the device must return with
    /// carry clear.
    ControlMustSucceed = "CONTROL_MUST_SUCCEED",
    /// A linear address passed to the VMM must lie inside a live block from `_HeapAllocate`, and
    /// the whole range must fit in that block; a string must be NUL-terminated inside its block.
    BadPointer = "BAD_POINTER",
    /// `_HeapFree` takes an address `_HeapAllocate` returned that has not been freed.
    BadHeapFree = "BAD_HEAP_FREE",
    /// A VM handle must name a live VM.
    InvalidVmHandle = "INVALID_VM_HANDLE",
    /// A service was given a value outside its documented range (a size of 0, reserved flag bits
    /// set, a 16-bit argument with its high word set, `MB_HANGSYS` for `SHELL_Message`,
    /// `LMEM_MOVEABLE` for `_SHELL_LocalAllocEx`, `SHELL_GetVMInfo` during the VM's `Create_VM`,
    /// ...).
    InvalidParameter = "INVALID_PARAMETER",
    /// Control-block reads and writes must stay inside areas returned by
    /// `_Allocate_Device_CB_Area`.
    BadCbOffset = "BAD_CB_OFFSET",
    /// Through `VxDCall` to device 1 the emulator answers the register services that need no
    /// callbacks or pointers (`Get_VMM_Version`, `Get_Cur_VM_Handle`, `Test_*_VM_Handle`,
    /// `Validate_VM_Handle`, `Get_System_Time`, and the register-only services of
    /// `abi/vxdcall.rs`: vectors, `Simulate_*`, trapping, the `Cancel_*` services, ...); the
    /// others are reached through the typed `Vmm` methods.
    VmmServiceByVxdcall = "VMM_SERVICE_BY_VXDCALL",
    /// An event handle is valid from the service that returned it until the callback runs or the
    /// event is cancelled (`Cancel_Priority_VM_Event`: "must not be used after the callback
    /// ran").
    StaleEventHandle = "STALE_EVENT_HANDLE",
    /// Each cancel service takes only its own kind of handle: `Cancel_Priority_VM_Event` for
    /// `Call_Priority_VM_Event`, `Cancel_VM_Event` for `Schedule_VM_Event` / `Call_VM_Event` (of
    /// that VM), `Cancel_Global_Event` for global events.
    WrongEventKind = "WRONG_EVENT_KIND",
    /// `Call_Priority_VM_Event` accepts the `PEF_*` bits of the running Windows version (bits 0-4
    /// in 3.1); of the 4.0 bits, the thread ones (`PEF_Thread_Event`, `PEF_Wait_For_Thread_STI`)
    /// and the restricted-event ones (`PEF_Wait_Crit`, `PEF_Wait_Crit_VM`) are refused, because
    /// this VMM has no threads; `Call_Restricted_Event` refuses the same bits.
    ReservedFlags = "RESERVED_FLAGS",
    /// A time-out handle is invalid once the time-out expired or was cancelled.
    StaleTimeoutHandle = "STALE_TIMEOUT_HANDLE",
    /// `Adjust_Exec_Priority` must keep the VM's priority between `Reserved_Low_Boost` and
    /// `Reserved_High_Boost`.
    PriorityRange = "PRIORITY_RANGE",
    /// The system VM cannot be suspended (`Suspend_VM`, `End_Crit_And_Suspend`).
    SuspendSystemVm = "SUSPEND_SYSTEM_VM",
    /// Only the VM that owns the critical section may end or release it.
    CritNotOwned = "CRIT_NOT_OWNED",
    /// `Release_Critical_Section(n)` may not release more claims than there are.
    CritCount = "CRIT_COUNT",
    /// A VM that blocks (critical section, semaphore) must be able to wake, and a pending event
    /// must be able to run: something scheduled (an event, a time-out, an interrupt, another VM)
    /// must release the VM or make the event's conditions hold (`PEF_Wait_For_STI`,
    /// `PEF_Wait_Not_Crit`, a suspended or blocked target VM, a VM of higher priority that keeps
    /// the CPU).
    Deadlock = "DEADLOCK",
    /// Work must let virtual time advance: `[machine] livelock_limit` units of work (event
    /// callbacks, interrupts taken, timers fired, ring-3 steps) at one instant is a device (or an
    /// interrupt source) that feeds itself forever, such as an event that schedules itself again,
    /// or an interrupt handler whose event raises the interrupt again.
    Livelock = "LIVELOCK",
    /// `Destroy_Semaphore` while VMs wait on it.
    SemaphoreInUse = "SEMAPHORE_IN_USE",
    /// A semaphore handle must come from `Create_Semaphore` and not be destroyed.
    InvalidSemaphore = "INVALID_SEMAPHORE",
    /// Interrupt-source names are unique in a machine (the manifest raises sources by name).
    DuplicateIrqName = "DUPLICATE_IRQ_NAME",
    /// `request_interrupt` takes a handle from `register_interrupt`.
    InvalidIrq = "INVALID_IRQ",
    /// Ring-3 code that a VxD calls by nested execution from event or interrupt time runs like an
    /// interrupt service routine: it must be in a FIXED segment of a DLL (KB Q72899).
    NotFixedSegment = "NOT_FIXED_SEGMENT",
    /// Ring-3 code entered that way may call only `PostMessage` and `PostAppMessage`, the only
    /// reentrant Windows functions (KB Q72899).
    IsrCall = "ISR_CALL",
    /// A far call (nested execution, a ring-3 call, `_SHELL_CallDll`) must target an exported
    /// procedure of a loaded module or a VxD's API entry.
    BadFarPointer = "BAD_FAR_POINTER",
    /// Nested execution is not allowed at interrupt time, during Sys_Critical_Init,
    /// VM_Critical_Init, Create_VM, Destroy_VM, System_Exit and Sys_Critical_Exit, nor at appy
    /// time.
    NestExecIllegal = "NEST_EXEC_ILLEGAL",
    /// `End_Nest_Exec`, `Resume_Exec` and the `Simulate_*` calls (`Simulate_Push`,
    /// `Simulate_Pop`, `Simulate_Far_Call`, `Simulate_Int`) belong inside a block opened with
    /// `Begin_Nest_Exec`.
    UnbalancedNestExec = "UNBALANCED_NEST_EXEC",
    /// A count the VMM keeps stays in its range: the critical section's claim count (a dword:
    /// `Claim_Critical_Section` that would take it past 4,294,967,295), a semaphore's tokens (a
    /// signed dword: `Signal_Semaphore` of a semaphore at 2,147,483,647 tokens), a VM's suspend
    /// count (`Suspend_VM`).
    CountOverflow = "COUNT_OVERFLOW",
    /// A device that exports services, a V86 API or a PM API needs a unique device ID (KB
    /// Q84000): callers find services (`VxDCall`) and API entry points (INT 2Fh AX=1684h) by ID,
    /// so with `Undefined_Device_ID` nothing can reach them.
    ApiWithoutId = "API_WITHOUT_ID",
    /// A device must end every nested execution block before it returns to the VMM (event
    /// callback, API procedure, control message).
    NestExecNotEnded = "NEST_EXEC_NOT_ENDED",
    /// `Resume_Exec` returns when the VM comes back to the break point; 10,000 far calls without
    /// that means the call chain never returns.
    ResumeRunaway = "RESUME_RUNAWAY",
    /// Only Windows tasks have message queues; a DOS program that returns `Step::get_message()`
    /// is ended.
    GetMessageInDos = "GET_MESSAGE_IN_DOS",
    /// A Rust ring-3 module may execute INT 2Fh only; a machine-code DOS program the host's DOS
    /// subset and the interrupts it installed handlers for.
    UnsupportedInterrupt = "UNSUPPORTED_INTERRUPT",
    /// `_SHELL_LoadLibrary`, `_SHELL_FreeLibrary`, `_SHELL_GetProcAddress`, `_SHELL_CallDll`,
    /// `_SHELL_LocalAllocEx`, `_SHELL_LocalFree` and `_SHELL_ShellExecute` may be called only at
    /// appy time: inside a `_SHELL_CallAtAppyTime` callback that was not told `CAAFL_TIMEOUT`.
    AppyOnlyService = "APPY_ONLY_SERVICE",
    /// An appy-time event handle is valid from `_SHELL_CallAtAppyTime` until its callback runs or
    /// it is cancelled.
    StaleAppyHandle = "STALE_APPY_HANDLE",
    /// A SHELL service whose arguments include a callback (`_SHELL_CallAtAppyTime`,
    /// `_SHELL_HookSystemBroadcast`, and `SHELL_Message` / `_SHELL_PostMessage` with a non-zero
    /// callback) cannot be reached by `VxDCall`: a function address means nothing to the
    /// emulator.
    ShellServiceByVxdcall = "SHELL_SERVICE_BY_VXDCALL",
    /// A SHEXPACKET is a 32-byte header and its baggage: `shex_dwSize` is 32, `shex_dwTotalSize`
    /// covers the header and lies within the buffer (for a `VxDCall`, within the heap block),
    /// `shex_ibFile` is non-zero, every non-zero string offset points into the baggage (32 or
    /// more, below `shex_dwTotalSize`) at a string NUL-terminated before `shex_dwTotalSize`, and
    /// `dwReserved` (offset 0x18) is 0.
    BadShexpacket = "BAD_SHEXPACKET",
    /// `_SHELL_CallDll`'s `cbArgs` must be the number of bytes the called PASCAL procedure pops
    /// (`RETF n`, its export's `arg_bytes`).
    CallDllArgs = "CALL_DLL_ARGS",
    /// `_SHELL_LocalFree` takes a 16:16 address `_SHELL_LocalAllocEx` returned that has not been
    /// freed.
    BadLocalFree = "BAD_LOCAL_FREE",
    /// `_SHELL_UnhookSystemBroadcast` takes a handle `_SHELL_HookSystemBroadcast` returned that
    /// is still installed.
    StaleHookHandle = "STALE_HOOK_HANDLE",
    /// A dynamically loaded device must undo everything it set up before it unloads, in
    /// `Sys_Dynamic_Device_Exit`: cancel its events and time-outs, remove its hooks and interrupt
    /// handlers, destroy its semaphores, free its heap blocks.
    UnloadLeak = "UNLOAD_LEAK",
    /// The service exists in the DDK and in the ABI but this build of the host does not provide
    /// it.
    NotImplemented = "NOT_IMPLEMENTED",
    /// A device changes the trapping of (or removes) only a port it installed an I/O handler on
    /// itself, and gives `Simulate_IO` / `_Simulate_VM_IO` a valid IOType.
    IoPortNotOwned = "IO_PORT_NOT_OWNED",
    /// A VPICD service takes an IRQ handle `VPICD_Virtualize_IRQ` returned that
    /// `VPICD_Force_Default_Behavior` has not invalidated.
    BadIrqHandle = "BAD_IRQ_HANDLE",
    /// VPICD's IRQ numbers are 0-15 (two cascaded 8259s), and `VID_Options` holds only the
    /// `VPICD_Opt_*` bits of the machine's Windows version.
    BadIrq = "BAD_IRQ",
    /// `VPICD_Virtualize_IRQ` takes a descriptor of procedure addresses, which mean nothing to
    /// the emulator: a device calls the typed `Vpicd::virtualize_irq` (and
    /// `Vpicd::call_when_hw_int` for `VPICD_Call_When_Hw_Int`).
    VpicdServiceByVxdcall = "VPICD_SERVICE_BY_VXDCALL",
    /// A device sends (`System_Control`, `Directed_Sys_Control`) only `Set_Device_Focus` and
    /// private messages (0x70000000-0x7FFFFFFF); the other messages are the VMM's, SHELL's or
    /// DOSMGR's to send.
    ControlNotSendable = "CONTROL_NOT_SENDABLE",
    /// A VM reaches a call-back only while its device is loaded, and not again from inside the
    /// call-back's own call.
    CallBackUnavailable = "CALL_BACK_UNAVAILABLE",
    /// A call-back moves the VM's CS:IP away from the call-back address (`Simulate_Far_Ret`
    /// after a far call, `Simulate_Iret` after an interrupt, `Simulate_Far_Jmp` to chain).
    CallBackNoReturn = "CALL_BACK_NO_RETURN",
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.code())
    }
}

#[cfg(test)]
mod tests {
    use super::Violation;

    #[test]
    fn codes_are_unique_upper_snake_case() {
        let mut seen = std::collections::BTreeSet::new();
        for v in Violation::ALL {
            let code = v.code();
            assert!(seen.insert(code), "{code} twice");
            assert!(code.bytes().all(|b| b.is_ascii_uppercase() || b == b'_'), "{code}");
            assert_eq!(v.to_string(), code);
        }
    }
}
