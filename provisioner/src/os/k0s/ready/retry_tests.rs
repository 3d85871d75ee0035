//! A k0s workflow that fails on a step timeout waits in its task for an operator
//! retry, then resumes at the failed step without redoing the steps before it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use provisioner_core::cluster::bootstrap::Timeouts;
use provisioner_core::cluster::{ClusterStore, MemClusterStore, Step};
use provisioner_core::k0s::progress::Phase;
use provisioner_core::k0s::workflow::{K0sPlan, NodeStatus};
use tokio_util::sync::CancellationToken;

use super::{AdminKubeconfig, ControllerPhase, K0sReady, NodeLister};
use crate::cluster::seams::{ApiProbe, CallError, HandOff};
use crate::ops::bootstrap_view::StoreBootstrap;
use crate::ops::clusters::BootstrapProgress;

/// Counts its calls; `/readyz` answers ok only once `ready` is set.
#[derive(Debug, Default)]
struct Fakes {
    phase_calls: AtomicUsize,
    ready: AtomicBool,
    hand_offs: AtomicUsize,
}

impl ControllerPhase for Fakes {
    fn phase(&self) -> Result<Phase, CallError> {
        self.phase_calls.fetch_add(1, Ordering::SeqCst);
        Ok(Phase::K0sInstalled)
    }
}

impl AdminKubeconfig for Fakes {
    fn get(&self) -> Result<Vec<u8>, CallError> {
        Ok(b"kubeconfig".to_vec())
    }
}

impl ApiProbe for Fakes {
    fn readyz<'a>(&'a self, _kubeconfig: &'a [u8]) -> BoxFuture<'a, Result<(), CallError>> {
        let ok = self.ready.load(Ordering::SeqCst);
        async move {
            if ok {
                Ok(())
            } else {
                Err(CallError::Api("503 etcd not ready".into()))
            }
        }
        .boxed()
    }
}

impl NodeLister for Fakes {
    fn nodes<'a>(&'a self, _kubeconfig: &'a [u8]) -> BoxFuture<'a, Result<Vec<NodeStatus>, CallError>> {
        let node = NodeStatus {
            name: "beelink-1".into(),
            addresses: Vec::new(),
            ready: Some("True".into()),
        };
        async move { Ok(vec![node]) }.boxed()
    }
}

impl HandOff for Fakes {
    fn hand_off<'a>(
        &'a self,
        _cluster: &'a str,
        _kubeconfig: &'a [u8],
    ) -> BoxFuture<'a, Result<(), CallError>> {
        self.hand_offs.fetch_add(1, Ordering::SeqCst);
        async { Ok(()) }.boxed()
    }

    fn argo_status<'a>(
        &'a self,
        _cluster: &'a str,
        _kubeconfig: &'a [u8],
    ) -> BoxFuture<'a, Result<provisioner_core::gitops::health::Report, CallError>> {
        async { Ok(healthy_report("cilium-beelink")) }.boxed()
    }
}

/// Argo CD's report: `beelink`'s one Application, Synced and Healthy.
pub(crate) fn healthy_report(app: &str) -> provisioner_core::gitops::health::Report {
    provisioner_core::gitops::health::Report {
        apps: vec![provisioner_core::gitops::health::AppStatus::from_application(
            &serde_json::json!({
                "metadata": {"name": app},
                "status": {"sync": {"status": "Synced"}, "health": {"status": "Healthy"}}
            }),
        )],
        missing: vec![],
    }
}

async fn until_step(store: &dyn ClusterStore, step: Step) {
    for _ in 0..500 {
        if store.load("beelink").unwrap().is_some_and(|s| s.step == step) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("never reached {step}: {:?}", store.load("beelink"));
}

#[tokio::test]
async fn a_failed_k0s_workflow_waits_for_a_retry_and_resumes_at_the_failed_step() {
    let fakes = Arc::new(Fakes::default());
    let store = Arc::new(MemClusterStore::default());
    let w = K0sReady {
        plan: K0sPlan {
            cluster: "beelink".into(),
            nodes: BTreeMap::from([("beelink-1".to_string(), None)]),
            hand_off: true,
            timeouts: Timeouts {
                wait_api: Duration::from_millis(200),
                ..Timeouts::default()
            },
            poll: Duration::from_millis(20),
        },
        store: store.clone(),
        controller: fakes.clone(),
        kubeconfig: fakes.clone(),
        api: fakes.clone(),
        nodes: fakes.clone(),
        hand_off: fakes.clone(),
        argocd_host: None,
    };
    let shutdown = CancellationToken::new();
    let task = {
        let token = shutdown.clone();
        tokio::spawn(async move { w.run_retrying("beelink", token).await })
    };
    until_step(store.as_ref(), Step::Failed).await;
    let failed = store.load("beelink").unwrap().unwrap();
    assert_eq!(failed.failed_step, Some(Step::WaitApi));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!task.is_finished(), "a Failed workflow waits for a retry");
    let phase_calls = fakes.phase_calls.load(Ordering::SeqCst);

    fakes.ready.store(true, Ordering::SeqCst);
    StoreBootstrap(store.clone()).retry("beelink").unwrap();
    until_step(store.as_ref(), Step::HandedOff).await;
    assert_eq!(fakes.hand_offs.load(Ordering::SeqCst), 1);
    assert_eq!(
        fakes.phase_calls.load(Ordering::SeqCst),
        phase_calls,
        "WaitK0s was done: not run again"
    );
    // HandedOff ends the workflow (the daemon's task then waits for shutdown).
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
}
