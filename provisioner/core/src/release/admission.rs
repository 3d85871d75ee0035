//! Operator approval (admission).
//!
//! `admission: auto | approve` is set globally and may be overridden per cluster
//! (`infra/<cluster>.yaml`) and per profile; the most specific setting wins. In
//! `approve` mode a machine about to be installed (re-images too) gets a waiting
//! script that shows a short user code and polls; an operator approves its MAC and
//! UUID (`provisioner machines approve MAC --code CODE`). An approval lasts for the
//! install window and ends when the machine reports `Installed`.
//!
//! Whatever the mode, a machine no group selected (installed through
//! `unknown_policy: profile:<id>`) never gets a config with secrets unapproved.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// The admission mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Admission {
    /// Machines that pass peer binding and the UUID pin install without a human.
    #[default]
    Auto,
    /// Every install waits for an operator's approval.
    Approve,
}

impl std::str::FromStr for Admission {
    type Err = crate::model::UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Self::Auto),
            "approve" => Ok(Self::Approve),
            _ => Err(crate::model::UnknownName::new(s, "auto or approve")),
        }
    }
}

/// The mode for one install: the profile's setting, else its cluster's, else the
/// global one.
pub fn effective(global: Admission, cluster: Option<Admission>, profile: Option<Admission>) -> Admission {
    profile.or(cluster).unwrap_or(global)
}

/// An operator's approval of one machine, stored on its record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Approval {
    /// The SMBIOS UUID approved with the MAC (`None`: the machine sent none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    /// Public id of the API token that approved it (never the token).
    pub token_id: String,
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub at: OffsetDateTime,
    /// End of the install window; the approval also ends at `Installed`.
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub expires: OffsetDateTime,
}

/// A machine waiting for approval, stored on its record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PendingApproval {
    /// The user code its console shows (RFC 8628 §6.1 alphabet, `XXXX-XXXX`).
    pub code: String,
    /// The UUID it presented.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    /// The address it asked from.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub peer: IpAddr,
    /// Since when it waits.
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub since: OffsetDateTime,
    /// Set when an operator denied it (token id): it keeps waiting, told so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub denied_by: Option<String>,
}

impl PendingApproval {
    /// Whether a new request is the same waiting machine (same UUID and address),
    /// so its code stays the one on the operator's screen.
    pub fn same_request(&self, uuid: Option<&str>, peer: IpAddr) -> bool {
        self.uuid.as_deref() == uuid && self.peer == peer
    }
}

/// Whether `approval` releases a config to the machine presenting `uuid` at `now`.
pub fn covers(approval: Option<&Approval>, uuid: Option<&str>, now: OffsetDateTime) -> bool {
    approval.is_some_and(|a| a.expires > now && a.uuid.as_deref() == uuid)
}

/// Whether an install must wait for an operator.
pub fn must_wait(mode: Admission, unknown_with_secrets: bool, approved: bool) -> bool {
    !approved && (mode == Admission::Approve || unknown_with_secrets)
}

/// RFC 8628 §6.1: 20 consonants, no vowels (no words), no look-alikes.
const ALPHABET: &[u8; 20] = b"BCDFGHJKLMNPQRSTVWXZ";

/// A user code `XXXX-XXXX` (≈34.6 bits) from 8 random bytes.
pub fn user_code(random: [u8; 8]) -> String {
    let mut s = String::with_capacity(9);
    for (i, b) in random.iter().enumerate() {
        if i == 4 {
            s.push('-');
        }
        // 256 is not a multiple of 20: a slight bias towards the first 16 letters,
        // irrelevant for a code an operator compares by eye and that needs an admin
        // token to use.
        s.push(ALPHABET[usize::from(*b) % ALPHABET.len()] as char);
    }
    s
}

/// Compares user codes as an operator types them (RFC 8628 §6.1: case and
/// punctuation do not matter).
pub fn codes_equal(a: &str, b: &str) -> bool {
    let norm = |s: &str| -> String {
        s.chars()
            .filter(char::is_ascii_alphanumeric)
            .map(|c| c.to_ascii_uppercase())
            .collect()
    };
    let (a, b) = (norm(a), norm(b));
    !a.is_empty() && a == b
}
