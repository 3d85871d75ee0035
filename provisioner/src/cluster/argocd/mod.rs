//! The GitOps hand-off: install the pinned ArgoCD on the cluster that hosts it, register
//! clusters, apply the AppProjects and the root app-of-apps from `gitops/`, and never
//! touch the cluster's workloads again (argocd-gitops.md §10).
//!
//! One ArgoCD (on `settings.yaml`'s `argocd.host` cluster) manages every cluster, as
//! in the seed's "central ArgoCD". The host's hand-off installs it and registers the
//! clusters whose kubeconfig is known; another cluster's hand-off registers itself in
//! the host's ArgoCD (a cluster Secret) once the host is up. Either way the cluster
//! Secret carries the `argocd-manager` service-account token [`manager`] sets up in
//! the registered cluster, never the appliance's (expiring) admin certificate.

pub mod cached;
pub mod fetch;
pub mod install;
pub mod manager;
pub mod manifest;
pub mod objects;
pub mod status;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use kube::Client;
use kube::api::DynamicObject;
use provisioner_core::gitops::health::Report;

use self::install::Installer;
use self::manifest::InstallManifest;
use self::manifest::ManifestError;
use crate::cluster::seams::{ApiProbe, CallError, HandOff};
use crate::images::ImageCache;
use provisioner_core::cluster::KubeconfigStore;

pub use crate::gitops::settings::{ArgoPin, Repository, Settings};

impl Settings {
    /// Reads and verifies the cached install manifest.
    pub fn load_manifest(&self, cache: &ImageCache) -> Result<InstallManifest, ManifestError> {
        let path = cache.argocd_manifest(&self.argocd.version);
        let bytes = std::fs::read(&path).map_err(|source| ManifestError::Missing {
            path: path.clone(),
            url: self.argocd.url.clone(),
            sha256: self.argocd.sha256.clone(),
            source,
        })?;
        InstallManifest::parse(&bytes, &self.argocd.sha256).map_err(|e| ManifestError::Cached {
            path,
            source: Box::new(e),
        })
    }
}

/// A kube client for the cluster behind `kubeconfig` (its current context).
pub async fn client_for(kubeconfig: &[u8]) -> Result<Client, CallError> {
    let text = std::str::from_utf8(kubeconfig).map_err(|e| CallError::BadKubeconfig(e.to_string()))?;
    let kc =
        kube::config::Kubeconfig::from_yaml(text).map_err(|e| CallError::BadKubeconfig(e.to_string()))?;
    let mut cfg = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
        .await
        .map_err(|e| CallError::BadKubeconfig(e.to_string()))?;
    cfg.connect_timeout = Some(Duration::from_secs(5));
    cfg.read_timeout = Some(Duration::from_secs(30));
    // kube retries 429/503/504 with backoff by default; against an aggregated API
    // whose backend is down that turns one call into a stall of tens of seconds
    // (argocd-gitops.md §6). Our callers retry on their own, bounded by step timeouts.
    cfg.default_retry = false;
    Client::try_from(cfg).map_err(|e| CallError::Client(e.to_string()))
}

/// The longest a registration waits for the token controller (`argocd cluster add`
/// waits 30 s by default); shorter when the hand-off's own waits are.
pub const TOKEN_WAIT: Duration = Duration::from_secs(60);

/// `GET /readyz` through the kubeconfig's credentials.
#[derive(Debug, Default)]
pub struct KubeReadyz;

impl ApiProbe for KubeReadyz {
    fn readyz<'a>(&'a self, kubeconfig: &'a [u8]) -> BoxFuture<'a, Result<(), CallError>> {
        async move {
            let client = client_for(kubeconfig).await?;
            let req = http::Request::get("/readyz")
                .body(Vec::new())
                .map_err(|e| CallError::Api(e.to_string()))?;
            let body = client
                .request_text(req)
                .await
                .map_err(|e| CallError::Api(format!("/readyz: {e}")))?;
            if body.trim() == "ok" {
                Ok(())
            } else {
                Err(CallError::Api(format!("/readyz answered {:?}", body.trim())))
            }
        }
        .boxed()
    }
}

/// The [`HandOff`] the orchestrator runs: ArgoCD from the pinned manifest plus the
/// GitOps objects built by [`objects`].
#[derive(Clone)]
pub struct ArgoHandOff {
    /// `gitops/settings.yaml`.
    pub settings: Settings,
    /// `gitops/` (AppProjects are read from `core/appProjects`).
    pub gitops_dir: PathBuf,
    /// The verified install manifest.
    pub manifest: Arc<InstallManifest>,
    /// Kubeconfigs of every cluster (the host's, and the ones it registers).
    pub kubeconfigs: Arc<dyn KubeconfigStore>,
    /// Per wait inside the install.
    pub wait_timeout: Duration,
    /// Between readiness polls.
    pub poll: Duration,
}

impl std::fmt::Debug for ArgoHandOff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArgoHandOff")
            .field("settings", &self.settings)
            .field("gitops_dir", &self.gitops_dir)
            .field("manifest_objects", &self.manifest.objects.len())
            .field("kubeconfigs", &self.kubeconfigs)
            .finish_non_exhaustive()
    }
}

impl ArgoHandOff {
    fn installer(&self, client: Client) -> Installer {
        let mut i = Installer::new(client, self.manifest.resources.clone());
        i.wait_timeout = self.wait_timeout;
        i.poll = self.poll;
        i
    }

    /// The cluster Secret for `cluster`, after setting up its `argocd-manager` token
    /// through `kubeconfig` (the appliance's admin kubeconfig of that cluster).
    async fn registration(&self, cluster: &str, kubeconfig: &[u8]) -> Result<DynamicObject, CallError> {
        manager::register(cluster, kubeconfig, self.wait_timeout.min(TOKEN_WAIT), self.poll)
            .await
            .map_err(|e| CallError::HandOff(e.to_string()))
    }

    async fn run(&self, cluster: &str, kubeconfig: &[u8]) -> Result<(), CallError> {
        let host = &self.settings.argocd.host;
        if cluster == host {
            let mut objs = vec![
                objects::repository_secret(&self.settings),
                objects::in_cluster_secret(host),
            ];
            for other in self.settings.clusters.iter().filter(|c| *c != host) {
                let Ok(Some(kc)) = self.kubeconfigs.get(other) else {
                    continue;
                };
                // Best effort: that cluster may not be up yet, and it registers itself
                // in its own hand-off once this one is done; its absence must not fail
                // the host's.
                match self.registration(other, &kc).await {
                    Ok(secret) => objs.push(secret),
                    Err(e) => {
                        tracing::warn!(cluster = %other, error = %e, "not registered now; its own hand-off will")
                    }
                }
            }
            objs.extend(
                objects::app_projects(&self.gitops_dir).map_err(|e| CallError::HandOff(e.to_string()))?,
            );
            objs.push(objects::root_application(&self.settings));
            let client = client_for(kubeconfig).await?;
            self.installer(client)
                .install(&self.manifest, &objs)
                .await
                .map_err(|e| CallError::HandOff(e.to_string()))
        } else {
            let host_kc = self.kubeconfigs.get(host)?.ok_or_else(|| {
                CallError::Waiting(format!(
                    "waiting for the ArgoCD host cluster {host} to have a kubeconfig"
                ))
            })?;
            let secret = self.registration(cluster, kubeconfig).await?;
            let client = client_for(&host_kc).await?;
            self.installer(client)
                .apply(&secret)
                .await
                .map_err(|e| CallError::HandOff(e.to_string()))
        }
    }
}

impl ArgoHandOff {
    async fn status(&self, cluster: &str, kubeconfig: &[u8]) -> Result<Report, CallError> {
        let host = &self.settings.argocd.host;
        let expected = status::expected(&self.gitops_dir, &self.settings, cluster)
            .map_err(|e| CallError::HandOff(e.to_string()))?;
        let client = if cluster == host {
            client_for(kubeconfig).await?
        } else {
            let kc = self.kubeconfigs.get(host)?.ok_or_else(|| {
                CallError::Waiting(format!("no kubeconfig of the ArgoCD host cluster {host}"))
            })?;
            client_for(&kc).await?
        };
        status::report(client, &expected, cluster, host).await
    }
}

impl HandOff for ArgoHandOff {
    fn hand_off<'a>(
        &'a self,
        cluster: &'a str,
        kubeconfig: &'a [u8],
    ) -> BoxFuture<'a, Result<(), CallError>> {
        self.run(cluster, kubeconfig).boxed()
    }

    fn argo_status<'a>(
        &'a self,
        cluster: &'a str,
        kubeconfig: &'a [u8],
    ) -> BoxFuture<'a, Result<Report, CallError>> {
        self.status(cluster, kubeconfig).boxed()
    }
}
