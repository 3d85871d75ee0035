//! Per-node Talos v1alpha1 machine configs, as a pure function of (cluster, node,
//! secrets).
//!
//! The document follows `talosctl gen config` for the 1.11 contract (the golden
//! files `stability/v1.11/base-{controlplane,worker}.yaml`, talos.md §6.1–§6.5), then
//! adds what the cluster file says: install disk and factory installer image,
//! hostname, interfaces (VIP on control-plane NICs), nameservers, CNI, kube-proxy
//! off plus the Cilium inline manifest, then cluster, group and node patches in that
//! order (talhelper's order). Workers get CA certificates without keys and none of
//! the control-plane sections (§6.2).

use serde_json::{Map, Value, json};

use super::cluster::{TalosCluster, TalosNode};
use super::patch::Patch;
use super::secrets::{CertAndKey, SecretsBundle};

/// Why a config cannot be rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RenderError {
    /// No node with that hostname in the cluster.
    #[error("cluster {cluster:?} has no node {node:?}")]
    NoSuchNode {
        /// Cluster name.
        cluster: String,
        /// Requested hostname.
        node: String,
    },
    /// The cluster definition is invalid (field, message).
    #[error("cluster definition: field `{0}`: {1}")]
    Invalid(String, String),
    /// A patch does not apply.
    #[error("patch {0}: {1}")]
    Patch(String, String),
}

/// A rendered machine config: the v1alpha1 document first, then any extra documents
/// patches added.
#[derive(Debug, Clone, PartialEq)]
pub struct MachineConfig {
    /// The documents.
    pub documents: Vec<Value>,
}

impl MachineConfig {
    /// The YAML Talos fetches (`---`-separated documents).
    pub fn to_yaml(&self) -> String {
        // JSON trees always serialise.
        super::yaml::to_string_multi(&self.documents).unwrap_or_default()
    }
}

/// The view of a document that Talos' published JSON schema describes. The v1.11
/// schema (`config.schema.json`, `v1alpha1.Config`) has `additionalProperties: false`
/// but does not list `persist`, which `talosctl gen config` itself emits and Talos
/// accepts; every golden file fails on that one key. Validation therefore checks the
/// document without it.
pub fn schema_instance(doc: &Value) -> Value {
    let mut d = doc.clone();
    if d.get("version").and_then(Value::as_str) == Some("v1alpha1")
        && d.get("kind").is_none()
        && let Some(o) = d.as_object_mut()
    {
        o.remove("persist");
    }
    d
}

const DEFAULT_POD_NET: &str = "10.244.0.0/16";
const DEFAULT_SVC_NET: &str = "10.96.0.0/12";
const DEFAULT_REGISTRY: &str = "factory.talos.dev";

fn ca(c: &CertAndKey, with_key: bool) -> Value {
    json!({"crt": c.crt, "key": if with_key { c.key.as_str() } else { "" }})
}

fn endpoint_host(endpoint: &str) -> String {
    let hp = endpoint.trim_start_matches("https://");
    let host = hp.rsplit_once(':').map(|(h, _)| h).unwrap_or(hp);
    host.trim_start_matches('[').trim_end_matches(']').to_string()
}

fn push_unique(list: &mut Vec<Value>, items: impl IntoIterator<Item = String>) {
    for i in items {
        let v = Value::String(i);
        if !list.contains(&v) {
            list.push(v);
        }
    }
}

/// Renders the machine config of `hostname` in `cluster`.
pub fn render(
    cluster: &TalosCluster,
    hostname: &str,
    secrets: &SecretsBundle,
) -> Result<MachineConfig, RenderError> {
    let node = cluster.node(hostname).ok_or_else(|| RenderError::NoSuchNode {
        cluster: cluster.cluster_name.clone(),
        node: hostname.to_string(),
    })?;
    if let Some((f, m)) = cluster.validate().into_iter().next() {
        return Err(RenderError::Invalid(f, m));
    }
    let cp = node.control_plane;
    let mut doc = json!({
        "version": "v1alpha1",
        "debug": false,
        "persist": true,
        "machine": machine_section(cluster, node, secrets),
        "cluster": cluster_section(cluster, node, secrets),
    });
    if cp && let Some(c) = &cluster.cilium {
        doc["cluster"]["inlineManifests"] = json!([super::cilium::inline_manifest(c)]);
    }
    let mut docs = vec![doc];
    let group = if cp {
        &cluster.control_plane
    } else {
        &cluster.worker
    };
    let layers = [
        ("patches", &cluster.patches),
        (
            if cp {
                "controlPlane.patches"
            } else {
                "worker.patches"
            },
            &group.patches,
        ),
        ("node patches", &node.patches),
    ];
    for (name, patches) in layers {
        for (i, p) in patches.iter().enumerate() {
            let where_ = format!("{name}[{i}]");
            let patch = Patch::parse(p).map_err(|e| RenderError::Patch(where_.clone(), e.to_string()))?;
            patch
                .apply(&mut docs)
                .map_err(|e| RenderError::Patch(where_, e.to_string()))?;
        }
    }
    Ok(MachineConfig { documents: docs })
}

fn machine_section(cluster: &TalosCluster, node: &TalosNode, s: &SecretsBundle) -> Value {
    let cp = node.control_plane;
    let group = if cp {
        &cluster.control_plane
    } else {
        &cluster.worker
    };
    let mut cert_sans = Vec::new();
    push_unique(
        &mut cert_sans,
        cluster.additional_machine_cert_sans.iter().cloned(),
    );
    push_unique(&mut cert_sans, node.cert_sans.iter().cloned());

    let mut network = Map::new();
    network.insert("hostname".into(), json!(node.hostname));
    if !node.network_interfaces.is_empty() {
        network.insert("interfaces".into(), json!(node.network_interfaces));
    }
    let ns = if node.nameservers.is_empty() {
        &group.nameservers
    } else {
        &node.nameservers
    };
    if !ns.is_empty() {
        network.insert("nameservers".into(), json!(ns));
    }
    if let Some(d) = node.disable_search_domain {
        network.insert("disableSearchDomain".into(), json!(d));
    }

    let mut install = Map::new();
    if let Some(d) = &node.install_disk {
        install.insert("disk".into(), json!(d));
    }
    if let Some(sel) = &node.install_disk_selector {
        install.insert("diskSelector".into(), sel.clone());
    }
    install.insert("image".into(), json!(installer_image(cluster, node)));
    install.insert("wipe".into(), json!(false));

    let mut labels = Map::new();
    if cp {
        // Default control-plane label since the 1.8 contract (talos.md §6.3).
        labels.insert(
            "node.kubernetes.io/exclude-from-external-load-balancers".into(),
            json!(""),
        );
    }
    for (k, v) in group.node_labels.iter().chain(node.node_labels.iter()) {
        labels.insert(k.clone(), json!(v));
    }

    let mut m = json!({
        "type": if cp { "controlplane" } else { "worker" },
        "token": s.trustdinfo.token,
        "ca": ca(&s.certs.os, cp),
        "certSANs": cert_sans,
        "kubelet": {
            "image": format!("ghcr.io/siderolabs/kubelet:{}", cluster.kubernetes_version),
            "defaultRuntimeSeccompProfileEnabled": true,
            "disableManifestsDirectory": true,
        },
        "network": network,
        "install": install,
        "features": {
            "rbac": true,
            "stableHostname": true,
            "apidCheckExtKeyUsage": true,
            "diskQuotaSupport": true,
            "kubePrism": {"enabled": true, "port": super::cilium::KUBEPRISM_PORT},
            "hostDNS": {"enabled": true, "forwardKubeDNSToHost": true},
        },
    });
    if !labels.is_empty() {
        m["nodeLabels"] = Value::Object(labels);
    }
    if !node.node_annotations.is_empty() {
        m["nodeAnnotations"] = json!(node.node_annotations);
    }
    if !node.node_taints.is_empty() {
        m["nodeTaints"] = json!(node.node_taints);
    }
    m
}

/// `machine.install.image`: the node's explicit installer, else the factory installer
/// for its schematic and the pinned Talos version (talos.md §4.6).
pub fn installer_image(cluster: &TalosCluster, node: &TalosNode) -> String {
    if let Some(u) = &node.talos_image_url {
        return if u.rsplit('/').next().is_some_and(|l| l.contains(':')) {
            u.clone()
        } else {
            format!("{u}:{}", cluster.talos_version)
        };
    }
    let id = cluster.schematic_for(node).id().unwrap_or_default();
    let reg = cluster.installer_registry.as_deref().unwrap_or(DEFAULT_REGISTRY);
    format!("{reg}/metal-installer/{id}:{}", cluster.talos_version)
}

fn cluster_section(cluster: &TalosCluster, node: &TalosNode, s: &SecretsBundle) -> Value {
    let cp = node.control_plane;
    let k8s = &cluster.kubernetes_version;
    let pods = if cluster.cluster_pod_nets.is_empty() {
        vec![DEFAULT_POD_NET.to_string()]
    } else {
        cluster.cluster_pod_nets.clone()
    };
    let svcs = if cluster.cluster_svc_nets.is_empty() {
        vec![DEFAULT_SVC_NET.to_string()]
    } else {
        cluster.cluster_svc_nets.clone()
    };
    let mut network = Map::new();
    if let Some(cni) = &cluster.cni_config {
        network.insert("cni".into(), cni.clone());
    }
    network.insert(
        "dnsDomain".into(),
        json!(cluster.domain.as_deref().unwrap_or("cluster.local")),
    );
    network.insert("podSubnets".into(), json!(pods));
    network.insert("serviceSubnets".into(), json!(svcs));

    let mut c = json!({
        "id": s.cluster.id,
        "secret": s.cluster.secret,
        "controlPlane": {"endpoint": cluster.endpoint},
        "clusterName": cluster.cluster_name,
        "network": network,
        "token": s.secrets.bootstraptoken,
    });
    let o = c.as_object_mut().expect("literal object");
    if cp {
        if let Some(sb) = &s.secrets.secretboxencryptionsecret {
            o.insert("secretboxEncryptionSecret".into(), json!(sb));
        }
        if let Some(a) = &s.secrets.aescbcencryptionsecret {
            o.insert("aescbcEncryptionSecret".into(), json!(a));
        }
    }
    o.insert("ca".into(), ca(&s.certs.k8s, cp));
    if cp {
        o.insert("aggregatorCA".into(), ca(&s.certs.k8saggregator, true));
        o.insert(
            "serviceAccount".into(),
            json!({"key": s.certs.k8sserviceaccount.key}),
        );
        let mut sans = Vec::new();
        push_unique(&mut sans, [endpoint_host(&cluster.endpoint)]);
        push_unique(&mut sans, cluster.additional_api_server_cert_sans.iter().cloned());
        o.insert(
            "apiServer".into(),
            json!({
                "image": format!("registry.k8s.io/kube-apiserver:{k8s}"),
                "certSANs": sans,
                "disablePodSecurityPolicy": true,
                "admissionControl": [{
                    "name": "PodSecurity",
                    "configuration": {
                        "apiVersion": "pod-security.admission.config.k8s.io/v1alpha1",
                        "defaults": {
                            "audit": "restricted", "audit-version": "latest",
                            "enforce": "baseline", "enforce-version": "latest",
                            "warn": "restricted", "warn-version": "latest",
                        },
                        "exemptions": {"namespaces": ["kube-system"], "runtimeClasses": [], "usernames": []},
                        "kind": "PodSecurityConfiguration",
                    },
                }],
                "auditPolicy": {"apiVersion": "audit.k8s.io/v1", "kind": "Policy", "rules": [{"level": "Metadata"}]},
            }),
        );
        o.insert(
            "controllerManager".into(),
            json!({"image": format!("registry.k8s.io/kube-controller-manager:{k8s}")}),
        );
        let mut proxy = json!({"image": format!("registry.k8s.io/kube-proxy:{k8s}")});
        if cluster.cilium.is_some() {
            proxy["disabled"] = json!(true);
        }
        o.insert("proxy".into(), proxy);
        o.insert(
            "scheduler".into(),
            json!({"image": format!("registry.k8s.io/kube-scheduler:{k8s}")}),
        );
    } else if cluster.cilium.is_some() {
        // kube-proxy is cluster-wide; the Cilium guide's patch sets it on every node.
        o.insert("proxy".into(), json!({"disabled": true}));
    }
    o.insert(
        "discovery".into(),
        json!({"enabled": true, "registries": {"kubernetes": {"disabled": true}, "service": {}}}),
    );
    if cp {
        o.insert("etcd".into(), json!({"ca": ca(&s.certs.etcd, true)}));
        if let Some(a) = cluster.allow_scheduling_on_control_planes {
            o.insert("allowSchedulingOnControlPlanes".into(), json!(a));
        }
    }
    c
}
