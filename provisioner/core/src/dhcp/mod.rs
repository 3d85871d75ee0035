//! DHCP for network boot, as pure functions (boot-protocols.md §3).
//!
//! The daemon's socket loops call [`engine::Request::parse`] and [`engine::answer`],
//! which run, in order:
//! 1. [`wire::decode`]: bytes → [`v4::Message`], never panicking (magic cookie checked
//!    here because dhcproto does not, and the decoder runs inside `catch_unwind`).
//! 2. [`classify::classify`]: who is asking (iPXE, firmware PXE, UEFI HTTP Boot, or a
//!    plain DHCP client), for which architecture, with which message type.
//! 3. [`bootfile::choose`]: which boot file or URL that client gets (after the
//!    booter's decision, which the caller passes in).
//! 4. [`reply`] (proxyDHCP offers/acks, the common boot fields, reply addressing per
//!    RFC 2131 §4.1) and [`full`] (the authoritative personality over a
//!    [`lease::LeaseStore`]), then [`wire::encode`] and the timeline events.
//!
//! Nothing here opens a socket; [`lease::LeaseStore`] is the storage seam with an
//! in-memory implementation and a test [`lease::battery`] for every backend.

pub mod bootfile;
pub mod classify;
pub mod engine;
pub mod full;
pub mod lease;
pub mod pool;
pub mod reply;
pub mod subnet;
pub mod wire;

/// The codec, re-exported so callers name one version of it.
pub use dhcproto::v4;

/// Which DHCP role the appliance plays (config `dhcp.mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Personality {
    /// No DHCP: an external server chains clients here (`provisioner dhcp-snippet`).
    #[default]
    Off,
    /// proxyDHCP on 67 and the PXE boot server on 4011: boot information only,
    /// never an address.
    Proxy,
    /// Authoritative for one subnet: reservations, optional pool, leases.
    Full,
}

impl std::fmt::Display for Personality {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Off => "off",
            Self::Proxy => "proxy",
            Self::Full => "full",
        })
    }
}

#[cfg(test)]
mod tests;
