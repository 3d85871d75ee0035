//! The k0s path's I/O side: PKI generation ([`pki`]), the encrypted secret store
//! ([`secrets`]), the Flatcar/k0s mirror ([`mirror`], [`download`]), the boot path's
//! Ignition renderer ([`renderer`]) and the `k0s …` subcommands ([`commands`]).
//! Pure parts (cluster model, ClusterConfig, tokens, Ignition, sub-states) are in
//! `provisioner_core::k0s`.

pub mod pull;
pub mod ready;
pub mod renderer;

use std::collections::BTreeMap;

use crate::pki::k0s as pki;
use std::path::Path;

use provisioner_core::k0s::K0sCluster;
use time::OffsetDateTime;

use provisioner_core::k0s::store::{K0sSecretStore, StoreError};

/// Wires the Flatcar renderer into `service` for the armed k0s clusters
/// ([`crate::inputs::arming`]) and generates missing secrets (zero-touch first
/// start). Without k0s clusters (no store) the service is returned unchanged.
pub fn attach(
    service: crate::service::BootService,
    clusters: &BTreeMap<String, K0sCluster>,
    store: Option<std::sync::Arc<dyn K0sSecretStore>>,
    cache: &crate::images::ImageCache,
) -> Result<crate::service::BootService, K0sError> {
    Ok(match renderer(clusters, store, cache)? {
        Some(r) => service.with_renderer(provisioner_core::catalog::ConfigKind::Flatcar, r),
        None => service,
    })
}

/// The Flatcar renderer for the armed k0s `clusters` (secrets generated where
/// missing); `None` without clusters or store. At start and on reload.
pub fn renderer(
    clusters: &BTreeMap<String, K0sCluster>,
    store: Option<std::sync::Arc<dyn K0sSecretStore>>,
    cache: &crate::images::ImageCache,
) -> Result<Option<std::sync::Arc<dyn provisioner_core::render::config::ConfigRenderer>>, K0sError> {
    let Some(store) = store.filter(|_| !clusters.is_empty()) else {
        return Ok(None);
    };
    for name in ensure_secrets(clusters, store.as_ref(), OffsetDateTime::now_utc())? {
        tracing::info!(cluster = %name, "generated k0s CA, service-account key and join tokens (stored encrypted)");
    }
    let renderer = renderer::FlatcarRenderer::new(clusters.clone(), store, cache.clone());
    Ok(Some(std::sync::Arc::new(renderer)))
}

/// Why k0s clusters or their secrets are not usable.
#[derive(Debug, thiserror::Error)]
pub enum K0sError {
    /// A cluster file is invalid (every problem, `file: field: message` lines).
    #[error("{0}")]
    Invalid(String),
    /// The secret store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Keys could not be generated.
    #[error(transparent)]
    Pki(#[from] pki::PkiError),
}

/// Parses one k0s cluster document; problems as `(field, message)`.
pub fn parse_cluster(text: &str) -> Result<K0sCluster, Vec<(String, String)>> {
    let c: K0sCluster = provisioner_core::fieldpath::from_str(text, serde_saphyr::Options::default())
        .map_err(|e| vec![(e.field_or_document(), e.to_string())])?;
    let problems = c.validate();
    if problems.is_empty() { Ok(c) } else { Err(problems) }
}

/// The k0s clusters of `infra_dir`, validated (with every other cluster file: a bad
/// Talos file stops the k0s path too, as `provisioner check` would).
pub fn load_clusters(infra_dir: &Path) -> Result<BTreeMap<String, K0sCluster>, K0sError> {
    load_clusters_keyed(infra_dir, None)
}

/// [`load_clusters`] with the age key file of `infra/`'s encrypted talenv files
/// (`talenv_age_key_file`), so a sealed Talos file next to them loads too.
pub fn load_clusters_keyed(
    infra_dir: &Path,
    talenv_key: Option<&Path>,
) -> Result<BTreeMap<String, K0sCluster>, K0sError> {
    crate::inputs::talenv::load_infra(infra_dir, talenv_key, None)
        .map(|i| i.k0s)
        .map_err(|e| K0sError::Invalid(e.to_string()))
}

/// `provisioner check` for groups of `config: flatcar` profiles: the profile names a
/// k0s cluster, the group's `metadata.hostname` one of its nodes, and a MAC pinned
/// in infra/ agrees with the group's selector.
pub fn check_groups(
    clusters: &BTreeMap<String, K0sCluster>,
    cat: &provisioner_core::catalog::Catalog,
    problems: &mut Vec<String>,
) {
    use provisioner_core::catalog::ConfigKind;
    let source = |key: String| {
        cat.sources
            .get(&key)
            .map(|f| f.display().to_string())
            .unwrap_or(key)
    };
    for p in cat.profiles.values().filter(|p| p.config == ConfigKind::Flatcar) {
        match p.cluster.as_deref() {
            None => problems.push(format!(
                "{}: field `cluster`: required for config flatcar (a k0s cluster in infra/)",
                source(format!("profile/{}", p.id))
            )),
            Some(c) if !clusters.contains_key(c) => problems.push(format!(
                "{}: field `cluster`: {c:?} is not a k0s cluster",
                source(format!("profile/{}", p.id))
            )),
            Some(_) => {}
        }
    }
    problems.extend(provisioner_core::infra::group_problems(
        cat,
        clusters,
        ConfigKind::Flatcar,
        "k0s cluster",
        &source,
    ));
}

/// Makes sure every cluster has secrets and every worker a join token; generates
/// what is missing (zero-touch first start) and stores it encrypted. Existing keys
/// and tokens are never replaced. Returns the names of clusters that changed.
pub fn ensure_secrets(
    clusters: &BTreeMap<String, K0sCluster>,
    store: &dyn K0sSecretStore,
    now: OffsetDateTime,
) -> Result<Vec<String>, K0sError> {
    let mut changed = Vec::new();
    for (name, c) in clusters {
        let workers: Vec<&str> = c
            .nodes
            .iter()
            .filter(|n| !n.control_plane)
            .map(|n| n.hostname.as_str())
            .collect();
        let Some(mut s) = store.get(name)? else {
            let s = pki::generate(name, workers.iter().copied(), now)?;
            store.put(name, &s)?;
            changed.push(name.clone());
            continue;
        };
        let mut added = false;
        for w in workers {
            if !s.worker_tokens.contains_key(w) {
                s.worker_tokens.insert(w.to_string(), pki::new_token());
                added = true;
            }
        }
        if added {
            store.put(name, &s)?;
            changed.push(name.clone());
        }
    }
    Ok(changed)
}
