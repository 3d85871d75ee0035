//! Group commit: many concurrent lease writes share one durable commit.
//!
//! [`GroupCommit`] keeps every lease in memory (the engine's reads never touch
//! the disk) and queues each write for the durable store. The first writer that
//! finds no commit running becomes the leader: it takes the whole queue, applies
//! it with one [`LeaseStore::apply_batch`] (one redb transaction, one fsync) and
//! wakes the writers it covered. A write returns only after the commit that holds
//! it, so the "durable before the ACK" rule still holds, at one fsync per batch
//! instead of one per client (the classic database group commit).
//!
//! If a durable commit fails, its writers get the error (no ACK goes out) while
//! the in-memory copy keeps their entries: the address stays set aside for that
//! MAC until it expires, which is the safe direction (a retry gets the same address
//! and commits again; a restart forgets a lease that was never acknowledged).

use std::collections::VecDeque;
use std::net::Ipv4Addr;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use super::{Lease, LeaseError, LeaseOp, LeaseStore, MemLeases};
use crate::model::MacAddr;

/// Failed commit ranges remembered for waiters that have not woken yet.
const FAILURES_KEPT: usize = 64;

/// A write-through, group-committing [`LeaseStore`] over a durable one.
#[derive(Debug)]
pub struct GroupCommit {
    cache: MemLeases,
    durable: Arc<dyn LeaseStore>,
    state: Mutex<State>,
    done: Condvar,
}

#[derive(Debug, Default)]
struct State {
    queue: Vec<LeaseOp>,
    /// Sequence number of the last queued op.
    queued: u64,
    /// Every op up to this sequence number has been through a commit.
    committed: u64,
    leader: bool,
    /// (first, last, error) of failed commits.
    failed: VecDeque<(u64, u64, String)>,
}

impl GroupCommit {
    /// Loads every lease of `durable` into memory.
    pub fn new(durable: Arc<dyn LeaseStore>) -> Result<Self, LeaseError> {
        let cache = MemLeases::new();
        for l in durable.list()? {
            cache.put(&l)?;
        }
        Ok(Self {
            cache,
            durable,
            state: Mutex::new(State::default()),
            done: Condvar::new(),
        })
    }

    fn lock(&self) -> Result<MutexGuard<'_, State>, LeaseError> {
        self.state
            .lock()
            .map_err(|_| LeaseError::Backend("group commit lock poisoned".into()))
    }

    /// Waits until op `seq` is committed (leading a commit if none runs).
    fn wait<'a>(&'a self, mut st: MutexGuard<'a, State>, seq: u64) -> Result<(), LeaseError> {
        loop {
            if st.committed >= seq {
                return match st.failed.iter().find(|(a, b, _)| (*a..=*b).contains(&seq)) {
                    Some((_, _, e)) => Err(LeaseError::Backend(e.clone())),
                    None => Ok(()),
                };
            }
            if st.leader {
                st = self
                    .done
                    .wait(st)
                    .map_err(|_| LeaseError::Backend("group commit lock poisoned".into()))?;
                continue;
            }
            st.leader = true;
            let batch = std::mem::take(&mut st.queue);
            let (first, last) = (st.committed + 1, st.queued);
            drop(st);
            let r = self.durable.apply_batch(&batch);
            st = self.lock()?;
            st.leader = false;
            st.committed = last;
            if let Err(e) = r {
                st.failed.push_back((first, last, e.to_string()));
                if st.failed.len() > FAILURES_KEPT {
                    st.failed.pop_front();
                }
            }
            self.done.notify_all();
        }
    }
}

impl LeaseStore for GroupCommit {
    fn by_mac(&self, mac: MacAddr) -> Result<Option<Lease>, LeaseError> {
        self.cache.by_mac(mac)
    }

    fn by_ip(&self, ip: Ipv4Addr) -> Result<Option<Lease>, LeaseError> {
        self.cache.by_ip(ip)
    }

    fn put(&self, lease: &Lease) -> Result<(), LeaseError> {
        // Memory and queue change under one lock, so the durable order is the
        // memory order.
        let mut st = self.lock()?;
        self.cache.put(lease)?;
        st.queue.push(LeaseOp::Put(lease.clone()));
        st.queued += 1;
        let seq = st.queued;
        self.wait(st, seq)
    }

    fn remove(&self, mac: MacAddr) -> Result<Option<Lease>, LeaseError> {
        let mut st = self.lock()?;
        let old = self.cache.remove(mac)?;
        st.queue.push(LeaseOp::Remove(mac));
        st.queued += 1;
        let seq = st.queued;
        self.wait(st, seq)?;
        Ok(old)
    }

    fn list(&self) -> Result<Vec<Lease>, LeaseError> {
        self.cache.list()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::dhcp::lease::LeaseState;

    #[test]
    fn battery() {
        super::super::battery::run_all(&|| Box::new(GroupCommit::new(Arc::new(MemLeases::new())).unwrap()));
    }

    /// Counts batches and can be told to fail.
    #[derive(Debug, Default)]
    struct Slow {
        inner: MemLeases,
        batches: AtomicUsize,
        fail: std::sync::atomic::AtomicBool,
    }

    impl LeaseStore for Slow {
        fn by_mac(&self, mac: MacAddr) -> Result<Option<Lease>, LeaseError> {
            self.inner.by_mac(mac)
        }
        fn by_ip(&self, ip: Ipv4Addr) -> Result<Option<Lease>, LeaseError> {
            self.inner.by_ip(ip)
        }
        fn put(&self, l: &Lease) -> Result<(), LeaseError> {
            self.inner.put(l)
        }
        fn remove(&self, mac: MacAddr) -> Result<Option<Lease>, LeaseError> {
            self.inner.remove(mac)
        }
        fn list(&self) -> Result<Vec<Lease>, LeaseError> {
            self.inner.list()
        }
        fn apply_batch(&self, ops: &[LeaseOp]) -> Result<(), LeaseError> {
            self.batches.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(std::time::Duration::from_millis(20)); // an fsync
            if self.fail.load(Ordering::SeqCst) {
                return Err(LeaseError::Backend("disk full".into()));
            }
            for op in ops {
                match op {
                    LeaseOp::Put(l) => self.inner.put(l)?,
                    LeaseOp::Remove(m) => {
                        self.inner.remove(*m)?;
                    }
                }
            }
            Ok(())
        }
    }

    fn lease(n: u32) -> Lease {
        let b = n.to_be_bytes();
        Lease {
            mac: MacAddr([0x52, 0x54, 0, b[1], b[2], b[3]]),
            ip: Ipv4Addr::new(10, 1, b[2], b[3]),
            expires: 1,
            hostname: None,
            state: LeaseState::Active,
        }
    }

    #[test]
    fn concurrent_writers_share_commits_and_all_are_durable() {
        let slow = Arc::new(Slow::default());
        let g = Arc::new(GroupCommit::new(slow.clone()).unwrap());
        let threads: Vec<_> = (0..64)
            .map(|i| {
                let g = g.clone();
                std::thread::spawn(move || g.put(&lease(i)).unwrap())
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(
            slow.inner.list().unwrap().len(),
            64,
            "every write returned only once durable"
        );
        let batches = slow.batches.load(Ordering::SeqCst);
        assert!(
            batches < 64,
            "writes were grouped ({batches} commits for 64 writes)"
        );
    }

    #[test]
    fn a_failed_commit_fails_its_writers_and_later_ones_recover() {
        let slow = Arc::new(Slow::default());
        let g = GroupCommit::new(slow.clone()).unwrap();
        slow.fail.store(true, Ordering::SeqCst);
        assert!(
            g.put(&lease(1)).is_err(),
            "no ACK for a write that is not durable"
        );
        slow.fail.store(false, Ordering::SeqCst);
        g.put(&lease(1)).unwrap();
        assert_eq!(
            slow.inner.by_mac(lease(1).mac).unwrap(),
            Some(lease(1)),
            "retry is durable"
        );
    }

    #[test]
    fn loads_existing_leases() {
        let durable = Arc::new(MemLeases::new());
        durable.put(&lease(5)).unwrap();
        let g = GroupCommit::new(durable).unwrap();
        assert_eq!(g.by_ip(lease(5).ip).unwrap(), Some(lease(5)));
    }
}
