//! The bootstrap orchestrator's progress (`core::cluster::ClusterStore`) as the
//! API's per-cluster `bootstrap` object: its steps in workflow order (Talos or k0s,
//! from the record's `flow`), each done, running, failed or pending.

use std::sync::Arc;

use provisioner_core::cluster::bootstrap::{BootstrapState, Flow, Step};
use provisioner_core::cluster::{ClusterEventKind, ClusterStore};

use super::clusters::{
    BootstrapPhase, BootstrapProgress, BootstrapStatus, BootstrapStep, BootstrapStepStatus,
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
    /// Which working step a failed cluster stopped in: the `From` of its last
    /// `From -> Failed` step change.
    fn failed_at(&self, cluster: &str, order: &[Step]) -> Option<usize> {
        let events = self.0.events(cluster).ok()?;
        let change = events
            .iter()
            .rev()
            .find(|e| e.kind == ClusterEventKind::StepChanged && e.detail.contains("-> Failed"))?;
        let from = change.detail.split(" -> ").next()?.trim();
        order.iter().position(|s| s.to_string() == from)
    }

    fn view(&self, s: &BootstrapState) -> BootstrapStatus {
        let order = order(s.flow);
        let (phase, current) = match s.step {
            Step::HandedOff => (BootstrapPhase::Done, order.len()),
            Step::Failed => (
                BootstrapPhase::Failed,
                self.failed_at(&s.cluster, order).unwrap_or(order.len()),
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
        BootstrapStatus { phase, steps, detail }
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
