//! `bootstrap:` in the config file: whether `serve` runs the bootstrap orchestrator
//! for the Talos clusters of `infra/`, polling, retries and the per-step timeouts (the
//! Talos API port is `talos.api_port`). Additive with embedded defaults: a config
//! without the section bootstraps with the core's default timeouts. [`plan_for`]
//! turns an `infra/` cluster and these settings into the workflow's plan.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use provisioner_core::cluster::bootstrap::Timeouts;
use provisioner_core::model::MacAddr;
use provisioner_core::talos::bootstrap::Plan;
use provisioner_core::talos::cluster::TalosCluster;
use serde::{Deserialize, Serialize};

/// `bootstrap:` in the config file: whether and how `serve` bootstraps Talos clusters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BootstrapSettings {
    /// Run the orchestrator for every Talos cluster of `infra/` (zero-touch).
    pub enabled: bool,
    /// One Talos API call's limit; talos.md §10.3 uses 2 s per `Version` attempt,
    /// the streamed `Kubeconfig` needs more on a busy node.
    pub attempt_timeout_secs: u64,
    /// Pause between polls of a step that is not done yet.
    pub poll_ms: u64,
    /// Install ArgoCD and apply the root app-of-apps from `gitops/` after `/readyz`.
    pub hand_off: bool,
    /// Each wait inside the ArgoCD install (CRDs Established, Deployments available).
    pub argocd_wait_secs: u64,
    /// First pause after a cluster could not be started; doubles up to `retry_max_secs`.
    pub retry_min_secs: u64,
    /// Longest pause between start attempts.
    pub retry_max_secs: u64,
    /// Per-step limits, after which the cluster is recorded `Failed`.
    pub timeouts: StepTimeouts,
}

impl Default for BootstrapSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            attempt_timeout_secs: 10,
            poll_ms: 5_000,
            hand_off: true,
            argocd_wait_secs: 600,
            retry_min_secs: 5,
            retry_max_secs: 300,
            timeouts: StepTimeouts::default(),
        }
    }
}

/// Per-step limits in seconds (the core's [`Timeouts`], in a config-friendly form).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StepTimeouts {
    /// `WaitNodes`: every control-plane node answers `Version` over mTLS.
    pub wait_nodes_secs: u64,
    /// `Bootstrap`, all retries together.
    pub bootstrap_secs: u64,
    /// `WaitEtcd`.
    pub wait_etcd_secs: u64,
    /// `FetchKubeconfig`.
    pub fetch_kubeconfig_secs: u64,
    /// `WaitApi` (`/readyz`).
    pub wait_api_secs: u64,
    /// `HandOff` (ArgoCD install, readiness, root app).
    pub hand_off_secs: u64,
    /// `HandOff` after the apply: until Argo CD reports the cluster's Applications
    /// Synced and Healthy (its own clock, from the apply).
    pub argo_synced_secs: u64,
}

impl Default for StepTimeouts {
    fn default() -> Self {
        let t = Timeouts::default();
        Self {
            wait_nodes_secs: t.wait_nodes.as_secs(),
            bootstrap_secs: t.bootstrap.as_secs(),
            wait_etcd_secs: t.wait_etcd.as_secs(),
            fetch_kubeconfig_secs: t.fetch_kubeconfig.as_secs(),
            wait_api_secs: t.wait_api.as_secs(),
            hand_off_secs: t.hand_off.as_secs(),
            argo_synced_secs: t.argo_synced.as_secs(),
        }
    }
}

impl StepTimeouts {
    /// The core's form.
    pub fn to_core(&self) -> Timeouts {
        let s = Duration::from_secs;
        Timeouts {
            wait_nodes: s(self.wait_nodes_secs),
            bootstrap: s(self.bootstrap_secs),
            wait_etcd: s(self.wait_etcd_secs),
            fetch_kubeconfig: s(self.fetch_kubeconfig_secs),
            wait_api: s(self.wait_api_secs),
            hand_off: s(self.hand_off_secs),
            argo_synced: s(self.argo_synced_secs),
            // k0s steps: not run by this supervisor.
            ..Timeouts::default()
        }
    }
}

/// Why a Talos cluster cannot be bootstrapped as defined.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// A control-plane node has no address the appliance can dial.
    #[error("control-plane node {node} has no usable ipAddress ({given:?}): the appliance dials it")]
    NoAddress {
        /// The node.
        node: String,
        /// Its first `ipAddress`.
        given: String,
    },
    /// The cluster has no control-plane node.
    #[error("no control-plane node in infra/")]
    NoControlPlane,
}

/// The plan for `cluster` (control-plane addresses: each node's first `ipAddress`)
/// and the MAC of each node, so nodes answering over mTLS are marked `Installed`.
pub fn plan_for(
    cluster: &TalosCluster,
    settings: &BootstrapSettings,
) -> Result<(Plan, BTreeMap<IpAddr, MacAddr>), PlanError> {
    let mut control_plane = std::collections::BTreeSet::new();
    let mut macs = BTreeMap::new();
    for node in &cluster.nodes {
        let first = node.ip_address.split(',').next().unwrap_or("").trim();
        let Ok(ip) = first.parse::<IpAddr>() else {
            if node.control_plane {
                return Err(PlanError::NoAddress {
                    node: node.hostname.clone(),
                    given: first.to_string(),
                });
            }
            continue;
        };
        if node.control_plane {
            control_plane.insert(ip);
        }
        if let Some(mac) = node.mac {
            macs.insert(ip, mac);
        }
    }
    if control_plane.is_empty() {
        return Err(PlanError::NoControlPlane);
    }
    let plan = Plan {
        cluster: cluster.cluster_name.clone(),
        control_plane,
        hand_off: settings.hand_off,
        timeouts: settings.timeouts.to_core(),
        poll: Duration::from_millis(settings.poll_ms.max(10)),
    };
    Ok((plan, macs))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::Config;

    #[test]
    fn absent_section_is_the_defaults_and_keys_merge() {
        let c = Config::from_yaml(Path::new("c.yaml"), "{}", &Config::default()).unwrap();
        assert!(c.bootstrap.enabled);
        assert_eq!(c.bootstrap.timeouts.to_core(), super::Timeouts::default());
        let c = Config::from_yaml(
            Path::new("c.yaml"),
            "bootstrap:\n  poll_ms: 250\n  timeouts: { wait_etcd_secs: 7 }\n",
            &Config::default(),
        )
        .unwrap();
        assert_eq!(c.bootstrap.poll_ms, 250);
        assert_eq!(c.bootstrap.timeouts.to_core().wait_etcd.as_secs(), 7);
        assert_eq!(
            c.bootstrap.timeouts.wait_nodes_secs, 900,
            "other steps keep theirs"
        );
        assert!(c.bootstrap.hand_off);
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = Config::from_yaml(
            Path::new("c.yaml"),
            "bootstrap:\n  pol_ms: 1\n",
            &Config::default(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("pol_ms"), "{err}");
    }
}
