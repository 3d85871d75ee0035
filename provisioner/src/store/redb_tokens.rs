//! API tokens on redb, in their own file (`<state_dir>/api-tokens.redb`).
//!
//! Unlike the inventory, the daemon does not keep this file open: each operation opens
//! it, runs one transaction and closes it, so `provisioner token create` works while
//! the appliance runs. redb locks the file per open; a concurrent open (the CLI and
//! the daemon at the same instant, or two requests) is retried for a bounded time.
//!
//! Lookups (one per API request) are served from an in-memory copy of the table. Every
//! writer puts a fresh random generation into a sidecar file (`….redb.gen`) before and
//! after its commit; a lookup rereads the table whenever the generation differs from
//! the copy's, so a revocation by the CLI takes effect at the next request. (Opening
//! a redb file rewrites it, so its mtime cannot serve.) Copies also expire after
//! [`MAX_AGE`], in case a writer died between its commit and its second bump.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use provisioner_core::apitoken::{ApiTokenRecord, ApiTokenStore};
use provisioner_core::inventory::InventoryError;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

/// Token records keyed by the SHA-256 (hex) of the token.
const TOKENS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("api_tokens");
/// How long to wait for another process to release the file.
const LOCK_WAIT: Duration = Duration::from_secs(5);
/// Oldest in-memory copy of the table a lookup trusts.
const MAX_AGE: Duration = Duration::from_secs(60);

/// The table as last read: (generation then, when, records by key).
type Snapshot = (String, Instant, HashMap<String, ApiTokenRecord>);

/// The redb-backed [`ApiTokenStore`].
#[derive(Debug)]
pub struct RedbApiTokens {
    path: PathBuf,
    /// One open at a time inside this process (redb's lock is per open file).
    local: Mutex<()>,
    /// Cached table for lookups.
    cache: Mutex<Option<Snapshot>>,
}

fn backend(e: impl std::fmt::Display) -> InventoryError {
    InventoryError::Backend(e.to_string())
}

impl RedbApiTokens {
    /// A store in `path` (created on first write).
    pub fn new(path: &Path) -> Self {
        Self {
            path: path.to_path_buf(),
            local: Mutex::new(()),
            cache: Mutex::new(None),
        }
    }

    fn gen_path(&self) -> PathBuf {
        let mut p = self.path.clone().into_os_string();
        p.push(".gen");
        PathBuf::from(p)
    }

    fn generation(&self) -> String {
        std::fs::read_to_string(self.gen_path()).unwrap_or_default()
    }

    /// Marks the table as changed, for every process's cached copy.
    fn bump(&self) -> Result<(), InventoryError> {
        let mut b = [0u8; 16];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut b);
        std::fs::write(self.gen_path(), hex::encode(b)).map_err(backend)?;
        if let Ok(mut c) = self.cache.lock() {
            *c = None;
        }
        Ok(())
    }

    fn read_all(&self) -> Result<HashMap<String, ApiTokenRecord>, InventoryError> {
        self.with_db(|db| {
            let txn = db.begin_read().map_err(backend)?;
            let t = match txn.open_table(TOKENS) {
                Ok(t) => t,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(HashMap::new()),
                Err(e) => return Err(backend(e)),
            };
            let mut out = HashMap::new();
            for row in t.iter().map_err(backend)? {
                let (k, v) = row.map_err(backend)?;
                out.insert(k.value().to_string(), Self::decode(k.value(), v.value())?);
            }
            Ok(out)
        })
    }

    fn with_db<T>(
        &self,
        f: impl FnOnce(&Database) -> Result<T, InventoryError>,
    ) -> Result<T, InventoryError> {
        let _guard = self
            .local
            .lock()
            .map_err(|_| backend("token store lock poisoned"))?;
        let deadline = Instant::now() + LOCK_WAIT;
        let db = loop {
            match Database::create(&self.path) {
                Ok(db) => break db,
                Err(redb::DatabaseError::DatabaseAlreadyOpen) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => return Err(backend(format!("{}: {e}", self.path.display()))),
            }
        };
        f(&db)
    }

    fn decode(key: &str, v: &[u8]) -> Result<ApiTokenRecord, InventoryError> {
        serde_json::from_slice(v).map_err(|e| InventoryError::Corrupt {
            key: format!("api token {}", &key[..key.len().min(8)]),
            message: e.to_string(),
        })
    }
}

impl ApiTokenStore for RedbApiTokens {
    fn insert(&self, key: &str, record: &ApiTokenRecord) -> Result<(), InventoryError> {
        let value = serde_json::to_vec(record).map_err(backend)?;
        self.bump()?;
        self.with_db(|db| {
            let txn = db.begin_write().map_err(backend)?;
            {
                let mut t = txn.open_table(TOKENS).map_err(backend)?;
                if t.get(key).map_err(backend)?.is_some() {
                    return Err(backend(format!("token id {} already exists", record.id)));
                }
                for row in t.iter().map_err(backend)? {
                    let (k, v) = row.map_err(backend)?;
                    if Self::decode(k.value(), v.value())?.id == record.id {
                        return Err(backend(format!("token id {} already exists", record.id)));
                    }
                }
                t.insert(key, value.as_slice()).map_err(backend)?;
            }
            txn.commit().map_err(backend)
        })?;
        self.bump()
    }

    fn lookup(&self, key: &str) -> Result<Option<ApiTokenRecord>, InventoryError> {
        if !self.path.exists() {
            return Ok(None); // no file: no tokens yet
        }
        let generation = self.generation();
        if let Ok(c) = self.cache.lock()
            && let Some((g, at, table)) = c.as_ref()
            && *g == generation
            && at.elapsed() < MAX_AGE
        {
            return Ok(table.get(key).cloned());
        }
        // Read after taking the generation: a write racing with this read bumps it
        // again afterwards, so the copy is replaced at the next lookup.
        let table = self.read_all()?;
        let found = table.get(key).cloned();
        if let Ok(mut c) = self.cache.lock() {
            *c = Some((generation, Instant::now(), table));
        }
        Ok(found)
    }

    fn list(&self) -> Result<Vec<ApiTokenRecord>, InventoryError> {
        if !self.path.exists() {
            return Ok(Vec::new());
        }
        self.with_db(|db| {
            let txn = db.begin_read().map_err(backend)?;
            let t = match txn.open_table(TOKENS) {
                Ok(t) => t,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
                Err(e) => return Err(backend(e)),
            };
            let mut out = Vec::new();
            for row in t.iter().map_err(backend)? {
                let (k, v) = row.map_err(backend)?;
                out.push(Self::decode(k.value(), v.value())?);
            }
            out.sort_by(|a, b| a.id.cmp(&b.id));
            Ok(out)
        })
    }

    fn revoke(&self, id: &str) -> Result<bool, InventoryError> {
        if !self.path.exists() {
            return Ok(false);
        }
        self.bump()?;
        let removed = self.with_db(|db| {
            let txn = db.begin_write().map_err(backend)?;
            let removed = {
                let mut t = txn.open_table(TOKENS).map_err(backend)?;
                let mut target = None;
                for row in t.iter().map_err(backend)? {
                    let (k, v) = row.map_err(backend)?;
                    if Self::decode(k.value(), v.value())?.id == id {
                        target = Some(k.value().to_string());
                    }
                }
                match target {
                    Some(k) => t.remove(k.as_str()).map_err(backend)?.is_some(),
                    None => false,
                }
            };
            txn.commit().map_err(backend)?;
            Ok(removed)
        })?;
        self.bump()?;
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn battery() {
        let dir = tempfile::tempdir().unwrap();
        let n = std::sync::atomic::AtomicUsize::new(0);
        provisioner_core::apitoken::battery::run_all(&|| {
            let i = n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Box::new(RedbApiTokens::new(&dir.path().join(format!("t{i}.redb"))))
        });
    }

    #[test]
    fn cached_lookups_see_another_process_revoking() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.redb");
        let daemon = RedbApiTokens::new(&path);
        let cli = RedbApiTokens::new(&path); // as the `token` command would
        let rec = ApiTokenRecord {
            id: "a1".into(),
            role: provisioner_core::apitoken::Role::Admin,
            name: String::new(),
            created_at: time::OffsetDateTime::UNIX_EPOCH,
        };
        cli.insert("k", &rec).unwrap();
        assert!(daemon.lookup("k").unwrap().is_some());
        assert!(daemon.lookup("k").unwrap().is_some(), "served from the copy");
        assert!(daemon.cache.lock().unwrap().is_some(), "quiet file is cached");
        assert!(cli.revoke("a1").unwrap());
        assert_eq!(daemon.lookup("k").unwrap(), None, "revocation seen at once");
    }

    #[test]
    fn concurrent_opens_wait_instead_of_failing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.redb");
        let a = std::sync::Arc::new(RedbApiTokens::new(&path));
        let b = std::sync::Arc::new(RedbApiTokens::new(&path)); // as a second process would
        let rec = |i: usize| ApiTokenRecord {
            id: format!("id{i}"),
            role: provisioner_core::apitoken::Role::ReadOnly,
            name: String::new(),
            created_at: time::OffsetDateTime::UNIX_EPOCH,
        };
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let s = if i % 2 == 0 { a.clone() } else { b.clone() };
                std::thread::spawn(move || s.insert(&format!("k{i}"), &rec(i)).unwrap())
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(a.list().unwrap().len(), 8);
    }
}
