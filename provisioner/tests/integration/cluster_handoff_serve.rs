//! Power-on-to-GitOps in the real daemon (minus QEMU): `provisioner serve` with an
//! infra/ Talos cluster whose control-plane nodes are fake apids on 127.0.0.11-13
//! (server certificates issued by the OS CA of the cluster's own secrets bundle, on
//! the configured `talos.api_port`), the pinned ArgoCD manifest imported into the
//! cache with `images import argocd`, and a fake Kubernetes API behind the kubeconfig
//! the nodes hand out. The daemon's supervisor takes the cluster to HandedOff; after
//! `kill -9` and a restart it stays HandedOff and touches neither nodes nor cluster.

use crate::common;

use std::time::{Duration, Instant};

use common::daemon::{Daemon, http, run};
use common::serve_rig::{
    CLUSTER, Rig, bootstrap, machine_state, retry_cli, status_cli, until_hand_off, wait_for_log,
};
use tonic::Code;

#[test]
fn serve_bootstraps_and_hands_off_once_across_kill_9() {
    let Some(rig) = Rig::new(120) else {
        return;
    };
    let Rig {
        cfg, kube, lab, tmp, ..
    } = &rig;
    let dir = tmp.path();
    rig.import_manifest();
    // Two nodes are machines the inventory knows (they netbooted); the third is not.
    {
        use provisioner_core::inventory::Inventory;
        let inv = provisioner::store::RedbInventory::open(&dir.join("state/inventory.redb")).unwrap();
        for mac in [common::BIOS_MAC, common::EFI_MAC] {
            let m = provisioner_core::model::Machine::discovered(
                mac.parse().unwrap(),
                time::OffsetDateTime::now_utc(),
            );
            inv.put(&m).unwrap();
        }
    }
    let started = Instant::now();
    let mut d = Daemon::start(cfg);
    let token = d.token("read-only");
    let took = rig.until_done(&d, &token, started);
    println!("serve start → HandedOff in {took:?}");

    // Bootstrap once, on the lowest IP.
    assert_eq!(lab.cluster.count("Bootstrap", Code::Ok), 1);
    assert_eq!(lab.cluster.count("Bootstrap", Code::AlreadyExists), 0);
    assert_eq!(lab.cluster.bootstrapped_on(), Some(lab.ips()[0]));
    // Nodes that answered Version over mTLS are installed: next netboot is local.
    for mac in [common::BIOS_MAC, common::EFI_MAC] {
        assert_eq!(machine_state(&d, &token, mac), "Installed");
        let q = format!("/ipxe?mac={}&arch=x86_64&platform=efi", mac.replace(':', "-"));
        let (st, body) = http(d.http, "GET", &q).unwrap();
        let body = String::from_utf8_lossy(&body);
        assert!(
            st == 200 && body.contains("exit") && !body.contains("kernel"),
            "{body}"
        );
    }
    // The kubeconfig is kept encrypted.
    let age = dir.join(format!("state/secrets/kubeconfigs/{CLUSTER}.age"));
    let sealed = std::fs::read(&age).unwrap();
    assert!(sealed.starts_with(b"age-encryption.org/v1"), "not an age file");
    let plain = kube.kubeconfig();
    for needle in ["fake-token", "apiVersion", &kube.addr.to_string()] {
        assert!(
            !sealed.windows(needle.len()).any(|w| w == needle.as_bytes()),
            "{needle} in plaintext"
        );
    }
    assert!(!std::fs::read_to_string(&d.log).unwrap().contains("fake-token"));
    assert!(plain.windows(10).any(|w| w == b"fake-token"));
    let applies = {
        let j = kube.journal();
        assert_eq!(j.applies.last().map(|a| a.name.as_str()), Some("root"));
        j.applies.len()
    };
    let (ok, out, err) = status_cli(&d, &token);
    assert!(
        ok && out.contains("Bootstrap: done") && out.contains("HandOff"),
        "{out}{err}"
    );

    // kill -9, restart: HandedOff is final; nothing is dialled or applied again.
    let calls = lab.cluster.calls().len();
    d.kill_9();
    let d = Daemon::start(cfg);
    wait_for_log(&d, "bootstrap HandedOff", Duration::from_secs(20));
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(bootstrap(&d, &token)["phase"], "done");
    assert_eq!(
        lab.cluster.calls().len(),
        calls,
        "nodes were called after hand-off"
    );
    assert_eq!(lab.cluster.count("Bootstrap", Code::Ok), 1);
    assert_eq!(kube.journal().applies.len(), applies, "ArgoCD re-applied");
}

/// Until the cluster's HandOff step is running (etcd bootstrapped, kubeconfig stored).
#[test]
fn without_the_argocd_manifest_the_hand_off_parks_across_kill_9_until_it_is_imported() {
    // A HandOff timeout shorter than the park: parking must not let it run out.
    let Some(rig) = Rig::new(3) else {
        return;
    };
    let started = Instant::now();
    let mut d = Daemon::start(&rig.cfg);
    let token = d.token("read-only");
    // Reported at start, not a crash; etcd bootstrap goes ahead without it.
    wait_for_log(&d, "GitOps hand-off not ready", Duration::from_secs(20));
    until_hand_off(&d, &token);
    let to_hand_off = started.elapsed();
    assert_eq!(rig.lab.cluster.count("Bootstrap", Code::Ok), 1);
    assert_eq!(rig.lab.cluster.count("Kubeconfig", Code::Ok), 1);
    assert!(
        rig.kube.journal().applies.is_empty(),
        "nothing applied without the manifest"
    );
    wait_for_log(&d, "HandOff parked", Duration::from_secs(20));
    std::thread::sleep(Duration::from_secs(4));
    until_hand_off(&d, &token);

    // kill -9 while parked: the recorded events explain the wait, durably.
    d.kill_9();
    let store =
        provisioner::store::RedbInventory::open(&rig.tmp.path().join("state/inventory.redb")).unwrap();
    let events = provisioner_core::cluster::ClusterStore::events(&store, CLUSTER).unwrap();
    assert!(
        events
            .iter()
            .any(|e| e.detail.contains("ArgoCD install manifest") && e.detail.contains("images pull argocd")),
        "{events:#?}"
    );
    drop(store);
    let (ok, out, err) = run(&["bootstrap", "status", "--config", rig.cfg.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(
        out.contains(&format!("{CLUSTER}\tHandOff\t"))
            && out.contains("last event: Waiting: HandOff parked")
            && out.contains("images pull argocd"),
        "{out}"
    );

    // Restarted still without it: parked again at HandOff; then imported while running.
    let d = Daemon::start(&rig.cfg);
    wait_for_log(&d, "HandOff parked", Duration::from_secs(20));
    until_hand_off(&d, &token);
    let imported = Instant::now();
    rig.import_manifest();
    let took = rig.until_done(&d, &token, imported);
    println!(
        "serve start → HandOff step (no manifest) in {to_hand_off:?}; manifest imported → HandedOff in {took:?}"
    );
    // Resumed at HandOff: no second Bootstrap, the stored kubeconfig reused.
    assert_eq!(rig.lab.cluster.count("Bootstrap", Code::Ok), 1);
    assert_eq!(rig.lab.cluster.count("Bootstrap", Code::AlreadyExists), 0);
    assert_eq!(rig.lab.cluster.count("Kubeconfig", Code::Ok), 1);
    assert_eq!(
        rig.kube.journal().applies.last().map(|a| a.name.as_str()),
        Some("root")
    );
}

/// `provisioner clusters status genmachine` over the API.
#[test]
fn a_cluster_failed_on_a_step_timeout_is_retried_through_the_api_without_a_restart() {
    // etcd never settles within WaitEtcd's 4 s: the cluster fails after Bootstrap (not
    // less: after the retry the step must pass within it on a loaded CI machine).
    let Some(rig) = Rig::with_timeouts("{ wait_nodes_secs: 120, wait_etcd_secs: 4, hand_off_secs: 120 }")
    else {
        return;
    };
    rig.import_manifest();
    rig.lab.cluster.hold_learner(u32::MAX);
    let d = Daemon::start(&rig.cfg);
    let (admin, reader) = (d.token("admin"), d.token("read-only"));
    let end = Instant::now() + Duration::from_secs(60);
    let failed = loop {
        let b = bootstrap(&d, &reader);
        if b["phase"] == "failed" {
            break b;
        }
        assert!(b["phase"] != "done" && Instant::now() < end, "{b:#}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let failed_step: Vec<&str> = failed["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["status"] == "failed")
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(failed_step, ["WaitEtcd"], "{failed:#}");
    // Why, from the last cluster event.
    assert_eq!(failed["last_event"]["kind"], "failed", "{failed:#}");
    assert!(
        failed["last_event"]["detail"]
            .as_str()
            .unwrap()
            .starts_with("step WaitEtcd timed out after 4s: "),
        "{failed:#}"
    );
    let (ok, out, err) = status_cli(&d, &reader);
    assert!(
        ok && out.contains("Bootstrap: failed")
            && out.contains("Last event: ")
            && out.contains(" failed: step WaitEtcd timed out"),
        "{out}{err}"
    );
    // Failed stays Failed (no automatic retry), and the task is still there.
    wait_for_log(&d, "waiting for an operator retry", Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(bootstrap(&d, &reader)["phase"], "failed");

    rig.lab.cluster.hold_learner(0);
    // A read-only token may not retry.
    let resp = d
        .api_client()
        .post(format!(
            "{}/api/v1/clusters/{CLUSTER}/bootstrap/retry",
            d.api_url()
        ))
        .bearer_auth(&reader)
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 403);
    let (ok, _, err) = retry_cli(&d, &reader);
    assert!(!ok && err.contains("403"), "{err}");
    assert_eq!(bootstrap(&d, &reader)["phase"], "failed");

    let retried = Instant::now();
    let (ok, out, err) = retry_cli(&d, &admin);
    assert!(
        ok && out.contains("Bootstrap retried: running at step WaitEtcd"),
        "{out}{err}"
    );
    let took = rig.until_done(&d, &reader, retried);
    println!("retry → HandedOff in {took:?}");
    // Bootstrap was never called again, nor the kubeconfig fetched twice.
    let bootstraps = rig
        .lab
        .cluster
        .calls()
        .iter()
        .filter(|c| c.method == "Bootstrap")
        .count();
    assert_eq!((bootstraps, rig.lab.cluster.count("Bootstrap", Code::Ok)), (1, 1));
    assert_eq!(rig.lab.cluster.count("Kubeconfig", Code::Ok), 1);
    assert_eq!(
        rig.kube.journal().applies.last().map(|a| a.name.as_str()),
        Some("root")
    );
    // A second retry is refused: the cluster is not Failed.
    let (ok, _, err) = retry_cli(&d, &admin);
    assert!(!ok && err.contains("cluster_not_failed"), "{err}");
    let log = std::fs::read_to_string(&d.log).unwrap();
    assert!(log.contains("cluster bootstrap retry requested"), "no audit line");
}
