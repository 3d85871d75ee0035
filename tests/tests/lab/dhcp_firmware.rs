//! The firmware matrix against the appliance's own DHCP (issue 3), each boot
//! reaching `config_served` with the lab payload:
//! - proxy mode next to a plain DHCP server that only hands out addresses
//!   (dnsmasq on another host of the segment): SeaBIOS + iPXE ROM, OVMF + iPXE
//!   EFI ROM, OVMF's own PXE (which asks the 4011 boot server);
//! - full mode, no other server: the same three, plus OVMF UEFI HTTP Boot (PXE
//!   withheld for that MAC, so EDK2 falls through to HTTP Boot and gets an
//!   `http://` URL with option 60 `HTTPClient`).
//!
//! Needs root, QEMU, OVMF and Debian's `ipxe`. Each boot takes 30-90 s under TCG;
//! HTTP Boot about 3 minutes (EDK2 times out PXEv4 and PXEv6 first).

use std::fs;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use provisioner_e2e::{Appliance, Firmware, Lab, LabSite, Machine, markers, payload, require_root, timeline};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// proxyDHCP next to a plain DHCP server.
    Proxy,
    /// Authoritative DHCP, nothing else on the segment.
    Full,
}

fn boot(name: &str, mode: Mode, fw: Firmware, mac: &str) -> Result<()> {
    require_root();
    let payload = payload()?;
    let lab = Lab::new(name)?;
    let p = lab.subnet_prefix();
    let site = LabSite::write(&lab, &payload, &[mac])?;
    let dhcp = match mode {
        Mode::Proxy => "dhcp:\n  mode: proxy\n  interface: br0\n".to_string(),
        Mode::Full => {
            let http_only = if fw == Firmware::OvmfHttpBoot {
                format!("  http_boot_only: [\"{mac}\"]\n")
            } else {
                String::new()
            };
            format!(
                "dhcp:\n  mode: full\n  interface: br0\n  subnet: {p}.0/24\n  pool: {{ start: {p}.100, end: {p}.150 }}\n  \
                 router: {p}.1\n  probe_secs: 1\n{http_only}"
            )
        }
    };
    let mut text = fs::read_to_string(&site.config)?;
    text.push_str(&dhcp);
    fs::write(&site.config, text)?;

    // Proxy mode: the site's "router" hands out addresses and nothing else.
    let _router = match mode {
        Mode::Proxy => {
            let peer = lab.peer(1, "52:54:00:ee:00:01", Some(&format!("{p}.254/24")))?;
            let dir = lab.dir();
            let mut d = peer.spawn(
                &lab,
                &[
                    "dnsmasq",
                    "--keep-in-foreground",
                    "--conf-file=/dev/null",
                    "--port=0",
                    "--interface=eth0",
                    "--bind-interfaces",
                    "--no-ping",
                    "--log-dhcp",
                    "--log-facility=-",
                    "--user=root",
                    &format!("--dhcp-range={p}.160,{p}.199,1h"),
                    &format!("--dhcp-leasefile={}", dir.join("router.leases").display()),
                    &format!("--pid-file={}", dir.join("router.pid").display()),
                ],
                &dir.join("router-dnsmasq.log"),
            )?;
            d.wait_for_log("DHCP, IP range", Duration::from_secs(15))?;
            Some((peer, d))
        }
        Mode::Full => None,
    };

    let mut appliance = Appliance::start(&lab, &site.config)?;
    appliance.wait_for_log("listening for DHCP on", Duration::from_secs(20))?;
    let mut vm = lab.boot(Machine {
        firmware: fw,
        mac: mac.into(),
        name: "vm1".into(),
    })?;
    let t0 = Instant::now();
    vm.wait_for_serial(markers::CONFIG_FETCHED, fw.boot_timeout())
        .with_context(|| {
            format!(
                "appliance log tail:\n{}",
                provisioner_e2e::tail(&appliance.log(), 30)
            )
        })?;
    let took = t0.elapsed();
    vm.kill();
    appliance.stop()?;
    let export = appliance.export_json()?;
    let m = timeline::machine(&export, mac)?;
    // Firmware PXE fetches iPXE over TFTP; iPXE ROMs skip that step and HTTP Boot
    // fetches it over HTTP.
    let expected: &[&str] = if fw == Firmware::OvmfPxe {
        &[
            "dhcp_seen",
            "dhcp_sent",
            "tftp_served",
            "ipxe_script_served",
            "config_served",
        ]
    } else {
        &["dhcp_seen", "dhcp_sent", "ipxe_script_served", "config_served"]
    };
    timeline::assert_in_order(m, expected)?;
    let details: Vec<(String, String)> = timeline::events(m);
    let has = |kind: &str, needle: &str| details.iter().any(|(k, d)| k == kind && d.contains(needle));
    let personality = match mode {
        Mode::Proxy => "(proxy)",
        Mode::Full => "(full)",
    };
    assert!(
        has("dhcp_seen", personality),
        "DHCP events name the personality:\n{}",
        timeline::render(m)
    );
    assert!(
        has("dhcp_sent", "boot.ipxe"),
        "iPXE got the HTTP first stage:\n{}",
        timeline::render(m)
    );
    match (mode, fw) {
        (Mode::Proxy, Firmware::OvmfPxe) => {
            assert!(
                has("dhcp_seen", "on :4011"),
                "EDK2 asked the 4011 boot server:\n{}",
                timeline::render(m)
            );
            assert!(has("dhcp_sent", "boot snponly.efi"), "{}", timeline::render(m));
        }
        (_, Firmware::OvmfHttpBoot) => {
            assert!(has("dhcp_seen", "http-boot, arch 16"), "{}", timeline::render(m));
            assert!(has("dhcp_sent", "/bin/snponly.efi"), "{}", timeline::render(m));
        }
        (Mode::Full, _) => assert!(has("dhcp_sent", &format!("ACK {p}.1")), "{}", timeline::render(m)),
        _ => {}
    }
    if mode == Mode::Proxy {
        let assigned = details.iter().any(|(k, d)| {
            k == "dhcp_sent" && (d.starts_with(&format!("OFFER {p}.")) || d.starts_with(&format!("ACK {p}.")))
        });
        assert!(
            !assigned,
            "a proxy never assigns an address:\n{}",
            timeline::render(m)
        );
    }
    eprintln!(
        "TIMING {mode:?} {fw:?}: config fetched after {:.1}s",
        took.as_secs_f64()
    );
    Ok(())
}

#[test]
fn proxy_seabios_ipxe_rom() -> Result<()> {
    boot(
        "dhcp-proxy-seabios",
        Mode::Proxy,
        Firmware::SeabiosIpxe,
        "52:54:00:3d:00:01",
    )
}

#[test]
fn proxy_ovmf_ipxe_rom() -> Result<()> {
    boot(
        "dhcp-proxy-ovmf-ipxe",
        Mode::Proxy,
        Firmware::OvmfIpxe,
        "52:54:00:3d:00:02",
    )
}

#[test]
fn proxy_ovmf_edk2_pxe_uses_4011() -> Result<()> {
    boot(
        "dhcp-proxy-ovmf-pxe",
        Mode::Proxy,
        Firmware::OvmfPxe,
        "52:54:00:3d:00:03",
    )
}

#[test]
fn full_seabios_ipxe_rom() -> Result<()> {
    boot(
        "dhcp-full-seabios",
        Mode::Full,
        Firmware::SeabiosIpxe,
        "52:54:00:3d:00:11",
    )
}

#[test]
fn full_ovmf_ipxe_rom() -> Result<()> {
    boot(
        "dhcp-full-ovmf-ipxe",
        Mode::Full,
        Firmware::OvmfIpxe,
        "52:54:00:3d:00:12",
    )
}

#[test]
fn full_ovmf_edk2_pxe() -> Result<()> {
    boot(
        "dhcp-full-ovmf-pxe",
        Mode::Full,
        Firmware::OvmfPxe,
        "52:54:00:3d:00:13",
    )
}

#[test]
fn full_ovmf_uefi_http_boot() -> Result<()> {
    boot(
        "dhcp-full-ovmf-http",
        Mode::Full,
        Firmware::OvmfHttpBoot,
        "52:54:00:3d:00:14",
    )
}
