//! VPOSTD.386: any VM posts a message to a Windows application.
//!
//! A port of Microsoft's VPOSTD sample (KB Q72899, DDK 3.1). A VxD cannot
//! call `PostMessage`, but it can call a callback in a Windows DLL that
//! calls it. So:
//!
//! 1. POSTHOST.DLL registers a window handle and the far address of its
//!    callback through VPOSTD's **protected-mode API** (system VM only):
//!    AX = window handle, CX:BX = callback (0:0 unregisters; anything but
//!    an exported procedure of a loaded module is refused with AX = 6).
//! 2. A DOS program in any VM posts through the **V86 API**: BX = wParam,
//!    DX:AX = lParam. CF comes back set when no application has registered
//!    (AX = [`ERR_NOT_REGISTERED`]) or too many posts are pending
//!    (AX = [`ERR_TOO_MANY_PENDING`]).
//! 3. Each accepted post is queued inside the device and one priority event
//!    is scheduled on the system VM with `PEF_WAIT_FOR_STI |
//!    PEF_WAIT_NOT_CRIT`: Windows code may only be entered when the system
//!    VM has interrupts enabled and nobody holds the critical section.
//! 4. For each post it hands over, the event handler saves the client
//!    state, begins nested execution, pushes `hwnd`, `WM_USER + 0x100`,
//!    `wParam` and `lParam` in PASCAL order, `Simulate_Far_Call`s the
//!    callback, `Resume_Exec`s until it returns, reads its BOOL from AX,
//!    ends the nest and restores the client state.
//! 5. If `PostMessage` reported a full queue (AX = 0), the post stays first
//!    in line and delivery resumes after `[VPOSTD] RetryInterval`
//!    milliseconds (default 100) of system-VM time, with `Set_VM_Time_Out`,
//!    as Walter Oney's version of the sample does.
//!
//! The device is re-entrant and order-independent (KB Q75009): a post may
//! arrive (even at interrupt time, through the `VPOSTD_Post` service) before
//! the previous event ran, events run in any order, and an event may even
//! be dispatched inside another event's nested execution. Whichever event
//! runs first hands every queued post over, oldest first; the others find
//! the queue empty, or a delivery or retry already in charge, and return.
//! So each post reaches `PostMessage` in the order it was made, exactly
//! once per attempt, and none is lost. No borrow of the queue is held
//! across a VMM service.
//!
//! Per-VM counters (posts accepted and refused) live in the VM control
//! block, in an area reserved with `_Allocate_Device_CB_Area` at
//! `Device_Init`; failure to get it is `Fatal_Memory_Error`, as in the
//! original.
//!
//! Every step is written to the trace as a `note` record (`registered`,
//! `post_queued`, `post_refused`, `post_called`, `post_retry`,
//! `post_requeued`, `post_dropped`): the fields are documented in `docs/trace.md`.

use core::cell::Cell;
use std::collections::VecDeque;

use vmm_plugin_api::prelude::*;

/// VPOSTD's device ID (RBIL INT 2Fh/1684h BX=4321h).
pub const VPOSTD_DEVICE_ID: u16 = 0x4321;
/// The message the callback posts: `WM_USER + 0x100`.
pub const WM_VPOSTD: u16 = WM_USER + 0x100;

/// Service 1, `VPOSTD_Post`: post from another VxD, callable at interrupt
/// time. EBX = the VM to attribute the post to, ECX = wParam (low word),
/// EDX = lParam. CF set with EAX = an `ERR_*` code if refused.
pub const VPOSTD_POST: u16 = 1;
/// Service 2, `VPOSTD_Get_Stats`: EBX = a VM; EAX = posts accepted from it,
/// ECX = posts refused. CF set for an invalid VM handle.
pub const VPOSTD_GET_STATS: u16 = 2;

/// AX when CF is set: no Windows application has registered.
pub const ERR_NOT_REGISTERED: u16 = 1;
/// AX when CF is set: `[VPOSTD] MaxPending` posts are already waiting.
pub const ERR_TOO_MANY_PENDING: u16 = 2;
/// AX when CF is set: the PM API was called from a VM other than the
/// system VM.
pub const ERR_NOT_SYSTEM_VM: u16 = 3;
/// AX when CF is set: registration with window handle 0.
pub const ERR_INVALID_HWND: u16 = 4;
/// AX when CF is set: the VM handle given to a service is not valid.
pub const ERR_INVALID_VM: u16 = 5;
/// AX when CF is set: registration with a callback that is not an exported
/// procedure of a loaded ring-3 module (such as VPOSTD's own API entry).
pub const ERR_INVALID_CALLBACK: u16 = 6;

/// Default of `[VPOSTD] RetryInterval` (ms).
pub const DEFAULT_RETRY_MS: u32 = 100;
/// Default of `[VPOSTD] MaxPending`.
pub const DEFAULT_MAX_PENDING: u32 = 1024;

/// Offsets in the per-VM control-block area.
const CB_ACCEPTED: u32 = 0;
const CB_REFUSED: u32 = 4;
const CB_BYTES: u32 = 8;

/// The registered window and callback.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
struct Registration {
    hwnd: Hwnd,
    callback: FarPtr,
}

/// One post waiting to be delivered.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
struct Post {
    /// The device's number for the post (1, 2, ...), in trace notes.
    id: u32,
    /// The VM that posted.
    source: VmHandle,
    wparam: u16,
    lparam: u32,
    /// Calls of the callback so far.
    attempts: u32,
}

/// The device.
pub struct Vpostd {
    registration: Cell<Option<Registration>>,
    /// Posts not yet accepted by `PostMessage`, oldest first.
    queue: ReentrancyCell<VecDeque<Post>>,
    /// A delivery is running (possibly nested inside its own `Resume_Exec`).
    delivering: Cell<bool>,
    /// `PostMessage` found the queue full; a retry time-out is set.
    retry_pending: Cell<bool>,
    next_id: Cell<u32>,
    retry_ms: Cell<u32>,
    max_pending: Cell<u32>,
    /// Offset of the per-VM counters in the control block.
    cb_offset: Cell<Option<u32>>,
    /// Events scheduled and not yet run (cancelled at
    /// `Sys_Dynamic_Device_Exit`).
    outstanding: ReentrancyCell<Vec<EventHandle>>,
    /// The retry time-out, while one is set.
    retry_timer: Cell<Option<TimeoutHandle>>,
    /// The system VM's handle, once asked for.
    sys: Cell<Option<VmHandle>>,
}

impl VxD for Vpostd {
    const DEVICE: Device = Device::new("VPOSTD")
        .version(3, 10)
        .id(VPOSTD_DEVICE_ID)
        .init_order(UNDEFINED_INIT_ORDER)
        .sdk_version(DDK_VERSION_310)
        .v86_api()
        .pm_api()
        .dynamic()
        .services(&["VPOSTD_Get_Version", "VPOSTD_Post", "VPOSTD_Get_Stats"]);

    fn create(_vmm: &Vmm<'_>) -> Result<Self, String> {
        Ok(Vpostd {
            registration: Cell::new(None),
            queue: ReentrancyCell::new("Vpostd::queue", VecDeque::new()),
            delivering: Cell::new(false),
            retry_pending: Cell::new(false),
            next_id: Cell::new(1),
            retry_ms: Cell::new(DEFAULT_RETRY_MS),
            max_pending: Cell::new(DEFAULT_MAX_PENDING),
            cb_offset: Cell::new(None),
            outstanding: ReentrancyCell::new("Vpostd::outstanding", Vec::new()),
            retry_timer: Cell::new(None),
            sys: Cell::new(None),
        })
    }

    fn control(&self, vmm: &Vmm<'_>, msg: ControlMessage) -> Carry {
        match msg.message {
            DEVICE_INIT => self.device_init(vmm),
            SYS_DYNAMIC_DEVICE_INIT => {
                self.device_init(vmm);
                self.resume(vmm);
            }
            SYS_DYNAMIC_DEVICE_EXIT => self.leave(vmm),
            SYSTEM_EXIT => self.drop_all(vmm, "shutdown"),
            _ => {}
        }
        Carry::Clear
    }

    /// Hot reload: the registration, the posts not yet delivered and the
    /// counters' place in the control block go to the next version.
    fn save_state(&self, _vmm: &Vmm<'_>) -> Option<Vec<u8>> {
        let state = State {
            registration: self.registration.get(),
            posts: self.queue.borrow().iter().copied().collect(),
            next_id: self.next_id.get(),
            cb_offset: self.cb_offset.get(),
            retry_pending: self.retry_pending.get(),
        };
        Some(state.encode())
    }

    fn restore_state(&self, _vmm: &Vmm<'_>, bytes: &[u8]) -> Result<(), String> {
        let state = State::decode(bytes)?;
        self.registration.set(state.registration);
        *self.queue.borrow_mut() = state.posts.into_iter().collect();
        self.next_id.set(state.next_id);
        self.cb_offset.set(state.cb_offset);
        self.retry_pending.set(state.retry_pending);
        Ok(())
    }

    /// The DLL side: AX = window handle, CX:BX = callback (0:0 unregisters).
    fn pm_api(&self, vmm: &Vmm<'_>, call: ApiCall<'_>) {
        let c = call.client;
        if !vmm.test_sys_vm_handle(call.vm) {
            let _ =
                vmm.trace_note("registration_refused", &[("vm", call.vm.into()), ("reason", "not_system_vm".into())]);
            return fail(&c, ERR_NOT_SYSTEM_VM);
        }
        let hwnd = Hwnd(c.ax());
        let callback = FarPtr::new(c.cx(), c.bx());
        if callback.is_null() {
            let old = self.registration.take();
            let _ =
                vmm.trace_note("unregistered", &[("hwnd", hwnd.0.into()), ("was_registered", old.is_some().into())]);
            c.set_carry(false);
            return;
        }
        if hwnd.is_null() {
            let _ =
                vmm.trace_note("registration_refused", &[("vm", call.vm.into()), ("reason", "invalid_hwnd".into())]);
            return fail(&c, ERR_INVALID_HWND);
        }
        // Only a DLL's export can be called back (a host too old to say is
        // trusted, as before).
        if vmm.is_ring3_export(callback) == Ok(false) {
            let text = callback.to_string();
            let _ = vmm.trace_note(
                "registration_refused",
                &[("vm", call.vm.into()), ("reason", "invalid_callback".into()), ("callback", text.as_str().into())],
            );
            return fail(&c, ERR_INVALID_CALLBACK);
        }
        let replaced = self.registration.replace(Some(Registration { hwnd, callback }));
        let text = callback.to_string();
        let _ = vmm.trace_note(
            "registered",
            &[("hwnd", hwnd.0.into()), ("callback", text.as_str().into()), ("replaced", replaced.is_some().into())],
        );
        c.set_carry(false);
    }

    /// The DOS side: BX = wParam, DX:AX = lParam.
    fn v86_api(&self, vmm: &Vmm<'_>, call: ApiCall<'_>) {
        let c = call.client;
        match self.accept(vmm, call.vm, c.bx(), c.dx_ax()) {
            Ok(()) => c.set_carry(false),
            Err(code) => fail(&c, code),
        }
    }

    fn service(&self, vmm: &Vmm<'_>, ordinal: u16, call: &mut ServiceCall) -> Carry {
        let vm = VmHandle(call.regs.ebx);
        if !vmm.validate_vm_handle(vm) {
            call.regs.eax = ERR_INVALID_VM as u32;
            return Carry::Set;
        }
        match ordinal {
            VPOSTD_POST => match self.accept(vmm, vm, call.regs.ecx as u16, call.regs.edx) {
                Ok(()) => Carry::Clear,
                Err(code) => {
                    call.regs.eax = code as u32;
                    Carry::Set
                }
            },
            VPOSTD_GET_STATS => {
                let (accepted, refused) = self.stats(vmm, vm);
                call.regs.eax = accepted;
                call.regs.ecx = refused;
                Carry::Clear
            }
            _ => Carry::Set,
        }
    }
}

fn fail(c: &Client<'_>, code: u16) {
    c.set_ax(code);
    c.set_carry(true);
}

impl Vpostd {
    fn device_init(&self, vmm: &Vmm<'_>) {
        self.retry_ms.set(setting(vmm, "RetryInterval", DEFAULT_RETRY_MS, 1..=60_000));
        self.max_pending.set(setting(vmm, "MaxPending", DEFAULT_MAX_PENDING, 1..=65_535));
        // A reloaded VPOSTD keeps the area its previous version reserved.
        if self.cb_offset.get().is_none() {
            match vmm.allocate_device_cb_area(CB_BYTES, 0) {
                Some(offset) => self.cb_offset.set(Some(offset)),
                None => vmm.fatal_memory_error(),
            }
        }
        info!("VPOSTD: retry interval {} ms, at most {} pending posts", self.retry_ms.get(), self.max_pending.get());
    }

    /// After a reload: the posts handed over still need their delivery (or
    /// their retry, if the window's queue was full).
    fn resume(&self, vmm: &Vmm<'_>) {
        let pending = self.pending();
        if pending == 0 {
            self.retry_pending.set(false);
            return;
        }
        let first = self.queue.borrow()[0];
        if self.retry_pending.replace(false) {
            self.retry(vmm, self.sys_vm(vmm), first);
        } else {
            self.schedule(vmm, first.id);
        }
    }

    /// `Sys_Dynamic_Device_Exit`: VXDLDR cleans nothing up, so VPOSTD
    /// cancels its pending events and its retry time-out itself. The posts
    /// stay queued: a reload hands them to the next version.
    fn leave(&self, vmm: &Vmm<'_>) {
        let events = std::mem::take(&mut *self.outstanding.borrow_mut());
        for h in events {
            if let Err(e) = vmm.cancel_priority_vm_event(h) {
                warn!("VPOSTD: cannot cancel event {h:?}: {e}");
            }
        }
        if let Some(t) = self.retry_timer.take() {
            let _ = vmm.cancel_time_out(t);
        }
        let pending = self.pending();
        let _ = vmm.trace_note(
            "unloading",
            &[("pending", pending.into()), ("retry_pending", self.retry_pending.get().into())],
        );
    }

    /// The system VM (its handle never changes while Windows runs).
    fn sys_vm(&self, vmm: &Vmm<'_>) -> VmHandle {
        match self.sys.get() {
            Some(h) => h,
            None => {
                let h = vmm.get_sys_vm_handle();
                self.sys.set(Some(h));
                h
            }
        }
    }

    /// Posts not yet accepted by `PostMessage`.
    fn pending(&self) -> usize {
        self.queue.borrow().len()
    }

    /// Take a post from `source`, or refuse it with an `ERR_*` code.
    fn accept(&self, vmm: &Vmm<'_>, source: VmHandle, wparam: u16, lparam: u32) -> Result<(), u16> {
        let refused = if self.registration.get().is_none() {
            Some((ERR_NOT_REGISTERED, "not_registered"))
        } else if self.pending() >= self.max_pending.get() as usize {
            Some((ERR_TOO_MANY_PENDING, "too_many_pending"))
        } else {
            None
        };
        if let Some((code, reason)) = refused {
            self.count(vmm, source, CB_REFUSED);
            let _ = vmm.trace_note(
                "post_refused",
                &[
                    ("vm", source.into()),
                    ("wparam", wparam.into()),
                    ("lparam", lparam.into()),
                    ("reason", reason.into()),
                ],
            );
            return Err(code);
        }
        let id = self.next_id.get();
        self.next_id.set(id.wrapping_add(1));
        self.count(vmm, source, CB_ACCEPTED);
        self.queue.borrow_mut().push_back(Post { id, source, wparam, lparam, attempts: 0 });
        let pending = self.pending();
        let _ = vmm.trace_note(
            "post_queued",
            &[
                ("post", id.into()),
                ("vm", source.into()),
                ("wparam", wparam.into()),
                ("lparam", lparam.into()),
                ("msg", WM_VPOSTD.into()),
                ("pending", pending.into()),
            ],
        );
        self.schedule(vmm, id);
        Ok(())
    }

    /// One priority event on the system VM for one queued post. The event
    /// may run inline (when the system VM is current and may be entered).
    fn schedule(&self, vmm: &Vmm<'_>, id: u32) {
        let sys = self.sys_vm(vmm);
        let scheduled = vmm.call_priority_vm_event(
            HIGH_PRI_DEVICE_BOOST as i32,
            sys,
            PEF_WAIT_FOR_STI | PEF_WAIT_NOT_CRIT,
            0,
            Vpostd::deliver,
        );
        match scheduled {
            // Null: it already ran inline.
            Ok(h) if h.is_null() => {}
            Ok(h) => self.outstanding.borrow_mut().push(h),
            // Without an event the post might wait forever: take it back.
            Err(e) => self.drop_queued(vmm, id, "no_event", &e.to_string()),
        }
    }

    /// Take post `id` out of the queue and report it dropped.
    fn drop_queued(&self, vmm: &Vmm<'_>, id: u32, reason: &str, detail: &str) {
        let post = {
            let mut q = self.queue.borrow_mut();
            q.iter().position(|p| p.id == id).and_then(|i| q.remove(i))
        };
        if let Some(post) = post {
            self.dropped(vmm, &post, reason, detail);
        }
    }

    /// The event handler: runs in the system VM with interrupts enabled and
    /// the critical section free, and hands every queued post to the
    /// callback, oldest first. Whichever event runs first does the work, so
    /// the order events run in does not matter; an event that finds a
    /// delivery already running (it was dispatched inside that delivery's
    /// nested execution) or a retry pending leaves the queue to them.
    fn deliver(&self, vmm: &Vmm<'_>, ev: Event) {
        self.outstanding.borrow_mut().retain(|h| *h != ev.handle);
        if self.delivering.get() || self.retry_pending.get() {
            return;
        }
        self.delivering.set(true);
        loop {
            let Some(mut post) = self.queue.borrow_mut().pop_front() else { break };
            let Some(reg) = self.registration.get() else {
                self.dropped(vmm, &post, "unregistered", "the application unregistered before delivery");
                continue;
            };
            post.attempts += 1;
            let result = call_callback(vmm, ev.vm, reg, &post);
            if let Ok(accepted) = result {
                let _ = vmm.trace_note(
                    "post_called",
                    &[
                        ("post", post.id.into()),
                        ("vm", post.source.into()),
                        ("wparam", post.wparam.into()),
                        ("lparam", post.lparam.into()),
                        ("attempt", post.attempts.into()),
                        ("result", accepted.into()),
                    ],
                );
            }
            match result {
                Ok(true) => {}
                Ok(false) => {
                    // The window's queue is full: keep the post first in
                    // line and try again later; later posts wait behind it.
                    self.queue.borrow_mut().push_front(post);
                    self.retry(vmm, ev.vm, post);
                    break;
                }
                Err(e) => self.dropped(vmm, &post, "callback_failed", &e.to_string()),
            }
        }
        self.delivering.set(false);
    }

    /// `PostMessage` found the queue full: deliver again after the retry
    /// interval of the system VM's execution time.
    fn retry(&self, vmm: &Vmm<'_>, sys: VmHandle, post: Post) {
        let ms = self.retry_ms.get();
        let id = post.id;
        let handle = vmm.set_vm_time_out(ms, sys, move |dev: &Vpostd, vmm, _t| {
            dev.retry_timer.set(None);
            dev.retry_pending.set(false);
            let _ = vmm.trace_note("post_requeued", &[("post", id.into()), ("attempt", post.attempts.into())]);
            dev.schedule(vmm, id);
        });
        if handle.is_some() {
            self.retry_timer.set(handle);
            self.retry_pending.set(true);
            let _ = vmm.trace_note(
                "post_retry",
                &[("post", post.id.into()), ("after_ms", ms.into()), ("attempt", post.attempts.into())],
            );
        } else {
            self.drop_queued(vmm, id, "no_timeout", "Set_VM_Time_Out failed");
        }
    }

    fn dropped(&self, vmm: &Vmm<'_>, post: &Post, reason: &str, detail: &str) {
        warn!("VPOSTD: post {} from VM {:#x} dropped: {detail}", post.id, post.source.0);
        let _ = vmm.trace_note(
            "post_dropped",
            &[
                ("post", post.id.into()),
                ("vm", post.source.into()),
                ("wparam", post.wparam.into()),
                ("lparam", post.lparam.into()),
                ("reason", reason.into()),
                ("detail", detail.into()),
            ],
        );
    }

    /// The machine is stopping: account for every post still waiting.
    fn drop_all(&self, vmm: &Vmm<'_>, reason: &str) {
        let posts: Vec<Post> = self.queue.borrow_mut().drain(..).collect();
        for post in posts {
            self.dropped(vmm, &post, reason, "the machine stopped before delivery");
        }
    }

    /// Add one to a per-VM counter.
    fn count(&self, vmm: &Vmm<'_>, vm: VmHandle, field: u32) {
        let Some(base) = self.cb_offset.get() else { return };
        if let Ok(n) = vmm.cb_read_u32(vm, base + field) {
            let _ = vmm.cb_write_u32(vm, base + field, n.wrapping_add(1));
        }
    }

    fn stats(&self, vmm: &Vmm<'_>, vm: VmHandle) -> (u32, u32) {
        let Some(base) = self.cb_offset.get() else { return (0, 0) };
        let read = |f| vmm.cb_read_u32(vm, base + f).unwrap_or(0);
        (read(CB_ACCEPTED), read(CB_REFUSED))
    }
}

/// What a reload hands to the next version: a versioned little-endian
/// byte format, so a version with other fields can refuse it clearly.
#[derive(Clone, Debug, PartialEq, Eq)]
struct State {
    registration: Option<Registration>,
    posts: Vec<Post>,
    next_id: u32,
    cb_offset: Option<u32>,
    retry_pending: bool,
}

/// Version of [`State`]'s byte format.
const STATE_VERSION: u8 = 1;

impl State {
    fn encode(&self) -> Vec<u8> {
        let mut b = vec![STATE_VERSION];
        match self.registration {
            Some(r) => {
                b.push(1);
                b.extend_from_slice(&r.hwnd.0.to_le_bytes());
                b.extend_from_slice(&r.callback.to_u32().to_le_bytes());
            }
            None => b.push(0),
        }
        b.extend_from_slice(&self.next_id.to_le_bytes());
        b.extend_from_slice(&self.cb_offset.unwrap_or(0).to_le_bytes());
        b.push(u8::from(self.retry_pending));
        b.extend_from_slice(&(self.posts.len() as u32).to_le_bytes());
        for p in &self.posts {
            b.extend_from_slice(&p.id.to_le_bytes());
            b.extend_from_slice(&p.source.0.to_le_bytes());
            b.extend_from_slice(&p.wparam.to_le_bytes());
            b.extend_from_slice(&p.lparam.to_le_bytes());
            b.extend_from_slice(&p.attempts.to_le_bytes());
        }
        b
    }

    fn decode(bytes: &[u8]) -> Result<State, String> {
        let mut r = Reader { bytes, at: 0 };
        let version = r.u8()?;
        if version != STATE_VERSION {
            return Err(format!("state format {version}, this VPOSTD reads format {STATE_VERSION}"));
        }
        let registration = match r.u8()? {
            0 => None,
            1 => Some(Registration { hwnd: Hwnd(r.u16()?), callback: FarPtr::from_u32(r.u32()?) }),
            other => return Err(format!("bad registration tag {other}")),
        };
        let next_id = r.u32()?;
        let cb_offset = Some(r.u32()?).filter(|o| *o != 0);
        let retry_pending = r.u8()? != 0;
        let n = r.u32()? as usize;
        let mut posts = Vec::with_capacity(n.min(65_536));
        for _ in 0..n {
            posts.push(Post {
                id: r.u32()?,
                source: VmHandle(r.u32()?),
                wparam: r.u16()?,
                lparam: r.u32()?,
                attempts: r.u32()?,
            });
        }
        if r.at != bytes.len() {
            return Err(format!("{} bytes after the state", bytes.len() - r.at));
        }
        Ok(State { registration, posts, next_id, cb_offset, retry_pending })
    }
}

struct Reader<'b> {
    bytes: &'b [u8],
    at: usize,
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let end = self.at + N;
        let slice = self.bytes.get(self.at..end).ok_or_else(|| format!("the state ends at byte {}", self.at))?;
        self.at = end;
        Ok(slice.try_into().unwrap_or([0; N]))
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take::<1>()?[0])
    }
    fn u16(&mut self) -> Result<u16, String> {
        Ok(u16::from_le_bytes(self.take()?))
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.take()?))
    }
}

/// Nested execution into the registered callback: push its PASCAL frame,
/// far call it, run it to its return, and read its BOOL. The client state
/// is restored whatever happens.
fn call_callback(vmm: &Vmm<'_>, sys: VmHandle, reg: Registration, post: &Post) -> Result<bool, VmmError> {
    let saved = vmm.save_client_state()?;
    vmm.begin_nest_exec()?;
    let called = (|| {
        vmm.simulate_push(reg.hwnd.0 as u32)?;
        vmm.simulate_push(WM_VPOSTD as u32)?;
        vmm.simulate_push(post.wparam as u32)?;
        vmm.simulate_push(post.lparam >> 16)?;
        vmm.simulate_push(post.lparam & 0xFFFF)?;
        vmm.simulate_far_call(reg.callback)?;
        vmm.resume_exec()?;
        Ok(vmm.client(sys)?.ax() != 0)
    })();
    let ended = vmm.end_nest_exec();
    let restored = vmm.restore_client_state(&saved);
    let result = called?;
    ended?;
    restored?;
    Ok(result)
}

/// A numeric setting of `[VPOSTD]`: the default when missing; a value that
/// is not a number or out of `range` stops the machine with a message
/// naming the key (a silent fallback would hide the mistake).
fn setting(vmm: &Vmm<'_>, key: &str, default: u32, range: core::ops::RangeInclusive<u32>) -> u32 {
    let value = match vmm.get_profile_decimal_int(Some("VPOSTD"), key, default as i32) {
        Ok(v) => v,
        Err(e) => {
            warn!("VPOSTD: cannot read [VPOSTD] {key}: {e}; using {default}");
            return default;
        }
    };
    if value.status == ProfileStatus::Missing {
        if let Ok(Some(text)) = vmm.get_profile_string(Some("VPOSTD"), key) {
            vmm.fatal_error_handler(&format!("VPOSTD: [VPOSTD] {key} = \"{}\" is not a decimal number", text.value), 0);
        }
        return default;
    }
    match u32::try_from(value.value) {
        Ok(v) if range.contains(&v) => v,
        _ => vmm.fatal_error_handler(
            &format!("VPOSTD: [VPOSTD] {key} = {} is out of range ({} to {})", value.value, range.start(), range.end()),
            0,
        ),
    }
}

declare_virtual_device!(Vpostd);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_and_bad_state_is_refused() {
        let state = State {
            registration: Some(Registration { hwnd: Hwnd(0x1004), callback: FarPtr::new(0x010F, 0x0010) }),
            posts: vec![Post { id: 7, source: VmHandle(0x10002), wparam: 2, lparam: 0x0001_0003, attempts: 1 }],
            next_id: 8,
            cb_offset: Some(0x100),
            retry_pending: true,
        };
        let bytes = state.encode();
        assert_eq!(State::decode(&bytes), Ok(state));
        assert!(State::decode(&bytes[..bytes.len() - 1]).unwrap_err().contains("the state ends"));
        let mut newer = bytes.clone();
        newer[0] = 2;
        assert!(State::decode(&newer).unwrap_err().contains("state format 2"));
        let mut longer = bytes;
        longer.push(0);
        assert!(State::decode(&longer).unwrap_err().contains("1 bytes after"));
    }
}
