//! The pinned ArgoCD install manifest in the image cache, where the hand-off reads it
//! ([`super::Settings::manifest_path`]): `images pull argocd` downloads the version
//! `gitops/settings.yaml` pins with the image cache's downloader (resume with `Range`,
//! SHA-256 checked, a mismatch deleted and refused), `images import argocd <file>`
//! copies an air-gapped download after the same check. Only the pinned bytes ever
//! land in the cache.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use super::Settings;
use crate::images::{ImagesCommand, download, sha256_file};

/// Where the pinned manifest is fetched from: the pin's URL, or with `base` the same
/// path on a mirror of its origin (`<base>/argoproj/argo-cd/<version>/manifests/…`).
pub fn source_url(settings: &Settings, base: Option<&str>) -> anyhow::Result<String> {
    let pinned = &settings.argocd.url;
    let Some(base) = base else {
        return Ok(pinned.clone());
    };
    let url = reqwest::Url::parse(pinned).with_context(|| format!("argocd.url {pinned:?}"))?;
    Ok(format!("{}{}", base.trim_end_matches('/'), url.path()))
}

/// Downloads the pinned manifest into `cache_dir` unless a verified copy is there.
/// Returns its path and whether it was fetched now.
pub async fn pull(
    client: &reqwest::Client,
    settings: &Settings,
    cache_dir: &Path,
    base: Option<&str>,
) -> anyhow::Result<(PathBuf, bool)> {
    let dest = settings.manifest_path(cache_dir);
    let want = &settings.argocd.sha256;
    if dest.is_file() && sha256_file(&dest)?.eq_ignore_ascii_case(want) {
        return Ok((dest, false));
    }
    let dir = dest.parent().context("manifest path has no directory")?;
    std::fs::create_dir_all(dir).with_context(|| dir.display().to_string())?;
    let url = source_url(settings, base)?;
    download(client, &url, &dest, Some(want)).await?;
    Ok((dest, true))
}

/// Copies `file` into the cache if its SHA-256 is the pinned one; refuses it otherwise
/// (nothing is written). Durable: temp file, fsync, rename.
pub fn import(settings: &Settings, cache_dir: &Path, file: &Path) -> anyhow::Result<PathBuf> {
    let want = &settings.argocd.sha256;
    let found = sha256_file(file)?;
    if !found.eq_ignore_ascii_case(want) {
        bail!(
            "{}: SHA-256 {found} is not the ArgoCD {} manifest pinned in gitops/settings.yaml ({want}); not imported",
            file.display(),
            settings.argocd.version
        );
    }
    let dest = settings.manifest_path(cache_dir);
    let dir = dest.parent().context("manifest path has no directory")?;
    std::fs::create_dir_all(dir).with_context(|| dir.display().to_string())?;
    let bytes = std::fs::read(file).with_context(|| file.display().to_string())?;
    let tmp = dest.with_extension("yaml.import");
    let mut f = std::fs::File::create(&tmp).with_context(|| tmp.display().to_string())?;
    f.write_all(&bytes)
        .and_then(|()| f.sync_all())
        .with_context(|| tmp.display().to_string())?;
    // The bytes read may differ from the ones hashed if the file changed meanwhile.
    if !sha256_file(&tmp)?.eq_ignore_ascii_case(want) {
        let _ = std::fs::remove_file(&tmp);
        bail!("{}: changed while being imported; not imported", file.display());
    }
    std::fs::rename(&tmp, &dest).with_context(|| dest.display().to_string())?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| dir.display().to_string())?;
    Ok(dest)
}

/// `images pull argocd` and `images import argocd <file>`; `None` for every other
/// `images` command.
pub fn command(cmd: &ImagesCommand, cfg: &crate::config::Config) -> Option<anyhow::Result<()>> {
    match cmd {
        ImagesCommand::Pull {
            kind, version, base, ..
        } if kind == "argocd" => Some(run_pull(cfg, version.as_deref(), base.as_deref())),
        ImagesCommand::Import {
            image: None,
            mirror: None,
            files,
            ..
        } if files.first().is_some_and(|f| f.as_os_str() == "argocd") => Some(match &files[1..] {
            [file] => run_import(cfg, file),
            _ => Err(anyhow::anyhow!(
                "usage: provisioner images import argocd <install.yaml>"
            )),
        }),
        _ => None,
    }
}

fn settings(cfg: &crate::config::Config) -> anyhow::Result<Settings> {
    Settings::load(&cfg.gitops_dir).map_err(anyhow::Error::msg)
}

fn run_pull(cfg: &crate::config::Config, version: Option<&str>, base: Option<&str>) -> anyhow::Result<()> {
    let s = settings(cfg)?;
    if let Some(v) = version
        && v != s.argocd.version
    {
        bail!(
            "--version {v}: only the version pinned in {}/settings.yaml ({}) can be verified; change the pin first",
            cfg.gitops_dir.display(),
            s.argocd.version
        );
    }
    let client = reqwest::Client::builder()
        .user_agent(concat!("provisioner/", env!("CARGO_PKG_VERSION")))
        .build()?;
    let rt = tokio::runtime::Runtime::new()?;
    let (path, fetched) = rt.block_on(pull(&client, &s, &cfg.cache_dir(), base))?;
    let what = if fetched { "downloaded" } else { "already cached" };
    println!(
        "argocd {}: {what}, sha256 {} ({})",
        s.argocd.version,
        s.argocd.sha256,
        path.display()
    );
    Ok(())
}

fn run_import(cfg: &crate::config::Config, file: &Path) -> anyhow::Result<()> {
    let s = settings(cfg)?;
    let path = import(&s, &cfg.cache_dir(), file)?;
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
        let cache = dir.path().join("cache");
        let err = import(&s, &cache, &file).unwrap_err().to_string();
        assert!(
            err.contains("not imported") && err.contains(&s.argocd.sha256),
            "{err}"
        );
        assert!(!s.manifest_path(&cache).exists());
    }
}
