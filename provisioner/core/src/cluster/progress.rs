//! A cluster's bootstrap as a progress line of milestones an operator recognises,
//! each with the time it was reached: Talos `Bootstrap` → etcd → kubeconfig →
//! `/readyz` → Argo CD → root app → Synced+Healthy → HandedOff; k0s controller →
//! `/readyz` → workers Ready → Argo CD → Synced+Healthy → HandedOff.
//!
//! Times come from the workflow's own log: a step's milestone is reached when the
//! `From -> To` step change leaving it was recorded ([`BootstrapState::enter`]);
//! Argo CD and the root app when the hand-off's objects were applied
//! ([`BootstrapState::applied_at`], [`super::argo_wait`]). Both are applied by one
//! hand-off call, so they share that time.

use serde::Serialize;
use time::OffsetDateTime;

use super::bootstrap::{BootstrapState, Flow, Step};
use super::{ClusterEvent, ClusterEventKind};

/// Where a milestone stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mark {
    /// Reached.
    Done,
    /// The workflow works towards it now.
    Running,
    /// The workflow failed working towards it.
    Failed,
    /// Not yet.
    Pending,
}

/// One milestone of the line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Milestone {
    /// What it is, for people.
    pub label: &'static str,
    /// Where it stands.
    pub mark: Mark,
    /// When it was reached (done), or since when it is worked on (running, failed).
    #[serde(with = "time::serde::rfc3339::option")]
    pub at: Option<OffsetDateTime>,
}

/// Which part of the workflow reaches a milestone: leaving a step, or applying the
/// hand-off's objects inside `HandOff`.
#[derive(Clone, Copy)]
enum Reach {
    Leave(Step),
    Applied,
}

const TALOS: [(&str, Reach); 8] = [
    ("Bootstrap", Reach::Leave(Step::Bootstrap)),
    ("etcd", Reach::Leave(Step::WaitEtcd)),
    ("kubeconfig", Reach::Leave(Step::FetchKubeconfig)),
    ("readyz", Reach::Leave(Step::WaitApi)),
    ("Argo CD", Reach::Applied),
    ("root app", Reach::Applied),
    ("Synced+Healthy", Reach::Leave(Step::HandOff)),
    ("HandedOff", Reach::Leave(Step::HandOff)),
];

const K0S: [(&str, Reach); 6] = [
    ("k0s controller", Reach::Leave(Step::WaitK0s)),
    ("readyz", Reach::Leave(Step::WaitApi)),
    ("workers Ready", Reach::Leave(Step::WaitWorkers)),
    ("Argo CD", Reach::Applied),
    ("Synced+Healthy", Reach::Leave(Step::HandOff)),
    ("HandedOff", Reach::Leave(Step::HandOff)),
];

/// The working steps in order (as `ops::bootstrap_view` lists them).
fn order(flow: Flow) -> &'static [Step] {
    match flow {
        Flow::Talos => &[
            Step::WaitNodes,
            Step::Bootstrap,
            Step::WaitEtcd,
            Step::FetchKubeconfig,
            Step::WaitApi,
            Step::HandOff,
        ],
        Flow::K0s => &[Step::WaitK0s, Step::WaitApi, Step::WaitWorkers, Step::HandOff],
    }
}

/// When the newest `From -> …` change leaving `step` was recorded.
fn left(events: &[ClusterEvent], step: Step) -> Option<OffsetDateTime> {
    let prefix = format!("{step} -> ");
    events
        .iter()
        .rev()
        .find(|e| e.kind == ClusterEventKind::StepChanged && e.detail.starts_with(&prefix))
        .map(|e| e.at)
}

/// The progress line of a cluster of `flow` whose record is `state` (`None`: not
/// started) with its event log `events` (oldest first).
pub fn line(flow: Flow, state: Option<&BootstrapState>, events: &[ClusterEvent]) -> Vec<Milestone> {
    let table: &[(&str, Reach)] = match flow {
        Flow::Talos => &TALOS,
        Flow::K0s => &K0S,
    };
    let steps = order(flow);
    let pos = |s: Step| steps.iter().position(|x| *x == s).unwrap_or(0);
    // The working step the workflow is in (or failed in), and whether it failed.
    let (current, failed) = match state.map(|s| (s.step, s.failed_step)) {
        None => (0, false),
        Some((Step::HandedOff, _)) => (steps.len(), false),
        Some((Step::Failed, f)) => (f.map(pos).unwrap_or(steps.len()), true),
        Some((step, _)) => (pos(step), false),
    };
    let applied = state.and_then(|s| s.applied_at);
    let mut marked_current = false;
    table
        .iter()
        .map(|(label, reach)| {
            let (step, reached, done_at) = match reach {
                Reach::Leave(s) => {
                    let reached = pos(*s) < current;
                    (*s, reached, reached.then(|| left(events, *s)).flatten())
                }
                Reach::Applied => (
                    Step::HandOff,
                    applied.is_some() || pos(Step::HandOff) < current,
                    applied.or_else(|| left(events, Step::HandOff)),
                ),
            };
            let (mark, at) = if reached {
                (Mark::Done, done_at)
            } else if state.is_some() && pos(step) >= current && !marked_current {
                // The first milestone not reached is what the workflow works towards.
                marked_current = true;
                let since = state.map(|s| s.step_started);
                (if failed { Mark::Failed } else { Mark::Running }, since)
            } else {
                (Mark::Pending, None)
            };
            Milestone { label, mark, at }
        })
        .collect()
}

#[cfg(test)]
#[path = "progress_tests.rs"]
mod tests;
