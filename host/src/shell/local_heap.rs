//! The message server's local heap: `_SHELL_LocalAllocEx` and
//! `_SHELL_LocalFree`. It is one 64 KB segment (a block of the ring-0 heap,
//! so its bytes are real linear memory), so every block has a 16:16
//! address for ring-3 code and a flat address for the VxD, and the heap
//! runs out the way a Win16 local heap did: be frugal.

use vmm_plugin_api::ddk::{LMEM_DISCARDABLE, LMEM_MOVEABLE, LMEM_OEM2ANSI, LMEM_STRING, LMEM_ZEROINIT};

use vmm_plugin_api::abi::VmmError;

use crate::machine::Core;
use crate::shell::state::{LOCAL_HEAP_SELECTOR, SEGMENT_SIZE};
use crate::violation::Violation;
use crate::vmm::ids::InstanceId;

impl Core {
    /// `_SHELL_LocalAllocEx`: `(16:16, linear)`, zeros on failure. `data`
    /// is the caller's buffer (for `LMEM_STRING`, the string without its
    /// terminator is what counts).
    pub(crate) fn shell_local_alloc_ex(&self, flags: u32, bytes: u32, data: Option<&[u8]>) -> (u32, u32) {
        const SERVICE: &str = "_SHELL_LocalAllocEx";
        let known = LMEM_ZEROINIT | LMEM_STRING | LMEM_OEM2ANSI;
        if flags & !known != 0 {
            let what = if flags & (LMEM_MOVEABLE | LMEM_DISCARDABLE) != 0 {
                "SHELL's local blocks are always fixed: LMEM_MOVEABLE and LMEM_DISCARDABLE are not allowed".to_string()
            } else {
                format!("bits {:#X} are not LMEM_ZEROINIT, LMEM_STRING or LMEM_OEM2ANSI", flags & !known)
            };
            self.violation(Violation::InvalidParameter, format!("{SERVICE} flags {flags:#X}: {what}"), Some(SERVICE));
            return (0, 0);
        }
        let contents: Vec<u8> = match (flags & LMEM_STRING != 0, data) {
            (true, None) => {
                self.violation(
                    Violation::InvalidParameter,
                    format!("{SERVICE} with LMEM_STRING needs the string in lpvBuf, which is NULL"),
                    Some(SERVICE),
                );
                return (0, 0);
            }
            (true, Some(d)) => {
                let text = d.iter().position(|b| *b == 0).map_or(d, |n| &d[..n]);
                let mut s = text.to_vec();
                s.push(0);
                s
            }
            (false, Some(d)) => d[..d.len().min(bytes as usize)].to_vec(),
            (false, None) => Vec::new(),
        };
        let size = if flags & LMEM_STRING != 0 { contents.len() as u32 } else { bytes };
        if size == 0 {
            self.violation(
                Violation::InvalidParameter,
                format!("{SERVICE}: cb is 0 (give a size, or LMEM_STRING and a string)"),
                Some(SERVICE),
            );
            return (0, 0);
        }
        let Some(base) = self.local_heap_base() else { return (0, 0) };
        let Some(offset) = (size < SEGMENT_SIZE).then(|| self.shell.local.borrow_mut().allocate(size)).flatten() else {
            tracing::warn!("{SERVICE}({size} bytes): the message server's local heap is full");
            return (0, 0);
        };
        let linear = base + offset;
        {
            let mut heap = self.heap.borrow_mut();
            // Without LMEM_ZEROINIT a block keeps whatever the heap held
            // there before, as a Win16 local block did.
            if flags & LMEM_ZEROINIT != 0 {
                let _ = heap.write(linear, &vec![0u8; size as usize]);
            }
            // ASCII is the same in the OEM and ANSI sets; the emulator has no
            // code page tables for the rest, so LMEM_OEM2ANSI copies as is.
            let _ = heap.write(linear, &contents);
        }
        (((LOCAL_HEAP_SELECTOR as u32) << 16) | offset, linear)
    }

    /// `_SHELL_LocalFree`: 0 on success, `address` if it is not a block.
    pub(crate) fn shell_local_free(&self, address: u32) -> u32 {
        const SERVICE: &str = "_SHELL_LocalFree";
        let (selector, offset) = ((address >> 16) as u16, address & 0xFFFF);
        let freed = selector == LOCAL_HEAP_SELECTOR && self.shell.local.borrow_mut().free(offset);
        if freed {
            return 0;
        }
        self.violation(
            Violation::BadLocalFree,
            format!(
                "{SERVICE} of {:04X}:{:04X}, which is not a block _SHELL_LocalAllocEx returned (or was freed already)",
                selector, offset
            ),
            Some(SERVICE),
        );
        address
    }

    /// The linear address of the local heap's segment, allocated (zeroed)
    /// from the ring-0 heap on first use and owned by SHELL.
    fn local_heap_base(&self) -> Option<u32> {
        let base = self.shell.local.borrow().base();
        if base != 0 {
            return Some(base);
        }
        let owner = self.shell_instance().unwrap_or(InstanceId::HOST);
        let base = self.heap.borrow_mut().allocate(owner, SEGMENT_SIZE, true)?;
        self.shell.local.borrow_mut().set_base(base);
        Some(base)
    }

    /// Ring-3 code reads data through a 16:16 pointer: up to `out.len()`
    /// bytes, to the end of the segment. The only ring-3 data segment the
    /// emulator models is the message server's local heap.
    pub(crate) fn ring3_read_far(&self, service: &'static str, far: u32, out: &mut [u8]) -> Result<usize, VmmError> {
        let (selector, offset) = ((far >> 16) as u16, far & 0xFFFF);
        let base = self.shell.local.borrow().base();
        if selector != LOCAL_HEAP_SELECTOR || base == 0 {
            return Err(self.refuse(
                Violation::BadFarPointer,
                format!(
                    "ring-3 code read through {selector:04X}:{offset:04X}, which is not a data segment (neither a \
                     block from GlobalAlloc nor the message server's local heap, {LOCAL_HEAP_SELECTOR:04X}, once \
                     _SHELL_LocalAllocEx allocated from it)"
                ),
                Some(service),
            ));
        }
        let n = out.len().min((SEGMENT_SIZE - offset) as usize);
        let r = self.heap.borrow().read(base + offset, &mut out[..n]);
        r.map(|()| n).map_err(|_| VmmError::INVALID_PARAMETER)
    }
}
