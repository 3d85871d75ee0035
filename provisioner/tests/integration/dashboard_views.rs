//! The dashboard's views in headless Chromium, fixture-free: a machine boots with
//! real requests (proxyDHCP DISCOVER over loopback UDP, the iPXE binary over TFTP,
//! `/ipxe`, kernel and initrd, `/config`, the installed callback) while its page is
//! open; the waterfall's bars must carry the durations the API's timeline gives.
//! The fleet view counts states and lists a boot loop and a replayed config token
//! (the refusal appears live); the clusters page shows a seeded Talos bootstrap as a
//! progress line with the recorded times. Screenshots of the three pages are PNGs
//! under the test's temp dir and, when set, `$PROVISIONER_ARTIFACTS`.

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use provisioner_core::cluster::bootstrap::{BootstrapState, Step};
use provisioner_core::cluster::{ClusterEvent, ClusterEventKind, ClusterStore};
use provisioner_core::dhcp::v4::MessageType;
use provisioner_core::timeline::waterfall::duration_label;
use serde_json::Value;
use time::OffsetDateTime;

use super::{Driver, token_after};
use crate::common::daemon::{Daemon, http, loopback_boot, write_config};
use crate::common::live::{client_socket, proxy_dhcp, pxe_request, send};
use crate::common::{self, BIOS_MAC, EFI_MAC};

/// Reads `file` from the TFTP server as firmware would (RFC 1350: RRQ, then ACK
/// every DATA block until a short one).
fn tftp_get(server: SocketAddr, file: &str) -> usize {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut rrq = vec![0, 1];
    rrq.extend_from_slice(file.as_bytes());
    rrq.extend_from_slice(b"\0octet\0");
    s.send_to(&rrq, server).unwrap();
    let (mut got, mut buf) = (0, [0u8; 1024]);
    loop {
        let (n, from) = s.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..2], [0, 3], "DATA, not {:?}", &buf[..n]);
        got += n - 4;
        s.send_to(&[0, 4, buf[2], buf[3]], from).unwrap();
        if n - 4 < 512 {
            return got;
        }
    }
}

fn at(e: &Value) -> OffsetDateTime {
    OffsetDateTime::parse(
        e["at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap()
}

/// The expected bars of the boot that starts at the timeline's newest DISCOVER,
/// computed here from the API's events: each bar ends at its phase's last event and
/// starts where the previous one ended.
fn expected_bars(tl: &[Value]) -> Vec<(&'static str, i64)> {
    let start = tl
        .iter()
        .rposition(|e| e["kind"] == "dhcp_seen" && e["detail"].as_str().unwrap().starts_with("DISCOVER"))
        .expect("a DISCOVER");
    let boot = &tl[start..];
    let last = |kinds: &[&str]| {
        at(boot
            .iter()
            .rev()
            .find(|e| kinds.contains(&e["kind"].as_str().unwrap()))
            .unwrap())
    };
    // DHCP ends at its last packet before the TFTP transfer completed.
    let tftp = boot.iter().position(|e| e["kind"] == "tftp_served").unwrap();
    let dhcp_end = at(boot[..tftp]
        .iter()
        .rev()
        .find(|e| e["kind"] == "dhcp_seen" || e["kind"] == "dhcp_sent")
        .unwrap());
    let ends = [
        ("dhcp", dhcp_end),
        ("tftp", at(&boot[tftp])),
        ("ipxe", last(&["ipxe_script_served"])),
        ("kernel", last(&["asset_served"])),
        ("config", last(&["config_served"])),
        ("installed", last(&["installed"])),
    ];
    // Bar ends are whole ms after the boot's first event.
    let t0 = at(&boot[0]);
    let mut prev = 0;
    ends.iter()
        .map(|(p, end)| {
            let end = (*end - t0).whole_milliseconds() as i64;
            let ms = end - prev;
            prev = end;
            (*p, ms)
        })
        .collect()
}

fn seed_cluster(state_dir: &std::path::Path, t0: OffsetDateTime) {
    std::fs::create_dir_all(state_dir).unwrap();
    let store = provisioner::store::RedbInventory::open(&state_dir.join("inventory.redb")).unwrap();
    let min = |m: i64| t0 + time::Duration::minutes(m);
    let change = |m, from: Step, to: Step| ClusterEvent {
        at: min(m),
        kind: ClusterEventKind::StepChanged,
        detail: format!("{from} -> {to}: test"),
    };
    // Failed waiting for Argo CD at 44 (an operator retries it below).
    let mut s = BootstrapState::new("lab", t0);
    s.step = Step::Failed;
    s.failed_step = Some(Step::HandOff);
    s.failure = Some("step HandOff timed out after 1800s: root: OutOfSync/Progressing".into());
    s.step_started = min(44);
    s.applied_at = Some(min(14));
    let events = [
        change(3, Step::WaitNodes, Step::Bootstrap),
        change(4, Step::Bootstrap, Step::WaitEtcd),
        change(7, Step::WaitEtcd, Step::FetchKubeconfig),
        change(8, Step::FetchKubeconfig, Step::WaitApi),
        change(11, Step::WaitApi, Step::HandOff),
        ClusterEvent {
            at: min(15),
            kind: ClusterEventKind::ArgoStatus,
            detail: "root: new -> OutOfSync/Progressing".into(),
        },
        change(44, Step::HandOff, Step::Failed),
    ];
    store.save(&s, &events).unwrap();
}

#[test]
fn dashboard_fleet_waterfall_and_cluster_progress_match_the_api() {
    let dir = tempfile::tempdir().unwrap();
    common::write_catalog(dir.path());
    std::fs::create_dir_all(dir.path().join("infra")).unwrap();
    // A Talos cluster whose one node is none of the booting machines (bootstrap is
    // off: nothing is dialled).
    std::fs::write(
        dir.path().join("infra/lab.yaml"),
        "distribution: talos\nclusterName: lab\ntalosVersion: v1.11.6\nkubernetesVersion: v1.34.1\n\
         endpoint: https://127.0.0.13:6443\nnodes:\n\
         \x20 - {hostname: talos-3, ipAddress: 127.0.0.13, controlPlane: true, installDisk: /dev/vda, mac: '52:54:00:00:01:03'}\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("snponly.efi"), vec![0x5a; 1300]).unwrap();
    let cfg = loopback_boot(&write_config(dir.path(), dir.path()));
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text.push_str("boot_loop: { max_installs: 2, window_minutes: 30 }\nbootstrap: { enabled: false }\n");
    std::fs::write(&cfg, text).unwrap();
    let dhcp = proxy_dhcp(&cfg);
    let t0 = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap() - time::Duration::hours(1);
    seed_cluster(&dir.path().join("state"), t0);
    let d = Daemon::start(&cfg);
    let reader = d.token("read-only");
    let base = d.api_url();

    // A boot loop: the BIOS machine's third install script in the window halts it.
    let bios = "/ipxe?mac=52-54-00-00-00-01&arch=i386&platform=pcbios";
    for _ in 0..3 {
        assert_eq!(http(d.http, "GET", bios).unwrap().0, 200);
    }
    // The EFI machine's first script (attempt 1; it also ties 127.0.0.1 to it, so
    // the TFTP transfer below is recorded on its timeline).
    let efi = "/ipxe?mac=52-54-00-00-00-02&arch=x86_64&platform=efi";
    assert_eq!(http(d.http, "GET", efi).unwrap().0, 200);

    let b = Driver::start();
    b.goto(&format!("{base}/ui/machines/{EFI_MAC}"));
    b.type_into("#token", &d.token("admin"));
    b.click("#login");
    b.wait_for("#machines");
    b.goto(&format!("{base}/ui/machines/{EFI_MAC}"));
    b.wait_text("#live", "the event stream", |t| t == "live");
    assert_eq!(b.find_all("#waterfall .attempt").len(), 1);

    // Attempt 2, with the page open: DISCOVER → TFTP → script → kernel + initrd →
    // config → installed.
    let udp = client_socket();
    let discover = pxe_request(EFI_MAC, MessageType::Discover);
    send(&udp, dhcp.dhcp, &discover);
    b.wait_text_poking(
        "#timeline",
        "the OFFER",
        |t| t.contains("dhcp_sent OFFER"),
        || send(&udp, dhcp.dhcp, &discover),
    );
    assert_eq!(tftp_get(d.tftp, "snponly.efi"), 1300);
    b.wait_text("#timeline", "tftp_served", |t| t.contains("tftp_served"));
    let script = String::from_utf8(http(d.http, "GET", efi).unwrap().1).unwrap();
    let mut assets = 0;
    for w in script.split_whitespace().filter(|w| w.contains("/assets/")) {
        let path = &w[w.find("/assets/").unwrap()..];
        assert_eq!(http(d.http, "GET", path).unwrap().0, 200, "{path}");
        assets += 1;
    }
    // Served assets are recorded by the observation writer, after the response
    // (`service::observe`): wait until both are on the timeline before going on,
    // as a real machine's config fetch comes well after its downloads.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (_, body) = d.api_get(&format!("/api/v1/machines/{EFI_MAC}/timeline"), Some(&reader));
        if body.matches("asset_served").count() >= assets {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "asset events missing: {body}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let config = format!("/config/{}", token_after(&script, "/config/"));
    let callback = format!("/callback/{}/installed", token_after(&script, "/callback/"));
    assert_eq!(http(d.http, "GET", &config).unwrap().0, 200);
    assert_eq!(http(d.http, "POST", &callback).unwrap().0, 200);
    // The waterfall re-renders live: attempt 2 with its installed bar.
    b.wait_for("#waterfall .attempt[data-attempt='2'] .bar-installed");
    let shot = b.screenshot("dashboard-waterfall.png");
    // The whole viewport, and no blank image (a page of bars compresses worse).
    let png = std::fs::read(&shot).unwrap();
    let (w, h) = super::png_size(&png);
    assert!(
        w >= 800 && h >= 500 && png.len() > 10_000,
        "{w}x{h}, {} bytes",
        png.len()
    );

    // The bars against the API's timeline.
    let (st, body) = d.api_get(&format!("/api/v1/machines/{EFI_MAC}/timeline"), Some(&reader));
    assert_eq!(st, 200, "{body}");
    let tl: Vec<Value> = serde_json::from_str(&body).unwrap();
    let want = expected_bars(&tl);
    let attempt = b.find("#waterfall .attempt[data-attempt='2']").unwrap();
    let total: i64 = want.iter().map(|(_, ms)| ms).sum();
    assert_eq!(b.attr(&attempt, "data-total-ms"), total.to_string());
    assert_eq!(b.text_in(&attempt, ".total"), duration_label(total));
    assert_eq!(b.text_in(&attempt, ".outcome"), "installed");
    let bars = b.find_all("#waterfall .attempt[data-attempt='2'] .bar");
    assert_eq!(bars.len(), want.len());
    for (id, (phase, ms)) in bars.iter().zip(&want) {
        assert_eq!(b.attr(id, "data-phase"), *phase);
        assert_eq!(b.attr(id, "data-ms"), ms.to_string(), "{phase}");
        assert_eq!(b.text_in(id, ".dur"), duration_label(*ms), "{phase}");
    }
    // Attempt 1 was the lone script: one iPXE bar, abandoned for attempt 2.
    let first = b.find_all("#waterfall .attempt[data-attempt='1'] .bar");
    assert_eq!(first.len(), 1);
    assert_eq!(b.attr(&first[0], "data-phase"), "ipxe");

    // The fleet view: counts by state, then the refusal of a replayed config token
    // appears live.
    b.goto(&format!("{base}/ui/fleet"));
    b.wait_text("#live", "the fleet's event stream", |t| t == "live");
    assert_eq!(b.text("#count-total"), "2");
    let count = |state: &str| b.text(&format!(".count[data-state='{state}'] .n"));
    assert_eq!(
        (count("Installed"), count("BootLoop"), count("Booting")),
        ("1".into(), "1".into(), "0".into())
    );
    let (_, list) = d.api_get("/api/v1/machines", Some(&reader));
    let list: Vec<Value> = serde_json::from_str(&list).unwrap();
    assert_eq!(list.iter().filter(|m| m["state"] == "BootLoop").count(), 1);
    let rows = b.text("#attention");
    assert!(rows.contains(BIOS_MAC) && rows.contains("boot loop"), "{rows}");
    assert!(!rows.contains("refused"), "{rows}");
    assert_eq!(http(d.http, "GET", &config).unwrap().0, 403);
    b.wait_text("#attention", "the refusal, live", |t| {
        t.contains("refused") && t.contains(EFI_MAC)
    });
    assert_eq!(b.text("#attention-count"), "(2)");
    // Each row links to its machine.
    let link = b.find("#attention tr[data-reason='refused'] a").unwrap();
    let href = b.attr(&link, "href").replace("%3A", ":");
    assert_eq!(href, format!("/ui/machines/{EFI_MAC}"));
    b.screenshot("dashboard-fleet.png");

    // The clusters page: the seeded Talos bootstrap as a progress line.
    b.goto(&format!("{base}/ui/clusters"));
    b.wait_text("#live", "the clusters' event stream", |t| t == "live");
    let marks: Vec<(String, String)> = b
        .find_all("#progress-lab .milestone")
        .iter()
        .map(|id| (b.text_in(id, ".label"), b.attr(id, "data-mark")))
        .collect();
    let names = [
        "Bootstrap",
        "etcd",
        "kubeconfig",
        "readyz",
        "Argo CD",
        "root app",
        "Synced+Healthy",
        "HandedOff",
    ];
    let want_marks = [
        "done", "done", "done", "done", "done", "done", "failed", "pending",
    ];
    let got: Vec<(&str, &str)> = marks.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    assert_eq!(got, names.iter().copied().zip(want_marks).collect::<Vec<_>>());
    let rfc = |m: i64| {
        (t0 + time::Duration::minutes(m))
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    };
    let line = b.text("#progress-lab");
    for m in [4, 7, 8, 11, 14, 44] {
        assert!(line.contains(&rfc(m)), "{} in {line}", rfc(m));
    }
    let (_, c) = d.api_get("/api/v1/clusters/lab", Some(&reader));
    let c: Value = serde_json::from_str(&c).unwrap();
    let last = c["bootstrap"]["last_event"]["detail"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(last.starts_with("HandOff -> Failed"), "{last}");
    assert!(b.text(".last-event").contains(&last));
    b.screenshot("dashboard-clusters-failed.png");
    // Live from the cluster store: an operator's retry puts Synced+Healthy back to
    // running on the open page (no machine event involved).
    let live = b.find("#live").unwrap();
    assert_eq!(b.attr(&live, "data-renders"), "");
    let r = d
        .api_client()
        .post(format!("{base}/api/v1/clusters/lab/bootstrap/retry"))
        .bearer_auth(d.token("admin"))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    b.wait_text("#progress-lab", "the retried step, live", |_| {
        b.find("#progress-lab .milestone[data-mark='running']").is_some()
    });
    assert!(!b.attr(&live, "data-renders").is_empty());
    assert!(
        b.text(".last-event")
            .contains("Failed -> HandOff: operator retry"),
        "{}",
        b.text(".last-event")
    );
    // A machine event re-renders it too.
    let renders = b.attr(&live, "data-renders");
    assert_eq!(
        http(
            d.http,
            "GET",
            "/ipxe?mac=52-54-00-00-00-09&arch=i386&platform=pcbios"
        )
        .unwrap()
        .0,
        200
    );
    b.wait_text("#live", "a re-render", |_| {
        b.attr(&live, "data-renders") != renders
    });
    b.screenshot("dashboard-clusters.png");
}
