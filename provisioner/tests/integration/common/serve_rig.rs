//! `provisioner serve` against fakes on loopback, shared by the hand-off tests: an
//! infra/ Talos cluster whose control-plane nodes are fake apids on 127.0.0.11-13
//! (certificates from the OS CA of the cluster's own secrets bundle, on the
//! configured `talos.api_port`), a fake Kubernetes API behind the kubeconfig the
//! nodes hand out, with a scripted Argo CD controller over this repository's
//! gitops/, and the CLI calls the tests make.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use provisioner::testing::fake_argo::FakeArgo;

use super::daemon::{BIN, Daemon, loopback_boot, run, write_config};
use super::pki::OsCa;
use super::talos_lab::TalosLab;
use provisioner::testing::fake_kube::FakeKube;

pub const CLUSTER: &str = "genmachine";

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// infra/genmachine.yaml re-addressed onto loopback; the nodes' MACs are the common
/// catalog's two group MACs plus one unknown to the inventory.
pub fn write_infra(dir: &Path) {
    std::fs::create_dir_all(dir.join("infra")).unwrap();
    std::fs::write(
        dir.join(format!("infra/{CLUSTER}.yaml")),
        format!(
            "distribution: talos\nclusterName: {CLUSTER}\ntalosVersion: v1.11.6\nkubernetesVersion: v1.34.1\n\
             endpoint: https://127.0.0.11:6443\nnodes:\n\
             \x20 - {{hostname: talos-1, ipAddress: 127.0.0.11, controlPlane: true, installDisk: /dev/vda, mac: '{}'}}\n\
             \x20 - {{hostname: talos-2, ipAddress: 127.0.0.12, controlPlane: true, installDisk: /dev/vda, mac: '{}'}}\n\
             \x20 - {{hostname: talos-3, ipAddress: 127.0.0.13, controlPlane: true, installDisk: /dev/vda, mac: '52:54:00:00:01:03'}}\n",
            super::BIOS_MAC,
            super::EFI_MAC
        ),
    )
    .unwrap();
}

/// `GET /api/v1/clusters/genmachine` → its `bootstrap` object.
pub fn bootstrap(d: &Daemon, token: &str) -> serde_json::Value {
    let (st, body) = d.api_get(&format!("/api/v1/clusters/{CLUSTER}"), Some(token));
    assert_eq!(st, 200, "{body}");
    serde_json::from_str::<serde_json::Value>(&body).unwrap()["bootstrap"].clone()
}

pub fn wait_for_log(d: &Daemon, needle: &str, limit: Duration) {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if std::fs::read_to_string(&d.log)
            .unwrap_or_default()
            .contains(needle)
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!(
        "no {needle:?} in the daemon log:\n{}",
        std::fs::read_to_string(&d.log).unwrap_or_default()
    );
}

pub fn machine_state(d: &Daemon, token: &str, mac: &str) -> String {
    let (st, body) = d.api_get(&format!("/api/v1/machines/{mac}"), Some(token));
    assert_eq!(st, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["state"].as_str().unwrap_or_default().to_string()
}

/// The site (catalog, infra/, config, the cluster's bundle in the daemon's secret
/// store), the fake nodes and the fake Kubernetes API.
pub struct Rig {
    /// The scripted Argo CD controller.
    pub argo: Arc<FakeArgo>,
    pub cfg: PathBuf,
    pub fixture: PathBuf,
    pub kube: FakeKube,
    pub lab: TalosLab,
    /// Runs the fakes' tasks.
    pub _rt: tokio::runtime::Runtime,
    pub tmp: tempfile::TempDir,
}

impl Rig {
    /// `hand_off_secs`: the HandOff step's timeout.
    pub fn new(hand_off_secs: u64) -> Option<Self> {
        Self::with_timeouts(&format!(
            "{{ wait_nodes_secs: 120, hand_off_secs: {hand_off_secs} }}"
        ))
    }

    /// `timeouts`: the `bootstrap.timeouts` settings (YAML flow mapping).
    pub fn with_timeouts(timeouts: &str) -> Option<Self> {
        let rig = Self::booting(timeouts)?;
        rig.lab.open();
        Some(rig)
    }

    /// Like [`Self::with_timeouts`], with the Talos nodes still booting until
    /// `lab.open()`.
    pub fn booting(timeouts: &str) -> Option<Self> {
        super::crypto();
        let fixture = super::fixture("argocd/install-v3.5.1.yaml")?;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        super::write_catalog(dir);
        write_infra(dir);
        // A MAC lives in one place: the nodes' groups are derived from infra/, with
        // the catalog's plain profile for this cluster.
        for g in ["bios", "efi"] {
            std::fs::remove_file(dir.join(format!("profiles/groups/{g}.yaml"))).unwrap();
        }
        std::fs::write(
            dir.join("profiles/profiles/lab-nodes.yaml"),
            format!("id: lab-nodes\nimage: test-img\nconfig: plain\ncluster: {CLUSTER}\n"),
        )
        .unwrap();
        // The cluster's secrets bundle, stored where the daemon keeps it, before it
        // starts (it would generate one, but the fake nodes need its OS CA).
        let bundle = provisioner::pki::talos::generate(time::OffsetDateTime::now_utc()).unwrap();
        let rt = tokio::runtime::Runtime::new().unwrap();
        let kube = rt.block_on(FakeKube::start());
        // Argo CD on the cluster: reports the tree's Applications, Synced and
        // Healthy once settled unless a test scripts otherwise (`argo`).
        let argo = Arc::new(FakeArgo::from_tree(&repo().join("gitops"), Duration::from_millis(300)).unwrap());
        kube.set_argo(argo.clone());
        let lab = rt.block_on(TalosLab::booting_on_one_port(
            OsCa::from_bundle(&bundle),
            3,
            &kube.kubeconfig(),
        ));
        let cfg = loopback_boot(&write_config(dir, dir));
        let text = std::fs::read_to_string(&cfg).unwrap()
            + &format!(
                "gitops_dir: {}\ntalos:\n  api_port: {}\nbootstrap:\n  poll_ms: 100\n  attempt_timeout_secs: 2\n  \
                 argocd_wait_secs: 30\n  retry_min_secs: 1\n  timeouts: {}\n",
                repo().join("gitops").display(),
                lab.port(),
                timeouts
            );
        std::fs::write(&cfg, text).unwrap();
        let config =
            provisioner::config::Config::load(Some(&cfg), Default::default(), &Default::default()).unwrap();
        provisioner::cmd::talos::open_secrets(&config)
            .unwrap()
            .put(CLUSTER, &bundle)
            .unwrap();
        Some(Self {
            argo,
            cfg,
            fixture,
            kube,
            lab,
            _rt: rt,
            tmp,
        })
    }

    /// `provisioner images import argocd <fixture>`.
    pub fn import_manifest(&self) {
        let (ok, out, err) = run(&[
            "images",
            "import",
            "argocd",
            self.fixture.to_str().unwrap(),
            "--config",
            self.cfg.to_str().unwrap(),
        ]);
        assert!(ok, "{out}{err}");
    }

    /// Polls the API until the cluster's bootstrap phase is `done`; the time it took.
    pub fn until_done(&self, d: &Daemon, token: &str, from: Instant) -> Duration {
        let end = Instant::now() + Duration::from_secs(120);
        loop {
            let b = bootstrap(d, token);
            if b["phase"] == "done" {
                return from.elapsed();
            }
            assert!(
                b["phase"] != "failed" && Instant::now() < end,
                "{b:#}\nlog:\n{}",
                std::fs::read_to_string(&d.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

pub fn until_hand_off(d: &Daemon, token: &str) {
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        let b = bootstrap(d, token);
        let at_hand_off = b["steps"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["name"] == "HandOff" && s["status"] == "running");
        if at_hand_off {
            return;
        }
        assert!(b["phase"] == "running" && Instant::now() < end, "{b:#}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn status_cli(d: &Daemon, token: &str) -> (bool, String, String) {
    let out = std::process::Command::new(BIN)
        .args(["clusters", "status", CLUSTER, "--config"])
        .arg(&d.config)
        .env("PROVISIONER_API_URL", d.api_url())
        .env("PROVISIONER_API_TOKEN", token)
        .env("PROVISIONER_CLIENT_CONFIG", "/nonexistent")
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

/// `provisioner clusters retry genmachine` with `token`.
pub fn retry_cli(d: &Daemon, token: &str) -> (bool, String, String) {
    let out = std::process::Command::new(BIN)
        .args(["clusters", "retry", CLUSTER, "--config"])
        .arg(&d.config)
        .env("PROVISIONER_API_URL", d.api_url())
        .env("PROVISIONER_API_TOKEN", token)
        .env("PROVISIONER_CLIENT_CONFIG", "/nonexistent")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}
