//! The GitOps objects the appliance applies after ArgoCD is up: the repository
//! Secret, cluster Secrets (argocd-gitops.md §9), the AppProjects from
//! `gitops/core/appProjects`, and the root Application (§7.2).

use std::path::Path;

use kube::api::DynamicObject;
use serde_json::{Value, json};

use super::Settings;
use super::manifest::NAMESPACE;

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

/// Registers the host cluster under its own name (server
/// `https://kubernetes.default.svc`), so `destination.name: <host>` works like
/// `in-cluster` (argo `util/db/cluster.go`).
pub fn in_cluster_secret(name: &str) -> DynamicObject {
    cluster(
        name,
        "https://kubernetes.default.svc",
        json!({"tlsClientConfig": {"insecure": false}}),
    )
}

/// Registers another cluster from its admin kubeconfig's current context: server,
/// CA and client certificate/key (already base64 PEM in a kubeconfig, as ArgoCD
/// wants them).
pub fn cluster_secret(name: &str, kubeconfig: &[u8]) -> Result<DynamicObject, String> {
    let text = std::str::from_utf8(kubeconfig).map_err(|e| format!("kubeconfig of {name}: {e}"))?;
    let kc: Value = serde_saphyr::from_str(text).map_err(|e| format!("kubeconfig of {name}: {e}"))?;
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
    let user_name = ctx.get("user").and_then(Value::as_str).unwrap_or("");
    let cl = find("clusters", cl_name)
        .and_then(|c| c.get("cluster").cloned())
        .ok_or_else(|| format!("kubeconfig of {name}: no cluster"))?;
    let user = find("users", user_name)
        .and_then(|u| u.get("user").cloned())
        .unwrap_or(Value::Null);
    let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
    let server = s(&cl, "server").ok_or_else(|| format!("kubeconfig of {name}: no server"))?;
    let mut tls = json!({"insecure": false});
    for (from, to, v) in [
        ("certificate-authority-data", "caData", &cl),
        ("client-certificate-data", "certData", &user),
        ("client-key-data", "keyData", &user),
    ] {
        if let Some(x) = s(v, from) {
            tls[to] = json!(x);
        }
    }
    let mut config = json!({"tlsClientConfig": tls});
    if let Some(token) = s(&user, "token") {
        config["bearerToken"] = json!(token);
    }
    Ok(cluster(name, &server, config))
}

/// Every AppProject in `<gitops>/core/appProjects/*.yaml`, namespace `argocd`.
pub fn app_projects(gitops_dir: &Path) -> Result<Vec<DynamicObject>, String> {
    let dir = gitops_dir.join("core").join("appProjects");
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().and_then(|e| e.to_str()) == Some("yaml"))
        .collect();
    paths.sort();
    let mut out = Vec::new();
    for p in paths {
        let text = std::fs::read_to_string(&p).map_err(|e| format!("{}: {e}", p.display()))?;
        let docs: Vec<Value> = serde_saphyr::from_str_multiple_with_options(
            &text,
            serde_saphyr::options! { strict_booleans: true },
        )
        .map_err(|e| format!("{}: {e}", p.display()))?;
        for d in docs
            .into_iter()
            .filter(|d| d.get("kind").and_then(Value::as_str) == Some("AppProject"))
        {
            let mut o: DynamicObject =
                serde_json::from_value(d).map_err(|e| format!("{}: {e}", p.display()))?;
            o.metadata.namespace = Some(NAMESPACE.to_string());
            out.push(o);
        }
    }
    Ok(out)
}

/// The root app-of-apps: syncs `gitops/bootstrap` (one directory per cluster) into
/// the host's `argocd` namespace, with server-side apply so ArgoCD can manage its own
/// install later (argocd-gitops.md §3.4, §7.2).
pub fn root_application(s: &Settings) -> DynamicObject {
    object(json!({
        "apiVersion": "argoproj.io/v1alpha1", "kind": "Application",
        "metadata": {"name": "root", "namespace": NAMESPACE,
                     "finalizers": ["resources-finalizer.argocd.argoproj.io"]},
        "spec": {
            "project": "argocd",
            "source": {"repoURL": s.repository.url, "targetRevision": s.repository.revision,
                       "path": "gitops/bootstrap", "directory": {"recurse": true}},
            "destination": {"name": "in-cluster", "namespace": NAMESPACE},
            "syncPolicy": {"automated": {"prune": true, "selfHeal": true},
                           "syncOptions": ["ServerSideApply=true"]},
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_secret_from_a_talos_style_kubeconfig() {
        let kc = br#"apiVersion: v1
kind: Config
clusters:
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
        let s = cluster_secret("genmachine", kc).unwrap();
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(
            v["metadata"]["labels"]["argocd.argoproj.io/secret-type"],
            "cluster"
        );
        assert_eq!(v["stringData"]["server"], "https://10.0.30.10:6443");
        let config: Value = serde_json::from_str(v["stringData"]["config"].as_str().unwrap()).unwrap();
        assert_eq!(config["tlsClientConfig"]["caData"], "Q0E=");
        assert_eq!(config["tlsClientConfig"]["certData"], "Q1JU");
        assert_eq!(config["tlsClientConfig"]["keyData"], "S0VZ");
        assert!(cluster_secret("x", b"kind: Config\n").is_err());
    }
}
