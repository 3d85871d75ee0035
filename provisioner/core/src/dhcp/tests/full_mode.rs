//! The `full` personality over the in-memory lease store.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use super::super::bootfile::BootTarget;
use super::super::classify::classify;
use super::super::full::{Asker, FullConfig, FullServer, Outcome, PoolGuard, Reservation, Subnet};
use super::super::lease::{LeaseState, LeaseStore, MemLeases};
use super::super::v4::{DhcpOption, Message, MessageType, OptionCode};
use super::{MAC, Req, pxe, responder};
use crate::model::MacAddr;

const NOW: i64 = 1_790_000_000;

fn ip(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 9, 0, n)
}

fn cfg(pool: Option<(u8, u8)>) -> FullConfig {
    FullConfig {
        subnet: "10.9.0.0/24".parse().unwrap(),
        pool: pool.map(|(a, b)| (ip(a), ip(b))),
        router: Some(ip(1)),
        dns: vec![ip(1)],
        domain: Some("lab".into()),
        lease_secs: 600,
        reservations: BTreeMap::new(),
        guard: PoolGuard::open(),
    }
}

fn run(s: &FullServer, store: &dyn LeaseStore, req: &Req, boot: Option<&BootTarget>, now: i64) -> Outcome {
    let m = req.wire();
    let c = classify(&m).unwrap();
    s.handle(
        store,
        &m,
        Asker {
            client: &c,
            known: false,
        },
        &responder(),
        boot,
        now,
    )
    .unwrap()
}

fn reply(o: Outcome) -> Message {
    match o {
        Outcome::Reply { msg, .. } => *msg,
        other => panic!("expected a reply, got {other:?}"),
    }
}

fn other_mac(req: &Req, last: u8) -> Message {
    let mut m = req.wire();
    let mut mac = MAC;
    mac[5] = last;
    m.set_chaddr(&mac);
    m
}

#[test]
fn dora_renew_release_and_affinity() {
    let s = FullServer::new(cfg(Some((100, 110))));
    let store = MemLeases::new();
    let offer = reply(run(&s, &store, &Req::default(), None, NOW));
    assert_eq!(offer.opts().msg_type(), Some(MessageType::Offer));
    let addr = offer.yiaddr();
    assert_eq!(addr, ip(100), "first pool address");
    assert_eq!(
        offer.opts().get(OptionCode::SubnetMask),
        Some(&DhcpOption::SubnetMask(Ipv4Addr::new(255, 255, 255, 0)))
    );
    assert_eq!(
        offer.opts().get(OptionCode::AddressLeaseTime),
        Some(&DhcpOption::AddressLeaseTime(600))
    );
    assert_eq!(
        offer.opts().get(OptionCode::Renewal),
        Some(&DhcpOption::Renewal(300))
    );
    assert!(
        store.by_mac(MacAddr(MAC)).unwrap().is_none(),
        "an OFFER is not a lease"
    );

    let request = Req {
        t: Some(MessageType::Request),
        server_id: Some(responder().server_id),
        requested: Some(addr),
        ..Req::default()
    };
    let o = run(&s, &store, &request, None, NOW);
    let Outcome::Reply {
        msg,
        lease: Some(lease),
    } = o
    else {
        panic!("ack with lease expected: {o:?}")
    };
    assert_eq!(msg.opts().msg_type(), Some(MessageType::Ack));
    assert_eq!((msg.yiaddr(), lease.ip, lease.expires), (addr, addr, NOW + 600));
    assert_eq!(
        store.by_mac(MacAddr(MAC)).unwrap(),
        Some(lease),
        "lease stored before the ACK"
    );

    // RENEWING: unicast REQUEST with ciaddr, no option 50/54.
    let renew = Req {
        t: Some(MessageType::Request),
        ciaddr: Some(addr),
        ..Req::default()
    };
    let ack = reply(run(&s, &store, &renew, None, NOW + 300));
    assert_eq!(
        (ack.opts().msg_type(), ack.yiaddr(), ack.ciaddr()),
        (Some(MessageType::Ack), addr, addr)
    );
    assert_eq!(
        store.by_mac(MacAddr(MAC)).unwrap().unwrap().expires,
        NOW + 900,
        "renew extends"
    );

    let release = Req {
        t: Some(MessageType::Release),
        ciaddr: Some(addr),
        server_id: Some(responder().server_id),
        ..Req::default()
    };
    assert!(matches!(
        run(&s, &store, &release, None, NOW + 400),
        Outcome::Recorded(_)
    ));
    assert_eq!(
        store.by_mac(MacAddr(MAC)).unwrap().unwrap().state,
        LeaseState::Released
    );

    // The address is free for others now, but this client gets it back first.
    let again = reply(run(&s, &store, &Req::default(), None, NOW + 500));
    assert_eq!(again.yiaddr(), addr, "affinity after release");
}

#[test]
fn distinct_offers_for_concurrent_discovers_and_exhaustion() {
    let s = FullServer::new(cfg(Some((100, 102))));
    let store = MemLeases::new();
    let c = |m: &Message| classify(m).unwrap();
    let mut got = Vec::new();
    for last in 1..=3u8 {
        let m = other_mac(&Req::default(), last);
        let o = s
            .handle(
                &store,
                &m,
                Asker {
                    client: &c(&m),
                    known: false,
                },
                &responder(),
                None,
                NOW,
            )
            .unwrap();
        got.push(reply(o).yiaddr());
    }
    got.sort();
    assert_eq!(
        got,
        vec![ip(100), ip(101), ip(102)],
        "three clients, three addresses"
    );
    let m = other_mac(&Req::default(), 4);
    assert_eq!(
        s.handle(
            &store,
            &m,
            Asker {
                client: &c(&m),
                known: false
            },
            &responder(),
            None,
            NOW
        )
        .unwrap(),
        Outcome::Silent("no_address")
    );
    // Offers expire: after the hold, the fourth client gets one.
    let later = s
        .handle(
            &store,
            &m,
            Asker {
                client: &c(&m),
                known: false,
            },
            &responder(),
            None,
            NOW + 31,
        )
        .unwrap();
    assert!(matches!(later, Outcome::Reply { .. }), "{later:?}");
}

#[test]
fn reservations_win_and_are_not_given_away() {
    let mut c = cfg(Some((100, 110)));
    c.reservations.insert(
        MacAddr(MAC),
        Reservation {
            ip: ip(50),
            hostname: Some("node-a".into()),
        },
    );
    let mut other = MAC;
    other[5] = 9;
    c.reservations.insert(
        MacAddr(other),
        Reservation {
            ip: ip(51),
            hostname: None,
        },
    );
    let s = FullServer::new(c);
    let store = MemLeases::new();
    let offer = reply(run(
        &s,
        &store,
        &Req {
            requested: Some(ip(105)),
            ..Req::default()
        },
        None,
        NOW,
    ));
    assert_eq!(offer.yiaddr(), ip(50), "reservation beats the requested address");
    assert_eq!(
        offer.opts().get(OptionCode::Hostname),
        Some(&DhcpOption::Hostname("node-a".into()))
    );
    // Asking for another MAC's reservation (INIT-REBOOT) gets a NAK.
    let steal = Req {
        t: Some(MessageType::Request),
        requested: Some(ip(51)),
        ..Req::default()
    };
    assert_eq!(
        reply(run(&s, &store, &steal, None, NOW)).opts().msg_type(),
        Some(MessageType::Nak)
    );
    // A pool client never gets a reserved address, even if it asks.
    let m = other_mac(
        &Req {
            requested: Some(ip(50)),
            ..Req::default()
        },
        7,
    );
    let o = s
        .handle(
            &store,
            &m,
            Asker {
                client: &classify(&m).unwrap(),
                known: false,
            },
            &responder(),
            None,
            NOW,
        )
        .unwrap();
    assert_eq!(reply(o).yiaddr(), ip(100));
}

#[test]
fn reservation_only_mode_ignores_strangers() {
    let s = FullServer::new(cfg(None));
    let store = MemLeases::new();
    assert_eq!(
        run(&s, &store, &Req::default(), None, NOW),
        Outcome::Silent("no_address")
    );
}

#[test]
fn naks_and_silences() {
    let s = FullServer::new(cfg(Some((100, 110))));
    let store = MemLeases::new();
    let wrong_subnet = Req {
        t: Some(MessageType::Request),
        requested: Some(Ipv4Addr::new(192, 0, 2, 7)),
        ..Req::default()
    };
    assert_eq!(
        reply(run(&s, &store, &wrong_subnet, None, NOW)).opts().msg_type(),
        Some(MessageType::Nak)
    );
    let other_server = Req {
        t: Some(MessageType::Request),
        server_id: Some(ip(254)),
        requested: Some(ip(100)),
        ..Req::default()
    };
    assert_eq!(
        run(&s, &store, &other_server, None, NOW),
        Outcome::Silent("other_server_selected")
    );
    let release_unknown = Req {
        t: Some(MessageType::Release),
        ciaddr: Some(ip(100)),
        ..Req::default()
    };
    assert_eq!(
        run(&s, &store, &release_unknown, None, NOW),
        Outcome::Silent("release_unknown_lease")
    );
}

#[test]
fn decline_takes_the_address_out_of_the_pool() {
    let s = FullServer::new(cfg(Some((100, 101))));
    let store = MemLeases::new();
    let addr = reply(run(&s, &store, &Req::default(), None, NOW)).yiaddr();
    let req = Req {
        t: Some(MessageType::Request),
        server_id: Some(responder().server_id),
        requested: Some(addr),
        ..Req::default()
    };
    reply(run(&s, &store, &req, None, NOW));
    let decline = Req {
        t: Some(MessageType::Decline),
        server_id: Some(responder().server_id),
        requested: Some(addr),
        ..Req::default()
    };
    assert!(
        matches!(run(&s, &store, &decline, None, NOW), Outcome::Recorded(l) if l.state == LeaseState::Declined)
    );
    let next = reply(run(&s, &store, &Req::default(), None, NOW + 1)).yiaddr();
    assert_ne!(next, addr, "declined address not offered again");
}

#[test]
fn inform_gets_options_but_no_lease() {
    let s = FullServer::new(cfg(Some((100, 110))));
    let store = MemLeases::new();
    let inform = Req {
        t: Some(MessageType::Inform),
        ciaddr: Some(ip(7)),
        ..Req::default()
    };
    let ack = reply(run(&s, &store, &inform, None, NOW));
    assert_eq!(ack.opts().msg_type(), Some(MessageType::Ack));
    assert_eq!((ack.yiaddr(), ack.ciaddr()), (Ipv4Addr::UNSPECIFIED, ip(7)));
    assert!(
        ack.opts().get(OptionCode::AddressLeaseTime).is_none(),
        "RFC 2131 §4.3.5: no lease time"
    );
    assert!(store.list().unwrap().is_empty());
}

#[test]
fn full_mode_boot_answer_is_plain_dhcp_with_a_file() {
    let s = FullServer::new(cfg(Some((100, 110))));
    let store = MemLeases::new();
    let t = BootTarget::Tftp("snponly.efi".into());
    let offer = reply(run(&s, &store, &pxe(7), Some(&t), NOW));
    assert_eq!(
        offer.opts().get(OptionCode::BootfileName),
        Some(&DhcpOption::BootfileName(b"snponly.efi".to_vec()))
    );
    assert_eq!(offer.siaddr(), responder().next_server);
    assert!(
        offer.opts().get(OptionCode::VendorExtensions).is_none(),
        "no PXE vendor options in full mode"
    );
    assert!(offer.opts().get(OptionCode::ClassIdentifier).is_none());
    let http = Req {
        arch: Some(16),
        vendor: Some(b"HTTPClient:Arch:00016"),
        ..Req::default()
    };
    let t = BootTarget::Http("http://10.9.0.1/bin/ipxe.efi".into());
    let offer = reply(run(&s, &store, &http, Some(&t), NOW));
    assert_eq!(
        offer.opts().get(OptionCode::ClassIdentifier),
        Some(&DhcpOption::ClassIdentifier(b"HTTPClient".to_vec()))
    );
}

#[test]
fn subnet_parsing() {
    let s: Subnet = "10.9.0.0/24".parse().unwrap();
    assert!(s.contains_host(ip(1)) && !s.contains_host(ip(0)) && !s.contains_host(ip(255)));
    assert_eq!(
        "10.9.0.1/24".parse::<Subnet>().unwrap_err().to_string(),
        "\"10.9.0.1/24\": host bits set (did you mean 10.9.0.0/24?)"
    );
    assert!("10.9.0.0/31".parse::<Subnet>().is_err());
    assert!("10.9.0.0".parse::<Subnet>().is_err());
}
