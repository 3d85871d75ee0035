//! Concrete inventory stores. Only this module names `redb`; everything else sees
//! `Arc<dyn Inventory>` (ARCHITECTURE.md).

mod clusters;
mod redb_store;

pub use redb_store::RedbInventory;
