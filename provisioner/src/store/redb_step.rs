//! One machine write inside an inventory write transaction: read the record, run
//! the caller's change on it, store the record, append the events (keeping the
//! timeline under its cap) and issue the tokens it returns.

use provisioner_core::inventory::{Change, InventoryError, TIMELINE_CAP};
use provisioner_core::model::{MacAddr, Machine};
use redb::{ReadableTable, WriteTransaction};

use super::redb_inv_tokens::TokenTables;
use super::redb_store::{MACHINES, TIMELINE, TIMELINE_SEQ, backend, decode, encode};

/// Returns the stored record and whether anything was written.
pub(super) fn step(
    txn: &WriteTransaction,
    mac: MacAddr,
    change: Change<'_>,
) -> Result<(Option<Machine>, bool), InventoryError> {
    let key = mac.to_string();
    let mut machines = txn.open_table(MACHINES).map_err(backend)?;
    let current: Option<Machine> = match machines.get(key.as_str()).map_err(backend)? {
        Some(v) => Some(decode(&key, v.value())?),
        None => None,
    };
    let update = change(current.clone());
    let events = &update.events;
    let wrote = update.machine.is_some() || !events.is_empty() || !update.tokens.is_empty();
    let stored = match update.machine {
        Some(new) => {
            machines
                .insert(key.as_str(), encode(&new)?.as_slice())
                .map_err(backend)?;
            Some(new)
        }
        None => current,
    };
    if !events.is_empty() {
        let mut seq = txn.open_table(TIMELINE_SEQ).map_err(backend)?;
        let mut tl = txn.open_table(TIMELINE).map_err(backend)?;
        let (mut first, mut next) = seq
            .get(key.as_str())
            .map_err(backend)?
            .map(|v| v.value())
            .unwrap_or((0, 0));
        for ev in events {
            tl.insert((key.as_str(), next), encode(ev)?.as_slice())
                .map_err(backend)?;
            next += 1;
        }
        while next - first > TIMELINE_CAP as u64 {
            tl.remove((key.as_str(), first)).map_err(backend)?;
            first += 1;
        }
        seq.insert(key.as_str(), (first, next)).map_err(backend)?;
    }
    if !update.tokens.is_empty() {
        let mut t = TokenTables::open(txn)?;
        for (k, record) in &update.tokens {
            t.issue(k, record)?;
        }
    }
    Ok((stored, wrote))
}
