//! `*RUNDLL`: Windows 95's RUNDLL.EXE, built into the host. A 16-bit DLL
//! runs only when something loads it; `RUNDLL.EXE DLLNAME,Entry` was how
//! Windows ran one on its own, and it is how a manifest runs a DLL plugin
//! without writing an application for it:
//!
//! ```toml
//! [windows]
//! load = ["*RUNDLL HELLO.DLL,Hello"]
//! ```
//!
//! It loads the DLL (running its `LibMain`), calls the export as
//! `void FAR PASCAL Entry(HWND hwnd, HINSTANCE hinst, LPSTR lpszCmdLine,
//! int nCmdShow)` with `hwnd` 0, the DLL's instance, `lpszCmdLine` NULL and
//! `SW_SHOWNORMAL`, frees the DLL and exits with 0. Failures are printed
//! (`program_output`) and end it with exit code 1 (bad command line), 2 (the
//! DLL did not load), 3 (no such export) or 4 (the call was refused).

use std::cell::OnceCell;

use vmm_plugin_api::prelude::*;

use crate::loader::PluginLibrary;

/// The name manifests use.
pub(crate) const NAME: &str = "*RUNDLL";

/// The built-in library for `name`, if it names `*RUNDLL` (`*RUNDLL.EXE`
/// too).
pub(crate) fn library(name: &str) -> Option<&'static PluginLibrary> {
    if crate::resolve::library_name(name) != crate::resolve::library_name(NAME) {
        return None;
    }
    thread_local! {
        static LIB: OnceCell<&'static PluginLibrary> = const { OnceCell::new() };
    }
    Some(
        LIB.with(|l| *l.get_or_init(|| crate::loader::in_process(NAME, vmm_plugin_api::ring3::in_process::<RunDll>()))),
    )
}

/// RUNDLL itself: one step, then it exits.
struct RunDll;

impl RunDll {
    fn fail(r3: &Ring3<'_>, code: u32, message: String) -> Step {
        r3.print(&format!("RUNDLL: {message}"));
        Step::exit(code)
    }
}

impl Module for RunDll {
    const MODULE: ModuleDef = ModuleDef::windows_app("RUNDLL");

    fn create(_: &Ring3<'_>) -> Result<Self, String> {
        Ok(RunDll)
    }

    fn start(&self, r3: &Ring3<'_>, args: &str) -> Step {
        let (dll, entry) = match crate::manifest::rundll_command_line(args) {
            Ok(c) => c,
            Err(e) => return Self::fail(r3, 1, e),
        };
        let module = match r3.load_library(dll) {
            Ok(m) => m,
            Err(code) => return Self::fail(r3, 2, format!("cannot load {dll} (LoadLibrary error {code})")),
        };
        let Some(proc) = r3.get_proc_address(module, entry) else {
            r3.free_library(module);
            return Self::fail(r3, 3, format!("{dll} has no export named {entry}"));
        };
        // PASCAL: the first parameter is pushed first.
        let args = PascalArgs::encode(&[(2, 0), (2, module.0 as u32), (4, 0), (2, SW_SHOWNORMAL)]);
        let called = r3.call(proc, &args);
        r3.free_library(module);
        match called {
            Ok(_) => Step::exit(0),
            Err(e) => Self::fail(r3, 4, format!("the call of {dll},{entry} was refused: {e}")),
        }
    }
}
