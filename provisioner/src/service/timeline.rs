//! Timeline writes: triggers applied to a machine (`Machine::apply`) and plain
//! events, each one durable commit through the journal (which publishes them); the
//! peer address → MAC map.

use std::net::IpAddr;

use provisioner_core::inventory::Update;
use provisioner_core::lifecycle::Trigger;
use provisioner_core::model::{Event, MacAddr, Machine};
use time::OffsetDateTime;

use super::{BootService, ServiceError};

impl BootService {
    /// Applies `trigger` to `mac`'s record (created if missing) in one commit: the
    /// new state and the events it causes. A trigger the state refuses writes
    /// nothing (callers check [`provisioner_core::lifecycle::next`] first to answer).
    pub(super) fn trigger(&self, mac: MacAddr, trigger: Trigger) -> Result<(), ServiceError> {
        let now = OffsetDateTime::now_utc();
        self.inventory.apply(mac, &mut |cur| {
            let mut m = cur.unwrap_or_else(|| Machine::discovered(mac, now));
            match m.apply(trigger, now) {
                Ok(events) => Update {
                    machine: Some(m),
                    events,
                    ..Update::default()
                },
                Err(_) => Update::default(),
            }
        })?;
        Ok(())
    }

    /// Appends one event to a known machine's timeline (unknown machines are skipped:
    /// the unknown policy decides who gets a record, and only `/ipxe` applies it).
    pub fn record(&self, mac: MacAddr, event: Event) -> Result<(), ServiceError> {
        if self.inventory.get(mac)?.is_some() {
            self.inventory
                .append(mac, &[event.at(OffsetDateTime::now_utc())])?;
        }
        Ok(())
    }

    /// Records an event for `mac`, creating its record (state `Discovered`) if the
    /// machine is new and the unknown policy lets it be recorded. Used for traffic
    /// that arrives before `/ipxe`, such as firmware PXE fetching iPXE over TFTP.
    pub fn record_seen(&self, mac: MacAddr, event: Event) -> Result<(), ServiceError> {
        if self.inventory.get(mac)?.is_none() && !self.may_record(mac) {
            return Ok(());
        }
        let now = OffsetDateTime::now_utc();
        let events = vec![event.at(now)];
        self.inventory.apply(mac, &mut |cur| {
            let mut m = cur.unwrap_or_else(|| Machine::discovered(mac, now));
            m.last_seen = now;
            Update {
                machine: Some(m),
                events: events.clone(),
                ..Update::default()
            }
        })?;
        Ok(())
    }

    /// Records an event for whichever machine last booted from `ip`, if known.
    pub fn record_for_peer(&self, ip: IpAddr, event: Event) -> Result<(), ServiceError> {
        let mac = self.peers.lock().ok().and_then(|p| p.get(&ip).copied());
        match mac {
            Some(mac) => self.record(mac, event),
            None => Ok(()),
        }
    }

    /// The machine that last fetched its script from `ip` (after binding).
    pub(super) fn peer_mac(&self, ip: IpAddr) -> Option<MacAddr> {
        self.peers.lock().ok().and_then(|p| p.get(&ip).copied())
    }

    /// Learns that `ip` belongs to `mac` (from `/ipxe`, or the ARP table for TFTP).
    pub fn remember_peer(&self, ip: IpAddr, mac: MacAddr) {
        if let Ok(mut p) = self.peers.lock() {
            // Bounded: a flood of addresses cannot grow it without limit.
            if p.len() > 65_536 {
                p.clear();
            }
            p.insert(ip, mac);
        }
    }
}
