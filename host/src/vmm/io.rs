//! The I/O port table: one handler per port, the global trapping state of
//! each port and the per-VM (local) overrides. Private state; the rules
//! return domain results the machine turns into carries, errors and
//! violations (`machine/io.rs`).
//!
//! Trapping of a port in a VM is its local setting when one was made
//! since the last global change, else the global setting; a port without
//! a handler is never trapped. A global change overwrites every VM's
//! local setting (`docs/semantics.md`, "I/O port trapping").

use std::collections::BTreeMap;

use crate::vmm::ids::{InstanceId, VmId};

/// IOType values and bits (ECX of the handler).
pub(crate) const BYTE_INPUT: u32 = 0x00;
pub(crate) const BYTE_OUTPUT: u32 = 0x04;
pub(crate) const WORD_INPUT: u32 = 0x08;
pub(crate) const WORD_OUTPUT: u32 = 0x0C;
pub(crate) const DWORD_INPUT: u32 = 0x10;
pub(crate) const DWORD_OUTPUT: u32 = 0x14;
pub(crate) const OUTPUT: u32 = 0x04;
pub(crate) const WORD_IO: u32 = 0x08;
pub(crate) const DWORD_IO: u32 = 0x10;
pub(crate) const STRING_IO: u32 = 0x20;
pub(crate) const REP_IO: u32 = 0x40;
pub(crate) const ADDR_32_IO: u32 = 0x80;
pub(crate) const REVERSE_IO: u32 = 0x100;
/// The segment of a string form's memory operand: IOType bits 16-31.
pub(crate) const IO_SEG_SHIFT: u32 = 16;

/// The size in bytes of an IOType's data (1, 2 or 4).
pub(crate) fn size_of(io_type: u32) -> u32 {
    if io_type & DWORD_IO != 0 {
        4
    } else if io_type & WORD_IO != 0 {
        2
    } else {
        1
    }
}

/// The mask of an access's data.
pub(crate) fn data_mask(size: u32) -> u32 {
    if size >= 4 { u32::MAX } else { (1u32 << (size * 8)) - 1 }
}

/// Whether an IOType is one a device may pass: bits 0-1 clear, only the
/// size, direction, string, rep, addr-32 and reverse bits, not word and
/// dword at once.
pub(crate) fn valid_type(io_type: u32) -> bool {
    io_type & 0xFE03 == 0 && io_type & (WORD_IO | DWORD_IO) != (WORD_IO | DWORD_IO)
}

struct Handler<C> {
    owner: InstanceId,
    /// Which install this is (a port removed and installed again inside
    /// a handler's call is another handler).
    id: u64,
    callback: C,
    /// Calls of it in progress (a handler may be reached again through
    /// `Simulate_IO`); while non-zero a removed handler is kept.
    busy: u32,
    /// Global trapping: on when installed.
    global: bool,
    /// Local settings made since the last global change, by VM handle.
    local: BTreeMap<VmId, bool>,
}

/// Why a port-table change was refused.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum PortError {
    /// Another (or the same) device already has a handler on the port.
    Taken { owner: InstanceId },
    /// No handler is installed on the port.
    NoHandler,
    /// The handler belongs to another device.
    NotOwner { owner: InstanceId },
}

/// A handler call in progress: end it with [`IoPorts::end`].
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) struct Busy {
    pub(crate) port: u16,
    pub(crate) owner: InstanceId,
    id: u64,
}

/// The port table (`C`, the handler: a plugin's callback or a host
/// function, in the machine).
pub(crate) struct IoPorts<C> {
    ports: BTreeMap<u16, Handler<C>>,
    /// Removed while a call of theirs was in progress.
    retired: Vec<Handler<C>>,
    next_id: u64,
}

impl<C> Default for IoPorts<C> {
    fn default() -> Self {
        IoPorts { ports: BTreeMap::new(), retired: Vec::new(), next_id: 0 }
    }
}

impl<C> IoPorts<C> {
    /// `Install_IO_Handler`: trapping on in every VM.
    pub(crate) fn install(&mut self, port: u16, owner: InstanceId, callback: C) -> Result<(), (PortError, C)> {
        if let Some(h) = self.ports.get(&port) {
            return Err((PortError::Taken { owner: h.owner }, callback));
        }
        self.next_id += 1;
        let h = Handler { owner, id: self.next_id, callback, busy: 0, global: true, local: BTreeMap::new() };
        self.ports.insert(port, h);
        Ok(())
    }

    /// `Remove_IO_Handler` by `owner`: the handler goes and trapping with
    /// it. The callback is returned for the caller to drop outside borrows
    /// (`None` while a call of it is in progress: it goes when that ends).
    pub(crate) fn remove(&mut self, port: u16, owner: InstanceId) -> Result<Option<C>, PortError> {
        self.owned(port, owner)?;
        Ok(self.ports.remove(&port).and_then(|h| self.retire(h)))
    }

    fn retire(&mut self, h: Handler<C>) -> Option<C> {
        if h.busy == 0 {
            return Some(h.callback);
        }
        self.retired.push(h);
        None
    }

    fn owned(&mut self, port: u16, owner: InstanceId) -> Result<&mut Handler<C>, PortError> {
        match self.ports.get_mut(&port) {
            None => Err(PortError::NoHandler),
            Some(h) if h.owner != owner => Err(PortError::NotOwner { owner: h.owner }),
            Some(h) => Ok(h),
        }
    }

    /// `Enable_Global_Trapping` / `Disable_Global_Trapping` by `owner`:
    /// every VM's local setting is overwritten.
    pub(crate) fn set_global(&mut self, port: u16, owner: InstanceId, on: bool) -> Result<(), PortError> {
        let h = self.owned(port, owner)?;
        h.global = on;
        h.local.clear();
        Ok(())
    }

    /// `Enable_Local_Trapping` / `Disable_Local_Trapping` by `owner`.
    pub(crate) fn set_local(&mut self, port: u16, owner: InstanceId, vm: VmId, on: bool) -> Result<(), PortError> {
        let h = self.owned(port, owner)?;
        h.local.insert(vm, on);
        Ok(())
    }

    /// Whether `port` is trapped in `vm`.
    pub(crate) fn trapped(&self, port: u16, vm: VmId) -> bool {
        self.ports.get(&port).is_some_and(|h| h.local.get(&vm).copied().unwrap_or(h.global))
    }

    /// An access of `vm` to `port`: the handler that traps it, marked
    /// busy, and what `entry` makes of its callback; `None` for the
    /// hardware.
    pub(crate) fn begin<T>(&mut self, port: u16, vm: VmId, entry: impl FnOnce(&C) -> T) -> Option<(Busy, T)> {
        if !self.trapped(port, vm) {
            return None;
        }
        let h = self.ports.get_mut(&port)?;
        h.busy += 1;
        Some((Busy { port, owner: h.owner, id: h.id }, entry(&h.callback)))
    }

    /// A handler call ended; a handler removed meanwhile whose last call
    /// this was is returned, to be dropped.
    pub(crate) fn end(&mut self, busy: Busy) -> Option<C> {
        if let Some(h) = self.ports.get_mut(&busy.port).filter(|h| h.id == busy.id) {
            h.busy -= 1;
            return None;
        }
        let i = self.retired.iter().position(|h| h.id == busy.id)?;
        self.retired[i].busy -= 1;
        if self.retired[i].busy == 0 { Some(self.retired.swap_remove(i).callback) } else { None }
    }

    /// A VM was destroyed: forget its local settings.
    pub(crate) fn forget_vm(&mut self, vm: VmId) {
        for h in self.ports.values_mut() {
            h.local.remove(&vm);
        }
    }

    /// Everything instance `owner` still has installed, removed (unload):
    /// the ports and their callbacks.
    pub(crate) fn take_owned(&mut self, owner: InstanceId) -> Vec<(u16, Option<C>)> {
        let ports: Vec<u16> = self.ports.iter().filter(|(_, h)| h.owner == owner).map(|(p, _)| *p).collect();
        let mut out = Vec::new();
        for p in ports {
            if let Some(h) = self.ports.remove(&p) {
                let c = self.retire(h);
                out.push((p, c));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u32) -> InstanceId {
        InstanceId::from_raw(n)
    }

    fn cb(owner: InstanceId) -> u32 {
        owner.raw()
    }

    #[test]
    fn one_handler_per_port_and_only_its_owner_changes_it() {
        let mut t = IoPorts::<u32>::default();
        assert!(t.install(0x3F8, id(1), cb(id(1))).is_ok());
        assert_eq!(t.install(0x3F8, id(2), cb(id(2))).err().map(|e| e.0), Some(PortError::Taken { owner: id(1) }));
        assert_eq!(t.set_global(0x3F8, id(2), false), Err(PortError::NotOwner { owner: id(1) }));
        assert_eq!(t.set_global(0x3F9, id(1), false), Err(PortError::NoHandler));
        assert_eq!(t.remove(0x3F8, id(2)).err(), Some(PortError::NotOwner { owner: id(1) }));
        let (busy, seen) = t.begin(0x3F8, VmId::from_raw(7), |c| *c).unwrap();
        assert_eq!((busy.owner, seen), (id(1), 1));
        // Removed during its own call: kept until the call ends.
        assert_eq!(t.remove(0x3F8, id(1)), Ok(None));
        assert!(!t.trapped(0x3F8, VmId::from_raw(7)) && t.begin(0x3F8, VmId::from_raw(7), |c| *c).is_none());
        assert_eq!(t.end(busy), Some(1));
        t.install(0x3F8, id(1), cb(id(1))).ok().unwrap();
        assert_eq!(t.remove(0x3F8, id(1)), Ok(Some(1)));
        assert!(matches!(t.remove(0x3F8, id(1)), Err(PortError::NoHandler)));
    }

    #[test]
    fn a_global_change_overwrites_local_settings() {
        let mut t = IoPorts::<u32>::default();
        t.install(0x330, id(1), cb(id(1))).ok().unwrap();
        assert!(t.trapped(0x330, VmId::from_raw(10)) && t.trapped(0x330, VmId::from_raw(11)));
        t.set_local(0x330, id(1), VmId::from_raw(10), false).unwrap();
        assert!(!t.trapped(0x330, VmId::from_raw(10)) && t.trapped(0x330, VmId::from_raw(11)));
        t.set_global(0x330, id(1), true).unwrap();
        assert!(t.trapped(0x330, VmId::from_raw(10)));
        t.set_global(0x330, id(1), false).unwrap();
        assert!(!t.trapped(0x330, VmId::from_raw(11)));
        t.set_local(0x330, id(1), VmId::from_raw(11), true).unwrap();
        assert!(t.trapped(0x330, VmId::from_raw(11)) && !t.trapped(0x330, VmId::from_raw(12)));
    }

    #[test]
    fn io_types() {
        assert_eq!((size_of(0x00), size_of(0x0C), size_of(0x14)), (1, 2, 4));
        assert!(valid_type(0x04) && valid_type(0x3247_016C));
        assert!(!valid_type(0x01) && !valid_type(0x18) && !valid_type(0x200));
        assert_eq!(data_mask(2), 0xFFFF);
    }
}
