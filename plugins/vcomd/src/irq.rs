//! IRQ 4: what VCOMD does with COM1's interrupt, as VCD does (section
//! 8.1.5-8.1.6 of the virtual-hardware reference). The decisions are here
//! as plain functions over VCOMD's state; the machine has no virtual PIC
//! (VPICD) yet, so nothing calls them: a DOS program polls LSR instead.
//!
//! Owning the IRQ (added with VPICD): on the first assignment of the port
//! `set_owner` calls `VPICD_Virtualize_IRQ` for IRQ 4 (options
//! `VPICD_Opt_Can_Share`, IRET time-out 500 ms, Hw_Int [`hw_int`], EOI
//! the EOI of [`EOI_BOOST_MS`]), and programs the physical mask from the owner's virtual
//! mask (`VPICD_Set_Auto_Masking`).

use vmm_plugin_api::VmHandle;

use crate::Image;

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

/// The EOI callback, when the owner's handler sends EOI to its virtual
/// PIC (scenario 57), calls `VPICD_Phys_EOI` and `VPICD_Clear_Int_Request`,
/// gives the owner this many ms of `Adjust_Execution_Time` (VCD's
/// `COMBOOSTTIME` default) and stamps the port's last use.
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
