//! Pool protection in `full` mode: the pool policy, the offer rate for unknown
//! MACs, and allocation on an exhausted pool without a scan.

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::super::classify::classify;
use super::super::full::{Asker, FullConfig, FullServer, Outcome, PoolGuard, PoolPolicy};
use super::super::lease::{Lease, LeaseError, LeaseStore, MemLeases};
use super::super::v4::{Message, MessageType};
use super::{Req, pxe, responder};
use crate::model::MacAddr;

const NOW: i64 = 1_790_000_000;

fn cfg(last: u8, guard: PoolGuard) -> FullConfig {
    FullConfig {
        subnet: "10.9.0.0/24".parse().unwrap(),
        pool: Some((Ipv4Addr::new(10, 9, 0, 100), Ipv4Addr::new(10, 9, 0, last))),
        router: None,
        dns: vec![],
        domain: None,
        lease_secs: 600,
        reservations: Default::default(),
        guard,
    }
}

fn with_mac(req: &Req, n: u32) -> Message {
    let mut m = req.wire();
    let b = n.to_be_bytes();
    m.set_chaddr(&[0x52, 0x54, b[0], b[1], b[2], b[3]]);
    m
}

fn send(s: &FullServer, store: &dyn LeaseStore, m: &Message, known: bool, now: i64) -> Outcome {
    let c = classify(m).unwrap();
    s.handle(store, m, Asker { client: &c, known }, &responder(), None, now)
        .unwrap()
}

/// DISCOVER then REQUEST of the offered address; the ACKed address, if any.
fn dora(
    s: &FullServer,
    store: &dyn LeaseStore,
    req: &Req,
    n: u32,
    known: bool,
    now: i64,
) -> Option<Ipv4Addr> {
    let Outcome::Reply { msg, .. } = send(s, store, &with_mac(req, n), known, now) else {
        return None;
    };
    let r = Req {
        t: Some(MessageType::Request),
        server_id: Some(responder().server_id),
        requested: Some(msg.yiaddr()),
        ..req.clone()
    };
    match send(s, store, &with_mac(&r, n), known, now) {
        Outcome::Reply { msg, lease: Some(_) } => Some(msg.yiaddr()),
        _ => None,
    }
}

fn guard(policy: PoolPolicy) -> PoolGuard {
    PoolGuard {
        policy,
        ..PoolGuard::open()
    }
}

#[test]
fn boot_clients_policy_serves_boot_clients_and_known_machines_only() {
    let s = FullServer::new(cfg(110, guard(PoolPolicy::BootClients)));
    let store = MemLeases::new();
    let plain = Req::default();
    assert_eq!(
        send(&s, &store, &with_mac(&plain, 1), false, NOW),
        Outcome::Silent("pool_policy"),
        "a plain unknown client gets no pool address"
    );
    // Nor by asking for one directly (INIT-REBOOT style).
    let direct = Req {
        t: Some(MessageType::Request),
        requested: Some(Ipv4Addr::new(10, 9, 0, 100)),
        ..Req::default()
    };
    assert_eq!(
        send(&s, &store, &with_mac(&direct, 1), false, NOW),
        Outcome::Silent("pool_policy")
    );
    assert!(dora(&s, &store, &pxe(7), 2, false, NOW).is_some(), "PXE client");
    assert!(
        dora(&s, &store, &plain, 3, true, NOW).is_some(),
        "machine in the inventory"
    );
    // A plain client holding a lease (an installed OS) renews whatever the policy.
    let leased = Lease {
        mac: MacAddr([0x52, 0x54, 0, 0, 0, 4]),
        ip: Ipv4Addr::new(10, 9, 0, 109),
        expires: NOW + 100,
        hostname: None,
        state: super::super::lease::LeaseState::Active,
    };
    store.put(&leased).unwrap();
    assert_eq!(dora(&s, &store, &plain, 4, false, NOW), Some(leased.ip));
}

#[test]
fn known_policy_serves_the_inventory_only_and_any_serves_everyone() {
    let known = FullServer::new(cfg(110, guard(PoolPolicy::Known)));
    let store = MemLeases::new();
    assert!(dora(&known, &store, &pxe(7), 1, false, NOW).is_none());
    assert!(dora(&known, &store, &pxe(7), 2, true, NOW).is_some());
    let any = FullServer::new(cfg(110, guard(PoolPolicy::Any)));
    assert!(dora(&any, &MemLeases::new(), &Req::default(), 3, false, NOW).is_some());
}

#[test]
fn offers_to_unknown_macs_are_rate_limited_and_known_ones_are_not() {
    let s = FullServer::new(cfg(
        200,
        PoolGuard {
            policy: PoolPolicy::BootClients,
            unknown_offer_rate: 2,
            unknown_offer_burst: 3,
        },
    ));
    let store = MemLeases::new();
    let offers = |from: u32, known: bool, now: i64| {
        (from..from + 10)
            .filter(|n| {
                matches!(
                    send(&s, &store, &with_mac(&pxe(7), *n), known, now),
                    Outcome::Reply { .. }
                )
            })
            .count()
    };
    assert_eq!(offers(0, false, NOW), 3, "the burst");
    assert_eq!(offers(100, false, NOW + 1), 2, "then 2 a second");
    assert_eq!(
        offers(200, true, NOW + 1),
        10,
        "machines in the inventory are not limited"
    );
}

/// Counts store lookups, to show an exhausted pool costs no scan.
#[derive(Debug, Default)]
struct Counting {
    inner: MemLeases,
    lookups: AtomicUsize,
}

impl LeaseStore for Counting {
    fn by_mac(&self, mac: MacAddr) -> Result<Option<Lease>, LeaseError> {
        self.lookups.fetch_add(1, Ordering::Relaxed);
        self.inner.by_mac(mac)
    }
    fn by_ip(&self, ip: Ipv4Addr) -> Result<Option<Lease>, LeaseError> {
        self.lookups.fetch_add(1, Ordering::Relaxed);
        self.inner.by_ip(ip)
    }
    fn put(&self, lease: &Lease) -> Result<(), LeaseError> {
        self.inner.put(lease)
    }
    fn remove(&self, mac: MacAddr) -> Result<Option<Lease>, LeaseError> {
        self.inner.remove(mac)
    }
    fn list(&self) -> Result<Vec<Lease>, LeaseError> {
        self.inner.list()
    }
}

#[test]
fn an_exhausted_pool_answers_without_scanning_it() {
    // 901 addresses, all leased; then DISCOVERs from new MACs.
    let s = FullServer::new(cfg(100, PoolGuard::open()));
    let big = FullServer::new(FullConfig {
        pool: Some((Ipv4Addr::new(10, 9, 0, 100), Ipv4Addr::new(10, 9, 3, 232))),
        subnet: "10.9.0.0/22".parse().unwrap(),
        ..s.config().clone()
    });
    let store = Counting::default();
    let leased = (0..901)
        .filter(|n| dora(&big, &store, &pxe(7), *n, false, NOW).is_some())
        .count();
    assert_eq!(leased, 901, "every pool address leased");
    // A fresh DISCOVER finds the pool exhausted with a handful of lookups (its own
    // lease, its offer), not one per address.
    for n in 5_000..5_100 {
        store.lookups.store(0, Ordering::Relaxed);
        assert_eq!(
            send(&big, &store, &with_mac(&pxe(7), n), false, NOW + 1),
            Outcome::Silent("no_address")
        );
        let lookups = store.lookups.load(Ordering::Relaxed);
        assert!(
            lookups <= 3,
            "{lookups} store lookups for a DISCOVER on an exhausted pool"
        );
    }
    // Once the leases end, addresses come back.
    assert!(dora(&big, &store, &pxe(7), 9_999, false, NOW + 601).is_some());
}
