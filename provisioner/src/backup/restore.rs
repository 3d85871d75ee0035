//! Restoring a backup: check the format and schema versions before touching anything,
//! refuse to overwrite existing state unless forced, write every file through a
//! temporary name after checking its SHA-256, then import the inventory.

use std::collections::BTreeSet;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use provisioner_core::inventory::{Inventory, InventoryError, SCHEMA_VERSION, Snapshot};

use super::{
    BackupError, FileEntry, HashingReader, INVENTORY, MANIFEST, Manifest, SECRETS_DIR, STATE_PREFIX, Sources,
    check_format, hash_reader, io_err, manifest_of, safe_relative, state_manifest,
};

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

fn read_document(entry: &mut impl Read, name: &str) -> Result<Vec<u8>, BackupError> {
    let mut bytes = Vec::new();
    entry
        .take(MAX_DOCUMENT)
        .read_to_end(&mut bytes)
        .map_err(|e| BackupError::Format(format!("{name}: {e}")))?;
    Ok(bytes)
}

/// Restores `file` into `target` (state and cache directories) and `inventory`.
pub fn restore(
    file: &Path,
    inventory: &dyn Inventory,
    target: &Sources<'_>,
    opts: RestoreOptions,
) -> Result<RestoreReport, BackupError> {
    let f = std::fs::File::open(file).map_err(io_err(file))?;
    let mut archive = tar::Archive::new(std::io::BufReader::new(f));
    let mut entries = archive.entries().map_err(io_err(file))?;
    let not_backup =
        |e: std::io::Error| BackupError::Format(format!("{}: not a provisioner backup: {e}", file.display()));
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

    let secrets_dir = target.state_dir.join(SECRETS_DIR);
    if !opts.force {
        if !inventory.list()?.is_empty() {
            return Err(BackupError::NotEmpty(format!(
                "the inventory in {}",
                target.state_dir.display()
            )));
        }
        if !manifest_of(&secrets_dir)?.is_empty() {
            return Err(BackupError::NotEmpty(secrets_dir.display().to_string()));
        }
        // Only what the backup would overwrite: a fresh state directory has none.
        let present = state_manifest(target.state_dir)?;
        if let Some(e) = present
            .iter()
            .find(|p| manifest.state.iter().any(|m| m.path == p.path))
        {
            return Err(BackupError::NotEmpty(
                target.state_dir.join(&e.path).display().to_string(),
            ));
        }
    }

    let mut secrets_done = BTreeSet::new();
    let mut state_done = BTreeSet::new();
    let mut images_restored = 0;
    for entry in entries {
        let mut entry = entry.map_err(io_err(file))?;
        let name = entry.path().map_err(io_err(file))?.to_string_lossy().into_owned();
        let (listed, dir, rel) = if let Some(rel) = name.strip_prefix("secrets/") {
            (&manifest.secrets, secrets_dir.as_path(), rel)
        } else if let Some(rel) = name.strip_prefix(STATE_PREFIX) {
            (&manifest.state, target.state_dir, rel)
        } else if let Some(rel) = name.strip_prefix("images/").filter(|_| manifest.images_included) {
            (&manifest.images, target.cache_dir, rel)
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

    inventory.import(&snapshot)?;

    let (mut images_present, mut images_missing, mut images_mismatched) = (0, vec![], vec![]);
    for e in &manifest.images {
        let path = target.cache_dir.join(safe_relative(&e.path)?);
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
        crate::state::ensure_dir(parent).map_err(io_err(parent))?;
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
