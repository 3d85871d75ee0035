//! The second half of `HandOff`, shared by both workflows (Talos
//! [`super::bootstrap`], k0s [`super::k0s`]): once the hand-off's objects are
//! applied, the step's clock restarts and the workflow polls Argo CD's report
//! ([`crate::gitops::health::Report`]) until every Application of the cluster is
//! `Synced` and `Healthy`, under its own timeout (`Timeouts::argo_synced`). Each
//! change of an Application's `Sync/Health` is recorded once as an `argo_status`
//! event; the reason it is not done yet is the step's `Waiting` detail, so `clusters
//! status` and the dashboard show why a hand-off is stuck. A retry of a cluster that
//! failed here keeps `applied_at`: it watches again with a fresh clock (the fix is
//! in Git or the cluster, where Argo CD retries by itself) and applies nothing twice.

use time::OffsetDateTime;

use super::bootstrap::{BootstrapState, ev};
use super::{ClusterEvent, ClusterEventKind};
use crate::gitops::health::Report;

/// The `HandOff -> HandedOff` reason.
pub const DONE: &str =
    "Argo CD reports every Application of the cluster Synced and Healthy; Git owns the cluster";

impl BootstrapState {
    /// The hand-off's objects were applied at `now`: the step's clock restarts for
    /// the wait on Argo CD.
    pub(crate) fn applied(&mut self, events: &mut Vec<ClusterEvent>, now: OffsetDateTime, what: &str) {
        self.applied_at = Some(now);
        self.step_started = now;
        events.push(ev(
            now,
            ClusterEventKind::ArgoStatus,
            format!(
                "{what}; waiting until Argo CD reports every Application of the cluster Synced and Healthy"
            ),
        ));
    }

    /// Records the changes in `report` as events; `None` when everything is Synced
    /// and Healthy, else why not.
    pub(crate) fn observe_argo(
        &mut self,
        events: &mut Vec<ClusterEvent>,
        // arch: string-result-ok (data): the observation as the workflow saw it
        report: Result<Report, String>,
        now: OffsetDateTime,
    ) -> Option<String> {
        let report = match report {
            Ok(r) => r,
            Err(e) => return Some(format!("reading Argo CD's Applications: {e}")),
        };
        for app in &report.apps {
            let state = app.state();
            let before = self.argo_apps.insert(app.name.clone(), state.clone());
            if before.as_deref() != Some(state.as_str()) {
                let from = before.unwrap_or_else(|| "new".into());
                let why = if app.problems.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", app.problems.join("; "))
                };
                events.push(ev(
                    now,
                    ClusterEventKind::ArgoStatus,
                    format!("{}: {from} -> {state}{why}", app.name),
                ));
            }
        }
        report.blocking()
    }
}

#[cfg(test)]
#[path = "argo_wait_tests.rs"]
mod tests;
