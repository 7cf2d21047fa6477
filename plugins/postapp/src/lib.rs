//! POSTAPP.EXE: the Windows application that receives VPOSTD's messages.
//!
//! It creates a window, loads POSTHOST.DLL and asks it to register the
//! window with VPOSTD. Each `WM_USER + 0x100` that arrives came from a VM:
//! wParam is the VM's ID, lParam the poster's sequence number. The window
//! procedure counts messages per VM and tells the user which VM posted
//! with a system-modal message box (the machine answers it, and the trace
//! records it as a `message_box`).
//!
//! Command line (space-separated, all optional):
//!
//! * `queue=N`: `SetMessageQueue(N)` before creating the window (Windows'
//!   default is 8 messages).
//! * `busy=MS`: after handling each message, work for MS milliseconds
//!   before the next `GetMessage` (so the queue can fill up).
//! * `register-after=MS`: wait MS milliseconds before registering.
//! * `quit-after=N`: close the window after N messages.
//! * `moveable`: register POSTHOST's MOVEABLE callback (wrong on purpose:
//!   KB Q72899 requires a FIXED segment).
//! * `quiet`: print the line instead of showing a message box.
//!
//! Exit code 0 after the window closes; 1 if POSTHOST.DLL cannot be
//! loaded or VPOSTD is not installed; 2 for a bad command line.

use core::cell::{Cell, RefCell};
use std::collections::BTreeMap;

use vmm_plugin_api::prelude::*;

/// The message VPOSTD delivers: `WM_USER + 0x100`.
pub const WM_VPOSTD: u16 = WM_USER + 0x100;
/// `RegisterPostWindow`'s flag selecting the MOVEABLE callback.
const REGISTER_MOVEABLE: u16 = 0x0001;

/// What the command line asks for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Options {
    /// `queue=N`.
    pub queue: Option<u32>,
    /// `busy=MS`.
    pub busy_ms: u32,
    /// `register-after=MS`.
    pub register_after_ms: u32,
    /// `quit-after=N`.
    pub quit_after: Option<u32>,
    /// `moveable`.
    pub moveable: bool,
    /// `quiet`.
    pub quiet: bool,
}

impl Options {
    /// Parse a command line; the error names the bad word.
    pub fn parse(args: &str) -> Result<Options, String> {
        let mut o = Options::default();
        for word in args.split_whitespace() {
            let (key, value) = match word.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (word, None),
            };
            let number = |what: &str| -> Result<u32, String> {
                let v = value.ok_or_else(|| format!("`{key}` needs a value: {key}={what}"))?;
                let v = v.strip_suffix("ms").unwrap_or(v);
                v.parse().map_err(|_| format!("`{word}`: {what} must be a whole number"))
            };
            match key {
                "queue" => {
                    let n = number("N")?;
                    if !(1..=120).contains(&n) {
                        return Err(format!("`{word}`: a message queue holds 1 to 120 messages"));
                    }
                    o.queue = Some(n);
                }
                "busy" => o.busy_ms = number("MS")?,
                "register-after" => o.register_after_ms = number("MS")?,
                "quit-after" => o.quit_after = Some(number("N")?),
                "moveable" if value.is_none() => o.moveable = true,
                "quiet" if value.is_none() => o.quiet = true,
                _ => {
                    return Err(format!(
                        "unknown argument `{word}` (expected queue=N, busy=MS, register-after=MS, quit-after=N, \
                         moveable, quiet)"
                    ));
                }
            }
        }
        Ok(o)
    }
}

/// One run of POSTAPP.
pub struct PostApp {
    options: RefCell<Options>,
    hwnd: Cell<Hwnd>,
    posthost: Cell<Option<HInstance>>,
    /// Waiting for `register-after` to pass.
    register_pending: Cell<bool>,
    /// Messages received per VM ID.
    per_vm: RefCell<BTreeMap<u16, u32>>,
    total: Cell<u32>,
}

impl PostApp {
    /// Load POSTHOST and register the window; `false` (after telling the
    /// user) if that is impossible.
    fn register(&self, r3: &Ring3<'_>) -> bool {
        let hwnd = self.hwnd.get();
        let lib = match r3.load_library("POSTHOST") {
            Ok(h) => h,
            Err(code) => {
                self.complain(r3, &format!("cannot load POSTHOST.DLL (LoadLibrary error {code})"));
                return false;
            }
        };
        self.posthost.set(Some(lib));
        let flags = if self.options.borrow().moveable { REGISTER_MOVEABLE } else { 0 };
        let registered = r3
            .get_proc_address(lib, "RegisterPostWindow")
            .map(|f| r3.call(f, &PascalArgs::encode(&[(2, hwnd.0 as u32), (2, flags as u32)])))
            .is_some_and(|r| r.is_ok_and(|v| v as u16 != 0));
        if !registered {
            self.complain(r3, "VPOSTD.386 is not installed: add it to [386Enh] device");
            r3.free_library(lib);
            self.posthost.set(None);
            return false;
        }
        r3.print(&format!("window {:#06x} registered with VPOSTD", hwnd.0));
        true
    }

    fn unregister(&self, r3: &Ring3<'_>) {
        let Some(lib) = self.posthost.take() else { return };
        if let Some(f) = r3.get_proc_address(lib, "UnregisterPostWindow") {
            let _ = r3.call(f, &PascalArgs::encode(&[(2, self.hwnd.get().0 as u32)]));
        }
        r3.free_library(lib);
    }

    fn complain(&self, r3: &Ring3<'_>, text: &str) {
        r3.print(text);
        r3.message_box(None, text, "POSTAPP", MB_OK | MB_ICONHAND);
    }

    /// The line the window shows for one message. (The window procedure
    /// runs once per message, so the text is built without the formatting
    /// machinery.)
    pub fn describe(vm_id: u16, lparam: u32) -> String {
        let mut s = String::with_capacity(40);
        s.push_str("VM ");
        push_decimal(&mut s, vm_id as u32);
        s.push_str(" posted message ");
        push_decimal(&mut s, lparam);
        s
    }

    fn received(&self, r3: &Ring3<'_>, hwnd: Hwnd, wparam: u16, lparam: u32) {
        *self.per_vm.borrow_mut().entry(wparam).or_insert(0) += 1;
        let total = self.total.get() + 1;
        self.total.set(total);
        let text = Self::describe(wparam, lparam);
        let (quiet, quit_after) = {
            let o = self.options.borrow();
            (o.quiet, o.quit_after)
        };
        if quiet {
            r3.print(&text);
        } else {
            r3.message_box(Some(hwnd), &text, "POSTAPP", MB_OK | MB_ICONASTERISK | MB_SYSTEMMODAL);
        }
        if quit_after == Some(total) {
            r3.post_message(hwnd, WM_CLOSE, 0, 0);
        }
    }

    fn summary(&self) -> String {
        let per_vm: Vec<String> = self.per_vm.borrow().iter().map(|(vm, n)| format!("VM {vm}: {n}")).collect();
        format!("{} messages received ({})", self.total.get(), per_vm.join(", "))
    }
}

/// Append `n` in decimal.
fn push_decimal(s: &mut String, mut n: u32) {
    let mut digits = [0u8; 10];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    // ASCII digits: always UTF-8.
    s.push_str(core::str::from_utf8(&digits[i..]).unwrap_or_default());
}

impl Module for PostApp {
    const MODULE: ModuleDef = ModuleDef::windows_app("POSTAPP")
        .segments(&[Segment::moveable("_TEXT")])
        .exports(&[Export::new("PostAppWndProc", 1, 0, 10)]);

    fn create(_r3: &Ring3<'_>) -> Result<Self, String> {
        Ok(PostApp {
            options: RefCell::new(Options::default()),
            hwnd: Cell::new(Hwnd(0)),
            posthost: Cell::new(None),
            register_pending: Cell::new(false),
            per_vm: RefCell::new(BTreeMap::new()),
            total: Cell::new(0),
        })
    }

    fn start(&self, r3: &Ring3<'_>, args: &str) -> Step {
        let options = match Options::parse(args) {
            Ok(o) => o,
            Err(e) => {
                r3.print(&e);
                return Step::exit(2);
            }
        };
        if let Some(n) = options.queue
            && !r3.set_message_queue(n)
        {
            r3.print(&format!("SetMessageQueue({n}) failed"));
            return Step::exit(1);
        }
        let register_after = options.register_after_ms;
        *self.options.borrow_mut() = options;
        let Some(hwnd) = r3.create_window("PostAppWindow", "VPOSTD messages", 1, None) else {
            r3.print("CreateWindow failed");
            return Step::exit(1);
        };
        self.hwnd.set(hwnd);
        if register_after > 0 {
            self.register_pending.set(true);
            return Step::sleep(register_after);
        }
        if !self.register(r3) {
            r3.destroy_window(hwnd);
            return Step::exit(1);
        }
        Step::get_message()
    }

    fn resume(&self, r3: &Ring3<'_>, wake: Wake) -> Step {
        match wake {
            Wake::Message(m) if m.message == WM_QUIT => Step::exit(m.wparam as u32),
            Wake::Message(m) => {
                r3.dispatch_message(&m);
                let busy = self.options.borrow().busy_ms;
                if busy > 0 && m.message == WM_VPOSTD { Step::sleep(busy) } else { Step::get_message() }
            }
            Wake::Slept if self.register_pending.replace(false) => {
                if self.register(r3) {
                    Step::get_message()
                } else {
                    r3.destroy_window(self.hwnd.get());
                    Step::exit(1)
                }
            }
            Wake::Slept | Wake::Yielded => Step::get_message(),
        }
    }

    /// The window procedure.
    fn call(&self, r3: &Ring3<'_>, ordinal: u16, args: PascalArgs<'_>) -> u32 {
        if ordinal != 1 {
            return 0;
        }
        let [hwnd, msg, wparam, lparam] = args.params([2, 2, 2, 4]);
        let (hwnd, msg, wparam) = (Hwnd(hwnd as u16), msg as u16, wparam as u16);
        match msg {
            WM_VPOSTD => {
                self.received(r3, hwnd, wparam, lparam);
                0
            }
            WM_CLOSE => {
                r3.destroy_window(hwnd);
                0
            }
            WM_DESTROY => {
                self.unregister(r3);
                r3.print(&self.summary());
                r3.post_quit_message(0);
                0
            }
            _ => r3.def_window_proc(hwnd, msg, wparam, lparam),
        }
    }
}

declare_module!(PostApp);

#[cfg(test)]
mod tests {
    use super::Options;

    #[test]
    fn parses_every_option() {
        let o = Options::parse("queue=4 busy=250ms register-after=100 quit-after=6 moveable quiet").unwrap();
        assert_eq!(
            o,
            Options {
                queue: Some(4),
                busy_ms: 250,
                register_after_ms: 100,
                quit_after: Some(6),
                moveable: true,
                quiet: true
            }
        );
        assert_eq!(Options::parse("").unwrap(), Options::default());
    }

    #[test]
    fn the_line_names_the_vm_and_the_message() {
        assert_eq!(super::PostApp::describe(2, 1), "VM 2 posted message 1");
        assert_eq!(super::PostApp::describe(65535, u32::MAX), "VM 65535 posted message 4294967295");
        assert_eq!(super::PostApp::describe(0, 0), "VM 0 posted message 0");
    }

    #[test]
    fn bad_words_are_named() {
        assert!(Options::parse("queue=0").unwrap_err().contains("queue=0"));
        assert!(Options::parse("busy=soon").unwrap_err().contains("busy=soon"));
        assert!(Options::parse("busy").unwrap_err().contains("needs a value"));
        assert!(Options::parse("loud").unwrap_err().contains("unknown argument `loud`"));
        assert!(Options::parse("quiet=1").unwrap_err().contains("unknown argument `quiet=1`"));
    }
}
