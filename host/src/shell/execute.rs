//! `_SHELL_ShellExecute`: open a file the way Program Manager did, inside
//! the emulator. The manifest's `[programs]` is the disk: a key that is a
//! file name (`"edit.com"`) is a program, a key that is an extension
//! (`".txt"`) associates documents with a program; each maps to a ring-3
//! plugin. A Windows application starts as a task of the system VM, a DOS
//! program in a new DOS VM. No host process is ever started.

use vmm_plugin_api::abi::ModuleKind;
use vmm_plugin_api::ddk::{ERROR_BAD_FORMAT, SE_ERR_FNF, SE_ERR_NOASSOC, SE_ERR_OOM};

use crate::error::{Error, Result};
use crate::machine::Core;
use crate::ring3::kind_name;
use crate::shell::shex::{self, Packet};
use crate::trace::TraceEvent;
use crate::violation::Violation;

/// Extensions of files Windows runs itself; without a `[programs]` entry
/// such a file does not exist.
const PROGRAM_EXTENSIONS: [&str; 5] = ["exe", "com", "bat", "pif", ""];

/// The Windows directory, the working directory when the packet has none.
const WINDOWS_DIRECTORY: &str = "C:\\WINDOWS";

/// The last component of a DOS or Windows path.
fn base_name(path: &str) -> &str {
    path.rsplit(['\\', '/', ':']).next().unwrap_or(path)
}

/// The extension of a file name, lower-cased, without the dot ("" if none).
fn extension(name: &str) -> String {
    name.rsplit_once('.').map_or_else(String::new, |(_, e)| e.to_ascii_lowercase())
}

impl Core {
    /// `_SHELL_ShellExecute` with the packet's bytes: above 32 the started
    /// module's handle, else the error.
    pub(crate) fn shell_execute(&self, bytes: &[u8]) -> u32 {
        const SERVICE: &str = "_SHELL_ShellExecute";
        let device = self.shell_caller_name();
        let p = match shex::decode(bytes) {
            Ok(p) => p,
            Err(e) => {
                // The DDK documents no code for a malformed packet; 0 is what
                // ShellExecute returns when it could not start anything.
                self.violation(Violation::BadShexpacket, format!("{SERVICE}: {}", e.message), Some(SERVICE));
                let h = e.header;
                self.trace(|| TraceEvent::ShellExecute {
                    device,
                    total_size: h.map(|h| h.total_size),
                    size: h.map(|h| h.size),
                    verb: None,
                    file: None,
                    params: None,
                    dir: None,
                    reserved: h.map(|h| h.reserved),
                    show: h.map(|h| h.show),
                    module: None,
                    result: 0,
                    error: Some(e.code),
                    field: e.field,
                });
                return 0;
            }
        };
        let (result, module) = self.execute(&p);
        let module = module.filter(|_| result > 32);
        self.trace(|| TraceEvent::ShellExecute {
            device,
            total_size: Some(p.header.total_size),
            size: Some(p.header.size),
            verb: Some(p.verb.clone().unwrap_or_else(|| "open".to_string())),
            file: Some(p.file.clone()),
            params: p.params.clone(),
            dir: Some(p.dir.clone().unwrap_or_else(|| WINDOWS_DIRECTORY.to_string())),
            reserved: Some(p.header.reserved),
            show: Some(p.header.show),
            module,
            result,
            error: None,
            field: None,
        });
        result
    }

    /// Find what `p` opens and start it: `(result, module started)`.
    fn execute(&self, p: &Packet) -> (u32, Option<String>) {
        let verb = p.verb.as_deref().unwrap_or("open").to_ascii_lowercase();
        let name = base_name(&p.file);
        let programs = &self.manifest.programs;
        let by_name = programs.get(&p.file.to_ascii_lowercase()).or_else(|| programs.get(&name.to_ascii_lowercase()));
        let ext = extension(name);
        let (module, args) = match by_name {
            // A program: "open" runs it with the parameters; it has no other
            // verbs.
            Some(entry) if verb == "open" => (entry.module.clone(), p.params.clone().unwrap_or_default()),
            Some(_) => return (SE_ERR_NOASSOC, None),
            None => match programs.get(&format!(".{ext}")) {
                // A document: its program opens it, or prints it with /p.
                Some(entry) if verb == "open" => (entry.module.clone(), p.file.clone()),
                Some(entry) if verb == "print" => (entry.module.clone(), format!("/p {}", p.file)),
                Some(_) => return (SE_ERR_NOASSOC, None),
                None if PROGRAM_EXTENSIONS.contains(&ext.as_str()) || name.is_empty() => return (SE_ERR_FNF, None),
                None => return (SE_ERR_NOASSOC, None),
            },
        };
        (self.start_for_shell(&module, &args, name), Some(module))
    }

    /// Start ring-3 plugin `module` with `args`: the new module's handle, or
    /// the error.
    fn start_for_shell(&self, module: &str, args: &str, file: &str) -> u32 {
        let kind = match self.library_for(module) {
            Ok(lib) => lib.info.kind,
            Err(_) => return SE_ERR_FNF,
        };
        let program = match kind {
            ModuleKind::WinApp => self.start_program(self.sys_vm.get(), module, args),
            ModuleKind::DosProgram => {
                // A DOS program gets a VM of its own, named after its file.
                let stem = file.rsplit_once('.').map_or(file, |(s, _)| s).to_ascii_uppercase();
                self.create_vm(&stem, Some((module.to_string(), args.to_string())))
                    .and_then(|vm| self.ring3.borrow().newest_program_in(vm))
            }
            ModuleKind::WinDll | ModuleKind::Vxd => return ERROR_BAD_FORMAT,
        };
        match program.and_then(|id| self.ring3.borrow().program_hinstance(id)) {
            Some(hinstance) => hinstance as u32,
            None => SE_ERR_OOM,
        }
    }

    /// `[programs]` entries must name ring-3 plugins that load and can run:
    /// a Windows application or a DOS program (checked at boot).
    pub(crate) fn check_programs(&self) -> Result<()> {
        for (key, entry) in &self.manifest.programs {
            let lib = self.library_for(&entry.module).map_err(|(file, cause)| Error::Load {
                name: entry.module.clone(),
                file,
                cause,
            })?;
            if !matches!(lib.info.kind, ModuleKind::WinApp | ModuleKind::DosProgram) {
                return Err(Error::Reference {
                    origin: entry.origin.clone(),
                    message: format!(
                        "[programs] \"{key}\" names `{}`, a {} plugin; ShellExecute can start only a windows_app or a \
                         dos_program",
                        entry.module,
                        kind_name(lib.info.kind)
                    ),
                });
            }
        }
        Ok(())
    }
}
