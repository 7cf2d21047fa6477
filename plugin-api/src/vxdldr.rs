//! Typed calls to VXDLDR (device 0x27, the dynamic VxD loader), from
//! [`Vmm::vxdldr`]: each method is the `VxDCall` a VxD makes, with the
//! registers filled in and the results read back, so a device never fills
//! a [`ServiceCall`] by hand. The calls go through `VxDCall`, so service
//! hooks see them.

use crate::abi::ServiceCall;
use crate::abi::VmmError;
use crate::ddk::{
    CF_MASK, HEAPZEROINIT, VXDLDR_DEV_INIT_FAILED, VXDLDR_DEV_INIT_SUCCEEDED, VXDLDR_DEVICE_ID, VXDLDR_GET_DEVICE_LIST,
    VXDLDR_GET_VERSION, VXDLDR_INIT_DEVICE, VXDLDR_LOAD_DEVICE, VXDLDR_UNLOAD_DEVICE, VXDLDR_UNLOAD_ME, vxd_service,
    vxdldr_error_name,
};
use crate::vmm::Vmm;

/// Why a VXDLDR call failed.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum VxdldrError {
    /// VXDLDR set carry with this `VXDLDR_ERR_*` code in EAX.
    Loader(u32),
    /// VXDLDR is not loaded (its `Get_Version` came back with carry and
    /// AX = 0).
    NotLoaded,
    /// The call itself failed (a violation refused it, the heap had no
    /// room for the name, ...).
    Vmm(VmmError),
}

impl VxdldrError {
    /// The DDK name of a loader error (`VXDLDR_ERR_NO_SUCH_DEVICE`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            VxdldrError::Loader(code) => vxdldr_error_name(*code),
            VxdldrError::NotLoaded => "VXDLDR not loaded",
            VxdldrError::Vmm(_) => "VMM error",
        }
    }
}

impl From<VmmError> for VxdldrError {
    fn from(e: VmmError) -> Self {
        VxdldrError::Vmm(e)
    }
}

/// What `VXDLDR_LoadDevice` returns.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct LoadedDevice {
    /// The device's DDB (EAX).
    pub ddb: u32,
    /// What comes back in EDX (the emulator gives the DDB again): what
    /// `VXDLDR_DevInitSucceeded` / `VXDLDR_DevInitFailed` take when the
    /// caller sends `Sys_Dynamic_Device_Init` itself.
    pub device_info: u32,
}

/// One entry of `VXDLDR_GetDeviceList`: a dynamically loaded device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceListEntry {
    /// The entry's address in VXDLDR's list.
    pub address: u32,
    /// How many times it was loaded (it leaves on the last unload).
    pub load_count: u32,
    /// Its DDB.
    pub ddb: u32,
    /// Its device ID.
    pub device_id: u16,
    /// Whether it was initialized.
    pub initialized: bool,
    /// Its name (up to 15 characters).
    pub name: String,
}

/// The size of one `DeviceInfo` entry of the list.
const ENTRY: usize = 32;

/// VXDLDR's services (from [`Vmm::vxdldr`]).
pub struct Vxdldr<'v, 'a> {
    vmm: &'v Vmm<'a>,
}

impl<'v, 'a> Vxdldr<'v, 'a> {
    pub(crate) fn new(vmm: &'v Vmm<'a>) -> Self {
        Vxdldr { vmm }
    }

    /// One `VxDCall` to VXDLDR; the registers afterwards, or its error.
    fn call(&self, ordinal: u16, mut call: ServiceCall) -> Result<ServiceCall, VxdldrError> {
        self.vmm.vxd_call(vxd_service(VXDLDR_DEVICE_ID, ordinal), &mut call)?;
        if call.regs.flags & CF_MASK != 0 {
            return Err(VxdldrError::Loader(call.regs.eax));
        }
        Ok(call)
    }

    /// Run `f` with `name` as a NUL-terminated string in the ring-0 heap
    /// (its address), freeing it afterwards.
    fn with_name<T>(&self, name: &str, f: impl FnOnce(u32) -> Result<T, VxdldrError>) -> Result<T, VxdldrError> {
        let at = self.vmm.heap_allocate(name.len() as u32 + 1, HEAPZEROINIT).ok_or(VmmError::OUT_OF_MEMORY)?;
        let r = self.vmm.mem_write(at, name.as_bytes()).map_err(VxdldrError::from).and_then(|()| f(at));
        self.vmm.heap_free(at);
        r
    }

    /// `VXDLDR_GetVersion`: the version (0x0400), or `NotLoaded`.
    pub fn get_version(&self) -> Result<u16, VxdldrError> {
        match self.call(VXDLDR_GET_VERSION, ServiceCall::default()) {
            Ok(call) => Ok(call.regs.eax as u16),
            Err(VxdldrError::Loader(0)) => Err(VxdldrError::NotLoaded),
            Err(e) => Err(e),
        }
    }

    /// `VXDLDR_LoadDevice`: load the VxD file `name`; with `init`
    /// (`VXDLDR_INIT_DEVICE`) VXDLDR sends `Sys_Dynamic_Device_Init`, else
    /// the caller does and reports with [`Vxdldr::dev_init_succeeded`] or
    /// [`Vxdldr::dev_init_failed`].
    pub fn load_device(&self, name: &str, init: bool) -> Result<LoadedDevice, VxdldrError> {
        self.with_name(name, |at| {
            let mut call = ServiceCall::default();
            call.regs.eax = if init { VXDLDR_INIT_DEVICE } else { 0 };
            call.regs.edx = at;
            let out = self.call(VXDLDR_LOAD_DEVICE, call)?;
            Ok(LoadedDevice { ddb: out.regs.eax, device_info: out.regs.edx })
        })
    }

    /// `VXDLDR_UnloadDevice` by device ID.
    pub fn unload_device(&self, device_id: u16) -> Result<(), VxdldrError> {
        let mut call = ServiceCall::default();
        call.regs.ebx = device_id as u32;
        self.call(VXDLDR_UNLOAD_DEVICE, call).map(|_| ())
    }

    /// `VXDLDR_UnloadDevice` by name (BX = 0, EDX = the name).
    pub fn unload_device_by_name(&self, name: &str) -> Result<(), VxdldrError> {
        self.with_name(name, |at| {
            let mut call = ServiceCall::default();
            call.regs.edx = at;
            self.call(VXDLDR_UNLOAD_DEVICE, call).map(|_| ())
        })
    }

    /// `VXDLDR_DevInitSucceeded`: the device loaded without
    /// `VXDLDR_INIT_DEVICE` initialized.
    pub fn dev_init_succeeded(&self, device_info: u32) -> Result<(), VxdldrError> {
        let mut call = ServiceCall::default();
        call.regs.edx = device_info;
        self.call(VXDLDR_DEV_INIT_SUCCEEDED, call).map(|_| ())
    }

    /// `VXDLDR_DevInitFailed`: it did not; VXDLDR unloads it.
    pub fn dev_init_failed(&self, device_info: u32) -> Result<(), VxdldrError> {
        let mut call = ServiceCall::default();
        call.regs.edx = device_info;
        self.call(VXDLDR_DEV_INIT_FAILED, call).map(|_| ())
    }

    /// `VXDLDR_GetDeviceList`: the dynamically loaded devices, in load
    /// order (read from VXDLDR's `DeviceInfo` list).
    pub fn get_device_list(&self) -> Result<Vec<DeviceListEntry>, VxdldrError> {
        let out = self.call(VXDLDR_GET_DEVICE_LIST, ServiceCall::default())?;
        let mut list = Vec::new();
        let mut at = out.regs.eax;
        while at != 0 {
            let mut e = [0u8; ENTRY];
            self.vmm.mem_read(at, &mut e)?;
            let word = |i: usize| u32::from_le_bytes([e[i], e[i + 1], e[i + 2], e[i + 3]]);
            let name = e[16..].iter().take_while(|b| **b != 0).map(|&b| b as char).collect();
            list.push(DeviceListEntry {
                address: at,
                load_count: word(4),
                ddb: word(8),
                device_id: u16::from_le_bytes([e[12], e[13]]),
                initialized: e[14] != 0,
                name,
            });
            let next = word(0);
            if next <= at {
                // The list runs forward through one block; anything else
                // would loop.
                break;
            }
            at = next;
        }
        Ok(list)
    }

    /// `VXDLDR_UnloadMe`: unload the calling device itself (by ID; its
    /// `Sys_Dynamic_Device_Exit` comes once the current call returns).
    pub fn unload_me(&self, device_id: u16) -> Result<(), VxdldrError> {
        let mut call = ServiceCall::default();
        call.regs.ebx = device_id as u32;
        self.call(VXDLDR_UNLOAD_ME, call).map(|_| ())
    }
}
