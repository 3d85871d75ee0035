//! A lab: one network namespace with a bridge `br0` at `10.77.<n>.1/24`,
//! plus the processes, taps and files that live in it.
//!
//! Every lab owns a distinct `<n>`, claimed with an exclusive lock on
//! `/run/provisioner-lab/net-<n>.lock`. Locks die with their process, so a
//! lab left behind by a SIGKILLed test run is found (namespace present, lock
//! free) and cleaned up by the next lab that claims the same `<n>`. The
//! namespace keeps all test traffic off the host's interfaces.
//!
//! Teardown is in `Drop`, so it also runs when a test panics; the lab's
//! directory (logs, serial consoles, leases) is kept on panic for diagnosis,
//! and always when `PROVISIONER_LAB_KEEP` is set.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::{run, runs_dir, tail_file, wait_for};

const LOCK_DIR: &str = "/run/provisioner-lab";
/// Third octet range for `10.77.<n>.0/24`.
const NET_RANGE: std::ops::RangeInclusive<u32> = 10..=249;

/// A network namespace with a bridge; see the module docs.
#[derive(Debug)]
pub struct Lab {
    name: String,
    ns: String,
    net: u32,
    dir: Option<tempfile::TempDir>,
    next_tap: AtomicU32,
    _lock: File,
}

impl Lab {
    /// Creates the namespace `plab-<n>`, bridge `br0` with `10.77.<n>.1/24`,
    /// and brings `lo` up. `name` labels the log directory.
    pub fn new(name: &str) -> Result<Lab> {
        fs::create_dir_all(LOCK_DIR)?;
        sweep_stale_labs();
        let runs = runs_dir();
        fs::create_dir_all(&runs)?;
        let dir = tempfile::Builder::new()
            .prefix(&format!("{name}-"))
            .tempdir_in(&runs)?;
        // Start at a pid-dependent offset so concurrent processes rarely
        // contend for the same lock.
        let span = NET_RANGE.end() - NET_RANGE.start() + 1;
        let offset = std::process::id() % span;
        for i in 0..span {
            let net = NET_RANGE.start() + (offset + i) % span;
            let lock = File::create(Path::new(LOCK_DIR).join(format!("net-{net}.lock")))?;
            if lock.try_lock().is_err() {
                continue;
            }
            let lab = Lab {
                name: name.to_owned(),
                ns: format!("plab-{net}"),
                net,
                dir: Some(dir),
                next_tap: AtomicU32::new(0),
                _lock: lock,
            };
            lab.setup()
                .with_context(|| format!("setting up lab {name} ({})", lab.ns))?;
            return Ok(lab);
        }
        bail!("no free lab network in 10.77.{NET_RANGE:?}.0/24")
    }

    fn setup(&self) -> Result<()> {
        if Path::new("/run/netns").join(&self.ns).exists() {
            // Left behind by a killed run: we hold its lock now, so it is ours.
            remove_netns(&self.ns);
        }
        run(Command::new("ip").args(["netns", "add", &self.ns]))?;
        let ip = |args: &[&str]| run(Command::new("ip").args(["-n", &self.ns]).args(args));
        ip(&["link", "set", "lo", "up"])?;
        // STP off and no forward delay: a new tap forwards at once.
        ip(&[
            "link",
            "add",
            "br0",
            "type",
            "bridge",
            "stp_state",
            "0",
            "forward_delay",
            "0",
        ])?;
        ip(&["addr", "add", &format!("{}/24", self.ip()), "dev", "br0"])?;
        ip(&["link", "set", "br0", "up"])?;
        Ok(())
    }

    /// The lab's label.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace name (`plab-<n>`).
    pub fn netns(&self) -> &str {
        &self.ns
    }

    /// The bridge address, `10.77.<n>.1`: where servers in the lab listen.
    pub fn ip(&self) -> String {
        format!("10.77.{}.1", self.net)
    }

    /// The first three octets, `10.77.<n>`, for building ranges.
    pub fn subnet_prefix(&self) -> String {
        format!("10.77.{}", self.net)
    }

    /// The lab's private directory (logs, serial consoles, leases, configs).
    pub fn dir(&self) -> &Path {
        self.dir.as_ref().expect("lab dir present until drop").path()
    }

    /// A command that runs `args` inside the namespace.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns]).args(args);
        c
    }

    /// Runs `args` in the namespace to completion; returns stdout, fails
    /// with stderr on a non-zero exit.
    pub fn exec(&self, args: &[&str]) -> Result<String> {
        run(&mut self.command(args))
    }

    /// Starts `args` in the namespace in the background, stdout and stderr
    /// appended to `log`. The process is SIGKILLed when the handle drops.
    pub fn spawn(&self, args: &[&str], log: &Path) -> Result<LabProcess> {
        let name = args.first().copied().unwrap_or("?");
        self.spawn_command(self.command(args), name, log)
    }

    /// Like [`Lab::spawn`] for a command from [`Lab::command`] that the caller
    /// adjusted (environment, working directory).
    pub fn spawn_command(&self, mut cmd: Command, name: &str, log: &Path) -> Result<LabProcess> {
        let out = fs::OpenOptions::new().create(true).append(true).open(log)?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("spawning {cmd:?} in {}", self.ns))?;
        Ok(LabProcess {
            name: name.to_owned(),
            child,
            log: log.to_owned(),
            exited: None,
        })
    }

    /// Creates tap `name` in the namespace, enslaved to `br0` and up.
    pub fn add_tap(&self, name: &str) -> Result<()> {
        let ip = |args: &[&str]| run(Command::new("ip").args(["-n", &self.ns]).args(args));
        ip(&["tuntap", "add", "dev", name, "mode", "tap"])?;
        ip(&["link", "set", name, "master", "br0"])?;
        ip(&["link", "set", name, "up"])?;
        Ok(())
    }

    /// Deletes a tap created by [`Lab::add_tap`] (errors ignored: teardown).
    pub fn del_tap(&self, name: &str) {
        let _ = Command::new("ip")
            .args(["-n", &self.ns, "link", "del", name])
            .output();
    }

    /// A fresh tap name, unique within this lab (IFNAMSIZ-safe).
    pub(crate) fn next_tap_name(&self) -> String {
        format!("tap{}", self.next_tap.fetch_add(1, Ordering::Relaxed))
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        remove_netns(&self.ns);
        if (std::thread::panicking() || std::env::var_os("PROVISIONER_LAB_KEEP").is_some())
            && let Some(dir) = self.dir.take()
        {
            let kept = dir.keep();
            eprintln!("lab {}: logs kept in {}", self.name, kept.display());
        }
    }
}

/// Removes every `plab-<n>` namespace whose lock nobody holds: its owner
/// died without running `Drop` (SIGKILL, timeout), possibly leaving QEMU or
/// the appliance running inside. An owner takes the lock before creating the
/// namespace, so a lock we can take means there is no owner.
fn sweep_stale_labs() {
    let Ok(entries) = fs::read_dir("/run/netns") else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(net) = name.strip_prefix("plab-").and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(lock) = File::create(Path::new(LOCK_DIR).join(format!("net-{net}.lock"))) else {
            continue;
        };
        if lock.try_lock().is_ok() {
            remove_netns(&name);
        }
    }
}

/// Kills everything still running in `ns` and deletes it (taps go with it).
pub(crate) fn remove_netns(ns: &str) {
    if !Path::new("/run/netns").join(ns).exists() {
        return;
    }
    for _ in 0..3 {
        let pids = Command::new("ip")
            .args(["netns", "pids", ns])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        let pids: Vec<&str> = pids.split_whitespace().collect();
        if pids.is_empty() {
            break;
        }
        let _ = Command::new("busybox").arg("kill").arg("-9").args(&pids).output();
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = Command::new("ip").args(["netns", "del", ns]).output();
}

/// A background process in a lab. SIGKILLed (and reaped) on drop.
#[derive(Debug)]
pub struct LabProcess {
    name: String,
    child: Child,
    log: PathBuf,
    exited: Option<ExitStatus>,
}

impl LabProcess {
    /// The process id (`ip netns exec` execs, so this is the program itself).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The log file receiving stdout and stderr.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The whole log so far.
    pub fn log(&self) -> String {
        fs::read(&self.log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// The exit status if the process has ended.
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none() {
            self.exited = self.child.try_wait().ok().flatten();
        }
        self.exited
    }

    /// Waits until the log contains `needle`; fails early if the process
    /// exits, and on timeout; both errors carry the log's tail.
    pub fn wait_for_log(&mut self, needle: &str, timeout: Duration) -> Result<()> {
        let what = format!("{needle:?} in the {} log", self.name);
        let res = wait_for(timeout, &what, || {
            if self.log().contains(needle) {
                return Ok(Some(()));
            }
            if let Some(st) = self.try_exit() {
                if self.log().contains(needle) {
                    return Ok(Some(()));
                }
                bail!("{} exited ({st}) before logging {needle:?}", self.name);
            }
            Ok(None)
        });
        res.map_err(|e| {
            anyhow::anyhow!(
                "{e:#}\n--- last lines of {} ---\n{}",
                self.log.display(),
                tail_file(&self.log, 40)
            )
        })
    }

    /// SIGKILL and reap.
    pub fn kill_9(&mut self) {
        if self.try_exit().is_none() {
            let _ = self.child.kill();
            self.exited = self.child.wait().ok();
        }
    }

    /// SIGTERM, wait up to `grace`, then SIGKILL. Returns the exit status.
    pub fn stop_with(&mut self, grace: Duration) -> Result<ExitStatus> {
        if let Some(st) = self.try_exit() {
            return Ok(st);
        }
        run(Command::new("busybox").args(["kill", "-TERM", &self.pid().to_string()]))?;
        let start = Instant::now();
        while start.elapsed() < grace {
            if let Some(st) = self.try_exit() {
                return Ok(st);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.kill_9();
        bail!("{} ignored SIGTERM for {grace:?}; killed", self.name)
    }

    /// SIGTERM with a 15 s grace period.
    pub fn stop(&mut self) -> Result<ExitStatus> {
        self.stop_with(Duration::from_secs(15))
    }

    /// Waits up to `timeout` for the process to end by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let name = self.name.clone();
        wait_for(timeout, &format!("{name} to exit"), || Ok(self.try_exit()))
    }
}

impl Drop for LabProcess {
    fn drop(&mut self) {
        self.kill_9();
    }
}
