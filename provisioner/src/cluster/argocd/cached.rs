//! [`CachedArgo`]: the GitOps hand-off as the daemon runs it, with `gitops/settings.yaml`
//! and the pinned install manifest read from the image cache on first use (and kept),
//! so a manifest pulled or imported after `serve` started is picked up.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;

use super::{ArgoHandOff, Settings};
use crate::cluster::seams::{CallError, HandOff};
use crate::cluster::settings::BootstrapSettings;
use crate::images::ImageCache;
use provisioner_core::cluster::KubeconfigStore;

/// The ArgoCD hand-off, loaded on first use: `gitops/settings.yaml` and the verified
/// install manifest from the image cache (`images pull argocd`). Loading waits for
/// the step that needs it, so a manifest imported after start is picked up.
pub struct CachedArgo {
    gitops_dir: PathBuf,
    cache: ImageCache,
    kubeconfigs: Arc<dyn KubeconfigStore>,
    wait_timeout: Duration,
    poll: Duration,
    loaded: tokio::sync::Mutex<Option<Arc<ArgoHandOff>>>,
}

impl std::fmt::Debug for CachedArgo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedArgo")
            .field("gitops_dir", &self.gitops_dir)
            .field("cache", &self.cache)
            .finish_non_exhaustive()
    }
}

impl CachedArgo {
    /// Reads `gitops_dir` and the manifest from `cache` when first needed.
    pub fn new(
        gitops_dir: PathBuf,
        cache: ImageCache,
        kubeconfigs: Arc<dyn KubeconfigStore>,
        settings: &BootstrapSettings,
    ) -> Self {
        Self {
            gitops_dir,
            cache,
            kubeconfigs,
            wait_timeout: Duration::from_secs(settings.argocd_wait_secs.max(1)),
            poll: Duration::from_millis(settings.poll_ms.clamp(10, 2_000)),
            loaded: tokio::sync::Mutex::new(None),
        }
    }

    /// The hand-off, loading settings and manifest (sha256-verified) if not yet done.
    pub async fn get(&self) -> Result<Arc<ArgoHandOff>, CallError> {
        let mut slot = self.loaded.lock().await;
        if let Some(a) = slot.as_ref() {
            return Ok(a.clone());
        }
        let (gitops, cache) = (self.gitops_dir.clone(), self.cache.clone());
        let (settings, manifest) = tokio::task::spawn_blocking(move || {
            let settings = Settings::load(&gitops).map_err(|e| CallError::Waiting(e.to_string()))?;
            let manifest = settings.load_manifest(&cache).map_err(|e| {
                CallError::Waiting(format!(
                    "ArgoCD install manifest: {e}; run `provisioner images pull argocd` (or `images import argocd <file>`)"
                ))
            })?;
            Ok::<_, CallError>((settings, manifest))
        })
        .await
        .map_err(|e| CallError::Waiting(format!("loading the ArgoCD manifest: {e}")))??;
        let argo = Arc::new(ArgoHandOff {
            settings,
            gitops_dir: self.gitops_dir.clone(),
            manifest: Arc::new(manifest),
            kubeconfigs: self.kubeconfigs.clone(),
            wait_timeout: self.wait_timeout,
            poll: self.poll,
        });
        *slot = Some(argo.clone());
        Ok(argo)
    }
}

impl HandOff for CachedArgo {
    fn hand_off<'a>(
        &'a self,
        cluster: &'a str,
        kubeconfig: &'a [u8],
    ) -> BoxFuture<'a, Result<(), CallError>> {
        async move { self.get().await?.hand_off(cluster, kubeconfig).await }.boxed()
    }

    fn argo_status<'a>(
        &'a self,
        cluster: &'a str,
        kubeconfig: &'a [u8],
    ) -> BoxFuture<'a, Result<provisioner_core::gitops::health::Report, CallError>> {
        async move { self.get().await?.argo_status(cluster, kubeconfig).await }.boxed()
    }
}
