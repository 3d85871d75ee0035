//! The real composition root on port 0: `App::open` (inputs loaded once, every store
//! opened once), `Listeners::bind` on 127.0.0.1:0, `serve_bound` until the shutdown
//! token is cancelled. The boot path answers `/healthz` and an `/ipxe` request whose
//! URLs carry the port actually bound, and cancelling the token ends `serve_bound`
//! cleanly with every store closed (the inventory reopens at once).

use std::time::Duration;

use provisioner::app::{App, Listeners, serve_bound};
use provisioner::config::Config;
use provisioner_core::dhcp::Personality;
use provisioner_core::inventory::Inventory;
use tokio_util::sync::CancellationToken;

use crate::common::{BIOS_MAC, write_catalog};

fn config(dir: &std::path::Path) -> Config {
    let any = "127.0.0.1:0".parse().unwrap();
    let mut cfg = Config {
        state_dir: dir.join("state"),
        images_dir: dir.join("images"),
        profiles_dir: dir.join("profiles"),
        infra_dir: dir.join("infra"),
        gitops_dir: dir.join("gitops"),
        cache_dir: Some(dir.join("cache")),
        tftp_root: dir.join("tftp"),
        server_ip: Some("127.0.0.1".parse().unwrap()),
        http_listen: any,
        api_listen: any,
        tftp_listen: any,
        ..Config::default()
    };
    cfg.dhcp.mode = Personality::Off;
    // The test talks from loopback, which peer binding never trusts.
    cfg.peer_binding.enabled = false;
    cfg
}

#[tokio::test]
async fn the_real_composition_serves_on_port_zero_and_stops_on_its_token() {
    let tmp = tempfile::tempdir().unwrap();
    write_catalog(tmp.path());
    let cfg = config(tmp.path());
    let inventory_path = cfg.inventory_path();
    let app = App::open(cfg).unwrap();
    assert_eq!(app.inputs.catalog.profiles.len(), 1);
    let bound = Listeners::bind(&app.cfg).await.unwrap();
    let http = bound.http.local_addr().unwrap();
    assert_ne!(http.port(), 0);
    assert_ne!(bound.api.local_addr().unwrap().port(), 0);
    assert_ne!(bound.tftp.local_addr().unwrap().port(), 0);
    assert!(bound.dhcp.is_empty(), "dhcp.mode off binds no DHCP socket");
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(serve_bound(app, bound, shutdown.clone()));

    let client = reqwest::Client::new();
    let base = format!("http://{http}");
    let health = client.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(health.text().await.unwrap(), "ok\n");
    let mac = BIOS_MAC.replace(':', "-");
    let script = client
        .get(format!("{base}/ipxe?mac={mac}&arch=i386&platform=pcbios"))
        .send()
        .await
        .unwrap();
    assert_eq!(script.status(), 200);
    let script = script.text().await.unwrap();
    assert!(script.starts_with("#!ipxe"), "{script}");
    // The advertised base is the bound port, not the configured 0.
    assert!(script.contains(&format!("kernel {base}/")), "{script}");

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("serve_bound ends once its token is cancelled")
        .unwrap()
        .unwrap();
    // Every store was closed: the inventory opens again and holds the machine.
    let inv = provisioner::store::RedbInventory::open(&inventory_path).unwrap();
    let m = inv
        .get(BIOS_MAC.parse().unwrap())
        .unwrap()
        .expect("the /ipxe request was recorded");
    assert_eq!(m.mac, BIOS_MAC.parse().unwrap());
}
