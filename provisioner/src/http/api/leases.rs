//! `GET /api/v1/leases`: the `full` DHCP personality's leases (empty in other modes),
//! read-only, behind the API's authentication like every `/api/v1` route.

use axum::Json;
use axum::extract::State;
use provisioner_core::dhcp::lease::Lease;

use super::ApiState;
use super::error::{ApiError, ErrorBody};

/// Every DHCP lease (active, released and declined).
#[utoipa::path(get, path = "/api/v1/leases", tag = "dhcp",
    responses(
        (status = 200, description = "Leases", body = Vec<Lease>),
        (status = 401, description = "No or unknown token", body = ErrorBody),
    ))]
pub async fn list(State(st): State<ApiState>) -> Result<Json<Vec<Lease>>, ApiError> {
    let leases = st.leases.clone();
    let list = tokio::task::spawn_blocking(move || leases.list())
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?;
    Ok(Json(list))
}
