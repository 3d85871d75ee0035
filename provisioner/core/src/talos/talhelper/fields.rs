//! talhelper node fields → the machine-config patches and documents Talos v1.11
//! takes (schema `config.schema.json` v1.11.6), and `@file` resolution.
//!
//! - `kernelModules` → `machine.kernel.modules` (`pkg/talos/nodeconfig.go`
//!   `applyNodeOverride`);
//! - `machineFiles` → `machine.files`, `@file` contents read and substituted unless
//!   `skipEnvsubst` (`pkg/config/loader.go`, `pkg/substitute/contentsubst.go`);
//! - `extensionServices` → `ExtensionServiceConfig` documents
//!   (`pkg/talos/extensionserviceconfig.go`);
//! - `volumes` → `VolumeConfig`, `userVolumes` → `UserVolumeConfig` documents
//!   (`pkg/talos/volumeconfig.go`, `uservolumeconfig.go`);
//! - `ingressFirewall` → one `NetworkDefaultActionConfig` (default `block`) and one
//!   `NetworkRuleConfig` per rule (`pkg/talos/networkconfig.go`
//!   `GenerateNetworkConfigBytes`);
//! - `inlineManifests` → `cluster.inlineManifests`, `@file` contents read
//!   (`pkg/config/loader.go`).
//!
//! Each document becomes one structured strategic-merge patch of the node, so the
//! infra file shows exactly what the node gets.

use serde_json::{Map, Value, json};

use super::{Dropped, ImportError, Sources, gotmpl};
use crate::talos::version::Version;

fn field_err(field: &str, reason: impl Into<String>) -> ImportError {
    ImportError::Field {
        field: field.to_string(),
        reason: reason.into(),
    }
}

/// The contents of `@path` (`None` when `v` is not a file reference).
fn file_ref(v: &str, field: &str, src: &dyn Sources) -> Result<Option<String>, ImportError> {
    match v.trim().strip_prefix('@').map(str::trim) {
        None => Ok(None),
        // talhelper keeps a bare `@` unchanged (`pkg/substitute/pathsubst.go`).
        Some("") => Ok(None),
        Some(p) => src
            .file(p)
            .map(Some)
            .map_err(|e| field_err(field, format!("@{p}: {e}"))),
    }
}

/// A templated patch waiting for the node's rendered config: index in the node's
/// patch list, the talconfig path, and whether to substitute `${VAR}` after
/// templating (file contents: talhelper templates, then substitutes).
pub(super) type TemplatedPatch = (usize, String, bool);

/// How [`resolve_patches`] treats a list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Layer {
    /// Cluster or group patches: a template would need one rendering per node, so a
    /// templated entry is dropped and listed.
    Shared,
    /// A node's patches: templates are returned for evaluation.
    Node,
    /// A node's `extraManifests`: templated but never substituted
    /// (`pkg/generate/config.go` `combineExtraManifests`).
    Manifests,
}

/// Resolves `m.patches`: `@file` entries become their contents (empty files are
/// skipped, as talhelper's `PatchesPatcher`), file contents are substituted (after
/// templating, when templated).
pub(super) fn resolve_patches(
    m: &mut Map<String, Value>,
    path: &str,
    src: &dyn Sources,
    out: &mut Dropped,
    layer: Layer,
) -> Result<Vec<TemplatedPatch>, ImportError> {
    let Some(Value::Array(list)) = m.get_mut("patches") else {
        return Ok(Vec::new());
    };
    let mut kept = Vec::new();
    let mut templated = Vec::new();
    for (i, p) in std::mem::take(list).into_iter().enumerate() {
        let field = format!("{path}patches[{i}]");
        let Value::String(s) = &p else {
            kept.push(p);
            continue;
        };
        let (text, from_file) = match file_ref(s, &field, src)? {
            Some(c) if c.trim().is_empty() => continue,
            Some(c) => (c, true),
            None => (s.clone(), false),
        };
        let subst = from_file && layer != Layer::Manifests;
        if gotmpl::is_template(&text) {
            if layer != Layer::Shared {
                templated.push((kept.len(), field, subst));
            } else {
                out.push((
                    field,
                    "templated patch on a cluster or group: talhelper renders it per node; copy it to each node's patches".into(),
                ));
                continue;
            }
            kept.push(Value::String(text));
        } else if subst {
            kept.push(Value::String(super::substitute(&text, src)?));
        } else {
            kept.push(Value::String(text));
        }
    }
    *list = kept;
    Ok(templated)
}

/// `inlineManifests` → a cluster patch setting `cluster.inlineManifests`.
pub(super) fn inline_manifests(
    ims: Vec<Value>,
    src: &dyn Sources,
    out: &mut Dropped,
) -> Result<Value, ImportError> {
    let mut list = Vec::new();
    for (i, im) in ims.into_iter().enumerate() {
        let field = format!("inlineManifests[{i}]");
        let Value::Object(mut o) = im else {
            out.push((field, "not a mapping".into()));
            continue;
        };
        let skip = o
            .remove("skipEnvsubst")
            .and_then(|v| v.as_bool())
            .unwrap_or(false);
        if let Some(Value::String(c)) = o.get("contents")
            && let Some(text) = file_ref(c, &format!("{field}.contents"), src)?
        {
            let text = if skip {
                text
            } else {
                super::substitute(&text, src)?
            };
            o.insert("contents".into(), Value::String(text));
        }
        list.push(Value::Object(o));
    }
    Ok(json!({"cluster": {"inlineManifests": list}}))
}

fn doc(kind: &str, body: Map<String, Value>) -> Value {
    let mut d = Map::new();
    d.insert("apiVersion".into(), json!("v1alpha1"));
    d.insert("kind".into(), json!(kind));
    d.extend(body);
    Value::Object(d)
}

/// Keeps `allowed` keys of an object item, listing the others under `field`.
fn only(v: Value, allowed: &[&str], field: &str, out: &mut Dropped) -> Map<String, Value> {
    let Value::Object(o) = v else {
        out.push((field.to_string(), "not a mapping".into()));
        return Map::new();
    };
    let mut kept = Map::new();
    for (k, x) in o {
        if allowed.contains(&k.as_str()) {
            kept.insert(k, x);
        } else {
            out.push((
                format!("{field}.{k}"),
                "not a field of this talhelper setting".into(),
            ));
        }
    }
    kept
}

fn items(v: Value, field: &str, out: &mut Dropped) -> Vec<Value> {
    match v {
        Value::Array(a) => a,
        Value::Null => Vec::new(),
        _ => {
            out.push((field.to_string(), "not a list".into()));
            Vec::new()
        }
    }
}

/// Converts one node field; `None` when `key` is not one of these fields.
pub(super) fn convert(
    key: &str,
    v: Value,
    field: &str,
    talos: Option<&Version>,
    src: &dyn Sources,
    out: &mut Dropped,
) -> Result<Option<Vec<Value>>, ImportError> {
    let each = |v: Value, out: &mut Dropped, allowed: &[&str]| -> Vec<Map<String, Value>> {
        items(v, field, out)
            .into_iter()
            .enumerate()
            .map(|(i, x)| only(x, allowed, &format!("{field}[{i}]"), out))
            .collect()
    };
    Ok(Some(match key {
        "kernelModules" => {
            let mods = each(v, out, &["name", "parameters"]);
            vec![json!({"machine": {"kernel": {"modules": mods}}})]
        }
        "machineFiles" => {
            let mut files = Vec::new();
            for (i, mut f) in each(v, out, &["content", "permissions", "path", "op", "skipEnvsubst"])
                .into_iter()
                .enumerate()
            {
                let skip = f
                    .remove("skipEnvsubst")
                    .and_then(|v| v.as_bool())
                    .unwrap_or(false);
                if let Some(Value::String(c)) = f.get("content")
                    && let Some(text) = file_ref(c, &format!("{field}[{i}].content"), src)?
                {
                    let text = if skip {
                        text
                    } else {
                        super::substitute(&text, src)?
                    };
                    f.insert("content".into(), Value::String(text));
                }
                files.push(Value::Object(f));
            }
            vec![json!({"machine": {"files": files}})]
        }
        "extensionServices" => each(v, out, &["name", "configFiles", "environment"])
            .into_iter()
            .map(|m| doc("ExtensionServiceConfig", m))
            .collect(),
        "volumes" => each(v, out, &["name", "provisioning", "encryption"])
            .into_iter()
            .map(|m| doc("VolumeConfig", m))
            .collect(),
        "userVolumes" => {
            let typed = talos.is_some_and(|t| (t.major, t.minor) >= (1, 12));
            let allowed = ["name", "provisioning", "filesystem", "encryption", "volumeType"];
            let mut docs = Vec::new();
            for (i, mut m) in each(v, out, &allowed).into_iter().enumerate() {
                if !typed && m.remove("volumeType").is_some() {
                    out.push((
                        format!("{field}[{i}].volumeType"),
                        "UserVolumeConfig.volumeType needs Talos 1.12+ (not in the v1.11 schema)".into(),
                    ));
                }
                docs.push(doc("UserVolumeConfig", m));
            }
            docs
        }
        "ingressFirewall" => {
            let mut fw = only(v, &["defaultAction", "rules"], field, out);
            let action = fw.remove("defaultAction").unwrap_or(json!("block"));
            let mut docs = vec![doc(
                "NetworkDefaultActionConfig",
                Map::from_iter([("ingress".to_string(), action)]),
            )];
            let rules = fw.remove("rules").unwrap_or(Value::Null);
            for (i, r) in items(rules, &format!("{field}.rules"), out)
                .into_iter()
                .enumerate()
            {
                let r = only(
                    r,
                    &["name", "portSelector", "ingress"],
                    &format!("{field}.rules[{i}]"),
                    out,
                );
                docs.push(doc("NetworkRuleConfig", r));
            }
            docs
        }
        _ => return Ok(None),
    }))
}

/// talhelper v1's `configPatches` (RFC 6902 operations) and `inlinePatch` (an RFC 7396
/// merge patch), removed in v2 (v3 ignores them silently). The operations become one
/// RFC 6902 patch; a merge patch has no faithful strategic-merge equivalent (lists
/// and `null` differ), so it is listed.
pub(super) fn legacy_patches(m: &mut Map<String, Value>, path: &str, out: &mut Dropped) {
    if let Some(ops) = m.remove("configPatches") {
        match ops {
            Value::Array(a) if !a.is_empty() => {
                if let Value::Array(list) = m.entry("patches").or_insert(json!([])) {
                    list.push(Value::Array(a));
                }
            }
            Value::Array(_) => {}
            _ => out.push((
                format!("{path}configPatches"),
                "not a list of RFC 6902 operations".into(),
            )),
        }
    }
    if m.remove("inlinePatch").is_some() {
        out.push((
            format!("{path}inlinePatch"),
            "talhelper v1 RFC 7396 merge patch (removed in talhelper v2): rewrite it as a `patches` entry"
                .into(),
        ));
    }
}
