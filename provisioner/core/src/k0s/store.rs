//! The k0s secrets of one cluster and the store seam they live behind.
//!
//! [`K0sSecrets`] holds the CA, the service-account key pair and the worker join
//! tokens. The daemon's `store::FileSecretStore` keeps them age-encrypted, one file
//! per cluster; [`MemSecretStore`] keeps them in memory for tests. Nothing here logs a
//! key or token.

use std::collections::BTreeMap;
use std::sync::Mutex;

use super::token::BootstrapToken;
use serde::{Deserialize, Serialize};

/// One cluster's secrets.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct K0sSecrets {
    /// Cluster CA certificate (PEM).
    pub ca_crt: String,
    /// Cluster CA key (PKCS#8 PEM).
    pub ca_key: String,
    /// Service-account signing key (PKCS#8 PEM).
    pub sa_key: String,
    /// Service-account public key (SPKI PEM).
    pub sa_pub: String,
    /// Worker join tokens by hostname.
    #[serde(default)]
    pub worker_tokens: BTreeMap<String, BootstrapToken>,
}

impl std::fmt::Debug for K0sSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("K0sSecrets")
            .field("workers", &self.worker_tokens.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// Store failures (never secret material).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// I/O or encryption failed.
    #[error("k0s secret store: {0}")]
    Backend(String),
    /// A stored file does not decrypt or decode.
    #[error("k0s secret store: secrets of cluster {cluster:?} cannot be read: {message}")]
    Corrupt {
        /// Which cluster.
        cluster: String,
        /// Why.
        message: String,
    },
}

/// k0s secrets by cluster name.
pub trait K0sSecretStore: Send + Sync + std::fmt::Debug {
    /// The secrets of `cluster`, if any.
    fn get(&self, cluster: &str) -> Result<Option<K0sSecrets>, StoreError>;
    /// Stores (replaces) them, durably.
    fn put(&self, cluster: &str, s: &K0sSecrets) -> Result<(), StoreError>;
}

/// In-memory store (tests).
#[derive(Debug, Default)]
pub struct MemSecretStore(Mutex<BTreeMap<String, K0sSecrets>>);

impl K0sSecretStore for MemSecretStore {
    fn get(&self, cluster: &str) -> Result<Option<K0sSecrets>, StoreError> {
        let m = self
            .0
            .lock()
            .map_err(|_| StoreError::Backend("poisoned lock".into()))?;
        Ok(m.get(cluster).cloned())
    }
    fn put(&self, cluster: &str, s: &K0sSecrets) -> Result<(), StoreError> {
        let mut m = self
            .0
            .lock()
            .map_err(|_| StoreError::Backend("poisoned lock".into()))?;
        m.insert(cluster.into(), s.clone());
        Ok(())
    }
}
