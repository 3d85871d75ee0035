//! Cluster bootstrap: the persisted workflows that take installed nodes to a
//! handed-off cluster ([`bootstrap`] for Talos, [`k0s`] for k0s), their events, and
//! the storage seam for both.

pub mod argo_wait;
pub mod bootstrap;
pub mod kubeconfigs;
pub mod progress;
pub mod retry;

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::inventory::{InventoryError, TIMELINE_CAP};
pub use bootstrap::{BootstrapState, Flow, Step};
pub use kubeconfigs::{KubeconfigError, KubeconfigStore, MemKubeconfigs};

/// What happened to a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClusterEventKind {
    /// The workflow (re)started in the daemon.
    Resumed,
    /// A control-plane node answered `Version` over mTLS.
    NodeInstalled,
    /// The workflow moved to another step (detail: `From -> To: why`).
    StepChanged,
    /// The current step is not done yet (detail: what it waits for).
    Waiting,
    /// The workflow failed (detail: why).
    Failed,
    /// An operator asked to retry a failed workflow (detail: the step it goes back to).
    Retried,
    /// Argo CD reported a change of an Application's sync or health status (detail:
    /// `name: Sync/Health -> Sync/Health`), or the hand-off's objects were applied.
    #[serde(rename = "argo_status")]
    ArgoStatus,
}

/// One entry of a cluster's event log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterEvent {
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// What.
    pub kind: ClusterEventKind,
    /// Detail for operators; never secret material.
    #[serde(default)]
    pub detail: String,
}

/// Storage for bootstrap progress. `save` is one durable commit of the state and its
/// events, so a state is never persisted without the events that explain it.
pub trait ClusterStore: Send + Sync + std::fmt::Debug {
    /// A cluster's progress, if it ever started.
    fn load(&self, cluster: &str) -> Result<Option<BootstrapState>, InventoryError>;
    /// Stores the state and appends the events (the log keeps the newest
    /// [`TIMELINE_CAP`]).
    fn save(&self, state: &BootstrapState, events: &[ClusterEvent]) -> Result<(), InventoryError>;
    /// Every cluster's progress, by name.
    fn clusters(&self) -> Result<Vec<BootstrapState>, InventoryError>;
    /// A cluster's events, oldest first.
    fn events(&self, cluster: &str) -> Result<Vec<ClusterEvent>, InventoryError>;
}

type Records = BTreeMap<String, (BootstrapState, Vec<ClusterEvent>)>;

/// A [`ClusterStore`] in memory, for tests.
#[derive(Debug, Default)]
pub struct MemClusterStore {
    inner: Mutex<Records>,
}

impl MemClusterStore {
    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Records>, InventoryError> {
        self.inner
            .lock()
            .map_err(|_| InventoryError::Backend("cluster store lock poisoned".into()))
    }
}

impl ClusterStore for MemClusterStore {
    fn load(&self, cluster: &str) -> Result<Option<BootstrapState>, InventoryError> {
        Ok(self.lock()?.get(cluster).map(|(s, _)| s.clone()))
    }

    fn save(&self, state: &BootstrapState, events: &[ClusterEvent]) -> Result<(), InventoryError> {
        let mut map = self.lock()?;
        let entry = map
            .entry(state.cluster.clone())
            .or_insert_with(|| (state.clone(), Vec::new()));
        entry.0 = state.clone();
        entry.1.extend_from_slice(events);
        let excess = entry.1.len().saturating_sub(TIMELINE_CAP);
        entry.1.drain(..excess);
        Ok(())
    }

    fn clusters(&self) -> Result<Vec<BootstrapState>, InventoryError> {
        Ok(self.lock()?.values().map(|(s, _)| s.clone()).collect())
    }

    fn events(&self, cluster: &str) -> Result<Vec<ClusterEvent>, InventoryError> {
        Ok(self
            .lock()?
            .get(cluster)
            .map(|(_, e)| e.clone())
            .unwrap_or_default())
    }
}
