//! The ArgoCD hand-off against a fake Kubernetes API server, applying the real pinned
//! install manifest (v3.5.1) and the GitOps objects from this repository's gitops/.
//! Asserts the order (Namespace → CRDs → Established → the rest → workloads ready →
//! GitOps objects → root Application), one server-side apply per object with the
//! appliance's field manager and force, that a failing aggregated API group does
//! not stall the install (no discovery at all), and that clusters are registered with
//! their `argocd-manager` service-account token (an unreachable one is skipped).

use crate::common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use common::fake_token::{FAKE_CA_PEM, FakeCluster, assert_sa_registration};
use kube::ResourceExt;
use provisioner::cluster::argocd::install::{AWAITED, FIELD_MANAGER};
use provisioner::cluster::argocd::manifest::InstallManifest;
use provisioner::cluster::argocd::{ArgoHandOff, KubeReadyz, Settings};
use provisioner::cluster::seams::{ApiProbe, HandOff};
use provisioner::testing::fake_kube::FakeKube;
use provisioner_core::cluster::{KubeconfigStore, MemKubeconfigs};

fn gitops_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../gitops")
}

/// Loads and verifies the pinned manifest from the fixtures (None = SKIPPED).
fn manifest(settings: &Settings) -> Option<InstallManifest> {
    let path = common::fixture("argocd/install-v3.5.1.yaml")?;
    Some(InstallManifest::parse(&std::fs::read(path).unwrap(), &settings.argocd.sha256).unwrap())
}

#[test]
fn manifest_parses_into_59_objects_all_namespaced_ones_in_argocd() {
    let settings = Settings::load(&gitops_dir()).unwrap();
    let Some(m) = manifest(&settings) else { return };
    assert_eq!(m.objects.len(), 59);
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    for o in &m.objects {
        *kinds.entry(o.types.as_ref().unwrap().kind.clone()).or_default() += 1;
        let (_, scope) = m.resources.resolve(o).unwrap();
        let namespaced = scope == provisioner::cluster::argocd::manifest::Scope::Namespaced;
        assert_eq!(o.metadata.namespace.is_some(), namespaced, "{}", o.name_any());
    }
    let want = [
        ("CustomResourceDefinition", 3),
        ("ServiceAccount", 7),
        ("Role", 6),
        ("ClusterRole", 3),
        ("RoleBinding", 6),
        ("ClusterRoleBinding", 3),
        ("ConfigMap", 7),
        ("Secret", 2),
        ("Service", 8),
        ("Deployment", 6),
        ("StatefulSet", 1),
        ("NetworkPolicy", 7),
    ];
    for (k, n) in want {
        assert_eq!(kinds.get(k).copied(), Some(n), "{k}: {kinds:?}");
    }
    // A wrong pin is refused before anything is parsed.
    let bytes = std::fs::read(common::fixture("argocd/install-v3.5.1.yaml").unwrap()).unwrap();
    assert!(InstallManifest::parse(&bytes, &"0".repeat(64)).is_err());
}

#[tokio::test]
async fn hands_off_in_order_once_each_without_discovery() {
    common::crypto();
    let settings = Settings::load(&gitops_dir()).unwrap();
    let Some(m) = manifest(&settings) else { return };
    let kube = FakeKube::start().await;
    let beelink = FakeCluster::start(2).await;
    let kubeconfigs = Arc::new(MemKubeconfigs::default());
    kubeconfigs.put("beelink", &beelink.kubeconfig()).unwrap();
    // A known cluster whose API does not answer: skipped, not fatal to the host.
    let mut settings = settings;
    settings.clusters.push("gone".into());
    kubeconfigs
        .put(
            "gone",
            b"apiVersion: v1\nkind: Config\nclusters:\n- name: gone\n  cluster:\n    server: http://127.0.0.1:1\ncontexts:\n- name: gone\n  context:\n    cluster: gone\n    user: admin\ncurrent-context: gone\nusers:\n- name: admin\n  user:\n    token: admin-token\n",
        )
        .unwrap();
    let hand = ArgoHandOff {
        settings: settings.clone(),
        gitops_dir: gitops_dir(),
        manifest: Arc::new(m.clone()),
        kubeconfigs: kubeconfigs.clone(),
        wait_timeout: Duration::from_secs(20),
        poll: Duration::from_millis(50),
    };
    KubeReadyz.readyz(&kube.kubeconfig()).await.unwrap();
    let started = Instant::now();
    tokio::time::timeout(
        Duration::from_secs(60),
        hand.hand_off("genmachine", &kube.kubeconfig()),
    )
    .await
    .expect("hand-off stalled")
    .unwrap();
    let took = started.elapsed();

    {
        let j = kube.journal();
        let a = &j.applies;
        let pos = |kind: &str, name: &str| a.iter().position(|x| x.kind == kind && x.name == name);
        // Namespace first, then the three CRDs before anything else.
        assert_eq!((a[0].kind.as_str(), a[0].name.as_str()), ("Namespace", "argocd"));
        assert!(
            a[1..4].iter().all(|x| x.kind == "CustomResourceDefinition"),
            "{:?}",
            &a[..4]
        );
        // Every CRD was seen Established before the first custom resource was applied.
        let first_cr = a
            .iter()
            .find(|x| x.kind == "AppProject" || x.kind == "Application")
            .unwrap()
            .at;
        for crd in a.iter().filter(|x| x.kind == "CustomResourceDefinition") {
            let seen = j
                .observed_ready
                .get(&format!("CustomResourceDefinition//{}", crd.name))
                .expect("CRD never seen Established");
            assert!(
                *seen <= first_cr,
                "{} established after a custom resource was applied",
                crd.name
            );
            assert!(*seen <= a[4].at, "the rest of the manifest waits for Established");
        }
        // Every manifest object exactly once, every apply with our field manager and force.
        for o in &m.objects {
            let kind = &o.types.as_ref().unwrap().kind;
            let n = a
                .iter()
                .filter(|x| &x.kind == kind && x.name == o.name_any() && x.namespace == o.metadata.namespace)
                .count();
            assert_eq!(n, 1, "{kind} {} applied {n} times", o.name_any());
        }
        assert!(
            a.iter().all(|x| x.field_manager == FIELD_MANAGER && x.force),
            "every apply uses one field manager and force"
        );
        let mut seen = std::collections::BTreeSet::new();
        for x in a.iter() {
            assert!(
                seen.insert((x.kind.clone(), x.namespace.clone(), x.name.clone())),
                "{} {} applied twice",
                x.kind,
                x.name
            );
        }
        // The workloads were seen ready before the GitOps objects; the root app is last.
        let root = pos("Application", "root").expect("root Application applied");
        assert_eq!(root, a.len() - 1, "root Application is the last apply");
        for (kind, name) in AWAITED {
            let ready = j
                .observed_ready
                .get(&format!("{kind}/argocd/{name}"))
                .unwrap_or_else(|| panic!("{name} never seen ready"));
            assert!(*ready <= a[root].at, "{name} ready after the root Application");
            let repo = pos("Secret", "repo-gitops").unwrap();
            assert!(*ready <= a[repo].at, "{name} ready after the GitOps objects");
        }
        let projects: Vec<&str> = a
            .iter()
            .filter(|x| x.kind == "AppProject")
            .map(|x| x.name.as_str())
            .collect();
        assert_eq!(
            projects,
            [
                "argocd",
                "core",
                "monitoring",
                "network",
                "security",
                "storage",
                "tools"
            ]
        );
        assert!(pos("Secret", "cluster-genmachine").is_some() && pos("Secret", "cluster-beelink").is_some());
        assert!(
            pos("Secret", "cluster-gone").is_none(),
            "an unreachable cluster is skipped"
        );
        // beelink is registered with the token its token controller issued to
        // argocd-manager, the CA from that token Secret, and no admin credential.
        let token = beelink
            .tokens
            .token("kube-system", "argocd-manager-long-lived-token")
            .expect("argocd-manager got a token in beelink");
        let ca = base64::engine::general_purpose::STANDARD.encode(FAKE_CA_PEM);
        let secret = kube.object("Secret/argocd/cluster-beelink").unwrap();
        assert_sa_registration(&secret, "beelink", &beelink.url(), &token, &ca);
        let in_beelink: Vec<String> = beelink
            .kube
            .journal()
            .applies
            .iter()
            .filter(|a| a.field_manager == FIELD_MANAGER)
            .map(|a| format!("{} {}", a.kind, a.name))
            .collect();
        assert_eq!(
            in_beelink,
            [
                "ServiceAccount argocd-manager",
                "ClusterRole argocd-manager-role",
                "ClusterRoleBinding argocd-manager-role-binding",
                "Secret argocd-manager-long-lived-token"
            ]
        );
        // No discovery was needed, so the failing metrics.k8s.io group was never asked.
        assert!(
            !j.requests.iter().any(|r| r.contains("metrics.k8s.io")),
            "{:?}",
            j.requests
        );
        assert!(
            !j.requests
                .iter()
                .any(|r| r.ends_with(" /apis") || r.ends_with(" /api")),
            "no discovery calls"
        );
        println!(
            "hand-off against the fake API server: {} applies in {took:?}",
            a.len()
        );
    }

    // Another cluster's hand-off registers it in the host's ArgoCD: the same Secret
    // (same token) again, idempotently.
    kubeconfigs.put("genmachine", &kube.kubeconfig()).unwrap();
    let registered = kube.object("Secret/argocd/cluster-beelink").unwrap();
    let before = kube.journal().applies.len();
    hand.hand_off("beelink", &beelink.kubeconfig()).await.unwrap();
    let j = kube.journal();
    assert_eq!(j.applies.len(), before + 1);
    assert_eq!(j.applies.last().unwrap().name, "cluster-beelink");
    assert_eq!(
        kube.object("Secret/argocd/cluster-beelink").unwrap()["stringData"],
        registered["stringData"]
    );
}

#[tokio::test]
async fn a_failing_aggregated_api_does_not_stall_readyz_or_the_installer() {
    common::crypto();
    let kube = FakeKube::start().await;
    // The fake answers 503 for the aggregated group, like a real one without backend.
    let client = provisioner::cluster::argocd::client_for(&kube.kubeconfig())
        .await
        .unwrap();
    let req = http::Request::get("/apis/metrics.k8s.io/v1beta1")
        .body(Vec::new())
        .unwrap();
    // With kube's default retry policy this one call backs off for more than 30 s;
    // the appliance's client fails it at once and leaves retrying to its own loops.
    let started = Instant::now();
    let r = tokio::time::timeout(Duration::from_secs(30), client.request_text(req))
        .await
        .expect("request stalled");
    assert!(r.is_err(), "503 expected");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    // The installer's resolution is static: it applies a Namespace without any
    // discovery request at all.
    let installer = provisioner::cluster::argocd::install::Installer::new(
        client,
        provisioner::cluster::argocd::manifest::Resources::builtin(),
    );
    installer
        .apply(&provisioner::cluster::argocd::install::namespace("argocd"))
        .await
        .unwrap();
    let j = kube.journal();
    assert_eq!(j.requests.iter().filter(|r| r.starts_with("PATCH")).count(), 1);
    assert!(
        !j.requests
            .iter()
            .any(|r| r.ends_with(" /apis") || r.ends_with(" /api"))
    );
}
