//! Issue 17 item 1, the remaining gap: an adoption that gives a cluster its last real
//! MAC arms it in the running daemon, without a restart. `provisioner serve` starts
//! with the loopback Talos cluster of `common::serve_rig` (fake apids on
//! 127.0.0.11-13, a fake Kubernetes API with Argo CD) unarmed: talos-3 carries a
//! placeholder MAC, talos-2 none. Nothing is dialled and full-mode DHCP reserves
//! nothing; the adoption of talos-3 through the API starts the bootstrap supervisor
//! (Bootstrap once, through to HandedOff) and DHCP offers talos-3 its `infra/` address.
//! A reload that changes nothing starts no second supervisor; one that changes the
//! cluster (talos-2 adopted) restarts its one task, which finds it HandedOff and
//! dials nothing.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use provisioner_core::dhcp::v4::{DhcpOption, Message, MessageType, OptionCode};
use provisioner_core::dhcp::wire;
use provisioner_core::model::MacAddr;
use serde_json::Value;
use tonic::Code;

use super::common::daemon::Daemon;
use super::common::serve_rig::{CLUSTER, Rig, wait_for_log};
use super::common::{BIOS_MAC, EFI_MAC};

const TALOS_3: &str = "52:54:00:00:01:03";
const PLACEHOLDER_3: &str = "02:00:00:00:01:03";

/// A DHCP relay agent on its own loopback address (port 67: root): full mode on
/// loopback answers relayed requests to the relay (RFC 2131 §4.1, `giaddr`).
struct Relay {
    sock: UdpSocket,
    giaddr: Ipv4Addr,
    server: SocketAddr,
}

impl Relay {
    fn new(server: SocketAddr) -> Self {
        // Per process and apart from store_faults' relays (127.n.1-4.1).
        let giaddr = Ipv4Addr::new(127, (std::process::id() % 200) as u8 + 20, 17, 1);
        let sock = UdpSocket::bind((giaddr, 67)).expect("bind the relay port (root)");
        sock.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        Self { sock, giaddr, server }
    }

    /// The address offered to `mac` within `wait`, if any.
    fn offer(&self, mac: &str, xid: u32, wait: Duration) -> Option<Ipv4Addr> {
        let mac: MacAddr = mac.parse().unwrap();
        let z = Ipv4Addr::UNSPECIFIED;
        let mut m = Message::new_with_id(xid, z, z, z, self.giaddr, &mac.0);
        m.opts_mut()
            .insert(DhcpOption::MessageType(MessageType::Discover));
        self.sock
            .send_to(&wire::encode(&m).unwrap(), self.server)
            .unwrap();
        let deadline = Instant::now() + wait;
        let mut buf = [0u8; 1500];
        while Instant::now() < deadline {
            let Ok(n) = self.sock.recv(&mut buf) else {
                continue;
            };
            let Ok(m) = wire::decode(&buf[..n]) else {
                continue;
            };
            if m.xid() == xid
                && matches!(
                    m.opts().get(OptionCode::MessageType),
                    Some(DhcpOption::MessageType(MessageType::Offer))
                )
            {
                return Some(m.yiaddr());
            }
        }
        None
    }
}

fn adopt(d: &Daemon, token: &str, mac: &str, node: &str) -> Value {
    let r = d
        .api_client()
        .post(format!("{}/api/v1/machines/{mac}/adopt", d.api_url()))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(format!(r#"{{"node":"{node}"}}"#))
        .send()
        .unwrap();
    let st = r.status().as_u16();
    let v: Value = r.json().unwrap();
    assert_eq!(st, 200, "{v}");
    assert!(v["reload_error"].is_null(), "{v}");
    v
}

fn log_count(d: &Daemon, needle: &str) -> usize {
    std::fs::read_to_string(&d.log)
        .unwrap_or_default()
        .matches(needle)
        .count()
}

fn until_log_count(d: &Daemon, needle: &str, n: usize) {
    let end = Instant::now() + Duration::from_secs(20);
    while log_count(d, needle) < n {
        assert!(Instant::now() < end, "fewer than {n} {needle:?} in the log");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether `/api/v1/clusters` lists the cluster as armed, and the status of its
/// talosconfig for `token`.
fn armed(d: &Daemon, token: &str) -> (bool, u16) {
    let (st, body) = d.api_get("/api/v1/clusters", Some(token));
    assert_eq!(st, 200, "{body}");
    let list: Value = serde_json::from_str(&body).unwrap();
    let c = list
        .as_array()
        .and_then(|a| a.iter().find(|c| c["name"] == CLUSTER))
        .unwrap_or_else(|| panic!("{body}"));
    let (st, _) = d.api_get(&format!("/api/v1/clusters/{CLUSTER}/talosconfig"), Some(token));
    (c["armed"] == true, st)
}

/// The offer to `mac`, retried (the relay's first DISCOVER may race the reload).
fn offered(relay: &Relay, mac: &str) -> Option<Ipv4Addr> {
    (0..10u32).find_map(|i| relay.offer(mac, 0x1700 + i, Duration::from_millis(300)))
}

#[test]
fn adopting_the_last_node_arms_the_cluster_live_bootstrap_and_dhcp_without_a_restart() {
    let Some(rig) = Rig::new(120) else {
        return;
    };
    rig.import_manifest();
    let dir = rig.tmp.path();
    let infra = dir.join(format!("infra/{CLUSTER}.yaml"));
    // Block style: adoption edits lines, not flow mappings.
    let text = format!(
        "distribution: talos\nclusterName: {CLUSTER}\ntalosVersion: v1.11.6\nkubernetesVersion: v1.34.1\n\
         endpoint: https://127.0.0.11:6443\nnodes:\n\
         \x20 - hostname: talos-1\n    ipAddress: 127.0.0.11\n    controlPlane: true\n    installDisk: /dev/vda\n    mac: \"{BIOS_MAC}\"\n\
         \x20 - hostname: talos-2\n    ipAddress: 127.0.0.12\n    controlPlane: true\n    installDisk: /dev/vda\n\
         \x20 - hostname: talos-3\n    ipAddress: 127.0.0.13\n    controlPlane: true\n    installDisk: /dev/vda\n    mac: \"{PLACEHOLDER_3}\"\n"
    );
    std::fs::write(&infra, text).unwrap();
    // Full-mode DHCP on loopback, reservations only (no pool).
    let port = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut cfg = std::fs::read_to_string(&rig.cfg).unwrap();
    cfg.push_str(&format!(
        "dhcp:\n  mode: full\n  listen: 127.0.0.1\n  port: {port}\n  pxe_port: 0\n  probe_secs: 0\n  \
         subnet: 127.0.0.0/8\n  lease_time_secs: 3600\n"
    ));
    std::fs::write(&rig.cfg, cfg).unwrap();
    let relay = Relay::new(SocketAddr::from(([127, 0, 0, 1], port)));

    let d = Daemon::start(&rig.cfg);
    let (admin, reader) = (d.token("admin"), d.token("read-only"));
    wait_for_log(&d, "no node dialled", Duration::from_secs(10));
    // Unarmed: the fake nodes answer, but nobody calls them; no reservation.
    assert_eq!(rig.lab.cluster.calls().len(), 0);
    assert_eq!(relay.offer(TALOS_3, 0x1600, Duration::from_millis(800)), None);
    assert_eq!(rig.lab.cluster.calls().len(), 0, "an unarmed cluster was dialled");
    assert_eq!(log_count(&d, "cluster workflow started"), 0);
    assert_eq!(cluster_bootstrap(&d, &reader, CLUSTER)["phase"], "pending");
    let before = armed(&d, &admin);
    assert!(!before.0 && before.1 != 200, "{before:?}");

    // The last placeholder replaced: armed now.
    let adopted = Instant::now();
    adopt(&d, &admin, TALOS_3, "talos-3");
    assert_eq!(offered(&relay, TALOS_3), Some(Ipv4Addr::new(127, 0, 0, 13)));
    assert_eq!(offered(&relay, BIOS_MAC), Some(Ipv4Addr::new(127, 0, 0, 11)));
    // The API's views follow: armed in the list, a talosconfig minted.
    let (is_armed, talosconfig) = armed(&d, &reader);
    assert!(is_armed);
    assert_eq!(talosconfig, 403, "a read-only token gets no credential");
    assert_eq!(armed(&d, &admin), (true, 200));
    let took = rig.until_done(&d, &reader, adopted);
    println!("adoption → HandedOff in {took:?}");
    let (st, _) = d.api_get(&format!("/api/v1/clusters/{CLUSTER}/kubeconfig"), Some(&admin));
    assert_eq!(st, 200, "the kubeconfig the bootstrap fetched");
    assert_eq!(rig.lab.cluster.count("Bootstrap", Code::Ok), 1);
    assert_eq!(rig.lab.cluster.count("Bootstrap", Code::AlreadyExists), 0);
    assert_eq!(log_count(&d, "cluster workflow started"), 1);
    // The cluster was armed after start: its kubeconfig is kept encrypted on disk.
    let age = dir.join(format!("state/secrets/kubeconfigs/{CLUSTER}.age"));
    assert!(std::fs::read(&age).unwrap().starts_with(b"age-encryption.org/v1"));
    until_log_count(&d, "bootstrap HandedOff: Git owns the cluster", 1);
    let calls = rig.lab.cluster.calls().len();

    // The same adoption again: nothing changed, no second supervisor.
    let again = adopt(&d, &admin, TALOS_3, "talos-3");
    assert_eq!(again["lines"], serde_json::json!([]), "{again}");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(log_count(&d, "cluster workflow started"), 1);
    assert_eq!(log_count(&d, "bootstrap HandedOff: Git owns the cluster"), 1);

    // talos-2 adopted: the cluster changed, its one task restarts and, HandedOff,
    // dials nothing; DHCP now reserves talos-2's address too.
    adopt(&d, &admin, EFI_MAC, "talos-2");
    wait_for_log(&d, "cluster definition changed", Duration::from_secs(10));
    until_log_count(&d, "bootstrap HandedOff: Git owns the cluster", 2);
    assert_eq!(log_count(&d, "cluster workflow started"), 2);
    assert_eq!(offered(&relay, EFI_MAC), Some(Ipv4Addr::new(127, 0, 0, 12)));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(rig.lab.cluster.calls().len(), calls, "dialled after hand-off");
    assert_eq!(rig.lab.cluster.count("Bootstrap", Code::Ok), 1);
    stops_cleanly(d);
}

/// `GET /api/v1/clusters` → the `bootstrap` object of `name`.
fn cluster_bootstrap(d: &Daemon, token: &str, name: &str) -> Value {
    let (st, body) = d.api_get("/api/v1/clusters", Some(token));
    assert_eq!(st, 200, "{body}");
    let list: Value = serde_json::from_str(&body).unwrap();
    list.as_array()
        .and_then(|a| a.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("{body}"))["bootstrap"]
        .clone()
}

/// The k0s readiness workflow: a k0s cluster whose worker carries a placeholder MAC
/// gets no workflow although its controller was served its install; adopting the
/// worker starts it (it records WaitK0s), once.
#[test]
fn adopting_the_last_k0s_node_starts_the_k0s_workflow_once_without_a_restart() {
    use super::common::daemon::write_config;
    use provisioner_core::inventory::Inventory;
    use provisioner_core::model::{Event, Machine};
    const CONTROLLER: &str = "52:54:00:00:02:01";
    const WORKER: &str = "52:54:00:00:02:02";
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    super::common::write_catalog(dir);
    std::fs::create_dir_all(dir.join("infra")).unwrap();
    std::fs::write(
        dir.join("infra/beelink.yaml"),
        format!(
            "distribution: k0s\nclusterName: beelink\nk0sVersion: v1.36.3+k0s.2\nflatcarVersion: 4459.2.0\nnodes:\n\
             \x20 - hostname: beelink-1\n    controlPlane: true\n    ipAddress: 127.0.0.1\n    mac: \"{CONTROLLER}\"\n\
             \x20 - hostname: beelink-2\n    ipAddress: 127.0.0.2\n    mac: \"02:00:00:00:02:02\"\n"
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("profiles/profiles/k0s.yaml"),
        "id: k0s\nimage: test-img\nconfig: flatcar\ncluster: beelink\n",
    )
    .unwrap();
    // The controller was served its stage-1 Ignition (the k0s workflow's start signal).
    std::fs::create_dir_all(dir.join("state")).unwrap();
    {
        let inv = provisioner::store::RedbInventory::open(&dir.join("state/inventory.redb")).unwrap();
        let mac: MacAddr = CONTROLLER.parse().unwrap();
        let now = time::OffsetDateTime::now_utc();
        inv.put(&Machine::discovered(mac, now)).unwrap();
        let served = Event::ConfigServed {
            bytes: 1234,
            config: provisioner_core::catalog::ConfigKind::Flatcar,
        };
        inv.append(mac, &[served.at(now)]).unwrap();
    }
    let d = Daemon::start(&write_config(dir, dir));
    let (admin, reader) = (d.token("admin"), d.token("read-only"));
    wait_for_log(&d, "no node dialled", Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(1000));
    let b = cluster_bootstrap(&d, &reader, "beelink");
    assert_eq!(b["phase"], "pending", "unarmed, yet started: {b:#}");
    assert_eq!(log_count(&d, "cluster workflow started"), 0);

    adopt(&d, &admin, WORKER, "beelink-2");
    let end = Instant::now() + Duration::from_secs(20);
    let b = loop {
        let b = cluster_bootstrap(&d, &reader, "beelink");
        if b["phase"] != "pending" {
            break b;
        }
        assert!(Instant::now() < end, "the k0s workflow did not start: {b:#}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let first = &b["steps"][0];
    assert_eq!(first["name"], "WaitK0s", "{b:#}");
    assert_ne!(first["status"], "pending", "{b:#}");
    assert_eq!(log_count(&d, "cluster workflow started"), 1);

    // Adopted again: nothing changed, no second workflow.
    adopt(&d, &admin, WORKER, "beelink-2");
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(log_count(&d, "cluster workflow started"), 1);
    let d = stops_cleanly(d);
    assert_eq!(
        log_count(&d, "k0s workflow stopped"),
        1,
        "the shutdown token reached it"
    );
}

/// SIGTERM: the workflows started by reloads end with the servers, within the
/// drain's deadline.
fn stops_cleanly(mut d: Daemon) -> Daemon {
    let t = Instant::now();
    d.stop();
    let log = std::fs::read_to_string(&d.log).unwrap();
    assert!(
        t.elapsed() < Duration::from_secs(5) && !log.contains("did not stop"),
        "{:?}\n{log}",
        t.elapsed()
    );
    d
}
