//! The boot listener's accept loop: hyper's HTTP/1 connection builder with a timer
//! (`axum::serve` sets no header-read timeout), the connection caps of
//! [`super::limits`] checked at accept (refused connections are closed at once,
//! never queued), an idle watchdog per connection, and the per-IP rate for the
//! script and config routes. hyper 1.x restarts the header-read timer whenever a
//! keep-alive connection waits for its next request head (hyper-1.12.0
//! `src/proto/h1/conn.rs`, `poll_read_head`), so idle keep-alive connections are
//! closed after it too. Before hyper sees a connection, [`super::zerocopy`] reads
//! its request heads and answers large cached files itself with `sendfile`; the
//! first request it does not take goes to hyper with the bytes already read.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode};
use axum::response::{IntoResponse, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use bytes::{Buf, Bytes, BytesMut};

use super::limits::{ConnLimits, HttpLimits, RateLimiter, rate_limited_path, refused};
use super::zerocopy::{self, AssetResolver, NextHead};

/// Serves `router` on `listener` within `cfg`'s bounds until `shutdown`; then
/// asks open connections to finish their request and waits for them. `assets`
/// names the files the zero-copy path may send (`None`: hyper answers everything).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    cfg: HttpLimits,
    assets: Option<Arc<dyn AssetResolver>>,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let router = router.layer(tower_http::limit::RequestBodyLimitLayer::new(cfg.max_body_bytes));
    let caps = ConnLimits::new(&cfg);
    let rate = Arc::new(RateLimiter::new(cfg.script_rate_per_ip, cfg.script_burst_per_ip));
    let cfg = Arc::new(cfg);
    let mut conns = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            a = listener.accept() => a,
        };
        while conns.try_join_next().is_some() {}
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and the like: back off briefly instead of spinning.
                tracing::warn!(error = %e, "http accept failed");
                refused("accept_error");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let slot = match caps.admit(peer.ip()) {
            Ok(s) => s,
            Err(why) => {
                // Dropping the stream closes it now: no slot, no buffer, no task.
                refused(why.reason());
                continue;
            }
        };
        metrics::gauge!("provisioner_http_connections").set(caps.open(&cfg) as f64);
        let (router, rate, cfg, token) = (router.clone(), rate.clone(), cfg.clone(), shutdown.clone());
        let assets = assets.clone();
        conns.spawn(async move {
            let Some((stream, replay)) = zero_copy(stream, peer, assets.as_deref(), &cfg, &token).await
            else {
                drop(slot);
                return;
            };
            connection(stream, replay, peer, router, rate, &cfg, token).await;
            drop(slot);
        });
    }
    while conns.join_next().await.is_some() {}
    Ok(())
}

/// Answers the connection's requests for large cached files with `sendfile` until
/// one is not such a request: then returns the stream and the bytes read so far
/// for hyper, or `None` when the connection is done.
async fn zero_copy(
    mut stream: TcpStream,
    peer: SocketAddr,
    assets: Option<&dyn AssetResolver>,
    cfg: &HttpLimits,
    shutdown: &CancellationToken,
) -> Option<(TcpStream, Bytes)> {
    let Some(assets) = assets else {
        return Some((stream, Bytes::new()));
    };
    let mut buf = BytesMut::new();
    loop {
        let head = match zerocopy::next_head(&mut stream, &mut buf, cfg.header_read_timeout(), shutdown).await
        {
            NextHead::Closed => return None,
            NextHead::Hyper => return Some((stream, buf.freeze())),
            NextHead::Simple(h) => h,
        };
        let Some(resolved) = assets.resolve(&head.path, peer) else {
            return Some((stream, buf.freeze()));
        };
        let Some((file, meta)) = zerocopy::open_large(&resolved) else {
            return Some((stream, buf.freeze()));
        };
        buf.advance(head.len);
        match zerocopy::respond(&stream, &head, file, &meta, resolved, cfg.idle_timeout()).await {
            Ok(true) if !shutdown.is_cancelled() => {}
            Ok(_) => return None,
            Err(e) => {
                tracing::debug!(error = %e, %peer, "http zero-copy response");
                return None;
            }
        }
    }
}

async fn connection(
    stream: TcpStream,
    replay: Bytes,
    peer: SocketAddr,
    router: Router,
    rate: Arc<RateLimiter>,
    cfg: &HttpLimits,
    shutdown: CancellationToken,
) {
    let epoch = Instant::now();
    let activity = Arc::new(AtomicU64::new(0));
    let io = TokioIo::new(Tracked {
        inner: stream,
        replay,
        epoch,
        last: activity.clone(),
    });
    let svc = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        let (router, rate) = (router.clone(), rate.clone());
        async move {
            req.extensions_mut().insert(ConnectInfo(peer));
            if rate_limited_path(req.uri().path()) && !rate.allow(peer.ip(), Instant::now()) {
                refused("rate");
                return Ok::<_, Infallible>(too_many());
            }
            let resp = router.oneshot(req).await.unwrap_or_else(|e| match e {});
            if resp.status() == StatusCode::PAYLOAD_TOO_LARGE {
                refused("body_too_large");
            }
            Ok(resp)
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(cfg.header_read_timeout())
        .serve_connection(io, svc);
    tokio::pin!(conn);
    let idle = cfg.idle_timeout();
    let mut closing = false;
    loop {
        let last = std::time::Duration::from_millis(activity.load(Ordering::Relaxed));
        let deadline = tokio::time::Instant::from_std(epoch + last + idle);
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    if e.is_timeout() {
                        refused("header_timeout");
                    } else {
                        tracing::debug!(error = %e, %peer, "http connection");
                    }
                }
                return;
            }
            () = shutdown.cancelled(), if !closing => {
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
            () = tokio::time::sleep_until(deadline) => {
                if epoch.elapsed() >= std::time::Duration::from_millis(activity.load(Ordering::Relaxed)) + idle {
                    refused("idle_timeout");
                    return;
                }
            }
        }
    }
}

fn too_many() -> Response {
    (
        StatusCode::TOO_MANY_REQUESTS,
        [(axum::http::header::RETRY_AFTER, "1")],
        "too many requests from this address\n",
    )
        .into_response()
}

/// A stream that records when a byte last moved (milliseconds since `epoch`), for
/// the idle watchdog, and first hands out the bytes [`zero_copy`] read but did not
/// answer.
struct Tracked {
    inner: TcpStream,
    replay: Bytes,
    epoch: Instant,
    last: Arc<AtomicU64>,
}

impl Tracked {
    fn touch(&self) {
        self.last
            .store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

impl AsyncRead for Tracked {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.replay.is_empty() {
            let n = this.replay.len().min(buf.remaining());
            buf.put_slice(&this.replay.split_to(n));
            this.touch();
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.touch();
        }
        r
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, data);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.touch();
        }
        r
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
