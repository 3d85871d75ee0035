//! Filling the mirror: `images pull flatcar|k0s --version …` from upstream (or a
//! local stand-in in tests), and `images import` of files copied by hand for
//! air-gapped sites.
//!
//! Verification: k0s binaries must match the release's own `sha256sums.txt`
//! (k0s `.github/workflows/release.yml` publishes it with every tag). Flatcar
//! publishes GPG signatures, which `flatcar-install` checks on the machine against
//! its built-in key; the appliance mirrors the `.sig` next to the image and records
//! the SHA-256 of what it downloaded first, so a later download or import that
//! differs is refused. Downloads land in `<file>.part` and are renamed into place
//! only when verified; every recorded sum goes to the directory's `SHA256SUMS`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use futures::StreamExt;
use provisioner_core::catalog::Image;
use provisioner_core::k0s::ignition::url_path_segment;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::images::mirror::{self, Kind};

/// Flatcar's stable channel, amd64 (k0s-flatcar.md §3).
pub const FLATCAR_BASE: &str = "https://stable.release.flatcar-linux.net/amd64-usr";
/// k0s release downloads (k0s-flatcar.md §12).
pub const K0S_BASE: &str = "https://github.com/k0sproject/k0s/releases/download";

/// SHA-256 of a file, hex.
pub fn sha256_file(path: &Path) -> anyhow::Result<String> {
    let mut f = std::fs::File::open(path).with_context(|| path.display().to_string())?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h)?;
    Ok(hex::encode(h.finalize()))
}

fn read_sums(dir: &Path) -> BTreeMap<String, String> {
    std::fs::read_to_string(dir.join(mirror::SUMS))
        .map(|t| mirror::parse_sums(&t))
        .unwrap_or_default()
}

fn write_sums(dir: &Path, sums: &BTreeMap<String, String>) -> anyhow::Result<()> {
    let text: String = sums.iter().map(|(f, h)| format!("{h}  {f}\n")).collect();
    let tmp = dir.join(format!("{}.tmp", mirror::SUMS));
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, dir.join(mirror::SUMS))?;
    Ok(())
}

/// Downloads `url` to `dest` via `dest.part`; checks `want` (hex SHA-256) when given
/// and returns the file's SHA-256. A mismatch deletes the download.
pub async fn fetch(
    client: &reqwest::Client,
    url: &str,
    dest: &Path,
    want: Option<&str>,
) -> anyhow::Result<String> {
    let part = PathBuf::from(format!("{}.part", dest.display()));
    let resp = client
        .get(url)
        .send()
        .await
        .with_context(|| format!("GET {url}"))?;
    if !resp.status().is_success() {
        bail!("GET {url}: HTTP {}", resp.status());
    }
    let mut f = tokio::fs::File::create(&part)
        .await
        .with_context(|| part.display().to_string())?;
    let mut h = Sha256::new();
    let mut body = resp.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.with_context(|| format!("reading {url}"))?;
        h.update(&chunk);
        f.write_all(&chunk).await?;
    }
    f.sync_all().await?;
    drop(f);
    let sum = hex::encode(h.finalize());
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

/// One file placed in the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placed {
    /// Where it is.
    pub path: PathBuf,
    /// Its SHA-256.
    pub sha256: String,
    /// Downloaded now (false: already there and matching).
    pub fetched: bool,
}

/// Fetches `files` (name, url, expected sum) into `dir`, recording sums in `dir`'s
/// `SHA256SUMS`; files already present with the recorded or expected sum are kept.
async fn fetch_all(
    client: &reqwest::Client,
    dir: &Path,
    files: &[(String, String, Option<String>)],
) -> anyhow::Result<Vec<Placed>> {
    tokio::fs::create_dir_all(dir).await?;
    let mut sums = read_sums(dir);
    let mut out = Vec::new();
    for (name, url, expected) in files {
        let dest = dir.join(name);
        let want = expected.clone().or_else(|| sums.get(name).cloned());
        if dest.is_file()
            && let Some(w) = &want
        {
            let d = dest.clone();
            let have = tokio::task::spawn_blocking(move || sha256_file(&d)).await??;
            if have.eq_ignore_ascii_case(w) {
                sums.insert(name.clone(), have.clone());
                write_sums(dir, &sums)?;
                out.push(Placed {
                    path: dest,
                    sha256: have,
                    fetched: false,
                });
                continue;
            }
        }
        let sum = fetch(client, url, &dest, want.as_deref()).await?;
        sums.insert(name.clone(), sum.clone());
        write_sums(dir, &sums)?;
        out.push(Placed {
            path: dest,
            sha256: sum,
            fetched: true,
        });
    }
    Ok(out)
}

/// `images pull flatcar --version V`: the disk image and its signature into the
/// mirror, and the PXE kernel and initramfs of `image` (the descriptor's file names)
/// into the image cache, all from `<base>/<V>/`.
pub async fn pull_flatcar(
    client: &reqwest::Client,
    cache: &Path,
    base: &str,
    version: &str,
    image: &Image,
) -> anyhow::Result<Vec<Placed>> {
    if !Kind::Flatcar.valid_version(version) {
        bail!("--version: {version:?} is not a Flatcar release like 4459.2.0");
    }
    let base = base.trim_end_matches('/');
    let url = |f: &str| format!("{base}/{version}/{f}");
    let mirror_files: Vec<_> = Kind::Flatcar
        .files(version)
        .into_iter()
        .map(|f| (f.clone(), url(&f), None))
        .collect();
    let mut out = fetch_all(client, &mirror::dir(cache, Kind::Flatcar, version), &mirror_files).await?;
    let pxe: Vec<_> = std::iter::once(&image.kernel)
        .chain(&image.initrds)
        .map(|f| (f.file.clone(), url(&f.file), f.sha256.clone()))
        .collect();
    out.extend(fetch_all(client, &cache.join(&image.id), &pxe).await?);
    Ok(out)
}

/// `images pull k0s --version T`: `sha256sums.txt` and `k0s-<T>-amd64` from
/// `<base>/<T>/`, the binary checked against the list.
pub async fn pull_k0s(
    client: &reqwest::Client,
    cache: &Path,
    base: &str,
    tag: &str,
) -> anyhow::Result<Vec<Placed>> {
    if !Kind::K0s.valid_version(tag) {
        bail!("--version: {tag:?} is not a k0s release tag like v1.36.3+k0s.0");
    }
    let dir = mirror::dir(cache, Kind::K0s, tag);
    tokio::fs::create_dir_all(&dir).await?;
    let enc = url_path_segment(tag);
    let base = base.trim_end_matches('/');
    let sums_url = format!("{base}/{enc}/{}", mirror::K0S_SUMS);
    let text = client
        .get(&sums_url)
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .with_context(|| format!("GET {sums_url}"))?
        .text()
        .await?;
    let bin = mirror::k0s_binary(tag);
    let want = mirror::parse_sums(&text)
        .remove(&bin)
        .with_context(|| format!("{sums_url} lists no {bin}"))?;
    let sums_path = dir.join(mirror::K0S_SUMS);
    tokio::fs::write(&sums_path, &text).await?;
    let mut out = vec![Placed {
        sha256: hex::encode(Sha256::digest(text.as_bytes())),
        path: sums_path,
        fetched: true,
    }];
    let bin_url = format!("{base}/{enc}/{}", url_path_segment(&bin));
    out.extend(fetch_all(client, &dir, &[(bin, bin_url, Some(want))]).await?);
    Ok(out)
}

/// `images import flatcar|k0s --version V FILE…`: copies files downloaded elsewhere.
/// k0s binaries are checked against a `sha256sums.txt` given with them (or already
/// imported); Flatcar files against recorded sums. PXE files of `image` go to the
/// image cache, the rest to the mirror; unknown names are refused.
pub fn import(
    cache: &Path,
    kind: Kind,
    version: &str,
    image: Option<&Image>,
    files: &[PathBuf],
) -> anyhow::Result<Vec<Placed>> {
    if !kind.valid_version(version) {
        bail!("--version: {version:?} is not a valid {} version", kind.name());
    }
    let mdir = mirror::dir(cache, kind, version);
    std::fs::create_dir_all(&mdir)?;
    let name_of = |p: &Path| {
        p.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string()
    };
    // The k0s list first, so the binary can be checked against it.
    let mut ordered: Vec<&PathBuf> = files.iter().collect();
    ordered.sort_by_key(|p| name_of(p) != mirror::K0S_SUMS);
    let mut out = Vec::new();
    for p in ordered {
        let name = name_of(p);
        let pxe = image.filter(|i| {
            std::iter::once(&i.kernel)
                .chain(&i.initrds)
                .any(|f| f.file == name)
        });
        let dir = match pxe {
            Some(i) => cache.join(&i.id),
            None if kind.files(version).contains(&name) => mdir.clone(),
            None => bail!(
                "{}: not a file of {} {version} (expected one of {:?}{})",
                p.display(),
                kind.name(),
                kind.files(version),
                if kind == Kind::Flatcar {
                    " or the PXE image's files"
                } else {
                    ""
                }
            ),
        };
        std::fs::create_dir_all(&dir)?;
        let sum = sha256_file(p)?;
        let mut sums = read_sums(&dir);
        let upstream = if kind == Kind::K0s && name != mirror::K0S_SUMS {
            let list = std::fs::read_to_string(mdir.join(mirror::K0S_SUMS)).with_context(|| {
                format!("import {} together with the release's {}", name, mirror::K0S_SUMS)
            })?;
            Some(
                mirror::parse_sums(&list)
                    .remove(&name)
                    .with_context(|| format!("{} lists no {name}", mirror::K0S_SUMS))?,
            )
        } else {
            None
        };
        if let Some(w) = upstream.or_else(|| sums.get(&name).cloned())
            && !w.eq_ignore_ascii_case(&sum)
        {
            bail!("{}: SHA-256 {sum} does not match the expected {w}", p.display());
        }
        let dest = dir.join(&name);
        let tmp = dir.join(format!("{name}.part"));
        std::fs::copy(p, &tmp).with_context(|| p.display().to_string())?;
        std::fs::rename(&tmp, &dest)?;
        sums.insert(name, sum.clone());
        write_sums(&dir, &sums)?;
        out.push(Placed {
            path: dest,
            sha256: sum,
            fetched: false,
        });
    }
    Ok(out)
}
