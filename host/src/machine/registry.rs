//! The device list: every VxD instance the machine holds, in load order and
//! in init order, with the Windows device-ID rules (KB Q84000) and service
//! tables for `VxDCall` dispatch.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::PathBuf;
use std::rc::Rc;

use vmm_plugin_api::abi::DeviceDescriptor;

pub(crate) use crate::loader::Inst;
use vmm_plugin_api::ddk::UNDEFINED_DEVICE_ID;

use crate::error::LoadCause;
use crate::manifest::Origin;
use crate::vmm::ids::InstanceId;

/// One device to load, from `[[tsr]]`, `[386Enh] device` or VXDLDR.
pub(crate) struct LoadRequest {
    pub(crate) name: String,
    pub(crate) origin: Origin,
    pub(crate) from_int2f: bool,
    pub(crate) reference_data: u32,
}

/// Lifecycle of a device in the list.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum DeviceState {
    /// Loaded, real-mode init passed, init phases pending.
    Loaded,
    /// Initialized and receiving messages.
    Active,
    /// Failed an init phase or panicked: gets no more messages.
    Failed,
    /// Unloaded by VXDLDR (or replaced by a reload): its instance is gone.
    Unloaded,
}

/// The DDB fields the host keeps for a device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceInfo {
    /// `DDB_Name`.
    pub name: String,
    /// Major version.
    pub major_version: u8,
    /// Minor version.
    pub minor_version: u8,
    /// Device ID.
    pub device_id: u16,
    /// Init order.
    pub init_order: u32,
    /// Has a V86 API.
    pub has_v86_api: bool,
    /// Has a PM API.
    pub has_pm_api: bool,
    /// Service names by ordinal.
    pub services: Vec<String>,
    /// `DDB_SDK_Version`.
    pub sdk_version: u16,
    /// Can load dynamically.
    pub dynamic: bool,
}

impl DeviceInfo {
    /// Copy the plugin's descriptor into host memory.
    pub(crate) fn from_descriptor(d: &DeviceDescriptor) -> Self {
        DeviceInfo {
            name: d.name.as_str().to_string(),
            major_version: d.major_version,
            minor_version: d.minor_version,
            device_id: d.device_id,
            init_order: d.init_order,
            has_v86_api: d.has_v86_api,
            has_pm_api: d.has_pm_api,
            services: d.services.iter().map(|s| s.as_str().to_string()).collect(),
            sdk_version: d.sdk_version,
            dynamic: d.dynamic,
        }
    }

    /// Check the DDB the way the loader did; `Err` explains what is wrong.
    pub(crate) fn validate(&self) -> Result<(), LoadCause> {
        let n = &self.name;
        if n.is_empty() || n.len() > 8 {
            return Err(LoadCause::Descriptor(format!(
                "device name `{n}` must be 1 to 8 characters (DDB_Name is an 8-byte field)"
            )));
        }
        if !n.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(LoadCause::Descriptor(format!("device name `{n}` must be printable ASCII without spaces")));
        }
        if self.device_id & 0x8000 != 0 && self.device_id < 0xF000 {
            return Err(LoadCause::Descriptor(format!(
                "device ID {:#06X} has bit 15 set, which is reserved",
                self.device_id
            )));
        }
        if self.sdk_version < 0x0300 {
            return Err(LoadCause::Descriptor(format!(
                "DDB_SDK_Version {:#06X} is older than Windows 3.0",
                self.sdk_version
            )));
        }
        Ok(())
    }

    /// Why this device needs an ID it does not have, if so.
    pub(crate) fn missing_id(&self) -> Option<String> {
        if self.device_id != UNDEFINED_DEVICE_ID {
            return None;
        }
        let mut what = Vec::new();
        if self.services.len() > 1 {
            what.push(format!("{} services", self.services.len()));
        }
        if self.has_v86_api {
            what.push("a V86 API".to_string());
        }
        if self.has_pm_api {
            what.push("a PM API".to_string());
        }
        (!what.is_empty()).then(|| what.join(" and "))
    }

    /// `major.minor`.
    pub fn version(&self) -> String {
        format!("{}.{}", self.major_version, self.minor_version)
    }
}

/// One device of the machine.
#[derive(Clone)]
pub(crate) struct DeviceSlot {
    pub(crate) info: DeviceInfo,
    pub(crate) name: Rc<str>,
    pub(crate) file: PathBuf,
    pub(crate) build: String,
    /// Built into the host (its code is a `Builtin`).
    pub(crate) builtin: bool,
    pub(crate) state: DeviceState,
    pub(crate) instance: InstanceId,
    pub(crate) from_int2f: bool,
    pub(crate) reference_data: u32,
    /// Position in the order devices were accepted (breaks init-order ties).
    pub(crate) load_index: usize,
    /// Passed Sys_Critical_Init (or Sys_Dynamic_Device_Init): receives the
    /// VM and exit messages.
    pub(crate) initialized: bool,
    /// Loaded at run time through VXDLDR.
    pub(crate) dynamic: bool,
    /// `VXDLDR_LoadDevice` calls not yet matched by `VXDLDR_UnloadDevice`.
    pub(crate) load_count: u32,
}

impl DeviceSlot {
    /// Whether the device still receives messages and calls.
    pub(crate) fn alive(&self) -> bool {
        matches!(self.state, DeviceState::Loaded | DeviceState::Active)
    }

    /// The file name to show (`*SHELL` for built-ins).
    pub(crate) fn file_label(&self) -> String {
        if self.builtin { format!("*{}", self.info.name) } else { self.file.display().to_string() }
    }
}

/// Summary row for `vmm list`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceSummary {
    /// The DDB fields.
    pub info: DeviceInfo,
    /// File or `*NAME`.
    pub file: String,
    /// Content hash of the file.
    pub build: String,
    /// Whether the device is still active.
    pub active: bool,
    /// Loaded through INT 2Fh 1605h.
    pub from_int2f: bool,
}

/// The device list.
#[derive(Default)]
pub(crate) struct Registry {
    /// Devices in the order they were accepted.
    pub(crate) slots: Vec<DeviceSlot>,
    /// Indices into `slots`, sorted by init order (ties keep load order).
    pub(crate) init_order: Vec<usize>,
}

impl Registry {
    /// Re-sort by init order; equal values keep load order.
    pub(crate) fn sort(&mut self) {
        let mut order: Vec<usize> = (0..self.slots.len()).collect();
        order.sort_by_key(|&i| (self.slots[i].info.init_order, self.slots[i].load_index));
        self.init_order = order;
    }

    /// The live device with this non-zero ID.
    pub(crate) fn by_id(&self, id: u16) -> Option<usize> {
        if id == UNDEFINED_DEVICE_ID {
            return None;
        }
        self.slots.iter().position(|s| s.info.device_id == id && s.alive())
    }

    /// The slot of an instance number.
    pub(crate) fn by_instance(&self, instance: InstanceId) -> Option<usize> {
        self.slots.iter().position(|s| s.instance == instance)
    }

    /// The live device named `name` (case-insensitive).
    pub(crate) fn by_name(&self, name: &str) -> Option<usize> {
        self.slots.iter().position(|s| s.alive() && s.info.name.eq_ignore_ascii_case(name))
    }
}

/// Marks a dynamic load in progress in [`Dynamic`]'s init list: the
/// factory of the device being loaded runs before its instance number is
/// known.
pub(crate) const LOADING: InstanceId = InstanceId::HOST;

/// What dynamic loading and reloading keep between calls.
#[derive(Default)]
pub(crate) struct Dynamic {
    /// Instances in their dynamic init (factory, `restore_state`,
    /// `Sys_Dynamic_Device_Init`), where init-only services are legal.
    in_init: RefCell<Vec<InstanceId>>,
    /// The state of devices a rebuild with another name or ID swapped out,
    /// by name and ID, until a build of the device comes back.
    swapped_out: RefCell<HashMap<(String, u16), Vec<u8>>>,
}

impl Dynamic {
    pub(crate) fn in_init(&self, caller: InstanceId) -> bool {
        let init = self.in_init.borrow();
        init.contains(&caller) || init.contains(&LOADING)
    }

    pub(crate) fn with_init<T>(&self, instance: InstanceId, f: impl FnOnce() -> T) -> T {
        self.in_init.borrow_mut().push(instance);
        let r = f();
        self.in_init.borrow_mut().retain(|&i| i != instance);
        r
    }

    pub(crate) fn swap_out(&self, name: String, id: u16, state: Vec<u8>) {
        self.swapped_out.borrow_mut().insert((name, id), state);
    }

    pub(crate) fn swap_in(&self, name: String, id: u16) -> Option<Vec<u8>> {
        self.swapped_out.borrow_mut().remove(&(name, id))
    }
}
