//! The host's side of the plugin ABI, in files that mirror the SDK's:
//! `vmm.rs` (the VMM's services), `ring3.rs` (the services ring-3 modules
//! call), `shell.rs` (SHELL's). This file holds what every shim shares:
//! making a context for a plugin call and recovering the machine from it,
//! the guard, the context rule and the failure values.
//!
//! **Invariant:** no host panic crosses into plugin code. Every shim runs
//! its body under `catch_unwind`; a host bug stops the machine with a fatal
//! error instead of aborting the process.

pub(crate) mod ring3;
pub(crate) mod shell;
pub(crate) mod vmm;
pub(crate) mod vpicd;
pub(crate) mod vxdcall;

use std::panic::{AssertUnwindSafe, catch_unwind};

use abi_stable::std_types::RErr;
use vmm_plugin_api::abi::{CritStatus, HostCx, VmmError, VmmResult};

use crate::machine::Core;
pub(crate) use crate::machine::rules::allowed;
use crate::vmm::ids::InstanceId;
use crate::vmm::services::Service;

impl Core {
    /// The context handed to `instance`'s code: the services vtable and
    /// this machine, recovered by [`core`] in every shim.
    #[inline]
    pub(crate) fn cx(&self, instance: InstanceId) -> HostCx {
        HostCx {
            services: vmm::SERVICES,
            machine: self as *const Core as *const std::ffi::c_void,
            caller: instance.raw(),
            tracing: self.trace_on,
        }
    }
}

/// The instance whose code calls, from a context.
#[inline]
pub(crate) fn caller(cx: &HostCx) -> InstanceId {
    InstanceId::from_raw(cx.caller)
}

/// Recover the machine from a context.
pub(crate) fn core(cx: &HostCx) -> &Core {
    // SAFETY: the host builds every HostCx from a live `Core` that outlives
    // the plugin call the context is passed to.
    unsafe { &*(cx.machine as *const Core) }
}

/// Run a service body; a host panic becomes a fatal error and `fallback`.
///
/// **Invariant:** once the machine is fatal every service returns its
/// `fallback` (`VmmError::FATAL`, or the service's failure value) without
/// doing anything, and a service during which the machine became fatal
/// returns it too: the SDK unwinds to the device's entry point on
/// `FATAL`, so no device logic runs after a fatal error.
#[inline(always)]
pub(crate) fn guarded<T>(cx: &HostCx, service: &'static str, fallback: T, body: impl FnOnce(&Core) -> T) -> T {
    let core = core(cx);
    if core.is_fatal() {
        return fallback;
    }
    match catch_unwind(AssertUnwindSafe(|| {
        if core.boundary_work() {
            core.service_boundary();
        }
        body(core)
    })) {
        Ok(v) if core.is_fatal() => {
            drop(v);
            fallback
        }
        Ok(v) => v,
        Err(payload) => {
            let text = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            core.set_fatal(format!("internal error in the host's {service}: {text}"), None);
            fallback
        }
    }
}

/// What a service returns when it does not run: after a fatal error
/// ([`Failure::fatal`]) or when its context rule refuses the call
/// ([`Failure::refused`], the `violation` record says why).
pub(crate) trait Failure {
    fn fatal() -> Self;
    fn refused() -> Self;
}

impl<T> Failure for VmmResult<T> {
    fn fatal() -> Self {
        RErr(VmmError::FATAL)
    }
    fn refused() -> Self {
        RErr(VmmError::VIOLATION)
    }
}

/// Services whose result is an address, a handle or a count fail with 0.
impl Failure for u32 {
    fn fatal() -> Self {
        0
    }
    fn refused() -> Self {
        0
    }
}

impl Failure for bool {
    fn fatal() -> Self {
        false
    }
    fn refused() -> Self {
        false
    }
}

impl Failure for () {
    fn fatal() -> Self {}
    fn refused() -> Self {}
}

impl Failure for CritStatus {
    fn fatal() -> Self {
        CritStatus::default()
    }
    fn refused() -> Self {
        CritStatus::default()
    }
}

/// Run service `svc`: the guard ([`guarded`]), then its context rule, then
/// `body`. The one wrapper every guarded VMM service passes.
#[inline(always)]
pub(crate) fn serve<T: Failure>(cx: &HostCx, svc: &'static Service, body: impl FnOnce(&Core) -> T) -> T {
    guarded(cx, svc.name, T::fatal(), |core| if allowed(core, svc.name, svc.rule) { body(core) } else { T::refused() })
}
