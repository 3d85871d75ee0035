//! How Argo CD v3.5.1 resolves an Application's `spec.destination` to a cluster,
//! modelled on its source at tag v3.5.1 (read with the search tool):
//!
//! - `util/argo/argo.go` `GetDestinationServer`: `name` and `server` together are
//!   refused; a `server` is used as given (trailing `/` trimmed); a `name` is looked
//!   up with `GetClusterServersByName`: no server → "there are no clusters with this
//!   name", more than one → "there are N clusters with the same name"; neither →
//!   `ErrDestinationMissing`. `GetDestinationCluster` then fetches the cluster by
//!   that server (`util/db/cluster.go` `GetCluster`).
//! - `util/db/cluster.go` `GetClusterServersByName` (since argo-cd #25534, v3.3.0):
//!   names come from cluster Secrets (`data.name`, indexed by
//!   `util/settings/cluster_informer.go`); only when *no* Secret carries the name
//!   `in-cluster` does that name resolve to `https://kubernetes.default.svc` (the
//!   "in-cluster" special case, unless `cluster.inClusterEnabled: "false"`). A Secret
//!   registering the local server under another name leaves the special case alone.
//! - `util/db/cluster.go` `GetCluster`: the in-cluster address resolves to a Secret
//!   for it if there is one, else to the built-in local cluster; any other server
//!   must be a Secret's, else `cluster "<server>" not found` (gRPC NotFound).
//!
//! The application controller reports a failure as an `InvalidSpecError` condition
//! with exactly this message and sets sync and health to `Unknown`
//! (`util/argo/argo.go` `ValidatePermissions`, `controller/appcontroller.go`
//! `processAppRefreshQueueItem`), so `check` and the fake Kubernetes API share this
//! one rule.

use std::fmt;

use serde_json::Value;

/// `appv1.KubernetesInClusterName` (`pkg/apis/application/v1alpha1/application_defaults.go`).
pub const IN_CLUSTER_NAME: &str = "in-cluster";
/// `appv1.KubernetesInternalAPIServerAddr`, the local cluster's address.
pub const IN_CLUSTER_SERVER: &str = "https://kubernetes.default.svc";
/// `util/argo/argo.go` `ErrDestinationMissing`.
pub const ERR_DESTINATION_MISSING: &str = "Destination server missing from app spec";

/// One cluster Secret (`argocd.argoproj.io/secret-type: cluster`) as Argo CD reads
/// it (`util/settings/cluster_informer.go` `secretToCluster`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSecret {
    /// The Secret's `metadata.name` (for messages only; Argo CD does not use it).
    pub secret: String,
    /// `data.name` (empty: not findable by name).
    pub name: String,
    /// `data.server`, trailing `/` trimmed.
    pub server: String,
}

impl ClusterSecret {
    /// A Secret as the declarative setup writes it (`stringData` or base64 `data`);
    /// `None` when it is not a cluster Secret.
    pub fn from_secret(v: &Value) -> Option<Self> {
        let label = v
            .pointer("/metadata/labels/argocd.argoproj.io~1secret-type")
            .and_then(Value::as_str);
        if v.get("kind").and_then(Value::as_str) != Some("Secret") || label != Some("cluster") {
            return None;
        }
        let field = |k: &str| -> String {
            if let Some(s) = v.pointer(&format!("/stringData/{k}")).and_then(Value::as_str) {
                return s.to_string();
            }
            v.pointer(&format!("/data/{k}"))
                .and_then(Value::as_str)
                .and_then(|b| {
                    use base64::Engine;
                    base64::engine::general_purpose::STANDARD.decode(b).ok()
                })
                .and_then(|b| String::from_utf8(b).ok())
                .unwrap_or_default()
        };
        Some(Self {
            secret: v
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            name: field("name"),
            server: field("server").trim_end_matches('/').to_string(),
        })
    }
}

/// The clusters an Argo CD knows: its cluster Secrets, and whether the built-in
/// local cluster is enabled (`argocd-cm` `cluster.inClusterEnabled`, default true).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registry {
    /// Every cluster Secret.
    pub secrets: Vec<ClusterSecret>,
    /// `cluster.inClusterEnabled` is not `"false"`.
    pub in_cluster_enabled: bool,
}

impl Default for Registry {
    fn default() -> Self {
        Self {
            secrets: Vec::new(),
            in_cluster_enabled: true,
        }
    }
}

/// Why a destination does not resolve; `Display` is Argo CD's own message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DestinationError {
    /// Both `name` and `server`.
    Both {
        /// `destination.name`.
        name: String,
        /// `destination.server`.
        server: String,
    },
    /// Neither.
    Missing,
    /// No cluster has the name.
    NoSuchName(String),
    /// Several clusters have the name (their servers).
    Ambiguous(Vec<String>),
    /// No cluster has the server (as given, as trimmed).
    NoSuchServer(String, String),
    /// The in-cluster address while the local cluster is disabled.
    InClusterDisabled(String),
}

impl fmt::Display for DestinationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Both { name, server } => write!(
                f,
                "application destination can't have both name and server defined: {name} {server}"
            ),
            Self::Missing => f.write_str(ERR_DESTINATION_MISSING),
            Self::NoSuchName(n) => write!(f, "there are no clusters with this name: {n}"),
            Self::Ambiguous(urls) => write!(
                f,
                "there are {} clusters with the same name: [{}]",
                urls.len(),
                urls.join(" ")
            ),
            // GetDestinationCluster wraps GetCluster's gRPC NotFound status.
            Self::NoSuchServer(given, trimmed) => write!(
                f,
                "error getting cluster by server {given:?}: rpc error: code = NotFound desc = cluster {trimmed:?} not found"
            ),
            Self::InClusterDisabled(given) => write!(
                f,
                "error getting cluster by server {given:?}: rpc error: code = NotFound desc = cluster {IN_CLUSTER_SERVER:?} is disabled"
            ),
        }
    }
}

impl std::error::Error for DestinationError {}

impl Registry {
    /// `util/db/cluster.go` `GetClusterServersByName` at v3.5.1.
    pub fn servers_by_name(&self, name: &str) -> Vec<String> {
        let servers: Vec<String> = self
            .secrets
            .iter()
            .filter(|s| !s.name.is_empty() && s.name == name)
            .map(|s| s.server.clone())
            .collect();
        if name != IN_CLUSTER_NAME && !servers.iter().any(|s| s == IN_CLUSTER_SERVER) {
            return servers;
        }
        if servers.is_empty() && name == IN_CLUSTER_NAME && self.in_cluster_enabled {
            return vec![IN_CLUSTER_SERVER.to_string()];
        }
        if !self.in_cluster_enabled {
            return servers.into_iter().filter(|s| s != IN_CLUSTER_SERVER).collect();
        }
        servers
    }

    /// `util/argo/argo.go` `GetDestinationCluster` at v3.5.1: the server the
    /// destination resolves to (the cluster must exist, as `GetCluster` checks).
    pub fn resolve(&self, name: Option<&str>, server: Option<&str>) -> Result<String, DestinationError> {
        let name = name.unwrap_or("");
        let server = server.unwrap_or("");
        let resolved = if !name.is_empty() && !server.is_empty() {
            return Err(DestinationError::Both {
                name: name.to_string(),
                server: server.to_string(),
            });
        } else if !server.is_empty() {
            server.trim_end_matches('/').to_string()
        } else if !name.is_empty() {
            let urls = self.servers_by_name(name);
            match urls.len() {
                0 => return Err(DestinationError::NoSuchName(name.to_string())),
                1 => urls[0].clone(),
                _ => return Err(DestinationError::Ambiguous(urls)),
            }
        } else {
            return Err(DestinationError::Missing);
        };
        // GetCluster: the local address is always known (Secret or built-in) unless
        // disabled; any other must be a Secret's.
        if resolved == IN_CLUSTER_SERVER {
            if !self.in_cluster_enabled {
                return Err(DestinationError::InClusterDisabled(server.to_string()));
            }
            return Ok(resolved);
        }
        if self.secrets.iter().any(|s| s.server == resolved) {
            Ok(resolved)
        } else {
            Err(DestinationError::NoSuchServer(server.to_string(), resolved))
        }
    }

    /// [`Self::resolve`] for a `spec.destination` object.
    pub fn resolve_value(&self, destination: &Value) -> Result<String, DestinationError> {
        let s = |k: &str| destination.get(k).and_then(Value::as_str);
        self.resolve(s("name"), s("server"))
    }
}

#[cfg(test)]
#[path = "destination_tests.rs"]
mod tests;
