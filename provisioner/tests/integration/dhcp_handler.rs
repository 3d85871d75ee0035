//! The DHCP handler without sockets: boot decision through the Booter, the
//! inventory's per-machine `boot_file`, `http_boot_only`, the unknown policy, the
//! timeline entries, drop accounting for malformed input, and full mode's deferred
//! ACK (released only once its lease is durable).

use crate::common;

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;

use common::{BASE, BIOS_MAC, EFI_MAC, rig};
use provisioner::dhcp::handler::{Handled, Handler};
use provisioner::dhcp::socket::Arrival;
use provisioner_core::boot::UnknownPolicy;
use provisioner_core::dhcp::Personality;
use provisioner_core::dhcp::bootfile::BootFiles;
use provisioner_core::dhcp::full::{FullConfig, FullServer};
use provisioner_core::dhcp::lease::{GroupCommit, Lease, LeaseError, LeaseStore, MemLeases};
use provisioner_core::dhcp::reply::Port;
use provisioner_core::dhcp::v4::{Architecture, DhcpOption, Message, MessageType, OptionCode};
use provisioner_core::dhcp::wire;
use provisioner_core::model::{EventKind, MacAddr, Machine};

const SERVER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);

fn handler(r: &common::Rig, mode: Personality, http_only: &[&str]) -> Handler {
    let full = (mode == Personality::Full).then(|| {
        FullServer::new(FullConfig {
            subnet: "10.0.0.0/24".parse().unwrap(),
            pool: Some((Ipv4Addr::new(10, 0, 0, 100), Ipv4Addr::new(10, 0, 0, 120))),
            router: None,
            dns: vec![],
            domain: None,
            lease_secs: 600,
            reservations: Default::default(),
            guard: provisioner_core::dhcp::full::PoolGuard::open(),
        })
    });
    Handler {
        personality: mode,
        full: provisioner::dhcp::handler::FullSlot::new(full),
        leases: Arc::new(MemLeases::new()) as Arc<dyn LeaseStore>,
        service: r.service.clone(),
        files: BootFiles::default(),
        next_server: SERVER,
        http_boot_only: http_only
            .iter()
            .map(|m| m.parse().unwrap())
            .collect::<HashSet<MacAddr>>(),
    }
}

fn pxe(mac: &str, arch: u16, t: MessageType) -> Vec<u8> {
    let mac: MacAddr = mac.parse().unwrap();
    let z = Ipv4Addr::UNSPECIFIED;
    let mut m = Message::new_with_id(42, z, z, z, z, &mac.0);
    let o = m.opts_mut();
    o.insert(DhcpOption::MessageType(t));
    o.insert(DhcpOption::ClassIdentifier(
        format!("PXEClient:Arch:{arch:05}:UNDI:003016").into_bytes(),
    ));
    o.insert(DhcpOption::ClientSystemArchitecture(Architecture(arch)));
    wire::encode(&m).unwrap()
}

fn arrival() -> Arrival {
    Arrival {
        src: SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68),
        ifindex: 3,
        local: SERVER,
    }
}

fn file_of(bytes: &[u8]) -> Option<String> {
    match wire::decode(bytes).unwrap().opts().get(OptionCode::BootfileName) {
        Some(DhcpOption::BootfileName(b)) => Some(String::from_utf8_lossy(b).into_owned()),
        _ => None,
    }
}

#[test]
fn proxy_offer_records_the_machine_and_its_timeline() {
    let r = rig(UnknownPolicy::Record);
    let h = handler(&r, Personality::Proxy, &[]);
    let (out, note) = h.handle(&pxe(EFI_MAC, 7, MessageType::Discover), Port::Dhcp, &arrival(), 0);
    let out = out.expect("offer");
    assert_eq!(
        out.dst,
        SocketAddrV4::new(Ipv4Addr::BROADCAST, 68),
        "no address yet: broadcast"
    );
    assert_eq!(out.ifindex, 3, "broadcast pinned to the ingress interface");
    assert_eq!(file_of(&out.bytes).as_deref(), Some("snponly.efi"));
    h.record(note.expect("a boot client gets a timeline"));
    let m = r
        .inventory
        .get(EFI_MAC.parse().unwrap())
        .unwrap()
        .expect("machine recorded");
    assert_eq!(m.arch, provisioner_core::model::Arch::X86_64Efi);
    let tl = r.inventory.timeline(m.mac).unwrap();
    let seen = tl
        .iter()
        .find(|e| e.kind() == EventKind::DhcpSeen)
        .expect("dhcp_seen");
    assert_eq!(seen.detail(), "DISCOVER on :67 (proxy): pxe, arch 7");
    let sent = tl
        .iter()
        .find(|e| e.kind() == EventKind::DhcpSent)
        .expect("dhcp_sent");
    assert_eq!(sent.detail(), "OFFER boot snponly.efi to 255.255.255.255:68");
}

#[test]
fn inventory_boot_file_overrides_the_architecture_default() {
    let r = rig(UnknownPolicy::Record);
    let mut m = Machine::discovered(BIOS_MAC.parse().unwrap(), time::OffsetDateTime::now_utc());
    m.boot_file = Some("ipxe.pxe".into());
    r.inventory.put(&m).unwrap();
    let h = handler(&r, Personality::Proxy, &[]);
    let (out, _) = h.handle(
        &pxe(BIOS_MAC, 0, MessageType::Discover),
        Port::Dhcp,
        &arrival(),
        0,
    );
    assert_eq!(file_of(&out.unwrap().bytes).as_deref(), Some("ipxe.pxe"));
}

#[test]
fn http_boot_only_macs_get_no_pxe_offer_but_do_get_http_boot() {
    let r = rig(UnknownPolicy::Record);
    let h = handler(&r, Personality::Full, &[EFI_MAC]);
    let (out, _) = h.handle(&pxe(EFI_MAC, 7, MessageType::Discover), Port::Dhcp, &arrival(), 0);
    let offer = out.expect("full mode still offers an address");
    assert_eq!(file_of(&offer.bytes), None, "but no PXE boot file");
    let mac: MacAddr = EFI_MAC.parse().unwrap();
    let z = Ipv4Addr::UNSPECIFIED;
    let mut m = Message::new_with_id(43, z, z, z, z, &mac.0);
    m.opts_mut()
        .insert(DhcpOption::MessageType(MessageType::Discover));
    m.opts_mut().insert(DhcpOption::ClassIdentifier(
        b"HTTPClient:Arch:00016:UNDI:003001".to_vec(),
    ));
    m.opts_mut()
        .insert(DhcpOption::ClientSystemArchitecture(Architecture(16)));
    let (out, _) = h.handle(&wire::encode(&m).unwrap(), Port::Dhcp, &arrival(), 0);
    let out = out.unwrap();
    assert_eq!(file_of(&out.bytes), Some(format!("{BASE}/bin/snponly.efi")));
    let d = wire::decode(&out.bytes).unwrap();
    assert_eq!(
        d.opts().get(OptionCode::ClassIdentifier),
        Some(&DhcpOption::ClassIdentifier(b"HTTPClient".to_vec()))
    );
    assert!(!d.yiaddr().is_unspecified(), "with an address");
}

#[test]
fn unknown_policy_ignore_keeps_the_proxy_silent_for_strangers() {
    let r = rig(UnknownPolicy::Ignore);
    let h = handler(&r, Personality::Proxy, &[]);
    let (out, note) = h.handle(
        &pxe("52:54:00:99:99:99", 0, MessageType::Discover),
        Port::Dhcp,
        &arrival(),
        0,
    );
    assert!(out.is_none() && note.is_none(), "no answer, no record");
    let (out, _) = h.handle(
        &pxe(BIOS_MAC, 0, MessageType::Discover),
        Port::Dhcp,
        &arrival(),
        0,
    );
    assert!(out.is_some(), "a machine a group selects is answered");
}

#[test]
fn malformed_datagrams_are_dropped_quietly() {
    let r = rig(UnknownPolicy::Record);
    let h = handler(&r, Personality::Full, &[]);
    let good = pxe(BIOS_MAC, 0, MessageType::Discover);
    let mut no_cookie = good.clone();
    no_cookie[236] ^= 0xff;
    let mut huge_hlen = good.clone();
    huge_hlen[2] = 255;
    for bad in [&good[..100], &no_cookie[..], &huge_hlen[..], &[0u8; 0][..]] {
        let (out, note) = h.handle(bad, Port::Dhcp, &arrival(), 0);
        assert!(out.is_none() && note.is_none());
    }
    assert!(
        h.handle(&good, Port::Dhcp, &arrival(), 0).0.is_some(),
        "and the next good one is answered"
    );
}

/// The disk under a [`GroupCommit`]: counts commits and can be told to refuse them.
#[derive(Debug, Default)]
struct Disk {
    leases: MemLeases,
    refuse: std::sync::atomic::AtomicBool,
}

impl LeaseStore for Disk {
    fn by_mac(&self, mac: MacAddr) -> Result<Option<Lease>, LeaseError> {
        self.leases.by_mac(mac)
    }
    fn by_ip(&self, ip: Ipv4Addr) -> Result<Option<Lease>, LeaseError> {
        self.leases.by_ip(ip)
    }
    fn put(&self, l: &Lease) -> Result<(), LeaseError> {
        if self.refuse.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(LeaseError::Backend("disk full".into()));
        }
        self.leases.put(l)
    }
    fn remove(&self, mac: MacAddr) -> Result<Option<Lease>, LeaseError> {
        self.leases.remove(mac)
    }
    fn list(&self) -> Result<Vec<Lease>, LeaseError> {
        self.leases.list()
    }
}

/// DISCOVER, then the REQUEST for the offered address, deferred: what the socket
/// loop gets before the committer settles it.
fn deferred_request(h: &Handler, mac: &str) -> (Handled, Ipv4Addr) {
    let (offer, _) = h.handle(&pxe(mac, 0, MessageType::Discover), Port::Dhcp, &arrival(), 0);
    let ip = wire::decode(&offer.expect("offer").bytes).unwrap().yiaddr();
    let m: MacAddr = mac.parse().unwrap();
    let z = Ipv4Addr::UNSPECIFIED;
    let mut req = Message::new_with_id(42, z, z, z, z, &m.0);
    let o = req.opts_mut();
    o.insert(DhcpOption::MessageType(MessageType::Request));
    o.insert(DhcpOption::ClassIdentifier(
        b"PXEClient:Arch:00000:UNDI:003016".to_vec(),
    ));
    o.insert(DhcpOption::ClientSystemArchitecture(Architecture(0)));
    o.insert(DhcpOption::RequestedIpAddress(ip));
    o.insert(DhcpOption::ServerIdentifier(SERVER));
    let bytes = wire::encode(&req).unwrap();
    (h.handle_deferred(&bytes, Port::Dhcp, &arrival(), 0), ip)
}

/// The socket loop's path: the ACK is built at once but is not released until the
/// group commit has the lease on disk; a refused commit releases no ACK and the
/// timeline does not claim one was sent (RFC 2131 §4.3.2).
#[test]
fn a_deferred_ack_is_released_only_once_its_lease_is_durable() {
    let r = rig(UnknownPolicy::Record);
    let disk = Arc::new(Disk::default());
    let mut h = handler(&r, Personality::Full, &[]);
    h.leases = Arc::new(GroupCommit::new(disk.clone()).unwrap());

    let (handled, ip) = deferred_request(&h, BIOS_MAC);
    assert!(handled.out.is_some(), "the ACK is built");
    assert!(!handled.pending.is_empty(), "and waits for its lease");
    assert!(disk.list().unwrap().is_empty(), "nothing on disk yet");
    let (out, _) = handled.settle(&*h.leases);
    let ack = wire::decode(&out.expect("released after the commit").bytes).unwrap();
    assert_eq!(ack.opts().msg_type(), Some(MessageType::Ack));
    let on_disk = disk.by_mac(BIOS_MAC.parse().unwrap()).unwrap().expect("durable");
    assert_eq!(on_disk.ip, ip);

    disk.refuse.store(true, std::sync::atomic::Ordering::SeqCst);
    let (handled, _) = deferred_request(&h, EFI_MAC);
    assert!(handled.out.is_some() && !handled.pending.is_empty());
    let (out, note) = handled.settle(&*h.leases);
    assert!(out.is_none(), "no ACK for a lease the disk refused");
    assert_eq!(
        h.leases.by_mac(EFI_MAC.parse().unwrap()).unwrap(),
        None,
        "undone in memory"
    );
    h.record(note.expect("a boot client's timeline"));
    let tl = r.inventory.timeline(EFI_MAC.parse().unwrap()).unwrap();
    assert!(
        tl.iter().any(|e| e.kind() == EventKind::DhcpSeen),
        "the REQUEST itself is on the timeline"
    );
    let acks_sent = tl
        .iter()
        .filter(|e| e.kind() == EventKind::DhcpSent && e.detail().starts_with("ACK"))
        .count();
    assert_eq!(acks_sent, 0, "no dhcp_sent for the ACK that never left");
}
