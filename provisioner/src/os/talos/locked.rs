//! The Talos supervisor's view of the cluster store: one lock around every write.

use std::sync::Arc;

use provisioner_core::cluster::ClusterEvent;
use provisioner_core::cluster::ClusterStore;
use provisioner_core::cluster::bootstrap::BootstrapState;
use provisioner_core::inventory::InventoryError;

/// The cluster store with one lock around every write, so an event the supervisor
/// appends (read the state, save it back with the event) can never roll back a step an
/// orchestrator saved in between.
#[derive(Debug)]
pub(super) struct Locked {
    pub(super) inner: Arc<dyn ClusterStore>,
    pub(super) lock: std::sync::Mutex<()>,
}

impl Locked {
    fn guard(&self) -> std::sync::MutexGuard<'_, ()> {
        self.lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Appends `event` to `cluster`'s log without changing its state (a cluster
    /// that never started gets its initial state).
    pub(super) fn append(&self, cluster: &str, event: ClusterEvent) -> Result<(), InventoryError> {
        let _g = self.guard();
        let state = match self.inner.load(cluster)? {
            Some(s) => s,
            None => BootstrapState::new(cluster, event.at),
        };
        self.inner.save(&state, &[event])
    }
}

impl ClusterStore for Locked {
    fn load(&self, cluster: &str) -> Result<Option<BootstrapState>, InventoryError> {
        self.inner.load(cluster)
    }

    fn save(&self, state: &BootstrapState, events: &[ClusterEvent]) -> Result<(), InventoryError> {
        let _g = self.guard();
        self.inner.save(state, events)
    }

    fn clusters(&self) -> Result<Vec<BootstrapState>, InventoryError> {
        self.inner.clusters()
    }

    fn events(&self, cluster: &str) -> Result<Vec<ClusterEvent>, InventoryError> {
        self.inner.events(cluster)
    }
}
