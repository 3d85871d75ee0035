//! The daemon's integration tests in one binary: one module per area (each a former
//! `tests/<name>.rs` binary), the shared fixtures in `common` compiled once. One link
//! instead of 43, and `common` type-checked once instead of under `allow(dead_code)` in
//! every binary.
//!
//! Run one area or one test (names are `<module>::<test>`):
//!   cargo test -p provisioner --test integration config_release::
//!   cargo test -p provisioner --test integration -- --exact talos_api::bootstrap_retries_failed_precondition_then_accepts_then_already_exists
//!
//! Every module shares this process with the others, two tests at a time under
//! tests/run: no test may change process-wide state (environment, working directory,
//! umask, the thread's network namespace outside a thread of its own, a global tracing
//! subscriber). The Prometheus recorder is process-wide, so metric assertions compare
//! against a value read before the action (`common::release::metric`), never an absolute;
//! the rustls provider is installed once (`common::crypto`); namespaces, interfaces and
//! files carry the test's own name and the process id.

mod common;
mod deploy; // deploy_package's helpers

mod adopt;
mod adopt_arms;
mod api_clusters;
mod api_credentials;
mod api_router;
mod api_sessions;
mod app_compose;
mod argocd_install;
mod argocd_register;
mod backup_restore;
mod boot_http;
mod bootstrap_orchestrator;
mod cli;
mod cluster_handoff_argo;
mod cluster_handoff_e2e;
mod cluster_handoff_serve;
mod clusters_cli;
mod config_release;
mod dashboard_browser;
mod deploy_package;
mod deploy_scripts;
mod device_flow;
mod dhcp_handler;
mod doctor;
mod durability;
mod events_live;
mod example_data_quiet;
mod gitops_check;
mod gitops_workloads;
mod golden;
mod http_flood;
mod http_zerocopy;
mod images_argocd;
mod images_bundle;
mod images_factory;
mod images_pull;
mod k0s_flatcar;
mod k0s_mirror;
mod k0s_ready;
mod observability;
mod operator_surface;
mod power_drivers;
mod store_faults;
mod systemd_notify;
mod talhelper_cli;
mod talhelper_sealed;
mod talos_api;
mod talos_cli;
mod talos_delivery;
mod talos_proto_conformance;
mod talos_reimage;
mod talos_secrets;
mod talos_sops;
mod tftp_bounds;
mod tftp_clients;
