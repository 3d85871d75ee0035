//! Cluster credential downloads and DHCP leases through the operator API router:
//! talosconfig/kubeconfig for admin tokens only (read-only 403, none 401), stable 404
//! codes, documented in the OpenAPI document; `/api/v1/leases` needs a token.

use crate::common;

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use common::api::{ApiRig, api_rig, call, loopback_power};
use http_body_util::BodyExt;
use provisioner::http::api;
use provisioner::ops::credentials::StoreCredentials;
use provisioner_core::cluster::{KubeconfigStore, MemKubeconfigs};
use provisioner_core::dhcp::lease::{Lease, LeaseState, LeaseStore, MemLeases};
use provisioner_core::talos::store::{MemSecretStore, SecretStore};
use provisioner_core::talos::{TalosCluster, TalosNode};
use tower::ServiceExt;

const K0S: &str = "distribution: k0s\nclusterName: beelink\nk0sVersion: v1.36.3+k0s.2\nflatcarVersion: 4459.2.0\n\
                   nodes: [{hostname: c1, controlPlane: true, ipAddress: 10.0.0.21}]\n";

struct Creds {
    rig: ApiRig,
    app: axum::Router,
    kubeconfigs: Arc<MemKubeconfigs>,
    leases: Arc<MemLeases>,
    os_ca: String,
}

fn rig() -> Creds {
    let rig = api_rig(None, loopback_power());
    let talos = TalosCluster {
        cluster_name: "lab".into(),
        nodes: vec![TalosNode {
            hostname: "cp1".into(),
            ip_address: "10.0.0.11".into(),
            control_plane: true,
            ..Default::default()
        }],
        ..Default::default()
    };
    let secrets = Arc::new(MemSecretStore::new());
    let bundle = provisioner::pki::talos::generate(time::OffsetDateTime::now_utc()).unwrap();
    secrets.put("lab", &bundle).unwrap();
    let k0s = provisioner::os::k0s::parse_cluster(K0S).unwrap();
    let k0s_clusters = [("beelink".to_string(), k0s)].into();
    let k0s_store = Arc::new(provisioner_core::k0s::store::MemSecretStore::default());
    provisioner::os::k0s::ensure_secrets(&k0s_clusters, k0s_store.as_ref(), time::OffsetDateTime::now_utc())
        .unwrap();
    let kubeconfigs = Arc::new(MemKubeconfigs::default());
    let leases = Arc::new(MemLeases::new());
    let mut state = rig.state.clone();
    state.credentials = Arc::new(StoreCredentials {
        talos: [("lab".to_string(), talos)].into(),
        talos_secrets: Some(secrets),
        kubeconfigs: kubeconfigs.clone(),
        k0s: k0s_clusters,
        k0s_secrets: Some(k0s_store),
    });
    state.leases = leases.clone();
    Creds {
        app: api::router(state),
        rig,
        kubeconfigs,
        leases,
        os_ca: bundle.certs.os.crt.clone(),
    }
}

#[tokio::test]
async fn credentials_are_for_admins_only_with_stable_404_codes() {
    let c = rig();
    let (admin, reader) = (Some(c.rig.admin.as_str()), Some(c.rig.reader.as_str()));
    for path in [
        "/api/v1/clusters/lab/talosconfig",
        "/api/v1/clusters/lab/kubeconfig",
        "/api/v1/clusters/beelink/kubeconfig",
    ] {
        let (st, e) = call(&c.app, "GET", path, None, None).await;
        assert_eq!(
            (st, e["code"].as_str()),
            (StatusCode::UNAUTHORIZED, Some("unauthorized")),
            "{path}"
        );
        let (st, e) = call(&c.app, "GET", path, reader, None).await;
        assert_eq!(
            (st, e["code"].as_str()),
            (StatusCode::FORBIDDEN, Some("forbidden")),
            "{path}"
        );
        assert!(!e.to_string().contains("PRIVATE KEY"), "{path}");
    }

    // A fresh os:admin talosconfig from the bundle, endpoints from infra/.
    let req = Request::get("/api/v1/clusters/lab/talosconfig")
        .header(header::AUTHORIZATION, format!("Bearer {}", c.rig.admin))
        .body(Body::empty())
        .unwrap();
    let resp = c.app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()[header::CACHE_CONTROL], "no-store");
    assert_eq!(resp.headers()[header::CONTENT_TYPE], "application/yaml");
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let tc: serde_json::Value = serde_saphyr::from_slice(&body).unwrap();
    assert_eq!(tc["context"], "lab");
    assert_eq!(
        tc["contexts"]["lab"]["endpoints"],
        serde_json::json!(["10.0.0.11"])
    );
    assert_eq!(tc["contexts"]["lab"]["ca"].as_str(), Some(c.os_ca.as_str()));
    for k in ["crt", "key"] {
        assert!(
            tc["contexts"]["lab"][k].as_str().is_some_and(|v| !v.is_empty()),
            "{k}"
        );
    }

    // Talos kubeconfig: 404 until the orchestrator stored one, then exactly it.
    let (st, e) = call(&c.app, "GET", "/api/v1/clusters/lab/kubeconfig", admin, None).await;
    assert_eq!(
        (st, e["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("kubeconfig_not_available"))
    );
    let doc = "apiVersion: v1\nkind: Config\nclusters: []\n";
    c.kubeconfigs.put("lab", doc.as_bytes()).unwrap();
    let (st, v) = call(&c.app, "GET", "/api/v1/clusters/lab/kubeconfig", admin, None).await;
    assert_eq!((st, v.as_str()), (StatusCode::OK, Some(doc)));

    // k0s: minted from the appliance's PKI, pointing at the controller.
    let (st, v) = call(&c.app, "GET", "/api/v1/clusters/beelink/kubeconfig", admin, None).await;
    assert_eq!(st, StatusCode::OK);
    let kc: serde_json::Value = serde_saphyr::from_str(v.as_str().unwrap()).unwrap();
    assert_eq!(kc["kind"], "Config");
    assert_eq!(kc["clusters"][0]["cluster"]["server"], "https://10.0.0.21:6443");
    assert!(kc["users"][0]["user"]["client-key-data"].as_str().is_some());
    let (st, e) = call(&c.app, "GET", "/api/v1/clusters/beelink/talosconfig", admin, None).await;
    assert_eq!(
        (st, e["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("talosconfig_not_available"))
    );
    for what in ["talosconfig", "kubeconfig"] {
        let (st, e) = call(
            &c.app,
            "GET",
            &format!("/api/v1/clusters/nope/{what}"),
            admin,
            None,
        )
        .await;
        assert_eq!(
            (st, e["code"].as_str()),
            (StatusCode::NOT_FOUND, Some("cluster_not_found"))
        );
    }
}

#[tokio::test]
async fn leases_need_a_token_and_are_documented() {
    let c = rig();
    c.leases
        .put(&Lease {
            mac: "52:54:00:00:00:09".parse().unwrap(),
            ip: "10.0.0.50".parse().unwrap(),
            expires: 4_000_000_000,
            hostname: Some("n9".into()),
            state: LeaseState::Active,
        })
        .unwrap();
    let (st, e) = call(&c.app, "GET", "/api/v1/leases", None, None).await;
    assert_eq!(
        (st, e["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("unauthorized"))
    );
    let (st, v) = call(&c.app, "GET", "/api/v1/leases", Some(&c.rig.reader), None).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v[0]["mac"], "52:54:00:00:00:09");
    assert_eq!(v[0]["ip"], "10.0.0.50");
    assert_eq!(v[0]["state"], "active");

    let (_, doc) = call(&c.app, "GET", "/api/v1/openapi.json", None, None).await;
    for p in [
        "/api/v1/leases",
        "/api/v1/clusters/{id}/talosconfig",
        "/api/v1/clusters/{id}/kubeconfig",
    ] {
        assert!(doc["paths"][p]["get"].is_object(), "{p} not documented");
    }
    assert_eq!(
        doc["paths"]["/api/v1/clusters/{id}/kubeconfig"]["get"]["responses"]["403"]["description"],
        "Not an admin token"
    );
    assert!(doc["components"]["schemas"]["Lease"].is_object());
}
