use std::path::Path;

use super::edit::{EditError, adopt, adopt_nth};
use super::*;

fn shipped(file: &str) -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../infra")
            .join(file),
    )
    .unwrap()
}

fn mac(s: &str) -> MacAddr {
    s.parse().unwrap()
}

/// Lines of `new` that are not in `old` at the same place, and the reverse.
fn diff(old: &str, new: &str) -> (Vec<String>, Vec<String>) {
    let o: Vec<&str> = old.lines().collect();
    let n: Vec<&str> = new.lines().collect();
    let gone = o
        .iter()
        .filter(|l| !n.contains(l))
        .map(|l| l.to_string())
        .collect();
    let came = n
        .iter()
        .filter(|l| !o.contains(l))
        .map(|l| l.to_string())
        .collect();
    (gone, came)
}

#[test]
fn adopting_a_placeholder_node_replaces_its_mac_and_selector_and_adds_the_uuid() {
    let text = shipped("genmachine.yaml");
    let uuid = "8c4e3c1a-1b2c-4d5e-8f90-123456789abc";
    let e = adopt(&text, "talos-2", mac("52:54:00:aa:bb:02"), Some(uuid)).unwrap();
    let (gone, came) = diff(&text, &e.text);
    assert_eq!(
        gone,
        [
            "    mac: \"02:00:00:00:01:02\"",
            "      - deviceSelector: { hardwareAddr: \"02:00:00:00:01:02\" }"
        ]
    );
    assert_eq!(
        came,
        [
            "    mac: \"52:54:00:aa:bb:02\"",
            &format!("    uuid: \"{uuid}\""),
            "      - deviceSelector: { hardwareAddr: \"52:54:00:aa:bb:02\" }"
        ]
    );
    assert_eq!(e.lines.len(), 3);
    assert_eq!(e.text.lines().count(), text.lines().count() + 1);
    // Comments and the other nodes are untouched; the result parses.
    assert!(e.text.starts_with("# GenMachine: the production Talos cluster"));
    let c: crate::talos::TalosCluster =
        serde_json::from_value(crate::talos::yaml::from_str(&e.text).unwrap()).unwrap();
    assert_eq!(c.nodes[1].mac, Some(mac("52:54:00:aa:bb:02")));
    assert_eq!(c.nodes[1].uuid.as_deref(), Some(uuid));
    assert_eq!(c.nodes[0].mac, Some(mac("02:00:00:00:01:01")));
    // Again with the same values: nothing changes.
    let again = adopt(&e.text, "talos-2", mac("52:54:00:aa:bb:02"), Some(uuid)).unwrap();
    assert_eq!(again.text, e.text);
    assert!(again.lines.is_empty());
}

#[test]
fn a_node_without_mac_gets_one_after_its_hostname_and_k0s_files_work_too() {
    let text = shipped("beelink.yaml").replace("    mac: \"02:00:00:00:02:03\"\n", "");
    let e = adopt(&text, "beelink-3", mac("52:54:00:aa:bb:03"), None).unwrap();
    let (gone, came) = diff(&text, &e.text);
    assert!(gone.is_empty(), "{gone:?}");
    assert_eq!(came, ["    mac: \"52:54:00:aa:bb:03\""]);
    let at = e
        .text
        .find("- hostname: beelink-3\n    mac: \"52:54:00:aa:bb:03\"\n");
    assert!(at.is_some(), "{}", e.text);
}

#[test]
fn a_node_whose_hostname_is_a_sealed_placeholder_is_picked_by_its_index() {
    // A talhelper import keeps values from an encrypted talenv as `${NAME}`
    // (infra/README.md, "Values kept encrypted"): the line edit cannot read the
    // name, so the loader's index picks the node and the placeholder stays.
    let text = "nodes:\n  - hostname: ${HOST_A}\n    controlPlane: true\n  - hostname: \"${HOST_B}\" # sealed\n    controlPlane: false\n";
    let e = adopt_nth(text, 1, "talos-b", mac("52:54:00:aa:bb:0b"), Some("u-1")).unwrap();
    let (gone, came) = diff(text, &e.text);
    assert!(gone.is_empty(), "{gone:?}");
    assert_eq!(came, ["    mac: \"52:54:00:aa:bb:0b\"", "    uuid: \"u-1\""]);
    assert!(
        e.text
            .contains("- hostname: \"${HOST_B}\" # sealed\n    mac: \"52:54:00:aa:bb:0b\"\n"),
        "{}",
        e.text
    );
    // By name alone the placeholder is never guessed at.
    assert_eq!(
        adopt(text, "talos-b", mac("52:54:00:aa:bb:0b"), None),
        Err(EditError::NoNode("talos-b".into()))
    );
    // An index whose literal hostname is another node's is refused, not edited.
    let plain = "nodes:\n  - hostname: talos-a\n  - hostname: talos-b\n";
    assert_eq!(
        adopt_nth(plain, 0, "talos-b", mac("52:54:00:aa:bb:0b"), None),
        Err(EditError::NoNode("talos-b".into()))
    );
    assert!(adopt_nth(plain, 1, "talos-b", mac("52:54:00:aa:bb:0b"), None).is_ok());
}

#[test]
fn refusals_name_the_node_and_what_it_has() {
    let text = shipped("genmachine.yaml");
    assert_eq!(
        adopt(&text, "talos-9", mac("52:54:00:aa:bb:02"), None),
        Err(EditError::NoNode("talos-9".into()))
    );
    let real = text.replace("\"02:00:00:00:01:01\"", "\"bc:24:11:00:00:01\"");
    assert_eq!(
        adopt(&real, "talos-1", mac("52:54:00:aa:bb:02"), None),
        Err(EditError::Taken {
            host: "talos-1".into(),
            field: "mac",
            value: "bc:24:11:00:00:01".into()
        })
    );
    let with_uuid = adopt(
        &text,
        "talos-1",
        mac("52:54:00:aa:bb:01"),
        Some("8c4e3c1a-1b2c-4d5e-8f90-123456789abc"),
    )
    .unwrap()
    .text;
    let other = adopt(
        &with_uuid,
        "talos-1",
        mac("52:54:00:aa:bb:01"),
        Some("00000000-1b2c-4d5e-8f90-123456789abc"),
    );
    assert!(
        matches!(other, Err(EditError::Taken { field: "uuid", .. })),
        "{other:?}"
    );
    assert_eq!(
        adopt("clusterName: x\n", "a", mac("52:54:00:aa:bb:01"), None),
        Err(EditError::NoNodes)
    );
    let flow = "nodes:\n  - { hostname: a1, mac: \"02:00:00:00:00:02\" }\n  - { hostname: a, mac: \"02:00:00:00:00:01\" }\n";
    assert_eq!(
        adopt(flow, "b", mac("52:54:00:aa:bb:01"), None),
        Err(EditError::NoNode("b".into()))
    );
    assert_eq!(
        adopt(flow, "a", mac("52:54:00:aa:bb:01"), None),
        Err(EditError::Flow("a".into()))
    );
}

fn shipped_inputs() -> (Catalog, Infra) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let cat = crate::catalog::load(&root.join("images"), &root.join("profiles")).unwrap();
    (cat, crate::infra::load(&root.join("infra")).unwrap())
}

#[test]
fn groups_for_infra_nodes_are_derived_by_cluster_and_role() {
    let (mut cat, infra) = shipped_inputs();
    assert!(
        cat.groups.is_empty(),
        "the shipped groups were only infra nodes: {:?}",
        cat.groups.keys()
    );
    assert!(derive_groups(&mut cat, &infra).is_empty());
    let profile = |h: &str| cat.groups[h].profile.as_str();
    assert_eq!(profile("talos-1"), "genmachine-controlplane");
    assert_eq!(profile("beelink-1"), "beelink-controller");
    assert_eq!(profile("beelink-2"), "beelink-worker");
    assert_eq!(cat.groups["talos-3"].selector["mac"], "02:00:00:00:01:03");
    assert_eq!(cat.groups["talos-3"].metadata["hostname"], "talos-3");
    assert!(cat.sources["group/beelink-3"].ends_with("infra/beelink.yaml"));

    // Two profiles without a role for one cluster: the node's file says which.
    let (mut cat, infra) = shipped_inputs();
    cat.profiles.get_mut("beelink-worker").unwrap().role = None;
    cat.profiles.get_mut("beelink-controller").unwrap().role = None;
    let problems = derive_groups(&mut cat, &infra);
    assert_eq!(problems.len(), 3, "{problems:?}");
    assert!(problems[0].file.ends_with("infra/beelink.yaml"));
    assert_eq!(problems[0].field, "nodes[0]");
    assert!(
        problems[0].message.contains("beelink-controller, beelink-worker"),
        "{problems:?}"
    );
}

#[test]
fn a_mac_claimed_twice_names_both_files_and_fields() {
    let (mut cat, mut infra) = shipped_inputs();
    // Two nodes of two clusters.
    infra.k0s.get_mut("beelink").unwrap().nodes[2].mac = Some(mac("02:00:00:00:01:01"));
    // A node and a group; two groups.
    for id in ["old-talos-2", "stray"] {
        cat.groups.insert(
            id.into(),
            Group {
                id: id.into(),
                description: String::new(),
                profile: "genmachine-controlplane".into(),
                selector: BTreeMap::from([("mac".into(), "02:00:00:00:01:02".into())]),
                metadata: BTreeMap::new(),
            },
        );
        cat.sources
            .insert(format!("group/{id}"), format!("profiles/groups/{id}.yaml").into());
    }
    let problems: Vec<String> = duplicate_claims(&claims(&cat, &infra))
        .iter()
        .map(|p| p.to_string())
        .collect();
    assert_eq!(problems.len(), 3, "{problems:#?}");
    assert!(
        problems
            .iter()
            .any(|p| p.contains("genmachine.yaml field `nodes[0].mac`")
                && p.contains("beelink.yaml: field `nodes[2].mac`"))
    );
    assert!(problems.iter().any(
        |p| p.starts_with("profiles/groups/old-talos-2.yaml: field `selector.mac`")
            && p.contains("genmachine.yaml field `nodes[1].mac`")
            && p.contains("need no group")
    ));
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with("profiles/groups/stray.yaml: field `selector.mac`"))
    );
}
