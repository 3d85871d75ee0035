//! The facts carried by timeline events: what a DHCP packet, a script answer, a
//! token refusal or an approval was.

use std::net::{IpAddr, Ipv4Addr, SocketAddrV4};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::dhcp::Personality;
use crate::dhcp::classify::ClientKind;
use crate::inventory::{SpentHow, TokenPurpose};
use crate::model::MacAddr;

/// A DHCP message type (option 53) by its code (RFC 2132 §9.6), kept as the byte so
/// recording a packet allocates nothing; written as its upper-case name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DhcpMessage(pub u8);

/// A DHCP request seen from the machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DhcpSeen {
    /// Option 53.
    pub message: DhcpMessage,
    /// The UDP port it reached (67, or 4011 for the PXE boot server).
    pub port: u16,
    /// The DHCP role the appliance plays.
    pub personality: Personality,
    /// Who asked (iPXE, firmware PXE, UEFI HTTP Boot, a plain client).
    pub client: ClientKind,
    /// Option 93 (client system architecture), if sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arch: Option<u16>,
    /// `giaddr`, when a relay forwarded it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relay: Option<Ipv4Addr>,
}

/// A DHCP answer sent to the machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DhcpSent {
    /// Option 53 of the reply (OFFER, ACK, NAK).
    pub message: DhcpMessage,
    /// `yiaddr`, when an address was given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<Ipv4Addr>,
    /// The boot file of an OFFER or ACK to a boot client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_file: Option<String>,
    /// Where the reply went.
    pub to: SocketAddrV4,
}

/// What an `/ipxe` answer said.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case", deny_unknown_fields)]
pub enum ScriptAnswer {
    /// Install this profile's image.
    Install {
        /// Profile id.
        profile: String,
        /// Image id.
        image: String,
    },
    /// Boot the local disk.
    Local {
        /// Why.
        reason: String,
    },
    /// No profile.
    Unknown {
        /// Why.
        reason: String,
    },
}

/// Why a one-time token was not honoured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "why", rename_all = "snake_case", deny_unknown_fields)]
pub enum Rejection {
    /// A config token of a machine that is not being installed.
    NotInstalling,
    /// The config could not be rendered (the token was put back).
    NotRendered {
        /// The renderer's reason.
        reason: String,
    },
    /// The k0s callback does not fit the machine's state or k0s phase.
    K0sCallbackRefused {
        /// Why.
        reason: String,
    },
    /// A live token presented at another endpoint than its own (it is spent now).
    WrongEndpoint,
    /// A callback token presented after its TTL (it is spent now).
    Expired {
        /// Its age.
        age_secs: i64,
        /// The TTL.
        ttl_secs: i64,
    },
    /// A spent token presented again.
    Spent {
        /// What the token was for.
        purpose: TokenPurpose,
        /// How it was spent.
        how: SpentHow,
        /// When.
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
    },
}

/// Who reported a machine installed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "by", rename_all = "snake_case", deny_unknown_fields)]
pub enum Reporter {
    /// The installed OS called its one-time `installed` callback.
    Callback,
    /// The node answered the Talos API `Version` call over mTLS.
    TalosApi {
        /// The node's address.
        ip: IpAddr,
    },
}

/// Which release flow an approval belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalFlow {
    /// Operator admission of an install (`admission: approve`).
    Admission,
    /// An RFC 8628 device authorization (Talos OAuth).
    Device,
}

/// A machine waiting for an operator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalRequest {
    /// Which flow.
    pub flow: ApprovalFlow,
    /// The user code on its console.
    pub code: String,
    /// The SMBIOS UUID it sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    /// The address it asked from.
    pub peer: IpAddr,
    /// Its boot MAC (named in the command to approve it).
    pub mac: MacAddr,
}

/// An operator's decision on a waiting machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Verdict {
    /// Which flow.
    pub flow: ApprovalFlow,
    /// The user code decided on.
    pub code: String,
    /// The SMBIOS UUID of the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    /// The address of the request.
    pub peer: IpAddr,
    /// The API token that decided.
    pub token_id: String,
    /// An admission approval's end.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    pub until: Option<OffsetDateTime>,
}
