//! The appliance's domain model: machines, their identity and state (the boot
//! timeline's typed events live in [`crate::timeline`] and are re-exported here).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::OffsetDateTime;

pub use crate::timeline::{Event, EventKind, TimelineEvent};

/// A 48-bit Ethernet address. Parsed from any common notation (`aa:bb:..`,
/// `aa-bb-..`, `aabb.ccdd.eeff`, `aabbccddeeff`, any case) and always printed
/// lower-case with colons, so one machine has one key whatever the firmware sends.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MacAddr(pub [u8; 6]);

/// Why a string is not a MAC address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a MAC address: {0:?} (expected 6 hex octets, e.g. 52:54:00:12:34:56)")]
pub struct MacParseError(pub String);

impl FromStr for MacAddr {
    type Err = MacParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let hex: String = s
            .trim()
            .chars()
            .filter(|c| !matches!(c, ':' | '-' | '.'))
            .collect();
        // Separators may only appear between octets or octet pairs, so after stripping
        // them exactly 12 hex digits must remain.
        if hex.len() != 12 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(MacParseError(s.to_string()));
        }
        let mut out = [0u8; 6];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte =
                u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| MacParseError(s.to_string()))?;
        }
        Ok(Self(out))
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl MacAddr {
    /// iPXE's `${mac:hexhyp}` form (`52-54-00-12-34-56`), used in URLs.
    pub fn hexhyp(&self) -> String {
        self.to_string().replace(':', "-")
    }
}

impl Serialize for MacAddr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MacAddr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Firmware/CPU class of a booting machine, as far as the boot path can tell
/// (iPXE `${buildarch}`/`${platform}` or DHCP option 93, RFC 4578 §2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "kebab-case")]
pub enum Arch {
    /// x86 legacy BIOS (iPXE `i386` with platform `pcbios`, option 93 = 0).
    X86Bios,
    /// x86-64 UEFI (iPXE `x86_64`, option 93 = 7 or 9).
    X86_64Efi,
    /// arm64 UEFI (iPXE `arm64`, option 93 = 11).
    Arm64Efi,
    /// Not reported.
    #[default]
    Unknown,
}

impl Arch {
    /// Interprets iPXE's `${buildarch}` and optional `${platform}`. A BIOS iPXE
    /// (`undionly.kpxe`) reports `i386` even on a 64-bit CPU.
    pub fn from_ipxe(buildarch: &str, platform: Option<&str>) -> Self {
        match (buildarch, platform) {
            (_, Some("efi")) if buildarch == "arm64" => Self::Arm64Efi,
            (_, Some("efi")) => Self::X86_64Efi,
            ("arm64", _) => Self::Arm64Efi,
            ("x86_64", _) => Self::X86_64Efi,
            ("i386", _) => Self::X86Bios,
            _ => Self::Unknown,
        }
    }

    /// Selector value used in profile groups (`arch: amd64` / `arm64`).
    pub fn cpu(&self) -> Option<&'static str> {
        match self {
            Self::X86Bios | Self::X86_64Efi => Some("amd64"),
            Self::Arm64Efi => Some("arm64"),
            Self::Unknown => None,
        }
    }

    /// Firmware class as shown to operators.
    pub fn firmware(&self) -> &'static str {
        match self {
            Self::X86Bios => "bios",
            Self::X86_64Efi | Self::Arm64Efi => "uefi",
            Self::Unknown => "unknown",
        }
    }
}

/// Lifecycle of a machine as the appliance sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum MachineState {
    /// Seen on the network, nothing served yet.
    #[default]
    Discovered,
    /// Its install script was served; it is loading the installer.
    Booting,
    /// Its one-time machine config was fetched.
    ConfigServed,
    /// The installed OS reported back (callback or API); next netboot is local boot.
    Installed,
    /// An operator asked for a reinstall; next netboot installs again.
    ReimageRequested,
    /// It kept network-installing without ever reporting back
    /// ([`crate::bootloop`]): it gets local boot until an operator re-images it.
    BootLoop,
}

impl MachineState {
    /// Every state, for filters and documentation.
    pub const ALL: [Self; 6] = [
        Self::Discovered,
        Self::Booting,
        Self::ConfigServed,
        Self::Installed,
        Self::ReimageRequested,
        Self::BootLoop,
    ];
}

/// A name that is none of a closed set's names (`given` as typed, `expected` the
/// set in words, e.g. `auto or approve`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{given:?} is not {expected}")]
pub struct UnknownName {
    /// What was given.
    pub given: String,
    /// The accepted names, in words.
    pub expected: String,
}

impl UnknownName {
    /// `given` is not `expected`.
    pub fn new(given: &str, expected: impl Into<String>) -> Self {
        Self {
            given: given.to_string(),
            expected: expected.into(),
        }
    }
}

impl FromStr for MachineState {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|st| st.to_string() == s)
            .ok_or_else(|| {
                let all: Vec<String> = Self::ALL.iter().map(ToString::to_string).collect();
                UnknownName::new(s, format!("one of {}", all.join(", ")))
            })
    }
}

impl fmt::Display for MachineState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// One persisted machine record, keyed by its boot MAC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Machine {
    /// Boot NIC address; the primary key.
    pub mac: MacAddr,
    /// SMBIOS UUID as reported by firmware, lower-case.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    /// SMBIOS serial number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    /// Last DHCP vendor class (option 60, e.g. `PXEClient:Arch:00007:UNDI:003016`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vendor_class: Option<String>,
    /// Last address it fetched its boot script from (a bound request).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<std::net::IpAddr>,
    /// Last reported architecture.
    #[serde(default)]
    pub arch: Arch,
    /// First time the appliance saw the machine.
    #[serde(with = "time::serde::rfc3339")]
    pub first_seen: OffsetDateTime,
    /// Last time the machine talked to the appliance.
    #[serde(with = "time::serde::rfc3339")]
    pub last_seen: OffsetDateTime,
    /// Profile chosen by an operator; overrides group selection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// Operator labels, matched by group selectors.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Current lifecycle state.
    #[serde(default)]
    pub state: MachineState,
    /// Per-machine override of the DHCP/TFTP boot file (e.g. `ipxe.efi`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_file: Option<String>,
    /// How the appliance switches it on and off; `None` means by hand.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub power: Option<crate::power::PowerSpec>,
    /// Unix times of the install scripts served since it last reported installed,
    /// oldest first, for boot-loop protection ([`crate::bootloop`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub install_boots: Vec<i64>,
    /// The first SMBIOS UUID a bound request presented for this MAC
    /// ([`crate::release::smbios`]); another UUID is refused until an operator
    /// clears it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pinned_uuid: Option<String>,
    /// An operator's approval of this machine and UUID for one install
    /// ([`crate::release::admission`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<crate::release::admission::Approval>,
    /// The machine is waiting for an operator's approval (code on its console).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_approval: Option<crate::release::admission::PendingApproval>,
}

impl Machine {
    /// A machine seen for the first time at `now`.
    pub fn discovered(mac: MacAddr, now: OffsetDateTime) -> Self {
        Self {
            mac,
            uuid: None,
            serial: None,
            vendor_class: None,
            ip: None,
            arch: Arch::Unknown,
            first_seen: now,
            last_seen: now,
            profile: None,
            labels: BTreeMap::new(),
            state: MachineState::Discovered,
            boot_file: None,
            power: None,
            install_boots: Vec::new(),
            pinned_uuid: None,
            approval: None,
            pending_approval: None,
        }
    }
}

/// Labels a boot request carries, used by group selectors.
pub type Labels = BTreeMap<String, String>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_notations_normalise() {
        let want = "52:54:00:ab:cd:ef";
        for s in [
            "52:54:00:ab:cd:ef",
            "52-54-00-AB-CD-EF",
            "5254.00ab.cdef",
            "525400ABCDEF",
            " 52:54:00:Ab:cD:eF ",
        ] {
            assert_eq!(s.parse::<MacAddr>().unwrap().to_string(), want, "{s}");
        }
    }

    #[test]
    fn bad_macs_rejected() {
        for s in [
            "",
            "52:54:00:ab:cd",
            "52:54:00:ab:cd:ef:01",
            "zz:54:00:ab:cd:ef",
            "+2:54:00:ab:cd:ef",
        ] {
            assert!(s.parse::<MacAddr>().is_err(), "{s}");
        }
    }

    #[test]
    fn hexhyp() {
        let m: MacAddr = "52:54:00:ab:cd:ef".parse().unwrap();
        assert_eq!(m.hexhyp(), "52-54-00-ab-cd-ef");
    }

    #[test]
    fn ipxe_arch() {
        assert_eq!(Arch::from_ipxe("i386", Some("pcbios")), Arch::X86Bios);
        assert_eq!(Arch::from_ipxe("x86_64", Some("efi")), Arch::X86_64Efi);
        assert_eq!(Arch::from_ipxe("i386", Some("efi")), Arch::X86_64Efi);
        assert_eq!(Arch::from_ipxe("arm64", None), Arch::Arm64Efi);
        assert_eq!(Arch::from_ipxe("mips", None), Arch::Unknown);
    }
}
