//! Path parameters whose rejections are JSON 422s naming the parameter (axum's own
//! `Path` answers plain-text 400s).

use std::collections::BTreeMap;

use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use provisioner_core::model::MacAddr;
use provisioner_core::power::PowerAction;

use super::error::ApiError;

async fn param<S: Send + Sync>(parts: &mut Parts, state: &S, name: &str) -> Result<String, ApiError> {
    let Path(map) = Path::<BTreeMap<String, String>>::from_request_parts(parts, state)
        .await
        .map_err(|e| ApiError::invalid(name, "invalid_path", e.body_text()))?;
    map.get(name)
        .cloned()
        .ok_or_else(|| ApiError::invalid(name, "invalid_path", format!("missing path parameter {name}")))
}

/// `{mac}` in any common notation.
#[derive(Debug, Clone, Copy)]
pub struct MacParam(pub MacAddr);

impl<S: Send + Sync> FromRequestParts<S> for MacParam {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let raw = param(parts, state, "mac").await?;
        raw.parse()
            .map(Self)
            .map_err(|e: provisioner_core::model::MacParseError| {
                ApiError::invalid("mac", "invalid_mac", e.to_string())
            })
    }
}

/// `{action}`: on, off or cycle.
#[derive(Debug, Clone, Copy)]
pub struct ActionParam(pub PowerAction);

impl<S: Send + Sync> FromRequestParts<S> for ActionParam {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let raw = param(parts, state, "action").await?;
        raw.parse()
            .map(Self)
            .map_err(|e: provisioner_core::model::UnknownName| {
                ApiError::invalid("action", "invalid_action", e.to_string())
            })
    }
}

/// `{id}` of a profile, image or cluster.
#[derive(Debug, Clone)]
pub struct IdParam(pub String);

impl<S: Send + Sync> FromRequestParts<S> for IdParam {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        param(parts, state, "id").await.map(Self)
    }
}
