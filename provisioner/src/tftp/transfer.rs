//! One read transfer: its own socket connected to the client (a new TID, RFC 1350 §4;
//! the kernel then drops datagrams from any other endpoint), the pure
//! [`Sender`] deciding what to send, and one timer.
//!
//! Hot path, per block: `writev` of the 4-byte header and a slice of the cached file
//! (no copy into a packet buffer), then one `recv` when the reactor reports the ACK.
//! Nothing is allocated per block, and the timer is not re-armed per ACK: it fires at
//! the deadline it was set for and is pushed back only then, to `last send + timeout`
//! (one re-arm per timeout period in a healthy transfer). A window of several blocks
//! (RFC 7440) leaves in one `sendmmsg` per [`BATCH`] blocks.

use std::io::{self, IoSlice};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::rc::Rc;
use std::time::Duration;

use nix::sys::socket::{ControlMessage, MsgFlags, MultiHeaders, SockaddrStorage, sendmmsg};
use provisioner_core::tftp::packet::{self, Reply};
use provisioner_core::tftp::session::{AckOutcome, Negotiated, Sender};
use tokio::io::Interest;
use tokio::net::UdpSocket as TokioUdp;
use tokio::time::Instant;

use super::Source;
use super::server::{Ctx, Session};

/// Blocks per `sendmmsg`; headers and iovecs for a batch live on the stack.
const BATCH: usize = 16;

/// A connected, non-blocking socket for one transfer. The send buffer must hold a
/// whole window (a large blksize × windowsize exceeds the default).
pub(super) fn socket(local: IpAddr, peer: SocketAddr, agreed: &Negotiated) -> io::Result<TokioUdp> {
    let s = UdpSocket::bind(SocketAddr::new(local, 0))?;
    s.connect(peer)?;
    s.set_nonblocking(true)?;
    let window_bytes = usize::from(agreed.window) * (usize::from(agreed.blksize) + 64);
    if window_bytes > 128 * 1024 {
        let _ = nix::sys::socket::setsockopt(&s, nix::sys::socket::sockopt::SndBuf, &window_bytes);
    }
    TokioUdp::from_std(s)
}

/// How a transfer ended (a label of `provisioner_tftp_transfers_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Completed,
    TimedOut,
    PeerError,
    PeerGone,
}

pub(super) struct Transfer {
    pub(super) sock: TokioUdp,
    pub(super) source: Source,
    pub(super) agreed: Negotiated,
    pub(super) peer: SocketAddr,
    pub(super) path: String,
    pub(super) ctx: Rc<Ctx>,
    pub(super) _session: Session,
}

impl Transfer {
    pub(super) async fn run(self) {
        let len = self.source.len();
        let end = self.transfer().await;
        let label = match end {
            End::Completed => "completed",
            End::TimedOut => "timed_out",
            End::PeerError => "peer_error",
            End::PeerGone => "peer_gone",
        };
        metrics::counter!("provisioner_tftp_transfers_total", "result" => label).increment(1);
        if end == End::Completed {
            let _ = self.ctx.done.send((self.peer, self.path.clone(), len));
        } else {
            tracing::debug!(client = %self.peer, path = %self.path, result = label, "tftp transfer ended");
        }
    }

    async fn transfer(&self) -> End {
        let mut s = Sender::new(self.source.len(), &self.agreed);
        // The OACK is built once; a file read block by block gets one buffer.
        let mut oack = Vec::new();
        if let Some(acked) = self.agreed.oack {
            let pairs: Vec<_> = acked.pairs().collect();
            packet::write_oack(&mut oack, &pairs);
        }
        let mut block = match self.source {
            Source::File { .. } => vec![0u8; usize::from(self.agreed.blksize)],
            Source::Memory(_) => Vec::new(),
        };
        // The mmsghdr array for windows, allocated once per transfer.
        let mut batch =
            (self.agreed.window > 1).then(|| MultiHeaders::<SockaddrStorage>::preallocate(BATCH, None));
        let mut buf = [0u8; 1024];
        let timeout = Duration::from_secs(u64::from(self.agreed.timeout_secs));
        let max_retries = self.ctx.tuning.max_send_retries;
        let mut retries = 0u32;
        // One fast retransmission per acknowledged block when a windowed client
        // repeats its ACK (it lost the block after it, RFC 7440 §4).
        let mut fast_retry_at = None;

        if self.send(&mut s, &oack, &mut block, &mut batch).await.is_err() {
            return End::PeerGone;
        }
        let mut last_send = Instant::now();
        let timer = tokio::time::sleep_until(last_send + timeout);
        tokio::pin!(timer);
        loop {
            tokio::select! {
                biased;
                ready = self.sock.readable() => {
                    if ready.is_err() {
                        return End::PeerGone;
                    }
                    let n = match self.sock.try_recv(&mut buf) {
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                        // ICMP port unreachable: the client is gone.
                        Err(_) => return End::PeerGone,
                    };
                    match packet::parse_reply(&buf[..n]) {
                        Reply::Ack(b) => match s.on_ack(b) {
                            AckOutcome::Done => return End::Completed,
                            AckOutcome::Advanced => {
                                // The ACK was the one datagram we waited for; skip the
                                // `recv` that would only return EAGAIN. A datagram that
                                // arrives later raises a new edge (every arrival does).
                                self.clear_readable();
                                retries = 0;
                            }
                            AckOutcome::Duplicate
                                if self.agreed.window > 1 && fast_retry_at != Some(s.acked()) =>
                            {
                                fast_retry_at = Some(s.acked());
                                metrics::counter!("provisioner_tftp_retransmits_total").increment(1);
                                retries += 1;
                                if retries > max_retries {
                                    return End::TimedOut;
                                }
                            }
                            AckOutcome::Duplicate | AckOutcome::Stale => continue,
                        },
                        // RFC 1350 §7: an ERROR ends the transfer, unanswered (e.g. a
                        // firmware that only wanted the tsize, RFC 2349).
                        Reply::Error(..) => return End::PeerError,
                        Reply::Other => continue,
                    }
                    if self.send(&mut s, &oack, &mut block, &mut batch).await.is_err() {
                        return End::PeerGone;
                    }
                    last_send = Instant::now();
                }
                () = &mut timer => {
                    let deadline = last_send + timeout;
                    if Instant::now() < deadline {
                        timer.as_mut().reset(deadline);
                        continue;
                    }
                    retries += 1;
                    if retries > max_retries {
                        return End::TimedOut;
                    }
                    metrics::counter!("provisioner_tftp_retransmits_total").increment(1);
                    if self.send(&mut s, &oack, &mut block, &mut batch).await.is_err() {
                        return End::PeerGone;
                    }
                    last_send = Instant::now();
                    timer.as_mut().reset(last_send + timeout);
                }
            }
        }
    }

    /// Sends what the transfer owes now: the OACK while it is unacknowledged, else the
    /// current window.
    async fn send(
        &self,
        s: &mut Sender,
        oack: &[u8],
        block: &mut [u8],
        batch: &mut Option<MultiHeaders<SockaddrStorage>>,
    ) -> io::Result<()> {
        if s.oack_pending() {
            return self.send_iov(&[IoSlice::new(oack)]).await;
        }
        let blocks = s.to_send();
        let (mut first, last) = (*blocks.start(), *blocks.end());
        while first <= last {
            match (&self.source, batch.as_mut()) {
                (Source::Memory(bytes), Some(batch)) if first < last => {
                    let n = (last - first + 1).min(BATCH as u64) as usize;
                    let mut headers = [[0u8; 4]; BATCH];
                    for (i, h) in headers.iter_mut().enumerate().take(n) {
                        *h = packet::data_header(Sender::wire(first + i as u64));
                    }
                    let mut iov = [[IoSlice::new(&[]), IoSlice::new(&[])]; BATCH];
                    for (i, (v, h)) in iov.iter_mut().zip(&headers).enumerate().take(n) {
                        let r = s.range(first + i as u64);
                        *v = [
                            IoSlice::new(h),
                            IoSlice::new(&bytes[r.start as usize..r.end as usize]),
                        ];
                    }
                    first += self.send_batch(batch, &iov[..n]).await? as u64;
                }
                (Source::Memory(bytes), _) => {
                    let r = s.range(first);
                    let header = packet::data_header(Sender::wire(first));
                    let data = &bytes[r.start as usize..r.end as usize];
                    self.send_iov(&[IoSlice::new(&header), IoSlice::new(data)])
                        .await?;
                    first += 1;
                }
                (Source::File { file, .. }, _) => {
                    let r = s.range(first);
                    let header = packet::data_header(Sender::wire(first));
                    let want = (r.end - r.start) as usize;
                    let got = file.read_at(&mut block[..want], r.start)?;
                    self.send_iov(&[IoSlice::new(&header), IoSlice::new(&block[..got])])
                        .await?;
                    first += 1;
                }
            }
        }
        Ok(())
    }

    /// Several datagrams in one `sendmmsg`; returns how many left (at least one).
    async fn send_batch(
        &self,
        batch: &mut MultiHeaders<SockaddrStorage>,
        iov: &[[IoSlice<'_>; 2]],
    ) -> io::Result<usize> {
        // The socket is connected: no per-message address.
        let addrs = [None::<SockaddrStorage>; BATCH];
        let none: [ControlMessage<'_>; 0] = [];
        loop {
            let fd = self.sock.as_raw_fd();
            match sendmmsg(fd, batch, iov, &addrs[..iov.len()], none, MsgFlags::empty()) {
                Ok(sent) => {
                    let n = sent.count();
                    if n > 0 {
                        return Ok(n);
                    }
                }
                Err(nix::errno::Errno::EAGAIN) => self.wait_writable().await?,
                Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Waits until the send buffer has room again. tokio did not see our EAGAIN:
    /// clear its (stale) writable flag first, or `writable()` would return at once.
    async fn wait_writable(&self) -> io::Result<()> {
        let _ = self.sock.try_io(Interest::WRITABLE, || {
            Err::<(), _>(io::ErrorKind::WouldBlock.into())
        });
        self.sock.writable().await
    }

    /// Forgets tokio's readable flag without a syscall: a closure that reports
    /// WouldBlock makes `try_io` clear it (only if no newer event arrived meanwhile).
    fn clear_readable(&self) {
        let _ = self.sock.try_io(Interest::READABLE, || {
            Err::<(), _>(io::ErrorKind::WouldBlock.into())
        });
    }

    /// One datagram from gathered slices. UDP sends rarely block, so try first and wait
    /// for writability only when the send buffer is full.
    async fn send_iov(&self, iov: &[IoSlice<'_>]) -> io::Result<()> {
        loop {
            match nix::sys::uio::writev(&self.sock, iov) {
                Ok(_) => return Ok(()),
                Err(nix::errno::Errno::EAGAIN) => {
                    // tokio did not see this EAGAIN: clear its (stale) writable flag
                    // first, or `writable()` would return at once.
                    let _ = self.sock.try_io(Interest::WRITABLE, || {
                        Err::<(), _>(io::ErrorKind::WouldBlock.into())
                    });
                    self.sock.writable().await?;
                }
                Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
}
