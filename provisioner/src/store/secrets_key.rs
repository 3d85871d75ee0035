//! Where the secrets key lives: the age X25519 identity that decrypts every secret at
//! rest (Talos bundles in `secrets/secrets.redb`, k0s PKI in `secrets/k0s/`, admin
//! kubeconfigs in `secrets/kubeconfigs/`). Losing it loses all of them: the clusters'
//! CAs cannot be recovered and their nodes must be reinstalled with new ones.
//!
//! In order:
//! 1. the systemd credential [`CREDENTIAL`] (`LoadCredential=` in the unit; systemd
//!    puts it in `$CREDENTIALS_DIRECTORY`, readable only by the service, in memory),
//!    used when present and never written;
//! 2. `secrets_key_file` in the configuration (e.g. `/etc/credstore/…`, kept apart
//!    from the state so a copy of the state reveals nothing);
//! 3. `<state_dir>/secrets/secrets.key`, the default.
//!
//! A missing key is created (0600, exclusive create) only where nothing was encrypted
//! yet: next to existing ciphertexts a new key could decrypt none of them, so that is
//! an error naming the file instead.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use provisioner_core::talos::store::SecretStoreError;

/// The credential name the unit loads (`LoadCredential=provisioner.secrets.key`).
pub const CREDENTIAL: &str = "provisioner.secrets.key";
/// The key's name in `<state_dir>/secrets/`.
pub const DEFAULT_NAME: &str = "secrets.key";

/// Where the key came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyOrigin {
    /// `$CREDENTIALS_DIRECTORY/provisioner.secrets.key`.
    Credential,
    /// `secrets_key_file` in the configuration.
    Config,
    /// `<state_dir>/secrets/secrets.key`.
    StateDir,
}

/// The secrets key of one configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretsKey {
    /// The key file.
    pub path: PathBuf,
    /// Which rule chose it.
    pub origin: KeyOrigin,
    /// `<state_dir>/secrets`, where its ciphertexts live.
    secrets_dir: PathBuf,
}

impl SecretsKey {
    /// Applies the rules above. `credentials_dir` is `$CREDENTIALS_DIRECTORY`.
    pub fn locate(state_dir: &Path, configured: Option<&Path>, credentials_dir: Option<&OsStr>) -> Self {
        let secrets_dir = state_dir.join(crate::store::SECRETS_DIR);
        let credential = credentials_dir
            .map(|d| Path::new(d).join(CREDENTIAL))
            .filter(|p| p.is_file());
        let (path, origin) = match (credential, configured) {
            (Some(p), _) => (p, KeyOrigin::Credential),
            (None, Some(p)) => (p.to_path_buf(), KeyOrigin::Config),
            (None, None) => (secrets_dir.join(DEFAULT_NAME), KeyOrigin::StateDir),
        };
        Self {
            path,
            origin,
            secrets_dir,
        }
    }

    /// The default key of `state_dir` (tests and tools without a configuration).
    pub fn in_state_dir(state_dir: &Path) -> Self {
        Self::locate(state_dir, None, None)
    }

    /// Whether the key is inside `<state_dir>/secrets/` (so a backup carries it).
    pub fn in_secrets_dir(&self) -> bool {
        self.path.starts_with(&self.secrets_dir)
    }

    /// Whether anything under `secrets/` is already encrypted (a store or an `.age`
    /// file), i.e. whether a new key would orphan it.
    fn has_ciphertexts(&self) -> bool {
        let mut stack = vec![self.secrets_dir.clone()];
        while let Some(d) = stack.pop() {
            let Ok(rd) = std::fs::read_dir(&d) else { continue };
            for e in rd.flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else if p != self.path
                    && matches!(p.extension().and_then(OsStr::to_str), Some("age" | "redb"))
                {
                    return true;
                }
            }
        }
        false
    }

    /// The identity, created where the rules allow it.
    pub fn load(&self) -> Result<age::x25519::Identity, SecretStoreError> {
        let exists = self.path.exists();
        if !exists && self.origin != KeyOrigin::Credential && self.has_ciphertexts() {
            return Err(SecretStoreError::Backend(format!(
                "the secrets key {} is missing, but {} holds secrets encrypted with a key: put \
                 the key back (or point `secrets_key_file` or the {CREDENTIAL} credential at \
                 it); a new key could decrypt none of them",
                self.path.display(),
                self.secrets_dir.display()
            )));
        }
        if !exists
            && self.origin == KeyOrigin::StateDir
            && let Some(dir) = self.path.parent()
        {
            crate::sys::state::ensure_dir(dir)
                .map_err(|e| SecretStoreError::Backend(format!("{}: {e}", dir.display())))?;
        }
        super::load_or_create_identity(&self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_then_config_then_state_dir() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let creds = dir.path().join("creds");
        std::fs::create_dir_all(&creds).unwrap();
        let conf = dir.path().join("etc/key");
        let k = SecretsKey::locate(&state, Some(&conf), Some(creds.as_os_str()));
        assert_eq!((k.origin, k.path.clone()), (KeyOrigin::Config, conf.clone()));
        assert!(!k.in_secrets_dir());
        std::fs::write(creds.join(CREDENTIAL), "x").unwrap();
        let k = SecretsKey::locate(&state, Some(&conf), Some(creds.as_os_str()));
        assert_eq!(k.origin, KeyOrigin::Credential);
        let k = SecretsKey::in_state_dir(&state);
        assert_eq!(k.path, state.join("secrets/secrets.key"));
        assert!(k.in_secrets_dir());
    }

    #[test]
    fn a_key_is_created_only_where_nothing_is_encrypted_yet() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        std::fs::create_dir_all(state.join("secrets/k0s")).unwrap();
        let outside = dir.path().join("key");
        let k = SecretsKey::locate(&state, Some(&outside), None);
        let id = k.load().unwrap();
        assert_eq!(
            k.load().unwrap().to_public(),
            id.to_public(),
            "created once, then read"
        );
        std::fs::write(state.join("secrets/k0s/lab.age"), b"age-encryption.org/v1\n").unwrap();
        std::fs::remove_file(&outside).unwrap();
        let err = k.load().err().expect("refused").to_string();
        assert!(
            err.contains("is missing") && err.contains("put the key back"),
            "{err}"
        );
        assert!(!outside.exists());
    }
}
