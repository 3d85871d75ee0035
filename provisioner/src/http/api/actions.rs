//! `POST /api/v1/machines/{mac}/reimage` and `POST /api/v1/machines/{mac}/power/{action}`.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use provisioner_core::model::MachineState;
use provisioner_core::power::PowerAction;
use serde::Serialize;

use super::ApiState;
use super::error::{ApiError, ErrorBody};
use super::params::{ActionParam, MacParam};
use crate::ops::Step;
use crate::power::OutcomeStatus;

/// What a re-image did.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ReimageResponse {
    /// The machine.
    pub mac: String,
    /// Its state now (`ReimageRequested`).
    pub state: MachineState,
    /// Each step and how it went; `manual`/`failed`/`unavailable` steps say what the
    /// operator must do.
    pub steps: Vec<Step>,
}

/// Re-image a machine: `ReimageRequested`, then a Talos reset or a power cycle.
#[utoipa::path(post, path = "/api/v1/machines/{mac}/reimage", tag = "actions",
    params(("mac" = String, Path, description = "Boot MAC", pattern = r"^[0-9A-Fa-f]{2}([:-]?[0-9A-Fa-f]{2}){5}$", example = "52:54:00:12:34:56")),
    responses(
        (status = 202, description = "Requested; the next network boot reinstalls", body = ReimageResponse),
        (status = 401, description = "No or unknown token", body = ErrorBody),
        (status = 403, description = "Not an admin token", body = ErrorBody),
        (status = 404, description = "No such machine", body = ErrorBody),
        (status = 409, description = "Power driver misconfigured", body = ErrorBody),
        (status = 422, description = "Not a MAC address", body = ErrorBody),
    ))]
pub async fn reimage(
    State(st): State<ApiState>,
    MacParam(mac): MacParam,
) -> Result<(StatusCode, Json<ReimageResponse>), ApiError> {
    let (m, steps) = st.ops.reimage(mac).await?;
    tracing::info!(%mac, "re-image requested");
    Ok((
        StatusCode::ACCEPTED,
        Json(ReimageResponse {
            mac: m.mac.to_string(),
            state: m.state,
            steps,
        }),
    ))
}

/// What a power action did.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PowerResponse {
    /// The machine.
    pub mac: String,
    /// The action.
    pub action: PowerAction,
    /// The driver used (`wol`, `proxmox`, `redfish`, `manual`).
    pub driver: String,
    /// `done`, or `manual` when the operator must act (detail says what).
    #[schema(value_type = String, example = "done")]
    pub status: OutcomeStatus,
    /// What happened or what to do.
    pub detail: String,
}

/// Switch a machine on, off, or power-cycle it with its power driver.
#[utoipa::path(post, path = "/api/v1/machines/{mac}/power/{action}", tag = "actions",
    params(
        ("mac" = String, Path, description = "Boot MAC", pattern = r"^[0-9A-Fa-f]{2}([:-]?[0-9A-Fa-f]{2}){5}$", example = "52:54:00:12:34:56"),
        ("action" = PowerAction, Path, description = "on, off or cycle"),
    ),
    responses(
        (status = 200, description = "Done, or what the operator must do", body = PowerResponse),
        (status = 401, description = "No or unknown token", body = ErrorBody),
        (status = 403, description = "Not an admin token", body = ErrorBody),
        (status = 404, description = "No such machine", body = ErrorBody),
        (status = 409, description = "The driver cannot do this, or is misconfigured", body = ErrorBody),
        (status = 422, description = "Bad MAC or action", body = ErrorBody),
        (status = 502, description = "The power endpoint failed", body = ErrorBody),
    ))]
pub async fn power(
    State(st): State<ApiState>,
    MacParam(mac): MacParam,
    ActionParam(action): ActionParam,
) -> Result<Json<PowerResponse>, ApiError> {
    let (driver, outcome) = st.ops.power(mac, action).await?;
    tracing::info!(%mac, %action, driver, "power action");
    Ok(Json(PowerResponse {
        mac: mac.to_string(),
        action,
        driver: driver.into(),
        status: outcome.status,
        detail: outcome.detail,
    }))
}
