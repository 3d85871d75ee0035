//! Proves the lab itself works, independent of the appliance: firmware in
//! QEMU boots the payload against plain peers (dnsmasq doing DHCP + TFTP,
//! busybox httpd serving a hand-written `boot.ipxe`, the payload and a
//! config) and the payload reports the config it fetched.
//!
//! Only SeaBIOS runs here: the appliance tests in boot_firmware.rs boot every
//! firmware class through the same lab.

use std::fs;
use std::time::{Duration, Instant};

use provisioner_e2e::{Firmware, Lab, Machine, markers, payload, require_root};
use sha2::{Digest, Sha256};

const HTTP_PORT: u16 = 8080;

/// Boots one machine of class `fw` against the peers and checks the markers.
fn boot_against_peers(lab_name: &str, fw: Firmware, mac: &str) {
    require_root();
    let payload = payload().expect("payload");
    let lab = Lab::new(lab_name).expect("lab");
    let ip = lab.ip();

    let www = lab.dir().join("www");
    payload.install_into(&www).unwrap();
    let config = format!("# lab config for {mac}\nsecret: not-printed-{}\n", lab.netns());
    fs::write(www.join("cfg"), &config).unwrap();
    fs::write(
        www.join("boot.ipxe"),
        format!(
            "#!ipxe\n\
             kernel http://{ip}:{HTTP_PORT}/vmlinuz initrd=initrd.gz console=ttyS0 panic=-1 \
             provisioner.config=http://{ip}:{HTTP_PORT}/cfg\n\
             initrd http://{ip}:{HTTP_PORT}/initrd.gz\n\
             boot\n"
        ),
    )
    .unwrap();

    // One dhcp-boot line per client class, each excluding the others
    // (dnsmasq does not pick the first matching line).
    let mut dhcp = format!(
        "enable-tftp\n\
         tftp-root=/usr/lib/ipxe\n\
         dhcp-userclass=set:ipxe,iPXE\n\
         dhcp-match=set:efi,option:client-arch,7\n\
         dhcp-match=set:efi,option:client-arch,9\n\
         dhcp-vendorclass=set:http,HTTPClient\n\
         dhcp-boot=tag:ipxe,http://{ip}:{HTTP_PORT}/boot.ipxe\n\
         dhcp-boot=tag:!ipxe,tag:!efi,tag:!http,undionly.kpxe\n"
    );
    if fw == Firmware::OvmfHttpBoot {
        // No PXE file for EFI: EDK2 falls through to HTTP Boot, which needs
        // option 60 = HTTPClient echoed and a URL in option 67.
        fs::copy("/usr/lib/ipxe/snponly.efi", www.join("snponly.efi")).unwrap();
        dhcp.push_str(&format!(
            "dhcp-option-force=tag:http,60,HTTPClient\n\
             dhcp-boot=tag:!ipxe,tag:http,http://{ip}:{HTTP_PORT}/snponly.efi\n"
        ));
    } else {
        dhcp.push_str("dhcp-boot=tag:!ipxe,tag:efi,tag:!http,snponly.efi\n");
    }
    let _dnsmasq = lab.dnsmasq(&dhcp).expect("dnsmasq");
    let _httpd = lab.httpd(&www, HTTP_PORT).expect("httpd");

    let mut vm = lab
        .boot(Machine {
            firmware: fw,
            mac: mac.into(),
            name: "vm1".into(),
        })
        .expect("boot");
    let t0 = Instant::now();
    vm.wait_for_serial(markers::INIT_STARTED, fw.boot_timeout())
        .unwrap_or_else(|e| panic!("{e:#}"));
    let t_init = t0.elapsed();
    vm.wait_for_serial(markers::CONFIG_FETCHED, Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{e:#}"));
    let t_cfg = t0.elapsed();
    // The marker can be seen before the rest of its line reaches the console:
    // read the console once the payload has powered off.
    vm.wait_exit(Duration::from_secs(60)).expect("payload powers off");

    let serial = vm.serial();
    let line = serial
        .lines()
        .find(|l| l.contains(markers::CONFIG_FETCHED))
        .unwrap()
        .trim()
        .to_owned();
    let sum: String = Sha256::digest(config.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(
        line,
        format!("{} bytes={} sha256={sum}", markers::CONFIG_FETCHED, config.len()),
        "the payload fetched something other than the config"
    );
    assert!(
        !serial.contains("not-printed-"),
        "config contents leaked to the console"
    );
    eprintln!(
        "TIMING {fw:?}: /init after {:.1}s, config fetched after {:.1}s, powered off after {:.1}s",
        t_init.as_secs_f64(),
        t_cfg.as_secs_f64(),
        t0.elapsed().as_secs_f64()
    );
}

#[test]
fn seabios_ipxe_boots_payload_from_peers() {
    boot_against_peers("self-seabios", Firmware::SeabiosIpxe, "52:54:00:77:10:01");
}
