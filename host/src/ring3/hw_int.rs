//! Simulated hardware interrupts entering a VM's ring-3 code (VPICD hands
//! them over through `Core::deliver_hw_int`): a machine-code DOS program
//! gets FLAGS, CS and IP pushed and jumps through its vector table, as the
//! processor does; a VM running Rust code takes the entry of the vector
//! table of its mode, PM in protected mode, V86 for a Rust DOS program
//! (`Ring3::set_int_vector` or `Set_PM_Int_Vector` / `Set_V86_Int_Vector`,
//! the last write): an export is called, a call-back runs the device's
//! callback, with the VM's interrupts disabled; a VM
//! with no program of the emulator's runs only its default handlers. The
//! handler's return (a DOS handler's `IRET` reaches the breakpoint
//! `F000:0100+irq` the frame returns through) is VPICD's IRET. A vector
//! with no handler of the VM's own is served by the default handler: an
//! EOI, then the IRET.

use vmm_plugin_api::abi::VmmError;
use vmm_x86::{CS, flags};

use crate::machine::Core;
use crate::ring3::machine_code::{DosMachine, HOST_SEGMENT, HW_IRET_BASE};
use crate::ring3::state::Target;
use crate::violation::Violation;
use crate::vmm::ids::VmId;

/// At most this many simulated interrupts enter a VM's code between two
/// of its steps (a device that re-requests at every EOI or IRET cannot
/// keep the run loop from its timers).
const MAX_PER_ENTRY: usize = 16;

/// What code a VM runs (see [`Core::vm_code`]).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum VmCode {
    Defaults,
    Rust,
    Machine,
}

impl Core {
    /// `Ring3::set_int_vector` of the calling code's VM. Protected-mode code
    /// (the system VM) writes the VM's one PM vector table, the entry
    /// `Set_PM_Int_Vector` writes and `Get_PM_Int_Vector` reads; V86 code
    /// (a Rust DOS program) writes its VM's V86 vector table, the entry
    /// `Set_V86_Int_Vector` writes and `Get_V86_Int_Vector` reads. The last
    /// write wins. `handler` is an export's 16:16 address, a call-back's of
    /// the table's mode, the VMM's default (`FFFE:n`, or the default
    /// table's V86 entry), or 0: the entry the VM started with. The
    /// previous entry (0: the VMM's default).
    pub(crate) fn set_ring3_int_vector(&self, vector: u8, handler: u32) -> Result<u32, VmmError> {
        let vm = self.cur_vm.get();
        let v86 = self.ring3_code_is_v86(vm);
        let allowed = handler == 0
            || handler == Core::int_vector(vector)
            || matches!(self.ring3.borrow().resolve(handler), Target::Export { .. })
            || self.vectors.borrow().call_back_at(handler).is_some_and(|(pm, _)| pm != v86)
            || (v86 && self.vectors.borrow().v86_default(vector) == Some(handler));
        if !allowed {
            let what = if v86 { "a V86 call-back" } else { "a protected-mode call-back" };
            return Err(self.refuse(
                Violation::BadPointer,
                format!(
                    "set_int_vector({vector:#04X}, {handler:08X}): the handler must be the address of an export of a \
                     loaded module (Ring3::export_address), {what}, or the default it read"
                ),
                Some("set_int_vector"),
            ));
        }
        if v86 {
            let old = self.v86_vector_handler(vm, vector).unwrap_or(0);
            let mut vectors = self.vectors.borrow_mut();
            if handler == 0 {
                vectors.reset_v86_vector(vm, vector);
            } else {
                vectors.set_v86_vector(Some(vm), vector, handler);
            }
            return Ok(old);
        }
        let old = self.pm_vector_handler(vm, vector).unwrap_or(0);
        let mut vectors = self.vectors.borrow_mut();
        if handler == 0 {
            vectors.reset_pm_vector(vm, vector);
        } else {
            vectors.set_pm_vector(Some(vm), vector, (handler >> 16) as u16, handler & 0xFFFF);
        }
        Ok(old)
    }

    /// `Ring3::get_int_vector` of the calling code's VM: its V86 vector
    /// entry for `vector` when the code is V86 code (a Rust DOS program),
    /// else its PM entry; 0 while it is the VMM's default.
    pub(crate) fn get_ring3_int_vector(&self, vector: u8) -> u32 {
        let vm = self.cur_vm.get();
        let handler = if self.ring3_code_is_v86(vm) {
            self.v86_vector_handler(vm, vector)
        } else {
            self.pm_vector_handler(vm, vector)
        };
        handler.unwrap_or(0)
    }

    /// Whether `vm`'s current ring-3 code runs in V86 mode (a DOS VM's
    /// program), not protected mode (the system VM's code).
    pub(crate) fn ring3_code_is_v86(&self, vm: VmId) -> bool {
        self.vms.borrow().get(vm).is_some_and(|v| !v.pm)
    }

    /// Whether `vm` runs Rust ring-3 code (not a machine-code program)
    /// with a virtual interrupt to take now, even while its programs sleep
    /// or wait for messages: hardware interrupts do not wait for them.
    pub(crate) fn hw_int_ready(&self, vm: VmId) -> bool {
        self.vpicd_ring3_work(vm) && self.vm_code(vm) != VmCode::Machine
    }

    /// What code `vm` runs: Rust modules, a machine-code program, or none
    /// of the emulator's (only the vector table's default handlers).
    fn vm_code(&self, vm: VmId) -> VmCode {
        let r3 = self.ring3.borrow();
        let mut code = VmCode::Defaults;
        for &i in r3.programs_of(vm) {
            let p = &r3.programs[i];
            if p.state == crate::ring3::state::ProgState::Ended {
                continue;
            }
            if r3.modules[p.module].code.plugin().is_none() {
                return VmCode::Machine;
            }
            code = VmCode::Rust;
        }
        code
    }

    /// Before a Rust module's step: the requests that waited for the VM,
    /// then each simulated interrupt the VM must enter, in order.
    pub(crate) fn ring3_hw_ints(&self, vm: VmId) {
        self.vpicd_vm_runs(vm);
        if !self.vpicd_ring3_waiting() {
            return;
        }
        let defaults = self.vm_code(vm) == VmCode::Defaults;
        for _ in 0..MAX_PER_ENTRY {
            let Some((irq, vector)) = self.vpicd_ring3_next(vm) else { break };
            // The Hook_V86_Int_Chain hooks first, as for a DOS program.
            if self.v86_int_chain(vm, vector) {
                self.vpicd_iret(vm, irq, None);
                continue;
            }
            // The vector of the VM's current mode: the PM table in protected
            // mode, the V86 table in V86 (a Rust DOS program's handler). A
            // call-back runs wherever the VM is; an export only in a VM
            // that runs Rust code.
            let v86 = self.ring3_code_is_v86(vm);
            let handler = if v86 { self.v86_vector_handler(vm, vector) } else { self.pm_vector_handler(vm, vector) };
            let call_back = handler.is_some_and(|h| self.is_call_back(h));
            let export = |h: u32| !v86 || matches!(self.ring3.borrow().resolve(h), Target::Export { .. });
            let Some(target) = handler.filter(|&h| call_back || (!defaults && export(h))) else {
                if let Some(h) = handler.filter(|_| v86 && !defaults) {
                    // The interrupt happened: it cannot be refused, only
                    // reported.
                    self.v86_vector_points_nowhere(vm, vector, h);
                }
                self.vpicd_default_handler(vm, irq);
                self.charge(self.manifest.machine.ring3_step);
                continue;
            };
            // As the processor enters an interrupt gate: interrupts off
            // during the handler, the flags back at its IRET.
            let enabled = self.vms.borrow().get(vm).is_some_and(|v| v.interrupts_enabled());
            self.set_vm_interrupts(vm, false);
            let _ = if call_back {
                self.ring3_call_back(vm, target, &[], true)
            } else {
                self.ring3_far_call(target, &[], false)
            };
            self.charge(self.manifest.machine.ring3_step);
            if self.vm_valid(vm) {
                // The IRET: the flags come back and VPICD sees it, in one
                // step (a request left set is simulated after the IRET).
                if let Some(v) = self.vms.borrow().get(vm) {
                    v.set_interrupts(enabled);
                }
                self.vpicd_iret(vm, irq, None);
            }
        }
    }

    /// In a DOS program's run: enter each simulated interrupt waiting for
    /// its VM. The frame holds the interrupted FLAGS, CS and IP, and above
    /// them a second frame returning to `F000:0100+irq`, so the handler's
    /// `IRET` stops at that breakpoint ([`Core::v86_hw_iret`]).
    pub(crate) fn v86_hw_ints(&self, vm: VmId, m: &mut DosMachine) {
        for _ in 0..MAX_PER_ENTRY {
            let Some((irq, vector)) = self.vpicd_ring3_next(vm) else { break };
            // The devices' Hook_V86_Int_Chain hooks see it first; one that
            // takes it (carry clear) served it: nothing is reflected, and
            // VPICD sees the interrupt as returned.
            if self.vectors.borrow().hooked(vector) && self.v86_call_vmm(vm, m, |core| core.v86_int_chain(vm, vector)) {
                self.v86_call_vmm(vm, m, |core| core.vpicd_iret(vm, irq, None));
                continue;
            }
            if m.mem.vector(vector) == ((HOST_SEGMENT as u32) << 16) | vector as u32 {
                // No handler of the program's: the default handler.
                self.v86_call_vmm(vm, m, |core| core.vpicd_default_handler(vm, irq));
                continue;
            }
            let was = m.cpu.flags;
            m.cpu.push(&mut m.mem, was);
            m.cpu.push(&mut m.mem, m.cpu.sregs[CS]);
            m.cpu.push(&mut m.mem, m.cpu.ip);
            m.cpu.sregs[CS] = HOST_SEGMENT;
            m.cpu.ip = HW_IRET_BASE + irq as u16;
            m.cpu.deliver_interrupt(&mut m.mem, vector);
            self.v86_if_changed(vm, m, was & flags::IF);
        }
    }

    /// The handler of `irq`'s simulated interrupt executed its `IRET`: the
    /// interrupted FLAGS, CS and IP come back, and VPICD sees the IRET.
    pub(crate) fn v86_hw_iret(&self, vm: VmId, m: &mut DosMachine, irq: u8) {
        let was = m.cpu.flags & flags::IF;
        m.cpu.ip = m.cpu.pop(&mut m.mem);
        m.cpu.sregs[CS] = m.cpu.pop(&mut m.mem);
        m.cpu.flags = m.cpu.pop(&mut m.mem);
        self.v86_call_vmm(vm, m, |core| core.vpicd_iret(vm, irq, None));
        self.v86_if_changed(vm, m, was);
    }
}
