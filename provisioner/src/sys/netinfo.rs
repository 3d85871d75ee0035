//! Facts about the host's network: which address to advertise, and which MAC sits
//! behind a client IP (the kernel's ARP table), so TFTP transfers, which carry no
//! MAC, still land on the right machine's timeline, and so the boot path can tell
//! whether a peer is the machine it names ([`KernelFacts`]).

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use provisioner_core::dhcp::lease::{LeaseState, LeaseStore};
use provisioner_core::model::MacAddr;
use provisioner_core::release::binding::{LeaseFact, PeerFacts};

/// The IPv4 address of `interface`, or of the first up, non-loopback interface.
pub fn detect_server_ip(interface: Option<&str>) -> Option<IpAddr> {
    let addrs = nix::ifaddrs::getifaddrs().ok()?;
    let mut fallback = None;
    for ifa in addrs {
        let Some(v4) = ifa
            .address
            .as_ref()
            .and_then(|a| a.as_sockaddr_in())
            .map(|s| s.ip())
        else {
            continue;
        };
        if v4.is_loopback() {
            continue;
        }
        match interface {
            Some(name) if ifa.interface_name == name => return Some(IpAddr::V4(v4)),
            Some(_) => {}
            None => {
                if fallback.is_none() {
                    fallback = Some(IpAddr::V4(v4));
                }
            }
        }
    }
    fallback
}

/// Looks `ip` up in `/proc/net/arp`.
pub fn arp_lookup(ip: IpAddr) -> Option<MacAddr> {
    let IpAddr::V4(v4) = ip else { return None };
    let text = std::fs::read_to_string("/proc/net/arp").ok()?;
    parse_proc_arp(&text, v4)
}

/// Parses the kernel's ARP table text. Incomplete entries (flags 0x0, all-zero MAC)
/// are ignored.
pub fn parse_proc_arp(text: &str, ip: Ipv4Addr) -> Option<MacAddr> {
    text.lines().skip(1).find_map(|line| {
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.len() < 4 || cols[0].parse::<Ipv4Addr>().ok()? != ip || cols[2] == "0x0" {
            return None;
        }
        let mac: MacAddr = cols[3].parse().ok()?;
        (mac.0 != [0; 6]).then_some(mac)
    })
}

/// The kernel's and the DHCP server's facts for peer binding
/// (`provisioner_core::release::binding`): `/proc/net/arp` (IPv4; this build reads
/// no IPv6 neighbour table, so IPv6 peers count as not checkable), the host's
/// directly attached IPv4 networks, and the full-mode lease store.
#[derive(Debug)]
pub struct KernelFacts {
    /// The lease store when the appliance runs full DHCP.
    pub leases: Option<Arc<dyn LeaseStore>>,
    /// Refresh a missing entry with a probe before answering.
    pub probe: bool,
}

/// How long a probe waits for the kernel to resolve the peer.
const PROBE_WAIT: Duration = Duration::from_millis(300);

impl KernelFacts {
    /// Makes the kernel resolve `ip` (ARP) by sending it one datagram to the discard
    /// port (RFC 863), then waits briefly for a complete entry. Needs no privilege.
    fn probe(ip: Ipv4Addr) -> Option<MacAddr> {
        let sock = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).ok()?;
        let _ = sock.send_to(b"", (ip, 9));
        let started = std::time::Instant::now();
        while started.elapsed() < PROBE_WAIT {
            std::thread::sleep(Duration::from_millis(20));
            if let Some(m) = arp_lookup(IpAddr::V4(ip)) {
                return Some(m);
            }
        }
        None
    }
}

impl PeerFacts for KernelFacts {
    fn neighbour(&self, ip: IpAddr) -> Option<MacAddr> {
        let IpAddr::V4(v4) = ip.to_canonical() else {
            return None;
        };
        arp_lookup(IpAddr::V4(v4)).or_else(|| {
            (self.probe && self.on_link(ip))
                .then(|| Self::probe(v4))
                .flatten()
        })
    }

    fn on_link(&self, ip: IpAddr) -> bool {
        let IpAddr::V4(v4) = ip.to_canonical() else {
            return false;
        };
        let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
            return false;
        };
        addrs.into_iter().any(|ifa| {
            let addr = ifa
                .address
                .as_ref()
                .and_then(|a| a.as_sockaddr_in())
                .map(|s| s.ip());
            let mask = ifa
                .netmask
                .as_ref()
                .and_then(|a| a.as_sockaddr_in())
                .map(|s| s.ip());
            match (addr, mask) {
                (Some(a), Some(m)) if !a.is_loopback() => {
                    let m = u32::from(m);
                    u32::from(a) & m == u32::from(v4) & m
                }
                _ => false,
            }
        })
    }

    fn lease(&self, ip: IpAddr) -> LeaseFact {
        let Some(store) = &self.leases else {
            return LeaseFact::NotFullMode;
        };
        let IpAddr::V4(v4) = ip.to_canonical() else {
            return LeaseFact::NoLease;
        };
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        match store.by_ip(v4) {
            Ok(Some(l)) if l.state == LeaseState::Active && l.holds_address(now) => LeaseFact::Holder(l.mac),
            // A store failure is no evidence for anyone.
            _ => LeaseFact::NoLease,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_facts_leases_and_links() {
        use provisioner_core::dhcp::lease::{Lease, MemLeases};
        let mac: MacAddr = "52:54:00:00:00:07".parse().unwrap();
        let leases = Arc::new(MemLeases::default());
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let lease = |ip: &str, state, expires| Lease {
            mac,
            ip: ip.parse().unwrap(),
            expires,
            hostname: None,
            state,
        };
        leases
            .put(&lease("10.99.0.5", LeaseState::Active, now + 600))
            .unwrap();
        let facts = KernelFacts {
            leases: Some(leases.clone()),
            probe: false,
        };
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(facts.lease(ip("10.99.0.5")), LeaseFact::Holder(mac));
        assert_eq!(
            facts.lease(ip("::ffff:10.99.0.5")),
            LeaseFact::Holder(mac),
            "IPv4-mapped"
        );
        assert_eq!(facts.lease(ip("10.99.0.6")), LeaseFact::NoLease);
        leases
            .put(&lease("10.99.0.5", LeaseState::Released, now + 600))
            .unwrap();
        assert_eq!(
            facts.lease(ip("10.99.0.5")),
            LeaseFact::NoLease,
            "a released lease binds nobody"
        );
        leases
            .put(&lease("10.99.0.5", LeaseState::Active, now - 1))
            .unwrap();
        assert_eq!(
            facts.lease(ip("10.99.0.5")),
            LeaseFact::NoLease,
            "nor an expired one"
        );
        let no_dhcp = KernelFacts {
            leases: None,
            probe: false,
        };
        assert_eq!(no_dhcp.lease(ip("10.99.0.5")), LeaseFact::NotFullMode);
        // Loopback is never "on link", IPv6 has no neighbour table here.
        assert!(!no_dhcp.on_link(ip("127.0.0.1")));
        assert!(!no_dhcp.on_link(ip("fe80::1")));
        assert_eq!(no_dhcp.neighbour(ip("fe80::1")), None);
    }

    #[test]
    fn arp_table() {
        let t = "IP address       HW type     Flags       HW address            Mask     Device\n\
                 10.77.5.20       0x1         0x2         52:54:00:77:00:01     *        br0\n\
                 10.77.5.21       0x1         0x0         00:00:00:00:00:00     *        br0\n";
        assert_eq!(
            parse_proc_arp(t, "10.77.5.20".parse().unwrap())
                .unwrap()
                .to_string(),
            "52:54:00:77:00:01"
        );
        assert_eq!(parse_proc_arp(t, "10.77.5.21".parse().unwrap()), None);
        assert_eq!(parse_proc_arp(t, "10.77.5.22".parse().unwrap()), None);
        assert_eq!(parse_proc_arp("", "10.77.5.22".parse().unwrap()), None);
    }
}
