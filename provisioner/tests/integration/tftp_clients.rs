//! TFTP against real clients (curl, atftp) and hostile datagrams, on loopback.

use crate::common;

use std::net::UdpSocket;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::daemon::{Daemon, write_config};
use common::write_catalog;

fn files(root: &Path) -> Vec<(&'static str, Vec<u8>)> {
    let mut seed = 0x2545_f491_u32;
    let mut rnd = |n: usize| -> Vec<u8> {
        (0..n)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                seed as u8
            })
            .collect()
    };
    let set = vec![
        ("small.bin", rnd(700)),
        ("exact512.bin", rnd(512 * 64)),
        ("exact1468.bin", rnd(1468 * 20)),
        ("big.bin", rnd(3 * 1024 * 1024 + 17)),
    ];
    for (name, data) in &set {
        std::fs::write(root.join(name), data).unwrap();
    }
    set
}

fn start() -> (tempfile::TempDir, Daemon, Vec<(&'static str, Vec<u8>)>) {
    let dir = tempfile::tempdir().unwrap();
    write_catalog(dir.path());
    let root = dir.path().join("tftp");
    std::fs::create_dir(&root).unwrap();
    let set = files(&root);
    let d = Daemon::start(&write_config(dir.path(), &root));
    (dir, d, set)
}

#[test]
fn curl_fetches_byte_identical_files_at_blksize_512_and_1468() {
    let (dir, d, set) = start();
    for blksize in ["512", "1468"] {
        for (name, data) in &set {
            let out = dir.path().join(format!("curl-{blksize}-{name}"));
            let st = Command::new("curl")
                .args(["-sS", "--max-time", "60", "--tftp-blksize", blksize, "-o"])
                .arg(&out)
                .arg(format!("tftp://{}/{name}", d.tftp))
                .status()
                .expect("curl");
            assert!(st.success(), "curl {name} blksize {blksize}");
            assert_eq!(&std::fs::read(&out).unwrap(), data, "{name} at blksize {blksize}");
        }
    }
}

#[test]
fn atftp_fetches_byte_identical_files_with_windowsize_1_and_16() {
    let (dir, d, set) = start();
    for (blksize, window) in [("512", "1"), ("1468", "1"), ("1468", "16"), ("512", "16")] {
        for (name, data) in &set {
            let out = dir.path().join(format!("atftp-{blksize}-{window}-{name}"));
            let o = Command::new("atftp")
                .args([
                    "--option",
                    &format!("blksize {blksize}"),
                    "--option",
                    &format!("windowsize {window}"),
                ])
                .args(["--option", "tsize 0", "-g", "-r", name, "-l"])
                .arg(&out)
                .arg(d.tftp.ip().to_string())
                .arg(d.tftp.port().to_string())
                .output()
                .expect("atftp (tests/setup installs it)");
            assert!(
                o.status.success(),
                "atftp {name} {blksize}/{window}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            assert_eq!(
                &std::fs::read(&out).unwrap(),
                data,
                "{name} blksize {blksize} windowsize {window}"
            );
        }
    }
    // atftp acknowledges only whole windows: a server that held back the first window
    // would make it wait for a retransmission (RFC 7440 §4; see core::tftp::session).
    let reader = d.token("read-only");
    let (_, m) = d.api_get("/metrics", Some(&reader));
    assert!(
        m.contains("provisioner_tftp_transfers_total{result=\"completed\"} 16"),
        "{m}"
    );
    assert!(
        !m.contains("provisioner_tftp_retransmits_total"),
        "no retransmission needed:\n{m}"
    );
}

/// Sends one RRQ and returns the first reply datagram.
fn rrq(server: std::net::SocketAddr, name: &[u8]) -> Vec<u8> {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut pkt = vec![0, 1];
    pkt.extend_from_slice(name);
    pkt.extend_from_slice(b"\0octet\0");
    s.send_to(&pkt, server).unwrap();
    let mut buf = [0u8; 2048];
    let (n, _) = s.recv_from(&mut buf).expect("a reply");
    buf[..n].to_vec()
}

#[test]
fn traversal_and_absolute_paths_get_tftp_errors() {
    let (_dir, d, _) = start();
    for name in [
        &b"../../etc/passwd"[..],
        b"/etc/passwd",
        b"tftp/../../state/inventory.redb",
        b"..",
        b"a\\..\\b",
    ] {
        let reply = rrq(d.tftp, name);
        assert_eq!(
            &reply[..2],
            &[0, 5],
            "{:?} must get an ERROR packet, got {reply:?}",
            String::from_utf8_lossy(name)
        );
        let code = u16::from_be_bytes([reply[2], reply[3]]);
        assert!(code == 1 || code == 2, "error code {code}");
    }
    // atftp, a real client, sees the refusal too.
    let o = Command::new("atftp")
        .args(["-g", "-r", "../../../etc/passwd", "-l", "/dev/null"])
        .arg(d.tftp.ip().to_string())
        .arg(d.tftp.port().to_string())
        .output()
        .unwrap();
    assert!(!o.status.success(), "atftp traversal must fail");
    // The generated first stage is always there (never a 404 for the iPXE probe).
    let reply = rrq(d.tftp, b"autoexec.ipxe");
    assert_eq!(&reply[..2], &[0, 3], "DATA for autoexec.ipxe");
    assert!(String::from_utf8_lossy(&reply[4..]).starts_with("#!ipxe"));
}

#[test]
fn write_requests_are_refused() {
    let (_dir, d, _) = start();
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.send_to(b"\0\x02evil.bin\0octet\0", d.tftp).unwrap();
    let mut buf = [0u8; 512];
    let (n, _) = s.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..2], &[0, 5], "{:?}", &buf[..n]);
}

/// Hostile datagrams (random bytes, truncated and oversized options) never take the
/// server down: afterwards a normal transfer still works.
#[test]
fn random_datagrams_do_not_break_the_server() {
    let (dir, d, set) = start();
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut x = 0x9e37_79b9_u32;
    for i in 0..3000u32 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        let len = (x % 600) as usize;
        let mut pkt: Vec<u8> = (0..len)
            .map(|j| (x.wrapping_mul(j as u32 + 1) >> 7) as u8)
            .collect();
        if i % 3 == 0 && pkt.len() > 2 {
            // Make many of them look like requests with odd options.
            pkt[0] = 0;
            pkt[1] = 1;
        }
        let _ = s.send_to(&pkt, d.tftp);
    }
    std::thread::sleep(Duration::from_millis(300));
    let out = dir.path().join("after.bin");
    let st = Command::new("curl")
        .args(["-sS", "--max-time", "30", "-o"])
        .arg(&out)
        .arg(format!("tftp://{}/small.bin", d.tftp))
        .status()
        .unwrap();
    assert!(st.success());
    assert_eq!(std::fs::read(&out).unwrap(), set[0].1);
}
