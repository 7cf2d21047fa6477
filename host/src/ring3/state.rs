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
    pub(crate) name: String,
    pub(crate) ordinal: u16,
    pub(crate) segment: u16,
    pub(crate) offset: u16,
    pub(crate) arg_bytes: u16,
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
    pub(crate) name: Rc<str>,
    pub(crate) kind: ModuleKind,
    pub(crate) instance: InstanceId,
    pub(crate) code: Ring3Code,
    pub(crate) segments: Vec<(String, SegmentKind)>,
    pub(crate) exports: Vec<ExportRec>,
    /// Per segment, its exports in offset order (the `n`th lives at offset
    /// `0x10 * n`): resolving a far pointer is two index operations.
    pub(crate) by_offset: Vec<Vec<usize>>,
    pub(crate) selectors: Vec<u16>,
    pub(crate) hinstance: u16,
    pub(crate) refcount: u32,
    pub(crate) vm: VmId,
    pub(crate) alive: bool,
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
    pub(crate) id: u32,
    pub(crate) module: usize,
    pub(crate) vm: VmId,
    pub(crate) task: u16,
    pub(crate) state: ProgState,
    pub(crate) args: String,
}

/// A Windows task's message queue and the DLLs it loaded.
pub(crate) struct Task {
    pub(crate) htask: u16,
    /// `None`: `SetMessageQueue` failed and the task has no queue.
    pub(crate) queue: Option<VecDeque<Msg>>,
    pub(crate) capacity: usize,
    pub(crate) quit: Option<u16>,
    pub(crate) dlls: Vec<u16>,
}

/// A window.
pub(crate) struct Window {
    pub(crate) task: u16,
    pub(crate) wndproc: u32,
    pub(crate) class: String,
    pub(crate) parent: u16,
}

/// All ring-3 state.
#[derive(Default)]
pub(crate) struct Ring3State {
    pub(crate) modules: Vec<ModuleRec>,
    /// Selector or segment → (module index, segment index).
    pub(crate) selectors: BTreeMap<u16, (usize, u16)>,
    next_pm_selector: u16,
    next_v86_segment: u16,
    next_hinstance: u16,
    pub(crate) programs: Vec<Program>,
    pub(crate) tasks: Vec<Task>,
    pub(crate) windows: BTreeMap<u16, Window>,
    pub(crate) next_hwnd: u16,
    next_htask: u16,
    /// Round-robin position among the system VM's programs.
    rr: usize,
    /// Each VM's programs (indexes into `programs`, in start order): the
    /// scheduler asks about one VM's programs without a scan of all of
    /// them (ten thousand DOS VMs have ten thousand programs).
    by_vm: BTreeMap<VmId, Vec<usize>>,
    /// A fault of Rust ring-3 code in this VM that nothing handled: the
    /// program whose step is running ends when the step returns.
    pub(crate) crash_pending: Option<VmId>,
}

impl Ring3State {
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
    pub(crate) base: u32,
    pub(crate) size: u32,
    /// The module instance that allocated it.
    pub(crate) owner: InstanceId,
}

/// The blocks, by selector.
#[derive(Default)]
pub(crate) struct FarMemory {
    pub(crate) blocks: BTreeMap<u16, FarBlock>,
}

impl FarMemory {
    pub(crate) fn free_selector(&self) -> Option<u16> {
        (FIRST_SELECTOR..=LAST_SELECTOR).step_by(8).find(|s| !self.blocks.contains_key(s))
    }
}
