//! `provisioner doctor` in a lab segment the test builds: namespace `a` holds the
//! appliance (`serve` in full DHCP mode, `dhcp.force` so it starts) and runs doctor;
//! namespace `r`, across a veth, runs a rogue DHCP server (dnsmasq, tests/packages.txt).
//! Doctor must name the rogue server, see its own listeners answer, report the images
//! the repository's profiles need as missing, and exit non-zero; the JSON document
//! has the documented shape. The control: with the rogue stopped, the DHCP check is
//! clean, so it was the rogue that was found.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::common::daemon::BIN;

struct Netns(Vec<String>);

impl Drop for Netns {
    fn drop(&mut self) {
        for n in &self.0 {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
    }
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn sh(args: &[&str]) {
    let o = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Namespaces `a` (10.213.N.2/24) and `r` (10.213.N.1/24) joined by a veth.
fn segment(tag: &str, n: u8) -> (Netns, String, String, String, String) {
    let id = std::process::id() % 100_000;
    let (a, r) = (format!("pd{tag}a{id}"), format!("pd{tag}r{id}"));
    let (va, vr) = (a.clone(), r.clone());
    sh(&["ip", "netns", "add", &a]);
    let guard = Netns(vec![a.clone(), r.clone()]);
    sh(&["ip", "netns", "add", &r]);
    sh(&["ip", "link", "add", &va, "type", "veth", "peer", "name", &vr]);
    sh(&["ip", "link", "set", &va, "netns", &a]);
    sh(&["ip", "link", "set", &vr, "netns", &r]);
    sh(&[
        "ip",
        "-n",
        &a,
        "addr",
        "add",
        &format!("10.213.{n}.2/24"),
        "dev",
        &va,
    ]);
    sh(&[
        "ip",
        "-n",
        &r,
        "addr",
        "add",
        &format!("10.213.{n}.1/24"),
        "dev",
        &vr,
    ]);
    for (ns, dev) in [(&a, &va), (&r, &vr)] {
        sh(&["ip", "-n", ns, "link", "set", dev, "up"]);
        sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
    }
    (guard, a, r, va, vr)
}

/// dnsmasq answering DHCP only (`--port=0`: no DNS) on the rogue side. `--no-ping`:
/// by default dnsmasq pings an address for up to 3 s before offering it
/// (dnsmasq(8), `--no-ping`), longer than the test's probe window.
fn rogue(ns: &str, dev: &str, dir: &Path) -> Killed {
    let child = Command::new("ip")
        .args(["netns", "exec", ns, "dnsmasq", "--keep-in-foreground"])
        .args([
            "--conf-file=/dev/null",
            "--port=0",
            "--bind-interfaces",
            "--user=root",
            "--no-ping",
        ])
        .arg(format!("--interface={dev}"))
        .arg("--dhcp-range=10.213.7.100,10.213.7.150,1h")
        .arg(format!("--dhcp-leasefile={}", dir.join("rogue.leases").display()))
        .arg(format!("--pid-file={}", dir.join("rogue.pid").display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("dnsmasq (tests/packages.txt: dnsmasq-base)");
    // dnsmasq binds before it serves; give it a moment to be up.
    std::thread::sleep(Duration::from_millis(500));
    Killed(child)
}

fn config(dir: &Path, dev: &str) -> PathBuf {
    let cfg = dir.join("provisioner.yaml");
    let r = repo();
    std::fs::write(
        &cfg,
        format!(
            "state_dir: {d}/state\nprofiles_dir: {r}/profiles\nimages_dir: {r}/images\ninfra_dir: {r}/infra\n\
             gitops_dir: {r}/gitops\ntftp_root: {d}\nserver_ip: 10.213.7.2\ninterface: {dev}\n\
             http_listen: 0.0.0.0:8080\ntftp_listen: 0.0.0.0:6969\napi_listen: 127.0.0.1:9090\n\
             bootstrap: {{ enabled: false }}\n\
             dhcp:\n  mode: full\n  pool_policy: any\n  force: true\n  probe_secs: 1\n  subnet: 10.213.7.0/24\n  \
             pool: {{ start: 10.213.7.200, end: 10.213.7.220 }}\n",
            d = dir.display(),
            r = r.display()
        ),
    )
    .unwrap();
    cfg
}

fn serve(ns: &str, cfg: &Path) -> Killed {
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, BIN, "serve", "--config"])
        .arg(cfg)
        .env("PROVISIONER_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let child = Killed(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("serve did not get ready:\n{}", seen.join("\n")));
        let ready = line.contains("provisioner ready");
        seen.push(line);
        if ready {
            return child;
        }
    }
}

fn doctor(ns: &str, cfg: &Path) -> (bool, serde_json::Value) {
    let o = Command::new("ip")
        .args([
            "netns",
            "exec",
            ns,
            BIN,
            "doctor",
            "--json",
            "--dhcp-wait",
            "2",
            "--config",
        ])
        .arg(cfg)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    let v: serde_json::Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{e}: {text}\n{}", String::from_utf8_lossy(&o.stderr)));
    (o.status.success(), v)
}

fn findings<'a>(v: &'a serde_json::Value, check: &str) -> Vec<&'a serde_json::Value> {
    v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["check"] == check)
        .collect()
}

#[test]
fn finds_the_rogue_dhcp_server_and_the_missing_images() {
    if !nix::unistd::geteuid().is_root() {
        println!("SKIPPED: doctor's lab segment needs root (network namespaces); CI runs as root");
        return;
    }
    let (_ns, a, r, va, vr) = segment("d", 7);
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path(), &va);
    let rogue_dns = rogue(&r, &vr, tmp.path());
    let _serve = serve(&a, &cfg);

    let (ok, v) = doctor(&a, &cfg);
    assert!(!ok, "doctor must fail with a rogue DHCP server: {v:#}");
    // The JSON shape: ok, counts, findings with check/severity/message (+ fix).
    assert_eq!(v["ok"], false);
    let errors = v["errors"].as_u64().unwrap();
    assert!(errors >= 2, "{v:#}");
    for f in v["findings"].as_array().unwrap() {
        assert!(f["check"].is_string() && f["message"].is_string(), "{f}");
        let sev = f["severity"].as_str().unwrap();
        assert!(["ok", "note", "warning", "error"].contains(&sev), "{f}");
        if sev == "error" {
            assert!(f["fix"].is_string(), "an error without a fix: {f}");
        }
    }
    let counted = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["severity"] == "error")
        .count();
    assert_eq!(counted as u64, errors);

    let dhcp = findings(&v, "dhcp");
    let rogue_found = dhcp
        .iter()
        .find(|f| f["severity"] == "error")
        .unwrap_or_else(|| panic!("no DHCP error: {dhcp:#?}"));
    let msg = rogue_found["message"].as_str().unwrap();
    assert!(msg.contains("10.213.7.1 (offered 10.213.7.1"), "{msg}");
    assert!(rogue_found["fix"].as_str().unwrap().contains("dhcp.mode: proxy"));
    assert!(
        dhcp.iter()
            .any(|f| f["severity"] == "ok"
                && f["message"].as_str().unwrap().contains("this appliance answers")),
        "the appliance's own full-mode server is told apart: {dhcp:#?}"
    );

    // The running appliance's listeners answer where machines are sent.
    let l = findings(&v, "listeners");
    for want in [
        "HTTP boot path answers at 10.213.7.2:8080",
        "API answers at 127.0.0.1:9090",
        "TFTP answers at 10.213.7.2:6969",
    ] {
        assert!(
            l.iter().any(|f| f["severity"] == "ok" && f["message"] == want),
            "{want}: {l:#?}"
        );
    }
    // The shipped clusters are not armed: never dialled.
    let nodes = findings(&v, "nodes");
    assert!(nodes.iter().all(|f| f["severity"] == "note"), "{nodes:#?}");
    assert!(
        nodes
            .iter()
            .any(|f| f["message"].as_str().unwrap().contains("not dialled"))
    );

    // Every profile's image is missing from the fresh cache, named with its users.
    let images = findings(&v, "images");
    let talos = images
        .iter()
        .find(|f| {
            f["message"]
                .as_str()
                .unwrap()
                .starts_with("talos-genmachine-v1.11.6-amd64/kernel-amd64 missing")
        })
        .unwrap_or_else(|| panic!("{images:#?}"));
    assert_eq!(talos["severity"], "error");
    assert!(
        talos["message"]
            .as_str()
            .unwrap()
            .contains("profile genmachine-controlplane"),
        "{talos}"
    );
    assert!(talos["fix"].as_str().unwrap().contains("images pull --all"));
    assert!(images.iter().any(|f| {
        f["message"]
            .as_str()
            .unwrap()
            .starts_with("flatcar-stable-amd64/flatcar_production_pxe.vmlinuz missing")
    }));
    assert!(
        images
            .iter()
            .any(|f| f["message"].as_str().unwrap().starts_with("argocd/install-"))
    );

    // The certificate the running appliance made, the state's disk and clock.
    let cert = findings(&v, "certificate");
    assert_eq!(cert.len(), 1, "{cert:#?}");
    assert_eq!(cert[0]["severity"], "ok", "{cert:#?}");
    let m = cert[0]["message"].as_str().unwrap();
    assert!(
        m.contains("state/tls/api.crt") && m.ends_with("day(s) left"),
        "{m}"
    );
    for check in ["disk", "clock"] {
        assert!(!findings(&v, check).is_empty(), "no {check} finding: {v:#}");
    }

    // The control: without the rogue the DHCP check passes.
    drop(rogue_dns);
    let (_, v) = doctor(&a, &cfg);
    let dhcp = findings(&v, "dhcp");
    assert!(dhcp.iter().all(|f| f["severity"] == "ok"), "{dhcp:#?}");
    assert!(dhcp.iter().any(|f| {
        f["message"]
            .as_str()
            .unwrap()
            .starts_with("no other DHCP server answers")
    }));

    // The human form names each finding and its fix.
    let o = Command::new("ip")
        .args(["netns", "exec", &a, BIN, "doctor", "--dhcp-wait", "0", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(!o.status.success());
    assert!(
        text.contains("[ERROR] images: talos-genmachine-v1.11.6-amd64/kernel-amd64 missing"),
        "{text}"
    );
    assert!(
        text.contains("        fix: `provisioner images pull --all`"),
        "{text}"
    );
}

/// The repository's infra/ armed (real-looking MACs) with its node addresses moved
/// into the test's segment `10.213.N.x`.
fn armed_infra(dir: &Path, n: u8) -> PathBuf {
    let infra = dir.join("infra");
    std::fs::create_dir_all(&infra).unwrap();
    for e in std::fs::read_dir(repo().join("infra")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "yaml") {
            let t = std::fs::read_to_string(&p)
                .unwrap()
                .replace("02:00:00:00:0", "bc:24:11:00:0")
                .replace("192.168.1.", &format!("10.213.{n}."));
            std::fs::write(infra.join(p.file_name().unwrap()), t).unwrap();
        }
    }
    infra
}

/// Listens on each `ip:port` inside `ns` until killed.
fn listeners_in(ns: &str, addrs: &[(&str, u16)]) -> Killed {
    let list: Vec<String> = addrs.iter().map(|(ip, p)| format!("(\"{ip}\",{p})")).collect();
    let script = format!(
        "import socket,sys,time\nss=[]\nfor a in [{}]:\n s=socket.socket()\n s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n \
         s.bind(a)\n s.listen(16)\n ss.append(s)\nprint('up',flush=True)\ntime.sleep(120)\n",
        list.join(",")
    );
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "python3", "-c", &script])
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 (tests/requirements.txt)");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "up");
    Killed(child)
}

/// An armed Talos cluster: talos-1 answers on apid, trustd and the Kubernetes API;
/// talos-2 is up but only apid listens (the others refuse: a firewall or a half-up
/// node); talos-3 does not exist (down, skipped). The armed k0s cluster has no node
/// up: one note, nothing dialled beyond the connect attempts.
#[test]
fn node_ports_are_checked_where_nodes_are_up() {
    if !nix::unistd::geteuid().is_root() {
        println!("SKIPPED: doctor's lab segment needs root (network namespaces); CI runs as root");
        return;
    }
    let (_ns, a, r, _va, vr) = segment("n", 8);
    for ip in ["10.213.8.151/24", "10.213.8.152/24"] {
        sh(&["ip", "-n", &r, "addr", "add", ip, "dev", &vr]);
    }
    let _nodes = listeners_in(
        &r,
        &[
            ("10.213.8.151", 50000),
            ("10.213.8.151", 50001),
            ("10.213.8.151", 6443),
            ("10.213.8.152", 50000),
        ],
    );
    let tmp = tempfile::tempdir().unwrap();
    let infra = armed_infra(tmp.path(), 8);
    let cfg = tmp.path().join("provisioner.yaml");
    let rp = repo();
    std::fs::write(
        &cfg,
        format!(
            "state_dir: {d}/state\nprofiles_dir: {r}/profiles\nimages_dir: {r}/images\ninfra_dir: {i}\n\
             server_ip: 10.213.8.2\n",
            d = tmp.path().display(),
            r = rp.display(),
            i = infra.display()
        ),
    )
    .unwrap();
    let o = Command::new("ip")
        .args([
            "netns",
            "exec",
            &a,
            BIN,
            "doctor",
            "--json",
            "--dhcp-wait",
            "0",
            "--timeout-ms",
            "800",
            "--config",
        ])
        .arg(&cfg)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let nodes = findings(&v, "nodes");
    let msgs: Vec<(&str, &str)> = nodes
        .iter()
        .map(|f| (f["severity"].as_str().unwrap(), f["message"].as_str().unwrap()))
        .collect();
    assert!(
        msgs.contains(&(
            "ok",
            "cluster genmachine, node talos-1 (10.213.8.151): Talos apid 50000, Talos trustd 50001, Kubernetes API 6443 reachable"
        )),
        "{msgs:#?}"
    );
    for port in ["Talos trustd port 50001", "Kubernetes API port 6443"] {
        let f = nodes
            .iter()
            .find(|f| {
                f["severity"] == "error"
                    && f["message"].as_str().unwrap().starts_with(&format!(
                        "cluster genmachine, node talos-2 (10.213.8.152): {port} not reachable"
                    ))
            })
            .unwrap_or_else(|| panic!("{port}: {msgs:#?}"));
        assert!(f["fix"].as_str().unwrap().starts_with("allow TCP"), "{f}");
    }
    assert!(
        !msgs.iter().any(|(_, m)| m.contains("talos-3")),
        "a down node is skipped: {msgs:#?}"
    );
    assert!(
        msgs.contains(&("note", "cluster beelink: no node is up; API ports not checked")),
        "{msgs:#?}"
    );
    assert_eq!(
        nodes.iter().filter(|f| f["severity"] == "error").count(),
        2,
        "{msgs:#?}"
    );
    assert!(!o.status.success());
}
