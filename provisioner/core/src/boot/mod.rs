//! The boot decision: given what a machine says about itself and what the inventory
//! knows, what does it boot? Every protocol (HTTP/iPXE now, DHCP boot-file choice
//! later) asks through the [`Booter`] trait, so policy lives in exactly one place.

pub mod assign;

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::catalog::{Catalog, Image, Profile};
use crate::model::{Arch, Labels, MacAddr, Machine, MachineState};
use crate::release::smbios::UuidField;

/// What a booting machine tells us (iPXE query string or DHCP options).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BootRequest {
    /// Boot NIC.
    pub mac: Option<MacAddr>,
    /// SMBIOS UUID, lower-case.
    pub uuid: Option<String>,
    /// SMBIOS serial.
    pub serial: Option<String>,
    /// Firmware class.
    pub arch: Arch,
    /// Hostname, if the firmware knows one.
    pub hostname: Option<String>,
    /// A `uuid` value that is not a UUID (printable, truncated), for the refusal.
    pub bad_uuid: Option<String>,
}

impl BootRequest {
    /// Labels group selectors match against: the request's identity plus the
    /// machine's operator labels (request values win on a clash).
    pub fn labels(&self, machine: Option<&Machine>) -> Labels {
        let mut l: Labels = machine.map(|m| m.labels.clone()).unwrap_or_default();
        if let Some(mac) = self.mac {
            l.insert("mac".into(), mac.to_string());
        }
        if let Some(u) = &self.uuid {
            l.insert("uuid".into(), u.clone());
        }
        if let Some(s) = &self.serial {
            l.insert("serial".into(), s.clone());
        }
        if let Some(h) = &self.hostname {
            l.insert("hostname".into(), h.clone());
        }
        if let Some(cpu) = self.arch.cpu() {
            l.insert("arch".into(), cpu.into());
        }
        if self.arch != Arch::Unknown {
            l.insert("firmware".into(), self.arch.firmware().into());
        }
        l
    }
}

/// What to do with machines no group matches.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum UnknownPolicy {
    /// Answer with an explanation, keep no record.
    Ignore,
    /// Record the machine in the inventory (state `Discovered`) and explain.
    #[default]
    Record,
    /// Boot this profile.
    Profile(String),
}

impl FromStr for UnknownPolicy {
    type Err = crate::model::UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "ignore" => Ok(Self::Ignore),
            "record" => Ok(Self::Record),
            _ => match s.strip_prefix("profile:") {
                Some(p) if !p.is_empty() => Ok(Self::Profile(p.to_string())),
                _ => Err(crate::model::UnknownName::new(
                    s,
                    "one of ignore, record, profile:<id>",
                )),
            },
        }
    }
}

impl fmt::Display for UnknownPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ignore => f.write_str("ignore"),
            Self::Record => f.write_str("record"),
            Self::Profile(p) => write!(f, "profile:{p}"),
        }
    }
}

impl Serialize for UnknownPolicy {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for UnknownPolicy {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

/// An install: the profile, its image, and the values renderers may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallPlan {
    /// The profile being installed.
    pub profile: Profile,
    /// Its image.
    pub image: Image,
    /// The group that selected it (`None` for operator overrides and the default policy).
    pub group: Option<String>,
    /// The group's metadata (hostname, addresses …).
    pub metadata: BTreeMap<String, String>,
}

/// The answer to "what does this machine boot".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootDecision {
    /// Install (or reinstall) the planned profile.
    Install(Box<InstallPlan>),
    /// Installed already: leave the network and boot the local disk.
    LocalBoot {
        /// Why, for the iPXE `echo` and the timeline.
        reason: String,
    },
    /// No profile for this machine; `record` says whether to keep it in the inventory.
    Unknown {
        /// Why, for the iPXE `echo` and the timeline.
        reason: String,
        /// Whether the inventory should record the machine.
        record: bool,
    },
}

impl BootDecision {
    /// Short outcome label for metrics and the timeline.
    pub fn outcome(&self) -> &'static str {
        match self {
            Self::Install(_) => "install",
            Self::LocalBoot { .. } => "local",
            Self::Unknown { .. } => "unknown",
        }
    }
}

/// The single seam between protocols and policy.
pub trait Booter: Send + Sync + fmt::Debug {
    /// Decides for `req`, given the machine's inventory record if it has one. Pure:
    /// no I/O, no side effects, cancel-safe.
    fn decide(&self, req: &BootRequest, machine: Option<&Machine>) -> BootDecision;
}

/// The standard policy: operator override, then group selection, then the unknown
/// policy; installed machines boot locally.
#[derive(Debug, Clone)]
pub struct CatalogBooter {
    /// Images, profiles, groups.
    pub catalog: Catalog,
    /// What to do with unmatched machines.
    pub unknown: UnknownPolicy,
}

impl Booter for CatalogBooter {
    fn decide(&self, req: &BootRequest, machine: Option<&Machine>) -> BootDecision {
        if let Some(m) = machine
            && m.state == MachineState::Installed
        {
            return BootDecision::LocalBoot {
                reason: "installed; booting from local disk".into(),
            };
        }
        if let Some(m) = machine
            && m.state == MachineState::BootLoop
        {
            return BootDecision::LocalBoot {
                reason: "boot loop detected; install stopped until an operator re-images it".into(),
            };
        }
        let (profile_id, group, metadata) = match assign::assign(&self.catalog, machine, &req.labels(machine))
        {
            Some(a) => {
                let metadata = a.group.as_ref().and_then(|g| self.catalog.groups.get(g));
                let metadata = metadata.map(|g| g.metadata.clone()).unwrap_or_default();
                (a.profile, a.group, metadata)
            }
            None => match &self.unknown {
                UnknownPolicy::Profile(p) => (p.clone(), None, BTreeMap::new()),
                policy => {
                    return BootDecision::Unknown {
                        reason: format!("no group matches this machine (unknown_policy {policy})"),
                        record: *policy == UnknownPolicy::Record,
                    };
                }
            },
        };
        let Some(profile) = self.catalog.profiles.get(&profile_id) else {
            return BootDecision::Unknown {
                reason: format!("profile {profile_id:?} does not exist"),
                record: true,
            };
        };
        let Some(image) = self.catalog.images.get(&profile.image) else {
            return BootDecision::Unknown {
                reason: format!(
                    "image {:?} of profile {profile_id:?} does not exist",
                    profile.image
                ),
                record: true,
            };
        };
        BootDecision::Install(Box::new(InstallPlan {
            profile: profile.clone(),
            image: image.clone(),
            group,
            metadata,
        }))
    }
}

#[cfg(test)]
mod tests;

impl BootRequest {
    /// The UUID as the pin check sees it.
    pub fn uuid_field(&self) -> UuidField {
        match (&self.uuid, &self.bad_uuid) {
            (_, Some(bad)) => UuidField::Malformed(bad.clone()),
            (Some(u), None) => UuidField::Valid(u.clone()),
            (None, None) => UuidField::Absent,
        }
    }

    /// Parses the first-stage query (`mac=${mac:hexhyp}&uuid=${uuid}&arch=${buildarch}
    /// &platform=${platform}&serial=${serial:uristring}`). Never fails: unparseable
    /// or empty values are left out (matchbox `labelsFromRequest`), and iPXE's
    /// placeholders for unknown values (an all-zero UUID) are dropped; a `uuid` that
    /// is not a UUID is kept aside in `bad_uuid` so an install can be refused.
    pub fn from_query(query: &str) -> Self {
        let mut req = Self::default();
        let mut buildarch = None;
        let mut platform = None;
        for (k, v) in form_urlencoded::parse(query.as_bytes()) {
            let v = v.trim();
            if v.is_empty() || v.len() > 256 {
                continue;
            }
            match k.as_ref() {
                "mac" => req.mac = v.parse().ok(),
                "uuid" => match crate::release::smbios::parse_uuid(v) {
                    UuidField::Valid(u) => req.uuid = Some(u),
                    UuidField::Malformed(bad) => req.bad_uuid = Some(bad),
                    UuidField::Absent => {}
                },
                "serial" => req.serial = Some(v.to_string()),
                "hostname" => req.hostname = Some(v.to_string()),
                "arch" => buildarch = Some(v.to_string()),
                "platform" => platform = Some(v.to_string()),
                _ => {}
            }
        }
        if let Some(a) = buildarch {
            req.arch = Arch::from_ipxe(&a, platform.as_deref());
        }
        req
    }
}
