//! One CNI per cluster, and the Cilium ArgoCD adopts is the one the bootstrap
//! installed. Each cluster's bootstrap installs Cilium itself (Talos: the
//! `cilium install` Job of `talos::cilium`; k0s: the Helm extension of
//! `k0s::clusterconfig`) because nothing else runs without a CNI; ArgoCD's cilium
//! Application later takes the same release over with `gitops/manifests/cilium/`
//! values. If those values differ on what the running agents depend on (kube-proxy
//! replacement, how they reach the API server, IPAM), the adoption reconfigures the
//! CNI of a live cluster. A cluster that runs another CNI (k0s kube-router, Talos
//! flannel) must not get Cilium from ArgoCD at all.

use std::net::IpAddr;

use serde_json::Value;

use super::Finding;

/// What a cluster's bootstrap does about the CNI.
#[derive(Debug, Clone, PartialEq)]
pub enum Bootstrap {
    /// Installs Cilium with these chart values.
    Cilium(Value),
    /// Runs another CNI (its name and the infra field that says so).
    Other(&'static str, &'static str),
}

/// Helm `--set` pairs (`a.b=c`, `{x,y}` lists, booleans, integers) as values.
pub fn set_values(args: &[String]) -> Value {
    let mut out = Value::Object(Default::default());
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a != "--set" {
            continue;
        }
        let Some((key, raw)) = it.next().and_then(|kv| kv.split_once('=')) else {
            continue;
        };
        let value = if let Some(list) = raw.strip_prefix('{').and_then(|r| r.strip_suffix('}')) {
            Value::Array(list.split(',').map(|x| Value::String(x.to_string())).collect())
        } else if let Ok(b) = raw.parse::<bool>() {
            Value::Bool(b)
        } else if let Ok(n) = raw.parse::<i64>() {
            Value::from(n)
        } else {
            Value::String(raw.to_string())
        };
        let parts: Vec<&str> = key.split('.').collect();
        insert(&mut out, &parts, value);
    }
    out
}

fn insert(into: &mut Value, path: &[&str], value: Value) {
    let Some((first, rest)) = path.split_first() else {
        return;
    };
    if !into.is_object() {
        *into = Value::Object(Default::default());
    }
    if let Some(map) = into.as_object_mut() {
        if rest.is_empty() {
            map.insert((*first).to_string(), value);
        } else {
            let next = map
                .entry((*first).to_string())
                .or_insert_with(|| Value::Object(Default::default()));
            insert(next, rest, value);
        }
    }
}

fn leaves(v: &Value, prefix: String, out: &mut Vec<(String, Value)>) {
    match v.as_object() {
        Some(m) => {
            for (k, x) in m {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                leaves(x, p, out);
            }
        }
        None => out.push((prefix, v.clone())),
    }
}

/// `k8sServiceHost` must resolve on the nodes before any cluster DNS exists: an
/// address, a fully qualified name, or `localhost` where a node-local proxy
/// listens (Talos KubePrism).
fn host_problem(host: &str, localhost_ok: bool) -> Option<String> {
    if host.parse::<IpAddr>().is_ok() || (host == "localhost" && localhost_ok) {
        return None;
    }
    if host.contains('.')
        && host
            .split('.')
            .all(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
    {
        return None;
    }
    Some(format!(
        "{host:?} is a bare hostname (or not a name at all): it does not resolve on the nodes before cluster DNS runs; \
         use the API server's address or a fully qualified name"
    ))
}

/// Checks the cilium values ArgoCD deploys to `cluster` (`values`: common then
/// per-cluster, merged; `file` is the per-cluster values file, `common_file` the
/// shared one) against what its bootstrap installed.
pub fn check(
    cluster: &str,
    bootstrap: &Bootstrap,
    localhost_ok: bool,
    values: &Value,
    file: &str,
    common_file: &str,
    cluster_values: &Value,
) -> Vec<Finding> {
    let object = format!("cilium values for {cluster}");
    let mut f = Vec::new();
    let mut push = |file: &str, message: String| {
        f.push(Finding {
            file: file.to_string(),
            object: object.clone(),
            message,
        })
    };
    match bootstrap {
        Bootstrap::Other(cni, field) => push(
            file,
            format!(
                "cluster {cluster} already runs {cni} ({field}); Cilium from ArgoCD would be a second CNI \
                 (switch the cluster to Cilium in infra/, or remove this directory)"
            ),
        ),
        Bootstrap::Cilium(installed) => {
            let mut want = Vec::new();
            leaves(installed, String::new(), &mut want);
            for (path, v) in want {
                let got = values.pointer(&format!("/{}", path.replace('.', "/")));
                if got != Some(&v) {
                    let at = if cluster_values
                        .pointer(&format!("/{}", path.replace('.', "/")))
                        .is_some()
                    {
                        file
                    } else {
                        common_file
                    };
                    push(
                        at,
                        format!(
                            "field `{path}`: {} but the bootstrap installed Cilium with {v}; ArgoCD's adoption \
                             would reconfigure the running CNI",
                            got.map_or("unset".to_string(), ToString::to_string)
                        ),
                    );
                }
            }
        }
    }
    if let Some(h) = values.get("k8sServiceHost").and_then(Value::as_str)
        && let Some(p) = host_problem(h, localhost_ok)
    {
        push(file, format!("field `k8sServiceHost`: {p}"));
    }
    f
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn set_pairs_become_values() {
        let args: Vec<String> = [
            "install",
            "--set",
            "a.b=true",
            "--set",
            "a.c=7445",
            "--set",
            "l={X,Y}",
            "--set",
            "h=localhost",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(
            set_values(&args),
            json!({"a": {"b": true, "c": 7445}, "l": ["X", "Y"], "h": "localhost"})
        );
    }

    #[test]
    fn hosts() {
        assert!(host_problem("192.168.1.161", false).is_none());
        assert!(host_problem("k0s-api.beelink.lan", false).is_none());
        assert!(host_problem("localhost", true).is_none());
        assert!(host_problem("localhost", false).is_some());
        assert!(
            host_problem("beelink-1", false)
                .unwrap()
                .contains("bare hostname")
        );
    }

    #[test]
    fn differences_and_second_cni_are_findings() {
        let installed = json!({"kubeProxyReplacement": true, "k8sServiceHost": "10.0.0.1"});
        let values = json!({"kubeProxyReplacement": true, "k8sServiceHost": "beelink-1"});
        let cv = json!({"k8sServiceHost": "beelink-1"});
        let f = check(
            "b",
            &Bootstrap::Cilium(installed),
            false,
            &values,
            "b.yaml",
            "common.yaml",
            &cv,
        );
        assert_eq!(f.len(), 2, "{f:?}");
        assert!(f.iter().all(|x| x.file == "b.yaml"));
        assert!(f[0].message.contains("`k8sServiceHost`") && f[0].message.contains("10.0.0.1"));
        let f = check(
            "b",
            &Bootstrap::Other("kube-router", "network.provider kuberouter"),
            false,
            &json!({}),
            "b.yaml",
            "c.yaml",
            &json!({}),
        );
        assert!(f[0].message.contains("second CNI"), "{f:?}");
    }
}
