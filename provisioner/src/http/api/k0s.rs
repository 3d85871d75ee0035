//! `/api/v1/machines/{mac}/k0s`: a Flatcar machine's k0s sub-state, replayed from its
//! timeline with the default timeouts applied now (`core::k0s::progress`).

use axum::Json;
use axum::extract::State;
use provisioner_core::k0s::progress::{self, Status};

use super::ApiState;
use super::error::{ApiError, ErrorBody};
use super::params::MacParam;

/// A machine's k0s progress: phase (Pending, Stage1Served, DiskInstalled,
/// K0sInstalled), install attempts, and whether the awaited callback is overdue.
#[utoipa::path(get, path = "/api/v1/machines/{mac}/k0s", tag = "machines",
    params(("mac" = String, Path, description = "Boot MAC", pattern = r"^[0-9A-Fa-f]{2}([:-]?[0-9A-Fa-f]{2}){5}$", example = "52:54:00:12:34:56")),
    responses(
        (status = 200, description = "k0s progress", body = Status),
        (status = 401, description = "No or unknown token", body = ErrorBody),
        (status = 404, description = "No such machine", body = ErrorBody),
        (status = 422, description = "Not a MAC address", body = ErrorBody),
    ))]
pub async fn status(State(st): State<ApiState>, MacParam(mac): MacParam) -> Result<Json<Status>, ApiError> {
    let ops = st.ops.clone();
    let s = tokio::task::spawn_blocking(move || -> Result<_, ApiError> {
        if ops.machine(mac)?.is_none() {
            return Err(ApiError::not_found(
                "machine_not_found",
                format!("no machine {mac}"),
            ));
        }
        Ok(progress::status(
            &ops.timeline(mac)?,
            time::OffsetDateTime::now_utc(),
            &progress::Timeouts::default(),
        ))
    })
    .await??;
    Ok(Json(s))
}
