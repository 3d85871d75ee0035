//! Registering a cluster in ArgoCD with the `argocd-manager` service-account token, as
//! `argocd cluster add` does, against a fake Kubernetes API whose simulated token
//! controller fills the token Secret only after a delay: the appliance applies the
//! ServiceAccount, ClusterRole, ClusterRoleBinding and token Secret (server-side
//! apply, its one field manager, no discovery), waits for `data.token`, and builds a
//! cluster Secret from the token, the CA and the server; again and again with the
//! same result; and a token that never comes is a bounded, clear error. The token is
//! never logged.

use crate::common;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use common::fake_token::{FAKE_CA_PEM, FakeCluster, assert_sa_registration};
use provisioner::cluster::argocd::install::FIELD_MANAGER;
use provisioner::cluster::argocd::manager::{self, MANAGER_NAMESPACE, MANAGER_TOKEN_SECRET, RegisterError};

/// Every log line written while a test runs (at DEBUG and above, every target).
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn capture_logs() -> (Captured, tracing::subscriber::DefaultGuard) {
    let logs = Captured::default();
    let writer = logs.clone();
    let sub = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_writer(move || writer.clone())
        .finish();
    (logs, tracing::subscriber::set_default(sub))
}

#[tokio::test]
async fn registration_waits_for_the_token_controller_and_is_idempotent() {
    common::crypto();
    // The token controller leaves the Secret empty for the first three reads.
    let cluster = FakeCluster::start(3).await;
    let poll = Duration::from_millis(50);
    let (logs, _guard) = capture_logs();

    let started = Instant::now();
    let secret = manager::register("beelink", &cluster.kubeconfig(), Duration::from_secs(10), poll)
        .await
        .unwrap();
    let took = started.elapsed();

    assert_eq!(
        cluster.tokens.early_gets(),
        3,
        "polled while empty, then read once filled"
    );
    assert!(took >= 3 * poll, "polls are spaced ({took:?})");
    let token = cluster
        .tokens
        .token(MANAGER_NAMESPACE, MANAGER_TOKEN_SECRET)
        .expect("a token was issued");
    let ca = base64::engine::general_purpose::STANDARD.encode(FAKE_CA_PEM);
    let first = serde_json::to_value(&secret).unwrap();
    assert_sa_registration(&first, "beelink", &cluster.url(), &token, &ca);
    assert_eq!(first["metadata"]["namespace"], "argocd");
    assert_eq!(first["metadata"]["name"], "cluster-beelink");

    {
        let j = cluster.kube.journal();
        let ours: Vec<(&str, Option<&str>, &str)> = j
            .applies
            .iter()
            .filter(|a| a.field_manager == FIELD_MANAGER)
            .map(|a| (a.kind.as_str(), a.namespace.as_deref(), a.name.as_str()))
            .collect();
        assert_eq!(
            ours,
            [
                ("ServiceAccount", Some("kube-system"), "argocd-manager"),
                ("ClusterRole", None, "argocd-manager-role"),
                ("ClusterRoleBinding", None, "argocd-manager-role-binding"),
                ("Secret", Some("kube-system"), "argocd-manager-long-lived-token"),
            ]
        );
        assert!(
            j.applies
                .iter()
                .filter(|a| a.field_manager == FIELD_MANAGER)
                .all(|a| a.force)
        );
        assert!(
            !j.requests
                .iter()
                .any(|r| r.ends_with(" /apis") || r.ends_with(" /api")),
            "no discovery: {:?}",
            j.requests
        );
        // The admin credential only talked to the cluster; the token Secret as applied
        // carries no data for the token controller to fight over.
        let applied = cluster
            .kube
            .object("Secret/kube-system/argocd-manager-long-lived-token")
            .unwrap();
        assert!(applied.get("data").is_none());
    }

    // Again (a retried or repeated hand-off): the same objects, the same token.
    let again = manager::register("beelink", &cluster.kubeconfig(), Duration::from_secs(10), poll)
        .await
        .unwrap();
    assert_eq!(serde_json::to_value(&again).unwrap(), first);
    let applies = cluster
        .kube
        .journal()
        .applies
        .iter()
        .filter(|a| a.field_manager == FIELD_MANAGER)
        .count();
    assert_eq!(
        applies, 8,
        "each of the four objects applied once per registration"
    );
    assert_eq!(
        cluster.tokens.early_gets(),
        3,
        "an existing token is read at once"
    );

    let logs = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("argocd-manager"),
        "the capture saw the registration"
    );
    assert!(!logs.contains(&token), "the token was logged");
    assert!(!logs.contains("fake-sa-token"), "the token was logged");
    println!("registration with a token controller filling on the 4th read took {took:?}");
}

#[tokio::test]
async fn a_token_that_never_comes_is_a_bounded_error() {
    common::crypto();
    let cluster = FakeCluster::start(usize::MAX).await;
    let started = Instant::now();
    let err = manager::register(
        "beelink",
        &cluster.kubeconfig(),
        Duration::from_millis(400),
        Duration::from_millis(50),
    )
    .await
    .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(matches!(err, RegisterError::Timeout { .. }), "{err}");
    assert!(
        err.to_string().contains("argocd-manager-long-lived-token"),
        "{err}"
    );
    assert!(cluster.tokens.early_gets() >= 2, "polled until the deadline");

    // An unusable kubeconfig is refused before any request.
    let err = manager::register(
        "beelink",
        b"kind: Config\n",
        Duration::from_millis(400),
        Duration::from_millis(50),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, RegisterError::Kubeconfig { .. }), "{err}");
}
