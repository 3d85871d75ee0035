use time::macros::datetime;

use super::*;
use crate::timeline::ScriptAnswer;
use Phase as P;
use Signal as S;

const S1: P = P::Stage1Served { attempt: 1 };
const S2: P = P::Stage1Served { attempt: 2 };

/// Every (phase, signal) pair, with the expected outcome.
#[test]
fn every_transition() {
    let table: [(P, S, Option<P>); 16] = [
        (P::Pending, S::Stage1Served, Some(S1)),
        (P::Pending, S::DiskInstalled, None), // callback without stage 1
        (P::Pending, S::K0sInstalled, None),
        (P::Pending, S::Reimage, Some(P::Pending)),
        (S1, S::Stage1Served, Some(S2)), // retry: PXE again before the disk install
        (S1, S::DiskInstalled, Some(P::DiskInstalled)),
        (S1, S::K0sInstalled, None), // k0s before the disk: impossible
        (S1, S::Reimage, Some(P::Pending)),
        (P::DiskInstalled, S::Stage1Served, None), // on disk: boots locally
        (P::DiskInstalled, S::DiskInstalled, None), // replay
        (P::DiskInstalled, S::K0sInstalled, Some(P::K0sInstalled)),
        (P::DiskInstalled, S::Reimage, Some(P::Pending)),
        (P::K0sInstalled, S::Stage1Served, None),
        (P::K0sInstalled, S::DiskInstalled, None),
        (P::K0sInstalled, S::K0sInstalled, None), // replay
        (P::K0sInstalled, S::Reimage, Some(P::Pending)),
    ];
    for (from, sig, want) in table {
        assert_eq!(step(from, sig).ok(), want, "{from:?} + {sig:?}");
        if want.is_none() {
            assert_eq!(
                step(from, sig),
                Err(Refused {
                    phase: from,
                    signal: sig
                })
            );
        }
    }
}

#[test]
fn retries_count_and_saturate() {
    let mut p = P::Pending;
    for _ in 0..5 {
        p = step(p, S::Stage1Served).unwrap();
    }
    assert_eq!(p, P::Stage1Served { attempt: 5 });
    assert_eq!(
        step(P::Stage1Served { attempt: u32::MAX }, S::Stage1Served),
        Ok(P::Stage1Served { attempt: u32::MAX })
    );
}

#[test]
fn timeouts() {
    let t = Timeouts::default();
    let t0 = datetime!(2026-01-01 00:00 UTC);
    let m = Duration::minutes;
    let table = [
        (P::Pending, m(600), Health::OnTime),
        (S1, m(44), Health::OnTime),
        (S1, m(45), Health::OnTime),
        (
            S1,
            m(50),
            Health::Overdue {
                waiting_for: S::DiskInstalled,
                late_by: m(5),
            },
        ),
        (P::Stage1Served { attempt: 3 }, m(1), Health::OnTime),
        (
            P::Stage1Served { attempt: 4 },
            m(1),
            Health::Failed { attempts: 4 },
        ),
        (P::DiskInstalled, m(29), Health::OnTime),
        (
            P::DiskInstalled,
            m(31),
            Health::Overdue {
                waiting_for: S::K0sInstalled,
                late_by: m(1),
            },
        ),
        (P::K0sInstalled, m(6000), Health::OnTime),
    ];
    for (phase, after, want) in table {
        assert_eq!(health(phase, t0, t0 + after, &t), want, "{phase:?} after {after}");
    }
}

fn ev(min: i64, event: Event) -> TimelineEvent {
    event.at(datetime!(2026-01-01 00:00 UTC) + Duration::minutes(min))
}

fn served(bytes: u64, config: ConfigKind) -> Event {
    Event::ConfigServed { bytes, config }
}

#[test]
fn timeline_replay_skips_refused_events() {
    let events = [
        ev(
            0,
            Event::IpxeScriptServed(ScriptAnswer::Install {
                profile: "k0s".into(),
                image: "flatcar".into(),
            }),
        ),
        ev(1, served(900, ConfigKind::Flatcar)),
        // Refused at the time: replaying it must not count it.
        ev(2, Event::K0sInstalled),
        // Other machines' config fetches are not k0s signals.
        ev(5, served(120, ConfigKind::Plain)),
        ev(9, served(900, ConfigKind::Flatcar)),
        ev(20, Event::DiskInstalled),
        ev(21, Event::DiskInstalled),
    ];
    let (p, since) = from_timeline(&events);
    assert_eq!(p, P::DiskInstalled);
    assert_eq!(since, Some(events[5].at));
    let mut more = events.to_vec();
    more.push(ev(30, Event::K0sInstalled));
    assert_eq!(from_timeline(&more).0, P::K0sInstalled);
    more.push(ev(
        40,
        Event::StateChanged {
            from: MachineState::Installed,
            to: MachineState::ReimageRequested,
        },
    ));
    assert_eq!(from_timeline(&more).0, P::Pending);
    more.push(ev(41, served(900, ConfigKind::Flatcar)));
    assert_eq!(from_timeline(&more).0, S1, "attempts restart after a reimage");
    let st = status(
        &more,
        more[more.len() - 1].at + Duration::minutes(50),
        &Timeouts::default(),
    );
    assert_eq!((st.phase, st.attempt, st.health), ("Stage1Served", 1, "overdue"));
    assert_eq!(
        (st.waiting_for, st.late_by_secs),
        (Some("DiskInstalled"), Some(300))
    );
}

/// Entries of a store written before the typed timeline are read back into the
/// typed events the phase needs; text that merely mentions a signal is not one.
#[test]
fn schema_1_entries_replay_through_the_legacy_reader() {
    use crate::timeline::{EventKind, legacy};
    let old = |min: i64, kind: EventKind, detail: &str| ev(min, legacy::parse(kind, detail));
    let events = [
        old(
            1,
            EventKind::ConfigServed,
            "900 bytes (Flatcar stage-1 Ignition; k0s: Stage1Served)",
        ),
        old(2, EventKind::ConfigServed, "k0s: Stage1Served (hand-written)"),
        old(
            3,
            EventKind::DiskInstalled,
            "flatcar-install finished; next netboot boots the disk; k0s: DiskInstalled, waiting for \
             K0sInstalled",
        ),
    ];
    assert_eq!(from_timeline(&events), (P::DiskInstalled, Some(events[2].at)));
    assert!(matches!(events[1].event, Event::Legacy { .. }));
    let mut reimaged = events.to_vec();
    reimaged.push(old(4, EventKind::StateChanged, "Installed -> ReimageRequested"));
    assert_eq!(from_timeline(&reimaged).0, P::Pending);
}
