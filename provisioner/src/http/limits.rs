//! Bounds of the plain-HTTP boot listener (`http:` in the configuration): a
//! global and a per-IP connection cap (over-cap connections are closed at once),
//! a per-IP token bucket for the routes that do work per request (`/ipxe`,
//! `/config/…`), a request body cap, and the header-read and idle timeouts the
//! accept loop ([`super::serve`]) applies. Every refusal is counted in
//! `provisioner_http_refused_total{reason}`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// `http:` settings. The defaults fit a 500-machine site: a booting machine holds
/// one or two connections (script, kernel + initrd) for well under a minute, so
/// 500 booting at once need about 1,000; one address gets 16 (a NAT'd lab or a
/// relay may carry several machines), and 5 scripts per second (burst 20) is far
/// above what one iPXE asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpLimits {
    /// A request head must arrive within this many seconds of the connection
    /// opening or of the previous response (hyper applies it to idle keep-alive
    /// connections too); slowloris clients are closed after it.
    pub header_read_timeout_secs: u64,
    /// A connection on which no byte moves either way for this long is closed (a
    /// client that stops reading a kernel, or stalls a request body).
    pub idle_timeout_secs: u64,
    /// Connections open at once on the boot listener; more are closed at accept.
    pub max_connections: usize,
    /// Connections open at once from one IP address.
    pub max_connections_per_ip: usize,
    /// Sustained `/ipxe` and `/config` requests per second from one IP (429 above).
    pub script_rate_per_ip: u32,
    /// Burst of `/ipxe` and `/config` requests from one IP.
    pub script_burst_per_ip: u32,
    /// Largest request body accepted (413 above); the boot path only takes small
    /// forms (the device flow).
    pub max_body_bytes: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            header_read_timeout_secs: 10,
            idle_timeout_secs: 60,
            max_connections: 2_048,
            max_connections_per_ip: 16,
            script_rate_per_ip: 5,
            script_burst_per_ip: 20,
            max_body_bytes: 64 * 1024,
        }
    }
}

impl HttpLimits {
    /// The header-read timeout.
    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_secs(self.header_read_timeout_secs.max(1))
    }

    /// The idle timeout.
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_timeout_secs.max(1))
    }
}

/// Counts one refused connection or request under `reason`.
pub fn refused(reason: &'static str) {
    metrics::counter!("provisioner_http_refused_total", "reason" => reason).increment(1);
}

/// Connection caps shared by the accept loop.
#[derive(Debug)]
pub struct ConnLimits {
    global: Arc<Semaphore>,
    per_ip_max: usize,
    per_ip: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// One admitted connection; dropping it frees its slots.
#[derive(Debug)]
pub struct ConnSlot {
    _global: OwnedSemaphorePermit,
    ip: IpAddr,
    per_ip: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        if let Ok(mut m) = self.per_ip.lock()
            && let Some(n) = m.get_mut(&self.ip)
        {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.ip);
            }
        }
    }
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `max_connections` reached.
    Global,
    /// `max_connections_per_ip` reached for this address.
    PerIp,
}

impl Refusal {
    /// The metric label.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Global => "max_connections",
            Self::PerIp => "max_connections_per_ip",
        }
    }
}

impl ConnLimits {
    /// Caps from the settings.
    pub fn new(cfg: &HttpLimits) -> Self {
        Self {
            global: Arc::new(Semaphore::new(cfg.max_connections.max(1))),
            per_ip_max: cfg.max_connections_per_ip.max(1),
            per_ip: Arc::default(),
        }
    }

    /// Admits a connection from `ip`, or says which cap refused it.
    pub fn admit(&self, ip: IpAddr) -> Result<ConnSlot, Refusal> {
        let mut m = self.per_ip.lock().map_err(|_| Refusal::Global)?;
        let n = m.entry(ip).or_insert(0);
        if *n >= self.per_ip_max {
            return Err(Refusal::PerIp);
        }
        let permit = self
            .global
            .clone()
            .try_acquire_owned()
            .map_err(|_| Refusal::Global)?;
        *n += 1;
        Ok(ConnSlot {
            _global: permit,
            ip,
            per_ip: self.per_ip.clone(),
        })
    }

    /// Connections open now.
    pub fn open(&self, cfg: &HttpLimits) -> usize {
        cfg.max_connections.max(1) - self.global.available_permits()
    }
}

/// Most addresses tracked by the rate limiter; past this the table is reset (a
/// flood from many addresses then only costs the flood its own budget).
const MAX_TRACKED: usize = 65_536;

/// A token bucket per IP address.
#[derive(Debug)]
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<IpAddr, (f64, Instant)>>,
}

impl RateLimiter {
    /// `rate` per second with `burst`.
    pub fn new(rate: u32, burst: u32) -> Self {
        Self {
            rate: f64::from(rate.max(1)),
            burst: f64::from(burst.max(1)),
            buckets: Mutex::default(),
        }
    }

    /// Whether `ip` may make one more request at `now`.
    pub fn allow(&self, ip: IpAddr, now: Instant) -> bool {
        let Ok(mut b) = self.buckets.lock() else {
            return true;
        };
        if b.len() >= MAX_TRACKED && !b.contains_key(&ip) {
            b.clear();
        }
        let (tokens, last) = b.entry(ip).or_insert((self.burst, now));
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

/// Whether `path` is one of the rate-limited routes (each renders, decides and may
/// write to the inventory).
pub fn rate_limited_path(path: &str) -> bool {
    path == "/ipxe" || path.starts_with("/config/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_ip_cap_then_global_cap_and_slots_return() {
        let cfg = HttpLimits {
            max_connections: 3,
            max_connections_per_ip: 2,
            ..HttpLimits::default()
        };
        let l = ConnLimits::new(&cfg);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let s1 = l.admit(a).unwrap();
        let _s2 = l.admit(a).unwrap();
        assert_eq!(l.admit(a).unwrap_err(), Refusal::PerIp);
        let _s3 = l.admit(b).unwrap();
        assert_eq!(l.admit(b).unwrap_err(), Refusal::Global);
        assert_eq!(l.open(&cfg), 3);
        drop(s1);
        assert!(l.admit(a).is_ok(), "a slot returns when its connection ends");
    }

    #[test]
    fn rate_allows_burst_then_refills() {
        let r = RateLimiter::new(2, 3);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let t0 = Instant::now();
        assert!((0..3).all(|_| r.allow(ip, t0)));
        assert!(!r.allow(ip, t0), "past the burst");
        assert!(
            r.allow("10.0.0.9".parse().unwrap(), t0),
            "other addresses unaffected"
        );
        assert!(r.allow(ip, t0 + Duration::from_millis(500)), "refilled at 2/s");
    }

    #[test]
    fn only_script_and_config_routes_are_rate_limited() {
        assert!(rate_limited_path("/ipxe"));
        assert!(rate_limited_path("/config/abc"));
        assert!(!rate_limited_path("/boot.ipxe"));
        assert!(!rate_limited_path("/assets/x/vmlinuz"));
        assert!(!rate_limited_path("/healthz"));
    }
}
