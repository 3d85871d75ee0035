//! Peer binding: is the host asking for a machine's boot answer that machine?
//!
//! The MAC in `/ipxe?mac=…` is whatever the requester typed; the only facts the
//! appliance can check are what its own kernel and DHCP server saw:
//!
//! 1. on the same L2, the kernel's neighbour (ARP) entry for the peer IP holds the
//!    MAC the frames came from (the daemon may refresh it with its own probe first);
//! 2. in full DHCP mode (relayed clients included) the lease store says which MAC
//!    holds the peer IP;
//! 3. after the script, a config fetch or callback may come from the IP the script
//!    was served to (that request passed 1 or 2), or from another NIC declared for
//!    the node in `infra/`: the installed OS may use a different interface than iPXE.
//!
//! Behind a relay with an external DHCP server neither fact exists: the request is
//! [`Refusal::Unverifiable`] unless an operator approved the machine. Loopback peers
//! are never trusted: on a real appliance nothing legitimate boots from 127.0.0.1.
//!
//! The decision is [`bind`], a pure function over a [`PeerFacts`] lookup, so it is
//! table-tested here and the netlink/procfs reading stays in the daemon.

use std::fmt;
use std::net::IpAddr;

use crate::model::MacAddr;

/// Where on the boot path a request is (written as [`Stage::as_str`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// `/ipxe`: the script that would carry a fresh config token.
    #[serde(rename = "ipxe")]
    Script,
    /// `/config/<t>`.
    Config,
    /// `/callback/<t>/…`.
    Callback,
    /// The RFC 8628 device authorization and token endpoints.
    DeviceAuth,
}

impl Stage {
    /// Label for metrics and events.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Script => "ipxe",
            Self::Config => "config",
            Self::Callback => "callback",
            Self::DeviceAuth => "device_auth",
        }
    }
}

/// What the daemon's DHCP server knows about an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseFact {
    /// The appliance does not run full DHCP: leases say nothing.
    NotFullMode,
    /// Full mode, and no live lease on the address.
    NoLease,
    /// Full mode: this MAC holds a live lease on the address.
    Holder(MacAddr),
}

/// The lookups [`bind`] needs. Implementations may block briefly (a procfs read, a
/// short ARP refresh) and must be cancel-safe.
pub trait PeerFacts: Send + Sync + fmt::Debug {
    /// The MAC of a complete neighbour entry for `ip`, if the kernel has one.
    fn neighbour(&self, ip: IpAddr) -> Option<MacAddr>;
    /// Whether `ip` is on a network the appliance is directly attached to (so a
    /// neighbour entry must exist for a genuine peer).
    fn on_link(&self, ip: IpAddr) -> bool;
    /// Who holds `ip`'s DHCP lease.
    fn lease(&self, ip: IpAddr) -> LeaseFact;
}

/// One request to bind.
#[derive(Debug, Clone, Copy)]
pub struct Claim<'a> {
    /// Where on the boot path.
    pub stage: Stage,
    /// The TCP peer address as accepted (IPv4-mapped IPv6 is fine).
    pub peer: IpAddr,
    /// The machine named by the request (query MAC, or the token's machine).
    pub mac: MacAddr,
    /// Its other NICs declared in `infra/` (used after [`Stage::Script`] only).
    pub other_nics: &'a [MacAddr],
    /// The address its script was served to (after [`Stage::Script`] only).
    pub script_peer: Option<IpAddr>,
    /// Whether an operator approval covers this machine and UUID now.
    pub approved: bool,
}

/// Why the peer counts as the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    /// The neighbour entry for the peer holds the machine's MAC.
    Neighbour,
    /// The neighbour entry holds another NIC declared for the node.
    OtherNic(MacAddr),
    /// The peer holds the machine's (or its other NIC's) DHCP lease.
    Lease,
    /// The peer is the address the machine's script was served to.
    ScriptPeer,
    /// Not checkable, but an operator approved this machine.
    Approved,
    /// Binding is switched off (`peer_binding.enabled: false`).
    Disabled,
}

/// Why the peer does not count as the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A loopback peer: the appliance cannot tell which machine it is.
    Loopback,
    /// Not a unicast address (unspecified, multicast, broadcast).
    NotUnicast,
    /// The neighbour entry names another MAC (spoofed or wrong MAC in the request).
    NeighbourMismatch {
        /// The MAC the kernel saw.
        seen: MacAddr,
    },
    /// On a directly attached network but no neighbour entry, even after a probe.
    NoNeighbour,
    /// The peer's address is leased to another MAC.
    LeaseMismatch {
        /// The lease holder.
        holder: MacAddr,
    },
    /// Neither a neighbour entry nor a lease can exist (routed peer, external DHCP,
    /// or IPv6 without a lease) and no operator approval covers the machine.
    Unverifiable,
}

impl Refusal {
    /// Stable label for metrics.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Loopback => "loopback_peer",
            Self::NotUnicast => "not_unicast",
            Self::NeighbourMismatch { .. } => "neighbour_mismatch",
            Self::NoNeighbour => "no_neighbour_entry",
            Self::LeaseMismatch { .. } => "lease_mismatch",
            Self::Unverifiable => "binding_unverifiable",
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Loopback => f.write_str("the request came over loopback; loopback peers are never trusted"),
            Self::NotUnicast => f.write_str("the peer address is not a unicast address"),
            Self::NeighbourMismatch { seen } => {
                write!(f, "the peer's neighbour entry is {seen}, not the machine's MAC")
            }
            Self::NoNeighbour => f.write_str(
                "the peer is on a directly attached network but has no neighbour entry (absent or spoofed)",
            ),
            Self::LeaseMismatch { holder } => write!(f, "the peer's address is leased to {holder}"),
            Self::Unverifiable => f.write_str(
                "binding cannot be checked: the peer is not on a directly attached network and holds no \
                 lease of the appliance's DHCP server (relay with external DHCP); approve the machine \
                 (provisioner machines approve MAC) to release its config",
            ),
        }
    }
}

/// The address as the rules see it: IPv4-mapped IPv6 (`::ffff:a.b.c.d`, what a
/// dual-stack listener reports for IPv4 peers) becomes the IPv4 address.
pub fn canonical(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

fn unicast(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => !(v4.is_unspecified() || v4.is_multicast() || v4.is_broadcast()),
        IpAddr::V6(v6) => !(v6.is_unspecified() || v6.is_multicast()),
    }
}

/// Decides whether `claim.peer` is the machine `claim.mac` (see the module docs for
/// the order of the rules).
pub fn bind(claim: &Claim<'_>, facts: &dyn PeerFacts) -> Result<Bound, Refusal> {
    let ip = canonical(claim.peer);
    if ip.is_loopback() {
        return Err(Refusal::Loopback);
    }
    if !unicast(ip) {
        return Err(Refusal::NotUnicast);
    }
    let later = claim.stage != Stage::Script;
    let ours = |m: MacAddr| m == claim.mac || (later && claim.other_nics.contains(&m));
    if later && claim.script_peer.map(canonical) == Some(ip) {
        return Ok(Bound::ScriptPeer);
    }
    if let Some(seen) = facts.neighbour(ip) {
        return match seen {
            m if m == claim.mac => Ok(Bound::Neighbour),
            m if ours(m) => Ok(Bound::OtherNic(m)),
            m => Err(Refusal::NeighbourMismatch { seen: m }),
        };
    }
    match facts.lease(ip) {
        LeaseFact::Holder(m) if ours(m) => return Ok(Bound::Lease),
        LeaseFact::Holder(m) => return Err(Refusal::LeaseMismatch { holder: m }),
        LeaseFact::NotFullMode | LeaseFact::NoLease => {}
    }
    if facts.on_link(ip) {
        return Err(Refusal::NoNeighbour);
    }
    if claim.approved {
        Ok(Bound::Approved)
    } else {
        Err(Refusal::Unverifiable)
    }
}
