//! The one assignment rule: machine → group → profile. The booter applies it to a
//! booting machine's request; the API (machine list and detail) and the cluster
//! workflows (k0s readiness, cluster views, Talos resets) apply it to the stored
//! record. Nothing else selects groups ([`select_group`] is private to the crate).
//!
//! The rule: the operator's override (`Machine::profile`) wins; else the most
//! specific group whose selector matches the machine's labels (see
//! [`select_group`]). No match is `None`; what then happens to a booting machine is
//! the booter's unknown policy, not part of the assignment.

use super::BootRequest;
use crate::catalog::{Catalog, ConfigKind, select_group};
use crate::model::{Labels, Machine};

/// The profile a machine gets and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    /// Profile id.
    pub profile: String,
    /// The group that selected it (`None` for an operator override).
    pub group: Option<String>,
    /// The profile's cluster in `infra/` (`None` also when the profile is missing).
    pub cluster: Option<String>,
    /// Which config it serves (tells Talos from Flatcar/k0s nodes).
    pub config: ConfigKind,
}

/// The assignment of `machine` (its record, if the inventory has one) seen with
/// `labels`.
pub fn assign(catalog: &Catalog, machine: Option<&Machine>, labels: &Labels) -> Option<Assignment> {
    let (profile, group) = match machine.and_then(|m| m.profile.clone()) {
        Some(p) => (p, None),
        None => {
            let g = select_group(&catalog.groups, labels)?;
            (g.profile.clone(), Some(g.id.clone()))
        }
    };
    let p = catalog.profiles.get(&profile);
    Some(Assignment {
        cluster: p.and_then(|p| p.cluster.clone()),
        config: p.map(|p| p.config).unwrap_or_default(),
        profile,
        group,
    })
}

/// The assignment of a stored machine, outside a boot: its identity as recorded
/// stands in for a request's (the pinned UUID first, as the release checks use it).
pub fn assignment(catalog: &Catalog, m: &Machine) -> Option<Assignment> {
    let req = BootRequest {
        mac: Some(m.mac),
        uuid: m.pinned_uuid.clone().or_else(|| m.uuid.clone()),
        serial: m.serial.clone(),
        arch: m.arch,
        ..Default::default()
    };
    assign(catalog, Some(m), &req.labels(Some(m)))
}
