//! The persisted progress shared by both cluster workflows (Talos:
//! [`crate::talos::bootstrap`], k0s: [`crate::k0s::workflow`]): the step a cluster is
//! in, when it entered it, each step's timeout, and the "move, wait or fail" rules
//! both state machines apply to it. Persisted as one record per cluster
//! ([`super::ClusterStore`]).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::ClusterEvent;

/// Where a cluster's bootstrap is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Step {
    /// Waiting for every control-plane node to answer `Version` over mTLS.
    WaitNodes,
    /// The bootstrap node is recorded; `Bootstrap` is being called on it.
    Bootstrap,
    /// Waiting for etcd to be healthy with every member joined.
    WaitEtcd,
    /// Fetching the admin kubeconfig through the `Kubeconfig` stream.
    FetchKubeconfig,
    /// Waiting for the Kubernetes API's `/readyz`.
    WaitApi,
    /// k0s only: waiting for the controller's `K0sInstalled` callback
    /// ([`super::k0s`]).
    WaitK0s,
    /// k0s only: waiting until every node of the cluster is a Ready Node.
    WaitWorkers,
    /// Installing ArgoCD and applying the root app-of-apps, then waiting until Argo
    /// CD reports the cluster's Applications Synced and Healthy.
    HandOff,
    /// Done: Git owns the cluster; the appliance never applies to it again.
    HandedOff,
    /// A step timed out or failed for good; see [`BootstrapState::failure`].
    Failed,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl Step {
    /// Whether the workflow has nothing more to do.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::HandedOff | Self::Failed)
    }
}

/// How long each step may take before the cluster is marked failed. The defaults
/// follow talos.md §10.3 (`Version` up to 10 min, here 15 for slow installs) and leave
/// room for image pulls in the later steps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Timeouts {
    /// `WaitNodes`.
    pub wait_nodes: Duration,
    /// `Bootstrap` (all retries together).
    pub bootstrap: Duration,
    /// `WaitEtcd`.
    pub wait_etcd: Duration,
    /// `FetchKubeconfig`.
    pub fetch_kubeconfig: Duration,
    /// `WaitApi`.
    pub wait_api: Duration,
    /// `HandOff` (ArgoCD install, readiness, root app).
    pub hand_off: Duration,
    /// `HandOff` after the root app is applied: until Argo CD reports every
    /// Application of the cluster Synced and Healthy (charts, image pulls, CRDs).
    pub argo_synced: Duration,
    /// k0s `WaitK0s`: the controller's two-stage install (Flatcar download and
    /// write, reboot, k0s download; `core::k0s::progress` allows 45 + 30 min).
    pub wait_k0s: Duration,
    /// k0s `WaitWorkers`: worker joins, CNI and kubelet start.
    pub wait_workers: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            wait_nodes: Duration::from_secs(15 * 60),
            bootstrap: Duration::from_secs(10 * 60),
            wait_etcd: Duration::from_secs(10 * 60),
            fetch_kubeconfig: Duration::from_secs(5 * 60),
            wait_api: Duration::from_secs(10 * 60),
            hand_off: Duration::from_secs(20 * 60),
            argo_synced: Duration::from_secs(30 * 60),
            wait_k0s: Duration::from_secs(90 * 60),
            wait_workers: Duration::from_secs(30 * 60),
        }
    }
}

impl Timeouts {
    /// The limit for `step`; terminal steps have none.
    pub fn for_step(&self, step: Step) -> Option<Duration> {
        match step {
            Step::WaitNodes => Some(self.wait_nodes),
            Step::Bootstrap => Some(self.bootstrap),
            Step::WaitEtcd => Some(self.wait_etcd),
            Step::FetchKubeconfig => Some(self.fetch_kubeconfig),
            Step::WaitApi => Some(self.wait_api),
            Step::HandOff => Some(self.hand_off),
            Step::WaitK0s => Some(self.wait_k0s),
            Step::WaitWorkers => Some(self.wait_workers),
            Step::HandedOff | Step::Failed => None,
        }
    }
}

/// Which workflow a [`BootstrapState`] belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Flow {
    /// Talos: [`crate::talos::bootstrap::step`].
    #[default]
    Talos,
    /// k0s on Flatcar: [`crate::k0s::workflow::step`].
    K0s,
}

impl Flow {
    fn is_talos(&self) -> bool {
        *self == Self::Talos
    }
}

/// The persisted progress of one cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootstrapState {
    /// Cluster name.
    pub cluster: String,
    /// The workflow (absent in records written before k0s had one: Talos).
    #[serde(default, skip_serializing_if = "Flow::is_talos")]
    pub flow: Flow,
    /// Current step.
    pub step: Step,
    /// When the current step started (its timeout counts from here).
    #[serde(with = "time::serde::rfc3339")]
    pub step_started: OffsetDateTime,
    /// Control-plane nodes that answered `Version` over mTLS.
    #[serde(default)]
    pub installed: BTreeSet<IpAddr>,
    /// The one node `Bootstrap` goes to, recorded before the first call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootstrap_node: Option<IpAddr>,
    /// `Bootstrap` calls made (including retried ones).
    #[serde(default)]
    pub bootstrap_attempts: u32,
    /// Why the cluster is `Failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
    /// The working step a `Failed` cluster stopped in: where an operator retry
    /// ([`super::retry`]) puts it back. Absent in records failed before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_step: Option<Step>,
    /// When the hand-off's objects were applied: from then on `HandOff` waits for
    /// Argo CD's report, under `Timeouts::argo_synced` ([`super::argo_wait`]).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    pub applied_at: Option<OffsetDateTime>,
    /// Each awaited Application's last reported `Sync/Health`, so every change is
    /// recorded once as an event.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub argo_apps: BTreeMap<String, String>,
}

impl BootstrapState {
    /// A cluster whose workflow starts now.
    pub fn new(cluster: &str, now: OffsetDateTime) -> Self {
        Self {
            cluster: cluster.to_string(),
            flow: Flow::Talos,
            step: Step::WaitNodes,
            step_started: now,
            installed: BTreeSet::new(),
            bootstrap_node: None,
            bootstrap_attempts: 0,
            failure: None,
            failed_step: None,
            applied_at: None,
            argo_apps: BTreeMap::new(),
        }
    }
}

/// An event of a workflow.
pub(crate) fn ev(
    at: OffsetDateTime,
    kind: super::ClusterEventKind,
    detail: impl Into<String>,
) -> ClusterEvent {
    ClusterEvent {
        at,
        kind,
        detail: detail.into(),
    }
}

impl BootstrapState {
    /// Moves to `step` at `now`, recording why (both workflows, Talos and k0s).
    pub(crate) fn enter(
        &mut self,
        events: &mut Vec<ClusterEvent>,
        step: Step,
        now: OffsetDateTime,
        why: &str,
    ) {
        let from = self.step;
        self.step = step;
        self.step_started = now;
        events.push(ev(
            now,
            super::ClusterEventKind::StepChanged,
            format!("{from} -> {step}: {why}"),
        ));
    }

    /// A step that is not done yet (`reason`): `Failed` once it has run past its own
    /// timeout (counted from when `current` entered it), else a `Waiting` event and
    /// `Some(poll)`, the delay before looking again. Shared by both workflows.
    pub(crate) fn wait_or_time_out(
        &mut self,
        events: &mut Vec<ClusterEvent>,
        current: &BootstrapState,
        timeouts: &Timeouts,
        poll: Duration,
        now: OffsetDateTime,
        reason: String,
    ) -> Option<Duration> {
        let limit = if current.step == Step::HandOff && current.applied_at.is_some() {
            timeouts.argo_synced
        } else {
            timeouts.for_step(current.step).unwrap_or(Duration::MAX)
        };
        if now - current.step_started >= limit {
            let why = format!(
                "step {} timed out after {}s: {reason}",
                current.step,
                limit.as_secs()
            );
            self.fail(events, now, why);
            None
        } else {
            events.push(ev(now, super::ClusterEventKind::Waiting, reason));
            Some(poll)
        }
    }

    /// Ends the workflow as `Failed` with `why`.
    pub(crate) fn fail(&mut self, events: &mut Vec<ClusterEvent>, now: OffsetDateTime, why: String) {
        self.failure = Some(why.clone());
        self.failed_step = Some(self.step);
        self.enter(events, Step::Failed, now, &why);
        events.push(ev(now, super::ClusterEventKind::Failed, why));
    }
}
