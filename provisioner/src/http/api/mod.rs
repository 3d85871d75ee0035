//! The operator API: REST under `/api/v1` with its OpenAPI document at
//! `/api/v1/openapi.json` (generated from the handlers by utoipa, so it cannot drift),
//! `/metrics`, `/healthz`, and the dashboard under `/ui`. Served over HTTPS
//! ([`tls`]) on its own address, never on the boot path.
//!
//! Access ([`auth`]): `/healthz` and `/api/v1/openapi.json` are open (no data);
//! `/metrics` and every `/api/v1` route need a token (read-only suffices for reads and
//! for Prometheus); mutating calls and cluster credential downloads need an admin token.

pub mod actions;
pub mod adopt;
pub mod approvals;
pub mod auth;
pub mod catalog;
pub mod clusters;
pub mod credentials;
pub mod dashboard;
pub mod error;
pub mod events;
pub mod k0s;
pub mod leases;
pub mod machines;
pub mod params;
pub mod patch;
pub mod tls;

use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::http::{StatusCode, header};
use axum::middleware;
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use provisioner_core::apitoken::ApiTokenStore;
use provisioner_core::dhcp::lease::LeaseStore;
use tokio_util::sync::CancellationToken;
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::cluster::seams::ClusterCredentials;
use crate::ops::Operator;
use crate::ops::clusters::BootstrapProgress;
use error::ApiError;

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

/// Everything the API handlers need.
#[derive(Debug, Clone)]
pub struct ApiState {
    /// Inventory, catalog, power, re-imaging.
    pub ops: Operator,
    /// API tokens (hashed).
    pub tokens: Arc<dyn ApiTokenStore>,
    /// Dashboard sessions.
    pub sessions: Arc<auth::Sessions>,
    /// The clusters of `infra/` (loaded once with the other inputs).
    pub clusters: crate::ops::clusters::ClusterFiles,
    /// Bootstrap progress per cluster.
    pub bootstrap: Arc<dyn BootstrapProgress>,
    /// Ends live streams at shutdown.
    pub shutdown: CancellationToken,
    /// Cluster-admin credentials (talosconfig, kubeconfig) for admin tokens.
    pub credentials: Arc<dyn ClusterCredentials>,
    /// DHCP leases (`full` mode; empty otherwise).
    pub leases: Arc<dyn LeaseStore>,
    /// Dashboard settings (the fleet view's stuck-install limit).
    pub dashboard: dashboard::DashboardSettings,
}

#[derive(OpenApi)]
#[openapi(
    info(title = "provisioner operator API", description = "Machines, re-imaging, power, timelines, catalog and clusters of the provisioner appliance. Bearer tokens: `provisioner token create --role admin|read-only`; reads need any token, every other method an admin token; cluster credentials (talosconfig, kubeconfig) need an admin token too."),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    tags(
        (name = "machines", description = "The inventory"),
        (name = "actions", description = "Re-image and power"),
        (name = "catalog", description = "Profiles and images (read-only)"),
        (name = "clusters", description = "Clusters from infra/"),
        (name = "events", description = "Live timeline events (SSE)"),
        (name = "dhcp", description = "Built-in DHCP server leases"),
        (name = "approvals", description = "Config release: approve or deny waiting machines and Talos device authorizations, clear UUID pins"),
    )
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The `/api/v1` routes and their OpenAPI document.
pub fn api_routes() -> (Router<ApiState>, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(machines::list))
        .routes(routes!(machines::get, patch::patch, patch::delete))
        .routes(routes!(machines::timeline))
        .routes(routes!(k0s::status))
        .routes(routes!(actions::reimage))
        .routes(routes!(actions::power))
        .routes(routes!(approvals::approve))
        .routes(routes!(approvals::deny))
        .routes(routes!(approvals::unpin))
        .routes(routes!(adopt::adopt))
        .routes(routes!(approvals::pending))
        .routes(routes!(catalog::profiles))
        .routes(routes!(catalog::profile))
        .routes(routes!(catalog::images))
        .routes(routes!(catalog::image))
        .routes(routes!(clusters::list))
        .routes(routes!(clusters::get))
        .routes(routes!(clusters::retry))
        .routes(routes!(credentials::talosconfig))
        .routes(routes!(credentials::kubeconfig))
        .routes(routes!(leases::list))
        .routes(routes!(events::stream))
        .split_for_parts()
}

/// The OpenAPI document as served.
pub fn openapi_json() -> String {
    api_routes().1.to_pretty_json().unwrap_or_else(|_| "{}".into())
}

async fn not_found() -> ApiError {
    ApiError::not_found("not_found", "no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "method not allowed on this route",
    )
}

/// The API listener's router.
pub fn router(state: ApiState) -> Router {
    let handle = metrics_handle();
    let (api, doc) = api_routes();
    let doc: Arc<str> = doc.to_pretty_json().unwrap_or_else(|_| "{}".into()).into();
    let protected = api
        .route("/metrics", get(move || async move { handle.render() }))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth::require));
    Router::new()
        .merge(protected)
        .merge(
            dashboard::router().route_layer(middleware::from_fn_with_state(state.clone(), dashboard::guard)),
        )
        .route(
            "/api/v1/openapi.json",
            get(move || async move {
                ([(header::CONTENT_TYPE, "application/json")], doc.to_string()).into_response()
            }),
        )
        .route("/healthz", get(crate::http::healthz))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
        .layer(middleware::from_fn(super::boot::observe))
}
