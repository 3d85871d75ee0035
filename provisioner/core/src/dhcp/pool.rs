//! Pool protection of the `full` personality: who may take a pool address
//! ([`PoolPolicy`]), a global rate for offers to MACs the appliance knows nothing
//! about ([`OfferRate`]), and the free list ([`FreeList`]) that makes allocation
//! O(1) amortized, so an exhausted pool answers a DISCOVER without scanning it under
//! the decision lock.
//!
//! The lease store stays the source of truth: an address taken from the free list is
//! still checked against it (and the held offers) before it is offered, and one that
//! turns out busy goes back on the busy heap with its real end time.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

/// Who gets addresses from the dynamic pool (reservations and clients that already
/// hold a lease are always answered).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PoolPolicy {
    /// Any client.
    Any,
    /// Network-boot clients (PXE / HTTP Boot vendor class, iPXE, client architecture
    /// option) and machines in the inventory. A random-MAC flood of plain clients
    /// cannot drain the pool the fleet boots from.
    #[default]
    BootClients,
    /// Only machines in the inventory (and reservations).
    Known,
}

impl PoolPolicy {
    /// Whether a client may take a pool address.
    pub fn admits(self, boot_client: bool, known: bool) -> bool {
        match self {
            Self::Any => true,
            Self::BootClients => boot_client || known,
            Self::Known => known,
        }
    }
}

/// Pool protection settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolGuard {
    /// Who gets pool addresses.
    pub policy: PoolPolicy,
    /// Offers per second to MACs with no record, reservation or lease (0: no limit).
    pub unknown_offer_rate: u32,
    /// Burst of such offers.
    pub unknown_offer_burst: u32,
}

impl Default for PoolGuard {
    fn default() -> Self {
        Self {
            policy: PoolPolicy::BootClients,
            // A 500-machine site powering on at once gets every machine an offer
            // within seconds; a random-MAC flood gets 50 a second, each held 30 s.
            unknown_offer_rate: 50,
            unknown_offer_burst: 500,
        }
    }
}

impl PoolGuard {
    /// No protection: any client, no offer rate (the behaviour before pool policies).
    pub fn open() -> Self {
        Self {
            policy: PoolPolicy::Any,
            unknown_offer_rate: 0,
            unknown_offer_burst: 0,
        }
    }
}

/// A token bucket on unix seconds (the engine's clock), for offers to unknown MACs.
#[derive(Debug)]
pub struct OfferRate {
    rate: u32,
    burst: u32,
    tokens: u32,
    last: i64,
}

impl OfferRate {
    /// `rate` per second with `burst`; a rate of 0 allows everything.
    pub fn new(rate: u32, burst: u32) -> Self {
        let burst = burst.max(rate).max(1);
        Self {
            rate,
            burst,
            tokens: burst,
            last: i64::MIN,
        }
    }

    /// Takes one token at `now` if there is one.
    pub fn take(&mut self, now: i64) -> bool {
        if self.rate == 0 {
            return true;
        }
        if now > self.last {
            let secs = if self.last == i64::MIN {
                u64::MAX
            } else {
                u64::try_from(now - self.last).unwrap_or(0)
            };
            let add = secs.saturating_mul(u64::from(self.rate));
            self.tokens = u64::from(self.tokens)
                .saturating_add(add)
                .min(u64::from(self.burst)) as u32;
            self.last = now;
        }
        if self.tokens > 0 {
            self.tokens -= 1;
            true
        } else {
            false
        }
    }
}

/// Free pool addresses in allocation order, and busy ones by the time they may
/// free up. Built once from the store, then kept up to date by the engine.
#[derive(Debug, Default)]
pub struct FreeList {
    free: VecDeque<Ipv4Addr>,
    busy: BinaryHeap<Reverse<(i64, Ipv4Addr)>>,
    built: bool,
}

impl FreeList {
    /// Whether [`build`](Self::build) has run.
    pub fn is_built(&self) -> bool {
        self.built
    }

    /// Fills the list: `busy_until(ip)` is `Some(t)` for an address held until
    /// `t`, `None` for a free one; `skip` addresses (reservations) never enter.
    pub fn build(
        &mut self,
        (start, end): (Ipv4Addr, Ipv4Addr),
        skip: impl Fn(Ipv4Addr) -> bool,
        mut busy_until: impl FnMut(Ipv4Addr) -> Option<i64>,
    ) {
        for n in u32::from(start)..=u32::from(end) {
            let ip = Ipv4Addr::from(n);
            if skip(ip) {
                continue;
            }
            match busy_until(ip) {
                Some(t) => self.busy.push(Reverse((t, ip))),
                None => self.free.push_back(ip),
            }
        }
        self.built = true;
    }

    /// The next candidate at `now`: addresses whose hold ended move back to the
    /// free list first. `None` when nothing is free: O(1) on an exhausted pool.
    pub fn next(&mut self, now: i64) -> Option<Ipv4Addr> {
        while let Some(Reverse((t, ip))) = self.busy.peek().copied() {
            if t > now {
                break;
            }
            self.busy.pop();
            self.free.push_back(ip);
        }
        self.free.pop_front()
    }

    /// `ip` is held until `until` (offered, leased or declined).
    pub fn hold(&mut self, ip: Ipv4Addr, until: i64) {
        self.busy.push(Reverse((until, ip)));
    }

    /// `ip` is free again (released); it goes to the back of the list.
    pub fn release(&mut self, ip: Ipv4Addr) {
        self.free.push_back(ip);
    }

    /// Candidates in the free list (with possible stale duplicates).
    pub fn free_len(&self) -> usize {
        self.free.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 0, 0, n)
    }

    #[test]
    fn policy_admits() {
        assert!(PoolPolicy::Any.admits(false, false));
        assert!(!PoolPolicy::BootClients.admits(false, false));
        assert!(PoolPolicy::BootClients.admits(true, false));
        assert!(PoolPolicy::BootClients.admits(false, true));
        assert!(!PoolPolicy::Known.admits(true, false));
        assert!(PoolPolicy::Known.admits(false, true));
    }

    #[test]
    fn offer_rate_burst_then_per_second() {
        let mut r = OfferRate::new(2, 3);
        assert!((0..3).all(|_| r.take(100)));
        assert!(!r.take(100));
        assert!(
            r.take(101) && r.take(101) && !r.take(101),
            "2 more a second later"
        );
        let mut open = OfferRate::new(0, 0);
        assert!((0..10_000).all(|_| open.take(100)));
    }

    #[test]
    fn free_list_hands_out_frees_then_reclaims_expired_holds() {
        let mut f = FreeList::default();
        f.build((ip(10), ip(14)), |a| a == ip(12), |a| (a == ip(11)).then_some(50));
        assert_eq!(f.next(0), Some(ip(10)));
        f.hold(ip(10), 30);
        assert_eq!(f.next(0), Some(ip(13)));
        f.hold(ip(13), 40);
        assert_eq!(f.next(0), Some(ip(14)));
        f.hold(ip(14), 60);
        assert_eq!(f.next(0), None, "exhausted: no scan, no address");
        assert_eq!(f.next(35), Some(ip(10)), "the hold on .10 ended at 30");
        f.release(ip(14));
        assert_eq!(f.next(35), Some(ip(14)));
        assert_eq!(f.next(55), Some(ip(13)));
        assert_eq!(f.next(55), Some(ip(11)));
        assert_eq!(f.next(55), None, ".12 is reserved, never in the pool list");
    }
}
