//! A lease storm against `full` mode, the appliance SIGKILLed in the middle of it:
//! every lease a client saw ACKed is in the store after the restart (the lease is
//! committed durably before the ACK leaves). The storm comes from a relay agent in
//! a peer namespace, so every reply is a unicast to it. Needs root.

use crate::common;

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::Result;
use common::{Req, full_yaml, in_netns, leases, site, start, udp};
use dhcproto::v4::{DhcpOption, Message, MessageType, OptionCode};
use dhcproto::{Decodable, Decoder};
use provisioner_e2e::{Lab, require_root, wait_for};

/// Clients in the storm; far more than are ACKed before the kill.
const CLIENTS: u32 = 4000;
/// ACKs seen before the SIGKILL.
const KILL_AFTER: usize = 150;

fn mac(i: u32) -> [u8; 6] {
    let b = i.to_be_bytes();
    [0x52, 0x54, 0xd1, b[1], b[2], b[3]]
}

fn mac_str(m: [u8; 6]) -> String {
    m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

/// DORA for `CLIENTS` MACs as fast as replies come; returns every (mac, ip) ACKed.
fn storm(
    relay: Ipv4Addr,
    server: Ipv4Addr,
    progress: mpsc::Sender<usize>,
    killed: Arc<AtomicBool>,
) -> Result<Vec<(String, Ipv4Addr)>> {
    let sock = udp(SocketAddrV4::new(relay, 67))?;
    sock.set_read_timeout(Some(Duration::from_millis(5)))?;
    let dst = SocketAddrV4::new(server, 67);
    let mut acked = Vec::new();
    let mut next = 0u32;
    let mut offered: HashMap<u32, Ipv4Addr> = HashMap::new();
    let started = Instant::now();
    let mut killed_at: Option<Instant> = None;
    let mut buf = [0u8; 1500];
    loop {
        if killed_at.is_none() && killed.load(Ordering::SeqCst) {
            killed_at = Some(Instant::now());
        }
        // Drain what the dead server sent before it died, then stop.
        if killed_at.is_some_and(|t| t.elapsed() > Duration::from_millis(500))
            || started.elapsed() > Duration::from_secs(60)
        {
            break;
        }
        if killed_at.is_none() {
            for _ in 0..8 {
                if next < CLIENTS {
                    let r = Req {
                        mac: mac(next),
                        xid: next,
                        giaddr: Some(relay),
                        ..Req::default()
                    };
                    let _ = sock.send_to(&r.encode(), dst);
                    next += 1;
                }
            }
        }
        while let Ok((n, _)) = sock.recv_from(&mut buf) {
            let Ok(m) = Message::decode(&mut Decoder::new(&buf[..n])) else {
                continue;
            };
            let i = m.xid();
            match m.opts().msg_type() {
                Some(MessageType::Offer) if killed_at.is_none() => {
                    offered.insert(i, m.yiaddr());
                    let sid = match m.opts().get(OptionCode::ServerIdentifier) {
                        Some(DhcpOption::ServerIdentifier(s)) => Some(*s),
                        _ => None,
                    };
                    let r = Req {
                        mac: mac(i),
                        xid: i,
                        giaddr: Some(relay),
                        t: Some(MessageType::Request),
                        requested: Some(m.yiaddr()),
                        server_id: sid,
                        ..Req::default()
                    };
                    let _ = sock.send_to(&r.encode(), dst);
                }
                Some(MessageType::Ack) => {
                    acked.push((mac_str(mac(i)), m.yiaddr()));
                    let _ = progress.send(acked.len());
                }
                _ => {}
            }
        }
    }
    Ok(acked)
}

#[test]
fn sigkill_during_a_lease_storm_loses_no_acked_lease() -> Result<()> {
    require_root();
    let lab = Lab::new("dhcp-storm")?;
    let p = lab.subnet_prefix();
    // The widest pool the lab's /24 allows (.10-.250): 4000 clients compete for it,
    // so the storm is still running when the kill comes.
    let extra = "  lease_time_secs: 3600\n  max_in_flight: 64\n".to_string();
    let yaml = full_yaml(&lab, &extra).replace(
        &format!("start: {p}.100, end: {p}.150"),
        &format!("start: {p}.10, end: {p}.250"),
    );
    let config = site(&lab, &yaml)?;
    let mut appliance = start(&lab, &config)?;
    let server: Ipv4Addr = lab.ip().parse()?;
    let relay: Ipv4Addr = format!("{p}.2").parse()?;
    let peer = lab.peer(1, "52:54:00:d1:ff:ff", Some(&format!("{relay}/24")))?;

    let (tx, rx) = mpsc::channel();
    let killed = Arc::new(AtomicBool::new(false));
    let k = killed.clone();
    let ns = peer.netns().to_owned();
    let storm = std::thread::spawn(move || in_netns(&ns, move || storm(relay, server, tx, k)));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(n) if n >= KILL_AFTER => break,
            Ok(_) => {}
            Err(e) => anyhow::bail!("storm stalled before {KILL_AFTER} ACKs: {e}\n{}", appliance.log()),
        }
    }
    appliance.kill_9();
    killed.store(true, Ordering::SeqCst);
    let acked = storm.join().expect("storm thread")?;
    assert!(acked.len() >= KILL_AFTER, "{} ACKs", acked.len());
    assert!(
        acked.len() < 241,
        "the pool (241 addresses) was not exhausted before the kill: {}",
        acked.len()
    );

    // Restart on the same state; the API answers once the new process is up.
    let restarted = provisioner_e2e::Appliance::start(&lab, &config)?;
    let stored = wait_for(
        Duration::from_secs(30),
        "the restarted appliance's lease API",
        || Ok(leases(&restarted).ok()),
    )?;
    let stored: HashMap<String, (String, String)> =
        stored.into_iter().map(|(m, ip, st)| (m, (ip, st))).collect();
    let mut lost = Vec::new();
    for (m, ip) in &acked {
        match stored.get(m) {
            Some((sip, st)) if *sip == ip.to_string() && st == "active" => {}
            other => lost.push(format!("{m} acked {ip}, stored {other:?}")),
        }
    }
    assert!(
        lost.is_empty(),
        "{} of {} ACKed leases lost:\n{}",
        lost.len(),
        acked.len(),
        lost.join("\n")
    );
    eprintln!(
        "storm: {} leases ACKed before SIGKILL, all {} found after restart ({} stored)",
        acked.len(),
        acked.len(),
        stored.len()
    );
    Ok(())
}
