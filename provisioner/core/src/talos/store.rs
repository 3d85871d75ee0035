//! Where secrets bundles live: a small trait so the daemon, the CLI and tests share
//! one seam. The redb implementation (`crate::store::RedbSecretStore`) encrypts
//! every bundle at rest; [`MemSecretStore`] keeps them in memory for tests.
//! Nothing here logs a bundle or a key.

use std::collections::BTreeMap;
use std::sync::Mutex;

use super::SecretsBundle;

/// Secret-store failures (messages never contain secret material).
#[derive(Debug, thiserror::Error)]
pub enum SecretStoreError {
    /// The backend failed (I/O, lock, corruption).
    #[error("secret store: {0}")]
    Backend(String),
    /// A stored bundle does not decrypt or decode.
    #[error("secret store: bundle for cluster {cluster:?} cannot be read: {message}")]
    Corrupt {
        /// Which cluster.
        cluster: String,
        /// Why (no secret material).
        message: String,
    },
}

/// Secrets bundles by cluster name.
pub trait SecretStore: Send + Sync + std::fmt::Debug {
    /// The bundle of `cluster`, if any.
    fn get(&self, cluster: &str) -> Result<Option<SecretsBundle>, SecretStoreError>;
    /// Stores (replaces) the bundle of `cluster`, durably.
    fn put(&self, cluster: &str, bundle: &SecretsBundle) -> Result<(), SecretStoreError>;
    /// Removes it; returns whether it existed.
    fn delete(&self, cluster: &str) -> Result<bool, SecretStoreError>;
    /// Cluster names with a bundle.
    fn list(&self) -> Result<Vec<String>, SecretStoreError>;
}

/// In-memory store (tests, dry runs).
#[derive(Debug, Default)]
pub struct MemSecretStore {
    bundles: Mutex<BTreeMap<String, SecretsBundle>>,
}

impl MemSecretStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, BTreeMap<String, SecretsBundle>>, SecretStoreError> {
        self.bundles
            .lock()
            .map_err(|_| SecretStoreError::Backend("poisoned lock".into()))
    }
}

impl SecretStore for MemSecretStore {
    fn get(&self, cluster: &str) -> Result<Option<SecretsBundle>, SecretStoreError> {
        Ok(self.lock()?.get(cluster).cloned())
    }
    fn put(&self, cluster: &str, bundle: &SecretsBundle) -> Result<(), SecretStoreError> {
        self.lock()?.insert(cluster.to_string(), bundle.clone());
        Ok(())
    }
    fn delete(&self, cluster: &str) -> Result<bool, SecretStoreError> {
        Ok(self.lock()?.remove(cluster).is_some())
    }
    fn list(&self) -> Result<Vec<String>, SecretStoreError> {
        Ok(self.lock()?.keys().cloned().collect())
    }
}

/// One battery run against every [`SecretStore`] implementation.
pub fn battery(store: &dyn SecretStore, sample: &SecretsBundle) {
    assert_eq!(store.get("genmachine").unwrap(), None);
    store.put("genmachine", sample).unwrap();
    assert_eq!(store.get("genmachine").unwrap().as_ref(), Some(sample));
    let mut other = sample.clone();
    other.trustdinfo.token = "aaaaaa.bbbbbbbbbbbbbbbb".into();
    store.put("lab", &other).unwrap();
    store.put("genmachine", &other).unwrap();
    assert_eq!(
        store.get("genmachine").unwrap().as_ref(),
        Some(&other),
        "put replaces"
    );
    assert_eq!(
        store.list().unwrap(),
        vec!["genmachine".to_string(), "lab".to_string()]
    );
    assert!(store.delete("lab").unwrap());
    assert!(!store.delete("lab").unwrap());
    assert_eq!(store.list().unwrap(), vec!["genmachine".to_string()]);
}
