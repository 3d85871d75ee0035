//! The operator API through `tower::ServiceExt::oneshot`: every documented operation
//! needs a token, read-only tokens cannot mutate, and each endpoint's 200/404/422
//! bodies.

use crate::common;

use std::sync::{Arc, Mutex};

use axum::http::StatusCode;
use common::api::{ApiRig, TALOS_MAC, api_rig, boot, call, loopback_power};
use common::{BIOS_MAC, EFI_MAC};
use futures::future::BoxFuture;
use provisioner::cluster::seams::{NodeResetter, ResetError};
use provisioner_core::model::Machine;
use serde_json::json;

fn rig() -> ApiRig {
    let r = api_rig(None, loopback_power());
    boot(&r.service, BIOS_MAC);
    boot(&r.service, TALOS_MAC);
    r
}

/// Every operation of the served OpenAPI document, with its path made concrete.
async fn operations(r: &ApiRig) -> Vec<(String, String)> {
    let (st, doc) = call(&r.app, "GET", "/api/v1/openapi.json", None, None).await;
    assert_eq!(st, StatusCode::OK, "the document is public");
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            let concrete = path
                .replace("{mac}", BIOS_MAC)
                .replace("{action}", "on")
                .replace("{id}", "lab");
            ops.push((method.to_uppercase(), concrete));
        }
    }
    ops
}

#[tokio::test]
async fn every_documented_operation_is_authenticated() {
    let r = rig();
    let ops = operations(&r).await;
    let documented: Vec<String> = ops.iter().map(|(m, p)| format!("{m} {p}")).collect();
    for want in [
        "GET /api/v1/machines",
        "GET /api/v1/machines/52:54:00:00:00:01",
        "PATCH /api/v1/machines/52:54:00:00:00:01",
        "DELETE /api/v1/machines/52:54:00:00:00:01",
        "GET /api/v1/machines/52:54:00:00:00:01/timeline",
        "POST /api/v1/machines/52:54:00:00:00:01/reimage",
        "POST /api/v1/machines/52:54:00:00:00:01/power/on",
        "GET /api/v1/profiles",
        "GET /api/v1/profiles/lab",
        "GET /api/v1/images",
        "GET /api/v1/images/lab",
        "GET /api/v1/clusters",
        "GET /api/v1/clusters/lab",
        "POST /api/v1/clusters/lab/bootstrap/retry",
        "GET /api/v1/events",
    ] {
        assert!(
            documented.contains(&want.to_string()),
            "{want} not in the OpenAPI document: {documented:?}"
        );
    }
    for (method, path) in ops
        .iter()
        .map(|(m, p)| (m.as_str(), p.as_str()))
        .chain([("GET", "/metrics")])
    {
        let (st, body) = call(&r.app, method, path, None, None).await;
        assert_eq!(st, StatusCode::UNAUTHORIZED, "{method} {path} without a token");
        assert_eq!(body["code"], "unauthorized", "{method} {path}");
        let (st, _) = call(&r.app, method, path, Some("pvt_not-a-real-token"), None).await;
        assert_eq!(
            st,
            StatusCode::UNAUTHORIZED,
            "{method} {path} with an unknown token"
        );
        if method != "GET" {
            let (st, body) = call(&r.app, method, path, Some(&r.reader), None).await;
            assert_eq!(
                st,
                StatusCode::FORBIDDEN,
                "{method} {path} with a read-only token"
            );
            assert_eq!(body["code"], "forbidden");
        }
    }
    // Open: liveness and the API description.
    assert_eq!(
        call(&r.app, "GET", "/healthz", None, None).await.0,
        StatusCode::OK
    );
    // Failures are counted by reason (the recorder is process-wide).
    let (st, m) = call(&r.app, "GET", "/metrics", Some(&r.reader), None).await;
    assert_eq!(st, StatusCode::OK);
    let m = m.as_str().unwrap().to_string();
    for reason in ["missing", "invalid", "forbidden"] {
        assert!(
            m.contains(&format!(
                "provisioner_api_auth_failures_total{{reason=\"{reason}\"}}"
            )),
            "{reason} not counted:\n{m}"
        );
    }
    assert!(!m.contains("pvt_"), "tokens never reach metrics");
}

#[tokio::test]
async fn machines_list_filters_get_and_timeline() {
    let r = rig();
    let t = Some(r.reader.as_str());
    let (st, list) = call(&r.app, "GET", "/api/v1/machines", t, None).await;
    assert_eq!(st, StatusCode::OK);
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0]["mac"], BIOS_MAC);
    assert_eq!(list[0]["state"], "Booting");
    assert_eq!(list[0]["firmware"], "uefi");
    assert_eq!(list[0]["assigned_profile"], "lab");
    assert_eq!(list[0]["last_event"]["kind"], "state_changed");
    assert_eq!(list[1]["cluster"], "lab");

    let app = &r.app;
    let q = |s: &'static str| async move { call(app, "GET", s, t, None).await };
    assert_eq!(
        q("/api/v1/machines?profile=talos-cp")
            .await
            .1
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(q("/api/v1/machines?cluster=lab").await.1[0]["mac"], TALOS_MAC);
    assert_eq!(
        q("/api/v1/machines?state=Installed")
            .await
            .1
            .as_array()
            .unwrap()
            .len(),
        0
    );
    assert_eq!(
        q("/api/v1/machines?state=Booting")
            .await
            .1
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let (st, e) = q("/api/v1/machines?state=Sleeping").await;
    assert_eq!(
        (st, e["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("state"))
    );
    let (st, e) = q("/api/v1/machines?label=rack").await;
    assert_eq!(
        (st, e["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("label"))
    );
    let (st, e) = q("/api/v1/machines?colour=red").await;
    assert_eq!(
        (st, e["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("colour"))
    );

    let (st, m) = q("/api/v1/machines/52-54-00-00-00-01").await;
    assert_eq!(st, StatusCode::OK, "any MAC notation");
    assert_eq!(m["timeline"][0]["kind"], "ipxe_script_served");
    let (st, tl) = q("/api/v1/machines/52:54:00:00:00:01/timeline").await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(tl.as_array().unwrap().len(), 2);
    let (st, e) = q("/api/v1/machines/52:54:00:00:00:99").await;
    assert_eq!(
        (st, e["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("machine_not_found"))
    );
    let (st, _) = q("/api/v1/machines/52:54:00:00:00:99/timeline").await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, e) = q("/api/v1/machines/not-a-mac").await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        (e["code"].as_str(), e["field"].as_str()),
        (Some("invalid_mac"), Some("mac"))
    );
    let (st, e) = q("/api/v1/nothing-here").await;
    assert_eq!(
        (st, e["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
}

#[tokio::test]
async fn patch_validates_and_delete_forgets() {
    let r = rig();
    let a = Some(r.admin.as_str());
    let path = "/api/v1/machines/52:54:00:00:00:01";
    let (st, m) = call(
        &r.app,
        "PATCH",
        path,
        a,
        Some(json!({"labels": {"rack": "r1"}, "profile": "talos-cp", "boot_file": "snponly.efi", "power": {"driver": "wol"}})),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{m}");
    assert_eq!(m["labels"]["rack"], "r1");
    assert_eq!(m["assigned_profile"], "talos-cp");
    assert_eq!(m["power"]["driver"], "wol");
    assert_eq!(m["last_event"]["kind"], "machine_updated");
    // null clears; absent fields stay.
    let (_, m) = call(&r.app, "PATCH", path, a, Some(json!({"profile": null}))).await;
    assert_eq!(
        (m["profile"].is_null(), m["assigned_profile"].as_str()),
        (true, Some("lab"))
    );
    assert_eq!(m["boot_file"], "snponly.efi");

    for (body, field, code) in [
        (json!({"labels": {"mac": "x"}}), "labels.mac", "validation_failed"),
        (
            json!({"labels": {"bad key": "x"}}),
            "labels.bad key",
            "validation_failed",
        ),
        (json!({"labels": {"rack": 5}}), "labels.rack", "validation_failed"),
        (json!({"profile": "nope"}), "profile", "unknown_profile"),
        (
            json!({"boot_file": "../etc/passwd"}),
            "boot_file",
            "validation_failed",
        ),
        (json!({"colour": "red"}), "colour", "validation_failed"),
        (
            json!({"power": {"driver": "proxmox", "endpoint": "pve", "node": "n1", "vmid": 1}}),
            "power.endpoint",
            "unknown_power_endpoint",
        ),
        (
            json!({"power": {"driver": "redfish", "endpoint": "x", "system": "/etc"}}),
            "power.system",
            "validation_failed",
        ),
        (
            json!({"power": {"driver": "ipmi"}}),
            "power.driver",
            "validation_failed",
        ),
    ] {
        let (st, e) = call(&r.app, "PATCH", path, a, Some(body.clone())).await;
        assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {e}");
        assert_eq!(e["field"], field, "{body}: {e}");
        assert_eq!(e["code"], code, "{body}: {e}");
    }
    let (st, e) = call(
        &r.app,
        "PATCH",
        "/api/v1/machines/52:54:00:00:00:99",
        a,
        Some(json!({})),
    )
    .await;
    assert_eq!(
        (st, e["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("machine_not_found"))
    );

    let (st, _) = call(&r.app, "DELETE", path, a, None).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (st, _) = call(&r.app, "DELETE", path, a, None).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert!(r.inventory.get(BIOS_MAC.parse().unwrap()).unwrap().is_none());
}

#[tokio::test]
async fn catalog_and_clusters() {
    let r = rig();
    let t = Some(r.reader.as_str());
    let (st, p) = call(&r.app, "GET", "/api/v1/profiles", t, None).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(p.as_array().unwrap().len(), 2);
    let (_, p) = call(&r.app, "GET", "/api/v1/profiles/talos-cp", t, None).await;
    assert_eq!(
        (p["config"].as_str(), p["cluster"].as_str()),
        (Some("talos"), Some("lab"))
    );
    assert_eq!(p["groups"], json!(["talos"]));
    let (st, e) = call(&r.app, "GET", "/api/v1/profiles/nope", t, None).await;
    assert_eq!(
        (st, e["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("profile_not_found"))
    );
    let (_, i) = call(&r.app, "GET", "/api/v1/images/test-img", t, None).await;
    assert_eq!(i["kernel"], "vmlinuz");
    assert_eq!(
        call(&r.app, "GET", "/api/v1/images", t, None).await.1[0]["id"],
        "test-img"
    );
    let (st, e) = call(&r.app, "GET", "/api/v1/images/nope", t, None).await;
    assert_eq!(
        (st, e["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("image_not_found"))
    );

    let (st, cs) = call(&r.app, "GET", "/api/v1/clusters", t, None).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(cs[0]["name"], "lab");
    let (_, c) = call(&r.app, "GET", "/api/v1/clusters/lab", t, None).await;
    assert_eq!(c["kind"], "talos");
    assert_eq!(c["profiles"], json!(["talos-cp"]));
    assert_eq!(c["machines"][0]["mac"], TALOS_MAC);
    assert_eq!(c["states"]["Booting"], 1);
    assert_eq!(c["bootstrap"]["phase"], "unavailable");
    assert!(c["bootstrap"]["steps"].as_array().unwrap().is_empty());
    let (st, e) = call(&r.app, "GET", "/api/v1/clusters/nope", t, None).await;
    assert_eq!(
        (st, e["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("cluster_not_found"))
    );
}

/// The cluster view shows the newest cluster event (why it waits), and an admin can
/// retry a Failed cluster: back to the failed step with a fresh clock; refusals are
/// 409 with stable codes.
#[derive(Debug, Default)]
struct FakeReset {
    calls: Mutex<Vec<(String, Option<String>)>>,
}

impl NodeResetter for FakeReset {
    fn reset<'a>(
        &'a self,
        m: &'a Machine,
        cluster: Option<&'a str>,
    ) -> BoxFuture<'a, Result<String, ResetError>> {
        self.calls
            .lock()
            .unwrap()
            .push((m.mac.to_string(), cluster.map(str::to_string)));
        Box::pin(async { Ok("reset STATE, EPHEMERAL; rebooting".to_string()) })
    }
}

#[tokio::test]
async fn reimage_and_power() {
    let fake = Arc::new(FakeReset::default());
    let r = api_rig(Some(fake.clone()), loopback_power());
    boot(&r.service, BIOS_MAC);
    boot(&r.service, TALOS_MAC);
    let a = Some(r.admin.as_str());

    // Talos node: state, then Reset through the resetter; no power cycle.
    let (st, v) = call(
        &r.app,
        "POST",
        &format!("/api/v1/machines/{TALOS_MAC}/reimage"),
        a,
        None,
    )
    .await;
    assert_eq!(st, StatusCode::ACCEPTED, "{v}");
    assert_eq!(v["state"], "ReimageRequested");
    let steps: Vec<(&str, &str)> = v["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["step"].as_str().unwrap(), s["status"].as_str().unwrap()))
        .collect();
    assert_eq!(steps, [("state", "done"), ("talos_reset", "done")]);
    assert_eq!(
        *fake.calls.lock().unwrap(),
        [(TALOS_MAC.to_string(), Some("lab".to_string()))]
    );
    // The next boot installs again with a fresh token.
    let script = boot(&r.service, TALOS_MAC);
    assert!(script.contains("/config/"), "{script}");

    // Plain node without a power driver: the manual steps say what to do.
    let (st, v) = call(
        &r.app,
        "POST",
        &format!("/api/v1/machines/{BIOS_MAC}/reimage"),
        a,
        None,
    )
    .await;
    assert_eq!(st, StatusCode::ACCEPTED);
    assert_eq!(v["steps"][1]["step"], "netboot_next");
    assert_eq!(v["steps"][2]["step"], "power_cycle");
    assert_eq!(v["steps"][2]["status"], "manual");
    let (_, tl) = call(
        &r.app,
        "GET",
        &format!("/api/v1/machines/{BIOS_MAC}/timeline"),
        a,
        None,
    )
    .await;
    let kinds: Vec<&str> = tl
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert!(
        kinds.ends_with(&["reimage_requested", "state_changed", "power_action"]),
        "{kinds:?}"
    );

    let (st, v) = call(
        &r.app,
        "POST",
        &format!("/api/v1/machines/{BIOS_MAC}/power/cycle"),
        a,
        None,
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(
        (v["driver"].as_str(), v["status"].as_str()),
        (Some("manual"), Some("manual"))
    );
    // Wake-on-LAN (sent to 127.0.0.1:9 here) cannot switch off: 409.
    call(
        &r.app,
        "PATCH",
        &format!("/api/v1/machines/{BIOS_MAC}"),
        a,
        Some(json!({"power": {"driver": "wol"}})),
    )
    .await;
    let (st, v) = call(
        &r.app,
        "POST",
        &format!("/api/v1/machines/{BIOS_MAC}/power/on"),
        a,
        None,
    )
    .await;
    assert_eq!((st, v["status"].as_str()), (StatusCode::OK, Some("done")), "{v}");
    let (st, v) = call(
        &r.app,
        "POST",
        &format!("/api/v1/machines/{BIOS_MAC}/power/off"),
        a,
        None,
    )
    .await;
    assert_eq!(
        (st, v["code"].as_str()),
        (StatusCode::CONFLICT, Some("power_action_unsupported"))
    );
    let (st, v) = call(
        &r.app,
        "POST",
        &format!("/api/v1/machines/{BIOS_MAC}/power/reboot"),
        a,
        None,
    )
    .await;
    assert_eq!(
        (st, v["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("action"))
    );
    let (st, _) = call(
        &r.app,
        "POST",
        "/api/v1/machines/52:54:00:00:00:99/power/on",
        a,
        None,
    )
    .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, _) = call(
        &r.app,
        "POST",
        "/api/v1/machines/52:54:00:00:00:99/reimage",
        a,
        None,
    )
    .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn talos_reimage_without_a_talos_client_says_so() {
    let r = rig();
    let (st, v) = call(
        &r.app,
        "POST",
        &format!("/api/v1/machines/{TALOS_MAC}/reimage"),
        Some(&r.admin),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::ACCEPTED);
    assert_eq!(v["steps"][1]["step"], "talos_reset");
    assert_eq!(v["steps"][1]["status"], "unavailable");
    assert!(v["steps"][1]["detail"].as_str().unwrap().contains("talosctl"));
}

#[tokio::test]
async fn boot_loop_stops_install_and_shows_in_the_api() {
    let r = rig();
    // The rig's guard: more than 3 install scripts in 10 minutes.
    for _ in 0..3 {
        assert!(boot(&r.service, EFI_MAC).contains("kernel"));
    }
    let halted = boot(&r.service, EFI_MAC);
    let again = boot(&r.service, EFI_MAC);
    assert!(
        again.contains("exit") && !again.contains("kernel"),
        "still local boot: {again}"
    );
    assert!(halted.contains("boot loop"), "{halted}");
    assert!(!halted.contains("kernel"));
    let t = Some(r.reader.as_str());
    let (_, l) = call(&r.app, "GET", "/api/v1/machines?state=BootLoop", t, None).await;
    assert_eq!(l[0]["mac"], EFI_MAC);
    let (_, tl) = call(
        &r.app,
        "GET",
        &format!("/api/v1/machines/{EFI_MAC}/timeline"),
        t,
        None,
    )
    .await;
    assert!(
        tl.as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "boot_loop_detected")
    );
    // An operator re-image clears it: the next boot installs.
    call(
        &r.app,
        "POST",
        &format!("/api/v1/machines/{EFI_MAC}/reimage"),
        Some(&r.admin),
        None,
    )
    .await;
    assert!(boot(&r.service, EFI_MAC).contains("kernel"));
}

#[tokio::test]
async fn events_stream_carries_timeline_writes() {
    use axum::body::Body;
    use axum::http::{Request, header};
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    let r = rig();
    let req = Request::get(format!("/api/v1/events?mac={EFI_MAC}"))
        .header(header::AUTHORIZATION, format!("Bearer {}", r.reader))
        .body(Body::empty())
        .unwrap();
    let resp = r.app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()[header::CONTENT_TYPE], "text/event-stream");
    let mut body = resp.into_body();
    boot(&r.service, BIOS_MAC); // filtered out
    boot(&r.service, EFI_MAC);
    let mut text = String::new();
    while !text.contains("state_changed") {
        let frame = tokio::time::timeout(std::time::Duration::from_secs(5), body.frame())
            .await
            .expect("an event within 5 s")
            .unwrap()
            .unwrap();
        if let Ok(d) = frame.into_data() {
            text.push_str(&String::from_utf8_lossy(&d));
        }
    }
    assert!(text.starts_with("event: timeline\ndata: {"), "{text}");
    assert!(text.contains(EFI_MAC) && !text.contains(BIOS_MAC), "{text}");
    assert!(text.contains("\"kind\":\"ipxe_script_served\""), "{text}");
    let (st, e) = call(&r.app, "GET", "/api/v1/events?mac=zz", Some(&r.reader), None).await;
    assert_eq!(
        (st, e["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("mac"))
    );
}

/// One dashboard request from 127.0.0.1: (status, headers, body).
async fn ui(
    app: &axum::Router,
    method: &str,
    path: &str,
    cookie: Option<&str>,
    form: &str,
) -> (StatusCode, axum::http::HeaderMap, String) {
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    let mut b = axum::http::Request::builder().method(method).uri(path);
    if let Some(c) = cookie {
        b = b.header("cookie", c);
    }
    if !form.is_empty() {
        b = b.header("content-type", "application/x-www-form-urlencoded");
    }
    let mut req = b.body(axum::body::Body::from(form.to_string())).unwrap();
    req.extensions_mut()
        .insert(axum::extract::ConnectInfo::<std::net::SocketAddr>(
            "127.0.0.1:4000".parse().unwrap(),
        ));
    let resp = app.clone().oneshot(req).await.unwrap();
    let (st, h) = (resp.status(), resp.headers().clone());
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (st, h, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn dashboard_machines_come_in_pages() {
    let r = rig();
    let now = time::OffsetDateTime::now_utc();
    let total = r.inventory.list().unwrap().len() + 7;
    for n in 0..7u8 {
        r.inventory
            .put(&Machine::discovered(
                provisioner_core::model::MacAddr([0x52, 0x54, 0, 0, 0x70, n]),
                now,
            ))
            .unwrap();
    }
    let (st, h, _) = ui(&r.app, "POST", "/ui/login", None, &format!("token={}", r.reader)).await;
    assert_eq!(st, StatusCode::SEE_OTHER);
    let cookie = h["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let rows = |page: &str| page.matches("<a href=\"/ui/machines/").count();

    let (st, _, first) = ui(&r.app, "GET", "/ui/machines?limit=3", Some(&cookie), "").await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(rows(&first), 3, "{first}");
    assert!(
        first.contains(&format!("1–3 of {total}")) && first.contains("offset=3&amp;limit=3"),
        "{first}"
    );
    assert!(!first.contains("52:54:00:00:70:06"), "only the first page");

    let last_page = format!("/ui/machines?offset={}&limit=3", total - 1);
    let (_, _, last) = ui(&r.app, "GET", &last_page, Some(&cookie), "").await;
    assert_eq!(rows(&last), 1, "{last}");
    assert!(
        last.contains("52:54:00:00:70:06") && last.contains("rel=\"prev\""),
        "{last}"
    );
    assert!(!last.contains("rel=\"next\""), "{last}");

    // Without a query: the first page of the default size (everything here).
    let (_, _, all) = ui(&r.app, "GET", "/ui/machines", Some(&cookie), "").await;
    assert_eq!(rows(&all), total);
}
