//! `/api/v1/clusters`: status from `infra/`, the profiles naming each cluster, their
//! machines, and the bootstrap reporter; `POST .../bootstrap/retry` puts a failed
//! cluster's workflow back to its failed step (admin only, audited, counted).

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use axum::{Extension, Json};

use super::ApiState;
use super::auth::Caller;
use super::error::{ApiError, ErrorBody};
use super::params::IdParam;
use crate::ops::clusters::{BootstrapStatus, ClusterView, RetryError, views};

async fn all(st: &ApiState) -> Result<Vec<ClusterView>, ApiError> {
    let ops = st.ops.clone();
    let machines = tokio::task::spawn_blocking(move || ops.machines()).await??;
    Ok(views(
        &st.clusters.now(),
        &st.ops.catalog(),
        &machines,
        st.bootstrap.as_ref(),
    ))
}

/// Every cluster.
#[utoipa::path(get, path = "/api/v1/clusters", tag = "clusters",
    responses(
        (status = 200, description = "Clusters by name", body = Vec<ClusterView>),
        (status = 401, description = "No or unknown token", body = ErrorBody),
    ))]
pub async fn list(State(st): State<ApiState>) -> Result<Json<Vec<ClusterView>>, ApiError> {
    Ok(Json(all(&st).await?))
}

/// One cluster's status.
#[utoipa::path(get, path = "/api/v1/clusters/{id}", tag = "clusters",
    params(("id" = String, Path, description = "Cluster name")),
    responses(
        (status = 200, description = "The cluster", body = ClusterView),
        (status = 401, description = "No or unknown token", body = ErrorBody),
        (status = 404, description = "No such cluster", body = ErrorBody),
        (status = 422, description = "Bad path", body = ErrorBody),
    ))]
pub async fn get(State(st): State<ApiState>, IdParam(id): IdParam) -> Result<Json<ClusterView>, ApiError> {
    all(&st)
        .await?
        .into_iter()
        .find(|c| c.name == id)
        .map(Json)
        .ok_or_else(|| ApiError::not_found("cluster_not_found", format!("no cluster {id:?}")))
}

/// Retry a `Failed` cluster's bootstrap: a `retried` event, then the workflow goes
/// back to the step it failed in with a fresh step clock; the running daemon picks it
/// up without a restart. Steps recorded as done are never run again.
#[utoipa::path(post, path = "/api/v1/clusters/{id}/bootstrap/retry", tag = "clusters",
    params(("id" = String, Path, description = "Cluster name")),
    responses(
        (status = 202, description = "Retried: the bootstrap status after the retry", body = BootstrapStatus),
        (status = 401, description = "No or unknown token", body = ErrorBody),
        (status = 403, description = "Not an admin token", body = ErrorBody),
        (status = 404, description = "No such cluster (`cluster_not_found`)", body = ErrorBody),
        (status = 409, description = "Not retryable: not Failed (`cluster_not_failed`), failed step unknown (`retry_step_unknown`), or no bootstrap workflow (`bootstrap_unavailable`)", body = ErrorBody),
        (status = 422, description = "Bad path", body = ErrorBody),
    ))]
pub async fn retry(
    State(st): State<ApiState>,
    Extension(caller): Extension<Caller>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    IdParam(id): IdParam,
) -> Result<(StatusCode, Json<BootstrapStatus>), ApiError> {
    let peer = peer
        .map(|p| p.0.0.ip().to_string())
        .unwrap_or_else(|| "unknown".into());
    let known = st.clusters.now().iter().any(|f| f.name == id);
    let (progress, name) = (st.bootstrap.clone(), id.clone());
    let result = tokio::task::spawn_blocking(move || known.then(|| progress.retry(&name)))
        .await
        .map_err(ApiError::internal)?;
    let outcome = match &result {
        None => "not_found",
        Some(Ok(_)) => "retried",
        Some(Err(RetryError::Store(_))) => "error",
        Some(Err(_)) => "refused",
    };
    metrics::counter!("provisioner_cluster_retries_total", "outcome" => outcome).increment(1);
    // The audit trail: who retried which cluster, and how it went.
    tracing::info!(target: "audit", %peer, token_id = %caller.token_id, cluster = %id, outcome,
        "cluster bootstrap retry requested");
    let conflict = |code: &str, e: RetryError| ApiError::new(StatusCode::CONFLICT, code, e.to_string());
    match result {
        None => Err(ApiError::not_found(
            "cluster_not_found",
            format!("no cluster {id:?}"),
        )),
        Some(Ok(status)) => Ok((StatusCode::ACCEPTED, Json(status))),
        Some(Err(e @ RetryError::NotFailed(_))) => Err(conflict("cluster_not_failed", e)),
        Some(Err(e @ RetryError::UnknownStep(_))) => Err(conflict("retry_step_unknown", e)),
        Some(Err(e @ RetryError::Unavailable)) => Err(conflict("bootstrap_unavailable", e)),
        Some(Err(e @ RetryError::Store(_))) => Err(ApiError::internal(e)),
    }
}
