//! [`TalosCluster::validate`]: everything Talos (or the renderer) would reject in a
//! cluster definition, each problem naming its dotted field path.

use std::collections::BTreeSet;
use std::net::IpAddr;

use serde_json::Value;

use super::cluster::{MAX_TALOS, MIN_TALOS, PowerDriver, Problem, TalosCluster};
use super::version::Version;

impl TalosCluster {
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
            Err(e) => push("talosVersion".into(), e.to_string()),
        }
        if let Err(e) = self.kubernetes_version.parse::<Version>() {
            push("kubernetesVersion".into(), e.to_string());
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
                push(f("schematic"), e.to_string());
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

/// Patches must parse: strings are YAML (a mapping = strategic merge, a sequence =
/// RFC 6902); `@file` references are not supported (inline the patch instead).
fn check_patches(field: &str, patches: &[Value], push: &mut impl FnMut(String, String)) {
    for (i, patch) in patches.iter().enumerate() {
        if let Err(e) = super::patch::Patch::parse(patch) {
            push(format!("{field}[{i}]"), e.to_string());
        }
    }
}
