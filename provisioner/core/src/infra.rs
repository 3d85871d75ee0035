//! Cluster definitions in `infra/`: one YAML file per cluster, named after it.
//!
//! A `distribution:` field says which format a file uses: `talos` (the default, so
//! talhelper-style files need nothing extra) is validated fully by
//! [`crate::talos::TalosCluster::validate`]; `k0s` files by
//! [`crate::k0s::K0sCluster::validate`]. Errors name file and field, like the
//! catalog's.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::catalog::{CatalogError, FieldError};
use crate::k0s::K0sCluster;
use crate::talos::TalosCluster;

/// Every cluster definition found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Infra {
    /// Talos clusters by name.
    pub talos: BTreeMap<String, TalosCluster>,
    /// k0s clusters by name.
    pub k0s: BTreeMap<String, K0sCluster>,
    /// Which file each cluster came from.
    pub sources: BTreeMap<String, PathBuf>,
}

impl Infra {
    /// Every cluster name.
    pub fn names(&self) -> BTreeSet<String> {
        self.talos.keys().chain(self.k0s.keys()).cloned().collect()
    }
}

fn err(file: &Path, field: impl Into<String>, message: impl Into<String>) -> FieldError {
    FieldError {
        file: file.to_path_buf(),
        field: field.into(),
        message: message.into(),
    }
}

/// Loads and validates `dir/*.yaml` (a missing directory is an empty infra).
pub fn load(dir: &Path) -> Result<Infra, CatalogError> {
    let mut infra = Infra::default();
    let mut errs = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(infra);
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for path in paths
        .into_iter()
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
    {
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_string();
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) => {
                errs.push(err(&path, "(document)", format!("cannot read: {e}")));
                continue;
            }
        };
        let value = match crate::talos::yaml::from_str(&text) {
            Ok(v @ Value::Object(_)) => v,
            Ok(_) => {
                errs.push(err(&path, "(document)", "not a mapping"));
                continue;
            }
            Err(e) => {
                errs.push(err(&path, "(document)", e));
                continue;
            }
        };
        let name = value
            .get("clusterName")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if name != stem {
            errs.push(err(
                &path,
                "clusterName",
                format!("{name:?} differs from the file name {stem:?}"),
            ));
            continue;
        }
        let dist = value
            .get("distribution")
            .and_then(Value::as_str)
            .unwrap_or("talos")
            .to_string();
        match dist.as_str() {
            "talos" => match serde_json::from_value::<TalosCluster>(value) {
                Ok(c) => {
                    for (f, m) in c.validate() {
                        errs.push(err(&path, f, m));
                    }
                    infra.talos.insert(stem.clone(), c);
                }
                Err(e) => errs.push(err(&path, "(document)", e.to_string())),
            },
            "k0s" => match serde_json::from_value::<K0sCluster>(value) {
                Ok(c) => {
                    for (f, m) in c.validate() {
                        errs.push(err(&path, f, m));
                    }
                    infra.k0s.insert(stem.clone(), c);
                }
                Err(e) => {
                    let msg = e.to_string();
                    let field = msg
                        .split("field `")
                        .nth(1)
                        .and_then(|r| r.split('`').next())
                        .unwrap_or("(document)")
                        .to_string();
                    errs.push(err(&path, field, msg));
                }
            },
            other => errs.push(err(
                &path,
                "distribution",
                format!("{other:?} is not talos or k0s"),
            )),
        }
        infra.sources.insert(stem, path);
    }
    if errs.is_empty() {
        Ok(infra)
    } else {
        Err(CatalogError(errs))
    }
}

/// A cluster whose nodes catalog groups select by `metadata.hostname`.
pub trait NodeLookup {
    /// The cluster's name.
    fn cluster_name(&self) -> &str;
    /// `Some(mac pin)` when `host` is one of its nodes.
    fn node_mac(&self, host: &str) -> Option<Option<crate::model::MacAddr>>;
}

impl NodeLookup for TalosCluster {
    fn cluster_name(&self) -> &str {
        &self.cluster_name
    }
    fn node_mac(&self, host: &str) -> Option<Option<crate::model::MacAddr>> {
        self.node(host).map(|n| n.mac)
    }
}

impl NodeLookup for K0sCluster {
    fn cluster_name(&self) -> &str {
        &self.cluster_name
    }
    fn node_mac(&self, host: &str) -> Option<Option<crate::model::MacAddr>> {
        self.node(host).map(|n| n.mac)
    }
}

/// Problems of the catalog groups whose profile has config `kind` and a cluster in
/// `clusters`: each needs `metadata.hostname` naming a node of that cluster, and a
/// `selector.mac` that agrees with the node's pinned MAC. `label` names the cluster
/// kind in messages ("cluster", "k0s cluster"); `source` turns a catalog key into
/// its file name.
pub fn group_problems<C: NodeLookup>(
    cat: &crate::catalog::Catalog,
    clusters: &BTreeMap<String, C>,
    kind: crate::catalog::ConfigKind,
    label: &str,
    source: &dyn Fn(String) -> String,
) -> Vec<String> {
    use crate::catalog::ConfigKind;
    let kind_name = match kind {
        ConfigKind::Talos => "Talos",
        ConfigKind::Flatcar => "Flatcar",
        ConfigKind::Plain => "plain",
        ConfigKind::None => "none",
    };
    let mut problems = Vec::new();
    for g in cat.groups.values() {
        let Some(p) = cat.profiles.get(&g.profile).filter(|p| p.config == kind) else {
            continue;
        };
        let Some(cluster) = p.cluster.as_ref().and_then(|c| clusters.get(c)) else {
            continue;
        };
        let file = source(format!("group/{}", g.id));
        let Some(host) = g.metadata.get("hostname") else {
            problems.push(format!(
                "{file}: field `metadata.hostname`: required for {kind_name} profile {:?}",
                p.id
            ));
            continue;
        };
        match cluster.node_mac(host) {
            None => problems.push(format!(
                "{file}: field `metadata.hostname`: {label} {:?} has no node {host:?}",
                cluster.cluster_name()
            )),
            Some(Some(want)) => {
                if let Some(sel) = g.selector.get("mac")
                    && want.to_string() != *sel
                {
                    problems.push(format!(
                        "{file}: field `selector.mac`: {sel} but node {host:?} in infra has mac {want}"
                    ));
                }
            }
            Some(None) => {}
        }
    }
    problems
}
