//! Drives the pure k0s workflow (`provisioner_core::k0s::workflow`) with real I/O, as
//! [`super::orchestrator`] does for Talos: each turn persists the transition (state +
//! events, one durable commit) *before* doing the work, so a restart resumes at the
//! last recorded step and never redoes one recorded as done.
//!
//! The I/O: the controller's k0s phase from the inventory timeline ([`ControllerPhase`]),
//! the appliance-minted admin kubeconfig ([`AdminKubeconfig`]), `/readyz` and the
//! hand-off through the Talos orchestrator's [`ApiProbe`] and [`HandOff`] seams, and the
//! Node list ([`NodeLister`]). [`workflows`] wires one workflow per k0s cluster of `infra/`.

pub mod io;
#[cfg(test)]
mod retry_tests;
mod spawn;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use futures::future::BoxFuture;
use provisioner_core::cluster::{ClusterEventKind, ClusterStore, Flow, Step};
use provisioner_core::k0s::progress::Phase;
use provisioner_core::k0s::workflow::{
    self as k0s, K0sObservation, K0sPlan, K0sTransition, K0sWork, NodeStatus,
};
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

pub use spawn::{Shared, Wiring, workflows};

use crate::cluster::seams::{ApiProbe, CallError, ClusterError, HandOff};

/// The controller machine's k0s phase (`core::k0s::progress`, from its timeline).
pub trait ControllerPhase: Send + Sync + std::fmt::Debug {
    /// The phase now, or why it cannot be read.
    fn phase(&self) -> Result<Phase, CallError>;
}

/// The appliance's admin kubeconfig for the cluster (client certificate with
/// `O=system:masters` from the cluster CA the appliance owns).
pub trait AdminKubeconfig: Send + Sync + std::fmt::Debug {
    /// The kubeconfig (YAML); minted when missing or about to expire.
    fn get(&self) -> Result<Vec<u8>, CallError>;
}

/// `GET /api/v1/nodes`.
pub trait NodeLister: Send + Sync + std::fmt::Debug {
    /// The Nodes of the cluster behind `kubeconfig`.
    fn nodes<'a>(&'a self, kubeconfig: &'a [u8]) -> BoxFuture<'a, Result<Vec<NodeStatus>, CallError>>;
}

/// Everything one k0s cluster's workflow needs.
#[derive(Debug, Clone)]
pub struct K0sReady {
    /// The plan (nodes, timeouts, poll interval).
    pub plan: K0sPlan,
    /// Where progress is persisted (the Talos workflow's store).
    pub store: Arc<dyn ClusterStore>,
    /// The controller's install progress.
    pub controller: Arc<dyn ControllerPhase>,
    /// Admin credentials.
    pub kubeconfig: Arc<dyn AdminKubeconfig>,
    /// `/readyz`.
    pub api: Arc<dyn ApiProbe>,
    /// Node list.
    pub nodes: Arc<dyn NodeLister>,
    /// ArgoCD hand-off.
    pub hand_off: Arc<dyn HandOff>,
    /// The cluster ArgoCD runs on (`gitops/settings.yaml` `argocd.host`); another
    /// cluster's hand-off waits until that one is handed off.
    pub argocd_host: Option<String>,
}

/// How stale the step clock on disk may get while a blocked hand-off waits.
const CLOCK_SLACK: time::Duration = time::Duration::minutes(1);
/// Most time between polls of a `Failed` cluster's record for an operator retry.
const RETRY_POLL: std::time::Duration = std::time::Duration::from_secs(2);

impl K0sReady {
    /// [`Self::run`] as the daemon's task runs it: a `Failed` workflow waits for an
    /// operator retry (`super::await_retry`) and runs again from the failed step;
    /// returns on shutdown or when the workflow ends otherwise (logged as `name`).
    pub async fn run_retrying(&self, name: &str, shutdown: CancellationToken) {
        loop {
            match self.run(shutdown.clone()).await {
                Ok(Some(Step::Failed)) if !shutdown.is_cancelled() => {
                    tracing::error!(cluster = %name, "k0s workflow Failed; waiting for an operator retry (`provisioner clusters retry`)");
                    let poll = self.plan.poll.min(RETRY_POLL);
                    if crate::cluster::await_retry::until_retried(self.store.as_ref(), name, poll, &shutdown)
                        .await
                    {
                        tracing::info!(cluster = %name, "k0s workflow retried by an operator");
                        continue;
                    }
                }
                Ok(Some(step)) => tracing::info!(cluster = %name, %step, "k0s workflow stopped"),
                Ok(None) => {}
                // The boot path matters more than this workflow: log and keep serving.
                Err(e) => tracing::error!(cluster = %name, error = %e, "k0s workflow stopped"),
            }
            return;
        }
    }

    /// Runs the workflow until it is `HandedOff` or `Failed`, or `shutdown` fires.
    /// Returns the step it stopped in; `None` when it never started (the controller
    /// has not been served its install yet) or the stored record is not a k0s one.
    pub async fn run(&self, shutdown: CancellationToken) -> Result<Option<Step>, ClusterError> {
        let cluster = self.plan.cluster.clone();
        let (mut persisted, mut t) = match self.store.load(&cluster)? {
            Some(s) if s.flow != Flow::K0s => {
                tracing::warn!(cluster = %cluster, "bootstrap record is not a k0s one; leaving it alone");
                return Ok(None);
            }
            Some(s) => {
                let t = k0s::step(&self.plan, &s, K0sObservation::Resumed, OffsetDateTime::now_utc());
                (Some(s), t)
            }
            None => match self.wait_for_start(&shutdown).await {
                Some(t) => (None, t),
                None => return Ok(None),
            },
        };
        let mut last_wait: Option<String> = None;
        loop {
            // Persist first: what is recorded as done is never done again. A poll
            // that only repeats the last Waiting reason is not rewritten (no fsync, no
            // flood of identical events), unless it moved the step clock (a blocked
            // hand-off) more than CLOCK_SLACK past what is on disk.
            let wait = match t.events.as_slice() {
                [e] if e.kind == ClusterEventKind::Waiting => Some(e.detail.clone()),
                _ => None,
            };
            let repeat = wait.is_some()
                && wait == last_wait
                && persisted.as_ref().is_some_and(|p| {
                    let mut same_clock = p.clone();
                    same_clock.step_started = t.next.step_started;
                    same_clock == t.next && t.next.step_started - p.step_started < CLOCK_SLACK
                });
            if !repeat {
                self.store.save(&t.next, &t.events)?;
                persisted = Some(t.next.clone());
                for e in &t.events {
                    tracing::info!(cluster = %cluster, step = %t.next.step, kind = ?e.kind, "{}", e.detail);
                }
            }
            last_wait = wait;
            let Some(work) = t.work else {
                return Ok(Some(t.next.step));
            };
            let state = t.next.clone();
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return Ok(Some(state.step)),
                () = tokio::time::sleep(t.delay) => {}
            }
            let obs = tokio::select! {
                biased;
                () = shutdown.cancelled() => return Ok(Some(state.step)),
                o = self.perform(work) => o,
            };
            t = k0s::step(&self.plan, &state, obs, OffsetDateTime::now_utc());
        }
    }

    /// Polls the controller until it has been served its install (then the first
    /// transition), or `None` on shutdown.
    async fn wait_for_start(&self, shutdown: &CancellationToken) -> Option<K0sTransition> {
        let mut told = None;
        loop {
            match self.controller.phase() {
                Ok(p) => {
                    if let Some(t) = k0s::start(&self.plan, p, OffsetDateTime::now_utc()) {
                        return Some(t);
                    }
                }
                Err(e) if told.as_ref() != Some(&e.to_string()) => {
                    tracing::warn!(cluster = %self.plan.cluster, error = %e, "reading the controller's progress");
                    told = Some(e.to_string());
                }
                Err(_) => {}
            }
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return None,
                () = tokio::time::sleep(self.plan.poll) => {}
            }
        }
    }

    /// The one place that talks to the cluster.
    async fn perform(&self, work: K0sWork) -> K0sObservation {
        match work {
            K0sWork::CheckController => {
                K0sObservation::Controller(self.controller.phase().map_err(|e| e.to_string()))
            }
            K0sWork::CheckReadyz => K0sObservation::Readyz(match self.kubeconfig.get() {
                Ok(kc) => self.api.readyz(&kc).await.map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            }),
            K0sWork::CheckNodes => K0sObservation::Nodes(match self.kubeconfig.get() {
                Ok(kc) => self.nodes.nodes(&kc).await.map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            }),
            K0sWork::HandOff => {
                if let Some(why) = self.host_not_ready() {
                    return K0sObservation::HandOffBlocked(why);
                }
                K0sObservation::HandOff(match self.kubeconfig.get() {
                    Ok(kc) => self
                        .hand_off
                        .hand_off(&self.plan.cluster, &kc)
                        .await
                        .map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                })
            }
            K0sWork::CheckArgo => K0sObservation::Argo(match self.kubeconfig.get() {
                Ok(kc) => self
                    .hand_off
                    .argo_status(&self.plan.cluster, &kc)
                    .await
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            }),
        }
    }

    /// Why the ArgoCD host cluster cannot take this cluster's registration yet: its
    /// own workflow (same store) has not handed off. A failed host does not block:
    /// the hand-off then fails on its own and the step times out.
    fn host_not_ready(&self) -> Option<String> {
        let host = self.argocd_host.as_deref()?;
        if host == self.plan.cluster {
            return None;
        }
        match self.store.load(host) {
            Ok(Some(s)) if matches!(s.step, Step::HandedOff | Step::Failed) => None,
            Ok(Some(s)) => Some(format!(
                "waiting for the ArgoCD host cluster {host} to be handed off (it is at step {})",
                s.step
            )),
            Ok(None) => Some(format!(
                "waiting for the ArgoCD host cluster {host} to be handed off (not started)"
            )),
            Err(_) => None,
        }
    }
}
