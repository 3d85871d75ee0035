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
use super::pool::{FreeList, OfferRate};
pub use super::pool::{PoolGuard, PoolPolicy};
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
    /// Who gets pool addresses, and the offer rate to unknown MACs.
    pub guard: PoolGuard,
}

/// Who asks: the classified client, and whether the inventory knows its MAC.
#[derive(Debug, Clone, Copy)]
pub struct Asker<'a> {
    /// The classified request.
    pub client: &'a Client,
    /// The MAC has a machine record.
    pub known: bool,
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
    /// Free pool addresses and held ones by end time: O(1) amortized allocation,
    /// and an exhausted pool costs no scan.
    free: Mutex<FreeList>,
    /// Offers to MACs with no record, reservation or lease.
    unknown_offers: Mutex<OfferRate>,
    /// Serialises address decisions (pick, allowed); commits run outside it.
    commit: Mutex<()>,
}

impl FullServer {
    /// An engine for `cfg`.
    pub fn new(cfg: FullConfig) -> Self {
        let rate = OfferRate::new(cfg.guard.unknown_offer_rate, cfg.guard.unknown_offer_burst);
        Self {
            cfg,
            offers: Mutex::new(HashMap::new()),
            free: Mutex::new(FreeList::default()),
            unknown_offers: Mutex::new(rate),
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
        asker: Asker<'_>,
        responder: &Responder,
        boot: Option<&BootTarget>,
        now: i64,
    ) -> Result<Outcome, LeaseError> {
        let client = asker.client;
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
                let ip = match self.pick(store, asker, now)? {
                    Ok(ip) => ip,
                    Err(why) => return Ok(Outcome::Silent(why)),
                };
                // Held before the lock is released, so the next DISCOVER skips it.
                if let Ok(mut o) = self.offers.lock() {
                    o.retain(|_, (_, until)| *until > now);
                    o.insert(ip, (mac, now + OFFER_HOLD_SECS));
                }
                self.hold(ip, now + OFFER_HOLD_SECS);
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
                // A client with no binding that the pool policy excludes is not ours
                // to answer (RFC 2131 §4.3.2: a server with no record stays silent).
                if !self.cfg.reservations.contains_key(&mac)
                    && !self.offered_to(mac, now)
                    && store.by_mac(mac)?.is_none()
                    && !self.cfg.guard.policy.admits(client.kind.is_boot(), asker.known)
                {
                    return Ok(Outcome::Silent("pool_policy"));
                }
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
                self.hold(ip, lease.expires);
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
                        if self.in_pool(l.ip)
                            && let Ok(mut f) = self.free.lock()
                        {
                            f.release(l.ip);
                        }
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
                self.hold(ip, l.expires);
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
}

mod alloc;
