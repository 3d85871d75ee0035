//! Pool protection in full mode (issue 15): 100,000 random-MAC DISCOVER/REQUEST
//! exchanges from perfdhcp (Kea's load generator, relayed from a peer namespace)
//! against `pool_policy: boot_clients`: the pool is not exhausted, and a PXE client
//! gets a lease while the flood runs. Needs root and perfdhcp (kea-admin).

use crate::common;

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use common::{Req, exchange, full_yaml, in_netns, leases, site, start, udp};
use dhcproto::v4::MessageType;
use provisioner_e2e::{Lab, require_root};

/// Exchanges perfdhcp runs.
const EXCHANGES: &str = "100000";

/// perfdhcp's "sent packets" / "received packets" of the DISCOVER-OFFER exchange.
fn sent_received(out: &str) -> (u64, u64) {
    let section = out.split("DISCOVER-OFFER").nth(1).unwrap_or("");
    let num = |key: &str| {
        section
            .lines()
            .find(|l| l.trim_start().starts_with(key))
            .and_then(|l| l.split(':').nth(1))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    (num("sent packets"), num("received packets"))
}

#[test]
fn random_mac_flood_leaves_the_pool_to_boot_clients() -> Result<()> {
    require_root();
    if std::process::Command::new("perfdhcp").arg("-v").output().is_err() {
        panic!("perfdhcp is not installed (tests/setup installs kea-admin)");
    }
    let lab = Lab::new("dhcp-pool")?;
    let p = lab.subnet_prefix();
    let yaml = full_yaml(
        &lab,
        "  pool_policy: boot_clients\n  lease_time_secs: 3600\n  max_in_flight: 256\n",
    );
    let config = site(&lab, &yaml)?;
    let appliance = start(&lab, &config)?;
    let server: Ipv4Addr = lab.ip().parse()?;
    // perfdhcp relays from .2 (giaddr), so every answer is a unicast to it.
    let flood = lab.peer(1, "52:54:00:d2:00:01", Some(&format!("{p}.2/24")))?;
    let log = lab.dir().join("perfdhcp.log");
    let started = Instant::now();
    let mut perf = flood.spawn(
        &lab,
        &[
            "perfdhcp",
            "-4",
            "-l",
            "eth0",
            // What the appliance answers on 2 shared cores without its socket buffer
            // overflowing (a faster flood drops datagrams in the kernel, the PXE
            // client's among them, until it retransmits).
            "-r",
            "1500",
            "-R",
            EXCHANGES,
            "-n",
            EXCHANGES,
            "-p",
            "120",
            &server.to_string(),
        ],
        &log,
    )?;
    // A PXE client (relayed like the flood, from .3) during the flood: DORA.
    std::thread::sleep(Duration::from_secs(10));
    let relay: Ipv4Addr = format!("{p}.3").parse()?;
    let pxe = lab.peer(2, "52:54:00:d2:00:02", Some(&format!("{relay}/24")))?;
    let mac = [0x52, 0x54, 0, 0xd2, 0, 0x99];
    let ack = in_netns(pxe.netns(), move || -> Result<_> {
        let s = udp(SocketAddrV4::new(relay, 67))?;
        let req = Req {
            mac,
            xid: 77,
            giaddr: Some(relay),
            vendor: Some("PXEClient:Arch:00007:UNDI:003016"),
            arch: Some(7),
            ..Req::default()
        };
        // Firmware retransmits (PXE spec: 4, 8, 16, 32 s); so does this client.
        let dst = SocketAddrV4::new(server, 67);
        let retry = |r: &Req| {
            let mut last = None;
            for _ in 0..6 {
                match exchange(&s, r, dst, Duration::from_secs(4)) {
                    Ok(reply) => return Ok(reply),
                    Err(e) => last = Some(e),
                }
            }
            Err(last.expect("six tries"))
        };
        let offer = retry(&req)?;
        let req = Req {
            t: Some(MessageType::Request),
            xid: 78,
            requested: Some(offer.msg.yiaddr()),
            server_id: offer.server_id(),
            ..req
        };
        retry(&req)
    });
    let ack = ack.map_err(|e| {
        let m = appliance.api_get("/metrics").unwrap_or_default();
        let dhcp: Vec<&str> = m.lines().filter(|l| l.starts_with("provisioner_dhcp")).collect();
        e.context(format!(
            "metrics:\n{}\nlog:\n{}",
            dhcp.join("\n"),
            appliance.log()
        ))
    })?;
    assert_eq!(
        ack.kind(),
        Some(MessageType::Ack),
        "the PXE client is ACKed during the flood"
    );
    let leased = ack.msg.yiaddr();
    let status = perf.wait_exit(Duration::from_secs(180))?;
    let out = std::fs::read_to_string(&log).context("perfdhcp log")?;
    let took = started.elapsed();
    let (sent, received) = sent_received(&out);
    assert!(
        sent >= 100_000,
        "perfdhcp sent {sent} DISCOVERs (exit {status:?}):\n{out}"
    );
    let stored = leases(&appliance)?;
    let active: Vec<_> = stored.iter().filter(|(_, _, st)| st == "active").collect();
    assert_eq!(
        active.len(),
        1,
        "only the PXE client holds a pool address; the pool (51) is not exhausted: {active:?}"
    );
    assert_eq!(active[0].1, leased.to_string());
    let metrics = appliance.api_get("/metrics")?;
    let refused = metrics
        .lines()
        .find(|l| l.starts_with("provisioner_dhcp_dropped_total{reason=\"pool_policy\"}"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(refused >= 1_000.0, "pool_policy drops counted: {refused}");
    eprintln!(
        "perfdhcp: {sent} DISCOVERs sent, {received} answered, {refused} refused by pool_policy in {took:?}; \
         PXE client leased {leased} during the flood; {} active lease(s) of 51",
        active.len()
    );
    Ok(())
}
