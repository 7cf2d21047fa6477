//! Access to a VM's client registers (`Client_Reg_Struc`).
//!
//! The block lives in the host and is shared with the VMM: a service such as
//! `Simulate_Push` changes it while the device holds a [`Client`]. The SDK
//! therefore never hands out a Rust reference to it; every accessor reads or
//! writes one field.

use core::marker::PhantomData;
use core::ptr::NonNull;

use crate::abi::ClientRegs;
use crate::ddk::{CF_MASK, IF_MASK, ZF_MASK};

/// A view of one VM's client register block.
#[derive(Copy, Clone)]
pub struct Client<'a> {
    regs: NonNull<ClientRegs>,
    _call: PhantomData<&'a ()>,
}

macro_rules! reg32 {
    ($($get:ident $set:ident;)*) => {$(
        #[doc = concat!("Client_", stringify!($get), " (32-bit).")]
        pub fn $get(&self) -> u32 {
            // SAFETY: `regs` points at the VM's live block for 'a; fields
            // are plain u32 and read one at a time.
            unsafe { core::ptr::addr_of!((*self.regs.as_ptr()).$get).read() }
        }
        #[doc = concat!("Set Client_", stringify!($get), ".")]
        pub fn $set(&self, value: u32) {
            // SAFETY: as above; the host never holds a reference across the
            // plugin call.
            unsafe { core::ptr::addr_of_mut!((*self.regs.as_ptr()).$get).write(value) }
        }
    )*};
}

macro_rules! reg16 {
    ($($get:ident $set:ident $full:ident $setfull:ident;)*) => {$(
        #[doc = concat!("The low word of the 32-bit register (", stringify!($get), ").")]
        pub fn $get(&self) -> u16 {
            self.$full() as u16
        }
        #[doc = concat!("Set ", stringify!($get), ", keeping the high word.")]
        pub fn $set(&self, value: u16) {
            self.$setfull((self.$full() & 0xFFFF_0000) | value as u32)
        }
    )*};
}

macro_rules! reg8 {
    ($($lo:ident $setlo:ident $hi:ident $sethi:ident $full:ident $setfull:ident;)*) => {$(
        #[doc = concat!("The low byte (", stringify!($lo), ").")]
        pub fn $lo(&self) -> u8 {
            self.$full() as u8
        }
        #[doc = concat!("Set ", stringify!($lo), ".")]
        pub fn $setlo(&self, value: u8) {
            self.$setfull((self.$full() & !0xFF) | value as u32)
        }
        #[doc = concat!("The second byte (", stringify!($hi), ").")]
        pub fn $hi(&self) -> u8 {
            (self.$full() >> 8) as u8
        }
        #[doc = concat!("Set ", stringify!($hi), ".")]
        pub fn $sethi(&self, value: u8) {
            self.$setfull((self.$full() & !0xFF00) | ((value as u32) << 8))
        }
    )*};
}

impl<'a> Client<'a> {
    /// Wrap a pointer the host handed out.
    ///
    /// # Safety
    /// `regs` must point at a live `ClientRegs` for the lifetime `'a`.
    pub unsafe fn from_raw(regs: *mut ClientRegs) -> Option<Self> {
        NonNull::new(regs).map(|regs| Client { regs, _call: PhantomData })
    }

    /// A copy of the whole block (`Save_Client_State`'s view).
    pub fn get(&self) -> ClientRegs {
        // SAFETY: see `reg32!`.
        unsafe { self.regs.as_ptr().read() }
    }

    /// Overwrite the whole block.
    pub fn set(&self, regs: ClientRegs) {
        // SAFETY: see `reg32!`.
        unsafe { self.regs.as_ptr().write(regs) }
    }

    reg32! {
        eax set_eax; ebx set_ebx; ecx set_ecx; edx set_edx;
        esi set_esi; edi set_edi; ebp set_ebp; esp set_esp;
        eip set_eip; eflags set_eflags;
        cs set_cs_raw; ds set_ds_raw; es set_es_raw; ss set_ss_raw; fs set_fs_raw; gs set_gs_raw;
    }

    reg16! {
        ax set_ax eax set_eax; bx set_bx ebx set_ebx; cx set_cx ecx set_ecx; dx set_dx edx set_edx;
        si set_si esi set_esi; di set_di edi set_edi; bp set_bp ebp set_ebp; sp set_sp esp set_esp;
        ip set_ip eip set_eip;
    }

    reg8! {
        al set_al ah set_ah eax set_eax;
        bl set_bl bh set_bh ebx set_ebx;
        cl set_cl ch set_ch ecx set_ecx;
        dl set_dl dh set_dh edx set_edx;
    }

    /// Whether CF is set in Client_EFlags.
    pub fn carry(&self) -> bool {
        self.eflags() & CF_MASK != 0
    }

    /// Set or clear CF in Client_EFlags: how an API procedure reports an
    /// error to its ring-3 caller.
    pub fn set_carry(&self, set: bool) {
        let f = self.eflags();
        self.set_eflags(if set { f | CF_MASK } else { f & !CF_MASK });
    }

    /// Whether ZF is set in Client_EFlags.
    pub fn zero(&self) -> bool {
        self.eflags() & ZF_MASK != 0
    }

    /// Whether the VM has interrupts enabled (IF in Client_EFlags).
    pub fn interrupts_enabled(&self) -> bool {
        self.eflags() & IF_MASK != 0
    }

    /// `DX:AX` as one 32-bit value.
    pub fn dx_ax(&self) -> u32 {
        ((self.dx() as u32) << 16) | self.ax() as u32
    }
}

impl core::fmt::Debug for Client<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        self.get().fmt(f)
    }
}
