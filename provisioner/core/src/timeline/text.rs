//! The human sentence of each event: the timeline's `detail`, exactly as the
//! appliance has always written it (dashboards, the CLI and operators' scripts read
//! it), rendered from the typed fields only when shown or stored.

use std::fmt;

use time::format_description::well_known::Rfc3339;

use super::{
    ApprovalFlow, ApprovalRequest, DhcpMessage, DhcpSeen, DhcpSent, Event, Rejection, Reporter, ScriptAnswer,
    Verdict,
};
use crate::catalog::ConfigKind;
use crate::dhcp::v4::MessageType;
use crate::inventory::{SpentHow, TokenPurpose};

/// The `detail` of a Flatcar stage-1 config fetch ends with this (the k0s phase
/// it starts).
pub(super) const STAGE1: &str = "Flatcar stage-1 Ignition; k0s: Stage1Served";
/// The `detail` of `disk_installed`.
pub(super) const DISK_INSTALLED: &str =
    "flatcar-install finished; next netboot boots the disk; k0s: DiskInstalled, waiting for K0sInstalled";
/// The `detail` of `k0s_installed`.
pub(super) const K0S_INSTALLED: &str = "k0s installed and started; k0s: K0sInstalled";
/// The `detail` of an `installed` callback.
pub(super) const INSTALLED_CALLBACK: &str = "install reported by the machine";
/// The `detail` of `reimage_requested`.
pub(super) const REIMAGE: &str = "requested by an operator";

impl fmt::Display for DhcpMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // dhcproto's names, upper-case (DISCOVER, OFFER, …, UNKNOWN(n)).
        let name = format!("{:?}", MessageType::from(self.0));
        f.write_str(&name.to_uppercase())
    }
}

/// The code of an upper-case message type name as [`DhcpMessage`] writes it.
pub(super) fn parse_dhcp_message(s: &str) -> Option<DhcpMessage> {
    const NAMES: [&str; 18] = [
        "DISCOVER",
        "OFFER",
        "REQUEST",
        "DECLINE",
        "ACK",
        "NAK",
        "RELEASE",
        "INFORM",
        "FORCERENEW",
        "LEASEQUERY",
        "LEASEUNASSIGNED",
        "LEASEUNKNOWN",
        "LEASEACTIVE",
        "BULKLEASEQUERY",
        "LEASEQUERYDONE",
        "ACTIVELEASEQUERY",
        "LEASEQUERYSTATUS",
        "TLS",
    ];
    if let Some(i) = NAMES.iter().position(|n| *n == s) {
        return u8::try_from(i + 1).ok().map(DhcpMessage);
    }
    let n: u8 = s.strip_prefix("UNKNOWN(")?.strip_suffix(')')?.parse().ok()?;
    // Only codes dhcproto has no name for are written as UNKNOWN(n).
    let m = DhcpMessage(n);
    (m.to_string() == s).then_some(m)
}

fn or_none(v: Option<&str>) -> &str {
    v.unwrap_or("(none)")
}

fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::DhcpSeen(s) => s.fmt(f),
            Self::DhcpLeaseRecorded { state, ip } => write!(f, "{state:?} lease {ip} recorded"),
            Self::DhcpSent(s) => s.fmt(f),
            Self::TftpServed { file, bytes } | Self::AssetServed { file, bytes } => {
                write!(f, "{file} ({bytes} bytes)")
            }
            Self::IpxeScriptServed(ScriptAnswer::Install { profile, image }) => {
                write!(f, "install profile {profile} image {image}")
            }
            Self::IpxeScriptServed(ScriptAnswer::Local { reason }) => write!(f, "local: {reason}"),
            Self::IpxeScriptServed(ScriptAnswer::Unknown { reason }) => write!(f, "unknown: {reason}"),
            Self::ConfigServed {
                bytes,
                config: ConfigKind::Flatcar,
            } => write!(f, "{bytes} bytes ({STAGE1})"),
            Self::ConfigServed { bytes, config } => write!(f, "{bytes} bytes ({config:?})"),
            Self::TokenRejected(r) => r.fmt(f),
            Self::Installed(Reporter::Callback) => f.write_str(INSTALLED_CALLBACK),
            Self::Installed(Reporter::TalosApi { ip }) => write!(f, "{ip} answered Talos Version over mTLS"),
            Self::DiskInstalled => f.write_str(DISK_INSTALLED),
            Self::K0sInstalled => f.write_str(K0S_INSTALLED),
            Self::StateChanged { from, to } => write!(f, "{from} -> {to}"),
            Self::ReimageRequested => f.write_str(REIMAGE),
            Self::PowerAction { detail } | Self::Legacy { detail, .. } => f.write_str(detail),
            Self::MachineUpdated { fields } => write!(f, "changed {}", fields.join(", ")),
            Self::BootLoopDetected { count, window_min } => write!(
                f,
                "boot loop: {count} install boots within {window_min} min without reaching Installed; \
                 install stopped until an operator re-images it"
            ),
            Self::ConfigReplayRefused { how, at } => write!(
                f,
                "config URL fetched again; its token was {} at {}",
                spent_how(*how),
                rfc3339(*at)
            ),
            Self::ConfigTokenExpired { age_secs, ttl_secs } => write!(
                f,
                "config token presented {age_secs} s after issue (TTL {ttl_secs} s); the machine must \
                 netboot again"
            ),
            Self::ConfigRefused {
                stage, peer, reason, ..
            } => match peer {
                Some(p) => write!(f, "{}: peer {p}: {reason}", stage.as_str()),
                None => write!(f, "{}: peer unknown: {reason}", stage.as_str()),
            },
            Self::UuidPinned { uuid, mac } => write!(
                f,
                "SMBIOS UUID {uuid} pinned to {mac}; another UUID is refused until unpinned"
            ),
            Self::UuidUnpinned { uuid, token_id } => write!(
                f,
                "SMBIOS UUID pin {uuid} cleared by API token {token_id}; the next UUID seen is pinned"
            ),
            Self::ApprovalRequested(r) => r.fmt(f),
            Self::Approved(v) => verdict(f, v, "approved"),
            Self::Denied(v) => verdict(f, v, "denied"),
            Self::DeviceTokenIssued { peer, token_secs } => write!(
                f,
                "device authorization exchanged for an access token (peer {}; one config download, \
                 {token_secs} s)",
                peer.map(|p| p.to_string()).unwrap_or_default()
            ),
        }
    }
}

impl fmt::Display for DhcpSeen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} on :{} ({}): {}, arch ",
            self.message,
            self.port,
            self.personality,
            self.client.label()
        )?;
        match self.arch {
            Some(a) => write!(f, "{a}")?,
            None => f.write_str("-")?,
        }
        if let Some(r) = self.relay {
            write!(f, ", relay {r}")?;
        }
        Ok(())
    }
}

impl fmt::Display for DhcpSent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.message.fmt(f)?;
        if let Some(a) = self.address {
            write!(f, " {a}")?;
        }
        if let Some(b) = &self.boot_file {
            write!(f, " boot {b}")?;
        }
        write!(f, " to {}", self.to)
    }
}

fn spent_how(how: SpentHow) -> &'static str {
    match how {
        SpentHow::Used => "used",
        SpentHow::Revoked => "revoked by a newer boot",
    }
}

/// The label a token's purpose has in metrics and events.
pub fn purpose_label(p: TokenPurpose) -> &'static str {
    match p {
        TokenPurpose::Config => "config",
        TokenPurpose::InstalledCallback => "installed_callback",
        TokenPurpose::K0sInstalledCallback => "k0s_installed_callback",
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotInstalling => f.write_str("config requested but machine is not installing"),
            Self::NotRendered { reason } => write!(f, "config not rendered: {reason}"),
            Self::K0sCallbackRefused { reason } => write!(f, "k0s callback refused: {reason}"),
            Self::WrongEndpoint => f.write_str("token used at the wrong endpoint"),
            Self::Expired { age_secs, ttl_secs } => {
                write!(f, "callback token expired ({age_secs} s old, TTL {ttl_secs} s)")
            }
            Self::Spent { purpose, how, at } => write!(
                f,
                "spent {} token presented again; it was {} at {}",
                purpose_label(*purpose),
                spent_how(*how),
                rfc3339(*at)
            ),
        }
    }
}

impl fmt::Display for ApprovalRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (code, uuid, peer, mac) = (&self.code, or_none(self.uuid.as_deref()), self.peer, self.mac);
        match self.flow {
            ApprovalFlow::Admission => write!(
                f,
                "install waits for an operator: code {code} uuid {uuid} ip {peer}; approve with \
                 `provisioner machines approve {mac} --code {code}`"
            ),
            ApprovalFlow::Device => write!(
                f,
                "device authorization (Talos OAuth): code {code} uuid {uuid} peer {peer}; approve with \
                 `provisioner machines approve {mac} --code {code}`"
            ),
        }
    }
}

fn verdict(f: &mut fmt::Formatter<'_>, v: &Verdict, verb: &str) -> fmt::Result {
    let (code, uuid, peer, token) = (&v.code, or_none(v.uuid.as_deref()), v.peer, &v.token_id);
    match v.flow {
        ApprovalFlow::Device => write!(
            f,
            "device authorization {code} (uuid {uuid} peer {peer}) {verb} by API token {token}"
        ),
        ApprovalFlow::Admission => {
            write!(
                f,
                "install {verb} by API token {token}: code {code} uuid {uuid} ip {peer}"
            )?;
            match v.until {
                Some(t) => write!(f, " until {}", rfc3339(t)),
                None => Ok(()),
            }
        }
    }
}
