//! Timeline writes: state transitions and events, each one durable commit and
//! then published to live subscribers; the peer address → MAC map.

use std::net::IpAddr;

use provisioner_core::boot::{BootDecision, BootRequest};
use provisioner_core::inventory::Update;
use provisioner_core::model::{EventKind, MacAddr, Machine, MachineState, TimelineEvent};
use time::OffsetDateTime;

use super::{BootService, ServiceError, event};

impl BootService {
    /// Sets the state and appends `ev` (plus a `state_changed` entry) in one commit.
    pub(super) fn transition(
        &self,
        mac: MacAddr,
        next: MachineState,
        ev: TimelineEvent,
    ) -> Result<(), ServiceError> {
        let now = OffsetDateTime::now_utc();
        let mut written = Vec::new();
        self.inventory.apply(mac, &mut |cur| {
            let mut m = cur.unwrap_or_else(|| Machine::discovered(mac, now));
            m.last_seen = now;
            let mut events = vec![ev.clone()];
            if m.state != next {
                events.push(event(EventKind::StateChanged, format!("{} -> {next}", m.state)));
                m.state = next;
            }
            if next == MachineState::Installed {
                // It made it: boot-loop counting starts over, and its approval (one
                // install window) is used up; a re-image asks again.
                m.install_boots.clear();
                m.approval = None;
                m.pending_approval = None;
            }
            written = events.clone();
            Update {
                machine: Some(m),
                events,
            }
        })?;
        self.publish(mac, &written);
        Ok(())
    }

    /// Appends one event to a known machine's timeline (unknown machines are skipped:
    /// the unknown policy decides who gets a record, and only `/ipxe` applies it).
    pub fn record(&self, mac: MacAddr, kind: EventKind, detail: &str) -> Result<(), ServiceError> {
        if self.inventory.get(mac)?.is_some() {
            let events = [event(kind, detail)];
            self.inventory.append(mac, &events)?;
            self.publish(mac, &events);
        }
        Ok(())
    }

    /// Records an event for `mac`, creating its record (state `Discovered`) if the
    /// machine is new and the unknown policy lets it be recorded. Used for traffic
    /// that arrives before `/ipxe`, such as firmware PXE fetching iPXE over TFTP.
    pub fn record_seen(&self, mac: MacAddr, kind: EventKind, detail: &str) -> Result<(), ServiceError> {
        if self.inventory.get(mac)?.is_none() {
            let req = BootRequest {
                mac: Some(mac),
                ..Default::default()
            };
            if matches!(
                self.booter.decide(&req, None),
                BootDecision::Unknown { record: false, .. }
            ) {
                return Ok(());
            }
        }
        let now = OffsetDateTime::now_utc();
        let events = vec![event(kind, detail)];
        self.inventory.apply(mac, &mut |cur| {
            let mut m = cur.unwrap_or_else(|| Machine::discovered(mac, now));
            m.last_seen = now;
            Update {
                machine: Some(m),
                events: events.clone(),
            }
        })?;
        self.publish(mac, &events);
        Ok(())
    }

    /// Records an event for whichever machine last booted from `ip`, if known.
    pub fn record_for_peer(&self, ip: IpAddr, kind: EventKind, detail: &str) -> Result<(), ServiceError> {
        let mac = self.peers.lock().ok().and_then(|p| p.get(&ip).copied());
        match mac {
            Some(mac) => self.record(mac, kind, detail),
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
