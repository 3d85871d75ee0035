//! The pinned ArgoCD install manifest in the image cache, where the hand-off reads it
//! ([`ImageCache::argocd_manifest`]): `images pull argocd` downloads the version
//! `gitops/settings.yaml` pins with the image cache's downloader (resume with `Range`,
//! SHA-256 checked, a mismatch deleted and refused), `images import argocd <file>`
//! copies an air-gapped download after the same check. Only the pinned bytes ever
//! land in the cache.

use std::path::{Path, PathBuf};

use super::Settings;
use crate::images::{CacheError, ImageCache};

/// Where the pinned manifest is fetched from: the pin's URL, or with `base` the same
/// path on a mirror of its origin (`<base>/argoproj/argo-cd/<version>/manifests/…`).
pub fn source_url(settings: &Settings, base: Option<&str>) -> Result<String, CacheError> {
    let pinned = &settings.argocd.url;
    let Some(base) = base else {
        return Ok(pinned.clone());
    };
    let url = reqwest::Url::parse(pinned)
        .map_err(|e| CacheError::Refused(format!("argocd.url {pinned:?}: {e}")))?;
    Ok(format!("{}{}", base.trim_end_matches('/'), url.path()))
}

/// Downloads the pinned manifest into the cache unless a verified copy is there.
/// Returns its path and whether it was fetched now.
pub async fn pull(
    client: &reqwest::Client,
    settings: &Settings,
    cache: &ImageCache,
    base: Option<&str>,
) -> Result<(PathBuf, bool), CacheError> {
    let dest = cache.argocd_manifest(&settings.argocd.version);
    let url = source_url(settings, base)?;
    let fetched = cache
        .fetch_pinned(client, &url, &dest, &settings.argocd.sha256)
        .await?;
    Ok((dest, fetched))
}

/// Copies `file` into the cache if its SHA-256 is the pinned one; refuses it otherwise
/// (nothing is written). Durable: temp file, fsync, rename.
pub fn import(settings: &Settings, cache: &ImageCache, file: &Path) -> Result<PathBuf, CacheError> {
    let want = &settings.argocd.sha256;
    let dest = cache.argocd_manifest(&settings.argocd.version);
    cache.import_pinned(file, &dest, want).map_err(|e| match e {
        CacheError::Mismatch { found, .. } => CacheError::Refused(format!(
            "{}: SHA-256 {found} is not the ArgoCD {} manifest pinned in gitops/settings.yaml ({want}); not imported",
            file.display(),
            settings.argocd.version
        )),
        other => other,
    })?;
    Ok(dest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../gitops")).unwrap()
    }

    #[test]
    fn a_mirror_keeps_the_pinned_path() {
        let s = settings();
        assert_eq!(source_url(&s, None).unwrap(), s.argocd.url);
        let m = source_url(&s, Some("http://127.0.0.1:8000/")).unwrap();
        assert_eq!(
            m,
            format!(
                "http://127.0.0.1:8000/argoproj/argo-cd/{}/manifests/install.yaml",
                s.argocd.version
            )
        );
    }

    #[test]
    fn import_refuses_other_bytes_and_writes_nothing() {
        let s = settings();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("install.yaml");
        std::fs::write(&file, "kind: Namespace\n").unwrap();
        let cache = ImageCache::new(dir.path().join("cache"));
        let err = import(&s, &cache, &file).unwrap_err().to_string();
        assert!(
            err.contains("not imported") && err.contains(&s.argocd.sha256),
            "{err}"
        );
        assert!(!cache.argocd_manifest(&s.argocd.version).exists());
    }
}
