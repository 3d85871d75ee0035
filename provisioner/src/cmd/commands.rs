//! The one-shot subcommands: check, dhcp-snippet, render, export, import.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use provisioner_core::boot::{BootDecision, BootRequest, Booter, CatalogBooter};
use provisioner_core::catalog::{self, Catalog};
use provisioner_core::inventory::{Inventory, Snapshot};
use provisioner_core::render::{self, BootUrls};

use crate::cmd::cli::{ConfigArgs, Format};
use crate::config::Config;
use crate::snippet::{self, Chain, Target};
use crate::store::RedbInventory;

/// The Debian package's configuration, used when no `--config` is given.
pub const INSTALLED_CONFIG: &str = "/etc/provisioner/provisioner.yaml";

/// Loads the configuration as every subcommand does: file or embedded defaults,
/// then `PROVISIONER_*` variables.
pub fn load_config(args: &ConfigArgs) -> anyhow::Result<Config> {
    let base = if args.unprivileged {
        Config::unprivileged(std::env::var_os("HOME").as_deref().map(Path::new))
    } else {
        Config::default()
    };
    let env: BTreeMap<String, String> = std::env::vars()
        .filter(|(k, _)| k.starts_with("PROVISIONER_"))
        .collect();
    let installed = Path::new(INSTALLED_CONFIG);
    let file = match args.config.as_deref() {
        None if !args.unprivileged && installed.is_file() => Some(installed),
        f => f,
    };
    let mut cfg = Config::load(file, base, &env)?;
    cfg.apply_credentials(std::env::var_os("CREDENTIALS_DIRECTORY").as_deref());
    Ok(cfg)
}

pub use super::check::check;
pub use crate::config::{advertised, advertised_on};

/// Loads images/ and profiles/ (all errors at once).
pub fn load_catalog(cfg: &Config) -> anyhow::Result<Catalog> {
    catalog::load(&cfg.images_dir, &cfg.profiles_dir).map_err(|e| anyhow::anyhow!("{e}"))
}

/// `provisioner dhcp-snippet`.
pub fn dhcp_snippet(target: Target, args: &ConfigArgs) -> anyhow::Result<()> {
    let cfg = load_config(args)?;
    let (ip, base) = advertised(&cfg);
    print!("{}", snippet::render(target, &Chain::new(ip, base)));
    Ok(())
}

/// `provisioner render`: what `/ipxe` would answer, with placeholder tokens, and the
/// config document. Reads the inventory if no daemon holds it.
pub fn render_machine(
    mac: &str,
    uuid: Option<String>,
    arch: &str,
    platform: &str,
    args: &ConfigArgs,
) -> anyhow::Result<()> {
    let cfg = load_config(args)?;
    // With the groups infra/ derives for its nodes (what `serve` decides with).
    let cat = crate::inputs::Inputs::load(cfg.input_dirs())
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .catalog;
    let (_, base) = advertised(&cfg);
    let mac = mac.parse().context("--mac")?;
    let req = BootRequest {
        mac: Some(mac),
        uuid: uuid.map(|u| u.to_ascii_lowercase()),
        arch: provisioner_core::model::Arch::from_ipxe(arch, Some(platform)),
        ..Default::default()
    };
    let machine = RedbInventory::open(&cfg.inventory_path())
        .ok()
        .and_then(|inv| inv.get(mac).ok().flatten());
    let booter = CatalogBooter {
        catalog: cat,
        unknown: cfg.unknown_policy.clone(),
    };
    let decision = booter.decide(&req, machine.as_ref());
    let urls = BootUrls {
        config: format!("{base}/config/<one-time-token>"),
        callback: format!("{base}/callback/<one-time-token>/installed"),
        base,
    };
    println!("# decision: {}", decision.outcome());
    print!("{}", render::ipxe::machine_script(mac, &decision, &urls));
    if let BootDecision::Install(plan) = &decision {
        println!("# config ({:?}):", plan.profile.config);
        print!("{}", render::config::plain(mac, plan));
    }
    Ok(())
}

fn open_store(cfg: &Config) -> anyhow::Result<Arc<dyn Inventory>> {
    Ok(Arc::new(RedbInventory::open(&cfg.inventory_path())?))
}

/// `provisioner export`.
pub fn export(format: Format, output: Option<&Path>, args: &ConfigArgs) -> anyhow::Result<()> {
    let cfg = load_config(args)?;
    let snap = open_store(&cfg)?.export()?;
    let text = match format {
        Format::Json => serde_json::to_string_pretty(&snap)? + "\n",
        Format::Yaml => serde_saphyr::to_string(&snap)?,
    };
    match output {
        Some(p) => std::fs::write(p, text).with_context(|| p.display().to_string())?,
        None => print!("{text}"),
    }
    Ok(())
}

/// `provisioner import`.
pub fn import(file: &Path, args: &ConfigArgs) -> anyhow::Result<()> {
    let cfg = load_config(args)?;
    let text = std::fs::read_to_string(file).with_context(|| file.display().to_string())?;
    let snap: Snapshot = match serde_json::from_str(&text) {
        Ok(s) => s,
        Err(_) => serde_saphyr::from_str(&text)
            .with_context(|| format!("{}: neither JSON nor YAML export", file.display()))?,
    };
    crate::sys::state::ensure_dir(&cfg.state_dir)?;
    open_store(&cfg)?.import(&snap)?;
    crate::sys::state::adopt(&cfg.state_dir)?;
    println!("imported {} machine(s)", snap.machines.len());
    Ok(())
}

/// `provisioner backup`.
pub fn backup(
    output: &Path,
    include_images: bool,
    recipients: &[String],
    insecure_plaintext: bool,
    args: &ConfigArgs,
) -> anyhow::Result<()> {
    let cfg = load_config(args)?;
    let all: Vec<String> = recipients.iter().chain(&cfg.backup.recipients).cloned().collect();
    let protection = crate::backup::Protection::choose(&all, insecure_plaintext)?;
    let store = RedbInventory::open(&cfg.inventory_path())
        .context("opening the inventory (stop the service first: systemctl stop provisioner)")?;
    let schema = u32::try_from(store.schema_version()?).context("schema version")?;
    let cache_dir = cfg.cache_dir();
    let key = cfg.secrets_key();
    let m = crate::backup::create(
        &store.export()?,
        schema,
        &crate::backup::Sources {
            state_dir: &cfg.state_dir,
            cache_dir: &cache_dir,
            include_images,
            secrets_key: &key.path,
        },
        &protection,
        output,
    )?;
    println!(
        "backup {}: {} machine(s), {} secret file(s), {} image file(s){}, schema {}, {}",
        output.display(),
        m.machines,
        m.secrets.len(),
        m.images.len(),
        if include_images {
            " included"
        } else {
            " (manifest only)"
        },
        m.store_schema_version,
        match &protection {
            crate::backup::Protection::Encrypt(r) => format!("encrypted to {} age recipient(s)", r.len()),
            crate::backup::Protection::Plaintext => "PLAINTEXT (--insecure-plaintext)".into(),
        }
    );
    if !m.secrets_key_included && !m.secrets.is_empty() {
        println!(
            "the secrets key is not in this backup: it lives at {}; keep a copy of it apart \
             from the backup (without it the restored secrets cannot be decrypted)",
            key.path.display()
        );
    }
    Ok(())
}

/// `provisioner restore`.
pub fn restore(file: &Path, identity: Option<&Path>, force: bool, args: &ConfigArgs) -> anyhow::Result<()> {
    let cfg = load_config(args)?;
    let (archive, encrypted) = crate::backup::crypt::open(file, identity)?;
    if !encrypted {
        eprintln!("warning: {} is a plaintext backup", file.display());
    }
    let cache_dir = cfg.cache_dir();
    let key = cfg.secrets_key();
    let open_inventory =
        |dir: &Path| -> Result<Arc<dyn Inventory>, provisioner_core::inventory::InventoryError> {
            let inv = RedbInventory::open(&dir.join(crate::config::INVENTORY_FILE)).map_err(|e| {
                provisioner_core::inventory::InventoryError::Backend(format!(
                    "{e} (stop the service first: systemctl stop provisioner)"
                ))
            })?;
            Ok(Arc::new(inv))
        };
    let r = crate::backup::restore(
        archive,
        &crate::backup::Sources {
            state_dir: &cfg.state_dir,
            cache_dir: &cache_dir,
            include_images: false,
            secrets_key: &key.path,
        },
        crate::backup::RestoreOptions { force },
        &open_inventory,
    )?;
    if !cache_dir.starts_with(&cfg.state_dir) && cache_dir.exists() {
        crate::sys::state::adopt(&cache_dir)?;
    }
    println!(
        "restored {}: {} machine(s), {} secret file(s), {} image file(s) from the backup; \
         cache: {} of {} image file(s) match",
        file.display(),
        r.manifest.machines,
        r.secrets_restored,
        r.images_restored,
        r.images_present,
        r.manifest.images.len()
    );
    if !r.secrets_key_included() && !key.path.exists() {
        println!(
            "the backup's secrets need their secrets key, which it does not carry: put it at {} \
             before starting the service",
            key.path.display()
        );
    }
    for p in &r.images_missing {
        println!("image missing from the cache (fetch it again): {p}");
    }
    for p in &r.images_mismatched {
        println!("image in the cache differs from the backup: {p}");
    }
    Ok(())
}

/// `provisioner clusters status`.
pub fn clusters_status(args: &ConfigArgs) -> anyhow::Result<()> {
    use provisioner_core::cluster::ClusterStore;
    let cfg = load_config(args)?;
    let store = RedbInventory::open(&cfg.inventory_path())?;
    let clusters = store.clusters()?;
    if clusters.is_empty() {
        println!("no cluster bootstrap recorded");
    }
    for c in clusters {
        let since = c
            .step_started
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        let node = c
            .bootstrap_node
            .map(|n| n.to_string())
            .unwrap_or_else(|| "-".into());
        println!(
            "{}\t{}\tsince {since}\tinstalled {}\tbootstrap node {node} ({} call(s))",
            c.cluster,
            c.step,
            c.installed.len(),
            c.bootstrap_attempts
        );
        if let Some(f) = &c.failure {
            println!("  failed: {f}");
        }
        if let Some(e) = store.events(&c.cluster)?.last() {
            println!("  last event: {:?}: {}", e.kind, e.detail);
        }
    }
    Ok(())
}
