//! Before `full` mode starts: is another DHCP server on the segment? One DISCOVER
//! (broadcast flag set, a locally administered MAC, a random xid) goes out from
//! port 68, and every OFFER with that xid within the window is reported.

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use provisioner_core::dhcp::v4::{DhcpOption, Flags, Message, MessageType, Opcode, OptionCode};
use provisioner_core::dhcp::wire;

use super::socket;

/// One answer to the probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// Option 54 (or the sender's address).
    pub server: Ipv4Addr,
    /// The address it offered.
    pub offered: Ipv4Addr,
}

/// Sends the probe on `interface` (all interfaces if `None`) and listens for `wait`.
pub fn other_servers(interface: Option<&str>, wait: Duration) -> io::Result<Vec<Answer>> {
    let sock = socket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68), interface)?;
    sock.set_nonblocking(false)?;
    let xid: u32 = rand::random();
    let mut mac = [0x02, 0, 0, 0, 0, 0];
    mac[2..].copy_from_slice(&xid.to_be_bytes());
    let mut m = Message::new_with_id(
        xid,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        &mac,
    );
    m.set_flags(Flags::default().set_broadcast());
    m.opts_mut()
        .insert(DhcpOption::MessageType(MessageType::Discover));
    let bytes = wire::encode(&m).map_err(io::Error::other)?;
    sock.send_to(&bytes, SocketAddrV4::new(Ipv4Addr::BROADCAST, 67))?;
    let deadline = Instant::now() + wait;
    let mut answers = Vec::new();
    let mut buf = vec![0u8; 65_536];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        sock.set_read_timeout(Some(left))?;
        let (n, from) = match sock.recv_from(&mut buf) {
            Ok(x) => x,
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => break,
            Err(e) => return Err(e),
        };
        let Ok(r) = wire::decode(&buf[..n]) else { continue };
        if r.opcode() != Opcode::BootReply
            || r.xid() != xid
            || r.opts().msg_type() != Some(MessageType::Offer)
        {
            continue;
        }
        let server = match r.opts().get(OptionCode::ServerIdentifier) {
            Some(DhcpOption::ServerIdentifier(s)) => *s,
            _ => match from.ip() {
                std::net::IpAddr::V4(v4) => v4,
                std::net::IpAddr::V6(_) => continue,
            },
        };
        let a = Answer {
            server,
            offered: r.yiaddr(),
        };
        if !answers.contains(&a) {
            answers.push(a);
        }
    }
    Ok(answers)
}
