//! The VMM's services as the SDK's `Vmm` reaches them (`vmm.rs` there):
//! the `HostServices` and `VmServices` vtables. Each function is a thin
//! `extern "C"` shim that passes [`serve`] with its entry in the VMM's
//! service table (`vmm/services.rs`) and delegates to the machine; only
//! here are domain results turned into ABI results.

use abi_stable::prefix_type::WithMetadata;
use abi_stable::staticref;
use abi_stable::std_types::{RErr, ROk, RResult, RSlice, RSliceMut, RStr, RString, RVec};
use vmm_plugin_api::abi::{
    ClientRegs, ControlArgs, CritStatus, FaultHookAddrs, HostCx, HostServices, HostServices_Ref, IoHandlerEntry,
    IoPortError, NoteField, NoteKind, PmVector, ProfileString, ProfileValue, RawCallback, ServiceCall, VmInfo,
    VmServices, VmServices_Ref, VmmError, VmmResult,
};
use vmm_plugin_api::ddk::{
    BLOCK_POLL, BLOCK_VALID, BLOCK_VALID_31, CRITICAL_SECTION_BOOST, EF_HANG_ON_EXIT, HEAPZEROINIT, PEF_THREAD_EVENT,
    PEF_VALID, PEF_VALID_31, PEF_WAIT_FOR_STI, PEF_WAIT_FOR_THREAD_STI, PEF_WAIT_NOT_CRIT, RESERVED_HIGH_BOOST,
    RESERVED_LOW_BOOST, VNE_CRASHED, VNE_NUKED,
};

use crate::abi::{Failure, allowed, caller, core, guarded, serve};
use crate::machine::Core;
use crate::machine::rules::mem_fault;
use crate::profile::{parse_boolean, parse_decimal, parse_hex, profile_value};
use crate::time::Duration;
use crate::trace::{CancelReason, PriorityReason, TraceEvent};
use crate::violation::Violation;
use crate::vmm::callback::{Callback, shorten};
use crate::vmm::crit::SemaphoreHandle;
use crate::vmm::events::EventHandle;
use crate::vmm::events::EventKind;
use crate::vmm::ids::{InstanceId, VmId};
use crate::vmm::irq::IrqHandle;
use crate::vmm::services::{self as svc, Rule, Service};
use crate::vmm::timers::TimeoutHandle;
use crate::vmm::timers::{Due, TimeoutRec};
use crate::vmm::vectors::FaultKind;

// ---- diagnostics ------------------------------------------------------------

extern "C" fn log(cx: &HostCx, level: u8, target: RStr<'_>, message: RStr<'_>) {
    serve(cx, &svc::LOG, |core| {
        let device = core.instance_name(caller(cx));
        let (device, target, message) = (&*device, target.as_str(), message.as_str());
        match level {
            1 => tracing::error!(target: "vmm::plugin", device, target, "{message}"),
            2 => tracing::warn!(target: "vmm::plugin", device, target, "{message}"),
            3 => tracing::info!(target: "vmm::plugin", device, target, "{message}"),
            4 => tracing::debug!(target: "vmm::plugin", device, target, "{message}"),
            _ => tracing::trace!(target: "vmm::plugin", device, target, "{message}"),
        }
    })
}

extern "C" fn out_debug_string(cx: &HostCx, text: RStr<'_>) {
    serve(cx, &svc::OUT_DEBUG_STRING, |core| {
        let device = core.instance_name(caller(cx));
        tracing::debug!(target: "vmm::debug", device = &*device, "{}", text.as_str());
        core.trace(|| TraceEvent::DebugString { device: device.to_string(), text: text.as_str().to_string() });
    })
}

extern "C" fn fatal_error_handler(cx: &HostCx, message: RStr<'_>, flags: u32) {
    serve(cx, &svc::FATAL_ERROR_HANDLER, |core| {
        let device = core.instance_name(caller(cx)).to_string();
        let mut text = if message.is_empty() { svc::FATAL_ERROR_HANDLER.name.to_string() } else { message.to_string() };
        if flags & EF_HANG_ON_EXIT != 0 {
            text.push_str(" (EF_Hang_On_Exit)");
        }
        core.set_fatal(text, Some(device));
    })
}

extern "C" fn fatal_memory_error(cx: &HostCx) {
    serve(cx, &svc::FATAL_MEMORY_ERROR, |core| {
        let device = core.instance_name(caller(cx)).to_string();
        core.set_fatal("Insufficient memory to initialize Windows (Fatal_Memory_Error)".to_string(), Some(device));
    })
}

extern "C" fn report_violation(cx: &HostCx, code: RStr<'_>, message: RStr<'_>) {
    serve(cx, &svc::REPORT_VIOLATION, |core| {
        core.device_violation(code.as_str(), message.as_str(), None);
    })
}

/// The bytes a note or field name may contain: `a-z`, `0-9`, `_`.
const NOTE_NAME_BYTES: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        t[b] = (b as u8).is_ascii_lowercase() || (b as u8).is_ascii_digit() || b as u8 == b'_';
        b += 1;
    }
    t
};

/// Whether `name` is a valid note or field name.
fn note_name_ok(name: &str) -> bool {
    (1..=32).contains(&name.len()) && name.bytes().all(|b| NOTE_NAME_BYTES[b as usize])
}

extern "C" fn trace_enabled(cx: &HostCx) -> bool {
    // A read of a flag, no service boundary: it is not a VMM service (and
    // it cannot panic, so it needs no guard).
    core(cx).trace_on
}

extern "C" fn log_level(_cx: &HostCx) -> u8 {
    // The subscriber's current maximum: a read, no service boundary.
    use tracing::level_filters::LevelFilter;
    match LevelFilter::current() {
        LevelFilter::OFF => 0,
        LevelFilter::ERROR => 1,
        LevelFilter::WARN => 2,
        LevelFilter::INFO => 3,
        LevelFilter::DEBUG => 4,
        _ => 5,
    }
}

extern "C" fn trace_note(cx: &HostCx, note: RStr<'_>, fields: RSlice<'_, NoteField<'_>>) -> VmmResult<()> {
    trace_note_with_nulls(cx, note, fields, 0)
}

/// `trace_note` whose fields at the bits set in `nulls` are null (an
/// optional value that is absent).
extern "C" fn trace_note_nulls(
    cx: &HostCx,
    note: RStr<'_>,
    fields: RSlice<'_, NoteField<'_>>,
    nulls: u32,
) -> VmmResult<()> {
    trace_note_with_nulls(cx, note, fields, nulls)
}

fn trace_note_with_nulls(cx: &HostCx, note: RStr<'_>, fields: RSlice<'_, NoteField<'_>>, nulls: u32) -> VmmResult<()> {
    serve(cx, &svc::TRACE_NOTE, |core| {
        // A note without a trace to go to is nothing: not even checked.
        if !core.trace_on {
            return ROk(());
        }
        let bad = if !note_name_ok(note.as_str()) {
            Some(format!("note name `{}` must be 1 to 32 characters of a-z, 0-9 and _", note.as_str().escape_debug()))
        } else if fields.len() > vmm_plugin_api::vmm::MAX_NOTE_FIELDS {
            Some(format!("note `{}` has {} fields; at most 32 are allowed", note.as_str(), fields.len()))
        } else if let Some(f) = fields.iter().find(|f| !note_name_ok(f.key.as_str())) {
            Some(format!(
                "field name `{}` of note `{}` must be 1 to 32 characters of a-z, 0-9 and _",
                f.key.as_str().escape_debug(),
                note.as_str()
            ))
        } else {
            fields.iter().enumerate().find_map(|(i, f)| {
                let key = f.key.as_str().as_bytes();
                fields.as_slice()[..i]
                    .iter()
                    .any(|g| {
                        let other = g.key.as_str().as_bytes();
                        other.len() == key.len() && other[0] == key[0] && other == key
                    })
                    .then(|| format!("note `{}` has field `{}` twice", note.as_str(), f.key.as_str()))
            })
        };
        if let Some(message) = bad {
            return RErr(core.refuse(Violation::InvalidParameter, message, Some(svc::TRACE_NOTE.name)));
        }
        core.trace(|| {
            let mut map = serde_json::Map::new();
            for (i, f) in fields.iter().enumerate() {
                let v = match f.kind {
                    _ if nulls & (1 << i) != 0 => serde_json::Value::Null,
                    NoteKind::Int => serde_json::Value::from(f.number as i64),
                    NoteKind::UInt => serde_json::Value::from(f.number),
                    NoteKind::Bool => serde_json::Value::from(f.number != 0),
                    NoteKind::Text => serde_json::Value::from(f.text.as_str()),
                };
                map.insert(f.key.as_str().to_string(), v);
            }
            TraceEvent::Note {
                device: core.instance_name(caller(cx)).to_string(),
                note: note.as_str().to_string(),
                fields: map,
            }
        });
        ROk(())
    })
}

// ---- version, profile, dispatch -------------------------------------------------

extern "C" fn get_vmm_version(cx: &HostCx) -> u32 {
    serve(cx, &svc::GET_VMM_VERSION, |core| core.vmm_version())
}

fn profile_entry(core: &Core, section: &str, key: &str, index: u32) -> VmmResult<ProfileString> {
    match core.manifest.profile.values(section, key).and_then(|v| v.get(index as usize)) {
        Some(v) => ROk(ProfileString { value: RString::from(v.as_str()), index }),
        None => RErr(VmmError::NOT_FOUND),
    }
}

extern "C" fn get_profile_string(cx: &HostCx, section: RStr<'_>, key: RStr<'_>) -> VmmResult<ProfileString> {
    serve(cx, &svc::GET_PROFILE_STRING, |core| profile_entry(core, section.as_str(), key.as_str(), 0))
}

extern "C" fn get_next_profile_string(
    cx: &HostCx,
    section: RStr<'_>,
    key: RStr<'_>,
    previous: u32,
) -> VmmResult<ProfileString> {
    serve(cx, &svc::GET_NEXT_PROFILE_STRING, |core| {
        profile_entry(core, section.as_str(), key.as_str(), previous.saturating_add(1))
    })
}

fn profile_number(
    cx: &HostCx,
    svc: &'static Service,
    section: RStr<'_>,
    key: RStr<'_>,
    default: u32,
    parse: fn(&str) -> Option<u32>,
) -> VmmResult<ProfileValue> {
    serve(cx, svc, |core| {
        let value = core.manifest.profile.values(section.as_str(), key.as_str()).and_then(|v| v.first());
        ROk(profile_value(value.map(String::as_str), default, parse))
    })
}

extern "C" fn get_profile_decimal_int(
    cx: &HostCx,
    section: RStr<'_>,
    key: RStr<'_>,
    default: u32,
) -> VmmResult<ProfileValue> {
    profile_number(cx, &svc::GET_PROFILE_DECIMAL_INT, section, key, default, parse_decimal)
}

extern "C" fn get_profile_hex_int(
    cx: &HostCx,
    section: RStr<'_>,
    key: RStr<'_>,
    default: u32,
) -> VmmResult<ProfileValue> {
    profile_number(cx, &svc::GET_PROFILE_HEX_INT, section, key, default, parse_hex)
}

extern "C" fn get_profile_boolean(
    cx: &HostCx,
    section: RStr<'_>,
    key: RStr<'_>,
    default: u32,
) -> VmmResult<ProfileValue> {
    profile_number(cx, &svc::GET_PROFILE_BOOLEAN, section, key, default, parse_boolean)
}

extern "C" fn vxd_call(cx: &HostCx, service: u32, call: &mut ServiceCall) -> VmmResult<()> {
    serve(cx, &svc::VXDCALL, |core| core.vxd_call(caller(cx), service, call).into())
}

// ---- heap and linear memory ---------------------------------------------------------

extern "C" fn heap_allocate(cx: &HostCx, bytes: u32, flags: u32) -> u32 {
    serve(cx, &svc::HEAP_ALLOCATE, |core| {
        core.heap.borrow_mut().allocate(caller(cx), bytes, flags & HEAPZEROINIT != 0).unwrap_or(0)
    })
}

extern "C" fn heap_reallocate(cx: &HostCx, address: u32, bytes: u32, _flags: u32) -> u32 {
    serve(cx, &svc::HEAP_REALLOCATE, |core| core.heap.borrow_mut().reallocate(address, bytes).unwrap_or(0))
}

extern "C" fn heap_free(cx: &HostCx, address: u32, _flags: u32) -> u32 {
    serve(cx, &svc::HEAP_FREE, |core| {
        let freed = core.heap.borrow_mut().free(address);
        match freed {
            Some(_) => 1,
            None => {
                core.violation(
                    Violation::BadHeapFree,
                    format!("_HeapFree of {address:#010X}, which is not an allocated block (double free?)"),
                    Some(svc::HEAP_FREE.name),
                );
                0
            }
        }
    })
}

extern "C" fn heap_get_size(cx: &HostCx, address: u32, _flags: u32) -> u32 {
    serve(cx, &svc::HEAP_GET_SIZE, |core| core.heap.borrow().size(address).unwrap_or(0))
}

extern "C" fn mem_read(cx: &HostCx, address: u32, mut out: RSliceMut<'_, u8>) -> VmmResult<()> {
    serve(cx, &svc::MEM_READ, |core| {
        let len = out.len();
        let r = core.heap.borrow().read(address, out.as_mut_slice());
        match r {
            Ok(()) => ROk(()),
            Err(e) => RErr(mem_fault(core, svc::MEM_READ.name, address, len, e)),
        }
    })
}

extern "C" fn mem_write(cx: &HostCx, address: u32, data: RSlice<'_, u8>) -> VmmResult<()> {
    serve(cx, &svc::MEM_WRITE, |core| {
        let r = core.heap.borrow_mut().write(address, data.as_slice());
        match r {
            Ok(()) => ROk(()),
            Err(e) => RErr(mem_fault(core, svc::MEM_WRITE.name, address, data.len(), e)),
        }
    })
}

// ---- VMs ---------------------------------------------------------------------------

fn bad_vm(core: &Core, service: &'static str, vm: VmId) -> VmmError {
    core.refuse(
        Violation::InvalidVmHandle,
        format!("{service} was given VM handle {vm:#010X}, which is not a live VM (destroyed, stale or forged)"),
        Some(service),
    )
}

extern "C" fn get_cur_vm_handle(cx: &HostCx) -> u32 {
    core(cx).cur_vm.get().raw()
}

extern "C" fn get_sys_vm_handle(cx: &HostCx) -> u32 {
    core(cx).sys_vm.get().raw()
}

extern "C" fn test_cur_vm_handle(cx: &HostCx, vm: u32) -> bool {
    let vm = VmId::from_raw(vm);
    core(cx).cur_vm.get() == vm
}

extern "C" fn test_sys_vm_handle(cx: &HostCx, vm: u32) -> bool {
    let vm = VmId::from_raw(vm);
    core(cx).sys_vm.get() == vm
}

extern "C" fn validate_vm_handle(cx: &HostCx, vm: u32) -> bool {
    let vm = VmId::from_raw(vm);
    serve(cx, &svc::VALIDATE_VM_HANDLE, |core| core.vm_valid(vm))
}

pub(super) extern "C" fn get_next_vm_handle(cx: &HostCx, vm: u32) -> VmmResult<u32> {
    let vm = VmId::from_raw(vm);
    serve(cx, &svc::GET_NEXT_VM_HANDLE, |core| {
        let next = core.vms.borrow().next(vm);
        match next {
            Some(h) => ROk(h.raw()),
            None => RErr(bad_vm(core, svc::GET_NEXT_VM_HANDLE.name, vm)),
        }
    })
}

pub(super) extern "C" fn get_vmm_reenter_count(cx: &HostCx) -> u32 {
    serve(cx, &svc::GET_VMM_REENTER_COUNT, |core| core.stack.reenter_count())
}

extern "C" fn get_vm_info(cx: &HostCx, vm: u32) -> VmmResult<VmInfo> {
    let vm = VmId::from_raw(vm);
    serve(cx, &svc::GET_VM_INFO, |core| {
        let info = core.vms.borrow().get(vm).map(|v| VmInfo {
            id: v.id,
            status: v.status,
            priority: v.priority(),
            interrupts_enabled: v.interrupts_enabled(),
            nested: !v.nest.is_empty(),
            exec_time_ms: v.exec_time.as_millis() as u32,
        });
        match info {
            Some(i) => ROk(i),
            None => RErr(bad_vm(core, svc::GET_VM_INFO.name, vm)),
        }
    })
}

extern "C" fn client_regs(cx: &HostCx, vm: u32) -> VmmResult<*mut ClientRegs> {
    let vm = VmId::from_raw(vm);
    serve(cx, &svc::CLIENT_REGS, |core| {
        let ptr = core.vms.borrow().get(vm).map(|v| v.client_ptr());
        match ptr {
            Some(p) => ROk(p),
            None => RErr(bad_vm(core, svc::CLIENT_REGS.name, vm)),
        }
    })
}

extern "C" fn allocate_device_cb_area(cx: &HostCx, bytes: u32, flags: u32) -> u32 {
    serve(cx, &svc::ALLOCATE_DEVICE_CB_AREA, |core| {
        if bytes == 0 || flags != 0 {
            core.violation(
                Violation::InvalidParameter,
                format!("_Allocate_Device_CB_Area({bytes}, {flags:#x}): the size must be non-zero and the flags 0"),
                Some(svc::ALLOCATE_DEVICE_CB_AREA.name),
            );
            return 0;
        }
        // A size that does not fit in what is left of the 64 KB block gets
        // 0 (out of space), as in Windows.
        core.vms.borrow_mut().allocate_cb_area(bytes).unwrap_or(0)
    })
}

fn cb_range(
    core: &Core,
    service: &'static str,
    vm: VmId,
    offset: u32,
    len: usize,
) -> Result<std::ops::Range<usize>, VmmError> {
    let start = offset as usize;
    let end = start.checked_add(len).ok_or(VmmError::INVALID_PARAMETER)?;
    if !core.vm_valid(vm) {
        return Err(bad_vm(core, service, vm));
    }
    if !core.vms.borrow().cb_allocated(&(start..end)) {
        return Err(core.refuse(
            Violation::BadCbOffset,
            format!(
                "{service}: bytes {start:#x}..{end:#x} of the control block are not inside an area from \
                 _Allocate_Device_CB_Area"
            ),
            Some(service),
        ));
    }
    Ok(start..end)
}

extern "C" fn cb_read(cx: &HostCx, vm: u32, offset: u32, mut out: RSliceMut<'_, u8>) -> VmmResult<()> {
    let vm = VmId::from_raw(vm);
    serve(cx, &svc::CB_READ, |core| match cb_range(core, svc::CB_READ.name, vm, offset, out.len()) {
        Ok(range) => {
            if let Some(v) = core.vms.borrow().get(vm) {
                out.as_mut_slice().copy_from_slice(&v.cb_area[range]);
            }
            ROk(())
        }
        Err(e) => RErr(e),
    })
}

extern "C" fn cb_write(cx: &HostCx, vm: u32, offset: u32, data: RSlice<'_, u8>) -> VmmResult<()> {
    let vm = VmId::from_raw(vm);
    serve(cx, &svc::CB_WRITE, |core| match cb_range(core, svc::CB_WRITE.name, vm, offset, data.len()) {
        Ok(range) => {
            if let Some(v) = core.vms.borrow_mut().get_mut(vm) {
                v.cb_area[range].copy_from_slice(data.as_slice());
            }
            ROk(())
        }
        Err(e) => RErr(e),
    })
}

// ---- time ------------------------------------------------------------------------------

extern "C" fn get_system_time(cx: &HostCx) -> u32 {
    core(cx).sched.now().system_time_ms()
}

pub(super) extern "C" fn get_vm_exec_time(cx: &HostCx, vm: u32) -> VmmResult<u32> {
    let vm = VmId::from_raw(vm);
    serve(cx, &svc::GET_VM_EXEC_TIME, |core| {
        let t = core.vms.borrow().get(vm).map(|v| v.exec_time.as_millis() as u32);
        match t {
            Some(t) => ROk(t),
            None => RErr(bad_vm(core, svc::GET_VM_EXEC_TIME.name, vm)),
        }
    })
}

// ---- time-outs ---------------------------------------------------------------------------

fn set_time_out(cx: &HostCx, svc: &'static Service, ms: u32, vm: Option<VmId>, callback: RawCallback) -> u32 {
    let cb = Callback::plugin(caller(cx), callback);
    serve(cx, svc, |core| {
        let service = svc.name;
        let now = core.sched.now();
        let due = match vm {
            None => Due::System(now + Duration::from_millis(ms as u64)),
            Some(vm) => {
                let exec = core.vms.borrow().get(vm).map(|v| v.exec_time);
                match exec {
                    Some(exec) => Due::Exec(vm, exec + Duration::from_millis(ms as u64)),
                    None => {
                        bad_vm(core, service, vm);
                        return 0;
                    }
                }
            }
        };
        let label = if core.trace_on { cb.label() } else { "" };
        let handle = core.sched.add_timeout(TimeoutRec { due, ms, cb });
        let Some(handle) = handle else { return 0 };
        core.trace(|| TraceEvent::TimeoutScheduled {
            handle: handle.raw(),
            timer: if vm.is_some() { "vm" } else { "global" },
            vm: vm.map(VmId::raw),
            ms,
            device: core.instance_name(caller(cx)).to_string(),
            callback: shorten(label),
        });
        handle.raw()
    })
}

extern "C" fn set_global_time_out(cx: &HostCx, ms: u32, callback: RawCallback) -> u32 {
    set_time_out(cx, &svc::SET_GLOBAL_TIME_OUT, ms, None, callback)
}

extern "C" fn set_vm_time_out(cx: &HostCx, ms: u32, vm: u32, callback: RawCallback) -> u32 {
    let vm = VmId::from_raw(vm);
    set_time_out(cx, &svc::SET_VM_TIME_OUT, ms, Some(vm), callback)
}

pub(super) extern "C" fn cancel_time_out(cx: &HostCx, handle: u32) -> VmmResult<()> {
    let svc = &svc::CANCEL_TIME_OUT;
    // A zero handle is a no-op that passes before the context rule.
    guarded(cx, svc.name, Failure::fatal(), |core| {
        if handle == 0 {
            return ROk(());
        }
        if !allowed(core, svc.name, svc.rule) {
            return Failure::refused();
        }
        if core.cancel_timeout(TimeoutHandle::from_raw(handle), CancelReason::Cancelled) {
            ROk(())
        } else {
            stale(core, "Cancel_Time_Out", Violation::StaleTimeoutHandle, handle, "time-out handle")
        }
    })
}

fn stale<T>(core: &Core, service: &'static str, rule: Violation, handle: u32, what: &str) -> VmmResult<T> {
    RErr(core.refuse(
        rule,
        format!("{service} was given {what} {handle:#010X}, which is not pending (it already ran, was cancelled, or never existed)"),
        Some(service),
    ))
}

// ---- scheduler ------------------------------------------------------------------------------

pub(super) extern "C" fn adjust_exec_priority(cx: &HostCx, vm: u32, boost: i32) -> VmmResult<()> {
    let vm = VmId::from_raw(vm);
    serve(cx, &svc::ADJUST_EXEC_PRIORITY, |core| {
        let current = core.vms.borrow().get(vm).map(|v| v.base_priority as i64 + v.boost);
        let Some(current) = current else { return RErr(bad_vm(core, svc::ADJUST_EXEC_PRIORITY.name, vm)) };
        let after = current + boost as i64;
        if !(RESERVED_LOW_BOOST as i64..=RESERVED_HIGH_BOOST as i64).contains(&after) {
            return RErr(core.refuse(
                Violation::PriorityRange,
                format!(
                    "Adjust_Exec_Priority({boost:+}) would take the VM's priority to {after}, outside \
                     Reserved_Low_Boost..Reserved_High_Boost"
                ),
                Some(svc::ADJUST_EXEC_PRIORITY.name),
            ));
        }
        core.add_boost(vm, boost as i64, PriorityReason::Adjust);
        ROk(())
    })
}

extern "C" fn call_when_task_switched(cx: &HostCx, callback: RawCallback) -> VmmResult<()> {
    let cb = Callback::plugin(caller(cx), callback);
    serve(cx, &svc::CALL_WHEN_TASK_SWITCHED, |core| {
        core.hooks.borrow_mut().task_switched.push(Some(cb));
        ROk(())
    })
}

extern "C" fn call_when_idle(cx: &HostCx, callback: RawCallback) -> VmmResult<()> {
    let cb = Callback::plugin(caller(cx), callback);
    serve(cx, &svc::CALL_WHEN_IDLE, |core| {
        core.add_idle_handler(caller(cx), cb);
        ROk(())
    })
}

pub(super) extern "C" fn suspend_vm(cx: &HostCx, vm: u32) -> VmmResult<u32> {
    let vm = VmId::from_raw(vm);
    serve(cx, &svc::SUSPEND_VM, |core| {
        if !core.vm_valid(vm) {
            return RErr(bad_vm(core, svc::SUSPEND_VM.name, vm));
        }
        if vm == core.sys_vm.get() {
            return RErr(core.refuse(
                Violation::SuspendSystemVm,
                "Suspend_VM of the system VM: it cannot be suspended",
                Some(svc::SUSPEND_VM.name),
            ));
        }
        core.suspend_vm(vm).into()
    })
}

pub(super) extern "C" fn resume_vm(cx: &HostCx, vm: u32, no_fail: bool) -> VmmResult<()> {
    let vm = VmId::from_raw(vm);
    serve(cx, &svc::RESUME_VM, |core| {
        if !core.vm_valid(vm) {
            return RErr(bad_vm(core, svc::RESUME_VM.name, vm));
        }
        core.resume_vm(vm, no_fail).into()
    })
}

// ---- events -----------------------------------------------------------------------------------

extern "C" fn call_priority_vm_event(
    cx: &HostCx,
    boost: i32,
    vm: u32,
    flags: u32,
    timeout_ms: u32,
    callback: RawCallback,
) -> VmmResult<u32> {
    let vm = VmId::from_raw(vm);
    const SERVICE: &str = svc::CALL_PRIORITY_VM_EVENT.name;
    serve(cx, &svc::CALL_PRIORITY_VM_EVENT, |core| {
        // The callback becomes a `Callback` (which owns it) only once the
        // arguments passed: a refused one is released right away.
        if !core.vm_valid(vm) {
            drop(Callback::plugin(caller(cx), callback));
            return RErr(bad_vm(core, SERVICE, vm));
        }
        let valid = if core.manifest.machine.windows_version.0 < 4 { PEF_VALID_31 } else { PEF_VALID };
        if flags & !valid != 0 {
            drop(Callback::plugin(caller(cx), callback));
            return RErr(core.refuse(
                Violation::ReservedFlags,
                format!(
                    "{SERVICE} flags {flags:#06X} set bits {:#06X} that are reserved (or need threads) in this \
                     Windows version",
                    flags & !valid
                ),
                Some(SERVICE),
            ));
        }
        core.priority_event(caller(cx), boost, vm, flags, timeout_ms, Callback::plugin(caller(cx), callback)).into()
    })
}

/// A cancel service: a zero handle is a no-op that passes before the
/// context rule.
fn cancel_kind(cx: &HostCx, svc: &'static Service, handle: u32, want: EventKind, vm: Option<VmId>) -> VmmResult<()> {
    let service = svc.name;
    guarded(cx, service, Failure::fatal(), |core| {
        if handle == 0 {
            return ROk(());
        }
        if !allowed(core, service, svc.rule) {
            return Failure::refused();
        }
        let found = core.sched.with_event(EventHandle::from_raw(handle), |e| (e.kind, e.target));
        match found {
            None => stale(core, service, Violation::StaleEventHandle, handle, "event handle"),
            Some((kind, target)) => {
                let kind_ok = kind == want || (want == EventKind::Vm && kind == EventKind::IntsEnabled);
                if !kind_ok || vm.is_some_and(|v| v != target) {
                    return RErr(core.refuse(
                        Violation::WrongEventKind,
                        format!(
                            "{service} was given the handle of a {} event{}",
                            kind.name(),
                            match vm {
                                Some(v) if v != target => format!(" of another VM ({target:#x}, not {v:#x})"),
                                _ => String::new(),
                            }
                        ),
                        Some(service),
                    ));
                }
                core.cancel_event(EventHandle::from_raw(handle), CancelReason::Cancelled);
                ROk(())
            }
        }
    })
}

pub(super) extern "C" fn cancel_priority_vm_event(cx: &HostCx, handle: u32) -> VmmResult<()> {
    cancel_kind(cx, &svc::CANCEL_PRIORITY_VM_EVENT, handle, EventKind::Priority, None)
}

extern "C" fn schedule_global_event(cx: &HostCx, callback: RawCallback) -> VmmResult<u32> {
    serve(cx, &svc::SCHEDULE_GLOBAL_EVENT, |core| {
        let cb = Callback::plugin(caller(cx), callback);
        core.schedule(caller(cx), EventKind::Global, VmId::NONE, 0, 0, None, cb).into()
    })
}

extern "C" fn schedule_vm_event(cx: &HostCx, vm: u32, callback: RawCallback) -> VmmResult<u32> {
    let vm = VmId::from_raw(vm);
    serve(cx, &svc::SCHEDULE_VM_EVENT, |core| {
        let cb = Callback::plugin(caller(cx), callback);
        if !core.vm_valid(vm) {
            return RErr(bad_vm(core, svc::SCHEDULE_VM_EVENT.name, vm));
        }
        core.schedule(caller(cx), EventKind::Vm, vm, 0, 0, None, cb).into()
    })
}

extern "C" fn call_global_event(cx: &HostCx, callback: RawCallback) -> VmmResult<u32> {
    serve(cx, &svc::CALL_GLOBAL_EVENT, |core| {
        let cb = Callback::plugin(caller(cx), callback);
        if core.at_interrupt() {
            core.schedule(caller(cx), EventKind::Global, VmId::NONE, 0, 0, None, cb).into()
        } else {
            core.run_inline(EventKind::Global, VmId::NONE, 0, 0, cb).into()
        }
    })
}

extern "C" fn call_vm_event(cx: &HostCx, vm: u32, callback: RawCallback) -> VmmResult<u32> {
    let vm = VmId::from_raw(vm);
    serve(cx, &svc::CALL_VM_EVENT, |core| {
        let cb = Callback::plugin(caller(cx), callback);
        if !core.vm_valid(vm) {
            return RErr(bad_vm(core, svc::CALL_VM_EVENT.name, vm));
        }
        if !core.at_interrupt() && vm == core.cur_vm.get() {
            core.run_inline(EventKind::Vm, vm, 0, 0, cb).into()
        } else {
            core.schedule(caller(cx), EventKind::Vm, vm, 0, 0, None, cb).into()
        }
    })
}

pub(super) extern "C" fn cancel_global_event(cx: &HostCx, handle: u32) -> VmmResult<()> {
    cancel_kind(cx, &svc::CANCEL_GLOBAL_EVENT, handle, EventKind::Global, None)
}

pub(super) extern "C" fn cancel_vm_event(cx: &HostCx, vm: u32, handle: u32) -> VmmResult<()> {
    let vm = VmId::from_raw(vm);
    cancel_kind(cx, &svc::CANCEL_VM_EVENT, handle, EventKind::Vm, Some(vm))
}

extern "C" fn call_when_vm_ints_enabled(cx: &HostCx, callback: RawCallback) -> VmmResult<()> {
    let cb = Callback::plugin(caller(cx), callback);
    serve(cx, &svc::CALL_WHEN_VM_INTS_ENABLED, |core| {
        let vm = core.cur_vm.get();
        let enabled = core.vms.borrow().get(vm).is_some_and(|v| v.interrupts_enabled());
        let r = if enabled {
            core.run_inline(EventKind::IntsEnabled, vm, PEF_WAIT_FOR_STI, 0, cb)
        } else {
            core.schedule(caller(cx), EventKind::IntsEnabled, vm, PEF_WAIT_FOR_STI, 0, None, cb)
        };
        r.map(|_| ()).into()
    })
}

extern "C" fn call_when_not_critical(cx: &HostCx, callback: RawCallback) -> VmmResult<()> {
    let cb = Callback::plugin(caller(cx), callback);
    serve(cx, &svc::CALL_WHEN_NOT_CRITICAL, |core| {
        if core.manifest.machine.windows_version.0 >= 4 {
            // Windows 95: a global restricted event waiting for
            // PEF_Wait_Not_Crit, each registration its own event.
            return core.restricted_event(caller(cx), 0, VmId::NONE, PEF_WAIT_NOT_CRIT, 0, cb).map(|_| ()).into();
        }
        // The section is free and the VM is not boosted: nothing to wait for.
        let vm = core.cur_vm.get();
        let free = core.crit.borrow().owner().is_none()
            && core.vms.borrow().get(vm).is_some_and(|v| v.crit_priority() < CRITICAL_SECTION_BOOST);
        if free {
            return core.run_inline(EventKind::Global, VmId::NONE, 0, 0, cb).map(|_| ()).into();
        }
        core.crit.borrow_mut().call_when_not_critical(cb);
        ROk(())
    })
}

// ---- critical section and semaphores -------------------------------------------------------------

/// Check the `BLOCK_*` flags of a blocking service: reserved bits (the
/// 4.0 flags under Windows 3.1) and, for the critical section, Block_Poll
/// are rejected with a violation.
fn check_block_flags(core: &Core, service: &'static str, flags: u32, poll_allowed: bool) -> Result<(), VmmError> {
    let valid = if core.manifest.machine.windows_version.0 < 4 { BLOCK_VALID_31 } else { BLOCK_VALID };
    if flags & !valid != 0 {
        return Err(core.refuse(
            Violation::ReservedFlags,
            format!(
                "{service} flags {flags:#04X} set bits {:#04X} that are not BLOCK_* flags of this Windows version",
                flags & !valid
            ),
            Some(service),
        ));
    }
    if !poll_allowed && flags & BLOCK_POLL != 0 {
        return Err(core.refuse(
            Violation::InvalidParameter,
            format!("{service} does not allow Block_Poll"),
            Some(service),
        ));
    }
    Ok(())
}

pub(super) extern "C" fn begin_critical_section(cx: &HostCx, flags: u32) -> VmmResult<()> {
    serve(cx, &svc::BEGIN_CRITICAL_SECTION, |core| {
        if let Err(e) = check_block_flags(core, svc::BEGIN_CRITICAL_SECTION.name, flags, false) {
            return RErr(e);
        }
        core.claim_critical(svc::BEGIN_CRITICAL_SECTION.name, 1, flags).into()
    })
}

pub(super) extern "C" fn end_critical_section(cx: &HostCx) -> VmmResult<()> {
    serve(cx, &svc::END_CRITICAL_SECTION, |core| {
        core.end_critical_for(core.cur_vm.get(), 1, svc::END_CRITICAL_SECTION.name).into()
    })
}

pub(super) extern "C" fn claim_critical_section(cx: &HostCx, count: u32, flags: u32) -> VmmResult<()> {
    serve(cx, &svc::CLAIM_CRITICAL_SECTION, |core| {
        if let Err(e) = check_block_flags(core, svc::CLAIM_CRITICAL_SECTION.name, flags, false) {
            return RErr(e);
        }
        if count == 0 {
            return ROk(());
        }
        core.claim_critical(svc::CLAIM_CRITICAL_SECTION.name, count, flags).into()
    })
}

pub(super) extern "C" fn release_critical_section(cx: &HostCx, count: u32) -> VmmResult<()> {
    serve(cx, &svc::RELEASE_CRITICAL_SECTION, |core| {
        if count == 0 {
            return ROk(());
        }
        core.end_critical_for(core.cur_vm.get(), count, svc::RELEASE_CRITICAL_SECTION.name).into()
    })
}

fn crit_status(core: &Core) -> CritStatus {
    let (owner, claims) = {
        let c = core.crit.borrow();
        (c.owner(), c.claims())
    };
    let cur = core.cur_vm.get();
    CritStatus {
        claims,
        owner: owner.unwrap_or(cur).raw(),
        high_priority: core.vms.borrow().get(cur).is_some_and(|v| v.crit_priority() >= CRITICAL_SECTION_BOOST),
    }
}

pub(super) extern "C" fn get_crit_section_status(cx: &HostCx) -> VmmResult<CritStatus> {
    serve(cx, &svc::GET_CRIT_SECTION_STATUS, |core| ROk(crit_status(core)))
}

pub(super) extern "C" fn get_crit_status_no_block(cx: &HostCx) -> CritStatus {
    serve(cx, &svc::GET_CRIT_STATUS_NO_BLOCK, crit_status)
}

pub(super) extern "C" fn end_crit_and_suspend(cx: &HostCx) -> VmmResult<()> {
    serve(cx, &svc::END_CRIT_AND_SUSPEND, |core| core.end_crit_and_suspend().into())
}

// ---- I/O port trapping ----------------------------------------------------------------------

/// Under Windows 3.x, `Install_IO_Handler` (and `Install_Mult_IO_Handlers`)
/// is legal only during initialization; under 4.0 at any time (not at
/// interrupt time, the entry's rule).
fn install_allowed(core: &Core, svc: &'static Service) -> bool {
    core.manifest.machine.windows_version.0 >= 4 || allowed(core, svc.name, Rule::Init)
}

/// A service Windows 3.x does not have: calling it there is the fatal
/// "Invalid VxD dynamic link call", as under Windows.
fn win95_only(core: &Core, caller: InstanceId, svc: &'static Service) -> bool {
    if core.manifest.machine.windows_version.0 >= 4 {
        return true;
    }
    core.invalid_dynamic_link(caller, 1, svc.ordinal.unwrap_or(0));
    false
}

extern "C" fn install_io_handler(cx: &HostCx, port: u16, callback: RawCallback) -> VmmResult<()> {
    let cb = Callback::plugin(caller(cx), callback);
    serve(cx, &svc::INSTALL_IO_HANDLER, |core| {
        if !install_allowed(core, &svc::INSTALL_IO_HANDLER) {
            return RErr(VmmError::VIOLATION);
        }
        core.install_io_handler(caller(cx), port, cb).into()
    })
}

pub(super) extern "C" fn remove_io_handler(cx: &HostCx, port: u16) -> VmmResult<()> {
    let svc = &svc::REMOVE_IO_HANDLER;
    serve(cx, svc, |core| {
        if !win95_only(core, caller(cx), svc) {
            return RErr(VmmError::FATAL);
        }
        core.remove_io_handler(svc.name, caller(cx), port).into()
    })
}

/// The Mult services' result: the failing port and its error.
type MultResult = RResult<(), IoPortError>;

impl Failure for MultResult {
    fn fatal() -> Self {
        RErr(IoPortError { port: 0, error: VmmError::FATAL })
    }
    fn refused() -> Self {
        RErr(IoPortError { port: 0, error: VmmError::VIOLATION })
    }
}

extern "C" fn install_mult_io_handlers(cx: &HostCx, entries: RVec<IoHandlerEntry>) -> MultResult {
    let svc = &svc::INSTALL_MULT_IO_HANDLERS;
    let owner = caller(cx);
    // Owned by the host from here: every callback is dropped through its
    // plugin, installed or not.
    let entries: Vec<(u16, Callback)> =
        entries.into_iter().map(|e| (e.port, Callback::plugin(owner, e.callback))).collect();
    serve(cx, svc, |core| {
        if !install_allowed(core, svc) {
            let port = entries.first().map_or(0, |e| e.0);
            return RErr(IoPortError { port, error: VmmError::VIOLATION });
        }
        core.install_mult_io_handlers(owner, entries).map_err(|(port, error)| IoPortError { port, error }).into()
    })
}

extern "C" fn remove_mult_io_handlers(cx: &HostCx, ports: RSlice<'_, u16>) -> MultResult {
    let svc = &svc::REMOVE_MULT_IO_HANDLERS;
    serve(cx, svc, |core| {
        if !win95_only(core, caller(cx), svc) {
            return RErr(IoPortError { port: ports.first().copied().unwrap_or(0), error: VmmError::FATAL });
        }
        let mut first = ROk(());
        for &port in ports.as_slice() {
            if let Err(error) = core.remove_io_handler(svc.name, caller(cx), port)
                && first.is_ok()
            {
                first = RErr(IoPortError { port, error });
            }
        }
        first
    })
}

pub(super) extern "C" fn set_global_trapping(cx: &HostCx, port: u16, on: bool) -> VmmResult<()> {
    let svc = if on { &svc::ENABLE_GLOBAL_TRAPPING } else { &svc::DISABLE_GLOBAL_TRAPPING };
    serve(cx, svc, |core| core.set_io_trapping(svc.name, caller(cx), port, None, on).into())
}

pub(super) extern "C" fn set_local_trapping(cx: &HostCx, vm: u32, port: u16, on: bool) -> VmmResult<()> {
    let vm = VmId::from_raw(vm);
    let svc = if on { &svc::ENABLE_LOCAL_TRAPPING } else { &svc::DISABLE_LOCAL_TRAPPING };
    serve(cx, svc, |core| {
        if !core.vm_valid(vm) {
            return RErr(bad_vm(core, svc.name, vm));
        }
        core.set_io_trapping(svc.name, caller(cx), port, Some(vm), on).into()
    })
}

pub(super) extern "C" fn simulate_io(cx: &HostCx, vm: u32, io_type: u32, port: u16, data: u32) -> VmmResult<u32> {
    let vm = VmId::from_raw(vm);
    let svc = &svc::SIMULATE_IO;
    serve(cx, svc, |core| {
        if !core.vm_valid(vm) {
            return RErr(bad_vm(core, svc.name, vm));
        }
        if let Err(e) = core.check_io_type(svc.name, io_type, true) {
            return RErr(e);
        }
        if io_type & crate::vmm::io::STRING_IO != 0 {
            // The elements, one by one through the port table.
            return core.simulate_string_io(vm, port, io_type).map(|()| 0).into();
        }
        ROk(core.simulate_io(vm, port, io_type, data))
    })
}

pub(super) extern "C" fn simulate_vm_io(cx: &HostCx, io_type: u32, port: u16, data: u32) -> VmmResult<u32> {
    let svc = &svc::SIMULATE_VM_IO;
    serve(cx, svc, |core| {
        if !win95_only(core, caller(cx), svc) {
            return RErr(VmmError::FATAL);
        }
        if let Err(e) = core.check_io_type(svc.name, io_type, false) {
            return RErr(e);
        }
        ROk(core.port_io(core.cur_vm.get(), port, io_type, data))
    })
}

extern "C" fn trace_contention(
    cx: &HostCx,
    resource: RStr<'_>,
    owner: u32,
    contender: u32,
    decision: RStr<'_>,
) -> VmmResult<()> {
    let svc = &svc::TRACE_CONTENTION;
    serve(cx, svc, |core| {
        let (resource, decision) = (resource.as_str(), decision.as_str());
        let resource_ok = (1..=32).contains(&resource.len()) && resource.bytes().all(|b| b.is_ascii_graphic());
        if !resource_ok || !note_name_ok(decision) {
            return RErr(core.refuse(
                Violation::InvalidParameter,
                format!(
                    "trace_contention: resource `{}` must be 1 to 32 printable ASCII characters and decision `{}` \
                     1 to 32 characters of a-z, 0-9 and _",
                    resource.escape_debug(),
                    decision.escape_debug()
                ),
                Some(svc.name),
            ));
        }
        if !core.trace_on {
            return ROk(());
        }
        let device = core.instance_name(caller(cx)).to_string();
        core.trace(|| TraceEvent::Contention {
            device,
            resource: resource.to_string(),
            owner,
            contender,
            decision: decision.to_string(),
        });
        ROk(())
    })
}

pub(super) extern "C" fn create_semaphore(cx: &HostCx, tokens: i32) -> VmmResult<u32> {
    serve(cx, &svc::CREATE_SEMAPHORE, |core| core.create_semaphore(caller(cx), tokens).map(|h| h.raw()).into())
}

fn semaphore_op(
    cx: &HostCx,
    svc: &'static Service,
    handle: u32,
    op: impl FnOnce(&Core, SemaphoreHandle) -> Result<(), VmmError>,
) -> VmmResult<()> {
    serve(cx, svc, |core| {
        let h = SemaphoreHandle::from_raw(handle);
        if !core.sems.borrow().contains(h) {
            return stale(core, svc.name, Violation::InvalidSemaphore, handle, "semaphore handle");
        }
        op(core, h).into()
    })
}

pub(super) extern "C" fn destroy_semaphore(cx: &HostCx, handle: u32) -> VmmResult<()> {
    semaphore_op(cx, &svc::DESTROY_SEMAPHORE, handle, |core, h| core.destroy_semaphore(h))
}

pub(super) extern "C" fn wait_semaphore(cx: &HostCx, handle: u32, flags: u32) -> VmmResult<()> {
    semaphore_op(cx, &svc::WAIT_SEMAPHORE, handle, |core, h| {
        check_block_flags(core, "Wait_Semaphore", flags, true)?;
        core.wait_semaphore(h, flags)
    })
}

pub(super) extern "C" fn signal_semaphore(cx: &HostCx, handle: u32) -> VmmResult<()> {
    semaphore_op(cx, &svc::SIGNAL_SEMAPHORE, handle, |core, h| core.signal_semaphore(h))
}

// ---- interrupts ------------------------------------------------------------------------------------

extern "C" fn register_interrupt(cx: &HostCx, name: RStr<'_>, callback: RawCallback) -> VmmResult<u32> {
    let cb = Callback::plugin(caller(cx), callback);
    serve(cx, &svc::REGISTER_INTERRUPT, |core| core.register_interrupt(name.as_str(), cb).map(|h| h.raw()).into())
}

extern "C" fn request_interrupt(cx: &HostCx, irq: u32) -> VmmResult<()> {
    serve(cx, &svc::REQUEST_INTERRUPT, |core| match core.request_interrupt(IrqHandle::from_raw(irq)) {
        Ok(()) => ROk(()),
        Err(_) => stale(core, svc::REQUEST_INTERRUPT.name, Violation::InvalidIrq, irq, "interrupt handle"),
    })
}

// ---- nested execution ------------------------------------------------------------------------

fn nest_op<T>(cx: &HostCx, svc: &'static Service, op: impl FnOnce(&Core, VmId) -> Result<T, VmmError>) -> VmmResult<T> {
    serve(cx, svc, |core| op(core, core.cur_vm.get()).into())
}

pub(super) extern "C" fn begin_nest_exec(cx: &HostCx, v86: bool) -> VmmResult<()> {
    nest_op(cx, if v86 { &svc::BEGIN_NEST_V86_EXEC } else { &svc::BEGIN_NEST_EXEC }, |core, vm| {
        core.begin_nest(vm, v86)
    })
}

pub(super) extern "C" fn end_nest_exec(cx: &HostCx) -> VmmResult<()> {
    nest_op(cx, &svc::END_NEST_EXEC, |core, vm| core.end_nest(vm))
}

pub(super) extern "C" fn simulate_push(cx: &HostCx, value: u32) -> VmmResult<()> {
    nest_op(cx, &svc::SIMULATE_PUSH, |core, vm| core.simulate_push(vm, value))
}

pub(super) extern "C" fn simulate_pop(cx: &HostCx) -> VmmResult<u32> {
    nest_op(cx, &svc::SIMULATE_POP, |core, vm| core.simulate_pop(vm))
}

pub(super) extern "C" fn simulate_far_call(cx: &HostCx, segment: u16, offset: u32) -> VmmResult<()> {
    nest_op(cx, &svc::SIMULATE_FAR_CALL, |core, vm| core.simulate_far_call(vm, segment, offset))
}

pub(super) extern "C" fn simulate_int(cx: &HostCx, number: u8) -> VmmResult<()> {
    nest_op(cx, &svc::SIMULATE_INT, |core, vm| core.simulate_int(vm, number))
}

pub(super) extern "C" fn resume_exec(cx: &HostCx) -> VmmResult<()> {
    nest_op(cx, &svc::RESUME_EXEC, |core, vm| core.resume_exec(vm))
}

pub(super) extern "C" fn exec_int(cx: &HostCx, number: u8) -> VmmResult<()> {
    nest_op(cx, &svc::EXEC_INT, |core, vm| {
        core.simulate_int(vm, number)?;
        core.resume_exec(vm)
    })
}

extern "C" fn save_client_state(cx: &HostCx) -> VmmResult<ClientRegs> {
    nest_op(cx, &svc::SAVE_CLIENT_STATE, |core, vm| {
        core.vms.borrow().get(vm).map(|v| v.client()).ok_or(VmmError::INVALID_HANDLE)
    })
}

extern "C" fn restore_client_state(cx: &HostCx, state: &ClientRegs) -> VmmResult<()> {
    nest_op(cx, &svc::RESTORE_CLIENT_STATE, |core, vm| {
        core.vms.borrow().get(vm).map(|v| v.set_client(*state)).ok_or(VmmError::INVALID_HANDLE)
    })
}

extern "C" fn is_ring3_export(cx: &HostCx, address: u32) -> bool {
    serve(cx, &svc::IS_RING3_EXPORT, |core| {
        matches!(core.ring3.borrow().resolve(address), crate::ring3::Target::Export { .. })
    })
}

pub(super) extern "C" fn adjust_execution_time(cx: &HostCx, vm: u32, ms: i32) -> VmmResult<()> {
    let vm = VmId::from_raw(vm);
    serve(cx, &svc::ADJUST_EXECUTION_TIME, |core| {
        if !core.vm_valid(vm) {
            return RErr(bad_vm(core, svc::ADJUST_EXECUTION_TIME.name, vm));
        }
        core.adjust_execution_time(vm, ms);
        ROk(())
    })
}

// ---- interrupts inside VMs and call-backs ---------------------------------------------------

/// An interrupt number a vector-table service was given: above 0xFF is
/// an `INVALID_PARAMETER` violation.
pub(super) fn vector_number(core: &Core, service: &'static str, n: u32) -> Result<u8, VmmError> {
    u8::try_from(n).map_err(|_| {
        core.refuse(
            Violation::InvalidParameter,
            format!("{service} was given interrupt number {n:#X}; interrupt numbers are 0 to 0xFF"),
            Some(service),
        )
    })
}

extern "C" fn hook_v86_int_chain(cx: &HostCx, vector: u32, callback: RawCallback) -> VmmResult<u32> {
    let cb = Callback::plugin(caller(cx), callback);
    let svc = &svc::HOOK_V86_INT_CHAIN;
    serve(cx, svc, |core| {
        // Windows 3.1 lets devices hook V86 interrupts only during
        // initialization; Windows 95 at any time.
        if !install_allowed(core, svc) {
            return RErr(VmmError::VIOLATION);
        }
        core.hook_v86_int_chain(caller(cx), vector, cb).into()
    })
}

extern "C" fn unhook_v86_int_chain(cx: &HostCx, vector: u32, hook: u32) -> VmmResult<()> {
    let svc = &svc::UNHOOK_V86_INT_CHAIN;
    serve(cx, svc, |core| {
        if !win95_only(core, caller(cx), svc) {
            return RErr(VmmError::FATAL);
        }
        core.unhook_v86_int_chain(caller(cx), vector, hook).into()
    })
}

pub(super) extern "C" fn get_v86_int_vector(cx: &HostCx, vector: u32) -> VmmResult<u32> {
    nest_op(cx, &svc::GET_V86_INT_VECTOR, |core, vm| {
        let n = vector_number(core, svc::GET_V86_INT_VECTOR.name, vector)?;
        Ok(core.get_v86_int_vector(vm, n))
    })
}

pub(super) extern "C" fn set_v86_int_vector(cx: &HostCx, vector: u32, segment: u16, offset: u32) -> VmmResult<()> {
    nest_op(cx, &svc::SET_V86_INT_VECTOR, |core, vm| {
        let n = vector_number(core, svc::SET_V86_INT_VECTOR.name, vector)?;
        core.set_v86_int_vector(vm, n, ((segment as u32) << 16) | (offset & 0xFFFF));
        Ok(())
    })
}

pub(super) extern "C" fn get_pm_int_vector(cx: &HostCx, vector: u32) -> VmmResult<PmVector> {
    nest_op(cx, &svc::GET_PM_INT_VECTOR, |core, vm| {
        let n = vector_number(core, svc::GET_PM_INT_VECTOR.name, vector)?;
        let (selector, offset, default) = core.get_pm_int_vector(vm, n);
        Ok(PmVector { selector, offset, default })
    })
}

pub(super) extern "C" fn set_pm_int_vector(cx: &HostCx, vector: u32, selector: u16, offset: u32) -> VmmResult<()> {
    nest_op(cx, &svc::SET_PM_INT_VECTOR, |core, vm| {
        let n = vector_number(core, svc::SET_PM_INT_VECTOR.name, vector)?;
        core.set_pm_int_vector(vm, n, selector, offset);
        Ok(())
    })
}

pub(super) extern "C" fn simulate_iret(cx: &HostCx) -> VmmResult<()> {
    nest_op(cx, &svc::SIMULATE_IRET, |core, vm| core.simulate_iret(vm))
}

pub(super) extern "C" fn simulate_far_jmp(cx: &HostCx, segment: u16, offset: u32) -> VmmResult<()> {
    nest_op(cx, &svc::SIMULATE_FAR_JMP, |core, vm| core.simulate_far_jmp(vm, segment, offset))
}

pub(super) extern "C" fn simulate_far_ret_n(cx: &HostCx, bytes: u32) -> VmmResult<()> {
    let svc = if bytes == 0 { &svc::SIMULATE_FAR_RET } else { &svc::SIMULATE_FAR_RET_N };
    nest_op(cx, svc, |core, vm| core.simulate_far_ret_n(vm, bytes, svc.name))
}

pub(super) extern "C" fn build_int_stack_frame(cx: &HostCx, segment: u16, offset: u32) -> VmmResult<()> {
    nest_op(cx, &svc::BUILD_INT_STACK_FRAME, |core, vm| core.build_int_stack_frame(vm, segment, offset))
}

extern "C" fn allocate_call_back(cx: &HostCx, pm: bool, ref_data: u32, callback: RawCallback) -> VmmResult<u32> {
    let cb = Callback::plugin(caller(cx), callback);
    let svc = if pm { &svc::ALLOCATE_PM_CALL_BACK } else { &svc::ALLOCATE_V86_CALL_BACK };
    serve(cx, svc, |core| core.allocate_call_back(pm, caller(cx), ref_data, cb).into())
}

extern "C" fn call_when_vm_returns(
    cx: &HostCx,
    timeout_ms: i32,
    ref_data: u32,
    callback: RawCallback,
) -> VmmResult<()> {
    let cb = Callback::plugin(caller(cx), callback);
    nest_op(cx, &svc::CALL_WHEN_VM_RETURNS, |core, vm| {
        core.call_when_vm_returns(vm, caller(cx), timeout_ms, ref_data, cb)
    })
}

extern "C" fn hook_v86_fault(cx: &HostCx, vector: u32, callback: RawCallback) -> VmmResult<u32> {
    let cb = Callback::plugin(caller(cx), callback);
    serve(cx, &svc::HOOK_V86_FAULT, |core| core.hook_fault(FaultKind::V86, caller(cx), vector, cb).into())
}

extern "C" fn unhook_v86_fault(cx: &HostCx, vector: u32, hook: u32) -> VmmResult<()> {
    let svc = &svc::UNHOOK_V86_FAULT;
    serve(cx, svc, |core| {
        if !win95_only(core, caller(cx), svc) {
            return RErr(VmmError::FATAL);
        }
        core.unhook_fault(FaultKind::V86, caller(cx), vector, hook).into()
    })
}

fn fault_kind(mode: u32) -> Option<(FaultKind, &'static Service, &'static Service)> {
    use vmm_plugin_api::abi::{FAULT_MODE_PM, FAULT_MODE_V86, FAULT_MODE_VMM};
    match mode {
        FAULT_MODE_V86 => Some((FaultKind::V86, &svc::HOOK_V86_FAULT, &svc::UNHOOK_V86_FAULT)),
        FAULT_MODE_PM => Some((FaultKind::Pm, &svc::HOOK_PM_FAULT, &svc::UNHOOK_PM_FAULT)),
        FAULT_MODE_VMM => Some((FaultKind::Vmm, &svc::HOOK_VMM_FAULT, &svc::UNHOOK_VMM_FAULT)),
        _ => None,
    }
}

extern "C" fn hook_fault(cx: &HostCx, mode: u32, vector: u32, callback: RawCallback) -> VmmResult<u32> {
    let cb = Callback::plugin(caller(cx), callback);
    let Some((kind, hook, _)) = fault_kind(mode) else { return RErr(VmmError::INVALID_PARAMETER) };
    serve(cx, hook, |core| core.hook_fault(kind, caller(cx), vector, cb).into())
}

extern "C" fn unhook_fault(cx: &HostCx, mode: u32, vector: u32, hook: u32) -> VmmResult<()> {
    let Some((kind, _, svc)) = fault_kind(mode) else { return RErr(VmmError::INVALID_PARAMETER) };
    serve(cx, svc, |core| {
        if !win95_only(core, caller(cx), svc) {
            return RErr(VmmError::FATAL);
        }
        core.unhook_fault(kind, caller(cx), vector, hook).into()
    })
}

pub(super) extern "C" fn get_fault_hook_addrs(cx: &HostCx, vector: u32) -> VmmResult<FaultHookAddrs> {
    serve(cx, &svc::GET_FAULT_HOOK_ADDRS, |core| {
        core.get_fault_hook_addrs(vector).map(|[v86, pm, vmm]| FaultHookAddrs { v86, pm, vmm }).into()
    })
}

// ---- Call_When_Idle handles (virtual-hardware reference, section 7.4) ----------------------------

extern "C" fn call_when_idle_handle(cx: &HostCx, callback: RawCallback) -> VmmResult<u32> {
    let cb = Callback::plugin(caller(cx), callback);
    serve(cx, &svc::CALL_WHEN_IDLE, |core| ROk(core.add_idle_handler(caller(cx), cb)))
}

pub(super) extern "C" fn cancel_call_when_idle(cx: &HostCx, handle: u32) -> VmmResult<()> {
    let svc = &svc::CANCEL_CALL_WHEN_IDLE;
    serve(cx, svc, |core| {
        if !win95_only(core, caller(cx), svc) {
            return RErr(VmmError::FATAL);
        }
        core.cancel_idle_handler(caller(cx), handle).into()
    })
}

struct Table;

impl Table {
    staticref! {
        const SERVICES_VAL: WithMetadata<HostServices> = WithMetadata::new(HostServices {
            log,
            out_debug_string,
            fatal_error_handler,
            fatal_memory_error,
            report_violation,
            get_vmm_version,
            get_profile_string,
            get_next_profile_string,
            get_profile_decimal_int,
            get_profile_hex_int,
            get_profile_boolean,
            vxd_call,
            heap_allocate,
            heap_reallocate,
            heap_free,
            heap_get_size,
            mem_read,
            mem_write,
            vm: VM_SERVICES,
            ring3: crate::abi::ring3::RING3_SERVICES,
            shell: crate::abi::shell::SHELL_SERVICES,
            trace_note,
            trace_enabled,
            log_level,
            install_io_handler,
            remove_io_handler,
            set_global_trapping,
            set_local_trapping,
            simulate_io,
            simulate_vm_io,
            vpicd: crate::abi::vpicd::VPICD_SERVICES,
            call_restricted_event,
            cancel_restricted_event,
            cancel_call_when_not_critical,
            nuke_vm,
            crash_cur_vm,
            hook_device_service,
            unhook_device_service,
            hooked_call,
            call_previous_hook,
            trace_note_nulls,
            system_control,
            trace_contention,
            hook_v86_int_chain,
            unhook_v86_int_chain,
            get_v86_int_vector,
            set_v86_int_vector,
            get_pm_int_vector,
            set_pm_int_vector,
            simulate_iret,
            simulate_far_jmp,
            simulate_far_ret_n,
            build_int_stack_frame,
            allocate_call_back,
            call_when_vm_returns,
            hook_v86_fault,
            unhook_v86_fault,
            hook_fault,
            unhook_fault,
            get_fault_hook_addrs,
            call_when_idle_handle,
            cancel_call_when_idle,
            install_mult_io_handlers,
            remove_mult_io_handlers,
        })
    }

    staticref! {
        const VM_VAL: WithMetadata<VmServices> = WithMetadata::new(VmServices {
            get_cur_vm_handle,
            get_sys_vm_handle,
            test_cur_vm_handle,
            test_sys_vm_handle,
            validate_vm_handle,
            get_next_vm_handle,
            get_vmm_reenter_count,
            get_vm_info,
            client_regs,
            allocate_device_cb_area,
            cb_read,
            cb_write,
            get_system_time,
            get_vm_exec_time,
            set_global_time_out,
            set_vm_time_out,
            cancel_time_out,
            adjust_exec_priority,
            call_when_task_switched,
            call_when_idle,
            call_priority_vm_event,
            cancel_priority_vm_event,
            schedule_global_event,
            schedule_vm_event,
            call_global_event,
            call_vm_event,
            cancel_global_event,
            cancel_vm_event,
            call_when_vm_ints_enabled,
            call_when_not_critical,
            begin_critical_section,
            end_critical_section,
            claim_critical_section,
            release_critical_section,
            get_crit_section_status,
            get_crit_status_no_block,
            end_crit_and_suspend,
            create_semaphore,
            destroy_semaphore,
            wait_semaphore,
            signal_semaphore,
            register_interrupt,
            request_interrupt,
            suspend_vm,
            resume_vm,
            begin_nest_exec,
            end_nest_exec,
            simulate_push,
            simulate_pop,
            simulate_far_call,
            simulate_int,
            resume_exec,
            exec_int,
            save_client_state,
            restore_client_state,
            is_ring3_export,
            adjust_execution_time,
        })
    }
}

// ---- Windows 95 event additions, VM lifetime (virtual-hardware reference, section 7) -------------

/// A 4.0-only service called in any context: the machine is not fatal and
/// runs Windows 95 (else the fatal "Invalid VxD dynamic link call").
fn win95_entry(cx: &HostCx, svc: &'static Service) -> Result<(), VmmError> {
    let core = core(cx);
    if core.is_fatal() {
        return Err(VmmError::FATAL);
    }
    if win95_only(core, caller(cx), svc) { Ok(()) } else { Err(VmmError::FATAL) }
}

extern "C" fn call_restricted_event(
    cx: &HostCx,
    boost: i32,
    vm: u32,
    flags: u32,
    timeout_ms: u32,
    callback: RawCallback,
) -> VmmResult<u32> {
    let vm = VmId::from_raw(vm);
    let svc = &svc::CALL_RESTRICTED_EVENT;
    serve(cx, svc, |core| {
        let cb = Callback::plugin(caller(cx), callback);
        if !win95_only(core, caller(cx), svc) {
            return RErr(VmmError::FATAL);
        }
        if !vm.is_none() && !core.vm_valid(vm) {
            return RErr(bad_vm(core, svc.name, vm));
        }
        let thread_flags = flags & (PEF_THREAD_EVENT | PEF_WAIT_FOR_THREAD_STI);
        if thread_flags != 0 {
            return RErr(core.refuse(
                Violation::ReservedFlags,
                format!(
                    "{} flags {flags:#06X} ask for a thread event ({thread_flags:#06X}: PEF_Thread_Event / \
                     PEF_Wait_For_Thread_STI); this VMM has no thread handles (each VM is one thread of control \
                     and no service hands out a thread): schedule a VM event instead (EBX = the VM, \
                     PEF_Wait_For_STI for the STI wait)",
                    svc.name
                ),
                Some(svc.name),
            ));
        }
        if flags & !PEF_VALID != 0 {
            return RErr(core.refuse(
                Violation::ReservedFlags,
                format!(
                    "{} flags {flags:#06X} set bits {:#06X} that this VMM does not accept (thread events, \
                     PEF_Wait_Crit, PEF_Wait_Crit_VM and the later 0x4000-0x20000 bits)",
                    svc.name,
                    flags & !PEF_VALID
                ),
                Some(svc.name),
            ));
        }
        if !(0..RESERVED_HIGH_BOOST as i32).contains(&boost) {
            return RErr(core.refuse(
                Violation::InvalidParameter,
                format!("{} boost {boost:#X} (EAX) is negative or not below Reserved_High_Boost", svc.name),
                Some(svc.name),
            ));
        }
        core.restricted_event(caller(cx), boost, vm, flags, timeout_ms, cb).into()
    })
}

pub(super) extern "C" fn cancel_restricted_event(cx: &HostCx, handle: u32) -> VmmResult<()> {
    if let Err(e) = win95_entry(cx, &svc::CANCEL_RESTRICTED_EVENT) {
        return RErr(e);
    }
    cancel_kind(cx, &svc::CANCEL_RESTRICTED_EVENT, handle, EventKind::Restricted, None)
}

pub(super) extern "C" fn cancel_call_when_not_critical(cx: &HostCx) -> VmmResult<()> {
    let svc = &svc::CANCEL_CALL_WHEN_NOT_CRITICAL;
    serve(cx, svc, |core| {
        if !win95_only(core, caller(cx), svc) {
            return RErr(VmmError::FATAL);
        }
        // Windows 95 documents it as doing nothing: a Call_When_Not_Critical
        // registration is a restricted event nobody holds the handle of.
        ROk(())
    })
}

pub(super) extern "C" fn nuke_vm(cx: &HostCx, vm: u32) -> VmmResult<()> {
    let vm = VmId::from_raw(vm);
    let svc = &svc::NUKE_VM;
    serve(cx, svc, |core| {
        if !core.vm_valid(vm) {
            return RErr(bad_vm(core, svc.name, vm));
        }
        core.end_vm(vm, VNE_NUKED, svc.name, &core.instance_name(caller(cx)));
        if core.is_fatal() { RErr(VmmError::FATAL) } else { ROk(()) }
    })
}

pub(super) extern "C" fn crash_cur_vm(cx: &HostCx) -> VmmResult<()> {
    let svc = &svc::CRASH_CUR_VM;
    serve(cx, svc, |core| {
        core.end_vm(core.cur_vm.get(), VNE_CRASHED, svc.name, &core.instance_name(caller(cx)));
        if core.is_fatal() { RErr(VmmError::FATAL) } else { ROk(()) }
    })
}

// ---- Service hooks, control messages (virtual-hardware reference, section 6) ------------------------

/// `System_Control` (`device` 0: a broadcast in init order, stopping at a
/// failure) and `Directed_Sys_Control` (4.0; `device`: the target's ID).
pub(super) extern "C" fn system_control(cx: &HostCx, device: u16, args: &ControlArgs) -> VmmResult<()> {
    let svc = if device == 0 { &svc::SYSTEM_CONTROL } else { &svc::DIRECTED_SYS_CONTROL };
    serve(cx, svc, |core| {
        if device != 0 && !win95_only(core, caller(cx), svc) {
            return RErr(VmmError::FATAL);
        }
        if !Core::sendable(args.message) {
            return RErr(core.refuse(
                Violation::ControlNotSendable,
                format!(
                    "{} of {} ({:#X}): a device sends only Set_Device_Focus and private messages \
                     (0x70000000-0x7FFFFFFF)",
                    svc.name,
                    vmm_plugin_api::ddk::control_message_name(args.message),
                    args.message
                ),
                Some(svc.name),
            ));
        }
        if args.vm != 0 && !core.vm_valid(VmId::from_raw(args.vm)) {
            return RErr(bad_vm(core, svc.name, VmId::from_raw(args.vm)));
        }
        let target = if device == 0 {
            None
        } else {
            let found = core.registry.borrow().by_id(device).filter(|&i| core.registry.borrow().slots[i].initialized);
            match found {
                Some(i) => Some(i),
                None => return RErr(VmmError::NOT_FOUND),
            }
        };
        let failed = core.send_device_message(target, args);
        if core.is_fatal() {
            RErr(VmmError::FATAL)
        } else if failed {
            RErr(VmmError::FAILED)
        } else {
            ROk(())
        }
    })
}

// ---- Service hooks (virtual-hardware reference, section 6) --------------------------------------

extern "C" fn hook_device_service(cx: &HostCx, service: u32, hook_proc: bool, callback: RawCallback) -> VmmResult<u32> {
    let svc = &svc::HOOK_DEVICE_SERVICE;
    serve(cx, svc, |core| {
        let cb = Callback::plugin(caller(cx), callback);
        if !core.hookable(service) {
            // The DDK's carry: no such device or service.
            return RErr(VmmError::NOT_FOUND);
        }
        match core.service_hooks.hook(service, cb, hook_proc) {
            Some(h) => ROk(h),
            None => RErr(VmmError::OUT_OF_MEMORY),
        }
    })
}

extern "C" fn unhook_device_service(cx: &HostCx, service: u32, hook: u32) -> VmmResult<()> {
    let svc = &svc::UNHOOK_DEVICE_SERVICE;
    serve(cx, svc, |core| {
        if !win95_only(core, caller(cx), svc) {
            return RErr(VmmError::FATAL);
        }
        match core.service_hooks.unhook(service, hook) {
            Ok(cb) => {
                let now = core.service_hooks.retire(cb);
                drop(now);
                ROk(())
            }
            Err(crate::vmm::service_hooks::UnhookError::NotFound) => RErr(VmmError::NOT_FOUND),
            Err(crate::vmm::service_hooks::UnhookError::OldStyleAbove) => RErr(VmmError::FAILED),
        }
    })
}

extern "C" fn hooked_call(cx: &HostCx) -> VmmResult<*mut ServiceCall> {
    serve(cx, &svc::HOOKED_CALL, |core| match core.service_hooks.current() {
        Some((call, _)) => ROk(call),
        None => RErr(VmmError::NOT_AVAILABLE),
    })
}

extern "C" fn call_previous_hook(cx: &HostCx, service: u32, hook: u32, call: &mut ServiceCall) -> VmmResult<()> {
    serve(cx, &svc::CALL_PREVIOUS_HOOK, |core| {
        // The service itself is called for whoever called it first.
        let original = core.service_hooks.current().map_or(caller(cx), |(_, c)| c);
        core.run_hooks(original, service, Some(hook), call).into()
    })
}

/// The VMM services.
const VM_SERVICES: VmServices_Ref = VmServices_Ref(Table::VM_VAL.as_prefix());

/// The services every plugin call receives.
pub(crate) const SERVICES: HostServices_Ref = HostServices_Ref(Table::SERVICES_VAL.as_prefix());
