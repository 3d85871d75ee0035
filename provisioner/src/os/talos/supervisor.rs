//! Runs the bootstrap orchestrator of every Talos cluster in `infra/` inside `serve`:
//! one supervised task per cluster, stopped by the shutdown token. The orchestrator
//! persists every step before acting, so a restarted appliance resumes where it was;
//! a cluster recorded `HandedOff` is never dialled or applied to again (Git owns it,
//! argocd-gitops.md §10). Whatever keeps a cluster from starting (no secrets bundle,
//! a store error, a crashed task) becomes a cluster event and a warning, then a retry
//! with exponential backoff. A missing ArgoCD manifest is reported at start and holds
//! only the `HandOff` step: the workflow parks there (its timeout is not spent) until
//! the manifest is in the cache, then goes on without a restart. A `Failed` cluster's
//! task waits for an operator retry (`super::await_retry`) and then resumes at the
//! failed step.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use provisioner_core::cluster::bootstrap::Step;
use provisioner_core::cluster::{ClusterEvent, ClusterEventKind, ClusterStore};
use provisioner_core::inventory::Inventory;
use provisioner_core::talos::bootstrap::Plan;
use provisioner_core::talos::cluster::TalosCluster;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use super::api::{BundleIdentity, IdentitySource, TalosApi, Target, TonicTalos};
use super::locked::Locked;
use super::orchestrator::Orchestrator;
use crate::cluster::argocd::KubeReadyz;
pub use crate::cluster::argocd::cached::CachedArgo;
use crate::cluster::seams::{CallError, HandOff};
pub use crate::cluster::settings::{BootstrapSettings, plan_for};
use provisioner_core::cluster::KubeconfigStore;
use provisioner_core::talos::store::SecretStore;

/// Everything the per-cluster tasks share.
#[derive(Debug)]
pub struct Supervisor {
    /// `bootstrap:` settings.
    pub settings: BootstrapSettings,
    /// apid's port on every node (`talos.api_port`; Talos: 50000, talos.md §9.2).
    pub talos_port: u16,
    /// Talos clusters of `infra/`, by name.
    pub clusters: BTreeMap<String, TalosCluster>,
    /// Secrets bundles (the talosconfig identity is minted from each).
    pub secrets: Arc<dyn SecretStore>,
    /// Bootstrap progress.
    pub store: Arc<dyn ClusterStore>,
    /// Machines to mark `Installed`.
    pub inventory: Arc<dyn Inventory>,
    /// Encrypted admin kubeconfigs.
    pub kubeconfigs: Arc<dyn KubeconfigStore>,
    /// The ArgoCD hand-off.
    pub argo: Arc<CachedArgo>,
}

impl Supervisor {
    /// Supervises every cluster until `shutdown`; returns only then (a cluster that
    /// finished leaves the others running, and `serve` treats an early return of a
    /// task as a fault).
    pub async fn run(mut self, shutdown: CancellationToken) {
        let log = Arc::new(Locked {
            inner: self.store.clone(),
            lock: std::sync::Mutex::new(()),
        });
        self.store = log.clone();
        let this = Arc::new(Running { sup: self, log });
        let mut tasks = tokio::task::JoinSet::new();
        for name in this.clusters.keys() {
            let (this, name, token) = (this.clone(), name.clone(), shutdown.clone());
            tasks.spawn(async move { this.supervise(&name, token).await });
        }
        while tasks.join_next().await.is_some() {}
        shutdown.cancelled().await;
    }
}

/// A running [`Supervisor`] and its store's write lock.
#[derive(Debug)]
struct Running {
    sup: Supervisor,
    log: Arc<Locked>,
}

impl std::ops::Deref for Running {
    type Target = Supervisor;
    fn deref(&self) -> &Supervisor {
        &self.sup
    }
}

impl Running {
    async fn supervise(self: Arc<Self>, name: &str, shutdown: CancellationToken) {
        let min = Duration::from_secs(self.settings.retry_min_secs.max(1));
        let max = Duration::from_secs(self.settings.retry_max_secs.max(1)).max(min);
        let mut backoff = min;
        let mut last: Option<String> = None;
        let mut parked = false;
        let finished = matches!(self.store.load(name), Ok(Some(s)) if s.step.is_terminal());
        if !finished && self.settings.hand_off {
            // Checked (and the manifest parsed) next to the workflow, reported now,
            // waited for only in the HandOff step: etcd does not need it.
            let (this, n) = (self.clone(), name.to_string());
            tokio::spawn(async move {
                if let Err(e) = this.argo.get().await {
                    this.report(&n, &format!("GitOps hand-off not ready: {e}"));
                }
            });
        }
        loop {
            let began = tokio::time::Instant::now();
            let attempt = {
                let (this, n, t) = (self.clone(), name.to_string(), shutdown.clone());
                tokio::spawn(async move { this.attempt(&n, t, parked).await }).await
            };
            parked = false;
            let why = match attempt {
                Ok(Ok(Step::HandedOff)) => {
                    tracing::info!(cluster = %name, "bootstrap HandedOff: Git owns the cluster; nothing more to do");
                    return;
                }
                Ok(Ok(Step::Failed)) => {
                    let failure = self
                        .store
                        .load(name)
                        .ok()
                        .flatten()
                        .and_then(|s| s.failure)
                        .unwrap_or_default();
                    tracing::error!(cluster = %name, %failure, "bootstrap Failed; waiting for an operator retry (`provisioner clusters retry`)");
                    let poll = Duration::from_millis(self.settings.poll_ms.clamp(10, 2_000));
                    if !crate::cluster::await_retry::until_retried(self.store.as_ref(), name, poll, &shutdown)
                        .await
                    {
                        return;
                    }
                    tracing::info!(cluster = %name, "bootstrap retried by an operator; resuming at the failed step");
                    (backoff, last) = (min, None);
                    continue;
                }
                Ok(Ok(step)) if shutdown.is_cancelled() => {
                    tracing::info!(cluster = %name, %step, "bootstrap paused by shutdown; resumes at the next start");
                    return;
                }
                Ok(Ok(step)) => {
                    format!("bootstrap not running: orchestrator stopped at {step} unexpectedly (retrying)")
                }
                Ok(Err(Blocked::HandOff(why))) => {
                    parked = true;
                    format!("HandOff parked until the GitOps hand-off is possible: {why} (retrying)")
                }
                Ok(Err(Blocked::Error(why))) => format!("bootstrap not running: {why} (retrying)"),
                Err(e) => {
                    format!("bootstrap not running: orchestrator task ended abnormally: {e} (retrying)")
                }
            };
            if shutdown.is_cancelled() {
                return;
            }
            // A run that went on for a while before failing starts the backoff afresh.
            if began.elapsed() > max {
                backoff = min;
            }
            metrics::counter!("provisioner_bootstrap_start_failures_total", "cluster" => name.to_string())
                .increment(1);
            // One event per distinct problem: a retry loop must not flood the log.
            if last.as_deref() != Some(why.as_str()) {
                self.report(name, &why);
                last = Some(why);
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(max);
        }
    }

    /// One run of the orchestrator: `Ok(step)` where it stopped, `Err` why it could
    /// not run (retried by the caller). `parked`: the last attempt stopped at HandOff
    /// for want of the ArgoCD manifest.
    async fn attempt(&self, name: &str, shutdown: CancellationToken, parked: bool) -> Result<Step, Blocked> {
        let state = self.store.load(name).map_err(|e| format!("cluster store: {e}"))?;
        // A finished cluster needs nothing: no identity, no dial, no manifest.
        if let Some(s) = &state
            && s.step.is_terminal()
        {
            return Ok(s.step);
        }
        let cluster = self
            .clusters
            .get(name)
            .ok_or_else(|| format!("{name} is not a Talos cluster of infra/"))?;
        let (plan, macs) = plan_for(cluster, &self.settings).map_err(|e| e.to_string())?;
        let identity = BundleIdentity::new(self.secrets.clone())
            .talos_identity(name)
            .map_err(|e| e.to_string())?;
        let talos = TonicTalos::new(
            &identity,
            self.talos_port,
            Duration::from_secs(self.settings.attempt_timeout_secs.max(1)),
        )
        .map_err(|e| e.to_string())?;
        let talos: Arc<dyn TalosApi> = Arc::new(talos);
        // HandOff runs only with a usable manifest, and its clock restarts when a parked
        // hand-off can go on: a forgotten `images pull argocd` must not fail the cluster
        // for good (Failed waits for an operator).
        if plan.hand_off
            && let Some(s) = state.as_ref().filter(|s| s.step == Step::HandOff)
        {
            self.argo
                .get()
                .await
                .map_err(|e| Blocked::HandOff(e.to_string()))?;
            if parked {
                let mut s = s.clone();
                s.step_started = OffsetDateTime::now_utc();
                self.store
                    .save(&s, &[])
                    .map_err(|e| format!("cluster store: {e}"))?;
            }
        }
        // The appliance runs long before anyone powers the nodes on: the workflow (and
        // WaitNodes' timeout, meant for nodes that install much later than the others)
        // starts when the first control-plane node answers over mTLS, i.e. installed.
        if state
            .as_ref()
            .is_none_or(|s| s.step == Step::WaitNodes && s.installed.is_empty())
        {
            if !first_answer(talos.as_ref(), &plan, &shutdown).await {
                return Ok(Step::WaitNodes);
            }
            if let Some(mut s) = state {
                s.step_started = OffsetDateTime::now_utc();
                self.store
                    .save(&s, &[])
                    .map_err(|e| format!("cluster store: {e}"))?;
            }
        }
        // Reaching HandOff without a manifest stops this run (parks) instead of letting
        // the step's timeout run out.
        let park = shutdown.child_token();
        let hand_off = Arc::new(Parking {
            argo: self.argo.clone(),
            park: park.clone(),
            why: std::sync::Mutex::new(None),
        });
        let orchestrator = Orchestrator {
            plan,
            talos,
            store: self.store.clone(),
            inventory: Some((self.inventory.clone(), macs)),
            kubeconfigs: self.kubeconfigs.clone(),
            api: Arc::new(KubeReadyz),
            hand_off: hand_off.clone(),
        };
        let step = orchestrator.run(park.clone()).await.map_err(|e| e.to_string())?;
        if park.is_cancelled() && !shutdown.is_cancelled() {
            let why = hand_off.why.lock().ok().and_then(|mut w| w.take());
            return Err(Blocked::HandOff(why.unwrap_or_default()));
        }
        Ok(step)
    }

    /// A warning in the log and a `Waiting` event on the cluster (its status shows it).
    fn report(&self, name: &str, detail: &str) {
        tracing::warn!(cluster = %name, "{detail}");
        let event = ClusterEvent {
            at: OffsetDateTime::now_utc(),
            kind: ClusterEventKind::Waiting,
            detail: detail.to_string(),
        };
        if let Err(e) = self.log.append(name, event) {
            tracing::warn!(cluster = %name, error = %e, "cannot record the cluster event");
        }
    }
}

/// Why an attempt did not reach a terminal step.
#[derive(Debug)]
enum Blocked {
    /// It could not start, or stopped on an error.
    Error(String),
    /// It is at HandOff and the ArgoCD settings or manifest are not usable.
    HandOff(String),
}

impl From<String> for Blocked {
    fn from(why: String) -> Self {
        Self::Error(why)
    }
}

/// The per-run [`HandOff`]: [`CachedArgo`], but a manifest that cannot be loaded
/// cancels the run (`park`) and keeps the reason.
#[derive(Debug)]
struct Parking {
    argo: Arc<CachedArgo>,
    park: CancellationToken,
    why: std::sync::Mutex<Option<String>>,
}

impl HandOff for Parking {
    fn hand_off<'a>(
        &'a self,
        cluster: &'a str,
        kubeconfig: &'a [u8],
    ) -> BoxFuture<'a, Result<(), CallError>> {
        async move {
            match self.argo.get().await {
                Ok(argo) => argo.hand_off(cluster, kubeconfig).await,
                Err(e) => {
                    if let Ok(mut w) = self.why.lock() {
                        *w = Some(e.to_string());
                    }
                    self.park.cancel();
                    Err(e)
                }
            }
        }
        .boxed()
    }

    fn argo_status<'a>(
        &'a self,
        cluster: &'a str,
        kubeconfig: &'a [u8],
    ) -> BoxFuture<'a, Result<provisioner_core::gitops::health::Report, CallError>> {
        // The manifest was loaded for the apply; reading statuses needs no park.
        async move { self.argo.get().await?.argo_status(cluster, kubeconfig).await }.boxed()
    }
}

/// Polls `Version` on the control-plane nodes until one answers (`true`) or
/// `shutdown` fires (`false`). No deadline: nodes may be powered on any day.
async fn first_answer(talos: &dyn TalosApi, plan: &Plan, shutdown: &CancellationToken) -> bool {
    let mut logged = false;
    loop {
        let probes = plan
            .control_plane
            .iter()
            .map(|ip| talos.version(Target::direct(*ip)));
        let answered = tokio::select! {
            () = shutdown.cancelled() => return false,
            r = futures::future::join_all(probes) => r.iter().any(Result::is_ok),
        };
        if answered {
            return true;
        }
        if !logged {
            tracing::info!(cluster = %plan.cluster, "bootstrap not started: no control-plane node answers the Talos API yet");
            logged = true;
        }
        tokio::select! {
            () = shutdown.cancelled() => return false,
            () = tokio::time::sleep(plan.poll.max(Duration::from_secs(1))) => {}
        }
    }
}

#[cfg(test)]
#[path = "supervisor_tests.rs"]
mod tests;
