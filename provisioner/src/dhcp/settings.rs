//! The `dhcp:` section of the configuration file, and its validation into the
//! core's [`FullConfig`].

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use provisioner_core::dhcp::Personality;
use provisioner_core::dhcp::bootfile::BootFiles;
use provisioner_core::dhcp::full::{FullConfig, PoolGuard, PoolPolicy, Reservation, Subnet};
use provisioner_core::k0s::K0sCluster;
use provisioner_core::model::MacAddr;
use provisioner_core::talos::TalosCluster;
use serde::{Deserialize, Serialize};

/// A dynamic range, inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolRange {
    /// First address.
    pub start: Ipv4Addr,
    /// Last address.
    pub end: Ipv4Addr,
}

/// One static reservation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReservationEntry {
    /// The client.
    pub mac: MacAddr,
    /// Its address.
    pub ip: Ipv4Addr,
    /// Option 12 to send.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
}

/// `dhcp:` settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DhcpSettings {
    /// `off` (external DHCP), `proxy` or `full`.
    pub mode: Personality,
    /// Interface to bind (SO_BINDTODEVICE); defaults to the top-level `interface`.
    /// Without one the sockets take every interface and IP_PKTINFO tells them apart.
    pub interface: Option<String>,
    /// Address the sockets bind (0.0.0.0 to receive broadcasts).
    pub listen: Ipv4Addr,
    /// DHCP server port (67).
    pub port: u16,
    /// PXE boot server port (4011); 0 disables it.
    pub pxe_port: u16,
    /// `full`: the subnet served, e.g. `10.0.0.0/24`.
    pub subnet: Option<Subnet>,
    /// `full`: dynamic range; without it only reservations get addresses.
    pub pool: Option<PoolRange>,
    /// `full`: option 3.
    pub router: Option<Ipv4Addr>,
    /// `full`: option 6.
    pub dns: Vec<Ipv4Addr>,
    /// `full`: option 15.
    pub domain: Option<String>,
    /// `full`: lease time in seconds.
    pub lease_time_secs: u32,
    /// `full`: static reservations.
    pub reservations: Vec<ReservationEntry>,
    /// `full`: who gets pool addresses: `any`, `boot_clients` (network-boot clients
    /// and machines in the inventory; the default) or `known` (the inventory only).
    pub pool_policy: PoolPolicy,
    /// `full`: offers per second to MACs with no machine record, reservation or
    /// lease, all together (0: no limit).
    pub unknown_offer_rate: u32,
    /// `full`: burst of those offers.
    pub unknown_offer_burst: u32,
    /// Binary names per architecture.
    pub boot_files: BootFiles,
    /// MACs that get no PXE boot file (only iPXE and UEFI HTTP Boot answers), so
    /// firmware with both falls through to HTTP Boot.
    pub http_boot_only: Vec<MacAddr>,
    /// `full`: start even if another DHCP server answers the probe.
    pub force: bool,
    /// `full`: how long the startup probe listens for other servers (0 skips it).
    pub probe_secs: u64,
    /// Requests handled at once; more are dropped and counted (load shedding).
    pub max_in_flight: usize,
    /// Sustained packets per second accepted from one MAC.
    pub per_mac_rate: u32,
    /// Burst accepted from one MAC.
    pub per_mac_burst: u32,
}

impl Default for DhcpSettings {
    fn default() -> Self {
        Self {
            mode: Personality::Off,
            interface: None,
            listen: Ipv4Addr::UNSPECIFIED,
            port: 67,
            pxe_port: 4011,
            subnet: None,
            pool: None,
            router: None,
            dns: Vec::new(),
            domain: None,
            lease_time_secs: 3600,
            reservations: Vec::new(),
            pool_policy: PoolPolicy::default(),
            unknown_offer_rate: PoolGuard::default().unknown_offer_rate,
            unknown_offer_burst: PoolGuard::default().unknown_offer_burst,
            boot_files: BootFiles::default(),
            http_boot_only: Vec::new(),
            force: false,
            probe_secs: 3,
            max_in_flight: 256,
            per_mac_rate: 10,
            per_mac_burst: 30,
        }
    }
}

/// The `dhcp:` settings do not make a working `full` server; the message names the
/// field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DhcpConfigError(pub String);

impl From<&str> for DhcpConfigError {
    fn from(why: &str) -> Self {
        Self(why.to_string())
    }
}

impl DhcpSettings {
    /// Checks the `full` settings and builds the engine's config (`None` in the
    /// other modes). Errors name the field.
    pub fn full_config(&self) -> Result<Option<FullConfig>, DhcpConfigError> {
        self.full_config_with(&[])
    }

    /// Like [`full_config`](Self::full_config), plus reservations from `infra/`
    /// ([`talos_reservations`]): the config's own entries win for a MAC, infra
    /// entries outside the subnet are left out, and one address for two MACs is an
    /// error naming both.
    pub fn full_config_with(
        &self,
        infra: &[ReservationEntry],
    ) -> Result<Option<FullConfig>, DhcpConfigError> {
        if self.mode != Personality::Full {
            return Ok(None);
        }
        let subnet = self
            .subnet
            .ok_or(DhcpConfigError::from("dhcp.subnet is required in full mode"))?;
        let in_subnet = |ip: Ipv4Addr, what: &str| {
            if subnet.contains_host(ip) {
                Ok(())
            } else {
                Err(DhcpConfigError(format!(
                    "{what} {ip} is not a host address of dhcp.subnet {subnet}"
                )))
            }
        };
        if let Some(p) = self.pool {
            in_subnet(p.start, "dhcp.pool.start")?;
            in_subnet(p.end, "dhcp.pool.end")?;
            if u32::from(p.start) > u32::from(p.end) {
                return Err(DhcpConfigError(format!(
                    "dhcp.pool: start {} is after end {}",
                    p.start, p.end
                )));
            }
        }
        if let Some(r) = self.router {
            in_subnet(r, "dhcp.router")?;
        }
        if self.lease_time_secs < 4 {
            return Err("dhcp.lease_time_secs must be at least 4".into());
        }
        let mut reservations = BTreeMap::new();
        let mut seen = BTreeMap::new();
        let own: std::collections::BTreeSet<MacAddr> = self.reservations.iter().map(|r| r.mac).collect();
        let from_infra = infra
            .iter()
            .filter(|r| !own.contains(&r.mac) && subnet.contains_host(r.ip));
        for r in self.reservations.iter().chain(from_infra) {
            in_subnet(r.ip, &format!("dhcp.reservations[{}].ip", r.mac))?;
            if let Some(other) = seen.insert(r.ip, r.mac) {
                return Err(DhcpConfigError(format!(
                    "dhcp.reservations: {} is reserved for both {other} and {}",
                    r.ip, r.mac
                )));
            }
            let res = Reservation {
                ip: r.ip,
                hostname: r.hostname.clone(),
            };
            if reservations.insert(r.mac, res).is_some() {
                return Err(DhcpConfigError(format!(
                    "dhcp.reservations: {} appears twice",
                    r.mac
                )));
            }
        }
        Ok(Some(FullConfig {
            subnet,
            pool: self.pool.map(|p| (p.start, p.end)),
            router: self.router,
            dns: self.dns.clone(),
            domain: self.domain.clone(),
            lease_secs: self.lease_time_secs,
            reservations,
            guard: PoolGuard {
                policy: self.pool_policy,
                unknown_offer_rate: self.unknown_offer_rate,
                unknown_offer_burst: self.unknown_offer_burst,
            },
        }))
    }
}

/// Reservations from the Talos cluster files in `infra/`: every node with a `mac`
/// and an `ipAddress` (the first of a comma-separated list, without a prefix
/// length) gets that address, named after its hostname. k0s nodes: see
/// [`k0s_reservations`].
pub fn talos_reservations(clusters: &BTreeMap<String, TalosCluster>) -> Vec<ReservationEntry> {
    clusters
        .values()
        .flat_map(|c| &c.nodes)
        .filter_map(|n| {
            let mac = n.mac?;
            let first = n.ip_address.split(',').next()?.trim();
            let ip = first.split('/').next()?.parse().ok()?;
            Some(ReservationEntry {
                mac,
                ip,
                hostname: (!n.hostname.is_empty()).then(|| n.hostname.clone()),
            })
        })
        .collect()
}

/// Reservations from the k0s cluster files in `infra/`: every node with a `mac` and
/// an IPv4 `ipAddress` gets that address, named after its hostname. The controller's
/// address is the API endpoint, certificate SAN and join URL, so it must not move.
pub fn k0s_reservations(clusters: &BTreeMap<String, K0sCluster>) -> Vec<ReservationEntry> {
    clusters
        .values()
        .flat_map(|c| &c.nodes)
        .filter_map(|n| match (n.mac, n.ip_address) {
            (Some(mac), Some(std::net::IpAddr::V4(ip))) => Some(ReservationEntry {
                mac,
                ip,
                hostname: Some(n.hostname.clone()),
            }),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full() -> DhcpSettings {
        DhcpSettings {
            mode: Personality::Full,
            subnet: Some("10.9.0.0/24".parse().unwrap()),
            pool: Some(PoolRange {
                start: "10.9.0.100".parse().unwrap(),
                end: "10.9.0.150".parse().unwrap(),
            }),
            ..DhcpSettings::default()
        }
    }

    #[test]
    fn full_validation_names_the_field() {
        assert!(full().full_config().unwrap().is_some());
        assert_eq!(DhcpSettings::default().full_config().unwrap(), None);
        let mut s = full();
        s.subnet = None;
        assert!(s.full_config().unwrap_err().0.contains("dhcp.subnet"));
        let mut s = full();
        s.pool = Some(PoolRange {
            start: "10.9.1.1".parse().unwrap(),
            end: "10.9.0.150".parse().unwrap(),
        });
        assert!(s.full_config().unwrap_err().0.contains("dhcp.pool.start"));
        let mut s = full();
        let mac: MacAddr = "52:54:00:00:00:01".parse().unwrap();
        s.reservations = vec![
            ReservationEntry {
                mac,
                ip: "10.9.0.5".parse().unwrap(),
                hostname: None,
            },
            ReservationEntry {
                mac,
                ip: "10.9.0.6".parse().unwrap(),
                hostname: None,
            },
        ];
        assert!(s.full_config().unwrap_err().0.contains("appears twice"));
    }
}

#[cfg(test)]
mod infra_tests {
    use provisioner_core::talos::cluster::TalosNode;

    use super::*;

    fn node(host: &str, mac: Option<&str>, ip: &str) -> TalosNode {
        TalosNode {
            hostname: host.into(),
            ip_address: ip.into(),
            mac: mac.map(|m| m.parse().unwrap()),
            ..TalosNode::default()
        }
    }

    #[test]
    fn talos_nodes_become_reservations_and_config_wins() {
        let mut c = TalosCluster {
            cluster_name: "lab".into(),
            ..TalosCluster::default()
        };
        c.nodes = vec![
            node("cp1", Some("52:54:00:00:00:11"), "10.9.0.11/24, 10.9.0.99"),
            node("w1", Some("52:54:00:00:00:12"), "10.9.0.12"),
            node("nomac", None, "10.9.0.13"),
            node("elsewhere", Some("52:54:00:00:00:14"), "192.0.2.1"),
        ];
        let infra = talos_reservations(&BTreeMap::from([("lab".to_string(), c)]));
        assert_eq!(infra.len(), 3, "nodes without a MAC are skipped: {infra:?}");
        assert_eq!(
            infra[0].ip,
            "10.9.0.11".parse::<Ipv4Addr>().unwrap(),
            "first address, no prefix"
        );
        let mut s = DhcpSettings {
            mode: Personality::Full,
            subnet: Some("10.9.0.0/24".parse().unwrap()),
            ..DhcpSettings::default()
        };
        s.reservations = vec![ReservationEntry {
            mac: "52:54:00:00:00:12".parse().unwrap(),
            ip: "10.9.0.50".parse().unwrap(),
            hostname: None,
        }];
        let full = s.full_config_with(&infra).unwrap().unwrap();
        let r = |m: &str| {
            full.reservations
                .get(&m.parse().unwrap())
                .map(|r| (r.ip.to_string(), r.hostname.clone()))
        };
        assert_eq!(
            r("52:54:00:00:00:11"),
            Some(("10.9.0.11".into(), Some("cp1".into())))
        );
        assert_eq!(
            r("52:54:00:00:00:12"),
            Some(("10.9.0.50".into(), None)),
            "the config wins"
        );
        assert_eq!(r("52:54:00:00:00:14"), None, "outside the subnet: left out");
        s.reservations[0].ip = "10.9.0.11".parse().unwrap();
        assert!(
            s.full_config_with(&infra)
                .unwrap_err()
                .0
                .contains("reserved for both")
        );
    }
}

#[cfg(test)]
mod k0s_infra_tests {
    use super::*;

    #[test]
    fn k0s_nodes_become_reservations_and_config_wins() {
        let text = "distribution: k0s\nclusterName: lab\nk0sVersion: v1.36.3+k0s.2\nflatcarVersion: 4459.2.0\nnodes:\n  - { hostname: c1, controlPlane: true, ipAddress: 10.9.0.21, mac: \"52:54:00:00:02:01\" }\n  - { hostname: w1, ipAddress: 10.9.0.22, mac: \"52:54:00:00:02:02\" }\n  - { hostname: nomac, ipAddress: 10.9.0.23 }\n  - { hostname: noip, mac: \"52:54:00:00:02:04\" }\n  - { hostname: v6, ipAddress: \"fd00::5\", mac: \"52:54:00:00:02:05\" }\n  - { hostname: elsewhere, ipAddress: 192.0.2.9, mac: \"52:54:00:00:02:06\" }\n";
        let c = crate::os::k0s::parse_cluster(text).unwrap();
        let infra = k0s_reservations(&BTreeMap::from([("lab".to_string(), c)]));
        let macs: Vec<String> = infra.iter().map(|r| r.mac.to_string()).collect();
        assert_eq!(
            macs,
            ["52:54:00:00:02:01", "52:54:00:00:02:02", "52:54:00:00:02:06"],
            "nodes without a MAC or an IPv4 address are skipped"
        );
        let mut s = DhcpSettings {
            mode: Personality::Full,
            subnet: Some("10.9.0.0/24".parse().unwrap()),
            ..DhcpSettings::default()
        };
        s.reservations = vec![ReservationEntry {
            mac: "52:54:00:00:02:02".parse().unwrap(),
            ip: "10.9.0.50".parse().unwrap(),
            hostname: None,
        }];
        let full = s.full_config_with(&infra).unwrap().unwrap();
        let r = |m: &str| {
            full.reservations
                .get(&m.parse().unwrap())
                .map(|r| (r.ip.to_string(), r.hostname.clone()))
        };
        assert_eq!(
            r("52:54:00:00:02:01"),
            Some(("10.9.0.21".into(), Some("c1".into()))),
            "the controller keeps its API address"
        );
        assert_eq!(
            r("52:54:00:00:02:02"),
            Some(("10.9.0.50".into(), None)),
            "the config wins"
        );
        assert_eq!(r("52:54:00:00:02:06"), None, "outside the subnet: left out");
        s.reservations[0].ip = "10.9.0.21".parse().unwrap();
        assert!(
            s.full_config_with(&infra)
                .unwrap_err()
                .0
                .contains("reserved for both")
        );
    }

    #[test]
    fn the_beelink_file_reserves_every_node() {
        let infra = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../infra");
        let clusters = crate::os::k0s::load_clusters(&infra).unwrap();
        let r = k0s_reservations(&clusters);
        let beelink = &clusters["beelink"];
        assert_eq!(r.len(), beelink.nodes.len(), "{r:?}");
        for n in &beelink.nodes {
            assert!(
                r.iter().any(|e| Some(e.mac) == n.mac
                    && Some(std::net::IpAddr::V4(e.ip)) == n.ip_address
                    && e.hostname.as_deref() == Some(n.hostname.as_str())),
                "{} not reserved: {r:?}",
                n.hostname
            );
        }
    }
}
