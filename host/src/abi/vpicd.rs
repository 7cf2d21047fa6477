//! The VPICD services table: thin `extern "C"` shims for the typed `Vpicd`
//! API. Each passes VPICD's entry check (VPICD loaded, the service's rule)
//! and calls the same `Core` method a `VxDCall` reaches.

use abi_stable::prefix_type::WithMetadata;
use abi_stable::staticref;
use abi_stable::std_types::RErr;
use vmm_plugin_api::abi::{
    HostCx, IrqDescriptor, IrqStatus, RawCallback, VmmError, VmmResult, VpicdServices, VpicdServices_Ref,
};
use vmm_plugin_api::ddk::*;

use crate::abi::{caller, guarded};
use crate::machine::Core;
use crate::vmm::callback::Callback;
use crate::vmm::ids::VmId;
use crate::vmm::vpicd::VirtHandle;
use crate::vpicd::SERVICES;

/// Run VPICD service `ordinal`: `body` if the entry check passes.
fn vpicd<T>(cx: &HostCx, ordinal: u16, body: impl FnOnce(&Core) -> Result<T, VmmError>) -> VmmResult<T> {
    guarded(cx, SERVICES[ordinal as usize], RErr(VmmError::FATAL), |core| {
        core.vpicd_enter(ordinal).and_then(|()| body(core)).into()
    })
}

extern "C" fn get_version(cx: &HostCx) -> VmmResult<u32> {
    vpicd(cx, VPICD_GET_VERSION, |core| Ok(core.vmm_version()))
}

extern "C" fn virtualize_irq(cx: &HostCx, descriptor: IrqDescriptor) -> VmmResult<u32> {
    let owner = caller(cx);
    let mut d = Some(descriptor);
    let r = vpicd(cx, VPICD_VIRTUALIZE_IRQ, |core| {
        core.vpicd_virtualize_irq(owner, d.take().expect("once")).map(|h| h.raw())
    });
    // A refused call releases the closures in the plugin.
    if let Some(d) = d {
        let release = |raw| drop(Callback::plugin(owner, raw));
        release(d.hw_int);
        for raw in [d.virt_int, d.eoi, d.mask_change, d.iret].into_iter().filter_map(|c| c.into_option()) {
            release(raw);
        }
    }
    r
}

extern "C" fn set_int_request(cx: &HostCx, handle: u32, vm: u32, set: bool) -> VmmResult<()> {
    let vm = VmId::from_raw(vm);
    let ordinal = if set { VPICD_SET_INT_REQUEST } else { VPICD_CLEAR_INT_REQUEST };
    vpicd(cx, ordinal, |core| core.vpicd_set_int_request(VirtHandle::from_raw(handle), vm, set))
}

extern "C" fn phys_eoi(cx: &HostCx, handle: u32) -> VmmResult<()> {
    vpicd(cx, VPICD_PHYS_EOI, |core| core.vpicd_phys_eoi(VirtHandle::from_raw(handle)))
}

extern "C" fn get_status(cx: &HostCx, handle: u32, vm: u32, complete: bool) -> VmmResult<u32> {
    let vm = VmId::from_raw(vm);
    let ordinal = if complete { VPICD_GET_COMPLETE_STATUS } else { VPICD_GET_STATUS };
    vpicd(cx, ordinal, |core| core.vpicd_get_status(VirtHandle::from_raw(handle), vm, complete))
}

extern "C" fn test_phys_request(cx: &HostCx, handle: u32) -> VmmResult<bool> {
    vpicd(cx, VPICD_TEST_PHYS_REQUEST, |core| core.vpicd_test_phys_request(VirtHandle::from_raw(handle)))
}

extern "C" fn physical_mask(cx: &HostCx, handle: u32, mode: u32) -> VmmResult<()> {
    let ordinal = VPICD_PHYSICALLY_MASK + mode.min(2) as u16;
    vpicd(cx, ordinal, |core| core.vpicd_physical_mask(VirtHandle::from_raw(handle), mode))
}

extern "C" fn get_irq_complete_status(cx: &HostCx, irq: u32) -> VmmResult<IrqStatus> {
    vpicd(cx, VPICD_GET_IRQ_COMPLETE_STATUS, |core| core.vpicd_get_irq_complete_status(irq))
}

extern "C" fn convert_handle_to_irq(cx: &HostCx, handle: u32) -> VmmResult<u32> {
    vpicd(cx, VPICD_CONVERT_HANDLE_TO_IRQ, |core| core.vpicd_convert_handle_to_irq(VirtHandle::from_raw(handle)))
}

extern "C" fn convert_irq_to_int(cx: &HostCx, irq: u32, vm: u32) -> VmmResult<u32> {
    let vm = VmId::from_raw(vm);
    vpicd(cx, VPICD_CONVERT_IRQ_TO_INT, |core| core.vpicd_convert_irq_to_int(irq, vm))
}

extern "C" fn convert_int_to_irq(cx: &HostCx, vector: u32) -> VmmResult<u32> {
    vpicd(cx, VPICD_CONVERT_INT_TO_IRQ, |core| core.vpicd_convert_int_to_irq(vector))
}

extern "C" fn force_default_owner(cx: &HostCx, irq: u32, vm: u32) -> VmmResult<()> {
    let vm = VmId::from_raw(vm);
    vpicd(cx, VPICD_FORCE_DEFAULT_OWNER, |core| core.vpicd_force_default_owner(irq, vm))
}

extern "C" fn force_default_behavior(cx: &HostCx, handle: u32) -> VmmResult<()> {
    vpicd(cx, VPICD_FORCE_DEFAULT_BEHAVIOR, |core| core.vpicd_force_default_behavior(VirtHandle::from_raw(handle)))
}

extern "C" fn virtual_eoi(cx: &HostCx, handle: u32, vm: u32) -> VmmResult<()> {
    let vm = VmId::from_raw(vm);
    vpicd(cx, VPICD_VIRTUAL_EOI, |core| core.vpicd_virtual_eoi(VirtHandle::from_raw(handle), vm))
}

extern "C" fn get_virtualization_count(cx: &HostCx, irq: u32) -> VmmResult<u32> {
    vpicd(cx, VPICD_GET_VIRTUALIZATION_COUNT, |core| core.vpicd_get_virtualization_count(irq))
}

extern "C" fn call_when_hw_int(cx: &HostCx, callback: RawCallback) -> VmmResult<bool> {
    let owner = caller(cx);
    let mut cb = Some(Callback::plugin(owner, callback));
    // A refused call drops (releases) the callback.
    vpicd(cx, VPICD_CALL_WHEN_HW_INT, |core| core.vpicd_call_when_hw_int(owner, cb.take().expect("once")))
}

struct Table;

impl Table {
    staticref! {
        const VAL: WithMetadata<VpicdServices> = WithMetadata::new(VpicdServices {
            get_version,
            virtualize_irq,
            set_int_request,
            phys_eoi,
            get_status,
            test_phys_request,
            physical_mask,
            get_irq_complete_status,
            convert_handle_to_irq,
            convert_irq_to_int,
            convert_int_to_irq,
            force_default_owner,
            force_default_behavior,
            virtual_eoi,
            get_virtualization_count,
            call_when_hw_int,
        })
    }
}

/// The VPICD services.
pub(crate) const VPICD_SERVICES: VpicdServices_Ref = VpicdServices_Ref(Table::VAL.as_prefix());
