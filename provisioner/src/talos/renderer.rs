//! The Talos [`ConfigRenderer`]: what `/config/<token>` serves to a machine whose
//! profile has `config: talos`. The profile's `cluster` names the `infra/` cluster
//! and the group's metadata `hostname` names the node; the secrets come from the
//! encrypted store. The rendered document is the same one `provisioner talos config
//! --node <hostname>` prints.

use std::collections::BTreeMap;
use std::sync::Arc;

use provisioner_core::boot::InstallPlan;
use provisioner_core::model::MacAddr;
use provisioner_core::render::config::ConfigRenderer;
use provisioner_core::talos::{self, TalosCluster};

use super::store::SecretStore;

/// Renders Talos machine configs for the boot path.
#[derive(Debug)]
pub struct TalosRenderer {
    clusters: BTreeMap<String, TalosCluster>,
    secrets: Arc<dyn SecretStore>,
}

impl TalosRenderer {
    /// A renderer over the Talos clusters of `infra/` and a secret store.
    pub fn new(clusters: BTreeMap<String, TalosCluster>, secrets: Arc<dyn SecretStore>) -> Self {
        Self { clusters, secrets }
    }
}

impl ConfigRenderer for TalosRenderer {
    fn render(&self, mac: MacAddr, plan: &InstallPlan) -> Result<String, String> {
        let profile = &plan.profile.id;
        let name = plan
            .profile
            .cluster
            .as_deref()
            .ok_or_else(|| format!("profile {profile:?} has config talos but no `cluster`"))?;
        let cluster = self
            .clusters
            .get(name)
            .ok_or_else(|| format!("profile {profile:?}: no Talos cluster {name:?} in infra/"))?;
        let host = plan
            .metadata
            .get("hostname")
            .ok_or_else(|| format!("the group selecting {mac} has no metadata `hostname`"))?;
        let node = cluster
            .node(host)
            .ok_or_else(|| format!("cluster {name:?} has no node {host:?}"))?;
        // A node pinned to a MAC serves its config to that MAC only.
        if let Some(want) = node.mac
            && want != mac
        {
            return Err(format!("node {host:?} is bound to {want}, not {mac}"));
        }
        let secrets = self
            .secrets
            .get(name)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| {
                format!("no secrets bundle for cluster {name:?} (run `provisioner talos secrets gen`)")
            })?;
        let cfg = talos::render(cluster, host, &secrets).map_err(|e| e.to_string())?;
        Ok(cfg.to_yaml())
    }
}
