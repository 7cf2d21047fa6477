//! Nested execution: a VxD calls ring-3 code in the current VM.
//!
//! `Begin_Nest_Exec` points the client CS:IP at a VMM break point;
//! `Simulate_Push` and `Simulate_Far_Call` build a PASCAL call frame on the
//! VM's stack; `Resume_Exec` runs the VM until it returns to the break
//! point: events are processed first and other VMs may run (a task switch),
//! then the procedure at CS:IP runs with the arguments on the stack, and
//! `RETF n` pops them. `End_Nest_Exec` restores the mode and CS:IP.
//!
//! A procedure entered this way from event or interrupt time runs like an
//! interrupt service routine (KB Q72899): its segment must be FIXED, in a
//! DLL, and it may call only `PostMessage` and `PostAppMessage`.

use vmm_plugin_api::abi::{ClientRegs, VmmError};
use vmm_plugin_api::ddk::*;

use crate::machine::Core;
use crate::ring3::{NEST_BREAKPOINT, Target};
use crate::trace::TraceEvent;
use crate::violation::Violation;
use crate::vmm::context::Context;
use crate::vmm::vm::{NestFrame, STACK_TOP, Stack};

/// Counts of nested-execution blocks begun and ended so far (see
/// [`Core::nest_mark`]).
#[derive(Copy, Clone, Debug)]
pub(crate) struct NestMark {
    begun: u64,
    ended: u64,
}

/// How many far calls one `Resume_Exec` may run before the VM is declared
/// stuck (a chain of calls that never returns to the break point).
const RESUME_LIMIT: u32 = 10_000;

impl Core {
    /// The number of open nested-execution blocks of `vm`.
    #[inline]
    pub(crate) fn nest_depth(&self, vm: u32) -> usize {
        self.vms.borrow().get(vm).map_or(0, |v| v.nest.len())
    }

    /// Where nested execution stands before a call into a device, for
    /// [`Core::check_nest_balance`] after it.
    #[inline]
    pub(crate) fn nest_mark(&self) -> NestMark {
        NestMark { begun: self.nest_begun.get(), ended: self.nest_ended.get() }
    }

    /// After a device returned to the VMM: every nested block it began must
    /// be ended. Extra blocks are reported, naming the device (`owner`: the
    /// instance that was called, asked only then), and closed.
    #[inline]
    pub(crate) fn check_nest_balance(&self, vm: u32, mark: NestMark, what: &str, owner: impl FnOnce() -> u32) {
        if self.nest_begun.get() != mark.begun {
            let begun = self.nest_begun.get().wrapping_sub(mark.begun);
            let ended = self.nest_ended.get().wrapping_sub(mark.ended);
            if begun > ended {
                self.close_unbalanced_nest(vm, begun - ended, what, owner());
            }
        }
    }

    #[cold]
    fn close_unbalanced_nest(&self, vm: u32, open: u64, what: &str, owner: u32) {
        // After a fatal error the device was stopped before it could end
        // its blocks: not its fault, only the blocks are closed.
        if self.is_fatal() {
            for _ in 0..open {
                if self.end_nest(vm).is_err() {
                    break;
                }
            }
            return;
        }
        self.as_caller(owner, || {
            self.violation(
                Violation::NestExecNotEnded,
                format!(
                    "{open} nested execution block(s) were still open when {what} returned; every Begin_Nest_Exec \
                     needs its End_Nest_Exec"
                ),
                Some("End_Nest_Exec"),
            )
        });
        for _ in 0..open {
            if self.end_nest(vm).is_err() {
                break;
            }
        }
    }

    /// Whether nested execution may begin now.
    fn nest_allowed(&self, service: &'static str) -> bool {
        let context = self.context();
        let message = self.current_message.get();
        let forbidden_message = matches!(
            message,
            Some(
                SYS_CRITICAL_INIT
                    | VM_CRITICAL_INIT
                    | SYSTEM_EXIT
                    | SYS_CRITICAL_EXIT
                    | SYSTEM_EXIT2
                    | SYS_CRITICAL_EXIT2
                    | CREATE_VM
                    | DESTROY_VM
            )
        ) && matches!(context, Context::Init | Context::Control);
        if context == Context::Interrupt || context == Context::Appy || forbidden_message {
            let why = match (context, message) {
                (Context::Interrupt, _) => "at interrupt time".to_string(),
                (Context::Appy, _) => "at appy time (use _SHELL_CallDll)".to_string(),
                (_, Some(m)) => format!("during {}", control_message_name(m)),
                _ => "here".to_string(),
            };
            return !self.violation(
                Violation::NestExecIllegal,
                format!("{service} {why}, where nested execution is not allowed"),
                Some(service),
            );
        }
        true
    }

    fn with_client<T>(&self, vm: u32, f: impl FnOnce(&mut ClientRegs, &mut Stack) -> T) -> Result<T, VmmError> {
        let mut vms = self.vms.borrow_mut();
        let v = vms.get_mut(vm).ok_or(VmmError::INVALID_HANDLE)?;
        // SAFETY: the client block is only ever accessed through short-lived
        // accesses like this one; no other reference to it is alive while
        // the host works on it (the vms borrow is held).
        let c = unsafe { &mut *v.client_ptr() };
        Ok(f(c, &mut v.stack))
    }

    /// `Begin_Nest_Exec` / `Begin_Nest_V86_Exec`.
    pub(crate) fn begin_nest(&self, vm: u32, v86: bool) -> Result<(), VmmError> {
        if !self.nest_allowed(if v86 { "Begin_Nest_V86_Exec" } else { "Begin_Nest_Exec" }) {
            return Err(VmmError::VIOLATION);
        }
        let depth = {
            let mut vms = self.vms.borrow_mut();
            let v = vms.get_mut(vm).ok_or(VmmError::INVALID_HANDLE)?;
            let mut c = v.client();
            v.nest.push(NestFrame { cs: c.cs, eip: c.eip, pm: v.pm, v86 });
            // The system VM runs Windows, a protected-mode application.
            v.pm = !v86 && (v.status & VMSTAT_PM_APP != 0);
            c.cs = NEST_BREAKPOINT >> 16;
            c.eip = NEST_BREAKPOINT & 0xFFFF;
            v.set_client(c);
            v.nest.len()
        };
        self.nest_begun.set(self.nest_begun.get() + 1);
        self.trace(|| TraceEvent::NestExec { vm, action: "begin", depth, v86 });
        Ok(())
    }

    /// `End_Nest_Exec`.
    pub(crate) fn end_nest(&self, vm: u32) -> Result<(), VmmError> {
        let popped = {
            let mut vms = self.vms.borrow_mut();
            let v = vms.get_mut(vm).ok_or(VmmError::INVALID_HANDLE)?;
            v.nest.pop().map(|f| {
                let mut c = v.client();
                c.cs = f.cs;
                c.eip = f.eip;
                v.pm = f.pm;
                v.set_client(c);
                (v.nest.len(), f.v86)
            })
        };
        match popped {
            Some((depth, v86)) => {
                self.nest_ended.set(self.nest_ended.get() + 1);
                self.trace(|| TraceEvent::NestExec { vm, action: "end", depth, v86 });
                Ok(())
            }
            None => Err(self.refuse(
                Violation::UnbalancedNestExec,
                "End_Nest_Exec without a matching Begin_Nest_Exec",
                Some("End_Nest_Exec"),
            )),
        }
    }

    fn require_nest(&self, vm: u32, service: &'static str) -> Result<(), VmmError> {
        if self.nest_depth(vm) == 0 {
            return Err(self.refuse(
                Violation::UnbalancedNestExec,
                format!("{service} outside a nested execution block (call Begin_Nest_Exec first)"),
                Some(service),
            ));
        }
        Ok(())
    }

    /// `Simulate_Push`: a word on the client stack (inside a nested block;
    /// `OUT_OF_MEMORY` when the 64 KB stack is full, never a wrap).
    pub(crate) fn simulate_push(&self, vm: u32, value: u32) -> Result<(), VmmError> {
        self.require_nest(vm, "Simulate_Push")?;
        self.with_client(vm, |c, stack| push_words(c, stack, &[value as u16]))?
    }

    /// `Simulate_Pop` (inside a nested block; `FAILED` when SP is at the
    /// top of the stack, never a wrap).
    pub(crate) fn simulate_pop(&self, vm: u32) -> Result<u32, VmmError> {
        self.require_nest(vm, "Simulate_Pop")?;
        self.with_client(vm, |c, stack| {
            if c.esp & 0xFFFF > STACK_TOP - 2 {
                return Err(VmmError::FAILED);
            }
            Ok(pop16(c, stack) as u32)
        })?
    }

    /// `Simulate_Far_Call`: push CS:IP, jump to `segment:offset` (inside a
    /// nested block).
    pub(crate) fn simulate_far_call(&self, vm: u32, segment: u16, offset: u32) -> Result<(), VmmError> {
        self.require_nest(vm, "Simulate_Far_Call")?;
        self.with_client(vm, |c, stack| {
            push_words(c, stack, &[c.cs as u16, c.eip as u16])?;
            c.cs = segment as u32;
            c.eip = offset & 0xFFFF;
            Ok(())
        })?
    }

    /// `Simulate_Int`: push FLAGS, CS:IP, jump to the handler of `n`
    /// (inside a nested block).
    pub(crate) fn simulate_int(&self, vm: u32, n: u8) -> Result<(), VmmError> {
        self.require_nest(vm, "Simulate_Int")?;
        self.with_client(vm, |c, stack| {
            push_words(c, stack, &[c.eflags as u16, c.cs as u16, c.eip as u16])?;
            let v = Core::int_vector(n);
            c.cs = v >> 16;
            c.eip = v & 0xFFFF;
            Ok(())
        })?
    }

    /// `Resume_Exec`: run `vm` until it returns to the nest's break point.
    pub(crate) fn resume_exec(&self, vm: u32) -> Result<(), VmmError> {
        self.require_nest(vm, "Resume_Exec")?;
        let isr = matches!(self.context(), Context::Event | Context::Interrupt);
        for _ in 0..RESUME_LIMIT {
            self.nested_dispatch_point(vm)?;
            let (cs, ip) =
                self.vms.borrow().get(vm).map(|v| (v.client().cs, v.client().eip)).ok_or(VmmError::INVALID_HANDLE)?;
            let target_ptr = ((cs & 0xFFFF) << 16) | (ip & 0xFFFF);
            let target = self.ring3.borrow().resolve(target_ptr);
            match target {
                Target::Breakpoint => return Ok(()),
                Target::Export { module, export } => {
                    let arg_bytes = self.ring3.borrow().modules[module].exports[export].arg_bytes as usize;
                    let mut buf = [0u8; 64];
                    let mut big = Vec::new();
                    let args: &[u8] = if arg_bytes <= buf.len() {
                        self.with_client(vm, |c, stack| read_stack(c, stack, 4, &mut buf[..arg_bytes]))?;
                        &buf[..arg_bytes]
                    } else {
                        big.resize(arg_bytes, 0);
                        self.with_client(vm, |c, stack| read_stack(c, stack, 4, &mut big))?;
                        &big
                    };
                    let result = self.ring3_far_call(target_ptr, args, isr);
                    let value = result.as_ref().copied().unwrap_or(0);
                    self.with_client(vm, |c, stack| {
                        c.eax = (c.eax & 0xFFFF_0000) | (value & 0xFFFF);
                        c.edx = (c.edx & 0xFFFF_0000) | (value >> 16);
                        retf(c, stack, arg_bytes);
                    })?;
                    result?;
                }
                Target::Api { .. } => {
                    let r = self.ring3_far_call(target_ptr, &[], false);
                    self.with_client(vm, |c, stack| retf(c, stack, 0))?;
                    r?;
                }
                Target::Interrupt(n) => {
                    let r = self.ring3_int(n);
                    self.with_client(vm, |c, stack| {
                        c.eip = pop16(c, stack) as u32;
                        c.cs = pop16(c, stack) as u32;
                        let flags = pop16(c, stack) as u32;
                        // IRET restores IF and the other flag bits but keeps
                        // the handler's carry.
                        c.eflags = (c.eflags & CF_MASK) | (flags & !CF_MASK);
                    })?;
                    r?;
                }
                Target::Unloaded { .. } | Target::Nothing => {
                    // Reported by the far call; abandon the nested call.
                    let r = self.ring3_far_call(target_ptr, &[], isr);
                    self.with_client(vm, |c, _| {
                        c.cs = NEST_BREAKPOINT >> 16;
                        c.eip = NEST_BREAKPOINT & 0xFFFF;
                    })?;
                    return r.map(|_| ());
                }
            }
        }
        Err(self.refuse(
            Violation::ResumeRunaway,
            format!("Resume_Exec ran {RESUME_LIMIT} far calls without the VM returning to the break point"),
            Some("Resume_Exec"),
        ))
    }

    /// Inside `Resume_Exec`: run the events that are ready (the VM's and the
    /// global ones), and let a VM of higher priority run, until `vm` is
    /// current again.
    fn nested_dispatch_point(&self, vm: u32) -> Result<(), VmmError> {
        if self.is_fatal() || self.stop.get() {
            return Err(VmmError::FATAL);
        }
        if self.context() == Context::Interrupt {
            // At interrupt time nothing else may run.
            return Ok(());
        }
        while self.dispatch_events(Some(vm)) {
            if self.is_fatal() {
                return Err(VmmError::FATAL);
            }
        }
        // A task switch happens here only for a VM of higher priority (an
        // interrupt's boosted event elsewhere); equals wait for the end of
        // the nested block.
        if self.higher_priority_vm(vm) {
            let end = self.run_until(&|c: &Core| c.cur_vm.get() == vm, Some(vm));
            if end != crate::vmm::sched::LoopEnd::Done {
                return Err(VmmError::FATAL);
            }
        }
        Ok(())
    }
}

/// Push `words` in order, all or none: the client stack is 64 KB and SP
/// never wraps below 0 (a full stack is `OUT_OF_MEMORY`).
fn push_words(c: &mut ClientRegs, stack: &mut Stack, words: &[u16]) -> Result<(), VmmError> {
    let need = 2 * words.len() as u32;
    if c.esp & 0xFFFF < need {
        return Err(VmmError::OUT_OF_MEMORY);
    }
    for &w in words {
        push16(c, stack, w);
    }
    Ok(())
}

fn push16(c: &mut ClientRegs, stack: &mut Stack, value: u16) {
    let sp = (c.esp.wrapping_sub(2)) & 0xFFFF;
    stack[sp as usize] = value as u8;
    stack[(sp as usize + 1) & 0xFFFF] = (value >> 8) as u8;
    c.esp = (c.esp & 0xFFFF_0000) | sp;
}

fn pop16(c: &mut ClientRegs, stack: &Stack) -> u16 {
    let sp = c.esp & 0xFFFF;
    let v = stack[sp as usize] as u16 | ((stack[(sp as usize + 1) & 0xFFFF] as u16) << 8);
    c.esp = (c.esp & 0xFFFF_0000) | ((sp + 2) & 0xFFFF);
    v
}

/// Copy `out.len()` bytes from SS:SP+`skip`.
fn read_stack(c: &ClientRegs, stack: &Stack, skip: usize, out: &mut [u8]) {
    let sp = (c.esp & 0xFFFF) as usize;
    for (i, b) in out.iter_mut().enumerate() {
        *b = stack[(sp + skip + i) & 0xFFFF];
    }
}

/// `RETF n`: pop IP and CS, then `n` bytes of arguments.
fn retf(c: &mut ClientRegs, stack: &Stack, n: usize) {
    c.eip = pop16(c, stack) as u32;
    c.cs = pop16(c, stack) as u32;
    c.esp = (c.esp & 0xFFFF_0000) | (c.esp.wrapping_add(n as u32) & 0xFFFF);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pascal_frame_round_trip_on_the_stack() {
        let mut c = ClientRegs { esp: 0xFFFE, cs: 0x10, eip: 0x20, ..ClientRegs::default() };
        let mut stack: Box<Stack> = Box::new([0u8; 0x10000]);
        // hwnd, msg, wParam, HIWORD(lParam), LOWORD(lParam)
        for w in [0x1234u16, 0x0500, 7, 0xDEAD, 0xBEEF] {
            push16(&mut c, &mut stack, w);
        }
        let (cs, ip) = (c.cs as u16, c.eip as u16);
        push16(&mut c, &mut stack, cs);
        push16(&mut c, &mut stack, ip);
        let mut args = [0u8; 10];
        read_stack(&c, &stack, 4, &mut args);
        let p = vmm_plugin_api::ring3::PascalArgs::new(&args).params([2, 2, 2, 4]);
        assert_eq!(p, [0x1234, 0x0500, 7, 0xDEAD_BEEF]);
        retf(&mut c, &stack, 10);
        assert_eq!((c.cs, c.eip, c.esp), (0x10, 0x20, 0xFFFE));
    }
}
