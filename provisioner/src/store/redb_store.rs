//! The inventory on redb: one file, ACID, and no write returns `Ok` before it is on
//! disk, so an acknowledged write survives `kill -9` and power loss. Machine writes
//! ([`Inventory::apply`]) share their fsyncs ([`GroupCommit`]); the others commit
//! with `Durability::Immediate` (redb's default). Values are JSON so another engine
//! can read an export.

use std::path::Path;

use provisioner_core::inventory::{
    Change, Inventory, InventoryError, SCHEMA_VERSION, SpentToken, TokenRecord,
};
use provisioner_core::model::{MacAddr, Machine, TimelineEvent};
use redb::{ReadableDatabase, ReadableTable, TableDefinition};

use super::group_commit::{GroupCommit, Reopened};
use super::healing::{Healing, OpenError};
use super::redb_inv_tokens::TokenTables;
use super::redb_step::step;
use serde::Serialize;
use serde::de::DeserializeOwned;
use time::OffsetDateTime;

pub(super) const META: TableDefinition<'_, &str, u64> = TableDefinition::new("meta");
pub(super) const MACHINES: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("machines");
/// Timeline entries keyed by (mac, sequence number), each a JSON
/// [`TimelineEvent`] (schema 2: with the typed `event`; see `redb_migrate`).
pub(super) const TIMELINE: TableDefinition<'_, (&str, u64), &[u8]> = TableDefinition::new("timeline");
/// Per machine: (oldest sequence kept, next sequence), so appends and the cap are O(1).
pub(super) const TIMELINE_SEQ: TableDefinition<'_, &str, (u64, u64)> = TableDefinition::new("timeline_seq");
/// One-time tokens keyed by a hash of the token.
pub(super) const TOKENS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("tokens");
/// Spent tokens (used or revoked), same keys, bounded per machine: a replay names
/// its machine. Added without a schema bump: older builds ignore the table.
pub(super) const SPENT: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("spent_tokens");

/// The redb-backed [`Inventory`].
#[derive(Debug)]
pub struct RedbInventory {
    pub(super) db: Healing,
    group: GroupCommit,
}

impl From<Reopened> for InventoryError {
    fn from(e: Reopened) -> Self {
        backend(e)
    }
}

pub(super) fn backend(e: impl std::fmt::Display) -> InventoryError {
    InventoryError::Backend(e.to_string())
}

pub(super) fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, InventoryError> {
    serde_json::to_vec(v).map_err(backend)
}

pub(super) fn decode<T: DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, InventoryError> {
    serde_json::from_slice(bytes).map_err(|e| InventoryError::Corrupt {
        key: key.to_string(),
        message: e.to_string(),
    })
}

impl RedbInventory {
    /// Opens (or creates) the store at `path`, checks its integrity and schema
    /// version, and migrates it forward. Fails if another process holds it open.
    pub fn open(path: &Path) -> Result<Self, InventoryError> {
        let mut db = Healing::open(path, "inventory").map_err(backend)?;
        let repaired = db
            .get_mut()
            .map(|d| d.check_integrity())
            .transpose()
            .map_err(|e| {
                backend(OpenError::Corrupt {
                    path: path.to_path_buf(),
                    reason: e.to_string(),
                })
            })?;
        if repaired == Some(false) {
            tracing::warn!(path = %path.display(), "inventory repaired by integrity check");
        }
        let store = Self {
            db,
            group: GroupCommit::default(),
        };
        store.migrate()?;
        Ok(store)
    }

    /// Creates every table and records the schema version; refuses newer stores.
    /// Older stores are converted in this one transaction, one step per version
    /// (`redb_migrate`), so a crash leaves either the old store or the new one.
    fn migrate(&self) -> Result<(), InventoryError> {
        self.db.with(|db| {
            let txn = db.begin_write().map_err(backend)?;
            {
                let mut meta = txn.open_table(META).map_err(backend)?;
                let found = meta.get("schema_version").map_err(backend)?.map(|v| v.value());
                match found {
                    Some(v) if v > u64::from(SCHEMA_VERSION) => {
                        return Err(InventoryError::SchemaTooNew {
                            found: u32::try_from(v).unwrap_or(u32::MAX),
                            supported: SCHEMA_VERSION,
                        });
                    }
                    Some(v) if v == u64::from(SCHEMA_VERSION) => {}
                    found => {
                        if found == Some(1) {
                            super::redb_migrate::typed_timeline(&txn)?;
                        }
                        meta.insert("schema_version", u64::from(SCHEMA_VERSION))
                            .map_err(backend)?;
                    }
                }
                txn.open_table(MACHINES).map_err(backend)?;
                txn.open_table(TIMELINE).map_err(backend)?;
                txn.open_table(TIMELINE_SEQ).map_err(backend)?;
            }
            TokenTables::open(&txn)?.reindex()?;
            txn.commit().map_err(backend)
        })
    }

    /// Runs `body` in one write transaction committed without an fsync, then waits
    /// until a group commit made it durable. `body` says whether it wrote anything;
    /// if not, the transaction is aborted: no commit, so no fsync per flood datagram
    /// (a sighting the first-seen rate refused, a stranger not recorded).
    fn write_grouped<T>(
        &self,
        body: impl FnOnce(&redb::WriteTransaction) -> Result<(T, bool), InventoryError>,
    ) -> Result<T, InventoryError> {
        let (out, ticket) = self.db.with(|db| -> Result<_, InventoryError> {
            // Read under the handle's read lock: no reopen until this commit is done.
            let epoch = self.db.reopens();
            let mut txn = db.begin_write().map_err(backend)?;
            txn.set_durability(redb::Durability::None).map_err(backend)?;
            let (out, wrote) = body(&txn)?;
            if !wrote {
                txn.abort().map_err(backend)?;
                return Ok((out, None));
            }
            let ticket = self.group.ticket(epoch);
            txn.commit().map_err(backend)?;
            Ok((out, Some(ticket)))
        })?;
        if let Some(ticket) = ticket {
            self.group.wait(ticket, || self.flush())?;
        }
        Ok(out)
    }

    /// The group commit's durable commit: an empty `Immediate` transaction persists
    /// every non-durable commit before it. Returns the handle's generation and the
    /// tickets it covers.
    fn flush(&self) -> Result<(u64, u64), InventoryError> {
        self.db.with(|db| {
            let epoch = self.db.reopens();
            let txn = db.begin_write().map_err(backend)?;
            let upto = self.group.issued();
            txn.commit().map_err(backend)?;
            Ok((epoch, upto))
        })
    }

    /// Durable commits made for machine writes so far (each covers every machine
    /// write committed before it).
    pub fn group_flushes(&self) -> u64 {
        self.group.flushes()
    }

    /// The schema version stored in the file.
    pub fn schema_version(&self) -> Result<u64, InventoryError> {
        self.db.with(|db| {
            let txn = db.begin_read().map_err(backend)?;
            let meta = txn.open_table(META).map_err(backend)?;
            Ok(meta
                .get("schema_version")
                .map_err(backend)?
                .map(|v| v.value())
                .unwrap_or(0))
        })
    }
}

impl super::Healed for RedbInventory {
    fn healing(&self) -> &Healing {
        &self.db
    }
}

impl Inventory for RedbInventory {
    fn get(&self, mac: MacAddr) -> Result<Option<Machine>, InventoryError> {
        self.db.with(|db| {
            let key = mac.to_string();
            let txn = db.begin_read().map_err(backend)?;
            let t = txn.open_table(MACHINES).map_err(backend)?;
            match t.get(key.as_str()).map_err(backend)? {
                Some(v) => Ok(Some(decode(&key, v.value())?)),
                None => Ok(None),
            }
        })
    }

    fn list(&self) -> Result<Vec<Machine>, InventoryError> {
        self.db.with(|db| {
            let txn = db.begin_read().map_err(backend)?;
            let t = txn.open_table(MACHINES).map_err(backend)?;
            let mut out = Vec::new();
            for row in t.iter().map_err(backend)? {
                let (k, v) = row.map_err(backend)?;
                out.push(decode(k.value(), v.value())?);
            }
            Ok(out)
        })
    }

    /// One non-durable commit, then the wait for the group commit that makes it
    /// durable (`group_commit`).
    fn apply(&self, mac: MacAddr, change: Change<'_>) -> Result<Option<Machine>, InventoryError> {
        self.write_grouped(|txn| step(txn, mac, change))
    }

    /// The whole batch in one transaction: one commit, one share of a flush.
    fn apply_many(&self, changes: &mut [(MacAddr, Change<'_>)]) -> Result<(), InventoryError> {
        self.write_grouped(|txn| {
            let mut wrote = false;
            for (mac, change) in changes.iter_mut() {
                wrote |= step(txn, *mac, &mut **change)?.1;
            }
            Ok(((), wrote))
        })
    }

    fn delete(&self, mac: MacAddr) -> Result<bool, InventoryError> {
        self.db.with(|db| {
            let key = mac.to_string();
            let txn = db.begin_write().map_err(backend)?;
            let existed = {
                let mut machines = txn.open_table(MACHINES).map_err(backend)?;
                let existed = machines.remove(key.as_str()).map_err(backend)?.is_some();
                let mut seq = txn.open_table(TIMELINE_SEQ).map_err(backend)?;
                seq.remove(key.as_str()).map_err(backend)?;
                let mut tl = txn.open_table(TIMELINE).map_err(backend)?;
                tl.retain_in((key.as_str(), 0)..=(key.as_str(), u64::MAX), |_, _| false)
                    .map_err(backend)?;
                TokenTables::open(&txn)?.forget(mac)?;
                existed
            };
            txn.commit().map_err(backend)?;
            Ok(existed)
        })
    }

    fn timeline(&self, mac: MacAddr) -> Result<Vec<TimelineEvent>, InventoryError> {
        self.db.with(|db| {
            let key = mac.to_string();
            let txn = db.begin_read().map_err(backend)?;
            let tl = txn.open_table(TIMELINE).map_err(backend)?;
            let mut out = Vec::new();
            for row in tl
                .range((key.as_str(), 0)..=(key.as_str(), u64::MAX))
                .map_err(backend)?
            {
                let (_, v) = row.map_err(backend)?;
                out.push(decode(&key, v.value())?);
            }
            Ok(out)
        })
    }

    fn issue_token(&self, key: &str, record: &TokenRecord) -> Result<(), InventoryError> {
        self.db.with(|db| {
            let txn = db.begin_write().map_err(backend)?;
            TokenTables::open(&txn)?.issue(key, record)?;
            txn.commit().map_err(backend)
        })
    }

    fn live_token(&self, key: &str) -> Result<Option<TokenRecord>, InventoryError> {
        self.db.with(|db| {
            let txn = db.begin_read().map_err(backend)?;
            let tokens = txn.open_table(TOKENS).map_err(backend)?;
            let found = tokens.get(key).map_err(backend)?;
            match found {
                Some(v) => Ok(Some(decode::<TokenRecord>("token", v.value())?)),
                None => Ok(None),
            }
        })
    }

    /// Grouped like [`Inventory::apply`]: the token is spent on disk before the
    /// caller serves what it unlocks.
    fn take_token(&self, key: &str, now: OffsetDateTime) -> Result<Option<TokenRecord>, InventoryError> {
        self.write_grouped(|txn| Ok((TokenTables::open(txn)?.take(key, now)?, true)))
    }

    fn drop_tokens(
        &self,
        expired: &dyn Fn(&TokenRecord) -> bool,
        spent_before: OffsetDateTime,
    ) -> Result<usize, InventoryError> {
        self.db.with(|db| {
            let txn = db.begin_write().map_err(backend)?;
            let dropped = TokenTables::open(&txn)?.collect(expired, spent_before)?;
            txn.commit().map_err(backend)?;
            Ok(dropped)
        })
    }

    fn spent_token(&self, key: &str) -> Result<Option<SpentToken>, InventoryError> {
        self.db.with(|db| {
            let txn = db.begin_read().map_err(backend)?;
            let spent = txn.open_table(SPENT).map_err(backend)?;
            let found = spent.get(key).map_err(backend)?;
            // An undecodable entry is as good as none: the replay is refused either way.
            Ok(found.and_then(|v| serde_json::from_slice(v.value()).ok()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn battery() {
        let dir = tempfile::tempdir().unwrap();
        let n = std::sync::atomic::AtomicUsize::new(0);
        provisioner_core::inventory::battery::run_all(&|| {
            let i = n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Box::new(RedbInventory::open(&dir.path().join(format!("inv{i}.redb"))).unwrap())
        });
    }

    #[test]
    fn reopen_keeps_data_and_version() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("inv.redb");
        let mac: MacAddr = "52:54:00:00:00:01".parse().unwrap();
        {
            let inv = RedbInventory::open(&path).unwrap();
            inv.put(&Machine::discovered(mac, time::OffsetDateTime::UNIX_EPOCH))
                .unwrap();
        }
        let inv = RedbInventory::open(&path).unwrap();
        assert!(inv.get(mac).unwrap().is_some());
        assert_eq!(inv.schema_version().unwrap(), u64::from(SCHEMA_VERSION));
    }

    #[test]
    fn concurrent_machine_writes_share_fsyncs_and_all_are_on_disk_after_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("inv.redb");
        let (threads, each) = (8u32, 40u32);
        let flushes = {
            let inv = RedbInventory::open(&path).unwrap();
            std::thread::scope(|s| {
                for t in 0..threads {
                    let inv = &inv;
                    s.spawn(move || {
                        for i in 0..each {
                            let b = (t * each + i).to_be_bytes();
                            let mac = MacAddr([0x52, 0x54, 0, b[1], b[2], b[3]]);
                            inv.put(&Machine::discovered(mac, OffsetDateTime::UNIX_EPOCH))
                                .unwrap();
                        }
                    });
                }
            });
            inv.group_flushes()
        };
        // Every write returned Ok only after a flush covered it; with 8 writers at
        // once, flushes are shared.
        assert!(
            flushes < u64::from(threads * each),
            "{flushes} flushes for {} writes",
            threads * each
        );
        let inv = RedbInventory::open(&path).unwrap();
        assert_eq!(inv.list().unwrap().len(), (threads * each) as usize);
    }

    #[test]
    fn second_open_is_refused_with_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("inv.redb");
        let _a = RedbInventory::open(&path).unwrap();
        let err = RedbInventory::open(&path).unwrap_err().to_string();
        assert!(err.contains("another process"), "{err}");
    }

    #[test]
    fn newer_schema_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("inv.redb");
        {
            let mut inv = RedbInventory::open(&path).unwrap();
            let txn = inv.db.get_mut().unwrap().begin_write().unwrap();
            txn.open_table(META)
                .unwrap()
                .insert("schema_version", 99)
                .unwrap();
            txn.commit().unwrap();
        }
        let err = RedbInventory::open(&path).unwrap_err();
        assert!(
            matches!(err, InventoryError::SchemaTooNew { found: 99, .. }),
            "{err}"
        );
    }
}
