//! The image cache: `images pull` (Image Factory downloads), `images import`
//! (air-gapped copies) and `images ls`.
//!
//! Files land in `<cache_dir>/<image id>/<file>`, where the boot path serves them.
//! Downloads go to `<file>.part` and resume with `Range` (RFC 9110 §14) after an
//! interruption; a file is moved into place only once its SHA-256 is known good.
//! Checksums: the descriptor's `sha256` if set, else the one recorded in
//! `<cache_dir>/<image id>/SHA256SUMS` at the first download (trust on first use: the
//! community Image Factory publishes none, its `.sha256` suffix answers 402, talos.md
//! §4.7); later downloads and `images import` must match it. A cached file that no
//! longer matches is moved aside before anything is fetched, so the boot path never
//! serves it. Talos pulls go through [`factory`] (the schematic is POSTed first).

pub mod mirror;

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use futures::StreamExt;
use provisioner_core::catalog::{Image, ImageFile};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

/// The recorded checksums file in each image folder.
pub const SUMS: &str = "SHA256SUMS";

/// The Flatcar PXE image descriptor `pull flatcar` fills by default.
pub const FLATCAR_IMAGE: &str = "flatcar-stable-amd64";

/// Default Image Factory.
pub const FACTORY: &str = "https://factory.talos.dev";

/// Reads `SHA256SUMS` (`<hex>  <file>` lines, as sha256sum writes them).
pub fn read_sums(dir: &Path) -> BTreeMap<String, String> {
    std::fs::read_to_string(dir.join(SUMS))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            l.split_once("  ")
                .map(|(h, f)| (f.trim().to_string(), h.trim().to_string()))
        })
        .collect()
}

fn write_sums(dir: &Path, sums: &BTreeMap<String, String>) -> anyhow::Result<()> {
    let text: String = sums.iter().map(|(f, h)| format!("{h}  {f}\n")).collect();
    let tmp = dir.join(format!("{SUMS}.tmp"));
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        // The record is what later pulls are judged by: on disk before it is used.
        f.sync_all()?;
    }
    std::fs::rename(&tmp, dir.join(SUMS))?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// SHA-256 of a file, hex.
pub fn sha256_file(path: &Path) -> anyhow::Result<String> {
    let mut f = std::fs::File::open(path).with_context(|| path.display().to_string())?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h)?;
    Ok(hex::encode(h.finalize()))
}

/// The checksum a file must have: descriptor first, then the recorded one.
fn expected(file: &ImageFile, sums: &BTreeMap<String, String>) -> Option<String> {
    file.sha256.clone().or_else(|| sums.get(&file.file).cloned())
}

fn progress(len: Option<u64>, name: &str) -> indicatif::ProgressBar {
    // A bar only on a terminal: logs and CI get one line per file instead.
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let pb = len.map_or_else(indicatif::ProgressBar::new_spinner, indicatif::ProgressBar::new);
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{msg} {bytes}/{total_bytes} {bar:30} {bytes_per_sec}")
    {
        pb.set_style(style);
    }
    pb.set_message(name.to_string());
    pb
}

/// Downloads `url` to `dest` (resuming `dest.part`), checks it against `want` when
/// given, and returns its SHA-256. On a mismatch the download is deleted.
pub async fn download(
    client: &reqwest::Client,
    url: &str,
    dest: &Path,
    want: Option<&str>,
) -> anyhow::Result<String> {
    let part = dest.with_extension(format!(
        "{}part",
        dest.extension()
            .map(|e| format!("{}.", e.to_string_lossy()))
            .unwrap_or_default()
    ));
    let have = tokio::fs::metadata(&part).await.map(|m| m.len()).unwrap_or(0);
    let mut req = client.get(url);
    if have > 0 {
        req = req.header(reqwest::header::RANGE, format!("bytes={have}-"));
    }
    let resp = req.send().await.with_context(|| format!("GET {url}"))?;
    let status = resp.status();
    let resumed = status == reqwest::StatusCode::PARTIAL_CONTENT && have > 0;
    if status == reqwest::StatusCode::RANGE_NOT_SATISFIABLE && have > 0 {
        // The partial file already holds everything the server has.
    } else if !status.is_success() {
        // The factory explains itself in a one-line plain-text body (e.g. `schematic ID
        // "…" not found`); quote it.
        let body = resp.text().await.unwrap_or_default();
        let body: String = body.trim().chars().take(300).collect();
        bail!("GET {url}: HTTP {status}: {body}");
    } else {
        let mut f = tokio::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(resumed)
            .truncate(!resumed)
            .open(&part)
            .await
            .with_context(|| part.display().to_string())?;
        let total = resp.content_length().map(|l| if resumed { l + have } else { l });
        let pb = progress(
            total,
            dest.file_name().and_then(|n| n.to_str()).unwrap_or("download"),
        );
        pb.set_position(if resumed { have } else { 0 });
        let mut body = resp.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.with_context(|| format!("reading {url}"))?;
            f.write_all(&chunk).await?;
            pb.inc(chunk.len() as u64);
        }
        f.sync_all().await?;
        pb.finish_and_clear();
    }
    let part2 = part.clone();
    let sum = tokio::task::spawn_blocking(move || sha256_file(&part2)).await??;
    if let Some(w) = want
        && !w.eq_ignore_ascii_case(&sum)
    {
        let _ = tokio::fs::remove_file(&part).await;
        bail!(
            "{}: SHA-256 {sum} does not match the expected {w}; download rejected and deleted",
            dest.display()
        );
    }
    tokio::fs::rename(&part, dest).await?;
    Ok(sum)
}

/// The files of `image` and the URL each comes from: `<factory>/image/<schematic>/
/// <version>/<file>` when a factory base is given, else the descriptor's URLs.
pub fn sources(
    image: &Image,
    factory: Option<(&str, &str, &str)>,
) -> anyhow::Result<Vec<(ImageFile, String)>> {
    std::iter::once(&image.kernel)
        .chain(image.initrds.iter())
        .map(|f| {
            let url = match factory {
                Some((base, schematic, version)) => format!(
                    "{}/image/{schematic}/{version}/{}",
                    base.trim_end_matches('/'),
                    f.file
                ),
                None => f
                    .url
                    .clone()
                    .with_context(|| format!("image {}: file {} has no url", image.id, f.file))?,
            };
            Ok((f.clone(), url))
        })
        .collect()
}

/// Pulls every file of `image` into `cache/<id>/`, recording checksums. Files already
/// cached and matching are skipped. Returns (file, sha256, downloaded?).
pub async fn pull(
    client: &reqwest::Client,
    cache: &Path,
    image: &Image,
    files: &[(ImageFile, String)],
) -> anyhow::Result<Vec<(String, String, bool)>> {
    let dir = cache.join(&image.id);
    tokio::fs::create_dir_all(&dir).await?;
    let mut sums = read_sums(&dir);
    let mut out = Vec::new();
    for (f, url) in files {
        let dest = dir.join(&f.file);
        let want = expected(f, &sums);
        if dest.is_file() {
            let d = dest.clone();
            let have = tokio::task::spawn_blocking(move || sha256_file(&d)).await??;
            if want.as_deref().is_some_and(|w| w.eq_ignore_ascii_case(&have)) {
                out.push((f.file.clone(), have, false));
                continue;
            }
            if want.is_some() {
                // Changed since it was verified: out of the served path before anything else.
                let aside = dir.join(format!("{}.mismatch", f.file));
                tokio::fs::rename(&dest, &aside).await?;
                tracing::warn!(file = %dest.display(), moved_to = %aside.display(), sha256 = %have,
                    "cached file does not match its recorded SHA-256; moved aside");
            }
        }
        let sum = download(client, url, &dest, want.as_deref()).await?;
        sums.insert(f.file.clone(), sum.clone());
        write_sums(&dir, &sums)?;
        out.push((f.file.clone(), sum, true));
    }
    Ok(out)
}

/// `images import`: copies local files into the cache for `image`, checking names
/// against the descriptor and checksums against the descriptor or the record.
pub fn import(cache: &Path, image: &Image, paths: &[PathBuf]) -> anyhow::Result<Vec<(String, String)>> {
    let dir = cache.join(&image.id);
    std::fs::create_dir_all(&dir)?;
    let mut sums = read_sums(&dir);
    let mut out = Vec::new();
    for p in paths {
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let Some(f) = std::iter::once(&image.kernel)
            .chain(image.initrds.iter())
            .find(|f| f.file == name)
        else {
            bail!("{}: image {} has no file named {name:?}", p.display(), image.id);
        };
        let sum = sha256_file(p)?;
        if let Some(w) = expected(f, &sums)
            && !w.eq_ignore_ascii_case(&sum)
        {
            bail!("{}: SHA-256 {sum} does not match the expected {w}", p.display());
        }
        let tmp = dir.join(format!("{name}.part"));
        std::fs::copy(p, &tmp).with_context(|| p.display().to_string())?;
        std::fs::rename(&tmp, dir.join(name))?;
        sums.insert(name.to_string(), sum.clone());
        write_sums(&dir, &sums)?;
        out.push((name.to_string(), sum));
    }
    Ok(out)
}

/// One row of `images ls`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// Image id.
    pub image: String,
    /// File name.
    pub file: String,
    /// `ok`, `missing`, `unverified` (no checksum known) or `MISMATCH`.
    pub status: &'static str,
    /// Size in bytes when present.
    pub size: Option<u64>,
}

/// Cache status of every file of every image.
pub fn list(cache: &Path, images: &BTreeMap<String, Image>) -> Vec<Listed> {
    let mut rows = Vec::new();
    for img in images.values() {
        let dir = cache.join(&img.id);
        let sums = read_sums(&dir);
        for f in std::iter::once(&img.kernel).chain(img.initrds.iter()) {
            let path = dir.join(&f.file);
            let size = std::fs::metadata(&path).ok().map(|m| m.len());
            let status = match (size, expected(f, &sums)) {
                (None, _) => "missing",
                (Some(_), None) => "unverified",
                (Some(_), Some(w)) => match sha256_file(&path) {
                    Ok(h) if h.eq_ignore_ascii_case(&w) => "ok",
                    _ => "MISMATCH",
                },
            };
            rows.push(Listed {
                image: img.id.clone(),
                file: f.file.clone(),
                status,
                size,
            });
        }
    }
    rows
}

/// `provisioner images …`.
#[derive(Debug, clap::Subcommand)]
pub enum ImagesCommand {
    /// Download an image's files into the cache: Talos from the Image Factory;
    /// Flatcar (PXE kernel + initramfs, disk image + signature for the mirror) or a
    /// k0s release (binary checked against its sha256sums.txt) from upstream; the
    /// ArgoCD install manifest pinned in gitops/settings.yaml (sha256 verified).
    Pull {
        /// `talos`, `flatcar`, `k0s` or `argocd`.
        #[arg(value_parser = ["talos", "flatcar", "k0s", "argocd"])]
        kind: String,
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
    /// `images import argocd <install.yaml>`: the pinned ArgoCD manifest.
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
}

/// Runs an `images` subcommand.
pub fn run(cmd: ImagesCommand, args: &crate::cmd::cli::ConfigArgs) -> anyhow::Result<()> {
    let cfg = crate::cmd::commands::load_config(args)?;
    if let Some(done) = crate::cluster::argocd::fetch::command(&cmd, &cfg) {
        return done;
    }
    let cat = crate::cmd::commands::load_catalog(&cfg)?;
    let cache = cfg.cache_dir();
    match cmd {
        ImagesCommand::Pull {
            kind,
            version,
            base,
            image,
            ..
        } if kind != "talos" => {
            let image = image.as_deref().unwrap_or(FLATCAR_IMAGE);
            let version = version.unwrap_or_default();
            crate::cmd::k0s::pull(&cfg, &kind, &version, base.as_deref(), image)?;
        }
        ImagesCommand::Pull {
            version,
            schematic,
            factory: base,
            image,
            ..
        } => {
            crate::os::talos::factory::pull_talos(
                &cfg,
                schematic.as_deref().unwrap_or_default(),
                version.as_deref().unwrap_or_default(),
                &base,
                image.as_deref(),
            )?;
        }
        ImagesCommand::Import {
            image,
            mirror: Some(kind),
            version,
            files,
        } => {
            let image = image.as_deref().unwrap_or(FLATCAR_IMAGE);
            let version = version.unwrap_or_default();
            crate::cmd::k0s::import(&cfg, &kind, &version, image, &files)?;
        }
        ImagesCommand::Import { image, files, .. } => {
            let image = image.context("--image is required (or --mirror flatcar|k0s, or `argocd <file>`)")?;
            let img = cat
                .images
                .get(&image)
                .with_context(|| format!("no image {image:?} in images/"))?;
            for (file, sum) in import(&cache, img, &files)? {
                println!("{}/{file}: imported, sha256 {sum}", img.id);
            }
        }
        ImagesCommand::Ls => {
            for r in list(&cache, &cat.images) {
                let size = r.size.map(|s| s.to_string()).unwrap_or_else(|| "-".into());
                println!("{:<40} {:<24} {:>12} {}", r.image, r.file, size, r.status);
            }
        }
    }
    Ok(())
}
