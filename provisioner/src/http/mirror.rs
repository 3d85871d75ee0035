//! `/mirror/{kind}/{version}/{file}`: the Flatcar and k0s mirror on the boot path,
//! read-only. `flatcar-install -b <base>/mirror/flatcar` probes with `wget
//! --spider` (HEAD; axum answers HEAD on GET routes) and downloads with plain GET;
//! Ignition fetches `/opt/bin/k0s` and checks its `verification.hash`.
//!
//! Only names [`crate::images::ImageCache::mirror_file`] builds from a validated version
//! and a fixed file list are served; anything else is 404, so no request leaves the mirror.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::assets;
use super::boot::BootState;

/// Serves one mirrored file (Range, ETag as for image assets).
pub async fn serve(
    State(st): State<BootState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path((kind, version, file)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    let Some(path) = st.cache.mirror_file(&kind, &version, &file) else {
        metrics::counter!("provisioner_mirror_refused_total").increment(1);
        return (StatusCode::NOT_FOUND, "not in the mirror\n").into_response();
    };
    let on_done = super::boot::served_hook(
        st.service.clone(),
        peer,
        format!("mirror {kind}/{version}/{file}"),
    );
    assets::serve_file(&path, &headers, Some(on_done)).await
}
