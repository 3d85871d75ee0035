//! Which machines need an operator, and the counts by state.

use time::macros::datetime;

use super::*;
use crate::release::admission::PendingApproval;
use crate::release::binding::Stage;
use crate::timeline::Reporter;

fn t0() -> OffsetDateTime {
    datetime!(2026-09-21 12:00 UTC)
}

fn machine(last: u8, state: MachineState) -> Machine {
    let mut m = Machine::discovered(MacAddr([0x52, 0x54, 0, 0, 0, last]), t0());
    m.state = state;
    m
}

fn refused(at: OffsetDateTime) -> TimelineEvent {
    Event::ConfigRefused {
        stage: Stage::Config,
        peer: Some("10.9.0.77".parse().unwrap()),
        code: "peer_not_bound".into(),
        reason: "10.9.0.77 is not the machine".into(),
    }
    .at(at)
}

fn reasons(v: &[Attention]) -> Vec<Reason> {
    v.iter().map(|a| a.reason).collect()
}

#[test]
fn counts_list_every_state_in_lifecycle_order() {
    let ms = [
        machine(1, MachineState::Installed),
        machine(2, MachineState::Installed),
        machine(3, MachineState::BootLoop),
        machine(4, MachineState::Discovered),
    ];
    let (total, by) = counts(&ms);
    assert_eq!(total, 4);
    assert_eq!(
        by,
        [
            (MachineState::Discovered, 1),
            (MachineState::Booting, 0),
            (MachineState::ConfigServed, 0),
            (MachineState::Installed, 2),
            (MachineState::ReimageRequested, 0),
            (MachineState::BootLoop, 1),
        ]
    );
}

#[test]
fn boot_loops_and_stuck_installs_need_attention() {
    let stuck_after = Duration::minutes(30);
    let looped = machine(3, MachineState::BootLoop);
    let tl = [Event::BootLoopDetected {
        count: 6,
        window_min: 30,
    }
    .at(t0())];
    let a = attention(&looped, &tl, None, t0(), stuck_after);
    assert_eq!(reasons(&a), [Reason::BootLoop]);
    assert_eq!(a[0].since, t0());
    assert_eq!(a[0].detail, tl[0].detail());

    // Config fetched 31 minutes ago: stuck; 29 minutes ago: still installing.
    let served = machine(5, MachineState::ConfigServed);
    let tl = [Event::ConfigServed {
        bytes: 10,
        config: crate::catalog::ConfigKind::Talos,
    }
    .at(t0())];
    let later = t0() + Duration::minutes(31);
    let a = attention(&served, &tl, None, later, stuck_after);
    assert_eq!(reasons(&a), [Reason::StuckInstall]);
    assert_eq!(a[0].since, t0());
    assert_eq!(
        a[0].detail,
        "config fetched 31 min ago, no installed report (limit 30 min)"
    );
    assert!(attention(&served, &tl, None, t0() + Duration::minutes(29), stuck_after).is_empty());
    // Installed machines with an old config fetch are fine.
    let done = machine(6, MachineState::Installed);
    assert!(attention(&done, &tl, None, later, stuck_after).is_empty());
}

#[test]
fn a_refusal_counts_until_something_resolves_it() {
    let m = machine(7, MachineState::Booting);
    let d = Duration::minutes(30);
    let mut tl = vec![refused(t0())];
    let a = attention(&m, &tl, None, t0(), d);
    assert_eq!(reasons(&a), [Reason::Refused]);
    assert_eq!(a[0].detail, tl[0].detail());
    tl.push(Event::Installed(Reporter::Callback).at(t0() + Duration::minutes(5)));
    assert!(attention(&m, &tl, None, t0(), d).is_empty());
    // A replayed config token after the install is a new refusal.
    tl.push(
        Event::ConfigReplayRefused {
            how: crate::inventory::SpentHow::Used,
            at: t0(),
        }
        .at(t0() + Duration::minutes(9)),
    );
    let a = attention(&m, &tl, None, t0(), d);
    assert_eq!(reasons(&a), [Reason::Refused]);
    assert_eq!(a[0].since, t0() + Duration::minutes(9));
    tl.push(Event::ReimageRequested.at(t0() + Duration::minutes(10)));
    assert!(attention(&m, &tl, None, t0(), d).is_empty());
}

#[test]
fn waiting_approvals_need_attention_until_decided() {
    let d = Duration::minutes(30);
    let mut m = machine(8, MachineState::Discovered);
    m.pending_approval = Some(PendingApproval {
        code: "BCDF-GHJK".into(),
        uuid: None,
        peer: "10.9.0.50".parse().unwrap(),
        since: t0(),
        denied_by: None,
    });
    let a = attention(&m, &[], None, t0(), d);
    assert_eq!(reasons(&a), [Reason::WaitingApproval]);
    assert_eq!(a[0].detail, "install code BCDF-GHJK");
    m.pending_approval.as_mut().unwrap().denied_by = Some("tok".into());
    assert!(attention(&m, &[], None, t0(), d).is_empty());
    let a = attention(&m, &[], Some("WXYZ-BCDF"), t0(), d);
    assert_eq!(
        (reasons(&a), a[0].detail.as_str()),
        (vec![Reason::WaitingApproval], "device code WXYZ-BCDF")
    );

    let mut list = vec![
        attention(&m, &[], Some("WXYZ-BCDF"), t0(), d).remove(0),
        attention(
            &machine(9, MachineState::Booting),
            &[refused(t0())],
            None,
            t0(),
            d,
        )
        .remove(0),
    ];
    sort(&mut list);
    assert_eq!(reasons(&list), [Reason::Refused, Reason::WaitingApproval]);
}
