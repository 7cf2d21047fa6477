//! How the machine has failed so far: the fatal error that stopped it
//! (the first one wins), how many violations were reported, and the last
//! error a plugin returned or panicked with (for reports such as a refused
//! reload's).

use std::cell::{Cell, RefCell};

use crate::vmm::ids::InstanceId;

/// Why the machine stopped abnormally: the fatal error and the device
/// that caused it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct FatalInfo {
    pub(crate) message: String,
    pub(crate) device: Option<String>,
}

#[derive(Default)]
pub(crate) struct Failures {
    fatal: RefCell<Option<FatalInfo>>,
    /// `fatal` is set (a fast check for the run loop).
    fatal_flag: Cell<bool>,
    violations: Cell<u64>,
    last_plugin_error: RefCell<Option<(InstanceId, String)>>,
}

impl Failures {
    #[inline]
    pub(crate) fn is_fatal(&self) -> bool {
        self.fatal_flag.get()
    }

    pub(crate) fn fatal(&self) -> Option<FatalInfo> {
        self.fatal.borrow().clone()
    }

    /// Record the fatal error; `false` (and nothing changes) when one was
    /// recorded before.
    pub(crate) fn set_fatal(&self, info: FatalInfo) -> bool {
        if self.fatal_flag.replace(true) {
            return false;
        }
        *self.fatal.borrow_mut() = Some(info);
        true
    }

    pub(crate) fn count_violation(&self) {
        self.violations.set(self.violations.get() + 1);
    }

    pub(crate) fn violation_count(&self) -> u64 {
        self.violations.get()
    }

    pub(crate) fn note_plugin_error(&self, instance: InstanceId, message: String) {
        *self.last_plugin_error.borrow_mut() = Some((instance, message));
    }

    pub(crate) fn forget_plugin_error(&self) {
        *self.last_plugin_error.borrow_mut() = None;
    }

    /// What `instance` said when it last failed, if it was the last to fail.
    pub(crate) fn plugin_error_of(&self, instance: InstanceId) -> Option<String> {
        self.last_plugin_error.borrow().as_ref().filter(|(i, _)| *i == instance).map(|(_, m)| m.clone())
    }
}
