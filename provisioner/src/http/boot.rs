//! The plain-HTTP boot path. Firmware cannot do TLS, so nothing here is an operator
//! API: only first-stage and per-machine iPXE scripts, cached assets, iPXE binaries
//! for UEFI HTTP Boot, and the one-time config and callback URLs.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{ConnectInfo, MatchedPath, Path, RawQuery, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use provisioner_core::boot::BootRequest;
use provisioner_core::catalog::Image;
use provisioner_core::model::Event;
use provisioner_core::render;

use super::assets;
use super::zerocopy::{AssetResolver, Resolved};
use crate::images::ImageCache;
use crate::service::{BootService, ServiceError};

/// What the boot routes need.
#[derive(Debug, Clone)]
pub struct BootState {
    /// Decisions, tokens, inventory.
    pub service: Arc<BootService>,
    /// Images whose files may be served.
    pub images: Arc<BTreeMap<String, Image>>,
    /// The image cache.
    pub cache: ImageCache,
    /// iPXE binaries (also offered over HTTP for UEFI HTTP Boot).
    pub ipxe_dir: PathBuf,
    /// The rendered first stage.
    pub first_stage: Arc<str>,
}

/// The boot router.
pub fn router(state: BootState) -> Router {
    Router::new()
        .route("/boot.ipxe", get(first_stage))
        .route("/ipxe", get(machine_script))
        .route("/assets/{image}/{file}", get(asset))
        .route("/bin/{file}", get(binary))
        .route("/config/{token}", get(config))
        .route("/callback/{token}/installed", post(installed))
        .route("/callback/{token}/k0s-installed", post(k0s_installed))
        .route(render::ipxe::DEVICE_AUTH_PATH, post(super::device::authorize))
        .route(render::ipxe::TOKEN_PATH, post(super::device::token))
        .route("/mirror/{kind}/{version}/{file}", get(super::mirror::serve))
        .route("/healthz", get(super::healthz))
        .with_state(state)
        .layer(middleware::from_fn(observe))
}

const IPXE: [(header::HeaderName, &str); 1] = [(header::CONTENT_TYPE, "text/plain; charset=utf-8")];

/// Counts every request by route template and status, and logs it without the raw
/// URI (config and callback paths carry one-time tokens).
pub async fn observe(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let method = req.method().clone();
    let started = Instant::now();
    let resp = next.run(req).await;
    let status = resp.status().as_u16().to_string();
    metrics::counter!("provisioner_http_requests_total", "route" => route.clone(), "status" => status.clone())
        .increment(1);
    if resp.status().is_server_error() {
        metrics::counter!("provisioner_http_errors_total", "route" => route.clone()).increment(1);
    }
    tracing::debug!(%method, %route, %status, elapsed_ms = started.elapsed().as_millis() as u64, "http");
    resp
}

async fn first_stage(State(st): State<BootState>) -> impl IntoResponse {
    (IPXE, st.first_stage.to_string())
}

async fn machine_script(
    State(st): State<BootState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    RawQuery(q): RawQuery,
) -> Response {
    let req = BootRequest::from_query(q.as_deref().unwrap_or(""));
    let svc = st.service.clone();
    let r = tokio::task::spawn_blocking(move || svc.ipxe_script(&req, Some(peer.ip()))).await;
    match r {
        Ok(Ok((script, outcome))) => {
            tracing::info!(peer = %peer.ip(), outcome, "ipxe script served");
            (IPXE, script).into_response()
        }
        Ok(Err(e)) => service_error(e),
        Err(e) => internal(e),
    }
}

async fn asset(
    State(st): State<BootState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path((image, file)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    match st.asset_path(&image, &file) {
        Ok((path, served)) => {
            let on_done = served_hook(st.service.clone(), peer, served);
            assets::serve_file(&path, &headers, Some(on_done)).await
        }
        Err(why) => (StatusCode::NOT_FOUND, why).into_response(),
    }
}

impl BootState {
    /// The cached file behind `/assets/{image}/{file}` and its name on the timeline.
    /// Only files named by a loaded image descriptor: the path components come from
    /// validated descriptors, never from the request.
    fn asset_path(&self, image: &str, file: &str) -> Result<(PathBuf, String), &'static str> {
        let img = self.images.get(image).ok_or("no such image\n")?;
        let known = std::iter::once(&img.kernel)
            .chain(img.initrds.iter())
            .any(|f| f.file == file);
        if !known {
            return Err("no such file in this image\n");
        }
        Ok((
            self.cache.image_file(&img.id, file),
            format!("{}/{}", img.id, file),
        ))
    }
}

/// Records `AssetServed` on the peer's timeline once a full body went out (queued:
/// the service's observation writer batches them, `service::observe`).
pub(super) fn served_hook(
    svc: Arc<BootService>,
    peer: SocketAddr,
    served: String,
) -> Box<dyn FnOnce(u64) + Send> {
    Box::new(move |bytes| {
        let event = Event::AssetServed { file: served, bytes };
        svc.observe(crate::service::Observed::Peer(peer.ip()), event);
    })
}

/// The zero-copy path answers the same two routes as [`asset`] and
/// [`super::mirror::serve`], with the same lookups.
impl AssetResolver for BootState {
    fn resolve(&self, path: &str, peer: SocketAddr) -> Option<Resolved> {
        let parts: Vec<&str> = path.strip_prefix('/')?.split('/').collect();
        let (path, served, route) = match parts.as_slice() {
            ["assets", image, file] if !image.is_empty() && !file.is_empty() => {
                let (p, served) = self.asset_path(image, file).ok()?;
                (p, served, "/assets/{image}/{file}")
            }
            ["mirror", kind, version, file] => (
                self.cache.mirror_file(kind, version, file)?,
                format!("mirror {kind}/{version}/{file}"),
                "/mirror/{kind}/{version}/{file}",
            ),
            _ => return None,
        };
        Some(Resolved {
            path,
            route,
            on_done: Some(served_hook(self.service.clone(), peer, served)),
        })
    }
}

async fn binary(State(st): State<BootState>, Path(file): Path<String>, headers: HeaderMap) -> Response {
    match provisioner_core::tftp::path::sanitize(&file) {
        Ok(name) if !name.contains('/') => assets::serve_file(&st.ipxe_dir.join(name), &headers, None).await,
        _ => (StatusCode::NOT_FOUND, "no such binary\n").into_response(),
    }
}

/// The token of an `Authorization: Bearer <token>` header (the device flow's).
fn bearer(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_string())
        .filter(|t| !t.is_empty())
}

async fn config(
    State(st): State<BootState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(token): Path<String>,
    headers: HeaderMap,
) -> Response {
    let svc = st.service.clone();
    let bearer = bearer(&headers);
    match tokio::task::spawn_blocking(move || svc.config(&token, Some(peer.ip()), bearer.as_deref())).await {
        Ok(Ok(c)) => (
            [
                (header::CONTENT_TYPE, c.content_type),
                (header::CACHE_CONTROL, "no-store"),
            ],
            c.body,
        )
            .into_response(),
        Ok(Err(e)) => service_error(e),
        Err(e) => internal(e),
    }
}

async fn installed(
    State(st): State<BootState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(token): Path<String>,
) -> Response {
    let svc = st.service.clone();
    match tokio::task::spawn_blocking(move || svc.installed(&token, Some(peer.ip()))).await {
        Ok(Ok(mac)) => {
            tracing::info!(%mac, "machine reported installed");
            (StatusCode::OK, "ok\n").into_response()
        }
        Ok(Err(e)) => service_error(e),
        Err(e) => internal(e),
    }
}

async fn k0s_installed(
    State(st): State<BootState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(token): Path<String>,
) -> Response {
    let svc = st.service.clone();
    match tokio::task::spawn_blocking(move || svc.k0s_installed(&token, Some(peer.ip()))).await {
        Ok(Ok(mac)) => {
            tracing::info!(%mac, "machine reported k0s installed");
            (StatusCode::OK, "ok\n").into_response()
        }
        Ok(Err(e)) => service_error(e),
        Err(e) => internal(e),
    }
}

pub(super) fn service_error(e: ServiceError) -> Response {
    match e {
        ServiceError::BadToken => {
            metrics::counter!("provisioner_token_rejected_total").increment(1);
            // 403, as the Talos issue specifies for a replayed, foreign or expired token.
            (StatusCode::FORBIDDEN, "unknown or already used token\n").into_response()
        }
        ServiceError::Expired => {
            metrics::counter!("provisioner_token_rejected_total").increment(1);
            // 403 like any other refused token (not 410): the issue asks one status for
            // replayed, foreign and expired tokens, and a client learns nothing more.
            (StatusCode::FORBIDDEN, "expired token\n").into_response()
        }
        ServiceError::Conflict(m) => (StatusCode::CONFLICT, format!("{m}\n")).into_response(),
        // The requester is not tied to the machine: the reason names no secret and
        // tells an operator what to check; the token stays live for the machine.
        ServiceError::Refused(why) => {
            (StatusCode::FORBIDDEN, format!("config refused: {why}\n")).into_response()
        }
        ServiceError::Render(why) => {
            // The reason can name files and nodes: log it, answer generically.
            tracing::error!(error = %why, "machine config not rendered");
            (StatusCode::SERVICE_UNAVAILABLE, "config not available yet\n").into_response()
        }
        ServiceError::Inventory(e) => {
            tracing::error!(error = %e, "inventory failure on the boot path");
            (StatusCode::SERVICE_UNAVAILABLE, "inventory unavailable\n").into_response()
        }
    }
}

pub(super) fn internal(e: impl std::fmt::Display) -> Response {
    tracing::error!(error = %e, "boot handler failed");
    StatusCode::INTERNAL_SERVER_ERROR.into_response()
}
