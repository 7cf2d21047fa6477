//! `_SHELL_PostMessage`, Windows 95's built-in VPOSTD: a VxD (even at
//! interrupt time) has SHELL post a message into the system VM, from an
//! event that waits for the system VM's interrupts and, unless
//! `SPM_UM_DoNotWaitForCrit`, for the critical section; an optional
//! callback learns what `PostMessage` returned. And
//! `_SHELL_PostShellMessage`, which posts to the shell's window.

use vmm_plugin_api::abi::{Carry, Regs};
use vmm_plugin_api::ddk::{
    HIGH_PRI_DEVICE_BOOST, PEF_ALWAYS_SCHED, PEF_WAIT_FOR_STI, PEF_WAIT_NOT_CRIT, SPM_UM_ALWAYSSCHEDULE,
    SPM_UM_DONOTWAITFORCRIT, WM_NULL, WM_USER,
};

use crate::machine::{Core, Phase};
use crate::trace::TraceEvent;
use crate::violation::Violation;
use crate::vmm::callback::Callback;
use crate::vmm::context::Context;
use crate::vmm::ids::InstanceId;

/// The message `_SHELL_PostShellMessage` posts. The DDK does not document
/// it (Explorer and SHELL agreed on a private one); the emulator posts
/// `WM_USER` with the caller's wParam and lParam.
pub(crate) const SHELL_NOTIFY: u16 = WM_USER;

impl Core {
    /// Report a 16-bit argument with high bits set; `true` refuses the call.
    fn high_word_set(&self, service: &'static str, what: &str, value: u32) -> bool {
        value >> 16 != 0
            && self.violation(
                Violation::InvalidParameter,
                format!("{service}: {what} {value:#X} has bits in its reserved high word (it is 16-bit)"),
                Some(service),
            )
    }

    /// `_SHELL_PostMessage`: non-zero if the post was queued (or done), 0
    /// when refused.
    pub(crate) fn shell_post_message(
        &self,
        hwnd: u32,
        msg: u32,
        wparam: u32,
        lparam: u32,
        cb: Option<Callback>,
    ) -> u32 {
        const SERVICE: &str = "_SHELL_PostMessage";
        let reserved = msg & 0xFFFF_0000 & !(SPM_UM_DONOTWAITFORCRIT | SPM_UM_ALWAYSSCHEDULE);
        if self.high_word_set(SERVICE, "hwnd", hwnd) || self.high_word_set(SERVICE, "wParam", wparam) {
            return 0;
        }
        if reserved != 0
            && self.violation(
                Violation::InvalidParameter,
                format!(
                    "{SERVICE}: uMsg {msg:#X} sets reserved scheduling bits {reserved:#X} (only \
                     SPM_UM_DoNotWaitForCrit and SPM_UM_AlwaysSchedule exist)"
                ),
                Some(SERVICE),
            )
        {
            return 0;
        }
        let mut pef = PEF_WAIT_FOR_STI;
        if msg & SPM_UM_DONOTWAITFORCRIT == 0 {
            pef |= PEF_WAIT_NOT_CRIT;
        }
        // Before Windows runs there is no USER to post to: the post waits
        // for the first dispatch point instead of running inside Device_Init.
        if msg & SPM_UM_ALWAYSSCHEDULE != 0 || self.phase.get() != Phase::Running {
            pef |= PEF_ALWAYS_SCHED;
        }
        let (hwnd, message, wparam) = (hwnd as u16, msg as u16, wparam as u16);
        let mut cb = cb;
        let post = Callback::host(
            self.shell_instance().unwrap_or(InstanceId::HOST),
            SERVICE,
            move |core: &Core, _regs: &mut Regs| {
                // WM_NULL posts nothing but reports success.
                let posted = message == WM_NULL || core.post_message(hwnd, message, wparam, lparam);
                if let Some(mut cb) = cb.take() {
                    let mut regs = Regs { eax: u32::from(posted), ebx: core.cur_vm.get().raw(), ..Regs::default() };
                    cb.call(core, Context::Event, &mut regs);
                }
                Carry::Clear
            },
        );
        let shell = self.shell_instance().unwrap_or(InstanceId::HOST);
        let sys = self.sys_vm.get();
        match self.priority_event(shell, HIGH_PRI_DEVICE_BOOST as i32, sys, pef, 0, post) {
            Ok(_) => 1,
            Err(_) => 0,
        }
    }

    /// `_SHELL_PostShellMessage`: post to the shell's window (the first
    /// top-level window of the first `[windows] load` application);
    /// non-zero if posted.
    pub(crate) fn shell_post_shell_message(&self, wparam: u32, lparam: u32) -> u32 {
        const SERVICE: &str = "_SHELL_PostShellMessage";
        if self.high_word_set(SERVICE, "wParam", wparam) {
            return 0;
        }
        let task = self.shell.shell_task.get();
        let window = self.ring3.borrow().main_window_of(task);
        match window {
            Some(hwnd) => u32::from(self.post_message(hwnd, SHELL_NOTIFY, wparam as u16, lparam)),
            None => {
                self.trace(|| TraceEvent::MessageDropped {
                    task,
                    hwnd: 0,
                    msg: SHELL_NOTIFY,
                    wparam: wparam as u16,
                    lparam,
                    reason: crate::trace::DropReason::NoShellWindow,
                });
                0
            }
        }
    }
}
