//! A neighbour table and lease list standing in for the kernel's and the DHCP
//! server's ([`PeerFacts`]): in-process tests of the boot path say which host sits
//! at which address, as the kernel would have learnt it from ARP.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::RwLock;

use provisioner_core::model::MacAddr;
use provisioner_core::release::binding::{LeaseFact, PeerFacts};

/// Peer facts from tables the test edits as hosts come and go.
#[derive(Debug, Default)]
pub struct StaticFacts {
    neighbours: RwLock<HashMap<IpAddr, MacAddr>>,
    on_link: RwLock<Vec<IpAddr>>,
    leases: RwLock<Option<HashMap<IpAddr, MacAddr>>>,
}

impl StaticFacts {
    /// The host at `ip` has NIC `mac` (a complete neighbour entry).
    pub fn neighbour_is(&self, ip: &str, mac: &str) {
        if let (Ok(ip), Ok(mac), Ok(mut n)) = (ip.parse(), mac.parse(), self.neighbours.write()) {
            n.insert(ip, mac);
        }
    }

    /// The neighbour entry for `ip` is gone.
    pub fn forget(&self, ip: &str) {
        if let (Ok(ip), Ok(mut n)) = (ip.parse::<IpAddr>(), self.neighbours.write()) {
            n.remove(&ip);
        }
    }

    /// `ip` is on a directly attached network (whether or not it has an entry).
    pub fn attached(&self, ip: &str) {
        if let (Ok(ip), Ok(mut l)) = (ip.parse(), self.on_link.write()) {
            l.push(ip);
        }
    }

    /// Full DHCP mode: `mac` holds the lease on `ip`.
    pub fn lease(&self, ip: &str, mac: &str) {
        if let (Ok(ip), Ok(mac), Ok(mut l)) = (ip.parse(), mac.parse(), self.leases.write()) {
            l.get_or_insert_with(HashMap::new).insert(ip, mac);
        }
    }
}

impl PeerFacts for StaticFacts {
    fn neighbour(&self, ip: IpAddr) -> Option<MacAddr> {
        self.neighbours.read().ok()?.get(&ip.to_canonical()).copied()
    }
    fn on_link(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.neighbours.read().is_ok_and(|n| n.contains_key(&ip))
            || self.on_link.read().is_ok_and(|l| l.contains(&ip))
    }
    fn lease(&self, ip: IpAddr) -> LeaseFact {
        let ip = ip.to_canonical();
        match self.leases.read().ok().as_deref() {
            Some(Some(l)) => l.get(&ip).map_or(LeaseFact::NoLease, |m| LeaseFact::Holder(*m)),
            _ => LeaseFact::NotFullMode,
        }
    }
}
