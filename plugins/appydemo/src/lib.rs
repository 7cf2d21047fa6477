//! APPYDEMO: an example VxD that uses appy time the way a 1995 driver did.
//!
//! At `Device_Init` Windows is not running yet, so it cannot call 16-bit
//! code; it asks SHELL to call it back at appy time
//! (`_SHELL_CallAtAppyTime`), with a time-out in case appy time never
//! comes. In the callback it loads a 16-bit DLL, links and calls a
//! function (`_SHELL_LoadLibrary`, `_SHELL_GetProcAddress`,
//! `_SHELL_CallDll`), hands the DLL a string from the message server's
//! local heap (`_SHELL_LocalAllocEx`), and opens a document
//! (`_SHELL_ShellExecute`). Every failure is handled and reported with
//! `Out_Debug_String`: appy time unavailable or timed out, a DLL that will
//! not load, a missing export, a full local heap, a document nothing opens.
//!
//! Settings (`[APPYDEMO]` in the manifest): `Dll` (default `APPYDLL.DLL`),
//! `Document` (default `README.TXT`), `TimeoutMs` (default 5000).

use core::cell::{Cell, RefCell};

use vmm_plugin_api::prelude::*;

/// The device.
pub struct AppyDemo {
    dll: RefCell<String>,
    document: RefCell<String>,
    timeout_ms: Cell<u32>,
    /// The pending appy-time event (0: none).
    pending: Cell<u32>,
}

impl AppyDemo {
    fn say(&self, vmm: &Vmm<'_>, text: &str) {
        info!("{text}");
        vmm.out_debug_string(&format!("APPYDEMO: {text}"));
    }

    /// Device_Init: read the settings, ask for appy time.
    fn init(&self, vmm: &Vmm<'_>) {
        let string = |key: &str, default: &str| {
            vmm.get_profile_string(Some("APPYDEMO"), key)
                .ok()
                .flatten()
                .map_or_else(|| default.to_string(), |e| e.value)
        };
        *self.dll.borrow_mut() = string("Dll", "APPYDLL.DLL");
        *self.document.borrow_mut() = string("Document", "README.TXT");
        let timeout = vmm.get_profile_decimal_int(Some("APPYDEMO"), "TimeoutMs", 5000).map_or(5000, |p| p.value);
        self.timeout_ms.set(timeout.max(0) as u32);

        let shell = vmm.shell();
        // During init this is 0: Windows has not started. The request still
        // counts; SHELL keeps it until appy time is available.
        if shell.query_appy_time_available() == 0 {
            self.say(vmm, "appy time is not available yet; the request waits for it");
        }
        match shell.call_at_appy_time(CAAFL_TIMEOUT, self.timeout_ms.get(), |dev: &AppyDemo, vmm, appy| {
            dev.at_appy_time(vmm, appy)
        }) {
            Some(h) => self.pending.set(h.0),
            None => self.say(vmm, "_SHELL_CallAtAppyTime failed (out of memory): no appy time for us"),
        }
    }

    /// The appy-time callback.
    fn at_appy_time(&self, vmm: &Vmm<'_>, appy: AppyTime) {
        // The handle is dead once the callback runs: forget it first.
        self.pending.set(0);
        if appy.timed_out() {
            self.say(
                vmm,
                &format!("appy time did not come within {} ms (timed out): nothing to do", self.timeout_ms.get()),
            );
            return;
        }
        let shell = vmm.shell();
        if shell.query_appy_time_available() & QAAFL_APPYNOW == 0 {
            self.say(vmm, "called back, but it is not appy time: giving up");
            return;
        }
        self.call_the_dll(vmm);
        self.open_the_document(vmm);
    }

    /// Load the DLL, call `Multiply` through its address and `Announce`
    /// through `_SHELL_CallDll`, free the DLL.
    fn call_the_dll(&self, vmm: &Vmm<'_>) {
        let shell = vmm.shell();
        let dll = self.dll.borrow().clone();
        let module = match shell.load_library(&dll) {
            Ok(h) => h,
            Err(code) => {
                self.say(vmm, &format!("{dll} did not load (error {code}); skipping the DLL calls"));
                return;
            }
        };
        match shell.get_proc_address(module, "Multiply") {
            Some(multiply) => {
                // PASCAL pushes left to right: a first.
                let product = shell.call_dll_address(multiply, &PascalArgs::encode(&[(2, 6), (2, 7)]));
                self.say(vmm, &format!("{dll}!Multiply(6, 7) = {product}"));
            }
            None => self.say(vmm, &format!("{dll} has no Multiply export")),
        }
        let text = b"Hello from APPYDEMO, at appy time\0";
        match shell.local_alloc_ex(LMEM_STRING, 0, Some(text)) {
            Some(block) => {
                let length = shell.call_dll(&dll, "Announce", &PascalArgs::encode(&[(4, block.address.to_u32())]));
                self.say(vmm, &format!("{dll}!Announce read {length} characters at {}", block.address));
                if !shell.local_free(block.address) {
                    self.say(vmm, "the local block could not be freed");
                }
            }
            None => self.say(vmm, "the message server's local heap is full"),
        }
        shell.free_library(module);
    }

    /// Open the document with the program it is associated with.
    fn open_the_document(&self, vmm: &Vmm<'_>) {
        let document = self.document.borrow().clone();
        match vmm.shell().shell_execute(&ShexPacket::open(&document)) {
            Ok(h) => self.say(vmm, &format!("opened {document} (module {:#06x})", h.0)),
            Err(code) => {
                let why = match code {
                    SE_ERR_FNF => "file not found",
                    SE_ERR_NOASSOC => "no program is associated with it",
                    SE_ERR_OOM => "out of memory",
                    ERROR_BAD_FORMAT => "not a program",
                    0 => "refused (see the violation)",
                    _ => "error",
                };
                self.say(vmm, &format!("ShellExecute({document}) failed: {code} ({why})"));
            }
        }
    }
}

impl VxD for AppyDemo {
    const DEVICE: Device = Device::new("APPYDEMO").version(1, 0);

    fn create(_: &Vmm<'_>) -> Result<Self, String> {
        Ok(AppyDemo {
            dll: RefCell::new(String::new()),
            document: RefCell::new(String::new()),
            timeout_ms: Cell::new(0),
            pending: Cell::new(0),
        })
    }

    fn control(&self, vmm: &Vmm<'_>, msg: ControlMessage) -> Carry {
        match msg.message {
            DEVICE_INIT => self.init(vmm),
            SYS_VM_TERMINATE => {
                // Windows is going: an event that never ran will not run now.
                let pending = self.pending.replace(0);
                if pending != 0 {
                    self.say(vmm, "appy time never came; cancelling the request");
                    let _ = vmm.shell().cancel_appy_time_event(AppyHandle(pending));
                }
            }
            _ => {}
        }
        Carry::Clear
    }
}

declare_virtual_device!(AppyDemo);
