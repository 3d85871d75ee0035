//! A scripted Argo CD application controller inside the fake Kubernetes API
//! ([`super::fake_kube`]): it writes the status an Application would get, in the shape
//! argo-cd v3.5.1 writes it (`pkg/apis/application/v1alpha1/types.go`
//! `ApplicationStatus`; health codes from `gitops-engine/pkg/health/health.go`).
//!
//! - Syncing the root Application creates the Applications the tree holds (its plain
//!   ones and what its ApplicationSets generate, `crate::gitops::tree`), `settle`
//!   later, as the app-of-apps and the ApplicationSet controller would.
//! - Every Application's destination is resolved with Argo CD's own rule against the
//!   cluster Secrets stored in `argocd` and `argocd-cm`'s `cluster.inClusterEnabled`
//!   (`provisioner_core::gitops::destination`): one Argo CD refuses reports
//!   `Unknown/Unknown` with an `InvalidSpecError` condition, as its controller does
//!   (`util/argo/argo.go` `ValidatePermissions`, `controller/appcontroller.go`).
//! - Otherwise it reports `OutOfSync/Progressing` for `settle` after it appeared,
//!   then its scripted [`Outcome`] (default Synced and Healthy), which a test can
//!   change at any time.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use provisioner_core::gitops::destination::{ClusterSecret, Registry};
use serde_json::{Value, json};

/// What the controller makes an Application report once settled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// `Synced` / `Healthy`.
    Healthy,
    /// `Synced` / `Degraded`, the resource's health message persisted inline (as
    /// with `controller.resource.health.persist: "true"`).
    Degraded {
        /// `Kind namespace/name`, e.g. `Deployment traefik/traefik`.
        resource: String,
        /// The resource's health message.
        message: String,
    },
    /// Stuck `Unknown/Unknown` with a `ComparisonError` condition (the repository
    /// cannot be read).
    Unknown(String),
    /// `OutOfSync` / `Missing` with the resource listed `OutOfSync`.
    OutOfSync(String),
}

/// The scripted controller.
#[derive(Debug)]
pub struct FakeArgo {
    children: Vec<Value>,
    settle: Duration,
    outcomes: Mutex<BTreeMap<String, Outcome>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl FakeArgo {
    /// A controller whose root Application creates the Applications of the tree at
    /// `gitops_dir` (rendered with its `settings.yaml`).
    pub fn from_tree(gitops_dir: &Path, settle: Duration) -> Result<Self, crate::gitops::tree::TreeError> {
        let settings = crate::cluster::argocd::Settings::load(gitops_dir)?;
        let values = crate::gitops::tree::values(gitops_dir)?;
        let tree = crate::gitops::tree::load(gitops_dir, &values);
        if let Some(p) = tree.problems.first() {
            return Err(crate::gitops::tree::TreeError::Problem(p.clone()));
        }
        let ctx = tree.context(
            &settings.repository.url,
            &settings.argocd.host,
            Registry::default(),
        );
        Ok(Self {
            children: tree.applications(&ctx).into_iter().map(|o| o.value).collect(),
            settle,
            outcomes: Mutex::default(),
        })
    }

    /// From now on `app` reports `outcome` (once settled).
    pub fn set(&self, app: &str, outcome: Outcome) {
        lock(&self.outcomes).insert(app.to_string(), outcome);
    }

    /// The root Application `root` was applied at `now`: its children appear
    /// `settle` later (keyed `Application/<ns>/<name>`, with the time they appear).
    pub(crate) fn children_of_root(&self, now: Instant) -> Vec<(String, Value, Instant)> {
        self.children
            .iter()
            .map(|c| {
                let ns = c
                    .pointer("/metadata/namespace")
                    .and_then(Value::as_str)
                    .unwrap_or("argocd");
                let name = c.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("");
                (format!("Application/{ns}/{name}"), c.clone(), now + self.settle)
            })
            .collect()
    }

    /// `app` (which appeared at `since`) with the status the controller writes at
    /// `now`, given the cluster Secrets and ConfigMaps stored in `objects`.
    pub(crate) fn with_status(
        &self,
        mut app: Value,
        since: Instant,
        now: Instant,
        objects: &BTreeMap<String, (Value, Instant)>,
    ) -> Value {
        let name = app
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let dest = app.pointer("/spec/destination").cloned().unwrap_or(Value::Null);
        let status = match registry(objects).resolve_value(&dest) {
            Err(e) => json!({
                "sync": {"status": "Unknown"}, "health": {"status": "Unknown"},
                "conditions": [{"type": "InvalidSpecError", "message": e.to_string()}],
            }),
            Ok(_) if now < since + self.settle => json!({
                "sync": {"status": "OutOfSync"}, "health": {"status": "Progressing"},
            }),
            Ok(_) => {
                let outcome = lock(&self.outcomes)
                    .get(&name)
                    .cloned()
                    .unwrap_or(Outcome::Healthy);
                outcome_status(&outcome)
            }
        };
        app["status"] = status;
        app
    }
}

fn resource(id: &str) -> Value {
    let (kind, rest) = id.split_once(' ').unwrap_or(("Deployment", id));
    let (ns, name) = rest.split_once('/').unwrap_or(("", rest));
    let group = if matches!(kind, "Deployment" | "DaemonSet" | "StatefulSet") {
        "apps"
    } else {
        ""
    };
    json!({"group": group, "version": "v1", "kind": kind, "namespace": ns, "name": name})
}

fn outcome_status(o: &Outcome) -> Value {
    match o {
        Outcome::Healthy => json!({"sync": {"status": "Synced"}, "health": {"status": "Healthy"}}),
        Outcome::Degraded { resource: r, message } => {
            let mut res = resource(r);
            res["status"] = json!("Synced");
            res["health"] = json!({"status": "Degraded", "message": message});
            json!({"sync": {"status": "Synced"}, "health": {"status": "Degraded"}, "resources": [res]})
        }
        Outcome::Unknown(message) => json!({
            "sync": {"status": "Unknown"}, "health": {"status": "Unknown"},
            "conditions": [{"type": "ComparisonError", "message": message}],
        }),
        Outcome::OutOfSync(r) => {
            let mut res = resource(r);
            res["status"] = json!("OutOfSync");
            json!({"sync": {"status": "OutOfSync"}, "health": {"status": "Missing"}, "resources": [res]})
        }
    }
}

/// The clusters Argo CD knows from what is stored in `argocd`.
fn registry(objects: &BTreeMap<String, (Value, Instant)>) -> Registry {
    let secrets = objects
        .iter()
        .filter(|(k, _)| k.starts_with("Secret/argocd/"))
        .filter_map(|(_, (v, _))| ClusterSecret::from_secret(v))
        .collect();
    let in_cluster_enabled = objects
        .get("ConfigMap/argocd/argocd-cm")
        .and_then(|(v, _)| {
            v.pointer("/data/cluster.inClusterEnabled")
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .is_none_or(|v| v != "false");
    Registry {
        secrets,
        in_cluster_enabled,
    }
}

/// An Application as a GET at `now` sees it: `None` before it appears (children of
/// the root appear `settle` after it), else with the controller's status when one
/// runs (without one, Applications never get a status: no Argo CD is running).
pub(crate) fn view(
    argo: Option<&FakeArgo>,
    obj: &Value,
    at: Instant,
    now: Instant,
    objects: &BTreeMap<String, (Value, Instant)>,
) -> Option<Value> {
    if now < at {
        return None;
    }
    Some(match argo {
        Some(a) => a.with_status(obj.clone(), at, now, objects),
        None => obj.clone(),
    })
}

/// `Sync/Health` of a viewed Application, for the journal.
pub(crate) fn state(app: &Value) -> String {
    provisioner_core::gitops::health::AppStatus::from_application(app).state()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(name: &str, cluster: &str, server: &str) -> (String, (Value, Instant)) {
        (
            format!("Secret/argocd/{name}"),
            (
                json!({"apiVersion": "v1", "kind": "Secret",
                       "metadata": {"name": name, "namespace": "argocd",
                                    "labels": {"argocd.argoproj.io/secret-type": "cluster"}},
                       "stringData": {"name": cluster, "server": server}}),
                Instant::now(),
            ),
        )
    }

    /// The controller refuses what Argo CD v3.5.1 refuses (`util/argo/argo.go`
    /// `GetDestinationServer`, `util/db/cluster.go` `GetClusterServersByName`), from
    /// the cluster Secrets and `argocd-cm` the fake API server holds.
    #[test]
    fn destinations_resolve_against_the_stored_cluster_secrets_as_argo_cd_v3_5_1() {
        let argo = FakeArgo {
            children: Vec::new(),
            settle: Duration::ZERO,
            outcomes: Mutex::default(),
        };
        let mut objects: BTreeMap<String, (Value, Instant)> = [
            secret(
                "cluster-genmachine",
                "genmachine",
                "https://kubernetes.default.svc",
            ),
            secret("cluster-beelink", "beelink", "https://10.0.40.10:6443"),
        ]
        .into_iter()
        .collect();
        let app = |dest: Value| json!({"metadata": {"name": "a"}, "spec": {"destination": dest}});
        let status = |objects: &BTreeMap<String, (Value, Instant)>, dest: Value| {
            let now = Instant::now();
            let v = argo.with_status(app(dest), now, now, objects);
            let msg = v
                .pointer("/status/conditions/0/message")
                .and_then(Value::as_str)
                .map(str::to_string);
            (fake_argo_state(&v), msg)
        };
        let healthy = ("Synced/Healthy".to_string(), None);
        assert_eq!(status(&objects, json!({"name": "genmachine"})), healthy);
        assert_eq!(status(&objects, json!({"name": "in-cluster"})), healthy);
        let refused = |m: &str| ("Unknown/Unknown".to_string(), Some(m.to_string()));
        assert_eq!(
            status(&objects, json!({"name": "prod"})),
            refused("there are no clusters with this name: prod")
        );
        assert_eq!(
            status(
                &objects,
                json!({"name": "beelink", "server": "https://10.0.40.10:6443"})
            ),
            refused(
                "application destination can't have both name and server defined: beelink https://10.0.40.10:6443"
            )
        );
        let (k, v) = secret("beelink-again", "beelink", "https://10.0.40.99:6443");
        objects.insert(k, v);
        assert_eq!(
            status(&objects, json!({"name": "beelink"})),
            // In the order the index holds them (here: by Secret name).
            refused(
                "there are 2 clusters with the same name: [https://10.0.40.99:6443 https://10.0.40.10:6443]"
            )
        );
        objects.insert(
            "ConfigMap/argocd/argocd-cm".into(),
            (
                json!({"data": {"cluster.inClusterEnabled": "false"}}),
                Instant::now(),
            ),
        );
        assert_eq!(
            status(&objects, json!({"name": "in-cluster"})),
            refused("there are no clusters with this name: in-cluster")
        );
    }

    fn fake_argo_state(v: &Value) -> String {
        state(v)
    }
}
