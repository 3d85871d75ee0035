//! Large cached files on the boot listener go out with `sendfile(2)` (issue 16,
//! item 6), on the real binary over loopback: byte-exact bodies, `Range` (single,
//! suffix, unsatisfiable), `If-None-Match`, `HEAD`, several requests on one
//! keep-alive connection (pipelined, and handing over to hyper for a small route
//! mid-connection), and `/metrics` proving the zero-copy path carried the bytes.

use crate::common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::daemon::{Daemon, loopback_boot, write_config};

/// Over the zero-copy threshold (1 MiB), small enough to keep the test quick.
const KERNEL: usize = 5 * 1024 * 1024 + 123;

struct Resp {
    status: u16,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

/// Reads one response from `s` (`head_only`: a HEAD or 304, no body follows).
fn read_resp(s: &mut TcpStream, pending: &mut Vec<u8>, head_only: bool) -> Resp {
    let mut chunk = [0u8; 64 * 1024];
    let split = loop {
        if let Some(p) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            break p;
        }
        let n = s.read(&mut chunk).unwrap();
        assert!(n > 0, "connection closed before a response head");
        pending.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8(pending[..split].to_vec()).unwrap();
    pending.drain(..split + 4);
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let len: usize = if head_only {
        0
    } else {
        headers.get("content-length").map_or(0, |v| v.parse().unwrap())
    };
    while pending.len() < len {
        let n = s.read(&mut chunk).unwrap();
        assert!(n > 0, "connection closed mid-body");
        pending.extend_from_slice(&chunk[..n]);
    }
    let body = pending.drain(..len).collect();
    Resp {
        status,
        headers,
        body,
    }
}

fn req(path: &str, extra: &str, method: &str) -> String {
    format!("{method} {path} HTTP/1.1\r\nHost: test\r\n{extra}\r\n")
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s
}

/// A sample's value in a Prometheus text page (0 when absent).
fn sample(page: &str, name: &str) -> f64 {
    page.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn large_assets_go_out_with_sendfile_range_etag_head_and_keep_alive() {
    let dir = tempfile::tempdir().unwrap();
    common::write_catalog(dir.path());
    let kernel: Vec<u8> = (0..KERNEL as u64)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(dir.path().join("cache/test-img/vmlinuz"), &kernel).unwrap();
    let cfg = loopback_boot(&write_config(dir.path(), dir.path()));
    let d = Daemon::start(&cfg);
    let asset = "/assets/test-img/vmlinuz";

    // One connection, six requests: the first two pipelined in one write.
    let mut s = connect(d.http);
    let mut pending = Vec::new();
    let two = format!(
        "{}{}",
        req(asset, "", "GET"),
        req(asset, "Range: bytes=100-199\r\n", "GET")
    );
    s.write_all(two.as_bytes()).unwrap();
    let full = read_resp(&mut s, &mut pending, false);
    assert_eq!(full.status, 200);
    assert_eq!(full.headers["content-length"], KERNEL.to_string());
    assert_eq!(full.headers["accept-ranges"], "bytes");
    assert!(full.body == kernel, "the full body is byte-exact");
    let etag = full.headers["etag"].clone();
    let part = read_resp(&mut s, &mut pending, false);
    assert_eq!(part.status, 206);
    assert_eq!(part.headers["content-range"], format!("bytes 100-199/{KERNEL}"));
    assert_eq!(part.body, kernel[100..200]);

    s.write_all(req(asset, "Range: bytes=-10\r\n", "GET").as_bytes())
        .unwrap();
    let tail = read_resp(&mut s, &mut pending, false);
    assert_eq!(tail.status, 206);
    assert_eq!(tail.body, kernel[KERNEL - 10..]);

    s.write_all(req(asset, "", "HEAD").as_bytes()).unwrap();
    let head = read_resp(&mut s, &mut pending, true);
    assert_eq!(head.status, 200);
    assert_eq!(head.headers["content-length"], KERNEL.to_string());
    assert_eq!(head.headers["etag"], etag);

    s.write_all(req(asset, &format!("If-None-Match: {etag}\r\n"), "GET").as_bytes())
        .unwrap();
    let cached = read_resp(&mut s, &mut pending, true);
    assert_eq!(cached.status, 304);
    assert_eq!(cached.headers["etag"], etag);

    // A small route on the same connection: hyper takes over with the bytes read.
    s.write_all(req("/boot.ipxe", "Connection: close\r\n", "GET").as_bytes())
        .unwrap();
    let script = read_resp(&mut s, &mut pending, false);
    assert_eq!(script.status, 200);
    assert!(String::from_utf8_lossy(&script.body).starts_with("#!ipxe"));
    assert!(pending.is_empty(), "no stray bytes after the responses");

    // Unsatisfiable, on a connection the client closes: 416 then EOF.
    let mut s = connect(d.http);
    let mut pending = Vec::new();
    s.write_all(
        req(
            asset,
            &format!("Range: bytes={}-\r\nConnection: close\r\n", KERNEL + 1),
            "GET",
        )
        .as_bytes(),
    )
    .unwrap();
    let bad = read_resp(&mut s, &mut pending, false);
    assert_eq!(bad.status, 416);
    assert_eq!(bad.headers["content-range"], format!("bytes */{KERNEL}"));
    assert_eq!(
        s.read(&mut [0u8; 16]).unwrap(),
        0,
        "closed after Connection: close"
    );

    // The small initrd stays on hyper's path; a missing file is hyper's 404.
    let (st, body) = common::daemon::http(d.http, "GET", "/assets/test-img/initrd.gz").unwrap();
    assert_eq!((st, body.as_slice()), (200, &b"initrd-bytes"[..]));
    let (st, _) = common::daemon::http(d.http, "GET", "/assets/test-img/missing").unwrap();
    assert_eq!(st, 404);

    let reader = d.token("read-only");
    let (st, page) = d.api_get("/metrics", Some(&reader));
    assert_eq!(st, 200);
    // GET full, the range, the suffix: three bodies by sendfile, and every byte of them.
    assert_eq!(
        sample(&page, "provisioner_http_sendfile_responses_total"),
        3.0,
        "{page}"
    );
    assert_eq!(
        sample(&page, "provisioner_http_sendfile_bytes_total"),
        (KERNEL + 100 + 10) as f64
    );
}
