//! Power drivers: how the appliance switches a machine on, off or resets it, and how
//! it makes the next boot a network boot. Each machine record names its driver
//! (`Machine::power`, a [`PowerSpec`]); drivers that need credentials name an endpoint
//! of the appliance configuration ([`PowerConfig`]), whose secret lives in a file.
//! Nothing here logs or returns a secret.

mod proxmox;
mod redfish;
mod wol;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use futures::future::BoxFuture;
use provisioner_core::model::MacAddr;
use provisioner_core::power::{PowerAction, PowerSpec};
use serde::{Deserialize, Serialize};

pub use proxmox::Proxmox;
pub use redfish::Redfish;
pub use wol::{WakeOnLan, magic_packet};

/// Power settings of the appliance configuration (`power:`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct PowerConfig {
    /// Wake-on-LAN sending.
    pub wol: WolConfig,
    /// Proxmox VE and Redfish endpoints by name, referenced from machine records.
    pub endpoints: BTreeMap<String, PowerEndpoint>,
}

/// Where Wake-on-LAN packets go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WolConfig {
    /// Destination: the limited broadcast on UDP port 9 (discard) by default, or a
    /// directed broadcast such as `10.0.0.255:9`.
    pub target: SocketAddr,
    /// Interface to send on (SO_BINDTODEVICE); defaults to the appliance's `interface`.
    pub interface: Option<String>,
}

impl Default for WolConfig {
    fn default() -> Self {
        Self {
            target: "255.255.255.255:9".parse().expect("literal"),
            interface: None,
        }
    }
}

/// An HTTPS API a driver talks to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PowerEndpoint {
    /// Base URL, e.g. `https://pve1:8006` or `https://bmc-node3`.
    pub url: String,
    /// File holding the credential: Proxmox `user@realm!tokenid=secret`, Redfish
    /// `user:password`. Read at each use, never logged.
    pub secret_file: PathBuf,
    /// PEM CA to trust for this endpoint (self-signed Proxmox/BMC certificates).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Skip certificate verification (only for labs; logged as a warning at use).
    #[serde(default)]
    pub insecure: bool,
}

/// How an action went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OutcomeStatus {
    /// The driver did it.
    Done,
    /// The operator must do (the rest of) it; `detail` says what.
    Manual,
}

/// The result of a driver call, shown to operators and written to the timeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PowerOutcome {
    /// Done or manual.
    pub status: OutcomeStatus,
    /// What happened, or what the operator must do.
    pub detail: String,
}

impl PowerOutcome {
    fn done(detail: impl Into<String>) -> Self {
        Self {
            status: OutcomeStatus::Done,
            detail: detail.into(),
        }
    }

    fn manual(detail: impl Into<String>) -> Self {
        Self {
            status: OutcomeStatus::Manual,
            detail: detail.into(),
        }
    }
}

/// Why a driver call failed.
#[derive(Debug, thiserror::Error)]
pub enum PowerError {
    /// The driver cannot do this at all (Wake-on-LAN cannot switch off).
    #[error("{driver} cannot {action}")]
    Unsupported {
        /// Driver name.
        driver: &'static str,
        /// The action.
        action: PowerAction,
    },
    /// The machine's spec or the appliance configuration is incomplete.
    #[error("power configuration: {0}")]
    Config(String),
    /// The endpoint could not be reached or answered badly.
    #[error("{driver}: {message}")]
    Upstream {
        /// Driver name.
        driver: &'static str,
        /// What went wrong (never the credential).
        message: String,
    },
}

/// One machine's power control.
pub trait PowerDriver: Send + Sync + std::fmt::Debug {
    /// The driver's name.
    fn name(&self) -> &'static str;
    /// Switches on, off, or resets the machine.
    fn power(&self, action: PowerAction) -> BoxFuture<'_, Result<PowerOutcome, PowerError>>;
    /// Makes the next boot a network boot (a one-time override where the platform
    /// has one).
    fn netboot_next(&self) -> BoxFuture<'_, Result<PowerOutcome, PowerError>>;
}

/// Builds drivers from machine specs and the appliance's power configuration.
#[derive(Debug, Clone, Default)]
pub struct PowerDrivers {
    cfg: PowerConfig,
    /// The appliance's machine-facing interface, the Wake-on-LAN default.
    interface: Option<String>,
}

/// Timeout for each call to a power API.
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// A power spec names an endpoint the configuration does not have.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UnknownEndpoint(String);

impl PowerDrivers {
    /// Drivers configured by `cfg`; Wake-on-LAN sends on `interface` unless
    /// `cfg.wol.interface` says otherwise.
    pub fn new(cfg: PowerConfig, interface: Option<String>) -> Self {
        Self { cfg, interface }
    }

    /// Checks a spec before it is stored: its endpoint must be configured.
    pub fn validate(&self, spec: &PowerSpec) -> Result<(), UnknownEndpoint> {
        match spec.endpoint() {
            Some(e) if !self.cfg.endpoints.contains_key(e) => {
                let known: Vec<&str> = self.cfg.endpoints.keys().map(String::as_str).collect();
                Err(UnknownEndpoint(format!(
                    "no power endpoint {e:?} in the appliance configuration (configured: [{}])",
                    known.join(", ")
                )))
            }
            _ => Ok(()),
        }
    }

    /// The driver for a machine; no spec means manual control.
    pub fn driver_for(
        &self,
        mac: MacAddr,
        spec: Option<&PowerSpec>,
    ) -> Result<Box<dyn PowerDriver>, PowerError> {
        let endpoint = |name: &str| {
            self.cfg
                .endpoints
                .get(name)
                .ok_or_else(|| PowerError::Config(format!("no power endpoint {name:?} configured")))
        };
        Ok(match spec {
            None => Box::new(Manual {
                mac,
                instructions: String::new(),
            }),
            Some(PowerSpec::Manual { instructions }) => Box::new(Manual {
                mac,
                instructions: instructions.clone(),
            }),
            Some(PowerSpec::Wol {}) => Box::new(WakeOnLan {
                mac,
                target: self.cfg.wol.target,
                interface: self.cfg.wol.interface.clone().or_else(|| self.interface.clone()),
            }),
            Some(PowerSpec::Proxmox {
                endpoint: e,
                node,
                vmid,
            }) => {
                let ep = endpoint(e)?;
                Box::new(Proxmox::new(ep, node.clone(), *vmid)?)
            }
            Some(PowerSpec::Redfish { endpoint: e, system }) => {
                let ep = endpoint(e)?;
                Box::new(Redfish::new(ep, system.clone())?)
            }
        })
    }
}

/// An HTTP client for one endpoint: its CA, or no verification when asked to.
fn http_client(driver: &'static str, ep: &PowerEndpoint) -> Result<reqwest::Client, PowerError> {
    let mut b = reqwest::Client::builder().timeout(HTTP_TIMEOUT);
    if let Some(ca) = &ep.ca_file {
        let pem = std::fs::read(ca).map_err(|e| PowerError::Config(format!("{}: {e}", ca.display())))?;
        let cert = reqwest::Certificate::from_pem(&pem)
            .map_err(|e| PowerError::Config(format!("{}: {e}", ca.display())))?;
        b = b.add_root_certificate(cert);
    }
    if ep.insecure {
        tracing::warn!(driver, url = %ep.url, "power endpoint certificate not verified (insecure: true)");
        b = b.danger_accept_invalid_certs(true);
    }
    b.build()
        .map_err(|e| PowerError::Config(format!("{driver} client: {e}")))
}

/// Reads a credential file, trimmed. The error names the file, never its content.
fn read_secret(ep: &PowerEndpoint) -> Result<String, PowerError> {
    let s = std::fs::read_to_string(&ep.secret_file)
        .map_err(|e| PowerError::Config(format!("{}: {e}", ep.secret_file.display())))?;
    let s = s.trim().to_string();
    if s.is_empty() {
        return Err(PowerError::Config(format!(
            "{} is empty",
            ep.secret_file.display()
        )));
    }
    Ok(s)
}

/// Turns a response into an error unless it is a success; the body is cut short.
async fn check(
    driver: &'static str,
    what: &str,
    r: Result<reqwest::Response, reqwest::Error>,
) -> Result<reqwest::Response, PowerError> {
    let resp = r.map_err(|e| PowerError::Upstream {
        driver,
        message: format!("{what}: {e}"),
    })?;
    if resp.status().is_success() {
        return Ok(resp);
    }
    let status = resp.status();
    let body: String = resp.text().await.unwrap_or_default().chars().take(200).collect();
    Err(PowerError::Upstream {
        driver,
        message: format!("{what}: HTTP {status}: {body}"),
    })
}

/// No automation: every answer says what the operator must do.
#[derive(Debug)]
struct Manual {
    mac: MacAddr,
    instructions: String,
}

impl PowerDriver for Manual {
    fn name(&self) -> &'static str {
        "manual"
    }

    fn power(&self, action: PowerAction) -> BoxFuture<'_, Result<PowerOutcome, PowerError>> {
        let what = match action {
            PowerAction::On => "switch on",
            PowerAction::Off => "switch off",
            PowerAction::Cycle => "power-cycle (or reset)",
        };
        let mut detail = format!("no power driver for {}: {what} the machine by hand", self.mac);
        if !self.instructions.is_empty() {
            detail.push_str(&format!(" ({})", self.instructions));
        }
        Box::pin(async move { Ok(PowerOutcome::manual(detail)) })
    }

    fn netboot_next(&self) -> BoxFuture<'_, Result<PowerOutcome, PowerError>> {
        let detail = format!(
            "make sure {} boots from the network first (firmware boot order or boot menu)",
            self.mac
        );
        Box::pin(async move { Ok(PowerOutcome::manual(detail)) })
    }
}
