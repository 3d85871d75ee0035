//! Wake-on-LAN: the AMD "Magic Packet" (6 × 0xFF, then the MAC 16 times), sent as a
//! UDP broadcast to port 9 (discard). It can only switch a machine on.

use std::net::SocketAddr;

use futures::future::BoxFuture;
use provisioner_core::model::MacAddr;
use provisioner_core::power::PowerAction;
use socket2::{Domain, Protocol, Socket, Type};

use super::{PowerDriver, PowerError, PowerOutcome};

/// The 102-byte magic packet for `mac`.
pub fn magic_packet(mac: MacAddr) -> [u8; 102] {
    let mut p = [0xFFu8; 102];
    for chunk in p[6..].chunks_exact_mut(6) {
        chunk.copy_from_slice(&mac.0);
    }
    p
}

/// Sends magic packets for one machine.
#[derive(Debug, Clone)]
pub struct WakeOnLan {
    /// The machine.
    pub mac: MacAddr,
    /// Broadcast address and port.
    pub target: SocketAddr,
    /// Interface to send on (SO_BINDTODEVICE, needs CAP_NET_RAW).
    pub interface: Option<String>,
}

impl WakeOnLan {
    /// Sends one magic packet.
    pub fn send(&self) -> Result<(), PowerError> {
        let err = |what: &str, e: std::io::Error| PowerError::Upstream {
            driver: "wol",
            message: format!("{what}: {e}"),
        };
        let domain = if self.target.is_ipv4() {
            Domain::IPV4
        } else {
            Domain::IPV6
        };
        let sock = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP)).map_err(|e| err("socket", e))?;
        sock.set_broadcast(true).map_err(|e| err("SO_BROADCAST", e))?;
        if let Some(iface) = &self.interface {
            sock.bind_device(Some(iface.as_bytes()))
                .map_err(|e| err(&format!("SO_BINDTODEVICE {iface}"), e))?;
        }
        sock.send_to(&magic_packet(self.mac), &self.target.into())
            .map_err(|e| err(&format!("send to {}", self.target), e))?;
        Ok(())
    }
}

impl PowerDriver for WakeOnLan {
    fn name(&self) -> &'static str {
        "wol"
    }

    fn power(&self, action: PowerAction) -> BoxFuture<'_, Result<PowerOutcome, PowerError>> {
        Box::pin(async move {
            match action {
                PowerAction::Off => Err(PowerError::Unsupported {
                    driver: "wol",
                    action,
                }),
                PowerAction::On => {
                    self.send()?;
                    Ok(PowerOutcome::done(format!(
                        "magic packet sent to {}",
                        self.target
                    )))
                }
                // A running machine ignores the packet: the reset is the operator's.
                PowerAction::Cycle => {
                    self.send()?;
                    Ok(PowerOutcome::manual(format!(
                        "magic packet sent to {} (switches it on if it is off); Wake-on-LAN cannot \
                         reset a running machine: if {} is on, reboot it by hand",
                        self.target, self.mac
                    )))
                }
            }
        })
    }

    fn netboot_next(&self) -> BoxFuture<'_, Result<PowerOutcome, PowerError>> {
        let detail = format!(
            "Wake-on-LAN has no boot override: {} must have network boot first in its firmware boot order",
            self.mac
        );
        Box::pin(async move { Ok(PowerOutcome::manual(detail)) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packet_layout() {
        let mac = MacAddr([0x52, 0x54, 0x00, 0xab, 0xcd, 0xef]);
        let p = magic_packet(mac);
        assert_eq!(&p[..6], &[0xFF; 6]);
        for i in 0..16 {
            assert_eq!(&p[6 + 6 * i..12 + 6 * i], &mac.0, "repetition {i}");
        }
    }
}
