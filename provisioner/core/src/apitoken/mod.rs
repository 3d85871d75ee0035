//! Operator API tokens: bearer tokens with a role, stored only as a hash.
//!
//! [`ApiTokenStore`] is the storage seam (the daemon's redb store and the in-memory
//! [`MemApiTokens`] implement it; [`battery`] runs one suite against both). Stores key
//! records by the SHA-256 of the token, so a copy of the store holds no usable token;
//! hashing and token generation happen in the daemon.

pub mod battery;
mod mem;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::inventory::InventoryError;

pub use mem::MemApiTokens;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Everything, including every mutating call.
    Admin,
    /// Reads only (GET), `/metrics` included: what a Prometheus scraper gets.
    ReadOnly,
}

impl Role {
    /// Whether this role may make a mutating call.
    pub fn may_mutate(&self) -> bool {
        matches!(self, Self::Admin)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Admin => "admin",
            Self::ReadOnly => "read-only",
        })
    }
}

impl FromStr for Role {
    type Err = crate::model::UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "admin" => Ok(Self::Admin),
            "read-only" => Ok(Self::ReadOnly),
            _ => Err(crate::model::UnknownName::new(s, "admin or read-only")),
        }
    }
}

/// A stored token: everything but the token itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiTokenRecord {
    /// Short public id, for listing and revoking (not a secret).
    pub id: String,
    /// What it may do.
    pub role: Role,
    /// Operator's note (who or what uses it).
    #[serde(default)]
    pub name: String,
    /// When it was created.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// Token storage. `key` is always the hex SHA-256 of the token.
pub trait ApiTokenStore: Send + Sync + fmt::Debug {
    /// Stores a new token record under `key`; an existing record under the same key
    /// or with the same id is an error (ids and tokens are random, so it means a bug).
    fn insert(&self, key: &str, record: &ApiTokenRecord) -> Result<(), InventoryError>;
    /// The record for `key`, if the token exists.
    fn lookup(&self, key: &str) -> Result<Option<ApiTokenRecord>, InventoryError>;
    /// Every record, ordered by id.
    fn list(&self) -> Result<Vec<ApiTokenRecord>, InventoryError>;
    /// Removes the token with public id `id`; returns whether it existed.
    fn revoke(&self, id: &str) -> Result<bool, InventoryError>;
}
