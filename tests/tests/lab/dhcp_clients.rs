//! The built-in DHCP server against real clients in network namespaces (issue 3):
//! busybox `udhcpc` and ISC `dhclient` get, renew and release leases in full mode,
//! a reserved MAC gets its address, proxy mode gives them nothing, a relay is
//! answered by unicast to giaddr, and full mode refuses to start next to another
//! DHCP server unless forced. Needs root.

use crate::common;

use std::fs;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use anyhow::Result;
use common::{Req, exchange, full_yaml, in_netns, leases, site, start, udp};
use dhcproto::v4::MessageType;
use provisioner_e2e::{Lab, require_root, wait_for};

const UDHCPC_MAC: &str = "52:54:00:d0:00:01";
const DHCLIENT_MAC: &str = "52:54:00:d0:00:02";
const RESERVED_MAC: &str = "52:54:00:d0:00:03";

fn script(path: &Path, body: &str) -> Result<()> {
    fs::write(path, format!("#!/bin/sh\n{body}"))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o755))?;
    Ok(())
}

/// udhcpc's hook: configure eth0 and log `<event> <ip> <lease>`.
fn udhcpc_script(dir: &Path, name: &str) -> Result<(String, std::path::PathBuf)> {
    let log = dir.join(format!("{name}.events"));
    let path = dir.join(format!("{name}.sh"));
    script(
        &path,
        &format!(
            "case \"$1\" in\n  deconfig) ip addr flush dev \"$interface\" ;;\n  \
             bound|renew) ip addr flush dev \"$interface\"; ip addr add \"$ip/${{mask:-24}}\" dev \"$interface\" ;;\nesac\n\
             echo \"$1 ${{ip:-}} ${{lease:-}}\" >> {log}\n",
            log = log.display()
        ),
    )?;
    Ok((path.to_string_lossy().into_owned(), log))
}

/// dhclient's hook (never the stock one: it would rewrite the host's resolv.conf).
fn dhclient_script(dir: &Path) -> Result<(String, std::path::PathBuf)> {
    let log = dir.join("dhclient.events");
    let path = dir.join("dhclient.sh");
    script(
        &path,
        &format!(
            "case \"$reason\" in\n  BOUND|RENEW|REBIND|REBOOT) ip addr flush dev \"$interface\"; \
             ip addr add \"$new_ip_address/24\" dev \"$interface\" ;;\n  RELEASE|EXPIRE|STOP) ip addr flush dev \"$interface\" ;;\nesac\n\
             echo \"$reason ${{new_ip_address:-}}\" >> {log}\n",
            log = log.display()
        ),
    )?;
    Ok((path.to_string_lossy().into_owned(), log))
}

fn events(log: &Path) -> String {
    fs::read_to_string(log).unwrap_or_default()
}

fn wait_event(log: &Path, needle: &str, secs: u64) -> Result<()> {
    wait_for(
        Duration::from_secs(secs),
        &format!("{needle:?} in {}", log.display()),
        || Ok(events(log).contains(needle).then_some(())),
    )
    .map_err(|e| anyhow::anyhow!("{e}\nevents so far:\n{}", events(log)))
}

fn lease_of(a: &provisioner_e2e::Appliance, mac: &str) -> Result<Option<(String, String)>> {
    Ok(leases(a)?
        .into_iter()
        .find(|(m, _, _)| m == mac)
        .map(|(_, ip, st)| (ip, st)))
}

#[test]
fn full_mode_real_clients_lease_renew_release_and_reservation() -> Result<()> {
    require_root();
    let lab = Lab::new("dhcp-full-clients")?;
    let p = lab.subnet_prefix();
    let extra = format!(
        "  lease_time_secs: 10\n  reservations:\n    - {{ mac: \"{RESERVED_MAC}\", ip: {p}.50, hostname: reserved }}\n"
    );
    let config = site(&lab, &full_yaml(&lab, &extra))?;
    let appliance = start(&lab, &config)?;
    let dir = lab.dir();

    // busybox udhcpc: lease, renew at T1 (5 s), release on SIGUSR2.
    let u = lab.peer(1, UDHCPC_MAC, None)?;
    let (us, ulog) = udhcpc_script(dir, "udhcpc")?;
    let mut udhcpc = u.spawn(
        &lab,
        &[
            "busybox", "udhcpc", "-f", "-i", "eth0", "-s", &us, "-t", "5", "-T", "2",
        ],
        &dir.join("udhcpc.log"),
    )?;
    // ISC dhclient alongside it.
    let d = lab.peer(2, DHCLIENT_MAC, None)?;
    let (ds, dlog) = dhclient_script(dir)?;
    let (lf, pf) = (dir.join("dhclient.leases"), dir.join("dhclient.pid"));
    let cf = dir.join("dhclient.conf");
    fs::write(&cf, "timeout 20;\nretry 1;\n")?;
    let dargs = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = ["dhclient", "-v", "-cf"].iter().map(|s| s.to_string()).collect();
        v.push(cf.display().to_string());
        v.extend([
            "-lf".into(),
            lf.display().to_string(),
            "-pf".into(),
            pf.display().to_string(),
            "-sf".into(),
            ds.clone(),
        ]);
        v.extend(extra.iter().map(|s| s.to_string()));
        v.push("eth0".into());
        v
    };
    let da = dargs(&["-d"]);
    let da: Vec<&str> = da.iter().map(String::as_str).collect();
    let _dhclient = d.spawn(&lab, &da, &dir.join("dhclient.log"))?;

    wait_event(&ulog, &format!("bound {p}.1"), 30)?;
    wait_event(&dlog, &format!("BOUND {p}.1"), 40)?;
    let uip = u.addresses()?;
    let dip = d.addresses()?;
    assert_eq!(uip.len(), 1, "udhcpc configured one address: {uip:?}");
    assert_eq!(dip.len(), 1, "dhclient configured one address: {dip:?}");
    assert_ne!(uip, dip, "distinct addresses");
    let uaddr = uip[0].split('/').next().unwrap().to_owned();
    let daddr = dip[0].split('/').next().unwrap().to_owned();
    for a in [&uaddr, &daddr] {
        let last: u8 = a.rsplit('.').next().unwrap().parse()?;
        assert!((100..=150).contains(&last), "{a} is in the pool");
    }
    assert_eq!(
        lease_of(&appliance, UDHCPC_MAC)?,
        Some((uaddr.clone(), "active".into()))
    );
    assert_eq!(
        lease_of(&appliance, DHCLIENT_MAC)?,
        Some((daddr.clone(), "active".into()))
    );

    // Both renew at T1 by unicast to the server (lease 10 s).
    wait_event(&ulog, &format!("renew {uaddr}"), 20)?;
    wait_event(&dlog, &format!("RENEW {daddr}"), 20)?;

    // The reserved MAC gets its address (udhcpc, quit after the lease).
    let r = lab.peer(3, RESERVED_MAC, None)?;
    let (rs, rlog) = udhcpc_script(dir, "reserved")?;
    r.exec(&[
        "busybox", "udhcpc", "-q", "-n", "-i", "eth0", "-s", &rs, "-t", "5", "-T", "2",
    ])?;
    assert!(
        events(&rlog).contains(&format!("bound {p}.50 ")),
        "reserved address: {}",
        events(&rlog)
    );

    // Release: udhcpc on SIGUSR2, dhclient with -r.
    u.exec(&["busybox", "kill", "-USR2", &udhcpc.pid().to_string()])?;
    wait_event(&ulog, "deconfig", 10)?;
    let dr = dargs(&["-r"]);
    let dr: Vec<&str> = dr.iter().map(String::as_str).collect();
    d.exec(&dr)?;
    wait_for(Duration::from_secs(10), "both leases released", || {
        let (ul, dl) = (
            lease_of(&appliance, UDHCPC_MAC)?,
            lease_of(&appliance, DHCLIENT_MAC)?,
        );
        Ok(
            (ul == Some((uaddr.clone(), "released".into()))
                && dl == Some((daddr.clone(), "released".into())))
            .then_some(()),
        )
    })?;
    udhcpc.kill_9();
    Ok(())
}

#[test]
fn proxy_mode_gives_plain_clients_nothing_but_answers_pxe_and_relays() -> Result<()> {
    require_root();
    let lab = Lab::new("dhcp-proxy-clients")?;
    let config = site(&lab, "  mode: proxy\n  interface: br0\n")?;
    let appliance = start(&lab, &config)?;
    let dir = lab.dir();
    let server = lab.ip().parse::<Ipv4Addr>()?;

    let u = lab.peer(1, UDHCPC_MAC, None)?;
    let (us, ulog) = udhcpc_script(dir, "udhcpc")?;
    let st = u
        .command(&[
            "busybox", "udhcpc", "-q", "-n", "-i", "eth0", "-s", &us, "-t", "3", "-T", "1",
        ])
        .status()?;
    assert!(
        !st.success(),
        "udhcpc must get no lease from a proxy: {}",
        events(&ulog)
    );
    assert!(!events(&ulog).contains("bound"), "{}", events(&ulog));

    let d = lab.peer(2, DHCLIENT_MAC, None)?;
    let (ds, dlog) = dhclient_script(dir)?;
    let cf = dir.join("dhclient.conf");
    fs::write(&cf, "timeout 4;\nretry 1;\n")?;
    let (cf, lf, pf) = (
        cf.display().to_string(),
        dir.join("dl.leases").display().to_string(),
        dir.join("dl.pid").display().to_string(),
    );
    let st = d
        .command(&[
            "dhclient", "-1", "-v", "-cf", &cf, "-lf", &lf, "-pf", &pf, "-sf", &ds, "eth0",
        ])
        .status()?;
    assert!(!st.success(), "dhclient must get no lease from a proxy");
    assert!(!events(&dlog).contains("BOUND"), "{}", events(&dlog));
    let metrics = appliance.api_get("/metrics")?;
    assert!(
        metrics.lines().any(|l| l.contains("reason=\"not_boot_client\"")),
        "their DISCOVERs were seen and dropped on purpose:\n{metrics}"
    );

    // Positive control from a peer with an address: a PXE DISCOVER gets a proxy
    // OFFER (broadcast), the REQUEST to 4011 an ACK (unicast), both with the file.
    let pxe = lab.peer(
        3,
        "52:54:00:d0:00:04",
        Some(&format!("{}.3/24", lab.subnet_prefix())),
    )?;
    let relay_ip: Ipv4Addr = format!("{}.4", lab.subnet_prefix()).parse()?;
    let relay = lab.peer(4, "52:54:00:d0:00:05", Some(&format!("{relay_ip}/24")))?;
    let (offer, ack) = in_netns(pxe.netns(), move || -> Result<_> {
        let s = udp(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68))?;
        let req = Req {
            mac: [0x52, 0x54, 0, 0xd0, 0, 4],
            xid: 7,
            vendor: Some("PXEClient:Arch:00000:UNDI:002001"),
            arch: Some(0),
            ..Req::default()
        };
        let offer = exchange(
            &s,
            &req,
            SocketAddrV4::new(Ipv4Addr::BROADCAST, 67),
            Duration::from_secs(5),
        )?;
        let req = Req {
            t: Some(MessageType::Request),
            xid: 8,
            ciaddr: Some("0.0.0.0".parse()?),
            ..req
        };
        let ack = exchange(&s, &req, SocketAddrV4::new(server, 4011), Duration::from_secs(5))?;
        Ok((offer, ack))
    })?;
    assert_eq!(offer.kind(), Some(MessageType::Offer));
    assert_eq!(offer.msg.yiaddr(), Ipv4Addr::UNSPECIFIED, "proxy assigns nothing");
    assert_eq!(offer.bootfile().as_deref(), Some("undionly.kpxe"));
    assert_eq!(ack.kind(), Some(MessageType::Ack));
    assert_eq!(ack.from.port(), 4011, "4011 answers from 4011");
    assert_eq!(ack.bootfile().as_deref(), Some("undionly.kpxe"));

    // A relayed PXE DISCOVER: the proxy OFFER goes to giaddr:67 by unicast.
    let relayed = in_netns(relay.netns(), move || -> Result<_> {
        let s = udp(SocketAddrV4::new(relay_ip, 67))?;
        let req = Req {
            mac: [0x52, 0x54, 0, 0xd0, 0, 9],
            xid: 9,
            giaddr: Some(relay_ip),
            vendor: Some("PXEClient:Arch:00007:UNDI:003016"),
            arch: Some(7),
            ..Req::default()
        };
        exchange(&s, &req, SocketAddrV4::new(server, 67), Duration::from_secs(5))
    })?;
    assert_eq!(relayed.kind(), Some(MessageType::Offer));
    assert_eq!(
        relayed.from,
        std::net::SocketAddr::from((server, 67)),
        "from the address the relay targeted"
    );
    assert_eq!(relayed.msg.giaddr(), relay_ip);
    assert_eq!(relayed.bootfile().as_deref(), Some("snponly.efi"));
    Ok(())
}

#[test]
fn full_mode_relay_is_answered_by_unicast_to_giaddr() -> Result<()> {
    require_root();
    let lab = Lab::new("dhcp-relay")?;
    let config = site(&lab, &full_yaml(&lab, ""))?;
    let appliance = start(&lab, &config)?;
    let server: Ipv4Addr = lab.ip().parse()?;
    let relay_ip: Ipv4Addr = format!("{}.2", lab.subnet_prefix()).parse()?;
    let relay = lab.peer(1, "52:54:00:d0:00:10", Some(&format!("{relay_ip}/24")))?;
    let (offer, ack) = in_netns(relay.netns(), move || -> Result<_> {
        let s = udp(SocketAddrV4::new(relay_ip, 67))?;
        let mac = [0x52, 0x54, 0, 0xd0, 1, 1];
        let req = Req {
            mac,
            xid: 21,
            giaddr: Some(relay_ip),
            ..Req::default()
        };
        let offer = exchange(&s, &req, SocketAddrV4::new(server, 67), Duration::from_secs(5))?;
        let req = Req {
            t: Some(MessageType::Request),
            xid: 22,
            requested: Some(offer.msg.yiaddr()),
            server_id: offer.server_id(),
            ..req
        };
        let ack = exchange(&s, &req, SocketAddrV4::new(server, 67), Duration::from_secs(5))?;
        Ok((offer, ack))
    })?;
    assert_eq!(offer.kind(), Some(MessageType::Offer));
    assert_eq!(
        offer.from,
        std::net::SocketAddr::from((server, 67)),
        "unicast to the relay, from :67"
    );
    assert_eq!(offer.msg.giaddr(), relay_ip);
    assert_eq!(ack.kind(), Some(MessageType::Ack));
    assert_eq!(ack.msg.yiaddr(), offer.msg.yiaddr());

    // Multi-homed: a second address on the interface. A relay that targets it is
    // answered from it, and it is the server identifier (IP_PKTINFO spec_dst).
    let second: Ipv4Addr = format!("{}.77", lab.subnet_prefix()).parse()?;
    lab.exec(&["ip", "addr", "add", &format!("{second}/24"), "dev", "br0"])?;
    let other = in_netns(relay.netns(), move || -> Result<_> {
        let s = udp(SocketAddrV4::new(relay_ip, 67))?;
        let req = Req {
            mac: [0x52, 0x54, 0, 0xd0, 1, 2],
            xid: 23,
            giaddr: Some(relay_ip),
            ..Req::default()
        };
        exchange(&s, &req, SocketAddrV4::new(second, 67), Duration::from_secs(5))
    })?;
    assert_eq!(
        other.from,
        std::net::SocketAddr::from((second, 67)),
        "answered from the targeted address"
    );
    assert_eq!(
        other.server_id(),
        Some(second),
        "option 54 is the targeted address"
    );

    // Load shedding: a burst from one MAC beyond its bucket is dropped and counted.
    in_netns(relay.netns(), move || -> Result<()> {
        let s = udp(SocketAddrV4::new(relay_ip, 67))?;
        for xid in 0..200 {
            let req = Req {
                mac: [0x52, 0x54, 0, 0xd0, 1, 3],
                xid: 1000 + xid,
                giaddr: Some(relay_ip),
                ..Req::default()
            };
            s.send_to(&req.encode(), SocketAddrV4::new(server, 67))?;
            // Paced so the kernel's receive buffer, not the limiter, never drops.
            std::thread::sleep(Duration::from_millis(2));
        }
        Ok(())
    })?;
    // Burst 30 and 10/s refill (the defaults): of 200 sent within about half a
    // second, at least 150 are shed; wait for the server to have read them all.
    let limited = |m: &str| -> f64 {
        m.lines()
            .find(|l| {
                l.starts_with("provisioner_dhcp_dropped_total") && l.contains("reason=\"rate_limited\"")
            })
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    let n = wait_for(
        Duration::from_secs(10),
        "150 rate-limited drops in /metrics",
        || {
            let n = limited(&appliance.api_get("/metrics")?);
            Ok((n >= 150.0).then_some(n))
        },
    )?;
    assert!(n <= 200.0, "{n}");
    Ok(())
}

#[test]
fn full_mode_refuses_to_start_next_to_another_dhcp_server_unless_forced() -> Result<()> {
    require_root();
    let lab = Lab::new("dhcp-probe")?;
    let p = lab.subnet_prefix();
    let other = lab.peer(1, "52:54:00:d0:00:20", Some(&format!("{p}.3/24")))?;
    let dir = lab.dir();
    let range = format!("--dhcp-range={p}.200,{p}.210,1h");
    let leasefile = format!("--dhcp-leasefile={}", dir.join("other.leases").display());
    let pidfile = format!("--pid-file={}", dir.join("other.pid").display());
    let mut dnsmasq = other.spawn(
        &lab,
        &[
            "dnsmasq",
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--port=0",
            "--interface=eth0",
            "--bind-interfaces",
            "--no-ping",
            "--log-facility=-",
            "--user=root",
            &range,
            &leasefile,
            &pidfile,
        ],
        &dir.join("other-dnsmasq.log"),
    )?;
    dnsmasq.wait_for_log("DHCP, IP range", Duration::from_secs(15))?;

    let config = site(&lab, &full_yaml(&lab, "  probe_secs: 2\n"))?;
    let bin = provisioner_e2e::appliance::provisioner_bin()?;
    let out = lab
        .command(&[
            &bin.to_string_lossy(),
            "serve",
            "--config",
            &config.to_string_lossy(),
        ])
        .env("NO_COLOR", "1")
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "must refuse to start:\n{stderr}");
    assert!(
        stderr.contains("another DHCP server answers") && stderr.contains(&format!("{p}.3")),
        "names the other server:\n{stderr}"
    );

    let forced = site(&lab, &full_yaml(&lab, "  probe_secs: 2\n  force: true\n"))?;
    let mut a = start(&lab, &forced)?;
    a.wait_for_log("starting anyway", Duration::from_secs(5))?;
    a.stop()?;
    Ok(())
}
