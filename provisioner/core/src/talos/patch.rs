//! Machine-config patches, as talhelper and talosctl apply them: RFC 6902 JSON
//! patches (a YAML sequence of operations) and Talos strategic-merge patches (a
//! partial config document).
//!
//! Strategic merge follows Talos' config merge (`pkg/machinery/config/merge`):
//! mappings merge recursively; a key whose value is `{$patch: delete}` is removed;
//! scalars replace; sequences append, except network interfaces (merged by
//! `interface` or `deviceSelector`), VLANs (by `vlanId`), admission plugins (by
//! `name`) and the pod/service subnet lists, which are replaced. A patch document
//! carrying `apiVersion`/`kind` is a separate config document: it replaces the
//! document with the same kind and name, or is appended.

use serde_json::{Map, Value};

/// Why a patch does not parse or apply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatchError {
    /// `@file` references (talhelper's) are not supported.
    #[error("file reference {0:?} is not supported: inline the patch")]
    FileReference(String),
    /// The patch text is not YAML.
    #[error(transparent)]
    Yaml(#[from] super::yaml::YamlError),
    /// Neither a strategic-merge mapping nor RFC 6902 operations.
    #[error("{0}")]
    Shape(String),
    /// The config has no v1alpha1 document to patch.
    #[error("no v1alpha1 document")]
    NoDocument,
    /// An RFC 6902 operation failed (a `test` that does not hold, a missing path).
    #[error("RFC 6902 patch failed: {0}")]
    Json6902(String),
}

/// One parsed patch.
#[derive(Debug, Clone, PartialEq)]
pub enum Patch {
    /// RFC 6902 operations, applied to the v1alpha1 document.
    Json6902(json_patch::Patch),
    /// Strategic-merge documents.
    Strategic(Vec<Value>),
}

fn is_delete(v: &Value) -> bool {
    v.as_object()
        .is_some_and(|m| m.len() == 1 && m.get("$patch").and_then(Value::as_str) == Some("delete"))
}

impl Patch {
    /// Parses a patch given inline (a YAML string, as in talconfig.yaml) or as
    /// structured YAML in the cluster file.
    pub fn parse(v: &Value) -> Result<Self, PatchError> {
        let docs = match v {
            Value::String(s) if s.trim_start().starts_with('@') => {
                return Err(PatchError::FileReference(s.trim().to_string()));
            }
            Value::String(s) => super::yaml::from_str_multi(s)?,
            other => vec![other.clone()],
        };
        match docs.as_slice() {
            [Value::Array(_)] => serde_json::from_value(docs[0].clone())
                .map(Patch::Json6902)
                .map_err(|e| PatchError::Shape(format!("not an RFC 6902 patch: {e}"))),
            [] => Err(PatchError::Shape("empty patch".into())),
            _ if docs.iter().all(Value::is_object) => Ok(Patch::Strategic(docs)),
            _ => Err(PatchError::Shape(
                "a patch is a mapping (strategic merge) or a sequence of RFC 6902 operations".into(),
            )),
        }
    }

    /// Applies the patch to `docs` (`docs[0]` is the v1alpha1 document).
    pub fn apply(&self, docs: &mut Vec<Value>) -> Result<(), PatchError> {
        match self {
            Patch::Json6902(p) => {
                let first = docs.first_mut().ok_or(PatchError::NoDocument)?;
                json_patch::patch(first, p).map_err(|e| PatchError::Json6902(e.to_string()))
            }
            Patch::Strategic(patch_docs) => {
                for pd in patch_docs {
                    if pd.get("kind").is_some() {
                        let same = |d: &Value| {
                            d.get("kind") == pd.get("kind")
                                && d.get("apiVersion") == pd.get("apiVersion")
                                && d.get("name") == pd.get("name")
                        };
                        match docs.iter_mut().skip(1).find(|d| same(d)) {
                            Some(d) => merge(d, pd, ""),
                            None => docs.push(pd.clone()),
                        }
                    } else {
                        let first = docs.first_mut().ok_or(PatchError::NoDocument)?;
                        merge(first, pd, "");
                    }
                }
                Ok(())
            }
        }
    }
}

/// Which key identifies list items at `path`, if they merge by key.
fn merge_key(path: &str) -> Option<&'static [&'static str]> {
    if path.ends_with(".network.interfaces") {
        Some(&["interface", "deviceSelector"])
    } else if path.ends_with(".vlans") {
        Some(&["vlanId"])
    } else if path.ends_with(".admissionControl") {
        Some(&["name"])
    } else {
        None
    }
}

const REPLACED_LISTS: [&str; 2] = [".cluster.network.podSubnets", ".cluster.network.serviceSubnets"];

/// Merges `patch` into `base` at `path` (dotted, leading dot).
pub fn merge(base: &mut Value, patch: &Value, path: &str) {
    match (base, patch) {
        (Value::Object(b), Value::Object(p)) => merge_maps(b, p, path),
        (Value::Array(b), Value::Array(p)) => {
            if REPLACED_LISTS.contains(&path) {
                *b = p.clone();
            } else if let Some(keys) = merge_key(path) {
                for item in p {
                    let id = |v: &Value| keys.iter().find_map(|k| v.get(*k).cloned().map(|x| (*k, x)));
                    let found = id(item).and_then(|(k, x)| b.iter_mut().find(|e| e.get(k) == Some(&x)));
                    match found {
                        Some(existing) => merge(existing, item, path),
                        None => b.push(item.clone()),
                    }
                }
            } else {
                b.extend(p.iter().cloned());
            }
        }
        (b, p) => *b = p.clone(),
    }
}

fn merge_maps(b: &mut Map<String, Value>, p: &Map<String, Value>, path: &str) {
    for (k, v) in p {
        let sub = format!("{path}.{k}");
        if is_delete(v) {
            b.remove(k);
            continue;
        }
        match b.get_mut(k) {
            Some(existing) if !existing.is_null() => merge(existing, v, &sub),
            _ => {
                b.insert(k.clone(), v.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strategic_merge_rules() {
        let mut docs = vec![json!({
            "machine": {"network": {"interfaces": [{"interface": "eth0", "dhcp": true}]}, "certSANs": ["a"]},
            "cluster": {"network": {"podSubnets": ["10.244.0.0/16"]}, "proxy": {"image": "x"}}
        })];
        let p = Patch::parse(&json!(
            "machine:\n  certSANs: [b]\n  network:\n    interfaces:\n      - interface: eth0\n        mtu: 9000\n      - interface: eth1\ncluster:\n  network:\n    podSubnets: [10.1.0.0/16]\n  proxy:\n    $patch: delete\n---\napiVersion: v1alpha1\nkind: UserVolumeConfig\nname: data\n"
        ))
        .unwrap();
        p.apply(&mut docs).unwrap();
        let m = &docs[0]["machine"];
        assert_eq!(m["certSANs"], json!(["a", "b"]));
        assert_eq!(
            m["network"]["interfaces"][0],
            json!({"interface": "eth0", "dhcp": true, "mtu": 9000})
        );
        assert_eq!(m["network"]["interfaces"][1], json!({"interface": "eth1"}));
        assert_eq!(
            docs[0]["cluster"]["network"]["podSubnets"],
            json!(["10.1.0.0/16"])
        );
        assert!(docs[0]["cluster"].get("proxy").is_none());
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[1]["kind"], "UserVolumeConfig");
    }

    #[test]
    fn rfc6902_and_errors() {
        let mut docs = vec![json!({"machine": {"install": {"wipe": false}}})];
        let p = Patch::parse(&json!(
            "- op: replace\n  path: /machine/install/wipe\n  value: true\n- op: add\n  path: /machine/install/disk\n  value: /dev/sda\n"
        ))
        .unwrap();
        p.apply(&mut docs).unwrap();
        assert_eq!(
            docs[0]["machine"]["install"],
            json!({"wipe": true, "disk": "/dev/sda"})
        );
        let bad = Patch::parse(&json!("- op: remove\n  path: /nope\n")).unwrap();
        assert!(bad.apply(&mut docs).is_err());
        assert!(
            Patch::parse(&json!("@./file.yaml"))
                .unwrap_err()
                .to_string()
                .contains("not supported")
        );
        assert!(Patch::parse(&json!("just a string")).is_err());
    }
}
