//! Config release: who gets a machine config.
//!
//! A machine config carries the cluster's CA keys, so the boot path releases a config
//! token (and answers `/config/<t>` and the install callbacks) only to the machine
//! itself. Four independent checks, each a pure function here and I/O in the daemon:
//!
//! - [`binding`]: the requesting peer *is* the machine named in the request: the
//!   kernel's neighbour entry for the peer IP carries its MAC (same L2), or the peer
//!   IP holds that MAC's DHCP lease (full mode), or, for the later fetches of a
//!   multi-NIC machine, the IP its script was served to or one of its NICs declared in
//!   `infra/`. Where neither can be checked (behind a relay with external DHCP) only
//!   an operator approval releases the config.
//! - [`smbios`]: the first SMBIOS UUID seen for a MAC is pinned; a later request with
//!   another (or a malformed, or no) UUID is refused until an operator unpins it.
//! - [`admission`]: `auto | approve`; in approve mode a machine waits, showing a
//!   short user code, until an operator approves its MAC and UUID.
//! - [`device`]: the server side of RFC 8628 (OAuth 2.0 Device Authorization Grant)
//!   as Talos' `talos.config.oauth.*` client speaks it; `/config/<t>` then needs the
//!   bearer token bound to that device code.
//!
//! A refusal never spends or revokes the real machine's tokens and never counts
//! toward its boot-loop guard: the caller checks before it touches either.

pub mod admission;
pub mod binding;
pub mod device;
pub mod nodes;
pub mod smbios;

#[cfg(test)]
mod tests;
