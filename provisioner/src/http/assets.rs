//! Serving cached image files with `Range`, `Content-Length` and `ETag`.
//!
//! Only `<cache>/<image id>/<file>` for ids and files named in a loaded image
//! descriptor are reachable; both components are plain names, so no request can
//! leave the cache. No compression here: kernels and initrds are already compressed
//! and iPXE gains nothing (crates.md §5.4).

use std::io::SeekFrom;
use std::path::Path;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_util::io::ReaderStream;

pub use provisioner_core::range::{ByteRange, parse_range};

/// A strong-enough validator from size and modification time: the cache replaces
/// files atomically, so either changes when the content does.
pub fn etag(meta: &std::fs::Metadata) -> String {
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("\"{:x}-{:x}\"", meta.len(), mtime)
}

/// Streams `path`, honouring `Range` and `If-None-Match`. `on_done` runs when the
/// last byte of a full-body response has been handed to the connection.
pub async fn serve_file(
    path: &Path,
    headers: &HeaderMap,
    on_done: Option<Box<dyn FnOnce(u64) + Send>>,
) -> Response {
    let Ok(mut file) = tokio::fs::File::open(path).await else {
        return (StatusCode::NOT_FOUND, "not in the image cache\n").into_response();
    };
    let Ok(meta) = file.metadata().await else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    if !meta.is_file() {
        return (StatusCode::NOT_FOUND, "not in the image cache\n").into_response();
    }
    let len = meta.len();
    let tag = etag(&meta);
    let mut resp_headers = HeaderMap::new();
    resp_headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    resp_headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if let Ok(v) = HeaderValue::from_str(&tag) {
        resp_headers.insert(header::ETAG, v);
    }
    if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == tag || t.trim() == "*"))
    {
        return (StatusCode::NOT_MODIFIED, resp_headers).into_response();
    }
    let range_hdr = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    // If-Range with a different validator means "send everything".
    let if_range_ok = headers
        .get(header::IF_RANGE)
        .and_then(|v| v.to_str().ok())
        .is_none_or(|v| v == tag);
    let Ok(range) = parse_range(if if_range_ok { range_hdr } else { None }, len) else {
        if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
            resp_headers.insert(header::CONTENT_RANGE, v);
        }
        return (StatusCode::RANGE_NOT_SATISFIABLE, resp_headers).into_response();
    };
    let (status, start, count) = match range {
        Some(r) => {
            if let Ok(v) = HeaderValue::from_str(&format!("bytes {}-{}/{len}", r.start, r.end)) {
                resp_headers.insert(header::CONTENT_RANGE, v);
            }
            (StatusCode::PARTIAL_CONTENT, r.start, r.end - r.start + 1)
        }
        None => (StatusCode::OK, 0, len),
    };
    if start > 0 && file.seek(SeekFrom::Start(start)).await.is_err() {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    resp_headers.insert(header::CONTENT_LENGTH, HeaderValue::from(count));
    let full = range.is_none();
    let mut on_done = if full { on_done } else { None };
    let mut sent = 0u64;
    let stream = ReaderStream::with_capacity(file.take(count), 256 * 1024).map(move |chunk| {
        if let Ok(c) = &chunk {
            sent += c.len() as u64;
            metrics::counter!("provisioner_http_bytes_total").increment(c.len() as u64);
            if sent == count
                && let Some(f) = on_done.take()
            {
                f(count);
            }
        }
        chunk
    });
    (status, resp_headers, Body::from_stream(stream)).into_response()
}
