//! The one timeline writer: every change to a machine (its record, its timeline
//! events, the one-time tokens issued with them) is one durable commit of the
//! inventory, and the events of that commit are then published to live subscribers
//! (the API's Server-Sent Events and the dashboard). The commit comes first, so a
//! subscriber never sees an event the store lost.
//!
//! [`Journal`] is an [`Inventory`] itself: the boot service, the DHCP timeline
//! writer, the cluster orchestrator's "installed" marking and the operator actions
//! all hold it (never the bare store), so whoever writes, the event is published.
//!
//! It is also the one place a machine record is created, so it holds the global
//! rate for first-seen MACs ([`Journal::limit_first_seen`]): a record that only
//! notes a sighting (no one-time token: not an install) of a MAC the store does not
//! know is written at most at that rate; beyond it the sighting is dropped and
//! counted (`provisioner_first_seen_refused_total`). Spoofed MACs are free to an
//! attacker, so a per-MAC limit cannot bound this; installs are never refused.

use std::cell::RefCell;
use std::sync::Arc;

use provisioner_core::inventory::{
    Change, Inventory, InventoryError, Snapshot, SpentToken, TokenRecord, Update,
};
use provisioner_core::model::{MacAddr, Machine, TimelineEvent};
use time::OffsetDateTime;
use tokio::sync::broadcast;

/// One timeline event as published to live subscribers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachineEvent {
    /// Whose timeline it was written to.
    pub mac: MacAddr,
    /// The event as stored.
    pub event: TimelineEvent,
}

/// Events buffered per subscriber before a slow one starts missing some (it is told
/// how many it missed: `broadcast::error::RecvError::Lagged`).
const EVENT_BUFFER: usize = 1024;

/// The store plus the live feed of what is committed to it.
#[derive(Debug)]
pub struct Journal {
    store: Arc<dyn Inventory>,
    events: broadcast::Sender<MachineEvent>,
    first_seen: std::sync::Mutex<Option<Bucket>>,
}

/// A token bucket: `per_minute` new records, bursts of as many.
#[derive(Debug)]
struct Bucket {
    per_minute: f64,
    tokens: f64,
    at: std::time::Instant,
}

impl Bucket {
    fn take(&mut self, now: std::time::Instant) -> bool {
        let refill = now.duration_since(self.at).as_secs_f64() * self.per_minute / 60.0;
        self.tokens = (self.tokens + refill).min(self.per_minute);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

impl Journal {
    /// Writes through `store`.
    pub fn new(store: Arc<dyn Inventory>) -> Self {
        Self {
            store,
            events: broadcast::channel(EVENT_BUFFER).0,
            first_seen: std::sync::Mutex::new(None),
        }
    }

    /// Creates at most `per_minute` sighting-only records of unknown MACs a minute
    /// (0: no limit).
    pub fn limit_first_seen(&self, per_minute: u32) {
        if let Ok(mut b) = self.first_seen.lock() {
            *b = (per_minute > 0).then(|| Bucket {
                per_minute: f64::from(per_minute),
                tokens: f64::from(per_minute),
                at: std::time::Instant::now(),
            });
        }
    }

    fn admit_first_seen(&self) -> bool {
        match self.first_seen.lock() {
            Ok(mut b) => b.as_mut().is_none_or(|b| b.take(std::time::Instant::now())),
            Err(_) => true,
        }
    }

    /// `change` behind the first-seen rate; the events it writes are kept in
    /// `written` (when someone listens) to be published after the commit.
    fn gate<'a>(
        &'a self,
        mac: MacAddr,
        change: Change<'a>,
        written: Option<&'a RefCell<Vec<MachineEvent>>>,
    ) -> impl FnMut(Option<Machine>) -> Update + 'a {
        move |cur| {
            let new = cur.is_none();
            let update = change(cur);
            if new && update.machine.is_some() && update.tokens.is_empty() && !self.admit_first_seen() {
                metrics::counter!("provisioner_first_seen_refused_total").increment(1);
                return Update::default();
            }
            if let Some(w) = written {
                w.borrow_mut()
                    .extend(update.events.iter().map(|event| MachineEvent {
                        mac,
                        event: event.clone(),
                    }));
            }
            update
        }
    }

    fn publish(&self, written: Vec<MachineEvent>) {
        for e in written {
            // No subscriber left is fine.
            let _ = self.events.send(e);
        }
    }

    /// A receiver of every timeline event committed from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<MachineEvent> {
        self.events.subscribe()
    }
}

impl Inventory for Journal {
    fn get(&self, mac: MacAddr) -> Result<Option<Machine>, InventoryError> {
        self.store.get(mac)
    }

    fn drop_tokens(
        &self,
        expired: &dyn Fn(&provisioner_core::inventory::TokenRecord) -> bool,
        spent_before: time::OffsetDateTime,
    ) -> Result<usize, InventoryError> {
        self.store.drop_tokens(expired, spent_before)
    }

    fn list(&self) -> Result<Vec<Machine>, InventoryError> {
        self.store.list()
    }

    /// Commits, then publishes the events of the commit (copied only while someone
    /// listens, so the DHCP path pays nothing without a subscriber).
    fn apply(&self, mac: MacAddr, change: Change<'_>) -> Result<Option<Machine>, InventoryError> {
        let written = RefCell::new(Vec::new());
        let listening = self.events.receiver_count() > 0;
        let stored = self
            .store
            .apply(mac, &mut self.gate(mac, change, listening.then_some(&written)))?;
        self.publish(written.take());
        Ok(stored)
    }

    /// The batch in one commit, then its events in order.
    fn apply_many(&self, changes: &mut [(MacAddr, Change<'_>)]) -> Result<(), InventoryError> {
        let written = RefCell::new(Vec::new());
        let listening = self.events.receiver_count() > 0;
        let mut gated: Vec<_> = changes
            .iter_mut()
            .map(|(mac, change)| {
                (
                    *mac,
                    self.gate(*mac, &mut **change, listening.then_some(&written)),
                )
            })
            .collect();
        let mut steps: Vec<(MacAddr, Change<'_>)> =
            gated.iter_mut().map(|(m, g)| (*m, g as Change<'_>)).collect();
        self.store.apply_many(&mut steps)?;
        self.publish(written.take());
        Ok(())
    }

    fn delete(&self, mac: MacAddr) -> Result<bool, InventoryError> {
        self.store.delete(mac)
    }

    fn timeline(&self, mac: MacAddr) -> Result<Vec<TimelineEvent>, InventoryError> {
        self.store.timeline(mac)
    }

    fn issue_token(&self, key: &str, record: &TokenRecord) -> Result<(), InventoryError> {
        self.store.issue_token(key, record)
    }

    fn live_token(&self, key: &str) -> Result<Option<TokenRecord>, InventoryError> {
        self.store.live_token(key)
    }

    fn take_token(&self, key: &str, now: OffsetDateTime) -> Result<Option<TokenRecord>, InventoryError> {
        self.store.take_token(key, now)
    }

    fn spent_token(&self, key: &str) -> Result<Option<SpentToken>, InventoryError> {
        self.store.spent_token(key)
    }

    fn export(&self) -> Result<Snapshot, InventoryError> {
        self.store.export()
    }
}

#[cfg(test)]
mod tests {
    use provisioner_core::inventory::MemInventory;
    use provisioner_core::model::Event;

    use super::*;

    #[test]
    fn battery() {
        provisioner_core::inventory::battery::run_all(&|| {
            Box::new(Journal::new(Arc::new(MemInventory::new())))
        });
    }

    #[test]
    fn publishes_what_it_committed_after_the_commit() {
        let store = Arc::new(MemInventory::new());
        let journal = Journal::new(store.clone());
        let mac: MacAddr = "52:54:00:00:00:01".parse().unwrap();
        let now = OffsetDateTime::now_utc();
        let mut rx = journal.subscribe();
        let ev = Event::PowerAction {
            detail: "on via wol: done: sent".into(),
        }
        .at(now);
        journal
            .apply(mac, &mut |_| Update {
                machine: Some(Machine::discovered(mac, now)),
                events: vec![ev.clone()],
                ..Update::default()
            })
            .unwrap();
        let got = rx.try_recv().unwrap();
        assert_eq!((got.mac, &got.event), (mac, &ev));
        assert_eq!(store.timeline(mac).unwrap(), [ev], "stored before published");
        // A change that writes no event publishes nothing.
        journal.apply(mac, &mut |_| Update::default()).unwrap();
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn first_seen_macs_are_recorded_at_the_global_rate_installs_always() {
        let store = Arc::new(MemInventory::new());
        let journal = Journal::new(store.clone());
        journal.limit_first_seen(5);
        let now = OffsetDateTime::now_utc();
        let sighting = |n: u8| {
            let mac = MacAddr([2, 0, 0, 0, 0, n]);
            journal
                .apply(mac, &mut |cur| Update {
                    machine: Some(cur.unwrap_or_else(|| Machine::discovered(mac, now))),
                    ..Update::default()
                })
                .unwrap()
        };
        let recorded = (0..50u8).filter_map(sighting).count();
        assert_eq!(recorded, 5, "a burst of the rate, then nothing new");
        // A known MAC's sighting is never limited.
        assert!(sighting(0).is_some());
        // An install (with its one-time token) is never refused.
        let mac = MacAddr([2, 0, 0, 0, 1, 1]);
        let token = TokenRecord {
            mac,
            purpose: provisioner_core::inventory::TokenPurpose::Config,
            issued_at: now,
            peer: None,
        };
        let installed = journal
            .apply(mac, &mut |_| Update {
                machine: Some(Machine::discovered(mac, now)),
                tokens: vec![("ab".into(), token.clone())],
                ..Update::default()
            })
            .unwrap();
        assert!(installed.is_some());
        assert_eq!(store.list().unwrap().len(), 6);
    }
}
