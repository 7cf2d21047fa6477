//! The SHELL VxD (device 0x17), built into the host as `*SHELL`.

use vmm_plugin_api::abi::{Carry, ServiceCall};
use vmm_plugin_api::ddk::{SHELL_DEVICE_ID, SHELL_INIT_ORDER};

use crate::builtin::Builtin;
use crate::machine::Core;
use crate::registry::DeviceInfo;

/// SHELL's service table, by ordinal (SHELL.H).
pub(crate) const SERVICES: [&str; 28] = [
    "SHELL_Get_Version",
    "SHELL_Resolve_Contention",
    "SHELL_Event",
    "SHELL_SYSMODAL_Message",
    "SHELL_Message",
    "SHELL_GetVMInfo",
    "_SHELL_PostMessage",
    "_SHELL_ShellExecute",
    "_SHELL_PostShellMessage",
    "SHELL_DispatchRing0AppyEvents",
    "SHELL_Hook_Properties",
    "SHELL_Unhook_Properties",
    "SHELL_Update_User_Activity",
    "_SHELL_QueryAppyTimeAvailable",
    "_SHELL_CallAtAppyTime",
    "_SHELL_CancelAppyTimeEvent",
    "_SHELL_BroadcastSystemMessage",
    "_SHELL_HookSystemBroadcast",
    "_SHELL_UnhookSystemBroadcast",
    "_SHELL_LocalAllocEx",
    "_SHELL_LocalFree",
    "_SHELL_LoadLibrary",
    "_SHELL_FreeLibrary",
    "_SHELL_GetProcAddress",
    "_SHELL_CallDll",
    "_SHELL_SuggestSingleMSDOSMode",
    "SHELL_CheckHotkeyAllowed",
    "_SHELL_GetDOSAppInfo",
];

/// The SHELL device.
#[derive(Default)]
pub(crate) struct Shell;

impl Builtin for Shell {
    fn info(&self, core: &Core) -> DeviceInfo {
        let (major, minor) = core.manifest.machine.windows_version;
        DeviceInfo {
            name: "SHELL".to_string(),
            major_version: major,
            minor_version: minor,
            device_id: SHELL_DEVICE_ID,
            init_order: SHELL_INIT_ORDER,
            has_v86_api: false,
            has_pm_api: true,
            services: SERVICES.iter().map(|s| s.to_string()).collect(),
            sdk_version: ((major as u16) << 8) | minor as u16,
            dynamic: false,
        }
    }

    fn service(&self, core: &Core, _caller: u32, ordinal: u16, call: &mut ServiceCall) -> Carry {
        match ordinal {
            0 => {
                let (major, minor) = core.manifest.machine.windows_version;
                call.regs.eax = ((major as u32) << 8) | minor as u32;
                Carry::Clear
            }
            _ => {
                core.violation(
                    "NOT_IMPLEMENTED",
                    format!("SHELL service {} is not provided by this host yet", SERVICES[ordinal as usize]),
                    Some("VxDCall"),
                );
                Carry::Set
            }
        }
    }
}
