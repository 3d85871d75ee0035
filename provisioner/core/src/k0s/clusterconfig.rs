//! The k0s `ClusterConfig` (`k0s.k0sproject.io/v1beta1`) for a cluster, as YAML for
//! `/etc/k0s/k0s.yaml` on the controller.
//!
//! Choices (k0s-flatcar.md §7, §8): kine with SQLite (one controller, never
//! `--single`, which would disable Konnectivity and join tokens), Konnectivity on
//! its default ports, telemetry off, and a worker profile that moves
//! `volumePluginDir` off Flatcar's read-only `/usr` (k0s troubleshooting: "k0s does
//! not run on nodes where /usr is read only"), with the controller manager's
//! `flex-volume-plugin-dir` pointing at the same place.
//!
//! One CNI per cluster. With Cilium (the seed's choice: eBPF, no kube-proxy),
//! `network.provider: custom` stops k0s deploying kube-router (k0s v1.36.3+k0s.2
//! `pkg/component/controller/kuberouter.go`: nothing unless the provider is
//! `kuberouter`) and `network.kubeProxy.disabled: true` stops kube-proxy
//! (`pkg/component/controller/kubeproxy.go` `getConfig`; field in
//! `pkg/apis/k0s/v1beta1/kubeproxy.go`). Cilium itself comes as a Helm extension
//! (`spec.extensions.helm`, `pkg/apis/k0s/v1beta1/extensions.go`): k0s's extensions
//! controller installs it from inside the controller process, so it needs no pod
//! network (a CNI delivered as a pod would need one), it runs as soon as the API is
//! up, and every node stays NotReady until it runs, so the hand-off (which waits for
//! every Node Ready) never starts ArgoCD without pod networking. The chart is
//! installed once: k0s upgrades a release only when the chart's version or values in
//! this file change (`extensions_controller.go` `chartNeedsUpgrade`), and this file
//! is written once at install, so ArgoCD adopts the release afterwards (same release
//! name `cilium` in `kube-system`, values in `gitops/manifests/cilium/`, which
//! `provisioner check` compares with [`cilium_values`]). Removing the chart from
//! k0s.yaml would make k0s uninstall it; the appliance never does.

use std::collections::BTreeMap;

use serde::Serialize;

use super::cluster::{K0sCluster, NetworkProvider};

/// Where kubelet looks for FlexVolume plugins on Flatcar nodes (under writable /etc).
pub const VOLUME_PLUGIN_DIR: &str = "/etc/k0s/kubelet-plugins/volume/exec";

/// kine's SQLite DSN, k0s's own default (`storage.go` `DefaultKineConfig`), written
/// out so the file says what it does.
pub const KINE_DSN: &str = "sqlite://file:/var/lib/k0s/db/state.db?mode=rwc&_journal=WAL";

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Doc<'a> {
    api_version: &'static str,
    kind: &'static str,
    metadata: Meta<'a>,
    spec: Spec<'a>,
}

#[derive(Serialize)]
struct Meta<'a> {
    name: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Spec<'a> {
    api: Api,
    storage: Storage,
    network: Net<'a>,
    konnectivity: Konnectivity,
    telemetry: Telemetry,
    controller_manager: ControllerManager,
    worker_profiles: Vec<WorkerProfile<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    extensions: Option<Extensions<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Api {
    address: String,
    port: u16,
    k0s_api_port: u16,
    sans: Vec<String>,
}

#[derive(Serialize)]
struct Storage {
    #[serde(rename = "type")]
    kind: &'static str,
    kine: Kine,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Kine {
    data_source: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Net<'a> {
    provider: &'static str,
    #[serde(rename = "podCIDR")]
    pod_cidr: &'a str,
    #[serde(rename = "serviceCIDR")]
    service_cidr: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    kube_proxy: Option<KubeProxy>,
}

#[derive(Serialize)]
struct KubeProxy {
    disabled: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Konnectivity {
    agent_port: u16,
    admin_port: u16,
}

#[derive(Serialize)]
struct Telemetry {
    enabled: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ControllerManager {
    extra_args: BTreeMap<&'static str, &'static str>,
}

#[derive(Serialize)]
struct WorkerProfile<'a> {
    name: &'a str,
    values: ProfileValues,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ProfileValues {
    volume_plugin_dir: &'static str,
}

#[derive(Serialize)]
struct Extensions<'a> {
    helm: Helm<'a>,
}

#[derive(Serialize)]
struct Helm<'a> {
    repositories: Vec<Repo>,
    charts: Vec<Chart<'a>>,
}

#[derive(Serialize)]
struct Repo {
    name: &'static str,
    url: &'static str,
}

#[derive(Serialize)]
struct Chart<'a> {
    name: &'static str,
    chartname: &'static str,
    version: &'a str,
    namespace: &'static str,
    values: String,
}

/// The Cilium chart values k0s installs: kube-proxy replacement (k0s runs none),
/// reaching the API server directly at the controller's address (there is no
/// service network before Cilium runs, and a bare hostname would not resolve on
/// the nodes), pod CIDRs from the nodes (k0s's controller manager allocates them
/// from `podCIDR`), one operator (one controller). `None` unless the cluster runs
/// Cilium. `gitops/manifests/cilium/` must agree, or ArgoCD's adoption would change
/// the running CNI.
pub fn cilium_values(cluster: &K0sCluster) -> Option<serde_json::Value> {
    if cluster.network.provider != NetworkProvider::Cilium {
        return None;
    }
    let host = cluster.controller_address()?.to_string();
    Some(serde_json::json!({
        "kubeProxyReplacement": true,
        "k8sServiceHost": host,
        "k8sServicePort": 6443,
        "ipam": {"mode": "kubernetes"},
        "operator": {"replicas": 1},
    }))
}

/// Why a ClusterConfig cannot be rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cluster {cluster:?}: {message}")]
pub struct RenderError {
    /// The cluster.
    pub cluster: String,
    /// What is missing.
    pub message: String,
}

/// Renders `/etc/k0s/k0s.yaml` for `cluster`.
pub fn render(cluster: &K0sCluster) -> Result<String, RenderError> {
    let address = cluster.controller_address().ok_or_else(|| RenderError {
        cluster: cluster.cluster_name.clone(),
        message: "the controller has no ipAddress".into(),
    })?;
    let mut sans = vec![address.to_string()];
    for s in &cluster.api_sans {
        if !sans.contains(s) {
            sans.push(s.clone());
        }
    }
    let (provider, extensions) = match (cluster.network.provider, &cluster.network.cilium) {
        (NetworkProvider::Cilium, Some(c)) => (
            "custom",
            Some(Extensions {
                helm: Helm {
                    repositories: vec![Repo {
                        name: "cilium",
                        url: "https://helm.cilium.io",
                    }],
                    charts: vec![Chart {
                        name: "cilium",
                        chartname: "cilium/cilium",
                        version: &c.version,
                        namespace: "kube-system",
                        values: cilium_values(cluster)
                            .map(|v| serde_saphyr::to_string(&v).unwrap_or_default())
                            .unwrap_or_default(),
                    }],
                },
            }),
        ),
        (NetworkProvider::Cilium, None) => {
            return Err(RenderError {
                cluster: cluster.cluster_name.clone(),
                message: "network.provider cilium without network.cilium".into(),
            });
        }
        (NetworkProvider::Kuberouter, _) => ("kuberouter", None),
    };
    let doc = Doc {
        api_version: "k0s.k0sproject.io/v1beta1",
        kind: "ClusterConfig",
        metadata: Meta {
            name: &cluster.cluster_name,
        },
        spec: Spec {
            api: Api {
                address: address.to_string(),
                port: 6443,
                k0s_api_port: 9443,
                sans,
            },
            storage: Storage {
                kind: "kine",
                kine: Kine {
                    data_source: KINE_DSN,
                },
            },
            network: Net {
                provider,
                pod_cidr: &cluster.network.pod_cidr,
                service_cidr: &cluster.network.service_cidr,
                kube_proxy: (provider == "custom").then_some(KubeProxy { disabled: true }),
            },
            konnectivity: Konnectivity {
                agent_port: 8132,
                admin_port: 8133,
            },
            telemetry: Telemetry { enabled: false },
            controller_manager: ControllerManager {
                extra_args: BTreeMap::from([("flex-volume-plugin-dir", VOLUME_PLUGIN_DIR)]),
            },
            worker_profiles: vec![WorkerProfile {
                name: &cluster.worker_profile,
                values: ProfileValues {
                    volume_plugin_dir: VOLUME_PLUGIN_DIR,
                },
            }],
            extensions,
        },
    };
    serde_saphyr::to_string(&doc).map_err(|e| RenderError {
        cluster: cluster.cluster_name.clone(),
        message: e.to_string(),
    })
}
