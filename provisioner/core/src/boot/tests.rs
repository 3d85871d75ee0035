use super::*;
use crate::catalog::{ConfigKind, Group, ImageFile};
use time::OffsetDateTime;

fn catalog() -> Catalog {
    let mut c = Catalog::default();
    c.images.insert(
        "img".into(),
        Image {
            id: "img".into(),
            description: String::new(),
            kernel: ImageFile {
                file: "vmlinuz".into(),
                url: None,
                sha256: None,
            },
            initrds: vec![],
            args: vec![],
        },
    );
    for p in ["cp", "fallback"] {
        c.profiles.insert(
            p.into(),
            Profile {
                id: p.into(),
                description: String::new(),
                image: "img".into(),
                args: vec![],
                config: ConfigKind::Plain,
                cluster: None,
                admission: None,
                device_flow: None,
                role: None,
            },
        );
    }
    c.groups.insert(
        "talos-1".into(),
        Group {
            id: "talos-1".into(),
            description: String::new(),
            profile: "cp".into(),
            selector: [("mac".to_string(), "52:54:00:00:00:01".to_string())].into(),
            metadata: [("hostname".to_string(), "talos-1".to_string())].into(),
        },
    );
    c
}

fn req(mac: &str) -> BootRequest {
    BootRequest {
        mac: Some(mac.parse().unwrap()),
        arch: Arch::X86_64Efi,
        ..Default::default()
    }
}

fn booter(unknown: UnknownPolicy) -> CatalogBooter {
    CatalogBooter {
        catalog: catalog(),
        unknown,
    }
}

#[test]
fn matched_machine_installs_with_group_metadata() {
    let d = booter(UnknownPolicy::Record).decide(&req("52-54-00-00-00-01"), None);
    let BootDecision::Install(plan) = d else {
        panic!("{d:?}")
    };
    assert_eq!(plan.profile.id, "cp");
    assert_eq!(plan.group.as_deref(), Some("talos-1"));
    assert_eq!(plan.metadata["hostname"], "talos-1");
}

#[test]
fn installed_machine_boots_locally() {
    let mut m = Machine::discovered("52:54:00:00:00:01".parse().unwrap(), OffsetDateTime::UNIX_EPOCH);
    m.state = MachineState::Installed;
    let d = booter(UnknownPolicy::Record).decide(&req("52:54:00:00:00:01"), Some(&m));
    assert_eq!(d.outcome(), "local");
    m.state = MachineState::ReimageRequested;
    let d = booter(UnknownPolicy::Record).decide(&req("52:54:00:00:00:01"), Some(&m));
    assert_eq!(d.outcome(), "install");
}

#[test]
fn unknown_policies() {
    let r = req("52:54:00:00:00:99");
    assert!(matches!(
        booter(UnknownPolicy::Record).decide(&r, None),
        BootDecision::Unknown { record: true, .. }
    ));
    assert!(matches!(
        booter(UnknownPolicy::Ignore).decide(&r, None),
        BootDecision::Unknown { record: false, .. }
    ));
    let d = booter(UnknownPolicy::Profile("fallback".into())).decide(&r, None);
    let BootDecision::Install(plan) = d else { panic!() };
    assert_eq!(plan.profile.id, "fallback");
    assert_eq!(plan.group, None);
}

#[test]
fn operator_profile_override_beats_groups() {
    let mut m = Machine::discovered("52:54:00:00:00:01".parse().unwrap(), OffsetDateTime::UNIX_EPOCH);
    m.profile = Some("fallback".into());
    let d = booter(UnknownPolicy::Record).decide(&req("52:54:00:00:00:01"), Some(&m));
    let BootDecision::Install(plan) = d else { panic!() };
    assert_eq!(plan.profile.id, "fallback");
    m.profile = Some("missing".into());
    let d = booter(UnknownPolicy::Record).decide(&req("52:54:00:00:00:01"), Some(&m));
    assert_eq!(d.outcome(), "unknown");
}

#[test]
fn policy_parses() {
    assert_eq!(
        "profile:x".parse::<UnknownPolicy>().unwrap(),
        UnknownPolicy::Profile("x".into())
    );
    assert!("profile:".parse::<UnknownPolicy>().is_err());
    assert!("drop".parse::<UnknownPolicy>().is_err());
}

#[test]
fn query_parsing() {
    let r = BootRequest::from_query(
        "mac=52-54-00-AB-CD-EF&uuid=0D8C1D3E-1111-4000-8000-000000000001&arch=x86_64&platform=efi&serial=SN%201",
    );
    assert_eq!(r.mac.unwrap().to_string(), "52:54:00:ab:cd:ef");
    assert_eq!(r.uuid.as_deref(), Some("0d8c1d3e-1111-4000-8000-000000000001"));
    assert_eq!(r.arch, Arch::X86_64Efi);
    assert_eq!(r.serial.as_deref(), Some("SN 1"));
    let r = BootRequest::from_query(
        "mac=nonsense&uuid=00000000-0000-0000-0000-000000000000&arch=i386&platform=pcbios&serial=",
    );
    assert_eq!(r.mac, None);
    assert_eq!(r.uuid, None, "all-zero UUID is iPXE's 'unknown'");
    assert_eq!(r.arch, Arch::X86Bios);
    assert_eq!(r.serial, None);
}

proptest::proptest! {
    #[test]
    fn query_parsing_never_panics(s in ".{0,300}") {
        let _ = BootRequest::from_query(&s);
    }

    #[test]
    fn query_parsing_never_panics_on_structured_input(
        pairs in proptest::collection::vec(("(mac|uuid|arch|platform|serial|x)", "[ -~]{0,40}"), 0..8)
    ) {
        let q: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let r = BootRequest::from_query(&q.join("&"));
        if let Some(m) = r.mac { proptest::prop_assert_eq!(m.to_string().len(), 17); }
    }
}

/// The booter and the views of stored machines (API, cluster workflows) use the one
/// rule: for each machine, the profile and group the booter installs are the ones
/// `assign::assignment` reports, and a machine no group takes is unassigned in both.
#[test]
fn the_booter_and_stored_machines_share_one_assignment_rule() {
    let mut c = catalog();
    c.groups.insert(
        "rack-r1".into(),
        Group {
            id: "rack-r1".into(),
            description: String::new(),
            profile: "fallback".into(),
            selector: [("rack".to_string(), "r1".to_string())].into(),
            metadata: Default::default(),
        },
    );
    let b = CatalogBooter {
        catalog: c.clone(),
        unknown: UnknownPolicy::Record,
    };
    let at = OffsetDateTime::UNIX_EPOCH;
    let by_mac = Machine::discovered("52:54:00:00:00:01".parse().unwrap(), at);
    let mut by_label = Machine::discovered("52:54:00:00:00:03".parse().unwrap(), at);
    by_label.labels.insert("rack".into(), "r1".into());
    let mut overridden = by_mac.clone();
    overridden.profile = Some("fallback".into());
    let stranger = Machine::discovered("52:54:00:00:00:09".parse().unwrap(), at);
    let expected = [
        Some(("cp", Some("talos-1"))),
        Some(("fallback", Some("rack-r1"))),
        Some(("fallback", None)),
        None,
    ];
    for (m, want) in [by_mac, by_label, overridden, stranger].iter().zip(expected) {
        let stored = assign::assignment(&c, m);
        let booted = match b.decide(&req(&m.mac.to_string()), Some(m)) {
            BootDecision::Install(plan) => Some((plan.profile.id, plan.group)),
            BootDecision::Unknown { .. } => None,
            other => panic!("{other:?}"),
        };
        let stored = stored.map(|a| (a.profile, a.group));
        assert_eq!(stored, booted, "{}", m.mac);
        let want = want.map(|(p, g)| (p.to_string(), g.map(str::to_string)));
        assert_eq!(stored, want, "{}", m.mac);
    }
}
