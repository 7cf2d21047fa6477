//! Ring-3 code inside the VMs: modules (Windows DLLs and applications, DOS
//! programs) loaded from plugins, their segments and far pointers, the
//! programs that run as cooperative step machines, and far calls into
//! exported procedures.
//!
//! A program runs one step at a time ([`Core::ring3_step`], called by the
//! scheduler when the program's VM runs). Each step costs
//! `[machine] ring3_step` of the VM's time. Windows applications are tasks
//! of the system VM with a message queue each; a DOS program has a DOS VM
//! to itself and ends it when it exits.

pub(crate) mod addresses;
pub(crate) mod bios_serial;
pub(crate) mod dos;
pub(crate) mod hw_int;
pub(crate) mod int2f;
pub(crate) mod machine_code;
pub(crate) mod memory;
pub(crate) mod pm_fault;
pub(crate) mod rundll;
pub(crate) mod state;
pub(crate) mod user;
pub(crate) mod v86;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::rc::Rc;

use abi_stable::std_types::{RSlice, RStr};
use vmm_plugin_api::abi::{ModuleKind, Msg, Resume, ResumeKind, SegmentKind, Step, StepKind};
use vmm_plugin_api::ddk::VNE_CRASHED;

use crate::error::{Error, LoadCause};
use crate::loader::Inst;
use crate::loader::PluginLibrary;
use crate::machine::Core;
pub(crate) use crate::ring3::state::*;
use crate::trace::{CallOutcome, DestroyReason, EndReason, TraceEvent};
use crate::violation::Violation;
use crate::vmm::context::Context;
use crate::vmm::ids::{InstanceId, VmId};
use crate::vmm::timers::TimerKind;

impl Core {
    // ---- loading modules ----------------------------------------------------------

    /// The plugin library `name` refers to: linked in, or found on the
    /// search path and loaded.
    pub(crate) fn library_for(&self, name: &str) -> Result<&'static PluginLibrary, (PathBuf, LoadCause)> {
        let wanted = crate::resolve::library_name(name);
        if let Some((_, lib)) = self.in_process.iter().find(|(n, _)| *n == wanted) {
            return Ok(*lib);
        }
        if let Some(lib) = crate::builtin::module(name) {
            return Ok(lib);
        }
        let file = self.search.find(name).ok_or_else(|| {
            (PathBuf::from(name), LoadCause::NotFound { searched: self.search.dirs().to_vec(), build: None })
        })?;
        self.load_plugin_file(&file).map_err(|cause| (file, cause))
    }

    /// Check that a ring-3 plugin named by the manifest loads and has the
    /// expected kind.
    pub(crate) fn check_module(
        &self,
        name: &str,
        kind: ModuleKind,
        origin: &crate::manifest::Origin,
    ) -> crate::error::Result<()> {
        let lib =
            self.library_for(name).map_err(|(file, cause)| Error::Load { name: name.to_string(), file, cause })?;
        if lib.info.kind != kind || lib.info.module.is_none() {
            return Err(Error::Reference {
                origin: origin.clone(),
                message: format!(
                    "`{name}` is a {} plugin, but a {} is needed here",
                    kind_name(lib.info.kind),
                    kind_name(kind)
                ),
            });
        }
        Ok(())
    }

    /// Load a module instance (a new one every time) into `vm`.
    pub(crate) fn instantiate_module(&self, name: &str, vm: VmId) -> Result<usize, String> {
        let lib = self.library_for(name).map_err(|(file, cause)| format!("{}: {cause}", file.display()))?;
        if !lib.info.panic_unwind {
            return Err(LoadCause::PanicAbort.to_string());
        }
        let Some(desc) = lib.info.module.into_option() else {
            return Err(format!("`{name}` is a {}, not a ring-3 module", kind_name(lib.info.kind)));
        };
        let mname: Rc<str> = Rc::from(desc.name.as_str().to_ascii_uppercase().as_str());
        let instance = self.add_instance(mname.clone(), None);
        let raw = self
            .invoke(instance, "create", Context::Ring3, |cx| (lib.root.create())(cx))
            .map_err(|o| format!("creating {mname} failed ({o:?})"))?;
        let inst = Inst { this: raw.this, vtable: raw.vtable };
        self.with_instance(instance, |r| r.code = Some(crate::machine::device::InstanceCode::Plugin { inst }));
        let kind = lib.info.kind;
        let mut r3 = self.ring3.borrow_mut();
        let v86 = kind == ModuleKind::DosProgram;
        let mut selectors = Vec::new();
        for _ in desc.segments.iter() {
            selectors.push(r3.new_selector(v86));
        }
        let mut per_segment: BTreeMap<u16, u16> = BTreeMap::new();
        let exports = desc
            .exports
            .iter()
            .map(|e| {
                let n = per_segment.entry(e.segment).or_insert(0);
                *n += 1;
                ExportRec {
                    name: e.name.as_str().to_string(),
                    ordinal: e.ordinal,
                    segment: e.segment,
                    offset: 0x10 * *n,
                    arg_bytes: e.arg_bytes,
                }
            })
            .collect::<Vec<ExportRec>>();
        let mut by_offset = vec![Vec::new(); desc.segments.len()];
        for (i, e) in exports.iter().enumerate() {
            if let Some(list) = by_offset.get_mut(e.segment as usize) {
                list.push(i);
            }
        }
        let hinstance = r3.new_hinstance();
        let index = r3.modules.len();
        for (i, sel) in selectors.iter().enumerate() {
            r3.selectors.insert(*sel, (index, i as u16));
        }
        r3.modules.push(ModuleRec {
            name: mname,
            kind,
            instance,
            code: Ring3Code::Plugin(inst),
            segments: desc.segments.iter().map(|s| (s.name.as_str().to_string(), s.kind)).collect(),
            exports,
            by_offset,
            selectors,
            hinstance,
            refcount: 1,
            vm,
            alive: true,
        });
        Ok(index)
    }

    /// Load the machine-code program file `name` into DOS VM `vm` with the
    /// command tail `args`.
    fn instantiate_machine(&self, name: &str, vm: VmId, args: &str) -> Result<usize, String> {
        let (path, image) = self.load_program_file(name)?;
        let file = path.file_name().map_or(name.to_string(), |f| f.to_string_lossy().to_ascii_uppercase());
        let mut machine = machine_code::DosMachine::new(&file, &file, &image, args)
            .map_err(|e| format!("program file `{name}` ({}): {e}", path.display()))?;
        // Vectors devices set (Set_V86_Int_Vector) before the program had
        // memory: the default table's, then its VM's.
        self.apply_v86_vectors(vm, &mut machine.mem);
        // The VM's client registers hold the program's between steps: DOS
        // starts it at the entry point with its registers set.
        if let Some(v) = self.vms.borrow().get(vm) {
            let mut c = v.client();
            machine_code::to_client(&machine.cpu, &mut c);
            v.set_client(c);
        }
        let mname: Rc<str> = Rc::from(file.as_str());
        let instance = self.add_instance(mname.clone(), None);
        let mut r3 = self.ring3.borrow_mut();
        let hinstance = r3.new_hinstance();
        let index = r3.modules.len();
        r3.modules.push(ModuleRec {
            name: mname,
            kind: ModuleKind::DosProgram,
            instance,
            code: Ring3Code::Machine(Some(Box::new(machine))),
            segments: Vec::new(),
            exports: Vec::new(),
            by_offset: Vec::new(),
            selectors: Vec::new(),
            hinstance,
            refcount: 1,
            vm,
            alive: true,
        });
        Ok(index)
    }

    // ---- programs -----------------------------------------------------------------------

    /// Start `program` (a DOS program in a DOS VM, or a Windows application
    /// in the system VM) with `args`; its program number.
    pub(crate) fn start_program(&self, vm: VmId, program: &str, args: &str) -> Option<u32> {
        let machine = vm != self.sys_vm.get() && crate::manifest::is_program_file(program);
        let loaded =
            if machine { self.instantiate_machine(program, vm, args) } else { self.instantiate_module(program, vm) };
        let module = match loaded {
            Ok(m) => m,
            Err(e) => {
                tracing::error!("cannot start `{program}`: {e}");
                self.trace(|| TraceEvent::ProgramEnded {
                    vm: vm.raw(),
                    module: program.to_string(),
                    task: None,
                    exit_code: None,
                    reason: EndReason::LoadFailed,
                });
                if vm != self.sys_vm.get() {
                    self.destroy_vm(vm, 0, true, DestroyReason::ProgramEnded);
                }
                return None;
            }
        };
        let (kind, name) = {
            let r3 = self.ring3.borrow();
            (r3.modules[module].kind, r3.modules[module].name.clone())
        };
        let id = {
            let mut r3 = self.ring3.borrow_mut();
            let task = if kind == ModuleKind::WinApp { r3.new_task(self.manifest.windows.queue_size) } else { 0 };
            r3.add_program(module, vm, task, args)
        };
        let task = self.ring3.borrow().program(id).map(|p| p.task).filter(|t| *t != 0);
        tracing::info!(
            "{} started in VM {vm:#x}{}",
            name,
            if args.is_empty() { String::new() } else { format!(" with `{args}`") }
        );
        self.trace(|| TraceEvent::ProgramStarted {
            vm: vm.raw(),
            module: name.to_string(),
            kind: kind_name(kind),
            task,
            args: args.to_string(),
        });
        Some(id)
    }

    /// Whether a VM may run ring-3 code now: not while its code is on the
    /// host stack (nested execution, a blocking wait) .
    fn ring3_runnable_vm(&self, vm: VmId) -> bool {
        !self.waiters.borrow().contains(&vm)
            && self.vms.borrow().get(vm).is_some_and(|v| v.nest.is_empty() && v.blocked.is_none())
    }

    /// Whether `p` can take a step now.
    fn program_ready(&self, p: &Program, r3: &Ring3State) -> bool {
        match p.state {
            ProgState::Start | ProgState::Ready(_) => true,
            ProgState::WaitMessage => {
                r3.task(p.task).is_some_and(|t| t.quit.is_some() || t.queue.as_ref().is_some_and(|q| !q.is_empty()))
            }
            ProgState::Sleeping | ProgState::Ended => false,
        }
    }

    /// Whether `vm` has a ring-3 step ready to run.
    pub(crate) fn ring3_ready(&self, vm: VmId) -> bool {
        let r3 = self.ring3.borrow();
        (r3.programs_of(vm).iter().any(|&i| self.program_ready(&r3.programs[i], &r3)) || {
            drop(r3);
            self.hw_int_ready(vm)
        }) && self.ring3_runnable_vm(vm)
    }

    /// Run one ring-3 step of `vm`; whether one ran.
    pub(crate) fn ring3_step(&self, vm: VmId) -> bool {
        if !self.ring3_runnable_vm(vm) {
            return false;
        }
        let pick = {
            // Round robin: the first ready program of the VM after the last
            // one that ran, else its first ready one.
            let r3 = self.ring3.borrow();
            let mine = r3.programs_of(vm);
            let ready = |&&i: &&usize| self.program_ready(&r3.programs[i], &r3);
            let after = mine.iter().filter(|&&i| i > r3.last_run()).find(ready);
            after.or_else(|| mine.iter().find(ready)).copied()
        };
        let Some(index) = pick else {
            // Only a virtual interrupt to take (or a VM with no program):
            // its handler runs now.
            if self.hw_int_ready(vm) {
                self.ring3_hw_ints(vm);
                return true;
            }
            return false;
        };
        {
            let mut r3 = self.ring3.borrow_mut();
            r3.set_last_run(index);
            // A fault left unhandled outside any program's step (a handler
            // a device entered) ended no program: forget it.
            r3.crash_pending = None;
        }
        let (id, module, task, state, args) = {
            let r3 = self.ring3.borrow();
            let p = &r3.programs[index];
            // The command line is needed once, for the first step.
            let args = if p.state == ProgState::Start { p.args.clone() } else { String::new() };
            (p.id, p.module, p.task, p.state, args)
        };
        let resume = match state {
            ProgState::Start => None,
            ProgState::Ready(r) => Some(r),
            ProgState::WaitMessage => Some(self.next_message(task)),
            _ => return false,
        };
        let (instance, inst) = {
            let mut r3 = self.ring3.borrow_mut();
            let m = &mut r3.modules[module];
            match &mut m.code {
                Ring3Code::Plugin(inst) => (m.instance, *inst),
                Ring3Code::Machine(machine) => {
                    let Some(machine) = machine.take() else { return false };
                    let instance = m.instance;
                    drop(r3);
                    self.machine_step(id, module, instance, machine);
                    return true;
                }
            }
        };
        let previous_task = self.current_task.replace(task);
        self.ring3_hw_ints(vm);
        let outcome =
            self.invoke(
                instance,
                if resume.is_none() { "start" } else { "resume" },
                Context::Ring3,
                |cx| match &resume {
                    None => (inst.vtable.start())(inst.this, cx, RStr::from_str(&args)),
                    Some(r) => (inst.vtable.resume())(inst.this, cx, r),
                },
            );
        self.current_task.set(previous_task);
        self.charge(self.manifest.machine.ring3_step);
        match outcome {
            Ok(step) => self.apply_step(id, step),
            Err(o) => self.end_program(
                id,
                None,
                if o == CallOutcome::FatalExit { EndReason::Fatal } else { EndReason::Crashed },
            ),
        }
        true
    }

    /// One step of a machine-code program: a run of the interpreter.
    fn machine_step(&self, id: u32, module: usize, instance: InstanceId, mut machine: Box<machine_code::DosMachine>) {
        let ran = self.v86_run(instance, &mut machine);
        {
            let mut r3 = self.ring3.borrow_mut();
            let m = &mut r3.modules[module];
            if m.alive {
                m.code = Ring3Code::Machine(Some(machine));
            }
        }
        match ran {
            machine_code::Ran::Step(step) => self.apply_step(id, step),
            machine_code::Ran::Preempted | machine_code::Ran::NestReturn => {
                if let Some(p) = self.ring3.borrow_mut().program_mut(id)
                    && p.state != ProgState::Ended
                {
                    p.state = ProgState::Ready(Resume { kind: ResumeKind::Yielded, msg: Msg::default() });
                }
            }
            machine_code::Ran::Crashed => self.end_program(id, None, EndReason::Crashed),
        }
    }

    /// The message `GetMessage` returns to `task` (`WM_QUIT` once the queue
    /// is empty after `PostQuitMessage`), traced as delivered.
    fn next_message(&self, task: u16) -> Resume {
        let now = self.sched.now().system_time_ms();
        let msg = {
            let mut r3 = self.ring3.borrow_mut();
            let t = r3.task_mut(task);
            match t {
                Some(t) => match t.queue.as_mut().and_then(|q| q.pop_front()) {
                    Some(m) => Some(m),
                    None => t.quit.take().map(|code| Msg {
                        hwnd: 0,
                        message: vmm_plugin_api::ddk::WM_QUIT,
                        wparam: code,
                        lparam: 0,
                        time: now,
                    }),
                },
                None => None,
            }
        };
        let msg = msg.unwrap_or_default();
        self.trace_delivered(task, &msg);
        Resume { kind: ResumeKind::Message, msg }
    }

    fn apply_step(&self, id: u32, step: Step) {
        let (vm, is_dos, crashed) = {
            let mut r3 = self.ring3.borrow_mut();
            let Some(p) = r3.program(id) else { return };
            let (vm, module) = (p.vm, p.module);
            // Its code faulted with nothing to handle it (`Ring3::fault`).
            let crashed = r3.crash_pending.take_if(|v| *v == vm).is_some();
            (vm, r3.modules[module].kind == ModuleKind::DosProgram, crashed)
        };
        if crashed {
            self.end_program(id, None, EndReason::Crashed);
            return;
        }
        let state = match step.kind {
            StepKind::GetMessage if is_dos => {
                self.violation(
                    Violation::GetMessageInDos,
                    "a DOS program asked for GetMessage, which exists only for Windows tasks; the program ends",
                    None,
                );
                self.end_program(id, None, EndReason::Crashed);
                return;
            }
            StepKind::GetMessage => ProgState::WaitMessage,
            StepKind::Sleep => {
                let at = self.sched.now() + crate::time::Duration::from_millis(step.value as u64);
                self.sched.timer_at(at, TimerKind::Wake(id));
                ProgState::Sleeping
            }
            StepKind::Yield => {
                // Releasing the time slice: let others of equal priority run.
                self.sched.end_slice();
                ProgState::Ready(Resume { kind: ResumeKind::Yielded, msg: Msg::default() })
            }
            StepKind::Exit => {
                self.end_program(id, Some(step.value), EndReason::Exited);
                return;
            }
        };
        let _ = vm;
        if let Some(p) = self.ring3.borrow_mut().program_mut(id) {
            p.state = state;
        }
    }

    /// A program's sleep ended.
    pub(crate) fn ring3_wake(&self, id: u32) {
        if let Some(p) = self.ring3.borrow_mut().program_mut(id)
            && p.state == ProgState::Sleeping
        {
            p.state = ProgState::Ready(Resume { kind: ResumeKind::Woke, msg: Msg::default() });
        }
    }

    /// End a program: a task's windows and DLLs go; a DOS program's VM is
    /// terminated.
    pub(crate) fn end_program(&self, id: u32, exit_code: Option<u32>, reason: EndReason) {
        let (vm, module, task, kind, name) = {
            let mut r3 = self.ring3.borrow_mut();
            let Some(p) = r3.program_mut(id) else { return };
            if p.state == ProgState::Ended {
                return;
            }
            p.state = ProgState::Ended;
            let (vm, module, task) = (p.vm, p.module, p.task);
            let m = &r3.modules[module];
            (vm, module, task, m.kind, m.name.clone())
        };
        tracing::info!("{name} ended ({reason}{})", exit_code.map(|c| format!(", exit code {c}")).unwrap_or_default());
        self.trace(|| TraceEvent::ProgramEnded {
            vm: vm.raw(),
            module: name.to_string(),
            task: (task != 0).then_some(task),
            exit_code,
            reason,
        });
        if task != 0 {
            let (windows, dlls) = {
                let mut r3 = self.ring3.borrow_mut();
                let handles: Vec<u16> = r3.windows.iter().filter(|(_, w)| w.task == task).map(|(h, _)| *h).collect();
                let windows: Vec<(u16, String)> =
                    handles.iter().filter_map(|h| r3.windows.remove(h).map(|w| (*h, w.class))).collect();
                let dlls = r3.task_mut(task).map(|t| std::mem::take(&mut t.dlls)).unwrap_or_default();
                if let Some(t) = r3.task_mut(task) {
                    t.queue = None;
                }
                (windows, dlls)
            };
            // USER destroys the windows of a task that ends (its code has
            // ended, so no WM_DESTROY reaches it).
            for (hwnd, class) in windows {
                self.trace(|| TraceEvent::WindowDestroyed { task, hwnd, class });
            }
            for h in dlls {
                self.free_library(h);
            }
        }
        self.unload_module(module);
        if kind == ModuleKind::DosProgram && self.vm_valid(vm) {
            let flags = if reason == EndReason::Crashed { VNE_CRASHED } else { 0 };
            self.destroy_vm(vm, flags, reason != EndReason::Crashed, DestroyReason::ProgramEnded);
        }
    }

    /// Drop a module instance; far pointers into it stop resolving.
    pub(crate) fn unload_module(&self, module: usize) {
        let instance = {
            let mut r3 = self.ring3.borrow_mut();
            let m = &mut r3.modules[module];
            if !m.alive {
                return;
            }
            m.alive = false;
            if let Ring3Code::Machine(machine) = &mut m.code {
                // The VM's memory goes with it.
                *machine = None;
            }
            m.instance
        };
        self.free_far_blocks_of(instance);
        let inst = self.with_instance(instance, |r| r.take_plugin()).flatten();
        if let Some(inst) = inst {
            (inst.vtable.drop())(inst.this);
        }
    }

    /// `vm` is being destroyed: its programs end.
    pub(crate) fn ring3_vm_destroyed(&self, vm: VmId) {
        let ids: Vec<u32> = {
            let r3 = self.ring3.borrow();
            r3.programs_of(vm)
                .iter()
                .map(|&i| &r3.programs[i])
                .filter(|p| p.state != ProgState::Ended)
                .map(|p| p.id)
                .collect()
        };
        for id in ids {
            self.end_program(id, None, EndReason::VmDestroyed);
        }
    }

    /// A task of the system VM that no program's step machine drives (the
    /// message server, which runs only SHELL's appy-time callbacks).
    pub(crate) fn create_task(&self) -> u16 {
        self.ring3.borrow_mut().new_task(self.manifest.windows.queue_size)
    }

    /// The task of the first Windows application started, if it still runs
    /// (0: none).
    pub(crate) fn first_windows_task(&self) -> u16 {
        let r3 = self.ring3.borrow();
        r3.programs.iter().find(|p| p.task != 0).filter(|p| p.state != ProgState::Ended).map_or(0, |p| p.task)
    }

    /// Start the `[windows] load` applications (at boot).
    pub(crate) fn start_windows_apps(&self) {
        let sys = self.sys_vm.get();
        for (name, _) in self.manifest.windows.load.clone() {
            let (program, args) = match name.split_once(' ') {
                Some((p, a)) => (p.to_string(), a.trim().to_string()),
                None => (name.clone(), String::new()),
            };
            self.start_program(sys, &program, &args);
        }
    }

    // ---- calling ring-3 code -------------------------------------------------------------

    /// Call export `export` of `module` with PASCAL `args`; its DX:AX.
    /// `isr`: entered by `Simulate_Far_Call` from event or interrupt time,
    /// so the ISR rule of KB Q72899 applies.
    pub(crate) fn call_export(&self, module: usize, export: usize, args: &[u8], isr: bool) -> Result<u32, CallOutcome> {
        let (instance, inst, ordinal, task_vm) = {
            let r3 = self.ring3.borrow();
            let m = &r3.modules[module];
            (m.instance, m.code.plugin(), m.exports[export].ordinal, m.vm)
        };
        let _ = task_vm;
        // A machine-code program exports nothing, so no far pointer
        // resolves into it.
        let Some(inst) = inst else { return Err(CallOutcome::Skipped) };
        self.stack.as_isr(isr, || {
            self.invoke(instance, "call_export", Context::Ring3, |cx| {
                (inst.vtable.call_export())(inst.this, cx, ordinal, RSlice::from_slice(args))
            })
        })
    }

    /// Check the ISR rule before entering `module`'s export from event or
    /// interrupt time: the code must be in a FIXED segment of a DLL.
    /// Returns `false` if the call must not be made.
    pub(crate) fn isr_entry_allowed(&self, module: usize, export: usize, target: u32) -> bool {
        let ok = {
            let r3 = self.ring3.borrow();
            let m = &r3.modules[module];
            let e = &m.exports[export];
            // A DOS program's code is always in its VM's memory.
            m.kind == ModuleKind::DosProgram
                || (m.segments[e.segment as usize].1 == SegmentKind::Fixed && m.kind == ModuleKind::WinDll)
        };
        if ok {
            return true;
        }
        let what = {
            let r3 = self.ring3.borrow();
            let m = &r3.modules[module];
            let e = &m.exports[export];
            let (seg_name, seg_kind) = &m.segments[e.segment as usize];
            let kind = match seg_kind {
                SegmentKind::Fixed => "FIXED",
                SegmentKind::Moveable => "MOVEABLE",
                SegmentKind::Discardable => "DISCARDABLE",
            };
            if m.kind != ModuleKind::WinDll {
                format!(
                    "{}!{} ({target:08X}) is in {}, an application: FIXED is ignored for applications' segments, so \
                     the code may not be present at event time (KB Q72899); put the callback in a DLL",
                    m.name, e.name, m.name
                )
            } else {
                format!(
                    "{}!{} ({target:08X}) is in {kind} segment {seg_name}: called like an interrupt service routine \
                     from event time, it must be in a FIXED segment, or it may not be present (KB Q72899)",
                    m.name, e.name
                )
            }
        };
        !self.violation(Violation::NotFixedSegment, what, Some("Simulate_Far_Call"))
    }

    /// A ring-3 service called while ring-3 code runs like an ISR: only
    /// `PostMessage` and `PostAppMessage` are allowed. Returns `false` if
    /// the call must be refused.
    pub(crate) fn isr_service_allowed(&self, function: &'static str) -> bool {
        if !self.stack.in_isr() || matches!(function, "PostMessage" | "PostAppMessage") {
            return true;
        }
        !self.violation(
            Violation::IsrCall,
            format!(
                "ring-3 code entered from event time called {function}; such a callback runs like an interrupt service \
                 routine and may call only PostMessage and PostAppMessage (KB Q72899)"
            ),
            Some(function),
        )
    }
}
