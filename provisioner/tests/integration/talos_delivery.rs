//! One-time Talos config delivery through the boot path: a machine with a GenMachine
//! MAC gets a kernel line with `talos.config=<one-time URL>`; fetching it returns the
//! validated machine config of that node (the same one `talos config` renders); the
//! URL works once; a missing secrets bundle answers 503 and keeps the token usable;
//! a replay (403) is recorded on the token's machine as `config_replay_refused`; a
//! token older than the TTL gets 403 and `config_token_expired`, also across a
//! restart of the service over the same redb store.
//! Uses the repository's own `images/`, `profiles/` and `infra/`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use provisioner::http::boot::{BootState, router};
use provisioner::os::talos::renderer::TalosRenderer;
use provisioner::service::{BootService, ReleasePolicy};
use provisioner::store::RedbInventory;
use provisioner::testing::peer_facts::StaticFacts;
use provisioner_core::boot::{CatalogBooter, UnknownPolicy};
use provisioner_core::catalog::ConfigKind;
use provisioner_core::inventory::{Inventory, MemInventory};
use provisioner_core::model::{EventKind, MachineState};
use provisioner_core::talos::store::{MemSecretStore, SecretStore};
use provisioner_core::talos::{self, SecretsBundle};
use tower::ServiceExt;

const BASE: &str = "http://10.0.0.1:8080";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn fixtures() -> Option<PathBuf> {
    let dir = std::env::var_os("PROVISIONER_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("../shared/fixtures"));
    dir.join("talos/v1.11/config.schema.json")
        .is_file()
        .then_some(dir)
}

/// A bundle for the tests: Talos' fixed stability bundle when fixtures are present,
/// else a generated one.
fn bundle() -> SecretsBundle {
    match fixtures() {
        Some(d) => SecretsBundle::from_yaml(
            &std::fs::read_to_string(d.join("talos/v1.11/stability-secrets.yaml")).unwrap(),
        )
        .unwrap(),
        None => provisioner::pki::talos::generate(time::OffsetDateTime::now_utc()).unwrap(),
    }
}

struct Rig {
    app: axum::Router,
    facts: Arc<StaticFacts>,
    inventory: Arc<dyn Inventory>,
    secrets: Arc<MemSecretStore>,
    cluster: talos::TalosCluster,
}

fn rig() -> Rig {
    rig_with(Arc::new(MemInventory::new()), None)
}

/// A rig over `inventory`, with a config-token TTL if given.
fn rig_with(inventory: Arc<dyn Inventory>, ttl: Option<Duration>) -> Rig {
    // The groups of infra/ nodes are derived from infra/ (provisioner_core::adopt).
    let (images, profiles, infra, gitops) = (
        repo().join("images"),
        repo().join("profiles"),
        repo().join("infra"),
        repo().join("gitops"),
    );
    let inputs = provisioner::inputs::Inputs::load(provisioner::inputs::Dirs {
        images: &images,
        profiles: &profiles,
        infra: &infra,
        gitops: &gitops,
        talenv_age_key: None,
    })
    .unwrap();
    let (cat, infra) = (inputs.catalog, inputs.infra);
    let cluster = infra.talos["genmachine"].clone();
    let secrets = Arc::new(MemSecretStore::new());
    let images = Arc::new(cat.images.clone());
    let booter = Arc::new(CatalogBooter {
        catalog: cat,
        unknown: UnknownPolicy::Record,
    });
    let renderer = TalosRenderer::new(infra.talos, secrets.clone());
    let facts = Arc::new(StaticFacts::default());
    let mut service = BootService::new(booter, inventory.clone(), BASE.into())
        .with_renderer(ConfigKind::Talos, Arc::new(renderer))
        .with_release(ReleasePolicy {
            facts: facts.clone(),
            ..Default::default()
        });
    if let Some(ttl) = ttl {
        service = service.with_config_token_ttl(ttl);
    }
    let app = router(BootState {
        service: Arc::new(service),
        images,
        cache: provisioner::images::ImageCache::new(std::env::temp_dir()),
        ipxe_dir: std::env::temp_dir(),
        first_stage: "#!ipxe\n".into(),
    });
    Rig {
        app,
        facts,
        inventory,
        secrets,
        cluster,
    }
}

/// Every request comes from 10.0.0.51. The machine an `/ipxe` request names sits
/// there (the neighbour table says so); its config fetch then comes from the
/// address its script was served to (peer binding's rule for later fetches).
async fn get(r: &Rig, uri: &str) -> (StatusCode, String) {
    if let Some(mac) = uri.split("mac=").nth(1).and_then(|m| m.split('&').next()) {
        r.facts.neighbour_is("10.0.0.51", mac);
    }
    let app = &r.app;
    let mut req = Request::builder().uri(uri).body(Body::empty()).unwrap();
    req.extensions_mut()
        .insert(ConnectInfo::<SocketAddr>("10.0.0.51:4000".parse().unwrap()));
    let resp = app.clone().oneshot(req).await.unwrap();
    let st = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (st, String::from_utf8(body.to_vec()).unwrap())
}

/// The `talos.config=` URL path from a machine script.
fn config_path(script: &str) -> String {
    let url = script
        .split_whitespace()
        .find_map(|w| w.strip_prefix("talos.config="))
        .unwrap_or_else(|| panic!("no talos.config in {script}"));
    url.strip_prefix(BASE).unwrap().to_string()
}

#[tokio::test]
async fn talos_node_fetches_its_validated_config_once() {
    let r = rig();
    let secrets = bundle();
    r.secrets.put("genmachine", &secrets).unwrap();
    let (st, script) = get(&r, "/ipxe?mac=02-00-00-00-01-01&arch=x86_64&platform=efi").await;
    assert_eq!(st, StatusCode::OK);
    // Cached Talos assets with the v1.11 metal command line.
    assert!(
        script.contains("/assets/talos-genmachine-v1.11.6-amd64/kernel-amd64"),
        "{script}"
    );
    for arg in [
        "talos.platform=metal",
        "init_on_alloc=1",
        "slab_nomerge",
        "pti=on",
        "console=tty0",
    ] {
        assert!(
            script.split_whitespace().any(|w| w == arg),
            "{arg} missing: {script}"
        );
    }
    let path = config_path(&script);
    let (st, body) = get(&r, &path).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    // Exactly what `provisioner talos config --node talos-1` renders.
    assert_eq!(
        body,
        talos::render(&r.cluster, "talos-1", &secrets).unwrap().to_yaml()
    );
    let docs = talos::yaml::from_str_multi(&body).unwrap();
    assert_eq!(docs[0]["machine"]["network"]["hostname"], "talos-1");
    assert_eq!(
        docs[0]["machine"]["network"]["interfaces"][0]["vip"]["ip"],
        "192.168.1.150"
    );
    if let Some(dir) = fixtures() {
        let schema: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(dir.join("talos/v1.11/config.schema.json")).unwrap(),
        )
        .unwrap();
        let v = jsonschema::validator_for(&schema).unwrap();
        assert!(
            v.is_valid(&talos::machine::schema_instance(&docs[0])),
            "served config fails the schema"
        );
    } else {
        println!("SKIPPED: schema validation of the served config (no fixtures)");
    }
    let mac = "02:00:00:00:01:01".parse().unwrap();
    assert_eq!(
        r.inventory.get(mac).unwrap().unwrap().state,
        MachineState::ConfigServed
    );
    // Once only.
    let (st, body) = get(&r, &path).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    assert!(!body.contains("machine"), "nothing of the config on a refusal");
    // talos-2's URL serves talos-2, not talos-1.
    let (_, script2) = get(&r, "/ipxe?mac=02-00-00-00-01-02&arch=x86_64&platform=efi").await;
    let (st, body2) = get(&r, &config_path(&script2)).await;
    assert_eq!(st, StatusCode::OK);
    assert!(body2.contains("hostname: talos-2") && !body2.contains("hostname: talos-1"));
}

#[tokio::test]
async fn missing_secrets_answer_503_and_keep_the_token() {
    let r = rig();
    let (_, script) = get(&r, "/ipxe?mac=02-00-00-00-01-03&arch=x86_64&platform=efi").await;
    let path = config_path(&script);
    let (st, body) = get(&r, &path).await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let mac = "02:00:00:00:01:03".parse().unwrap();
    let events = r.inventory.timeline(mac).unwrap();
    assert!(
        events
            .iter()
            .any(|e| e.kind() == EventKind::TokenRejected && e.detail().contains("no secrets bundle")),
        "{events:?}"
    );
    // Once the bundle exists, the machine's retry with the same URL succeeds.
    r.secrets.put("genmachine", &bundle()).unwrap();
    let (st, body) = get(&r, &path).await;
    assert_eq!(st, StatusCode::OK);
    assert!(body.contains("hostname: talos-3"));
}

fn kinds_and_details(r: &Rig, mac: &str) -> Vec<(EventKind, String)> {
    r.inventory
        .timeline(mac.parse().unwrap())
        .unwrap()
        .into_iter()
        .map(|e| (e.kind(), e.detail()))
        .collect()
}

#[tokio::test]
async fn a_replayed_config_url_is_refused_on_its_machines_timeline() {
    let r = rig();
    r.secrets.put("genmachine", &bundle()).unwrap();
    let (_, old_script) = get(&r, "/ipxe?mac=02-00-00-00-01-01&arch=x86_64&platform=efi").await;
    let (_, script) = get(&r, "/ipxe?mac=02-00-00-00-01-01&arch=x86_64&platform=efi").await;
    let path = config_path(&script);
    assert_eq!(get(&r, &path).await.0, StatusCode::OK);
    let (st, body) = get(&r, &path).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    assert!(!body.contains("machine:"), "nothing of the config on a refusal");
    // Replaying it again and again is refused, and recorded once (then only counted).
    for _ in 0..3 {
        assert_eq!(get(&r, &path).await.0, StatusCode::FORBIDDEN);
    }
    // The older boot's URL (revoked by the newer script) is a replay too.
    assert_eq!(get(&r, &config_path(&old_script)).await.0, StatusCode::FORBIDDEN);
    // An unknown token names no machine: refused, recorded nowhere.
    let bogus = format!("/config/{}", "ab".repeat(32));
    assert_eq!(get(&r, &bogus).await.0, StatusCode::FORBIDDEN);

    let events = kinds_and_details(&r, "02:00:00:00:01:01");
    let replays: Vec<&String> = events
        .iter()
        .filter(|(k, _)| *k == EventKind::ConfigReplayRefused)
        .map(|(_, d)| d)
        .collect();
    assert_eq!(replays.len(), 2, "{events:?}");
    assert!(replays[0].contains("was used at"), "{}", replays[0]);
    assert!(replays[1].contains("revoked by a newer boot"), "{}", replays[1]);
    let token = path.rsplit('/').next().unwrap();
    assert!(
        events.iter().all(|(_, d)| !d.contains(token)),
        "the token is never on the timeline"
    );
    // Served once, refused after: the replay changed nothing else.
    let served = events
        .iter()
        .filter(|(k, _)| *k == EventKind::ConfigServed)
        .count();
    assert_eq!(served, 1, "{events:?}");
    assert_eq!(
        r.inventory
            .get("02:00:00:00:01:01".parse().unwrap())
            .unwrap()
            .unwrap()
            .state,
        MachineState::ConfigServed
    );
    assert!(
        kinds_and_details(&r, "02:00:00:00:01:02").is_empty(),
        "other machines' timelines untouched"
    );
}

#[tokio::test]
async fn an_expired_config_token_is_refused_and_a_restart_does_not_extend_it() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("inventory.redb");
    let ttl = Duration::from_secs(2);
    let (p1, p2) = {
        let inv: Arc<dyn Inventory> = Arc::new(RedbInventory::open(&db).unwrap());
        let r = rig_with(inv, Some(ttl));
        let (_, s1) = get(&r, "/ipxe?mac=02-00-00-00-01-01&arch=x86_64&platform=efi").await;
        let (_, s2) = get(&r, "/ipxe?mac=02-00-00-00-01-02&arch=x86_64&platform=efi").await;
        (config_path(&s1), config_path(&s2))
    };
    let issued = Instant::now();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    // Restart: a new service over the same store.
    let r = rig_with(Arc::new(RedbInventory::open(&db).unwrap()), Some(ttl));
    r.secrets.put("genmachine", &bundle()).unwrap();
    let restarted = Instant::now();
    let (st, body) = get(&r, &p1).await;
    assert_eq!(st, StatusCode::OK, "within the TTL, across the restart");
    assert!(body.contains("hostname: talos-1"));
    tokio::time::sleep(ttl.saturating_sub(issued.elapsed()) + Duration::from_millis(300)).await;
    assert!(
        restarted.elapsed() < ttl,
        "the check must run before a restarted clock would expire it"
    );
    let (st, body) = get(&r, &p2).await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{body}");
    assert!(!body.contains("machine:"));
    let events = kinds_and_details(&r, "02:00:00:00:01:02");
    let expired: Vec<&String> = events
        .iter()
        .filter(|(k, _)| *k == EventKind::ConfigTokenExpired)
        .map(|(_, d)| d)
        .collect();
    assert_eq!(expired.len(), 1, "{events:?}");
    assert!(expired[0].contains("TTL 2 s"), "{}", expired[0]);
    assert!(
        !events.iter().any(|(k, _)| *k == EventKind::ConfigServed),
        "nothing served"
    );
    // The expired token is spent: presenting it again is a replay.
    assert_eq!(get(&r, &p2).await.0, StatusCode::FORBIDDEN);
    assert!(
        kinds_and_details(&r, "02:00:00:00:01:02")
            .iter()
            .any(|(k, _)| *k == EventKind::ConfigReplayRefused)
    );
    // A fresh netboot gets a fresh token that works.
    let (_, s) = get(&r, "/ipxe?mac=02-00-00-00-01-02&arch=x86_64&platform=efi").await;
    assert_eq!(get(&r, &config_path(&s)).await.0, StatusCode::OK);
}
