//! The TFTP engine's bounds on the real binary, on loopback: session caps, the clamped
//! client timeout, bounded retransmission to a peer that never ACKs (one packet per
//! transmission, whatever windowsize it asked for), a 500-request burst from
//! 500 addresses (127.0.0.0/8 is all loopback) with no transfer lost, and the timeline.

use crate::common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use common::daemon::{Daemon, http, loopback_boot, write_config};
use provisioner_core::tftp::packet;

fn data(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// A daemon serving `files` with extra `tftp:` settings.
fn start(tftp: &str, files: &[(&str, &[u8])]) -> (tempfile::TempDir, Daemon) {
    let dir = tempfile::tempdir().unwrap();
    common::write_catalog(dir.path());
    let root = dir.path().join("tftp");
    std::fs::create_dir(&root).unwrap();
    for (name, bytes) in files {
        std::fs::write(root.join(name), bytes).unwrap();
    }
    let cfg = loopback_boot(&write_config(dir.path(), &root));
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text.push_str(&format!("tftp: {{ {tftp} }}\n"));
    std::fs::write(&cfg, text).unwrap();
    let d = Daemon::start(&cfg);
    (dir, d)
}

fn rrq(name: &str, opts: &[(&str, &str)]) -> Vec<u8> {
    let mut p = vec![0, 1];
    p.extend_from_slice(name.as_bytes());
    p.extend_from_slice(b"\0octet\0");
    for (k, v) in opts {
        p.extend_from_slice(format!("{k}\0{v}\0").as_bytes());
    }
    p
}

fn client(ip: [u8; 4]) -> UdpSocket {
    let s = UdpSocket::bind(SocketAddr::new(IpAddr::V4(Ipv4Addr::from(ip)), 0)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s
}

/// Sends an RRQ and returns the first answer and where it came from.
fn ask(s: &UdpSocket, server: SocketAddr, req: &[u8]) -> (Vec<u8>, SocketAddr) {
    s.send_to(req, server).unwrap();
    let mut buf = [0u8; 2048];
    let (n, from) = s.recv_from(&mut buf).expect("an answer to the RRQ");
    (buf[..n].to_vec(), from)
}

/// Every datagram arriving on `s` within `window`.
fn collect(s: &UdpSocket, window: Duration) -> Vec<(Vec<u8>, Instant)> {
    let end = Instant::now() + window;
    let mut out = Vec::new();
    let mut buf = [0u8; 2048];
    while let Some(left) = end.checked_duration_since(Instant::now()) {
        s.set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .unwrap();
        if let Ok(n) = s.recv(&mut buf) {
            out.push((buf[..n].to_vec(), Instant::now()));
        }
    }
    out
}

/// A lock-step download with default options from `ip`.
fn fetch(server: SocketAddr, ip: [u8; 4], name: &str) -> Vec<u8> {
    let s = client(ip);
    let (mut pkt, tid) = ask(&s, server, &rrq(name, &[]));
    let mut out = Vec::new();
    loop {
        assert_eq!(&pkt[..2], &[0, 3], "DATA expected, got {pkt:?}");
        out.extend_from_slice(&pkt[4..]);
        s.send_to(&[0, 4, pkt[2], pkt[3]], tid).unwrap();
        if pkt.len() < 4 + 512 {
            return out;
        }
        let mut buf = [0u8; 2048];
        let n = s.recv(&mut buf).expect("next block");
        pkt = buf[..n].to_vec();
    }
}

fn metrics(d: &Daemon) -> String {
    let t = d.token("read-only");
    let (st, m) = d.api_get("/metrics", Some(&t));
    assert_eq!(st, 200);
    m
}

#[test]
fn session_caps_refuse_with_an_error_and_are_counted_while_others_are_served() {
    let big = data(512 * 40, 1);
    let small = data(1500, 2);
    let (_dir, d) = start(
        "max_sessions: 4, max_sessions_per_ip: 2, timeout_secs: 2, max_send_retries: 3",
        &[("big.bin", &big), ("small.bin", &small)],
    );
    // Two transfers from 127.0.0.1 that never ACK hold their sessions (2 s × 4 sends).
    let held: Vec<_> = (0..2)
        .map(|_| {
            let s = client([127, 0, 0, 1]);
            let (p, _) = ask(&s, d.tftp, &rrq("big.bin", &[]));
            assert_eq!(&p[..4], &[0, 3, 0, 1], "DATA 1");
            s
        })
        .collect();
    // A third from the same address is over the per-address cap: a TFTP ERROR.
    let (p, _) = ask(&client([127, 0, 0, 1]), d.tftp, &rrq("big.bin", &[]));
    assert_eq!(
        &p[..2],
        &[0, 5],
        "ERROR for the third session of one address: {p:?}"
    );
    // Another machine is served in full meanwhile.
    assert_eq!(fetch(d.tftp, [127, 0, 0, 2], "small.bin"), small);
    // Fill the global cap (4) with two more addresses; a fifth address is refused.
    let more: Vec<_> = [[127, 0, 0, 3], [127, 0, 0, 4]]
        .into_iter()
        .map(|ip| {
            let s = client(ip);
            assert_eq!(&ask(&s, d.tftp, &rrq("big.bin", &[])).0[..2], &[0, 3]);
            s
        })
        .collect();
    let (p, _) = ask(&client([127, 0, 0, 5]), d.tftp, &rrq("small.bin", &[]));
    assert_eq!(&p[..2], &[0, 5], "ERROR beyond the global cap: {p:?}");
    let m = metrics(&d);
    for want in [
        "provisioner_tftp_sessions_refused_total{cap=\"per_ip\"} 1",
        "provisioner_tftp_sessions_refused_total{cap=\"global\"} 1",
        "provisioner_tftp_requests_total{result=\"busy\"} 2",
        "provisioner_tftp_transfers_total{result=\"completed\"} 1",
    ] {
        assert!(m.contains(want), "missing `{want}` in\n{m}");
    }
    // The held sessions time out and give their places back: the fifth address is
    // served once they are gone (4 sends × 2 s, plus slack).
    drop((held, more));
    std::thread::sleep(Duration::from_secs(9));
    assert_eq!(fetch(d.tftp, [127, 0, 0, 5], "small.bin"), small);
}

#[test]
fn client_timeout_option_is_clamped_to_the_configured_maximum() {
    let f = data(3000, 3);
    let (_dir, d) = start(
        "timeout_secs: 1, max_timeout_secs: 2, max_send_retries: 2",
        &[("f.bin", &f)],
    );
    // timeout=255 (RFC 2349's maximum) is declined: the OACK leaves it out (RFC 2349:
    // an acknowledged timeout must equal the request) and the server keeps its own.
    let s = client([127, 0, 0, 1]);
    let t0 = Instant::now();
    let (p, _) = ask(&s, d.tftp, &rrq("f.bin", &[("timeout", "255"), ("tsize", "0")]));
    let oack = packet::parse_oack(&p).expect("an OACK");
    assert_eq!(oack, vec![("tsize".to_string(), "3000".to_string())], "{oack:?}");
    // Not ACKed: the OACK comes again after the clamped timeout (1 s), not 255 s, and
    // only max_send_retries (2) times.
    let again = collect(&s, Duration::from_secs(5));
    assert_eq!(
        again.len(),
        2,
        "2 retransmissions, then the transfer is abandoned"
    );
    let first = again[0].1.duration_since(t0);
    assert!(
        first >= Duration::from_millis(900) && first < Duration::from_millis(2500),
        "first retransmission after {first:?}"
    );
    assert!(again.iter().all(|(p, _)| p[..2] == [0, 6]), "only OACKs");
    // A timeout within the maximum is acknowledged as asked.
    let (p, _) = ask(
        &client([127, 0, 0, 1]),
        d.tftp,
        &rrq("f.bin", &[("timeout", "2")]),
    );
    assert_eq!(
        packet::parse_oack(&p).unwrap(),
        vec![("timeout".to_string(), "2".to_string())]
    );
}

/// A spoofed request's "client" never answers: it gets one packet per transmission,
/// block 1 (no options) or the OACK (windowsize 16 asked for: never a window of DATA),
/// and only max_send_retries times again.
#[test]
fn a_peer_that_never_acks_gets_only_bounded_copies_of_block_1_or_the_oack() {
    let f = data(512 * 64, 4);
    let (_dir, d) = start(
        "timeout_secs: 1, max_send_retries: 2, window_size_limit: 16",
        &[("f.bin", &f)],
    );
    let server = d.tftp;
    let plain = std::thread::spawn(move || {
        let s = client([127, 0, 0, 1]);
        s.send_to(&rrq("f.bin", &[]), server).unwrap();
        collect(&s, Duration::from_secs(5))
    });
    let s = client([127, 0, 0, 1]);
    s.send_to(&rrq("f.bin", &[("windowsize", "16"), ("blksize", "512")]), server)
        .unwrap();
    let windowed: Vec<_> = collect(&s, Duration::from_secs(5))
        .into_iter()
        .map(|(p, _)| p)
        .collect();
    let plain: Vec<_> = plain.join().unwrap().into_iter().map(|(p, _)| p).collect();
    assert_eq!(plain.len(), 3, "1 send + 2 retransmissions, got {}", plain.len());
    for p in &plain {
        assert_eq!(&p[..4], &[0, 3, 0, 1], "only DATA block 1");
        assert_eq!(&p[4..], &f[..512]);
    }
    assert_eq!(
        windowed.len(),
        3,
        "1 OACK + 2 retransmissions, got {}",
        windowed.len()
    );
    for p in &windowed {
        assert_eq!(
            packet::parse_oack(p).unwrap(),
            vec![
                ("blksize".to_string(), "512".to_string()),
                ("windowsize".to_string(), "16".to_string())
            ],
            "only the OACK, no DATA before ACK 0"
        );
    }
    let m = metrics(&d);
    assert!(
        m.contains("provisioner_tftp_transfers_total{result=\"timed_out\"} 2"),
        "both abandoned:\n{m}"
    );
}

/// 500 clients, each from its own loopback address, send their RRQs at once; none
/// retransmits its request, so a request the server did not read is a lost transfer.
/// (With `recv_buffer_bytes: 16384` this test loses requests: the sized buffer is what
/// holds the burst while the engine works through it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_500_requests_loses_no_transfer() {
    let file = data(20 * 1024, 5);
    let (_dir, d) = start("max_sessions: 1024", &[("storm.bin", &file)]);
    let server = d.tftp;
    let mut socks = Vec::new();
    for i in 0..500u32 {
        let ip = Ipv4Addr::new(127, 1, (i / 200) as u8, (i % 200 + 1) as u8);
        socks.push(tokio::net::UdpSocket::bind((ip, 0)).await.unwrap());
    }
    let req = rrq("storm.bin", &[("blksize", "1468"), ("tsize", "0")]);
    for s in &socks {
        s.send_to(&req, server).await.unwrap();
    }
    let mut tasks = tokio::task::JoinSet::new();
    for s in socks {
        tasks.spawn(async move {
            let mut buf = [0u8; 2048];
            let mut out = Vec::new();
            let mut duplicates = 0u32;
            let mut expect = 1u16;
            loop {
                let (n, tid) = tokio::time::timeout(Duration::from_secs(30), s.recv_from(&mut buf))
                    .await
                    .map_err(|_| format!("no answer after {} bytes", out.len()))?
                    .unwrap();
                let p = &buf[..n];
                match (p[1], u16::from_be_bytes([p[2], p[3]])) {
                    (6, _) => {
                        s.send_to(&[0, 4, 0, 0], tid).await.unwrap();
                    }
                    (3, b) if b == expect => {
                        out.extend_from_slice(&p[4..]);
                        s.send_to(&[0, 4, p[2], p[3]], tid).await.unwrap();
                        if n < 4 + 1468 {
                            return Ok::<_, String>((out, duplicates));
                        }
                        expect += 1;
                    }
                    (3, _) => {
                        // A block again: the server timed out waiting for our ACK.
                        duplicates += 1;
                        s.send_to(&[0, 4, p[2], p[3]], tid).await.unwrap();
                    }
                    other => return Err(format!("unexpected packet {other:?}")),
                }
            }
        });
    }
    let (mut ok, mut dups, mut failures) = (0, 0, Vec::new());
    while let Some(r) = tasks.join_next().await {
        match r.unwrap() {
            Ok((bytes, d)) => {
                assert_eq!(bytes, file, "intact");
                ok += 1;
                dups += d;
            }
            Err(e) => failures.push(e),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of 500 lost: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert_eq!(ok, 500);
    eprintln!("500 transfers complete; {dups} duplicate blocks seen by clients");
    let m = tokio::task::spawn_blocking(move || metrics(&d)).await.unwrap();
    assert!(
        m.contains("provisioner_tftp_transfers_total{result=\"completed\"} 500"),
        "{m}"
    );
}

#[test]
fn a_transfer_lands_on_the_machines_timeline() {
    let (_dir, d) = start("", &[("undionly.kpxe", &data(5000, 6))]);
    // The machine fetched its script from this address, so the appliance knows it.
    let (st, _) = http(
        d.http,
        "GET",
        "/ipxe?mac=52-54-00-00-16-01&arch=i386&platform=pcbios",
    )
    .unwrap();
    assert_eq!(st, 200);
    let st = std::process::Command::new("curl")
        .args(["-sS", "-o", "/dev/null"])
        .arg(format!("tftp://{}/undionly.kpxe", d.tftp))
        .status()
        .unwrap();
    assert!(st.success());
    let t = d.token("read-only");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, body) = d.api_get("/api/v1/machines/52-54-00-00-16-01/timeline", Some(&t));
        if body.contains("tftp_served") && body.contains("undionly.kpxe (5000 bytes)") {
            break;
        }
        assert!(Instant::now() < deadline, "no tftp_served event: {body}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
