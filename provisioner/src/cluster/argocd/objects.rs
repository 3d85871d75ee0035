//! The GitOps objects the appliance applies after ArgoCD is up: the repository
//! Secret, cluster Secrets (argocd-gitops.md §9), the AppProjects from
//! `gitops/core/appProjects`, and the root Application (§7.2).

use std::path::Path;

use kube::api::DynamicObject;
use serde_json::{Value, json};

use super::Settings;
use super::manifest::NAMESPACE;
use crate::gitops::tree::TreeError;

fn object(v: Value) -> DynamicObject {
    serde_json::from_value(v).expect("objects built here always deserialize")
}

/// The repository credential Secret (`argocd.argoproj.io/secret-type: repository`).
/// The repository is public, so it carries only the URL.
pub fn repository_secret(s: &Settings) -> DynamicObject {
    object(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "repo-gitops", "namespace": NAMESPACE,
                     "labels": {"argocd.argoproj.io/secret-type": "repository"}},
        "type": "Opaque",
        "stringData": {"type": "git", "name": "gitops", "url": s.repository.url},
    }))
}

fn cluster(name: &str, server: &str, config: Value) -> DynamicObject {
    object(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": format!("cluster-{name}"), "namespace": NAMESPACE,
                     "labels": {"argocd.argoproj.io/secret-type": "cluster"}},
        "type": "Opaque",
        "stringData": {"name": name, "server": server, "config": config.to_string()},
    }))
}

/// Registers the host cluster under its own name at the in-cluster address: the
/// one name the tree, the root Application and this Secret use for it, so nothing
/// depends on Argo CD's `in-cluster` special case (`util/db/cluster.go`
/// `GetClusterServersByName` at v3.5.1; `core::gitops::destination`).
pub fn in_cluster_secret(name: &str) -> DynamicObject {
    cluster(
        name,
        provisioner_core::gitops::destination::IN_CLUSTER_SERVER,
        json!({"tlsClientConfig": {"insecure": false}}),
    )
}

/// Where a cluster's API is: the server URL and CA of a kubeconfig's current context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `https://<host>:6443`.
    pub server: String,
    /// The CA bundle, base64 PEM (as a kubeconfig's `certificate-authority-data` and
    /// ArgoCD's `caData` both carry it); `None` trusts the system roots.
    pub ca_data: Option<String>,
}

/// Why a kubeconfig names no usable server.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct EndpointError(pub String);

/// The server and CA of `kubeconfig`'s current context (the first context and
/// cluster when none is current). Credentials are not read.
pub fn endpoint(kubeconfig: &[u8]) -> Result<Endpoint, EndpointError> {
    let bad = |e: &dyn std::fmt::Display| EndpointError(e.to_string());
    let text = std::str::from_utf8(kubeconfig).map_err(|e| bad(&e))?;
    let kc: Value = serde_saphyr::from_str(text).map_err(|e| bad(&e))?;
    let current = kc.get("current-context").and_then(Value::as_str).unwrap_or("");
    let find = |list: &str, want: &str| -> Option<Value> {
        let items = kc.get(list)?.as_array()?;
        items
            .iter()
            .find(|i| want.is_empty() || i.get("name").and_then(Value::as_str) == Some(want))
            .cloned()
    };
    let ctx = find("contexts", current)
        .and_then(|c| c.get("context").cloned())
        .unwrap_or(Value::Null);
    let cl_name = ctx.get("cluster").and_then(Value::as_str).unwrap_or("");
    let cl = find("clusters", cl_name)
        .and_then(|c| c.get("cluster").cloned())
        .ok_or_else(|| bad(&"no cluster"))?;
    let s = |k: &str| cl.get(k).and_then(Value::as_str).map(str::to_string);
    Ok(Endpoint {
        server: s("server").ok_or_else(|| bad(&"no server"))?,
        ca_data: s("certificate-authority-data"),
    })
}

/// The ArgoCD cluster Secret registering `name` at `at` with a bearer token (the
/// `argocd-manager` service-account token, [`super::manager`]), in the declarative
/// format (argo `docs/operator-manual/declarative-setup.md` §Clusters): no client
/// certificate or key, which would expire.
pub fn cluster_secret(name: &str, at: &Endpoint, bearer_token: &str) -> DynamicObject {
    let mut tls = json!({"insecure": false});
    if let Some(ca) = &at.ca_data {
        tls["caData"] = json!(ca);
    }
    cluster(
        name,
        &at.server,
        json!({"bearerToken": bearer_token, "tlsClientConfig": tls}),
    )
}

/// Every AppProject of the tree (the `core/appProjects` chart rendered with
/// `settings.yaml`, as Argo CD renders it), namespace `argocd`: applied before the
/// root Application, whose project they define.
pub fn app_projects(gitops_dir: &Path) -> Result<Vec<DynamicObject>, TreeError> {
    let values = crate::gitops::tree::values(gitops_dir)?;
    let tree = crate::gitops::tree::load(gitops_dir, &values);
    if let Some(p) = tree.problems.first() {
        return Err(TreeError::Problem(p.clone()));
    }
    let mut out = Vec::new();
    for o in tree.of_kind("AppProject") {
        let mut d: DynamicObject = serde_json::from_value(o.value.clone())
            .map_err(|e| TreeError::Problem(format!("{}: {e}", o.file)))?;
        d.metadata.namespace = Some(NAMESPACE.to_string());
        out.push(d);
    }
    if out.is_empty() {
        return Err(TreeError::Problem(format!(
            "{}: no AppProject in the tree",
            gitops_dir.display()
        )));
    }
    Ok(out)
}

/// The root app-of-apps: the `gitops/bootstrap` Helm chart with `settings.yaml` as
/// its values (the repository is templated into every object from there), synced
/// into the host's `argocd` namespace, addressed by the name the host is registered
/// under (never the `in-cluster` special case), with server-side apply so ArgoCD can
/// manage its own install later (argocd-gitops.md §3.4, §7.2).
pub fn root_application(s: &Settings) -> DynamicObject {
    object(json!({
        "apiVersion": "argoproj.io/v1alpha1", "kind": "Application",
        "metadata": {"name": ROOT_APPLICATION, "namespace": NAMESPACE,
                     "finalizers": ["resources-finalizer.argocd.argoproj.io"]},
        "spec": {
            "project": "argocd",
            "source": {"repoURL": s.repository.url, "targetRevision": s.repository.revision,
                       "path": "gitops/bootstrap", "helm": {"valueFiles": ["../settings.yaml"]}},
            "destination": {"name": s.argocd.host, "namespace": NAMESPACE},
            "syncPolicy": {"automated": {"prune": true, "selfHeal": true},
                           "syncOptions": ["ServerSideApply=true"]},
        },
    }))
}

/// The name of the root Application.
pub const ROOT_APPLICATION: &str = "root";

#[cfg(test)]
mod tests {
    use super::*;

    const TALOS_KUBECONFIG: &[u8] = br#"apiVersion: v1
kind: Config
clusters:
- name: other
  cluster:
    server: https://10.0.99.10:6443
- name: genmachine
  cluster:
    server: https://10.0.30.10:6443
    certificate-authority-data: Q0E=
users:
- name: admin@genmachine
  user:
    client-certificate-data: Q1JU
    client-key-data: S0VZ
contexts:
- context:
    cluster: genmachine
    namespace: default
    user: admin@genmachine
  name: admin@genmachine
current-context: admin@genmachine
"#;

    #[test]
    fn endpoint_of_the_current_context_without_credentials() {
        let at = endpoint(TALOS_KUBECONFIG).unwrap();
        assert_eq!(
            at,
            Endpoint {
                server: "https://10.0.30.10:6443".into(),
                ca_data: Some("Q0E=".into())
            }
        );
        assert!(endpoint(b"kind: Config\n").is_err());
        assert!(endpoint(b"\xff").is_err());
        let no_server = b"clusters:\n- name: a\n  cluster: {}\ncontexts: []\n";
        assert!(endpoint(no_server).is_err());
    }

    #[test]
    fn cluster_secret_carries_the_token_and_ca_and_no_client_key() {
        let at = endpoint(TALOS_KUBECONFIG).unwrap();
        let v = serde_json::to_value(cluster_secret("genmachine", &at, "sa.jwt.token")).unwrap();
        assert_eq!(
            (v["apiVersion"].as_str(), v["kind"].as_str()),
            (Some("v1"), Some("Secret"))
        );
        assert_eq!(v["metadata"]["name"], "cluster-genmachine");
        assert_eq!(v["metadata"]["namespace"], "argocd");
        assert_eq!(
            v["metadata"]["labels"],
            json!({"argocd.argoproj.io/secret-type": "cluster"})
        );
        assert_eq!(v["type"], "Opaque");
        let data = v["stringData"].as_object().unwrap();
        let mut keys: Vec<&str> = data.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["config", "name", "server"]);
        assert_eq!(data["name"], "genmachine");
        assert_eq!(data["server"], "https://10.0.30.10:6443");
        let config: Value = serde_json::from_str(data["config"].as_str().unwrap()).unwrap();
        assert_eq!(
            config,
            json!({"bearerToken": "sa.jwt.token",
                   "tlsClientConfig": {"insecure": false, "caData": "Q0E="}})
        );
        let text = v.to_string();
        for absent in ["certData", "keyData", "Q1JU", "S0VZ"] {
            assert!(!text.contains(absent), "{absent} in {text}");
        }
        // Without a CA in the kubeconfig ArgoCD falls back to the system roots.
        let bare = Endpoint {
            server: "https://x:6443".into(),
            ca_data: None,
        };
        let v = serde_json::to_value(cluster_secret("x", &bare, "t")).unwrap();
        let config: Value = serde_json::from_str(v["stringData"]["config"].as_str().unwrap()).unwrap();
        assert_eq!(config["tlsClientConfig"], json!({"insecure": false}));
    }
}
