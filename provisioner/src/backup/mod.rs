//! `provisioner backup` and `provisioner restore`: the appliance's state in one file.
//!
//! The file is a plain tar archive (inspect it with `tar tvf`), written to a temporary
//! name and renamed, mode 0600. Entries, in this order:
//!
//! 1. `backup.json`: the [`Manifest`] (format version, the store's schema version,
//!    and the path, size and SHA-256 of every secret and every cached image file);
//! 2. `inventory.json`: the inventory [`Snapshot`] (machines and timelines, with the
//!    schema version it was written with);
//! 3. `secrets/<path>`: every regular file under `<state_dir>/secrets/`, byte for byte.
//!    They are whatever the secrets store wrote (encrypted at rest); a backup never
//!    decrypts anything;
//!    This includes the Talos bundles, the k0s PKI (`secrets/k0s/`) and the admin
//!    kubeconfigs the bootstrap fetched (`secrets/kubeconfigs/`);
//! 4. `state/<path>`: the other state the appliance cannot regenerate without
//!    breaking its clients ([`STATE_FILES`], [`STATE_DIRS`]): the API token store
//!    (tokens given to people and Prometheus keep working) and the API listener's
//!    TLS files (`tls/`: clients keep trusting the same CA);
//! 5. `images/<id>/<file>`: the image cache files, only with `--include-images`
//!    (kernels and initrds are large and can be fetched again; the manifest's hashes
//!    tell whether a cache matches).
//!
//! One-time tokens are not backed up: they are re-issued on the next boot.

mod restore;

use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};

use provisioner_core::inventory::{InventoryError, SCHEMA_VERSION, Snapshot};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

pub use restore::{RestoreOptions, RestoreReport, restore};

/// `format` of every backup manifest.
pub const FORMAT: &str = "provisioner-backup";
/// Version of the archive layout; bump it when the layout changes incompatibly.
pub const FORMAT_VERSION: u32 = 1;
/// Directory under the state directory whose files are backed up verbatim.
pub const SECRETS_DIR: &str = "secrets";

/// Files directly in the state directory that are backed up verbatim (the API token
/// store: hashed tokens; the service is stopped while a backup runs).
pub const STATE_FILES: &[&str] = &["api-tokens.redb"];
/// Directories under the state directory backed up verbatim (the generated API CA
/// and certificate, `http::api::tls`).
pub const STATE_DIRS: &[&str] = &["tls"];
/// Archive prefix of [`STATE_FILES`] and [`STATE_DIRS`].
const STATE_PREFIX: &str = "state/";

const MANIFEST: &str = "backup.json";
const INVENTORY: &str = "inventory.json";

/// Why a backup or restore failed.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The inventory store failed or refused (e.g. a newer schema).
    #[error(transparent)]
    Inventory(#[from] InventoryError),
    /// The file is not a backup this version can read.
    #[error("{0}")]
    Format(String),
    /// Restoring would overwrite existing state.
    #[error("{0} is not empty; restore into a fresh state directory or pass --force")]
    NotEmpty(String),
    /// A file's bytes do not match the manifest.
    #[error("{path}: SHA-256 {found} does not match the manifest's {expected}")]
    Mismatch {
        /// The file (archive path).
        path: String,
        /// Hash in the manifest.
        expected: String,
        /// Hash of the bytes.
        found: String,
    },
}

/// One file in the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    /// Path relative to its directory, `/`-separated.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// Lower-case hex SHA-256 of the bytes.
    pub sha256: String,
}

/// `backup.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Always [`FORMAT`].
    pub format: String,
    /// [`FORMAT_VERSION`] of the writer.
    pub format_version: u32,
    /// When the backup was taken.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// The appliance version that wrote it.
    pub appliance_version: String,
    /// Schema version recorded in the store that was backed up.
    pub store_schema_version: u32,
    /// Machines in `inventory.json`.
    pub machines: usize,
    /// Files under `secrets/`, all included.
    pub secrets: Vec<FileEntry>,
    /// [`STATE_FILES`] and files under [`STATE_DIRS`], relative to the state
    /// directory, all included (absent from backups of older versions).
    #[serde(default)]
    pub state: Vec<FileEntry>,
    /// The image cache, relative to the cache directory.
    pub images: Vec<FileEntry>,
    /// Whether the image files themselves are in the archive.
    pub images_included: bool,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> BackupError + '_ {
    move |source| BackupError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// SHA-256 of a reader, as lower-case hex, and its length.
fn hash_reader(mut r: impl Read) -> std::io::Result<(String, u64)> {
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

fn relative(dir: &Path, path: &Path) -> Result<String, BackupError> {
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
fn safe_relative(path: &str) -> Result<PathBuf, BackupError> {
    let p = Path::new(path);
    let plain = !path.is_empty() && p.components().all(|c| matches!(c, Component::Normal(_)));
    if plain {
        Ok(p.to_path_buf())
    } else {
        Err(BackupError::Format(format!("unsafe path {path:?} in backup")))
    }
}

/// What [`create`] reads.
#[derive(Debug, Clone)]
pub struct Sources<'a> {
    /// The state directory (its `secrets/` subdirectory is backed up).
    pub state_dir: &'a Path,
    /// The image cache directory.
    pub cache_dir: &'a Path,
    /// Store the image files too, not only their manifest.
    pub include_images: bool,
}

/// Writes a backup of `snapshot` plus the files under `src` to `output`. The caller
/// holds the store (so nothing writes the inventory meanwhile) and passes its schema
/// version. Returns the manifest written.
pub fn create(
    snapshot: &Snapshot,
    store_schema_version: u32,
    src: &Sources<'_>,
    output: &Path,
) -> Result<Manifest, BackupError> {
    let secrets_dir = src.state_dir.join(SECRETS_DIR);
    let manifest = Manifest {
        format: FORMAT.into(),
        format_version: FORMAT_VERSION,
        created_at: OffsetDateTime::now_utc(),
        appliance_version: env!("CARGO_PKG_VERSION").into(),
        store_schema_version,
        machines: snapshot.machines.len(),
        secrets: manifest_of(&secrets_dir)?,
        state: state_manifest(src.state_dir)?,
        images: manifest_of(src.cache_dir)?,
        images_included: src.include_images,
    };
    let tmp = output.with_extension("partial");
    let file = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io_err(&tmp))?
    };
    let mut tar = tar::Builder::new(std::io::BufWriter::new(file));
    append(&mut tar, MANIFEST, &to_json(&manifest)?, &manifest.created_at).map_err(io_err(&tmp))?;
    append(&mut tar, INVENTORY, &to_json(snapshot)?, &manifest.created_at).map_err(io_err(&tmp))?;
    let mut files: Vec<(String, PathBuf, &FileEntry)> = manifest
        .secrets
        .iter()
        .map(|e| (format!("{SECRETS_DIR}/{}", e.path), secrets_dir.join(&e.path), e))
        .chain(manifest.state.iter().map(|e| {
            (
                format!("{STATE_PREFIX}{}", e.path),
                src.state_dir.join(&e.path),
                e,
            )
        }))
        .collect();
    if src.include_images {
        files.extend(
            manifest
                .images
                .iter()
                .map(|e| (format!("images/{}", e.path), src.cache_dir.join(&e.path), e)),
        );
    }
    for (name, path, entry) in files {
        // Streamed and hashed on the way: a file that changed since the manifest was
        // taken fails the backup rather than producing one that cannot restore.
        let f = std::fs::File::open(&path).map_err(io_err(&path))?;
        let mut hashing = HashingReader::new(f);
        let mut header = header(entry.size, &manifest.created_at);
        tar.append_data(&mut header, &name, &mut hashing)
            .map_err(io_err(&path))?;
        let found = hashing.finish();
        if found != entry.sha256 {
            return Err(BackupError::Mismatch {
                path: name,
                expected: entry.sha256.clone(),
                found,
            });
        }
    }
    let mut w = tar.into_inner().map_err(io_err(&tmp))?;
    w.flush().map_err(io_err(&tmp))?;
    w.get_ref().sync_all().map_err(io_err(&tmp))?;
    drop(w);
    std::fs::rename(&tmp, output).map_err(io_err(output))?;
    Ok(manifest)
}

fn to_json<T: Serialize>(v: &T) -> Result<Vec<u8>, BackupError> {
    let mut bytes =
        serde_json::to_vec_pretty(v).map_err(|e| BackupError::Format(format!("encoding: {e}")))?;
    bytes.push(b'\n');
    Ok(bytes)
}

fn header(size: u64, mtime: &OffsetDateTime) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_size(size);
    h.set_mode(0o600);
    h.set_mtime(u64::try_from(mtime.unix_timestamp()).unwrap_or(0));
    h.set_entry_type(tar::EntryType::Regular);
    h
}

fn append<W: Write>(
    tar: &mut tar::Builder<W>,
    name: &str,
    bytes: &[u8],
    mtime: &OffsetDateTime,
) -> std::io::Result<()> {
    let mut h = header(bytes.len() as u64, mtime);
    tar.append_data(&mut h, name, bytes)
}

/// A reader that hashes what passes through it.
struct HashingReader<R> {
    inner: R,
    hash: Sha256,
}

impl<R: Read> HashingReader<R> {
    fn new(inner: R) -> Self {
        Self {
            inner,
            hash: Sha256::new(),
        }
    }
    fn finish(self) -> String {
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

/// Checks a manifest's format before anything is restored.
fn check_format(manifest_json: &[u8]) -> Result<Manifest, BackupError> {
    let v: serde_json::Value =
        serde_json::from_slice(manifest_json).map_err(|e| BackupError::Format(format!("{MANIFEST}: {e}")))?;
    if v.get("format").and_then(|f| f.as_str()) != Some(FORMAT) {
        return Err(BackupError::Format(format!(
            "not a provisioner backup ({MANIFEST} has no format {FORMAT:?})"
        )));
    }
    let version = v.get("format_version").and_then(|f| f.as_u64()).unwrap_or(0);
    if version > u64::from(FORMAT_VERSION) {
        return Err(BackupError::Format(format!(
            "backup format {version} is newer than this appliance's {FORMAT_VERSION}; upgrade first"
        )));
    }
    let m: Manifest =
        serde_json::from_value(v).map_err(|e| BackupError::Format(format!("{MANIFEST}: {e}")))?;
    if m.store_schema_version > SCHEMA_VERSION {
        return Err(InventoryError::SchemaTooNew {
            found: m.store_schema_version,
            supported: SCHEMA_VERSION,
        }
        .into());
    }
    Ok(m)
}

#[cfg(test)]
mod tests;
