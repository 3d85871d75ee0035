//! The transition function of the bootstrap workflow (see the parent module).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use time::OffsetDateTime;

use crate::cluster::ClusterEventKind;
use crate::cluster::bootstrap::{
    BootstrapOutcome, BootstrapState, EtcdMember, EtcdService, Observation, Plan, Step, Transition, Work, ev,
};

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
