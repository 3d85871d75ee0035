//! Filling the mirror: `images pull flatcar|k0s --version …` from upstream (or a
//! local stand-in in tests), and `images import` of files copied by hand for
//! air-gapped sites. Where the files land is the image cache's business
//! ([`ImageCache`]); what a release consists of is `provisioner_core::k0s::mirror`.
//!
//! Verification: k0s binaries must match the release's own `sha256sums.txt`
//! (k0s `.github/workflows/release.yml` publishes it with every tag). Flatcar
//! publishes GPG signatures, which `flatcar-install` checks on the machine against
//! its built-in key; the appliance mirrors the `.sig` next to the image and records
//! the SHA-256 of what it downloaded first, so a later download or import that
//! differs is refused.

use std::path::{Path, PathBuf};

use provisioner_core::catalog::Image;
use provisioner_core::k0s::ignition::url_path_segment;
use provisioner_core::k0s::mirror::{self, Kind};
use sha2::{Digest, Sha256};

use crate::images::{CacheError, ImageCache, Placed, Wanted};

/// Flatcar's stable channel, amd64 (k0s-flatcar.md §3).
pub const FLATCAR_BASE: &str = "https://stable.release.flatcar-linux.net/amd64-usr";
/// k0s release downloads (k0s-flatcar.md §12).
pub const K0S_BASE: &str = "https://github.com/k0sproject/k0s/releases/download";

fn refused(why: String) -> CacheError {
    CacheError::Refused(why)
}

/// `images pull flatcar --version V`: the disk image and its signature into the
/// mirror, and the PXE kernel and initramfs of `image` (the descriptor's file names)
/// into the image cache, all from `<base>/<V>/`.
pub async fn pull_flatcar(
    client: &reqwest::Client,
    cache: &ImageCache,
    base: &str,
    version: &str,
    image: &Image,
) -> Result<Vec<Placed>, CacheError> {
    if !Kind::Flatcar.valid_version(version) {
        return Err(refused(format!(
            "--version: {version:?} is not a Flatcar release like 4459.2.0"
        )));
    }
    let base = base.trim_end_matches('/');
    let url = |f: &str| format!("{base}/{version}/{f}");
    let mirror_files: Vec<Wanted> = Kind::Flatcar
        .files(version)
        .into_iter()
        .map(|f| Wanted {
            url: url(&f),
            name: f,
            sha256: None,
        })
        .collect();
    let mut out = cache
        .fetch_into(client, &cache.mirror_dir(Kind::Flatcar, version), &mirror_files)
        .await?;
    let pxe: Vec<Wanted> = std::iter::once(&image.kernel)
        .chain(&image.initrds)
        .map(|f| Wanted {
            name: f.file.clone(),
            url: url(&f.file),
            sha256: f.sha256.clone(),
        })
        .collect();
    out.extend(cache.pull_image(client, image, &pxe).await?);
    Ok(out)
}

/// `images pull k0s --version T`: `sha256sums.txt` and `k0s-<T>-amd64` from
/// `<base>/<T>/`, the binary checked against the list.
pub async fn pull_k0s(
    client: &reqwest::Client,
    cache: &ImageCache,
    base: &str,
    tag: &str,
) -> Result<Vec<Placed>, CacheError> {
    if !Kind::K0s.valid_version(tag) {
        return Err(refused(format!(
            "--version: {tag:?} is not a k0s release tag like v1.36.3+k0s.0"
        )));
    }
    let dir = cache.mirror_dir(Kind::K0s, tag);
    let io = |source| CacheError::Io {
        path: dir.clone(),
        source,
    };
    tokio::fs::create_dir_all(&dir).await.map_err(io)?;
    let enc = url_path_segment(tag);
    let base = base.trim_end_matches('/');
    let sums_url = format!("{base}/{enc}/{}", mirror::K0S_SUMS);
    let http = |what, source| CacheError::Http {
        what,
        url: sums_url.clone(),
        source,
    };
    let resp = client
        .get(&sums_url)
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(|e| http("GET", e))?;
    let text = resp.text().await.map_err(|e| http("reading", e))?;
    let bin = mirror::k0s_binary(tag);
    let want = mirror::parse_sums(&text)
        .remove(&bin)
        .ok_or_else(|| refused(format!("{sums_url} lists no {bin}")))?;
    let sums_path = dir.join(mirror::K0S_SUMS);
    tokio::fs::write(&sums_path, &text).await.map_err(io)?;
    let mut out = vec![Placed {
        sha256: hex::encode(Sha256::digest(text.as_bytes())),
        path: sums_path,
        fetched: true,
    }];
    let wanted = Wanted {
        url: format!("{base}/{enc}/{}", url_path_segment(&bin)),
        name: bin,
        sha256: Some(want),
    };
    out.extend(cache.fetch_into(client, &dir, &[wanted]).await?);
    Ok(out)
}

/// `images import flatcar|k0s --version V FILE…`: copies files downloaded elsewhere.
/// k0s binaries are checked against a `sha256sums.txt` given with them (or already
/// imported); Flatcar files against recorded sums. PXE files of `image` go to the
/// image cache, the rest to the mirror; unknown names are refused.
pub fn import(
    cache: &ImageCache,
    kind: Kind,
    version: &str,
    image: Option<&Image>,
    files: &[PathBuf],
) -> Result<Vec<Placed>, CacheError> {
    if !kind.valid_version(version) {
        return Err(refused(format!(
            "--version: {version:?} is not a valid {} version",
            kind.name()
        )));
    }
    let mdir = cache.mirror_dir(kind, version);
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
        if let Some(i) = pxe {
            out.extend(cache.import_image(i, std::slice::from_ref(p))?);
            continue;
        }
        if !kind.files(version).contains(&name) {
            return Err(refused(format!(
                "{}: not a file of {} {version} (expected one of {:?}{})",
                p.display(),
                kind.name(),
                kind.files(version),
                if kind == Kind::Flatcar {
                    " or the PXE image's files"
                } else {
                    ""
                }
            )));
        }
        out.extend(cache.import_into(&mdir, std::slice::from_ref(p), &|_, name| {
            if kind != Kind::K0s || name == mirror::K0S_SUMS {
                return Ok(None);
            }
            let list = std::fs::read_to_string(mdir.join(mirror::K0S_SUMS)).map_err(|_| {
                refused(format!(
                    "import {name} together with the release's {}",
                    mirror::K0S_SUMS
                ))
            })?;
            mirror::parse_sums(&list)
                .remove(name)
                .map(Some)
                .ok_or_else(|| refused(format!("{} lists no {name}", mirror::K0S_SUMS)))
        })?);
    }
    Ok(out)
}
