//! Node groups merged into nodes and node fields converted (on the talconfig tree).

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

use super::fields::{self, Layer, TemplatedPatch};
use super::{Dropped, ImportError, Sources, gotmpl};
use crate::talos::version::Version;

/// Node fields the infra format takes as they are (talhelper names, talos.md §8.1),
/// plus the appliance's own.
const NODE_KEPT: [&str; 19] = [
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
    "mac",
    "uuid",
    "otherMacs",
    "power",
];

/// Group fields the infra format keeps on the group (same meaning as talhelper:
/// the node's own value wins). Everything else is merged into the nodes.
const GROUP_KEPT: [&str; 3] = ["patches", "schematic", "nameservers"];

/// talhelper's `NodeConfigs` (`pkg/config/config.go`): what a group may set.
const NODE_CONFIGS: [&str; 22] = [
    "nodeLabels",
    "nodeAnnotations",
    "nodeTaints",
    "machineDisks",
    "machineFiles",
    "disableSearchDomain",
    "kernelModules",
    "nameservers",
    "networkInterfaces",
    "extraManifests",
    "certSANs",
    "patches",
    "talosImageURL",
    "noSchematicValidate",
    "schematic",
    "imageSchematic",
    "machineSpec",
    "ingressFirewall",
    "extensionServices",
    "volumes",
    "userVolumes",
    "filenameTmpl",
];

/// Fields with nothing to carry over, and why.
fn not_carried(key: &str, v: &Value) -> Option<&'static str> {
    Some(match key {
        "ignoreHostname" if v.as_bool() == Some(true) => {
            "the appliance always sets machine.network.hostname (profiles and talosconfig key on it)"
        }
        "filenameTmpl" => "names talhelper's output files; the appliance serves each node's config by MAC",
        "noSchematicValidate" => {
            "switches off talhelper's extension-name check; the Image Factory validates schematics on `images pull`"
        }
        "imageSchematic" => {
            "schematic of talhelper's ISO/disk-image URLs; the appliance network-boots and installs each node from `schematic`"
        }
        "machineDisks" => "v1alpha1 `machine.disks` is not in Talos v1.11's schema: use userVolumes",
        _ => return None,
    })
}

/// What is left to do on the typed cluster, per node ([`super::finish`]).
#[derive(Debug, Default)]
pub(super) struct Pending {
    /// `machineSpec`.
    pub spec: Option<Map<String, Value>>,
    /// Templated node labels (key, template).
    pub labels: Vec<(String, String)>,
    /// Templated node annotations.
    pub annotations: Vec<(String, String)>,
    /// Templated patches.
    pub patches: Vec<TemplatedPatch>,
    /// How many of the node's patches are documents generated from its fields (they
    /// come first, as talhelper applies them before any patch).
    pub generated: usize,
}

fn is_zero(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        Value::Number(n) => n.as_f64() == Some(0.0),
    }
}

/// Merges the groups into the nodes and converts every node's fields.
pub(super) fn merge_and_convert(
    top: &mut Map<String, Value>,
    src: &dyn Sources,
    out: &mut Dropped,
) -> Result<Vec<Pending>, ImportError> {
    let talos: Option<Version> = top
        .get("talosVersion")
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok());
    let mut groups = [Map::new(), Map::new()];
    for (gi, g) in ["controlPlane", "worker"].iter().enumerate() {
        if let Some(Value::Object(mut gm)) = top.remove(*g) {
            fields::legacy_patches(&mut gm, &format!("{g}."), out);
            fields::resolve_patches(&mut gm, &format!("{g}."), src, out, Layer::Shared)?;
            for k in gm.keys().cloned().collect::<Vec<_>>() {
                if !NODE_CONFIGS.contains(&k.as_str()) {
                    gm.remove(&k);
                    out.push((format!("{g}.{k}"), "not a talhelper node-group field".into()));
                }
            }
            groups[gi] = gm;
        }
    }
    let mut pending = Vec::new();
    let mut overriding: [BTreeSet<usize>; 2] = Default::default();
    let mut kept_groups = Vec::new();
    let Some(Value::Array(nodes)) = top.get_mut("nodes") else {
        return Ok(pending);
    };
    for (i, n) in nodes.iter_mut().enumerate() {
        let Value::Object(nm) = n else { continue };
        let gi = usize::from(nm.get("controlPlane").and_then(Value::as_bool) != Some(true));
        let flag =
            |nm: &mut Map<String, Value>, k: &str| nm.remove(k).and_then(|v| v.as_bool()).unwrap_or(false);
        if flag(nm, "overridePatches") {
            overriding[gi].insert(i);
        }
        let own_sans = flag(nm, "overrideMachineCertSANs");
        let own_manifests = flag(nm, "overrideExtraManifests");
        for (k, gv) in &groups[gi] {
            match k.as_str() {
                _ if GROUP_KEPT.contains(&k.as_str()) => {}
                // Appended after the node's own, unless the node overrides them.
                "certSANs" | "extraManifests" => {
                    let own = if k == "certSANs" { own_sans } else { own_manifests };
                    if !own && let Value::Array(l) = nm.entry(k.clone()).or_insert(json!([])) {
                        l.extend(gv.as_array().into_iter().flatten().cloned());
                    }
                }
                _ if nm.get(k).is_none_or(is_zero) => {
                    nm.insert(k.clone(), gv.clone());
                }
                _ => {}
            }
        }
        pending.push(convert_node(
            nm,
            &format!("nodes[{i}]."),
            talos.as_ref(),
            src,
            out,
        )?);
    }
    // A node with `overridePatches` does not get its group's patches: the group's
    // patches then move into the other nodes of the group, first.
    for (gi, g) in ["controlPlane", "worker"].iter().enumerate() {
        let gm = &mut groups[gi];
        if !overriding[gi].is_empty()
            && let Some(Value::Array(gp)) = gm.remove("patches")
        {
            for (i, n) in nodes.iter_mut().enumerate() {
                let is_member = n.get("controlPlane").and_then(Value::as_bool).unwrap_or(false) == (gi == 0);
                if is_member && !overriding[gi].contains(&i) {
                    let list = n
                        .as_object_mut()
                        .expect("node mapping")
                        .entry("patches")
                        .or_insert(json!([]));
                    // After the generated documents, before the node's own.
                    let at = pending[i].generated;
                    if let Value::Array(l) = list {
                        l.splice(at..at, gp.iter().cloned());
                    }
                    for p in &mut pending[i].patches {
                        p.0 += gp.len();
                    }
                }
            }
        }
        gm.retain(|k, _| GROUP_KEPT.contains(&k.as_str()));
        if !gm.is_empty() {
            kept_groups.push(((*g).to_string(), Value::Object(std::mem::take(gm))));
        }
    }
    top.extend(kept_groups);
    Ok(pending)
}

fn split_templates(nm: &mut Map<String, Value>, key: &str) -> Vec<(String, String)> {
    let Some(Value::Object(m)) = nm.get_mut(key) else {
        return Vec::new();
    };
    let t: Vec<(String, String)> = m
        .iter()
        .filter_map(|(k, v)| {
            v.as_str()
                .filter(|s| gotmpl::is_template(s))
                .map(|s| (k.clone(), s.to_string()))
        })
        .collect();
    for (k, _) in &t {
        m.remove(k);
    }
    t
}

fn convert_node(
    nm: &mut Map<String, Value>,
    path: &str,
    talos: Option<&Version>,
    src: &dyn Sources,
    out: &mut Dropped,
) -> Result<Pending, ImportError> {
    fields::legacy_patches(nm, path, out);
    let mut p = Pending {
        labels: split_templates(nm, "nodeLabels"),
        annotations: split_templates(nm, "nodeAnnotations"),
        ..Pending::default()
    };
    let mut generated = Vec::new();
    let mut manifests = Vec::new();
    // Documents in talhelper's order (`pkg/talos/multidocs.go` `genMultiDocs`).
    const ORDER: [&str; 6] = [
        "kernelModules",
        "machineFiles",
        "ingressFirewall",
        "extensionServices",
        "volumes",
        "userVolumes",
    ];
    let mut keys: Vec<String> = nm.keys().cloned().collect();
    keys.sort_by_key(|k| ORDER.iter().position(|o| o == k).unwrap_or(ORDER.len()));
    for k in keys {
        if NODE_KEPT.contains(&k.as_str()) {
            continue;
        }
        let v = nm.remove(&k).unwrap_or(Value::Null);
        let field = format!("{path}{k}");
        match k.as_str() {
            "machineSpec" => p.spec = v.as_object().cloned(),
            // Off is talhelper's default: nothing to carry over.
            "ignoreHostname" | "noSchematicValidate" if v.as_bool() != Some(true) => {}
            // Deprecated in talhelper (`pkg/generate/config.go` appends each file,
            // templated, to the config): the same as an `@file` patch here.
            "extraManifests" => manifests = v.as_array().cloned().unwrap_or_default(),
            _ => match not_carried(&k, &v) {
                Some(why) => out.push((field, why.into())),
                None => match fields::convert(&k, v, &field, talos, src, out)? {
                    Some(docs) => generated.extend(docs),
                    None => out.push((field, "not a talhelper node field".into())),
                },
            },
        }
    }
    // The node's own patches resolved on their own (paths count the talconfig's
    // list), then placed after the generated documents.
    let mut all = Map::new();
    if let Some(own) = nm.remove("patches") {
        all.insert("patches".into(), own);
    }
    p.patches = fields::resolve_patches(&mut all, path, src, out, Layer::Node)?;
    let n_gen = generated.len();
    p.generated = n_gen;
    p.patches.iter_mut().for_each(|t| t.0 += n_gen);
    let own = match all.remove("patches") {
        Some(Value::Array(a)) => a,
        _ => Vec::new(),
    };
    all.insert(
        "patches".into(),
        Value::Array(generated.into_iter().chain(own).collect()),
    );
    for (i, m) in manifests.into_iter().enumerate() {
        let field = format!("{path}extraManifests[{i}]");
        let s = m.as_str().unwrap_or_default();
        let r = if s.starts_with('@') {
            s.to_string()
        } else {
            format!("@{s}")
        };
        let mut one = Map::from_iter([("patches".to_string(), json!([r]))]);
        for (_, _, env) in fields::resolve_patches(&mut one, &field, src, out, Layer::Manifests)? {
            let idx = all["patches"].as_array().map_or(0, Vec::len);
            p.patches.push((idx, field.clone(), env));
        }
        if let (Some(Value::Array(dst)), Some(Value::Array(got))) =
            (all.get_mut("patches"), one.remove("patches"))
        {
            dst.extend(got);
        }
    }
    if let Some(Value::Array(a)) = all.remove("patches")
        && !a.is_empty()
    {
        nm.insert("patches".into(), Value::Array(a));
    }
    Ok(p)
}
