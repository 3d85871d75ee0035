//! `provisioner bootstrap status` shows where each cluster's bootstrap is.

use crate::common;

use provisioner::store::RedbInventory;
use provisioner_core::cluster::{BootstrapState, ClusterEvent, ClusterEventKind, ClusterStore, Step};

#[test]
fn clusters_status_shows_step_failure_and_last_event() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = common::daemon::write_config(dir.path(), dir.path());
    let cfg = cfg.display().to_string();
    std::fs::create_dir_all(dir.path().join("state")).unwrap();
    let (ok, out, err) = common::daemon::run(&["bootstrap", "status", "--config", &cfg]);
    assert!(ok, "{err}");
    assert!(out.contains("no cluster bootstrap recorded"), "{out}");
    {
        let store = RedbInventory::open(&dir.path().join("state/inventory.redb")).unwrap();
        let mut s = BootstrapState::new("genmachine", time::OffsetDateTime::UNIX_EPOCH);
        s.step = Step::Failed;
        s.bootstrap_node = Some("10.0.0.11".parse().unwrap());
        s.bootstrap_attempts = 3;
        s.failure = Some("step WaitEtcd timed out after 600s: etcd on 10.0.0.12: no answer".into());
        let ev = ClusterEvent {
            at: time::OffsetDateTime::UNIX_EPOCH,
            kind: ClusterEventKind::Failed,
            detail: "step WaitEtcd timed out".into(),
        };
        store.save(&s, &[ev]).unwrap();
    }
    let (ok, out, err) = common::daemon::run(&["bootstrap", "status", "--config", &cfg]);
    assert!(ok, "{err}");
    assert!(
        out.contains("genmachine\tFailed\tsince 1970-01-01T00:00:00Z"),
        "{out}"
    );
    assert!(out.contains("bootstrap node 10.0.0.11 (3 call(s))"), "{out}");
    assert!(
        out.contains("failed: step WaitEtcd timed out after 600s"),
        "{out}"
    );
    assert!(
        out.contains("last event: Failed: step WaitEtcd timed out"),
        "{out}"
    );
}
