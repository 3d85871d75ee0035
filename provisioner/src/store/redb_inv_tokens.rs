//! The inventory's one-time token tables on redb, inside the caller's write
//! transaction: issuing (revoking the machine's previous token of the same purpose),
//! spending, forgetting a machine's tokens and garbage collection.
//!
//! Two index tables keyed by (MAC, token key) make every per-machine step a range
//! read of that machine's few entries instead of a scan that decodes every token of
//! the fleet (which an unauthenticated `/ipxe` flood would otherwise pay per
//! request). Stores written before the indexes get them rebuilt at open
//! ([`TokenTables::reindex`]), so no schema bump is needed.

use provisioner_core::inventory::{InventoryError, SpentHow, SpentToken, TokenRecord, spent_overflow};
use provisioner_core::model::MacAddr;
use redb::{ReadableTable, ReadableTableMetadata, TableDefinition, WriteTransaction};
use time::OffsetDateTime;

use super::redb_store::{SPENT, TOKENS, backend, encode};

/// (MAC, key) of every live token.
const TOKENS_BY_MAC: TableDefinition<'_, (&str, &str), ()> = TableDefinition::new("tokens_by_mac");
/// (MAC, key) of every spent token.
const SPENT_BY_MAC: TableDefinition<'_, (&str, &str), ()> = TableDefinition::new("spent_tokens_by_mac");

/// Token keys are lower-case hex: every key of a MAC sorts below this.
const KEY_MAX: &str = "~";

type Bytes<'t> = redb::Table<'t, &'static str, &'static [u8]>;
type Index<'t> = redb::Table<'t, (&'static str, &'static str), ()>;

/// The four token tables of one write transaction.
pub(super) struct TokenTables<'t> {
    tokens: Bytes<'t>,
    spent: Bytes<'t>,
    tokens_idx: Index<'t>,
    spent_idx: Index<'t>,
}

/// The keys indexed under `mac`.
fn keys_of(idx: &Index<'_>, mac: &str) -> Result<Vec<String>, InventoryError> {
    let mut out = Vec::new();
    for row in idx.range((mac, "")..(mac, KEY_MAX)).map_err(backend)? {
        let (k, _) = row.map_err(backend)?;
        out.push(k.value().1.to_string());
    }
    Ok(out)
}

impl<'t> TokenTables<'t> {
    pub(super) fn open(txn: &'t WriteTransaction) -> Result<Self, InventoryError> {
        Ok(Self {
            tokens: txn.open_table(TOKENS).map_err(backend)?,
            spent: txn.open_table(SPENT).map_err(backend)?,
            tokens_idx: txn.open_table(TOKENS_BY_MAC).map_err(backend)?,
            spent_idx: txn.open_table(SPENT_BY_MAC).map_err(backend)?,
        })
    }

    /// Rebuilds both indexes if they do not cover the tables (a store from before
    /// them); undecodable entries are dropped, as issuing always did.
    pub(super) fn reindex(&mut self) -> Result<(), InventoryError> {
        let live = self.tokens.len().map_err(backend)?;
        let spent = self.spent.len().map_err(backend)?;
        if self.tokens_idx.len().map_err(backend)? == live && self.spent_idx.len().map_err(backend)? == spent
        {
            return Ok(());
        }
        self.tokens_idx.retain(|_, _| false).map_err(backend)?;
        self.spent_idx.retain(|_, _| false).map_err(backend)?;
        let mut pairs = Vec::new();
        self.tokens
            .retain(|k, v| match serde_json::from_slice::<TokenRecord>(v) {
                Ok(t) => {
                    pairs.push((t.mac.to_string(), k.to_string(), true));
                    true
                }
                Err(_) => false,
            })
            .map_err(backend)?;
        self.spent
            .retain(|k, v| match serde_json::from_slice::<SpentToken>(v) {
                Ok(t) => {
                    pairs.push((t.record.mac.to_string(), k.to_string(), false));
                    true
                }
                Err(_) => false,
            })
            .map_err(backend)?;
        for (mac, key, live) in pairs {
            let idx = if live {
                &mut self.tokens_idx
            } else {
                &mut self.spent_idx
            };
            idx.insert((mac.as_str(), key.as_str()), ()).map_err(backend)?;
        }
        Ok(())
    }

    /// Issues `record` under `key`, revoking the machine's other live tokens of the
    /// same purpose.
    pub(super) fn issue(&mut self, key: &str, record: &TokenRecord) -> Result<(), InventoryError> {
        let mac = record.mac.to_string();
        for k in keys_of(&self.tokens_idx, &mac)? {
            let t = self
                .tokens
                .get(k.as_str())
                .map_err(backend)?
                .and_then(|v| serde_json::from_slice::<TokenRecord>(v.value()).ok());
            match t {
                Some(t) if t.purpose == record.purpose && k != key => {
                    self.unlink_live(&mac, &k)?;
                    self.spend(&k, t, SpentHow::Revoked, record.issued_at)?;
                }
                Some(_) => {}
                // Undecodable tokens are useless: drop them rather than fail boots.
                None => self.unlink_live(&mac, &k)?,
            }
        }
        self.tokens
            .insert(key, encode(record)?.as_slice())
            .map_err(backend)?;
        self.tokens_idx.insert((mac.as_str(), key), ()).map_err(backend)?;
        if let Some(v) = self.spent.remove(key).map_err(backend)?
            && let Ok(old) = serde_json::from_slice::<SpentToken>(v.value())
        {
            self.spent_idx
                .remove((old.record.mac.to_string().as_str(), key))
                .map_err(backend)?;
        }
        Ok(())
    }

    fn unlink_live(&mut self, mac: &str, key: &str) -> Result<(), InventoryError> {
        self.tokens.remove(key).map_err(backend)?;
        self.tokens_idx.remove((mac, key)).map_err(backend)?;
        Ok(())
    }

    /// Removes and returns the live token under `key`, keeping it as spent.
    pub(super) fn take(
        &mut self,
        key: &str,
        now: OffsetDateTime,
    ) -> Result<Option<TokenRecord>, InventoryError> {
        let removed = self
            .tokens
            .remove(key)
            .map_err(backend)?
            .map(|v| v.value().to_vec());
        let rec = match removed {
            Some(v) => {
                Some(
                    serde_json::from_slice::<TokenRecord>(&v).map_err(|e| InventoryError::Corrupt {
                        key: "token".into(),
                        message: e.to_string(),
                    })?,
                )
            }
            None => None,
        };
        if let Some(r) = &rec {
            self.tokens_idx
                .remove((r.mac.to_string().as_str(), key))
                .map_err(backend)?;
            self.spend(key, r.clone(), SpentHow::Used, now)?;
        }
        Ok(rec)
    }

    /// Keeps `record` as spent under `key` and drops its machine's oldest spent
    /// tokens beyond the bound.
    fn spend(
        &mut self,
        key: &str,
        record: TokenRecord,
        how: SpentHow,
        at: OffsetDateTime,
    ) -> Result<(), InventoryError> {
        let mac = record.mac;
        let m = mac.to_string();
        let entry = SpentToken { record, how, at };
        self.spent
            .insert(key, encode(&entry)?.as_slice())
            .map_err(backend)?;
        self.spent_idx.insert((m.as_str(), key), ()).map_err(backend)?;
        let mut mine = Vec::new();
        for k in keys_of(&self.spent_idx, &m)? {
            if let Some(v) = self.spent.get(k.as_str()).map_err(backend)?
                && let Ok(t) = serde_json::from_slice::<SpentToken>(v.value())
            {
                mine.push((k, t));
            }
        }
        for k in spent_overflow(mine.iter().map(|(k, t)| (k.as_str(), t)), mac) {
            self.spent.remove(k.as_str()).map_err(backend)?;
            self.spent_idx.remove((m.as_str(), k.as_str())).map_err(backend)?;
        }
        Ok(())
    }

    /// Forgets every token of `mac`, live and spent.
    pub(super) fn forget(&mut self, mac: MacAddr) -> Result<(), InventoryError> {
        let m = mac.to_string();
        for k in keys_of(&self.tokens_idx, &m)? {
            self.unlink_live(&m, &k)?;
        }
        for k in keys_of(&self.spent_idx, &m)? {
            self.spent.remove(k.as_str()).map_err(backend)?;
            self.spent_idx.remove((m.as_str(), k.as_str())).map_err(backend)?;
        }
        Ok(())
    }

    /// Drops live tokens `expired` says are past their TTL and spent ones spent
    /// before `spent_before` (a full pass: this runs from the periodic sweep only).
    pub(super) fn collect(
        &mut self,
        expired: &dyn Fn(&TokenRecord) -> bool,
        spent_before: OffsetDateTime,
    ) -> Result<usize, InventoryError> {
        let mut gone = Vec::new();
        self.tokens
            .retain(|k, v| match serde_json::from_slice::<TokenRecord>(v) {
                Ok(t) if expired(&t) => {
                    gone.push((t.mac.to_string(), k.to_string(), true));
                    false
                }
                Ok(_) => true,
                Err(_) => false,
            })
            .map_err(backend)?;
        self.spent
            .retain(|k, v| match serde_json::from_slice::<SpentToken>(v) {
                Ok(t) if t.at < spent_before => {
                    gone.push((t.record.mac.to_string(), k.to_string(), false));
                    false
                }
                Ok(_) => true,
                Err(_) => false,
            })
            .map_err(backend)?;
        for (mac, key, live) in &gone {
            let idx = if *live {
                &mut self.tokens_idx
            } else {
                &mut self.spent_idx
            };
            idx.remove((mac.as_str(), key.as_str())).map_err(backend)?;
        }
        Ok(gone.len())
    }
}

#[cfg(test)]
mod tests {
    use provisioner_core::inventory::{Inventory, TokenPurpose};

    use super::*;
    use crate::store::RedbInventory;

    fn record(mac: &str) -> TokenRecord {
        TokenRecord {
            mac: mac.parse().unwrap(),
            purpose: TokenPurpose::Config,
            issued_at: OffsetDateTime::now_utc(),
            peer: None,
        }
    }

    /// A store from before the indexes (the index tables missing) gets them rebuilt
    /// at open, so revocation, which now reads only the index, still finds the
    /// machine's older token.
    #[test]
    fn indexes_are_rebuilt_for_older_stores_and_revocation_uses_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("inv.redb");
        {
            let mut inv = RedbInventory::open(&path).unwrap();
            inv.issue_token("aa", &record("52:54:00:00:00:01")).unwrap();
            inv.issue_token("cc", &record("52:54:00:00:00:02")).unwrap();
            inv.take_token("cc", OffsetDateTime::now_utc()).unwrap();
            let txn = inv.db.get_mut().unwrap().begin_write().unwrap();
            txn.delete_table(TOKENS_BY_MAC).unwrap();
            txn.delete_table(SPENT_BY_MAC).unwrap();
            txn.commit().unwrap();
        }
        let inv = RedbInventory::open(&path).unwrap();
        inv.issue_token("bb", &record("52:54:00:00:00:01")).unwrap();
        assert!(inv.live_token("aa").unwrap().is_none(), "older token revoked");
        assert_eq!(
            inv.spent_token("aa").unwrap().map(|s| s.how),
            Some(SpentHow::Revoked)
        );
        assert!(inv.live_token("bb").unwrap().is_some());
        // Forgetting machine 2 finds its spent token through the rebuilt index.
        inv.delete("52:54:00:00:00:02".parse().unwrap()).unwrap();
        assert!(inv.spent_token("cc").unwrap().is_none());
    }
}
