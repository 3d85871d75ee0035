//! Config release decisions (admin): `POST /api/v1/machines/{mac}/approve|deny`
//! (a waiting install or a Talos device authorization, optionally only the one
//! showing `code`), `POST /api/v1/machines/{mac}/unpin` (clear the UUID pin), and
//! `GET /api/v1/approvals` (what waits, with code, MAC, UUID and peer). Every
//! decision is audited with the token id, never the token.

use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

use super::ApiState;
use super::auth::Caller;
use super::error::{ApiError, ErrorBody};
use super::params::MacParam;
use crate::service::{ApprovalError, Pending};

/// The optional body of approve and deny.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DecisionRequest {
    /// The user code the machine's console shows; with it only that request is
    /// decided (a different code is 409 `nothing_pending`).
    #[serde(default)]
    #[schema(example = "BCDF-GHJK")]
    pub code: Option<String>,
}

/// What a decision did.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DecisionResponse {
    /// The machine.
    pub mac: String,
    /// The requests decided (admission, device authorization).
    pub decided: Vec<Pending>,
}

/// What an unpin did.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct UnpinResponse {
    /// The machine.
    pub mac: String,
    /// Always `null` now: the next UUID a bound request presents is pinned.
    pub pinned_uuid: Option<String>,
}

/// An empty body is no code; anything else must be a JSON [`DecisionRequest`].
fn decision(body: &Bytes) -> Result<Option<String>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let de = &mut serde_json::Deserializer::from_slice(body);
    let req: DecisionRequest = serde_path_to_error::deserialize(de).map_err(|e| {
        if e.inner().is_syntax() || e.inner().is_eof() {
            ApiError::new(StatusCode::BAD_REQUEST, "invalid_json", e.inner().to_string())
        } else {
            ApiError::invalid("code", "validation_failed", e.inner().to_string())
        }
    })?;
    Ok(req.code.filter(|c| !c.trim().is_empty()))
}

impl From<ApprovalError> for ApiError {
    fn from(e: ApprovalError) -> Self {
        match e {
            ApprovalError::NotFound(mac) => {
                ApiError::not_found("machine_not_found", format!("no machine {mac}"))
            }
            e @ ApprovalError::NothingPending(..) => {
                ApiError::new(StatusCode::CONFLICT, "nothing_pending", e.to_string())
            }
            ApprovalError::Service(e) => e.into(),
        }
    }
}

fn peer_of(peer: Option<Extension<ConnectInfo<SocketAddr>>>) -> String {
    peer.map(|p| p.0.0.ip().to_string())
        .unwrap_or_else(|| "unknown".into())
}

async fn decide(
    st: ApiState,
    caller: Caller,
    peer: String,
    mac: provisioner_core::model::MacAddr,
    body: Bytes,
    approve: bool,
) -> Result<Json<DecisionResponse>, ApiError> {
    let code = decision(&body)?;
    let svc = st.ops.service.clone();
    let token_id = caller.token_id.clone();
    let r = tokio::task::spawn_blocking(move || {
        if approve {
            svc.approve(mac, code.as_deref(), &token_id)
        } else {
            svc.deny(mac, code.as_deref(), &token_id)
        }
    })
    .await?;
    let outcome = if r.is_ok() { "done" } else { "refused" };
    tracing::info!(target: "audit", %peer, token_id = %caller.token_id, %mac, approve, outcome,
        "config release decision requested");
    Ok(Json(DecisionResponse {
        mac: mac.to_string(),
        decided: r?,
    }))
}

/// Approve what a machine waits for: its install (bound to its MAC and the UUID it
/// presented, for the install window) and/or its Talos device authorization.
#[utoipa::path(post, path = "/api/v1/machines/{mac}/approve", tag = "approvals",
    params(("mac" = String, Path, description = "Boot MAC", pattern = r"^[0-9A-Fa-f]{2}([:-]?[0-9A-Fa-f]{2}){5}$", example = "52:54:00:12:34:56")),
    request_body(content = DecisionRequest, description = "Optional: only the request showing this code", content_type = "application/json"),
    responses(
        (status = 200, description = "Approved", body = DecisionResponse),
        (status = 400, description = "Body is not JSON", body = ErrorBody),
        (status = 401, description = "No or unknown token", body = ErrorBody),
        (status = 403, description = "Not an admin token", body = ErrorBody),
        (status = 404, description = "No such machine", body = ErrorBody),
        (status = 409, description = "Nothing (with that code) waits (`nothing_pending`)", body = ErrorBody),
        (status = 422, description = "Bad MAC or body", body = ErrorBody),
    ))]
pub async fn approve(
    State(st): State<ApiState>,
    Extension(caller): Extension<Caller>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    MacParam(mac): MacParam,
    body: Bytes,
) -> Result<Json<DecisionResponse>, ApiError> {
    decide(st, caller, peer_of(peer), mac, body, true).await
}

/// Deny what a machine waits for: a device authorization gets `access_denied`; a
/// waiting install keeps waiting and its console says it was denied.
#[utoipa::path(post, path = "/api/v1/machines/{mac}/deny", tag = "approvals",
    params(("mac" = String, Path, description = "Boot MAC", pattern = r"^[0-9A-Fa-f]{2}([:-]?[0-9A-Fa-f]{2}){5}$", example = "52:54:00:12:34:56")),
    request_body(content = DecisionRequest, description = "Optional: only the request showing this code", content_type = "application/json"),
    responses(
        (status = 200, description = "Denied", body = DecisionResponse),
        (status = 400, description = "Body is not JSON", body = ErrorBody),
        (status = 401, description = "No or unknown token", body = ErrorBody),
        (status = 403, description = "Not an admin token", body = ErrorBody),
        (status = 404, description = "No such machine", body = ErrorBody),
        (status = 409, description = "Nothing (with that code) waits (`nothing_pending`)", body = ErrorBody),
        (status = 422, description = "Bad MAC or body", body = ErrorBody),
    ))]
pub async fn deny(
    State(st): State<ApiState>,
    Extension(caller): Extension<Caller>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    MacParam(mac): MacParam,
    body: Bytes,
) -> Result<Json<DecisionResponse>, ApiError> {
    decide(st, caller, peer_of(peer), mac, body, false).await
}

/// Clear a machine's SMBIOS UUID pin (after a board swap); the next UUID a bound
/// request presents is pinned.
#[utoipa::path(post, path = "/api/v1/machines/{mac}/unpin", tag = "approvals",
    params(("mac" = String, Path, description = "Boot MAC", pattern = r"^[0-9A-Fa-f]{2}([:-]?[0-9A-Fa-f]{2}){5}$", example = "52:54:00:12:34:56")),
    responses(
        (status = 200, description = "Unpinned (or was not pinned)", body = UnpinResponse),
        (status = 401, description = "No or unknown token", body = ErrorBody),
        (status = 403, description = "Not an admin token", body = ErrorBody),
        (status = 404, description = "No such machine", body = ErrorBody),
        (status = 422, description = "Bad MAC", body = ErrorBody),
    ))]
pub async fn unpin(
    State(st): State<ApiState>,
    Extension(caller): Extension<Caller>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    MacParam(mac): MacParam,
) -> Result<Json<UnpinResponse>, ApiError> {
    let svc = st.ops.service.clone();
    let token_id = caller.token_id.clone();
    let m = tokio::task::spawn_blocking(move || svc.unpin(mac, &token_id)).await??;
    tracing::info!(target: "audit", peer = %peer_of(peer), token_id = %caller.token_id, %mac,
        "UUID unpin requested");
    Ok(Json(UnpinResponse {
        mac: m.mac.to_string(),
        pinned_uuid: m.pinned_uuid,
    }))
}

/// What waits for an operator: installs in `approve` mode (or from unverifiable
/// peers, or unknown machines with secrets) and Talos device authorizations, each
/// with its user code, MAC, UUID and peer.
#[utoipa::path(get, path = "/api/v1/approvals", tag = "approvals",
    responses(
        (status = 200, description = "Waiting requests", body = Vec<Pending>),
        (status = 401, description = "No or unknown token", body = ErrorBody),
    ))]
pub async fn pending(State(st): State<ApiState>) -> Result<Json<Vec<Pending>>, ApiError> {
    let svc = st.ops.service.clone();
    Ok(Json(tokio::task::spawn_blocking(move || svc.pending()).await??))
}
