//! Argo CD's report on a cluster's Applications, read from the ArgoCD host's API
//! (`GET .../namespaces/argocd/applications`): the hand-off waits until it says every
//! one is Synced and Healthy (`provisioner_core::cluster::argo_wait`).
//!
//! Which Applications: the ones the tree will create for the cluster (its plain
//! Applications and what its ApplicationSets generate, `crate::gitops::tree`; the
//! root one for the host), so a hand-off cannot finish before Argo CD has created
//! them all, plus any other Application Argo CD holds for that cluster (added in Git
//! since). An Application is the cluster's when its destination names it (the one
//! name everything uses, `core::gitops::destination`), or, for the host, the
//! in-cluster address or name.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams};
use provisioner_core::gitops::destination::{IN_CLUSTER_NAME, IN_CLUSTER_SERVER, Registry};
use provisioner_core::gitops::health::{AppStatus, Report};
use serde_json::Value;

use super::Settings;
use super::manifest::NAMESPACE;
use super::objects::ROOT_APPLICATION;
use crate::cluster::seams::CallError;
use crate::gitops::tree::TreeError;

/// Whether `app` is deployed to `cluster` (`host`: the cluster ArgoCD runs on).
pub fn targets(app: &Value, cluster: &str, host: &str) -> bool {
    let d = |k: &str| {
        app.pointer(&format!("/spec/destination/{k}"))
            .and_then(Value::as_str)
    };
    if d("name") == Some(cluster) {
        return true;
    }
    cluster == host
        && (d("name") == Some(IN_CLUSTER_NAME)
            || d("server").map(|s| s.trim_end_matches('/')) == Some(IN_CLUSTER_SERVER))
}

/// The Applications the tree under `gitops_dir` creates for `cluster`, by name.
pub fn expected(
    gitops_dir: &Path,
    settings: &Settings,
    cluster: &str,
) -> Result<BTreeSet<String>, TreeError> {
    let values = crate::gitops::tree::values(gitops_dir)?;
    let tree = crate::gitops::tree::load(gitops_dir, &values);
    if let Some(p) = tree.problems.first() {
        return Err(TreeError::Problem(p.clone()));
    }
    let ctx = tree.context(
        &settings.repository.url,
        &settings.argocd.host,
        Registry::default(),
    );
    let mut names: BTreeSet<String> = tree
        .applications(&ctx)
        .iter()
        .filter(|o| targets(&o.value, cluster, &settings.argocd.host))
        .filter_map(|o| {
            o.value
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .collect();
    if cluster == settings.argocd.host {
        names.insert(ROOT_APPLICATION.to_string());
    }
    Ok(names)
}

/// The report for `cluster` through `host_client` (the ArgoCD host's API).
pub async fn report(
    host_client: Client,
    expected: &BTreeSet<String>,
    cluster: &str,
    host: &str,
) -> Result<Report, CallError> {
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("argoproj.io", "v1alpha1", "Application"),
        "applications",
    );
    let api: Api<DynamicObject> = Api::namespaced_with(host_client, NAMESPACE, &ar);
    let list = api
        .list(&ListParams::default())
        .await
        .map_err(|e| CallError::Api(format!("listing Applications in {NAMESPACE}: {e}")))?;
    let mut apps: BTreeMap<String, AppStatus> = BTreeMap::new();
    for o in list.items {
        let v = serde_json::to_value(&o).unwrap_or(Value::Null);
        let name = o.metadata.name.clone().unwrap_or_default();
        if expected.contains(&name) || targets(&v, cluster, host) {
            apps.insert(name, AppStatus::from_application(&v));
        }
    }
    let missing = expected
        .iter()
        .filter(|n| !apps.contains_key(*n))
        .cloned()
        .collect();
    Ok(Report {
        apps: apps.into_values().collect(),
        missing,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn an_application_is_the_clusters_by_its_destination() {
        let app = |d: Value| json!({"spec": {"destination": d}});
        assert!(targets(&app(json!({"name": "beelink"})), "beelink", "genmachine"));
        assert!(!targets(
            &app(json!({"name": "beelink"})),
            "genmachine",
            "genmachine"
        ));
        assert!(targets(
            &app(json!({"name": "in-cluster"})),
            "genmachine",
            "genmachine"
        ));
        assert!(targets(
            &app(json!({"server": "https://kubernetes.default.svc/"})),
            "genmachine",
            "genmachine"
        ));
        assert!(!targets(
            &app(json!({"name": "in-cluster"})),
            "beelink",
            "genmachine"
        ));
    }

    #[test]
    fn the_shipped_tree_creates_these_applications_for_each_cluster() {
        let gitops = Path::new(env!("CARGO_MANIFEST_DIR")).join("../gitops");
        let settings = Settings::load(&gitops).unwrap();
        let host = expected(&gitops, &settings, "genmachine").unwrap();
        for want in [
            "root",
            "apps",
            "argocd",
            "projects",
            "cluster-config-genmachine",
            "cilium-genmachine",
            "longhorn-genmachine",
        ] {
            assert!(host.contains(want), "{want} not in {host:?}");
        }
        assert!(!host.contains("cilium-beelink") && !host.contains("cluster-config-beelink"));
        let beelink = expected(&gitops, &settings, "beelink").unwrap();
        assert!(beelink.contains("cluster-config-beelink") && beelink.contains("vault-beelink"));
        assert!(!beelink.contains("root"), "{beelink:?}");
    }
}
