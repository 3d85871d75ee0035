//! What the operator API knows of the clusters, rebuilt from the inputs at start and
//! after every reload (`super::reload`: an adoption may arm a cluster): the cluster
//! list (with each cluster's "not armed" reason), the credentials (talosconfig,
//! kubeconfig) and the Talos node resetter. Without this, a cluster armed by an
//! adoption stayed "not armed" in `/api/v1/clusters`, had no credentials and could
//! not be reset over the Talos API until a restart.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::future::BoxFuture;
use provisioner_core::catalog::Catalog;
use provisioner_core::model::Machine;

use super::reload::Secrets;
use super::stores::Kubeconfigs;
use crate::cluster::seams::{ClusterCredentials, CredentialError, NodeResetter, ResetError};
use crate::config::Config;
use crate::inputs::Inputs;
use crate::ops::clusters::{ClusterFiles, cluster_files};
use crate::ops::credentials::StoreCredentials;

fn now<T: ?Sized>(slot: &RwLock<Arc<T>>) -> Arc<T> {
    slot.read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone()
}

fn set<T: ?Sized>(slot: &RwLock<Arc<T>>, value: Arc<T>) {
    *slot.write().unwrap_or_else(std::sync::PoisonError::into_inner) = value;
}

/// The API's cluster views of the inputs loaded last.
#[derive(Debug)]
pub(super) struct LiveApi {
    pub clusters: ClusterFiles,
    pub credentials: Arc<LiveCredentials>,
    pub resetter: Arc<LiveResetter>,
    kubeconfigs: Arc<Kubeconfigs>,
}

impl LiveApi {
    /// The views of `inputs`.
    pub fn new(
        cfg: &Config,
        inputs: &Inputs,
        catalog: &Arc<Catalog>,
        secrets: &Secrets,
        kubeconfigs: Arc<Kubeconfigs>,
    ) -> Self {
        let (credentials, resetter) = (
            credentials(inputs, secrets, &kubeconfigs),
            resetter(cfg, inputs, catalog, secrets),
        );
        Self {
            clusters: cluster_files(&inputs.infra).into(),
            credentials: Arc::new(LiveCredentials(RwLock::new(Arc::new(credentials)))),
            resetter: Arc::new(LiveResetter(RwLock::new(resetter))),
            kubeconfigs,
        }
    }

    /// Rebuilds the views from reloaded `inputs`.
    pub fn update(&self, cfg: &Config, inputs: &Inputs, catalog: &Arc<Catalog>, secrets: &Secrets) {
        self.clusters.set(cluster_files(&inputs.infra));
        set(
            &self.credentials.0,
            Arc::new(credentials(inputs, secrets, &self.kubeconfigs)),
        );
        set(&self.resetter.0, resetter(cfg, inputs, catalog, secrets));
    }
}

fn credentials(inputs: &Inputs, secrets: &Secrets, kubeconfigs: &Arc<Kubeconfigs>) -> StoreCredentials {
    StoreCredentials {
        talos: inputs.clusters.talos.clone(),
        talos_secrets: secrets.0.clone(),
        kubeconfigs: kubeconfigs.clone(),
        k0s: inputs.clusters.k0s.clone(),
        k0s_secrets: secrets.1.clone(),
    }
}

/// Re-imaging a Talos node: Reset over the Talos API with the cluster's os:admin
/// identity from its secrets bundle (none before a Talos cluster is armed).
fn resetter(
    cfg: &Config,
    inputs: &Inputs,
    catalog: &Arc<Catalog>,
    secrets: &Secrets,
) -> Arc<dyn NodeResetter> {
    match &secrets.0 {
        Some(s) => Arc::new(
            crate::os::talos::reset::TalosResetter::new(
                inputs.clusters.talos.clone(),
                Arc::new(crate::os::talos::api::BundleIdentity::new(s.clone())),
                cfg.talos.api_port,
                Duration::from_secs(5),
            )
            .with_catalog(catalog.clone()),
        ),
        None => Arc::new(NoneArmed),
    }
}

/// [`ClusterCredentials`] of the inputs loaded last.
#[derive(Debug)]
pub(super) struct LiveCredentials(RwLock<Arc<StoreCredentials>>);

impl ClusterCredentials for LiveCredentials {
    fn owns(&self, cluster: &str) -> bool {
        now(&self.0).owns(cluster)
    }

    fn talosconfig(&self, cluster: &str) -> Result<Vec<u8>, CredentialError> {
        now(&self.0).talosconfig(cluster)
    }

    fn kubeconfig(&self, cluster: &str) -> Result<Vec<u8>, CredentialError> {
        now(&self.0).kubeconfig(cluster)
    }
}

/// The [`NodeResetter`] of the inputs loaded last.
#[derive(Debug)]
pub(super) struct LiveResetter(RwLock<Arc<dyn NodeResetter>>);

impl NodeResetter for LiveResetter {
    fn reset<'a>(
        &'a self,
        machine: &'a Machine,
        cluster: Option<&'a str>,
    ) -> BoxFuture<'a, Result<String, ResetError>> {
        let inner = now(&self.0);
        Box::pin(async move { inner.reset(machine, cluster).await })
    }
}

/// No Talos cluster is armed: no identity to reset a node with.
#[derive(Debug)]
struct NoneArmed;

impl NodeResetter for NoneArmed {
    fn reset<'a>(
        &'a self,
        machine: &'a Machine,
        cluster: Option<&'a str>,
    ) -> BoxFuture<'a, Result<String, ResetError>> {
        let why = format!(
            "no armed Talos cluster{}: no identity to reset {} with over the Talos API; reset it by hand (talosctl reset), it then reinstalls",
            cluster
                .map(|c| format!(" ({c} is not armed)"))
                .unwrap_or_default(),
            machine.mac
        );
        Box::pin(async move { Err(ResetError(why)) })
    }
}
