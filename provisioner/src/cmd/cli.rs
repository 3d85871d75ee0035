//! Command-line interface (clap). Each subcommand maps to one function in
//! [`crate::cmd::commands`] or [`crate::app`].

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::snippet::Target;

/// Zero-touch bare-metal provisioning appliance.
#[derive(Debug, Parser)]
#[command(name = "provisioner", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Where the configuration comes from.
#[derive(Debug, Clone, Args)]
pub struct ConfigArgs {
    /// Configuration file (YAML). Without it, /etc/provisioner/provisioner.yaml if it
    /// exists (the Debian package's), else the embedded defaults.
    #[arg(long, short = 'c', env = "PROVISIONER_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// Use unprivileged defaults: HTTP 8080, TFTP 6969, state under ~/.local/state.
    /// Firmware PXE needs TFTP on 69, so this mode is for trying things out.
    #[arg(long, global = true)]
    pub unprivileged: bool,
}

/// Export/import formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// JSON.
    Json,
    /// YAML.
    Yaml,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the appliance: HTTP boot path, TFTP, API.
    Serve {
        /// Self-test: load everything, open the store, bind every socket, print what
        /// would be served, and exit 0 without serving.
        #[arg(long)]
        dry_run: bool,
        /// Configuration source.
        #[command(flatten)]
        cfg: ConfigArgs,
    },
    /// Validate the configuration, profiles/, images/ and infra/; exits non-zero
    /// naming file and field.
    Check {
        /// Configuration source.
        #[command(flatten)]
        cfg: ConfigArgs,
    },
    /// Print the external-DHCP configuration that chains clients to this appliance.
    DhcpSnippet {
        /// Which DHCP server.
        #[arg(long = "for", value_enum)]
        target: Target,
        /// Configuration source.
        #[command(flatten)]
        cfg: ConfigArgs,
    },
    /// Print the iPXE script and config a machine would get, without serving.
    Render {
        /// The machine's MAC (any notation).
        #[arg(long)]
        mac: String,
        /// SMBIOS UUID, if selectors use it.
        #[arg(long)]
        uuid: Option<String>,
        /// iPXE `${buildarch}` (`i386` for BIOS, `x86_64`, `arm64`).
        #[arg(long, default_value = "x86_64")]
        arch: String,
        /// iPXE `${platform}` (`pcbios` or `efi`).
        #[arg(long, default_value = "efi")]
        platform: String,
        /// Configuration source.
        #[command(flatten)]
        cfg: ConfigArgs,
    },
    /// Write the inventory (machines and timelines) to stdout or a file.
    Export {
        /// Output format.
        #[arg(long, value_enum, default_value = "json")]
        format: Format,
        /// Write here instead of stdout.
        #[arg(long, short = 'o')]
        output: Option<PathBuf>,
        /// Configuration source.
        #[command(flatten)]
        cfg: ConfigArgs,
    },
    /// Load an export (JSON or YAML) into the inventory, or convert another tool's
    /// files (`import talhelper talconfig.yaml`).
    #[command(args_conflicts_with_subcommands = true)]
    Import {
        /// What to convert instead of an inventory export.
        #[command(subcommand)]
        from: Option<ImportFrom>,
        /// The export file.
        file: Option<PathBuf>,
        /// Configuration source.
        #[command(flatten)]
        cfg: ConfigArgs,
    },
    /// Talos: machine configs, secrets bundle, talosconfig, schematics.
    Talos {
        /// What to do.
        #[command(subcommand)]
        cmd: crate::cmd::talos::TalosCommand,
        /// Configuration source.
        #[command(flatten)]
        cfg: ConfigArgs,
    },
    /// The image cache: pull from the Image Factory, import files, list.
    Images {
        /// What to do.
        #[command(subcommand)]
        cmd: crate::cmd::images::ImagesCommand,
        /// Configuration source.
        #[command(flatten)]
        cfg: ConfigArgs,
    },
    /// Write inventory, secrets, API tokens and TLS files and the image-cache manifest
    /// to one file (tar encrypted with age to the recipients). The store is
    /// single-process: stop the service first.
    Backup {
        /// The backup file to write.
        #[arg(long, short = 'o')]
        output: PathBuf,
        /// Also store the cached image files (large), not only their hashes.
        #[arg(long)]
        include_images: bool,
        /// Encrypt to this age recipient (`age1…`, from `age-keygen`); repeatable, and
        /// added to `backup.recipients` of the configuration.
        #[arg(long = "recipient", short = 'r', value_name = "AGE_RECIPIENT")]
        recipients: Vec<String>,
        /// Allow a plaintext archive when no recipient is given (it then holds the
        /// secrets key, the API's TLS key and the token store readable to anyone).
        #[arg(long)]
        insecure_plaintext: bool,
        /// Configuration source.
        #[command(flatten)]
        cfg: ConfigArgs,
    },
    /// Restore a backup into a fresh state directory (the service stopped). The new
    /// state is built next to the old one and swapped in at once.
    Restore {
        /// The backup file.
        file: PathBuf,
        /// age identity file (`AGE-SECRET-KEY-1…`) for an encrypted backup.
        #[arg(long, short = 'i')]
        identity: Option<PathBuf>,
        /// Restore even if the inventory or secrets/ already hold data.
        #[arg(long)]
        force: bool,
        /// Configuration source.
        #[command(flatten)]
        cfg: ConfigArgs,
    },
    /// Cluster bootstrap and hand-off progress, read from the local store (the
    /// service stopped). `clusters` asks the running appliance's API instead.
    Bootstrap {
        /// What to show.
        #[command(subcommand)]
        cmd: BootstrapCmd,
    },
    /// Machines through the operator API: ls, show, reimage, power, pending, approve,
    /// deny, unpin, adopt.
    Machines {
        /// What to do.
        #[command(subcommand)]
        cmd: crate::cmd::client::MachinesCmd,
        /// API endpoint and token.
        #[command(flatten)]
        api: crate::cmd::client::ApiArgs,
        /// Local appliance configuration (default endpoint and CA).
        #[command(flatten)]
        cfg: ConfigArgs,
    },
    /// Clusters through the operator API: ls, status, retry.
    Clusters {
        /// What to do.
        #[command(subcommand)]
        cmd: crate::cmd::client::ClustersCmd,
        /// API endpoint and token.
        #[command(flatten)]
        api: crate::cmd::client::ApiArgs,
        /// Local appliance configuration (default endpoint and CA).
        #[command(flatten)]
        cfg: ConfigArgs,
    },
    /// Boot timeline events: each machine's latest, or live with --follow.
    Events {
        /// Stream events as they happen until interrupted.
        #[arg(long, short = 'f')]
        follow: bool,
        /// Only this machine's events (with --follow).
        #[arg(long)]
        mac: Option<String>,
        /// API endpoint and token.
        #[command(flatten)]
        api: crate::cmd::client::ApiArgs,
        /// Local appliance configuration (default endpoint and CA).
        #[command(flatten)]
        cfg: ConfigArgs,
    },
    /// Operator API tokens (on the appliance host): create, ls, revoke.
    Token {
        /// What to do.
        #[command(subcommand)]
        cmd: crate::cmd::client::token::TokenCmd,
        /// Configuration source (where the token store is).
        #[command(flatten)]
        cfg: ConfigArgs,
    },
    /// k0s on Flatcar: admin kubeconfig and a node's Ignition.
    K0s {
        /// What to do.
        #[command(subcommand)]
        cmd: crate::cmd::k0s::K0sCommand,
        /// Configuration source.
        #[command(flatten)]
        cfg: ConfigArgs,
    },
    /// Is the network and host ready? Other DHCP servers, the listeners, node API
    /// ports, disk, clock, API certificate, image cache; each finding with its fix.
    /// Exits non-zero on an error.
    Doctor(crate::cmd::doctor::DoctorArgs),
    /// Print the shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        /// Which shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), or write one page per subcommand into a folder.
    Man {
        /// Write `provisioner.1`, `provisioner-<subcommand>.1` … into this folder.
        #[arg(long, short = 'o')]
        output: Option<PathBuf>,
    },
    /// Print the version.
    Version,
}

/// Files from other tools that `import` converts.
#[derive(Debug, Subcommand)]
pub enum ImportFrom {
    /// A talhelper `talconfig.yaml` → `infra/<clusterName>.yaml` (lists what is not
    /// supported).
    Talhelper {
        /// The talconfig.yaml.
        file: PathBuf,
        /// Output file (default `<infra_dir>/<clusterName>.yaml`).
        #[arg(long, short = 'o')]
        output: Option<PathBuf>,
        /// Overwrite an existing file.
        #[arg(long)]
        force: bool,
        /// talenv files for `${VAR}` (default: talenv.yaml, talenv.sops.yaml,
        /// talenv.yml, talenv.sops.yml next to the talconfig; later ones win).
        #[arg(long = "env-file", short = 'e')]
        env_files: Vec<PathBuf>,
        /// age key file for SOPS-encrypted talenv and `@` files (default: where sops
        /// looks: SOPS_AGE_KEY_FILE, SOPS_AGE_KEY, ~/.config/sops/age/keys.txt).
        #[arg(long)]
        age_key: Option<PathBuf>,
        /// Configuration source.
        #[command(flatten)]
        cfg: ConfigArgs,
    },
}

/// `provisioner bootstrap ...`.
#[derive(Debug, Subcommand)]
pub enum BootstrapCmd {
    /// Where each cluster's bootstrap is (step, since when, last event). Reads the
    /// store, so run it while `serve` is stopped.
    Status {
        /// Configuration source.
        #[command(flatten)]
        cfg: ConfigArgs,
    },
}
