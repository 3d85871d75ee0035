//! One-time Talos config delivery through the boot path: a machine with a GenMachine
//! MAC gets a kernel line with `talos.config=<one-time URL>`; fetching it returns the
//! validated machine config of that node (the same one `talos config` renders); the
//! URL works once; a missing secrets bundle answers 503 and keeps the token usable.
//! Uses the repository's own `images/`, `profiles/` and `infra/`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use provisioner::http::boot::{BootState, router};
use provisioner::service::BootService;
use provisioner::talos::renderer::TalosRenderer;
use provisioner::talos::store::{MemSecretStore, SecretStore};
use provisioner_core::boot::{CatalogBooter, UnknownPolicy};
use provisioner_core::catalog::{self, ConfigKind};
use provisioner_core::inventory::{Inventory, MemInventory};
use provisioner_core::model::{EventKind, MachineState};
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
        None => provisioner::talos::pki::generate(time::OffsetDateTime::now_utc()).unwrap(),
    }
}

struct Rig {
    app: axum::Router,
    inventory: Arc<dyn Inventory>,
    secrets: Arc<MemSecretStore>,
    cluster: talos::TalosCluster,
}

fn rig() -> Rig {
    let cat = catalog::load(&repo().join("images"), &repo().join("profiles")).unwrap();
    let infra = provisioner_core::infra::load(&repo().join("infra")).unwrap();
    let cluster = infra.talos["genmachine"].clone();
    let inventory: Arc<dyn Inventory> = Arc::new(MemInventory::new());
    let secrets = Arc::new(MemSecretStore::new());
    let images = Arc::new(cat.images.clone());
    let booter = Arc::new(CatalogBooter {
        catalog: cat,
        unknown: UnknownPolicy::Record,
    });
    let renderer = TalosRenderer::new(infra.talos, secrets.clone());
    let service = Arc::new(
        BootService::new(booter, inventory.clone(), BASE.into())
            .with_renderer(ConfigKind::Talos, Arc::new(renderer)),
    );
    let app = router(BootState {
        service,
        images,
        cache_dir: std::env::temp_dir(),
        ipxe_dir: std::env::temp_dir(),
        first_stage: "#!ipxe\n".into(),
    });
    Rig {
        app,
        inventory,
        secrets,
        cluster,
    }
}

async fn get(app: &axum::Router, uri: &str) -> (StatusCode, String) {
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
    let (st, script) = get(&r.app, "/ipxe?mac=02-00-00-00-01-01&arch=x86_64&platform=efi").await;
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
    let (st, body) = get(&r.app, &path).await;
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
    let (st, body) = get(&r.app, &path).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    assert!(!body.contains("machine"), "nothing of the config on a refusal");
    // talos-2's URL serves talos-2, not talos-1.
    let (_, script2) = get(&r.app, "/ipxe?mac=02-00-00-00-01-02&arch=x86_64&platform=efi").await;
    let (st, body2) = get(&r.app, &config_path(&script2)).await;
    assert_eq!(st, StatusCode::OK);
    assert!(body2.contains("hostname: talos-2") && !body2.contains("hostname: talos-1"));
}

#[tokio::test]
async fn missing_secrets_answer_503_and_keep_the_token() {
    let r = rig();
    let (_, script) = get(&r.app, "/ipxe?mac=02-00-00-00-01-03&arch=x86_64&platform=efi").await;
    let path = config_path(&script);
    let (st, body) = get(&r.app, &path).await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let mac = "02:00:00:00:01:03".parse().unwrap();
    let events = r.inventory.timeline(mac).unwrap();
    assert!(
        events
            .iter()
            .any(|e| e.kind == EventKind::TokenRejected && e.detail.contains("no secrets bundle")),
        "{events:?}"
    );
    // Once the bundle exists, the machine's retry with the same URL succeeds.
    r.secrets.put("genmachine", &bundle()).unwrap();
    let (st, body) = get(&r.app, &path).await;
    assert_eq!(st, StatusCode::OK);
    assert!(body.contains("hostname: talos-3"));
}
