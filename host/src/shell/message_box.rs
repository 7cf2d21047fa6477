//! SHELL's message boxes, the way a VxD warns the user: synchronous
//! `SHELL_SYSMODAL_Message`, asynchronous `SHELL_Message` (the answer comes
//! to a callback), the contention dialog of `SHELL_Resolve_Contention`, and
//! `SHELL_GetVMInfo`'s view of a VM's PIF settings. A run's answers come
//! from the manifest (`[shell] answers`, then `[windows]
//! message_box_answer`); an answer the box has no button for is replaced by
//! its default button.

use std::cell::Cell;
use std::rc::Rc;

use vmm_plugin_api::abi::{Carry, Regs, VmmError};
use vmm_plugin_api::ddk::*;

use crate::machine::{Core, Phase};
use crate::trace::TraceEvent;
use crate::violation::Violation;
use crate::vmm::callback::Callback;
use crate::vmm::context::Context;
use crate::vmm::ids::{InstanceId, VmId};
use crate::vmm::vm::VmLife;

/// The answers a message box of type `flags & 0xF` can give, in button
/// order.
fn buttons(flags: u32) -> &'static [u32] {
    match flags & 0xF {
        MB_OKCANCEL => &[IDOK, IDCANCEL],
        MB_ABORTRETRYIGNORE => &[IDABORT, IDRETRY, IDIGNORE],
        MB_YESNOCANCEL => &[IDYES, IDNO, IDCANCEL],
        MB_YESNO => &[IDYES, IDNO],
        MB_RETRYCANCEL => &[IDRETRY, IDCANCEL],
        _ => &[IDOK],
    }
}

/// The default button's answer (`MB_DEFBUTTON1..3`).
fn default_button(flags: u32) -> u32 {
    let b = buttons(flags);
    let index = match flags & (MB_DEFBUTTON2 | MB_DEFBUTTON3) {
        MB_DEFBUTTON2 => 1,
        MB_DEFBUTTON3 => 2,
        _ => 0,
    };
    *b.get(index).unwrap_or(&b[0])
}

/// The `MB_*` bits SHELL understands; `MB_NOWINDOW`, `MB_HANGSYS` and
/// `MB_APPYTIME` only on `SHELL_SYSMODAL_Message`.
const SYSMODAL_ONLY: u32 = MB_NOWINDOW | MB_HANGSYS | MB_APPYTIME;
const KNOWN: u32 = 0xF | 0xF0 | MB_DEFBUTTON2 | MB_DEFBUTTON3 | MB_SYSTEMMODAL | MB_NOFOCUS | MB_ASAP | SYSMODAL_ONLY;

/// What a message box shows.
pub(crate) struct MessageText {
    pub(crate) text: String,
    /// `None`: the standard caption.
    pub(crate) caption: Option<String>,
}

impl Core {
    /// Check the responsible VM and the flags of a message box; `false`
    /// refuses the call.
    fn message_args_ok(&self, service: &'static str, vm: VmId, flags: u32, allowed: u32) -> bool {
        if !self.vm_valid(vm) {
            return !self.violation(
                Violation::InvalidVmHandle,
                format!("{service} was given VM handle {vm:#010X}, which is not a live VM"),
                Some(service),
            );
        }
        let bad = if flags & 0xF > MB_RETRYCANCEL {
            Some(format!("message box type {} is not one of MB_OK..MB_RETRYCANCEL", flags & 0xF))
        } else if flags & !allowed != 0 {
            let extra = flags & !allowed;
            Some(if extra & SYSMODAL_ONLY != 0 {
                format!(
                    "{extra:#X} includes MB_NOWINDOW, MB_HANGSYS or MB_APPYTIME, which only SHELL_SYSMODAL_Message takes"
                )
            } else {
                format!("bits {extra:#X} are not MB_* flags SHELL knows")
            })
        } else {
            None
        };
        match bad {
            Some(what) => !self.violation(
                Violation::InvalidParameter,
                format!("{service} flags {flags:#X}: {what}"),
                Some(service),
            ),
            None => true,
        }
    }

    /// Show a message box and answer it: trace `shell_message` and return
    /// the answer.
    fn show_message(
        &self,
        service: &'static str,
        device: String,
        vm: VmId,
        handle: Option<u32>,
        m: &MessageText,
        flags: u32,
    ) -> u32 {
        let used = self.shell.answers_used.get();
        let (configured, source) = match self.manifest.shell.answers.get(used) {
            Some(a) => {
                self.shell.answers_used.set(used + 1);
                (*a, "manifest")
            }
            None => (self.manifest.windows.message_box_answer, "default"),
        };
        let (answer, source) = if buttons(flags).contains(&configured) {
            (configured, source)
        } else {
            (default_button(flags), "default_button")
        };
        let caption = m.caption.clone().unwrap_or_else(|| self.standard_caption(vm));
        // Before Windows runs, and with MB_NOWINDOW, SHELL shows the message
        // in a full-screen text mode instead of a dialog.
        let display =
            if self.phase.get() != Phase::Running || flags & MB_NOWINDOW != 0 { "full_screen" } else { "window" };
        tracing::info!("[{caption}] {} -> {answer}", m.text);
        self.trace(|| TraceEvent::ShellMessage {
            service,
            device,
            vm: vm.raw(),
            handle,
            text: m.text.clone(),
            caption,
            flags,
            answer,
            source,
            display,
        });
        answer
    }

    /// The caption SHELL uses when the caller passes none: the VM's title
    /// (a DOS VM's name), "Windows" for the system VM.
    fn standard_caption(&self, vm: VmId) -> String {
        if vm == self.sys_vm.get() {
            return "Windows".to_string();
        }
        self.vms.borrow().get(vm).map_or_else(|| "Windows".to_string(), |v| v.name.to_string())
    }

    /// The messages the VMM queued about `vm`, which is becoming not
    /// executeable: each shown system-modal, as `SHELL_SYSMODAL_Message`
    /// on behalf of the device that asked.
    pub(crate) fn shell_show_system_messages(&self, vm: VmId) {
        let mine: Vec<_> = {
            let mut queued = self.shell.system_messages.borrow_mut();
            if queued.is_empty() {
                return;
            }
            let (mine, rest) = std::mem::take(&mut *queued).into_iter().partition(|m| m.vm == vm);
            *queued = rest;
            mine
        };
        for m in mine {
            let text = MessageText { text: m.text, caption: None };
            let flags = MB_OK | MB_ICONHAND | MB_SYSTEMMODAL;
            self.show_message("SHELL_SYSMODAL_Message", m.device.to_string(), vm, None, &text, flags);
        }
    }

    /// `SHELL_SYSMODAL_Message`: the answer.
    pub(crate) fn shell_sysmodal_message(&self, vm: VmId, flags: u32, m: &MessageText) -> Result<u32, VmmError> {
        const SERVICE: &str = "SHELL_SYSMODAL_Message";
        // SHELL.H's wrapper ORs MB_SYSTEMMODAL in; so does the emulator.
        let flags = flags | MB_SYSTEMMODAL;
        if !self.message_args_ok(SERVICE, vm, flags, KNOWN) {
            return Err(VmmError::VIOLATION);
        }
        if flags & MB_APPYTIME != 0
            && !self.at_appy_time()
            && self.violation(
                Violation::InvalidParameter,
                format!("{SERVICE} with MB_APPYTIME, which says the caller is at appy time, but it is not"),
                Some(SERVICE),
            )
        {
            return Err(VmmError::VIOLATION);
        }
        let answer = self.show_message(SERVICE, self.shell_caller_name(), vm, None, m, flags);
        if flags & MB_HANGSYS != 0 {
            // For errors such as parity errors: Windows hangs with interrupts
            // disabled once the user answered.
            self.set_fatal(
                format!("the system hangs with interrupts disabled (MB_HANGSYS message: {})", m.text),
                Some(self.shell_caller_name()),
            );
            return Err(VmmError::FATAL);
        }
        Ok(answer)
    }

    /// `SHELL_Message`: queue the message box; the answer goes to `cb`.
    /// `buffers` are the caller's text and caption addresses (a `VxDCall`),
    /// which must stay valid until the message is shown. The event handle.
    pub(crate) fn shell_message(
        &self,
        vm: VmId,
        flags: u32,
        m: MessageText,
        buffers: Option<(u32, u32)>,
        cb: Option<Callback>,
    ) -> Result<u32, VmmError> {
        const SERVICE: &str = "SHELL_Message";
        if !self.message_args_ok(SERVICE, vm, flags, KNOWN & !SYSMODAL_ONLY) {
            return Err(VmmError::VIOLATION);
        }
        let device = self.shell_caller_name();
        let caller = self.current_caller().unwrap_or(InstanceId::HOST);
        let shell = self.shell_instance().unwrap_or(InstanceId::HOST);
        let handle = Rc::new(Cell::new(0u32));
        let slot = handle.clone();
        let mut cb = cb;
        let show = Callback::host(shell, SERVICE, move |core: &Core, _regs: &mut Regs| {
            if let Some(addresses) = buffers {
                core.as_caller(caller, || core.check_message_buffers(addresses, &m));
            }
            let answer = core.show_message(SERVICE, device.clone(), vm, Some(slot.get()), &m, flags);
            if let Some(mut cb) = cb.take() {
                let mut regs = Regs { eax: answer, ebx: core.cur_vm.get().raw(), ..Regs::default() };
                cb.call(core, Context::Event, &mut regs);
            }
            Carry::Clear
        });
        // The message appears when the system VM can show it: out of the
        // critical section, and soon (boosted) with MB_ASAP.
        let boost = if flags & MB_ASAP != 0 { HIGH_PRI_DEVICE_BOOST as i32 } else { 0 };
        let sys = self.sys_vm.get();
        let h = self.priority_event(shell, boost, sys, PEF_WAIT_NOT_CRIT | PEF_ALWAYS_SCHED, 0, show)?;
        handle.set(h);
        Ok(h)
    }

    /// When `SHELL_Message` shows a message whose text came from a caller's
    /// buffers: they must still hold it (Win95 reads them only then).
    fn check_message_buffers(&self, (text, caption): (u32, u32), m: &MessageText) {
        const SERVICE: &str = "SHELL_Message";
        let now_holds = |addr: u32| {
            let heap = self.heap.borrow();
            heap.slice_from(addr).ok().and_then(|b| b.iter().position(|c| *c == 0).map(|n| crate::shell::ansi(&b[..n])))
        };
        let text_ok = now_holds(text).as_deref() == Some(m.text.as_str());
        let caption_ok = caption == 0 || now_holds(caption) == m.caption;
        if !(text_ok && caption_ok) {
            self.violation(
                Violation::BadPointer,
                format!(
                    "{SERVICE}: the text or caption buffer was freed or changed before the message was shown; it \
                     must stay valid until the callback runs (the message shows the text as it was at the call)"
                ),
                Some(SERVICE),
            );
        }
    }

    /// `SHELL_Resolve_Contention`: the winner, or `FAILED` when SHELL cannot
    /// ask (Windows is not running).
    pub(crate) fn shell_resolve_contention(
        &self,
        owner: VmId,
        contender: VmId,
        device: &str,
    ) -> Result<VmId, VmmError> {
        const SERVICE: &str = "SHELL_Resolve_Contention";
        for vm in [owner, contender] {
            if !self.vm_valid(vm) {
                return Err(self.refuse(
                    Violation::InvalidVmHandle,
                    format!("{SERVICE} was given VM handle {vm:#010X}, which is not a live VM"),
                    Some(SERVICE),
                ));
            }
        }
        if owner == contender {
            return Ok(owner);
        }
        if self.phase.get() != Phase::Running {
            return Err(VmmError::FAILED);
        }
        let name = |vm: VmId| {
            if vm == self.sys_vm.get() {
                "Windows".to_string()
            } else {
                self.vms.borrow().get(vm).map_or_else(String::new, |v| v.name.to_string())
            }
        };
        let device = device.trim_end();
        let m = MessageText {
            text: format!(
                "The {device} device is in use by {}. Do you want to assign it to {} instead?",
                name(owner),
                name(contender)
            ),
            caption: Some("Device Conflict".to_string()),
        };
        // "No" is the default: the owner keeps the device.
        let flags = MB_YESNO | MB_ICONEXCLAMATION | MB_DEFBUTTON2 | MB_SYSTEMMODAL;
        let answer = self.show_message(SERVICE, self.shell_caller_name(), contender, None, &m, flags);
        Ok(if answer == IDYES { contender } else { owner })
    }

    /// `SHELL_GetVMInfo`: the `SGVMI_*` bits of `vm`'s PIF settings.
    pub(crate) fn shell_get_vm_info(&self, vm: VmId) -> Result<u32, VmmError> {
        const SERVICE: &str = "SHELL_GetVMInfo";
        let info = self.vms.borrow().get(vm).map(|v| (v.life, v.name.clone()));
        let Some((life, name)) = info else {
            return Err(self.refuse(
                Violation::InvalidVmHandle,
                format!("{SERVICE} was given VM handle {vm:#010X}, which is not a live VM"),
                Some(SERVICE),
            ));
        };
        // During the VM's Create_VM its PIF settings are not known yet.
        if life == VmLife::Creating
            && self.stack.message() == Some(CREATE_VM)
            && self.violation(
                Violation::InvalidParameter,
                format!("{SERVICE} for VM {vm:#010X} during its creation; it is valid only after Create_VM"),
                Some(SERVICE),
            )
        {
            return Err(VmmError::VIOLATION);
        }
        if vm == self.sys_vm.get() {
            // The system VM has no PIF.
            return Ok(0);
        }
        // A DOS VM runs with the default PIF's settings (close on exit) and
        // the manifest's display usage.
        let windowed = self.manifest.vms.iter().any(|e| e.windowed && e.name.eq_ignore_ascii_case(&name));
        Ok(SGVMI_CLSEXIT | if windowed { SGVMI_WINDOWED } else { 0 })
    }
}
