//! APPYVIEW: a Windows application that "opens" the document on its
//! command line, the program `[programs]` associates with `.txt` files in
//! the APPYDEMO example. It prints what it was asked to open and exits.

use vmm_plugin_api::prelude::*;

/// The viewer; it keeps no state.
pub struct AppyView;

impl Module for AppyView {
    const MODULE: ModuleDef = ModuleDef::windows_app("APPYVIEW");

    fn create(_: &Ring3<'_>) -> Result<Self, String> {
        Ok(AppyView)
    }

    fn start(&self, r3: &Ring3<'_>, args: &str) -> Step {
        match args.strip_prefix("/p ") {
            Some(file) => r3.print(&format!("APPYVIEW prints {file}")),
            None => r3.print(&format!("APPYVIEW opened {args}")),
        }
        Step::exit(0)
    }
}

declare_module!(AppyView);
