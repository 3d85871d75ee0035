//! Fake Talos control-plane nodes on loopback (127.0.0.11, .12, .13 — each its own
//! address, so the server certificate's IP SAN is checked), sharing one FakeCluster.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use provisioner::os::talos::api::{ClusterIdentity, TonicTalos};
use provisioner::testing::fake_apid::{self, FakeCluster};
use tokio_util::sync::CancellationToken;

use super::pki::OsCa;

pub struct TalosLab {
    pub ca: OsCa,
    pub cluster: FakeCluster,
    /// (node IP, where its apid listens)
    pub nodes: Vec<(IpAddr, SocketAddr)>,
    shutdown: CancellationToken,
    /// Cancelled when the nodes start answering (see [`Self::open`]).
    up: CancellationToken,
}

impl TalosLab {
    /// `n` nodes; `Bootstrap` refused with FailedPrecondition `not_ready` times.
    pub async fn start(n: u8, not_ready: u32, kubeconfig: &[u8]) -> Self {
        let ca = OsCa::new();
        let ips: Vec<IpAddr> = (0..n).map(|i| IpAddr::from([127, 0, 0, 11 + i])).collect();
        let names: Vec<(IpAddr, String)> = ips
            .iter()
            .enumerate()
            .map(|(i, ip)| (*ip, format!("talos-{}", i + 1)))
            .collect();
        let refs: Vec<(IpAddr, &str)> = names.iter().map(|(ip, h)| (*ip, h.as_str())).collect();
        let cluster = FakeCluster::new(&refs, not_ready, kubeconfig);
        let shutdown = CancellationToken::new();
        let mut nodes = Vec::new();
        for ip in ips {
            let listener = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
            nodes.push((ip, listener.local_addr().unwrap()));
            let tls = ca.node_tls(ip);
            let (cluster, token) = (cluster.clone(), shutdown.clone());
            tokio::spawn(async move { fake_apid::serve(ip, listener, &tls, cluster, token).await });
        }
        let up = CancellationToken::new();
        up.cancel();
        Self {
            ca,
            cluster,
            nodes,
            shutdown,
            up,
        }
    }

    /// `n` nodes whose apids all listen on one port (each on its own loopback
    /// address), as real nodes do on 50000, with TLS from `ca`; etcd not bootstrapped.
    pub async fn start_on_one_port(ca: OsCa, n: u8, kubeconfig: &[u8]) -> Self {
        let lab = Self::booting_on_one_port(ca, n, kubeconfig).await;
        lab.open();
        lab
    }

    /// Like [`Self::start_on_one_port`], but the nodes are still booting: their
    /// ports are bound (connections wait in the backlog, TLS unanswered) until
    /// [`Self::open`].
    pub async fn booting_on_one_port(ca: OsCa, n: u8, kubeconfig: &[u8]) -> Self {
        let ips: Vec<IpAddr> = (0..n).map(|i| IpAddr::from([127, 0, 0, 11 + i])).collect();
        let names: Vec<(IpAddr, String)> = ips
            .iter()
            .enumerate()
            .map(|(i, ip)| (*ip, format!("talos-{}", i + 1)))
            .collect();
        let refs: Vec<(IpAddr, &str)> = names.iter().map(|(ip, h)| (*ip, h.as_str())).collect();
        let cluster = FakeCluster::new(&refs, 0, kubeconfig);
        // The first node picks a free port; the others may find it taken: retry.
        let listeners = 'found: {
            for _ in 0..20 {
                let first = tokio::net::TcpListener::bind((ips[0], 0)).await.unwrap();
                let port = first.local_addr().unwrap().port();
                let mut all = vec![first];
                for ip in &ips[1..] {
                    match tokio::net::TcpListener::bind((*ip, port)).await {
                        Ok(l) => all.push(l),
                        Err(_) => break,
                    }
                }
                if all.len() == ips.len() {
                    break 'found all;
                }
            }
            panic!("no port free on every loopback node address");
        };
        let shutdown = CancellationToken::new();
        let up = CancellationToken::new();
        let mut nodes = Vec::new();
        for (ip, listener) in ips.into_iter().zip(listeners) {
            nodes.push((ip, listener.local_addr().unwrap()));
            let tls = ca.node_tls(ip);
            let (cluster, token, up) = (cluster.clone(), shutdown.clone(), up.clone());
            tokio::spawn(async move {
                up.cancelled().await;
                fake_apid::serve(ip, listener, &tls, cluster, token).await
            });
        }
        Self {
            ca,
            cluster,
            nodes,
            shutdown,
            up,
        }
    }

    /// The nodes have booted: their apids answer from now on.
    pub fn open(&self) {
        self.up.cancel();
    }

    /// The port every node listens on (see [`Self::start_on_one_port`]).
    pub fn port(&self) -> u16 {
        self.nodes[0].1.port()
    }

    pub fn ips(&self) -> Vec<IpAddr> {
        self.nodes.iter().map(|(ip, _)| *ip).collect()
    }

    /// A client presenting `id`, dialling each node's real listener.
    pub fn client(&self, id: &ClusterIdentity) -> TonicTalos {
        let mut c = TonicTalos::new(id, 50000, Duration::from_secs(2)).unwrap();
        for (ip, addr) in &self.nodes {
            c = c.dial_override(*ip, *addr);
        }
        c
    }
}

impl Drop for TalosLab {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}
