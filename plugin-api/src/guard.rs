//! Entry-point guards: every call from the host into a plugin runs inside
//! [`entry`], which catches panics (a panic must never cross the ABI: the
//! plugin has its own copy of `std`, so the host could not catch it), turns
//! re-entrancy conflicts into their own error kind, and makes the call's
//! [`HostCx`] available to the logging bridge.

use core::any::{Any, TypeId};
use core::cell::{Cell, Ref, RefCell, RefMut};
use core::ffi::c_void;
use core::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::Once;
use std::sync::atomic::{AtomicBool, Ordering};

use abi_stable::std_types::{RErr, ROk, RString};

use crate::abi::{HostCx, PluginError, PluginErrorKind, PluginResult};

/// The innermost host context on a thread and the number of entry points
/// on its stack.
type Frame = Cell<(*const HostCx, u32)>;

thread_local! {
    /// The innermost host context of the calls currently on this thread's
    /// stack (null outside any call; used by the logging bridge), and how
    /// many entry points are on the stack (used by the panic hook). One
    /// thread-local, so an entry point pays for one lookup on the way in and
    /// one on the way out.
    static FRAME: Frame = const { Cell::new((core::ptr::null(), 0)) };
    /// The message and location of the last panic in this plugin copy.
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Unwinding payload of `Fatal_Error_Handler`: the host already knows, the
/// SDK just returns to the host without running more plugin code.
pub(crate) struct FatalExit;

/// Unwinding payload of a [`ReentrancyCell`] conflict.
pub(crate) struct Reentered(pub(crate) &'static str);

/// Unwinding payload of a callback invoked with the wrong device type.
pub(crate) struct WrongType;

static PANIC_HOOK: Once = Once::new();

/// Set by the export macros: this SDK copy lives in a plugin library with its
/// own `std` and `tracing`, so it installs the logging bridge. A device
/// linked into the host process (tests, embedding) shares the host's and
/// installs nothing.
static SEPARATE_COPY: AtomicBool = AtomicBool::new(false);

/// Called by the export macros' root-module constructor.
pub(crate) fn mark_separate_copy() {
    SEPARATE_COPY.store(true, Ordering::Relaxed);
}

/// Install a panic hook that keeps the message and location of panics inside
/// entry points for the error result instead of printing them; panics
/// elsewhere go to the previous hook.
fn install_panic_hook() {
    PANIC_HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if FRAME.with(|f| f.get().1) == 0 {
                return previous(info);
            }
            let message = if let Some(s) = info.payload().downcast_ref::<&str>() {
                (*s).to_string()
            } else if let Some(s) = info.payload().downcast_ref::<String>() {
                s.clone()
            } else {
                "panic with a non-string payload".to_string()
            };
            let text = match info.location() {
                Some(loc) => format!("{message} (at {}:{})", loc.file(), loc.line()),
                None => message,
            };
            LAST_PANIC.with(|p| *p.borrow_mut() = Some(text));
        }));
    });
}

/// Set once the panic hook (and for a separate copy, the logging bridge)
/// is installed: one load per entry point after that.
static READY: AtomicBool = AtomicBool::new(false);

#[cold]
fn prepare() {
    install_panic_hook();
    if SEPARATE_COPY.load(Ordering::Relaxed) {
        crate::log::install_bridge();
    }
    READY.store(true, Ordering::Relaxed);
}

/// Run one entry point of the plugin: catch panics, classify them, and
/// expose `cx` to the logging bridge for the duration of the call.
pub(crate) fn entry<T>(cx: Option<&HostCx>, body: impl FnOnce() -> Result<T, PluginError>) -> PluginResult<T> {
    run_entry(frame_cell(), cx, body)
}

/// [`entry`] for a call into instance `this` (an [`InstanceBox`]): the
/// instance remembers its thread's frame cell, so the call needs no
/// thread-local lookup. A machine and its instances never leave the thread
/// that created them.
pub(crate) fn entry_in<T>(
    this: *const c_void,
    cx: Option<&HostCx>,
    body: impl FnOnce() -> Result<T, PluginError>,
) -> PluginResult<T> {
    // SAFETY: the host passes the pointer made by `InstanceBox::into_raw`,
    // whose header every instance type shares.
    let frame = unsafe { (*(this as *const InstanceHeader)).frame };
    run_entry(frame, cx, body)
}

/// This thread's frame cell.
fn frame_cell() -> *const Frame {
    FRAME.with(|f| f as *const Frame)
}

#[inline(always)]
fn run_entry<T>(
    frame: *const Frame,
    cx: Option<&HostCx>,
    body: impl FnOnce() -> Result<T, PluginError>,
) -> PluginResult<T> {
    if !READY.load(Ordering::Relaxed) {
        prepare();
    }
    // SAFETY: `frame` is this thread's FRAME cell (see `entry_in`), which
    // lives as long as the thread.
    let frame = unsafe { &*frame };
    let new = cx.map_or(core::ptr::null(), |cx| cx as *const HostCx);
    let (previous, depth) = frame.get();
    frame.set((new, depth + 1));
    let outcome = catch_unwind(AssertUnwindSafe(body));
    frame.set((previous, depth));
    match outcome {
        Ok(Ok(value)) => ROk(value),
        Ok(Err(error)) => RErr(error),
        Err(payload) => RErr(classify_panic(payload)),
    }
}

fn classify_panic(payload: Box<dyn Any + Send>) -> PluginError {
    if payload.is::<FatalExit>() {
        return error(PluginErrorKind::FatalExit, "Fatal_Error_Handler was called");
    }
    if let Some(Reentered(what)) = payload.downcast_ref::<Reentered>() {
        return error(
            PluginErrorKind::Reentrancy,
            &format!("re-entered while {what} was borrowed: the device state is already in use further up the stack"),
        );
    }
    if payload.is::<WrongType>() {
        return error(PluginErrorKind::TypeMismatch, "a callback was invoked with an instance of another device type");
    }
    let text = LAST_PANIC.with(|p| p.borrow_mut().take()).unwrap_or_else(|| "panic (no message)".to_string());
    if text.contains("already borrowed") || text.contains("already mutably borrowed") {
        error(PluginErrorKind::Reentrancy, &text)
    } else {
        error(PluginErrorKind::Panic, &text)
    }
}

pub(crate) fn error(kind: PluginErrorKind, message: &str) -> PluginError {
    PluginError { kind, message: RString::from(message) }
}

/// The host context of the innermost call on this thread, if any.
pub(crate) fn current_cx() -> Option<&'static HostCx> {
    let ptr = FRAME.with(|f| f.get().0);
    // SAFETY: the pointer is set only by `entry` for the duration of a host
    // call, during which the host guarantees the context is alive; it is
    // reset before `entry` returns.
    unsafe { ptr.as_ref() }
}

/// Unwind to the entry point after `Fatal_Error_Handler`.
pub(crate) fn fatal_exit() -> ! {
    resume_unwind(Box::new(FatalExit))
}

/// The box behind a plugin instance pointer: the value plus its type, so a
/// callback can check it got the device it was registered for.
#[repr(C)]
pub(crate) struct InstanceBox<T: 'static> {
    type_id: TypeId,
    /// The frame cell of the thread that created the instance (and runs
    /// its machine).
    frame: *const Frame,
    pub(crate) value: T,
}

impl<T: 'static> InstanceBox<T> {
    pub(crate) fn into_raw(value: T) -> *const c_void {
        Box::into_raw(Box::new(InstanceBox { type_id: TypeId::of::<T>(), frame: frame_cell(), value })) as *const c_void
    }

    /// # Safety
    /// `this` must come from [`InstanceBox::into_raw`] of some type (checked
    /// here) and must not have been dropped.
    pub(crate) unsafe fn get<'a>(this: *const c_void) -> &'a T {
        // SAFETY: every InstanceBox is repr(C) and starts with its TypeId, so
        // the header can be read before the concrete type is known.
        let header = unsafe { &*(this as *const InstanceHeader) };
        if header.type_id != TypeId::of::<T>() {
            resume_unwind(Box::new(WrongType));
        }
        // SAFETY: the type id matches, so `this` is an InstanceBox<T>.
        unsafe { &(*(this as *const InstanceBox<T>)).value }
    }

    /// # Safety
    /// `this` must come from [`InstanceBox::into_raw`] with the same `T`.
    pub(crate) unsafe fn drop_raw(this: *const c_void) {
        // SAFETY: per the contract, `this` is an owned InstanceBox<T>.
        drop(unsafe { Box::from_raw(this as *mut InstanceBox<T>) });
    }
}

/// The common prefix of every `InstanceBox<T>`: `#[repr(C)]` on both keeps
/// `type_id` at offset 0.
#[repr(C)]
struct InstanceHeader {
    type_id: TypeId,
    frame: *const Frame,
}

/// A `RefCell` for device state that reports a re-entrancy conflict as a
/// `REENTRANCY` violation instead of a plain panic.
///
/// Device entry points take `&self`, because the VMM re-enters devices: an
/// event can run inline inside a service call, and an interrupt can arrive
/// while the device is in its own API procedure. Keep borrows short and never
/// hold one across a VMM service call that may call back into the device.
pub struct ReentrancyCell<T> {
    inner: RefCell<T>,
    name: &'static str,
}

impl<T> ReentrancyCell<T> {
    /// Wrap `value`; `name` appears in the violation message.
    pub const fn new(name: &'static str, value: T) -> Self {
        ReentrancyCell { inner: RefCell::new(value), name }
    }

    /// Borrow immutably; a conflicting mutable borrow further up the stack is
    /// reported as re-entrancy.
    pub fn borrow(&self) -> Ref<'_, T> {
        match self.inner.try_borrow() {
            Ok(r) => r,
            Err(_) => resume_unwind(Box::new(Reentered(self.name))),
        }
    }

    /// Borrow mutably; any other borrow further up the stack is reported as
    /// re-entrancy.
    pub fn borrow_mut(&self) -> RefMut<'_, T> {
        match self.inner.try_borrow_mut() {
            Ok(r) => r,
            Err(_) => resume_unwind(Box::new(Reentered(self.name))),
        }
    }

    /// Consume the cell.
    pub fn into_inner(self) -> T {
        self.inner.into_inner()
    }
}

impl<T: Default> Default for ReentrancyCell<T> {
    fn default() -> Self {
        ReentrancyCell::new("device state", T::default())
    }
}

impl<T: fmt::Debug> fmt::Debug for ReentrancyCell<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.inner.try_borrow() {
            Ok(v) => f.debug_struct("ReentrancyCell").field("name", &self.name).field("value", &*v).finish(),
            Err(_) => f.debug_struct("ReentrancyCell").field("name", &self.name).finish_non_exhaustive(),
        }
    }
}
