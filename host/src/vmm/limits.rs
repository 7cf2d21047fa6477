//! Limits of the quantities services take and the VMM keeps, checked in
//! one place per kind so that no value ever wraps (release builds do not
//! check overflow): counts the VMM keeps (critical-section claims,
//! semaphore tokens, suspensions, interrupt requests) and control-block
//! area sizes. Stack depth is checked by nested execution's pushes; time-outs
//! are added in 64-bit virtual time, where a `u32` of milliseconds cannot
//! overflow.

/// `current + n` for a count the VMM keeps, if it stays within `0..=max`
/// (the machine reports anything else as `COUNT_OVERFLOW`).
pub(crate) fn checked_count(current: i64, n: i64, max: i64) -> Option<i64> {
    current.checked_add(n).filter(|v| (0..=max).contains(v))
}

/// The control block ends here: `_Allocate_Device_CB_Area` offsets and
/// sizes stay below 64 KB.
pub(crate) const CB_END: u32 = 0x1_0000;
/// The VMM's own control-block fields come first: areas start here.
pub(crate) const CB_START: u32 = 0x100;
/// The end of a new control-block area of `bytes` (dword aligned) that
/// starts at `base`, if it fits below [`CB_END`].
pub(crate) fn cb_area_end(base: u32, bytes: u32) -> Option<u32> {
    let size = bytes.checked_next_multiple_of(4)?;
    base.checked_add(size).filter(|&end| end <= CB_END)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_stay_in_their_range() {
        assert_eq!(checked_count(1, 1, 2), Some(2));
        assert_eq!(checked_count(2, 1, 2), None);
        assert_eq!(checked_count(0, -1, 2), None);
        assert_eq!(checked_count(i64::MAX, 1, i64::MAX), None);
    }

    #[test]
    fn cb_areas_never_wrap() {
        assert_eq!(cb_area_end(CB_START, 1), Some(CB_START + 4));
        assert_eq!(cb_area_end(CB_START, CB_END - CB_START), Some(CB_END));
        assert_eq!(cb_area_end(CB_START, CB_END - CB_START + 1), None);
        assert_eq!(cb_area_end(CB_START, u32::MAX), None, "0xFFFFFFFF rounds past 2^32");
        assert_eq!(cb_area_end(CB_START, u32::MAX - 3), None);
        assert_eq!(cb_area_end(u32::MAX - 3, 4), None);
    }
}
