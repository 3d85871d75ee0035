//! What `infra/` says about config release: each cluster's `admission`, and each
//! node's other NICs (from which its config fetch and callbacks are accepted).

use std::collections::{BTreeMap, HashMap};

use super::admission::Admission;
use crate::k0s::K0sCluster;
use crate::model::MacAddr;
use crate::talos::TalosCluster;

/// Cluster name → its `admission`, for clusters that set one.
pub fn cluster_admission(
    talos: &BTreeMap<String, TalosCluster>,
    k0s: &BTreeMap<String, K0sCluster>,
) -> HashMap<String, Admission> {
    let t = talos.iter().filter_map(|(n, c)| Some((n.clone(), c.admission?)));
    let k = k0s.iter().filter_map(|(n, c)| Some((n.clone(), c.admission?)));
    t.chain(k).collect()
}

/// Boot MAC → the node's other declared NICs (Talos: `otherMacs` and exact
/// `hardwareAddr` device selectors; k0s: `otherMacs`).
pub fn other_nics(
    talos: &BTreeMap<String, TalosCluster>,
    k0s: &BTreeMap<String, K0sCluster>,
) -> HashMap<MacAddr, Vec<MacAddr>> {
    let mut out: HashMap<MacAddr, Vec<MacAddr>> = HashMap::new();
    for (boot, others) in talos.values().flat_map(TalosCluster::node_nics) {
        out.entry(boot).or_default().extend(others);
    }
    for n in k0s.values().flat_map(|c| &c.nodes) {
        if let Some(boot) = n.mac {
            out.entry(boot)
                .or_default()
                .extend(n.other_macs.iter().filter(|m| **m != boot));
        }
    }
    out.retain(|_, v| {
        v.sort();
        v.dedup();
        !v.is_empty()
    });
    out
}
