//! Constants under their DDK names with their DDK values (VMM.INC / VMM.H,
//! SHELL.H, VXDLDR.H, WINDOWS.H of the Windows 3.1 and 95 DDKs).
//!
//! The names keep the DDK's words in Rust's constant case, so
//! `PEF_Wait_For_STI` is [`PEF_WAIT_FOR_STI`] and `Sys_Critical_Init` is
//! [`SYS_CRITICAL_INIT`].

#![allow(missing_docs)] // each group is documented; the names are the DDK's

// ---- device IDs (VMM.H) -----------------------------------------------------
/// A device without a unique ID; may be loaded more than once.
pub const UNDEFINED_DEVICE_ID: u16 = 0x0000;
pub const VMM_DEVICE_ID: u16 = 0x0001;
pub const DEBUG_DEVICE_ID: u16 = 0x0002;
pub const VPICD_DEVICE_ID: u16 = 0x0003;
pub const VDMAD_DEVICE_ID: u16 = 0x0004;
pub const VTD_DEVICE_ID: u16 = 0x0005;
pub const V86MMGR_DEVICE_ID: u16 = 0x0006;
pub const VDD_DEVICE_ID: u16 = 0x000A;
pub const VKD_DEVICE_ID: u16 = 0x000D;
pub const DOSMGR_DEVICE_ID: u16 = 0x0015;
/// SHELL, built into the host as `*SHELL`.
pub const SHELL_DEVICE_ID: u16 = 0x0017;
/// VXDLDR, built into the host as `*VXDLDR`.
pub const VXDLDR_DEVICE_ID: u16 = 0x0027;
pub const VWIN32_DEVICE_ID: u16 = 0x002A;
/// Win95 name-based pseudo IDs start here.
pub const BASEID_FOR_NAMEBASEDVXD: u16 = 0xF000;

// ---- init order (VMM.H; lower initializes earlier) --------------------------
pub const VMM_INIT_ORDER: u32 = 0x0000_0000;
pub const DEBUG_INIT_ORDER: u32 = 0x0000_0000;
pub const APM_INIT_ORDER: u32 = 0x0100_0000;
pub const BIOSHOOK_INIT_ORDER: u32 = 0x0600_0000;
pub const VPROD_INIT_ORDER: u32 = 0x0800_0000;
pub const VPICD_INIT_ORDER: u32 = 0x0C00_0000;
pub const VTD_INIT_ORDER: u32 = 0x1400_0000;
pub const VXDLDR_INIT_ORDER: u32 = 0x1600_0000;
pub const PAGESWAP_INIT_ORDER: u32 = 0x1C00_0000;
pub const PARITY_INIT_ORDER: u32 = 0x2000_0000;
pub const REBOOT_INIT_ORDER: u32 = 0x2400_0000;
pub const VDD_INIT_ORDER: u32 = 0x2800_0000;
pub const VSD_INIT_ORDER: u32 = 0x2C00_0000;
pub const VCD_INIT_ORDER: u32 = 0x3000_0000;
pub const VMD_INIT_ORDER: u32 = 0x3400_0000;
pub const VKD_INIT_ORDER: u32 = 0x3800_0000;
pub const VPD_INIT_ORDER: u32 = 0x3C00_0000;
pub const BLOCKDEV_INIT_ORDER: u32 = 0x4000_0000;
pub const DOSMGR_INIT_ORDER: u32 = 0x5800_0000;
/// A device with no ordering requirement.
pub const UNDEFINED_INIT_ORDER: u32 = 0x8000_0000;
pub const VDMAD_INIT_ORDER: u32 = 0x9000_0000;
pub const V86MMGR_INIT_ORDER: u32 = 0xA000_0000;
/// SHELL initializes after every `UNDEFINED_INIT_ORDER` device.
pub const SHELL_INIT_ORDER: u32 = 0xB000_0000;

// ---- DDB_SDK_Version ---------------------------------------------------------
/// A Windows 3.1 device.
pub const DDK_VERSION_310: u16 = 0x030A;
/// A Windows for Workgroups 3.11 device.
pub const DDK_VERSION_311: u16 = 0x030B;
/// A Windows 95 device: also receives the `xx2` exit messages.
pub const DDK_VERSION_400: u16 = 0x0400;

// ---- real-mode init (VMM.H) ----------------------------------------------------
/// BX bit 0: a device with this ID is already loaded.
pub const DUPLICATE_DEVICE_ID: u32 = 0x0001;
/// BX bit 1: the earlier copy came from the INT 2Fh 1605h list.
pub const DUPLICATE_FROM_INT2F: u32 = 0x0002;
/// BX bit 2: this copy comes from the INT 2Fh 1605h list.
pub const LOADING_FROM_INT2F: u32 = 0x0004;
/// AX: load the device.
pub const DEVICE_LOAD_OK: u32 = 0;
/// AX: skip this device, continue loading Windows.
pub const ABORT_DEVICE_LOAD: u32 = 1;
/// AX: abort the load of Windows.
pub const ABORT_WIN386_LOAD: u32 = 2;
/// ORed into AX: do not display the loader's failure message.
pub const NO_FAIL_MESSAGE: u32 = 0x8000;

// ---- system control messages (VMM.H) ------------------------------------------
pub const SYS_CRITICAL_INIT: u32 = 0x00;
pub const DEVICE_INIT: u32 = 0x01;
pub const INIT_COMPLETE: u32 = 0x02;
pub const SYS_VM_INIT: u32 = 0x03;
pub const SYS_VM_TERMINATE: u32 = 0x04;
pub const SYSTEM_EXIT: u32 = 0x05;
pub const SYS_CRITICAL_EXIT: u32 = 0x06;
pub const CREATE_VM: u32 = 0x07;
pub const VM_CRITICAL_INIT: u32 = 0x08;
pub const VM_INIT: u32 = 0x09;
pub const VM_TERMINATE: u32 = 0x0A;
pub const VM_NOT_EXECUTEABLE: u32 = 0x0B;
pub const DESTROY_VM: u32 = 0x0C;
pub const VM_SUSPEND: u32 = 0x0D;
pub const VM_RESUME: u32 = 0x0E;
pub const SET_DEVICE_FOCUS: u32 = 0x0F;
pub const BEGIN_MESSAGE_MODE: u32 = 0x10;
pub const END_MESSAGE_MODE: u32 = 0x11;
pub const REBOOT_PROCESSOR: u32 = 0x12;
pub const QUERY_DESTROY: u32 = 0x13;
pub const DEBUG_QUERY: u32 = 0x14;
pub const BEGIN_PM_APP: u32 = 0x15;
pub const END_PM_APP: u32 = 0x16;
pub const DEVICE_REBOOT_NOTIFY: u32 = 0x17;
pub const CRIT_REBOOT_NOTIFY: u32 = 0x18;
pub const CLOSE_VM_NOTIFY: u32 = 0x19;
pub const POWER_EVENT: u32 = 0x1A;
pub const SYS_DYNAMIC_DEVICE_INIT: u32 = 0x1B;
pub const SYS_DYNAMIC_DEVICE_EXIT: u32 = 0x1C;
pub const CREATE_THREAD: u32 = 0x1D;
pub const THREAD_INIT: u32 = 0x1E;
pub const TERMINATE_THREAD: u32 = 0x1F;
pub const THREAD_NOT_EXECUTEABLE: u32 = 0x20;
pub const DESTROY_THREAD: u32 = 0x21;
pub const PNP_NEW_DEVNODE: u32 = 0x22;
pub const W32_DEVICEIOCONTROL: u32 = 0x23;
pub const SYS_VM_TERMINATE2: u32 = 0x24;
pub const SYSTEM_EXIT2: u32 = 0x25;
pub const SYS_CRITICAL_EXIT2: u32 = 0x26;
pub const VM_TERMINATE2: u32 = 0x27;
pub const VM_NOT_EXECUTEABLE2: u32 = 0x28;
pub const DESTROY_VM2: u32 = 0x29;
pub const VM_SUSPEND2: u32 = 0x2A;
pub const END_MESSAGE_MODE2: u32 = 0x2B;
pub const END_PM_APP2: u32 = 0x2C;
pub const DEVICE_REBOOT_NOTIFY2: u32 = 0x2D;
pub const CRIT_REBOOT_NOTIFY2: u32 = 0x2E;
pub const CLOSE_VM_NOTIFY2: u32 = 0x2F;
pub const GET_CONTENTION_HANDLER: u32 = 0x30;
pub const KERNEL32_INITIALIZED: u32 = 0x31;
pub const KERNEL32_SHUTDOWN: u32 = 0x32;
pub const CREATE_PROCESS: u32 = 0x33;
pub const DESTROY_PROCESS: u32 = 0x34;
pub const SYS_DYNAMIC_DEVICE_REINIT: u32 = 0x35;
pub const SYS_POWER_DOWN: u32 = 0x36;
/// The highest system control message number.
pub const MAX_SYSTEM_CONTROL: u32 = 0x36;

/// The DDK name of a system control message, for traces and diagnostics.
pub fn control_message_name(message: u32) -> &'static str {
    const NAMES: [&str; 0x37] = [
        "Sys_Critical_Init",
        "Device_Init",
        "Init_Complete",
        "Sys_VM_Init",
        "Sys_VM_Terminate",
        "System_Exit",
        "Sys_Critical_Exit",
        "Create_VM",
        "VM_Critical_Init",
        "VM_Init",
        "VM_Terminate",
        "VM_Not_Executeable",
        "Destroy_VM",
        "VM_Suspend",
        "VM_Resume",
        "Set_Device_Focus",
        "Begin_Message_Mode",
        "End_Message_Mode",
        "Reboot_Processor",
        "Query_Destroy",
        "Debug_Query",
        "Begin_PM_App",
        "End_PM_App",
        "Device_Reboot_Notify",
        "Crit_Reboot_Notify",
        "Close_VM_Notify",
        "Power_Event",
        "Sys_Dynamic_Device_Init",
        "Sys_Dynamic_Device_Exit",
        "Create_Thread",
        "Thread_Init",
        "Terminate_Thread",
        "Thread_Not_Executeable",
        "Destroy_Thread",
        "PNP_New_DevNode",
        "W32_DeviceIoControl",
        "Sys_VM_Terminate2",
        "System_Exit2",
        "Sys_Critical_Exit2",
        "VM_Terminate2",
        "VM_Not_Executeable2",
        "Destroy_VM2",
        "VM_Suspend2",
        "End_Message_Mode2",
        "End_PM_App2",
        "Device_Reboot_Notify2",
        "Crit_Reboot_Notify2",
        "Close_VM_Notify2",
        "Get_Contention_Handler",
        "Kernel32_Initialized",
        "Kernel32_Shutdown",
        "Create_Process",
        "Destroy_Process",
        "Sys_Dynamic_Device_Reinit",
        "Sys_Power_Down",
    ];
    NAMES.get(message as usize).copied().unwrap_or("Private_Control_Message")
}

// ---- VM_Not_Executeable flags (EDX) ----------------------------------------------
pub const VNE_CRASHED: u32 = 0x01;
pub const VNE_NUKED: u32 = 0x02;
pub const VNE_CREATEFAIL: u32 = 0x04;
pub const VNE_CRINITFAIL: u32 = 0x08;
pub const VNE_INITFAIL: u32 = 0x10;
pub const VNE_CLOSED: u32 = 0x20;

// ---- CB_VM_Status bits --------------------------------------------------------
pub const VMSTAT_EXCLUSIVE: u32 = 0x0001;
pub const VMSTAT_BACKGROUND: u32 = 0x0002;
pub const VMSTAT_CREATING: u32 = 0x0004;
pub const VMSTAT_SUSPENDED: u32 = 0x0008;
pub const VMSTAT_NOT_EXECUTEABLE: u32 = 0x0010;
pub const VMSTAT_PM_EXEC: u32 = 0x0020;
pub const VMSTAT_PM_APP: u32 = 0x0040;
pub const VMSTAT_PM_USE32: u32 = 0x0080;
pub const VMSTAT_VXD_EXEC: u32 = 0x0100;
pub const VMSTAT_HIGH_PRI_BACK: u32 = 0x0200;
/// Blocked on a semaphore or the critical section.
pub const VMSTAT_BLOCKED: u32 = 0x0400;
pub const VMSTAT_AWAKENING: u32 = 0x0800;
pub const VMSTAT_PAGEABLEV86: u32 = 0x1000;
/// The VM's V86 interrupts are locked (`Block_Svc_If_Ints_Locked` services
/// interrupts of a blocked VM only then).
pub const VMSTAT_V86INTSLOCKED: u32 = 0x2000;
pub const VMSTAT_IDLE_TIMEOUT: u32 = 0x4000;
pub const VMSTAT_IDLE: u32 = 0x8000;
pub const VMSTAT_CLOSING: u32 = 0x0001_0000;

// ---- flags register ------------------------------------------------------------
/// Carry flag (bit 0).
pub const CF_MASK: u32 = 0x0001;
/// Zero flag (bit 6).
pub const ZF_MASK: u32 = 0x0040;
/// Interrupt-enable flag (bit 9).
pub const IF_MASK: u32 = 0x0200;

// ---- execution priority boosts ----------------------------------------------------
pub const RESERVED_LOW_BOOST: u32 = 0x0000_0001;
pub const CUR_RUN_VM_BOOST: u32 = 0x0000_0004;
pub const LOW_PRI_DEVICE_BOOST: u32 = 0x0000_0010;
pub const HIGH_PRI_DEVICE_BOOST: u32 = 0x0000_1000;
pub const CRITICAL_SECTION_BOOST: u32 = 0x0010_0000;
pub const TIME_CRITICAL_BOOST: u32 = 0x0040_0000;
pub const RESERVED_HIGH_BOOST: u32 = 0x4000_0000;

// ---- Call_Priority_VM_Event flags ---------------------------------------------------
pub const PEF_WAIT_FOR_STI: u32 = 0x0001;
pub const PEF_WAIT_NOT_CRIT: u32 = 0x0002;
pub const PEF_DONT_UNBOOST: u32 = 0x0004;
pub const PEF_ALWAYS_SCHED: u32 = 0x0008;
pub const PEF_TIME_OUT: u32 = 0x0010;
/// 4.0: not while a hardware interrupt is simulated / priority is
/// time-critical.
pub const PEF_WAIT_NOT_HW_INT: u32 = 0x0020;
/// Alias of [`PEF_WAIT_NOT_HW_INT`].
pub const PEF_WAIT_NOT_TIME_CRIT: u32 = 0x0020;
/// 4.0: not inside a nested execution block.
pub const PEF_WAIT_NOT_NESTED_EXEC: u32 = 0x0040;
/// Alias of [`PEF_WAIT_NOT_NESTED_EXEC`].
pub const PEF_WAIT_NOT_PM_LOCKED_STACK: u32 = 0x0040;
/// 4.0: only when the VM is in protected mode.
pub const PEF_WAIT_IN_PM: u32 = 0x0080;
/// 4.0: the handle is a thread (no threads here: rejected).
pub const PEF_THREAD_EVENT: u32 = 0x0100;
/// 4.0: interrupts enabled in the current thread only (no threads here:
/// rejected).
pub const PEF_WAIT_FOR_THREAD_STI: u32 = 0x0200;
/// 4.0: the callback runs at ring 0 only.
pub const PEF_RING0_EVENT: u32 = 0x0400;
/// 4.0, global events only.
pub const PEF_WAIT_CRIT: u32 = 0x0800;
/// 4.0, system VM only.
pub const PEF_WAIT_CRIT_VM: u32 = 0x1000;
/// 4.0: skipped in the first pass over processable events.
pub const PEF_PROCESS_LAST: u32 = 0x2000;
/// The flags that existed in Windows 3.1.
pub const PEF_VALID_31: u32 = 0x001F;
/// Every flag the emulator accepts (3.1 plus the 4.0 flags that make sense
/// without threads).
pub const PEF_VALID: u32 =
    PEF_VALID_31 | PEF_WAIT_NOT_HW_INT | PEF_WAIT_NOT_NESTED_EXEC | PEF_WAIT_IN_PM | PEF_RING0_EVENT | PEF_PROCESS_LAST;

// ---- Block_* flags (Begin_Critical_Section, Wait_Semaphore) ---------------------------
/// While blocked, the VM's events still run (it "services interrupts").
pub const BLOCK_SVC_INTS: u32 = 0x01;
/// As `BLOCK_SVC_INTS`, but only while the VM has `VMSTAT_V86INTSLOCKED`.
pub const BLOCK_SVC_IF_INTS_LOCKED: u32 = 0x02;
/// With one of the two above: events that wait for interrupts to be
/// enabled run even if the blocked VM has them disabled.
pub const BLOCK_ENABLE_INTS: u32 = 0x04;
/// The blocked VM keeps the CPU: only VMs of higher priority run until it
/// wakes. Not allowed for the critical section.
pub const BLOCK_POLL: u32 = 0x08;
/// 4.0: the blocked VM counts as idle (the system VM's `Call_When_Idle`
/// handlers run while it waits).
pub const BLOCK_THREAD_IDLE: u32 = 0x10;
/// 4.0: events run while blocked (used with `BLOCK_SVC_INTS`; the emulator
/// treats it as `BLOCK_SVC_INTS`).
pub const BLOCK_FORCE_SVC_INTS: u32 = 0x20;
/// The `BLOCK_*` flags of Windows 3.1.
pub const BLOCK_VALID_31: u32 = 0x0F;
/// Every `BLOCK_*` flag (4.0).
pub const BLOCK_VALID: u32 = 0x3F;

// ---- heap flags ----------------------------------------------------------------
pub const HEAPZEROINIT: u32 = 0x0000_0001;
pub const HEAPZEROREINIT: u32 = 0x0000_0002;
pub const HEAPNOCOPY: u32 = 0x0000_0004;
pub const HEAPLOCKEDIFDP: u32 = 0x0000_0100;
pub const HEAPSWAP: u32 = 0x0000_0200;
pub const HEAPINIT: u32 = 0x0000_0400;

// ---- Fatal_Error_Handler ----------------------------------------------------------
/// EAX bit 0: hang instead of exiting.
pub const EF_HANG_ON_EXIT: u32 = 0x1;

// ---- VMM services by ordinal (device 1) --------------------------------------------
pub const GET_VMM_VERSION: u16 = 0x00;
pub const GET_CUR_VM_HANDLE: u16 = 0x01;
pub const TEST_CUR_VM_HANDLE: u16 = 0x02;
pub const GET_SYS_VM_HANDLE: u16 = 0x03;
pub const TEST_SYS_VM_HANDLE: u16 = 0x04;
pub const VALIDATE_VM_HANDLE: u16 = 0x05;
pub const GET_VMM_REENTER_COUNT: u16 = 0x06;
pub const SCHEDULE_GLOBAL_EVENT: u16 = 0x0E;
pub const SCHEDULE_VM_EVENT: u16 = 0x0F;
pub const CALL_GLOBAL_EVENT: u16 = 0x10;
pub const CALL_VM_EVENT: u16 = 0x11;
pub const CANCEL_GLOBAL_EVENT: u16 = 0x12;
pub const CANCEL_VM_EVENT: u16 = 0x13;
pub const CALL_PRIORITY_VM_EVENT: u16 = 0x14;
pub const CANCEL_PRIORITY_VM_EVENT: u16 = 0x15;
pub const CALL_WHEN_VM_INTS_ENABLED: u16 = 0x19;
pub const ADJUST_EXEC_PRIORITY: u16 = 0x1E;
/// `Adjust_Execution_Time`.
pub const ADJUST_EXECUTION_TIME: u16 = 0x37;
pub const BEGIN_CRITICAL_SECTION: u16 = 0x1F;
pub const END_CRITICAL_SECTION: u16 = 0x20;
pub const END_CRIT_AND_SUSPEND: u16 = 0x21;
pub const CLAIM_CRITICAL_SECTION: u16 = 0x22;
pub const RELEASE_CRITICAL_SECTION: u16 = 0x23;
pub const CALL_WHEN_NOT_CRITICAL: u16 = 0x24;
pub const CREATE_SEMAPHORE: u16 = 0x25;
pub const DESTROY_SEMAPHORE: u16 = 0x26;
pub const WAIT_SEMAPHORE: u16 = 0x27;
pub const SIGNAL_SEMAPHORE: u16 = 0x28;
pub const GET_CRIT_SECTION_STATUS: u16 = 0x29;
pub const CALL_WHEN_TASK_SWITCHED: u16 = 0x2A;
pub const CALL_WHEN_IDLE: u16 = 0x3A;
pub const GET_NEXT_VM_HANDLE: u16 = 0x3B;
pub const SET_GLOBAL_TIME_OUT: u16 = 0x3C;
pub const SET_VM_TIME_OUT: u16 = 0x3D;
pub const CANCEL_TIME_OUT: u16 = 0x3E;
pub const GET_SYSTEM_TIME: u16 = 0x3F;
pub const GET_VM_EXEC_TIME: u16 = 0x40;
pub const SIMULATE_INT: u16 = 0x46;
pub const SIMULATE_IRET: u16 = 0x47;
pub const SIMULATE_FAR_CALL: u16 = 0x48;
pub const SIMULATE_PUSH: u16 = 0x4D;
pub const SIMULATE_POP: u16 = 0x4E;
pub const HEAP_ALLOCATE: u16 = 0x4F;
pub const HEAP_REALLOCATE: u16 = 0x50;
pub const HEAP_FREE: u16 = 0x51;
pub const HEAP_GET_SIZE: u16 = 0x52;
pub const BEGIN_NEST_V86_EXEC: u16 = 0x82;
pub const BEGIN_NEST_EXEC: u16 = 0x83;
pub const EXEC_INT: u16 = 0x84;
pub const RESUME_EXEC: u16 = 0x85;
pub const END_NEST_EXEC: u16 = 0x86;
pub const SAVE_CLIENT_STATE: u16 = 0x8D;
pub const RESTORE_CLIENT_STATE: u16 = 0x8E;
pub const SYSTEM_CONTROL: u16 = 0x93;
pub const ALLOCATE_DEVICE_CB_AREA: u16 = 0xA7;
pub const GET_PROFILE_DECIMAL_INT: u16 = 0xAB;
pub const GET_PROFILE_HEX_INT: u16 = 0xAF;
pub const GET_PROFILE_BOOLEAN: u16 = 0xB1;
pub const GET_PROFILE_STRING: u16 = 0xB3;
pub const GET_NEXT_PROFILE_STRING: u16 = 0xB4;
pub const FATAL_ERROR_HANDLER: u16 = 0xBE;
pub const FATAL_MEMORY_ERROR: u16 = 0xBF;
pub const TEST_DEBUG_INSTALLED: u16 = 0xC1;
pub const OUT_DEBUG_STRING: u16 = 0xC2;
pub const GET_CRIT_STATUS_NO_BLOCK: u16 = 0xF1;

/// `(device_id << 16) | ordinal`: the dword after `INT 20h` in a `VxDCall`.
pub const fn vxd_service(device_id: u16, ordinal: u16) -> u32 {
    ((device_id as u32) << 16) | ordinal as u32
}

// ---- INT 2Fh multiplex functions (AX) ------------------------------------------------
/// Windows install check / version.
pub const W386_GET_VERSION: u16 = 0x1600;
/// Startup broadcast.
pub const W386_STARTUP: u16 = 0x1605;
/// Exit broadcast.
pub const W386_EXIT: u16 = 0x1606;
/// Device call-out.
pub const W386_DEVICE_BROADCAST: u16 = 0x1607;
/// Init complete.
pub const W386_INIT_COMPLETE: u16 = 0x1608;
/// Begin exit.
pub const W386_BEGIN_EXIT: u16 = 0x1609;
/// Release the current VM's time slice.
pub const W386_RELEASE_TIME_SLICE: u16 = 0x1680;
/// Begin critical section.
pub const W386_BEGIN_CRITICAL: u16 = 0x1681;
/// End critical section.
pub const W386_END_CRITICAL: u16 = 0x1682;
/// Get the current VM's ID.
pub const W386_GET_CUR_VM_ID: u16 = 0x1683;
/// Get a device's API entry point (BX = device ID).
pub const W386_GET_DEVICE_API: u16 = 0x1684;
/// Switch VMs and call back.
pub const W386_SWITCH_AND_CALL: u16 = 0x1685;

// ---- Windows messages (WINDOWS.H) ---------------------------------------------------------
pub const WM_NULL: u16 = 0x0000;
pub const WM_CREATE: u16 = 0x0001;
pub const WM_DESTROY: u16 = 0x0002;
pub const WM_CLOSE: u16 = 0x0010;
pub const WM_QUIT: u16 = 0x0012;
pub const WM_COMMAND: u16 = 0x0111;
pub const WM_TIMER: u16 = 0x0113;
/// The first message number private to an application.
pub const WM_USER: u16 = 0x0400;
/// `HWND_BROADCAST`: every top-level window.
pub const HWND_BROADCAST: u16 = 0xFFFF;

// ---- message boxes (WINDOWS.H / SHELL.H) ------------------------------------------------------
pub const MB_OK: u32 = 0x0000;
pub const MB_OKCANCEL: u32 = 0x0001;
pub const MB_ABORTRETRYIGNORE: u32 = 0x0002;
pub const MB_YESNOCANCEL: u32 = 0x0003;
pub const MB_YESNO: u32 = 0x0004;
pub const MB_RETRYCANCEL: u32 = 0x0005;
pub const MB_ICONHAND: u32 = 0x0010;
pub const MB_ICONEXCLAMATION: u32 = 0x0030;
pub const MB_ICONASTERISK: u32 = 0x0040;
pub const MB_DEFBUTTON2: u32 = 0x0100;
pub const MB_DEFBUTTON3: u32 = 0x0200;
pub const MB_SYSTEMMODAL: u32 = 0x1000;
pub const MB_NOFOCUS: u32 = 0x8000;
pub const MB_APPYTIME: u32 = 0x1000_0000;
pub const MB_HANGSYS: u32 = 0x2000_0000;
pub const MB_NOWINDOW: u32 = 0x4000_0000;
pub const MB_ASAP: u32 = 0x8000_0000;
pub const IDOK: u32 = 1;
pub const IDCANCEL: u32 = 2;
pub const IDABORT: u32 = 3;
pub const IDRETRY: u32 = 4;
pub const IDIGNORE: u32 = 5;
pub const IDYES: u32 = 6;
pub const IDNO: u32 = 7;

// ---- INT 2Fh 1685h (switch VMs and call back) ---------------------------------------------------
/// CX bit 0: wait until the VM has interrupts enabled.
pub const SVC_WAIT_FOR_STI: u16 = 0x0001;
/// CX bit 1: wait until the critical section is free.
pub const SVC_WAIT_NOT_CRIT: u16 = 0x0002;

// ---- SHELL services by ordinal (SHELL.H, device 0x17; `_SHELL_PostMessage` is
// SHELL_POST_MESSAGE) ---------------------------------------------------------------------------
pub const SHELL_GET_VERSION: u16 = 0;
pub const SHELL_RESOLVE_CONTENTION: u16 = 1;
pub const SHELL_EVENT: u16 = 2;
pub const SHELL_SYSMODAL_MESSAGE: u16 = 3;
pub const SHELL_MESSAGE: u16 = 4;
/// 3.1 and later.
pub const SHELL_GET_VM_INFO: u16 = 5;
/// 4.0 and later, like every ordinal below.
pub const SHELL_POST_MESSAGE: u16 = 6;
pub const SHELL_SHELL_EXECUTE: u16 = 7;
pub const SHELL_POST_SHELL_MESSAGE: u16 = 8;
pub const SHELL_DISPATCH_RING0_APPY_EVENTS: u16 = 9;
pub const SHELL_HOOK_PROPERTIES: u16 = 10;
pub const SHELL_UNHOOK_PROPERTIES: u16 = 11;
pub const SHELL_UPDATE_USER_ACTIVITY: u16 = 12;
pub const SHELL_QUERY_APPY_TIME_AVAILABLE: u16 = 13;
pub const SHELL_CALL_AT_APPY_TIME: u16 = 14;
pub const SHELL_CANCEL_APPY_TIME_EVENT: u16 = 15;
pub const SHELL_BROADCAST_SYSTEM_MESSAGE: u16 = 16;
pub const SHELL_HOOK_SYSTEM_BROADCAST: u16 = 17;
pub const SHELL_UNHOOK_SYSTEM_BROADCAST: u16 = 18;
pub const SHELL_LOCAL_ALLOC_EX: u16 = 19;
pub const SHELL_LOCAL_FREE: u16 = 20;
pub const SHELL_LOAD_LIBRARY: u16 = 21;
pub const SHELL_FREE_LIBRARY: u16 = 22;
pub const SHELL_GET_PROC_ADDRESS: u16 = 23;
pub const SHELL_CALL_DLL: u16 = 24;
pub const SHELL_SUGGEST_SINGLE_MSDOS_MODE: u16 = 25;
pub const SHELL_CHECK_HOTKEY_ALLOWED: u16 = 26;
pub const SHELL_GET_DOS_APP_INFO: u16 = 27;

// ---- message boxes: more SHELL.H flags ----------------------------------------------------------
pub const MB_DEFBUTTON1: u32 = 0x0000;
pub const MB_APPLMODAL: u32 = 0x0000;

// ---- SHELL_GetVMInfo (EAX bits) ----------------------------------------------------------------
pub const SGVMI_WINDOWED: u32 = 0x0000_0004;
pub const SGVMI_ALTTABDIS: u32 = 0x0000_0020;
pub const SGVMI_ALTESCDIS: u32 = 0x0000_0040;
pub const SGVMI_ALTSPACEDIS: u32 = 0x0000_0080;
pub const SGVMI_ALTENTERDIS: u32 = 0x0000_0100;
pub const SGVMI_ALTPRTSCDIS: u32 = 0x0000_0200;
pub const SGVMI_PRTSCDIS: u32 = 0x0000_0400;
pub const SGVMI_CTRLESCDIS: u32 = 0x0000_0800;
pub const SGVMI_POLLING: u32 = 0x0000_1000;
pub const SGVMI_NOHMA: u32 = 0x0000_2000;
pub const SGVMI_HASHOTKEY: u32 = 0x0000_4000;
pub const SGVMI_EMS_LOCK: u32 = 0x0000_8000;
pub const SGVMI_XMS_LOCK: u32 = 0x0001_0000;
pub const SGVMI_FASTPASTE: u32 = 0x0002_0000;
pub const SGVMI_V86_LOCK: u32 = 0x0004_0000;
pub const SGVMI_CLSEXIT: u32 = 0x4000_0000;

// ---- _SHELL_PostMessage: scheduling bits in uMsg's high word -------------------------------------
/// Post without waiting for the critical section to be free.
pub const SPM_UM_DONOTWAITFORCRIT: u32 = 0x0002_0000;
/// Never post inside the call: always schedule the posting event.
pub const SPM_UM_ALWAYSSCHEDULE: u32 = 0x0008_0000;

// ---- appy time ---------------------------------------------------------------------------------
/// `_SHELL_QueryAppyTimeAvailable`: the appy-time server (MSGSRV32) exists.
pub const QAAFL_APPYAVAIL: u32 = 0x0000_0001;
/// `_SHELL_QueryAppyTimeAvailable`: it is appy time now.
pub const QAAFL_APPYNOW: u32 = 0x0000_0002;
/// `_SHELL_CallAtAppyTime`: a ring-0 event that does not need GUI services.
pub const CAAFL_RING0: u32 = 0x0000_0001;
/// `_SHELL_CallAtAppyTime`: time the event out after `dwTimeout` ms; in the
/// callback's flags, the time-out expired and it is *not* appy time.
pub const CAAFL_TIMEOUT: u32 = 0x0000_0002;

// ---- _SHELL_LocalAllocEx -------------------------------------------------------------------------
pub const LMEM_FIXED: u32 = 0x0000;
pub const LMEM_MOVEABLE: u32 = 0x0002;
pub const LMEM_ZEROINIT: u32 = 0x0040;
pub const LMEM_DISCARDABLE: u32 = 0x0F00;
pub const LPTR: u32 = LMEM_FIXED | LMEM_ZEROINIT;
/// `lpvBuf` is a NUL-terminated string; the block is its length plus one.
pub const LMEM_STRING: u32 = 0x0001_0000;
/// Convert the copied string from the OEM to the ANSI character set.
pub const LMEM_OEM2ANSI: u32 = 0x0002_0000;

// ---- _SHELL_BroadcastSystemMessage (WINUSER.H, DBT.H) ---------------------------------------------
pub const BSF_QUERY: u32 = 0x0000_0001;
pub const BSF_IGNORECURRENTTASK: u32 = 0x0000_0002;
pub const BSF_FLUSHDISK: u32 = 0x0000_0004;
pub const BSF_NOHANG: u32 = 0x0000_0008;
pub const BSF_POSTMESSAGE: u32 = 0x0000_0010;
pub const BSF_FORCEIFHUNG: u32 = 0x0000_0020;
pub const BSF_NOTIMEOUTIFNOTHUNG: u32 = 0x0000_0040;
pub const BSF_MSGSRV32ISOK: u32 = 0x8000_0000;
pub const BSM_ALLCOMPONENTS: u32 = 0x0000_0000;
pub const BSM_VXDS: u32 = 0x0000_0001;
pub const BSM_NETDRIVER: u32 = 0x0000_0002;
pub const BSM_INSTALLABLEDRIVERS: u32 = 0x0000_0004;
pub const BSM_APPLICATIONS: u32 = 0x0000_0008;
/// Returned when some recipient answered a `BSF_QUERY` broadcast with 0.
pub const BSM_ERROR_SOMEONE_FAILED: u32 = 0;
/// Returned when every recipient got the message (and said yes).
pub const BSM_ERROR_SUCCESS: u32 = 1;
/// Returned when the message could not be broadcast (-1).
pub const BSM_ERROR_OUT_OF_MEMORY: u32 = 0xFFFF_FFFF;

// ---- _SHELL_HookSystemBroadcast call orders (lower runs first) -------------------------------------
pub const SBH_CALL_ORDER_DEFAULT: u32 = 0;
pub const SBH_CALL_ORDER_REGISTRY: u32 = 0x3000_0000;
pub const SBH_CALL_ORDER_CONFIGMG: u32 = 0x4000_0000;

// ---- SHEXPACKET (SHELL.H): byte offsets of the 32-byte header -------------------------------------
pub const SHEX_DWTOTALSIZE: usize = 0x00;
pub const SHEX_DWSIZE: usize = 0x04;
pub const SHEX_IBOP: usize = 0x08;
pub const SHEX_IBFILE: usize = 0x0C;
pub const SHEX_IBPARAMS: usize = 0x10;
pub const SHEX_IBDIR: usize = 0x14;
/// `dwReserved` in SHELL.H (must be zero); `shex_ibEnv` in the DDK text.
pub const SHEX_DWRESERVED: usize = 0x18;
pub const SHEX_NCMDSHOW: usize = 0x1C;
/// `sizeof(SHEXPACKET)`: the header; the baggage strings follow it.
pub const SHEXPACKET_SIZE: u32 = 0x20;

// ---- ShellExecute / WinExec results at or below 32 (SHELLAPI.H) -------------------------------------
pub const SE_ERR_FNF: u32 = 2;
pub const SE_ERR_PNF: u32 = 3;
pub const SE_ERR_ACCESSDENIED: u32 = 5;
pub const SE_ERR_OOM: u32 = 8;
/// `ERROR_BAD_FORMAT` (WINERROR.H; WinExec's "invalid .EXE file"): not a
/// program that can be started.
pub const ERROR_BAD_FORMAT: u32 = 11;
pub const SE_ERR_SHARE: u32 = 26;
pub const SE_ERR_ASSOCINCOMPLETE: u32 = 27;
pub const SE_ERR_DDETIMEOUT: u32 = 28;
pub const SE_ERR_DDEFAIL: u32 = 29;
pub const SE_ERR_DDEBUSY: u32 = 30;
pub const SE_ERR_NOASSOC: u32 = 31;
pub const SE_ERR_DLLNOTFOUND: u32 = 32;

// ---- ShowWindow (WINDOWS.H) -------------------------------------------------------------------------
pub const SW_HIDE: u32 = 0;
pub const SW_SHOWNORMAL: u32 = 1;
pub const SW_SHOWMINIMIZED: u32 = 2;
pub const SW_SHOWMAXIMIZED: u32 = 3;
pub const SW_SHOWNOACTIVATE: u32 = 4;
pub const SW_SHOW: u32 = 5;
pub const SW_MINIMIZE: u32 = 6;
pub const SW_SHOWMINNOACTIVE: u32 = 7;
pub const SW_SHOWNA: u32 = 8;
pub const SW_RESTORE: u32 = 9;

// ---- VXDLDR (VXDLDR.H, device 0x27) -------------------------------------------------------------------
pub const VXDLDR_GET_VERSION: u16 = 0;
pub const VXDLDR_LOAD_DEVICE: u16 = 1;
pub const VXDLDR_UNLOAD_DEVICE: u16 = 2;
pub const VXDLDR_DEV_INIT_SUCCEEDED: u16 = 3;
pub const VXDLDR_DEV_INIT_FAILED: u16 = 4;
pub const VXDLDR_GET_DEVICE_LIST: u16 = 5;
pub const VXDLDR_UNLOAD_ME: u16 = 6;
/// `VXDLDR_LoadDevice` flag: send `Sys_Dynamic_Device_Init` (else the
/// caller does, and reports with `VXDLDR_DevInitSucceeded` / `Failed`).
pub const VXDLDR_INIT_DEVICE: u32 = 0x1;
pub const VXDLDR_ERR_OUT_OF_MEMORY: u32 = 1;
pub const VXDLDR_ERR_IN_DOS: u32 = 2;
pub const VXDLDR_ERR_FILE_OPEN_ERROR: u32 = 3;
pub const VXDLDR_ERR_FILE_READ: u32 = 4;
pub const VXDLDR_ERR_DUPLICATE_DEVICE: u32 = 5;
pub const VXDLDR_ERR_BAD_DEVICE_FILE: u32 = 6;
pub const VXDLDR_ERR_DEVICE_REFUSED: u32 = 7;
pub const VXDLDR_ERR_NO_SUCH_DEVICE: u32 = 8;
pub const VXDLDR_ERR_DEVICE_UNLOADABLE: u32 = 9;
pub const VXDLDR_ERR_ALLOC_V86_AREA: u32 = 10;
pub const VXDLDR_ERR_BAD_API_FUNCTION: u32 = 11;
/// VXDLDR's ring-3 API (INT 2Fh 1684h BX=0027h), function in AX.
pub const VXDLDR_API_GET_VERSION: u16 = 0;
pub const VXDLDR_API_LOAD_DEVICE: u16 = 1;
pub const VXDLDR_API_UNLOAD_DEVICE: u16 = 2;

/// The DDK name of a `VXDLDR_ERR_*` code.
pub fn vxdldr_error_name(code: u32) -> &'static str {
    match code {
        VXDLDR_ERR_OUT_OF_MEMORY => "VXDLDR_ERR_OUT_OF_MEMORY",
        VXDLDR_ERR_IN_DOS => "VXDLDR_ERR_IN_DOS",
        VXDLDR_ERR_FILE_OPEN_ERROR => "VXDLDR_ERR_FILE_OPEN_ERROR",
        VXDLDR_ERR_FILE_READ => "VXDLDR_ERR_FILE_READ",
        VXDLDR_ERR_DUPLICATE_DEVICE => "VXDLDR_ERR_DUPLICATE_DEVICE",
        VXDLDR_ERR_BAD_DEVICE_FILE => "VXDLDR_ERR_BAD_DEVICE_FILE",
        VXDLDR_ERR_DEVICE_REFUSED => "VXDLDR_ERR_DEVICE_REFUSED",
        VXDLDR_ERR_NO_SUCH_DEVICE => "VXDLDR_ERR_NO_SUCH_DEVICE",
        VXDLDR_ERR_DEVICE_UNLOADABLE => "VXDLDR_ERR_DEVICE_UNLOADABLE",
        VXDLDR_ERR_ALLOC_V86_AREA => "VXDLDR_ERR_ALLOC_V86_AREA",
        VXDLDR_ERR_BAD_API_FUNCTION => "VXDLDR_ERR_BAD_API_FUNCTION",
        _ => "VXDLDR_ERR_UNKNOWN",
    }
}

// ---- I/O port trapping: IOType (ECX of an I/O handler) --------------------------------------

/// `IN AL, DX`.
pub const BYTE_INPUT: u32 = 0x000;
/// `OUT DX, AL`.
pub const BYTE_OUTPUT: u32 = 0x004;
/// `IN AX, DX`.
pub const WORD_INPUT: u32 = 0x008;
/// `OUT DX, AX`.
pub const WORD_OUTPUT: u32 = 0x00C;
/// `IN EAX, DX`.
pub const DWORD_INPUT: u32 = 0x010;
/// `OUT DX, EAX`.
pub const DWORD_OUTPUT: u32 = 0x014;
/// The output bit of an IOType.
pub const OUTPUT: u32 = 0x004;
/// The word bit of an IOType.
pub const WORD_IO: u32 = 0x008;
/// The dword bit of an IOType.
pub const DWORD_IO: u32 = 0x010;
/// `INS` / `OUTS`: the data is in VM memory.
pub const STRING_IO: u32 = 0x020;
/// A `REP` prefix.
pub const REP_IO: u32 = 0x040;
/// 32-bit addresses and count.
pub const ADDR_32_IO: u32 = 0x080;
/// The VM's direction flag is set.
pub const REVERSE_IO: u32 = 0x100;
/// `Simulate_IO`.
pub const SIMULATE_IO: u16 = 0x94;
/// `Install_IO_Handler`.
pub const INSTALL_IO_HANDLER: u16 = 0x96;
/// `Remove_IO_Handler` (4.0).
pub const REMOVE_IO_HANDLER: u16 = 0x116;
/// `Install_Mult_IO_Handlers`.
pub const INSTALL_MULT_IO_HANDLERS: u16 = 0x95;
/// `Remove_Mult_IO_Handlers` (4.0).
pub const REMOVE_MULT_IO_HANDLERS: u16 = 0x117;
/// `_Simulate_VM_IO` (4.0).
pub const SIMULATE_VM_IO: u16 = 0x130;

// ---- VPICD (device 3): service ordinals, descriptor, options, status (VPICD.INC / VPICD.H) ----

/// `VPICD_Get_Version`.
pub const VPICD_GET_VERSION: u16 = 0x00;
/// `VPICD_Virtualize_IRQ`.
pub const VPICD_VIRTUALIZE_IRQ: u16 = 0x01;
/// `VPICD_Set_Int_Request`.
pub const VPICD_SET_INT_REQUEST: u16 = 0x02;
/// `VPICD_Clear_Int_Request`.
pub const VPICD_CLEAR_INT_REQUEST: u16 = 0x03;
/// `VPICD_Phys_EOI`.
pub const VPICD_PHYS_EOI: u16 = 0x04;
/// `VPICD_Get_Complete_Status`.
pub const VPICD_GET_COMPLETE_STATUS: u16 = 0x05;
/// `VPICD_Get_Status`.
pub const VPICD_GET_STATUS: u16 = 0x06;
/// `VPICD_Test_Phys_Request`.
pub const VPICD_TEST_PHYS_REQUEST: u16 = 0x07;
/// `VPICD_Physically_Mask`.
pub const VPICD_PHYSICALLY_MASK: u16 = 0x08;
/// `VPICD_Physically_Unmask`.
pub const VPICD_PHYSICALLY_UNMASK: u16 = 0x09;
/// `VPICD_Set_Auto_Masking`.
pub const VPICD_SET_AUTO_MASKING: u16 = 0x0A;
/// `VPICD_Get_IRQ_Complete_Status`.
pub const VPICD_GET_IRQ_COMPLETE_STATUS: u16 = 0x0B;
/// `VPICD_Convert_Handle_To_IRQ`.
pub const VPICD_CONVERT_HANDLE_TO_IRQ: u16 = 0x0C;
/// `VPICD_Convert_IRQ_To_Int`.
pub const VPICD_CONVERT_IRQ_TO_INT: u16 = 0x0D;
/// `VPICD_Convert_Int_To_IRQ`.
pub const VPICD_CONVERT_INT_TO_IRQ: u16 = 0x0E;
/// `VPICD_Call_When_Hw_Int`.
pub const VPICD_CALL_WHEN_HW_INT: u16 = 0x0F;
/// `VPICD_Force_Default_Owner` (3.1).
pub const VPICD_FORCE_DEFAULT_OWNER: u16 = 0x10;
/// `VPICD_Force_Default_Behavior` (3.1).
pub const VPICD_FORCE_DEFAULT_BEHAVIOR: u16 = 0x11;
/// `VPICD_Auto_Mask_At_Inst_Swap` (3.1).
pub const VPICD_AUTO_MASK_AT_INST_SWAP: u16 = 0x12;
/// `VPICD_Begin_Inst_Page_Swap` (3.1).
pub const VPICD_BEGIN_INST_PAGE_SWAP: u16 = 0x13;
/// `VPICD_End_Inst_Page_Swap` (3.1).
pub const VPICD_END_INST_PAGE_SWAP: u16 = 0x14;
/// `VPICD_Virtual_EOI` (4.0).
pub const VPICD_VIRTUAL_EOI: u16 = 0x15;
/// `VPICD_Get_Virtualization_Count` (4.0).
pub const VPICD_GET_VIRTUALIZATION_COUNT: u16 = 0x16;
/// `VPICD_Post_Sys_Critical_Init` (4.0, VPICD's own).
pub const VPICD_POST_SYS_CRITICAL_INIT: u16 = 0x17;
/// `VPICD_VM_SlavePIC_Mask_Change` (4.0, VPICD's own).
pub const VPICD_VM_SLAVEPIC_MASK_CHANGE: u16 = 0x18;

/// `VPICD_IRQ_Descriptor` offsets: `VID_IRQ_Number` (word).
pub const VID_IRQ_NUMBER: usize = 0x00;
/// `VID_Options` (word).
pub const VID_OPTIONS: usize = 0x02;
/// `VID_Hw_Int_Proc`.
pub const VID_HW_INT_PROC: usize = 0x04;
/// `VID_Virt_Int_Proc`.
pub const VID_VIRT_INT_PROC: usize = 0x08;
/// `VID_EOI_Proc`.
pub const VID_EOI_PROC: usize = 0x0C;
/// `VID_Mask_Change_Proc`.
pub const VID_MASK_CHANGE_PROC: usize = 0x10;
/// `VID_IRET_Proc`.
pub const VID_IRET_PROC: usize = 0x14;
/// `VID_IRET_Time_Out` (ms; 0 = none).
pub const VID_IRET_TIME_OUT: usize = 0x18;
/// `VID_Hw_Int_Ref` (4.0).
pub const VID_HW_INT_REF: usize = 0x1C;
/// The descriptor's size under Windows 3.x.
pub const VPICD_IRQ_DESCRIPTOR_SIZE_31: usize = 0x1C;
/// The descriptor's size under Windows 95.
pub const VPICD_IRQ_DESCRIPTOR_SIZE: usize = 0x20;
/// The default `VID_IRET_Time_Out`: 500 ms.
pub const VPICD_DEFAULT_IRET_TIME_OUT: u32 = 500;

/// `VPICD_Opt_Read_Hw_IRR`.
pub const VPICD_OPT_READ_HW_IRR: u16 = 0x01;
/// `VPICD_Opt_Can_Share`: the IRQ may be shared; `Hw_Int_Proc` may answer
/// carry set, "not mine".
pub const VPICD_OPT_CAN_SHARE: u16 = 0x02;
/// `VPICD_Opt_Ref_Data` (4.0): `VID_Hw_Int_Ref` reaches `Hw_Int_Proc` in EDX.
pub const VPICD_OPT_REF_DATA: u16 = 0x04;
/// `VPICD_Opt_Virt_Int_Reject` (4.0): `Virt_Int_Proc` may refuse with carry set.
pub const VPICD_OPT_VIRT_INT_REJECT: u16 = 0x10;
/// `VPICD_Opt_Share_PMode_Only` (4.0, debug builds only).
pub const VPICD_OPT_SHARE_PMODE_ONLY: u16 = 0x20;
/// The 3.x options.
pub const VPICD_OPT_ALL_31: u16 = 0x03;
/// `VPICD_Opt_All` (4.0).
pub const VPICD_OPT_ALL: u16 = 0x3F;

/// `VPICD_Stat_IRET_Pending`.
pub const VPICD_STAT_IRET_PENDING: u32 = 0x01;
/// `VPICD_Stat_In_Service`.
pub const VPICD_STAT_IN_SERVICE: u32 = 0x02;
/// `VPICD_Stat_Phys_Mask`.
pub const VPICD_STAT_PHYS_MASK: u32 = 0x04;
/// `VPICD_Stat_Phys_In_Serv`.
pub const VPICD_STAT_PHYS_IN_SERV: u32 = 0x08;
/// `VPICD_Stat_Virt_Mask`.
pub const VPICD_STAT_VIRT_MASK: u32 = 0x10;
/// `VPICD_Stat_Virt_Req`.
pub const VPICD_STAT_VIRT_REQ: u32 = 0x20;
/// `VPICD_Stat_Phys_Req`.
pub const VPICD_STAT_PHYS_REQ: u32 = 0x40;
/// `VPICD_Stat_Virt_Dev_Req`.
pub const VPICD_STAT_VIRT_DEV_REQ: u32 = 0x80;
/// `VPICD_Stat_Global` (4.0).
pub const VPICD_STAT_GLOBAL: u32 = 0x100;
/// `VPICD_Stat_Owned_By_VM` (4.0).
pub const VPICD_STAT_OWNED_BY_VM: u32 = 0x200;

// ---- Service hooks, control messages, Windows 95 event additions, VM lifetime ----------------

/// `Nuke_VM`.
pub const NUKE_VM: u16 = 0x2E;
/// `Crash_Cur_VM`.
pub const CRASH_CUR_VM: u16 = 0x2F;
/// `Hook_Device_Service`.
pub const HOOK_DEVICE_SERVICE: u16 = 0x90;
/// `Unhook_Device_Service` (4.0).
pub const UNHOOK_DEVICE_SERVICE: u16 = 0x11C;
/// `Cancel_Call_When_Not_Critical` (4.0).
pub const CANCEL_CALL_WHEN_NOT_CRITICAL: u16 = 0x12A;
/// `Directed_Sys_Control` (4.0).
pub const DIRECTED_SYS_CONTROL: u16 = 0x147;
/// `Call_Restricted_Event` (4.0).
pub const CALL_RESTRICTED_EVENT: u16 = 0x15A;
/// `Cancel_Restricted_Event` (4.0).
pub const CANCEL_RESTRICTED_EVENT: u16 = 0x15B;
/// Private control messages for VxD-to-VxD use (`Directed_Sys_Control`):
/// 0x70000000 to 0x7FFFFFFF.
pub const BEGIN_RESERVED_PRIVATE_SYSTEM_CONTROL: u32 = 0x7000_0000;
/// The last private control message.
pub const END_RESERVED_PRIVATE_SYSTEM_CONTROL: u32 = 0x7FFF_FFFF;
/// INT 2Fh AX=1689h: KERNEL's idle call (the system VM's Windows is idle).
pub const W386_KERNEL_IDLE: u16 = 0x1689;

// ---- interrupts inside VMs and call-backs (VMM ordinals) ----
/// `Allocate_V86_Call_Back`.
pub const ALLOCATE_V86_CALL_BACK: u16 = 0x0B;
/// `Allocate_PM_Call_Back`.
pub const ALLOCATE_PM_CALL_BACK: u16 = 0x0C;
/// `Call_When_VM_Returns`.
pub const CALL_WHEN_VM_RETURNS: u16 = 0x0D;
/// `Hook_V86_Int_Chain`.
pub const HOOK_V86_INT_CHAIN: u16 = 0x41;
/// `Get_V86_Int_Vector`.
pub const GET_V86_INT_VECTOR: u16 = 0x42;
/// `Set_V86_Int_Vector`.
pub const SET_V86_INT_VECTOR: u16 = 0x43;
/// `Get_PM_Int_Vector`.
pub const GET_PM_INT_VECTOR: u16 = 0x44;
/// `Set_PM_Int_Vector`.
pub const SET_PM_INT_VECTOR: u16 = 0x45;
/// `Simulate_Far_Jmp`.
pub const SIMULATE_FAR_JMP: u16 = 0x49;
/// `Simulate_Far_Ret`.
pub const SIMULATE_FAR_RET: u16 = 0x4A;
/// `Simulate_Far_Ret_N`.
pub const SIMULATE_FAR_RET_N: u16 = 0x4B;
/// `Build_Int_Stack_Frame`.
pub const BUILD_INT_STACK_FRAME: u16 = 0x4C;
/// `Hook_V86_Fault`.
pub const HOOK_V86_FAULT: u16 = 0x7F;
/// `Unhook_V86_Int_Chain` (4.0).
pub const UNHOOK_V86_INT_CHAIN: u16 = 0x118;
/// `Unhook_V86_Fault` (4.0).
pub const UNHOOK_V86_FAULT: u16 = 0x119;
/// `Get_Fault_Hook_Addrs`.
pub const GET_FAULT_HOOK_ADDRS: u16 = 0x7E;
/// `Hook_PM_Fault`.
pub const HOOK_PM_FAULT: u16 = 0x80;
/// `Hook_VMM_Fault`.
pub const HOOK_VMM_FAULT: u16 = 0x81;
/// `Unhook_PM_Fault` (4.0).
pub const UNHOOK_PM_FAULT: u16 = 0x11A;
/// `Unhook_VMM_Fault` (4.0).
pub const UNHOOK_VMM_FAULT: u16 = 0x11B;
