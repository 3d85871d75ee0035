//! Load shedding: a bound on requests in flight (a semaphore; excess datagrams are
//! dropped, never queued) and a per-MAC token bucket, so one looping client cannot
//! starve the others. Both drops are counted in `/metrics`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Most MACs tracked; past this the table is reset (a flood of random MACs then
/// only costs the flood its own budget).
const MAX_TRACKED: usize = 65_536;

/// Shared limits of one DHCP server.
#[derive(Debug)]
pub struct Limits {
    in_flight: Arc<Semaphore>,
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<[u8; 6], (f64, Instant)>>,
}

impl Limits {
    /// `max_in_flight` concurrent requests; `rate` per second and `burst` per MAC.
    pub fn new(max_in_flight: usize, rate: u32, burst: u32) -> Self {
        Self {
            in_flight: Arc::new(Semaphore::new(max_in_flight.max(1))),
            rate: f64::from(rate.max(1)),
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// A slot for one request, or `None` when full (the caller drops the datagram).
    pub fn slot(&self) -> Option<OwnedSemaphorePermit> {
        self.in_flight.clone().try_acquire_owned().ok()
    }

    /// Whether `mac` may send one more packet at `now`.
    pub fn allow(&self, mac: [u8; 6], now: Instant) -> bool {
        let Ok(mut b) = self.buckets.lock() else {
            return true;
        };
        if b.len() >= MAX_TRACKED && !b.contains_key(&mac) {
            b.clear();
        }
        let (tokens, last) = b.entry(mac).or_insert((self.burst, now));
        let refill = now.saturating_duration_since(*last).as_secs_f64() * self.rate;
        *tokens = (*tokens + refill).min(self.burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The client MAC straight from the BOOTP header (`chaddr` at offset 28), read
/// before decoding so a flood is shed cheaply. `None` for short datagrams.
pub fn raw_chaddr(buf: &[u8]) -> Option<[u8; 6]> {
    buf.get(28..34)?.try_into().ok()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn bucket_allows_burst_then_rate() {
        let l = Limits::new(4, 2, 3);
        let t0 = Instant::now();
        let mac = [1, 2, 3, 4, 5, 6];
        assert!((0..3).all(|_| l.allow(mac, t0)), "burst of 3");
        assert!(!l.allow(mac, t0), "fourth at once is refused");
        assert!(l.allow([9; 6], t0), "other MACs unaffected");
        assert!(
            l.allow(mac, t0 + Duration::from_millis(500)),
            "one token after 0.5 s at 2/s"
        );
        assert!(!l.allow(mac, t0 + Duration::from_millis(500)));
    }

    #[test]
    fn in_flight_bound() {
        let l = Limits::new(2, 1, 1);
        let a = l.slot().unwrap();
        let _b = l.slot().unwrap();
        assert!(l.slot().is_none(), "third slot refused");
        drop(a);
        assert!(l.slot().is_some(), "slot returns when the permit drops");
    }
}
