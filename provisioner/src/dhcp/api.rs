//! `GET /api/v1/leases`: the `full` personality's leases, read-only, on the API
//! listener (merged into the API router by the composition root).

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use provisioner_core::dhcp::lease::LeaseStore;

/// The leases router.
pub fn router(leases: Arc<dyn LeaseStore>) -> Router {
    Router::new()
        .route("/api/v1/leases", get(list))
        .with_state(leases)
}

async fn list(State(leases): State<Arc<dyn LeaseStore>>) -> Response {
    match tokio::task::spawn_blocking(move || leases.list()).await {
        Ok(Ok(l)) => Json(l).into_response(),
        Ok(Err(e)) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}
