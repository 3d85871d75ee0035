//! Will the clusters admit what `gitops/` deploys? PodSecurity levels per namespace,
//! the needs of the Helm charts that cannot be rendered offline, Longhorn's kubelet
//! mount on Talos, and (in [`super::metallb`]) MetalLB's address pools.
//!
//! A namespace's level is, as the `PodSecurity` admission plugin decides it
//! (pod-security-admission `admission/admission.go`): exempt namespaces of the
//! cluster's admission configuration are not evaluated; else the namespace's
//! `pod-security.kubernetes.io/enforce` label; else the configuration's default.
//! Talos generates `enforce: baseline` with `kube-system` exempt (talos
//! `pkg/machinery/config/generate/init.go`, `PodSecurityAdmissionEnabled`; the
//! v1.11 stability golden `base-controlplane.yaml`), read here from each cluster's
//! rendered config so patches count. k0s passes no admission configuration
//! (k0s v1.36.3+k0s.2 `pkg/component/controller/apiserver.go`:
//! `enable-admission-plugins: NodeRestriction`; `docs/podsecurity.md`), which
//! leaves Kubernetes' default, `privileged`. Labels come from Namespace objects in
//! directory sources and from `syncPolicy.managedNamespaceMetadata`, which Argo CD
//! applies to the destination namespace also when it exists (argo-cd
//! `controller/sync_namespace.go` `syncNamespace`).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::Finding;
use super::podsecurity::{self, Level};

/// The label the admission plugin reads.
pub const ENFORCE: &str = "pod-security.kubernetes.io/enforce";

/// A Helm chart source of an Application, with its values merged in Helm's order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ChartSource {
    /// Chart name.
    pub chart: String,
    /// `valueFiles` then `values`/`valuesObject`, deep-merged.
    pub values: Value,
    /// The value files read from this repository (repository path, values), in order.
    pub files: Vec<(String, Value)>,
}

/// One Application, hand-written or generated, as these checks need it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Deployment {
    /// File that declares it.
    pub file: String,
    /// `Application/<name>` or `ApplicationSet/<set> (<generated name>)`.
    pub object: String,
    /// `destination.name`.
    pub cluster: String,
    /// `destination.namespace`.
    pub namespace: String,
    /// Helm chart sources.
    pub charts: Vec<ChartSource>,
    /// Objects of its directory sources (file, object).
    pub objects: Vec<(String, Value)>,
    /// `managedNamespaceMetadata.labels` when `CreateNamespace=true`.
    pub managed_labels: BTreeMap<String, String>,
}

/// What a cluster enforces and runs, from `infra/`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ClusterFacts {
    /// The infra file.
    pub file: String,
    /// Talos (else k0s).
    pub talos: bool,
    /// Default enforce level.
    pub enforce: Option<Level>,
    /// Where that default comes from.
    pub enforce_source: String,
    /// Namespaces the admission configuration exempts.
    pub exempt: BTreeSet<String>,
    /// Talos nodes and their rendered `machine.kubelet.extraMounts`.
    pub kubelet_mounts: Vec<(String, Vec<Value>)>,
    /// Node, VIP and API addresses (MetalLB pools must stay clear of them).
    pub addresses: Vec<std::net::IpAddr>,
}

/// What the checks looked at, for the `check` summary.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Summary {
    /// Pod templates evaluated against their namespace's level.
    pub pod_specs: usize,
    /// Chart sources whose namespace needs were checked.
    pub charts_checked: usize,
    /// Charts with no known needs (their pods are not evaluated).
    pub charts_unknown: BTreeSet<String>,
}

/// Helm's value merge: maps merge key by key, anything else replaces.
pub fn merge_values(base: &mut Value, over: &Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(k) {
                    Some(existing) => merge_values(existing, v),
                    None => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (b, o) => *b = o.clone(),
    }
}

/// Charts whose pods the baseline level refuses, and why (read in each chart's
/// templates); `None` when the values switch that part off.
fn chart_needs(chart: &str, values: &Value) -> Option<Option<&'static str>> {
    let off = |p: &str| values.pointer(p).and_then(Value::as_bool) == Some(false);
    let need = match chart {
        // longhorn/charts `templates/daemonset-sa.yaml`: longhorn-manager is
        // privileged with hostPath /dev, /proc and the data path.
        "longhorn" => Some("longhorn-manager runs privileged with hostPath volumes"),
        // metallb `charts/metallb/templates/speaker.yaml`: hostNetwork and NET_RAW.
        "metallb" if !off("/speaker/enabled") => {
            Some("the speaker DaemonSet uses hostNetwork and adds NET_RAW")
        }
        // prometheus-community `charts/prometheus-node-exporter`: hostNetwork,
        // hostPID and hostPath / (kube-prometheus-stack `nodeExporter.enabled`).
        "kube-prometheus-stack" if !off("/nodeExporter/enabled") => {
            Some("node-exporter uses hostNetwork, hostPID and hostPath volumes")
        }
        // cilium `install/kubernetes/cilium/templates/cilium-agent/daemonset.yaml`:
        // hostNetwork, privileged init containers, hostPath.
        "cilium" => Some("the agent uses hostNetwork, privileged init containers and hostPath"),
        "metallb" | "kube-prometheus-stack" => None,
        // Charts whose default pods baseline admits.
        "traefik" | "cert-manager" | "external-secrets" | "vault" | "authentik" | "loki" | "argo-cd" => None,
        _ => return None,
    };
    // A chart told to use the host network needs privileged whatever it is.
    Some(need.or(
        (values.get("hostNetwork") == Some(&Value::Bool(true))).then_some("values set hostNetwork: true"),
    ))
}

/// Runs the namespace, pod and chart rules; Longhorn mounts too.
pub fn check(
    deployments: &[Deployment],
    clusters: &BTreeMap<String, ClusterFacts>,
) -> (Vec<Finding>, Summary) {
    let mut findings = Vec::new();
    let mut summary = Summary::default();
    // (cluster, namespace) -> [(level, where)]
    let mut labels: BTreeMap<(String, String), Vec<(String, String)>> = BTreeMap::new();
    for d in deployments {
        if let Some(v) = d.managed_labels.get(ENFORCE) {
            labels
                .entry((d.cluster.clone(), d.namespace.clone()))
                .or_default()
                .push((
                    v.clone(),
                    format!("{}: {} managedNamespaceMetadata", d.file, d.object),
                ));
        }
        for (file, o) in &d.objects {
            if o.get("kind").and_then(Value::as_str) == Some("Namespace")
                && let Some(name) = o.pointer("/metadata/name").and_then(Value::as_str)
            {
                let v = o.pointer(&format!("/metadata/labels/{}", ENFORCE.replace('/', "~1")));
                if let Some(v) = v.and_then(Value::as_str) {
                    labels
                        .entry((d.cluster.clone(), name.to_string()))
                        .or_default()
                        .push((v.to_string(), format!("{file}: Namespace/{name}")));
                }
            }
        }
    }
    let mut level_of: BTreeMap<(String, String), Level> = BTreeMap::new();
    for ((cluster, ns), decls) in &labels {
        let distinct: BTreeSet<&str> = decls.iter().map(|(v, _)| v.as_str()).collect();
        for (v, at) in decls {
            if Level::parse(v).is_none() {
                let (file, object) = at.split_once(": ").unwrap_or((at, ""));
                findings.push(Finding {
                    file: file.into(),
                    object: object.into(),
                    message: format!("{ENFORCE}: {v:?} is not privileged, baseline or restricted"),
                });
            }
        }
        if distinct.len() > 1 {
            let (file, object) = decls[0].1.split_once(": ").unwrap_or((&decls[0].1, ""));
            findings.push(Finding {
                file: file.into(),
                object: object.into(),
                message: format!(
                    "namespace {ns:?} on {cluster}: {ENFORCE} declared differently in {} (they would overwrite each other)",
                    decls.iter().map(|(v, at)| format!("{v} by {at}")).collect::<Vec<_>>().join("; ")
                ),
            });
        }
        if let Some(l) = decls.iter().filter_map(|(v, _)| Level::parse(v)).max() {
            level_of.insert((cluster.clone(), ns.clone()), l);
        }
    }
    // The effective level and a sentence saying where it comes from.
    let effective = |cluster: &str, ns: &str| -> Option<(Level, String)> {
        let facts = clusters.get(cluster)?;
        if facts.exempt.contains(ns) {
            return Some((Level::Privileged, format!("exempt in {}", facts.enforce_source)));
        }
        if let Some(l) = level_of.get(&(cluster.to_string(), ns.to_string())) {
            return Some((*l, format!("labelled {ENFORCE}={l}")));
        }
        Some((
            facts.enforce.unwrap_or(Level::Privileged),
            format!("unlabelled: {}", facts.enforce_source),
        ))
    };

    for d in deployments {
        for (file, o) in &d.objects {
            let Some((meta, spec)) = podsecurity::pod_template(o) else {
                continue;
            };
            summary.pod_specs += 1;
            let ns = o
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .unwrap_or(&d.namespace);
            let Some((level, why)) = effective(&d.cluster, ns) else {
                continue;
            };
            let v = podsecurity::evaluate(level, meta, spec);
            if !v.is_empty() {
                findings.push(Finding {
                    file: file.clone(),
                    object: format!(
                        "{}/{}",
                        o.get("kind").and_then(Value::as_str).unwrap_or("?"),
                        o.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("?")
                    ),
                    message: format!(
                        "PodSecurity {level} in namespace {ns:?} on {} ({why}) refuses its pods: {} (deployed by {})",
                        d.cluster,
                        v.iter().map(|x| format!("{}: {}", x.check, x.detail)).collect::<Vec<_>>().join("; "),
                        d.object
                    ),
                });
            }
        }
        for c in &d.charts {
            let Some(need) = chart_needs(&c.chart, &c.values) else {
                summary.charts_unknown.insert(c.chart.clone());
                continue;
            };
            summary.charts_checked += 1;
            let (Some(why_needed), Some((level, why))) = (need, effective(&d.cluster, &d.namespace)) else {
                continue;
            };
            if level > Level::Privileged {
                findings.push(Finding {
                    file: d.file.clone(),
                    object: d.object.clone(),
                    message: format!(
                        "chart {} needs PodSecurity privileged in namespace {:?} on {} ({why_needed}), but the \
                         namespace enforces {level} ({why}); set syncPolicy.managedNamespaceMetadata.labels \
                         {ENFORCE}: privileged",
                        c.chart, d.namespace, d.cluster
                    ),
                });
            }
        }
        longhorn_mounts(d, clusters, &mut findings);
    }
    (findings, summary)
}

/// Longhorn on Talos: the kubelet runs in a container and sees its data path only
/// through a bind mount with shared propagation (longhorn/website
/// `content/docs/1.11.0/advanced-resources/os-distro-specific/talos-linux-support.md`,
/// "Data Path Mounts": `machine.kubelet.extraMounts`, options `bind`, `rshared`, `rw`).
fn longhorn_mounts(d: &Deployment, clusters: &BTreeMap<String, ClusterFacts>, findings: &mut Vec<Finding>) {
    let Some(facts) = clusters.get(&d.cluster).filter(|f| f.talos) else {
        return;
    };
    for c in d.charts.iter().filter(|c| c.chart == "longhorn") {
        let path = c
            .values
            .pointer("/defaultSettings/defaultDataPath")
            .and_then(Value::as_str)
            .unwrap_or("/var/lib/longhorn")
            .trim_end_matches('/');
        for (node, mounts) in &facts.kubelet_mounts {
            let ok = mounts.iter().any(|m| {
                let dest = m
                    .get("destination")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .trim_end_matches('/');
                let opts: Vec<&str> = m
                    .get("options")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect();
                (path == dest || path.starts_with(&format!("{dest}/"))) && opts.contains(&"rshared")
            });
            if !ok {
                findings.push(Finding {
                    file: facts.file.clone(),
                    object: format!("node {node}"),
                    message: format!(
                        "{} stores Longhorn data in {path}, but this node's kubelet has no extraMount for it \
                         (machine.kubelet.extraMounts: destination {path}, type bind, options [bind, rshared, rw])",
                        d.object
                    ),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// Helm's merge: maps key by key, lists and scalars replaced.
    #[test]
    fn values_merge_like_helm() {
        let mut base = json!({"a": {"b": 1, "c": [1, 2]}, "d": true});
        merge_values(&mut base, &json!({"a": {"c": [3], "e": "x"}, "d": false}));
        assert_eq!(base, json!({"a": {"b": 1, "c": [3], "e": "x"}, "d": false}));
    }

    #[test]
    fn chart_needs_follow_their_values() {
        assert!(chart_needs("longhorn", &json!({})).unwrap().is_some());
        assert!(
            chart_needs("metallb", &json!({"speaker": {"enabled": false}}))
                .unwrap()
                .is_none()
        );
        assert!(
            chart_needs(
                "kube-prometheus-stack",
                &json!({"nodeExporter": {"enabled": false}})
            )
            .unwrap()
            .is_none()
        );
        assert!(chart_needs("traefik", &json!({})).unwrap().is_none());
        assert!(
            chart_needs("traefik", &json!({"hostNetwork": true}))
                .unwrap()
                .is_some()
        );
        assert!(chart_needs("unheard-of", &json!({})).is_none());
    }
}
