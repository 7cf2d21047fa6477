//! The machine's side of interrupts inside VMs (state and rules in
//! `vmm/vectors.rs`): the V86 interrupt hook chain every path into a V86
//! vector passes ([`Core::v86_int_chain`]), the vector tables (a DOS
//! program's real table in its memory), the `Simulate_*` services on the
//! client stack wherever it lives, call-backs into ring 0, the
//! `Call_When_VM_Returns` break points, the fault hook chains, and the
//! `int_hook` records.

use vmm_plugin_api::abi::{Carry, ClientRegs, Regs, VmmError};
use vmm_plugin_api::ddk::{CF_MASK, ZF_MASK};

use crate::machine::{Core, Phase};
use crate::ring3::machine_code::DosMemory;
use crate::ring3::state::{INT_SELECTOR, PM_IRET_POINT, Target};
use crate::time::Duration;
use crate::trace::{CallOutcome, TraceEvent};
use crate::violation::Violation;
use crate::vmm::callback::{Callback, shorten};
use crate::vmm::context::Context;
use crate::vmm::ids::{InstanceId, VmId};
use crate::vmm::nest::{self, StackMem};
use crate::vmm::timers::{Due, TimeoutRec};
use crate::vmm::vectors::{FaultKind, FaultStage, RETURN_SEGMENT, Return, Taken, VectorError};

/// A DOS program's stack: its memory at SS.
struct SegStack<'a> {
    mem: &'a mut DosMemory,
    base: u32,
}

impl StackMem for SegStack<'_> {
    fn byte(&self, sp: u16) -> u8 {
        self.mem.byte(self.base + sp as u32)
    }
    fn set_byte(&mut self, sp: u16, value: u8) {
        self.mem.set_byte(self.base + sp as u32, value)
    }
}

impl Core {
    /// Run `f` on the memory of `vm` when its code is machine code (the
    /// memory of a program inside a call into the VMM, or of one between
    /// runs); `None` for a VM whose code is Rust.
    pub(crate) fn with_vm_memory<T>(&self, vm: VmId, f: impl FnOnce(Option<&mut DosMemory>) -> T) -> T {
        {
            let mut held = self.v86_mem.borrow_mut();
            if let Some((_, mem)) = held.iter_mut().rev().find(|(v, _)| *v == vm) {
                return f(Some(mem));
            }
        }
        let mut r3 = self.ring3.borrow_mut();
        match r3.parked_machine(vm) {
            Some(machine) => f(Some(&mut machine.mem)),
            None => f(None),
        }
    }

    /// Whether `vm` runs machine code (its stack and vector table are in
    /// its memory).
    pub(crate) fn vm_has_memory(&self, vm: VmId) -> bool {
        self.with_vm_memory(vm, |m| m.is_some())
    }

    /// Run `f` on `vm`'s client registers and its stack: the DOS program's
    /// memory at SS, or the VM's 64 KB stack.
    pub(crate) fn with_client_stack<T>(
        &self,
        vm: VmId,
        f: impl FnOnce(&mut ClientRegs, &mut dyn StackMem) -> T,
    ) -> Result<T, VmmError> {
        let mut c = self.client_of(vm).ok_or(VmmError::INVALID_HANDLE)?;
        let done = self.with_vm_memory(vm, |mem| match mem {
            Some(mem) => {
                let base = (c.ss & 0xFFFF) << 4;
                Ok(f(&mut c, &mut SegStack { mem, base }))
            }
            None => Err(f),
        });
        match done {
            Ok(r) => {
                self.set_client_of(vm, c);
                Ok(r)
            }
            Err(f) => {
                let mut vms = self.vms.borrow_mut();
                let v = vms.get_mut(vm).ok_or(VmmError::INVALID_HANDLE)?;
                let mut c = v.client();
                let r = f(&mut c, &mut *v.stack);
                v.set_client(c);
                Ok(r)
            }
        }
    }

    // ---- the V86 interrupt chain -------------------------------------------------------

    /// Interrupt `n` reaches `vm`'s V86 vector: the `Hook_V86_Int_Chain`
    /// hooks, newest first, on the VM's client registers. A hook that
    /// returns with carry clear consumes it (the VM goes on with the
    /// registers the hook left, nothing is reflected); carry set passes it
    /// on. `true` when a hook consumed it; `false` (at the cost of one map
    /// lookup when nothing hooks `n`) when the VM's own handler is next.
    /// Every path into a V86 vector calls this: `INT n` in a DOS program or
    /// Rust ring-3 code, `Simulate_Int`, hardware interrupts.
    pub(crate) fn v86_int_chain(&self, vm: VmId, n: u8) -> bool {
        if !self.vectors.borrow().hooked(n) {
            return false;
        }
        self.v86_int_chain_slow(vm, n)
    }

    #[cold]
    fn v86_int_chain_slow(&self, vm: VmId, n: u8) -> bool {
        let chain = self.vectors.borrow().int_chain(n);
        for id in chain {
            let Some(mut taken) = self.vectors.borrow_mut().take_int(n, id) else { continue };
            let mut regs = Regs { eax: n as u32, ebx: vm.raw(), flags: CF_MASK, ..Regs::default() };
            let outcome = taken.callback.call(self, Context::Vm, &mut regs);
            let owner = taken.owner;
            let dropped = self.vectors.borrow_mut().put_int(n, taken);
            drop(dropped);
            // A hook that failed (panicked, or its device did) passes it on.
            let passed = !matches!(outcome, CallOutcome::Clear);
            self.trace(|| TraceEvent::IntHook {
                vector: n,
                vm: vm.raw(),
                device: self.instance_name(owner).to_string(),
                passed,
            });
            if !passed {
                return true;
            }
            if self.is_fatal() {
                return true;
            }
        }
        false
    }

    /// `Hook_V86_Int_Chain`: the hook's handle (for `Unhook_V86_Int_Chain`).
    pub(crate) fn hook_v86_int_chain(&self, owner: InstanceId, n: u32, callback: Callback) -> Result<u32, VmmError> {
        let Ok(n) = u8::try_from(n) else {
            drop(callback);
            return Err(VmmError::FAILED);
        };
        Ok(self.vectors.borrow_mut().hook_int(n, owner, callback))
    }

    /// `Unhook_V86_Int_Chain`: `NOT_FOUND` (carry) for a hook `owner` does
    /// not have on `n`, `FAILED` for a bad number.
    pub(crate) fn unhook_v86_int_chain(&self, owner: InstanceId, n: u32, hook: u32) -> Result<(), VmmError> {
        let Ok(n) = u8::try_from(n) else { return Err(VmmError::FAILED) };
        let removed = self.vectors.borrow_mut().unhook_int(n, owner, hook);
        match removed {
            Ok(cb) => {
                drop(cb);
                Ok(())
            }
            Err(_) => Err(VmmError::NOT_FOUND),
        }
    }

    // ---- vector tables -----------------------------------------------------------------

    /// Before `Sys_VM_Init` a vector set becomes every VM's default.
    fn before_sys_vm_init(&self) -> bool {
        self.phase.get() < Phase::SysVmInit
    }

    /// `Get_V86_Int_Vector` of `vm`: `segment << 16 | offset`.
    pub(crate) fn get_v86_int_vector(&self, vm: VmId, n: u8) -> u32 {
        if let Some(v) = self.with_vm_memory(vm, |mem| mem.map(|m| m.vector(n))) {
            return v;
        }
        // A VM whose code is Rust: the VMM's table, by default the host's
        // handler as nested execution reaches it.
        self.vectors.borrow().v86_vector(vm, n).unwrap_or_else(|| Core::int_vector(n))
    }

    /// `Set_V86_Int_Vector`: before `Sys_VM_Init` every VM's default table,
    /// after it `vm`'s (a DOS program's own table in its memory).
    pub(crate) fn set_v86_int_vector(&self, vm: VmId, n: u8, vector: u32) {
        if self.before_sys_vm_init() {
            self.vectors.borrow_mut().set_v86_vector(None, n, vector);
            return;
        }
        let in_memory = self.with_vm_memory(vm, |mem| {
            mem.map(|m| {
                m.set_vector(n, vector);
            })
        });
        if in_memory.is_none() {
            self.vectors.borrow_mut().set_v86_vector(Some(vm), n, vector);
        }
    }

    /// A new DOS program's memory in `vm`: the entries of the default
    /// table (set before `Sys_VM_Init`) and of the VM's (set before the
    /// program had memory) go in.
    pub(crate) fn apply_v86_vectors(&self, vm: VmId, mem: &mut DosMemory) {
        let v = self.vectors.borrow();
        for (n, vector) in v.v86_defaults().chain(v.v86_of(vm)) {
            mem.set_vector(n, vector);
        }
    }

    /// `Get_PM_Int_Vector`: selector, offset, and whether it is still the
    /// default (ZF set: the VMM's break point that reflects to V86, also
    /// when it was written back as `FFFE:n`).
    pub(crate) fn get_pm_int_vector(&self, vm: VmId, n: u8) -> (u16, u32, bool) {
        match self.vectors.borrow().pm_vector(vm, n) {
            Some((sel, off)) => (sel, off, ((sel as u32) << 16 | (off & 0xFFFF)) == Core::int_vector(n)),
            None => (INT_SELECTOR, n as u32, true),
        }
    }

    /// `Set_PM_Int_Vector`: before `Sys_VM_Init` every VM's default, after
    /// it `vm`'s.
    pub(crate) fn set_pm_int_vector(&self, vm: VmId, n: u8, selector: u16, offset: u32) {
        let target = if self.before_sys_vm_init() { None } else { Some(vm) };
        self.vectors.borrow_mut().set_pm_vector(target, n, selector, offset);
    }

    // ---- Simulate_* ----------------------------------------------------------------------

    /// Where a `Simulate_*` service may work on `vm`'s client state: a VM
    /// whose code is machine code always (its registers are the program's),
    /// a VM whose code is Rust inside a nested-execution block or a
    /// call-back (where the VMM built a frame on its stack).
    pub(crate) fn simulate_allowed(&self, vm: VmId, service: &'static str) -> Result<(), VmmError> {
        if self.nest_depth(vm) > 0 || self.vm_has_memory(vm) || self.stack.in_call_back() {
            return Ok(());
        }
        Err(self.refuse(
            Violation::UnbalancedNestExec,
            format!(
                "{service} on a VM whose code is Rust, outside a nested execution block and a call-back: there is no \
                 client frame to work on (call Begin_Nest_Exec first)"
            ),
            Some(service),
        ))
    }

    /// `Simulate_Iret`.
    pub(crate) fn simulate_iret(&self, vm: VmId) -> Result<(), VmmError> {
        self.simulate_allowed(vm, "Simulate_Iret")?;
        Ok(self.with_client_stack(vm, |c, s| nest::simulate_iret(c, s))??)
    }

    /// `Simulate_Far_Jmp`.
    pub(crate) fn simulate_far_jmp(&self, vm: VmId, segment: u16, offset: u32) -> Result<(), VmmError> {
        self.simulate_allowed(vm, "Simulate_Far_Jmp")?;
        self.with_client_stack(vm, |c, _| nest::simulate_far_jmp(c, segment, offset))
    }

    /// `Simulate_Far_Ret_N` (`Simulate_Far_Ret`: `bytes` = 0).
    pub(crate) fn simulate_far_ret_n(&self, vm: VmId, bytes: u32, service: &'static str) -> Result<(), VmmError> {
        self.simulate_allowed(vm, service)?;
        Ok(self.with_client_stack(vm, |c, s| nest::simulate_far_ret_n(c, s, bytes))??)
    }

    /// `Build_Int_Stack_Frame`: no hook is called.
    pub(crate) fn build_int_stack_frame(&self, vm: VmId, segment: u16, offset: u32) -> Result<(), VmmError> {
        self.simulate_allowed(vm, "Build_Int_Stack_Frame")?;
        self.with_client_stack(vm, |c, s| nest::build_int_stack_frame(c, s, segment, offset))??;
        self.frame_built(vm);
        Ok(())
    }

    /// `Simulate_Int` on a VM whose stack is the VMM's to write: the hook
    /// chain, then (when every hook passed it on) an IRET frame to the
    /// VM's vector.
    pub(crate) fn simulate_int_in(&self, vm: VmId, n: u8) -> Result<(), VmmError> {
        if let Some(handler) = self.pm_int_handler(vm, n) {
            return self.simulate_pm_int(vm, handler);
        }
        if self.v86_int_chain(vm, n) {
            return Ok(());
        }
        if self.vm_has_memory(vm) {
            let vector = self.get_v86_int_vector(vm, n);
            self.with_client_stack(vm, |c, s| nest::simulate_int(c, s, vector))??;
            self.frame_built(vm);
            return Ok(());
        }
        // A VM whose code is Rust: its table (a Rust DOS program's export
        // is called as the handler), else the host's handler (reached by
        // `Resume_Exec`).
        let vector = self.vectors.borrow().v86_vector(vm, n).unwrap_or_else(|| Core::int_vector(n));
        self.with_client_stack(vm, |c, s| nest::simulate_int(c, s, vector))??;
        self.frame_built(vm);
        self.push_iret_point_for_export(vm, vector)
    }

    /// The protected-mode handler of interrupt `n` in `vm` when the VM
    /// runs protected-mode code: see [`Core::pm_vector_handler`].
    pub(crate) fn pm_int_handler(&self, vm: VmId, n: u8) -> Option<u32> {
        if !self.vms.borrow().get(vm).is_some_and(|v| v.pm) {
            return None;
        }
        self.pm_vector_handler(vm, n)
    }

    /// The entry of `vm`'s one PM vector table for `n` as a 16:16 address
    /// (a PM call-back or a Rust export), whoever wrote it last
    /// (`Set_PM_Int_Vector` or `Ring3::set_int_vector`). `None`: the
    /// vector is still the VMM's default, which reflects the interrupt to
    /// V86 mode (also when it was set back to the default it read,
    /// `FFFE:n`).
    pub(crate) fn pm_vector_handler(&self, vm: VmId, n: u8) -> Option<u32> {
        let set = self.vectors.borrow().pm_vector(vm, n).map(|(sel, off)| ((sel as u32) << 16) | (off & 0xFFFF));
        set.filter(|&h| h != Core::int_vector(n))
    }

    /// The entry of `vm`'s V86 vector table for `n` kept by the VMM (a VM
    /// whose code is Rust: a Rust DOS program's export, a device's
    /// call-back, whoever wrote it last: `Set_V86_Int_Vector` or
    /// `Ring3::set_int_vector`). `None`: the host's handler, the default.
    pub(crate) fn v86_vector_handler(&self, vm: VmId, n: u8) -> Option<u32> {
        self.vectors.borrow().v86_vector(vm, n).filter(|&h| h != Core::int_vector(n))
    }

    /// An IRET frame to `handler` was just built on `vm`'s stack: when it
    /// is a Rust export (entered by a far call), a return to the VMM's
    /// IRET point (`PM_IRET_POINT`) goes above it: `Resume_Exec` calls the
    /// export, returns there, and pops the frame as the handler's `IRET`.
    fn push_iret_point_for_export(&self, vm: VmId, handler: u32) -> Result<(), VmmError> {
        let export = matches!(self.ring3.borrow().resolve(handler), Target::Export { .. });
        if export {
            self.with_client_stack(vm, |c, s| {
                nest::push_words(c, s, &[(PM_IRET_POINT >> 16) as u16, PM_IRET_POINT as u16])
            })??;
        }
        Ok(())
    }

    /// `Simulate_Int` in protected mode: an IRET frame to `handler`, no V86
    /// hook (those see only what is reflected to V86). A Rust export is
    /// entered by a far call, so above the frame goes a return to the
    /// VMM's IRET point (`PM_IRET_POINT`): `Resume_Exec` calls the export,
    /// returns there, and pops the frame as the handler's `IRET`.
    fn simulate_pm_int(&self, vm: VmId, handler: u32) -> Result<(), VmmError> {
        self.with_client_stack(vm, |c, s| nest::simulate_int(c, s, handler))??;
        self.frame_built(vm);
        self.push_iret_point_for_export(vm, handler)
    }

    // ---- call-backs ----------------------------------------------------------------------

    /// `Allocate_V86_Call_Back` / `Allocate_PM_Call_Back`: the address.
    pub(crate) fn allocate_call_back(
        &self,
        pm: bool,
        owner: InstanceId,
        ref_data: u32,
        callback: Callback,
    ) -> Result<u32, VmmError> {
        let r = self.vectors.borrow_mut().allocate_call_back(pm, owner, ref_data, callback);
        r.map_err(|(_, cb)| {
            drop(cb);
            VmmError::FAILED
        })
    }

    /// Whether `ptr` is a call-back address (one comparison for anything
    /// else).
    #[inline]
    pub(crate) fn is_call_back(&self, ptr: u32) -> bool {
        let seg = (ptr >> 16) as u16;
        (seg == crate::vmm::vectors::V86_CALLBACK_SEGMENT || seg == crate::vmm::vectors::PM_CALLBACK_SELECTOR)
            && self.vectors.borrow().call_back_at(ptr).is_some()
    }

    /// `vm` arrived at call-back address `ptr`: its callback with EBX VM,
    /// EDX reference data, on the client registers as the VM left them
    /// (CS:IP at the call-back; the callback moves them: nothing is popped
    /// for it). `FAILED` when its device is gone or it is running already.
    pub(crate) fn enter_call_back(&self, vm: VmId, ptr: u32) -> Result<(), VmmError> {
        let Some((pm, number)) = self.vectors.borrow().call_back_at(ptr) else { return Err(VmmError::FAILED) };
        let taken = self.vectors.borrow_mut().take_call_back(pm, number);
        let Some((owner, ref_data, mut callback)) = taken else {
            return Err(self.refuse(
                Violation::CallBackUnavailable,
                format!(
                    "VM {vm:#x} reached the call-back at {:04X}:{:04X}, whose device is gone or whose callback is \
                     running already",
                    ptr >> 16,
                    ptr & 0xFFFF
                ),
                None,
            ));
        };
        let mut regs = Regs { ebx: vm.raw(), edx: ref_data, ..Regs::default() };
        let outcome = self.stack.call_back(|| callback.call(self, Context::Vm, &mut regs));
        self.vectors.borrow_mut().put_call_back(pm, number, callback);
        self.trace(|| TraceEvent::CallBack {
            vm: vm.raw(),
            address: ptr,
            device: self.instance_name(owner).to_string(),
            outcome,
        });
        let at = self.client_of(vm).map(|c| ((c.cs & 0xFFFF) << 16) | (c.eip & 0xFFFF));
        if at == Some(ptr) {
            // The VM would arrive at the call-back again, for ever.
            return Err(self.as_caller(owner, || {
                self.refuse(
                    Violation::CallBackNoReturn,
                    format!(
                        "the call-back at {:04X}:{:04X} returned with VM {vm:#x}'s CS:IP still at it; a call-back \
                         moves it (Simulate_Far_Ret after a far call, Simulate_Iret after an interrupt)",
                        ptr >> 16,
                        ptr & 0xFFFF
                    ),
                    None,
                )
            }));
        }
        Ok(())
    }

    /// A Rust module far-calls call-back `ptr` (the SDK's far call): a far
    /// return frame goes on the VM's stack above the arguments, as a
    /// `CALL FAR` would leave it, the callback runs, and the stack is
    /// back where it was for the caller, with DX:AX the result.
    pub(crate) fn ring3_call_back(&self, vm: VmId, ptr: u32, args: &[u8], int: bool) -> Result<u32, VmmError> {
        let before = self.client_of(vm).ok_or(VmmError::INVALID_HANDLE)?;
        self.with_client_stack(vm, |c, s| {
            // The arguments lie on the stack as given, first byte at the
            // lowest address (SS:SP+4 once the return address is pushed).
            let words: Vec<u16> =
                args.chunks(2).rev().map(|w| w[0] as u16 | (*w.get(1).unwrap_or(&0) as u16) << 8).collect();
            nest::push_words(c, s, &words)?;
            if int {
                nest::push_words(c, s, &[c.eflags as u16])?;
            }
            nest::push_words(c, s, &[c.cs as u16, c.eip as u16])?;
            c.cs = ptr >> 16;
            c.eip = ptr & 0xFFFF;
            Ok::<(), VmmError>(())
        })??;
        let r = self.enter_call_back(vm, ptr);
        let mut after = self.client_of(vm).ok_or(VmmError::INVALID_HANDLE)?;
        let value = (after.eax & 0xFFFF) | ((after.edx & 0xFFFF) << 16);
        after.esp = before.esp;
        after.cs = before.cs;
        after.eip = before.eip;
        self.set_client_of(vm, after);
        r.map(|_| value)
    }

    // ---- Call_When_VM_Returns ------------------------------------------------------------

    /// `Call_When_VM_Returns`: the callback runs when `vm` returns through
    /// the next interrupt frame the VMM builds for it, and/or at the
    /// time-out (`timeout_ms`: 0 none, > 0 whichever comes first, < 0 both).
    pub(crate) fn call_when_vm_returns(
        &self,
        vm: VmId,
        owner: InstanceId,
        timeout_ms: i32,
        ref_data: u32,
        callback: Callback,
    ) -> Result<(), VmmError> {
        let r = Return {
            vm,
            owner,
            ref_data,
            timeout_ms,
            callback: Some(callback),
            original: None,
            timer: None,
            timed_out: false,
        };
        let number = self.vectors.borrow_mut().add_return(r).map_err(|_| VmmError::FAILED)?;
        if timeout_ms != 0 {
            let ms = timeout_ms.unsigned_abs();
            let due = Due::System(self.sched.now() + Duration::from_millis(ms as u64));
            let cb = Callback::host(owner, "Call_When_VM_Returns", move |core: &Core, _regs: &mut Regs| {
                core.vm_return_timed_out(number);
                Carry::Clear
            });
            let handle = self.sched.add_timeout(TimeoutRec { due, ms, cb });
            if let Some(r) = self.vectors.borrow_mut().return_mut(number) {
                r.timer = handle;
            }
            if let Some(handle) = handle {
                self.trace(|| TraceEvent::TimeoutScheduled {
                    handle: handle.raw(),
                    timer: "global",
                    vm: None,
                    ms,
                    device: self.instance_name(owner).to_string(),
                    callback: shorten("Call_When_VM_Returns"),
                });
            }
        }
        Ok(())
    }

    /// An interrupt frame was just built on `vm`'s stack (its return
    /// address at SS:SP): a `Call_When_VM_Returns` registration waiting
    /// for one puts its break point there.
    pub(crate) fn frame_built(&self, vm: VmId) {
        let Some(number) = self.vectors.borrow().unframed_return(vm) else { return };
        self.take_frame(vm, number);
    }

    #[cold]
    fn take_frame(&self, vm: VmId, number: usize) {
        let original = self.with_client_stack(vm, |c, s| {
            let sp = c.esp as u16;
            let ip = s.byte(sp) as u32 | (s.byte(sp.wrapping_add(1)) as u32) << 8;
            let cs = s.byte(sp.wrapping_add(2)) as u32 | (s.byte(sp.wrapping_add(3)) as u32) << 8;
            let bp = number as u16;
            s.set_byte(sp, bp as u8);
            s.set_byte(sp.wrapping_add(1), (bp >> 8) as u8);
            s.set_byte(sp.wrapping_add(2), RETURN_SEGMENT as u8);
            s.set_byte(sp.wrapping_add(3), (RETURN_SEGMENT >> 8) as u8);
            (cs << 16) | ip
        });
        if let (Ok(original), Some(r)) = (original, self.vectors.borrow_mut().return_mut(number)) {
            r.original = Some(original);
        }
    }

    /// The time-out of registration `number` expired: its callback with
    /// carry set (and it ends unless the time-out was negative).
    fn vm_return_timed_out(&self, number: usize) {
        let taken = {
            let mut v = self.vectors.borrow_mut();
            let Some(r) = v.return_mut(number) else { return };
            r.timer = None;
            r.timed_out = true;
            let (keep, framed) = (r.timeout_ms < 0, r.original.is_some());
            let taken = (r.vm, r.owner, r.ref_data, r.callback.take(), keep);
            // A positive time-out before any frame was built: nothing is
            // left to restore.
            if !keep && !framed {
                v.end_return(number);
            }
            taken
        };
        let (vm, owner, ref_data, callback, keep) = taken;
        let Some(mut callback) = callback else { return };
        let mut regs = Regs { ebx: vm.raw(), edx: ref_data, flags: CF_MASK, ..Regs::default() };
        let outcome = callback.call(self, Context::Event, &mut regs);
        self.trace(|| TraceEvent::VmReturn {
            vm: vm.raw(),
            device: self.instance_name(owner).to_string(),
            why: "timeout",
            outcome,
        });
        // A negative time-out: called again at the return. A positive one:
        // the registration stays until the VM returns, to restore its
        // return address, without a callback.
        if keep && let Some(r) = self.vectors.borrow_mut().return_mut(number) {
            r.callback = Some(callback);
        }
    }

    /// Whether `ptr` is a `Call_When_VM_Returns` break point.
    #[inline]
    pub(crate) fn is_return_point(ptr: u32) -> bool {
        (ptr >> 16) as u16 == RETURN_SEGMENT
    }

    /// `vm` returned to break point `ptr`: CS:IP back to the real return
    /// address, and the callback (carry clear; ZF set when it was called
    /// for a negative time-out already). `false` when `ptr` is no
    /// registration of `vm`'s.
    pub(crate) fn vm_returned(&self, vm: VmId, ptr: u32) -> bool {
        let number = (ptr & 0xFFFF) as usize;
        let ended = {
            let mut v = self.vectors.borrow_mut();
            match v.return_mut(number) {
                Some(r) if r.vm == vm && r.original.is_some() => v.end_return(number),
                _ => None,
            }
        };
        let Some(r) = ended else { return false };
        if let Some(timer) = r.timer {
            self.cancel_timeout(timer, crate::trace::CancelReason::Cancelled);
        }
        let original = r.original.unwrap_or(0);
        if let Some(mut c) = self.client_of(vm) {
            c.cs = original >> 16;
            c.eip = original & 0xFFFF;
            self.set_client_of(vm, c);
        }
        if let Some(mut callback) = r.callback {
            let zf = if r.timed_out { ZF_MASK } else { 0 };
            let mut regs = Regs { ebx: vm.raw(), edx: r.ref_data, flags: zf, ..Regs::default() };
            let outcome = callback.call(self, Context::Vm, &mut regs);
            self.trace(|| TraceEvent::VmReturn {
                vm: vm.raw(),
                device: self.instance_name(r.owner).to_string(),
                why: "return",
                outcome,
            });
        }
        true
    }

    // ---- fault hooks -----------------------------------------------------------------------

    /// `Hook_V86_Fault` / `Hook_PM_Fault`: the hook's handle. A hook
    /// installed during `Sys_Critical_Init` sits behind the VMM's own
    /// handling, a later one in front of it.
    pub(crate) fn hook_fault(
        &self,
        kind: FaultKind,
        owner: InstanceId,
        n: u32,
        callback: Callback,
    ) -> Result<u32, VmmError> {
        let early = self.phase.get() <= Phase::SysCriticalInit;
        let Ok(n) = u8::try_from(n) else { return Err(VmmError::FAILED) };
        let r = self.vectors.borrow_mut().hook_fault(kind, n, owner, callback, early);
        r.map(|(id, _)| id).map_err(|_| VmmError::FAILED)
    }

    /// `Unhook_V86_Fault` / `Unhook_PM_Fault`.
    pub(crate) fn unhook_fault(&self, kind: FaultKind, owner: InstanceId, n: u32, hook: u32) -> Result<(), VmmError> {
        let Ok(n) = u8::try_from(n) else { return Err(VmmError::FAILED) };
        let r = self.vectors.borrow_mut().unhook_fault(kind, n, owner, hook);
        match r {
            Ok(cb) => {
                drop(cb);
                Ok(())
            }
            Err(VectorError::BadNumber) => Err(VmmError::FAILED),
            Err(_) => Err(VmmError::NOT_FOUND),
        }
    }

    /// `Get_Fault_Hook_Addrs`: for each mode (V86, PM, VMM) the handle of
    /// the hook fault `n` is offered to first, 0 when the VMM's own
    /// handling comes first. `FAILED` for 2 and numbers above 4Fh.
    pub(crate) fn get_fault_hook_addrs(&self, n: u32) -> Result<[u32; 3], VmmError> {
        let n = u8::try_from(n).ok().filter(|&n| n != 2 && n <= crate::vmm::vectors::MAX_FAULT);
        let Some(n) = n else { return Err(VmmError::FAILED) };
        let v = self.vectors.borrow();
        Ok([FaultKind::V86, FaultKind::Pm, FaultKind::Vmm].map(|k| v.first_fault_hook(k, n)))
    }

    /// Offer fault `n` of `vm` to the hooks of `stage`, newest first: `true`
    /// when one handled it (returned carry clear).
    pub(crate) fn fault_hooks(&self, kind: FaultKind, vm: VmId, n: u8, stage: FaultStage) -> bool {
        self.fault_hooks_with(kind, vm, n, stage, 0)
    }

    /// [`Core::fault_hooks`] with EDX for the hooks (a ring-0 page fault's
    /// linear address). A `Hook_VMM_Fault` hook runs as at interrupt time:
    /// only asynchronous services are legal in it.
    pub(crate) fn fault_hooks_with(&self, kind: FaultKind, vm: VmId, n: u8, stage: FaultStage, edx: u32) -> bool {
        let chain = self.vectors.borrow().fault_chain(kind, n, stage);
        let context = if kind == FaultKind::Vmm { Context::Interrupt } else { Context::Vm };
        for id in chain {
            let Some(mut taken): Option<Taken> = self.vectors.borrow_mut().take_fault(kind, n, id) else { continue };
            let mut regs = Regs { eax: n as u32, ebx: vm.raw(), edx, flags: CF_MASK, ..Regs::default() };
            let outcome = taken.callback.call(self, context, &mut regs);
            let owner = taken.owner;
            let dropped = self.vectors.borrow_mut().put_fault(kind, n, taken);
            drop(dropped);
            let handled = matches!(outcome, CallOutcome::Clear);
            self.trace(|| TraceEvent::FaultHook {
                vector: n,
                vm: vm.raw(),
                device: self.instance_name(owner).to_string(),
                stage: if stage == FaultStage::Front { "front" } else { "behind" },
                handled,
                mode: kind.mode(),
            });
            if handled || self.is_fatal() {
                return true;
            }
        }
        false
    }

    /// Fault `n` of ring-0 code (a device's access to linear address
    /// `address` that is not there: 0Eh) offered to the `Hook_VMM_Fault`
    /// hooks, in front and behind alike (the VMM has no handling of its
    /// own for a device's bad pointer): whether one handled it. One map
    /// lookup when nothing hooks it.
    pub(crate) fn vmm_fault(&self, n: u8, address: u32) -> bool {
        let vm = self.cur_vm.get();
        self.fault_hooks_with(FaultKind::Vmm, vm, n, FaultStage::Front, address)
            || self.fault_hooks_with(FaultKind::Vmm, vm, n, FaultStage::Behind, address)
    }

    /// A VM was destroyed: its tables go.
    pub(crate) fn vectors_forget_vm(&self, vm: VmId) {
        self.vectors.borrow_mut().forget_vm(vm);
    }

    /// What `instance` still has (unload): hooks, call-backs' callbacks,
    /// `Call_When_VM_Returns` registrations, named.
    pub(crate) fn vectors_reclaim(&self, instance: InstanceId) -> Vec<String> {
        let (names, callbacks) = self.vectors.borrow_mut().take_owned(instance);
        drop(callbacks);
        names
    }
}
