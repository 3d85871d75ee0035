//! Group commit for the inventory: many writers, one fsync.
//!
//! In a boot storm every machine writes its timeline several times (lease, TFTP
//! transfer, script, each asset, config), from many threads at once. redb runs one
//! write transaction at a time, and an `Immediate` commit writes the header and
//! fsyncs each time. Here a writer commits with `Durability::None` (visible to
//! readers, not yet on disk) and then waits until a durable commit covers it: the
//! first waiter leads and makes one empty `Immediate` commit, which persists every
//! earlier non-durable commit (redb 4.6.0 `src/transactions.rs`: `durable_commit`
//! writes the pages of the unpersisted commits, then the header, then fsyncs;
//! `Durability::None`: "will not be persisted to disk unless followed by a commit
//! with Immediate"); the writers that committed while it ran share the next one.
//! A write returns `Ok` only once it is durable, so an acknowledged write still
//! survives `kill -9` and power loss.
//!
//! A reopen after an I/O error (`Healing`) drops the non-durable commits: a ticket
//! carries the handle's epoch (its reopen count), and a writer whose commit
//! predates a reopen gets an error, never `Ok`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};

/// The sequencer shared by a store's writers.
#[derive(Debug, Default)]
pub struct GroupCommit {
    /// Tickets issued; taken inside the write transaction, so redb's write lock
    /// orders them like the commits.
    issued: AtomicU64,
    state: Mutex<State>,
    turn: Condvar,
}

#[derive(Debug, Default)]
struct State {
    /// Generation of the last successful flush, and the last ticket it covered.
    epoch: u64,
    durable: u64,
    /// A leader is flushing; the others wait for its result.
    flushing: bool,
    /// Flushes done (for tests and metrics).
    flushes: u64,
}

/// A non-durable commit waiting to become durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "a ticket must be waited on before the write is acknowledged"]
pub struct Ticket {
    seq: u64,
    epoch: u64,
}

/// Why a write's ticket can never become durable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("the store was reopened before this write reached the disk; it was not stored")]
pub struct Reopened;

impl GroupCommit {
    /// Takes a ticket for the commit about to happen. Call it inside the write
    /// transaction, with `epoch` read while the handle cannot be reopened.
    pub fn ticket(&self, epoch: u64) -> Ticket {
        Ticket {
            seq: self.issued.fetch_add(1, Ordering::SeqCst) + 1,
            epoch,
        }
    }

    /// Every ticket issued so far: what a durable commit started now covers. Call
    /// it inside the leader's write transaction (no writer is between its ticket
    /// and its commit then).
    pub fn issued(&self) -> u64 {
        self.issued.load(Ordering::SeqCst)
    }

    /// Flushes done so far.
    pub fn flushes(&self) -> u64 {
        self.lock().flushes
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Returns once `ticket`'s commit is durable. The first waiter runs `flush`
    /// (a durable commit returning its generation and [`GroupCommit::issued`] as
    /// read inside it); the others wait for it and lead the next one if it did not
    /// cover them. A failed flush fails its leader; each waiter leads at most once.
    pub fn wait<E: From<Reopened>>(
        &self,
        ticket: Ticket,
        flush: impl Fn() -> Result<(u64, u64), E>,
    ) -> Result<(), E> {
        let mut st = self.lock();
        loop {
            if st.epoch == ticket.epoch && st.durable >= ticket.seq {
                return Ok(());
            }
            if st.epoch > ticket.epoch {
                return Err(Reopened.into());
            }
            if st.flushing {
                st = self
                    .turn
                    .wait(st)
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                continue;
            }
            st.flushing = true;
            drop(st);
            let r = flush();
            st = self.lock();
            st.flushing = false;
            self.turn.notify_all();
            let (epoch, upto) = r?;
            st.flushes += 1;
            if epoch > st.epoch || (epoch == st.epoch && upto > st.durable) {
                st.epoch = epoch;
                st.durable = upto;
            }
            if epoch > ticket.epoch {
                return Err(Reopened.into());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicU64;

    use super::*;

    #[derive(Debug, PartialEq, Eq)]
    enum E {
        Reopened,
        Disk,
    }

    impl From<Reopened> for E {
        fn from(_: Reopened) -> Self {
            E::Reopened
        }
    }

    #[test]
    fn one_writer_flushes_once_per_write() {
        let g = GroupCommit::default();
        for _ in 0..3 {
            let t = g.ticket(0);
            g.wait::<E>(t, || Ok((0, g.issued()))).unwrap();
        }
        assert_eq!(g.flushes(), 3);
    }

    #[test]
    fn a_flush_covers_every_ticket_issued_before_it() {
        let g = GroupCommit::default();
        let a = g.ticket(0);
        let b = g.ticket(0);
        g.wait::<E>(a, || Ok((0, g.issued()))).unwrap();
        // b was issued before a's flush read `issued`: no second flush.
        g.wait::<E>(b, || panic!("b is already durable")).unwrap();
        assert_eq!(g.flushes(), 1);
    }

    #[test]
    fn a_failed_flush_fails_its_leader_and_the_next_waiter_leads_again() {
        let g = GroupCommit::default();
        let a = g.ticket(0);
        let b = g.ticket(0);
        assert_eq!(g.wait(a, || Err(E::Disk)), Err(E::Disk));
        g.wait::<E>(b, || Ok((0, g.issued()))).unwrap();
    }

    #[test]
    fn a_ticket_from_before_a_reopen_is_never_ok() {
        let g = GroupCommit::default();
        let old = g.ticket(0);
        // The handle was reopened (generation 1): the flush succeeds on the new
        // file, which does not hold `old`'s commit.
        assert_eq!(g.wait(old, || Ok((1, g.issued()))), Err(E::Reopened));
        // Later tickets of the new generation are fine, and `old` stays refused.
        let new = g.ticket(1);
        g.wait::<E>(new, || Ok((1, g.issued()))).unwrap();
        assert_eq!(g.wait(old, || Ok((1, g.issued()))), Err(E::Reopened));
    }

    #[test]
    fn concurrent_writers_share_flushes_and_all_return_after_theirs() {
        let g = Arc::new(GroupCommit::default());
        // What the "disk" holds: the highest ticket a flush covered.
        let disk = Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..16)
            .map(|_| {
                let (g, disk) = (g.clone(), disk.clone());
                std::thread::spawn(move || {
                    for _ in 0..50 {
                        let t = g.ticket(0);
                        g.wait::<E>(t, || {
                            let upto = g.issued();
                            std::thread::sleep(std::time::Duration::from_micros(200));
                            disk.fetch_max(upto, Ordering::SeqCst);
                            Ok((0, upto))
                        })
                        .unwrap();
                        assert!(disk.load(Ordering::SeqCst) >= t.seq, "Ok before the flush");
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert!(g.flushes() < 800, "{} flushes for 800 writes", g.flushes());
    }
}
