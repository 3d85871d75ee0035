//! API errors: JSON bodies with a stable `code`, the HTTP edge of every handler
//! (axum `examples/error-handling` style), and a JSON body extractor whose
//! validation errors are 422 naming the offending field.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::ops::OpError;
use crate::power::PowerError;
use crate::service::ServiceError;

/// Every error body the API returns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// Stable machine-readable code (`unauthorized`, `forbidden`, `not_found`,
    /// `machine_not_found`, `invalid_mac`, `validation_failed`, `invalid_json`, …).
    pub code: String,
    /// Human-readable explanation.
    pub message: String,
    /// The request field at fault (validation errors), as a dotted path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// An error response.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// JSON body.
    pub body: ErrorBody,
}

impl ApiError {
    /// An error with `status` and `code`.
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            body: ErrorBody {
                code: code.into(),
                message: message.into(),
                field: None,
            },
        }
    }

    /// 422 for a bad value of `field`.
    pub fn invalid(field: &str, code: &str, message: impl Into<String>) -> Self {
        let mut e = Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, message);
        e.body.field = Some(field.into());
        e
    }

    /// 404 with `code`.
    pub fn not_found(code: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }

    /// 500 for a failed blocking task; the detail goes to the log only.
    pub fn internal(e: impl std::fmt::Display) -> Self {
        tracing::error!(error = %e, "API handler failed");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.status, Json(self.body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        r
    }
}

impl From<provisioner_core::inventory::InventoryError> for ApiError {
    fn from(e: provisioner_core::inventory::InventoryError) -> Self {
        tracing::error!(error = %e, "inventory failure in the API");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "inventory_unavailable",
            "inventory unavailable",
        )
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::Inventory(e) => e.into(),
            other => Self::new(StatusCode::CONFLICT, "conflict", other.to_string()),
        }
    }
}

impl From<tokio::task::JoinError> for ApiError {
    fn from(e: tokio::task::JoinError) -> Self {
        Self::internal(e)
    }
}

impl From<PowerError> for ApiError {
    fn from(e: PowerError) -> Self {
        match &e {
            PowerError::Unsupported { .. } => {
                Self::new(StatusCode::CONFLICT, "power_action_unsupported", e.to_string())
            }
            PowerError::Config(_) => Self::new(StatusCode::CONFLICT, "power_not_configured", e.to_string()),
            PowerError::Upstream { .. } => {
                Self::new(StatusCode::BAD_GATEWAY, "power_driver_failed", e.to_string())
            }
        }
    }
}

impl From<OpError> for ApiError {
    fn from(e: OpError) -> Self {
        match e {
            OpError::NotFound(mac) => Self::not_found("machine_not_found", format!("no machine {mac}")),
            OpError::Service(e) => e.into(),
            OpError::Power(e) => e.into(),
            OpError::Internal(e) => Self::internal(e),
        }
    }
}

/// A JSON request body. Unlike `axum::Json`, a body that does not fit the type is a
/// 422 whose `field` names the offending path (serde_path_to_error), and a body that
/// is not JSON at all is a 400 `invalid_json`.
#[derive(Debug)]
pub struct Body<T>(pub T);

/// The field named in serde's messages for unknown/missing fields at the top level.
fn field_in_message(msg: &str) -> Option<String> {
    for marker in ["unknown field `", "missing field `"] {
        if let Some(rest) = msg.split(marker).nth(1) {
            return rest.split('`').next().map(str::to_string);
        }
    }
    None
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| {
                ct.split(';')
                    .next()
                    .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
            });
        if !json {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "the body must be application/json",
            ));
        }
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_body", e.body_text()))?;
        let de = &mut serde_json::Deserializer::from_slice(&bytes);
        let value: T = serde_path_to_error::deserialize(&mut *de).map_err(|e| {
            let inner = e.inner();
            if inner.is_syntax() || inner.is_eof() {
                return ApiError::new(StatusCode::BAD_REQUEST, "invalid_json", inner.to_string());
            }
            let path = e.path().to_string();
            let field = if path == "." {
                field_in_message(&inner.to_string()).unwrap_or_else(|| "(body)".into())
            } else {
                path
            };
            ApiError::invalid(&field, "validation_failed", inner.to_string())
        })?;
        de.end()
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_json", e.to_string()))?;
        Ok(Self(value))
    }
}

#[cfg(test)]
mod tests {
    use super::field_in_message;

    #[test]
    fn top_level_field_names() {
        assert_eq!(
            field_in_message("unknown field `colour`, expected one of `labels`").as_deref(),
            Some("colour")
        );
        assert_eq!(field_in_message("missing field `role`").as_deref(), Some("role"));
        assert_eq!(field_in_message("invalid type: integer"), None);
    }
}
