//! `peer_binding:`, `admission:` and `approval_window_minutes:`: who gets a machine
//! config (see `provisioner_core::release` and deploy/README.md "Config release:
//! who gets a machine config").

use serde::{Deserialize, Serialize};

/// `peer_binding:` settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PeerBinding {
    /// Answer config tokens, configs and callbacks only to the machine itself
    /// (neighbour entry or DHCP lease). On by default; `false` serves anyone who
    /// knows a MAC and is meant for closed test rigs only (`serve` warns).
    pub enabled: bool,
    /// Refresh a missing neighbour entry with the appliance's own probe (a datagram
    /// that makes the kernel ARP for the peer) before refusing.
    pub arp_probe: bool,
    /// Seconds a refused or waiting machine waits before it asks again.
    pub retry_secs: u32,
}

impl Default for PeerBinding {
    fn default() -> Self {
        Self {
            enabled: true,
            arp_probe: true,
            retry_secs: 10,
        }
    }
}
