//! The rendered text of every event is the sentence the appliance has always
//! written; the wire form round-trips; schema-1 entries read back.

use std::net::Ipv4Addr;

use time::macros::datetime;

use super::*;
use crate::dhcp::Personality;
use crate::dhcp::classify::ClientKind;
use crate::inventory::TokenPurpose;

fn at() -> OffsetDateTime {
    datetime!(2026-09-21 12:00 UTC)
}

fn mac() -> MacAddr {
    "52:54:00:12:34:56".parse().unwrap()
}

/// (event, kind, detail) for every variant but `Legacy`.
fn samples() -> Vec<(Event, EventKind, &'static str)> {
    let ip: IpAddr = "10.9.0.50".parse().unwrap();
    vec![
        (
            Event::DhcpSeen(DhcpSeen {
                message: DhcpMessage(1),
                port: 67,
                personality: Personality::Proxy,
                client: ClientKind::Pxe,
                arch: Some(7),
                relay: None,
            }),
            EventKind::DhcpSeen,
            "DISCOVER on :67 (proxy): pxe, arch 7",
        ),
        (
            Event::DhcpSeen(DhcpSeen {
                message: DhcpMessage(3),
                port: 4011,
                personality: Personality::Full,
                client: ClientKind::HttpBoot,
                arch: None,
                relay: Some(Ipv4Addr::new(10, 1, 0, 1)),
            }),
            EventKind::DhcpSeen,
            "REQUEST on :4011 (full): http-boot, arch -, relay 10.1.0.1",
        ),
        (
            Event::DhcpLeaseRecorded {
                state: LeaseState::Released,
                ip: Ipv4Addr::new(10, 9, 0, 100),
            },
            EventKind::DhcpSeen,
            "Released lease 10.9.0.100 recorded",
        ),
        (
            Event::DhcpSent(DhcpSent {
                message: DhcpMessage(2),
                address: None,
                boot_file: Some("snponly.efi".into()),
                to: "255.255.255.255:68".parse().unwrap(),
            }),
            EventKind::DhcpSent,
            "OFFER boot snponly.efi to 255.255.255.255:68",
        ),
        (
            Event::DhcpSent(DhcpSent {
                message: DhcpMessage(5),
                address: Some(Ipv4Addr::new(10, 9, 0, 100)),
                boot_file: None,
                to: "10.1.0.1:67".parse().unwrap(),
            }),
            EventKind::DhcpSent,
            "ACK 10.9.0.100 to 10.1.0.1:67",
        ),
        (
            Event::TftpServed {
                file: "snponly.efi".into(),
                bytes: 1024,
            },
            EventKind::TftpServed,
            "snponly.efi (1024 bytes)",
        ),
        (
            Event::IpxeScriptServed(ScriptAnswer::Install {
                profile: "talos-cp".into(),
                image: "talos-1.11".into(),
            }),
            EventKind::IpxeScriptServed,
            "install profile talos-cp image talos-1.11",
        ),
        (
            Event::IpxeScriptServed(ScriptAnswer::Local {
                reason: "installed; booting from local disk".into(),
            }),
            EventKind::IpxeScriptServed,
            "local: installed; booting from local disk",
        ),
        (
            Event::IpxeScriptServed(ScriptAnswer::Unknown {
                reason: "no group".into(),
            }),
            EventKind::IpxeScriptServed,
            "unknown: no group",
        ),
        (
            Event::AssetServed {
                file: "mirror k0s/v1.33.4+k0s.0/k0s".into(),
                bytes: 7,
            },
            EventKind::AssetServed,
            "mirror k0s/v1.33.4+k0s.0/k0s (7 bytes)",
        ),
        (
            Event::ConfigServed {
                bytes: 900,
                config: ConfigKind::Flatcar,
            },
            EventKind::ConfigServed,
            "900 bytes (Flatcar stage-1 Ignition; k0s: Stage1Served)",
        ),
        (
            Event::ConfigServed {
                bytes: 12,
                config: ConfigKind::Talos,
            },
            EventKind::ConfigServed,
            "12 bytes (Talos)",
        ),
        (
            Event::TokenRejected(Rejection::NotInstalling),
            EventKind::TokenRejected,
            "config requested but machine is not installing",
        ),
        (
            Event::TokenRejected(Rejection::Spent {
                purpose: TokenPurpose::InstalledCallback,
                how: SpentHow::Revoked,
                at: at(),
            }),
            EventKind::TokenRejected,
            "spent installed_callback token presented again; it was revoked by a newer boot at \
             2026-09-21T12:00:00Z",
        ),
        (
            Event::Installed(Reporter::TalosApi { ip }),
            EventKind::Installed,
            "10.9.0.50 answered Talos Version over mTLS",
        ),
        (
            Event::Installed(Reporter::Callback),
            EventKind::Installed,
            "install reported by the machine",
        ),
        (
            Event::StateChanged {
                from: MachineState::Booting,
                to: MachineState::ConfigServed,
            },
            EventKind::StateChanged,
            "Booting -> ConfigServed",
        ),
        (
            Event::BootLoopDetected {
                count: 5,
                window_min: 60,
            },
            EventKind::BootLoopDetected,
            "boot loop: 5 install boots within 60 min without reaching Installed; install stopped \
             until an operator re-images it",
        ),
        (
            Event::ConfigReplayRefused {
                how: SpentHow::Used,
                at: at(),
            },
            EventKind::ConfigReplayRefused,
            "config URL fetched again; its token was used at 2026-09-21T12:00:00Z",
        ),
        (
            Event::ConfigTokenExpired {
                age_secs: 1900,
                ttl_secs: 1800,
            },
            EventKind::ConfigTokenExpired,
            "config token presented 1900 s after issue (TTL 1800 s); the machine must netboot again",
        ),
        (
            Event::ConfigRefused {
                stage: Stage::Script,
                peer: Some(ip),
                code: "neighbour_mismatch".into(),
                reason: "not the machine".into(),
            },
            EventKind::ConfigRefused,
            "ipxe: peer 10.9.0.50: not the machine",
        ),
        (
            Event::ConfigRefused {
                stage: Stage::DeviceAuth,
                peer: None,
                code: "binding_unverifiable".into(),
                reason: "no peer".into(),
            },
            EventKind::ConfigRefused,
            "device_auth: peer unknown: no peer",
        ),
        (
            Event::UuidPinned {
                uuid: "u1".into(),
                mac: mac(),
            },
            EventKind::UuidPinned,
            "SMBIOS UUID u1 pinned to 52:54:00:12:34:56; another UUID is refused until unpinned",
        ),
        (
            Event::ApprovalRequested(ApprovalRequest {
                flow: ApprovalFlow::Admission,
                code: "ABCD-EFGH".into(),
                uuid: None,
                peer: ip,
                mac: mac(),
            }),
            EventKind::ApprovalRequested,
            "install waits for an operator: code ABCD-EFGH uuid (none) ip 10.9.0.50; approve with \
             `provisioner machines approve 52:54:00:12:34:56 --code ABCD-EFGH`",
        ),
        (
            Event::Approved(Verdict {
                flow: ApprovalFlow::Admission,
                code: "ABCD-EFGH".into(),
                uuid: Some("u1".into()),
                peer: ip,
                token_id: "t1".into(),
                until: Some(at()),
            }),
            EventKind::Approved,
            "install approved by API token t1: code ABCD-EFGH uuid u1 ip 10.9.0.50 until \
             2026-09-21T12:00:00Z",
        ),
        (
            Event::Denied(Verdict {
                flow: ApprovalFlow::Device,
                code: "ABCD-EFGH".into(),
                uuid: None,
                peer: ip,
                token_id: "t1".into(),
                until: None,
            }),
            EventKind::Denied,
            "device authorization ABCD-EFGH (uuid (none) peer 10.9.0.50) denied by API token t1",
        ),
        (
            Event::DeviceTokenIssued {
                peer: Some(ip),
                token_secs: 600,
            },
            EventKind::DeviceTokenIssued,
            "device authorization exchanged for an access token (peer 10.9.0.50; one config \
             download, 600 s)",
        ),
        (
            Event::MachineUpdated {
                fields: vec!["labels".into(), "power".into()],
            },
            EventKind::MachineUpdated,
            "changed labels, power",
        ),
    ]
}

#[test]
fn every_event_renders_its_sentence_and_round_trips() {
    for (event, kind, detail) in samples() {
        let e = event.clone().at(at());
        assert_eq!((e.kind(), e.detail().as_str()), (kind, detail), "{event:?}");
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json["kind"], serde_json::to_value(kind).unwrap());
        assert_eq!(json["detail"], detail);
        assert_eq!(json["at"], "2026-09-21T12:00:00Z");
        let back: TimelineEvent = serde_json::from_value(json).unwrap();
        assert_eq!(back, e, "{detail}");
    }
}

/// Schema-1 entries carry only `kind` and `detail`: where the text is one the
/// appliance wrote, the typed event comes back; otherwise the text is kept.
#[test]
fn schema_1_entries_read_back() {
    let recoverable = |e: &Event| {
        matches!(
            e,
            Event::StateChanged { .. }
                | Event::ConfigServed { .. }
                | Event::Installed(_)
                | Event::TftpServed { .. }
                | Event::AssetServed { .. }
                | Event::MachineUpdated { .. }
        )
    };
    for (event, kind, detail) in samples() {
        let old = serde_json::json!({"at": "2026-09-21T12:00:00Z", "kind": kind, "detail": detail});
        let back: TimelineEvent = serde_json::from_value(old).unwrap();
        assert_eq!((back.kind(), back.detail().as_str()), (kind, detail));
        if recoverable(&event) {
            assert_eq!(back.event, event, "{detail}");
        }
    }
    for (kind, detail) in [
        (EventKind::DiskInstalled, text::DISK_INSTALLED),
        (EventKind::K0sInstalled, text::K0S_INSTALLED),
        (EventKind::ReimageRequested, text::REIMAGE),
    ] {
        assert_ne!(
            legacy::parse(kind, detail),
            Event::Legacy {
                kind,
                detail: detail.into()
            }
        );
    }
    // Text that looks like a state change but is not one stays text.
    let odd = legacy::parse(EventKind::StateChanged, "Booting -> Elsewhere");
    assert!(matches!(odd, Event::Legacy { .. }), "{odd:?}");
    let e = odd.at(at());
    let json = serde_json::to_value(&e).unwrap();
    assert!(json.get("event").is_none(), "legacy entries stay kind + detail");
    assert_eq!(serde_json::from_value::<TimelineEvent>(json).unwrap(), e);
}

#[test]
fn dhcp_message_names() {
    for code in 0..=u8::MAX {
        let m = DhcpMessage(code);
        assert_eq!(text::parse_dhcp_message(&m.to_string()), Some(m), "{m}");
    }
    assert_eq!(DhcpMessage(5).to_string(), "ACK");
    assert_eq!(text::parse_dhcp_message("HELLO"), None);
}
