//! The request side: one thread with its own current-thread tokio runtime reads RRQs
//! from the already-bound socket, applies the session caps and starts one transfer
//! task per accepted request, until the shutdown token is cancelled.
//!
//! Why a thread of its own: every block of a lock-step transfer is a wake-up; on one
//! thread that owns its reactor, the ACK's wake-up runs the transfer on the thread that
//! saw it, with no cross-thread hand-off (tests/bench/README.md measured the hand-off
//! as the main cost of the old engine).

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::rc::Rc;
use std::sync::Arc;

use provisioner_core::tftp::packet::{self, ErrorCode};
use provisioner_core::tftp::session::{Limits, negotiate};
use tokio_util::sync::CancellationToken;

use super::settings::TftpTuning;
use super::transfer::{self, Transfer};
use super::{Refusal, TftpFiles, sanitize};

/// The TFTP server could not run.
#[derive(Debug, thiserror::Error)]
pub enum TftpError {
    /// The engine's thread, runtime or request socket failed.
    #[error("tftp: {0}")]
    Engine(String),
}

fn engine(e: impl std::fmt::Display) -> TftpError {
    TftpError::Engine(e.to_string())
}

/// A finished transfer, handed to the caller's runtime for the completion hook.
pub(super) type Done = (SocketAddr, String, u64);

/// Serves `files` on `socket` until `shutdown` is cancelled.
pub async fn serve(
    socket: UdpSocket,
    files: Arc<dyn TftpFiles>,
    tuning: &TftpTuning,
    shutdown: CancellationToken,
) -> Result<(), TftpError> {
    socket.set_nonblocking(true).map_err(engine)?;
    // Transfers answer from the address the request socket is bound to (with
    // 0.0.0.0, the kernel picks the source by route).
    let local = socket.local_addr().map_err(engine)?.ip();
    size_receive_buffer(&socket, tuning.recv_buffer_bytes);
    raise_fd_limit(u64::from(tuning.max_sessions) + 256);
    // Completions go back to the caller's runtime, where the hook writes the timeline.
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<Done>();
    let hook_files = files.clone();
    let hooks = tokio::spawn(async move {
        while let Some((client, path, bytes)) = done_rx.recv().await {
            metrics::counter!("provisioner_tftp_bytes_total").increment(bytes);
            hook_files.completed(client, &path, bytes);
        }
    });
    let tuning = tuning.clone();
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("tftp".into())
        .spawn(move || {
            let r = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(engine)
                .and_then(|rt| {
                    let set = tokio::task::LocalSet::new();
                    set.block_on(&rt, async move {
                        let sock = tokio::net::UdpSocket::from_std(socket).map_err(engine)?;
                        let ctx = Rc::new(Ctx::new(files, tuning, local, done_tx));
                        tokio::select! {
                            r = listen(&sock, &ctx) => r,
                            () = shutdown.cancelled() => Ok(()),
                        }
                    })
                });
            let _ = tx.send(r);
        })
        .map_err(engine)?;
    let r = rx
        .await
        .unwrap_or_else(|_| Err(TftpError::Engine("the engine thread panicked".into())));
    let _ = hooks.await;
    r
}

/// A storm of RRQs arrives faster than one thread answers it; the kernel queues them
/// only up to SO_RCVBUF. Root may exceed `net.core.rmem_max` (SO_RCVBUFFORCE).
fn size_receive_buffer(socket: &UdpSocket, bytes: u32) {
    use nix::sys::socket::{getsockopt, setsockopt, sockopt};
    let n = bytes as usize;
    if setsockopt(socket, sockopt::RcvBufForce, &n).is_err() {
        let _ = setsockopt(socket, sockopt::RcvBuf, &n);
    }
    // The kernel doubles the value for its bookkeeping and reports the doubled size.
    let got = getsockopt(socket, sockopt::RcvBuf).unwrap_or(0) / 2;
    if got < n {
        tracing::warn!(wanted = n, got, "TFTP receive buffer capped by net.core.rmem_max");
    }
}

/// Each transfer holds one socket: let the session cap, not the default soft limit of
/// 1024 descriptors, decide how many run at once.
fn raise_fd_limit(want: u64) {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < want
    {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, want.min(hard), hard);
    }
}

/// State shared by the listener and the transfers (one thread: `Rc`/`RefCell`).
pub(super) struct Ctx {
    pub(super) files: Arc<dyn TftpFiles>,
    pub(super) tuning: TftpTuning,
    limits: Limits,
    local: IpAddr,
    pub(super) done: tokio::sync::mpsc::UnboundedSender<Done>,
    sessions: RefCell<Sessions>,
}

#[derive(Default)]
struct Sessions {
    total: u32,
    per_ip: HashMap<IpAddr, u32>,
    /// Client endpoints with a transfer running: a retransmitted RRQ (its first answer
    /// was slow or lost) must not start a second transfer; ours retransmits anyway.
    peers: HashSet<SocketAddr>,
}

impl Ctx {
    fn new(
        files: Arc<dyn TftpFiles>,
        tuning: TftpTuning,
        local: IpAddr,
        done: tokio::sync::mpsc::UnboundedSender<Done>,
    ) -> Self {
        let limits = Limits {
            max_blksize: tuning.block_size_limit,
            max_window: tuning.window_size_limit,
            default_timeout_secs: tuning.timeout_secs,
            max_timeout_secs: tuning.max_timeout_secs,
        };
        Self {
            files,
            tuning,
            limits,
            local,
            done,
            sessions: RefCell::default(),
        }
    }
}

/// Holds one session's place under the caps; dropping it gives the place back.
pub(super) struct Session {
    ctx: Rc<Ctx>,
    peer: SocketAddr,
}

impl Drop for Session {
    fn drop(&mut self) {
        let mut s = self.ctx.sessions.borrow_mut();
        s.total -= 1;
        s.peers.remove(&self.peer);
        if let Some(n) = s.per_ip.get_mut(&self.peer.ip()) {
            *n -= 1;
            if *n == 0 {
                s.per_ip.remove(&self.peer.ip());
            }
        }
        metrics::gauge!("provisioner_tftp_sessions").set(f64::from(s.total));
    }
}

/// Why a request got no session.
enum Busy {
    Duplicate,
    Global,
    PerIp,
}

fn admit(ctx: &Rc<Ctx>, peer: SocketAddr) -> Result<Session, Busy> {
    let mut s = ctx.sessions.borrow_mut();
    if s.peers.contains(&peer) {
        return Err(Busy::Duplicate);
    }
    if s.total >= ctx.tuning.max_sessions {
        return Err(Busy::Global);
    }
    if s.per_ip.get(&peer.ip()).copied().unwrap_or(0) >= ctx.tuning.max_sessions_per_ip {
        return Err(Busy::PerIp);
    }
    *s.per_ip.entry(peer.ip()).or_default() += 1;
    s.total += 1;
    s.peers.insert(peer);
    metrics::gauge!("provisioner_tftp_sessions").set(f64::from(s.total));
    Ok(Session {
        ctx: ctx.clone(),
        peer,
    })
}

/// Reads requests until the socket fails; drains every queued datagram per wake-up.
async fn listen(sock: &tokio::net::UdpSocket, ctx: &Rc<Ctx>) -> Result<(), TftpError> {
    let mut buf = vec![0u8; 2048];
    let mut out = Vec::with_capacity(600);
    loop {
        sock.readable().await.map_err(engine)?;
        loop {
            match sock.try_recv_from(&mut buf) {
                Ok((n, peer)) => request(sock, ctx, &buf[..n], peer, &mut out),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                // ICMP errors for earlier replies surface here; the socket is fine.
                Err(e) => tracing::debug!(error = %e, "tftp request socket"),
            }
        }
    }
}

fn count(result: &'static str) {
    metrics::counter!("provisioner_tftp_requests_total", "result" => result).increment(1);
}

/// Answers one request datagram: an ERROR from the request socket, or a transfer.
fn request(sock: &tokio::net::UdpSocket, ctx: &Rc<Ctx>, dgram: &[u8], peer: SocketAddr, out: &mut Vec<u8>) {
    let refuse = |out: &mut Vec<u8>, code, msg: &str| {
        packet::write_error(out, code, msg);
        let _ = sock.try_send_to(out, peer);
    };
    let req = match packet::parse_request(dgram) {
        Ok(r) => r,
        Err(e) => {
            // Bad input is dropped and counted, never answered (no reflection).
            metrics::counter!("provisioner_tftp_malformed_total").increment(1);
            tracing::debug!(client = %peer, error = %e, "malformed tftp request dropped");
            return;
        }
    };
    if req.write {
        count("write_refused");
        tracing::info!(client = %peer, "tftp write request refused (read-only server)");
        return refuse(out, ErrorCode::IllegalOperation, "read-only server");
    }
    let session = match admit(ctx, peer) {
        Ok(s) => s,
        Err(Busy::Duplicate) => {
            metrics::counter!("provisioner_tftp_duplicate_requests_total").increment(1);
            return;
        }
        Err(busy) => {
            let cap = if matches!(busy, Busy::Global) {
                "global"
            } else {
                "per_ip"
            };
            count("busy");
            metrics::counter!("provisioner_tftp_sessions_refused_total", "cap" => cap).increment(1);
            tracing::warn!(client = %peer, cap, "tftp session cap reached, request refused");
            return refuse(out, ErrorCode::NotDefined, "server busy, too many transfers");
        }
    };
    let opened = sanitize(req.filename).and_then(|p| ctx.files.open(peer, &p).map(|s| (p, s)));
    let (path, source) = match opened {
        Ok(x) => x,
        Err(r) => {
            let (label, code) = match r {
                Refusal::NotFound => ("not_found", ErrorCode::FileNotFound),
                Refusal::Denied(_) => ("denied", ErrorCode::AccessViolation),
            };
            count(label);
            tracing::info!(client = %peer, path = %req.filename.escape_debug(), reason = %r, "tftp request refused");
            return refuse(out, code, &r.to_string());
        }
    };
    let agreed = negotiate(&req.options, source.len(), &ctx.limits);
    let socket = match transfer::socket(ctx.local, peer, &agreed) {
        Ok(s) => s,
        Err(e) => {
            count("socket_error");
            tracing::warn!(client = %peer, error = %e, "no socket for a tftp transfer");
            return refuse(out, ErrorCode::NotDefined, "server busy");
        }
    };
    count("ok");
    let t = Transfer {
        sock: socket,
        source,
        agreed,
        peer,
        path,
        ctx: ctx.clone(),
        _session: session,
    };
    tokio::task::spawn_local(t.run());
}
