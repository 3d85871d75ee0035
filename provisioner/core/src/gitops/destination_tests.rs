//! Argo CD v3.5.1's destination rule (`util/argo/argo.go` `GetDestinationServer` /
//! `GetDestinationCluster`, `util/db/cluster.go` `GetClusterServersByName` /
//! `GetCluster`), case by case, with Argo CD's own messages.

use serde_json::json;

use super::*;

fn secret(secret: &str, name: &str, server: &str) -> ClusterSecret {
    ClusterSecret {
        secret: secret.into(),
        name: name.into(),
        server: server.into(),
    }
}

/// What the appliance registers: the host under its own name at the in-cluster
/// address, another cluster at its API server.
fn appliance_registry() -> Registry {
    Registry {
        secrets: vec![
            secret("cluster-genmachine", "genmachine", IN_CLUSTER_SERVER),
            secret("cluster-beelink", "beelink", "https://10.0.40.10:6443"),
        ],
        in_cluster_enabled: true,
    }
}

/// (case, registry, name, server, Argo CD's answer)
type Case<'a> = (
    &'a str,
    &'a Registry,
    Option<&'a str>,
    Option<&'a str>,
    Result<String, String>,
);

#[test]
fn argo_cd_v3_5_1_get_destination_server_table() {
    let reg = appliance_registry();
    let mut dup = reg.clone();
    dup.secrets
        .push(secret("my-beelink", "beelink", "https://10.0.40.99:6443"));
    let mut named_in_cluster = reg.clone();
    named_in_cluster
        .secrets
        .push(secret("cluster-local", "in-cluster", "https://10.9.9.9:6443"));
    let disabled = Registry {
        in_cluster_enabled: false,
        ..reg.clone()
    };
    let ok = |s: &str| Ok::<String, String>(s.to_string());
    let err = |s: &str| Err::<String, String>(s.to_string());
    let cases: Vec<Case<'_>> = vec![
        (
            "registered name",
            &reg,
            Some("beelink"),
            None,
            ok("https://10.0.40.10:6443"),
        ),
        (
            "host under its own name",
            &reg,
            Some("genmachine"),
            None,
            ok(IN_CLUSTER_SERVER),
        ),
        // GetClusterServersByName: no Secret is *named* in-cluster, so the special
        // case still applies although the local server is registered as genmachine
        // (argo-cd #25534, v3.3.0; before, that Secret disabled the name).
        (
            "in-cluster special case",
            &reg,
            Some("in-cluster"),
            None,
            ok(IN_CLUSTER_SERVER),
        ),
        (
            "a Secret named in-cluster wins over the special case",
            &named_in_cluster,
            Some("in-cluster"),
            None,
            ok("https://10.9.9.9:6443"),
        ),
        (
            "in-cluster disabled",
            &disabled,
            Some("in-cluster"),
            None,
            err("there are no clusters with this name: in-cluster"),
        ),
        (
            "unknown name",
            &reg,
            Some("prod"),
            None,
            err("there are no clusters with this name: prod"),
        ),
        (
            "duplicate name",
            &dup,
            Some("beelink"),
            None,
            err("there are 2 clusters with the same name: [https://10.0.40.10:6443 https://10.0.40.99:6443]"),
        ),
        (
            "name and server together",
            &reg,
            Some("beelink"),
            Some("https://10.0.40.10:6443"),
            err(
                "application destination can't have both name and server defined: beelink https://10.0.40.10:6443",
            ),
        ),
        (
            "neither",
            &reg,
            None,
            None,
            err("Destination server missing from app spec"),
        ),
        (
            "registered server, trailing slash",
            &reg,
            None,
            Some("https://10.0.40.10:6443/"),
            ok("https://10.0.40.10:6443"),
        ),
        (
            "in-cluster server",
            &reg,
            None,
            Some(IN_CLUSTER_SERVER),
            ok(IN_CLUSTER_SERVER),
        ),
        (
            "unknown server",
            &reg,
            None,
            Some("https://10.1.1.1:6443"),
            err(
                "error getting cluster by server \"https://10.1.1.1:6443\": rpc error: code = NotFound desc = cluster \"https://10.1.1.1:6443\" not found",
            ),
        ),
        (
            "in-cluster server disabled",
            &disabled,
            None,
            Some(IN_CLUSTER_SERVER),
            err(
                "error getting cluster by server \"https://kubernetes.default.svc\": rpc error: code = NotFound desc = cluster \"https://kubernetes.default.svc\" is disabled",
            ),
        ),
    ];
    for (case, reg, name, server, want) in cases {
        let got = reg.resolve(name, server).map_err(|e| e.to_string());
        assert_eq!(got, want, "{case}");
    }
}

#[test]
fn cluster_secrets_are_read_like_argo_cd_reads_them() {
    let s = json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "cluster-beelink", "labels": {"argocd.argoproj.io/secret-type": "cluster"}},
        "stringData": {"name": "beelink", "server": "https://10.0.40.10:6443/"}});
    assert_eq!(
        ClusterSecret::from_secret(&s),
        Some(secret("cluster-beelink", "beelink", "https://10.0.40.10:6443"))
    );
    // data is base64, as the API server returns it.
    let d = json!({"kind": "Secret",
        "metadata": {"name": "c", "labels": {"argocd.argoproj.io/secret-type": "cluster"}},
        "data": {"name": "YmVlbGluaw==", "server": "aHR0cHM6Ly94"}});
    assert_eq!(
        ClusterSecret::from_secret(&d),
        Some(secret("c", "beelink", "https://x"))
    );
    let repo = json!({"kind": "Secret",
        "metadata": {"name": "r", "labels": {"argocd.argoproj.io/secret-type": "repository"}}});
    assert_eq!(ClusterSecret::from_secret(&repo), None);
    // A Secret without a name is found by server only.
    let nameless = Registry {
        secrets: vec![secret("c", "", "https://x")],
        in_cluster_enabled: true,
    };
    assert!(nameless.servers_by_name("").is_empty());
    assert_eq!(nameless.resolve(None, Some("https://x")), Ok("https://x".into()));
}
