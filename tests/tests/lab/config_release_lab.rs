//! Config release against the kernel's own neighbour table (issue 12, items 1-3):
//! real firmware on the lab bridge, spoofing hosts in their own namespaces on the
//! same bridge, the appliance reading `/proc/net/arp`.
//!
//! - A host on the bridge asks `/ipxe` for the lab machine's MAC (and UUID), before
//!   and while the machine boots, and fetches every URL it is given: no config,
//!   `config_refused` on the machine's timeline; the machine still installs, its
//!   token untouched, with one install boot counted.
//! - After a re-image, a host with the machine's MAC but another UUID is refused
//!   (the pin from the real boot); after `machines unpin` it is served.
//! - `admission: approve` end to end: the console shows the code, the test
//!   approves through the CLI, the machine fetches its config.
//!
//! Needs root and a built appliance, like boot_firmware.rs. One SeaBIOS boot per
//! test (the two run in parallel, ~40-60 s each).

use std::time::{Duration, Instant};

use provisioner_e2e::timeline::{self, assert_in_order};
use provisioner_e2e::{
    Appliance, Firmware, Lab, LabProcess, LabSite, Machine, markers, payload, require_root, tail,
};
use serde_json::Value;

const MAC: &str = "52:54:00:12:00:01";
const HTTP: u16 = provisioner_e2e::appliance::HTTP_PORT;

struct Site {
    appliance: Appliance,
    _dnsmasq: LabProcess,
    lab: Lab,
}

fn site(name: &str, extra_config: &str) -> Site {
    require_root();
    let payload = payload().unwrap_or_else(|e| panic!("{e:#}"));
    let lab = Lab::new(name).unwrap_or_else(|e| panic!("{e:#}"));
    let cfg = LabSite::write(&lab, &payload, &[MAC]).unwrap_or_else(|e| panic!("{e:#}"));
    let text = std::fs::read_to_string(&cfg.config).unwrap() + extra_config;
    std::fs::write(&cfg.config, text).unwrap();
    let appliance = Appliance::start(&lab, &cfg.config).unwrap_or_else(|e| panic!("{e:#}"));
    let snippet = appliance
        .dhcp_snippet("dnsmasq")
        .unwrap_or_else(|e| panic!("{e:#}"));
    let dnsmasq = lab.dnsmasq(&snippet).unwrap_or_else(|e| panic!("{e:#}"));
    Site {
        appliance,
        _dnsmasq: dnsmasq,
        lab,
    }
}

/// `curl` from a peer namespace: (HTTP status, body).
fn curl(peer: &provisioner_e2e::peer::Peer, url: &str) -> (u16, String) {
    let out = peer
        .exec(&["curl", "-sS", "-m", "10", "-w", "\n%{http_code}", url])
        .unwrap_or_else(|e| panic!("{e:#}"));
    let (body, status) = out.rsplit_once('\n').unwrap_or(("", out.as_str()));
    (status.trim().parse().unwrap_or(0), body.to_owned())
}

/// A spoofing host asks for `MAC`'s script and follows every URL in the answer;
/// panics if anything looks like a config or a token.
fn attack(site: &Site, peer: &provisioner_e2e::peer::Peer, uuid: &str) -> String {
    let base = format!("http://{}:{HTTP}", site.lab.ip());
    let (st, script) = curl(
        peer,
        &format!(
            "{base}/ipxe?mac={}&uuid={uuid}&arch=i386&platform=pcbios",
            MAC.replace(':', "-")
        ),
    );
    assert_eq!(st, 200, "{script}");
    assert!(script.contains("install refused"), "{script}");
    assert!(
        !script.contains("/config/") && !script.contains("/callback/"),
        "{script}"
    );
    for url in script.split_whitespace().filter(|w| w.starts_with("http://")) {
        let (_, body) = curl(peer, url);
        assert!(!body.contains("/config/"), "{url} handed out a token: {body}");
    }
    let (st, _) = curl(peer, &format!("{base}/config/{}", "ab".repeat(32)));
    assert_eq!(st, 403);
    script
}

fn machine(site: &Site) -> Value {
    site.appliance
        .api_machine(MAC)
        .unwrap_or_else(|e| panic!("{e:#}"))
}

fn fail(site: &Site, vm: Option<&provisioner_e2e::QemuVm>, e: anyhow::Error) -> ! {
    panic!(
        "{e:#}\n--- appliance log ---\n{}\n--- serial ---\n{}",
        tail(&site.appliance.log(), 40),
        vm.map(|v| tail(&v.serial(), 40)).unwrap_or_default()
    )
}

#[test]
fn a_spoofer_on_the_bridge_gets_nothing_and_the_machine_still_installs() {
    let mut site = site("e2e-release", "");
    let p = site.lab.subnet_prefix();
    let vm_machine = Machine {
        firmware: Firmware::SeabiosIpxe,
        mac: MAC.into(),
        name: "release".into(),
    };
    let uuid = vm_machine.smbios_uuid();
    // Before the machine ever booted.
    let spoofer = site
        .lab
        .peer(1, "52:54:00:ee:00:01", Some(&format!("{p}.50/24")))
        .unwrap();
    let refused = attack(&site, &spoofer, &uuid);
    assert!(
        refused.contains("neighbour entry is 52:54:00:ee:00:01"),
        "{refused}"
    );

    let mut vm = site.lab.boot(vm_machine).unwrap_or_else(|e| panic!("{e:#}"));
    let t0 = Instant::now();
    // While it boots (script served, config not fetched yet), a second host tries.
    if let Err(e) = vm.wait_for_serial(markers::INIT_STARTED, Firmware::SeabiosIpxe.boot_timeout()) {
        fail(&site, Some(&vm), e);
    }
    let spoofer2 = site
        .lab
        .peer(2, "52:54:00:ee:00:02", Some(&format!("{p}.51/24")))
        .unwrap();
    attack(&site, &spoofer2, &uuid);
    let res = vm
        .wait_for_serial(markers::CONFIG_FETCHED, Duration::from_secs(90))
        .and_then(|()| vm.wait_for_serial(markers::CALLBACK_OK, Duration::from_secs(60)));
    if let Err(e) = res {
        fail(&site, Some(&vm), e);
    }
    eprintln!(
        "TIMING release lab: installed {:.1}s after power-on",
        t0.elapsed().as_secs_f64()
    );
    vm.wait_exit(Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{e:#}"));
    let serial = vm.serial();
    assert!(
        serial.contains("LAB-CONFIG-STATUS status=200"),
        "the real machine's token survived"
    );

    let m = machine(&site);
    assert_eq!(timeline::state(&m), Some("Installed"), "{m:#}");
    assert_eq!(m["pinned_uuid"], uuid.as_str(), "iPXE's ${{uuid}} pinned: {m:#}");
    assert_in_order(
        &m,
        &[
            "config_refused",
            "ipxe_script_served",
            "config_refused",
            "config_served",
            "installed",
        ],
    )
    .unwrap_or_else(|e| panic!("{e:#}"));
    let tl = timeline::events(&m);
    let installs = tl
        .iter()
        .filter(|(k, d)| k == "ipxe_script_served" && d.starts_with("install"))
        .count();
    assert_eq!(
        installs,
        1,
        "one install boot, no extra: {}",
        timeline::render(&m)
    );
    assert_eq!(timeline::count(&m, "boot_loop_detected"), 0);
    let refusals: Vec<&String> = tl
        .iter()
        .filter(|(k, _)| k == "config_refused")
        .map(|(_, d)| d)
        .collect();
    assert!(
        refusals.iter().any(|d| d.contains(&format!("peer {p}.50"))),
        "{refusals:?}"
    );
    assert!(
        refusals.iter().any(|d| d.contains(&format!("peer {p}.51"))),
        "{refusals:?}"
    );

    // The pin: re-imaged, the machine's MAC on another host with another UUID is
    // refused; after `machines unpin` it is served.
    site.appliance
        .admin_cli(&["machines", "reimage", MAC])
        .unwrap_or_else(|e| panic!("{e:#}"));
    drop(vm);
    let twin = site.lab.peer(3, MAC, Some(&format!("{p}.60/24"))).unwrap();
    let other = "5ab1ab00-0000-4000-8000-0000000000ff";
    let base = format!("http://{}:{HTTP}", site.lab.ip());
    let ask = format!(
        "{base}/ipxe?mac={}&uuid={other}&arch=i386&platform=pcbios",
        MAC.replace(':', "-")
    );
    let (_, refused) = curl(&twin, &ask);
    assert!(
        refused.contains("differs from the UUID pinned") && !refused.contains("/config/"),
        "{refused}"
    );
    let out = site
        .appliance
        .admin_cli(&["machines", "unpin", MAC])
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert!(out.contains("UUID pin cleared"), "{out}");
    let (_, script) = curl(&twin, &ask);
    let config = script
        .split_whitespace()
        .find_map(|w| w.strip_prefix("provisioner.config="))
        .unwrap_or_else(|| panic!("served after unpin: {script}"))
        .to_owned();
    let (st, _) = curl(&twin, &config);
    assert_eq!(st, 200, "the host with the MAC and the new pin gets the config");
    assert_eq!(machine(&site)["pinned_uuid"], other);
    site.appliance.stop().unwrap_or_else(|e| panic!("{e:#}"));
}

#[test]
fn approve_mode_end_to_end() {
    let mut site = site("e2e-approve", "admission: approve\n");
    let mut vm = site
        .lab
        .boot(Machine {
            firmware: Firmware::SeabiosIpxe,
            mac: MAC.into(),
            name: "approve".into(),
        })
        .unwrap_or_else(|e| panic!("{e:#}"));
    // The script prints "waits for an operator's approval", then the code, mac, uuid
    // and ip lines and last the approve command: wait for that last line, so the lines
    // read below are complete (reading after the first one raced the serial port).
    if let Err(e) = vm.wait_for_serial(
        "provisioner machines approve",
        Firmware::SeabiosIpxe.boot_timeout(),
    ) {
        fail(&site, Some(&vm), e);
    }
    // The code is on the console, with the machine's identity.
    let serial = vm.serial();
    let console = |key: &str| -> String {
        serial
            .lines()
            .find_map(|l| l.trim().strip_prefix(&format!("provisioner: {key} ")))
            .unwrap_or_else(|| panic!("no {key} on the console:\n{}", tail(&serial, 20)))
            .trim()
            .to_owned()
    };
    let code = console("code");
    assert_eq!(console("mac"), MAC);
    assert_eq!(console("uuid"), vm.machine().smbios_uuid());
    assert!(console("ip").starts_with(&site.lab.subnet_prefix()));
    // It waits and polls (no install boot counted) until an operator approves.
    std::thread::sleep(Duration::from_secs(12));
    assert_eq!(timeline::state(&machine(&site)), Some("Discovered"));
    let out = site
        .appliance
        .admin_cli(&["machines", "approve", MAC, "--code", &code])
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert!(out.contains("approved admission"), "{out}");
    let res = vm
        .wait_for_serial(markers::CONFIG_FETCHED, Duration::from_secs(90))
        .and_then(|()| vm.wait_for_serial(markers::CALLBACK_OK, Duration::from_secs(60)));
    if let Err(e) = res {
        fail(&site, Some(&vm), e);
    }
    let m = machine(&site);
    assert_eq!(timeline::state(&m), Some("Installed"), "{m:#}");
    assert_in_order(
        &m,
        &[
            "approval_requested",
            "approved",
            "ipxe_script_served",
            "config_served",
            "installed",
        ],
    )
    .unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(
        timeline::count(&m, "approval_requested"),
        1,
        "polls keep their code"
    );
    // Polls were paced by the script's `sleep`, not a tight loop.
    let polls = site.appliance.log().matches("outcome=\"waiting\"").count();
    assert!((1..=12).contains(&polls), "{polls} waiting polls");
    site.appliance.stop().unwrap_or_else(|e| panic!("{e:#}"));
}
