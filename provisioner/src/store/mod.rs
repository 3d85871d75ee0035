//! Concrete inventory stores. Only this module names `redb`; everything else sees
//! `Arc<dyn Inventory>` (ARCHITECTURE.md).

mod clusters;
mod redb_store;
mod secrets_redb;

pub use redb_store::RedbInventory;
pub use secrets_redb::{RedbSecretStore, load_or_create_identity};
