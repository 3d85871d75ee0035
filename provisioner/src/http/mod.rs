//! HTTP: the plain boot path for firmware ([`boot`]), asset serving ([`assets`]) and
//! the operator API, metrics and dashboard on their own HTTPS listener ([`api`]). The
//! boot router carries no API route. Large cached files leave through
//! [`zerocopy`] (`sendfile`), everything else through hyper and axum.

pub mod api;
pub mod assets;
pub mod boot;
mod device;
pub mod limits;
pub mod mirror;
pub mod serve;
pub mod zerocopy;

use std::sync::Arc;

use axum::Extension;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::service::health::Health;

/// `/healthz` on both listeners: `ok` when every store answers a write + read
/// ([`Health::check`]), 503 `degraded: <reason>` otherwise. A router built without
/// the [`Health`] extension (unit tests of one router) answers liveness only.
pub async fn healthz(health: Option<Extension<Arc<Health>>>) -> Response {
    let Some(Extension(health)) = health else {
        return "ok\n".into_response();
    };
    match health.check().await {
        Ok(()) => "ok\n".into_response(),
        Err(reason) => (StatusCode::SERVICE_UNAVAILABLE, format!("degraded: {reason}\n")).into_response(),
    }
}
