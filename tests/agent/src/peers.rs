//! How three agents in three VMs agree on etcd state.
//!
//! Real etcd members talk on the peer port (2380); the agents use the same port for a
//! plain-HTTP side channel: `GET /lab/etcd` answers this node's hostname and where etcd
//! was bootstrapped, if anywhere. Each agent polls every other control-plane address
//! (from `lab.peers=` on the kernel command line) once a second: a peer that answers
//! becomes an etcd member (`FakeCluster::add_member`), and a bootstrap seen anywhere
//! is joined (`FakeCluster::mark_bootstrapped`), so `ServiceList` reports etcd Running
//! and `EtcdMemberList` lists every node that is up, as a joined etcd would. The
//! `Bootstrap` call itself still lands on exactly one agent (the orchestrator's choice);
//! a second one answers AlreadyExists once the first is seen.

use std::net::IpAddr;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use provisioner::testing::fake_apid::FakeCluster;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

/// etcd's peer port.
pub(crate) const PEER_PORT: u16 = 2380;

/// One agent's view, as served to its peers.
#[derive(Debug, Serialize, Deserialize)]
struct EtcdView {
    hostname: String,
    bootstrapped_on: Option<IpAddr>,
}

#[derive(Debug, Clone)]
struct Me {
    ip: IpAddr,
    cluster: FakeCluster,
}

/// Serves `GET /lab/etcd` on `listener` until `shutdown`.
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    ip: IpAddr,
    cluster: FakeCluster,
    shutdown: CancellationToken,
) {
    let app = axum::Router::new()
        .route("/lab/etcd", axum::routing::get(view))
        .with_state(Me { ip, cluster });
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
    {
        println!("LAB-AGENT-FAILED peer channel: {e}");
    }
}

async fn view(State(me): State<Me>) -> Json<EtcdView> {
    Json(EtcdView {
        hostname: me.cluster.hostname(me.ip).unwrap_or_default(),
        bootstrapped_on: me.cluster.bootstrapped_on(),
    })
}

/// Polls `peers` every second until `shutdown`, folding what they report into
/// `cluster`. Prints `LAB-AGENT-JOINED` once per peer and once for the bootstrap, and
/// `LAB-AGENT-CALL Bootstrap code=<code>` for each `Bootstrap` this node answered.
pub(crate) async fn follow(peers: Vec<IpAddr>, port: u16, cluster: FakeCluster, shutdown: CancellationToken) {
    let mut known = std::collections::BTreeSet::new();
    let mut joined = false;
    let mut reported = 0;
    loop {
        for peer in &peers {
            let Ok(Ok(v)) = tokio::time::timeout(Duration::from_secs(2), fetch(*peer, port)).await else {
                continue;
            };
            if !v.hostname.is_empty() && known.insert(*peer) {
                cluster.add_member(*peer, &v.hostname);
                println!("LAB-AGENT-JOINED peer={peer} hostname={}", v.hostname);
            }
            // The first bootstrap seen wins, as a joining etcd member learns it.
            if let Some(on) = v.bootstrapped_on
                && cluster.bootstrapped_on().is_none()
            {
                cluster.mark_bootstrapped(on);
            }
        }
        // The appliance's Bootstrap calls on this node, as they were answered.
        let calls = cluster.calls();
        for c in calls.iter().skip(reported).filter(|c| c.method == "Bootstrap") {
            println!("LAB-AGENT-CALL Bootstrap code={:?}", c.code);
        }
        reported = calls.len();
        if !joined && let Some(on) = cluster.bootstrapped_on() {
            joined = true;
            println!("LAB-AGENT-JOINED etcd bootstrapped-on={on}");
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// `GET /lab/etcd` from a peer. HTTP/1.0 by hand: reqwest's client builder failed
/// inside the test VM ("builder error"; its initramfs has no CA store or
/// configuration), and this plain request is the only one the agent makes.
async fn fetch(peer: IpAddr, port: u16) -> std::io::Result<EtcdView> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect((peer, port)).await?;
    s.write_all(format!("GET /lab/etcd HTTP/1.0\r\nHost: {peer}\r\n\r\n").as_bytes())
        .await?;
    let mut buf = Vec::new();
    s.take(64 * 1024).read_to_end(&mut buf).await?;
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_string());
    let at = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no end of headers"))?;
    if !buf.starts_with(b"HTTP/1.0 200") && !buf.starts_with(b"HTTP/1.1 200") {
        return Err(bad("not 200"));
    }
    serde_json::from_slice(&buf[at + 4..]).map_err(|e| bad(&e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_peer_learns_members_and_the_bootstrap() {
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let listener = tokio::net::TcpListener::bind((a, 0)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = CancellationToken::new();
        let theirs = FakeCluster::new(&[(a, "talos-1")], 0, b"");
        tokio::spawn(serve(listener, a, theirs.clone(), stop.clone()));
        let v = fetch(a, port).await.unwrap();
        assert_eq!((v.hostname.as_str(), v.bootstrapped_on), ("talos-1", None));

        let b: IpAddr = "127.0.0.2".parse().unwrap();
        let ours = FakeCluster::new(&[(b, "talos-2")], 0, b"");
        theirs.mark_bootstrapped(a);
        tokio::spawn(follow(vec![a], port, ours.clone(), stop.clone()));
        for _ in 0..50 {
            if ours.bootstrapped_on().is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        stop.cancel();
        assert_eq!(ours.bootstrapped_on(), Some(a));
        assert_eq!(ours.hostname(a).as_deref(), Some("talos-1"));
    }
}
