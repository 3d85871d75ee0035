//! Observations: timeline events that answer no request (a TFTP transfer or an
//! asset download completed). Nobody waits for them, so instead of a commit (and a
//! share of an fsync) per event on a blocking-pool thread, they queue for one
//! writer thread that writes everything queued in one commit
//! ([`Inventory::apply_many`]); a boot storm's thousands of downloads cost a few
//! commits a second. The journal still publishes each event only after its commit.
//! The queue is bounded: beyond it events are dropped and counted
//! (`provisioner_observations_dropped_total`), never the downloads.

use std::net::IpAddr;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Weak};

use provisioner_core::boot::{BootDecision, BootRequest};
use provisioner_core::inventory::{Change, Update};
use provisioner_core::model::{Event, MacAddr, Machine, TimelineEvent};
use time::OffsetDateTime;

use super::BootService;

/// Events queued before new ones are dropped.
const QUEUE: usize = 16_384;
/// Events written in one commit at most.
const BATCH: usize = 512;

/// Whose timeline an observation goes to.
#[derive(Debug, Clone, Copy)]
pub enum Observed {
    /// A TFTP client: its MAC from the kernel's ARP table (firmware ARPs for us
    /// before its RRQ; the machine is created if the unknown policy records it),
    /// else from the peer map.
    TftpClient(IpAddr),
    /// Whichever known machine last fetched its script from this address.
    Peer(IpAddr),
}

/// The sending side; the writer thread ends when it is dropped.
#[derive(Debug)]
pub(super) struct Observer {
    tx: SyncSender<(Observed, TimelineEvent)>,
}

impl Observer {
    /// Starts the writer thread; it holds the service weakly.
    pub(super) fn spawn(service: Weak<BootService>) -> std::io::Result<Self> {
        let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE);
        std::thread::Builder::new()
            .name("timeline-obs".into())
            .spawn(move || writer(&service, &rx))?;
        Ok(Self { tx })
    }
}

fn writer(service: &Weak<BootService>, rx: &Receiver<(Observed, TimelineEvent)>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(o) => batch.push(o),
                Err(_) => break,
            }
        }
        let Some(service) = service.upgrade() else { return };
        service.write_observations(batch);
    }
}

impl BootService {
    /// Queues `event` for `who`'s timeline (see [`Observed`]); returns at once.
    pub fn observe(self: &Arc<Self>, who: Observed, event: Event) {
        let event = event.at(OffsetDateTime::now_utc());
        let observer = self
            .observer
            .get_or_init(|| Observer::spawn(Arc::downgrade(self)).ok());
        let Some(observer) = observer else {
            // No thread could be started: write it here.
            return self.write_observations(vec![(who, event)]);
        };
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = observer.tx.try_send((who, event))
        {
            metrics::counter!("provisioner_observations_dropped_total").increment(1);
        }
    }

    /// Writes a batch in one commit; if it fails (a record that does not decode, a
    /// failing disk), one by one, so one machine cannot cost the others their events.
    fn write_observations(&self, batch: Vec<(Observed, TimelineEvent)>) {
        let mut changes: Vec<(MacAddr, _)> = batch
            .into_iter()
            .filter_map(|(who, event)| {
                let (mac, create) = self.resolve(who)?;
                Some((mac, self.observation(mac, create, event)))
            })
            .collect();
        let mut steps: Vec<(MacAddr, Change<'_>)> =
            changes.iter_mut().map(|(m, c)| (*m, c as Change<'_>)).collect();
        if steps.is_empty() || self.inventory.apply_many(&mut steps).is_ok() {
            return;
        }
        drop(steps);
        for (mac, change) in &mut changes {
            if let Err(e) = self.inventory.apply(*mac, change) {
                tracing::warn!(error = %e, %mac, "recording a timeline event failed");
            }
        }
    }

    /// The MAC an observation belongs to, and whether it may create the record.
    fn resolve(&self, who: Observed) -> Option<(MacAddr, bool)> {
        match who {
            Observed::TftpClient(ip) => match crate::sys::netinfo::arp_lookup(ip) {
                Some(mac) => {
                    self.remember_peer(ip, mac);
                    Some((mac, true))
                }
                None => Some((self.peer_mac(ip)?, false)),
            },
            Observed::Peer(ip) => Some((self.peer_mac(ip)?, false)),
        }
    }

    /// The change for one event: appended to a known machine's timeline; a machine
    /// not in the store is created (`Discovered`) only if `create` and the unknown
    /// policy records it (as [`BootService::record_seen`] decides).
    fn observation(
        &self,
        mac: MacAddr,
        create: bool,
        event: TimelineEvent,
    ) -> impl FnMut(Option<Machine>) -> Update + '_ {
        move |cur| match cur {
            Some(_) if !create => Update {
                events: vec![event.clone()],
                ..Update::default()
            },
            None if !(create && self.may_record(mac)) => Update::default(),
            cur => {
                let mut m = cur.unwrap_or_else(|| Machine::discovered(mac, event.at));
                m.last_seen = event.at;
                Update {
                    machine: Some(m),
                    events: vec![event.clone()],
                    ..Update::default()
                }
            }
        }
    }

    /// Whether the unknown policy lets traffic from `mac` create a record.
    pub(super) fn may_record(&self, mac: MacAddr) -> bool {
        let req = BootRequest {
            mac: Some(mac),
            ..Default::default()
        };
        !matches!(
            self.booter().decide(&req, None),
            BootDecision::Unknown { record: false, .. }
        )
    }
}
