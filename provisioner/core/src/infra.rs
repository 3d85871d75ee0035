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

use crate::catalog::{CatalogError, FieldError, YamlFile};
use crate::k0s::K0sCluster;
use crate::model::MacAddr;
use crate::talos::TalosCluster;
use crate::talos::talhelper::sealed;

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

/// The options `talos::yaml::from_str` reads cluster files with (Kubernetes-style
/// booleans: `auto: off` stays a string).
fn strict() -> serde_saphyr::Options {
    serde_saphyr::options! { strict_booleans: true }
}

fn err(file: &Path, field: impl Into<String>, message: impl Into<String>) -> FieldError {
    FieldError {
        file: file.to_path_buf(),
        field: field.into(),
        message: message.into(),
    }
}

pub use crate::talos::talhelper::sealed::{NoTalenvKey, TalenvUnavailable, Talenvs};

/// Loads and validates `dir/*.yaml` (a missing directory is an empty infra).
pub fn load(dir: &Path) -> Result<Infra, CatalogError> {
    load_with(dir, None)
}

/// [`load`], reading `text` for the file `instead.0` (an edit about to be written,
/// validated exactly as `check` will read it).
pub fn load_with(dir: &Path, instead: Option<(&Path, &str)>) -> Result<Infra, CatalogError> {
    load_sealed(dir, instead, &NoTalenvKey)
}

/// [`load_with`], resolving the `${NAME}`s of cluster files that have an encrypted
/// talenv with `talenvs`.
pub fn load_sealed(
    dir: &Path,
    instead: Option<(&Path, &str)>,
    talenvs: &dyn Talenvs,
) -> Result<Infra, CatalogError> {
    let mut errs = Vec::new();
    let mut files = crate::catalog::read_yaml_dir(dir, &mut errs);
    if let Some((p, t)) = instead {
        match files.iter_mut().find(|(path, _)| path == p) {
            Some(file) => file.1 = t.to_string(),
            None => files.push((p.to_path_buf(), t.to_string())),
        }
        files.sort_by(|a, b| a.0.cmp(&b.0));
    }
    build(&files, errs, talenvs)
}

/// [`load`] over files already read (each cluster named by its file's stem).
pub fn load_files(files: &[YamlFile]) -> Result<Infra, CatalogError> {
    build(files, Vec::new(), &NoTalenvKey)
}

fn file_name(p: &Path) -> &str {
    p.file_name().and_then(|s| s.to_str()).unwrap_or_default()
}

fn build(
    files: &[YamlFile],
    mut errs: Vec<FieldError>,
    talenvs: &dyn Talenvs,
) -> Result<Infra, CatalogError> {
    let mut infra = Infra::default();
    let (talenv_files, files): (Vec<&YamlFile>, Vec<&YamlFile>) = files
        .iter()
        .partition(|(p, _)| sealed::companion_of(file_name(p)).is_some());
    for (path, text) in files {
        let (path, text) = (path.as_path(), text.as_str());
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_string();
        let talenv = talenv_files
            .iter()
            .find(|(p, _)| sealed::companion_of(file_name(p)) == Some(stem.as_str()));
        let (unsealed, vars) = match talenv.map(|t| sealed::unseal_file(path, text, t, talenvs)) {
            None => (None, None),
            Some(Ok((t, v))) => (Some(t), Some(v)),
            Some(Err(e)) => {
                errs.push(e);
                continue;
            }
        };
        let text = unsealed.as_deref().unwrap_or(text);
        let first_err = errs.len();
        cluster_file(path, &stem, text, &mut infra, &mut errs);
        // Errors quote lines and values: a talenv value goes back to its `${NAME}`.
        if let Some(vars) = &vars {
            for e in &mut errs[first_err..] {
                e.message = sealed::redact(&e.message, vars);
                e.field = sealed::redact(&e.field, vars);
            }
        }
    }
    if errs.is_empty() {
        Ok(infra)
    } else {
        Err(CatalogError(errs))
    }
}

/// Parses and validates one cluster file into `infra` (errors into `errs`).
fn cluster_file(path: &Path, stem: &str, text: &str, infra: &mut Infra, errs: &mut Vec<FieldError>) {
    let value = match crate::talos::yaml::from_str(text) {
        Ok(v @ Value::Object(_)) => v,
        Ok(_) => {
            errs.push(err(path, "(document)", "not a mapping"));
            return;
        }
        Err(e) => {
            errs.push(err(path, "(document)", e.to_string()));
            return;
        }
    };
    let name = value
        .get("clusterName")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if name != stem {
        errs.push(err(
            path,
            "clusterName",
            format!("{name:?} differs from the file name {stem:?}"),
        ));
        return;
    }
    let dist = value
        .get("distribution")
        .and_then(Value::as_str)
        .unwrap_or("talos")
        .to_string();
    match dist.as_str() {
        "talos" => match crate::fieldpath::from_str::<TalosCluster>(text, strict()) {
            Ok(c) => {
                for (f, m) in c.validate() {
                    errs.push(err(path, f, m));
                }
                infra.talos.insert(stem.to_string(), c);
            }
            Err(e) => errs.push(err(path, e.field_or_document(), e.to_string())),
        },
        "k0s" => match crate::fieldpath::from_str::<K0sCluster>(text, strict()) {
            Ok(c) => {
                for (f, m) in c.validate() {
                    errs.push(err(path, f, m));
                }
                infra.k0s.insert(stem.to_string(), c);
            }
            Err(e) => errs.push(err(path, e.field_or_document(), e.to_string())),
        },
        other => errs.push(err(
            path,
            "distribution",
            format!("{other:?} is not talos or k0s"),
        )),
    }
    infra.sources.insert(stem.to_string(), path.to_path_buf());
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

/// What `check`, the dashboard and the daemon's log say about a cluster that still
/// carries placeholder MACs.
pub const NOT_ARMED: &str = "cluster not armed: replace the placeholder MACs";

/// Whether `mac` is one of the placeholders the shipped `infra/` and `profiles/` use:
/// first octet `02`, a locally administered unicast address (IEEE 802 "U/L" bit set,
/// I/G bit clear) that no NIC ships with (infra/README.md). Only `02:…` counts, not
/// every locally administered address: QEMU's `52:54:00:…` is one too, and real
/// virtual machines boot with it.
pub fn is_placeholder_mac(mac: MacAddr) -> bool {
    mac.0[0] == 0x02
}

/// A cluster's nodes as `(hostname, mac)` pairs, for the arming rule.
pub trait NodeMacs {
    /// Every node with a `mac`.
    fn node_macs(&self) -> Vec<(String, MacAddr)>;

    /// Nodes that still carry a placeholder MAC.
    fn placeholder_nodes(&self) -> Vec<(String, MacAddr)> {
        self.node_macs()
            .into_iter()
            .filter(|(_, m)| is_placeholder_mac(*m))
            .collect()
    }

    /// A cluster is armed (may get secrets, be dialled, get DHCP reservations) once
    /// none of its nodes carries a placeholder MAC.
    fn armed(&self) -> bool {
        self.placeholder_nodes().is_empty()
    }
}

impl NodeMacs for TalosCluster {
    fn node_macs(&self) -> Vec<(String, MacAddr)> {
        self.nodes
            .iter()
            .filter_map(|n| Some((n.hostname.clone(), n.mac?)))
            .collect()
    }
}

impl NodeMacs for K0sCluster {
    fn node_macs(&self) -> Vec<(String, MacAddr)> {
        self.nodes
            .iter()
            .filter_map(|n| Some((n.hostname.clone(), n.mac?)))
            .collect()
    }
}

/// A cluster file read leniently (any distribution, unvalidated): its `nodes[]`
/// `hostname` and `mac` fields. Used where a file that does not validate must still
/// be shown (the API's cluster list).
impl NodeMacs for Value {
    fn node_macs(&self) -> Vec<(String, MacAddr)> {
        let Some(nodes) = self.get("nodes").and_then(Value::as_array) else {
            return Vec::new();
        };
        nodes
            .iter()
            .filter_map(|n| {
                let mac = n.get("mac")?.as_str()?.parse().ok()?;
                let host = n.get("hostname").and_then(Value::as_str).unwrap_or("?");
                Some((host.to_string(), mac))
            })
            .collect()
    }
}

/// `cluster not armed: replace the placeholder MACs (talos-1 02:…, …)`.
pub fn not_armed_message(placeholders: &[(String, MacAddr)]) -> String {
    let list: Vec<String> = placeholders.iter().map(|(h, m)| format!("{h} {m}")).collect();
    format!("{NOT_ARMED} ({})", list.join(", "))
}

impl Infra {
    /// Clusters that are not armed, with the message naming their placeholder nodes.
    pub fn unarmed(&self) -> BTreeMap<String, String> {
        let talos = self.talos.iter().map(|(n, c)| (n, c.placeholder_nodes()));
        let k0s = self.k0s.iter().map(|(n, c)| (n, c.placeholder_nodes()));
        talos
            .chain(k0s)
            .filter(|(_, p)| !p.is_empty())
            .map(|(n, p)| (n.clone(), not_armed_message(&p)))
            .collect()
    }

    /// Only the armed clusters: what may generate secrets, dial nodes and reserve
    /// addresses. (`sources` keeps every file.)
    pub fn armed_only(mut self) -> Self {
        self.talos.retain(|_, c| c.armed());
        self.k0s.retain(|_, c| c.armed());
        self
    }
}

#[cfg(test)]
mod arming_tests {
    use super::*;

    #[test]
    fn placeholders_are_the_02_prefix_only() {
        let mac = |s: &str| s.parse::<MacAddr>().unwrap();
        assert!(is_placeholder_mac(mac("02:00:00:00:01:01")));
        assert!(is_placeholder_mac(mac("02:42:ac:11:00:02")));
        // QEMU's locally administered prefix and a vendor OUI arm a cluster.
        assert!(!is_placeholder_mac(mac("52:54:00:12:34:56")));
        assert!(!is_placeholder_mac(mac("bc:24:11:00:00:01")));
    }

    #[test]
    fn the_shipped_infra_is_not_armed_and_a_real_mac_arms_it() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../infra");
        let infra = load(&dir).unwrap();
        let unarmed = infra.unarmed();
        assert_eq!(
            unarmed.keys().collect::<Vec<_>>(),
            ["beelink", "genmachine"],
            "{unarmed:?}"
        );
        assert_eq!(
            unarmed["genmachine"],
            "cluster not armed: replace the placeholder MACs (talos-1 02:00:00:00:01:01, \
             talos-2 02:00:00:00:01:02, talos-3 02:00:00:00:01:03)"
        );
        let armed = infra.clone().armed_only();
        assert!(armed.talos.is_empty() && armed.k0s.is_empty());
        assert_eq!(armed.sources.len(), 2);

        // One real MAC is not enough; all of them arm it.
        let mut c = infra.talos["genmachine"].clone();
        c.nodes[0].mac = Some("bc:24:11:00:00:01".parse().unwrap());
        assert!(!c.armed());
        for (i, n) in c.nodes.iter_mut().enumerate() {
            n.mac = Some(MacAddr([0xbc, 0x24, 0x11, 0, 0, i as u8]));
        }
        assert!(c.armed());
        // The lenient reading of the raw file agrees.
        let raw: Value =
            crate::talos::yaml::from_str(&std::fs::read_to_string(dir.join("beelink.yaml")).unwrap())
                .unwrap();
        assert_eq!(raw.placeholder_nodes().len(), 3);
    }
}

#[cfg(test)]
mod field_path_tests {
    use super::*;

    /// A typo deep in a cluster file is reported at its path (`nodes[0].macc`), for
    /// Talos and k0s files alike, with serde-saphyr's message and position.
    #[test]
    fn a_nested_typo_is_named_by_its_path() {
        let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../infra");
        let dir = std::env::temp_dir().join(format!("infra-fieldpath-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for file in ["genmachine.yaml", "beelink.yaml"] {
            let text = std::fs::read_to_string(shipped.join(file)).unwrap();
            let bad = text.replacen("    mac: \"02:", "    macc: \"02:", 1);
            assert_ne!(bad, text, "{file}: the shipped file changed shape");
            std::fs::write(dir.join(file), bad).unwrap();
        }
        let errs = load(&dir).unwrap_err().0;
        std::fs::remove_dir_all(&dir).unwrap();
        for file in ["genmachine.yaml", "beelink.yaml"] {
            let e = errs
                .iter()
                .find(|e| e.file.ends_with(file))
                .unwrap_or_else(|| panic!("{file}: {errs:?}"));
            assert_eq!(e.field, "nodes[0].macc", "{e:?}");
            assert!(e.message.contains("unknown field `macc`"), "{e:?}");
        }
    }

    /// The in-memory loader (the fuzz target's) is `load` without the reads.
    #[test]
    fn load_files_agrees_with_load() {
        let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../infra");
        let mut errs = Vec::new();
        let files = crate::catalog::read_yaml_dir(&shipped, &mut errs);
        assert!(errs.is_empty() && files.len() >= 2, "{errs:?}");
        let from_disk = format!("{:?}", load(&shipped));
        assert_eq!(format!("{:?}", load_files(&files)), from_disk);
        let bad = vec![(PathBuf::from("x/site.yaml"), "clusterName: other\n".to_owned())];
        let e = load_files(&bad).unwrap_err().0;
        assert_eq!(
            (e[0].file.as_path(), e[0].field.as_str()),
            (Path::new("x/site.yaml"), "clusterName")
        );
    }
}
