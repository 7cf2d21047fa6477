//! Writing ring-3 code: Windows DLLs, Windows applications and DOS
//! programs, run by the host inside the VMs.
//!
//! A ring-3 module is a plugin like a VxD: implement [`Module`] and export
//! it with [`declare_module!`](crate::declare_module). It declares its
//! segments (FIXED, MOVEABLE, DISCARDABLE) and its exported procedures (by
//! name and ordinal); a procedure is addressed by a [`FarPtr`] the host
//! resolves, which is how a VxD calls a DLL's callback with
//! `Simulate_Far_Call`.
//!
//! Programs are cooperative: [`Module::start`] and [`Module::resume`] each run
//! one step and return a [`Step`] saying what the program waits for next:
//! a message (`GetMessage`), a sleep, a turn of the others, or its exit.
//! The default `resume` is the standard message loop.

use core::ffi::c_void;
use std::sync::OnceLock;

use abi_stable::prefix_type::{PrefixTypeTrait, WithMetadata};
use abi_stable::staticref;
use abi_stable::std_types::{RNone, RSlice, RSliceMut, RSome, RStr};

use crate::abi::{
    ApiMode, Carry, ClientRegs, ControlArgs, ExportDescriptor, HostCx, InstanceVtable, InstanceVtable_Ref,
    ModuleDescriptor, PluginErrorKind, PluginInfo, PluginResult, PluginRoot, PluginRoot_Ref, RawInstance,
    RealModeInitResult, Resume, SegmentDescriptor, ServiceCall, VmmError,
};
pub use crate::abi::{ModuleKind, Msg, ResumeKind, SegmentKind, Step, StepKind};
use crate::client::Client;
use crate::ddk::WM_QUIT;
use crate::guard::{InstanceBox, entry, entry_in, error};
use crate::handles::{FarPtr, HInstance, HTask, Hwnd, VmHandle};

/// One segment of a module.
#[derive(Copy, Clone, Debug)]
pub struct Segment {
    /// Name, such as `_TEXT` or `CALLBACK_TEXT`.
    pub name: &'static str,
    /// FIXED, MOVEABLE or DISCARDABLE.
    pub kind: SegmentKind,
}

impl Segment {
    /// A FIXED segment.
    pub const fn fixed(name: &'static str) -> Self {
        Segment { name, kind: SegmentKind::Fixed }
    }
    /// A MOVEABLE segment.
    pub const fn moveable(name: &'static str) -> Self {
        Segment { name, kind: SegmentKind::Moveable }
    }
    /// A DISCARDABLE segment.
    pub const fn discardable(name: &'static str) -> Self {
        Segment { name, kind: SegmentKind::Discardable }
    }
}

/// One exported procedure.
#[derive(Copy, Clone, Debug)]
pub struct Export {
    /// Name for `GetProcAddress`.
    pub name: &'static str,
    /// Ordinal (non-zero).
    pub ordinal: u16,
    /// Index of its segment.
    pub segment: u16,
    /// Bytes of PASCAL arguments it pops (`RETF n`).
    pub arg_bytes: u16,
}

impl Export {
    /// An export in segment `segment` taking `arg_bytes` of arguments.
    pub const fn new(name: &'static str, ordinal: u16, segment: u16, arg_bytes: u16) -> Self {
        Export { name, ordinal, segment, arg_bytes }
    }
}

/// A module's declaration (its `.DEF` file).
#[derive(Copy, Clone, Debug)]
pub struct ModuleDef {
    /// Module name (`POSTHOST`).
    pub name: &'static str,
    /// DLL, application or DOS program.
    pub kind: ModuleKind,
    /// Segments by index.
    pub segments: &'static [Segment],
    /// Exported procedures.
    pub exports: &'static [Export],
}

impl ModuleDef {
    /// A Windows DLL.
    pub const fn windows_dll(name: &'static str) -> Self {
        ModuleDef { name, kind: ModuleKind::WinDll, segments: &[], exports: &[] }
    }
    /// A Windows application.
    pub const fn windows_app(name: &'static str) -> Self {
        ModuleDef { name, kind: ModuleKind::WinApp, segments: &[], exports: &[] }
    }
    /// A DOS program.
    pub const fn dos_program(name: &'static str) -> Self {
        ModuleDef { name, kind: ModuleKind::DosProgram, segments: &[], exports: &[] }
    }
    /// Declare the segments.
    pub const fn segments(mut self, segments: &'static [Segment]) -> Self {
        self.segments = segments;
        self
    }
    /// Declare the exports.
    pub const fn exports(mut self, exports: &'static [Export]) -> Self {
        self.exports = exports;
        self
    }
}

/// Why a program is resumed, typed.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Wake {
    /// `GetMessage` returned this message.
    Message(Msg),
    /// The sleep ended.
    Slept,
    /// The program yielded and has its turn again.
    Yielded,
}

impl From<&Resume> for Wake {
    fn from(r: &Resume) -> Self {
        match r.kind {
            ResumeKind::Message => Wake::Message(r.msg),
            ResumeKind::Woke => Wake::Slept,
            ResumeKind::Yielded => Wake::Yielded,
        }
    }
}

impl Step {
    /// Block in `GetMessage`.
    pub const fn get_message() -> Self {
        Step { kind: StepKind::GetMessage, value: 0 }
    }
    /// Release the time slice for `ms` milliseconds.
    pub const fn sleep(ms: u32) -> Self {
        Step { kind: StepKind::Sleep, value: ms }
    }
    /// Let the others run, then continue.
    pub const fn yield_now() -> Self {
        Step { kind: StepKind::Yield, value: 0 }
    }
    /// End the program.
    pub const fn exit(code: u32) -> Self {
        Step { kind: StepKind::Exit, value: code }
    }
}

/// The PASCAL argument bytes of an exported procedure call, as they lie on
/// the stack: the *last* parameter at the lowest address (PASCAL pushes
/// left to right).
#[derive(Copy, Clone, Debug)]
pub struct PascalArgs<'a> {
    bytes: &'a [u8],
}

impl<'a> PascalArgs<'a> {
    /// Wrap stack bytes.
    pub fn new(bytes: &'a [u8]) -> Self {
        PascalArgs { bytes }
    }

    /// The raw bytes.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// Decode the parameters, given their sizes (2 or 4 bytes) in
    /// declaration order; returns them in declaration order. Missing bytes
    /// read as zero.
    pub fn params<const N: usize>(&self, sizes: [usize; N]) -> [u32; N] {
        let mut out = [0u32; N];
        // The first declared parameter is deepest: walk from the end.
        let mut end = sizes.iter().sum::<usize>();
        for (i, &size) in sizes.iter().enumerate() {
            let start = end - size;
            out[i] = match (size, self.bytes.get(start..end)) {
                (2, Some(&[a, b])) => u16::from_le_bytes([a, b]) as u32,
                (4, Some(&[a, b, c, d])) => u32::from_le_bytes([a, b, c, d]),
                _ => (0..size).fold(0u32, |v, k| v | (*self.bytes.get(start + k).unwrap_or(&0) as u32) << (8 * k)),
            };
            end = start;
        }
        out
    }

    /// Encode parameters `(size, value)` in declaration order into stack
    /// bytes (for calling another module's export).
    pub fn encode(params: &[(usize, u32)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (size, value) in params.iter().rev() {
            out.extend_from_slice(&value.to_le_bytes()[..*size]);
        }
        out
    }
}

/// The services ring-3 code calls: a subset of Windows' USER and KERNEL for
/// Windows modules, INT 2Fh and far calls for everyone.
#[derive(Copy, Clone)]
pub struct Ring3<'a> {
    cx: &'a HostCx,
}

impl core::fmt::Debug for Ring3<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Ring3").finish_non_exhaustive()
    }
}

impl<'a> Ring3<'a> {
    /// Wrap a host context.
    pub fn new(cx: &'a HostCx) -> Self {
        Ring3 { cx }
    }

    fn svc(&self) -> crate::abi::HostServices_Ref {
        self.cx.services
    }

    /// The VM this code runs in.
    pub fn vm(&self) -> VmHandle {
        VmHandle((self.svc().vm().get_cur_vm_handle())(self.cx))
    }

    /// The VM's client registers: set them before [`Ring3::int`] or
    /// [`Ring3::call`], read results after.
    pub fn regs(&self) -> Client<'a> {
        let vm = self.vm();
        let ptr = (self.svc().vm().client_regs())(self.cx, vm.0).into_result().unwrap_or(core::ptr::null_mut());
        // SAFETY: the host returns the current VM's live block (or null,
        // which `from_raw` rejects); it outlives this call.
        match unsafe { Client::from_raw(ptr) } {
            Some(c) => c,
            None => crate::guard::fatal_exit(),
        }
    }

    /// Milliseconds since Windows started.
    pub fn get_system_time(&self) -> u32 {
        (self.svc().vm().get_system_time())(self.cx)
    }

    /// Execute `INT n` with the VM's client registers (INT 2Fh is the
    /// Windows multiplex interrupt: 1600h version, 1680h release time slice,
    /// 1681h/1682h critical section, 1683h VM ID, 1684h device API entry,
    /// 1685h switch VMs and call back).
    pub fn int(&self, n: u8) -> Result<(), VmmError> {
        crate::vmm::res((self.svc().ring3().r3_int())(self.cx, n))
    }

    /// Far-call `target` with PASCAL `args` (bytes from
    /// [`PascalArgs::encode`]) and the current client registers; the result
    /// is DX:AX. A VxD's API entry takes its input in registers (`args`
    /// empty) and reports errors in the carry flag of [`Ring3::regs`].
    pub fn call(&self, target: FarPtr, args: &[u8]) -> Result<u32, VmmError> {
        crate::vmm::res((self.svc().ring3().r3_call())(self.cx, target.to_u32(), RSlice::from_slice(args)))
    }

    /// `CLI`: disable the VM's interrupts.
    pub fn cli(&self) {
        (self.svc().ring3().r3_set_interrupts())(self.cx, false)
    }

    /// `STI`: enable the VM's interrupts.
    pub fn sti(&self) {
        (self.svc().ring3().r3_set_interrupts())(self.cx, true)
    }

    /// Print a line on the program's console (traced as `program_output`).
    pub fn print(&self, text: &str) {
        (self.svc().ring3().r3_print())(self.cx, RStr::from_str(text))
    }

    /// The far pointer of this module's own export `ordinal` (for
    /// registering a callback).
    pub fn export_address(&self, ordinal: u16) -> Option<FarPtr> {
        let v = (self.svc().ring3().r3_export_address())(self.cx, ordinal);
        (v != 0).then(|| FarPtr::from_u32(v))
    }

    // ---- USER -------------------------------------------------------------------

    /// `PostMessage`: queue a message and return at once. `false` when the
    /// target's queue is full (the message is dropped) or for
    /// `HWND_BROADCAST`; an invalid window does *not* make it fail.
    pub fn post_message(&self, hwnd: Hwnd, msg: u16, wparam: u16, lparam: u32) -> bool {
        (self.svc().ring3().r3_post_message())(self.cx, hwnd.0, msg, wparam, lparam)
    }

    /// `PostAppMessage`: queue a message for a task; `GetMessage` returns it
    /// with `hwnd` 0.
    pub fn post_app_message(&self, task: HTask, msg: u16, wparam: u16, lparam: u32) -> bool {
        (self.svc().ring3().r3_post_app_message())(self.cx, task.0, msg, wparam, lparam)
    }

    /// `SendMessage`: call the window procedure now; its result.
    pub fn send_message(&self, hwnd: Hwnd, msg: u16, wparam: u16, lparam: u32) -> u32 {
        (self.svc().ring3().r3_send_message())(self.cx, hwnd.0, msg, wparam, lparam)
    }

    /// `PeekMessage`: the next message for `hwnd` (0: any) in `min..=max`
    /// (0, 0: any), removed if `remove`.
    pub fn peek_message(&self, hwnd: Hwnd, min: u16, max: u16, remove: bool) -> Option<Msg> {
        (self.svc().ring3().r3_peek_message())(self.cx, hwnd.0, min, max, remove).into_option()
    }

    /// `DispatchMessage`: call the window procedure of `msg.hwnd`.
    pub fn dispatch_message(&self, msg: &Msg) -> u32 {
        (self.svc().ring3().r3_dispatch_message())(self.cx, msg)
    }

    /// `DefWindowProc`: the default handling (`WM_CLOSE` destroys the
    /// window; everything else returns 0).
    pub fn def_window_proc(&self, hwnd: Hwnd, msg: u16, wparam: u16, lparam: u32) -> u32 {
        let _ = (wparam, lparam);
        if msg == crate::ddk::WM_CLOSE {
            self.destroy_window(hwnd);
        }
        0
    }

    /// `CreateWindow`: a top-level window (or a child of `parent`) whose
    /// window procedure is this module's export `wndproc_ordinal`.
    pub fn create_window(&self, class: &str, title: &str, wndproc_ordinal: u16, parent: Option<Hwnd>) -> Option<Hwnd> {
        let proc_ptr = self.export_address(wndproc_ordinal)?;
        let h = (self.svc().ring3().r3_create_window())(
            self.cx,
            RStr::from_str(class),
            RStr::from_str(title),
            proc_ptr.to_u32(),
            parent.map_or(0, |p| p.0),
        );
        (h != 0).then_some(Hwnd(h))
    }

    /// `DestroyWindow`.
    pub fn destroy_window(&self, hwnd: Hwnd) -> bool {
        (self.svc().ring3().r3_destroy_window())(self.cx, hwnd.0)
    }

    /// `SetMessageQueue`: replace the task's queue (its messages are lost)
    /// with one of `size` messages. On failure the task has no queue.
    pub fn set_message_queue(&self, size: u32) -> bool {
        (self.svc().ring3().r3_set_message_queue())(self.cx, size)
    }

    /// `PostQuitMessage`: `GetMessage` will return `WM_QUIT`.
    pub fn post_quit_message(&self, code: u16) {
        (self.svc().ring3().r3_post_quit_message())(self.cx, code)
    }

    /// `MessageBox`: recorded in the trace and printed; the answer is the
    /// run's configured one (`IDOK` ...).
    pub fn message_box(&self, hwnd: Option<Hwnd>, text: &str, caption: &str, flags: u32) -> u32 {
        (self.svc().ring3().r3_message_box())(
            self.cx,
            hwnd.map_or(0, |h| h.0),
            RStr::from_str(text),
            RStr::from_str(caption),
            flags,
        )
    }

    /// `GetCurrentTask`.
    pub fn get_current_task(&self) -> HTask {
        HTask((self.svc().ring3().r3_get_current_task())(self.cx))
    }

    // ---- KERNEL -----------------------------------------------------------------

    /// `LoadLibrary`: the module handle, or the error (0-31).
    pub fn load_library(&self, name: &str) -> Result<HInstance, u32> {
        let v = (self.svc().ring3().r3_load_library())(self.cx, RStr::from_str(name));
        if v < 32 { Err(v) } else { Ok(HInstance(v as u16)) }
    }

    /// `GetProcAddress` by name.
    pub fn get_proc_address(&self, module: HInstance, name: &str) -> Option<FarPtr> {
        let v = (self.svc().ring3().r3_get_proc_address())(self.cx, module.0, RStr::from_str(name), 0);
        (v != 0).then(|| FarPtr::from_u32(v))
    }

    /// `GetProcAddress` by ordinal.
    pub fn get_proc_address_ordinal(&self, module: HInstance, ordinal: u16) -> Option<FarPtr> {
        let v = (self.svc().ring3().r3_get_proc_address())(self.cx, module.0, RStr::from_str(""), ordinal);
        (v != 0).then(|| FarPtr::from_u32(v))
    }

    /// `FreeLibrary` (reference-counted).
    pub fn free_library(&self, module: HInstance) -> bool {
        (self.svc().ring3().r3_free_library())(self.cx, module.0)
    }

    // ---- memory -----------------------------------------------------------------

    /// Read the data a 16:16 pointer points at (such as a block a VxD
    /// allocated with `_SHELL_LocalAllocEx` and passed to a DLL): up to
    /// `out.len()` bytes, stopping at the end of the segment; how many were
    /// read.
    pub fn read_far(&self, ptr: FarPtr, out: &mut [u8]) -> Result<usize, VmmError> {
        let r = (self.svc().ring3().r3_read_far())(self.cx, ptr.to_u32(), RSliceMut::from_mut_slice(out));
        crate::vmm::res(r).map(|n| n as usize)
    }

    /// `GlobalAlloc` + `GlobalLock` (a DOS program's INT 21h AH=48h): a
    /// zeroed block of 1 to 65536 bytes the program can hand to a VxD's API
    /// as a 16:16 pointer. Freed with [`Ring3::global_free`], or when the
    /// program ends.
    pub fn global_alloc(&self, bytes: u32) -> Result<FarPtr, VmmError> {
        let f = crate::vmm::appended(self.svc().ring3().r3_global_alloc())?;
        crate::vmm::res(f(self.cx, bytes)).map(FarPtr::from_u32)
    }

    /// `GlobalFree` a block from [`Ring3::global_alloc`].
    pub fn global_free(&self, ptr: FarPtr) -> Result<(), VmmError> {
        let f = crate::vmm::appended(self.svc().ring3().r3_global_free())?;
        crate::vmm::res(f(self.cx, ptr.to_u32()))
    }

    /// Copy `data` into an allocated block through a 16:16 pointer.
    pub fn write_far(&self, ptr: FarPtr, data: &[u8]) -> Result<(), VmmError> {
        let f = crate::vmm::appended(self.svc().ring3().r3_write_far())?;
        crate::vmm::res(f(self.cx, ptr.to_u32(), RSlice::from_slice(data)))
    }

    fn port_io(&self, io_type: u32, port: u16, data: u32) -> Result<u32, VmmError> {
        let f = crate::vmm::appended(self.svc().ring3().r3_port_io())?;
        crate::vmm::res(f(self.cx, io_type, port, data))
    }

    /// `IN AL, DX`: through the I/O port table (a device that traps the
    /// port answers; a port nobody traps reads 0xFF).
    pub fn in_byte(&self, port: u16) -> Result<u8, VmmError> {
        self.port_io(crate::ddk::BYTE_INPUT, port, 0).map(|v| v as u8)
    }

    /// `IN AX, DX`.
    pub fn in_word(&self, port: u16) -> Result<u16, VmmError> {
        self.port_io(crate::ddk::WORD_INPUT, port, 0).map(|v| v as u16)
    }

    /// `IN EAX, DX`.
    pub fn in_dword(&self, port: u16) -> Result<u32, VmmError> {
        self.port_io(crate::ddk::DWORD_INPUT, port, 0)
    }

    /// `OUT DX, AL`: through the I/O port table (a port nobody traps
    /// drops the write).
    pub fn out_byte(&self, port: u16, value: u8) -> Result<(), VmmError> {
        self.port_io(crate::ddk::BYTE_OUTPUT, port, value.into()).map(drop)
    }

    /// `OUT DX, AX`.
    pub fn out_word(&self, port: u16, value: u16) -> Result<(), VmmError> {
        self.port_io(crate::ddk::WORD_OUTPUT, port, value.into()).map(drop)
    }

    /// `OUT DX, EAX`.
    pub fn out_dword(&self, port: u16, value: u32) -> Result<(), VmmError> {
        self.port_io(crate::ddk::DWORD_OUTPUT, port, value).map(drop)
    }

    /// `INS`/`OUTS` as one access: through `r3_string_io`, or element by
    /// element on a host older than this SDK.
    fn string_io(&self, io_type: u32, port: u16, data: &mut [u8]) -> Result<(), VmmError> {
        let f = crate::vmm::appended(self.svc().ring3().r3_string_io())?;
        crate::vmm::res(f(self.cx, io_type | crate::ddk::STRING_IO, port, RSliceMut::from_mut_slice(data)))
    }

    /// `REP INS` of `buf.len()` elements from `port` into `buf`, as one
    /// access: a trapping device's handler is called once with
    /// `STRING_IO | REP_IO` (the client's ES:DI at the buffer, CX the
    /// count) and usually performs the elements with `Simulate_IO`; on a
    /// port nobody traps each element reaches the hardware. On a host
    /// older than this SDK, one `IN` per element.
    fn rep_ins<T: PortElement>(&self, port: u16, buf: &mut [T]) -> Result<(), VmmError> {
        let mut bytes: Vec<u8> = buf.iter().flat_map(|v| v.to_le()).collect();
        match self.string_io(T::INPUT | crate::ddk::REP_IO, port, &mut bytes) {
            Err(VmmError::NOT_AVAILABLE) => {
                for v in buf {
                    *v = T::from_port(self.port_io(T::INPUT, port, 0)?);
                }
                Ok(())
            }
            Err(e) => Err(e),
            Ok(()) => {
                for (v, b) in buf.iter_mut().zip(bytes.chunks_exact(T::SIZE)) {
                    *v = T::from_le(b);
                }
                Ok(())
            }
        }
    }

    /// `REP OUTS` of `data` to `port` as one access (the client's DS:SI at
    /// a copy of it, CX the count), as [`Ring3::rep_insb`].
    fn rep_outs<T: PortElement>(&self, port: u16, data: &[T]) -> Result<(), VmmError> {
        let mut bytes: Vec<u8> = data.iter().flat_map(|v| v.to_le()).collect();
        match self.string_io(T::OUTPUT | crate::ddk::REP_IO, port, &mut bytes) {
            Err(VmmError::NOT_AVAILABLE) => {
                data.iter().try_for_each(|v| self.port_io(T::OUTPUT, port, v.to_port()).map(drop))
            }
            r => r,
        }
    }

    /// `INS` without `REP`: one element, as a string access (`STRING_IO`
    /// without `REP_IO`).
    fn ins<T: PortElement>(&self, port: u16) -> Result<T, VmmError> {
        let mut b = [0u8; 4];
        self.string_io(T::INPUT, port, &mut b[..T::SIZE])?;
        Ok(T::from_le(&b[..T::SIZE]))
    }

    /// `OUTS` without `REP`: one element, as a string access.
    fn outs<T: PortElement>(&self, port: u16, value: T) -> Result<(), VmmError> {
        self.string_io(T::OUTPUT, port, &mut value.to_le())
    }

    /// `REP INSB`: `buf.len()` bytes read from `port` into `buf`, as one
    /// access: a trapping device's handler is called once with
    /// `STRING_IO | REP_IO` (the client's ES:DI at the buffer, CX the
    /// count) and usually performs the elements with `Simulate_IO`; on a
    /// port nobody traps each element reaches the hardware.
    pub fn rep_insb(&self, port: u16, buf: &mut [u8]) -> Result<(), VmmError> {
        self.rep_ins(port, buf)
    }

    /// `REP INSW`: as [`Ring3::rep_insb`] with word elements.
    pub fn rep_insw(&self, port: u16, buf: &mut [u16]) -> Result<(), VmmError> {
        self.rep_ins(port, buf)
    }

    /// `REP INSD`: as [`Ring3::rep_insb`] with dword elements.
    pub fn rep_insd(&self, port: u16, buf: &mut [u32]) -> Result<(), VmmError> {
        self.rep_ins(port, buf)
    }

    /// `REP OUTSB`: `data` written to `port` as one access (the client's
    /// DS:SI at a copy of it, CX the count), as [`Ring3::rep_insb`].
    pub fn rep_outsb(&self, port: u16, data: &[u8]) -> Result<(), VmmError> {
        self.rep_outs(port, data)
    }

    /// `REP OUTSW`: as [`Ring3::rep_outsb`] with word elements.
    pub fn rep_outsw(&self, port: u16, data: &[u16]) -> Result<(), VmmError> {
        self.rep_outs(port, data)
    }

    /// `REP OUTSD`: as [`Ring3::rep_outsb`] with dword elements.
    pub fn rep_outsd(&self, port: u16, data: &[u32]) -> Result<(), VmmError> {
        self.rep_outs(port, data)
    }

    /// `INSB` without `REP`: one byte, as a string access.
    pub fn insb(&self, port: u16) -> Result<u8, VmmError> {
        self.ins(port)
    }

    /// `INSW` without `REP`.
    pub fn insw(&self, port: u16) -> Result<u16, VmmError> {
        self.ins(port)
    }

    /// `INSD` without `REP`.
    pub fn insd(&self, port: u16) -> Result<u32, VmmError> {
        self.ins(port)
    }

    /// `OUTSB` without `REP`: one byte, as a string access (`STRING_IO`
    /// without `REP_IO`).
    pub fn outsb(&self, port: u16, value: u8) -> Result<(), VmmError> {
        self.outs(port, value)
    }

    /// `OUTSW` without `REP`.
    pub fn outsw(&self, port: u16, value: u16) -> Result<(), VmmError> {
        self.outs(port, value)
    }

    /// `OUTSD` without `REP`.
    pub fn outsd(&self, port: u16, value: u32) -> Result<(), VmmError> {
        self.outs(port, value)
    }

    /// A NUL-terminated copy of `text` (ANSI, one byte per character; other
    /// characters become `?`) in a new block: the far pointer to pass in
    /// DS:DX and friends.
    pub fn far_string(&self, text: &str) -> Result<FarPtr, VmmError> {
        let mut bytes: Vec<u8> = text.chars().map(|c| u8::try_from(c).unwrap_or(b'?')).collect();
        bytes.push(0);
        let ptr = self.global_alloc(bytes.len() as u32)?;
        self.write_far(ptr, &bytes)?;
        Ok(ptr)
    }

    /// Read the NUL-terminated string a 16:16 pointer points at (the ANSI
    /// character set, one character per byte).
    pub fn read_far_string(&self, ptr: FarPtr) -> Result<String, VmmError> {
        let mut text = String::new();
        let mut at = ptr;
        loop {
            let mut chunk = [0u8; 64];
            let n = self.read_far(at, &mut chunk)?;
            if let Some(end) = chunk[..n].iter().position(|b| *b == 0) {
                text.extend(chunk[..end].iter().map(|&b| b as char));
                return Ok(text);
            }
            if n < chunk.len() {
                // The segment ended before the terminator.
                return Err(VmmError::INVALID_PARAMETER);
            }
            text.extend(chunk.iter().map(|&b| b as char));
            at = FarPtr::new(at.selector, at.offset.wrapping_add(n as u16));
        }
    }
}

/// A ring-3 module: implement it, then export it with
/// [`declare_module!`](crate::declare_module).
pub trait Module: Sized + 'static {
    /// The module's declaration.
    const MODULE: ModuleDef;

    /// The factory: a DLL has one instance; each start of an application or
    /// DOS program is a new instance.
    fn create(r3: &Ring3<'_>) -> Result<Self, String>;

    /// `WinMain`, DOS `main`, or a DLL's `LibMain` (return
    /// `Step::exit(1)` to load, `Step::exit(0)` to refuse).
    fn start(&self, r3: &Ring3<'_>, args: &str) -> Step;

    /// Continue after the wait `start` or the last `resume` asked for. The
    /// default is the standard message loop: `WM_QUIT` ends the program with
    /// its wParam, other messages are dispatched.
    fn resume(&self, r3: &Ring3<'_>, wake: Wake) -> Step {
        match wake {
            Wake::Message(m) if m.message == WM_QUIT => Step::exit(m.wparam as u32),
            Wake::Message(m) => {
                r3.dispatch_message(&m);
                Step::get_message()
            }
            Wake::Slept | Wake::Yielded => Step::get_message(),
        }
    }

    /// An exported procedure, by ordinal, with its PASCAL arguments; the
    /// result goes to DX:AX. Window procedures are exports taking
    /// `(HWND, WORD msg, WORD wParam, LONG lParam)` (10 bytes).
    fn call(&self, r3: &Ring3<'_>, ordinal: u16, args: PascalArgs<'_>) -> u32 {
        let _ = (r3, ordinal, args);
        0
    }
}

/// Entry points of module instances.
struct ModuleGlue<M>(M);

impl<M: Module> ModuleGlue<M> {
    extern "C" fn drop(this: *const c_void) {
        let _ = entry(None, || {
            // SAFETY: the host drops each instance once, with its own pointer.
            unsafe { InstanceBox::<M>::drop_raw(this) };
            Ok(())
        });
    }

    extern "C" fn start(this: *const c_void, cx: &HostCx, args: RStr<'_>) -> PluginResult<Step> {
        entry_in(this, Some(cx), || {
            // SAFETY: `this` is an instance of `M` created by `create`.
            let m = unsafe { InstanceBox::<M>::get(this) };
            Ok(m.start(&Ring3::new(cx), args.as_str()))
        })
    }

    extern "C" fn resume(this: *const c_void, cx: &HostCx, resume: &Resume) -> PluginResult<Step> {
        entry_in(this, Some(cx), || {
            // SAFETY: as above.
            let m = unsafe { InstanceBox::<M>::get(this) };
            Ok(m.resume(&Ring3::new(cx), Wake::from(resume)))
        })
    }

    extern "C" fn call_export(
        this: *const c_void,
        cx: &HostCx,
        ordinal: u16,
        args: RSlice<'_, u8>,
    ) -> PluginResult<u32> {
        entry_in(this, Some(cx), || {
            // SAFETY: as above.
            let m = unsafe { InstanceBox::<M>::get(this) };
            Ok(m.call(&Ring3::new(cx), ordinal, PascalArgs::new(args.as_slice())))
        })
    }

    staticref! {
        const VTABLE_VAL: WithMetadata<InstanceVtable> = WithMetadata::new(InstanceVtable {
            drop: Self::drop,
            real_mode_init: not_a_device_rmi,
            control: not_a_device_control,
            api: not_a_device_api,
            service: not_a_device_service,
            save_state: crate::device::__no_state,
            restore_state: crate::device::__no_restore,
            start: Self::start,
            resume: Self::resume,
            call_export: Self::call_export,
        })
    }

    const VTABLE: InstanceVtable_Ref = InstanceVtable_Ref(Self::VTABLE_VAL.as_prefix());

    extern "C" fn create(cx: &HostCx) -> PluginResult<RawInstance> {
        entry(Some(cx), || {
            let m = M::create(&Ring3::new(cx)).map_err(|e| error(PluginErrorKind::Failed, &e))?;
            Ok(RawInstance { this: InstanceBox::into_raw(m), vtable: Self::VTABLE })
        })
    }
}

extern "C" fn not_a_device_rmi(_: *const c_void, cx: &HostCx, _: u32, _: u32) -> PluginResult<RealModeInitResult> {
    entry(Some(cx), || Err(error(PluginErrorKind::Failed, "a ring-3 module is not a virtual device")))
}

extern "C" fn not_a_device_control(_: *const c_void, cx: &HostCx, _: &ControlArgs) -> PluginResult<Carry> {
    entry(Some(cx), || Err(error(PluginErrorKind::Failed, "a ring-3 module is not a virtual device")))
}

extern "C" fn not_a_device_api(
    _: *const c_void,
    cx: &HostCx,
    _: ApiMode,
    _: u32,
    _: *mut ClientRegs,
) -> PluginResult<()> {
    entry(Some(cx), || Err(error(PluginErrorKind::Failed, "a ring-3 module is not a virtual device")))
}

extern "C" fn not_a_device_service(_: *const c_void, cx: &HostCx, _: u32, _: &mut ServiceCall) -> PluginResult<Carry> {
    entry(Some(cx), || Err(error(PluginErrorKind::Failed, "a ring-3 module is not a virtual device")))
}

fn descriptor(def: &ModuleDef) -> ModuleDescriptor {
    let segments: Vec<SegmentDescriptor> =
        def.segments.iter().map(|s| SegmentDescriptor { name: RStr::from_str(s.name), kind: s.kind }).collect();
    let exports: Vec<ExportDescriptor> = def
        .exports
        .iter()
        .map(|e| ExportDescriptor {
            name: RStr::from_str(e.name),
            ordinal: e.ordinal,
            segment: e.segment,
            arg_bytes: e.arg_bytes,
        })
        .collect();
    ModuleDescriptor {
        name: RStr::from_str(def.name),
        segments: RSlice::from_slice(Box::leak(segments.into_boxed_slice())),
        exports: RSlice::from_slice(Box::leak(exports.into_boxed_slice())),
    }
}

fn info_of<M: Module>() -> PluginInfo {
    PluginInfo {
        kind: M::MODULE.kind,
        api_version: RStr::from_str(env!("CARGO_PKG_VERSION")),
        panic_unwind: cfg!(panic = "unwind"),
        device: RNone,
        module: RSome(descriptor(&M::MODULE)),
    }
}

/// Support for [`declare_module!`](crate::declare_module).
#[doc(hidden)]
pub fn __module_info<M: Module>(cache: &'static OnceLock<PluginInfo>) -> PluginInfo {
    *cache.get_or_init(info_of::<M>)
}

/// Support for [`declare_module!`](crate::declare_module).
#[doc(hidden)]
pub fn __module_root<M: Module>(info: extern "C" fn() -> PluginInfo) -> PluginRoot_Ref {
    crate::guard::mark_separate_copy();
    PluginRoot { info, create: ModuleGlue::<M>::create }.leak_into_prefix()
}

/// The root module of ring-3 module `M` for use inside the host process
/// (see [`crate::device::in_process`]).
pub fn in_process<M: Module>() -> PluginRoot_Ref {
    extern "C" fn info<M: Module>() -> PluginInfo {
        static CACHE: std::sync::Mutex<Vec<(core::any::TypeId, PluginInfo)>> = std::sync::Mutex::new(Vec::new());
        let id = core::any::TypeId::of::<M>();
        let mut cache = CACHE.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, i)) = cache.iter().find(|(t, _)| *t == id) {
            return *i;
        }
        let i = info_of::<M>();
        cache.push((id, i));
        i
    }
    PluginRoot { info: info::<M>, create: ModuleGlue::<M>::create }.leak_into_prefix()
}

/// Export a [`Module`] implementation as this plugin's ring-3 module.
///
/// The crate must be a `cdylib` built with `panic = "unwind"`.
#[macro_export]
macro_rules! declare_module {
    ($module:ty) => {
        const _: () = ::core::assert!(
            ::core::cfg!(panic = "unwind"),
            "ring-3 plugins must be built with panic = \"unwind\": the SDK turns panics into error results"
        );

        static __VMM_PLUGIN_INFO: ::std::sync::OnceLock<$crate::abi::PluginInfo> = ::std::sync::OnceLock::new();

        extern "C" fn __vmm_plugin_info() -> $crate::abi::PluginInfo {
            $crate::ring3::__module_info::<$module>(&__VMM_PLUGIN_INFO)
        }

        $crate::__export_root_module!($crate::ring3::__module_root::<$module>(__vmm_plugin_info));
    };
}

// ---- VPICD: hardware interrupt handlers of ring-3 code -------------------------------------

impl Ring3<'_> {
    /// Install `handler` (an export's address, from
    /// [`Ring3::export_address`], a PM call-back's, or the default a
    /// previous call returned) as this VM's handler of interrupt `vector`,
    /// as DPMI's set vector does: it is the VM's one PM vector entry, the
    /// one a device's `Set_PM_Int_Vector` writes and `Get_PM_Int_Vector`
    /// reads, and the last write wins. In a DOS program (V86 code) it is
    /// the VM's V86 vector entry instead, as `INT 21h AH=25h` sets it: the
    /// one `Set_V86_Int_Vector` writes and `Get_V86_Int_Vector` reads (a
    /// V86 call-back rather than a PM one). `None` puts back the entry the VM
    /// started with. A hardware interrupt VPICD simulates into the VM calls
    /// the export with no arguments; its return is the handler's `IRET`, so
    /// it sends the EOI (`out_byte(0x20, 0x20)`) first. The previous entry
    /// (`None`: the VMM's default); anything else is `BAD_POINTER`.
    pub fn set_int_vector(&self, vector: u8, handler: Option<FarPtr>) -> Result<Option<FarPtr>, VmmError> {
        let f = crate::vmm::appended(self.svc().ring3().r3_set_int_vector())?;
        let old = crate::vmm::res(f(self.cx, vector, handler.map_or(0, |h| h.to_u32())))?;
        Ok((old != 0).then(|| FarPtr::from_u32(old)))
    }

    /// This VM's handler of interrupt `vector`, as DPMI's get vector
    /// returns it: the VM's one PM vector entry, whoever wrote it last
    /// ([`Ring3::set_int_vector`] or a device's `Set_PM_Int_Vector`, so a
    /// device's PM call-back too); in a DOS program the V86 entry
    /// (`Set_V86_Int_Vector`'s). `None`: the VMM's default, which
    /// reflects the interrupt to V86 mode (in V86: the BIOS/DOS handler).
    /// Keep it to chain to or to put back.
    pub fn get_int_vector(&self, vector: u8) -> Result<Option<FarPtr>, VmmError> {
        let f = crate::vmm::appended(self.svc().ring3().r3_get_int_vector())?;
        let v = crate::vmm::res(f(self.cx, vector))?;
        Ok((v != 0).then(|| FarPtr::from_u32(v)))
    }
}

// ---- faults of ring-3 code ------------------------------------------------------------------

/// A processor exception ring-3 code raises with [`Ring3::fault`]: what
/// the instruction it stands for does on a real processor.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Exception {
    /// `DIV` by zero: 00h.
    DivideError,
    /// `INT3`: 03h.
    Breakpoint,
    /// `UD2`: 06h.
    InvalidOpcode,
    /// A load of an invalid selector: 0Dh (general protection).
    GeneralProtection,
}

impl Exception {
    /// The exception's vector.
    pub fn vector(self) -> u8 {
        match self {
            Exception::DivideError => 0x00,
            Exception::Breakpoint => 0x03,
            Exception::InvalidOpcode => 0x06,
            Exception::GeneralProtection => 0x0D,
        }
    }
}

impl Ring3<'_> {
    /// Execute an instruction that raises `exception`, in this VM's mode
    /// (protected mode in the system VM, V86 in a DOS VM). The VMM offers
    /// it to the devices' fault hooks installed after `Sys_Critical_Init`
    /// (`Hook_PM_Fault`, `Hook_V86_Fault`), then to the VM's handler (its
    /// PM vector, whoever wrote it last: a device's `Set_PM_Int_Vector` or
    /// [`Ring3::set_int_vector`], called as an interrupt handler; in V86 a call-back in the VM's V86 vector), then to the
    /// hooks installed during `Sys_Critical_Init`. `Ok(())`: handled, the
    /// code goes on after the instruction (with the client registers the
    /// handler left). `Err(FAILED)`: nothing handled it; the program is
    /// crashed when this step returns (`pm_fault` / `v86_fault` record,
    /// then `program_ended` with reason `crashed`), so return at once.
    pub fn fault(&self, exception: Exception) -> Result<(), VmmError> {
        let f = crate::vmm::appended(self.svc().ring3().r3_fault())?;
        crate::vmm::res(f(self.cx, exception.vector()))
    }
}

#[cfg(test)]
mod tests {
    use super::PascalArgs;

    #[test]
    fn pascal_args_round_trip() {
        // PostMessage(hwnd, msg, wParam, lParam): hwnd pushed first.
        let bytes = PascalArgs::encode(&[(2, 0x1234), (2, 0x0500), (2, 7), (4, 0xDEAD_BEEF)]);
        assert_eq!(bytes, [0xEF, 0xBE, 0xAD, 0xDE, 7, 0, 0x00, 0x05, 0x34, 0x12]);
        let p = PascalArgs::new(&bytes).params([2, 2, 2, 4]);
        assert_eq!(p, [0x1234, 0x0500, 7, 0xDEAD_BEEF]);
    }
}

/// An element of a string port access: a byte, a word or a dword, with its
/// `IOType` and its little-endian bytes.
trait PortElement: Copy {
    const SIZE: usize;
    const INPUT: u32;
    const OUTPUT: u32;
    fn to_le(self) -> Vec<u8>;
    fn from_le(bytes: &[u8]) -> Self;
    fn to_port(self) -> u32;
    fn from_port(value: u32) -> Self;
}

macro_rules! port_element {
    ($t:ty, $input:ident, $output:ident) => {
        impl PortElement for $t {
            const SIZE: usize = std::mem::size_of::<$t>();
            const INPUT: u32 = crate::ddk::$input;
            const OUTPUT: u32 = crate::ddk::$output;
            fn to_le(self) -> Vec<u8> {
                self.to_le_bytes().to_vec()
            }
            fn from_le(bytes: &[u8]) -> Self {
                <$t>::from_le_bytes(bytes.try_into().expect("one element"))
            }
            fn to_port(self) -> u32 {
                self.into()
            }
            fn from_port(value: u32) -> Self {
                value as $t
            }
        }
    };
}

port_element!(u8, BYTE_INPUT, BYTE_OUTPUT);
port_element!(u16, WORD_INPUT, WORD_OUTPUT);
port_element!(u32, DWORD_INPUT, DWORD_OUTPUT);
