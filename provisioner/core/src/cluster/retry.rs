//! The operator's retry of a `Failed` cluster, as a pure transition shared by both
//! workflows (Talos [`super::bootstrap`], k0s [`super::k0s`]): the record goes back to
//! the working step it failed in, with a fresh step clock, and keeps everything it
//! recorded as done (installed nodes, the bootstrap node, the attempt count). Steps
//! before the failed one are never re-entered, so a cluster that failed after
//! `Bootstrap` was accepted is never bootstrapped again (talos.md §16.3).

use time::OffsetDateTime;

use super::bootstrap::{BootstrapState, Flow, Step, ev};
use super::{ClusterEvent, ClusterEventKind};

/// Why a retry is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RetryRefused {
    /// Only a `Failed` cluster can be retried.
    #[error("the cluster is at step {0}, not Failed: nothing to retry")]
    NotFailed(Step),
    /// The record does not say which step failed (written before `failed_step`
    /// existed, and the event log no longer tells).
    #[error("the failed step is not recorded; delete the cluster's bootstrap record to start over")]
    UnknownStep,
    /// The recorded step is not a working step of the cluster's workflow.
    #[error("step {step} is not a step of the {flow:?} workflow")]
    NotAStep {
        /// The recorded step.
        step: Step,
        /// The record's workflow.
        flow: Flow,
    },
}

/// The working steps of `flow`, in order.
pub fn steps_of(flow: Flow) -> &'static [Step] {
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

/// Puts a `Failed` cluster back into the step it failed in, at `now`. `hint` is the
/// failed step as the event log tells it (`From -> Failed`), used only when the
/// record predates [`BootstrapState::failed_step`]. Returns the state to persist and
/// its events (`Retried`, then the `Failed -> Step` change).
pub fn retry(
    state: &BootstrapState,
    hint: Option<Step>,
    now: OffsetDateTime,
) -> Result<(BootstrapState, Vec<ClusterEvent>), RetryRefused> {
    if state.step != Step::Failed {
        return Err(RetryRefused::NotFailed(state.step));
    }
    let step = state.failed_step.or(hint).ok_or(RetryRefused::UnknownStep)?;
    if !steps_of(state.flow).contains(&step) {
        return Err(RetryRefused::NotAStep {
            step,
            flow: state.flow,
        });
    }
    let mut next = state.clone();
    let failure = next.failure.take().unwrap_or_default();
    next.failed_step = None;
    let mut events = vec![ev(
        now,
        ClusterEventKind::Retried,
        format!("operator retry: back to {step} (it failed with: {failure})"),
    )];
    next.enter(&mut events, step, now, "operator retry with a fresh step clock");
    Ok((next, events))
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;

    fn failed(flow: Flow, at: Option<Step>) -> BootstrapState {
        let mut s = BootstrapState::new("lab", OffsetDateTime::UNIX_EPOCH);
        s.flow = flow;
        s.step = Step::Failed;
        s.failed_step = at;
        s.failure = Some("step timed out".into());
        s.bootstrap_node = Some(IpAddr::from([10, 0, 0, 11]));
        s.bootstrap_attempts = 1;
        s
    }

    #[test]
    fn retry_table() {
        let now = OffsetDateTime::UNIX_EPOCH + time::Duration::hours(1);
        let mut running = failed(Flow::Talos, None);
        running.step = Step::WaitApi;
        // (record, hint from the event log, expected)
        let cases: Vec<(BootstrapState, Option<Step>, Result<Step, RetryRefused>)> = vec![
            (
                failed(Flow::Talos, Some(Step::WaitEtcd)),
                None,
                Ok(Step::WaitEtcd),
            ),
            (
                failed(Flow::Talos, Some(Step::Bootstrap)),
                None,
                Ok(Step::Bootstrap),
            ),
            // The recorded step wins over the log.
            (
                failed(Flow::Talos, Some(Step::HandOff)),
                Some(Step::WaitNodes),
                Ok(Step::HandOff),
            ),
            (failed(Flow::Talos, None), Some(Step::WaitApi), Ok(Step::WaitApi)),
            (
                failed(Flow::K0s, Some(Step::WaitWorkers)),
                None,
                Ok(Step::WaitWorkers),
            ),
            (failed(Flow::Talos, None), None, Err(RetryRefused::UnknownStep)),
            (running.clone(), None, Err(RetryRefused::NotFailed(Step::WaitApi))),
            (
                failed(Flow::K0s, Some(Step::WaitEtcd)),
                None,
                Err(RetryRefused::NotAStep {
                    step: Step::WaitEtcd,
                    flow: Flow::K0s,
                }),
            ),
            (
                failed(Flow::Talos, Some(Step::HandedOff)),
                None,
                Err(RetryRefused::NotAStep {
                    step: Step::HandedOff,
                    flow: Flow::Talos,
                }),
            ),
        ];
        for (i, (state, hint, want)) in cases.into_iter().enumerate() {
            let got = retry(&state, hint, now);
            match (got, want) {
                (Ok((next, events)), Ok(step)) => {
                    assert_eq!(next.step, step, "case {i}");
                    assert_eq!(next.step_started, now, "case {i}: fresh clock");
                    assert_eq!((next.failure, next.failed_step), (None, None), "case {i}");
                    // What was recorded as done stays done.
                    assert_eq!(next.bootstrap_node, state.bootstrap_node, "case {i}");
                    assert_eq!(next.bootstrap_attempts, 1, "case {i}");
                    assert_eq!(next.flow, state.flow, "case {i}");
                    let kinds: Vec<_> = events.iter().map(|e| e.kind).collect();
                    assert_eq!(
                        kinds,
                        [ClusterEventKind::Retried, ClusterEventKind::StepChanged],
                        "case {i}"
                    );
                    assert_eq!(
                        events[1].detail.split(':').next(),
                        Some(&*format!("Failed -> {step}"))
                    );
                    assert!(events[0].detail.contains("step timed out"), "case {i}");
                }
                (Err(e), Err(w)) => assert_eq!(e, w, "case {i}"),
                (got, want) => panic!("case {i}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn fail_records_the_step_and_a_retry_resumes_it() {
        let mut s = BootstrapState::new("lab", OffsetDateTime::UNIX_EPOCH);
        s.step = Step::WaitEtcd;
        let mut events = Vec::new();
        s.fail(
            &mut events,
            OffsetDateTime::UNIX_EPOCH,
            "etcd never healthy".into(),
        );
        assert_eq!((s.step, s.failed_step), (Step::Failed, Some(Step::WaitEtcd)));
        // The new field survives the store's JSON, and older records still load.
        let json = serde_json::to_string(&s).unwrap();
        let back: BootstrapState = serde_json::from_str(&json).unwrap();
        assert_eq!(back, s);
        let old = json.replace(",\"failed_step\":\"wait-etcd\"", "");
        assert_ne!(old, json);
        let legacy: BootstrapState = serde_json::from_str(&old).unwrap();
        assert_eq!(legacy.failed_step, None);
        let (next, _) = retry(&s, None, OffsetDateTime::UNIX_EPOCH).unwrap();
        assert_eq!(next.step, Step::WaitEtcd);
        assert!(matches!(
            retry(&next, None, OffsetDateTime::UNIX_EPOCH),
            Err(RetryRefused::NotFailed(Step::WaitEtcd))
        ));
    }
}
