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

use std::cell::Cell;

use vmm_plugin_api::abi::ClientRegs;
use vmm_plugin_api::ddk::*;

use crate::vmm::context::Context;
use crate::vmm::vm::{STACK_TOP, Stack};

/// How many far calls one `Resume_Exec` may run before the VM is declared
/// stuck (a chain of calls that never returns to the break point).
pub(crate) const RESUME_LIMIT: u32 = 10_000;

/// Counts of nested-execution blocks begun and ended so far (all VMs), so
/// that the VMM can tell after a call into a device whether the device
/// ended every block it began: two counter reads on the hot path.
#[derive(Default)]
pub(crate) struct NestCounts {
    begun: Cell<u64>,
    ended: Cell<u64>,
}

/// Where [`NestCounts`] stood before a call into a device.
#[derive(Copy, Clone, Debug)]
pub(crate) struct NestMark {
    begun: u64,
    ended: u64,
}

impl NestCounts {
    #[inline]
    pub(crate) fn mark(&self) -> NestMark {
        NestMark { begun: self.begun.get(), ended: self.ended.get() }
    }

    pub(crate) fn begin(&self) {
        self.begun.set(self.begun.get() + 1);
    }

    pub(crate) fn end(&self) {
        self.ended.set(self.ended.get() + 1);
    }

    /// How many blocks begun since `mark` are still open (0 when the
    /// balance holds; blocks ended beyond those begun count as 0).
    #[inline]
    pub(crate) fn open_since(&self, mark: NestMark) -> u64 {
        if self.begun.get() == mark.begun {
            return 0;
        }
        let begun = self.begun.get().wrapping_sub(mark.begun);
        let ended = self.ended.get().wrapping_sub(mark.ended);
        begun.saturating_sub(ended)
    }
}

/// Why nested execution may not begin in `context` during control message
/// `message`, or `None` when it may.
pub(crate) fn forbidden(context: Context, message: Option<u32>) -> Option<String> {
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
    if context != Context::Interrupt && context != Context::Appy && !forbidden_message {
        return None;
    }
    Some(match (context, message) {
        (Context::Interrupt, _) => "at interrupt time".to_string(),
        (Context::Appy, _) => "at appy time (use _SHELL_CallDll)".to_string(),
        (_, Some(m)) => format!("during {}", control_message_name(m)),
        _ => "here".to_string(),
    })
}

/// The memory a client stack lives in: the VM's 64 KB stack array (VMs
/// whose code is Rust), or a DOS program's memory at SS (machine code).
/// Offsets are SP values; they wrap in the 64 KB segment.
pub(crate) trait StackMem {
    fn byte(&self, sp: u16) -> u8;
    fn set_byte(&mut self, sp: u16, value: u8);
}

impl StackMem for Stack {
    #[inline]
    fn byte(&self, sp: u16) -> u8 {
        self[sp as usize]
    }
    #[inline]
    fn set_byte(&mut self, sp: u16, value: u8) {
        self[sp as usize] = value;
    }
}

impl<S: StackMem + ?Sized> StackMem for Box<S> {
    #[inline]
    fn byte(&self, sp: u16) -> u8 {
        (**self).byte(sp)
    }
    #[inline]
    fn set_byte(&mut self, sp: u16, value: u8) {
        (**self).set_byte(sp, value)
    }
}

/// Why a client-stack operation did not happen (the stack is 64 KB and SP
/// never wraps): the service returns `OUT_OF_MEMORY` for a full stack and
/// `FAILED` for one that holds less than the operation pops.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum StackError {
    /// No room for what is pushed.
    Full,
    /// Less on the stack than what is popped.
    Empty,
}

/// `Simulate_Push`: a word on the client stack ([`StackError::Full`] when
/// the 64 KB stack is full, never a wrap).
pub(crate) fn simulate_push<S: StackMem + ?Sized>(
    c: &mut ClientRegs,
    stack: &mut S,
    value: u32,
) -> Result<(), StackError> {
    push_words(c, stack, &[value as u16])
}

/// `Simulate_Pop` ([`StackError::Empty`] when SP is at the top of the
/// stack, never a wrap).
pub(crate) fn simulate_pop<S: StackMem + ?Sized>(c: &mut ClientRegs, stack: &S) -> Result<u32, StackError> {
    if c.esp & 0xFFFF > STACK_TOP - 2 {
        return Err(StackError::Empty);
    }
    Ok(pop16(c, stack) as u32)
}

/// `Simulate_Far_Call`: push CS:IP, jump to `segment:offset`.
pub(crate) fn simulate_far_call<S: StackMem + ?Sized>(
    c: &mut ClientRegs,
    stack: &mut S,
    segment: u16,
    offset: u32,
) -> Result<(), StackError> {
    push_words(c, stack, &[c.cs as u16, c.eip as u16])?;
    c.cs = segment as u32;
    c.eip = offset & 0xFFFF;
    Ok(())
}

/// `Simulate_Int`: push FLAGS, CS:IP, jump to `handler` (a 16:16 far
/// pointer).
pub(crate) fn simulate_int<S: StackMem + ?Sized>(
    c: &mut ClientRegs,
    stack: &mut S,
    handler: u32,
) -> Result<(), StackError> {
    push_words(c, stack, &[c.eflags as u16, c.cs as u16, c.eip as u16])?;
    c.cs = handler >> 16;
    c.eip = handler & 0xFFFF;
    Ok(())
}

/// `IRET` from a handler the VMM called: pop IP, CS and FLAGS; IF and the
/// other flag bits come back, the handler's carry stays.
pub(crate) fn iret<S: StackMem + ?Sized>(c: &mut ClientRegs, stack: &S) {
    c.eip = pop16(c, stack) as u32;
    c.cs = pop16(c, stack) as u32;
    let flags = pop16(c, stack) as u32;
    c.eflags = (c.eflags & CF_MASK) | (flags & !CF_MASK);
}

/// Push `words` in order, all or none: the client stack is 64 KB and SP
/// never wraps below 0 (a full stack is [`StackError::Full`]).
pub(crate) fn push_words<S: StackMem + ?Sized>(
    c: &mut ClientRegs,
    stack: &mut S,
    words: &[u16],
) -> Result<(), StackError> {
    let need = 2 * words.len() as u32;
    if c.esp & 0xFFFF < need {
        return Err(StackError::Full);
    }
    for &w in words {
        push16(c, stack, w);
    }
    Ok(())
}

fn push16<S: StackMem + ?Sized>(c: &mut ClientRegs, stack: &mut S, value: u16) {
    let sp = (c.esp.wrapping_sub(2)) & 0xFFFF;
    stack.set_byte(sp as u16, value as u8);
    stack.set_byte((sp as u16).wrapping_add(1), (value >> 8) as u8);
    c.esp = (c.esp & 0xFFFF_0000) | sp;
}

pub(crate) fn pop16<S: StackMem + ?Sized>(c: &mut ClientRegs, stack: &S) -> u16 {
    let sp = c.esp & 0xFFFF;
    let v = stack.byte(sp as u16) as u16 | ((stack.byte((sp as u16).wrapping_add(1)) as u16) << 8);
    c.esp = (c.esp & 0xFFFF_0000) | ((sp + 2) & 0xFFFF);
    v
}

/// Copy `out.len()` bytes from SS:SP+`skip`.
pub(crate) fn read_stack<S: StackMem + ?Sized>(c: &ClientRegs, stack: &S, skip: usize, out: &mut [u8]) {
    let sp = (c.esp & 0xFFFF) as usize;
    for (i, b) in out.iter_mut().enumerate() {
        *b = stack.byte(((sp + skip + i) & 0xFFFF) as u16);
    }
}

/// `RETF n`: pop IP and CS, then `n` bytes of arguments.
pub(crate) fn retf<S: StackMem + ?Sized>(c: &mut ClientRegs, stack: &S, n: usize) {
    c.eip = pop16(c, stack) as u32;
    c.cs = pop16(c, stack) as u32;
    c.esp = (c.esp & 0xFFFF_0000) | (c.esp.wrapping_add(n as u32) & 0xFFFF);
}

/// `Simulate_Iret`: pop IP, CS and FLAGS (words: the emulator's VMs run
/// 16-bit code), all three as they are ([`StackError::Empty`] when the
/// stack holds less than a frame).
pub(crate) fn simulate_iret<S: StackMem + ?Sized>(c: &mut ClientRegs, stack: &S) -> Result<(), StackError> {
    need(c, 6)?;
    c.eip = pop16(c, stack) as u32;
    c.cs = pop16(c, stack) as u32;
    let flags = pop16(c, stack) as u32;
    c.eflags = (c.eflags & 0xFFFF_0000) | flags;
    Ok(())
}

/// `Simulate_Far_Jmp`: load CS:IP.
pub(crate) fn simulate_far_jmp(c: &mut ClientRegs, segment: u16, offset: u32) {
    c.cs = segment as u32;
    c.eip = offset & 0xFFFF;
}

/// `Simulate_Far_Ret_N` (`Simulate_Far_Ret` with `n` = 0): pop IP and CS,
/// then drop `n` bytes of parameters, as `RETF n` does ([`StackError::Empty`]
/// when the stack holds less).
pub(crate) fn simulate_far_ret_n<S: StackMem + ?Sized>(
    c: &mut ClientRegs,
    stack: &S,
    n: u32,
) -> Result<(), StackError> {
    need(c, 4u32.saturating_add(n))?;
    retf(c, stack, n as usize);
    Ok(())
}

/// `Build_Int_Stack_Frame`: push FLAGS, CS, IP and load `segment:offset`,
/// clearing IF and TF as an `INT` does; no hook is called.
pub(crate) fn build_int_stack_frame<S: StackMem + ?Sized>(
    c: &mut ClientRegs,
    stack: &mut S,
    segment: u16,
    offset: u32,
) -> Result<(), StackError> {
    push_words(c, stack, &[c.eflags as u16, c.cs as u16, c.eip as u16])?;
    c.eflags &= !(IF_MASK | TF_MASK);
    c.cs = segment as u32;
    c.eip = offset & 0xFFFF;
    Ok(())
}

/// The stack must hold `bytes` below its top: a pop never wraps past it.
fn need(c: &ClientRegs, bytes: u32) -> Result<(), StackError> {
    if (c.esp & 0xFFFF) + bytes > 0x1_0000 { Err(StackError::Empty) } else { Ok(()) }
}

/// The trap flag (EFLAGS bit 8).
const TF_MASK: u32 = 0x100;

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

    #[test]
    fn open_blocks_are_counted_from_a_mark() {
        let n = NestCounts::default();
        n.begin();
        let mark = n.mark();
        assert_eq!(n.open_since(mark), 0);
        n.begin();
        n.begin();
        n.end();
        assert_eq!(n.open_since(mark), 1);
        n.end();
        n.end();
        assert_eq!(n.open_since(mark), 0, "ending an outer block is not a negative balance");
    }

    #[test]
    fn nested_execution_is_forbidden_at_interrupt_and_appy_time_and_during_critical_messages() {
        assert_eq!(forbidden(Context::Event, None), None);
        assert_eq!(forbidden(Context::Control, Some(SYS_VM_INIT)), None);
        assert_eq!(forbidden(Context::Interrupt, None).as_deref(), Some("at interrupt time"));
        assert!(forbidden(Context::Appy, None).unwrap().contains("_SHELL_CallDll"));
        assert_eq!(forbidden(Context::Control, Some(CREATE_VM)).as_deref(), Some("during Create_VM"));
        assert_eq!(forbidden(Context::Event, Some(CREATE_VM)), None, "an event during Create_VM is not the message");
    }

    #[test]
    fn a_full_stack_refuses_a_push_and_an_empty_one_a_pop() {
        let mut stack: Box<Stack> = Box::new([0u8; 0x10000]);
        let mut c = ClientRegs { esp: 1, ..ClientRegs::default() };
        assert_eq!(simulate_push(&mut c, &mut stack, 7), Err(StackError::Full));
        assert_eq!(c.esp, 1, "nothing pushed");
        let mut c = ClientRegs { esp: STACK_TOP, ..ClientRegs::default() };
        assert_eq!(simulate_pop(&mut c, &stack), Err(StackError::Empty));
        let mut c = ClientRegs { esp: 0x100, cs: 0x1111, eip: 0x2222, eflags: 0x0203, ..ClientRegs::default() };
        simulate_int(&mut c, &mut stack, 0xABCD_0012).unwrap();
        assert_eq!((c.cs, c.eip, c.esp), (0xABCD, 0x12, 0xFA));
        c.eflags = CF_MASK;
        iret(&mut c, &stack);
        assert_eq!((c.cs, c.eip, c.esp, c.eflags), (0x1111, 0x2222, 0x100, 0x0203 | CF_MASK));
    }

    #[test]
    fn iret_far_ret_n_and_build_int_stack_frame_pop_what_they_should() {
        let mut stack: Box<Stack> = Box::new([0u8; 0x10000]);
        let mut c =
            ClientRegs { esp: 0x200, cs: 0x1111, eip: 0x2222, eflags: 0x0203 | TF_MASK, ..ClientRegs::default() };
        build_int_stack_frame(&mut c, &mut stack, 0xABCD, 0x12).unwrap();
        assert_eq!((c.cs, c.eip, c.esp, c.eflags & (IF_MASK | TF_MASK)), (0xABCD, 0x12, 0x1FA, 0));
        simulate_iret(&mut c, &stack).unwrap();
        assert_eq!((c.cs, c.eip, c.esp, c.eflags), (0x1111, 0x2222, 0x200, 0x0203 | TF_MASK));
        // RETF 4: CS:IP, then 4 bytes of parameters (ESP grows, Uncertain 12).
        // A PASCAL call: two words of parameters, then the return address.
        simulate_push(&mut c, &mut stack, 7).unwrap();
        simulate_push(&mut c, &mut stack, 8).unwrap();
        simulate_far_call(&mut c, &mut stack, 0x3333, 0x44).unwrap();
        simulate_far_ret_n(&mut c, &stack, 4).unwrap();
        assert_eq!((c.cs, c.eip, c.esp), (0x1111, 0x2222, 0x200));
        simulate_far_jmp(&mut c, 0x5555, 0x1_0066);
        assert_eq!((c.cs, c.eip), (0x5555, 0x66));
        // Nothing to pop at the top of the stack.
        let mut c = ClientRegs { esp: 0xFFFE, ..ClientRegs::default() };
        assert_eq!(simulate_iret(&mut c, &stack), Err(StackError::Empty));
        assert_eq!(simulate_far_ret_n(&mut c, &stack, 0), Err(StackError::Empty));
        assert_eq!(c.esp, 0xFFFE, "nothing popped");
    }
}
