//! Every store the daemon uses, opened once ([`Stores::open`]) and handed to the
//! modules that need them as trait objects. No other module opens a store (the CLI's
//! one-shot commands open what they need for themselves, in `crate::cmd`).

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use anyhow::Context;
use provisioner_core::cluster::{KubeconfigError, KubeconfigStore, MemKubeconfigs};
use provisioner_core::dhcp::Personality;
use provisioner_core::dhcp::lease::{GroupCommit, LeaseStore, MemLeases};
use provisioner_core::k0s::store::K0sSecretStore;
use provisioner_core::talos::store::SecretStore;

use crate::config::Config;
use crate::inputs::arming::Clusters;
use crate::store::{
    AgeKubeconfigs, FileSecretStore, RedbApiTokens, RedbInventory, RedbLeases, RedbSecretStore,
};

/// The opened stores.
#[derive(Clone)]
pub struct Stores {
    /// Machines, timelines and the cluster workflows' state (one redb file).
    pub inventory: Arc<RedbInventory>,
    /// DHCP leases, in memory and on disk; concurrent ACKs share one fsync. In memory
    /// (and empty) unless DHCP runs in `full` mode: `leases.redb` is opened only then.
    pub leases: Arc<dyn LeaseStore>,
    /// The lease file under `leases` (`full` mode), for the health check.
    pub lease_file: Option<Arc<RedbLeases>>,
    /// API tokens (hashed).
    pub tokens: Arc<RedbApiTokens>,
    /// Talos secrets bundles, when there are armed Talos clusters.
    pub talos_secrets: Option<Arc<dyn SecretStore>>,
    /// k0s PKI and join tokens, when there are armed k0s clusters.
    pub k0s_secrets: Option<Arc<dyn K0sSecretStore>>,
    /// Admin kubeconfigs (fetched from Talos, minted for k0s).
    pub kubeconfigs: Arc<Kubeconfigs>,
}

impl std::fmt::Debug for Stores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stores").finish_non_exhaustive()
    }
}

impl Stores {
    /// The redb files the health check writes to (`/healthz`, watchdog).
    pub fn healed(&self) -> Vec<Arc<dyn crate::store::Healed>> {
        let mut out: Vec<Arc<dyn crate::store::Healed>> = vec![self.inventory.clone()];
        if let Some(l) = &self.lease_file {
            out.push(l.clone());
        }
        out
    }

    /// Creates the state directory (owner only: inventory and secrets live there)
    /// and opens every store in it; secret stores only for armed `clusters`.
    pub fn open(cfg: &Config, clusters: &Clusters) -> anyhow::Result<Self> {
        let state = &cfg.state_dir;
        std::fs::create_dir_all(state).with_context(|| state.display().to_string())?;
        std::fs::set_permissions(state, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("chmod 700 {}", state.display()))?;
        let inventory = Arc::new(RedbInventory::open(&cfg.inventory_path())?);
        // Files root left in the state directory (import/restore run as root) become
        // the service user's where possible; a failure here is not fatal to serving.
        if let Err(e) = crate::sys::state::adopt(state) {
            tracing::warn!(error = %e, dir = %state.display(), "could not secure the state directory");
        }
        let lease_file = (cfg.dhcp.mode == Personality::Full)
            .then(|| RedbLeases::open(&state.join("leases.redb")).map(Arc::new))
            .transpose()?;
        let leases: Arc<dyn LeaseStore> = match &lease_file {
            Some(file) => Arc::new(GroupCommit::new(file.clone())?),
            None => Arc::new(MemLeases::new()),
        };
        let key = cfg.secrets_key();
        let talos_secrets = (!clusters.talos.is_empty())
            .then(|| talos_secrets(cfg))
            .transpose()?;
        let k0s_secrets = (!clusters.k0s.is_empty())
            .then(|| -> anyhow::Result<Arc<dyn K0sSecretStore>> {
                Ok(Arc::new(FileSecretStore::open_keyed(state, &key)?))
            })
            .transpose()?;
        let kubeconfigs = Arc::new(Kubeconfigs {
            state: state.clone(),
            key,
            inner: std::sync::RwLock::new((false, Arc::new(MemKubeconfigs::default()))),
        });
        if !(clusters.talos.is_empty() && clusters.k0s.is_empty()) {
            kubeconfigs.make_durable()?;
        }
        Ok(Self {
            inventory,
            leases,
            lease_file,
            tokens: Arc::new(RedbApiTokens::new(&cfg.api_tokens_path())),
            talos_secrets,
            k0s_secrets,
            kubeconfigs,
        })
    }
}

/// The admin kubeconfigs: in memory while no cluster is armed (opening the encrypted
/// store creates the secrets key, which a state without clusters does not need), the
/// encrypted files from the moment one is, at start or when an adoption arms one
/// (`super::reload`). Nothing is written before that: only armed clusters' workflows
/// write kubeconfigs.
pub struct Kubeconfigs {
    state: std::path::PathBuf,
    key: crate::store::SecretsKey,
    /// (encrypted files?, the store now)
    inner: std::sync::RwLock<(bool, Arc<dyn KubeconfigStore>)>,
}

impl std::fmt::Debug for Kubeconfigs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kubeconfigs").finish_non_exhaustive()
    }
}

impl Kubeconfigs {
    fn now(&self) -> Arc<dyn KubeconfigStore> {
        self.inner
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .1
            .clone()
    }

    /// Switches to the encrypted files (once; later calls do nothing).
    pub fn make_durable(&self) -> anyhow::Result<()> {
        let mut inner = self
            .inner
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !inner.0 {
            *inner = (
                true,
                Arc::new(AgeKubeconfigs::open_keyed(&self.state, &self.key)?),
            );
        }
        Ok(())
    }
}

impl KubeconfigStore for Kubeconfigs {
    fn put(&self, cluster: &str, kubeconfig: &[u8]) -> Result<(), KubeconfigError> {
        self.now().put(cluster, kubeconfig)
    }

    fn get(&self, cluster: &str) -> Result<Option<Vec<u8>>, KubeconfigError> {
        self.now().get(cluster)
    }
}

/// The Talos secrets bundles: `<state>/secrets/secrets.redb`, encrypted with the
/// configuration's secrets key (the directory owner-only).
pub fn talos_secrets(cfg: &Config) -> anyhow::Result<Arc<dyn SecretStore>> {
    let dir = cfg.state_dir.join(crate::store::SECRETS_DIR);
    std::fs::create_dir_all(&dir).with_context(|| dir.display().to_string())?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("chmod 700 {}", dir.display()))?;
    Ok(Arc::new(RedbSecretStore::open_keyed(
        &dir.join("secrets.redb"),
        &cfg.secrets_key(),
    )?))
}

/// The k0s secret store (`<state>/secrets/k0s`, encrypted).
pub fn k0s_secrets(cfg: &Config) -> anyhow::Result<Arc<dyn K0sSecretStore>> {
    Ok(Arc::new(FileSecretStore::open_keyed(
        &cfg.state_dir,
        &cfg.secrets_key(),
    )?))
}
