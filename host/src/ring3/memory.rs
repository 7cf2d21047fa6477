//! Ring-3 data memory: blocks a program or DLL allocates (`GlobalAlloc` +
//! `GlobalLock` for Windows code, INT 21h AH=48h for a DOS program) and
//! addresses with a 16:16 pointer, so it can hand data to a VxD's API
//! (VXDLDR's file name in DS:DX, for example). Each block is a ring-0 heap
//! block owned by the allocating module's instance, with a selector of its
//! own; reads and writes are bounds-checked against the block, and a
//! program's blocks are freed when it ends.

use vmm_plugin_api::abi::VmmError;

use crate::machine::Core;
use crate::ring3::state::{FarBlock, MAX_BLOCK};
use crate::violation::Violation;
use crate::vmm::ids::InstanceId;

impl Core {
    /// Allocate `bytes` (1 to 64 KB, zeroed) for ring-3 code of `owner`;
    /// the block's 16:16 address (offset 0).
    pub(crate) fn global_alloc(&self, owner: InstanceId, bytes: u32) -> Result<u32, VmmError> {
        if bytes == 0 || bytes > MAX_BLOCK {
            return Err(self.refuse(
                Violation::InvalidParameter,
                format!("GlobalAlloc({bytes}): a block holds 1 to 65536 bytes (one segment)"),
                Some("GlobalAlloc"),
            ));
        }
        let Some(selector) = self.far.borrow().free_selector() else { return Err(VmmError::OUT_OF_MEMORY) };
        let base = self.heap.borrow_mut().allocate(owner, bytes, true).ok_or(VmmError::OUT_OF_MEMORY)?;
        self.far.borrow_mut().blocks.insert(selector, FarBlock { base, size: bytes, owner });
        Ok((selector as u32) << 16)
    }

    /// Free the block `far` points at (its offset must be 0).
    pub(crate) fn global_free(&self, far: u32) -> Result<(), VmmError> {
        let (selector, offset) = ((far >> 16) as u16, far & 0xFFFF);
        let block = if offset == 0 { self.far.borrow_mut().blocks.remove(&selector) } else { None };
        let Some(block) = block else {
            return Err(self.refuse(
                Violation::BadFarPointer,
                format!("GlobalFree({selector:04X}:{offset:04X}): not the address of an allocated block"),
                Some("GlobalFree"),
            ));
        };
        self.heap.borrow_mut().free(block.base);
        Ok(())
    }

    /// Free every block `owner` still holds (its program ended).
    pub(crate) fn free_far_blocks_of(&self, owner: InstanceId) {
        let blocks: Vec<FarBlock> = {
            let mut far = self.far.borrow_mut();
            let selectors: Vec<u16> = far.blocks.iter().filter(|(_, b)| b.owner == owner).map(|(s, _)| *s).collect();
            selectors.into_iter().filter_map(|s| far.blocks.remove(&s)).collect()
        };
        let mut heap = self.heap.borrow_mut();
        for b in blocks {
            heap.free(b.base);
        }
    }

    /// The linear address and the bytes left from `far` to the end of its
    /// block, if `far` points into a ring-3 block.
    fn far_span(&self, far: u32) -> Option<(u32, usize)> {
        let (selector, offset) = ((far >> 16) as u16, far & 0xFFFF);
        let b = *self.far.borrow().blocks.get(&selector)?;
        (offset < b.size).then(|| (b.base + offset, (b.size - offset) as usize))
    }

    /// Read through a 16:16 pointer: a ring-3 block, else the message
    /// server's local heap. Up to `out.len()` bytes, to the end of the
    /// block or segment; how many were read. A bad pointer is a
    /// `BAD_FAR_POINTER` violation of `service`.
    pub(crate) fn read_far(&self, service: &'static str, far: u32, out: &mut [u8]) -> Result<usize, VmmError> {
        let Some((linear, left)) = self.far_span(far) else { return self.ring3_read_far(service, far, out) };
        let n = out.len().min(left);
        self.heap.borrow().read(linear, &mut out[..n]).map_err(|_| VmmError::INVALID_PARAMETER)?;
        Ok(n)
    }

    /// Write through a 16:16 pointer into a ring-3 block; the whole of
    /// `data` must fit (else a `BAD_FAR_POINTER` violation of `service`).
    pub(crate) fn write_far(&self, service: &'static str, far: u32, data: &[u8]) -> Result<(), VmmError> {
        match self.far_span(far) {
            Some((linear, left)) if data.len() <= left => {
                self.heap.borrow_mut().write(linear, data).map_err(|_| VmmError::INVALID_PARAMETER)
            }
            _ => Err(self.refuse(
                Violation::BadFarPointer,
                format!(
                    "ring-3 code wrote {} bytes through {:04X}:{:04X}, which is not inside an allocated block",
                    data.len(),
                    far >> 16,
                    far & 0xFFFF
                ),
                Some(service),
            )),
        }
    }

    /// The NUL-terminated ANSI string at a 16:16 pointer (at most 260
    /// characters, a path's length); `None` if it cannot be read.
    pub(crate) fn read_far_string(&self, service: &'static str, far: u32) -> Option<String> {
        let mut buf = [0u8; 261];
        let n = self.read_far(service, far, &mut buf).ok()?;
        let end = buf[..n].iter().position(|b| *b == 0)?;
        Some(crate::shell::ansi(&buf[..end]))
    }
}
