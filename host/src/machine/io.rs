//! The machine's side of I/O port trapping: the port table's services
//! (install, remove, trapping), the dispatch of one access to its handler
//! (EBX VM, ECX IOType, EDX port, EAX data) or to the hardware model, the
//! `io` records and the violations.

use std::rc::Rc;

use vmm_plugin_api::abi::{Carry, Regs, VmmError};

use crate::hw::uart;
use crate::machine::Core;
use crate::trace::{CallOutcome, TraceEvent};
use crate::violation::Violation;
use crate::vmm::callback::{Callback, SharedCall};
use crate::vmm::context::Context;
use crate::vmm::ids::{InstanceId, VmId};
use crate::vmm::io::{self, OUTPUT, PortError, STRING_IO};

/// COM1's base port.
pub(crate) const COM1: u16 = 0x3F8;

/// A host function as an I/O handler (a device built into the host:
/// VPICD's virtual PICs): the handler's registers in, EAX out.
pub(crate) type HostIoFn = Rc<dyn Fn(&Core, &mut Regs)>;

/// What the port table holds for a port: a plugin's handler or a host
/// function. Either can be reached again through `Simulate_IO` from
/// inside its own call: the table lends a copy of the entry (the plugin
/// callback's entry, or a clone of the host function's `Rc`) and keeps
/// the handler until every call returned.
pub(crate) enum PortHandler {
    /// Installed by a plugin (`Install_IO_Handler`).
    Plugin(Callback),
    /// Installed by the host on behalf of a built-in device.
    Host(HostIoFn),
}

/// A handler's entry, lent for one call.
enum PortEntry {
    /// `None`: a plugin callback that cannot be called (a one-shot one).
    Plugin(Option<SharedCall>),
    Host(HostIoFn),
}

impl PortHandler {
    #[inline]
    fn entry(&self) -> PortEntry {
        match self {
            PortHandler::Plugin(cb) => PortEntry::Plugin(cb.shared()),
            PortHandler::Host(f) => PortEntry::Host(f.clone()),
        }
    }
}

impl Core {
    /// `Install_IO_Handler`: `FAILED` (carry set) when the port already has
    /// a handler.
    pub(crate) fn install_io_handler(&self, owner: InstanceId, port: u16, callback: Callback) -> Result<(), VmmError> {
        self.install_port_handler(owner, port, PortHandler::Plugin(callback))
    }

    /// Install a plugin's or the host's handler on `port` for `owner`.
    pub(crate) fn install_port_handler(
        &self,
        owner: InstanceId,
        port: u16,
        handler: PortHandler,
    ) -> Result<(), VmmError> {
        let refused = self.io.borrow_mut().install(port, owner, handler).err();
        match refused {
            None => Ok(()),
            Some((e, callback)) => {
                drop(callback);
                if let PortError::Taken { owner: holder } = e {
                    tracing::info!(
                        "Install_IO_Handler of port {port:#06X} by {} refused: {} traps it",
                        self.instance_name(owner),
                        self.instance_name(holder)
                    );
                }
                Err(VmmError::FAILED)
            }
        }
    }

    /// `Install_Mult_IO_Handlers`: `Install_IO_Handler` of each entry in
    /// order; at the first refused one, its port and error. The entries
    /// before it stay installed (no rollback); the rest are dropped.
    pub(crate) fn install_mult_io_handlers(
        &self,
        owner: InstanceId,
        entries: Vec<(u16, Callback)>,
    ) -> Result<(), (u16, VmmError)> {
        let mut entries = entries.into_iter();
        for (port, callback) in entries.by_ref() {
            if let Err(e) = self.install_io_handler(owner, port, callback) {
                drop(entries);
                return Err((port, e));
            }
        }
        Ok(())
    }

    fn port_refusal(&self, service: &'static str, port: u16, e: PortError) -> VmmError {
        match e {
            PortError::NoHandler => self.refuse(
                Violation::IoPortNotOwned,
                format!("{service} of port {port:#06X}, on which no I/O handler is installed"),
                Some(service),
            ),
            PortError::NotOwner { owner } | PortError::Taken { owner } => self.refuse(
                Violation::IoPortNotOwned,
                format!("{service} of port {port:#06X}, whose I/O handler belongs to {}", self.instance_name(owner)),
                Some(service),
            ),
        }
    }

    /// `Remove_IO_Handler`: `NOT_FOUND` (carry set) when no handler is
    /// installed; a violation when another device's is.
    pub(crate) fn remove_io_handler(
        &self,
        service: &'static str,
        owner: InstanceId,
        port: u16,
    ) -> Result<(), VmmError> {
        let removed = self.io.borrow_mut().remove(port, owner);
        match removed {
            Ok(callback) => {
                drop(callback);
                Ok(())
            }
            Err(PortError::NoHandler) => Err(VmmError::NOT_FOUND),
            Err(e) => Err(self.port_refusal(service, port, e)),
        }
    }

    /// `Enable/Disable_Global_Trapping` (`vm` None) and
    /// `Enable/Disable_Local_Trapping`.
    pub(crate) fn set_io_trapping(
        &self,
        service: &'static str,
        owner: InstanceId,
        port: u16,
        vm: Option<VmId>,
        on: bool,
    ) -> Result<(), VmmError> {
        let result = match vm {
            None => self.io.borrow_mut().set_global(port, owner, on),
            Some(vm) => self.io.borrow_mut().set_local(port, owner, vm, on),
        };
        result.map_err(|e| self.port_refusal(service, port, e))
    }

    /// Check an IOType a device passed: `string` says whether string forms
    /// are accepted.
    pub(crate) fn check_io_type(&self, service: &'static str, io_type: u32, string: bool) -> Result<(), VmmError> {
        if io::valid_type(io_type) && (string || io_type & STRING_IO == 0) {
            return Ok(());
        }
        Err(self.refuse(
            Violation::IoPortNotOwned,
            format!("{service} was given IOType {io_type:#010X}, which is not a Byte/Word/Dword_Input/Output type"),
            Some(service),
        ))
    }

    /// One access of `vm` to `port` (no string forms) through the port
    /// table: the handler that traps it in `vm`, else the hardware model.
    /// Returns the data read (masked to the access size) or 0 for output.
    pub(crate) fn port_io(&self, vm: VmId, port: u16, io_type: u32, data: u32) -> u32 {
        self.access(vm, port, io_type, data, true)
    }

    /// An access through the port table (`table`) or straight to the
    /// hardware model.
    fn access(&self, vm: VmId, port: u16, io_type: u32, data: u32, table: bool) -> u32 {
        let size = io::size_of(io_type);
        let mask = io::data_mask(size);
        let output = io_type & OUTPUT != 0;
        let data = if output { data & mask } else { 0 };
        let begun = if table { self.io.borrow_mut().begin(port, vm, PortHandler::entry) } else { None };
        let mut irq4_rose = false;
        let (value, handled_by) = match begun {
            None => {
                let (value, rose) = self.hardware_io(port, size, output, data);
                irq4_rose = rose;
                (value, None)
            }
            Some((busy, entry)) => {
                let read = self.call_io_handler(vm, port, io_type, data, busy, entry);
                let value = if output { data } else { read.unwrap_or(u32::MAX) & mask };
                (value, Some(busy.owner))
            }
        };
        self.trace(|| TraceEvent::Io {
            vm: vm.raw(),
            port,
            direction: if output { "out" } else { "in" },
            size: (size * 8) as u8,
            value,
            handled_by: handled_by.map_or_else(|| "hardware".to_string(), |o| self.instance_name(o).to_string()),
        });
        if irq4_rose && self.vpicd_instance().is_some() {
            // The UART's line rose during the access: one edge on IRQ 4
            // (edge-triggered, docs/semantics.md), after the access's own
            // `io` record. Without VPICD there is no PIC to take it.
            self.raise_physical_irq(uart::IRQ);
        }
        if output { 0 } else { value }
    }

    /// Call the handler `begin` gave (EBX VM, ECX IOType, EDX port, EAX
    /// data) and end its call: its EAX, or `None` when it failed.
    #[inline]
    fn call_io_handler(
        &self,
        vm: VmId,
        port: u16,
        io_type: u32,
        data: u32,
        busy: io::Busy,
        entry: PortEntry,
    ) -> Option<u32> {
        let mut regs = Regs { eax: data, ebx: vm.raw(), ecx: io_type, edx: port as u32, ..Regs::default() };
        let outcome = match entry {
            PortEntry::Plugin(Some(entry)) => entry.call(self, Context::Vm, &mut regs),
            PortEntry::Plugin(None) => CallOutcome::Skipped,
            PortEntry::Host(f) => self
                .with_frame(busy.owner, Context::Vm, || {
                    f(self, &mut regs);
                    Carry::Clear
                })
                .into(),
        };
        let retired = self.io.borrow_mut().end(busy);
        drop(retired);
        matches!(outcome, CallOutcome::Clear | CallOutcome::Set).then_some(regs.eax)
    }

    /// A VM's string access (`INS`/`OUTS`, with or without `REP`; `io_type`
    /// has `String_IO`, the segment in its high word and the VM's client
    /// registers point at the buffer: DS:SI or ES:DI, CX the count): the
    /// handler that traps `port` in `vm` is called once with it (and
    /// usually hands it to `Simulate_IO`); on a port nobody traps the
    /// elements reach the hardware model one by one. Writes no `io` record
    /// of its own: each element that reaches a handler or the hardware does.
    pub(crate) fn string_port_io(&self, vm: VmId, port: u16, io_type: u32) -> Result<(), VmmError> {
        let begun = self.io.borrow_mut().begin(port, vm, PortHandler::entry);
        match begun {
            None => self.simulate_string_io(vm, port, io_type),
            Some((busy, entry)) => {
                self.call_io_handler(vm, port, io_type, 0, busy, entry);
                Ok(())
            }
        }
    }

    /// `Simulate_IO` of a string form: each element is an access through
    /// the port table (the element's Byte/Word/Dword IOType), its data read
    /// from or written to the VM's memory at the IOType's segment and the
    /// client's SI (output) or DI (input); ESI/EDI with `Addr_32_IO`. With
    /// `Rep_IO` there are Client_CX (ECX) elements, else one. After each
    /// element SI/DI move by its size (down with `Reverse_IO`) and CX counts
    /// down, so the client registers end as the instruction leaves them
    /// (CX = 0). An element outside the VM's memory (for a Rust VM, not
    /// inside one of its blocks) is a `BAD_FAR_POINTER` violation and stops
    /// it.
    pub(crate) fn simulate_string_io(&self, vm: VmId, port: u16, io_type: u32) -> Result<(), VmmError> {
        let element = io_type & (OUTPUT | io::WORD_IO | io::DWORD_IO);
        let size = io::size_of(element);
        let output = io_type & OUTPUT != 0;
        let a32 = io_type & io::ADDR_32_IO != 0;
        let rep = io_type & io::REP_IO != 0;
        let segment = (io_type >> io::IO_SEG_SHIFT) as u16;
        let width = |v: u32| if a32 { v } else { v & 0xFFFF };
        let client = || self.vms.borrow().get(vm).map(|v| v.client());
        let Some(c) = client() else { return Ok(()) };
        let count = if rep { width(c.ecx) } else { 1 };
        for _ in 0..count {
            // A VM an element's handler ended takes no more.
            let Some(mut c) = client() else { return Ok(()) };
            let index = if output { c.esi } else { c.edi };
            let offset = width(index);
            let data = if output { self.vm_read(vm, segment, offset, size)? } else { 0 };
            let read = self.port_io(vm, port, element, data);
            if !output {
                self.vm_write(vm, segment, offset, size, read)?;
            }
            // The element's handler may have changed the client registers:
            // move on from what they are now.
            if let Some(now) = client() {
                c = now;
            }
            let step = if io_type & io::REVERSE_IO != 0 { size.wrapping_neg() } else { size };
            let advance =
                |r: u32| if a32 { r.wrapping_add(step) } else { (r & 0xFFFF_0000) | (r.wrapping_add(step) & 0xFFFF) };
            if output {
                c.esi = advance(c.esi);
            } else {
                c.edi = advance(c.edi);
            }
            if rep {
                c.ecx =
                    if a32 { c.ecx.wrapping_sub(1) } else { (c.ecx & 0xFFFF_0000) | (c.ecx.wrapping_sub(1) & 0xFFFF) };
            }
            if let Some(v) = self.vms.borrow().get(vm) {
                v.set_client(c);
            }
        }
        Ok(())
    }

    /// A string access of Rust ring-3 code (`owner`) in the current VM:
    /// `data`'s elements go into a block of the VM (a `GlobalAlloc`),
    /// the client's DS:SI (output) or ES:DI (input) point at it and (with
    /// `Rep_IO`) CX holds the count, and the access is dispatched as a DOS program's
    /// `INS`/`OUTS` is; input lands back in `data`. The block goes and the
    /// client registers are restored afterwards: they are not the Rust
    /// code's own state. Empty `data` does nothing (`REP` with CX = 0).
    pub(crate) fn ring3_string_io(
        &self,
        owner: InstanceId,
        io_type: u32,
        port: u16,
        data: &mut [u8],
    ) -> Result<(), VmmError> {
        let size = io::size_of(io_type) as usize;
        let rep = io_type & io::REP_IO != 0;
        let count = data.len() / size;
        if !data.len().is_multiple_of(size) || count > 0xFFFF || (!rep && count != 1) {
            return Err(self.refuse(
                Violation::InvalidParameter,
                format!(
                    "string port I/O of {} bytes in {size}-byte elements: {}",
                    data.len(),
                    if rep {
                        "a whole number of elements, at most 65535, is needed"
                    } else {
                        "without REP, one element"
                    }
                ),
                Some("port I/O"),
            ));
        }
        if count == 0 {
            return Ok(());
        }
        let vm = self.cur_vm.get();
        let far = self.global_alloc(owner, data.len() as u32)?;
        let output = io_type & OUTPUT != 0;
        let saved = self.vms.borrow().get(vm).map(|v| v.client());
        let result = (|| {
            if output {
                self.write_far("Simulate_IO", far, data)?;
            }
            let selector = far >> 16;
            if let Some(v) = self.vms.borrow().get(vm) {
                let mut c = v.client();
                if output {
                    (c.ds, c.esi) = (selector, 0);
                } else {
                    (c.es, c.edi) = (selector, 0);
                }
                if rep {
                    c.ecx = (c.ecx & 0xFFFF_0000) | count as u32;
                }
                c.eflags &= !0x400;
                v.set_client(c);
            }
            self.string_port_io(vm, port, io_type | (selector << io::IO_SEG_SHIFT))?;
            if !output {
                self.read_far("Simulate_IO", far, data)?;
            }
            Ok(())
        })();
        if let (Some(c), Some(v)) = (saved, self.vms.borrow().get(vm)) {
            v.set_client(c);
        }
        self.global_free(far)?;
        result
    }

    /// `size` bytes (little-endian) of `vm`'s memory at `segment:offset`:
    /// a DOS program's memory (real-mode addressing), else a ring-3
    /// block through a 16:16 pointer.
    fn vm_read(&self, vm: VmId, segment: u16, offset: u32, size: u32) -> Result<u32, VmmError> {
        let linear = (u32::from(segment) << 4).wrapping_add(offset);
        let from_dos = self.with_vm_memory(vm, |m| {
            m.map(|m| (0..size).fold(0u32, |v, i| v | u32::from(m.byte(linear + i)) << (8 * i)))
        });
        if let Some(v) = from_dos {
            return Ok(v);
        }
        let mut buf = [0u8; 4];
        let far = (u32::from(segment) << 16) | (offset & 0xFFFF);
        let n = self.read_far("Simulate_IO", far, &mut buf[..size as usize])?;
        if n < size as usize {
            return Err(self.refuse(
                Violation::BadFarPointer,
                format!("a string I/O element at {segment:04X}:{offset:04X} runs past the end of its block"),
                Some("Simulate_IO"),
            ));
        }
        Ok(u32::from_le_bytes(buf))
    }

    /// Write `size` bytes of `value` to `vm`'s memory at `segment:offset`.
    fn vm_write(&self, vm: VmId, segment: u16, offset: u32, size: u32, value: u32) -> Result<(), VmmError> {
        let linear = (u32::from(segment) << 4).wrapping_add(offset);
        let to_dos = self.with_vm_memory(vm, |m| {
            m.map(|m| (0..size).for_each(|i| m.set_byte(linear + i, (value >> (8 * i)) as u8)))
        });
        if to_dos.is_some() {
            return Ok(());
        }
        let far = (u32::from(segment) << 16) | (offset & 0xFFFF);
        self.write_far("Simulate_IO", far, &value.to_le_bytes()[..size as usize])
    }

    /// An access that reaches the hardware: COM1's UART (`[machine] com1`)
    /// for its ports, the open bus (reads all ones, writes dropped) for
    /// the rest. A word or dword is a byte per port, low byte first, as an
    /// 8-bit device sees it. Returns the value of the `io` record (the data
    /// written, or read) and whether the UART's interrupt line rose
    /// (low before a byte access, high after it): the loopback plug makes
    /// received data arrive only inside a THR write, so every rising edge
    /// happens inside an access.
    fn hardware_io(&self, port: u16, size: u32, output: bool, data: u32) -> (u32, bool) {
        let mut value = 0;
        let mut rose = false;
        for i in 0..size {
            let p = port.wrapping_add(i as u16);
            let byte = (data >> (8 * i)) as u8;
            let read = match &self.com1 {
                Some(uart) if (COM1..COM1 + uart::PORTS).contains(&p) => {
                    let mut uart = uart.borrow_mut();
                    let offset = p - COM1;
                    let before = uart.interrupt_line();
                    let read = if output {
                        uart.write(offset, byte);
                        byte
                    } else {
                        uart.read(offset)
                    };
                    rose |= !before && uart.interrupt_line();
                    read
                }
                _ if output => byte,
                _ => 0xFF,
            };
            value |= u32::from(read) << (8 * i);
        }
        (value, rose)
    }

    /// `Simulate_IO` (no string forms): a byte access is done on the
    /// hardware (the handler that calls it is the port's own); a word or dword access is broken into
    /// byte accesses to port, port+1, ... low byte first, each dispatched
    /// through the port table.
    pub(crate) fn simulate_io(&self, vm: VmId, port: u16, io_type: u32, data: u32) -> u32 {
        let size = io::size_of(io_type);
        if size == 1 {
            return self.access(vm, port, io_type, data, false);
        }
        let byte_type = io_type & OUTPUT;
        let mut value = 0;
        for i in 0..size {
            let byte = self.port_io(vm, port.wrapping_add(i as u16), byte_type, data >> (8 * i));
            value |= (byte & 0xFF) << (8 * i);
        }
        if io_type & OUTPUT != 0 { 0 } else { value }
    }

    /// A VM was destroyed: its local trapping settings go.
    pub(crate) fn io_forget_vm(&self, vm: VmId) {
        self.io.borrow_mut().forget_vm(vm);
    }

    /// The I/O handlers `instance` still has (unload): removed, named.
    pub(crate) fn io_reclaim(&self, instance: InstanceId) -> Vec<String> {
        let taken = self.io.borrow_mut().take_owned(instance);
        taken.into_iter().map(|(port, _callback)| format!("the I/O handler of port {port:#06X}")).collect()
    }
}
