//! A view of a [`LeaseStore`] whose writes do not wait for the disk.
//!
//! The engine ([`crate::dhcp::full::FullServer`]) writes a lease and then builds
//! the ACK, as if the write were durable. Handed a [`Deferred`] view, its writes
//! only [`LeaseStore::begin`] (applied in memory and queued for the group commit)
//! and the view keeps their tickets; the caller takes them as a [`Pending`] and
//! holds the reply until [`Pending::settle`] says every write is durable, or drops
//! it if one failed. So one thread can answer client after client while their
//! leases share one commit, instead of parking a thread per client on the fsync
//! (RFC 2131 §4.3.2: the binding is committed before the DHCPACK is sent).

use std::net::Ipv4Addr;
use std::sync::Mutex;

use super::{Lease, LeaseError, LeaseOp, LeaseStore, Ticket};
use crate::model::MacAddr;

/// Reads go to the store; writes are begun and their tickets kept.
#[derive(Debug)]
pub struct Deferred<'a> {
    inner: &'a dyn LeaseStore,
    tickets: Mutex<Vec<Ticket>>,
}

/// The writes of one request that are not durable yet (empty if none were
/// deferred). Settle it before sending the reply it belongs to; never drop it
/// unsettled (the store keeps each ticket's result until it is read).
#[derive(Debug, Default)]
#[must_use = "settle it before the reply goes out"]
pub struct Pending(Vec<Ticket>);

impl<'a> Deferred<'a> {
    /// A view of `inner` with no writes yet.
    pub fn new(inner: &'a dyn LeaseStore) -> Self {
        Self {
            inner,
            tickets: Mutex::new(Vec::new()),
        }
    }

    /// The tickets of every write made through this view.
    pub fn into_pending(self) -> Pending {
        Pending(self.tickets.into_inner().unwrap_or_else(|p| p.into_inner()))
    }

    fn begin(&self, op: LeaseOp) -> Result<(), LeaseError> {
        if let Some(t) = self.inner.begin(op)? {
            self.tickets
                .lock()
                .map_err(|_| LeaseError::Backend("deferred tickets lock poisoned".into()))?
                .push(t);
        }
        Ok(())
    }
}

impl Pending {
    /// Whether nothing waits for the disk.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Waits until every write is durable; the first failure is returned, after
    /// every ticket has been settled (each failed write is undone in memory).
    pub fn settle(self, store: &dyn LeaseStore) -> Result<(), LeaseError> {
        let mut first = Ok(());
        for t in self.0 {
            let r = store.settle(t);
            if first.is_ok() {
                first = r;
            }
        }
        first
    }
}

impl LeaseStore for Deferred<'_> {
    fn by_mac(&self, mac: MacAddr) -> Result<Option<Lease>, LeaseError> {
        self.inner.by_mac(mac)
    }

    fn by_ip(&self, ip: Ipv4Addr) -> Result<Option<Lease>, LeaseError> {
        self.inner.by_ip(ip)
    }

    /// Applied in memory and queued; durable once the [`Pending`] settles.
    fn put(&self, lease: &Lease) -> Result<(), LeaseError> {
        self.begin(LeaseOp::Put(lease.clone()))
    }

    /// Returns the lease as read just before the removal was queued.
    fn remove(&self, mac: MacAddr) -> Result<Option<Lease>, LeaseError> {
        let old = self.inner.by_mac(mac)?;
        self.begin(LeaseOp::Remove(mac))?;
        Ok(old)
    }

    fn list(&self) -> Result<Vec<Lease>, LeaseError> {
        self.inner.list()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::dhcp::lease::{GroupCommit, LeaseState, MemLeases};

    fn lease(n: u8) -> Lease {
        Lease {
            mac: MacAddr([0x52, 0x54, 0, 0, 0, n]),
            ip: Ipv4Addr::new(10, 0, 0, n),
            expires: 100,
            hostname: None,
            state: LeaseState::Active,
        }
    }

    #[test]
    fn writes_reach_the_disk_only_when_settled() {
        let disk = Arc::new(MemLeases::new());
        let g = GroupCommit::new(disk.clone()).unwrap();
        let view = Deferred::new(&g);
        view.put(&lease(1)).unwrap();
        view.put(&lease(2)).unwrap();
        assert_eq!(g.by_mac(lease(1).mac).unwrap(), Some(lease(1)), "memory has it");
        assert!(disk.list().unwrap().is_empty(), "the disk has nothing yet");
        let pending = view.into_pending();
        assert!(!pending.is_empty());
        pending.settle(&g).unwrap();
        assert_eq!(
            disk.list().unwrap(),
            vec![lease(1), lease(2)],
            "one commit, both durable"
        );
    }

    #[test]
    fn a_store_without_write_behind_is_durable_at_once() {
        let disk = MemLeases::new();
        let view = Deferred::new(&disk);
        view.put(&lease(3)).unwrap();
        assert_eq!(disk.by_mac(lease(3).mac).unwrap(), Some(lease(3)));
        let pending = view.into_pending();
        assert!(pending.is_empty(), "nothing to wait for");
        pending.settle(&disk).unwrap();
    }

    /// A durable store that refuses every commit.
    #[derive(Debug, Default)]
    struct Full(MemLeases);
    impl LeaseStore for Full {
        fn by_mac(&self, mac: MacAddr) -> Result<Option<Lease>, LeaseError> {
            self.0.by_mac(mac)
        }
        fn by_ip(&self, ip: Ipv4Addr) -> Result<Option<Lease>, LeaseError> {
            self.0.by_ip(ip)
        }
        fn put(&self, _: &Lease) -> Result<(), LeaseError> {
            Err(LeaseError::Backend("disk full".into()))
        }
        fn remove(&self, _: MacAddr) -> Result<Option<Lease>, LeaseError> {
            Err(LeaseError::Backend("disk full".into()))
        }
        fn list(&self) -> Result<Vec<Lease>, LeaseError> {
            self.0.list()
        }
    }

    #[test]
    fn a_failed_commit_fails_the_settle_and_leaves_memory_as_the_disk() {
        let g = GroupCommit::new(Arc::new(Full::default())).unwrap();
        let view = Deferred::new(&g);
        view.put(&lease(4)).unwrap();
        assert!(view.into_pending().settle(&g).is_err(), "no ACK may follow");
        assert_eq!(g.by_mac(lease(4).mac).unwrap(), None, "undone in memory");
        assert_eq!(g.by_ip(lease(4).ip).unwrap(), None);
    }
}
