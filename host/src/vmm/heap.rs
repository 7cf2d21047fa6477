//! The ring-0 heap (`_HeapAllocate` and friends) as real, bounds-checked
//! linear memory. Every block belongs to the device instance that allocated
//! it, so leaks can be listed per device, and every pointer a device passes
//! to a service (a SHEXPACKET, a string) is checked against the block it
//! points into.

use std::collections::BTreeMap;

use crate::vmm::ids::InstanceId;

/// First linear address handed out (the VMM's heap lived high in the 4 GB
/// space; a non-zero base also makes 0 an invalid pointer).
const HEAP_BASE: u32 = 0xC100_0000;
/// Addresses stop here.
const HEAP_END: u32 = 0xFFF0_0000;
/// Blocks are aligned like the DDK's ("DWORD aligned") with a gap between
/// them, so an off-by-one read lands outside any block.
const ALIGN: u32 = 16;
const GAP: u32 = 16;

/// One allocated block.
#[derive(Clone, Debug)]
pub(crate) struct Block {
    pub(crate) owner: InstanceId,
    pub(crate) data: Vec<u8>,
}

/// Why a memory access failed.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum MemError {
    /// The address is not inside any block.
    Unmapped,
    /// The access runs past the end of its block.
    OutOfBounds {
        /// Start of the block.
        block: u32,
        /// Its size.
        size: u32,
    },
}

/// The heap.
#[derive(Debug)]
pub(crate) struct Heap {
    blocks: BTreeMap<u32, Block>,
    next: u32,
    limit: u64,
    used: u64,
}

impl Default for Heap {
    fn default() -> Self {
        Heap { blocks: BTreeMap::new(), next: HEAP_BASE, limit: 64 << 20, used: 0 }
    }
}

fn round_up(n: u32) -> Option<u32> {
    n.checked_add(ALIGN - 1).map(|v| v & !(ALIGN - 1))
}

impl Heap {
    /// Allocate `size` bytes for `owner`; `None` when out of memory.
    pub(crate) fn allocate(&mut self, owner: InstanceId, size: u32, zero: bool) -> Option<u32> {
        let _ = zero; // blocks are always zeroed: deterministic contents
        if size == 0 || self.used + size as u64 > self.limit {
            return None;
        }
        let span = round_up(size)?.checked_add(GAP)?;
        let addr = if (self.next as u64) + span as u64 <= HEAP_END as u64 {
            let a = self.next;
            self.next += span;
            a
        } else {
            self.first_fit(span)?
        };
        self.blocks.insert(addr, Block { owner, data: vec![0; size as usize] });
        self.used += size as u64;
        Some(addr)
    }

    fn first_fit(&self, span: u32) -> Option<u32> {
        let mut cursor = HEAP_BASE;
        for (&start, block) in &self.blocks {
            if start.checked_sub(cursor)? >= span {
                return Some(cursor);
            }
            cursor = start + round_up(block.data.len() as u32)? + GAP;
        }
        ((HEAP_END - cursor) >= span).then_some(cursor)
    }

    /// The blocks `owner` holds: `(address, size)`, in address order.
    pub(crate) fn blocks_of(&self, owner: InstanceId) -> Vec<(u32, u32)> {
        self.blocks.iter().filter(|(_, b)| b.owner == owner).map(|(a, b)| (*a, b.data.len() as u32)).collect()
    }

    /// Free the block at `addr`; its owner, or `None` if it is not a block.
    pub(crate) fn free(&mut self, addr: u32) -> Option<InstanceId> {
        let block = self.blocks.remove(&addr)?;
        self.used -= block.data.len() as u64;
        Some(block.owner)
    }

    /// Resize; the old block stays if the new one cannot be allocated.
    pub(crate) fn reallocate(&mut self, addr: u32, size: u32) -> Option<u32> {
        let (owner, old) = {
            let b = self.blocks.get(&addr)?;
            (b.owner, b.data.clone())
        };
        let new = self.allocate(owner, size, true)?;
        let n = old.len().min(size as usize);
        if let Some(b) = self.blocks.get_mut(&new) {
            b.data[..n].copy_from_slice(&old[..n]);
        }
        self.free(addr);
        Some(new)
    }

    /// The size of the block at `addr`.
    pub(crate) fn size(&self, addr: u32) -> Option<u32> {
        self.blocks.get(&addr).map(|b| b.data.len() as u32)
    }

    fn locate(&self, addr: u32, len: usize) -> Result<(u32, usize), MemError> {
        let (&start, block) = self.blocks.range(..=addr).next_back().ok_or(MemError::Unmapped)?;
        let offset = (addr - start) as usize;
        let size = block.data.len();
        if offset >= size && !(offset == size && len == 0) {
            return Err(MemError::Unmapped);
        }
        if offset + len > size {
            return Err(MemError::OutOfBounds { block: start, size: size as u32 });
        }
        Ok((start, offset))
    }

    /// Whether `len` bytes at `addr` lie inside one block.
    pub(crate) fn check(&self, addr: u32, len: usize) -> Result<(), MemError> {
        self.locate(addr, len).map(|_| ())
    }

    /// The bytes from `addr` to the end of its block (for NUL-terminated
    /// strings, whose length is not known before they are read).
    pub(crate) fn slice_from(&self, addr: u32) -> Result<&[u8], MemError> {
        let (start, offset) = self.locate(addr, 0)?;
        Ok(&self.blocks[&start].data[offset..])
    }

    /// Copy `out.len()` bytes from `addr`.
    pub(crate) fn read(&self, addr: u32, out: &mut [u8]) -> Result<(), MemError> {
        let (start, offset) = self.locate(addr, out.len())?;
        out.copy_from_slice(&self.blocks[&start].data[offset..offset + out.len()]);
        Ok(())
    }

    /// Copy `data` to `addr`.
    pub(crate) fn write(&mut self, addr: u32, data: &[u8]) -> Result<(), MemError> {
        let (start, offset) = self.locate(addr, data.len())?;
        if let Some(b) = self.blocks.get_mut(&start) {
            b.data[offset..offset + data.len()].copy_from_slice(data);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_bounded_and_owned() {
        let mut h = Heap::default();
        let a = h.allocate(InstanceId::from_raw(7), 10, true).unwrap();
        assert_eq!(h.size(a), Some(10));
        h.write(a, &[1, 2, 3]).unwrap();
        let mut out = [0u8; 3];
        h.read(a, &mut out).unwrap();
        assert_eq!(out, [1, 2, 3]);
        assert_eq!(h.read(a + 8, &mut [0u8; 4]), Err(MemError::OutOfBounds { block: a, size: 10 }));
        assert_eq!(h.read(a + 12, &mut [0u8; 1]), Err(MemError::Unmapped));
        assert_eq!(h.slice_from(a + 1).unwrap(), &[2, 3, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(h.slice_from(a + 10), Ok(&[][..]), "one past the end is an empty string, not a fault");
        assert_eq!(h.slice_from(a + 11), Err(MemError::Unmapped));
        let b = h.reallocate(a, 20).unwrap();
        assert_eq!(h.size(a), None);
        h.read(b, &mut out).unwrap();
        assert_eq!(out, [1, 2, 3]);
        assert_eq!(h.free(b), Some(InstanceId::from_raw(7)));
        assert_eq!(h.free(b), None);
        assert_eq!(h.allocate(InstanceId::from_raw(7), 0, false), None);
    }
}
