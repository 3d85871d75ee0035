//! `provisioner k0s …`: the admin kubeconfig and a node's Ignition configs; the
//! mirror's `pull`/`import` behind `provisioner images pull|import`.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use provisioner_core::k0s::K0sCluster;
use provisioner_core::render::config::ConfigUrls;

use crate::cmd::cli::ConfigArgs;
use crate::config::Config;
use crate::os::k0s::{ensure_secrets, load_clusters_keyed, renderer};
use crate::pki::k0s as pki;
use provisioner_core::k0s::store::K0sSecretStore;

/// `provisioner k0s …`.
#[derive(Debug, clap::Subcommand)]
pub enum K0sCommand {
    /// Write the appliance's admin kubeconfig (O=system:masters client certificate,
    /// valid 30 days) for a cluster; file mode 0600.
    Kubeconfig {
        /// Cluster name (default: the only k0s cluster).
        #[arg(long)]
        cluster: Option<String>,
        /// Output file (default stdout).
        #[arg(long, short = 'o')]
        output: Option<PathBuf>,
    },
    /// Print a node's Ignition config (stage 1 with stage 2 inside, or stage 2), with
    /// placeholder callback URLs. Contains secrets: refused on a terminal.
    Ignition {
        /// Node hostname from infra/.
        #[arg(long)]
        node: String,
        /// 1 or 2.
        #[arg(long, default_value_t = 1)]
        stage: u8,
    },
}

/// Opens the encrypted k0s secret store of `cfg`.
pub fn open_store(cfg: &Config) -> anyhow::Result<Arc<dyn K0sSecretStore>> {
    crate::app::k0s_secrets(cfg)
}

fn one_cluster(cfg: &Config, name: Option<&str>) -> anyhow::Result<K0sCluster> {
    let clusters = load_clusters_keyed(&cfg.infra_dir, cfg.talenv_age_key_file.as_deref())?;
    match name {
        Some(n) => clusters
            .get(n)
            .cloned()
            .with_context(|| format!("no k0s cluster {n:?} in {}", cfg.infra_dir.display())),
        None if clusters.len() == 1 => Ok(clusters.into_values().next().expect("one")),
        None => bail!(
            "{} k0s clusters in {}: pass --cluster",
            clusters.len(),
            cfg.infra_dir.display()
        ),
    }
}

/// Runs a `k0s` subcommand.
pub fn run(cmd: K0sCommand, args: &ConfigArgs) -> anyhow::Result<()> {
    let cfg = crate::cmd::commands::load_config(args)?;
    match cmd {
        K0sCommand::Kubeconfig { cluster, output } => {
            let c = one_cluster(&cfg, cluster.as_deref())?;
            let store = open_store(&cfg)?;
            ensure_secrets(
                &[(c.cluster_name.clone(), c.clone())].into(),
                store.as_ref(),
                time::OffsetDateTime::now_utc(),
            )?;
            let s = store.get(&c.cluster_name)?.context("secrets vanished")?;
            let url = c.api_url().context("the controller has no ipAddress")?;
            let kc = pki::admin_kubeconfig(&c.cluster_name, &url, &s, time::OffsetDateTime::now_utc())?;
            let text = kc.to_yaml();
            match output {
                Some(path) => {
                    let mut f = std::fs::OpenOptions::new()
                        .write(true)
                        .create(true)
                        .truncate(true)
                        .mode(0o600)
                        .open(&path)
                        .with_context(|| path.display().to_string())?;
                    f.write_all(text.as_bytes())?;
                    eprintln!(
                        "wrote {} (cluster {}, server {url})",
                        path.display(),
                        c.cluster_name
                    );
                }
                None => print!("{text}"),
            }
        }
        K0sCommand::Ignition { node, stage } => {
            use std::io::IsTerminal;
            if std::io::stdout().is_terminal() {
                bail!("the Ignition config holds the cluster CA key: redirect it to a file");
            }
            let clusters = load_clusters_keyed(&cfg.infra_dir, cfg.talenv_age_key_file.as_deref())?;
            let c = clusters
                .values()
                .find(|c| c.node(&node).is_some())
                .with_context(|| {
                    format!("no k0s cluster in {} has node {node:?}", cfg.infra_dir.display())
                })?;
            let store = open_store(&cfg)?;
            ensure_secrets(&clusters, store.as_ref(), time::OffsetDateTime::now_utc())?;
            let s = store.get(&c.cluster_name)?.context("secrets vanished")?;
            let (_, base) = crate::cmd::commands::advertised(&cfg);
            let urls = ConfigUrls {
                installed: format!("{base}/callback/TOKEN/installed"),
                k0s_installed: format!("{base}/callback/TOKEN/k0s-installed"),
                base,
            };
            let n = renderer::node_configs(c, &node, &s, &cfg.image_cache(), &urls)
                .map_err(anyhow::Error::msg)?;
            match stage {
                1 => println!("{}", n.stage1.to_json()),
                2 => println!("{}", n.stage2.to_json()),
                _ => bail!("--stage is 1 or 2"),
            }
        }
    }
    Ok(())
}
