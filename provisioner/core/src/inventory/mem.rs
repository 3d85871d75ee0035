//! In-memory inventory: for tests and for `provisioner render`.

use std::collections::BTreeMap;
use std::sync::Mutex;

use time::OffsetDateTime;

use super::{
    Change, Inventory, InventoryError, SpentHow, SpentToken, TIMELINE_CAP, TokenRecord, spent_overflow,
};
use crate::model::{MacAddr, Machine, TimelineEvent};

#[derive(Debug, Default)]
struct State {
    machines: BTreeMap<MacAddr, Machine>,
    timelines: BTreeMap<MacAddr, Vec<TimelineEvent>>,
    tokens: BTreeMap<String, TokenRecord>,
    spent: BTreeMap<String, SpentToken>,
}

impl State {
    /// Issues `record` under `key`, revoking the machine's other live tokens of the
    /// same purpose.
    fn issue(&mut self, key: &str, record: &TokenRecord) {
        let replaced: Vec<(String, TokenRecord)> = self
            .tokens
            .iter()
            .filter(|(_, t)| t.mac == record.mac && t.purpose == record.purpose)
            .map(|(k, t)| (k.clone(), t.clone()))
            .collect();
        for (k, t) in replaced {
            self.tokens.remove(&k);
            self.spend(k, t, SpentHow::Revoked, record.issued_at);
        }
        self.spent.remove(key);
        self.tokens.insert(key.to_string(), record.clone());
    }

    /// Keeps `record` as spent under `key`, within the per-machine bound.
    fn spend(&mut self, key: String, record: TokenRecord, how: SpentHow, at: OffsetDateTime) {
        let mac = record.mac;
        self.spent.insert(key, SpentToken { record, how, at });
        for k in spent_overflow(self.spent.iter().map(|(k, t)| (k.as_str(), t)), mac) {
            self.spent.remove(&k);
        }
    }
}

/// An [`Inventory`] held in a mutex; nothing survives the process.
#[derive(Debug, Default)]
pub struct MemInventory {
    state: Mutex<State>,
}

impl MemInventory {
    /// An empty inventory.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, State>, InventoryError> {
        self.state
            .lock()
            .map_err(|_| InventoryError::Backend("in-memory inventory lock poisoned".into()))
    }
}

impl Inventory for MemInventory {
    fn get(&self, mac: MacAddr) -> Result<Option<Machine>, InventoryError> {
        Ok(self.lock()?.machines.get(&mac).cloned())
    }

    fn list(&self) -> Result<Vec<Machine>, InventoryError> {
        Ok(self.lock()?.machines.values().cloned().collect())
    }

    fn apply(&self, mac: MacAddr, change: Change<'_>) -> Result<Option<Machine>, InventoryError> {
        let mut st = self.lock()?;
        let current = st.machines.get(&mac).cloned();
        let update = change(current.clone());
        let events = &update.events;
        for (key, record) in &update.tokens {
            st.issue(key, record);
        }
        let stored = match update.machine {
            Some(new) => {
                st.machines.insert(mac, new.clone());
                Some(new)
            }
            None => current,
        };
        if !events.is_empty() {
            let tl = st.timelines.entry(mac).or_default();
            tl.extend_from_slice(events);
            if tl.len() > TIMELINE_CAP {
                let excess = tl.len() - TIMELINE_CAP;
                tl.drain(..excess);
            }
        }
        Ok(stored)
    }

    fn delete(&self, mac: MacAddr) -> Result<bool, InventoryError> {
        let mut st = self.lock()?;
        st.timelines.remove(&mac);
        st.tokens.retain(|_, t| t.mac != mac);
        st.spent.retain(|_, t| t.record.mac != mac);
        Ok(st.machines.remove(&mac).is_some())
    }

    fn timeline(&self, mac: MacAddr) -> Result<Vec<TimelineEvent>, InventoryError> {
        Ok(self.lock()?.timelines.get(&mac).cloned().unwrap_or_default())
    }

    fn issue_token(&self, key: &str, record: &TokenRecord) -> Result<(), InventoryError> {
        self.lock()?.issue(key, record);
        Ok(())
    }

    fn live_token(&self, key: &str) -> Result<Option<TokenRecord>, InventoryError> {
        Ok(self.lock()?.tokens.get(key).cloned())
    }

    fn drop_tokens(
        &self,
        expired: &dyn Fn(&TokenRecord) -> bool,
        spent_before: OffsetDateTime,
    ) -> Result<usize, InventoryError> {
        let mut st = self.lock()?;
        let before = st.tokens.len() + st.spent.len();
        st.tokens.retain(|_, t| !expired(t));
        st.spent.retain(|_, t| t.at >= spent_before);
        Ok(before - st.tokens.len() - st.spent.len())
    }

    fn take_token(&self, key: &str, now: OffsetDateTime) -> Result<Option<TokenRecord>, InventoryError> {
        let mut st = self.lock()?;
        let taken = st.tokens.remove(key);
        if let Some(t) = &taken {
            st.spend(key.to_string(), t.clone(), SpentHow::Used, now);
        }
        Ok(taken)
    }

    fn spent_token(&self, key: &str) -> Result<Option<SpentToken>, InventoryError> {
        Ok(self.lock()?.spent.get(key).cloned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn battery() {
        super::super::battery::run_all(&|| Box::new(MemInventory::new()));
    }
}
