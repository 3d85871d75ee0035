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
    pub fn from_tree(gitops_dir: &Path, settle: Duration) -> Result<Self, String> {
        let settings = crate::cluster::argocd::Settings::load(gitops_dir)?;
        let values = crate::gitops::tree::values(gitops_dir)?;
        let tree = crate::gitops::tree::load(gitops_dir, &values);
        if let Some(p) = tree.problems.first() {
            return Err(p.clone());
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
