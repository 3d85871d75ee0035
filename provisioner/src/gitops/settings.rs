//! `gitops/settings.yaml`: the repository, the pinned ArgoCD install and the cluster
//! names the hand-off registers. Loaded once with the other inputs (`crate::inputs`).

use std::path::Path;

use serde::Deserialize;

use super::tree::TreeError;

/// `gitops/settings.yaml`: what the appliance needs to hand clusters to Git.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The GitOps repository (this tree).
    pub repository: Repository,
    /// The pinned ArgoCD install.
    pub argocd: ArgoPin,
    /// Cluster names as registered in ArgoCD; `manifests/<app>/<cluster>` directory
    /// names and `destination.name`s must be among them.
    pub clusters: Vec<String>,
}

/// The repository ArgoCD syncs from.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Repository {
    /// Clone URL; every git source and generator in the tree must use it.
    pub url: String,
    /// Branch or tag.
    pub revision: String,
}

/// Version, origin and checksum of the ArgoCD install manifest.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArgoPin {
    /// ArgoCD release.
    pub version: String,
    /// Where the non-HA `install.yaml` of that release is downloaded from.
    pub url: String,
    /// Its SHA-256 (hex).
    pub sha256: String,
    /// The cluster ArgoCD runs on.
    pub host: String,
}

impl Settings {
    /// Reads `<gitops_dir>/settings.yaml`.
    pub fn load(gitops_dir: &Path) -> Result<Self, TreeError> {
        let file = gitops_dir.join("settings.yaml");
        let text = std::fs::read_to_string(&file).map_err(|source| TreeError::Read {
            file: file.clone(),
            source,
        })?;
        serde_saphyr::from_str(&text).map_err(|e| TreeError::Parse {
            file,
            message: e.to_string(),
        })
    }
}
