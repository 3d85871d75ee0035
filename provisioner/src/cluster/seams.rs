//! The small traits the OS folders implement and the rest of the daemon uses: the
//! API server probe and the GitOps hand-off every workflow calls ([`ApiProbe`],
//! [`HandOff`]), re-imaging through the node's own OS ([`NodeResetter`]), and admin
//! credentials ([`ClusterCredentials`]). Their errors are shown to operators (cluster
//! events, API answers) and never carry secret material.

use futures::future::BoxFuture;
use provisioner_core::cluster::KubeconfigError;
use provisioner_core::gitops::health::Report;
use provisioner_core::model::Machine;

/// Why a call to a cluster (its API server, Argo CD on it) did not succeed; the
/// workflows record it as the reason a step waits or fails.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The kubeconfig store failed.
    #[error(transparent)]
    Kubeconfig(#[from] KubeconfigError),
    /// Something the call needs is not there yet (the message says what).
    #[error("{0}")]
    Waiting(String),
    /// The kubeconfig does not parse or names no usable context.
    #[error("kubeconfig: {0}")]
    BadKubeconfig(String),
    /// No client could be built from the kubeconfig.
    #[error("kube client: {0}")]
    Client(String),
    /// The API server answered, but not as hoped (or not at all).
    #[error("{0}")]
    Api(String),
    /// The ArgoCD hand-off's objects could not be built or applied.
    #[error("{0}")]
    HandOff(String),
}

/// `/readyz` on the cluster's API server.
pub trait ApiProbe: Send + Sync + std::fmt::Debug {
    /// `Ok` when the API server behind `kubeconfig` reports ready.
    fn readyz<'a>(&'a self, kubeconfig: &'a [u8]) -> BoxFuture<'a, Result<(), CallError>>;
}

/// The GitOps hand-off (ArgoCD install + root app), see [`super::argocd`].
pub trait HandOff: Send + Sync + std::fmt::Debug {
    /// Installs and hands `cluster` over; idempotent until it returns `Ok`.
    fn hand_off<'a>(&'a self, cluster: &'a str, kubeconfig: &'a [u8])
    -> BoxFuture<'a, Result<(), CallError>>;
    /// What Argo CD reports about `cluster`'s Applications (the hand-off is over
    /// when they are all Synced and Healthy); `kubeconfig` is `cluster`'s own.
    fn argo_status<'a>(
        &'a self,
        cluster: &'a str,
        kubeconfig: &'a [u8],
    ) -> BoxFuture<'a, Result<Report, CallError>>;
}

/// Why a workflow stopped early.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The store failed; the workflow cannot go on without persisting.
    #[error("cluster store: {0}")]
    Store(#[from] provisioner_core::inventory::InventoryError),
}

/// Why a reset failed.
#[derive(Debug, thiserror::Error)]
#[error("node reset: {0}")]
pub struct ResetError(pub String);

/// Resets an installed node so that it reboots into a network install (Talos: the
/// machine API's `Reset`). Without one, re-imaging reports the manual command.
pub trait NodeResetter: Send + Sync + std::fmt::Debug {
    /// Resets `machine` (member of `cluster`, if known). Returns what was done.
    fn reset<'a>(
        &'a self,
        machine: &'a Machine,
        cluster: Option<&'a str>,
    ) -> BoxFuture<'a, Result<String, ResetError>>;
}

/// Why a credential cannot be handed out. Messages never contain secret material.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    /// `infra/` has no such cluster.
    #[error("no cluster {0:?} in infra/")]
    NoCluster(String),
    /// The cluster exists but this credential does not (yet); the message says why.
    #[error("{0}")]
    NotAvailable(String),
    /// A store or key generation failed.
    #[error("credential store: {0}")]
    Store(String),
}

/// Where one OS's admin credentials come from.
pub trait ClusterCredentials: Send + Sync + std::fmt::Debug {
    /// Whether `cluster` is one of this OS's clusters.
    fn owns(&self, cluster: &str) -> bool;
    /// A fresh talosconfig (YAML) for `cluster`.
    fn talosconfig(&self, cluster: &str) -> Result<Vec<u8>, CredentialError>;
    /// The admin kubeconfig (YAML) of `cluster`.
    fn kubeconfig(&self, cluster: &str) -> Result<Vec<u8>, CredentialError>;
}
