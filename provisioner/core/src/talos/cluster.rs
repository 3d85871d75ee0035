//! Talos cluster definitions (`infra/<name>.yaml`).
//!
//! The format accepts talhelper's `talconfig.yaml` field names (talos.md §8.1, §8.3)
//! so a talconfig converts by renaming nothing, plus the appliance's own fields:
//! `distribution`, `cilium`, `installerRegistry`, and per node `mac`, `uuid`,
//! `power`. Unknown fields are rejected, so a typo never silently changes a cluster.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::schematic::Schematic;
use super::version::Version;
use crate::model::MacAddr;

/// Oldest Talos the renderer supports (single-document v1alpha1, talos.md §7).
pub const MIN_TALOS: (u32, u32) = (1, 8);
/// Newest Talos minor whose single-document form the renderer emits (§7: 1.8–1.14
/// all accept it).
pub const MAX_TALOS: (u32, u32) = (1, 14);

/// Cilium installed at bootstrap by an inline-manifest Job (talos.md §6.4).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CiliumSettings {
    /// Cilium chart version `cilium install --version` installs, e.g. `1.18.2`.
    pub version: String,
    /// The cilium-cli image the Job runs (must carry a tag).
    #[serde(default = "default_cilium_cli")]
    pub cli_image: String,
}

fn default_cilium_cli() -> String {
    "quay.io/cilium/cilium-cli:v0.18.7".into()
}

/// Node-group defaults (`controlPlane:` / `worker:` at the top level, as talhelper).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NodeDefaults {
    /// Patches applied after the cluster's and before each node's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub patches: Vec<Value>,
    /// Schematic for nodes of this group that set none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schematic: Option<Schematic>,
    /// Nameservers for nodes of this group that set none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    /// Labels added to every node of the group.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_labels: BTreeMap<String, String>,
}

/// How the appliance powers a node on or cycles it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PowerDriver {
    /// No remote power control: an operator presses the button.
    #[default]
    Manual,
    /// Wake-on-LAN magic packet to the node's MAC.
    Wol,
    /// IPMI (address and user below; the password is not stored here).
    Ipmi,
    /// Redfish (address and user below).
    Redfish,
}

/// Power settings of a node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Power {
    /// The driver.
    pub driver: PowerDriver,
    /// BMC address for IPMI/Redfish.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// BMC user for IPMI/Redfish.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
}

/// One node (`nodes[]`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TalosNode {
    /// Hostname (also the key profiles' group metadata `hostname` refers to).
    pub hostname: String,
    /// Node address(es), comma-separated as in talhelper; used for talosconfig.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ip_address: String,
    /// Control-plane node (else worker).
    #[serde(default)]
    pub control_plane: bool,
    /// Install disk, e.g. `/dev/nvme0n1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub install_disk: Option<String>,
    /// Install disk selector (v1alpha1 `InstallDiskSelector`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub install_disk_selector: Option<Value>,
    /// v1alpha1 `Device` list, copied into `machine.network.interfaces`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub network_interfaces: Vec<Value>,
    /// DNS servers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    /// `machine.network.disableSearchDomain`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable_search_domain: Option<bool>,
    /// Image Factory schematic for this node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schematic: Option<Schematic>,
    /// Installer image to use instead of the factory one.
    #[serde(default, rename = "talosImageURL", skip_serializing_if = "Option::is_none")]
    pub talos_image_url: Option<String>,
    /// Extra `machine.certSANs`.
    #[serde(default, rename = "certSANs", skip_serializing_if = "Vec::is_empty")]
    pub cert_sans: Vec<String>,
    /// Kubernetes node labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_labels: BTreeMap<String, String>,
    /// Kubernetes node annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_annotations: BTreeMap<String, String>,
    /// Kubernetes node taints (`key: value:Effect`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_taints: BTreeMap<String, String>,
    /// Patches applied last.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub patches: Vec<Value>,
    /// Appliance: boot NIC MAC the PXE path matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<MacAddr>,
    /// Appliance: SMBIOS UUID the PXE path may match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    /// Appliance: the node's other NICs (besides `mac` and the `hardwareAddr`
    /// device selectors), from which its config fetch and callbacks are accepted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub other_macs: Vec<MacAddr>,
    /// Appliance: power control.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub power: Option<Power>,
}

/// A Talos cluster definition.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TalosCluster {
    /// `talos` (optional in talhelper files; `k0s` files are a different format).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distribution: Option<String>,
    /// Cluster name; equals the file stem.
    pub cluster_name: String,
    /// Pinned Talos version, e.g. `v1.11.6`.
    pub talos_version: String,
    /// Kubernetes version, e.g. `v1.34.1`.
    pub kubernetes_version: String,
    /// `https://<host>:6443`.
    pub endpoint: String,
    /// Cluster DNS domain (default `cluster.local`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// Let workloads run on control-plane nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_scheduling_on_control_planes: Option<bool>,
    /// Extra `cluster.apiServer.certSANs`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub additional_api_server_cert_sans: Vec<String>,
    /// Extra `machine.certSANs` on every node.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub additional_machine_cert_sans: Vec<String>,
    /// Pod CIDRs (default `10.244.0.0/16`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cluster_pod_nets: Vec<String>,
    /// Service CIDRs (default `10.96.0.0/12`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cluster_svc_nets: Vec<String>,
    /// v1alpha1 `CNIConfig`; absent means Talos' default (flannel).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cni_config: Option<Value>,
    /// Cluster-wide patches, applied first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub patches: Vec<Value>,
    /// Appliance: install Cilium at bootstrap (needs `cniConfig.name: none`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cilium: Option<CiliumSettings>,
    /// Appliance: registry serving installer images (default `factory.talos.dev`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub installer_registry: Option<String>,
    /// Appliance: `auto | approve` for this cluster's installs
    /// (`crate::release::admission`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admission: Option<crate::release::admission::Admission>,
    /// Defaults for control-plane nodes.
    #[serde(default, skip_serializing_if = "is_default")]
    pub control_plane: NodeDefaults,
    /// Defaults for workers.
    #[serde(default, skip_serializing_if = "is_default")]
    pub worker: NodeDefaults,
    /// The nodes.
    pub nodes: Vec<TalosNode>,
}

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

/// One validation problem: dotted field path and message.
pub type Problem = (String, String);

impl TalosCluster {
    /// The Talos version, parsed.
    pub fn talos(&self) -> Result<Version, super::version::VersionError> {
        self.talos_version.parse()
    }

    /// Every NIC declared for a node with a boot `mac`: `otherMacs` and the exact
    /// `hardwareAddr` device selectors (wildcards name no single NIC).
    pub fn node_nics(&self) -> Vec<(MacAddr, Vec<MacAddr>)> {
        self.nodes
            .iter()
            .filter_map(|n| {
                let boot = n.mac?;
                let mut others: Vec<MacAddr> = n.other_macs.clone();
                for dev in &n.network_interfaces {
                    if let Some(m) = dev
                        .pointer("/deviceSelector/hardwareAddr")
                        .and_then(Value::as_str)
                        .and_then(|s| s.parse::<MacAddr>().ok())
                    {
                        others.push(m);
                    }
                }
                others.retain(|m| *m != boot);
                others.sort();
                others.dedup();
                Some((boot, others))
            })
            .collect()
    }

    /// The node called `hostname`.
    pub fn node(&self, hostname: &str) -> Option<&TalosNode> {
        self.nodes.iter().find(|n| n.hostname == hostname)
    }

    /// The schematic a node boots and installs: its own, else its group's, else the
    /// default (no extensions). Normalised (sorted extensions).
    pub fn schematic_for(&self, node: &TalosNode) -> Schematic {
        let group = if node.control_plane {
            &self.control_plane
        } else {
            &self.worker
        };
        node.schematic
            .clone()
            .or_else(|| group.schematic.clone())
            .unwrap_or_default()
            .normalized()
    }
}
