//! Property test: any datagram goes through decode → classify → boot choice →
//! proxy reply, full-mode engine and encode without a panic, in bounded time.
//! Inputs are valid requests with mutated bytes, truncations and random option
//! TLVs with lying lengths (the class of input behind dhcproto#77).

use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::super::bootfile::{BootFiles, choose};
use super::super::classify::classify;
use super::super::full::FullServer;
use super::super::lease::MemLeases;
use super::super::reply::{Port, destination, proxy};
use super::super::wire;
use super::{BASE, Req, pxe, responder};

fn pipeline(bytes: &[u8], full: &FullServer, store: &MemLeases) {
    let Ok(msg) = wire::decode(bytes) else { return };
    let Ok(client) = classify(&msg) else { return };
    let target = choose(&client, &BootFiles::default(), BASE, None).ok();
    if let Some(t) = &target {
        for port in [Port::Dhcp, Port::PxeBootServer] {
            if let Some(mut r) = proxy(&msg, &client, t, &responder(), port) {
                let _ = destination(&msg, &mut r);
                let _ = wire::encode(&r);
            }
        }
    }
    if let Ok(super::super::full::Outcome::Reply { mut msg, .. }) =
        full.handle(store, &msg, &client, &responder(), target.as_ref(), 1_790_000_000)
    {
        let req = wire::decode(bytes).ok();
        if let Some(req) = req {
            let _ = destination(&req, &mut msg);
        }
        let _ = wire::encode(&msg);
    }
}

fn seeds() -> Vec<Vec<u8>> {
    let reqs = [
        pxe(0),
        pxe(7),
        Req {
            user_class: Some(b"iPXE"),
            ..pxe(7)
        },
        Req {
            arch: Some(16),
            vendor: Some(b"HTTPClient"),
            ..Req::default()
        },
        Req {
            t: Some(super::MessageType::Request),
            requested: Some(std::net::Ipv4Addr::new(10, 9, 0, 100)),
            ..Req::default()
        },
    ];
    reqs.iter().map(|r| wire::encode(&r.msg()).unwrap()).collect()
}

fn full() -> FullServer {
    FullServer::new(super::super::full::FullConfig {
        subnet: "10.9.0.0/24".parse().unwrap(),
        pool: Some((
            std::net::Ipv4Addr::new(10, 9, 0, 100),
            std::net::Ipv4Addr::new(10, 9, 0, 200),
        )),
        router: None,
        dns: vec![],
        domain: None,
        lease_secs: 60,
        reservations: Default::default(),
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, max_shrink_iters: 200, ..ProptestConfig::default() })]

    #[test]
    fn mutated_requests_never_panic(
        seed in 0usize..5,
        flips in proptest::collection::vec((0usize..600, any::<u8>()), 0..12),
        cut in proptest::option::of(0usize..600),
        tlvs in proptest::collection::vec((any::<u8>(), any::<u8>(), proptest::collection::vec(any::<u8>(), 0..24)), 0..6),
    ) {
        let mut b = seeds()[seed].clone();
        // Splice random options (code, claimed length, actual bytes) before END.
        if b.last() == Some(&255) { b.pop(); }
        for (code, len, data) in &tlvs {
            b.push(*code);
            b.push(*len);
            b.extend_from_slice(data);
        }
        b.push(255);
        for (at, v) in &flips {
            if let Some(x) = b.get_mut(*at) { *x = *v; }
        }
        if let Some(c) = cut { b.truncate(c.max(1)); }
        let started = Instant::now();
        pipeline(&b, &full(), &MemLeases::new());
        prop_assert!(started.elapsed() < Duration::from_millis(500), "one packet took {:?}", started.elapsed());
    }

    #[test]
    fn random_bytes_never_panic(mut b in proptest::collection::vec(any::<u8>(), 0..700)) {
        if b.len() >= 240 { b[236..240].copy_from_slice(&wire::MAGIC_COOKIE); }
        pipeline(&b, &full(), &MemLeases::new());
    }
}
