//! What each cluster of `infra/` enforces and runs, for the workload checks:
//! PodSecurity defaults read from the rendered Talos config (so patches count),
//! kubelet mounts, node/VIP addresses, and the CNI its bootstrap installs.

use std::collections::BTreeMap;
use std::net::IpAddr;

use provisioner_core::gitops::cni;
use provisioner_core::gitops::podsecurity::Level;
use provisioner_core::gitops::workloads::ClusterFacts;
use provisioner_core::infra::Infra;
use provisioner_core::talos::{machine, secrets::SecretsBundle};
use serde_json::Value;

fn addresses(strings: impl IntoIterator<Item = String>) -> Vec<IpAddr> {
    strings
        .into_iter()
        .flat_map(|s| s.split(',').map(|x| x.trim().to_string()).collect::<Vec<_>>())
        .filter_map(|s| s.split('/').next().and_then(|a| a.parse().ok()))
        .collect()
}

/// Per cluster: what its bootstrap installs as CNI (`None`: none) and whether a
/// node-local API proxy answers on localhost (Talos KubePrism).
pub(super) type CniFacts = BTreeMap<String, (Option<cni::Bootstrap>, bool)>;

/// Per cluster: PodSecurity defaults, kubelet mounts, addresses, and CNI facts.
pub(super) fn cluster_facts(infra: &Infra) -> (BTreeMap<String, ClusterFacts>, CniFacts) {
    let mut facts = BTreeMap::new();
    let mut cnis = BTreeMap::new();
    let src = |n: &str| {
        infra
            .sources
            .get(n)
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    };
    for (name, c) in &infra.talos {
        let mut f = ClusterFacts {
            file: src(name),
            talos: true,
            ..ClusterFacts::default()
        };
        // Secrets do not change what is checked here; the real bundle stays sealed.
        let bundle = SecretsBundle::default();
        for n in &c.nodes {
            let Ok(cfg) = machine::render(c, &n.hostname, &bundle) else {
                continue;
            };
            let doc = &cfg.documents[0];
            let mounts = doc
                .pointer("/machine/kubelet/extraMounts")
                .and_then(Value::as_array)
                .cloned();
            f.kubelet_mounts
                .push((n.hostname.clone(), mounts.unwrap_or_default()));
            if let Some(psa) = doc
                .pointer("/cluster/apiServer/admissionControl")
                .and_then(Value::as_array)
                .and_then(|a| {
                    a.iter()
                        .find(|p| p.get("name").and_then(Value::as_str) == Some("PodSecurity"))
                })
            {
                let cfg = &psa["configuration"];
                f.enforce = cfg
                    .pointer("/defaults/enforce")
                    .and_then(Value::as_str)
                    .and_then(Level::parse);
                f.exempt = cfg
                    .pointer("/exemptions/namespaces")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect();
                f.enforce_source = format!("the PodSecurity defaults of {}'s rendered Talos config", f.file);
            }
            let vips = n
                .network_interfaces
                .iter()
                .filter_map(|i| i.pointer("/vip/ip").and_then(Value::as_str));
            f.addresses
                .extend(addresses(vips.map(str::to_string).chain([n.ip_address.clone()])));
        }
        if f.enforce.is_none() {
            f.enforce = Some(Level::Privileged);
            f.enforce_source = format!(
                "{} configures no PodSecurity admission: Kubernetes defaults to privileged",
                f.file
            );
        }
        f.addresses
            .extend(addresses(c.additional_api_server_cert_sans.iter().cloned()));
        let cni_name = c
            .cni_config
            .as_ref()
            .and_then(|v| v.get("name"))
            .and_then(Value::as_str);
        let boot = match (&c.cilium, cni_name) {
            (Some(cs), _) => Some(cni::Bootstrap::Cilium(cni::set_values(
                &provisioner_core::talos::cilium::install_args(cs),
            ))),
            (None, Some("none")) => None,
            (None, Some("custom")) => Some(cni::Bootstrap::Other("a custom CNI", "cniConfig.name custom")),
            (None, _) => Some(cni::Bootstrap::Other(
                "flannel",
                "cniConfig absent or flannel: Talos' default",
            )),
        };
        cnis.insert(name.clone(), (boot, true));
        facts.insert(name.clone(), f);
    }
    for (name, c) in &infra.k0s {
        let f = ClusterFacts {
            file: src(name),
            talos: false,
            enforce: Some(Level::Privileged),
            enforce_source: "k0s configures no PodSecurity admission (k0s docs/podsecurity.md): Kubernetes' default privileged".into(),
            addresses: addresses(c.nodes.iter().filter_map(|n| n.ip_address.map(|i| i.to_string())).chain(c.api_sans.iter().cloned())),
            ..ClusterFacts::default()
        };
        let boot = match provisioner_core::k0s::clusterconfig::cilium_values(c) {
            Some(v) => Some(cni::Bootstrap::Cilium(v)),
            None => Some(cni::Bootstrap::Other(
                "kube-router",
                "network.provider kuberouter",
            )),
        };
        cnis.insert(name.clone(), (boot, false));
        facts.insert(name.clone(), f);
    }
    (facts, cnis)
}
