//! What stops or paces the run loop: a stop request (`[machine] until`,
//! `Machine::run_for`, a full trace file), a signal from outside
//! (`Machine::interrupt_on`), and `--realtime` pacing, which applies to the
//! top-level loop only and wakes for a signal or a rebuilt plugin.

use std::cell::{Cell, OnceCell, RefCell};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant as WallInstant;

#[derive(Default)]
pub(crate) struct RunControl {
    /// Stop the run loop at its next check.
    stop: Cell<bool>,
    /// Set from outside the machine (a signal): stop at the next safe point.
    interrupt: Option<Arc<AtomicBool>>,
    /// The top-level run loop is running (pacing applies there only).
    top_level: Cell<bool>,
    /// The trace file reached its limit: the run stops.
    trace_full: Cell<bool>,
    /// Wall-clock start, for `--realtime`.
    wall_start: OnceCell<WallInstant>,
    /// Set while a watched run paces virtual time: a rebuilt plugin is ready.
    rebuilt: RefCell<Option<Arc<AtomicBool>>>,
}

impl RunControl {
    #[inline]
    pub(crate) fn stop_requested(&self) -> bool {
        self.stop.get()
    }

    pub(crate) fn request_stop(&self) {
        self.stop.set(true);
    }

    pub(crate) fn clear_stop(&self) {
        self.stop.set(false);
    }

    /// Whether the machine was asked from outside to stop (a signal).
    #[inline]
    pub(crate) fn interrupted(&self) -> bool {
        self.interrupt.as_ref().is_some_and(|f| f.load(Ordering::Relaxed))
    }

    pub(crate) fn interrupt_on(&mut self, flag: Arc<AtomicBool>) {
        self.interrupt = Some(flag);
    }

    /// Run `f` as the top-level loop (the one `--realtime` paces).
    pub(crate) fn top_level<T>(&self, f: impl FnOnce() -> T) -> T {
        self.top_level.set(true);
        let r = f();
        self.top_level.set(false);
        r
    }

    pub(crate) fn is_top_level(&self) -> bool {
        self.top_level.get()
    }

    pub(crate) fn trace_full(&self) -> bool {
        self.trace_full.get()
    }

    /// The trace file reached its limit: stop the run. `false` when it had
    /// already.
    pub(crate) fn note_trace_full(&self) -> bool {
        if self.trace_full.replace(true) {
            return false;
        }
        self.stop.set(true);
        true
    }

    /// The wall-clock instant virtual time zero is paced from.
    pub(crate) fn wall_start(&self) -> WallInstant {
        *self.wall_start.get_or_init(WallInstant::now)
    }

    /// While `flag` is set, a watched run's pacing wakes when it is raised.
    #[cfg(feature = "watch")]
    pub(crate) fn wake_on_rebuild(&self, flag: Option<Arc<AtomicBool>>) {
        *self.rebuilt.borrow_mut() = flag;
    }

    /// Whether pacing may be cut short (a rebuild flag or a signal is
    /// watched), and a test of whether it is now.
    pub(crate) fn pace_wakers(&self) -> Option<impl Fn() -> bool + '_> {
        let rebuilt = self.rebuilt.borrow().clone();
        if rebuilt.is_none() && self.interrupt.is_none() {
            return None;
        }
        Some(move || rebuilt.as_ref().is_some_and(|f| f.load(Ordering::Relaxed)) || self.interrupted())
    }
}
