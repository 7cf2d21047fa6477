//! The machine's side of simulated hardware interrupts: registering a
//! source, requesting it, and taking the requests at service-call
//! boundaries and scheduler steps, with the handler run at interrupt time.

use vmm_plugin_api::abi::{Regs, VmmError};

use crate::machine::{Core, Phase};
use crate::trace::TraceEvent;
use crate::violation::Violation;
use crate::vmm::callback::Callback;
use crate::vmm::context::Context;
use crate::vmm::irq::Irq;
use crate::vmm::irq::IrqHandle;
use crate::vmm::timers::TimerKind;

impl Core {
    /// Register a source named `name`.
    pub(crate) fn register_interrupt(&self, name: &str, handler: Callback) -> Result<IrqHandle, VmmError> {
        if self.irqs.borrow().iter().any(|(_, i)| i.name.eq_ignore_ascii_case(name)) {
            return Err(self.refuse(
                Violation::DuplicateIrqName,
                format!("an interrupt source named `{name}` is already registered"),
                Some("register_interrupt"),
            ));
        }
        self.irqs
            .borrow_mut()
            .insert(Irq { name: name.to_string(), handler: Some(handler), pending: 0 })
            .ok_or(VmmError::OUT_OF_MEMORY)
    }

    /// Request a source: it is taken at the next service-call boundary or
    /// scheduler step.
    pub(crate) fn request_interrupt(&self, irq: IrqHandle) -> Result<(), VmmError> {
        let mut irqs = self.irqs.borrow_mut();
        let i = irqs.get_mut(irq).ok_or(VmmError::INVALID_HANDLE)?;
        // Requests not yet taken only ever count up to u32::MAX: beyond
        // that they merge, as a PIC's request line does (never a wrap to 0).
        i.pending = i.pending.saturating_add(1);
        self.irq_pending.set(true);
        Ok(())
    }

    /// The source named `name`.
    pub(crate) fn irq_by_name(&self, name: &str) -> Option<IrqHandle> {
        self.irqs.borrow().iter().find(|(_, i)| i.name.eq_ignore_ascii_case(name)).map(|(h, _)| h)
    }

    /// Take every requested interrupt (not while one is already running).
    #[inline(always)]
    pub(crate) fn take_pending_interrupts(&self) -> bool {
        self.irq_pending.get() && self.take_requested_interrupts()
    }

    #[inline(never)]
    fn take_requested_interrupts(&self) -> bool {
        if self.context() == Context::Interrupt {
            return false;
        }
        self.irq_pending.set(false);
        let pending: Vec<IrqHandle> =
            self.irqs.borrow().iter().filter(|(_, i)| i.pending > 0).map(|(h, _)| h).collect();
        let mut taken = false;
        for h in pending {
            loop {
                let more = {
                    let mut irqs = self.irqs.borrow_mut();
                    match irqs.get_mut(h) {
                        Some(i) if i.pending > 0 => {
                            i.pending -= 1;
                            true
                        }
                        _ => false,
                    }
                };
                if !more {
                    break;
                }
                self.take_interrupt(h, false);
                taken = true;
            }
        }
        taken
    }

    /// Run a source's handler at interrupt time.
    pub(crate) fn take_interrupt(&self, irq: IrqHandle, injected: bool) {
        let taken = {
            let mut irqs = self.irqs.borrow_mut();
            irqs.get_mut(irq).and_then(|i| i.handler.take().map(|cb| (cb, i.name.clone())))
        };
        let Some((mut cb, name)) = taken else { return };
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
        if let Some(i) = self.irqs.borrow_mut().get_mut(irq) {
            i.handler = Some(cb);
        }
    }

    /// Whether a service boundary has anything to do: an interrupt is
    /// requested, or random order may inject one. Checked inline at every
    /// service call; the work itself is [`Core::service_boundary`].
    #[inline(always)]
    pub(crate) fn boundary_work(&self) -> bool {
        self.irq_pending.get() || self.manifest.machine.order.explored()
    }

    /// At every service call: take requested interrupts, and in random
    /// order mode sometimes inject one, so devices are re-entered before
    /// their events run (KB Q75009).
    #[cold]
    pub(crate) fn service_boundary(&self) {
        if self.context() == Context::Interrupt || self.phase.get() != Phase::Running {
            return;
        }
        if self.irq_pending.get() {
            self.take_pending_interrupts();
        }
        if !self.manifest.machine.order.explored() {
            return;
        }
        let count = self.irqs.borrow().len();
        if count == 0 {
            return;
        }
        let Some(pick) = self.schedule.borrow_mut().inject(count) else { return };
        let irq = self.irqs.borrow().iter().nth(pick).map(|(h, _)| h);
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
