//! The scripts under deploy/: `shellcheck` passes on every one, and
//! `create-lxc.sh --dry-run` prints exactly the expected Proxmox commands (golden
//! files; regenerate with `UPDATE_GOLDEN=1 cargo test -p provisioner --test
//! integration deploy_scripts::` and review the diff).

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Every file under deploy/ whose first line runs sh or bash.
fn shell_scripts() -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![repo().join("deploy")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(text) = std::fs::read_to_string(&p) {
                let first = text.lines().next().unwrap_or_default();
                if first.starts_with("#!") && (first.ends_with("/sh") || first.ends_with("bash")) {
                    out.push(p);
                }
            }
        }
    }
    out.sort();
    out
}

#[test]
fn shellcheck_passes_on_every_deploy_script() {
    let scripts = shell_scripts();
    let names: Vec<String> = scripts
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for want in [
        "build-deb.sh",
        "create-lxc.sh",
        "bookworm-root.sh",
        "postinst",
        "postrm",
        "preinst",
        "prerm",
    ] {
        assert!(
            names.iter().any(|n| n == want),
            "{want} not found among {names:?}"
        );
    }
    let out = Command::new("shellcheck")
        .args(&scripts)
        .output()
        .expect("shellcheck not installed (tests/packages.txt lists it; run tests/setup)");
    assert!(
        out.status.success(),
        "shellcheck:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("shellcheck: {} scripts clean", scripts.len());
}

fn create_lxc(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(repo().join("deploy/proxmox/create-lxc.sh"))
        .args(args)
        .env_remove("TMPDIR")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn check_golden(name: &str, got: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, got).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 creates it)", path.display()));
    assert_eq!(got, want, "{name} differs from its golden file");
}

/// A stand-in package file; only its path appears in the commands.
fn fake_deb() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let deb = dir.path().join("provisioner_test_amd64.deb");
    std::fs::write(&deb, b"!<arch>\n").unwrap();
    let s = deb.display().to_string();
    (dir, s)
}

const NET: [&str; 6] = ["--vlan", "10", "--ip", "10.10.10.5/24", "--gw", "10.10.10.1"];

#[test]
fn create_lxc_dry_run_prints_the_expected_commands() {
    let (_d, deb) = fake_deb();
    let mut fresh = vec!["--dry-run", "--deb", &deb, "--firewall"];
    fresh.extend(NET);
    fresh.extend(["--template", "debian-12-standard_12.7-1_amd64.tar.zst"]);
    let (ok, out, err) = create_lxc(&fresh);
    assert!(ok, "{err}");
    check_golden("create-lxc-fresh.txt", &out.replace(&deb, "@DEB@"));

    // Re-running on a host where the container exists: no create, same upgrade path.
    let mut again = vec![
        "--dry-run",
        "--assume-exists",
        "--deb",
        &deb,
        "--sandbox",
        "no-mountns",
    ];
    again.extend(NET);
    again.extend(["--ctid", "301", "--hostname", "pxe"]);
    let (ok, out, err) = create_lxc(&again);
    assert!(ok, "{err}");
    check_golden("create-lxc-existing.txt", &out.replace(&deb, "@DEB@"));
}

#[test]
fn create_lxc_rejects_bad_arguments_before_doing_anything() {
    let (_d, deb) = fake_deb();
    let cases: [(&[&str], &str); 6] = [
        (
            &[
                "--dry-run",
                "--vlan",
                "10",
                "--ip",
                "10.0.0.5/24",
                "--gw",
                "10.0.0.1",
            ],
            "--deb is required",
        ),
        (
            &[
                "--dry-run",
                "--deb",
                &deb,
                "--vlan",
                "4095",
                "--ip",
                "10.0.0.5/24",
                "--gw",
                "10.0.0.1",
            ],
            "--vlan",
        ),
        (
            &[
                "--dry-run",
                "--deb",
                &deb,
                "--vlan",
                "10",
                "--ip",
                "10.0.0.5",
                "--gw",
                "10.0.0.1",
            ],
            "--ip",
        ),
        (
            &[
                "--dry-run",
                "--deb",
                &deb,
                "--vlan",
                "10",
                "--ip",
                "10.0.0.5/24",
                "--gw",
                "x",
            ],
            "--gw",
        ),
        (
            &[
                "--deb",
                &deb,
                "--assume-exists",
                "--vlan",
                "10",
                "--ip",
                "10.0.0.5/24",
                "--gw",
                "10.0.0.1",
            ],
            "--assume-exists",
        ),
        (
            &[
                "--dry-run",
                "--deb",
                "/nonexistent.deb",
                "--vlan",
                "10",
                "--ip",
                "10.0.0.5/24",
                "--gw",
                "10.0.0.1",
            ],
            "no package",
        ),
    ];
    for (args, want) in cases {
        let (ok, out, err) = create_lxc(args);
        assert!(!ok, "{args:?} accepted");
        assert!(out.is_empty(), "{args:?} printed commands before failing: {out}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
}

/// The package carries the completions and man pages the packaged binary generates
/// from its clap definitions (`provisioner completions`, `provisioner man`), where
/// Debian's bash-completion, zsh, fish and man look for them; the bash script loads
/// and registers the command, every man page is a gzipped roff page with a title.
#[test]
fn package_ships_completions_and_man_pages() {
    let work = tempfile::tempdir().unwrap();
    let deb = crate::deploy::chroot::build_deb("0.0.0-test", work.path());
    let listing = Command::new("dpkg-deb").arg("-c").arg(&deb).output().unwrap();
    assert!(listing.status.success());
    let listing = String::from_utf8_lossy(&listing.stdout);
    for want in [
        "./usr/share/bash-completion/completions/provisioner",
        "./usr/share/zsh/vendor-completions/_provisioner",
        "./usr/share/fish/vendor_completions.d/provisioner.fish",
        "./usr/share/man/man1/provisioner.1.gz",
        "./usr/share/man/man1/provisioner-images-pull.1.gz",
        "./usr/share/man/man1/provisioner-doctor.1.gz",
    ] {
        let line = listing
            .lines()
            .find(|l| l.ends_with(want))
            .unwrap_or_else(|| panic!("{want} not in the package:\n{listing}"));
        assert!(line.starts_with("-rw-r--r-- root/root"), "{line}");
    }
    let root = work.path().join("x");
    let o = Command::new("dpkg-deb")
        .arg("-x")
        .arg(&deb)
        .arg(&root)
        .output()
        .unwrap();
    assert!(o.status.success());
    // Sourcing the script registers a completion function for the command.
    let bash = root.join("usr/share/bash-completion/completions/provisioner");
    let o = Command::new("bash")
        .arg("-c")
        .arg(format!("source {} && complete -p provisioner", bash.display()))
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success() && out.contains("-F _provisioner"), "{out}");
    let zsh = std::fs::read_to_string(root.join("usr/share/zsh/vendor-completions/_provisioner")).unwrap();
    assert!(zsh.starts_with("#compdef provisioner"));
    let pages: Vec<PathBuf> = std::fs::read_dir(root.join("usr/share/man/man1"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(pages.len() > 20, "{pages:?}");
    for p in &pages {
        let o = Command::new("zcat").arg(p).output().unwrap();
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(
            o.status.success() && text.contains(".TH provisioner"),
            "{}",
            p.display()
        );
    }
}
