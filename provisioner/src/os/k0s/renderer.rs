//! The Flatcar [`ConfigRenderer`]: what `/config/<token>` serves to a machine whose
//! profile has `config: flatcar`. The profile's `cluster` names the `infra/` k0s
//! cluster and the group's `metadata.hostname` the node; secrets come from the
//! encrypted store, the k0s binary's hash from the mirror's verified sums. The
//! result is the stage-1 Ignition config with stage 2 inside.

use std::collections::BTreeMap;
use std::sync::Arc;

use provisioner_core::boot::InstallPlan;
use provisioner_core::k0s::ignition::{self, ControllerPki, Ignition, Role, Stage1, Stage2};
use provisioner_core::k0s::token::{self, Kubeconfig};
use provisioner_core::k0s::{K0sCluster, clusterconfig};
use provisioner_core::model::MacAddr;
use provisioner_core::render::config::{ConfigRenderer, ConfigUrls, RenderError, check_bound, cluster_node};

use provisioner_core::k0s::mirror::{self, Kind};

use crate::images::ImageCache;
use provisioner_core::k0s::store::{K0sSecretStore, K0sSecrets};

/// Renders Flatcar Ignition configs for k0s nodes.
#[derive(Debug)]
pub struct FlatcarRenderer {
    clusters: BTreeMap<String, K0sCluster>,
    secrets: Arc<dyn K0sSecretStore>,
    cache: ImageCache,
}

/// Both stages of one node, before serialisation.
#[derive(Debug, Clone)]
pub struct NodeConfigs {
    /// Stage 1 (served).
    pub stage1: Ignition,
    /// Stage 2 (inside stage 1).
    pub stage2: Ignition,
}

/// The bootstrap-token Secrets of every worker, one YAML stream.
pub fn token_manifest(cluster: &K0sCluster, s: &K0sSecrets) -> String {
    cluster
        .nodes
        .iter()
        .filter(|n| !n.control_plane)
        .filter_map(|n| {
            s.worker_tokens
                .get(&n.hostname)
                .map(|t| token::bootstrap_secret(t, &n.hostname))
        })
        .map(|doc| format!("---\n{doc}"))
        .collect()
}

/// Both stages for `host` of `cluster`, with callbacks `urls`.
pub fn node_configs(
    cluster: &K0sCluster,
    host: &str,
    secrets: &K0sSecrets,
    cache: &ImageCache,
    urls: &ConfigUrls,
) -> Result<NodeConfigs, RenderError> {
    let name = &cluster.cluster_name;
    let node = cluster
        .node(host)
        .ok_or_else(|| RenderError::NoNode(format!("cluster {name:?} has no node {host:?}")))?;
    let tag = &cluster.k0s_version;
    let bin = mirror::k0s_binary(tag);
    let sha = cache.mirror_sha256(Kind::K0s, tag, &bin).ok_or_else(|| {
        RenderError::Missing(format!(
            "k0s {tag} is not in the mirror (run `provisioner images pull k0s --version {tag}`)"
        ))
    })?;
    let fv = &cluster.flatcar_version;
    if cache
        .mirror_sha256(Kind::Flatcar, fv, mirror::FLATCAR_IMAGE)
        .is_none()
    {
        return Err(RenderError::Missing(format!(
            "Flatcar {fv} is not in the mirror (run `provisioner images pull flatcar --version {fv}`)"
        )));
    }
    let api_url = cluster
        .api_url()
        .ok_or_else(|| RenderError::NoNode(format!("cluster {name:?}: the controller has no ipAddress")))?;
    let k0s_yaml;
    let manifest;
    let join;
    let role = if node.control_plane {
        k0s_yaml = clusterconfig::render(cluster).map_err(|e| RenderError::Failed(e.to_string()))?;
        manifest = token_manifest(cluster, secrets);
        Role::Controller {
            k0s_yaml: &k0s_yaml,
            pki: ControllerPki {
                ca_crt: &secrets.ca_crt,
                ca_key: &secrets.ca_key,
                sa_key: &secrets.sa_key,
                sa_pub: &secrets.sa_pub,
            },
            manifests: vec![("bootstrap-tokens.yaml".into(), manifest)],
        }
    } else {
        let t = secrets.worker_tokens.get(host).ok_or_else(|| {
            RenderError::Missing(format!(
                "no join token for {host:?} in cluster {name:?} (restart the appliance to mint it)"
            ))
        })?;
        join = token::encode(&Kubeconfig::worker_join(&api_url, &secrets.ca_crt, t));
        Role::Worker { join_token: &join }
    };
    let enc = ignition::url_path_segment(tag);
    let k0s_url = format!(
        "{}/mirror/k0s/{enc}/{}",
        urls.base,
        ignition::url_path_segment(&bin)
    );
    let stage2 = ignition::stage2(&Stage2 {
        hostname: host,
        k0s_url: &k0s_url,
        k0s_sha256: &sha,
        worker_profile: &cluster.worker_profile,
        callback_url: &urls.k0s_installed,
        role,
    });
    let base = format!("{}/mirror/flatcar", urls.base);
    let stage1 = ignition::stage1(&Stage1 {
        mirror_base: &base,
        flatcar_version: fv,
        install_disk: node.install_disk.as_deref(),
        callback_url: &urls.installed,
        stage2: &stage2,
    });
    Ok(NodeConfigs { stage1, stage2 })
}

impl FlatcarRenderer {
    /// A renderer over the k0s clusters of `infra/`.
    pub fn new(
        clusters: BTreeMap<String, K0sCluster>,
        secrets: Arc<dyn K0sSecretStore>,
        cache: ImageCache,
    ) -> Self {
        Self {
            clusters,
            secrets,
            cache,
        }
    }
}

impl ConfigRenderer for FlatcarRenderer {
    fn render(&self, _mac: MacAddr, _plan: &InstallPlan) -> Result<String, RenderError> {
        Err(RenderError::Failed(
            "the Flatcar renderer needs the callback URLs (render_with)".into(),
        ))
    }

    fn render_with(
        &self,
        mac: MacAddr,
        plan: &InstallPlan,
        urls: &ConfigUrls,
    ) -> Result<String, RenderError> {
        let (name, host) = cluster_node(mac, plan, "flatcar")?;
        let cluster = self.clusters.get(name).ok_or_else(|| {
            RenderError::NoNode(format!(
                "profile {:?}: no k0s cluster {name:?} in infra/",
                plan.profile.id
            ))
        })?;
        let node = cluster
            .node(host)
            .ok_or_else(|| RenderError::NoNode(format!("cluster {name:?} has no node {host:?}")))?;
        check_bound(host, node.mac, mac)?;
        let secrets = self
            .secrets
            .get(name)
            .map_err(|e| RenderError::Failed(e.to_string()))?
            .ok_or_else(|| RenderError::Missing(format!("no k0s secrets for cluster {name:?} yet")))?;
        Ok(node_configs(cluster, host, &secrets, &self.cache, urls)?
            .stage1
            .to_json())
    }

    fn content_type(&self) -> &'static str {
        "application/json"
    }
}
