//! The README's try-it command acts on no network: the real binary runs
//! `provisioner serve --unprivileged` with the embedded defaults and the repository's
//! own profiles/ images/ infra/ gitops/, inside a fresh network namespace whose only
//! way out is a veth (default route) into a second namespace this test creates.
//! nftables counters on the namespace's output hook count every packet the appliance
//! sends: none may go to a node address of infra/ (192.168.1.x) or leave at all. The
//! shipped clusters carry placeholder MACs, so they are not armed.
//!
//! The control: the same data with real-looking MACs and the node addresses moved
//! into the test's own subnet is armed, and the same counters see the bootstrap
//! supervisor dial the nodes. (So the counters work, and arming is what changes.)

use crate::common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::daemon::BIN;

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

fn sh(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The counters of table `inet quiet` in `ns`: (packets to 192.168.1.0/24, packets
/// to the control subnet's node addresses, packets out of anything but `lo`).
fn counters(ns: &str) -> (u64, u64, u64) {
    let text = sh(
        "ip",
        &["netns", "exec", ns, "nft", "list", "table", "inet", "quiet"],
    );
    let get = |comment: &str| -> u64 {
        let line = text
            .lines()
            .find(|l| l.contains(&format!("comment \"{comment}\"")))
            .unwrap_or_else(|| panic!("no rule {comment} in:\n{text}"));
        let rest = line.split("counter packets ").nth(1).unwrap();
        rest.split_whitespace().next().unwrap().parse().unwrap()
    };
    (get("homelab"), get("control-nodes"), get("egress"))
}

/// Namespace `a` (the appliance: veth 10.201.N.2/24, default route via .1, IPv6 off,
/// nftables counters) and `b` (the veth's other end, 10.201.N.1).
fn namespaces(tag: &str, n: u8) -> (Netns, String) {
    let id = std::process::id() % 100_000;
    let (a, b) = (format!("pvq{tag}a{id}"), format!("pvq{tag}b{id}"));
    let (va, vb) = (format!("pvq{tag}a{id}"), format!("pvq{tag}b{id}"));
    sh("ip", &["netns", "add", &a]);
    let guard = Netns(vec![a.clone(), b.clone()]);
    sh("ip", &["netns", "add", &b]);
    sh("ip", &["link", "add", &va, "type", "veth", "peer", "name", &vb]);
    sh("ip", &["link", "set", &va, "netns", &a]);
    sh("ip", &["link", "set", &vb, "netns", &b]);
    // Kernel-made IPv6 traffic (router solicitations, DAD) would blur the count.
    for ns in [&a, &b] {
        sh(
            "ip",
            &[
                "netns",
                "exec",
                ns,
                "sysctl",
                "-qw",
                "net.ipv6.conf.all.disable_ipv6=1",
            ],
        );
        sh(
            "ip",
            &[
                "netns",
                "exec",
                ns,
                "sysctl",
                "-qw",
                "net.ipv6.conf.default.disable_ipv6=1",
            ],
        );
    }
    sh(
        "ip",
        &["-n", &a, "addr", "add", &format!("10.201.{n}.2/24"), "dev", &va],
    );
    sh(
        "ip",
        &["-n", &b, "addr", "add", &format!("10.201.{n}.1/24"), "dev", &vb],
    );
    for (ns, dev) in [(&a, &va), (&b, &vb)] {
        sh("ip", &["-n", ns, "link", "set", dev, "up"]);
        sh("ip", &["-n", ns, "link", "set", "lo", "up"]);
    }
    sh(
        "ip",
        &[
            "-n",
            &a,
            "route",
            "add",
            "default",
            "via",
            &format!("10.201.{n}.1"),
        ],
    );
    let rules = format!(
        "table inet quiet {{\n  chain out {{\n    type filter hook output priority 0; policy accept;\n    \
         ip daddr 192.168.1.0/24 counter comment \"homelab\"\n    \
         ip daddr 10.201.{n}.150-10.201.{n}.170 counter comment \"control-nodes\"\n    \
         oifname != \"lo\" counter comment \"egress\"\n  }}\n}}\n"
    );
    let file = std::env::temp_dir().join(format!("pvq{tag}{id}.nft"));
    std::fs::write(&file, rules).unwrap();
    sh("ip", &["netns", "exec", &a, "nft", "-f", file.to_str().unwrap()]);
    let _ = std::fs::remove_file(&file);
    (guard, a)
}

/// `provisioner serve --unprivileged` in `ns` from `cwd` (where profiles/ images/
/// infra/ gitops/ are), state under `home`; returns once it says it is ready, with
/// the lines it logged.
fn serve(ns: &str, cwd: &Path, home: &Path) -> (Killed, mpsc::Receiver<String>) {
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, BIN, "serve", "--unprivileged"])
        .current_dir(cwd)
        .env("HOME", home)
        .env("NO_COLOR", "1")
        .env("PROVISIONER_LOG", "info")
        .env_remove("PROVISIONER_CONFIG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ip netns exec provisioner");
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
            .unwrap_or_else(|_| panic!("serve did not get ready; it said:\n{}", seen.join("\n")));
        let ready = line.contains("provisioner ready");
        seen.push(line);
        if ready {
            break;
        }
    }
    let (tx2, rx2) = mpsc::channel();
    for l in seen {
        tx2.send(l).unwrap();
    }
    std::thread::spawn(move || {
        for l in rx {
            if tx2.send(l).is_err() {
                break;
            }
        }
    });
    (child, rx2)
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn copy_tree(from: &Path, to: &Path, edit: &dyn Fn(String) -> String) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        let dest = to.join(p.file_name().unwrap());
        if p.is_dir() {
            copy_tree(&p, &dest, edit);
        } else if let Ok(text) = std::fs::read_to_string(&p) {
            std::fs::write(&dest, edit(text)).unwrap();
        } else {
            std::fs::copy(&p, &dest).unwrap();
        }
    }
}

fn ready_to_run() -> bool {
    if !nix::unistd::geteuid().is_root() {
        println!("SKIPPED: network namespaces need root; CI runs as root");
        return false;
    }
    assert!(
        Command::new("nft").arg("--version").output().is_ok(),
        "nft not found: run tests/setup (tests/packages.txt lists nftables)"
    );
    true
}

#[test]
fn try_it_command_with_the_shipped_data_sends_nothing() {
    if !ready_to_run() {
        return;
    }
    let (_ns, a) = namespaces("x", 1);
    let home = tempfile::tempdir().unwrap();
    let (_daemon, log) = serve(&a, &repo(), home.path());
    // Longer than the supervisor's first poll and its first retry (5 s each).
    std::thread::sleep(Duration::from_secs(12));
    let lines: Vec<String> = log.try_iter().collect();
    let said = lines.join("\n");
    let (homelab, _, egress) = counters(&a);
    assert_eq!(homelab, 0, "packets to 192.168.1.x; the appliance said:\n{said}");
    assert_eq!(
        egress, 0,
        "packets left the namespace; the appliance said:\n{said}"
    );
    // It says why, once per cluster, and generated no secrets.
    for c in ["genmachine", "beelink"] {
        assert!(
            lines
                .iter()
                .any(|l| l.contains(c) && l.contains("cluster not armed: replace the placeholder MACs")),
            "{said}"
        );
    }
    assert!(
        !said.contains("generated the Talos secrets bundle") && !said.contains("generated k0s CA"),
        "{said}"
    );
    let secrets = home.path().join(".local/state/provisioner/secrets");
    let files: Vec<_> = walk(&secrets);
    assert!(files.is_empty(), "secrets written: {files:?}");

    // The counters do count: one datagram out of the namespace (bash's /dev/udp).
    sh(
        "ip",
        &[
            "netns",
            "exec",
            &a,
            "bash",
            "-c",
            "echo x > /dev/udp/10.201.1.1/9",
        ],
    );
    assert!(counters(&a).2 >= 1, "the egress counter counts nothing");
}

#[test]
fn the_same_data_armed_dials_its_nodes() {
    if !ready_to_run() {
        return;
    }
    let (_ns, a) = namespaces("y", 2);
    let site = tempfile::tempdir().unwrap();
    // Real-looking MACs (a vendor OUI) and node addresses inside the test's subnet.
    let edit = |t: String| {
        t.replace("02:00:00:00:0", "bc:24:11:00:0")
            .replace("192.168.1.", "10.201.2.")
    };
    for d in ["profiles", "images", "infra", "gitops"] {
        copy_tree(&repo().join(d), &site.path().join(d), &edit);
    }
    let home = tempfile::tempdir().unwrap();
    let (_daemon, log) = serve(&a, site.path(), home.path());
    let deadline = Instant::now() + Duration::from_secs(30);
    while counters(&a).1 == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(250));
    }
    let said: Vec<String> = log.try_iter().collect();
    let (homelab, nodes, _) = counters(&a);
    assert!(
        nodes > 0,
        "an armed cluster's nodes were not dialled:\n{}",
        said.join("\n")
    );
    assert_eq!(homelab, 0);
    assert!(
        said.iter()
            .any(|l| l.contains("generated the Talos secrets bundle")),
        "{}",
        said.join("\n")
    );
    assert!(
        !said.iter().any(|l| l.contains("not armed")),
        "{}",
        said.join("\n")
    );
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
