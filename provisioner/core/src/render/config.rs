//! The plain machine config document: what the appliance knows about a machine and
//! what it was assigned. Talos and Flatcar renderers replace it for those kinds.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::boot::InstallPlan;
use crate::catalog::ConfigKind;
use crate::model::MacAddr;

#[derive(Serialize)]
struct PlainConfig<'a> {
    kind: &'static str,
    mac: String,
    profile: &'a str,
    image: &'a str,
    config_kind: ConfigKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    group: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cluster: Option<&'a str>,
    metadata: &'a BTreeMap<String, String>,
}

/// Renders the plain YAML document for `plan`.
pub fn plain(mac: MacAddr, plan: &InstallPlan) -> String {
    let doc = PlainConfig {
        kind: "provisioner.machine/v1",
        mac: mac.to_string(),
        profile: &plan.profile.id,
        image: &plan.image.id,
        config_kind: plan.profile.config,
        group: plan.group.as_deref(),
        cluster: plan.profile.cluster.as_deref(),
        metadata: &plan.metadata,
    };
    // Serialising plain strings and maps cannot fail.
    serde_saphyr::to_string(&doc).unwrap_or_default()
}

/// One-time URLs a config may embed, minted by the daemon for this fetch. The
/// callback tokens are derived from the config token the machine presented, so
/// they equal the ones on the kernel command line (`provisioner.callback=`).
#[derive(Clone, PartialEq, Eq)]
pub struct ConfigUrls {
    /// Base of the plain-HTTP boot path (no trailing `/`).
    pub base: String,
    /// The "installed" callback (Flatcar: `DiskInstalled`).
    pub installed: String,
    /// The Flatcar path's `K0sInstalled` callback.
    pub k0s_installed: String,
}

impl std::fmt::Debug for ConfigUrls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URLs carry tokens.
        f.debug_struct("ConfigUrls")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

/// Why a config was not rendered. Shown to operators (logs, timeline): never secret
/// material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    /// The plan does not name a cluster node (the profile has no `cluster`, the group
    /// no `hostname`), or names one `infra/` does not have.
    #[error("{0}")]
    NoNode(String),
    /// The node is pinned to another MAC in `infra/`: its config (and secrets) go to
    /// that MAC only.
    #[error("node {host:?} is bound to {bound}, not {mac}")]
    WrongMac {
        /// The node.
        host: String,
        /// The MAC `infra/` pins it to.
        bound: MacAddr,
        /// The MAC asking.
        mac: MacAddr,
    },
    /// Something the appliance must have first is missing (secrets, mirror files,
    /// join tokens); the message says how to get it.
    #[error("{0}")]
    Missing(String),
    /// The document could not be built, or the secret store failed.
    #[error("{0}")]
    Failed(String),
}

/// Renders the document a machine fetches through its one-time config URL. The boot
/// service picks one per [`ConfigKind`]: [`PlainRenderer`] for `plain`, the daemon's
/// Talos and Flatcar renderers for theirs.
pub trait ConfigRenderer: Send + Sync + std::fmt::Debug {
    /// The config for `mac` installing `plan`. The error is shown to operators (logs,
    /// timeline) and must not contain secret material.
    fn render(&self, mac: MacAddr, plan: &InstallPlan) -> Result<String, RenderError>;

    /// As [`ConfigRenderer::render`], for renderers that embed one-time URLs.
    fn render_with(
        &self,
        mac: MacAddr,
        plan: &InstallPlan,
        urls: &ConfigUrls,
    ) -> Result<String, RenderError> {
        let _ = urls;
        self.render(mac, plan)
    }

    /// The `Content-Type` of the rendered document.
    fn content_type(&self) -> &'static str {
        "application/yaml"
    }
}

/// The plain machine document ([`plain`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct PlainRenderer;

impl ConfigRenderer for PlainRenderer {
    fn render(&self, mac: MacAddr, plan: &InstallPlan) -> Result<String, RenderError> {
        Ok(plain(mac, plan))
    }
}

/// Which cluster node a plan installs: the profile's `cluster` and the selecting
/// group's `hostname` metadata. `kind` names the config kind in errors.
pub fn cluster_node<'a>(
    mac: MacAddr,
    plan: &'a InstallPlan,
    kind: &str,
) -> Result<(&'a str, &'a str), RenderError> {
    let profile = &plan.profile.id;
    let cluster = plan.profile.cluster.as_deref().ok_or_else(|| {
        RenderError::NoNode(format!("profile {profile:?} has config {kind} but no `cluster`"))
    })?;
    let host = plan.metadata.get("hostname").ok_or_else(|| {
        RenderError::NoNode(format!("the group selecting {mac} has no metadata `hostname`"))
    })?;
    Ok((cluster, host))
}

/// A node pinned to a MAC in `infra/` serves its config (and the secrets in it) to
/// that MAC only.
pub fn check_bound(host: &str, bound: Option<MacAddr>, mac: MacAddr) -> Result<(), RenderError> {
    match bound {
        Some(want) if want != mac => Err(RenderError::WrongMac {
            host: host.to_string(),
            bound: want,
            mac,
        }),
        _ => Ok(()),
    }
}
