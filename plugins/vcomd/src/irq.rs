//! IRQ 4: what VCOMD does with COM1's interrupt, as VCD does (section
//! 8.1.5-8.1.6 of the virtual-hardware reference).
//!
//! With `*VPICD` in the device list, the first assignment of the port
//! ([`virtualize`], from `set_owner`) calls `VPICD_Virtualize_IRQ` for IRQ
//! 4 (options `VPICD_Opt_Can_Share`, IRET time-out 500 ms) with two
//! procedures:
//!
//! * **Hw_Int** decides with [`hw_int`] from the owner's and the current
//!   VM's register images: a request for the owner, "eaten" (the UART is
//!   quieted and the physical interrupt ended), "not mine" (carry set), or
//!   the current VM armed the UART of a free port: a global event makes it
//!   the owner and requests the interrupt there (scenario 55).
//! * **EOI** (the owner's handler sent EOI to its virtual PIC, scenario
//!   57): `VPICD_Phys_EOI`, `VPICD_Clear_Int_Request`, and a new last-use
//!   stamp for the port.
//! * **Mask_Change**: a VM other than the owner that unmasks IRQ 4 at its
//!   virtual PIC asks for the port (KB Q76564's trigger 5).
//!
//! Without `*VPICD` VCOMD leaves IRQ 4 alone and says so once; a DOS
//! program polls LSR.

use vmm_plugin_api::prelude::*;

use crate::{Image, Vcomd};

/// Whether `*VPICD` is in `[386Enh] device` (read at `Device_Init`).
pub fn vpicd_listed(vmm: &Vmm<'_>) -> bool {
    let mut entry = vmm.get_profile_string(None, "device").ok().flatten();
    let mut seen = 0;
    while let Some(e) = entry {
        if e.value.trim().eq_ignore_ascii_case("*VPICD") {
            return true;
        }
        seen += 1;
        if seen > 256 {
            return false;
        }
        entry = vmm.get_next_profile_string(None, "device", &e).ok().flatten();
    }
    false
}

/// `VPICD_Virtualize_IRQ` of IRQ 4 with VCOMD's procedures; `None` (and
/// an error in the log) when VPICD refuses, as when another device holds
/// IRQ 4 without sharing: the port then works by polling.
pub fn virtualize(vmm: &Vmm<'_>) -> Option<VpicdHandle> {
    let d = IrqDescriptor::new(IRQ, |dev: &Vcomd, vmm: &Vmm<'_>, e: IrqEvent| dev.hw_int(vmm, e))
        .options(VPICD_OPT_CAN_SHARE)
        .iret_time_out(IRET_TIME_OUT_MS)
        .eoi(|dev: &Vcomd, vmm: &Vmm<'_>, e: IrqEvent| dev.eoi(vmm, e))
        .mask_change(|dev: &Vcomd, vmm: &Vmm<'_>, e: IrqEvent, masking: bool| {
            // Trigger 5: a VM that unmasks IRQ 4 wants the port.
            if !masking && dev.owner.get() != Some(e.vm) {
                dev.request(vmm, e.vm);
            }
        });
    match vmm.vpicd().virtualize_irq(d) {
        Ok(h) => {
            info!("VCOMD virtualizes IRQ 4: its interrupts go to COM1's owner");
            Some(h)
        }
        Err(e) => {
            error!("VCOMD cannot virtualize IRQ 4 ({e:?}): a hardware interrupt conflict; COM1 works by polling");
            None
        }
    }
}

/// COM1's IRQ.
pub const IRQ: u8 = 4;

/// VCD's IRET time-out for the port's IRQ.
pub const IRET_TIME_OUT_MS: u32 = 500;

impl Vcomd {
    /// VCD_Int.
    fn hw_int(&self, vmm: &Vmm<'_>, e: IrqEvent) -> bool {
        let owner = self.owner.get().map(|vm| (vm, self.image(vm)));
        let current = (e.vm, self.image(e.vm));
        match hw_int(owner, current) {
            HwInt::Request(vm) => {
                let _ = vmm.vpicd().set_int_request(e.handle, vm);
                true
            }
            HwInt::AssignCurrent(vm) => {
                // Not at interrupt time: the assignment programs the UART.
                let handle = e.handle;
                let scheduled = vmm.schedule_global_event(move |dev: &Vcomd, vmm: &Vmm<'_>, _| {
                    if dev.owner.get().is_none() && vmm.validate_vm_handle(vm) && dev.request(vmm, vm) {
                        let _ = vmm.vpicd().set_int_request(handle, vm);
                    } else {
                        let _ = vmm.vpicd().phys_eoi(handle);
                    }
                });
                if scheduled.is_err() {
                    let _ = vmm.vpicd().phys_eoi(e.handle);
                }
                true
            }
            HwInt::Eat => {
                let _ = vmm.vpicd().phys_eoi(e.handle);
                // Reading the UART is not for interrupt time.
                let _ = vmm.schedule_global_event(|dev: &Vcomd, vmm: &Vmm<'_>, _| dev.quiet(vmm));
                true
            }
            HwInt::NotMine => false,
        }
    }

    /// VCD_EOI: the owner's handler sent EOI to its virtual PIC.
    fn eoi(&self, vmm: &Vmm<'_>, e: IrqEvent) {
        let _ = vmm.vpicd().phys_eoi(e.handle);
        let _ = vmm.vpicd().clear_int_request(e.handle, e.vm);
        if self.owner.get() == Some(e.vm) {
            self.last_use.set(vmm.get_system_time());
            // VCD's boost: the owner gets time to read what arrived.
            let _ = vmm.adjust_execution_time(e.vm, EOI_BOOST_MS as i32);
        }
    }

    /// The port leaves `old` (another VM gets it, or `old` ends): an
    /// interrupt requested for it and not yet simulated was for bytes that
    /// were drained with it, so the request goes and the physical
    /// interrupt ends (else IRQ 4 would stay in service). An interrupt
    /// already in its handler ends with its EOI.
    pub(crate) fn irq_leaves(&self, vmm: &Vmm<'_>, old: VmHandle) {
        let Some(h) = self.irq.get() else { return };
        let status = vmm.vpicd().get_complete_status(h, old).unwrap_or(0);
        if status & VPICD_STAT_VIRT_DEV_REQ != 0 && status & VPICD_STAT_IN_SERVICE == 0 {
            let _ = vmm.vpicd().clear_int_request(h, old);
            let _ = vmm.vpicd().phys_eoi(h);
        }
    }

    /// Quiet the UART for an owner that does not want its interrupts: read
    /// IIR, LSR, MSR and RBR (with DLAB off) as the owner.
    fn quiet(&self, vmm: &Vmm<'_>) {
        let Some(vm) = self.owner.get() else { return };
        let image = self.image(vm);
        let io = |port: u16, io_type: u32, data: u32| {
            vmm.simulate_io(IoAccess { vm, io_type, port: crate::BASE + port, data }).unwrap_or(0)
        };
        if image.lcr & crate::LCR_DLAB != 0 {
            io(3, BYTE_OUTPUT, u32::from(image.lcr & !crate::LCR_DLAB));
        }
        for port in [2, 5, 6, 0] {
            io(port, BYTE_INPUT, 0);
        }
        if image.lcr & crate::LCR_DLAB != 0 {
            io(3, BYTE_OUTPUT, u32::from(image.lcr));
        }
    }
}

/// What the Hw_Int callback does with an interrupt of the UART.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum HwInt {
    /// `VPICD_Set_Int_Request(vm)`; CF clear.
    Request(VmHandle),
    /// Nobody owns the port but the current VM armed the UART (IER and
    /// OUT2): a global event makes it the owner and requests the interrupt
    /// there (scenario 55).
    AssignCurrent(VmHandle),
    /// The owner does not want interrupts (its OUT2 is clear): quiet the
    /// UART (read IIR, LSR, MSR, RBR), `VPICD_Phys_EOI`, CF clear.
    Eat,
    /// Not this UART's (nobody armed it): CF set, so a device sharing the
    /// IRQ gets it.
    NotMine,
}

/// VCD_Int: the owner (and its register image) and the current VM (and
/// its image) decide.
pub fn hw_int(owner: Option<(VmHandle, Image)>, current: (VmHandle, Image)) -> HwInt {
    const OUT2: u8 = 0x08;
    match owner {
        Some((vm, image)) if image.mcr & OUT2 != 0 => HwInt::Request(vm),
        Some(_) => HwInt::Eat,
        None if current.1.ier != 0 && current.1.mcr & OUT2 != 0 => HwInt::AssignCurrent(current.0),
        None => HwInt::NotMine,
    }
}

/// VCD's `COMBOOSTTIME` default: the ms of `Adjust_Execution_Time` VCD
/// (and VCOMD) gives the owner after each EOI.
pub const EOI_BOOST_MS: u32 = 2;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interrupts_go_to_an_owner_that_wants_them_or_make_an_armed_vm_the_owner() {
        let armed = Image { ier: 1, mcr: 0x0B, ..Image::default() };
        let quiet = Image::default();
        let (a, b) = (VmHandle(2), VmHandle(3));
        assert_eq!(hw_int(Some((a, armed)), (b, quiet)), HwInt::Request(a));
        assert_eq!(hw_int(Some((a, quiet)), (b, armed)), HwInt::Eat);
        assert_eq!(hw_int(None, (b, armed)), HwInt::AssignCurrent(b));
        assert_eq!(hw_int(None, (b, quiet)), HwInt::NotMine);
    }
}
