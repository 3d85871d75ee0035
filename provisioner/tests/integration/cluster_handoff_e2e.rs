//! In-process power-on-to-GitOps (minus the QEMU machines): three fake Talos nodes over
//! mTLS whose kubeconfig points at a fake Kubernetes API server; the real orchestrator
//! with the real `/readyz` probe and the real ArgoCD hand-off (pinned v3.5.1 manifest,
//! this repository's gitops/) drives the cluster from "nodes installed" to HandedOff,
//! registering the other known cluster (beelink) with its `argocd-manager` token.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use common::fake_token::{FAKE_CA_PEM, FakeCluster, assert_sa_registration};
use common::talos_lab::TalosLab;
use provisioner::cluster::argocd::manifest::InstallManifest;
use provisioner::cluster::argocd::{ArgoHandOff, KubeReadyz, Settings};
use provisioner::os::talos::orchestrator::Orchestrator;
use provisioner::store::RedbInventory;
use provisioner::testing::fake_argo::FakeArgo;
use provisioner::testing::fake_kube::FakeKube;
use provisioner_core::cluster::bootstrap::Timeouts;
use provisioner_core::cluster::{ClusterStore, Step};
use provisioner_core::cluster::{KubeconfigStore, MemKubeconfigs};
use provisioner_core::talos::bootstrap::Plan;
use tokio_util::sync::CancellationToken;
use tonic::Code;

#[tokio::test]
async fn talos_nodes_to_handed_off_in_process() {
    common::crypto();
    let gitops = Path::new(env!("CARGO_MANIFEST_DIR")).join("../gitops");
    let settings = Settings::load(&gitops).unwrap();
    let Some(fixture) = common::fixture("argocd/install-v3.5.1.yaml") else {
        return;
    };
    let manifest = InstallManifest::parse(&std::fs::read(fixture).unwrap(), &settings.argocd.sha256).unwrap();
    let kube = FakeKube::start().await;
    kube.set_argo(Arc::new(
        FakeArgo::from_tree(&gitops, Duration::from_millis(200)).unwrap(),
    ));
    let lab = TalosLab::start(3, 2, &kube.kubeconfig()).await;
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(RedbInventory::open(&dir.path().join("inventory.redb")).unwrap());
    let kubeconfigs: Arc<dyn KubeconfigStore> = Arc::new(MemKubeconfigs::default());
    // beelink (k0s) is already up: the host's hand-off registers it.
    let beelink = FakeCluster::start(1).await;
    kubeconfigs.put("beelink", &beelink.kubeconfig()).unwrap();
    let o = Orchestrator {
        plan: Plan {
            cluster: "genmachine".into(),
            control_plane: lab.ips().into_iter().collect::<BTreeSet<_>>(),
            hand_off: true,
            timeouts: Timeouts::default(),
            poll: Duration::from_millis(100),
        },
        talos: Arc::new(lab.client(&lab.ca.admin())),
        store: store.clone(),
        inventory: Some((store.clone(), BTreeMap::new())),
        kubeconfigs: kubeconfigs.clone(),
        api: Arc::new(KubeReadyz),
        hand_off: Arc::new(ArgoHandOff {
            settings,
            gitops_dir: gitops,
            manifest: Arc::new(manifest),
            kubeconfigs,
            wait_timeout: Duration::from_secs(30),
            poll: Duration::from_millis(50),
        }),
    };
    let started = Instant::now();
    let end = tokio::time::timeout(Duration::from_secs(120), o.run(CancellationToken::new()))
        .await
        .unwrap()
        .unwrap();
    let took = started.elapsed();
    assert_eq!(end, Step::HandedOff, "{:#?}", store.events("genmachine").unwrap());
    assert_eq!(lab.cluster.count("Bootstrap", Code::Ok), 1);
    assert_eq!(lab.cluster.bootstrapped_on(), Some(lab.ips()[0]));
    let j = kube.journal();
    assert_eq!(j.applies.last().map(|a| a.name.as_str()), Some("root"));
    // HandedOff only after Argo CD reported root and genmachine's Applications
    // Synced and Healthy (and the step said so).
    let events = store.events("genmachine").unwrap();
    let handed = events
        .iter()
        .find(|e| e.detail.starts_with("HandOff -> HandedOff"))
        .unwrap();
    assert!(handed.detail.contains("Synced and Healthy"), "{handed:?}");
    for app in ["root", "apps", "cilium-genmachine", "longhorn-genmachine"] {
        assert!(
            j.observed_ready
                .contains_key(&format!("Application/argocd/{app}")),
            "{app} never reported Synced/Healthy"
        );
    }
    assert!(j.requests.iter().any(|r| r == "GET /readyz"));
    let token = beelink
        .tokens
        .token("kube-system", "argocd-manager-long-lived-token")
        .expect("argocd-manager got a token in beelink");
    let ca = base64::engine::general_purpose::STANDARD.encode(FAKE_CA_PEM);
    let secret = kube.object("Secret/argocd/cluster-beelink").unwrap();
    assert_sa_registration(&secret, "beelink", &beelink.url(), &token, &ca);
    println!(
        "nodes answering → HandedOff in {took:?} ({} applies)",
        j.applies.len()
    );
}
