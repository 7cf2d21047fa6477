//! The host's error type: one enum, with the context (file, line, device,
//! ID) in fields so tests and callers can match on it.

use std::path::PathBuf;

use crate::expect::Checker;

/// Why a plugin file could not be loaded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LoadCause {
    /// No file of that name on the plugin search path.
    NotFound {
        /// The directories searched.
        searched: Vec<PathBuf>,
        /// What cargo said, if the CLI tried to build it.
        build: Option<String>,
    },
    /// The operating system could not open it as a shared library.
    Open(String),
    /// The file was refused before the dynamic loader saw it: not a
    /// regular file, too large, or not an image it can map safely
    /// (truncated, damaged, built for another machine).
    Rejected(crate::image::Defect),
    /// A shared library without abi_stable's root-module symbol.
    NotAbiStable,
    /// Built with another major version of abi_stable.
    AbiStableVersion(String),
    /// Built against an incompatible `vmm-plugin-api` version.
    IncompatibleVersion {
        /// The version the host implements.
        host: String,
        /// The version the plugin was built against.
        plugin: String,
    },
    /// The layouts of the ABI types differ (summarised).
    LayoutMismatch(String),
    /// The root-module constructor returned an error.
    Constructor(String),
    /// The root-module constructor panicked.
    ConstructorPanic,
    /// Built with `panic = "abort"`: panics could not be contained.
    PanicAbort,
    /// The plugin's factory failed or panicked.
    Factory(String),
    /// The descriptor is invalid (name length, ...).
    Descriptor(String),
    /// A module of the wrong kind (a DLL listed as a device, ...).
    WrongKind(String),
}

impl std::fmt::Display for LoadCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LoadCause::NotFound { searched, build } => {
                write!(f, "no such plugin on the search path (searched: ")?;
                for (i, d) in searched.iter().enumerate() {
                    if i > 0 {
                        write!(f, ", ")?;
                    }
                    write!(f, "{}", d.display())?;
                }
                write!(f, ")")?;
                if let Some(b) = build {
                    write!(f, "; building it with cargo failed: {b}")?;
                }
                Ok(())
            }
            LoadCause::Open(e) => write!(f, "cannot open it as a shared library: {e}"),
            LoadCause::Rejected(d) => write!(f, "refused before loading: {} (defect: {})", d.detail, d.code),
            LoadCause::NotAbiStable => write!(
                f,
                "not an abi_stable plugin: the library has no abi_stable root module \
                 (export a device with declare_virtual_device! or a module with declare_module!)"
            ),
            LoadCause::AbiStableVersion(e) => write!(f, "built with an incompatible abi_stable version: {e}"),
            LoadCause::IncompatibleVersion { host, plugin } => write!(
                f,
                "incompatible interface version: the plugin was built against vmm-plugin-api {plugin}, \
                 this host implements {host}; rebuild the plugin against {host}"
            ),
            LoadCause::LayoutMismatch(s) => write!(f, "layout mismatch in the plugin ABI: {s}"),
            LoadCause::Constructor(e) => write!(f, "the root module constructor returned an error: {e}"),
            LoadCause::ConstructorPanic => write!(f, "the root module constructor panicked"),
            LoadCause::PanicAbort => write!(
                f,
                "built with panic = \"abort\": a panic would take the emulator down; build with panic = \"unwind\""
            ),
            LoadCause::Factory(e) => write!(f, "creating the instance failed: {e}"),
            LoadCause::Descriptor(e) => write!(f, "invalid device descriptor: {e}"),
            LoadCause::WrongKind(e) => write!(f, "{e}"),
        }
    }
}

/// Every error the host reports.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A manifest is malformed or names something invalid.
    #[error("{file}:{line}:{column}: {message}")]
    Manifest {
        /// File (or `--set #N`).
        file: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong.
        message: String,
    },
    /// A file could not be read.
    #[error("{}: {message}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        message: String,
    },
    /// A plugin could not be loaded.
    #[error("cannot load `{name}` ({}): {cause}", file.display())]
    Load {
        /// The name in the manifest.
        name: String,
        /// The file (or the name if not found).
        file: PathBuf,
        /// Why.
        cause: LoadCause,
    },
    /// Two devices share a non-zero device ID and the second did not
    /// handle it (KB Q84000).
    #[error(
        "duplicate device ID {id:#06X}: {second} ({}) has the same ID as {first} ({}), and {second} did not \
         abort its own load; Windows cannot start. Give one device another ID, remove one of them, or answer \
         ABORT_DEVICE_LOAD from real-mode init when DUPLICATE_DEVICE_ID is set",
        second_file.display(), first_file.display()
    )]
    DuplicateDeviceId {
        /// The shared ID.
        id: u16,
        /// The device loaded first.
        first: String,
        /// Its file.
        first_file: PathBuf,
        /// The duplicate.
        second: String,
        /// Its file.
        second_file: PathBuf,
    },
    /// A device asked Windows not to load (`ABORT_WIN386_LOAD`).
    #[error("device {device} aborted the load of Windows in real-mode initialization")]
    AbortWin386Load {
        /// The device.
        device: String,
    },
    /// `Sys_VM_Init` failed: Windows exits.
    #[error("device {device} failed Sys_VM_Init; Windows exits")]
    SysVmInitFailed {
        /// The device.
        device: String,
    },
    /// The machine stopped with a fatal error.
    #[error("fatal error{}: {message}", device.as_ref().map(|d| format!(" in {d}")).unwrap_or_default())]
    Fatal {
        /// The message (Fatal_Error_Handler's text, ...).
        message: String,
        /// The device that caused it, if any.
        device: Option<String>,
    },
    /// A built-in device name that the host does not provide.
    #[error("{origin}: no built-in device `*{name}`: this host provides {available}")]
    UnknownBuiltin {
        /// The name after `*`.
        name: String,
        /// Where it was written.
        origin: crate::origin::Origin,
        /// The list of built-ins.
        available: String,
    },
    /// A plugin build with cargo failed.
    #[error("building plugins with cargo failed: {0}")]
    Build(String),
    /// A command-line value was refused (`vmm new`'s name or `--id`).
    #[error("{what} `{value}` is refused: {reason}")]
    InvalidInput {
        /// The argument (`name`, `--id`, ...).
        what: &'static str,
        /// The value given.
        value: String,
        /// Why, and what to give instead.
        reason: String,
    },
    /// `vmm new` would write into a directory that already has files.
    #[error("{}: the directory exists and is not empty; choose another name or --dir", path.display())]
    DirectoryNotEmpty {
        /// The directory.
        path: PathBuf,
    },
    /// The trace file reached its size limit: the run was stopped and the
    /// machine shut down normally.
    #[error(
        "the trace reached its size limit of {limit} bytes at t={at_ms}ms (--trace-limit, [machine] trace_limit): \
         the run was stopped there and the machine shut down; the trace ends with a `trace_limit` record. Raise \
         the limit or run for a shorter time (--until)"
    )]
    TraceLimit {
        /// The limit, in bytes.
        limit: u64,
        /// Virtual time when it was reached, in milliseconds.
        at_ms: u64,
    },
    /// An `[expect]` expectation does not hold for the run.
    #[error("{first}{}", if *more > 0 { format!(" (and {more} more expectation(s) broken)") } else { String::new() })]
    Expectation {
        /// The first broken expectation, in the order written.
        first: crate::expect::Broken,
        /// How many more are broken.
        more: usize,
    },
    /// A reference to a VM, program or interrupt that does not exist.
    #[error("{origin}: {message}")]
    Reference {
        /// Where it was written.
        origin: crate::origin::Origin,
        /// What is wrong.
        message: String,
    },
}

/// The host's result type.
pub type Result<T> = std::result::Result<T, Error>;

/// An expectation check as the crate's result (the error names the first
/// broken expectation).
impl Checker {
    /// `Ok` if every expectation holds, else the error naming the first
    /// broken one.
    pub fn result(&self) -> Result<()> {
        self.result_after(true)
    }

    /// [`Checker::result`] for a run that ran to its end or was cut short
    /// (see [`Checker::broken_after`]).
    pub fn result_after(&self, complete: bool) -> Result<()> {
        let mut broken = self.broken_after(complete).into_iter();
        match broken.next() {
            None => Ok(()),
            Some(first) => Err(Error::Expectation { first, more: broken.count() }),
        }
    }
}
