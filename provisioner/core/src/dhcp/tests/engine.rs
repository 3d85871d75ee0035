//! The whole answer: reply, destination and the timeline events, per setting.

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddrV4};

use super::super::Personality;
use super::super::bootfile::BootFiles;
use super::super::engine::{Answer, Ctx, Request, answer};
use super::super::full::{FullConfig, FullServer};
use super::super::lease::{LeaseStore, MemLeases};
use super::super::reply::Port;
use super::super::v4::MessageType;
use super::super::wire;
use super::{BASE, MAC, Req, pxe, responder};
use crate::boot::BootDecision;
use crate::model::{MacAddr, Machine};
use crate::timeline::Event;

fn local() -> BootDecision {
    BootDecision::LocalBoot {
        reason: "installed".into(),
    }
}

fn run(
    req: &Req,
    personality: Personality,
    port: Port,
    full: Option<(&FullServer, &dyn LeaseStore)>,
    http_boot_only: &HashSet<MacAddr>,
    machine: Option<&Machine>,
    decision: Option<&BootDecision>,
) -> Answer {
    let bytes = wire::encode(&req.msg()).unwrap();
    let req = Request::parse(&bytes).unwrap();
    let files = BootFiles::default();
    let ctx = Ctx {
        personality,
        port,
        responder: responder(),
        files: &files,
        base: BASE,
        http_boot_only,
        full,
        source: SocketAddrV4::new(Ipv4Addr::new(10, 9, 0, 7), 4011),
    };
    answer(&req, &ctx, machine, decision, 1_790_000_000)
}

fn details(a: &Answer) -> Vec<String> {
    a.note
        .as_ref()
        .map(|n| n.events.iter().map(ToString::to_string).collect())
        .unwrap_or_default()
}

#[test]
fn proxy_offer_is_broadcast_on_the_ingress_interface_and_recorded() {
    let none = HashSet::new();
    let a = run(
        &pxe(7),
        Personality::Proxy,
        Port::Dhcp,
        None,
        &none,
        None,
        Some(&local()),
    );
    let r = a.reply.as_ref().expect("offer");
    assert_eq!(r.msg_type, MessageType::Offer);
    assert_eq!(
        (r.to, r.on_ingress),
        (SocketAddrV4::new(Ipv4Addr::BROADCAST, 68), true)
    );
    assert_eq!(r.from, responder().server_id);
    let n = a
        .note
        .as_ref()
        .expect("a boot client the booter answers is recorded");
    assert!(n.create);
    assert_eq!(
        details(&a),
        [
            "DISCOVER on :67 (proxy): pxe, arch 7",
            "OFFER boot snponly.efi to 255.255.255.255:68"
        ]
    );
}

#[test]
fn pxe_boot_server_answers_the_source() {
    let none = HashSet::new();
    let req = Req {
        t: Some(MessageType::Request),
        ..pxe(7)
    };
    let a = run(
        &req,
        Personality::Proxy,
        Port::PxeBootServer,
        None,
        &none,
        None,
        Some(&local()),
    );
    let r = a.reply.expect("ack on 4011");
    assert_eq!(
        (r.msg_type, r.to, r.on_ingress),
        (
            MessageType::Ack,
            SocketAddrV4::new(Ipv4Addr::new(10, 9, 0, 7), 4011),
            false
        )
    );
}

#[test]
fn strangers_the_policy_ignores_cost_nothing() {
    let none = HashSet::new();
    let ignore = BootDecision::Unknown {
        reason: "no group".into(),
        record: false,
    };
    let a = run(
        &pxe(7),
        Personality::Proxy,
        Port::Dhcp,
        None,
        &none,
        None,
        Some(&ignore),
    );
    assert!(a.reply.is_none() && a.note.is_none());
    assert_eq!(a.dropped, Some("proxy_no_answer"));
    // A plain client (no decision asked) neither.
    let plain = Req::default();
    let a = run(&plain, Personality::Proxy, Port::Dhcp, None, &none, None, None);
    assert!(a.reply.is_none() && a.note.is_none());
    assert_eq!(a.dropped, Some("not_boot_client"));
}

#[test]
fn http_boot_only_withholds_pxe_but_records() {
    let only: HashSet<MacAddr> = [MacAddr(MAC)].into();
    let a = run(
        &pxe(7),
        Personality::Proxy,
        Port::Dhcp,
        None,
        &only,
        None,
        Some(&local()),
    );
    assert!(a.reply.is_none());
    assert_eq!(details(&a), ["DISCOVER on :67 (proxy): pxe, arch 7"]);
}

#[test]
fn full_mode_commits_the_lease_before_the_ack_it_returns() {
    let none = HashSet::new();
    let full = FullServer::new(FullConfig {
        subnet: "10.9.0.0/24".parse().unwrap(),
        pool: Some((Ipv4Addr::new(10, 9, 0, 100), Ipv4Addr::new(10, 9, 0, 100))),
        router: None,
        dns: vec![],
        domain: None,
        lease_secs: 600,
        reservations: Default::default(),
        guard: Default::default(),
    });
    let leases = MemLeases::new();
    let machine = Machine::discovered(MacAddr(MAC), time::OffsetDateTime::UNIX_EPOCH);
    let engine = Some((&full, &leases as &dyn LeaseStore));
    let offer = run(
        &pxe(7),
        Personality::Full,
        Port::Dhcp,
        engine,
        &none,
        Some(&machine),
        Some(&local()),
    );
    assert_eq!(offer.reply.unwrap().msg_type, MessageType::Offer);
    let request = Req {
        t: Some(MessageType::Request),
        requested: Some(Ipv4Addr::new(10, 9, 0, 100)),
        server_id: Some(responder().server_id),
        ..pxe(7)
    };
    let ack = run(
        &request,
        Personality::Full,
        Port::Dhcp,
        engine,
        &none,
        Some(&machine),
        Some(&local()),
    );
    assert_eq!(ack.reply.as_ref().unwrap().msg_type, MessageType::Ack);
    let lease = leases
        .by_mac(MacAddr(MAC))
        .unwrap()
        .expect("the lease is stored when the ACK exists");
    assert_eq!(lease.ip, Ipv4Addr::new(10, 9, 0, 100));
    let last = ack.note.unwrap().events.pop().unwrap();
    assert!(
        matches!(&last, Event::DhcpSent(s) if s.address == Some(lease.ip)),
        "{last:?}"
    );
}
