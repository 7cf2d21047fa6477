//! VPICD (device 3), built into the host as `*VPICD`: its service table
//! with the rule each service follows, the entry check every call passes
//! (typed `Vpicd` API in `abi/vpicd.rs`, or `VxDCall` here), and the
//! device's DDB. The services and the glue that calls the devices'
//! procedures are the machine's (`machine/vpicd.rs`), the state is
//! `vmm/vpicd.rs`.

use vmm_plugin_api::abi::{Carry, ControlArgs, ServiceCall, VmmError};
use vmm_plugin_api::ddk::*;

use crate::machine::Core;
use crate::machine::device::Builtin;
use crate::machine::registry::DeviceInfo;
use crate::machine::rules::allowed;
use crate::machine::vpicd::Vpicd;
use crate::violation::Violation;
use crate::vmm::ids::{InstanceId, VmId};
use crate::vmm::services::Rule;
use crate::vmm::vpicd::VirtHandle;

/// VPICD's service table, by ordinal (VPICD.INC 3.1, VPICD.H 4.0).
pub(crate) const SERVICES: [&str; 25] = [
    "VPICD_Get_Version",
    "VPICD_Virtualize_IRQ",
    "VPICD_Set_Int_Request",
    "VPICD_Clear_Int_Request",
    "VPICD_Phys_EOI",
    "VPICD_Get_Complete_Status",
    "VPICD_Get_Status",
    "VPICD_Test_Phys_Request",
    "VPICD_Physically_Mask",
    "VPICD_Physically_Unmask",
    "VPICD_Set_Auto_Masking",
    "VPICD_Get_IRQ_Complete_Status",
    "VPICD_Convert_Handle_To_IRQ",
    "VPICD_Convert_IRQ_To_Int",
    "VPICD_Convert_Int_To_IRQ",
    "VPICD_Call_When_Hw_Int",
    "VPICD_Force_Default_Owner",
    "VPICD_Force_Default_Behavior",
    "VPICD_Auto_Mask_At_Inst_Swap",
    "VPICD_Begin_Inst_Page_Swap",
    "VPICD_End_Inst_Page_Swap",
    "VPICD_Virtual_EOI",
    "VPICD_Get_Virtualization_Count",
    "VPICD_Post_Sys_Critical_Init",
    "VPICD_VM_SlavePIC_Mask_Change",
];

/// Windows 3.1's VPICD ends at `VPICD_End_Inst_Page_Swap`.
const SERVICES_31: usize = 0x15;

/// When a VPICD service may be called.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum VpicdRule {
    /// At interrupt time too (KB Q75864: every VPICD service but two).
    Async,
    /// Not at interrupt time.
    Sync,
    /// In the DDK's table, but not provided by this host.
    Missing,
}

fn rule(ordinal: u16) -> VpicdRule {
    match ordinal {
        VPICD_GET_VERSION | VPICD_VIRTUALIZE_IRQ => VpicdRule::Sync,
        VPICD_POST_SYS_CRITICAL_INIT | VPICD_VM_SLAVEPIC_MASK_CHANGE => VpicdRule::Missing,
        _ => VpicdRule::Async,
    }
}

fn service_count(core: &Core) -> usize {
    if core.manifest.machine.windows_version.0 < 4 { SERVICES_31 } else { SERVICES.len() }
}

impl Builtin for Vpicd {
    fn info(&self, core: &Core) -> DeviceInfo {
        let (major, minor) = core.manifest.machine.windows_version;
        DeviceInfo {
            name: "VPICD".to_string(),
            major_version: major,
            minor_version: minor,
            device_id: VPICD_DEVICE_ID,
            init_order: VPICD_INIT_ORDER,
            has_v86_api: false,
            has_pm_api: false,
            services: SERVICES[..service_count(core)].iter().map(|s| s.to_string()).collect(),
            sdk_version: ((major as u16) << 8) | minor as u16,
            dynamic: false,
        }
    }

    fn control(&self, core: &Core, args: &ControlArgs) -> Carry {
        if args.message == SYS_CRITICAL_INIT {
            core.vpicd_trap_ports();
        }
        Carry::Clear
    }

    fn service(&self, core: &Core, caller: InstanceId, ordinal: u16, call: &mut ServiceCall) -> Carry {
        core.as_caller(caller, || vxdcall(core, ordinal, call))
    }
}

/// A `VxDCall` of VPICD service `ordinal` (registers as the DDK gives them).
fn vxdcall(core: &Core, ordinal: u16, call: &mut ServiceCall) -> Carry {
    if core.vpicd_enter(ordinal).is_err() {
        return Carry::Set;
    }
    let r = call.regs;
    let carry = |res: Result<(), VmmError>| Carry::from_failed(res.is_err());
    match ordinal {
        VPICD_GET_VERSION => {
            call.regs.eax = core.vmm_version();
            call.regs.ebx = 1;
            call.regs.ecx = 0x0F;
            Carry::Clear
        }
        VPICD_VIRTUALIZE_IRQ => {
            // EDI → VPICD_IRQ_Descriptor: read (bounds-checked) to name it.
            let size = if core.manifest.machine.windows_version.0 < 4 {
                VPICD_IRQ_DESCRIPTOR_SIZE_31
            } else {
                VPICD_IRQ_DESCRIPTOR_SIZE
            };
            let Ok(d) = core.read_linear("VPICD_Virtualize_IRQ", r.edi, size) else { return Carry::Set };
            let word = |at: usize| u16::from_le_bytes([d[at], d[at + 1]]);
            core.violation(
                Violation::VpicdServiceByVxdcall,
                format!(
                    "VPICD_Virtualize_IRQ of IRQ {} (options {:#06X}, Hw_Int_Proc {:#010X}) by VxDCall: the \
                     descriptor's procedure addresses mean nothing to the emulator; call the typed \
                     Vpicd::virtualize_irq (vmm.vpicd().virtualize_irq(...)) instead",
                    word(VID_IRQ_NUMBER),
                    word(VID_OPTIONS),
                    u32::from_le_bytes(d[VID_HW_INT_PROC..VID_HW_INT_PROC + 4].try_into().unwrap_or_default()),
                ),
                Some("VPICD_Virtualize_IRQ"),
            );
            Carry::Set
        }
        VPICD_CALL_WHEN_HW_INT => {
            core.violation(
                Violation::VpicdServiceByVxdcall,
                format!(
                    "{} takes a procedure address (ESI {:#010X}), which means nothing to the emulator; call \
                     the typed Vpicd::call_when_hw_int (vmm.vpicd().call_when_hw_int(...)) instead",
                    SERVICES[ordinal as usize], r.esi
                ),
                Some(SERVICES[ordinal as usize]),
            );
            Carry::Set
        }
        VPICD_SET_INT_REQUEST => {
            carry(core.vpicd_set_int_request(VirtHandle::from_raw(r.eax), VmId::from_raw(r.ebx), true))
        }
        VPICD_CLEAR_INT_REQUEST => {
            carry(core.vpicd_set_int_request(VirtHandle::from_raw(r.eax), VmId::from_raw(r.ebx), false))
        }
        VPICD_PHYS_EOI => carry(core.vpicd_phys_eoi(VirtHandle::from_raw(r.eax))),
        VPICD_GET_COMPLETE_STATUS | VPICD_GET_STATUS => {
            match core.vpicd_get_status(
                VirtHandle::from_raw(r.eax),
                VmId::from_raw(r.ebx),
                ordinal == VPICD_GET_COMPLETE_STATUS,
            ) {
                Ok(s) => {
                    call.regs.ecx = s;
                    Carry::Clear
                }
                Err(_) => Carry::Set,
            }
        }
        VPICD_TEST_PHYS_REQUEST => {
            Carry::from_failed(core.vpicd_test_phys_request(VirtHandle::from_raw(r.eax)).unwrap_or(false))
        }
        VPICD_PHYSICALLY_MASK => carry(core.vpicd_physical_mask(VirtHandle::from_raw(r.eax), 0)),
        VPICD_PHYSICALLY_UNMASK => carry(core.vpicd_physical_mask(VirtHandle::from_raw(r.eax), 1)),
        VPICD_SET_AUTO_MASKING => carry(core.vpicd_physical_mask(VirtHandle::from_raw(r.eax), 2)),
        VPICD_GET_IRQ_COMPLETE_STATUS => match core.vpicd_get_irq_complete_status(r.eax) {
            Ok(s) => {
                call.regs.ecx = s.status;
                Carry::from_failed(s.virtualized)
            }
            Err(_) => Carry::Set,
        },
        VPICD_CONVERT_HANDLE_TO_IRQ => match core.vpicd_convert_handle_to_irq(VirtHandle::from_raw(r.eax)) {
            Ok(irq) => {
                call.regs.esi = irq;
                Carry::Clear
            }
            Err(_) => Carry::Set,
        },
        VPICD_CONVERT_IRQ_TO_INT => match core.vpicd_convert_irq_to_int(r.eax, VmId::from_raw(r.ebx)) {
            Ok(v) => {
                call.regs.eax = v;
                Carry::Clear
            }
            Err(_) => Carry::Set,
        },
        VPICD_CONVERT_INT_TO_IRQ => match core.vpicd_convert_int_to_irq(r.eax) {
            Ok(v) => {
                call.regs.eax = v;
                Carry::Clear
            }
            Err(_) => Carry::Set,
        },
        VPICD_FORCE_DEFAULT_OWNER => carry(core.vpicd_force_default_owner(r.eax & 0xFFFF, VmId::from_raw(r.ebx))),
        VPICD_FORCE_DEFAULT_BEHAVIOR => carry(core.vpicd_force_default_behavior(VirtHandle::from_raw(r.eax))),
        // Undocumented instance-swap helpers: no-ops (docs/semantics.md).
        VPICD_AUTO_MASK_AT_INST_SWAP | VPICD_BEGIN_INST_PAGE_SWAP | VPICD_END_INST_PAGE_SWAP => Carry::Clear,
        VPICD_VIRTUAL_EOI => carry(core.vpicd_virtual_eoi(VirtHandle::from_raw(r.eax), VmId::from_raw(r.ebx))),
        VPICD_GET_VIRTUALIZATION_COUNT => match core.vpicd_get_virtualization_count(r.eax) {
            Ok(n) => {
                call.regs.eax = n;
                Carry::Clear
            }
            Err(_) => Carry::Set,
        },
        _ => Carry::Set,
    }
}

impl Core {
    /// `[[irq]]` entries assert physical IRQs, which only VPICD takes: the
    /// first one is an error naming where it is written when `*VPICD` is
    /// not in the device list.
    pub(crate) fn check_irq_entries(&self) -> crate::error::Result<()> {
        match self.manifest.irqs.first() {
            Some(first) if self.vpicd_instance().is_none() => Err(crate::error::Error::Reference {
                origin: first.origin.clone(),
                message: format!(
                    "[[irq]] asserts IRQ {}, but physical interrupts are taken by VPICD: add \"*VPICD\" to \
                     [386Enh] device",
                    first.irq
                ),
            }),
            _ => Ok(()),
        }
    }

    /// The check every VPICD service call passes first: VPICD is loaded
    /// and has `ordinal` (else the fatal "Invalid VxD dynamic link call"),
    /// and the caller's context satisfies the service's rule.
    pub(crate) fn vpicd_enter(&self, ordinal: u16) -> Result<(), VmmError> {
        if self.vpicd_instance().is_none() || ordinal as usize >= service_count(self) {
            let caller = self.current_caller().unwrap_or(InstanceId::HOST);
            self.invalid_dynamic_link(caller, VPICD_DEVICE_ID, ordinal);
            return Err(VmmError::FATAL);
        }
        let service = SERVICES[ordinal as usize];
        let go = match rule(ordinal) {
            VpicdRule::Async => allowed(self, service, Rule::Async),
            VpicdRule::Sync => allowed(self, service, Rule::Sync),
            VpicdRule::Missing => {
                self.violation(
                    Violation::NotImplemented,
                    format!("VPICD service {service} is not provided by this host"),
                    Some(service),
                );
                return Err(VmmError::NOT_AVAILABLE);
            }
        };
        if go { Ok(()) } else { Err(VmmError::VIOLATION) }
    }
}
