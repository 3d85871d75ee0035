//! `provisioner backup` and `provisioner restore`: the appliance's state in one file.
//!
//! The file is a tar archive encrypted with age to the operator's recipients
//! ([`crypt`]; a plain tar only with `--insecure-plaintext`), written to a temporary
//! name and renamed, mode 0600. Entries of the tar, in this order:
//!
//! 1. `backup.json`: the [`Manifest`] (format version, the store's schema version,
//!    and the path, size and SHA-256 of every secret and every cached image file);
//! 2. `inventory.json`: the inventory [`Snapshot`] (machines and timelines, with the
//!    schema version it was written with);
//! 3. `secrets/<path>`: every regular file under `<state_dir>/secrets/`, byte for byte
//!    (encrypted at rest by the secrets store; a backup never decrypts them): Talos
//!    bundles, the k0s PKI (`secrets/k0s/`), the admin kubeconfigs the bootstrap
//!    fetched (`secrets/kubeconfigs/`), and the secrets key `secrets/secrets.key` when
//!    it lives there (not when it is a systemd credential or `secrets_key_file`
//!    outside the state: then the operator keeps it apart, and the manifest says so);
//! 4. `state/<path>`: the other state the appliance cannot regenerate without
//!    breaking its clients ([`STATE_FILES`], [`STATE_DIRS`]): the API token store
//!    (tokens given to people and Prometheus keep working) and the API listener's
//!    TLS files (`tls/`: clients keep trusting the same CA);
//! 5. `images/<id>/<file>`: the image cache files, only with `--include-images`
//!    (kernels and initrds are large and can be fetched again; the manifest's hashes
//!    tell whether a cache matches).
//!
//! One-time tokens are not backed up: they are re-issued on the next boot. A restore
//! builds the new state in a sibling directory and swaps it in ([`restore`]).

pub mod crypt;
mod files;
mod restore;
mod stage;

use std::io::Write;
use std::path::{Path, PathBuf};

use provisioner_core::inventory::{InventoryError, SCHEMA_VERSION, Snapshot};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

pub use crypt::Protection;
use files::{HashingReader, hash_reader, io_err, safe_relative};
pub use files::{manifest_of, state_manifest};
pub use restore::{OpenInventory, RestoreOptions, RestoreReport, restore};
pub use stage::CRASH_AT_ENV;

/// `format` of every backup manifest.
pub const FORMAT: &str = "provisioner-backup";
/// Version of the archive layout; bump it when the layout changes incompatibly.
/// 2: the manifest says whether the secrets key is inside (and the file is
/// encrypted unless asked otherwise).
pub const FORMAT_VERSION: u32 = 2;
pub use crate::store::SECRETS_DIR;

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
    /// Encrypting or decrypting the file failed, or no recipient was given.
    #[error("{0}")]
    Crypt(String),
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
    /// Whether the secrets key is in `secrets/` (else the operator keeps it apart,
    /// and the restored secrets need it).
    #[serde(default)]
    pub secrets_key_included: bool,
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
    /// The secrets key file (`crate::store::SecretsKey`): carried only if it is
    /// under `secrets/`.
    pub secrets_key: &'a Path,
}

/// Writes a backup of `snapshot` plus the files under `src` to `output`, protected as
/// `protection` says. The caller holds the store (so nothing writes the inventory
/// meanwhile) and passes its schema version. Returns the manifest written.
pub fn create(
    snapshot: &Snapshot,
    store_schema_version: u32,
    src: &Sources<'_>,
    protection: &Protection,
    output: &Path,
) -> Result<Manifest, BackupError> {
    let secrets_dir = src.state_dir.join(SECRETS_DIR);
    let secrets = manifest_of(&secrets_dir)?;
    let secrets_key_included = secrets
        .iter()
        .any(|e| secrets_dir.join(&e.path) == src.secrets_key);
    let manifest = Manifest {
        format: FORMAT.into(),
        format_version: FORMAT_VERSION,
        created_at: OffsetDateTime::now_utc(),
        appliance_version: env!("CARGO_PKG_VERSION").into(),
        store_schema_version,
        machines: snapshot.machines.len(),
        secrets,
        state: state_manifest(src.state_dir)?,
        images: manifest_of(src.cache_dir)?,
        images_included: src.include_images,
        secrets_key_included,
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
    let sink = crypt::Sink::new(std::io::BufWriter::new(file), protection)?;
    let mut tar = tar::Builder::new(sink);
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
    let sink = tar.into_inner().map_err(io_err(&tmp))?;
    let mut w = sink.finish().map_err(io_err(&tmp))?;
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
