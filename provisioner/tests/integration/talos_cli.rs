//! The Talos subcommands through the real binary: `check` validates infra/ (file and
//! field named), `talos secrets gen` + `talos config --node talos-1` print the node's
//! config, `talos schematic` prints the GenMachine schematic ID (`import
//! talhelper`: `talhelper_cli.rs`).

use crate::common;

use common::cli::{repo, repo_config, run};

#[test]
fn talos_config_for_a_node_after_secrets_gen() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = repo_config(tmp.path(), &repo().join("infra"), "");
    let cfg = cfg.to_str().unwrap();
    let (ok, out, err) = run(&["check", "--config", cfg]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("2 cluster(s)"), "{out}");
    let (ok, _, err) = run(&["talos", "config", "--node", "talos-1", "--config", cfg]);
    assert!(!ok && err.contains("talos secrets gen"), "{err}");
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
    let (ok, _, err) = run(&[
        "talos",
        "secrets",
        "gen",
        "--cluster",
        "genmachine",
        "--config",
        cfg,
    ]);
    assert!(
        !ok && err.contains("--force"),
        "a second gen must not replace the bundle: {err}"
    );
    let (ok, out, err) = run(&["talos", "config", "--node", "talos-1", "--config", cfg]);
    assert!(ok, "{err}");
    let doc = provisioner_core::talos::yaml::from_str(&out).unwrap();
    assert_eq!(doc["machine"]["network"]["hostname"], "talos-1");
    assert_eq!(doc["cluster"]["clusterName"], "genmachine");
    // The output carries keys, so it is the operator's to keep; nothing leaked to stderr.
    assert!(err.is_empty(), "{err}");
    let (ok, out, _) = run(&["talos", "schematic", "--node", "talos-2", "--config", cfg]);
    assert!(
        ok && out.contains("# id: 65cf8364cd0de4cf7b851dc7067a2db83d0ba04f11d8635c6cd3334be6ffb825"),
        "{out}"
    );
    let (ok, out, err) = run(&["talos", "talosconfig", "--cluster", "genmachine", "--config", cfg]);
    assert!(ok && out.contains("context: genmachine"), "{out}{err}");
    // Export then re-import into another state dir reproduces the same config.
    let export = tmp.path().join("secrets.yaml");
    let (ok, _, err) = run(&[
        "talos",
        "secrets",
        "export",
        "--cluster",
        "genmachine",
        "-o",
        export.to_str().unwrap(),
        "--config",
        cfg,
    ]);
    assert!(ok, "{err}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&export).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let tmp2 = tempfile::tempdir().unwrap();
    let cfg2 = repo_config(tmp2.path(), &repo().join("infra"), "");
    let cfg2 = cfg2.to_str().unwrap();
    let (ok, _, err) = run(&[
        "talos",
        "secrets",
        "import",
        "--cluster",
        "genmachine",
        export.to_str().unwrap(),
        "--config",
        cfg2,
    ]);
    assert!(ok, "{err}");
    let (_, out2, _) = run(&["talos", "config", "--node", "talos-1", "--config", cfg2]);
    assert_eq!(out2, out_of(cfg));
}

fn out_of(cfg: &str) -> String {
    run(&["talos", "config", "--node", "talos-1", "--config", cfg]).1
}

#[test]
fn check_names_file_and_field_in_infra() {
    let tmp = tempfile::tempdir().unwrap();
    let infra = tmp.path().join("infra");
    std::fs::create_dir_all(&infra).unwrap();
    std::fs::copy(repo().join("infra/beelink.yaml"), infra.join("beelink.yaml")).unwrap();
    let text = std::fs::read_to_string(repo().join("infra/genmachine.yaml")).unwrap();
    std::fs::write(
        infra.join("genmachine.yaml"),
        text.replace("talosVersion: v1.11.6", "talosVersion: v1.8.3")
            .replace(
                "installDisk: /dev/nvme0n1\n    mac: \"02:00:00:00:01:02\"",
                "mac: \"02:00:00:00:01:02\"",
            ),
    )
    .unwrap();
    let cfg = repo_config(tmp.path(), &infra, "");
    let (ok, _, err) = run(&["check", "--config", cfg.to_str().unwrap()]);
    assert!(!ok);
    assert!(
        err.contains("genmachine.yaml: field `nodes[0].schematic`: siderolabs/amdgpu needs Talos v1.9"),
        "{err}"
    );
    assert!(
        err.contains("genmachine.yaml: field `nodes[1].installDisk`"),
        "{err}"
    );
}
