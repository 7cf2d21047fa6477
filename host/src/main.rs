//! The `vmm` binary: a thin wrapper over [`vmm_host::cli`].

fn main() -> std::process::ExitCode {
    vmm_host::cli::main()
}
