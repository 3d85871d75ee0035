//! The Talos path, pure parts: cluster definitions (`infra/<name>.yaml`, a superset of
//! talhelper's `talconfig.yaml`), Image Factory schematics and their IDs, the
//! talosctl-compatible secrets bundle as data, per-node v1alpha1 machine configs, and
//! config patches (RFC 6902 and Talos strategic merge).
//!
//! Facts come from `../shared/reference/talos.md` (§4 Image Factory, §5 secrets, §6
//! machine config, §7 version changes, §8 talhelper). Key generation, storage and
//! downloads live in the daemon crate (`provisioner/src/talos/`).

pub mod bootstrap;
pub mod cilium;
pub mod cluster;
pub mod machine;
pub mod patch;
pub mod schematic;
pub mod secrets;
pub mod store;
pub mod talhelper;
mod validate;
pub mod version;
pub mod yaml;

pub use cluster::{NodeDefaults, Power, PowerDriver, TalosCluster, TalosNode};
pub use machine::{MachineConfig, RenderError, render};
pub use schematic::Schematic;
pub use secrets::SecretsBundle;
pub use version::Version;
