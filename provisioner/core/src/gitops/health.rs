//! What Argo CD reports about an Application, read from its status the way argo-cd
//! v3.5.1 writes it (`pkg/apis/application/v1alpha1/types.go` `ApplicationStatus`):
//! `.status.sync.status` (`Synced`, `OutOfSync`, `Unknown`), `.status.health.status`
//! (gitops-engine `pkg/health/health.go`, in argo-cd v3.5.1 under `gitops-engine/`:
//! `Healthy`, `Progressing`, `Suspended`, `Degraded`, `Missing`, `Unknown`),
//! `.status.conditions` (types ending in `Error` are errors: `InvalidSpecError`,
//! `ComparisonError`, `SyncError`, `UnknownError`, `DeletionError`), the resources
//! that are `OutOfSync`, their health messages when the controller persists them
//! inline (`controller.resource.health.persist`; since v3.0 the default keeps them in
//! the app tree, `resourceHealthSource: appTree`), and a failed sync operation's
//! message (`.status.operationState`).
//!
//! The hand-off is done only when every Application it waits for is `Synced` and
//! `Healthy` with no error condition; anything else is a reason to keep waiting.

use serde_json::Value;

/// One Application as last seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppStatus {
    /// `metadata.name`.
    pub name: String,
    /// `.status.sync.status` (empty: never reconciled).
    pub sync: String,
    /// `.status.health.status` (empty: never assessed).
    pub health: String,
    /// Why it is not Synced and Healthy: error conditions, OutOfSync resources,
    /// unhealthy resources' messages, a failed operation.
    pub problems: Vec<String>,
}

impl AppStatus {
    /// Reads an Application object.
    pub fn from_application(app: &Value) -> Self {
        let s = |p: &str| app.pointer(p).and_then(Value::as_str).unwrap_or("").to_string();
        let mut problems = Vec::new();
        for c in app
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let ty = c.get("type").and_then(Value::as_str).unwrap_or("");
            if ty.ends_with("Error") {
                let msg = c.get("message").and_then(Value::as_str).unwrap_or("");
                problems.push(format!("{ty}: {msg}"));
            }
        }
        let mut out_of_sync = Vec::new();
        for r in app
            .pointer("/status/resources")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let rs = |k: &str| r.get(k).and_then(Value::as_str).unwrap_or("");
            let id = if rs("namespace").is_empty() {
                format!("{} {}", rs("kind"), rs("name"))
            } else {
                format!("{} {}/{}", rs("kind"), rs("namespace"), rs("name"))
            };
            if rs("status") == "OutOfSync" {
                out_of_sync.push(id.clone());
            }
            let health = r.pointer("/health/status").and_then(Value::as_str).unwrap_or("");
            if !health.is_empty() && health != "Healthy" {
                let msg = r.pointer("/health/message").and_then(Value::as_str).unwrap_or("");
                problems.push(if msg.is_empty() {
                    format!("{id} {health}")
                } else {
                    format!("{id} {health}: {msg}")
                });
            }
        }
        if !out_of_sync.is_empty() {
            problems.push(format!("OutOfSync: {}", out_of_sync.join(", ")));
        }
        let phase = s("/status/operationState/phase");
        if matches!(phase.as_str(), "Failed" | "Error") {
            problems.push(format!(
                "sync operation {phase}: {}",
                s("/status/operationState/message")
            ));
        }
        let health = s("/status/health/status");
        if health == "Degraded" && problems.is_empty() && s("/status/resourceHealthSource") == "appTree" {
            problems.push(
                "resource health is kept in Argo CD's app tree (v3 default): see `argocd app get`".into(),
            );
        }
        Self {
            name: s("/metadata/name"),
            sync: s("/status/sync/status"),
            health,
            problems,
        }
    }

    /// `Synced` and `Healthy`, no error condition.
    pub fn is_ready(&self) -> bool {
        self.sync == "Synced"
            && self.health == "Healthy"
            && !self.problems.iter().any(|p| p.contains("Error: "))
    }

    /// `Sync/Health` as shown in events (`-` for what Argo CD has not reported).
    pub fn state(&self) -> String {
        let dash = |s: &str| {
            if s.is_empty() {
                "-".to_string()
            } else {
                s.to_string()
            }
        };
        format!("{}/{}", dash(&self.sync), dash(&self.health))
    }
}

/// Every Application a hand-off waits for, as seen in one poll.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Report {
    /// The ones that exist, by name.
    pub apps: Vec<AppStatus>,
    /// Expected ones (from the tree) that Argo CD has not created yet.
    pub missing: Vec<String>,
}

impl Report {
    /// `None` when everything is Synced and Healthy; else why not, for operators.
    pub fn blocking(&self) -> Option<String> {
        let mut parts: Vec<String> = self
            .apps
            .iter()
            .filter(|a| !a.is_ready())
            .map(|a| {
                if a.problems.is_empty() {
                    format!("{} {}", a.name, a.state())
                } else {
                    format!("{} {} ({})", a.name, a.state(), a.problems.join("; "))
                }
            })
            .collect();
        if !self.missing.is_empty() {
            parts.push(format!("not created yet: {}", self.missing.join(", ")));
        }
        if self.apps.is_empty() && self.missing.is_empty() {
            parts.push("no Application found".into());
        }
        (!parts.is_empty()).then(|| format!("Argo CD reports {}", parts.join("; ")))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn app(status: Value) -> AppStatus {
        AppStatus::from_application(&json!({"metadata": {"name": "cilium-genmachine"}, "status": status}))
    }

    #[test]
    fn synced_and_healthy_without_error_conditions_is_ready() {
        let ok = app(
            json!({"sync": {"status": "Synced"}, "health": {"status": "Healthy"},
            "conditions": [{"type": "OrphanedResourceWarning", "message": "1 orphan"}]}),
        );
        assert!(ok.is_ready(), "{ok:?}");
        assert_eq!(ok.state(), "Synced/Healthy");
        let r = Report {
            apps: vec![ok],
            missing: vec![],
        };
        assert_eq!(r.blocking(), None);
    }

    #[test]
    fn every_reason_argo_cd_gives_is_shown() {
        let cases = [
            (json!({}), "cilium-genmachine -/-"),
            (
                json!({"sync": {"status": "OutOfSync"}, "health": {"status": "Missing"},
                       "resources": [{"kind": "DaemonSet", "namespace": "kube-system", "name": "cilium", "status": "OutOfSync"},
                                     {"kind": "ConfigMap", "namespace": "kube-system", "name": "x", "status": "Synced"}]}),
                "cilium-genmachine OutOfSync/Missing (OutOfSync: DaemonSet kube-system/cilium)",
            ),
            (
                json!({"sync": {"status": "Synced"}, "health": {"status": "Degraded"},
                       "resources": [{"kind": "Deployment", "namespace": "kube-system", "name": "cilium-operator", "status": "Synced",
                                      "health": {"status": "Degraded", "message": "Deployment \"cilium-operator\" exceeded its progress deadline"}}]}),
                "cilium-genmachine Synced/Degraded (Deployment kube-system/cilium-operator Degraded: Deployment \"cilium-operator\" exceeded its progress deadline)",
            ),
            (
                json!({"sync": {"status": "Synced"}, "health": {"status": "Degraded"}, "resourceHealthSource": "appTree"}),
                "cilium-genmachine Synced/Degraded (resource health is kept in Argo CD's app tree",
            ),
            (
                json!({"sync": {"status": "Unknown"}, "health": {"status": "Unknown"},
                       "conditions": [{"type": "ComparisonError", "message": "Failed to load target state: repository not found"}]}),
                "cilium-genmachine Unknown/Unknown (ComparisonError: Failed to load target state: repository not found)",
            ),
            (
                json!({"sync": {"status": "Unknown"}, "health": {"status": "Unknown"},
                       "conditions": [{"type": "InvalidSpecError", "message": "there are no clusters with this name: beelinc"}]}),
                "(InvalidSpecError: there are no clusters with this name: beelinc)",
            ),
            (
                json!({"sync": {"status": "OutOfSync"}, "health": {"status": "Healthy"},
                       "operationState": {"phase": "Failed", "message": "one or more objects failed to apply"}}),
                "OutOfSync/Healthy (sync operation Failed: one or more objects failed to apply)",
            ),
        ];
        for (status, want) in cases {
            let a = app(status.clone());
            assert!(!a.is_ready(), "{status}");
            let why = Report {
                apps: vec![a],
                missing: vec![],
            }
            .blocking()
            .unwrap();
            assert!(
                why.starts_with("Argo CD reports ") && why.contains(want),
                "{why}\nwant {want}"
            );
        }
        // Synced and Healthy but an error condition (a failed auto-sync) is not done.
        let a = app(
            json!({"sync": {"status": "Synced"}, "health": {"status": "Healthy"},
            "conditions": [{"type": "SyncError", "message": "Failed sync attempt"}]}),
        );
        assert!(!a.is_ready());
        let r = Report {
            apps: vec![],
            missing: vec!["traefik-genmachine".into()],
        };
        assert_eq!(
            r.blocking().as_deref(),
            Some("Argo CD reports not created yet: traefik-genmachine")
        );
        assert!(Report::default().blocking().is_some());
    }
}
