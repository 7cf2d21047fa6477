//! VXDLDR (device 0x27, built in as `*VXDLDR`): loads and unloads VxDs
//! while Windows runs. Devices reach it with `VxDCall` (VXDLDR.H's
//! services, registers as below); ring-3 code through its API entry (INT
//! 2Fh AX=1684h BX=0027h), function in AX.
//!
//! | Service | In | Out |
//! |---|---|---|
//! | 0 `VXDLDR_GetVersion` | | EAX = 0x0400 |
//! | 1 `VXDLDR_LoadDevice` | EAX = flags (`VXDLDR_INIT_DEVICE`), EDX → file name | EAX = DDB, EDX = DeviceInfo |
//! | 2 `VXDLDR_UnloadDevice` | BX = device ID, or 0 and EDX → name | |
//! | 3 `VXDLDR_DevInitSucceeded` | EDX = DeviceInfo | |
//! | 4 `VXDLDR_DevInitFailed` | EDX = DeviceInfo | |
//! | 5 `VXDLDR_GetDeviceList` | | EAX → first DeviceInfo entry (0: none) |
//! | 6 `VXDLDR_UnloadMe` | BX = device ID, or 0 and EDX → name | (unloads after the caller returns) |
//!
//! Errors: CF set and EAX = `VXDLDR_ERR_*`. The DDB and DeviceInfo are the
//! same opaque value, `0xC00D_0000 | instance`. `GetDeviceList` builds, in
//! VXDLDR's heap, a list of 32-byte entries: +0 next entry (0 ends),
//! +4 load count, +8 DDB, +12 device ID (word), +14 flags (word; 1 =
//! initialized), +16 name (NUL-padded, 16 bytes); the previous list is freed.
//!
//! Ring-3 API: AX = 0 version (AX = 0x0400); AX = 1 load (DS:DX → file
//! name, always with `VXDLDR_INIT_DEVICE`); AX = 2 unload (BX = device ID,
//! or 0 and DS:DX → name). Errors: CF set, AX = `VXDLDR_ERR_*`; an unknown
//! function is `VXDLDR_ERR_BAD_API_FUNCTION`.

use std::cell::Cell;

use vmm_plugin_api::abi::{ApiMode, Carry, ClientRegs, Regs, ServiceCall};
use vmm_plugin_api::ddk::*;

use crate::dynamic::{DDB_BASE, LoadError};
use crate::machine::Core;
use crate::machine::device::Builtin;
use crate::machine::registry::DeviceInfo;
use crate::manifest::Origin;
use crate::trace::{TraceEvent, UnloadReason};
use crate::vmm::callback::Callback;
use crate::vmm::ids::InstanceId;

/// VXDLDR's service table (VXDLDR.H order; the PE loader services that
/// follow are not provided).
pub(crate) const SERVICES: [&str; 7] = [
    "VXDLDR_GetVersion",
    "VXDLDR_LoadDevice",
    "VXDLDR_UnloadDevice",
    "VXDLDR_DevInitSucceeded",
    "VXDLDR_DevInitFailed",
    "VXDLDR_GetDeviceList",
    "VXDLDR_UnloadMe",
];

/// Size of one `GetDeviceList` entry.
const ENTRY: u32 = 32;

/// The VXDLDR device.
#[derive(Default)]
pub(crate) struct Vxdldr {
    /// The list `VXDLDR_GetDeviceList` last built (freed on the next call).
    list: Cell<u32>,
}

impl Builtin for Vxdldr {
    fn info(&self, _core: &Core) -> DeviceInfo {
        DeviceInfo {
            name: "VXDLDR".to_string(),
            major_version: 4,
            minor_version: 0,
            device_id: VXDLDR_DEVICE_ID,
            init_order: VXDLDR_INIT_ORDER,
            has_v86_api: true,
            has_pm_api: true,
            services: SERVICES.iter().map(|s| s.to_string()).collect(),
            sdk_version: DDK_VERSION_400,
            dynamic: false,
        }
    }

    fn service(&self, core: &Core, caller: InstanceId, ordinal: u16, call: &mut ServiceCall) -> Carry {
        core.as_caller(caller, || self.dispatch(core, ordinal, &mut call.regs))
    }

    fn api(&self, core: &Core, _mode: ApiMode, _vm: crate::vmm::ids::VmId, client: &mut ClientRegs) {
        let function = client.eax as u16;
        let result = match function {
            VXDLDR_API_GET_VERSION => {
                client.eax = (client.eax & 0xFFFF_0000) | 0x0400;
                Ok(())
            }
            VXDLDR_API_LOAD_DEVICE => match read_name(core, "VXDLDR_LoadDevice", ds_dx(client)) {
                Some(name) => core.vxdldr_load(&name, true).map(|_| ()),
                None => Err(LoadError { code: VXDLDR_ERR_FILE_OPEN_ERROR, message: bad_name(ds_dx(client)) }),
            },
            VXDLDR_API_UNLOAD_DEVICE => {
                let id = client.ebx as u16;
                let name = if id == 0 { read_name(core, "VXDLDR_UnloadDevice", ds_dx(client)) } else { None };
                core.vxdldr_unload(id, name.as_deref())
            }
            _ => Err(LoadError {
                code: VXDLDR_ERR_BAD_API_FUNCTION,
                message: format!("VXDLDR's API has no function {function:#06X} (0 version, 1 load, 2 unload)"),
            }),
        };
        match result {
            Ok(()) => client.eflags &= !CF_MASK,
            Err(e) => {
                client.eax = (client.eax & 0xFFFF_0000) | e.code;
                client.eflags |= CF_MASK;
            }
        }
    }
}

fn ds_dx(c: &ClientRegs) -> u32 {
    ((c.ds & 0xFFFF) << 16) | (c.edx & 0xFFFF)
}

fn read_name(core: &Core, service: &'static str, far: u32) -> Option<String> {
    core.read_far_string(service, far).filter(|n| !n.is_empty())
}

fn bad_name(far: u32) -> String {
    format!("DS:DX = {:04X}:{:04X} does not point to a file name", far >> 16, far & 0xFFFF)
}

impl Vxdldr {
    fn dispatch(&self, core: &Core, ordinal: u16, regs: &mut Regs) -> Carry {
        let result = match ordinal {
            VXDLDR_GET_VERSION => {
                regs.eax = 0x0400;
                Ok(())
            }
            VXDLDR_LOAD_DEVICE => match core.read_cstring("VXDLDR_LoadDevice", regs.edx) {
                Ok(name) => core.vxdldr_load(&name, regs.eax & VXDLDR_INIT_DEVICE != 0).map(|ddb| {
                    regs.eax = ddb;
                    regs.edx = ddb;
                }),
                Err(_) => Err(LoadError {
                    code: VXDLDR_ERR_FILE_OPEN_ERROR,
                    message: format!("EDX = {:#010X} does not point to a file name", regs.edx),
                }),
            },
            VXDLDR_UNLOAD_DEVICE => {
                let id = regs.ebx as u16;
                let name = if id == 0 { core.read_cstring("VXDLDR_UnloadDevice", regs.edx).ok() } else { None };
                core.vxdldr_unload(id, name.as_deref())
            }
            VXDLDR_DEV_INIT_SUCCEEDED | VXDLDR_DEV_INIT_FAILED => {
                core.vxdldr_dev_init_result(regs.edx, ordinal == VXDLDR_DEV_INIT_SUCCEEDED)
            }
            VXDLDR_GET_DEVICE_LIST => {
                regs.eax = self.device_list(core);
                Ok(())
            }
            VXDLDR_UNLOAD_ME => {
                let id = regs.ebx as u16;
                let name = if id == 0 { core.read_cstring("VXDLDR_UnloadMe", regs.edx).ok() } else { None };
                core.vxdldr_unload_me(id, name)
            }
            _ => Err(LoadError { code: VXDLDR_ERR_BAD_API_FUNCTION, message: format!("no VXDLDR service {ordinal}") }),
        };
        match result {
            Ok(()) => Carry::Clear,
            Err(e) => {
                regs.eax = e.code;
                Carry::Set
            }
        }
    }

    /// Build the DeviceInfo list in VXDLDR's heap; its first entry.
    fn device_list(&self, core: &Core) -> u32 {
        let old = self.list.replace(0);
        if old != 0 {
            core.heap.borrow_mut().free(old);
        }
        let entries: Vec<(u32, u32, u16, bool, String)> = {
            let reg = core.registry.borrow();
            reg.slots
                .iter()
                .filter(|s| s.alive() && s.dynamic)
                .map(|s| {
                    (s.load_count, DDB_BASE | s.instance.raw(), s.info.device_id, s.initialized, s.info.name.clone())
                })
                .collect()
        };
        if entries.is_empty() {
            return 0;
        }
        let owner = core.vxdldr_instance().unwrap_or(InstanceId::HOST);
        let Some(base) = core.heap.borrow_mut().allocate(owner, ENTRY * entries.len() as u32, true) else {
            return 0;
        };
        let mut bytes = Vec::with_capacity((ENTRY as usize) * entries.len());
        for (i, (count, ddb, id, initialized, name)) in entries.iter().enumerate() {
            let next = if i + 1 < entries.len() { base + ENTRY * (i as u32 + 1) } else { 0 };
            bytes.extend_from_slice(&next.to_le_bytes());
            bytes.extend_from_slice(&count.to_le_bytes());
            bytes.extend_from_slice(&ddb.to_le_bytes());
            bytes.extend_from_slice(&id.to_le_bytes());
            bytes.extend_from_slice(&u16::from(*initialized).to_le_bytes());
            let mut n = [0u8; 16];
            for (d, s) in n.iter_mut().zip(name.bytes().take(15)) {
                *d = s;
            }
            bytes.extend_from_slice(&n);
        }
        let _ = core.heap.borrow_mut().write(base, &bytes);
        self.list.set(base);
        base
    }
}

impl Core {
    /// VXDLDR's instance number, if it is loaded.
    pub(crate) fn vxdldr_instance(&self) -> Option<InstanceId> {
        let reg = self.registry.borrow();
        reg.by_id(VXDLDR_DEVICE_ID).map(|i| reg.slots[i].instance)
    }

    fn vxdldr_trace(&self, op: &'static str, name: &str, result: &Result<(), LoadError>) {
        let caller = self.current_caller().map(|c| self.instance_name(c).to_string());
        self.trace(|| TraceEvent::Vxdldr {
            op,
            name: name.to_string(),
            caller: caller.clone(),
            result: match result {
                Ok(()) => "ok",
                Err(e) => vxdldr_error_name(e.code),
            },
            message: result.as_ref().err().map(|e| e.message.clone()),
        });
        if let Err(e) = result {
            tracing::warn!("VXDLDR: {op} {name}: {} ({})", e.message, vxdldr_error_name(e.code));
        }
    }

    /// `VXDLDR_LoadDevice`; the DDB value.
    pub(crate) fn vxdldr_load(&self, name: &str, init: bool) -> Result<u32, LoadError> {
        let origin = Origin { file: "VXDLDR_LoadDevice".to_string(), line: 0, column: 0 };
        let r = self.load_dynamic(name, init, &origin);
        let ddb = r.as_ref().ok().map(|&idx| DDB_BASE | self.registry.borrow().slots[idx].instance.raw());
        let unit = r.map(|_| ());
        self.vxdldr_trace("load", name, &unit);
        unit.map(|()| ddb.unwrap_or(0))
    }

    /// The live device with `id`, or (when `id` is 0) named `name`.
    fn vxdldr_find(&self, id: u16, name: Option<&str>) -> Result<usize, LoadError> {
        let reg = self.registry.borrow();
        let found = if id != 0 { reg.by_id(id) } else { name.and_then(|n| reg.by_name(n.trim_end_matches(".386"))) };
        found.ok_or_else(|| LoadError {
            code: VXDLDR_ERR_NO_SUCH_DEVICE,
            message: match (id, name) {
                (0, Some(n)) => format!("no loaded device is named {n}"),
                (0, None) => "no device ID and no name given".to_string(),
                (id, _) => format!("no loaded device has ID {id:#06X}"),
            },
        })
    }

    /// `VXDLDR_UnloadDevice`.
    pub(crate) fn vxdldr_unload(&self, id: u16, name: Option<&str>) -> Result<(), LoadError> {
        let label = name.map(str::to_string).unwrap_or_else(|| format!("{id:#06X}"));
        let r = self.vxdldr_find(id, name).and_then(|idx| self.unload_dynamic(idx));
        self.vxdldr_trace("unload", &label, &r);
        r
    }

    /// `VXDLDR_DevInitSucceeded` / `VXDLDR_DevInitFailed` for a device
    /// loaded without `VXDLDR_INIT_DEVICE`.
    fn vxdldr_dev_init_result(&self, info: u32, succeeded: bool) -> Result<(), LoadError> {
        let instance = InstanceId::from_raw(info.wrapping_sub(DDB_BASE));
        let idx = {
            let reg = self.registry.borrow();
            reg.by_instance(instance).filter(|&i| info & 0xFFFF_0000 == DDB_BASE && reg.slots[i].alive())
        };
        let r = match idx {
            None => Err(LoadError {
                code: VXDLDR_ERR_NO_SUCH_DEVICE,
                message: format!("{info:#010X} is not the DeviceInfo of a loaded device"),
            }),
            Some(i) if self.registry.borrow().slots[i].initialized => Err(LoadError {
                code: VXDLDR_ERR_DEVICE_REFUSED,
                message: "the device has already been initialized".to_string(),
            }),
            Some(i) if succeeded => {
                self.dev_init_succeeded(i);
                Ok(())
            }
            Some(i) => {
                self.discard_dynamic(i, UnloadReason::InitFailed);
                Ok(())
            }
        };
        let label = format!("{info:#010X}");
        self.vxdldr_trace(if succeeded { "dev_init_succeeded" } else { "dev_init_failed" }, &label, &r);
        r
    }

    /// `VXDLDR_UnloadMe`: the device is unloaded at the next dispatch
    /// point, after the calling code has returned.
    fn vxdldr_unload_me(&self, id: u16, name: Option<String>) -> Result<(), LoadError> {
        let idx = self.vxdldr_find(id, name.as_deref())?;
        let device = self.registry.borrow().slots[idx].info.name.clone();
        let owner = self.vxdldr_instance().unwrap_or(InstanceId::HOST);
        let cb = Callback::host(owner, "VXDLDR_UnloadMe", move |core: &Core, _regs: &mut Regs| {
            let _ = core.vxdldr_unload(0, Some(&device));
            Carry::Clear
        });
        let sys = self.sys_vm.get();
        self.priority_event(owner, 0, sys, PEF_ALWAYS_SCHED, 0, cb).map(|_| ()).map_err(|e| LoadError {
            code: VXDLDR_ERR_OUT_OF_MEMORY,
            message: format!("cannot schedule the unload: {e}"),
        })
    }

    /// Load the manifest's `dynamic` devices as Windows starts, with
    /// `VXDLDR_INIT_DEVICE`. A device that cannot be loaded stops the boot
    /// (as a static one does); one that refuses its init is dropped.
    pub(crate) fn load_manifest_dynamic_devices(&self) -> crate::error::Result<()> {
        let entries: Vec<_> = self.manifest.devices.iter().filter(|d| d.dynamic).cloned().collect();
        if entries.is_empty() {
            return Ok(());
        }
        if self.vxdldr_instance().is_none() {
            let first = &entries[0];
            return Err(crate::error::Error::Reference {
                origin: first.origin.clone(),
                message: format!(
                    "{} is marked dynamic, but dynamic devices are loaded by VXDLDR: add \"*VXDLDR\" to [386Enh] \
                     device",
                    first.name
                ),
            });
        }
        for entry in entries {
            let r = self.load_dynamic(&entry.name, true, &entry.origin);
            let unit = r.as_ref().map(|_| ()).map_err(Clone::clone);
            let owner = self.vxdldr_instance().unwrap_or(InstanceId::HOST);
            self.as_caller(owner, || self.vxdldr_trace("load", &entry.name, &unit));
            if let Err(e) = r
                && e.code != VXDLDR_ERR_DEVICE_REFUSED
            {
                return Err(crate::error::Error::Reference {
                    origin: entry.origin.clone(),
                    message: format!("dynamic device {}: {} ({})", entry.name, e.message, vxdldr_error_name(e.code)),
                });
            }
        }
        Ok(())
    }
}
