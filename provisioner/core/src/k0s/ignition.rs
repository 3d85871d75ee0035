//! Ignition configs (spec 3.3.0, JSON) for the two-stage Flatcar install.
//!
//! Stage 1 runs in RAM after a PXE boot with `flatcar.first_boot=1
//! ignition.config.url=…`: it writes stage 2 to `/opt/provisioner/stage2.ign` and a
//! oneshot unit runs `flatcar-install -d <disk> -b <appliance mirror> -V <version> -i
//! stage2.ign` (flatcar-init `bin/flatcar-install`: `-i` copies the file to the OEM
//! partition as `config.ign`, which Ignition runs on the first disk boot), POSTs the
//! `DiskInstalled` callback and reboots; on failure it reboots after a minute so the
//! next PXE boot retries with fresh tokens. Stage 2 writes k0s, its config, PKI and
//! manifests, turns Flatcar's reboot strategy off and installs k0s from a oneshot
//! unit that POSTs `K0sInstalled` (k0s-flatcar.md §4.4, §4.5).
//!
//! Every file's contents are a `data:` URL (RFC 2397, base64) except `/opt/bin/k0s`,
//! fetched from the appliance mirror and pinned with `verification.hash`.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

/// The spec version generated; Debian's `ignition-validate` 2.14 accepts it.
pub const SPEC_VERSION: &str = "3.3.0";
/// Where stage 1 writes stage 2 on the RAM system.
pub const STAGE2_PATH: &str = "/opt/provisioner/stage2.ign";
/// k0s binary on Flatcar (`/usr` is read-only; k0sctl's Flatcar module uses it too).
pub const K0S_BIN: &str = "/opt/bin/k0s";
/// Worker join token file.
pub const TOKEN_FILE: &str = "/etc/k0s/join-token";
/// Manifest stack the controller applies at start (k0s `docs/manifests.md`).
pub const MANIFEST_DIR: &str = "/var/lib/k0s/manifests/provisioner";
/// k0s's PKI directory (k0s `docs/custom-ca.md`).
pub const PKI_DIR: &str = "/var/lib/k0s/pki";

/// A whole Ignition config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ignition {
    /// `{version}`.
    pub ignition: Meta,
    /// Files.
    #[serde(default)]
    pub storage: Storage,
    /// Units.
    #[serde(default)]
    pub systemd: Systemd,
}

/// `ignition`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    /// Spec version.
    pub version: String,
}

/// `storage`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Storage {
    /// Files to write.
    #[serde(default)]
    pub files: Vec<File>,
}

/// `storage.files[]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct File {
    /// Absolute path.
    pub path: String,
    /// Permission bits (decimal in JSON: 420 = 0644, 384 = 0600, 493 = 0755).
    pub mode: u32,
    /// Replace a file that is already there.
    #[serde(default)]
    pub overwrite: bool,
    /// Where the contents come from.
    pub contents: Contents,
}

/// `storage.files[].contents`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contents {
    /// `data:` or `http(s):` URL.
    pub source: String,
    /// Pins remote contents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification: Option<Verification>,
}

/// `verification`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verification {
    /// `sha256-<hex>` or `sha512-<hex>`.
    pub hash: String,
}

/// `systemd`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Systemd {
    /// Units.
    #[serde(default)]
    pub units: Vec<Unit>,
}

/// `systemd.units[]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unit {
    /// Unit name.
    pub name: String,
    /// Enable it (its `[Install]` section).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Mask it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mask: Option<bool>,
    /// Unit file text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contents: Option<String>,
}

impl Ignition {
    fn new() -> Self {
        Self {
            ignition: Meta {
                version: SPEC_VERSION.into(),
            },
            storage: Storage::default(),
            systemd: Systemd::default(),
        }
    }

    fn file(&mut self, path: &str, mode: u32, bytes: &[u8]) {
        self.storage.files.push(File {
            path: path.into(),
            mode,
            overwrite: true,
            contents: Contents {
                source: data_url(bytes),
                verification: None,
            },
        });
    }

    fn unit(&mut self, name: &str, contents: String) {
        self.systemd.units.push(Unit {
            name: name.into(),
            enabled: Some(true),
            mask: None,
            contents: Some(contents),
        });
    }

    /// As compact JSON, the form served and embedded.
    pub fn to_json(&self) -> String {
        // Only strings, numbers and booleans: serialisation cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Every file's contents, decoded (`data:` URLs only); for tests and checks.
    pub fn data_file(&self, path: &str) -> Option<Vec<u8>> {
        let f = self.storage.files.iter().find(|f| f.path == path)?;
        decode_data_url(&f.contents.source)
    }
}

/// `data:;base64,<…>` (RFC 2397).
pub fn data_url(bytes: &[u8]) -> String {
    format!("data:;base64,{}", STANDARD.encode(bytes))
}

/// The inverse of [`data_url`] for base64 data URLs.
pub fn decode_data_url(url: &str) -> Option<Vec<u8>> {
    let rest = url.strip_prefix("data:")?;
    let (meta, data) = rest.split_once(',')?;
    if !meta.ends_with(";base64") {
        return None;
    }
    STANDARD.decode(data).ok()
}

/// Percent-encodes `+` (k0s tags contain it; a literal `+` is fine in a path, but
/// some servers read it as a space, k0s `docs/verifying-signs.md`).
pub fn url_path_segment(s: &str) -> String {
    s.replace('+', "%2B")
}

/// A POST that retries through a flaky network, for callback units. `--retry-all-errors`
/// also retries connection refusals while the appliance restarts.
fn curl_post(url: &str) -> String {
    format!("/usr/bin/curl -fsS --retry 10 --retry-delay 6 --retry-all-errors -X POST {url}")
}

/// What stage 1 needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage1<'a> {
    /// `http://<appliance>/mirror/flatcar` (`flatcar-install -b`).
    pub mirror_base: &'a str,
    /// Flatcar version (`-V`).
    pub flatcar_version: &'a str,
    /// Target disk (`-d`), or `None` for `-s`.
    pub install_disk: Option<&'a str>,
    /// One-time `DiskInstalled` callback URL.
    pub callback_url: &'a str,
    /// The stage-2 config to install.
    pub stage2: &'a Ignition,
}

/// Stage 1: install Flatcar to disk with stage 2 and report.
pub fn stage1(s: &Stage1<'_>) -> Ignition {
    let mut ign = Ignition::new();
    ign.file(STAGE2_PATH, 0o600, s.stage2.to_json().as_bytes());
    let target = match s.install_disk {
        Some(d) => format!("-d {d}"),
        // Major 7 = loop devices: never the install target.
        None => "-s -e 7".to_string(),
    };
    ign.unit(
        "provisioner-install.service",
        format!(
            "[Unit]\n\
             Description=Install Flatcar {version} to disk from the provisioner mirror\n\
             Wants=network-online.target\n\
             After=network-online.target\n\
             OnFailure=provisioner-install-retry.service\n\
             [Service]\n\
             Type=oneshot\n\
             ExecStart=/usr/bin/flatcar-install {target} -b {base} -V {version} -i {STAGE2_PATH}\n\
             ExecStartPost={post}\n\
             ExecStartPost=/usr/bin/systemctl reboot\n\
             [Install]\n\
             WantedBy=multi-user.target\n",
            version = s.flatcar_version,
            base = s.mirror_base,
            post = curl_post(s.callback_url),
        ),
    );
    ign.systemd.units.push(Unit {
        name: "provisioner-install-retry.service".into(),
        enabled: None,
        mask: None,
        contents: Some(
            "[Unit]\n\
             Description=Reboot into PXE to retry a failed Flatcar install\n\
             [Service]\n\
             Type=oneshot\n\
             ExecStart=/usr/bin/sleep 60\n\
             ExecStart=/usr/bin/systemctl reboot\n"
                .into(),
        ),
    });
    ign
}

/// The controller's pre-placed PKI (PEM), k0s `docs/custom-ca.md`.
#[derive(Clone, PartialEq, Eq)]
pub struct ControllerPki<'a> {
    /// `ca.crt`.
    pub ca_crt: &'a str,
    /// `ca.key`.
    pub ca_key: &'a str,
    /// `sa.key`.
    pub sa_key: &'a str,
    /// `sa.pub`.
    pub sa_pub: &'a str,
}

impl std::fmt::Debug for ControllerPki<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ControllerPki(<redacted>)")
    }
}

/// Which k0s role stage 2 installs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role<'a> {
    /// `k0s install controller --enable-worker --no-taints`.
    Controller {
        /// `/etc/k0s/k0s.yaml`.
        k0s_yaml: &'a str,
        /// PKI files.
        pki: ControllerPki<'a>,
        /// `(file name, YAML)` under [`MANIFEST_DIR`], e.g. the bootstrap-token Secrets.
        manifests: Vec<(String, String)>,
    },
    /// `k0s install worker --token-file`.
    Worker {
        /// The encoded join token.
        join_token: &'a str,
    },
}

/// What stage 2 needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage2<'a> {
    /// Node name (`/etc/hostname`).
    pub hostname: &'a str,
    /// URL of the k0s binary on the appliance mirror.
    pub k0s_url: &'a str,
    /// Its SHA-256 (hex), as recorded in the image cache.
    pub k0s_sha256: &'a str,
    /// Worker profile (`--profile`).
    pub worker_profile: &'a str,
    /// One-time `K0sInstalled` callback URL.
    pub callback_url: &'a str,
    /// The role.
    pub role: Role<'a>,
}

/// The install command line for a role (also what tests check for `--single`).
pub fn install_command(role: &Role<'_>, worker_profile: &str) -> String {
    match role {
        Role::Controller { .. } => format!(
            "{K0S_BIN} install controller --enable-worker --no-taints --profile {worker_profile} \
             -c /etc/k0s/k0s.yaml"
        ),
        Role::Worker { .. } => {
            format!("{K0S_BIN} install worker --token-file {TOKEN_FILE} --profile {worker_profile}")
        }
    }
}

/// Stage 2: k0s and everything it needs, then install, start and report.
pub fn stage2(s: &Stage2<'_>) -> Ignition {
    let mut ign = Ignition::new();
    ign.storage.files.push(File {
        path: K0S_BIN.into(),
        mode: 0o755,
        overwrite: true,
        contents: Contents {
            source: s.k0s_url.into(),
            verification: Some(Verification {
                hash: format!("sha256-{}", s.k0s_sha256.to_ascii_lowercase()),
            }),
        },
    });
    ign.file("/etc/hostname", 0o644, format!("{}\n", s.hostname).as_bytes());
    // Flatcar update strategy off: no locksmithd-driven reboots under a running
    // cluster (flatcar-docs update-strategies.md); locksmithd masked as well.
    ign.file("/etc/flatcar/update.conf", 0o644, b"REBOOT_STRATEGY=off\n");
    ign.systemd.units.push(Unit {
        name: "locksmithd.service".into(),
        enabled: None,
        mask: Some(true),
        contents: None,
    });
    let service = match &s.role {
        Role::Controller {
            k0s_yaml,
            pki,
            manifests,
        } => {
            ign.file("/etc/k0s/k0s.yaml", 0o600, k0s_yaml.as_bytes());
            ign.file(&format!("{PKI_DIR}/ca.crt"), 0o644, pki.ca_crt.as_bytes());
            ign.file(&format!("{PKI_DIR}/ca.key"), 0o600, pki.ca_key.as_bytes());
            ign.file(&format!("{PKI_DIR}/sa.key"), 0o600, pki.sa_key.as_bytes());
            ign.file(&format!("{PKI_DIR}/sa.pub"), 0o644, pki.sa_pub.as_bytes());
            for (name, yaml) in manifests {
                ign.file(&format!("{MANIFEST_DIR}/{name}"), 0o600, yaml.as_bytes());
            }
            "k0scontroller.service"
        }
        Role::Worker { join_token } => {
            ign.file(TOKEN_FILE, 0o600, join_token.as_bytes());
            "k0sworker.service"
        }
    };
    ign.unit(
        "provisioner-k0s-install.service",
        format!(
            "[Unit]\n\
             Description=Install and start k0s (provisioner)\n\
             Wants=network-online.target\n\
             After=network-online.target\n\
             ConditionPathExists=!/etc/systemd/system/{service}\n\
             [Service]\n\
             Type=oneshot\n\
             RemainAfterExit=yes\n\
             ExecStart={install}\n\
             ExecStart={K0S_BIN} start\n\
             ExecStartPost={post}\n\
             [Install]\n\
             WantedBy=multi-user.target\n",
            install = install_command(&s.role, s.worker_profile),
            post = curl_post(s.callback_url),
        ),
    );
    ign
}
