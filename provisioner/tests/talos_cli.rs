//! The Talos subcommands through the real binary: `check` validates infra/ (file and
//! field named), `talos secrets gen` + `talos config --node talos-1` print the node's
//! config, `talos schematic` prints the GenMachine schematic ID, and `import
//! talhelper` converts talhelper's example, listing what it could not import.

use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_provisioner");

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A config using the repository's data and a private state dir.
fn config(dir: &Path, infra: &Path) -> PathBuf {
    let q = |p: &Path| format!("\"{}\"", p.display());
    let cfg = dir.join("provisioner.yaml");
    std::fs::write(
        &cfg,
        format!(
            "state_dir: {}\nprofiles_dir: {}\nimages_dir: {}\ninfra_dir: {}\n",
            q(&dir.join("state")),
            q(&repo().join("profiles")),
            q(&repo().join("images")),
            q(infra)
        ),
    )
    .unwrap();
    cfg
}

fn run(args: &[&str]) -> (bool, String, String) {
    let mut cmd = Command::new(BIN);
    for (k, _) in std::env::vars() {
        if k.starts_with("PROVISIONER_") {
            cmd.env_remove(k);
        }
    }
    let o = cmd.args(args).output().unwrap();
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn talos_config_for_a_node_after_secrets_gen() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path(), &repo().join("infra"));
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
    let cfg2 = config(tmp2.path(), &repo().join("infra"));
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
    let cfg = config(tmp.path(), &infra);
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

#[test]
fn import_talhelper_example() {
    let fixtures = std::env::var_os("PROVISIONER_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("../shared/fixtures"));
    let talconfig = fixtures.join("talhelper/talconfig.yaml");
    if !talconfig.is_file() {
        println!("SKIPPED: no talhelper fixture at {}", talconfig.display());
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path(), &tmp.path().join("infra"));
    std::fs::create_dir_all(tmp.path().join("infra")).unwrap();
    for f in ["beelink.yaml", "genmachine.yaml"] {
        std::fs::copy(repo().join("infra").join(f), tmp.path().join("infra").join(f)).unwrap();
    }
    let (ok, out, err) = run(&[
        "import",
        "talhelper",
        talconfig.to_str().unwrap(),
        "--config",
        cfg.to_str().unwrap(),
    ]);
    assert!(ok, "{out}{err}");
    assert!(err.contains("not imported: nodes[0].machineSpec"), "{err}");
    assert!(err.contains("not imported: patches[2]: file reference"), "{err}");
    let written = tmp.path().join("infra/home-cluster.yaml");
    assert!(out.contains("home-cluster.yaml (2 node(s)"), "{out}");
    let text = std::fs::read_to_string(&written).unwrap();
    assert!(text.starts_with("# Imported from talhelper"), "{text}");
    // Imported clusters pass `check` (profiles do not reference it; that is fine).
    let (ok, out, err) = run(&["check", "--config", cfg.to_str().unwrap()]);
    assert!(ok, "{out}{err}");
    // A second import does not overwrite without --force.
    let (ok, _, err) = run(&[
        "import",
        "talhelper",
        talconfig.to_str().unwrap(),
        "--config",
        cfg.to_str().unwrap(),
    ]);
    assert!(!ok && err.contains("--force"), "{err}");
}
