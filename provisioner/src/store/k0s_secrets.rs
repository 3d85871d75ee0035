//! The k0s secrets of one cluster and where they live.
//!
//! [`K0sSecrets`] holds the CA, the service-account key pair and the worker join
//! tokens. [`FileSecretStore`] keeps one age-encrypted file per cluster under
//! `<state_dir>/secrets/k0s/` (X25519 + ChaCha20-Poly1305, the age v1 format,
//! crates.md §5.6), written atomically (temp file, fsync, rename); the age
//! identity is `<state_dir>/secrets/secrets.key` (0600), shared with the Talos store. The
//! files alone reveal nothing, and backups pick them up with `secrets/`.
//! Nothing here logs a key or token.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;

use provisioner_core::k0s::token::BootstrapToken;
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

/// Age-encrypted files, one per cluster, under `<state_dir>/secrets/k0s`.
#[derive(Debug)]
pub struct FileSecretStore(crate::store::AgeFiles);

impl FileSecretStore {
    /// The store under `<state_dir>/secrets/k0s`, keyed by the age identity in
    /// `<state_dir>/secrets/secrets.key` (the Talos store's, created 0600 if absent).
    pub fn open(state_dir: &Path) -> Result<Self, StoreError> {
        crate::store::AgeFiles::open(state_dir, "k0s")
            .map(Self)
            .map_err(|e| StoreError::Backend(e.to_string()))
    }

    /// The store under `<state_dir>/secrets/k0s`, with the configuration's secrets
    /// key (`crate::store::SecretsKey`).
    pub fn open_keyed(state_dir: &Path, key: &crate::store::SecretsKey) -> Result<Self, StoreError> {
        crate::store::AgeFiles::open_keyed(state_dir, "k0s", key)
            .map(Self)
            .map_err(|e| StoreError::Backend(e.to_string()))
    }
}

impl K0sSecretStore for FileSecretStore {
    fn get(&self, cluster: &str) -> Result<Option<K0sSecrets>, StoreError> {
        let corrupt = |message: &str| StoreError::Corrupt {
            cluster: cluster.into(),
            message: message.into(),
        };
        let pt = match self.0.read(cluster) {
            Ok(None) => return Ok(None),
            Ok(Some(pt)) => pt,
            Err(crate::store::AgeFileError::Undecryptable { .. }) => {
                return Err(corrupt("does not decrypt with secrets.key"));
            }
            Err(e) => return Err(StoreError::Backend(e.to_string())),
        };
        serde_json::from_slice(&pt)
            .map(Some)
            .map_err(|_| corrupt("not a k0s secrets document"))
    }

    fn put(&self, cluster: &str, s: &K0sSecrets) -> Result<(), StoreError> {
        let pt = serde_json::to_vec(s).map_err(|e| StoreError::Backend(e.to_string()))?;
        self.0
            .write(cluster, &pt)
            .map_err(|e| StoreError::Backend(e.to_string()))
    }
}
