//! Booting the test root with systemd as PID 1 (`systemd-nspawn -b`, private network,
//! not registered with a host systemd), so the installed unit runs under the real
//! service manager of Debian 12: Type=notify, watchdog, capabilities, sandbox.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::chroot::text;

/// A booted container; powered off (then killed if it hangs) on drop.
pub struct Booted {
    nspawn: Child,
    /// The container's PID 1, as the host sees it.
    leader: u32,
}

impl Booted {
    pub fn start(root: &Path, log: &Path) -> Self {
        let log = std::fs::File::create(log).unwrap();
        let nspawn = Command::new("systemd-nspawn")
            .args([
                "--quiet",
                "--boot",
                "--register=no",
                "--keep-unit",
                "--private-network",
            ])
            .arg("--directory")
            .arg(root)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("systemd-nspawn (Debian package systemd-container; tests/packages.txt)");
        let leader = find_container_init(nspawn.id());
        let booted = Self { nspawn, leader };
        // "degraded" (a unit failed) still means the boot finished; the caller checks
        // the unit it cares about. Right after start the manager's socket may not be
        // up yet ("offline"), so `--wait` alone is not enough.
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let o = booted.exec(&["timeout", "30", "systemctl", "is-system-running", "--wait"]);
            let state = String::from_utf8_lossy(&o.stdout).trim().to_string();
            if matches!(state.as_str(), "running" | "degraded") {
                break;
            }
            assert!(Instant::now() < deadline, "boot did not finish: {}", text(&o));
            std::thread::sleep(Duration::from_millis(200));
        }
        booted
    }

    /// The container's PID 1 as the host sees it (its namespaces are the container's).
    pub fn leader(&self) -> u32 {
        self.leader
    }

    /// A command in every namespace of the container.
    pub fn exec(&self, args: &[&str]) -> Output {
        Command::new("nsenter")
            .args(["-t", &self.leader.to_string(), "-a"])
            .args(args)
            .output()
            .unwrap()
    }

    /// A command on the host inside the container's network namespace only.
    pub fn in_netns(&self, args: &[&str]) -> Output {
        Command::new("nsenter")
            .args(["-t", &self.leader.to_string(), "-n"])
            .args(args)
            .output()
            .unwrap()
    }

    /// `systemctl show -p PROP --value UNIT`.
    pub fn prop(&self, unit: &str, prop: &str) -> String {
        let o = self.exec(&["systemctl", "show", "-p", prop, "--value", unit]);
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    }

    /// Waits until `cond` holds, polling every 200 ms.
    pub fn wait_for(&self, what: &str, secs: u64, mut cond: impl FnMut(&Self) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while !cond(self) {
            assert!(
                Instant::now() < deadline,
                "timed out after {secs} s waiting for {what}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// The container's systemd: a child of nspawn named `systemd` whose PID namespace is
/// not ours. nspawn forks an intermediate process first, and running `systemctl`
/// in the wrong namespaces could address the host's service manager, so both are
/// checked before the PID is used.
fn find_container_init(nspawn: u32) -> u32 {
    let ours = std::fs::read_link("/proc/self/ns/pid").unwrap();
    let children = format!("/proc/{nspawn}/task/{nspawn}/children");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let pids: Vec<u32> = std::fs::read_to_string(&children)
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect();
        for pid in pids {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            let ns = std::fs::read_link(format!("/proc/{pid}/ns/pid")).ok();
            if comm.trim() == "systemd" && ns.is_some_and(|n| n != ours) {
                return pid;
            }
        }
        assert!(
            Instant::now() < deadline,
            "systemd-nspawn started no container systemd"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Drop for Booted {
    fn drop(&mut self) {
        // SIGTERM makes nspawn ask the container's init for an orderly poweroff
        // (its --kill-signal, SIGRTMIN+3 with --boot).
        let pid = nix::unistd::Pid::from_raw(self.nspawn.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.nspawn.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.nspawn.kill();
        let _ = self.nspawn.wait();
    }
}
