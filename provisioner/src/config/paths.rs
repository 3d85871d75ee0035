//! Where the inputs are, and the keys systemd hands the service.

use std::path::Path;

use super::Config;

/// The systemd credential holding the age key of `infra/*.talenv.sops.yaml`
/// (`LoadCredential=provisioner.talenv.key`).
pub const TALENV_KEY_CREDENTIAL: &str = "provisioner.talenv.key";

impl Config {
    /// Where `images/`, `profiles/`, `infra/` and `gitops/` are, and the age key file
    /// of `infra/`'s encrypted talenv files.
    pub fn input_dirs(&self) -> crate::inputs::Dirs<'_> {
        crate::inputs::Dirs {
            images: &self.images_dir,
            profiles: &self.profiles_dir,
            infra: &self.infra_dir,
            gitops: &self.gitops_dir,
            talenv_age_key: self.talenv_age_key_file.as_deref(),
        }
    }

    /// Credentials systemd hands the service (`$CREDENTIALS_DIRECTORY`, from
    /// `LoadCredential=`) win over the configured files, as for the secrets key: the
    /// talenv age key (`talenv_age_key_file` otherwise), which decrypts the values
    /// `import talhelper` kept encrypted (`infra/<cluster>.talenv.sops.yaml`), kept
    /// outside `infra/`.
    pub fn apply_credentials(&mut self, credentials_dir: Option<&std::ffi::OsStr>) {
        let talenv = credentials_dir.map(|d| Path::new(d).join(TALENV_KEY_CREDENTIAL));
        if let Some(p) = talenv.filter(|p| p.is_file()) {
            self.talenv_age_key_file = Some(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_talenv_credential_wins_over_the_configured_file() {
        let creds = tempfile::tempdir().unwrap();
        let mut cfg = Config {
            talenv_age_key_file: Some("/etc/provisioner/talenv.key".into()),
            ..Config::default()
        };
        // Named but absent: the configured file stays.
        cfg.apply_credentials(Some(creds.path().as_os_str()));
        assert_eq!(
            cfg.input_dirs().talenv_age_key,
            Some(Path::new("/etc/provisioner/talenv.key"))
        );
        std::fs::write(creds.path().join(TALENV_KEY_CREDENTIAL), "AGE-SECRET-KEY-1\n").unwrap();
        cfg.apply_credentials(Some(creds.path().as_os_str()));
        let want = creds.path().join(TALENV_KEY_CREDENTIAL);
        assert_eq!(cfg.input_dirs().talenv_age_key, Some(want.as_path()));
        cfg.apply_credentials(None);
        assert_eq!(cfg.input_dirs().talenv_age_key, Some(want.as_path()));
    }
}
