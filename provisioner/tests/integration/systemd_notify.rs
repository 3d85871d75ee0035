//! systemd integration of the real binary: `READY=1` on `$NOTIFY_SOCKET` only once
//! every listener is bound, `WATCHDOG=1` pings when `$WATCHDOG_USEC` is set (and
//! meant for this process) and only while the store answers (a frozen state
//! filesystem stops them until the thaw), `STOPPING=1` on SIGTERM; and
//! `serve --dry-run`, which binds everything, reports and exits without ever
//! signalling readiness.

use crate::common;

use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::daemon::{BIN, Daemon, run, write_config};

fn notify_socket(dir: &Path) -> (UnixDatagram, std::path::PathBuf) {
    let path = dir.join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    (sock, path)
}

fn recv(sock: &UnixDatagram) -> String {
    let mut buf = [0u8; 4096];
    let n = sock.recv(&mut buf).expect("no notification within 10 s");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

fn listener(log: &str, what: &str) -> SocketAddr {
    log.lines()
        .find(|l| l.contains(&format!("listening for {what} on")))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|a| a.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {what} listener in the log:\n{log}"))
}

fn setup() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    common::write_catalog(dir.path());
    let cfg = write_config(dir.path(), dir.path());
    (dir, cfg)
}

#[test]
fn ready_only_after_every_listener_then_watchdog_then_stopping() {
    let (dir, cfg) = setup();
    let (sock, sock_path) = notify_socket(dir.path());
    let log_path = dir.path().join("daemon.log");
    let mut child = Running(
        Command::new(BIN)
            .args(["serve", "--config"])
            .arg(&cfg)
            .env("NOTIFY_SOCKET", &sock_path)
            .env("WATCHDOG_USEC", "200000")
            .env("NO_COLOR", "1")
            .env("PROVISIONER_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log_path).unwrap())
            .spawn()
            .unwrap(),
    );

    let ready = recv(&sock);
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready:?}");
    assert!(
        ready.lines().any(|l| l.starts_with("STATUS=serving http://")),
        "{ready:?}"
    );
    // At READY every listener is bound and answering.
    let log = std::fs::read_to_string(&log_path).unwrap();
    for what in ["HTTP", "API"] {
        TcpStream::connect_timeout(&listener(&log, what), Duration::from_secs(2))
            .unwrap_or_else(|e| panic!("{what} not accepting at READY: {e}"));
    }
    let tftp = listener(&log, "TFTP");
    assert!(
        std::net::UdpSocket::bind(tftp).is_err(),
        "TFTP port not bound at READY"
    );

    // WatchdogSec=200ms: pings every 100 ms.
    let start = Instant::now();
    let mut pings = 0;
    while start.elapsed() < Duration::from_millis(700) {
        if recv(&sock).lines().any(|l| l == "WATCHDOG=1") {
            pings += 1;
        }
    }
    assert!(pings >= 4, "{pings} watchdog pings in 700 ms at a 100 ms period");

    let pid = nix::unistd::Pid::from_raw(child.0.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let mut stopping = false;
    for _ in 0..50 {
        let m = recv(&sock);
        if m.lines().any(|l| l == "STOPPING=1") {
            stopping = true;
            break;
        }
    }
    assert!(stopping, "no STOPPING=1 after SIGTERM");
    assert!(child.0.wait().unwrap().success());
}

#[test]
fn no_watchdog_pings_when_the_watchdog_is_for_another_process() {
    let (dir, cfg) = setup();
    let (sock, sock_path) = notify_socket(dir.path());
    let _child = Running(
        Command::new(BIN)
            .args(["serve", "--config"])
            .arg(&cfg)
            .env("NOTIFY_SOCKET", &sock_path)
            .env("WATCHDOG_USEC", "100000")
            .env("WATCHDOG_PID", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    assert!(recv(&sock).contains("READY=1"));
    sock.set_read_timeout(Some(Duration::from_millis(400))).unwrap();
    let mut buf = [0u8; 256];
    let got = sock
        .recv(&mut buf)
        .map(|n| String::from_utf8_lossy(&buf[..n]).into_owned());
    assert!(got.is_err(), "unexpected notification {got:?}");
}

#[test]
fn dry_run_binds_reports_and_exits_without_ready() {
    let (dir, cfg) = setup();
    let (sock, sock_path) = notify_socket(dir.path());
    let out = Command::new(BIN)
        .args(["serve", "--dry-run", "--config"])
        .arg(&cfg)
        .env("NOTIFY_SOCKET", &sock_path)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for want in [
        "dry-run: ok",
        "server_ip: 127.0.0.1",
        "listener: HTTP boot (tcp) 127.0.0.1:",
        "listener: API (tcp) 127.0.0.1:",
        "listener: TFTP (udp) 127.0.0.1:",
        "catalog: 1 image(s), 1 profile(s), 2 group(s)",
        "inventory: 0 machine(s)",
    ] {
        assert!(stdout.contains(want), "lacks {want:?}:\n{stdout}");
    }
    sock.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    assert!(
        sock.recv(&mut [0u8; 64]).is_err(),
        "dry-run must not signal READY"
    );

    // With the store held by a running daemon, the self-test fails and says why.
    let _d = Daemon::start(&cfg);
    let (ok, _, err) = run(&["serve", "--dry-run", "--config", cfg.to_str().unwrap()]);
    assert!(!ok && err.contains("another process"), "{err}");
}

/// The daemon this test started; killed and reaped on drop unless already reaped
/// (std's `Child::kill` sends nothing once the status was collected).
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The state directory on an ext4 loop image mounted in a private mount namespace
/// (held by a `sleep`), so `fsfreeze` can hang its disk: every write and fsync then
/// blocks until the thaw, as on a dead or wedged disk. Needs root.
struct FreezableState {
    holder: std::process::Child,
    state: std::path::PathBuf,
}

impl FreezableState {
    fn new(dir: &Path) -> Self {
        let (img, state) = (dir.join("state.img"), dir.join("state"));
        std::fs::create_dir_all(&state).unwrap();
        std::fs::File::create(&img).unwrap().set_len(64 << 20).unwrap();
        let (ok, _, err) = sh(&format!("mkfs.ext4 -q -F '{}'", img.display()));
        assert!(ok, "mkfs.ext4: {err}");
        // `-o loop` attaches the image with autoclear: the loop device goes with the
        // last mount, i.e. with the namespace.
        let script = format!(
            "mount -o loop '{}' '{}' && echo ready && exec sleep 3600",
            img.display(),
            state.display()
        );
        let mut holder = Command::new("unshare")
            .args(["-m", "--propagation", "private", "sh", "-c", &script])
            .stdout(Stdio::piped())
            .spawn()
            .expect("unshare (util-linux)");
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(holder.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        assert_eq!(line.trim(), "ready", "loop mount failed (root needed)");
        Self { holder, state }
    }

    fn prefix(&self) -> Vec<String> {
        ["nsenter", "-t", &self.holder.id().to_string(), "-m", "--"]
            .map(String::from)
            .to_vec()
    }

    /// `fsfreeze -f` (true) or `-u` (false) inside the namespace.
    fn freeze(&self, on: bool) -> bool {
        let mut cmd = Command::new("nsenter");
        cmd.args(self.prefix().iter().skip(1))
            .args(["fsfreeze", if on { "-f" } else { "-u" }])
            .arg(&self.state)
            .stderr(Stdio::null());
        cmd.status().is_ok_and(|s| s.success())
    }
}

impl Drop for FreezableState {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

/// Thaws on drop, so a failing test never leaves the daemon (blocked in the frozen
/// filesystem, unkillable until the thaw) or the mount behind. Declared after the
/// daemon so it drops first.
struct Thaw<'a>(&'a FreezableState);

impl Drop for Thaw<'_> {
    fn drop(&mut self) {
        self.0.freeze(false);
    }
}

fn sh(script: &str) -> (bool, String, String) {
    let out = Command::new("sh").args(["-c", script]).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Times (since `t0`) of the `WATCHDOG=1` datagrams received during `window`.
fn pings(sock: &UnixDatagram, t0: Instant, window: Duration) -> Vec<Duration> {
    let end = Instant::now() + window;
    let mut at = Vec::new();
    let mut buf = [0u8; 4096];
    while let Some(left) = end.checked_duration_since(Instant::now()) {
        sock.set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .unwrap();
        if let Ok(n) = sock.recv(&mut buf)
            && String::from_utf8_lossy(&buf[..n])
                .lines()
                .any(|l| l == "WATCHDOG=1")
        {
            at.push(t0.elapsed());
        }
    }
    at
}

/// Issue 15 item 1: the watchdog is fed only while the store answers. A hung disk
/// (the state filesystem frozen: the health round trip's commit blocks) stops the
/// `WATCHDOG=1` pings within the health timeout (`service::health::TIMEOUT`, 2 s, checked
/// every 2 s), so systemd would restart the service; after the thaw the store answers
/// again and the pings resume, in the same process. (A store that answers with an
/// I/O error, e.g. a full disk, keeps the pings: it heals itself by reopening, and a
/// restart would not free the disk; `store_faults.rs` covers that case.)
#[test]
fn watchdog_pings_stop_while_the_store_hangs_and_resume_after() {
    let (dir, cfg) = setup();
    let fs = FreezableState::new(dir.path());
    let (sock, sock_path) = notify_socket(dir.path());
    let log_path = dir.path().join("daemon.log");
    let prefix = fs.prefix();
    let mut child = Running(
        Command::new(&prefix[0])
            .args(&prefix[1..])
            .arg(BIN)
            .args(["serve", "--config"])
            .arg(&cfg)
            .env("NOTIFY_SOCKET", &sock_path)
            // WatchdogSec=1s: pings every 500 ms.
            .env("WATCHDOG_USEC", "1000000")
            .env("NO_COLOR", "1")
            .env("PROVISIONER_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log_path).unwrap())
            .spawn()
            .unwrap(),
    );
    let thaw = Thaw(&fs);
    let ready = recv(&sock);
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready:?}");
    let http = listener(&std::fs::read_to_string(&log_path).unwrap(), "HTTP");

    let t0 = Instant::now();
    let before = pings(&sock, t0, Duration::from_secs(2));
    assert!(before.len() >= 3, "pings before the fault: {before:?}");

    assert!(fs.freeze(true), "fsfreeze -f");
    let frozen_at = t0.elapsed();
    let during = pings(&sock, t0, Duration::from_secs(10));
    // Pings may continue until the first round trip times out (≤ EVERY + TIMEOUT),
    // then none at all.
    let last = during.last().copied().unwrap_or(frozen_at);
    let stopped_after = last.saturating_sub(frozen_at);
    assert!(
        stopped_after <= Duration::from_secs(5),
        "pings went on {stopped_after:?} into the hang: {during:?}"
    );
    let silent = (frozen_at + Duration::from_secs(10)).saturating_sub(last);
    assert!(
        silent >= Duration::from_secs(5),
        "only {silent:?} without a ping while the store hangs: {during:?}"
    );
    // Meanwhile /healthz on the boot port says why (it waits for at most one timeout).
    let (st, body) = common::daemon::http(http, "GET", "/healthz").unwrap();
    let body = String::from_utf8_lossy(&body);
    assert_eq!(st, 503, "{body}");
    assert!(body.contains("degraded"), "{body}");

    assert!(fs.freeze(false), "fsfreeze -u");
    let thawed_at = t0.elapsed();
    let after = pings(&sock, t0, Duration::from_secs(6));
    let resumed = after
        .first()
        .map(|t| t.saturating_sub(thawed_at))
        .unwrap_or_else(|| panic!("no ping within 6 s of the thaw"));
    assert!(after.len() >= 3, "pings after the thaw: {after:?}");
    let (st, body) = common::daemon::http(http, "GET", "/healthz").unwrap();
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&body));
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        log.contains("withholding the watchdog ping"),
        "the daemon says why:\n{log}"
    );
    eprintln!(
        "watchdog: {} pings in 2 s before; store frozen: pings stopped {stopped_after:?} after \
         the freeze, none for {silent:?}; /healthz 503; thawed: first ping {resumed:?} later, \
         {} in 6 s; same process",
        before.len(),
        after.len()
    );
    drop(thaw);
    let pid = nix::unistd::Pid::from_raw(child.0.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    assert!(child.0.wait().unwrap().success());
}
