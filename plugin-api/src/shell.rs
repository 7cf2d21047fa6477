//! [`Shell`]: the SHELL device's services (device 0x17) under their DDK
//! names, from [`Vmm::shell`].
//!
//! Naming: the register-convention services of Windows 3.x keep their
//! prefix (`SHELL_SYSMODAL_Message` is [`Shell::shell_sysmodal_message`]);
//! the C-convention services of Windows 95 drop `_SHELL_`
//! (`_SHELL_CallAtAppyTime` is [`Shell::call_at_appy_time`]). Callbacks are
//! closures that receive the registering device back as `&D`, like the
//! [`Vmm`] services; the DDK's reference data is whatever the closure
//! captures.
//!
//! Each method returns what the DDK service returns: a service refused by a
//! rule (an appy-time-only service outside appy time, a bad VM handle, ...)
//! returns the service's failure value, and the `violation` record in the
//! trace says why. SHELL must be loaded (`*SHELL` in the device list), and
//! the Windows 95 services exist only when the machine runs Windows 4.0:
//! otherwise the call is the fatal "Invalid VxD dynamic link call", as a
//! `VxDCall` to a missing service was.

use abi_stable::std_types::{RNone, RResult, RSlice, RSome, RStr};

use crate::abi::{Carry, HostCx, Regs, ShellServices_Ref, VmmError};
use crate::callback::{Named, once, repeating};
use crate::ddk::{
    CAAFL_RING0, CAAFL_TIMEOUT, SHEX_DWRESERVED, SHEX_DWSIZE, SHEX_DWTOTALSIZE, SHEX_IBDIR, SHEX_IBFILE, SHEX_IBOP,
    SHEX_IBPARAMS, SHEX_NCMDSHOW, SHEXPACKET_SIZE, SW_SHOWNORMAL,
};
use crate::guard::fatal_exit;
use crate::handles::{AppyHandle, EventHandle, FarPtr, HInstance, Hwnd, SysBHookHandle, VmHandle};
use crate::vmm::Vmm;

/// What an appy-time callback learns: the `dwFlags` SHELL passes, and the
/// VM it runs in.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct AppyTime {
    /// The current VM (the system VM at appy time).
    pub vm: VmHandle,
    /// `dwFlags`: `CAAFL_RING0` if the event was registered with it, and
    /// `CAAFL_TIMEOUT` if the time-out expired first.
    pub flags: u32,
}

impl AppyTime {
    /// The time-out expired before appy time came: this is *not* appy time,
    /// and the appy-time-only services must not be called.
    pub fn timed_out(&self) -> bool {
        self.flags & CAAFL_TIMEOUT != 0
    }

    /// The event was registered with `CAAFL_RING0`.
    pub fn ring0(&self) -> bool {
        self.flags & CAAFL_RING0 != 0
    }
}

/// A message a system broadcast hook sees (`uMsg`, `wParam`, `lParam`).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct SystemBroadcast {
    /// The current VM.
    pub vm: VmHandle,
    /// The message number.
    pub msg: u32,
    /// wParam.
    pub wparam: u32,
    /// lParam.
    pub lparam: u32,
}

/// A block of the message server's local heap (`_SHELL_LocalAllocEx`).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct LocalMemory {
    /// The 16:16 address, for ring-3 code and [`Shell::local_free`].
    pub address: FarPtr,
    /// The same bytes as a linear address, for [`Vmm::mem_read`] and
    /// [`Vmm::mem_write`].
    pub linear: u32,
}

/// A `SHEXPACKET` for [`Shell::shell_execute`], built from strings. The
/// packet carries no pointers: [`ShexPacket::to_bytes`] lays the strings
/// out in the baggage after the 32-byte header and stores their offsets.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct ShexPacket<'s> {
    /// The verb (`"open"`, `"print"`, `"explore"`); `None` is "open"
    /// (`shex_ibOp` 0).
    pub verb: Option<&'s str>,
    /// The file: a program or a document.
    pub file: &'s str,
    /// Parameters for a program (`None` for a document).
    pub params: Option<&'s str>,
    /// Working directory (`None`: the Windows directory).
    pub dir: Option<&'s str>,
    /// `nCmdShow`, an `SW_*` value.
    pub show: u32,
}

impl<'s> ShexPacket<'s> {
    /// Open `file` with the default verb, shown normally.
    pub const fn open(file: &'s str) -> Self {
        ShexPacket { verb: None, file, params: None, dir: None, show: SW_SHOWNORMAL }
    }

    /// Use `verb` instead of "open".
    pub const fn verb(mut self, verb: &'s str) -> Self {
        self.verb = Some(verb);
        self
    }

    /// Pass `params` to the program.
    pub const fn params(mut self, params: &'s str) -> Self {
        self.params = Some(params);
        self
    }

    /// Start in `dir`.
    pub const fn dir(mut self, dir: &'s str) -> Self {
        self.dir = Some(dir);
        self
    }

    /// Show the window with `show` (`SW_*`).
    pub const fn show(mut self, show: u32) -> Self {
        self.show = show;
        self
    }

    /// The packet's bytes, exactly as SHELL.H lays them out: `dwTotalSize`,
    /// `dwSize` = 32, the four offsets, `dwReserved` = 0, `nCmdShow`, then
    /// the NUL-terminated strings.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = vec![0u8; SHEXPACKET_SIZE as usize];
        let put = |bytes: &mut Vec<u8>, field: usize, text: Option<&str>| {
            let offset = match text {
                Some(t) => {
                    let at = bytes.len() as u32;
                    bytes.extend_from_slice(t.as_bytes());
                    bytes.push(0);
                    at
                }
                None => 0,
            };
            bytes[field..field + 4].copy_from_slice(&offset.to_le_bytes());
        };
        put(&mut bytes, SHEX_IBOP, self.verb);
        put(&mut bytes, SHEX_IBFILE, Some(self.file));
        put(&mut bytes, SHEX_IBPARAMS, self.params);
        put(&mut bytes, SHEX_IBDIR, self.dir);
        let total = bytes.len() as u32;
        bytes[SHEX_DWTOTALSIZE..SHEX_DWTOTALSIZE + 4].copy_from_slice(&total.to_le_bytes());
        bytes[SHEX_DWSIZE..SHEX_DWSIZE + 4].copy_from_slice(&SHEXPACKET_SIZE.to_le_bytes());
        bytes[SHEX_DWRESERVED..SHEX_DWRESERVED + 4].copy_from_slice(&0u32.to_le_bytes());
        bytes[SHEX_NCMDSHOW..SHEX_NCMDSHOW + 4].copy_from_slice(&self.show.to_le_bytes());
        bytes
    }
}

/// The SHELL services handle: [`Vmm::shell`].
#[derive(Copy, Clone)]
pub struct Shell<'a> {
    cx: &'a HostCx,
}

impl core::fmt::Debug for Shell<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Shell").finish_non_exhaustive()
    }
}

/// The value of a service, its failure value when it was refused, and no
/// return at all after the fatal "Invalid VxD dynamic link call".
fn value<T>(r: RResult<T, VmmError>, failed: T) -> T {
    match r.into_result() {
        Ok(v) => v,
        Err(VmmError::FATAL) => fatal_exit(),
        Err(_) => failed,
    }
}

/// A `Result` service, unwinding after a fatal error.
fn result<T>(r: RResult<T, VmmError>) -> Result<T, VmmError> {
    match r.into_result() {
        Err(VmmError::FATAL) => fatal_exit(),
        other => other,
    }
}

fn non_zero(v: u32) -> Option<u32> {
    (v != 0).then_some(v)
}

impl<'a> Shell<'a> {
    /// Wrap the context of a host call.
    pub fn new(cx: &'a HostCx) -> Self {
        Shell { cx }
    }

    fn svc(&self) -> ShellServices_Ref {
        self.cx.services.shell()
    }

    // ---- Windows 3.x services ---------------------------------------------------

    /// `SHELL_Get_Version`: `(major, minor)`, 4.0 under Windows 95.
    pub fn shell_get_version(&self) -> (u8, u8) {
        let v = value((self.svc().shell_get_version())(self.cx), 0);
        ((v >> 8) as u8, v as u8)
    }

    /// `SHELL_Resolve_Contention`: `contender` (the current VM) wants a
    /// device `owner` holds; SHELL asks the user with a system-modal Yes/No
    /// message. The winner, or `None` when it could not be resolved (CF
    /// set).
    pub fn shell_resolve_contention(&self, owner: VmHandle, contender: VmHandle, device: &str) -> Option<VmHandle> {
        match (self.svc().shell_resolve_contention())(self.cx, owner.0, contender.0, RStr::from_str(device))
            .into_result()
        {
            Ok(winner) => Some(VmHandle(winner)),
            Err(VmmError::FATAL) => fatal_exit(),
            Err(_) => None,
        }
    }

    /// `SHELL_SYSMODAL_Message`: show a system-modal message box for `vm`
    /// and wait for the answer (`IDOK`, `IDYES`, ...). `flags` are `MB_*`;
    /// `MB_SYSTEMMODAL` is added as SHELL.H's wrapper does. `caption` `None`
    /// is the standard caption. The answer of a run comes from the manifest
    /// (`[shell] answers`, then `[windows] message_box_answer`); 0 if the
    /// call was refused.
    pub fn shell_sysmodal_message(&self, vm: VmHandle, flags: u32, text: &str, caption: Option<&str>) -> u32 {
        let caption = match caption {
            Some(c) => RSome(RStr::from_str(c)),
            None => RNone,
        };
        value((self.svc().shell_sysmodal_message())(self.cx, vm.0, flags, RStr::from_str(text), caption), 0)
    }

    /// `SHELL_Message`: queue a message box for `vm` and return at once;
    /// `f` gets the answer when the user gives it. The event handle, or
    /// `None` if the message could not be queued (CF set: fall back to
    /// [`Shell::shell_sysmodal_message`]).
    pub fn shell_message<D: 'static>(
        &self,
        vm: VmHandle,
        flags: u32,
        text: &str,
        caption: Option<&str>,
        f: impl FnOnce(&D, &Vmm<'_>, u32) + 'static,
    ) -> Option<EventHandle> {
        let cb = once(Named::of(&f), move |d: &D, vmm: &Vmm<'_>, r: &mut Regs| {
            f(d, vmm, r.eax);
            Carry::Clear
        });
        let caption = match caption {
            Some(c) => RSome(RStr::from_str(c)),
            None => RNone,
        };
        let r = (self.svc().shell_message())(self.cx, vm.0, flags, RStr::from_str(text), caption, RSome(cb));
        non_zero(value(r, 0)).map(EventHandle)
    }

    /// `SHELL_GetVMInfo`: the `SGVMI_*` bits of `vm` (0 when refused).
    /// Not valid during the VM's `Create_VM`.
    pub fn shell_get_vm_info(&self, vm: VmHandle) -> u32 {
        value((self.svc().shell_get_vm_info())(self.cx, vm.0), 0)
    }

    // ---- posting messages ----------------------------------------------------------

    /// `_SHELL_PostMessage`: have SHELL post `msg` to `hwnd` in the system
    /// VM. `msg`'s high word takes `SPM_UM_DONOTWAITFORCRIT` and
    /// `SPM_UM_ALWAYSSCHEDULE`; a low word of `WM_NULL` posts nothing.
    /// Callable at interrupt time. Whether the post was queued.
    pub fn post_message(&self, hwnd: Hwnd, msg: u32, wparam: u16, lparam: u32) -> bool {
        let r = (self.svc().post_message())(self.cx, hwnd.0 as u32, msg, wparam as u32, lparam, RNone);
        value(r, 0) != 0
    }

    /// [`Shell::post_message`] with a completion callback: `f` learns
    /// whether `PostMessage` posted the message (`false`: the queue was
    /// full). It runs in the system VM boosted by `HIGH_PRI_DEVICE_BOOST`.
    pub fn post_message_with_callback<D: 'static>(
        &self,
        hwnd: Hwnd,
        msg: u32,
        wparam: u16,
        lparam: u32,
        f: impl FnOnce(&D, &Vmm<'_>, bool) + 'static,
    ) -> bool {
        let cb = once(Named::of(&f), move |d: &D, vmm: &Vmm<'_>, r: &mut Regs| {
            f(d, vmm, r.eax != 0);
            Carry::Clear
        });
        let r = (self.svc().post_message())(self.cx, hwnd.0 as u32, msg, wparam as u32, lparam, RSome(cb));
        value(r, 0) != 0
    }

    /// `_SHELL_PostShellMessage`: post wParam and lParam to the shell window
    /// (the first window of the first `[windows] load` application).
    /// Whether it was posted.
    pub fn post_shell_message(&self, wparam: u16, lparam: u32) -> bool {
        value((self.svc().post_shell_message())(self.cx, wparam as u32, lparam), 0) != 0
    }

    // ---- appy time ---------------------------------------------------------------------

    /// `_SHELL_QueryAppyTimeAvailable`: 0 when appy-time events cannot be
    /// dispatched (Windows has not finished starting, shutdown has begun,
    /// or the message server faulted), else `QAAFL_APPYAVAIL`, plus
    /// `QAAFL_APPYNOW` inside an appy-time callback. Asynchronous.
    pub fn query_appy_time_available(&self) -> u32 {
        value((self.svc().query_appy_time_available())(self.cx), 0)
    }

    /// `_SHELL_CallAtAppyTime`: call `f` once, at appy time, in the system
    /// VM. `flags`: `CAAFL_RING0`, `CAAFL_TIMEOUT` (then `f` runs after
    /// `timeout_ms` at the latest, told [`AppyTime::timed_out`]). Events
    /// wait while appy time is unavailable and never run once shutdown
    /// begins. Asynchronous. `None`: out of memory.
    pub fn call_at_appy_time<D: 'static>(
        &self,
        flags: u32,
        timeout_ms: u32,
        f: impl FnOnce(&D, &Vmm<'_>, AppyTime) + 'static,
    ) -> Option<AppyHandle> {
        let cb = once(Named::of(&f), move |d: &D, vmm: &Vmm<'_>, r: &mut Regs| {
            f(d, vmm, AppyTime { vm: VmHandle(r.ebx), flags: r.eax });
            Carry::Clear
        });
        non_zero(value((self.svc().call_at_appy_time())(self.cx, cb, flags, timeout_ms), 0)).map(AppyHandle)
    }

    /// `_SHELL_CancelAppyTimeEvent` (a null handle is a no-op). Never use a
    /// handle whose callback has run.
    pub fn cancel_appy_time_event(&self, handle: AppyHandle) -> Result<(), VmmError> {
        result((self.svc().cancel_appy_time_event())(self.cx, handle.0))
    }

    // ---- broadcasts ---------------------------------------------------------------------

    /// `_SHELL_BroadcastSystemMessage`: send `msg` to the recipients in
    /// `*recipients` (`BSM_*`; `None` is everyone), which receives the
    /// classes that got it. Windows' top-level windows are reached only at
    /// appy time; VxDs (the broadcast hooks) always. `BSM_ERROR_SUCCESS`,
    /// `BSM_ERROR_SOMEONE_FAILED` (a `BSF_QUERY` recipient said no) or
    /// `BSM_ERROR_OUT_OF_MEMORY` (-1, could not broadcast).
    pub fn broadcast_system_message(
        &self,
        flags: u32,
        recipients: Option<&mut u32>,
        msg: u16,
        wparam: u16,
        lparam: u32,
    ) -> u32 {
        let given = match &recipients {
            Some(r) => RSome(**r),
            None => RNone,
        };
        let r = (self.svc().broadcast_system_message())(self.cx, flags, given, msg as u32, wparam as u32, lparam);
        match r.into_result() {
            Ok(out) => {
                if let Some(r) = recipients {
                    *r = out.recipients;
                }
                out.result
            }
            Err(VmmError::FATAL) => fatal_exit(),
            Err(_) => crate::ddk::BSM_ERROR_OUT_OF_MEMORY,
        }
    }

    /// `_SHELL_HookSystemBroadcast`: `f` sees every system broadcast, in
    /// ascending `call_order` (`SBH_CALL_ORDER_*`; equal orders in
    /// registration order). Its answer matters for `BSF_QUERY` broadcasts:
    /// 0 refuses and stops the broadcast; return 1 for messages you do not
    /// know.
    pub fn hook_system_broadcast<D: 'static, F: Fn(&D, &Vmm<'_>, SystemBroadcast) -> u32 + 'static>(
        &self,
        call_order: u32,
        f: F,
    ) -> Option<SysBHookHandle> {
        let cb = repeating(Named::<F>::new(), move |d: &D, vmm: &Vmm<'_>, r: &mut Regs| {
            r.eax = f(d, vmm, SystemBroadcast { vm: VmHandle(r.ebx), msg: r.eax, wparam: r.ecx, lparam: r.edx });
            Carry::Clear
        });
        non_zero(value((self.svc().hook_system_broadcast())(self.cx, cb, call_order), 0)).map(SysBHookHandle)
    }

    /// `_SHELL_UnhookSystemBroadcast` (a null handle is a no-op).
    pub fn unhook_system_broadcast(&self, handle: SysBHookHandle) -> Result<(), VmmError> {
        result((self.svc().unhook_system_broadcast())(self.cx, handle.0))
    }

    // ---- the message server's local heap (appy time only) ---------------------------------

    /// `_SHELL_LocalAllocEx`: allocate from the message server's 64 KB local
    /// heap (be frugal). `flags`: `LMEM_ZEROINIT`, `LMEM_STRING` (`data` is a
    /// NUL-terminated string and the block its length plus one; `bytes` is
    /// ignored). `data` is copied in. Appy time only; `None` on failure.
    pub fn local_alloc_ex(&self, flags: u32, bytes: u32, data: Option<&[u8]>) -> Option<LocalMemory> {
        let data = match data {
            Some(d) => RSome(RSlice::from_slice(d)),
            None => RNone,
        };
        let block = value((self.svc().local_alloc_ex())(self.cx, flags, bytes, data), Default::default());
        (block.address != 0).then(|| LocalMemory { address: FarPtr::from_u32(block.address), linear: block.linear })
    }

    /// `_SHELL_LocalFree`: free a block from [`Shell::local_alloc_ex`].
    /// Appy time only. Whether it was freed.
    pub fn local_free(&self, address: FarPtr) -> bool {
        value((self.svc().local_free())(self.cx, address.to_u32()), address.to_u32()) == 0
    }

    // ---- 16-bit DLLs (appy time only) -----------------------------------------------------

    /// `_SHELL_LoadLibrary`: load a 16-bit DLL into the message server; the
    /// module handle, or the `LoadLibrary` error (0-31: 2 file not found,
    /// 11 not a DLL, 20 `LibMain` refused). Appy time only.
    pub fn load_library(&self, name: &str) -> Result<HInstance, u32> {
        let v = value((self.svc().load_library())(self.cx, RStr::from_str(name)), 0);
        if v < 32 { Err(v) } else { Ok(HInstance(v as u16)) }
    }

    /// `_SHELL_FreeLibrary`. Appy time only.
    pub fn free_library(&self, module: HInstance) {
        value((self.svc().free_library())(self.cx, module.0 as u32), ())
    }

    /// `_SHELL_GetProcAddress` by name: the export's 16:16 address. Appy
    /// time only.
    pub fn get_proc_address(&self, module: HInstance, name: &str) -> Option<FarPtr> {
        let v = value((self.svc().get_proc_address())(self.cx, module.0 as u32, RStr::from_str(name), 0), 0);
        non_zero(v).map(FarPtr::from_u32)
    }

    /// `_SHELL_GetProcAddress` by ordinal. Appy time only.
    pub fn get_proc_address_ordinal(&self, module: HInstance, ordinal: u16) -> Option<FarPtr> {
        let v = value((self.svc().get_proc_address())(self.cx, module.0 as u32, RStr::from_str(""), ordinal), 0);
        non_zero(v).map(FarPtr::from_u32)
    }

    /// `_SHELL_CallDll`: load `dll`, call its export `proc_name` with `args`
    /// (the bytes as they lie on the ring-3 stack after the pushes: build
    /// them with [`crate::PascalArgs::encode`]), free the DLL. The
    /// function's DX:AX; 0 if the export does not exist; 0-31 if the DLL
    /// did not load (indistinguishable from a small result, as in Windows).
    /// Appy time only.
    pub fn call_dll(&self, dll: &str, proc_name: &str, args: &[u8]) -> u32 {
        self.raw_call_dll(dll, proc_name, 0, 0, args)
    }

    /// `_SHELL_CallDll` by export ordinal.
    pub fn call_dll_ordinal(&self, dll: &str, ordinal: u16, args: &[u8]) -> u32 {
        self.raw_call_dll(dll, "", ordinal, 0, args)
    }

    /// `_SHELL_CallDll` with `lpszDll` 0: call the 16-bit procedure at
    /// `target` (from [`Shell::get_proc_address`] or registered by an
    /// application), the only way to call ring-3 code at appy time.
    pub fn call_dll_address(&self, target: FarPtr, args: &[u8]) -> u32 {
        self.raw_call_dll("", "", 0, target.to_u32(), args)
    }

    fn raw_call_dll(&self, dll: &str, proc_name: &str, ordinal: u16, address: u32, args: &[u8]) -> u32 {
        let r = (self.svc().call_dll())(
            self.cx,
            RStr::from_str(dll),
            RStr::from_str(proc_name),
            ordinal,
            address,
            RSlice::from_slice(args),
        );
        value(r, 0)
    }

    // ---- ShellExecute (appy time only) ----------------------------------------------------

    /// `_SHELL_ShellExecute`: open (or print, ...) a file the way Program
    /// Manager does: a program the manifest's `[programs]` knows by name
    /// starts with the parameters; a document starts the program its
    /// extension is associated with. The new module's handle, or the error
    /// (`SE_ERR_FNF`, `SE_ERR_NOASSOC`, ...). Appy time only.
    pub fn shell_execute(&self, packet: &ShexPacket<'_>) -> Result<HInstance, u32> {
        let v = self.shell_execute_raw(&packet.to_bytes());
        if v > 32 { Ok(HInstance(v as u16)) } else { Err(v) }
    }

    /// `_SHELL_ShellExecute` with the packet's raw bytes (the buffer may be
    /// longer than `shex_dwTotalSize`). Above 32 on success.
    pub fn shell_execute_raw(&self, packet: &[u8]) -> u32 {
        value((self.svc().shell_execute())(self.cx, RSlice::from_slice(packet)), 0)
    }
}

impl<'a> Vmm<'a> {
    /// The SHELL device's services (appy time, message boxes, broadcasts,
    /// `ShellExecute`, `_SHELL_PostMessage`).
    pub fn shell(&self) -> Shell<'a> {
        Shell::new(self.host_cx())
    }
}

#[cfg(test)]
mod tests {
    use super::ShexPacket;

    #[test]
    fn a_packet_is_laid_out_as_in_shell_h() {
        let p = ShexPacket::open("README.TXT").params("/x").to_bytes();
        let dword = |at: usize| u32::from_le_bytes(p[at..at + 4].try_into().unwrap());
        assert_eq!(dword(0), p.len() as u32, "dwTotalSize");
        assert_eq!(dword(4), 32, "dwSize");
        assert_eq!(dword(8), 0, "ibOp: 0 is open");
        assert_eq!(dword(12), 32, "the file is the first baggage string");
        assert_eq!(&p[32..43], b"README.TXT\0");
        assert_eq!(dword(16), 43);
        assert_eq!(&p[43..46], b"/x\0");
        assert_eq!(dword(20), 0, "ibDir: the Windows directory");
        assert_eq!(dword(24), 0, "dwReserved");
        assert_eq!(dword(28), 1, "SW_SHOWNORMAL");
    }
}
