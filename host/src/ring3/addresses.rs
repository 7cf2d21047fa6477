//! Where the VMM's entry points sit in ring-3 address spaces: the far
//! pointers that lead ring-3 code (Rust modules and machine code alike)
//! into the VMM rather than into a module.

/// The far pointer Begin_Nest_Exec leaves in CS:IP: returning to it ends
/// `Resume_Exec`.
pub(crate) const NEST_BREAKPOINT: u32 = 0xFFFF_FFF0;
/// V86 segment of VxD API entry points (the offset is the device ID).
pub(crate) const V86_API_SEGMENT: u16 = 0xFF00;
/// Protected-mode selector of VxD API entry points.
pub(crate) const PM_API_SELECTOR: u16 = 0x003B;
/// Selector of the host's interrupt handlers (the offset is the vector).
pub(crate) const INT_SELECTOR: u16 = 0xFFFE;
/// The far pointer a Rust export entered as a protected-mode interrupt
/// handler (`Simulate_Int`) returns to: reaching it is the handler's
/// `IRET`.
pub(crate) const PM_IRET_POINT: u32 = ((INT_SELECTOR as u32) << 16) | 0x0100;
