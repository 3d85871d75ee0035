//! Restoring a backup: check the format and schema versions before touching anything,
//! refuse to overwrite existing state unless forced, then build the new state in a
//! sibling directory ([`super::stage`]): every file through a temporary name after
//! checking its SHA-256, the inventory imported, and only then swap it in.

use std::collections::BTreeSet;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use provisioner_core::inventory::{Inventory, InventoryError, SCHEMA_VERSION, Snapshot};

use super::stage::{Staging, failpoint};
use super::{
    BackupError, FileEntry, HashingReader, INVENTORY, MANIFEST, Manifest, SECRETS_DIR, STATE_PREFIX, Sources,
    check_format, hash_reader, io_err, manifest_of, safe_relative, state_manifest,
};

/// Opens the inventory store of a state directory (the daemon's: redb).
pub type OpenInventory<'a> = &'a dyn Fn(&Path) -> Result<Arc<dyn Inventory>, InventoryError>;

/// Largest `backup.json` or `inventory.json` read into memory (a bad file cannot
/// exhaust memory; an inventory of thousands of machines is a few MiB).
const MAX_DOCUMENT: u64 = 256 * 1024 * 1024;

/// How to restore.
#[derive(Debug, Clone, Copy, Default)]
pub struct RestoreOptions {
    /// Overwrite an inventory that has machines or a non-empty `secrets/`.
    pub force: bool,
}

/// What a restore did.
#[derive(Debug, Clone)]
pub struct RestoreReport {
    /// The backup's manifest.
    pub manifest: Manifest,
    /// Secret files written.
    pub secrets_restored: usize,
    /// State files written (API tokens, API TLS files).
    pub state_restored: usize,
    /// Image files written from the archive.
    pub images_restored: usize,
    /// Manifest images in the cache with the right hash after the restore (restored
    /// from the archive or already there).
    pub images_present: usize,
    /// Manifest images absent from the cache (fetch them again).
    pub images_missing: Vec<String>,
    /// Manifest images in the cache with other bytes.
    pub images_mismatched: Vec<String>,
}

impl RestoreReport {
    /// Whether the restored secrets came with their key (else the key must already be
    /// where the configuration says, or be put there before the service starts).
    pub fn secrets_key_included(&self) -> bool {
        self.manifest.secrets_key_included || self.manifest.secrets.is_empty()
    }
}

fn read_document(entry: &mut impl Read, name: &str) -> Result<Vec<u8>, BackupError> {
    let mut bytes = Vec::new();
    entry
        .take(MAX_DOCUMENT)
        .read_to_end(&mut bytes)
        .map_err(|e| BackupError::Format(format!("{name}: {e}")))?;
    Ok(bytes)
}

/// Restores the backup read from `archive` (a tar stream: [`super::crypt::open`]
/// decrypts) into `target`'s state and cache directories. `open_inventory` opens the
/// inventory of a state directory; the current one is opened first (which fails while
/// the daemon holds it) to check that it is empty unless `opts.force`.
pub fn restore(
    archive: impl Read,
    target: &Sources<'_>,
    opts: RestoreOptions,
    open_inventory: OpenInventory<'_>,
) -> Result<RestoreReport, BackupError> {
    let mut archive = tar::Archive::new(archive);
    let mut entries = archive.entries().map_err(io_err(Path::new("backup")))?;
    let not_backup = |e: std::io::Error| BackupError::Format(format!("not a provisioner backup: {e}"));
    let mut next_named = |want: &str| -> Result<Vec<u8>, BackupError> {
        let mut e = entries
            .next()
            .ok_or_else(|| BackupError::Format(format!("not a provisioner backup: no {want}")))?
            .map_err(not_backup)?;
        let name = e.path().map_err(not_backup)?.to_string_lossy().into_owned();
        if name != want {
            return Err(BackupError::Format(format!(
                "not a provisioner backup: found {name:?} where {want} belongs"
            )));
        }
        read_document(&mut e, want)
    };
    let manifest = check_format(&next_named(MANIFEST)?)?;
    let snapshot: Snapshot = serde_json::from_slice(&next_named(INVENTORY)?)
        .map_err(|e| BackupError::Format(format!("{INVENTORY}: {e}")))?;
    if snapshot.schema_version > SCHEMA_VERSION {
        return Err(InventoryError::SchemaTooNew {
            found: snapshot.schema_version,
            supported: SCHEMA_VERSION,
        }
        .into());
    }

    // The current state: locked by opening its inventory, checked, released.
    crate::sys::state::ensure_dir(target.state_dir).map_err(io_err(target.state_dir))?;
    let current = open_inventory(target.state_dir)?;
    if !opts.force {
        refuse_overwrite(&manifest, current.as_ref(), target.state_dir)?;
    }
    drop(current);

    let state = std::fs::canonicalize(target.state_dir).map_err(io_err(target.state_dir))?;
    let cache = std::fs::canonicalize(target.cache_dir).unwrap_or_else(|_| target.cache_dir.to_path_buf());
    let cache_inside = cache.strip_prefix(&state).ok().map(Path::to_path_buf);
    let mut linked = vec![PathBuf::from("backups")];
    linked.extend(cache_inside.clone());
    let staging = Staging::begin(target.state_dir, &linked)?;
    let secrets_dir = staging.dir.join(SECRETS_DIR);
    // Images go into the staged cache when the cache lives in the state directory;
    // a cache elsewhere is written in place (per file, atomically): it is a cache.
    let cache_dir = staging.map(&cache).unwrap_or(cache);

    let mut secrets_done = BTreeSet::new();
    let mut state_done = BTreeSet::new();
    let mut images_restored = 0;
    for entry in entries {
        let mut entry = entry.map_err(not_backup)?;
        let name = entry.path().map_err(not_backup)?.to_string_lossy().into_owned();
        let (listed, dir, rel) = if let Some(rel) = name.strip_prefix("secrets/") {
            (&manifest.secrets, secrets_dir.as_path(), rel)
        } else if let Some(rel) = name.strip_prefix(STATE_PREFIX) {
            (&manifest.state, staging.dir.as_path(), rel)
        } else if let Some(rel) = name.strip_prefix("images/").filter(|_| manifest.images_included) {
            (&manifest.images, cache_dir.as_path(), rel)
        } else {
            return Err(BackupError::Format(format!(
                "unexpected entry {name:?} in backup"
            )));
        };
        let expected = listed
            .iter()
            .find(|e| e.path == rel)
            .ok_or_else(|| BackupError::Format(format!("{name:?} is not in {MANIFEST}")))?;
        write_checked(&mut entry, dir, rel, expected, &name)?;
        failpoint("restore:writing");
        if name.starts_with("secrets/") {
            secrets_done.insert(rel.to_string());
        } else if name.starts_with(STATE_PREFIX) {
            state_done.insert(rel.to_string());
        } else {
            images_restored += 1;
        }
    }
    let missing: Vec<&str> = manifest
        .secrets
        .iter()
        .filter(|e| !secrets_done.contains(&e.path))
        .chain(manifest.state.iter().filter(|e| !state_done.contains(&e.path)))
        .map(|e| e.path.as_str())
        .collect();
    if !missing.is_empty() {
        return Err(BackupError::Format(format!(
            "backup is incomplete: files {missing:?} listed but absent"
        )));
    }

    open_inventory(&staging.dir)?.import(&snapshot)?;
    let (mut images_present, mut images_missing, mut images_mismatched) = (0, vec![], vec![]);
    for e in &manifest.images {
        let path = cache_dir.join(safe_relative(&e.path)?);
        match std::fs::File::open(&path) {
            Ok(f) => match hash_reader(f).map_err(io_err(&path))? {
                (h, _) if h == e.sha256 => images_present += 1,
                _ => images_mismatched.push(e.path.clone()),
            },
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                images_missing.push(e.path.clone());
            }
            Err(err) => return Err(io_err(&path)(err)),
        }
    }
    failpoint("restore:staged");
    staging.commit()?;
    Ok(RestoreReport {
        secrets_restored: secrets_done.len(),
        state_restored: state_done.len(),
        images_restored,
        images_present,
        images_missing,
        images_mismatched,
        manifest,
    })
}

/// Refuses to restore over an inventory with machines, a non-empty `secrets/`, or
/// state files the backup would overwrite.
fn refuse_overwrite(
    manifest: &Manifest,
    current: &dyn Inventory,
    state_dir: &Path,
) -> Result<(), BackupError> {
    if !current.list()?.is_empty() {
        return Err(BackupError::NotEmpty(format!(
            "the inventory in {}",
            state_dir.display()
        )));
    }
    let secrets_dir = state_dir.join(SECRETS_DIR);
    if !manifest_of(&secrets_dir)?.is_empty() {
        return Err(BackupError::NotEmpty(secrets_dir.display().to_string()));
    }
    // Only what the backup would overwrite: a fresh state directory has none.
    let present = state_manifest(state_dir)?;
    if let Some(e) = present
        .iter()
        .find(|p| manifest.state.iter().any(|m| m.path == p.path))
    {
        return Err(BackupError::NotEmpty(
            state_dir.join(&e.path).display().to_string(),
        ));
    }
    Ok(())
}

/// Writes one archive entry to `dir/rel` through a temporary file, checking its hash.
fn write_checked(
    entry: &mut impl Read,
    dir: &Path,
    rel: &str,
    expected: &FileEntry,
    name: &str,
) -> Result<(), BackupError> {
    let dest = dir.join(safe_relative(rel)?);
    if let Some(parent) = dest.parent() {
        crate::sys::state::ensure_dir(parent).map_err(io_err(parent))?;
    }
    let tmp = dest.with_file_name(format!(
        ".{}.restoring",
        dest.file_name().and_then(|n| n.to_str()).unwrap_or("file")
    ));
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io_err(&tmp))?;
    let mut hashing = HashingReader::new(entry);
    std::io::copy(&mut hashing, &mut out).map_err(io_err(&tmp))?;
    out.sync_all().map_err(io_err(&tmp))?;
    let found = hashing.finish();
    if found != expected.sha256 {
        let _ = std::fs::remove_file(&tmp);
        return Err(BackupError::Mismatch {
            path: name.to_string(),
            expected: expected.sha256.clone(),
            found,
        });
    }
    std::fs::rename(&tmp, &dest).map_err(io_err(&dest))
}
