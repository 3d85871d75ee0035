//! In-memory token store, for tests.

use std::collections::BTreeMap;
use std::sync::Mutex;

use super::{ApiTokenRecord, ApiTokenStore};
use crate::inventory::InventoryError;

/// An [`ApiTokenStore`] held in a mutex; nothing survives the process.
#[derive(Debug, Default)]
pub struct MemApiTokens {
    by_key: Mutex<BTreeMap<String, ApiTokenRecord>>,
}

impl MemApiTokens {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, BTreeMap<String, ApiTokenRecord>>, InventoryError> {
        self.by_key
            .lock()
            .map_err(|_| InventoryError::Backend("in-memory token store lock poisoned".into()))
    }
}

impl ApiTokenStore for MemApiTokens {
    fn insert(&self, key: &str, record: &ApiTokenRecord) -> Result<(), InventoryError> {
        let mut m = self.lock()?;
        if m.contains_key(key) || m.values().any(|r| r.id == record.id) {
            return Err(InventoryError::Backend(format!(
                "token id {} already exists",
                record.id
            )));
        }
        m.insert(key.to_string(), record.clone());
        Ok(())
    }

    fn lookup(&self, key: &str) -> Result<Option<ApiTokenRecord>, InventoryError> {
        Ok(self.lock()?.get(key).cloned())
    }

    fn list(&self) -> Result<Vec<ApiTokenRecord>, InventoryError> {
        let mut v: Vec<_> = self.lock()?.values().cloned().collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(v)
    }

    fn revoke(&self, id: &str) -> Result<bool, InventoryError> {
        let mut m = self.lock()?;
        let before = m.len();
        m.retain(|_, r| r.id != id);
        Ok(m.len() != before)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn battery() {
        super::super::battery::run_all(&|| Box::new(super::MemApiTokens::new()));
    }
}
