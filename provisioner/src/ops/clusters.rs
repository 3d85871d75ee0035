//! Clusters as the appliance sees them today: the files in `infra/`, the profiles that
//! name them, and the machines those profiles install. The bootstrap orchestrator
//! reports its steps through [`BootstrapProgress`] (`super::bootstrap_view` reads
//! them from its store); the JSON carries a `bootstrap` object with ordered steps.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use provisioner_core::catalog::{Catalog, ConfigKind};
use provisioner_core::model::{MacAddr, Machine, MachineState};
use serde::Serialize;
use time::OffsetDateTime;

use super::assignment;

/// A cluster definition file in `infra/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterFile {
    /// `clusterName` (or `name`, or the file stem).
    pub name: String,
    /// The file.
    pub source: PathBuf,
    /// Why the cluster is not armed (placeholder MACs, `crate::inputs::arming`); `None` when
    /// it is.
    pub not_armed: Option<String>,
}

/// The clusters of `infra/` as loaded and validated once with the other inputs
/// (`crate::inputs::Inputs`), by name.
pub fn cluster_files(infra: &provisioner_core::infra::Infra) -> Vec<ClusterFile> {
    let unarmed = infra.unarmed();
    infra
        .names()
        .into_iter()
        .map(|name| ClusterFile {
            source: infra.sources.get(&name).cloned().unwrap_or_default(),
            not_armed: unarmed.get(&name).cloned(),
            name,
        })
        .collect()
}

/// The cluster files of the inputs loaded last: swapped by the composition root
/// when an adoption reloads them (a cluster it armed is no longer "not armed").
#[derive(Debug, Clone, Default)]
pub struct ClusterFiles(Arc<RwLock<Arc<[ClusterFile]>>>);

impl ClusterFiles {
    /// The files now.
    pub fn now(&self) -> Arc<[ClusterFile]> {
        self.0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Replaces the files.
    pub fn set(&self, files: Vec<ClusterFile>) {
        *self.0.write().unwrap_or_else(std::sync::PoisonError::into_inner) = files.into();
    }
}

impl From<Vec<ClusterFile>> for ClusterFiles {
    fn from(files: Vec<ClusterFile>) -> Self {
        Self(Arc::new(RwLock::new(files.into())))
    }
}

/// Phase of a cluster's bootstrap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BootstrapPhase {
    /// No bootstrap reporter in this build: nothing is known.
    Unavailable,
    /// Not started.
    Pending,
    /// In progress.
    Running,
    /// Finished.
    Done,
    /// Stopped on a failed step.
    Failed,
}

/// Status of one bootstrap step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BootstrapStepStatus {
    /// Not reached yet.
    Pending,
    /// Running.
    Running,
    /// Finished.
    Done,
    /// Failed (detail says why).
    Failed,
    /// Not needed.
    Skipped,
}

/// One bootstrap step (e.g. `wait_installed`, `talos_bootstrap`, `kubeconfig`,
/// `gitops_handoff`), in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct BootstrapStep {
    /// Stable step name.
    pub name: String,
    /// Status.
    pub status: BootstrapStepStatus,
    /// When it started.
    #[serde(with = "time::serde::rfc3339::option")]
    pub started_at: Option<OffsetDateTime>,
    /// When it finished.
    #[serde(with = "time::serde::rfc3339::option")]
    pub finished_at: Option<OffsetDateTime>,
    /// Details for people.
    pub detail: String,
}

/// A cluster's bootstrap as reported by the orchestrator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct BootstrapStatus {
    /// Overall phase.
    pub phase: BootstrapPhase,
    /// Steps in order.
    pub steps: Vec<BootstrapStep>,
    /// Details for people.
    pub detail: String,
    /// The newest cluster event (e.g. the `waiting` reason of the running step);
    /// `null` before the first one.
    pub last_event: Option<LastEvent>,
}

/// One cluster event as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct LastEvent {
    /// `resumed`, `node_installed`, `step_changed`, `waiting`, `failed` or `retried`.
    #[schema(example = "waiting")]
    pub kind: String,
    /// What happened or what the step waits for (never secret material).
    pub detail: String,
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
}

/// Why an operator retry of a cluster's bootstrap was refused.
#[derive(Debug, thiserror::Error)]
pub enum RetryError {
    /// The cluster is not `Failed` (or never started).
    #[error("{0}")]
    NotFailed(String),
    /// The failed step is not known; nothing safe to go back to.
    #[error("{0}")]
    UnknownStep(String),
    /// No bootstrap workflow in this daemon.
    #[error("no bootstrap orchestrator in this build")]
    Unavailable,
    /// The store failed.
    #[error("bootstrap store: {0}")]
    Store(String),
}

/// Where bootstrap progress comes from; the orchestrator implements it.
pub trait BootstrapProgress: Send + Sync + std::fmt::Debug {
    /// The status of `cluster`.
    fn status(&self, cluster: &str) -> BootstrapStatus;

    /// The status of `cluster` whose kind (`talos`, `k0s`, `unknown`) is known, so a
    /// workflow that has not started yet can list the right steps.
    fn status_of_kind(&self, cluster: &str, _kind: &str) -> BootstrapStatus {
        self.status(cluster)
    }

    /// Puts a `Failed` cluster back to the step it failed in (a `retried` event, a
    /// fresh step clock); its running workflow picks that up. The status after.
    fn retry(&self, _cluster: &str) -> Result<BootstrapStatus, RetryError> {
        Err(RetryError::Unavailable)
    }

    /// The bootstrap as a progress line with times (`core::cluster::progress`); empty
    /// where no workflow store is wired in.
    fn line(&self, _cluster: &str, _kind: &str) -> Vec<provisioner_core::cluster::progress::Milestone> {
        Vec::new()
    }
}

/// The reporter used until the orchestrator is wired in.
#[derive(Debug, Default)]
pub struct NoBootstrap;

impl BootstrapProgress for NoBootstrap {
    fn status(&self, _cluster: &str) -> BootstrapStatus {
        BootstrapStatus {
            phase: BootstrapPhase::Unavailable,
            steps: Vec::new(),
            detail: "no bootstrap orchestrator in this build".into(),
            last_event: None,
        }
    }
}

/// A machine that belongs to a cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ClusterMachine {
    /// Boot MAC.
    #[schema(value_type = String, example = "52:54:00:12:34:56")]
    pub mac: MacAddr,
    /// Lifecycle state.
    pub state: MachineState,
    /// Its profile.
    pub profile: String,
    /// Last contact.
    #[serde(with = "time::serde::rfc3339")]
    pub last_seen: OffsetDateTime,
}

/// One cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ClusterView {
    /// Name.
    pub name: String,
    /// Definition file.
    pub source: String,
    /// `talos`, `k0s` or `unknown`, from the config kind of its profiles.
    pub kind: String,
    /// Profiles naming this cluster.
    pub profiles: Vec<String>,
    /// Machines per state.
    pub states: BTreeMap<String, usize>,
    /// Machines in it.
    pub machines: Vec<ClusterMachine>,
    /// Bootstrap progress.
    pub bootstrap: BootstrapStatus,
    /// Whether the appliance acts for this cluster at all: `false` while a node
    /// carries a placeholder MAC (no secrets, no DHCP reservation, no node dialled).
    pub armed: bool,
    /// `cluster not armed: replace the placeholder MACs (host mac, …)` when not armed.
    pub not_armed: Option<String>,
}

/// Builds the view of every cluster in `files`.
pub fn views(
    files: &[ClusterFile],
    catalog: &Catalog,
    machines: &[Machine],
    progress: &dyn BootstrapProgress,
) -> Vec<ClusterView> {
    files
        .iter()
        .map(|f| {
            let profiles: Vec<String> = catalog
                .profiles
                .values()
                .filter(|p| p.cluster.as_deref() == Some(f.name.as_str()))
                .map(|p| p.id.clone())
                .collect();
            let kinds: Vec<ConfigKind> = profiles
                .iter()
                .filter_map(|p| catalog.profiles.get(p))
                .map(|p| p.config)
                .collect();
            let kind = if !kinds.is_empty() && kinds.iter().all(|k| *k == ConfigKind::Talos) {
                "talos"
            } else if !kinds.is_empty() && kinds.iter().all(|k| *k == ConfigKind::Flatcar) {
                "k0s"
            } else {
                "unknown"
            };
            let members: Vec<ClusterMachine> = machines
                .iter()
                .filter_map(|m| {
                    let a = assignment(catalog, m)?;
                    (a.cluster.as_deref() == Some(f.name.as_str())).then_some(ClusterMachine {
                        mac: m.mac,
                        state: m.state,
                        profile: a.profile,
                        last_seen: m.last_seen,
                    })
                })
                .collect();
            let mut states = BTreeMap::new();
            for m in &members {
                *states.entry(m.state.to_string()).or_insert(0) += 1;
            }
            ClusterView {
                name: f.name.clone(),
                source: f.source.display().to_string(),
                kind: kind.into(),
                profiles,
                states,
                machines: members,
                bootstrap: progress.status_of_kind(&f.name, kind),
                armed: f.not_armed.is_none(),
                not_armed: f.not_armed.clone(),
            }
        })
        .collect()
}
