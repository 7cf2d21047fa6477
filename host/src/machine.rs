//! The machine: one emulated Windows session. [`Machine`] is the public
//! handle (boot, run, shut down, read the trace); [`Core`] is the state the
//! VMM services act on.
//!
//! **Invariant:** host state is never borrowed across a call into a plugin.
//! A plugin call can re-enter the host through a service, which can call a
//! plugin again (an inline event). Every `RefCell` in [`Core`] is borrowed
//! for one step and released before any plugin code runs.

use std::cell::{Cell, RefCell};
use std::ffi::c_void;
use std::io::Write;
use std::path::PathBuf;
use std::rc::Rc;

use abi_stable::std_types::{RErr, ROk};
use vmm_plugin_api::abi::{HostCx, PluginError, PluginErrorKind, PluginResult};

use crate::error::{Error, Result};
use crate::manifest::{Manifest, ViolationPolicy};
use crate::registry::{DeviceSummary, Inst, Registry};
use crate::resolve::SearchPath;
use crate::time::Instant;
use crate::trace::{CallOutcome, Trace, TraceEvent, TraceRecord};
use crate::vmm::context::Context;
use crate::vmm::heap::Heap;
use crate::vmm::vm::VmTable;

/// How to run a machine, beyond what the manifest says.
#[derive(Default)]
pub struct MachineOptions {
    /// Keep trace records in memory ([`Machine::trace`]).
    pub capture_trace: bool,
    /// Write the trace as JSON Lines here.
    pub trace: Option<Box<dyn Write>>,
    /// Plugin directories searched before the manifest's.
    pub plugin_dirs: Vec<PathBuf>,
}

/// Where the machine is in its life.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Phase {
    /// Not booted.
    Loading,
    /// Real-mode initialization of the device list.
    RealModeInit,
    /// `Sys_Critical_Init`.
    SysCriticalInit,
    /// `Device_Init`.
    DeviceInit,
    /// `Init_Complete`.
    InitComplete,
    /// `Sys_VM_Init`.
    SysVmInit,
    /// Windows runs.
    Running,
    /// The exit messages are being sent.
    Shutdown,
    /// Stopped.
    Stopped,
}

impl Phase {
    /// Whether init-only services (profile, `_Allocate_Device_CB_Area`) are
    /// legal: while devices are created (their factories run as the VxD
    /// file is loaded), in real-mode init and in the three init phases.
    pub fn is_init(self) -> bool {
        matches!(
            self,
            Phase::Loading | Phase::RealModeInit | Phase::SysCriticalInit | Phase::DeviceInit | Phase::InitComplete
        )
    }
}

/// A plugin instance the host can call: a device or a ring-3 module.
pub(crate) struct InstanceRecord {
    pub(crate) name: Rc<str>,
    pub(crate) inst: Option<Inst>,
    pub(crate) failed: bool,
}

/// Why the machine stopped abnormally.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct FatalInfo {
    pub(crate) message: String,
    pub(crate) device: Option<String>,
}

/// The state every VMM service acts on.
pub(crate) struct Core {
    pub(crate) manifest: Manifest,
    pub(crate) search: SearchPath,
    pub(crate) trace: RefCell<Trace>,
    pub(crate) now: Cell<Instant>,
    pub(crate) phase: Cell<Phase>,
    pub(crate) registry: RefCell<Registry>,
    pub(crate) instances: RefCell<Vec<InstanceRecord>>,
    pub(crate) heap: RefCell<Heap>,
    pub(crate) vms: RefCell<VmTable>,
    pub(crate) cur_vm: Cell<u32>,
    pub(crate) sys_vm: Cell<u32>,
    pub(crate) fatal: RefCell<Option<FatalInfo>>,
    /// Execution contexts of the plugin calls on the host stack.
    pub(crate) contexts: RefCell<Vec<Context>>,
    /// Instances of the plugin calls on the host stack (innermost last).
    pub(crate) callers: RefCell<Vec<u32>>,
    pub(crate) cb_area_size: Cell<u32>,
    pub(crate) violation_count: Cell<u64>,
}

impl Core {
    fn new(manifest: Manifest, options: MachineOptions) -> Self {
        let mut search = SearchPath::for_manifest(&manifest);
        for dir in options.plugin_dirs.into_iter().rev() {
            search.prepend(dir);
        }
        Core {
            manifest,
            search,
            trace: RefCell::new(Trace::new(options.capture_trace, options.trace)),
            now: Cell::new(Instant::ZERO),
            phase: Cell::new(Phase::Loading),
            registry: RefCell::new(Registry::default()),
            instances: RefCell::new(Vec::new()),
            heap: RefCell::new(Heap::default()),
            vms: RefCell::new(VmTable::default()),
            cur_vm: Cell::new(0),
            sys_vm: Cell::new(0),
            fatal: RefCell::new(None),
            contexts: RefCell::new(Vec::new()),
            callers: RefCell::new(Vec::new()),
            cb_area_size: Cell::new(0),
            violation_count: Cell::new(0),
        }
    }

    // ---- trace and diagnostics -------------------------------------------

    /// Emit a trace record if anyone listens; `event` is only built then.
    #[inline]
    pub(crate) fn trace(&self, event: impl FnOnce() -> TraceEvent) {
        let mut t = self.trace.borrow_mut();
        if t.enabled() {
            t.emit(self.now.get(), event());
        }
    }

    /// The context of the innermost plugin call (`Control` outside any).
    pub(crate) fn context(&self) -> Context {
        self.contexts.borrow().last().copied().unwrap_or(Context::Control)
    }

    /// The instance of the innermost plugin call.
    pub(crate) fn current_caller(&self) -> Option<u32> {
        self.callers.borrow().last().copied()
    }

    /// The name of an instance.
    pub(crate) fn instance_name(&self, instance: u32) -> Rc<str> {
        self.instances
            .borrow()
            .get(instance.wrapping_sub(1) as usize)
            .map(|r| r.name.clone())
            .unwrap_or_else(|| Rc::from("?"))
    }

    /// Register a new plugin instance; returns its number.
    pub(crate) fn add_instance(&self, name: Rc<str>, inst: Option<Inst>) -> u32 {
        let mut instances = self.instances.borrow_mut();
        instances.push(InstanceRecord { name, inst, failed: false });
        instances.len() as u32
    }

    /// Report a broken VMM rule: a `violation` record with a stable `code`.
    /// Returns `true` if the call must be refused (policy `error` or
    /// `fatal`), `false` if it may proceed (policy `log`).
    pub(crate) fn violation(&self, code: &str, message: impl Into<String>, service: Option<&'static str>) -> bool {
        let message = message.into();
        let device = self.current_caller().map(|c| self.instance_name(c).to_string());
        self.violation_count.set(self.violation_count.get() + 1);
        tracing::warn!(code, device = device.as_deref().unwrap_or("-"), "violation: {message}");
        let context = self.context().name();
        self.trace(|| TraceEvent::Violation {
            code: code.to_string(),
            message: message.clone(),
            device: device.clone(),
            service,
            context,
        });
        match self.manifest.machine.violations {
            ViolationPolicy::Log => false,
            ViolationPolicy::Error => true,
            ViolationPolicy::Fatal => {
                self.set_fatal(format!("violation {code}: {message}"), device);
                true
            }
        }
    }

    /// Stop the machine with a fatal error (the first one wins).
    pub(crate) fn set_fatal(&self, message: String, device: Option<String>) {
        if self.fatal.borrow().is_some() {
            return;
        }
        tracing::error!(device = device.as_deref().unwrap_or("-"), "fatal error: {message}");
        self.trace(|| TraceEvent::FatalError { message: message.clone(), device: device.clone() });
        *self.fatal.borrow_mut() = Some(FatalInfo { message, device });
    }

    /// Whether a fatal error stopped the machine.
    pub(crate) fn is_fatal(&self) -> bool {
        self.fatal.borrow().is_some()
    }

    // ---- calling plugins ------------------------------------------------------

    /// The context handed to `instance`'s code.
    pub(crate) fn cx(&self, instance: u32) -> HostCx {
        HostCx { services: crate::services::SERVICES, machine: self as *const Core as *const c_void, caller: instance }
    }

    /// Whether `instance` may still be called.
    pub(crate) fn instance_usable(&self, instance: u32) -> bool {
        self.instances.borrow().get(instance.wrapping_sub(1) as usize).is_some_and(|r| !r.failed)
    }

    /// Call into `instance` in `context`: push the context, run `f`, and turn
    /// a plugin error into a trace record (a panic also marks the instance
    /// failed). `entry` names the entry point for the trace.
    pub(crate) fn invoke<T>(
        &self,
        instance: u32,
        entry: &'static str,
        context: Context,
        f: impl FnOnce(&HostCx) -> PluginResult<T>,
    ) -> std::result::Result<T, CallOutcome> {
        if !self.instance_usable(instance) {
            return Err(CallOutcome::Skipped);
        }
        let cx = self.cx(instance);
        self.contexts.borrow_mut().push(context);
        self.callers.borrow_mut().push(instance);
        let result = f(&cx);
        self.callers.borrow_mut().pop();
        self.contexts.borrow_mut().pop();
        match result {
            ROk(v) => Ok(v),
            RErr(e) => Err(self.plugin_failed(instance, entry, e)),
        }
    }

    /// Record how a plugin call failed; returns the outcome to trace.
    pub(crate) fn plugin_failed(&self, instance: u32, entry: &'static str, e: PluginError) -> CallOutcome {
        let name = self.instance_name(instance);
        let message = e.message.to_string();
        match e.kind {
            PluginErrorKind::FatalExit => CallOutcome::FatalExit,
            PluginErrorKind::Reentrancy => {
                self.trace(|| TraceEvent::PluginError {
                    device: name.to_string(),
                    entry,
                    error: "reentrancy",
                    message: message.clone(),
                });
                self.callers.borrow_mut().push(instance);
                self.violation(
                    "REENTRANCY",
                    format!("{name} was re-entered in its {entry} entry point while its state was borrowed: {message}"),
                    None,
                );
                self.callers.borrow_mut().pop();
                CallOutcome::Reentrancy
            }
            PluginErrorKind::TypeMismatch => {
                self.callers.borrow_mut().push(instance);
                self.violation("CALLBACK_TYPE_MISMATCH", format!("{name}: {message}"), None);
                self.callers.borrow_mut().pop();
                CallOutcome::Error
            }
            PluginErrorKind::Panic => {
                tracing::error!(device = &*name, entry, "plugin panicked: {message}; the instance is marked failed");
                self.trace(|| TraceEvent::PluginError {
                    device: name.to_string(),
                    entry,
                    error: "panic",
                    message: message.clone(),
                });
                self.mark_failed(instance);
                CallOutcome::Panic
            }
            PluginErrorKind::Failed => {
                self.trace(|| TraceEvent::PluginError {
                    device: name.to_string(),
                    entry,
                    error: "error",
                    message: message.clone(),
                });
                CallOutcome::Error
            }
        }
    }

    /// Mark an instance failed: it is never called again, and a device
    /// leaves the message broadcasts.
    pub(crate) fn mark_failed(&self, instance: u32) {
        if let Some(r) = self.instances.borrow_mut().get_mut(instance.wrapping_sub(1) as usize) {
            r.failed = true;
        }
        let mut reg = self.registry.borrow_mut();
        if let Some(i) = reg.by_instance(instance) {
            reg.slots[i].state = crate::registry::DeviceState::Failed;
        }
    }
}

/// A machine: boot it, run it, shut it down, read its trace.
pub struct Machine {
    core: Box<Core>,
}

impl std::fmt::Debug for Machine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Machine").field("phase", &self.core.phase.get()).finish_non_exhaustive()
    }
}

impl Machine {
    /// A machine for `manifest`, not yet booted.
    pub fn new(manifest: Manifest, options: MachineOptions) -> Self {
        Machine { core: Box::new(Core::new(manifest, options)) }
    }

    /// The manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.core.manifest
    }

    /// The current phase.
    pub fn phase(&self) -> Phase {
        self.core.phase.get()
    }

    /// Virtual time since boot.
    pub fn now(&self) -> Instant {
        self.core.now.get()
    }

    /// The plugin search path.
    pub fn search_path(&self) -> &SearchPath {
        &self.core.search
    }

    /// Load, validate and order the device list without initializing it
    /// (what `vmm list` shows).
    pub fn load_devices(&mut self) -> Result<()> {
        self.core.load_device_list()
    }

    /// Boot: load the devices, run real-mode init and the three init
    /// phases, create the system VM and send `Sys_VM_Init`.
    pub fn boot(&mut self) -> Result<()> {
        let result = self.core.boot();
        self.fail_on_fatal(result)
    }

    /// Shut down normally: terminate the VMs, then `Sys_VM_Terminate`,
    /// `System_Exit`, `Sys_Critical_Exit` (and their `xx2` twins to 4.0
    /// devices in reverse order).
    pub fn shutdown(&mut self) -> Result<()> {
        if self.core.phase.get() >= Phase::Shutdown {
            return Ok(());
        }
        self.core.shutdown(false);
        self.fail_on_fatal(Ok(()))
    }

    /// If a fatal error happened, run the crash exit and return it as the
    /// error.
    fn fail_on_fatal(&mut self, result: Result<()>) -> Result<()> {
        let fatal = self.core.fatal.borrow().clone();
        match (fatal, result) {
            (Some(f), _) => {
                if self.core.phase.get() < Phase::Shutdown {
                    self.core.shutdown(true);
                }
                Err(Error::Fatal { message: f.message, device: f.device })
            }
            (None, Err(e)) => {
                self.core.finish_trace();
                Err(e)
            }
            (None, Ok(())) => Ok(()),
        }
    }

    /// The device list.
    pub fn devices(&self) -> Vec<DeviceSummary> {
        self.core.registry.borrow().init_order.iter().map(|&i| self.core.device_summary(i)).collect()
    }

    /// The trace records kept in memory (with `capture_trace`).
    pub fn trace(&self) -> Vec<TraceRecord> {
        self.core.trace.borrow().records().to_vec()
    }

    /// How many violations were reported.
    pub fn violation_count(&self) -> u64 {
        self.core.violation_count.get()
    }

    /// Flush the trace file.
    pub fn finish_trace(&self) -> Result<()> {
        self.core.finish_trace_result()
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        self.core.release_instances();
    }
}
