//! The VMM's register-convention services reached the DDK way, by
//! `VxDCall` to device 1: each is unpacked from the registers of the
//! reference's service table, answered by the very shim the typed `Vmm`
//! method calls (so the guard, the context rule, the Windows-version rule
//! and every check are the same), and packed back into registers with CF
//! (and ZF where the service sets it). Services that take a callback
//! procedure or a pointer are not here: they stay `VMM_SERVICE_BY_VXDCALL`.

use abi_stable::std_types::{RErr, ROk};
use vmm_plugin_api::abi::{ControlArgs, CritStatus, HostCx, Regs, VmmError, VmmResult};
use vmm_plugin_api::ddk::{CF_MASK, ZF_MASK};

use super::vmm as shim;
use crate::machine::Core;
use crate::vmm::ids::InstanceId;
use crate::vmm::services as svc;

/// `VmmResult` → CF, with the value written by `out` on success.
fn carry<T>(r: &mut Regs, result: VmmResult<T>, out: impl FnOnce(&mut Regs, T)) -> Result<(), VmmError> {
    match result {
        ROk(v) => {
            r.flags &= !CF_MASK;
            out(r, v);
            Ok(())
        }
        RErr(e) => {
            r.flags |= CF_MASK;
            // A fatal error and a refused call end the caller's call as
            // they do through the typed method; other failures are CF.
            if e == VmmError::FATAL || e == VmmError::VIOLATION { Err(e) } else { Ok(()) }
        }
    }
}

/// Set or clear `mask` in the flags.
pub(crate) fn set_flag(r: &mut Regs, mask: u32, on: bool) {
    if on { r.flags |= mask } else { r.flags &= !mask }
}

/// `Get_Crit_Section_Status`'s registers: ECX = claims, EBX = owner.
fn crit_status(r: &mut Regs, s: CritStatus) {
    r.ecx = s.claims;
    r.ebx = s.owner;
}

/// Set the low word of `reg` (a service that returns in CX keeps ECX's
/// high word).
fn low_word(reg: &mut u32, value: u16) {
    *reg = (*reg & 0xFFFF_0000) | value as u32;
}

/// The I/O data a `Simulate_IO`-type service returns: AL, AX or EAX by the
/// size of the input (`ECX` = Byte/Word/Dword_Input); EAX unchanged by an
/// output.
fn io_result(r: &mut Regs, io_type: u32, data: u32) {
    use vmm_plugin_api::ddk::{BYTE_INPUT, DWORD_INPUT, WORD_INPUT};
    match io_type {
        BYTE_INPUT => r.eax = (r.eax & 0xFFFF_FF00) | (data & 0xFF),
        WORD_INPUT => r.eax = (r.eax & 0xFFFF_0000) | (data & 0xFFFF),
        DWORD_INPUT => r.eax = data,
        _ => {}
    }
}

/// Answer VMM service `ordinal` called by `caller` through `VxDCall` with
/// registers `r`; `None` when it is not a register service answered this
/// way.
pub(crate) fn register_service(
    core: &Core,
    caller: InstanceId,
    ordinal: u16,
    r: &mut Regs,
) -> Option<Result<(), VmmError>> {
    let cx: &HostCx = &core.cx(caller);
    let none = |_: &mut Regs, ()| {};
    let o = |s: svc::Service| s.ordinal.unwrap_or(u16::MAX);
    Some(match ordinal {
        _ if ordinal == o(svc::GET_VMM_REENTER_COUNT) => {
            let n = shim::get_vmm_reenter_count(cx);
            r.ecx = n;
            if core.is_fatal() { Err(VmmError::FATAL) } else { Ok(()) }
        }
        _ if ordinal == o(svc::CANCEL_GLOBAL_EVENT) => carry(r, shim::cancel_global_event(cx, r.esi), none),
        _ if ordinal == o(svc::CANCEL_VM_EVENT) => carry(r, shim::cancel_vm_event(cx, r.ebx, r.esi), none),
        _ if ordinal == o(svc::CANCEL_PRIORITY_VM_EVENT) => carry(r, shim::cancel_priority_vm_event(cx, r.esi), none),
        _ if ordinal == o(svc::ADJUST_EXEC_PRIORITY) => {
            carry(r, shim::adjust_exec_priority(cx, r.ebx, r.eax as i32), none)
        }
        _ if ordinal == o(svc::BEGIN_CRITICAL_SECTION) => carry(r, shim::begin_critical_section(cx, r.ecx), none),
        _ if ordinal == o(svc::END_CRITICAL_SECTION) => carry(r, shim::end_critical_section(cx), none),
        _ if ordinal == o(svc::END_CRIT_AND_SUSPEND) => carry(r, shim::end_crit_and_suspend(cx), none),
        _ if ordinal == o(svc::CLAIM_CRITICAL_SECTION) => {
            carry(r, shim::claim_critical_section(cx, r.eax, r.ecx), none)
        }
        _ if ordinal == o(svc::RELEASE_CRITICAL_SECTION) => carry(r, shim::release_critical_section(cx, r.ecx), none),
        _ if ordinal == o(svc::CREATE_SEMAPHORE) => {
            carry(r, shim::create_semaphore(cx, r.ecx as i32), |r, handle| r.eax = handle)
        }
        _ if ordinal == o(svc::DESTROY_SEMAPHORE) => carry(r, shim::destroy_semaphore(cx, r.eax), none),
        _ if ordinal == o(svc::WAIT_SEMAPHORE) => carry(r, shim::wait_semaphore(cx, r.eax, r.ecx), none),
        _ if ordinal == o(svc::SIGNAL_SEMAPHORE) => carry(r, shim::signal_semaphore(cx, r.eax), none),
        _ if ordinal == o(svc::GET_CRIT_SECTION_STATUS) => {
            let status = shim::get_crit_section_status(cx);
            let result = carry(r, status, crit_status);
            if let ROk(s) = status {
                // CF here is the priority bit, not a failure.
                set_flag(r, CF_MASK, s.high_priority);
            }
            result
        }
        _ if ordinal == o(svc::SUSPEND_VM) => carry(r, shim::suspend_vm(cx, r.ebx), |_, _| {}),
        _ if ordinal == o(svc::RESUME_VM) => carry(r, shim::resume_vm(cx, r.ebx, false), none),
        _ if ordinal == o(svc::NUKE_VM) => carry(r, shim::nuke_vm(cx, r.ebx), none),
        _ if ordinal == o(svc::CRASH_CUR_VM) => carry(r, shim::crash_cur_vm(cx), none),
        _ if ordinal == o(svc::ADJUST_EXECUTION_TIME) => {
            carry(r, shim::adjust_execution_time(cx, r.ebx, r.eax as i32), none)
        }
        _ if ordinal == o(svc::GET_NEXT_VM_HANDLE) => carry(r, shim::get_next_vm_handle(cx, r.ebx), |r, vm| r.ebx = vm),
        _ if ordinal == o(svc::CANCEL_TIME_OUT) => carry(r, shim::cancel_time_out(cx, r.esi), none),
        _ if ordinal == o(svc::GET_VM_EXEC_TIME) => carry(r, shim::get_vm_exec_time(cx, r.ebx), |r, ms| r.eax = ms),
        _ if ordinal == o(svc::GET_V86_INT_VECTOR) => carry(r, shim::get_v86_int_vector(cx, r.eax), |r, v| {
            low_word(&mut r.ecx, (v >> 16) as u16);
            r.edx = v & 0xFFFF;
        }),
        _ if ordinal == o(svc::SET_V86_INT_VECTOR) => {
            carry(r, shim::set_v86_int_vector(cx, r.eax, r.ecx as u16, r.edx), none)
        }
        _ if ordinal == o(svc::GET_PM_INT_VECTOR) => carry(r, shim::get_pm_int_vector(cx, r.eax), |r, v| {
            low_word(&mut r.ecx, v.selector);
            r.edx = v.offset;
            set_flag(r, ZF_MASK, v.default);
        }),
        _ if ordinal == o(svc::SET_PM_INT_VECTOR) => {
            carry(r, shim::set_pm_int_vector(cx, r.eax, r.ecx as u16, r.edx), none)
        }
        _ if ordinal == o(svc::SIMULATE_INT) => {
            // The typed method takes a byte; a register can say more.
            let n = match shim::vector_number(core, svc::SIMULATE_INT.name, r.eax) {
                Ok(n) => n,
                Err(e) => return Some(carry::<()>(r, RErr(e), none)),
            };
            carry(r, shim::simulate_int(cx, n), none)
        }
        _ if ordinal == o(svc::SIMULATE_IRET) => carry(r, shim::simulate_iret(cx), none),
        _ if ordinal == o(svc::SIMULATE_FAR_CALL) => carry(r, shim::simulate_far_call(cx, r.ecx as u16, r.edx), none),
        _ if ordinal == o(svc::SIMULATE_FAR_JMP) => carry(r, shim::simulate_far_jmp(cx, r.ecx as u16, r.edx), none),
        _ if ordinal == o(svc::SIMULATE_FAR_RET) => carry(r, shim::simulate_far_ret_n(cx, 0), none),
        _ if ordinal == o(svc::SIMULATE_FAR_RET_N) => carry(r, shim::simulate_far_ret_n(cx, r.eax), none),
        _ if ordinal == o(svc::BUILD_INT_STACK_FRAME) => {
            carry(r, shim::build_int_stack_frame(cx, r.ecx as u16, r.edx), none)
        }
        _ if ordinal == o(svc::SIMULATE_PUSH) => carry(r, shim::simulate_push(cx, r.eax), none),
        _ if ordinal == o(svc::SIMULATE_POP) => carry(r, shim::simulate_pop(cx), |r, v| r.eax = v),
        _ if ordinal == o(svc::BEGIN_NEST_V86_EXEC) => carry(r, shim::begin_nest_exec(cx, true), none),
        _ if ordinal == o(svc::BEGIN_NEST_EXEC) => carry(r, shim::begin_nest_exec(cx, false), none),
        _ if ordinal == o(svc::EXEC_INT) => {
            let n = match shim::vector_number(core, svc::EXEC_INT.name, r.eax) {
                Ok(n) => n,
                Err(e) => return Some(carry::<()>(r, RErr(e), none)),
            };
            carry(r, shim::exec_int(cx, n), none)
        }
        _ if ordinal == o(svc::RESUME_EXEC) => carry(r, shim::resume_exec(cx), none),
        _ if ordinal == o(svc::END_NEST_EXEC) => carry(r, shim::end_nest_exec(cx), none),
        _ if ordinal == o(svc::SIMULATE_IO) => {
            let io_type = r.ecx;
            carry(r, shim::simulate_io(cx, r.ebx, io_type, r.edx as u16, r.eax), |r, v| io_result(r, io_type, v))
        }
        _ if ordinal == o(svc::ENABLE_GLOBAL_TRAPPING) => {
            carry(r, shim::set_global_trapping(cx, r.edx as u16, true), none)
        }
        _ if ordinal == o(svc::ENABLE_LOCAL_TRAPPING) => {
            carry(r, shim::set_local_trapping(cx, r.ebx, r.edx as u16, true), none)
        }
        _ if ordinal == o(svc::DISABLE_GLOBAL_TRAPPING) => {
            carry(r, shim::set_global_trapping(cx, r.edx as u16, false), none)
        }
        _ if ordinal == o(svc::DISABLE_LOCAL_TRAPPING) => {
            carry(r, shim::set_local_trapping(cx, r.ebx, r.edx as u16, false), none)
        }
        _ if ordinal == o(svc::GET_FAULT_HOOK_ADDRS) => carry(r, shim::get_fault_hook_addrs(cx, r.eax), |r, a| {
            r.edx = a.v86;
            r.esi = a.pm;
            r.edi = a.vmm;
        }),
        _ if ordinal == o(svc::SYSTEM_CONTROL) => {
            // The broadcast: EAX = message, EBX = VM, ESI/EDI/EDX = parameters.
            // (Directed_Sys_Control names its target by a DDB pointer in ECX:
            // typed only.)
            let args = ControlArgs { message: r.eax, vm: r.ebx, edx: r.edx, esi: r.esi, edi: r.edi };
            carry(r, shim::system_control(cx, 0, &args), none)
        }
        _ if ordinal == o(svc::GET_CRIT_STATUS_NO_BLOCK) => {
            let s = shim::get_crit_status_no_block(cx);
            crit_status(r, s);
            set_flag(r, CF_MASK, s.high_priority);
            if core.is_fatal() { Err(VmmError::FATAL) } else { Ok(()) }
        }
        _ if ordinal == o(svc::REMOVE_IO_HANDLER) => carry(r, shim::remove_io_handler(cx, r.edx as u16), none),
        _ if ordinal == o(svc::CANCEL_CALL_WHEN_NOT_CRITICAL) => {
            carry(r, shim::cancel_call_when_not_critical(cx), none)
        }
        _ if ordinal == o(svc::CANCEL_CALL_WHEN_IDLE) => carry(r, shim::cancel_call_when_idle(cx, r.esi), none),
        _ if ordinal == o(svc::SIMULATE_VM_IO) => {
            let io_type = r.ecx;
            carry(r, shim::simulate_vm_io(cx, io_type, r.edx as u16, r.eax), |r, v| io_result(r, io_type, v))
        }
        _ if ordinal == o(svc::CANCEL_RESTRICTED_EVENT) => carry(r, shim::cancel_restricted_event(cx, r.esi), none),
        _ => return None,
    })
}
