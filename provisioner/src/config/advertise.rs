//! The address and base URL the appliance tells machines to use.

use super::Config;

/// The address and base URL machines are told to use.
pub fn advertised(cfg: &Config) -> (std::net::IpAddr, String) {
    advertised_on(cfg, cfg.http_listen.port())
}

/// As [`advertised`], for an HTTP listener actually bound to `port` (port 0 in the
/// configuration means "any", so the bound port is what clients must use).
pub fn advertised_on(cfg: &Config, port: u16) -> (std::net::IpAddr, String) {
    let ip = cfg
        .server_ip
        .or_else(|| crate::sys::netinfo::detect_server_ip(cfg.interface.as_deref()))
        .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));
    let base = if port == 80 {
        format!("http://{ip}")
    } else {
        format!("http://{ip}:{port}")
    };
    (ip, base)
}
