//! Building the device list and the system control message sequences:
//! real-mode init with the duplicate-ID rules, `Sys_Critical_Init` /
//! `Device_Init` / `Init_Complete` in init order, `Sys_VM_Init`, and the
//! normal and crash exits.

use std::path::PathBuf;
use std::rc::Rc;

use vmm_plugin_api::abi::{Carry, ControlArgs, ModuleKind};
use vmm_plugin_api::ddk::*;

use crate::builtin;
use crate::error::{Error, LoadCause, Result};
use crate::machine::device::InstanceCode;
use crate::machine::registry::{DeviceInfo, DeviceSlot, DeviceState, DeviceSummary, Inst, LoadRequest};
use crate::machine::{Core, Phase};
use crate::trace::{CallOutcome, CancelReason, RejectReason, TraceEvent};
use crate::violation::Violation;
use crate::vmm::context::Context;
use crate::vmm::ids::{InstanceId, VmId};

/// Names of devices that were part of WIN386 but that this host does not
/// emulate (for a precise error message).
const WIN386_BUILTINS: [&str; 22] = [
    "VMM", "DEBUG", "VPICD", "VDMAD", "VTD", "V86MMGR", "PAGESWAP", "PARITY", "REBOOT", "VDD", "VSD", "VMD", "VKD",
    "VCD", "VPD", "BLOCKDEV", "DOSMGR", "WINLOAD", "VMPOLL", "BIOSXLAT", "VNETBIOS", "DOSNET",
];

impl From<Carry> for CallOutcome {
    fn from(c: Carry) -> Self {
        match c {
            Carry::Clear => CallOutcome::Clear,
            Carry::Set => CallOutcome::Set,
        }
    }
}

impl Core {
    /// Run `f` as a call of `instance` in `context` (for built-in devices,
    /// whose code is host code but whose services must be attributed).
    pub(crate) fn with_frame<T>(&self, instance: InstanceId, context: Context, f: impl FnOnce() -> T) -> T {
        let outer = self.enter_frame(context, instance);
        let r = f();
        self.leave_frame(outer);
        r
    }

    /// Load, validate and order the device list (no real-mode init).
    pub(crate) fn load_device_list(&self) -> Result<()> {
        if !self.registry.borrow().slots.is_empty() {
            return Ok(());
        }
        let m = &self.manifest;
        let requests = m
            .tsr
            .iter()
            .map(|t| LoadRequest {
                name: t.device.clone(),
                origin: t.origin.clone(),
                from_int2f: true,
                reference_data: t.reference_data,
            })
            .chain(m.devices.iter().filter(|d| !d.dynamic).map(|d| LoadRequest {
                name: d.name.clone(),
                origin: d.origin.clone(),
                from_int2f: false,
                reference_data: 0,
            }));
        for request in requests.collect::<Vec<_>>() {
            let slot = self.load_device(&request)?;
            let mut reg = self.registry.borrow_mut();
            let mut slot = slot;
            slot.load_index = reg.slots.len();
            reg.slots.push(slot);
        }
        self.registry.borrow_mut().sort();
        Ok(())
    }

    fn reject_load(&self, request_name: &str, file: PathBuf, cause: LoadCause) -> Error {
        let message = cause.to_string();
        self.trace(|| TraceEvent::DeviceRejected {
            device: request_name.to_string(),
            id: None,
            file: file.display().to_string(),
            reason: RejectReason::LoadError,
            message: message.clone(),
        });
        Error::Load { name: request_name.to_string(), file, cause }
    }

    /// Load one device: a built-in, or a plugin file whose instance the
    /// factory creates.
    pub(crate) fn load_device(&self, request: &LoadRequest) -> Result<DeviceSlot> {
        if let Some(name) = request.name.strip_prefix('*') {
            let Some(b) = builtin::create(self, name) else {
                let available = builtin::BUILTINS.iter().map(|b| format!("*{b}")).collect::<Vec<_>>().join(", ");
                let available = if WIN386_BUILTINS.contains(&name.to_ascii_uppercase().as_str()) {
                    format!("{available} (*{name} was part of WIN386 but is not emulated; remove the line)")
                } else {
                    available
                };
                return Err(Error::UnknownBuiltin {
                    name: name.to_string(),
                    origin: request.origin.clone(),
                    available,
                });
            };
            let info = b.info(self);
            let rc_name: Rc<str> = Rc::from(info.name.as_str());
            let instance = self.add_instance(rc_name.clone(), Some(InstanceCode::Builtin(b)));
            return Ok(DeviceSlot {
                name: rc_name,
                file: PathBuf::from(format!("*{}", info.name)),
                build: String::new(),
                info,
                builtin: true,
                state: DeviceState::Loaded,
                instance,
                from_int2f: request.from_int2f,
                reference_data: request.reference_data,
                load_index: 0,
                initialized: false,
                dynamic: false,
                load_count: 0,
            });
        }
        let wanted = crate::resolve::library_name(&request.name);
        let (lib, file) = match self.in_process.iter().find(|(n, _)| *n == wanted) {
            Some((_, lib)) => (*lib, lib.path.clone()),
            None => {
                let file = self.search.find(&request.name).ok_or_else(|| {
                    self.reject_load(
                        &request.name,
                        PathBuf::from(&request.name),
                        LoadCause::NotFound { searched: self.search.dirs().to_vec(), build: None },
                    )
                })?;
                // The library may be shared with an earlier load of the same
                // bytes from another path: the device's file is this one.
                let lib = self
                    .load_plugin_file(&file)
                    .map_err(|cause| self.reject_load(&request.name, file.clone(), cause))?;
                (lib, file)
            }
        };
        let info = lib.info;
        if !info.panic_unwind {
            return Err(self.reject_load(&request.name, file, LoadCause::PanicAbort));
        }
        let wrong_kind = match info.kind {
            ModuleKind::Vxd => None,
            ModuleKind::WinDll => Some("a Windows DLL (load it with LoadLibrary or from an application)"),
            ModuleKind::WinApp => Some("a Windows application (list it in [windows] load)"),
            ModuleKind::DosProgram => Some("a DOS program (run it with [[vm]] program)"),
        };
        if let Some(kind) = wrong_kind {
            return Err(self.reject_load(
                &request.name,
                file,
                LoadCause::WrongKind(format!("it is {kind}, not a VxD")),
            ));
        }
        let Some(descriptor) = info.device.into_option() else {
            return Err(self.reject_load(
                &request.name,
                file,
                LoadCause::Descriptor("the plugin says it is a VxD but has no device descriptor".to_string()),
            ));
        };
        let dinfo = DeviceInfo::from_descriptor(&descriptor);
        if let Err(cause) = dinfo.validate() {
            return Err(self.reject_load(&request.name, file, cause));
        }
        let rc_name: Rc<str> = Rc::from(dinfo.name.as_str());
        let instance = self.add_instance(rc_name.clone(), None);
        if let Some(what) = dinfo.missing_id() {
            // Windows loads such a device; nothing can reach its services
            // or API, since they are found by device ID.
            self.as_caller(instance, || {
                self.violation(
                    Violation::ApiWithoutId,
                    format!(
                        "{} ({}) has {what} but Undefined_Device_ID: it is loaded, but its services and API \
                         cannot be reached (a device that exports them needs a unique device ID, KB Q84000)",
                        dinfo.name,
                        file.display()
                    ),
                    None,
                )
            });
        }
        let created = self.invoke(instance, "create", Context::Init, |cx| (lib.root.create())(cx));
        let raw = match created {
            Ok(raw) => raw,
            Err(outcome) => {
                let why = match outcome {
                    CallOutcome::Panic => "the factory panicked",
                    _ => "the factory returned an error",
                };
                return Err(self.reject_load(&request.name, file, LoadCause::Factory(why.to_string())));
            }
        };
        let inst = Inst { this: raw.this, vtable: raw.vtable };
        self.with_instance(instance, |r| r.code = Some(InstanceCode::Plugin { inst }));
        Ok(DeviceSlot {
            name: rc_name,
            file,
            build: lib.build.clone(),
            info: dinfo,
            builtin: false,
            state: DeviceState::Loaded,
            instance,
            from_int2f: request.from_int2f,
            reference_data: request.reference_data,
            load_index: 0,
            initialized: false,
            dynamic: false,
            load_count: 0,
        })
    }

    /// Boot the machine up to `Running`.
    pub(crate) fn boot(&self) -> Result<()> {
        self.check_manifest_references()?;
        let (major, minor) = self.manifest.machine.windows_version;
        self.trace(|| TraceEvent::Machine {
            seed: self.seed,
            order: self.manifest.machine.order,
            windows: format!("{major}.{minor:02}"),
        });
        self.load_device_list()?;
        self.enter_phase(Phase::RealModeInit, "real_mode_init");
        self.real_mode_init()?;
        self.registry.borrow_mut().sort();
        self.create_system_vm();
        for (phase, label, message) in [
            (Phase::SysCriticalInit, "sys_critical_init", SYS_CRITICAL_INIT),
            (Phase::DeviceInit, "device_init", DEVICE_INIT),
            (Phase::InitComplete, "init_complete", INIT_COMPLETE),
        ] {
            self.enter_phase(phase, label);
            self.init_phase(message);
            if self.is_fatal() {
                return Ok(());
            }
        }
        self.mark_active();
        self.enter_phase(Phase::SysVmInit, "sys_vm_init");
        let sys_vm = self.sys_vm.get();
        for idx in self.recipients(false, |_| true) {
            let outcome = self.send_control(idx, SYS_VM_INIT, Some(sys_vm), 0, Context::Control);
            if self.is_fatal() {
                return Ok(());
            }
            if outcome == CallOutcome::Set {
                let device = self.registry.borrow().slots[idx].info.name.clone();
                tracing::error!("{device} failed Sys_VM_Init: Windows exits");
                self.shutdown(true);
                return Err(Error::SysVmInitFailed { device });
            }
        }
        self.enter_phase(Phase::Running, "running");
        self.load_manifest_dynamic_devices()?;
        self.check_interrupt_names()?;
        self.check_irq_entries()?;
        self.schedule_manifest();
        self.start_windows_apps();
        self.start_message_server();
        Ok(())
    }

    /// `[[action]]` entries name VMs that exist in the manifest, and the
    /// programs `[[vm]]` and `[windows]` name load and have the right kind.
    fn check_manifest_references(&self) -> Result<()> {
        let m = &self.manifest;
        for v in &m.vms {
            match &v.program {
                Some(p) if crate::manifest::is_program_file(p) => {
                    let checked = self.load_program_file(p).and_then(|(path, image)| {
                        crate::ring3::machine_code::DosMachine::new(p, p, &image, &v.args)
                            .map(|_| ())
                            .map_err(|e| format!("program file `{p}` ({}): {e}", path.display()))
                    });
                    checked.map_err(|message| Error::Reference { origin: v.origin.clone(), message })?;
                }
                Some(p) => self.check_module(p, ModuleKind::DosProgram, &v.origin)?,
                None => {}
            }
        }
        for (app, origin) in &m.windows.load {
            let name = app.split(' ').next().unwrap_or(app);
            self.check_module(name, ModuleKind::WinApp, origin)?;
        }
        self.check_programs()?;
        for a in &m.actions {
            let known = a.vm.eq_ignore_ascii_case("system") || m.vms.iter().any(|v| v.name.eq_ignore_ascii_case(&a.vm));
            if !known {
                let names: Vec<&str> = std::iter::once("system").chain(m.vms.iter().map(|v| v.name.as_str())).collect();
                return Err(Error::Reference {
                    origin: a.origin.clone(),
                    message: format!("[[action]] names VM `{}`; the VMs are {}", a.vm, names.join(", ")),
                });
            }
        }
        Ok(())
    }

    /// `[[interrupt]]` entries name sources that devices registered during
    /// init.
    fn check_interrupt_names(&self) -> Result<()> {
        for i in &self.manifest.interrupts {
            if self.irq_by_name(&i.name).is_none() {
                let known = self.irqs.names();
                let known = if known.is_empty() { "none".to_string() } else { known.join(", ") };
                self.shutdown(false);
                return Err(Error::Reference {
                    origin: i.origin.clone(),
                    message: format!(
                        "[[interrupt]] names source `{}`, which no device registered (registered: {known})",
                        i.name
                    ),
                });
            }
        }
        Ok(())
    }

    pub(crate) fn enter_phase(&self, phase: Phase, label: &'static str) {
        self.phase.set(phase);
        tracing::debug!("phase {label}");
        self.trace(|| TraceEvent::Phase { phase: label });
    }

    /// Real-mode init in load order, applying the duplicate-ID rules.
    fn real_mode_init(&self) -> Result<()> {
        let count = self.registry.borrow().slots.len();
        for idx in 0..count {
            let (info, builtin, instance, from_int2f, reference_data, file) = {
                let reg = self.registry.borrow();
                let s = &reg.slots[idx];
                (s.info.clone(), s.builtin, s.instance, s.from_int2f, s.reference_data, s.file.clone())
            };
            let earlier = {
                let reg = self.registry.borrow();
                (info.device_id != UNDEFINED_DEVICE_ID)
                    .then(|| {
                        reg.slots[..idx]
                            .iter()
                            .find(|s| s.info.device_id == info.device_id && s.state == DeviceState::Loaded)
                            .map(|s| (s.info.name.clone(), s.file.clone(), s.from_int2f))
                    })
                    .flatten()
            };
            let mut flags = 0;
            if let Some((_, _, earlier_from_int2f)) = &earlier {
                flags |= DUPLICATE_DEVICE_ID;
                if *earlier_from_int2f {
                    flags |= DUPLICATE_FROM_INT2F;
                }
            }
            if from_int2f {
                flags |= LOADING_FROM_INT2F;
            }
            let (answer, edx, result) = match self.instance_code(instance) {
                Some(InstanceCode::Builtin(_)) | None => (DEVICE_LOAD_OK, reference_data, CallOutcome::Clear),
                Some(InstanceCode::Plugin { inst }) => {
                    match self.invoke(instance, "real_mode_init", Context::Init, |cx| {
                        (inst.vtable.real_mode_init())(inst.this, cx, flags, reference_data)
                    }) {
                        Ok(r) => (r.ax, r.edx, CallOutcome::Clear),
                        Err(outcome) => (ABORT_DEVICE_LOAD, reference_data, outcome),
                    }
                }
            };
            self.trace(|| TraceEvent::RealModeInit {
                device: info.name.clone(),
                flags,
                reference_data,
                answer,
                result,
            });
            let quiet = answer & NO_FAIL_MESSAGE != 0;
            let file_label = file.display().to_string();
            match answer & !NO_FAIL_MESSAGE {
                DEVICE_LOAD_OK if earlier.is_some() => {
                    let (first, first_file, _) = earlier.unwrap_or_default();
                    let err = Error::DuplicateDeviceId {
                        id: info.device_id,
                        first,
                        first_file,
                        second: info.name.clone(),
                        second_file: file.clone(),
                    };
                    self.reject(idx, RejectReason::DuplicateId, err.to_string());
                    return Err(err);
                }
                DEVICE_LOAD_OK => {
                    self.registry.borrow_mut().slots[idx].reference_data = edx;
                    self.trace(|| TraceEvent::DeviceLoaded {
                        device: info.name.clone(),
                        id: info.device_id,
                        init_order: info.init_order,
                        version: info.version(),
                        file: if builtin { format!("*{}", info.name) } else { file_label },
                        build: self.registry.borrow().slots[idx].build.clone(),
                        from_int2f,
                        v86_api: info.has_v86_api,
                        pm_api: info.has_pm_api,
                        services: info.services.len(),
                        instance: instance.raw(),
                    });
                    tracing::info!(
                        "loaded {} (ID {:#06X}, init order {:#010X}) from {}",
                        info.name,
                        info.device_id,
                        info.init_order,
                        file.display()
                    );
                }
                ABORT_DEVICE_LOAD => {
                    let why = if result == CallOutcome::Clear {
                        if earlier.is_some() {
                            "real-mode init saw DUPLICATE_DEVICE_ID and aborted its own load".to_string()
                        } else {
                            "real-mode init aborted the load of this device".to_string()
                        }
                    } else {
                        format!("real-mode init failed ({result:?}); the device is not loaded")
                    };
                    if !quiet {
                        tracing::warn!("{}: {why}", info.name);
                    }
                    let reason = if result == CallOutcome::Clear {
                        RejectReason::AbortDeviceLoad
                    } else {
                        RejectReason::RealModeInitFailed
                    };
                    self.reject(idx, reason, why);
                }
                ABORT_WIN386_LOAD => {
                    self.reject(
                        idx,
                        RejectReason::AbortWin386Load,
                        "real-mode init aborted the load of Windows".to_string(),
                    );
                    if !quiet {
                        tracing::error!("{}: real-mode init aborted the load of Windows", info.name);
                    }
                    return Err(Error::AbortWin386Load { device: info.name.clone() });
                }
                other => {
                    self.with_frame(instance, Context::Init, || {
                        self.violation(
                            Violation::BadRealModeInitAnswer,
                            format!(
                                "{} answered real-mode init with AX={other:#06X}; expected DEVICE_LOAD_OK, \
                                 ABORT_DEVICE_LOAD or ABORT_WIN386_LOAD",
                                info.name
                            ),
                            None,
                        )
                    });
                    self.reject(
                        idx,
                        RejectReason::AbortDeviceLoad,
                        format!("invalid real-mode init answer {other:#06X}"),
                    );
                }
            }
        }
        Ok(())
    }

    /// Drop device `idx` from the list with a trace record.
    fn reject(&self, idx: usize, reason: RejectReason, message: String) {
        let (name, id, file) = {
            let mut reg = self.registry.borrow_mut();
            let s = &mut reg.slots[idx];
            s.state = DeviceState::Failed;
            (s.info.name.clone(), s.info.device_id, s.file_label())
        };
        self.trace(|| TraceEvent::DeviceRejected { device: name, id: Some(id), file, reason, message });
    }

    /// Devices that receive a broadcast, in init order (`reverse`: descending).
    pub(crate) fn recipients(&self, reverse: bool, filter: impl Fn(&DeviceSlot) -> bool) -> Vec<usize> {
        let reg = self.registry.borrow();
        let mut v: Vec<usize> =
            reg.init_order.iter().copied().filter(|&i| reg.slots[i].alive() && filter(&reg.slots[i])).collect();
        if reverse {
            v.reverse();
        }
        v
    }

    /// One init phase: every device gets the message before the next phase;
    /// a device that fails is dropped.
    fn init_phase(&self, message: u32) {
        let sys_vm = self.sys_vm.get();
        for idx in self.recipients(false, |_| true) {
            let outcome = self.send_control(idx, message, Some(sys_vm), 0, Context::Init);
            if self.is_fatal() {
                return;
            }
            match outcome {
                CallOutcome::Clear => {
                    if message == SYS_CRITICAL_INIT {
                        self.registry.borrow_mut().slots[idx].initialized = true;
                    }
                }
                CallOutcome::Reentrancy | CallOutcome::Error => {}
                _ => {
                    let name = control_message_name(message);
                    let why = match outcome {
                        CallOutcome::Set => format!("failed {name} (carry set); the device is dropped"),
                        _ => format!("{outcome:?} in {name}; the device is dropped"),
                    };
                    let device = self.registry.borrow().slots[idx].info.name.clone();
                    tracing::warn!("{device} {why}");
                    self.reject(idx, RejectReason::InitFailed, why);
                }
            }
        }
    }

    fn mark_active(&self) {
        for s in self.registry.borrow_mut().slots.iter_mut() {
            if s.state == DeviceState::Loaded {
                s.state = DeviceState::Active;
            }
        }
    }

    /// Send one control message to device `idx` and trace it.
    pub(crate) fn send_control(
        &self,
        idx: usize,
        message: u32,
        vm: Option<VmId>,
        edx: u32,
        context: Context,
    ) -> CallOutcome {
        self.send_control_regs(idx, message, vm, edx, (0, 0), context)
    }

    /// [`Core::send_control`] with ESI and EDI (`esi_edi`) too.
    pub(crate) fn send_control_regs(
        &self,
        idx: usize,
        message: u32,
        vm: Option<VmId>,
        edx: u32,
        esi_edi: (u32, u32),
        context: Context,
    ) -> CallOutcome {
        let (instance, name) = {
            let reg = self.registry.borrow();
            let s = &reg.slots[idx];
            (s.instance, s.name.clone())
        };
        let args = ControlArgs { message, vm: vm.map_or(0, VmId::raw), edx, esi: esi_edi.0, edi: esi_edi.1 };
        let nest_vm = vm.unwrap_or(self.cur_vm.get());
        let depth = self.nest_mark();
        let outcome = self.stack.sending(message, || self.device_control(instance, context, &args));
        self.check_nest_balance(nest_vm, depth, "a control procedure", || instance);
        self.trace(|| TraceEvent::Control {
            device: name.to_string(),
            message: control_message_name(message),
            number: message,
            vm: vm.map(VmId::raw),
            edx: (edx != 0).then_some(edx),
            result: outcome,
        });
        if outcome == CallOutcome::Set && !can_fail(message) {
            self.with_frame(instance, context, || {
                self.violation(
                    Violation::ControlMustSucceed,
                    format!(
                        "{name} returned carry set from {}, which must return carry clear",
                        control_message_name(message)
                    ),
                    None,
                )
            });
        }
        outcome
    }

    /// Broadcast an exit-type message: ascending init order to every
    /// initialized device, then its `xx2` twin in descending order to 4.0
    /// devices.
    fn exit_broadcast(&self, message: u32, twin: u32) {
        let sys_vm = Some(self.sys_vm.get());
        for idx in self.recipients(false, |s| s.initialized) {
            self.send_control(idx, message, sys_vm, 0, Context::Control);
        }
        for idx in self.recipients(true, |s| s.initialized && s.info.sdk_version >= DDK_VERSION_400) {
            self.send_control(idx, twin, sys_vm, 0, Context::Control);
        }
    }

    /// Shut down: a normal exit sends `Sys_VM_Terminate` first; a crash exit
    /// (Fatal_Error_Handler) skips it but still sends `System_Exit` and
    /// `Sys_Critical_Exit`.
    pub(crate) fn shutdown(&self, crash: bool) {
        if self.phase.get() >= Phase::Shutdown {
            return;
        }
        let booted = self.phase.get() > Phase::RealModeInit;
        let running = self.phase.get() >= Phase::Running;
        self.phase.set(Phase::Shutdown);
        if running && !crash {
            self.destroy_dos_vms();
        }
        self.cancel_everything(CancelReason::Shutdown);
        self.drop_appy_events();
        if booted {
            if !crash {
                self.trace(|| TraceEvent::Phase { phase: "sys_vm_terminate" });
                self.exit_broadcast(SYS_VM_TERMINATE, SYS_VM_TERMINATE2);
            }
            self.trace(|| TraceEvent::Phase { phase: "system_exit" });
            self.exit_broadcast(SYSTEM_EXIT, SYSTEM_EXIT2);
            self.trace(|| TraceEvent::Phase { phase: "sys_critical_exit" });
            self.exit_broadcast(SYS_CRITICAL_EXIT, SYS_CRITICAL_EXIT2);
        }
        // Appy-time events requested during the exit messages never run.
        self.drop_appy_events();
        self.enter_phase(Phase::Stopped, "stopped");
        self.finish_trace();
    }

    /// Cancel every pending event and time-out (they never run), tracing
    /// each with `reason`.
    pub(crate) fn cancel_everything(&self, reason: CancelReason) {
        let events = self.sched.event_handles();
        for h in events {
            self.cancel_event(h, reason);
        }
        let timeouts = self.sched.timeouts_where(|h, _| Some(h));
        for h in timeouts {
            self.cancel_timeout(h, reason);
        }
    }

    /// Flush the trace, logging a write error.
    pub(crate) fn finish_trace(&self) {
        if let Err(e) = self.trace.borrow_mut().finish() {
            tracing::error!("writing the trace failed: {e}");
        }
    }

    /// Flush the trace, returning a write error.
    pub(crate) fn finish_trace_result(&self) -> Result<()> {
        self.trace.borrow_mut().finish().map_err(|e| Error::Io { path: PathBuf::from("trace"), message: e.to_string() })
    }

    /// Summary row of device `idx`.
    pub(crate) fn device_summary(&self, idx: usize) -> DeviceSummary {
        let reg = self.registry.borrow();
        let s = &reg.slots[idx];
        DeviceSummary {
            info: s.info.clone(),
            file: s.file_label(),
            build: s.build.clone(),
            active: s.alive(),
            from_int2f: s.from_int2f,
        }
    }

    /// Destroy every plugin instance (once, when the machine is dropped).
    pub(crate) fn release_instances(&self) {
        let instances: Vec<Inst> = self.instances.borrow_mut().iter_mut().filter_map(|r| r.take_plugin()).collect();
        for inst in instances {
            (inst.vtable.drop())(inst.this);
        }
    }
}

/// Whether a control message may legitimately return carry set.
fn can_fail(message: u32) -> bool {
    matches!(
        message,
        SYS_CRITICAL_INIT
            | DEVICE_INIT
            | INIT_COMPLETE
            | SYS_VM_INIT
            | CREATE_VM
            | VM_CRITICAL_INIT
            | VM_INIT
            | VM_RESUME
            | QUERY_DESTROY
            | BEGIN_PM_APP
            | CLOSE_VM_NOTIFY
            | SYS_DYNAMIC_DEVICE_INIT
            | SYS_DYNAMIC_DEVICE_EXIT
            | CREATE_THREAD
            | PNP_NEW_DEVNODE
            | W32_DEVICEIOCONTROL
            | DEBUG_QUERY
    ) || message > MAX_SYSTEM_CONTROL
}
