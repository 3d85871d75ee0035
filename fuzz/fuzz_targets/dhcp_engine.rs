//! One datagram through the DHCP handler's path: `engine::Request::parse`, then
//! `engine::answer` in every personality and port, for a known and an unknown
//! machine and each kind of boot decision, with the full-mode engine over an
//! in-memory lease store (state carries over between inputs, as on a server).
//! Every reply must decode again and carry the type it claims.
#![no_main]

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use provisioner_core::boot::BootDecision;
use provisioner_core::dhcp::Personality;
use provisioner_core::dhcp::bootfile::BootFiles;
use provisioner_core::dhcp::engine::{self, Ctx, Request};
use provisioner_core::dhcp::full::{FullConfig, FullServer, PoolGuard};
use provisioner_core::dhcp::lease::MemLeases;
use provisioner_core::dhcp::reply::{Port, Responder};
use provisioner_core::dhcp::wire;
use provisioner_core::model::{MacAddr, Machine};

struct World {
    full: FullServer,
    leases: MemLeases,
    files: BootFiles,
    http_only: HashSet<MacAddr>,
}

fn world() -> &'static World {
    static W: OnceLock<World> = OnceLock::new();
    W.get_or_init(|| World {
        full: FullServer::new(FullConfig {
            subnet: "10.9.0.0/24".parse().unwrap(),
            pool: Some((Ipv4Addr::new(10, 9, 0, 100), Ipv4Addr::new(10, 9, 0, 120))),
            router: Some(Ipv4Addr::new(10, 9, 0, 1)),
            dns: vec![Ipv4Addr::new(10, 9, 0, 1)],
            domain: Some("lab".into()),
            lease_secs: 60,
            reservations: Default::default(),
            guard: PoolGuard::default(),
        }),
        leases: MemLeases::new(),
        files: BootFiles::default(),
        http_only: [MacAddr([0x52, 0x54, 0, 0xaa, 0xbb, 0xcc])].into(),
    })
}

fuzz_target!(|data: &[u8]| {
    let w = world();
    let Ok(req) = Request::parse(data) else { return };
    let mut machine = Machine::discovered(req.client.mac, time::OffsetDateTime::UNIX_EPOCH);
    machine.boot_file = Some("ipxe.efi".into());
    let decisions = [
        None,
        Some(BootDecision::LocalBoot { reason: "installed".into() }),
        Some(BootDecision::Unknown { reason: "no group".into(), record: true }),
        Some(BootDecision::Unknown { reason: "no group".into(), record: false }),
    ];
    let responder = Responder {
        server_id: Ipv4Addr::new(10, 9, 0, 1),
        next_server: Ipv4Addr::new(10, 9, 0, 1),
    };
    // The clock moves with the input so offers and leases expire between inputs.
    let now = 1_790_000_000 + i64::from(data.first().copied().unwrap_or(0));
    for (personality, port) in [
        (Personality::Proxy, Port::Dhcp),
        (Personality::Proxy, Port::PxeBootServer),
        (Personality::Full, Port::Dhcp),
        (Personality::Off, Port::Dhcp),
    ] {
        for decision in &decisions {
            for known in [false, true] {
                let ctx = Ctx {
                    personality,
                    port,
                    responder,
                    files: &w.files,
                    base: "http://10.9.0.1:8080",
                    http_boot_only: &w.http_only,
                    full: Some((&w.full, &w.leases as _)),
                    source: SocketAddrV4::new(Ipv4Addr::new(10, 9, 0, 7), 4011),
                };
                let m = known.then_some(&machine);
                let a = engine::answer(&req, &ctx, m, decision.as_ref(), now);
                if let Some(r) = &a.reply {
                    let back = wire::decode(&r.bytes).expect("a reply decodes");
                    assert_eq!(back.opts().msg_type(), Some(r.msg_type));
                }
                if known {
                    assert!(a.note.is_some(), "a known machine always gets its note");
                }
            }
        }
    }
});
