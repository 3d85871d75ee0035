//! The image cache: the only code that knows where cached files live and the one way
//! files get there (download or import, verify, rename into place).
//!
//! ```text
//! <cache>/<image id>/<file>, SHA256SUMS          images/ descriptors' kernels and initrds
//! <cache>/mirror/<kind>/<version>/<file>, SHA256SUMS   Flatcar disk images, k0s binaries
//! <cache>/argocd/install-<version>.yaml          the pinned ArgoCD install manifest
//! ```
//!
//! Downloads go to `<file>.part` and resume with `Range` (RFC 9110 §14) after an
//! interruption; a file is moved into place only once its SHA-256 is known good.
//! Checksums: the expected one if the caller knows it (descriptor, release list,
//! pin), else the one recorded in the folder's `SHA256SUMS` at the first download
//! (trust on first use: the community Image Factory publishes none, its `.sha256`
//! suffix answers 402, talos.md §4.7); later downloads and imports must match it. A
//! cached file that no longer matches is moved aside before anything is fetched, so
//! the boot path never serves it. What each OS fetches (Image Factory schematics,
//! Flatcar and k0s releases, the ArgoCD pin) is its own folder's business; they all
//! come through here.

mod bundle;
mod fetch;
mod files;

use std::path::{Path, PathBuf};

use provisioner_core::k0s::mirror::{self, Kind};

pub use bundle::{BundleFile, MANIFEST, Manifest};
pub use fetch::{download, parse_sums_file, sha256_file};
pub use files::{Listed, Placed, Wanted};

/// The recorded checksums file in each folder of the cache.
pub const SUMS: &str = "SHA256SUMS";

/// Why a file could not be cached, listed or found.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// A local file could not be read, written or renamed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// No HTTP answer, or the body broke off.
    #[error("{what} {url}: {source}")]
    Http {
        /// `GET` or `reading`.
        what: &'static str,
        /// The URL.
        url: String,
        /// The transport error.
        source: reqwest::Error,
    },
    /// The server answered with an error status (its body quoted: upstreams explain
    /// themselves in a line, e.g. the Image Factory's `schematic ID "…" not found`).
    #[error("GET {url}: HTTP {status}: {body}")]
    Status {
        /// The URL.
        url: String,
        /// The status.
        status: reqwest::StatusCode,
        /// The start of the body.
        body: String,
    },
    /// A download had other bytes than expected; it was deleted.
    #[error(
        "{}: SHA-256 {found} does not match the expected {want}; download rejected and deleted",
        path.display()
    )]
    Rejected {
        /// Where it was going.
        path: PathBuf,
        /// What it hashed to.
        found: String,
        /// What was expected.
        want: String,
    },
    /// A file to import has other bytes than expected; nothing was written.
    #[error("{}: SHA-256 {found} does not match the expected {want}", path.display())]
    Mismatch {
        /// The file given.
        path: PathBuf,
        /// What it hashed to.
        found: String,
        /// What was expected.
        want: String,
    },
    /// The request itself is wrong (a name no descriptor or release has, a missing
    /// URL, a bad version); the message says what.
    #[error("{0}")]
    Refused(String),
    /// A blocking task died.
    #[error("image cache: {0}")]
    Task(String),
}

/// The image cache at one directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageCache {
    dir: PathBuf,
}

impl ImageCache {
    /// The cache rooted at `dir` (created on first write).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The root, for whole-cache operations (backup, the self-test report).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Creates the root.
    pub fn create(&self) -> Result<(), CacheError> {
        std::fs::create_dir_all(&self.dir).map_err(|source| CacheError::Io {
            path: self.dir.clone(),
            source,
        })
    }

    /// The folder of image `id`.
    pub fn image_dir(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }

    /// Where file `file` of image `id` is served from. Callers pass names from loaded
    /// descriptors only, never from a request.
    pub fn image_file(&self, id: &str, file: &str) -> PathBuf {
        self.image_dir(id).join(file)
    }

    /// The mirror folder of one Flatcar or k0s version.
    pub fn mirror_dir(&self, kind: Kind, version: &str) -> PathBuf {
        self.dir.join("mirror").join(kind.name()).join(version)
    }

    /// The on-disk path for a `/mirror/{kind}/{version}/{file}` request, if it names a
    /// served file ([`mirror::served`]): nothing outside the mirror is ever named.
    pub fn mirror_file(&self, kind: &str, version: &str, file: &str) -> Option<PathBuf> {
        let kind = mirror::served(kind, version, file)?;
        Some(self.mirror_dir(kind, version).join(file))
    }

    /// The verified SHA-256 of a mirrored file, if it is present and recorded.
    pub fn mirror_sha256(&self, kind: Kind, version: &str, file: &str) -> Option<String> {
        let d = self.mirror_dir(kind, version);
        if !d.join(file).is_file() {
            return None;
        }
        parse_sums_file(&d).remove(file)
    }

    /// Where the ArgoCD install manifest of `version` is kept.
    pub fn argocd_manifest(&self, version: &str) -> PathBuf {
        self.dir.join("argocd").join(format!("install-{version}.yaml"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_layout() {
        let c = ImageCache::new("/cache");
        assert_eq!(
            c.image_file("talos-a", "kernel-amd64"),
            PathBuf::from("/cache/talos-a/kernel-amd64")
        );
        assert_eq!(
            c.mirror_file("flatcar", "4459.2.0", mirror::FLATCAR_IMAGE),
            Some(PathBuf::from("/cache/mirror/flatcar/4459.2.0").join(mirror::FLATCAR_IMAGE))
        );
        assert_eq!(c.mirror_file("flatcar", "..", mirror::FLATCAR_IMAGE), None);
        assert_eq!(
            c.argocd_manifest("v3.1.9"),
            PathBuf::from("/cache/argocd/install-v3.1.9.yaml")
        );
    }
}
