//! Where clusters' admin kubeconfigs are kept: fetched from Talos by the bootstrap
//! workflow, minted for k0s from the appliance's CA. They hold cluster-admin
//! credentials, so the daemon's implementation encrypts them at rest; they are
//! deliberately not part of the plain [`super::BootstrapState`].

use std::collections::BTreeMap;
use std::sync::Mutex;

/// Why a kubeconfig could not be stored or read (never its contents).
#[derive(Debug, thiserror::Error)]
pub enum KubeconfigError {
    /// I/O, encryption or a lock failed.
    #[error("kubeconfig store: {0}")]
    Backend(String),
    /// The stored copy exists but does not decrypt with the secrets key.
    #[error("kubeconfig store: {0}: does not decrypt with secrets.key")]
    Undecryptable(String),
}

/// Admin kubeconfigs by cluster name.
pub trait KubeconfigStore: Send + Sync + std::fmt::Debug {
    /// Stores `cluster`'s admin kubeconfig, durably.
    fn put(&self, cluster: &str, kubeconfig: &[u8]) -> Result<(), KubeconfigError>;
    /// `cluster`'s admin kubeconfig, if stored.
    fn get(&self, cluster: &str) -> Result<Option<Vec<u8>>, KubeconfigError>;
}

/// A [`KubeconfigStore`] in memory: nothing survives a restart, so a resumed workflow
/// fetches the kubeconfig again (the state machine does that by itself).
#[derive(Default)]
pub struct MemKubeconfigs(Mutex<BTreeMap<String, Vec<u8>>>);

impl std::fmt::Debug for MemKubeconfigs {
    /// Names the clusters only: kubeconfigs hold admin credentials.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<String> = self
            .0
            .lock()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        f.debug_tuple("MemKubeconfigs").field(&names).finish()
    }
}

impl MemKubeconfigs {
    fn lock(&self) -> Result<std::sync::MutexGuard<'_, BTreeMap<String, Vec<u8>>>, KubeconfigError> {
        self.0
            .lock()
            .map_err(|_| KubeconfigError::Backend("poisoned lock".into()))
    }
}

impl KubeconfigStore for MemKubeconfigs {
    fn put(&self, cluster: &str, kubeconfig: &[u8]) -> Result<(), KubeconfigError> {
        self.lock()?.insert(cluster.to_string(), kubeconfig.to_vec());
        Ok(())
    }

    fn get(&self, cluster: &str) -> Result<Option<Vec<u8>>, KubeconfigError> {
        Ok(self.lock()?.get(cluster).cloned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubeconfig_custody_never_prints_contents() {
        let k = MemKubeconfigs::default();
        k.put("genmachine", b"client-key-data: SECRET").unwrap();
        let shown = format!("{k:?}");
        assert!(
            shown.contains("genmachine") && !shown.contains("SECRET"),
            "{shown}"
        );
        assert_eq!(k.get("genmachine").unwrap().unwrap(), b"client-key-data: SECRET");
        assert_eq!(k.get("beelink").unwrap(), None);
    }
}
