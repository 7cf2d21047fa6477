//! Dynamically loaded VxDs: loading a device while the machine runs
//! (`VXDLDR_LoadDevice`, manifest entries marked `dynamic`), unloading it
//! (`VXDLDR_UnloadDevice`), the unload hygiene the DDK leaves to the device
//! ("VXDLDR performs no cleanup") made visible, and hot reload: swapping a
//! device's code for a rebuilt copy with its state handed over.
//!
//! A dynamic device gets `Sys_Dynamic_Device_Init` when it loads and
//! `Sys_Dynamic_Device_Exit` when it unloads, never the three init phases;
//! it may refuse either. While those run (and while its factory and
//! `restore_state` run) the init-only services are legal for it.

use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Instant as WallInstant;

use abi_stable::std_types::RSlice;
use vmm_plugin_api::abi::{Carry, ModuleKind};
use vmm_plugin_api::ddk::*;

use crate::error::{Error, LoadCause};
use crate::machine::device::InstanceCode;
use crate::machine::registry::{DeviceInfo, DeviceState, Inst, LOADING, LoadRequest};
use crate::machine::{Core, Machine, Phase};
use crate::manifest::Origin;
use crate::trace::{CallOutcome, RejectReason, TraceEvent, UnloadReason};
use crate::vmm::context::Context;
use crate::vmm::ids::InstanceId;

/// Why a dynamic load or unload failed: a `VXDLDR_ERR_*` code and a
/// sentence for people.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct LoadError {
    pub(crate) code: u32,
    pub(crate) message: String,
}

impl LoadError {
    fn new(code: u32, message: impl Into<String>) -> Self {
        LoadError { code, message: message.into() }
    }
}

/// The result of a reload.
#[derive(Clone, Debug, PartialEq)]
pub struct ReloadReport {
    /// The device.
    pub device: String,
    /// `ok`, or why the old code stayed: `load_failed`, `layout_mismatch`,
    /// `not_a_device`, `create_failed`, `exit_refused`, `restore_refused`,
    /// `init_refused`, `replaced` (a new name or ID: unloaded and loaded),
    /// `loaded` (nothing ran from the file any more; it was loaded as a
    /// dynamic device again).
    pub result: &'static str,
    /// Content hash of the code that ran before.
    pub old_build: String,
    /// Content hash of the new file (empty if it could not be read).
    pub new_build: String,
    /// Bytes of state handed over (`None`: the old version handed none).
    pub state_bytes: Option<usize>,
    /// Resources the old instance still owned (each reported as a
    /// violation).
    pub leaks: u32,
    /// Wall-clock milliseconds from `started` to the end of the swap.
    pub latency_ms: f64,
    /// What went wrong, for people.
    pub message: Option<String>,
}

impl ReloadReport {
    /// Whether the new code runs.
    pub fn ok(&self) -> bool {
        matches!(self.result, "ok" | "replaced" | "loaded")
    }
}

/// The pseudo address VXDLDR hands out as a loaded device's DDB and
/// DeviceInfo: `0xC00D_0000 | instance`.
pub(crate) const DDB_BASE: u32 = 0xC00D_0000;

impl Core {
    /// Whether code of `instance` runs as part of its dynamic init (its
    /// factory, `restore_state`, `Sys_Dynamic_Device_Init`).
    pub(crate) fn in_dynamic_init(&self) -> bool {
        self.current_caller().is_some_and(|caller| self.dynamic.in_init(caller))
    }

    fn with_dynamic_init<T>(&self, instance: InstanceId, f: impl FnOnce() -> T) -> T {
        self.dynamic.with_init(instance, f)
    }

    /// `VXDLDR_LoadDevice`: load `name` (a plugin name or file), check its
    /// ID against the live devices, and with `init` send it
    /// `Sys_Dynamic_Device_Init`. Loading a dynamic device that is already
    /// loaded counts one more load and returns it. Returns the device's slot.
    pub(crate) fn load_dynamic(&self, name: &str, init: bool, origin: &Origin) -> Result<usize, LoadError> {
        if self.phase.get() >= Phase::Shutdown {
            return Err(LoadError::new(VXDLDR_ERR_DEVICE_REFUSED, "Windows is shutting down"));
        }
        let request =
            LoadRequest { name: name.to_string(), origin: origin.clone(), from_int2f: false, reference_data: 0 };
        // Already loaded from the same plugin file: one more load.
        let file = self.search.find(name);
        let existing = {
            let reg = self.registry.borrow();
            reg.slots.iter().position(|s| s.alive() && s.dynamic && file.as_ref().is_some_and(|f| *f == s.file))
        };
        if let Some(idx) = existing {
            self.registry.borrow_mut().slots[idx].load_count += 1;
            return Ok(idx);
        }
        let slot = self.with_dynamic_init(LOADING, || self.load_device(&request)).map_err(|e| {
            let code = match &e {
                Error::Load { cause: LoadCause::NotFound { .. } | LoadCause::Open(_), .. } => {
                    VXDLDR_ERR_FILE_OPEN_ERROR
                }
                Error::UnknownBuiltin { .. } => VXDLDR_ERR_FILE_OPEN_ERROR,
                Error::Load { cause: LoadCause::Factory(_), .. } => VXDLDR_ERR_DEVICE_REFUSED,
                _ => VXDLDR_ERR_BAD_DEVICE_FILE,
            };
            LoadError::new(code, e.to_string())
        })?;
        if slot.builtin {
            return Err(LoadError::new(
                VXDLDR_ERR_FILE_OPEN_ERROR,
                format!("{name} is a device built into the host: list it in [386Enh] device instead"),
            ));
        }
        // The ID rules of KB Q84000 apply at run time too.
        let clash = {
            let reg = self.registry.borrow();
            let by_id = reg.by_id(slot.info.device_id);
            let by_name = reg.by_name(&slot.info.name);
            by_id.or(by_name).map(|i| (reg.slots[i].info.name.clone(), reg.slots[i].info.device_id))
        };
        if let Some((other, id)) = clash {
            let message = format!(
                "{} (ID {:#06X}) clashes with the loaded device {other} (ID {id:#06X}): device IDs and names are unique",
                slot.info.name, slot.info.device_id
            );
            self.trace(|| TraceEvent::DeviceRejected {
                device: slot.info.name.clone(),
                id: Some(slot.info.device_id),
                file: slot.file.display().to_string(),
                reason: RejectReason::DuplicateId,
                message: message.clone(),
            });
            self.release_instance(slot.instance);
            return Err(LoadError::new(VXDLDR_ERR_DUPLICATE_DEVICE, message));
        }
        let info = slot.info.clone();
        let file = slot.file.display().to_string();
        let build = slot.build.clone();
        let instance = slot.instance;
        let idx = {
            let mut reg = self.registry.borrow_mut();
            let mut slot = slot;
            slot.load_index = reg.slots.len();
            slot.dynamic = true;
            slot.load_count = 1;
            reg.slots.push(slot);
            reg.sort();
            reg.slots.len() - 1
        };
        self.trace(|| TraceEvent::DeviceLoaded {
            device: info.name.clone(),
            id: info.device_id,
            init_order: info.init_order,
            version: info.version(),
            file,
            build,
            from_int2f: false,
            v86_api: info.has_v86_api,
            pm_api: info.has_pm_api,
            services: info.services.len(),
            instance: instance.raw(),
        });
        tracing::info!("VXDLDR loaded {} (ID {:#06X})", info.name, info.device_id);
        if init {
            self.dynamic_device_init(idx)?;
        }
        Ok(idx)
    }

    /// Send `Sys_Dynamic_Device_Init`; a refusal unloads the device (no
    /// `Sys_Dynamic_Device_Exit`) and is `VXDLDR_ERR_DEVICE_REFUSED`.
    pub(crate) fn dynamic_device_init(&self, idx: usize) -> Result<(), LoadError> {
        let (instance, name) = {
            let reg = self.registry.borrow();
            (reg.slots[idx].instance, reg.slots[idx].info.name.clone())
        };
        let sys = self.sys_vm.get();
        let outcome = self.with_dynamic_init(instance, || {
            self.send_control(idx, SYS_DYNAMIC_DEVICE_INIT, (!sys.is_none()).then_some(sys), 0, Context::Init)
        });
        if outcome == CallOutcome::Clear {
            self.dev_init_succeeded(idx);
            return Ok(());
        }
        let why = match outcome {
            CallOutcome::Set => "refused Sys_Dynamic_Device_Init (carry set)".to_string(),
            other => format!("failed Sys_Dynamic_Device_Init ({other:?})"),
        };
        self.discard_dynamic(idx, UnloadReason::InitRefused);
        Err(LoadError::new(VXDLDR_ERR_DEVICE_REFUSED, format!("{name} {why}")))
    }

    /// The device's dynamic init succeeded: it receives messages from now on.
    pub(crate) fn dev_init_succeeded(&self, idx: usize) {
        let mut reg = self.registry.borrow_mut();
        let s = &mut reg.slots[idx];
        s.state = DeviceState::Active;
        s.initialized = true;
    }

    /// Drop a dynamic device that never finished its init: its resources
    /// are reclaimed (and reported), its instance released.
    pub(crate) fn discard_dynamic(&self, idx: usize, reason: UnloadReason) {
        let (instance, name, id, file) = {
            let mut reg = self.registry.borrow_mut();
            let s = &mut reg.slots[idx];
            s.state = DeviceState::Unloaded;
            s.initialized = false;
            (s.instance, s.info.name.clone(), s.info.device_id, s.file.display().to_string())
        };
        let leaks = self.reclaim(instance, &name);
        self.release_instance(instance);
        self.trace(|| TraceEvent::DeviceUnloaded { device: name, id, file, reason, leaks });
    }

    /// `VXDLDR_UnloadDevice`: one load fewer; at zero, send
    /// `Sys_Dynamic_Device_Exit` (a refusal keeps the device, as
    /// `VXDLDR_ERR_DEVICE_UNLOADABLE`), reclaim what the device still owns
    /// (each item a `UNLOAD_LEAK` violation) and release the instance.
    pub(crate) fn unload_dynamic(&self, idx: usize) -> Result<(), LoadError> {
        self.unload_dynamic_keeping_state(idx, false).map(|_| ())
    }

    /// [`Core::unload_dynamic`]; with `keep_state`, the device's
    /// `save_state` after its `Sys_Dynamic_Device_Exit`.
    fn unload_dynamic_keeping_state(&self, idx: usize, keep_state: bool) -> Result<Option<Vec<u8>>, LoadError> {
        let (dynamic, count, name) = {
            let reg = self.registry.borrow();
            let s = &reg.slots[idx];
            (s.dynamic, s.load_count, s.info.name.clone())
        };
        if !dynamic {
            return Err(LoadError::new(
                VXDLDR_ERR_DEVICE_UNLOADABLE,
                format!("{name} was loaded at boot from [386Enh]; only dynamically loaded devices unload"),
            ));
        }
        if count > 1 {
            self.registry.borrow_mut().slots[idx].load_count -= 1;
            return Ok(None);
        }
        let initialized = self.registry.borrow().slots[idx].initialized;
        if initialized {
            let sys = self.sys_vm.get();
            let outcome =
                self.send_control(idx, SYS_DYNAMIC_DEVICE_EXIT, (!sys.is_none()).then_some(sys), 0, Context::Control);
            if outcome == CallOutcome::Set {
                return Err(LoadError::new(
                    VXDLDR_ERR_DEVICE_UNLOADABLE,
                    format!("{name} refused Sys_Dynamic_Device_Exit (carry set); it stays loaded"),
                ));
            }
        }
        let (instance, id, file) = {
            let mut reg = self.registry.borrow_mut();
            let s = &mut reg.slots[idx];
            s.state = DeviceState::Unloaded;
            s.initialized = false;
            s.load_count = 0;
            (s.instance, s.info.device_id, s.file.display().to_string())
        };
        let state = if keep_state { self.save_state(instance) } else { None };
        let leaks = self.reclaim(instance, &name);
        self.release_instance(instance);
        tracing::info!("VXDLDR unloaded {name}");
        self.trace(|| TraceEvent::DeviceUnloaded { device: name, id, file, reason: UnloadReason::Unloaded, leaks });
        Ok(state)
    }

    /// Release a device instance: it is dropped in its plugin and never
    /// called again (every callback it registered is skipped from now on).
    /// The library stays mapped: old code is never unmapped.
    pub(crate) fn release_instance(&self, instance: InstanceId) {
        let inst = {
            let mut instances = self.instances.borrow_mut();
            instance.index().and_then(|i| instances.get_mut(i)).and_then(|r| {
                r.failed = true;
                r.take_plugin()
            })
        };
        if let Some(inst) = inst {
            (inst.vtable.drop())(inst.this);
        }
    }

    // ---- hot reload ------------------------------------------------------------------------

    /// Replace the code of the live device `name` with the plugin in
    /// `file`, at a safe point (no device code is on the stack). See the
    /// module docs for the steps; whenever the new code cannot take over,
    /// the old instance keeps running (or is initialized again with its own
    /// state) and the report says why. `started` is when the change was
    /// noticed (for the latency).
    pub(crate) fn reload_device(&self, name: &str, file: &Path, started: WallInstant) -> ReloadReport {
        let found = {
            let reg = self.registry.borrow();
            reg.by_name(name).map(|i| (i, reg.slots[i].build.clone(), reg.slots[i].info.clone()))
        };
        let mut report = ReloadReport {
            device: name.to_string(),
            result: "ok",
            old_build: String::new(),
            new_build: String::new(),
            state_bytes: None,
            leaks: 0,
            latency_ms: 0.0,
            message: None,
        };
        let Some((idx, old_build, old_info)) = found else {
            report.result = "load_failed";
            report.message = Some(format!("no device named {name} is loaded"));
            return self.finish_reload(report, started);
        };
        report.old_build = old_build;
        let fail = |mut report: ReloadReport, result: &'static str, message: String| {
            report.result = result;
            report.message = Some(message);
            self.finish_reload(report, started)
        };
        // 1. Load and check the new copy.
        let lib = match self.load_plugin_file(file) {
            Ok(lib) => lib,
            Err(cause) => {
                let result = match cause {
                    LoadCause::LayoutMismatch(_)
                    | LoadCause::AbiStableVersion(_)
                    | LoadCause::IncompatibleVersion { .. } => "layout_mismatch",
                    _ => "load_failed",
                };
                return fail(report, result, format!("{}: {cause}", file.display()));
            }
        };
        report.new_build = lib.build.clone();
        let new_info = match (lib.info.kind, lib.info.device.into_option()) {
            (ModuleKind::Vxd, Some(d)) if lib.info.panic_unwind => DeviceInfo::from_descriptor(&d),
            _ => return fail(report, "not_a_device", format!("{} is not a VxD plugin", file.display())),
        };
        if let Err(cause) = new_info.validate() {
            return fail(report, "not_a_device", cause.to_string());
        }
        if new_info.name != old_info.name || new_info.device_id != old_info.device_id {
            return self.replace_device(idx, file, &new_info, report, started);
        }
        // 2. Create the new instance.
        let rc_name: Rc<str> = Rc::from(new_info.name.as_str());
        let new_instance = self.add_instance(rc_name.clone(), None);
        let created = self.with_dynamic_init(new_instance, || {
            self.invoke(new_instance, "create", Context::Init, |cx| (lib.root.create())(cx))
        });
        let raw = match created {
            Ok(raw) => raw,
            Err(outcome) => {
                return fail(report, "create_failed", format!("the new copy's factory failed ({outcome:?})"));
            }
        };
        let new_inst = Inst { this: raw.this, vtable: raw.vtable };
        self.with_instance(new_instance, |r| r.code = Some(InstanceCode::Plugin { inst: new_inst }));
        // 3. The old instance leaves: Sys_Dynamic_Device_Exit, its state,
        // what it still owns.
        let sys = self.sys_vm.get();
        let old_instance = self.registry.borrow().slots[idx].instance;
        self.failures.forget_plugin_error();
        let exit =
            self.send_control(idx, SYS_DYNAMIC_DEVICE_EXIT, (!sys.is_none()).then_some(sys), 0, Context::Control);
        if exit != CallOutcome::Clear {
            self.release_instance(new_instance);
            let said = self.plugin_error_of(old_instance).map(|m| format!(": {m}")).unwrap_or_default();
            return fail(report, "exit_refused", format!("{name} refused Sys_Dynamic_Device_Exit ({exit:?}){said}"));
        }
        let state = self.save_state(old_instance);
        report.state_bytes = state.as_ref().map(Vec::len);
        report.leaks = self.reclaim(old_instance, name);
        // 4. Swap the slot to the new code and hand the state over.
        let old_code = {
            let mut reg = self.registry.borrow_mut();
            let s = &mut reg.slots[idx];
            let old = (s.instance, s.build.clone(), s.file.clone(), s.info.clone());
            s.instance = new_instance;
            s.build = lib.build.clone();
            s.file = file.to_path_buf();
            s.info = new_info;
            old
        };
        let restored = match &state {
            Some(bytes) => self.restore_state(new_instance, bytes),
            None => Ok(()),
        };
        let taken_over = match restored {
            Err(why) => Err(("restore_refused", format!("the new copy refused the old state: {why}"))),
            Ok(()) => {
                self.failures.forget_plugin_error();
                let init = self.with_dynamic_init(new_instance, || {
                    self.send_control(idx, SYS_DYNAMIC_DEVICE_INIT, (!sys.is_none()).then_some(sys), 0, Context::Init)
                });
                if init == CallOutcome::Clear {
                    Ok(())
                } else {
                    // The device's own words, when it gave any (a panic's message).
                    let said = self.plugin_error_of(new_instance).map(|m| format!(": {m}")).unwrap_or_default();
                    Err(("init_refused", format!("the new copy failed Sys_Dynamic_Device_Init ({init:?}){said}")))
                }
            }
        };
        match taken_over {
            Ok(()) => {
                self.release_instance(old_instance);
                {
                    let mut reg = self.registry.borrow_mut();
                    reg.slots[idx].state = DeviceState::Active;
                    reg.slots[idx].initialized = true;
                }
                self.finish_reload(report, started)
            }
            Err((result, message)) => {
                // Back to the old code, initialized again with its own state.
                self.reclaim(new_instance, name);
                self.release_instance(new_instance);
                {
                    let mut reg = self.registry.borrow_mut();
                    let s = &mut reg.slots[idx];
                    (s.instance, s.build, s.file, s.info) = old_code;
                    s.state = DeviceState::Active;
                }
                if let Some(bytes) = &state {
                    let _ = self.restore_state(old_instance, bytes);
                }
                let again = self.with_dynamic_init(old_instance, || {
                    self.send_control(idx, SYS_DYNAMIC_DEVICE_INIT, (!sys.is_none()).then_some(sys), 0, Context::Init)
                });
                let message = if again == CallOutcome::Clear {
                    format!("{message}; the old code runs again")
                } else {
                    self.discard_dynamic(idx, UnloadReason::InitRefused);
                    format!("{message}; the old code then refused to start again and was unloaded")
                };
                fail(report, result, message)
            }
        }
    }

    /// Apply a watched file's change (`vmm run --watch`): reload the
    /// device that runs from the file. If none does any more (a rebuild
    /// with another name or ID unloaded it and its replacement did not
    /// load, or was unloaded since), the file is loaded as a dynamic device
    /// again: the file stays watched whatever happened to its device. A
    /// change refused before loading is a `plugin_rejected` record and a
    /// `load_failed` reload; the old code keeps running.
    #[cfg(feature = "watch")]
    pub(crate) fn reload_file(&self, change: &crate::watch::Change) -> ReloadReport {
        let live = {
            let reg = self.registry.borrow();
            reg.slots
                .iter()
                .find(|s| s.alive() && !s.builtin && s.file == change.file)
                .map(|s| (s.info.name.clone(), s.build.clone()))
        };
        if let Some(defect) = &change.rejected {
            self.trace_plugin_rejected(&change.file, defect);
            let (device, old_build) = live.unwrap_or_else(|| (change.device.clone(), String::new()));
            let report = ReloadReport {
                device,
                result: "load_failed",
                old_build,
                new_build: change.build.clone(),
                state_bytes: None,
                leaks: 0,
                latency_ms: 0.0,
                message: Some(format!(
                    "{}: refused before loading: {} (defect: {}); the old code keeps running",
                    change.file.display(),
                    defect.detail,
                    defect.code
                )),
            };
            return self.finish_reload(report, change.noticed);
        }
        match live {
            Some((name, _)) => self.reload_device(&name, &change.file, change.noticed),
            None => {
                let mut report = ReloadReport {
                    device: change.device.clone(),
                    result: "loaded",
                    old_build: String::new(),
                    new_build: change.build.clone(),
                    state_bytes: None,
                    leaks: 0,
                    latency_ms: 0.0,
                    message: None,
                };
                match self.load_with_state(&change.file) {
                    Ok((idx, state_bytes)) => {
                        let reg = self.registry.borrow();
                        let s = &reg.slots[idx];
                        report.device = s.info.name.clone();
                        report.new_build = s.build.clone();
                        report.state_bytes = state_bytes;
                        report.message = Some(format!(
                            "nothing ran from {} any more: {} (ID {:#06X}) was loaded from it as a dynamic device",
                            change.file.display(),
                            s.info.name,
                            s.info.device_id
                        ));
                    }
                    Err(e) => {
                        report.result = "load_failed";
                        report.message = Some(format!("nothing runs from {}: {}", change.file.display(), e.message));
                    }
                }
                self.finish_reload(report, change.noticed)
            }
        }
    }

    /// Load `file` as a dynamic device; a device of that name and ID that a
    /// swap took out gets its state back (`restore_state`) before
    /// `Sys_Dynamic_Device_Init`. The slot, and how many bytes of state
    /// were handed back.
    fn load_with_state(&self, file: &Path) -> Result<(usize, Option<usize>), LoadError> {
        let origin = Origin { file: "reload".to_string(), line: 0, column: 0 };
        let idx = self.load_dynamic(&file.display().to_string(), false, &origin)?;
        let (name, id, instance, fresh) = {
            let reg = self.registry.borrow();
            let s = &reg.slots[idx];
            (s.info.name.clone(), s.info.device_id, s.instance, !s.initialized)
        };
        if !fresh {
            // Already loaded (and counted once more): nothing to initialize.
            return Ok((idx, None));
        }
        let state = self.dynamic.swap_in(name.clone(), id);
        if let Some(bytes) = &state
            && let Err(why) = self.restore_state(instance, bytes)
        {
            tracing::warn!("{name} refused the state it had when it was swapped out ({why}); it starts afresh");
        }
        self.dynamic_device_init(idx)?;
        Ok((idx, state.map(|s| s.len())))
    }

    /// A rebuilt plugin with a new name or ID is another device: unload
    /// the old one (keeping its state in case a build of it comes back)
    /// and load the new one.
    fn replace_device(
        &self,
        idx: usize,
        file: &Path,
        new_info: &DeviceInfo,
        mut report: ReloadReport,
        started: WallInstant,
    ) -> ReloadReport {
        let old = self.registry.borrow().slots[idx].info.clone();
        self.registry.borrow_mut().slots[idx].load_count = 1;
        self.registry.borrow_mut().slots[idx].dynamic = true;
        match self.unload_dynamic_keeping_state(idx, true) {
            Err(e) => {
                report.result = "exit_refused";
                report.message = Some(e.message);
                return self.finish_reload(report, started);
            }
            Ok(state) => {
                if let Some(state) = state {
                    self.dynamic.swap_out(old.name.clone(), old.device_id, state);
                }
            }
        }
        match self.load_with_state(file) {
            Ok((_, state_bytes)) => {
                report.result = "replaced";
                report.state_bytes = state_bytes;
                report.message = Some(format!(
                    "{} (ID {:#06X}) became {} (ID {:#06X}): unloaded and loaded",
                    old.name, old.device_id, new_info.name, new_info.device_id
                ));
            }
            Err(e) => {
                report.result = "load_failed";
                report.message = Some(format!(
                    "{} was unloaded, but its replacement {} did not load: {}",
                    old.name, new_info.name, e.message
                ));
            }
        }
        self.finish_reload(report, started)
    }

    fn finish_reload(&self, mut report: ReloadReport, started: WallInstant) -> ReloadReport {
        report.latency_ms = started.elapsed().as_secs_f64() * 1000.0;
        let r = report.clone();
        self.trace(|| TraceEvent::Reload {
            device: r.device,
            result: r.result,
            old_build: r.old_build,
            new_build: r.new_build,
            state_bytes: r.state_bytes,
            leaks: r.leaks,
            latency_ms: r.latency_ms,
            message: r.message,
        });
        report
    }

    /// The old instance's `save_state`, if it hands any over.
    fn save_state(&self, instance: InstanceId) -> Option<Vec<u8>> {
        let inst = self.with_instance(instance, |r| r.plugin()).flatten()?;
        match self.invoke(instance, "save_state", Context::Control, |cx| (inst.vtable.save_state())(inst.this, cx)) {
            Ok(state) => state.into_option().map(|v| v.into_vec()),
            Err(_) => None,
        }
    }

    /// The new instance's `restore_state`.
    fn restore_state(&self, instance: InstanceId, bytes: &[u8]) -> Result<(), String> {
        let Some(inst) = self.with_instance(instance, |r| r.plugin()).flatten() else {
            return Err("the instance is gone".to_string());
        };
        let r = self.with_dynamic_init(instance, || {
            self.invoke_reporting(instance, "restore_state", Context::Init, |cx| {
                (inst.vtable.restore_state())(inst.this, cx, RSlice::from_slice(bytes))
            })
        });
        match r {
            Ok(Carry::Clear) => Ok(()),
            Ok(Carry::Set) => Err("restore_state refused".to_string()),
            // The plugin's own words, so the reload line says why.
            Err((_, message)) if !message.is_empty() => Err(format!("restore_state: {message}")),
            Err((outcome, _)) => Err(format!("restore_state failed ({outcome:?})")),
        }
    }
}

/// Hot reload and dynamic loading from outside the machine (the CLI's
/// `--watch`, tests and tools).
impl Machine {
    /// Hot reload: replace the code of the loaded device `name` with the
    /// plugin in `file`, now (between VMM events). The old instance gets
    /// `Sys_Dynamic_Device_Exit`, hands over its state if it saves one, and
    /// what it still owns is reclaimed (each item an `UNLOAD_LEAK`
    /// violation); the new one restores the state and gets
    /// `Sys_Dynamic_Device_Init`. If the new copy fails to load, fails the
    /// layout check, panics or refuses, the old code keeps running; the
    /// report (also a `reload` trace record) says why. A new name or ID is
    /// an unload plus a load.
    pub fn reload_device(&mut self, name: &str, file: impl AsRef<std::path::Path>) -> ReloadReport {
        self.core.reload_device(name, file.as_ref(), std::time::Instant::now())
    }

    /// `VXDLDR_LoadDevice` from outside the machine (as a test or a tool
    /// would): load `name` dynamically and, with `init`, send it
    /// `Sys_Dynamic_Device_Init`. `Err` is `(VXDLDR_ERR_*, message)`.
    pub fn load_dynamic_device(&mut self, name: &str, init: bool) -> std::result::Result<(), (u32, String)> {
        self.core.vxdldr_load(name, init).map(|_| ()).map_err(|e| (e.code, e.message))
    }

    /// `VXDLDR_UnloadDevice` from outside the machine.
    pub fn unload_dynamic_device(&mut self, name: &str) -> std::result::Result<(), (u32, String)> {
        self.core.vxdldr_unload(0, Some(name)).map_err(|e| (e.code, e.message))
    }

    /// The loaded plugin devices: `(device, file, content hash)` (what
    /// `--watch` watches).
    pub fn plugin_devices(&self) -> Vec<(String, PathBuf, String)> {
        let reg = self.core.registry.borrow();
        reg.slots
            .iter()
            .filter(|s| s.alive() && !s.builtin)
            .map(|s| (s.info.name.clone(), s.file.clone(), s.build.clone()))
            .collect()
    }

    /// Run while watching plugin files: whenever `watcher` reports a
    /// rebuilt plugin, reload its device at the next safe point and tell
    /// `on_reload`, which may stop the run (`ControlFlow::Break`). When the
    /// machine has nothing left to do it waits for rebuilds (wall clock)
    /// until `deadline`, if any. Stops at `[machine] until` as [`Machine::run`].
    /// (With the `watch` feature.)
    #[cfg(feature = "watch")]
    pub fn run_watching(
        &mut self,
        watcher: &crate::watch::Watcher,
        deadline: Option<std::time::Instant>,
        on_reload: &mut dyn FnMut(&ReloadReport) -> std::ops::ControlFlow<()>,
    ) -> crate::error::Result<crate::machine::RunEnd> {
        if self.core.phase.get() != Phase::Running {
            return Ok(crate::machine::RunEnd::Quiescent);
        }
        if let Some(until) = self.core.manifest.machine.until {
            self.core.sched.timer_at(crate::time::Instant::ZERO + until, crate::vmm::timers::TimerKind::Stop);
        }
        self.core.run.wake_on_rebuild(Some(watcher.ready_flag()));
        let end = self.watch_loop(watcher, deadline, on_reload);
        self.core.run.wake_on_rebuild(None);
        end
    }

    #[cfg(feature = "watch")]
    fn watch_loop(
        &mut self,
        watcher: &crate::watch::Watcher,
        deadline: Option<std::time::Instant>,
        on_reload: &mut dyn FnMut(&ReloadReport) -> std::ops::ControlFlow<()>,
    ) -> crate::error::Result<crate::machine::RunEnd> {
        loop {
            let end = self.core.run.top_level(|| self.core.run_until(&|_| watcher.has_changes(), None));
            self.fail_on_fatal(Ok(()))?;
            self.stop_on_full_trace()?;
            let changes = match end {
                crate::machine::run::LoopEnd::Stopped => return Ok(crate::machine::RunEnd::Until),
                crate::machine::run::LoopEnd::Fatal => return Ok(crate::machine::RunEnd::Quiescent),
                crate::machine::run::LoopEnd::Done => watcher.take(),
                crate::machine::run::LoopEnd::Quiescent => {
                    let left = deadline.map(|d| d.saturating_duration_since(std::time::Instant::now()));
                    if left == Some(std::time::Duration::ZERO) {
                        return Ok(crate::machine::RunEnd::Quiescent);
                    }
                    let step = std::time::Duration::from_millis(200);
                    watcher.wait(left.map_or(step, |l| l.min(step)))
                }
            };
            for change in changes {
                let report = self.core.reload_file(&change);
                watcher.set_build(&change.file, &report.device, &change.build);
                // A watched run ends with Ctrl-C: keep the trace file current.
                self.core.finish_trace();
                self.fail_on_fatal(Ok(()))?;
                if on_reload(&report).is_break() {
                    return Ok(crate::machine::RunEnd::Quiescent);
                }
            }
            if deadline.is_some_and(|d| std::time::Instant::now() >= d) {
                return Ok(crate::machine::RunEnd::Quiescent);
            }
        }
    }
}
