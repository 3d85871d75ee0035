//! The RFC 8628 endpoints on the boot path: Talos' `talos.config.oauth.device_auth_url`
//! and `token_url` (`/device/code`, `/token`). The logic is in
//! [`crate::service`]; here only the HTTP shapes: form bodies in, JSON out, errors as
//! RFC 6749 §5.2 `{"error", "error_description"}` with their status, and
//! `Cache-Control: no-store` on every answer (RFC 6749 §5.1: they carry secrets).

use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::boot::{BootState, internal, service_error};
use crate::service::{DeviceRefusal, ServiceError};

/// Form bodies of these endpoints are a few hundred bytes.
const MAX_BODY: usize = 16 * 1024;

fn answer(r: Result<Result<Value, Result<DeviceRefusal, ServiceError>>, tokio::task::JoinError>) -> Response {
    let json = |status: StatusCode, v: Value| {
        (
            status,
            [
                (header::CONTENT_TYPE, "application/json"),
                (header::CACHE_CONTROL, "no-store"),
                (header::PRAGMA, "no-cache"),
            ],
            v.to_string(),
        )
            .into_response()
    };
    match r {
        Ok(Ok(v)) => json(StatusCode::OK, v),
        Ok(Err(Ok(refused))) => json(
            StatusCode::from_u16(refused.error.status()).unwrap_or(StatusCode::BAD_REQUEST),
            json!({"error": refused.error.code(), "error_description": refused.description}),
        ),
        Ok(Err(Err(e))) => service_error(e),
        Err(e) => internal(e),
    }
}

fn flatten(
    r: Result<Result<Value, DeviceRefusal>, ServiceError>,
) -> Result<Value, Result<DeviceRefusal, ServiceError>> {
    match r {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(refused)) => Err(Ok(refused)),
        Err(e) => Err(Err(e)),
    }
}

fn too_large() -> Response {
    (StatusCode::PAYLOAD_TOO_LARGE, "request body too large\n").into_response()
}

/// `POST /device/code`: RFC 8628 §3.1 device authorization request.
pub(super) async fn authorize(
    State(st): State<BootState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Bytes,
) -> Response {
    if body.len() > MAX_BODY {
        return too_large();
    }
    let svc = st.service.clone();
    let r = tokio::task::spawn_blocking(move || flatten(svc.device_authorize(&body, Some(peer.ip())))).await;
    answer(r)
}

/// `POST /token`: RFC 8628 §3.4 device access token request.
pub(super) async fn token(
    State(st): State<BootState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if body.len() > MAX_BODY {
        return too_large();
    }
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let svc = st.service.clone();
    let r = tokio::task::spawn_blocking(move || {
        flatten(svc.device_token(&body, auth.as_deref(), Some(peer.ip())))
    })
    .await;
    answer(r)
}
