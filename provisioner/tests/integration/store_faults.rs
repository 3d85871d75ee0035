//! Store faults on the real binary: a full disk under a full-mode DHCP lease storm
//! (health turns `degraded`, the appliance heals without a restart once space is
//! freed, every acknowledged lease is on disk) and a corrupt database at start (a
//! clear error naming the file and `provisioner restore`, a non-zero exit, no panic).
//!
//! The state directory is a small tmpfs in a private mount namespace the test makes
//! (`unshare -m`); the daemon runs inside it (`nsenter -m`). DHCP clients talk to the
//! daemon over loopback as a relay agent would (`giaddr` set, RFC 2131 §4.1: the
//! server answers the relay on port 67), each thread from its own 127.x address.

use crate::common;

use std::collections::BTreeMap;
use std::io::BufRead;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::daemon::{BIN, Daemon, http, write_config};
use provisioner_core::dhcp::lease::LeaseStore;
use provisioner_core::dhcp::v4::{DhcpOption, Message, MessageType, OptionCode};
use provisioner_core::dhcp::wire;
use provisioner_core::model::MacAddr;

/// A private mount namespace holding a tmpfs on `state`, kept alive by a `sleep`.
struct TmpfsState {
    holder: Child,
    state: PathBuf,
}

impl TmpfsState {
    fn new(state: &Path, size: &str) -> Self {
        std::fs::create_dir_all(state).unwrap();
        let script = format!(
            "mount -t tmpfs -o size={size},mode=0700 tmpfs '{}' && echo ready && exec sleep 3600",
            state.display()
        );
        let mut holder = Command::new("unshare")
            .args(["-m", "--propagation", "private", "sh", "-c", &script])
            .stdout(Stdio::piped())
            .spawn()
            .expect("unshare (util-linux)");
        let mut line = String::new();
        std::io::BufReader::new(holder.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready", "tmpfs not mounted (root needed)");
        Self {
            holder,
            state: state.to_path_buf(),
        }
    }

    fn prefix(&self) -> Vec<String> {
        ["nsenter", "-t", &self.holder.id().to_string(), "-m", "--"]
            .map(String::from)
            .to_vec()
    }

    fn sh(&self, script: &str) -> String {
        let out = Command::new("nsenter")
            .args([
                "-t",
                &self.holder.id().to_string(),
                "-m",
                "--",
                "sh",
                "-c",
                script,
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Fills the tmpfs to the last byte.
    fn fill(&self) {
        self.sh(&format!(
            "dd if=/dev/zero of='{}/fill' bs=4k 2>/dev/null; sync",
            self.state.display()
        ));
    }

    fn free(&self) {
        self.sh(&format!("rm -f '{}/fill'", self.state.display()));
    }

    /// Copies `file` out of the namespace to `to`.
    fn copy_out(&self, file: &str, to: &Path) {
        self.sh(&format!(
            "cp '{}/{file}' '{}'",
            self.state.display(),
            to.display()
        ));
    }
}

impl Drop for TmpfsState {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

/// A relay agent on `giaddr:67` asking for leases on behalf of clients.
struct Relay {
    sock: UdpSocket,
    giaddr: Ipv4Addr,
    server: SocketAddr,
}

impl Relay {
    fn new(giaddr: Ipv4Addr, server: SocketAddr) -> Self {
        let sock = UdpSocket::bind((giaddr, 67)).expect("bind the relay port (root)");
        sock.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        Self { sock, giaddr, server }
    }

    fn send(&self, mac: MacAddr, xid: u32, t: MessageType, ask: Option<(Ipv4Addr, Ipv4Addr)>) {
        let z = Ipv4Addr::UNSPECIFIED;
        let mut m = Message::new_with_id(xid, z, z, z, self.giaddr, &mac.0);
        m.opts_mut().insert(DhcpOption::MessageType(t));
        if let Some((ip, server_id)) = ask {
            m.opts_mut().insert(DhcpOption::RequestedIpAddress(ip));
            m.opts_mut().insert(DhcpOption::ServerIdentifier(server_id));
        }
        self.sock
            .send_to(&wire::encode(&m).unwrap(), self.server)
            .unwrap();
    }

    /// The reply to `xid` within `wait`: (type, yiaddr, server id).
    fn reply(&self, xid: u32, wait: Duration) -> Option<(MessageType, Ipv4Addr, Ipv4Addr)> {
        let deadline = Instant::now() + wait;
        let mut buf = [0u8; 1500];
        while Instant::now() < deadline {
            let Ok(n) = self.sock.recv(&mut buf) else {
                continue;
            };
            let Ok(m) = wire::decode(&buf[..n]) else {
                continue;
            };
            if m.xid() != xid {
                continue;
            }
            let t = match m.opts().get(OptionCode::MessageType) {
                Some(DhcpOption::MessageType(t)) => *t,
                _ => continue,
            };
            let sid = match m.opts().get(OptionCode::ServerIdentifier) {
                Some(DhcpOption::ServerIdentifier(ip)) => *ip,
                _ => Ipv4Addr::UNSPECIFIED,
            };
            return Some((t, m.yiaddr(), sid));
        }
        None
    }

    /// DISCOVER → OFFER → REQUEST → ACK; the acknowledged address, if any.
    fn lease(&self, mac: MacAddr, xid: u32, wait: Duration) -> Option<Ipv4Addr> {
        self.send(mac, xid, MessageType::Discover, None);
        let (t, ip, sid) = self.reply(xid, wait)?;
        if t != MessageType::Offer {
            return None;
        }
        self.send(mac, xid, MessageType::Request, Some((ip, sid)));
        match self.reply(xid, wait)? {
            (MessageType::Ack, acked, _) => Some(acked),
            _ => None,
        }
    }
}

/// Runs `per_thread` clients on each of four relays at once; returns the ACKs.
fn storm(relays: &[Relay], round: u8, per_thread: u8, wait: Duration) -> BTreeMap<MacAddr, Ipv4Addr> {
    std::thread::scope(|s| {
        let handles: Vec<_> = relays
            .iter()
            .enumerate()
            .map(|(t, relay)| {
                s.spawn(move || {
                    let mut acked = BTreeMap::new();
                    for n in 0..per_thread {
                        let mac = MacAddr([0x52, 0x54, 0x00, round, t as u8, n]);
                        let xid = u32::from_be_bytes([round, t as u8, n, 1]);
                        if let Some(ip) = relay.lease(mac, xid, wait) {
                            acked.insert(mac, ip);
                        }
                    }
                    acked
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
    })
}

fn healthz(d: &Daemon) -> (u16, String) {
    http(d.http, "GET", "/healthz")
        .map(|(st, body)| (st, String::from_utf8_lossy(&body).into_owned()))
        .unwrap_or((0, String::new()))
}

fn wait_for(d: &Daemon, want: u16, limit: Duration) -> Option<(Duration, String)> {
    let start = Instant::now();
    while start.elapsed() < limit {
        let (st, body) = healthz(d);
        if st == want {
            return Some((start.elapsed(), body));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

#[test]
fn full_disk_during_a_lease_storm_degrades_heals_and_loses_no_acked_lease() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    common::write_catalog(p);
    let cfg = write_config(p, p);
    let port = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text.push_str(&format!(
        "dhcp:\n  mode: full\n  pool_policy: any\n  listen: 127.0.0.1\n  port: {port}\n  pxe_port: 0\n  probe_secs: 0\n  \
         subnet: 127.0.0.0/8\n  pool: {{ start: 127.200.0.1, end: 127.200.15.250 }}\n  lease_time_secs: 3600\n"
    ));
    std::fs::write(&cfg, text).unwrap();
    let ns = TmpfsState::new(&p.join("state"), "24m");
    let d = Daemon::start_in(&cfg, &ns.prefix());
    let server: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    // Per-process relay addresses, so parallel runs never share a port 67.
    let net = (std::process::id() % 200) as u8 + 20;
    let relays: Vec<Relay> = (1..=4u8)
        .map(|t| Relay::new(Ipv4Addr::new(127, net, t, 1), server))
        .collect();
    let wait = Duration::from_millis(400);

    // With space: every client gets its lease.
    let mut acked = storm(&relays, 1, 25, wait);
    assert_eq!(acked.len(), 100, "before the fault every client is acknowledged");
    assert_eq!(healthz(&d).0, 200);

    // The disk fills during the storm.
    ns.fill();
    let during = storm(&relays, 2, 25, wait);
    let (degraded_after, why) =
        wait_for(&d, 503, Duration::from_secs(15)).expect("/healthz turns degraded on a full disk");
    assert!(why.starts_with("degraded:"), "{why}");
    let during_acked = during.len();
    acked.extend(during);

    // Space comes back: the daemon heals without a restart.
    ns.free();
    let (recovery, _) =
        wait_for(&d, 200, Duration::from_secs(30)).expect("/healthz recovers once space is freed");
    let after = storm(&relays, 3, 25, wait);
    assert_eq!(
        after.len(),
        100,
        "after recovery every client is acknowledged again"
    );
    acked.extend(after);

    // Healed in place: same process, the store reopened (not restarted).
    let mut d = d;
    assert!(d.child.try_wait().unwrap().is_none(), "the daemon never exited");
    let log = std::fs::read_to_string(&d.log).unwrap();
    assert!(log.contains("store reopened after an I/O error"), "{log}");

    // Every acknowledged lease is on disk (no ACK for an unstored lease).
    d.stop();
    let copy = p.join("leases-copy.redb");
    ns.copy_out("leases.redb", &copy);
    let stored = provisioner::store::RedbLeases::open(&copy).unwrap();
    let mut lost = 0;
    for (mac, ip) in &acked {
        match stored.by_mac(*mac).unwrap() {
            Some(l) if l.ip == *ip => {}
            other => {
                lost += 1;
                eprintln!("acknowledged {mac} -> {ip}, stored {other:?}");
            }
        }
    }
    eprintln!(
        "ENOSPC figures: acked {} (during the full disk: {during_acked} of 100), stored {}, lost {lost}, \
         /healthz 503 {degraded_after:?} after the storm on the full disk, 200 again {recovery:?} after \
         space was freed",
        acked.len(),
        stored.list().unwrap().len()
    );
    assert_eq!(lost, 0, "no ACK for a lease that is not stored");
    assert!(
        during_acked < 100,
        "the disk really was full ({during_acked} acked)"
    );
}

/// `serve` on a store that is not a redb file or whose header is mangled.
fn serve_on_corrupt(bytes: impl FnOnce(&Path)) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    common::write_catalog(p);
    let cfg = write_config(p, p);
    std::fs::create_dir_all(p.join("state")).unwrap();
    bytes(&p.join("state/inventory.redb"));
    let out = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&cfg)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn foreign_inventory_file_at_start_is_a_clear_error() {
    let (code, err) =
        serve_on_corrupt(|f| std::fs::write(f, "this is a YAML file, not a database\n").unwrap());
    assert!(matches!(code, Some(c) if c != 0), "exit {code:?}: {err}");
    assert!(
        err.contains("inventory.redb") && err.contains("provisioner restore"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn mangled_inventory_file_at_start_is_a_clear_error() {
    let (code, err) = serve_on_corrupt(|f| {
        drop(provisioner::store::RedbInventory::open(f).unwrap());
        let mut bytes = std::fs::read(f).unwrap();
        // Keep the magic, destroy the rest of the header and the first pages.
        for b in bytes.iter_mut().skip(9).take(8192) {
            *b = 0xff;
        }
        std::fs::write(f, bytes).unwrap();
    });
    assert!(matches!(code, Some(c) if c != 0), "exit {code:?}: {err}");
    assert!(
        err.contains("inventory.redb") && err.contains("provisioner restore"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}
