//! An in-memory [`LeaseStore`] for tests and for `full` mode without a state dir.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Mutex;

use super::{Lease, LeaseError, LeaseStore};
use crate::model::MacAddr;

/// Leases in two maps under one lock.
#[derive(Debug, Default)]
pub struct MemLeases {
    inner: Mutex<Maps>,
}

#[derive(Debug, Default)]
struct Maps {
    by_mac: BTreeMap<MacAddr, Lease>,
    by_ip: BTreeMap<Ipv4Addr, MacAddr>,
}

impl MemLeases {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Maps>, LeaseError> {
        self.inner
            .lock()
            .map_err(|_| LeaseError::Backend("lease map lock poisoned".into()))
    }
}

impl LeaseStore for MemLeases {
    fn by_mac(&self, mac: MacAddr) -> Result<Option<Lease>, LeaseError> {
        Ok(self.lock()?.by_mac.get(&mac).cloned())
    }

    fn by_ip(&self, ip: Ipv4Addr) -> Result<Option<Lease>, LeaseError> {
        let m = self.lock()?;
        Ok(m.by_ip.get(&ip).and_then(|mac| m.by_mac.get(mac)).cloned())
    }

    fn put(&self, lease: &Lease) -> Result<(), LeaseError> {
        let mut m = self.lock()?;
        if let Some(&holder) = m.by_ip.get(&lease.ip)
            && holder != lease.mac
        {
            return Err(LeaseError::Conflict { ip: lease.ip, holder });
        }
        if let Some(old) = m.by_mac.insert(lease.mac, lease.clone())
            && old.ip != lease.ip
        {
            m.by_ip.remove(&old.ip);
        }
        m.by_ip.insert(lease.ip, lease.mac);
        Ok(())
    }

    fn remove(&self, mac: MacAddr) -> Result<Option<Lease>, LeaseError> {
        let mut m = self.lock()?;
        let old = m.by_mac.remove(&mac);
        if let Some(l) = &old {
            m.by_ip.remove(&l.ip);
        }
        Ok(old)
    }

    fn list(&self) -> Result<Vec<Lease>, LeaseError> {
        let m = self.lock()?;
        Ok(m.by_ip
            .values()
            .filter_map(|mac| m.by_mac.get(mac))
            .cloned()
            .collect())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn battery() {
        super::super::battery::run_all(&|| Box::new(super::MemLeases::new()));
    }
}
