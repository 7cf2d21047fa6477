//! The VMM's services, declared once: ordinal (device 1's service table;
//! none for the host's own extensions), name, and context rule. The ABI
//! shims (`abi/vmm.rs`) pass their entry to one wrapper that applies the
//! guard and the rule; SHELL declares its services the same way
//! (`shell/mod.rs`).

/// When a service may be called.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum Rule {
    /// Anywhere, including interrupt time (`Async_Service`).
    Async,
    /// Not at interrupt time.
    Sync,
    /// Only during real-mode init and the three init phases (or a dynamic
    /// device's `Sys_Dynamic_Device_Init`).
    Init,
}

/// One service of the VMM.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) struct Service {
    /// Its ordinal in the VMM's service table (`VxDCall` 0x0001xxxx), or
    /// `None` for a host extension (tracing, checked memory access, ...).
    pub(crate) ordinal: Option<u16>,
    /// The DDK's name (the `service` field of `violation` records).
    pub(crate) name: &'static str,
    /// When it may be called.
    pub(crate) rule: Rule,
}

macro_rules! services {
    ($($id:ident = $ord:expr, $name:literal, $rule:ident;)*) => {
        // The fast services (`Get_Cur_VM_Handle`, `Get_System_Time`, ...)
        // cannot fail and skip the guard on the hot path: their entries are
        // read through `ALL` only.
        $(#[allow(dead_code)] pub(crate) const $id: Service = Service { ordinal: $ord, name: $name, rule: Rule::$rule };)*

        /// Every service: the VMM's service table in ordinal order, the host
        /// extensions, then blocks appended per feature (each in ordinal
        /// order).
        pub(crate) const ALL: &[Service] = &[$($id),*];
    };
}

services! {
    GET_VMM_VERSION = Some(0x00), "Get_VMM_Version", Async;
    GET_CUR_VM_HANDLE = Some(0x01), "Get_Cur_VM_Handle", Async;
    TEST_CUR_VM_HANDLE = Some(0x02), "Test_Cur_VM_Handle", Async;
    GET_SYS_VM_HANDLE = Some(0x03), "Get_Sys_VM_Handle", Async;
    TEST_SYS_VM_HANDLE = Some(0x04), "Test_Sys_VM_Handle", Async;
    VALIDATE_VM_HANDLE = Some(0x05), "Validate_VM_Handle", Async;
    GET_VMM_REENTER_COUNT = Some(0x06), "Get_VMM_Reenter_Count", Async;
    SCHEDULE_GLOBAL_EVENT = Some(0x0E), "Schedule_Global_Event", Async;
    SCHEDULE_VM_EVENT = Some(0x0F), "Schedule_VM_Event", Async;
    CALL_GLOBAL_EVENT = Some(0x10), "Call_Global_Event", Async;
    CALL_VM_EVENT = Some(0x11), "Call_VM_Event", Async;
    CANCEL_GLOBAL_EVENT = Some(0x12), "Cancel_Global_Event", Async;
    CANCEL_VM_EVENT = Some(0x13), "Cancel_VM_Event", Async;
    CALL_PRIORITY_VM_EVENT = Some(0x14), "Call_Priority_VM_Event", Async;
    CANCEL_PRIORITY_VM_EVENT = Some(0x15), "Cancel_Priority_VM_Event", Sync;
    CALL_WHEN_VM_INTS_ENABLED = Some(0x19), "Call_When_VM_Ints_Enabled", Sync;
    ADJUST_EXEC_PRIORITY = Some(0x1E), "Adjust_Exec_Priority", Sync;
    BEGIN_CRITICAL_SECTION = Some(0x1F), "Begin_Critical_Section", Sync;
    END_CRITICAL_SECTION = Some(0x20), "End_Critical_Section", Sync;
    END_CRIT_AND_SUSPEND = Some(0x21), "End_Crit_And_Suspend", Sync;
    CLAIM_CRITICAL_SECTION = Some(0x22), "Claim_Critical_Section", Sync;
    RELEASE_CRITICAL_SECTION = Some(0x23), "Release_Critical_Section", Sync;
    CALL_WHEN_NOT_CRITICAL = Some(0x24), "Call_When_Not_Critical", Sync;
    CREATE_SEMAPHORE = Some(0x25), "Create_Semaphore", Sync;
    DESTROY_SEMAPHORE = Some(0x26), "Destroy_Semaphore", Sync;
    WAIT_SEMAPHORE = Some(0x27), "Wait_Semaphore", Sync;
    SIGNAL_SEMAPHORE = Some(0x28), "Signal_Semaphore", Async;
    GET_CRIT_SECTION_STATUS = Some(0x29), "Get_Crit_Section_Status", Sync;
    CALL_WHEN_TASK_SWITCHED = Some(0x2A), "Call_When_Task_Switched", Sync;
    SUSPEND_VM = Some(0x2B), "Suspend_VM", Sync;
    RESUME_VM = Some(0x2C), "Resume_VM", Sync;
    ADJUST_EXECUTION_TIME = Some(0x37), "Adjust_Execution_Time", Sync;
    CALL_WHEN_IDLE = Some(0x3A), "Call_When_Idle", Sync;
    GET_NEXT_VM_HANDLE = Some(0x3B), "Get_Next_VM_Handle", Async;
    SET_GLOBAL_TIME_OUT = Some(0x3C), "Set_Global_Time_Out", Sync;
    SET_VM_TIME_OUT = Some(0x3D), "Set_VM_Time_Out", Sync;
    CANCEL_TIME_OUT = Some(0x3E), "Cancel_Time_Out", Sync;
    GET_SYSTEM_TIME = Some(0x3F), "Get_System_Time", Async;
    GET_VM_EXEC_TIME = Some(0x40), "Get_VM_Exec_Time", Async;
    SIMULATE_INT = Some(0x46), "Simulate_Int", Sync;
    SIMULATE_FAR_CALL = Some(0x48), "Simulate_Far_Call", Sync;
    SIMULATE_PUSH = Some(0x4D), "Simulate_Push", Sync;
    SIMULATE_POP = Some(0x4E), "Simulate_Pop", Sync;
    HEAP_ALLOCATE = Some(0x4F), "_HeapAllocate", Sync;
    HEAP_REALLOCATE = Some(0x50), "_HeapReAllocate", Sync;
    HEAP_FREE = Some(0x51), "_HeapFree", Sync;
    HEAP_GET_SIZE = Some(0x52), "_HeapGetSize", Async;
    BEGIN_NEST_V86_EXEC = Some(0x82), "Begin_Nest_V86_Exec", Sync;
    BEGIN_NEST_EXEC = Some(0x83), "Begin_Nest_Exec", Sync;
    EXEC_INT = Some(0x84), "Exec_Int", Sync;
    RESUME_EXEC = Some(0x85), "Resume_Exec", Sync;
    END_NEST_EXEC = Some(0x86), "End_Nest_Exec", Sync;
    SAVE_CLIENT_STATE = Some(0x8D), "Save_Client_State", Sync;
    RESTORE_CLIENT_STATE = Some(0x8E), "Restore_Client_State", Sync;
    SIMULATE_IO = Some(0x94), "Simulate_IO", Sync;
    INSTALL_MULT_IO_HANDLERS = Some(0x95), "Install_Mult_IO_Handlers", Sync;
    INSTALL_IO_HANDLER = Some(0x96), "Install_IO_Handler", Sync;
    ENABLE_GLOBAL_TRAPPING = Some(0x97), "Enable_Global_Trapping", Sync;
    ENABLE_LOCAL_TRAPPING = Some(0x98), "Enable_Local_Trapping", Sync;
    DISABLE_GLOBAL_TRAPPING = Some(0x99), "Disable_Global_Trapping", Sync;
    DISABLE_LOCAL_TRAPPING = Some(0x9A), "Disable_Local_Trapping", Sync;
    ALLOCATE_DEVICE_CB_AREA = Some(0xA7), "_Allocate_Device_CB_Area", Init;
    GET_PROFILE_DECIMAL_INT = Some(0xAB), "Get_Profile_Decimal_Int", Init;
    GET_PROFILE_HEX_INT = Some(0xAF), "Get_Profile_Hex_Int", Init;
    GET_PROFILE_BOOLEAN = Some(0xB1), "Get_Profile_Boolean", Init;
    GET_PROFILE_STRING = Some(0xB3), "Get_Profile_String", Init;
    GET_NEXT_PROFILE_STRING = Some(0xB4), "Get_Next_Profile_String", Init;
    FATAL_ERROR_HANDLER = Some(0xBE), "Fatal_Error_Handler", Async;
    FATAL_MEMORY_ERROR = Some(0xBF), "Fatal_Memory_Error", Async;
    OUT_DEBUG_STRING = Some(0xC2), "Out_Debug_String", Async;
    GET_CRIT_STATUS_NO_BLOCK = Some(0xF1), "Get_Crit_Status_No_Block", Async;
    REMOVE_IO_HANDLER = Some(0x116), "Remove_IO_Handler", Sync;
    REMOVE_MULT_IO_HANDLERS = Some(0x117), "Remove_Mult_IO_Handlers", Sync;
    SIMULATE_VM_IO = Some(0x130), "_Simulate_VM_IO", Sync;
    // ---- interrupts inside VMs and call-backs (virtual-hardware reference, sections 4, 5, 7.3) ----
    ALLOCATE_V86_CALL_BACK = Some(0x0B), "Allocate_V86_Call_Back", Sync;
    ALLOCATE_PM_CALL_BACK = Some(0x0C), "Allocate_PM_Call_Back", Sync;
    CALL_WHEN_VM_RETURNS = Some(0x0D), "Call_When_VM_Returns", Sync;
    HOOK_V86_INT_CHAIN = Some(0x41), "Hook_V86_Int_Chain", Sync;
    GET_V86_INT_VECTOR = Some(0x42), "Get_V86_Int_Vector", Sync;
    SET_V86_INT_VECTOR = Some(0x43), "Set_V86_Int_Vector", Sync;
    GET_PM_INT_VECTOR = Some(0x44), "Get_PM_Int_Vector", Sync;
    SET_PM_INT_VECTOR = Some(0x45), "Set_PM_Int_Vector", Sync;
    SIMULATE_IRET = Some(0x47), "Simulate_Iret", Sync;
    SIMULATE_FAR_JMP = Some(0x49), "Simulate_Far_Jmp", Sync;
    SIMULATE_FAR_RET = Some(0x4A), "Simulate_Far_Ret", Sync;
    SIMULATE_FAR_RET_N = Some(0x4B), "Simulate_Far_Ret_N", Sync;
    BUILD_INT_STACK_FRAME = Some(0x4C), "Build_Int_Stack_Frame", Sync;
    HOOK_V86_FAULT = Some(0x7F), "Hook_V86_Fault", Sync;
    UNHOOK_V86_INT_CHAIN = Some(0x118), "Unhook_V86_Int_Chain", Sync;
    UNHOOK_V86_FAULT = Some(0x119), "Unhook_V86_Fault", Sync;
    VXDCALL = None, "VxDCall", Async;
    LOG = None, "log", Async;
    LOG_LEVEL = None, "log_level", Async;
    REPORT_VIOLATION = None, "report_violation", Async;
    TRACE_NOTE = None, "trace_note", Async;
    TRACE_ENABLED = None, "trace_enabled", Async;
    MEM_READ = None, "mem_read", Async;
    MEM_WRITE = None, "mem_write", Async;
    GET_VM_INFO = None, "get_vm_info", Async;
    CLIENT_REGS = None, "client_regs", Async;
    CB_READ = None, "cb_read", Async;
    CB_WRITE = None, "cb_write", Async;
    REGISTER_INTERRUPT = None, "register_interrupt", Sync;
    REQUEST_INTERRUPT = None, "request_interrupt", Async;
    IS_RING3_EXPORT = None, "is_ring3_export", Async;
    // ---- Service hooks, control messages, Windows 95 event additions, VM lifetime
    // (virtual-hardware reference, sections 6 and 7)
    NUKE_VM = Some(0x2E), "Nuke_VM", Sync;
    CRASH_CUR_VM = Some(0x2F), "Crash_Cur_VM", Async;
    HOOK_DEVICE_SERVICE = Some(0x90), "Hook_Device_Service", Sync;
    SYSTEM_CONTROL = Some(0x93), "System_Control", Sync;
    UNHOOK_DEVICE_SERVICE = Some(0x11C), "Unhook_Device_Service", Sync;
    CANCEL_CALL_WHEN_NOT_CRITICAL = Some(0x12A), "Cancel_Call_When_Not_Critical", Sync;
    DIRECTED_SYS_CONTROL = Some(0x147), "Directed_Sys_Control", Sync;
    CALL_RESTRICTED_EVENT = Some(0x15A), "Call_Restricted_Event", Async;
    CANCEL_RESTRICTED_EVENT = Some(0x15B), "Cancel_Restricted_Event", Async;
    HOOKED_CALL = None, "hooked_call", Async;
    CALL_PREVIOUS_HOOK = None, "call_previous_hook", Async;
    // ---- device contention (the COM port demo, section 8.1) ----
    TRACE_CONTENTION = None, "trace_contention", Async;
    // ---- fault hooks of protected-mode and ring-0 code (virtual-hardware reference, section 4.3) ----
    GET_FAULT_HOOK_ADDRS = Some(0x7E), "Get_Fault_Hook_Addrs", Sync;
    HOOK_PM_FAULT = Some(0x80), "Hook_PM_Fault", Sync;
    HOOK_VMM_FAULT = Some(0x81), "Hook_VMM_Fault", Sync;
    UNHOOK_PM_FAULT = Some(0x11A), "Unhook_PM_Fault", Sync;
    UNHOOK_VMM_FAULT = Some(0x11B), "Unhook_VMM_Fault", Sync;
    // ---- Call_When_Idle handles (virtual-hardware reference, section 7.4) ----
    CANCEL_CALL_WHEN_IDLE = Some(0x12B), "Cancel_Call_When_Idle", Sync;
}

/// The service with `ordinal` in the VMM's table.
pub(crate) fn by_ordinal(ordinal: u16) -> Option<&'static Service> {
    ALL.iter().find(|s| s.ordinal == Some(ordinal))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinals_and_names_are_unique_and_in_table_order() {
        // Each subsystem's services are one block (in table order within
        // it): unique ordinals, not one sorted list.
        let mut ordinals: Vec<u16> = ALL.iter().filter_map(|s| s.ordinal).collect();
        ordinals.sort_unstable();
        assert!(ordinals.windows(2).all(|w| w[0] < w[1]), "an ordinal twice: {ordinals:x?}");
        let mut names: Vec<&str> = ALL.iter().map(|s| s.name).collect();
        names.sort_unstable();
        let before = names.len();
        names.dedup();
        assert_eq!(names.len(), before, "a name twice");
        assert_eq!(by_ordinal(0x14).map(|s| s.name), Some("Call_Priority_VM_Event"));
        // The DDK's table, then the blocks appended since: each in ordinal
        // order.
        let starts =
            ["Allocate_V86_Call_Back", "Nuke_VM", "trace_contention", "Get_Fault_Hook_Addrs", "Cancel_Call_When_Idle"];
        let mut bounds: Vec<usize> = starts.iter().map(|n| ALL.iter().position(|s| s.name == *n).unwrap()).collect();
        bounds.insert(0, 0);
        bounds.push(ALL.len());
        for block in bounds.windows(2) {
            let table: Vec<u16> = ALL[block[0]..block[1]].iter().filter_map(|s| s.ordinal).collect();
            assert!(table.windows(2).all(|w| w[0] < w[1]), "{table:x?}");
        }
    }

    #[test]
    fn the_ordinals_match_the_sdk_constants() {
        use vmm_plugin_api::ddk;
        for (ordinal, svc) in [
            (ddk::GET_VMM_VERSION, GET_VMM_VERSION),
            (ddk::CALL_PRIORITY_VM_EVENT, CALL_PRIORITY_VM_EVENT),
            (ddk::GET_CRIT_SECTION_STATUS, GET_CRIT_SECTION_STATUS),
            (ddk::CALL_WHEN_IDLE, CALL_WHEN_IDLE),
            (ddk::GET_VM_EXEC_TIME, GET_VM_EXEC_TIME),
            (ddk::HEAP_GET_SIZE, HEAP_GET_SIZE),
            (ddk::BEGIN_NEST_EXEC, BEGIN_NEST_EXEC),
            (ddk::RESUME_EXEC, RESUME_EXEC),
            (ddk::SIMULATE_IO, SIMULATE_IO),
            (ddk::INSTALL_IO_HANDLER, INSTALL_IO_HANDLER),
            (ddk::REMOVE_IO_HANDLER, REMOVE_IO_HANDLER),
            (ddk::INSTALL_MULT_IO_HANDLERS, INSTALL_MULT_IO_HANDLERS),
            (ddk::REMOVE_MULT_IO_HANDLERS, REMOVE_MULT_IO_HANDLERS),
            (ddk::SIMULATE_VM_IO, SIMULATE_VM_IO),
            (ddk::ALLOCATE_V86_CALL_BACK, ALLOCATE_V86_CALL_BACK),
            (ddk::CALL_WHEN_VM_RETURNS, CALL_WHEN_VM_RETURNS),
            (ddk::HOOK_V86_INT_CHAIN, HOOK_V86_INT_CHAIN),
            (ddk::SIMULATE_IRET, SIMULATE_IRET),
            (ddk::BUILD_INT_STACK_FRAME, BUILD_INT_STACK_FRAME),
            (ddk::HOOK_V86_FAULT, HOOK_V86_FAULT),
            (ddk::UNHOOK_V86_INT_CHAIN, UNHOOK_V86_INT_CHAIN),
            (ddk::UNHOOK_V86_FAULT, UNHOOK_V86_FAULT),
            (ddk::GET_FAULT_HOOK_ADDRS, GET_FAULT_HOOK_ADDRS),
            (ddk::HOOK_PM_FAULT, HOOK_PM_FAULT),
            (ddk::HOOK_VMM_FAULT, HOOK_VMM_FAULT),
            (ddk::UNHOOK_PM_FAULT, UNHOOK_PM_FAULT),
            (ddk::UNHOOK_VMM_FAULT, UNHOOK_VMM_FAULT),
        ] {
            assert_eq!(svc.ordinal, Some(ordinal), "{}", svc.name);
        }
    }
}
