//! One datagram in, at most one reply out: decode → classify → boot decision →
//! personality → encode → addressing. Blocking (the lease store and inventory
//! commit durably), so the server runs it on the blocking pool.

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;

use provisioner_core::boot::{BootDecision, BootRequest};
use provisioner_core::dhcp::bootfile::{self, BootFiles, BootTarget};
use provisioner_core::dhcp::classify::{Client, ClientKind, classify};
use provisioner_core::dhcp::full::{FullServer, Outcome};
use provisioner_core::dhcp::lease::LeaseStore;
use provisioner_core::dhcp::reply::{self, Destination, Port, Responder};
use provisioner_core::dhcp::v4::{Message, MessageType};
use provisioner_core::dhcp::{Personality, wire};
use provisioner_core::inventory::Update;
use provisioner_core::model::{Event, MacAddr, Machine, TimelineEvent};
use provisioner_core::timeline::{DhcpMessage, DhcpSeen, DhcpSent};
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
    pub full: Option<FullServer>,
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
    mac: MacAddr,
    /// Create the machine record if missing (boot clients the unknown policy records).
    create: bool,
    client: Client,
    events: Vec<TimelineEvent>,
}

fn event(event: Event) -> TimelineEvent {
    event.at(OffsetDateTime::now_utc())
}

impl Handler {
    /// Handles one datagram that arrived on `port`. Never panics on bad input.
    pub fn handle(
        &self,
        buf: &[u8],
        port: Port,
        arrival: &Arrival,
        now: i64,
    ) -> (Option<Outgoing>, Option<Note>) {
        let msg = match wire::decode(buf) {
            Ok(m) => m,
            Err(e) => {
                dropped(e.reason());
                return (None, None);
            }
        };
        let client = match classify(&msg) {
            Ok(c) => c,
            Err(e) => {
                dropped(e.reason());
                return (None, None);
            }
        };
        let responder = Responder {
            server_id: if arrival.local.is_unspecified() || arrival.local.is_broadcast() {
                self.next_server
            } else {
                arrival.local
            },
            next_server: self.next_server,
        };
        let machine = self.service.inventory().get(client.mac).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "inventory read failed; answering without the machine record");
            None
        });
        let (target, create) = self.boot_target(&client, machine.as_ref());
        let seen = DhcpSeen {
            message: DhcpMessage(client.msg_type.into()),
            port: port.number(),
            personality: self.personality,
            client: client.kind,
            arch: client.arch_code,
            relay: Some(msg.giaddr()).filter(|g| !g.is_unspecified()),
        };
        let mut events = vec![event(Event::DhcpSeen(seen))];
        // Only machines the inventory knows or should know get a timeline: a plain
        // client's packets cost no write.
        let keep = create || machine.is_some();
        let note = |events: Vec<TimelineEvent>| {
            keep.then(|| Note {
                mac: client.mac,
                create,
                client: client.clone(),
                events,
            })
        };

        let reply: Option<Message> = match (self.personality, port) {
            (_, Port::PxeBootServer) | (Personality::Proxy, Port::Dhcp) => match &target {
                Some(t) => reply::proxy(&msg, &client, t, &responder, port),
                None => None,
            },
            (Personality::Full, Port::Dhcp) => {
                let Some(full) = &self.full else {
                    dropped("no_engine");
                    return (None, None);
                };
                match full.handle(&*self.leases, &msg, &client, &responder, target.as_ref(), now) {
                    Ok(Outcome::Reply { msg, .. }) => Some(*msg),
                    Ok(Outcome::Recorded(l)) => {
                        events.push(event(Event::DhcpLeaseRecorded {
                            state: l.state,
                            ip: l.ip,
                        }));
                        None
                    }
                    Ok(Outcome::Silent(reason)) => {
                        dropped(reason);
                        None
                    }
                    Err(e) => {
                        // No lease written, so no ACK: the client retries.
                        tracing::error!(error = %e, mac = %client.mac, "lease store failed");
                        dropped("lease_store");
                        None
                    }
                }
            }
            (Personality::Off, Port::Dhcp) => None,
        };
        let Some(mut reply) = reply else {
            if self.personality == Personality::Proxy || port == Port::PxeBootServer {
                // A proxy answers boot clients only, and only when the booter says so.
                dropped(if client.kind.is_boot() {
                    "proxy_no_answer"
                } else {
                    "not_boot_client"
                });
            }
            return (None, note(events));
        };
        let kind = reply.opts().msg_type().unwrap_or(MessageType::Unknown(0));
        let dst = match port {
            Port::PxeBootServer if !arrival.src.ip().is_unspecified() => (arrival.src, 0),
            _ => match reply::destination(&msg, &mut reply) {
                Destination::Relay(g) => (SocketAddrV4::new(g, 67), 0),
                Destination::Unicast(c) => (SocketAddrV4::new(c, 68), 0),
                Destination::Broadcast => (SocketAddrV4::new(Ipv4Addr::BROADCAST, 68), arrival.ifindex),
            },
        };
        let bytes = match wire::encode(&reply) {
            Ok(b) => b,
            Err(e) => {
                dropped(e.reason());
                return (None, note(events));
            }
        };
        let sent = DhcpSent {
            message: DhcpMessage(kind.into()),
            address: Some(reply.yiaddr()).filter(|a| !a.is_unspecified()),
            boot_file: target
                .as_ref()
                .filter(|_| matches!(kind, MessageType::Offer | MessageType::Ack))
                .map(|t| t.file().to_string()),
            to: dst.0,
        };
        events.push(event(Event::DhcpSent(sent)));
        let out = Outgoing {
            bytes,
            dst: dst.0,
            from: responder.server_id,
            ifindex: dst.1,
            kind,
        };
        (Some(out), note(events))
    }

    /// The boot file for `client`, asking the [`Booter`](provisioner_core::boot::Booter)
    /// whether it boots at all; and whether the machine should be recorded.
    fn boot_target(&self, client: &Client, machine: Option<&Machine>) -> (Option<BootTarget>, bool) {
        if !client.kind.is_boot() {
            return (None, false);
        }
        let req = BootRequest {
            mac: Some(client.mac),
            uuid: client.uuid.clone(),
            serial: None,
            arch: client.arch,
            hostname: client.hostname.clone(),
            bad_uuid: None,
        };
        let decision = self.service.booter().decide(&req, machine);
        if let BootDecision::Unknown { record: false, .. } = decision {
            // unknown_policy `ignore`: strangers fall through to their next boot option.
            return (None, false);
        }
        if client.kind == ClientKind::Pxe && self.http_boot_only.contains(&client.mac) {
            return (None, true);
        }
        let over = machine.and_then(|m| m.boot_file.as_deref());
        match bootfile::choose(client, &self.files, self.service.base(), over) {
            Ok(t) => (Some(t), true),
            Err(e) => {
                tracing::info!(mac = %client.mac, reason = %e, "no boot file");
                (None, true)
            }
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
                for note in rx {
                    record(&service, note);
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
/// one commit. Failures are logged: the reply is already out.
fn record(service: &BootService, note: Note) {
    let now = OffsetDateTime::now_utc();
    let Note {
        mac,
        create,
        client,
        events,
    } = note;
    let r = service
        .inventory()
        .apply(mac, &mut |cur: Option<Machine>| match cur {
            None if !create => Update::default(),
            cur => {
                let mut m = cur.unwrap_or_else(|| Machine::discovered(mac, now));
                m.last_seen = now;
                if client.arch != Default::default() {
                    m.arch = client.arch;
                }
                if m.uuid.is_none() {
                    m.uuid = client.uuid.clone();
                }
                Update {
                    machine: Some(m),
                    events: events.clone(),
                    ..Update::default()
                }
            }
        });
    if let Err(e) = r {
        tracing::warn!(error = %e, %mac, "recording DHCP timeline failed");
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
        use provisioner_core::dhcp::v4::DhcpOption;
        use provisioner_core::inventory::MemInventory;
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
            let client = classify(&m).unwrap();
            recorder.submit(Note {
                mac: client.mac,
                create: true,
                client,
                events: vec![event(Event::DhcpSeen(DhcpSeen {
                    message: DhcpMessage(1),
                    port: 67,
                    personality: Personality::Proxy,
                    client: ClientKind::Pxe,
                    arch: None,
                    relay: None,
                }))],
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
