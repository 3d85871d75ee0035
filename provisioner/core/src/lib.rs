//! Pure core of the provisioner appliance.
//!
//! # Layout
//! - [`model`]: machines, MAC addresses, architectures and states.
//! - [`timeline`]: the boot timeline as typed events, rendered to text at the edges.
//! - [`catalog`]: images (`images/`), profiles and groups (`profiles/`), loading with
//!   errors that name file and field, and matchbox-style group selection.
//! - [`boot`]: the one decision "what does this machine boot" ([`boot::decide`]).
//! - [`render`]: iPXE scripts and the per-machine config document, as plain text.
//! - [`lifecycle`]: state transitions as a pure function of (state, trigger).
//! - [`inventory`]: the storage trait every store implements, plus an in-memory store.
//! - [`infra`]: cluster definitions (`infra/`), validated per distribution.
//! - [`talos`]: the Talos path's pure parts (cluster model, schematics, secrets as
//!   data, machine configs, patches, talhelper import).
//! - [`cluster`]: the cluster bootstrap workflow (pure state machine) and its store seam.
//! - [`gitops`]: semantic checks over the ArgoCD objects in `gitops/`.
//! - [`apitoken`]: operator API tokens (roles, hashed storage trait, in-memory store).
//! - [`bootloop`]: boot-loop protection as a pure function of the install history.
//! - [`power`]: how a machine is switched on and off (driver choice per machine).
//! - [`release`]: who gets a machine config: peer binding, UUID pinning, operator
//!   approval and the RFC 8628 device flow, as pure decisions.
//! - [`dhcp`]: DHCP/proxyDHCP classification, boot-file choice, replies and leases.
//! - [`tftp`]: read-only TFTP packets, option negotiation and the window (RFC 1350,
//!   2347-2349, 7440).
//! - [`k0s`]: the k0s path's pure parts (cluster definition, ClusterConfig, join
//!   tokens, Flatcar Ignition, the k0s sub-state machine).
//!
//! Nothing here opens a socket, a database or a client: the daemon crate does I/O and
//! calls into these functions (see ARCHITECTURE.md for the import rules).
// The core is safe Rust: the fuzz targets' long runs (fuzz/README.md) rely on it and
// build without AddressSanitizer, which only finds bugs that unsafe code can make.
#![forbid(unsafe_code)]

pub mod adopt;
pub mod apitoken;
pub mod boot;
pub mod bootloop;
pub mod catalog;
pub mod cluster;
pub mod dhcp;
pub mod fieldpath;
pub mod fleet;
pub mod gitops;
pub mod infra;
pub mod inventory;
pub mod k0s;
pub mod lifecycle;
pub mod model;
pub mod power;
pub mod range;
pub mod release;
pub mod render;
pub mod talos;
pub mod tftp;
pub mod timeline;
