//! The system VM's Windows 3.1 USER and KERNEL subset: windows, per-task
//! message queues of `DefaultQueueSize` messages, `PostMessage` (FALSE when
//! the queue is full: the message is dropped), `PostAppMessage`,
//! `SendMessage`, `PeekMessage`, `DispatchMessage`, message boxes, and
//! reference-counted DLLs.

use std::collections::VecDeque;

use vmm_plugin_api::abi::{ModuleKind, Msg, Step, StepKind};
use vmm_plugin_api::ddk::{HWND_BROADCAST, MB_SYSTEMMODAL};

use crate::machine::Core;
use crate::ring3::{Target, kind_name};
use crate::trace::{DropReason, TraceEvent};
use crate::vmm::ids::VmId;

/// The largest queue `SetMessageQueue` accepts (KB Q99335 suggests up to
/// 120).
const MAX_QUEUE: u32 = 120;

impl Core {
    /// Queue `msg` for `task` if there is room; whether it was queued
    /// (tracing a drop).
    fn enqueue(&self, task: u16, msg: Msg) -> bool {
        let outcome = {
            let mut r3 = self.ring3.borrow_mut();
            match r3.task_mut(task) {
                None => Err(DropReason::NoTask),
                Some(t) => match t.queue.as_mut() {
                    None => Err(DropReason::NoQueue),
                    Some(q) if q.len() >= t.capacity => Err(DropReason::QueueFull),
                    Some(q) => {
                        q.push_back(msg);
                        Ok(())
                    }
                },
            }
        };
        match outcome {
            Ok(()) => true,
            Err(reason) => {
                self.trace(|| TraceEvent::MessageDropped {
                    task,
                    hwnd: msg.hwnd,
                    msg: msg.message,
                    wparam: msg.wparam,
                    lparam: msg.lparam,
                    reason,
                });
                false
            }
        }
    }

    /// A `message_posted` record (`message` is message, wParam, lParam).
    #[allow(clippy::too_many_arguments)]
    fn trace_posted(
        &self,
        vm: VmId,
        task: Option<u16>,
        hwnd: u16,
        (msg, wparam, lparam): (u16, u16, u32),
        result: bool,
        note: &'static str,
    ) {
        self.trace(|| TraceEvent::MessagePosted { vm: vm.raw(), task, hwnd, msg, wparam, lparam, result, note });
    }

    /// A `message_delivered` record: `msg` left `task`'s queue.
    pub(crate) fn trace_delivered(&self, task: u16, msg: &Msg) {
        self.trace(|| TraceEvent::MessageDelivered {
            task,
            hwnd: msg.hwnd,
            msg: msg.message,
            wparam: msg.wparam,
            lparam: msg.lparam,
            posted_ms: msg.time,
        });
    }

    fn msg(&self, hwnd: u16, message: u16, wparam: u16, lparam: u32) -> Msg {
        Msg { hwnd, message, wparam, lparam, time: self.sched.now().system_time_ms() }
    }

    /// `PostMessage`.
    pub(crate) fn post_message(&self, hwnd: u16, message: u16, wparam: u16, lparam: u32) -> bool {
        let vm = self.cur_vm.get();
        if hwnd == HWND_BROADCAST {
            // Every top-level window gets it; the call itself returns FALSE
            // (SDK: "returns zero if hWnd is -1").
            let targets: Vec<(u16, u16)> =
                self.ring3.borrow().windows.iter().filter(|(_, w)| w.parent == 0).map(|(h, w)| (*h, w.task)).collect();
            for (h, task) in targets {
                self.enqueue(task, self.msg(h, message, wparam, lparam));
            }
            self.trace_posted(vm, None, hwnd, (message, wparam, lparam), false, "broadcast");
            return false;
        }
        let task = self.ring3.borrow().windows.get(&hwnd).map(|w| w.task);
        let Some(task) = task else {
            // An invalid window does not make PostMessage fail in 3.1
            // (KB Q36584): nothing is posted, TRUE comes back.
            self.trace_posted(vm, None, hwnd, (message, wparam, lparam), true, "invalid_hwnd");
            return true;
        };
        let ok = self.enqueue(task, self.msg(hwnd, message, wparam, lparam));
        self.trace_posted(vm, Some(task), hwnd, (message, wparam, lparam), ok, if ok { "queued" } else { "dropped" });
        ok
    }

    /// `PostAppMessage`: the message reaches the task with hwnd 0.
    pub(crate) fn post_app_message(&self, task: u16, message: u16, wparam: u16, lparam: u32) -> bool {
        let vm = self.cur_vm.get();
        let ok = self.ring3.borrow().task(task).is_some() && self.enqueue(task, self.msg(0, message, wparam, lparam));
        self.trace_posted(vm, Some(task), 0, (message, wparam, lparam), ok, if ok { "queued" } else { "dropped" });
        ok
    }

    /// Call a window's procedure; its result.
    pub(crate) fn call_wndproc(&self, hwnd: u16, message: u16, wparam: u16, lparam: u32) -> u32 {
        let proc_ptr = self.ring3.borrow().windows.get(&hwnd).map(|w| (w.wndproc, w.task));
        let Some((proc_ptr, task)) = proc_ptr else {
            self.trace(|| TraceEvent::MessageDropped {
                task: 0,
                hwnd,
                msg: message,
                wparam,
                lparam,
                reason: DropReason::WindowDestroyed,
            });
            return 0;
        };
        // The PASCAL frame as pushed: lParam (high word first), wParam,
        // msg, hwnd, read upward from the stack pointer.
        let mut args = [0u8; 10];
        args[0..4].copy_from_slice(&lparam.to_le_bytes());
        args[4..6].copy_from_slice(&wparam.to_le_bytes());
        args[6..8].copy_from_slice(&message.to_le_bytes());
        args[8..10].copy_from_slice(&hwnd.to_le_bytes());
        let previous = self.current_task.replace(task);
        let r = self.ring3_far_call(proc_ptr, &args, false).unwrap_or(0);
        self.current_task.set(previous);
        r
    }

    /// `DispatchMessage`.
    pub(crate) fn dispatch_message(&self, msg: &Msg) -> u32 {
        if msg.hwnd == 0 {
            return 0;
        }
        self.call_wndproc(msg.hwnd, msg.message, msg.wparam, msg.lparam)
    }

    /// `SendMessage`.
    pub(crate) fn send_message(&self, hwnd: u16, message: u16, wparam: u16, lparam: u32) -> u32 {
        let task = self.ring3.borrow().windows.get(&hwnd).map(|w| w.task);
        self.trace(|| TraceEvent::MessageSent { task, hwnd, msg: message, wparam, lparam });
        self.call_wndproc(hwnd, message, wparam, lparam)
    }

    /// `PeekMessage` for the current task.
    pub(crate) fn peek_message(&self, hwnd: u16, min: u16, max: u16, remove: bool) -> Option<Msg> {
        let task = self.current_task.get();
        let msg = {
            let mut r3 = self.ring3.borrow_mut();
            let q = r3.task_mut(task)?.queue.as_mut()?;
            let fits = |m: &Msg| {
                (hwnd == 0 || m.hwnd == hwnd) && ((min == 0 && max == 0) || (m.message >= min && m.message <= max))
            };
            let i = q.iter().position(fits)?;
            if remove { q.remove(i) } else { q.get(i).copied() }
        }?;
        if remove {
            self.trace_delivered(task, &msg);
        }
        Some(msg)
    }

    /// `CreateWindow` for the current task.
    pub(crate) fn create_window(&self, class: &str, title: &str, wndproc: u32, parent: u16) -> u16 {
        let task = self.current_task.get();
        let valid_proc = matches!(self.ring3.borrow().resolve(wndproc), Target::Export { .. });
        if task == 0 || !valid_proc {
            return 0;
        }
        let hwnd = {
            let mut r3 = self.ring3.borrow_mut();
            // Handles are 0x1004, 0x1008, ... up to 0xFFFC; past the top the
            // count starts again at the first free one (never 0, never a
            // live window's), and with every handle in use CreateWindow fails.
            let mut hwnd = r3.next_hwnd.max(0x1000);
            let free = (0..0x3C00).find_map(|_| {
                hwnd = hwnd.checked_add(4).unwrap_or(0x1004);
                (!r3.windows.contains_key(&hwnd)).then_some(hwnd)
            });
            let Some(hwnd) = free else { return 0 };
            r3.next_hwnd = hwnd;
            r3.windows.insert(hwnd, crate::ring3::Window { task, wndproc, class: class.to_string(), parent });
            hwnd
        };
        self.trace(|| TraceEvent::WindowCreated { task, hwnd, class: class.to_string(), title: title.to_string() });
        hwnd
    }

    /// `DestroyWindow`.
    pub(crate) fn destroy_window(&self, hwnd: u16) -> bool {
        let exists = self.ring3.borrow().windows.contains_key(&hwnd);
        if !exists {
            return false;
        }
        self.call_wndproc(hwnd, vmm_plugin_api::ddk::WM_DESTROY, 0, 0);
        let removed = self.ring3.borrow_mut().windows.remove(&hwnd);
        if let Some(w) = removed {
            self.trace(|| TraceEvent::WindowDestroyed { task: w.task, hwnd, class: w.class.clone() });
        }
        true
    }

    /// `SetMessageQueue` for the current task.
    pub(crate) fn set_message_queue(&self, size: u32) -> bool {
        let task = self.current_task.get();
        let ok = (1..=MAX_QUEUE).contains(&size);
        let mut r3 = self.ring3.borrow_mut();
        let Some(t) = r3.task_mut(task) else { return false };
        if ok {
            t.queue = Some(VecDeque::new());
            t.capacity = size as usize;
        } else {
            // The old queue is destroyed first; on failure the task has none.
            t.queue = None;
        }
        ok
    }

    /// `PostQuitMessage` for the current task.
    pub(crate) fn post_quit_message(&self, code: u16) {
        let task = self.current_task.get();
        if let Some(t) = self.ring3.borrow_mut().task_mut(task) {
            t.quit = Some(code);
        }
    }

    /// `MessageBox`: recorded, printed, answered with the run's answer.
    pub(crate) fn message_box(&self, text: &str, caption: &str, flags: u32) -> u32 {
        let task = self.current_task.get();
        let answer = self.manifest.windows.message_box_answer;
        let system_modal = flags & MB_SYSTEMMODAL != 0;
        tracing::info!("[{caption}] {text}");
        self.trace(|| TraceEvent::MessageBox {
            task: (task != 0).then_some(task),
            device: None,
            text: text.to_string(),
            caption: caption.to_string(),
            flags,
            answer,
            system_modal,
        });
        answer
    }

    /// `LoadLibrary` for the current task: the module handle, or 2 (file
    /// not found), 11 (not a DLL), 20 (LibMain refused).
    pub(crate) fn load_library(&self, name: &str) -> u32 {
        let task = self.current_task.get();
        let existing = self.ring3.borrow().module_named(name, ModuleKind::WinDll);
        let module = match existing {
            Some(m) => {
                self.ring3.borrow_mut().modules[m].refcount += 1;
                m
            }
            None => {
                match self.library_for(name) {
                    Err(_) => return 2,
                    Ok(lib) if lib.info.kind != ModuleKind::WinDll => return 11,
                    Ok(_) => {}
                }
                let sys = self.sys_vm.get();
                let m = match self.instantiate_module(name, sys) {
                    Ok(m) => m,
                    Err(e) => {
                        tracing::warn!("LoadLibrary({name}): {e}");
                        return 2;
                    }
                };
                // LibMain: a DLL refuses to load with Step::exit(0).
                let (instance, inst) = {
                    let r3 = self.ring3.borrow();
                    (r3.modules[m].instance, r3.modules[m].code.plugin())
                };
                let Some(inst) = inst else {
                    self.unload_module(m);
                    return 2;
                };
                let step = self.invoke(instance, "start", crate::vmm::context::Context::Ring3, |cx| {
                    (inst.vtable.start())(inst.this, cx, abi_stable::std_types::RStr::from_str(""))
                });
                let loaded = matches!(step, Ok(Step { kind: StepKind::Exit, value }) if value != 0);
                if !loaded {
                    self.unload_module(m);
                    return 20;
                }
                m
            }
        };
        let (hinstance, mname, refcount) = {
            let r3 = self.ring3.borrow();
            let m = &r3.modules[module];
            (m.hinstance, m.name.clone(), m.refcount)
        };
        if let Some(t) = self.ring3.borrow_mut().task_mut(task) {
            t.dlls.push(hinstance);
        }
        self.trace(|| TraceEvent::ModuleLoaded {
            module: mname.to_string(),
            kind: kind_name(ModuleKind::WinDll),
            hinstance,
            refcount,
        });
        hinstance as u32
    }

    /// `GetProcAddress` by name, or by ordinal when `name` is empty.
    pub(crate) fn get_proc_address(&self, hinstance: u16, name: &str, ordinal: u16) -> u32 {
        let r3 = self.ring3.borrow();
        let Some(m) = r3.module_by_hinstance(hinstance) else { return 0 };
        let m = &r3.modules[m];
        let export = if name.is_empty() {
            m.exports.iter().find(|e| e.ordinal == ordinal)
        } else {
            m.exports.iter().find(|e| e.name.eq_ignore_ascii_case(name))
        };
        export.and_then(|e| m.export_address(e.ordinal)).unwrap_or(0)
    }

    /// `FreeLibrary`: the module goes when its count reaches 0.
    pub(crate) fn free_library(&self, hinstance: u16) -> bool {
        let found = {
            let mut r3 = self.ring3.borrow_mut();
            let task = self.current_task.get();
            if let Some(t) = r3.task_mut(task)
                && let Some(i) = t.dlls.iter().position(|h| *h == hinstance)
            {
                t.dlls.remove(i);
            }
            r3.module_by_hinstance(hinstance).map(|m| {
                let rec = &mut r3.modules[m];
                rec.refcount = rec.refcount.saturating_sub(1);
                (m, rec.refcount, rec.name.clone())
            })
        };
        let Some((module, refcount, name)) = found else { return false };
        self.trace(|| TraceEvent::ModuleFreed { module: name.to_string(), hinstance, refcount });
        if refcount == 0 {
            self.unload_module(module);
        }
        true
    }
}
