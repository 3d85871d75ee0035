//! The k0s ClusterConfig rendered from the shipped `infra/beelink.yaml` (Cilium, no
//! kube-proxy, no kube-router) and a kube-router variant against goldens;
//! `UPDATE_GOLDEN=1` rewrites them. Also checks the properties the k0s path depends
//! on, independently of the golden text.

use std::path::{Path, PathBuf};

use provisioner_core::k0s::cluster::{CiliumSpec, NetworkProvider};
use provisioner_core::k0s::{K0sCluster, clusterconfig};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn beelink() -> K0sCluster {
    let text = std::fs::read_to_string(repo().join("infra/beelink.yaml")).unwrap();
    let c: K0sCluster = serde_saphyr::from_str(&text).unwrap();
    assert_eq!(c.validate(), vec![], "infra/beelink.yaml must validate");
    c
}

fn golden(name: &str, got: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, got).unwrap();
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run with UPDATE_GOLDEN=1)", path.display()));
    assert_eq!(
        got,
        want,
        "{} differs (UPDATE_GOLDEN=1 to accept)",
        path.display()
    );
}

#[test]
fn beelink_clusterconfig_golden() {
    let yaml = clusterconfig::render(&beelink()).unwrap();
    golden("k0s-beelink.yaml", &yaml);
}

/// k0s's default CNI: kube-router and kube-proxy both run, and nothing is installed
/// as an extension.
#[test]
fn kuberouter_variant_golden() {
    let mut c = beelink();
    c.network.provider = NetworkProvider::Kuberouter;
    c.network.cilium = None;
    assert_eq!(c.validate(), vec![]);
    let yaml = clusterconfig::render(&c).unwrap();
    let v: serde_json::Value = serde_saphyr::from_str(&yaml).unwrap();
    assert_eq!(v["spec"]["network"]["provider"], "kuberouter");
    assert!(v["spec"]["network"].get("kubeProxy").is_none(), "{yaml}");
    assert!(v["spec"].get("extensions").is_none(), "{yaml}");
    assert_eq!(clusterconfig::cilium_values(&c), None);
    golden("k0s-beelink-kuberouter.yaml", &yaml);
}

/// One CNI: the shipped cluster runs Cilium with neither kube-router
/// (`provider: custom`) nor kube-proxy (`kubeProxy.disabled`), field names from k0s
/// v1.36.3+k0s.2 `pkg/apis/k0s/v1beta1/network.go` and `kubeproxy.go`; Cilium is the
/// Helm extension (`extensions.go`: `name`, `chartname`, `version`, `namespace`,
/// `values` as a YAML string) reaching the API at the controller's address.
#[test]
fn shipped_cluster_runs_one_cni() {
    let c = beelink();
    assert_eq!(c.network.provider, NetworkProvider::Cilium);
    let v: serde_json::Value = serde_saphyr::from_str(&clusterconfig::render(&c).unwrap()).unwrap();
    let net = &v["spec"]["network"];
    assert_eq!(net["provider"], "custom", "custom = no kube-router");
    assert_eq!(net["kubeProxy"]["disabled"], true);
    let charts = v["spec"]["extensions"]["helm"]["charts"].as_array().unwrap();
    assert_eq!(charts.len(), 1);
    let chart = &charts[0];
    assert_eq!(
        chart["name"], "cilium",
        "ArgoCD's cilium Application uses releaseName cilium"
    );
    assert_eq!(chart["namespace"], "kube-system");
    assert_eq!(chart["chartname"], "cilium/cilium");
    let spec: &CiliumSpec = c.network.cilium.as_ref().unwrap();
    assert_eq!(chart["version"], spec.version.as_str());
    let repo = &v["spec"]["extensions"]["helm"]["repositories"][0];
    assert_eq!(
        (repo["name"].as_str(), repo["url"].as_str()),
        (Some("cilium"), Some("https://helm.cilium.io"))
    );
    let values: serde_json::Value = serde_saphyr::from_str(chart["values"].as_str().unwrap()).unwrap();
    assert_eq!(values, clusterconfig::cilium_values(&c).unwrap());
    assert_eq!(values["kubeProxyReplacement"], true);
    let host = values["k8sServiceHost"].as_str().unwrap();
    assert_eq!(
        host,
        c.controller_address().unwrap().to_string(),
        "an address the nodes reach"
    );
    assert_eq!(values["k8sServicePort"], 6443);
}

/// The facts the design relies on, read back from the YAML (not the golden text).
#[test]
fn clusterconfig_properties() {
    let c = beelink();
    let v: serde_json::Value = serde_saphyr::from_str(&clusterconfig::render(&c).unwrap()).unwrap();
    let spec = &v["spec"];
    assert_eq!(v["apiVersion"], "k0s.k0sproject.io/v1beta1");
    assert_eq!(v["kind"], "ClusterConfig");
    assert_eq!(spec["storage"]["type"], "kine");
    assert!(
        spec["storage"]["kine"]["dataSource"]
            .as_str()
            .unwrap()
            .starts_with("sqlite://")
    );
    assert_eq!(spec["telemetry"]["enabled"], false);
    assert_eq!(spec["network"]["provider"], "custom");
    assert_eq!(spec["konnectivity"]["agentPort"], 8132);
    let ctrl = c.controller_address().unwrap().to_string();
    assert_eq!(spec["api"]["address"], ctrl.as_str());
    let sans: Vec<&str> = spec["api"]["sans"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s.as_str())
        .collect();
    assert!(sans.contains(&ctrl.as_str()), "{sans:?}");
    assert!(sans.contains(&"k0s-api.beelink.lan"), "{sans:?}");
    let profile = &spec["workerProfiles"][0];
    assert_eq!(profile["name"], c.worker_profile.as_str());
    let dir = profile["values"]["volumePluginDir"].as_str().unwrap();
    assert!(
        dir.starts_with("/etc/"),
        "volumePluginDir must be off read-only /usr: {dir}"
    );
    assert_eq!(
        spec["controllerManager"]["extraArgs"]["flex-volume-plugin-dir"],
        dir
    );
}
