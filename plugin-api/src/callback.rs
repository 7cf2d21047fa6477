//! Turning Rust closures into [`RawCallback`]s.
//!
//! A callback receives the device instance that registered it (`&D`), a
//! [`Vmm`] for the services, and the callback registers. One-shot callbacks
//! (events, time-outs) take an `FnOnce`; hooks that run many times (task
//! switch, idle, interrupts) take an `Fn`. A closure that captures nothing
//! costs no allocation.

use core::ffi::c_void;
use core::marker::PhantomData;

use abi_stable::std_types::RStr;

use crate::abi::{CallbackVTable, Carry, HostCx, PluginResult, RawCallback, Regs};
use crate::guard::{InstanceBox, entry, entry_in};
use crate::vmm::Vmm;

/// Names a callback in traces after type `N` (the closure the device
/// passed, not the SDK's wrapper around it).
pub(crate) struct Named<N>(PhantomData<fn() -> N>);

impl<N> Named<N> {
    /// Name after `N`.
    pub(crate) fn new() -> Self {
        Named(PhantomData)
    }

    /// Name after the type of `_value`.
    pub(crate) fn of(_value: &N) -> Self {
        Named(PhantomData)
    }
}

extern "C" fn name_of<N>() -> RStr<'static> {
    RStr::from_str(core::any::type_name::<N>())
}

/// Build a callback that runs at most once, named after `N`. The call
/// consumes the closure (a closure that captures nothing costs no
/// allocation at all).
pub(crate) fn once<D, N, F>(_name: Named<N>, f: F) -> RawCallback
where
    D: 'static,
    F: FnOnce(&D, &Vmm<'_>, &mut Regs) -> Carry + 'static,
{
    extern "C" fn call<D: 'static, F: FnOnce(&D, &Vmm<'_>, &mut Regs) -> Carry + 'static>(
        data: *mut c_void,
        this: *const c_void,
        cx: &HostCx,
        regs: &mut Regs,
    ) -> PluginResult<Carry> {
        // SAFETY: `data` is the `Box<F>` made by `once`; the host calls a
        // `once` callback at most once and then never drops it, so this is
        // the only owner.
        let f = unsafe { Box::from_raw(data as *mut F) };
        entry_in(this, Some(cx), move || {
            // SAFETY: the host passes the instance that registered the callback.
            let device = unsafe { InstanceBox::<D>::get(this) };
            Ok(f(device, &Vmm::new(cx), regs))
        })
    }
    extern "C" fn drop_once<F>(data: *mut c_void) {
        let _ = entry(None, || {
            // SAFETY: `data` came from Box::into_raw in `once` and was never
            // called (a called `once` callback is not dropped by the host).
            drop(unsafe { Box::from_raw(data as *mut F) });
            Ok(())
        });
    }
    RawCallback {
        vtable: &const { CallbackVTable { call: call::<D, F>, drop: drop_once::<F>, name: name_of::<N>, once: true } },
        data: Box::into_raw(Box::new(f)) as *mut c_void,
    }
}

/// Build a callback that may run any number of times, named after `N`.
pub(crate) fn repeating<D, N, F>(_name: Named<N>, f: F) -> RawCallback
where
    D: 'static,
    F: Fn(&D, &Vmm<'_>, &mut Regs) -> Carry + 'static,
{
    extern "C" fn call<D: 'static, F: Fn(&D, &Vmm<'_>, &mut Regs) -> Carry + 'static>(
        data: *mut c_void,
        this: *const c_void,
        cx: &HostCx,
        regs: &mut Regs,
    ) -> PluginResult<Carry> {
        entry_in(this, Some(cx), || {
            // SAFETY: `data` is the `F` boxed by `repeating`, alive until
            // `drop_repeating`.
            let f = unsafe { &*(data as *const F) };
            // SAFETY: the host passes the instance that registered the callback.
            let device = unsafe { InstanceBox::<D>::get(this) };
            Ok(f(device, &Vmm::new(cx), regs))
        })
    }
    extern "C" fn drop_repeating<F>(data: *mut c_void) {
        let _ = entry(None, || {
            // SAFETY: `data` came from Box::into_raw in `repeating`.
            drop(unsafe { Box::from_raw(data as *mut F) });
            Ok(())
        });
    }
    RawCallback {
        vtable: &const { CallbackVTable { call: call::<D, F>, drop: drop_repeating::<F>, name: name_of::<N>, once: false } },
        data: Box::into_raw(Box::new(f)) as *mut c_void,
    }
}
