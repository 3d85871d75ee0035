//! An operator-API router over in-memory stores, with admin and read-only tokens, a
//! catalog with a plain and a Talos profile, and an `infra/lab.yaml` cluster.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use provisioner::cluster::seams::NodeResetter;
use provisioner::http::api::{self, ApiState};
use provisioner::ops::Operator;
use provisioner::ops::clusters::NoBootstrap;
use provisioner::ops::credentials::StoreCredentials;
use provisioner::power::{PowerConfig, PowerDrivers, WolConfig};
use provisioner::service::{BootService, ReleasePolicy};
use provisioner::testing::peer_facts::StaticFacts;
use provisioner_core::apitoken::{MemApiTokens, Role};
use provisioner_core::boot::{BootRequest, CatalogBooter, UnknownPolicy};
use provisioner_core::bootloop::LoopGuard;
use provisioner_core::catalog;
use provisioner_core::cluster::MemKubeconfigs;
use provisioner_core::inventory::{Inventory, MemInventory};
use tower::ServiceExt;

pub const TALOS_MAC: &str = "52:54:00:00:00:03";

pub struct ApiRig {
    pub app: Router,
    pub state: ApiState,
    pub service: Arc<BootService>,
    pub inventory: Arc<dyn Inventory>,
    pub admin: String,
    pub reader: String,
    pub dir: tempfile::TempDir,
}

pub fn api_rig(resetter: Option<Arc<dyn NodeResetter>>, power: PowerConfig) -> ApiRig {
    let dir = tempfile::tempdir().unwrap();
    super::write_catalog(dir.path());
    std::fs::write(
        dir.path().join("profiles/profiles/talos-cp.yaml"),
        "id: talos-cp\nimage: test-img\nconfig: talos\ncluster: lab\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("profiles/groups/talos.yaml"),
        format!("id: talos\nprofile: talos-cp\nselector: {{ mac: \"{TALOS_MAC}\" }}\n"),
    )
    .unwrap();
    std::fs::create_dir_all(dir.path().join("infra")).unwrap();
    std::fs::write(dir.path().join("infra/lab.yaml"), "clusterName: lab\n").unwrap();
    let cat = catalog::load(&dir.path().join("images"), &dir.path().join("profiles")).unwrap();
    let inventory: Arc<dyn Inventory> = Arc::new(MemInventory::new());
    let booter = Arc::new(CatalogBooter {
        catalog: cat.clone(),
        unknown: UnknownPolicy::Record,
    });
    // Each test machine talks from its own address, as the neighbour table knows it.
    let facts = Arc::new(StaticFacts::default());
    for mac in [super::BIOS_MAC, super::EFI_MAC, TALOS_MAC] {
        facts.neighbour_is(&super::peer_of(mac).to_string(), mac);
    }
    let service = Arc::new(
        BootService::new(booter, inventory.clone(), super::BASE.into())
            .with_loop_guard(LoopGuard {
                max_installs: 3,
                window_secs: 600,
            })
            .with_release(ReleasePolicy {
                facts,
                ..Default::default()
            }),
    );
    let (state, admin, reader) = api_state(service.clone(), cat, dir.path().join("infra"), power, resetter);
    ApiRig {
        app: api::router(state.clone()),
        state,
        service,
        inventory,
        admin,
        reader,
        dir,
    }
}

/// The API state over `service` with an admin and a read-only token (returned).
pub fn api_state(
    service: Arc<BootService>,
    cat: catalog::Catalog,
    infra_dir: std::path::PathBuf,
    power: PowerConfig,
    resetter: Option<Arc<dyn NodeResetter>>,
) -> (ApiState, String, String) {
    let tokens = Arc::new(MemApiTokens::new());
    let admin = provisioner::cmd::client::token::create(tokens.as_ref(), Role::Admin, "test admin")
        .unwrap()
        .0;
    let reader = provisioner::cmd::client::token::create(tokens.as_ref(), Role::ReadOnly, "test reader")
        .unwrap()
        .0;
    let state = ApiState {
        ops: Operator {
            service,
            catalog: Arc::new(cat),
            power: Arc::new(PowerDrivers::new(power, None)),
            resetter,
            adopter: None,
        },
        tokens,
        sessions: Arc::default(),
        clusters: cluster_files(&infra_dir).into(),
        bootstrap: Arc::new(NoBootstrap),
        shutdown: Default::default(),
        credentials: Arc::new(no_credentials()),
        leases: Arc::new(provisioner_core::dhcp::lease::MemLeases::default()),
        dashboard: Default::default(),
    };
    (state, admin, reader)
}

/// The clusters the API lists: the test's `infra/` files by name (those tests write
/// only the fields the listing shows, not whole valid clusters, so this reads the
/// names the way `infra/` files give them instead of validating them as `serve` does).
pub fn cluster_files(dir: &std::path::Path) -> Vec<provisioner::ops::clusters::ClusterFile> {
    let mut out: Vec<_> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .map(|path| {
            let v: serde_json::Value =
                serde_saphyr::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            let placeholders = provisioner_core::infra::NodeMacs::placeholder_nodes(&v);
            provisioner::ops::clusters::ClusterFile {
                name: v["clusterName"].as_str().unwrap().to_string(),
                source: path,
                not_armed: (!placeholders.is_empty())
                    .then(|| provisioner_core::infra::not_armed_message(&placeholders)),
            }
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// Credentials over empty stores: every cluster is unknown.
pub fn no_credentials() -> StoreCredentials {
    StoreCredentials {
        talos: Default::default(),
        talos_secrets: None,
        kubeconfigs: Arc::new(MemKubeconfigs::default()),
        k0s: Default::default(),
        k0s_secrets: None,
    }
}

/// Power settings that keep Wake-on-LAN on loopback.
pub fn loopback_power() -> PowerConfig {
    PowerConfig {
        wol: WolConfig {
            target: "127.0.0.1:9".parse().unwrap(),
            interface: None,
        },
        ..Default::default()
    }
}

/// Serves an install script to `mac` asking from its own address
/// ([`super::peer_of`]; seeds the inventory like a real boot).
pub fn boot(service: &BootService, mac: &str) -> String {
    let q = format!("mac={}&arch=x86_64&platform=efi", mac.replace(':', "-"));
    service
        .ipxe_script(&BootRequest::from_query(&q), Some(super::peer_of(mac)))
        .unwrap()
        .0
}

/// One request through the router: (status, JSON body or Null).
pub async fn call(
    app: &Router,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<serde_json::Value>,
) -> (StatusCode, serde_json::Value) {
    let mut b = Request::builder().method(method).uri(path);
    if let Some(t) = token {
        b = b.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let req = match body {
        Some(v) => b
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(v.to_string()))
            .unwrap(),
        None => b.body(Body::empty()).unwrap(),
    };
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let v = serde_json::from_slice(&bytes).unwrap_or_else(|_| {
        if bytes.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::Value::String(String::from_utf8_lossy(&bytes).into())
        }
    });
    (status, v)
}
