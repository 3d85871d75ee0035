//! One test battery for every [`Inventory`] backend (hickory's `basic_battery!` idea):
//! each backend's tests call [`run_all`] with a factory of fresh, empty stores.
//! Panics on the first failed expectation, naming it.

use time::OffsetDateTime;

use super::{
    Inventory, MachineExport, SCHEMA_VERSION, SPENT_TOKENS_PER_MACHINE, Snapshot, SpentHow, TIMELINE_CAP,
    TokenPurpose, TokenRecord, Update,
};
use crate::model::{MacAddr, Machine, MachineState};
use crate::timeline::{Event, Reporter, TimelineEvent};

/// A factory of empty stores.
pub type Factory<'a> = &'a dyn Fn() -> Box<dyn Inventory>;

/// Runs every battery test against fresh stores from `make`.
pub fn run_all(make: Factory<'_>) {
    put_get_list(&*make());
    apply_is_read_modify_write(&*make());
    apply_many_sees_earlier_steps_of_the_batch(&*make());
    timeline_order_and_cap(&*make());
    tokens_are_one_time_and_newest_only(&*make());
    spent_tokens_name_their_machine(&*make());
    delete_removes_everything(&*make());
    apply_issues_tokens_in_the_same_commit(&*make());
    export_import_round_trip(&*make(), &*make());
    import_reads_schema_1_exports(&*make());
    import_refuses_newer_schema(&*make());
}

fn mac(n: u8) -> MacAddr {
    MacAddr([0x52, 0x54, 0, 0, 0, n])
}

fn at(secs: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_790_000_000 + secs).unwrap()
}

/// A free-text event (the one variant whose detail is arbitrary text).
fn note(secs: i64, detail: &str) -> TimelineEvent {
    Event::PowerAction {
        detail: detail.into(),
    }
    .at(at(secs))
}

fn state_changed(secs: i64, from: MachineState, to: MachineState) -> TimelineEvent {
    Event::StateChanged { from, to }.at(at(secs))
}

fn put(inv: &dyn Inventory, m: Machine) {
    inv.put(&m).unwrap();
}

fn put_get_list(inv: &dyn Inventory) {
    assert!(inv.get(mac(1)).unwrap().is_none(), "empty store has no machine");
    for n in [3, 1, 2] {
        let mut m = Machine::discovered(mac(n), at(0));
        m.labels.insert("rack".into(), format!("r{n}"));
        put(inv, m);
    }
    let got = inv.get(mac(2)).unwrap().expect("stored machine readable");
    assert_eq!(got.labels["rack"], "r2");
    let macs: Vec<_> = inv.list().unwrap().into_iter().map(|m| m.mac).collect();
    assert_eq!(macs, vec![mac(1), mac(2), mac(3)], "list ordered by MAC");
}

/// A batch writes every step, and a later step on the same machine sees the record
/// an earlier step of the batch wrote (one transaction reads its own writes).
fn apply_many_sees_earlier_steps_of_the_batch(inv: &dyn Inventory) {
    let create = |m: MacAddr| {
        move |cur: Option<Machine>| Update {
            machine: Some(cur.unwrap_or_else(|| Machine::discovered(m, at(0)))),
            events: vec![note(0, "seen")],
            ..Update::default()
        }
    };
    let (mut a, mut b) = (create(mac(7)), create(mac(8)));
    let mut again = |cur: Option<Machine>| {
        let mut m = cur.expect("the batch's first step wrote the record");
        m.state = MachineState::Booting;
        Update {
            machine: Some(m),
            events: vec![note(1, "again")],
            ..Update::default()
        }
    };
    let mut nothing = |_: Option<Machine>| Update::default();
    inv.apply_many(&mut [
        (mac(7), &mut a),
        (mac(8), &mut b),
        (mac(7), &mut again),
        (mac(9), &mut nothing),
    ])
    .unwrap();
    assert_eq!(inv.get(mac(7)).unwrap().unwrap().state, MachineState::Booting);
    assert!(inv.get(mac(8)).unwrap().is_some());
    assert!(inv.get(mac(9)).unwrap().is_none());
    let details: Vec<String> = inv
        .timeline(mac(7))
        .unwrap()
        .iter()
        .map(|e| format!("{:?}", e.event))
        .collect();
    assert_eq!(details.len(), 2, "{details:?}");
    assert!(
        details[0].contains("seen") && details[1].contains("again"),
        "{details:?}"
    );
    inv.apply_many(&mut []).unwrap();
}

fn apply_is_read_modify_write(inv: &dyn Inventory) {
    let out = inv
        .apply(mac(1), &mut |cur| {
            assert!(cur.is_none());
            Update {
                machine: Some(Machine::discovered(mac(1), at(0))),
                events: vec![note(0, "first")],
                ..Update::default()
            }
        })
        .unwrap();
    assert_eq!(out.unwrap().state, MachineState::Discovered);
    let out = inv
        .apply(mac(1), &mut |cur| {
            let mut m = cur.expect("apply sees the stored record");
            m.state = MachineState::Booting;
            Update {
                machine: Some(m),
                events: vec![state_changed(1, MachineState::Discovered, MachineState::Booting)],
                ..Update::default()
            }
        })
        .unwrap();
    assert_eq!(out.unwrap().state, MachineState::Booting);
    // A change returning None leaves the record alone but still records events.
    let out = inv
        .apply(mac(1), &mut |_| Update {
            machine: None,
            events: vec![
                Event::AssetServed {
                    file: "talos/vmlinuz".into(),
                    bytes: 9,
                }
                .at(at(2)),
            ],
            ..Update::default()
        })
        .unwrap();
    assert_eq!(out.unwrap().state, MachineState::Booting, "None keeps the record");
    assert_eq!(inv.timeline(mac(1)).unwrap().len(), 3);
}

fn timeline_order_and_cap(inv: &dyn Inventory) {
    put(inv, Machine::discovered(mac(1), at(0)));
    let batch: Vec<_> = (0..(TIMELINE_CAP as i64 + 10))
        .map(|i| note(i, &format!("e{i}")))
        .collect();
    for chunk in batch.chunks(300) {
        inv.append(mac(1), chunk).unwrap();
    }
    let tl = inv.timeline(mac(1)).unwrap();
    assert_eq!(tl.len(), TIMELINE_CAP, "timeline capped");
    assert_eq!(tl.first().unwrap().detail(), "e10", "oldest events dropped first");
    assert_eq!(tl.last().unwrap().detail(), format!("e{}", TIMELINE_CAP + 9));
    assert!(tl.windows(2).all(|w| w[0].at <= w[1].at), "oldest first");
    assert!(inv.timeline(mac(9)).unwrap().is_empty());
}

fn tokens_are_one_time_and_newest_only(inv: &dyn Inventory) {
    let rec = |n, purpose| TokenRecord {
        mac: mac(n),
        purpose,
        issued_at: at(0),
        peer: None,
    };
    inv.issue_token("k1", &rec(1, TokenPurpose::Config)).unwrap();
    inv.issue_token("k2", &rec(1, TokenPurpose::InstalledCallback))
        .unwrap();
    inv.issue_token("k3", &rec(2, TokenPurpose::Config)).unwrap();
    assert_eq!(
        inv.take_token("k1", at(1)).unwrap(),
        Some(rec(1, TokenPurpose::Config))
    );
    assert_eq!(inv.take_token("k1", at(2)).unwrap(), None, "a token works once");
    // A newer config token for machine 2 revokes the older one, not other purposes.
    inv.issue_token("k4", &rec(2, TokenPurpose::Config)).unwrap();
    assert_eq!(inv.take_token("k3", at(1)).unwrap(), None, "older token revoked");
    assert!(inv.take_token("k4", at(1)).unwrap().is_some());
    assert!(
        inv.take_token("k2", at(1)).unwrap().is_some(),
        "other purpose untouched"
    );
    assert_eq!(inv.take_token("nope", at(1)).unwrap(), None);
    // Looking at a live token does not spend it (a refused peer costs nothing).
    let with_peer = TokenRecord {
        peer: Some("10.0.0.7".parse().unwrap()),
        ..rec(3, TokenPurpose::Config)
    };
    inv.issue_token("k5", &with_peer).unwrap();
    assert_eq!(inv.live_token("k5").unwrap(), Some(with_peer.clone()));
    assert_eq!(
        inv.live_token("k5").unwrap(),
        Some(with_peer.clone()),
        "still live"
    );
    assert_eq!(inv.spent_token("k5").unwrap(), None);
    assert_eq!(inv.take_token("k5", at(2)).unwrap(), Some(with_peer));
    assert_eq!(inv.live_token("k5").unwrap(), None);
    assert_eq!(inv.live_token("nope").unwrap(), None);
}

fn spent_tokens_name_their_machine(inv: &dyn Inventory) {
    let rec = |n, purpose, secs| TokenRecord {
        mac: mac(n),
        purpose,
        issued_at: at(secs),
        peer: None,
    };
    inv.issue_token("used", &rec(1, TokenPurpose::Config, 0)).unwrap();
    assert_eq!(inv.spent_token("used").unwrap(), None, "live is not spent");
    inv.take_token("used", at(5)).unwrap().unwrap();
    let spent = inv.spent_token("used").unwrap().expect("kept as spent");
    assert_eq!(spent.record, rec(1, TokenPurpose::Config, 0));
    assert_eq!((spent.how, spent.at), (SpentHow::Used, at(5)));
    // Revoked by a newer token of the same machine and purpose.
    inv.issue_token("old", &rec(2, TokenPurpose::Config, 0)).unwrap();
    inv.issue_token("new", &rec(2, TokenPurpose::Config, 7)).unwrap();
    let spent = inv.spent_token("old").unwrap().expect("revoked is spent");
    assert_eq!(
        (spent.record.mac, spent.how, spent.at),
        (mac(2), SpentHow::Revoked, at(7))
    );
    assert_eq!(inv.spent_token("nope").unwrap(), None);
    // A token put back (config not rendered) is live again, not spent.
    inv.take_token("new", at(8)).unwrap().unwrap();
    inv.issue_token("new", &rec(2, TokenPurpose::Config, 7)).unwrap();
    assert_eq!(inv.spent_token("new").unwrap(), None);
    assert!(inv.take_token("new", at(9)).unwrap().is_some());
    // Bounded per machine: the oldest are forgotten, other machines keep theirs.
    for i in 0..(SPENT_TOKENS_PER_MACHINE as i64 + 4) {
        let k = format!("many{i}");
        inv.issue_token(&k, &rec(3, TokenPurpose::InstalledCallback, 10 + i))
            .unwrap();
        inv.take_token(&k, at(10 + i)).unwrap().unwrap();
    }
    assert_eq!(inv.spent_token("many0").unwrap(), None, "oldest forgotten");
    assert!(
        inv.spent_token(&format!("many{}", SPENT_TOKENS_PER_MACHINE + 3))
            .unwrap()
            .is_some()
    );
    assert!(inv.spent_token("used").unwrap().is_some(), "machine 1 untouched");
}

fn delete_removes_everything(inv: &dyn Inventory) {
    put(inv, Machine::discovered(mac(1), at(0)));
    inv.append(mac(1), &[note(0, "")]).unwrap();
    inv.issue_token(
        "k",
        &TokenRecord {
            mac: mac(1),
            purpose: TokenPurpose::Config,
            issued_at: at(0),
            peer: None,
        },
    )
    .unwrap();
    inv.issue_token(
        "k2",
        &TokenRecord {
            mac: mac(1),
            purpose: TokenPurpose::InstalledCallback,
            issued_at: at(0),
            peer: None,
        },
    )
    .unwrap();
    inv.take_token("k2", at(1)).unwrap().unwrap();
    assert!(inv.delete(mac(1)).unwrap());
    assert!(!inv.delete(mac(1)).unwrap(), "second delete finds nothing");
    assert!(inv.get(mac(1)).unwrap().is_none());
    assert!(inv.timeline(mac(1)).unwrap().is_empty());
    assert_eq!(
        inv.take_token("k", at(1)).unwrap(),
        None,
        "tokens go with the machine"
    );
    assert_eq!(inv.spent_token("k2").unwrap(), None, "spent ones too");
}

fn export_import_round_trip(a: &dyn Inventory, b: &dyn Inventory) {
    for n in 1..=3 {
        let mut m = Machine::discovered(mac(n), at(n as i64));
        m.state = MachineState::Installed;
        m.uuid = Some(format!("00000000-0000-4000-8000-00000000000{n}"));
        m.labels.insert("role".into(), "worker".into());
        put(a, m);
        let events = [
            Event::Installed(Reporter::Callback).at(at(n as i64)),
            state_changed(n as i64, MachineState::ConfigServed, MachineState::Installed),
            Event::Legacy {
                kind: crate::timeline::EventKind::TftpServed,
                detail: "written by an older appliance".into(),
            }
            .at(at(n as i64)),
        ];
        a.append(mac(n), &events).unwrap();
    }
    let snap = a.export().unwrap();
    assert_eq!(snap.schema_version, SCHEMA_VERSION);
    assert_eq!(snap.machines.len(), 3);
    // Through JSON, as `provisioner export`/`import` do.
    let json = serde_json::to_string(&snap).unwrap();
    let back: Snapshot = serde_json::from_str(&json).unwrap();
    b.import(&back).unwrap();
    assert_eq!(b.export().unwrap(), snap, "import reproduces the export");
    // Importing twice does not duplicate timelines.
    b.import(&back).unwrap();
    assert_eq!(b.export().unwrap(), snap, "import is idempotent");
}

fn apply_issues_tokens_in_the_same_commit(inv: &dyn Inventory) {
    let rec = |purpose, secs| TokenRecord {
        mac: mac(1),
        purpose,
        issued_at: at(secs),
        peer: None,
    };
    inv.issue_token("old", &rec(TokenPurpose::Config, 0)).unwrap();
    inv.apply(mac(1), &mut |cur| Update {
        machine: Some(cur.unwrap_or_else(|| Machine::discovered(mac(1), at(1)))),
        events: vec![note(1, "script")],
        tokens: vec![
            ("cfg".into(), rec(TokenPurpose::Config, 1)),
            ("cb".into(), rec(TokenPurpose::InstalledCallback, 1)),
        ],
    })
    .unwrap();
    assert_eq!(inv.timeline(mac(1)).unwrap().len(), 1);
    assert_eq!(inv.live_token("cfg").unwrap(), Some(rec(TokenPurpose::Config, 1)));
    assert!(inv.live_token("cb").unwrap().is_some());
    let old = inv
        .spent_token("old")
        .unwrap()
        .expect("the older config token is revoked");
    assert_eq!((old.how, old.at), (SpentHow::Revoked, at(1)));
    assert_eq!(inv.take_token("old", at(2)).unwrap(), None);
}

/// An export written before the typed timeline (schema 1: `kind` and `detail`
/// only) imports, and its entries read back as typed events where the text is one
/// the appliance wrote.
fn import_reads_schema_1_exports(inv: &dyn Inventory) {
    let json = r#"{"schema_version":1,"machines":[{"mac":"52:54:00:00:00:01",
        "first_seen":"2026-09-21T12:00:00Z","last_seen":"2026-09-21T12:00:00Z","state":"Installed",
        "timeline":[
          {"at":"2026-09-21T12:00:00Z","kind":"state_changed","detail":"ConfigServed -> Installed"},
          {"at":"2026-09-21T12:00:01Z","kind":"tftp_served","detail":"snponly.efi (1024 bytes)"}]}]}"#;
    let snap: Snapshot = serde_json::from_str(json).unwrap();
    inv.import(&snap).unwrap();
    let tl = inv.timeline(mac(1)).unwrap();
    assert_eq!(
        tl[0].event,
        Event::StateChanged {
            from: MachineState::ConfigServed,
            to: MachineState::Installed
        }
    );
    assert_eq!(
        tl[1].detail(),
        "snponly.efi (1024 bytes)",
        "other text kept as written"
    );
    let again = serde_json::to_value(&tl).unwrap();
    assert_eq!(again[0]["event"]["type"], "state_changed");
    assert_eq!(again[1]["kind"], "tftp_served");
}

fn import_refuses_newer_schema(inv: &dyn Inventory) {
    let snap = Snapshot {
        schema_version: SCHEMA_VERSION + 1,
        machines: vec![MachineExport {
            machine: Machine::discovered(mac(1), at(0)),
            timeline: vec![],
        }],
    };
    assert!(inv.import(&snap).is_err());
    assert!(inv.get(mac(1)).unwrap().is_none(), "nothing imported");
}
