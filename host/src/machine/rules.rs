//! The rules every service family shares: the calling-context check of a
//! service's [`Rule`] (asynchronous, synchronous, init-only) and the
//! refusal of a linear address outside the heap (for a device's own
//! memory access, a ring-0 page fault offered to the `Hook_VMM_Fault`
//! hooks first). The VMM's, SHELL's and VPICD's services all apply them;
//! the ABI shims only call them.

use vmm_plugin_api::abi::VmmError;

use crate::machine::Core;
use crate::violation::Violation;
use crate::vmm::context::Context;
use crate::vmm::heap::MemError;
use crate::vmm::services::Rule;

/// Check the calling context; `false` means refuse the call. The checks
/// that pass are inline (an asynchronous service costs nothing); a refusal
/// is written out of line.
#[inline(always)]
pub(crate) fn allowed(core: &Core, service: &'static str, rule: Rule) -> bool {
    match rule {
        Rule::Async => true,
        Rule::Sync if core.context() != Context::Interrupt => true,
        Rule::Init if core.phase.get().is_init() => true,
        _ => allowed_slow(core, service, rule),
    }
}

#[cold]
#[inline(never)]
fn allowed_slow(core: &Core, service: &'static str, rule: Rule) -> bool {
    match rule {
        Rule::Async => true,
        Rule::Sync if core.context() == Context::Interrupt => !core.violation(
            Violation::SyncServiceAtInterrupt,
            format!(
                "{service} is synchronous but was called at interrupt time; only asynchronous services are legal \
                 in a hardware interrupt handler (KB Q75864)"
            ),
            Some(service),
        ),
        Rule::Sync => true,
        Rule::Init if !core.phase.get().is_init() && !core.in_dynamic_init() => !core.violation(
            Violation::InitOnlyService,
            format!(
                "{service} is legal only during initialization (the init phases, or a dynamic device's \
                 Sys_Dynamic_Device_Init); its code is discarded after Init_Complete"
            ),
            Some(service),
        ),
        Rule::Init => true,
    }
}

/// Report a linear address that does not lie in a heap block (or a range
/// that runs past its block) as `BAD_POINTER`.
pub(crate) fn mem_violation(core: &Core, service: &'static str, address: u32, len: usize, e: MemError) -> VmmError {
    let what = match e {
        MemError::Unmapped => format!("address {address:#010X} is not inside any heap block"),
        MemError::OutOfBounds { block, size } => {
            format!("{len} bytes at {address:#010X} run past the end of the {size}-byte block at {block:#010X}")
        }
    };
    core.refuse(Violation::BadPointer, format!("{service}: {what}"), Some(service))
}

/// A device's access to linear memory failed: an address inside no block
/// is a page fault in ring 0, offered to the `Hook_VMM_Fault` hooks first
/// (one that handles it makes the access fail with `FAILED` and no
/// violation); anything else, or a fault nobody handled, is the violation.
pub(crate) fn mem_fault(core: &Core, service: &'static str, address: u32, len: usize, e: MemError) -> VmmError {
    if e == MemError::Unmapped && core.vmm_fault(PAGE_FAULT, address) {
        return VmmError::FAILED;
    }
    mem_violation(core, service, address, len, e)
}

/// The page fault's exception number.
const PAGE_FAULT: u8 = 0x0E;
