//! The Talos [`ConfigRenderer`]: what `/config/<token>` serves to a machine whose
//! profile has `config: talos`. The profile's `cluster` names the `infra/` cluster
//! and the group's metadata `hostname` names the node; the secrets come from the
//! encrypted store. The rendered document is the same one `provisioner talos config
//! --node <hostname>` prints.

use std::collections::BTreeMap;
use std::sync::Arc;

use provisioner_core::boot::InstallPlan;
use provisioner_core::model::MacAddr;
use provisioner_core::render::config::{ConfigRenderer, RenderError, check_bound, cluster_node};
use provisioner_core::talos::{self, TalosCluster};

use provisioner_core::talos::store::SecretStore;

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
    fn render(&self, mac: MacAddr, plan: &InstallPlan) -> Result<String, RenderError> {
        let (name, host) = cluster_node(mac, plan, "talos")?;
        let cluster = self.clusters.get(name).ok_or_else(|| {
            RenderError::NoNode(format!(
                "profile {:?}: no Talos cluster {name:?} in infra/",
                plan.profile.id
            ))
        })?;
        let node = cluster
            .node(host)
            .ok_or_else(|| RenderError::NoNode(format!("cluster {name:?} has no node {host:?}")))?;
        check_bound(host, node.mac, mac)?;
        let secrets = self
            .secrets
            .get(name)
            .map_err(|e| RenderError::Failed(e.to_string()))?
            .ok_or_else(|| {
                RenderError::Missing(format!(
                    "no secrets bundle for cluster {name:?} (run `provisioner talos secrets gen`)"
                ))
            })?;
        let cfg = talos::render(cluster, host, &secrets).map_err(|e| RenderError::Failed(e.to_string()))?;
        Ok(cfg.to_yaml())
    }
}
