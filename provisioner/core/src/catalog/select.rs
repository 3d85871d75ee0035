//! Group selection: which group (and so which profile) a machine gets.
//!
//! A group matches when every key of its selector equals the request's label of the
//! same name. Among matching groups the one with the most selector keys wins (the
//! most specific, as in matchbox); equal counts are broken by the smaller group id,
//! so the outcome never depends on load order.

use std::collections::BTreeMap;

use super::Group;
use crate::model::Labels;

/// Picks the winning group for `labels`, if any matches.
pub fn select_group<'a>(groups: &'a BTreeMap<String, Group>, labels: &Labels) -> Option<&'a Group> {
    groups
        .values()
        .filter(|g| g.selector.iter().all(|(k, v)| labels.get(k) == Some(v)))
        // BTreeMap iterates ids in ascending order; `max_by_key` keeps the *last*
        // maximum, so compare on (count, reverse id) to keep the first id instead.
        .max_by(|a, b| {
            a.selector
                .len()
                .cmp(&b.selector.len())
                .then_with(|| b.id.cmp(&a.id))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(id: &str, sel: &[(&str, &str)]) -> Group {
        Group {
            id: id.into(),
            description: String::new(),
            profile: format!("p-{id}"),
            selector: sel.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            metadata: BTreeMap::new(),
        }
    }

    fn groups(gs: Vec<Group>) -> BTreeMap<String, Group> {
        gs.into_iter().map(|g| (g.id.clone(), g)).collect()
    }

    fn labels(l: &[(&str, &str)]) -> Labels {
        l.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn most_specific_wins() {
        let gs = groups(vec![
            group("default", &[]),
            group("amd64", &[("arch", "amd64")]),
            group("node1", &[("arch", "amd64"), ("mac", "52:54:00:00:00:01")]),
        ]);
        let l = labels(&[("arch", "amd64"), ("mac", "52:54:00:00:00:01")]);
        assert_eq!(select_group(&gs, &l).unwrap().id, "node1");
        let l = labels(&[("arch", "amd64"), ("mac", "52:54:00:00:00:02")]);
        assert_eq!(select_group(&gs, &l).unwrap().id, "amd64");
        let l = labels(&[("arch", "arm64")]);
        assert_eq!(select_group(&gs, &l).unwrap().id, "default");
    }

    #[test]
    fn ties_break_by_smallest_id_whatever_the_insertion_order() {
        for order in [["b", "a", "c"], ["c", "b", "a"], ["a", "c", "b"]] {
            let gs = groups(order.iter().map(|id| group(id, &[("rack", "r1")])).collect());
            assert_eq!(select_group(&gs, &labels(&[("rack", "r1")])).unwrap().id, "a");
        }
    }

    #[test]
    fn missing_label_does_not_match() {
        let gs = groups(vec![group("g", &[("hostname", "talos-1")])]);
        assert!(select_group(&gs, &labels(&[("mac", "x")])).is_none());
        assert!(select_group(&gs, &labels(&[("hostname", "talos-2")])).is_none());
    }

    #[test]
    fn labels_and_uuid_match() {
        let gs = groups(vec![
            group("by-uuid", &[("uuid", "0d8c1d3e-0000-4000-8000-000000000001")]),
            group("by-label", &[("role", "worker"), ("site", "lab")]),
        ]);
        let l = labels(&[("uuid", "0d8c1d3e-0000-4000-8000-000000000001")]);
        assert_eq!(select_group(&gs, &l).unwrap().id, "by-uuid");
        let l = labels(&[("role", "worker"), ("site", "lab"), ("extra", "x")]);
        assert_eq!(select_group(&gs, &l).unwrap().id, "by-label");
    }
}
