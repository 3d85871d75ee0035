//! The inventory: machines, their boot timelines and one-time tokens.
//!
//! [`Inventory`] is the storage seam: the daemon's redb store and the in-memory
//! [`MemInventory`] implement it, and [`battery`] runs one test suite against both.
//! Every method that returns `Ok` has made its write durable for that backend
//! (redb: fsync'd commit), so callers may acknowledge to clients right after.

pub mod battery;
mod mem;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::model::{MacAddr, Machine, TimelineEvent};

pub use mem::MemInventory;

/// Schema version of stored records and of exports. Bump it, and add a migration,
/// whenever a stored type changes incompatibly.
/// - 1: timeline entries are `{at, kind, detail}`.
/// - 2: they also carry the typed `event` ([`crate::timeline`]); entries of
///   version 1 are read through [`crate::timeline::legacy`].
pub const SCHEMA_VERSION: u32 = 2;

/// Most recent events kept per machine; older ones are dropped so a boot-looping
/// machine cannot grow the store without bound.
pub const TIMELINE_CAP: usize = 1000;

/// Storage failures.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InventoryError {
    /// The backend failed (I/O, corruption, lock).
    #[error("inventory backend: {0}")]
    Backend(String),
    /// A stored record does not decode.
    #[error("inventory record for {key} is corrupt: {message}")]
    Corrupt {
        /// Which record.
        key: String,
        /// Why.
        message: String,
    },
    /// The store was written by a newer appliance.
    #[error("inventory schema version {found} is newer than this appliance's {supported}")]
    SchemaTooNew {
        /// Version in the store.
        found: u32,
        /// Version this build understands.
        supported: u32,
    },
}

/// What a one-time token lets its holder do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenPurpose {
    /// Fetch the machine config once.
    Config,
    /// Report the install finished, once (Flatcar: `DiskInstalled`).
    InstalledCallback,
    /// Flatcar path: report k0s installed, once.
    K0sInstalledCallback,
}

/// A live one-time token. Stores key it by a hash of the token, never the token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// The machine it is bound to.
    pub mac: MacAddr,
    /// What it allows.
    pub purpose: TokenPurpose,
    /// When it was issued.
    #[serde(with = "time::serde::rfc3339")]
    pub issued_at: OffsetDateTime,
    /// The address the machine's script (carrying this token) was served to: its
    /// later fetches are accepted from there (`crate::release::binding`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<std::net::IpAddr>,
}

/// How a token stopped working.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SpentHow {
    /// It was presented once (served, refused as expired, or used at the wrong
    /// endpoint).
    Used,
    /// A newer token of the same machine and purpose replaced it.
    Revoked,
}

/// A token that no longer works, kept (still keyed by its hash) so that a replay
/// can be refused on the right machine's timeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpentToken {
    /// The record it had while live.
    pub record: TokenRecord,
    /// Why it is spent.
    pub how: SpentHow,
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
}

/// Spent tokens kept per machine (the newest); older ones are forgotten, so a
/// machine that boots over and over cannot grow the store.
pub const SPENT_TOKENS_PER_MACHINE: usize = 16;

/// Keys of `mac`'s spent tokens beyond [`SPENT_TOKENS_PER_MACHINE`], oldest first:
/// what a store drops after adding one.
pub fn spent_overflow<'a>(
    spent: impl IntoIterator<Item = (&'a str, &'a SpentToken)>,
    mac: MacAddr,
) -> Vec<String> {
    let mut mine: Vec<(&str, &SpentToken)> = spent.into_iter().filter(|(_, t)| t.record.mac == mac).collect();
    if mine.len() <= SPENT_TOKENS_PER_MACHINE {
        return Vec::new();
    }
    mine.sort_by_key(|(k, t)| (t.at, *k));
    let excess = mine.len() - SPENT_TOKENS_PER_MACHINE;
    mine.into_iter()
        .take(excess)
        .map(|(k, _)| k.to_string())
        .collect()
}

/// A machine with its timeline, as exported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MachineExport {
    /// The record.
    #[serde(flatten)]
    pub machine: Machine,
    /// Its boot timeline, oldest first.
    #[serde(default)]
    pub timeline: Vec<TimelineEvent>,
}

/// The whole inventory, for export/import and backups. Tokens are not part of it:
/// they are one-time and re-issued on the next boot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Snapshot {
    /// [`SCHEMA_VERSION`] of the writer.
    pub schema_version: u32,
    /// Machines ordered by MAC.
    pub machines: Vec<MachineExport>,
}

/// What one [`Inventory::apply`] step writes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Update {
    /// The new record; `None` leaves the stored one unchanged.
    pub machine: Option<Machine>,
    /// Appended to the machine's timeline in the same commit.
    pub events: Vec<TimelineEvent>,
    /// One-time tokens issued in the same commit, as [`Inventory::issue_token`]
    /// issues them: `(key, record)`, the key a hash of the token.
    pub tokens: Vec<(String, TokenRecord)>,
}

/// Which `Discovered` records to forget ([`crate::inventory`] stays bounded under
/// `unknown_policy: record` and random MACs): those never booted (still
/// `Discovered`, no install boot) that carry nothing an operator set (profile,
/// labels, power, boot file, approval, UUID pin) and that `from_traffic` says the
/// network created (the caller's check: a record created by a DHCP or `/ipxe`
/// sighting has that sighting on its timeline, one an operator created or imported
/// may have none), last seen more than `max_age` ago; then, if more than
/// `max_count` such records remain, the least recently seen ones. Anything an
/// operator created or touched never expires.
pub fn expired_discovered(
    machines: &[Machine],
    now: OffsetDateTime,
    max_age: time::Duration,
    max_count: usize,
    from_traffic: &mut dyn FnMut(&Machine) -> bool,
) -> Vec<MacAddr> {
    let mut candidates: Vec<&Machine> = machines
        .iter()
        .filter(|m| expirable(m) && from_traffic(m))
        .collect();
    candidates.sort_by_key(|m| (m.last_seen, m.mac));
    let (old, young): (Vec<&Machine>, Vec<&Machine>) =
        candidates.into_iter().partition(|m| now - m.last_seen > max_age);
    let over = young.len().saturating_sub(max_count);
    old.iter().chain(young.iter().take(over)).map(|m| m.mac).collect()
}

fn expirable(m: &Machine) -> bool {
    m.state == crate::model::MachineState::Discovered
        && m.install_boots.is_empty()
        && m.profile.is_none()
        && m.labels.is_empty()
        && m.power.is_none()
        && m.boot_file.is_none()
        && m.approval.is_none()
        && m.pinned_uuid.is_none()
}

/// A read-modify-write step for [`Inventory::apply`]: sees the current record (if
/// any) and says what to write.
pub type Change<'a> = &'a mut dyn FnMut(Option<Machine>) -> Update;

/// Machine inventory storage. Methods block briefly (a durable commit); they are
/// cancel-safe in the sense that a write is either fully done or not at all.
pub trait Inventory: Send + Sync + std::fmt::Debug {
    /// One machine.
    fn get(&self, mac: MacAddr) -> Result<Option<Machine>, InventoryError>;
    /// All machines, ordered by MAC.
    fn list(&self) -> Result<Vec<Machine>, InventoryError>;
    /// Atomically: run `change` on the current record, store the new record, append
    /// the events and issue the tokens it returns, in one durable commit. Returns
    /// the stored record.
    fn apply(&self, mac: MacAddr, change: Change<'_>) -> Result<Option<Machine>, InventoryError>;
    /// Several [`Inventory::apply`] steps, each on its own machine's current record,
    /// in one durable commit where the store can (all or none; the default runs them
    /// one by one). For writers that batch what they queued, so a storm of timeline
    /// notes costs one commit per batch instead of one per note.
    fn apply_many(&self, changes: &mut [(MacAddr, Change<'_>)]) -> Result<(), InventoryError> {
        for (mac, change) in changes.iter_mut() {
            self.apply(*mac, &mut **change)?;
        }
        Ok(())
    }
    /// Appends events to a machine's timeline.
    fn append(&self, mac: MacAddr, events: &[TimelineEvent]) -> Result<(), InventoryError> {
        self.apply(mac, &mut |_| Update {
            events: events.to_vec(),
            ..Update::default()
        })?;
        Ok(())
    }
    /// Stores a record as is.
    fn put(&self, machine: &Machine) -> Result<(), InventoryError> {
        self.apply(machine.mac, &mut |_| Update {
            machine: Some(machine.clone()),
            ..Update::default()
        })?;
        Ok(())
    }
    /// Removes a machine, its timeline and its tokens. Returns whether it existed.
    fn delete(&self, mac: MacAddr) -> Result<bool, InventoryError>;
    /// A machine's timeline, oldest first.
    fn timeline(&self, mac: MacAddr) -> Result<Vec<TimelineEvent>, InventoryError>;
    /// Stores a token under `key` (a hash of the token), replacing every other live
    /// token of the same machine and purpose: only the newest boot's token works.
    /// The replaced ones become spent ([`SpentHow::Revoked`] at `record.issued_at`);
    /// a spent token issued again (a config put back) is live again.
    fn issue_token(&self, key: &str, record: &TokenRecord) -> Result<(), InventoryError>;
    /// The live token under `key`, without spending it (a refused request must not
    /// cost the real machine its token).
    fn live_token(&self, key: &str) -> Result<Option<TokenRecord>, InventoryError>;
    /// Removes and returns the live token under `key`, keeping it as spent
    /// ([`SpentHow::Used`] at `now`) in the same commit; a second call returns `None`.
    fn take_token(&self, key: &str, now: OffsetDateTime) -> Result<Option<TokenRecord>, InventoryError>;
    /// The spent token under `key`, if it is among its machine's newest
    /// [`SPENT_TOKENS_PER_MACHINE`].
    fn spent_token(&self, key: &str) -> Result<Option<SpentToken>, InventoryError>;
    /// Garbage-collects tokens in one commit: the live ones `expired` says are past
    /// their TTL, and the spent ones spent before `spent_before` (a replay that late
    /// is refused as unknown, which is as safe). Returns how many were dropped.
    fn drop_tokens(
        &self,
        expired: &dyn Fn(&TokenRecord) -> bool,
        spent_before: OffsetDateTime,
    ) -> Result<usize, InventoryError>;
    /// Everything, for export and backup.
    fn export(&self) -> Result<Snapshot, InventoryError> {
        let mut machines = Vec::new();
        for machine in self.list()? {
            let timeline = self.timeline(machine.mac)?;
            machines.push(MachineExport { machine, timeline });
        }
        Ok(Snapshot {
            schema_version: SCHEMA_VERSION,
            machines,
        })
    }
    /// Replaces machines and timelines with the snapshot's (machines not in it are
    /// kept). Refuses snapshots from a newer schema.
    fn import(&self, snap: &Snapshot) -> Result<(), InventoryError> {
        if snap.schema_version > SCHEMA_VERSION {
            return Err(InventoryError::SchemaTooNew {
                found: snap.schema_version,
                supported: SCHEMA_VERSION,
            });
        }
        for m in &snap.machines {
            self.delete(m.machine.mac)?;
            self.apply(m.machine.mac, &mut |_| Update {
                machine: Some(m.machine.clone()),
                events: m.timeline.clone(),
                ..Update::default()
            })?;
        }
        Ok(())
    }
}
