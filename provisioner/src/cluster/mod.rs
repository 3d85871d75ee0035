//! Cluster bootstrap and GitOps hand-off: the Talos API client ([`talos`]), the
//! orchestrator that drives `provisioner_core::cluster::bootstrap` with real I/O
//! ([`orchestrator`]), and the ArgoCD installer ([`argocd`]).

pub mod argocd;
pub mod orchestrator;
pub mod talos;
