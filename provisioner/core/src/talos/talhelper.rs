//! `provisioner import talhelper`: converts a talhelper `talconfig.yaml` into an
//! `infra/` cluster definition.
//!
//! The infra format uses talhelper's field names, so supported fields carry over
//! unchanged. Everything else is removed and listed, with its path, so the operator
//! sees exactly what did not come across: talhelper features the appliance does not
//! implement (`machineSpec`, `machineFiles`, `extensionServices`, volumes, firewall,
//! kernel modules, inline manifests, image-factory settings …), `@file` patch
//! references, and values using talhelper's templating (`${VAR}` from talenv, Go
//! `{{ … }}` templates).

use serde_json::{Map, Value};

use super::cluster::TalosCluster;

const TOP: [&str; 14] = [
    "clusterName",
    "talosVersion",
    "kubernetesVersion",
    "endpoint",
    "domain",
    "allowSchedulingOnControlPlanes",
    "additionalApiServerCertSans",
    "additionalMachineCertSans",
    "clusterPodNets",
    "clusterSvcNets",
    "cniConfig",
    "patches",
    "controlPlane",
    "worker",
];
const GROUP: [&str; 4] = ["patches", "schematic", "nameservers", "nodeLabels"];
const NODE: [&str; 15] = [
    "hostname",
    "ipAddress",
    "controlPlane",
    "installDisk",
    "installDiskSelector",
    "networkInterfaces",
    "nameservers",
    "disableSearchDomain",
    "schematic",
    "talosImageURL",
    "certSANs",
    "nodeLabels",
    "nodeAnnotations",
    "nodeTaints",
    "patches",
];

/// The result of an import.
#[derive(Debug, Clone, PartialEq)]
pub struct Imported {
    /// The cluster definition.
    pub cluster: TalosCluster,
    /// Dropped fields: (path, reason).
    pub unsupported: Vec<(String, String)>,
}

fn templated(v: &Value) -> bool {
    match v {
        Value::String(s) => s.contains("${") || s.contains("{{"),
        Value::Array(a) => a.iter().any(templated),
        Value::Object(m) => m.values().any(templated),
        _ => false,
    }
}

/// Keeps `allowed` keys of `m`, listing the rest under `path`.
fn keep(m: &mut Map<String, Value>, allowed: &[&str], path: &str, out: &mut Vec<(String, String)>) {
    let keys: Vec<String> = m.keys().cloned().collect();
    for k in keys {
        if !allowed.contains(&k.as_str()) {
            m.remove(&k);
            out.push((format!("{path}{k}"), "not supported by the appliance".into()));
        }
    }
}

/// Drops `@file` patches and templated patch/label values.
fn clean(m: &mut Map<String, Value>, path: &str, out: &mut Vec<(String, String)>) {
    if let Some(Value::Array(patches)) = m.get_mut("patches") {
        let mut kept = Vec::new();
        for (i, p) in patches.drain(..).enumerate() {
            match p.as_str() {
                Some(s) if s.trim_start().starts_with('@') => out.push((
                    format!("{path}patches[{i}]"),
                    format!("file reference {:?} not supported: inline the patch", s.trim()),
                )),
                _ if templated(&p) => out.push((
                    format!("{path}patches[{i}]"),
                    "talhelper templating not supported".into(),
                )),
                _ => kept.push(p),
            }
        }
        *patches = kept;
    }
    let keys: Vec<String> = m.keys().cloned().collect();
    for k in keys {
        if matches!(k.as_str(), "patches" | "nodes" | "controlPlane" | "worker") {
            continue;
        }
        if let Some(Value::Object(inner)) = m.get_mut(&k)
            && matches!(k.as_str(), "nodeLabels" | "nodeAnnotations" | "nodeTaints")
        {
            let bad: Vec<String> = inner
                .iter()
                .filter(|(_, v)| templated(v))
                .map(|(l, _)| l.clone())
                .collect();
            for l in bad {
                inner.remove(&l);
                out.push((
                    format!("{path}{k}.{l}"),
                    "talhelper templating not supported".into(),
                ));
            }
        } else if m.get(&k).is_some_and(templated) {
            m.remove(&k);
            out.push((
                format!("{path}{k}"),
                "talhelper templating (${VAR} / {{ }}) not supported".into(),
            ));
        }
    }
}

/// Why a talconfig.yaml cannot be imported.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TalhelperError {
    /// Not YAML.
    #[error("talconfig.yaml: {0}")]
    Yaml(#[from] super::yaml::YamlError),
    /// YAML, but not a mapping.
    #[error("talconfig.yaml is not a mapping")]
    NotAMapping,
    /// What remains after dropping the unsupported parts is not a cluster definition.
    #[error("talconfig.yaml: {0}")]
    Cluster(String),
}

/// Converts talconfig text. Fails only when what remains is not a valid cluster
/// definition (the error names the field).
pub fn import(text: &str) -> Result<Imported, TalhelperError> {
    let mut v = super::yaml::from_str(text)?;
    let mut out = Vec::new();
    let top = v.as_object_mut().ok_or(TalhelperError::NotAMapping)?;
    if let Some(a) = top.remove("allowSchedulingOnMasters") {
        top.entry("allowSchedulingOnControlPlanes").or_insert(a);
    }
    keep(top, &[&TOP[..], &["nodes"]].concat(), "", &mut out);
    clean(top, "", &mut out);
    for g in ["controlPlane", "worker"] {
        if let Some(Value::Object(gm)) = top.get_mut(g) {
            keep(gm, &GROUP, &format!("{g}."), &mut out);
            clean(gm, &format!("{g}."), &mut out);
        }
    }
    if let Some(Value::Array(nodes)) = top.get_mut("nodes") {
        for (i, n) in nodes.iter_mut().enumerate() {
            if let Value::Object(nm) = n {
                keep(nm, &NODE, &format!("nodes[{i}]."), &mut out);
                clean(nm, &format!("nodes[{i}]."), &mut out);
            }
        }
    }
    top.insert("distribution".into(), Value::String("talos".into()));
    let cluster: TalosCluster =
        serde_json::from_value(v).map_err(|e| TalhelperError::Cluster(e.to_string()))?;
    Ok(Imported {
        cluster,
        unsupported: out,
    })
}

impl Imported {
    /// The infra file text: a header listing what was dropped, then the definition.
    pub fn to_yaml(&self) -> String {
        let mut s = String::from(
            "# Imported from talhelper talconfig.yaml by `provisioner import talhelper`.\n\
             # Add each node's `mac` (PXE match) and `power` before booting it.\n",
        );
        if !self.unsupported.is_empty() {
            s.push_str("# Not imported (unsupported):\n");
            for (f, why) in &self.unsupported {
                s.push_str(&format!("#   {f}: {why}\n"));
            }
        }
        s.push_str(&super::yaml::to_string(&self.cluster).unwrap_or_default());
        s
    }
}
