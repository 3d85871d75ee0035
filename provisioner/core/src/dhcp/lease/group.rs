//! Group commit: many concurrent lease writes share one durable commit.
//!
//! [`GroupCommit`] keeps every lease in memory (the engine's reads never touch
//! the disk) and queues each write for the durable store. The first writer that
//! finds no commit running becomes the leader: it takes the whole queue, applies
//! it with one [`LeaseStore::apply_batch`] (one redb transaction, one fsync) and
//! wakes the writers it covered. A write returns only after the commit that holds
//! it, so the "durable before the ACK" rule still holds, at one fsync per batch
//! instead of one per client (the classic database group commit). [`LeaseStore::begin`]
//! queues without waiting and [`LeaseStore::settle`] waits later, so one thread can
//! queue many clients' writes before the first of them waits ([`super::Deferred`]).
//!
//! A durable commit that fails never turns into an ACK, and the memory never keeps
//! what the disk does not have: the leader retries the failed batch op by op (so one
//! bad op, a conflict, or a transient error does not fail its neighbours), gives
//! each writer its own op's result (kept per waiter until that waiter reads it: no
//! bounded list a starved waiter could fall off and read as `Ok`), and undoes every
//! failed op in memory (the lease the MAC held before), unless a later write of the
//! same MAC already replaced it. RFC 2131 §4.3.2: the binding is committed to
//! persistent storage before the server sends the DHCPACK.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use super::{Lease, LeaseError, LeaseOp, LeaseStore, MemLeases, Ticket};
use crate::model::MacAddr;

/// A write-through, group-committing [`LeaseStore`] over a durable one.
#[derive(Debug)]
pub struct GroupCommit {
    cache: MemLeases,
    durable: Arc<dyn LeaseStore>,
    state: Mutex<State>,
    done: Condvar,
}

/// One queued write: its sequence number, the op, and what the MAC held in memory
/// before it (restored if the op does not reach the disk).
#[derive(Debug)]
struct Queued {
    seq: u64,
    op: LeaseOp,
    before: Option<Lease>,
}

#[derive(Debug, Default)]
struct State {
    queue: Vec<Queued>,
    /// Sequence number of the last queued op.
    queued: u64,
    leader: bool,
    /// The result of each committed op, until its writer takes it.
    results: HashMap<u64, Result<(), OpFailed>>,
}

/// Why one queued op was not stored: the backend's error, kept (as text: `LeaseError`
/// is not `Clone`) until its writer takes it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
struct OpFailed(String);

impl From<LeaseError> for OpFailed {
    fn from(e: LeaseError) -> Self {
        Self(e.to_string())
    }
}

fn mac_of(op: &LeaseOp) -> MacAddr {
    match op {
        LeaseOp::Put(l) => l.mac,
        LeaseOp::Remove(m) => *m,
    }
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

    /// Queues `op` (already applied to memory, `before` being the MAC's previous
    /// lease there) and returns its sequence number, for [`Self::wait`].
    fn enqueue(st: &mut State, op: LeaseOp, before: Option<Lease>) -> u64 {
        st.queued += 1;
        let seq = st.queued;
        st.queue.push(Queued { seq, op, before });
        seq
    }

    /// Waits until op `seq` has a result (leading a commit if none runs).
    fn wait<'a>(&'a self, mut st: MutexGuard<'a, State>, seq: u64) -> Result<(), LeaseError> {
        loop {
            if let Some(r) = st.results.remove(&seq) {
                return r.map_err(|e| LeaseError::Backend(e.0));
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
            drop(st);
            let results = self.commit(&batch);
            st = self.lock()?;
            self.undo_failed(&st, &batch, &results);
            st.results.extend(batch.iter().map(|q| q.seq).zip(results));
            st.leader = false;
            self.done.notify_all();
        }
    }

    /// One durable commit for the batch; if it fails, one per op, so each writer
    /// gets the truth about its own op.
    fn commit(&self, batch: &[Queued]) -> Vec<Result<(), OpFailed>> {
        let ops: Vec<LeaseOp> = batch.iter().map(|q| q.op.clone()).collect();
        match self.durable.apply_batch(&ops) {
            Ok(()) => vec![Ok(()); batch.len()],
            // Once more, alone: the store may have healed itself (a reopen after an
            // I/O error) since the failure.
            Err(_) if batch.len() == 1 => {
                vec![self.durable.apply_batch(&ops).map_err(OpFailed::from)]
            }
            Err(_) => ops
                .iter()
                .map(|op| {
                    self.durable
                        .apply_batch(std::slice::from_ref(op))
                        .map_err(OpFailed::from)
                })
                .collect(),
        }
    }

    /// Puts back in memory what each failed op replaced, newest first, unless a
    /// later op of the same MAC (in this batch, or queued since) owns the entry now.
    fn undo_failed(&self, st: &State, batch: &[Queued], results: &[Result<(), OpFailed>]) {
        for (i, q) in batch.iter().enumerate().rev() {
            if results[i].is_ok() {
                continue;
            }
            let mac = mac_of(&q.op);
            let superseded = batch[i + 1..].iter().any(|later| mac_of(&later.op) == mac)
                || st.queue.iter().any(|later| mac_of(&later.op) == mac);
            if superseded {
                continue;
            }
            let _ = self.cache.remove(mac);
            if let Some(before) = &q.before {
                // The address may have gone to another MAC meanwhile: then this MAC
                // simply has no lease in memory, as it has none acknowledged.
                let _ = self.cache.put(before);
            }
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
        let t = self.begin(LeaseOp::Put(lease.clone()))?;
        t.map_or(Ok(()), |t| self.settle(t))
    }

    fn remove(&self, mac: MacAddr) -> Result<Option<Lease>, LeaseError> {
        let mut st = self.lock()?;
        let old = self.cache.remove(mac)?;
        let seq = Self::enqueue(&mut st, LeaseOp::Remove(mac), old.clone());
        self.wait(st, seq)?;
        Ok(old)
    }

    /// Applies `op` in memory and queues it; the ticket's [`Self::settle`] waits
    /// for (or leads) the commit that holds it. Memory and queue change under one
    /// lock, so the durable order is the memory order.
    fn begin(&self, op: LeaseOp) -> Result<Option<Ticket>, LeaseError> {
        let mut st = self.lock()?;
        let before = match &op {
            LeaseOp::Put(l) => {
                let before = self.cache.by_mac(l.mac)?;
                self.cache.put(l)?;
                before
            }
            LeaseOp::Remove(m) => self.cache.remove(*m)?,
        };
        Ok(Some(Ticket(Self::enqueue(&mut st, op, before))))
    }

    fn settle(&self, ticket: Ticket) -> Result<(), LeaseError> {
        let st = self.lock()?;
        self.wait(st, ticket.0)
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
        /// Every commit holding this MAC fails (a conflict, a bad record).
        poison: Mutex<Option<MacAddr>>,
        /// Fail the commits numbered 0 and 1 modulo this (0: never), so a failure
        /// outlives the one retry.
        flaky: AtomicUsize,
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
            let n = self.batches.fetch_add(1, Ordering::SeqCst) + 1;
            std::thread::sleep(std::time::Duration::from_millis(2)); // an fsync
            let flaky = self.flaky.load(Ordering::SeqCst);
            if self.fail.load(Ordering::SeqCst) || (flaky > 0 && n % flaky <= 1) {
                return Err(LeaseError::Backend("disk full".into()));
            }
            let poison = *self.poison.lock().unwrap();
            if ops.iter().any(|op| Some(mac_of(op)) == poison) {
                return Err(LeaseError::Backend("poisoned record".into()));
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
    fn one_failing_op_does_not_fail_its_batch_and_memory_drops_it() {
        let slow = Arc::new(Slow::default());
        let g = Arc::new(GroupCommit::new(slow.clone()).unwrap());
        *slow.poison.lock().unwrap() = Some(lease(7).mac);
        let threads: Vec<_> = (0..32)
            .map(|i| {
                let g = g.clone();
                std::thread::spawn(move || (i, g.put(&lease(i)).is_ok()))
            })
            .collect();
        for t in threads {
            let (i, ok) = t.join().unwrap();
            assert_eq!(ok, i != 7, "lease {i}: only the poisoned op fails");
        }
        assert_eq!(g.by_mac(lease(7).mac).unwrap(), None, "memory rolled back");
        assert_eq!(g.by_ip(lease(7).ip).unwrap(), None, "address free again");
        assert_eq!(g.list().unwrap(), slow.inner.list().unwrap(), "memory = disk");
    }

    /// The injected failing backend: under a storm of writers where half the
    /// commits fail, every write that returned `Ok` (an ACK would go out) is on
    /// disk, every write that failed is not, and memory equals disk afterwards.
    #[test]
    fn no_ok_for_an_unstored_lease_under_a_failing_backend() {
        let slow = Arc::new(Slow::default());
        slow.flaky.store(4, Ordering::SeqCst);
        let g = Arc::new(GroupCommit::new(slow.clone()).unwrap());
        let threads: Vec<_> = (0..200)
            .map(|i| {
                let g = g.clone();
                std::thread::spawn(move || (i, g.put(&lease(i)).is_ok()))
            })
            .collect();
        let (mut acked, mut refused) = (0, 0);
        for t in threads {
            let (i, ok) = t.join().unwrap();
            let stored = slow.inner.by_mac(lease(i).mac).unwrap();
            if ok {
                acked += 1;
                assert_eq!(stored, Some(lease(i)), "Ok for lease {i} that is not stored");
            } else {
                refused += 1;
                assert_eq!(stored, None, "lease {i} failed but is stored");
            }
        }
        assert!(refused > 0 && acked > 0, "{acked} acked, {refused} refused");
        assert_eq!(g.list().unwrap(), slow.inner.list().unwrap(), "memory = disk");
    }

    #[test]
    fn a_failed_renewal_keeps_the_previous_lease_in_memory() {
        let slow = Arc::new(Slow::default());
        let g = GroupCommit::new(slow.clone()).unwrap();
        g.put(&lease(1)).unwrap();
        let mut renewed = lease(1);
        renewed.expires = 99;
        slow.fail.store(true, Ordering::SeqCst);
        assert!(g.put(&renewed).is_err());
        assert_eq!(g.by_mac(lease(1).mac).unwrap(), Some(lease(1)));
    }

    #[test]
    fn loads_existing_leases() {
        let durable = Arc::new(MemLeases::new());
        durable.put(&lease(5)).unwrap();
        let g = GroupCommit::new(durable).unwrap();
        assert_eq!(g.by_ip(lease(5).ip).unwrap(), Some(lease(5)));
    }
}
