//! `GET /api/v1/clusters/{id}/talosconfig` and `GET /api/v1/clusters/{id}/kubeconfig`:
//! cluster-admin credentials, for admin tokens only (a read-only token gets 403 even
//! though these are reads). Every download is an audit log line naming the token id,
//! the peer and the cluster (never the content) and is counted; the answer is
//! `Cache-Control: no-store`.

use std::net::SocketAddr;

use axum::Extension;
use axum::extract::{ConnectInfo, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use provisioner_core::apitoken::Role;

use super::ApiState;
use super::auth::Caller;
use super::error::{ApiError, ErrorBody};
use super::params::IdParam;
use crate::cluster::seams::CredentialError;

#[derive(Debug, Clone, Copy)]
enum Kind {
    Talosconfig,
    Kubeconfig,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Self::Talosconfig => "talosconfig",
            Self::Kubeconfig => "kubeconfig",
        }
    }
}

async fn download(
    st: ApiState,
    caller: Caller,
    peer: Option<SocketAddr>,
    cluster: String,
    kind: Kind,
) -> Result<Response, ApiError> {
    let peer = peer
        .map(|p| p.ip().to_string())
        .unwrap_or_else(|| "unknown".into());
    if caller.role != Role::Admin {
        metrics::counter!("provisioner_api_auth_failures_total", "reason" => "forbidden").increment(1);
        tracing::warn!(%peer, token_id = %caller.token_id, %cluster, what = kind.name(),
            "credential download refused: not an admin token");
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "cluster credentials need an admin token",
        ));
    }
    let creds = st.credentials.clone();
    let name = cluster.clone();
    let result = tokio::task::spawn_blocking(move || match kind {
        Kind::Talosconfig => creds.talosconfig(&name),
        Kind::Kubeconfig => creds.kubeconfig(&name),
    })
    .await
    .map_err(ApiError::internal)?;
    let body = match result {
        Ok(b) => b,
        Err(CredentialError::NoCluster(_)) => {
            return Err(ApiError::not_found(
                "cluster_not_found",
                format!("no cluster {cluster:?}"),
            ));
        }
        Err(e @ CredentialError::NotAvailable(_)) => {
            return Err(ApiError::not_found(
                &format!("{}_not_available", kind.name()),
                e.to_string(),
            ));
        }
        Err(e @ CredentialError::Store(_)) => return Err(ApiError::internal(e)),
    };
    metrics::counter!("provisioner_api_credential_downloads_total", "kind" => kind.name()).increment(1);
    // The audit trail: who took which cluster's credentials (the content never).
    tracing::info!(target: "audit", %peer, token_id = %caller.token_id, %cluster, what = kind.name(),
        "cluster credential downloaded");
    Ok((
        [
            (header::CONTENT_TYPE, "application/yaml".to_string()),
            (header::CACHE_CONTROL, "no-store".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{cluster}-{}\"", kind.name()),
            ),
        ],
        body,
    )
        .into_response())
}

/// A fresh `os:admin` talosconfig for a Talos cluster (admin tokens only).
#[utoipa::path(get, path = "/api/v1/clusters/{id}/talosconfig", tag = "clusters",
    params(("id" = String, Path, description = "Cluster name")),
    responses(
        (status = 200, description = "talosconfig (a YAML document)", body = serde_json::Value, content_type = "application/yaml"),
        (status = 401, description = "No or unknown token", body = ErrorBody),
        (status = 403, description = "Not an admin token", body = ErrorBody),
        (status = 404, description = "No such cluster (`cluster_not_found`) or no talosconfig for it (`talosconfig_not_available`)", body = ErrorBody),
        (status = 422, description = "Bad path", body = ErrorBody),
    ))]
pub async fn talosconfig(
    State(st): State<ApiState>,
    Extension(caller): Extension<Caller>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    IdParam(id): IdParam,
) -> Result<Response, ApiError> {
    download(st, caller, peer.map(|c| c.0.0), id, Kind::Talosconfig).await
}

/// The cluster-admin kubeconfig (admin tokens only): for Talos the one the bootstrap
/// fetched, for k0s one minted from the appliance's PKI.
#[utoipa::path(get, path = "/api/v1/clusters/{id}/kubeconfig", tag = "clusters",
    params(("id" = String, Path, description = "Cluster name")),
    responses(
        (status = 200, description = "kubeconfig (a YAML document)", body = serde_json::Value, content_type = "application/yaml"),
        (status = 401, description = "No or unknown token", body = ErrorBody),
        (status = 403, description = "Not an admin token", body = ErrorBody),
        (status = 404, description = "No such cluster (`cluster_not_found`) or no kubeconfig yet (`kubeconfig_not_available`)", body = ErrorBody),
        (status = 422, description = "Bad path", body = ErrorBody),
    ))]
pub async fn kubeconfig(
    State(st): State<ApiState>,
    Extension(caller): Extension<Caller>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    IdParam(id): IdParam,
) -> Result<Response, ApiError> {
    download(st, caller, peer.map(|c| c.0.0), id, Kind::Kubeconfig).await
}
