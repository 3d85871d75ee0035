//! Address allocation of the `full` engine: whether a MAC may hold an address,
//! which address to offer (reservation, current lease, held offer, then the pool
//! through the [`FreeList`] under the pool policy), and the commit that settles a
//! race on one address.

use std::net::Ipv4Addr;

use super::super::lease::{Lease, LeaseError, LeaseState, LeaseStore};
use super::super::pool::FreeList;
use super::{Asker, FullServer, OFFER_HOLD_SECS};
use crate::model::MacAddr;

impl FullServer {
    pub(super) fn drop_offer(&self, mac: MacAddr) {
        if let Ok(mut o) = self.offers.lock() {
            o.retain(|_, (m, _)| *m != mac);
        }
    }

    pub(super) fn offered_to_other(&self, ip: Ipv4Addr, mac: MacAddr, now: i64) -> bool {
        self.offers
            .lock()
            .map(|o| o.get(&ip).is_some_and(|(m, until)| *m != mac && *until > now))
            .unwrap_or(false)
    }

    pub(super) fn in_pool(&self, ip: Ipv4Addr) -> bool {
        self.cfg
            .pool
            .is_some_and(|(s, e)| (u32::from(s)..=u32::from(e)).contains(&u32::from(ip)))
    }

    pub(super) fn reserved_for_other(&self, ip: Ipv4Addr, mac: MacAddr) -> bool {
        self.cfg.reservations.iter().any(|(m, r)| r.ip == ip && *m != mac)
    }

    /// Whether `mac` may hold `ip` at `now`.
    pub(super) fn allowed(
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

    /// The address to offer: the MAC's reservation, its current lease, the offer it
    /// already holds, then (if the pool policy and the unknown-MAC offer rate let
    /// it) the address it asks for or the next free pool address. `Err` is why
    /// nothing is offered.
    pub(super) fn pick(
        &self,
        store: &dyn LeaseStore,
        asker: Asker<'_>,
        now: i64,
    ) -> Result<Result<Ipv4Addr, &'static str>, LeaseError> {
        let (mac, client) = (asker.client.mac, asker.client);
        if let Some(r) = self.cfg.reservations.get(&mac) {
            let ok = self.allowed(store, mac, r.ip, now)?;
            return Ok(if ok { Ok(r.ip) } else { Err("no_address") });
        }
        let lease = store.by_mac(mac)?;
        if let Some(l) = &lease
            && l.state != LeaseState::Declined
            && self.allowed(store, mac, l.ip, now)?
        {
            return Ok(Ok(l.ip));
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
            return Ok(Ok(ip));
        }
        if !self.cfg.guard.policy.admits(client.kind.is_boot(), asker.known) {
            return Ok(Err("pool_policy"));
        }
        if !asker.known
            && lease.is_none()
            && !self
                .unknown_offers
                .lock()
                .map_err(|_| LeaseError::Backend("offer rate lock poisoned".into()))?
                .take(now)
        {
            return Ok(Err("unknown_offer_rate"));
        }
        if let Some(ip) = client.requested_ip
            && self.allowed(store, mac, ip, now)?
        {
            return Ok(Ok(ip));
        }
        self.next_free(store, mac, now).map(|ip| ip.ok_or("no_address"))
    }

    /// The next free pool address: from the free list, each candidate checked
    /// against the store; busy ones go back with their end time.
    pub(super) fn next_free(
        &self,
        store: &dyn LeaseStore,
        mac: MacAddr,
        now: i64,
    ) -> Result<Option<Ipv4Addr>, LeaseError> {
        let Some(range) = self.cfg.pool else {
            return Ok(None);
        };
        let mut free = self
            .free
            .lock()
            .map_err(|_| LeaseError::Backend("free list lock poisoned".into()))?;
        if !free.is_built() {
            let mut err = None;
            let reserved = |ip| self.cfg.reservations.values().any(|r| r.ip == ip);
            free.build(range, reserved, |ip| match self.busy_until(store, ip, now) {
                Ok(t) => t,
                Err(e) => {
                    err.get_or_insert(e);
                    None
                }
            });
            if let Some(e) = err {
                *free = FreeList::default();
                return Err(e);
            }
        }
        // Each candidate is looked at once per call: the loop ends on an empty list.
        for _ in 0..=free.free_len() {
            let Some(ip) = free.next(now) else { break };
            if self.allowed(store, mac, ip, now)? {
                return Ok(Some(ip));
            }
            let until = self.busy_until(store, ip, now)?.unwrap_or(now + OFFER_HOLD_SECS);
            free.hold(ip, until);
        }
        Ok(None)
    }

    /// Until when `ip` is unavailable (a lease or decline holding it, or an offer).
    pub(super) fn busy_until(
        &self,
        store: &dyn LeaseStore,
        ip: Ipv4Addr,
        now: i64,
    ) -> Result<Option<i64>, LeaseError> {
        if let Some(l) = store.by_ip(ip)?
            && l.holds_address(now)
        {
            return Ok(Some(l.expires));
        }
        Ok(self.offers.lock().ok().and_then(|o| {
            o.get(&ip)
                .filter(|(_, until)| *until > now)
                .map(|(_, until)| *until)
        }))
    }

    pub(super) fn hold(&self, ip: Ipv4Addr, until: i64) {
        if self.in_pool(ip)
            && let Ok(mut f) = self.free.lock()
            && f.is_built()
        {
            f.hold(ip, until);
        }
    }

    pub(super) fn offered_to(&self, mac: MacAddr, now: i64) -> bool {
        self.offers
            .lock()
            .map(|o| o.values().any(|(m, until)| *m == mac && *until > now))
            .unwrap_or(false)
    }

    /// Writes `lease`, first removing another MAC's stale lease on the address.
    pub(super) fn commit(&self, store: &dyn LeaseStore, lease: &Lease, now: i64) -> Result<(), LeaseError> {
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
