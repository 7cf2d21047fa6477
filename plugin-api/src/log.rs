//! The logging bridge. A plugin links its own copy of `tracing`, whose
//! global dispatcher the host's subscriber never sees. The SDK installs a
//! small subscriber in the plugin's copy that forwards every event to the
//! host's `log` service, so `tracing::info!` in a device shows up in the
//! host's output (and honours `RUST_LOG` there). An event above the level
//! the host shows is not even formatted: the bridge asks the host for its
//! current level each time (a flag read), since a test may install a more
//! verbose subscriber later.

use std::fmt::Write as _;
use std::sync::Once;

use abi_stable::std_types::RStr;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

static BRIDGE: Once = Once::new();

/// Install the forwarding subscriber once per plugin copy.
pub(crate) fn install_bridge() {
    BRIDGE.call_once(|| {
        // A plugin that installed its own subscriber keeps it.
        let _ = tracing::subscriber::set_global_default(Bridge);
    });
}

/// Map a `tracing` level to the host's numeric level (1 error ... 5 trace).
pub(crate) fn level_number(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 1,
        Level::WARN => 2,
        Level::INFO => 3,
        Level::DEBUG => 4,
        Level::TRACE => 5,
    }
}

struct Bridge;

struct Fields(String);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if !self.0.is_empty() {
            self.0.push(' ');
        }
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        } else {
            let _ = write!(self.0, "{}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            if !self.0.is_empty() {
                self.0.push(' ');
            }
            self.0.push_str(value);
        } else {
            self.record_debug(field, &value);
        }
    }
}

impl Subscriber for Bridge {
    fn register_callsite(&self, _metadata: &'static Metadata<'static>) -> tracing::subscriber::Interest {
        // The host's level can change, so ask at every event.
        tracing::subscriber::Interest::sometimes()
    }

    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        let Some(cx) = crate::guard::current_cx() else {
            // Outside any host call there is nobody to tell.
            return false;
        };
        match cx.services.log_level() {
            Some(level) => level_number(metadata.level()) <= level(cx),
            None => true,
        }
    }

    fn new_span(&self, _span: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }

    fn record(&self, _span: &Id, _values: &Record<'_>) {}

    fn record_follows_from(&self, _span: &Id, _follows: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let Some(cx) = crate::guard::current_cx() else {
            // Outside any host call there is nobody to tell.
            return;
        };
        let mut fields = Fields(String::new());
        event.record(&mut fields);
        let meta = event.metadata();
        (cx.services.log())(cx, level_number(meta.level()), RStr::from_str(meta.target()), RStr::from_str(&fields.0));
    }

    fn enter(&self, _span: &Id) {}

    fn exit(&self, _span: &Id) {}
}
