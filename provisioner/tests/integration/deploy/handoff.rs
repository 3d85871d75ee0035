//! The installed package hands a cluster off: the packaged `infra/genmachine.yaml`
//! re-addressed onto loopback addresses of the booted container's own network
//! namespace (127.0.0.11-13, the VIP 127.0.0.10; never the homelab's 192.168.x),
//! where this test runs the fakes: three Talos apids on port 50000 with
//! certificates from the OS CA of the bundle the service generated, and the fake
//! Kubernetes API (127.0.0.20:6443, the kubeconfig the nodes hand out) with the
//! scripted Argo CD controller over the packaged `/etc/provisioner/gitops`. The
//! sockets are bound inside that namespace (setns on a short-lived thread) and
//! served from this process.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use provisioner::testing::fake_apid::{self, FakeCluster};
use provisioner::testing::fake_argo::FakeArgo;
use provisioner::testing::fake_kube::FakeKube;
use tokio_util::sync::CancellationToken;

use crate::common::pki::OsCa;

/// The apid addresses and the API server's, inside the container.
pub const NODES: [[u8; 4]; 3] = [[127, 0, 0, 11], [127, 0, 0, 12], [127, 0, 0, 13]];
const KUBE: SocketAddr = SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 20)), 6443);

/// `infra/genmachine.yaml` with its addresses moved onto the container's loopback.
pub fn readdress_infra(text: &str) -> String {
    // .150-.153 (VIP and nodes) → 127.0.0.10-13; the gateway/nameserver .1 → 127.0.0.1.
    // The placeholder MACs (02:…, not armed) become real-looking ones, as an operator
    // replaces them with the boot NICs' MACs: only an armed cluster is bootstrapped.
    text.replace("02:00:00:00:01:0", "52:54:00:00:01:0")
        .replace("192.168.1.15", "127.0.0.1")
        .replace("192.168.1.1", "127.0.0.1")
        .replace(
            "https://talos-cluster.genmachine.fredcorp.com:6443",
            "https://127.0.0.10:6443",
        )
}

/// The running fakes; stopped on drop.
pub struct Fakes {
    pub kube: FakeKube,
    pub cluster: FakeCluster,
    shutdown: CancellationToken,
    _rt: tokio::runtime::Runtime,
}

impl Drop for Fakes {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Binds `addrs` inside the network namespace of process `leader`.
fn bind_in_netns(leader: u32, addrs: Vec<SocketAddr>) -> Vec<std::net::TcpListener> {
    std::thread::spawn(move || {
        let ns = std::fs::File::open(format!("/proc/{leader}/ns/net")).unwrap();
        nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        addrs
            .iter()
            .map(|a| {
                let l = std::net::TcpListener::bind(a).unwrap_or_else(|e| panic!("bind {a}: {e}"));
                l.set_nonblocking(true).unwrap();
                l
            })
            .collect()
    })
    .join()
    .unwrap()
}

/// Starts the fakes in `leader`'s network namespace, for the cluster whose bundle
/// the packaged service generated (`os_ca`).
pub fn start(leader: u32, os_ca: OsCa, gitops: &Path) -> Fakes {
    provisioner_test_crypto();
    let mut addrs: Vec<SocketAddr> = NODES
        .iter()
        .map(|ip| SocketAddr::new(IpAddr::from(*ip), 50000))
        .collect();
    addrs.push(KUBE);
    let mut listeners = bind_in_netns(leader, addrs);
    let kube_listener = listeners.pop().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let shutdown = CancellationToken::new();
    let (kube, cluster) = rt.block_on(async {
        let kube = FakeKube::start_on(tokio::net::TcpListener::from_std(kube_listener).unwrap()).unwrap();
        kube.set_argo(Arc::new(
            FakeArgo::from_tree(gitops, Duration::from_millis(500)).unwrap(),
        ));
        let names: Vec<(IpAddr, String)> = NODES
            .iter()
            .enumerate()
            .map(|(i, ip)| (IpAddr::from(*ip), format!("talos-{}", i + 1)))
            .collect();
        let refs: Vec<(IpAddr, &str)> = names.iter().map(|(ip, h)| (*ip, h.as_str())).collect();
        let cluster = FakeCluster::new(&refs, 0, &kube.kubeconfig());
        for (l, ip) in listeners.into_iter().zip(NODES) {
            let ip = IpAddr::from(ip);
            let tls = os_ca.node_tls(ip);
            let (c, token) = (cluster.clone(), shutdown.clone());
            let l = tokio::net::TcpListener::from_std(l).unwrap();
            tokio::spawn(async move { fake_apid::serve(ip, l, &tls, c, token).await });
        }
        (kube, cluster)
    });
    Fakes {
        kube,
        cluster,
        shutdown,
        _rt: rt,
    }
}

fn provisioner_test_crypto() {
    crate::common::crypto();
}
