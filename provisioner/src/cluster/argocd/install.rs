//! Applying ArgoCD and the GitOps objects with server-side apply (one field manager,
//! `force`, argocd-gitops.md §4-§5): Namespace → CRDs → Established → the rest of the
//! manifest → Deployments/StatefulSet ready → repository Secret, cluster Secrets,
//! AppProjects → root Application. Readiness is polled with GET, each wait bounded.

use std::time::Duration;

use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::Value;

use super::manifest::{InstallManifest, NAMESPACE, Resources, Scope};

/// The field manager every appliance apply uses (≤ 128 characters).
pub const FIELD_MANAGER: &str = "provisioner";

/// Workloads that must be ready before the root Application is applied.
pub const AWAITED: [(&str, &str); 4] = [
    ("Deployment", "argocd-server"),
    ("Deployment", "argocd-repo-server"),
    ("Deployment", "argocd-applicationset-controller"),
    ("StatefulSet", "argocd-application-controller"),
];

/// Why the install stopped.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// An apply or read failed.
    #[error("{what}: {source}")]
    Kube {
        /// The object.
        what: String,
        /// kube's error.
        source: kube::Error,
    },
    /// A wait ran out of time.
    #[error("timed out after {secs}s waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long.
        secs: u64,
    },
    /// An object cannot be applied as written.
    #[error("{0}")]
    Invalid(String),
}

/// Applies objects to one cluster.
#[derive(Clone)]
pub struct Installer {
    client: Client,
    resources: Resources,
    /// Per wait (CRDs established, each workload ready).
    pub wait_timeout: Duration,
    /// Between readiness polls.
    pub poll: Duration,
}

impl std::fmt::Debug for Installer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Installer")
            .field("wait_timeout", &self.wait_timeout)
            .field("poll", &self.poll)
            .finish_non_exhaustive()
    }
}

impl Installer {
    /// An installer resolving kinds with `resources` (no API discovery).
    pub fn new(client: Client, resources: Resources) -> Self {
        Self {
            client,
            resources,
            wait_timeout: Duration::from_secs(600),
            poll: Duration::from_millis(500),
        }
    }

    fn api(&self, obj: &DynamicObject) -> Result<(Api<DynamicObject>, String), InstallError> {
        let (ar, scope) = self
            .resources
            .resolve(obj)
            .map_err(|e| InstallError::Invalid(e.0))?;
        let name = obj.name_any();
        Ok(match scope {
            Scope::Cluster => (Api::all_with(self.client.clone(), &ar), name),
            Scope::Namespaced => {
                let ns = obj
                    .metadata
                    .namespace
                    .clone()
                    .unwrap_or_else(|| NAMESPACE.to_string());
                (Api::namespaced_with(self.client.clone(), &ns, &ar), name)
            }
        })
    }

    /// Server-side applies one object with the appliance's field manager and force.
    pub async fn apply(&self, obj: &DynamicObject) -> Result<(), InstallError> {
        let (api, name) = self.api(obj)?;
        let what = describe(obj);
        tracing::debug!(object = %what, "server-side apply");
        api.patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(obj),
        )
        .await
        .map_err(|source| InstallError::Kube { what, source })?;
        Ok(())
    }

    /// Polls `obj` until `ready` holds for it.
    pub async fn wait_for(&self, obj: &DynamicObject, ready: fn(&Value) -> bool) -> Result<(), InstallError> {
        let (api, name) = self.api(obj)?;
        let what = describe(obj);
        let poll = async {
            loop {
                match api.get_opt(&name).await {
                    Ok(Some(o)) if ready(&serde_json::to_value(&o).unwrap_or(Value::Null)) => return Ok(()),
                    Ok(_) => {}
                    // Transient API errors while the control plane settles: keep polling.
                    Err(kube::Error::Api(e)) if e.code >= 500 => {}
                    Err(source) => {
                        return Err(InstallError::Kube {
                            what: what.clone(),
                            source,
                        });
                    }
                }
                tokio::time::sleep(self.poll).await;
            }
        };
        tokio::time::timeout(self.wait_timeout, poll)
            .await
            .map_err(|_| InstallError::Timeout {
                what: format!("{what} to be ready"),
                secs: self.wait_timeout.as_secs(),
            })?
    }

    /// Installs ArgoCD from `manifest`, waits for it, then applies the GitOps
    /// objects, the root Application last.
    pub async fn install(
        &self,
        manifest: &InstallManifest,
        gitops: &[DynamicObject],
    ) -> Result<(), InstallError> {
        self.apply(&namespace(NAMESPACE)).await?;
        let (crds, rest): (Vec<_>, Vec<_>) = manifest
            .objects
            .iter()
            .partition(|o| kind(o) == "CustomResourceDefinition");
        for crd in &crds {
            self.apply(crd).await?;
        }
        for crd in &crds {
            self.wait_for(crd, crd_established).await?;
        }
        for obj in &rest {
            self.apply(obj).await?;
        }
        for (k, name) in AWAITED {
            let obj = rest
                .iter()
                .find(|o| kind(o) == k && o.name_any() == name)
                .ok_or_else(|| InstallError::Invalid(format!("the install manifest has no {k} {name}")))?;
            let ready: fn(&Value) -> bool = if k == "StatefulSet" {
                statefulset_ready
            } else {
                deployment_ready
            };
            self.wait_for(obj, ready).await?;
        }
        let (root, first): (Vec<&DynamicObject>, Vec<&DynamicObject>) =
            gitops.iter().partition(|o| kind(o) == "Application");
        for obj in first.into_iter().chain(root) {
            self.apply(obj).await?;
        }
        Ok(())
    }
}

fn kind(o: &DynamicObject) -> &str {
    o.types.as_ref().map(|t| t.kind.as_str()).unwrap_or("")
}

fn describe(o: &DynamicObject) -> String {
    match &o.metadata.namespace {
        Some(ns) => format!("{} {ns}/{}", kind(o), o.name_any()),
        None => format!("{} {}", kind(o), o.name_any()),
    }
}

/// A `v1` Namespace object.
pub fn namespace(name: &str) -> DynamicObject {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}
    }))
    .expect("static object")
}

fn condition_true(v: &Value, ty: &str) -> bool {
    v.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter().any(|c| {
                c.get("type").and_then(Value::as_str) == Some(ty)
                    && c.get("status").and_then(Value::as_str) == Some("True")
            })
        })
}

/// CRD condition `Established=True` (kube-runtime `is_crd_established` semantics).
pub fn crd_established(v: &Value) -> bool {
    condition_true(v, "Established")
}

fn int(v: &Value, p: &str) -> Option<i64> {
    v.pointer(p).and_then(Value::as_i64)
}

/// A Deployment has rolled out its current generation and every replica is updated and
/// available (argocd-gitops.md §4 step 4; kube's `is_deployment_completed` only looks
/// at the Progressing reason).
pub fn deployment_ready(v: &Value) -> bool {
    let want = int(v, "/spec/replicas").unwrap_or(1);
    int(v, "/status/observedGeneration").unwrap_or(-1) >= int(v, "/metadata/generation").unwrap_or(0)
        && int(v, "/status/updatedReplicas").unwrap_or(0) == want
        && int(v, "/status/availableReplicas").unwrap_or(0) == want
}

/// A StatefulSet has every replica ready on the current revision.
pub fn statefulset_ready(v: &Value) -> bool {
    let want = int(v, "/spec/replicas").unwrap_or(1);
    let rev = |p: &str| v.pointer(p).and_then(Value::as_str).map(str::to_string);
    int(v, "/status/readyReplicas").unwrap_or(0) == want
        && rev("/status/currentRevision").is_some()
        && rev("/status/currentRevision") == rev("/status/updateRevision")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn readiness_predicates() {
        let dep = |generation: i64, obs: i64, upd: i64, avail: i64| {
            json!({"metadata": {"generation": generation}, "spec": {"replicas": 2},
                   "status": {"observedGeneration": obs, "updatedReplicas": upd, "availableReplicas": avail}})
        };
        assert!(deployment_ready(&dep(3, 3, 2, 2)));
        assert!(!deployment_ready(&dep(3, 2, 2, 2)), "generation lag");
        assert!(!deployment_ready(&dep(3, 3, 1, 2)), "rolling");
        assert!(!deployment_ready(&dep(3, 3, 2, 1)), "not available");
        assert!(
            !deployment_ready(&json!({"metadata": {"generation": 1}})),
            "no status"
        );
        let sts = |ready: i64, cur: &str, upd: &str| json!({"spec": {"replicas": 1}, "status": {"readyReplicas": ready, "currentRevision": cur, "updateRevision": upd}});
        assert!(statefulset_ready(&sts(1, "a", "a")));
        assert!(!statefulset_ready(&sts(0, "a", "a")));
        assert!(!statefulset_ready(&sts(1, "a", "b")));
        assert!(crd_established(
            &json!({"status": {"conditions": [{"type": "Established", "status": "True"}]}})
        ));
        assert!(!crd_established(
            &json!({"status": {"conditions": [{"type": "NamesAccepted", "status": "True"}]}})
        ));
    }
}
