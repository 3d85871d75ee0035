//! Cluster bootstrap and GitOps hand-off: the Talos API client ([`talos`]), the
//! orchestrator that drives `provisioner_core::cluster::bootstrap` with real I/O
//! ([`orchestrator`]), the k0s readiness workflow ([`k0s_ready`]), the ArgoCD
//! installer ([`argocd`]), and the supervisor that runs one Talos orchestrator per
//! cluster inside `serve` ([`supervisor`]); a `Failed` cluster's task waits for an
//! operator retry ([`await_retry`]).

pub mod argocd;
pub mod await_retry;
pub mod settings;
