//! `provisioner images …`: pull (Talos from the Image Factory, Flatcar and k0s
//! releases, the pinned ArgoCD manifest), import (air-gapped copies) and list the
//! image cache ([`crate::images::ImageCache`]).

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use provisioner_core::k0s::mirror::Kind;

use crate::cluster::argocd::{Settings, fetch};
use crate::cmd::cli::ConfigArgs;
use crate::config::Config;
use crate::images::{ImageCache, Placed};
use crate::os::k0s::pull as k0s_pull;
use crate::os::talos::factory;

/// The Flatcar PXE image descriptor `pull flatcar` fills by default.
pub const FLATCAR_IMAGE: &str = "flatcar-stable-amd64";

/// Default Image Factory.
pub const FACTORY: &str = "https://factory.talos.dev";

/// `provisioner images …`.
#[derive(Debug, clap::Subcommand)]
pub enum ImagesCommand {
    /// Download an image's files into the cache: Talos from the Image Factory;
    /// Flatcar (PXE kernel + initramfs, disk image + signature for the mirror) or a
    /// k0s release (binary checked against its sha256sums.txt) from upstream; the
    /// ArgoCD install manifest pinned in gitops/settings.yaml (sha256 verified).
    ///
    /// `--all`: everything infra/, profiles/ and gitops/settings.yaml need, each from
    /// its own upstream (`--factory`, `--flatcar-base`, `--k0s-base`, `--base` for the
    /// ArgoCD pin's origin).
    Pull {
        /// `talos`, `flatcar`, `k0s` or `argocd`.
        #[arg(value_parser = ["talos", "flatcar", "k0s", "argocd"], required_unless_present = "all")]
        kind: Option<String>,
        /// Pull everything this site needs (then `images bundle` carries it offline).
        #[arg(long, conflicts_with_all = ["kind", "version", "schematic", "image"])]
        all: bool,
        /// With `--all`: Flatcar releases base URL.
        #[arg(long, requires = "all", default_value = k0s_pull::FLATCAR_BASE)]
        flatcar_base: String,
        /// With `--all`: k0s releases base URL.
        #[arg(long, requires = "all", default_value = k0s_pull::K0S_BASE)]
        k0s_base: String,
        /// Talos version (v1.11.6), Flatcar release (4459.2.0) or k0s tag (v1.36.3+k0s.2);
        /// for argocd the pinned version (the default).
        #[arg(long, required_if_eq_any([("kind", "talos"), ("kind", "flatcar"), ("kind", "k0s")]))]
        version: Option<String>,
        /// Talos only: the schematic, as a YAML file or as the ID of a schematic defined
        /// in infra/ (it is POSTed to the factory's /schematics before the pull).
        #[arg(long, required_if_eq("kind", "talos"))]
        schematic: Option<String>,
        /// Upstream base URL for flatcar/k0s (default: Flatcar's stable channel, k0s's
        /// GitHub releases); for argocd a mirror of the pinned URL's origin.
        #[arg(long, env = "PROVISIONER_MIRROR_UPSTREAM")]
        base: Option<String>,
        /// Image Factory base URL.
        #[arg(long, env = "PROVISIONER_IMAGE_FACTORY", default_value = FACTORY)]
        factory: String,
        /// Image id (default: the images/ descriptor for this schematic and version).
        #[arg(long)]
        image: Option<String>,
    },
    /// Copy already-downloaded files into the cache (air-gapped installs). With
    /// `--mirror flatcar|k0s --version V`: Flatcar or k0s release files;
    /// `images import argocd <install.yaml>`: the pinned ArgoCD manifest;
    /// `images import <bundle.tar>`: a bundle from `images bundle`.
    Import {
        /// Image id from images/ (Flatcar: the PXE image, default flatcar-stable-amd64);
        /// required unless `--mirror` or `argocd`.
        #[arg(long)]
        image: Option<String>,
        /// Import Flatcar or k0s release files into the mirror.
        #[arg(long, value_parser = ["flatcar", "k0s"], requires = "version")]
        mirror: Option<String>,
        /// The Flatcar release or k0s tag (with `--mirror`).
        #[arg(long)]
        version: Option<String>,
        /// The files (named as in the descriptor).
        files: Vec<PathBuf>,
    },
    /// List images and the cache status of their files.
    Ls,
    /// Write every file this site needs (as `pull --all` fetches them), verified, to
    /// one tar with a manifest of SHA-256s; `images import <file.tar>` on the offline
    /// appliance checks and places it.
    Bundle {
        /// The tar to write.
        #[arg(long, short = 'o')]
        output: PathBuf,
    },
}

/// A mirror that accepts the connection and then stalls must not hang `images pull`
/// for ever: connecting is bounded, and so is each read (it resets after every chunk,
/// so a large image on a slow but live link still downloads; reqwest 0.13
/// `ClientBuilder::read_timeout`).
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);
const READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

fn client() -> anyhow::Result<reqwest::Client> {
    client_with(CONNECT_TIMEOUT, READ_TIMEOUT)
}

fn client_with(connect: std::time::Duration, read: std::time::Duration) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .user_agent(concat!("provisioner/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(connect)
        .read_timeout(read)
        .build()?)
}

fn print_placed(placed: &[Placed], what_new: &str) {
    for p in placed {
        let what = if p.fetched { what_new } else { "already cached" };
        println!("{}: {what}, sha256 {}", p.path.display(), p.sha256);
    }
}

/// Runs an `images` subcommand.
pub fn run(cmd: ImagesCommand, args: &ConfigArgs) -> anyhow::Result<()> {
    let cfg = crate::cmd::commands::load_config(args)?;
    let cache = cfg.image_cache();
    let kind_of = |k: &Option<String>| k.clone().unwrap_or_default();
    match cmd {
        ImagesCommand::Pull {
            all: true,
            flatcar_base,
            k0s_base,
            base,
            factory,
            ..
        } => crate::cmd::bundle::pull_all(
            &cfg,
            &crate::cmd::bundle::Bases {
                factory,
                flatcar: flatcar_base,
                k0s: k0s_base,
                argocd: base,
            },
        ),
        ImagesCommand::Bundle { output } => crate::cmd::bundle::bundle(&cfg, &output),
        ImagesCommand::Import {
            image: None,
            mirror: None,
            files,
            ..
        } if files.len() == 1 && files[0].extension().is_some_and(|e| e == "tar") => {
            crate::cmd::bundle::import(&cfg, &files[0])
        }
        ImagesCommand::Pull {
            kind, version, base, ..
        } if kind_of(&kind) == "argocd" => pull_argocd(&cfg, &cache, version.as_deref(), base.as_deref()),
        ImagesCommand::Import {
            image: None,
            mirror: None,
            files,
            ..
        } if files.first().is_some_and(|f| f.as_os_str() == "argocd") => match &files[1..] {
            [file] => import_argocd(&cfg, &cache, file),
            _ => bail!("usage: provisioner images import argocd <install.yaml>"),
        },
        ImagesCommand::Pull {
            kind,
            version,
            base,
            image,
            ..
        } if kind_of(&kind) != "talos" => {
            let image = image.as_deref().unwrap_or(FLATCAR_IMAGE);
            pull_mirror(
                &cfg,
                &cache,
                &kind_of(&kind),
                &version.unwrap_or_default(),
                base.as_deref(),
                image,
            )
        }
        ImagesCommand::Pull {
            version,
            schematic,
            factory: base,
            image,
            ..
        } => pull_talos(
            &cfg,
            &cache,
            schematic.as_deref().unwrap_or_default(),
            version.as_deref().unwrap_or_default(),
            &base,
            image.as_deref(),
        ),
        ImagesCommand::Import {
            image,
            mirror: Some(kind),
            version,
            files,
        } => {
            let image = image.as_deref().unwrap_or(FLATCAR_IMAGE);
            import_mirror(&cfg, &cache, &kind, &version.unwrap_or_default(), image, &files)
        }
        ImagesCommand::Import { image, files, .. } => {
            let image = image.context("--image is required (or --mirror flatcar|k0s, or `argocd <file>`)")?;
            let cat = crate::cmd::commands::load_catalog(&cfg)?;
            let img = cat
                .images
                .get(&image)
                .with_context(|| format!("no image {image:?} in images/"))?;
            for p in cache.import_image(img, &files)? {
                let file = p.path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
                println!("{}/{file}: imported, sha256 {}", img.id, p.sha256);
            }
            Ok(())
        }
        ImagesCommand::Ls => {
            let cat = crate::cmd::commands::load_catalog(&cfg)?;
            for r in cache.list(&cat.images) {
                let size = r.size.map(|s| s.to_string()).unwrap_or_else(|| "-".into());
                println!("{:<40} {:<24} {:>12} {}", r.image, r.file, size, r.status);
            }
            Ok(())
        }
    }
}

/// `images pull talos`: the schematic `--schematic` names (a file, or the ID of one in
/// infra/), POSTed to the factory, then the files of its descriptor.
fn pull_talos(
    cfg: &Config,
    cache: &ImageCache,
    schematic_arg: &str,
    version: &str,
    factory_url: &str,
    image: Option<&str>,
) -> anyhow::Result<()> {
    let cat = crate::cmd::commands::load_catalog(cfg)?;
    let infra = crate::inputs::talenv::load_infra(&cfg.infra_dir, cfg.talenv_age_key_file.as_deref(), None)
        .map_err(|e| {
        anyhow::anyhow!(
            "{}",
            e.0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n")
        )
    })?;
    let schematic = factory::resolve(schematic_arg, &infra)?;
    let id = schematic.id().map_err(|e| anyhow::anyhow!("schematic: {e}"))?;
    let img = match image {
        Some(i) => cat
            .images
            .get(i)
            .with_context(|| format!("no image {i:?} in images/"))?,
        None => factory::descriptor_for(&cat.images, &id, version).with_context(|| {
            format!(
                "no descriptor in {} for schematic {id} and {version}; add one (see \
                 images/talos-genmachine-v1.11.6-amd64.yaml) or pass --image",
                cfg.images_dir.display()
            )
        })?,
    };
    let rt = tokio::runtime::Runtime::new()?;
    let (created, placed) = rt.block_on(factory::pull(
        &client()?,
        cache,
        factory_url,
        &schematic,
        version,
        img,
    ))?;
    println!("schematic {created}: present on {factory_url}");
    for p in placed {
        let file = p.path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let what = if p.fetched { "downloaded" } else { "already cached" };
        println!("{}/{file}: {what}, sha256 {}", img.id, p.sha256);
    }
    Ok(())
}

/// `images pull flatcar|k0s`: into the mirror; one line per file.
fn pull_mirror(
    cfg: &Config,
    cache: &ImageCache,
    kind: &str,
    version: &str,
    base: Option<&str>,
    image: &str,
) -> anyhow::Result<()> {
    let client = client()?;
    let rt = tokio::runtime::Runtime::new()?;
    let placed = match Kind::parse(kind) {
        Some(Kind::Flatcar) => {
            let cat = crate::cmd::commands::load_catalog(cfg)?;
            let img = cat
                .images
                .get(image)
                .with_context(|| format!("no image {image:?} in {}", cfg.images_dir.display()))?;
            rt.block_on(k0s_pull::pull_flatcar(
                &client,
                cache,
                base.unwrap_or(k0s_pull::FLATCAR_BASE),
                version,
                img,
            ))?
        }
        Some(Kind::K0s) => rt.block_on(k0s_pull::pull_k0s(
            &client,
            cache,
            base.unwrap_or(k0s_pull::K0S_BASE),
            version,
        ))?,
        None => bail!("{kind:?} is not flatcar or k0s"),
    };
    print_placed(&placed, "downloaded");
    Ok(())
}

/// `images import --mirror flatcar|k0s`: one line per file.
fn import_mirror(
    cfg: &Config,
    cache: &ImageCache,
    kind: &str,
    version: &str,
    image: &str,
    files: &[PathBuf],
) -> anyhow::Result<()> {
    let kind = Kind::parse(kind).with_context(|| format!("{kind:?} is not flatcar or k0s"))?;
    let cat = crate::cmd::commands::load_catalog(cfg)?;
    let img = if kind == Kind::Flatcar {
        cat.images.get(image)
    } else {
        None
    };
    for p in k0s_pull::import(cache, kind, version, img, files)? {
        println!("{}: imported, sha256 {}", p.path.display(), p.sha256);
    }
    Ok(())
}

fn argocd_settings(cfg: &Config) -> anyhow::Result<Settings> {
    Ok(Settings::load(&cfg.gitops_dir)?)
}

/// `images pull argocd`: only the version pinned in gitops/settings.yaml.
fn pull_argocd(
    cfg: &Config,
    cache: &ImageCache,
    version: Option<&str>,
    base: Option<&str>,
) -> anyhow::Result<()> {
    let s = argocd_settings(cfg)?;
    if let Some(v) = version
        && v != s.argocd.version
    {
        bail!(
            "--version {v}: only the version pinned in {}/settings.yaml ({}) can be verified; change the pin first",
            cfg.gitops_dir.display(),
            s.argocd.version
        );
    }
    let rt = tokio::runtime::Runtime::new()?;
    let (path, fetched) = rt.block_on(fetch::pull(&client()?, &s, cache, base))?;
    let what = if fetched { "downloaded" } else { "already cached" };
    println!(
        "argocd {}: {what}, sha256 {} ({})",
        s.argocd.version,
        s.argocd.sha256,
        path.display()
    );
    Ok(())
}

/// `images import argocd <file>`.
fn import_argocd(cfg: &Config, cache: &ImageCache, file: &Path) -> anyhow::Result<()> {
    let s = argocd_settings(cfg)?;
    let path = fetch::import(&s, cache, file)?;
    println!(
        "argocd {}: imported, sha256 {} ({})",
        s.argocd.version,
        s.argocd.sha256,
        path.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    #[tokio::test]
    async fn a_stalled_mirror_fails_the_pull_instead_of_hanging() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // Accepts, reads the request, never answers.
        let _server = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                held.push(s);
            }
        });
        let client = super::client_with(Duration::from_secs(1), Duration::from_millis(300)).unwrap();
        let started = Instant::now();
        let r = client.get(format!("http://{addr}/talos/vmlinuz")).send().await;
        assert!(r.is_err(), "a stalled mirror is an error");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
    }
}
