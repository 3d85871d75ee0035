//! The encrypted talenv files of `infra/` (`<cluster>.talenv.sops.yaml`, written by
//! `provisioner import talhelper` next to a cluster file that keeps `${NAME}`s for
//! the values the operator chose to encrypt; `provisioner_core::talos::talhelper::sealed`).
//! They are decrypted in memory, each time `infra/` is loaded, with the age key file
//! `talenv_age_key_file` names: a key kept apart from `infra/` (like sops' own
//! `keys.txt`; every `AGE-SECRET-KEY-` line in it is tried). Nothing decrypted is
//! written, logged or put in an error: errors name the file, the field and the
//! variable.

use std::collections::BTreeMap;
use std::path::Path;

use provisioner_core::catalog::CatalogError;
use provisioner_core::infra::{self, Infra, TalenvUnavailable, Talenvs};
use provisioner_core::talos::talhelper;

use crate::pki::sops;

/// The age key file that decrypts `infra/*.talenv.sops.yaml` (`None`: not configured).
#[derive(Debug, Clone, Copy)]
pub struct TalenvKey<'a>(pub Option<&'a Path>);

impl Talenvs for TalenvKey<'_> {
    fn vars(&self, file: &Path, text: &str) -> Result<BTreeMap<String, String>, TalenvUnavailable> {
        let why = |s: String| TalenvUnavailable(s);
        let Some(key_file) = self.0 else {
            return Err(why(format!(
                "no age key to decrypt it: set `talenv_age_key_file` (PROVISIONER_TALENV_AGE_KEY_FILE) to an age key file that is one of its sops.age recipients, kept outside {}",
                file.parent().unwrap_or(Path::new(".")).display()
            )));
        };
        if !sops::is_sops(text) {
            return Err(why(format!(
                "{} is not SOPS-encrypted (only encrypted talenv files are read from infra/)",
                file.display()
            )));
        }
        let key = std::fs::read_to_string(key_file)
            .map_err(|e| why(format!("the age key file {}: {e}", key_file.display())))?;
        let plain = sops::decrypt_yaml(text, &key)
            .map_err(|e| why(format!("does not decrypt with {}: {e}", key_file.display())))?;
        talhelper::parse_talenv(&plain).map_err(|e| why(e.to_string()))
    }
}

/// `infra/` loaded and validated, the encrypted talenv values resolved with `key`:
/// the one way the daemon and the CLI read `infra/` (`check`, `serve`, a reload
/// after an adoption, `talos config`). `instead` is an edit about to be written.
pub fn load_infra(
    dir: &Path,
    key: Option<&Path>,
    instead: Option<(&Path, &str)>,
) -> Result<Infra, CatalogError> {
    infra::load_sealed(dir, instead, &TalenvKey(key))
}
