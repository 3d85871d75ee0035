//! Boot-storm load generator (tests/bench/dhcp/bootstorm.sh runs it): N simulated
//! machines at once, each doing the chain a BIOS PXE machine does against a boot
//! server: DHCP DORA (as PXEClient, arch 0, through a relay address so every reply
//! is unicast to this process) → TFTP of the boot file from `siaddr` → HTTP
//! `/boot.ipxe` → `/ipxe?mac=…` (the per-machine script) → the kernel and initrd
//! URLs it names → the config URL on the kernel line. Prints one summary line:
//! machines ok/failed, total seconds, bytes, and the first errors.
//!
//!   bootstorm <server-ip> <relay-ip> <machines> <http-port>
//!
//! All machines share the generator's address for TFTP and HTTP (the server sees
//! one client IP); DHCP identities (MAC, xid) are per machine.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream, UdpSocket};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dhcproto::v4::{Architecture, DhcpOption, Message, MessageType, OptionCode};
use dhcproto::{Decodable, Decoder, Encodable, Encoder};

type Routes = Arc<Mutex<HashMap<u32, Sender<Message>>>>;

fn main() {
    let a: Vec<String> = std::env::args().collect();
    if a.len() != 5 {
        eprintln!("usage: bootstorm <server-ip> <relay-ip> <machines> <http-port>");
        std::process::exit(2);
    }
    let server: Ipv4Addr = a[1].parse().expect("server ip");
    let relay: Ipv4Addr = a[2].parse().expect("relay ip");
    let n: u32 = a[3].parse().expect("machines");
    let port: u16 = a[4].parse().expect("http port");
    let sock = Arc::new(UdpSocket::bind(SocketAddrV4::new(relay, 67)).expect("bind relay :67"));
    let routes: Routes = Arc::new(Mutex::new(HashMap::new()));
    {
        let (sock, routes) = (sock.clone(), routes.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while let Ok(len) = sock.recv(&mut buf) {
                if let Ok(m) = Message::decode(&mut Decoder::new(&buf[..len]))
                    && let Some(tx) = routes.lock().unwrap().get(&(m.xid() >> 8))
                {
                    let _ = tx.send(m);
                }
            }
        });
    }
    let start = Instant::now();
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let (sock, routes) = (sock.clone(), routes.clone());
            std::thread::spawn(move || {
                let (tx, rx) = channel();
                routes.lock().unwrap().insert(i, tx);
                machine(i, server, relay, port, &sock, &rx)
            })
        })
        .collect();
    let (mut ok, mut bytes, mut errors) = (0u32, 0u64, Vec::new());
    for h in handles {
        match h.join() {
            Ok(Ok(b)) => {
                ok += 1;
                bytes += b;
            }
            Ok(Err(e)) => errors.push(e),
            Err(_) => errors.push("thread panicked".into()),
        }
    }
    let secs = start.elapsed().as_secs_f64();
    errors.sort();
    errors.dedup();
    println!(
        "machines={n} ok={ok} failed={} seconds={secs:.1} bytes={bytes} tftp_retransmits={} errors={:?}",
        n - ok,
        RETRANSMITS.load(std::sync::atomic::Ordering::Relaxed),
        errors.iter().take(5).collect::<Vec<_>>()
    );
    if ok != n {
        std::process::exit(1);
    }
}

fn mac(i: u32) -> [u8; 6] {
    let b = i.to_be_bytes();
    [0x52, 0x54, 0xee, b[1], b[2], b[3]]
}

/// One machine's whole chain; returns the bytes it downloaded.
fn machine(
    i: u32,
    server: Ipv4Addr,
    relay: Ipv4Addr,
    port: u16,
    sock: &UdpSocket,
    rx: &Receiver<Message>,
) -> Result<u64, String> {
    let (_ip, siaddr, file) = dhcp(i, server, relay, sock, rx)?;
    let mut bytes = tftp(siaddr, &file)?;
    let base = format!("{server}:{port}");
    let (st, _, _) = http_get(&base, "/boot.ipxe", true)?;
    if st != 200 {
        return Err(format!("/boot.ipxe status {st}"));
    }
    let m = mac(i)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join("-");
    let (st, script, _) = http_get(&base, &format!("/ipxe?mac={m}&arch=i386&platform=pcbios"), true)?;
    if st != 200 {
        return Err(format!("/ipxe status {st}"));
    }
    let script = String::from_utf8_lossy(&script).into_owned();
    let mut urls = Vec::new();
    for line in script.lines() {
        let mut w = line.split_whitespace();
        match w.next() {
            Some("kernel") | Some("initrd") => {
                if let Some(u) = w.next() {
                    urls.push(u.to_string());
                }
                urls.extend(w.filter_map(|t| t.split_once(".config=").map(|(_, u)| u.to_string())));
            }
            _ => {}
        }
    }
    if urls.len() < 3 {
        return Err(format!(
            "script names {} URLs (kernel, initrd, config expected)",
            urls.len()
        ));
    }
    for u in urls {
        let rest = u
            .strip_prefix("http://")
            .ok_or_else(|| format!("not http: {u}"))?;
        let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let (st, _, n) = http_get(host, path, false)?;
        if st != 200 {
            return Err(format!("GET {path}: status {st}"));
        }
        bytes += n;
    }
    Ok(bytes)
}

fn dhcp(
    i: u32,
    server: Ipv4Addr,
    relay: Ipv4Addr,
    sock: &UdpSocket,
    rx: &Receiver<Message>,
) -> Result<(Ipv4Addr, Ipv4Addr, String), String> {
    let dst = SocketAddrV4::new(server, 67);
    let z = Ipv4Addr::UNSPECIFIED;
    let send = |xid: u32, t: MessageType, requested: Option<(Ipv4Addr, Ipv4Addr)>| {
        let mut m = Message::new_with_id(xid, z, z, z, relay, &mac(i));
        m.set_hops(1);
        let o = m.opts_mut();
        o.insert(DhcpOption::MessageType(t));
        o.insert(DhcpOption::ClassIdentifier(
            b"PXEClient:Arch:00000:UNDI:002001".to_vec(),
        ));
        o.insert(DhcpOption::ClientSystemArchitecture(Architecture(0)));
        if let Some((ip, sid)) = requested {
            o.insert(DhcpOption::RequestedIpAddress(ip));
            o.insert(DhcpOption::ServerIdentifier(sid));
        }
        let mut buf = Vec::new();
        m.encode(&mut Encoder::new(&mut buf)).map_err(|e| e.to_string())?;
        sock.send_to(&buf, dst).map_err(|e| e.to_string())
    };
    // Firmware-like retries: 4 tries, 1-4 s apart. The xid carries the machine
    // index in its upper 24 bits and the try in the low byte.
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        if attempt > 4 {
            return Err("DHCP: no ACK after 4 tries".into());
        }
        let xid = (i << 8) | attempt;
        let wait = Duration::from_secs(u64::from(attempt));
        send(xid, MessageType::Discover, None)?;
        let Some(offer) = recv(rx, xid, MessageType::Offer, wait) else {
            continue;
        };
        let sid = match offer.opts().get(OptionCode::ServerIdentifier) {
            Some(DhcpOption::ServerIdentifier(s)) => *s,
            _ => server,
        };
        send(xid, MessageType::Request, Some((offer.yiaddr(), sid)))?;
        let Some(ack) = recv(rx, xid, MessageType::Ack, wait) else {
            continue;
        };
        // Option 67, else the BOOTP `file` header (dnsmasq uses the header unless
        // the client asks for option 67; PXE ROMs read both).
        let file = match ack.opts().get(OptionCode::BootfileName) {
            Some(DhcpOption::BootfileName(f)) => Some(f.clone()),
            _ => ack.fname().map(<[u8]>::to_vec),
        }
        .map(|f| String::from_utf8_lossy(&f).trim_end_matches('\0').to_string())
        .filter(|f| !f.is_empty())
        .ok_or("ACK without a boot file")?;
        let siaddr = if ack.siaddr().is_unspecified() {
            server
        } else {
            ack.siaddr()
        };
        return Ok((ack.yiaddr(), siaddr, file));
    }
}

fn recv(rx: &Receiver<Message>, xid: u32, t: MessageType, wait: Duration) -> Option<Message> {
    let deadline = Instant::now() + wait;
    loop {
        let m = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .ok()?;
        if m.xid() == xid && m.opts().msg_type() == Some(t) {
            return Some(m);
        }
    }
}

/// A TFTP read (RFC 1350) with blksize 1468 (RFC 2348); returns the bytes read.
/// Like firmware, it retransmits its last packet (the RRQ or the last ACK) after
/// one second of silence, up to five times.
fn tftp(server: Ipv4Addr, file: &str) -> Result<u64, String> {
    let s = UdpSocket::bind("0.0.0.0:0").map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(1)))
        .map_err(|e| e.to_string())?;
    let mut rrq = vec![0, 1];
    for part in [file, "octet", "blksize", "1468"] {
        rrq.extend_from_slice(part.as_bytes());
        rrq.push(0);
    }
    let mut last: (Vec<u8>, std::net::SocketAddr) = (rrq, SocketAddrV4::new(server, 69).into());
    s.send_to(&last.0, last.1).map_err(|e| e.to_string())?;
    let (mut total, mut expect, mut blksize, mut silent) = (0u64, 1u16, 512usize, 0u32);
    let mut buf = [0u8; 2048];
    loop {
        let (n, from) = match s.recv_from(&mut buf) {
            Ok(x) => x,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                silent += 1;
                if silent > 5 {
                    return Err(format!("TFTP {file}: no answer after 5 retransmissions"));
                }
                metrics_retransmit();
                s.send_to(&last.0, last.1).map_err(|e| e.to_string())?;
                continue;
            }
            Err(e) => return Err(format!("TFTP {file}: {e}")),
        };
        silent = 0;
        match u16::from_be_bytes([buf[0], buf[1]]) {
            6 => {
                // OACK: accept the options, ACK block 0.
                if let Some(v) = String::from_utf8_lossy(&buf[2..n])
                    .split('\0')
                    .skip_while(|k| *k != "blksize")
                    .nth(1)
                {
                    blksize = v.parse().unwrap_or(512);
                }
                last = (vec![0, 4, 0, 0], from);
                s.send_to(&last.0, from).map_err(|e| e.to_string())?;
            }
            3 => {
                let block = u16::from_be_bytes([buf[2], buf[3]]);
                last = (vec![0, 4, buf[2], buf[3]], from);
                s.send_to(&last.0, from).map_err(|e| e.to_string())?;
                if block == expect {
                    total += (n - 4) as u64;
                    expect = expect.wrapping_add(1);
                    if n - 4 < blksize {
                        return Ok(total);
                    }
                }
            }
            5 => return Err(format!("TFTP error: {}", String::from_utf8_lossy(&buf[4..n]))),
            op => return Err(format!("TFTP opcode {op}")),
        }
    }
}

static RETRANSMITS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn metrics_retransmit() {
    RETRANSMITS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

/// GET over a fresh connection; the body is kept only when `keep` (else counted).
fn http_get(host: &str, path: &str, keep: bool) -> Result<(u16, Vec<u8>, u64), String> {
    let mut s = TcpStream::connect(host).map_err(|e| format!("connect {host}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(120)))
        .map_err(|e| e.to_string())?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut head = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut body = Vec::new();
    let mut counted = 0usize;
    loop {
        let n = s.read(&mut buf).map_err(|e| format!("GET {path}: {e}"))?;
        if n == 0 {
            break;
        }
        if body.is_empty() && counted == 0 && !head.windows(4).any(|w| w == b"\r\n\r\n") {
            head.extend_from_slice(&buf[..n]);
            if let Some(p) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                let rest = head.split_off(p + 4);
                counted += rest.len();
                if keep {
                    body.extend_from_slice(&rest);
                }
            }
        } else {
            counted += n;
            if keep {
                body.extend_from_slice(&buf[..n]);
            }
        }
    }
    let status = String::from_utf8_lossy(&head)
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("GET {path}: no status line"))?;
    Ok((status, body, counted as u64))
}
