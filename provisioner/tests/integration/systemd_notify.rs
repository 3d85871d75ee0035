//! systemd integration of the real binary: `READY=1` on `$NOTIFY_SOCKET` only once
//! every listener is bound, `WATCHDOG=1` pings when `$WATCHDOG_USEC` is set (and
//! meant for this process), `STOPPING=1` on SIGTERM; and `serve --dry-run`, which
//! binds everything, reports and exits without ever signalling readiness.

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
