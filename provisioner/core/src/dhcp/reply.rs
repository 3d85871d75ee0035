//! Building replies: the common BOOTREPLY skeleton, the boot fields every boot answer
//! carries, the proxyDHCP personality, and where a reply is sent (RFC 2131 §4.1).

use std::net::Ipv4Addr;

use super::bootfile::BootTarget;
use super::classify::{Client, ClientKind};
use super::v4::{DhcpOption, Flags, HType, Message, MessageType, Opcode};
use super::wire::FILE_MAX;

/// PXE vendor option 43, sub-option 6 (PXE_DISCOVERY_CONTROL) = 8: "use the boot
/// file in this offer, skip boot-server discovery" (PXE spec 2.1 §2.4.2; smee
/// `proxy.go:181-194`), then END.
pub const PXE_DISCOVERY_CONTROL_USE_BOOTFILE: [u8; 4] = [6, 1, 8, 255];

/// The UDP port a request arrived on, which decides what the appliance answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Port {
    /// 67: DHCP (broadcast from clients, or unicast from relays and renewing clients).
    Dhcp,
    /// 4011: the PXE boot server ("BINL"); clients unicast their REQUEST here.
    PxeBootServer,
}

impl Port {
    /// Label for logs, metrics and the timeline.
    pub fn label(self) -> &'static str {
        match self {
            Self::Dhcp => "67",
            Self::PxeBootServer => "4011",
        }
    }

    /// The port number.
    pub fn number(self) -> u16 {
        match self {
            Self::Dhcp => 67,
            Self::PxeBootServer => 4011,
        }
    }
}

/// The answering server's addresses for one reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Responder {
    /// Option 54: the address the request reached (multi-homed: per interface).
    pub server_id: Ipv4Addr,
    /// `siaddr` and option 66: the TFTP server (this appliance).
    pub next_server: Ipv4Addr,
}

/// A BOOTREPLY to `req` from `mac`'s point of view: same `xid`, `flags`, `giaddr`
/// and `chaddr` (RFC 2131 §4.3.1 table 3), message type and server identifier set.
pub fn skeleton(req: &Message, client: &Client, msg_type: MessageType, server_id: Ipv4Addr) -> Message {
    let mut m = Message::default();
    m.set_opcode(Opcode::BootReply)
        .set_htype(HType::Eth)
        .set_xid(req.xid())
        .set_flags(req.flags())
        .set_giaddr(req.giaddr())
        .set_chaddr(&client.mac.0);
    let o = m.opts_mut();
    o.insert(DhcpOption::MessageType(msg_type));
    o.insert(DhcpOption::ServerIdentifier(server_id));
    // RFC 2131 §4.3.1 table 3: the client identifier is not echoed in v4 replies,
    // but option 97 is, for PXE clients (PXE spec 2.1 §2.2.5; pixiecore echoes it).
    if let Some(id) = &client.machine_id {
        o.insert(DhcpOption::ClientMachineIdentifier(id.clone()));
    }
    m
}

/// Writes the boot answer into `reply`: the boot file in option 67 **and** the
/// BOOTP `file` header (U-Boot reads only the header, boot-protocols.md §3.5),
/// `siaddr` and option 66 for TFTP, and option 60 (`PXEClient` or `HTTPClient`;
/// UEFI HTTP Boot ignores offers without `HTTPClient`, UEFI spec 2.10 §24.7.2).
/// `pxe_vendor_options` adds option 43 (discovery control 8) for PXE clients.
pub fn add_boot(
    reply: &mut Message,
    client: &Client,
    target: &BootTarget,
    responder: &Responder,
    echo_vendor_class: bool,
    pxe_vendor_options: bool,
) {
    let file = target.file();
    reply.set_siaddr(responder.next_server);
    // dhcproto's setter asserts the 128-byte limit; a longer value (a URL from
    // config) goes only in option 67, and the NUL terminator must fit (RFC 2131 §2).
    if file.len() < FILE_MAX {
        reply.set_fname(file.as_bytes());
    }
    let o = reply.opts_mut();
    o.insert(DhcpOption::BootfileName(file.as_bytes().to_vec()));
    if matches!(target, BootTarget::Tftp(_)) {
        o.insert(DhcpOption::TFTPServerName(
            responder.next_server.to_string().into_bytes(),
        ));
    }
    match client.kind {
        ClientKind::HttpBoot => {
            o.insert(DhcpOption::ClassIdentifier(b"HTTPClient".to_vec()));
        }
        ClientKind::Pxe | ClientKind::Ipxe if echo_vendor_class => {
            o.insert(DhcpOption::ClassIdentifier(b"PXEClient".to_vec()));
        }
        _ => {}
    }
    if pxe_vendor_options && matches!(client.kind, ClientKind::Pxe | ClientKind::Ipxe) {
        o.insert(DhcpOption::VendorExtensions(
            PXE_DISCOVERY_CONTROL_USE_BOOTFILE.to_vec(),
        ));
    }
}

/// The proxyDHCP answer (boot information only, never an address; `yiaddr` stays
/// 0.0.0.0), or `None` when a proxy must stay silent:
/// - on 67, DISCOVER gets an OFFER; a REQUEST gets an ACK only if it names this
///   server (option 54), since a REQUEST naming another server selects that one;
/// - on 4011, REQUEST (and INFORM) get an ACK (PXE spec 2.1 §2.2.7; without it EDK2
///   fails with PXE-E55, siderolabs/sidero#1212).
///
/// Option 43 is left out for UEFI PXE clients on 67, so EDK2 classifies the offer
/// as "BINL" and asks 4011, because it does not keep proxy offers
/// (tianocore/edk2#6944; pixiecore `README.booting.md`); BIOS PXE and iPXE get
/// discovery control 8 (smee).
pub fn proxy(
    req: &Message,
    client: &Client,
    target: &BootTarget,
    responder: &Responder,
    port: Port,
) -> Option<Message> {
    if !client.kind.is_boot() {
        return None;
    }
    let reply_type = match (port, client.msg_type) {
        (Port::Dhcp, MessageType::Discover) => MessageType::Offer,
        (Port::Dhcp, MessageType::Request) if client.server_id == Some(responder.server_id) => {
            MessageType::Ack
        }
        (Port::PxeBootServer, MessageType::Request | MessageType::Inform) => MessageType::Ack,
        _ => return None,
    };
    let mut m = skeleton(req, client, reply_type, responder.server_id);
    let uefi_pxe = client.kind == ClientKind::Pxe && client.arch.firmware() == "uefi";
    let opt43 = !(uefi_pxe && port == Port::Dhcp);
    add_boot(&mut m, client, target, responder, true, opt43);
    Some(m)
}

/// Where a reply goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Destination {
    /// The relay agent at `giaddr`, port 67.
    Relay(Ipv4Addr),
    /// The client's address, port 68.
    Unicast(Ipv4Addr),
    /// 255.255.255.255:68 on the interface the request came in on.
    Broadcast,
}

/// RFC 2131 §4.1: `giaddr` set → the relay on 67 (with the broadcast bit set on a
/// NAK); else a NAK is broadcast; else `ciaddr` set → unicast to it; else broadcast
/// (the client has no address yet, and without an ARP entry for `yiaddr` a unicast
/// cannot reach it, so the appliance broadcasts as dnsmasq and ISC do when they
/// cannot inject one). Replies on 4011 go back to the request's source instead.
pub fn destination(req: &Message, reply: &mut Message) -> Destination {
    let nak = reply.opts().msg_type() == Some(MessageType::Nak);
    let giaddr = req.giaddr();
    if !giaddr.is_unspecified() {
        if nak {
            reply.set_flags(Flags::default().set_broadcast());
        }
        return Destination::Relay(giaddr);
    }
    if nak {
        return Destination::Broadcast;
    }
    let ciaddr = req.ciaddr();
    if !ciaddr.is_unspecified() {
        return Destination::Unicast(ciaddr);
    }
    Destination::Broadcast
}
