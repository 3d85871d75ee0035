//! The k0s readiness workflow against a fake k0s API over HTTPS (server cert from
//! the cluster's k0s CA, client certificates required and checked for
//! `O=system:masters` from that CA): the controller's `K0sInstalled` arrives on its
//! timeline, `/readyz` fails then passes, the Nodes turn Ready after a delay, and
//! the real ArgoCD hand-off applies the pinned v3.5.1 manifest and this repository's
//! gitops/ objects. A restart injected once the nodes are awaited resumes there.

use crate::common;

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use common::fake_k0s::{FakeK0s, FakeNode};
use common::fake_token::assert_sa_registration;
use provisioner::cluster::argocd::install::FIELD_MANAGER;
use provisioner::cluster::argocd::manifest::InstallManifest;
use provisioner::cluster::argocd::{ArgoHandOff, KubeReadyz, Settings};
use provisioner::cluster::seams::ApiProbe;
use provisioner::ops::bootstrap_view::StoreBootstrap;
use provisioner::ops::clusters::{BootstrapPhase, BootstrapProgress, BootstrapStepStatus};
use provisioner::os::k0s::ready::io::{InventoryController, KubeNodes, MintedKubeconfig};
use provisioner::os::k0s::ready::{AdminKubeconfig, K0sReady};
use provisioner::pki::k0s as pki;
use provisioner::store::{AgeKubeconfigs, RedbInventory};
use provisioner::testing::fake_argo::FakeArgo;
use provisioner::testing::fake_kube::FakeKube;
use provisioner_core::cluster::KubeconfigStore;
use provisioner_core::cluster::bootstrap::Timeouts;
use provisioner_core::cluster::{BootstrapState, ClusterEvent, ClusterEventKind, ClusterStore, Step};
use provisioner_core::inventory::{Inventory, InventoryError};
use provisioner_core::k0s::store::{K0sSecretStore, K0sSecrets, MemSecretStore};
use provisioner_core::k0s::workflow::K0sPlan;
use provisioner_core::model::{Event, MacAddr, Machine, TimelineEvent};
use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, Issuer, KeyPair};
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

const CONTROLLER: &str = "52:54:00:00:02:01";

fn ev(event: Event) -> TimelineEvent {
    event.at(OffsetDateTime::now_utc())
}

/// The fetch of a Flatcar stage-1 Ignition (the k0s `Stage1Served` signal).
fn stage1() -> Event {
    Event::ConfigServed {
        bytes: 1234,
        config: provisioner_core::catalog::ConfigKind::Flatcar,
    }
}

/// Cancels the run once a state with `stop_at` is persisted (a crash right after
/// the commit, before that step's work).
#[derive(Debug)]
struct CrashAfter {
    inner: Arc<RedbInventory>,
    stop_at: Step,
    token: CancellationToken,
}

impl ClusterStore for CrashAfter {
    fn load(&self, c: &str) -> Result<Option<BootstrapState>, InventoryError> {
        self.inner.load(c)
    }
    fn save(&self, s: &BootstrapState, e: &[ClusterEvent]) -> Result<(), InventoryError> {
        self.inner.save(s, e)?;
        if s.step == self.stop_at {
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

fn plan() -> K0sPlan {
    let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
    K0sPlan {
        cluster: "beelink".into(),
        nodes: [
            ("beelink-1".to_string(), ip("10.0.40.11")),
            ("beelink-2".to_string(), ip("10.0.40.12")),
            ("beelink-3".to_string(), ip("10.0.40.13")),
        ]
        .into(),
        hand_off: true,
        timeouts: Timeouts::default(),
        poll: Duration::from_millis(100),
    }
}

fn fake_nodes() -> Vec<FakeNode> {
    let n = |name: &str, ip: &str, listed_from: usize, ready_from: usize| FakeNode {
        name: name.into(),
        ip: ip.parse().unwrap(),
        listed_from,
        ready_from,
    };
    vec![
        n("beelink-1", "10.0.40.11", 1, 2),
        n("beelink-2", "10.0.40.12", 2, 3),
        n("beelink-3", "10.0.40.13", 3, 4),
    ]
}

fn secrets() -> (Arc<MemSecretStore>, K0sSecrets) {
    let s = pki::generate("beelink", ["beelink-2", "beelink-3"], OffsetDateTime::now_utc()).unwrap();
    let store = Arc::new(MemSecretStore::default());
    store.put("beelink", &s).unwrap();
    (store, s)
}

#[tokio::test]
async fn controller_installed_to_handed_off_over_mtls() {
    common::crypto();
    let gitops = Path::new(env!("CARGO_MANIFEST_DIR")).join("../gitops");
    let mut settings = Settings::load(&gitops).unwrap();
    let Some(fixture) = common::fixture("argocd/install-v3.5.1.yaml") else {
        return;
    };
    let manifest = InstallManifest::parse(&std::fs::read(fixture).unwrap(), &settings.argocd.sha256).unwrap();
    // This test's cluster hosts ArgoCD, so the whole install runs against the fake.
    settings.argocd.host = "beelink".into();

    let (secret_store, s) = secrets();
    let fake = FakeK0s::start(&s, 2, fake_nodes()).await;
    // Argo CD on it reports the tree's Applications Synced and Healthy once settled.
    fake.kube.set_argo(Arc::new(
        FakeArgo::from_tree(&gitops, Duration::from_millis(300)).unwrap(),
    ));
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(RedbInventory::open(&dir.path().join("inventory.redb")).unwrap());
    let custody: Arc<dyn KubeconfigStore> = Arc::new(AgeKubeconfigs::open(dir.path()).unwrap());

    // The controller has been served stage 1 and installed Flatcar; k0s comes later.
    let mac: MacAddr = CONTROLLER.parse().unwrap();
    store
        .put(&Machine::discovered(mac, OffsetDateTime::now_utc()))
        .unwrap();
    store
        .append(mac, &[ev(stage1()), ev(Event::DiskInstalled)])
        .unwrap();

    let inventory: Arc<dyn Inventory> = store.clone();
    let workflow = |progress: Arc<dyn ClusterStore>| K0sReady {
        plan: plan(),
        store: progress,
        controller: Arc::new(InventoryController {
            inventory: inventory.clone(),
            catalog: Arc::default(),
            cluster: "beelink".into(),
            hostname: "beelink-1".into(),
            mac: Some(mac),
        }),
        kubeconfig: Arc::new(MintedKubeconfig {
            cluster: "beelink".into(),
            api_url: fake.url(),
            secrets: secret_store.clone(),
            custody: custody.clone(),
        }),
        api: Arc::new(KubeReadyz),
        nodes: Arc::new(KubeNodes),
        hand_off: Arc::new(ArgoHandOff {
            settings: settings.clone(),
            gitops_dir: gitops.clone(),
            manifest: Arc::new(manifest.clone()),
            kubeconfigs: custody.clone(),
            wait_timeout: Duration::from_secs(30),
            poll: Duration::from_millis(50),
        }),
        argocd_host: Some("beelink".into()),
    };
    // Stand-in for the machine's K0sInstalled callback, a little later.
    let inv = store.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(400)).await;
        inv.append(mac, &[ev(Event::K0sInstalled)]).unwrap();
    });

    let started = Instant::now();
    // First run: "crash" right after WaitWorkers is recorded.
    let token = CancellationToken::new();
    let crashing = Arc::new(CrashAfter {
        inner: store.clone(),
        stop_at: Step::WaitWorkers,
        token: token.clone(),
    });
    let stopped = tokio::time::timeout(Duration::from_secs(60), workflow(crashing).run(token))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stopped, Some(Step::WaitWorkers));
    let readyz_before = fake.journal().readyz.len();
    // Restart: resumes at WaitWorkers, /readyz is not probed again.
    let end = tokio::time::timeout(
        Duration::from_secs(120),
        workflow(store.clone()).run(CancellationToken::new()),
    )
    .await
    .expect("workflow stalled")
    .unwrap();
    let took = started.elapsed();
    let events = store.events("beelink").unwrap();
    assert_eq!(end, Some(Step::HandedOff), "{events:#?}");

    let nodes_polls = {
        let j = fake.journal();
        assert!(j.refused.is_empty(), "{:?}", j.refused);
        assert!(!j.accepted.is_empty());
        assert!(
            j.accepted
                .iter()
                .all(|s| s.contains("system:masters") && s.contains(pki::ADMIN_USER)),
            "{:?}",
            j.accepted
        );
        assert_eq!(j.readyz, [500, 500, 200], "/readyz failed first");
        assert_eq!(j.readyz.len(), readyz_before, "no /readyz after the restart");
        assert!(
            j.node_lists == [0, 1, 2, 3],
            "Nodes became Ready while polled: {:?}",
            j.node_lists
        );
        j.node_lists.len()
    };
    {
        let k = fake.kube.journal();
        assert_eq!(
            (k.applies[0].kind.as_str(), k.applies[0].name.as_str()),
            ("Namespace", "argocd")
        );
        assert_eq!(k.applies.last().map(|a| a.name.as_str()), Some("root"));
        assert!(k.applies.iter().any(|a| a.kind == "AppProject"));
    }

    let changes: Vec<&str> = events
        .iter()
        .filter(|e| e.kind == ClusterEventKind::StepChanged)
        .map(|e| e.detail.split(':').next().unwrap())
        .collect();
    assert_eq!(
        changes,
        [
            "Pending -> WaitK0s",
            "WaitK0s -> WaitApi",
            "WaitApi -> WaitWorkers",
            "WaitWorkers -> HandOff",
            "HandOff -> HandedOff"
        ]
    );
    for waited in ["waiting for K0sInstalled", "/readyz", "not Ready"] {
        assert!(
            events
                .iter()
                .any(|e| e.kind == ClusterEventKind::Waiting && e.detail.contains(waited)),
            "no Waiting event about {waited:?}: {events:#?}"
        );
    }
    assert_eq!(
        events
            .iter()
            .filter(|e| e.kind == ClusterEventKind::Resumed)
            .count(),
        1
    );

    // The operator's view: k0s steps, all done.
    let view = StoreBootstrap(store.clone()).status("beelink");
    assert_eq!(view.phase, BootstrapPhase::Done);
    let names: Vec<&str> = view.steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["WaitK0s", "WaitApi", "WaitWorkers", "HandOff"]);
    assert!(view.steps.iter().all(|s| s.status == BootstrapStepStatus::Done));

    // The admin kubeconfig is kept (encrypted) for the ArgoCD host's registration.
    let kc = custody.get("beelink").unwrap().expect("kubeconfig kept");
    assert!(String::from_utf8_lossy(&kc).contains(&fake.url()));
    let on_disk = std::fs::read_dir(dir.path().join("secrets/kubeconfigs"))
        .unwrap()
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect::<Vec<_>>();
    assert!(!on_disk.is_empty());
    assert!(
        on_disk
            .iter()
            .all(|b| !String::from_utf8_lossy(b).contains("client-key-data"))
    );

    // A handed-off cluster is never touched again.
    let again = workflow(store.clone())
        .run(CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(again, Some(Step::HandedOff));
    assert_eq!(fake.journal().node_lists.len(), nodes_polls);
    println!(
        "k0s: controller DiskInstalled → HandedOff in {took:?} ({} applies, {} Node lists, {} /readyz)",
        fake.kube.journal().applies.len(),
        nodes_polls,
        readyz_before
    );
}

/// A client certificate from `issuer` with subject `O=org`.
fn client_kubeconfig(url: &str, ca_pem: &str, issuer: &Issuer<'_, KeyPair>, org: &str) -> Vec<u8> {
    use base64::Engine;
    let b64 = |t: &str| base64::engine::general_purpose::STANDARD.encode(t);
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(DnType::CommonName, "intruder");
    p.distinguished_name.push(DnType::OrganizationName, org);
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let cert = p.signed_by(&key, issuer).unwrap();
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {url}\n    certificate-authority-data: {}\ncontexts:\n- name: c\n  context:\n    cluster: c\n    user: u\ncurrent-context: c\nusers:\n- name: u\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\n",
        b64(ca_pem),
        b64(&cert.pem()),
        b64(&key.serialize_pem())
    )
    .into_bytes()
}

#[tokio::test]
async fn the_fake_api_takes_only_system_masters_from_the_k0s_ca() {
    common::crypto();
    let (secret_store, s) = secrets();
    let fake = FakeK0s::start(&s, 0, fake_nodes()).await;
    let dir = tempfile::tempdir().unwrap();
    let admin = MintedKubeconfig {
        cluster: "beelink".into(),
        api_url: fake.url(),
        secrets: secret_store,
        custody: Arc::new(AgeKubeconfigs::open(dir.path()).unwrap()),
    }
    .get()
    .unwrap();
    KubeReadyz.readyz(&admin).await.unwrap();

    // Signed by the k0s CA but not a cluster admin.
    let k0s_ca = Issuer::from_ca_cert_pem(&s.ca_crt, KeyPair::from_pem(&s.ca_key).unwrap()).unwrap();
    let nodes = client_kubeconfig(&fake.url(), &s.ca_crt, &k0s_ca, "system:nodes");
    assert!(KubeReadyz.readyz(&nodes).await.is_err());
    // system:masters, but from another CA.
    let other = pki::generate("other", [], OffsetDateTime::now_utc()).unwrap();
    let other_ca =
        Issuer::from_ca_cert_pem(&other.ca_crt, KeyPair::from_pem(&other.ca_key).unwrap()).unwrap();
    let foreign = client_kubeconfig(&fake.url(), &s.ca_crt, &other_ca, "system:masters");
    assert!(KubeReadyz.readyz(&foreign).await.is_err());

    let j = fake.journal();
    assert_eq!(j.accepted.len(), 1, "{:?}", j.accepted);
    assert_eq!(j.refused.len(), 2, "{:?}", j.refused);
    assert!(j.refused[0].contains("not in system:masters"), "{:?}", j.refused);
    assert!(j.refused[1].contains("O=system:masters"), "{:?}", j.refused);
    assert_eq!(j.readyz, [200], "refused clients never reach /readyz");
}

/// beelink is not the ArgoCD host: its hand-off waits (no timeout) while the host's
/// workflow runs, then, through the minted admin credentials, sets up `argocd-manager`
/// in beelink and registers beelink in the host's ArgoCD as a cluster Secret carrying
/// that service account's token (not the expiring admin certificate).
#[tokio::test]
async fn a_non_host_cluster_waits_for_the_argocd_host_then_registers_itself() {
    common::crypto();
    let gitops = Path::new(env!("CARGO_MANIFEST_DIR")).join("../gitops");
    let settings = Settings::load(&gitops).unwrap();
    assert_eq!(settings.argocd.host, "genmachine");
    let Some(fixture) = common::fixture("argocd/install-v3.5.1.yaml") else {
        return;
    };
    let manifest = InstallManifest::parse(&std::fs::read(fixture).unwrap(), &settings.argocd.sha256).unwrap();
    let (secret_store, s) = secrets();
    let fake = FakeK0s::start(&s, 0, fake_nodes()).await;
    let host = FakeKube::start().await;
    // The host's Argo CD has synced its root app: beelink's Applications exist there
    // but Argo CD refuses them ("there are no clusters with this name: beelink")
    // until beelink's hand-off registers it.
    host.set_argo(Arc::new(
        FakeArgo::from_tree(&gitops, Duration::from_millis(300)).unwrap(),
    ));
    host.sync_root();
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(RedbInventory::open(&dir.path().join("inventory.redb")).unwrap());
    let custody: Arc<dyn KubeconfigStore> = Arc::new(AgeKubeconfigs::open(dir.path()).unwrap());
    // The Talos host is still bootstrapping.
    let mut genmachine = BootstrapState::new("genmachine", OffsetDateTime::now_utc());
    genmachine.step = Step::WaitEtcd;
    store.save(&genmachine, &[]).unwrap();
    let mac: MacAddr = CONTROLLER.parse().unwrap();
    store
        .put(&Machine::discovered(mac, OffsetDateTime::now_utc()))
        .unwrap();
    store
        .append(
            mac,
            &[ev(stage1()), ev(Event::DiskInstalled), ev(Event::K0sInstalled)],
        )
        .unwrap();
    let mut p = plan();
    // Tight: a blocked hand-off must not count against it.
    p.timeouts.hand_off = Duration::from_millis(500);
    let w = K0sReady {
        plan: p,
        store: store.clone(),
        controller: Arc::new(InventoryController {
            inventory: store.clone(),
            catalog: Arc::default(),
            cluster: "beelink".into(),
            hostname: "beelink-1".into(),
            mac: Some(mac),
        }),
        kubeconfig: Arc::new(MintedKubeconfig {
            cluster: "beelink".into(),
            api_url: fake.url(),
            secrets: secret_store,
            custody: custody.clone(),
        }),
        api: Arc::new(KubeReadyz),
        nodes: Arc::new(KubeNodes),
        hand_off: Arc::new(ArgoHandOff {
            settings,
            gitops_dir: gitops,
            manifest: Arc::new(manifest),
            kubeconfigs: custody.clone(),
            wait_timeout: Duration::from_secs(10),
            poll: Duration::from_millis(50),
        }),
        argocd_host: Some("genmachine".into()),
    };
    // The host finishes a while (longer than beelink's hand-off timeout) later.
    let (host_store, host_custody, host_kc) = (store.clone(), custody.clone(), host.kubeconfig());
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(2500)).await;
        // What the host's own hand-off leaves behind: the argocd namespace.
        let client = provisioner::cluster::argocd::client_for(&host_kc).await.unwrap();
        kube::Api::<k8s_openapi::api::core::v1::Namespace>::all(client)
            .patch(
                "argocd",
                &kube::api::PatchParams::apply("test").force(),
                &kube::api::Patch::Apply(serde_json::json!({
                    "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "argocd"}
                })),
            )
            .await
            .unwrap();
        host_custody.put("genmachine", &host_kc).unwrap();
        let mut done = BootstrapState::new("genmachine", OffsetDateTime::now_utc());
        done.step = Step::HandedOff;
        host_store.save(&done, &[]).unwrap();
    });
    let end = tokio::time::timeout(Duration::from_secs(60), w.run(CancellationToken::new()))
        .await
        .unwrap()
        .unwrap();
    let events = store.events("beelink").unwrap();
    assert_eq!(end, Some(Step::HandedOff), "{events:#?}");
    assert!(
        events.iter().any(|e| e.kind == ClusterEventKind::Waiting
            && e.detail.contains("ArgoCD host cluster genmachine")
            && e.detail.contains("WaitEtcd")),
        "{events:#?}"
    );
    // HandedOff only after the host's Argo CD reported beelink's Applications.
    for app in ["cluster-config-beelink", "cilium-beelink", "vault-beelink"] {
        assert!(
            events.iter().any(|e| e.kind == ClusterEventKind::ArgoStatus
                && e.detail.starts_with(&format!("{app}: "))
                && e.detail.ends_with("-> Synced/Healthy")),
            "{app}: {events:#?}"
        );
    }
    let secret = host
        .journal()
        .applies
        .iter()
        .find(|a| a.kind == "Secret")
        .map(|a| (a.namespace.clone(), a.name.clone()))
        .expect("beelink registered in the host's ArgoCD");
    assert_eq!(secret.0.as_deref(), Some("argocd"));
    assert_eq!(secret.1, "cluster-beelink");
    let obj = host.object("Secret/argocd/cluster-beelink").unwrap();
    let token = fake
        .tokens
        .token("kube-system", "argocd-manager-long-lived-token")
        .expect("argocd-manager got a token in beelink");
    // The CA is the one in the appliance's kubeconfig: beelink's k0s CA.
    let ca = base64::engine::general_purpose::STANDARD.encode(&s.ca_crt);
    assert_sa_registration(&obj, "beelink", &fake.url(), &token, &ca);
    let text = obj.to_string();
    assert!(
        !text.contains(&base64::engine::general_purpose::STANDARD.encode(&s.ca_key)),
        "no CA key"
    );
    // argocd-manager was set up in beelink over mTLS with the admin certificate.
    let in_beelink: Vec<String> = fake
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
    assert_eq!(
        fake.tokens.early_gets(),
        common::fake_k0s::TOKEN_EMPTY_GETS,
        "the token Secret was awaited"
    );
    assert!(fake.journal().refused.is_empty());
}

/// The real daemon with a k0s cluster in infra/: `serve` starts its workflow (which
/// waits, unstarted, for the controller's install) and the API lists the k0s steps.
#[test]
fn serve_lists_the_k0s_steps_of_a_k0s_cluster() {
    use common::daemon::{Daemon, write_config};
    let dir = tempfile::tempdir().unwrap();
    common::write_catalog(dir.path());
    std::fs::create_dir_all(dir.path().join("infra")).unwrap();
    std::fs::write(
        dir.path().join("infra/beelink.yaml"),
        "distribution: k0s\nclusterName: beelink\nk0sVersion: v1.36.3+k0s.2\nflatcarVersion: 4459.2.0\n\
         nodes:\n  - {hostname: beelink-1, controlPlane: true, ipAddress: 127.0.0.1, mac: '52:54:00:00:02:01'}\n\
         \x20 - {hostname: beelink-2, ipAddress: 127.0.0.2, mac: '52:54:00:00:02:02'}\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("profiles/profiles/k0s.yaml"),
        "id: k0s\nimage: test-img\nconfig: flatcar\ncluster: beelink\n",
    )
    .unwrap();
    let d = Daemon::start(&write_config(dir.path(), dir.path()));
    let reader = d.token("read-only");
    let (st, body) = d.api_get("/api/v1/clusters", Some(&reader));
    assert_eq!(st, 200, "{body}");
    let list: serde_json::Value = serde_json::from_str(&body).unwrap();
    let beelink = list
        .as_array()
        .and_then(|a| a.iter().find(|c| c["name"] == "beelink"))
        .unwrap_or_else(|| panic!("{body}"));
    assert_eq!(beelink["kind"], "k0s", "{beelink}");
    assert_eq!(beelink["bootstrap"]["phase"], "pending", "{beelink}");
    let steps: Vec<&str> = beelink["bootstrap"]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(steps, ["WaitK0s", "WaitApi", "WaitWorkers", "HandOff"]);
    assert!(
        beelink["bootstrap"]["detail"]
            .as_str()
            .unwrap()
            .contains("controller is served its install"),
        "{beelink}"
    );
    let log = std::fs::read_to_string(&d.log).unwrap();
    assert!(!log.contains("k0s workflow stopped"), "{log}");
}
