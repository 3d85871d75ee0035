//! Every socket the daemon serves on, bound before anything is served
//! ([`Listeners::bind`]), so a port in use fails the start, and tests can bind port 0
//! and read the addresses back.

use std::time::Duration;

use anyhow::Context;
use provisioner_core::dhcp::Personality;
use provisioner_core::dhcp::reply::Port;

use crate::config::Config;

/// Pending-connection queue of the boot HTTP listener. `tokio::net::TcpListener::bind`
/// listens with 1,024; in a 2,000-machine boot storm (`tests/bench/dhcp/bootstorm.sh`)
/// connections arrive faster than the accept loop takes them and the kernel reset the
/// overflow (10 of 2,000 `GET /boot.ipxe`). Linux clamps it to `net.core.somaxconn`
/// (4,096 by default since 5.4, `listen(2)`).
const HTTP_BACKLOG: u32 = 4096;

/// Binds the boot HTTP listener with [`HTTP_BACKLOG`] (`SO_REUSEADDR` as
/// `TcpListener::bind` sets it on Unix, so a restart does not wait out TIME_WAIT).
fn bind_http(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let sock = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    sock.set_reuseaddr(true)?;
    sock.bind(addr)?;
    sock.listen(HTTP_BACKLOG)
}

/// The bound sockets.
#[derive(Debug)]
pub struct Listeners {
    /// The HTTP boot path (iPXE scripts, kernels, configs).
    pub http: tokio::net::TcpListener,
    /// The operator API (HTTPS).
    pub api: std::net::TcpListener,
    /// TFTP.
    pub tftp: std::net::UdpSocket,
    /// DHCP and the PXE boot server port (none when `dhcp.mode` is `off`).
    pub dhcp: Vec<(Port, std::net::UdpSocket)>,
}

impl Listeners {
    /// Binds every listener of `cfg`.
    pub async fn bind(cfg: &Config) -> anyhow::Result<Self> {
        let http =
            bind_http(cfg.http_listen).with_context(|| format!("binding HTTP on {}", cfg.http_listen))?;
        let api = std::net::TcpListener::bind(cfg.api_listen)
            .with_context(|| format!("binding API on {}", cfg.api_listen))?;
        api.set_nonblocking(true)?;
        let tftp = std::net::UdpSocket::bind(cfg.tftp_listen)
            .with_context(|| format!("binding TFTP on {}", cfg.tftp_listen))?;
        let dhcp = dhcp_sockets(cfg)?;
        Ok(Self {
            http,
            api,
            tftp,
            dhcp,
        })
    }
}

/// Binds the DHCP sockets for `dhcp.mode` (none when `off`). In `full` mode it first
/// probes for another DHCP server and refuses to start if one answers, unless
/// `dhcp.force` is set.
fn dhcp_sockets(cfg: &Config) -> anyhow::Result<Vec<(Port, std::net::UdpSocket)>> {
    let d = &cfg.dhcp;
    if d.mode == Personality::Off {
        return Ok(Vec::new());
    }
    d.full_config()?;
    let iface = d.interface.as_deref().or(cfg.interface.as_deref());
    if d.mode == Personality::Full && d.probe_secs > 0 {
        let answers = crate::dhcp::probe::other_servers(iface, Duration::from_secs(d.probe_secs))
            .context("probing for other DHCP servers (set dhcp.probe_secs: 0 to skip)")?;
        if !answers.is_empty() {
            let list: Vec<String> = answers
                .iter()
                .map(|a| format!("{} (offered {})", a.server, a.offered))
                .collect();
            if !d.force {
                anyhow::bail!(
                    "another DHCP server answers on this segment: {}; refusing to start full mode \
                     (use dhcp.mode: proxy next to it, or set dhcp.force: true)",
                    list.join(", ")
                );
            }
            tracing::warn!(servers = %list.join(", "), "another DHCP server answers; starting anyway (dhcp.force)");
        } else {
            tracing::info!("no other DHCP server answered the probe");
        }
    }
    let mut out = Vec::new();
    let ports = [(Port::Dhcp, d.port), (Port::PxeBootServer, d.pxe_port)];
    for (port, number) in ports {
        if number == 0 {
            continue;
        }
        let addr = std::net::SocketAddrV4::new(d.listen, number);
        let sock = crate::dhcp::socket::bind(addr, iface).with_context(|| {
            format!(
                "binding DHCP on {addr}{}",
                iface.map(|i| format!(" ({i})")).unwrap_or_default()
            )
        })?;
        let what = match port {
            Port::Dhcp => "DHCP",
            Port::PxeBootServer => "PXE boot server",
        };
        tracing::info!(mode = %d.mode, "listening for {what} on {}", sock.local_addr()?);
        out.push((port, sock));
    }
    Ok(out)
}
