//! The bootstrap orchestrator against three fake Talos nodes over mTLS, with its
//! progress in a real redb file: a restart injected after each step resumes where it
//! stopped, Bootstrap is accepted exactly once on the lowest IP, machines become
//! Installed, and a handed-off cluster is never touched again.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::talos_lab::TalosLab;
use futures::FutureExt;
use futures::future::BoxFuture;
use provisioner::cluster::seams::{ApiProbe, CallError, HandOff};
use provisioner::os::talos::orchestrator::Orchestrator;
use provisioner::store::RedbInventory;
use provisioner_core::cluster::MemKubeconfigs;
use provisioner_core::cluster::bootstrap::Timeouts;
use provisioner_core::cluster::{BootstrapState, ClusterEvent, ClusterEventKind, ClusterStore, Step};
use provisioner_core::inventory::{Inventory, InventoryError};
use provisioner_core::model::{MacAddr, Machine, MachineState};
use provisioner_core::talos::bootstrap::Plan;
use tokio_util::sync::CancellationToken;
use tonic::Code;

const KUBECONFIG: &[u8] = b"apiVersion: v1\nkind: Config\nclusters: []\n";

/// Cancels the run as soon as a state in `stop_at` is persisted: a crash right after
/// the commit, before the work of that step.
#[derive(Debug)]
struct CrashAfter {
    inner: Arc<RedbInventory>,
    stop_at: Option<Step>,
    token: CancellationToken,
}

impl ClusterStore for CrashAfter {
    fn load(&self, c: &str) -> Result<Option<BootstrapState>, InventoryError> {
        self.inner.load(c)
    }
    fn save(&self, s: &BootstrapState, e: &[ClusterEvent]) -> Result<(), InventoryError> {
        self.inner.save(s, e)?;
        if Some(s.step) == self.stop_at {
            self.token.cancel();
        }
        Ok(())
    }
    fn clusters(&self) -> Result<Vec<BootstrapState>, InventoryError> {
        self.inner.clusters()
    }
    fn events(&self, c: &str) -> Result<Vec<ClusterEvent>, InventoryError> {
        self.inner.events(c)
    }
}

#[derive(Debug, Default)]
struct Counting(AtomicUsize);

impl ApiProbe for Counting {
    fn readyz<'a>(&'a self, kc: &'a [u8]) -> BoxFuture<'a, Result<(), CallError>> {
        let n = self.0.fetch_add(1, Ordering::SeqCst);
        let ok = kc == KUBECONFIG;
        // Not ready on the first probe, so the step polls.
        async move {
            match (n, ok) {
                (_, false) => Err(CallError::Api("wrong kubeconfig".into())),
                (0, _) => Err(CallError::Api("503 etcd not ready".into())),
                _ => Ok(()),
            }
        }
        .boxed()
    }
}

impl HandOff for Counting {
    fn hand_off<'a>(&'a self, cluster: &'a str, kc: &'a [u8]) -> BoxFuture<'a, Result<(), CallError>> {
        self.0.fetch_add(1, Ordering::SeqCst);
        let r = if cluster == "genmachine" && kc == KUBECONFIG {
            Ok(())
        } else {
            Err(CallError::HandOff("bad input".into()))
        };
        async move { r }.boxed()
    }

    /// Argo CD reports the root app Synced and Healthy (the wait itself is
    /// tested in core `cluster::argo_wait` and against the fake controller).
    fn argo_status<'a>(
        &'a self,
        _cluster: &'a str,
        _kc: &'a [u8],
    ) -> BoxFuture<'a, Result<provisioner_core::gitops::health::Report, CallError>> {
        let health = "Healthy";
        let report = provisioner_core::gitops::health::Report {
            apps: vec![provisioner_core::gitops::health::AppStatus::from_application(
                &serde_json::json!({"metadata": {"name": "root"},
                    "status": {"sync": {"status": "Synced"}, "health": {"status": health}}}),
            )],
            missing: vec![],
        };
        async move { Ok(report) }.boxed()
    }
}

fn mac(i: usize) -> MacAddr {
    format!("52:54:00:00:01:{i:02x}").parse().unwrap()
}

fn orchestrator(
    lab: &TalosLab,
    store: Arc<dyn ClusterStore>,
    inv: Arc<RedbInventory>,
    probe: Arc<Counting>,
    hand: Arc<Counting>,
) -> Orchestrator {
    let macs: BTreeMap<IpAddr, MacAddr> = lab
        .ips()
        .into_iter()
        .enumerate()
        .map(|(i, ip)| (ip, mac(i)))
        .collect();
    Orchestrator {
        plan: Plan {
            cluster: "genmachine".into(),
            control_plane: lab.ips().into_iter().collect::<BTreeSet<_>>(),
            hand_off: true,
            timeouts: Timeouts::default(),
            poll: Duration::from_millis(20),
        },
        talos: Arc::new(lab.client(&lab.ca.admin())),
        store,
        inventory: Some((inv as Arc<dyn Inventory>, macs)),
        kubeconfigs: Arc::new(MemKubeconfigs::default()),
        api: probe,
        hand_off: hand,
    }
}

fn open(path: &Path) -> Arc<RedbInventory> {
    Arc::new(RedbInventory::open(path).unwrap())
}

#[tokio::test]
async fn resumes_after_a_restart_at_every_step_and_bootstraps_exactly_once() {
    for stop_at in [
        Step::WaitNodes,
        Step::Bootstrap,
        Step::WaitEtcd,
        Step::FetchKubeconfig,
        Step::WaitApi,
        Step::HandOff,
    ] {
        let lab = TalosLab::start(3, 2, KUBECONFIG).await;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("inventory.redb");
        {
            let inv = open(&path);
            for i in 0..3 {
                let mut m = Machine::discovered(mac(i), time::OffsetDateTime::now_utc());
                m.state = MachineState::ConfigServed;
                inv.put(&m).unwrap();
            }
            let token = CancellationToken::new();
            let store = Arc::new(CrashAfter {
                inner: inv.clone(),
                stop_at: Some(stop_at),
                token: token.clone(),
            });
            let o = orchestrator(&lab, store, inv, Arc::default(), Arc::default());
            let stopped = tokio::time::timeout(Duration::from_secs(30), o.run(token))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(
                stopped, stop_at,
                "first run stops right after persisting {stop_at}"
            );
        }
        // "Restart": a new store on the same file, a new (empty) kubeconfig store.
        let inv = open(&path);
        let hand = Arc::new(Counting::default());
        let store = Arc::new(CrashAfter {
            inner: inv.clone(),
            stop_at: None,
            token: CancellationToken::new(),
        });
        let o = orchestrator(&lab, store, inv.clone(), Arc::default(), hand.clone());
        let end = tokio::time::timeout(Duration::from_secs(30), o.run(CancellationToken::new()))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(end, Step::HandedOff, "restart at {stop_at}");

        let lowest = lab.ips()[0];
        let boots: Vec<_> = lab
            .cluster
            .calls()
            .into_iter()
            .filter(|c| c.method == "Bootstrap")
            .collect();
        assert!(
            boots.iter().all(|c| c.node == lowest),
            "{stop_at}: Bootstrap went to another node: {boots:?}"
        );
        assert_eq!(
            lab.cluster.count("Bootstrap", Code::Ok),
            1,
            "{stop_at}: {boots:?}"
        );
        assert_eq!(
            lab.cluster.count("Bootstrap", Code::FailedPrecondition),
            2,
            "{stop_at}"
        );
        assert_eq!(
            lab.cluster.count("Bootstrap", Code::AlreadyExists),
            0,
            "{stop_at}: no call after success was recorded"
        );
        assert_eq!(hand.0.load(Ordering::SeqCst), 1, "{stop_at}: hand-off once");
        for i in 0..3 {
            assert_eq!(
                inv.get(mac(i)).unwrap().unwrap().state,
                MachineState::Installed,
                "{stop_at}"
            );
        }
        let events = inv.events("genmachine").unwrap();
        let steps: Vec<&str> = events
            .iter()
            .filter(|e| e.kind == ClusterEventKind::StepChanged)
            .map(|e| e.detail.as_str())
            .collect();
        assert!(
            steps
                .iter()
                .any(|d| d.starts_with("WaitNodes -> Bootstrap: bootstrap node chosen: 127.0.0.11")),
            "{steps:?}"
        );
        assert!(
            steps.last().unwrap().starts_with("HandOff -> HandedOff"),
            "{steps:?}"
        );
        assert!(events.iter().any(|e| e.kind == ClusterEventKind::Resumed));

        // Handed off: another start does nothing at all.
        let calls = lab.cluster.calls().len();
        let store = Arc::new(CrashAfter {
            inner: inv.clone(),
            stop_at: None,
            token: CancellationToken::new(),
        });
        let again = orchestrator(&lab, store, inv.clone(), Arc::default(), hand.clone());
        assert_eq!(
            again.run(CancellationToken::new()).await.unwrap(),
            Step::HandedOff
        );
        assert_eq!(lab.cluster.calls().len(), calls, "no Talos call after hand-off");
        assert_eq!(
            hand.0.load(Ordering::SeqCst),
            1,
            "never re-applied after hand-off"
        );
    }
}

#[tokio::test]
async fn a_step_past_its_timeout_fails_the_cluster() {
    // One node never comes up (nothing listens at its address).
    let lab = TalosLab::start(2, 0, KUBECONFIG).await;
    let dir = tempfile::tempdir().unwrap();
    let inv = open(&dir.path().join("inventory.redb"));
    let store = Arc::new(CrashAfter {
        inner: inv.clone(),
        stop_at: None,
        token: CancellationToken::new(),
    });
    let mut o = orchestrator(&lab, store, inv.clone(), Arc::default(), Arc::default());
    o.plan.control_plane.insert(IpAddr::from([127, 0, 0, 99]));
    o.plan.timeouts.wait_nodes = Duration::from_millis(300);
    let end = tokio::time::timeout(Duration::from_secs(20), o.run(CancellationToken::new()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(end, Step::Failed);
    let state = inv.load("genmachine").unwrap().unwrap();
    let why = state.failure.unwrap();
    assert!(
        why.contains("step WaitNodes timed out") && why.contains("127.0.0.99"),
        "{why}"
    );
    assert_eq!(lab.cluster.count("Bootstrap", Code::Ok), 0);
    // The two nodes that answered are recorded as installed.
    assert_eq!(state.installed.len(), 2);
}
