//! Which boot file a classified client gets (boot-protocols.md §3.3, §6.2):
//! firmware PXE gets an iPXE binary over TFTP chosen by architecture, UEFI HTTP Boot
//! gets an `http://` URL of the EFI iPXE binary, and iPXE itself gets the short HTTP
//! first-stage URL (`/boot.ipxe`, §3.7). A machine's `boot_file` from the inventory
//! replaces the firmware-stage binary.

use serde::{Deserialize, Serialize};

use super::classify::{Client, ClientKind};
use crate::model::Arch;

/// Binary names under the TFTP root (Debian's `ipxe` package names by default).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BootFiles {
    /// x86 BIOS (option 93 = 0).
    pub bios: String,
    /// x86-64 UEFI (7, 9) over TFTP.
    pub efi_x64: String,
    /// arm64 UEFI (11) over TFTP.
    pub efi_arm64: String,
    /// x86-64 UEFI HTTP Boot (16): served from `/bin/` on the boot path. `snponly`
    /// drives the NIC through the firmware's SNP, which HTTP Boot firmware has too.
    pub http_x64: String,
    /// arm64 UEFI HTTP Boot (19).
    pub http_arm64: String,
}

impl Default for BootFiles {
    fn default() -> Self {
        Self {
            bios: "undionly.kpxe".into(),
            efi_x64: "snponly.efi".into(),
            efi_arm64: "snp-arm64.efi".into(),
            http_x64: "snponly.efi".into(),
            http_arm64: "snp-arm64.efi".into(),
        }
    }
}

/// Where a client's boot file is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootTarget {
    /// A file on the TFTP server (`siaddr`/option 66 say which server).
    Tftp(String),
    /// A full URL (iPXE's first stage, or UEFI HTTP Boot).
    Http(String),
}

impl BootTarget {
    /// What goes in option 67 and the `file` header.
    pub fn file(&self) -> &str {
        match self {
            Self::Tftp(f) | Self::Http(f) => f,
        }
    }
}

/// Why a boot client gets no boot file (the appliance then stays silent in proxy
/// mode, and gives only an address in full mode).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoBoot {
    /// Not a network-boot client.
    #[error("not a network-boot client")]
    NotBooting,
    /// An architecture the appliance has no binary for.
    #[error("no boot file for architecture {0:?}")]
    UnsupportedArch(Option<u16>),
}

/// Chooses the boot file. `base` is the boot path's base URL (no trailing slash);
/// `machine_override` is the inventory's `boot_file` for this MAC.
pub fn choose(
    client: &Client,
    files: &BootFiles,
    base: &str,
    machine_override: Option<&str>,
) -> Result<BootTarget, NoBoot> {
    match client.kind {
        ClientKind::Plain => Err(NoBoot::NotBooting),
        // Whatever binary got iPXE here, it now wants its script: never a binary
        // again, or it chain-loads itself forever.
        ClientKind::Ipxe => Ok(BootTarget::Http(format!("{base}/boot.ipxe"))),
        ClientKind::Pxe => {
            if let Some(f) = machine_override.filter(|f| !f.is_empty()) {
                return Ok(if is_url(f) {
                    BootTarget::Http(f.to_string())
                } else {
                    BootTarget::Tftp(f.to_string())
                });
            }
            let f = match (client.arch, client.arch_code) {
                (Arch::X86Bios, _) => &files.bios,
                (Arch::X86_64Efi, _) => &files.efi_x64,
                (Arch::Arm64Efi, _) => &files.efi_arm64,
                (Arch::Unknown, code) => return Err(NoBoot::UnsupportedArch(code)),
            };
            Ok(BootTarget::Tftp(f.clone()))
        }
        ClientKind::HttpBoot => {
            let f = match machine_override.filter(|f| !f.is_empty()) {
                Some(f) if is_url(f) => return Ok(BootTarget::Http(f.to_string())),
                Some(f) => f,
                None => match client.arch {
                    Arch::X86_64Efi => &files.http_x64,
                    Arch::Arm64Efi => &files.http_arm64,
                    _ => return Err(NoBoot::UnsupportedArch(client.arch_code)),
                },
            };
            Ok(BootTarget::Http(format!("{base}/bin/{f}")))
        }
    }
}

fn is_url(f: &str) -> bool {
    f.starts_with("http://") || f.starts_with("https://") || f.starts_with("tftp://")
}
