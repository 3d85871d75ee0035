//! How three agents in three VMs agree on etcd state.
//!
//! Real etcd members talk on the peer port (2380); the agents use the same port for a
//! plain-HTTP side channel: `GET /lab/etcd` answers this node's hostname and where etcd
//! was bootstrapped, if anywhere. Each agent polls every other control-plane address
//! (from `lab.peers=` on the kernel command line) once a second: a peer that answers
//! becomes an etcd member (`FakeCluster::add_member`), and a bootstrap seen anywhere
//! is joined (`FakeCluster::join_bootstrapped`), so `ServiceList` reports etcd Running
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
/// `cluster`. Prints `LAB-AGENT-JOINED` once per peer and once for the bootstrap.
pub(crate) async fn follow(peers: Vec<IpAddr>, port: u16, cluster: FakeCluster, shutdown: CancellationToken) {
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .no_proxy()
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            println!("LAB-AGENT-FAILED peer client: {e}");
            return;
        }
    };
    let mut known = std::collections::BTreeSet::new();
    let mut joined = false;
    loop {
        for peer in &peers {
            let url = format!("http://{peer}:{port}/lab/etcd");
            let Ok(resp) = client.get(&url).send().await else {
                continue;
            };
            let Ok(v) = resp.json::<EtcdView>().await else {
                continue;
            };
            if !v.hostname.is_empty() && known.insert(*peer) {
                cluster.add_member(*peer, &v.hostname);
                println!("LAB-AGENT-JOINED peer={peer} hostname={}", v.hostname);
            }
            if let Some(on) = v.bootstrapped_on {
                cluster.join_bootstrapped(on);
            }
        }
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
