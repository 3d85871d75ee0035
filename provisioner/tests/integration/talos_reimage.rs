//! Re-imaging a Talos node: `Reset` over the Talos API against fake apids on
//! 127.0.0.11-13 (graceful only while etcd is healthy on the other control-plane
//! nodes, wiping STATE and EPHEMERAL, rebooting), through the real binary's REST API,
//! then the next PXE boot gets a fresh one-time config token.

use crate::common;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use common::daemon::{Daemon, http, loopback_boot, write_config};
use common::pki::OsCa;
use common::talos_lab::TalosLab;
use provisioner::cluster::seams::NodeResetter;
use provisioner::os::talos::api::BundleIdentity;
use provisioner::os::talos::api::pb::machine::{ResetRequest, reset_request};
use provisioner::os::talos::reset::TalosResetter;
use provisioner_core::model::Machine;
use provisioner_core::talos::store::{MemSecretStore, SecretStore};

const MAC1: &str = "52:54:00:00:10:01";

/// Three control-plane nodes at 127.0.0.11-13, MACs 52:54:00:00:10:0N.
fn infra() -> String {
    let mut s = String::from(
        "distribution: talos\nclusterName: lab\ntalosVersion: v1.11.6\nkubernetesVersion: v1.34.1\n\
         endpoint: https://127.0.0.11:6443\nnodes:\n",
    );
    for n in 1..=3 {
        s += &format!(
            "  - hostname: talos-{n}\n    ipAddress: 127.0.0.1{n}\n    controlPlane: true\n    \
             installDisk: /dev/vda\n    mac: \"52:54:00:00:10:0{n}\"\n"
        );
    }
    s
}

fn ip(n: u8) -> IpAddr {
    IpAddr::from([127, 0, 0, 10 + n])
}

fn wiped(r: &ResetRequest) -> Vec<(&str, bool)> {
    r.system_partitions_to_wipe
        .iter()
        .map(|p| (p.label.as_str(), p.wipe))
        .collect()
}

/// The `/config/<token>` path of a Talos install script.
fn config_path(script: &str) -> String {
    let url = script
        .split_whitespace()
        .find_map(|w| w.strip_prefix("talos.config="))
        .unwrap_or_else(|| panic!("no talos.config in {script}"));
    url[url.find("/config/").unwrap()..].to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reimage_through_the_api_resets_the_node_and_the_next_boot_gets_a_fresh_token() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    common::write_catalog(d);
    std::fs::create_dir_all(d.join("infra")).unwrap();
    std::fs::write(d.join("infra/lab.yaml"), infra()).unwrap();
    std::fs::write(
        d.join("profiles/profiles/talos-lab.yaml"),
        "id: talos-lab\nimage: test-img\nconfig: talos\ncluster: lab\n",
    )
    .unwrap();
    // talos-1's group is derived from infra/ (a MAC lives in one place).
    // The cluster's bundle exists before the first start, so the fake apids can be
    // issued by its OS CA (the appliance mints its os:admin identity from it).
    let bundle = provisioner::pki::talos::generate(time::OffsetDateTime::now_utc()).unwrap();
    {
        let secrets = d.join("state/secrets");
        std::fs::create_dir_all(&secrets).unwrap();
        let store = provisioner::store::RedbSecretStore::open(
            &secrets.join("secrets.redb"),
            &secrets.join("secrets.key"),
        )
        .unwrap();
        store.put("lab", &bundle).unwrap();
    }
    let lab = TalosLab::start_on_one_port(OsCa::from_bundle(&bundle), 3, b"unused").await;
    let cfg = loopback_boot(&write_config(d, d));
    // Re-imaging only: the bootstrap supervisor would call these nodes too.
    let text = std::fs::read_to_string(&cfg).unwrap()
        + &format!(
            "talos:\n  api_port: {}\nbootstrap:\n  enabled: false\n",
            lab.port()
        );
    std::fs::write(&cfg, text).unwrap();

    let cluster = lab.cluster.clone();
    tokio::task::spawn_blocking(move || {
        let daemon = Daemon::start(&cfg);
        let boot = || {
            let (st, body) = http(
                daemon.http,
                "GET",
                "/ipxe?mac=52-54-00-00-10-01&arch=x86_64&platform=efi",
            )
            .unwrap();
            assert_eq!(st, 200);
            config_path(&String::from_utf8(body).unwrap())
        };
        let old = boot();
        let (st, body) = http(daemon.http, "GET", &old).unwrap();
        assert_eq!(
            st,
            200,
            "{}",
            String::from_utf8_lossy(&body).lines().next().unwrap_or("")
        );
        // A running cluster: etcd healthy on every node.
        cluster.mark_bootstrapped(ip(1));

        let admin = daemon.token("admin");
        let resp = daemon
            .api_client()
            .post(format!("{}/api/v1/machines/{MAC1}/reimage", daemon.api_url()))
            .bearer_auth(&admin)
            .send()
            .unwrap();
        assert_eq!(resp.status().as_u16(), 202);
        let v: serde_json::Value = resp.json().unwrap();
        assert_eq!(v["state"], "ReimageRequested");
        assert_eq!(v["steps"][1]["step"], "talos_reset", "{v}");
        assert_eq!(v["steps"][1]["status"], "done", "{v}");
        let detail = v["steps"][1]["detail"].as_str().unwrap();
        assert!(
            detail.contains("graceful=true") && detail.contains("STATE and EPHEMERAL"),
            "{detail}"
        );

        let resets = cluster.resets();
        assert_eq!(resets.len(), 1, "{resets:?}");
        let (node, req) = &resets[0];
        assert_eq!(*node, ip(1));
        assert!(req.graceful && req.reboot, "{req:?}");
        assert_eq!(wiped(req), [("STATE", true), ("EPHEMERAL", true)]);
        assert_eq!(req.mode, reset_request::WipeMode::SystemDisk as i32);
        // The graceful decision asked the other members about etcd.
        let mut asked: Vec<IpAddr> = cluster
            .calls()
            .iter()
            .filter(|c| c.method == "ServiceList")
            .map(|c| c.node)
            .collect();
        asked.sort();
        assert_eq!(asked, [ip(2), ip(3)]);

        let (_, tl) = daemon.api_get(&format!("/api/v1/machines/{MAC1}/timeline"), Some(&admin));
        assert!(tl.contains("talos_reset: done (Reset sent to talos-1"), "{tl}");
        let (st, m) = daemon.api_get(&format!("/api/v1/machines/{MAC1}"), Some(&admin));
        assert_eq!(st, 200);
        let m: serde_json::Value = serde_json::from_str(&m).unwrap();
        assert_eq!(m["state"], "ReimageRequested");

        // The next PXE boot installs with a fresh one-time token; the old one is dead.
        let fresh = boot();
        assert_ne!(fresh, old);
        assert_eq!(http(daemon.http, "GET", &old).unwrap().0, 403);
        let (st, body) = http(daemon.http, "GET", &fresh).unwrap();
        assert_eq!(st, 200);
        assert!(String::from_utf8_lossy(&body).contains("hostname: talos-1"));
        assert_eq!(http(daemon.http, "GET", &fresh).unwrap().0, 403, "one-time");
    })
    .await
    .unwrap();
}

fn resetter(lab: &TalosLab, infra_text: &str) -> TalosResetter {
    let c: provisioner_core::talos::TalosCluster = serde_saphyr::from_str(infra_text).unwrap();
    TalosResetter::new(
        [("lab".to_string(), c)].into(),
        Arc::new(BundleIdentity::new(Arc::new(MemSecretStore::new()))),
        50000,
        Duration::from_secs(2),
    )
    .with_api("lab", Arc::new(lab.client(&lab.ca.admin())))
}

fn machine(mac: &str) -> Machine {
    Machine::discovered(mac.parse().unwrap(), time::OffsetDateTime::now_utc())
}

#[tokio::test]
async fn unhealthy_etcd_or_a_lone_control_plane_node_means_a_non_graceful_reset() {
    let lab = TalosLab::start(3, 0, b"unused").await;
    // etcd not bootstrapped: the other members report it Preparing.
    let r = resetter(&lab, &infra());
    let detail = r.reset(&machine(MAC1), Some("lab")).await.unwrap();
    assert!(
        detail.contains("graceful=false") && detail.contains("NOT graceful: etcd on 127.0.0.12 is Preparing"),
        "{detail}"
    );
    let resets = lab.cluster.resets();
    assert_eq!(resets.len(), 1);
    assert!(!resets[0].1.graceful && resets[0].1.reboot);
    assert_eq!(wiped(&resets[0].1), [("STATE", true), ("EPHEMERAL", true)]);

    // The only control-plane node cannot leave etcd gracefully.
    let one = infra()
        .replace(
            "    controlPlane: true\n    installDisk: /dev/vda\n    mac: \"52:54:00:00:10:02\"",
            "    installDisk: /dev/vda\n    mac: \"52:54:00:00:10:02\"",
        )
        .replace(
            "    controlPlane: true\n    installDisk: /dev/vda\n    mac: \"52:54:00:00:10:03\"",
            "    installDisk: /dev/vda\n    mac: \"52:54:00:00:10:03\"",
        );
    lab.cluster.mark_bootstrapped(ip(1));
    let detail = resetter(&lab, &one)
        .reset(&machine(MAC1), Some("lab"))
        .await
        .unwrap();
    assert!(
        detail.contains("graceful=false") && detail.contains("only control-plane node"),
        "{detail}"
    );
    // A worker is drained (graceful) without asking etcd.
    let detail = resetter(&lab, &one)
        .reset(&machine("52:54:00:00:10:02"), Some("lab"))
        .await
        .unwrap();
    assert!(
        detail.contains("graceful=true") && detail.contains("worker"),
        "{detail}"
    );
    assert_eq!(lab.cluster.resets()[2].0, ip(2));

    // A machine infra/ does not know: nothing is sent.
    let e = r
        .reset(&machine("52:54:00:00:10:09"), Some("lab"))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("no node of cluster"), "{e}");
    assert_eq!(lab.cluster.resets().len(), 3);
}
