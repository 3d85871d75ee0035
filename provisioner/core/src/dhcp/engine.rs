//! The DHCP answer as one function: a decoded request, what the appliance knows
//! (settings, the machine's record, the booter's decision) and the time in; the
//! encoded reply, where it goes and the timeline events out. The daemon's socket
//! handler does only I/O around it (receive, rate limit, read the machine, ask the
//! booter, send, hand the events to the timeline writer), and the property tests
//! drive this same function.
//!
//! One seam is not pure: in full mode the [`LeaseStore`] is written before an ACK
//! is returned (RFC 2131 §4.3.2: the server commits the binding, then ACKs), so a
//! returned ACK is durable once the store's writes are: at once for a plain store,
//! after the caller settles the tickets of a [`super::lease::Deferred`] view (the
//! daemon's socket loop); a store error means no ACK.

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddrV4};

use super::bootfile::{self, BootFiles, BootTarget, NoBoot};
use super::classify::{Client, ClientKind, classify};
use super::full::{Asker, FullServer, Outcome};
use super::lease::{LeaseError, LeaseStore};
use super::reply::{self, Destination, Port, Responder};
use super::v4::{Message, MessageType};
use super::{Personality, wire};
use crate::boot::{BootDecision, BootRequest};
use crate::model::{Arch, MacAddr, Machine};
use crate::timeline::{DhcpMessage, DhcpSeen, DhcpSent, Event};

/// A decoded, classified request.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// The message.
    pub msg: Message,
    /// Who sent it.
    pub client: Client,
}

impl Request {
    /// Decodes and classifies a datagram; `Err` is the drop reason to count.
    pub fn parse(bytes: &[u8]) -> Result<Self, &'static str> {
        let msg = wire::decode(bytes).map_err(|e| e.reason())?;
        let client = classify(&msg).map_err(|e| e.reason())?;
        Ok(Self { msg, client })
    }

    /// What the booter is asked for a network-boot client (`None` for a plain
    /// DHCP client: it boots nothing, so nothing is decided).
    pub fn boot_request(&self) -> Option<BootRequest> {
        let c = &self.client;
        c.kind.is_boot().then(|| BootRequest {
            mac: Some(c.mac),
            uuid: c.uuid.clone(),
            serial: None,
            arch: c.arch,
            hostname: c.hostname.clone(),
            bad_uuid: None,
        })
    }
}

/// The settings of one socket's answers.
#[derive(Debug, Clone, Copy)]
pub struct Ctx<'a> {
    /// `proxy` or `full` (or `off`: nothing on 67).
    pub personality: Personality,
    /// The port the request arrived on.
    pub port: Port,
    /// Option 54 and `siaddr`.
    pub responder: Responder,
    /// Binary names.
    pub files: &'a BootFiles,
    /// The boot path's base URL (no trailing slash).
    pub base: &'a str,
    /// MACs that get no PXE boot file (UEFI then falls through to HTTP Boot).
    pub http_boot_only: &'a HashSet<MacAddr>,
    /// Full mode: the address engine and its lease store.
    pub full: Option<(&'a FullServer, &'a dyn LeaseStore)>,
    /// The request's source address (4011 answers go back to it).
    pub source: SocketAddrV4,
}

/// An encoded reply and where it goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The datagram.
    pub bytes: Vec<u8>,
    /// Its option 53.
    pub msg_type: MessageType,
    /// Destination address and port.
    pub to: SocketAddrV4,
    /// A broadcast that must leave through the interface the request came in on.
    pub on_ingress: bool,
    /// The source address to send from (option 54).
    pub from: Ipv4Addr,
}

/// What to write on the machine's timeline for this packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// The machine.
    pub mac: MacAddr,
    /// Create its record if missing (a boot client the unknown policy records).
    pub create: bool,
    /// Firmware class from option 93, to update the record.
    pub arch: Arch,
    /// SMBIOS UUID from option 97, kept if the record has none.
    pub uuid: Option<String>,
    /// Option 60, to update the record.
    pub vendor_class: Option<String>,
    /// The events, oldest first (`dhcp_seen`, then `dhcp_sent` if answered).
    pub events: Vec<Event>,
}

/// The outcome of one request.
#[derive(Debug, Default)]
pub struct Answer {
    /// The reply to send, if any.
    pub reply: Option<Reply>,
    /// Why nothing (or nothing useful) was sent, for the drop counter.
    pub dropped: Option<&'static str>,
    /// The timeline entry, for machines the inventory knows or should know; a
    /// plain client's packets cost no write.
    pub note: Option<Note>,
    /// Why a boot client got no boot file (for the log).
    pub no_boot: Option<NoBoot>,
    /// The lease store failed (no ACK was made; the client retries).
    pub lease_error: Option<LeaseError>,
}

/// Answers `req`. `machine` is its inventory record, `decision` the booter's answer
/// for [`Request::boot_request`] (`None` for plain clients), `now` unix seconds.
pub fn answer(
    req: &Request,
    ctx: &Ctx<'_>,
    machine: Option<&Machine>,
    decision: Option<&BootDecision>,
    now: i64,
) -> Answer {
    let (msg, client) = (&req.msg, &req.client);
    let mut out = Answer::default();
    let (target, create) = boot_target(client, ctx, machine, decision, &mut out);
    let keep = create || machine.is_some();
    let mut events = Vec::new();
    if keep {
        events.push(Event::DhcpSeen(DhcpSeen {
            message: DhcpMessage(client.msg_type.into()),
            port: ctx.port.number(),
            personality: ctx.personality,
            client: client.kind,
            arch: client.arch_code,
            relay: Some(msg.giaddr()).filter(|g| !g.is_unspecified()),
        }));
    }
    let reply = match (ctx.personality, ctx.port) {
        (_, Port::PxeBootServer) | (Personality::Proxy, Port::Dhcp) => target
            .as_ref()
            .and_then(|t| reply::proxy(msg, client, t, &ctx.responder, ctx.port)),
        (Personality::Full, Port::Dhcp) => match ctx.full {
            None => {
                out.dropped = Some("no_engine");
                return out;
            }
            Some((full, leases)) => {
                match full.handle(
                    leases,
                    msg,
                    Asker {
                        client,
                        known: machine.is_some(),
                    },
                    &ctx.responder,
                    target.as_ref(),
                    now,
                ) {
                    Ok(Outcome::Reply { msg, .. }) => Some(*msg),
                    Ok(Outcome::Recorded(l)) => {
                        if keep {
                            events.push(Event::DhcpLeaseRecorded {
                                state: l.state,
                                ip: l.ip,
                            });
                        }
                        None
                    }
                    Ok(Outcome::Silent(reason)) => {
                        out.dropped = Some(reason);
                        None
                    }
                    Err(e) => {
                        out.lease_error = Some(e);
                        out.dropped = Some("lease_store");
                        None
                    }
                }
            }
        },
        (Personality::Off, Port::Dhcp) => None,
    };
    let note = |events| {
        keep.then(|| Note {
            mac: client.mac,
            create,
            arch: client.arch,
            uuid: client.uuid.clone(),
            vendor_class: client.vendor_class.clone(),
            events,
        })
    };
    let Some(mut reply) = reply else {
        if ctx.personality == Personality::Proxy || ctx.port == Port::PxeBootServer {
            // A proxy answers boot clients only, and only when the booter says so.
            out.dropped = Some(if client.kind.is_boot() {
                "proxy_no_answer"
            } else {
                "not_boot_client"
            });
        }
        out.note = note(events);
        return out;
    };
    let msg_type = reply.opts().msg_type().unwrap_or(MessageType::Unknown(0));
    let (to, on_ingress) = match ctx.port {
        Port::PxeBootServer if !ctx.source.ip().is_unspecified() => (ctx.source, false),
        _ => match reply::destination(msg, &mut reply) {
            Destination::Relay(g) => (SocketAddrV4::new(g, 67), false),
            Destination::Unicast(c) => (SocketAddrV4::new(c, 68), false),
            Destination::Broadcast => (SocketAddrV4::new(Ipv4Addr::BROADCAST, 68), true),
        },
    };
    let bytes = match wire::encode(&reply) {
        Ok(b) => b,
        Err(e) => {
            out.dropped = Some(e.reason());
            out.note = note(events);
            return out;
        }
    };
    if keep {
        events.push(Event::DhcpSent(DhcpSent {
            message: DhcpMessage(msg_type.into()),
            address: Some(reply.yiaddr()).filter(|a| !a.is_unspecified()),
            boot_file: target
                .as_ref()
                .filter(|_| matches!(msg_type, MessageType::Offer | MessageType::Ack))
                .map(|t| t.file().to_string()),
            to,
        }));
    }
    out.reply = Some(Reply {
        bytes,
        msg_type,
        to,
        on_ingress,
        from: ctx.responder.server_id,
    });
    out.note = note(events);
    out
}

/// The boot file for `client` (the booter's decision says whether it boots at
/// all), and whether the machine should be recorded.
fn boot_target(
    client: &Client,
    ctx: &Ctx<'_>,
    machine: Option<&Machine>,
    decision: Option<&BootDecision>,
    out: &mut Answer,
) -> (Option<BootTarget>, bool) {
    let Some(decision) = decision.filter(|_| client.kind.is_boot()) else {
        return (None, false);
    };
    if let BootDecision::Unknown { record: false, .. } = decision {
        // unknown_policy `ignore`: strangers fall through to their next boot option.
        return (None, false);
    }
    if client.kind == ClientKind::Pxe && ctx.http_boot_only.contains(&client.mac) {
        return (None, true);
    }
    let over = machine.and_then(|m| m.boot_file.as_deref());
    match bootfile::choose(client, ctx.files, ctx.base, over) {
        Ok(t) => (Some(t), true),
        Err(e) => {
            out.no_boot = Some(e);
            (None, true)
        }
    }
}
