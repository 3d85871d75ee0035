//! Talos' `talos.config.oauth.*` device flow against the appliance (issue 12, item
//! 4), with a client that sends exactly what Talos' does: siderolabs/talos
//! `internal/app/machined/pkg/runtime/v1alpha1/platform/metal/oauth2/oauth2.go`
//! (`DeviceAuthFlow`: extra variables on both calls) over golang.org/x/oauth2
//! `deviceauth.go` (`DeviceAuth`, `DeviceAccessToken`: form bodies, an immediate
//! first poll, then one per `interval`) and `internal/token.go` (`RetrieveToken`:
//! every poll a Basic-header request and, if it fails, at once a form-only one;
//! `doTokenRoundTrip`: JSON errors with a 4xx status).

use crate::common;

use std::time::Duration;

use axum::http::StatusCode;
use common::release::{Site, api_call, events, ipxe, machine, metric, metrics, req, site, url_path};
use provisioner_core::boot::UnknownPolicy;
use provisioner_core::model::EventKind;
use serde_json::Value;

const M3: &str = "52:54:00:00:00:03";
const M4: &str = "52:54:00:00:00:04";
const U1: &str = "0d8c1d3e-1111-4000-8000-000000000001";
const U4: &str = "0d8c1d3e-4444-4000-8000-000000000004";
const GRANT: &str = "urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Adevice_code";

/// A Talos profile with the device flow for M3 and M4 (and M3's second NIC).
fn device_site(interval: u32, lifetime: u32) -> Site {
    let s = site(
        UnknownPolicy::Record,
        |d| {
            std::fs::write(
                d.join("profiles/profiles/talos-df.yaml"),
                "id: talos-df\nimage: test-img\nconfig: talos\n\
                 device_flow: { client_id: talos, scopes: [openid, config] }\n",
            )
            .unwrap();
            for (id, mac) in [("m3", M3), ("m4", M4)] {
                std::fs::write(
                    d.join(format!("profiles/groups/{id}.yaml")),
                    format!("id: {id}\nprofile: talos-df\nselector: {{ mac: \"{mac}\" }}\n"),
                )
                .unwrap();
            }
        },
        |p| {
            p.device.interval_secs = interval;
            p.device.lifetime_secs = lifetime;
            p.other_nics
                .insert(M3.parse().unwrap(), vec!["52:54:00:00:13:13".parse().unwrap()]);
        },
    );
    s.facts.neighbour_is("10.0.0.3", M3);
    s.facts.neighbour_is("10.0.0.4", M4);
    s.facts.neighbour_is("10.0.0.66", "52:54:00:66:66:66");
    s
}

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

/// Go's `url.Values.Encode`: keys sorted.
fn form(pairs: &[(&str, &str)]) -> String {
    let mut p: Vec<(String, String)> = pairs
        .iter()
        .map(|(k, v)| {
            let enc: String = form_urlencoded::byte_serialize(v.as_bytes()).collect();
            (k.to_string(), enc)
        })
        .collect();
    p.sort();
    p.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// `DeviceAuth`: POST form `client_id`, `scope`, plus Talos' extra variables.
async fn device_auth(s: &Site, peer: &str, mac: &str, uuid: &str) -> (StatusCode, Value) {
    let body = form(&[
        ("client_id", "talos"),
        ("scope", "openid config"),
        ("uuid", uuid),
        ("mac", mac),
    ]);
    let (st, h, b) = req(
        &s.boot,
        "POST",
        "/device/code",
        peer,
        &[
            ("content-type", "application/x-www-form-urlencoded"),
            ("accept", "application/json"),
        ],
        &body,
    )
    .await;
    assert_eq!(h["cache-control"], "no-store");
    (st, json(&b))
}

/// One `DeviceAccessToken` tick: the Basic-header try, then (if it failed) the
/// form-only try; returns what the client's loop sees (the last answer).
async fn poll(s: &Site, peer: &str, mac: &str, uuid: &str, device_code: &str) -> (StatusCode, Value) {
    let body = format!(
        "client_id=talos&device_code={device_code}&grant_type={GRANT}&mac={}&scope=openid+config&uuid={uuid}",
        mac.replace(':', "%3A")
    );
    let headers = [("content-type", "application/x-www-form-urlencoded")];
    // base64("talos:"): url.QueryEscape(client_id) + ":" + empty secret.
    let basic = [
        ("content-type", "application/x-www-form-urlencoded"),
        ("authorization", "Basic dGFsb3M6"),
    ];
    let (st, h, b) = req(&s.boot, "POST", "/token", peer, &basic, &body).await;
    assert_eq!(h["content-type"], "application/json");
    assert_eq!(h["cache-control"], "no-store");
    if st.is_success() {
        return (st, json(&b));
    }
    let (st, _, b) = req(&s.boot, "POST", "/token", peer, &headers, &body).await;
    (st, json(&b))
}

async fn config(s: &Site, path: &str, peer: &str, bearer: Option<&str>) -> (StatusCode, String) {
    let auth = bearer.map(|b| format!("Bearer {b}"));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", a.as_str())).collect();
    let (st, _, body) = req(&s.boot, "GET", path, peer, &headers, "").await;
    (st, body)
}

#[tokio::test]
async fn talos_sequence_is_pending_until_approved_and_the_config_needs_its_token() {
    let s = device_site(1, 600);
    let script = ipxe(&s, M3, Some(U1), "10.0.0.3").await;
    // The kernel line Talos reads (talos.dev v1.11 machine-config-oauth).
    for want in [
        "talos.config.oauth.client_id=talos",
        "talos.config.oauth.scope=openid",
        "talos.config.oauth.scope=config",
        "talos.config.oauth.device_auth_url=http://10.0.0.1:8080/device/code",
        "talos.config.oauth.token_url=http://10.0.0.1:8080/token",
        "talos.config.oauth.extra_variable=uuid",
        "talos.config.oauth.extra_variable=mac",
    ] {
        assert!(
            script.split_whitespace().any(|w| w == want),
            "{want} missing: {script}"
        );
    }
    let cfg = url_path(&script, "talos.config").unwrap();

    let (st, da) = device_auth(&s, "10.0.0.3", M3, &U1.to_uppercase()).await;
    assert_eq!(st, StatusCode::OK, "{da}");
    let device_code = da["device_code"].as_str().unwrap().to_string();
    let user_code = da["user_code"].as_str().unwrap().to_string();
    assert_eq!(device_code.len(), 64);
    assert_eq!(user_code.len(), 9);
    assert_eq!(
        (da["expires_in"].as_u64(), da["interval"].as_u64()),
        (Some(600), Some(1))
    );
    assert!(
        da["verification_uri"]
            .as_str()
            .unwrap()
            .ends_with("/ui/approvals")
    );
    let asked = events(&s, M3, EventKind::ApprovalRequested);
    assert!(
        asked[0].contains(&user_code) && asked[0].contains(U1) && asked[0].contains("10.0.0.3"),
        "{asked:?}"
    );
    assert!(!asked[0].contains(&device_code), "the device code is a secret");

    // The immediate first poll, then one per interval: pending, never slow_down.
    for _ in 0..3 {
        let (st, e) = poll(&s, "10.0.0.3", M3, U1, &device_code).await;
        assert_eq!(
            (st, e["error"].as_str()),
            (StatusCode::BAD_REQUEST, Some("authorization_pending"))
        );
        tokio::time::sleep(Duration::from_millis(1000)).await;
    }
    // No config without the token.
    let (st, body) = config(&s, &cfg, "10.0.0.3", None).await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{body}");
    assert!(
        events(&s, M3, EventKind::ConfigRefused)
            .iter()
            .any(|d| d.contains("bearer token"))
    );

    let (st, list) = api_call(&s, "GET", "/api/v1/approvals", &s.reader, None).await;
    assert_eq!(st, StatusCode::OK);
    let row = list
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["kind"] == "device_authorization")
        .unwrap();
    assert_eq!(
        (
            row["mac"].as_str(),
            row["code"].as_str(),
            row["uuid"].as_str(),
            row["peer"].as_str()
        ),
        (Some(M3), Some(user_code.as_str()), Some(U1), Some("10.0.0.3"))
    );
    let (st, v) = api_call(
        &s,
        "POST",
        &format!("/api/v1/machines/{M3}/approve"),
        &s.admin,
        Some(serde_json::json!({"code": user_code})),
    )
    .await;
    assert_eq!(
        (st, v["decided"][0]["kind"].as_str()),
        (StatusCode::OK, Some("device_authorization")),
        "{v}"
    );
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let (st, tok) = poll(&s, "10.0.0.3", M3, U1, &device_code).await;
    assert_eq!(st, StatusCode::OK, "{tok}");
    assert_eq!(tok["token_type"], "Bearer");
    let access = tok["access_token"].as_str().unwrap().to_string();
    assert!(tok["expires_in"].as_u64().unwrap() > 0);

    let (st, doc) = config(&s, &cfg, "10.0.0.3", Some(&access)).await;
    assert_eq!(st, StatusCode::OK, "{doc}");
    assert!(doc.contains("profile: talos-df"), "{doc}");
    assert_eq!(events(&s, M3, EventKind::DeviceTokenIssued).len(), 1);
    // Both are spent: the device code (a replay is invalid_grant, on the timeline)
    // and the config URL.
    let (st, e) = poll(&s, "10.0.0.3", M3, U1, &device_code).await;
    assert_eq!(
        (st, e["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
    assert!(
        events(&s, M3, EventKind::ConfigRefused)
            .iter()
            .any(|d| d.contains("presented again"))
    );
    assert_eq!(
        config(&s, &cfg, "10.0.0.3", Some(&access)).await.0,
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn denials_other_device_codes_guesses_and_fast_polls_are_refused() {
    let s = device_site(1, 600);
    metrics();
    let script3 = ipxe(&s, M3, Some(U1), "10.0.0.3").await;
    let script4 = ipxe(&s, M4, Some(U4), "10.0.0.4").await;
    let (cfg3, cfg4) = (
        url_path(&script3, "talos.config").unwrap(),
        url_path(&script4, "talos.config").unwrap(),
    );

    // M4 gets its token.
    let (_, da4) = device_auth(&s, "10.0.0.4", M4, U4).await;
    let code4 = da4["device_code"].as_str().unwrap().to_string();
    s.service
        .approve(M4.parse().unwrap(), da4["user_code"].as_str(), "tok-test")
        .unwrap();
    let (st, tok4) = poll(&s, "10.0.0.4", M4, U4, &code4).await;
    assert_eq!(st, StatusCode::OK, "{tok4}");
    let token4 = tok4["access_token"].as_str().unwrap().to_string();

    // M3 polls too fast: slow_down, the interval grows by 5 s, on the timeline.
    let (_, da3) = device_auth(&s, "10.0.0.3", M3, U1).await;
    let code3 = da3["device_code"].as_str().unwrap().to_string();
    let before = metric("provisioner_config_refused_total{stage=\"device_auth\",reason=\"slow_down\"}");
    poll(&s, "10.0.0.3", M3, U1, &code3).await;
    let (st, e) = poll(&s, "10.0.0.3", M3, U1, &code3).await;
    assert_eq!(
        (st, e["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("slow_down"))
    );
    assert!(
        events(&s, M3, EventKind::ConfigRefused)
            .iter()
            .any(|d| d.contains("interval now 6 s"))
    );
    assert!(metric("provisioner_config_refused_total{stage=\"device_auth\",reason=\"slow_down\"}") > before);

    // Another machine's token does not open M3's config, and is not spent by trying.
    let (st, body) = config(&s, &cfg3, "10.0.0.3", Some(&token4)).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    assert!(body.contains("another machine's device authorization"), "{body}");
    assert_eq!(
        config(&s, &cfg4, "10.0.0.4", Some(&token4)).await.0,
        StatusCode::OK
    );
    // A made-up bearer is refused too.
    assert_eq!(
        config(&s, &cfg3, "10.0.0.3", Some(&"ab".repeat(32))).await.0,
        StatusCode::FORBIDDEN
    );

    // Denied: access_denied (after waiting out the grown interval).
    let (st, _) = api_call(&s, "POST", &format!("/api/v1/machines/{M3}/deny"), &s.admin, None).await;
    assert_eq!(st, StatusCode::OK);
    assert!(events(&s, M3, EventKind::Denied)[0].contains("device authorization"));
    tokio::time::sleep(Duration::from_millis(6100)).await;
    let (st, e) = poll(&s, "10.0.0.3", M3, U1, &code3).await;
    assert_eq!(
        (st, e["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("access_denied"))
    );

    // Talos starts over (new device code), an operator approves, M3 gets its config.
    let (_, da3b) = device_auth(&s, "10.0.0.3", M3, U1).await;
    let code3b = da3b["device_code"].as_str().unwrap().to_string();
    s.service
        .approve(M3.parse().unwrap(), da3b["user_code"].as_str(), "tok-test")
        .unwrap();
    let (st, tok3) = poll(&s, "10.0.0.3", M3, U1, &code3b).await;
    assert_eq!(st, StatusCode::OK, "{tok3}");
    let (st, _) = config(&s, &cfg3, "10.0.0.3", tok3["access_token"].as_str()).await;
    assert_eq!(st, StatusCode::OK);

    // Guessed device codes: invalid_grant, counted, on the asker's machine.
    let (st, e) = poll(&s, "10.0.0.3", M3, U1, &"00".repeat(32)).await;
    assert_eq!(
        (st, e["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
    assert!(
        events(&s, M3, EventKind::ConfigRefused)
            .iter()
            .any(|d| d.contains("unknown device code"))
    );
    assert!(metric("provisioner_device_flow_requests_total{outcome=\"invalid_grant\"}") >= 1.0);
}

#[tokio::test]
async fn bad_device_authorization_requests_are_refused() {
    let s = device_site(1, 1);
    ipxe(&s, M3, Some(U1), "10.0.0.3").await;
    // Another host claiming M3.
    let (st, e) = device_auth(&s, "10.0.0.66", M3, U1).await;
    assert_eq!(
        (st, e["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("access_denied")),
        "{e}"
    );
    // M3 with another UUID than its pin, or a malformed one.
    let (st, e) = device_auth(&s, "10.0.0.3", M3, "0d8c1d3e-9999-4000-8000-000000000009").await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{e}");
    assert!(e["error_description"].as_str().unwrap().contains("pinned"), "{e}");
    let (st, e) = device_auth(&s, "10.0.0.3", M3, "zz").await;
    assert!(
        st == StatusCode::BAD_REQUEST && e["error_description"].as_str().unwrap().contains("malformed"),
        "{e}"
    );
    let ev = events(&s, M3, EventKind::ConfigRefused);
    assert!(
        ev.iter().any(|d| d.starts_with("device_auth: peer 10.0.0.66")),
        "{ev:?}"
    );
    // Unknown client, missing client, a machine not installing with the flow.
    let (st, _, b) = req(
        &s.boot,
        "POST",
        "/device/code",
        "10.0.0.3",
        &[],
        &format!("client_id=other&mac={M3}"),
    )
    .await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "{b}");
    assert_eq!(json(&b)["error"], "invalid_client");
    let (st, _, b) = req(&s.boot, "POST", "/device/code", "10.0.0.3", &[], "scope=x").await;
    assert_eq!(
        (st, json(&b)["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_request"))
    );
    let (st, _, b) = req(
        &s.boot,
        "POST",
        "/device/code",
        "10.0.0.2",
        &[],
        &format!("client_id=talos&mac={}", common::EFI_MAC),
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{b}");
    let (st, _, _) = req(
        &s.boot,
        "POST",
        "/device/code",
        "10.0.0.3",
        &[],
        &"x".repeat(20_000),
    )
    .await;
    assert_eq!(st, StatusCode::PAYLOAD_TOO_LARGE);
    // Talos sends its *first* NIC's MAC: a declared other NIC of M3 is M3.
    s.facts.neighbour_is("10.0.0.13", "52:54:00:00:13:13");
    let (st, da) = device_auth(&s, "10.0.0.13", "52:54:00:00:13:13", U1).await;
    assert_eq!(st, StatusCode::OK, "{da}");
    // Token requests that are not device-code grants, or name another client.
    let code = da["device_code"].as_str().unwrap();
    let (st, _, b) = req(
        &s.boot,
        "POST",
        "/token",
        "10.0.0.13",
        &[],
        &format!("grant_type=password&client_id=talos&device_code={code}"),
    )
    .await;
    assert_eq!(
        (st, json(&b)["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("unsupported_grant_type"))
    );
    let (st, _, b) = req(
        &s.boot,
        "POST",
        "/token",
        "10.0.0.13",
        &[],
        &format!("grant_type={GRANT}&client_id=other&device_code={code}"),
    )
    .await;
    assert_eq!(
        (st, json(&b)["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_client"))
    );
    // A device code polled from another host is refused and not consumed.
    s.service
        .approve(M3.parse().unwrap(), da["user_code"].as_str(), "tok-test")
        .unwrap();
    let (st, e) = poll(&s, "10.0.0.66", M3, U1, code).await;
    assert_eq!(
        (st, e["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("access_denied")),
        "{e}"
    );
    // Lifetime 1 s: past it, expired_token.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (st, e) = poll(&s, "10.0.0.13", M3, U1, code).await;
    assert_eq!(
        (st, e["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("expired_token")),
        "{e}"
    );
    assert_eq!(machine(&s, M3).pinned_uuid.as_deref(), Some(U1));
}
