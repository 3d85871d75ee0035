//! Read-only operator views: machines with their timelines, `/metrics`, `/healthz`.
//! Listens on its own address (loopback by default), never on the boot path.

use std::sync::{Arc, OnceLock};

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use provisioner_core::inventory::{Inventory, MachineExport};
use provisioner_core::model::MacAddr;

/// Installs the process-wide Prometheus recorder once and returns its handle.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            // Fails only if another recorder is installed; metrics then go there.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

/// The read-only API router.
pub fn router(inventory: Arc<dyn Inventory>) -> Router {
    let handle = metrics_handle();
    Router::new()
        .route("/api/v1/machines", get(list))
        .route("/api/v1/machines/{mac}", get(show))
        .route("/metrics", get(move || async move { handle.render() }))
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(inventory)
        .layer(middleware::from_fn(super::boot::observe))
}

fn error(status: StatusCode, code: &str, message: String) -> Response {
    (
        status,
        Json(serde_json::json!({ "code": code, "message": message })),
    )
        .into_response()
}

async fn list(State(inv): State<Arc<dyn Inventory>>) -> Response {
    match tokio::task::spawn_blocking(move || inv.list()).await {
        Ok(Ok(ms)) => Json(ms).into_response(),
        Ok(Err(e)) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "inventory_unavailable",
            e.to_string(),
        ),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()),
    }
}

async fn show(State(inv): State<Arc<dyn Inventory>>, Path(mac): Path<String>) -> Response {
    let mac: MacAddr = match mac.parse() {
        Ok(m) => m,
        Err(e) => return error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_mac", e.to_string()),
    };
    let r = tokio::task::spawn_blocking(
        move || -> Result<Option<MachineExport>, provisioner_core::inventory::InventoryError> {
            match inv.get(mac)? {
                Some(machine) => Ok(Some(MachineExport {
                    timeline: inv.timeline(mac)?,
                    machine,
                })),
                None => Ok(None),
            }
        },
    )
    .await;
    match r {
        Ok(Ok(Some(m))) => Json(m).into_response(),
        Ok(Ok(None)) => error(
            StatusCode::NOT_FOUND,
            "machine_not_found",
            format!("no machine {mac}"),
        ),
        Ok(Err(e)) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "inventory_unavailable",
            e.to_string(),
        ),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()),
    }
}
