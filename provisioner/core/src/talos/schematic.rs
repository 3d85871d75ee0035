//! Image Factory schematics and their IDs, computed locally.
//!
//! The factory's ID is the SHA-256 of the schematic marshalled by Go's yaml.v3
//! (image-factory `pkg/schematic/schematic.go` `ID()`): 4-space indentation,
//! sequences indented under their key, empty fields omitted except `customization`,
//! which is always present (`customization: {}` for the default schematic). Field
//! order: `overlay`, `customization`; inside `customization`: `extraKernelArgs`,
//! `meta`, `systemExtensions`, `bootloader`, `secureboot` (talos.md §4.3). The
//! canonical text is produced here by hand because the ID depends on every byte.
//!
//! The factory does not sort extension names, so order changes the ID; the appliance
//! sorts and de-duplicates them ([`Schematic::normalized`]) so its IDs are stable.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A schematic (the body of `POST /schematics`). Unknown fields are rejected, as the
/// factory does.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schematic {
    /// SBC overlay (unused on x86 metal).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overlay: Option<Overlay>,
    /// Image customisation.
    #[serde(default)]
    pub customization: Customization,
}

/// An overlay image for single-board computers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Overlay {
    /// Overlay image, e.g. `siderolabs/sbc-raspberrypi`.
    pub image: String,
    /// Overlay name, e.g. `rpi_generic`.
    pub name: String,
    /// Overlay options (scalars only in the canonical form here).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub options: BTreeMap<String, serde_json::Value>,
}

/// `customization:`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Customization {
    /// Kernel arguments appended to the generated command line.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_kernel_args: Vec<String>,
    /// Initial META values.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub meta: Vec<MetaValue>,
    /// Official system extensions.
    #[serde(default)]
    pub system_extensions: SystemExtensions,
    /// `auto`, `dual-boot`, `grub` or `sd-boot`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootloader: Option<String>,
    /// Secure Boot options.
    #[serde(default)]
    pub secureboot: SecureBoot,
}

/// One META key/value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetaValue {
    /// META key (0–255).
    pub key: u8,
    /// Value.
    pub value: String,
}

/// `systemExtensions:`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SystemExtensions {
    /// e.g. `siderolabs/amd-ucode`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub official_extensions: Vec<String>,
}

/// `secureboot:`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SecureBoot {
    /// Include well-known UEFI certificates in auto-enrolment.
    #[serde(default)]
    pub include_well_known_certificates: bool,
}

/// Quotes a scalar the way yaml.v3 would need it: plain when it cannot be misread,
/// otherwise double-quoted. Covers the characters schematics use in practice
/// (extension names, kernel arguments); exotic strings are quoted conservatively,
/// which may differ from yaml.v3's choice and therefore from the factory's ID.
fn scalar(s: &str) -> String {
    let safe_chars = s
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "_./=:+,-".contains(c));
    let first_ok = s
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric() || "_./".contains(c));
    let lower = s.to_ascii_lowercase();
    let reserved = matches!(
        lower.as_str(),
        "true" | "false" | "yes" | "no" | "on" | "off" | "y" | "n" | "null" | "~"
    ) || s.parse::<f64>().is_ok()
        || s.starts_with("0x")
        || s.starts_with("0o");
    if safe_chars && first_ok && !reserved && !s.ends_with(':') {
        s.to_string()
    } else {
        serde_json::to_string(s).unwrap_or_default()
    }
}

/// A schematic whose canonical form is not reproduced here.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchematicError {
    /// An overlay option that is not a scalar.
    #[error("overlay option {0:?}: only scalar values are supported")]
    NonScalarOption(String),
}

impl Schematic {
    /// The schematic with extensions sorted and de-duplicated (stable IDs).
    pub fn normalized(&self) -> Self {
        let mut s = self.clone();
        let ext = &mut s.customization.system_extensions.official_extensions;
        ext.sort();
        ext.dedup();
        s
    }

    /// The canonical YAML the factory hashes. Fails only for overlay options that are
    /// not scalars (their canonical form is not reproduced here).
    pub fn canonical_yaml(&self) -> Result<String, SchematicError> {
        let mut out = String::new();
        if let Some(o) = &self.overlay {
            out.push_str("overlay:\n");
            out.push_str(&format!("    image: {}\n", scalar(&o.image)));
            out.push_str(&format!("    name: {}\n", scalar(&o.name)));
            if !o.options.is_empty() {
                out.push_str("    options:\n");
                for (k, v) in &o.options {
                    let val = match v {
                        serde_json::Value::String(s) => scalar(s),
                        serde_json::Value::Bool(b) => b.to_string(),
                        serde_json::Value::Number(n) => n.to_string(),
                        _ => return Err(SchematicError::NonScalarOption(k.clone())),
                    };
                    out.push_str(&format!("        {}: {val}\n", scalar(k)));
                }
            }
        }
        let c = &self.customization;
        let mut body = String::new();
        if !c.extra_kernel_args.is_empty() {
            body.push_str("    extraKernelArgs:\n");
            for a in &c.extra_kernel_args {
                body.push_str(&format!("        - {}\n", scalar(a)));
            }
        }
        if !c.meta.is_empty() {
            body.push_str("    meta:\n");
            for m in &c.meta {
                body.push_str(&format!(
                    "        - key: {}\n          value: {}\n",
                    m.key,
                    scalar(&m.value)
                ));
            }
        }
        if !c.system_extensions.official_extensions.is_empty() {
            body.push_str("    systemExtensions:\n        officialExtensions:\n");
            for e in &c.system_extensions.official_extensions {
                body.push_str(&format!("            - {}\n", scalar(e)));
            }
        }
        if let Some(b) = &c.bootloader {
            body.push_str(&format!("    bootloader: {}\n", scalar(b)));
        }
        if c.secureboot.include_well_known_certificates {
            body.push_str("    secureboot:\n        includeWellKnownCertificates: true\n");
        }
        if body.is_empty() {
            out.push_str("customization: {}\n");
        } else {
            out.push_str("customization:\n");
            out.push_str(&body);
        }
        Ok(out)
    }

    /// The schematic ID: hex SHA-256 of [`Schematic::canonical_yaml`].
    pub fn id(&self) -> Result<String, SchematicError> {
        Ok(hex::encode(Sha256::digest(self.canonical_yaml()?.as_bytes())))
    }

    /// A schematic with just these official extensions (sorted).
    pub fn with_extensions<I: IntoIterator<Item = S>, S: Into<String>>(ext: I) -> Self {
        let mut s = Self::default();
        s.customization.system_extensions.official_extensions = ext.into_iter().map(Into::into).collect();
        s.normalized()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Schematic {
        serde_saphyr::from_str(yaml).unwrap()
    }

    /// image-factory `pkg/schematic/schematic_test.go` (`TestID`, `TestUnmarshalID`).
    #[test]
    fn factory_test_vectors() {
        let cases = [
            (
                "{}",
                "376567988ad370138ad8b2698212367b8edcb69b5fd68c80be1f2ec7d603b4ba",
            ),
            (
                "customization: {}",
                "376567988ad370138ad8b2698212367b8edcb69b5fd68c80be1f2ec7d603b4ba",
            ),
            (
                "customization: {\"extraKernelArgs\": []}",
                "376567988ad370138ad8b2698212367b8edcb69b5fd68c80be1f2ec7d603b4ba",
            ),
            (
                "{\"customization\": {\"extraKernelArgs\": [\"noapic\", \"nolapic\"], \"systemExtensions\": {}}}",
                "9cba8e32753f91a16c1837ab8abf356af021706ef284aef07380780177d9a06c",
            ),
            (
                "{\"customization\": {\"meta\": [{\"key\": 10, \"value\": \"foo\"}], \"extraKernelArgs\": [], \"systemExtensions\": {}}}",
                "d308a2a5ee2277bed5fbaa104fcbc8d59122abfa737df987a95b4ca763459a7f",
            ),
            (
                "{\"overlay\": {\"name\": \"rpi_generic\", \"image\": \"siderolabs/sbc-raspberrypi\"},\"customization\":{}}",
                "ee21ef4a5ef808a9b7484cc0dda0f25075021691c8c09a276591eedb638ea1f9",
            ),
            (
                "{\"customization\":{\"secureboot\": {\"includeWellKnownCertificates\": true}}}",
                "fa8e05f142a851d3ee568eb0a8e5841eaf6b0ebc8df9a63df16ac5ed2c04f3e6",
            ),
        ];
        for (yaml, want) in cases {
            assert_eq!(parse(yaml).id().unwrap(), want, "{yaml}");
        }
        assert_eq!(
            parse("customization:\n  extraKernelArgs: [noapic, nolapic]\n")
                .canonical_yaml()
                .unwrap(),
            "customization:\n    extraKernelArgs:\n        - noapic\n        - nolapic\n"
        );
    }

    /// The GenMachine schematic (talos.md §4.3), in any order.
    #[test]
    fn genmachine_schematic_id() {
        let s = Schematic::with_extensions([
            "siderolabs/util-linux-tools",
            "siderolabs/amd-ucode",
            "siderolabs/iscsi-tools",
            "siderolabs/amdgpu",
            "siderolabs/amd-ucode",
        ]);
        assert_eq!(
            s.canonical_yaml().unwrap(),
            "customization:\n    systemExtensions:\n        officialExtensions:\n            - siderolabs/amd-ucode\n            - siderolabs/amdgpu\n            - siderolabs/iscsi-tools\n            - siderolabs/util-linux-tools\n"
        );
        assert_eq!(
            s.id().unwrap(),
            "65cf8364cd0de4cf7b851dc7067a2db83d0ba04f11d8635c6cd3334be6ffb825"
        );
    }

    #[test]
    fn unknown_fields_rejected_and_odd_strings_quoted() {
        assert!(serde_saphyr::from_str::<Schematic>("customization: {bogus: 1}").is_err());
        assert_eq!(scalar("true"), "\"true\"");
        assert_eq!(scalar("10"), "\"10\"");
        assert_eq!(scalar("console=ttyS0,115200"), "console=ttyS0,115200");
        assert_eq!(scalar("-console"), "\"-console\"");
    }
}
