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

/// Namespaces `a` (10.213.7.2/24) and `r` (10.213.7.1/24) joined by a veth.
fn segment(id: u32) -> (Netns, String, String, String, String) {
    let (a, r) = (format!("pdoca{id}"), format!("pdocr{id}"));
    let (va, vr) = (format!("pdoca{id}"), format!("pdocr{id}"));
    sh(&["ip", "netns", "add", &a]);
    let guard = Netns(vec![a.clone(), r.clone()]);
    sh(&["ip", "netns", "add", &r]);
    sh(&["ip", "link", "add", &va, "type", "veth", "peer", "name", &vr]);
    sh(&["ip", "link", "set", &va, "netns", &a]);
    sh(&["ip", "link", "set", &vr, "netns", &r]);
    sh(&["ip", "-n", &a, "addr", "add", "10.213.7.2/24", "dev", &va]);
    sh(&["ip", "-n", &r, "addr", "add", "10.213.7.1/24", "dev", &vr]);
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
             dhcp:\n  mode: full\n  force: true\n  probe_secs: 1\n  subnet: 10.213.7.0/24\n  \
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
    let id = std::process::id() % 100_000;
    let (_ns, a, r, va, vr) = segment(id);
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
