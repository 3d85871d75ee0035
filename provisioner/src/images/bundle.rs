//! Air-gapped bundles: one tar of verified cache files with a manifest of their
//! SHA-256s, written on a connected appliance and imported on an offline one.
//!
//! ```text
//! MANIFEST.json                       {"format":1,"files":{"<rel>":{"sha256","size"}}}
//! <rel>                               the cache file at <cache>/<rel>
//! ```
//!
//! Import checks everything before anything is placed: every entry is a plain file
//! with a relative path of normal components, listed in the manifest, hashing to the
//! manifest's SHA-256 (and to a pin the caller knows, and to the target folder's own
//! `SHA256SUMS` record); every manifest file is present. Entries are unpacked into a
//! staging folder inside the target cache (same file system), and only then renamed
//! into place one by one, each folder's record updated. A refused bundle leaves the
//! cache as it was.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::fetch::{io, parse_sums_file, sha256_file, write_sums};
use super::{CacheError, ImageCache, SUMS};

/// The manifest's name inside the tar.
pub const MANIFEST: &str = "MANIFEST.json";

/// One file of a bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleFile {
    /// SHA-256, hex.
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
}

/// `MANIFEST.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Format version (1).
    pub format: u32,
    /// Files by path relative to the cache root.
    pub files: BTreeMap<String, BundleFile>,
}

/// A SHA-256 a file must have besides the manifest's (a pin or a descriptor's).
pub type Pinned<'a> = dyn Fn(&str) -> Option<String> + 'a;

fn refused(why: String) -> CacheError {
    CacheError::Refused(why)
}

/// A cache-relative path of normal components only (no `..`, no root, no `.`).
fn safe_rel(rel: &str) -> Option<PathBuf> {
    let p = Path::new(rel);
    let ok = !rel.is_empty() && p.components().all(|c| matches!(c, Component::Normal(_)));
    ok.then(|| p.to_path_buf())
}

/// The recorded sum of `rel` in its folder's `SHA256SUMS`, if any.
fn recorded(root: &Path, rel: &Path) -> Option<String> {
    let dir = root.join(rel.parent()?);
    let name = rel.file_name()?.to_str()?;
    parse_sums_file(&dir).remove(name)
}

impl ImageCache {
    /// Writes the files `rels` (paths relative to this cache) into the tar `out`
    /// with their manifest. Each must match `pinned` and its folder's record; a file
    /// that does not is refused by name and no bundle is written.
    pub fn bundle(&self, rels: &[String], pinned: &Pinned<'_>, out: &Path) -> Result<Manifest, CacheError> {
        let mut manifest = Manifest {
            format: 1,
            files: BTreeMap::new(),
        };
        for rel in rels {
            let p = safe_rel(rel).ok_or_else(|| refused(format!("{rel}: not a cache path")))?;
            let path = self.dir().join(&p);
            let size = std::fs::metadata(&path).map_err(io(&path))?.len();
            let sum = sha256_file(&path)?;
            for want in [pinned(rel), recorded(self.dir(), &p)].into_iter().flatten() {
                if !want.eq_ignore_ascii_case(&sum) {
                    return Err(CacheError::Mismatch {
                        path,
                        found: sum,
                        want,
                    });
                }
            }
            manifest
                .files
                .insert(rel.clone(), BundleFile { sha256: sum, size });
        }
        let part = PathBuf::from(format!("{}.part", out.display()));
        let file = std::fs::File::create(&part).map_err(io(&part))?;
        let mut tar = tar::Builder::new(std::io::BufWriter::new(file));
        let text = serde_json::to_vec_pretty(&manifest).map_err(|e| refused(e.to_string()))?;
        let mut header = tar::Header::new_gnu();
        header.set_size(text.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append_data(&mut header, MANIFEST, text.as_slice())
            .map_err(io(&part))?;
        for rel in manifest.files.keys() {
            let path = self.dir().join(rel);
            let mut f = std::fs::File::open(&path).map_err(io(&path))?;
            tar.append_file(rel, &mut f).map_err(io(&part))?;
        }
        let mut w = tar.into_inner().map_err(io(&part))?;
        w.flush().map_err(io(&part))?;
        w.get_ref().sync_all().map_err(io(&part))?;
        std::fs::rename(&part, out).map_err(io(out))?;
        Ok(manifest)
    }

    /// Imports the bundle `tar_path` into this cache (see the module comment);
    /// returns its manifest. `pinned` gives SHA-256s known besides the manifest's.
    pub fn import_bundle(&self, tar_path: &Path, pinned: &Pinned<'_>) -> Result<Manifest, CacheError> {
        self.create()?;
        let stage = self.dir().join(format!(".import-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&stage);
        std::fs::create_dir_all(&stage).map_err(io(&stage))?;
        let result = self
            .unpack_verified(tar_path, &stage, pinned)
            .and_then(|m| self.place(&stage, &m).map(|()| m));
        let _ = std::fs::remove_dir_all(&stage);
        result
    }

    fn unpack_verified(
        &self,
        tar_path: &Path,
        stage: &Path,
        pinned: &Pinned<'_>,
    ) -> Result<Manifest, CacheError> {
        let name = tar_path.display().to_string();
        let bad = |what: String| refused(format!("{name}: {what}; nothing imported"));
        let file = std::fs::File::open(tar_path).map_err(io(tar_path))?;
        let mut archive = tar::Archive::new(std::io::BufReader::new(file));
        let mut entries = archive.entries().map_err(io(tar_path))?;
        let mut first = entries
            .next()
            .ok_or_else(|| bad("empty archive".into()))?
            .map_err(io(tar_path))?;
        if first.path().ok().as_deref() != Some(Path::new(MANIFEST)) {
            return Err(bad(format!("the first entry is not {MANIFEST}")));
        }
        let mut text = Vec::new();
        first.read_to_end(&mut text).map_err(io(tar_path))?;
        let manifest: Manifest =
            serde_json::from_slice(&text).map_err(|e| bad(format!("{MANIFEST}: {e}")))?;
        if manifest.format != 1 {
            return Err(bad(format!("{MANIFEST}: format {} is not 1", manifest.format)));
        }
        let mut seen = BTreeMap::new();
        for entry in entries {
            let mut entry = entry.map_err(io(tar_path))?;
            let rel = entry
                .path()
                .map_err(io(tar_path))?
                .to_str()
                .unwrap_or_default()
                .to_string();
            if entry.header().entry_type() != tar::EntryType::Regular {
                return Err(bad(format!("{rel}: not a plain file")));
            }
            let p = safe_rel(&rel).ok_or_else(|| bad(format!("{rel}: not a cache path")))?;
            let want = manifest
                .files
                .get(&rel)
                .ok_or_else(|| bad(format!("{rel}: not in the bundle's manifest")))?;
            if seen.insert(rel.clone(), ()).is_some() {
                return Err(bad(format!("{rel}: twice in the archive")));
            }
            let dest = stage.join(&p);
            let dir = dest.parent().unwrap_or(stage);
            std::fs::create_dir_all(dir).map_err(io(dir))?;
            let mut out = std::fs::File::create(&dest).map_err(io(&dest))?;
            let mut h = Sha256::new();
            let mut buf = vec![0u8; 1 << 16];
            loop {
                let n = entry.read(&mut buf).map_err(io(tar_path))?;
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
                out.write_all(&buf[..n]).map_err(io(&dest))?;
            }
            out.sync_all().map_err(io(&dest))?;
            let sum = hex::encode(h.finalize());
            let checks = [
                ("the manifest's", Some(want.sha256.clone())),
                ("the pinned", pinned(&rel)),
                ("the cache's recorded", recorded(self.dir(), &p)),
            ];
            for (whose, w) in checks {
                if let Some(w) = w
                    && !w.eq_ignore_ascii_case(&sum)
                {
                    return Err(bad(format!("{rel}: SHA-256 {sum} does not match {whose} {w}")));
                }
            }
        }
        if let Some(missing) = manifest.files.keys().find(|r| !seen.contains_key(*r)) {
            return Err(bad(format!("{missing}: in the manifest but not in the archive")));
        }
        Ok(manifest)
    }

    /// Renames every staged file into place and records its sum in its folder.
    fn place(&self, stage: &Path, m: &Manifest) -> Result<(), CacheError> {
        let mut by_dir: BTreeMap<PathBuf, Vec<(String, String)>> = BTreeMap::new();
        for (rel, f) in &m.files {
            let p = Path::new(rel);
            let dest = self.dir().join(p);
            let dir = dest.parent().unwrap_or(self.dir()).to_path_buf();
            std::fs::create_dir_all(&dir).map_err(io(&dir))?;
            std::fs::rename(stage.join(p), &dest).map_err(io(&dest))?;
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            if name != SUMS {
                by_dir
                    .entry(dir)
                    .or_default()
                    .push((name.to_string(), f.sha256.clone()));
            }
        }
        for (dir, files) in by_dir {
            let mut sums = parse_sums_file(&dir);
            sums.extend(files);
            write_sums(&dir, &sums)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_relative_paths() {
        assert!(safe_rel("talos-a/kernel-amd64").is_some());
        assert!(safe_rel("mirror/k0s/v1.36.3+k0s.2/k0s-v1.36.3+k0s.2-amd64").is_some());
        for bad in ["", "/etc/passwd", "../x", "a/../../x", "./a"] {
            assert!(safe_rel(bad).is_none(), "{bad}");
        }
    }
}
