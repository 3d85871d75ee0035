//! What the cluster workflows of every OS share: the seams they call and implement
//! ([`seams`]), the `bootstrap:` settings ([`settings`]), the ArgoCD hand-off
//! ([`argocd`]), and the wait for an operator retry of a `Failed` cluster
//! ([`await_retry`]). The workflows themselves live with their OS (`crate::os`).

pub mod argocd;
pub mod await_retry;
pub mod seams;
pub mod settings;
