//! End-to-end boots against the appliance (`provisioner serve`), one lab per
//! test so they can run in parallel: dnsmasq in the lab does DHCP with the
//! lines `provisioner dhcp-snippet --for dnsmasq` prints, the appliance does
//! TFTP and HTTP, the payload fetches its one-time config and calls back.
//!
//! Needs root and a built appliance (`cargo build -p provisioner`, or
//! `PROVISIONER_BIN`). Boot times under TCG are ~30-40 s per machine.

use std::time::{Duration, Instant};

use provisioner_e2e::timeline::{self, assert_in_order};
use provisioner_e2e::{
    Appliance, Firmware, Lab, LabProcess, LabSite, Machine, QemuVm, markers, payload, require_root,
};
use serde_json::Value;

/// A lab with the appliance and dnsmasq running, for the given MACs.
struct Site {
    // Field order is drop order: VMs (held by tests) first, then these.
    appliance: Appliance,
    _dnsmasq: LabProcess,
    config: LabSite,
    lab: Lab,
}

fn site(lab_name: &str, macs: &[&str]) -> Site {
    site_with_args(lab_name, macs, &[])
}

fn site_with_args(lab_name: &str, macs: &[&str], kernel_args: &[&str]) -> Site {
    site_with(lab_name, macs, kernel_args, |l| Some(l.to_owned()))
}

/// The general constructor: `kernel_args` go into the image descriptor,
/// `filter` may drop or rewrite lines of the appliance's dnsmasq snippet.
fn site_with(
    lab_name: &str,
    macs: &[&str],
    kernel_args: &[&str],
    filter: impl Fn(&str) -> Option<String>,
) -> Site {
    require_root();
    let payload = payload().unwrap_or_else(|e| panic!("{e:#}"));
    let lab = Lab::new(lab_name).unwrap_or_else(|e| panic!("{e:#}"));
    let site =
        LabSite::write_with_args(&lab, &payload, macs, kernel_args).unwrap_or_else(|e| panic!("{e:#}"));
    let appliance = Appliance::start(&lab, &site.config).unwrap_or_else(|e| panic!("{e:#}"));
    let snippet = appliance
        .dhcp_snippet("dnsmasq")
        .unwrap_or_else(|e| panic!("{e:#}"));
    for forbidden in ["interface=", "dhcp-range", "port="] {
        assert!(
            !snippet.lines().any(|l| l.trim_start().starts_with(forbidden)),
            "dhcp-snippet must leave {forbidden} to the lab:\n{snippet}"
        );
    }
    let snippet: String = snippet.lines().filter_map(&filter).map(|l| l + "\n").collect();
    let dnsmasq = lab.dnsmasq(&snippet).unwrap_or_else(|e| panic!("{e:#}"));
    Site {
        appliance,
        _dnsmasq: dnsmasq,
        config: site,
        lab,
    }
}

fn boot(site: &Site, firmware: Firmware, mac: &str, name: &str) -> QemuVm {
    site.lab
        .boot(Machine {
            firmware,
            mac: mac.into(),
            name: name.into(),
        })
        .unwrap_or_else(|e| panic!("{e:#}"))
}

/// Boots `mac` until the payload called back and powered off; returns the
/// config size the payload reported.
fn install_boot(site: &mut Site, firmware: Firmware, mac: &str) -> u64 {
    let mut vm = boot(site, firmware, mac, "install");
    let t0 = Instant::now();
    let res = vm
        .wait_for_serial(markers::CONFIG_FETCHED, firmware.boot_timeout())
        .and_then(|()| vm.wait_for_serial(markers::CALLBACK_OK, Duration::from_secs(60)));
    if let Err(e) = res {
        panic!(
            "{e:#}\n--- appliance log tail ---\n{}",
            provisioner_e2e::tail(&site.appliance.log(), 30)
        );
    }
    eprintln!(
        "TIMING appliance {firmware:?}: config fetched + callback after {:.1}s",
        t0.elapsed().as_secs_f64()
    );
    vm.wait_exit(Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{e:#}"));
    fetched_bytes(&vm.serial())
}

/// `bytes=<n>` from the payload's `LAB-CONFIG-FETCHED` line.
fn fetched_bytes(serial: &str) -> u64 {
    serial
        .lines()
        .find(|l| l.contains(markers::CONFIG_FETCHED))
        .and_then(|l| l.split("bytes=").nth(1))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("LAB-CONFIG-FETCHED bytes=<n>")
}

/// Stops the appliance (SIGTERM) and returns the machine from the export.
fn stop_and_export(site: &mut Site, mac: &str) -> Value {
    site.appliance.stop().unwrap_or_else(|e| panic!("{e:#}"));
    let export = site.appliance.export_json().unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(
        export["schema_version"],
        provisioner_core::inventory::SCHEMA_VERSION,
        "export schema_version"
    );
    timeline::machine(&export, mac)
        .unwrap_or_else(|e| panic!("{e:#}"))
        .clone()
}

/// (a)(b)(c): install boot, then the export shows Installed and the chain of
/// events in order.
fn install_and_check(lab_name: &str, firmware: Firmware, mac: &str, expect_tftp: bool) {
    let mut site = site(lab_name, &[mac]);
    let bytes = install_boot(&mut site, firmware, mac);

    // The read-only API agrees while the daemon runs.
    let live = site
        .appliance
        .api_machine(mac)
        .unwrap_or_else(|e| panic!("API: {e:#}"));
    assert_eq!(timeline::state(&live), Some("Installed"), "API: {live:#}");

    let m = stop_and_export(&mut site, mac);
    assert_eq!(
        timeline::state(&m),
        Some("Installed"),
        "export:\n{}",
        timeline::render(&m)
    );
    let mut expected = vec![];
    if expect_tftp {
        expected.push("tftp_served");
    }
    expected.extend(["ipxe_script_served", "asset_served", "config_served", "installed"]);
    assert_in_order(&m, &expected).unwrap_or_else(|e| panic!("{e:#}"));
    assert!(
        timeline::count(&m, "asset_served") >= 2,
        "kernel and initrd both served:\n{}",
        timeline::render(&m)
    );
    assert_eq!(
        timeline::count(&m, "config_served"),
        1,
        "{}",
        timeline::render(&m)
    );
    // Not in the contract, but checked when present: a `config_served`
    // detail that starts with "<n> bytes" must match what the payload got.
    let detail = timeline::events(&m)
        .into_iter()
        .find(|(k, _)| k == "config_served")
        .map(|(_, d)| d)
        .unwrap_or_default();
    if let Some(n) = leading_bytes(&detail) {
        assert_eq!(
            n, bytes,
            "config_served detail {detail:?} vs payload bytes={bytes}"
        );
    }
    timeline::assert_timestamps_present(&m).unwrap_or_else(|e| panic!("{e:#}"));
}

#[test]
fn a_seabios_ipxe_rom_installs() {
    install_and_check("e2e-seabios", Firmware::SeabiosIpxe, "52:54:00:77:00:01", false);
}

#[test]
fn b_ovmf_ipxe_rom_installs() {
    install_and_check("e2e-ovmf-ipxe", Firmware::OvmfIpxe, "52:54:00:77:00:02", false);
}

#[test]
fn c_ovmf_pxe_chains_snponly_over_appliance_tftp() {
    install_and_check("e2e-ovmf-pxe", Firmware::OvmfPxe, "52:54:00:77:00:03", true);
}

/// UEFI HTTP Boot against the appliance: the lab drops the snippet's EFI PXE
/// line so EDK2's PXE gets no boot file and falls through (after PXEv4 and
/// PXEv6 time out, ~2 min) to HTTP Boot, answered by the snippet's
/// `HTTPClient` line with the appliance's `/bin/ipxe.efi`.
/// Slow (~3 min: EDK2 times out PXEv4 and PXEv6 first).
#[test]
fn f_ovmf_http_boot_installs() {
    let mac = "52:54:00:77:00:06";
    let mut site = site_with("e2e-ovmf-http", &[mac], &[], |l| {
        let efi_pxe = l.starts_with("dhcp-boot=") && l.contains("tag:efi64");
        (!efi_pxe).then(|| l.to_owned())
    });
    install_boot(&mut site, Firmware::OvmfHttpBoot, mac);
    let m = stop_and_export(&mut site, mac);
    assert_eq!(timeline::state(&m), Some("Installed"), "{}", timeline::render(&m));
    assert_in_order(
        &m,
        &["ipxe_script_served", "asset_served", "config_served", "installed"],
    )
    .unwrap_or_else(|e| panic!("{e:#}"));
}

/// (d): an Installed machine that netboots again gets a local-boot answer
/// (`exit`), and no new config.
#[test]
fn d_installed_machine_boots_locally() {
    let mac = "52:54:00:77:00:04";
    let mut site = site("e2e-local", &[mac]);
    install_boot(&mut site, Firmware::SeabiosIpxe, mac);

    let mut vm = boot(&site, Firmware::SeabiosIpxe, mac, "second");
    let t0 = Instant::now();
    // Poll the API until a script was served after the `installed` event.
    let decision = provisioner_e2e::wait_for(
        Firmware::SeabiosIpxe.boot_timeout(),
        "an iPXE script served after `installed`",
        || {
            // The API may briefly fail while the machine is unknown.
            let Ok(m) = site.appliance.api_machine(mac) else {
                return Ok(None);
            };
            let events = timeline::events(&m);
            let after = events
                .iter()
                .rposition(|(k, _)| k == "installed")
                .map(|i| &events[i + 1..])
                .unwrap_or(&[]);
            Ok(after
                .iter()
                .find(|(k, _)| k == "ipxe_script_served")
                .map(|(_, d)| d.clone()))
        },
    )
    .unwrap_or_else(|e| {
        panic!(
            "{e:#}\n--- appliance log tail ---\n{}\n--- serial tail ---\n{}",
            provisioner_e2e::tail(&site.appliance.log(), 30),
            provisioner_e2e::tail(&vm.serial(), 20)
        )
    });
    eprintln!(
        "TIMING second boot: local-boot decision after {:.1}s: {decision}",
        t0.elapsed().as_secs_f64()
    );
    let d = decision.to_ascii_lowercase();
    assert!(
        d.contains("local") || d.contains("exit"),
        "the second boot's script decision is not local boot: {decision:?}"
    );
    // Give iPXE time to act on the script; it must not fetch a kernel.
    std::thread::sleep(Duration::from_secs(5));
    assert!(
        !vm.serial().contains(markers::INIT_STARTED),
        "an Installed machine booted the payload again"
    );
    vm.kill();
    drop(vm);

    let m = stop_and_export(&mut site, mac);
    assert_eq!(timeline::state(&m), Some("Installed"), "{}", timeline::render(&m));
    assert_eq!(
        timeline::count(&m, "config_served"),
        1,
        "no reinstall:\n{}",
        timeline::render(&m)
    );
    assert_in_order(&m, &["config_served", "installed", "ipxe_script_served"])
        .unwrap_or_else(|e| panic!("{e:#}"));
}

/// Durability: SIGKILL the appliance right after the machine got its config;
/// everything the machine was answered must be in the inventory afterwards,
/// and the appliance must come back up on the same state.
#[test]
fn e_sigkill_after_config_loses_nothing_acknowledged() {
    let mac = "52:54:00:77:00:05";
    // The payload waits 20 s between config fetch and callback: the window
    // in which the appliance dies (without it the POST follows within ms).
    let mut site = site_with_args("e2e-sigkill", &[mac], &["lab.callback_delay=20"]);
    let mut vm = boot(&site, Firmware::SeabiosIpxe, mac, "install");
    vm.wait_for_serial(markers::CONFIG_FETCHED, Firmware::SeabiosIpxe.boot_timeout())
        .unwrap_or_else(|e| panic!("{e:#}"));
    site.appliance.kill_9();
    // The callback now fails; the payload says so and powers off.
    vm.wait_exit(Duration::from_secs(90))
        .unwrap_or_else(|e| panic!("{e:#}"));
    let serial = vm.serial();
    assert!(
        serial.contains(markers::CALLBACK_FAILED),
        "the callback cannot have succeeded against a killed appliance"
    );

    let export = site
        .appliance
        .export_json()
        .unwrap_or_else(|e| panic!("export after SIGKILL: {e:#}"));
    let m = timeline::machine(&export, mac).unwrap_or_else(|e| panic!("{e:#}"));
    assert_in_order(m, &["ipxe_script_served", "asset_served", "config_served"])
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert!(
        timeline::count(m, "asset_served") >= 2,
        "kernel and initrd were both acknowledged:\n{}",
        timeline::render(m)
    );
    assert_eq!(
        timeline::state(m),
        Some("ConfigServed"),
        "state after the config was served:\n{}",
        timeline::render(m)
    );
    let changes: Vec<String> = timeline::events(m)
        .into_iter()
        .filter(|(k, _)| k == "state_changed")
        .map(|(_, d)| d)
        .collect();
    assert!(
        changes.iter().any(|d| d.ends_with("-> ConfigServed")),
        "state_changed to ConfigServed recorded: {changes:?}"
    );

    // Restart on the same state: the inventory opens and the API agrees.
    let again = Appliance::start(&site.lab, &site.config.config).unwrap_or_else(|e| panic!("{e:#}"));
    let live = again.api_machine(mac).unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(timeline::state(&live), Some("ConfigServed"), "{live:#}");
}

/// Parses a leading `<n> bytes` from an event detail.
fn leading_bytes(detail: &str) -> Option<u64> {
    let (n, rest) = detail.split_once(' ')?;
    if rest.starts_with("bytes") {
        n.parse().ok()
    } else {
        None
    }
}
