//! One age-encrypted file per key under a directory of `<state_dir>/secrets/`, keyed by
//! the appliance's identity in `secrets/secrets.key` (0600). Used for documents that
//! hold credentials but are not secrets bundles: k0s PKI, fetched admin kubeconfigs.
//! Writes are atomic and durable (temp file, fsync, rename, fsync of the directory),
//! so an acknowledged `put` survives `kill -9`.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use provisioner_core::cluster::KubeconfigError;

/// Why a file could not be read or written (never secret material).
#[derive(Debug, thiserror::Error)]
pub enum AgeFileError {
    /// I/O or encryption failed.
    #[error("{0}")]
    Backend(String),
    /// The file exists but does not decrypt with `secrets.key`.
    #[error("{path}: does not decrypt with secrets.key")]
    Undecryptable {
        /// Which file.
        path: String,
    },
}

/// Encrypted files in one directory.
pub struct AgeFiles {
    dir: PathBuf,
    identity: age::x25519::Identity,
}

impl std::fmt::Debug for AgeFiles {
    /// The directory only: the identity is the key to every file.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgeFiles")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

fn io(path: &Path, e: impl std::fmt::Display) -> AgeFileError {
    AgeFileError::Backend(format!("{}: {e}", path.display()))
}

impl AgeFiles {
    /// `<state_dir>/secrets/<sub>`, created if absent, with the shared identity in
    /// `<state_dir>/secrets/secrets.key`.
    pub fn open(state_dir: &Path, sub: &str) -> Result<Self, AgeFileError> {
        Self::open_keyed(state_dir, sub, &super::SecretsKey::in_state_dir(state_dir))
    }

    /// `<state_dir>/secrets/<sub>`, created if absent, with the configuration's
    /// secrets key (which may live outside the state directory).
    pub fn open_keyed(state_dir: &Path, sub: &str, key: &super::SecretsKey) -> Result<Self, AgeFileError> {
        let dir = state_dir.join(crate::store::SECRETS_DIR).join(sub);
        std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
        let identity = key.load().map_err(|e| AgeFileError::Backend(e.to_string()))?;
        Ok(Self { dir, identity })
    }

    fn path(&self, name: &str) -> Result<PathBuf, AgeFileError> {
        // Names are cluster names; refuse anything that could leave the directory.
        if name.is_empty() || name.contains(['/', '\0']) || name.starts_with('.') {
            return Err(AgeFileError::Backend(format!("invalid name {name:?}")));
        }
        Ok(self.dir.join(format!("{name}.age")))
    }

    /// The decrypted contents of `name`, if it exists.
    pub fn read(&self, name: &str) -> Result<Option<Vec<u8>>, AgeFileError> {
        let path = self.path(name)?;
        let ct = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(&path, e)),
        };
        age::decrypt(&self.identity, &ct)
            .map(Some)
            .map_err(|_| AgeFileError::Undecryptable {
                path: path.display().to_string(),
            })
    }

    /// Encrypts `plain` into `name`, durably.
    pub fn write(&self, name: &str, plain: &[u8]) -> Result<(), AgeFileError> {
        let ct = age::encrypt(&self.identity.to_public(), plain)
            .map_err(|e| AgeFileError::Backend(e.to_string()))?;
        let path = self.path(name)?;
        let tmp = path.with_extension("age.tmp");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| io(&tmp, e))?;
        f.write_all(&ct)
            .and_then(|()| f.sync_all())
            .map_err(|e| io(&tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| io(&path, e))?;
        // The rename is durable once the directory entry is.
        std::fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io(&self.dir, e))
    }
}

fn kubeconfig_error(e: AgeFileError) -> KubeconfigError {
    match e {
        AgeFileError::Undecryptable { path } => KubeconfigError::Undecryptable(path),
        AgeFileError::Backend(m) => KubeconfigError::Backend(m),
    }
}

/// Admin kubeconfigs fetched by the bootstrap orchestrator, encrypted at rest under
/// `<state_dir>/secrets/kubeconfigs/<cluster>.age`.
#[derive(Debug)]
pub struct AgeKubeconfigs(AgeFiles);

impl AgeKubeconfigs {
    /// Opens (creates) the directory under `state_dir`.
    pub fn open(state_dir: &Path) -> Result<Self, AgeFileError> {
        AgeFiles::open(state_dir, "kubeconfigs").map(Self)
    }

    /// Opens (creates) the directory under `state_dir`, with the configuration's key.
    pub fn open_keyed(state_dir: &Path, key: &super::SecretsKey) -> Result<Self, AgeFileError> {
        AgeFiles::open_keyed(state_dir, "kubeconfigs", key).map(Self)
    }
}

impl provisioner_core::cluster::KubeconfigStore for AgeKubeconfigs {
    fn put(&self, cluster: &str, kubeconfig: &[u8]) -> Result<(), KubeconfigError> {
        self.0.write(cluster, kubeconfig).map_err(kubeconfig_error)
    }

    fn get(&self, cluster: &str) -> Result<Option<Vec<u8>>, KubeconfigError> {
        self.0.read(cluster).map_err(kubeconfig_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use provisioner_core::cluster::KubeconfigStore;

    #[test]
    fn kubeconfigs_are_encrypted_at_rest_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let store = AgeKubeconfigs::open(dir.path()).unwrap();
        assert_eq!(store.get("lab").unwrap(), None);
        let doc =
            b"apiVersion: v1\nkind: Config\nusers: [{name: admin, user: {client-key-data: SECRETKEY}}]\n";
        store.put("lab", doc).unwrap();
        let file = dir
            .path()
            .join(crate::store::SECRETS_DIR)
            .join("kubeconfigs/lab.age");
        let raw = std::fs::read(&file).unwrap();
        assert!(!raw.windows(9).any(|w| w == b"SECRETKEY"), "plaintext on disk");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let reopened = AgeKubeconfigs::open(dir.path()).unwrap();
        assert_eq!(reopened.get("lab").unwrap().as_deref(), Some(&doc[..]));
        assert!(reopened.put("../escape", doc).is_err());
        // A file written under another key is reported, not returned as garbage.
        std::fs::write(&file, b"not age").unwrap();
        assert!(
            reopened
                .get("lab")
                .unwrap_err()
                .to_string()
                .contains("does not decrypt")
        );
    }
}
