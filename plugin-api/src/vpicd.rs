//! [`Vpicd`]: the services of VPICD, the virtual programmable interrupt
//! controller (device 3), under their DDK names, from [`Vmm::vpicd`].
//!
//! A device owns an IRQ by virtualizing it with an [`IrqDescriptor`]: the
//! IRQ number, the `VPICD_OPT_*` options and closures for the five
//! procedures of `VPICD_IRQ_Descriptor` (`Hw_Int`, `Virt_Int`, `EOI`,
//! `Mask_Change`, `IRET`). The closures receive the registering device
//! back as `&D`, like every callback of the SDK. VPICD must be loaded
//! (`*VPICD` in the device list); the Windows 95 services exist only when
//! the machine runs Windows 4.0, otherwise the call is the fatal "Invalid
//! VxD dynamic link call".

use abi_stable::std_types::{RNone, RResult, RSome};

use crate::abi::{Carry, HostCx, IrqStatus, RawCallback, Regs, VmmError, VpicdServices_Ref};
use crate::callback::{Named, repeating};
use crate::ddk::{VPICD_DEFAULT_IRET_TIME_OUT, VPICD_OPT_REF_DATA};
use crate::guard::fatal_exit;
use crate::handles::VmHandle;
use crate::vmm::Vmm;

/// An IRQ handle of VPICD (`VPICD_Virtualize_IRQ`'s EAX; not the [`crate::IrqHandle`] of a simulated interrupt source).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VpicdHandle(pub u32);

/// What a VPICD procedure is called with: EAX (the IRQ handle) and EBX
/// (the VM: the current VM for `Hw_Int`, the VM concerned otherwise).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct IrqEvent {
    /// EAX: the IRQ handle.
    pub handle: VpicdHandle,
    /// EBX: the VM.
    pub vm: VmHandle,
    /// EDX of `Hw_Int` with `VPICD_OPT_REF_DATA`: `VID_Hw_Int_Ref`; 0
    /// otherwise.
    pub ref_data: u32,
}

impl IrqEvent {
    fn of(r: &Regs) -> Self {
        IrqEvent { handle: VpicdHandle(r.eax), vm: VmHandle(r.ebx), ref_data: r.edx }
    }
}

/// What a `VPICD_Call_When_Hw_Int` hook is called with.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct HwIntEvent {
    /// EAX: the IRQ of the physical interrupt (the DDK leaves EAX
    /// undefined; the emulator fills it in).
    pub irq: u8,
    /// EBX: the current VM (not necessarily the IRQ's owner).
    pub vm: VmHandle,
}

/// `VPICD_IRQ_Descriptor` with closures: build it with
/// [`IrqDescriptor::new`] and pass it to [`Vpicd::virtualize_irq`].
pub struct IrqDescriptor<D> {
    irq: u16,
    options: u16,
    hw_int: RawCallback,
    virt_int: Option<RawCallback>,
    eoi: Option<RawCallback>,
    mask_change: Option<RawCallback>,
    iret: Option<RawCallback>,
    iret_time_out: u32,
    hw_int_ref: u32,
    _device: core::marker::PhantomData<fn(&D)>,
}

impl<D> core::fmt::Debug for IrqDescriptor<D> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("IrqDescriptor")
            .field("irq", &self.irq)
            .field("options", &self.options)
            .field("iret_time_out", &self.iret_time_out)
            .finish_non_exhaustive()
    }
}

impl<D: 'static> IrqDescriptor<D> {
    /// IRQ `irq` (0-15) with its `VID_Hw_Int_Proc`, called at interrupt
    /// time for every physical interrupt on the IRQ: return `true` if the
    /// interrupt was the device's (carry clear), `false` for "not mine"
    /// (carry set; meaningful when the IRQ is shared). `VID_IRET_Time_Out`
    /// is 500 ms.
    pub fn new<F: Fn(&D, &Vmm<'_>, IrqEvent) -> bool + 'static>(irq: u8, hw_int: F) -> Self {
        let hw_int =
            repeating(
                Named::<F>::new(),
                move |d: &D, vmm: &Vmm<'_>, r: &mut Regs| {
                    if hw_int(d, vmm, IrqEvent::of(r)) { Carry::Clear } else { Carry::Set }
                },
            );
        IrqDescriptor {
            irq: irq as u16,
            options: 0,
            hw_int,
            virt_int: None,
            eoi: None,
            mask_change: None,
            iret: None,
            iret_time_out: VPICD_DEFAULT_IRET_TIME_OUT,
            hw_int_ref: 0,
            _device: core::marker::PhantomData,
        }
    }

    /// `VID_Options`: `VPICD_OPT_CAN_SHARE`, ... (added to those set).
    pub fn options(mut self, options: u16) -> Self {
        self.options |= options;
        self
    }

    /// `VID_Virt_Int_Proc`: VPICD starts simulating the interrupt into
    /// `vm` (the point of no return). Return `true`; with
    /// `VPICD_OPT_VIRT_INT_REJECT` (4.0), `false` refuses the simulation.
    pub fn virt_int<F: Fn(&D, &Vmm<'_>, IrqEvent) -> bool + 'static>(mut self, f: F) -> Self {
        self.virt_int =
            Some(repeating(
                Named::<F>::new(),
                move |d: &D, vmm: &Vmm<'_>, r: &mut Regs| {
                    if f(d, vmm, IrqEvent::of(r)) { Carry::Clear } else { Carry::Set }
                },
            ));
        self
    }

    /// `VID_EOI_Proc`: the VM issued an EOI for the IRQ (or a device called
    /// `VPICD_Virtual_EOI`). A level-triggered device clears its request
    /// here, or the interrupt is simulated again at once.
    pub fn eoi<F: Fn(&D, &Vmm<'_>, IrqEvent) + 'static>(mut self, f: F) -> Self {
        self.eoi = Some(repeating(Named::<F>::new(), move |d: &D, vmm: &Vmm<'_>, r: &mut Regs| {
            f(d, vmm, IrqEvent::of(r));
            Carry::Clear
        }));
        self
    }

    /// `VID_Mask_Change_Proc`: the VM masked (`true`) or unmasked (`false`)
    /// the IRQ in its virtual PIC.
    pub fn mask_change<F: Fn(&D, &Vmm<'_>, IrqEvent, bool) + 'static>(mut self, f: F) -> Self {
        self.mask_change = Some(repeating(Named::<F>::new(), move |d: &D, vmm: &Vmm<'_>, r: &mut Regs| {
            f(d, vmm, IrqEvent::of(r), r.ecx != 0);
            Carry::Clear
        }));
        self
    }

    /// `VID_IRET_Proc`: the VM returned from the simulated interrupt, or
    /// (`timed_out`, the DDK's carry) `VID_IRET_Time_Out` ms passed first.
    pub fn iret<F: Fn(&D, &Vmm<'_>, IrqEvent, bool) + 'static>(mut self, f: F) -> Self {
        self.iret = Some(repeating(Named::<F>::new(), move |d: &D, vmm: &Vmm<'_>, r: &mut Regs| {
            f(d, vmm, IrqEvent::of(r), r.flags & 1 != 0);
            Carry::Clear
        }));
        self
    }

    /// `VID_IRET_Time_Out` in ms (0: none).
    pub fn iret_time_out(mut self, ms: u32) -> Self {
        self.iret_time_out = ms;
        self
    }

    /// `VID_Hw_Int_Ref` (4.0): sets `VPICD_OPT_REF_DATA`, so `Hw_Int`
    /// receives `value` in EDX ([`IrqEvent::ref_data`]).
    pub fn ref_data(mut self, value: u32) -> Self {
        self.hw_int_ref = value;
        self.options |= VPICD_OPT_REF_DATA;
        self
    }

    fn into_abi(self) -> crate::abi::IrqDescriptor {
        let opt = |c: Option<RawCallback>| match c {
            Some(c) => RSome(c),
            None => RNone,
        };
        crate::abi::IrqDescriptor {
            irq: self.irq,
            options: self.options,
            hw_int: self.hw_int,
            virt_int: opt(self.virt_int),
            eoi: opt(self.eoi),
            mask_change: opt(self.mask_change),
            iret: opt(self.iret),
            iret_time_out: self.iret_time_out,
            hw_int_ref: self.hw_int_ref,
        }
    }
}

/// VPICD's services, from [`Vmm::vpicd`].
#[derive(Copy, Clone)]
pub struct Vpicd<'a> {
    cx: &'a HostCx,
}

impl core::fmt::Debug for Vpicd<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Vpicd").finish_non_exhaustive()
    }
}

/// A `Result` service, unwinding after a fatal error.
fn result<T>(r: RResult<T, VmmError>) -> Result<T, VmmError> {
    match r.into_result() {
        Err(VmmError::FATAL) => fatal_exit(),
        other => other,
    }
}

impl<'a> Vpicd<'a> {
    /// Wrap the context of a host call.
    pub fn new(cx: &'a HostCx) -> Self {
        Vpicd { cx }
    }

    fn svc(&self) -> Result<VpicdServices_Ref, VmmError> {
        self.cx.services.vpicd().ok_or(VmmError::NOT_AVAILABLE)
    }

    /// `VPICD_Get_Version`: `(major, minor)`.
    pub fn get_version(&self) -> Result<(u8, u8), VmmError> {
        let v = result((self.svc()?.get_version())(self.cx))?;
        Ok(((v >> 8) as u8, v as u8))
    }

    /// `VPICD_Virtualize_IRQ`: own the IRQ the descriptor names. Not at
    /// interrupt time. `Err(VmmError::FAILED)` (the DDK's carry) when
    /// another device virtualized it and either does not share, or the
    /// IRQ is not 0-15.
    pub fn virtualize_irq<D: 'static>(&self, descriptor: IrqDescriptor<D>) -> Result<VpicdHandle, VmmError> {
        result((self.svc()?.virtualize_irq())(self.cx, descriptor.into_abi())).map(VpicdHandle)
    }

    /// `VPICD_Set_Int_Request`: set `vm`'s virtual request. The interrupt
    /// may be simulated before this returns (`Virt_Int` runs first).
    pub fn set_int_request(&self, irq: VpicdHandle, vm: VmHandle) -> Result<(), VmmError> {
        result((self.svc()?.set_int_request())(self.cx, irq.0, vm.0, true))
    }

    /// `VPICD_Clear_Int_Request`: clear this device's request for `vm`.
    pub fn clear_int_request(&self, irq: VpicdHandle, vm: VmHandle) -> Result<(), VmmError> {
        result((self.svc()?.set_int_request())(self.cx, irq.0, vm.0, false))
    }

    /// `VPICD_Phys_EOI`: end the physical interrupt.
    pub fn phys_eoi(&self, irq: VpicdHandle) -> Result<(), VmmError> {
        result((self.svc()?.phys_eoi())(self.cx, irq.0))
    }

    /// `VPICD_Get_Complete_Status`: `VPICD_STAT_*` bits of the IRQ in `vm`.
    pub fn get_complete_status(&self, irq: VpicdHandle, vm: VmHandle) -> Result<u32, VmmError> {
        result((self.svc()?.get_status())(self.cx, irq.0, vm.0, true))
    }

    /// `VPICD_Get_Status`: only the IRET-pending and in-service bits.
    pub fn get_status(&self, irq: VpicdHandle, vm: VmHandle) -> Result<u32, VmmError> {
        result((self.svc()?.get_status())(self.cx, irq.0, vm.0, false))
    }

    /// `VPICD_Test_Phys_Request`: the physical request (IRR) bit.
    pub fn test_phys_request(&self, irq: VpicdHandle) -> Result<bool, VmmError> {
        result((self.svc()?.test_phys_request())(self.cx, irq.0))
    }

    /// `VPICD_Physically_Mask`: mask the IRQ on the real PIC until
    /// [`Vpicd::physically_unmask`] or [`Vpicd::set_auto_masking`].
    pub fn physically_mask(&self, irq: VpicdHandle) -> Result<(), VmmError> {
        result((self.svc()?.physical_mask())(self.cx, irq.0, 0))
    }

    /// `VPICD_Physically_Unmask`, whatever the VMs' virtual masks.
    pub fn physically_unmask(&self, irq: VpicdHandle) -> Result<(), VmmError> {
        result((self.svc()?.physical_mask())(self.cx, irq.0, 1))
    }

    /// `VPICD_Set_Auto_Masking`: physically unmasked while at least one VM
    /// has the IRQ unmasked (the default).
    pub fn set_auto_masking(&self, irq: VpicdHandle) -> Result<(), VmmError> {
        result((self.svc()?.physical_mask())(self.cx, irq.0, 2))
    }

    /// `VPICD_Get_IRQ_Complete_Status` of IRQ number `irq`: the status
    /// bits, and whether some device virtualized the IRQ (the DDK's carry).
    pub fn get_irq_complete_status(&self, irq: u8) -> Result<IrqStatus, VmmError> {
        result((self.svc()?.get_irq_complete_status())(self.cx, irq as u32))
    }

    /// `VPICD_Convert_Handle_To_IRQ`.
    pub fn convert_handle_to_irq(&self, irq: VpicdHandle) -> Result<u8, VmmError> {
        result((self.svc()?.convert_handle_to_irq())(self.cx, irq.0)).map(|n| n as u8)
    }

    /// `VPICD_Convert_IRQ_To_Int`: the vector `vm`'s virtual PIC maps IRQ
    /// `irq` to (VMs may move the PIC's base).
    pub fn convert_irq_to_int(&self, irq: u8, vm: VmHandle) -> Result<u8, VmmError> {
        result((self.svc()?.convert_irq_to_int())(self.cx, irq as u32, vm.0)).map(|v| v as u8)
    }

    /// `VPICD_Convert_Int_To_IRQ` (the current VM's mapping):
    /// `Err(VmmError::NOT_FOUND)` when `vector` is no IRQ's.
    pub fn convert_int_to_irq(&self, vector: u8) -> Result<u8, VmmError> {
        result((self.svc()?.convert_int_to_irq())(self.cx, vector as u32)).map(|v| v as u8)
    }

    /// `VPICD_Force_Default_Owner`: the default handling of the
    /// un-virtualized IRQ `irq` gives it to `vm`, or makes it global
    /// (`None`). `Err(VmmError::FAILED)` when the IRQ is virtualized.
    pub fn force_default_owner(&self, irq: u8, vm: Option<VmHandle>) -> Result<(), VmmError> {
        result((self.svc()?.force_default_owner())(self.cx, irq as u32, vm.map_or(0, |v| v.0)))
    }

    /// `VPICD_Force_Default_Behavior`: un-virtualize (a dynamic device's
    /// exit does this); the handle is invalid afterwards.
    pub fn force_default_behavior(&self, irq: VpicdHandle) -> Result<(), VmmError> {
        result((self.svc()?.force_default_behavior())(self.cx, irq.0))
    }

    /// `VPICD_Virtual_EOI` (4.0): an EOI on `vm`'s behalf; the EOI
    /// procedures run as for the VM's own.
    pub fn virtual_eoi(&self, irq: VpicdHandle, vm: VmHandle) -> Result<(), VmmError> {
        result((self.svc()?.virtual_eoi())(self.cx, irq.0, vm.0))
    }

    /// `VPICD_Get_Virtualization_Count` (4.0): how many devices virtualize
    /// IRQ `irq`.
    pub fn get_virtualization_count(&self, irq: u8) -> Result<u32, VmmError> {
        result((self.svc()?.get_virtualization_count())(self.cx, irq as u32))
    }

    /// `VPICD_Call_When_Hw_Int`: `f` joins the filter chain VPICD calls on
    /// **every** physical interrupt it takes, whichever the IRQ and whether
    /// or not a device virtualized it, at interrupt time (only
    /// asynchronous services): hooks last installed first, then the
    /// IRQ's `Hw_Int` procedures (or VPICD's default handling). A hook
    /// watches; it cannot claim the interrupt: when it returns, VPICD goes
    /// on down the chain (the DDK's "jump to the next proc", and EBX
    /// preserved). `Ok(true)` when another hook was installed before this
    /// one (the DDK returns it in ESI). No service removes a hook: a
    /// dynamic device that installs one leaks it at unload.
    pub fn call_when_hw_int<D: 'static, F: Fn(&D, &Vmm<'_>, HwIntEvent) + 'static>(
        &self,
        f: F,
    ) -> Result<bool, VmmError> {
        let hook = crate::vmm::appended(self.svc()?.call_when_hw_int())?;
        let cb = repeating(Named::<F>::new(), move |d: &D, vmm: &Vmm<'_>, r: &mut Regs| {
            f(d, vmm, HwIntEvent { irq: r.eax as u8, vm: VmHandle(r.ebx) });
            Carry::Clear
        });
        result(hook(self.cx, cb))
    }
}

impl<'a> Vmm<'a> {
    /// VPICD's services (owning IRQs, virtual interrupt requests, EOI,
    /// masking).
    pub fn vpicd(&self) -> Vpicd<'a> {
        Vpicd::new(self.host_cx())
    }
}
