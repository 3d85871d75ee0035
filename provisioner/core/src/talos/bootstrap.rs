//! The cluster bootstrap workflow as a pure state machine: `(plan, state, observation,
//! now) -> (next state, events, what to do next)`. The daemon persists the returned
//! state and events in one durable commit *before* it performs the returned work, so a
//! restart at any point resumes from the last recorded step and never repeats a step
//! that was recorded as done. That is what keeps `Bootstrap` to exactly one node
//! (talos.md §16.3 step 5: persist before calling, or a restart risks a split brain).
//!
//! Steps (talos.md §10.4, §16.3; argocd-gitops.md §10):
//! `WaitNodes` (mTLS `Version` answers on every control-plane node; each answer marks
//! that node's machine `Installed`) → `Bootstrap` (node chosen = lowest IP, recorded,
//! then `Bootstrap` retried on FailedPrecondition / DeadlineExceeded / connection errors,
//! `AlreadyExists` = done) → `WaitEtcd` (etcd Running + healthy everywhere, member list
//! complete, no learner) → `FetchKubeconfig` → `WaitApi` (`/readyz`) → `HandOff`
//! (ArgoCD install + root app, then, with its own clock and timeout, Argo CD's
//! report until every Application of the cluster is Synced and Healthy:
//! [`crate::cluster::argo_wait`]) → `HandedOff`. Any step past its own timeout → `Failed`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Duration;

use time::OffsetDateTime;

use crate::cluster::{ClusterEvent, ClusterEventKind};

/// What the workflow is run for: fixed for a cluster, not persisted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Cluster name (infra/<name>.yaml).
    pub cluster: String,
    /// Control-plane node addresses (the talosconfig endpoints; never the VIP).
    pub control_plane: BTreeSet<IpAddr>,
    /// Whether this cluster gets ArgoCD; without it the workflow ends after `/readyz`.
    pub hand_off: bool,
    /// Per-step limits.
    pub timeouts: Timeouts,
    /// Pause between polls of a step that is not done yet.
    pub poll: Duration,
}

/// How one `Bootstrap` call ended, classified per talos.md §10.2/§10.3.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootstrapOutcome {
    /// The node accepted the bootstrap.
    Accepted,
    /// `AlreadyExists`: etcd already has data, i.e. a previous call succeeded.
    AlreadyDone,
    /// FailedPrecondition (CRI or time sync not ready), DeadlineExceeded, connection
    /// refused or reset: try again.
    Retry(String),
    /// Anything else (e.g. "can only be performed on a control plane node").
    Fatal(String),
}

/// One node's view of its etcd service (from `ServiceList`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdService {
    /// State of the last service event (`Running`, `Preparing`, ...).
    pub state: String,
    /// `health.healthy`.
    pub healthy: bool,
}

/// One etcd member (from `EtcdMemberList`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdMember {
    /// Member hostname.
    pub hostname: String,
    /// Still a learner (not yet voting).
    pub is_learner: bool,
}

/// What the daemon saw when it did the last piece of work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observation {
    /// The daemon (re)started the workflow. `kubeconfig_available` says whether the
    /// secret store still holds the kubeconfig (it is not part of this state).
    Resumed {
        /// A kubeconfig for this cluster is available.
        kubeconfig_available: bool,
    },
    /// `Version` answers: nodes that answered, and errors of those that did not.
    Versions {
        /// Answered over mTLS.
        ok: BTreeSet<IpAddr>,
        /// Did not answer, with why.
        failed: BTreeMap<IpAddr, String>,
    },
    /// The `Bootstrap` call ended.
    Bootstrap(BootstrapOutcome),
    /// etcd as seen through `ServiceList` on every node and `EtcdMemberList`.
    Etcd {
        /// Per node: etcd service state, or `None` if the node did not answer.
        services: BTreeMap<IpAddr, Option<EtcdService>>,
        /// Members as one node reports them; empty if nobody answered.
        members: Vec<EtcdMember>,
    },
    /// The kubeconfig was fetched and stored (`Ok`) or not.
    // arch: string-result-ok (data): what a probe said, kept as the workflow saw it
    Kubeconfig(Result<(), String>),
    /// `/readyz` answered ok (`Ok`) or not.
    // arch: string-result-ok (data): what a probe said, kept as the workflow saw it
    Readyz(Result<(), String>),
    /// The ArgoCD hand-off's objects were applied (`Ok`) or not, worth retrying.
    // arch: string-result-ok (data): what a probe said, kept as the workflow saw it
    HandOff(Result<(), String>),
    /// Argo CD's report on the cluster's Applications, or why it could not be read.
    // arch: string-result-ok (data): what a probe said, kept as the workflow saw it
    Argo(Result<crate::gitops::health::Report, String>),
}

/// The next piece of I/O the daemon performs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Work {
    /// Call `Version` on these nodes.
    ProbeVersions(BTreeSet<IpAddr>),
    /// Call `Bootstrap` on this node.
    Bootstrap(IpAddr),
    /// `ServiceList` on every control-plane node and `EtcdMemberList`.
    CheckEtcd,
    /// Fetch the kubeconfig from this node and store it.
    FetchKubeconfig(IpAddr),
    /// Probe `/readyz` with the stored kubeconfig.
    CheckReadyz,
    /// Run the ArgoCD hand-off (install, register, apply the root app).
    HandOff,
    /// Read Argo CD's report on the cluster's Applications.
    CheckArgo,
}

/// The result of one [`step`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// The state to persist.
    pub next: BootstrapState,
    /// Events to persist with it.
    pub events: Vec<ClusterEvent>,
    /// Machines to mark `Installed` (their next netboot boots from disk).
    pub mark_installed: Vec<IpAddr>,
    /// What to do after persisting; `None` when the workflow is over.
    pub work: Option<Work>,
    /// How long to wait before doing it (a poll interval when the step is not done).
    pub delay: Duration,
}

use crate::cluster::bootstrap::{BootstrapState, Step, Timeouts, ev};

/// Advances the workflow by one observation. Pure: no clock, no I/O.
pub fn step(plan: &Plan, state: &BootstrapState, obs: Observation, now: OffsetDateTime) -> Transition {
    let mut t = Transition {
        next: state.clone(),
        events: Vec::new(),
        mark_installed: Vec::new(),
        work: None,
        delay: Duration::ZERO,
    };
    // A k0s record (`cluster::k0s`) is not this workflow's to drive.
    if state.step.is_terminal() || state.flow != crate::cluster::bootstrap::Flow::Talos {
        return t;
    }
    // `Some(reason)` when the step is not done yet: poll again, unless out of time.
    let waiting: Option<String> = match obs {
        Observation::Resumed { kubeconfig_available } => {
            t.events.push(ev(
                now,
                ClusterEventKind::Resumed,
                format!("at step {}", state.step),
            ));
            // The kubeconfig lives in the secret store, not here; if it is gone, get
            // it again (idempotent) rather than fail.
            if matches!(state.step, Step::WaitApi | Step::HandOff) && !kubeconfig_available {
                enter(
                    &mut t,
                    Step::FetchKubeconfig,
                    now,
                    "kubeconfig not in the secret store",
                );
            }
            None
        }
        Observation::Versions { ok, failed } => {
            let mut pending = None;
            if state.step == Step::WaitNodes {
                for ip in ok.iter().filter(|ip| plan.control_plane.contains(ip)) {
                    if t.next.installed.insert(*ip) {
                        t.mark_installed.push(*ip);
                        t.events.push(ev(
                            now,
                            ClusterEventKind::NodeInstalled,
                            format!("{ip} answered Version over mTLS"),
                        ));
                    }
                }
                if plan.control_plane.is_empty() {
                    fail(&mut t, now, "the cluster has no control-plane node".into());
                } else if plan.control_plane.is_subset(&t.next.installed) {
                    // Lowest IP, as Talos' own bootstrap helper picks (talos.md §10.3).
                    let node = plan.control_plane.iter().next().copied();
                    t.next.bootstrap_node = node;
                    let node = node.map(|n| n.to_string()).unwrap_or_default();
                    enter(
                        &mut t,
                        Step::Bootstrap,
                        now,
                        &format!("bootstrap node chosen: {node} (lowest IP)"),
                    );
                } else {
                    let missing: Vec<String> = plan
                        .control_plane
                        .difference(&t.next.installed)
                        .map(|ip| match failed.get(ip) {
                            Some(e) => format!("{ip} ({e})"),
                            None => ip.to_string(),
                        })
                        .collect();
                    pending = Some(format!("waiting for Version from {}", missing.join(", ")));
                }
            }
            pending
        }
        Observation::Bootstrap(outcome) if state.step == Step::Bootstrap => {
            t.next.bootstrap_attempts += 1;
            let node = state.bootstrap_node.map(|n| n.to_string()).unwrap_or_default();
            match outcome {
                BootstrapOutcome::Accepted => {
                    enter(
                        &mut t,
                        Step::WaitEtcd,
                        now,
                        &format!("Bootstrap accepted by {node}"),
                    );
                    None
                }
                BootstrapOutcome::AlreadyDone => {
                    enter(
                        &mut t,
                        Step::WaitEtcd,
                        now,
                        &format!("{node}: etcd already bootstrapped (AlreadyExists)"),
                    );
                    None
                }
                BootstrapOutcome::Retry(why) => Some(format!("Bootstrap on {node} not possible yet: {why}")),
                BootstrapOutcome::Fatal(why) => {
                    fail(&mut t, now, format!("Bootstrap on {node} refused: {why}"));
                    None
                }
            }
        }
        Observation::Etcd { services, members } if state.step == Step::WaitEtcd => {
            match etcd_problem(plan, &services, &members) {
                None => {
                    enter(
                        &mut t,
                        Step::FetchKubeconfig,
                        now,
                        &format!("etcd healthy with {} voting members", members.len()),
                    );
                    None
                }
                Some(p) => Some(p),
            }
        }
        Observation::Kubeconfig(r) if state.step == Step::FetchKubeconfig => match r {
            Ok(()) => {
                enter(&mut t, Step::WaitApi, now, "kubeconfig fetched and stored");
                None
            }
            Err(e) => Some(format!("kubeconfig: {e}")),
        },
        Observation::Readyz(r) if state.step == Step::WaitApi => match r {
            Ok(()) if plan.hand_off => {
                enter(&mut t, Step::HandOff, now, "Kubernetes API ready");
                None
            }
            Ok(()) => {
                enter(
                    &mut t,
                    Step::HandedOff,
                    now,
                    "Kubernetes API ready; no ArgoCD on this cluster",
                );
                None
            }
            Err(e) => Some(format!("/readyz: {e}")),
        },
        Observation::HandOff(r) if state.step == Step::HandOff && state.applied_at.is_none() => match r {
            Ok(()) => {
                t.next.applied(
                    &mut t.events,
                    now,
                    "ArgoCD installed and the root Application applied",
                );
                None
            }
            Err(e) => Some(format!("hand-off: {e}")),
        },
        Observation::Argo(r) if state.step == Step::HandOff && state.applied_at.is_some() => {
            match t.next.observe_argo(&mut t.events, r, now) {
                None => {
                    enter(&mut t, Step::HandedOff, now, crate::cluster::argo_wait::DONE);
                    None
                }
                Some(why) => Some(why),
            }
        }
        // An answer for a step we are no longer in (e.g. a late result after resume):
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
    t.work = work_for(plan, &t.next);
    t
}

/// The work that drives `state`'s step forward.
pub fn work_for(plan: &Plan, state: &BootstrapState) -> Option<Work> {
    match state.step {
        Step::WaitNodes => Some(Work::ProbeVersions(
            plan.control_plane.difference(&state.installed).copied().collect(),
        )),
        Step::Bootstrap => state.bootstrap_node.map(Work::Bootstrap),
        Step::WaitEtcd => Some(Work::CheckEtcd),
        Step::FetchKubeconfig => state
            .bootstrap_node
            .or_else(|| plan.control_plane.iter().next().copied())
            .map(Work::FetchKubeconfig),
        Step::WaitApi => Some(Work::CheckReadyz),
        Step::HandOff if state.applied_at.is_some() => Some(Work::CheckArgo),
        Step::HandOff => Some(Work::HandOff),
        // k0s steps (`cluster::k0s`): a Talos plan never enters them.
        Step::WaitK0s | Step::WaitWorkers | Step::HandedOff | Step::Failed => None,
    }
}

/// Why etcd is not healthy yet, per `talosctl health`'s checks (talos.md §10.4 step 4):
/// etcd's last event `Running` and healthy on every control-plane node, one member
/// per control-plane node, none a learner.
fn etcd_problem(
    plan: &Plan,
    services: &BTreeMap<IpAddr, Option<EtcdService>>,
    members: &[EtcdMember],
) -> Option<String> {
    for ip in &plan.control_plane {
        match services.get(ip) {
            Some(Some(s)) if s.state == "Running" && s.healthy => {}
            Some(Some(s)) => return Some(format!("etcd on {ip} is {} (healthy: {})", s.state, s.healthy)),
            _ => return Some(format!("etcd on {ip}: no answer")),
        }
    }
    if members.len() < plan.control_plane.len() {
        return Some(format!(
            "{} of {} etcd members joined",
            members.len(),
            plan.control_plane.len()
        ));
    }
    if let Some(m) = members.iter().find(|m| m.is_learner) {
        return Some(format!("etcd member {} is still a learner", m.hostname));
    }
    None
}

fn enter(t: &mut Transition, step: Step, now: OffsetDateTime, why: &str) {
    t.next.enter(&mut t.events, step, now, why);
}

fn fail(t: &mut Transition, now: OffsetDateTime, why: String) {
    t.next.fail(&mut t.events, now, why);
}

#[cfg(test)]
mod tests;
