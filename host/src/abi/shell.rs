//! The SHELL services table: thin `extern "C"` shims for the typed `Shell`
//! API. Each passes SHELL's entry check (SHELL loaded, the service's rule)
//! and calls the same `Core` method a `VxDCall` reaches; a refused call
//! returns the service's failure value (the violation record says why).

use abi_stable::prefix_type::WithMetadata;
use abi_stable::staticref;
use abi_stable::std_types::{RErr, ROk, ROption, RSlice, RStr};
use vmm_plugin_api::abi::{
    BroadcastResult, HostCx, LocalBlock, RawCallback, ShellServices, ShellServices_Ref, VmmError, VmmResult,
};
use vmm_plugin_api::ddk::*;

use crate::abi::{caller, guarded};
use crate::machine::Core;
use crate::shell::{AppyHandle, DllProc, HookHandle, SERVICES};
use crate::vmm::callback::Callback;
use crate::vmm::ids::VmId;

/// Run SHELL service `ordinal`: `body` if the entry check passes, else
/// `failed` (or the fatal error).
fn shell<T>(cx: &HostCx, ordinal: u16, failed: T, body: impl FnOnce(&Core) -> T) -> VmmResult<T> {
    guarded(cx, SERVICES[ordinal as usize], RErr(VmmError::FATAL), |core| match core.shell_enter(ordinal) {
        Ok(()) => ROk(body(core)),
        Err(VmmError::FATAL) => RErr(VmmError::FATAL),
        Err(_) => ROk(failed),
    })
}

/// [`shell`] for the services whose result is a `Result`.
fn shell_result<T>(cx: &HostCx, ordinal: u16, body: impl FnOnce(&Core) -> Result<T, VmmError>) -> VmmResult<T> {
    guarded(cx, SERVICES[ordinal as usize], RErr(VmmError::FATAL), |core| {
        core.shell_enter(ordinal).and_then(|()| body(core)).into()
    })
}

fn text(s: RStr<'_>) -> String {
    s.as_str().to_string()
}

fn caption(c: ROption<RStr<'_>>) -> Option<String> {
    c.into_option().map(text)
}

extern "C" fn shell_get_version(cx: &HostCx) -> VmmResult<u32> {
    shell(cx, SHELL_GET_VERSION, 0, Core::vmm_version)
}

extern "C" fn shell_resolve_contention(cx: &HostCx, owner: u32, contender: u32, device: RStr<'_>) -> VmmResult<u32> {
    shell_result(cx, SHELL_RESOLVE_CONTENTION, |core| {
        core.shell_resolve_contention(VmId::from_raw(owner), VmId::from_raw(contender), device.as_str()).map(VmId::raw)
    })
}

extern "C" fn shell_sysmodal_message(
    cx: &HostCx,
    vm: u32,
    flags: u32,
    message: RStr<'_>,
    title: ROption<RStr<'_>>,
) -> VmmResult<u32> {
    let vm = VmId::from_raw(vm);
    let m = crate::shell::MessageText { text: text(message), caption: caption(title) };
    guarded(cx, "SHELL_SYSMODAL_Message", RErr(VmmError::FATAL), |core| {
        match core.shell_enter(SHELL_SYSMODAL_MESSAGE).and_then(|()| core.shell_sysmodal_message(vm, flags, &m)) {
            Ok(answer) => ROk(answer),
            Err(VmmError::FATAL) => RErr(VmmError::FATAL),
            Err(_) => ROk(0),
        }
    })
}

extern "C" fn shell_message(
    cx: &HostCx,
    vm: u32,
    flags: u32,
    message: RStr<'_>,
    title: ROption<RStr<'_>>,
    callback: ROption<RawCallback>,
) -> VmmResult<u32> {
    let vm = VmId::from_raw(vm);
    let cb = callback.into_option().map(|raw| Callback::plugin(caller(cx), raw));
    let m = crate::shell::MessageText { text: text(message), caption: caption(title) };
    shell(cx, SHELL_MESSAGE, 0, |core| core.shell_message(vm, flags, m, None, cb).unwrap_or(0))
}

extern "C" fn shell_get_vm_info(cx: &HostCx, vm: u32) -> VmmResult<u32> {
    let vm = VmId::from_raw(vm);
    shell(cx, SHELL_GET_VM_INFO, 0, |core| core.shell_get_vm_info(vm).unwrap_or(0))
}

extern "C" fn post_message(
    cx: &HostCx,
    hwnd: u32,
    msg: u32,
    wparam: u32,
    lparam: u32,
    callback: ROption<RawCallback>,
) -> VmmResult<u32> {
    let cb = callback.into_option().map(|raw| Callback::plugin(caller(cx), raw));
    shell(cx, SHELL_POST_MESSAGE, 0, |core| core.shell_post_message(hwnd, msg, wparam, lparam, cb))
}

extern "C" fn shell_execute(cx: &HostCx, packet: RSlice<'_, u8>) -> VmmResult<u32> {
    shell(cx, SHELL_SHELL_EXECUTE, 0, |core| core.shell_execute(packet.as_slice()))
}

extern "C" fn post_shell_message(cx: &HostCx, wparam: u32, lparam: u32) -> VmmResult<u32> {
    shell(cx, SHELL_POST_SHELL_MESSAGE, 0, |core| core.shell_post_shell_message(wparam, lparam))
}

extern "C" fn query_appy_time_available(cx: &HostCx) -> VmmResult<u32> {
    shell(cx, SHELL_QUERY_APPY_TIME_AVAILABLE, 0, Core::query_appy_time_available)
}

extern "C" fn call_at_appy_time(cx: &HostCx, callback: RawCallback, flags: u32, timeout_ms: u32) -> VmmResult<u32> {
    let cb = Callback::plugin(caller(cx), callback);
    shell(cx, SHELL_CALL_AT_APPY_TIME, 0, |core| core.call_at_appy_time(cb, flags, timeout_ms))
}

extern "C" fn cancel_appy_time_event(cx: &HostCx, handle: u32) -> VmmResult<()> {
    shell_result(cx, SHELL_CANCEL_APPY_TIME_EVENT, |core| core.cancel_appy_time_event(AppyHandle::from_raw(handle)))
}

extern "C" fn broadcast_system_message(
    cx: &HostCx,
    flags: u32,
    recipients: ROption<u32>,
    msg: u32,
    wparam: u32,
    lparam: u32,
) -> VmmResult<BroadcastResult> {
    let failed = BroadcastResult { result: BSM_ERROR_OUT_OF_MEMORY, recipients: 0 };
    shell(cx, SHELL_BROADCAST_SYSTEM_MESSAGE, failed, |core| {
        let (result, recipients) = core.broadcast_system_message(flags, recipients.into_option(), msg, wparam, lparam);
        BroadcastResult { result, recipients }
    })
}

extern "C" fn hook_system_broadcast(cx: &HostCx, callback: RawCallback, call_order: u32) -> VmmResult<u32> {
    let cb = Callback::plugin(caller(cx), callback);
    shell(cx, SHELL_HOOK_SYSTEM_BROADCAST, 0, |core| core.hook_system_broadcast(cb, call_order))
}

extern "C" fn unhook_system_broadcast(cx: &HostCx, handle: u32) -> VmmResult<()> {
    shell_result(cx, SHELL_UNHOOK_SYSTEM_BROADCAST, |core| core.unhook_system_broadcast(HookHandle::from_raw(handle)))
}

extern "C" fn local_alloc_ex(
    cx: &HostCx,
    flags: u32,
    bytes: u32,
    data: ROption<RSlice<'_, u8>>,
) -> VmmResult<LocalBlock> {
    shell(cx, SHELL_LOCAL_ALLOC_EX, LocalBlock::default(), |core| {
        let data = data.into_option();
        let (address, linear) = core.shell_local_alloc_ex(flags, bytes, data.as_ref().map(|d| d.as_slice()));
        LocalBlock { address, linear }
    })
}

extern "C" fn local_free(cx: &HostCx, address: u32) -> VmmResult<u32> {
    shell(cx, SHELL_LOCAL_FREE, address, |core| core.shell_local_free(address))
}

extern "C" fn load_library(cx: &HostCx, name: RStr<'_>) -> VmmResult<u32> {
    shell(cx, SHELL_LOAD_LIBRARY, 0, |core| core.shell_load_library(name.as_str()))
}

extern "C" fn free_library(cx: &HostCx, hinstance: u32) -> VmmResult<()> {
    shell(cx, SHELL_FREE_LIBRARY, (), |core| core.shell_free_library(hinstance))
}

/// An export by name, or by ordinal when the name is empty.
fn export(name: RStr<'_>, ordinal: u16) -> DllProc {
    if name.is_empty() { DllProc::Ordinal(ordinal) } else { DllProc::Name(text(name)) }
}

extern "C" fn get_proc_address(cx: &HostCx, hinstance: u32, name: RStr<'_>, ordinal: u16) -> VmmResult<u32> {
    shell(cx, SHELL_GET_PROC_ADDRESS, 0, |core| core.shell_get_proc_address(hinstance, &export(name, ordinal)))
}

extern "C" fn call_dll(
    cx: &HostCx,
    dll: RStr<'_>,
    proc_name: RStr<'_>,
    ordinal: u16,
    address: u32,
    args: RSlice<'_, u8>,
) -> VmmResult<u32> {
    shell(cx, SHELL_CALL_DLL, 0, |core| {
        if dll.is_empty() {
            core.shell_call_dll(None, &DllProc::Address(address), args.as_slice())
        } else {
            core.shell_call_dll(Some(dll.as_str()), &export(proc_name, ordinal), args.as_slice())
        }
    })
}

struct Table;

impl Table {
    staticref! {
        const VAL: WithMetadata<ShellServices> = WithMetadata::new(ShellServices {
            shell_get_version,
            shell_resolve_contention,
            shell_sysmodal_message,
            shell_message,
            shell_get_vm_info,
            post_message,
            shell_execute,
            post_shell_message,
            query_appy_time_available,
            call_at_appy_time,
            cancel_appy_time_event,
            broadcast_system_message,
            hook_system_broadcast,
            unhook_system_broadcast,
            local_alloc_ex,
            local_free,
            load_library,
            free_library,
            get_proc_address,
            call_dll,
        })
    }
}

/// The SHELL services.
pub(crate) const SHELL_SERVICES: ShellServices_Ref = ShellServices_Ref(Table::VAL.as_prefix());
