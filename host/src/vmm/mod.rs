//! The VMM proper: VMs, time, scheduling, events, the critical section,
//! semaphores, nested execution and the ring-0 heap.

pub(crate) mod callback;
pub mod context;
pub(crate) mod crit;
pub(crate) mod events;
pub(crate) mod heap;
pub(crate) mod irq;
pub(crate) mod lifecycle;
pub(crate) mod limits;
pub(crate) mod nest;
pub(crate) mod rng;
pub(crate) mod sched;
pub(crate) mod scheduler;
pub(crate) mod slab;
pub(crate) mod timers;
pub(crate) mod vm;

use crate::machine::Core;
use crate::vmm::vm::{Vm, VmLife};

impl Core {
    /// Create the system VM (its Create_VM and VM_Critical_Init phases are
    /// folded into Device_Init, as in WIN386) and make it current.
    pub(crate) fn create_system_vm(&self) {
        if self.sys_vm.get() != 0 {
            return;
        }
        let cb = self.cb_area_size.get() as usize;
        let handle = self.vms.borrow_mut().insert(|h, id| Vm::new(h, id, std::rc::Rc::from("system"), true, cb));
        if let Some(vm) = self.vms.borrow_mut().get_mut(handle) {
            vm.life = VmLife::Running;
        }
        self.sys_vm.set(handle);
        self.cur_vm.set(handle);
    }

    /// Whether `handle` names a live VM. (The system VM, once created, is
    /// never destroyed: its handle needs no lookup.)
    #[inline]
    pub(crate) fn vm_valid(&self, handle: u32) -> bool {
        (handle != 0 && handle == self.sys_vm.get()) || self.vms.borrow().get(handle).is_some()
    }
}
