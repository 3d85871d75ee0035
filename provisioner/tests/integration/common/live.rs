//! Watching the served appliance live: its DHCP sockets on loopback (free ports
//! instead of 67/4011, so no privilege is needed), a real PXE request sent to them,
//! and `/api/v1/events` read as it streams.

use std::io::Read;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use provisioner_core::dhcp::v4::{Architecture, DhcpOption, Message, MessageType};
use provisioner_core::dhcp::wire;
use provisioner_core::model::MacAddr;

use super::daemon::Daemon;

/// The appliance's proxyDHCP ports on 127.0.0.1.
#[derive(Debug, Clone, Copy)]
pub struct DhcpPorts {
    /// Stands in for 67.
    pub dhcp: u16,
    /// Stands in for 4011 (answers go back to the request's source).
    pub pxe: u16,
}

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Appends a proxyDHCP section listening on two free loopback ports.
pub fn proxy_dhcp(cfg: &Path) -> DhcpPorts {
    let ports = DhcpPorts {
        dhcp: free_udp_port(),
        pxe: free_udp_port(),
    };
    let mut text = std::fs::read_to_string(cfg).unwrap();
    text.push_str(&format!(
        "dhcp:\n  mode: proxy\n  listen: 127.0.0.1\n  port: {}\n  pxe_port: {}\n",
        ports.dhcp, ports.pxe
    ));
    std::fs::write(cfg, text).unwrap();
    ports
}

/// A firmware PXE request (x86-64 UEFI, option 93 = 7) from `mac`, as sent by EDK2.
pub fn pxe_request(mac: &str, t: MessageType) -> Vec<u8> {
    let mac: MacAddr = mac.parse().unwrap();
    let z = Ipv4Addr::UNSPECIFIED;
    let mut m = Message::new_with_id(0x5eed, z, z, z, z, &mac.0);
    let o = m.opts_mut();
    o.insert(DhcpOption::MessageType(t));
    o.insert(DhcpOption::ClassIdentifier(
        b"PXEClient:Arch:00007:UNDI:003016".to_vec(),
    ));
    o.insert(DhcpOption::ClientSystemArchitecture(Architecture(7)));
    wire::encode(&m).unwrap()
}

/// A client socket on 127.0.0.1 with a short read timeout.
pub fn client_socket() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    s
}

/// Sends `bytes` to 127.0.0.1:`port`.
pub fn send(s: &UdpSocket, port: u16, bytes: &[u8]) {
    s.send_to(bytes, SocketAddrV4::new(Ipv4Addr::LOCALHOST, port))
        .unwrap();
}

/// `/api/v1/events` as it streams, read on a thread.
pub struct Stream {
    rx: mpsc::Receiver<String>,
    /// Everything read so far.
    pub text: String,
}

impl Stream {
    /// Opens the stream with `auth` (header name, value); answers 200.
    pub fn open(d: &Daemon, auth: (&str, String)) -> Self {
        let pem = std::fs::read(d.ca()).unwrap();
        let client = reqwest::blocking::Client::builder()
            .tls_certs_only(reqwest::Certificate::from_pem_bundle(&pem).unwrap())
            .timeout(None)
            .build()
            .unwrap();
        let mut resp = client
            .get(format!("{}/api/v1/events", d.api_url()))
            .header(auth.0, auth.1)
            .send()
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = resp.read(&mut buf) {
                if n == 0 || tx.send(String::from_utf8_lossy(&buf[..n]).into_owned()).is_err() {
                    break;
                }
            }
        });
        Self {
            rx,
            text: String::new(),
        }
    }

    /// The `timeline` messages' data read so far, as JSON.
    pub fn timeline(&self) -> Vec<serde_json::Value> {
        self.text
            .split("\n\n")
            .filter(|m| m.lines().any(|l| l == "event: timeline"))
            .filter_map(|m| m.lines().find_map(|l| l.strip_prefix("data: ")))
            .filter_map(|d| serde_json::from_str(d).ok())
            .collect()
    }

    /// Reads until a timeline message satisfies `ok` (calling `poke` between reads,
    /// e.g. to resend a datagram UDP may lose); returns it.
    pub fn until(
        &mut self,
        what: &str,
        mut poke: impl FnMut(),
        ok: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(v) = self.timeline().into_iter().find(|v| ok(v)) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "{what} never arrived on /api/v1/events; read:\n{}",
                self.text
            );
            match self.rx.recv_timeout(Duration::from_millis(500)) {
                Ok(chunk) => self.text.push_str(&chunk),
                Err(mpsc::RecvTimeoutError::Timeout) => poke(),
                Err(mpsc::RecvTimeoutError::Disconnected) => panic!("the stream ended:\n{}", self.text),
            }
        }
    }
}

/// `kind` and `detail` of a timeline message for `mac`.
pub fn is(v: &serde_json::Value, mac: &str, kind: &str, detail: &str) -> bool {
    v["mac"] == mac && v["kind"] == kind && v["detail"].as_str().is_some_and(|d| d.contains(detail))
}
