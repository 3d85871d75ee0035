//! Progress lines of recorded Talos and k0s workflows, with exact times.

use time::Duration;
use time::macros::datetime;

use super::*;
use crate::cluster::bootstrap::ev;

fn t(min: i64) -> OffsetDateTime {
    datetime!(2026-09-21 12:00 UTC) + Duration::minutes(min)
}

fn change(min: i64, from: Step, to: Step) -> ClusterEvent {
    ev(
        t(min),
        ClusterEventKind::StepChanged,
        format!("{from} -> {to}: why"),
    )
}

fn marks(l: &[Milestone]) -> Vec<(&str, Mark, Option<OffsetDateTime>)> {
    l.iter().map(|m| (m.label, m.mark, m.at)).collect()
}

#[test]
fn a_talos_hand_off_in_progress() {
    let events = vec![
        change(3, Step::WaitNodes, Step::Bootstrap),
        change(4, Step::Bootstrap, Step::WaitEtcd),
        ev(t(5), ClusterEventKind::Waiting, "etcd: 2 of 3 members"),
        change(7, Step::WaitEtcd, Step::FetchKubeconfig),
        change(8, Step::FetchKubeconfig, Step::WaitApi),
        change(11, Step::WaitApi, Step::HandOff),
    ];
    let mut s = BootstrapState::new("lab", t(0));
    s.step = Step::HandOff;
    s.step_started = t(11);
    use Mark::*;
    assert_eq!(
        marks(&line(Flow::Talos, Some(&s), &events)),
        [
            ("Bootstrap", Done, Some(t(4))),
            ("etcd", Done, Some(t(7))),
            ("kubeconfig", Done, Some(t(8))),
            ("readyz", Done, Some(t(11))),
            ("Argo CD", Running, Some(t(11))),
            ("root app", Pending, None),
            ("Synced+Healthy", Pending, None),
            ("HandedOff", Pending, None),
        ]
    );
    // Applied at 14: Argo CD and the root app are done; the clock restarted.
    s.applied_at = Some(t(14));
    s.step_started = t(14);
    let l = line(Flow::Talos, Some(&s), &events);
    assert_eq!(
        marks(&l)[4..6],
        [("Argo CD", Done, Some(t(14))), ("root app", Done, Some(t(14)))]
    );
    assert_eq!(marks(&l)[6], ("Synced+Healthy", Running, Some(t(14))));
    // Handed off at 20.
    let mut events = events;
    events.push(change(20, Step::HandOff, Step::HandedOff));
    s.step = Step::HandedOff;
    let l = line(Flow::Talos, Some(&s), &events);
    assert!(l.iter().all(|m| m.mark == Done), "{l:?}");
    assert_eq!(marks(&l)[7], ("HandedOff", Done, Some(t(20))));
}

#[test]
fn not_started_and_failed_lines() {
    let l = line(Flow::Talos, None, &[]);
    assert_eq!(l.len(), 8);
    assert!(l.iter().all(|m| m.mark == Mark::Pending && m.at.is_none()));
    // Waiting for nodes: Bootstrap is what it works towards.
    let s = BootstrapState::new("lab", t(0));
    assert_eq!(
        marks(&line(Flow::Talos, Some(&s), &[]))[0],
        ("Bootstrap", Mark::Running, Some(t(0)))
    );

    let mut s = BootstrapState::new("beelink", t(0));
    s.flow = Flow::K0s;
    s.step = Step::Failed;
    s.failed_step = Some(Step::WaitWorkers);
    s.step_started = t(50);
    let events = vec![
        change(30, Step::WaitK0s, Step::WaitApi),
        change(32, Step::WaitApi, Step::WaitWorkers),
        change(50, Step::WaitWorkers, Step::Failed),
    ];
    use Mark::*;
    assert_eq!(
        marks(&line(Flow::K0s, Some(&s), &events)),
        [
            ("k0s controller", Done, Some(t(30))),
            ("readyz", Done, Some(t(32))),
            ("workers Ready", Failed, Some(t(50))),
            ("Argo CD", Pending, None),
            ("Synced+Healthy", Pending, None),
            ("HandedOff", Pending, None),
        ]
    );
}
