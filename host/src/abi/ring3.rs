//! The ring-3 services table: what Windows code and DOS programs call.
//! Every shim checks the ISR rule first: ring-3 code entered from event
//! time may call only `PostMessage` and `PostAppMessage`.

use abi_stable::prefix_type::WithMetadata;
use abi_stable::staticref;
use abi_stable::std_types::{RErr, RNone, ROk, ROption, RSlice, RSliceMut, RSome, RStr};
use vmm_plugin_api::abi::{HostCx, Msg, Ring3Services, Ring3Services_Ref, VmmError, VmmResult};

use crate::abi::{caller, guarded};
use crate::machine::Core;
use crate::trace::TraceEvent;

/// Run a ring-3 service body after the ISR-rule check; a refused call
/// returns `refused()`.
fn r3<T>(cx: &HostCx, function: &'static str, refused: impl Fn() -> T, body: impl FnOnce(&Core) -> T) -> T {
    guarded(cx, function, refused(), |core| if core.isr_service_allowed(function) { body(core) } else { refused() })
}

extern "C" fn r3_int(cx: &HostCx, number: u8) -> VmmResult<()> {
    r3(cx, "INT", || RErr(VmmError::VIOLATION), |core| core.ring3_code_int(number).into())
}

extern "C" fn r3_call(cx: &HostCx, target: u32, args: RSlice<'_, u8>) -> VmmResult<u32> {
    r3(cx, "far call", || RErr(VmmError::VIOLATION), |core| core.ring3_code_far_call(target, args.as_slice()).into())
}

extern "C" fn r3_set_interrupts(cx: &HostCx, enabled: bool) {
    r3(
        cx,
        if enabled { "STI" } else { "CLI" },
        || (),
        |core| {
            let vm = core.cur_vm.get();
            core.trace(|| TraceEvent::IfFlag { vm: vm.raw(), enabled });
            core.set_vm_interrupts(vm, enabled);
        },
    )
}

extern "C" fn r3_print(cx: &HostCx, text: RStr<'_>) {
    r3(
        cx,
        "print",
        || (),
        |core| {
            let vm = core.cur_vm.get();
            let module = core.instance_name(caller(cx));
            tracing::info!("{module}: {}", text.as_str());
            core.trace(|| TraceEvent::ProgramOutput {
                vm: vm.raw(),
                module: module.to_string(),
                text: text.as_str().to_string(),
            });
        },
    )
}

extern "C" fn r3_export_address(cx: &HostCx, ordinal: u16) -> u32 {
    guarded(cx, "export address", 0, |core| core.ring3.borrow().export_address_of(caller(cx), ordinal).unwrap_or(0))
}

extern "C" fn r3_post_message(cx: &HostCx, hwnd: u16, msg: u16, wparam: u16, lparam: u32) -> bool {
    r3(cx, "PostMessage", || false, |core| core.post_message(hwnd, msg, wparam, lparam))
}

extern "C" fn r3_post_app_message(cx: &HostCx, task: u16, msg: u16, wparam: u16, lparam: u32) -> bool {
    r3(cx, "PostAppMessage", || false, |core| core.post_app_message(task, msg, wparam, lparam))
}

extern "C" fn r3_send_message(cx: &HostCx, hwnd: u16, msg: u16, wparam: u16, lparam: u32) -> u32 {
    r3(cx, "SendMessage", || 0, |core| core.send_message(hwnd, msg, wparam, lparam))
}

extern "C" fn r3_peek_message(cx: &HostCx, hwnd: u16, min: u16, max: u16, remove: bool) -> ROption<Msg> {
    r3(
        cx,
        "PeekMessage",
        || RNone,
        |core| match core.peek_message(hwnd, min, max, remove) {
            Some(m) => RSome(m),
            None => RNone,
        },
    )
}

extern "C" fn r3_dispatch_message(cx: &HostCx, msg: &Msg) -> u32 {
    r3(cx, "DispatchMessage", || 0, |core| core.dispatch_message(msg))
}

extern "C" fn r3_create_window(cx: &HostCx, class: RStr<'_>, title: RStr<'_>, wndproc: u32, parent: u16) -> u16 {
    r3(cx, "CreateWindow", || 0, |core| core.create_window(class.as_str(), title.as_str(), wndproc, parent))
}

extern "C" fn r3_destroy_window(cx: &HostCx, hwnd: u16) -> bool {
    r3(cx, "DestroyWindow", || false, |core| core.destroy_window(hwnd))
}

extern "C" fn r3_set_message_queue(cx: &HostCx, size: u32) -> bool {
    r3(cx, "SetMessageQueue", || false, |core| core.set_message_queue(size))
}

extern "C" fn r3_post_quit_message(cx: &HostCx, code: u16) {
    r3(cx, "PostQuitMessage", || (), |core| core.post_quit_message(code))
}

extern "C" fn r3_message_box(cx: &HostCx, _hwnd: u16, text: RStr<'_>, caption: RStr<'_>, flags: u32) -> u32 {
    r3(cx, "MessageBox", || 0, |core| core.message_box(text.as_str(), caption.as_str(), flags))
}

extern "C" fn r3_get_current_task(cx: &HostCx) -> u16 {
    r3(cx, "GetCurrentTask", || 0, |core| core.current_task.get())
}

extern "C" fn r3_load_library(cx: &HostCx, name: RStr<'_>) -> u32 {
    r3(cx, "LoadLibrary", || 0, |core| core.load_library(name.as_str()))
}

extern "C" fn r3_get_proc_address(cx: &HostCx, module: u16, name: RStr<'_>, ordinal: u16) -> u32 {
    r3(cx, "GetProcAddress", || 0, |core| core.get_proc_address(module, name.as_str(), ordinal))
}

extern "C" fn r3_free_library(cx: &HostCx, module: u16) -> bool {
    r3(cx, "FreeLibrary", || false, |core| core.free_library(module))
}

extern "C" fn r3_read_far(cx: &HostCx, address: u32, mut out: RSliceMut<'_, u8>) -> VmmResult<u32> {
    // A memory access, not an API call: the ISR rule does not apply.
    guarded(cx, "read far pointer", RErr(VmmError::FATAL), |core| {
        core.read_far("read far pointer", address, out.as_mut_slice()).map(|n| n as u32).into()
    })
}

extern "C" fn r3_global_alloc(cx: &HostCx, bytes: u32) -> VmmResult<u32> {
    r3(cx, "GlobalAlloc", || RErr(VmmError::FATAL), |core| core.global_alloc(caller(cx), bytes).into())
}

extern "C" fn r3_global_free(cx: &HostCx, address: u32) -> VmmResult<()> {
    r3(cx, "GlobalFree", || RErr(VmmError::FATAL), |core| core.global_free(address).into())
}

extern "C" fn r3_write_far(cx: &HostCx, address: u32, data: RSlice<'_, u8>) -> VmmResult<()> {
    // A memory access, not an API call: the ISR rule does not apply.
    guarded(cx, "write far pointer", RErr(VmmError::FATAL), |core| {
        core.write_far("write far pointer", address, data.as_slice()).into()
    })
}

extern "C" fn r3_port_io(cx: &HostCx, io_type: u32, port: u16, data: u32) -> VmmResult<u32> {
    // An instruction, not an API call: the ISR rule does not apply.
    guarded(cx, "port I/O", RErr(VmmError::FATAL), |core| {
        if io_type & !0x1C != 0 || io_type & 0x18 == 0x18 {
            return RErr(VmmError::INVALID_PARAMETER);
        }
        ROk(core.port_io(core.cur_vm.get(), port, io_type, data))
    })
}

extern "C" fn r3_set_int_vector(cx: &HostCx, vector: u8, handler: u32) -> VmmResult<u32> {
    r3(
        cx,
        "set interrupt vector",
        || RErr(VmmError::VIOLATION),
        |core| core.set_ring3_int_vector(vector, handler).into(),
    )
}

extern "C" fn r3_get_int_vector(cx: &HostCx, vector: u8) -> VmmResult<u32> {
    r3(cx, "get interrupt vector", || RErr(VmmError::VIOLATION), |core| ROk(core.get_ring3_int_vector(vector)))
}

extern "C" fn r3_fault(cx: &HostCx, vector: u8) -> VmmResult<()> {
    // An instruction, not an API call: the ISR rule does not apply.
    guarded(cx, "fault", RErr(VmmError::FATAL), |core| core.ring3_fault(caller(cx), vector).into())
}

extern "C" fn r3_string_io(cx: &HostCx, io_type: u32, port: u16, mut data: RSliceMut<'_, u8>) -> VmmResult<()> {
    // An instruction, not an API call: the ISR rule does not apply.
    guarded(cx, "port I/O", RErr(VmmError::FATAL), |core| {
        use crate::vmm::io::{REP_IO, STRING_IO};
        if io_type & !(0x1C | STRING_IO | REP_IO) != 0 || io_type & 0x18 == 0x18 || io_type & STRING_IO == 0 {
            return RErr(VmmError::INVALID_PARAMETER);
        }
        core.ring3_string_io(caller(cx), io_type, port, data.as_mut_slice()).into()
    })
}

struct Table;

impl Table {
    staticref! {
        const VAL: WithMetadata<Ring3Services> = WithMetadata::new(Ring3Services {
            r3_int,
            r3_call,
            r3_set_interrupts,
            r3_print,
            r3_export_address,
            r3_post_message,
            r3_post_app_message,
            r3_send_message,
            r3_peek_message,
            r3_dispatch_message,
            r3_create_window,
            r3_destroy_window,
            r3_set_message_queue,
            r3_post_quit_message,
            r3_message_box,
            r3_get_current_task,
            r3_load_library,
            r3_get_proc_address,
            r3_free_library,
            r3_read_far,
            r3_global_alloc,
            r3_global_free,
            r3_write_far,
            r3_port_io,
            r3_set_int_vector,
            r3_fault,
            r3_get_int_vector,
            r3_string_io,
        })
    }
}

/// The ring-3 services.
pub(crate) const RING3_SERVICES: Ring3Services_Ref = Ring3Services_Ref(Table::VAL.as_prefix());
