//! Power drivers against real peers: the Wake-on-LAN magic packet captured by a UDP
//! listener in a network namespace this test creates (exact bytes), and the Proxmox
//! and Redfish drivers against fake servers on loopback that record paths, methods,
//! auth headers and bodies. Also the re-image path for a non-Talos node end to end.

use crate::common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use common::BIOS_MAC;
use common::api::{api_rig, boot, call};
use provisioner::power::{
    OutcomeStatus, PowerConfig, PowerDriver, PowerDrivers, PowerEndpoint, PowerError, Proxmox, Redfish,
    WakeOnLan, WolConfig, magic_packet,
};
use provisioner_core::model::MacAddr;
use provisioner_core::power::{PowerAction, PowerSpec};
use serde_json::{Value, json};

// ---------------------------------------------------------------- Wake-on-LAN

struct Netns(Vec<String>);

impl Drop for Netns {
    fn drop(&mut self) {
        for n in &self.0 {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
    }
}

fn ip(args: &[&str]) {
    let st = Command::new("ip")
        .args(args)
        .status()
        .expect("ip(8) from iproute2");
    assert!(st.success(), "ip {args:?}");
}

/// Runs `f` on a thread that has entered network namespace `ns`.
fn in_netns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    let path = format!("/var/run/netns/{ns}");
    std::thread::spawn(move || {
        let fd = std::fs::File::open(&path).unwrap();
        nix::sched::setns(&fd, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        f()
    })
}

#[test]
fn wol_magic_packet_is_broadcast_on_the_chosen_interface() {
    if !nix::unistd::geteuid().is_root() {
        println!("SKIPPED: the Wake-on-LAN capture needs root (network namespaces); CI runs as root");
        return;
    }
    let id = std::process::id() % 100_000;
    let (s, r) = (format!("pvwol-s{id}"), format!("pvwol-r{id}"));
    let (vs, vr) = (format!("pvws{id}"), format!("pvwr{id}"));
    ip(&["netns", "add", &s]);
    let _guard = Netns(vec![s.clone(), r.clone()]);
    ip(&["netns", "add", &r]);
    ip(&["link", "add", &vs, "type", "veth", "peer", "name", &vr]);
    ip(&["link", "set", &vs, "netns", &s]);
    ip(&["link", "set", &vr, "netns", &r]);
    ip(&["-n", &s, "addr", "add", "10.77.0.1/24", "dev", &vs]);
    ip(&["-n", &r, "addr", "add", "10.77.0.2/24", "dev", &vr]);
    for (ns, dev) in [(&s, &vs), (&r, &vr)] {
        ip(&["-n", ns, "link", "set", dev, "up"]);
        ip(&["-n", ns, "link", "set", "lo", "up"]);
    }

    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let receiver = in_netns(&r, move || {
        let sock = std::net::UdpSocket::bind("0.0.0.0:9").unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        ready_tx.send(()).unwrap();
        let mut buf = [0u8; 1500];
        let (n, from) = sock.recv_from(&mut buf).expect("magic packet within 5 s");
        (buf[..n].to_vec(), from)
    });
    ready_rx.recv().unwrap();
    let mac: MacAddr = "52:54:00:ab:cd:ef".parse().unwrap();
    // Built the way the appliance builds it: from the config and the machine's spec.
    let drivers = PowerDrivers::new(
        PowerConfig {
            wol: WolConfig {
                target: "255.255.255.255:9".parse().unwrap(),
                interface: None,
            },
            endpoints: BTreeMap::new(),
        },
        Some(vs.clone()), // the appliance's `interface`
    );
    let sender = in_netns(&s, move || {
        let d = drivers.driver_for(mac, Some(&PowerSpec::Wol {})).unwrap();
        futures::executor::block_on(d.power(PowerAction::On))
    });
    let outcome = sender.join().unwrap().expect("magic packet sent");
    assert_eq!(outcome.status, OutcomeStatus::Done);
    let (bytes, from) = receiver.join().unwrap();
    let mut want = vec![0xFF; 6];
    for _ in 0..16 {
        want.extend_from_slice(&[0x52, 0x54, 0x00, 0xab, 0xcd, 0xef]);
    }
    assert_eq!(bytes, want, "6 x 0xFF then the MAC 16 times");
    assert_eq!(bytes, magic_packet(mac).to_vec());
    assert_eq!(from.ip().to_string(), "10.77.0.1", "sent on the chosen interface");
    // It can only switch on.
    let wol = WakeOnLan {
        mac,
        target: "127.0.0.1:9".parse().unwrap(),
        interface: None,
    };
    assert!(matches!(
        futures::executor::block_on(wol.power(PowerAction::Off)),
        Err(PowerError::Unsupported { .. })
    ));
}

// ------------------------------------------------------------- fake HTTP peers

#[derive(Debug, Clone, PartialEq)]
struct Seen {
    method: String,
    path: String,
    auth: String,
    content_type: String,
    body: String,
}

type Log = Arc<Mutex<Vec<Seen>>>;
type Answer = fn(&Method, &str) -> (StatusCode, Value);

async fn record(State((log, answer)): State<(Log, Answer)>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body: Bytes = axum::body::to_bytes(body, 1 << 20).await.unwrap();
    let h = |n: header::HeaderName| {
        parts
            .headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    log.lock().unwrap().push(Seen {
        method: parts.method.to_string(),
        path: parts.uri.path().to_string(),
        auth: h(header::AUTHORIZATION),
        content_type: h(header::CONTENT_TYPE),
        body: String::from_utf8_lossy(&body).into(),
    });
    let (st, v) = answer(&parts.method, parts.uri.path());
    if st == StatusCode::NO_CONTENT {
        return st.into_response();
    }
    (st, axum::Json(v)).into_response()
}

async fn fake(answer: Answer) -> (SocketAddr, Log) {
    let log: Log = Arc::default();
    let app = Router::new().fallback(record).with_state((log.clone(), answer));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await });
    (addr, log)
}

fn endpoint(addr: SocketAddr, secret: &str, dir: &std::path::Path) -> PowerEndpoint {
    let f = dir.join(format!("secret-{}", addr.port()));
    std::fs::write(&f, format!("{secret}\n")).unwrap();
    PowerEndpoint {
        url: format!("http://{addr}"),
        secret_file: f,
        ca_file: None,
        insecure: false,
    }
}

fn take(log: &Log) -> Vec<Seen> {
    std::mem::take(&mut *log.lock().unwrap())
}

const PVE_VM: &str = "/api2/json/nodes/pve1/qemu/101";

fn proxmox_answer(m: &Method, path: &str) -> (StatusCode, Value) {
    match (m.as_str(), path.strip_prefix(PVE_VM)) {
        ("GET", Some("/status/current")) => (
            StatusCode::OK,
            json!({"data": {"status": "running", "vmid": 101}}),
        ),
        ("GET", Some("/config")) => (
            StatusCode::OK,
            json!({"data": {"boot": "order=scsi0;ide2;net0", "name": "talos-1"}}),
        ),
        ("POST", Some(p)) if p.starts_with("/status/") => (StatusCode::OK, json!({"data": "UPID:pve1:0001"})),
        ("PUT", Some("/config")) => (StatusCode::OK, json!({"data": null})),
        _ => (StatusCode::NOT_IMPLEMENTED, json!({"errors": "unexpected call"})),
    }
}

#[tokio::test]
async fn proxmox_calls_paths_methods_auth_and_bodies() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, log) = fake(proxmox_answer).await;
    let secret = "root@pam!provisioner=8f4a1c2e-0000-4000-8000-123456789abc";
    let ep = endpoint(addr, secret, dir.path());
    let pve = Proxmox::new(&ep, "pve1".into(), 101).unwrap();
    let auth = format!("PVEAPIToken={secret}");

    for (action, verb) in [(PowerAction::On, "start"), (PowerAction::Off, "stop")] {
        let o = pve.power(action).await.unwrap();
        assert_eq!(o.status, OutcomeStatus::Done);
        let seen = take(&log);
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].method, "POST");
        assert_eq!(seen[0].path, format!("{PVE_VM}/status/{verb}"));
        assert_eq!(seen[0].auth, auth);
        assert_eq!(seen[0].body, "");
    }
    // Cycle: a running VM is reset.
    pve.power(PowerAction::Cycle).await.unwrap();
    let seen: Vec<(String, String)> = take(&log).into_iter().map(|s| (s.method, s.path)).collect();
    assert_eq!(
        seen,
        [
            ("GET".into(), format!("{PVE_VM}/status/current")),
            ("POST".into(), format!("{PVE_VM}/status/reset"))
        ]
    );
    // Network boot next: network devices move to the front, disks stay after them.
    let o = pve.netboot_next().await.unwrap();
    assert_eq!(o.status, OutcomeStatus::Done, "{}", o.detail);
    let seen = take(&log);
    assert_eq!(
        (seen[0].method.as_str(), seen[0].path.as_str()),
        ("GET", format!("{PVE_VM}/config").as_str())
    );
    assert_eq!(seen[1].method, "PUT");
    assert_eq!(seen[1].path, format!("{PVE_VM}/config"));
    assert_eq!(seen[1].content_type, "application/x-www-form-urlencoded");
    assert_eq!(seen[1].body, "boot=order%3Dnet0%3Bscsi0%3Bide2");
    assert!(seen.iter().all(|s| s.auth == auth));
}

#[tokio::test]
async fn proxmox_errors_name_the_call_not_the_secret() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, _log) = fake(|_, _| {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({"errors": "VM 101 not running"}),
        )
    })
    .await;
    let ep = endpoint(addr, "root@pam!p=supersecret", dir.path());
    let err = Proxmox::new(&ep, "pve1".into(), 101)
        .unwrap()
        .power(PowerAction::On)
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("status/start") && msg.contains("500"), "{msg}");
    assert!(!msg.contains("supersecret"), "{msg}");
    // Unreachable endpoint: a clear upstream error, no panic.
    let dead = PowerEndpoint {
        url: "http://127.0.0.1:1".into(),
        ..ep
    };
    assert!(matches!(
        Proxmox::new(&dead, "pve1".into(), 101)
            .unwrap()
            .power(PowerAction::On)
            .await,
        Err(PowerError::Upstream { .. })
    ));
}

const SYSTEM: &str = "/redfish/v1/Systems/1";

fn redfish_answer(m: &Method, path: &str) -> (StatusCode, Value) {
    match (m.as_str(), path) {
        ("GET", SYSTEM) => (
            StatusCode::OK,
            json!({"Id": "1", "PowerState": "On", "Actions": {"#ComputerSystem.Reset": {
                "target": "/redfish/v1/Systems/1/Actions/ComputerSystem.Reset"}}}),
        ),
        ("POST", "/redfish/v1/Systems/1/Actions/ComputerSystem.Reset") => {
            (StatusCode::NO_CONTENT, Value::Null)
        }
        ("PATCH", SYSTEM) => (StatusCode::OK, json!({})),
        _ => (StatusCode::NOT_IMPLEMENTED, json!({})),
    }
}

#[tokio::test]
async fn redfish_calls_paths_methods_auth_and_bodies() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, log) = fake(redfish_answer).await;
    let ep = endpoint(addr, "admin:s3cret", dir.path());
    let rf = Redfish::new(&ep, SYSTEM.into()).unwrap();
    // base64("admin:s3cret")
    let auth = "Basic YWRtaW46czNjcmV0";
    for (action, reset) in [
        (PowerAction::On, "On"),
        (PowerAction::Off, "ForceOff"),
        (PowerAction::Cycle, "ForceRestart"),
    ] {
        rf.power(action).await.unwrap();
        let seen = take(&log);
        assert_eq!(seen.len(), 2, "{seen:?}");
        assert_eq!((seen[0].method.as_str(), seen[0].path.as_str()), ("GET", SYSTEM));
        assert_eq!(seen[1].method, "POST");
        assert_eq!(seen[1].path, "/redfish/v1/Systems/1/Actions/ComputerSystem.Reset");
        assert_eq!(seen[1].content_type, "application/json");
        assert_eq!(
            serde_json::from_str::<Value>(&seen[1].body).unwrap(),
            json!({"ResetType": reset})
        );
        assert!(seen.iter().all(|s| s.auth == auth), "{seen:?}");
    }
    rf.netboot_next().await.unwrap();
    let seen = take(&log);
    assert_eq!(
        (seen[0].method.as_str(), seen[0].path.as_str()),
        ("PATCH", SYSTEM)
    );
    assert_eq!(
        serde_json::from_str::<Value>(&seen[0].body).unwrap(),
        json!({"Boot": {"BootSourceOverrideTarget": "Pxe", "BootSourceOverrideEnabled": "Once"}})
    );
    assert_eq!(seen[0].auth, auth);
    assert!(
        Redfish::new(&ep, "/etc/passwd".into()).is_err(),
        "system must be a Redfish path"
    );
}

#[tokio::test]
async fn redfish_cycle_of_a_powered_off_system_switches_it_on() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, log) = fake(|m, p| match (m.as_str(), p) {
        ("GET", SYSTEM) => (StatusCode::OK, json!({"PowerState": "Off"})),
        _ => (StatusCode::OK, json!({})),
    })
    .await;
    let rf = Redfish::new(&endpoint(addr, "admin:x", dir.path()), SYSTEM.into()).unwrap();
    rf.power(PowerAction::Cycle).await.unwrap();
    let seen = take(&log);
    // No target advertised: the schema's default action path.
    assert_eq!(seen[1].path, "/redfish/v1/Systems/1/Actions/ComputerSystem.Reset");
    assert_eq!(
        serde_json::from_str::<Value>(&seen[1].body).unwrap(),
        json!({"ResetType": "On"})
    );
}

#[tokio::test]
async fn reimage_of_a_proxmox_node_sets_netboot_and_power_cycles() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, log) = fake(proxmox_answer).await;
    let mut power = common::api::loopback_power();
    power
        .endpoints
        .insert("pve".into(), endpoint(addr, "root@pam!p=x", dir.path()));
    let r = api_rig(None, power);
    boot(&r.service, BIOS_MAC);
    let a = Some(r.admin.as_str());
    let (st, v) = call(
        &r.app,
        "PATCH",
        &format!("/api/v1/machines/{BIOS_MAC}"),
        a,
        Some(json!({"power": {"driver": "proxmox", "endpoint": "pve", "node": "pve1", "vmid": 101}})),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let (st, v) = call(
        &r.app,
        "POST",
        &format!("/api/v1/machines/{BIOS_MAC}/reimage"),
        a,
        None,
    )
    .await;
    assert_eq!(st, StatusCode::ACCEPTED);
    let steps: Vec<(&str, &str)> = v["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["step"].as_str().unwrap(), s["status"].as_str().unwrap()))
        .collect();
    assert_eq!(
        steps,
        [
            ("state", "done"),
            ("netboot_next", "done"),
            ("power_cycle", "done")
        ],
        "{v}"
    );
    let calls: Vec<String> = take(&log)
        .into_iter()
        .map(|s| format!("{} {}", s.method, s.path))
        .collect();
    assert_eq!(
        calls,
        [
            format!("GET {PVE_VM}/config"),
            format!("PUT {PVE_VM}/config"),
            format!("GET {PVE_VM}/status/current"),
            format!("POST {PVE_VM}/status/reset"),
        ]
    );
    // The next network boot installs again.
    assert!(boot(&r.service, BIOS_MAC).contains("kernel"));
}
