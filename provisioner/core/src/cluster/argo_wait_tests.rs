//! `HandOff` ends only when Argo CD reports the cluster's Applications Synced and
//! Healthy; each change is an event; a Degraded one keeps the step waiting, with the
//! reason, until the step's own timeout; a retry watches again and completes.

use std::time::Duration;

use serde_json::json;
use time::OffsetDateTime;

use crate::cluster::bootstrap::{BootstrapState, Step, Timeouts};
use crate::cluster::retry::retry;
use crate::cluster::{ClusterEventKind, Flow};
use crate::gitops::health::{AppStatus, Report};
use crate::k0s::workflow::{self as k0s, K0sObservation, K0sPlan, K0sWork};
use crate::talos::bootstrap::{Observation, Plan, Work, step};

fn t0() -> OffsetDateTime {
    OffsetDateTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

fn timeouts() -> Timeouts {
    Timeouts {
        hand_off: Duration::from_secs(60),
        argo_synced: Duration::from_secs(600),
        ..Timeouts::default()
    }
}

fn plan() -> Plan {
    Plan {
        cluster: "genmachine".into(),
        control_plane: ["10.0.0.11".parse().unwrap()].into_iter().collect(),
        hand_off: true,
        timeouts: timeouts(),
        poll: Duration::from_secs(5),
    }
}

fn report(apps: &[(&str, serde_json::Value)]) -> Observation {
    Observation::Argo(Ok(Report {
        apps: apps
            .iter()
            .map(|(n, status)| {
                AppStatus::from_application(&json!({"metadata": {"name": n}, "status": status}))
            })
            .collect(),
        missing: vec![],
    }))
}

fn synced(health: &str) -> serde_json::Value {
    json!({"sync": {"status": "Synced"}, "health": {"status": health}})
}

#[test]
fn handed_off_only_once_argo_cd_reports_synced_and_healthy() {
    let p = plan();
    let mut s = BootstrapState::new("genmachine", t0());
    s.step = Step::HandOff;
    // The apply: not done, the clock restarts for the wait on Argo CD.
    let at = t0() + Duration::from_secs(50);
    let t = step(&p, &s, Observation::HandOff(Ok(())), at);
    assert_eq!(
        (t.next.step, t.work.clone()),
        (Step::HandOff, Some(Work::CheckArgo))
    );
    assert_eq!((t.next.applied_at, t.next.step_started), (Some(at), at));
    assert_eq!(t.events[0].kind, ClusterEventKind::ArgoStatus);
    s = t.next;
    // Progressing, then Degraded: the step waits, and says why; each change once.
    let degraded = json!({"sync": {"status": "Synced"}, "health": {"status": "Degraded"},
        "resources": [{"kind": "Deployment", "namespace": "traefik", "name": "traefik", "status": "Synced",
                       "health": {"status": "Degraded", "message": "exceeded its progress deadline"}}]});
    let polls = [
        (report(&[("root", synced("Progressing"))]), 1),
        (report(&[("root", synced("Progressing"))]), 0),
        (
            report(&[
                ("root", synced("Healthy")),
                ("traefik-genmachine", degraded.clone()),
            ]),
            2,
        ),
        (
            report(&[
                ("root", synced("Healthy")),
                ("traefik-genmachine", degraded.clone()),
            ]),
            0,
        ),
    ];
    let mut now = at;
    for (i, (obs, changes)) in polls.into_iter().enumerate() {
        now += Duration::from_secs(5);
        let t = step(&p, &s, obs, now);
        assert_eq!(
            (t.next.step, t.work.clone()),
            (Step::HandOff, Some(Work::CheckArgo)),
            "poll {i}"
        );
        let argo: Vec<_> = t
            .events
            .iter()
            .filter(|e| e.kind == ClusterEventKind::ArgoStatus)
            .collect();
        assert_eq!(argo.len(), changes, "poll {i}: {:?}", t.events);
        assert_eq!(t.events.last().unwrap().kind, ClusterEventKind::Waiting);
        s = t.next;
    }
    assert_eq!(s.argo_apps["traefik-genmachine"], "Synced/Degraded");
    let why = &step(&p, &s, report(&[("traefik-genmachine", degraded.clone())]), now)
        .events
        .last()
        .unwrap()
        .detail
        .clone();
    assert!(
        why.contains("traefik-genmachine Synced/Degraded (Deployment traefik/traefik Degraded: exceeded its progress deadline)"),
        "{why}"
    );
    // Past argo_synced (counted from the apply, not from entering HandOff): Failed,
    // with Argo CD's reason.
    let late = at + Duration::from_secs(600);
    let t = step(&p, &s, report(&[("traefik-genmachine", degraded)]), late);
    assert_eq!(t.next.step, Step::Failed);
    let failure = t.next.failure.clone().unwrap();
    assert!(
        failure.starts_with(
            "step HandOff timed out after 600s: Argo CD reports traefik-genmachine Synced/Degraded"
        ),
        "{failure}"
    );
    // The operator retries once the cause is fixed: watching again, nothing re-applied.
    let (back, _) = retry(&t.next, None, late).unwrap();
    assert_eq!((back.step, back.applied_at), (Step::HandOff, Some(at)));
    assert_eq!(
        crate::talos::bootstrap::work_for(&p, &back),
        Some(Work::CheckArgo)
    );
    let t = step(
        &p,
        &back,
        report(&[
            ("root", synced("Healthy")),
            ("traefik-genmachine", synced("Healthy")),
        ]),
        late + Duration::from_secs(5),
    );
    assert_eq!((t.next.step, t.work), (Step::HandedOff, None));
    assert!(
        t.events
            .iter()
            .any(|e| e.detail == "traefik-genmachine: Synced/Degraded -> Synced/Healthy")
    );
    // Stuck Unknown (a destination Argo CD refuses) is a reason too, never done.
    let unknown = json!({"sync": {"status": "Unknown"}, "health": {"status": "Unknown"},
        "conditions": [{"type": "InvalidSpecError", "message": "there are no clusters with this name: beelinc"}]});
    let t = step(
        &p,
        &back,
        report(&[("root", synced("Healthy")), ("x", unknown)]),
        late,
    );
    assert_eq!(t.next.step, Step::HandOff);
    assert!(
        t.events
            .last()
            .unwrap()
            .detail
            .contains("InvalidSpecError: there are no clusters with this name: beelinc")
    );
    // An unreadable report waits too.
    let t = step(
        &p,
        &back,
        Observation::Argo(Err("connection refused".into())),
        late,
    );
    assert!(
        t.events
            .last()
            .unwrap()
            .detail
            .contains("reading Argo CD's Applications: connection refused")
    );
}

#[test]
fn the_k0s_workflow_waits_for_argo_cd_too() {
    let p = K0sPlan {
        cluster: "beelink".into(),
        nodes: Default::default(),
        hand_off: true,
        timeouts: timeouts(),
        poll: Duration::from_secs(5),
    };
    let mut s = BootstrapState::new("beelink", t0());
    s.flow = Flow::K0s;
    s.step = Step::HandOff;
    let t = k0s::step(&p, &s, K0sObservation::HandOff(Ok(())), t0());
    assert_eq!((t.next.step, t.work), (Step::HandOff, Some(K0sWork::CheckArgo)));
    // The host not being ready no longer matters once applied.
    let s = t.next;
    let t = k0s::step(&p, &s, K0sObservation::HandOffBlocked("host".into()), t0());
    assert_eq!(t.next.step_started, s.step_started);
    let ok = K0sObservation::Argo(Ok(Report {
        apps: vec![AppStatus::from_application(
            &json!({"metadata": {"name": "cilium-beelink"}, "status": synced("Healthy")}),
        )],
        missing: vec![],
    }));
    let t = k0s::step(&p, &s, ok, t0() + Duration::from_secs(5));
    assert_eq!((t.next.step, t.work), (Step::HandedOff, None));
}

#[test]
fn records_without_the_new_fields_still_load() {
    let mut s = BootstrapState::new("genmachine", t0());
    s.step = Step::HandOff;
    let json = serde_json::to_string(&s).unwrap();
    assert!(
        !json.contains("applied_at") && !json.contains("argo_apps"),
        "{json}"
    );
    s.applied_at = Some(t0());
    s.argo_apps.insert("root".into(), "Synced/Healthy".into());
    let back: BootstrapState = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
    assert_eq!(back, s);
}
