//! Process settings: one YAML file (unknown fields rejected), embedded defaults so
//! `provisioner serve` runs with no file, then `PROVISIONER_*` environment overrides,
//! then validation. Loading never binds a socket.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};

use provisioner_core::boot::UnknownPolicy;
use provisioner_core::bootloop::LoopGuard;
use serde::{Deserialize, Serialize};

use crate::http::api::tls::ApiTls;
use crate::power::PowerConfig;

/// The inventory's file name in the state directory.
pub const INVENTORY_FILE: &str = "inventory.redb";

/// Why the configuration is unusable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("{file}: cannot read: {source}")]
    Read {
        /// The file.
        file: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file does not parse or has an unknown field.
    #[error("{file}: {message}")]
    Parse {
        /// The file.
        file: PathBuf,
        /// serde's message, with line and column.
        message: String,
    },
    /// An environment variable holds a bad value.
    #[error("environment variable {var}: {message}")]
    Env {
        /// The variable.
        var: &'static str,
        /// Why.
        message: String,
    },
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Human,
    /// One JSON object per line.
    Json,
}

pub use crate::tftp::settings::TftpTuning;

mod advertise;
pub use advertise::{advertised, advertised_on};

/// Boot-loop protection (`provisioner_core::bootloop`): more than `max_installs`
/// install boots within `window_minutes` without reaching `Installed` stops installing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BootLoopConfig {
    /// N; 0 disables the protection.
    pub max_installs: u32,
    /// M.
    pub window_minutes: u32,
}

impl Default for BootLoopConfig {
    fn default() -> Self {
        let g = LoopGuard::default();
        Self {
            max_installs: g.max_installs,
            window_minutes: (g.window_secs / 60) as u32,
        }
    }
}

impl BootLoopConfig {
    /// The core guard.
    pub fn guard(&self) -> LoopGuard {
        LoopGuard {
            max_installs: self.max_installs,
            window_secs: i64::from(self.window_minutes) * 60,
        }
    }
}

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Inventory, secrets and image cache live here.
    pub state_dir: PathBuf,
    /// Interface facing the machines (used to pick `server_ip`; DHCP binds to it).
    pub interface: Option<String>,
    /// Address put in URLs and DHCP snippets; detected from `interface` when unset.
    pub server_ip: Option<IpAddr>,
    /// Plain-HTTP boot path (firmware cannot do TLS). No API routes here.
    pub http_listen: SocketAddr,
    /// Bounds of the boot listener (timeouts, connection caps, per-IP rate, body cap).
    pub http: crate::http::limits::HttpLimits,
    /// Operator API, `/metrics` and `/healthz`.
    pub api_listen: SocketAddr,
    /// TFTP (port 69 for firmware).
    pub tftp_listen: SocketAddr,
    /// Directory of iPXE binaries served over TFTP (Debian's `ipxe` package).
    pub tftp_root: PathBuf,
    /// `profiles/` (groups/ and profiles/).
    pub profiles_dir: PathBuf,
    /// `images/` descriptors.
    pub images_dir: PathBuf,
    /// `infra/` cluster definitions.
    pub infra_dir: PathBuf,
    /// `gitops/`: the app-of-apps tree and `settings.yaml` (repository URL, ArgoCD pin).
    pub gitops_dir: PathBuf,
    /// Image cache; defaults to `<state_dir>/images`.
    pub cache_dir: Option<PathBuf>,
    /// What to do with machines no group matches.
    pub unknown_policy: UnknownPolicy,
    /// Log format.
    pub log_format: LogFormat,
    /// TFTP tuning.
    pub tftp: TftpTuning,
    /// HTTPS for the API listener (generated certificate unless provided).
    pub api_tls: ApiTls,
    /// Boot-loop protection.
    pub boot_loop: BootLoopConfig,
    /// Bounded state: expiry of never-booted `Discovered` records, token TTLs and GC.
    pub housekeeping: crate::ops::housekeeping::Housekeeping,
    /// Minutes a one-time config URL works after the machine's iPXE script was
    /// rendered (default 30; 0 is refused). Later fetches get 403.
    pub config_token_ttl_minutes: NonZeroU32,
    /// Power driver endpoints and Wake-on-LAN.
    pub power: PowerConfig,
    /// Built-in DHCP (`off`, `proxy` or `full`).
    pub dhcp: crate::dhcp::settings::DhcpSettings,
    /// How the appliance reaches Talos nodes' API.
    pub talos: TalosSettings,
    /// Talos cluster bootstrap and GitOps hand-off run by `serve`.
    pub bootstrap: crate::cluster::settings::BootstrapSettings,
    /// The secrets key (age identity) when it lives outside the state directory;
    /// the systemd credential `provisioner.secrets.key` wins over it, and
    /// `<state_dir>/secrets/secrets.key` is the default ([`crate::store::SecretsKey`]).
    pub secrets_key_file: Option<PathBuf>,
    /// The age key of `infra/*.talenv.sops.yaml` ([`Config::apply_credentials`]).
    pub talenv_age_key_file: Option<PathBuf>,
    /// `provisioner backup` settings.
    pub backup: BackupSettings,
    /// Configs only to the machine itself (neighbour entry or lease).
    pub peer_binding: PeerBinding,
    /// `auto | approve`: whether installs wait for an operator (profiles and
    /// clusters may override it).
    pub admission: provisioner_core::release::admission::Admission,
    /// How long an operator's approval lasts (it also ends at `Installed`).
    pub approval_window_minutes: NonZeroU32,
    /// Dashboard: after how long a fetched config without an installed report is stuck.
    pub dashboard: crate::http::api::dashboard::DashboardSettings,
}

/// `backup:` settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackupSettings {
    /// age recipients (`age1…`) every backup is encrypted to, besides `--recipient`.
    pub recipients: Vec<String>,
}

/// `talos:` settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TalosSettings {
    /// The port of every node's Talos API (apid), 50000 unless a test or a port
    /// forward says otherwise.
    pub api_port: u16,
}

impl Default for TalosSettings {
    fn default() -> Self {
        Self {
            api_port: crate::os::talos::api::APID_PORT,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            state_dir: PathBuf::from("/var/lib/provisioner"),
            interface: None,
            server_ip: None,
            http_listen: "0.0.0.0:80".parse().expect("literal"),
            http: Default::default(),
            api_listen: "127.0.0.1:9090".parse().expect("literal"),
            tftp_listen: "0.0.0.0:69".parse().expect("literal"),
            tftp_root: PathBuf::from("/usr/lib/ipxe"),
            profiles_dir: PathBuf::from("profiles"),
            images_dir: PathBuf::from("images"),
            infra_dir: PathBuf::from("infra"),
            gitops_dir: PathBuf::from("gitops"),
            cache_dir: None,
            unknown_policy: UnknownPolicy::Record,
            log_format: LogFormat::Human,
            tftp: TftpTuning::default(),
            api_tls: ApiTls::default(),
            boot_loop: BootLoopConfig::default(),
            housekeeping: Default::default(),
            config_token_ttl_minutes: NonZeroU32::new(30).expect("literal"),
            power: PowerConfig::default(),
            dhcp: Default::default(),
            talos: TalosSettings::default(),
            bootstrap: Default::default(),
            secrets_key_file: None,
            talenv_age_key_file: None,
            backup: BackupSettings::default(),
            peer_binding: PeerBinding::default(),
            admission: Default::default(),
            approval_window_minutes: NonZeroU32::new(60).expect("literal"),
            dashboard: Default::default(),
        }
    }
}

impl Config {
    /// Defaults for trying the appliance without root: ports above 1024 and state
    /// under the user's home. Firmware only speaks TFTP on port 69, so real PXE needs
    /// the privileged defaults (or CAP_NET_BIND_SERVICE).
    pub fn unprivileged(home: Option<&Path>) -> Self {
        let state = home
            .map(|h| h.join(".local/state/provisioner"))
            .unwrap_or_else(|| PathBuf::from(".provisioner-state"));
        Self {
            state_dir: state,
            http_listen: "0.0.0.0:8080".parse().expect("literal"),
            tftp_listen: "0.0.0.0:6969".parse().expect("literal"),
            ..Self::default()
        }
    }

    /// Parses a config file strictly (unknown fields are errors with line and column).
    /// Top-level fields absent from the file keep `base`'s values.
    pub fn from_yaml(file: &Path, text: &str, base: &Self) -> Result<Self, ConfigError> {
        let parse_err = |message: String| ConfigError::Parse {
            file: file.to_path_buf(),
            message,
        };
        let parsed: Self = serde_saphyr::from_str(text).map_err(|e| parse_err(e.to_string()))?;
        let present: serde_json::Value =
            serde_saphyr::from_str(text).map_err(|e| parse_err(e.to_string()))?;
        let mut merged = serde_json::to_value(&parsed).map_err(|e| parse_err(e.to_string()))?;
        let base_v = serde_json::to_value(base).map_err(|e| parse_err(e.to_string()))?;
        if let (Some(m), Some(b)) = (merged.as_object_mut(), base_v.as_object()) {
            for (k, v) in b {
                if present.get(k).is_none() {
                    m.insert(k.clone(), v.clone());
                }
            }
        }
        serde_json::from_value(merged).map_err(|e| parse_err(e.to_string()))
    }

    /// Reads `file` if given, else uses `base`; then applies the environment.
    pub fn load(
        file: Option<&Path>,
        base: Self,
        env: &BTreeMap<String, String>,
    ) -> Result<Self, ConfigError> {
        let mut cfg = match file {
            Some(f) => {
                let text = std::fs::read_to_string(f).map_err(|source| ConfigError::Read {
                    file: f.to_path_buf(),
                    source,
                })?;
                Self::from_yaml(f, &text, &base)?
            }
            None => base,
        };
        cfg.apply_env(env)?;
        Ok(cfg)
    }

    /// `PROVISIONER_<FIELD>` overrides, e.g. `PROVISIONER_HTTP_LISTEN=0.0.0.0:8080`.
    pub fn apply_env(&mut self, env: &BTreeMap<String, String>) -> Result<(), ConfigError> {
        fn parse<T: std::str::FromStr>(var: &'static str, v: &str) -> Result<T, ConfigError>
        where
            T::Err: std::fmt::Display,
        {
            v.parse().map_err(|e: T::Err| ConfigError::Env {
                var,
                message: e.to_string(),
            })
        }
        for (var, value) in env {
            let v = value.as_str();
            match var.as_str() {
                "PROVISIONER_STATE_DIR" => self.state_dir = v.into(),
                "PROVISIONER_INTERFACE" => self.interface = Some(v.into()),
                "PROVISIONER_SERVER_IP" => self.server_ip = Some(parse("PROVISIONER_SERVER_IP", v)?),
                "PROVISIONER_HTTP_LISTEN" => self.http_listen = parse("PROVISIONER_HTTP_LISTEN", v)?,
                "PROVISIONER_API_LISTEN" => self.api_listen = parse("PROVISIONER_API_LISTEN", v)?,
                "PROVISIONER_TFTP_LISTEN" => self.tftp_listen = parse("PROVISIONER_TFTP_LISTEN", v)?,
                "PROVISIONER_TFTP_ROOT" => self.tftp_root = v.into(),
                "PROVISIONER_PROFILES_DIR" => self.profiles_dir = v.into(),
                "PROVISIONER_IMAGES_DIR" => self.images_dir = v.into(),
                "PROVISIONER_INFRA_DIR" => self.infra_dir = v.into(),
                "PROVISIONER_GITOPS_DIR" => self.gitops_dir = v.into(),
                "PROVISIONER_CACHE_DIR" => self.cache_dir = Some(v.into()),
                "PROVISIONER_SECRETS_KEY_FILE" => self.secrets_key_file = Some(v.into()),
                "PROVISIONER_TALENV_AGE_KEY_FILE" => self.talenv_age_key_file = Some(v.into()),
                "PROVISIONER_CONFIG_TOKEN_TTL_MINUTES" => {
                    self.config_token_ttl_minutes = parse("PROVISIONER_CONFIG_TOKEN_TTL_MINUTES", v)?;
                }
                "PROVISIONER_DHCP_MODE" => {
                    self.dhcp.mode =
                        serde_json::from_value(serde_json::Value::String(v.into())).map_err(|_| {
                            ConfigError::Env {
                                var: "PROVISIONER_DHCP_MODE",
                                message: format!("{v:?} is not off, proxy or full"),
                            }
                        })?;
                }
                "PROVISIONER_UNKNOWN_POLICY" => self.unknown_policy = parse("PROVISIONER_UNKNOWN_POLICY", v)?,
                "PROVISIONER_ADMISSION" => self.admission = parse("PROVISIONER_ADMISSION", v)?,
                "PROVISIONER_LOG_FORMAT" => {
                    self.log_format = match v {
                        "human" => LogFormat::Human,
                        "json" => LogFormat::Json,
                        _ => {
                            return Err(ConfigError::Env {
                                var: "PROVISIONER_LOG_FORMAT",
                                message: format!("{v:?} is not human or json"),
                            });
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// [`Config::config_token_ttl_minutes`] as a duration.
    pub fn config_token_ttl(&self) -> std::time::Duration {
        std::time::Duration::from_secs(u64::from(self.config_token_ttl_minutes.get()) * 60)
    }

    /// The secrets key: `$CREDENTIALS_DIRECTORY/provisioner.secrets.key` (systemd
    /// `LoadCredential=`), else `secrets_key_file`, else `<state_dir>/secrets/secrets.key`.
    pub fn secrets_key(&self) -> crate::store::SecretsKey {
        crate::store::SecretsKey::locate(
            &self.state_dir,
            self.secrets_key_file.as_deref(),
            std::env::var_os("CREDENTIALS_DIRECTORY").as_deref(),
        )
    }

    /// The image cache directory.
    pub fn cache_dir(&self) -> PathBuf {
        self.cache_dir
            .clone()
            .unwrap_or_else(|| self.state_dir.join("images"))
    }

    /// The image cache.
    pub fn image_cache(&self) -> crate::images::ImageCache {
        crate::images::ImageCache::new(self.cache_dir())
    }

    /// The API token store.
    pub fn api_tokens_path(&self) -> PathBuf {
        self.state_dir.join("api-tokens.redb")
    }

    /// The inventory file.
    pub fn inventory_path(&self) -> PathBuf {
        self.state_dir.join(INVENTORY_FILE)
    }
}

mod paths;
mod release;
#[cfg(test)]
mod tests;

pub use paths::TALENV_KEY_CREDENTIAL;
pub use release::PeerBinding;
