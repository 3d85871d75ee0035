//! DHCP leases on redb, in their own file (`<state_dir>/leases.redb`) so a lease
//! storm's commits never wait behind inventory writes. Every commit is fsync'd
//! (`Durability::Immediate`, redb's default), so a lease `put` that returned `Ok`
//! survives `kill -9`: the server sends the ACK only after that.

use std::net::Ipv4Addr;
use std::path::Path;

use provisioner_core::dhcp::lease::{Lease, LeaseError, LeaseOp, LeaseStore};
use provisioner_core::model::MacAddr;
use redb::{ReadableDatabase, ReadableTable, TableDefinition};

use super::healing::Healing;

/// Leases keyed by MAC (JSON values, like the inventory).
const BY_MAC: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("leases_by_mac");
/// Address (as u32, so iteration is in address order) → MAC.
const BY_IP: TableDefinition<'_, u32, &str> = TableDefinition::new("leases_by_ip");

/// The redb-backed [`LeaseStore`].
#[derive(Debug)]
pub struct RedbLeases {
    db: Healing,
}

fn backend(e: impl std::fmt::Display) -> LeaseError {
    LeaseError::Backend(e.to_string())
}

fn decode(key: &str, bytes: &[u8]) -> Result<Lease, LeaseError> {
    serde_json::from_slice(bytes).map_err(|e| LeaseError::Corrupt {
        key: key.to_string(),
        message: e.to_string(),
    })
}

impl RedbLeases {
    /// Opens (or creates) the lease file. Fails if another process holds it open.
    pub fn open(path: &Path) -> Result<Self, LeaseError> {
        let db = Healing::open(path, "leases").map_err(backend)?;
        db.with(|db| {
            let txn = db.begin_write().map_err(backend)?;
            txn.open_table(BY_MAC).map_err(backend)?;
            txn.open_table(BY_IP).map_err(backend)?;
            txn.commit().map_err(backend)
        })?;
        Ok(Self { db })
    }
}

type Tables<'t> = (
    redb::Table<'t, &'static str, &'static [u8]>,
    redb::Table<'t, u32, &'static str>,
);

/// `put` inside an open write transaction.
fn put_in(t: &mut Tables<'_>, lease: &Lease) -> Result<(), LeaseError> {
    let (macs, ips) = t;
    let key = lease.mac.to_string();
    let value = serde_json::to_vec(lease).map_err(backend)?;
    if let Some(holder) = ips
        .get(u32::from(lease.ip))
        .map_err(backend)?
        .map(|v| v.value().to_string())
        && holder != key
    {
        let holder = holder.parse().map_err(backend)?;
        return Err(LeaseError::Conflict { ip: lease.ip, holder });
    }
    let old = macs
        .insert(key.as_str(), value.as_slice())
        .map_err(backend)?
        .map(|v| decode(&key, v.value()))
        .transpose()?;
    if let Some(old) = old
        && old.ip != lease.ip
    {
        ips.remove(u32::from(old.ip)).map_err(backend)?;
    }
    ips.insert(u32::from(lease.ip), key.as_str()).map_err(backend)?;
    Ok(())
}

/// `remove` inside an open write transaction.
fn remove_in(t: &mut Tables<'_>, mac: MacAddr) -> Result<Option<Lease>, LeaseError> {
    let (macs, ips) = t;
    let key = mac.to_string();
    let old = macs
        .remove(key.as_str())
        .map_err(backend)?
        .map(|v| decode(&key, v.value()))
        .transpose()?;
    if let Some(l) = &old {
        ips.remove(u32::from(l.ip)).map_err(backend)?;
    }
    Ok(old)
}

impl RedbLeases {
    /// Runs `f` in one write transaction and commits (fsync) only if it succeeds;
    /// on error the transaction is dropped, which aborts it.
    fn write<T>(&self, f: impl FnOnce(&mut Tables<'_>) -> Result<T, LeaseError>) -> Result<T, LeaseError> {
        self.db.with(|db| {
            let txn = db.begin_write().map_err(backend)?;
            let out = {
                let mut t = (
                    txn.open_table(BY_MAC).map_err(backend)?,
                    txn.open_table(BY_IP).map_err(backend)?,
                );
                f(&mut t)?
            };
            txn.commit().map_err(backend)?;
            Ok(out)
        })
    }
}

impl super::Healed for RedbLeases {
    fn healing(&self) -> &Healing {
        &self.db
    }
}

impl LeaseStore for RedbLeases {
    fn by_mac(&self, mac: MacAddr) -> Result<Option<Lease>, LeaseError> {
        self.db.with(|db| {
            let key = mac.to_string();
            let txn = db.begin_read().map_err(backend)?;
            let t = txn.open_table(BY_MAC).map_err(backend)?;
            match t.get(key.as_str()).map_err(backend)? {
                Some(v) => Ok(Some(decode(&key, v.value())?)),
                None => Ok(None),
            }
        })
    }

    fn by_ip(&self, ip: Ipv4Addr) -> Result<Option<Lease>, LeaseError> {
        self.db.with(|db| {
            let txn = db.begin_read().map_err(backend)?;
            let ips = txn.open_table(BY_IP).map_err(backend)?;
            let Some(mac) = ips
                .get(u32::from(ip))
                .map_err(backend)?
                .map(|v| v.value().to_string())
            else {
                return Ok(None);
            };
            let t = txn.open_table(BY_MAC).map_err(backend)?;
            match t.get(mac.as_str()).map_err(backend)? {
                Some(v) => Ok(Some(decode(&mac, v.value())?)),
                None => Ok(None),
            }
        })
    }

    fn put(&self, lease: &Lease) -> Result<(), LeaseError> {
        self.write(|t| put_in(t, lease))
    }

    fn remove(&self, mac: MacAddr) -> Result<Option<Lease>, LeaseError> {
        self.write(|t| remove_in(t, mac))
    }

    /// One transaction, one fsync for the whole batch.
    fn apply_batch(&self, ops: &[LeaseOp]) -> Result<(), LeaseError> {
        self.write(|t| {
            for op in ops {
                match op {
                    LeaseOp::Put(l) => put_in(t, l)?,
                    LeaseOp::Remove(m) => {
                        remove_in(t, *m)?;
                    }
                }
            }
            Ok(())
        })
    }

    fn list(&self) -> Result<Vec<Lease>, LeaseError> {
        self.db.with(|db| {
            let txn = db.begin_read().map_err(backend)?;
            let ips = txn.open_table(BY_IP).map_err(backend)?;
            let macs = txn.open_table(BY_MAC).map_err(backend)?;
            let mut out = Vec::new();
            for row in ips.iter().map_err(backend)? {
                let (_, mac) = row.map_err(backend)?;
                if let Some(v) = macs.get(mac.value()).map_err(backend)? {
                    out.push(decode(mac.value(), v.value())?);
                }
            }
            Ok(out)
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
        provisioner_core::dhcp::lease::battery::run_all(&|| {
            let i = n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Box::new(RedbLeases::open(&dir.path().join(format!("leases{i}.redb"))).unwrap())
        });
    }

    #[test]
    fn leases_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("leases.redb");
        let lease = Lease {
            mac: "52:54:00:00:00:01".parse().unwrap(),
            ip: Ipv4Addr::new(10, 9, 0, 7),
            expires: 1_790_000_000,
            hostname: None,
            state: provisioner_core::dhcp::lease::LeaseState::Active,
        };
        RedbLeases::open(&path).unwrap().put(&lease).unwrap();
        assert_eq!(RedbLeases::open(&path).unwrap().list().unwrap(), vec![lease]);
    }
}
