//! Wiring for the composition root: one [`K0sReady`] workflow per k0s cluster of
//! `infra/`, with the production seams, spawned into the daemon's task set.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use futures::FutureExt;
use futures::future::BoxFuture;
use provisioner_core::catalog::Catalog;
use provisioner_core::cluster::ClusterStore;
use provisioner_core::cluster::bootstrap::Timeouts;
use provisioner_core::cluster::k0s::K0sPlan;
use provisioner_core::inventory::Inventory;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::K0sReady;
use super::io::{InventoryController, KubeNodes, MintedKubeconfig};
use crate::cluster::argocd::{ArgoHandOff, KubeReadyz, Settings};
use crate::cluster::orchestrator::{HandOff, KubeconfigStore};
use crate::config::Config;
use crate::store::AgeKubeconfigs;

/// Pause between polls of a step that is not done yet.
const POLL: Duration = Duration::from_secs(5);

/// Starts the readiness and hand-off workflow of every k0s cluster in `infra/`
/// (none when there is none). Each task runs its workflow to the end, then waits for
/// `shutdown`: the daemon treats a task that ends early as a crashed server. Returns
/// how many were started.
pub fn spawn(
    cfg: &Config,
    catalog: Arc<Catalog>,
    inventory: Arc<dyn Inventory>,
    store: Arc<dyn ClusterStore>,
    tasks: &mut JoinSet<anyhow::Result<()>>,
    shutdown: &CancellationToken,
) -> anyhow::Result<usize> {
    let clusters =
        crate::k0s::load_clusters(&cfg.infra_dir).context("loading infra/ (run `provisioner check`)")?;
    if clusters.is_empty() {
        return Ok(0);
    }
    let secrets = crate::k0s::commands::open_store(cfg)?;
    let custody: Arc<dyn KubeconfigStore> =
        Arc::new(AgeKubeconfigs::open(&cfg.state_dir).context("opening the kubeconfig store")?);
    let settings = match Settings::load(&cfg.gitops_dir) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "no GitOps settings: k0s clusters end once their nodes are Ready");
            None
        }
    };
    let hand_off: Arc<dyn HandOff> = Arc::new(LazyArgo {
        settings: settings.clone(),
        gitops_dir: cfg.gitops_dir.clone(),
        cache_dir: cfg.cache_dir(),
        kubeconfigs: custody.clone(),
        loaded: Mutex::default(),
    });
    let mut started = 0;
    for (name, c) in clusters {
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
                hand_off: settings.as_ref().is_some_and(|s| s.clusters.contains(&name)),
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
            argocd_host: settings.as_ref().map(|s| s.argocd.host.clone()),
        };
        let token = shutdown.clone();
        tasks.spawn(async move {
            match w.run(token.clone()).await {
                Ok(Some(step)) => tracing::info!(cluster = %name, %step, "k0s workflow stopped"),
                Ok(None) => {}
                // The boot path matters more than this workflow: log and keep serving.
                Err(e) => tracing::error!(cluster = %name, error = %e, "k0s workflow stopped"),
            }
            token.cancelled().await;
            Ok(())
        });
        started += 1;
    }
    Ok(started)
}

/// The ArgoCD hand-off, built on first use: the pinned install manifest is read from
/// the image cache (and verified) only when a cluster reaches `HandOff`, so a
/// manifest downloaded after start is picked up by the next retry.
struct LazyArgo {
    settings: Option<Settings>,
    gitops_dir: PathBuf,
    cache_dir: PathBuf,
    kubeconfigs: Arc<dyn KubeconfigStore>,
    loaded: Mutex<Option<Arc<ArgoHandOff>>>,
}

impl std::fmt::Debug for LazyArgo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LazyArgo")
            .field("gitops_dir", &self.gitops_dir)
            .field("cache_dir", &self.cache_dir)
            .finish_non_exhaustive()
    }
}

impl LazyArgo {
    fn load(&self) -> Result<Arc<ArgoHandOff>, String> {
        let mut slot = self.loaded.lock().map_err(|_| "poisoned".to_string())?;
        if let Some(h) = slot.as_ref() {
            return Ok(h.clone());
        }
        let settings = self
            .settings
            .clone()
            .ok_or_else(|| "no gitops/settings.yaml".to_string())?;
        let manifest = settings.load_manifest(&self.cache_dir)?;
        let h = Arc::new(ArgoHandOff {
            settings,
            gitops_dir: self.gitops_dir.clone(),
            manifest: Arc::new(manifest),
            kubeconfigs: self.kubeconfigs.clone(),
            wait_timeout: Duration::from_secs(600),
            poll: Duration::from_secs(2),
        });
        *slot = Some(h.clone());
        Ok(h)
    }
}

impl HandOff for LazyArgo {
    fn hand_off<'a>(&'a self, cluster: &'a str, kubeconfig: &'a [u8]) -> BoxFuture<'a, Result<(), String>> {
        async move {
            let h = self.load()?;
            h.hand_off(cluster, kubeconfig).await
        }
        .boxed()
    }
}
