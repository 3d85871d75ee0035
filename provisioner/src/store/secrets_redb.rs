//! Secrets bundles on redb, encrypted at rest with age (X25519 + ChaCha20-Poly1305,
//! the age v1 format). The age identity lives in a key file created on first use
//! with mode 0600 next to the store; the store file alone reveals nothing.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::str::FromStr;

use age::secrecy::ExposeSecret;
use provisioner_core::talos::SecretsBundle;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use provisioner_core::talos::store::{SecretStore, SecretStoreError};

const BUNDLES: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("talos_secrets");

/// The redb-backed, age-encrypted [`SecretStore`].
pub struct RedbSecretStore {
    db: Database,
    identity: age::x25519::Identity,
}

impl std::fmt::Debug for RedbSecretStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the identity.
        f.debug_struct("RedbSecretStore").finish_non_exhaustive()
    }
}

fn backend(e: impl std::fmt::Display) -> SecretStoreError {
    SecretStoreError::Backend(e.to_string())
}

/// Reads the age identity from `key_file`, creating it (0600, exclusive create) if
/// it does not exist.
pub fn load_or_create_identity(key_file: &Path) -> Result<age::x25519::Identity, SecretStoreError> {
    match std::fs::read_to_string(key_file) {
        Ok(text) => age::x25519::Identity::from_str(text.trim())
            .map_err(|_| SecretStoreError::Backend(format!("{}: not an age identity", key_file.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id = age::x25519::Identity::generate();
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(key_file)
                .map_err(|e| SecretStoreError::Backend(format!("{}: {e}", key_file.display())))?;
            f.write_all(format!("{}\n", id.to_string().expose_secret()).as_bytes())
                .and_then(|()| f.sync_all())
                .map_err(|e| SecretStoreError::Backend(format!("{}: {e}", key_file.display())))?;
            Ok(id)
        }
        Err(e) => Err(SecretStoreError::Backend(format!("{}: {e}", key_file.display()))),
    }
}

impl RedbSecretStore {
    /// Opens (or creates) the store at `path`, with the identity from `key_file`.
    pub fn open(path: &Path, key_file: &Path) -> Result<Self, SecretStoreError> {
        Self::open_with(path, load_or_create_identity(key_file)?)
    }

    /// Opens (or creates) the store at `path`, with the secrets key of the
    /// configuration ([`super::SecretsKey`]).
    pub fn open_keyed(path: &Path, key: &super::SecretsKey) -> Result<Self, SecretStoreError> {
        Self::open_with(path, key.load()?)
    }

    fn open_with(path: &Path, identity: age::x25519::Identity) -> Result<Self, SecretStoreError> {
        let db = Database::create(path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => SecretStoreError::Backend(format!(
                "{} is open in another process (is `provisioner serve` running?)",
                path.display()
            )),
            e => SecretStoreError::Backend(format!("{}: {e}", path.display())),
        })?;
        let txn = db.begin_write().map_err(backend)?;
        txn.open_table(BUNDLES).map_err(backend)?;
        txn.commit().map_err(backend)?;
        Ok(Self { db, identity })
    }

    fn seal(&self, bundle: &SecretsBundle) -> Result<Vec<u8>, SecretStoreError> {
        let recipient = self.identity.to_public();
        age::encrypt(&recipient, bundle.to_yaml().as_bytes()).map_err(backend)
    }

    fn open_sealed(&self, cluster: &str, ct: &[u8]) -> Result<SecretsBundle, SecretStoreError> {
        let corrupt = |message: String| SecretStoreError::Corrupt {
            cluster: cluster.to_string(),
            message,
        };
        let pt = age::decrypt(&self.identity, ct).map_err(|e| corrupt(format!("does not decrypt: {e}")))?;
        let text = String::from_utf8(pt).map_err(|_| corrupt("not UTF-8".into()))?;
        SecretsBundle::from_yaml(&text).map_err(|_| corrupt("not a secrets bundle".into()))
    }
}

impl SecretStore for RedbSecretStore {
    fn get(&self, cluster: &str) -> Result<Option<SecretsBundle>, SecretStoreError> {
        let txn = self.db.begin_read().map_err(backend)?;
        let table = txn.open_table(BUNDLES).map_err(backend)?;
        match table.get(cluster).map_err(backend)? {
            Some(v) => Ok(Some(self.open_sealed(cluster, v.value())?)),
            None => Ok(None),
        }
    }

    fn put(&self, cluster: &str, bundle: &SecretsBundle) -> Result<(), SecretStoreError> {
        let sealed = self.seal(bundle)?;
        let txn = self.db.begin_write().map_err(backend)?;
        {
            let mut table = txn.open_table(BUNDLES).map_err(backend)?;
            table.insert(cluster, sealed.as_slice()).map_err(backend)?;
        }
        txn.commit().map_err(backend)
    }

    fn delete(&self, cluster: &str) -> Result<bool, SecretStoreError> {
        let txn = self.db.begin_write().map_err(backend)?;
        let existed = {
            let mut table = txn.open_table(BUNDLES).map_err(backend)?;
            table.remove(cluster).map_err(backend)?.is_some()
        };
        txn.commit().map_err(backend)?;
        Ok(existed)
    }

    fn list(&self) -> Result<Vec<String>, SecretStoreError> {
        let txn = self.db.begin_read().map_err(backend)?;
        let table = txn.open_table(BUNDLES).map_err(backend)?;
        let mut out = Vec::new();
        for entry in table.iter().map_err(backend)? {
            let (k, _) = entry.map_err(backend)?;
            out.push(k.value().to_string());
        }
        Ok(out)
    }
}
