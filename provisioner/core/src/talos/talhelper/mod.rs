//! `provisioner import talhelper`: converts a talhelper `talconfig.yaml` into an
//! `infra/` cluster definition, the way `talhelper genconfig` reads it (talhelper
//! v3.1.16-20 `39b6979`, `pkg/config/loader.go`, `pkg/config/config.go`,
//! `pkg/talos/nodeconfig.go`, `pkg/talos/multidocs.go`, `pkg/generate/config.go`):
//!
//! 1. `${VAR}` substitution over the text ([`envsubst`]) from talenv values, then the
//!    environment (the caller merges them: talenv wins, as talhelper's `os.Setenv`);
//! 2. `@file` references in `patches`, `machineFiles[].content`, `inlineManifests`
//!    and `extraManifests` read relative to the talconfig ([`Sources::file`]), then
//!    templated and substituted as talhelper does;
//! 3. node-group (`controlPlane:` / `worker:`) settings merged into the nodes with
//!    talhelper's rules (`pkg/config/nodeconfigs.go`): group patches first unless the
//!    node sets `overridePatches`, `certSANs` appended, every other field taken from
//!    the group only when the node leaves it empty;
//! 4. the node fields the infra format has no field for rendered into the node's
//!    patches as the documents Talos takes ([`fields`]), `machineSpec` into the
//!    installer image, Go-templated labels, annotations and patches evaluated against
//!    the node's rendered config ([`gotmpl`]).
//!
//! Whatever cannot be carried over is removed and listed by path with the reason.
//! No I/O here: the caller reads files (and decrypts SOPS) through [`Sources`].

pub mod envsubst;
mod fields;
mod finish;
mod gotmpl;
mod nodes;
pub mod sealed;

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::cluster::TalosCluster;

/// What the import reads besides the talconfig text, provided by the caller.
pub trait Sources {
    /// A variable's value: talenv first, then the process environment.
    fn var(&self, name: &str) -> Option<String>;
    /// The contents of a file named after `@` in the talconfig (relative to the
    /// talconfig's directory unless absolute), SOPS-decrypted when encrypted.
    fn file(&self, path: &str) -> Result<String, FileError>;
}

/// Why a file (a talenv file or one named with `@`) cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// Not among the given files.
    #[error("{0}: no such file")]
    Missing(String),
    /// The caller could not read it.
    #[error("{path}: {error}")]
    Read {
        /// The path read.
        path: String,
        /// Why.
        error: std::io::Error,
    },
    /// SOPS-encrypted and no age identity to decrypt it.
    #[error("{0} is SOPS-encrypted: pass the age key file with --age-key (or set SOPS_AGE_KEY_FILE)")]
    NoAgeKey(String),
    /// SOPS decryption failed (the caller's SOPS error).
    #[error(transparent)]
    Decrypt(Box<dyn std::error::Error + Send + Sync>),
}

/// Why a talenv file is not a mapping of variables.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TalenvError {
    /// Not YAML.
    #[error(transparent)]
    Yaml(#[from] super::yaml::YamlError),
    /// YAML, but not a mapping.
    #[error("talenv is not a mapping of NAME: value")]
    NotMapping,
    /// A value that is a list or mapping.
    #[error("talenv value `{0}` is not a scalar")]
    NotScalar(String),
}

/// [`Sources`] from maps (tests, and callers that preload everything).
#[derive(Debug, Clone, Default)]
pub struct Given {
    /// Variables.
    pub vars: BTreeMap<String, String>,
    /// Files by the path written after `@` (leading `./` ignored).
    pub files: BTreeMap<String, String>,
}

impl Sources for Given {
    fn var(&self, name: &str) -> Option<String> {
        self.vars.get(name).cloned()
    }
    fn file(&self, path: &str) -> Result<String, FileError> {
        let p = path.trim_start_matches("./");
        self.files
            .get(p)
            .cloned()
            .ok_or_else(|| FileError::Missing(path.to_string()))
    }
}

/// Why a talconfig cannot be imported.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImportError {
    /// `${VAR}` substitution failed.
    #[error("talconfig.yaml: {0}")]
    Subst(#[from] envsubst::SubstError),
    /// The (substituted) text is not YAML or not a mapping.
    #[error("talconfig.yaml: {0}")]
    Yaml(String),
    /// A referenced file cannot be read or is not usable.
    #[error("talconfig.yaml: field `{field}`: {reason}")]
    Field {
        /// Dotted path of the field.
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// What remains is not a cluster definition.
    #[error("talconfig.yaml: {0}")]
    Invalid(String),
}

/// The result of an import.
#[derive(Debug, Clone, PartialEq)]
pub struct Imported {
    /// The cluster definition.
    pub cluster: TalosCluster,
    /// Dropped fields: (path, reason).
    pub unsupported: Vec<(String, String)>,
    /// Every patch was moved into the nodes in talhelper's order, because the
    /// appliance's layer order would have rendered some node differently.
    pub reordered: bool,
}

/// Dropped fields collected during the import.
pub(crate) type Dropped = Vec<(String, String)>;

/// talhelper's top-level fields (`pkg/config/config.go` `TalhelperConfig`) the infra
/// format takes as they are.
const TOP_KEPT: [&str; 13] = [
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
    "nodes",
];

/// The names the text references outside comments: those must resolve. When the
/// raw text is not YAML (a `${VAR}` inside a flow sequence is only YAML once
/// substituted), comments are found line by line: `#` at the start of a line or
/// after a blank.
fn required_names(text: &str) -> Vec<String> {
    parsed_names(text).unwrap_or_else(|| {
        text.lines()
            .flat_map(|l| {
                let code = match l.find(" #") {
                    _ if l.trim_start().starts_with('#') => "",
                    Some(i) => &l[..i],
                    None => l,
                };
                envsubst::names(code)
            })
            .collect()
    })
}

fn parsed_names(text: &str) -> Option<Vec<String>> {
    fn strings(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::String(s) => out.extend(envsubst::names(s)),
            Value::Array(a) => a.iter().for_each(|x| strings(x, out)),
            Value::Object(m) => m.iter().for_each(|(k, x)| {
                out.extend(envsubst::names(k));
                strings(x, out)
            }),
            _ => {}
        }
    }
    let docs = super::yaml::from_str_multi(text).ok()?;
    let mut out = Vec::new();
    docs.iter().for_each(|d| strings(d, &mut out));
    Some(out)
}

/// Substitutes `${VAR}` in `text` as talhelper does (references only in comments
/// may stay unresolved).
pub fn substitute(text: &str, src: &dyn Sources) -> Result<String, envsubst::SubstError> {
    let needed = required_names(text);
    envsubst::substitute(text, &|n| src.var(n), &|n| needed.iter().any(|x| x == n))
}

/// Parses a `talenv.yaml` (plain; decrypt SOPS first): a mapping of scalar values,
/// each becoming a variable (talhelper `pkg/substitute/envsubst.go` `LoadEnv`).
pub fn parse_talenv(text: &str) -> Result<BTreeMap<String, String>, TalenvError> {
    let v = super::yaml::from_str(text)?;
    let Some(m) = v.as_object() else {
        return if v.is_null() {
            Ok(BTreeMap::new())
        } else {
            Err(TalenvError::NotMapping)
        };
    };
    m.iter()
        .filter(|(k, _)| k.as_str() != "sops")
        .map(|(k, v)| match v {
            Value::String(s) => Ok((k.clone(), s.clone())),
            Value::Number(_) | Value::Bool(_) => Ok((k.clone(), v.to_string())),
            Value::Null => Ok((k.clone(), String::new())),
            _ => Err(TalenvError::NotScalar(k.clone())),
        })
        .collect()
}

/// Converts talconfig text.
pub fn import(text: &str, src: &dyn Sources) -> Result<Imported, ImportError> {
    let text = substitute(text, src)?;
    let mut v = super::yaml::from_str(&text).map_err(|e| ImportError::Yaml(e.to_string()))?;
    let mut out = Dropped::new();
    let top = v
        .as_object_mut()
        .ok_or_else(|| ImportError::Yaml("not a mapping".into()))?;
    if let Some(a) = top.remove("allowSchedulingOnMasters") {
        top.entry("allowSchedulingOnControlPlanes").or_insert(a);
    }
    fields::legacy_patches(top, "", &mut out);
    let mut cluster_patches = Vec::new();
    if let Some(Value::Object(f)) = top.remove("imageFactory") {
        image_factory(f, top, &mut out);
    }
    if let Some(Value::Array(ims)) = top.remove("inlineManifests") {
        cluster_patches.push(fields::inline_manifests(ims, src, &mut out)?);
    }
    let keys: Vec<String> = top.keys().cloned().collect();
    for k in keys {
        if !TOP_KEPT.contains(&k.as_str())
            && !matches!(k.as_str(), "controlPlane" | "worker" | "installerRegistry")
        {
            top.remove(&k);
            out.push((k, "not a talhelper field".into()));
        }
    }
    fields::resolve_patches(top, "", src, &mut out, fields::Layer::Shared)?;
    if let Some(Value::Array(p)) = top.get_mut("patches") {
        p.extend(cluster_patches);
    } else if !cluster_patches.is_empty() {
        top.insert("patches".into(), Value::Array(cluster_patches));
    }
    let pending = nodes::merge_and_convert(top, src, &mut out)?;
    top.insert("distribution".into(), Value::String("talos".into()));
    let mut cluster: TalosCluster =
        serde_json::from_value(v).map_err(|e| ImportError::Invalid(e.to_string()))?;
    let reordered = finish::finish(&mut cluster, pending, src, &mut out)?;
    Ok(Imported {
        cluster,
        unsupported: out,
        reordered,
    })
}

/// `imageFactory` (`pkg/config/config.go` `ImageFactory`): the registry becomes the
/// appliance's `installerRegistry`; the rest only shapes URLs talhelper prints.
fn image_factory(f: Map<String, Value>, top: &mut Map<String, Value>, out: &mut Dropped) {
    for (k, val) in f {
        match k.as_str() {
            "registryURL" => {
                top.insert("installerRegistry".into(), val);
            }
            "installerURLTmpl" => out.push((
                format!("imageFactory.{k}"),
                "the appliance builds installer references as `<registry>/<mode>-installer[-secureboot]/<schematic>:<version>` (talhelper's default); custom templates are not evaluated".into(),
            )),
            "schematicEndpoint" | "protocol" | "ISOURLTmpl" => out.push((
                format!("imageFactory.{k}"),
                "only shapes URLs talhelper prints; the appliance computes schematic IDs itself and pulls boot assets through `images pull`".into(),
            )),
            _ => out.push((format!("imageFactory.{k}"), "not a talhelper field".into())),
        }
    }
}

impl Imported {
    /// The infra file text: a header listing what was dropped, then the definition.
    pub fn to_yaml(&self) -> String {
        let mut s = String::from(
            "# Imported from talhelper talconfig.yaml by `provisioner import talhelper`.\n\
             # Add each node's `mac` (PXE match) and `power` before booting it.\n",
        );
        if self.reordered {
            s.push_str(
                "# Patches are listed per node in talhelper's order (generated documents, group,\n\
                 # node, cluster): applied cluster-first, some would set the same field differently.\n",
            );
        }
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
