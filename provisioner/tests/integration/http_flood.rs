//! The boot listener under a connection flood, on the real binary over loopback
//! (issue 15): 2,000 idle connections from 125 source addresses, one address over
//! its per-IP cap and a slowloris client trickling its headers; another client's
//! `/healthz` and `/boot.ipxe` still answer within 1 s, every idle connection is
//! closed after the header-read timeout, and each refusal kind is counted in
//! `/metrics`. The global cap, the per-IP script rate (429) and the body cap
//! (413).

use crate::common;

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::daemon::{Daemon, http, loopback_boot, write_config};

/// Idle connections held by the flood.
const IDLE: usize = 2_000;
/// Per-IP cap in this test's config (the default).
const PER_IP: usize = 16;
/// Header-read timeout in this test's config: longer than opening the flood takes on
/// a loaded CI machine (up to 7 s seen), so the flood is whole when it is measured.
const HEADER_SECS: u64 = 12;

/// A connection from `src` (a loopback address of its own) to `to`.
fn connect_from(src: Ipv4Addr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    s.bind(&SocketAddr::new(IpAddr::V4(src), 0).into())?;
    s.connect_timeout(&to.into(), Duration::from_secs(5))?;
    Ok(s.into())
}

/// Whether the server closed `s` (EOF or reset) within `limit`.
fn closed_within(mut s: &TcpStream, limit: Duration) -> bool {
    s.set_read_timeout(Some(limit.max(Duration::from_millis(1))))
        .unwrap();
    let mut b = [0u8; 256];
    loop {
        match s.read(&mut b) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return false;
            }
            Err(_) => return true,
        }
    }
}

fn timed(addr: SocketAddr, path: &str) -> (u16, Duration) {
    let t = Instant::now();
    let (st, _) = http(addr, "GET", path).unwrap();
    (st, t.elapsed())
}

/// The value of the sample `name{reason="<reason>"}` in a Prometheus text page.
fn refused(page: &str, reason: &str) -> f64 {
    let needle = format!("provisioner_http_refused_total{{reason=\"{reason}\"}}");
    page.lines()
        .find_map(|l| l.strip_prefix(&needle))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Enough descriptors for the flood in this process and the daemon it starts
/// (raising the soft limit up to the hard one affects no other test).
fn raise_nofile() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    let want = 8_192.min(hard);
    if soft < want {
        setrlimit(Resource::RLIMIT_NOFILE, want, hard).unwrap();
    }
}

#[test]
fn idle_flood_and_slowloris_do_not_deny_the_boot_path() {
    raise_nofile();
    let dir = tempfile::tempdir().unwrap();
    common::write_catalog(dir.path());
    let cfg = loopback_boot(&write_config(dir.path(), dir.path()));
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text.push_str(&format!(
        "http: {{ header_read_timeout_secs: {HEADER_SECS}, max_connections: 2040, \
         max_connections_per_ip: {PER_IP} }}\n"
    ));
    std::fs::write(&cfg, text).unwrap();
    let d = Daemon::start(&cfg);
    let reader = d.token("read-only");

    // 2,000 idle connections from 125 addresses (16 each, at the per-IP cap).
    let flood_started = Instant::now();
    let mut idle = Vec::with_capacity(IDLE);
    for i in 0..IDLE {
        let src = Ipv4Addr::new(127, 0, 1, 1 + (i / PER_IP) as u8);
        idle.push(connect_from(src, d.http).unwrap());
    }
    let flood_took = flood_started.elapsed();
    // One address opens 20: the 4 over its cap are closed at once.
    let greedy = Ipv4Addr::new(127, 0, 2, 1);
    let over: Vec<TcpStream> = (0..PER_IP + 4)
        .map(|_| connect_from(greedy, d.http).unwrap())
        .collect();
    let refused_now = over[PER_IP..]
        .iter()
        .filter(|s| closed_within(s, Duration::from_millis(300)))
        .count();
    assert_eq!(
        refused_now, 4,
        "connections over the per-IP cap are closed at accept"
    );
    // Slowloris: a request line, then one header byte every 300 ms.
    let mut slow = connect_from(Ipv4Addr::new(127, 0, 3, 1), d.http).unwrap();
    slow.write_all(b"GET /boot.ipxe HTTP/1.1\r\nHost: x\r\n").unwrap();
    let trickle = std::thread::spawn(move || {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(HEADER_SECS + 3) {
            if slow.write_all(b"X").is_err() {
                return Some(started.elapsed());
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        None
    });

    // Another client is served promptly while all of that is open.
    for path in ["/healthz", "/boot.ipxe", "/healthz"] {
        let (st, took) = timed(d.http, path);
        assert_eq!(st, 200, "{path}");
        assert!(
            took < Duration::from_secs(1),
            "{path} took {took:?} during the flood"
        );
        eprintln!("during the flood: {path} answered in {took:?}");
    }
    // The global cap (2,040 here; 2,017 are open): 40 more from new addresses, those
    // past the cap are closed at once and counted.
    let extra: Vec<TcpStream> = (0..40)
        .map(|i| connect_from(Ipv4Addr::new(127, 0, 4, 1 + (i / PER_IP) as u8), d.http).unwrap())
        .collect();
    let at_cap = extra
        .iter()
        .filter(|s| closed_within(s, Duration::from_millis(20)))
        .count();
    eprintln!("flood opened in {flood_took:?}; {at_cap} of 40 extra connections closed at the global cap");
    assert!(
        at_cap >= 10,
        "only {at_cap} connections refused at the global cap"
    );

    // Every idle connection is closed by the server after the header-read timeout.
    let started = Instant::now();
    let still_open = idle
        .iter()
        .filter(|s| {
            !closed_within(
                s,
                Duration::from_secs(HEADER_SECS + 3).saturating_sub(started.elapsed()),
            )
        })
        .count();
    assert_eq!(still_open, 0, "idle connections left open after {HEADER_SECS} s");
    let slow_closed = trickle.join().unwrap();
    assert!(
        slow_closed.is_some(),
        "the slowloris client was not cut off despite trickling its headers"
    );
    eprintln!(
        "all {IDLE} idle connections closed {:?} after the check; slowloris cut off after {:?}",
        started.elapsed(),
        slow_closed.unwrap()
    );
    drop(idle);
    drop(over);
    drop(extra);

    let (st, page) = d.api_get("/metrics", Some(&reader));
    assert_eq!(st, 200);
    assert!(refused(&page, "max_connections_per_ip") >= 4.0, "{page}");
    assert!(refused(&page, "header_timeout") >= IDLE as f64, "{page}");
    assert!(refused(&page, "max_connections") >= at_cap as f64, "{page}");

    // /ipxe at more than the per-IP rate (burst 20): 429, counted; /boot.ipxe is not limited.
    let statuses: Vec<u16> = (0..30)
        .map(|i| {
            http(d.http, "GET", &format!("/ipxe?mac=52-54-00-00-10-{i:02x}"))
                .unwrap()
                .0
        })
        .collect();
    assert!(statuses.contains(&429), "{statuses:?}");
    assert!(
        statuses.iter().take(20).all(|s| *s != 429),
        "the burst is allowed: {statuses:?}"
    );
    assert!((0..30).all(|_| http(d.http, "GET", "/boot.ipxe").unwrap().0 == 200));
    // A body over the cap: 413, counted.
    let mut s = TcpStream::connect(d.http).unwrap();
    write!(
        s,
        "POST /callback/x/installed HTTP/1.1\r\nHost: t\r\nContent-Length: 1000000\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut head = [0u8; 12];
    s.read_exact(&mut head).unwrap();
    assert_eq!(&head[9..12], b"413");
    let (_, page) = d.api_get("/metrics", Some(&reader));
    assert!(refused(&page, "rate") >= 1.0, "{page}");
    assert!(refused(&page, "body_too_large") >= 1.0, "{page}");
}
