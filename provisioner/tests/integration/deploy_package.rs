//! The Debian package, installed for real into a minimal Debian 12 root (debootstrap,
//! cached by deploy/test/bookworm-root.sh): dependencies resolved from Debian's
//! repository, `provisioner check` and the `serve --dry-run` self-test inside it
//! (as the system user with only the unit's capabilities, in a private network
//! namespace), `systemd-analyze verify` on the installed unit, an upgrade that keeps
//! a seeded inventory and a local config edit, the upgraded unit running under
//! systemd itself (the root booted with `systemd-nspawn`: READY, capabilities,
//! seccomp, a watchdog kill and restart, the seeded machine served by the API), and
//! the installed service, with bootstrap enabled, taking a cluster of fakes in the
//! container's own network namespace to HandedOff (Talos bootstrap, the ArgoCD
//! install from the image cache, the packaged gitops/, Argo CD's Synced + Healthy),
//! and a purge that removes the state.
//!
//! Needs root (chroot, mounts, nspawn); CI runs as root. The package is built from the test
//! binary (`CARGO_BIN_EXE_provisioner`) so no release build is needed here.

use crate::common;
use crate::deploy;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

use deploy::boot::Booted;
use deploy::chroot::{Chroot, build_deb, stdout, text};
use provisioner_core::inventory::{Inventory, MemInventory};
use provisioner_core::model::Machine;

const SEEDED_MAC: &str = "52:54:00:de:b1:01";

/// `CAP_X CAP_Y` from the unit's `AmbientCapabilities=`, as setpriv wants them.
fn unit_caps(unit: &str) -> String {
    let line = unit
        .lines()
        .find_map(|l| l.strip_prefix("AmbientCapabilities="))
        .expect("AmbientCapabilities= in the unit");
    line.split_whitespace()
        .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_ascii_lowercase()))
        .collect::<Vec<_>>()
        .join(",")
}

/// `provisioner serve --dry-run` in the root, as the `provisioner` user with exactly
/// `caps` (the unit's set), in a fresh network namespace so the real ports 67/69/80
/// of the host are not involved.
fn dry_run_as_service_user(c: &Chroot, caps: &str) -> Output {
    let all = if caps.is_empty() {
        "-all".to_string()
    } else {
        format!("-all,{caps}")
    };
    Command::new("unshare")
        .arg("--net")
        .arg("chroot")
        .arg(&c.root)
        .args([
            "setpriv",
            "--reuid",
            "provisioner",
            "--regid",
            "provisioner",
            "--init-groups",
        ])
        .args(["--inh-caps", &all, "--ambient-caps", &all, "--bounding-set", &all])
        .args([
            "--no-new-privs",
            "--",
            "/usr/bin/provisioner",
            "serve",
            "--dry-run",
        ])
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin")
        .env("NO_COLOR", "1")
        .output()
        .unwrap()
}

fn systemd_analyze_verify(c: &Chroot) {
    let root = format!("--root={}", c.root.display());
    let o = Command::new("systemd-analyze")
        .args(["verify", &root, "/lib/systemd/system/provisioner.service"])
        .output()
        .expect("systemd-analyze (Debian package systemd; tests/packages.txt)");
    // verify reports unknown keys and bad syscall groups as warnings with exit 0,
    // so any output at all is a failure.
    assert!(
        o.status.success() && o.stdout.is_empty() && o.stderr.is_empty(),
        "systemd-analyze verify: {}",
        text(&o)
    );
    let o = Command::new("systemd-analyze")
        .args([
            "security",
            "--offline=yes",
            &root,
            "--no-pager",
            "provisioner.service",
        ])
        .output()
        .unwrap();
    let all = format!("{}{}", stdout(&o), String::from_utf8_lossy(&o.stderr));
    if let Some(l) = all.lines().find(|l| l.contains("Overall exposure level")) {
        println!("systemd-analyze security: {}", l.trim());
    }
}

fn seed_file(dir: &Path) -> PathBuf {
    let inv = MemInventory::new();
    let m = Machine::discovered(SEEDED_MAC.parse().unwrap(), time::OffsetDateTime::UNIX_EPOCH);
    inv.put(&m).unwrap();
    let p = dir.join("seed.json");
    std::fs::write(&p, serde_json::to_vec(&inv.export().unwrap()).unwrap()).unwrap();
    p
}

#[test]
fn package_installs_self_tests_upgrades_and_purges_in_debian_12() {
    if !nix::unistd::Uid::effective().is_root() {
        println!(
            "SKIPPED: package_installs_self_tests_upgrades_and_purges_in_debian_12 needs root (chroot, mount); CI runs as root"
        );
        return;
    }
    let t0 = Instant::now();
    let work = tempfile::tempdir_in("/var/tmp").unwrap();
    let upstream = env!("CARGO_PKG_VERSION");
    let (v1, v2) = (format!("{upstream}-1"), format!("{upstream}-2"));
    let deb1 = build_deb(&v1, work.path());
    let deb2 = build_deb(&v2, work.path());
    println!("packages built in {:?}", t0.elapsed());

    let mut c = Chroot::new();
    println!("bookworm root ready in {:?}", t0.elapsed());
    // The cached root's package lists may predate a Debian point release.
    c.ok(&["apt-get", "update", "-q"]);
    // The LXC template ships systemd; with it, postinst enables the unit.
    c.ok(&[
        "apt-get",
        "install",
        "-y",
        "-q",
        "--no-install-recommends",
        "systemd",
    ]);

    // dpkg -i leaves the package unconfigured (ipxe missing); apt-get -f resolves
    // it from Debian's repository.
    c.copy_in(&deb1, "/tmp/p1.deb");
    let o = c.run(&["dpkg", "-i", "/tmp/p1.deb"]);
    assert!(!o.status.success() && text(&o).contains("ipxe"), "{}", text(&o));
    c.ok(&["apt-get", "-f", "install", "-y", "-q"]);
    println!("installed with dependencies in {:?}", t0.elapsed());
    let status = |pkg: &str| c.ok(&["dpkg-query", "-W", "-f=${Status} ${Version}", pkg]);
    assert_eq!(status("provisioner"), format!("install ok installed {v1}"));
    assert!(status("ipxe").starts_with("install ok installed"));
    assert!(status("ca-certificates").starts_with("install ok installed"));
    let user = c.ok(&["getent", "passwd", "provisioner"]);
    assert!(user.contains(":/var/lib/provisioner:/usr/sbin/nologin"), "{user}");
    assert_eq!(
        c.ok(&["stat", "-c", "%a %U %G", "/var/lib/provisioner"]).trim(),
        "700 provisioner provisioner"
    );
    assert!(
        c.path("/etc/systemd/system/multi-user.target.wants/provisioner.service")
            .is_symlink(),
        "postinst did not enable the unit"
    );
    // Completions and man pages land where the shells and man look for them.
    for f in [
        "/usr/share/bash-completion/completions/provisioner",
        "/usr/share/zsh/vendor-completions/_provisioner",
        "/usr/share/fish/vendor_completions.d/provisioner.fish",
        "/usr/share/man/man1/provisioner.1.gz",
    ] {
        assert!(c.path(f).is_file(), "{f} not installed");
    }
    let conffiles = c.ok(&["dpkg-query", "-W", "-f=${Conffiles}", "provisioner"]);
    for f in [
        "/etc/provisioner/provisioner.yaml",
        "/etc/provisioner/infra/genmachine.yaml",
    ] {
        assert!(conffiles.contains(f), "{f} not a conffile: {conffiles}");
    }
    // `machines adopt` writes infra/ as the service user (the unit's ReadWritePaths).
    for f in ["/etc/provisioner/infra", "/etc/provisioner/infra/genmachine.yaml"] {
        let owner = c.ok(&["stat", "-c", "%U %G", f]);
        assert_eq!(owner.trim(), "provisioner provisioner", "{f}");
    }

    // The installed configuration and data pass `check`, the GitOps tree included;
    // every path the packaged configuration names is absolute (the service's working
    // directory is /).
    let check = c.ok(&["provisioner", "check"]);
    assert!(check.starts_with("ok: ") && check.contains("image(s)"), "{check}");
    assert!(check.contains("ok: gitops: 22 ArgoCD object(s)"), "{check}");
    let packaged = std::fs::read_to_string(c.path("/etc/provisioner/provisioner.yaml")).unwrap();
    for line in packaged.lines().filter(|l| !l.starts_with('#')) {
        if let Some((key, value)) = line.split_once(": ")
            && (key.ends_with("_dir") || key == "tftp_root")
        {
            assert!(value.starts_with('/'), "{key}: {value} is relative");
        }
    }
    assert!(
        packaged.contains("gitops_dir: /etc/provisioner/gitops"),
        "{packaged}"
    );
    assert!(c.path("/etc/provisioner/gitops/settings.yaml").is_file());

    // The unit, as installed, and with the LXC fallback drop-in.
    systemd_analyze_verify(&c);
    let dropin = c.path("/etc/systemd/system/provisioner.service.d");
    std::fs::create_dir_all(&dropin).unwrap();
    std::fs::copy(
        c.path("/usr/share/provisioner/systemd/no-mountns.conf"),
        dropin.join("no-mountns.conf"),
    )
    .unwrap();
    systemd_analyze_verify(&c);
    std::fs::remove_dir_all(&dropin).unwrap();

    // The self-test as the service runs: the system user, only the unit's caps.
    let unit = std::fs::read_to_string(c.path("/lib/systemd/system/provisioner.service")).unwrap();
    let caps = unit_caps(&unit);
    assert_eq!(caps, "+net_bind_service");
    let o = dry_run_as_service_user(&c, &caps);
    assert!(o.status.success(), "dry-run: {}", text(&o));
    let report = stdout(&o);
    for want in [
        "dry-run: ok",
        "listener: HTTP boot (tcp) 0.0.0.0:80",
        "listener: TFTP (udp) 0.0.0.0:69",
        "listener: API (tcp) 127.0.0.1:9090",
        "inventory: 0 machine(s) in /var/lib/provisioner",
        "ipxe: /usr/lib/ipxe/undionly.kpxe present",
        "ipxe: /usr/lib/ipxe/snponly.efi present",
    ] {
        assert!(report.contains(want), "dry-run report lacks {want:?}:\n{report}");
    }
    println!("dry-run report:\n{report}");
    // Control: without CAP_NET_BIND_SERVICE the same start fails on the low ports.
    let o = dry_run_as_service_user(&c, "");
    assert!(
        !o.status.success() && text(&o).contains("Permission denied"),
        "dry-run without capabilities: {}",
        text(&o)
    );
    assert_eq!(
        c.ok(&["stat", "-c", "%a %U", "/var/lib/provisioner/inventory.redb"])
            .trim(),
        "600 provisioner"
    );

    // Seed the inventory (as root, like an operator), edit the config locally, then
    // upgrade to a higher version.
    c.copy_in(&seed_file(work.path()), "/tmp/seed.json");
    assert!(
        c.ok(&["provisioner", "import", "/tmp/seed.json"])
            .contains("imported 1 machine")
    );
    assert_eq!(
        c.ok(&["stat", "-c", "%a %U", "/var/lib/provisioner/inventory.redb"])
            .trim(),
        "600 provisioner",
        "import as root must hand the store back to the service user"
    );
    // A cached image and a secret blob must survive the upgrade too.
    let kept = [
        "/var/lib/provisioner/images/img/vmlinuz",
        "/var/lib/provisioner/secrets/talos.age",
    ];
    for f in kept {
        std::fs::create_dir_all(c.path(f).parent().unwrap()).unwrap();
        std::fs::write(c.path(f), f.as_bytes()).unwrap();
    }
    let cfg = c.path("/etc/provisioner/provisioner.yaml");
    // Local edits kept across upgrades: faster bootstrap polling, and the homelab's
    // Talos nodes (192.168.1.x in the packaged infra/) re-addressed onto the booted
    // container's loopback, where this test runs fakes: tests never dial 192.168.x.
    let edited = std::fs::read_to_string(&cfg).unwrap()
        + "# local edit kept across upgrades\nbootstrap:\n  poll_ms: 200\n  retry_min_secs: 1\n";
    std::fs::write(&cfg, &edited).unwrap();
    let infra = c.path("/etc/provisioner/infra/genmachine.yaml");
    let readdressed = deploy::handoff::readdress_infra(&std::fs::read_to_string(&infra).unwrap());
    assert!(!readdressed.contains("192.168."), "{readdressed}");
    std::fs::write(&infra, &readdressed).unwrap();

    c.copy_in(&deb2, "/tmp/p2.deb");
    let up = c.ok(&["dpkg", "-i", "/tmp/p2.deb"]);
    assert_eq!(status("provisioner"), format!("install ok installed {v2}"));
    assert_eq!(
        std::fs::read_to_string(&cfg).unwrap(),
        edited,
        "conffile edit lost"
    );
    assert_eq!(
        std::fs::read_to_string(&infra).unwrap(),
        readdressed,
        "infra edit lost"
    );
    for f in kept {
        assert_eq!(
            std::fs::read(c.path(f)).unwrap(),
            f.as_bytes(),
            "{f} lost on upgrade"
        );
    }
    let export = c.ok(&["provisioner", "export"]);
    assert!(
        export.contains(SEEDED_MAC),
        "inventory lost on upgrade:\n{export}"
    );
    let pre = format!("/var/lib/provisioner/backups/pre-upgrade-{v1}.tar");
    assert!(c.path(&pre).is_file(), "no pre-upgrade backup; dpkg said:\n{up}");
    // The pre-upgrade backup restores into an empty state directory.
    let o = c
        .cmd(&["provisioner", "restore", &pre])
        .env("PROVISIONER_STATE_DIR", "/root/restored")
        .output()
        .unwrap();
    assert!(
        // The seeded blob only: the packaged infra/ carries placeholder MACs, so its
        // clusters are not armed and no start created secrets for them. The local
        // pre-upgrade copy is plaintext (no backup.recipients configured).
        o.status.success() && stdout(&o).contains("1 machine(s), 1 secret file(s)"),
        "{}",
        text(&o)
    );
    assert_eq!(
        std::fs::read(c.path("/root/restored/secrets/talos.age")).unwrap(),
        kept[1].as_bytes()
    );
    println!("upgraded in {:?}", t0.elapsed());
    // The seeded blob was never encrypted with any key; the service refuses a secrets
    // directory holding ciphertexts without their key, so it goes before the service
    // needs its secret store (it has proven its point: it survived the upgrade).
    std::fs::remove_file(c.path(kept[1])).unwrap();

    // What the hand-off needs on a real site too: the pinned ArgoCD manifest in the
    // cache (imported as root, as an operator would), and the OS CA of the bundle
    // the service generated for genmachine, for the fake nodes' certificates.
    let argocd = common::fixture("argocd/install-v3.5.1.yaml");
    let os_ca = argocd.as_ref().map(|f| {
        c.copy_in(f, "/tmp/install-v3.5.1.yaml");
        c.ok(&[
            "provisioner",
            "images",
            "import",
            "argocd",
            "/tmp/install-v3.5.1.yaml",
        ]);
        // The packaged infra/ carried placeholder MACs, so no start so far armed
        // genmachine; with the operator's MACs in place, one start as the service
        // user generates its bundle (as the real unit's first start would).
        let o = dry_run_as_service_user(&c, &caps);
        assert!(o.status.success(), "{}", text(&o));
        common::pki::OsCa::from_bundle(&service_bundle(&c, work.path()))
    });
    c.without_proc(|c| runs_under_systemd(c, work.path(), os_ca));
    println!("ran under systemd in {:?}", t0.elapsed());

    // Purge removes the state and the configuration.
    c.ok(&["dpkg", "--purge", "provisioner"]);
    for gone in ["/var/lib/provisioner", "/etc/provisioner", "/usr/bin/provisioner"] {
        assert!(!c.path(gone).exists(), "{gone} survived purge");
    }
    println!("package lifecycle done in {:?}", t0.elapsed());
}

/// Boots the root with systemd and checks the installed service for real. The test
/// shortens the watchdog to 3 s with a drop-in so a hang is detected quickly.
fn runs_under_systemd(c: &Chroot, work: &Path, os_ca: Option<common::pki::OsCa>) {
    const UNIT: &str = "provisioner.service";
    let dropin = c.path("/etc/systemd/system/provisioner.service.d");
    std::fs::create_dir_all(&dropin).unwrap();
    std::fs::write(
        dropin.join("test-watchdog.conf"),
        "[Service]\nWatchdogSec=3s\nRestartSec=1s\n",
    )
    .unwrap();
    {
        let b = Booted::start(&c.root, &work.join("nspawn.log"));
        // Type=notify: "active" means READY=1 arrived after every listener was bound.
        assert_eq!(
            b.prop(UNIT, "ActiveState"),
            "active",
            "{}",
            text(&b.exec(&["journalctl", "-u", UNIT, "--no-pager"]))
        );
        assert!(b.prop(UNIT, "StatusText").starts_with("serving http://"));
        assert_eq!(b.prop(UNIT, "NRestarts"), "0");
        let pid = b.prop(UNIT, "MainPID");
        let status = stdout(&b.exec(&["cat", &format!("/proc/{pid}/status")]));
        let field = |k: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(k))
                .map(|v| v.trim().to_string())
                .unwrap_or_default()
        };
        // Only CAP_NET_BIND_SERVICE (bit 10), in every set; seccomp filter mode.
        for set in ["CapEff:", "CapPrm:", "CapBnd:", "CapAmb:"] {
            assert_eq!(field(set), "0000000000000400", "{set}\n{status}");
        }
        assert_eq!(field("Seccomp:"), "2");
        assert_eq!(field("NoNewPrivs:"), "1");
        // The API is HTTPS with a token: one made by root with the packaged CLI,
        // which must hand the token store to the service user.
        let o = b.exec(&[
            "provisioner",
            "token",
            "create",
            "--role",
            "read-only",
            "--config",
            "/etc/provisioner/provisioner.yaml",
        ]);
        assert!(o.status.success(), "{}", text(&o));
        let header = work.join("api-auth-header");
        std::fs::write(&header, format!("Authorization: Bearer {}\n", stdout(&o).trim())).unwrap();
        let ca = c.path("/var/lib/provisioner/tls/ca.crt");
        let api = |b: &Booted, what: &str| {
            let o = b.in_netns(&[
                "curl",
                "-s",
                "-m",
                "5",
                "--cacert",
                ca.to_str().unwrap(),
                "-H",
                &format!("@{}", header.display()),
                &format!("https://127.0.0.1:9090/api/v1/{what}"),
            ]);
            stdout(&o)
        };
        assert!(
            api(&b, "machines").contains(SEEDED_MAC),
            "API does not serve the seeded machine"
        );
        adopts_inside_the_sandbox(c, &b, &ca);
        match os_ca {
            Some(ca) => hands_off(c, &b, ca, &api),
            None => println!("SKIPPED: the installed service's hand-off (no ArgoCD fixture)"),
        }

        // A hung process (SIGSTOP) misses its pings: systemd kills and restarts it.
        let o = b.exec(&["systemctl", "kill", "--kill-whom=main", "--signal=SIGSTOP", UNIT]);
        assert!(o.status.success(), "{}", text(&o));
        b.wait_for("a watchdog restart", 30, |b| {
            b.prop(UNIT, "NRestarts") == "1" && b.prop(UNIT, "ActiveState") == "active"
        });
        assert_ne!(b.prop(UNIT, "MainPID"), pid);
        let journal = stdout(&b.exec(&["journalctl", "-u", UNIT, "--no-pager"]));
        assert!(journal.contains("Watchdog timeout"), "{journal}");
        b.wait_for("the API after the restart", 10, |b| {
            api(b, "machines").contains(SEEDED_MAC)
        });
    }
    std::fs::remove_dir_all(&dropin).unwrap();
}

/// The secrets bundle the installed service generated for genmachine, read from
/// its store in the root (the service is not running).
/// `machines adopt` from the sandboxed service writes `/etc/provisioner/infra`
/// (ReadWritePaths, owned by the service user): a BeeLink node (still placeholders
/// elsewhere, so nothing is armed or dialled) gains exactly its MAC.
fn adopts_inside_the_sandbox(c: &Chroot, b: &Booted, ca: &Path) {
    let o = b.exec(&[
        "provisioner",
        "token",
        "create",
        "--role",
        "admin",
        "--config",
        "/etc/provisioner/provisioner.yaml",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let file = c.path("/etc/provisioner/infra/beelink.yaml");
    let before = std::fs::read_to_string(&file).unwrap();
    let o = b.in_netns(&[
        "curl",
        "-s",
        "-m",
        "10",
        "--cacert",
        ca.to_str().unwrap(),
        "-H",
        &format!("Authorization: Bearer {}", stdout(&o).trim()),
        "-H",
        "content-type: application/json",
        "-d",
        r#"{"node":"beelink-1"}"#,
        "https://127.0.0.1:9090/api/v1/machines/52:54:00:00:02:01/adopt",
    ]);
    let answer = stdout(&o);
    assert!(answer.contains("\"reload_error\":null"), "{answer}");
    let after = std::fs::read_to_string(&file).unwrap();
    assert_eq!(
        after,
        before.replacen("mac: \"02:00:00:00:02:01\"", "mac: \"52:54:00:00:02:01\"", 1),
        "{answer}"
    );
}

fn service_bundle(c: &Chroot, work: &Path) -> provisioner_core::talos::SecretsBundle {
    let cfg = work.join("read-secrets.yaml");
    std::fs::write(
        &cfg,
        format!("state_dir: {}\n", c.path("/var/lib/provisioner").display()),
    )
    .unwrap();
    let config =
        provisioner::config::Config::load(Some(&cfg), Default::default(), &Default::default()).unwrap();
    provisioner::cmd::talos::open_secrets(&config)
        .unwrap()
        .get("genmachine")
        .unwrap()
        .expect("the service generated genmachine's bundle")
}

/// The installed service, bootstrap enabled, takes genmachine (fakes in the
/// container's network namespace) to HandedOff: Bootstrap once, the ArgoCD install
/// from the cache, the root Application of the packaged gitops/, and Argo CD's report
/// of every Application Synced and Healthy.
fn hands_off(c: &Chroot, b: &Booted, os_ca: common::pki::OsCa, api: &dyn Fn(&Booted, &str) -> String) {
    let t0 = Instant::now();
    let fakes = deploy::handoff::start(b.leader(), os_ca, &c.path("/etc/provisioner/gitops"));
    let deadline = Instant::now() + std::time::Duration::from_secs(120);
    let last = loop {
        let last = api(b, "clusters/genmachine");
        let v: serde_json::Value = serde_json::from_str(&last).unwrap_or_default();
        if v["bootstrap"]["phase"] == "done" {
            break last;
        }
        if v["bootstrap"]["phase"] == "failed" || Instant::now() > deadline {
            let journal = stdout(&b.exec(&[
                "journalctl",
                "-u",
                "provisioner.service",
                "--no-pager",
                "-n",
                "60",
            ]));
            panic!(
                "genmachine not HandedOff: {last}\nfake apid calls: {}\nfake kube requests: {:?}\n{journal}",
                fakes.cluster.calls().len(),
                fakes
                    .kube
                    .journal()
                    .requests
                    .iter()
                    .rev()
                    .take(10)
                    .collect::<Vec<_>>()
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    println!("installed service: fakes up → HandedOff in {:?}", t0.elapsed());
    let v: serde_json::Value = serde_json::from_str(&last).unwrap();
    let detail = v["bootstrap"]["last_event"]["detail"].as_str().unwrap_or("");
    assert!(detail.contains("Synced and Healthy"), "{last}");
    assert_eq!(fakes.cluster.count("Bootstrap", tonic::Code::Ok), 1);
    let j = fakes.kube.journal();
    assert_eq!(j.applies.last().map(|a| a.name.as_str()), Some("root"));
    assert!(
        j.observed_ready
            .contains_key("Application/argocd/cilium-genmachine")
    );
}
