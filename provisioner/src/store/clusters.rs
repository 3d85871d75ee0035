//! Cluster bootstrap progress in the same redb file as the inventory: one record per
//! cluster plus a capped event log, written in one durable commit per step.

use provisioner_core::cluster::{BootstrapState, ClusterEvent, ClusterStore};
use provisioner_core::inventory::{InventoryError, TIMELINE_CAP};
use redb::{ReadableDatabase, ReadableTable, TableDefinition, TableError};

use super::RedbInventory;
use super::redb_store::backend;

const CLUSTERS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("clusters");
/// Events keyed by (cluster, sequence number).
const CLUSTER_EVENTS: TableDefinition<'_, (&str, u64), &[u8]> = TableDefinition::new("cluster_events");
/// Per cluster: (oldest sequence kept, next sequence).
const CLUSTER_EVENT_SEQ: TableDefinition<'_, &str, (u64, u64)> = TableDefinition::new("cluster_event_seq");

fn corrupt(key: &str, e: impl std::fmt::Display) -> InventoryError {
    InventoryError::Corrupt {
        key: key.to_string(),
        message: e.to_string(),
    }
}

/// A table that was never written reads as empty.
fn missing<T>(r: Result<T, TableError>) -> Result<Option<T>, InventoryError> {
    match r {
        Ok(t) => Ok(Some(t)),
        Err(TableError::TableDoesNotExist(_)) => Ok(None),
        Err(e) => Err(backend(e)),
    }
}

impl ClusterStore for RedbInventory {
    fn load(&self, cluster: &str) -> Result<Option<BootstrapState>, InventoryError> {
        self.db.with(|db| {
            let txn = db.begin_read().map_err(backend)?;
            let Some(t) = missing(txn.open_table(CLUSTERS))? else {
                return Ok(None);
            };
            match t.get(cluster).map_err(backend)? {
                Some(v) => Ok(Some(
                    serde_json::from_slice(v.value()).map_err(|e| corrupt(cluster, e))?,
                )),
                None => Ok(None),
            }
        })
    }

    fn save(&self, state: &BootstrapState, events: &[ClusterEvent]) -> Result<(), InventoryError> {
        self.db.with(|db| {
            let key = state.cluster.as_str();
            let txn = db.begin_write().map_err(backend)?;
            {
                let mut t = txn.open_table(CLUSTERS).map_err(backend)?;
                let bytes = serde_json::to_vec(state).map_err(backend)?;
                t.insert(key, bytes.as_slice()).map_err(backend)?;
                if !events.is_empty() {
                    let mut seq = txn.open_table(CLUSTER_EVENT_SEQ).map_err(backend)?;
                    let mut log = txn.open_table(CLUSTER_EVENTS).map_err(backend)?;
                    let (mut first, mut next) = seq
                        .get(key)
                        .map_err(backend)?
                        .map(|v| v.value())
                        .unwrap_or((0, 0));
                    for e in events {
                        let bytes = serde_json::to_vec(e).map_err(backend)?;
                        log.insert((key, next), bytes.as_slice()).map_err(backend)?;
                        next += 1;
                    }
                    while next - first > TIMELINE_CAP as u64 {
                        log.remove((key, first)).map_err(backend)?;
                        first += 1;
                    }
                    seq.insert(key, (first, next)).map_err(backend)?;
                }
            }
            txn.commit().map_err(backend)
        })
    }

    fn clusters(&self) -> Result<Vec<BootstrapState>, InventoryError> {
        self.db.with(|db| {
            let txn = db.begin_read().map_err(backend)?;
            let Some(t) = missing(txn.open_table(CLUSTERS))? else {
                return Ok(Vec::new());
            };
            let mut out = Vec::new();
            for row in t.iter().map_err(backend)? {
                let (k, v) = row.map_err(backend)?;
                out.push(serde_json::from_slice(v.value()).map_err(|e| corrupt(k.value(), e))?);
            }
            Ok(out)
        })
    }

    fn events(&self, cluster: &str) -> Result<Vec<ClusterEvent>, InventoryError> {
        self.db.with(|db| {
            let txn = db.begin_read().map_err(backend)?;
            let Some(log) = missing(txn.open_table(CLUSTER_EVENTS))? else {
                return Ok(Vec::new());
            };
            let mut out = Vec::new();
            for row in log.range((cluster, 0)..=(cluster, u64::MAX)).map_err(backend)? {
                let (_, v) = row.map_err(backend)?;
                out.push(serde_json::from_slice(v.value()).map_err(|e| corrupt(cluster, e))?);
            }
            Ok(out)
        })
    }
}

#[cfg(test)]
mod tests {
    use provisioner_core::cluster::{ClusterEventKind, Step};
    use time::OffsetDateTime;

    use super::*;

    #[test]
    fn survives_reopen_and_caps_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("inv.redb");
        let now = OffsetDateTime::UNIX_EPOCH;
        let mut state = BootstrapState::new("genmachine", now);
        {
            let store = RedbInventory::open(&path).unwrap();
            assert!(store.load("genmachine").unwrap().is_none());
            assert!(store.events("genmachine").unwrap().is_empty());
            let ev = ClusterEvent {
                at: now,
                kind: ClusterEventKind::Waiting,
                detail: "x".into(),
            };
            for _ in 0..(TIMELINE_CAP + 5) {
                store.save(&state, std::slice::from_ref(&ev)).unwrap();
            }
            state.step = Step::WaitEtcd;
            store.save(&state, &[]).unwrap();
        }
        let store = RedbInventory::open(&path).unwrap();
        assert_eq!(store.load("genmachine").unwrap().unwrap().step, Step::WaitEtcd);
        assert_eq!(store.events("genmachine").unwrap().len(), TIMELINE_CAP);
        assert_eq!(store.clusters().unwrap().len(), 1);
    }
}
