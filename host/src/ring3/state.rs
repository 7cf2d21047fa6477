//! Ring 3's state: the loaded modules with their segments, exports and
//! selectors, the programs and their VMs, Windows tasks with their message
//! queues, windows, and ring-3 data blocks; what far pointers point at.
//! It is kept in the machine (`Core::ring3`, `Core::far`); the code that
//! runs ring-3 modules and serves their calls is in the other files of
//! `ring3/`.

use std::collections::{BTreeMap, VecDeque};
use std::rc::Rc;

use vmm_plugin_api::abi::{ApiMode, ModuleKind, Msg, Resume, SegmentKind};

use crate::loader::Inst;
pub(crate) use crate::ring3::addresses::*;
use crate::ring3::machine_code::DosMachine;
use crate::vmm::ids::{InstanceId, VmId};

/// What a far pointer points at.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum Target {
    /// The nest break point.
    Breakpoint,
    /// A VxD's API entry.
    Api { device_id: u16, mode: ApiMode },
    /// An exported procedure of a loaded module.
    Export { module: usize, export: usize },
    /// The host's handler of `INT n`.
    Interrupt(u8),
    /// A module that was unloaded.
    Unloaded { module: usize },
    /// Nothing.
    Nothing,
}

/// An exported procedure of a loaded module.
#[derive(Clone, Debug)]
pub(crate) struct ExportRec {
    pub(super) name: String,
    pub(super) ordinal: u16,
    pub(super) segment: u16,
    pub(super) offset: u16,
    pub(super) arg_bytes: u16,
}

/// What a ring-3 module's code is: the seam between the two kinds of
/// ring-3 code. Everything else about a module (its instance, VM, program
/// record, the services it reaches) is the same for both.
pub(crate) enum Ring3Code {
    /// A Rust step machine in a plugin: its instance's entry points.
    Plugin(Inst),
    /// A machine-code DOS program run by the interpreter under the V86
    /// monitor (`v86.rs`). `None` while a step runs it, and once unloaded.
    Machine(Option<Box<DosMachine>>),
}

impl Ring3Code {
    /// The plugin's entry points, for a Rust module.
    pub(crate) fn plugin(&self) -> Option<Inst> {
        match self {
            Ring3Code::Plugin(inst) => Some(*inst),
            Ring3Code::Machine(_) => None,
        }
    }
}

/// A loaded ring-3 module.
pub(crate) struct ModuleRec {
    pub(super) name: Rc<str>,
    pub(super) kind: ModuleKind,
    pub(super) instance: InstanceId,
    pub(super) code: Ring3Code,
    pub(super) segments: Vec<(String, SegmentKind)>,
    pub(super) exports: Vec<ExportRec>,
    /// Per segment, its exports in offset order (the `n`th lives at offset
    /// `0x10 * n`): resolving a far pointer is two index operations.
    pub(super) by_offset: Vec<Vec<usize>>,
    pub(super) selectors: Vec<u16>,
    pub(super) hinstance: u16,
    pub(super) refcount: u32,
    pub(super) vm: VmId,
    pub(super) alive: bool,
}

impl ModuleRec {
    /// The far pointer of export `ordinal`.
    pub(crate) fn export_address(&self, ordinal: u16) -> Option<u32> {
        let e = self.exports.iter().find(|e| e.ordinal == ordinal)?;
        Some(((self.selectors[e.segment as usize] as u32) << 16) | e.offset as u32)
    }
}

/// Where a program is.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum ProgState {
    /// Not started.
    Start,
    /// Ready to resume with this.
    Ready(Resume),
    /// Blocked in `GetMessage`.
    WaitMessage,
    /// Sleeping until its wake timer.
    Sleeping,
    /// Ended.
    Ended,
}

/// A running program (Windows application task or DOS program).
pub(crate) struct Program {
    pub(super) id: u32,
    pub(super) module: usize,
    pub(super) vm: VmId,
    pub(super) task: u16,
    pub(super) state: ProgState,
    pub(super) args: String,
}

/// A Windows task's message queue and the DLLs it loaded.
pub(crate) struct Task {
    pub(super) htask: u16,
    /// `None`: `SetMessageQueue` failed and the task has no queue.
    pub(super) queue: Option<VecDeque<Msg>>,
    pub(super) capacity: usize,
    pub(super) quit: Option<u16>,
    pub(super) dlls: Vec<u16>,
}

/// A window.
pub(crate) struct Window {
    pub(super) task: u16,
    pub(super) wndproc: u32,
    pub(super) class: String,
    pub(super) parent: u16,
}

/// All ring-3 state.
#[derive(Default)]
pub(crate) struct Ring3State {
    pub(super) modules: Vec<ModuleRec>,
    /// Selector or segment → (module index, segment index).
    pub(super) selectors: BTreeMap<u16, (usize, u16)>,
    next_pm_selector: u16,
    next_v86_segment: u16,
    next_hinstance: u16,
    pub(super) programs: Vec<Program>,
    pub(super) tasks: Vec<Task>,
    pub(super) windows: BTreeMap<u16, Window>,
    pub(super) next_hwnd: u16,
    next_htask: u16,
    /// Round-robin position among the system VM's programs.
    rr: usize,
    /// Each VM's programs (indexes into `programs`, in start order): the
    /// scheduler asks about one VM's programs without a scan of all of
    /// them (ten thousand DOS VMs have ten thousand programs).
    by_vm: BTreeMap<VmId, Vec<usize>>,
    /// A fault of Rust ring-3 code in this VM that nothing handled: the
    /// program whose step is running ends when the step returns.
    pub(super) crash_pending: Option<VmId>,
}

impl Ring3State {
    // ---- what the rest of the host asks of ring 3 ----------------------------------------

    /// How many bytes of arguments export `export` of module `module` pops
    /// (its PASCAL `RETF n`).
    pub(crate) fn export_arg_bytes(&self, module: usize, export: usize) -> usize {
        self.modules[module].exports[export].arg_bytes as usize
    }

    /// `MODULE!Export` and the bytes of arguments it pops.
    pub(crate) fn export_label(&self, module: usize, export: usize) -> (String, usize) {
        let m = &self.modules[module];
        (format!("{}!{}", m.name, m.exports[export].name), m.exports[export].arg_bytes as usize)
    }

    /// The far pointer of export `ordinal` of `instance`'s live module.
    pub(crate) fn export_address_of(&self, instance: InstanceId, ordinal: u16) -> Option<u32> {
        self.modules.iter().find(|m| m.alive && m.instance == instance).and_then(|m| m.export_address(ordinal))
    }

    /// Whether `instance` is ring-3 code (a module's instance).
    pub(crate) fn is_ring3_instance(&self, instance: InstanceId) -> bool {
        self.modules.iter().any(|m| m.instance == instance)
    }

    /// The newest program of `vm`.
    pub(crate) fn newest_program_in(&self, vm: VmId) -> Option<u32> {
        self.programs.iter().rev().find(|p| p.vm == vm).map(|p| p.id)
    }

    /// The module instance handle (`hInstance`) of program `id`.
    pub(crate) fn program_hinstance(&self, id: u32) -> Option<u16> {
        self.program(id).map(|p| self.modules[p.module].hinstance)
    }

    /// The top-level windows, in handle order, but those of `skip_task`
    /// (0: none skipped).
    pub(crate) fn top_level_windows(&self, skip_task: u16) -> Vec<u16> {
        self.windows
            .iter()
            .filter(|(_, w)| w.parent == 0 && (skip_task == 0 || w.task != skip_task))
            .map(|(h, _)| *h)
            .collect()
    }

    /// The first top-level window of `task` (0: none).
    pub(crate) fn main_window_of(&self, task: u16) -> Option<u16> {
        self.windows.iter().find(|(_, w)| task != 0 && w.task == task && w.parent == 0).map(|(h, _)| *h)
    }

    /// The machine-code program of `vm` parked between its steps.
    pub(crate) fn parked_machine(&mut self, vm: VmId) -> Option<&mut DosMachine> {
        self.modules.iter_mut().find_map(|m| match &mut m.code {
            Ring3Code::Machine(Some(machine)) if m.alive && m.vm == vm => Some(&mut **machine),
            _ => None,
        })
    }

    /// Resolve `ptr` (`selector << 16 | offset`).
    pub(crate) fn resolve(&self, ptr: u32) -> Target {
        if ptr == NEST_BREAKPOINT {
            return Target::Breakpoint;
        }
        let (sel, off) = ((ptr >> 16) as u16, ptr as u16);
        match sel {
            V86_API_SEGMENT => return Target::Api { device_id: off, mode: ApiMode::V86 },
            PM_API_SELECTOR => return Target::Api { device_id: off, mode: ApiMode::Pm },
            INT_SELECTOR if off < 0x100 => return Target::Interrupt(off as u8),
            _ => {}
        }
        let Some(&(module, segment)) = self.selectors.get(&sel) else { return Target::Nothing };
        let m = &self.modules[module];
        if !m.alive {
            return Target::Unloaded { module };
        }
        let slot = if off % 0x10 == 0 { (off / 0x10).checked_sub(1) } else { None };
        match slot.and_then(|n| m.by_offset.get(segment as usize)?.get(n as usize)) {
            Some(&export) => Target::Export { module, export },
            None => Target::Nothing,
        }
    }

    /// The live module called `name` (its library name).
    pub(crate) fn module_named(&self, name: &str, kind: ModuleKind) -> Option<usize> {
        let lib = crate::resolve::library_name(name);
        self.modules.iter().position(|m| m.alive && m.kind == kind && crate::resolve::library_name(&m.name) == lib)
    }

    /// The live module with this module handle.
    pub(crate) fn module_by_hinstance(&self, h: u16) -> Option<usize> {
        self.modules.iter().position(|m| m.alive && m.hinstance == h)
    }

    /// Program number `id` (numbers are positions in `programs`, plus one).
    pub(crate) fn program(&self, id: u32) -> Option<&Program> {
        self.programs.get((id as usize).checked_sub(1)?).filter(|p| p.id == id)
    }

    pub(crate) fn program_mut(&mut self, id: u32) -> Option<&mut Program> {
        self.programs.get_mut((id as usize).checked_sub(1)?).filter(|p| p.id == id)
    }

    /// The indexes of `vm`'s programs, in start order.
    pub(crate) fn programs_of(&self, vm: VmId) -> &[usize] {
        self.by_vm.get(&vm).map_or(&[], |v| v.as_slice())
    }

    pub(crate) fn task_mut(&mut self, htask: u16) -> Option<&mut Task> {
        self.tasks.iter_mut().find(|t| t.htask == htask)
    }

    pub(crate) fn task(&self, htask: u16) -> Option<&Task> {
        self.tasks.iter().find(|t| t.htask == htask)
    }

    /// A segment (V86) or selector (PM) for a new module segment.
    pub(crate) fn new_selector(&mut self, v86: bool) -> u16 {
        if v86 {
            self.next_v86_segment = self.next_v86_segment.max(0x1000) + 0x100;
            self.next_v86_segment
        } else {
            self.next_pm_selector = self.next_pm_selector.max(0x00FF) + 8;
            self.next_pm_selector
        }
    }

    /// A module handle for a new module.
    pub(crate) fn new_hinstance(&mut self) -> u16 {
        self.next_hinstance = self.next_hinstance.max(0x0F00) + 0x10;
        self.next_hinstance
    }

    /// Add a program; its number.
    pub(crate) fn add_program(&mut self, module: usize, vm: VmId, task: u16, args: &str) -> u32 {
        let id = self.programs.len() as u32 + 1;
        self.programs.push(Program { id, module, vm, task, state: ProgState::Start, args: args.to_string() });
        let index = self.programs.len() - 1;
        self.by_vm.entry(vm).or_default().push(index);
        id
    }

    /// The program (an index into `programs`) that ran last in the round
    /// robin among a VM's programs.
    pub(crate) fn last_run(&self) -> usize {
        self.rr
    }

    pub(crate) fn set_last_run(&mut self, index: usize) {
        self.rr = index;
    }

    /// A new task with an empty queue of `queue_size` messages; its handle.
    pub(crate) fn new_task(&mut self, queue_size: u32) -> u16 {
        self.next_htask = self.next_htask.max(0x2000) + 0x20;
        let htask = self.next_htask;
        self.tasks.push(Task {
            htask,
            queue: Some(VecDeque::new()),
            capacity: queue_size as usize,
            quit: None,
            dlls: Vec::new(),
        });
        htask
    }
}

/// `ModuleKind` as the trace names it.
pub(crate) fn kind_name(kind: ModuleKind) -> &'static str {
    match kind {
        ModuleKind::Vxd => "vxd",
        ModuleKind::WinDll => "windows_dll",
        ModuleKind::WinApp => "windows_app",
        ModuleKind::DosProgram => "dos_program",
    }
}

// ---- ring-3 data blocks ------------------------------------------------------------

/// The first selector handed out; the next ones follow 8 apart (LDT
/// selectors with RPL 3), clear of module code selectors and the local heap.
const FIRST_SELECTOR: u16 = 0x4007;
const LAST_SELECTOR: u16 = 0x7FFF;
/// The largest block: one 64 KB segment.
pub(crate) const MAX_BLOCK: u32 = 0x1_0000;

/// One block.
#[derive(Copy, Clone, Debug)]
pub(crate) struct FarBlock {
    /// Linear address of its ring-0 heap block.
    pub(super) base: u32,
    pub(super) size: u32,
    /// The module instance that allocated it.
    pub(super) owner: InstanceId,
}

/// The blocks, by selector.
#[derive(Default)]
pub(crate) struct FarMemory {
    pub(super) blocks: BTreeMap<u16, FarBlock>,
}

impl FarMemory {
    pub(crate) fn free_selector(&self) -> Option<u16> {
        (FIRST_SELECTOR..=LAST_SELECTOR).step_by(8).find(|s| !self.blocks.contains_key(s))
    }
}
