//! The raw, layout-checked ABI between the `vmm` host and its plugins.
//!
//! Everything here is `#[repr(C)]` and derives [`StableAbi`], so the host
//! checks the whole graph of types reachable from [`PluginRoot`] when it loads
//! a plugin. Plugin authors normally never touch this module: the SDK
//! ([`crate::device`], [`crate::ring3`], [`crate::vmm`]) builds these values and
//! wraps every entry point in `catch_unwind`.
//!
//! **Compatibility rule.** [`PluginRoot`], [`InstanceVtable`] and
//! [`HostServices`] are prefix types: fields are only ever appended after the
//! field marked `last_prefix_field`. A plugin built against a newer
//! `vmm-plugin-api` 0.x loads into an older host of the same minor version
//! line; a plugin older than the host's minor version is refused by the
//! version check. Services appended to [`HostServices`] after a plugin was
//! built are simply invisible to it; services the plugin knows but an older
//! host lacks show up as `None` through [`HostServices_Ref`] accessors, which
//! the SDK reports as [`VmmError::NOT_AVAILABLE`].

#![allow(non_camel_case_types)]

use core::ffi::c_void;

use abi_stable::{
    StableAbi, declare_root_module_statics,
    library::RootModule,
    package_version_strings,
    sabi_types::VersionStrings,
    std_types::{ROption, RResult, RSlice, RSliceMut, RStr, RString, RVec},
};

/// The kind of module a plugin file contains.
#[repr(u8)]
#[derive(StableAbi, Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum ModuleKind {
    /// A virtual device (VxD): ring-0 code the VMM calls.
    Vxd = 0,
    /// A Windows dynamic-link library, loaded into the system VM.
    WinDll = 1,
    /// A Windows application: a task in the system VM.
    WinApp = 2,
    /// A DOS program: runs in a DOS VM.
    DosProgram = 3,
}

/// Static description of a virtual device: the fields of its DDB
/// (`VxD_Desc_Block`) that the device itself declares.
#[repr(C)]
#[derive(StableAbi, Copy, Clone, Debug)]
pub struct DeviceDescriptor {
    /// `DDB_Name`: 1 to 8 characters.
    pub name: RStr<'static>,
    /// `DDB_Dev_Major_Version`.
    pub major_version: u8,
    /// `DDB_Dev_Minor_Version`.
    pub minor_version: u8,
    /// `DDB_Req_Device_Number`, or `UNDEFINED_DEVICE_ID` (0).
    pub device_id: u16,
    /// `DDB_Init_Order`, for example `UNDEFINED_INIT_ORDER`.
    pub init_order: u32,
    /// Whether the device has a V86-mode API procedure.
    pub has_v86_api: bool,
    /// Whether the device has a protected-mode API procedure.
    pub has_pm_api: bool,
    /// The service table, by ordinal. Ordinal 0 must be `<Name>_Get_Version`.
    pub services: RSlice<'static, RStr<'static>>,
    /// `DDB_SDK_Version`: `DDK_VERSION_310` (0x030A) or `DDK_VERSION_400`
    /// (0x0400). 4.0 devices also receive the reverse-order `xx2` messages.
    pub sdk_version: u16,
    /// Whether the device may be loaded dynamically (it handles
    /// `Sys_Dynamic_Device_Init` / `Sys_Dynamic_Device_Exit`).
    pub dynamic: bool,
}

/// How a ring-3 segment is allocated (the `SEGMENTS` line of a `.DEF` file).
#[repr(u8)]
#[derive(StableAbi, Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum SegmentKind {
    /// Always present and page-locked in a DLL: callable from event time.
    Fixed = 0,
    /// May move in linear memory.
    Moveable = 1,
    /// May be thrown away and reloaded from the file.
    Discardable = 2,
}

/// One segment of a ring-3 module.
#[repr(C)]
#[derive(StableAbi, Copy, Clone, Debug)]
pub struct SegmentDescriptor {
    /// Segment name, for example `_TEXT` or `CALLBACK_TEXT`.
    pub name: RStr<'static>,
    /// FIXED, MOVEABLE or DISCARDABLE.
    pub kind: SegmentKind,
}

/// One exported procedure of a ring-3 module.
#[repr(C)]
#[derive(StableAbi, Copy, Clone, Debug)]
pub struct ExportDescriptor {
    /// Export name (case-insensitive for `GetProcAddress`).
    pub name: RStr<'static>,
    /// Export ordinal (non-zero).
    pub ordinal: u16,
    /// Index of the segment that holds the code.
    pub segment: u16,
    /// Bytes of PASCAL arguments the procedure pops on return (`RETF n`).
    pub arg_bytes: u16,
}

/// Static description of a ring-3 module (DLL, Windows application or DOS
/// program).
#[repr(C)]
#[derive(StableAbi, Copy, Clone, Debug)]
pub struct ModuleDescriptor {
    /// Module name as `LoadLibrary` and the manifest know it.
    pub name: RStr<'static>,
    /// Segments, by index.
    pub segments: RSlice<'static, SegmentDescriptor>,
    /// Exported procedures.
    pub exports: RSlice<'static, ExportDescriptor>,
}

/// What a plugin file says about itself before any instance exists.
#[repr(C)]
#[derive(StableAbi, Copy, Clone, Debug)]
pub struct PluginInfo {
    /// VxD or one of the ring-3 kinds.
    pub kind: ModuleKind,
    /// The version of `vmm-plugin-api` the plugin was compiled against.
    pub api_version: RStr<'static>,
    /// `true` when the plugin was built with `panic = "unwind"`.
    pub panic_unwind: bool,
    /// Present for [`ModuleKind::Vxd`].
    pub device: ROption<DeviceDescriptor>,
    /// Present for the ring-3 kinds.
    pub module: ROption<ModuleDescriptor>,
}

/// Carry flag result of a control message, service or callback: the DDK's
/// "return with carry clear / set".
#[repr(u8)]
#[derive(StableAbi, Copy, Clone, Debug, PartialEq, Eq, Hash, Default)]
pub enum Carry {
    /// CF clear: success.
    #[default]
    Clear = 0,
    /// CF set: failure, or the message-specific meaning.
    Set = 1,
}

impl Carry {
    /// `Carry::Set` when `failed`.
    pub const fn from_failed(failed: bool) -> Self {
        if failed { Carry::Set } else { Carry::Clear }
    }
    /// Whether carry is set.
    pub const fn is_set(self) -> bool {
        matches!(self, Carry::Set)
    }
}

/// Why a call into a plugin did not complete normally.
#[repr(u8)]
#[derive(StableAbi, Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum PluginErrorKind {
    /// The plugin returned an error (for example from its factory).
    Failed = 0,
    /// The plugin panicked; the SDK caught it at the entry point.
    Panic = 1,
    /// A `RefCell` (or [`crate::ReentrancyCell`]) borrow conflict: the device
    /// was re-entered while it held its own state.
    Reentrancy = 2,
    /// The plugin called `Fatal_Error_Handler` or `Fatal_Memory_Error`, which
    /// never return.
    FatalExit = 3,
    /// A callback was registered for one device type and invoked with
    /// another.
    TypeMismatch = 4,
}

/// An error crossing from a plugin to the host.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq, Eq)]
pub struct PluginError {
    /// What kind of failure.
    pub kind: PluginErrorKind,
    /// Human-readable detail (the panic message, the factory's error, ...).
    pub message: RString,
}

/// Result of every host-to-plugin call.
pub type PluginResult<T> = RResult<T, PluginError>;

/// A host service error, as returned across the ABI. The SDK converts it to
/// [`crate::VmmError`].
#[repr(C)]
#[derive(StableAbi, Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct VmmError {
    /// One of the `VmmError::*` codes.
    pub code: u32,
}

impl VmmError {
    /// A handle (VM, event, time-out, semaphore, ...) is invalid or stale
    /// where that breaks no rule (the host's own lookups); a stale handle a
    /// device passes to a service is a [`VmmError::VIOLATION`].
    pub const INVALID_HANDLE: VmmError = VmmError { code: 1 };
    /// The call broke a VMM rule (a stale handle, a bad pointer, a
    /// parameter out of its documented range, a service called where it
    /// is illegal, ...); a `violation` record names which. Every refusal
    /// for a broken rule returns this code.
    pub const VIOLATION: VmmError = VmmError { code: 2 };
    /// A parameter is out of range where no VMM rule is broken (the SDK's
    /// own checks, such as more than 32 note fields).
    pub const INVALID_PARAMETER: VmmError = VmmError { code: 3 };
    /// The machine is stopping after a fatal error.
    pub const FATAL: VmmError = VmmError { code: 4 };
    /// Out of memory or another resource.
    pub const OUT_OF_MEMORY: VmmError = VmmError { code: 5 };
    /// The host does not offer this service (an older host).
    pub const NOT_AVAILABLE: VmmError = VmmError { code: 6 };
    /// The requested item does not exist (profile key, device, ...).
    pub const NOT_FOUND: VmmError = VmmError { code: 7 };
    /// The operation failed for the documented service-specific reason.
    pub const FAILED: VmmError = VmmError { code: 8 };
}

/// Result of every plugin-to-host service call.
pub type VmmResult<T> = RResult<T, VmmError>;

/// The 32-bit register set of a register-convention call: VxD services
/// reached by `VxDCall`, and callbacks.
#[repr(C)]
#[derive(StableAbi, Copy, Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Regs {
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
    /// EBP.
    pub ebp: u32,
    /// EFLAGS: `CF_MASK` (bit 0), `ZF_MASK` (bit 6), `IF_MASK` (bit 9).
    pub flags: u32,
}

/// A `VxDCall` in flight: the registers of a register service and the stack
/// arguments of a C (`_Name`, cdecl) service, first argument first.
#[repr(C)]
#[derive(StableAbi, Copy, Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct ServiceCall {
    /// Registers in and out.
    pub regs: Regs,
    /// cdecl arguments, first argument at index 0.
    pub args: [u32; 8],
}

/// `Client_Reg_Struc`: a VM's client registers, field for field in the DDK's
/// order (offsets +00 EDI ... +44 GS). Segment registers occupy dwords.
#[repr(C)]
#[derive(StableAbi, Copy, Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct ClientRegs {
    /// +00 Client_EDI.
    pub edi: u32,
    /// +04 Client_ESI.
    pub esi: u32,
    /// +08 Client_EBP.
    pub ebp: u32,
    /// +0C ESP at PUSHAD (unused).
    pub res0: u32,
    /// +10 Client_EBX.
    pub ebx: u32,
    /// +14 Client_EDX.
    pub edx: u32,
    /// +18 Client_ECX.
    pub ecx: u32,
    /// +1C Client_EAX.
    pub eax: u32,
    /// +20 Client_Error.
    pub error: u32,
    /// +24 Client_EIP.
    pub eip: u32,
    /// +28 Client_CS.
    pub cs: u32,
    /// +2C Client_EFlags.
    pub eflags: u32,
    /// +30 Client_ESP.
    pub esp: u32,
    /// +34 Client_SS.
    pub ss: u32,
    /// +38 Client_ES.
    pub es: u32,
    /// +3C Client_DS.
    pub ds: u32,
    /// +40 Client_FS.
    pub fs: u32,
    /// +44 Client_GS.
    pub gs: u32,
}

/// A system control message as the control procedure receives it:
/// EAX = message, EBX = VM handle, EDX/ESI/EDI = parameters.
#[repr(C)]
#[derive(StableAbi, Copy, Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct ControlArgs {
    /// EAX: the message number (`SYS_CRITICAL_INIT` ...).
    pub message: u32,
    /// EBX: the VM handle, where the message has one.
    pub vm: u32,
    /// EDX.
    pub edx: u32,
    /// ESI.
    pub esi: u32,
    /// EDI.
    pub edi: u32,
}

/// The answer of a real-mode initialization procedure.
#[repr(C)]
#[derive(StableAbi, Copy, Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct RealModeInitResult {
    /// AX: `DEVICE_LOAD_OK`, `ABORT_DEVICE_LOAD` or `ABORT_WIN386_LOAD`,
    /// optionally ORed with `NO_FAIL_MESSAGE`.
    pub ax: u32,
    /// EDX: reference data for `DDB_Reference_Data`.
    pub edx: u32,
}

/// Which API entry point a ring-3 caller reached.
#[repr(u8)]
#[derive(StableAbi, Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum ApiMode {
    /// The V86-mode API (DOS programs).
    V86 = 0,
    /// The protected-mode API (Windows code).
    Pm = 1,
}

/// What the host may do with one kind of callback: one static table per
/// closure type, shared by all its registrations.
///
/// `call` receives the registration's `data`, the owning instance's `this`
/// and the callback registers (EBX = current VM, EDX = reference data, ...).
/// A `once` callback is called at most once and its call releases `data`;
/// the host calls `drop` only for a `once` callback that was never called
/// (cancelled), and for a repeating callback when it is discarded.
#[repr(C)]
#[derive(StableAbi)]
pub struct CallbackVTable {
    /// Invoke the callback.
    pub call:
        extern "C" fn(data: *mut c_void, this: *const c_void, cx: &HostCx, regs: &mut Regs) -> PluginResult<Carry>,
    /// Release `data`.
    pub drop: extern "C" fn(data: *mut c_void),
    /// A name for traces, such as the closure's type name.
    pub name: extern "C" fn() -> RStr<'static>,
    /// The first call consumes the callback (events, time-outs).
    pub once: bool,
}

/// A callback a plugin hands to the host (events, time-outs, hooks, ...):
/// two words, so registering and dispatching one moves little.
#[repr(C)]
#[derive(StableAbi)]
pub struct RawCallback {
    /// The operations of this kind of callback (static in the plugin).
    pub vtable: &'static CallbackVTable,
    /// Plugin-owned state of the callback (a boxed closure).
    pub data: *mut c_void,
}

impl RawCallback {
    /// The name for traces.
    pub fn name(&self) -> &'static str {
        (self.vtable.name)().as_str()
    }
}

/// A message as `GetMessage` returns it (Win16 `MSG`).
#[repr(C)]
#[derive(StableAbi, Copy, Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Msg {
    /// Destination window; 0 for `PostAppMessage` messages.
    pub hwnd: u16,
    /// Message number.
    pub message: u16,
    /// 16-bit wParam.
    pub wparam: u16,
    /// 32-bit lParam.
    pub lparam: u32,
    /// Virtual time in ms when it was posted.
    pub time: u32,
}

/// What a ring-3 program does next, returned from its `start` and `resume`
/// procedures. Ring-3 programs are cooperative: a step runs to completion,
/// and the returned [`Step`] says what the program waits for.
#[repr(C)]
#[derive(StableAbi, Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct Step {
    /// What to wait for.
    pub kind: StepKind,
    /// Milliseconds for `Sleep`, exit code for `Exit`.
    pub value: u32,
}

/// The kinds of [`Step`].
#[repr(u8)]
#[derive(StableAbi, Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum StepKind {
    /// Block in `GetMessage` until the task's queue has a message.
    GetMessage = 0,
    /// Release the time slice and wait this many milliseconds.
    Sleep = 1,
    /// Give other tasks and VMs a turn, then resume at once.
    Yield = 2,
    /// End the program with an exit code.
    Exit = 3,
}

/// Why a ring-3 program is resumed.
#[repr(C)]
#[derive(StableAbi, Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct Resume {
    /// The reason.
    pub kind: ResumeKind,
    /// For `Message`: the message `GetMessage` retrieved.
    pub msg: Msg,
}

/// The kinds of [`Resume`].
#[repr(u8)]
#[derive(StableAbi, Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum ResumeKind {
    /// `GetMessage` returned this message (`WM_QUIT` makes it return FALSE).
    Message = 0,
    /// The `Sleep` elapsed.
    Woke = 1,
    /// The program yielded and has its turn again.
    Yielded = 2,
}

/// One live instance of a plugin: an opaque pointer plus its entry points.
#[repr(C)]
#[derive(StableAbi)]
pub struct RawInstance {
    /// The plugin's instance state.
    pub this: *const c_void,
    /// The entry points.
    pub vtable: InstanceVtable_Ref,
}

/// The entry points of a plugin instance. Every function is guarded by
/// `catch_unwind` in the SDK.
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = InstanceVtable_Ref)))]
#[sabi(missing_field(panic))]
pub struct InstanceVtable {
    /// Destroy the instance.
    pub drop: extern "C" fn(this: *const c_void),
    /// Real-mode initialization: `flags` is BX (`DUPLICATE_DEVICE_ID`, ...),
    /// `reference_data` is the startup-info reference data (EDX).
    pub real_mode_init: extern "C" fn(
        this: *const c_void,
        cx: &HostCx,
        flags: u32,
        reference_data: u32,
    ) -> PluginResult<RealModeInitResult>,
    /// The control procedure.
    pub control: extern "C" fn(this: *const c_void, cx: &HostCx, args: &ControlArgs) -> PluginResult<Carry>,
    /// The V86 or PM API procedure. `client` is the calling VM's client
    /// register block; errors are reported through CF in `Client_EFlags`.
    pub api: extern "C" fn(
        this: *const c_void,
        cx: &HostCx,
        mode: ApiMode,
        vm: u32,
        client: *mut ClientRegs,
    ) -> PluginResult<()>,
    /// A service of the device's service table, by ordinal.
    pub service:
        extern "C" fn(this: *const c_void, cx: &HostCx, ordinal: u32, call: &mut ServiceCall) -> PluginResult<Carry>,
    /// Hot reload: serialize state to hand to the next version (`None`: the
    /// device does not hand state over).
    pub save_state: extern "C" fn(this: *const c_void, cx: &HostCx) -> PluginResult<ROption<RVec<u8>>>,
    /// Hot reload: take over state saved by the previous version.
    pub restore_state: extern "C" fn(this: *const c_void, cx: &HostCx, state: RSlice<'_, u8>) -> PluginResult<Carry>,
    /// Ring-3 programs: start (`WinMain`, DOS `main`, DLL `LibMain`).
    pub start: extern "C" fn(this: *const c_void, cx: &HostCx, args: RStr<'_>) -> PluginResult<Step>,
    /// Ring-3 programs: continue after the wait a [`Step`] asked for.
    pub resume: extern "C" fn(this: *const c_void, cx: &HostCx, resume: &Resume) -> PluginResult<Step>,
    /// Ring-3 modules: call an exported procedure. `args` are the PASCAL
    /// argument bytes as they lie on the stack (last argument first); the
    /// result is DX:AX.
    #[sabi(last_prefix_field)]
    pub call_export:
        extern "C" fn(this: *const c_void, cx: &HostCx, ordinal: u16, args: RSlice<'_, u8>) -> PluginResult<u32>,
}

/// The context every host-to-plugin call carries: the host's services and
/// the opaque machine they act on. Plugins must not keep it beyond the call.
#[repr(C)]
#[derive(StableAbi)]
pub struct HostCx {
    /// The host services.
    pub services: HostServices_Ref,
    /// The machine (opaque to plugins).
    pub machine: *const c_void,
    /// The instance being called (host bookkeeping).
    pub caller: u32,
    /// Whether the host keeps a trace: when not, devices need not build
    /// trace notes at all.
    pub tracing: bool,
}

/// The type of a [`NoteField`]'s value.
#[repr(u8)]
#[derive(StableAbi, Copy, Clone, Debug, PartialEq, Eq)]
pub enum NoteKind {
    /// `number` as a signed integer.
    Int = 0,
    /// `number` reinterpreted as an unsigned integer.
    UInt = 1,
    /// `number != 0`.
    Bool = 2,
    /// `text`.
    Text = 3,
}

/// One field of a device's trace note (see [`HostServices::trace_note`]).
#[repr(C)]
#[derive(StableAbi, Copy, Clone, Debug)]
pub struct NoteField<'a> {
    /// The field name: 1 to 32 characters of `a-z`, `0-9` and `_`.
    pub key: RStr<'a>,
    /// How to read the value.
    pub kind: NoteKind,
    /// The value of `Int`, `UInt` and `Bool` fields.
    pub number: u64,
    /// The value of `Text` fields.
    pub text: RStr<'a>,
}

/// A string result of the profile services.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq, Eq)]
pub struct ProfileString {
    /// The value as written in the manifest.
    pub value: RString,
    /// Position among entries with the same key, for
    /// `Get_Next_Profile_String`.
    pub index: u32,
}

/// Outcome of the numeric and boolean profile services, with the DDK's
/// three cases.
#[repr(u8)]
#[derive(StableAbi, Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum ProfileStatus {
    /// CF clear, ZF clear: the key holds a valid value.
    Present = 0,
    /// CF clear, ZF set: the key is present but empty; the default is used.
    Empty = 1,
    /// CF set: the key is missing or its value is invalid; the default is
    /// used.
    Missing = 2,
}

/// A numeric or boolean profile value.
#[repr(C)]
#[derive(StableAbi, Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct ProfileValue {
    /// Which of the DDK's three cases.
    pub status: ProfileStatus,
    /// The value, or the caller's default.
    pub value: u32,
}

/// `Get_Crit_Section_Status` and `Get_Crit_Status_No_Block` output.
#[repr(C)]
#[derive(StableAbi, Copy, Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct CritStatus {
    /// ECX: claim count.
    pub claims: u32,
    /// EBX: owning VM (the current VM's handle when unowned).
    pub owner: u32,
    /// CF: the current VM's priority is at least `CRITICAL_SECTION_BOOST`.
    pub high_priority: bool,
}

/// Details of a VM beyond its handle.
#[repr(C)]
#[derive(StableAbi, Copy, Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct VmInfo {
    /// `CB_VMID`: 1 for the system VM.
    pub id: u32,
    /// `CB_VM_Status` bits (`VMSTAT_*`).
    pub status: u32,
    /// Current execution priority (base plus boosts).
    pub priority: u32,
    /// Whether the VM has interrupts enabled (client IF).
    pub interrupts_enabled: bool,
    /// Whether the VM is in nested execution.
    pub nested: bool,
    /// Execution time in milliseconds.
    pub exec_time_ms: u32,
}

/// Signature shorthands for [`HostServices`].
pub type Cx<'a> = &'a HostCx;

/// The services the host offers plugins, in tables of at most 64 entries
/// (abi_stable's limit for a prefix type): this one holds diagnostics,
/// profile, dispatch and memory, and refers to the VMM's, ring 3's and
/// SHELL's.
/// Each service is documented on its SDK wrapper in [`crate::vmm::Vmm`],
/// [`crate::ring3::Ring3`] and [`crate::shell::Shell`], under the DDK name.
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = HostServices_Ref)))]
#[sabi(missing_field(option))]
pub struct HostServices {
    // ---- diagnostics -------------------------------------------------
    /// Forward a log line (`level`: 1 error ... 5 trace).
    pub log: extern "C" fn(cx: Cx<'_>, level: u8, target: RStr<'_>, message: RStr<'_>),
    /// `Out_Debug_String`.
    pub out_debug_string: extern "C" fn(cx: Cx<'_>, text: RStr<'_>),
    /// `Fatal_Error_Handler`: never returns to the VMM's caller; the SDK
    /// unwinds to the entry point.
    pub fatal_error_handler: extern "C" fn(cx: Cx<'_>, message: RStr<'_>, flags: u32),
    /// `Fatal_Memory_Error`.
    pub fatal_memory_error: extern "C" fn(cx: Cx<'_>),
    /// Report a re-entrancy or other misuse detected inside the plugin.
    pub report_violation: extern "C" fn(cx: Cx<'_>, code: RStr<'_>, message: RStr<'_>),

    // ---- version, profile, dispatch ----------------------------------
    /// `Get_VMM_Version`: AH.AL in the low word.
    pub get_vmm_version: extern "C" fn(cx: Cx<'_>) -> u32,
    /// `Get_Profile_String`.
    pub get_profile_string: extern "C" fn(cx: Cx<'_>, section: RStr<'_>, key: RStr<'_>) -> VmmResult<ProfileString>,
    /// `Get_Next_Profile_String`: the entry after `previous` with the same
    /// key.
    pub get_next_profile_string:
        extern "C" fn(cx: Cx<'_>, section: RStr<'_>, key: RStr<'_>, previous: u32) -> VmmResult<ProfileString>,
    /// `Get_Profile_Decimal_Int`.
    pub get_profile_decimal_int:
        extern "C" fn(cx: Cx<'_>, section: RStr<'_>, key: RStr<'_>, default: u32) -> VmmResult<ProfileValue>,
    /// `Get_Profile_Hex_Int`.
    pub get_profile_hex_int:
        extern "C" fn(cx: Cx<'_>, section: RStr<'_>, key: RStr<'_>, default: u32) -> VmmResult<ProfileValue>,
    /// `Get_Profile_Boolean`: value 0 or 0xFFFF_FFFF.
    pub get_profile_boolean:
        extern "C" fn(cx: Cx<'_>, section: RStr<'_>, key: RStr<'_>, default: u32) -> VmmResult<ProfileValue>,
    /// `VxDCall`: `service` is `(device_id << 16) | ordinal`. CF comes back
    /// in `call.regs.flags`.
    pub vxd_call: extern "C" fn(cx: Cx<'_>, service: u32, call: &mut ServiceCall) -> VmmResult<()>,

    // ---- heap and linear memory ----------------------------------------
    /// `_HeapAllocate`: 0 on failure.
    pub heap_allocate: extern "C" fn(cx: Cx<'_>, bytes: u32, flags: u32) -> u32,
    /// `_HeapReAllocate`: 0 on failure (the old block stays).
    pub heap_reallocate: extern "C" fn(cx: Cx<'_>, address: u32, bytes: u32, flags: u32) -> u32,
    /// `_HeapFree`: non-zero on success.
    pub heap_free: extern "C" fn(cx: Cx<'_>, address: u32, flags: u32) -> u32,
    /// `_HeapGetSize`: 0 for an invalid block.
    pub heap_get_size: extern "C" fn(cx: Cx<'_>, address: u32, flags: u32) -> u32,
    /// Copy bytes out of linear memory (heap blocks).
    pub mem_read: extern "C" fn(cx: Cx<'_>, address: u32, out: RSliceMut<'_, u8>) -> VmmResult<()>,
    /// Copy bytes into linear memory.
    pub mem_write: extern "C" fn(cx: Cx<'_>, address: u32, data: RSlice<'_, u8>) -> VmmResult<()>,

    // ---- the other tables ---------------------------------------------------------
    /// VMs, time, scheduling, events, critical section, semaphores,
    /// interrupts, nested execution.
    pub vm: VmServices_Ref,
    /// The ring-3 APIs (USER, KERNEL, INT 2Fh, far calls).
    pub ring3: Ring3Services_Ref,
    /// The SHELL device's services (device 0x17).
    #[sabi(last_prefix_field)]
    pub shell: ShellServices_Ref,

    // ---- appended after the first prefix ------------------------------------------------
    /// Write a structured `note` record into the trace: the device's own
    /// machine-readable events, for tests and tools to assert on. `note` is
    /// the record's name; both it and the field names are 1 to 32
    /// characters of `a-z`, `0-9` and `_`, at most 32 fields.
    pub trace_note: extern "C" fn(cx: Cx<'_>, note: RStr<'_>, fields: RSlice<'_, NoteField<'_>>) -> VmmResult<()>,
    /// Whether the machine keeps a trace (notes go nowhere without one, so
    /// the SDK does not build them).
    pub trace_enabled: extern "C" fn(cx: Cx<'_>) -> bool,
    /// The most verbose level the host's log shows now (0 nothing, 1 error
    /// ... 5 trace): the SDK's logging bridge does not format what the
    /// host would drop.
    pub log_level: extern "C" fn(cx: Cx<'_>) -> u8,

    // ---- I/O port trapping (appended) -----------------------------------------------------
    /// `Install_IO_Handler`: `FAILED` (carry set) when the port already has
    /// a handler. The callback gets EBX VM, ECX IOType, EDX port, EAX data
    /// (output) and returns the input data in EAX.
    pub install_io_handler: extern "C" fn(cx: Cx<'_>, port: u16, callback: RawCallback) -> VmmResult<()>,
    /// `Remove_IO_Handler` (4.0): `NOT_FOUND` (carry set) when no handler
    /// is installed on the port.
    pub remove_io_handler: extern "C" fn(cx: Cx<'_>, port: u16) -> VmmResult<()>,
    /// `Enable_Global_Trapping` (`on`) / `Disable_Global_Trapping`.
    pub set_global_trapping: extern "C" fn(cx: Cx<'_>, port: u16, on: bool) -> VmmResult<()>,
    /// `Enable_Local_Trapping` (`on`) / `Disable_Local_Trapping` in `vm`.
    pub set_local_trapping: extern "C" fn(cx: Cx<'_>, vm: u32, port: u16, on: bool) -> VmmResult<()>,
    /// `Simulate_IO` (from an I/O handler): returns the input data.
    pub simulate_io: extern "C" fn(cx: Cx<'_>, vm: u32, io_type: u32, port: u16, data: u32) -> VmmResult<u32>,
    /// `_Simulate_VM_IO` (4.0): the access as the current VM would make it.
    pub simulate_vm_io: extern "C" fn(cx: Cx<'_>, io_type: u32, port: u16, data: u32) -> VmmResult<u32>,

    // ---- VPICD (appended) -------------------------------------------------------------------
    /// The VPICD device's services (device 3).
    pub vpicd: VpicdServices_Ref,
    // ---- Windows 95 event additions, VM lifetime, service hooks (appended) ----------------
    /// `Call_Restricted_Event` (4.0): EAX boost, EBX VM (0: a global
    /// event), ECX `PEF_*` flags, EDI time-out in ms (with `PEF_TIME_OUT`).
    /// The handle, or 0 when the callback already ran.
    pub call_restricted_event: extern "C" fn(
        cx: Cx<'_>,
        boost: i32,
        vm: u32,
        flags: u32,
        timeout_ms: u32,
        callback: RawCallback,
    ) -> VmmResult<u32>,
    /// `Cancel_Restricted_Event` (4.0): 0 is a no-op.
    pub cancel_restricted_event: extern "C" fn(cx: Cx<'_>, handle: u32) -> VmmResult<()>,
    /// `Cancel_Call_When_Not_Critical` (4.0): does nothing, as documented.
    pub cancel_call_when_not_critical: extern "C" fn(cx: Cx<'_>) -> VmmResult<()>,
    /// `Nuke_VM`: end `vm` without VM_Terminate (VM_Not_Executeable with
    /// `VNE_Nuked`, then Destroy_VM). The system VM: Windows ends (`FATAL`).
    pub nuke_vm: extern "C" fn(cx: Cx<'_>, vm: u32) -> VmmResult<()>,
    /// `Crash_Cur_VM`: the same for the current VM with `VNE_Crashed`.
    pub crash_cur_vm: extern "C" fn(cx: Cx<'_>) -> VmmResult<()>,
    /// `Hook_Device_Service`: put `callback` on top of the chain of
    /// `service` (`(device ID << 16) | ordinal`); `hook_proc` marks a
    /// Windows 95 `HOOK_PROC` (one that can be unhooked). The hook's
    /// handle, or `NOT_FOUND` (the DDK's carry) for an invalid device or
    /// service. The callback gets EAX = the service, ESI = its handle;
    /// the call in flight comes from `hooked_call`.
    pub hook_device_service:
        extern "C" fn(cx: Cx<'_>, service: u32, hook_proc: bool, callback: RawCallback) -> VmmResult<u32>,
    /// `Unhook_Device_Service` (4.0): `NOT_FOUND` when the hook is not in
    /// the chain, `FAILED` when an old-style hook is above it.
    pub unhook_device_service: extern "C" fn(cx: Cx<'_>, service: u32, hook: u32) -> VmmResult<()>,
    /// The innermost hooked call in flight (valid while its hook runs).
    pub hooked_call: extern "C" fn(cx: Cx<'_>) -> VmmResult<*mut ServiceCall>,
    /// Chain from hook `hook` of `service` to the hook below it, or to the
    /// service itself (the DDK's `JMP [pPrevVar]`).
    pub call_previous_hook: extern "C" fn(cx: Cx<'_>, service: u32, hook: u32, call: &mut ServiceCall) -> VmmResult<()>,
    /// `trace_note` whose fields at the bits set in `nulls` are written as
    /// null (optional values that are absent).
    pub trace_note_nulls:
        extern "C" fn(cx: Cx<'_>, note: RStr<'_>, fields: RSlice<'_, NoteField<'_>>, nulls: u32) -> VmmResult<()>,
    /// `System_Control` (`device` 0: every device, in init order, until one
    /// sets carry: `FAILED`) or `Directed_Sys_Control` (4.0: the device
    /// with ID `device`; `NOT_FOUND` if none is loaded and initialized).
    /// Only `Set_Device_Focus` and private messages may be sent.
    pub system_control: extern "C" fn(cx: Cx<'_>, device: u16, args: &ControlArgs) -> VmmResult<()>,
    // ---- device contention (appended) ------------------------------------------------------
    /// Write a `contention` record: the calling device decided who may use
    /// `resource`; `owner` held it (0: nobody), `contender` wants it (0 for
    /// a release); `decision` is the device's word for the outcome (1 to
    /// 32 characters of `a-z`, `0-9` and `_`; `resource` 1 to 32 printable
    /// ASCII characters).
    pub trace_contention:
        extern "C" fn(cx: Cx<'_>, resource: RStr<'_>, owner: u32, contender: u32, decision: RStr<'_>) -> VmmResult<()>,
    // ---- interrupts inside VMs and call-backs (appended) ----------------------------------
    /// `Hook_V86_Int_Chain` (EAX = `vector`): the hook's handle. The
    /// callback gets EAX = the interrupt, EBX = the VM; carry clear
    /// consumes the interrupt, carry set passes it on. `FAILED` (carry)
    /// for a number above 0xFF.
    pub hook_v86_int_chain: extern "C" fn(cx: Cx<'_>, vector: u32, callback: RawCallback) -> VmmResult<u32>,
    /// `Unhook_V86_Int_Chain` (4.0): `NOT_FOUND` (carry) for a hook the
    /// caller does not have on `vector`.
    pub unhook_v86_int_chain: extern "C" fn(cx: Cx<'_>, vector: u32, hook: u32) -> VmmResult<()>,
    /// `Get_V86_Int_Vector` of the current VM: `segment << 16 | offset`.
    pub get_v86_int_vector: extern "C" fn(cx: Cx<'_>, vector: u32) -> VmmResult<u32>,
    /// `Set_V86_Int_Vector`: before `Sys_VM_Init` every VM's default, after
    /// it the current VM's.
    pub set_v86_int_vector: extern "C" fn(cx: Cx<'_>, vector: u32, segment: u16, offset: u32) -> VmmResult<()>,
    /// `Get_PM_Int_Vector` of the current VM.
    pub get_pm_int_vector: extern "C" fn(cx: Cx<'_>, vector: u32) -> VmmResult<PmVector>,
    /// `Set_PM_Int_Vector`: same rule as `set_v86_int_vector`.
    pub set_pm_int_vector: extern "C" fn(cx: Cx<'_>, vector: u32, selector: u16, offset: u32) -> VmmResult<()>,
    /// `Simulate_Iret` on the current VM.
    pub simulate_iret: extern "C" fn(cx: Cx<'_>) -> VmmResult<()>,
    /// `Simulate_Far_Jmp`.
    pub simulate_far_jmp: extern "C" fn(cx: Cx<'_>, segment: u16, offset: u32) -> VmmResult<()>,
    /// `Simulate_Far_Ret_N` (`Simulate_Far_Ret`: 0 bytes).
    pub simulate_far_ret_n: extern "C" fn(cx: Cx<'_>, bytes: u32) -> VmmResult<()>,
    /// `Build_Int_Stack_Frame`: an IRET frame and a jump, no hooks.
    pub build_int_stack_frame: extern "C" fn(cx: Cx<'_>, segment: u16, offset: u32) -> VmmResult<()>,
    /// `Allocate_V86_Call_Back` (`pm` false) / `Allocate_PM_Call_Back`:
    /// the address. The callback gets EBX = VM, EDX = `ref_data`.
    pub allocate_call_back: extern "C" fn(cx: Cx<'_>, pm: bool, ref_data: u32, callback: RawCallback) -> VmmResult<u32>,
    /// `Call_When_VM_Returns` (EAX = `timeout_ms`, EDX = `ref_data`).
    pub call_when_vm_returns:
        extern "C" fn(cx: Cx<'_>, timeout_ms: i32, ref_data: u32, callback: RawCallback) -> VmmResult<()>,
    /// `Hook_V86_Fault`: the hook's handle. EAX = the fault, EBX = the VM;
    /// carry clear = handled.
    pub hook_v86_fault: extern "C" fn(cx: Cx<'_>, vector: u32, callback: RawCallback) -> VmmResult<u32>,
    /// `Unhook_V86_Fault` (4.0).
    pub unhook_v86_fault: extern "C" fn(cx: Cx<'_>, vector: u32, hook: u32) -> VmmResult<()>,
    // ---- fault hooks of protected-mode and ring-0 code (appended) ------------------------
    /// `Hook_PM_Fault` (`mode` [`FAULT_MODE_PM`]) / `Hook_VMM_Fault`
    /// ([`FAULT_MODE_VMM`]); [`FAULT_MODE_V86`] is `Hook_V86_Fault`. The
    /// hook's handle. EAX = the fault, EBX = the current VM (a ring-0 page
    /// fault: EDX = the linear address); carry clear = handled. A
    /// `Hook_VMM_Fault` hook runs as at interrupt time.
    pub hook_fault: extern "C" fn(cx: Cx<'_>, mode: u32, vector: u32, callback: RawCallback) -> VmmResult<u32>,
    /// `Unhook_PM_Fault` / `Unhook_VMM_Fault` (4.0).
    pub unhook_fault: extern "C" fn(cx: Cx<'_>, mode: u32, vector: u32, hook: u32) -> VmmResult<()>,
    /// `Get_Fault_Hook_Addrs`: per mode the handle of the hook a fault is
    /// offered to first (0: the VMM's own handling comes first).
    pub get_fault_hook_addrs: extern "C" fn(cx: Cx<'_>, vector: u32) -> VmmResult<FaultHookAddrs>,
    // ---- Call_When_Idle handles (appended) -------------------------------------------------
    /// `Call_When_Idle` that returns the registration's handle (never 0),
    /// the SDK's stand-in for the DDK's "ESI = the callback" that
    /// `Cancel_Call_When_Idle` takes.
    pub call_when_idle_handle: extern "C" fn(cx: Cx<'_>, callback: RawCallback) -> VmmResult<u32>,
    /// `Cancel_Call_When_Idle` (4.0): `NOT_FOUND` (carry) when `handle` is
    /// not an installed idle handler of the caller's.
    pub cancel_call_when_idle: extern "C" fn(cx: Cx<'_>, handle: u32) -> VmmResult<()>,

    // ---- I/O port trapping: the Mult services (appended) ---------------------------------------
    /// `Install_Mult_IO_Handlers` (VMM 0x95): `Install_IO_Handler` of each
    /// entry in order. At the first port that already has a handler it
    /// stops with `IoPortError { port, FAILED }` (the DDK's carry and EDX);
    /// the entries before it stay installed (no rollback); the callbacks
    /// of the entries not installed are dropped.
    pub install_mult_io_handlers: extern "C" fn(cx: Cx<'_>, entries: RVec<IoHandlerEntry>) -> RResult<(), IoPortError>,
    /// `Remove_Mult_IO_Handlers` (VMM 0x117, 4.0): `Remove_IO_Handler` of
    /// each port; every port is tried, the first failure is returned.
    pub remove_mult_io_handlers: extern "C" fn(cx: Cx<'_>, ports: RSlice<'_, u16>) -> RResult<(), IoPortError>,
}

/// `hook_fault`'s `mode`: faults of V86 code.
pub const FAULT_MODE_V86: u32 = 0;
/// `hook_fault`'s `mode`: faults of protected-mode ring-3 code.
pub const FAULT_MODE_PM: u32 = 1;
/// `hook_fault`'s `mode`: faults of ring-0 code (the VMM and devices).
pub const FAULT_MODE_VMM: u32 = 2;

/// `Get_Fault_Hook_Addrs`' answer: hook handles, 0 for none.
#[repr(C)]
#[derive(StableAbi, Copy, Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct FaultHookAddrs {
    /// EDX: the V86 fault hook called first.
    pub v86: u32,
    /// ESI: the PM fault hook called first.
    pub pm: u32,
    /// EDI: the VMM fault hook called first.
    pub vmm: u32,
}

/// One entry of an `Install_Mult_IO_Handlers` table (the DDK's
/// `VxD_IO_Struc`: a port and its handler).
#[repr(C)]
#[derive(StableAbi)]
pub struct IoHandlerEntry {
    /// The port.
    pub port: u16,
    /// Its I/O handler (EBX VM, ECX IOType, EDX port, EAX data).
    pub callback: RawCallback,
}

/// Why a Mult I/O service stopped: the port (the DDK's EDX) and the error.
#[repr(C)]
#[derive(StableAbi, Copy, Clone, Debug, PartialEq, Eq)]
pub struct IoPortError {
    /// The port that failed.
    pub port: u16,
    /// `FAILED` (already trapped), `NOT_FOUND` (no handler to remove),
    /// `VIOLATION` (another device's port, or a refused context).
    pub error: VmmError,
}

/// `Get_PM_Int_Vector`'s answer.
#[repr(C)]
#[derive(StableAbi, Copy, Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct PmVector {
    /// CX: the selector.
    pub selector: u16,
    /// EDX: the offset.
    pub offset: u32,
    /// ZF set: still the default (the VMM's break point that reflects the
    /// interrupt to V86 mode).
    pub default: bool,
}

/// VMM services: VMs, time, scheduler, events, critical section,
/// semaphores, interrupts, nested execution.
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = VmServices_Ref)))]
#[sabi(missing_field(option))]
pub struct VmServices {
    // ---- VMs ----------------------------------------------------------
    /// `Get_Cur_VM_Handle`.
    pub get_cur_vm_handle: extern "C" fn(cx: Cx<'_>) -> u32,
    /// `Get_Sys_VM_Handle`.
    pub get_sys_vm_handle: extern "C" fn(cx: Cx<'_>) -> u32,
    /// `Test_Cur_VM_Handle` (ZF set when `vm` is current).
    pub test_cur_vm_handle: extern "C" fn(cx: Cx<'_>, vm: u32) -> bool,
    /// `Test_Sys_VM_Handle`.
    pub test_sys_vm_handle: extern "C" fn(cx: Cx<'_>, vm: u32) -> bool,
    /// `Validate_VM_Handle` (true = valid).
    pub validate_vm_handle: extern "C" fn(cx: Cx<'_>, vm: u32) -> bool,
    /// `Get_Next_VM_Handle` (circular).
    pub get_next_vm_handle: extern "C" fn(cx: Cx<'_>, vm: u32) -> VmmResult<u32>,
    /// `Get_VMM_Reenter_Count`.
    pub get_vmm_reenter_count: extern "C" fn(cx: Cx<'_>) -> u32,
    /// The control-block fields of a VM.
    pub get_vm_info: extern "C" fn(cx: Cx<'_>, vm: u32) -> VmmResult<VmInfo>,
    /// The client register block of a VM (valid while the VM exists).
    pub client_regs: extern "C" fn(cx: Cx<'_>, vm: u32) -> VmmResult<*mut ClientRegs>,
    /// `_Allocate_Device_CB_Area`: offset of a zeroed per-VM area, 0 on
    /// failure. Init only.
    pub allocate_device_cb_area: extern "C" fn(cx: Cx<'_>, bytes: u32, flags: u32) -> u32,
    /// Read from a VM's control block at an offset from
    /// `_Allocate_Device_CB_Area`.
    pub cb_read: extern "C" fn(cx: Cx<'_>, vm: u32, offset: u32, out: RSliceMut<'_, u8>) -> VmmResult<()>,
    /// Write to a VM's control block.
    pub cb_write: extern "C" fn(cx: Cx<'_>, vm: u32, offset: u32, data: RSlice<'_, u8>) -> VmmResult<()>,

    // ---- time -----------------------------------------------------------
    /// `Get_System_Time`: ms since boot.
    pub get_system_time: extern "C" fn(cx: Cx<'_>) -> u32,
    /// `Get_VM_Exec_Time`.
    pub get_vm_exec_time: extern "C" fn(cx: Cx<'_>, vm: u32) -> VmmResult<u32>,
    /// `Set_Global_Time_Out`: handle, 0 if not scheduled.
    pub set_global_time_out: extern "C" fn(cx: Cx<'_>, ms: u32, callback: RawCallback) -> u32,
    /// `Set_VM_Time_Out`: counts `vm`'s execution time.
    pub set_vm_time_out: extern "C" fn(cx: Cx<'_>, ms: u32, vm: u32, callback: RawCallback) -> u32,
    /// `Cancel_Time_Out` (0 is a no-op).
    pub cancel_time_out: extern "C" fn(cx: Cx<'_>, handle: u32) -> VmmResult<()>,

    // ---- scheduler --------------------------------------------------------
    /// `Adjust_Exec_Priority`.
    pub adjust_exec_priority: extern "C" fn(cx: Cx<'_>, vm: u32, boost: i32) -> VmmResult<()>,
    /// `Call_When_Task_Switched`: permanent, installation order; EAX = old
    /// VM, EBX = new VM.
    pub call_when_task_switched: extern "C" fn(cx: Cx<'_>, callback: RawCallback) -> VmmResult<()>,
    /// `Call_When_Idle`: CF set from the callback passes to the next one.
    pub call_when_idle: extern "C" fn(cx: Cx<'_>, callback: RawCallback) -> VmmResult<()>,

    // ---- events -------------------------------------------------------------
    /// `Call_Priority_VM_Event`: 0 if run inline, else a handle.
    pub call_priority_vm_event: extern "C" fn(
        cx: Cx<'_>,
        boost: i32,
        vm: u32,
        flags: u32,
        timeout_ms: u32,
        callback: RawCallback,
    ) -> VmmResult<u32>,
    /// `Cancel_Priority_VM_Event` (0 is a no-op).
    pub cancel_priority_vm_event: extern "C" fn(cx: Cx<'_>, handle: u32) -> VmmResult<()>,
    /// `Schedule_Global_Event`.
    pub schedule_global_event: extern "C" fn(cx: Cx<'_>, callback: RawCallback) -> VmmResult<u32>,
    /// `Schedule_VM_Event`.
    pub schedule_vm_event: extern "C" fn(cx: Cx<'_>, vm: u32, callback: RawCallback) -> VmmResult<u32>,
    /// `Call_Global_Event`: 0 if run inline.
    pub call_global_event: extern "C" fn(cx: Cx<'_>, callback: RawCallback) -> VmmResult<u32>,
    /// `Call_VM_Event`: 0 if run inline.
    pub call_vm_event: extern "C" fn(cx: Cx<'_>, vm: u32, callback: RawCallback) -> VmmResult<u32>,
    /// `Cancel_Global_Event` (0 is a no-op).
    pub cancel_global_event: extern "C" fn(cx: Cx<'_>, handle: u32) -> VmmResult<()>,
    /// `Cancel_VM_Event` (0 is a no-op).
    pub cancel_vm_event: extern "C" fn(cx: Cx<'_>, vm: u32, handle: u32) -> VmmResult<()>,
    /// `Call_When_VM_Ints_Enabled`: runs now if the current VM has IF set.
    pub call_when_vm_ints_enabled: extern "C" fn(cx: Cx<'_>, callback: RawCallback) -> VmmResult<()>,
    /// `Call_When_Not_Critical`: one-shot; only the newest runs per release.
    pub call_when_not_critical: extern "C" fn(cx: Cx<'_>, callback: RawCallback) -> VmmResult<()>,

    // ---- critical section and semaphores ------------------------------------
    /// `Begin_Critical_Section` (ECX = `BLOCK_*` flags).
    pub begin_critical_section: extern "C" fn(cx: Cx<'_>, flags: u32) -> VmmResult<()>,
    /// `End_Critical_Section`.
    pub end_critical_section: extern "C" fn(cx: Cx<'_>) -> VmmResult<()>,
    /// `Claim_Critical_Section` (EAX = count, ECX = flags).
    pub claim_critical_section: extern "C" fn(cx: Cx<'_>, count: u32, flags: u32) -> VmmResult<()>,
    /// `Release_Critical_Section` (ECX = count).
    pub release_critical_section: extern "C" fn(cx: Cx<'_>, count: u32) -> VmmResult<()>,
    /// `Get_Crit_Section_Status` (not async).
    pub get_crit_section_status: extern "C" fn(cx: Cx<'_>) -> VmmResult<CritStatus>,
    /// `Get_Crit_Status_No_Block` (async).
    pub get_crit_status_no_block: extern "C" fn(cx: Cx<'_>) -> CritStatus,
    /// `End_Crit_And_Suspend`.
    pub end_crit_and_suspend: extern "C" fn(cx: Cx<'_>) -> VmmResult<()>,
    /// `Create_Semaphore`.
    pub create_semaphore: extern "C" fn(cx: Cx<'_>, tokens: i32) -> VmmResult<u32>,
    /// `Destroy_Semaphore`.
    pub destroy_semaphore: extern "C" fn(cx: Cx<'_>, handle: u32) -> VmmResult<()>,
    /// `Wait_Semaphore`: blocks the current VM until a token is available.
    pub wait_semaphore: extern "C" fn(cx: Cx<'_>, handle: u32, flags: u32) -> VmmResult<()>,
    /// `Signal_Semaphore`.
    pub signal_semaphore: extern "C" fn(cx: Cx<'_>, handle: u32) -> VmmResult<()>,

    // ---- interrupts ---------------------------------------------------------
    /// Register a simulated hardware interrupt source named `name`; the
    /// callback runs at interrupt time. Returns the IRQ handle.
    pub register_interrupt: extern "C" fn(cx: Cx<'_>, name: RStr<'_>, callback: RawCallback) -> VmmResult<u32>,
    /// Request a registered interrupt: it is taken at the next service-call
    /// boundary or scheduler step.
    pub request_interrupt: extern "C" fn(cx: Cx<'_>, irq: u32) -> VmmResult<()>,
    /// `Suspend_VM`: the new suspend count.
    pub suspend_vm: extern "C" fn(cx: Cx<'_>, vm: u32) -> VmmResult<u32>,
    /// `Resume_VM` (`no_fail`: `No_Fail_Resume_VM`).
    pub resume_vm: extern "C" fn(cx: Cx<'_>, vm: u32, no_fail: bool) -> VmmResult<()>,

    // ---- nested execution ------------------------------------------------------
    /// `Begin_Nest_Exec` (`v86`: `Begin_Nest_V86_Exec`) in the current VM.
    pub begin_nest_exec: extern "C" fn(cx: Cx<'_>, v86: bool) -> VmmResult<()>,
    /// `End_Nest_Exec`.
    pub end_nest_exec: extern "C" fn(cx: Cx<'_>) -> VmmResult<()>,
    /// `Simulate_Push`: push a word (V86, 16-bit protected mode).
    pub simulate_push: extern "C" fn(cx: Cx<'_>, value: u32) -> VmmResult<()>,
    /// `Simulate_Pop`.
    pub simulate_pop: extern "C" fn(cx: Cx<'_>) -> VmmResult<u32>,
    /// `Simulate_Far_Call` to `segment:offset`.
    pub simulate_far_call: extern "C" fn(cx: Cx<'_>, segment: u16, offset: u32) -> VmmResult<()>,
    /// `Simulate_Int`.
    pub simulate_int: extern "C" fn(cx: Cx<'_>, number: u8) -> VmmResult<()>,
    /// `Resume_Exec`: run the VM until it returns to the nest's break point.
    pub resume_exec: extern "C" fn(cx: Cx<'_>) -> VmmResult<()>,
    /// `Exec_Int`: `Simulate_Int` + `Resume_Exec`.
    pub exec_int: extern "C" fn(cx: Cx<'_>, number: u8) -> VmmResult<()>,
    /// `Save_Client_State`: a copy of the current VM's client registers.
    pub save_client_state: extern "C" fn(cx: Cx<'_>) -> VmmResult<ClientRegs>,
    /// `Restore_Client_State`.
    #[sabi(last_prefix_field)]
    pub restore_client_state: extern "C" fn(cx: Cx<'_>, state: &ClientRegs) -> VmmResult<()>,

    // ---- appended after the first prefix ------------------------------------------------
    /// Whether a 16:16 address is an exported procedure of a loaded ring-3
    /// module (a DLL, an application or a DOS program): what a device
    /// checks before it accepts a far pointer as a callback to reach by
    /// nested execution. Not a DDK service (a VxD of the time trusted the
    /// caller or used `Map_Flat` and guessed).
    pub is_ring3_export: extern "C" fn(cx: Cx<'_>, address: u32) -> bool,
    /// `Adjust_Execution_Time`: `vm`'s time slice lasts `ms` longer
    /// (shorter when negative): the current one if `vm` runs, else its
    /// next one.
    pub adjust_execution_time: extern "C" fn(cx: Cx<'_>, vm: u32, ms: i32) -> VmmResult<()>,
}

/// Ring-3 services: what Windows code and DOS programs call.
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = Ring3Services_Ref)))]
#[sabi(missing_field(option))]
pub struct Ring3Services {
    // ---- ring 3 -----------------------------------------------------------------
    /// Execute `INT n` from ring 3 with the current VM's client registers.
    pub r3_int: extern "C" fn(cx: Cx<'_>, number: u8) -> VmmResult<()>,
    /// Far-call a ring-3 procedure or a VxD API entry from ring 3; DX:AX.
    pub r3_call: extern "C" fn(cx: Cx<'_>, target: u32, args: RSlice<'_, u8>) -> VmmResult<u32>,
    /// `CLI` / `STI`.
    pub r3_set_interrupts: extern "C" fn(cx: Cx<'_>, enabled: bool),
    /// A line on the program's console.
    pub r3_print: extern "C" fn(cx: Cx<'_>, text: RStr<'_>),
    /// The far pointer of the calling module's export `ordinal` (0: none).
    pub r3_export_address: extern "C" fn(cx: Cx<'_>, ordinal: u16) -> u32,
    /// `PostMessage`.
    pub r3_post_message: extern "C" fn(cx: Cx<'_>, hwnd: u16, msg: u16, wparam: u16, lparam: u32) -> bool,
    /// `PostAppMessage`.
    pub r3_post_app_message: extern "C" fn(cx: Cx<'_>, task: u16, msg: u16, wparam: u16, lparam: u32) -> bool,
    /// `SendMessage`.
    pub r3_send_message: extern "C" fn(cx: Cx<'_>, hwnd: u16, msg: u16, wparam: u16, lparam: u32) -> u32,
    /// `PeekMessage`.
    pub r3_peek_message: extern "C" fn(cx: Cx<'_>, hwnd: u16, min: u16, max: u16, remove: bool) -> ROption<Msg>,
    /// `DispatchMessage`.
    pub r3_dispatch_message: extern "C" fn(cx: Cx<'_>, msg: &Msg) -> u32,
    /// `CreateWindow` (0 on failure).
    pub r3_create_window: extern "C" fn(cx: Cx<'_>, class: RStr<'_>, title: RStr<'_>, wndproc: u32, parent: u16) -> u16,
    /// `DestroyWindow`.
    pub r3_destroy_window: extern "C" fn(cx: Cx<'_>, hwnd: u16) -> bool,
    /// `SetMessageQueue`.
    pub r3_set_message_queue: extern "C" fn(cx: Cx<'_>, size: u32) -> bool,
    /// `PostQuitMessage`.
    pub r3_post_quit_message: extern "C" fn(cx: Cx<'_>, code: u16),
    /// `MessageBox`: the answer.
    pub r3_message_box: extern "C" fn(cx: Cx<'_>, hwnd: u16, text: RStr<'_>, caption: RStr<'_>, flags: u32) -> u32,
    /// `GetCurrentTask`.
    pub r3_get_current_task: extern "C" fn(cx: Cx<'_>) -> u16,
    /// `LoadLibrary`: the module handle, or an error below 32.
    pub r3_load_library: extern "C" fn(cx: Cx<'_>, name: RStr<'_>) -> u32,
    /// `GetProcAddress` by name, or by ordinal when `name` is empty.
    pub r3_get_proc_address: extern "C" fn(cx: Cx<'_>, module: u16, name: RStr<'_>, ordinal: u16) -> u32,
    /// `FreeLibrary`.
    pub r3_free_library: extern "C" fn(cx: Cx<'_>, module: u16) -> bool,
    /// Read the bytes behind a 16:16 data pointer: up to `out.len()`, to
    /// the end of the segment; how many were copied.
    #[sabi(last_prefix_field)]
    pub r3_read_far: extern "C" fn(cx: Cx<'_>, address: u32, out: RSliceMut<'_, u8>) -> VmmResult<u32>,

    // ---- appended after the first prefix ------------------------------------------------
    /// `GlobalAlloc` + `GlobalLock` (INT 21h AH=48h for DOS programs): a
    /// zeroed block of 1 to 65536 bytes; its 16:16 address.
    pub r3_global_alloc: extern "C" fn(cx: Cx<'_>, bytes: u32) -> VmmResult<u32>,
    /// `GlobalFree` of a block from `r3_global_alloc`.
    pub r3_global_free: extern "C" fn(cx: Cx<'_>, address: u32) -> VmmResult<()>,
    /// Write bytes through a 16:16 pointer into an allocated block.
    pub r3_write_far: extern "C" fn(cx: Cx<'_>, address: u32, data: RSlice<'_, u8>) -> VmmResult<()>,
    /// `IN` / `OUT` of the calling code's VM: `io_type` is one of
    /// `BYTE_INPUT` ... `DWORD_OUTPUT`; through the I/O port table (a
    /// trapping device's handler, else the hardware). The data read.
    pub r3_port_io: extern "C" fn(cx: Cx<'_>, io_type: u32, port: u16, data: u32) -> VmmResult<u32>,

    // ---- VPICD: hardware interrupt handlers of ring-3 code (appended) -----------------------
    /// Set the calling code's VM's handler of interrupt `vector` (its PM
    /// vector entry, the one `Set_PM_Int_Vector` writes; for V86 code, a DOS
    /// program's, its V86 entry, `Set_V86_Int_Vector`'s) to the 16:16
    /// address `handler` (an export, a call-back of that mode, or the
    /// default `FFFE:n`; 0 puts back the entry the VM started with). The
    /// previous entry (0 for the default).
    pub r3_set_int_vector: extern "C" fn(cx: Cx<'_>, vector: u8, handler: u32) -> VmmResult<u32>,

    // ---- faults of ring-3 code (appended) -------------------------------------------------------
    /// Execute an instruction that raises processor exception `vector`
    /// (00h-1Fh, not 02h): offered to the fault hooks and the VM's handler;
    /// `FAILED` when nothing handled it (the program ends after its step).
    pub r3_fault: extern "C" fn(cx: Cx<'_>, vector: u8) -> VmmResult<()>,

    // ---- the VM's PM vector table (appended) ---------------------------------------------------
    /// The calling code's VM's PM vector entry for interrupt `vector` (V86
    /// code: its V86 entry) as a 16:16 address (whoever wrote it:
    /// `Set_PM_Int_Vector` / `Set_V86_Int_Vector` or `r3_set_int_vector`),
    /// 0 while it is the VMM's default.
    pub r3_get_int_vector: extern "C" fn(cx: Cx<'_>, vector: u8) -> VmmResult<u32>,
    // ---- string and REP port I/O (appended) --------------------------------------------------
    /// `INS`/`OUTS` of the calling code's VM as one access: `io_type` is
    /// the element's `BYTE_INPUT` ... `DWORD_OUTPUT` with `STRING_IO` and
    /// optionally `REP_IO`; `data` holds the elements (written for output,
    /// filled for input; one element without `REP_IO`). The host puts
    /// them in a block of the VM, points the client's DS:SI or ES:DI (and
    /// CX) at it and dispatches one string access through the port table.
    pub r3_string_io: extern "C" fn(cx: Cx<'_>, io_type: u32, port: u16, data: RSliceMut<'_, u8>) -> VmmResult<()>,
}

/// `VPICD_IRQ_Descriptor` as the typed `VPICD_Virtualize_IRQ` passes it:
/// the DDK's fields with closures for the five procedures.
#[repr(C)]
#[derive(StableAbi)]
pub struct IrqDescriptor {
    /// `VID_IRQ_Number`: 0-15.
    pub irq: u16,
    /// `VID_Options`: `VPICD_OPT_*`.
    pub options: u16,
    /// `VID_Hw_Int_Proc` (required): EAX IRQ handle, EBX current VM, EDX
    /// `VID_Hw_Int_Ref` with `VPICD_OPT_REF_DATA`; carry set = not mine.
    pub hw_int: RawCallback,
    /// `VID_Virt_Int_Proc`: EAX handle, EBX VM.
    pub virt_int: ROption<RawCallback>,
    /// `VID_EOI_Proc`: EAX handle, EBX VM.
    pub eoi: ROption<RawCallback>,
    /// `VID_Mask_Change_Proc`: EAX handle, EBX VM, ECX 0 unmasking.
    pub mask_change: ROption<RawCallback>,
    /// `VID_IRET_Proc`: EAX handle, EBX VM, carry set = time-out.
    pub iret: ROption<RawCallback>,
    /// `VID_IRET_Time_Out` in ms (0 = none).
    pub iret_time_out: u32,
    /// `VID_Hw_Int_Ref` (4.0).
    pub hw_int_ref: u32,
}

/// What `VPICD_Get_IRQ_Complete_Status` returns.
#[repr(C)]
#[derive(StableAbi, Copy, Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct IrqStatus {
    /// ECX: `VPICD_STAT_*` bits.
    pub status: u32,
    /// CF: the IRQ is virtualized.
    pub virtualized: bool,
}

/// VPICD's services (device 3). Every entry returns [`VmmError::FATAL`]
/// after the "Invalid VxD dynamic link call" a missing VPICD (or a 4.0
/// service under Windows 3.1) makes, [`VmmError::VIOLATION`] for a call
/// refused by a rule, [`VmmError::INVALID_HANDLE`] for a bad IRQ handle.
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = VpicdServices_Ref)))]
#[sabi(missing_field(option))]
pub struct VpicdServices {
    /// `VPICD_Get_Version`: AH.AL.
    pub get_version: extern "C" fn(cx: Cx<'_>) -> VmmResult<u32>,
    /// `VPICD_Virtualize_IRQ`: the IRQ handle; `FAILED` (carry) when the
    /// IRQ is taken or invalid.
    pub virtualize_irq: extern "C" fn(cx: Cx<'_>, descriptor: IrqDescriptor) -> VmmResult<u32>,
    /// `VPICD_Set_Int_Request` (`set`) / `VPICD_Clear_Int_Request`.
    pub set_int_request: extern "C" fn(cx: Cx<'_>, handle: u32, vm: u32, set: bool) -> VmmResult<()>,
    /// `VPICD_Phys_EOI`.
    pub phys_eoi: extern "C" fn(cx: Cx<'_>, handle: u32) -> VmmResult<()>,
    /// `VPICD_Get_Complete_Status` (`complete`) / `VPICD_Get_Status`.
    pub get_status: extern "C" fn(cx: Cx<'_>, handle: u32, vm: u32, complete: bool) -> VmmResult<u32>,
    /// `VPICD_Test_Phys_Request`: the physical request bit.
    pub test_phys_request: extern "C" fn(cx: Cx<'_>, handle: u32) -> VmmResult<bool>,
    /// `VPICD_Physically_Mask` (0), `VPICD_Physically_Unmask` (1),
    /// `VPICD_Set_Auto_Masking` (2).
    pub physical_mask: extern "C" fn(cx: Cx<'_>, handle: u32, mode: u32) -> VmmResult<()>,
    /// `VPICD_Get_IRQ_Complete_Status` of an IRQ number.
    pub get_irq_complete_status: extern "C" fn(cx: Cx<'_>, irq: u32) -> VmmResult<IrqStatus>,
    /// `VPICD_Convert_Handle_To_IRQ`.
    pub convert_handle_to_irq: extern "C" fn(cx: Cx<'_>, handle: u32) -> VmmResult<u32>,
    /// `VPICD_Convert_IRQ_To_Int` for `vm`.
    pub convert_irq_to_int: extern "C" fn(cx: Cx<'_>, irq: u32, vm: u32) -> VmmResult<u32>,
    /// `VPICD_Convert_Int_To_IRQ` (the current VM's mapping): `NOT_FOUND`
    /// when the vector is not a hardware interrupt's.
    pub convert_int_to_irq: extern "C" fn(cx: Cx<'_>, vector: u32) -> VmmResult<u32>,
    /// `VPICD_Force_Default_Owner`: `vm` 0 makes the IRQ global.
    pub force_default_owner: extern "C" fn(cx: Cx<'_>, irq: u32, vm: u32) -> VmmResult<()>,
    /// `VPICD_Force_Default_Behavior`: un-virtualize; the handle is invalid
    /// afterwards.
    pub force_default_behavior: extern "C" fn(cx: Cx<'_>, handle: u32) -> VmmResult<()>,
    /// `VPICD_Virtual_EOI` (4.0): the EOI procedures run as for the VM's EOI.
    pub virtual_eoi: extern "C" fn(cx: Cx<'_>, handle: u32, vm: u32) -> VmmResult<()>,
    /// `VPICD_Get_Virtualization_Count` (4.0).
    #[sabi(last_prefix_field)]
    pub get_virtualization_count: extern "C" fn(cx: Cx<'_>, irq: u32) -> VmmResult<u32>,
    /// `VPICD_Call_When_Hw_Int`: `callback` runs on every physical
    /// interrupt (EAX = IRQ, EBX = current VM), last installed first,
    /// before the IRQ's `Hw_Int`; `Ok(true)` if a hook was installed before
    /// it (the DDK's ESI).
    pub call_when_hw_int: extern "C" fn(cx: Cx<'_>, callback: RawCallback) -> VmmResult<bool>,
}

/// A block of the message server's local heap, as `_SHELL_LocalAllocEx`
/// returns it.
#[repr(C)]
#[derive(StableAbi, Copy, Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct LocalBlock {
    /// EAX: the block's 16:16 address (`selector << 16 | offset`), for
    /// ring-3 code and `_SHELL_LocalFree`; 0 on failure.
    pub address: u32,
    /// EDX: the same bytes as a flat (linear) address for ring-0 code.
    pub linear: u32,
}

/// What `_SHELL_BroadcastSystemMessage` returns.
#[repr(C)]
#[derive(StableAbi, Copy, Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct BroadcastResult {
    /// EAX: `BSM_ERROR_SUCCESS` (1), `BSM_ERROR_SOMEONE_FAILED` (0) or
    /// `BSM_ERROR_OUT_OF_MEMORY` (-1: could not broadcast).
    pub result: u32,
    /// `*lpdwRecipients` afterwards: the `BSM_*` recipient classes that got
    /// the message.
    pub recipients: u32,
}

/// SHELL's services (device 0x17): message boxes, appy time, the 16-bit DLL
/// services, `ShellExecute`, broadcasts and `_SHELL_PostMessage`. Every
/// entry returns [`VmmError::FATAL`] after the "Invalid VxD dynamic link
/// call" a missing SHELL (or a 4.0 service under Windows 3.1) makes, and
/// [`VmmError::VIOLATION`] for a call refused by a rule.
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = ShellServices_Ref)))]
#[sabi(missing_field(option))]
pub struct ShellServices {
    /// `SHELL_Get_Version`: AH.AL.
    pub shell_get_version: extern "C" fn(cx: Cx<'_>) -> VmmResult<u32>,
    /// `SHELL_Resolve_Contention`: the winning VM; `FAILED` if unresolved.
    pub shell_resolve_contention:
        extern "C" fn(cx: Cx<'_>, owner: u32, contender: u32, device: RStr<'_>) -> VmmResult<u32>,
    /// `SHELL_SYSMODAL_Message`: the `ID*` answer. `caption` `None` is the
    /// standard caption.
    pub shell_sysmodal_message:
        extern "C" fn(cx: Cx<'_>, vm: u32, flags: u32, text: RStr<'_>, caption: ROption<RStr<'_>>) -> VmmResult<u32>,
    /// `SHELL_Message`: the event handle; the callback gets the answer in
    /// EAX.
    pub shell_message: extern "C" fn(
        cx: Cx<'_>,
        vm: u32,
        flags: u32,
        text: RStr<'_>,
        caption: ROption<RStr<'_>>,
        callback: ROption<RawCallback>,
    ) -> VmmResult<u32>,
    /// `SHELL_GetVMInfo`: `SGVMI_*` bits.
    pub shell_get_vm_info: extern "C" fn(cx: Cx<'_>, vm: u32) -> VmmResult<u32>,
    /// `_SHELL_PostMessage`: non-zero if queued; the callback gets
    /// PostMessage's result in EAX.
    pub post_message: extern "C" fn(
        cx: Cx<'_>,
        hwnd: u32,
        msg: u32,
        wparam: u32,
        lparam: u32,
        callback: ROption<RawCallback>,
    ) -> VmmResult<u32>,
    /// `_SHELL_ShellExecute` with the SHEXPACKET's bytes: above 32 on
    /// success, else the error.
    pub shell_execute: extern "C" fn(cx: Cx<'_>, packet: RSlice<'_, u8>) -> VmmResult<u32>,
    /// `_SHELL_PostShellMessage`: non-zero if posted.
    pub post_shell_message: extern "C" fn(cx: Cx<'_>, wparam: u32, lparam: u32) -> VmmResult<u32>,
    /// `_SHELL_QueryAppyTimeAvailable`: `QAAFL_*` bits, 0 if unavailable.
    pub query_appy_time_available: extern "C" fn(cx: Cx<'_>) -> VmmResult<u32>,
    /// `_SHELL_CallAtAppyTime`: the appy-time event handle, 0 on failure.
    /// The callback gets the `CAAFL_*` flags in EAX.
    pub call_at_appy_time:
        extern "C" fn(cx: Cx<'_>, callback: RawCallback, flags: u32, timeout_ms: u32) -> VmmResult<u32>,
    /// `_SHELL_CancelAppyTimeEvent` (0 is a no-op).
    pub cancel_appy_time_event: extern "C" fn(cx: Cx<'_>, handle: u32) -> VmmResult<()>,
    /// `_SHELL_BroadcastSystemMessage`; `recipients` `None` is a NULL
    /// `lpdwRecipients` (everyone).
    pub broadcast_system_message: extern "C" fn(
        cx: Cx<'_>,
        flags: u32,
        recipients: ROption<u32>,
        msg: u32,
        wparam: u32,
        lparam: u32,
    ) -> VmmResult<BroadcastResult>,
    /// `_SHELL_HookSystemBroadcast`: the hook handle, 0 on failure. The
    /// callback gets EAX = uMsg, ECX = wParam, EDX = lParam and returns its
    /// answer in EAX.
    pub hook_system_broadcast: extern "C" fn(cx: Cx<'_>, callback: RawCallback, call_order: u32) -> VmmResult<u32>,
    /// `_SHELL_UnhookSystemBroadcast` (0 is a no-op).
    pub unhook_system_broadcast: extern "C" fn(cx: Cx<'_>, handle: u32) -> VmmResult<()>,
    /// `_SHELL_LocalAllocEx`: both addresses 0 on failure.
    pub local_alloc_ex:
        extern "C" fn(cx: Cx<'_>, flags: u32, bytes: u32, data: ROption<RSlice<'_, u8>>) -> VmmResult<LocalBlock>,
    /// `_SHELL_LocalFree`: 0 on success, the address on failure.
    pub local_free: extern "C" fn(cx: Cx<'_>, address: u32) -> VmmResult<u32>,
    /// `_SHELL_LoadLibrary`: the module handle, or the error (0-31).
    pub load_library: extern "C" fn(cx: Cx<'_>, name: RStr<'_>) -> VmmResult<u32>,
    /// `_SHELL_FreeLibrary`.
    pub free_library: extern "C" fn(cx: Cx<'_>, hinstance: u32) -> VmmResult<()>,
    /// `_SHELL_GetProcAddress` by name, or by ordinal when `name` is empty:
    /// the 16:16 address, 0 if there is none.
    pub get_proc_address: extern "C" fn(cx: Cx<'_>, hinstance: u32, name: RStr<'_>, ordinal: u16) -> VmmResult<u32>,
    /// `_SHELL_CallDll`: `dll` empty calls the raw 16:16 `address`;
    /// otherwise `proc_name`, or `ordinal` when the name is empty. `args`
    /// are the argument bytes as they lie on the ring-3 stack.
    #[sabi(last_prefix_field)]
    pub call_dll: extern "C" fn(
        cx: Cx<'_>,
        dll: RStr<'_>,
        proc_name: RStr<'_>,
        ordinal: u16,
        address: u32,
        args: RSlice<'_, u8>,
    ) -> VmmResult<u32>,
}

/// The root module every plugin file exports.
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = PluginRoot_Ref)))]
#[sabi(missing_field(panic))]
pub struct PluginRoot {
    /// Describe the module (no instance needed).
    pub info: extern "C" fn() -> PluginInfo,
    /// The factory: create a new, independent instance.
    #[sabi(last_prefix_field)]
    pub create: extern "C" fn(cx: &HostCx) -> PluginResult<RawInstance>,
}

impl RootModule for PluginRoot_Ref {
    declare_root_module_statics! {PluginRoot_Ref}
    const BASE_NAME: &'static str = "vmm_plugin";
    const NAME: &'static str = "vmm plugin";
    const VERSION_STRINGS: VersionStrings = package_version_strings!();
}
