//! The machine: one emulated Windows session. [`Machine`] is the public
//! handle (boot, run, shut down, read the trace); `Core` is the state the
//! VMM services act on.
//!
//! **Invariant:** host state is never borrowed across a call into a plugin.
//! A plugin call can re-enter the host through a service, which can call a
//! plugin again (an inline event). Every `RefCell` in `Core` is borrowed
//! for one step and released before any plugin code runs.

mod call_stack;
mod crit;
pub(crate) mod device;
mod events;
mod failures;
mod io;
mod irq;
mod lifecycle;
mod nest;
pub mod registry;
pub(crate) mod rules;
pub(crate) mod run;
mod run_control;
mod vectors;
pub(crate) mod vpicd;

use std::cell::{Cell, RefCell};
use std::ffi::c_void;
use std::io::Write;
use std::path::PathBuf;
use std::rc::Rc;

use abi_stable::std_types::{RErr, ROk};
use vmm_plugin_api::abi::{HostCx, PluginError, PluginErrorKind, PluginResult, PluginRoot_Ref, ServiceCall, VmmError};

use crate::error::{Error, Result};
use crate::machine::call_stack::{CallStack, Frame};
use crate::machine::device::InstanceCode;
use crate::machine::failures::{Failures, FatalInfo};
use crate::machine::registry::{DeviceSummary, Inst, Registry};
use crate::machine::run::LoopEnd;
use crate::machine::run_control::RunControl;
use crate::manifest::{Manifest, ViolationPolicy};
use crate::resolve::SearchPath;
use crate::time::{Duration, Instant};
use crate::trace::{CallOutcome, DestroyReason, Trace, TraceEvent, TraceRecord};
use crate::violation::Violation;
use crate::vmm::callback::{Callback, CallbackHost};
use crate::vmm::context::Context;
use crate::vmm::crit::{CritSection, Semaphores};
use crate::vmm::heap::Heap;
use crate::vmm::ids::{InstanceId, VmId};
use crate::vmm::nest::NestCounts;
use crate::vmm::schedule::{Schedule, Settings, Source};
use crate::vmm::scheduler::Scheduler;
use crate::vmm::timers::TimerKind;
use crate::vmm::vm::VmTable;

/// How many plugin calls may be on the host stack at once: a device's
/// service that `VxDCall`s itself, an event callback that runs another
/// event inline, a callback that nests execution. The call that would pass
/// it is refused with a fatal error naming the device and the depth, at the
/// same call in every run and every build.
pub const MAX_CALL_DEPTH: u32 = 1000;

/// Below this depth plugin calls run on the caller's stack as they are.
const STACK_CHECK_FROM: u32 = 16;
/// From [`STACK_CHECK_FROM`] on, a plugin call that finds less stack than
/// this left runs on a fresh segment of [`STACK_SEGMENT`] bytes: one level
/// costs about 5 KB in a debug build and 1 KB in a release build (host and
/// plugin frames; see ARCHITECTURE.md), so [`MAX_CALL_DEPTH`] levels fit
/// whatever thread the machine runs on (a test's 2 MiB thread too).
const STACK_RED_ZONE: usize = 256 * 1024;
const STACK_SEGMENT: usize = 2 * 1024 * 1024;

/// How to run a machine, beyond what the manifest says.
#[derive(Default)]
pub struct MachineOptions {
    /// Keep trace records in memory ([`Machine::trace`]).
    pub capture_trace: bool,
    /// Write the trace as JSON Lines here.
    pub trace: Option<Box<dyn Write>>,
    /// Plugin directories searched before the manifest's.
    pub plugin_dirs: Vec<PathBuf>,
    /// Plugins linked into this process, by the name the manifest uses
    /// (matched like file names: `VPOSTD.386` finds `vpostd`).
    pub in_process: Vec<(String, PluginRoot_Ref)>,
    /// Replay this schedule: its order and seed replace the manifest's,
    /// and its decisions the order's choices.
    pub schedule: Option<Schedule>,
    /// Record the run's decisions ([`Machine::schedule`]).
    pub record_schedule: bool,
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

/// Why [`Machine::run`] returned.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum RunEnd {
    /// Nothing will ever happen again: every program ended or waits, no
    /// event or timer is pending.
    Quiescent,
    /// The requested virtual time was reached.
    Until,
}

/// A live instance the host can call: a plugin's device or ring-3 module,
/// or a built-in device. The one table of instances: the device list and
/// ring 3's modules name their instance by `InstanceId`.
pub(crate) struct InstanceRecord {
    pub(crate) name: Rc<str>,
    /// Its code (`None` while a plugin's factory runs, and once released).
    pub(crate) code: Option<InstanceCode>,
    pub(crate) failed: bool,
}

impl InstanceRecord {
    /// The plugin instance, if this is one and it is not released.
    pub(crate) fn plugin(&self) -> Option<Inst> {
        match self.code {
            Some(InstanceCode::Plugin { inst }) => Some(inst),
            _ => None,
        }
    }

    /// Take the plugin instance out (to drop it in its plugin): the record
    /// holds no code from then on.
    pub(crate) fn take_plugin(&mut self) -> Option<Inst> {
        let inst = self.plugin()?;
        self.code = None;
        Some(inst)
    }
}

/// The state every VMM service acts on.
pub(crate) struct Core {
    pub(crate) manifest: Manifest,
    pub(crate) search: SearchPath,
    pub(crate) in_process: Vec<(String, &'static crate::loader::PluginLibrary)>,
    pub(crate) trace: RefCell<Trace>,
    pub(crate) phase: Cell<Phase>,
    pub(crate) registry: RefCell<Registry>,
    pub(crate) instances: RefCell<Vec<InstanceRecord>>,
    pub(crate) heap: RefCell<Heap>,
    pub(crate) vms: RefCell<VmTable>,
    pub(crate) cur_vm: Cell<VmId>,
    pub(crate) sys_vm: Cell<VmId>,
    /// The plugin calls on the host stack.
    pub(crate) stack: CallStack,
    /// The fatal error, the violation count, the last plugin error.
    pub(crate) failures: Failures,
    /// Nested-execution blocks begun and ended so far (all VMs).
    pub(crate) nest: NestCounts,
    /// VMs blocked with `BLOCK_*` flags (when 0, the scheduler skips the
    /// checks those flags need).
    pub(crate) flagged_waits: Cell<u32>,
    /// Whether trace records are wanted (fixed when the machine is built;
    /// a cheaper check than borrowing the trace).
    pub(crate) trace_on: bool,
    /// The seed of this run.
    pub(crate) seed: u64,
    /// Where the explored orders' choices come from.
    pub(crate) schedule: RefCell<Source>,
    /// Virtual time, the time slice, pending events and timers.
    pub(crate) sched: Scheduler,
    pub(crate) crit: RefCell<CritSection>,
    pub(crate) sems: RefCell<Semaphores>,
    /// The I/O port table.
    pub(crate) io: RefCell<crate::vmm::io::IoPorts<crate::machine::io::PortHandler>>,
    /// COM1's UART (`[machine] com1`), if one is plugged in.
    pub(crate) com1: Option<RefCell<crate::hw::uart::Uart>>,
    /// Interrupts inside VMs: hook chains, vector tables, call-backs.
    pub(crate) vectors: RefCell<crate::vmm::vectors::Vectors>,
    /// The memory of DOS programs whose run is inside a call into the VMM
    /// (`v86_call_vmm`), by VM: the services reach it here.
    pub(crate) v86_mem: RefCell<Vec<(VmId, crate::ring3::machine_code::DosMemory)>>,
    /// Simulated hardware interrupt sources and their requests.
    pub(crate) irqs: crate::vmm::irq::IrqSources,
    pub(crate) hooks: RefCell<Hooks>,
    /// VMs waiting in nested run loops, innermost last.
    pub(crate) waiters: RefCell<Vec<VmId>>,
    /// What stops or paces the run loop.
    pub(crate) run: RunControl,
    /// Modules, programs, tasks and windows.
    pub(crate) ring3: RefCell<crate::ring3::state::Ring3State>,
    /// The Windows task whose code runs now (0: none).
    pub(crate) current_task: Cell<u16>,
    /// The SHELL device's state: appy time, broadcast hooks, the message
    /// server's local heap.
    pub(crate) shell: Rc<crate::shell::state::Shell>,
    /// The VPICD device's state (the `*VPICD` built-in is this value).
    pub(crate) vpicd: Rc<crate::machine::vpicd::Vpicd>,
    /// Ring-3 data blocks (`GlobalAlloc`), by selector.
    pub(crate) far: RefCell<crate::ring3::state::FarMemory>,
    /// Dynamic loading's init list and swapped-out states.
    pub(crate) dynamic: crate::machine::registry::Dynamic,
    /// `Hook_Device_Service`'s chains and the hooked calls in flight.
    pub(crate) service_hooks: crate::vmm::service_hooks::ServiceHooks,
}

/// Permanent hooks: `Call_When_Task_Switched` and `Call_When_Idle`, in
/// installation order (a hook is taken out of its slot while it runs).
#[derive(Default)]
pub(crate) struct Hooks {
    pub(crate) task_switched: Vec<Option<Callback>>,
    pub(crate) idle: Vec<Option<Callback>>,
    /// Per `idle` slot (its handle is the index + 1): the installing
    /// instance, and whether `Cancel_Call_When_Idle` removed it (a handler
    /// cancelled while it runs is dropped when it returns).
    pub(crate) idle_meta: Vec<(InstanceId, bool)>,
}

impl Core {
    fn new(mut manifest: Manifest, options: MachineOptions) -> Self {
        if let Some(schedule) = &options.schedule {
            // A replayed schedule brings its order and seed.
            manifest.machine.order = schedule.order;
            manifest.machine.seed = Some(schedule.seed);
        }
        let com1 = match manifest.machine.com1 {
            crate::manifest::SerialPort::None => None,
            crate::manifest::SerialPort::Loopback => Some(RefCell::new(crate::hw::uart::Uart::new())),
        };
        let mut search = SearchPath::for_manifest(&manifest);
        for dir in options.plugin_dirs.iter().rev() {
            search.prepend(dir.clone());
        }
        let seed = manifest.machine.seed.unwrap_or_else(|| {
            if manifest.machine.order.explored() {
                // No seed given: take one from the clock; every run prints it.
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(0)
            } else {
                0
            }
        });
        let trace_limit = manifest.machine.trace_limit;
        Core {
            seed,
            schedule: RefCell::new(Source::new(
                &Settings {
                    order: manifest.machine.order,
                    seed,
                    inject_rate: manifest.machine.inject_rate,
                    pct_depth: manifest.machine.pct_depth,
                    pct_steps: manifest.machine.pct_steps,
                },
                options.schedule.as_ref(),
                options.record_schedule,
            )),
            sched: Scheduler::default(),
            crit: RefCell::new(CritSection::default()),
            sems: RefCell::new(Semaphores::default()),
            io: RefCell::new(crate::vmm::io::IoPorts::default()),
            com1,
            vectors: RefCell::new(crate::vmm::vectors::Vectors::default()),
            v86_mem: RefCell::new(Vec::new()),
            irqs: crate::vmm::irq::IrqSources::new(),
            hooks: RefCell::new(Hooks::default()),
            waiters: RefCell::new(Vec::new()),
            run: RunControl::default(),
            ring3: RefCell::new(crate::ring3::state::Ring3State::default()),
            current_task: Cell::new(0),
            shell: Rc::new(crate::shell::state::Shell::default()),
            vpicd: Rc::new(crate::machine::vpicd::Vpicd::default()),
            far: RefCell::new(crate::ring3::state::FarMemory::default()),
            dynamic: Default::default(),
            service_hooks: Default::default(),
            in_process: options
                .in_process
                .iter()
                .map(|(n, r)| (crate::resolve::library_name(n), crate::loader::in_process(n, *r)))
                .collect(),
            manifest,
            search,
            trace_on: options.capture_trace || options.trace.is_some(),
            trace: RefCell::new({
                let mut trace = Trace::new(options.capture_trace, options.trace);
                trace.set_limit(trace_limit);
                trace
            }),
            phase: Cell::new(Phase::Loading),
            registry: RefCell::new(Registry::default()),
            instances: RefCell::new(Vec::new()),
            heap: RefCell::new(Heap::default()),
            vms: RefCell::new(VmTable::default()),
            cur_vm: Cell::new(VmId::NONE),
            sys_vm: Cell::new(VmId::NONE),
            stack: CallStack::default(),
            failures: Failures::default(),
            nest: NestCounts::default(),
            flagged_waits: Cell::new(0),
        }
    }

    // ---- trace and diagnostics -------------------------------------------

    /// Emit a trace record if anyone listens; `event` is only built then.
    /// (Only the check is inlined: with tracing off, a record costs its
    /// caller one test.)
    #[inline(always)]
    pub(crate) fn trace(&self, event: impl FnOnce() -> TraceEvent) {
        if self.trace_on {
            self.emit_trace(event);
        }
    }

    #[cold]
    #[inline(never)]
    fn emit_trace(&self, event: impl FnOnce() -> TraceEvent) {
        let full = {
            let mut trace = self.trace.borrow_mut();
            trace.emit(self.sched.now(), event());
            trace.limit_reached()
        };
        if full {
            // The file would grow past `--trace-limit`: stop the run (the
            // machine then shuts down normally).
            self.run.note_trace_full();
        }
    }

    /// The context of the innermost plugin call (`Control` outside any).
    #[inline]
    pub(crate) fn context(&self) -> Context {
        self.stack.context()
    }

    /// The instance of the innermost plugin call.
    #[inline]
    pub(crate) fn current_caller(&self) -> Option<InstanceId> {
        self.stack.caller()
    }

    /// Make a call of `instance` in `context` the innermost; returns the
    /// frame to give back to [`Core::leave_frame`].
    #[inline]
    pub(crate) fn enter_frame(&self, context: Context, instance: InstanceId) -> Option<Frame> {
        self.stack.enter(context, instance)
    }

    /// End the innermost call, making `outer` (from [`Core::enter_frame`])
    /// innermost again.
    #[inline]
    pub(crate) fn leave_frame(&self, outer: Option<Frame>) {
        self.stack.leave(outer);
    }

    /// The name of an instance (`<host>` for calls from outside the
    /// machine).
    pub(crate) fn instance_name(&self, instance: InstanceId) -> Rc<str> {
        let instances = self.instances.borrow();
        instance.index().and_then(|i| instances.get(i)).map(|r| r.name.clone()).unwrap_or_else(|| Rc::from("<host>"))
    }

    /// Register a new plugin instance; returns its number.
    pub(crate) fn add_instance(&self, name: Rc<str>, code: Option<InstanceCode>) -> InstanceId {
        let mut instances = self.instances.borrow_mut();
        instances.push(InstanceRecord { name, code, failed: false });
        InstanceId::from_index(instances.len() - 1)
    }

    /// The record of `instance` (`None` for the host or an unknown number).
    #[inline]
    pub(crate) fn with_instance<T>(&self, instance: InstanceId, f: impl FnOnce(&mut InstanceRecord) -> T) -> Option<T> {
        let mut instances = self.instances.borrow_mut();
        instance.index().and_then(|i| instances.get_mut(i)).map(f)
    }

    /// Report a broken VMM rule: a `violation` record with a stable `code`.
    /// Returns `true` if the call must be refused (policy `error` or
    /// `fatal`), `false` if it may proceed (policy `log`).
    pub(crate) fn violation(&self, rule: Violation, message: impl Into<String>, service: Option<&'static str>) -> bool {
        self.report_violation(rule.code(), message.into(), service)
    }

    /// A `violation` record with a code of the device's own
    /// (`Vmm::report_violation`), under the same policy as the host's.
    pub(crate) fn device_violation(
        &self,
        code: &str,
        message: impl Into<String>,
        service: Option<&'static str>,
    ) -> bool {
        self.report_violation(code, message.into(), service)
    }

    fn report_violation(&self, code: &str, message: String, service: Option<&'static str>) -> bool {
        let device = self.current_caller().map(|c| self.instance_name(c).to_string());
        self.failures.count_violation();
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

    /// `current + n` for a count the VMM keeps, if it stays within
    /// `0..=max`; else a `COUNT_OVERFLOW` violation naming the count, and
    /// the count is left as it was.
    pub(crate) fn count_add(
        &self,
        service: &'static str,
        what: &str,
        current: i64,
        n: i64,
        max: i64,
    ) -> std::result::Result<i64, VmmError> {
        match crate::vmm::limits::checked_count(current, n, max) {
            Some(v) => Ok(v),
            None => Err(self.refuse(
                Violation::CountOverflow,
                format!("{service}: {what} is {current}; adding {n} would pass its limit of {max}"),
                Some(service),
            )),
        }
    }

    /// Report a broken rule the call cannot get past: the `violation`
    /// record, and the error the service returns for it. Under the `error`
    /// and `log` policies that is `VmmError::VIOLATION`; under `fatal` the
    /// service shim turns every result into `VmmError::FATAL` (see
    /// `abi::guarded`).
    pub(crate) fn refuse(
        &self,
        rule: Violation,
        message: impl Into<String>,
        service: Option<&'static str>,
    ) -> VmmError {
        self.violation(rule, message, service);
        VmmError::VIOLATION
    }

    /// Whether plugin code may run now: never once the machine is fatal,
    /// except the exit messages of the crash exit (`System_Exit`,
    /// `Sys_Critical_Exit` and their `xx2` twins), which Windows still sent
    /// after `Fatal_Error_Handler`.
    #[inline]
    pub(crate) fn plugins_may_run(&self) -> bool {
        !self.is_fatal() || self.crash_exit_message()
    }

    #[cold]
    fn crash_exit_message(&self) -> bool {
        use vmm_plugin_api::ddk::{SYS_CRITICAL_EXIT, SYS_CRITICAL_EXIT2, SYSTEM_EXIT, SYSTEM_EXIT2};
        self.phase.get() == Phase::Shutdown
            && matches!(self.stack.message(), Some(SYSTEM_EXIT | SYSTEM_EXIT2 | SYS_CRITICAL_EXIT | SYS_CRITICAL_EXIT2))
            && self.stack.is_empty()
    }

    /// Stop the machine with a fatal error (the first one wins).
    pub(crate) fn set_fatal(&self, message: String, device: Option<String>) {
        if self.failures.is_fatal() {
            return;
        }
        tracing::error!(device = device.as_deref().unwrap_or("-"), "fatal error: {message}");
        self.trace(|| TraceEvent::FatalError { message: message.clone(), device: device.clone() });
        self.failures.set_fatal(FatalInfo { message, device });
    }

    /// Whether a fatal error stopped the machine.
    #[inline]
    pub(crate) fn is_fatal(&self) -> bool {
        self.failures.is_fatal()
    }

    // ---- calling plugins ------------------------------------------------------

    /// The instance pointer of a usable plugin instance.
    pub(crate) fn instance_this(&self, instance: InstanceId) -> Option<*const c_void> {
        let instances = self.instances.borrow();
        let r = instances.get(instance.index()?)?;
        if r.failed {
            return None;
        }
        r.plugin().map(|i| i.this)
    }

    /// Whether `instance` may still be called.
    pub(crate) fn instance_usable(&self, instance: InstanceId) -> bool {
        let instances = self.instances.borrow();
        instance.index().and_then(|i| instances.get(i)).is_some_and(|r| !r.failed)
    }

    /// Call into `instance` in `context`: push the context, run `f`, and turn
    /// a plugin error into a trace record (a panic also marks the instance
    /// failed). `entry` names the entry point for the trace.
    pub(crate) fn invoke<T>(
        &self,
        instance: InstanceId,
        entry: &'static str,
        context: Context,
        f: impl FnOnce(&HostCx) -> PluginResult<T>,
    ) -> std::result::Result<T, CallOutcome> {
        if !self.instance_usable(instance) || !self.plugins_may_run() {
            return Err(CallOutcome::Skipped);
        }
        self.invoke_checked(instance, entry, context, f)
    }

    /// [`Core::invoke`] for an instance already known to be usable.
    /// (Inlined: it is part of every event dispatch.)
    #[inline(always)]
    pub(crate) fn invoke_checked<T>(
        &self,
        instance: InstanceId,
        entry: &'static str,
        context: Context,
        f: impl FnOnce(&HostCx) -> PluginResult<T>,
    ) -> std::result::Result<T, CallOutcome> {
        let depth = self.stack.depth();
        if depth >= MAX_CALL_DEPTH {
            return Err(self.too_deep(instance, entry));
        }
        let call = || {
            let cx = self.cx(instance);
            let outer = self.enter_frame(context, instance);
            let result = self.stack.deeper(|| f(&cx));
            self.leave_frame(outer);
            result
        };
        let result =
            if depth < STACK_CHECK_FROM { call() } else { stacker::maybe_grow(STACK_RED_ZONE, STACK_SEGMENT, call) };
        match result {
            ROk(v) => Ok(v),
            RErr(e) => Err(self.plugin_failed(instance, entry, e)),
        }
    }

    /// [`Core::invoke`], keeping the plugin's own words: a failed call
    /// returns its outcome and the error text the plugin gave (empty for
    /// a call that could not be made), for reports that show the user why.
    pub(crate) fn invoke_reporting<T>(
        &self,
        instance: InstanceId,
        entry: &'static str,
        context: Context,
        f: impl FnOnce(&HostCx) -> PluginResult<T>,
    ) -> std::result::Result<T, (CallOutcome, String)> {
        if !self.instance_usable(instance) {
            return Err((CallOutcome::Skipped, String::new()));
        }
        let mut message = String::new();
        let result = self.invoke_checked(instance, entry, context, |cx| {
            let r = f(cx);
            if let RErr(e) = &r {
                message = e.message.to_string();
            }
            r
        });
        result.map_err(|outcome| (outcome, message))
    }

    /// What `instance` said when it last failed, if it was the last to fail.
    pub(crate) fn plugin_error_of(&self, instance: InstanceId) -> Option<String> {
        self.failures.plugin_error_of(instance)
    }

    /// Refuse a plugin call past [`MAX_CALL_DEPTH`]: a fatal error naming
    /// the device and the depth, where Windows would have overflowed its
    /// ring-0 stack.
    #[cold]
    #[inline(never)]
    fn too_deep(&self, instance: InstanceId, entry: &'static str) -> CallOutcome {
        let name = self.instance_name(instance);
        self.set_fatal(
            format!(
                "plugin calls nested too deep: calling {name}'s {entry} entry point would be call {} on the stack \
                 (the limit is {MAX_CALL_DEPTH})",
                MAX_CALL_DEPTH + 1
            ),
            Some(name.to_string()),
        );
        CallOutcome::Error
    }

    /// Run `f` attributed to `instance` (in the current context).
    pub(crate) fn as_caller<T>(&self, instance: InstanceId, f: impl FnOnce() -> T) -> T {
        let outer = self.enter_frame(self.context(), instance);
        let r = f();
        self.leave_frame(outer);
        r
    }

    /// Record how a plugin call failed; returns the outcome to trace.
    #[cold]
    pub(crate) fn plugin_failed(&self, instance: InstanceId, entry: &'static str, e: PluginError) -> CallOutcome {
        let name = self.instance_name(instance);
        let message = e.message.to_string();
        if matches!(e.kind, PluginErrorKind::Panic | PluginErrorKind::Failed) {
            self.failures.note_plugin_error(instance, message.clone());
        }
        match e.kind {
            PluginErrorKind::FatalExit => CallOutcome::FatalExit,
            PluginErrorKind::Reentrancy => {
                self.trace(|| TraceEvent::PluginError {
                    device: name.to_string(),
                    entry,
                    error: "reentrancy",
                    message: message.clone(),
                });
                self.as_caller(instance, || {
                    self.violation(
                        Violation::Reentrancy,
                        format!(
                            "{name} was re-entered in its {entry} entry point while its state was borrowed: {message}"
                        ),
                        None,
                    )
                });
                CallOutcome::Reentrancy
            }
            PluginErrorKind::TypeMismatch => {
                self.as_caller(instance, || {
                    self.violation(Violation::CallbackTypeMismatch, format!("{name}: {message}"), None)
                });
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
    pub(crate) fn mark_failed(&self, instance: InstanceId) {
        self.with_instance(instance, |r| r.failed = true);
        let mut reg = self.registry.borrow_mut();
        if let Some(i) = reg.by_instance(instance) {
            reg.slots[i].state = crate::machine::registry::DeviceState::Failed;
        }
    }
}

/// A machine: boot it, run it, shut it down, read its trace.
///
/// A machine stays on the thread that made it (plugins rely on it):
///
/// ```compile_fail
/// fn needs_send<T: Send>() {}
/// needs_send::<vmm_host::Machine>();
/// ```
pub struct Machine {
    pub(crate) core: Box<Core>,
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
        self.core.sched.now()
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

    /// Run until nothing will ever happen again (or `[machine] until`). Work
    /// that can never run again ends it with a `DEADLOCK` fatal error, work
    /// that keeps virtual time still with a `LIVELOCK` one, and a trace file
    /// at its limit with [`Error::TraceLimit`] after a normal shutdown.
    pub fn run(&mut self) -> Result<RunEnd> {
        if self.core.phase.get() != Phase::Running {
            return Ok(RunEnd::Quiescent);
        }
        let end = self.core.run_machine();
        self.fail_on_fatal(Ok(()))?;
        self.stop_on_full_trace()?;
        Ok(match end {
            LoopEnd::Stopped => RunEnd::Until,
            _ => RunEnd::Quiescent,
        })
    }

    /// Run for `d` of virtual time; stops earlier only if nothing will ever
    /// happen again (the clock is still moved to the end). If, before the
    /// end, an event is pending or a VM is blocked and nothing but the end
    /// is ahead, it waits forever: a `DEADLOCK` fatal error (what the caller
    /// might do after this call does not count).
    pub fn run_for(&mut self, d: Duration) -> Result<RunEnd> {
        if self.core.phase.get() != Phase::Running {
            return Ok(RunEnd::Quiescent);
        }
        let until = self.core.sched.now() + d;
        self.core.run.clear_stop();
        self.core.sched.timer_at(until, TimerKind::Stop);
        let end = self.core.run.top_level(|| self.core.run_until(&|_| false, None));
        self.core.run.clear_stop();
        self.fail_on_fatal(Ok(()))?;
        self.stop_on_full_trace()?;
        if end == LoopEnd::Quiescent {
            self.core.advance_to(until, None);
            return Ok(RunEnd::Quiescent);
        }
        Ok(RunEnd::Until)
    }

    /// Stop at the next safe point between VMM events once `flag` is set
    /// (by a signal handler, another thread): the run functions return as
    /// at `[machine] until` ([`RunEnd::Until`]), and [`Machine::shutdown`]
    /// then sends the exit messages. `--realtime` pacing wakes up for it.
    pub fn interrupt_on(&mut self, flag: std::sync::Arc<std::sync::atomic::AtomicBool>) {
        self.core.run.interrupt_on(flag);
    }

    /// Raise the interrupt source `name` (as `[[interrupt]]` would); its
    /// handler runs at the next step.
    pub fn raise_interrupt(&mut self, name: &str) -> Result<()> {
        let irq = self.core.irq_by_name(name).ok_or_else(|| Error::Fatal {
            message: format!("no interrupt source named `{name}` is registered"),
            device: None,
        })?;
        self.core.request_interrupt(irq).map_err(|e| Error::Fatal { message: e.to_string(), device: None })
    }

    /// Assert physical IRQ `irq` (0-15) now, as `[[irq]]` would: VPICD
    /// takes it (the virtualizing devices' `Hw_Int`, or the default
    /// handling). An error if the IRQ is not 0-15 or VPICD is not loaded.
    pub fn raise_physical_irq(&mut self, irq: u8) -> Result<()> {
        self.physical_irq_arg("raise", irq)?;
        self.core.raise_physical_irq(irq);
        Ok(())
    }

    /// Stop asserting physical IRQ `irq` (0-15): a level-triggered line
    /// (`[[irq]] trigger = "level"`) drops its request; an edge-triggered
    /// one is unchanged. An error if the IRQ is not 0-15 or VPICD is not
    /// loaded.
    pub fn lower_physical_irq(&mut self, irq: u8) -> Result<()> {
        self.physical_irq_arg("lower", irq)?;
        self.core.lower_physical_irq(irq);
        Ok(())
    }

    /// A physical IRQ the test kit may raise or lower: 0-15, with VPICD
    /// loaded.
    fn physical_irq_arg(&self, verb: &str, irq: u8) -> Result<()> {
        if irq < 16 && self.core.vpicd_instance().is_some() {
            return Ok(());
        }
        Err(Error::Fatal {
            message: format!(
                "cannot {verb} physical IRQ {irq}: {}",
                if irq >= 16 { "IRQs are 0-15" } else { "VPICD is not loaded (*VPICD in [386Enh] device)" }
            ),
            device: None,
        })
    }

    /// Create a DOS VM now; its handle, or `None` if a device refused it.
    pub fn create_vm(&mut self, name: &str) -> Option<u32> {
        self.core.create_vm(name, None).map(VmId::raw)
    }

    /// Destroy a DOS VM normally (VM_Terminate, VM_Not_Executeable,
    /// Destroy_VM).
    pub fn destroy_vm(&mut self, vm: u32) {
        let vm = VmId::from_raw(vm);
        if vm != self.core.sys_vm.get() {
            self.core.destroy_vm(vm, 0, true, DestroyReason::Terminated);
        }
    }

    /// Start ring-3 program `program` with `args` now: a Windows application
    /// in the system VM, a DOS program in a DOS VM (from
    /// [`Machine::create_vm`]). Its program number, or `None` if it could
    /// not be loaded (a `program_ended` record with reason `load_failed`).
    pub fn start_program(&mut self, vm: u32, program: &str, args: &str) -> Option<u32> {
        self.core.start_program(VmId::from_raw(vm), program, args)
    }

    /// The handle of the VM named `name` (`system` for the system VM).
    pub fn vm(&self, name: &str) -> Option<u32> {
        self.core.vm_by_name(name).map(VmId::raw)
    }

    /// Enable or disable a VM's interrupts (CLI / STI), as an `[[action]]`.
    pub fn set_interrupts(&mut self, vm: u32, enabled: bool) {
        self.core.set_vm_interrupts(VmId::from_raw(vm), enabled);
    }

    /// Call a device service from outside the machine (a test, a
    /// benchmark), as `VxDCall (device_id << 16) | ordinal` with `call`'s
    /// registers; CF comes back in `call.regs.flags`.
    pub fn call_service(&mut self, service: u32, call: &mut ServiceCall) -> Result<()> {
        let r = self
            .core
            .with_frame(InstanceId::HOST, Context::Control, || self.core.vxd_call(InstanceId::HOST, service, call));
        self.fail_on_fatal(Ok(()))?;
        r.map_err(|e| Error::Fatal { message: format!("VxDCall {service:#010X}: {e}"), device: None })
    }

    /// The seed of this run.
    pub fn seed(&self) -> u64 {
        self.core.seed
    }

    /// The decisions of this run that differ from the default order, as
    /// far as it went (empty unless [`MachineOptions::record_schedule`]).
    pub fn schedule(&self) -> Schedule {
        self.core.schedule.borrow().recorded()
    }

    /// The pct order's tasks seen so far (sources of ready events; 0 in
    /// the other orders).
    pub fn pct_tasks(&self) -> u64 {
        self.core.schedule.borrow().pct_tasks()
    }

    /// The pct order's steps so far (choices among at least two tasks; 0
    /// in the other orders).
    pub fn pct_steps(&self) -> u64 {
        self.core.schedule.borrow().pct_steps()
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

    /// If the trace file reached its limit, shut down normally (nothing
    /// more is written) and return the error that says so.
    pub(crate) fn stop_on_full_trace(&mut self) -> Result<()> {
        if !self.core.run.trace_full() {
            return Ok(());
        }
        let at_ms = self.core.sched.now().as_millis();
        if self.core.phase.get() < Phase::Shutdown {
            self.core.shutdown(false);
        }
        Err(Error::TraceLimit { limit: self.core.manifest.machine.trace_limit, at_ms })
    }

    /// If a fatal error happened, run the crash exit and return it as the
    /// error.
    pub(crate) fn fail_on_fatal(&mut self, result: Result<()>) -> Result<()> {
        let fatal = self.core.failures.fatal();
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
        self.core.failures.violation_count()
    }

    /// Flush the trace file.
    pub fn finish_trace(&self) -> Result<()> {
        self.core.finish_trace_result()
    }

    /// Write the run as a Chrome trace / Perfetto timeline (needs
    /// `capture_trace`).
    pub fn write_timeline(&self, path: &std::path::Path) -> Result<()> {
        let value = crate::timeline::chrome_trace(self.core.trace.borrow().records());
        let text = serde_json::to_string(&value).unwrap_or_default();
        std::fs::write(path, text).map_err(|e| Error::Io { path: path.to_path_buf(), message: e.to_string() })
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        self.core.release_instances();
    }
}

impl Core {
    /// [`crate::loader::load`] for this machine: a file refused before loading is also a
    /// `plugin_rejected` record.
    pub(crate) fn load_plugin_file(
        &self,
        file: &std::path::Path,
    ) -> std::result::Result<&'static crate::loader::PluginLibrary, crate::error::LoadCause> {
        let r = crate::loader::load(file);
        if let Err(crate::error::LoadCause::Rejected(defect)) = &r {
            self.trace_plugin_rejected(file, defect);
        }
        r
    }

    /// A `plugin_rejected` record (and a warning) for `file`.
    pub(crate) fn trace_plugin_rejected(&self, file: &std::path::Path, defect: &crate::image::Defect) {
        tracing::warn!("{} refused: {}", file.display(), defect);
        self.trace(|| TraceEvent::PluginRejected {
            file: file.display().to_string(),
            defect: defect.code,
            message: defect.detail.clone(),
        });
    }
}

/// Callbacks reach plugins through the machine's guarded calls.
impl CallbackHost for Core {
    #[inline(always)]
    fn callable_instance(&self, owner: InstanceId) -> Option<*const c_void> {
        if !self.plugins_may_run() {
            return None;
        }
        self.instance_this(owner)
    }

    #[inline(always)]
    fn invoke_callback(
        &self,
        owner: InstanceId,
        context: Context,
        f: impl FnOnce(&HostCx) -> PluginResult<vmm_plugin_api::abi::Carry>,
    ) -> std::result::Result<vmm_plugin_api::abi::Carry, CallOutcome> {
        self.invoke_checked(owner, "callback", context, f)
    }

    #[inline(always)]
    fn in_frame(
        &self,
        owner: InstanceId,
        context: Context,
        f: impl FnOnce() -> vmm_plugin_api::abi::Carry,
    ) -> vmm_plugin_api::abi::Carry {
        self.with_frame(owner, context, f)
    }
}
