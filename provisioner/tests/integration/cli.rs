//! The binary's one-shot subcommands: check, dhcp-snippet, render, export/import.

use crate::common;

use common::daemon::{run, write_config};
use common::write_catalog;

fn setup() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    write_catalog(dir.path());
    let cfg = write_config(dir.path(), dir.path());
    (dir, cfg.display().to_string())
}

#[test]
fn check_passes_on_a_good_tree_and_the_shipped_one() {
    let (_d, cfg) = setup();
    let (ok, out, err) = run(&["check", "--config", &cfg]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("1 image(s), 1 profile(s), 2 group(s)"), "{out}");
    // The repository's own profiles/, images/ and infra/ (the seed homelab).
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let (ok, out, err) = std::process::Command::new(common::daemon::BIN)
        .arg("check")
        .current_dir(root)
        .output()
        .map(|o| {
            (
                o.status.success(),
                String::from_utf8_lossy(&o.stdout).to_string(),
                String::from_utf8_lossy(&o.stderr).to_string(),
            )
        })
        .unwrap();
    assert!(ok, "shipped tree fails check: {out}{err}");
    // Its clusters carry placeholder MACs: check says they are not armed.
    for (file, first) in [
        ("infra/genmachine.yaml", "talos-1 02:00:00:00:01:01"),
        ("infra/beelink.yaml", "beelink-1 02:00:00:00:02:01"),
    ] {
        assert!(
            out.lines().any(|l| l.starts_with("note: ")
                && l.contains(file)
                && l.contains(&format!(
                    "cluster not armed: replace the placeholder MACs ({first}"
                ))),
            "{out}"
        );
    }
    // A tree without placeholders has no such note.
    let (_d, cfg) = setup();
    let (_, out, _) = run(&["check", "--config", &cfg]);
    assert!(!out.contains("not armed"), "{out}");
}

#[test]
fn check_names_file_and_field() {
    let (d, cfg) = setup();
    let p = d.path().join("profiles");
    std::fs::write(
        p.join("groups/bad.yaml"),
        "id: bad\nprofile: nope\nselector: { mac: \"zz:zz\" }\n",
    )
    .unwrap();
    std::fs::write(
        p.join("profiles/typo.yaml"),
        "id: typo\nimage: test-img\nkernel_args: [x]\n",
    )
    .unwrap();
    let (ok, _, err) = run(&["check", "--config", &cfg]);
    assert!(!ok);
    assert!(err.contains("groups/bad.yaml: field `profile`"), "{err}");
    assert!(err.contains("groups/bad.yaml: field `selector.mac`"), "{err}");
    assert!(err.contains("profiles/typo.yaml: field `kernel_args`"), "{err}");
    std::fs::write(d.path().join("bad.yaml"), "htp_listen: 1\n").unwrap();
    let (ok, _, err) = run(&[
        "check",
        "--config",
        &d.path().join("bad.yaml").display().to_string(),
    ]);
    assert!(
        !ok && err.contains("bad.yaml") && err.contains("htp_listen"),
        "{err}"
    );
}

#[test]
fn dnsmasq_accepts_the_snippet() {
    let (d, cfg) = setup();
    let (ok, snippet, err) = run(&["dhcp-snippet", "--for", "dnsmasq", "--config", &cfg]);
    assert!(ok, "{err}");
    assert!(
        snippet.contains("dhcp-boot=tag:ipxe,http://127.0.0.1:0/boot.ipxe") || snippet.contains("boot.ipxe")
    );
    let conf = d.path().join("dnsmasq.conf");
    std::fs::write(&conf, &snippet).unwrap();
    let out = std::process::Command::new("dnsmasq")
        .arg("--test")
        .arg("-C")
        .arg(&conf)
        .output();
    match out {
        Ok(o) => assert!(
            o.status.success() && String::from_utf8_lossy(&o.stderr).contains("syntax check OK"),
            "dnsmasq rejects the snippet: {}",
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => panic!("dnsmasq not installed ({e}); tests/setup installs dnsmasq-base"),
    }
    for kind in ["kea", "isc"] {
        let (ok, s, _) = run(&["dhcp-snippet", "--for", kind, "--config", &cfg]);
        assert!(ok && s.contains("boot.ipxe"), "{kind}");
    }
}

#[test]
fn render_prints_script_and_config_without_serving() {
    let (_d, cfg) = setup();
    let (ok, out, err) = run(&["render", "--mac", "52-54-00-00-00-02", "--config", &cfg]);
    assert!(ok, "{err}");
    assert!(
        out.contains("# decision: install")
            && out.contains("kernel http://127.0.0.1")
            && out.contains("hostname: node-efi"),
        "{out}"
    );
}

#[test]
fn export_import_round_trip_json_and_yaml() {
    let (d, cfg) = setup();
    // Seed the inventory through import, export it, import into a fresh state dir.
    let seed = d.path().join("seed.json");
    std::fs::write(
        &seed,
        r#"{"schema_version":1,"machines":[{"mac":"52:54:00:00:00:07","arch":"x86-64-efi","first_seen":"2026-01-01T00:00:00Z","last_seen":"2026-01-02T00:00:00Z","state":"Installed","labels":{"rack":"r1"},"timeline":[{"at":"2026-01-01T00:00:00Z","kind":"installed","detail":"x"}]}]}"#,
    )
    .unwrap();
    let (ok, _, err) = run(&["import", seed.to_str().unwrap(), "--config", &cfg]);
    assert!(ok, "{err}");
    let (ok, json, err) = run(&["export", "--config", &cfg]);
    assert!(ok, "{err}");
    let (ok, yaml, _) = run(&["export", "--format", "yaml", "--config", &cfg]);
    assert!(ok);
    let a: serde_json::Value = serde_json::from_str(&json).unwrap();
    let mut b: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&seed).unwrap()).unwrap();
    // The seed is a schema-1 export; its entry ("x") is not text the appliance
    // writes, so it stays kind + detail, and only the writer's version moves on.
    b["schema_version"] = provisioner_core::inventory::SCHEMA_VERSION.into();
    assert_eq!(a, b, "export equals what was imported");
    // YAML import into a second state dir reproduces the same export.
    let d2 = tempfile::tempdir().unwrap();
    write_catalog(d2.path());
    let cfg2 = write_config(d2.path(), d2.path()).display().to_string();
    let y = d2.path().join("x.yaml");
    std::fs::write(&y, yaml).unwrap();
    assert!(run(&["import", y.to_str().unwrap(), "--config", &cfg2]).0);
    let (_, json2, _) = run(&["export", "--config", &cfg2]);
    assert_eq!(serde_json::from_str::<serde_json::Value>(&json2).unwrap(), a);
}

#[test]
fn version() {
    let (ok, out, _) = run(&["version"]);
    assert!(ok && out.starts_with("provisioner "));
}
