//! Zero-copy answers for large cached files on the boot listener (issue 16, item 6):
//! the accept loop ([`super::serve`]) parses each request head itself (httparse, the
//! parser hyper uses); a `GET`/`HEAD` without a body for a file an [`AssetResolver`]
//! maps and that is at least [`MIN_BYTES`] long is answered here: the head with one
//! `send(MSG_MORE)` (so it leaves in the first body segment, like nginx's
//! `tcp_nopush`), the body with `sendfile(2)` straight from the page cache to the
//! socket, driven by tokio's write readiness. Everything else (small files, other
//! routes, a head we do not fully understand) goes to hyper/axum with the bytes
//! already read replayed, so the routes and their answers stay one code path.
//! Statuses and headers come from [`super::assets::plan`], shared with the hyper
//! route. Counted in `provisioner_http_sendfile_responses_total` and
//! `provisioner_http_sendfile_bytes_total`.

use std::fs::File;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd};
use std::path::PathBuf;
use std::time::Duration;

use axum::http::StatusCode;
use bytes::{Buf, BytesMut};
use nix::sys::socket::{MsgFlags, send};
use tokio::io::{AsyncReadExt, Interest};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use super::assets::{Conditions, etag, plan};
use super::limits::refused;

/// Files at least this long go out with `sendfile`; smaller ones (iPXE scripts,
/// binaries, the test initrd) through hyper, where a copy costs nothing that matters.
pub const MIN_BYTES: u64 = 1024 * 1024;

/// Longest request head read before giving the connection to hyper (which applies
/// its own limit and error).
const MAX_HEAD: usize = 8 * 1024;

/// A file the zero-copy path may send, and what to do once its whole body left.
pub struct Resolved {
    /// The file to send.
    pub path: PathBuf,
    /// Route template, for `provisioner_http_requests_total` (as `observe` counts).
    pub route: &'static str,
    /// Runs with the byte count after a full `GET` body went out.
    pub on_done: Option<Box<dyn FnOnce(u64) + Send>>,
}

impl std::fmt::Debug for Resolved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolved")
            .field("path", &self.path)
            .field("route", &self.route)
            .finish_non_exhaustive()
    }
}

/// Maps a request path (percent-free, query removed) to a cached file, with the
/// same rules as the hyper route that would otherwise answer it.
pub trait AssetResolver: Send + Sync {
    /// `None`: not ours, hyper answers.
    fn resolve(&self, path: &str, peer: SocketAddr) -> Option<Resolved>;
}

/// A request head the zero-copy path can answer on its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// `HEAD` rather than `GET`.
    pub head_only: bool,
    /// The path without its query.
    pub path: String,
    /// Whether the connection stays open after the response (RFC 9112 §9.3).
    pub keep_alive: bool,
    /// `If-None-Match`, `Range`, `If-Range`.
    pub if_none_match: Option<String>,
    /// `Range`.
    pub range: Option<String>,
    /// `If-Range`.
    pub if_range: Option<String>,
    /// Bytes of the head, CRLFCRLF included.
    pub len: usize,
}

/// What a buffer holds.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// Not a whole head yet.
    Partial,
    /// A whole head the zero-copy path may answer.
    Simple(Head),
    /// Anything else: hyper decides (other methods, a body, `%`-escapes, bad syntax).
    Other,
}

/// Parses the request head at the start of `buf` (RFC 9112 §2-3).
pub fn parse_head(buf: &[u8]) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::Other,
    };
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        return Parsed::Other;
    };
    let head_only = match method {
        "GET" => false,
        "HEAD" => true,
        _ => return Parsed::Other,
    };
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    if !path.starts_with('/') || path.contains('%') {
        return Parsed::Other;
    }
    let mut out = Head {
        head_only,
        path: path.to_string(),
        keep_alive: version == 1,
        if_none_match: None,
        range: None,
        if_range: None,
        len,
    };
    for h in req.headers.iter() {
        let Ok(v) = std::str::from_utf8(h.value) else {
            return Parsed::Other;
        };
        let name = h.name.to_ascii_lowercase();
        match name.as_str() {
            // A body, or framing we would have to read past: hyper's job.
            "transfer-encoding" => return Parsed::Other,
            "content-length" if v.trim() != "0" => return Parsed::Other,
            "connection" => {
                for token in v.split(',').map(str::trim) {
                    if token.eq_ignore_ascii_case("close") {
                        out.keep_alive = false;
                    } else if token.eq_ignore_ascii_case("keep-alive") && version == 0 {
                        out.keep_alive = true;
                    }
                }
            }
            "if-none-match" => out.if_none_match = Some(v.to_string()),
            "range" if out.range.is_none() => out.range = Some(v.to_string()),
            "if-range" => out.if_range = Some(v.to_string()),
            _ => {}
        }
    }
    Parsed::Simple(out)
}

/// The outcome of waiting for the next request head on a connection.
#[derive(Debug)]
pub enum NextHead {
    /// The peer closed, the header-read timeout passed (counted) or shutdown began.
    Closed,
    /// Hand the connection, with `buf`, to hyper.
    Hyper,
    /// A whole simple head at the start of `buf`.
    Simple(Head),
}

/// Reads until `buf` holds a whole request head, within `timeout` (the listener's
/// header-read timeout, which also bounds an idle keep-alive connection).
pub async fn next_head(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    timeout: Duration,
    shutdown: &CancellationToken,
) -> NextHead {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match parse_head(buf) {
            Parsed::Simple(h) => return NextHead::Simple(h),
            Parsed::Other => return NextHead::Hyper,
            Parsed::Partial if buf.len() >= MAX_HEAD => return NextHead::Hyper,
            Parsed::Partial => {}
        }
        buf.reserve(4096);
        tokio::select! {
            () = shutdown.cancelled(), if buf.is_empty() => return NextHead::Closed,
            () = tokio::time::sleep_until(deadline) => {
                refused("header_timeout");
                return NextHead::Closed;
            }
            r = stream.read_buf(buf) => match r {
                Ok(0) | Err(_) => return NextHead::Closed,
                Ok(_) => {}
            },
        }
    }
}

/// Opens `r.path` if it is a regular file of at least [`MIN_BYTES`].
pub fn open_large(r: &Resolved) -> Option<(File, std::fs::Metadata)> {
    let file = File::open(&r.path).ok()?;
    let meta = file.metadata().ok()?;
    (meta.is_file() && meta.len() >= MIN_BYTES).then_some((file, meta))
}

/// Answers `head` from `file`; `Ok(true)` when the connection may carry another
/// request. No byte moving for `idle` closes it (counted as `idle_timeout`).
pub async fn respond(
    stream: &TcpStream,
    head: &Head,
    file: File,
    meta: &std::fs::Metadata,
    resolved: Resolved,
    idle: Duration,
) -> io::Result<bool> {
    let cond = Conditions {
        if_none_match: head.if_none_match.as_deref(),
        range: head.range.as_deref(),
        if_range: head.if_range.as_deref(),
    };
    let p = plan(meta.len(), &etag(meta), &cond);
    let body = if head.head_only { 0 } else { p.count };
    let mut out = format!(
        "HTTP/1.1 {}\r\ndate: {}\r\n",
        p.status,
        httpdate::fmt_http_date(std::time::SystemTime::now())
    );
    for (k, v) in &p.headers {
        out.push_str(k.as_str());
        out.push_str(": ");
        out.push_str(v.to_str().unwrap_or_default());
        out.push_str("\r\n");
    }
    out.push_str(if head.keep_alive {
        "\r\n"
    } else {
        "connection: close\r\n\r\n"
    });
    let status = p.status.as_u16().to_string();
    metrics::counter!("provisioner_http_requests_total", "route" => resolved.route, "status" => status)
        .increment(1);
    // nix 0.32 names no MSG_MORE (send(2): "the caller has more data to send"),
    // hence the raw bit.
    let more = if body > 0 {
        MsgFlags::from_bits_retain(nix::libc::MSG_MORE)
    } else {
        MsgFlags::empty()
    };
    let mut head_buf = out.as_bytes();
    while !head_buf.is_empty() {
        let n = with_idle(
            idle,
            stream.async_io(Interest::WRITABLE, || {
                send(stream.as_raw_fd(), head_buf, more).map_err(io::Error::from)
            }),
        )
        .await?;
        head_buf.advance(n);
    }
    if body > 0 {
        send_body(stream, &file, p.start, body, idle).await?;
        metrics::counter!("provisioner_http_sendfile_responses_total").increment(1);
        if p.full
            && p.status == StatusCode::OK
            && let Some(f) = resolved.on_done
        {
            f(body);
        }
    }
    Ok(head.keep_alive)
}

/// `sendfile(2)` of `count` bytes from `start`, each call as much as the socket
/// buffer takes; the kernel copies page-cache pages into the socket, no user-space
/// buffer is involved.
async fn send_body(
    stream: &TcpStream,
    file: &File,
    start: u64,
    count: u64,
    idle: Duration,
) -> io::Result<()> {
    let mut offset = i64::try_from(start).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let mut left = count;
    while left > 0 {
        // Linux sends at most 0x7ffff000 bytes per call (sendfile(2), NOTES).
        let chunk = left.min(0x7fff_f000) as usize;
        let n = with_idle(
            idle,
            stream.async_io(Interest::WRITABLE, || {
                nix::sys::sendfile::sendfile64(stream.as_fd(), file.as_fd(), Some(&mut offset), chunk)
                    .map_err(io::Error::from)
            }),
        )
        .await?;
        if n == 0 {
            // The file shrank under us: the promised length cannot be kept.
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        left -= n as u64;
        metrics::counter!("provisioner_http_sendfile_bytes_total").increment(n as u64);
        metrics::counter!("provisioner_http_bytes_total").increment(n as u64);
    }
    Ok(())
}

async fn with_idle<T>(idle: Duration, f: impl Future<Output = io::Result<T>>) -> io::Result<T> {
    match tokio::time::timeout(idle, f).await {
        Ok(r) => r,
        Err(_) => {
            refused("idle_timeout");
            Err(io::ErrorKind::TimedOut.into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn simple(b: &[u8]) -> Head {
        match parse_head(b) {
            Parsed::Simple(h) => h,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn heads() {
        let h = simple(
            b"GET /assets/a/k?x=1 HTTP/1.1\r\nHost: x\r\nRange: bytes=0-9\r\nIf-None-Match: \"t\"\r\n\r\nGET",
        );
        assert_eq!(h.path, "/assets/a/k");
        assert!(h.keep_alive && !h.head_only);
        assert_eq!(h.range.as_deref(), Some("bytes=0-9"));
        assert_eq!(h.if_none_match.as_deref(), Some("\"t\""));
        assert_eq!(h.len, 79, "the head ends before the next request");
        assert!(simple(b"HEAD / HTTP/1.1\r\nConnection: close\r\n\r\n").head_only);
        assert!(!simple(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n").keep_alive);
        assert!(!simple(b"GET / HTTP/1.0\r\n\r\n").keep_alive);
        assert!(simple(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive);
        assert!(simple(b"GET / HTTP/1.1\r\nContent-Length: 0\r\n\r\n").keep_alive);
    }

    #[test]
    fn the_rest_goes_to_hyper() {
        assert_eq!(parse_head(b"GET /assets/a HTTP/1.1\r\nHost"), Parsed::Partial);
        for other in [
            &b"POST /x HTTP/1.1\r\n\r\n"[..],
            b"GET /a%2fb HTTP/1.1\r\n\r\n",
            b"GET /x HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
            b"GET /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"GET * HTTP/1.1\r\n\r\n",
            b"\x00\x01garbage\r\n\r\n",
        ] {
            assert_eq!(
                parse_head(other),
                Parsed::Other,
                "{}",
                String::from_utf8_lossy(other)
            );
        }
    }
}
