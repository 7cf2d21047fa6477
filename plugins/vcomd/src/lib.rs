//! VCOMD: COM1 shared between VMs the way Windows 3.1's VCD shares a COM
//! port.
//!
//! VCOMD traps the eight ports of COM1's UART (0x3F8-0x3FF) at
//! `Device_Init`. Every VM's access reaches its handler:
//!
//! * The **owner** VM's accesses pass to the hardware (`Simulate_IO`), so
//!   it talks to the UART; VCOMD keeps the owner's register image (IER,
//!   LCR, MCR, SCR, divisor) from what it writes and stamps the time of its
//!   last use.
//! * Another VM's accesses are served from that VM's own **virtual UART**
//!   (its register image; LSR reads "transmitter empty, no data", MSR 0,
//!   IIR "no interrupt") until an access asks for ownership, as VCD's do
//!   (KB Q76564): reading or writing the data register with DLAB off,
//!   a second read of LSR, a second read of MSR, or a write of MCR with
//!   loopback or OUT2 set.
//! * An ownership request is decided as VCD decides it: a free port goes
//!   to the requester; with `[VCOMD] AutoAssign` = 0 the requester takes
//!   it silently; with AutoAssign > 0 it takes it silently once the owner
//!   has not used the port for that many seconds; a VM that already lost a
//!   contention for the port is refused without asking again; otherwise
//!   SHELL asks the user (`SHELL_Resolve_Contention`, answered from
//!   `[shell] answers`). AutoAssign = -1 (the default) always asks.
//! * A refused access is completed virtually: reads return 0xFF, writes
//!   are dropped (a control register write still lands in the VM's
//!   virtual UART, so its setup holds when it gets the port later), and
//!   the VM runs on (a DOS program "finds no modem").
//! * Moving the port: bytes the old owner had not read are read out of
//!   the receive buffer for it and dropped (a `vcomd_rx_dropped` note),
//!   and the UART is programmed from the new owner's image. When the owner
//!   VM is destroyed its unread bytes go the same way and the port is free
//!   again (a `released` record).
//!
//! * The system VM's COMM.DRV asks through VCD's **PM API** ([`pm_api`]:
//!   INT 2Fh AX=1684h BX=000Eh): Acquire_Port is an ownership request
//!   like the triggers above (KB Q76564's trigger 7); Free_Port,
//!   Steal_Port and Get/Set_Port_Behavior as VCD has them.
//! * VCOMD hooks **INT 14h** (the BIOS's serial services) as VCD does:
//!   the owner's calls stamp the port's last use, every call goes on.
//!
//! Every decision is a `contention` record (`Vmm::trace_contention`).
//! Interrupts (IRQ 4 through VPICD, when `*VPICD` is in the device list)
//! are in [`irq`]: virtualized on the first assignment, they go to the
//! owner VM only.

use core::cell::Cell;
use std::collections::BTreeMap;

use vmm_plugin_api::prelude::*;

pub mod irq;
pub mod pm_api;

/// COM1's base port.
pub const BASE: u16 = 0x3F8;
/// The UART's ports: base to base + 7.
pub const PORTS: u16 = 8;
/// The resource name in `contention` records.
pub const RESOURCE: &str = "COM1";
/// The device name SHELL's contention dialog shows (8 bytes, as VCD passes it).
pub const DIALOG_NAME: &str = "COM1    ";

const LCR_DLAB: u8 = 0x80;
const MCR_OUT2: u8 = 0x08;
const MCR_LOOP: u8 = 0x10;
const LSR_DR: u8 = 0x01;
/// What a VM without the port reads from its virtual LSR: THR and the
/// transmitter empty, no data.
const VIRTUAL_LSR: u8 = 0x60;

/// A VM's view of the UART's registers: the owner's last writes, or the
/// virtual UART of a VM without the port.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Image {
    /// Interrupt enable.
    pub ier: u8,
    /// Line control (bit 7: DLAB).
    pub lcr: u8,
    /// Modem control.
    pub mcr: u8,
    /// Scratch.
    pub scr: u8,
    /// Divisor latch, low byte.
    pub dll: u8,
    /// Divisor latch, high byte.
    pub dlm: u8,
}

impl Image {
    fn dlab(&self) -> bool {
        self.lcr & LCR_DLAB != 0
    }

    /// Keep a write to register `offset`.
    fn write(&mut self, offset: u16, value: u8) {
        match offset {
            0 if self.dlab() => self.dll = value,
            1 if self.dlab() => self.dlm = value,
            1 => self.ier = value & 0x0F,
            3 => self.lcr = value,
            4 => self.mcr = value & 0x1F,
            7 => self.scr = value,
            _ => {}
        }
    }

    /// A read of register `offset` from the virtual UART.
    fn read(&self, offset: u16) -> u8 {
        match offset {
            0 if self.dlab() => self.dll,
            1 if self.dlab() => self.dlm,
            1 => self.ier,
            2 => 0x01,
            3 => self.lcr,
            4 => self.mcr,
            5 => VIRTUAL_LSR,
            6 => 0,
            7 => self.scr,
            // The data register with DLAB off always asks for ownership.
            _ => 0xFF,
        }
    }
}

/// What VCOMD knows of one VM.
#[derive(Clone, Debug, Default)]
struct VmPort {
    image: Image,
    /// LSR and MSR reads so far (the second asks for ownership).
    lsr_reads: u32,
    msr_reads: u32,
    /// This VM lost a contention for the port: it is refused without a
    /// new dialog (VCD's `Contended` bit).
    contended: bool,
}

/// How an ownership request was decided.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Nobody owned the port.
    Free,
    /// AutoAssign = 0: taken without asking.
    Steal,
    /// AutoAssign > 0 and the owner was idle that long.
    Idle,
    /// The requester already lost a contention: refused without a dialog.
    Refused,
    /// The user kept the port with its owner.
    UserKept,
    /// The user gave the port to the requester.
    UserGave,
    /// SHELL could not ask: the owner keeps it.
    Unresolved,
    /// The system VM's COMM.DRV took it with VCD's Steal_Port (the PM
    /// API): without asking.
    StealPort,
}

impl Decision {
    /// The word in the `contention` record.
    pub fn word(self) -> &'static str {
        match self {
            Decision::Free => "free",
            Decision::Steal => "steal",
            Decision::Idle => "idle",
            Decision::Refused => "refused",
            Decision::UserKept => "user_kept",
            Decision::UserGave => "user_gave",
            Decision::Unresolved => "unresolved",
            Decision::StealPort => "steal_port",
        }
    }

    /// Whether the requester gets the port.
    pub fn granted(self) -> bool {
        matches!(self, Decision::Free | Decision::Steal | Decision::Idle | Decision::UserGave | Decision::StealPort)
    }
}

/// What `AutoAssign` says when a VM asks for a port another VM owns.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Rule {
    /// -1: always ask (the default).
    Ask,
    /// 0: any VM may take the port at any time.
    Steal,
    /// > 0: take it without asking once the owner was idle this many ms.
    IdleMs(u32),
}

impl Rule {
    /// From `[VCOMD] AutoAssign` (seconds); below -1 is read as -1.
    pub fn from_setting(seconds: i32) -> Rule {
        match seconds {
            0 => Rule::Steal,
            s if s > 0 => Rule::IdleMs((s as u32).saturating_mul(1000)),
            _ => Rule::Ask,
        }
    }

    /// The decision without asking, if there is one: `idle_ms` is how long
    /// the owner has not used the port, `contended` whether the requester
    /// already lost a contention. `None`: ask the user.
    pub fn decide(self, idle_ms: u32, contended: bool) -> Option<Decision> {
        match self {
            Rule::Steal => Some(Decision::Steal),
            Rule::IdleMs(ms) if idle_ms >= ms => Some(Decision::Idle),
            _ if contended => Some(Decision::Refused),
            _ => None,
        }
    }
}

/// The device.
pub struct Vcomd {
    /// `*VPICD` is in the device list: IRQ 4 is virtualized on the first
    /// assignment.
    vpicd: Cell<bool>,
    /// IRQ 4's VPICD handle, once virtualized.
    irq: Cell<Option<VpicdHandle>>,
    rule: Cell<Rule>,
    owner: Cell<Option<VmHandle>>,
    /// When the owner last used the port (system time, ms).
    last_use: Cell<u32>,
    vms: ReentrancyCell<BTreeMap<VmHandle, VmPort>>,
}

impl Vcomd {
    /// Whether an access of a VM that does not own the port asks for it
    /// (KB Q76564's triggers 1-4); counts LSR and MSR reads.
    fn asks_for_ownership(&self, vm: VmHandle, offset: u16, out: bool, data: u8) -> bool {
        let mut vms = self.vms.borrow_mut();
        let p = vms.entry(vm).or_default();
        match (offset, out) {
            (0, _) => !p.image.dlab(),
            (5, false) => {
                p.lsr_reads += 1;
                p.lsr_reads >= 2
            }
            (6, false) => {
                p.msr_reads += 1;
                p.msr_reads >= 2
            }
            (4, true) => data & (MCR_LOOP | MCR_OUT2) != 0,
            _ => false,
        }
    }

    /// The I/O handler of every port.
    fn access(&self, vmm: &Vmm<'_>, io: IoAccess) -> u32 {
        if !io.is_byte() {
            // A byte per port, back through this handler.
            return vmm.simulate_io(io).unwrap_or(u32::MAX);
        }
        let (vm, offset, out, data) = (io.vm, io.port - BASE, io.is_output(), io.data as u8);
        if self.owner.get() != Some(vm) {
            if !self.asks_for_ownership(vm, offset, out, data) {
                let mut vms = self.vms.borrow_mut();
                let image = &mut vms.entry(vm).or_default().image;
                return if out {
                    image.write(offset, data);
                    0
                } else {
                    u32::from(image.read(offset))
                };
            }
            if !self.request(vmm, vm) {
                // Refused: completed virtually. A control register write
                // still lands in the VM's virtual UART; data is dropped.
                if out && offset != 0 {
                    self.vms.borrow_mut().entry(vm).or_default().image.write(offset, data);
                }
                return if out { 0 } else { 0xFF };
            }
        }
        self.last_use.set(vmm.get_system_time());
        if out {
            self.vms.borrow_mut().entry(vm).or_default().image.write(offset, data);
        }
        vmm.simulate_io(io).unwrap_or(0xFF)
    }

    /// `vm` asks for the port: decide, record, and move it if granted.
    fn request(&self, vmm: &Vmm<'_>, vm: VmHandle) -> bool {
        self.decide_and_move(vmm, vm, None)
    }

    /// `vm` takes the port without a decision (`Decision::StealPort`:
    /// the system VM's Steal_Port).
    fn take(&self, vmm: &Vmm<'_>, vm: VmHandle, decision: Decision) {
        self.decide_and_move(vmm, vm, Some(decision));
    }

    /// The owner `vm` gives the port up (its VM ends, or the system VM's
    /// Free_Port): what it left unread is not the next owner's; the port
    /// is free (a `released` record).
    fn release(&self, vmm: &Vmm<'_>, vm: VmHandle) {
        self.drain(vmm, vm, self.image(vm));
        self.irq_leaves(vmm, vm);
        self.owner.set(None);
        let _ = vmm.trace_contention(RESOURCE, Some(vm), None, "released");
    }

    /// Decide `vm`'s request (or take `forced`), record it, and move the
    /// port if granted.
    fn decide_and_move(&self, vmm: &Vmm<'_>, vm: VmHandle, forced: Option<Decision>) -> bool {
        let owner = self.owner.get();
        let decision = match (owner, forced) {
            (None, _) => Decision::Free,
            (Some(_), Some(d)) => d,
            (Some(owner), None) => {
                let idle = vmm.get_system_time().wrapping_sub(self.last_use.get());
                let contended = self.vms.borrow().get(&vm).is_some_and(|p| p.contended);
                match self.rule.get().decide(idle, contended) {
                    Some(d) => d,
                    None => match vmm.shell().shell_resolve_contention(owner, vm, DIALOG_NAME) {
                        Some(winner) if winner == vm => Decision::UserGave,
                        Some(_) => Decision::UserKept,
                        None => Decision::Unresolved,
                    },
                }
            }
        };
        if decision.granted()
            && let Some(old) = owner
        {
            // What the old owner left unread is read out for it while it
            // still owns the port.
            let image = self.vms.borrow().get(&old).map(|p| p.image).unwrap_or_default();
            self.drain(vmm, old, image);
        }
        let _ = vmm.trace_contention(RESOURCE, owner, Some(vm), decision.word());
        match decision {
            Decision::UserKept => {
                // The loser is refused from now on; the owner's idle time
                // starts again.
                self.vms.borrow_mut().entry(vm).or_default().contended = true;
                self.last_use.set(vmm.get_system_time());
            }
            Decision::UserGave => {
                let mut vms = self.vms.borrow_mut();
                vms.entry(vm).or_default().contended = false;
                if let Some(owner) = owner {
                    vms.entry(owner).or_default().contended = true;
                }
            }
            _ => {}
        }
        if decision.granted() {
            self.set_owner(vmm, vm);
        }
        decision.granted()
    }

    /// Give the port to `new`: the UART gets its registers.
    fn set_owner(&self, vmm: &Vmm<'_>, new: VmHandle) {
        if let Some(old) = self.owner.replace(Some(new)) {
            self.irq_leaves(vmm, old);
        }
        self.last_use.set(vmm.get_system_time());
        let image = self.vms.borrow().get(&new).map(|p| p.image).unwrap_or_default();
        let out = |offset: u16, value: u8| {
            let access = IoAccess { vm: new, io_type: BYTE_OUTPUT, port: BASE + offset, data: u32::from(value) };
            let _ = vmm.simulate_io(access);
        };
        out(3, image.lcr | LCR_DLAB);
        out(0, image.dll);
        out(1, image.dlm);
        out(3, image.lcr & !LCR_DLAB);
        out(1, image.ier);
        out(4, image.mcr);
        out(7, image.scr);
        if image.dlab() {
            out(3, image.lcr);
        }
        if self.vpicd.get() && self.irq.get().is_none() {
            // The first assignment ever: IRQ 4 follows the owner from now on.
            self.irq.set(irq::virtualize(vmm));
        }
    }

    /// `vm` issued INT 14h (VCD's hook): a call for COM1 (DX = 0) by its
    /// owner stamps the port's last use, so AutoAssign's idle time starts
    /// again. The call goes on to the BIOS (or whoever serves it)
    /// unchanged; a VM that does not own the port asks for it, as any
    /// program does, when the BIOS touches the UART.
    fn bios_call(&self, vmm: &Vmm<'_>, vm: VmHandle) {
        let com1 = vmm.client(vm).is_ok_and(|c| c.dx() == 0);
        if com1 && self.owner.get() == Some(vm) {
            self.last_use.set(vmm.get_system_time());
        }
    }

    /// The image VCOMD keeps of `vm`'s UART registers.
    fn image(&self, vm: VmHandle) -> Image {
        self.vms.borrow().get(&vm).map(|p| p.image).unwrap_or_default()
    }

    /// Read the bytes `vm` left in the receive buffer, for it, and drop
    /// them.
    fn drain(&self, vmm: &Vmm<'_>, vm: VmHandle, image: Image) {
        let io = |port: u16, io_type: u32, data: u32| {
            vmm.simulate_io(IoAccess { vm, io_type, port: BASE + port, data }).unwrap_or(0)
        };
        if image.dlab() {
            io(3, BYTE_OUTPUT, u32::from(image.lcr & !LCR_DLAB));
        }
        let mut dropped = 0u32;
        // The buffer is small; the bound keeps a broken UART from looping.
        while dropped < 256 && io(5, BYTE_INPUT, 0) as u8 & LSR_DR != 0 {
            io(0, BYTE_INPUT, 0);
            dropped += 1;
        }
        if image.dlab() {
            io(3, BYTE_OUTPUT, u32::from(image.lcr));
        }
        if dropped > 0 {
            let _ = vmm.trace_note("vcomd_rx_dropped", &[("vm", vm.into()), ("bytes", dropped.into())]);
        }
    }
}

impl VxD for Vcomd {
    const DEVICE: Device = Device::new("VCOMD").version(1, 0).id(pm_api::VCD_DEVICE_ID).pm_api();

    fn create(_vmm: &Vmm<'_>) -> Result<Self, String> {
        Ok(Vcomd {
            vpicd: Cell::new(false),
            irq: Cell::new(None),
            rule: Cell::new(Rule::Ask),
            owner: Cell::new(None),
            last_use: Cell::new(0),
            vms: ReentrancyCell::new("VCOMD's VMs", BTreeMap::new()),
        })
    }

    fn control(&self, vmm: &Vmm<'_>, msg: ControlMessage) -> Carry {
        match msg.message {
            DEVICE_INIT => {
                let setting = match vmm.get_profile_decimal_int(Some("VCOMD"), "AutoAssign", -1) {
                    Ok(p) => p.value,
                    Err(e) => {
                        warn!("cannot read [VCOMD] AutoAssign ({e}): always asking");
                        -1
                    }
                };
                if setting < -1 {
                    warn!("[VCOMD] AutoAssign = {setting} is not -1, 0 or a number of seconds: always asking");
                }
                self.rule.set(Rule::from_setting(setting));
                let ports: Vec<u16> = (BASE..BASE + PORTS).collect();
                let installed = vmm.install_mult_io_handlers(&ports, |d: &Vcomd, vmm: &Vmm<'_>, io| d.access(vmm, io));
                if let Err((port, e)) = installed {
                    error!("VCOMD cannot trap port {port:#06X} ({e}): another device virtualizes COM1");
                    return Carry::Set;
                }
                info!("VCOMD traps COM1 (0x3F8-0x3FF); AutoAssign = {setting}");
                // VCD's INT 14h hook: a program that uses the port through
                // the BIOS is using it, however the call is served.
                let hooked = vmm.hook_v86_int_chain(0x14, |d: &Vcomd, vmm: &Vmm<'_>, _n, vm| {
                    d.bios_call(vmm, vm);
                    HookAction::PassOn
                });
                if let Err(e) = hooked {
                    warn!("VCOMD cannot hook INT 14h ({e}): BIOS calls do not count as using COM1");
                }
                self.vpicd.set(irq::vpicd_listed(vmm));
                if !self.vpicd.get() {
                    info!("no *VPICD in the device list: VCOMD leaves IRQ 4 alone; programs poll the UART");
                }
                Carry::Clear
            }
            DESTROY_VM => {
                let vm = msg.vm;
                if self.owner.get() == Some(vm) {
                    self.release(vmm, vm);
                }
                self.vms.borrow_mut().remove(&vm);
                Carry::Clear
            }
            _ => Carry::Clear,
        }
    }

    /// VCD's PM API ([`pm_api`]): the system VM's COMM.DRV acquires,
    /// frees and steals the port.
    fn pm_api(&self, vmm: &Vmm<'_>, call: ApiCall<'_>) {
        self.pm_api_call(vmm, call);
    }
}

declare_virtual_device!(Vcomd);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_assign_decides_without_asking_only_where_it_says() {
        assert_eq!(Rule::from_setting(-1).decide(u32::MAX, false), None);
        assert_eq!(Rule::from_setting(-7), Rule::Ask);
        assert_eq!(Rule::from_setting(-1).decide(0, true), Some(Decision::Refused));
        assert_eq!(Rule::from_setting(0).decide(0, true), Some(Decision::Steal));
        let two = Rule::from_setting(2);
        assert_eq!(two, Rule::IdleMs(2000));
        assert_eq!(two.decide(1999, false), None);
        assert_eq!(two.decide(2000, false), Some(Decision::Idle));
        assert_eq!(two.decide(1999, true), Some(Decision::Refused));
        assert!(Decision::UserGave.granted() && !Decision::UserKept.granted() && !Decision::Unresolved.granted());
    }

    #[test]
    fn a_virtual_uart_keeps_what_a_vm_writes() {
        let mut i = Image::default();
        i.write(3, 0x83);
        i.write(0, 0x0C);
        i.write(1, 0x00);
        i.write(3, 0x03);
        i.write(1, 0xFF);
        assert_eq!((i.dll, i.dlm, i.lcr, i.ier), (0x0C, 0, 0x03, 0x0F));
        assert_eq!((i.read(5), i.read(2), i.read(6), i.read(1)), (0x60, 0x01, 0, 0x0F));
    }
}
