//! proxyDHCP replies and RFC 2131 §4.1 reply addressing.

use std::net::Ipv4Addr;

use super::super::bootfile::{BootFiles, BootTarget, choose};
use super::super::classify::classify;
use super::super::reply::{Destination, PXE_DISCOVERY_CONTROL_USE_BOOTFILE, Port, destination, proxy};
use super::super::v4::{DhcpOption, MessageType, OptionCode};
use super::super::wire;
use super::{BASE, Req, opt, pxe, responder};

#[test]
fn proxy_offer_carries_every_boot_field() {
    let guid: Vec<u8> = (0..17).collect();
    let req = Req {
        guid: Some(guid.clone()),
        ..pxe(0)
    }
    .wire();
    let c = classify(&req).unwrap();
    let target = choose(&c, &BootFiles::default(), BASE, None).unwrap();
    let offer = proxy(&req, &c, &target, &responder(), Port::Dhcp).expect("offer");
    let back = wire::decode(&wire::encode(&offer).unwrap()).unwrap();
    assert_eq!(back.opts().msg_type(), Some(MessageType::Offer));
    assert_eq!(back.xid(), 0x1234_5678);
    assert_eq!(back.yiaddr(), Ipv4Addr::UNSPECIFIED, "proxy never assigns");
    assert_eq!(back.siaddr(), responder().next_server, "siaddr = next-server");
    assert_eq!(
        wire::header_str(back.fname()).as_deref(),
        Some("undionly.kpxe"),
        "BOOTP file"
    );
    assert_eq!(
        opt(&back, OptionCode::BootfileName),
        Some(&DhcpOption::BootfileName(b"undionly.kpxe".to_vec()))
    );
    assert_eq!(
        opt(&back, OptionCode::TFTPServerName),
        Some(&DhcpOption::TFTPServerName(b"10.9.0.1".to_vec()))
    );
    assert_eq!(
        opt(&back, OptionCode::ServerIdentifier),
        Some(&DhcpOption::ServerIdentifier(responder().server_id))
    );
    assert_eq!(
        opt(&back, OptionCode::ClassIdentifier),
        Some(&DhcpOption::ClassIdentifier(b"PXEClient".to_vec()))
    );
    assert_eq!(
        opt(&back, OptionCode::ClientMachineIdentifier),
        Some(&DhcpOption::ClientMachineIdentifier(guid))
    );
    assert_eq!(
        opt(&back, OptionCode::VendorExtensions),
        Some(&DhcpOption::VendorExtensions(
            PXE_DISCOVERY_CONTROL_USE_BOOTFILE.to_vec()
        )),
        "BIOS gets discovery control 8"
    );
}

#[test]
fn proxy_uefi_offer_omits_43_so_edk2_asks_4011() {
    let req = pxe(7).wire();
    let c = classify(&req).unwrap();
    let t = choose(&c, &BootFiles::default(), BASE, None).unwrap();
    let offer = proxy(&req, &c, &t, &responder(), Port::Dhcp).unwrap();
    assert!(opt(&offer, OptionCode::VendorExtensions).is_none());
    // The REQUEST to 4011 gets an ACK with the file.
    let req4011 = Req {
        t: Some(MessageType::Request),
        ciaddr: Some(Ipv4Addr::new(10, 9, 0, 50)),
        ..pxe(7)
    }
    .wire();
    let c = classify(&req4011).unwrap();
    let ack = proxy(&req4011, &c, &t, &responder(), Port::PxeBootServer).expect("4011 ack");
    assert_eq!(ack.opts().msg_type(), Some(MessageType::Ack));
    assert_eq!(wire::header_str(ack.fname()).as_deref(), Some("snponly.efi"));
    assert_eq!(ack.yiaddr(), Ipv4Addr::UNSPECIFIED);
}

#[test]
fn proxy_http_boot_answer_says_httpclient_with_a_url() {
    let req = Req {
        arch: Some(16),
        vendor: Some(b"HTTPClient:Arch:00016:UNDI:003001"),
        ..Req::default()
    }
    .wire();
    let c = classify(&req).unwrap();
    let t = choose(&c, &BootFiles::default(), BASE, None).unwrap();
    let offer = proxy(&req, &c, &t, &responder(), Port::Dhcp).unwrap();
    assert_eq!(
        opt(&offer, OptionCode::ClassIdentifier),
        Some(&DhcpOption::ClassIdentifier(b"HTTPClient".to_vec()))
    );
    let url = format!("{BASE}/bin/snponly.efi");
    assert_eq!(
        opt(&offer, OptionCode::BootfileName),
        Some(&DhcpOption::BootfileName(url.clone().into_bytes()))
    );
    assert_eq!(wire::header_str(offer.fname()).as_deref(), Some(url.as_str()));
    assert!(
        opt(&offer, OptionCode::TFTPServerName).is_none(),
        "no TFTP for HTTP boot"
    );
}

#[test]
fn proxy_stays_silent_when_it_must() {
    let t = BootTarget::Tftp("undionly.kpxe".into());
    let cases: Vec<(&str, Req, Port)> = vec![
        ("plain client on 67", Req::default(), Port::Dhcp),
        (
            "plain client on 4011",
            Req {
                t: Some(MessageType::Request),
                ..Req::default()
            },
            Port::PxeBootServer,
        ),
        (
            "REQUEST selecting another server",
            Req {
                t: Some(MessageType::Request),
                server_id: Some(Ipv4Addr::new(10, 9, 0, 254)),
                ..pxe(0)
            },
            Port::Dhcp,
        ),
        (
            "REQUEST naming no server on 67",
            Req {
                t: Some(MessageType::Request),
                ..pxe(0)
            },
            Port::Dhcp,
        ),
        ("DISCOVER on 4011", pxe(0), Port::PxeBootServer),
        (
            "RELEASE",
            Req {
                t: Some(MessageType::Release),
                ..pxe(0)
            },
            Port::Dhcp,
        ),
    ];
    for (name, req, port) in cases {
        let m = req.wire();
        let c = classify(&m).unwrap();
        assert!(proxy(&m, &c, &t, &responder(), port).is_none(), "{name}");
    }
    let ours = Req {
        t: Some(MessageType::Request),
        server_id: Some(responder().server_id),
        ..pxe(0)
    }
    .wire();
    let c = classify(&ours).unwrap();
    assert!(
        proxy(&ours, &c, &t, &responder(), Port::Dhcp).is_some(),
        "REQUEST naming us is ACKed"
    );
}

#[test]
fn reply_addressing_follows_rfc_2131_4_1() {
    let relay = Ipv4Addr::new(10, 8, 0, 1);
    let cases: Vec<(&str, Req, MessageType, Destination)> = vec![
        (
            "relay",
            Req {
                giaddr: Some(relay),
                ..pxe(0)
            },
            MessageType::Offer,
            Destination::Relay(relay),
        ),
        (
            "relay nak",
            Req {
                giaddr: Some(relay),
                ..pxe(0)
            },
            MessageType::Nak,
            Destination::Relay(relay),
        ),
        (
            "renewing client",
            Req {
                ciaddr: Some(Ipv4Addr::new(10, 9, 0, 9)),
                ..Req::default()
            },
            MessageType::Ack,
            Destination::Unicast(Ipv4Addr::new(10, 9, 0, 9)),
        ),
        (
            "nak is broadcast",
            Req {
                ciaddr: Some(Ipv4Addr::new(10, 9, 0, 9)),
                ..Req::default()
            },
            MessageType::Nak,
            Destination::Broadcast,
        ),
        (
            "broadcast flag",
            Req {
                broadcast: true,
                ..Req::default()
            },
            MessageType::Offer,
            Destination::Broadcast,
        ),
        (
            "no address yet",
            Req::default(),
            MessageType::Offer,
            Destination::Broadcast,
        ),
    ];
    for (name, req, t, want) in cases {
        let m = req.wire();
        let c = classify(&m).unwrap();
        let mut reply = super::super::reply::skeleton(&m, &c, t, responder().server_id);
        assert_eq!(destination(&m, &mut reply), want, "{name}");
        assert_eq!(reply.giaddr(), m.giaddr(), "{name}: giaddr echoed");
        if name == "relay nak" {
            assert!(reply.flags().broadcast(), "NAK via relay sets the broadcast bit");
        }
    }
}
