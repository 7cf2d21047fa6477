//! [`Vmm`]: the VMM services a device calls, under their DDK names.
//!
//! Every entry point of a device receives a `&Vmm`. Its methods map one to
//! one onto VMM services (`get_cur_vm_handle` is `Get_Cur_VM_Handle`), take
//! typed arguments instead of registers, and return `Result<_, VmmError>`
//! where the DDK reports failure. Callbacks are closures that receive the
//! registering device back as `&D`.
//!
//! Services are checked by the host: a call that breaks a VMM rule (a
//! synchronous service at interrupt time, a profile service after init, a
//! stale handle, a bad pointer, a reserved flag, a count that would
//! overflow, ...) is reported as a `violation` in the trace and returns
//! [`VmmError::VIOLATION`], whatever the rule; services whose result is an
//! address or a handle return 0 instead. Once the machine is stopping after
//! a fatal error a service returns [`VmmError::FATAL`], and these methods do
//! not return it: they unwind to the entry point the host called, so none
//! of the device's code runs after a fatal error.

use core::fmt;

use abi_stable::std_types::{RSlice, RSliceMut, RStr, RVec};

use crate::abi::{
    Carry, ClientRegs, CritStatus, HostCx, HostServices_Ref, IoHandlerEntry, NoteField, NoteKind, ProfileStatus, Regs,
    ServiceCall, VmInfo, VmmError,
};
use crate::callback::{Named, once, repeating};
use crate::client::Client;
use crate::ddk::CF_MASK;
use crate::guard::fatal_exit;
use crate::handles::{EventHandle, FarPtr, IrqHandle, SemaphoreHandle, TimeoutHandle, VmHandle};

impl fmt::Display for VmmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match *self {
            VmmError::INVALID_HANDLE => "invalid or stale handle",
            VmmError::VIOLATION => "the call broke a VMM rule (see the violation record)",
            VmmError::INVALID_PARAMETER => "invalid parameter",
            VmmError::FATAL => "the machine is stopping after a fatal error",
            VmmError::OUT_OF_MEMORY => "out of memory",
            VmmError::NOT_AVAILABLE => "service not available in this host",
            VmmError::NOT_FOUND => "not found",
            VmmError::FAILED => "the service failed",
            _ => return write!(f, "VMM error {}", self.code),
        };
        f.write_str(text)
    }
}

impl std::error::Error for VmmError {}

/// What an event callback learns: the VM it runs in (EBX) and, for
/// `Call_Priority_VM_Event` with `PEF_TIME_OUT`, whether the time-out
/// expired first (CF set). A timed-out callback may run in another VM than
/// the one it was scheduled for.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// The current VM when the callback runs.
    pub vm: VmHandle,
    /// The time-out expired before the event could be dispatched.
    pub timed_out: bool,
    /// The handle the scheduling service returned for this event (null if
    /// it ran inline): from now on it is stale, so a device that keeps
    /// handles to cancel pending events (at `Sys_Dynamic_Device_Exit`, say)
    /// drops this one.
    pub handle: EventHandle,
}

/// What a time-out callback learns.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Timeout {
    /// The current VM.
    pub vm: VmHandle,
    /// How many milliseconds late the callback runs (ECX).
    pub late_ms: u32,
}

/// A profile value with the DDK's three outcomes.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Profile<T> {
    /// Present, present but empty, or missing/invalid.
    pub status: ProfileStatus,
    /// The value, or the default for `Empty` and `Missing`.
    pub value: T,
}

/// One string entry of the manifest's profile data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProfileEntry {
    /// The value.
    pub value: String,
    /// Position among entries with the same key.
    pub index: u32,
}

/// The critical section's state, as `Get_Crit_Section_Status` reports it.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct CritSectionStatus {
    /// ECX: claim count (0 when free).
    pub claims: u32,
    /// EBX: the owner, or the current VM when the section is free.
    pub owner: VmHandle,
    /// CF: the current VM's priority is at least `CRITICAL_SECTION_BOOST`.
    pub high_priority: bool,
}

impl From<CritStatus> for CritSectionStatus {
    fn from(s: CritStatus) -> Self {
        CritSectionStatus { claims: s.claims, owner: VmHandle(s.owner), high_priority: s.high_priority }
    }
}

/// Most fields a trace note may have.
pub const MAX_NOTE_FIELDS: usize = 32;

/// A value in a trace note written with [`Vmm::trace_note`].
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum NoteValue<'v> {
    /// A signed number.
    Int(i64),
    /// An unsigned number.
    UInt(u64),
    /// A boolean.
    Bool(bool),
    /// Text.
    Text(&'v str),
    /// No value (JSON null): an optional value that is absent, from
    /// `Option::None`.
    Null,
}

macro_rules! note_from {
    ($($t:ty => $v:ident as $c:ty),*) => {$(
        impl From<$t> for NoteValue<'_> {
            fn from(x: $t) -> Self {
                NoteValue::$v(x as $c)
            }
        }
    )*};
}
note_from!(u8 => UInt as u64, u16 => UInt as u64, u32 => UInt as u64, u64 => UInt as u64, usize => UInt as u64,
    i8 => Int as i64, i16 => Int as i64, i32 => Int as i64, i64 => Int as i64);

impl From<bool> for NoteValue<'_> {
    fn from(b: bool) -> Self {
        NoteValue::Bool(b)
    }
}

impl<'v> From<&'v str> for NoteValue<'v> {
    fn from(s: &'v str) -> Self {
        NoteValue::Text(s)
    }
}

impl From<VmHandle> for NoteValue<'_> {
    fn from(vm: VmHandle) -> Self {
        NoteValue::UInt(vm.0 as u64)
    }
}

impl<'v> From<&'v String> for NoteValue<'v> {
    fn from(s: &'v String) -> Self {
        NoteValue::Text(s.as_str())
    }
}

/// An optional value: `None` is written as null.
impl<'v, T: Into<NoteValue<'v>>> From<Option<T>> for NoteValue<'v> {
    fn from(v: Option<T>) -> Self {
        v.map_or(NoteValue::Null, Into::into)
    }
}

/// One raw note field.
fn note_field<'f>(key: &'f str, value: NoteValue<'f>) -> NoteField<'f> {
    let (kind, number, text) = match value {
        NoteValue::Int(n) => (NoteKind::Int, n as u64, ""),
        NoteValue::UInt(n) => (NoteKind::UInt, n, ""),
        NoteValue::Bool(b) => (NoteKind::Bool, u64::from(b), ""),
        NoteValue::Text(t) => (NoteKind::Text, 0, t),
        NoteValue::Null => (NoteKind::UInt, 0, ""),
    };
    NoteField { key: RStr::from_str(key), kind, number, text: RStr::from_str(text) }
}

/// An owned value of a [`NoteBuilder`] field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NoteArg {
    /// A signed number.
    Int(i64),
    /// An unsigned number.
    UInt(u64),
    /// A boolean.
    Bool(bool),
    /// Text.
    Text(String),
    /// No value (null).
    Null,
}

impl NoteArg {
    fn as_value(&self) -> NoteValue<'_> {
        match self {
            NoteArg::Int(n) => NoteValue::Int(*n),
            NoteArg::UInt(n) => NoteValue::UInt(*n),
            NoteArg::Bool(b) => NoteValue::Bool(*b),
            NoteArg::Text(t) => NoteValue::Text(t),
            NoteArg::Null => NoteValue::Null,
        }
    }
}

impl<'v, T: Into<NoteValue<'v>>> From<T> for NoteArg {
    fn from(v: T) -> Self {
        match v.into() {
            NoteValue::Int(n) => NoteArg::Int(n),
            NoteValue::UInt(n) => NoteArg::UInt(n),
            NoteValue::Bool(b) => NoteArg::Bool(b),
            NoteValue::Text(t) => NoteArg::Text(t.to_string()),
            NoteValue::Null => NoteArg::Null,
        }
    }
}

/// A trace note with owned values, from [`Vmm::note`].
#[must_use = "a note is written by `write`"]
pub struct NoteBuilder<'a> {
    vmm: Vmm<'a>,
    note: String,
    fields: Vec<(String, NoteArg)>,
    on: bool,
}

impl NoteBuilder<'_> {
    /// Add field `key` (a `String` or `&str`, a number, a boolean, a VM
    /// handle, or an `Option` of one: `None` is null).
    pub fn field(mut self, key: &str, value: impl IntoNoteArg) -> Self {
        if self.on {
            self.fields.push((key.to_string(), value.into_note_arg()));
        }
        self
    }

    /// Write the note (the rules of [`Vmm::trace_note`]).
    pub fn write(self) -> Result<(), VmmError> {
        if !self.on {
            return Ok(());
        }
        if self.fields.len() > MAX_NOTE_FIELDS {
            return Err(VmmError::INVALID_PARAMETER);
        }
        let mut nulls = 0u32;
        let raw: Vec<NoteField<'_>> = self
            .fields
            .iter()
            .enumerate()
            .map(|(i, (key, value))| {
                if *value == NoteArg::Null {
                    nulls |= 1 << i;
                }
                note_field(key, value.as_value())
            })
            .collect();
        let svc = self.vmm.svc();
        let note = RStr::from_str(&self.note);
        if nulls == 0 {
            let f = appended(svc.trace_note())?;
            return res(f(self.vmm.cx, note, RSlice::from_slice(&raw)));
        }
        let f = appended(svc.trace_note_nulls())?;
        res(f(self.vmm.cx, note, RSlice::from_slice(&raw), nulls))
    }
}

/// What [`NoteBuilder::field`] takes: everything a [`NoteValue`] is made
/// from, and owned `String`s (with `Option`s of either).
pub trait IntoNoteArg {
    /// The owned value.
    fn into_note_arg(self) -> NoteArg;
}

impl IntoNoteArg for String {
    fn into_note_arg(self) -> NoteArg {
        NoteArg::Text(self)
    }
}

impl IntoNoteArg for Option<String> {
    fn into_note_arg(self) -> NoteArg {
        self.map_or(NoteArg::Null, NoteArg::Text)
    }
}

impl<'v, T: Into<NoteValue<'v>>> IntoNoteArg for T {
    fn into_note_arg(self) -> NoteArg {
        NoteArg::from(self)
    }
}

/// The services handle passed to every device entry point.
#[derive(Copy, Clone)]
pub struct Vmm<'a> {
    cx: &'a HostCx,
}

impl fmt::Debug for Vmm<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Vmm").finish_non_exhaustive()
    }
}

/// An entry appended to a service table after the first release: `None`
/// on an older host, which is `NOT_AVAILABLE` to the caller.
#[inline]
pub(crate) fn appended<F>(entry: Option<F>) -> Result<F, VmmError> {
    entry.ok_or(VmmError::NOT_AVAILABLE)
}

#[inline]
/// A service's result; after a fatal error ([`VmmError::FATAL`]) the call
/// does not return: the device's code unwinds to its entry point, so none
/// of it runs once the machine is stopping.
pub(crate) fn res<T>(r: abi_stable::std_types::RResult<T, VmmError>) -> Result<T, VmmError> {
    match r.into_result() {
        Err(VmmError::FATAL) => fatal_exit(),
        other => other,
    }
}

fn event_cb<D: 'static, F: FnOnce(&D, &Vmm<'_>, Event) + 'static>(f: F) -> crate::abi::RawCallback {
    once(Named::<F>::new(), move |d: &D, vmm: &Vmm<'_>, r: &mut Regs| {
        f(d, vmm, Event { vm: VmHandle(r.ebx), timed_out: r.flags & CF_MASK != 0, handle: EventHandle(r.esi) });
        Carry::Clear
    })
}

fn vm_cb<D: 'static, F: FnOnce(&D, &Vmm<'_>, VmHandle) + 'static>(f: F) -> crate::abi::RawCallback {
    once(Named::<F>::new(), move |d: &D, vmm: &Vmm<'_>, r: &mut Regs| {
        f(d, vmm, VmHandle(r.ebx));
        Carry::Clear
    })
}

fn timeout_cb<D: 'static, F: FnOnce(&D, &Vmm<'_>, Timeout) + 'static>(f: F) -> crate::abi::RawCallback {
    once(Named::<F>::new(), move |d: &D, vmm: &Vmm<'_>, r: &mut Regs| {
        f(d, vmm, Timeout { vm: VmHandle(r.ebx), late_ms: r.ecx });
        Carry::Clear
    })
}

impl<'a> Vmm<'a> {
    /// Wrap the context of a host call.
    pub fn new(cx: &'a HostCx) -> Self {
        Vmm { cx }
    }

    /// The raw context, for the ring-3 API and advanced uses.
    pub fn host_cx(&self) -> &'a HostCx {
        self.cx
    }

    #[inline]
    fn svc(&self) -> HostServices_Ref {
        self.cx.services
    }

    #[inline]
    fn vms(&self) -> crate::abi::VmServices_Ref {
        self.cx.services.vm()
    }

    fn section(section: Option<&str>) -> RStr<'_> {
        RStr::from_str(section.unwrap_or("386Enh"))
    }

    // ---- diagnostics ---------------------------------------------------

    /// `Out_Debug_String`: a line in the debug output (and the trace).
    pub fn out_debug_string(&self, text: &str) {
        (self.svc().out_debug_string())(self.cx, RStr::from_str(text))
    }

    /// `Fatal_Error_Handler`: stop Windows with `message`. Initialized
    /// devices still get `System_Exit` and `Sys_Critical_Exit`, not
    /// `Sys_VM_Terminate`. Never returns.
    pub fn fatal_error_handler(&self, message: &str, flags: u32) -> ! {
        (self.svc().fatal_error_handler())(self.cx, RStr::from_str(message), flags);
        fatal_exit()
    }

    /// `Fatal_Memory_Error`: `Fatal_Error_Handler` with the standard
    /// "insufficient memory" text. Never returns.
    pub fn fatal_memory_error(&self) -> ! {
        (self.svc().fatal_memory_error())(self.cx);
        fatal_exit()
    }

    /// Report misuse the device detected itself; appears as a `violation`
    /// record with `code`.
    pub fn report_violation(&self, code: &str, message: &str) {
        (self.svc().report_violation())(self.cx, RStr::from_str(code), RStr::from_str(message))
    }

    /// Write a `note` record into the machine-readable trace: the device's
    /// own events, with named fields, for tests and tools to assert on.
    /// Names are 1 to 32 characters of `a-z`, `0-9` and `_`; at most 32
    /// fields, checked whenever the machine keeps a trace (tests always do);
    /// without one the note goes nowhere and costs a call. Legal in every
    /// context, including interrupt time.
    ///
    /// ```no_run
    /// # use vmm_plugin_api::prelude::*;
    /// # fn f(vmm: &Vmm<'_>, vm: VmHandle) -> Result<(), VmmError> {
    /// vmm.trace_note("post_queued", &[("vm", vm.into()), ("wparam", 2u16.into()), ("pending", 1usize.into())])?;
    /// # Ok(()) }
    /// ```
    pub fn trace_note<const N: usize>(&self, note: &str, fields: &[(&str, NoteValue<'_>); N]) -> Result<(), VmmError> {
        // Without a trace the note goes nowhere: do not build it.
        if !self.cx.tracing {
            return Ok(());
        }
        let f = appended(self.svc().trace_note())?;
        if N > MAX_NOTE_FIELDS {
            return Err(VmmError::INVALID_PARAMETER);
        }
        let mut nulls = 0u32;
        let raw: [NoteField<'_>; N] = core::array::from_fn(|i| {
            let (key, value) = fields[i];
            if value == NoteValue::Null {
                nulls |= 1 << i;
            }
            note_field(key, value)
        });
        if nulls == 0 {
            return res(f(self.cx, RStr::from_str(note), RSlice::from_slice(&raw)));
        }
        let f = appended(self.svc().trace_note_nulls())?;
        res(f(self.cx, RStr::from_str(note), RSlice::from_slice(&raw), nulls))
    }

    /// A trace note built field by field, with owned values
    /// ([`NoteBuilder::field`] takes `String`s, numbers, booleans, VM
    /// handles and `Option`s of them; `None` is written as null): the
    /// same `note` record as [`Vmm::trace_note`], for fields computed at
    /// run time. Without a trace nothing is kept and
    /// [`NoteBuilder::write`] does nothing.
    ///
    /// ```no_run
    /// # use vmm_plugin_api::prelude::*;
    /// # fn f(vmm: &Vmm<'_>, owner: Option<VmHandle>, port: u16) -> Result<(), VmmError> {
    /// vmm.note("contention").field("port", port).field("owner", owner).field("device", format!("COM{}", 1)).write()?;
    /// # Ok(()) }
    /// ```
    pub fn note(&self, note: &str) -> NoteBuilder<'a> {
        let on = self.cx.tracing;
        NoteBuilder { vmm: *self, note: if on { note.to_string() } else { String::new() }, fields: Vec::new(), on }
    }

    // ---- version, profile, dispatch ------------------------------------

    /// `Get_VMM_Version`: `(major, minor)`, for example `(4, 0)`.
    pub fn get_vmm_version(&self) -> (u8, u8) {
        let v = (self.svc().get_vmm_version())(self.cx);
        ((v >> 8) as u8, v as u8)
    }

    /// `Get_Profile_String`: the value of `key` in `section` (`None` =
    /// `[386Enh]`), `Ok(None)` when missing. Legal only during init.
    pub fn get_profile_string(&self, section: Option<&str>, key: &str) -> Result<Option<ProfileEntry>, VmmError> {
        profile_entry((self.svc().get_profile_string())(self.cx, Self::section(section), RStr::from_str(key)))
    }

    /// `Get_Next_Profile_String`: the next entry with the same key as
    /// `previous` (for repeated keys such as `device=`).
    pub fn get_next_profile_string(
        &self,
        section: Option<&str>,
        key: &str,
        previous: &ProfileEntry,
    ) -> Result<Option<ProfileEntry>, VmmError> {
        profile_entry((self.svc().get_next_profile_string())(
            self.cx,
            Self::section(section),
            RStr::from_str(key),
            previous.index,
        ))
    }

    /// `Get_Profile_Decimal_Int`.
    pub fn get_profile_decimal_int(
        &self,
        section: Option<&str>,
        key: &str,
        default: i32,
    ) -> Result<Profile<i32>, VmmError> {
        let v = res((self.svc().get_profile_decimal_int())(
            self.cx,
            Self::section(section),
            RStr::from_str(key),
            default as u32,
        ))?;
        Ok(Profile { status: v.status, value: v.value as i32 })
    }

    /// `Get_Profile_Hex_Int`.
    pub fn get_profile_hex_int(
        &self,
        section: Option<&str>,
        key: &str,
        default: u32,
    ) -> Result<Profile<u32>, VmmError> {
        let v = res((self.svc().get_profile_hex_int())(self.cx, Self::section(section), RStr::from_str(key), default))?;
        Ok(Profile { status: v.status, value: v.value })
    }

    /// `Get_Profile_Boolean`: accepts 0/1, Yes/No, Y/N, True/False, On/Off.
    pub fn get_profile_boolean(
        &self,
        section: Option<&str>,
        key: &str,
        default: bool,
    ) -> Result<Profile<bool>, VmmError> {
        let d = if default { 0xFFFF_FFFF } else { 0 };
        let v = res((self.svc().get_profile_boolean())(self.cx, Self::section(section), RStr::from_str(key), d))?;
        Ok(Profile { status: v.status, value: v.value != 0 })
    }

    /// `VxDCall`: call service `(device_id << 16) | ordinal` of another
    /// device with a register frame; CF comes back in `call.regs.flags`.
    ///
    /// Calling `Get_Version` (ordinal 0) of a device that is not loaded
    /// returns with CF set. Any other call to a missing device or ordinal is
    /// the fatal "Invalid VxD dynamic link call" and does not return.
    ///
    /// Device 1 (the VMM) answers its register services this way, with the
    /// DDK's registers and the same rules as the typed method of the same
    /// name (list: `VMM_SERVICE_BY_VXDCALL` in docs/violations.md); a
    /// service that takes a callback procedure or a pointer is reached
    /// through its typed method only.
    pub fn vxd_call(&self, service: u32, call: &mut ServiceCall) -> Result<(), VmmError> {
        res((self.svc().vxd_call())(self.cx, service, call))
    }

    // ---- heap ----------------------------------------------------------

    /// `_HeapAllocate`: the linear address of a new block, `None` when out
    /// of memory. Blocks are accounted to the calling device.
    pub fn heap_allocate(&self, bytes: u32, flags: u32) -> Option<u32> {
        non_zero((self.svc().heap_allocate())(self.cx, bytes, flags))
    }

    /// `_HeapReAllocate`: the new address; the old block stays on failure.
    pub fn heap_reallocate(&self, address: u32, bytes: u32, flags: u32) -> Option<u32> {
        non_zero((self.svc().heap_reallocate())(self.cx, address, bytes, flags))
    }

    /// `_HeapFree`: `true` on success.
    pub fn heap_free(&self, address: u32) -> bool {
        (self.svc().heap_free())(self.cx, address, 0) != 0
    }

    /// `_HeapGetSize`: 0 for an invalid block.
    pub fn heap_get_size(&self, address: u32) -> u32 {
        (self.svc().heap_get_size())(self.cx, address, 0)
    }

    /// Copy bytes out of linear memory.
    pub fn mem_read(&self, address: u32, out: &mut [u8]) -> Result<(), VmmError> {
        res((self.svc().mem_read())(self.cx, address, RSliceMut::from_mut_slice(out)))
    }

    /// Copy bytes into linear memory.
    pub fn mem_write(&self, address: u32, data: &[u8]) -> Result<(), VmmError> {
        res((self.svc().mem_write())(self.cx, address, RSlice::from_slice(data)))
    }

    // ---- VMs ----------------------------------------------------------

    /// `Get_Cur_VM_Handle`.
    #[inline]
    pub fn get_cur_vm_handle(&self) -> VmHandle {
        VmHandle((self.vms().get_cur_vm_handle())(self.cx))
    }

    /// `Get_Sys_VM_Handle`.
    #[inline]
    pub fn get_sys_vm_handle(&self) -> VmHandle {
        VmHandle((self.vms().get_sys_vm_handle())(self.cx))
    }

    /// `Test_Cur_VM_Handle`: whether `vm` is the current VM.
    #[inline]
    pub fn test_cur_vm_handle(&self, vm: VmHandle) -> bool {
        (self.vms().test_cur_vm_handle())(self.cx, vm.0)
    }

    /// `Test_Sys_VM_Handle`: whether `vm` is the system VM.
    #[inline]
    pub fn test_sys_vm_handle(&self, vm: VmHandle) -> bool {
        (self.vms().test_sys_vm_handle())(self.cx, vm.0)
    }

    /// `Validate_VM_Handle`: whether `vm` names a live VM.
    #[inline]
    pub fn validate_vm_handle(&self, vm: VmHandle) -> bool {
        (self.vms().validate_vm_handle())(self.cx, vm.0)
    }

    /// `Get_Next_VM_Handle`: the next VM in the circular list.
    pub fn get_next_vm_handle(&self, vm: VmHandle) -> Result<VmHandle, VmmError> {
        res((self.vms().get_next_vm_handle())(self.cx, vm.0)).map(VmHandle)
    }

    /// `Get_VMM_Reenter_Count`: non-zero while the VMM is re-entered by a
    /// simulated hardware interrupt.
    #[inline]
    pub fn get_vmm_reenter_count(&self) -> u32 {
        (self.vms().get_vmm_reenter_count())(self.cx)
    }

    /// The VM control block fields (ID, status, priority, IF, ...).
    pub fn get_vm_info(&self, vm: VmHandle) -> Result<VmInfo, VmmError> {
        res((self.vms().get_vm_info())(self.cx, vm.0))
    }

    /// The client registers of `vm`.
    pub fn client(&self, vm: VmHandle) -> Result<Client<'a>, VmmError> {
        let ptr = res((self.vms().client_regs())(self.cx, vm.0))?;
        // SAFETY: the host returns a pointer to the VM's block, which lives
        // as long as the VM; the VM cannot be destroyed during this call.
        unsafe { Client::from_raw(ptr) }.ok_or(VmmError::INVALID_HANDLE)
    }

    /// `_Allocate_Device_CB_Area`: reserve `bytes` zeroed bytes in every
    /// VM's control block; the offset, or `None` on failure. Init only.
    pub fn allocate_device_cb_area(&self, bytes: u32, flags: u32) -> Option<u32> {
        non_zero((self.vms().allocate_device_cb_area())(self.cx, bytes, flags))
    }

    /// Read `out.len()` bytes at `offset` of `vm`'s control block.
    pub fn cb_read(&self, vm: VmHandle, offset: u32, out: &mut [u8]) -> Result<(), VmmError> {
        res((self.vms().cb_read())(self.cx, vm.0, offset, RSliceMut::from_mut_slice(out)))
    }

    /// Write `data` at `offset` of `vm`'s control block.
    pub fn cb_write(&self, vm: VmHandle, offset: u32, data: &[u8]) -> Result<(), VmmError> {
        res((self.vms().cb_write())(self.cx, vm.0, offset, RSlice::from_slice(data)))
    }

    /// Read a little-endian dword from `vm`'s control block.
    pub fn cb_read_u32(&self, vm: VmHandle, offset: u32) -> Result<u32, VmmError> {
        let mut b = [0u8; 4];
        self.cb_read(vm, offset, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    /// Write a little-endian dword to `vm`'s control block.
    pub fn cb_write_u32(&self, vm: VmHandle, offset: u32, value: u32) -> Result<(), VmmError> {
        self.cb_write(vm, offset, &value.to_le_bytes())
    }

    // ---- time ----------------------------------------------------------

    /// `Get_System_Time`: milliseconds since Windows started.
    pub fn get_system_time(&self) -> u32 {
        (self.vms().get_system_time())(self.cx)
    }

    /// `Get_VM_Exec_Time`: how long `vm` has run, in milliseconds.
    pub fn get_vm_exec_time(&self, vm: VmHandle) -> Result<u32, VmmError> {
        res((self.vms().get_vm_exec_time())(self.cx, vm.0))
    }

    /// `Set_Global_Time_Out`: call `f` after `ms` milliseconds of system
    /// time. `None` if it could not be scheduled.
    pub fn set_global_time_out<D: 'static>(
        &self,
        ms: u32,
        f: impl FnOnce(&D, &Vmm<'_>, Timeout) + 'static,
    ) -> Option<TimeoutHandle> {
        non_zero((self.vms().set_global_time_out())(self.cx, ms, timeout_cb(f))).map(TimeoutHandle)
    }

    /// `Set_VM_Time_Out`: call `f` after `vm` has executed for `ms`
    /// milliseconds; it runs in `vm`.
    pub fn set_vm_time_out<D: 'static>(
        &self,
        ms: u32,
        vm: VmHandle,
        f: impl FnOnce(&D, &Vmm<'_>, Timeout) + 'static,
    ) -> Option<TimeoutHandle> {
        non_zero((self.vms().set_vm_time_out())(self.cx, ms, vm.0, timeout_cb(f))).map(TimeoutHandle)
    }

    /// `Cancel_Time_Out` (a null handle is a no-op).
    pub fn cancel_time_out(&self, handle: TimeoutHandle) -> Result<(), VmmError> {
        res((self.vms().cancel_time_out())(self.cx, handle.0))
    }

    // ---- scheduler -----------------------------------------------------

    /// `Adjust_Exec_Priority`: add `boost` (may be negative) to `vm`'s
    /// execution priority. May switch VMs.
    pub fn adjust_exec_priority(&self, vm: VmHandle, boost: i32) -> Result<(), VmmError> {
        res((self.vms().adjust_exec_priority())(self.cx, vm.0, boost))
    }

    /// `Call_When_Task_Switched`: `f(old, new)` on every task switch, in
    /// installation order. Permanent.
    pub fn call_when_task_switched<D: 'static, F: Fn(&D, &Vmm<'_>, VmHandle, VmHandle) + 'static>(
        &self,
        f: F,
    ) -> Result<(), VmmError> {
        let cb = repeating(Named::<F>::new(), move |d: &D, vmm: &Vmm<'_>, r: &mut Regs| {
            f(d, vmm, VmHandle(r.eax), VmHandle(r.ebx));
            Carry::Clear
        });
        res((self.vms().call_when_task_switched())(self.cx, cb))
    }

    /// `Call_When_Idle`: `f` runs when the system VM is idle. Return
    /// `Carry::Set` to pass the idle call on to the next handler,
    /// `Carry::Clear` to consume it.
    pub fn call_when_idle<D: 'static, F: Fn(&D, &Vmm<'_>, VmHandle) -> Carry + 'static>(
        &self,
        f: F,
    ) -> Result<(), VmmError> {
        let cb = repeating(Named::<F>::new(), move |d: &D, vmm: &Vmm<'_>, r: &mut Regs| f(d, vmm, VmHandle(r.ebx)));
        res((self.vms().call_when_idle())(self.cx, cb))
    }

    /// `Call_When_Idle` whose registration can be removed again with
    /// [`Vmm::cancel_call_when_idle`] (Windows 95's
    /// `Cancel_Call_When_Idle`); `f` runs as with
    /// [`Vmm::call_when_idle`]. `NOT_AVAILABLE` from a host without handles.
    pub fn call_when_idle_cancellable<D: 'static, F: Fn(&D, &Vmm<'_>, VmHandle) -> Carry + 'static>(
        &self,
        f: F,
    ) -> Result<IdleHandle, VmmError> {
        let call = appended(self.svc().call_when_idle_handle())?;
        let cb = repeating(Named::<F>::new(), move |d: &D, vmm: &Vmm<'_>, r: &mut Regs| f(d, vmm, VmHandle(r.ebx)));
        res(call(self.cx, cb)).map(IdleHandle)
    }

    /// `Cancel_Call_When_Idle` (Windows 95): the idle handler is not called
    /// again (one cancelled while it runs finishes that call).
    /// `Err(VmmError::NOT_FOUND)` (the DDK's carry) for a handle that is
    /// not an installed handler of this device's (already cancelled, or
    /// another device's).
    pub fn cancel_call_when_idle(&self, handle: IdleHandle) -> Result<(), VmmError> {
        let f = appended(self.svc().cancel_call_when_idle())?;
        res(f(self.cx, handle.0))
    }

    // ---- events --------------------------------------------------------

    /// `Call_Priority_VM_Event`: run `f` in `vm` once its conditions hold.
    ///
    /// `boost` is added to `vm`'s priority until `f` returns (unless
    /// `PEF_DONT_UNBOOST`). `flags` are `PEF_*`; with `PEF_TIME_OUT`, `f`
    /// runs after `timeout_ms` even if the conditions never hold, with
    /// `Event::timed_out` set. Returns the null handle if `f` already ran
    /// inline (possible only when `vm` is current, no `PEF_ALWAYS_SCHED`,
    /// not at interrupt time, and the wait conditions hold).
    ///
    /// Anything can happen before `f` runs: the device may be re-entered and
    /// schedule more events, and pending events run in no guaranteed order
    /// (KB Q75009).
    pub fn call_priority_vm_event<D: 'static>(
        &self,
        boost: i32,
        vm: VmHandle,
        flags: u32,
        timeout_ms: u32,
        f: impl FnOnce(&D, &Vmm<'_>, Event) + 'static,
    ) -> Result<EventHandle, VmmError> {
        res((self.vms().call_priority_vm_event())(self.cx, boost, vm.0, flags, timeout_ms, event_cb(f)))
            .map(EventHandle)
    }

    /// `Cancel_Priority_VM_Event`: remove the event and its boost. Never use
    /// a handle whose callback has run.
    pub fn cancel_priority_vm_event(&self, handle: EventHandle) -> Result<(), VmmError> {
        res((self.vms().cancel_priority_vm_event())(self.cx, handle.0))
    }

    /// `Schedule_Global_Event`: run `f` before the VMM next returns to any
    /// VM.
    pub fn schedule_global_event<D: 'static>(
        &self,
        f: impl FnOnce(&D, &Vmm<'_>, Event) + 'static,
    ) -> Result<EventHandle, VmmError> {
        res((self.vms().schedule_global_event())(self.cx, event_cb(f))).map(EventHandle)
    }

    /// `Schedule_VM_Event`: run `f` when `vm` is next about to run. No boost.
    pub fn schedule_vm_event<D: 'static>(
        &self,
        vm: VmHandle,
        f: impl FnOnce(&D, &Vmm<'_>, Event) + 'static,
    ) -> Result<EventHandle, VmmError> {
        res((self.vms().schedule_vm_event())(self.cx, vm.0, event_cb(f))).map(EventHandle)
    }

    /// `Call_Global_Event`: run `f` now unless at interrupt time; the null
    /// handle if it ran.
    pub fn call_global_event<D: 'static>(
        &self,
        f: impl FnOnce(&D, &Vmm<'_>, Event) + 'static,
    ) -> Result<EventHandle, VmmError> {
        res((self.vms().call_global_event())(self.cx, event_cb(f))).map(EventHandle)
    }

    /// `Call_VM_Event`: run `f` now if `vm` is current and not at interrupt
    /// time; else schedule it.
    pub fn call_vm_event<D: 'static>(
        &self,
        vm: VmHandle,
        f: impl FnOnce(&D, &Vmm<'_>, Event) + 'static,
    ) -> Result<EventHandle, VmmError> {
        res((self.vms().call_vm_event())(self.cx, vm.0, event_cb(f))).map(EventHandle)
    }

    /// `Cancel_Global_Event` (null is a no-op).
    pub fn cancel_global_event(&self, handle: EventHandle) -> Result<(), VmmError> {
        res((self.vms().cancel_global_event())(self.cx, handle.0))
    }

    /// `Cancel_VM_Event` (null is a no-op; not for priority events).
    pub fn cancel_vm_event(&self, vm: VmHandle, handle: EventHandle) -> Result<(), VmmError> {
        res((self.vms().cancel_vm_event())(self.cx, vm.0, handle.0))
    }

    /// `Call_When_VM_Ints_Enabled`: run `f` when the current VM enables
    /// interrupts; at once if they are enabled.
    pub fn call_when_vm_ints_enabled<D: 'static>(
        &self,
        f: impl FnOnce(&D, &Vmm<'_>, VmHandle) + 'static,
    ) -> Result<(), VmmError> {
        res((self.vms().call_when_vm_ints_enabled())(self.cx, vm_cb(f)))
    }

    /// `Call_When_Not_Critical`: run `f` when the critical section is
    /// released. Under Windows 3.x only the most recent registration runs
    /// per release; Windows 95 makes each registration a global
    /// [`Vmm::call_restricted_event`] with `PEF_WAIT_NOT_CRIT` (every one
    /// runs, in the first VM that is not critical).
    pub fn call_when_not_critical<D: 'static>(
        &self,
        f: impl FnOnce(&D, &Vmm<'_>, VmHandle) + 'static,
    ) -> Result<(), VmmError> {
        res((self.vms().call_when_not_critical())(self.cx, vm_cb(f)))
    }

    // ---- critical section and semaphores --------------------------------

    /// `Begin_Critical_Section`: claim the global critical section for the
    /// current VM, blocking it while another VM owns it. `flags` are the
    /// wait's `BLOCK_*` flags (see [`Vmm::wait_semaphore`]); `BLOCK_POLL` is
    /// refused here.
    pub fn begin_critical_section(&self, flags: u32) -> Result<(), VmmError> {
        res((self.vms().begin_critical_section())(self.cx, flags))
    }

    /// `End_Critical_Section`: release one claim.
    pub fn end_critical_section(&self) -> Result<(), VmmError> {
        res((self.vms().end_critical_section())(self.cx))
    }

    /// `Claim_Critical_Section`: add `count` claims (`flags` as for
    /// [`Vmm::begin_critical_section`]).
    pub fn claim_critical_section(&self, count: u32, flags: u32) -> Result<(), VmmError> {
        res((self.vms().claim_critical_section())(self.cx, count, flags))
    }

    /// `Release_Critical_Section`: remove `count` claims.
    pub fn release_critical_section(&self, count: u32) -> Result<(), VmmError> {
        res((self.vms().release_critical_section())(self.cx, count))
    }

    /// `Get_Crit_Section_Status` (not callable at interrupt time).
    pub fn get_crit_section_status(&self) -> Result<CritSectionStatus, VmmError> {
        res((self.vms().get_crit_section_status())(self.cx)).map(CritSectionStatus::from)
    }

    /// `Get_Crit_Status_No_Block` (callable at interrupt time).
    pub fn get_crit_status_no_block(&self) -> CritSectionStatus {
        (self.vms().get_crit_status_no_block())(self.cx).into()
    }

    /// `End_Crit_And_Suspend`: only with exactly one claim.
    pub fn end_crit_and_suspend(&self) -> Result<(), VmmError> {
        res((self.vms().end_crit_and_suspend())(self.cx))
    }

    /// `Create_Semaphore` with `tokens` initial tokens.
    pub fn create_semaphore(&self, tokens: i32) -> Result<SemaphoreHandle, VmmError> {
        res((self.vms().create_semaphore())(self.cx, tokens)).map(SemaphoreHandle)
    }

    /// `Destroy_Semaphore`.
    pub fn destroy_semaphore(&self, handle: SemaphoreHandle) -> Result<(), VmmError> {
        res((self.vms().destroy_semaphore())(self.cx, handle.0))
    }

    /// `Wait_Semaphore`: take a token, blocking the current VM (other VMs
    /// run meanwhile) until one is signalled.
    ///
    /// `flags` (`BLOCK_*`) decide what happens while the VM waits (it shows
    /// `VMSTAT_BLOCKED` meanwhile):
    ///
    /// * none: the VM's events wait for the wake-up;
    /// * `BLOCK_SVC_INTS` (or `BLOCK_FORCE_SVC_INTS`; or
    ///   `BLOCK_SVC_IF_INTS_LOCKED` while the VM has `VMSTAT_V86INTSLOCKED`):
    ///   its events run while it waits, on top of the waiting call;
    /// * `BLOCK_ENABLE_INTS` with one of those: events waiting for
    ///   interrupts to be enabled run even if the VM has them disabled;
    /// * `BLOCK_POLL`: the VM keeps the CPU; only VMs of higher priority run
    ///   (a wait only an equal VM could end is a `DEADLOCK`);
    /// * `BLOCK_THREAD_IDLE` (4.0): the system VM's `Call_When_Idle`
    ///   handlers run while it waits.
    ///
    /// Bits that are not `BLOCK_*` flags of the machine's Windows version
    /// are refused (`RESERVED_FLAGS`).
    ///
    /// ```
    /// # use vmm_plugin_api::prelude::*;
    /// # fn f(vmm: &Vmm<'_>, sem: SemaphoreHandle) -> Result<(), VmmError> {
    /// // Let this VM's events (say, a completion the signaller schedules)
    /// // run while it waits.
    /// vmm.wait_semaphore(sem, BLOCK_SVC_INTS)?;
    /// # Ok(()) }
    /// ```
    pub fn wait_semaphore(&self, handle: SemaphoreHandle, flags: u32) -> Result<(), VmmError> {
        res((self.vms().wait_semaphore())(self.cx, handle.0, flags))
    }

    /// `Signal_Semaphore` (callable at interrupt time).
    pub fn signal_semaphore(&self, handle: SemaphoreHandle) -> Result<(), VmmError> {
        res((self.vms().signal_semaphore())(self.cx, handle.0))
    }

    // ---- interrupts ------------------------------------------------------

    /// Register a simulated hardware interrupt source. `f` runs at
    /// interrupt time whenever the source is raised (by the manifest, a
    /// test, [`Vmm::request_interrupt`] or the random-order mode's
    /// injection); only asynchronous services are legal there.
    pub fn register_interrupt<D: 'static, F: Fn(&D, &Vmm<'_>, IrqHandle) + 'static>(
        &self,
        name: &str,
        f: F,
    ) -> Result<IrqHandle, VmmError> {
        let cb = repeating(Named::<F>::new(), move |d: &D, vmm: &Vmm<'_>, r: &mut Regs| {
            f(d, vmm, IrqHandle(r.eax));
            Carry::Clear
        });
        res((self.vms().register_interrupt())(self.cx, RStr::from_str(name), cb)).map(IrqHandle)
    }

    /// Request a registered interrupt; it is taken at the next service-call
    /// boundary or scheduler step.
    pub fn request_interrupt(&self, irq: IrqHandle) -> Result<(), VmmError> {
        res((self.vms().request_interrupt())(self.cx, irq.0))
    }

    /// `Suspend_VM`: stop scheduling `vm` (VM_Suspend on the first
    /// suspension); the new suspend count. The system VM cannot be
    /// suspended.
    pub fn suspend_vm(&self, vm: VmHandle) -> Result<u32, VmmError> {
        res((self.vms().suspend_vm())(self.cx, vm.0))
    }

    /// `Resume_VM`: undo one suspension; on the last, VM_Resume, which a
    /// device may refuse (then `Err(VmmError::FAILED)` and the VM stays
    /// suspended).
    pub fn resume_vm(&self, vm: VmHandle) -> Result<(), VmmError> {
        res((self.vms().resume_vm())(self.cx, vm.0, false))
    }

    // ---- nested execution --------------------------------------------------

    /// `Begin_Nest_Exec`: start a nested execution block in the current VM
    /// (protected mode if the VM runs a protected-mode application, as the
    /// system VM does). End it with [`Vmm::end_nest_exec`] before returning.
    pub fn begin_nest_exec(&self) -> Result<(), VmmError> {
        res((self.vms().begin_nest_exec())(self.cx, false))
    }

    /// `Begin_Nest_V86_Exec`: a nested block in V86 mode.
    pub fn begin_nest_v86_exec(&self) -> Result<(), VmmError> {
        res((self.vms().begin_nest_exec())(self.cx, true))
    }

    /// `End_Nest_Exec`: restores the mode and CS:IP only; save and restore
    /// the other client registers with [`Vmm::save_client_state`].
    pub fn end_nest_exec(&self) -> Result<(), VmmError> {
        res((self.vms().end_nest_exec())(self.cx))
    }

    /// `Simulate_Push`: push a word on the client stack.
    pub fn simulate_push(&self, value: u32) -> Result<(), VmmError> {
        res((self.vms().simulate_push())(self.cx, value))
    }

    /// `Simulate_Pop`.
    pub fn simulate_pop(&self) -> Result<u32, VmmError> {
        res((self.vms().simulate_pop())(self.cx))
    }

    /// `Simulate_Far_Call`: push the client CS:IP and point it at `target`.
    pub fn simulate_far_call(&self, target: FarPtr) -> Result<(), VmmError> {
        res((self.vms().simulate_far_call())(self.cx, target.selector, target.offset as u32))
    }

    /// `Simulate_Int`.
    pub fn simulate_int(&self, number: u8) -> Result<(), VmmError> {
        res((self.vms().simulate_int())(self.cx, number))
    }

    /// `Resume_Exec`: run the VM until the called code returns. Events are
    /// processed meanwhile and other VMs may run.
    pub fn resume_exec(&self) -> Result<(), VmmError> {
        res((self.vms().resume_exec())(self.cx))
    }

    /// `Exec_Int`: `Simulate_Int` then `Resume_Exec`.
    pub fn exec_int(&self, number: u8) -> Result<(), VmmError> {
        res((self.vms().exec_int())(self.cx, number))
    }

    /// `Save_Client_State`.
    pub fn save_client_state(&self) -> Result<ClientState, VmmError> {
        res((self.vms().save_client_state())(self.cx))
    }

    /// `Restore_Client_State`: may enable interrupts (and so let waiting
    /// events run).
    pub fn restore_client_state(&self, state: &ClientState) -> Result<(), VmmError> {
        res((self.vms().restore_client_state())(self.cx, state))
    }

    /// Whether `ptr` is an exported procedure of a loaded ring-3 module:
    /// check a callback address a caller gives you before you far-call it
    /// by nested execution (VPOSTD refuses a registration otherwise). Not
    /// a DDK service; `Err(NOT_AVAILABLE)` from a host older than this SDK.
    pub fn is_ring3_export(&self, ptr: FarPtr) -> Result<bool, VmmError> {
        let f = self.vms().is_ring3_export().ok_or(VmmError::NOT_AVAILABLE)?;
        Ok(f(self.cx, ptr.to_u32()))
    }

    /// `Adjust_Execution_Time`: give `vm` `ms` more milliseconds of its
    /// time slice (fewer when negative): the slice it runs now if it is
    /// the current VM, else its next one. VCD gives a COM port's owner 2 ms
    /// after each interrupt it served. Not at interrupt time;
    /// `Err(NOT_AVAILABLE)` from a host older than this SDK.
    pub fn adjust_execution_time(&self, vm: VmHandle, ms: i32) -> Result<(), VmmError> {
        let f = self.vms().adjust_execution_time().ok_or(VmmError::NOT_AVAILABLE)?;
        res(f(self.cx, vm.0, ms))
    }

    /// `No_Fail_Resume_VM`: resume even if a device objects.
    pub fn no_fail_resume_vm(&self, vm: VmHandle) -> Result<(), VmmError> {
        res((self.vms().resume_vm())(self.cx, vm.0, true))
    }
}

/// An I/O handler closure as the host calls it: EBX VM, ECX IOType, EDX
/// port, EAX data in; EAX the data read out.
fn io_callback<D: 'static, F: Fn(&D, &Vmm<'_>, IoAccess) -> u32 + 'static>(f: F) -> crate::abi::RawCallback {
    repeating(Named::<F>::new(), move |d: &D, vmm: &Vmm<'_>, r: &mut Regs| {
        let access = IoAccess { vm: VmHandle(r.ebx), io_type: r.ecx, port: r.edx as u16, data: r.eax };
        r.eax = f(d, vmm, access);
        Carry::Clear
    })
}

fn non_zero(v: u32) -> Option<u32> {
    (v != 0).then_some(v)
}

fn profile_entry(
    r: abi_stable::std_types::RResult<crate::abi::ProfileString, VmmError>,
) -> Result<Option<ProfileEntry>, VmmError> {
    match res(r) {
        Ok(p) => Ok(Some(ProfileEntry { value: p.value.into_string(), index: p.index })),
        Err(VmmError::NOT_FOUND) => Ok(None),
        Err(e) => Err(e),
    }
}

/// A copy of a VM's client registers, as `Save_Client_State` stores it.
pub type ClientState = ClientRegs;

/// One port access an I/O handler is called for (the DDK's registers:
/// EBX VM, ECX IOType, EDX port, EAX data).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct IoAccess {
    /// The VM that made the access.
    pub vm: VmHandle,
    /// The IOType (`BYTE_INPUT`, `WORD_OUTPUT`, ... in [`crate::ddk`]).
    pub io_type: u32,
    /// The port.
    pub port: u16,
    /// The data written (AL/AX/EAX by size); 0 for input.
    pub data: u32,
}

impl IoAccess {
    /// Whether the VM writes (`OUT`).
    pub fn is_output(&self) -> bool {
        self.io_type & crate::ddk::OUTPUT != 0
    }

    /// Whether the access is a single byte (anything else may be handed to
    /// [`Vmm::simulate_io`], which breaks it into bytes).
    pub fn is_byte(&self) -> bool {
        self.io_type & !crate::ddk::OUTPUT == 0
    }

    /// Whether it is a string form (`INS`/`OUTS`, `String_IO`): the data
    /// is in the VM's memory at [`IoAccess::segment`] and the client's SI
    /// (output) or DI (input), not in `data`.
    pub fn is_string(&self) -> bool {
        self.io_type & crate::ddk::STRING_IO != 0
    }

    /// Whether a string form has a `REP` prefix (`Rep_IO`): Client_CX
    /// elements (Client_ECX with `Addr_32_IO`).
    pub fn is_rep(&self) -> bool {
        self.io_type & crate::ddk::REP_IO != 0
    }

    /// Whether the VM's direction flag is set (`Reverse_IO`): a string
    /// form's addresses go down.
    pub fn is_reverse(&self) -> bool {
        self.io_type & crate::ddk::REVERSE_IO != 0
    }

    /// A string form's segment, overrides applied (the IOType's high
    /// word; 0 for the other forms).
    pub fn segment(&self) -> u16 {
        (self.io_type >> 16) as u16
    }

    /// The client registers of the VM that made the access (the DDK's
    /// EBP): a handler reads and changes them there (a string form's
    /// SI/DI and CX), and the VM resumes with what it leaves.
    pub fn client<'a>(&self, vmm: &Vmm<'a>) -> Result<Client<'a>, VmmError> {
        vmm.client(self.vm)
    }
}

/// I/O port trapping (these services are appended to the ABI: on an older
/// host they return `VmmError::NOT_AVAILABLE`).
impl Vmm<'_> {
    /// `Install_IO_Handler`: `f` is called for every access to `port` by a
    /// VM that traps it (trapping is on in every VM once installed); for an
    /// input it returns the data the VM reads (masked to the access size),
    /// for an output its result is ignored. `Err(VmmError::FAILED)` (the
    /// DDK's carry) when the port already has a handler: one per port.
    /// Under Windows 3.x legal only during initialization.
    pub fn install_io_handler<D: 'static, F: Fn(&D, &Vmm<'_>, IoAccess) -> u32 + 'static>(
        &self,
        port: u16,
        f: F,
    ) -> Result<(), VmmError> {
        let install = appended(self.svc().install_io_handler())?;
        res(install(self.cx, port, io_callback::<D, F>(f)))
    }

    /// `Install_Mult_IO_Handlers` (VMM 0x95): `f` on each of `ports`, in
    /// order, in one service call. On the first port that already has a
    /// handler, `Err((port, VmmError::FAILED))` (the DDK's carry and
    /// EDX); the ports before it stay installed (no rollback, as in
    /// Windows) and the later ones are not tried. Under Windows 3.x legal
    /// only during initialization (else `Err((first port, VIOLATION))`).
    pub fn install_mult_io_handlers<D: 'static, F: Fn(&D, &Vmm<'_>, IoAccess) -> u32 + Clone + 'static>(
        &self,
        ports: &[u16],
        f: F,
    ) -> Result<(), (u16, VmmError)> {
        let Some(install) = self.svc().install_mult_io_handlers() else {
            // An older host: one Install_IO_Handler per port.
            for &port in ports {
                self.install_io_handler(port, f.clone()).map_err(|e| (port, e))?;
            }
            return Ok(());
        };
        let entries: RVec<IoHandlerEntry> =
            ports.iter().map(|&port| IoHandlerEntry { port, callback: io_callback::<D, F>(f.clone()) }).collect();
        match install(self.cx, entries) {
            abi_stable::std_types::ROk(()) => Ok(()),
            abi_stable::std_types::RErr(e) => {
                if e.error == VmmError::FATAL {
                    fatal_exit();
                }
                Err((e.port, e.error))
            }
        }
    }

    /// `Remove_IO_Handler` (Windows 95): the handler goes and trapping of
    /// the port with it. `Err(VmmError::NOT_FOUND)` when no handler is
    /// installed on it; removing another device's handler is a violation.
    pub fn remove_io_handler(&self, port: u16) -> Result<(), VmmError> {
        let f = appended(self.svc().remove_io_handler())?;
        res(f(self.cx, port))
    }

    /// `Remove_Mult_IO_Handlers` (VMM 0x117, Windows 95): `Remove_IO_Handler`
    /// of each port in one service call; every port is tried and the first
    /// failure is returned with its port. Under Windows 3.x it does not
    /// exist: calling it is the fatal "Invalid VxD dynamic link call".
    pub fn remove_mult_io_handlers(&self, ports: &[u16]) -> Result<(), (u16, VmmError)> {
        let Some(remove) = self.svc().remove_mult_io_handlers() else {
            let mut first = Ok(());
            for &port in ports {
                let r = self.remove_io_handler(port);
                if let (Ok(()), Err(e)) = (&first, r) {
                    first = Err((port, e));
                }
            }
            return first;
        };
        match remove(self.cx, RSlice::from_slice(ports)) {
            abi_stable::std_types::ROk(()) => Ok(()),
            abi_stable::std_types::RErr(e) => {
                if e.error == VmmError::FATAL {
                    fatal_exit();
                }
                Err((e.port, e.error))
            }
        }
    }

    /// `Enable_Global_Trapping`: trap `port` in every VM (and new ones).
    pub fn enable_global_trapping(&self, port: u16) -> Result<(), VmmError> {
        let f = appended(self.svc().set_global_trapping())?;
        res(f(self.cx, port, true))
    }

    /// `Disable_Global_Trapping`: stop trapping `port` in every VM (and new
    /// ones): their accesses reach the hardware.
    pub fn disable_global_trapping(&self, port: u16) -> Result<(), VmmError> {
        let f = appended(self.svc().set_global_trapping())?;
        res(f(self.cx, port, false))
    }

    /// `Enable_Local_Trapping`: trap `port` in `vm`.
    pub fn enable_local_trapping(&self, vm: VmHandle, port: u16) -> Result<(), VmmError> {
        let f = appended(self.svc().set_local_trapping())?;
        res(f(self.cx, vm.0, port, true))
    }

    /// `Disable_Local_Trapping`: `vm`'s accesses to `port` reach the
    /// hardware (VCD gives the owner of a COM port direct access this way).
    pub fn disable_local_trapping(&self, vm: VmHandle, port: u16) -> Result<(), VmmError> {
        let f = appended(self.svc().set_local_trapping())?;
        res(f(self.cx, vm.0, port, false))
    }

    /// `Simulate_IO`, from an I/O handler: a word or dword access becomes
    /// byte accesses to `port`, `port + 1`, ... (low byte first), each
    /// dispatched through the port table (this handler again for `port`,
    /// another device's handler or the hardware for the others); a byte
    /// access is done on the hardware. Returns the input data. A string
    /// form ([`IoAccess::is_string`]) becomes one access per element
    /// through the port table (Client_CX of them with `REP`, else one),
    /// its data read from or written to the VM's memory at the segment and
    /// the client's SI (output) or DI (input); each element moves SI/DI
    /// (down with `Reverse_IO`) and counts CX down, so the client ends as
    /// the instruction leaves it (CX = 0); it returns 0.
    pub fn simulate_io(&self, access: IoAccess) -> Result<u32, VmmError> {
        let f = appended(self.svc().simulate_io())?;
        res(f(self.cx, access.vm.0, access.io_type, access.port, access.data))
    }

    /// `_Simulate_VM_IO` (Windows 95): the access as if the current VM
    /// executed it, through the port table. `io_type` is one of
    /// `BYTE_INPUT` ... `DWORD_OUTPUT`. Returns the input data.
    pub fn simulate_vm_io(&self, io_type: u32, port: u16, data: u32) -> Result<u32, VmmError> {
        let f = appended(self.svc().simulate_vm_io())?;
        res(f(self.cx, io_type, port, data))
    }
}

/// Windows 95's event additions and the VM-lifetime services (appended to
/// the ABI: on an older host they return `VmmError::NOT_AVAILABLE`).
impl Vmm<'_> {
    /// `Call_Restricted_Event` (Windows 95): run `f` once the restrictions
    /// in `flags` (`PEF_WAIT_*`) hold. `vm` names the VM it runs in;
    /// `None` makes a global event that runs in the first VM meeting the
    /// restrictions. `boost` is added to the VM's priority (a VM event: at
    /// once; a global event: to the VM that runs it, just before `f`) and
    /// removed after `f` unless `PEF_DONT_UNBOOST`. Unlike
    /// [`Vmm::call_priority_vm_event`]'s, this boost is the VM's own, as
    /// `Adjust_Exec_Priority` gives it: a VM event boosted to
    /// `CRITICAL_SECTION_BOOST` or more never meets `PEF_WAIT_NOT_CRIT`
    /// (give it a time-out). With `PEF_TIME_OUT`, `f` runs after
    /// `timeout_ms` anyway, with [`Event::timed_out`] set, and the boost
    /// goes even with `PEF_DONT_UNBOOST`. Returns the null handle if `f`
    /// already ran (possible only outside interrupt time, for a global
    /// event or one of the current VM, without `PEF_ALWAYS_SCHED`, the
    /// restrictions met). The thread flags, `PEF_WAIT_CRIT` and
    /// `PEF_WAIT_CRIT_VM` are refused (`RESERVED_FLAGS`): the emulator has
    /// no threads. Legal at interrupt time.
    pub fn call_restricted_event<D: 'static>(
        &self,
        boost: u32,
        vm: Option<VmHandle>,
        flags: u32,
        timeout_ms: u32,
        f: impl FnOnce(&D, &Vmm<'_>, Event) + 'static,
    ) -> Result<EventHandle, VmmError> {
        let call = appended(self.svc().call_restricted_event())?;
        let vm = vm.map_or(0, |v| v.0);
        res(call(self.cx, boost as i32, vm, flags, timeout_ms, event_cb(f))).map(EventHandle)
    }

    /// `Cancel_Restricted_Event` (Windows 95): remove the pending event and
    /// its boost. The null handle is a no-op; never pass a handle whose
    /// callback ran (`STALE_EVENT_HANDLE`).
    pub fn cancel_restricted_event(&self, handle: EventHandle) -> Result<(), VmmError> {
        let f = appended(self.svc().cancel_restricted_event())?;
        res(f(self.cx, handle.0))
    }

    /// `Cancel_Call_When_Not_Critical` (Windows 95): documented as doing
    /// nothing, and it does nothing here: a
    /// [`Vmm::call_when_not_critical`] registration still runs.
    pub fn cancel_call_when_not_critical(&self) -> Result<(), VmmError> {
        let f = appended(self.svc().cancel_call_when_not_critical())?;
        res(f(self.cx))
    }

    /// `Nuke_VM`: end `vm` at once, without `VM_Terminate`: every device
    /// gets `VM_Not_Executeable` with `VNE_NUKED`, then `Destroy_VM`. For
    /// another VM that happens before the call returns; the current VM is
    /// destroyed as soon as the device returns and never runs again (the
    /// DDK's "does not return": return at once). Nuking the system VM ends
    /// Windows with a fatal error, and the call unwinds like
    /// [`Vmm::fatal_error_handler`]. Not at interrupt time. Prefer failing
    /// a ring-3 call (carry) to ending its VM.
    pub fn nuke_vm(&self, vm: VmHandle) -> Result<(), VmmError> {
        let f = appended(self.svc().nuke_vm())?;
        res(f(self.cx, vm.0))
    }

    /// `Crash_Cur_VM`: end the current VM as crashed (`VM_Not_Executeable`
    /// with `VNE_CRASHED`, then `Destroy_VM`, when the device returns; it
    /// never runs again). In the system VM, Windows ends with a fatal
    /// error and the call unwinds like [`Vmm::fatal_error_handler`]. Legal
    /// at interrupt time.
    pub fn crash_cur_vm(&self) -> Result<(), VmmError> {
        let f = appended(self.svc().crash_cur_vm())?;
        res(f(self.cx))
    }
}

/// A service hook's handle ([`Vmm::hook_device_service`]): what
/// `Unhook_Device_Service` names (the DDK names the hook procedure).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct HookHandle(pub u32);

/// A call of a hooked service, as its hook sees it: the caller's
/// registers and cdecl arguments (change them to change what the service
/// gets or what the caller gets back), and the way down the chain.
pub struct HookedCall<'c> {
    service: u32,
    hook: u32,
    call: &'c mut ServiceCall,
}

impl HookedCall<'_> {
    /// The hooked service: `(device ID << 16) | ordinal`.
    pub fn service(&self) -> u32 {
        self.service
    }

    /// This hook's handle.
    pub fn hook(&self) -> HookHandle {
        HookHandle(self.hook)
    }

    /// The call's registers now (a copy; change them through
    /// [`HookedCall::call`]).
    pub fn regs(&self) -> Regs {
        self.call.regs
    }

    /// The call's cdecl arguments, first argument first.
    pub fn args(&self) -> [u32; 8] {
        self.call.args
    }

    /// The registers and arguments of the call: in, and (after
    /// [`HookedCall::chain`]) out. The carry flag in `regs.flags` is what
    /// the caller gets.
    pub fn call(&mut self) -> &mut ServiceCall {
        self.call
    }

    /// Set or clear the carry flag the caller gets.
    pub fn set_carry(&mut self, set: bool) {
        if set {
            self.call.regs.flags |= CF_MASK;
        } else {
            self.call.regs.flags &= !CF_MASK;
        }
    }

    /// Chain to the previous handler (the DDK's `JMP [pPrevVar]`): the
    /// hook installed before this one, or the service itself, with the
    /// registers as they are now; its results land in [`HookedCall::call`].
    /// The host keeps the link: a hook below that was unhooked meanwhile
    /// is skipped, as a Windows 95 `HOOK_PROC` chain is re-linked.
    pub fn chain(&mut self, vmm: &Vmm<'_>) -> Result<(), VmmError> {
        let f = appended(vmm.svc().call_previous_hook())?;
        res(f(vmm.cx, self.service, self.hook, self.call))
    }
}

/// Service hooks (appended to the ABI: on an older host they return
/// `VmmError::NOT_AVAILABLE`) and typed VXDLDR calls.
impl<'a> Vmm<'a> {
    /// `Hook_Device_Service`: `f` runs for every `VxDCall` of `service`
    /// (`(device ID << 16) | ordinal`, a plugin device's service or one of
    /// the VMM's), before the service: the newest hook first, each one
    /// choosing whether to [`HookedCall::chain`] to the previous handler.
    /// A hook must preserve what the service does not change. Typed `Vmm`
    /// methods are not `VxDCall`s and are not hooked.
    ///
    /// `hook_proc` declares a Windows 95 `HOOK_PROC`: only those can be
    /// removed ([`Vmm::unhook_device_service`]), and an old-style hook
    /// (`false`, Windows 3.1's only kind) keeps every hook below it from
    /// being removed. `Err(VmmError::NOT_FOUND)` (the DDK's carry) when
    /// the device is not loaded or has no such service.
    pub fn hook_device_service<D: 'static, F: Fn(&D, &Vmm<'_>, &mut HookedCall<'_>) + 'static>(
        &self,
        service: u32,
        hook_proc: bool,
        f: F,
    ) -> Result<HookHandle, VmmError> {
        let hook = appended(self.svc().hook_device_service())?;
        let cb = repeating(Named::<F>::new(), move |d: &D, vmm: &Vmm<'_>, r: &mut Regs| {
            let Some(get) = vmm.svc().hooked_call() else { return Carry::Set };
            let Ok(ptr) = res(get(vmm.cx)) else { return Carry::Set };
            // SAFETY: the host hands out the call in flight, which lives on
            // its caller's stack until this hook returns, and does not touch
            // it while the hook runs (except through `chain`, which this
            // hook calls with it).
            let call = unsafe { &mut *ptr };
            let mut hooked = HookedCall { service: r.eax, hook: r.esi, call };
            f(d, vmm, &mut hooked);
            Carry::from_failed(hooked.call.regs.flags & CF_MASK != 0)
        });
        res(hook(self.cx, service, hook_proc, cb)).map(HookHandle)
    }

    /// VXDLDR's services, typed (`VXDLDR_LoadDevice`, ...): each is the
    /// `VxDCall` a VxD makes, with its registers filled in. Without
    /// `*VXDLDR` in the device list, [`Vxdldr::get_version`](crate::vxdldr::Vxdldr::get_version) says
    /// `NotLoaded` and every other call is the fatal "Invalid VxD dynamic
    /// link call", as in Windows.
    pub fn vxdldr(&self) -> crate::vxdldr::Vxdldr<'_, 'a> {
        crate::vxdldr::Vxdldr::new(self)
    }

    /// `System_Control`: send `message` to every device, in init order,
    /// with EBX = `vm`, EDX, ESI and EDI as given; `Err(VmmError::FAILED)`
    /// (the DDK's carry) when a device set carry, and the devices after it
    /// do not get the message. A device may send only `SET_DEVICE_FOCUS`
    /// (EDX = the device to focus, 0 = every device; ESI = flags; EDI =
    /// the problem VM) and private messages
    /// (`BEGIN_RESERVED_PRIVATE_SYSTEM_CONTROL` to
    /// `END_RESERVED_PRIVATE_SYSTEM_CONTROL`); anything else is a
    /// `CONTROL_NOT_SENDABLE` violation.
    pub fn system_control(
        &self,
        message: u32,
        vm: Option<VmHandle>,
        edx: u32,
        esi: u32,
        edi: u32,
    ) -> Result<(), VmmError> {
        let f = appended(self.svc().system_control())?;
        let args = crate::abi::ControlArgs { message, vm: vm.map_or(0, |v| v.0), edx, esi, edi };
        res(f(self.cx, 0, &args))
    }

    /// `Directed_Sys_Control` (Windows 95): send `message` to the device
    /// with ID `device_id` only (the DDK names it by its DDB), registers
    /// passed unchanged; its carry is `Err(VmmError::FAILED)`, and
    /// `Err(VmmError::NOT_FOUND)` when no such device is loaded and
    /// initialized. The messages a device may send are those of
    /// [`Vmm::system_control`]; private ones are the usual use.
    pub fn directed_sys_control(
        &self,
        device_id: u16,
        message: u32,
        vm: Option<VmHandle>,
        edx: u32,
        esi: u32,
        edi: u32,
    ) -> Result<(), VmmError> {
        let f = appended(self.svc().system_control())?;
        if device_id == 0 {
            return Err(VmmError::NOT_FOUND);
        }
        let args = crate::abi::ControlArgs { message, vm: vm.map_or(0, |v| v.0), edx, esi, edi };
        res(f(self.cx, device_id, &args))
    }

    /// `Unhook_Device_Service` (Windows 95): remove `hook` from
    /// `service`'s chain; the hooks above it now chain to the one below.
    /// `Err(VmmError::NOT_FOUND)` when it is not in the chain,
    /// `Err(VmmError::FAILED)` when an old-style hook is above it (both
    /// the DDK's carry).
    pub fn unhook_device_service(&self, service: u32, hook: HookHandle) -> Result<(), VmmError> {
        let f = appended(self.svc().unhook_device_service())?;
        res(f(self.cx, service, hook.0))
    }
}

/// Device contention (appended to the ABI: on an older host it returns
/// `VmmError::NOT_AVAILABLE`).
impl Vmm<'_> {
    /// Write a `contention` record into the trace: this device decided who
    /// may use `resource` (`"COM1"`, 1 to 32 printable ASCII characters).
    /// `owner` held it (`None`: nobody), `contender` wants it (`None` when
    /// the owner lets it go); `decision` is the outcome in the device's own
    /// words (1 to 32 characters of `a-z`, `0-9` and `_`: VCOMD writes
    /// `free`, `steal`, `idle`, `refused`, `user_kept`, `user_gave`,
    /// `unresolved` and `released`). Tests and the timeline read these
    /// records; a bad name is an `INVALID_PARAMETER` violation. Without a
    /// trace the record goes nowhere.
    pub fn trace_contention(
        &self,
        resource: &str,
        owner: Option<VmHandle>,
        contender: Option<VmHandle>,
        decision: &str,
    ) -> Result<(), VmmError> {
        let f = appended(self.svc().trace_contention())?;
        res(f(
            self.cx,
            RStr::from_str(resource),
            owner.map_or(0, |v| v.0),
            contender.map_or(0, |v| v.0),
            RStr::from_str(decision),
        ))
    }
}

// ---- interrupts inside VMs and call-backs --------------------------------------------------

/// What an interrupt or fault hook does with what it was offered.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum HookAction {
    /// Carry clear: consumed (an interrupt goes no further, the VM goes on
    /// after its `INT` with the client registers the hook left; a fault is
    /// handled).
    Consume,
    /// Carry set: on to the next hook, and after the last one to the VM's
    /// own handler (an interrupt) or the VMM (a fault).
    PassOn,
}

/// The callback of an interrupt or fault hook: EAX the vector, EBX the VM;
/// carry clear consumes, carry set passes on.
fn hook_callback<D: 'static, F: Fn(&D, &Vmm<'_>, u8, VmHandle) -> HookAction + 'static>(
    f: F,
) -> crate::abi::RawCallback {
    repeating(Named::<F>::new(), move |d: &D, vmm: &Vmm<'_>, r: &mut Regs| {
        match f(d, vmm, r.eax as u8, VmHandle(r.ebx)) {
            HookAction::Consume => Carry::Clear,
            HookAction::PassOn => Carry::Set,
        }
    })
}

/// The handle of a cancellable `Call_When_Idle` registration (what
/// `Cancel_Call_When_Idle` takes in place of the DDK's procedure address).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct IdleHandle(pub u32);

/// The handle of a `Hook_V86_Int_Chain` hook (what `Unhook_V86_Int_Chain`
/// takes in place of the DDK's procedure address).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct IntHookHandle(pub u32);

/// The handle of a `Hook_V86_Fault` hook.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct FaultHookHandle(pub u32);

/// What a call-back is entered with (EBX, EDX).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct CallBackEntry {
    /// EBX: the VM that arrived at the call-back (its client registers are
    /// as it left them: CS:IP at the call-back, the return frame of its
    /// `CALL FAR` or `INT` on its stack).
    pub vm: VmHandle,
    /// EDX: the reference data given at allocation.
    pub ref_data: u32,
}

/// Why a `Call_When_VM_Returns` callback runs.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct VmReturn {
    /// EBX: the VM.
    pub vm: VmHandle,
    /// EDX: the reference data.
    pub ref_data: u32,
    /// Carry set: called because the time-out expired (the VM has not
    /// returned yet).
    pub timed_out: bool,
    /// ZF set: the VM returned after the (negative) time-out was reported.
    pub after_time_out: bool,
}

/// Interrupts inside VMs and call-backs into ring 0 (appended to the ABI:
/// on an older host these return `VmmError::NOT_AVAILABLE`).
impl Vmm<'_> {
    /// `Hook_V86_Int_Chain`: `f` sees every interrupt that reaches V86
    /// vector `vector` in any VM (`INT n` in a DOS program or ring-3 code,
    /// `Simulate_Int`, hardware interrupts), the newest hook first, with
    /// the VM's client registers current (`self.client(vm)`). Under
    /// Windows 3.x legal only during initialization.
    pub fn hook_v86_int_chain<D: 'static, F: Fn(&D, &Vmm<'_>, u8, VmHandle) -> HookAction + 'static>(
        &self,
        vector: u8,
        f: F,
    ) -> Result<IntHookHandle, VmmError> {
        let hook = appended(self.svc().hook_v86_int_chain())?;
        let cb = hook_callback(f);
        res(hook(self.cx, vector as u32, cb)).map(IntHookHandle)
    }

    /// `Unhook_V86_Int_Chain` (Windows 95): `Err(VmmError::NOT_FOUND)` (the
    /// DDK's carry) for a hook this device does not have on `vector`.
    pub fn unhook_v86_int_chain(&self, vector: u8, hook: IntHookHandle) -> Result<(), VmmError> {
        let f = appended(self.svc().unhook_v86_int_chain())?;
        res(f(self.cx, vector as u32, hook.0))
    }

    /// `Get_V86_Int_Vector` of the current VM (a DOS program's own vector
    /// table).
    pub fn get_v86_int_vector(&self, vector: u8) -> Result<FarPtr, VmmError> {
        let f = appended(self.svc().get_v86_int_vector())?;
        res(f(self.cx, vector as u32)).map(FarPtr::from_u32)
    }

    /// `Set_V86_Int_Vector`: before `Sys_VM_Init` every VM's default table,
    /// after it the current VM's.
    pub fn set_v86_int_vector(&self, vector: u8, target: FarPtr) -> Result<(), VmmError> {
        let f = appended(self.svc().set_v86_int_vector())?;
        res(f(self.cx, vector as u32, target.selector, target.offset as u32))
    }

    /// `Get_PM_Int_Vector` of the current VM: the vector, and whether it
    /// is still the default (ZF set: the VMM reflects it to V86 mode).
    pub fn get_pm_int_vector(&self, vector: u8) -> Result<(FarPtr, bool), VmmError> {
        let f = appended(self.svc().get_pm_int_vector())?;
        res(f(self.cx, vector as u32)).map(|v| (FarPtr::new(v.selector, v.offset as u16), v.default))
    }

    /// `Set_PM_Int_Vector`: same rule as [`Vmm::set_v86_int_vector`].
    pub fn set_pm_int_vector(&self, vector: u8, target: FarPtr) -> Result<(), VmmError> {
        let f = appended(self.svc().set_pm_int_vector())?;
        res(f(self.cx, vector as u32, target.selector, target.offset as u32))
    }

    /// `Simulate_Iret`: pop IP, CS and FLAGS from the current VM's stack.
    pub fn simulate_iret(&self) -> Result<(), VmmError> {
        let f = appended(self.svc().simulate_iret())?;
        res(f(self.cx))
    }

    /// `Simulate_Far_Jmp`: load CS:IP.
    pub fn simulate_far_jmp(&self, target: FarPtr) -> Result<(), VmmError> {
        let f = appended(self.svc().simulate_far_jmp())?;
        res(f(self.cx, target.selector, target.offset as u32))
    }

    /// `Simulate_Far_Ret`: pop IP and CS.
    pub fn simulate_far_ret(&self) -> Result<(), VmmError> {
        self.simulate_far_ret_n(0)
    }

    /// `Simulate_Far_Ret_N`: pop IP and CS, then drop `bytes` of
    /// parameters (`RETF n`).
    pub fn simulate_far_ret_n(&self, bytes: u32) -> Result<(), VmmError> {
        let f = appended(self.svc().simulate_far_ret_n())?;
        res(f(self.cx, bytes))
    }

    /// `Build_Int_Stack_Frame`: push FLAGS, CS, IP and jump to `target`
    /// (IF and TF cleared, as an `INT` does) without calling any hook; the
    /// target must `IRET`.
    pub fn build_int_stack_frame(&self, target: FarPtr) -> Result<(), VmmError> {
        let f = appended(self.svc().build_int_stack_frame())?;
        res(f(self.cx, target.selector, target.offset as u32))
    }

    fn allocate_call_back<D: 'static, F: Fn(&D, &Vmm<'_>, CallBackEntry) + 'static>(
        &self,
        pm: bool,
        ref_data: u32,
        f: F,
    ) -> Result<FarPtr, VmmError> {
        let alloc = appended(self.svc().allocate_call_back())?;
        let cb = repeating(Named::<F>::new(), move |d: &D, vmm: &Vmm<'_>, r: &mut Regs| {
            f(d, vmm, CallBackEntry { vm: VmHandle(r.ebx), ref_data: r.edx });
            Carry::Clear
        });
        res(alloc(self.cx, pm, ref_data, cb)).map(FarPtr::from_u32)
    }

    /// `Allocate_V86_Call_Back`: a V86 address that, reached by a `CALL
    /// FAR` or (stored in a vector) an `INT`, runs `f` in ring 0. `f` reads
    /// and writes the VM's client registers and must move its CS:IP:
    /// [`Vmm::simulate_far_ret`] after a far call, [`Vmm::simulate_iret`]
    /// after an interrupt (nothing is popped for it). `Err(FAILED)` when
    /// the pool is used up.
    pub fn allocate_v86_call_back<D: 'static, F: Fn(&D, &Vmm<'_>, CallBackEntry) + 'static>(
        &self,
        ref_data: u32,
        f: F,
    ) -> Result<FarPtr, VmmError> {
        self.allocate_call_back(false, ref_data, f)
    }

    /// `Allocate_PM_Call_Back`: the same for protected-mode ring-3 code (a
    /// selector:offset).
    pub fn allocate_pm_call_back<D: 'static, F: Fn(&D, &Vmm<'_>, CallBackEntry) + 'static>(
        &self,
        ref_data: u32,
        f: F,
    ) -> Result<FarPtr, VmmError> {
        self.allocate_call_back(true, ref_data, f)
    }

    /// `Call_When_VM_Returns`: `f` runs when the current VM returns through
    /// the next interrupt frame the VMM builds for it (call it before the
    /// interrupt is reflected, typically from a `Hook_V86_Int_Chain` hook
    /// that then passes the interrupt on), and/or at the time-out:
    /// `timeout_ms` 0 none, > 0 whichever comes first, < 0 both.
    pub fn call_when_vm_returns<D: 'static, F: Fn(&D, &Vmm<'_>, VmReturn) + 'static>(
        &self,
        timeout_ms: i32,
        ref_data: u32,
        f: F,
    ) -> Result<(), VmmError> {
        let call = appended(self.svc().call_when_vm_returns())?;
        let cb = repeating(Named::<F>::new(), move |d: &D, vmm: &Vmm<'_>, r: &mut Regs| {
            f(
                d,
                vmm,
                VmReturn {
                    vm: VmHandle(r.ebx),
                    ref_data: r.edx,
                    timed_out: r.flags & CF_MASK != 0,
                    after_time_out: r.flags & crate::ddk::ZF_MASK != 0,
                },
            );
            Carry::Clear
        });
        res(call(self.cx, timeout_ms, ref_data, cb))
    }

    /// `Hook_V86_Fault`: `f` is offered fault `vector` of V86 code (a DOS
    /// program) with the client registers current. Installed during
    /// `Sys_Critical_Init` it sees only the faults the VMM does not handle
    /// (the program has no handler of its own); installed later it sees
    /// every fault first. [`HookAction::Consume`] = handled (move CS:IP
    /// past the fault, or it recurs). `Err(FAILED)` for 2 or above 0x4F.
    pub fn hook_v86_fault<D: 'static, F: Fn(&D, &Vmm<'_>, u8, VmHandle) -> HookAction + 'static>(
        &self,
        vector: u8,
        f: F,
    ) -> Result<FaultHookHandle, VmmError> {
        let hook = appended(self.svc().hook_v86_fault())?;
        let cb = hook_callback(f);
        res(hook(self.cx, vector as u32, cb)).map(FaultHookHandle)
    }

    /// `Unhook_V86_Fault` (Windows 95): `Err(NOT_FOUND)` for a hook this
    /// device does not have.
    pub fn unhook_v86_fault(&self, vector: u8, hook: FaultHookHandle) -> Result<(), VmmError> {
        let f = appended(self.svc().unhook_v86_fault())?;
        res(f(self.cx, vector as u32, hook.0))
    }
}

/// Whose faults a fault hook sees.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum FaultMode {
    /// V86 code: a DOS program (`Hook_V86_Fault`).
    V86,
    /// Protected-mode ring-3 code: a Windows application or DLL
    /// (`Hook_PM_Fault`).
    Pm,
    /// Ring-0 code: the VMM and the devices (`Hook_VMM_Fault`).
    Vmm,
}

impl FaultMode {
    fn raw(self) -> u32 {
        match self {
            FaultMode::V86 => crate::abi::FAULT_MODE_V86,
            FaultMode::Pm => crate::abi::FAULT_MODE_PM,
            FaultMode::Vmm => crate::abi::FAULT_MODE_VMM,
        }
    }
}

/// `Get_Fault_Hook_Addrs`' answer: per mode the hook a fault is offered to
/// first, `None` when the VMM's own handling comes first.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct FaultHooks {
    /// EDX: V86 faults.
    pub v86: Option<FaultHookHandle>,
    /// ESI: faults of protected-mode ring-3 code.
    pub pm: Option<FaultHookHandle>,
    /// EDI: faults of ring-0 code.
    pub vmm: Option<FaultHookHandle>,
}

/// Fault hooks of protected-mode and ring-0 code (appended to the ABI: on
/// an older host these return `VmmError::NOT_AVAILABLE`).
impl Vmm<'_> {
    fn hook_fault_in<D: 'static, F: Fn(&D, &Vmm<'_>, u8, VmHandle) -> HookAction + 'static>(
        &self,
        mode: FaultMode,
        vector: u8,
        f: F,
    ) -> Result<FaultHookHandle, VmmError> {
        let hook = appended(self.svc().hook_fault())?;
        let cb = hook_callback(f);
        res(hook(self.cx, mode.raw(), vector as u32, cb)).map(FaultHookHandle)
    }

    /// `Hook_PM_Fault`: `f` is offered fault `vector` of protected-mode
    /// ring-3 code (a Rust module's [`crate::ring3::Ring3::fault`] in a
    /// protected-mode VM) with the client registers current, under the
    /// same rules as [`Vmm::hook_v86_fault`]: installed during
    /// `Sys_Critical_Init` it sees only what the VM has no handler for (no
    /// PM vector); installed later it sees every such fault first; the
    /// newest hook first. [`HookAction::Consume`] = handled (the code goes
    /// on after the faulting instruction); [`HookAction::PassOn`] is the
    /// DDK's jump to the previous handler. `Err(FAILED)` for 2 or above
    /// 0x4F.
    pub fn hook_pm_fault<D: 'static, F: Fn(&D, &Vmm<'_>, u8, VmHandle) -> HookAction + 'static>(
        &self,
        vector: u8,
        f: F,
    ) -> Result<FaultHookHandle, VmmError> {
        self.hook_fault_in(FaultMode::Pm, vector, f)
    }

    /// `Hook_VMM_Fault`: `f` is offered fault `vector` of ring-0 code, with
    /// the same ordering rules. The only ring-0 fault this VMM raises is
    /// the page fault (0Eh) of a device's [`Vmm::mem_read`] /
    /// [`Vmm::mem_write`] at a linear address inside no heap block; the
    /// hook gets the address as `fault_address` through
    /// [`Vmm::hook_vmm_fault_at`]. A hook that consumes it makes the
    /// access fail with `Err(FAILED)` and no violation. The hook runs as at
    /// interrupt time: only asynchronous services are legal in it.
    pub fn hook_vmm_fault<D: 'static, F: Fn(&D, &Vmm<'_>, u8, VmHandle) -> HookAction + 'static>(
        &self,
        vector: u8,
        f: F,
    ) -> Result<FaultHookHandle, VmmError> {
        self.hook_fault_in(FaultMode::Vmm, vector, f)
    }

    /// [`Vmm::hook_vmm_fault`] whose hook also gets EDX: the linear
    /// address of a page fault (the DDK's CR2).
    pub fn hook_vmm_fault_at<D: 'static, F: Fn(&D, &Vmm<'_>, u8, VmHandle, u32) -> HookAction + 'static>(
        &self,
        vector: u8,
        f: F,
    ) -> Result<FaultHookHandle, VmmError> {
        let hook = appended(self.svc().hook_fault())?;
        let cb = repeating(Named::<F>::new(), move |d: &D, vmm: &Vmm<'_>, r: &mut Regs| {
            match f(d, vmm, r.eax as u8, VmHandle(r.ebx), r.edx) {
                HookAction::Consume => Carry::Clear,
                HookAction::PassOn => Carry::Set,
            }
        });
        res(hook(self.cx, FaultMode::Vmm.raw(), vector as u32, cb)).map(FaultHookHandle)
    }

    /// `Unhook_PM_Fault` / `Unhook_VMM_Fault` (Windows 95; `FaultMode::V86`
    /// is `Unhook_V86_Fault`): `Err(NOT_FOUND)` for a hook this device does
    /// not have on `vector` in that mode.
    pub fn unhook_fault(&self, mode: FaultMode, vector: u8, hook: FaultHookHandle) -> Result<(), VmmError> {
        let f = appended(self.svc().unhook_fault())?;
        res(f(self.cx, mode.raw(), vector as u32, hook.0))
    }

    /// `Get_Fault_Hook_Addrs`: the hooks fault `vector` is offered to
    /// first, per mode. `Err(FAILED)` for 2 or above 0x4F.
    pub fn get_fault_hook_addrs(&self, vector: u8) -> Result<FaultHooks, VmmError> {
        let f = appended(self.svc().get_fault_hook_addrs())?;
        let a = res(f(self.cx, vector as u32))?;
        let h = |n: u32| (n != 0).then_some(FaultHookHandle(n));
        Ok(FaultHooks { v86: h(a.v86), pm: h(a.pm), vmm: h(a.vmm) })
    }
}
