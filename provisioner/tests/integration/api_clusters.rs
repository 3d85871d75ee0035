//! Cluster views through the operator API (`tower::ServiceExt::oneshot`): the last
//! cluster event (why a bootstrap waits) and retrying a Failed bootstrap (admin only,
//! 404/409 codes, events and metric).

use crate::common;

use std::sync::Arc;

use axum::http::StatusCode;
use common::BIOS_MAC;
use common::api::{ApiRig, TALOS_MAC, api_rig, boot, call, loopback_power};

fn rig() -> ApiRig {
    let r = api_rig(None, loopback_power());
    boot(&r.service, BIOS_MAC);
    boot(&r.service, TALOS_MAC);
    r
}

#[tokio::test]
async fn cluster_last_event_and_bootstrap_retry() {
    use provisioner::ops::bootstrap_view::StoreBootstrap;
    use provisioner_core::cluster::bootstrap::{BootstrapState, Step};
    use provisioner_core::cluster::{ClusterEvent, ClusterEventKind, ClusterStore, MemClusterStore};

    let r = rig();
    // Documented: the new path and the last_event schema.
    let doc: serde_json::Value = serde_json::from_str(&provisioner::http::api::openapi_json()).unwrap();
    let op = &doc["paths"]["/api/v1/clusters/{id}/bootstrap/retry"]["post"];
    for code in ["202", "403", "404", "409"] {
        assert!(op["responses"][code].is_object(), "{code} not documented: {op:#}");
    }
    let schemas = &doc["components"]["schemas"];
    assert!(
        schemas["BootstrapStatus"]["properties"]["last_event"].is_object(),
        "{schemas:#}"
    );
    assert!(
        schemas["LastEvent"]["properties"]["detail"].is_object(),
        "{schemas:#}"
    );
    let store = Arc::new(MemClusterStore::default());
    let app = provisioner::http::api::router(provisioner::http::api::ApiState {
        bootstrap: Arc::new(StoreBootstrap(store.clone())),
        ..r.state.clone()
    });
    let (admin, reader) = (Some(r.admin.as_str()), Some(r.reader.as_str()));
    let retry = "/api/v1/clusters/lab/bootstrap/retry";
    // Never started: nothing to retry, no event.
    let (st, e) = call(&app, "POST", retry, admin, None).await;
    assert_eq!(
        (st, e["code"].as_str()),
        (StatusCode::CONFLICT, Some("cluster_not_failed"))
    );
    let (_, c) = call(&app, "GET", "/api/v1/clusters/lab", reader, None).await;
    assert_eq!(c["bootstrap"]["last_event"], serde_json::Value::Null);

    let t0 = time::OffsetDateTime::now_utc() - time::Duration::hours(1);
    let mut s = BootstrapState::new("lab", t0);
    s.step = Step::WaitEtcd;
    let waiting = ClusterEvent {
        at: t0,
        kind: ClusterEventKind::Waiting,
        detail: "etcd member talos-2 is still a learner".into(),
    };
    store.save(&s, &[waiting]).unwrap();
    let (st, c) = call(&app, "GET", "/api/v1/clusters/lab", reader, None).await;
    assert_eq!(st, StatusCode::OK);
    let last = &c["bootstrap"]["last_event"];
    assert_eq!(last["kind"], "waiting");
    assert_eq!(last["detail"], "etcd member talos-2 is still a learner");
    assert_eq!(
        last["at"].as_str().map(|a| time::OffsetDateTime::parse(
            a,
            &time::format_description::well_known::Rfc3339
        )
        .unwrap()),
        Some(t0)
    );
    let (_, cs) = call(&app, "GET", "/api/v1/clusters", reader, None).await;
    assert_eq!(cs[0]["bootstrap"]["last_event"]["kind"], "waiting");
    // The dashboard's clusters page says it too.
    let reader_id = r
        .state
        .tokens
        .list()
        .unwrap()
        .into_iter()
        .find(|t| t.role == provisioner_core::apitoken::Role::ReadOnly)
        .unwrap()
        .id;
    let session = r.state.sessions.open(
        provisioner::http::api::auth::Caller {
            role: provisioner_core::apitoken::Role::ReadOnly,
            token_id: reader_id,
        },
        &provisioner::service::token_key(reader.unwrap()),
    );
    let req = axum::http::Request::get("/ui/clusters")
        .header("cookie", format!("provisioner_session={session}"))
        .body(axum::body::Body::empty())
        .unwrap();
    let resp = tower::ServiceExt::oneshot(app.clone(), req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let html = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .unwrap()
        .to_bytes();
    let html = String::from_utf8_lossy(&html);
    assert!(
        html.contains("waiting: etcd member talos-2 is still a learner"),
        "{html}"
    );
    // Running: 409.
    let (st, e) = call(&app, "POST", retry, admin, None).await;
    assert_eq!(
        (st, e["code"].as_str()),
        (StatusCode::CONFLICT, Some("cluster_not_failed"))
    );

    // Failed at WaitEtcd (as the workflow records it).
    s.step = Step::Failed;
    s.failed_step = Some(Step::WaitEtcd);
    s.failure = Some("step WaitEtcd timed out after 600s".into());
    store.save(&s, &[]).unwrap();
    let (st, e) = call(&app, "POST", retry, reader, None).await;
    assert_eq!(
        (st, e["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("forbidden"))
    );
    assert_eq!(
        store.load("lab").unwrap().unwrap().step,
        Step::Failed,
        "a reader changes nothing"
    );
    let (st, e) = call(&app, "POST", "/api/v1/clusters/nope/bootstrap/retry", admin, None).await;
    assert_eq!(
        (st, e["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("cluster_not_found"))
    );
    let (st, b) = call(&app, "POST", retry, admin, None).await;
    assert_eq!(st, StatusCode::ACCEPTED, "{b}");
    assert_eq!(b["phase"], "running");
    let running: Vec<&str> = b["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["status"] == "running")
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(running, ["WaitEtcd"]);
    let after = store.load("lab").unwrap().unwrap();
    assert_eq!(
        (after.step, after.failure, after.failed_step),
        (Step::WaitEtcd, None, None)
    );
    assert!(after.step_started > t0, "a fresh step clock");
    let kinds: Vec<ClusterEventKind> = store.events("lab").unwrap().iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds[kinds.len() - 2..],
        [ClusterEventKind::Retried, ClusterEventKind::StepChanged]
    );
    let (_, c) = call(&app, "GET", "/api/v1/clusters/lab", reader, None).await;
    assert_eq!(c["bootstrap"]["last_event"]["kind"], "step_changed");
    assert!(
        c["bootstrap"]["last_event"]["detail"]
            .as_str()
            .unwrap()
            .starts_with("Failed -> WaitEtcd")
    );
    // Retried once: a second retry is refused.
    let (st, e) = call(&app, "POST", retry, admin, None).await;
    assert_eq!(
        (st, e["code"].as_str()),
        (StatusCode::CONFLICT, Some("cluster_not_failed"))
    );
    // Without a bootstrap workflow (the default rig): 409 too.
    let (st, e) = call(&r.app, "POST", retry, admin, None).await;
    assert_eq!(
        (st, e["code"].as_str()),
        (StatusCode::CONFLICT, Some("bootstrap_unavailable"))
    );
    // Counted.
    let (_, m) = call(&app, "GET", "/metrics", reader, None).await;
    assert!(
        m.as_str()
            .unwrap()
            .contains("provisioner_cluster_retries_total{outcome=\"retried\"}"),
        "{m}"
    );
}

#[tokio::test]
async fn a_cluster_with_placeholder_macs_says_it_is_not_armed() {
    let r = rig();
    std::fs::write(
        r.dir.path().join("infra/example.yaml"),
        "clusterName: example\nnodes:\n  - {hostname: n1, ipAddress: 192.168.1.151, mac: '02:00:00:00:01:01'}\n  \
         - {hostname: n2, ipAddress: 192.168.1.152, mac: '52:54:00:00:01:02'}\n",
    )
    .unwrap();
    // infra/ is read once, when the daemon starts: the API state is built after the file.
    let app = provisioner::http::api::router(provisioner::http::api::ApiState {
        clusters: common::api::cluster_files(&r.dir.path().join("infra")).into(),
        ..r.state.clone()
    });
    let (st, cs) = call(&app, "GET", "/api/v1/clusters", Some(&r.reader), None).await;
    assert_eq!(st, StatusCode::OK);
    let by_name = |n: &str| {
        cs.as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == n)
            .unwrap()
            .clone()
    };
    let ex = by_name("example");
    assert_eq!(ex["armed"], false);
    assert_eq!(
        ex["not_armed"],
        "cluster not armed: replace the placeholder MACs (n1 02:00:00:00:01:01)"
    );
    assert_eq!(by_name("lab")["armed"], true);
    assert_eq!(by_name("lab")["not_armed"], serde_json::Value::Null);
    // The dashboard's clusters page says it.
    let reader_id = r
        .state
        .tokens
        .list()
        .unwrap()
        .into_iter()
        .find(|t| t.role == provisioner_core::apitoken::Role::ReadOnly)
        .unwrap()
        .id;
    let session = r.state.sessions.open(
        provisioner::http::api::auth::Caller {
            role: provisioner_core::apitoken::Role::ReadOnly,
            token_id: reader_id,
        },
        &provisioner::service::token_key(&r.reader),
    );
    let req = axum::http::Request::get("/ui/clusters")
        .header("cookie", format!("provisioner_session={session}"))
        .body(axum::body::Body::empty())
        .unwrap();
    let resp = tower::ServiceExt::oneshot(app.clone(), req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let html = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .unwrap()
        .to_bytes();
    let html = String::from_utf8_lossy(&html);
    assert!(
        html.contains("cluster not armed: replace the placeholder MACs (n1 02:00:00:00:01:01)"),
        "{html}"
    );
}
