//! Table tests of the bootstrap state machine.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Duration;

use time::OffsetDateTime;

use super::*;
use crate::cluster::bootstrap::*;
use crate::cluster::{ClusterEventKind, ClusterStore, MemClusterStore};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn plan() -> Plan {
    Plan {
        cluster: "genmachine".into(),
        // Deliberately not in sorted insertion order: the lowest IP must win.
        control_plane: ["10.0.0.13", "10.0.0.11", "10.0.0.12"]
            .iter()
            .map(|s| ip(s))
            .collect(),
        hand_off: true,
        timeouts: Timeouts::default(),
        poll: Duration::from_millis(500),
    }
}

fn t0() -> OffsetDateTime {
    OffsetDateTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

fn at(step: Step) -> BootstrapState {
    let mut s = BootstrapState::new("genmachine", t0());
    s.step = step;
    if step != Step::WaitNodes {
        s.installed = plan().control_plane;
        s.bootstrap_node = Some(ip("10.0.0.11"));
    }
    s
}

fn versions(ok: &[&str]) -> Observation {
    Observation::Versions {
        ok: ok.iter().map(|s| ip(s)).collect(),
        failed: BTreeMap::from([(ip("10.0.0.13"), "connection refused".to_string())]),
    }
}

fn etcd(states: &[(&str, &str, bool)], members: &[(&str, bool)]) -> Observation {
    Observation::Etcd {
        services: states
            .iter()
            .map(|(i, st, h)| {
                (
                    ip(i),
                    Some(EtcdService {
                        state: st.to_string(),
                        healthy: *h,
                    }),
                )
            })
            .collect(),
        members: members
            .iter()
            .map(|(h, l)| EtcdMember {
                hostname: h.to_string(),
                is_learner: *l,
            })
            .collect(),
    }
}

const ALL_RUNNING: [(&str, &str, bool); 3] = [
    ("10.0.0.11", "Running", true),
    ("10.0.0.12", "Running", true),
    ("10.0.0.13", "Running", true),
];

#[test]
fn transition_table() {
    use BootstrapOutcome::*;
    let p = plan();
    let now = t0() + Duration::from_secs(5);
    // (from, observation, expected step, expected work)
    let table: Vec<(BootstrapState, Observation, Step, Option<Work>)> = vec![
        (
            at(Step::WaitNodes),
            versions(&["10.0.0.11", "10.0.0.12"]),
            Step::WaitNodes,
            Some(Work::ProbeVersions(BTreeSet::from([ip("10.0.0.13")]))),
        ),
        (
            at(Step::WaitNodes),
            versions(&["10.0.0.11", "10.0.0.12", "10.0.0.13"]),
            Step::Bootstrap,
            Some(Work::Bootstrap(ip("10.0.0.11"))),
        ),
        (
            at(Step::Bootstrap),
            Observation::Bootstrap(Retry("FailedPrecondition".into())),
            Step::Bootstrap,
            Some(Work::Bootstrap(ip("10.0.0.11"))),
        ),
        (
            at(Step::Bootstrap),
            Observation::Bootstrap(Accepted),
            Step::WaitEtcd,
            Some(Work::CheckEtcd),
        ),
        (
            at(Step::Bootstrap),
            Observation::Bootstrap(AlreadyDone),
            Step::WaitEtcd,
            Some(Work::CheckEtcd),
        ),
        (
            at(Step::Bootstrap),
            Observation::Bootstrap(Fatal("worker".into())),
            Step::Failed,
            None,
        ),
        // Resuming inside Bootstrap calls the same recorded node again (AlreadyExists
        // then ends the step), never another one.
        (
            at(Step::Bootstrap),
            Observation::Resumed {
                kubeconfig_available: false,
            },
            Step::Bootstrap,
            Some(Work::Bootstrap(ip("10.0.0.11"))),
        ),
        (
            at(Step::WaitEtcd),
            etcd(&ALL_RUNNING[..2], &[("a", false), ("b", false)]),
            Step::WaitEtcd,
            Some(Work::CheckEtcd),
        ),
        (
            at(Step::WaitEtcd),
            etcd(
                &[
                    ("10.0.0.11", "Running", true),
                    ("10.0.0.12", "Preparing", false),
                    ("10.0.0.13", "Running", true),
                ],
                &[("a", false), ("b", false), ("c", false)],
            ),
            Step::WaitEtcd,
            Some(Work::CheckEtcd),
        ),
        (
            at(Step::WaitEtcd),
            etcd(&ALL_RUNNING, &[("a", false), ("b", false), ("c", true)]),
            Step::WaitEtcd,
            Some(Work::CheckEtcd),
        ),
        (
            at(Step::WaitEtcd),
            etcd(&ALL_RUNNING, &[("a", false), ("b", false)]),
            Step::WaitEtcd,
            Some(Work::CheckEtcd),
        ),
        (
            at(Step::WaitEtcd),
            etcd(&ALL_RUNNING, &[("a", false), ("b", false), ("c", false)]),
            Step::FetchKubeconfig,
            Some(Work::FetchKubeconfig(ip("10.0.0.11"))),
        ),
        (
            at(Step::FetchKubeconfig),
            Observation::Kubeconfig(Err("unavailable".into())),
            Step::FetchKubeconfig,
            Some(Work::FetchKubeconfig(ip("10.0.0.11"))),
        ),
        (
            at(Step::FetchKubeconfig),
            Observation::Kubeconfig(Ok(())),
            Step::WaitApi,
            Some(Work::CheckReadyz),
        ),
        (
            at(Step::WaitApi),
            Observation::Readyz(Err("503".into())),
            Step::WaitApi,
            Some(Work::CheckReadyz),
        ),
        (
            at(Step::WaitApi),
            Observation::Readyz(Ok(())),
            Step::HandOff,
            Some(Work::HandOff),
        ),
        // The kubeconfig is kept outside this state: if it is gone, fetch it again.
        (
            at(Step::WaitApi),
            Observation::Resumed {
                kubeconfig_available: false,
            },
            Step::FetchKubeconfig,
            Some(Work::FetchKubeconfig(ip("10.0.0.11"))),
        ),
        (
            at(Step::HandOff),
            Observation::Resumed {
                kubeconfig_available: true,
            },
            Step::HandOff,
            Some(Work::HandOff),
        ),
        (
            at(Step::HandOff),
            Observation::HandOff(Err("deployment not ready".into())),
            Step::HandOff,
            Some(Work::HandOff),
        ),
        // Applied is not done: the step goes on, watching Argo CD (argo_wait).
        (
            at(Step::HandOff),
            Observation::HandOff(Ok(())),
            Step::HandOff,
            Some(Work::CheckArgo),
        ),
        // Terminal: nothing ever happens again, in particular no re-apply.
        (
            at(Step::HandedOff),
            Observation::Resumed {
                kubeconfig_available: false,
            },
            Step::HandedOff,
            None,
        ),
        (
            at(Step::HandedOff),
            Observation::HandOff(Ok(())),
            Step::HandedOff,
            None,
        ),
        // A late answer for another step is ignored.
        (
            at(Step::WaitEtcd),
            Observation::Bootstrap(Accepted),
            Step::WaitEtcd,
            Some(Work::CheckEtcd),
        ),
    ];
    for (i, (from, obs, want_step, want_work)) in table.into_iter().enumerate() {
        let desc = format!("row {i}: {} + {obs:?}", from.step);
        let t = step(&p, &from, obs, now);
        assert_eq!(t.next.step, want_step, "{desc}");
        assert_eq!(t.work, want_work, "{desc}");
        assert!(
            !t.events.is_empty() || from.step.is_terminal() || want_step == from.step,
            "{desc}: no event"
        );
    }
}

#[test]
fn waiting_polls_and_moving_on_does_not() {
    let p = plan();
    let t = step(
        &p,
        &at(Step::WaitApi),
        Observation::Readyz(Err("503".into())),
        t0(),
    );
    assert_eq!(t.delay, p.poll);
    assert_eq!(t.events[0].kind, ClusterEventKind::Waiting);
    let t = step(&p, &at(Step::WaitApi), Observation::Readyz(Ok(())), t0());
    assert_eq!(t.delay, Duration::ZERO);
    assert_eq!(t.events[0].kind, ClusterEventKind::StepChanged);
}

#[test]
fn installed_nodes_are_marked_once() {
    let p = plan();
    let t = step(&p, &at(Step::WaitNodes), versions(&["10.0.0.12"]), t0());
    assert_eq!(t.mark_installed, vec![ip("10.0.0.12")]);
    let again = step(&p, &t.next, versions(&["10.0.0.12", "10.0.0.11"]), t0());
    assert_eq!(again.mark_installed, vec![ip("10.0.0.11")]);
    // The waiting message names the node that is missing and why.
    let waiting = again
        .events
        .iter()
        .find(|e| e.kind == ClusterEventKind::Waiting)
        .unwrap();
    assert!(
        waiting.detail.contains("10.0.0.13 (connection refused)"),
        "{}",
        waiting.detail
    );
}

#[test]
fn every_step_has_its_own_timeout() {
    let p = plan();
    let cases = [
        (Step::WaitNodes, versions(&[]), p.timeouts.wait_nodes),
        (
            Step::Bootstrap,
            Observation::Bootstrap(BootstrapOutcome::Retry("x".into())),
            p.timeouts.bootstrap,
        ),
        (Step::WaitEtcd, etcd(&[], &[]), p.timeouts.wait_etcd),
        (
            Step::FetchKubeconfig,
            Observation::Kubeconfig(Err("x".into())),
            p.timeouts.fetch_kubeconfig,
        ),
        (
            Step::WaitApi,
            Observation::Readyz(Err("x".into())),
            p.timeouts.wait_api,
        ),
        (
            Step::HandOff,
            Observation::HandOff(Err("x".into())),
            p.timeouts.hand_off,
        ),
    ];
    for (s, obs, limit) in cases {
        let just_before = step(&p, &at(s), obs.clone(), t0() + limit - Duration::from_secs(1));
        assert_eq!(just_before.next.step, s, "{s} before its timeout");
        let after = step(&p, &at(s), obs, t0() + limit);
        assert_eq!(after.next.step, Step::Failed, "{s} at its timeout");
        let why = after.next.failure.unwrap();
        assert!(why.contains(&format!("step {s} timed out")), "{why}");
        assert!(after.events.iter().any(|e| e.kind == ClusterEventKind::Failed));
    }
}

#[test]
fn no_hand_off_ends_after_readyz() {
    let mut p = plan();
    p.hand_off = false;
    let t = step(&p, &at(Step::WaitApi), Observation::Readyz(Ok(())), t0());
    assert_eq!(t.next.step, Step::HandedOff);
    assert_eq!(t.work, None);
}

#[test]
fn state_round_trips_through_json() {
    let mut s = at(Step::WaitEtcd);
    s.bootstrap_attempts = 4;
    let json = serde_json::to_string(&s).unwrap();
    assert_eq!(serde_json::from_str::<BootstrapState>(&json).unwrap(), s);
}

#[test]
fn mem_store_keeps_state_and_events() {
    let store = MemClusterStore::default();
    let p = plan();
    let t = step(
        &p,
        &at(Step::Bootstrap),
        Observation::Bootstrap(BootstrapOutcome::Accepted),
        t0(),
    );
    store.save(&t.next, &t.events).unwrap();
    assert_eq!(store.load("genmachine").unwrap().unwrap().step, Step::WaitEtcd);
    assert_eq!(store.events("genmachine").unwrap(), t.events);
    assert_eq!(store.clusters().unwrap().len(), 1);
    assert!(store.load("other").unwrap().is_none());
}
