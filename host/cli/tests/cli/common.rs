//! What the `vmm` command-line tests share.

use std::path::Path;
use std::process::Command;

use vmm_testkit::plugin_dir;

/// `vmm ARGS` in `dir`, with the workspace's plugins (`--plugin-dir`, built
/// once per test process) and no nested build (`--build never`).
pub fn vmm_command(dir: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vmm"));
    cmd.args(args).arg("--plugin-dir").arg(plugin_dir()).args(["--build", "never"]).current_dir(dir);
    cmd
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}
