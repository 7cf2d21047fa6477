//! Writing a virtual device: the [`VxD`] trait, its [`Device`] descriptor
//! (the DDB), and the glue [`declare_virtual_device!`](crate::declare_virtual_device)
//! generates.

use core::ffi::c_void;
use std::sync::OnceLock;

use abi_stable::prefix_type::{PrefixTypeTrait, WithMetadata};
use abi_stable::staticref;
use abi_stable::std_types::{RNone, ROption, RSlice, RSome, RStr, RVec};

use crate::abi::{
    ApiMode, Carry, ClientRegs, ControlArgs, DeviceDescriptor, HostCx, InstanceVtable, InstanceVtable_Ref, ModuleKind,
    PluginErrorKind, PluginInfo, PluginResult, PluginRoot, PluginRoot_Ref, RawInstance, RealModeInitResult, Resume,
    ServiceCall, Step,
};
use crate::client::Client;
use crate::ddk::{
    DDK_VERSION_400, DEVICE_LOAD_OK, DUPLICATE_DEVICE_ID, DUPLICATE_FROM_INT2F, LOADING_FROM_INT2F,
    UNDEFINED_DEVICE_ID, UNDEFINED_INIT_ORDER, control_message_name,
};
use crate::guard::{InstanceBox, entry, entry_in, error};
use crate::handles::VmHandle;
use crate::vmm::Vmm;

/// A device's DDB as its author declares it. Build it in a `const` with the
/// builder methods:
///
/// ```
/// use vmm_plugin_api::prelude::*;
/// const DEVICE: Device = Device::new("MYVXD")
///     .version(1, 0)
///     .id(0x3FF0)
///     .pm_api()
///     .services(&["MYVXD_Get_Version", "MYVXD_Do_Thing"]);
/// assert_eq!(DEVICE.device_id, 0x3FF0);
/// ```
#[derive(Copy, Clone, Debug)]
pub struct Device {
    /// `DDB_Name`, 1 to 8 characters.
    pub name: &'static str,
    /// Major version.
    pub major_version: u8,
    /// Minor version.
    pub minor_version: u8,
    /// Device ID, `UNDEFINED_DEVICE_ID` unless the device has services or
    /// APIs.
    pub device_id: u16,
    /// Init order.
    pub init_order: u32,
    /// The device has a V86 API procedure.
    pub has_v86_api: bool,
    /// The device has a PM API procedure.
    pub has_pm_api: bool,
    /// Service names by ordinal; ordinal 0 is `<Name>_Get_Version`.
    pub services: &'static [&'static str],
    /// `DDK_VERSION_310` or `DDK_VERSION_400`.
    pub sdk_version: u16,
    /// Handles `Sys_Dynamic_Device_Init` / `Sys_Dynamic_Device_Exit`.
    pub dynamic: bool,
}

impl Device {
    /// A 4.0 device named `name`, version 1.0, `UNDEFINED_DEVICE_ID`,
    /// `UNDEFINED_INIT_ORDER`, no APIs, no services.
    pub const fn new(name: &'static str) -> Self {
        Device {
            name,
            major_version: 1,
            minor_version: 0,
            device_id: UNDEFINED_DEVICE_ID,
            init_order: UNDEFINED_INIT_ORDER,
            has_v86_api: false,
            has_pm_api: false,
            services: &[],
            sdk_version: DDK_VERSION_400,
            dynamic: false,
        }
    }
    /// Set the version.
    pub const fn version(mut self, major: u8, minor: u8) -> Self {
        self.major_version = major;
        self.minor_version = minor;
        self
    }
    /// Set the device ID.
    pub const fn id(mut self, device_id: u16) -> Self {
        self.device_id = device_id;
        self
    }
    /// Set the init order.
    pub const fn init_order(mut self, init_order: u32) -> Self {
        self.init_order = init_order;
        self
    }
    /// Declare a V86 API procedure ([`VxD::v86_api`]).
    pub const fn v86_api(mut self) -> Self {
        self.has_v86_api = true;
        self
    }
    /// Declare a PM API procedure ([`VxD::pm_api`]).
    pub const fn pm_api(mut self) -> Self {
        self.has_pm_api = true;
        self
    }
    /// Declare the service table (ordinal 0 first: `<Name>_Get_Version`).
    pub const fn services(mut self, services: &'static [&'static str]) -> Self {
        self.services = services;
        self
    }
    /// Set `DDB_SDK_Version` (`DDK_VERSION_310` for a Windows 3.1 device).
    pub const fn sdk_version(mut self, version: u16) -> Self {
        self.sdk_version = version;
        self
    }
    /// Declare that the device can be loaded and unloaded dynamically.
    pub const fn dynamic(mut self) -> Self {
        self.dynamic = true;
        self
    }
}

/// What real-mode initialization is told (BX flags and EDX reference data).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct RealModeInit {
    /// BX: `DUPLICATE_DEVICE_ID`, `DUPLICATE_FROM_INT2F`,
    /// `LOADING_FROM_INT2F`.
    pub flags: u32,
    /// EDX: reference data from the startup broadcast.
    pub reference_data: u32,
}

impl RealModeInit {
    /// A device with this ID is already loaded.
    pub fn duplicate_device_id(&self) -> bool {
        self.flags & DUPLICATE_DEVICE_ID != 0
    }
    /// The already-loaded copy came from the INT 2Fh 1605h list.
    pub fn duplicate_from_int2f(&self) -> bool {
        self.flags & DUPLICATE_FROM_INT2F != 0
    }
    /// This copy is loaded through the INT 2Fh 1605h list.
    pub fn loading_from_int2f(&self) -> bool {
        self.flags & LOADING_FROM_INT2F != 0
    }
    /// Answer with `ax` (`DEVICE_LOAD_OK`, `ABORT_DEVICE_LOAD`,
    /// `ABORT_WIN386_LOAD`, optionally `| NO_FAIL_MESSAGE`), keeping the
    /// reference data.
    pub fn answer(&self, ax: u32) -> RealModeInitResult {
        RealModeInitResult { ax, edx: self.reference_data }
    }
}

/// A system control message: EAX = message, EBX = VM, EDX/ESI/EDI =
/// parameters. Match `message` against the constants in [`crate::ddk`].
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct ControlMessage {
    /// The message number.
    pub message: u32,
    /// EBX: the VM the message concerns.
    pub vm: VmHandle,
    /// EDX (for example the `VNE_*` flags of `VM_Not_Executeable`).
    pub edx: u32,
    /// ESI.
    pub esi: u32,
    /// EDI.
    pub edi: u32,
}

impl ControlMessage {
    /// The DDK name, such as `"Device_Init"`.
    pub fn name(&self) -> &'static str {
        control_message_name(self.message)
    }
}

impl From<ControlArgs> for ControlMessage {
    fn from(a: ControlArgs) -> Self {
        ControlMessage { message: a.message, vm: VmHandle(a.vm), edx: a.edx, esi: a.esi, edi: a.edi }
    }
}

/// A call of a device's V86 or PM API procedure from ring 3.
#[derive(Copy, Clone, Debug)]
pub struct ApiCall<'a> {
    /// Which entry point the caller reached.
    pub mode: ApiMode,
    /// EBX: the calling VM.
    pub vm: VmHandle,
    /// The caller's registers. Report errors with
    /// [`Client::set_carry`]; by convention AH selects the function.
    pub client: Client<'a>,
}

/// A virtual device. Implement it, then export it with
/// [`declare_virtual_device!`](crate::declare_virtual_device).
///
/// Every method takes `&self`: the VMM re-enters devices (an event can run
/// inline inside a service, an interrupt can arrive during an API call), so
/// keep state in [`crate::ReentrancyCell`]s or `Cell`s and never hold a
/// borrow across a VMM service that may call back into the device.
pub trait VxD: Sized + 'static {
    /// The device's DDB.
    const DEVICE: Device;

    /// The factory: a new instance with its own state. Each load of the
    /// device (even of the same file) is a separate instance.
    fn create(vmm: &Vmm<'_>) -> Result<Self, String>;

    /// Real-mode initialization. The default loads the device; a device that
    /// can coexist with an earlier copy of itself answers
    /// `ABORT_DEVICE_LOAD | NO_FAIL_MESSAGE` when `init.duplicate_device_id()`.
    fn real_mode_init(&self, vmm: &Vmm<'_>, init: RealModeInit) -> RealModeInitResult {
        let _ = vmm;
        init.answer(DEVICE_LOAD_OK)
    }

    /// The control procedure. Unhandled messages must return
    /// `Carry::Clear` (the default).
    fn control(&self, vmm: &Vmm<'_>, msg: ControlMessage) -> Carry {
        let _ = (vmm, msg);
        Carry::Clear
    }

    /// The V86-mode API procedure (DOS callers). The default fails the call
    /// with CF set.
    fn v86_api(&self, vmm: &Vmm<'_>, call: ApiCall<'_>) {
        let _ = vmm;
        call.client.set_carry(true);
    }

    /// The protected-mode API procedure (Windows callers). The default fails
    /// the call with CF set.
    fn pm_api(&self, vmm: &Vmm<'_>, call: ApiCall<'_>) {
        let _ = vmm;
        call.client.set_carry(true);
    }

    /// A service of the device's table, ordinal 1 and up (the SDK answers
    /// ordinal 0, `Get_Version`, with the device version and CF clear).
    fn service(&self, vmm: &Vmm<'_>, ordinal: u16, call: &mut ServiceCall) -> Carry {
        let _ = (vmm, ordinal, call);
        Carry::Set
    }

    /// Hot reload: state to hand to the next version of this device, or
    /// `None` to start it fresh.
    fn save_state(&self, vmm: &Vmm<'_>) -> Option<Vec<u8>> {
        let _ = vmm;
        None
    }

    /// Hot reload: take over state saved by the previous version. An error
    /// refuses the reload; the old version keeps running.
    fn restore_state(&self, vmm: &Vmm<'_>, state: &[u8]) -> Result<(), String> {
        let _ = (vmm, state);
        Ok(())
    }
}

/// Convert the author's [`Device`] into the ABI descriptor (the service
/// names are copied into a leaked table once per plugin copy).
fn descriptor(device: &Device) -> DeviceDescriptor {
    let services: Vec<RStr<'static>> = device.services.iter().map(|s| RStr::from_str(s)).collect();
    let services: &'static [RStr<'static>] = Box::leak(services.into_boxed_slice());
    DeviceDescriptor {
        name: RStr::from_str(device.name),
        major_version: device.major_version,
        minor_version: device.minor_version,
        device_id: device.device_id,
        init_order: device.init_order,
        has_v86_api: device.has_v86_api,
        has_pm_api: device.has_pm_api,
        services: RSlice::from_slice(services),
        sdk_version: device.sdk_version,
        dynamic: device.dynamic,
    }
}

/// Entry points of device instances, shared by every instance of `D`.
struct DeviceGlue<D>(D);

impl<D: VxD> DeviceGlue<D> {
    extern "C" fn drop(this: *const c_void) {
        let _ = entry(None, || {
            // SAFETY: the host drops each instance once, with its own pointer.
            unsafe { InstanceBox::<D>::drop_raw(this) };
            Ok(())
        });
    }

    extern "C" fn real_mode_init(
        this: *const c_void,
        cx: &HostCx,
        flags: u32,
        reference_data: u32,
    ) -> PluginResult<RealModeInitResult> {
        entry_in(this, Some(cx), || {
            // SAFETY: `this` is an instance of `D` created by `create`.
            let dev = unsafe { InstanceBox::<D>::get(this) };
            Ok(dev.real_mode_init(&Vmm::new(cx), RealModeInit { flags, reference_data }))
        })
    }

    extern "C" fn control(this: *const c_void, cx: &HostCx, args: &ControlArgs) -> PluginResult<Carry> {
        entry_in(this, Some(cx), || {
            // SAFETY: as above.
            let dev = unsafe { InstanceBox::<D>::get(this) };
            Ok(dev.control(&Vmm::new(cx), ControlMessage::from(*args)))
        })
    }

    extern "C" fn api(
        this: *const c_void,
        cx: &HostCx,
        mode: ApiMode,
        vm: u32,
        client: *mut ClientRegs,
    ) -> PluginResult<()> {
        entry_in(this, Some(cx), || {
            // SAFETY: as above.
            let dev = unsafe { InstanceBox::<D>::get(this) };
            // SAFETY: the host passes the calling VM's live client block.
            let client = unsafe { Client::from_raw(client) }
                .ok_or_else(|| error(PluginErrorKind::Failed, "API call without client registers"))?;
            let call = ApiCall { mode, vm: VmHandle(vm), client };
            let vmm = Vmm::new(cx);
            match mode {
                ApiMode::V86 => dev.v86_api(&vmm, call),
                ApiMode::Pm => dev.pm_api(&vmm, call),
            }
            Ok(())
        })
    }

    extern "C" fn service(
        this: *const c_void,
        cx: &HostCx,
        ordinal: u32,
        call: &mut ServiceCall,
    ) -> PluginResult<Carry> {
        entry_in(this, Some(cx), || {
            if ordinal == 0 {
                call.regs.eax = ((D::DEVICE.major_version as u32) << 8) | D::DEVICE.minor_version as u32;
                return Ok(Carry::Clear);
            }
            // SAFETY: as above.
            let dev = unsafe { InstanceBox::<D>::get(this) };
            Ok(dev.service(&Vmm::new(cx), ordinal as u16, call))
        })
    }

    extern "C" fn save_state(this: *const c_void, cx: &HostCx) -> PluginResult<ROption<RVec<u8>>> {
        entry_in(this, Some(cx), || {
            // SAFETY: as above.
            let dev = unsafe { InstanceBox::<D>::get(this) };
            Ok(match dev.save_state(&Vmm::new(cx)) {
                Some(v) => RSome(RVec::from(v)),
                None => RNone,
            })
        })
    }

    extern "C" fn restore_state(this: *const c_void, cx: &HostCx, state: RSlice<'_, u8>) -> PluginResult<Carry> {
        entry_in(this, Some(cx), || {
            // SAFETY: as above.
            let dev = unsafe { InstanceBox::<D>::get(this) };
            dev.restore_state(&Vmm::new(cx), state.as_slice())
                .map(|()| Carry::Clear)
                .map_err(|e| error(PluginErrorKind::Failed, &e))
        })
    }

    staticref! {
        const VTABLE_VAL: WithMetadata<InstanceVtable> = WithMetadata::new(InstanceVtable {
            drop: Self::drop,
            real_mode_init: Self::real_mode_init,
            control: Self::control,
            api: Self::api,
            service: Self::service,
            save_state: Self::save_state,
            restore_state: Self::restore_state,
            start: not_ring3_start,
            resume: not_ring3_resume,
            call_export: not_ring3_export,
        })
    }

    const VTABLE: InstanceVtable_Ref = InstanceVtable_Ref(Self::VTABLE_VAL.as_prefix());

    extern "C" fn create(cx: &HostCx) -> PluginResult<RawInstance> {
        entry(Some(cx), || {
            let device = D::create(&Vmm::new(cx)).map_err(|e| error(PluginErrorKind::Failed, &e))?;
            Ok(RawInstance { this: InstanceBox::into_raw(device), vtable: Self::VTABLE })
        })
    }
}

/// Save/restore entry points of modules that never hand over state.
#[doc(hidden)]
pub extern "C" fn __no_state(_: *const c_void, cx: &HostCx) -> PluginResult<ROption<RVec<u8>>> {
    entry(Some(cx), || Ok(RNone))
}

#[doc(hidden)]
pub extern "C" fn __no_restore(_: *const c_void, cx: &HostCx, _: RSlice<'_, u8>) -> PluginResult<Carry> {
    entry(Some(cx), || Ok(Carry::Clear))
}

pub(crate) extern "C" fn not_ring3_start(_: *const c_void, cx: &HostCx, _: RStr<'_>) -> PluginResult<Step> {
    entry(Some(cx), || Err(error(PluginErrorKind::Failed, "a virtual device is not a ring-3 program")))
}

pub(crate) extern "C" fn not_ring3_resume(_: *const c_void, cx: &HostCx, _: &Resume) -> PluginResult<Step> {
    entry(Some(cx), || Err(error(PluginErrorKind::Failed, "a virtual device is not a ring-3 program")))
}

pub(crate) extern "C" fn not_ring3_export(
    _: *const c_void,
    cx: &HostCx,
    _: u16,
    _: RSlice<'_, u8>,
) -> PluginResult<u32> {
    entry(Some(cx), || Err(error(PluginErrorKind::Failed, "a virtual device has no ring-3 exports")))
}

/// Support for [`declare_virtual_device!`](crate::declare_virtual_device); not
/// for direct use.
#[doc(hidden)]
pub fn __vxd_info<D: VxD>(cache: &'static OnceLock<PluginInfo>) -> PluginInfo {
    *cache.get_or_init(|| PluginInfo {
        kind: ModuleKind::Vxd,
        api_version: RStr::from_str(env!("CARGO_PKG_VERSION")),
        panic_unwind: cfg!(panic = "unwind"),
        device: RSome(descriptor(&D::DEVICE)),
        module: RNone,
    })
}

/// Support for [`declare_virtual_device!`](crate::declare_virtual_device).
#[doc(hidden)]
pub fn __vxd_root<D: VxD>(info: extern "C" fn() -> PluginInfo) -> PluginRoot_Ref {
    crate::guard::mark_separate_copy();
    PluginRoot { info, create: DeviceGlue::<D>::create }.leak_into_prefix()
}

/// The root module of device `D` for use *inside the host process*: a
/// device linked into the same binary as the host (a test, or a host that
/// embeds devices) registers it with the machine instead of building a
/// plugin library. It shares the host's `std` and `tracing`.
pub fn in_process<D: VxD>() -> PluginRoot_Ref {
    extern "C" fn info<D: VxD>() -> PluginInfo {
        static CACHE: std::sync::Mutex<Vec<(core::any::TypeId, PluginInfo)>> = std::sync::Mutex::new(Vec::new());
        let id = core::any::TypeId::of::<D>();
        let mut cache = CACHE.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, i)) = cache.iter().find(|(t, _)| *t == id) {
            return *i;
        }
        let i = PluginInfo {
            kind: ModuleKind::Vxd,
            api_version: RStr::from_str(env!("CARGO_PKG_VERSION")),
            panic_unwind: cfg!(panic = "unwind"),
            device: RSome(descriptor(&D::DEVICE)),
            module: RNone,
        };
        cache.push((id, i));
        i
    }
    PluginRoot { info: info::<D>, create: DeviceGlue::<D>::create }.leak_into_prefix()
}

/// Export a [`VxD`] implementation as this plugin's device.
///
/// ```
/// use vmm_plugin_api::prelude::*;
///
/// struct Hello;
/// impl VxD for Hello {
///     const DEVICE: Device = Device::new("HELLO");
///     fn create(_: &Vmm<'_>) -> Result<Self, String> { Ok(Hello) }
/// }
/// declare_virtual_device!(Hello);
/// ```
///
/// The crate must be a `cdylib` built with `panic = "unwind"` (the default);
/// a `panic = "abort"` build fails to compile here.
#[macro_export]
macro_rules! declare_virtual_device {
    ($device:ty) => {
        const _: () = ::core::assert!(
            ::core::cfg!(panic = "unwind"),
            "VxD plugins must be built with panic = \"unwind\": the SDK turns panics into error results"
        );

        static __VMM_PLUGIN_INFO: ::std::sync::OnceLock<$crate::abi::PluginInfo> = ::std::sync::OnceLock::new();

        extern "C" fn __vmm_plugin_info() -> $crate::abi::PluginInfo {
            $crate::device::__vxd_info::<$device>(&__VMM_PLUGIN_INFO)
        }

        $crate::__export_root_module!($crate::device::__vxd_root::<$device>(__vmm_plugin_info));
    };
}

/// Export the root module constructed by `$root` under abi_stable's loader
/// symbol. Shared by the export macros.
#[doc(hidden)]
#[macro_export]
macro_rules! __export_root_module {
    ($root:expr) => {
        #[allow(non_upper_case_globals)]
        #[unsafe(no_mangle)]
        pub static _1as_0lib_1header_0root_bmodule_bloader: $crate::__private::LibHeader = {
            extern "C" fn __vmm_erased_root() -> $crate::__private::RootModuleResult {
                fn __vmm_root() -> $crate::abi::PluginRoot_Ref {
                    $root
                }
                $crate::__private::call_root_module_loader(__vmm_root)
            }
            // SAFETY: the constructor returns the root module type the
            // header is declared for, and the layout is checked at load.
            unsafe {
                $crate::__private::LibHeader::from_constructor::<$crate::abi::PluginRoot_Ref>(
                    __vmm_erased_root,
                    $crate::__private::CheckTypeLayout::Yes,
                )
            }
        };
    };
}
