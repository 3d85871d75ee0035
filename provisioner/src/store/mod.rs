//! Concrete stores. Only this module names `redb`; everything else sees
//! `Arc<dyn Inventory>`, `Arc<dyn ApiTokenStore>` and `Arc<dyn LeaseStore>` (ARCHITECTURE.md).

mod age_files;
mod clusters;
mod group_commit;
mod healing;
mod k0s_secrets;
mod redb_inv_tokens;
mod redb_leases;
mod redb_migrate;
mod redb_step;
mod redb_store;
mod redb_tokens;
mod secrets_key;
mod secrets_redb;

pub use age_files::{AgeFileError, AgeFiles, AgeKubeconfigs};
pub use healing::{Healed, Healing, OpenError, StoreDown, Unhealthy};
pub use k0s_secrets::FileSecretStore;
pub use redb_leases::RedbLeases;
pub use redb_store::RedbInventory;
pub use redb_tokens::RedbApiTokens;
pub use secrets_key::{CREDENTIAL as SECRETS_KEY_CREDENTIAL, KeyOrigin, SecretsKey};
pub use secrets_redb::{RedbSecretStore, load_or_create_identity};

/// Directory under the state directory whose files are backed up verbatim.
pub const SECRETS_DIR: &str = "secrets";
