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

/// What to answer for one request on a file of `len` bytes with validator `tag`:
/// the status, the headers (without `Date`, which the sender adds) and the byte
/// span of the body. A pure function, so the hyper route ([`serve_file`]) and the
/// zero-copy path ([`super::zerocopy`]) answer alike.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// 200, 206, 304 or 416.
    pub status: StatusCode,
    /// Accept-Ranges, Content-Type, ETag and, by status, Content-Range and
    /// Content-Length.
    pub headers: HeaderMap,
    /// First body byte.
    pub start: u64,
    /// Body bytes (0 for 304 and 416).
    pub count: u64,
    /// A 200 with the whole file: the only response that counts as "served".
    pub full: bool,
}

/// The request headers [`plan`] looks at.
#[derive(Debug, Clone, Copy, Default)]
pub struct Conditions<'a> {
    /// `If-None-Match`.
    pub if_none_match: Option<&'a str>,
    /// `Range`.
    pub range: Option<&'a str>,
    /// `If-Range`.
    pub if_range: Option<&'a str>,
}

impl<'a> Conditions<'a> {
    /// The conditions of a request parsed by hyper.
    pub fn from_headers(headers: &'a HeaderMap) -> Self {
        let get = |h| headers.get(h).and_then(|v: &HeaderValue| v.to_str().ok());
        Self {
            if_none_match: get(header::IF_NONE_MATCH),
            range: get(header::RANGE),
            if_range: get(header::IF_RANGE),
        }
    }
}

/// Decides the response for `cond` on a file of `len` bytes tagged `tag`
/// (RFC 9110 §13.1.2 If-None-Match, §13.1.5 If-Range, §14.2 Range, §15.5.17 416).
pub fn plan(len: u64, tag: &str, cond: &Conditions<'_>) -> Plan {
    let mut headers = HeaderMap::new();
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if let Ok(v) = HeaderValue::from_str(tag) {
        headers.insert(header::ETAG, v);
    }
    let empty = |status, headers| Plan {
        status,
        headers,
        start: 0,
        count: 0,
        full: false,
    };
    if cond
        .if_none_match
        .is_some_and(|v| v.split(',').any(|t| t.trim() == tag || t.trim() == "*"))
    {
        return empty(StatusCode::NOT_MODIFIED, headers);
    }
    // If-Range with a different validator means "send everything".
    let if_range_ok = cond.if_range.is_none_or(|v| v == tag);
    let Ok(range) = parse_range(if if_range_ok { cond.range } else { None }, len) else {
        if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
            headers.insert(header::CONTENT_RANGE, v);
        }
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(0u64));
        return empty(StatusCode::RANGE_NOT_SATISFIABLE, headers);
    };
    let (status, start, count) = match range {
        Some(r) => {
            if let Ok(v) = HeaderValue::from_str(&format!("bytes {}-{}/{len}", r.start, r.end)) {
                headers.insert(header::CONTENT_RANGE, v);
            }
            (StatusCode::PARTIAL_CONTENT, r.start, r.end - r.start + 1)
        }
        None => (StatusCode::OK, 0, len),
    };
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(count));
    Plan {
        status,
        headers,
        start,
        count,
        full: range.is_none(),
    }
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
    let p = plan(meta.len(), &etag(&meta), &Conditions::from_headers(headers));
    if p.status == StatusCode::NOT_MODIFIED || p.status == StatusCode::RANGE_NOT_SATISFIABLE {
        return (p.status, p.headers).into_response();
    }
    if p.start > 0 && file.seek(SeekFrom::Start(p.start)).await.is_err() {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    let count = p.count;
    let mut on_done = if p.full { on_done } else { None };
    let mut sent = 0u64;
    // A buffer no larger than the body: a 12-byte file must not cost 256 KiB per
    // request (boot storm RSS, issue 16).
    let cap = usize::try_from(count).unwrap_or(usize::MAX).clamp(1, 256 * 1024);
    let stream = ReaderStream::with_capacity(file.take(count), cap).map(move |chunk| {
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
    (p.status, p.headers, Body::from_stream(stream)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TAG: &str = "\"a-b\"";

    fn p(cond: Conditions<'_>) -> Plan {
        plan(1000, TAG, &cond)
    }

    #[test]
    fn full_partial_suffix_and_unsatisfiable() {
        let full = p(Conditions::default());
        assert_eq!(
            (full.status, full.start, full.count, full.full),
            (StatusCode::OK, 0, 1000, true)
        );
        assert_eq!(full.headers[header::CONTENT_LENGTH], "1000");
        assert_eq!(full.headers[header::ETAG], TAG);
        let part = p(Conditions {
            range: Some("bytes=10-19"),
            ..Default::default()
        });
        assert_eq!(
            (part.status, part.start, part.count, part.full),
            (StatusCode::PARTIAL_CONTENT, 10, 10, false)
        );
        assert_eq!(part.headers[header::CONTENT_RANGE], "bytes 10-19/1000");
        let tail = p(Conditions {
            range: Some("bytes=-5"),
            ..Default::default()
        });
        assert_eq!((tail.start, tail.count), (995, 5));
        let bad = p(Conditions {
            range: Some("bytes=1000-"),
            ..Default::default()
        });
        assert_eq!((bad.status, bad.count), (StatusCode::RANGE_NOT_SATISFIABLE, 0));
        assert_eq!(bad.headers[header::CONTENT_RANGE], "bytes */1000");
    }

    #[test]
    fn validators() {
        let hit = p(Conditions {
            if_none_match: Some("\"x\", \"a-b\""),
            range: Some("bytes=0-0"),
            ..Default::default()
        });
        assert_eq!((hit.status, hit.count), (StatusCode::NOT_MODIFIED, 0));
        // A stale If-Range turns a Range request into the whole body.
        let stale = p(Conditions {
            range: Some("bytes=0-0"),
            if_range: Some("\"old\""),
            ..Default::default()
        });
        assert_eq!((stale.status, stale.count), (StatusCode::OK, 1000));
    }
}
