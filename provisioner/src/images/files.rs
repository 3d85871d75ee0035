//! Filling the cache: files of an image descriptor, of a mirrored release, or one
//! pinned file, downloaded or imported; and the status of every descriptor's files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use provisioner_core::catalog::{Image, ImageFile};

use super::fetch::{copy_verified, download, io, parse_sums_file, sha256_blocking, sha256_file, write_sums};
use super::{CacheError, ImageCache};

/// One file to fetch into a cache folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    /// Its name in the folder.
    pub name: String,
    /// Where it comes from.
    pub url: String,
    /// Its SHA-256 when known beforehand (else the folder's record, else trust on
    /// first use).
    pub sha256: Option<String>,
}

/// One file placed in the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placed {
    /// Where it is.
    pub path: PathBuf,
    /// Its SHA-256.
    pub sha256: String,
    /// Downloaded now (false: already there and matching, or imported).
    pub fetched: bool,
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

/// Says whether a file name belongs in a folder (`Err`: why not) and its SHA-256 if
/// known beforehand.
pub type Expected<'a> = dyn Fn(&Path, &str) -> Result<Option<String>, CacheError> + 'a;

fn files_of(image: &Image) -> impl Iterator<Item = &ImageFile> {
    std::iter::once(&image.kernel).chain(image.initrds.iter())
}

impl ImageCache {
    /// Fetches `files` into `dir` (a folder of this cache), recording every sum in
    /// its `SHA256SUMS`. A file already there with the expected or recorded sum is
    /// kept; one that no longer matches is moved aside (`<file>.mismatch`) before
    /// anything is fetched, so it is never served again.
    pub async fn fetch_into(
        &self,
        client: &reqwest::Client,
        dir: &Path,
        files: &[Wanted],
    ) -> Result<Vec<Placed>, CacheError> {
        tokio::fs::create_dir_all(dir).await.map_err(io(dir))?;
        let mut sums = parse_sums_file(dir);
        let mut out = Vec::new();
        for f in files {
            let dest = dir.join(&f.name);
            let want = f.sha256.clone().or_else(|| sums.get(&f.name).cloned());
            if dest.is_file()
                && let Some(w) = &want
            {
                let have = sha256_blocking(&dest).await?;
                if have.eq_ignore_ascii_case(w) {
                    if sums.get(&f.name) != Some(&have) {
                        sums.insert(f.name.clone(), have.clone());
                        write_sums(dir, &sums)?;
                    }
                    out.push(Placed {
                        path: dest,
                        sha256: have,
                        fetched: false,
                    });
                    continue;
                }
                let aside = dir.join(format!("{}.mismatch", f.name));
                tokio::fs::rename(&dest, &aside).await.map_err(io(&dest))?;
                tracing::warn!(file = %dest.display(), moved_to = %aside.display(), sha256 = %have,
                    "cached file does not match its recorded SHA-256; moved aside");
            }
            let sum = download(client, &f.url, &dest, want.as_deref()).await?;
            sums.insert(f.name.clone(), sum.clone());
            write_sums(dir, &sums)?;
            out.push(Placed {
                path: dest,
                sha256: sum,
                fetched: true,
            });
        }
        Ok(out)
    }

    /// The files of `image` and the URL each comes from: `<factory>/image/<schematic>/
    /// <version>/<file>` when a factory base is given, else the descriptor's URLs.
    pub fn sources(image: &Image, factory: Option<(&str, &str, &str)>) -> Result<Vec<Wanted>, CacheError> {
        files_of(image)
            .map(|f| {
                let url = match factory {
                    Some((base, schematic, version)) => format!(
                        "{}/image/{schematic}/{version}/{}",
                        base.trim_end_matches('/'),
                        f.file
                    ),
                    None => f.url.clone().ok_or_else(|| {
                        CacheError::Refused(format!("image {}: file {} has no url", image.id, f.file))
                    })?,
                };
                Ok(Wanted {
                    name: f.file.clone(),
                    url,
                    sha256: f.sha256.clone(),
                })
            })
            .collect()
    }

    /// Pulls `files` of `image` into its folder ([`Self::fetch_into`]).
    pub async fn pull_image(
        &self,
        client: &reqwest::Client,
        image: &Image,
        files: &[Wanted],
    ) -> Result<Vec<Placed>, CacheError> {
        self.fetch_into(client, &self.image_dir(&image.id), files).await
    }

    /// Copies local files into `dir` after checking each: `expected(name)` says
    /// whether the name belongs there (`Err`: why not) and its SHA-256 if known; else
    /// the folder's record must match (or is started).
    pub fn import_into(
        &self,
        dir: &Path,
        paths: &[PathBuf],
        expected: &Expected<'_>,
    ) -> Result<Vec<Placed>, CacheError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let mut out = Vec::new();
        for p in paths {
            let name = p
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_string();
            let upstream = expected(p, &name)?;
            let sum = sha256_file(p)?;
            let mut sums = parse_sums_file(dir);
            if let Some(w) = upstream.or_else(|| sums.get(&name).cloned())
                && !w.eq_ignore_ascii_case(&sum)
            {
                return Err(CacheError::Mismatch {
                    path: p.clone(),
                    found: sum,
                    want: w,
                });
            }
            let dest = dir.join(&name);
            copy_verified(p, &dest, &sum)?;
            sums.insert(name, sum.clone());
            write_sums(dir, &sums)?;
            out.push(Placed {
                path: dest,
                sha256: sum,
                fetched: false,
            });
        }
        Ok(out)
    }

    /// `images import`: copies local files into `image`'s folder, checking names
    /// against the descriptor and checksums against the descriptor or the record.
    pub fn import_image(&self, image: &Image, paths: &[PathBuf]) -> Result<Vec<Placed>, CacheError> {
        self.import_into(&self.image_dir(&image.id), paths, &|p, name| {
            let f = files_of(image).find(|f| f.file == name).ok_or_else(|| {
                CacheError::Refused(format!(
                    "{}: image {} has no file named {name:?}",
                    p.display(),
                    image.id
                ))
            })?;
            Ok(f.sha256.clone())
        })
    }

    /// Places `file` at `dest` in this cache if it hashes to `sha256` (a pinned file);
    /// refuses it otherwise, writing nothing.
    pub fn import_pinned(&self, file: &Path, dest: &Path, sha256: &str) -> Result<(), CacheError> {
        let found = sha256_file(file)?;
        if !found.eq_ignore_ascii_case(sha256) {
            return Err(CacheError::Mismatch {
                path: file.to_path_buf(),
                found,
                want: sha256.to_string(),
            });
        }
        copy_verified(file, dest, sha256)
    }

    /// Downloads a pinned file to `dest` unless a copy with `sha256` is there;
    /// `true` when it was fetched now.
    pub async fn fetch_pinned(
        &self,
        client: &reqwest::Client,
        url: &str,
        dest: &Path,
        sha256: &str,
    ) -> Result<bool, CacheError> {
        if dest.is_file() && sha256_blocking(dest).await?.eq_ignore_ascii_case(sha256) {
            return Ok(false);
        }
        let dir = dest.parent().unwrap_or(Path::new("."));
        tokio::fs::create_dir_all(dir).await.map_err(io(dir))?;
        download(client, url, dest, Some(sha256)).await?;
        Ok(true)
    }

    /// Cache status of every file of every image.
    pub fn list(&self, images: &BTreeMap<String, Image>) -> Vec<Listed> {
        let mut rows = Vec::new();
        for img in images.values() {
            let dir = self.image_dir(&img.id);
            let sums = parse_sums_file(&dir);
            for f in files_of(img) {
                let path = dir.join(&f.file);
                let size = std::fs::metadata(&path).ok().map(|m| m.len());
                let want = f.sha256.clone().or_else(|| sums.get(&f.file).cloned());
                let status = match (size, want) {
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
}
