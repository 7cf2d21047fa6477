//! The `vmm` binary: its commands live in [`cli`].

mod cli;
mod scaffold;
mod story;

fn main() -> std::process::ExitCode {
    cli::main()
}
