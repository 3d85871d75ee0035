//! A real firmware boot through a connection flood (issue 15): a peer on the lab
//! bridge holds 2,000 idle TCP connections to the boot port (16 from each of 125
//! addresses, the default per-IP cap, re-opened as the header-read timeout cuts them,
//! as an attacker would) plus a slowloris client trickling its headers; meanwhile
//! SeaBIOS + iPXE boots the payload through DHCP (dnsmasq with the appliance's
//! snippet) -> `/ipxe` -> kernel, initrd, config -> callback. The boot completes,
//! every `/healthz` sample on the boot port answers 200 within 1 s, and `ss` in the
//! appliance's namespace shows the flood connections were really held.
//! Defaults only: no `http:` section in the site config.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use provisioner_e2e::appliance::HTTP_PORT;
use provisioner_e2e::timeline::{self, assert_in_order};
use provisioner_e2e::{Appliance, Firmware, Lab, LabSite, Machine, markers, payload, require_root};

/// Idle connections the flood holds.
const IDLE: usize = 2_000;
/// The default `http.max_connections_per_ip`.
const PER_IP: usize = 16;

/// Enough descriptors for the flood in this process and the appliance it starts
/// (which inherits the limit).
fn raise_nofile() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    let want = 8_192.min(hard);
    if soft < want {
        setrlimit(Resource::RLIMIT_NOFILE, want, hard).expect("setrlimit");
    }
}

/// Runs `f` on a thread inside the namespace `ns`.
fn spawn_in_netns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let fd = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        nix::sched::setns(&fd, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        f()
    })
}

fn connect_from(src: Ipv4Addr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    s.bind(&SocketAddr::new(IpAddr::V4(src), 0).into())?;
    s.connect_timeout(&to.into(), Duration::from_secs(2))?;
    Ok(s.into())
}

/// Whether the server closed `s` (EOF or error); never blocks.
fn is_closed(mut s: &TcpStream) -> bool {
    let mut b = [0u8; 64];
    match s.read(&mut b) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    }
}

/// Keeps `IDLE` connections open from `src(slot)` until `stop`; returns how many
/// times the server closed one and it was re-opened.
fn hold_flood(to: SocketAddr, src: impl Fn(usize) -> Ipv4Addr, stop: &AtomicBool) -> u64 {
    let mut slots: Vec<Option<TcpStream>> = (0..IDLE).map(|_| None).collect();
    let mut reopened = 0;
    while !stop.load(Ordering::Relaxed) {
        for (i, slot) in slots.iter_mut().enumerate() {
            if slot.as_ref().is_some_and(|s| !is_closed(s)) {
                continue;
            }
            if slot.take().is_some() {
                reopened += 1;
            }
            if let Ok(s) = connect_from(src(i), to) {
                s.set_nonblocking(true).expect("nonblocking");
                *slot = Some(s);
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    reopened
}

/// A slowloris client: a request line, then one header byte every 300 ms, over
/// again whenever the server cuts it off; returns the cut-offs.
fn slowloris(to: SocketAddr, src: Ipv4Addr, stop: &AtomicBool) -> u64 {
    let mut cut = 0;
    while !stop.load(Ordering::Relaxed) {
        let Ok(mut s) = connect_from(src, to) else {
            std::thread::sleep(Duration::from_millis(300));
            continue;
        };
        if s.write_all(b"GET /boot.ipxe HTTP/1.1\r\nHost: x\r\n").is_err() {
            cut += 1;
            continue;
        }
        while !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(300));
            if s.write_all(b"X").is_err() {
                cut += 1;
                break;
            }
        }
    }
    cut
}

/// One `GET /healthz` (HTTP/1.0): its status and how long the answer took.
fn healthz(to: SocketAddr, src: Ipv4Addr) -> (u16, Duration) {
    let t = Instant::now();
    let status = (|| -> std::io::Result<u16> {
        let mut s = connect_from(src, to)?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        s.write_all(b"GET /healthz HTTP/1.0\r\nHost: x\r\n\r\n")?;
        let mut head = Vec::new();
        s.read_to_end(&mut head)?;
        Ok(std::str::from_utf8(head.get(9..12).unwrap_or_default())
            .ok()
            .and_then(|c| c.parse().ok())
            .unwrap_or(0))
    })()
    .unwrap_or(0);
    (status, t.elapsed())
}

/// Established connections to the boot port in the appliance's namespace.
fn held(lab: &Lab) -> usize {
    let filter = format!("( sport = :{HTTP_PORT} )");
    lab.exec(&["ss", "-Htn", "state", "established", &filter])
        .map(|out| out.lines().count())
        .unwrap_or(0)
}

#[test]
fn firmware_boots_through_a_connection_flood() {
    require_root();
    raise_nofile();
    let mac = "52:54:00:77:0f:01";
    let payload = payload().unwrap_or_else(|e| panic!("{e:#}"));
    let lab = Lab::new("http-flood-boot").unwrap_or_else(|e| panic!("{e:#}"));
    let site = LabSite::write(&lab, &payload, &[mac]).unwrap_or_else(|e| panic!("{e:#}"));
    let mut appliance = Appliance::start(&lab, &site.config).unwrap_or_else(|e| panic!("{e:#}"));
    let snippet = appliance
        .dhcp_snippet("dnsmasq")
        .unwrap_or_else(|e| panic!("{e:#}"));
    let _dnsmasq = lab.dnsmasq(&snippet).unwrap_or_else(|e| panic!("{e:#}"));

    // The flood's own on-link subnet on the bridge (outside dnsmasq's range): 125
    // flood addresses, one for the slowloris client, one for the health prober.
    let net = lab.subnet_prefix().rsplit('.').next().unwrap_or("0").to_owned();
    let fp = format!("10.78.{net}");
    lab.exec(&["ip", "addr", "add", &format!("{fp}.1/24"), "dev", "br0"])
        .unwrap_or_else(|e| panic!("{e:#}"));
    let peer = lab
        .peer(1, "52:54:00:77:0f:fe", None)
        .unwrap_or_else(|e| panic!("{e:#}"));
    let batch: String = (2..=128)
        .map(|h| format!("addr add {fp}.{h}/24 dev eth0\n"))
        .collect();
    let batch_file = lab.dir().join("flood-addrs.batch");
    std::fs::write(&batch_file, batch).expect("batch file");
    peer.exec(&["ip", "-batch", &batch_file.to_string_lossy()])
        .unwrap_or_else(|e| panic!("{e:#}"));
    let flood_ip = |h: usize| -> Ipv4Addr { format!("{fp}.{h}").parse().expect("address") };
    let to = SocketAddr::new(IpAddr::V4(flood_ip(1)), HTTP_PORT);

    let stop = Arc::new(AtomicBool::new(false));
    let flood = {
        let stop = stop.clone();
        let base = fp.clone();
        spawn_in_netns(peer.netns(), move || {
            let src =
                |i: usize| -> Ipv4Addr { format!("{base}.{}", 2 + i / PER_IP).parse().expect("address") };
            hold_flood(to, src, &stop)
        })
    };
    let slow = {
        let (stop, src) = (stop.clone(), flood_ip(127));
        spawn_in_netns(peer.netns(), move || slowloris(to, src, &stop))
    };
    let t0 = Instant::now();
    let full = provisioner_e2e::wait_for(Duration::from_secs(60), "the flood held", || {
        Ok((held(&lab) >= IDLE).then_some(()))
    });
    if let Err(e) = full {
        panic!("{e:#}: {} established", held(&lab));
    }
    let flood_took = t0.elapsed();

    // The prober: /healthz on the boot port every 500 ms until the boot is done,
    // and the server-side count of established connections with each sample.
    let probes = Arc::new(std::sync::Mutex::new(Vec::<(u16, Duration)>::new()));
    let probing = Arc::new(AtomicBool::new(false));
    let prober = {
        let (probes, probing, src) = (probes.clone(), probing.clone(), flood_ip(128));
        probing.store(true, Ordering::Relaxed);
        spawn_in_netns(peer.netns(), move || {
            while probing.load(Ordering::Relaxed) {
                let sample = healthz(to, src);
                probes.lock().expect("probes").push(sample);
                std::thread::sleep(Duration::from_millis(500));
            }
        })
    };
    let mut counts = Vec::<usize>::new();

    let firmware = Firmware::SeabiosIpxe;
    let mut vm = lab
        .boot(Machine {
            firmware,
            mac: mac.into(),
            name: "flooded".into(),
        })
        .unwrap_or_else(|e| panic!("{e:#}"));
    let boot_started = Instant::now();
    let deadline = boot_started + firmware.boot_timeout() + Duration::from_secs(60);
    let mut outcome = Err(anyhow::anyhow!("the boot did not finish"));
    while Instant::now() < deadline {
        counts.push(held(&lab));
        let serial = vm.serial();
        if serial.contains(markers::CALLBACK_OK) {
            outcome = Ok(());
            break;
        }
        if serial.contains(markers::FAILED) || serial.contains(markers::CALLBACK_FAILED) {
            outcome = Err(anyhow::anyhow!("the payload failed"));
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    let boot_took = boot_started.elapsed();
    probing.store(false, Ordering::Relaxed);
    prober.join().expect("prober");
    let held_after = held(&lab);
    stop.store(true, Ordering::Relaxed);
    let reopened = flood.join().expect("flood");
    let cut = slow.join().expect("slowloris");
    if let Err(e) = outcome {
        panic!(
            "{e:#} under the flood after {boot_took:?}\n--- serial tail ---\n{}\n--- appliance log tail ---\n{}",
            provisioner_e2e::tail(&vm.serial(), 30),
            provisioner_e2e::tail(&appliance.log(), 30)
        );
    }
    vm.wait_exit(Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{e:#}"));

    let probes = probes.lock().expect("probes").clone();
    counts.sort_unstable();
    let worst = probes.iter().map(|p| p.1).max().unwrap_or_default();
    let median = counts[counts.len() / 2];
    eprintln!(
        "FLOOD-BOOT: {IDLE} idle connections held after {flood_took:?}; {firmware:?} boot \
         (DHCP -> /ipxe -> kernel, initrd, config -> callback) in {boot_took:?}; \
         established on the boot port during the boot: min {} median {median} max {} \
         ({} samples), {held_after} at the end; {reopened} flood connections cut by the \
         header-read timeout and re-opened; slowloris cut off {cut} times; {} /healthz \
         samples, worst {worst:?}",
        counts[0],
        counts[counts.len() - 1],
        counts.len(),
        probes.len()
    );
    assert!(
        probes.len() >= 10,
        "too few /healthz samples during the boot: {probes:?}"
    );
    for (status, took) in &probes {
        assert_eq!(*status, 200, "/healthz during the flood: {probes:?}");
        assert!(
            *took < Duration::from_secs(1),
            "/healthz took {took:?} during the flood: {probes:?}"
        );
    }
    // The flood was really there while the machine booted: the appliance held the
    // 2,000 idle connections (the count dips while the header-read timeout cuts a
    // batch and the flood re-opens it, at most 200 ms later).
    assert!(
        counts[counts.len() - 1] >= IDLE && median >= IDLE * 95 / 100,
        "established connections during the boot: {counts:?}"
    );
    assert!(reopened >= IDLE as u64, "the header-read timeout cut {reopened}");
    assert!(cut >= 1, "the slowloris client was never cut off");

    let live = appliance
        .api_machine(mac)
        .unwrap_or_else(|e| panic!("API: {e:#}"));
    assert_eq!(timeline::state(&live), Some("Installed"), "{live:#}");
    assert_in_order(
        &live,
        &["ipxe_script_served", "asset_served", "config_served", "installed"],
    )
    .unwrap_or_else(|e| panic!("{e:#}"));
    let metrics = appliance.api_get("/metrics").unwrap_or_else(|e| panic!("{e:#}"));
    let header_timeouts = metrics
        .lines()
        .find_map(|l| l.strip_prefix("provisioner_http_refused_total{reason=\"header_timeout\"}"))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or(0.0);
    eprintln!("FLOOD-BOOT: {header_timeouts} connections refused for header_timeout");
    assert!(header_timeouts >= IDLE as f64, "{header_timeouts}");
    appliance.stop().unwrap_or_else(|e| panic!("{e:#}"));
}
