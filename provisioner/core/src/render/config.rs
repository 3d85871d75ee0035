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
