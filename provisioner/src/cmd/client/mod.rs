//! The operator CLI over the API: `machines ls|show|reimage|power|pending|approve|deny|unpin|adopt`,
//! `clusters ls|status`, `events [--follow]`, and the local `token create|ls|revoke`.
//!
//! Endpoint, token and CA come from flags, else `PROVISIONER_API_URL`,
//! `PROVISIONER_API_TOKEN`, `PROVISIONER_API_CA`, else the client file
//! (`$PROVISIONER_CLIENT_CONFIG` or `~/.config/provisioner/client.yaml`: `url`,
//! `token`, `ca`), else the appliance configuration on this host (`api_listen`, and
//! the generated `<state_dir>/tls/ca.crt`). Tables for people, `--json` for scripts.

mod http;
mod output;
pub mod token;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use serde::Deserialize;

use crate::cmd::cli::ConfigArgs;
pub use http::ApiClient;

/// Where the API is and how to authenticate.
#[derive(Debug, Clone, Args)]
pub struct ApiArgs {
    /// API base URL, e.g. `https://10.0.0.1:9090`.
    #[arg(long, env = "PROVISIONER_API_URL", global = true)]
    pub api_url: Option<String>,
    /// API token (prefer the environment variable: flags show up in `ps`).
    #[arg(long, env = "PROVISIONER_API_TOKEN", global = true, hide_env_values = true)]
    pub token: Option<String>,
    /// PEM CA certificate to trust (the appliance's `<state_dir>/tls/ca.crt`).
    #[arg(long, env = "PROVISIONER_API_CA", global = true)]
    pub ca: Option<PathBuf>,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
}

/// `provisioner machines …`.
#[derive(Debug, Clone, Subcommand)]
pub enum MachinesCmd {
    /// List machines.
    Ls {
        /// Only this state (e.g. Installed, Booting, BootLoop).
        #[arg(long)]
        state: Option<String>,
        /// Only machines booting this profile.
        #[arg(long)]
        profile: Option<String>,
        /// Only machines of this cluster.
        #[arg(long)]
        cluster: Option<String>,
        /// `key=value` label filter; repeat for several.
        #[arg(long)]
        label: Vec<String>,
    },
    /// One machine with its timeline.
    Show {
        /// MAC address (any notation).
        mac: String,
    },
    /// Re-image a machine (admin token).
    Reimage {
        /// MAC address.
        mac: String,
    },
    /// What waits for an operator: installs and Talos device authorizations, with
    /// the code each console shows, MAC, UUID and peer.
    Pending,
    /// Approve what a machine waits for (admin token): its install (bound to MAC
    /// and UUID) and/or its Talos device authorization.
    Approve {
        /// MAC address.
        mac: String,
        /// The code its console shows: only that request is approved.
        #[arg(long)]
        code: Option<String>,
    },
    /// Deny what a machine waits for (admin token).
    Deny {
        /// MAC address.
        mac: String,
        /// The code its console shows: only that request is denied.
        #[arg(long)]
        code: Option<String>,
    },
    /// Clear a machine's SMBIOS UUID pin (admin token), e.g. after a board swap.
    Unpin {
        /// MAC address.
        mac: String,
    },
    /// Write a discovered machine's MAC (and UUID) into a node of `infra/` (admin
    /// token); the appliance reloads and the machine installs on its next boot.
    Adopt {
        /// MAC address.
        mac: String,
        /// The node's hostname in `infra/<cluster>.yaml`.
        #[arg(long)]
        node: String,
    },
    /// Switch a machine on, off, or power-cycle it (admin token).
    Power {
        /// MAC address.
        mac: String,
        /// What to do.
        #[arg(value_enum)]
        action: PowerArg,
    },
}

/// Power actions on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PowerArg {
    /// Switch on.
    On,
    /// Switch off.
    Off,
    /// Power-cycle.
    Cycle,
}

/// `provisioner clusters …`.
#[derive(Debug, Clone, Subcommand)]
pub enum ClustersCmd {
    /// List clusters.
    Ls,
    /// One cluster's status and bootstrap steps.
    Status {
        /// Cluster name.
        name: String,
    },
    /// Retry a Failed cluster's bootstrap from its failed step (admin token).
    Retry {
        /// Cluster name.
        name: String,
    },
    /// The cluster-admin kubeconfig (admin token): stdout, or a 0600 file with `-o`.
    Kubeconfig {
        /// Cluster name.
        name: String,
        /// Write here (mode 0600) instead of stdout.
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// A fresh `os:admin` talosconfig of a Talos cluster (admin token): stdout, or a
    /// 0600 file with `-o`.
    Talosconfig {
        /// Cluster name.
        name: String,
        /// Write here (mode 0600) instead of stdout.
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientFile {
    url: Option<String>,
    token: Option<String>,
    ca: Option<PathBuf>,
}

fn client_file() -> anyhow::Result<ClientFile> {
    let path = match std::env::var_os("PROVISIONER_CLIENT_CONFIG") {
        Some(p) => PathBuf::from(p),
        None => match std::env::var_os("HOME") {
            Some(h) => PathBuf::from(h).join(".config/provisioner/client.yaml"),
            None => return Ok(ClientFile::default()),
        },
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => serde_saphyr::from_str(&text).with_context(|| path.display().to_string()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ClientFile::default()),
        Err(e) => Err(e).with_context(|| path.display().to_string()),
    }
}

/// Resolves flags/env, the client file and the local appliance configuration.
pub fn connect(api: &ApiArgs, cfg: &ConfigArgs) -> anyhow::Result<ApiClient> {
    let file = client_file()?;
    let local = crate::cmd::commands::load_config(cfg).ok();
    let url = api
        .api_url
        .clone()
        .or(file.url)
        .or_else(|| {
            let c = local.as_ref()?;
            let mut addr = c.api_listen;
            if addr.ip().is_unspecified() {
                addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
            }
            Some(format!("https://{addr}"))
        })
        .context("no API URL: pass --api-url or set PROVISIONER_API_URL")?;
    let token =
        api.token.clone().or(file.token).context(
            "no API token: set PROVISIONER_API_TOKEN (create one with `provisioner token create`)",
        )?;
    let ca = api.ca.clone().or(file.ca).or_else(|| {
        let p = crate::http::api::tls::generated_files(&local.as_ref()?.state_dir).ca?;
        p.exists().then_some(p)
    });
    ApiClient::new(&url, &token, ca.as_deref())
}

/// `provisioner machines …`.
pub fn machines(cmd: &MachinesCmd, api: &ApiArgs, cfg: &ConfigArgs) -> anyhow::Result<()> {
    let c = connect(api, cfg)?;
    match cmd {
        MachinesCmd::Ls {
            state,
            profile,
            cluster,
            label,
        } => {
            let mut q: Vec<(&str, &str)> = Vec::new();
            if let Some(s) = state {
                q.push(("state", s));
            }
            if let Some(p) = profile {
                q.push(("profile", p));
            }
            if let Some(p) = cluster {
                q.push(("cluster", p));
            }
            for l in label {
                q.push(("label", l));
            }
            let v = c.get("/api/v1/machines", &q)?;
            output::print(api.json, &v, output::machines_table)
        }
        MachinesCmd::Show { mac } => {
            let v = c.get(&format!("/api/v1/machines/{}", http::seg(mac)), &[])?;
            output::print(api.json, &v, output::machine_detail)
        }
        MachinesCmd::Reimage { mac } => {
            let v = c.post(&format!("/api/v1/machines/{}/reimage", http::seg(mac)))?;
            output::print(api.json, &v, output::steps)
        }
        MachinesCmd::Pending => {
            let v = c.get("/api/v1/approvals", &[])?;
            output::print(api.json, &v, output::pending_table)
        }
        MachinesCmd::Approve { mac, code } | MachinesCmd::Deny { mac, code } => {
            let verb = if matches!(cmd, MachinesCmd::Approve { .. }) {
                "approve"
            } else {
                "deny"
            };
            let body = serde_json::json!({ "code": code });
            let v = c.post_json(&format!("/api/v1/machines/{}/{verb}", http::seg(mac)), &body)?;
            output::print(api.json, &v, output::decided)
        }
        MachinesCmd::Adopt { mac, node } => {
            let body = serde_json::json!({ "node": node });
            let v = c.post_json(&format!("/api/v1/machines/{}/adopt", http::seg(mac)), &body)?;
            output::print(api.json, &v, output::adopted)
        }
        MachinesCmd::Unpin { mac } => {
            let v = c.post(&format!("/api/v1/machines/{}/unpin", http::seg(mac)))?;
            output::print(api.json, &v, output::unpinned)
        }
        MachinesCmd::Power { mac, action } => {
            let a = match action {
                PowerArg::On => "on",
                PowerArg::Off => "off",
                PowerArg::Cycle => "cycle",
            };
            let v = c.post(&format!("/api/v1/machines/{}/power/{a}", http::seg(mac)))?;
            output::print(api.json, &v, output::power)
        }
    }
}

/// `provisioner clusters …`.
pub fn clusters(cmd: &ClustersCmd, api: &ApiArgs, cfg: &ConfigArgs) -> anyhow::Result<()> {
    let c = connect(api, cfg)?;
    match cmd {
        ClustersCmd::Ls => {
            let v = c.get("/api/v1/clusters", &[])?;
            output::print(api.json, &v, output::clusters_table)
        }
        ClustersCmd::Status { name } => {
            let v = c.get(&format!("/api/v1/clusters/{}", http::seg(name)), &[])?;
            output::print(api.json, &v, output::cluster_status)
        }
        ClustersCmd::Retry { name } => {
            let v = c.post(&format!("/api/v1/clusters/{}/bootstrap/retry", http::seg(name)))?;
            output::print(api.json, &v, output::bootstrap_retried)
        }
        ClustersCmd::Kubeconfig { name, output } => credential(&c, name, "kubeconfig", output.as_deref()),
        ClustersCmd::Talosconfig { name, output } => credential(&c, name, "talosconfig", output.as_deref()),
    }
}

/// Downloads a cluster credential to stdout or to a new 0600 file (created with that
/// mode, so it is never readable by others, even briefly).
fn credential(c: &ApiClient, name: &str, what: &str, out: Option<&std::path::Path>) -> anyhow::Result<()> {
    use std::io::Write;
    let body = c.get_bytes(&format!("/api/v1/clusters/{}/{what}", http::seg(name)))?;
    match out {
        Some(path) => {
            use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(path)
                .with_context(|| path.display().to_string())?;
            // An existing file keeps its mode on open: tighten it.
            f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
            f.write_all(&body)?;
            f.sync_all()?;
            eprintln!("wrote {} ({what} of cluster {name})", path.display());
        }
        None => std::io::stdout().write_all(&body)?,
    }
    Ok(())
}

/// `provisioner events`: with `--follow`, every new timeline event as it happens
/// (one line, or one JSON object per line); without, each machine's latest event.
pub fn events(follow: bool, mac: Option<&str>, api: &ApiArgs, cfg: &ConfigArgs) -> anyhow::Result<()> {
    let c = connect(api, cfg)?;
    if !follow {
        let v = c.get("/api/v1/machines", &[])?;
        return output::print(api.json, &v, output::latest_events);
    }
    let mut q = Vec::new();
    if let Some(m) = mac {
        q.push(("mac", m));
    }
    c.follow("/api/v1/events", &q, |event, data| {
        output::event_line(api.json, event, data);
    })
}
