//! One datagram in, at most one reply out. The answer is the pure engine's
//! (`provisioner_core::dhcp::engine`); this only reads the machine's record, asks
//! the booter, counts drops and stamps the timeline note. [`Handler::handle_deferred`]
//! does not wait for the disk: lease writes go through a [`Deferred`] view and come
//! back as a [`Pending`] that must settle (durable) before the reply may be sent,
//! which [`Handled::settle`] does; [`Handler::handle`] does both in one call.

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;

use provisioner_core::dhcp::Personality;
use provisioner_core::dhcp::bootfile::BootFiles;
use provisioner_core::dhcp::engine::{self, Ctx, Request};
use provisioner_core::dhcp::full::FullServer;
use provisioner_core::dhcp::lease::{Deferred, LeaseStore, Pending};
use provisioner_core::dhcp::reply::{Port, Responder};
use provisioner_core::dhcp::v4::MessageType;
use provisioner_core::inventory::{Change, Update};
use provisioner_core::model::{MacAddr, Machine, TimelineEvent};
use provisioner_core::timeline::Event;
use time::OffsetDateTime;

use super::socket::Arrival;
use crate::service::BootService;

/// Counts a dropped datagram under `reason`.
pub fn dropped(reason: &'static str) {
    metrics::counter!("provisioner_dhcp_dropped_total", "reason" => reason).increment(1);
}

/// Everything a request needs besides the datagram.
#[derive(Debug)]
pub struct Handler {
    /// `proxy` or `full`.
    pub personality: Personality,
    /// The engine in `full` mode.
    pub full: FullSlot,
    /// Lease storage (used in `full` mode).
    pub leases: Arc<dyn LeaseStore>,
    /// Booter, inventory and timeline.
    pub service: Arc<BootService>,
    /// Binary names.
    pub files: BootFiles,
    /// TFTP server address (`siaddr`, option 66) and fallback server identifier.
    pub next_server: Ipv4Addr,
    /// MACs that get no PXE boot file.
    pub http_boot_only: HashSet<MacAddr>,
}

/// The `full` engine of the moment (`None` in proxy mode): swapped whole when a
/// reload changes the reservations from `infra/` (an adoption armed a cluster), so
/// the pure engine keeps its settings immutable. The new engine starts without the
/// old one's in-memory offers (held at most `OFFER_HOLD_SECS`; leases are in the store).
#[derive(Debug, Clone, Default)]
pub struct FullSlot(Arc<std::sync::RwLock<Option<Arc<FullServer>>>>);

impl FullSlot {
    /// A slot holding `full`.
    pub fn new(full: Option<FullServer>) -> Self {
        Self(Arc::new(std::sync::RwLock::new(full.map(Arc::new))))
    }

    /// The engine now.
    pub fn get(&self) -> Option<Arc<FullServer>> {
        self.0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Serves `full` from the next datagram on.
    pub fn set(&self, full: Option<FullServer>) {
        *self.0.write().unwrap_or_else(std::sync::PoisonError::into_inner) = full.map(Arc::new);
    }
}

/// A reply ready for the socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// Encoded message.
    pub bytes: Vec<u8>,
    /// Destination.
    pub dst: SocketAddrV4,
    /// Source address to send from.
    pub from: Ipv4Addr,
    /// Egress interface (0: let routing decide).
    pub ifindex: i32,
    /// Message type, for metrics.
    pub kind: MessageType,
}

/// Timeline entries to write once the reply is out.
#[derive(Debug, Clone)]
pub struct Note {
    /// What the engine said to record.
    note: engine::Note,
    /// When the packet was handled.
    at: OffsetDateTime,
}

/// A handled datagram whose lease writes may not be durable yet.
#[derive(Debug)]
#[must_use = "settle it: the reply may go out only after its leases are durable"]
pub struct Handled {
    /// The reply, to send once `pending` has settled.
    pub out: Option<Outgoing>,
    /// The timeline entry, to record once `pending` has settled.
    pub note: Option<Note>,
    /// Lease writes not yet durable (empty for everything but full-mode writes).
    pub pending: Pending,
}

impl Handled {
    /// Waits until the leases are durable and returns the reply and note. If a
    /// write failed, there is no reply (no ACK for a lease the disk does not have:
    /// the client retries) and the note keeps only what was seen (no `dhcp_sent`,
    /// no recorded release or decline).
    pub fn settle(self, leases: &dyn LeaseStore) -> (Option<Outgoing>, Option<Note>) {
        let Self {
            out,
            mut note,
            pending,
        } = self;
        if pending.is_empty() {
            return (out, note);
        }
        match pending.settle(leases) {
            Ok(()) => (out, note),
            Err(e) => {
                tracing::error!(error = %e, "lease store failed; no reply");
                dropped("lease_store");
                if let Some(n) = &mut note {
                    n.note
                        .events
                        .retain(|e| !matches!(e, Event::DhcpSent(_) | Event::DhcpLeaseRecorded { .. }));
                }
                (None, note)
            }
        }
    }
}

impl Handler {
    /// Handles one datagram that arrived on `port` at unix time `now`, waiting for
    /// its lease writes to be durable. Never panics on bad input.
    pub fn handle(
        &self,
        buf: &[u8],
        port: Port,
        arrival: &Arrival,
        now: i64,
    ) -> (Option<Outgoing>, Option<Note>) {
        self.handle_deferred(buf, port, arrival, now)
            .settle(&*self.leases)
    }

    /// Like [`Self::handle`], but returns before the lease writes are durable; the
    /// caller settles the result before sending its reply.
    pub fn handle_deferred(&self, buf: &[u8], port: Port, arrival: &Arrival, now: i64) -> Handled {
        let req = match Request::parse(buf) {
            Ok(r) => r,
            Err(reason) => {
                dropped(reason);
                return Handled {
                    out: None,
                    note: None,
                    pending: Pending::default(),
                };
            }
        };
        let mac = req.client.mac;
        let machine = self.service.inventory().get(mac).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "inventory read failed; answering without the machine record");
            None
        });
        let decision = req
            .boot_request()
            .map(|r| self.service.booter().decide(&r, machine.as_ref()));
        let full = self.full.get();
        let leases = Deferred::new(&*self.leases);
        let ctx = Ctx {
            personality: self.personality,
            port,
            responder: Responder {
                server_id: if arrival.local.is_unspecified() || arrival.local.is_broadcast() {
                    self.next_server
                } else {
                    arrival.local
                },
                next_server: self.next_server,
            },
            files: &self.files,
            base: self.service.base(),
            http_boot_only: &self.http_boot_only,
            full: full.as_deref().map(|f| (f, &leases as &dyn LeaseStore)),
            source: arrival.src,
        };
        let a = engine::answer(&req, &ctx, machine.as_ref(), decision.as_ref(), now);
        if let Some(e) = &a.no_boot {
            tracing::info!(%mac, reason = %e, "no boot file");
        }
        if let Some(e) = &a.lease_error {
            // No lease written, so no ACK: the client retries.
            tracing::error!(error = %e, %mac, "lease store failed");
        }
        if let Some(reason) = a.dropped {
            dropped(reason);
        }
        let out = a.reply.map(|r| Outgoing {
            bytes: r.bytes,
            dst: r.to,
            from: r.from,
            ifindex: if r.on_ingress { arrival.ifindex } else { 0 },
            kind: r.msg_type,
        });
        let note = a.note.map(|note| Note {
            note,
            at: OffsetDateTime::now_utc(),
        });
        Handled {
            out,
            note,
            pending: leases.into_pending(),
        }
    }

    /// Writes a note's events (and the machine record for recorded boot clients) in
    /// one commit. Failures are logged: the reply is already out.
    pub fn record(&self, note: Note) {
        record(&self.service, note);
    }
}

/// Writes the timeline of DHCP notes on its own thread, so replies never wait for
/// the inventory's fsync. The queue is bounded: when it is full (a storm faster
/// than the disk), notes are dropped and counted, never the replies.
#[derive(Debug, Clone)]
pub struct Recorder {
    tx: std::sync::mpsc::SyncSender<Note>,
}

impl Recorder {
    /// Starts the writer thread with room for `capacity` pending notes. The thread
    /// writes what is queued and ends when every clone of the recorder is dropped;
    /// join the returned handle at shutdown so queued notes are not lost on SIGTERM.
    pub fn spawn(
        service: Arc<BootService>,
        capacity: usize,
    ) -> std::io::Result<(Self, std::thread::JoinHandle<()>)> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Note>(capacity);
        let writer = std::thread::Builder::new()
            .name("dhcp-timeline".into())
            .spawn(move || {
                // Everything queued goes in one commit (up to BATCH notes).
                while let Some(batch) = crate::service::next_batch(&rx, BATCH) {
                    record_batch(&service, batch);
                }
            })?;
        Ok((Self { tx }, writer))
    }

    /// Queues `note`, or drops and counts it if the queue is full.
    pub fn submit(&self, note: Note) {
        if self.tx.try_send(note).is_err() {
            metrics::counter!("provisioner_dhcp_timeline_dropped_total").increment(1);
        }
    }
}

/// Writes a note's events (and the machine record for recorded boot clients) in
/// one commit through the service's journal, which publishes them to live views.
/// Failures are logged: the reply is already out.
fn record(service: &BootService, note: Note) {
    record_batch(service, vec![note]);
}

/// Notes the writer took from its queue at once.
const BATCH: usize = 256;

/// Writes every note of `notes` in one commit (a storm's notes share commits and
/// fsyncs). If the batch fails (a record that does not decode, a failing disk),
/// the notes are written one by one, so one machine cannot cost the others theirs.
fn record_batch(service: &BootService, notes: Vec<Note>) {
    let mut changes: Vec<(MacAddr, _)> = notes.iter().map(|n| (n.note.mac, note_change(n))).collect();
    let mut steps: Vec<(MacAddr, Change<'_>)> =
        changes.iter_mut().map(|(m, c)| (*m, c as Change<'_>)).collect();
    if service.inventory().apply_many(&mut steps).is_ok() {
        return;
    }
    drop(steps);
    for (mac, change) in &mut changes {
        if let Err(e) = service.inventory().apply(*mac, change) {
            tracing::warn!(error = %e, %mac, "recording DHCP timeline failed");
        }
    }
}

/// The inventory change of one note: the events, and the record of a recorded
/// boot client (created if the note says so).
fn note_change(n: &Note) -> impl FnMut(Option<Machine>) -> Update + '_ {
    let (note, at) = (&n.note, n.at);
    let mac = note.mac;
    let events: Vec<TimelineEvent> = note.events.iter().cloned().map(|e| e.at(at)).collect();
    move |cur: Option<Machine>| match cur {
        None if !note.create => Update::default(),
        cur => {
            let mut m = cur.unwrap_or_else(|| Machine::discovered(mac, at));
            m.last_seen = at;
            if note.arch != Default::default() {
                m.arch = note.arch;
            }
            if m.uuid.is_none() {
                m.uuid = note.uuid.clone();
            }
            if note.vendor_class.is_some() {
                m.vendor_class = note.vendor_class.clone();
            }
            Update {
                machine: Some(m),
                events: events.clone(),
                ..Update::default()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Shutdown drops the servers' recorders and joins the writer: every note queued
    /// before that is in the inventory afterwards.
    #[test]
    fn joined_writer_has_written_every_queued_note() {
        use provisioner_core::boot::{CatalogBooter, UnknownPolicy};
        use provisioner_core::dhcp::v4::{DhcpOption, Message};
        use provisioner_core::inventory::MemInventory;
        use provisioner_core::model::Event;
        use provisioner_core::timeline::{DhcpMessage, DhcpSeen};
        let booter = Arc::new(CatalogBooter {
            catalog: Default::default(),
            unknown: UnknownPolicy::Record,
        });
        let service = Arc::new(BootService::new(
            booter,
            Arc::new(MemInventory::new()),
            "http://10.0.0.1".into(),
        ));
        let (recorder, writer) = Recorder::spawn(service.clone(), 1024).unwrap();
        let macs: Vec<[u8; 6]> = (0..200u8).map(|i| [0x52, 0x54, 0, 0, 1, i]).collect();
        for mac in &macs {
            let mut m = Message::new_with_id(
                1,
                Ipv4Addr::UNSPECIFIED,
                Ipv4Addr::UNSPECIFIED,
                Ipv4Addr::UNSPECIFIED,
                Ipv4Addr::UNSPECIFIED,
                mac,
            );
            m.opts_mut()
                .insert(DhcpOption::MessageType(MessageType::Discover));
            let client = provisioner_core::dhcp::classify::classify(&m).unwrap();
            recorder.submit(Note {
                note: engine::Note {
                    mac: client.mac,
                    create: true,
                    arch: client.arch,
                    uuid: None,
                    vendor_class: None,
                    events: vec![Event::DhcpSeen(DhcpSeen {
                        message: DhcpMessage(1),
                        port: 67,
                        personality: Personality::Proxy,
                        client: client.kind,
                        arch: None,
                        relay: None,
                    })],
                },
                at: OffsetDateTime::now_utc(),
            });
        }
        drop(recorder);
        writer.join().unwrap();
        for mac in macs {
            let mac = MacAddr(mac);
            assert!(
                service.inventory().get(mac).unwrap().is_some(),
                "{mac} not written"
            );
        }
    }
}
