//! The network checks: other DHCP servers, the appliance's own listeners, the
//! clusters' node API ports.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

use provisioner_core::dhcp::Personality;

use super::{Finding, Severity};
use crate::config::Config;
use crate::inputs::arming::Clusters;

/// The Talos control-plane ports besides apid: trustd (workers fetch their apid
/// certificates there) and the Kubernetes API (talos.md, "port 50000/50001"; the
/// workflow's `/readyz`).
const TRUSTD: u16 = 50001;
const KUBE_API: u16 = 6443;
/// k0s's control API, where controllers join (k0s-flatcar.md: `k0sApiPort` 9443).
const K0S_API: u16 = 9443;

/// The full-mode probe ([`crate::dhcp::probe::other_servers`]) on the boot interface;
/// what an answer means depends on `dhcp.mode`.
pub fn dhcp(cfg: &Config, wait: Duration) -> Vec<Finding> {
    const C: &str = "dhcp";
    if wait.is_zero() {
        return vec![Finding::new(
            C,
            Severity::Note,
            "DHCP probe skipped (--dhcp-wait 0)",
        )];
    }
    let iface = cfg.dhcp.interface.as_deref().or(cfg.interface.as_deref());
    let on = iface.map(|i| format!(" on {i}")).unwrap_or_default();
    let answers = match crate::dhcp::probe::other_servers(iface, wait) {
        Ok(a) => a,
        Err(e) => {
            return vec![
                Finding::new(
                    C,
                    Severity::Warning,
                    format!("could not probe for DHCP servers{on}: {e}"),
                )
                .fix("run doctor as root (the probe sends from UDP port 68) with no DHCP client bound to it"),
            ];
        }
    };
    let own: Vec<IpAddr> = cfg
        .server_ip
        .into_iter()
        .chain(crate::sys::netinfo::detect_server_ip(iface))
        .collect();
    let (mine, others): (Vec<_>, Vec<_>) = answers.iter().partition(|a| own.contains(&IpAddr::V4(a.server)));
    let list = others
        .iter()
        .map(|a| format!("{} (offered {})", a.server, a.offered))
        .collect::<Vec<_>>()
        .join(", ");
    let mut out = Vec::new();
    if !mine.is_empty() {
        out.push(Finding::new(
            C,
            Severity::Ok,
            format!("this appliance answers the probe{on}"),
        ));
    }
    out.push(match (cfg.dhcp.mode, others.is_empty()) {
        (Personality::Full, false) => Finding::new(
            C,
            Severity::Error,
            format!("another DHCP server answers on the boot segment{on}: {list}; full mode refuses to start next to it"),
        )
        .fix("switch that server off for this segment, or run the appliance with `dhcp.mode: proxy` next to it (`dhcp.force: true` starts full mode anyway)"),
        (Personality::Full, true) => {
            Finding::new(C, Severity::Ok, format!("no other DHCP server answers{on}"))
        }
        (Personality::Proxy, false) => Finding::new(
            C,
            Severity::Ok,
            format!("DHCP server {list} answers{on}; proxy mode adds the boot options next to it"),
        ),
        (Personality::Proxy, true) => Finding::new(
            C,
            Severity::Error,
            format!("no DHCP server answers{on}: proxy mode hands out no address, so no machine can boot"),
        )
        .fix("run a DHCP server on the segment, or set `dhcp.mode: full` with `subnet` and `pool`"),
        (Personality::Off, false) => Finding::new(
            C,
            Severity::Ok,
            format!("DHCP server {list} answers{on}; it must chain network-booting clients to this appliance"),
        )
        .fix("`provisioner dhcp-snippet --for <your server>` prints its configuration"),
        (Personality::Off, true) => Finding::new(
            C,
            Severity::Error,
            format!("no DHCP server answers{on} and the appliance's DHCP is off: machines get no address"),
        )
        .fix("set `dhcp.mode: full` (the appliance serves the subnet) or `proxy` next to your DHCP server"),
    });
    out
}

/// Connects to `addr` within `timeout`.
fn connect(addr: SocketAddr, timeout: Duration) -> io::Result<()> {
    TcpStream::connect_timeout(&addr, timeout).map(drop)
}

fn loopback_if_unspecified(a: SocketAddr) -> SocketAddr {
    match a.ip() {
        IpAddr::V4(v) if v.is_unspecified() => SocketAddr::new(Ipv4Addr::LOCALHOST.into(), a.port()),
        IpAddr::V6(v) if v.is_unspecified() => {
            SocketAddr::new(std::net::Ipv6Addr::LOCALHOST.into(), a.port())
        }
        _ => a,
    }
}

/// What a failed connect or request means: the port is free (nothing runs) or bound
/// by something that is not reachable at the address machines use.
fn not_reached(what: &str, target: SocketAddr, listen: SocketAddr, e: &io::Error, udp: bool) -> Finding {
    let free = if udp {
        UdpSocket::bind(listen).is_ok()
    } else {
        std::net::TcpListener::bind(listen).is_ok()
    };
    if free {
        Finding::new(
            "listeners",
            Severity::Error,
            format!("{what}: nothing listens on {listen} ({target}: {e}); the service is not running"),
        )
        .fix("start it: `systemctl start provisioner` (or `provisioner serve`)")
    } else {
        Finding::new(
            "listeners",
            Severity::Error,
            format!("{what}: {listen} is bound, but {target} cannot be reached: {e}"),
        )
        .fix("bind the listener to 0.0.0.0 or the boot interface's address, set `server_ip` to an address of this host, and allow the port in the host firewall")
    }
}

/// The HTTP boot path and TFTP where machines are told to go (`server_ip`, else the
/// boot interface's address), the API at its own address.
pub fn listeners(cfg: &Config, timeout: Duration) -> Vec<Finding> {
    let (ip, _) = crate::cmd::commands::advertised(cfg);
    let mut out = Vec::new();
    let http = SocketAddr::new(ip, cfg.http_listen.port());
    out.push(match connect(http, timeout) {
        Ok(()) => Finding::new(
            "listeners",
            Severity::Ok,
            format!("HTTP boot path answers at {http}"),
        ),
        Err(e) => not_reached("HTTP boot path", http, cfg.http_listen, &e, false),
    });
    let api = loopback_if_unspecified(cfg.api_listen);
    out.push(match connect(api, timeout) {
        Ok(()) => Finding::new("listeners", Severity::Ok, format!("API answers at {api}")),
        Err(e) => not_reached("API", api, cfg.api_listen, &e, false),
    });
    let tftp = SocketAddr::new(ip, cfg.tftp_listen.port());
    out.push(match tftp_answers(tftp, timeout) {
        Ok(()) => Finding::new("listeners", Severity::Ok, format!("TFTP answers at {tftp}")),
        Err(e) => not_reached("TFTP", tftp, cfg.tftp_listen, &e, true),
    });
    out
}

/// Sends a read request (RFC 1350 §5: opcode 1, file name, 0, mode, 0) for a file
/// that does not exist; any DATA (3) or ERROR (5) packet back means a TFTP server
/// answers. The socket stays unconnected (the answer comes from the server's transfer
/// port, RFC 1350 §4), so a closed port is a timeout here; [`not_reached`] then tells
/// a free port from an unreachable one.
fn tftp_answers(target: SocketAddr, timeout: Duration) -> io::Result<()> {
    let bind: SocketAddr = if target.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let s = UdpSocket::bind(bind)?;
    s.set_read_timeout(Some(timeout))?;
    s.send_to(b"\x00\x01provisioner-doctor-probe\x00octet\x00", target)?;
    let mut buf = [0u8; 600];
    let (n, _) = s.recv_from(&mut buf).map_err(|e| match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
            io::Error::new(io::ErrorKind::TimedOut, "timed out")
        }
        _ => e,
    })?;
    match buf.get(..n.min(2)) {
        Some([0, 3]) | Some([0, 5]) => Ok(()),
        _ => Err(io::Error::other("an answer that is not TFTP")),
    }
}

/// One node and the ports the appliance or its peers need open on it.
struct Node {
    cluster: String,
    name: String,
    ip: Option<IpAddr>,
    ports: Vec<(u16, &'static str)>,
}

/// Each armed cluster's nodes: the API ports reachable from here. A node where no
/// port answers and none refuses is taken to be down and skipped; when no node of a
/// cluster is up, the cluster is skipped with a note. Unarmed clusters are never dialled.
pub fn nodes(cfg: &Config, clusters: &Clusters, timeout: Duration) -> Vec<Finding> {
    const C: &str = "nodes";
    let mut out = Vec::new();
    for (name, why) in &clusters.unarmed {
        out.push(Finding::new(
            C,
            Severity::Note,
            format!("cluster {name}: {why}; its nodes are not dialled"),
        ));
    }
    let mut all = Vec::new();
    for (name, c) in &clusters.talos {
        for n in &c.nodes {
            let mut ports = vec![(cfg.talos.api_port, "Talos apid")];
            if n.control_plane {
                ports.extend([(TRUSTD, "Talos trustd"), (KUBE_API, "Kubernetes API")]);
            }
            all.push(Node {
                cluster: name.clone(),
                name: n.hostname.clone(),
                ip: crate::os::talos::reset::node_ip(n),
                ports,
            });
        }
    }
    for (name, c) in &clusters.k0s {
        for n in c.nodes.iter().filter(|n| n.control_plane) {
            all.push(Node {
                cluster: name.clone(),
                name: n.hostname.clone(),
                ip: n.ip_address,
                ports: vec![(KUBE_API, "Kubernetes API"), (K0S_API, "k0s API")],
            });
        }
    }
    // Every node at once: a powered-off node costs one timeout, not one per port.
    let results: Vec<Vec<io::Result<()>>> = std::thread::scope(|s| {
        let handles: Vec<_> = all
            .iter()
            .map(|n| {
                s.spawn(move || {
                    n.ports
                        .iter()
                        .map(|(p, _)| match n.ip {
                            Some(ip) => connect(SocketAddr::new(ip, *p), timeout),
                            None => Err(io::Error::other("no ipAddress")),
                        })
                        .collect()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_default())
            .collect()
    });
    let mut up: std::collections::BTreeMap<&str, usize> = Default::default();
    for (n, res) in all.iter().zip(&results) {
        let count = up.entry(n.cluster.as_str()).or_default();
        let Some(ip) = n.ip else {
            out.push(Finding::new(
                C,
                Severity::Note,
                format!(
                    "cluster {}, node {}: no ipAddress in infra/; not checked",
                    n.cluster, n.name
                ),
            ));
            continue;
        };
        let open: Vec<_> = n
            .ports
            .iter()
            .zip(res)
            .filter(|(_, r)| r.is_ok())
            .map(|(p, _)| p)
            .collect();
        let refused = res.iter().any(|r| {
            r.as_ref()
                .is_err_and(|e| e.kind() == io::ErrorKind::ConnectionRefused)
        });
        let who = format!("cluster {}, node {} ({ip})", n.cluster, n.name);
        if open.is_empty() && !refused {
            continue; // down (or not installed yet): not up
        }
        *count += 1;
        if open.len() == n.ports.len() {
            let list: Vec<String> = open.iter().map(|(p, w)| format!("{w} {p}")).collect();
            out.push(Finding::new(
                C,
                Severity::Ok,
                format!("{who}: {} reachable", list.join(", ")),
            ));
            continue;
        }
        for ((p, w), r) in n.ports.iter().zip(res) {
            if let Err(e) = r {
                out.push(
                    Finding::new(C, Severity::Error, format!("{who}: {w} port {p} not reachable ({e}) while the node is up"))
                        .fix(format!("allow TCP {p} from this appliance to {ip} (host and network firewalls); if the node is still installing, run doctor again once it is")),
                );
            }
        }
    }
    for (cluster, count) in up {
        if count == 0 {
            out.push(Finding::new(
                C,
                Severity::Note,
                format!("cluster {cluster}: no node is up; API ports not checked"),
            ));
        }
    }
    out
}
