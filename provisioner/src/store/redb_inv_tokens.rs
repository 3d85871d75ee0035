//! The inventory's one-time token tables on redb: issuing (revoking the machine's
//! previous token of the same purpose) and keeping spent tokens, inside the caller's
//! write transaction.

use provisioner_core::inventory::{InventoryError, SpentHow, SpentToken, TokenRecord, spent_overflow};
use redb::ReadableTable;
use time::OffsetDateTime;

use super::redb_store::{backend, encode};

/// Issues `record` under `key` in the caller's transaction, revoking the machine's
/// other live tokens of the same purpose.
pub(super) fn issue(
    tokens: &mut redb::Table<'_, &str, &[u8]>,
    spent: &mut redb::Table<'_, &str, &[u8]>,
    key: &str,
    record: &TokenRecord,
) -> Result<(), InventoryError> {
    let mut replaced = Vec::new();
    tokens
        .retain(|k, v| match serde_json::from_slice::<TokenRecord>(v) {
            Ok(t) if t.mac == record.mac && t.purpose == record.purpose => {
                replaced.push((k.to_string(), t));
                false
            }
            Ok(_) => true,
            // Undecodable tokens are useless: drop them rather than fail boots.
            Err(_) => false,
        })
        .map_err(backend)?;
    tokens.insert(key, encode(record)?.as_slice()).map_err(backend)?;
    spent.remove(key).map_err(backend)?;
    for (k, t) in replaced {
        spend(spent, &k, t, SpentHow::Revoked, record.issued_at)?;
    }
    Ok(())
}

/// Keeps `record` as spent under `key` and drops its machine's oldest spent tokens
/// beyond the bound, in the caller's transaction.
pub(super) fn spend(
    spent: &mut redb::Table<'_, &str, &[u8]>,
    key: &str,
    record: TokenRecord,
    how: SpentHow,
    at: OffsetDateTime,
) -> Result<(), InventoryError> {
    let mac = record.mac;
    let entry = SpentToken { record, how, at };
    spent.insert(key, encode(&entry)?.as_slice()).map_err(backend)?;
    let mut all = Vec::new();
    for row in spent.iter().map_err(backend)? {
        let (k, v) = row.map_err(backend)?;
        if let Ok(t) = serde_json::from_slice::<SpentToken>(v.value()) {
            all.push((k.value().to_string(), t));
        }
    }
    for k in spent_overflow(all.iter().map(|(k, t)| (k.as_str(), t)), mac) {
        spent.remove(k.as_str()).map_err(backend)?;
    }
    Ok(())
}
