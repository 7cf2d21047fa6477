//! Callbacks the VMM holds: a plugin's `RawCallback` or, for devices built
//! into the host, a Rust closure. Dropping a plugin callback releases its
//! data in the plugin.
//!
//! A callback is called through [`CallbackHost`], the narrow interface the
//! machine implements (is plugin code allowed to run, the instance's
//! `this`, the guarded plugin call, the frame of a host call), so the
//! queues that hold callbacks need nothing else of the machine.

use std::any::Any;
use std::ffi::c_void;

use vmm_plugin_api::abi::{Carry, HostCx, PluginResult, RawCallback, Regs};

use crate::trace::CallOutcome;
use crate::vmm::context::Context;
use crate::vmm::ids::InstanceId;

/// What calling a callback needs of the machine.
pub(crate) trait CallbackHost: Any {
    /// The `this` of instance `owner` when plugin code may run and the
    /// instance is alive and has not failed; `None` skips the call.
    fn callable_instance(&self, owner: InstanceId) -> Option<*const c_void>;
    /// Call into instance `owner` as a plugin call (depth limit, panic
    /// containment, `plugin_error` records).
    fn invoke_callback(
        &self,
        owner: InstanceId,
        context: Context,
        f: impl FnOnce(&HostCx) -> PluginResult<Carry>,
    ) -> Result<Carry, CallOutcome>;
    /// Run host code on behalf of instance `owner` in `context`.
    fn in_frame(&self, owner: InstanceId, context: Context, f: impl FnOnce() -> Carry) -> Carry;
}

/// A host closure callback (for devices built into the host and for
/// ring-3 requests such as INT 2Fh 1685h). It is given the machine that
/// calls it, as `&dyn Any`; [`Callback::host`] types it back.
pub(crate) type HostFn = Box<dyn FnMut(&dyn Any, &mut Regs) -> Carry>;

/// A callback and the instance that registered it.
pub(crate) enum Callback {
    /// Registered by a plugin. `spent` marks a `once` callback that has
    /// been called (its call released the plugin's data).
    Plugin { owner: InstanceId, raw: RawCallback, spent: bool },
    /// Registered by host code on behalf of its owner (boxed: host
    /// callbacks are rare, and a small `Callback` is cheap to move).
    Host(Box<HostCallback>),
}

/// A host closure registered on behalf of instance `owner`.
pub(crate) struct HostCallback {
    pub(crate) owner: InstanceId,
    pub(crate) name: &'static str,
    pub(crate) f: HostFn,
}

impl Callback {
    pub(crate) fn plugin(owner: InstanceId, raw: RawCallback) -> Self {
        Callback::Plugin { owner, raw, spent: false }
    }

    /// A host closure on behalf of `owner`, named `name` in traces,
    /// called with the machine `M` that calls it.
    pub(crate) fn host<M: CallbackHost>(
        owner: InstanceId,
        name: &'static str,
        mut f: impl FnMut(&M, &mut Regs) -> Carry + 'static,
    ) -> Self {
        let f = move |machine: &dyn Any, regs: &mut Regs| match machine.downcast_ref::<M>() {
            Some(machine) => f(machine, regs),
            None => unreachable!("a host callback is called by the machine type that registered it"),
        };
        Callback::Host(Box::new(HostCallback { owner, name, f: Box::new(f) }))
    }

    /// The raw name, for traces (shorten it with [`Callback::name`] only
    /// when a record is written).
    pub(crate) fn label(&self) -> &'static str {
        match self {
            Callback::Plugin { raw, .. } => raw.name(),
            Callback::Host(h) => h.name,
        }
    }

    /// The callback's code, for telling callbacks apart within a run (the
    /// plugin's vtable of this kind of callback, or the host closure's
    /// name): the pct order's tasks.
    pub(crate) fn identity(&self) -> usize {
        match self {
            Callback::Plugin { raw, .. } => raw.vtable as *const _ as usize,
            Callback::Host(h) => h.name.as_ptr() as usize,
        }
    }

    /// The registering instance.
    pub(crate) fn owner(&self) -> InstanceId {
        match self {
            Callback::Plugin { owner, .. } => *owner,
            Callback::Host(h) => h.owner,
        }
    }

    /// A name for traces (the closure's type name for plugins).
    pub(crate) fn name(&self) -> String {
        shorten(self.label())
    }

    /// Drop it; a plugin callback already consumed by its call needs no
    /// call into the plugin, and skips the drop glue.
    #[inline]
    pub(crate) fn release(self) {
        match self {
            Callback::Plugin { spent: true, .. } => std::mem::forget(self),
            other => drop(other),
        }
    }

    /// Call it in `context`.
    pub(crate) fn call<M: CallbackHost>(&mut self, machine: &M, context: Context, regs: &mut Regs) -> CallOutcome {
        self.call_inline(machine, context, regs)
    }

    /// [`Callback::call`], inlined into the caller (event dispatch).
    #[inline(always)]
    pub(crate) fn call_inline<M: CallbackHost>(
        &mut self,
        machine: &M,
        context: Context,
        regs: &mut Regs,
    ) -> CallOutcome {
        match self {
            Callback::Plugin { owner, raw, spent } => {
                // After a fatal error no plugin code runs; an unspent
                // callback is still released (its drop glue) later.
                if *spent {
                    return CallOutcome::Skipped;
                }
                let Some(this) = machine.callable_instance(*owner) else {
                    return CallOutcome::Skipped;
                };
                let (call, data) = (raw.vtable.call, raw.data);
                *spent = raw.vtable.once;
                match machine.invoke_callback(*owner, context, |cx| call(data, this, cx, regs)) {
                    Ok(c) => c.into(),
                    Err(o) => o,
                }
            }
            Callback::Host(h) => {
                let HostCallback { owner, f, .. } = &mut **h;
                machine.in_frame(*owner, context, || f(machine, regs)).into()
            }
        }
    }
}

/// A repeating plugin callback's entry, copied out so that it can be called
/// while its [`Callback`] stays where it is (an I/O handler that
/// `Simulate_IO` reaches again from inside its own call). The holder keeps
/// the `Callback` alive until every such call returned.
#[derive(Copy, Clone)]
pub(crate) struct SharedCall {
    owner: InstanceId,
    call: extern "C" fn(*mut c_void, *const c_void, &HostCx, &mut Regs) -> PluginResult<Carry>,
    data: *mut c_void,
}

impl SharedCall {
    pub(crate) fn call<M: CallbackHost>(self, machine: &M, context: Context, regs: &mut Regs) -> CallOutcome {
        let Some(this) = machine.callable_instance(self.owner) else {
            return CallOutcome::Skipped;
        };
        let (call, data) = (self.call, self.data);
        match machine.invoke_callback(self.owner, context, |cx| call(data, this, cx, regs)) {
            Ok(c) => c.into(),
            Err(o) => o,
        }
    }
}

impl Callback {
    /// The entry of a repeating plugin callback (`None` for a one-shot or
    /// host callback).
    pub(crate) fn shared(&self) -> Option<SharedCall> {
        match self {
            Callback::Plugin { owner, raw, spent: false } if !raw.vtable.once => {
                Some(SharedCall { owner: *owner, call: raw.vtable.call, data: raw.data })
            }
            _ => None,
        }
    }
}

impl Drop for Callback {
    fn drop(&mut self) {
        if let Callback::Plugin { raw, spent, .. } = self
            && !*spent
        {
            (raw.vtable.drop)(raw.data);
        }
    }
}

/// `vpostd::Vpostd::post::{{closure}}` → `Vpostd::post`: the last two
/// path segments that are not closures or generic arguments.
pub(crate) fn shorten(name: &str) -> String {
    let base = name.split('<').next().unwrap_or(name);
    let parts: Vec<&str> = base.split("::").filter(|p| !p.is_empty() && !p.starts_with("{{")).collect();
    let keep = parts.len().min(2);
    parts[parts.len() - keep..].join("::")
}

/// A machine for unit tests of the queues that hold callbacks: it runs
/// host callbacks and has no plugins.
#[cfg(test)]
#[derive(Default)]
pub(crate) struct TestHost {
    pub(crate) frames: std::cell::Cell<u32>,
}

#[cfg(test)]
impl CallbackHost for TestHost {
    fn callable_instance(&self, _owner: InstanceId) -> Option<*const c_void> {
        None
    }
    fn invoke_callback(
        &self,
        _owner: InstanceId,
        _context: Context,
        _f: impl FnOnce(&HostCx) -> PluginResult<Carry>,
    ) -> Result<Carry, CallOutcome> {
        Err(CallOutcome::Skipped)
    }
    fn in_frame(&self, _owner: InstanceId, _context: Context, f: impl FnOnce() -> Carry) -> Carry {
        self.frames.set(self.frames.get() + 1);
        f()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_callback_runs_in_a_frame_and_is_given_its_machine() {
        let host = TestHost::default();
        let mut cb = Callback::host(InstanceId::from_raw(7), "t", |m: &TestHost, regs: &mut Regs| {
            regs.eax = m.frames.get();
            Carry::Set
        });
        let mut regs = Regs::default();
        assert!(matches!(cb.call(&host, Context::Event, &mut regs), CallOutcome::Set));
        assert_eq!((regs.eax, cb.owner(), cb.name()), (1, InstanceId::from_raw(7), "t".to_string()));
    }

    #[test]
    fn closure_names_are_shortened() {
        assert_eq!(super::shorten("vpostd::Vpostd::post::{{closure}}"), "Vpostd::post");
        assert_eq!(super::shorten("f"), "f");
        assert_eq!(super::shorten("a::b::deliver<T>::{{closure}}"), "b::deliver");
        assert_eq!(super::shorten("e2e::tests::case::{{closure}}::{{closure}}"), "tests::case");
    }
}
