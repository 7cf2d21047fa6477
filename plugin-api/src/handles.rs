//! Typed handles. Each wraps the value the DDK passes in a register, so a VM
//! handle is never confused with an event handle.

use core::fmt;

macro_rules! handle {
    ($(#[$doc:meta])* $name:ident($inner:ty)) => {
        $(#[$doc])*
        #[repr(transparent)]
        #[derive(Copy, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
        pub struct $name(pub $inner);

        impl $name {
            /// The raw register value.
            pub const fn raw(self) -> $inner {
                self.0
            }
            /// Whether this is the null handle (0).
            pub const fn is_null(self) -> bool {
                self.0 == 0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({:#x})"), self.0)
            }
        }
    };
}

handle!(
    /// A VM handle (the DDK's pointer to the VM control block). Handles are
    /// generational: the handle of a destroyed VM stays invalid.
    VmHandle(u32)
);
handle!(
    /// An event handle from `Call_Priority_VM_Event`, `Schedule_VM_Event`,
    /// `Call_VM_Event` and friends. 0 means the callback already ran inline.
    EventHandle(u32)
);
handle!(
    /// A time-out handle from `Set_Global_Time_Out` / `Set_VM_Time_Out`.
    TimeoutHandle(u32)
);
handle!(
    /// A semaphore handle from `Create_Semaphore`.
    SemaphoreHandle(u32)
);
handle!(
    /// A simulated interrupt source.
    IrqHandle(u32)
);
handle!(
    /// An appy-time event handle from `_SHELL_CallAtAppyTime` (`APPY_HANDLE`),
    /// valid until the callback runs or the event is cancelled.
    AppyHandle(u32)
);
handle!(
    /// A system broadcast hook from `_SHELL_HookSystemBroadcast`
    /// (`SYSBHOOK_HANDLE`).
    SysBHookHandle(u32)
);
handle!(
    /// A Windows window handle (16-bit).
    Hwnd(u16)
);
handle!(
    /// A Windows task handle (16-bit).
    HTask(u16)
);
handle!(
    /// A Windows module instance handle (16-bit).
    HInstance(u16)
);

impl Hwnd {
    /// `HWND_BROADCAST` (0xFFFF): every top-level window.
    pub const BROADCAST: Hwnd = Hwnd(0xFFFF);
}

/// A 16:16 far pointer: selector (or V86 segment) and offset.
#[repr(C)]
#[derive(Copy, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct FarPtr {
    /// Selector (protected mode) or segment (V86 mode).
    pub selector: u16,
    /// Offset.
    pub offset: u16,
}

impl FarPtr {
    /// The null pointer 0:0.
    pub const NULL: FarPtr = FarPtr { selector: 0, offset: 0 };

    /// A far pointer from its parts.
    pub const fn new(selector: u16, offset: u16) -> Self {
        FarPtr { selector, offset }
    }
    /// From the dword form `selector << 16 | offset`.
    pub const fn from_u32(value: u32) -> Self {
        FarPtr { selector: (value >> 16) as u16, offset: value as u16 }
    }
    /// The dword form `selector << 16 | offset`.
    pub const fn to_u32(self) -> u32 {
        ((self.selector as u32) << 16) | self.offset as u32
    }
    /// Whether this is 0:0.
    pub const fn is_null(self) -> bool {
        self.selector == 0 && self.offset == 0
    }
}

impl fmt::Debug for FarPtr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04X}:{:04X}", self.selector, self.offset)
    }
}

impl fmt::Display for FarPtr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}
