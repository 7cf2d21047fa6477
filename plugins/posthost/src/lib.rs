//! POSTHOST.DLL: the Windows DLL that VPOSTD calls into.
//!
//! KB Q72899: a VxD cannot call `PostMessage`, so it far-calls a callback
//! in a DLL at event time, through nested execution. That callback behaves
//! like an interrupt service routine: it must live in a **FIXED** segment
//! and may call only `PostMessage` / `PostAppMessage`. POSTHOST keeps it in
//! `CALLBACK_TEXT` (FIXED); everything else is in `_TEXT` (MOVEABLE).
//!
//! Exports (all `FAR PASCAL`):
//!
//! | ordinal | name | segment | arguments | result |
//! |---|---|---|---|---|
//! | 1 | `PostCallback` | CALLBACK_TEXT (FIXED) | `HWND, WORD msg, WORD wParam, LONG lParam` | `PostMessage`'s BOOL |
//! | 2 | `RegisterPostWindow` | _TEXT | `HWND, WORD flags` | TRUE if VPOSTD accepted it |
//! | 3 | `UnregisterPostWindow` | _TEXT | `HWND` | TRUE if VPOSTD is there |
//! | 4 | `PostCallbackMoveable` | _TEXT (MOVEABLE) | as `PostCallback` | as `PostCallback` |
//!
//! `RegisterPostWindow` finds VPOSTD's protected-mode API with INT 2Fh
//! AX=1684h BX=4321h and calls it with AX = window, CX:BX = callback.
//! `flags` bit 0 ([`REGISTER_MOVEABLE`]) registers `PostCallbackMoveable`
//! instead: the mistake Q72899 warns about, kept so the emulator can show
//! what happens (a `NOT_FIXED_SEGMENT` violation).

use core::cell::Cell;

use vmm_plugin_api::prelude::*;

/// VPOSTD's device ID.
pub const VPOSTD_DEVICE_ID: u16 = 0x4321;
/// `RegisterPostWindow` flag: register the MOVEABLE callback (wrong on
/// purpose).
pub const REGISTER_MOVEABLE: u16 = 0x0001;

/// Ordinal of `PostCallback`.
pub const ORD_POST_CALLBACK: u16 = 1;
/// Ordinal of `RegisterPostWindow`.
pub const ORD_REGISTER: u16 = 2;
/// Ordinal of `UnregisterPostWindow`.
pub const ORD_UNREGISTER: u16 = 3;
/// Ordinal of `PostCallbackMoveable`.
pub const ORD_POST_CALLBACK_MOVEABLE: u16 = 4;

/// The DLL (one instance per machine).
pub struct PostHost {
    /// VPOSTD's PM API entry, once found.
    entry: Cell<Option<FarPtr>>,
}

impl PostHost {
    /// INT 2Fh AX=1684h BX=4321h: VPOSTD's PM API entry, or `None`.
    fn vpostd_entry(&self, r3: &Ring3<'_>) -> Option<FarPtr> {
        if let Some(e) = self.entry.get() {
            return Some(e);
        }
        let regs = r3.regs();
        regs.set_ax(0x1684);
        regs.set_bx(VPOSTD_DEVICE_ID);
        regs.set_es_raw(0);
        regs.set_di(0);
        r3.int(0x2F).ok()?;
        let entry = FarPtr::new(regs.es() as u16, regs.di());
        if entry.is_null() {
            return None;
        }
        self.entry.set(Some(entry));
        Some(entry)
    }

    /// Call VPOSTD's PM API with AX = `hwnd`, CX:BX = `callback`; whether
    /// it accepted (CF clear).
    fn call_vpostd(&self, r3: &Ring3<'_>, hwnd: u16, callback: FarPtr) -> bool {
        let Some(entry) = self.vpostd_entry(r3) else { return false };
        let regs = r3.regs();
        let saved = regs.get();
        regs.set_ax(hwnd);
        regs.set_cx(callback.selector);
        regs.set_bx(callback.offset);
        let ok = r3.call(entry, &[]).is_ok() && !regs.carry();
        // DS, SI and DI belong to the caller under the PASCAL convention.
        let after = regs.get();
        regs.set(ClientRegs { ds: saved.ds, esi: saved.esi, edi: saved.edi, ..after });
        ok
    }

    fn post(r3: &Ring3<'_>, args: PascalArgs<'_>) -> u32 {
        let [hwnd, msg, wparam, lparam] = args.params([2, 2, 2, 4]);
        u32::from(r3.post_message(Hwnd(hwnd as u16), msg as u16, wparam as u16, lparam))
    }
}

impl Module for PostHost {
    const MODULE: ModuleDef = ModuleDef::windows_dll("POSTHOST")
        .segments(&[Segment::fixed("CALLBACK_TEXT"), Segment::moveable("_TEXT")])
        .exports(&[
            Export::new("PostCallback", ORD_POST_CALLBACK, 0, 10),
            Export::new("RegisterPostWindow", ORD_REGISTER, 1, 4),
            Export::new("UnregisterPostWindow", ORD_UNREGISTER, 1, 2),
            Export::new("PostCallbackMoveable", ORD_POST_CALLBACK_MOVEABLE, 1, 10),
        ]);

    fn create(_r3: &Ring3<'_>) -> Result<Self, String> {
        Ok(PostHost { entry: Cell::new(None) })
    }

    /// LibMain: nothing to set up; accept the load.
    fn start(&self, _r3: &Ring3<'_>, _args: &str) -> Step {
        Step::exit(1)
    }

    fn call(&self, r3: &Ring3<'_>, ordinal: u16, args: PascalArgs<'_>) -> u32 {
        match ordinal {
            // The callback: PostMessage and nothing else.
            ORD_POST_CALLBACK | ORD_POST_CALLBACK_MOVEABLE => Self::post(r3, args),
            ORD_REGISTER => {
                let [hwnd, flags] = args.params([2, 2]);
                let which =
                    if flags as u16 & REGISTER_MOVEABLE != 0 { ORD_POST_CALLBACK_MOVEABLE } else { ORD_POST_CALLBACK };
                let Some(callback) = r3.export_address(which) else { return 0 };
                u32::from(self.call_vpostd(r3, hwnd as u16, callback))
            }
            ORD_UNREGISTER => {
                let [hwnd] = args.params([2]);
                u32::from(self.call_vpostd(r3, hwnd as u16, FarPtr::NULL))
            }
            _ => 0,
        }
    }
}

declare_module!(PostHost);
