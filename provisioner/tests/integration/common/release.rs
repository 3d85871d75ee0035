//! A boot router and an operator-API router over one service whose peer binding
//! reads a [`StaticFacts`] neighbour table: the rig of the config-release tests.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, Request, StatusCode};
use http_body_util::BodyExt;
use provisioner::http::api;
use provisioner::http::boot::{BootState, router};
use provisioner::service::{BootService, ReleasePolicy};
use provisioner::testing::peer_facts::StaticFacts;
use provisioner_core::boot::{CatalogBooter, UnknownPolicy};
use provisioner_core::catalog;
use provisioner_core::inventory::{Inventory, MemInventory};
use provisioner_core::model::{EventKind, MacAddr, Machine};
use tower::ServiceExt;

pub struct Site {
    /// Keeps the site's catalog, cache and infra/ on disk for the test's lifetime.
    pub _dir: tempfile::TempDir,
    pub inventory: Arc<dyn Inventory>,
    pub service: Arc<BootService>,
    pub facts: Arc<StaticFacts>,
    pub boot: Router,
    pub api: Router,
    pub admin: String,
    pub reader: String,
}

/// The common catalog, plus whatever `extra` writes under the site directory
/// (profiles, groups), with `policy` adjusting the release settings.
pub fn site(
    unknown: UnknownPolicy,
    extra: impl FnOnce(&Path),
    policy: impl FnOnce(&mut ReleasePolicy),
) -> Site {
    let dir = tempfile::tempdir().unwrap();
    super::write_catalog(dir.path());
    extra(dir.path());
    let cat = catalog::load(&dir.path().join("images"), &dir.path().join("profiles")).unwrap();
    let inventory: Arc<dyn Inventory> = Arc::new(MemInventory::new());
    let images = Arc::new(cat.images.clone());
    let booter = Arc::new(CatalogBooter {
        catalog: cat.clone(),
        unknown,
    });
    let facts = Arc::new(StaticFacts::default());
    let mut release = ReleasePolicy {
        facts: facts.clone(),
        ..Default::default()
    };
    policy(&mut release);
    let service =
        Arc::new(BootService::new(booter, inventory.clone(), super::BASE.into()).with_release(release));
    let boot = router(BootState {
        service: service.clone(),
        images,
        cache: provisioner::images::ImageCache::new(dir.path().join("cache")),
        ipxe_dir: dir.path().join("cache/test-img"),
        first_stage: provisioner_core::render::ipxe::first_stage(super::BASE).into(),
    });
    let (state, admin, reader) = super::api::api_state(
        service.clone(),
        cat,
        dir.path().join("infra"),
        super::api::loopback_power(),
        None,
    );
    Site {
        _dir: dir,
        inventory,
        service,
        facts,
        boot,
        api: api::router(state),
        admin,
        reader,
    }
}

/// One boot-path request from `peer`: (status, headers, body).
pub async fn req(
    app: &Router,
    method: &str,
    uri: &str,
    peer: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (StatusCode, HeaderMap, String) {
    let mut b = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let mut r = b.body(Body::from(body.to_string())).unwrap();
    let peer: SocketAddr = if peer.contains(':') {
        format!("[{peer}]:4000").parse().unwrap()
    } else {
        format!("{peer}:4000").parse().unwrap()
    };
    r.extensions_mut().insert(ConnectInfo(peer));
    let resp = app.clone().oneshot(r).await.unwrap();
    let status = resp.status();
    let h = resp.headers().clone();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, h, String::from_utf8_lossy(&bytes).into_owned())
}

/// `GET /ipxe` for `mac` (with `uuid` if given) from `peer`: the script.
pub async fn ipxe(s: &Site, mac: &str, uuid: Option<&str>, peer: &str) -> String {
    let mut uri = format!("/ipxe?mac={}&arch=x86_64&platform=efi", mac.replace(':', "-"));
    if let Some(u) = uuid {
        uri.push_str(&format!("&uuid={u}"));
    }
    let (st, _, body) = req(&s.boot, "GET", &uri, peer, &[], "").await;
    assert_eq!(st, StatusCode::OK, "{body}");
    body
}

/// The path of `key=<url>` on a script's kernel line, if it has one.
pub fn url_path(script: &str, key: &str) -> Option<String> {
    let url = script
        .split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{key}=")))?;
    Some(url.strip_prefix(super::BASE).unwrap_or(url).to_string())
}

pub fn machine(s: &Site, mac: &str) -> Machine {
    s.inventory
        .get(mac.parse().unwrap())
        .unwrap()
        .expect("machine recorded")
}

/// The details of `kind` events on `mac`'s timeline.
pub fn events(s: &Site, mac: &str, kind: EventKind) -> Vec<String> {
    let mac: MacAddr = mac.parse().unwrap();
    s.inventory
        .timeline(mac)
        .unwrap()
        .into_iter()
        .filter(|e| e.kind() == kind)
        .map(|e| e.detail())
        .collect()
}

/// The Prometheus text of this test process.
pub fn metrics() -> String {
    api::metrics_handle().render()
}

/// The value of the first metric line starting with `prefix` (0 if absent).
pub fn metric(prefix: &str) -> f64 {
    metrics()
        .lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// An admin API call: (status, JSON).
pub async fn api_call(
    s: &Site,
    method: &str,
    path: &str,
    token: &str,
    body: Option<serde_json::Value>,
) -> (StatusCode, serde_json::Value) {
    super::api::call(&s.api, method, path, Some(token), body).await
}
