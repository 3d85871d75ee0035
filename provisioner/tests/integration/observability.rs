//! `/metrics`, `/healthz`, the read-only machine views and JSON logs, on the real binary.

use crate::common;

use common::daemon::{Daemon, http, loopback_boot, write_config};

#[test]
fn metrics_count_requests_bytes_and_decisions() {
    let dir = tempfile::tempdir().unwrap();
    common::write_catalog(dir.path());
    std::fs::write(dir.path().join("undionly.kpxe"), vec![7u8; 5000]).unwrap();
    let d = Daemon::start(&loopback_boot(&write_config(dir.path(), dir.path())));

    let (st, script) = http(
        d.http,
        "GET",
        "/ipxe?mac=52-54-00-00-00-01&arch=i386&platform=pcbios",
    )
    .unwrap();
    assert_eq!(st, 200);
    assert!(String::from_utf8_lossy(&script).contains("kernel"));
    assert_eq!(http(d.http, "GET", "/ipxe?mac=52-54-00-00-00-99").unwrap().0, 200);
    assert_eq!(
        http(d.http, "GET", "/assets/test-img/vmlinuz").unwrap().1.len(),
        1024 * 1024
    );
    assert_eq!(http(d.http, "GET", "/config/not-a-token").unwrap().0, 403);
    // The machine's one-time config URL: served once, then a counted replay.
    let script = String::from_utf8_lossy(&script).into_owned();
    let config = script
        .split_whitespace()
        .find_map(|w| w.strip_prefix("provisioner.config="))
        .and_then(|u| u.find("/config/").map(|i| u[i..].to_owned()))
        .expect("provisioner.config= in the script");
    assert_eq!(http(d.http, "GET", &config).unwrap().0, 200);
    assert_eq!(http(d.http, "GET", &config).unwrap().0, 403);
    let out = std::process::Command::new("curl")
        .args(["-sS", "-o", "/dev/null"])
        .arg(format!("tftp://{}/undionly.kpxe", d.tftp))
        .status()
        .unwrap();
    assert!(out.success());
    let _ = std::process::Command::new("curl")
        .args(["-sS", "-o", "/dev/null"])
        .arg(format!("tftp://{}/missing", d.tftp))
        .status();
    std::thread::sleep(std::time::Duration::from_millis(300));

    // /metrics needs a token; read-only (what a Prometheus scraper gets) suffices.
    assert_eq!(d.api_get("/metrics", None).0, 401);
    let reader = d.token("read-only");
    let (st, m) = d.api_get("/metrics", Some(&reader));
    assert_eq!(st, 200);
    for want in [
        "provisioner_boot_decisions_total{outcome=\"install\"} 1",
        "provisioner_boot_decisions_total{outcome=\"unknown\"} 1",
        "provisioner_http_requests_total{route=\"/ipxe\",status=\"200\"} 2",
        "provisioner_http_requests_total{route=\"/config/{token}\",status=\"403\"} 2",
        "provisioner_http_requests_total{route=\"/config/{token}\",status=\"200\"} 1",
        "provisioner_token_rejected_total 2",
        "provisioner_token_replays_total{purpose=\"config\"} 1",
        "provisioner_tftp_requests_total{result=\"ok\"} 1",
        "provisioner_tftp_requests_total{result=\"not_found\"} 1",
        "provisioner_tftp_bytes_total 5000",
        "provisioner_api_auth_failures_total{reason=\"missing\"} 1",
    ] {
        assert!(m.contains(want), "missing `{want}` in\n{m}");
    }
    let bytes_line = m
        .lines()
        .find(|l| l.starts_with("provisioner_http_bytes_total"))
        .expect("http bytes counter");
    let bytes: u64 = bytes_line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(bytes >= 1024 * 1024, "{bytes_line}");
    // Tokens never appear in metrics labels.
    assert!(!m.contains("not-a-token"));
    assert!(!m.contains(config.rsplit('/').next().unwrap()));
}

#[test]
fn api_views_and_health() {
    let dir = tempfile::tempdir().unwrap();
    common::write_catalog(dir.path());
    let d = Daemon::start(&loopback_boot(&write_config(dir.path(), dir.path())));
    assert_eq!(http(d.http, "GET", "/healthz").unwrap().0, 200);
    assert_eq!(d.api_get("/healthz", None).0, 200, "liveness needs no token");
    assert!(
        dir.path().join("state/inventory.redb").exists() && !dir.path().join("state/leases.redb").exists(),
        "the lease file is opened only in DHCP full mode"
    );
    // The API listener speaks HTTPS only.
    assert!(
        http(d.api, "GET", "/healthz")
            .map(|(st, _)| st != 200)
            .unwrap_or(true)
    );
    let reader = d.token("read-only");
    let t = Some(reader.as_str());
    http(
        d.http,
        "GET",
        "/ipxe?mac=52-54-00-00-00-02&arch=x86_64&platform=efi",
    )
    .unwrap();
    let (st, body) = d.api_get("/api/v1/machines/52-54-00-00-00-02", t);
    assert_eq!(st, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["state"], "Booting");
    assert_eq!(v["timeline"][0]["kind"], "ipxe_script_served");
    let (st, body) = d.api_get("/api/v1/machines/nonsense", t);
    assert_eq!(st, 422);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["code"],
        "invalid_mac"
    );
    assert_eq!(d.api_get("/api/v1/machines/52-54-00-00-00-03", t).0, 404);
    assert_eq!(d.api_get("/api/v1/machines", None).0, 401);
    let (_, list) = d.api_get("/api/v1/machines", t);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&list)
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // The stores' health is exported next to the request counters.
    let (st, metrics) = d.api_get("/metrics", t);
    assert_eq!(st, 200);
    assert!(
        metrics.contains("provisioner_store_healthy{store=\"inventory\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("provisioner_store_reopens_total{store=\"inventory\"} 0"),
        "{metrics}"
    );
    // The boot path exposes no API route.
    assert_eq!(http(d.http, "GET", "/api/v1/machines").unwrap().0, 404);
    assert_eq!(http(d.http, "GET", "/metrics").unwrap().0, 404);
}

#[test]
fn json_logs_are_one_object_per_line_and_never_carry_tokens() {
    let dir = tempfile::tempdir().unwrap();
    common::write_catalog(dir.path());
    let cfg = loopback_boot(&write_config(dir.path(), dir.path()));
    std::fs::write(
        &cfg,
        std::fs::read_to_string(&cfg).unwrap() + "log_format: json\n",
    )
    .unwrap();
    let mut d = Daemon::start(&cfg);
    let (_, script) = http(
        d.http,
        "GET",
        "/ipxe?mac=52-54-00-00-00-02&arch=x86_64&platform=efi",
    )
    .unwrap();
    let script = String::from_utf8(script).unwrap();
    let token = script
        .split("/config/")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    assert_eq!(http(d.http, "GET", &format!("/config/{token}")).unwrap().0, 200);
    d.stop();
    let log = std::fs::read_to_string(&d.log).unwrap();
    assert!(log.lines().count() >= 4);
    for line in log.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(v.get("level").is_some() && v.get("fields").is_some(), "{line}");
    }
    assert!(!log.contains(&token), "a one-time token leaked into the log");
}
