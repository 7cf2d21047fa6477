//! System broadcasts: `_SHELL_BroadcastSystemMessage`, the ring-0
//! BroadcastSystemMessage, to VxDs (the `_SHELL_HookSystemBroadcast` hooks,
//! in ascending call order; equal orders in registration order) and, at
//! appy time only, to Windows' top-level windows with SendMessage (or
//! PostMessage) semantics. A `BSF_QUERY` broadcast stops at the first
//! recipient that answers 0.

use vmm_plugin_api::abi::{Regs, VmmError};
use vmm_plugin_api::ddk::*;

use crate::machine::Core;
use crate::shell::{HookHandle, HookRec};
use crate::trace::{CallOutcome, TraceEvent};
use crate::violation::Violation;
use crate::vmm::callback::Callback;
use crate::vmm::ids::InstanceId;

/// The `BSF_*` flags that exist.
const BSF_VALID: u32 = BSF_QUERY
    | BSF_IGNORECURRENTTASK
    | BSF_FLUSHDISK
    | BSF_NOHANG
    | BSF_POSTMESSAGE
    | BSF_FORCEIFHUNG
    | BSF_NOTIMEOUTIFNOTHUNG
    | BSF_MSGSRV32ISOK;
/// The `BSM_*` recipient classes.
const BSM_VALID: u32 = BSM_VXDS | BSM_NETDRIVER | BSM_INSTALLABLEDRIVERS | BSM_APPLICATIONS;

/// What a broadcast is, for its trace record.
struct Message {
    flags: u32,
    recipients: Option<u32>,
    msg: u32,
    wparam: u32,
    lparam: u32,
}

impl Core {
    /// `_SHELL_HookSystemBroadcast`: the hook's handle, 0 if the table is
    /// full.
    pub(crate) fn hook_system_broadcast(&self, cb: Callback, order: u32) -> u32 {
        let seq = self.shell.hook_seq.get() + 1;
        self.shell.hook_seq.set(seq);
        self.shell.hooks.borrow_mut().insert(HookRec { order, seq, cb: Some(cb) }).map_or(0, |h| h.raw())
    }

    /// `_SHELL_UnhookSystemBroadcast` (0 is a no-op).
    pub(crate) fn unhook_system_broadcast(&self, handle: HookHandle) -> Result<(), VmmError> {
        const SERVICE: &str = "_SHELL_UnhookSystemBroadcast";
        if handle.raw() == 0 {
            return Ok(());
        }
        // Dropped after the table is released: a callback's drop runs in
        // its plugin.
        let gone = self.shell.hooks.borrow_mut().remove(handle);
        if gone.is_some() {
            return Ok(());
        }
        Err(self.refuse(
            Violation::StaleHookHandle,
            format!("{SERVICE} was given hook handle {handle:#010X}, which is not installed (unhooked already?)"),
            Some(SERVICE),
        ))
    }

    /// `_SHELL_BroadcastSystemMessage`: `(result, recipients reached)`.
    pub(crate) fn broadcast_system_message(
        &self,
        flags: u32,
        recipients: Option<u32>,
        msg: u32,
        wparam: u32,
        lparam: u32,
    ) -> (u32, u32) {
        const SERVICE: &str = "_SHELL_BroadcastSystemMessage";
        let m = Message { flags, recipients, msg, wparam, lparam };
        let bad = if msg >> 16 != 0 {
            Some(format!("uMsg {msg:#X} has bits in its reserved high word"))
        } else if wparam >> 16 != 0 {
            Some(format!("wParam {wparam:#X} has bits in its reserved high word"))
        } else if flags & !BSF_VALID != 0 {
            Some(format!("dwFlags {flags:#X} sets bits {:#X} that are not BSF_* flags", flags & !BSF_VALID))
        } else if flags & BSF_QUERY != 0 && flags & BSF_POSTMESSAGE != 0 {
            Some("BSF_QUERY cannot be combined with BSF_POSTMESSAGE (a posted message has no answer)".to_string())
        } else {
            recipients
                .filter(|r| r & !BSM_VALID != 0)
                .map(|r| format!("*lpdwRecipients {r:#X} sets bits that are not BSM_* recipients"))
        };
        if let Some(what) = bad
            && self.violation(Violation::InvalidParameter, format!("{SERVICE}: {what}"), Some(SERVICE))
        {
            return self.broadcast_done(&m, BSM_ERROR_OUT_OF_MEMORY, 0, 0, 0, None);
        }
        // While Windows is active the service belongs to appy time; before
        // Windows starts and after it stops, it reaches the VxDs only.
        let appy = self.at_appy_time();
        if self.appy_available() && !appy {
            let refuse = self.violation(
                Violation::AppyOnlyService,
                format!(
                    "{SERVICE} while Windows is active may be called only at appy time (it returns -1: the broadcast \
                     was attempted at an inappropriate time)"
                ),
                Some(SERVICE),
            );
            if refuse {
                return self.broadcast_done(&m, BSM_ERROR_OUT_OF_MEMORY, 0, 0, 0, None);
            }
        }
        let want = recipients.unwrap_or(BSM_ALLCOMPONENTS);
        let all = want == BSM_ALLCOMPONENTS;
        let to_vxds = all || want & BSM_VXDS != 0;
        let to_windows = (all || want & BSM_APPLICATIONS != 0) && appy;
        let delivered = if to_vxds { BSM_VXDS } else { 0 } | if to_windows { BSM_APPLICATIONS } else { 0 };
        let query = flags & BSF_QUERY != 0;
        let (mut hooks, mut windows) = (0, 0);
        if to_vxds {
            for handle in self.hooks_in_call_order() {
                let Some((answer, owner)) = self.call_hook(handle, msg, wparam, lparam) else { continue };
                hooks += 1;
                if query && answer == 0 {
                    let device = self.instance_name(owner);
                    return self.broadcast_done(
                        &m,
                        BSM_ERROR_SOMEONE_FAILED,
                        delivered,
                        hooks,
                        windows,
                        Some(format!("device {device}")),
                    );
                }
            }
        }
        if to_windows {
            let skip_task = if flags & BSF_IGNORECURRENTTASK != 0 { self.current_task.get() } else { 0 };
            let targets = self.ring3.borrow().top_level_windows(skip_task);
            for hwnd in targets {
                windows += 1;
                if flags & BSF_POSTMESSAGE != 0 {
                    self.post_message(hwnd, msg as u16, wparam as u16, lparam);
                    continue;
                }
                let answer = self.send_message(hwnd, msg as u16, wparam as u16, lparam);
                if query && answer == 0 {
                    return self.broadcast_done(
                        &m,
                        BSM_ERROR_SOMEONE_FAILED,
                        delivered,
                        hooks,
                        windows,
                        Some(format!("hwnd {hwnd:#06x}")),
                    );
                }
            }
        }
        self.broadcast_done(&m, BSM_ERROR_SUCCESS, delivered, hooks, windows, None)
    }

    /// Trace a finished broadcast; its `(result, recipients)`.
    fn broadcast_done(
        &self,
        m: &Message,
        result: u32,
        delivered: u32,
        hooks: u32,
        windows: u32,
        refused_by: Option<String>,
    ) -> (u32, u32) {
        self.trace(|| TraceEvent::Broadcast {
            device: self.shell_caller_name(),
            flags: m.flags,
            recipients: m.recipients,
            delivered,
            msg: m.msg,
            wparam: m.wparam,
            lparam: m.lparam,
            hooks,
            windows,
            appy: self.at_appy_time(),
            result: result as i32,
            refused_by,
        });
        (result, delivered)
    }

    /// The installed hooks, lowest call order first; equal orders in the
    /// order they were installed.
    fn hooks_in_call_order(&self) -> Vec<HookHandle> {
        let mut v: Vec<(u32, u64, HookHandle)> =
            self.shell.hooks.borrow().iter().map(|(h, r)| (r.order, r.seq, h)).collect();
        v.sort_unstable();
        v.into_iter().map(|(_, _, h)| h).collect()
    }

    /// Call one hook (in the broadcaster's context); its answer and owner,
    /// `None` if it was unhooked meanwhile. A hook that fails answers 1 (it
    /// cannot veto).
    fn call_hook(&self, handle: HookHandle, msg: u32, wparam: u32, lparam: u32) -> Option<(u32, InstanceId)> {
        let mut cb = self.shell.hooks.borrow_mut().get_mut(handle)?.cb.take()?;
        let owner = cb.owner();
        let mut regs = Regs { eax: msg, ebx: self.cur_vm.get().raw(), ecx: wparam, edx: lparam, ..Regs::default() };
        let outcome = cb.call(self, self.context(), &mut regs);
        // The hook may have unhooked itself: then it is dropped here.
        if let Some(rec) = self.shell.hooks.borrow_mut().get_mut(handle) {
            rec.cb = Some(cb);
        }
        Some((if outcome == CallOutcome::Clear { regs.eax } else { 1 }, owner))
    }
}
