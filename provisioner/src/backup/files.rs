//! Files of a backup: manifests of directories (path, size, SHA-256), the state files
//! outside `secrets/`, and the path checks that keep a crafted archive inside the
//! state directory.

use std::io::Read;
use std::path::{Component, Path, PathBuf};

use sha2::{Digest, Sha256};

use super::{BackupError, FileEntry, STATE_DIRS, STATE_FILES};

pub(super) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> BackupError + '_ {
    move |source| BackupError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// SHA-256 of a reader, as lower-case hex, and its length.
pub(super) fn hash_reader(mut r: impl Read) -> std::io::Result<(String, u64)> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut len = 0u64;
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        len += n as u64;
    }
    Ok((hex::encode(h.finalize()), len))
}

/// Every regular file under `dir` (recursively) as a manifest entry, sorted by path.
/// A missing directory has no files. Symlinks are skipped: they could point outside.
pub fn manifest_of(dir: &Path) -> Result<Vec<FileEntry>, BackupError> {
    let mut out = Vec::new();
    if !dir.exists() {
        return Ok(out);
    }
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).map_err(io_err(&d))? {
            let path = entry.map_err(io_err(&d))?.path();
            let meta = std::fs::symlink_metadata(&path).map_err(io_err(&path))?;
            if meta.is_dir() {
                stack.push(path);
            } else if meta.is_file() {
                let file = std::fs::File::open(&path).map_err(io_err(&path))?;
                let (sha256, size) = hash_reader(file).map_err(io_err(&path))?;
                out.push(FileEntry {
                    path: relative(dir, &path)?,
                    size,
                    sha256,
                });
            }
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

pub(super) fn relative(dir: &Path, path: &Path) -> Result<String, BackupError> {
    let rel = path
        .strip_prefix(dir)
        .map_err(|_| BackupError::Format(format!("{} is outside {}", path.display(), dir.display())))?;
    let parts: Option<Vec<&str>> = rel.components().map(|c| c.as_os_str().to_str()).collect();
    parts
        .map(|p| p.join("/"))
        .ok_or_else(|| BackupError::Format(format!("{}: not UTF-8", path.display())))
}

/// [`STATE_FILES`] and the files under [`STATE_DIRS`] that exist in `state_dir`,
/// relative to it, sorted by path.
pub fn state_manifest(state_dir: &Path) -> Result<Vec<FileEntry>, BackupError> {
    let mut out = Vec::new();
    for f in STATE_FILES {
        let path = state_dir.join(f);
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.is_file() => {
                let file = std::fs::File::open(&path).map_err(io_err(&path))?;
                let (sha256, size) = hash_reader(file).map_err(io_err(&path))?;
                out.push(FileEntry {
                    path: (*f).to_string(),
                    size,
                    sha256,
                });
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(&path)(e)),
        }
    }
    for d in STATE_DIRS {
        out.extend(manifest_of(&state_dir.join(d))?.into_iter().map(|e| FileEntry {
            path: format!("{d}/{}", e.path),
            ..e
        }));
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// Checks that an archive path is relative and plain (no `..`, no root), so a crafted
/// backup cannot write outside the state directory.
pub(super) fn safe_relative(path: &str) -> Result<PathBuf, BackupError> {
    let p = Path::new(path);
    let plain = !path.is_empty() && p.components().all(|c| matches!(c, Component::Normal(_)));
    if plain {
        Ok(p.to_path_buf())
    } else {
        Err(BackupError::Format(format!("unsafe path {path:?} in backup")))
    }
}

/// A reader that hashes what passes through it.
pub(super) struct HashingReader<R> {
    inner: R,
    hash: Sha256,
}

impl<R: Read> HashingReader<R> {
    pub(super) fn new(inner: R) -> Self {
        Self {
            inner,
            hash: Sha256::new(),
        }
    }
    pub(super) fn finish(self) -> String {
        hex::encode(self.hash.finalize())
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
}
