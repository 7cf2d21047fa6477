//! VPICD (device 3), built into the host as `*VPICD` (its DDB, service
//! table and entry check: `vpicd.rs`): the services on its state
//! (`vmm/vpicd.rs`), and the glue that calls the devices' procedures:
//! physical interrupts to `Hw_Int` (last virtualized first), simulation
//! into a VM (`Virt_Int`, then the VM's handler through
//! [`Core::deliver_hw_int`]), the VM's PIC ports (EOI → `EOI`, mask →
//! `Mask_Change`), the VM's IRET or the time-out (`IRET`), the
//! Time_Critical boost, and the default handling of IRQs no device
//! virtualized.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use vmm_plugin_api::abi::{IrqDescriptor, IrqStatus, Regs, VmmError};
use vmm_plugin_api::ddk::*;

use crate::machine::Core;
use crate::machine::io::{HostIoFn, PortHandler};
use crate::shell::state::SystemMessage;
use crate::trace::{CallOutcome, PriorityReason, TraceEvent};
use crate::violation::Violation;
use crate::vmm::callback::Callback;
use crate::vmm::context::Context;
use crate::vmm::ids::{InstanceId, VmId};
use crate::vmm::io::{OUTPUT, STRING_IO};
use crate::vmm::timers::TimerKind;
use crate::vmm::vpicd::{Command, Data, DefaultRoute, IRQS, Proc, Requester, VirtError, VirtHandle, VpicdState};

/// The ports of the two virtual PICs VPICD traps.
pub(crate) const PIC_PORTS: [u16; 4] = [0x20, 0x21, 0xA0, 0xA1];

/// The VPICD device: its state, and whether anything of it is in use
/// (the ring-3 paths check one flag before anything else).
#[derive(Default)]
pub(crate) struct Vpicd {
    pub(crate) state: RefCell<VpicdState>,
    /// A simulated interrupt waits for a VM's ring-3 code to enter it.
    ring3_waiting: Cell<bool>,
    /// A virtual request was ever set: until then a VM's STI or ring-3
    /// step costs VPICD one flag test.
    active: Cell<bool>,
}

impl Core {
    /// VPICD's instance number, if VPICD is loaded.
    pub(crate) fn vpicd_instance(&self) -> Option<InstanceId> {
        let reg = self.registry.borrow();
        reg.by_id(VPICD_DEVICE_ID).map(|i| reg.slots[i].instance)
    }

    /// VPICD traps the virtual PICs' ports (at its `Sys_Critical_Init`)
    /// with a host handler in the port table.
    pub(crate) fn vpicd_trap_ports(&self) {
        let Some(owner) = self.vpicd_instance() else { return };
        let handler: HostIoFn = Rc::new(|core: &Core, r: &mut Regs| core.vpicd_pic_access(r));
        for port in PIC_PORTS {
            if self.install_port_handler(owner, port, PortHandler::Host(handler.clone())).is_err() {
                tracing::warn!("VPICD could not trap port {port:#06X}: another device traps it");
            }
        }
    }

    /// An access to a virtual PIC port, in the I/O handler's registers
    /// (EBX VM, ECX IOType, EDX port, EAX data; EAX the value read).
    /// Like a DDK handler (`Emulate_Non_Byte_IO`), anything but a byte
    /// goes to `Simulate_IO`, which brings its bytes back here (or to the
    /// neighbouring port's handler).
    fn vpicd_pic_access(&self, r: &mut Regs) {
        let (vm, port, io_type) = (VmId::from_raw(r.ebx), r.edx as u16, r.ecx);
        r.eax = if io_type & !OUTPUT == 0 {
            self.vpicd_port(vm, port, io_type, r.eax)
        } else if io_type & STRING_IO != 0 {
            // The elements land in the VM's memory and registers.
            let _ = self.simulate_string_io(vm, port, io_type);
            0
        } else {
            self.simulate_io(vm, port, io_type, r.eax)
        };
    }

    // ---- arguments ------------------------------------------------------------------------

    fn vpicd_irq_of(&self, service: &'static str, handle: VirtHandle) -> Result<u8, VmmError> {
        let irq = self.vpicd.state.borrow().virt(handle).map(|v| v.irq);
        irq.ok_or_else(|| {
            self.refuse(
                Violation::BadIrqHandle,
                format!(
                    "{service} was given {handle:#010X}, which is not an IRQ handle VPICD_Virtualize_IRQ returned \
                     (or VPICD_Force_Default_Behavior invalidated it)"
                ),
                Some(service),
            )
        })
    }

    fn vpicd_irq_number(&self, service: &'static str, irq: u32) -> Result<u8, VmmError> {
        if irq < IRQS as u32 {
            return Ok(irq as u8);
        }
        Err(self.refuse(
            Violation::BadIrq,
            format!("{service} was given IRQ {irq}; VPICD's IRQs are 0-15 (two cascaded 8259s)"),
            Some(service),
        ))
    }

    fn vpicd_vm_arg(&self, service: &'static str, vm: VmId) -> Result<VmId, VmmError> {
        if self.vm_valid(vm) {
            return Ok(vm);
        }
        Err(self.refuse(
            Violation::InvalidVmHandle,
            format!("{service} was given {vm:#010X}, which is not a VM handle"),
            Some(service),
        ))
    }

    fn vm_handles(&self) -> Vec<VmId> {
        self.vms.borrow().iter().map(|v| v.handle).collect()
    }

    // ---- the services ----------------------------------------------------------------------

    /// `VPICD_Virtualize_IRQ` for `owner`.
    pub(crate) fn vpicd_virtualize_irq(&self, owner: InstanceId, d: IrqDescriptor) -> Result<VirtHandle, VmmError> {
        const SERVICE: &str = "VPICD_Virtualize_IRQ";
        let allowed = if self.manifest.machine.windows_version.0 < 4 { VPICD_OPT_ALL_31 } else { VPICD_OPT_ALL };
        let procs = [
            Some(Callback::plugin(owner, d.hw_int)),
            d.virt_int.into_option().map(|c| Callback::plugin(owner, c)),
            d.eoi.into_option().map(|c| Callback::plugin(owner, c)),
            d.mask_change.into_option().map(|c| Callback::plugin(owner, c)),
            d.iret.into_option().map(|c| Callback::plugin(owner, c)),
        ];
        if d.irq >= IRQS as u16 || d.options & !allowed != 0 {
            drop(procs);
            return Err(self.refuse(
                Violation::BadIrq,
                format!(
                    "{SERVICE} was given IRQ {} with options {:#06X}; IRQs are 0-15 and the options of this Windows \
                     version are {allowed:#06X}",
                    d.irq, d.options
                ),
                Some(SERVICE),
            ));
        }
        let r = self.vpicd.state.borrow_mut().virtualize(d.irq, d.options, owner, procs, d.iret_time_out, d.hw_int_ref);
        match r {
            Ok(h) => {
                // The default handling of the IRQ stops: its requests go.
                let vms = self.vm_handles();
                let mut st = self.vpicd.state.borrow_mut();
                for vm in vms {
                    st.clear_request(vm, d.irq as u8, Requester::Default);
                }
                Ok(h)
            }
            Err(e) => {
                let why = match e {
                    VirtError::Taken { owner: holder } => {
                        format!("{} virtualized it and the IRQ is not shared by both", self.instance_name(holder))
                    }
                    VirtError::Full => "32 devices share it already".to_string(),
                    VirtError::NoRoom | VirtError::BadIrq => "no IRQ handle is left".to_string(),
                };
                tracing::info!("{SERVICE} of IRQ {} by {} refused: {why}", d.irq, self.instance_name(owner));
                Err(VmmError::FAILED)
            }
        }
    }

    /// `VPICD_Set_Int_Request` (`set`) / `VPICD_Clear_Int_Request`.
    pub(crate) fn vpicd_set_int_request(&self, handle: VirtHandle, vm: VmId, set: bool) -> Result<(), VmmError> {
        let service = if set { "VPICD_Set_Int_Request" } else { "VPICD_Clear_Int_Request" };
        let irq = self.vpicd_irq_of(service, handle)?;
        let vm = self.vpicd_vm_arg(service, vm)?;
        if set {
            self.vpicd_request(vm, irq, Requester::Device(handle));
        } else {
            self.vpicd_clear(vm, irq, Requester::Device(handle));
        }
        Ok(())
    }

    /// Set `who`'s request of `irq` for `vm`, boost the VM, and simulate
    /// the interrupt if the VM can take it now.
    fn vpicd_request(&self, vm: VmId, irq: u8, who: Requester) {
        self.vpicd.active.set(true);
        let new = self.vpicd.state.borrow_mut().set_request(vm, irq, who);
        if new {
            self.trace(|| TraceEvent::VirtualIrq { irq, vm: vm.raw(), step: "requested" });
        }
        self.vpicd_boost(vm, true);
        self.vpicd_try_deliver(vm);
    }

    fn vpicd_clear(&self, vm: VmId, irq: u8, who: Requester) {
        let had = self.vpicd.state.borrow_mut().clear_request(vm, irq, who);
        if had {
            self.trace(|| TraceEvent::VirtualIrq { irq, vm: vm.raw(), step: "cleared" });
        }
        self.vpicd_unboost_if_idle(vm);
    }

    /// VPICD's Time_Critical boost of `vm`, given while a request is
    /// pending and taken back once nothing is (after the IRET).
    fn vpicd_boost(&self, vm: VmId, on: bool) {
        if !self.vpicd.state.borrow_mut().mark_boost(vm, on) {
            return;
        }
        let delta = if on { TIME_CRITICAL_BOOST as i64 } else { -(TIME_CRITICAL_BOOST as i64) };
        let priority = {
            let mut vms = self.vms.borrow_mut();
            let Some(v) = vms.get_mut(vm) else { return };
            v.boost += delta;
            v.priority()
        };
        self.trace(|| TraceEvent::Priority {
            vm: vm.raw(),
            boost: delta,
            priority,
            reason: PriorityReason::VirtualIrq,
        });
    }

    fn vpicd_unboost_if_idle(&self, vm: VmId) {
        if self.vpicd.state.borrow().idle(vm) {
            self.vpicd_boost(vm, false);
        }
    }

    /// `VPICD_Phys_EOI`.
    pub(crate) fn vpicd_phys_eoi(&self, handle: VirtHandle) -> Result<(), VmmError> {
        let irq = self.vpicd_irq_of("VPICD_Phys_EOI", handle)?;
        self.vpicd_end_physical(irq);
        Ok(())
    }

    /// End the physical interrupt; a request the PIC held is taken now
    /// (not inside an interrupt: then when the handlers return).
    fn vpicd_end_physical(&self, irq: u8) {
        let again = self.vpicd.state.borrow_mut().phys_eoi(irq);
        if again && self.context() != Context::Interrupt {
            self.raise_physical_irq(irq);
        }
    }

    /// `VPICD_Get_Complete_Status` / `VPICD_Get_Status`.
    pub(crate) fn vpicd_get_status(&self, handle: VirtHandle, vm: VmId, complete: bool) -> Result<u32, VmmError> {
        let service = if complete { "VPICD_Get_Complete_Status" } else { "VPICD_Get_Status" };
        let irq = self.vpicd_irq_of(service, handle)?;
        let vm = self.vpicd_vm_arg(service, vm)?;
        let vms = self.vm_handles();
        let s = self.vpicd.state.borrow_mut().status(vm, irq, Some(Requester::Device(handle)), &vms);
        Ok(if complete { s } else { s & (VPICD_STAT_IRET_PENDING | VPICD_STAT_IN_SERVICE) })
    }

    /// `VPICD_Test_Phys_Request`.
    pub(crate) fn vpicd_test_phys_request(&self, handle: VirtHandle) -> Result<bool, VmmError> {
        let irq = self.vpicd_irq_of("VPICD_Test_Phys_Request", handle)?;
        Ok(self.vpicd.state.borrow().phys_request(irq))
    }

    /// `VPICD_Physically_Mask` (0), `_Unmask` (1), `Set_Auto_Masking` (2).
    pub(crate) fn vpicd_physical_mask(&self, handle: VirtHandle, mode: u32) -> Result<(), VmmError> {
        let service =
            ["VPICD_Physically_Mask", "VPICD_Physically_Unmask", "VPICD_Set_Auto_Masking"][mode.min(2) as usize];
        let irq = self.vpicd_irq_of(service, handle)?;
        let mode = match mode {
            0 => Some(true),
            1 => Some(false),
            _ => None,
        };
        self.vpicd.state.borrow_mut().set_phys_mode(irq, mode);
        self.vpicd_take_held(irq);
        Ok(())
    }

    /// A request the physical PIC held while masked is taken once it is
    /// unmasked.
    fn vpicd_take_held(&self, irq: u8) {
        let vms = self.vm_handles();
        let held = {
            let st = self.vpicd.state.borrow();
            st.phys_request(irq) && !st.phys_in_service(irq) && !st.phys_masked(irq, &vms)
        };
        if held && self.context() != Context::Interrupt {
            self.raise_physical_irq(irq);
        }
    }

    /// `VPICD_Get_IRQ_Complete_Status` (the current VM's view).
    pub(crate) fn vpicd_get_irq_complete_status(&self, irq: u32) -> Result<IrqStatus, VmmError> {
        let irq = self.vpicd_irq_number("VPICD_Get_IRQ_Complete_Status", irq)?;
        let vms = self.vm_handles();
        let vm = self.cur_vm.get();
        let mut st = self.vpicd.state.borrow_mut();
        Ok(IrqStatus { status: st.status(vm, irq, None, &vms), virtualized: st.virtualized(irq) })
    }

    /// `VPICD_Convert_Handle_To_IRQ`.
    pub(crate) fn vpicd_convert_handle_to_irq(&self, handle: VirtHandle) -> Result<u32, VmmError> {
        self.vpicd_irq_of("VPICD_Convert_Handle_To_IRQ", handle).map(u32::from)
    }

    /// `VPICD_Convert_IRQ_To_Int`.
    pub(crate) fn vpicd_convert_irq_to_int(&self, irq: u32, vm: VmId) -> Result<u32, VmmError> {
        let irq = self.vpicd_irq_number("VPICD_Convert_IRQ_To_Int", irq)?;
        let vm = self.vpicd_vm_arg("VPICD_Convert_IRQ_To_Int", vm)?;
        Ok(self.vpicd.state.borrow_mut().vector(vm, irq) as u32)
    }

    /// `VPICD_Convert_Int_To_IRQ` (the current VM's mapping).
    pub(crate) fn vpicd_convert_int_to_irq(&self, vector: u32) -> Result<u32, VmmError> {
        let vm = self.cur_vm.get();
        let irq = u8::try_from(vector).ok().and_then(|v| self.vpicd.state.borrow_mut().irq_of_vector(vm, v));
        irq.map(u32::from).ok_or(VmmError::NOT_FOUND)
    }

    /// `VPICD_Force_Default_Owner`.
    pub(crate) fn vpicd_force_default_owner(&self, irq: u32, vm: VmId) -> Result<(), VmmError> {
        if irq >= IRQS as u32 || self.vpicd.state.borrow().virtualized(irq as u8) {
            return Err(VmmError::FAILED);
        }
        let route = if vm.is_none() {
            DefaultRoute::Global
        } else {
            DefaultRoute::Owned(Some(self.vpicd_vm_arg("VPICD_Force_Default_Owner", vm)?))
        };
        self.vpicd.state.borrow_mut().set_route(irq as u8, route);
        Ok(())
    }

    /// `VPICD_Force_Default_Behavior`: the descriptor and its requests go.
    pub(crate) fn vpicd_force_default_behavior(&self, handle: VirtHandle) -> Result<(), VmmError> {
        self.vpicd_irq_of("VPICD_Force_Default_Behavior", handle)?;
        let gone = self.vpicd.state.borrow_mut().unvirtualize(handle);
        drop(gone);
        for vm in self.vm_handles() {
            self.vpicd_unboost_if_idle(vm);
        }
        Ok(())
    }

    /// `VPICD_Virtual_EOI`.
    pub(crate) fn vpicd_virtual_eoi(&self, handle: VirtHandle, vm: VmId) -> Result<(), VmmError> {
        let irq = self.vpicd_irq_of("VPICD_Virtual_EOI", handle)?;
        let vm = self.vpicd_vm_arg("VPICD_Virtual_EOI", vm)?;
        self.vpicd_eoi(vm, irq);
        Ok(())
    }

    /// `VPICD_Get_Virtualization_Count`.
    pub(crate) fn vpicd_get_virtualization_count(&self, irq: u32) -> Result<u32, VmmError> {
        let irq = self.vpicd_irq_number("VPICD_Get_Virtualization_Count", irq)?;
        Ok(self.vpicd.state.borrow().count(irq))
    }

    /// `VPICD_Call_When_Hw_Int` for `owner`: `cb` joins the filter chain
    /// called on every physical interrupt (last installed first, then the
    /// IRQ's `Hw_Int` procedures). Whether a hook was installed before it
    /// (the DDK's ESI, the next proc in the chain).
    pub(crate) fn vpicd_call_when_hw_int(&self, owner: InstanceId, cb: Callback) -> Result<bool, VmmError> {
        let had = self.vpicd.state.borrow_mut().add_hw_int_hook(owner, cb);
        tracing::debug!("VPICD_Call_When_Hw_Int: {} hooks every hardware interrupt", self.instance_name(owner));
        Ok(had)
    }

    /// The `VPICD_Call_When_Hw_Int` chain for a physical interrupt of
    /// `irq`: each hook with EAX = the IRQ, EBX = the current VM, at
    /// interrupt time; each chains to the next when it returns.
    fn vpicd_hw_int_hooks(&self, irq: u8) {
        let ids = self.vpicd.state.borrow().hw_int_hook_ids();
        let cur = self.cur_vm.get();
        for id in ids {
            let Some(mut cb) = self.vpicd.state.borrow_mut().take_hw_int_hook(id) else { continue };
            let mut regs = Regs { eax: irq as u32, ebx: cur.raw(), ..Regs::default() };
            cb.call(self, Context::Interrupt, &mut regs);
            if let Some(gone) = self.vpicd.state.borrow_mut().put_hw_int_hook(id, cb) {
                gone.release();
            }
        }
    }

    // ---- calling the devices' procedures ----------------------------------------------------

    /// Call procedure `proc` of descriptor `handle` with EAX = handle,
    /// EBX = `vm` and `ecx`/`edx`/carry; `None` if it has none.
    fn vpicd_call(
        &self,
        handle: VirtHandle,
        proc: Proc,
        vm: VmId,
        ecx: u32,
        edx: u32,
        carry: bool,
    ) -> Option<CallOutcome> {
        let cb = self.vpicd.state.borrow_mut().take_proc(handle, proc);
        let mut cb = cb?;
        // Hw_Int at interrupt time; the others in the context of what
        // caused them (an event, an I/O trap), or on behalf of the VM when
        // its own code did (an STI, an IRET) or the host did.
        let context = match (proc, self.context()) {
            (Proc::HwInt, _) => Context::Interrupt,
            (_, c @ (Context::Event | Context::Appy | Context::Vm | Context::Interrupt)) => c,
            _ => Context::Vm,
        };
        let mut regs = Regs { eax: handle.raw(), ebx: vm.raw(), ecx, edx, flags: carry as u32, ..Regs::default() };
        let outcome = cb.call(self, context, &mut regs);
        if let Some(gone) = self.vpicd.state.borrow_mut().put_proc(handle, proc, cb) {
            gone.release();
        }
        Some(outcome)
    }

    // ---- simulating an interrupt into a VM ---------------------------------------------------

    /// Simulate the highest-priority deliverable request into `vm` if the
    /// VM can take it now: it is the current VM, runs (not suspended or
    /// blocked), has interrupts enabled, the IRQ is unmasked in its
    /// virtual PIC and no IRQ of equal or higher priority is in service.
    /// Not at interrupt time: the request is taken when the handlers
    /// return, or when the VM runs.
    pub(crate) fn vpicd_try_deliver(&self, vm: VmId) {
        loop {
            if self.context() == Context::Interrupt || vm != self.cur_vm.get() {
                return;
            }
            let ready = self.vms.borrow().get(vm).is_some_and(|v| v.schedulable() && v.interrupts_enabled());
            if !ready {
                return;
            }
            let Some(irq) = self.vpicd.state.borrow().next_deliverable(vm) else { return };
            if self.vpicd_deliver(vm, irq) {
                return;
            }
        }
    }

    /// Start simulating `irq` into `vm`: `Virt_Int` of each requester
    /// (the point of no return; under 4.0 with `Virt_Int_Reject` carry set
    /// withdraws that device's request), then in service and IRET pending,
    /// the IRET time-out, and the VM's handler. Whether it was simulated.
    fn vpicd_deliver(&self, vm: VmId, irq: u8) -> bool {
        let win4 = self.manifest.machine.windows_version.0 >= 4;
        let requesters = self.vpicd.state.borrow().requesters(vm, irq);
        for h in requesters.iter().filter_map(|who| who.device()) {
            let options = self.vpicd.state.borrow().virt(h).map_or(0, |v| v.options);
            let outcome = self.vpicd_call(h, Proc::VirtInt, vm, 0, 0, false);
            if win4 && options & VPICD_OPT_VIRT_INT_REJECT != 0 && outcome == Some(CallOutcome::Set) {
                self.vpicd_clear(vm, irq, Requester::Device(h));
            }
        }
        if !self.vpicd.state.borrow().requested(vm, irq) {
            return false;
        }
        let (seq, timeout) = {
            let mut st = self.vpicd.state.borrow_mut();
            let timeout = requesters
                .iter()
                .find_map(|who| who.device().and_then(|h| st.virt(h)).map(|v| v.iret_time_out))
                .unwrap_or(VPICD_DEFAULT_IRET_TIME_OUT);
            (st.begin_delivery(vm, irq), timeout)
        };
        self.trace(|| TraceEvent::VirtualIrq { irq, vm: vm.raw(), step: "delivered" });
        if timeout != 0 {
            self.sched.timer_after(
                crate::time::Duration::from_millis(timeout as u64),
                TimerKind::VirtualIret { vm, irq, seq },
            );
        }
        let vector = self.vpicd.state.borrow_mut().vector(vm, irq);
        if !self.deliver_hw_int(vm, vector) {
            // Not reflected into the VM (served on its way): as returned.
            self.vpicd_iret(vm, irq, None);
        }
        true
    }

    /// **The one way a simulated hardware interrupt enters a VM's code**:
    /// interrupt `vector` is queued for `vm`'s ring-3 code, which enters
    /// the VM's handler at once when it runs next (a DOS program: FLAGS,
    /// CS, IP pushed and a jump through its vector table; a Rust module:
    /// its VM's PM vector, an export or a PM call-back). Whether the
    /// interrupt was reflected into the VM; when it was not (served on its
    /// way, as a V86 interrupt hook may), VPICD takes it as returned (its
    /// IRET), so the device's `IRET` procedure still runs.
    pub(crate) fn deliver_hw_int(&self, vm: VmId, vector: u8) -> bool {
        let mut st = self.vpicd.state.borrow_mut();
        let Some(irq) = st.irq_of_vector(vm, vector) else { return false };
        st.push_ring3(vm, irq, vector);
        self.vpicd.ring3_waiting.set(true);
        true
    }

    /// Whether a simulated interrupt waits for some VM's ring-3 code.
    #[inline]
    pub(crate) fn vpicd_ring3_waiting(&self) -> bool {
        self.vpicd.ring3_waiting.get()
    }

    /// The next simulated interrupt `vm`'s ring-3 code must enter: `(irq,
    /// vector)`. One flag test when none waits anywhere.
    #[inline]
    pub(crate) fn vpicd_ring3_next(&self, vm: VmId) -> Option<(u8, u8)> {
        if !self.vpicd.ring3_waiting.get() {
            return None;
        }
        let mut st = self.vpicd.state.borrow_mut();
        let next = st.pop_ring3(vm);
        if !st.ring3_waiting() {
            self.vpicd.ring3_waiting.set(false);
        }
        next
    }

    /// A VM's ring-3 code is about to run: requests that waited for it
    /// (it was not current, or had interrupts disabled) are simulated now.
    #[inline]
    pub(crate) fn vpicd_vm_runs(&self, vm: VmId) {
        if self.vpicd.active.get() {
            self.vpicd_vm_runs_slow(vm);
        }
    }

    #[inline(never)]
    fn vpicd_vm_runs_slow(&self, vm: VmId) {
        let waiting = self.vpicd.state.borrow().any_request(vm);
        if waiting {
            self.vpicd_try_deliver(vm);
        }
    }

    /// Whether `vm`'s ring-3 code has a virtual interrupt to take now: one
    /// waits to be entered, or a request can be simulated (one flag test
    /// while VPICD was never used).
    #[inline]
    pub(crate) fn vpicd_ring3_work(&self, vm: VmId) -> bool {
        self.vpicd.active.get() && self.vpicd_ring3_work_slow(vm)
    }

    #[inline(never)]
    fn vpicd_ring3_work_slow(&self, vm: VmId) -> bool {
        let st = self.vpicd.state.borrow();
        st.has_ring3(vm)
            || (st.next_deliverable(vm).is_some()
                && self.vms.borrow().get(vm).is_some_and(|v| v.schedulable() && v.interrupts_enabled()))
    }

    /// The VM's handler was entered through the default handler (no
    /// handler of the VM's own): it sends the EOI and returns.
    pub(crate) fn vpicd_default_handler(&self, vm: VmId, irq: u8) {
        self.vpicd_eoi(vm, irq);
        self.vpicd_iret(vm, irq, None);
    }

    /// The VM's EOI of `irq` (its `OUT 20h/A0h` or `VPICD_Virtual_EOI`):
    /// out of service, the `EOI` procedures (or, for the default handling,
    /// the physical EOI and the request cleared), then whatever request
    /// remains is simulated again (level-triggered).
    pub(crate) fn vpicd_eoi(&self, vm: VmId, irq: u8) {
        if !self.vpicd.state.borrow_mut().end_service(vm, irq) {
            return;
        }
        self.trace(|| TraceEvent::VirtualIrq { irq, vm: vm.raw(), step: "eoi" });
        let chain = self.vpicd.state.borrow().chain(irq);
        if chain.is_empty() {
            self.vpicd_clear(vm, irq, Requester::Default);
            self.vpicd_end_physical(irq);
        }
        for h in chain {
            self.vpicd_call(h, Proc::Eoi, vm, 0, 0, false);
        }
        self.vpicd_try_deliver(vm);
    }

    /// The IRET of `irq`'s simulated interrupt in `vm`, or its time-out
    /// (`seq`: the delivery the timer was set for): the `IRET` procedures
    /// with carry set on a time-out, the boost taken back when nothing
    /// more is pending, and the next request simulated.
    pub(crate) fn vpicd_iret(&self, vm: VmId, irq: u8, seq: Option<u64>) {
        let Some(delivered) = self.vpicd.state.borrow_mut().iret(vm, irq, seq) else { return };
        let timed_out = seq.is_some();
        self.trace(|| TraceEvent::VirtualIrq {
            irq,
            vm: vm.raw(),
            step: if timed_out { "iret_timeout" } else { "iret" },
        });
        for h in delivered.into_iter().filter_map(Requester::device) {
            self.vpicd_call(h, Proc::Iret, vm, 0, 0, timed_out);
        }
        self.vpicd_unboost_if_idle(vm);
        self.vpicd_try_deliver(vm);
    }

    // ---- the VM's PIC ports ----------------------------------------------------------------

    /// An access of `vm` to one of the virtual PICs' ports.
    pub(crate) fn vpicd_port(&self, vm: VmId, port: u16, io_type: u32, data: u32) -> u32 {
        let slave = port & 0x80 != 0;
        if io_type & OUTPUT == 0 {
            return self.vpicd.state.borrow_mut().read(vm, port) as u32;
        }
        let value = data as u8;
        if port & 1 == 0 {
            let command = self.vpicd.state.borrow_mut().write_command(vm, slave, value);
            if let Command::Eoi(irq) = command {
                self.vpicd_eoi(vm, irq);
            }
        } else {
            let data = self.vpicd.state.borrow_mut().write_data(vm, slave, value);
            if let Data::Mask { masked, unmasked } = data {
                self.vpicd_mask_change(vm, masked, unmasked);
            }
        }
        0
    }

    /// `vm` masked and unmasked IRQs in its virtual PIC: `Mask_Change`
    /// (ECX non-zero masking, 0 unmasking) for virtualized IRQs, the
    /// default handling's ownership for the others; an unmasked request
    /// is simulated.
    fn vpicd_mask_change(&self, vm: VmId, masked: u16, unmasked: u16) {
        for irq in 0..IRQS {
            let bit = 1u16 << irq;
            if (masked | unmasked) & bit == 0 {
                continue;
            }
            let masking = masked & bit != 0;
            let chain = self.vpicd.state.borrow().chain(irq);
            if chain.is_empty() {
                if !masking && !self.vpicd_default_unmask(vm, irq) {
                    return;
                }
            } else {
                for h in chain {
                    self.vpicd_call(h, Proc::MaskChange, vm, masking as u32, 0, false);
                }
            }
            if !masking {
                self.vpicd_take_held(irq);
            }
        }
        if unmasked != 0 {
            self.vpicd_try_deliver(vm);
        }
    }

    /// The default handling of an un-virtualized IRQ `vm` unmasks: the
    /// first VM to unmask an owned IRQ owns it; a second one is ended
    /// (Windows terminated it and told the user to restart). Whether `vm`
    /// still exists.
    fn vpicd_default_unmask(&self, vm: VmId, irq: u8) -> bool {
        let route = self.vpicd.state.borrow().route(irq);
        match route {
            DefaultRoute::Global => true,
            DefaultRoute::Owned(None) => {
                self.vpicd.state.borrow_mut().set_route(irq, DefaultRoute::Owned(Some(vm)));
                tracing::info!("IRQ {irq} is now owned by VM {vm:#x} (it unmasked it first)");
                true
            }
            DefaultRoute::Owned(Some(owner)) if owner == vm || !self.vm_valid(owner) => {
                self.vpicd.state.borrow_mut().set_route(irq, DefaultRoute::Owned(Some(vm)));
                true
            }
            DefaultRoute::Owned(Some(owner)) => {
                let name = |v: VmId| self.vms.borrow().get(v).map_or_else(|| format!("{v:#x}"), |r| r.name.to_string());
                let text = format!(
                    "{} tried to use IRQ {irq}, which {} owns; the virtual machine is terminated. You should \
                     restart your computer.",
                    name(vm),
                    name(owner)
                );
                tracing::error!("{text}");
                if vm == self.sys_vm.get() {
                    self.set_fatal(text, None);
                } else {
                    // SHELL tells the user when the VM is ended (the
                    // machine does not call SHELL itself).
                    // One message per VM ended, however often it unmasks
                    // before it is gone.
                    self.shell.queue_system_message(SystemMessage { vm, device: "VPICD", text });
                    // Not under the VM's own code: at the next timer point.
                    self.sched.timer_at(self.sched.now(), TimerKind::IrqConflict(vm));
                }
                false
            }
        }
    }

    // ---- the physical side ------------------------------------------------------------------

    /// **A device asserts physical IRQ `irq`** (the simulated hardware:
    /// `[[irq]]`, the test kit, device models). Masked on the physical
    /// PIC or already in service, the request waits in the IRR; else the
    /// `Hw_Int` procedures run at interrupt time, last virtualized first,
    /// until one claims it (carry clear). An IRQ nobody virtualized is
    /// handled by default: a request for the current VM (global) or its
    /// owner.
    pub(crate) fn raise_physical_irq(&self, irq: u8) {
        if irq >= IRQS || self.vpicd_instance().is_none() {
            tracing::warn!(
                "physical IRQ {irq} raised, but {}",
                if irq >= IRQS { "IRQs are 0-15" } else { "VPICD is not loaded" }
            );
            return;
        }
        let mut rounds = 0;
        loop {
            let vms = self.vm_handles();
            let taken = {
                let mut st = self.vpicd.state.borrow_mut();
                let masked = st.phys_masked(irq, &vms);
                st.phys_raise(irq, masked)
            };
            if !taken {
                return;
            }
            self.count_work(crate::vmm::scheduler::Work::Interrupt, InstanceId::HOST);
            if self.vpicd.state.borrow().has_hw_int_hooks() {
                self.vpicd_hw_int_hooks(irq);
            }
            self.vpicd_hw_int(irq);
            // A request the PIC held while the handlers ran (the device
            // asserted the line again and a handler sent the EOI).
            let again = {
                let st = self.vpicd.state.borrow();
                st.phys_request(irq) && !st.phys_in_service(irq)
            };
            rounds += 1;
            if !again || rounds > 1 {
                return;
            }
        }
    }

    /// **A device stops asserting physical IRQ `irq`** (the test kit's
    /// `lower_irq`, a level `[[irq]]` entry's `hold`): on a
    /// level-triggered line the request drops, so a `VPICD_Phys_EOI` no
    /// longer takes it again; on an edge-triggered line (the default) a
    /// latched request stays and nothing changes.
    pub(crate) fn lower_physical_irq(&self, irq: u8) {
        if irq >= IRQS || self.vpicd_instance().is_none() {
            tracing::warn!(
                "physical IRQ {irq} lowered, but {}",
                if irq >= IRQS { "IRQs are 0-15" } else { "VPICD is not loaded" }
            );
            return;
        }
        self.vpicd.state.borrow_mut().phys_lower(irq);
    }

    fn vpicd_hw_int(&self, irq: u8) {
        let cur = self.cur_vm.get();
        let chain = self.vpicd.state.borrow().chain(irq);
        if chain.is_empty() {
            let target = match self.vpicd.state.borrow().route(irq) {
                DefaultRoute::Global => Some(cur),
                DefaultRoute::Owned(owner) => owner.filter(|o| self.vm_valid(*o)),
            };
            match target {
                Some(vm) => self.vpicd_request(vm, irq, Requester::Default),
                None => {
                    tracing::info!("IRQ {irq}: no device virtualized it and no VM owns it; dropped");
                    self.vpicd_end_physical(irq);
                }
            }
            return;
        }
        let mut claimed = false;
        for h in chain {
            let (options, reference) = self.vpicd.state.borrow().virt(h).map_or((0, 0), |v| (v.options, v.hw_int_ref));
            let edx = if options & VPICD_OPT_REF_DATA != 0 { reference } else { 0 };
            if self.vpicd_call(h, Proc::HwInt, cur, 0, edx, false) == Some(CallOutcome::Clear) {
                claimed = true;
                break;
            }
        }
        if !claimed {
            tracing::info!("IRQ {irq}: every device sharing it answered \"not mine\"; physical EOI, dropped");
            self.vpicd.state.borrow_mut().phys_eoi(irq);
        }
        // Requests the handlers set for the current VM at interrupt time.
        self.vpicd_vm_runs(cur);
    }

    // ---- lifetime --------------------------------------------------------------------------

    /// A VM was destroyed.
    pub(crate) fn vpicd_forget_vm(&self, vm: VmId) {
        self.vpicd.state.borrow_mut().forget_vm(vm);
        // Messages SHELL did not show (no SHELL loaded) go with the VM.
        self.shell.forget_system_messages(vm);
    }

    /// The IRQs `instance` still virtualizes (unload): un-virtualized, named.
    pub(crate) fn vpicd_reclaim(&self, instance: InstanceId) -> Vec<String> {
        let handles = self.vpicd.state.borrow().owned_by(instance);
        let mut left: Vec<String> = handles
            .into_iter()
            .filter_map(|h| {
                let v = self.vpicd.state.borrow_mut().unvirtualize(h)?;
                Some(format!("the virtualized IRQ {}", v.irq))
            })
            .collect();
        // The DDK has no way to remove a Call_When_Hw_Int hook: an unloaded
        // device's hooks go with it.
        let hooks = self.vpicd.state.borrow_mut().remove_hw_int_hooks(instance);
        left.extend((0..hooks).map(|_| "a VPICD_Call_When_Hw_Int hook".to_string()));
        left
    }

    /// A `[[irq]]` entry fires: assert its IRQ, schedule its lowering
    /// (a level line's `hold`) and the next repetition.
    pub(crate) fn fire_manifest_irq(&self, index: usize, rep: u32) {
        let entry = self.manifest.irqs[index].clone();
        self.raise_physical_irq(entry.irq);
        if let Some(hold) = entry.hold {
            self.sched.timer_after(hold, TimerKind::PhysIrqLower(entry.irq));
        }
        if let Some(every) = entry.every {
            let next = rep + 1;
            if entry.count.is_none_or(|c| next < c) {
                self.sched.timer_after(every, TimerKind::PhysIrq(index, next));
            }
        } else if let Some(c) = entry.count
            && rep + 1 < c
        {
            self.sched.timer_at(self.sched.now(), TimerKind::PhysIrq(index, rep + 1));
        }
    }
}
