//! What the inputs decide in the running appliance, built the same way at start and
//! when an adoption rewrote `infra/` ([`crate::ops::adopt::Reloader`]): the boot
//! service's booter, renderers and release policy; full-mode DHCP's reservations
//! for `infra/` nodes; the workflows of armed clusters (`super::workflows`). Secret
//! stores and the encrypted kubeconfig store a newly armed cluster needs are opened
//! here the first time (at start they are opened only for armed clusters).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use provisioner_core::boot::{Booter, CatalogBooter};
use provisioner_core::catalog::{Catalog, ConfigKind};
use provisioner_core::dhcp::Personality;
use provisioner_core::dhcp::full::FullServer;
use provisioner_core::k0s::store::K0sSecretStore;
use provisioner_core::render::config::ConfigRenderer;
use provisioner_core::talos::store::SecretStore;

use super::stores::{Kubeconfigs, Stores, k0s_secrets, talos_secrets};
use super::workflows::Workflows;
use crate::config::Config;
use crate::dhcp::handler::FullSlot;
use crate::images::ImageCache;
use crate::inputs::Inputs;
use crate::ops::adopt::ReloadError;
use crate::service::{BootService, ReleasePolicy, ReleaseSettings};

/// The booter, the renderers and the release policy of one set of inputs.
pub(super) type Parts = (
    (Arc<dyn Booter>, Arc<Catalog>),
    HashMap<ConfigKind, Arc<dyn ConfigRenderer>>,
    ReleasePolicy,
);

/// The Talos and k0s secret stores, once opened.
pub(super) type Secrets = (Option<Arc<dyn SecretStore>>, Option<Arc<dyn K0sSecretStore>>);

/// Builds [`Parts`] from inputs.
pub(super) struct Live {
    cfg: Config,
    cache: ImageCache,
    server_ip: IpAddr,
    facts: Arc<dyn provisioner_core::release::binding::PeerFacts>,
    secrets: Mutex<Secrets>,
    kubeconfigs: Arc<Kubeconfigs>,
    /// Full-mode DHCP's engine, set when DHCP starts (`super::tasks`).
    pub dhcp: FullSlot,
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Live").finish_non_exhaustive()
    }
}

impl Live {
    pub(super) fn new(cfg: &Config, stores: &Stores, cache: &ImageCache, server_ip: IpAddr) -> Self {
        Self {
            cfg: cfg.clone(),
            cache: cache.clone(),
            server_ip,
            facts: Arc::new(crate::sys::netinfo::KernelFacts {
                leases: (cfg.dhcp.mode == Personality::Full).then(|| stores.leases.clone()),
                probe: cfg.peer_binding.arp_probe,
            }),
            secrets: Mutex::new((stores.talos_secrets.clone(), stores.k0s_secrets.clone())),
            kubeconfigs: stores.kubeconfigs.clone(),
            dhcp: FullSlot::default(),
        }
    }

    /// The secret stores opened so far.
    pub(super) fn secrets(&self) -> Secrets {
        self.secrets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Full-mode DHCP's engine for `inputs` (reservations of armed clusters' nodes).
    pub(super) fn full_engine(&self, inputs: &Inputs) -> anyhow::Result<Option<FullServer>> {
        let clusters = &inputs.clusters;
        let mut reservations = crate::dhcp::settings::talos_reservations(&clusters.talos);
        reservations.extend(crate::dhcp::settings::k0s_reservations(&clusters.k0s));
        Ok(self
            .cfg
            .dhcp
            .full_config_with(&reservations)?
            .map(FullServer::new))
    }

    /// What `inputs` decide (secrets of newly armed clusters generated).
    pub(super) fn parts(&self, inputs: &Inputs) -> anyhow::Result<Parts> {
        let cfg = &self.cfg;
        let clusters = &inputs.clusters;
        let booter: Arc<dyn Booter> = Arc::new(CatalogBooter {
            catalog: inputs.catalog.clone(),
            unknown: cfg.unknown_policy.clone(),
        });
        let release = ReleasePolicy::from_settings(
            &ReleaseSettings {
                binding: cfg.peer_binding.enabled,
                retry_secs: cfg.peer_binding.retry_secs,
                admission: cfg.admission,
                approval_window_minutes: cfg.approval_window_minutes,
                api_listen: cfg.api_listen,
            },
            (&clusters.talos, &clusters.k0s),
            self.facts.clone(),
            self.server_ip,
        );
        let (talos, k0s) = {
            let mut held = self
                .secrets
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if held.0.is_none() && !clusters.talos.is_empty() {
                held.0 = Some(talos_secrets(cfg).context("opening the Talos secrets store")?);
            }
            if held.1.is_none() && !clusters.k0s.is_empty() {
                held.1 = Some(k0s_secrets(cfg).context("opening the k0s secrets store")?);
            }
            held.clone()
        };
        if !(clusters.talos.is_empty() && clusters.k0s.is_empty()) {
            self.kubeconfigs
                .make_durable()
                .context("opening the kubeconfig store")?;
        }
        let mut renderers = HashMap::new();
        if let Some(r) = crate::os::talos::renderer(&clusters.talos, talos.as_ref())? {
            renderers.insert(ConfigKind::Talos, r);
        }
        if let Some(r) = crate::os::k0s::renderer(&clusters.k0s, k0s, &self.cache)? {
            renderers.insert(ConfigKind::Flatcar, r);
        }
        Ok(((booter, Arc::new(inputs.catalog.clone())), renderers, release))
    }
}

/// Reloads the inputs into the running appliance.
#[derive(Debug)]
pub(super) struct Reloading {
    pub live: Arc<Live>,
    pub service: Arc<BootService>,
    pub workflows: Arc<Workflows>,
    pub api: Arc<super::live_api::LiveApi>,
}

impl crate::ops::adopt::Reloader for Reloading {
    fn reload(&self) -> Result<(), ReloadError> {
        let inputs = Inputs::load(self.live.cfg.input_dirs()).map_err(|e| ReloadError(e.to_string()))?;
        let (booter, renderers, release) = self
            .live
            .parts(&inputs)
            .map_err(|e| ReloadError(format!("{e:#}")))?;
        let catalog = booter.1.clone();
        self.service.reload(booter, renderers, release);
        // The engine is swapped only when its settings changed: an unchanged one keeps
        // its held offers.
        let slot = &self.live.dhcp;
        let dhcp = self.live.full_engine(&inputs).map(|full| {
            let now = slot.get();
            if full.as_ref().map(FullServer::config) != now.as_deref().map(FullServer::config) {
                slot.set(full);
                tracing::info!("DHCP reservations reloaded");
            }
        });
        let secrets = self.live.secrets();
        self.workflows.arm(&inputs, &catalog, &secrets);
        self.api.update(&self.live.cfg, &inputs, &catalog, &secrets);
        inputs.clusters.warn();
        dhcp.map_err(|e| ReloadError(format!("DHCP keeps its old reservations: {e:#}")))?;
        tracing::info!("inputs reloaded: the next network boots use them");
        Ok(())
    }
}
