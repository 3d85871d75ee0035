use std::collections::HashMap;
use std::net::IpAddr;

use time::OffsetDateTime;

use super::admission::{self, Admission, Approval};
use super::binding::{Bound, Claim, LeaseFact, PeerFacts, Refusal, Stage, bind};
use super::device::{self, ClientAuth, Grant, GrantState, TokenError};
use super::smbios::{PinCheck, PinRefusal, UuidField, check_pin, parse_uuid};
use crate::model::MacAddr;

/// A neighbour table, an on-link prefix and (optionally) a lease table.
#[derive(Debug, Default)]
struct Facts {
    neighbours: HashMap<IpAddr, MacAddr>,
    leases: Option<HashMap<IpAddr, MacAddr>>,
    /// `10.0.0.0/24` is on link.
    on_link_prefix: [u8; 3],
}

impl PeerFacts for Facts {
    fn neighbour(&self, ip: IpAddr) -> Option<MacAddr> {
        self.neighbours.get(&ip).copied()
    }
    fn on_link(&self, ip: IpAddr) -> bool {
        matches!(ip, IpAddr::V4(v4) if v4.octets()[..3] == self.on_link_prefix)
    }
    fn lease(&self, ip: IpAddr) -> LeaseFact {
        match &self.leases {
            None => LeaseFact::NotFullMode,
            Some(l) => l.get(&ip).map_or(LeaseFact::NoLease, |m| LeaseFact::Holder(*m)),
        }
    }
}

fn mac(s: &str) -> MacAddr {
    s.parse().unwrap()
}
fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

const M: &str = "52:54:00:00:00:01";
const OTHER_NIC: &str = "52:54:00:00:01:01";
const SPOOFER: &str = "52:54:00:99:99:99";

fn facts() -> Facts {
    let mut f = Facts {
        on_link_prefix: [10, 0, 0],
        ..Default::default()
    };
    f.neighbours.insert(ip("10.0.0.10"), mac(M));
    f.neighbours.insert(ip("10.0.0.11"), mac(OTHER_NIC));
    f.neighbours.insert(ip("10.0.0.66"), mac(SPOOFER));
    f
}

fn claim(stage: Stage, peer: &str) -> Claim<'static> {
    static OTHERS: std::sync::OnceLock<Vec<MacAddr>> = std::sync::OnceLock::new();
    Claim {
        stage,
        peer: ip(peer),
        mac: mac(M),
        other_nics: OTHERS.get_or_init(|| vec![mac(OTHER_NIC)]),
        script_peer: None,
        approved: false,
    }
}

#[test]
fn binding_table_same_l2() {
    use Stage::*;
    let f = facts();
    let cases: Vec<(Stage, &str, Result<Bound, Refusal>)> = vec![
        (Script, "10.0.0.10", Ok(Bound::Neighbour)),
        // IPv4-mapped IPv6 (a dual-stack listener) is the same peer.
        (Script, "::ffff:10.0.0.10", Ok(Bound::Neighbour)),
        // A host asking for another machine's MAC: its own MAC is in the table.
        (
            Script,
            "10.0.0.66",
            Err(Refusal::NeighbourMismatch { seen: mac(SPOOFER) }),
        ),
        (
            Config,
            "::ffff:10.0.0.66",
            Err(Refusal::NeighbourMismatch { seen: mac(SPOOFER) }),
        ),
        // Another declared NIC of the node: only after the script.
        (
            Script,
            "10.0.0.11",
            Err(Refusal::NeighbourMismatch { seen: mac(OTHER_NIC) }),
        ),
        (Config, "10.0.0.11", Ok(Bound::OtherNic(mac(OTHER_NIC)))),
        (Callback, "10.0.0.11", Ok(Bound::OtherNic(mac(OTHER_NIC)))),
        // On link, no entry even after the probe: absent or spoofed.
        (Script, "10.0.0.77", Err(Refusal::NoNeighbour)),
        // Loopback is never the machine, in any spelling.
        (Script, "127.0.0.1", Err(Refusal::Loopback)),
        (Config, "::1", Err(Refusal::Loopback)),
        (Script, "::ffff:127.0.0.1", Err(Refusal::Loopback)),
        (Script, "0.0.0.0", Err(Refusal::NotUnicast)),
        (Script, "255.255.255.255", Err(Refusal::NotUnicast)),
        (Script, "224.0.0.1", Err(Refusal::NotUnicast)),
        // Routed, external DHCP: cannot be checked.
        (Script, "10.9.0.5", Err(Refusal::Unverifiable)),
        (Config, "fd00::5", Err(Refusal::Unverifiable)),
    ];
    for (stage, peer, want) in cases {
        assert_eq!(bind(&claim(stage, peer), &f), want, "{stage:?} from {peer}");
    }
}

#[test]
fn binding_table_full_dhcp_and_relays() {
    let mut f = facts();
    let mut leases = HashMap::new();
    leases.insert(ip("10.9.0.5"), mac(M));
    leases.insert(ip("10.9.0.6"), mac(SPOOFER));
    leases.insert(ip("10.9.0.7"), mac(OTHER_NIC));
    f.leases = Some(leases);
    // A relayed client holding the machine's lease.
    assert_eq!(bind(&claim(Stage::Script, "10.9.0.5"), &f), Ok(Bound::Lease));
    assert_eq!(
        bind(&claim(Stage::Script, "10.9.0.6"), &f),
        Err(Refusal::LeaseMismatch { holder: mac(SPOOFER) })
    );
    assert_eq!(
        bind(&claim(Stage::Script, "10.9.0.7"), &f),
        Err(Refusal::LeaseMismatch {
            holder: mac(OTHER_NIC)
        })
    );
    assert_eq!(bind(&claim(Stage::Config, "10.9.0.7"), &f), Ok(Bound::Lease));
    // Full mode but no lease, not on link: approval is the only way.
    assert_eq!(
        bind(&claim(Stage::Script, "10.9.0.8"), &f),
        Err(Refusal::Unverifiable)
    );
    // A neighbour entry wins over a stale lease.
    f.leases.as_mut().unwrap().insert(ip("10.0.0.66"), mac(M));
    assert_eq!(
        bind(&claim(Stage::Script, "10.0.0.66"), &f),
        Err(Refusal::NeighbourMismatch { seen: mac(SPOOFER) })
    );
}

#[test]
fn approval_and_script_peer() {
    let f = facts();
    let mut c = claim(Stage::Script, "10.9.0.5");
    c.approved = true;
    assert_eq!(bind(&c, &f), Ok(Bound::Approved));
    // An approval never overrides evidence against the peer.
    let mut c = claim(Stage::Script, "10.0.0.66");
    c.approved = true;
    assert!(matches!(bind(&c, &f), Err(Refusal::NeighbourMismatch { .. })));
    let mut c = claim(Stage::Script, "10.0.0.77");
    c.approved = true;
    assert_eq!(bind(&c, &f), Err(Refusal::NoNeighbour));
    // The script's address releases the later fetches, not the script itself.
    let mut c = claim(Stage::Config, "10.9.0.5");
    c.script_peer = Some(ip("::ffff:10.9.0.5"));
    assert_eq!(bind(&c, &f), Ok(Bound::ScriptPeer));
    let mut c = claim(Stage::Script, "10.9.0.5");
    c.script_peer = Some(ip("10.9.0.5"));
    assert_eq!(bind(&c, &f), Err(Refusal::Unverifiable));
    // Refusals tell the operator what to do when binding cannot be checked.
    assert!(Refusal::Unverifiable.to_string().contains("machines approve"));
    assert_eq!(Refusal::Unverifiable.code(), "binding_unverifiable");
}

#[test]
fn uuid_parsing() {
    let u = "0d8c1d3e-1111-4000-8000-000000000001";
    for raw in [
        u,
        "0D8C1D3E-1111-4000-8000-000000000001",
        " {0d8c1d3e-1111-4000-8000-000000000001} ",
        "0d8c1d3e111140008000000000000001",
        "urn:uuid:0d8c1d3e-1111-4000-8000-000000000001",
    ] {
        assert_eq!(parse_uuid(raw), UuidField::Valid(u.into()), "{raw}");
    }
    for raw in [
        "",
        "  ",
        "00000000-0000-0000-0000-000000000000",
        "FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF",
    ] {
        assert_eq!(parse_uuid(raw), UuidField::Absent, "{raw}");
    }
    for raw in [
        "not-a-uuid",
        "0d8c1d3e-1111-4000-8000-00000000000",
        "${uuid}",
        "0d8c\n1d3e",
    ] {
        let UuidField::Malformed(shown) = parse_uuid(raw) else {
            panic!("{raw:?} accepted")
        };
        assert!(!shown.contains('$') && !shown.contains('\n'), "{shown:?}");
    }
    let UuidField::Malformed(long) = parse_uuid(&"x".repeat(500)) else {
        panic!()
    };
    assert_eq!(long.len(), 64);
}

#[test]
fn pin_table() {
    let a = "0d8c1d3e-1111-4000-8000-000000000001".to_string();
    let b = "0d8c1d3e-2222-4000-8000-000000000002".to_string();
    let valid = |s: &String| UuidField::Valid(s.clone());
    assert_eq!(check_pin(None, &valid(&a)), PinCheck::Pin(a.clone()));
    assert_eq!(check_pin(Some(&a), &valid(&a)), PinCheck::Match);
    assert_eq!(check_pin(None, &UuidField::Absent), PinCheck::Unpinned);
    assert_eq!(
        check_pin(Some(&a), &valid(&b)),
        PinCheck::Refused(PinRefusal::Mismatch {
            pinned: a.clone(),
            presented: Some(b.clone())
        })
    );
    let PinCheck::Refused(r) = check_pin(Some(&a), &UuidField::Absent) else {
        panic!("a pinned MAC without a UUID passed")
    };
    assert_eq!(r.code(), "uuid_mismatch");
    assert!(r.to_string().contains("machines unpin"), "{r}");
    let PinCheck::Refused(r) = check_pin(None, &UuidField::Malformed("zz".into())) else {
        panic!()
    };
    assert_eq!(r.code(), "malformed_uuid");
}

#[test]
fn admission_rules() {
    use Admission::*;
    assert_eq!(admission::effective(Auto, None, None), Auto);
    assert_eq!(admission::effective(Auto, Some(Approve), None), Approve);
    assert_eq!(admission::effective(Approve, Some(Auto), None), Auto);
    assert_eq!(admission::effective(Approve, Some(Auto), Some(Approve)), Approve);
    assert_eq!(admission::effective(Approve, None, Some(Auto)), Auto);
    // (mode, unknown machine with secrets, approved) -> waits
    for (mode, unknown, approved, waits) in [
        (Auto, false, false, false),
        (Auto, true, false, true),
        (Auto, true, true, false),
        (Approve, false, false, true),
        (Approve, false, true, false),
    ] {
        assert_eq!(
            admission::must_wait(mode, unknown, approved),
            waits,
            "{mode:?} {unknown} {approved}"
        );
    }
    let now = OffsetDateTime::UNIX_EPOCH + time::Duration::days(20_000);
    let ap = Approval {
        uuid: Some("u1".into()),
        token_id: "tok1".into(),
        at: now,
        expires: now + time::Duration::minutes(60),
    };
    assert!(admission::covers(Some(&ap), Some("u1"), now));
    assert!(
        !admission::covers(Some(&ap), Some("u2"), now),
        "bound to the UUID"
    );
    assert!(!admission::covers(Some(&ap), None, now));
    assert!(
        !admission::covers(Some(&ap), Some("u1"), now + time::Duration::minutes(61)),
        "expires"
    );
    assert!(!admission::covers(None, Some("u1"), now));
    assert!("approve".parse::<Admission>().is_ok() && "sometimes".parse::<Admission>().is_err());
}

#[test]
fn user_codes() {
    let c = admission::user_code([0, 1, 2, 3, 19, 20, 255, 128]);
    assert_eq!(c, "BCDF-ZBTL");
    assert!(
        c.chars()
            .all(|ch| ch == '-' || b"BCDFGHJKLMNPQRSTVWXZ".contains(&(ch as u8)))
    );
    assert!(admission::codes_equal("bcdf ztbl", "BCDF-ZTBL"));
    assert!(!admission::codes_equal("BCDF-ZBNM", "BCDF-ZBNL"));
    assert!(!admission::codes_equal("", "--"), "an empty code never matches");
}

fn grant() -> Grant {
    Grant::new(
        mac(M),
        None,
        ip("10.0.0.10"),
        "BCDF-GHJK".into(),
        "talos".into(),
        0,
        600,
        device::DEFAULT_INTERVAL_SECS,
    )
}

/// Talos' client (x/oauth2): an immediate poll after the authorization, then one per
/// interval, each as a Basic-header request followed at once by a form-only one.
#[test]
fn device_polls_like_talos_are_never_too_fast() {
    let mut g = grant();
    for tick in 0..5i64 {
        let t = tick * 5_000 + 3;
        assert_eq!(
            g.poll(t, ClientAuth::BasicHeader),
            Err(TokenError::AuthorizationPending)
        );
        assert_eq!(
            g.poll(t + 40, ClientAuth::FormParams),
            Err(TokenError::AuthorizationPending)
        );
    }
    g.state = GrantState::Approved("tok".into());
    assert_eq!(g.poll(25_010, ClientAuth::BasicHeader), Ok(()));
    assert_eq!(g.state, GrantState::Issued);
    // The device code is spent: a replay is invalid_grant.
    assert_eq!(
        g.poll(30_010, ClientAuth::BasicHeader),
        Err(TokenError::InvalidGrant)
    );
}

#[test]
fn device_slow_down_denied_expired() {
    let mut g = grant();
    assert_eq!(
        g.poll(0, ClientAuth::FormParams),
        Err(TokenError::AuthorizationPending)
    );
    assert_eq!(g.poll(1_000, ClientAuth::FormParams), Err(TokenError::SlowDown));
    assert_eq!(g.interval_secs, 10, "RFC 8628 §3.5: +5 s");
    // On the new interval it is fine again; at the old one it is too fast.
    assert_eq!(g.poll(6_000, ClientAuth::FormParams), Err(TokenError::SlowDown));
    assert_eq!(g.interval_secs, 15);
    assert_eq!(
        g.poll(21_000, ClientAuth::FormParams),
        Err(TokenError::AuthorizationPending)
    );
    // Approval does not rescue a too-fast poll, and the grant stays approved.
    g.state = GrantState::Approved("t".into());
    assert_eq!(g.poll(22_000, ClientAuth::FormParams), Err(TokenError::SlowDown));
    assert!(matches!(g.state, GrantState::Approved(_)));
    let mut d = grant();
    d.state = GrantState::Denied("t".into());
    assert_eq!(d.poll(0, ClientAuth::FormParams), Err(TokenError::AccessDenied));
    let mut e = grant();
    assert_eq!(
        e.poll(600_000, ClientAuth::FormParams),
        Err(TokenError::ExpiredToken)
    );
    e.state = GrantState::Approved("t".into());
    assert_eq!(
        e.poll(700_000, ClientAuth::FormParams),
        Err(TokenError::ExpiredToken)
    );
    // A short interval gets a proportionally short tolerance (a fifth).
    let mut quick = Grant::new(mac(M), None, ip("10.0.0.10"), "C".into(), "t".into(), 0, 60, 1);
    assert_eq!(
        quick.poll(0, ClientAuth::FormParams),
        Err(TokenError::AuthorizationPending)
    );
    assert_eq!(
        quick.poll(850, ClientAuth::FormParams),
        Err(TokenError::AuthorizationPending)
    );
    assert_eq!(
        quick.poll(1_500, ClientAuth::FormParams),
        Err(TokenError::SlowDown)
    );
    assert_eq!(TokenError::InvalidClient.status(), 401);
    assert_eq!(TokenError::SlowDown.status(), 400);
}

#[test]
fn device_request_parsing() {
    let r = device::parse_device_auth(
        b"client_id=talos&scope=openid+config&uuid=0D8C1D3E-1111-4000-8000-000000000001&mac=52%3A54%3A00%3A00%3A00%3A01",
    )
    .unwrap();
    assert_eq!(r.client_id, "talos");
    assert_eq!(r.scopes, ["openid", "config"]);
    assert_eq!(r.mac, Some(Ok(mac(M))));
    assert_eq!(
        r.uuid,
        UuidField::Valid("0d8c1d3e-1111-4000-8000-000000000001".into())
    );
    assert!(matches!(
        device::parse_device_auth(b"client_id=t&mac=zz").unwrap().mac,
        Some(Err(_))
    ));
    assert_eq!(
        device::parse_device_auth(b"scope=x"),
        Err(TokenError::InvalidRequest)
    );

    let grant = "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Adevice_code&device_code=abc";
    // x/oauth2's first try: Basic `url.QueryEscape(id):` plus client_id in the form.
    let basic = "Basic dGFsb3MlMkZub2RlOg=="; // "talos%2Fnode:"
    let t = device::parse_token_request(format!("{grant}&client_id=talos%2Fnode").as_bytes(), Some(basic))
        .unwrap();
    assert_eq!(
        (t.client_id.as_str(), t.auth),
        ("talos/node", ClientAuth::BasicHeader)
    );
    let t = device::parse_token_request(format!("{grant}&client_id=talos").as_bytes(), None).unwrap();
    assert_eq!((t.device_code.as_str(), t.auth), ("abc", ClientAuth::FormParams));
    for (body, auth, want) in [
        (
            "grant_type=password&device_code=a&client_id=t",
            None,
            TokenError::UnsupportedGrantType,
        ),
        ("device_code=a&client_id=t", None, TokenError::InvalidRequest),
        (grant, None, TokenError::InvalidClient),
        (
            &format!("{grant}&client_id=t"),
            Some("Bearer x"),
            TokenError::InvalidClient,
        ),
        (
            &format!("{grant}&client_id=other"),
            Some(basic),
            TokenError::InvalidClient,
        ),
        (
            "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Adevice_code&client_id=t",
            None,
            TokenError::InvalidRequest,
        ),
    ] {
        assert_eq!(
            device::parse_token_request(body.as_bytes(), auth),
            Err(want),
            "{body}"
        );
    }
}
