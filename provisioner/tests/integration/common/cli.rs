//! Running the real binary as a one-shot CLI against the repository's own data.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::daemon::BIN;

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A config file in `dir` using the repository's profiles/ and images/, a private
/// state dir and `infra`; `extra` lines are appended as they are.
pub fn repo_config(dir: &Path, infra: &Path, extra: &str) -> PathBuf {
    let q = |p: &Path| format!("\"{}\"", p.display());
    let cfg = dir.join("provisioner.yaml");
    std::fs::write(
        &cfg,
        format!(
            "state_dir: {}\nprofiles_dir: {}\nimages_dir: {}\ninfra_dir: {}\n{extra}",
            q(&dir.join("state")),
            q(&repo().join("profiles")),
            q(&repo().join("images")),
            q(infra)
        ),
    )
    .unwrap();
    cfg
}

/// Runs the binary with `args` and no inherited `PROVISIONER_*` settings:
/// (success, stdout, stderr).
pub fn run(args: &[&str]) -> (bool, String, String) {
    let mut cmd = Command::new(BIN);
    for (k, _) in std::env::vars() {
        if k.starts_with("PROVISIONER_") {
            cmd.env_remove(k);
        }
    }
    let o = cmd.args(args).output().unwrap();
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}
