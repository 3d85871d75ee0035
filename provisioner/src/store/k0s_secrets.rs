//! The k0s secrets at rest: one age-encrypted file per cluster under
//! `<state_dir>/secrets/k0s/` (X25519 + ChaCha20-Poly1305, the age v1 format,
//! crates.md §5.6), written atomically (temp file, fsync, rename); the age identity is
//! the secrets key ([`super::SecretsKey`]), shared with the Talos store. The files
//! alone reveal nothing, and backups pick them up with `secrets/`. Nothing here logs a
//! key or token.

use std::path::Path;

use provisioner_core::k0s::store::{K0sSecretStore, K0sSecrets, StoreError};

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
