//! VCOUNTD: an example VxD that exports services.
//!
//! Its service table is `VCOUNTD_Get_Version` (ordinal 0, answered by the
//! SDK), `VCOUNTD_Add` (EAX = amount in, EAX = new total out) and
//! `VCOUNTD_Get_Count` (EAX = total). Other devices reach them with
//! `VxDCall` at `(0x3A10 << 16) | ordinal`. The starting count comes from
//! `[VCOUNTD] Start` in the manifest, read with `Get_Profile_Decimal_Int`
//! during `Device_Init`.

use core::cell::Cell;

use vmm_plugin_api::prelude::*;

/// VCOUNTD's device ID.
pub const VCOUNTD_DEVICE_ID: u16 = 0x3A10;
/// `VCOUNTD_Add`.
pub const VCOUNTD_ADD: u16 = 1;
/// `VCOUNTD_Get_Count`.
pub const VCOUNTD_GET_COUNT: u16 = 2;

/// The counter device.
pub struct Vcountd {
    count: Cell<u32>,
}

impl VxD for Vcountd {
    const DEVICE: Device = Device::new("VCOUNTD").version(1, 2).id(VCOUNTD_DEVICE_ID).services(&[
        "VCOUNTD_Get_Version",
        "VCOUNTD_Add",
        "VCOUNTD_Get_Count",
    ]);

    fn create(_vmm: &Vmm<'_>) -> Result<Self, String> {
        Ok(Vcountd { count: Cell::new(0) })
    }

    fn control(&self, vmm: &Vmm<'_>, msg: ControlMessage) -> Carry {
        if msg.message == DEVICE_INIT {
            match vmm.get_profile_decimal_int(Some("VCOUNTD"), "Start", 0) {
                Ok(start) => self.count.set(start.value as u32),
                Err(e) => warn!("cannot read [VCOUNTD] Start: {e}"),
            }
            info!("VCOUNTD starts counting at {}", self.count.get());
        }
        Carry::Clear
    }

    fn service(&self, _vmm: &Vmm<'_>, ordinal: u16, call: &mut ServiceCall) -> Carry {
        match ordinal {
            VCOUNTD_ADD => {
                let total = self.count.get().wrapping_add(call.regs.eax);
                self.count.set(total);
                call.regs.eax = total;
                Carry::Clear
            }
            VCOUNTD_GET_COUNT => {
                call.regs.eax = self.count.get();
                Carry::Clear
            }
            _ => Carry::Set,
        }
    }
}

declare_virtual_device!(Vcountd);
