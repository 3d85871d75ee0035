//! Leases of the `full` personality and the storage seam for them.
//!
//! [`LeaseStore`] follows the inventory's pattern: the daemon's redb store and the
//! in-memory [`MemLeases`] implement it, and [`battery`] runs one suite against
//! both. A method that returns `Ok` has made its write durable for that backend,
//! so the server may send the ACK right after (RFC 2131 §4.3.2 asks servers to
//! commit the binding to persistent storage before acknowledging).

pub mod battery;
mod deferred;
mod group;
mod mem;

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::model::MacAddr;

pub use deferred::{Deferred, Pending};
pub use group::GroupCommit;
pub use mem::MemLeases;

/// Where a lease stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum LeaseState {
    /// Bound until `expires`.
    Active,
    /// Given back (DHCPRELEASE); kept so the client gets the same address again.
    Released,
    /// The client found the address in use (DHCPDECLINE); the address is not
    /// offered to anyone until `expires`.
    Declined,
}

/// One binding of a MAC to an address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Lease {
    /// The client.
    #[cfg_attr(feature = "openapi", schema(value_type = String, example = "52:54:00:12:34:56"))]
    pub mac: MacAddr,
    /// Its address.
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = Ipv4))]
    pub ip: Ipv4Addr,
    /// Unix seconds when the binding (or the decline hold) ends.
    pub expires: i64,
    /// Option 12 from the client, or the reservation's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// See [`LeaseState`].
    pub state: LeaseState,
}

impl Lease {
    /// Whether the address is unavailable to other clients at `now`.
    pub fn holds_address(&self, now: i64) -> bool {
        match self.state {
            LeaseState::Active | LeaseState::Declined => self.expires > now,
            LeaseState::Released => false,
        }
    }
}

/// Lease storage failures.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LeaseError {
    /// The backend failed (I/O, corruption, lock).
    #[error("lease store backend: {0}")]
    Backend(String),
    /// A stored record does not decode.
    #[error("lease record for {key} is corrupt: {message}")]
    Corrupt {
        /// Which record.
        key: String,
        /// Why.
        message: String,
    },
    /// The address is recorded for another MAC (remove that lease first).
    #[error("{ip} is leased to {holder}")]
    Conflict {
        /// The address.
        ip: Ipv4Addr,
        /// Its current holder.
        holder: MacAddr,
    },
}

/// One write of a batch ([`LeaseStore::apply_batch`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseOp {
    /// [`LeaseStore::put`].
    Put(Lease),
    /// [`LeaseStore::remove`].
    Remove(MacAddr),
}

/// A write that a write-behind store ([`GroupCommit`]) has applied in memory and
/// queued, but that is durable only once [`LeaseStore::settle`] returns `Ok` for it.
#[derive(Debug, PartialEq, Eq)]
#[must_use = "a ticket must be settled: its write is not durable before"]
pub struct Ticket(pub(crate) u64);

/// Lease storage: at most one lease per MAC and one per address.
pub trait LeaseStore: Send + Sync + std::fmt::Debug {
    /// The lease of `mac`, whatever its state.
    fn by_mac(&self, mac: MacAddr) -> Result<Option<Lease>, LeaseError>;
    /// The lease recorded on `ip`, whatever its state.
    fn by_ip(&self, ip: Ipv4Addr) -> Result<Option<Lease>, LeaseError>;
    /// Stores `lease`, replacing the MAC's previous lease (and freeing its old
    /// address). Fails with [`LeaseError::Conflict`] if another MAC's lease is
    /// recorded on the address. Durable when it returns `Ok`.
    fn put(&self, lease: &Lease) -> Result<(), LeaseError>;
    /// Deletes `mac`'s lease, returning it. Durable when it returns `Ok`.
    fn remove(&self, mac: MacAddr) -> Result<Option<Lease>, LeaseError>;
    /// Every lease, ordered by address.
    fn list(&self) -> Result<Vec<Lease>, LeaseError>;
    /// Applies `ops` in order; durable when it returns `Ok`. Backends that can do
    /// it in one commit (redb: one transaction, one fsync) override this, which is
    /// what makes [`GroupCommit`] pay one fsync for many ACKs.
    fn apply_batch(&self, ops: &[LeaseOp]) -> Result<(), LeaseError> {
        for op in ops {
            match op {
                LeaseOp::Put(l) => self.put(l)?,
                LeaseOp::Remove(m) => {
                    self.remove(*m)?;
                }
            }
        }
        Ok(())
    }

    /// Applies `op` without waiting for it to be durable if the backend can: a
    /// write-behind store returns a [`Ticket`], and the write counts (an ACK may
    /// go out) only once [`Self::settle`] of it returns `Ok`; every ticket must be
    /// settled. The default writes durably at once ([`Self::put`] /
    /// [`Self::remove`]) and returns `None`. What lets one thread answer many
    /// clients while their leases share one commit ([`Deferred`]).
    fn begin(&self, op: LeaseOp) -> Result<Option<Ticket>, LeaseError> {
        match op {
            LeaseOp::Put(l) => self.put(&l)?,
            LeaseOp::Remove(m) => {
                self.remove(m)?;
            }
        }
        Ok(None)
    }

    /// Waits until the write of `ticket` is durable (`Ok`) or has failed (then it is
    /// undone in memory too). Only a backend whose [`Self::begin`] hands out
    /// tickets gets here.
    fn settle(&self, ticket: Ticket) -> Result<(), LeaseError> {
        Err(LeaseError::Backend(format!(
            "ticket {} from a store that issues none",
            ticket.0
        )))
    }
}
