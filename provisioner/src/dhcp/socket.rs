//! DHCP sockets without raw sockets (crates.md §5.10): UDP bound to 0.0.0.0 with
//! `SO_REUSEADDR` + `SO_BROADCAST`, optionally `SO_BINDTODEVICE` to one interface,
//! and `IP_PKTINFO` so each datagram says which interface and local address it
//! reached, and each reply leaves from that interface and address.

use std::io;
use std::io::{IoSlice, IoSliceMut};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::AsRawFd;

use nix::libc;
use nix::sys::socket::{self, ControlMessage, ControlMessageOwned, MsgFlags, SockaddrIn, sockopt};
use socket2::{Domain, Protocol, Socket, Type};

/// Where a datagram came from and where it arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arrival {
    /// Sender.
    pub src: SocketAddrV4,
    /// Interface index it came in on (0 if unknown).
    pub ifindex: i32,
    /// The local address it reached: the interface's address for broadcasts, the
    /// targeted address for unicasts (`ipi_spec_dst`).
    pub local: Ipv4Addr,
}

/// Binds a DHCP socket on `addr`, on `interface` only if given. Needs root or
/// CAP_NET_BIND_SERVICE for ports below 1024, and CAP_NET_RAW for the device bind.
pub fn bind(addr: SocketAddrV4, interface: Option<&str>) -> io::Result<std::net::UdpSocket> {
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_address(true)?;
    s.set_broadcast(true)?;
    if let Some(dev) = interface {
        s.bind_device(Some(dev.as_bytes()))
            .map_err(|e| io::Error::new(e.kind(), format!("SO_BINDTODEVICE {dev}: {e}")))?;
    }
    s.set_nonblocking(true)?;
    // Boot storms arrive in bursts; the kernel caps this at net.core.rmem_max.
    let _ = s.set_recv_buffer_size(4 << 20);
    socket::setsockopt(&s, sockopt::Ipv4PacketInfo, &true).map_err(io::Error::from)?;
    s.bind(&SocketAddr::V4(addr).into())?;
    Ok(s.into())
}

/// One non-blocking `recvmsg` with the IP_PKTINFO control message.
pub fn try_recv(fd: &impl AsRawFd, buf: &mut [u8]) -> io::Result<(usize, Arrival)> {
    let mut iov = [IoSliceMut::new(buf)];
    let mut cmsg = nix::cmsg_space!(libc::in_pktinfo);
    let msg = socket::recvmsg::<SockaddrIn>(fd.as_raw_fd(), &mut iov, Some(&mut cmsg), MsgFlags::empty())
        .map_err(io::Error::from)?;
    let src = msg
        .address
        .map(|a| SocketAddrV4::new(a.ip(), a.port()))
        .unwrap_or_else(|| SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0));
    let mut arrival = Arrival {
        src,
        ifindex: 0,
        local: Ipv4Addr::UNSPECIFIED,
    };
    if let Ok(cmsgs) = msg.cmsgs() {
        for c in cmsgs {
            if let ControlMessageOwned::Ipv4PacketInfo(info) = c {
                arrival.ifindex = info.ipi_ifindex;
                arrival.local = Ipv4Addr::from(u32::from_be(info.ipi_spec_dst.s_addr));
            }
        }
    }
    Ok((msg.bytes, arrival))
}

/// Sends `data` to `dst` from local address `from`; `ifindex` (non-zero) pins the
/// egress interface, which a limited broadcast (255.255.255.255) needs on a
/// multi-homed host.
pub fn send(
    fd: &impl AsRawFd,
    data: &[u8],
    dst: SocketAddrV4,
    from: Ipv4Addr,
    ifindex: i32,
) -> io::Result<usize> {
    let info = libc::in_pktinfo {
        ipi_ifindex: ifindex,
        ipi_spec_dst: libc::in_addr {
            s_addr: u32::from(from).to_be(),
        },
        ipi_addr: libc::in_addr { s_addr: 0 },
    };
    let cmsgs = [ControlMessage::Ipv4PacketInfo(&info)];
    let addr = SockaddrIn::from(dst);
    socket::sendmsg(
        fd.as_raw_fd(),
        &[IoSlice::new(data)],
        &cmsgs,
        MsgFlags::empty(),
        Some(&addr),
    )
    .map_err(io::Error::from)
}
