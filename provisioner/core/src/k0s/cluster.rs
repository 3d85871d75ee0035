//! The k0s cluster definition (`infra/<name>.yaml` with `distribution: k0s`).
//!
//! Shape (field names follow the Talos files' talhelper style where they overlap):
//! `clusterName`, `k0sVersion`, `flatcarVersion`, `apiSans`, `network`, `workerProfile`
//! and `nodes[]` (`hostname`, `controlPlane`, `ipAddress`, `mac`, `installDisk`).
//! Exactly one node is the controller: kine/SQLite is not joinable, so a second
//! controller is impossible (k0s-flatcar.md §8.2). Validation returns every problem
//! as (dotted field, message) so `provisioner check` can name file and field.

use std::collections::BTreeSet;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::model::MacAddr;

/// Which CNI the cluster runs. `kuberouter` is k0s's default; `cilium` makes k0s
/// install no CNI (`provider: custom`) and deploys Cilium as a Helm extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum NetworkProvider {
    /// kube-router (k0s default).
    #[default]
    Kuberouter,
    /// Cilium through `spec.extensions.helm`.
    Cilium,
}

/// Cilium chart settings (only with `provider: cilium`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CiliumSpec {
    /// Chart version, e.g. `1.18.2`.
    pub version: String,
}

/// `network:` of a k0s cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Network {
    /// CNI.
    #[serde(default)]
    pub provider: NetworkProvider,
    /// Pod CIDR (k0s default 10.244.0.0/16).
    #[serde(default = "default_pod_cidr", rename = "podCIDR")]
    pub pod_cidr: String,
    /// Service CIDR (k0s default 10.96.0.0/12).
    #[serde(default = "default_service_cidr", rename = "serviceCIDR")]
    pub service_cidr: String,
    /// Cilium chart, required with `provider: cilium`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cilium: Option<CiliumSpec>,
}

fn default_pod_cidr() -> String {
    "10.244.0.0/16".into()
}
fn default_service_cidr() -> String {
    "10.96.0.0/12".into()
}
fn default_profile() -> String {
    "flatcar".into()
}

impl Default for Network {
    fn default() -> Self {
        Self {
            provider: NetworkProvider::default(),
            pod_cidr: default_pod_cidr(),
            service_cidr: default_service_cidr(),
            cilium: None,
        }
    }
}

/// One machine of the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct K0sNode {
    /// Node name; also the group's `metadata.hostname` that selects it.
    pub hostname: String,
    /// The one controller (`k0s install controller --enable-worker --no-taints`).
    #[serde(default)]
    pub control_plane: bool,
    /// Address the node gets (DHCP reservation); required on the controller, whose
    /// address is the API endpoint, the API SAN and the join URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_address: Option<IpAddr>,
    /// Boot NIC; when set, only this MAC gets the node's config.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<MacAddr>,
    /// The node's other NICs: the installed OS may fetch its config or call back
    /// through one of them (peer binding, `crate::release::binding`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub other_macs: Vec<MacAddr>,
    /// `flatcar-install -d`; without it `-s` (smallest unmounted disk ≥ 10 GB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub install_disk: Option<String>,
}

/// A k0s cluster on Flatcar.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct K0sCluster {
    /// Always `k0s` here.
    pub distribution: String,
    /// Cluster name; equals the file stem.
    pub cluster_name: String,
    /// k0s release tag, e.g. `v1.36.3+k0s.2`.
    pub k0s_version: String,
    /// Flatcar release installed to disk (`flatcar-install -V`), e.g. `4459.2.0`.
    pub flatcar_version: String,
    /// Extra API server SANs besides the controller's address.
    #[serde(default)]
    pub api_sans: Vec<String>,
    /// CNI and CIDRs.
    #[serde(default)]
    pub network: Network,
    /// Worker profile name passed as `--profile` (moves `volumePluginDir` to /etc).
    #[serde(default = "default_profile")]
    pub worker_profile: String,
    /// `auto | approve` for this cluster's installs (`crate::release::admission`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admission: Option<crate::release::admission::Admission>,
    /// The machines.
    pub nodes: Vec<K0sNode>,
}

impl K0sCluster {
    /// The node named `hostname`.
    pub fn node(&self, hostname: &str) -> Option<&K0sNode> {
        self.nodes.iter().find(|n| n.hostname == hostname)
    }

    /// The controller (validation guarantees exactly one).
    pub fn controller(&self) -> Option<&K0sNode> {
        self.nodes.iter().find(|n| n.control_plane)
    }

    /// The controller's address: API endpoint, SAN and join URL host.
    pub fn controller_address(&self) -> Option<IpAddr> {
        self.controller().and_then(|n| n.ip_address)
    }

    /// `https://<controller>:6443`, the Kube API URL workers join (k0s-flatcar.md §9).
    pub fn api_url(&self) -> Option<String> {
        self.controller_address().map(|ip| match ip {
            IpAddr::V4(v4) => format!("https://{v4}:6443"),
            IpAddr::V6(v6) => format!("https://[{v6}]:6443"),
        })
    }

    /// Every problem as (field, message); empty when the definition is usable.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut e: Vec<(String, String)> = Vec::new();
        let mut push = |f: &str, m: String| e.push((f.to_string(), m));
        if self.distribution != "k0s" {
            push("distribution", format!("{:?} is not k0s", self.distribution));
        }
        if !valid_k0s_version(&self.k0s_version) {
            push(
                "k0sVersion",
                format!(
                    "{:?} is not a k0s release tag like v1.36.3+k0s.0",
                    self.k0s_version
                ),
            );
        }
        if !valid_flatcar_version(&self.flatcar_version) {
            push(
                "flatcarVersion",
                format!(
                    "{:?} is not a Flatcar release like 4459.2.0",
                    self.flatcar_version
                ),
            );
        }
        for (i, san) in self.api_sans.iter().enumerate() {
            if !valid_san(san) {
                push(
                    &format!("apiSans[{i}]"),
                    format!("{san:?} is neither an IP address nor a DNS name"),
                );
            }
        }
        for (f, v) in [
            ("network.podCIDR", &self.network.pod_cidr),
            ("network.serviceCIDR", &self.network.service_cidr),
        ] {
            if !valid_cidr(v) {
                push(f, format!("{v:?} is not a CIDR like 10.244.0.0/16"));
            }
        }
        match (self.network.provider, &self.network.cilium) {
            (NetworkProvider::Cilium, None) => push(
                "network.cilium",
                "required with provider cilium (the chart version)".into(),
            ),
            (NetworkProvider::Kuberouter, Some(_)) => {
                push("network.cilium", "only allowed with provider cilium".into())
            }
            (NetworkProvider::Cilium, Some(c)) if !valid_semver(&c.version) => push(
                "network.cilium.version",
                format!("{:?} is not a version like 1.18.2", c.version),
            ),
            _ => {}
        }
        if !valid_hostname(&self.worker_profile) {
            push(
                "workerProfile",
                format!("{:?} must be a lower-case name like flatcar", self.worker_profile),
            );
        }
        let mut hosts = BTreeSet::new();
        let mut macs = BTreeSet::new();
        let mut ips = BTreeSet::new();
        for (i, n) in self.nodes.iter().enumerate() {
            let f = |k: &str| format!("nodes[{i}].{k}");
            if !valid_hostname(&n.hostname) {
                push(
                    &f("hostname"),
                    format!("{:?} is not a DNS label (RFC 1123)", n.hostname),
                );
            } else if !hosts.insert(n.hostname.clone()) {
                push(
                    &f("hostname"),
                    format!("{:?} is used by another node", n.hostname),
                );
            }
            if let Some(m) = n.mac
                && !macs.insert(m)
            {
                push(&f("mac"), format!("{m} is used by another node"));
            }
            if let Some(ip) = n.ip_address
                && !ips.insert(ip)
            {
                push(&f("ipAddress"), format!("{ip} is used by another node"));
            }
            if let Some(d) = &n.install_disk
                && (!d.starts_with("/dev/") || d.chars().any(|c| c.is_whitespace() || c == '\''))
            {
                push(
                    &f("installDisk"),
                    format!("{d:?} is not a device path like /dev/nvme0n1"),
                );
            }
            if n.control_plane && n.ip_address.is_none() {
                push(
                    &f("ipAddress"),
                    "required on the controller: it is the API address, SAN and join URL".into(),
                );
            }
        }
        match self.nodes.iter().filter(|n| n.control_plane).count() {
            0 => push("nodes", "no controlPlane: true node".into()),
            1 => {}
            n => push(
                "nodes",
                format!(
                    "{n} controlPlane nodes: kine/SQLite cannot take a second controller \
                     (k0s-flatcar.md §8.2)"
                ),
            ),
        }
        e
    }
}

/// `v<major>.<minor>.<patch>+k0s.<n>`.
pub fn valid_k0s_version(v: &str) -> bool {
    let Some(rest) = v.strip_prefix('v') else {
        return false;
    };
    let Some((kube, k0s)) = rest.split_once("+k0s.") else {
        return false;
    };
    valid_semver(kube) && !k0s.is_empty() && k0s.chars().all(|c| c.is_ascii_digit())
}

/// `<build>.<branch>.<patch>`, all digits.
pub fn valid_flatcar_version(v: &str) -> bool {
    valid_semver(v)
}

fn valid_semver(v: &str) -> bool {
    let parts: Vec<&str> = v.split('.').collect();
    parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.len() <= 9 && p.chars().all(|c| c.is_ascii_digit()))
}

/// RFC 1123 label: lower-case letters, digits, '-', not at the ends, ≤ 63.
pub fn valid_hostname(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 63
        && !h.starts_with('-')
        && !h.ends_with('-')
        && h.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

fn valid_san(s: &str) -> bool {
    s.parse::<IpAddr>().is_ok()
        || (!s.is_empty()
            && s.len() <= 253
            && s.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && !l.starts_with('-')
                    && !l.ends_with('-')
                    && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            }))
}

fn valid_cidr(s: &str) -> bool {
    let Some((ip, len)) = s.split_once('/') else {
        return false;
    };
    match (ip.parse::<IpAddr>(), len.parse::<u8>()) {
        (Ok(IpAddr::V4(_)), Ok(l)) => l <= 32,
        (Ok(IpAddr::V6(_)), Ok(l)) => l <= 128,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> K0sCluster {
        serde_saphyr::from_str(
            "distribution: k0s\nclusterName: lab\nk0sVersion: v1.36.3+k0s.2\n\
             flatcarVersion: 4459.2.0\napiSans: [k0s-api.lan]\n\
             nodes:\n  - {hostname: c1, controlPlane: true, ipAddress: 10.0.20.11}\n\
             \x20 - {hostname: w1, mac: '52:54:00:00:00:02'}\n",
        )
        .unwrap()
    }

    #[test]
    fn sample_is_valid_with_defaults() {
        let c = sample();
        assert_eq!(c.validate(), vec![]);
        assert_eq!(c.network.provider, NetworkProvider::Kuberouter);
        assert_eq!(c.worker_profile, "flatcar");
        assert_eq!(c.api_url().as_deref(), Some("https://10.0.20.11:6443"));
    }

    #[test]
    fn problems_name_their_fields() {
        let mut c = sample();
        c.k0s_version = "1.36".into();
        c.flatcar_version = "current".into();
        c.nodes[1].control_plane = true;
        c.nodes[1].hostname = "C1!".into();
        c.nodes[0].install_disk = Some("sda".into());
        c.network.provider = NetworkProvider::Cilium;
        c.network.pod_cidr = "10.244.0.0".into();
        let fields: Vec<String> = c.validate().into_iter().map(|(f, _)| f).collect();
        for want in [
            "k0sVersion",
            "flatcarVersion",
            "network.podCIDR",
            "network.cilium",
            "nodes[1].hostname",
            "nodes[0].installDisk",
            "nodes[1].ipAddress",
            "nodes",
        ] {
            assert!(fields.iter().any(|f| f == want), "{want} missing in {fields:?}");
        }
    }

    #[test]
    fn versions() {
        assert!(valid_k0s_version("v1.34.1+k0s.0"));
        assert!(!valid_k0s_version("v1.34.1"));
        assert!(!valid_k0s_version("v1.34.1+k0s."));
        assert!(valid_flatcar_version("4459.2.0"));
        assert!(!valid_flatcar_version("4459.2"));
    }
}
