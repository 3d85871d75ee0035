//! Cluster credentials for admins: a fresh `os:admin` talosconfig minted from a Talos
//! cluster's secrets bundle, and the cluster-admin kubeconfig (for Talos the one the
//! bootstrap orchestrator fetched and keeps encrypted; for k0s one minted from the
//! appliance-owned PKI). Served only to admin tokens by the API; never logged.

use std::collections::BTreeMap;
use std::sync::Arc;

use provisioner_core::k0s::K0sCluster;
use provisioner_core::talos::TalosCluster;
use time::OffsetDateTime;

use provisioner_core::cluster::KubeconfigStore;
use provisioner_core::k0s::store::K0sSecretStore;
use provisioner_core::talos::store::SecretStore;

use crate::cluster::seams::{ClusterCredentials, CredentialError};

/// [`ClusterCredentials`] over the appliance's encrypted stores.
pub struct StoreCredentials {
    /// Talos clusters of `infra/`.
    pub talos: BTreeMap<String, TalosCluster>,
    /// Their secrets bundles (`None` without Talos clusters).
    pub talos_secrets: Option<Arc<dyn SecretStore>>,
    /// Kubeconfigs the orchestrator fetched.
    pub kubeconfigs: Arc<dyn KubeconfigStore>,
    /// k0s clusters of `infra/`.
    pub k0s: BTreeMap<String, K0sCluster>,
    /// Their appliance-owned PKI (`None` without k0s clusters).
    pub k0s_secrets: Option<Arc<dyn K0sSecretStore>>,
}

impl std::fmt::Debug for StoreCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreCredentials")
            .field("talos", &self.talos.keys().collect::<Vec<_>>())
            .field("k0s", &self.k0s.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

fn store_err(e: impl std::fmt::Display) -> CredentialError {
    CredentialError::Store(e.to_string())
}

impl ClusterCredentials for StoreCredentials {
    fn owns(&self, cluster: &str) -> bool {
        self.talos.contains_key(cluster) || self.k0s.contains_key(cluster)
    }

    fn talosconfig(&self, cluster: &str) -> Result<Vec<u8>, CredentialError> {
        let Some(c) = self.talos.get(cluster) else {
            return Err(if self.k0s.contains_key(cluster) {
                CredentialError::NotAvailable(format!("{cluster:?} is a k0s cluster: it has no talosconfig"))
            } else {
                CredentialError::NoCluster(cluster.into())
            });
        };
        let bundle = match &self.talos_secrets {
            Some(s) => s.get(cluster).map_err(store_err)?,
            None => None,
        }
        .ok_or_else(|| CredentialError::NotAvailable(format!("{cluster:?} has no secrets bundle yet")))?;
        crate::os::talos::talosconfig(c, &bundle, OffsetDateTime::now_utc())
            .map(String::into_bytes)
            .map_err(store_err)
    }

    fn kubeconfig(&self, cluster: &str) -> Result<Vec<u8>, CredentialError> {
        if self.talos.contains_key(cluster) {
            return self.kubeconfigs.get(cluster).map_err(store_err)?.ok_or_else(|| {
                CredentialError::NotAvailable(format!(
                    "no kubeconfig for {cluster:?} yet: the bootstrap has not fetched it"
                ))
            });
        }
        let c = self
            .k0s
            .get(cluster)
            .ok_or_else(|| CredentialError::NoCluster(cluster.into()))?;
        let s = match &self.k0s_secrets {
            Some(s) => s.get(cluster).map_err(store_err)?,
            None => None,
        }
        .ok_or_else(|| CredentialError::NotAvailable(format!("{cluster:?} has no k0s PKI yet")))?;
        let url = c.api_url().ok_or_else(|| {
            CredentialError::NotAvailable(format!("{cluster:?}: the controller has no ipAddress"))
        })?;
        let kc = crate::pki::k0s::admin_kubeconfig(cluster, &url, &s, OffsetDateTime::now_utc())
            .map_err(store_err)?;
        Ok(kc.to_yaml().into_bytes())
    }
}
