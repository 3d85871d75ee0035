//! Cluster bootstrap and GitOps hand-off: the Talos API client ([`talos`]), the
//! orchestrator that drives `provisioner_core::cluster::bootstrap` with real I/O
//! ([`orchestrator`]), the k0s readiness workflow ([`k0s_ready`]), and the ArgoCD
//! installer ([`argocd`]).

pub mod argocd;
pub mod k0s_ready;
pub mod orchestrator;
pub mod talos;
