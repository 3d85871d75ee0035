//! The supervisor without a network: plans from `infra/`, problems reported as
//! cluster events (once each), and a handed-off cluster left alone.

use std::sync::Arc;
use std::time::Duration;

use provisioner_core::cluster::bootstrap::BootstrapState;
use provisioner_core::cluster::{ClusterStore, MemClusterStore};
use provisioner_core::inventory::MemInventory;

use super::*;
use provisioner_core::cluster::MemKubeconfigs;
use provisioner_core::talos::store::MemSecretStore;

fn cluster() -> TalosCluster {
    serde_saphyr::from_str(
        "clusterName: lab\ntalosVersion: v1.11.6\nkubernetesVersion: v1.34.1\nendpoint: https://10.0.0.10:6443\n\
         nodes:\n  - {hostname: cp2, ipAddress: 10.0.0.12, controlPlane: true, mac: '02:00:00:00:01:02'}\n  \
         - {hostname: cp1, ipAddress: '10.0.0.11, fd00::11', controlPlane: true}\n  \
         - {hostname: w1, ipAddress: 10.0.0.21, mac: '02:00:00:00:01:21'}\n",
    )
    .unwrap()
}

#[test]
fn plan_dials_control_plane_nodes_and_knows_their_macs() {
    let settings = BootstrapSettings::default();
    let (plan, macs) = plan_for(&cluster(), &settings).unwrap();
    let ips: Vec<String> = plan.control_plane.iter().map(|i| i.to_string()).collect();
    assert_eq!(ips, ["10.0.0.11", "10.0.0.12"]);
    assert_eq!((plan.cluster.as_str(), plan.hand_off), ("lab", true));
    assert_eq!(plan.poll, Duration::from_secs(5));
    assert_eq!(macs.len(), 2, "{macs:?}");
    let mut c = cluster();
    c.nodes[0].ip_address = String::new();
    assert!(plan_for(&c, &settings).unwrap_err().to_string().contains("cp2"));
    c.nodes.truncate(0);
    assert!(plan_for(&c, &settings).is_err());
}

fn supervisor(store: Arc<MemClusterStore>) -> Supervisor {
    let settings = BootstrapSettings {
        retry_min_secs: 1,
        ..BootstrapSettings::default()
    };
    let kubeconfigs: Arc<dyn KubeconfigStore> = Arc::new(MemKubeconfigs::default());
    let argo = CachedArgo::new(
        "/nonexistent/gitops".into(),
        crate::images::ImageCache::new("/nonexistent/cache"),
        kubeconfigs.clone(),
        &settings,
    );
    Supervisor {
        settings,
        talos_port: crate::os::talos::api::APID_PORT,
        clusters: [("lab".to_string(), cluster())].into(),
        secrets: Arc::new(MemSecretStore::new()),
        store,
        inventory: Arc::new(MemInventory::new()),
        kubeconfigs,
        argo: Arc::new(argo),
    }
}

#[tokio::test]
async fn a_cluster_without_a_bundle_is_reported_once_and_retried_not_a_crash() {
    let store = Arc::new(MemClusterStore::default());
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(supervisor(store.clone()).run(shutdown.clone()));
    let bundle_events = || {
        store
            .events("lab")
            .unwrap()
            .into_iter()
            .filter(|e| e.kind == ClusterEventKind::Waiting && e.detail.contains("no secrets bundle"))
            .count()
    };
    let mut waited = 0;
    while bundle_events() == 0 {
        assert!(waited < 100, "no event: {:?}", store.events("lab"));
        tokio::time::sleep(Duration::from_millis(20)).await;
        waited += 1;
    }
    assert_eq!(store.load("lab").unwrap().unwrap().step, Step::WaitNodes);
    // At least one retry (1 s backoff) later: still one event for the same problem.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(bundle_events(), 1);
    assert!(!task.is_finished(), "the supervisor keeps running");
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(2), task)
        .await
        .expect("stops on shutdown")
        .unwrap();
}

#[tokio::test]
async fn a_handed_off_cluster_is_left_alone() {
    let store = Arc::new(MemClusterStore::default());
    let mut s = BootstrapState::new("lab", OffsetDateTime::now_utc());
    s.step = Step::HandedOff;
    store.save(&s, &[]).unwrap();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(supervisor(store.clone()).run(shutdown.clone()));
    // No bundle and no manifest: any attempt to dial or hand off would report them.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(store.events("lab").unwrap(), []);
    assert_eq!(store.load("lab").unwrap().unwrap(), s);
    assert!(!task.is_finished(), "returns only at shutdown");
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(2), task)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn nothing_starts_before_a_node_answers() {
    // Loopback nodes on a port nothing listens on: no node has installed yet.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let store = Arc::new(MemClusterStore::default());
    let mut sup = supervisor(store.clone());
    sup.talos_port = port;
    sup.settings.hand_off = false;
    let mut c = cluster();
    for (n, ip) in c.nodes.iter_mut().zip(["127.0.0.12", "127.0.0.11", "127.0.0.21"]) {
        n.ip_address = ip.into();
    }
    sup.clusters = [("lab".to_string(), c)].into();
    let bundle = crate::pki::talos::generate(OffsetDateTime::now_utc()).unwrap();
    sup.secrets.put("lab", &bundle).unwrap();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(sup.run(shutdown.clone()));
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    // Not started: no state (the API says "not started"), so no WaitNodes clock runs.
    assert_eq!(store.load("lab").unwrap(), None);
    assert!(!task.is_finished());
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(3), task)
        .await
        .unwrap()
        .unwrap();
}

#[test]
fn an_appended_event_keeps_the_saved_state() {
    let inner = Arc::new(MemClusterStore::default());
    let log = Locked {
        inner: inner.clone(),
        lock: std::sync::Mutex::new(()),
    };
    let now = OffsetDateTime::now_utc();
    let event = |detail: &str| ClusterEvent {
        at: now,
        kind: ClusterEventKind::Waiting,
        detail: detail.into(),
    };
    log.append("lab", event("first")).unwrap();
    assert_eq!(inner.load("lab").unwrap().unwrap().step, Step::WaitNodes);
    let mut s = BootstrapState::new("lab", now);
    s.step = Step::WaitEtcd;
    log.save(&s, &[]).unwrap();
    log.append("lab", event("second")).unwrap();
    assert_eq!(inner.load("lab").unwrap().unwrap(), s);
    assert_eq!(inner.events("lab").unwrap().len(), 2);
}
