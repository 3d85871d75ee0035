//! The k0s path's pure parts: cluster definitions ([`cluster`]), the k0s
//! ClusterConfig ([`clusterconfig`]), join tokens and bootstrap-token Secrets
//! ([`token`]), the two-stage Flatcar Ignition configs ([`ignition`]) and the k0s
//! sub-state machine ([`progress`]). Keys, downloads and the store are the daemon's
//! (`provisioner::k0s`); everything here is a function of its inputs.

pub mod cluster;
pub mod clusterconfig;
pub mod ignition;
pub mod mirror;
pub mod progress;
pub mod store;
pub mod token;
pub mod workflow;

pub use cluster::{K0sCluster, K0sNode, NetworkProvider};
