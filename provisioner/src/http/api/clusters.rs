//! `/api/v1/clusters`: status from `infra/`, the profiles naming each cluster, their
//! machines, and the bootstrap reporter.

use axum::Json;
use axum::extract::State;

use super::ApiState;
use super::error::{ApiError, ErrorBody};
use super::params::IdParam;
use crate::ops::clusters::{ClusterView, read_infra, views};

async fn all(st: &ApiState) -> Result<Vec<ClusterView>, ApiError> {
    let inv = st.ops.service.inventory().clone();
    let dir = st.infra_dir.clone();
    let (files, machines) =
        tokio::task::spawn_blocking(move || -> Result<_, ApiError> { Ok((read_infra(&dir), inv.list()?)) })
            .await??;
    Ok(views(&files, &st.ops.catalog, &machines, st.bootstrap.as_ref()))
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
