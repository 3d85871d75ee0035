//! Facts about the host's network: which address to advertise, and which MAC sits
//! behind a client IP (the kernel's ARP table), so TFTP transfers, which carry no
//! MAC, still land on the right machine's timeline.

use std::net::{IpAddr, Ipv4Addr};

use provisioner_core::model::MacAddr;

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

#[cfg(test)]
mod tests {
    use super::*;

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
