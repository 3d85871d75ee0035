//! A redb [`Database`] that reopens itself after an I/O error.
//!
//! After any failed write or fsync (a full disk, EIO) redb refuses every later
//! operation with `StorageError::PreviousIo` "until the database is closed" (redb
//! 4.6.0 `src/db.rs` doc of `unlock_range`, `src/tree_store/page_store/cached_file.rs`
//! `check_failure`; upstream made every I/O error fatal in cberner/redb#836 because a
//! transient one could otherwise corrupt the file). Without a reopen the appliance
//! stays wedged until a restart even after space is freed. [`Healing`] runs every
//! operation under a read lock on the handle; when one fails it probes the file with a
//! small write + read ([`Healing::round_trip`]) and, if the probe hits an I/O error,
//! closes and reopens the file (at most once per [`REOPEN_EVERY`]). A reopen that
//! fails for a reason other than I/O (a corrupt or foreign file) is fatal
//! ([`Healing::fatal`]): the health monitor then stops the process non-zero so
//! systemd restarts it and the start-up check names the file.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use redb::{Database, ReadableDatabase, TableDefinition};

/// A small table each store writes and reads back to prove the file answers.
const HEALTH: TableDefinition<'_, &str, u64> = TableDefinition::new("health");

/// At most one reopen per this interval (a failing disk must not turn into a
/// reopen loop that burns the CPU and floods the log).
pub const REOPEN_EVERY: Duration = Duration::from_secs(1);

/// redb's file magic (redb 4.6.0 `src/tree_store/page_store/header.rs`
/// `MAGICNUMBER`). Checked before opening: `Database::create` on a foreign file
/// rewrites it (cberner/redb#913), which would destroy the operator's evidence.
const MAGIC: [u8; 9] = [b'r', b'e', b'd', b'b', 0x1A, 0x0A, 0xA9, 0x0D, 0x0A];

/// Why a store file could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// Another process holds the file.
    #[error("{path} is open in another process (is `provisioner serve` running?)")]
    InUse {
        /// The file.
        path: PathBuf,
    },
    /// The file is not a redb database or fails redb's checks.
    #[error(
        "{path} is corrupt or not a provisioner database ({reason}); stop the service, move the file aside \
         and recover the state with `provisioner restore <backup>` (see README, Backup and restore)"
    )]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What redb (or the magic check) said.
        reason: String,
    },
    /// The file could not be read or written (permissions, a full disk).
    #[error("{path}: {reason}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        reason: String,
    },
}

/// The store could not run the operation (the handle is being reopened).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StoreDown(pub String);

impl From<StoreDown> for provisioner_core::inventory::InventoryError {
    fn from(e: StoreDown) -> Self {
        Self::Backend(e.0)
    }
}

impl From<StoreDown> for provisioner_core::dhcp::lease::LeaseError {
    fn from(e: StoreDown) -> Self {
        Self::Backend(e.0)
    }
}

/// Opens (or creates) the redb file at `path`, refusing foreign files and turning
/// every failure (including a panic inside redb on a mangled file, cberner/redb#620)
/// into an [`OpenError`] that names the file.
pub fn open_file(path: &Path) -> Result<Database, OpenError> {
    use std::io::Read;
    let corrupt = |reason: String| OpenError::Corrupt {
        path: path.to_path_buf(),
        reason,
    };
    if let Ok(mut f) = std::fs::File::open(path) {
        let mut head = [0u8; MAGIC.len()];
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        if len > 0 && (f.read_exact(&mut head).is_err() || head != MAGIC) {
            return Err(corrupt("no redb header".into()));
        }
    }
    let opened = std::panic::catch_unwind(|| Database::create(path)).map_err(|p| {
        let what = p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "redb panicked".into());
        corrupt(what)
    })?;
    opened.map_err(|e| match e {
        redb::DatabaseError::DatabaseAlreadyOpen => OpenError::InUse {
            path: path.to_path_buf(),
        },
        redb::DatabaseError::Storage(redb::StorageError::Io(io)) => OpenError::Io {
            path: path.to_path_buf(),
            reason: io.to_string(),
        },
        e => corrupt(e.to_string()),
    })
}

/// A store built on a [`Healing`] handle (the health check reaches it through this).
pub trait Healed: Send + Sync + std::fmt::Debug {
    /// The store's file handle.
    fn healing(&self) -> &Healing;
}

/// A self-healing handle on one redb file.
#[derive(Debug)]
pub struct Healing {
    path: PathBuf,
    /// `store` label in the metrics (`inventory`, `leases`).
    label: &'static str,
    db: RwLock<Option<Database>>,
    last_reopen: Mutex<Option<Instant>>,
    healthy: AtomicBool,
    fatal: Mutex<Option<String>>,
    reopens: AtomicU64,
    probes: AtomicU64,
}

impl Healing {
    /// Opens `path` (see [`open_file`]).
    pub fn open(path: &Path, label: &'static str) -> Result<Self, OpenError> {
        let db = open_file(path)?;
        metrics::gauge!("provisioner_store_healthy", "store" => label).set(1.0);
        metrics::counter!("provisioner_store_reopens_total", "store" => label).absolute(0);
        Ok(Self {
            path: path.to_path_buf(),
            label,
            db: RwLock::new(Some(db)),
            last_reopen: Mutex::new(None),
            healthy: AtomicBool::new(true),
            fatal: Mutex::new(None),
            reopens: AtomicU64::new(0),
            probes: AtomicU64::new(0),
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The metrics label.
    pub fn label(&self) -> &'static str {
        self.label
    }

    /// Mutable access at open time (integrity check, migrations), before sharing.
    pub fn get_mut(&mut self) -> Option<&mut Database> {
        self.db.get_mut().ok().and_then(Option::as_mut)
    }

    /// Runs `f` on the open database; if it fails, checks the file and reopens it
    /// when redb reports an I/O error, so the next call can succeed.
    pub fn with<T, E: From<StoreDown>>(&self, f: impl FnOnce(&Database) -> Result<T, E>) -> Result<T, E> {
        let out = {
            let guard = self
                .db
                .read()
                .map_err(|_| StoreDown(format!("{}: lock poisoned", self.path.display())))?;
            match guard.as_ref() {
                Some(db) => f(db),
                None => Err(StoreDown(format!("{} is being reopened", self.path.display())).into()),
            }
        };
        if out.is_err() {
            let _ = self.round_trip();
        }
        out
    }

    /// Writes and reads back a counter in the `health` table; on an I/O error
    /// reopens the file (rate-limited) and tries once more. Updates the health
    /// gauge. `Err` carries the reason for `/healthz`.
    pub fn round_trip(&self) -> Result<(), Unhealthy> {
        let r = match self.probe() {
            Err(ProbeError::Io(first)) => match self.reopen() {
                Reopen::Done => self.probe().map_err(|e| Unhealthy(e.to_string())),
                Reopen::Throttled => Err(Unhealthy(first)),
                Reopen::Failed(e) => Err(Unhealthy(e)),
            },
            r => r.map_err(|e| Unhealthy(e.to_string())),
        };
        self.healthy.store(r.is_ok(), Ordering::SeqCst);
        metrics::gauge!("provisioner_store_healthy", "store" => self.label).set(if r.is_ok() {
            1.0
        } else {
            0.0
        });
        // Registered here too: `open` may run before the exporter is installed.
        metrics::counter!("provisioner_store_reopens_total", "store" => self.label).increment(0);
        r.map_err(|e| Unhealthy(format!("{}: {e}", self.label)))
    }

    /// The result of the last check or operation probe.
    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::SeqCst)
    }

    /// Reopens done so far.
    pub fn reopens(&self) -> u64 {
        self.reopens.load(Ordering::SeqCst)
    }

    /// Set when a reopen failed for a reason other than I/O: serving on cannot help.
    pub fn fatal(&self) -> Option<String> {
        self.fatal.lock().ok().and_then(|f| f.clone())
    }

    fn probe(&self) -> Result<(), ProbeError> {
        let guard = self
            .db
            .read()
            .map_err(|_| ProbeError::Other("lock poisoned".into()))?;
        let Some(db) = guard.as_ref() else {
            return Err(ProbeError::Io("closed after a failed reopen".into()));
        };
        let n = self.probes.fetch_add(1, Ordering::SeqCst) + 1;
        let txn = db.begin_write().map_err(ProbeError::from_redb)?;
        txn.open_table(HEALTH)
            .map_err(ProbeError::from_redb)?
            .insert("probe", n)
            .map_err(ProbeError::from_redb)?;
        txn.commit().map_err(ProbeError::from_redb)?;
        let read = db.begin_read().map_err(ProbeError::from_redb)?;
        let got = read
            .open_table(HEALTH)
            .map_err(ProbeError::from_redb)?
            .get("probe")
            .map_err(ProbeError::from_redb)?
            .map(|v| v.value());
        if got == Some(n) {
            Ok(())
        } else {
            Err(ProbeError::Other(format!("read back {got:?}, wrote {n}")))
        }
    }

    fn reopen(&self) -> Reopen {
        {
            let Ok(mut last) = self.last_reopen.lock() else {
                return Reopen::Failed("reopen lock poisoned".into());
            };
            if last.is_some_and(|t| t.elapsed() < REOPEN_EVERY) {
                return Reopen::Throttled;
            }
            *last = Some(Instant::now());
        }
        let Ok(mut slot) = self.db.write() else {
            return Reopen::Failed("lock poisoned".into());
        };
        // Close first: the file lock is per open file, so a second handle in this
        // process would be refused while the old one lives.
        if let Some(old) = slot.take()
            && let Err(e) = old.close()
        {
            tracing::warn!(store = self.label, error = %e, "closing the failed store");
        }
        match open_file(&self.path) {
            Ok(db) => {
                *slot = Some(db);
                self.reopens.fetch_add(1, Ordering::SeqCst);
                metrics::counter!("provisioner_store_reopens_total", "store" => self.label).increment(1);
                tracing::warn!(store = self.label, file = %self.path.display(), "store reopened after an I/O error");
                Reopen::Done
            }
            Err(OpenError::Io { reason, .. }) => {
                tracing::warn!(store = self.label, error = %reason, "store reopen failed; retrying");
                Reopen::Failed(reason)
            }
            Err(e) => {
                tracing::error!(store = self.label, error = %e, "store cannot be reopened");
                if let Ok(mut f) = self.fatal.lock() {
                    *f = Some(e.to_string());
                }
                Reopen::Failed(e.to_string())
            }
        }
    }
}

/// Why a store's round trip failed (the reason `/healthz` reports).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Unhealthy(pub String);

enum Reopen {
    Done,
    Throttled,
    Failed(String),
}

#[derive(Debug, thiserror::Error)]
enum ProbeError {
    #[error("{0}")]
    Io(String),
    #[error("{0}")]
    Other(String),
}

impl ProbeError {
    fn from_redb(e: impl Into<redb::Error>) -> Self {
        match e.into() {
            e @ (redb::Error::Io(_) | redb::Error::PreviousIo | redb::Error::DatabaseClosed) => {
                Self::Io(e.to_string())
            }
            e => Self::Other(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn foreign_file_is_refused_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("inventory.redb");
        std::fs::write(&path, b"not a database at all").unwrap();
        let err = open_file(&path).unwrap_err().to_string();
        assert!(
            err.contains("inventory.redb") && err.contains("provisioner restore"),
            "{err}"
        );
        assert_eq!(std::fs::read(&path).unwrap(), b"not a database at all");
    }

    #[test]
    fn mangled_redb_file_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("leases.redb");
        Healing::open(&path, "test").unwrap().round_trip().unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        for b in bytes.iter_mut().skip(MAGIC.len()).step_by(7) {
            *b ^= 0x5a;
        }
        std::fs::write(&path, &bytes).unwrap();
        match open_file(&path) {
            Err(e) => assert!(e.to_string().contains("leases.redb"), "{e}"),
            // redb may repair what it can: then the file must work.
            Ok(db) => drop(db),
        }
    }

    #[test]
    fn round_trip_answers_and_counts_no_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let h = Healing::open(&dir.path().join("x.redb"), "test").unwrap();
        for _ in 0..3 {
            h.round_trip().unwrap();
        }
        assert!(h.healthy());
        assert_eq!(h.reopens(), 0);
    }
}
