//! The production seams of the k0s workflow: admin kubeconfig custody and renewal,
//! and finding the controller machine in the inventory.

use std::collections::BTreeMap;
use std::sync::Arc;

use provisioner_core::catalog::{Catalog, ConfigKind, Group, Profile};
use provisioner_core::inventory::{Inventory, MemInventory};
use provisioner_core::k0s::progress::Phase;
use provisioner_core::model::{Event, MacAddr, Machine, TimelineEvent};
use time::{Duration, OffsetDateTime};

use super::io::{InventoryController, MintedKubeconfig};
use super::{AdminKubeconfig, ControllerPhase};
use crate::pki::k0s as pki;
use provisioner_core::cluster::{KubeconfigStore, MemKubeconfigs};
use provisioner_core::k0s::store::{K0sSecretStore, MemSecretStore};

fn minted(url: &str, secrets: Arc<MemSecretStore>, custody: Arc<MemKubeconfigs>) -> MintedKubeconfig {
    MintedKubeconfig {
        cluster: "beelink".into(),
        api_url: url.into(),
        secrets,
        custody,
    }
}

#[test]
fn the_admin_kubeconfig_is_kept_and_renewed_before_expiry() {
    let now = OffsetDateTime::now_utc();
    let s = pki::generate("beelink", ["w1"], now).unwrap();
    let secrets = Arc::new(MemSecretStore::default());
    let custody = Arc::new(MemKubeconfigs::default());
    let url = "https://10.0.40.11:6443";
    let m = minted(url, secrets.clone(), custody.clone());
    assert!(m.get().unwrap_err().to_string().contains("no k0s secrets"));
    secrets.put("beelink", &s).unwrap();

    let first = m.get().unwrap();
    let text = String::from_utf8(first.clone()).unwrap();
    assert!(
        text.contains(url) && text.contains("client-certificate-data"),
        "{text}"
    );
    assert_eq!(custody.get("beelink").unwrap().as_deref(), Some(first.as_slice()));
    assert_eq!(m.get().unwrap(), first, "a valid stored kubeconfig is reused");

    // Another server address: minted again.
    let moved = minted("https://10.0.40.99:6443", secrets.clone(), custody.clone());
    let other = moved.get().unwrap();
    assert_ne!(other, first);
    assert!(String::from_utf8_lossy(&other).contains("10.0.40.99"));

    // A certificate 5 days from expiry (minted 25 days ago, 30-day lifetime): renewed.
    let old = pki::admin_kubeconfig("beelink", url, &s, now - Duration::days(25))
        .unwrap()
        .to_yaml();
    custody.put("beelink", old.as_bytes()).unwrap();
    let renewed = m.get().unwrap();
    assert_ne!(renewed, old.as_bytes());
    assert_eq!(custody.get("beelink").unwrap().unwrap(), renewed);
    // Garbage in custody is replaced, not trusted.
    custody.put("beelink", b"not yaml: [").unwrap();
    assert!(String::from_utf8_lossy(&m.get().unwrap()).contains(url));
}

fn ev(event: Event) -> TimelineEvent {
    event.at(OffsetDateTime::now_utc())
}

/// The fetch of a Flatcar stage-1 Ignition (the k0s `Stage1Served` signal).
fn stage1() -> Event {
    Event::ConfigServed {
        bytes: 1234,
        config: provisioner_core::catalog::ConfigKind::Flatcar,
    }
}

fn catalog() -> Catalog {
    let profile = |id: &str, cluster: &str| Profile {
        id: id.into(),
        description: String::new(),
        image: "flatcar".into(),
        args: Vec::new(),
        config: ConfigKind::Flatcar,
        cluster: Some(cluster.into()),
        admission: None,
        device_flow: None,
        role: None,
    };
    let group = |id: &str, profile: &str, mac: &str, host: &str| Group {
        id: id.into(),
        description: String::new(),
        profile: profile.into(),
        selector: BTreeMap::from([("mac".to_string(), mac.to_string())]),
        metadata: BTreeMap::from([("hostname".to_string(), host.to_string())]),
    };
    Catalog {
        profiles: BTreeMap::from([
            ("k0s".to_string(), profile("k0s", "beelink")),
            ("lab".to_string(), profile("lab", "other")),
        ]),
        groups: BTreeMap::from([
            (
                "b1".to_string(),
                group("b1", "k0s", "52:54:00:00:02:01", "beelink-1"),
            ),
            (
                "b2".to_string(),
                group("b2", "k0s", "52:54:00:00:02:02", "beelink-2"),
            ),
            (
                "o1".to_string(),
                group("o1", "lab", "52:54:00:00:02:03", "beelink-1"),
            ),
        ]),
        ..Catalog::default()
    }
}

#[test]
fn the_controller_is_found_by_mac_or_by_its_group_hostname() {
    let inv = Arc::new(MemInventory::new());
    let now = OffsetDateTime::now_utc();
    let mac = |s: &str| s.parse::<MacAddr>().unwrap();
    let stage1 = ev(stage1());
    for (m, events) in [
        // The controller: stage 1 served, then disk installed.
        (
            "52:54:00:00:02:01",
            vec![stage1.clone(), ev(Event::DiskInstalled)],
        ),
        // A worker and another cluster's "beelink-1", both further along: ignored.
        (
            "52:54:00:00:02:02",
            vec![stage1.clone(), ev(Event::DiskInstalled), ev(Event::K0sInstalled)],
        ),
        (
            "52:54:00:00:02:03",
            vec![stage1.clone(), ev(Event::DiskInstalled), ev(Event::K0sInstalled)],
        ),
    ] {
        inv.put(&Machine::discovered(mac(m), now)).unwrap();
        inv.append(mac(m), &events).unwrap();
    }
    let by_group = InventoryController {
        inventory: inv.clone(),
        catalog: Arc::new(catalog()),
        cluster: "beelink".into(),
        hostname: "beelink-1".into(),
        mac: None,
    };
    assert_eq!(by_group.phase().unwrap(), Phase::DiskInstalled);
    let by_mac = InventoryController {
        mac: Some(mac("52:54:00:00:02:01")),
        catalog: Arc::default(),
        ..by_group.clone()
    };
    assert_eq!(by_mac.phase().unwrap(), Phase::DiskInstalled);
    inv.append(mac("52:54:00:00:02:01"), &[ev(Event::K0sInstalled)])
        .unwrap();
    assert_eq!(by_group.phase().unwrap(), Phase::K0sInstalled);
    assert_eq!(by_mac.phase().unwrap(), Phase::K0sInstalled);
    // Not booted yet.
    let absent = InventoryController {
        mac: Some(mac("52:54:00:00:02:09")),
        ..by_mac
    };
    assert_eq!(absent.phase().unwrap(), Phase::Pending);
}
