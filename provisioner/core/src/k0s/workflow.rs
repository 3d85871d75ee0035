//! The k0s readiness and GitOps hand-off workflow as a pure state machine, the k0s
//! sibling of [`super::bootstrap`]: same persisted [`BootstrapState`] (with
//! [`Flow::K0s`]), same events, same store, same "persist, then act" contract.
//!
//! k0s needs no bootstrap call: kine/SQLite starts with the controller, and the
//! appliance already holds admin credentials (it owns the CA and mints a
//! `system:masters` client certificate). So the steps are (k0s-flatcar.md §9, §11.2):
//! `WaitK0s` (the controller's `K0sInstalled` callback, replayed from its timeline by
//! `core::k0s::progress`) → `WaitApi` (`GET /readyz` on `https://<controller>:6443`
//! with the admin certificate, the cluster CA as trust root) → `WaitWorkers` (every
//! node of the cluster definition is a Node with condition `Ready=True`; the
//! controller runs `--enable-worker`, so it is one of them) → `HandOff` (ArgoCD) →
//! `HandedOff` (after Argo CD reports the cluster's Applications Synced and Healthy,
//! [`super::argo_wait`]). Any step past its own timeout → `Failed`. A cluster that is not the
//! ArgoCD host hands off by registering itself in the host's ArgoCD, so its `HandOff`
//! waits (clock stopped) until the host is handed off.
//!
//! The workflow starts ([`start`]) only once the controller has begun installing
//! (stage 1 served): a cluster whose machines are still switched off is `Pending`,
//! not failing a timeout.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use time::OffsetDateTime;

use crate::cluster::bootstrap::{BootstrapState, Flow, Step, Timeouts, ev};
use crate::cluster::{ClusterEvent, ClusterEventKind};
use crate::k0s::progress::Phase;

/// What the k0s workflow is run for: fixed for a cluster, not persisted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct K0sPlan {
    /// Cluster name (infra/<name>.yaml).
    pub cluster: String,
    /// Nodes that must be Ready, by hostname (their Node name: stage 2 writes it to
    /// `/etc/hostname`), with the address from infra/ when known.
    pub nodes: BTreeMap<String, Option<IpAddr>>,
    /// Whether this cluster gets the ArgoCD hand-off; without it the workflow ends
    /// once the nodes are Ready.
    pub hand_off: bool,
    /// Per-step limits (`wait_k0s`, `wait_api`, `wait_workers`, `hand_off`).
    pub timeouts: Timeouts,
    /// Pause between polls of a step that is not done yet.
    pub poll: Duration,
}

/// One Node as `GET /api/v1/nodes` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeStatus {
    /// `metadata.name`.
    pub name: String,
    /// `status.addresses` that parse as IP addresses.
    pub addresses: Vec<IpAddr>,
    /// `status` of the `Ready` condition (`True`, `False`, `Unknown`); `None` when
    /// the kubelet has not reported one yet.
    pub ready: Option<String>,
}

/// What the daemon saw when it did the last piece of work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum K0sObservation {
    /// The daemon (re)started the workflow.
    Resumed,
    /// The controller machine's k0s phase, replayed from its timeline, or why it
    /// could not be read.
    // arch: string-result-ok (data): what a probe said, kept as the workflow saw it
    Controller(Result<Phase, String>),
    /// `/readyz` answered ok (`Ok`) or not.
    // arch: string-result-ok (data): what a probe said, kept as the workflow saw it
    Readyz(Result<(), String>),
    /// The Node list, or why it could not be read.
    // arch: string-result-ok (data): what a probe said, kept as the workflow saw it
    Nodes(Result<Vec<NodeStatus>, String>),
    /// The ArgoCD hand-off's objects were applied (`Ok`) or not, worth retrying.
    // arch: string-result-ok (data): what a probe said, kept as the workflow saw it
    HandOff(Result<(), String>),
    /// Argo CD's report on the cluster's Applications ([`super::argo_wait`]).
    // arch: string-result-ok (data): what a probe said, kept as the workflow saw it
    Argo(Result<crate::gitops::health::Report, String>),
    /// The hand-off cannot start for a reason outside this cluster: the cluster
    /// ArgoCD runs on (`gitops/settings.yaml` `argocd.host`) is not handed off yet.
    /// The step waits without its clock running (the clock restarts), so its
    /// timeout measures this cluster's own hand-off, not the other cluster's bootstrap.
    HandOffBlocked(String),
}

/// The next piece of I/O the daemon performs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum K0sWork {
    /// Replay the controller's timeline.
    CheckController,
    /// `GET /readyz` with the admin kubeconfig.
    CheckReadyz,
    /// `GET /api/v1/nodes` with the admin kubeconfig.
    CheckNodes,
    /// Run the ArgoCD hand-off with the admin kubeconfig.
    HandOff,
    /// Read Argo CD's report on the cluster's Applications.
    CheckArgo,
}

/// The result of one [`step`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct K0sTransition {
    /// The state to persist.
    pub next: BootstrapState,
    /// Events to persist with it.
    pub events: Vec<ClusterEvent>,
    /// What to do after persisting; `None` when the workflow is over.
    pub work: Option<K0sWork>,
    /// How long to wait before doing it (a poll interval when the step is not done).
    pub delay: Duration,
}

/// The first state of `plan`'s cluster, once its controller is past `Pending`;
/// `None` while nothing has been served to it (no clock runs yet).
pub fn start(plan: &K0sPlan, controller: Phase, now: OffsetDateTime) -> Option<K0sTransition> {
    if controller == Phase::Pending {
        return None;
    }
    let mut next = BootstrapState::new(&plan.cluster, now);
    next.flow = Flow::K0s;
    next.step = Step::WaitK0s;
    let events = vec![ev(
        now,
        ClusterEventKind::StepChanged,
        format!(
            "Pending -> {}: the controller started installing ({})",
            Step::WaitK0s,
            phase_name(controller)
        ),
    )];
    let work = work_for(&next);
    Some(K0sTransition {
        next,
        events,
        work,
        delay: Duration::ZERO,
    })
}

/// Advances the workflow by one observation. Pure: no clock, no I/O.
pub fn step(
    plan: &K0sPlan,
    state: &BootstrapState,
    obs: K0sObservation,
    now: OffsetDateTime,
) -> K0sTransition {
    let mut t = K0sTransition {
        next: state.clone(),
        events: Vec::new(),
        work: None,
        delay: Duration::ZERO,
    };
    if state.step.is_terminal() {
        return t;
    }
    // `Some(reason)` when the step is not done yet: poll again, unless out of time.
    let waiting: Option<String> = match obs {
        K0sObservation::Resumed => {
            t.events.push(ev(
                now,
                ClusterEventKind::Resumed,
                format!("at step {}", state.step),
            ));
            None
        }
        K0sObservation::Controller(r) if state.step == Step::WaitK0s => match r {
            Ok(Phase::K0sInstalled) => {
                enter(&mut t, Step::WaitApi, now, "the controller reported K0sInstalled");
                None
            }
            Ok(other) => Some(format!(
                "the controller is {}; waiting for K0sInstalled",
                phase_name(other)
            )),
            Err(e) => Some(format!("controller progress: {e}")),
        },
        K0sObservation::Readyz(r) if state.step == Step::WaitApi => match r {
            Ok(()) => {
                enter(
                    &mut t,
                    Step::WaitWorkers,
                    now,
                    "Kubernetes API ready (/readyz with the admin certificate)",
                );
                None
            }
            Err(e) => Some(format!("/readyz: {e}")),
        },
        K0sObservation::Nodes(r) if state.step == Step::WaitWorkers => match r {
            Ok(nodes) => match nodes_problem(plan, &nodes) {
                None if plan.hand_off => {
                    enter(
                        &mut t,
                        Step::HandOff,
                        now,
                        &format!("{} node(s) Ready", plan.nodes.len()),
                    );
                    None
                }
                None => {
                    enter(
                        &mut t,
                        Step::HandedOff,
                        now,
                        &format!(
                            "{} node(s) Ready; no ArgoCD hand-off for this cluster",
                            plan.nodes.len()
                        ),
                    );
                    None
                }
                Some(p) => Some(p),
            },
            Err(e) => Some(format!("listing Nodes: {e}")),
        },
        K0sObservation::HandOff(r) if state.step == Step::HandOff && state.applied_at.is_none() => match r {
            Ok(()) => {
                t.next
                    .applied(&mut t.events, now, "ArgoCD hand-off applied (cluster registered)");
                None
            }
            Err(e) => Some(format!("hand-off: {e}")),
        },
        K0sObservation::Argo(r) if state.step == Step::HandOff && state.applied_at.is_some() => {
            match t.next.observe_argo(&mut t.events, r, now) {
                None => {
                    enter(&mut t, Step::HandedOff, now, crate::cluster::argo_wait::DONE);
                    None
                }
                Some(why) => Some(why),
            }
        }
        K0sObservation::HandOffBlocked(why) if state.step == Step::HandOff && state.applied_at.is_none() => {
            t.next.step_started = now;
            t.events.push(ev(now, ClusterEventKind::Waiting, why));
            t.delay = plan.poll;
            None
        }
        // An answer for a step we are no longer in (a late result after a resume):
        // ignore it and carry on with the current step.
        _ => None,
    };
    if let Some(reason) = waiting
        && let Some(poll) =
            t.next
                .wait_or_time_out(&mut t.events, state, &plan.timeouts, plan.poll, now, reason)
    {
        t.delay = poll;
    }
    t.work = work_for(&t.next);
    t
}

/// The work that drives `state`'s step forward (`None` for a step that is not one
/// of the k0s workflow's).
pub fn work_for(state: &BootstrapState) -> Option<K0sWork> {
    match state.step {
        Step::WaitK0s => Some(K0sWork::CheckController),
        Step::WaitApi => Some(K0sWork::CheckReadyz),
        Step::WaitWorkers => Some(K0sWork::CheckNodes),
        Step::HandOff if state.applied_at.is_some() => Some(K0sWork::CheckArgo),
        Step::HandOff => Some(K0sWork::HandOff),
        _ => None,
    }
}

/// Why the nodes are not all Ready yet: each planned node must be listed (by name,
/// as the kubelet lower-cases it, or by one of its addresses) with `Ready=True`.
pub fn nodes_problem(plan: &K0sPlan, nodes: &[NodeStatus]) -> Option<String> {
    let mut missing = Vec::new();
    let mut not_ready = Vec::new();
    for (host, ip) in &plan.nodes {
        let found = nodes
            .iter()
            .find(|n| n.name.eq_ignore_ascii_case(host) || ip.is_some_and(|ip| n.addresses.contains(&ip)));
        match found {
            None => missing.push(host.clone()),
            Some(n) if n.ready.as_deref() == Some("True") => {}
            Some(n) => not_ready.push(format!(
                "{host} (Ready={})",
                n.ready.as_deref().unwrap_or("not reported")
            )),
        }
    }
    if missing.is_empty() && not_ready.is_empty() {
        return None;
    }
    let mut parts = Vec::new();
    if !not_ready.is_empty() {
        parts.push(format!("not Ready: {}", not_ready.join(", ")));
    }
    if !missing.is_empty() {
        parts.push(format!("no Node yet: {}", missing.join(", ")));
    }
    Some(parts.join("; "))
}

fn phase_name(p: Phase) -> String {
    match p {
        Phase::Pending => "Pending".into(),
        Phase::Stage1Served { attempt } => format!("Stage1Served (attempt {attempt})"),
        Phase::DiskInstalled => "DiskInstalled".into(),
        Phase::K0sInstalled => "K0sInstalled".into(),
    }
}

fn enter(t: &mut K0sTransition, step: Step, now: OffsetDateTime, why: &str) {
    t.next.enter(&mut t.events, step, now, why);
}

#[cfg(test)]
mod restart_tests;
#[cfg(test)]
mod tests;
