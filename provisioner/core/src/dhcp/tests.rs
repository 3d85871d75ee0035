//! Table tests of classification, boot-file choice, proxy replies, reply addressing
//! and the full personality; plus a property test over decode → classify → reply.

mod engine;
mod full_mode;
mod fuzz;
mod pool;
mod proxy;

use std::net::Ipv4Addr;

use super::bootfile::{BootFiles, BootTarget, NoBoot, choose};
use super::classify::{ClientKind, classify};
use super::reply::Responder;
use super::v4::{Architecture, DhcpOption, Flags, Message, MessageType, OptionCode, UnknownOption};
use super::wire::{self, WireError};
use crate::model::{Arch, MacAddr};

const BASE: &str = "http://10.9.0.1:8080";
const MAC: [u8; 6] = [0x52, 0x54, 0, 0xaa, 0xbb, 0xcc];

fn responder() -> Responder {
    Responder {
        server_id: Ipv4Addr::new(10, 9, 0, 1),
        next_server: Ipv4Addr::new(10, 9, 0, 1),
    }
}

/// A request as a client would send it.
#[derive(Default, Clone)]
struct Req {
    t: Option<MessageType>,
    arch: Option<u16>,
    vendor: Option<&'static [u8]>,
    user_class: Option<&'static [u8]>,
    ipxe_175: bool,
    guid: Option<Vec<u8>>,
    server_id: Option<Ipv4Addr>,
    requested: Option<Ipv4Addr>,
    ciaddr: Option<Ipv4Addr>,
    giaddr: Option<Ipv4Addr>,
    broadcast: bool,
}

impl Req {
    fn msg(&self) -> Message {
        let mut m = Message::new(
            self.ciaddr.unwrap_or(Ipv4Addr::UNSPECIFIED),
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            self.giaddr.unwrap_or(Ipv4Addr::UNSPECIFIED),
            &MAC,
        );
        m.set_xid(0x1234_5678);
        if self.broadcast {
            m.set_flags(Flags::default().set_broadcast());
        }
        let o = m.opts_mut();
        o.insert(DhcpOption::MessageType(self.t.unwrap_or(MessageType::Discover)));
        if let Some(a) = self.arch {
            o.insert(DhcpOption::ClientSystemArchitecture(Architecture(a)));
        }
        if let Some(v) = self.vendor {
            o.insert(DhcpOption::ClassIdentifier(v.to_vec()));
        }
        if let Some(u) = self.user_class {
            o.insert(DhcpOption::UserClass(u.to_vec()));
        }
        if self.ipxe_175 {
            o.insert(DhcpOption::Unknown(UnknownOption::new(
                OptionCode::Unknown(175),
                vec![177, 5, 1, 0x80, 0x86, 0x10, 0x0e],
            )));
        }
        if let Some(g) = &self.guid {
            o.insert(DhcpOption::ClientMachineIdentifier(g.clone()));
        }
        if let Some(s) = self.server_id {
            o.insert(DhcpOption::ServerIdentifier(s));
        }
        if let Some(r) = self.requested {
            o.insert(DhcpOption::RequestedIpAddress(r));
        }
        m
    }

    /// Encoded and decoded again, as the server sees it.
    fn wire(&self) -> Message {
        wire::decode(&wire::encode(&self.msg()).unwrap()).unwrap()
    }
}

fn pxe(arch: u16) -> Req {
    Req {
        arch: Some(arch),
        vendor: Some(b"PXEClient:Arch:00007:UNDI:003016"),
        ..Req::default()
    }
}

fn opt(m: &Message, code: OptionCode) -> Option<&DhcpOption> {
    m.opts().get(code)
}

#[test]
fn classification_table() {
    let http: &[u8] = b"HTTPClient:Arch:00016:UNDI:003001";
    // (request, kind, arch, arch code)
    let cases: Vec<(&str, Req, ClientKind, Arch, Option<u16>)> = vec![
        ("bios pxe", pxe(0), ClientKind::Pxe, Arch::X86Bios, Some(0)),
        ("x64 uefi pxe", pxe(7), ClientKind::Pxe, Arch::X86_64Efi, Some(7)),
        (
            "x64 uefi as 9 (proxmox)",
            pxe(9),
            ClientKind::Pxe,
            Arch::X86_64Efi,
            Some(9),
        ),
        (
            "arm64 uefi pxe",
            pxe(11),
            ClientKind::Pxe,
            Arch::Arm64Efi,
            Some(11),
        ),
        (
            "ia32 uefi: no binary",
            pxe(6),
            ClientKind::Pxe,
            Arch::Unknown,
            Some(6),
        ),
        (
            "x64 http boot",
            Req {
                arch: Some(16),
                vendor: Some(http),
                ..Req::default()
            },
            ClientKind::HttpBoot,
            Arch::X86_64Efi,
            Some(16),
        ),
        (
            "arm64 http boot, arch only",
            Req {
                arch: Some(19),
                ..Req::default()
            },
            ClientKind::HttpBoot,
            Arch::Arm64Efi,
            Some(19),
        ),
        (
            "http vendor class without option 93",
            Req {
                vendor: Some(http),
                ..Req::default()
            },
            ClientKind::HttpBoot,
            Arch::X86_64Efi,
            Some(16),
        ),
        (
            "ipxe by user class",
            Req {
                user_class: Some(b"iPXE"),
                ..pxe(0)
            },
            ClientKind::Ipxe,
            Arch::X86Bios,
            Some(0),
        ),
        (
            "ipxe by rfc 3004 user class list",
            Req {
                user_class: Some(b"\x03foo\x04iPXE"),
                ..pxe(7)
            },
            ClientKind::Ipxe,
            Arch::X86_64Efi,
            Some(7),
        ),
        (
            "ipxe by option 175",
            Req {
                ipxe_175: true,
                ..pxe(7)
            },
            ClientKind::Ipxe,
            Arch::X86_64Efi,
            Some(7),
        ),
        (
            "arch from vendor class when 93 is missing",
            Req {
                vendor: Some(b"PXEClient:Arch:00011:UNDI:003016"),
                ..Req::default()
            },
            ClientKind::Pxe,
            Arch::Arm64Efi,
            Some(11),
        ),
        (
            "pre-RFC 4578 PXE ROM is BIOS",
            Req {
                vendor: Some(b"PXEClient"),
                ..Req::default()
            },
            ClientKind::Pxe,
            Arch::X86Bios,
            None,
        ),
        (
            "plain client",
            Req::default(),
            ClientKind::Plain,
            Arch::Unknown,
            None,
        ),
        (
            "user class that only contains iPXE as a substring",
            Req {
                user_class: Some(b"\x05xiPXE"),
                ..Req::default()
            },
            ClientKind::Plain,
            Arch::Unknown,
            None,
        ),
    ];
    for (name, req, kind, arch, code) in cases {
        let c = classify(&req.wire()).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!((c.kind, c.arch, c.arch_code), (kind, arch, code), "{name}");
        assert_eq!(c.mac, MacAddr(MAC), "{name}");
    }
}

#[test]
fn option_97_guid_becomes_smbios_uuid() {
    let mut g = vec![0u8];
    g.extend([
        0x78, 0x56, 0x34, 0x12, 0x34, 0x12, 0x78, 0x56, 1, 2, 3, 4, 5, 6, 7, 8,
    ]);
    let c = classify(
        &Req {
            guid: Some(g),
            ..pxe(7)
        }
        .wire(),
    )
    .unwrap();
    assert_eq!(c.uuid.as_deref(), Some("12345678-1234-5678-0102-030405060708"));
    let c = classify(
        &Req {
            guid: Some(vec![0; 17]),
            ..pxe(7)
        }
        .wire(),
    )
    .unwrap();
    assert_eq!(c.uuid, None, "all-zero GUID is no UUID");
}

#[test]
fn rejects_non_requests_bootp_and_odd_hardware() {
    let mut reply = pxe(0).msg();
    reply.set_opcode(super::v4::Opcode::BootReply);
    assert_eq!(classify(&reply).unwrap_err().reason(), "not_request");
    let mut bootp = pxe(0).msg();
    bootp.opts_mut().remove(OptionCode::MessageType);
    assert_eq!(classify(&bootp).unwrap_err().reason(), "bootp");
    // hlen beyond chaddr's 16 bytes: dhcproto's chaddr() would slice out of range.
    let mut b = wire::encode(&pxe(0).msg()).unwrap();
    b[2] = 200;
    let m = wire::decode(&b).unwrap();
    assert_eq!(classify(&m).unwrap_err().reason(), "not_ethernet");
}

#[test]
fn decode_checks_cookie_and_length() {
    let good = wire::encode(&pxe(0).msg()).unwrap();
    assert!(wire::decode(&good).is_ok());
    assert_eq!(wire::decode(&good[..200]), Err(WireError::TooShort(200)));
    let mut bad = good.clone();
    bad[236] = 0;
    assert_eq!(wire::decode(&bad), Err(WireError::NoCookie));
    // DISCOVER with option 94 of length 1 instead of 3 (crates.md §5.1 reproducer):
    // with the dev-profile override this decodes instead of hitting debug_assert!.
    let mut short94 = good[..240].to_vec();
    short94.extend([53, 1, 1, 94, 1, 1, 255]);
    let _ = wire::decode(&short94);
}

#[test]
fn boot_file_table() {
    let files = BootFiles::default();
    let c = |r: Req| classify(&r.wire()).unwrap();
    let ipxe = format!("{BASE}/boot.ipxe");
    let http = |f: &str| BootTarget::Http(format!("{BASE}/bin/{f}"));
    let tftp = |f: &str| BootTarget::Tftp(f.into());
    type Case<'a> = (&'a str, Req, Option<&'a str>, Result<BootTarget, NoBoot>);
    let cases: Vec<Case<'_>> = vec![
        ("bios", pxe(0), None, Ok(tftp("undionly.kpxe"))),
        ("x64 uefi", pxe(7), None, Ok(tftp("snponly.efi"))),
        ("x64 uefi 9", pxe(9), None, Ok(tftp("snponly.efi"))),
        ("arm64", pxe(11), None, Ok(tftp("snp-arm64.efi"))),
        (
            "ia32 unsupported",
            pxe(6),
            None,
            Err(NoBoot::UnsupportedArch(Some(6))),
        ),
        ("override", pxe(7), Some("ipxe.efi"), Ok(tftp("ipxe.efi"))),
        (
            "override url",
            pxe(7),
            Some("http://x/y.efi"),
            Ok(BootTarget::Http("http://x/y.efi".into())),
        ),
        (
            "ipxe ignores override",
            Req {
                user_class: Some(b"iPXE"),
                ..pxe(0)
            },
            Some("ipxe.efi"),
            Ok(BootTarget::Http(ipxe.clone())),
        ),
        (
            "http boot",
            Req {
                arch: Some(16),
                vendor: Some(b"HTTPClient"),
                ..Req::default()
            },
            None,
            Ok(http("snponly.efi")),
        ),
        (
            "http boot override",
            Req {
                arch: Some(16),
                vendor: Some(b"HTTPClient"),
                ..Req::default()
            },
            Some("ipxe.efi"),
            Ok(http("ipxe.efi")),
        ),
        ("plain", Req::default(), None, Err(NoBoot::NotBooting)),
    ];
    for (name, req, ov, want) in cases {
        assert_eq!(choose(&c(req), &files, BASE, ov), want, "{name}");
    }
}
