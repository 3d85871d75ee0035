//! End-to-end lab for the provisioner.
//!
//! The lab boots real firmware (SeaBIOS + iPXE, OVMF + iPXE, OVMF's own PXE
//! and HTTP Boot) in QEMU, inside a throw-away network namespace, against
//! either plain peers (dnsmasq, busybox httpd) or the `provisioner` binary.
//! Everything is driven through external programs so that the lab tests the
//! same artefacts an operator runs, and so that no unsafe code is needed.
//!
//! Modules:
//! - [`payload`]: a cached test kernel + initramfs that fetches its config and
//!   prints markers on the serial console.
//! - [`lab`]: namespace, bridge, taps, background processes; dnsmasq and
//!   busybox httpd as peers (`Lab::dnsmasq`, `Lab::httpd`).
//! - [`qemu`]: firmware classes and VMs with a captured serial console.
//! - [`appliance`]: runs `provisioner serve` in a lab and reads its export.
//! - [`peer`]: a namespace on the lab bridge for DHCP clients, relays and peers.
//! - [`timeline`]: assertions over the exported machine timeline.
//! - [`talos_sim`]: the simulated Talos lab (GenMachine copy, node agent initrd).

pub mod appliance;
mod cpio;
pub mod lab;
pub mod payload;
pub mod peer;
mod peers;
pub mod qemu;
pub mod talos_sim;
pub mod timeline;

pub use appliance::{Appliance, LabSite};
pub use lab::{Lab, LabProcess};
pub use payload::{Payload, payload};
pub use qemu::{Firmware, Machine, QemuVm};

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// Serial console markers printed by the payload's `/init`.
pub mod markers {
    /// The config URL answered 2xx; followed by ` bytes=<n> sha256=<hex>`.
    pub const CONFIG_FETCHED: &str = "LAB-CONFIG-FETCHED";
    /// The `provisioner.callback=` POST succeeded.
    pub const CALLBACK_OK: &str = "LAB-CALLBACK-OK";
    /// The `provisioner.callback=` POST failed.
    pub const CALLBACK_FAILED: &str = "LAB-CALLBACK-FAILED";
    /// Any payload failure; followed by a reason.
    pub const FAILED: &str = "LAB-FAILED";
    /// `/init` started (the kernel and initramfs were handed over correctly).
    pub const INIT_STARTED: &str = "LAB-INIT-STARTED";
}

/// Panics with a clear message unless the process runs as root.
///
/// Namespaces, taps and bridges need CAP_NET_ADMIN; rather than fail later
/// with an obscure `ip` error, every test calls this first.
pub fn require_root() {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|rest| rest.split_whitespace().nth(1))
        .unwrap_or("?");
    assert!(
        euid == "0",
        "provisioner-e2e lab tests must run as root (network namespaces, taps, QEMU); \
         effective uid is {euid}. Run e.g. `sudo -E cargo test -p provisioner-e2e`."
    );
}

/// Runs a command to completion and returns its stdout; a non-zero exit is an
/// error carrying the command line and its stderr.
pub fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot start {cmd:?} (is the package installed?)"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout).trim_end(),
            String::from_utf8_lossy(&out.stderr).trim_end()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The last `n` lines of a file, for failure messages (empty if unreadable).
pub fn tail_file(path: &Path, n: usize) -> String {
    let text = std::fs::read(path).map(|b| String::from_utf8_lossy(&b).into_owned());
    match text {
        Ok(t) => tail(&t, n),
        Err(e) => format!("<cannot read {}: {e}>", path.display()),
    }
}

/// The last `n` lines of a string.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Polls `f` every 200 ms until it returns `Some`, or fails after `timeout`
/// with `what` in the message. `f` may itself fail early.
pub fn wait_for<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Result<Option<T>>) -> Result<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = f()? {
            return Ok(v);
        }
        if start.elapsed() >= timeout {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Directory under which each lab keeps its logs, leases and VM state.
///
/// Kept on failure (see [`Lab`]), so it lives on disk rather than in /tmp
/// tmpfs: `$PROVISIONER_LAB_RUNS`, default `/var/tmp/provisioner-lab-runs`.
pub fn runs_dir() -> std::path::PathBuf {
    std::env::var_os("PROVISIONER_LAB_RUNS")
        .map(Into::into)
        .unwrap_or_else(|| "/var/tmp/provisioner-lab-runs".into())
}
