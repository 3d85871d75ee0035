//! Adopting a discovered machine: its MAC (and UUID) written into a node of
//! `infra/<cluster>.yaml` as a line edit (`provisioner_core::adopt::edit`), the
//! result validated by the loader `check` uses, written atomically (temp file +
//! fsync + rename + directory fsync), then the running appliance reloads its inputs
//! ([`Reloader`], implemented by the composition root) so the machine's next
//! network boot installs it. One adoption at a time: the [`Adopter`] is the one
//! writer of `infra/`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use provisioner_core::adopt::{self, edit};
use provisioner_core::catalog::ConfigKind;
use provisioner_core::infra::is_placeholder_mac;
use provisioner_core::model::MacAddr;
use serde::Serialize;

use crate::inputs::{Dirs, Inputs};

/// Re-reads the inputs and swaps what they decide into the running services.
pub trait Reloader: Send + Sync + std::fmt::Debug {
    /// Reloads; `Err` says why the running appliance still serves the old inputs.
    fn reload(&self) -> Result<(), ReloadError>;
}

/// Why the running appliance still serves the old inputs (shown to the operator).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ReloadError(pub String);

/// Why an adoption was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum AdoptError {
    /// No node with that hostname in `infra/`.
    #[error("no node {0:?} in infra/")]
    NoNode(String),
    /// Two clusters have a node with that hostname.
    #[error("node {0:?} is in more than one cluster ({1})")]
    Ambiguous(String, String),
    /// The node has another real MAC or UUID, or the MAC is someone else's.
    #[error("{0}")]
    Conflict(String),
    /// The current inputs, or the edited ones, do not validate.
    #[error("{0}")]
    Invalid(String),
    /// Reading or writing the file failed.
    #[error("{file}: {source}")]
    Io {
        /// The file.
        file: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
}

/// What an adoption changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Adopted {
    /// The machine.
    pub mac: String,
    /// Its cluster.
    pub cluster: String,
    /// Its node.
    pub node: String,
    /// The file written (`infra/<cluster>.yaml`).
    pub file: String,
    /// The lines written, as they read now (empty: the node had these values).
    pub lines: Vec<String>,
    /// The UUID written, when the machine reported one and the node takes one.
    pub uuid: Option<String>,
    /// `None` when the running appliance serves the new inputs; else why not (the
    /// file is written; a restart picks it up).
    pub reload_error: Option<String>,
}

/// The one writer of `infra/`.
#[derive(Debug)]
pub struct Adopter {
    images: PathBuf,
    profiles: PathBuf,
    infra: PathBuf,
    gitops: PathBuf,
    talenv_age_key: Option<PathBuf>,
    reloader: Arc<dyn Reloader>,
    one_at_a_time: Mutex<()>,
}

impl Adopter {
    /// An adopter over the input directories of `dirs`.
    pub fn new(dirs: Dirs<'_>, reloader: Arc<dyn Reloader>) -> Self {
        Self {
            images: dirs.images.to_path_buf(),
            profiles: dirs.profiles.to_path_buf(),
            infra: dirs.infra.to_path_buf(),
            gitops: dirs.gitops.to_path_buf(),
            talenv_age_key: dirs.talenv_age_key.map(Path::to_path_buf),
            reloader,
            one_at_a_time: Mutex::new(()),
        }
    }

    fn dirs(&self) -> Dirs<'_> {
        Dirs {
            images: &self.images,
            profiles: &self.profiles,
            infra: &self.infra,
            gitops: &self.gitops,
            talenv_age_key: self.talenv_age_key.as_deref(),
        }
    }

    /// Writes `mac` (and `uuid`, for Talos nodes) into node `host`, then reloads.
    /// Blocking (file I/O and fsync).
    pub fn adopt(&self, mac: MacAddr, host: &str, uuid: Option<&str>) -> Result<Adopted, AdoptError> {
        let _one = self
            .one_at_a_time
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let inputs = Inputs::load(self.dirs()).map_err(|e| {
            AdoptError::Invalid(format!(
                "the inputs do not validate now (run `provisioner check`): {e}"
            ))
        })?;
        let found: Vec<_> = adopt::nodes(&inputs.infra)
            .into_iter()
            .filter(|n| n.hostname == host)
            .collect();
        let node = match found.as_slice() {
            [] => return Err(AdoptError::NoNode(host.into())),
            [one] => one.clone(),
            many => {
                let names: Vec<_> = many.iter().map(|n| n.cluster.clone()).collect();
                return Err(AdoptError::Ambiguous(host.into(), names.join(", ")));
            }
        };
        let file = inputs
            .infra
            .sources
            .get(&node.cluster)
            .cloned()
            .unwrap_or_default();
        if let Some(m) = node.mac.filter(|m| *m != mac && !is_placeholder_mac(*m)) {
            return Err(AdoptError::Conflict(format!(
                "node {host:?} already has mac {m} ({} nodes[{}].mac); edit the file to change it",
                file.display(),
                node.index
            )));
        }
        claimed_elsewhere(&inputs, &node, &file, mac)?;
        // k0s nodes have no `uuid` field.
        let uuid = uuid.filter(|_| node.kind == ConfigKind::Talos);
        let io = |source| AdoptError::Io {
            file: file.clone(),
            source,
        };
        let text = std::fs::read_to_string(&file).map_err(io)?;
        let edited = edit::adopt_nth(&text, node.index, host, mac, uuid)
            .map_err(|e| AdoptError::Conflict(e.to_string()))?;
        if !edited.lines.is_empty() {
            Inputs::load_with(self.dirs(), Some((&file, &edited.text))).map_err(|e| {
                AdoptError::Invalid(format!(
                    "the edited {} would not validate, nothing written: {e}",
                    file.display()
                ))
            })?;
            write_atomically(&file, &edited.text).map_err(io)?;
            tracing::info!(%mac, node = host, file = %file.display(), "adopted: infra/ written");
        }
        let lines = edited.text.lines().collect::<Vec<_>>();
        Ok(Adopted {
            mac: mac.to_string(),
            cluster: node.cluster,
            node: host.into(),
            file: file.display().to_string(),
            lines: edited
                .lines
                .iter()
                .map(|&i| lines[i].trim().to_string())
                .collect(),
            uuid: uuid.map(str::to_string),
            reload_error: self.reloader.reload().err().map(|e| e.0),
        })
    }
}

/// Refuses a MAC that another node or a group of `profiles/groups/` claims.
fn claimed_elsewhere(
    inputs: &Inputs,
    node: &adopt::NodeRef,
    file: &Path,
    mac: MacAddr,
) -> Result<(), AdoptError> {
    let own = format!("node {}/{}", node.cluster, node.hostname);
    // The group derived for this node repeats its own MAC.
    let derived = format!("group {}", node.hostname);
    match adopt::claims(&inputs.catalog, &inputs.infra)
        .into_iter()
        .find(|(m, c)| *m == mac && c.owner != own && !(c.owner == derived && c.file == file))
    {
        Some((_, c)) => Err(AdoptError::Conflict(format!(
            "MAC {mac} is already claimed by {} field `{}` ({})",
            c.file.display(),
            c.field,
            c.owner
        ))),
        None => Ok(()),
    }
}

/// Temp file in the same directory (same mode as the original), fsync, rename over
/// the original, fsync the directory: a crash leaves the old file or the new one.
fn write_atomically(file: &Path, text: &str) -> std::io::Result<()> {
    let dir = file.parent().unwrap_or(Path::new("."));
    let name = file.file_name().and_then(|n| n.to_str()).unwrap_or("infra.yaml");
    // Not `.yaml`: the loader never reads a half-written temp file.
    let tmp = dir.join(format!(".{name}.adopt-{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.set_permissions(std::fs::metadata(file)?.permissions())?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, file)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
