//! The SHELL VxD (device 0x17), built into the host as `*SHELL`: the
//! device itself, its service table with the rule each service follows,
//! and the entry check every call passes, whether it comes from the typed
//! `Shell` API (`abi/shell.rs`) or from a `VxDCall` (`vxdcall.rs`).
//! Both paths then call the same `Core` methods, one module per concept.

mod appy;
mod broadcast;
mod dll;
mod execute;
mod local_heap;
mod message_box;
mod post;
pub(crate) mod shex;
pub(crate) mod state;
mod vxdcall;

use vmm_plugin_api::abi::{Carry, ControlArgs, ServiceCall, VmmError};
use vmm_plugin_api::ddk::{SHELL_DEVICE_ID, SHELL_INIT_ORDER};

pub(crate) use dll::DllProc;
pub(crate) use message_box::MessageText;
pub(crate) use state::{AppyHandle, AppyRec, HookHandle, HookRec, Server, Shell};

use crate::machine::Core;
use crate::machine::device::Builtin;
use crate::machine::registry::DeviceInfo;
use crate::machine::rules::allowed;
use crate::machine::rules::mem_violation;
use crate::trace::{CancelReason, TraceEvent};
use crate::violation::Violation;
use crate::vmm::heap::MemError;
use crate::vmm::ids::{InstanceId, VmId};
use crate::vmm::services::Rule;

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

/// The services Windows 3.1's SHELL had (ordinals 0-5); the rest are 4.0.
const SERVICES_31: usize = 6;

/// When a SHELL service may be called.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum ShellRule {
    /// Anywhere, including interrupt time (the DDK's "asynchronous").
    Async,
    /// Not at interrupt time.
    Sync,
    /// Only at appy time: from a `_SHELL_CallAtAppyTime` callback.
    Appy,
    /// In the DDK's table, but not provided by this host.
    Missing,
}

/// The rule of each ordinal (W95DDK; SEED 003 for the appy-only list).
fn rule(ordinal: u16) -> ShellRule {
    use vmm_plugin_api::ddk::*;
    match ordinal {
        SHELL_GET_VERSION | SHELL_POST_MESSAGE | SHELL_QUERY_APPY_TIME_AVAILABLE | SHELL_CALL_AT_APPY_TIME => {
            ShellRule::Async
        }
        SHELL_SHELL_EXECUTE
        | SHELL_LOCAL_ALLOC_EX
        | SHELL_LOCAL_FREE
        | SHELL_LOAD_LIBRARY
        | SHELL_FREE_LIBRARY
        | SHELL_GET_PROC_ADDRESS
        | SHELL_CALL_DLL => ShellRule::Appy,
        SHELL_EVENT
        | SHELL_DISPATCH_RING0_APPY_EVENTS
        | SHELL_HOOK_PROPERTIES
        | SHELL_UNHOOK_PROPERTIES
        | SHELL_UPDATE_USER_ACTIVITY
        | SHELL_SUGGEST_SINGLE_MSDOS_MODE
        | SHELL_CHECK_HOTKEY_ALLOWED
        | SHELL_GET_DOS_APP_INFO => ShellRule::Missing,
        _ => ShellRule::Sync,
    }
}

/// How many services SHELL has in the machine's Windows version.
fn service_count(core: &Core) -> usize {
    if core.manifest.machine.windows_version.0 < 4 { SERVICES_31 } else { SERVICES.len() }
}

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
            // Windows 3.1's SHELL ends at SHELL_GetVMInfo: a VxDCall to a 4.0
            // service there is an invalid dynamic link, as it was.
            services: SERVICES[..service_count(core)].iter().map(|s| s.to_string()).collect(),
            sdk_version: ((major as u16) << 8) | minor as u16,
            dynamic: false,
        }
    }

    fn control(&self, core: &Core, args: &ControlArgs) -> Carry {
        if args.message == vmm_plugin_api::ddk::VM_NOT_EXECUTEABLE {
            core.shell_show_system_messages(VmId::from_raw(args.vm));
        }
        Carry::Clear
    }

    fn service(&self, core: &Core, caller: InstanceId, ordinal: u16, call: &mut ServiceCall) -> Carry {
        // Violations name the device that made the VxDCall, not SHELL.
        core.as_caller(caller, || vxdcall::dispatch(core, ordinal, call))
    }
}

impl Core {
    /// SHELL's instance number, if SHELL is loaded (the owner of the events
    /// SHELL schedules itself).
    pub(crate) fn shell_instance(&self) -> Option<InstanceId> {
        let reg = self.registry.borrow();
        reg.by_id(SHELL_DEVICE_ID).map(|i| reg.slots[i].instance)
    }

    /// The name of the device calling SHELL (for traces).
    pub(crate) fn shell_caller_name(&self) -> String {
        self.current_caller().map(|c| self.instance_name(c).to_string()).unwrap_or_else(|| "<host>".to_string())
    }

    /// The check every SHELL service call passes first: SHELL is loaded and
    /// has `ordinal` (else the fatal "Invalid VxD dynamic link call",
    /// `Err(FATAL)`), and the caller's context satisfies the service's rule
    /// (else a violation: `Err(VIOLATION)` if the call is refused). After
    /// the message server faulted, the appy-time-only services fail
    /// (`Err(FAILED)`).
    pub(crate) fn shell_enter(&self, ordinal: u16) -> Result<(), VmmError> {
        let loaded = self.shell_instance().is_some();
        if !loaded || ordinal as usize >= service_count(self) {
            let caller = self.current_caller().unwrap_or(InstanceId::HOST);
            self.invalid_dynamic_link(caller, SHELL_DEVICE_ID, ordinal);
            return Err(VmmError::FATAL);
        }
        let service = SERVICES[ordinal as usize];
        let go = match rule(ordinal) {
            ShellRule::Async => allowed(self, service, Rule::Async),
            ShellRule::Sync => allowed(self, service, Rule::Sync),
            ShellRule::Appy => self.appy_only(service),
            ShellRule::Missing => {
                // The one violation that does not answer VIOLATION: it is
                // what an older host without the service answers too.
                self.violation(
                    Violation::NotImplemented,
                    format!("SHELL service {service} is not provided by this host"),
                    Some(service),
                );
                return Err(VmmError::NOT_AVAILABLE);
            }
        };
        if !go {
            return Err(VmmError::VIOLATION);
        }
        if rule(ordinal) == ShellRule::Appy && self.shell.server.get() == Server::Faulted {
            tracing::warn!("{service}: the message server faulted earlier; appy-time services fail");
            return Err(VmmError::FAILED);
        }
        Ok(())
    }

    // ---- pointers of VxDCall callers ----------------------------------------------------

    /// The NUL-terminated string at linear address `addr`, bounds-checked
    /// against its heap block (`BAD_POINTER` otherwise). Bytes are taken as
    /// the ANSI character set, one character each.
    pub(crate) fn read_cstring(&self, service: &'static str, addr: u32) -> Result<String, VmmError> {
        let found = {
            let heap = self.heap.borrow();
            heap.slice_from(addr).map(|bytes| match bytes.iter().position(|b| *b == 0) {
                Some(n) => Ok(ansi(&bytes[..n])),
                None => Err(bytes.len()),
            })
        };
        match found {
            Ok(Ok(text)) => Ok(text),
            Ok(Err(len)) => Err(self.refuse(
                Violation::BadPointer,
                format!(
                    "{service}: the string at {addr:#010X} is not NUL-terminated within its heap block \
                         ({len} bytes to the block's end)"
                ),
                Some(service),
            )),
            Err(e) => Err(mem_violation(self, service, addr, 1, e)),
        }
    }

    /// `len` bytes at linear address `addr` (`BAD_POINTER` if they leave
    /// their heap block).
    pub(crate) fn read_linear(&self, service: &'static str, addr: u32, len: usize) -> Result<Vec<u8>, VmmError> {
        // Checked before anything is allocated: the length is the caller's
        // word (a cbArgs of 0xFFFFFFFF must not cost 4 GB).
        let r = {
            let heap = self.heap.borrow();
            heap.check(addr, len).and_then(|()| {
                let mut out = vec![0u8; len];
                heap.read(addr, &mut out).map(|()| out)
            })
        };
        r.map_err(|e| mem_violation(self, service, addr, len, e))
    }

    /// The bytes from `addr` to the end of its heap block (for a structure
    /// whose size is inside it, such as a SHEXPACKET).
    pub(crate) fn read_linear_to_end(&self, service: &'static str, addr: u32) -> Result<Vec<u8>, VmmError> {
        let r = self.heap.borrow().slice_from(addr).map(<[u8]>::to_vec);
        r.map_err(|e| mem_violation(self, service, addr, 0, e))
    }

    /// Write `data` at linear address `addr`.
    pub(crate) fn write_linear(&self, service: &'static str, addr: u32, data: &[u8]) -> Result<(), VmmError> {
        let r = self.heap.borrow_mut().write(addr, data);
        r.map_err(|e: MemError| mem_violation(self, service, addr, data.len(), e))
    }

    /// An unloaded device's SHELL registrations: its pending appy-time
    /// requests are dropped (`appy_dropped` records, reason `unloaded`) and
    /// its broadcast hooks removed. Returns what it left, for the leak report.
    pub(crate) fn shell_reclaim(&self, instance: InstanceId, name: &str) -> Vec<String> {
        let mut leaks = Vec::new();
        let appy: Vec<(u64, AppyHandle)> = {
            let appy = self.shell.appy.borrow();
            appy.iter().filter(|(_, r)| r.cb.owner() == instance).map(|(h, r)| (r.seq, h)).collect()
        };
        let mut appy = appy;
        appy.sort_unstable();
        for (_, h) in appy {
            let rec = self.shell.appy.borrow_mut().remove(h);
            let Some(rec) = rec else { continue };
            self.forget_appy_timeout(h, &rec);
            let callback = rec.cb.name();
            self.trace(|| TraceEvent::AppyDropped {
                handle: h.raw(),
                device: name.to_string(),
                callback: callback.clone(),
                reason: CancelReason::Unloaded,
            });
            leaks.push(format!("an appy-time request ({callback}, handle {h:#010X})"));
        }
        let broadcast_hooks: Vec<HookHandle> = {
            let hooks = self.shell.hooks.borrow();
            hooks
                .iter()
                .filter(|(_, r)| r.cb.as_ref().is_some_and(|cb| cb.owner() == instance))
                .map(|(h, _)| h)
                .collect()
        };
        for h in broadcast_hooks {
            // Dropped after the table is released: a callback's drop runs
            // in its plugin.
            let gone = self.shell.hooks.borrow_mut().remove(h);
            drop(gone);
            leaks.push(format!("a _SHELL_HookSystemBroadcast hook (handle {h:#010X})"));
        }
        leaks
    }
}

/// Bytes as ANSI text: each byte one character (Latin-1), so no string is
/// ever rejected for its encoding.
pub(crate) fn ansi(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| b as char).collect()
}
