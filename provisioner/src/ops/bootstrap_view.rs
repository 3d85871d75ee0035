//! The bootstrap orchestrator's progress (`core::cluster::ClusterStore`) as the
//! API's per-cluster `bootstrap` object: its steps in workflow order (Talos or k0s,
//! from the record's `flow`), each done, running, failed or pending.

use std::sync::Arc;

use provisioner_core::cluster::bootstrap::{BootstrapState, Flow, Step};
use provisioner_core::cluster::retry::{RetryRefused, retry};
use provisioner_core::cluster::{ClusterEvent, ClusterEventKind, ClusterStore};
use time::OffsetDateTime;

use super::clusters::{
    BootstrapPhase, BootstrapProgress, BootstrapStatus, BootstrapStep, BootstrapStepStatus, LastEvent,
    RetryError,
};

/// The Talos workflow's working steps, in order (`HandedOff` and `Failed` are outcomes).
const ORDER: [Step; 6] = [
    Step::WaitNodes,
    Step::Bootstrap,
    Step::WaitEtcd,
    Step::FetchKubeconfig,
    Step::WaitApi,
    Step::HandOff,
];

/// The k0s workflow's working steps (`core::cluster::k0s`), in order.
const K0S_ORDER: [Step; 4] = [Step::WaitK0s, Step::WaitApi, Step::WaitWorkers, Step::HandOff];

fn order(flow: Flow) -> &'static [Step] {
    match flow {
        Flow::Talos => &ORDER,
        Flow::K0s => &K0S_ORDER,
    }
}

/// Reads bootstrap progress from the orchestrator's store.
#[derive(Debug, Clone)]
pub struct StoreBootstrap(pub Arc<dyn ClusterStore>);

impl StoreBootstrap {
    fn view(&self, s: &BootstrapState) -> BootstrapStatus {
        let order = order(s.flow);
        let events = self.0.events(&s.cluster).unwrap_or_default();
        let (phase, current) = match s.step {
            Step::HandedOff => (BootstrapPhase::Done, order.len()),
            Step::Failed => (
                BootstrapPhase::Failed,
                s.failed_step
                    .or_else(|| failed_in(&events, order))
                    .and_then(|f| order.iter().position(|x| *x == f))
                    .unwrap_or(order.len()),
            ),
            step => (
                BootstrapPhase::Running,
                order.iter().position(|x| *x == step).unwrap_or(0),
            ),
        };
        let steps = order
            .iter()
            .enumerate()
            .map(|(i, step)| {
                let status = match i.cmp(&current) {
                    std::cmp::Ordering::Less => BootstrapStepStatus::Done,
                    std::cmp::Ordering::Equal if phase == BootstrapPhase::Failed => {
                        BootstrapStepStatus::Failed
                    }
                    std::cmp::Ordering::Equal => BootstrapStepStatus::Running,
                    std::cmp::Ordering::Greater => BootstrapStepStatus::Pending,
                };
                BootstrapStep {
                    name: step.to_string(),
                    status,
                    started_at: (i == current).then_some(s.step_started),
                    finished_at: None,
                    detail: if i == current {
                        s.failure.clone().unwrap_or_default()
                    } else {
                        String::new()
                    },
                }
            })
            .collect();
        let detail = match (&s.failure, s.bootstrap_node) {
            (Some(f), _) => f.clone(),
            (None, _) if s.flow == Flow::K0s => format!("k0s: {}", s.step),
            (None, Some(n)) => format!("{} node(s) installed; bootstrap node {n}", s.installed.len()),
            (None, None) => format!("{} node(s) installed", s.installed.len()),
        };
        BootstrapStatus {
            phase,
            steps,
            detail,
            last_event: events.last().map(last_event),
        }
    }
}

/// Which working step a failed cluster stopped in, from its log (records written
/// before `failed_step` existed): the `From` of the last `From -> Failed` change.
fn failed_in(events: &[ClusterEvent], order: &[Step]) -> Option<Step> {
    let change = events
        .iter()
        .rev()
        .find(|e| e.kind == ClusterEventKind::StepChanged && e.detail.contains("-> Failed"))?;
    let from = change.detail.split(" -> ").next()?.trim();
    order.iter().copied().find(|s| s.to_string() == from)
}

fn last_event(e: &ClusterEvent) -> LastEvent {
    LastEvent {
        // The kind's wire name (snake_case), as the store and the event log spell it.
        kind: serde_json::to_value(e.kind)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default(),
        detail: e.detail.clone(),
        at: e.at,
    }
}

impl StoreBootstrap {
    fn status_with(&self, cluster: &str, not_started: Flow) -> BootstrapStatus {
        match self.0.load(cluster) {
            Ok(Some(s)) => self.view(&s),
            Ok(None) => BootstrapStatus {
                phase: BootstrapPhase::Pending,
                steps: order(not_started)
                    .iter()
                    .map(|s| BootstrapStep {
                        name: s.to_string(),
                        status: BootstrapStepStatus::Pending,
                        started_at: None,
                        finished_at: None,
                        detail: String::new(),
                    })
                    .collect(),
                last_event: None,
                detail: match not_started {
                    Flow::Talos => "bootstrap not started".into(),
                    Flow::K0s => {
                        "bootstrap not started (it starts once the controller is served its install)".into()
                    }
                },
            },
            Err(e) => BootstrapStatus {
                phase: BootstrapPhase::Unavailable,
                steps: Vec::new(),
                detail: format!("bootstrap store: {e}"),
                last_event: None,
            },
        }
    }
}

impl BootstrapProgress for StoreBootstrap {
    fn status(&self, cluster: &str) -> BootstrapStatus {
        self.status_with(cluster, Flow::Talos)
    }

    fn status_of_kind(&self, cluster: &str, kind: &str) -> BootstrapStatus {
        let flow = if kind == "k0s" { Flow::K0s } else { Flow::Talos };
        self.status_with(cluster, flow)
    }

    fn line(&self, cluster: &str, kind: &str) -> Vec<provisioner_core::cluster::progress::Milestone> {
        let flow = if kind == "k0s" { Flow::K0s } else { Flow::Talos };
        let state = self.0.load(cluster).ok().flatten();
        let events = self.0.events(cluster).unwrap_or_default();
        let flow = state.as_ref().map_or(flow, |s| s.flow);
        provisioner_core::cluster::progress::line(flow, state.as_ref(), &events)
    }

    fn retry(&self, cluster: &str) -> Result<BootstrapStatus, RetryError> {
        // Two retries at once would both see `Failed`: one at a time, so the second
        // sees the first's result and is refused.
        static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _one = ONE_AT_A_TIME
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let store = |e: provisioner_core::inventory::InventoryError| RetryError::Store(e.to_string());
        let Some(state) = self.0.load(cluster).map_err(store)? else {
            return Err(RetryError::NotFailed(format!(
                "the bootstrap of {cluster} has not started: nothing to retry"
            )));
        };
        let events = self.0.events(cluster).map_err(store)?;
        let hint = failed_in(&events, order(state.flow));
        let (next, events) = retry(&state, hint, OffsetDateTime::now_utc()).map_err(|e| match e {
            RetryRefused::NotFailed(_) => RetryError::NotFailed(e.to_string()),
            RetryRefused::UnknownStep | RetryRefused::NotAStep { .. } => {
                RetryError::UnknownStep(e.to_string())
            }
        })?;
        self.0.save(&next, &events).map_err(store)?;
        Ok(self.view(&next))
    }
}

#[cfg(test)]
mod tests {
    use provisioner_core::cluster::{ClusterEvent, MemClusterStore};
    use time::OffsetDateTime;

    use super::*;

    fn statuses(v: &BootstrapStatus) -> Vec<BootstrapStepStatus> {
        v.steps.iter().map(|s| s.status).collect()
    }

    #[test]
    fn steps_follow_the_orchestrator_state() {
        use BootstrapStepStatus::*;
        let store = Arc::new(MemClusterStore::default());
        let view = StoreBootstrap(store.clone());
        let none = view.status("lab");
        assert_eq!(none.phase, BootstrapPhase::Pending);
        assert_eq!(statuses(&none), [Pending; 6]);

        let mut s = BootstrapState::new("lab", OffsetDateTime::UNIX_EPOCH);
        s.step = Step::WaitEtcd;
        store.save(&s, &[]).unwrap();
        let v = view.status("lab");
        assert_eq!(v.phase, BootstrapPhase::Running);
        assert_eq!(statuses(&v), [Done, Done, Running, Pending, Pending, Pending]);
        assert_eq!(v.steps[2].name, "WaitEtcd");
        assert_eq!(v.steps[2].started_at, Some(OffsetDateTime::UNIX_EPOCH));

        s.step = Step::Failed;
        s.failure = Some("step WaitEtcd timed out after 600s".into());
        let ev = ClusterEvent {
            at: OffsetDateTime::UNIX_EPOCH,
            kind: ClusterEventKind::StepChanged,
            detail: "WaitEtcd -> Failed: timed out".into(),
        };
        store.save(&s, &[ev]).unwrap();
        let v = view.status("lab");
        assert_eq!(v.phase, BootstrapPhase::Failed);
        assert_eq!(statuses(&v), [Done, Done, Failed, Pending, Pending, Pending]);
        assert!(v.steps[2].detail.contains("timed out"));

        s.step = Step::HandedOff;
        s.failure = None;
        store.save(&s, &[]).unwrap();
        let v = view.status("lab");
        assert_eq!((v.phase, statuses(&v)), (BootstrapPhase::Done, vec![Done; 6]));
    }

    #[test]
    fn k0s_records_show_the_k0s_steps() {
        use BootstrapStepStatus::*;
        let store = Arc::new(MemClusterStore::default());
        let view = StoreBootstrap(store.clone());
        let pending = view.status_of_kind("beelink", "k0s");
        let names: Vec<&str> = pending.steps.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["WaitK0s", "WaitApi", "WaitWorkers", "HandOff"]);
        assert_eq!(
            (pending.phase, statuses(&pending)),
            (BootstrapPhase::Pending, vec![Pending; 4])
        );
        assert_eq!(view.status_of_kind("genmachine", "talos").steps.len(), 6);
        let mut s = BootstrapState::new("beelink", OffsetDateTime::UNIX_EPOCH);
        s.flow = Flow::K0s;
        s.step = Step::WaitWorkers;
        store.save(&s, &[]).unwrap();
        let v = view.status("beelink");
        let names: Vec<&str> = v.steps.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["WaitK0s", "WaitApi", "WaitWorkers", "HandOff"]);
        assert_eq!(
            (v.phase, statuses(&v)),
            (BootstrapPhase::Running, vec![Done, Done, Running, Pending])
        );

        s.step = Step::Failed;
        s.failure = Some("step WaitApi timed out after 600s: /readyz: 503".into());
        let ev = ClusterEvent {
            at: OffsetDateTime::UNIX_EPOCH,
            kind: ClusterEventKind::StepChanged,
            detail: "WaitApi -> Failed: step WaitApi timed out".into(),
        };
        store.save(&s, &[ev]).unwrap();
        let v = view.status("beelink");
        assert_eq!(
            (v.phase, statuses(&v)),
            (BootstrapPhase::Failed, vec![Done, Failed, Pending, Pending])
        );
        assert!(v.steps[1].detail.contains("/readyz"));
    }
}
