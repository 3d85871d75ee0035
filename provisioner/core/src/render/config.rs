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

/// Renders the document a machine fetches through its one-time config URL. The boot
/// service picks one per [`ConfigKind`]: [`PlainRenderer`] for `plain`, the daemon's
/// Talos renderer for `talos`; k0s/Flatcar plug in the same way.
pub trait ConfigRenderer: Send + Sync + std::fmt::Debug {
    /// The config for `mac` installing `plan`. The error is shown to operators (logs,
    /// timeline) and must not contain secret material.
    fn render(&self, mac: MacAddr, plan: &InstallPlan) -> Result<String, String>;
}

/// The plain machine document ([`plain`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct PlainRenderer;

impl ConfigRenderer for PlainRenderer {
    fn render(&self, mac: MacAddr, plan: &InstallPlan) -> Result<String, String> {
        Ok(plain(mac, plan))
    }
}
