//! The machine's side of simulated hardware interrupts: registering a
//! source, requesting it, and taking the requests at service-call
//! boundaries and scheduler steps, with the handler run at interrupt time.

use vmm_plugin_api::abi::{Regs, VmmError};

use crate::machine::{Core, Phase};
use crate::trace::TraceEvent;
use crate::violation::Violation;
use crate::vmm::callback::Callback;
use crate::vmm::context::Context;
use crate::vmm::irq::{IrqHandle, RegisterError};
use crate::vmm::timers::TimerKind;

impl Core {
    /// Register a source named `name`.
    pub(crate) fn register_interrupt(&self, name: &str, handler: Callback) -> Result<IrqHandle, VmmError> {
        self.irqs.register(name, handler).map_err(|e| match e {
            RegisterError::Duplicate => self.refuse(
                Violation::DuplicateIrqName,
                format!("an interrupt source named `{name}` is already registered"),
                Some("register_interrupt"),
            ),
            RegisterError::Full => VmmError::OUT_OF_MEMORY,
        })
    }

    /// Request a source: it is taken at the next service-call boundary or
    /// scheduler step.
    pub(crate) fn request_interrupt(&self, irq: IrqHandle) -> Result<(), VmmError> {
        if self.irqs.request(irq) { Ok(()) } else { Err(VmmError::INVALID_HANDLE) }
    }

    /// The source named `name`.
    pub(crate) fn irq_by_name(&self, name: &str) -> Option<IrqHandle> {
        self.irqs.by_name(name)
    }

    /// Take every requested interrupt (not while one is already running).
    #[inline(always)]
    pub(crate) fn take_pending_interrupts(&self) -> bool {
        self.irqs.any_requested() && self.take_requested_interrupts()
    }

    #[inline(never)]
    fn take_requested_interrupts(&self) -> bool {
        if self.context() == Context::Interrupt {
            return false;
        }
        let mut taken = false;
        for h in self.irqs.take_requested() {
            while self.irqs.take_request(h) {
                self.take_interrupt(h, false);
                taken = true;
            }
        }
        taken
    }

    /// Run a source's handler at interrupt time.
    pub(crate) fn take_interrupt(&self, irq: IrqHandle, injected: bool) {
        let Some((mut cb, name)) = self.irqs.take_handler(irq) else { return };
        self.count_work(crate::vmm::scheduler::Work::Interrupt, cb.owner());
        let vm = self.cur_vm.get();
        let device = self.instance_name(cb.owner());
        self.trace(|| TraceEvent::Interrupt {
            irq: irq.raw(),
            name: name.clone(),
            device: device.to_string(),
            injected,
            vm: vm.raw(),
        });
        let mut regs = Regs { eax: irq.raw(), ebx: vm.raw(), ..Regs::default() };
        cb.call(self, Context::Interrupt, &mut regs);
        self.irqs.put_handler(irq, cb);
    }

    /// Whether a service boundary has anything to do: an interrupt is
    /// requested, or random order may inject one. Checked inline at every
    /// service call; the work itself is [`Core::service_boundary`].
    #[inline(always)]
    pub(crate) fn boundary_work(&self) -> bool {
        self.irqs.any_requested() || self.manifest.machine.order.explored()
    }

    /// At every service call: take requested interrupts, and in random
    /// order mode sometimes inject one, so devices are re-entered before
    /// their events run (KB Q75009).
    #[cold]
    pub(crate) fn service_boundary(&self) {
        if self.context() == Context::Interrupt || self.phase.get() != Phase::Running {
            return;
        }
        if self.irqs.any_requested() {
            self.take_pending_interrupts();
        }
        if !self.manifest.machine.order.explored() {
            return;
        }
        let count = self.irqs.len();
        if count == 0 {
            return;
        }
        let Some(pick) = self.schedule.borrow_mut().inject(count) else { return };
        let irq = self.irqs.nth(pick);
        if let Some(irq) = irq {
            self.take_interrupt(irq, true);
        }
    }

    /// A `[[interrupt]]` entry fires: raise the named source and schedule
    /// the next repetition.
    pub(crate) fn fire_manifest_interrupt(&self, index: usize, rep: u32) {
        let entry = self.manifest.interrupts[index].clone();
        match self.irq_by_name(&entry.name) {
            Some(irq) => {
                let _ = self.request_interrupt(irq);
                self.take_pending_interrupts();
            }
            None => tracing::warn!("{}: no interrupt source named `{}` is registered", entry.origin, entry.name),
        }
        if let Some(every) = entry.every {
            let next = rep + 1;
            if entry.count.is_none_or(|c| next < c) {
                self.sched.timer_after(every, TimerKind::Interrupt(index, next));
            }
        } else if let Some(c) = entry.count
            && rep + 1 < c
        {
            self.sched.timer_at(self.sched.now(), TimerKind::Interrupt(index, rep + 1));
        }
    }
}
