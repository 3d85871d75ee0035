//! The pinned ArgoCD install manifest: verified against its SHA-256, parsed once into
//! objects, every namespaced object placed in `argocd` (the upstream file sets no
//! namespace, argocd-gitops.md §3.3), and every kind resolved to its REST resource
//! *without* API discovery: a static table for the built-in kinds it uses, and the
//! manifest's own CRDs for the argoproj.io kinds. So an unavailable aggregated API
//! (e.g. `metrics.k8s.io` before metrics-server runs) cannot stall the install
//! (argocd-gitops.md §6).

use std::collections::BTreeMap;

use kube::api::{ApiResource, DynamicObject};
use kube::core::GroupVersionKind;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The namespace ArgoCD is installed into; its ClusterRoleBindings name it.
pub const NAMESPACE: &str = "argocd";

/// Whether a kind lives in a namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Namespaced.
    Namespaced,
    /// Cluster-wide.
    Cluster,
}

/// Kind → (REST resource, scope), for the kinds the appliance applies.
#[derive(Debug, Clone, Default)]
pub struct Resources(BTreeMap<(String, String), (ApiResource, Scope)>);

impl Resources {
    /// The built-in kinds in ArgoCD's install manifest and the hand-off objects
    /// (plurals and scopes from the Kubernetes API reference).
    pub fn builtin() -> Self {
        let mut r = Self::default();
        for (group, version, kind, plural, scope) in [
            ("", "v1", "Namespace", "namespaces", Scope::Cluster),
            ("", "v1", "ServiceAccount", "serviceaccounts", Scope::Namespaced),
            ("", "v1", "ConfigMap", "configmaps", Scope::Namespaced),
            ("", "v1", "Secret", "secrets", Scope::Namespaced),
            ("", "v1", "Service", "services", Scope::Namespaced),
            (
                "rbac.authorization.k8s.io",
                "v1",
                "Role",
                "roles",
                Scope::Namespaced,
            ),
            (
                "rbac.authorization.k8s.io",
                "v1",
                "RoleBinding",
                "rolebindings",
                Scope::Namespaced,
            ),
            (
                "rbac.authorization.k8s.io",
                "v1",
                "ClusterRole",
                "clusterroles",
                Scope::Cluster,
            ),
            (
                "rbac.authorization.k8s.io",
                "v1",
                "ClusterRoleBinding",
                "clusterrolebindings",
                Scope::Cluster,
            ),
            ("apps", "v1", "Deployment", "deployments", Scope::Namespaced),
            ("apps", "v1", "StatefulSet", "statefulsets", Scope::Namespaced),
            (
                "networking.k8s.io",
                "v1",
                "NetworkPolicy",
                "networkpolicies",
                Scope::Namespaced,
            ),
            (
                "apiextensions.k8s.io",
                "v1",
                "CustomResourceDefinition",
                "customresourcedefinitions",
                Scope::Cluster,
            ),
        ] {
            r.insert(group, version, kind, plural, scope);
        }
        r
    }

    fn insert(&mut self, group: &str, version: &str, kind: &str, plural: &str, scope: Scope) {
        let gvk = GroupVersionKind::gvk(group, version, kind);
        let api_version = gvk.api_version();
        self.0.insert(
            (api_version, kind.to_string()),
            (ApiResource::from_gvk_with_plural(&gvk, plural), scope),
        );
    }

    /// Adds every served version of a CRD object's kind.
    pub fn add_crd(&mut self, crd: &Value) -> Result<(), ResourceError> {
        let spec = crd
            .get("spec")
            .ok_or_else(|| ResourceError("CRD without spec".into()))?;
        let s = |p: &str| {
            spec.pointer(p)
                .and_then(Value::as_str)
                .ok_or_else(|| ResourceError(format!("CRD without {p}")))
        };
        let (group, kind, plural) = (s("/group")?, s("/names/kind")?, s("/names/plural")?);
        let scope = if s("/scope")? == "Cluster" {
            Scope::Cluster
        } else {
            Scope::Namespaced
        };
        for v in spec
            .get("versions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if v.get("served").and_then(Value::as_bool).unwrap_or(false)
                && let Some(name) = v.get("name").and_then(Value::as_str)
            {
                self.insert(group, name, kind, plural, scope);
            }
        }
        Ok(())
    }

    /// The resource for `obj`'s apiVersion/kind.
    pub fn resolve(&self, obj: &DynamicObject) -> Result<(ApiResource, Scope), ResourceError> {
        let t = obj
            .types
            .as_ref()
            .ok_or_else(|| ResourceError("object without apiVersion/kind".into()))?;
        self.0
            .get(&(t.api_version.clone(), t.kind.clone()))
            .cloned()
            .ok_or_else(|| ResourceError(format!("no resource known for {} {}", t.api_version, t.kind)))
    }
}

/// Why an object's API resource is not known.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ResourceError(pub String);

/// Why the manifest is unusable.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The bytes are not the pinned file.
    #[error("install manifest sha256 is {found}, pinned {pinned}")]
    Checksum {
        /// What the bytes hash to.
        found: String,
        /// What gitops/settings.yaml pins.
        pinned: String,
    },
    /// It does not parse.
    #[error("install manifest: {0}")]
    Parse(String),
    /// It is not in the cache.
    #[error("{}: {source} (download {url} there; sha256 {sha256})", path.display())]
    Missing {
        /// Where it should be.
        path: std::path::PathBuf,
        /// The pinned URL.
        url: String,
        /// The pinned checksum.
        sha256: String,
        /// Why it could not be read.
        source: std::io::Error,
    },
    /// The cached copy is unusable.
    #[error("{}: {source}", path.display())]
    Cached {
        /// The cached file.
        path: std::path::PathBuf,
        /// Why.
        source: Box<ManifestError>,
    },
}

/// The parsed install manifest, in apply order.
#[derive(Debug, Clone)]
pub struct InstallManifest {
    /// CRDs first, then the rest ordered by [`apply_rank`].
    pub objects: Vec<DynamicObject>,
    /// Resolution for every kind in it (and the built-ins).
    pub resources: Resources,
}

/// Hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Apply order inside the manifest (argocd-gitops.md §4 step 3): CRDs, cluster RBAC,
/// then namespaced config, then workloads last so they start with everything present.
pub fn apply_rank(kind: &str) -> u8 {
    match kind {
        "Namespace" => 0,
        "CustomResourceDefinition" => 1,
        "ClusterRole" => 2,
        "ClusterRoleBinding" => 3,
        "ServiceAccount" => 4,
        "Role" => 5,
        "RoleBinding" => 6,
        "ConfigMap" | "Secret" => 7,
        "Service" => 8,
        "NetworkPolicy" => 9,
        "Deployment" | "StatefulSet" => 11,
        _ => 10,
    }
}

impl InstallManifest {
    /// Verifies `bytes` against `sha256` and parses them.
    pub fn parse(bytes: &[u8], sha256: &str) -> Result<Self, ManifestError> {
        let found = sha256_hex(bytes);
        if !found.eq_ignore_ascii_case(sha256) {
            return Err(ManifestError::Checksum {
                found,
                pinned: sha256.to_string(),
            });
        }
        let text = std::str::from_utf8(bytes).map_err(|e| ManifestError::Parse(e.to_string()))?;
        let docs: Vec<Value> = serde_saphyr::from_str_multiple_with_options(
            text,
            serde_saphyr::options! { strict_booleans: true },
        )
        .map_err(|e| ManifestError::Parse(e.to_string()))?;
        let mut resources = Resources::builtin();
        let mut objects = Vec::new();
        for doc in docs.into_iter().filter(|d| !d.is_null()) {
            if doc.get("kind").and_then(Value::as_str) == Some("CustomResourceDefinition") {
                resources.add_crd(&doc).map_err(|e| ManifestError::Parse(e.0))?;
            }
            let obj: DynamicObject =
                serde_json::from_value(doc).map_err(|e| ManifestError::Parse(e.to_string()))?;
            objects.push(obj);
        }
        for obj in &mut objects {
            let (_, scope) = resources.resolve(obj).map_err(|e| ManifestError::Parse(e.0))?;
            if scope == Scope::Namespaced {
                obj.metadata.namespace = Some(NAMESPACE.to_string());
            }
        }
        objects.sort_by_key(|o| apply_rank(o.types.as_ref().map(|t| t.kind.as_str()).unwrap_or("")));
        Ok(Self { objects, resources })
    }
}
