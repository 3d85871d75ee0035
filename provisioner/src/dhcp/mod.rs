//! The built-in DHCP servers (issue 3; boot-protocols.md §3). Policy is in
//! `provisioner_core::dhcp`; this module owns sockets, limits and wiring:
//! - [`settings`]: the `dhcp:` config section.
//! - [`socket`]: binding (SO_BINDTODEVICE, SO_BROADCAST) and IP_PKTINFO I/O.
//! - [`server`]: the receive loop with load shedding; [`limits`]: its limits.
//! - [`handler`]: one datagram → `provisioner_core::dhcp::engine::answer` (given the
//!   machine's record and the booter's decision) → at most one reply, plus the
//!   timeline note, written and published by the service's journal.
//! - [`probe`]: the "is another DHCP server here?" check before `full` mode.
//!
//! `GET /api/v1/leases` is served by the operator API (`http::api::leases`), behind its
//! authentication.

pub mod handler;
pub mod limits;
pub mod probe;
pub mod server;
pub mod settings;
pub mod socket;
