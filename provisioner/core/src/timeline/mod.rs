//! A machine's boot timeline as typed data.
//!
//! Every step the appliance takes for a machine is an [`Event`]: a variant with the
//! facts of that step (`StateChanged { from, to }`, `ConfigRefused { stage, peer,
//! reason, .. }`, `DhcpSeen { .. }`). Code that needs to know what happened (the k0s
//! phase, the dashboard's state) matches on variants; the human sentence an operator
//! reads is rendered from them only at the edges ([`Event`]'s `Display`, see
//! [`text`]), and the coarse [`EventKind`] is derived from the variant.
//!
//! On the wire (store rows, exports, the API) an entry is
//! `{"at", "kind", "detail", "event": {"type", ..fields}}`: `kind` and `detail` as
//! before for readers that only know those, `event` for the typed fields. Entries
//! written before the typed timeline (schema version 1) have only `at`, `kind` and
//! `detail`; they are read through [`legacy`], which recovers the typed event where
//! the text is one this appliance wrote, and keeps the text as
//! [`Event::Legacy`] otherwise.

mod facts;
pub mod legacy;
mod text;
pub mod waterfall;
mod wire;

pub use facts::{
    ApprovalFlow, ApprovalRequest, DhcpMessage, DhcpSeen, DhcpSent, Rejection, Reporter, ScriptAnswer,
    Verdict,
};
pub use text::purpose_label;
pub use wire::Wire;

use std::net::{IpAddr, Ipv4Addr};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::catalog::ConfigKind;
use crate::dhcp::lease::LeaseState;
use crate::inventory::SpentHow;
use crate::model::{MacAddr, MachineState};
use crate::release::binding::Stage;

/// What happened in one step of a machine's boot (the coarse class of an
/// [`Event`], as shown in lists and filters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A DHCP packet from the machine was seen (detail: type, port, personality,
    /// classification).
    DhcpSeen,
    /// The appliance answered a DHCP packet (detail: OFFER/ACK/NAK, address, boot file).
    DhcpSent,
    /// A file was served over TFTP.
    TftpServed,
    /// An iPXE script was served (detail: the decision).
    IpxeScriptServed,
    /// A kernel/initrd asset was served over HTTP.
    AssetServed,
    /// The one-time machine config was fetched.
    ConfigServed,
    /// A one-time token was presented again or was unknown.
    TokenRejected,
    /// The installed OS reported back.
    Installed,
    /// Flatcar path: `flatcar-install` finished (the machine's state becomes
    /// `Installed`, so its next netboot boots the disk); k0s comes next.
    DiskInstalled,
    /// Flatcar path: k0s was installed and started on the first disk boot.
    K0sInstalled,
    /// The lifecycle state changed (detail: `From -> To`).
    StateChanged,
    /// An operator asked for a reinstall (detail: what was done about it).
    ReimageRequested,
    /// A power action was attempted (detail: action, driver, outcome).
    PowerAction,
    /// An operator changed labels, profile, boot file or power settings.
    MachineUpdated,
    /// Too many install boots without reaching `Installed`: install stopped.
    BootLoopDetected,
    /// A spent (used or revoked) config token was presented again and refused.
    ConfigReplayRefused,
    /// A config token was presented after its TTL and refused.
    ConfigTokenExpired,
    /// A request naming this machine was refused its script, config or callback
    /// (detail: stage, peer, reason): peer binding, UUID pin, device token.
    ConfigRefused,
    /// The first SMBIOS UUID seen from the machine was pinned to its MAC.
    UuidPinned,
    /// An operator cleared the UUID pin (detail: the token id).
    UuidUnpinned,
    /// The machine waits for an operator (detail: user code, UUID, peer).
    ApprovalRequested,
    /// An operator approved its install or device authorization (detail: token id).
    Approved,
    /// An operator denied its install or device authorization (detail: token id).
    Denied,
    /// Its RFC 8628 device authorization was exchanged for an access token.
    DeviceTokenIssued,
}

/// One step of a machine's boot, as data. Rendered to the timeline's `detail` text
/// by `Display` (module `text`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Event {
    /// A DHCP request (kind `dhcp_seen`).
    DhcpSeen(DhcpSeen),
    /// A RELEASE or DECLINE recorded on a lease (kind `dhcp_seen`).
    DhcpLeaseRecorded {
        /// Released or declined.
        state: LeaseState,
        /// The address.
        ip: Ipv4Addr,
    },
    /// A DHCP answer.
    DhcpSent(DhcpSent),
    /// A TFTP transfer completed.
    TftpServed {
        /// The path requested.
        file: String,
        /// Bytes sent.
        bytes: u64,
    },
    /// An `/ipxe` script was served.
    IpxeScriptServed(ScriptAnswer),
    /// A kernel, initrd or mirror file was served over HTTP.
    AssetServed {
        /// `image/file`, or `mirror kind/version/file`.
        file: String,
        /// Bytes sent.
        bytes: u64,
    },
    /// The one-time config was fetched.
    ConfigServed {
        /// Its size.
        bytes: u64,
        /// Which config (Flatcar: the stage-1 Ignition, a k0s signal).
        config: ConfigKind,
    },
    /// A one-time token was not honoured.
    TokenRejected(Rejection),
    /// The installed OS reported back.
    Installed(Reporter),
    /// Flatcar: `flatcar-install` finished.
    DiskInstalled,
    /// Flatcar: k0s installed and started.
    K0sInstalled,
    /// The lifecycle state changed.
    StateChanged {
        /// Before.
        from: MachineState,
        /// After.
        to: MachineState,
    },
    /// An operator asked for a reinstall.
    ReimageRequested,
    /// A power action and how it went (the driver's own words).
    PowerAction {
        /// Action, driver, outcome.
        detail: String,
    },
    /// An operator changed these fields.
    MachineUpdated {
        /// `labels`, `profile`, `boot_file`, `power`.
        fields: Vec<String>,
    },
    /// Boot-loop protection stopped installing it.
    BootLoopDetected {
        /// Install scripts in the window.
        count: usize,
        /// The window, minutes.
        window_min: i64,
    },
    /// A spent config token fetched again.
    ConfigReplayRefused {
        /// How it was spent.
        how: SpentHow,
        /// When.
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
    },
    /// A config token presented after its TTL.
    ConfigTokenExpired {
        /// Seconds since it was issued.
        age_secs: i64,
        /// The TTL, seconds.
        ttl_secs: i64,
    },
    /// A request naming this machine was refused.
    ConfigRefused {
        /// Where on the boot path.
        stage: Stage,
        /// Who asked.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        peer: Option<IpAddr>,
        /// The metric label of the reason.
        code: String,
        /// Why, for people (no secret).
        reason: String,
    },
    /// The first SMBIOS UUID was pinned to the MAC.
    UuidPinned {
        /// The UUID.
        uuid: String,
        /// The MAC.
        mac: MacAddr,
    },
    /// An operator cleared the UUID pin.
    UuidUnpinned {
        /// The UUID that was pinned.
        uuid: String,
        /// The API token that cleared it.
        token_id: String,
    },
    /// The machine waits for an operator.
    ApprovalRequested(ApprovalRequest),
    /// An operator approved.
    Approved(Verdict),
    /// An operator denied.
    Denied(Verdict),
    /// A device authorization was exchanged for an access token.
    DeviceTokenIssued {
        /// Who asked.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        peer: Option<IpAddr>,
        /// The access token's lifetime, seconds.
        token_secs: u32,
    },
    /// An entry written before the typed timeline whose text this version cannot
    /// read back into a typed event: shown as it was.
    Legacy {
        /// Its kind.
        kind: EventKind,
        /// Its text.
        detail: String,
    },
}

impl Event {
    /// The coarse class of this event.
    pub fn kind(&self) -> EventKind {
        use EventKind as K;
        match self {
            Self::DhcpSeen(_) | Self::DhcpLeaseRecorded { .. } => K::DhcpSeen,
            Self::DhcpSent(_) => K::DhcpSent,
            Self::TftpServed { .. } => K::TftpServed,
            Self::IpxeScriptServed(_) => K::IpxeScriptServed,
            Self::AssetServed { .. } => K::AssetServed,
            Self::ConfigServed { .. } => K::ConfigServed,
            Self::TokenRejected(_) => K::TokenRejected,
            Self::Installed(_) => K::Installed,
            Self::DiskInstalled => K::DiskInstalled,
            Self::K0sInstalled => K::K0sInstalled,
            Self::StateChanged { .. } => K::StateChanged,
            Self::ReimageRequested => K::ReimageRequested,
            Self::PowerAction { .. } => K::PowerAction,
            Self::MachineUpdated { .. } => K::MachineUpdated,
            Self::BootLoopDetected { .. } => K::BootLoopDetected,
            Self::ConfigReplayRefused { .. } => K::ConfigReplayRefused,
            Self::ConfigTokenExpired { .. } => K::ConfigTokenExpired,
            Self::ConfigRefused { .. } => K::ConfigRefused,
            Self::UuidPinned { .. } => K::UuidPinned,
            Self::UuidUnpinned { .. } => K::UuidUnpinned,
            Self::ApprovalRequested(_) => K::ApprovalRequested,
            Self::Approved(_) => K::Approved,
            Self::Denied(_) => K::Denied,
            Self::DeviceTokenIssued { .. } => K::DeviceTokenIssued,
            Self::Legacy { kind, .. } => *kind,
        }
    }

    /// This event stamped `at`.
    pub fn at(self, at: OffsetDateTime) -> TimelineEvent {
        TimelineEvent { at, event: self }
    }
}

/// One entry of a machine's boot timeline.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(from = "wire::Wire")]
pub struct TimelineEvent {
    /// When it happened.
    pub at: OffsetDateTime,
    /// What happened.
    pub event: Event,
}

impl TimelineEvent {
    /// `event` stamped `at`.
    pub fn new(at: OffsetDateTime, event: Event) -> Self {
        Self { at, event }
    }

    /// The coarse class.
    pub fn kind(&self) -> EventKind {
        self.event.kind()
    }

    /// The human-readable sentence (never secret material).
    pub fn detail(&self) -> String {
        self.event.to_string()
    }
}

#[cfg(test)]
mod tests;
