//! Issue 17 item 1 in the QEMU lab: "adopt, don't type". The site is talos_boot.rs's
//! GenMachine copy with talos-1 back on its placeholder MAC (so the cluster is not
//! armed: no secrets, nothing rendered). A machine nobody typed in PXE-boots, matches
//! nothing and is `Discovered` with its MAC, UUID and firmware; the operator adopts it
//! with `provisioner machines adopt MAC --node talos-1` (the CLI, through the API);
//! `infra/genmachine.yaml` gains exactly its MAC (in the node and its NIC selector)
//! and UUID; the running appliance (no restart) arms the cluster, generates its
//! secrets, and the machine's next boot installs: it fetches its Talos config (the
//! point talos_boot.rs calls installed) and posts the install callback.
//!
//! Needs root and a built appliance, like boot_firmware.rs. Two boots (~1-2 min).

use std::fs;
use std::time::Duration;

use provisioner_e2e::{Appliance, Firmware, Lab, LabSite, Machine, markers, payload, require_root};

use super::talos_boot::{cli, make_talos_site};

/// The machine nobody typed in.
const MAC: &str = "52:54:00:61:17:01";
/// talos-1's lab MAC in make_talos_site's copy, put back to the repository's placeholder.
const TALOS_1_LAB: &str = "52:54:00:61:01:01";
const PLACEHOLDER: &str = "02:00:00:00:01:01";

fn boot(lab: &Lab) -> provisioner_e2e::QemuVm {
    lab.boot(Machine {
        firmware: Firmware::SeabiosIpxe,
        mac: MAC.into(),
        name: "adoptee".into(),
    })
    .unwrap_or_else(|e| panic!("{e:#}"))
}

#[test]
fn an_unknown_machine_is_discovered_adopted_by_the_cli_and_installs_on_its_next_boot() {
    require_root();
    let payload = payload().unwrap_or_else(|e| panic!("{e:#}"));
    let lab = Lab::new("e2e-adopt").unwrap_or_else(|e| panic!("{e:#}"));
    let site = LabSite::write(&lab, &payload, &[MAC]).unwrap_or_else(|e| panic!("{e:#}"));
    make_talos_site(&site, &lab.subnet_prefix());
    let infra = site.root.join("infra/genmachine.yaml");
    let text = fs::read_to_string(&infra)
        .unwrap()
        .replace(TALOS_1_LAB, PLACEHOLDER);
    fs::write(&infra, &text).unwrap();
    // The plain profile (no device flow): this test is about adoption.
    let profile = site.root.join("profiles/profiles/genmachine-controlplane.yaml");
    let p = fs::read_to_string(&profile).unwrap();
    let p: String = p
        .lines()
        .filter(|l| !l.starts_with("device_flow"))
        .map(|l| format!("{l}\n"))
        .collect();
    fs::write(&profile, p).unwrap();
    cli(&site, &["check"]);
    let before = fs::read_to_string(&infra).unwrap();

    let appliance = Appliance::start(&lab, &site.config).unwrap_or_else(|e| panic!("{e:#}"));
    let fail = |what: &str, e: anyhow::Error, vm: Option<&provisioner_e2e::QemuVm>| -> ! {
        panic!(
            "{what}: {e:#}\n--- appliance log ---\n{}\n--- serial ---\n{}",
            provisioner_e2e::tail(&appliance.log(), 40),
            vm.map(|v| provisioner_e2e::tail(&v.serial(), 30))
                .unwrap_or_default()
        )
    };
    let snippet = appliance
        .dhcp_snippet("dnsmasq")
        .unwrap_or_else(|e| fail("snippet", e, None));
    let _dnsmasq = lab.dnsmasq(&snippet).unwrap_or_else(|e| fail("dnsmasq", e, None));

    // First boot: nothing matches; the appliance records what the machine said.
    let mut vm = boot(&lab);
    let uuid = vm.machine().smbios_uuid();
    let show = provisioner_e2e::wait_for(
        Firmware::SeabiosIpxe.boot_timeout(),
        "the machine Discovered",
        || {
            let out = appliance
                .admin_cli(&["machines", "show", MAC, "--json"])
                .unwrap_or_default();
            let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
            Ok((v["state"] == "Discovered" && v["uuid"].is_string()).then_some(v))
        },
    )
    .unwrap_or_else(|e| fail("discovery", e, Some(&vm)));
    assert_eq!(show["uuid"], uuid.as_str(), "{show}");
    assert_eq!(show["firmware"], "bios", "{show}");
    assert!(
        show["ip"]
            .as_str()
            .is_some_and(|ip| ip.starts_with(&lab.subnet_prefix())),
        "{show}"
    );
    assert!(show["cluster"].is_null(), "{show}");
    assert!(!vm.serial().contains(markers::CONFIG_FETCHED));
    vm.kill();
    drop(vm);

    // Adopt through the CLI: infra/ gains exactly the MAC (node and NIC selector)
    // and the UUID.
    let out = appliance
        .admin_cli(&["machines", "adopt", MAC, "--node", "talos-1"])
        .unwrap_or_else(|e| fail("adopt", e, None));
    assert!(
        out.contains("adopted as node talos-1") && out.contains("reloaded"),
        "{out}"
    );
    let after = fs::read_to_string(&infra).unwrap();
    let removed: Vec<&str> = before
        .lines()
        .filter(|l| !after.lines().any(|a| a == *l))
        .collect();
    let added: Vec<&str> = after
        .lines()
        .filter(|l| !before.lines().any(|b| b == *l))
        .collect();
    assert_eq!(
        removed,
        [
            format!("    mac: \"{PLACEHOLDER}\""),
            format!("      - deviceSelector: {{ hardwareAddr: \"{PLACEHOLDER}\" }}")
        ],
        "{after}"
    );
    assert_eq!(
        added,
        [
            format!("    mac: \"{MAC}\""),
            format!("    uuid: \"{uuid}\""),
            format!("      - deviceSelector: {{ hardwareAddr: \"{MAC}\" }}")
        ],
        "{after}"
    );
    cli(&site, &["check"]);

    // Second boot, same appliance process: it installs.
    let mut vm = boot(&lab);
    vm.wait_for_serial(
        markers::CONFIG_FETCHED,
        Firmware::SeabiosIpxe.boot_timeout() + Duration::from_secs(60),
    )
    .unwrap_or_else(|e| fail("install after adoption", e, Some(&vm)));
    vm.wait_for_serial(markers::CALLBACK_OK, Duration::from_secs(60))
        .unwrap_or_else(|e| fail("install callback", e, Some(&vm)));
    let serial = vm.serial();
    let doc = serial
        .lines()
        .find(|l| l.contains("LAB-CONFIG-DOC"))
        .unwrap_or_else(|| panic!("no config document marker:\n{serial}"));
    assert!(doc.contains("hostname=talos-1"), "{doc}");
    let show = appliance.admin_cli(&["machines", "show", MAC, "--json"]).unwrap();
    let v: serde_json::Value = serde_json::from_str(&show).unwrap();
    assert_eq!(v["cluster"], "genmachine", "{v}");
    assert_eq!(v["group"], "talos-1", "{v}");
    assert!(
        appliance.log().contains("generated the Talos secrets bundle"),
        "secrets generated at the reload"
    );
    // Only the adoption wrote infra/.
    assert_eq!(fs::read_to_string(&infra).unwrap(), after);
}
