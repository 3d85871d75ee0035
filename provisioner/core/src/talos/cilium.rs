//! The Cilium bootstrap manifest put in `cluster.inlineManifests`.
//!
//! Pattern from Talos' "Deploying Cilium CNI" guide (`website/content/v1.11/
//! kubernetes-guides/network/deploying-cilium.md`, "Method 5: using a job"): Talos
//! applies the manifest right after bootstrap; a Job on the host network, tolerating
//! not-ready nodes, runs `cilium install` with kube-proxy replacement against
//! KubePrism (`localhost:7445`). Before Cilium runs there is no service network, so
//! the Job reaches the API server through the node's own address (`status.podIP` on
//! the host network). ArgoCD adopts the Cilium release later from `gitops/`.

use serde_json::{Value, json};

use super::cluster::CiliumSettings;

/// Name of the inline manifest (and of the Job, its account and binding).
pub const NAME: &str = "cilium-install";

/// KubePrism's local port (enabled by default since the 1.6 contract, talos.md §6.3).
pub const KUBEPRISM_PORT: u16 = 7445;

/// `cilium install` arguments: kube-proxy replacement through KubePrism, and the
/// cgroup and capability settings Talos needs (no SYS_MODULE; cgroup v2 already
/// mounted at /sys/fs/cgroup).
pub fn install_args(c: &CiliumSettings) -> Vec<String> {
    let mut args = vec![
        "cilium".to_string(),
        "install".into(),
        format!("--version={}", c.version),
    ];
    for set in [
        "ipam.mode=kubernetes".to_string(),
        "kubeProxyReplacement=true".into(),
        "securityContext.capabilities.ciliumAgent={CHOWN,KILL,NET_ADMIN,NET_RAW,IPC_LOCK,SYS_ADMIN,SYS_RESOURCE,DAC_OVERRIDE,FOWNER,SETGID,SETUID}".into(),
        "securityContext.capabilities.cleanCiliumState={NET_ADMIN,SYS_ADMIN,SYS_RESOURCE}".into(),
        "cgroup.autoMount.enabled=false".into(),
        "cgroup.hostRoot=/sys/fs/cgroup".into(),
        "k8sServiceHost=localhost".into(),
        format!("k8sServicePort={KUBEPRISM_PORT}"),
    ] {
        args.push("--set".into());
        args.push(set);
    }
    args
}

/// The three Kubernetes objects (ServiceAccount, ClusterRoleBinding, Job).
pub fn objects(c: &CiliumSettings) -> Vec<Value> {
    let tolerate = |effect: Option<&str>| match effect {
        Some(e) => json!({"operator": "Exists", "effect": e}),
        None => json!({"operator": "Exists"}),
    };
    vec![
        json!({
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": NAME, "namespace": "kube-system"}
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": NAME},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
            "subjects": [{"kind": "ServiceAccount", "name": NAME, "namespace": "kube-system"}]
        }),
        json!({
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": NAME, "namespace": "kube-system"},
            "spec": {
                "backoffLimit": 10,
                "template": {
                    "metadata": {"labels": {"app": NAME}},
                    "spec": {
                        "restartPolicy": "OnFailure",
                        "serviceAccountName": NAME,
                        "hostNetwork": true,
                        "tolerations": [
                            tolerate(None),
                            tolerate(Some("NoSchedule")),
                            tolerate(Some("NoExecute")),
                            tolerate(Some("PreferNoSchedule")),
                        ],
                        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                            "nodeSelectorTerms": [{"matchExpressions": [
                                {"key": "node-role.kubernetes.io/control-plane", "operator": "Exists"}
                            ]}]
                        }}},
                        "containers": [{
                            "name": NAME,
                            "image": c.cli_image,
                            "env": [
                                {"name": "KUBERNETES_SERVICE_HOST", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "status.podIP"}}},
                                {"name": "KUBERNETES_SERVICE_PORT", "value": "6443"}
                            ],
                            "command": install_args(c)
                        }]
                    }
                }
            }
        }),
    ]
}

/// The `inlineManifests` entry: the objects as one multi-document YAML string.
pub fn inline_manifest(c: &CiliumSettings) -> Value {
    // Plain JSON trees always serialise.
    let contents = super::yaml::to_string_multi(&objects(c)).unwrap_or_default();
    json!({"name": NAME, "contents": contents})
}
