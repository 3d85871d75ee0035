//! `images pull --all`, `images bundle -o site.tar` and `images import site.tar`:
//! everything the site needs ([`Needs`]) fetched with the existing pull paths (Talos
//! per schematic from the Image Factory, Flatcar and k0s releases, the ArgoCD pin),
//! then carried to an offline appliance as one verified tar ([`ImageCache::bundle`]).
//! Downloads resume from `<file>.part` with `Range` and show a bar per file on a
//! terminal (`images::download`); otherwise one line per file is printed.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, bail};
use provisioner_core::k0s::mirror::Kind;

use crate::cmd::needs::{Needs, Source};
use crate::config::Config;
use crate::images::{ImageCache, Placed};
use crate::os::k0s::pull as k0s_pull;

/// Upstream bases for `pull --all`.
#[derive(Debug, Clone)]
pub struct Bases {
    /// Image Factory.
    pub factory: String,
    /// Flatcar releases (`<base>/<version>/<file>`).
    pub flatcar: String,
    /// k0s releases (`<base>/<tag>/<file>`).
    pub k0s: String,
    /// A mirror of the ArgoCD pin's origin (None: the pinned URL).
    pub argocd: Option<String>,
}

fn needs(cfg: &Config) -> anyhow::Result<Needs> {
    let inputs = crate::inputs::Inputs::load(cfg.input_dirs()).map_err(|e| {
        anyhow::anyhow!(
            "the inputs do not validate (run `provisioner check`):\n{}",
            e.problems
        )
    })?;
    let n = Needs::of(&inputs.catalog, &inputs.infra, inputs.gitops.as_ref().ok());
    if !n.problems.is_empty() {
        bail!("{}", n.problems.join("\n"));
    }
    Ok(n)
}

fn line(placed: &[Placed], cache: &ImageCache) {
    for p in placed {
        let rel = p.path.strip_prefix(cache.dir()).unwrap_or(&p.path);
        let what = if p.fetched { "downloaded" } else { "already cached" };
        println!("{}: {what}, sha256 {}", rel.display(), p.sha256);
    }
}

/// `images pull --all`: every image, mirrored release and the ArgoCD pin.
pub fn pull_all(cfg: &Config, bases: &Bases) -> anyhow::Result<()> {
    let n = needs(cfg)?;
    let cache = cfg.image_cache();
    let client = reqwest::Client::builder()
        .user_agent(concat!("provisioner/", env!("CARGO_PKG_VERSION")))
        .build()?;
    let rt = tokio::runtime::Runtime::new()?;
    let mut flatcar_done = Vec::new();
    for need in n.images.values() {
        let img = &need.image;
        println!("{}: for {}", img.id, need.needed_by.join(", "));
        let placed = match &need.source {
            Source::Factory {
                schematic, version, ..
            } => {
                let (created, placed) = rt
                    .block_on(crate::os::talos::factory::pull(
                        &client,
                        &cache,
                        &bases.factory,
                        schematic,
                        version,
                        img,
                    ))
                    .with_context(|| format!("image {}", img.id))?;
                println!("schematic {created}: present on {}", bases.factory);
                placed
            }
            Source::Flatcar { version } => {
                flatcar_done.push(version.clone());
                rt.block_on(k0s_pull::pull_flatcar(
                    &client,
                    &cache,
                    &bases.flatcar,
                    version,
                    img,
                ))
                .with_context(|| format!("image {}", img.id))?
            }
            Source::Descriptor => {
                let files = ImageCache::sources(img, None)?;
                rt.block_on(cache.pull_image(&client, img, &files))
                    .with_context(|| format!("image {}", img.id))?
            }
        };
        line(&placed, &cache);
    }
    for ((kind, version), who) in &n.mirrors {
        let placed = match Kind::parse(kind) {
            Some(Kind::K0s) => rt.block_on(k0s_pull::pull_k0s(&client, &cache, &bases.k0s, version))?,
            Some(Kind::Flatcar) if flatcar_done.contains(version) => continue,
            Some(Kind::Flatcar) => bail!(
                "Flatcar {version} (for {}): no profile of that cluster names a Flatcar PXE image to pull with it",
                who.join(", ")
            ),
            None => continue,
        };
        println!("{kind} {version}: for {}", who.join(", "));
        line(&placed, &cache);
    }
    if n.argocd.is_some() {
        let s = crate::gitops::settings::Settings::load(&cfg.gitops_dir)?;
        let (path, fetched) = rt.block_on(crate::cluster::argocd::fetch::pull(
            &client,
            &s,
            &cache,
            bases.argocd.as_deref(),
        ))?;
        let what = if fetched { "downloaded" } else { "already cached" };
        println!(
            "argocd {}: {what}, sha256 {} ({})",
            s.argocd.version,
            s.argocd.sha256,
            path.display()
        );
    }
    let entries = n.entries(&cache);
    let bad: Vec<_> = entries.iter().filter(|e| e.status != "ok").collect();
    if !bad.is_empty() {
        let list: Vec<String> = bad.iter().map(|e| format!("{} {}", e.rel, e.status)).collect();
        bail!("after the pull, not every file is verified:\n{}", list.join("\n"));
    }
    println!("ok: {} file(s) cached and verified", entries.len());
    Ok(())
}

/// SHA-256s known from the inputs (descriptors, the ArgoCD pin) by cache path.
fn pins(n: &Needs, cache: &ImageCache) -> BTreeMap<String, String> {
    n.entries(cache)
        .into_iter()
        .filter_map(|e| e.sha256.map(|s| (e.rel, s)))
        .collect()
}

/// `images bundle -o FILE`: every needed file, verified, into one tar.
pub fn bundle(cfg: &Config, out: &Path) -> anyhow::Result<()> {
    let n = needs(cfg)?;
    let cache = cfg.image_cache();
    let entries = n.entries(&cache);
    let bad: Vec<String> = entries
        .iter()
        .filter(|e| e.status != "ok")
        .map(|e| format!("{} {} (needed by {})", e.rel, e.status, e.needed_by))
        .collect();
    if !bad.is_empty() {
        bail!(
            "the cache is not complete and verified; run `provisioner images pull --all` first:\n{}",
            bad.join("\n")
        );
    }
    let pinned = pins(&n, &cache);
    let rels: Vec<String> = entries.into_iter().map(|e| e.rel).collect();
    let m = cache.bundle(&rels, &|rel| pinned.get(rel).cloned(), out)?;
    let bytes: u64 = m.files.values().map(|f| f.size).sum();
    println!(
        "bundle {}: {} file(s), {bytes} bytes, manifest with SHA-256 per file",
        out.display(),
        m.files.len()
    );
    Ok(())
}

/// `images import FILE.tar`: a bundle into this appliance's cache, all of it checked
/// before any of it is placed.
pub fn import(cfg: &Config, file: &Path) -> anyhow::Result<()> {
    let cache = cfg.image_cache();
    // Pins from this appliance's own inputs, when they load: a bundle made for other
    // inputs is still checked against its manifest.
    let pinned = needs(cfg).map(|n| pins(&n, &cache)).unwrap_or_default();
    let m = cache.import_bundle(file, &|rel| pinned.get(rel).cloned())?;
    for (rel, f) in &m.files {
        println!("{rel}: imported, sha256 {}", f.sha256);
    }
    if !cache.dir().starts_with(&cfg.state_dir) {
        crate::sys::state::adopt(cache.dir())?;
    } else {
        crate::sys::state::adopt(&cfg.state_dir)?;
    }
    println!("ok: {} file(s) imported from {}", m.files.len(), file.display());
    Ok(())
}
