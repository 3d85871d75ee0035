//! The I/O side of `provisioner import talhelper`: the talenv files, the files a
//! talconfig names with `@`, SOPS decryption with the operator's age key. The
//! conversion itself is pure (`provisioner_core::talos::talhelper`).
//!
//! Facts from talhelper v3.1.16-20 (`39b6979`): `genconfig` reads the env files
//! `talenv.yaml`, `talenv.sops.yaml`, `talenv.yml`, `talenv.sops.yml` (`cmd/genconfig.go`
//! `--env-file`), skips missing ones, decrypts each with sops and sets every key as an
//! environment variable, so a later file, and any file, wins over the process
//! environment (`pkg/substitute/envsubst.go` `LoadEnvFromFiles`). Here they are looked
//! up next to the talconfig. `@` paths are relative to the talconfig's directory
//! (`pkg/substitute/pathsubst.go`). The age identity comes from `--age-key`, else
//! where sops looks: `SOPS_AGE_KEY_FILE`, `SOPS_AGE_KEY`, then
//! `$XDG_CONFIG_HOME/sops/age/keys.txt` (`~/.config/sops/age/keys.txt`).
//! Which values came from an encrypted talenv is tracked ([`TalconfigDir::sealed`]):
//! the import keeps those as `${NAME}` (`provisioner_core::talos::talhelper::sealed`).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use provisioner_core::talos::talhelper::{self, FileError, Sources, TalenvError};

use super::sops;

/// talhelper's default env files, in load order.
pub const ENV_FILES: [&str; 4] = ["talenv.yaml", "talenv.sops.yaml", "talenv.yml", "talenv.sops.yml"];

/// Why the talenv files or the age key cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// A file cannot be read.
    #[error("{0}: {1}")]
    Read(PathBuf, std::io::Error),
    /// A talenv file does not decrypt.
    #[error("{0}: {1}")]
    Decrypt(PathBuf, FileError),
    /// A talenv file does not parse.
    #[error("{0}: {1}")]
    Env(PathBuf, TalenvError),
}

/// Files next to a talconfig, the talenv values and the age identity.
pub struct TalconfigDir {
    dir: PathBuf,
    env: BTreeMap<String, String>,
    age_key: Option<String>,
    /// The encrypted talenv file each variable's value came from (talenv files only;
    /// a later plain file that sets the name takes it out).
    sealed_from: BTreeMap<String, PathBuf>,
    /// `@` files that were SOPS-encrypted.
    encrypted_files: RefCell<Vec<PathBuf>>,
}

// Values and the key are secrets: Debug shows only where they came from.
impl std::fmt::Debug for TalconfigDir {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TalconfigDir")
            .field("dir", &self.dir)
            .field("vars", &self.env.len())
            .field("sealed_from", &self.sealed_from)
            .field("encrypted_files", &self.encrypted_files.borrow())
            .finish_non_exhaustive()
    }
}

/// The age key file's contents, from `--age-key` or where sops looks.
pub fn age_key(explicit: Option<&Path>) -> Result<Option<String>, SourceError> {
    let read = |p: PathBuf| std::fs::read_to_string(&p).map_err(|e| SourceError::Read(p, e));
    if let Some(p) = explicit {
        return read(p.to_path_buf()).map(Some);
    }
    if let Some(p) = std::env::var_os("SOPS_AGE_KEY_FILE") {
        return read(PathBuf::from(p)).map(Some);
    }
    if let Ok(k) = std::env::var("SOPS_AGE_KEY") {
        return Ok(Some(k));
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")));
    match base.map(|b| b.join("sops/age/keys.txt")) {
        Some(p) if p.is_file() => read(p).map(Some),
        _ => Ok(None),
    }
}

fn decrypt(text: String, key: Option<&str>, what: &Path) -> Result<String, FileError> {
    if !sops::is_sops(&text) {
        return Ok(text);
    }
    let key = key.ok_or_else(|| FileError::NoAgeKey(what.display().to_string()))?;
    sops::decrypt_yaml(&text, key).map_err(|e| FileError::Decrypt(Box::new(e)))
}

impl TalconfigDir {
    /// Loads the env files (`env_files`, or talhelper's defaults) next to `talconfig`.
    pub fn load(
        talconfig: &Path,
        env_files: &[PathBuf],
        age_key: Option<String>,
    ) -> Result<Self, SourceError> {
        let dir = talconfig
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf();
        let files: Vec<PathBuf> = if env_files.is_empty() {
            ENV_FILES.iter().map(|f| dir.join(f)).collect()
        } else {
            env_files.to_vec()
        };
        let mut me = TalconfigDir {
            dir,
            env: BTreeMap::new(),
            age_key,
            sealed_from: BTreeMap::new(),
            encrypted_files: RefCell::new(Vec::new()),
        };
        for f in files {
            let text = match std::fs::read_to_string(&f) {
                Ok(t) => t,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(SourceError::Read(f, e)),
            };
            let encrypted = sops::is_sops(&text);
            let plain =
                decrypt(text, me.age_key.as_deref(), &f).map_err(|e| SourceError::Decrypt(f.clone(), e))?;
            let vars = talhelper::parse_talenv(&plain).map_err(|e| SourceError::Env(f.clone(), e))?;
            for k in vars.keys() {
                match encrypted {
                    true => me.sealed_from.insert(k.clone(), f.clone()),
                    false => me.sealed_from.remove(k),
                };
            }
            me.env.extend(vars);
        }
        Ok(me)
    }

    /// The `@` files read so far that were SOPS-encrypted.
    pub fn encrypted_files(&self) -> Vec<PathBuf> {
        self.encrypted_files.borrow().clone()
    }

    /// The variables whose value came from an encrypted talenv (what import keeps
    /// as `${NAME}`), and those files (deduplicated, in load order).
    pub fn sealed(&self) -> (BTreeMap<String, String>, Vec<PathBuf>) {
        let vars = self
            .sealed_from
            .keys()
            .filter_map(|k| Some((k.clone(), self.env.get(k)?.clone())))
            .collect();
        let mut files: Vec<PathBuf> = Vec::new();
        for f in self.sealed_from.values() {
            if !files.contains(f) {
                files.push(f.clone());
            }
        }
        (vars, files)
    }
}

impl Sources for TalconfigDir {
    fn var(&self, name: &str) -> Option<String> {
        self.env.get(name).cloned().or_else(|| std::env::var(name).ok())
    }

    fn file(&self, path: &str) -> Result<String, FileError> {
        let p = self.dir.join(path);
        let text = std::fs::read_to_string(&p).map_err(|error| FileError::Read {
            path: p.display().to_string(),
            error,
        })?;
        if sops::is_sops(&text) {
            self.encrypted_files.borrow_mut().push(p.clone());
        }
        decrypt(text, self.age_key.as_deref(), &p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_are_those_an_encrypted_talenv_gave_last() {
        use age::secrecy::ExposeSecret;
        let dir = tempfile::tempdir().unwrap();
        let id = age::x25519::Identity::generate();
        let enc = sops::encrypt_yaml(
            "VIP: 10.0.0.10\nHOST: cp-1\n",
            &id.to_public().to_string(),
            "2026-12-07T21:00:00Z",
        )
        .unwrap();
        std::fs::write(dir.path().join("talenv.sops.yaml"), enc).unwrap();
        // A later plain file sets HOST: that value is not sealed.
        std::fs::write(dir.path().join("talenv.yml"), "HOST: cp-plain\n").unwrap();
        let talconfig = dir.path().join("talconfig.yaml");
        let key = id.to_string().expose_secret().to_string();
        let d = TalconfigDir::load(&talconfig, &[], Some(key)).unwrap();
        let (vars, files) = d.sealed();
        assert_eq!(
            vars.into_iter().collect::<Vec<_>>(),
            vec![("VIP".to_string(), "10.0.0.10".to_string())]
        );
        assert_eq!(files, vec![dir.path().join("talenv.sops.yaml")]);
        assert_eq!(d.var("HOST").as_deref(), Some("cp-plain"));
        // Debug names files and counts, never a value or the key.
        let dbg = format!("{d:?}");
        assert!(
            !dbg.contains("10.0.0.10") && !dbg.contains("AGE-SECRET-KEY"),
            "{dbg}"
        );
    }
}
