//! Air-gapped bundles in the lab (issue 17): site A's image cache (the lab payload,
//! its SHA-256 recorded by `images import`) is written to one tar by `images bundle`;
//! `images import` fills site B's empty cache inside a fresh network namespace with
//! no interface but `lo` (so nothing could be fetched); B's appliance then installs a
//! SeaBIOS iPXE machine from the imported files: DHCP from the lab's dnsmasq with
//! B's snippet, kernel and initrd from B's cache, config fetched, callback made.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use provisioner_e2e::appliance::provisioner_bin;
use provisioner_e2e::timeline;
use provisioner_e2e::{Appliance, Firmware, Lab, LabSite, Machine, markers, payload, require_root};

fn cli(args: &[&str], no_network: bool) -> String {
    let bin = provisioner_bin().unwrap_or_else(|e| panic!("{e:#}"));
    let mut cmd = if no_network {
        let mut c = Command::new("unshare");
        c.arg("--net").arg(&bin);
        c
    } else {
        Command::new(&bin)
    };
    let o = cmd.args(args).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.status.success(), "provisioner {args:?}: {text}");
    text
}

#[test]
fn imported_bundle_boots_a_machine_on_the_offline_site() {
    require_root();
    let mac = "52:54:00:77:17:01";
    let payload = payload().unwrap_or_else(|e| panic!("{e:#}"));
    let lab = Lab::new("e2e-bundle").unwrap_or_else(|e| panic!("{e:#}"));
    let a = LabSite::write(&lab, &payload, &[mac]).unwrap_or_else(|e| panic!("{e:#}"));
    let a_cfg = a.config.to_str().unwrap().to_string();

    // Site A records the payload's SHA-256 (import from a copy), then bundles.
    let copy = lab.dir().join("payload-copy");
    payload.install_into(&copy).unwrap();
    let (k, i) = (copy.join("vmlinuz"), copy.join("initrd.gz"));
    cli(
        &[
            "images",
            "import",
            "--config",
            &a_cfg,
            "--image",
            "lab-payload",
            k.to_str().unwrap(),
            i.to_str().unwrap(),
        ],
        false,
    );
    let tar = lab.dir().join("site.tar");
    let out = cli(
        &[
            "images",
            "bundle",
            "-o",
            tar.to_str().unwrap(),
            "--config",
            &a_cfg,
        ],
        false,
    );
    assert!(out.contains("2 file(s)"), "{out}");

    // Site B: A's configuration with its own, empty state and cache.
    let b_root = lab.dir().join("site-b");
    std::fs::create_dir_all(b_root.join("state")).unwrap();
    let b_cfg = b_root.join("provisioner.yaml");
    let text = std::fs::read_to_string(&a.config).unwrap();
    let root = a.root.display().to_string();
    std::fs::write(
        &b_cfg,
        text.replace(&format!("{root}/state"), &format!("{}/state", b_root.display()))
            .replace(&format!("{root}/cache"), &format!("{}/cache", b_root.display())),
    )
    .unwrap();
    let b = b_cfg.to_str().unwrap();
    assert!(!b_root.join("cache/lab-payload/vmlinuz").exists());
    let out = cli(&["images", "import", tar.to_str().unwrap(), "--config", b], true);
    assert!(out.contains("ok: 2 file(s) imported"), "{out}");
    for f in ["vmlinuz", "initrd.gz"] {
        assert_eq!(
            std::fs::read(b_root.join("cache/lab-payload").join(f)).unwrap(),
            std::fs::read(copy.join(f)).unwrap(),
            "{f}"
        );
    }

    // B's appliance installs the machine from the imported cache.
    let appliance = Appliance::start(&lab, Path::new(b)).unwrap_or_else(|e| panic!("{e:#}"));
    let snippet = appliance
        .dhcp_snippet("dnsmasq")
        .unwrap_or_else(|e| panic!("{e:#}"));
    let _dnsmasq = lab.dnsmasq(&snippet).unwrap_or_else(|e| panic!("{e:#}"));
    let firmware = Firmware::SeabiosIpxe;
    let mut vm = lab
        .boot(Machine {
            firmware,
            mac: mac.into(),
            name: "bundle".into(),
        })
        .unwrap_or_else(|e| panic!("{e:#}"));
    let res = vm
        .wait_for_serial(markers::CONFIG_FETCHED, firmware.boot_timeout())
        .and_then(|()| vm.wait_for_serial(markers::CALLBACK_OK, Duration::from_secs(60)));
    if let Err(e) = res {
        panic!(
            "{e:#}\n--- appliance log ---\n{}",
            provisioner_e2e::tail(&appliance.log(), 30)
        );
    }
    vm.wait_exit(Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{e:#}"));
    let mut appliance = appliance;
    appliance.stop().unwrap_or_else(|e| panic!("{e:#}"));
    let export = appliance.export_json().unwrap_or_else(|e| panic!("{e:#}"));
    let m = timeline::machine(&export, mac).unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(timeline::state(m), Some("Installed"), "{}", timeline::render(m));
    timeline::assert_in_order(
        m,
        &["ipxe_script_served", "asset_served", "config_served", "installed"],
    )
    .unwrap_or_else(|e| panic!("{e:#}"));
    assert!(
        timeline::count(m, "asset_served") >= 2,
        "kernel and initrd from B's cache"
    );
}
