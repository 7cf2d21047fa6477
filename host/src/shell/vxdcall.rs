//! SHELL's services reached by `VxDCall`: register services take their
//! arguments in registers, `_SHELL_*` services in `ServiceCall::args`
//! (first C argument first). Pointers are linear addresses in the ring-0
//! heap, read with bounds checks. A service whose arguments include a
//! callback cannot be reached this way (a function address means nothing
//! to the emulator): the violation names the typed `Shell` method.

use vmm_plugin_api::abi::{Carry, ServiceCall, VmmError};
use vmm_plugin_api::ddk::*;

use crate::machine::Core;
use crate::shell::message_box::MessageText;
use crate::shell::{AppyHandle, DllProc, HookHandle, SERVICES};
use crate::violation::Violation;
use crate::vmm::ids::VmId;

/// Set EAX and return carry clear (or set, for `failed`).
fn eax(call: &mut ServiceCall, value: u32, failed: bool) -> Carry {
    call.regs.eax = value;
    Carry::from_failed(failed)
}

/// A `VxDCall` of SHELL service `ordinal` (the caller's frame is the
/// innermost).
pub(super) fn dispatch(core: &Core, ordinal: u16, call: &mut ServiceCall) -> Carry {
    match core.shell_enter(ordinal) {
        Ok(()) => {}
        // The service's failure value, carry set.
        Err(_) => return refused(ordinal, call),
    }
    let a = call.args;
    let r = call.regs;
    match ordinal {
        SHELL_GET_VERSION => eax(call, core.vmm_version(), false),
        SHELL_RESOLVE_CONTENTION => {
            let name = core.read_linear("SHELL_Resolve_Contention", r.esi, 8).map(|b| crate::shell::ansi(&b));
            match name.and_then(|n| core.shell_resolve_contention(VmId::from_raw(r.eax), VmId::from_raw(r.ebx), &n)) {
                Ok(winner) => {
                    call.regs.ebx = winner.raw();
                    Carry::Clear
                }
                Err(_) => Carry::Set,
            }
        }
        SHELL_SYSMODAL_MESSAGE => match message_text(core, "SHELL_SYSMODAL_Message", r.ecx, r.edi) {
            Ok(m) => match core.shell_sysmodal_message(VmId::from_raw(r.ebx), r.eax, &m) {
                Ok(answer) => eax(call, answer, false),
                Err(_) => eax(call, 0, true),
            },
            Err(_) => eax(call, 0, true),
        },
        SHELL_MESSAGE => {
            if r.esi != 0 {
                return by_typed_api(core, ordinal, "shell_message", call);
            }
            match message_text(core, "SHELL_Message", r.ecx, r.edi) {
                Ok(m) => match core.shell_message(VmId::from_raw(r.ebx), r.eax, m, Some((r.ecx, r.edi)), None) {
                    Ok(h) => eax(call, h, false),
                    Err(_) => Carry::Set,
                },
                Err(_) => Carry::Set,
            }
        }
        SHELL_GET_VM_INFO => match core.shell_get_vm_info(VmId::from_raw(r.ebx)) {
            Ok(bits) => {
                // ECX: no bits are defined.
                call.regs.ecx = 0;
                eax(call, bits, false)
            }
            Err(_) => eax(call, 0, true),
        },
        SHELL_POST_MESSAGE => {
            if a[4] != 0 {
                return by_typed_api(core, ordinal, "post_message_with_callback", call);
            }
            eax(call, core.shell_post_message(a[0], a[1], a[2], a[3], None), false)
        }
        SHELL_SHELL_EXECUTE => match core.read_linear_to_end("_SHELL_ShellExecute", a[0]) {
            Ok(bytes) => eax(call, core.shell_execute(&bytes), false),
            Err(_) => eax(call, 0, true),
        },
        SHELL_POST_SHELL_MESSAGE => eax(call, core.shell_post_shell_message(a[0], a[1]), false),
        SHELL_QUERY_APPY_TIME_AVAILABLE => eax(call, core.query_appy_time_available(), false),
        SHELL_CALL_AT_APPY_TIME => by_typed_api(core, ordinal, "call_at_appy_time", call),
        SHELL_CANCEL_APPY_TIME_EVENT => {
            let failed = core.cancel_appy_time_event(AppyHandle::from_raw(a[0])).is_err();
            Carry::from_failed(failed)
        }
        SHELL_BROADCAST_SYSTEM_MESSAGE => broadcast(core, call),
        SHELL_HOOK_SYSTEM_BROADCAST => by_typed_api(core, ordinal, "hook_system_broadcast", call),
        SHELL_UNHOOK_SYSTEM_BROADCAST => {
            Carry::from_failed(core.unhook_system_broadcast(HookHandle::from_raw(a[0])).is_err())
        }
        SHELL_LOCAL_ALLOC_EX => {
            const SERVICE: &str = "_SHELL_LocalAllocEx";
            let (flags, bytes, buffer) = (a[0], a[1], a[2]);
            let data = match (buffer, flags & LMEM_STRING != 0) {
                (0, _) => Ok(None),
                (p, true) => core.read_cstring(SERVICE, p).map(|s| Some(s.chars().map(|c| c as u8).collect())),
                (p, false) => core.read_linear(SERVICE, p, bytes as usize).map(Some),
            };
            let Ok(data) = data else { return eax(call, 0, true) };
            let (address, linear) = core.shell_local_alloc_ex(flags, bytes, data.as_deref());
            call.regs.edx = linear;
            eax(call, address, address == 0)
        }
        SHELL_LOCAL_FREE => {
            let r = core.shell_local_free(a[0]);
            eax(call, r, r != 0)
        }
        SHELL_LOAD_LIBRARY => match core.read_cstring("_SHELL_LoadLibrary", a[0]) {
            Ok(name) => eax(call, core.shell_load_library(&name), false),
            Err(_) => eax(call, 0, true),
        },
        SHELL_FREE_LIBRARY => {
            core.shell_free_library(a[0]);
            Carry::Clear
        }
        SHELL_GET_PROC_ADDRESS => match proc_arg(core, "_SHELL_GetProcAddress", a[1], false) {
            Ok(p) => eax(call, core.shell_get_proc_address(a[0], &p), false),
            Err(_) => eax(call, 0, true),
        },
        SHELL_CALL_DLL => {
            const SERVICE: &str = "_SHELL_CallDll";
            let dll = match a[0] {
                0 => Ok(None),
                p => core.read_cstring(SERVICE, p).map(Some),
            };
            let raw = matches!(dll, Ok(None));
            let (cb_args, buffer) = (a[2] as usize, a[3]);
            let args = if cb_args == 0 { Ok(Vec::new()) } else { core.read_linear(SERVICE, buffer, cb_args) };
            match (dll, proc_arg(core, SERVICE, a[1], raw), args) {
                (Ok(dll), Ok(p), Ok(args)) => {
                    let dll = dll.filter(|d| !d.is_empty());
                    eax(call, core.shell_call_dll(dll.as_deref(), &p, &args), false)
                }
                _ => eax(call, 0, true),
            }
        }
        _ => refused(ordinal, call),
    }
}

/// The failure value of a refused call, with carry set.
fn refused(ordinal: u16, call: &mut ServiceCall) -> Carry {
    let value = match ordinal {
        SHELL_BROADCAST_SYSTEM_MESSAGE => BSM_ERROR_OUT_OF_MEMORY,
        SHELL_LOCAL_FREE => call.args[0],
        _ => 0,
    };
    eax(call, value, true)
}

/// A callback-taking service reached by `VxDCall`.
fn by_typed_api(core: &Core, ordinal: u16, method: &str, call: &mut ServiceCall) -> Carry {
    let service = SERVICES[ordinal as usize];
    core.violation(
        Violation::ShellServiceByVxdcall,
        format!(
            "{service} takes a callback, and a function address means nothing to the emulator; call the typed \
             Shell::{method} (vmm.shell().{method}(...)) instead"
        ),
        Some(SERVICES[ordinal as usize]),
    );
    refused(ordinal, call)
}

/// The text (ECX) and caption (EDI, 0 = standard) of a message box.
fn message_text(core: &Core, service: &'static str, text: u32, caption: u32) -> Result<MessageText, VmmError> {
    let text = core.read_cstring(service, text)?;
    let caption = match caption {
        0 => None,
        p => Some(core.read_cstring(service, p)?),
    };
    Ok(MessageText { text, caption })
}

/// `lpszProcName`: a raw 16:16 address (`raw`), an ordinal (high word 0),
/// or the address of the name.
fn proc_arg(core: &Core, service: &'static str, value: u32, raw: bool) -> Result<DllProc, VmmError> {
    if raw {
        Ok(DllProc::Address(value))
    } else if value >> 16 == 0 {
        Ok(DllProc::Ordinal(value as u16))
    } else {
        core.read_cstring(service, value).map(DllProc::Name)
    }
}

/// `_SHELL_BroadcastSystemMessage(dwFlags, lpdwRecipients, uMsg, wParam,
/// lParam)`: `*lpdwRecipients` is read and written back.
fn broadcast(core: &Core, call: &mut ServiceCall) -> Carry {
    const SERVICE: &str = "_SHELL_BroadcastSystemMessage";
    let a = call.args;
    let recipients = match a[1] {
        0 => Ok(None),
        p => core.read_linear(SERVICE, p, 4).map(|b| Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))),
    };
    let Ok(recipients) = recipients else { return eax(call, BSM_ERROR_OUT_OF_MEMORY, true) };
    let (result, delivered) = core.broadcast_system_message(a[0], recipients, a[2], a[3], a[4]);
    if a[1] != 0 && core.write_linear(SERVICE, a[1], &delivered.to_le_bytes()).is_err() {
        return eax(call, BSM_ERROR_OUT_OF_MEMORY, true);
    }
    eax(call, result, false)
}
