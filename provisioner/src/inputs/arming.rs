//! Which clusters of `infra/` may act on a network. A cluster whose nodes still carry
//! the placeholder MACs of the shipped example data (`02:…`, infra/README.md) is not
//! armed: `serve` generates no secrets for it, dials none of its nodes (no bootstrap
//! supervisor, no k0s readiness workflow, no Talos `Reset`), offers no DHCP
//! reservation for it and renders no config for it. So the README's try-it command
//! (`serve --unprivileged` on the repository's data) never touches the homelab's
//! 192.168.1.x addresses on whatever network a newcomer runs it. The rule itself is
//! pure and lives in `provisioner_core::infra`.

use std::collections::BTreeMap;

use provisioner_core::infra::Infra;
use provisioner_core::k0s::K0sCluster;
use provisioner_core::talos::TalosCluster;

/// The clusters of `infra/`, split by arming.
#[derive(Debug, Clone, Default)]
pub struct Clusters {
    /// Armed Talos clusters.
    pub talos: BTreeMap<String, TalosCluster>,
    /// Armed k0s clusters.
    pub k0s: BTreeMap<String, K0sCluster>,
    /// Clusters that are not armed, with why (`cluster not armed: replace the
    /// placeholder MACs (host mac, …)`).
    pub unarmed: BTreeMap<String, String>,
}

impl Clusters {
    /// The armed clusters of `infra` (loaded and validated with the other inputs).
    pub fn of(infra: &Infra) -> Self {
        let armed = infra.clone().armed_only();
        Self {
            talos: armed.talos,
            k0s: armed.k0s,
            unarmed: infra.unarmed(),
        }
    }

    /// Says, once per cluster, which ones stay idle and why.
    pub fn warn(&self) {
        for (name, why) in &self.unarmed {
            tracing::warn!(cluster = %name, "{why}; no secrets, no DHCP reservation, no node dialled");
        }
    }
}
