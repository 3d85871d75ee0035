//! `POST /api/v1/machines/{mac}/adopt` (admin): writes the machine's MAC (and UUID)
//! into a node of `infra/` and reloads (`ops::adopt`); its next network boot
//! installs it. Audited with the token id.

use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::Deserialize;
use std::net::SocketAddr;

use super::ApiState;
use super::auth::Caller;
use super::error::{ApiError, ErrorBody};
use super::params::MacParam;
use crate::ops::adopt::{AdoptError, Adopted};
use crate::ops::machines::AdoptFailure;

/// The body of an adoption.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AdoptRequest {
    /// The node's `hostname` in `infra/`.
    #[schema(example = "talos-1")]
    pub node: String,
}

impl From<AdoptFailure> for ApiError {
    fn from(e: AdoptFailure) -> Self {
        let msg = e.to_string();
        match e {
            AdoptFailure::Unavailable => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "adopt_unavailable", msg)
            }
            AdoptFailure::Adopt(AdoptError::NoNode(_)) => ApiError::not_found("node_not_found", msg),
            AdoptFailure::Adopt(AdoptError::Ambiguous(..)) => {
                ApiError::invalid("node", "node_ambiguous", msg)
            }
            AdoptFailure::Adopt(AdoptError::Conflict(_)) => {
                ApiError::new(StatusCode::CONFLICT, "mac_conflict", msg)
            }
            AdoptFailure::Adopt(AdoptError::Invalid(_)) => ApiError::invalid("node", "inputs_invalid", msg),
            AdoptFailure::Adopt(AdoptError::Io { .. }) | AdoptFailure::Internal(_) => ApiError::internal(msg),
            AdoptFailure::Service(e) => e.into(),
        }
    }
}

/// Adopt a machine: write its MAC (and the UUID it reported, Talos nodes) into the
/// node of `infra/<cluster>.yaml` as a line edit (comments kept), validated as
/// `check` validates, written atomically; the running appliance reloads and the
/// machine installs on its next network boot. Refused when the node has another
/// real MAC, the MAC is claimed elsewhere, or there is no such node.
#[utoipa::path(post, path = "/api/v1/machines/{mac}/adopt", tag = "machines",
    params(("mac" = String, Path, description = "Boot MAC", pattern = r"^[0-9A-Fa-f]{2}([:-]?[0-9A-Fa-f]{2}){5}$", example = "52:54:00:12:34:56")),
    request_body(content = AdoptRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "Written (or already there) and reloaded", body = Adopted),
        (status = 400, description = "Body is not JSON", body = ErrorBody),
        (status = 401, description = "No or unknown token", body = ErrorBody),
        (status = 403, description = "Not an admin token", body = ErrorBody),
        (status = 404, description = "No such node (`node_not_found`)", body = ErrorBody),
        (status = 409, description = "The node has another MAC or UUID, or the MAC is claimed elsewhere (`mac_conflict`)", body = ErrorBody),
        (status = 422, description = "Bad MAC or body, ambiguous node, or the edit would not validate", body = ErrorBody),
    ))]
pub async fn adopt(
    State(st): State<ApiState>,
    Extension(caller): Extension<Caller>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    MacParam(mac): MacParam,
    body: Bytes,
) -> Result<Json<Adopted>, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(&body);
    let req: AdoptRequest = serde_path_to_error::deserialize(de).map_err(|e| {
        if e.inner().is_syntax() || e.inner().is_eof() {
            ApiError::new(StatusCode::BAD_REQUEST, "invalid_json", e.inner().to_string())
        } else {
            ApiError::invalid("node", "validation_failed", e.inner().to_string())
        }
    })?;
    let r = st.ops.adopt(mac, req.node.clone()).await;
    let peer = peer
        .map(|p| p.0.0.ip().to_string())
        .unwrap_or_else(|| "unknown".into());
    let outcome = match &r {
        Ok(_) => "done".to_string(),
        Err(e) => format!("refused: {e}"),
    };
    tracing::info!(target: "audit", %peer, token_id = %caller.token_id, %mac, node = %req.node, %outcome,
        "adopt requested");
    Ok(Json(r?))
}
