//! Callbacks the VMM holds: a plugin's `RawCallback` or, for devices built
//! into the host, a Rust closure. Dropping a plugin callback releases its
//! data in the plugin.

use vmm_plugin_api::abi::{RawCallback, Regs};

use crate::machine::Core;
use crate::trace::CallOutcome;
use crate::vmm::context::Context;

/// A host closure callback (for devices built into the host and for
/// ring-3 requests such as INT 2Fh 1685h).
pub(crate) type HostFn = Box<dyn FnMut(&Core, &mut Regs) -> vmm_plugin_api::abi::Carry>;

/// A callback and the instance that registered it.
pub(crate) enum Callback {
    /// Registered by a plugin. `spent` marks a `once` callback that has
    /// been called (its call released the plugin's data).
    Plugin { owner: u32, raw: RawCallback, spent: bool },
    /// Registered by host code on behalf of its owner (boxed: host
    /// callbacks are rare, and a small `Callback` is cheap to move).
    Host(Box<HostCallback>),
}

/// A host closure registered on behalf of instance `owner`.
pub(crate) struct HostCallback {
    pub(crate) owner: u32,
    pub(crate) name: &'static str,
    pub(crate) f: HostFn,
}

impl Callback {
    pub(crate) fn plugin(owner: u32, raw: RawCallback) -> Self {
        Callback::Plugin { owner, raw, spent: false }
    }

    /// A host closure on behalf of `owner`, named `name` in traces.
    pub(crate) fn host(
        owner: u32,
        name: &'static str,
        f: impl FnMut(&Core, &mut Regs) -> vmm_plugin_api::abi::Carry + 'static,
    ) -> Self {
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
    pub(crate) fn owner(&self) -> u32 {
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
    pub(crate) fn call(&mut self, core: &Core, context: Context, regs: &mut Regs) -> CallOutcome {
        self.call_inline(core, context, regs)
    }

    /// [`Callback::call`], inlined into the caller (event dispatch).
    #[inline(always)]
    pub(crate) fn call_inline(&mut self, core: &Core, context: Context, regs: &mut Regs) -> CallOutcome {
        match self {
            Callback::Plugin { owner, raw, spent } => {
                // After a fatal error no plugin code runs; an unspent
                // callback is still released (its drop glue) later.
                if *spent || !core.plugins_may_run() {
                    return CallOutcome::Skipped;
                }
                let Some(this) = core.instance_this(*owner) else {
                    return CallOutcome::Skipped;
                };
                let (call, data) = (raw.vtable.call, raw.data);
                *spent = raw.vtable.once;
                match core.invoke_checked(*owner, "callback", context, |cx| call(data, this, cx, regs)) {
                    Ok(c) => c.into(),
                    Err(o) => o,
                }
            }
            Callback::Host(h) => {
                let HostCallback { owner, f, .. } = &mut **h;
                core.with_frame(*owner, context, || f(core, regs)).into()
            }
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

#[cfg(test)]
mod tests {
    #[test]
    fn closure_names_are_shortened() {
        assert_eq!(super::shorten("vpostd::Vpostd::post::{{closure}}"), "Vpostd::post");
        assert_eq!(super::shorten("f"), "f");
        assert_eq!(super::shorten("a::b::deliver<T>::{{closure}}"), "b::deliver");
        assert_eq!(super::shorten("e2e::tests::case::{{closure}}::{{closure}}"), "tests::case");
    }
}
