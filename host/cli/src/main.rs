//! The `vmm` binary: its commands live in [`cli`].

mod cli;
mod contention;
mod scaffold;
mod story;

fn main() -> std::process::ExitCode {
    quiet_on_closed_pipe();
    cli::main()
}

/// The Rust runtime ignores SIGPIPE, so a write to a pipe whose reader has
/// gone (`vmm explore ... | head`) is an error that `println!` turns into a
/// panic. Give SIGPIPE its default action back, as command-line tools have
/// it: `vmm` ends quietly when nobody reads its output any more.
#[cfg(unix)]
fn quiet_on_closed_pipe() {
    // SAFETY: `signal` with `SIG_DFL` installs no handler code; it runs
    // first thing in `main`, before any other thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

#[cfg(not(unix))]
fn quiet_on_closed_pipe() {}
