//! [`TalosResetter`]: re-imaging a Talos node over the Talos API (talos.md §11.2).
//!
//! `Reset{graceful, reboot: true, mode: SYSTEM_DISK, system_partitions_to_wipe:
//! [STATE, EPHEMERAL]}` wipes the machine config and the node's data and reboots it;
//! with the machine in `ReimageRequested`, its next network boot installs again.
//! `graceful` makes a control-plane node leave etcd first (and drains a worker); that
//! only works while etcd is healthy on the other members, so a control-plane node
//! is reset gracefully only when every other control-plane node reports etcd
//! running and healthy, and otherwise non-gracefully, which the step says.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use provisioner_core::catalog::Catalog;
use provisioner_core::model::Machine;
use provisioner_core::talos::{TalosCluster, TalosNode};

use crate::cluster::seams::{NodeResetter, ResetError};
use crate::os::talos::api::pb::machine::{ResetPartitionSpec, ResetRequest, reset_request};
use crate::os::talos::api::{IdentitySource, TalosApi, Target, TonicTalos};

/// The system partitions a re-image wipes (Talos labels).
pub const WIPED_PARTITIONS: [&str; 2] = ["STATE", "EPHEMERAL"];

/// The reset request of a re-image.
pub fn reset_request(graceful: bool) -> ResetRequest {
    ResetRequest {
        graceful,
        reboot: true,
        system_partitions_to_wipe: WIPED_PARTITIONS
            .iter()
            .map(|l| ResetPartitionSpec {
                label: (*l).to_string(),
                wipe: true,
            })
            .collect(),
        user_disks_to_wipe: Vec::new(),
        // Only the system disk: user disks (e.g. Longhorn's) keep their data.
        mode: reset_request::WipeMode::SystemDisk as i32,
    }
}

/// The node's first address in `infra/` (`ipAddress` may list several, comma-separated,
/// possibly with a prefix length).
pub fn node_ip(node: &TalosNode) -> Option<IpAddr> {
    node.ip_address
        .split(',')
        .map(|s| s.trim().split('/').next().unwrap_or_default())
        .find_map(|s| s.parse().ok())
}

/// The `infra/` node that is `m`: the node pinned to its MAC, else the node its
/// group's `hostname` metadata names (as the renderer picks it; `hostname`), else the
/// node with its SMBIOS UUID. A node pinned to another MAC is never `m`: resetting
/// the wrong machine is worse than not resetting.
pub fn find_node<'a>(
    cluster: &'a TalosCluster,
    m: &Machine,
    hostname: Option<&str>,
) -> Option<&'a TalosNode> {
    let free = |n: &&TalosNode| n.mac.is_none_or(|b| b == m.mac);
    cluster
        .nodes
        .iter()
        .find(|n| n.mac == Some(m.mac))
        .or_else(|| {
            let h = hostname?;
            cluster.nodes.iter().filter(free).find(|n| n.hostname == h)
        })
        .or_else(|| {
            let uuid = m.uuid.as_deref()?;
            cluster
                .nodes
                .iter()
                .filter(free)
                .find(|n| n.uuid.as_deref().is_some_and(|u| u.eq_ignore_ascii_case(uuid)))
        })
}

/// Resets Talos nodes with the cluster's `os:admin` identity.
pub struct TalosResetter {
    clusters: BTreeMap<String, TalosCluster>,
    identity: Arc<dyn IdentitySource>,
    port: u16,
    attempt_timeout: Duration,
    catalog: Option<Arc<Catalog>>,
    apis: Mutex<HashMap<String, Arc<dyn TalosApi>>>,
}

impl std::fmt::Debug for TalosResetter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TalosResetter")
            .field("clusters", &self.clusters.keys().collect::<Vec<_>>())
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

impl TalosResetter {
    /// Resets nodes of `clusters`, dialling apid on `port` with identities from
    /// `identity`; each Talos call is one attempt bounded by `attempt_timeout`.
    pub fn new(
        clusters: BTreeMap<String, TalosCluster>,
        identity: Arc<dyn IdentitySource>,
        port: u16,
        attempt_timeout: Duration,
    ) -> Self {
        Self {
            clusters,
            identity,
            port,
            attempt_timeout,
            catalog: None,
            apis: Mutex::new(HashMap::new()),
        }
    }

    /// Also finds nodes by the `hostname` metadata of the group selecting a machine.
    pub fn with_catalog(mut self, catalog: Arc<Catalog>) -> Self {
        self.catalog = Some(catalog);
        self
    }

    fn group_hostname(&self, m: &Machine) -> Option<String> {
        let catalog = self.catalog.as_deref()?;
        let group = provisioner_core::boot::assign::assignment(catalog, m)?.group?;
        catalog.groups.get(&group)?.metadata.get("hostname").cloned()
    }

    /// Uses `api` for `cluster` instead of a client built from its identity (tests).
    pub fn with_api(self, cluster: &str, api: Arc<dyn TalosApi>) -> Self {
        if let Ok(mut m) = self.apis.lock() {
            m.insert(cluster.to_string(), api);
        }
        self
    }

    fn api(&self, cluster: &str) -> Result<Arc<dyn TalosApi>, ResetError> {
        let mut apis = self
            .apis
            .lock()
            .map_err(|_| ResetError("client cache poisoned".into()))?;
        if let Some(a) = apis.get(cluster) {
            return Ok(a.clone());
        }
        let id = self
            .identity
            .talos_identity(cluster)
            .map_err(|e| ResetError(e.to_string()))?;
        let api: Arc<dyn TalosApi> = Arc::new(
            TonicTalos::new(&id, self.port, self.attempt_timeout).map_err(|e| ResetError(e.to_string()))?,
        );
        apis.insert(cluster.to_string(), api.clone());
        Ok(api)
    }

    /// Why a graceful reset of control-plane node `ip` would fail, if it would: etcd
    /// not running and healthy on another control-plane node (or no other member).
    async fn etcd_problem(&self, api: &dyn TalosApi, cluster: &TalosCluster, ip: IpAddr) -> Option<String> {
        let others: Vec<IpAddr> = cluster
            .nodes
            .iter()
            .filter(|n| n.control_plane)
            .filter_map(node_ip)
            .filter(|o| *o != ip)
            .collect();
        if others.is_empty() {
            return Some("it is the only control-plane node (etcd cannot lose its last member)".into());
        }
        // Asked in parallel: one unreachable member costs one attempt timeout, not one each.
        let answers =
            futures::future::join_all(others.iter().map(|o| api.service_list(Target::direct(*o)))).await;
        others
            .iter()
            .zip(answers)
            .find_map(|(other, answer)| match answer {
                Ok(services) => match services.iter().find(|s| s.id == "etcd") {
                    Some(s) if s.last_event_state == "Running" && s.healthy => None,
                    Some(s) => Some(format!(
                        "etcd on {other} is {} (healthy: {})",
                        s.last_event_state, s.healthy
                    )),
                    None => Some(format!("{other} reports no etcd service")),
                },
                Err(e) => Some(format!("etcd health on {other} unknown: {e}")),
            })
    }

    async fn reset_node(&self, machine: &Machine, cluster: Option<&str>) -> Result<String, ResetError> {
        let name = cluster.ok_or_else(|| ResetError("the machine's profile names no cluster".into()))?;
        let c = self
            .clusters
            .get(name)
            .ok_or_else(|| ResetError(format!("no Talos cluster {name:?} in infra/")))?;
        let hostname = self.group_hostname(machine);
        let node = find_node(c, machine, hostname.as_deref()).ok_or_else(|| {
            ResetError(format!(
                "no node of cluster {name:?} in infra/ is {} (by mac, group hostname or uuid), \
                 so its address is unknown",
                machine.mac
            ))
        })?;
        let ip = node_ip(node)
            .ok_or_else(|| ResetError(format!("node {} has no usable ipAddress", node.hostname)))?;
        let api = self.api(name)?;
        let (graceful, why) = if node.control_plane {
            match self.etcd_problem(api.as_ref(), c, ip).await {
                None => (true, "etcd healthy on the other control-plane nodes".to_string()),
                Some(p) => (false, format!("NOT graceful: {p}")),
            }
        } else {
            (true, "worker: cordon and drain first".to_string())
        };
        api.reset(Target::direct(ip), reset_request(graceful))
            .await
            .map_err(|e| ResetError(e.to_string()))?;
        Ok(format!(
            "Reset sent to {} ({ip}): graceful={graceful} ({why}), wiping {}, rebooting into the network install",
            node.hostname,
            WIPED_PARTITIONS.join(" and ")
        ))
    }
}

impl NodeResetter for TalosResetter {
    fn reset<'a>(
        &'a self,
        machine: &'a Machine,
        cluster: Option<&'a str>,
    ) -> BoxFuture<'a, Result<String, ResetError>> {
        Box::pin(self.reset_node(machine, cluster))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_wipes_state_and_ephemeral_and_reboots() {
        let r = reset_request(false);
        assert!(r.reboot && !r.graceful);
        let labels: Vec<(&str, bool)> = r
            .system_partitions_to_wipe
            .iter()
            .map(|p| (p.label.as_str(), p.wipe))
            .collect();
        assert_eq!(labels, [("STATE", true), ("EPHEMERAL", true)]);
        assert_eq!(r.mode, reset_request::WipeMode::SystemDisk as i32);
        assert!(r.user_disks_to_wipe.is_empty());
    }

    #[test]
    fn nodes_are_found_by_mac_then_group_hostname_never_a_node_pinned_elsewhere() {
        let node = |h: &str, mac: Option<&str>| TalosNode {
            hostname: h.into(),
            mac: mac.map(|m| m.parse().unwrap()),
            ..Default::default()
        };
        let c = TalosCluster {
            nodes: vec![
                node("a", Some("52:54:00:00:00:01")),
                node("b", None),
                node("c", Some("52:54:00:00:00:03")),
            ],
            ..Default::default()
        };
        let m = |mac: &str| Machine::discovered(mac.parse().unwrap(), time::OffsetDateTime::UNIX_EPOCH);
        let host = |mac, h| find_node(&c, &m(mac), h).map(|n| n.hostname.clone());
        assert_eq!(host("52:54:00:00:00:01", Some("b")), Some("a".into()));
        assert_eq!(host("52:54:00:00:00:02", Some("b")), Some("b".into()));
        assert_eq!(host("52:54:00:00:00:02", Some("c")), None, "c is another machine");
        assert_eq!(host("52:54:00:00:00:02", None), None);
    }

    #[test]
    fn node_ip_takes_the_first_address() {
        let mut n = TalosNode {
            hostname: "a".into(),
            ip_address: "10.0.0.11/24, 10.0.1.11".into(),
            ..Default::default()
        };
        assert_eq!(node_ip(&n), Some("10.0.0.11".parse().unwrap()));
        n.ip_address = "nope".into();
        assert_eq!(node_ip(&n), None);
    }
}
