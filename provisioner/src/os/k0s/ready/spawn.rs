//! Wiring for the composition root: one [`K0sReady`] workflow per k0s cluster of
//! `infra/`, with the production seams, returned as futures the composition root
//! spawns into its own task set (so this module needs no error type of the edge).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use std::collections::BTreeMap;

use provisioner_core::catalog::Catalog;
use provisioner_core::cluster::ClusterStore;
use provisioner_core::cluster::bootstrap::Timeouts;
use provisioner_core::inventory::Inventory;
use provisioner_core::k0s::K0sCluster;
use provisioner_core::k0s::store::K0sSecretStore;
use provisioner_core::k0s::workflow::K0sPlan;
use tokio_util::sync::CancellationToken;

use super::K0sReady;
use super::io::{InventoryController, KubeNodes, MintedKubeconfig};
use crate::cluster::argocd::cached::CachedArgo;
use crate::cluster::argocd::{KubeReadyz, Settings};
use crate::cluster::seams::HandOff;
use provisioner_core::cluster::KubeconfigStore;

/// Pause between polls of a step that is not done yet.
const POLL: Duration = Duration::from_secs(5);

/// The seams the k0s workflows share with the Talos supervisor (opened once by the
/// composition root).
#[derive(Debug, Clone)]
pub struct Shared {
    /// Encrypted admin kubeconfigs (custody of the minted ones).
    pub kubeconfigs: Arc<dyn KubeconfigStore>,
    /// The ArgoCD hand-off, loaded on first use.
    pub argo: Arc<CachedArgo>,
}

/// What the k0s workflows are built from (opened and loaded once by the composition
/// root).
#[derive(Debug)]
pub struct Wiring<'a> {
    /// The armed k0s clusters.
    pub clusters: &'a BTreeMap<String, K0sCluster>,
    /// `gitops/settings.yaml`, if there is one (else clusters end once their nodes are Ready).
    pub settings: Option<&'a Settings>,
    /// The k0s secret store.
    pub secrets: Arc<dyn K0sSecretStore>,
    /// The catalog.
    pub catalog: Arc<Catalog>,
    /// The machines.
    pub inventory: Arc<dyn Inventory>,
    /// Where workflow state persists.
    pub store: Arc<dyn ClusterStore>,
    /// The seams shared with the Talos supervisor.
    pub shared: &'a Shared,
}

/// The readiness and hand-off workflow of every k0s cluster in `infra/` (none when
/// there is none), one future each for the caller to spawn. Each runs its workflow to
/// the end; a `Failed` one waits for an operator retry and runs again; then it waits
/// for `shutdown` (the daemon treats a task that ends early as a crashed server).
pub fn workflows(
    w: Wiring<'_>,
    shutdown: &CancellationToken,
) -> Vec<impl Future<Output = ()> + Send + 'static> {
    let Wiring {
        clusters,
        settings,
        secrets,
        catalog,
        inventory,
        store,
        shared,
    } = w;
    let custody = shared.kubeconfigs.clone();
    let hand_off: Arc<dyn HandOff> = shared.argo.clone();
    let mut out = Vec::new();
    for (name, c) in clusters.clone() {
        let (Some(controller), Some(api_url)) = (c.controller(), c.api_url()) else {
            tracing::warn!(cluster = %name, "k0s cluster without a controller address: no readiness workflow");
            continue;
        };
        let w = K0sReady {
            plan: K0sPlan {
                cluster: name.clone(),
                nodes: c
                    .nodes
                    .iter()
                    .map(|n| (n.hostname.clone(), n.ip_address))
                    .collect(),
                hand_off: settings.is_some_and(|s| s.clusters.contains(&name)),
                timeouts: Timeouts::default(),
                poll: POLL,
            },
            store: store.clone(),
            controller: Arc::new(InventoryController {
                inventory: inventory.clone(),
                catalog: catalog.clone(),
                cluster: name.clone(),
                hostname: controller.hostname.clone(),
                mac: controller.mac,
            }),
            kubeconfig: Arc::new(MintedKubeconfig {
                cluster: name.clone(),
                api_url,
                secrets: secrets.clone(),
                custody: custody.clone(),
            }),
            api: Arc::new(KubeReadyz),
            nodes: Arc::new(KubeNodes),
            hand_off: hand_off.clone(),
            argocd_host: settings.map(|s| s.argocd.host.clone()),
        };
        let token = shutdown.clone();
        out.push(async move {
            w.run_retrying(&name, token.clone()).await;
            token.cancelled().await;
        });
    }
    out
}
