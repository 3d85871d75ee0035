//! `kill -9` never loses an acknowledged write: machines keep booting against the real
//! daemon while it is killed; everything a client got a 200 for must be in the store.

use crate::common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::daemon::{Daemon, http, loopback_boot, run, write_config};

/// Rank of a state in the install flow; acknowledged progress may only be exceeded.
fn rank(s: &str) -> u8 {
    match s {
        "Discovered" => 0,
        "Booting" => 1,
        "ConfigServed" => 2,
        "Installed" => 3,
        _ => 9,
    }
}

#[test]
fn sigkill_mid_boot_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    common::write_catalog(p);
    // Every machine matches via the default profile.
    let cfg = loopback_boot(&write_config(p, p));
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("unknown_policy: record", "unknown_policy: profile:lab")
        // Every made-up machine comes from 127.0.0.1: lift the per-IP /ipxe and
        // /config rate (http_flood proves the rate) so the storm is not throttled.
        + "http: { script_rate_per_ip: 1000000, script_burst_per_ip: 1000000 }\n";
    std::fs::write(&cfg, text).unwrap();
    let mut d = Daemon::start(&cfg);
    let addr = d.http;

    // mac -> highest state acknowledged to the "machine".
    let acked: Arc<Mutex<BTreeMap<String, &'static str>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut workers = Vec::new();
    for w in 0..4u8 {
        let acked = acked.clone();
        let stop = stop.clone();
        workers.push(std::thread::spawn(move || {
            for n in 0..250u8 {
                if stop.load(std::sync::atomic::Ordering::SeqCst) {
                    return;
                }
                let mac = format!("52-54-00-aa-{w:02x}-{n:02x}");
                let key = mac.replace('-', ":");
                let Ok((200, script)) =
                    http(addr, "GET", &format!("/ipxe?mac={mac}&arch=x86_64&platform=efi"))
                else {
                    return;
                };
                acked.lock().unwrap().insert(key.clone(), "Booting");
                let script = String::from_utf8(script).unwrap();
                let path = |k: &str| {
                    let url = script
                        .split_whitespace()
                        .find_map(|t| t.strip_prefix(k))
                        .unwrap()
                        .to_string();
                    url.splitn(4, '/').nth(3).map(|p| format!("/{p}")).unwrap()
                };
                let Ok((200, _)) = http(addr, "GET", &path("provisioner.config=")) else {
                    return;
                };
                acked.lock().unwrap().insert(key.clone(), "ConfigServed");
                let Ok((200, _)) = http(addr, "POST", &path("provisioner.callback=")) else {
                    return;
                };
                acked.lock().unwrap().insert(key, "Installed");
            }
        }));
    }
    // Let some machines get through, then kill the daemon in the middle of the storm.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while acked.lock().unwrap().len() < 40 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    d.kill_9();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for w in workers {
        w.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() >= 40,
        "the storm made progress before the kill ({})",
        acked.len()
    );

    let (ok, json, err) = run(&["export", "--config", cfg.to_str().unwrap()]);
    assert!(ok, "export after kill -9: {err}");
    let snap: serde_json::Value = serde_json::from_str(&json).unwrap();
    let stored: BTreeMap<String, String> = snap["machines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["mac"].as_str().unwrap().to_string(),
                m["state"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    for (mac, state) in &acked {
        let got = stored
            .get(mac)
            .unwrap_or_else(|| panic!("{mac} acknowledged as {state} but missing after kill -9"));
        assert!(
            rank(got) >= rank(state),
            "{mac}: acknowledged {state}, stored {got}"
        );
    }
    // The daemon restarts on the same store and keeps serving.
    let d2 = Daemon::start(&cfg);
    let (st, _) = http(d2.http, "GET", "/healthz").unwrap();
    assert_eq!(st, 200);
}
