//! What the operator gives the appliance besides its configuration: `images/`,
//! `profiles/`, `infra/` and `gitops/`, loaded and validated once into [`Inputs`] (by
//! `provisioner check` and by `serve`) and passed by reference from there.

pub mod arming;
pub mod talenv;

use std::path::Path;

use provisioner_core::adopt;
use provisioner_core::catalog::{self, Catalog, CatalogError};
use provisioner_core::infra::Infra;

use crate::gitops::settings::Settings;
use crate::gitops::tree::TreeError;

/// Where the inputs are.
#[derive(Debug, Clone, Copy)]
pub struct Dirs<'a> {
    /// `images/`: image descriptors.
    pub images: &'a Path,
    /// `profiles/`: profiles and groups.
    pub profiles: &'a Path,
    /// `infra/`: one file per cluster.
    pub infra: &'a Path,
    /// `gitops/`: the tree ArgoCD syncs.
    pub gitops: &'a Path,
    /// The age key file that decrypts `infra/*.talenv.sops.yaml` ([`talenv`]).
    pub talenv_age_key: Option<&'a Path>,
}

/// Every input, validated.
#[derive(Debug)]
pub struct Inputs {
    /// Images, profiles and groups.
    pub catalog: Catalog,
    /// Every cluster of `infra/`, armed or not.
    pub infra: Infra,
    /// The armed clusters (the only ones the daemon acts on) and why the others are not.
    pub clusters: arming::Clusters,
    /// `gitops/settings.yaml` (an appliance without one hands no cluster to Git).
    pub gitops: Result<Settings, TreeError>,
}

/// The inputs do not validate: every problem (`file: field: message`), and what did
/// load, so `check` can go on checking the rest.
#[derive(Debug, thiserror::Error)]
#[error("{problems}")]
pub struct Invalid {
    /// The catalog, when it loaded.
    pub catalog: Option<Box<Catalog>>,
    /// `infra/`, when it loaded.
    pub infra: Option<Box<Infra>>,
    /// Every problem found.
    pub problems: CatalogError,
}

impl Inputs {
    /// Loads and validates everything under `dirs` (all problems at once).
    pub fn load(dirs: Dirs<'_>) -> Result<Self, Invalid> {
        Self::load_with(dirs, None)
    }

    /// [`Inputs::load`] with `instead.1` as the text of the `infra/` file `instead.0`:
    /// how an adoption validates its edit before writing it.
    pub fn load_with(dirs: Dirs<'_>, instead: Option<(&Path, &str)>) -> Result<Self, Invalid> {
        let mut problems = Vec::new();
        let mut catalog = catalog::load(dirs.images, dirs.profiles)
            .map_err(|e| problems.extend(e.0))
            .ok();
        let infra = talenv::load_infra(dirs.infra, dirs.talenv_age_key, instead)
            .map_err(|e| problems.extend(e.0))
            .ok();
        // A MAC lives in one place: claimed once across infra/ and profiles/groups/,
        // then infra/ nodes get their groups derived (provisioner_core::adopt).
        if let (Some(cat), Some(infra)) = (catalog.as_mut(), infra.as_ref()) {
            problems.extend(adopt::duplicate_claims(&adopt::claims(cat, infra)));
            problems.extend(adopt::derive_groups(cat, infra));
        }
        match (catalog, infra) {
            (Some(catalog), Some(infra)) if problems.is_empty() => Ok(Self {
                clusters: arming::Clusters::of(&infra),
                catalog,
                infra,
                gitops: Settings::load(dirs.gitops),
            }),
            (catalog, infra) => Err(Invalid {
                catalog: catalog.map(Box::new),
                infra: infra.map(Box::new),
                problems: CatalogError(problems),
            }),
        }
    }
}
