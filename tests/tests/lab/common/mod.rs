//! Helpers for the DHCP tests: a minimal appliance site with a `dhcp:` section,
//! and raw DHCP requests sent from inside a peer namespace (a thread that joins
//! the namespace with setns).

use std::fs;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use dhcproto::v4::{DhcpOption, Flags, Message, MessageType, OptionCode};
use dhcproto::{Decodable, Decoder, Encodable, Encoder};
use provisioner_e2e::{Appliance, Lab};

/// Writes a site with no images or profiles (the unknown policy records
/// machines) and `dhcp_yaml` as the `dhcp:` section; returns the config path.
pub fn site(lab: &Lab, dhcp_yaml: &str) -> Result<PathBuf> {
    let root = lab.dir().join("dhcp-site");
    for d in [
        "state",
        "profiles/groups",
        "profiles/profiles",
        "images",
        "cache",
        "infra",
    ] {
        fs::create_dir_all(root.join(d))?;
    }
    let config = root.join("provisioner.yaml");
    let r = root.display();
    fs::write(
        &config,
        format!(
            "state_dir: {r}/state\nserver_ip: {ip}\nhttp_listen: 0.0.0.0:8080\napi_listen: 127.0.0.1:9090\n\
             tftp_listen: 0.0.0.0:69\ntftp_root: /usr/lib/ipxe\nprofiles_dir: {r}/profiles\n\
             images_dir: {r}/images\ncache_dir: {r}/cache\ninfra_dir: {r}/infra\nunknown_policy: record\n\
             dhcp:\n{dhcp_yaml}",
            ip = lab.ip(),
        ),
    )?;
    Ok(config)
}

/// The `dhcp:` lines for full mode on the lab subnet with pool .100-.150.
pub fn full_yaml(lab: &Lab, extra: &str) -> String {
    let p = lab.subnet_prefix();
    let probe = if extra.contains("probe_secs") {
        ""
    } else {
        "  probe_secs: 1\n"
    };
    // The lab's udhcpc, dhclient and crafted clients are plain DHCP clients: the
    // whole server is under test here; the pool policy has its own test.
    let policy = if extra.contains("pool_policy") {
        ""
    } else {
        "  pool_policy: any\n"
    };
    format!(
        "  mode: full\n  interface: br0\n  subnet: {p}.0/24\n  pool: {{ start: {p}.100, end: {p}.150 }}\n\
         \x20 router: {p}.1\n  dns: [{p}.1]\n{probe}{policy}{extra}"
    )
}

/// Starts the appliance and waits for its DHCP listener.
pub fn start(lab: &Lab, config: &std::path::Path) -> Result<Appliance> {
    let mut a = Appliance::start(lab, config)?;
    a.wait_for_log("listening for DHCP on", Duration::from_secs(20))?;
    Ok(a)
}

/// `GET /api/v1/leases` as (mac, ip, state) triples.
pub fn leases(a: &Appliance) -> Result<Vec<(String, String, String)>> {
    let body = a.api_get("/api/v1/leases")?;
    let v: serde_json::Value = serde_json::from_str(&body).with_context(|| body.clone())?;
    Ok(v.as_array()
        .context("leases is not a list")?
        .iter()
        .map(|l| {
            let s = |k: &str| l[k].as_str().unwrap_or_default().to_owned();
            (s("mac"), s("ip"), s("state"))
        })
        .collect())
}

/// Runs `f` on a thread that has joined network namespace `ns`.
pub fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let fd = fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        nix::sched::setns(&fd, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        f()
    })
    .join()
    .expect("netns thread panicked")
}

/// A request from `mac` as a test client or relay builds it.
#[derive(Debug, Clone, Default)]
pub struct Req {
    pub mac: [u8; 6],
    pub xid: u32,
    pub t: Option<MessageType>,
    pub giaddr: Option<Ipv4Addr>,
    pub ciaddr: Option<Ipv4Addr>,
    pub requested: Option<Ipv4Addr>,
    pub server_id: Option<Ipv4Addr>,
    pub vendor: Option<&'static str>,
    pub arch: Option<u16>,
    pub broadcast: bool,
}

impl Req {
    pub fn encode(&self) -> Vec<u8> {
        let z = Ipv4Addr::UNSPECIFIED;
        let mut m = Message::new_with_id(
            self.xid,
            self.ciaddr.unwrap_or(z),
            z,
            z,
            self.giaddr.unwrap_or(z),
            &self.mac,
        );
        if self.giaddr.is_some() {
            m.set_hops(1);
        }
        if self.broadcast {
            m.set_flags(Flags::default().set_broadcast());
        }
        let o = m.opts_mut();
        o.insert(DhcpOption::MessageType(self.t.unwrap_or(MessageType::Discover)));
        if let Some(r) = self.requested {
            o.insert(DhcpOption::RequestedIpAddress(r));
        }
        if let Some(s) = self.server_id {
            o.insert(DhcpOption::ServerIdentifier(s));
        }
        if let Some(v) = self.vendor {
            o.insert(DhcpOption::ClassIdentifier(v.as_bytes().to_vec()));
        }
        if let Some(a) = self.arch {
            o.insert(DhcpOption::ClientSystemArchitecture(dhcproto::v4::Architecture(
                a,
            )));
        }
        let mut buf = Vec::new();
        m.encode(&mut Encoder::new(&mut buf)).expect("encode");
        buf
    }
}

/// A decoded reply and who sent it.
#[derive(Debug, Clone)]
pub struct Reply {
    pub msg: Message,
    pub from: std::net::SocketAddr,
}

impl Reply {
    pub fn kind(&self) -> Option<MessageType> {
        self.msg.opts().msg_type()
    }
    pub fn bootfile(&self) -> Option<String> {
        match self.msg.opts().get(OptionCode::BootfileName) {
            Some(DhcpOption::BootfileName(b)) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        }
    }
    pub fn server_id(&self) -> Option<Ipv4Addr> {
        match self.msg.opts().get(OptionCode::ServerIdentifier) {
            Some(DhcpOption::ServerIdentifier(s)) => Some(*s),
            _ => None,
        }
    }
}

/// Sends `req` from `sock` to `dst` and waits up to `wait` for a reply with the
/// same xid.
pub fn exchange(sock: &UdpSocket, req: &Req, dst: SocketAddrV4, wait: Duration) -> Result<Reply> {
    sock.send_to(&req.encode(), dst)?;
    let deadline = Instant::now() + wait;
    let mut buf = [0u8; 1500];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            bail!("no reply to {:?} for {:02x?} within {wait:?}", req.t, req.mac);
        }
        sock.set_read_timeout(Some(left))?;
        let (n, from) = match sock.recv_from(&mut buf) {
            Ok(x) => x,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        if let Ok(msg) = Message::decode(&mut Decoder::new(&buf[..n]))
            && msg.xid() == req.xid
        {
            return Ok(Reply { msg, from });
        }
    }
}

/// A UDP socket bound to `addr` with SO_BROADCAST (inside the calling thread's
/// namespace).
pub fn udp(addr: SocketAddrV4) -> Result<UdpSocket> {
    let s = UdpSocket::bind(addr).with_context(|| format!("bind {addr}"))?;
    s.set_broadcast(true)?;
    Ok(s)
}
