//! The identities the VMM hands out to the code it hosts.

/// A live instance the VMM calls: a plugin's device or ring-3 module, or a
/// device built into the host, by its number in the machine's instance
/// table (from 1). The ABI carries the number as `HostCx::caller`.
/// [`InstanceId::HOST`] (0) is the host itself: the owner of what no
/// instance asked for, and the caller of calls from outside the machine.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct InstanceId(u32);

impl InstanceId {
    /// The host itself: no instance.
    pub(crate) const HOST: InstanceId = InstanceId(0);

    /// The instance the ABI number `n` names (0 is [`InstanceId::HOST`]).
    #[inline]
    pub(crate) const fn from_raw(n: u32) -> Self {
        InstanceId(n)
    }

    /// The number the ABI and the trace carry.
    #[inline]
    pub(crate) const fn raw(self) -> u32 {
        self.0
    }

    /// The instance at `index` of the instance table.
    #[inline]
    pub(crate) fn from_index(index: usize) -> Self {
        InstanceId(index as u32 + 1)
    }

    /// Its index in the instance table (`None` for the host).
    #[inline]
    pub(crate) fn index(self) -> Option<usize> {
        (self.0 as usize).checked_sub(1)
    }

    /// Whether this is the host rather than an instance.
    #[inline]
    pub(crate) fn is_host(self) -> bool {
        self.0 == 0
    }
}

/// A VM's handle: the generational number the VM table hands out (slot in
/// the low 16 bits, generation above) and the ABI and the trace carry as
/// `VmHandle`. [`VmId::NONE`] (0) names no VM: the current VM before the
/// system VM exists, and "no owner" where the DDK uses 0.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct VmId(u32);

impl VmId {
    /// No VM.
    pub(crate) const NONE: VmId = VmId(0);

    /// The VM the ABI or trace number `n` names (not checked: the VM table
    /// says whether it is live).
    #[inline]
    pub(crate) const fn from_raw(n: u32) -> Self {
        VmId(n)
    }

    /// The number the ABI and the trace carry.
    #[inline]
    pub(crate) const fn raw(self) -> u32 {
        self.0
    }

    /// Whether this names no VM.
    #[inline]
    pub(crate) const fn is_none(self) -> bool {
        self.0 == 0
    }
}

impl std::fmt::Display for VmId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.0, f)
    }
}

impl std::fmt::LowerHex for VmId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::LowerHex::fmt(&self.0, f)
    }
}

impl std::fmt::UpperHex for VmId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::UpperHex::fmt(&self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::InstanceId;

    #[test]
    fn numbers_start_at_one_and_zero_is_the_host() {
        assert_eq!(InstanceId::HOST.index(), None);
        assert!(InstanceId::from_raw(0).is_host());
        assert_eq!(InstanceId::from_index(0).raw(), 1);
        assert_eq!(InstanceId::from_raw(7).index(), Some(6));
    }
}
