//! Every timeline event reaches `/api/v1/events`, whoever writes it (issue 14's SSE
//! bug: DHCP notes and install marks were committed but never published). The real
//! binary serves proxyDHCP on loopback; a stream is open while a firmware PXE
//! DISCOVER (to the DHCP port) and REQUEST (to the PXE boot server port) arrive
//! over UDP, and while the machine reports `installed` over HTTP; and while the
//! cluster supervisor marks Talos nodes installed as they answer over mTLS.

use crate::common;

use common::daemon::{Daemon, http, loopback_boot, write_config};
use common::live::{Stream, client_socket, is, proxy_dhcp, pxe_request, send};
use common::serve_rig::Rig;
use common::{BIOS_MAC, EFI_MAC};
use provisioner_core::dhcp::v4::MessageType;
use provisioner_core::dhcp::wire;

fn token_after(script: &str, marker: &str) -> String {
    script
        .split(marker)
        .nth(1)
        .unwrap()
        .split(['/', ' ', '\n'])
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn dhcp_and_installed_events_stream_on_the_api() {
    let dir = tempfile::tempdir().unwrap();
    common::write_catalog(dir.path());
    let cfg = loopback_boot(&write_config(dir.path(), dir.path()));
    let ports = proxy_dhcp(&cfg);
    let d = Daemon::start(&cfg);
    let reader = d.token("read-only");
    let mut events = Stream::open(&d, ("authorization", format!("Bearer {reader}")));

    // DISCOVER on the DHCP port: seen, and the proxy's OFFER (a broadcast to :68).
    let client = client_socket();
    let discover = pxe_request(EFI_MAC, MessageType::Discover);
    send(&client, ports.dhcp, &discover);
    let seen = events.until(
        "dhcp_seen",
        || send(&client, ports.dhcp, &discover),
        |v| is(v, EFI_MAC, "dhcp_seen", "DISCOVER on :67 (proxy): pxe, arch 7"),
    );
    assert_eq!(seen["event"]["type"], "dhcp_seen", "{seen}");
    events.until(
        "dhcp_sent OFFER",
        || (),
        |v| {
            is(
                v,
                EFI_MAC,
                "dhcp_sent",
                "OFFER boot snponly.efi to 255.255.255.255:68",
            )
        },
    );

    // REQUEST on the PXE boot server port: the ACK comes back to this socket, and
    // the event names it.
    let request = pxe_request(EFI_MAC, MessageType::Request);
    send(&client, ports.pxe, &request);
    let me = client.local_addr().unwrap().to_string();
    let sent = events.until(
        "dhcp_sent ACK",
        || send(&client, ports.pxe, &request),
        |v| is(v, EFI_MAC, "dhcp_sent", &format!("ACK boot snponly.efi to {me}")),
    );
    assert_eq!(sent["event"]["type"], "dhcp_sent", "{sent}");
    let mut buf = [0u8; 1500];
    let (n, _) = client.recv_from(&mut buf).expect("the ACK reached the client");
    let ack = wire::decode(&buf[..n]).unwrap();
    assert_eq!(ack.opts().msg_type(), Some(MessageType::Ack));

    // The machine boots its script and reports the install.
    let efi = "/ipxe?mac=52-54-00-00-00-02&arch=x86_64&platform=efi";
    let (st, script) = http(d.http, "GET", efi).unwrap();
    assert_eq!(st, 200);
    let callback = token_after(&String::from_utf8(script).unwrap(), "/callback/");
    let (st, _) = http(d.http, "POST", &format!("/callback/{callback}/installed")).unwrap();
    assert_eq!(st, 200);
    let installed = events.until(
        "installed",
        || (),
        |v| is(v, EFI_MAC, "installed", "install reported by the machine"),
    );
    assert_eq!(installed["event"]["type"], "installed", "{installed}");
    events.until(
        "state_changed to Installed",
        || (),
        |v| {
            v["mac"] == EFI_MAC
                && v["kind"] == "state_changed"
                && v["detail"].as_str().unwrap_or("").contains("Installed")
        },
    );
    // Secrets never ride on the stream.
    assert!(!events.text.contains(&callback), "a callback token was streamed");
}

/// The supervisor's marks: Talos nodes (fake apids that start answering only once
/// the stream is open) answer `Version` over mTLS, and their machines' `installed`
/// events reach the stream.
#[test]
fn talos_installed_marks_stream_on_the_api() {
    let Some(rig) = Rig::booting("{ wait_nodes_secs: 120, hand_off_secs: 120 }") else {
        return;
    };
    {
        // Two of the three nodes are machines the inventory knows (they netbooted).
        use provisioner_core::inventory::Inventory;
        let inv =
            provisioner::store::RedbInventory::open(&rig.tmp.path().join("state/inventory.redb")).unwrap();
        for mac in [BIOS_MAC, EFI_MAC] {
            let m = provisioner_core::model::Machine::discovered(
                mac.parse().unwrap(),
                time::OffsetDateTime::now_utc(),
            );
            inv.put(&m).unwrap();
        }
    }
    let d = Daemon::start(&rig.cfg);
    let reader = d.token("read-only");
    let mut events = Stream::open(&d, ("authorization", format!("Bearer {reader}")));
    rig.lab.open();
    for (mac, ip) in [(BIOS_MAC, "127.0.0.11"), (EFI_MAC, "127.0.0.12")] {
        let v = events.until(
            "a Talos installed mark",
            || (),
            |v| {
                is(
                    v,
                    mac,
                    "installed",
                    &format!("{ip} answered Talos Version over mTLS"),
                )
            },
        );
        assert_eq!(v["event"]["type"], "installed", "{v}");
        events.until(
            "state_changed to Installed",
            || (),
            |v| {
                v["mac"] == mac
                    && v["kind"] == "state_changed"
                    && v["detail"].as_str().unwrap_or("").ends_with("Installed")
            },
        );
    }
}
