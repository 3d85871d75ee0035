//! The k0s workflow driven the daemon's way (persist, then act) with a restart
//! injected after every step: it resumes there and repeats nothing recorded as done.

use std::time::Duration;

use time::OffsetDateTime;

use super::tests::{all_ready, node, plan, t0};
use super::*;
use crate::cluster::{ClusterStore, MemClusterStore};

/// The world the daemon would see: the controller installs, the API comes up on the
/// second probe, the nodes become Ready on the third listing, the hand-off fails once.
#[derive(Default)]
struct World {
    controller_polls: u32,
    readyz: u32,
    lists: u32,
    hand_offs: u32,
    argo_polls: u32,
}

impl World {
    fn perform(&mut self, w: K0sWork) -> K0sObservation {
        match w {
            K0sWork::CheckController => {
                self.controller_polls += 1;
                K0sObservation::Controller(match self.controller_polls {
                    1 => Err("inventory busy".into()),
                    2 => Ok(Phase::DiskInstalled),
                    _ => Ok(Phase::K0sInstalled),
                })
            }
            K0sWork::CheckReadyz => {
                self.readyz += 1;
                K0sObservation::Readyz(if self.readyz < 2 {
                    Err("503".into())
                } else {
                    Ok(())
                })
            }
            K0sWork::CheckNodes => {
                self.lists += 1;
                K0sObservation::Nodes(Ok(if self.lists < 3 {
                    vec![node("beelink-1", None, Some("True"))]
                } else {
                    all_ready()
                }))
            }
            K0sWork::HandOff => {
                self.hand_offs += 1;
                K0sObservation::HandOff(if self.hand_offs < 2 {
                    Err("CRDs not established".into())
                } else {
                    Ok(())
                })
            }
            K0sWork::CheckArgo => {
                // Argo CD reports nothing yet, then Synced and Healthy.
                self.argo_polls += 1;
                let status = if self.argo_polls < 2 {
                    serde_json::json!({})
                } else {
                    serde_json::json!({"sync": {"status": "Synced"}, "health": {"status": "Healthy"}})
                };
                K0sObservation::Argo(Ok(crate::gitops::health::Report {
                    apps: vec![crate::gitops::health::AppStatus::from_application(
                        &serde_json::json!({"metadata": {"name": "cilium-beelink"}, "status": status}),
                    )],
                    missing: vec![],
                }))
            }
        }
    }
}

/// Runs the daemon's loop (persist, then act) until it ends or `crash_at` is
/// persisted (a crash right after the commit, before the work).
fn run(store: &MemClusterStore, world: &mut World, crash_at: Option<Step>, now: &mut OffsetDateTime) -> Step {
    let p = plan();
    let mut t = match store.load("beelink").unwrap() {
        Some(s) => step(&p, &s, K0sObservation::Resumed, *now),
        None => start(&p, Phase::Stage1Served { attempt: 1 }, *now).unwrap(),
    };
    loop {
        store.save(&t.next, &t.events).unwrap();
        let Some(work) = t.work else {
            return t.next.step;
        };
        let entered = t.events.iter().any(|e| e.kind == ClusterEventKind::StepChanged);
        if entered && Some(t.next.step) == crash_at {
            return t.next.step;
        }
        let obs = world.perform(work);
        *now += Duration::from_secs(1);
        t = step(&p, &t.next, obs, *now);
    }
}

#[test]
fn a_restart_after_any_step_resumes_there_and_repeats_nothing_done() {
    for crash_at in [Step::WaitK0s, Step::WaitApi, Step::WaitWorkers, Step::HandOff] {
        let store = MemClusterStore::default();
        let mut world = World::default();
        let mut now = t0();
        let stopped = run(&store, &mut world, Some(crash_at), &mut now);
        assert_eq!(stopped, crash_at);
        assert_eq!(store.load("beelink").unwrap().unwrap().step, crash_at);
        let end = run(&store, &mut world, None, &mut now);
        assert_eq!(end, Step::HandedOff, "crash at {crash_at}");
        // Steps recorded as done were not performed again after the restart.
        assert_eq!(world.controller_polls, 3, "crash at {crash_at}");
        assert_eq!(world.readyz, 2, "crash at {crash_at}");
        assert_eq!(world.lists, 3, "crash at {crash_at}");
        assert_eq!(world.hand_offs, 2, "crash at {crash_at}");
        let events = store.events("beelink").unwrap();
        let changes: Vec<&str> = events
            .iter()
            .filter(|e| e.kind == ClusterEventKind::StepChanged)
            .map(|e| e.detail.split(':').next().unwrap())
            .collect();
        assert_eq!(
            changes,
            [
                "Pending -> WaitK0s",
                "WaitK0s -> WaitApi",
                "WaitApi -> WaitWorkers",
                "WaitWorkers -> HandOff",
                "HandOff -> HandedOff"
            ]
        );
        assert_eq!(
            events
                .iter()
                .filter(|e| e.kind == ClusterEventKind::Resumed)
                .count(),
            1,
            "the restarted run says so"
        );
        // A handed-off cluster is never touched again.
        let before = (world.hand_offs, world.lists);
        assert_eq!(run(&store, &mut world, None, &mut now), Step::HandedOff);
        assert_eq!((world.hand_offs, world.lists), before);
    }
}
