//! A MAC lives in one place. `infra/` nodes get their catalog groups derived from
//! `infra/` ([`derive_groups`]): selector `mac` = the node's `mac`, `metadata.hostname`
//! = the node, profile = the one profile that boots the node's cluster (and role);
//! `profiles/groups/` stays for machines outside clusters. [`claims`] refuses a MAC
//! claimed twice (two nodes, a node and a group, two groups), naming both places.
//! [`edit`] writes an adopted machine's MAC (and UUID) into its node as a line edit.

pub mod edit;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::catalog::{Catalog, ConfigKind, FieldError, Group, NodeRole, Profile};
use crate::infra::Infra;
use crate::model::MacAddr;

/// One node of `infra/`, whatever its distribution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRef {
    /// Its cluster (= file stem).
    pub cluster: String,
    /// Its position in `nodes[]` (for field paths).
    pub index: usize,
    /// `hostname`.
    pub hostname: String,
    /// `controlPlane`.
    pub role: NodeRole,
    /// `mac`.
    pub mac: Option<MacAddr>,
    /// `otherMacs`.
    pub other_macs: Vec<MacAddr>,
    /// The config kind its profiles must serve (`talos` or `flatcar`).
    pub kind: ConfigKind,
}

fn role(control_plane: bool) -> NodeRole {
    if control_plane {
        NodeRole::Controlplane
    } else {
        NodeRole::Worker
    }
}

/// Every node of every cluster, in file order.
pub fn nodes(infra: &Infra) -> Vec<NodeRef> {
    let talos = infra.talos.iter().flat_map(|(c, cl)| {
        cl.nodes.iter().enumerate().map(move |(i, n)| NodeRef {
            cluster: c.clone(),
            index: i,
            hostname: n.hostname.clone(),
            role: role(n.control_plane),
            mac: n.mac,
            other_macs: n.other_macs.clone(),
            kind: ConfigKind::Talos,
        })
    });
    let k0s = infra.k0s.iter().flat_map(|(c, cl)| {
        cl.nodes.iter().enumerate().map(move |(i, n)| NodeRef {
            cluster: c.clone(),
            index: i,
            hostname: n.hostname.clone(),
            role: role(n.control_plane),
            mac: n.mac,
            other_macs: n.other_macs.clone(),
            kind: ConfigKind::Flatcar,
        })
    });
    talos.chain(k0s).collect()
}

/// The profile that boots `node`: among the profiles naming its cluster (those with
/// its distribution's config kind, if any; else any kind, e.g. a `plain` rescue
/// profile), those whose `role` is unset or the node's; one with the node's role set
/// wins over one without. `Err` lists the candidates when that is not one.
pub fn profile_for<'a>(cat: &'a Catalog, node: &NodeRef) -> Result<&'a Profile, Vec<String>> {
    let named: Vec<&Profile> = cat
        .profiles
        .values()
        .filter(|p| p.cluster.as_deref() == Some(node.cluster.as_str()))
        .filter(|p| p.role.is_none_or(|r| r == node.role))
        .collect();
    let kind: Vec<&Profile> = named.iter().copied().filter(|p| p.config == node.kind).collect();
    let fits = if kind.is_empty() { named } else { kind };
    let exact: Vec<&Profile> = fits
        .iter()
        .copied()
        .filter(|p| p.role == Some(node.role))
        .collect();
    match (exact.as_slice(), fits.as_slice()) {
        ([one], _) | ([], [one]) => Ok(one),
        (_, _) => Err(fits.iter().map(|p| p.id.clone()).collect()),
    }
}

fn err(file: &Path, field: impl Into<String>, message: impl Into<String>) -> FieldError {
    FieldError {
        file: file.to_path_buf(),
        field: field.into(),
        message: message.into(),
    }
}

/// Adds a group for every `infra/` node with a `mac` to `cat` (id = the node's
/// hostname, source = its cluster file). A node whose cluster no profile boots gets
/// none (nothing could boot it); more than one fitting profile, or a file group
/// with the same id, is a problem.
pub fn derive_groups(cat: &mut Catalog, infra: &Infra) -> Vec<FieldError> {
    let mut problems = Vec::new();
    for node in nodes(infra) {
        let Some(mac) = node.mac else { continue };
        let file = infra.sources.get(&node.cluster).cloned().unwrap_or_default();
        let profile = match profile_for(cat, &node) {
            Ok(p) => p.id.clone(),
            Err(c) if c.is_empty() => continue,
            Err(c) => {
                problems.push(err(
                    &file,
                    format!("nodes[{}]", node.index),
                    format!(
                        "profiles {} all boot cluster {:?}: set `role: controlplane|worker` in them",
                        c.join(", "),
                        node.cluster
                    ),
                ));
                continue;
            }
        };
        let key = format!("group/{}", node.hostname);
        if let Some(other) = cat.sources.get(&key) {
            problems.push(err(
                other,
                "id",
                format!(
                    "{:?} is also the group {} derives for its node {:?}: remove this group (a MAC lives in infra/ only)",
                    node.hostname,
                    file.display(),
                    node.hostname
                ),
            ));
            continue;
        }
        let group = Group {
            id: node.hostname.clone(),
            description: format!("derived from {} nodes[{}]", file.display(), node.index),
            profile,
            selector: BTreeMap::from([("mac".to_string(), mac.to_string())]),
            metadata: BTreeMap::from([("hostname".to_string(), node.hostname.clone())]),
        };
        cat.sources.insert(key, file);
        cat.groups.insert(group.id.clone(), group);
    }
    problems
}

/// Where a MAC is written: a file and a field, and who owns it (a node or a group).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// The file.
    pub file: PathBuf,
    /// The field (`nodes[0].mac`, `selector.mac`).
    pub field: String,
    /// `node <cluster>/<host>` or `group <id>`: one owner may name a MAC twice.
    pub owner: String,
}

/// Every MAC claim of `infra/` (nodes' `mac` and `otherMacs`) and of the groups
/// in `profiles/groups/` (call before [`derive_groups`], whose groups repeat the nodes).
pub fn claims(cat: &Catalog, infra: &Infra) -> Vec<(MacAddr, Claim)> {
    let mut out = Vec::new();
    for n in nodes(infra) {
        let file = infra.sources.get(&n.cluster).cloned().unwrap_or_default();
        let owner = format!("node {}/{}", n.cluster, n.hostname);
        let fields = n.mac.map(|m| (m, "mac".to_string())).into_iter().chain(
            n.other_macs
                .iter()
                .enumerate()
                .map(|(j, m)| (*m, format!("otherMacs[{j}]"))),
        );
        for (mac, field) in fields {
            let field = format!("nodes[{}].{field}", n.index);
            out.push((
                mac,
                Claim {
                    file: file.clone(),
                    field,
                    owner: owner.clone(),
                },
            ));
        }
    }
    for g in cat.groups.values() {
        let Some(mac) = g.selector.get("mac").and_then(|m| m.parse::<MacAddr>().ok()) else {
            continue;
        };
        let file = cat
            .sources
            .get(&format!("group/{}", g.id))
            .cloned()
            .unwrap_or_default();
        let owner = format!("group {}", g.id);
        out.push((
            mac,
            Claim {
                file,
                field: "selector.mac".into(),
                owner,
            },
        ));
    }
    out
}

/// A problem for every MAC claimed by two owners, naming both files and fields.
pub fn duplicate_claims(claims: &[(MacAddr, Claim)]) -> Vec<FieldError> {
    let mut first: BTreeMap<MacAddr, &Claim> = BTreeMap::new();
    let mut problems = Vec::new();
    for (mac, c) in claims {
        match first.get(mac) {
            Some(f) if f.owner != c.owner => problems.push(err(
                &c.file,
                &c.field,
                format!(
                    "MAC {mac} is also claimed by {} field `{}` ({}): a MAC lives in one place{}",
                    f.file.display(),
                    f.field,
                    f.owner,
                    if f.owner.starts_with("node") && c.owner.starts_with("group") {
                        "; infra/ nodes need no group (it is derived from infra/)"
                    } else {
                        ""
                    }
                ),
            )),
            Some(_) => {}
            None => {
                first.insert(*mac, c);
            }
        }
    }
    problems
}

#[cfg(test)]
mod tests;
