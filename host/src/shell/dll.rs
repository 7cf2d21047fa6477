//! The 16-bit DLL services of appy time: `_SHELL_LoadLibrary`,
//! `_SHELL_GetProcAddress`, `_SHELL_FreeLibrary` and `_SHELL_CallDll`. They
//! run KERNEL's `LoadLibrary` and friends as the message server's task and
//! call exported procedures at ring 3 with the caller's argument bytes. A
//! panic in that ring-3 code is the message server faulting: appy time is
//! then unavailable for good.

use crate::machine::Core;
use crate::ring3::Target;
use crate::violation::Violation;
use crate::vmm::ids::InstanceId;

/// What `_SHELL_CallDll` and `_SHELL_GetProcAddress` call: an export by
/// name or ordinal, or (with no DLL) a raw 16:16 address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum DllProc {
    /// An export's name.
    Name(String),
    /// An export's ordinal (`MAKEINTRESOURCE`).
    Ordinal(u16),
    /// A 16:16 address (`lpszDll` 0).
    Address(u32),
}

impl Core {
    /// `_SHELL_LoadLibrary`: the module handle, or KERNEL's error (0-31).
    pub(crate) fn shell_load_library(&self, name: &str) -> u32 {
        self.server_call("_SHELL_LoadLibrary", || self.load_library(name))
    }

    /// `_SHELL_FreeLibrary`.
    pub(crate) fn shell_free_library(&self, hinstance: u32) {
        // A module handle is a 16-bit selector; anything wider names nothing.
        if let Ok(h) = u16::try_from(hinstance) {
            self.free_library(h);
        }
    }

    /// `_SHELL_GetProcAddress`: the export's 16:16 address, 0 if none.
    pub(crate) fn shell_get_proc_address(&self, hinstance: u32, proc_name: &DllProc) -> u32 {
        let Ok(h) = u16::try_from(hinstance) else { return 0 };
        match proc_name {
            DllProc::Name(n) => self.get_proc_address(h, n, 0),
            DllProc::Ordinal(o) => self.get_proc_address(h, "", *o),
            DllProc::Address(_) => 0,
        }
    }

    /// `_SHELL_CallDll`: load `dll`, link `proc_name`, call it with `args`
    /// (the stack image after the pushes), free the DLL. DX:AX; 0 on a link
    /// failure; 0-31 when the DLL did not load. With no DLL, `proc_name` is
    /// a raw 16:16 address.
    pub(crate) fn shell_call_dll(&self, dll: Option<&str>, proc_name: &DllProc, args: &[u8]) -> u32 {
        let Some(dll) = dll else {
            return match proc_name {
                DllProc::Address(target) => self.server_far_call(*target, args),
                // A name or ordinal needs a DLL to look it up in.
                _ => 0,
            };
        };
        let h = self.shell_load_library(dll);
        if h < 32 {
            return h;
        }
        let target = self.shell_get_proc_address(h, proc_name);
        let result = if target == 0 { 0 } else { self.server_far_call(target, args) };
        self.free_library(h as u16);
        result
    }

    /// Call the ring-3 procedure at `target` for the message server. The
    /// argument bytes must be what the procedure pops (`RETF n`), unless it
    /// pops nothing (a C procedure: the caller cleans up).
    fn server_far_call(&self, target: u32, args: &[u8]) -> u32 {
        const SERVICE: &str = "_SHELL_CallDll";
        let export = match self.ring3.borrow().resolve(target) {
            Target::Export { module, export } => Some((module, export)),
            _ => None,
        };
        if let Some((module, export)) = export {
            let (name, pops) = self.ring3.borrow().export_label(module, export);
            if pops != 0
                && pops != args.len()
                && self.violation(
                    Violation::CallDllArgs,
                    format!(
                        "{SERVICE}: cbArgs is {} but {name} pops {pops} bytes of arguments (RETF {pops}); the ring-3 \
                         stack would be left unbalanced",
                        args.len()
                    ),
                    Some(SERVICE),
                )
            {
                return 0;
            }
        }
        self.server_call(SERVICE, || self.ring3_far_call(target, args, false).unwrap_or(0))
    }

    /// Run ring-3 code on behalf of the message server: a module instance
    /// that panics during `f` (a `LibMain`, an export) faults the server.
    fn server_call<T>(&self, service: &'static str, f: impl FnOnce() -> T) -> T {
        let usable_before: Vec<bool> = self.instances.borrow().iter().map(|r| !r.failed).collect();
        let result = f();
        let faulted = {
            let instances = self.instances.borrow();
            let r3 = self.ring3.borrow();
            // Only ring-3 code is the server's own: a VxD that panics in an
            // API call made from it fails alone.
            let ring3_code = |i: usize| r3.is_ring3_instance(InstanceId::from_index(i));
            instances
                .iter()
                .enumerate()
                .find(|(i, r)| r.failed && usable_before.get(*i).copied().unwrap_or(true) && ring3_code(*i))
                .map(|(_, r)| r.name.clone())
        };
        if let Some(module) = faulted {
            self.message_server_fault(
                &module,
                service,
                format!("{module} panicked in ring-3 code the message server ran for {service}"),
            );
        }
        result
    }
}
