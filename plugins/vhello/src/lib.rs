//! VHELLO: an example VxD without a device ID (it exports nothing, so it
//! needs none, and may be listed more than once: each listing is a separate
//! instance). It reads `[VHELLO] Greeting` and `[VHELLO] Add` from the
//! manifest, tests whether VCOUNTD is present by calling its `Get_Version`
//! (carry set means absent), and adds to VCOUNTD's counter with `VxDCall`.
//!
//! `[VHELLO] Call` lists more services to call at `Init_Complete`, as hex
//! `(device_id << 16) | ordinal` values: a way to poke at other devices from
//! a manifest.

use core::cell::Cell;

use vmm_plugin_api::prelude::*;

const VCOUNTD: u16 = 0x3A10;

/// The greeting device.
pub struct Vhello {
    add: Cell<u32>,
    calls: core::cell::RefCell<Vec<u32>>,
}

impl VxD for Vhello {
    const DEVICE: Device = Device::new("VHELLO").version(3, 10).sdk_version(DDK_VERSION_310);

    fn create(_vmm: &Vmm<'_>) -> Result<Self, String> {
        Ok(Vhello { add: Cell::new(1), calls: core::cell::RefCell::new(Vec::new()) })
    }

    fn control(&self, vmm: &Vmm<'_>, msg: ControlMessage) -> Carry {
        match msg.message {
            DEVICE_INIT => {
                let greeting = vmm
                    .get_profile_string(Some("VHELLO"), "Greeting")
                    .ok()
                    .flatten()
                    .map(|e| e.value)
                    .unwrap_or_else(|| "Hello from VHELLO".to_string());
                vmm.out_debug_string(&greeting);
                if let Ok(add) = vmm.get_profile_decimal_int(Some("VHELLO"), "Add", 1) {
                    self.add.set(add.value as u32);
                }
                let mut entry = vmm.get_profile_string(Some("VHELLO"), "Call").ok().flatten();
                while let Some(e) = entry {
                    let text = e.value.trim().trim_start_matches("0x");
                    match u32::from_str_radix(text, 16) {
                        Ok(service) => self.calls.borrow_mut().push(service),
                        Err(_) => warn!("[VHELLO] Call = {} is not a hex service number", e.value),
                    }
                    entry = vmm.get_next_profile_string(Some("VHELLO"), "Call", &e).ok().flatten();
                }
            }
            INIT_COMPLETE => {
                let mut probe = ServiceCall::default();
                let present =
                    vmm.vxd_call(vxd_service(VCOUNTD, 0), &mut probe).is_ok() && probe.regs.flags & CF_MASK == 0;
                if present {
                    let mut add = ServiceCall::default();
                    add.regs.eax = self.add.get();
                    if vmm.vxd_call(vxd_service(VCOUNTD, 1), &mut add).is_ok() {
                        vmm.out_debug_string(&format!("VCOUNTD total is now {}", add.regs.eax));
                    }
                } else {
                    vmm.out_debug_string("VCOUNTD is not loaded");
                }
                let calls = self.calls.borrow().clone();
                for service in calls {
                    let mut call = ServiceCall::default();
                    let ok = vmm.vxd_call(service, &mut call).is_ok();
                    vmm.out_debug_string(&format!(
                        "service {service:#010X}: {} EAX={:#X} CF={}",
                        if ok { "returned" } else { "refused" },
                        call.regs.eax,
                        call.regs.flags & CF_MASK
                    ));
                }
            }
            _ => {}
        }
        Carry::Clear
    }
}

declare_virtual_device!(Vhello);
