//! The HTTP boot path end to end in-process: scripts, one-time tokens, state
//! transitions, assets with Range/ETag, and refusal of anything outside the cache.

use crate::common;

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode, header};
use common::*;
use http_body_util::BodyExt;
use provisioner_core::boot::UnknownPolicy;
use provisioner_core::inventory::{Inventory, InventoryError, SpentToken, TokenRecord};
use provisioner_core::model::{EventKind, MacAddr, Machine, MachineState, TimelineEvent};
use tower::ServiceExt;

async fn call(
    app: &axum::Router,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
    let mut req = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let mut req = req.body(Body::empty()).unwrap();
    req.extensions_mut()
        .insert(ConnectInfo::<SocketAddr>("10.0.0.50:4000".parse().unwrap()));
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes().to_vec();
    (status, headers, body)
}

fn text(b: &[u8]) -> String {
    String::from_utf8(b.to_vec()).unwrap()
}

/// Pulls `key=<url>` from a kernel line and returns the URL's path.
fn url_path(script: &str, key: &str) -> String {
    let url = script
        .split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("{key} missing in {script}"));
    url.strip_prefix(BASE).unwrap().to_string()
}

#[tokio::test]
async fn install_flow_config_once_then_local_boot() {
    let r = rig(UnknownPolicy::Record);
    // The machine talks from 10.0.0.50, and the kernel's neighbour table says so.
    r.facts.neighbour_is("10.0.0.50", EFI_MAC);
    let app = app(&r);
    let mac: provisioner_core::model::MacAddr = EFI_MAC.parse().unwrap();

    let (st, _, body) = call(
        &app,
        "GET",
        "/ipxe?mac=52-54-00-00-00-02&arch=x86_64&platform=efi",
        &[],
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    let script = text(&body);
    assert!(
        script.contains("kernel http://10.0.0.1:8080/assets/test-img/vmlinuz initrd=initrd.gz"),
        "{script}"
    );
    assert_eq!(
        r.inventory.get(mac).unwrap().unwrap().state,
        MachineState::Booting
    );

    // Assets are attributed to the machine that fetched its script from this address.
    let (st, _, kernel) = call(&app, "GET", "/assets/test-img/vmlinuz", &[]).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(kernel.len(), 1024 * 1024);

    let config = url_path(&script, "provisioner.config");
    let callback = url_path(&script, "provisioner.callback");
    let (st, h, body) = call(&app, "GET", &config, &[]).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(h[header::CACHE_CONTROL], "no-store");
    let doc = text(&body);
    assert!(
        doc.contains("hostname: node-efi") && doc.contains("profile: lab"),
        "{doc}"
    );
    assert_eq!(
        r.inventory.get(mac).unwrap().unwrap().state,
        MachineState::ConfigServed
    );

    // One-time: the same token again is refused, and so is a config token at the callback.
    let (st, _, _) = call(&app, "GET", &config, &[]).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let token = config.rsplit('/').next().unwrap();
    let (st, _, _) = call(&app, "POST", &format!("/callback/{token}/installed"), &[]).await;
    assert_eq!(st, StatusCode::FORBIDDEN);

    let (st, _, _) = call(&app, "POST", &callback, &[]).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(
        r.inventory.get(mac).unwrap().unwrap().state,
        MachineState::Installed
    );
    let (st, _, _) = call(&app, "POST", &callback, &[]).await;
    assert_eq!(st, StatusCode::FORBIDDEN, "callback replay refused");

    // Second boot: local disk, no new tokens.
    let (_, _, body) = call(
        &app,
        "GET",
        "/ipxe?mac=52-54-00-00-00-02&arch=x86_64&platform=efi",
        &[],
    )
    .await;
    let script = text(&body);
    assert!(
        script.lines().any(|l| l == "exit") && !script.contains("kernel"),
        "{script}"
    );

    // The asset event is recorded asynchronously; give it a moment.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let kinds: Vec<EventKind> = r
        .inventory
        .timeline(mac)
        .unwrap()
        .into_iter()
        .map(|e| e.kind())
        .collect();
    let pos = |k| {
        kinds
            .iter()
            .position(|x| *x == k)
            .unwrap_or_else(|| panic!("{k:?} missing in {kinds:?}"))
    };
    assert!(pos(EventKind::IpxeScriptServed) < pos(EventKind::AssetServed));
    assert!(pos(EventKind::AssetServed) < pos(EventKind::ConfigServed));
    assert!(pos(EventKind::ConfigServed) < pos(EventKind::Installed));
}

#[tokio::test]
async fn a_new_script_revokes_the_previous_token() {
    let r = rig(UnknownPolicy::Record);
    r.facts.neighbour_is("10.0.0.50", BIOS_MAC);
    let app = app(&r);
    let (_, _, first) = call(
        &app,
        "GET",
        "/ipxe?mac=52-54-00-00-00-01&arch=i386&platform=pcbios",
        &[],
    )
    .await;
    let (_, _, second) = call(
        &app,
        "GET",
        "/ipxe?mac=52-54-00-00-00-01&arch=i386&platform=pcbios",
        &[],
    )
    .await;
    let old = url_path(&text(&first), "provisioner.config");
    let new = url_path(&text(&second), "provisioner.config");
    assert_ne!(old, new);
    assert_eq!(call(&app, "GET", &old, &[]).await.0, StatusCode::FORBIDDEN);
    assert_eq!(call(&app, "GET", &new, &[]).await.0, StatusCode::OK);
    // A callback token presented at the config endpoint is spent and flagged.
    let cb = url_path(&text(&second), "provisioner.callback");
    let cb_token = cb.split('/').nth(2).unwrap();
    assert_eq!(
        call(&app, "GET", &format!("/config/{cb_token}"), &[]).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        call(&app, "POST", &cb, &[]).await.0,
        StatusCode::FORBIDDEN,
        "spent by the misuse"
    );
    let mac = BIOS_MAC.parse().unwrap();
    let kinds: Vec<EventKind> = r
        .inventory
        .timeline(mac)
        .unwrap()
        .into_iter()
        .map(|e| e.kind())
        .collect();
    assert!(
        kinds.contains(&EventKind::TokenRejected),
        "wrong-endpoint use is on the timeline: {kinds:?}"
    );
}

#[tokio::test]
async fn unknown_machines_follow_the_policy() {
    let r = rig(UnknownPolicy::Record);
    let (st, _, body) = call(
        &app(&r),
        "GET",
        "/ipxe?mac=52-54-00-99-99-99&arch=x86_64&platform=efi",
        &[],
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    assert!(text(&body).contains("has no profile here"));
    assert!(
        r.inventory
            .get("52:54:00:99:99:99".parse().unwrap())
            .unwrap()
            .is_some(),
        "recorded"
    );

    let r = rig(UnknownPolicy::Ignore);
    let (_, _, body) = call(&app(&r), "GET", "/ipxe?mac=52-54-00-99-99-99", &[]).await;
    assert!(text(&body).contains("exit 1"));
    assert!(r.inventory.list().unwrap().is_empty(), "ignored, not recorded");

    let r = rig(UnknownPolicy::Profile("lab".into()));
    r.facts.neighbour_is("10.0.0.50", "52:54:00:99:99:99");
    let (_, _, body) = call(&app(&r), "GET", "/ipxe?mac=52-54-00-99-99-99", &[]).await;
    assert!(text(&body).contains("installing profile lab"));

    let (_, _, body) = call(&app(&r), "GET", "/ipxe?mac=garbage&uuid=%00%ff", &[]).await;
    assert!(text(&body).contains("no usable MAC"));
}

#[tokio::test]
async fn assets_support_range_etag_and_stay_in_the_cache() {
    let r = rig(UnknownPolicy::Record);
    let app = app(&r);
    let (st, h, body) = call(&app, "GET", "/assets/test-img/vmlinuz", &[]).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(h[header::CONTENT_LENGTH], "1048576");
    assert_eq!(h[header::ACCEPT_RANGES], "bytes");
    let etag = h[header::ETAG].to_str().unwrap().to_string();

    let (st, h, part) = call(
        &app,
        "GET",
        "/assets/test-img/vmlinuz",
        &[("range", "bytes=100-199")],
    )
    .await;
    assert_eq!(st, StatusCode::PARTIAL_CONTENT);
    assert_eq!(h[header::CONTENT_RANGE], "bytes 100-199/1048576");
    assert_eq!(part, body[100..200]);
    let (st, _, tail) = call(&app, "GET", "/assets/test-img/vmlinuz", &[("range", "bytes=-10")]).await;
    assert_eq!(st, StatusCode::PARTIAL_CONTENT);
    assert_eq!(tail, body[body.len() - 10..]);
    let (st, h, _) = call(
        &app,
        "GET",
        "/assets/test-img/vmlinuz",
        &[("range", "bytes=2000000-")],
    )
    .await;
    assert_eq!(st, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(h[header::CONTENT_RANGE], "bytes */1048576");
    let (st, _, _) = call(
        &app,
        "GET",
        "/assets/test-img/vmlinuz",
        &[("if-none-match", &etag)],
    )
    .await;
    assert_eq!(st, StatusCode::NOT_MODIFIED);

    for bad in [
        "/assets/test-img/..%2f..%2fimages%2ftest-img.yaml",
        "/assets/..%2fcache/vmlinuz",
        "/assets/test-img/missing",
        "/assets/other/vmlinuz",
        "/assets/test-img/%2e%2e",
        "/bin/..%2f..%2fetc%2fpasswd",
        "/api/v1/machines",
    ] {
        let (st, _, _) = call(&app, "GET", bad, &[]).await;
        assert_eq!(st, StatusCode::NOT_FOUND, "{bad}");
    }
}

#[tokio::test]
async fn first_stage_retries_dhcp_and_chains_with_identity() {
    let r = rig(UnknownPolicy::Record);
    let (st, _, body) = call(&app(&r), "GET", "/boot.ipxe", &[]).await;
    assert_eq!(st, StatusCode::OK);
    let s = text(&body);
    assert!(s.starts_with("#!ipxe\n"));
    assert!(s.contains("dhcp || dhcp || dhcp"));
    assert!(s.contains("/ipxe?mac=${mac:hexhyp}&uuid=${uuid}&arch=${buildarch}"));
}

/// Counts the writes that reach the store (each is one durable commit in redb).
#[derive(Debug)]
struct Commits {
    store: provisioner_core::inventory::MemInventory,
    writes: std::sync::atomic::AtomicUsize,
}

impl Commits {
    fn count(&self) -> usize {
        self.writes.load(std::sync::atomic::Ordering::SeqCst)
    }
    fn write(&self) {
        self.writes.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Inventory for Commits {
    fn get(&self, mac: MacAddr) -> Result<Option<Machine>, InventoryError> {
        self.store.get(mac)
    }
    fn drop_tokens(
        &self,
        expired: &dyn Fn(&provisioner_core::inventory::TokenRecord) -> bool,
        spent_before: time::OffsetDateTime,
    ) -> Result<usize, InventoryError> {
        self.write();
        self.store.drop_tokens(expired, spent_before)
    }
    fn list(&self) -> Result<Vec<Machine>, InventoryError> {
        self.store.list()
    }
    fn apply(
        &self,
        mac: MacAddr,
        change: provisioner_core::inventory::Change<'_>,
    ) -> Result<Option<Machine>, InventoryError> {
        self.write();
        self.store.apply(mac, change)
    }
    fn delete(&self, mac: MacAddr) -> Result<bool, InventoryError> {
        self.write();
        self.store.delete(mac)
    }
    fn timeline(&self, mac: MacAddr) -> Result<Vec<TimelineEvent>, InventoryError> {
        self.store.timeline(mac)
    }
    fn issue_token(&self, key: &str, record: &TokenRecord) -> Result<(), InventoryError> {
        self.write();
        self.store.issue_token(key, record)
    }
    fn live_token(&self, key: &str) -> Result<Option<TokenRecord>, InventoryError> {
        self.store.live_token(key)
    }
    fn take_token(
        &self,
        key: &str,
        now: time::OffsetDateTime,
    ) -> Result<Option<TokenRecord>, InventoryError> {
        self.write();
        self.store.take_token(key, now)
    }
    fn spent_token(&self, key: &str) -> Result<Option<SpentToken>, InventoryError> {
        self.store.spent_token(key)
    }
}

/// Issue 14: an `/ipxe` install answer is one durable commit (record, timeline
/// events and the one-time config and callback tokens together), not one per piece;
/// and the tokens it names work.
#[tokio::test]
async fn an_install_script_is_one_commit_with_its_tokens() {
    let store = std::sync::Arc::new(Commits {
        store: provisioner_core::inventory::MemInventory::new(),
        writes: Default::default(),
    });
    let r = rig_on(UnknownPolicy::Record, store.clone());
    r.facts.neighbour_is("10.0.0.50", EFI_MAC);
    let app = app(&r);
    let before = store.count();
    let (st, _, body) = call(
        &app,
        "GET",
        "/ipxe?mac=52-54-00-00-00-02&arch=x86_64&platform=efi",
        &[],
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(store.count() - before, 1, "one commit for the whole answer");
    let script = text(&body);
    let mac: MacAddr = EFI_MAC.parse().unwrap();
    let kinds: Vec<EventKind> = store.timeline(mac).unwrap().iter().map(|e| e.kind()).collect();
    assert!(
        kinds.contains(&EventKind::IpxeScriptServed) && kinds.contains(&EventKind::StateChanged),
        "{kinds:?}"
    );
    // The tokens of that commit are live: the config and the callback are served.
    let (st, _, _) = call(&app, "GET", &url_path(&script, "provisioner.config"), &[]).await;
    assert_eq!(st, StatusCode::OK, "{script}");
    let (st, _, _) = call(&app, "POST", &url_path(&script, "provisioner.callback"), &[]).await;
    assert_eq!(st, StatusCode::OK, "{script}");
}
