//! `provisioner talos …` and `provisioner import talhelper`: render configs, manage
//! the secrets bundle, derive talosconfig, show schematics.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::Subcommand;
use provisioner_core::talos::{self, TalosCluster};
use time::OffsetDateTime;

use crate::cmd::cli::ConfigArgs;
use crate::cmd::commands::load_config;
use crate::config::Config;
use provisioner_core::talos::store::SecretStore;

/// `provisioner talos …`.
#[derive(Debug, Subcommand)]
pub enum TalosCommand {
    /// Print a node's machine config (rendered from infra/ and the stored secrets).
    Config {
        /// Node hostname, e.g. `talos-1`.
        #[arg(long)]
        node: String,
        /// Cluster name (default: the Talos cluster that has this node).
        #[arg(long)]
        cluster: Option<String>,
    },
    /// Manage a cluster's secrets bundle (talosctl `secrets.yaml` format).
    #[command(subcommand)]
    Secrets(SecretsCommand),
    /// Print a talosconfig (os:admin client certificate, 1 year).
    Talosconfig {
        /// Cluster name.
        #[arg(long)]
        cluster: String,
    },
    /// Print the canonical schematic and its Image Factory ID for a node.
    Schematic {
        /// Node hostname.
        #[arg(long)]
        node: String,
        /// Cluster name (default: the Talos cluster that has this node).
        #[arg(long)]
        cluster: Option<String>,
    },
}

/// `provisioner talos secrets …`.
#[derive(Debug, Subcommand)]
pub enum SecretsCommand {
    /// Generate a new bundle (refuses to replace one unless --force).
    Gen {
        /// Cluster name.
        #[arg(long)]
        cluster: String,
        /// Replace an existing bundle (every node must then be reinstalled).
        #[arg(long)]
        force: bool,
    },
    /// Import a secrets.yaml / talsecret.yaml, plain or SOPS+age encrypted.
    Import {
        /// Cluster name.
        #[arg(long)]
        cluster: String,
        /// The bundle file.
        file: PathBuf,
        /// age key file (for SOPS-encrypted bundles).
        #[arg(long)]
        age_key: Option<PathBuf>,
        /// Replace an existing bundle.
        #[arg(long)]
        force: bool,
    },
    /// Write the bundle (plain YAML, or SOPS-encrypted for an age recipient).
    Export {
        /// Cluster name.
        #[arg(long)]
        cluster: String,
        /// Output file (mode 0600); stdout if absent.
        #[arg(long, short = 'o')]
        output: Option<PathBuf>,
        /// Encrypt with SOPS for this age recipient (`age1…`).
        #[arg(long)]
        sops_age_recipient: Option<String>,
    },
}

/// The secret store of a configuration (`<state_dir>/secrets/secrets.redb`, which
/// `provisioner backup` carries verbatim) with its secrets key ([`Config::secrets_key`]:
/// a systemd credential, `secrets_key_file`, or `<state_dir>/secrets/secrets.key`,
/// created 0600 on first use).
pub fn open_secrets(cfg: &Config) -> anyhow::Result<Arc<dyn SecretStore>> {
    crate::app::talos_secrets(cfg)
}

/// Talos clusters of `infra/`, validated.
pub fn talos_clusters(cfg: &Config) -> anyhow::Result<std::collections::BTreeMap<String, TalosCluster>> {
    Ok(
        crate::inputs::talenv::load_infra(&cfg.infra_dir, cfg.talenv_age_key_file.as_deref(), None)
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .talos,
    )
}

fn find(cfg: &Config, cluster: Option<&str>, node: Option<&str>) -> anyhow::Result<TalosCluster> {
    let clusters = talos_clusters(cfg)?;
    let found = match (cluster, node) {
        (Some(c), _) => clusters.get(c).cloned(),
        (None, Some(n)) => clusters.values().find(|c| c.node(n).is_some()).cloned(),
        (None, None) => None,
    };
    found.with_context(|| match (cluster, node) {
        (Some(c), _) => format!("no Talos cluster {c:?} in {}", cfg.infra_dir.display()),
        (None, n) => format!("no Talos cluster in {} has node {n:?}", cfg.infra_dir.display()),
    })
}

fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| path.display().to_string())?;
    // `mode` applies only when the file is created; an overwritten file is narrowed too.
    f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    f.write_all(text.as_bytes())?;
    Ok(())
}

/// Runs a `talos` subcommand.
pub fn run(cmd: TalosCommand, args: &ConfigArgs) -> anyhow::Result<()> {
    let cfg = load_config(args)?;
    match cmd {
        TalosCommand::Config { node, cluster } => {
            let c = find(&cfg, cluster.as_deref(), Some(&node))?;
            let secrets = open_secrets(&cfg)?.get(&c.cluster_name)?.with_context(|| {
                format!(
                    "no secrets bundle for cluster {:?}: run `provisioner talos secrets gen --cluster {0}` or import one",
                    c.cluster_name
                )
            })?;
            print!("{}", talos::render(&c, &node, &secrets)?.to_yaml());
        }
        TalosCommand::Schematic { node, cluster } => {
            let c = find(&cfg, cluster.as_deref(), Some(&node))?;
            let n = c.node(&node).context("no such node")?;
            let s = c.schematic_for(n);
            print!("{}", s.canonical_yaml().map_err(anyhow::Error::msg)?);
            println!("# id: {}", s.id().map_err(anyhow::Error::msg)?);
        }
        TalosCommand::Talosconfig { cluster } => {
            let c = find(&cfg, Some(&cluster), None)?;
            let s = open_secrets(&cfg)?
                .get(&cluster)?
                .context("no secrets bundle for this cluster")?;
            print!(
                "{}",
                crate::os::talos::talosconfig(&c, &s, OffsetDateTime::now_utc())?
            );
        }
        TalosCommand::Secrets(sc) => secrets(sc, &cfg)?,
    }
    Ok(())
}

fn secrets(cmd: SecretsCommand, cfg: &Config) -> anyhow::Result<()> {
    let store = open_secrets(cfg)?;
    match cmd {
        SecretsCommand::Gen { cluster, force } => {
            if store.get(&cluster)?.is_some() && !force {
                bail!("cluster {cluster:?} already has a secrets bundle (use --force to replace it)");
            }
            store.put(&cluster, &crate::pki::talos::generate(OffsetDateTime::now_utc())?)?;
            eprintln!("generated a secrets bundle for cluster {cluster:?} (stored encrypted)");
        }
        SecretsCommand::Import {
            cluster,
            file,
            age_key,
            force,
        } => {
            if store.get(&cluster)?.is_some() && !force {
                bail!("cluster {cluster:?} already has a secrets bundle (use --force to replace it)");
            }
            let text = std::fs::read_to_string(&file).with_context(|| file.display().to_string())?;
            let key = age_key
                .map(|p| std::fs::read_to_string(&p).with_context(|| p.display().to_string()))
                .transpose()?;
            let b = crate::os::talos::import_bundle(&text, key.as_deref())
                .with_context(|| format!("{}: not a usable secrets bundle", file.display()))?;
            store.put(&cluster, &b)?;
            eprintln!("imported the secrets bundle for cluster {cluster:?} (stored encrypted)");
        }
        SecretsCommand::Export {
            cluster,
            output,
            sops_age_recipient,
        } => {
            let b = store
                .get(&cluster)?
                .context("no secrets bundle for this cluster")?;
            let text = match sops_age_recipient {
                Some(r) => {
                    // sops re-formats `lastmodified` with Go's RFC 3339 layout (whole
                    // seconds) before using it as the MAC's additional data, so a
                    // fractional timestamp would make the MAC undecryptable for it.
                    let now = OffsetDateTime::now_utc()
                        .replace_nanosecond(0)
                        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
                        .format(&time::format_description::well_known::Rfc3339)
                        .unwrap_or_default();
                    crate::os::talos::sops::encrypt_yaml(&b.to_yaml(), &r, &now)
                        .map_err(anyhow::Error::msg)?
                }
                None => b.to_yaml(),
            };
            match output {
                Some(p) => write_private(&p, &text)?,
                None => print!("{text}"),
            }
        }
    }
    Ok(())
}

/// `provisioner import talhelper <talconfig.yaml>`: `env` is the talenv files
/// (empty: talhelper's defaults next to the talconfig) and the age key file.
pub fn import_talhelper(
    file: &Path,
    output: Option<&Path>,
    force: bool,
    env: (&[PathBuf], Option<&Path>),
    args: &ConfigArgs,
) -> anyhow::Result<()> {
    use crate::os::talos::talhelper::{TalconfigDir, age_key};
    let cfg = load_config(args)?;
    let text = std::fs::read_to_string(file).with_context(|| file.display().to_string())?;
    let sources = TalconfigDir::load(file, env.0, age_key(env.1)?)?;
    let imported = talos::talhelper::import(&text, &sources)?;
    let problems = imported.cluster.validate();
    for (f, why) in &imported.unsupported {
        eprintln!("not imported: {f}: {why}");
    }
    for (f, m) in &problems {
        eprintln!("to fix: field `{f}`: {m}");
    }
    let dest = output.map(Path::to_path_buf).unwrap_or_else(|| {
        cfg.infra_dir
            .join(format!("{}.yaml", imported.cluster.cluster_name))
    });
    if dest.exists() && !force {
        bail!("{} exists (use --force to overwrite)", dest.display());
    }
    // Values the operator encrypted stay encrypted: `${NAME}` in the file, the talenv
    // copied next to it as it is (provisioner_core::talos::talhelper::sealed).
    if let Some(f) = sources.encrypted_files().first() {
        bail!(
            "{} is SOPS-encrypted: what it contributes would be written to {} in plain text. \
             Move its secret values into talenv.sops.yaml and reference them as ${{NAME}} in it \
             (those stay encrypted in infra/)",
            f.display(),
            dest.display()
        );
    }
    let (secrets, talenvs) = sources.sealed();
    let plain = imported.to_yaml();
    let text = match secrets.is_empty() {
        true => plain.clone(),
        false => talos::talhelper::sealed::seal(&plain, &secrets)
            .map_err(|e| anyhow::anyhow!("{}: {e}", dest.display()))?,
    };
    let companion = dest.with_file_name(talos::talhelper::sealed::companion_name(
        dest.file_stem().and_then(|s| s.to_str()).unwrap_or_default(),
    ));
    let used: Vec<&String> = secrets
        .iter()
        .filter(|(_, v)| !v.is_empty() && plain.contains(v.as_str()))
        .map(|(k, _)| k)
        .collect();
    match (used.is_empty(), talenvs.as_slice()) {
        (true, _) => {
            if companion.exists() {
                // A former import's talenv: this file no longer refers to it.
                std::fs::remove_file(&companion).with_context(|| companion.display().to_string())?;
            }
            std::fs::write(&dest, &plain).with_context(|| dest.display().to_string())?;
        }
        (false, [talenv]) => {
            if companion.exists() && !force {
                bail!("{} exists (use --force to overwrite)", companion.display());
            }
            let sealed_talenv = std::fs::read(talenv).with_context(|| talenv.display().to_string())?;
            write_private(&companion, &String::from_utf8_lossy(&sealed_talenv))?;
            std::fs::write(&dest, &text).with_context(|| dest.display().to_string())?;
            let names: Vec<String> = used.iter().map(|n| format!("${{{n}}}")).collect();
            eprintln!(
                "kept {} as placeholders in {}: resolved in memory from {} (a copy of {}, still \
                 SOPS-encrypted) with the age key file that `talenv_age_key_file` names",
                names.join(", "),
                dest.display(),
                companion.display(),
                talenv.display()
            );
        }
        (false, many) => bail!(
            "values come from {} encrypted talenv files ({}); infra/ keeps one per cluster: merge them",
            many.len(),
            many.iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
    println!(
        "wrote {} ({} node(s), {} field(s) not imported, {} problem(s) to fix)",
        dest.display(),
        imported.cluster.nodes.len(),
        imported.unsupported.len(),
        problems.len()
    );
    Ok(())
}
