//! The `full` personality: authoritative DHCP for one subnet with static
//! reservations and an optional dynamic pool (RFC 2131 §4.3). Offers are held in
//! memory for a short time so concurrent DISCOVERs get distinct addresses; leases
//! are written to the [`LeaseStore`] (durably) before the ACK is returned. Address
//! decisions are serialised; the durable writes are not, so a group-committing
//! store ([`super::lease::GroupCommit`]) can batch them.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::sync::Mutex;

use super::bootfile::BootTarget;
use super::classify::Client;
use super::lease::{Lease, LeaseError, LeaseState, LeaseStore};
use super::reply::{Responder, add_boot, skeleton};
pub use super::subnet::Subnet;
use super::v4::{DhcpOption, Message, MessageType};
use crate::model::MacAddr;

/// How long an OFFER keeps its address from other clients (RFC 2131 §4.3.1
/// leaves the hold time to the server).
pub const OFFER_HOLD_SECS: i64 = 30;
/// How long a declined address stays out of the pool (RFC 2131 §4.3.3 leaves it to
/// the server; ISC marks it abandoned).
pub const DECLINE_HOLD_SECS: i64 = 600;

/// A static address for one MAC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    /// The address.
    pub ip: Ipv4Addr,
    /// Option 12 to send, if any.
    pub hostname: Option<String>,
}

/// Validated settings of the `full` personality.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FullConfig {
    /// The subnet served.
    pub subnet: Subnet,
    /// Dynamic range, inclusive; `None` serves reservations only.
    pub pool: Option<(Ipv4Addr, Ipv4Addr)>,
    /// Option 3.
    pub router: Option<Ipv4Addr>,
    /// Option 6.
    pub dns: Vec<Ipv4Addr>,
    /// Option 15.
    pub domain: Option<String>,
    /// Option 51, seconds.
    pub lease_secs: u32,
    /// Static reservations by MAC.
    pub reservations: BTreeMap<MacAddr, Reservation>,
}

/// What the engine did with a request.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Send this reply (OFFER, ACK or NAK); `lease` is the binding it committed.
    Reply {
        /// The reply.
        msg: Box<Message>,
        /// The lease written before this reply, if any.
        lease: Option<Lease>,
    },
    /// A RELEASE or DECLINE was recorded; nothing is sent.
    Recorded(Lease),
    /// Nothing to send, with the reason (for the drop counter).
    Silent(&'static str),
}

/// The authoritative engine; one per served subnet.
#[derive(Debug)]
pub struct FullServer {
    cfg: FullConfig,
    /// ip → (mac, until): addresses offered but not yet requested.
    offers: Mutex<HashMap<Ipv4Addr, (MacAddr, i64)>>,
    /// Where the next pool scan starts, so a storm allocates in O(1) per client.
    cursor: Mutex<u32>,
    /// Serialises address decisions (pick, allowed); commits run outside it.
    commit: Mutex<()>,
}

impl FullServer {
    /// An engine for `cfg`.
    pub fn new(cfg: FullConfig) -> Self {
        let start = cfg.pool.map(|(s, _)| u32::from(s)).unwrap_or(0);
        Self {
            cfg,
            offers: Mutex::new(HashMap::new()),
            cursor: Mutex::new(start),
            commit: Mutex::new(()),
        }
    }

    /// The settings.
    pub fn config(&self) -> &FullConfig {
        &self.cfg
    }

    /// Answers one classified request at unix time `now`. `boot` is added to OFFERs
    /// and ACKs of boot clients. Blocks on the store; cancel-safe only between calls.
    pub fn handle(
        &self,
        store: &dyn LeaseStore,
        req: &Message,
        client: &Client,
        responder: &Responder,
        boot: Option<&BootTarget>,
        now: i64,
    ) -> Result<Outcome, LeaseError> {
        let mac = client.mac;
        // One subnet is served: a relay on another subnet is not ours to answer.
        let giaddr = req.giaddr();
        if !giaddr.is_unspecified() && !self.cfg.subnet.contains_host(giaddr) {
            return Ok(Outcome::Silent("relay_subnet_not_served"));
        }
        let ours = |sid: Option<Ipv4Addr>| sid.is_none_or(|s| s == responder.server_id);
        match client.msg_type {
            MessageType::Discover => {
                let guard = self.decide_lock()?;
                let Some(ip) = self.pick(store, mac, client.requested_ip, now)? else {
                    return Ok(Outcome::Silent("no_address"));
                };
                // Held before the lock is released, so the next DISCOVER skips it.
                if let Ok(mut o) = self.offers.lock() {
                    o.retain(|_, (_, until)| *until > now);
                    o.insert(ip, (mac, now + OFFER_HOLD_SECS));
                }
                drop(guard);
                let mut m = self.answer(req, client, responder, MessageType::Offer, Some(ip), boot);
                self.lease_options(&mut m, client, ip);
                Ok(Outcome::Reply {
                    msg: Box::new(m),
                    lease: None,
                })
            }
            MessageType::Request => {
                // RFC 2131 §4.3.2: SELECTING names a server; INIT-REBOOT carries option
                // 50 and no ciaddr; RENEWING/REBINDING carry ciaddr.
                if !ours(client.server_id) {
                    self.drop_offer(mac);
                    return Ok(Outcome::Silent("other_server_selected"));
                }
                let ip = match (client.requested_ip, req.ciaddr()) {
                    (Some(ip), _) => ip,
                    (None, c) if !c.is_unspecified() => c,
                    _ => return Ok(Outcome::Silent("request_without_address")),
                };
                let nak = || {
                    let m = skeleton(req, client, MessageType::Nak, responder.server_id);
                    Ok(Outcome::Reply {
                        msg: Box::new(m),
                        lease: None,
                    })
                };
                let guard = self.decide_lock()?;
                if !self.allowed(store, mac, ip, now)? {
                    return nak();
                }
                drop(guard);
                let lease = Lease {
                    mac,
                    ip,
                    expires: now + i64::from(self.cfg.lease_secs),
                    hostname: self.hostname(client),
                    state: LeaseState::Active,
                };
                // The commit waits for the disk outside the decision lock, so
                // concurrent clients share fsyncs (GroupCommit); the store's own
                // one-MAC-per-address check settles a race, and the loser is NAKed.
                match self.commit(store, &lease, now) {
                    Err(LeaseError::Conflict { .. }) => return nak(),
                    r => r?,
                }
                self.drop_offer(mac);
                let mut m = self.answer(req, client, responder, MessageType::Ack, Some(ip), boot);
                self.lease_options(&mut m, client, ip);
                Ok(Outcome::Reply {
                    msg: Box::new(m),
                    lease: Some(lease),
                })
            }
            MessageType::Release => {
                if !ours(client.server_id) {
                    return Ok(Outcome::Silent("other_server"));
                }
                match store.by_mac(mac)? {
                    Some(mut l) if l.ip == req.ciaddr() && l.state == LeaseState::Active => {
                        l.state = LeaseState::Released;
                        l.expires = now;
                        store.put(&l)?;
                        Ok(Outcome::Recorded(l))
                    }
                    _ => Ok(Outcome::Silent("release_unknown_lease")),
                }
            }
            MessageType::Decline => {
                let Some(ip) = client
                    .requested_ip
                    .filter(|ip| self.cfg.subnet.contains_host(*ip))
                else {
                    return Ok(Outcome::Silent("decline_without_address"));
                };
                let guard = self.decide_lock()?;
                if !ours(client.server_id) || !self.allowed(store, mac, ip, now)? {
                    return Ok(Outcome::Silent("decline_not_ours"));
                }
                drop(guard);
                let l = Lease {
                    mac,
                    ip,
                    expires: now + DECLINE_HOLD_SECS,
                    hostname: None,
                    state: LeaseState::Declined,
                };
                self.commit(store, &l, now)?;
                self.drop_offer(mac);
                Ok(Outcome::Recorded(l))
            }
            MessageType::Inform => {
                // RFC 2131 §4.3.5: configuration only; no yiaddr, no lease time.
                let mut m = self.answer(req, client, responder, MessageType::Ack, None, boot);
                self.network_options(&mut m, client);
                Ok(Outcome::Reply {
                    msg: Box::new(m),
                    lease: None,
                })
            }
            _ => Ok(Outcome::Silent("unhandled_message_type")),
        }
    }

    fn decide_lock(&self) -> Result<std::sync::MutexGuard<'_, ()>, LeaseError> {
        self.commit
            .lock()
            .map_err(|_| LeaseError::Backend("engine lock poisoned".into()))
    }

    fn answer(
        &self,
        req: &Message,
        client: &Client,
        responder: &Responder,
        t: MessageType,
        ip: Option<Ipv4Addr>,
        boot: Option<&BootTarget>,
    ) -> Message {
        let mut m = skeleton(req, client, t, responder.server_id);
        if let Some(ip) = ip {
            m.set_yiaddr(ip);
        }
        if t == MessageType::Inform || !req.ciaddr().is_unspecified() {
            m.set_ciaddr(req.ciaddr());
        }
        if let Some(b) = boot {
            // Full mode answers like a plain DHCP server with a boot file (dnsmasq's
            // `dhcp-boot`): no PXE vendor options, so EDK2 takes the file as given
            // instead of asking a boot server; HTTP Boot still needs `HTTPClient`.
            add_boot(&mut m, client, b, responder, false, false);
        }
        m
    }

    fn network_options(&self, m: &mut Message, client: &Client) {
        let o = m.opts_mut();
        o.insert(DhcpOption::SubnetMask(self.cfg.subnet.mask()));
        o.insert(DhcpOption::BroadcastAddr(self.cfg.subnet.broadcast()));
        if let Some(r) = self.cfg.router {
            o.insert(DhcpOption::Router(vec![r]));
        }
        if !self.cfg.dns.is_empty() {
            o.insert(DhcpOption::DomainNameServer(self.cfg.dns.clone()));
        }
        if let Some(d) = &self.cfg.domain {
            o.insert(DhcpOption::DomainName(d.clone()));
        }
        if let Some(r) = self.cfg.reservations.get(&client.mac)
            && let Some(h) = &r.hostname
        {
            o.insert(DhcpOption::Hostname(h.clone()));
        }
    }

    fn lease_options(&self, m: &mut Message, client: &Client, _ip: Ipv4Addr) {
        self.network_options(m, client);
        let t = self.cfg.lease_secs;
        let o = m.opts_mut();
        o.insert(DhcpOption::AddressLeaseTime(t));
        // RFC 2131 §4.4.5 defaults: T1 = 0.5, T2 = 0.875 of the lease.
        o.insert(DhcpOption::Renewal(t / 2));
        o.insert(DhcpOption::Rebinding(t / 8 * 7));
    }

    fn hostname(&self, client: &Client) -> Option<String> {
        self.cfg
            .reservations
            .get(&client.mac)
            .and_then(|r| r.hostname.clone())
            .or_else(|| client.hostname.clone())
    }

    fn drop_offer(&self, mac: MacAddr) {
        if let Ok(mut o) = self.offers.lock() {
            o.retain(|_, (m, _)| *m != mac);
        }
    }

    fn offered_to_other(&self, ip: Ipv4Addr, mac: MacAddr, now: i64) -> bool {
        self.offers
            .lock()
            .map(|o| o.get(&ip).is_some_and(|(m, until)| *m != mac && *until > now))
            .unwrap_or(false)
    }

    fn in_pool(&self, ip: Ipv4Addr) -> bool {
        self.cfg
            .pool
            .is_some_and(|(s, e)| (u32::from(s)..=u32::from(e)).contains(&u32::from(ip)))
    }

    fn reserved_for_other(&self, ip: Ipv4Addr, mac: MacAddr) -> bool {
        self.cfg.reservations.iter().any(|(m, r)| r.ip == ip && *m != mac)
    }

    /// Whether `mac` may hold `ip` at `now`.
    fn allowed(
        &self,
        store: &dyn LeaseStore,
        mac: MacAddr,
        ip: Ipv4Addr,
        now: i64,
    ) -> Result<bool, LeaseError> {
        if !self.cfg.subnet.contains_host(ip) || self.reserved_for_other(ip, mac) {
            return Ok(false);
        }
        match self.cfg.reservations.get(&mac) {
            Some(r) if r.ip == ip => {}
            Some(_) => return Ok(false),
            None if !self.in_pool(ip) => return Ok(false),
            None => {}
        }
        if self.offered_to_other(ip, mac, now) {
            return Ok(false);
        }
        Ok(match store.by_ip(ip)? {
            Some(l) if l.mac == mac => l.state != LeaseState::Declined || l.expires <= now,
            Some(l) => !l.holds_address(now),
            None => true,
        })
    }

    /// The address to offer `mac`: its reservation, its current lease, the address
    /// it asks for, or the next free pool address.
    fn pick(
        &self,
        store: &dyn LeaseStore,
        mac: MacAddr,
        requested: Option<Ipv4Addr>,
        now: i64,
    ) -> Result<Option<Ipv4Addr>, LeaseError> {
        if let Some(r) = self.cfg.reservations.get(&mac) {
            return Ok(self.allowed(store, mac, r.ip, now)?.then_some(r.ip));
        }
        if let Some(l) = store.by_mac(mac)?
            && l.state != LeaseState::Declined
            && self.allowed(store, mac, l.ip, now)?
        {
            return Ok(Some(l.ip));
        }
        if let Some(ip) = requested
            && self.allowed(store, mac, ip, now)?
        {
            return Ok(Some(ip));
        }
        // A retransmitted DISCOVER gets the address it was already offered.
        let held = self.offers.lock().ok().and_then(|o| {
            o.iter()
                .find(|(_, (m, until))| *m == mac && *until > now)
                .map(|(ip, _)| *ip)
        });
        if let Some(ip) = held
            && self.allowed(store, mac, ip, now)?
        {
            return Ok(Some(ip));
        }
        let Some((start, end)) = self.cfg.pool.map(|(s, e)| (u32::from(s), u32::from(e))) else {
            return Ok(None);
        };
        let mut cursor = self
            .cursor
            .lock()
            .map_err(|_| LeaseError::Backend("cursor lock poisoned".into()))?;
        let size = end - start + 1;
        for i in 0..size {
            let n = start + (cursor.wrapping_sub(start).wrapping_add(i)) % size;
            let ip = Ipv4Addr::from(n);
            if self.allowed(store, mac, ip, now)? {
                *cursor = if n == end { start } else { n + 1 };
                return Ok(Some(ip));
            }
        }
        Ok(None)
    }

    /// Writes `lease`, first removing another MAC's stale lease on the address.
    fn commit(&self, store: &dyn LeaseStore, lease: &Lease, now: i64) -> Result<(), LeaseError> {
        if let Some(old) = store.by_ip(lease.ip)?
            && old.mac != lease.mac
        {
            if old.holds_address(now) {
                return Err(LeaseError::Conflict {
                    ip: lease.ip,
                    holder: old.mac,
                });
            }
            store.remove(old.mac)?;
        }
        store.put(lease)
    }
}
