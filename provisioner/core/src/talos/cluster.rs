//! Talos cluster definitions (`infra/<name>.yaml`).
//!
//! The format accepts talhelper's `talconfig.yaml` field names (talos.md §8.1, §8.3)
//! so a talconfig converts by renaming nothing, plus the appliance's own fields:
//! `distribution`, `cilium`, `installerRegistry`, and per node `mac`, `uuid`,
//! `power`. Unknown fields are rejected, so a typo never silently changes a cluster.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

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

fn valid_cidr(s: &str) -> bool {
    match s.split_once('/') {
        Some((ip, len)) => match (ip.parse::<IpAddr>(), len.parse::<u8>()) {
            (Ok(IpAddr::V4(_)), Ok(l)) => l <= 32,
            (Ok(IpAddr::V6(_)), Ok(l)) => l <= 128,
            _ => false,
        },
        None => false,
    }
}

impl TalosCluster {
    /// The Talos version, parsed.
    pub fn talos(&self) -> Result<Version, String> {
        self.talos_version.parse()
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

    /// Every problem Talos (or the renderer) would reject, each naming its field.
    pub fn validate(&self) -> Vec<Problem> {
        let mut p: Vec<Problem> = Vec::new();
        let mut push = |f: String, m: String| p.push((f, m));
        if let Some(d) = &self.distribution
            && d != "talos"
        {
            push("distribution".into(), format!("{d:?} is not `talos`"));
        }
        if self.cluster_name.is_empty() {
            push("clusterName".into(), "empty".into());
        }
        match self.talos() {
            Ok(v) if v.minor_pair() < MIN_TALOS || v.minor_pair() > MAX_TALOS => push(
                "talosVersion".into(),
                format!("{v} is outside the supported range v1.8–v1.14"),
            ),
            Ok(_) => {}
            Err(e) => push("talosVersion".into(), e),
        }
        if let Err(e) = self.kubernetes_version.parse::<Version>() {
            push("kubernetesVersion".into(), e);
        }
        match self.endpoint.strip_prefix("https://") {
            Some(hp)
                if hp
                    .rsplit_once(':')
                    .is_some_and(|(h, port)| !h.is_empty() && port.parse::<u16>().is_ok()) => {}
            _ => push(
                "endpoint".into(),
                format!("{:?} is not https://<host>:<port>", self.endpoint),
            ),
        }
        for (f, nets) in [
            ("clusterPodNets", &self.cluster_pod_nets),
            ("clusterSvcNets", &self.cluster_svc_nets),
        ] {
            for (i, n) in nets.iter().enumerate() {
                if !valid_cidr(n) {
                    push(format!("{f}[{i}]"), format!("{n:?} is not a CIDR"));
                }
            }
        }
        let cni_name = self
            .cni_config
            .as_ref()
            .and_then(|c| c.get("name"))
            .and_then(Value::as_str);
        if let Some(c) = &self.cni_config
            && !matches!(
                c.get("name").and_then(Value::as_str),
                Some("flannel" | "custom" | "none")
            )
        {
            push("cniConfig.name".into(), "must be flannel, custom or none".into());
        }
        if let Some(c) = &self.cilium {
            if cni_name != Some("none") {
                push(
                    "cilium".into(),
                    "needs `cniConfig: {name: none}` (Cilium replaces the CNI and kube-proxy)".into(),
                );
            }
            if !c
                .cli_image
                .rsplit('/')
                .next()
                .is_some_and(|last| last.contains(':'))
            {
                push(
                    "cilium.cliImage".into(),
                    "every image reference needs a tag".into(),
                );
            }
            if c.version.is_empty() {
                push("cilium.version".into(), "empty".into());
            }
        }
        check_patches("patches", &self.patches, &mut push);
        check_patches("controlPlane.patches", &self.control_plane.patches, &mut push);
        check_patches("worker.patches", &self.worker.patches, &mut push);
        if self.nodes.is_empty() {
            push("nodes".into(), "no nodes".into());
        } else if !self.nodes.iter().any(|n| n.control_plane) {
            push("nodes".into(), "no control-plane node".into());
        }
        let mut hostnames = BTreeSet::new();
        let mut macs = BTreeSet::new();
        let mut ips = BTreeSet::new();
        let talos = self.talos().ok();
        for (i, n) in self.nodes.iter().enumerate() {
            let f = |s: &str| format!("nodes[{i}].{s}");
            if n.hostname.is_empty()
                || !n
                    .hostname
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
            {
                push(f("hostname"), format!("{:?} is not a valid hostname", n.hostname));
            } else if !hostnames.insert(n.hostname.clone()) {
                push(f("hostname"), format!("{:?} is used by another node", n.hostname));
            }
            for ip in n.ip_address.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                if ip.parse::<IpAddr>().is_err() {
                    push(f("ipAddress"), format!("{ip:?} is not an IP address"));
                } else if !ips.insert(ip.to_string()) {
                    push(f("ipAddress"), format!("{ip} is used by another node"));
                }
            }
            if let Some(m) = n.mac
                && !macs.insert(m)
            {
                push(f("mac"), format!("{m} is used by another node"));
            }
            match (&n.install_disk, &n.install_disk_selector) {
                (Some(_), Some(_)) => push(
                    f("installDisk"),
                    "set installDisk or installDiskSelector, not both".into(),
                ),
                (None, None) => push(
                    f("installDisk"),
                    "one of installDisk or installDiskSelector is required".into(),
                ),
                (Some(d), None) if !d.starts_with("/dev/") => {
                    push(f("installDisk"), format!("{d:?} is not a /dev path"))
                }
                _ => {}
            }
            for (j, dev) in n.network_interfaces.iter().enumerate() {
                let df = |s: &str| f(&format!("networkInterfaces[{j}]{s}"));
                if !dev.is_object() {
                    push(df(""), "not a mapping".into());
                    continue;
                }
                if dev.get("interface").is_none() && dev.get("deviceSelector").is_none() {
                    push(df(""), "needs `interface` or `deviceSelector`".into());
                }
                if let Some(vip) = dev.get("vip") {
                    if !n.control_plane {
                        push(df(".vip"), "a VIP is only allowed on control-plane nodes".into());
                    }
                    if vip
                        .get("ip")
                        .and_then(Value::as_str)
                        .and_then(|s| s.parse::<IpAddr>().ok())
                        .is_none()
                    {
                        push(df(".vip.ip"), "not an IP address".into());
                    }
                }
                if let Some(addrs) = dev.get("addresses").and_then(Value::as_array) {
                    for (k, a) in addrs.iter().enumerate() {
                        if !a.as_str().is_some_and(valid_cidr) {
                            push(
                                df(&format!(".addresses[{k}]")),
                                format!("{a} is not address/prefix"),
                            );
                        }
                    }
                }
            }
            for (j, ns) in n.nameservers.iter().enumerate() {
                if ns.parse::<IpAddr>().is_err() {
                    push(
                        f(&format!("nameservers[{j}]")),
                        format!("{ns:?} is not an IP address"),
                    );
                }
            }
            let sch = self.schematic_for(n);
            if let Err(e) = sch.canonical_yaml() {
                push(f("schematic"), e);
            }
            let exts = &sch.customization.system_extensions.official_extensions;
            for e in exts {
                if !e.starts_with("siderolabs/") {
                    push(
                        f("schematic"),
                        format!("{e:?} is not an official extension (siderolabs/…)"),
                    );
                }
            }
            // siderolabs/amdgpu exists from Talos 1.9 (talos.md §4.4).
            if exts.iter().any(|e| e == "siderolabs/amdgpu")
                && talos.as_ref().is_some_and(|v| v.minor_pair() < (1, 9))
            {
                push(
                    f("schematic"),
                    "siderolabs/amdgpu needs Talos v1.9 or later".into(),
                );
            }
            if let Some(u) = &n.uuid
                && (u.len() != 36 || !u.chars().all(|c| c.is_ascii_hexdigit() || c == '-'))
            {
                push(f("uuid"), format!("{u:?} is not an SMBIOS UUID"));
            }
            if let Some(pw) = &n.power
                && matches!(pw.driver, PowerDriver::Ipmi | PowerDriver::Redfish)
                && pw.address.is_none()
            {
                push(f("power.address"), "required for ipmi and redfish".into());
            }
            check_patches(&f("patches"), &n.patches, &mut push);
        }
        p
    }
}

/// Patches must parse: strings are YAML (a mapping = strategic merge, a sequence =
/// RFC 6902); `@file` references are not supported (inline the patch instead).
fn check_patches(field: &str, patches: &[Value], push: &mut impl FnMut(String, String)) {
    for (i, patch) in patches.iter().enumerate() {
        if let Err(e) = super::patch::Patch::parse(patch) {
            push(format!("{field}[{i}]"), e);
        }
    }
}
