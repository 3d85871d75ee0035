//! API tokens on redb, in their own file (`<state_dir>/api-tokens.redb`).
//!
//! Unlike the inventory, the daemon does not keep this file open: each operation opens
//! it, runs one transaction and closes it, so `provisioner token create` works while
//! the appliance runs. redb locks the file per open; a concurrent open (the CLI and
//! the daemon at the same instant, or two requests) is retried for a bounded time.

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

/// The redb-backed [`ApiTokenStore`].
#[derive(Debug)]
pub struct RedbApiTokens {
    path: PathBuf,
    /// One open at a time inside this process (redb's lock is per open file).
    local: Mutex<()>,
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
        }
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
        })
    }

    fn lookup(&self, key: &str) -> Result<Option<ApiTokenRecord>, InventoryError> {
        if !self.path.exists() {
            return Ok(None);
        }
        self.with_db(|db| {
            let txn = db.begin_read().map_err(backend)?;
            let t = match txn.open_table(TOKENS) {
                Ok(t) => t,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
                Err(e) => return Err(backend(e)),
            };
            match t.get(key).map_err(backend)? {
                Some(v) => Ok(Some(Self::decode(key, v.value())?)),
                None => Ok(None),
            }
        })
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
        self.with_db(|db| {
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
        provisioner_core::apitoken::battery::run_all(&|| {
            let i = n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Box::new(RedbApiTokens::new(&dir.path().join(format!("t{i}.redb"))))
        });
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
