//! `provisioner import talhelper` through the real binary: talhelper's example
//! (fixture `talhelper/talconfig.yaml`, copied into a temporary folder next to
//! hand-made stand-ins for the three files and two talenv values it names but the
//! fixture set does not carry) imports with nothing dropped and passes `check`; a
//! talconfig whose hostnames and addresses are `${VAR}`s takes them from a
//! `talenv.sops.yaml` encrypted by the real `sops` for an age key made here.

use std::path::Path;

use age::secrecy::ExposeSecret;

use crate::common;
use crate::talos_sops::{find_sops, sops_cmd};
use common::cli::{repo, repo_config, run};

/// A config whose `infra_dir` is `<dir>/infra`, seeded with the repository's files.
fn infra_config(dir: &Path) -> String {
    let cfg = repo_config(dir, &dir.join("infra"), "");
    std::fs::create_dir_all(dir.join("infra")).unwrap();
    for f in ["beelink.yaml", "genmachine.yaml"] {
        std::fs::copy(repo().join("infra").join(f), dir.join("infra").join(f)).unwrap();
    }
    cfg.to_str().unwrap().to_string()
}

fn text_has(p: &Path, want: &str) -> bool {
    std::fs::read_to_string(p).unwrap().contains(want)
}

fn write(dir: &Path, rel: &str, text: &str) {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

#[test]
fn import_talhelper_example_nothing_dropped() {
    let Some(talconfig) = common::fixture("talhelper/talconfig.yaml") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let cfg = infra_config(tmp.path());
    let th = tmp.path().join("talhelper");
    std::fs::create_dir_all(&th).unwrap();
    std::fs::copy(&talconfig, th.join("talconfig.yaml")).unwrap();
    write(
        &th,
        "talenv.yaml",
        "myDomainName: home.example\ntsAuth: tskey-auth-1\n",
    );
    write(
        &th,
        "uservolumeconfig3.yaml",
        "apiVersion: v1alpha1\nkind: UserVolumeConfig\nname: sata3\nprovisioning:\n  diskSelector:\n    match: disk.transport == \"sata\"\n  minSize: 100GiB\n",
    );
    write(
        &th,
        "extraNodeLabels-patch.yaml",
        "machine:\n  nodeLabels:\n    domainname: \"${myDomainName}\"\n",
    );
    write(&th, "tsauth.env", "TS_AUTHKEY=${tsAuth}\n");
    // Run from elsewhere: `@./…` and talenv are found next to the talconfig.
    let file = th.join("talconfig.yaml");
    let (ok, out, err) = run(&["import", "talhelper", file.to_str().unwrap(), "--config", &cfg]);
    assert!(ok, "{out}{err}");
    assert!(!err.contains("not imported"), "{err}");
    assert!(
        out.contains("home-cluster.yaml (2 node(s), 0 field(s) not imported"),
        "{out}"
    );
    let text = std::fs::read_to_string(tmp.path().join("infra/home-cluster.yaml")).unwrap();
    assert!(text.starts_with("# Imported from talhelper"), "{text}");
    assert!(!text.contains("Not imported"), "{text}");
    for want in [
        "domain: home.example",
        "TS_AUTHKEY=tskey-auth-1",
        "kind: NetworkRuleConfig",
        "metal-installer-secureboot/",
    ] {
        assert!(text.contains(want), "{want} missing:\n{text}");
    }
    let (ok, out, err) = run(&["check", "--config", &cfg]);
    assert!(ok, "{out}{err}");
    // The rendered config through the CLI carries the imported documents.
    let (ok, _, err) = run(&[
        "talos",
        "secrets",
        "gen",
        "--cluster",
        "home-cluster",
        "--config",
        &cfg,
    ]);
    assert!(ok, "{err}");
    let (ok, out, err) = run(&["talos", "config", "--node", "kmaster1", "--config", &cfg]);
    assert!(ok, "{err}");
    for want in [
        "kind: ExtensionServiceConfig",
        "kind: UserVolumeConfig",
        "kind: VolumeConfig",
        "kind: NetworkDefaultActionConfig",
        "isSecureBootEnabled: \"true\"",
        "domainname: home.example",
    ] {
        assert!(out.contains(want), "{want} missing:\n{out}");
    }
    let (ok, _, err) = run(&["import", "talhelper", file.to_str().unwrap(), "--config", &cfg]);
    assert!(!ok && err.contains("--force"), "{err}");
}

const TEMPLATED: &str = r#"clusterName: lab
talosVersion: v1.11.6
kubernetesVersion: v1.34.1
endpoint: https://${VIP}:6443
nodes:
  - hostname: ${HOSTNAME1}
    ipAddress: ${IP1}
    controlPlane: true
    installDisk: /dev/sda
    networkInterfaces:
      - interface: eth0
        addresses: ["${IP1}/24"]
        vip:
          ip: ${VIP}
"#;

#[test]
fn templated_hostnames_from_a_sops_encrypted_talenv() {
    let Some(_) = find_sops() else {
        println!(
            "SKIPPED: the real `sops` was not found (tests/setup installs it from tests/requirements.txt)"
        );
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let cfg = infra_config(tmp.path());
    let th = tmp.path().join("th");
    write(&th, "talconfig.yaml", TEMPLATED);
    let file = th.join("talconfig.yaml");
    let file = file.to_str().unwrap();
    // Before: talhelper users hit `missing field hostname`; now the variable is named.
    let (ok, _, err) = run(&["import", "talhelper", file, "--config", &cfg]);
    assert!(!ok && err.contains("variable ${VIP} not set"), "{err}");

    let id = age::x25519::Identity::generate();
    let key_file = tmp.path().join("age.key");
    std::fs::write(&key_file, format!("{}\n", id.to_string().expose_secret())).unwrap();
    let plain = tmp.path().join("plain.yaml");
    std::fs::write(&plain, "VIP: 10.9.0.10\nHOSTNAME1: cp-9\nIP1: 10.9.0.11\n").unwrap();
    let enc = sops_cmd(tmp.path(), &key_file)
        .args([
            "--encrypt",
            "--age",
            &id.to_public().to_string(),
            "--input-type",
            "yaml",
            "--output-type",
            "yaml",
        ])
        .arg(&plain)
        .output()
        .unwrap();
    assert!(enc.status.success(), "{}", String::from_utf8_lossy(&enc.stderr));
    let enc = String::from_utf8(enc.stdout).unwrap();
    assert!(enc.contains("ENC[AES256_GCM,") && !enc.contains("cp-9"), "{enc}");
    write(&th, "talenv.sops.yaml", &enc);

    let no_default_key = std::env::var_os("SOPS_AGE_KEY_FILE").is_none()
        && std::env::var_os("SOPS_AGE_KEY").is_none()
        && !std::env::var_os("HOME")
            .is_some_and(|h| Path::new(&h).join(".config/sops/age/keys.txt").is_file());
    if no_default_key {
        let (ok, _, err) = run(&["import", "talhelper", file, "--config", &cfg]);
        assert!(!ok && err.contains("--age-key"), "{err}");
    }
    // The encrypted values stay encrypted (talhelper_sealed.rs has the rest).
    let (ok, out, err) = run(&[
        "import",
        "talhelper",
        file,
        "--age-key",
        key_file.to_str().unwrap(),
        "--config",
        &cfg,
    ]);
    assert!(ok, "{out}{err}");
    assert!(err.contains("as placeholders"), "{err}");
    let dest = tmp.path().join("infra/lab.yaml");
    assert!(text_has(&dest, "hostname: ${HOSTNAME1}") && !text_has(&dest, "cp-9"));
    // `-e` names other env files (here the plain one; no key needed): inline values.
    let other = tmp.path().join("other.yaml");
    let (ok, out, err) = run(&[
        "import",
        "talhelper",
        file,
        "-e",
        plain.to_str().unwrap(),
        "-o",
        other.to_str().unwrap(),
        "--config",
        &cfg,
    ]);
    assert!(ok, "{out}{err}");
    let text = std::fs::read_to_string(&other).unwrap();
    let v = provisioner_core::talos::yaml::from_str(&text).unwrap();
    assert_eq!(v["endpoint"], "https://10.9.0.10:6443", "{text}");
    let n = &v["nodes"][0];
    assert_eq!(
        (&n["hostname"], &n["ipAddress"]),
        (&"cp-9".into(), &"10.9.0.11".into()),
        "{text}"
    );
    assert_eq!(
        n["networkInterfaces"][0]["addresses"][0], "10.9.0.11/24",
        "{text}"
    );
    assert_eq!(n["networkInterfaces"][0]["vip"]["ip"], "10.9.0.10", "{text}");
    assert!(!tmp.path().join("other.talenv.sops.yaml").exists());
}
