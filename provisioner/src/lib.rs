//! The provisioner daemon: servers, store, CLI. Policy lives in `provisioner-core`.
//!
//! # Layout
//! - [`app`]: the composition root (binds sockets, opens the store, runs servers).
//! - [`cli`] / [`commands`]: subcommands.
//! - [`config`]: the configuration file, defaults and environment overrides.
//! - [`service`]: the boot service the protocol servers share (decisions, tokens,
//!   timeline writes).
//! - [`http`]: boot path, assets, the operator API and dashboard. [`tftp`]: TFTP.
//! - [`ops`]: re-imaging, power, clusters. [`power`]: power drivers.
//! - [`client`]: the CLI's API client (`machines`, `clusters`, `events`, `token`).
//! - [`http`]: boot path, assets, read-only API. [`tftp`]: TFTP. [`dhcp`]: DHCP servers.
//! - [`k0s`]: the k0s path (PKI, encrypted secrets, Flatcar/k0s mirror, Ignition renderer).
//! - [`store`]: the redb inventory. [`snippet`]: external-DHCP snippets.
//! - [`netinfo`]: advertised address, ARP lookups. [`shutdown`]: signals.
//! - [`backup`]: backup/restore archives. [`state`]: state-dir permissions.
//! - [`notify`]: systemd readiness and watchdog. [`selftest`]: the `--dry-run` report.
//! - [`cluster`]: Talos API client, bootstrap orchestrator, ArgoCD hand-off.
//! - [`gitops`]: `provisioner check` over `gitops/`.
//! - `testing` (only with the `testing` feature): test doubles for the integration
//!   tests and the lab agent; never in the appliance binary.

pub mod app;
pub mod backup;
pub mod cluster;
pub mod cmd;
pub mod config;
pub mod dhcp;
pub mod gitops;
pub mod http;
pub mod images;
pub mod inputs;
pub mod ops;
pub mod os;
pub mod pki;
pub mod power;
pub mod service;
pub mod snippet;
pub mod store;
pub mod sys;

#[cfg(feature = "testing")]
pub mod testing;
pub mod tftp;
