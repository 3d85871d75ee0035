//! The k0s ClusterConfig rendered from the shipped `infra/beelink.yaml` (and a Cilium
//! variant) against goldens; `UPDATE_GOLDEN=1` rewrites them. Also checks the
//! properties the k0s path depends on, independently of the golden text.

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

#[test]
fn cilium_variant_golden() {
    let mut c = beelink();
    c.network.provider = NetworkProvider::Cilium;
    c.network.cilium = Some(CiliumSpec {
        version: "1.18.2".into(),
    });
    assert_eq!(c.validate(), vec![]);
    golden("k0s-beelink-cilium.yaml", &clusterconfig::render(&c).unwrap());
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
    assert_eq!(spec["network"]["provider"], "kuberouter");
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
