//! The k0s path end to end in the QEMU lab: a BeeLink-profile machine (profile
//! `config: flatcar`, cluster `lab` in infra/, a controller node bound to its MAC)
//! PXE-boots the appliance's Flatcar script. The image is the lab payload instead
//! of real Flatcar: the config kind, not the image, brings `flatcar.first_boot=1`
//! and `ignition.config.url=`, so swapping the image keeps the Flatcar path. The
//! payload fetches the one-time Ignition URL and posts the `DiskInstalled`
//! callback from `provisioner.callback=`; the machine's next boot gets local boot.
//!
//! Needs root and a built appliance, like boot_firmware.rs. Two boots (~60 s).

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use provisioner_e2e::appliance::{IMAGE_ID, PROFILE_ID};
use provisioner_e2e::timeline::{self, assert_in_order};
use provisioner_e2e::{Appliance, Firmware, Lab, LabSite, Machine, markers, payload, require_root};
use sha2::{Digest, Sha256};

const MAC: &str = "52:54:00:77:05:01";
const K0S: &str = "v1.36.3+k0s.2";
const FLATCAR: &str = "4459.2.0";

/// Turns a plain lab site into a k0s one: Flatcar profile, k0s cluster, a mirror
/// with stand-in k0s and Flatcar files (the payload never downloads them, but the
/// appliance renders Ignition only for what its mirror holds).
fn make_k0s_site(site: &LabSite) {
    let root = &site.root;
    fs::write(
        root.join("profiles/profiles").join(format!("{PROFILE_ID}.yaml")),
        format!("id: {PROFILE_ID}\nimage: {IMAGE_ID}\nconfig: flatcar\ncluster: lab\n"),
    )
    .unwrap();
    // beelink-1's group is derived from infra/ (a MAC lives in one place).
    fs::remove_file(root.join("profiles/groups/lab-vm1.yaml")).unwrap();
    // The controller's address is only written into configs; nothing dials it.
    fs::write(
        root.join("infra/lab.yaml"),
        format!(
            "distribution: k0s\nclusterName: lab\nk0sVersion: {K0S}\nflatcarVersion: {FLATCAR}\n\
             nodes:\n  - {{hostname: beelink-1, controlPlane: true, ipAddress: 10.77.0.11, mac: \"{MAC}\", installDisk: /dev/vda}}\n\
             \x20 - {{hostname: beelink-2}}\n"
        ),
    )
    .unwrap();
    let put = |dir: &Path, name: &str, bytes: &[u8]| {
        fs::create_dir_all(dir).unwrap();
        fs::write(dir.join(name), bytes).unwrap();
        let sum = hex(&Sha256::digest(bytes));
        let sums = dir.join("SHA256SUMS");
        let mut text = fs::read_to_string(&sums).unwrap_or_default();
        text.push_str(&format!("{sum}  {name}\n"));
        fs::write(sums, text).unwrap();
        sum
    };
    let k0s_dir = root.join("cache/mirror/k0s").join(K0S);
    let bin = format!("k0s-{K0S}-amd64");
    let sum = put(&k0s_dir, &bin, b"\x7fELF stand-in k0s");
    fs::write(k0s_dir.join("sha256sums.txt"), format!("{sum}  {bin}\n")).unwrap();
    put(
        &root.join("cache/mirror/flatcar").join(FLATCAR),
        "flatcar_production_image.bin.bz2",
        b"BZh9 stand-in",
    );
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn flatcar_profile_installs_then_boots_locally() {
    require_root();
    let payload = payload().unwrap_or_else(|e| panic!("{e:#}"));
    let lab = Lab::new("e2e-k0s").unwrap_or_else(|e| panic!("{e:#}"));
    let site = LabSite::write(&lab, &payload, &[MAC]).unwrap_or_else(|e| panic!("{e:#}"));
    make_k0s_site(&site);

    // The script the machine will get, with placeholder tokens: the Flatcar kernel
    // line on the lab image.
    let out = std::process::Command::new(provisioner_e2e::appliance::provisioner_bin().unwrap())
        .args(["render", "--mac", MAC, "--config"])
        .arg(&site.config)
        .current_dir(&site.root)
        .output()
        .unwrap();
    let script = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{script}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for want in [
        "flatcar.first_boot=1",
        "ignition.config.url=http://",
        "provisioner.callback=http://",
    ] {
        assert!(script.contains(want), "{want} missing:\n{script}");
    }

    let mut appliance = Appliance::start(&lab, &site.config).unwrap_or_else(|e| panic!("{e:#}"));
    let snippet = appliance
        .dhcp_snippet("dnsmasq")
        .unwrap_or_else(|e| panic!("{e:#}"));
    let _dnsmasq = lab.dnsmasq(&snippet).unwrap_or_else(|e| panic!("{e:#}"));
    let boot = |name: &str| {
        lab.boot(Machine {
            firmware: Firmware::SeabiosIpxe,
            mac: MAC.into(),
            name: name.into(),
        })
        .unwrap_or_else(|e| panic!("{e:#}"))
    };

    // Boot 1: PXE → Flatcar script → Ignition fetched once → DiskInstalled.
    let mut vm = boot("install");
    let t0 = Instant::now();
    let res = vm
        .wait_for_serial(markers::CONFIG_FETCHED, Firmware::SeabiosIpxe.boot_timeout())
        .and_then(|()| vm.wait_for_serial(markers::CALLBACK_OK, Duration::from_secs(60)));
    if let Err(e) = res {
        panic!(
            "{e:#}\n--- appliance log ---\n{}\n--- serial ---\n{}",
            provisioner_e2e::tail(&appliance.log(), 30),
            provisioner_e2e::tail(&vm.serial(), 30)
        );
    }
    eprintln!(
        "TIMING k0s install boot: Ignition + DiskInstalled after {:.1}s",
        t0.elapsed().as_secs_f64()
    );
    vm.wait_exit(Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{e:#}"));
    let fetched: u64 = vm
        .serial()
        .lines()
        .find_map(|l| l.split("LAB-CONFIG-FETCHED bytes=").nth(1))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("bytes=<n>");
    let live = appliance.api_machine(MAC).unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(timeline::state(&live), Some("Installed"), "{live:#}");
    let k0s = appliance
        .api_get(&format!("/api/v1/machines/{MAC}/k0s"))
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert!(k0s.contains("\"phase\":\"DiskInstalled\""), "{k0s}");

    // Boot 2: local boot, no second install. The first VM goes first, and its VM slot
    // with it: holding one slot while waiting for another could wait on a test in the
    // same process that does the same.
    drop(vm);
    let mut vm = boot("second");
    let t1 = Instant::now();
    let decision = provisioner_e2e::wait_for(
        Firmware::SeabiosIpxe.boot_timeout(),
        "a script after disk_installed",
        || {
            let Ok(m) = appliance.api_machine(MAC) else {
                return Ok(None);
            };
            let ev = timeline::events(&m);
            let after = ev
                .iter()
                .rposition(|(k, _)| k == "disk_installed")
                .map(|i| ev[i + 1..].to_vec())
                .unwrap_or_default();
            Ok(after
                .into_iter()
                .find(|(k, _)| k == "ipxe_script_served")
                .map(|(_, d)| d))
        },
    )
    .unwrap_or_else(|e| panic!("{e:#}\n{}", provisioner_e2e::tail(&appliance.log(), 30)));
    eprintln!(
        "TIMING k0s second boot: local-boot decision after {:.1}s",
        t1.elapsed().as_secs_f64()
    );
    assert!(decision.starts_with("local"), "second boot decision: {decision}");
    std::thread::sleep(Duration::from_secs(5));
    assert!(
        !vm.serial().contains(markers::INIT_STARTED),
        "the installed machine booted the payload again"
    );
    vm.kill();
    drop(vm);

    appliance.stop().unwrap_or_else(|e| panic!("{e:#}"));
    let export = appliance.export_json().unwrap_or_else(|e| panic!("{e:#}"));
    let m = timeline::machine(&export, MAC).unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(timeline::state(m), Some("Installed"), "{}", timeline::render(m));
    assert_in_order(
        m,
        &[
            "ipxe_script_served",
            "asset_served",
            "config_served",
            "disk_installed",
            "ipxe_script_served",
        ],
    )
    .unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(timeline::count(m, "config_served"), 1, "{}", timeline::render(m));
    let detail = timeline::events(m)
        .into_iter()
        .find(|(k, _)| k == "config_served")
        .map(|(_, d)| d)
        .unwrap();
    assert!(detail.contains("Flatcar stage-1 Ignition"), "{detail}");
    assert!(
        detail.starts_with(&format!("{fetched} bytes")),
        "{detail} vs payload bytes={fetched}"
    );
}
