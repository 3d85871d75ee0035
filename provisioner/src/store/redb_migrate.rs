//! Converting an inventory written by an older appliance, inside the transaction
//! that opens it (`RedbInventory::migrate`).

use provisioner_core::model::TimelineEvent;
use redb::{ReadableTable, WriteTransaction};

use super::redb_store::{TIMELINE, backend, decode, encode};
use provisioner_core::inventory::InventoryError;

/// Schema 1 → 2: timeline rows were `{at, kind, detail}`; they become typed
/// (`{at, kind, detail, event}`), read through `provisioner_core::timeline::legacy`,
/// which keeps every `detail` exactly as it was. A row that does not decode is left
/// as it is (reading it failed before the upgrade too).
pub(super) fn typed_timeline(txn: &WriteTransaction) -> Result<(), InventoryError> {
    let mut tl = txn.open_table(TIMELINE).map_err(backend)?;
    let mut rows = Vec::new();
    for row in tl.iter().map_err(backend)? {
        let (k, v) = row.map_err(backend)?;
        let (mac, seq) = k.value();
        rows.push((mac.to_string(), seq, v.value().to_vec()));
    }
    let mut converted = 0usize;
    for (mac, seq, bytes) in rows {
        match decode::<TimelineEvent>(&mac, &bytes) {
            Ok(ev) => {
                tl.insert((mac.as_str(), seq), encode(&ev)?.as_slice())
                    .map_err(backend)?;
                converted += 1;
            }
            Err(e) => tracing::warn!(%mac, seq, error = %e, "timeline row left as it was"),
        }
    }
    tracing::info!(
        converted,
        "inventory timeline migrated to schema 2 (typed events)"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use provisioner_core::catalog::ConfigKind;
    use provisioner_core::inventory::{Inventory, SCHEMA_VERSION};
    use provisioner_core::k0s::progress::{self, Phase};
    use provisioner_core::model::{Event, MacAddr, MachineState};
    use redb::{Database, ReadableDatabase};

    use super::super::RedbInventory;
    use super::super::redb_store::{MACHINES, META, TIMELINE_SEQ, TOKENS};
    use super::*;

    const MAC: &str = "52:54:00:00:02:01";

    /// The rows of a Flatcar machine as the schema-1 appliance wrote them (same
    /// tables, JSON exactly as its serde derive produced).
    const OLD_TIMELINE: [&str; 6] = [
        r#"{"at":"2026-09-21T12:00:00Z","kind":"ipxe_script_served","detail":"install profile k0s-controller image flatcar-4230"}"#,
        r#"{"at":"2026-09-21T12:00:00Z","kind":"state_changed","detail":"Discovered -> Booting"}"#,
        r#"{"at":"2026-09-21T12:01:00Z","kind":"config_served","detail":"2210 bytes (Flatcar stage-1 Ignition; k0s: Stage1Served)"}"#,
        r#"{"at":"2026-09-21T12:01:00Z","kind":"state_changed","detail":"Booting -> ConfigServed"}"#,
        r#"{"at":"2026-09-21T12:09:00Z","kind":"disk_installed","detail":"flatcar-install finished; next netboot boots the disk; k0s: DiskInstalled, waiting for K0sInstalled"}"#,
        r#"{"at":"2026-09-21T12:09:00Z","kind":"state_changed","detail":"ConfigServed -> Installed"}"#,
    ];

    fn write_schema_1(path: &Path) {
        let db = Database::create(path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            txn.open_table(META).unwrap().insert("schema_version", 1).unwrap();
            txn.open_table(MACHINES)
                .unwrap()
                .insert(
                    MAC,
                    br#"{"mac":"52:54:00:00:02:01","arch":"x86-64-efi","first_seen":"2026-09-21T12:00:00Z","last_seen":"2026-09-21T12:09:00Z","state":"Installed"}"#.as_slice(),
                )
                .unwrap();
            let mut tl = txn.open_table(TIMELINE).unwrap();
            for (i, row) in OLD_TIMELINE.iter().enumerate() {
                tl.insert((MAC, i as u64), row.as_bytes()).unwrap();
            }
            // A row no appliance could read: left alone, not a reason to refuse the store.
            tl.insert(("52:54:00:00:02:02", 0), b"not json".as_slice())
                .unwrap();
            let mut seq = txn.open_table(TIMELINE_SEQ).unwrap();
            seq.insert(MAC, (0, OLD_TIMELINE.len() as u64)).unwrap();
            txn.open_table(TOKENS)
                .unwrap()
                .insert(
                    "k0s-callback-key",
                    br#"{"mac":"52:54:00:00:02:01","purpose":"k0s_installed_callback","issued_at":"2026-09-21T12:00:00Z"}"#.as_slice(),
                )
                .unwrap();
        }
        txn.commit().unwrap();
    }

    #[test]
    fn a_schema_1_store_opens_with_typed_events_and_the_same_text() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("inventory.redb");
        write_schema_1(&path);
        let mut inv = RedbInventory::open(&path).unwrap();
        assert_eq!(inv.schema_version().unwrap(), u64::from(SCHEMA_VERSION));
        let mac: MacAddr = MAC.parse().unwrap();
        assert_eq!(inv.get(mac).unwrap().unwrap().state, MachineState::Installed);
        let tl = inv.timeline(mac).unwrap();
        let details: Vec<String> = tl.iter().map(|e| e.detail()).collect();
        let old: Vec<String> = OLD_TIMELINE
            .iter()
            .map(|r| {
                serde_json::from_str::<serde_json::Value>(r).unwrap()["detail"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        assert_eq!(details, old, "every sentence as it was");
        assert_eq!(
            tl[2].event,
            Event::ConfigServed {
                bytes: 2210,
                config: ConfigKind::Flatcar
            }
        );
        assert_eq!(
            tl[5].event,
            Event::StateChanged {
                from: MachineState::ConfigServed,
                to: MachineState::Installed
            }
        );
        // The k0s phase is read from the typed events, so the migrated store goes on
        // where the old one was.
        assert_eq!(progress::from_timeline(&tl).0, Phase::DiskInstalled);
        assert!(
            inv.live_token("k0s-callback-key").unwrap().is_some(),
            "tokens untouched"
        );
        // The rows were rewritten in the new encoding.
        let txn = inv.db.get_mut().unwrap().begin_read().unwrap();
        let rows = txn.open_table(TIMELINE).unwrap();
        let row = rows.get((MAC, 2)).unwrap().unwrap();
        let raw: serde_json::Value = serde_json::from_slice(row.value()).unwrap();
        assert_eq!(raw["event"]["type"], "config_served", "{raw}");
        assert_eq!(
            rows.get(("52:54:00:00:02:02", 0)).unwrap().unwrap().value(),
            b"not json"
        );
        drop((row, rows, txn));
        // Opening again is a no-op.
        drop(inv);
        let inv = RedbInventory::open(&path).unwrap();
        assert_eq!(inv.timeline(mac).unwrap(), tl);
    }
}
