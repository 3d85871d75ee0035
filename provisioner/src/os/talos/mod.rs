//! The Talos path's I/O side: key generation ([`pki`]), the encrypted secret store
//! seam ([`store`]), SOPS import ([`sops`]), the boot path's config renderer
//! ([`renderer`]) and the `talos …` subcommands ([`commands`]). Pure parts (cluster
//! model, machine configs, schematics) are in `provisioner_core::talos`.

pub mod api;
pub mod factory;
mod locked;
pub mod orchestrator;
pub mod renderer;
pub mod reset;
pub use crate::pki::sops;
pub mod supervisor;
pub mod talhelper;

use crate::pki::talos as pki;

use std::collections::BTreeMap;
use std::sync::Arc;

use provisioner_core::talos::store::SecretStore;
use provisioner_core::talos::{SecretsBundle, TalosCluster};
use time::OffsetDateTime;

/// Why the Talos path could not be wired into the boot service.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    /// The secret store failed.
    #[error(transparent)]
    Store(#[from] provisioner_core::talos::store::SecretStoreError),
    /// A bundle could not be generated.
    #[error(transparent)]
    Pki(#[from] pki::PkiError),
}

/// Wires the Talos renderer into `service` for the armed Talos `clusters`, after
/// generating the secrets bundle of any cluster without one (zero-touch first start).
/// Without clusters (no store) the service is returned unchanged.
pub fn attach(
    service: crate::service::BootService,
    clusters: &BTreeMap<String, TalosCluster>,
    secrets: Option<&Arc<dyn SecretStore>>,
) -> Result<crate::service::BootService, AttachError> {
    Ok(match renderer(clusters, secrets)? {
        Some(r) => service.with_renderer(provisioner_core::catalog::ConfigKind::Talos, r),
        None => service,
    })
}

/// The Talos renderer for the armed `clusters` (secrets generated where missing);
/// `None` without clusters or store. At start and when the inputs are reloaded.
pub fn renderer(
    clusters: &BTreeMap<String, TalosCluster>,
    secrets: Option<&Arc<dyn SecretStore>>,
) -> Result<Option<Arc<dyn provisioner_core::render::config::ConfigRenderer>>, AttachError> {
    let Some(secrets) = secrets.filter(|_| !clusters.is_empty()) else {
        return Ok(None);
    };
    for name in clusters.keys() {
        if secrets.get(name)?.is_none() {
            let bundle = pki::generate(OffsetDateTime::now_utc())?;
            secrets.put(name, &bundle)?;
            tracing::info!(cluster = %name, "generated the Talos secrets bundle (stored encrypted)");
        }
    }
    Ok(Some(Arc::new(renderer::TalosRenderer::new(
        clusters.clone(),
        secrets.clone(),
    ))))
}

/// Why a bundle cannot be imported.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// Not a bundle, or a bundle failing the shape checks (fields named).
    #[error("{0}")]
    Invalid(String),
    /// Not a bundle: the YAML does not parse or has unknown fields.
    #[error("{0}")]
    Parse(#[from] serde_saphyr::Error),
    /// SOPS-encrypted and no (or the wrong) age identity.
    #[error("{0}")]
    Sops(String),
    /// A certificate or key does not parse or does not match.
    #[error("{0}")]
    Pki(#[from] pki::PkiError),
}

/// Reads a `secrets.yaml` / `talsecret.yaml`: plain, or SOPS-encrypted (decrypted
/// with `age_identity`, the contents of an age key file). The result passes the
/// shape checks and every CA's key matches its certificate.
pub fn import_bundle(text: &str, age_identity: Option<&str>) -> Result<SecretsBundle, ImportError> {
    let plain = if sops::is_sops(text) {
        let id = age_identity.ok_or_else(|| {
            ImportError::Sops("the bundle is SOPS-encrypted: pass the age key file with --age-key".into())
        })?;
        sops::decrypt_yaml(text, id).map_err(|e| ImportError::Sops(e.to_string()))?
    } else {
        text.to_string()
    };
    let b = SecretsBundle::from_yaml(&plain)?;
    b.check().map_err(|e| ImportError::Invalid(e.join("\n")))?;
    pki::check_pairs(&b)?;
    Ok(b)
}

/// A talosconfig for `cluster`: an `os:admin` client certificate signed by the OS CA;
/// endpoints are the control-plane node addresses, not the VIP (talos.md §5.6).
pub fn talosconfig(
    cluster: &TalosCluster,
    s: &SecretsBundle,
    now: OffsetDateTime,
) -> Result<String, pki::PkiError> {
    let (crt, key) = pki::admin_client_cert(s, now)?;
    let ips = |cp_only: bool| -> Vec<String> {
        cluster
            .nodes
            .iter()
            .filter(|n| !cp_only || n.control_plane)
            .flat_map(|n| n.ip_address.split(',').map(|s| s.trim().to_string()))
            .filter(|s| !s.is_empty())
            .collect()
    };
    let name = &cluster.cluster_name;
    let doc = serde_json::json!({
        "context": name,
        "contexts": {
            name.clone(): {
                "endpoints": ips(true),
                "nodes": ips(false),
                "ca": s.certs.os.crt,
                "crt": crt,
                "key": key,
            }
        }
    });
    provisioner_core::talos::yaml::to_string(&doc).map_err(|e| pki::PkiError::Key(e.to_string()))
}
