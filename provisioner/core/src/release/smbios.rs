//! SMBIOS UUIDs: parsing what firmware reports, and the per-MAC pin.
//!
//! iPXE sends `${uuid}` (SMBIOS system UUID, RFC 4122 text form); Talos sends the
//! same value as the `uuid` extra variable of its OAuth device flow (read from the
//! kernel's SMBIOS table: siderolabs/talos
//! `internal/app/machined/pkg/runtime/v1alpha1/platform/metal/url/value.go`,
//! `UUIDValue`). The first UUID a bound request presents for a MAC is pinned; a MAC
//! presenting another UUID later is another machine (or a spoofer) until an
//! operator clears the pin.

use std::fmt;

/// A UUID field as a request carried it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UuidField {
    /// Not sent, empty, or firmware's "unknown" placeholder (all zeros, all ones).
    Absent,
    /// A well-formed UUID, lower-case hyphenated.
    Valid(String),
    /// Something else; kept printable and short for the refusal event.
    Malformed(String),
}

/// Parses a UUID as firmware or Talos reports it. Accepts the hyphenated,
/// simple, braced and URN forms (`uuid` crate), any case.
pub fn parse_uuid(raw: &str) -> UuidField {
    let t = raw.trim();
    if t.is_empty() {
        return UuidField::Absent;
    }
    match uuid::Uuid::try_parse(t) {
        // SMBIOS 2.6 §7.2.1: all zeros means "not present", all ones "not settable".
        Ok(u) if u.is_nil() || u.is_max() => UuidField::Absent,
        Ok(u) => UuidField::Valid(u.hyphenated().to_string()),
        Err(_) => UuidField::Malformed(printable(t)),
    }
}

/// At most 64 printable ASCII characters, so a hostile value cannot forge lines in
/// an event, a log or an iPXE `echo`.
pub fn printable(s: &str) -> String {
    s.chars()
        .take(64)
        .map(|c| if c.is_ascii_graphic() && c != '$' { c } else { '?' })
        .collect()
}

/// What the pin says about a request's UUID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PinCheck {
    /// No pin yet and a valid UUID: pin it (once the request is bound).
    Pin(String),
    /// The pinned UUID.
    Match,
    /// No pin and no UUID: nothing to check (firmware without SMBIOS UUID).
    Unpinned,
    /// Refused.
    Refused(PinRefusal),
}

/// Why a request's UUID is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PinRefusal {
    /// The UUID does not parse.
    Malformed(String),
    /// Another UUID (or none) than the pinned one.
    Mismatch {
        /// The pin.
        pinned: String,
        /// What the request presented.
        presented: Option<String>,
    },
}

impl PinRefusal {
    /// Stable label for metrics.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Malformed(_) => "malformed_uuid",
            Self::Mismatch { .. } => "uuid_mismatch",
        }
    }
}

impl fmt::Display for PinRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Malformed(v) => write!(f, "malformed SMBIOS UUID {v:?}"),
            Self::Mismatch { pinned, presented } => write!(
                f,
                "SMBIOS UUID {} differs from the UUID pinned for this MAC ({pinned}); if the machine \
                 really changed, clear the pin: provisioner machines unpin MAC",
                presented.as_deref().unwrap_or("(none)")
            ),
        }
    }
}

/// Checks a request's UUID against the MAC's pin.
pub fn check_pin(pinned: Option<&str>, presented: &UuidField) -> PinCheck {
    match (pinned, presented) {
        (_, UuidField::Malformed(v)) => PinCheck::Refused(PinRefusal::Malformed(v.clone())),
        (None, UuidField::Absent) => PinCheck::Unpinned,
        (None, UuidField::Valid(u)) => PinCheck::Pin(u.clone()),
        (Some(p), UuidField::Valid(u)) if p == u => PinCheck::Match,
        (Some(p), UuidField::Valid(u)) => PinCheck::Refused(PinRefusal::Mismatch {
            pinned: p.to_string(),
            presented: Some(u.clone()),
        }),
        // A pinned machine that stops sending its UUID is not trusted more for it.
        (Some(p), UuidField::Absent) => PinCheck::Refused(PinRefusal::Mismatch {
            pinned: p.to_string(),
            presented: None,
        }),
    }
}
