//! POSTDOS.EXE: a DOS program that posts messages to Windows through
//! VPOSTD.
//!
//! It asks Windows for its VM's ID (INT 2Fh AX=1683h), finds VPOSTD's V86
//! API (INT 2Fh AX=1684h BX=4321h) and calls it once per message with
//! BX = wParam = the VM ID and DX:AX = lParam = the message's sequence
//! number (1, 2, ...). When VPOSTD answers with CF set, POSTDOS reports the
//! failure and goes on with the next message.
//!
//! Command line (space-separated, all optional):
//!
//! * `count=N`: messages to post (default 5).
//! * `interval=MS`: wait between messages (default 250 ms; `0` yields to
//!   the other VMs between posts instead of waiting).
//!
//! Exit code 0 when every message was accepted, 1 when VPOSTD is not
//! installed, 2 for a bad command line, 3 when some posts were refused.

use core::cell::Cell;

use vmm_plugin_api::prelude::*;

/// VPOSTD's device ID.
pub const VPOSTD_DEVICE_ID: u16 = 0x4321;

/// What the command line asks for.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// `count=N`.
    pub count: u32,
    /// `interval=MS`.
    pub interval_ms: u32,
}

impl Default for Options {
    fn default() -> Self {
        Options { count: 5, interval_ms: 250 }
    }
}

impl Options {
    /// Parse a command line; the error names the bad word.
    pub fn parse(args: &str) -> Result<Options, String> {
        let mut o = Options::default();
        for word in args.split_whitespace() {
            let Some((key, value)) = word.split_once('=') else {
                return Err(format!("unknown argument `{word}` (expected count=N, interval=MS)"));
            };
            let number = |what: &str| -> Result<u32, String> {
                let ms = value.strip_suffix("ms");
                let (digits, scale) = match (ms, value.strip_suffix('s')) {
                    (Some(d), _) => (d, 1),
                    (None, Some(d)) if key == "interval" => (d, 1000),
                    _ => (value, 1),
                };
                digits
                    .parse::<u32>()
                    .ok()
                    .and_then(|n| n.checked_mul(scale))
                    .ok_or_else(|| format!("`{word}`: {what} must be a whole number"))
            };
            match key {
                "count" => o.count = number("N")?,
                "interval" => o.interval_ms = number("MS")?,
                _ => return Err(format!("unknown argument `{word}` (expected count=N, interval=MS)")),
            }
        }
        Ok(o)
    }
}

/// One run of POSTDOS.
pub struct PostDos {
    options: Cell<Options>,
    entry: Cell<FarPtr>,
    vm_id: Cell<u16>,
    /// The next sequence number.
    next: Cell<u32>,
    refused: Cell<u32>,
}

impl PostDos {
    /// Post the next message; then wait, or finish.
    fn post_next(&self, r3: &Ring3<'_>) -> Step {
        let o = self.options.get();
        let seq = self.next.get();
        if seq > o.count {
            return self.finish(r3);
        }
        self.next.set(seq + 1);
        let regs = r3.regs();
        regs.set_bx(self.vm_id.get());
        regs.set_dx((seq >> 16) as u16);
        regs.set_ax(seq as u16);
        let called = r3.call(self.entry.get(), &[]);
        if called.is_err() || regs.carry() {
            self.refused.set(self.refused.get() + 1);
            let why = match regs.ax() {
                _ if called.is_err() => "the call failed".to_string(),
                1 => "no Windows application has registered with VPOSTD".to_string(),
                2 => "too many messages are waiting in VPOSTD".to_string(),
                code => format!("error {code}"),
            };
            r3.print(&format!("message {seq} refused (CF set): {why}"));
        }
        if seq == o.count {
            return self.finish(r3);
        }
        if o.interval_ms == 0 { Step::yield_now() } else { Step::sleep(o.interval_ms) }
    }

    fn finish(&self, r3: &Ring3<'_>) -> Step {
        let o = self.options.get();
        let refused = self.refused.get();
        r3.print(&format!("VM {} posted {} messages, {} refused", self.vm_id.get(), o.count - refused, refused));
        Step::exit(if refused == 0 { 0 } else { 3 })
    }
}

impl Module for PostDos {
    const MODULE: ModuleDef = ModuleDef::dos_program("POSTDOS").segments(&[Segment::moveable("_TEXT")]);

    fn create(_r3: &Ring3<'_>) -> Result<Self, String> {
        Ok(PostDos {
            options: Cell::new(Options::default()),
            entry: Cell::new(FarPtr::NULL),
            vm_id: Cell::new(0),
            next: Cell::new(1),
            refused: Cell::new(0),
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
        self.options.set(options);
        let regs = r3.regs();
        regs.set_ax(0x1683);
        if r3.int(0x2F).is_err() {
            r3.print("this program requires Windows in 386 enhanced mode");
            return Step::exit(1);
        }
        self.vm_id.set(regs.bx());
        regs.set_ax(0x1684);
        regs.set_bx(VPOSTD_DEVICE_ID);
        regs.set_es_raw(0);
        regs.set_di(0);
        let found = r3.int(0x2F).is_ok();
        let entry = FarPtr::new(regs.es() as u16, regs.di());
        if !found || entry.is_null() {
            r3.print("VPOSTD.386 is not installed");
            return Step::exit(1);
        }
        self.entry.set(entry);
        r3.print(&format!(
            "VM {} posting {} messages every {} ms",
            self.vm_id.get(),
            options.count,
            options.interval_ms
        ));
        if options.count == 0 {
            return self.finish(r3);
        }
        self.post_next(r3)
    }

    fn resume(&self, r3: &Ring3<'_>, _wake: Wake) -> Step {
        self.post_next(r3)
    }
}

declare_module!(PostDos);

#[cfg(test)]
mod tests {
    use super::Options;

    #[test]
    fn parses_counts_and_intervals() {
        assert_eq!(Options::parse("").unwrap(), Options::default());
        assert_eq!(Options::parse("count=3 interval=0").unwrap(), Options { count: 3, interval_ms: 0 });
        assert_eq!(Options::parse("interval=1s").unwrap().interval_ms, 1000);
        assert_eq!(Options::parse("interval=40ms").unwrap().interval_ms, 40);
    }

    #[test]
    fn bad_words_are_named() {
        assert!(Options::parse("count=many").unwrap_err().contains("count=many"));
        assert!(Options::parse("fast").unwrap_err().contains("unknown argument `fast`"));
        assert!(Options::parse("speed=2").unwrap_err().contains("speed=2"));
        assert!(Options::parse("count=2s").unwrap_err().contains("count=2s"));
    }
}
