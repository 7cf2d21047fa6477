//! The plugin calls on the host stack: the innermost call's context and
//! instance (what every service's context rule checks), how many of them
//! run at interrupt time (`Get_VMM_Reenter_Count`), how deep the stack is
//! (bounded by `MAX_CALL_DEPTH`), and what kind of call is running (a
//! control message being sent, a ring-3 call made like an ISR, a VMM
//! call-back).

use std::cell::Cell;

use crate::vmm::context::Context;
use crate::vmm::ids::InstanceId;

/// One plugin call: its execution context and instance.
pub(crate) type Frame = (Context, InstanceId);

#[derive(Default)]
pub(crate) struct CallStack {
    /// The innermost call (`None` outside any); the outer ones are saved on
    /// the host stack by [`CallStack::enter`].
    frame: Cell<Option<Frame>>,
    /// How many of the calls on the stack run at interrupt time.
    interrupt_frames: Cell<u32>,
    /// Plugin calls on the stack now.
    depth: Cell<u32>,
    /// Ring-3 calls on the stack that run like an ISR (KB Q72899).
    isr_depth: Cell<u32>,
    /// VMM call-backs running now.
    call_backs: Cell<u32>,
    /// The control message being sent, if any.
    message: Cell<Option<u32>>,
}

impl CallStack {
    /// The context of the innermost call (`Control` outside any).
    #[inline]
    pub(crate) fn context(&self) -> Context {
        self.frame.get().map_or(Context::Control, |f| f.0)
    }

    /// The instance of the innermost call.
    #[inline]
    pub(crate) fn caller(&self) -> Option<InstanceId> {
        self.frame.get().map(|f| f.1)
    }

    /// Whether no plugin call is on the stack.
    pub(crate) fn is_empty(&self) -> bool {
        self.frame.get().is_none()
    }

    /// Make a call of `instance` in `context` the innermost; returns the
    /// frame to give back to [`CallStack::leave`].
    #[inline]
    pub(crate) fn enter(&self, context: Context, instance: InstanceId) -> Option<Frame> {
        if context == Context::Interrupt {
            self.interrupt_frames.set(self.interrupt_frames.get() + 1);
        }
        self.frame.replace(Some((context, instance)))
    }

    /// End the innermost call, making `outer` (from [`CallStack::enter`])
    /// innermost again.
    #[inline]
    pub(crate) fn leave(&self, outer: Option<Frame>) {
        if self.context() == Context::Interrupt {
            self.interrupt_frames.set(self.interrupt_frames.get() - 1);
        }
        self.frame.set(outer);
    }

    /// `Get_VMM_Reenter_Count`: the calls on the stack made at interrupt
    /// time.
    pub(crate) fn reenter_count(&self) -> u32 {
        self.interrupt_frames.get()
    }

    /// How many plugin calls are on the stack.
    #[inline]
    pub(crate) fn depth(&self) -> u32 {
        self.depth.get()
    }

    /// Run `f` one plugin call deeper.
    #[inline]
    pub(crate) fn deeper<T>(&self, f: impl FnOnce() -> T) -> T {
        let depth = self.depth.get();
        self.depth.set(depth + 1);
        let r = f();
        self.depth.set(depth);
        r
    }

    /// Run `f` as a ring-3 call made like an ISR when `isr` is set.
    pub(crate) fn as_isr<T>(&self, isr: bool, f: impl FnOnce() -> T) -> T {
        let add = u32::from(isr);
        self.isr_depth.set(self.isr_depth.get() + add);
        let r = f();
        self.isr_depth.set(self.isr_depth.get() - add);
        r
    }

    /// Whether a ring-3 call made like an ISR is on the stack.
    pub(crate) fn in_isr(&self) -> bool {
        self.isr_depth.get() > 0
    }

    /// Run `f` as a VMM call-back.
    pub(crate) fn call_back<T>(&self, f: impl FnOnce() -> T) -> T {
        self.call_backs.set(self.call_backs.get() + 1);
        let r = f();
        self.call_backs.set(self.call_backs.get() - 1);
        r
    }

    /// Whether a VMM call-back is running.
    pub(crate) fn in_call_back(&self) -> bool {
        self.call_backs.get() > 0
    }

    /// Run `f` while sending the control message `message`.
    pub(crate) fn sending<T>(&self, message: u32, f: impl FnOnce() -> T) -> T {
        let previous = self.message.replace(Some(message));
        let r = f();
        self.message.set(previous);
        r
    }

    /// The control message being sent, if any.
    pub(crate) fn message(&self) -> Option<u32> {
        self.message.get()
    }
}
