//! `provisioner serve` hands a cluster off only when Argo CD says so: against the
//! fake nodes and the fake Kubernetes API with its scripted Argo CD controller
//! (`provisioner::testing::fake_argo`), an Application that reports `Degraded` and one
//! stuck `Unknown` (a `ComparisonError`) keep the cluster at HandOff with Argo CD's
//! reason in `clusters status`, the API's cluster view and the dashboard; past `argo_synced_secs` the cluster is Failed with that reason; once they
//! report Synced and Healthy an operator retry completes the hand-off without
//! applying anything again. Nothing is recorded HandedOff before.

use crate::common;

use std::time::{Duration, Instant};

use common::serve_rig::{Rig, bootstrap, retry_cli, status_cli};
use provisioner::testing::fake_argo::Outcome;

const DEGRADED: &str = "Deployment \"traefik\" exceeded its progress deadline";
const UNKNOWN: &str =
    "Failed to load target state: failed to generate manifest for source 1 of 2: repository not found";

#[test]
fn a_degraded_hand_off_waits_with_the_reason_fails_on_its_own_timeout_and_a_retry_completes() {
    let Some(rig) = Rig::with_timeouts("{ wait_nodes_secs: 120, hand_off_secs: 120, argo_synced_secs: 8 }")
    else {
        return;
    };
    rig.import_manifest();
    rig.argo.set(
        "traefik-genmachine",
        Outcome::Degraded {
            resource: "Deployment traefik/traefik".into(),
            message: DEGRADED.into(),
        },
    );
    rig.argo.set("loki-genmachine", Outcome::Unknown(UNKNOWN.into()));
    let d = common::daemon::Daemon::start(&rig.cfg);
    let (admin, reader) = (d.token("admin"), d.token("read-only"));

    // Stuck at HandOff, saying why.
    let end = Instant::now() + Duration::from_secs(60);
    let stuck = loop {
        let b = bootstrap(&d, &reader);
        assert!(
            b["phase"] != "done",
            "HandedOff while Argo CD reports Degraded: {b:#}"
        );
        let detail = b["last_event"]["detail"].as_str().unwrap_or("").to_string();
        if b["phase"] == "running" && detail.contains("traefik-genmachine Synced/Degraded") {
            break b;
        }
        assert!(b["phase"] != "failed" && Instant::now() < end, "{b:#}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let running: Vec<&str> = stuck["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["status"] == "running")
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(running, ["HandOff"], "{stuck:#}");
    let why = stuck["last_event"]["detail"].as_str().unwrap();
    for want in [
        &format!("traefik-genmachine Synced/Degraded (Deployment traefik/traefik Degraded: {DEGRADED})"),
        &format!("loki-genmachine Unknown/Unknown (ComparisonError: {UNKNOWN})"),
    ] {
        assert!(why.contains(want.as_str()), "{want}\nnot in {why}");
    }
    // The dashboard's clusters page shows the same reason.
    let html = dashboard_clusters(&d, &reader);
    assert!(
        html.contains("traefik-genmachine") && html.contains("Degraded") && html.contains("ComparisonError"),
        "{html}"
    );
    let (ok, out, err) = status_cli(&d, &reader);
    assert!(
        ok && out.contains("Bootstrap: running")
            && out.contains("Synced/Degraded (Deployment traefik/traefik Degraded")
            && out.contains("ComparisonError"),
        "{out}{err}"
    );

    // Past argo_synced_secs (from the apply): Failed, with Argo CD's reason.
    let end = Instant::now() + Duration::from_secs(60);
    let failed = loop {
        let b = bootstrap(&d, &reader);
        if b["phase"] == "failed" {
            break b;
        }
        assert!(b["phase"] != "done" && Instant::now() < end, "{b:#}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let failure = failed["last_event"]["detail"].as_str().unwrap();
    assert!(
        failure.starts_with("step HandOff timed out after 8s: Argo CD reports ")
            && failure.contains("traefik-genmachine Synced/Degraded"),
        "{failed:#}"
    );
    let roots = |rig: &Rig| {
        rig.kube
            .journal()
            .applies
            .iter()
            .filter(|a| a.name == "root")
            .count()
    };
    assert_eq!(roots(&rig), 1);

    // Fixed in Git (Argo CD now reports them healthy): the operator retries.
    rig.argo.set("traefik-genmachine", Outcome::Healthy);
    rig.argo.set("loki-genmachine", Outcome::Healthy);
    let retried = Instant::now();
    let (ok, out, err) = retry_cli(&d, &admin);
    assert!(ok && out.contains("running at step HandOff"), "{out}{err}");
    let took = rig.until_done(&d, &reader, retried);
    println!("retry → HandedOff in {took:?}");
    assert_eq!(
        roots(&rig),
        1,
        "the retry watches again; it applies nothing twice"
    );
    let (ok, out, _) = status_cli(&d, &reader);
    assert!(ok && out.contains("Bootstrap: done"), "{out}");
    let j = rig.kube.journal();
    let seen: Vec<String> = j
        .argo
        .iter()
        .filter(|(_, n, _)| n == "traefik-genmachine")
        .map(|(_, _, s)| s.clone())
        .collect();
    // The fake reports OutOfSync/Progressing only for its 300 ms `settle`: a poll
    // delayed by a loaded machine may not see it, so it is optional here.
    let seen: Vec<&str> = seen
        .iter()
        .map(String::as_str)
        .skip_while(|s| *s == "OutOfSync/Progressing")
        .collect();
    assert_eq!(
        seen,
        ["Synced/Degraded", "Synced/Healthy"],
        "what Argo CD reported for traefik"
    );
}

/// `/ui/clusters` as a dashboard session of `token` sees it.
fn dashboard_clusters(d: &common::daemon::Daemon, token: &str) -> String {
    let pem = std::fs::read(d.ca()).unwrap();
    let client = reqwest::blocking::Client::builder()
        .tls_certs_only(reqwest::Certificate::from_pem_bundle(&pem).unwrap())
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let login = client
        .post(format!("{}/ui/login", d.api_url()))
        .form(&[("token", token)])
        .send()
        .unwrap();
    let cookie = login
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .expect("a session cookie")
        .to_string();
    let page = client
        .get(format!("{}/ui/clusters", d.api_url()))
        .header("cookie", cookie)
        .send()
        .unwrap();
    assert_eq!(page.status().as_u16(), 200);
    page.text().unwrap()
}
