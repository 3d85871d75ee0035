//! Who is asking: the client's MAC, message type, architecture (RFC 4578 option 93)
//! and whether it is iPXE (option 77 user class `iPXE` or option 175), firmware PXE
//! (option 60 `PXEClient…`), UEFI HTTP Boot (option 60 `HTTPClient…` or an HTTP
//! architecture), or a plain DHCP client (boot-protocols.md §3.2, §3.3).

use std::net::Ipv4Addr;

use super::v4::{DhcpOption, HType, Message, MessageType, Opcode, OptionCode};
use crate::model::{Arch, MacAddr};

/// Option 175: iPXE's encapsulated options; present only when iPXE is the client.
pub const OPT_IPXE_ENCAP: u8 = 175;

/// What kind of network-boot client sent the packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClientKind {
    /// iPXE: it gets the HTTP first-stage URL, never an iPXE binary again (that
    /// would chain-load forever, boot-protocols.md §6.2).
    Ipxe,
    /// Firmware PXE (`PXEClient`): it gets an iPXE binary over TFTP.
    Pxe,
    /// UEFI HTTP Boot (`HTTPClient`): it gets an `http://` URL and option 60 back.
    HttpBoot,
    /// An ordinary DHCP client (no vendor class we know): an address at most.
    Plain,
}

impl ClientKind {
    /// Label for logs, metrics and the timeline.
    pub fn label(self) -> &'static str {
        match self {
            Self::Ipxe => "ipxe",
            Self::Pxe => "pxe",
            Self::HttpBoot => "http-boot",
            Self::Plain => "plain",
        }
    }

    /// Whether the client is network booting at all.
    pub fn is_boot(self) -> bool {
        self != Self::Plain
    }
}

/// A classified request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client {
    /// `chaddr`.
    pub mac: MacAddr,
    /// Option 53.
    pub msg_type: MessageType,
    /// See [`ClientKind`].
    pub kind: ClientKind,
    /// Option 93 (first entry), or the `Arch:NNNNN` field of option 60.
    pub arch_code: Option<u16>,
    /// [`arch_code`](Self::arch_code) as the model's firmware class.
    pub arch: Arch,
    /// Option 60 as sent (lossy UTF-8), to echo its prefix.
    pub vendor_class: Option<String>,
    /// Option 97 as sent (type byte + GUID), to echo.
    pub machine_id: Option<Vec<u8>>,
    /// Option 97's GUID as an SMBIOS UUID string, when it is one.
    pub uuid: Option<String>,
    /// Option 50.
    pub requested_ip: Option<Ipv4Addr>,
    /// Option 54.
    pub server_id: Option<Ipv4Addr>,
    /// Option 12.
    pub hostname: Option<String>,
}

/// Why a packet is not a request we handle (dropped and counted).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClassifyError {
    /// A BOOTREPLY (another server's answer) or unknown opcode.
    #[error("not a BOOTREQUEST")]
    NotRequest,
    /// No option 53: plain BOOTP, which the appliance does not serve.
    #[error("no DHCP message type (BOOTP is not served)")]
    NoMessageType,
    /// Not Ethernet with a 6-byte address.
    #[error("hardware type {htype:?} with address length {hlen} is not Ethernet")]
    NotEthernet {
        /// `htype`.
        htype: u8,
        /// `hlen`.
        hlen: u8,
    },
}

impl ClassifyError {
    /// Short label for the `reason` metrics label.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NotRequest => "not_request",
            Self::NoMessageType => "bootp",
            Self::NotEthernet { .. } => "not_ethernet",
        }
    }
}

/// RFC 4578 / IANA processor architecture types that mean UEFI HTTP Boot.
pub fn is_http_arch(code: u16) -> bool {
    matches!(code, 15..=20 | 23 | 24 | 26 | 28 | 30 | 38 | 40)
}

/// The firmware class of an option-93 value (boot-protocols.md §3.3). Values the
/// appliance has no binary for map to [`Arch::Unknown`].
pub fn arch_of(code: u16) -> Arch {
    match code {
        0 => Arch::X86Bios,
        // 9 is "EFI byte code" in the registry, but Proxmox and others send it for
        // x64 UEFI (WillChamness/Dnsmasq-PXE#3).
        7 | 9 | 16 => Arch::X86_64Efi,
        11 | 19 => Arch::Arm64Efi,
        _ => Arch::Unknown,
    }
}

/// Classifies a decoded request. Never panics.
pub fn classify(msg: &Message) -> Result<Client, ClassifyError> {
    if msg.opcode() != Opcode::BootRequest {
        return Err(ClassifyError::NotRequest);
    }
    // `hlen` comes from the wire and dhcproto's `chaddr()` slices its 16-byte array
    // with it unchecked: read `chaddr` only once `hlen` is known to be 6.
    let mac = match (msg.htype(), msg.hlen()) {
        (HType::Eth, 6) => {
            let mut b = [0u8; 6];
            b.copy_from_slice(&msg.chaddr()[..6]);
            MacAddr(b)
        }
        (h, _) => {
            return Err(ClassifyError::NotEthernet {
                htype: u8::from(h),
                hlen: msg.hlen(),
            });
        }
    };
    let opts = msg.opts();
    let msg_type = opts.msg_type().ok_or(ClassifyError::NoMessageType)?;
    let vendor_class = match opts.get(OptionCode::ClassIdentifier) {
        Some(DhcpOption::ClassIdentifier(v)) => Some(String::from_utf8_lossy(v).into_owned()),
        _ => None,
    };
    let arch_code = match opts.get(OptionCode::ClientSystemArchitecture) {
        Some(DhcpOption::ClientSystemArchitecture(a)) => Some(a.0),
        _ => vendor_class.as_deref().and_then(arch_from_vendor_class),
    };
    let ipxe = opts.contains(OptionCode::Unknown(OPT_IPXE_ENCAP))
        || matches!(opts.get(OptionCode::UserClass), Some(DhcpOption::UserClass(u)) if user_class_has_ipxe(u));
    let vc = vendor_class.as_deref().unwrap_or("");
    let kind = if ipxe {
        ClientKind::Ipxe
    } else if vc.starts_with("HTTPClient") || arch_code.is_some_and(is_http_arch) {
        ClientKind::HttpBoot
    } else if vc.starts_with("PXEClient") {
        ClientKind::Pxe
    } else {
        ClientKind::Plain
    };
    // PXE 2.0 ROMs that predate RFC 4578 send no option 93; they are all BIOS.
    let arch = match arch_code {
        Some(c) => arch_of(c),
        None if kind == ClientKind::Pxe => Arch::X86Bios,
        None => Arch::Unknown,
    };
    let machine_id = match opts.get(OptionCode::ClientMachineIdentifier) {
        Some(DhcpOption::ClientMachineIdentifier(v)) => Some(v.clone()),
        _ => None,
    };
    let uuid = machine_id.as_deref().and_then(uuid_of);
    let requested_ip = match opts.get(OptionCode::RequestedIpAddress) {
        Some(DhcpOption::RequestedIpAddress(ip)) => Some(*ip),
        _ => None,
    };
    let server_id = match opts.get(OptionCode::ServerIdentifier) {
        Some(DhcpOption::ServerIdentifier(ip)) => Some(*ip),
        _ => None,
    };
    let hostname = match opts.get(OptionCode::Hostname) {
        Some(DhcpOption::Hostname(h)) if !h.is_empty() && h.len() <= 255 => Some(h.clone()),
        _ => None,
    };
    Ok(Client {
        mac,
        msg_type,
        kind,
        arch_code,
        arch,
        vendor_class,
        machine_id,
        uuid,
        requested_ip,
        server_id,
        hostname,
    })
}

/// iPXE sends option 77 as the bare string `iPXE`; RFC 3004 clients send
/// length-prefixed entries. Accept both.
fn user_class_has_ipxe(u: &[u8]) -> bool {
    if u == b"iPXE" {
        return true;
    }
    let mut rest = u;
    while let Some((&len, tail)) = rest.split_first() {
        let len = usize::from(len);
        if len == 0 || len > tail.len() {
            return false;
        }
        if &tail[..len] == b"iPXE" {
            return true;
        }
        rest = &tail[len..];
    }
    false
}

/// `PXEClient:Arch:00007:UNDI:003016` → 7 (PXE spec 2.1 §2.2.5, the vendor class).
fn arch_from_vendor_class(vc: &str) -> Option<u16> {
    let mut parts = vc.split(':');
    while let Some(p) = parts.next() {
        if p == "Arch" {
            return parts.next()?.parse().ok();
        }
    }
    None
}

/// Option 97: type 0 followed by a 16-byte GUID (PXE spec 2.1, RFC 4578 §2.3). The
/// GUID's first three fields are little-endian, as SMBIOS stores them, so the text
/// form matches what iPXE's `${uuid}` prints.
fn uuid_of(id: &[u8]) -> Option<String> {
    let (&0, g) = id.split_first()? else {
        return None;
    };
    let g: [u8; 16] = g.try_into().ok()?;
    if g.iter().all(|&b| b == 0) || g.iter().all(|&b| b == 0xff) {
        return None;
    }
    Some(format!(
        "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
        g[3], g[2], g[1], g[0], g[5], g[4], g[7], g[6], g[8], g[9], g[10], g[11], g[12], g[13], g[14], g[15]
    ))
}
