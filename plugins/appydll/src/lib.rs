//! APPYDLL: the 16-bit DLL the APPYDEMO example VxD calls at appy time.
//! Its exports follow the PASCAL convention (they pop their arguments):
//!
//! * ordinal 1, `Multiply(WORD a, WORD b)`: `a * b` in DX:AX;
//! * ordinal 2, `Announce(LPSTR text)`: prints the string behind the far
//!   pointer (a block the VxD allocated with `_SHELL_LocalAllocEx`) and
//!   returns its length.

use vmm_plugin_api::prelude::*;

/// The DLL; it keeps no state.
pub struct AppyDll;

impl Module for AppyDll {
    const MODULE: ModuleDef = ModuleDef::windows_dll("APPYDLL")
        .segments(&[Segment::moveable("_TEXT")])
        .exports(&[Export::new("Multiply", 1, 0, 4), Export::new("Announce", 2, 0, 4)]);

    fn create(_: &Ring3<'_>) -> Result<Self, String> {
        Ok(AppyDll)
    }

    /// `LibMain`: a non-zero exit code means "loaded".
    fn start(&self, _: &Ring3<'_>, _: &str) -> Step {
        Step::exit(1)
    }

    fn call(&self, r3: &Ring3<'_>, ordinal: u16, args: PascalArgs<'_>) -> u32 {
        match ordinal {
            1 => {
                let [a, b] = args.params([2, 2]);
                a * b
            }
            2 => {
                let [text] = args.params([4]);
                match r3.read_far_string(FarPtr::from_u32(text)) {
                    Ok(s) => {
                        r3.print(&format!("announces: {s}"));
                        s.len() as u32
                    }
                    Err(e) => {
                        r3.print(&format!("cannot read the string at {}: {e}", FarPtr::from_u32(text)));
                        0
                    }
                }
            }
            _ => 0,
        }
    }
}

declare_module!(AppyDll);
