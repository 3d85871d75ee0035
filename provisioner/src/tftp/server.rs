//! The TFTP loop: async-tftp on an already-bound socket, stopped by the shutdown token.

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_tftp::packet;
use async_tftp::server::{Handler, TftpServerBuilder};
use futures_lite::io::{AsyncRead, Cursor, Sink};
use tokio_util::sync::CancellationToken;

use super::settings::TftpTuning;
use super::{Refusal, TftpFiles, sanitize};

/// The TFTP server could not run.
#[derive(Debug, thiserror::Error)]
pub enum TftpError {
    /// async-tftp failed to start or its socket failed.
    #[error("tftp: {0}")]
    Engine(String),
}

/// Serves `files` on `socket` until `shutdown` is cancelled.
///
/// The engine runs on its own OS thread under `async_io::block_on`: async-tftp waits
/// for I/O with async-io's reactor, and polled from a tokio worker every ACK would
/// cross two threads (async-io's reactor thread waking a tokio worker). On its own
/// thread the engine drives the reactor itself: measured in tests/bench/ as 1 context
/// switch per block instead of about 3, and less than half the CPU per transfer.
/// The thread enters the tokio runtime so completion hooks can spawn tokio tasks.
pub async fn serve(
    socket: UdpSocket,
    files: Arc<dyn TftpFiles>,
    tuning: &TftpTuning,
    shutdown: CancellationToken,
) -> Result<(), TftpError> {
    let tuning = tuning.clone();
    let handle = tokio::runtime::Handle::current();
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("tftp".into())
        .spawn(move || {
            let _rt = handle.enter();
            let r = async_io::block_on(async move {
                let server = TftpServerBuilder::with_handler(Adapter { files })
                    .std_socket(socket)
                    .map_err(|e| TftpError::Engine(e.to_string()))?
                    .block_size_limit(tuning.block_size_limit)
                    .window_size_limit(tuning.window_size_limit)
                    .timeout(Duration::from_secs(tuning.timeout_secs))
                    .max_send_retries(tuning.max_send_retries)
                    .build()
                    .await
                    .map_err(|e| TftpError::Engine(e.to_string()))?;
                // async-tftp has no graceful shutdown: dropping the future stops it
                // (in-flight transfers end; clients retry).
                futures_lite::future::or(
                    async { server.serve().await.map_err(|e| TftpError::Engine(e.to_string())) },
                    async {
                        shutdown.cancelled().await;
                        Ok(())
                    },
                )
                .await
            });
            let _ = tx.send(r);
        })
        .map_err(|e| TftpError::Engine(e.to_string()))?;
    rx.await.unwrap_or(Ok(()))
}

struct Adapter {
    files: Arc<dyn TftpFiles>,
}

impl Handler for Adapter {
    type Reader = Completion;
    type Writer = Sink;

    async fn read_req_open(
        &mut self,
        client: &SocketAddr,
        path: &Path,
    ) -> Result<(Self::Reader, Option<u64>), packet::Error> {
        let raw = path.to_string_lossy();
        let result = sanitize(&raw).and_then(|p| self.files.open(*client, &p).map(|b| (p, b)));
        match result {
            Ok((path, bytes)) => {
                metrics::counter!("provisioner_tftp_requests_total", "result" => "ok").increment(1);
                let len = bytes.len() as u64;
                Ok((
                    Completion {
                        inner: Cursor::new(bytes),
                        done: Some((self.files.clone(), *client, path)),
                        len,
                    },
                    Some(len),
                ))
            }
            Err(r) => {
                let label = match r {
                    Refusal::NotFound => "not_found",
                    Refusal::Denied(_) => "denied",
                };
                metrics::counter!("provisioner_tftp_requests_total", "result" => label).increment(1);
                tracing::info!(client = %client, path = %raw.escape_debug(), reason = %r, "tftp request refused");
                Err(match r {
                    Refusal::NotFound => packet::Error::FileNotFound,
                    Refusal::Denied(_) => packet::Error::PermissionDenied,
                })
            }
        }
    }

    async fn write_req_open(
        &mut self,
        client: &SocketAddr,
        _path: &Path,
        _size: Option<u64>,
    ) -> Result<Self::Writer, packet::Error> {
        metrics::counter!("provisioner_tftp_requests_total", "result" => "write_refused").increment(1);
        tracing::info!(client = %client, "tftp write request refused (read-only server)");
        Err(packet::Error::IllegalOperation)
    }
}

/// A reader over the file bytes that reports completion once it reaches the end:
/// an aborted `tsize` probe never reads to the end, so it is not counted as served.
struct Completion {
    inner: Cursor<Arc<[u8]>>,
    done: Option<(Arc<dyn TftpFiles>, SocketAddr, String)>,
    len: u64,
}

impl AsyncRead for Completion {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(0)) = r
            && !buf.is_empty()
            && let Some((files, client, path)) = self.done.take()
        {
            metrics::counter!("provisioner_tftp_bytes_total").increment(self.len);
            files.completed(client, &path, self.len);
        }
        r
    }
}
