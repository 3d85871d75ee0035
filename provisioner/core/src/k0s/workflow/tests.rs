//! Table tests of the k0s workflow: every transition, every timeout, retries, late
//! answers, terminal states (restarts: [`super::restart_tests`]).

use std::collections::BTreeMap;
use std::time::Duration;

use time::OffsetDateTime;

use super::*;

pub(super) fn plan() -> K0sPlan {
    K0sPlan {
        cluster: "beelink".into(),
        nodes: BTreeMap::from([
            ("beelink-1".to_string(), Some("10.0.40.11".parse().unwrap())),
            ("beelink-2".to_string(), Some("10.0.40.12".parse().unwrap())),
            ("beelink-3".to_string(), None),
        ]),
        hand_off: true,
        timeouts: Timeouts::default(),
        poll: Duration::from_secs(5),
    }
}

pub(super) fn t0() -> OffsetDateTime {
    OffsetDateTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

fn at(step: Step) -> BootstrapState {
    let mut s = start(&plan(), Phase::Stage1Served { attempt: 1 }, t0())
        .unwrap()
        .next;
    s.step = step;
    s
}

pub(super) fn node(name: &str, ip: Option<&str>, ready: Option<&str>) -> NodeStatus {
    NodeStatus {
        name: name.into(),
        addresses: ip.map(|i| vec![i.parse().unwrap()]).unwrap_or_default(),
        ready: ready.map(str::to_string),
    }
}

pub(super) fn all_ready() -> Vec<NodeStatus> {
    vec![
        node("beelink-1", Some("10.0.40.11"), Some("True")),
        node("beelink-2", Some("10.0.40.12"), Some("True")),
        node("beelink-3", None, Some("True")),
    ]
}

fn kinds(t: &K0sTransition) -> Vec<ClusterEventKind> {
    t.events.iter().map(|e| e.kind).collect()
}

#[test]
fn starts_only_once_the_controller_is_installing() {
    assert_eq!(start(&plan(), Phase::Pending, t0()), None);
    for phase in [
        Phase::Stage1Served { attempt: 1 },
        Phase::DiskInstalled,
        Phase::K0sInstalled,
    ] {
        let t = start(&plan(), phase, t0()).unwrap();
        assert_eq!(
            (t.next.step, t.next.flow, t.next.step_started),
            (Step::WaitK0s, Flow::K0s, t0())
        );
        assert_eq!(t.work, Some(K0sWork::CheckController));
        assert_eq!(kinds(&t), [ClusterEventKind::StepChanged]);
        assert!(
            t.events[0].detail.starts_with("Pending -> WaitK0s"),
            "{:?}",
            t.events
        );
    }
}

/// (step, observation, next step, work, waiting?) for every transition that does
/// not time out.
#[test]
fn transition_table() {
    use K0sObservation as O;
    use Step as S;
    let not_ready = vec![
        node("beelink-1", None, Some("True")),
        node("beelink-2", None, Some("False")),
    ];
    let no_hand_off_steps = [(S::WaitWorkers, O::Nodes(Ok(all_ready())), S::HandedOff)];
    let table: Vec<(S, O, S, Option<K0sWork>, bool)> = vec![
        (
            S::WaitK0s,
            O::Controller(Ok(Phase::Stage1Served { attempt: 2 })),
            S::WaitK0s,
            Some(K0sWork::CheckController),
            true,
        ),
        (
            S::WaitK0s,
            O::Controller(Ok(Phase::DiskInstalled)),
            S::WaitK0s,
            Some(K0sWork::CheckController),
            true,
        ),
        // Reimaged after the workflow started: keep waiting (the step clock runs on).
        (
            S::WaitK0s,
            O::Controller(Ok(Phase::Pending)),
            S::WaitK0s,
            Some(K0sWork::CheckController),
            true,
        ),
        (
            S::WaitK0s,
            O::Controller(Err("inventory: backend busy".into())),
            S::WaitK0s,
            Some(K0sWork::CheckController),
            true,
        ),
        (
            S::WaitK0s,
            O::Controller(Ok(Phase::K0sInstalled)),
            S::WaitApi,
            Some(K0sWork::CheckReadyz),
            false,
        ),
        (
            S::WaitApi,
            O::Readyz(Err("connection refused".into())),
            S::WaitApi,
            Some(K0sWork::CheckReadyz),
            true,
        ),
        (
            S::WaitApi,
            O::Readyz(Ok(())),
            S::WaitWorkers,
            Some(K0sWork::CheckNodes),
            false,
        ),
        (
            S::WaitWorkers,
            O::Nodes(Err("403".into())),
            S::WaitWorkers,
            Some(K0sWork::CheckNodes),
            true,
        ),
        (
            S::WaitWorkers,
            O::Nodes(Ok(not_ready)),
            S::WaitWorkers,
            Some(K0sWork::CheckNodes),
            true,
        ),
        (
            S::WaitWorkers,
            O::Nodes(Ok(all_ready())),
            S::HandOff,
            Some(K0sWork::HandOff),
            false,
        ),
        (
            S::HandOff,
            O::HandOff(Err("argocd-server not ready".into())),
            S::HandOff,
            Some(K0sWork::HandOff),
            true,
        ),
    ];
    let now = t0() + Duration::from_secs(60);
    for (from, obs, to, work, waiting) in table {
        let t = step(&plan(), &at(from), obs.clone(), now);
        let case = format!("{from} + {obs:?}");
        assert_eq!(t.next.step, to, "{case}");
        assert_eq!(t.work, work, "{case}");
        assert_eq!(t.next.flow, Flow::K0s, "{case}");
        if waiting {
            // A retry: same step, its clock untouched, one Waiting event, poll delay.
            assert_eq!(t.next.step_started, t0(), "{case}");
            assert_eq!(kinds(&t), [ClusterEventKind::Waiting], "{case}");
            assert_eq!(t.delay, plan().poll, "{case}");
        } else {
            assert_eq!(t.next.step_started, now, "{case}: a new step starts its clock");
            assert_eq!(kinds(&t), [ClusterEventKind::StepChanged], "{case}");
            assert!(
                t.events[0].detail.starts_with(&format!("{from} -> {to}: ")),
                "{case}"
            );
            assert_eq!(t.delay, Duration::ZERO, "{case}: the next step starts at once");
        }
    }
    let mut p = plan();
    p.hand_off = false;
    for (from, obs, to) in no_hand_off_steps {
        let t = step(&p, &at(from), obs, now);
        assert_eq!((t.next.step, t.work), (to, None));
        assert!(t.events[0].detail.contains("no ArgoCD"), "{:?}", t.events);
    }
}

#[test]
fn every_step_times_out_on_its_own_clock() {
    use K0sObservation as O;
    let p = plan();
    let cases = [
        (
            Step::WaitK0s,
            O::Controller(Ok(Phase::DiskInstalled)),
            p.timeouts.wait_k0s,
        ),
        (Step::WaitApi, O::Readyz(Err("503".into())), p.timeouts.wait_api),
        (
            Step::WaitWorkers,
            O::Nodes(Ok(vec![node("beelink-1", None, Some("True"))])),
            p.timeouts.wait_workers,
        ),
        (Step::HandOff, O::HandOff(Err("boom".into())), p.timeouts.hand_off),
    ];
    for (from, obs, limit) in cases {
        let just_before = step(&p, &at(from), obs.clone(), t0() + limit - Duration::from_secs(1));
        assert_eq!(just_before.next.step, from, "{from}: still within its time");
        let t = step(&p, &at(from), obs, t0() + limit);
        assert_eq!(t.next.step, Step::Failed, "{from}");
        assert_eq!(t.work, None);
        let why = t.next.failure.clone().unwrap();
        assert!(
            why.starts_with(&format!("step {from} timed out after {}s", limit.as_secs())),
            "{why}"
        );
        assert_eq!(
            kinds(&t),
            [ClusterEventKind::StepChanged, ClusterEventKind::Failed]
        );
        assert!(t.events[0].detail.starts_with(&format!("{from} -> Failed")));
    }
    // A success at the deadline is still a success: timeouts only cut waiting.
    let t = step(
        &p,
        &at(Step::WaitApi),
        O::Readyz(Ok(())),
        t0() + Duration::from_secs(86_400),
    );
    assert_eq!(t.next.step, Step::WaitWorkers);
}

#[test]
fn late_answers_and_terminal_states_change_nothing() {
    use K0sObservation as O;
    // A /readyz answer arriving while the nodes are awaited (e.g. after a resume).
    let s = at(Step::WaitWorkers);
    let t = step(&plan(), &s, O::Readyz(Ok(())), t0());
    assert_eq!((t.next.clone(), t.events.len()), (s, 0));
    assert_eq!(t.work, Some(K0sWork::CheckNodes));
    let s = at(Step::WaitApi);
    let t = step(&plan(), &s, O::Controller(Ok(Phase::K0sInstalled)), t0());
    assert_eq!((t.next.step, t.work), (Step::WaitApi, Some(K0sWork::CheckReadyz)));
    for terminal in [Step::HandedOff, Step::Failed] {
        for obs in [
            O::Resumed,
            O::HandOff(Ok(())),
            O::Nodes(Ok(all_ready())),
            O::Controller(Ok(Phase::K0sInstalled)),
        ] {
            let s = at(terminal);
            let t = step(&plan(), &s, obs, t0() + Duration::from_secs(999_999));
            assert_eq!((t.next, t.events.len(), t.work), (s, 0, None), "{terminal}");
        }
    }
}

#[test]
fn a_blocked_hand_off_waits_with_its_clock_stopped() {
    let p = plan();
    let late = t0() + p.timeouts.hand_off + Duration::from_secs(3600);
    let why = "waiting for the ArgoCD host genmachine (at step WaitEtcd)";
    let t = step(
        &p,
        &at(Step::HandOff),
        K0sObservation::HandOffBlocked(why.into()),
        late,
    );
    assert_eq!(
        (t.next.step, t.next.step_started),
        (Step::HandOff, late),
        "no timeout; clock restarted"
    );
    assert_eq!(kinds(&t), [ClusterEventKind::Waiting]);
    assert_eq!(t.events[0].detail, why);
    assert_eq!((t.work, t.delay), (Some(K0sWork::HandOff), p.poll));
    // Once unblocked, the hand-off gets its full time from then.
    let err = K0sObservation::HandOff(Err("apply refused".into()));
    let within = step(
        &p,
        &t.next,
        err.clone(),
        late + p.timeouts.hand_off - Duration::from_secs(1),
    );
    assert_eq!(within.next.step, Step::HandOff);
    let after = step(&p, &t.next, err, late + p.timeouts.hand_off);
    assert_eq!(after.next.step, Step::Failed);
    // Outside HandOff it is a late answer: ignored.
    let s = at(Step::WaitWorkers);
    let t = step(&p, &s, K0sObservation::HandOffBlocked(why.into()), late);
    assert_eq!((t.next, t.events.len()), (s, 0));
}

#[test]
fn the_talos_workflow_leaves_k0s_records_alone() {
    use crate::talos::bootstrap::{self, Observation, Plan};
    let talos = Plan {
        cluster: "beelink".into(),
        control_plane: ["10.0.40.11".parse().unwrap()].into(),
        hand_off: true,
        timeouts: Timeouts::default(),
        poll: Duration::from_secs(1),
    };
    for s in [Step::WaitK0s, Step::WaitApi, Step::HandOff] {
        let state = at(s);
        let t = bootstrap::step(
            &talos,
            &state,
            Observation::Resumed {
                kubeconfig_available: false,
            },
            t0(),
        );
        assert_eq!((t.next, t.events.len(), t.work), (state, 0, None), "{s}");
    }
}

#[test]
fn resume_keeps_the_step_and_its_clock() {
    for s in [Step::WaitK0s, Step::WaitApi, Step::WaitWorkers, Step::HandOff] {
        let t = step(
            &plan(),
            &at(s),
            K0sObservation::Resumed,
            t0() + Duration::from_secs(30),
        );
        assert_eq!((t.next.step, t.next.step_started), (s, t0()));
        assert_eq!(kinds(&t), [ClusterEventKind::Resumed]);
        assert_eq!(t.work, work_for(&at(s)));
        assert!(t.work.is_some());
    }
}

#[test]
fn nodes_match_by_name_or_address_and_need_ready_true() {
    let p = plan();
    assert_eq!(nodes_problem(&p, &all_ready()), None);
    // Kubelet lower-cases names; an unknown name with the planned address matches.
    let by_ip = vec![
        node("BEELINK-1", None, Some("True")),
        node("localhost", Some("10.0.40.12"), Some("True")),
        node("beelink-3", None, Some("True")),
        node("stranger", None, Some("False")),
    ];
    assert_eq!(nodes_problem(&p, &by_ip), None);
    let bad = vec![
        node("beelink-1", None, Some("Unknown")),
        node("beelink-2", None, None),
    ];
    assert_eq!(
        nodes_problem(&p, &bad).unwrap(),
        "not Ready: beelink-1 (Ready=Unknown), beelink-2 (Ready=not reported); no Node yet: beelink-3"
    );
}

#[test]
fn records_survive_serialization_and_old_records_read_as_talos() {
    let s = at(Step::WaitWorkers);
    let json = serde_json::to_string(&s).unwrap();
    assert!(json.contains(r#""flow":"k0s""#), "{json}");
    assert!(json.contains(r#""step":"wait-workers""#), "{json}");
    assert_eq!(serde_json::from_str::<BootstrapState>(&json).unwrap(), s);
    let talos = BootstrapState::new("genmachine", t0());
    let json = serde_json::to_string(&talos).unwrap();
    assert!(
        !json.contains("flow"),
        "Talos records keep their old shape: {json}"
    );
    assert_eq!(
        serde_json::from_str::<BootstrapState>(&json).unwrap().flow,
        Flow::Talos
    );
}
