//! The socket loops: one per bound socket (67, and 4011 for the PXE boot server).
//! Each datagram takes an in-flight slot and passes the per-MAC limit, or is
//! dropped and counted; accepted ones are answered right in the loop (the engine
//! reads leases from memory and never waits for the disk). A reply whose lease
//! writes are not durable yet goes, with its slot, to the socket's committer
//! thread, which settles it (the group commit: one fsync for all the leases queued
//! meanwhile) and only then sends it; every other reply leaves at once, with IP_PKTINFO
//! addressing. Timeline entries go to the [`Recorder`]. Shutdown: stop reading
//! when the token is cancelled, then give the committer a short deadline.
//!
//! Why not a blocking task per datagram: each ACK then parked a thread on the
//! fsync, and under perfdhcp at 4,000/s the pool grew to ~500 threads whose
//! wake-ups (futex, context switches) were most of the server's CPU (tests/bench/dhcp/README.md).

use std::io;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use provisioner_core::dhcp::reply::Port;
use provisioner_core::dhcp::v4::MessageType;
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

use super::handler::{Handled, Handler, Note, Outgoing, Recorder, dropped};
use super::limits::{Limits, raw_chaddr};
use super::socket;

/// Serves `sock` (already bound, see [`socket::bind`]) as `port` until `shutdown`.
pub async fn serve(
    sock: std::net::UdpSocket,
    port: Port,
    handler: Arc<Handler>,
    limits: Arc<Limits>,
    recorder: Recorder,
    shutdown: CancellationToken,
) -> io::Result<()> {
    sock.set_nonblocking(true)?;
    let sock = Arc::new(UdpSocket::from_std(sock)?);
    let (commits, committer) = spawn_committer(handler.clone(), sock.clone(), recorder.clone())?;
    let mut buf = vec![0u8; 65_536];
    loop {
        let recv = sock.async_io(Interest::READABLE, || socket::try_recv(&*sock, &mut buf));
        let (n, arrival) = tokio::select! {
            () = shutdown.cancelled() => break,
            r = recv => match r {
                Ok(x) => x,
                Err(e) => {
                    // ICMP errors and the like surface here; keep serving.
                    tracing::debug!(error = %e, "dhcp recv");
                    continue;
                }
            },
        };
        metrics::counter!("provisioner_dhcp_received_total", "port" => port.label()).increment(1);
        let data = &buf[..n];
        let Some(mac) = raw_chaddr(data) else {
            dropped("bad_length");
            continue;
        };
        let Some(permit) = limits.slot() else {
            dropped("overloaded");
            continue;
        };
        if !limits.allow(mac, Instant::now()) {
            dropped("rate_limited");
            continue;
        }
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let handled = handler.handle_deferred(data, port, &arrival, now);
        if handled.pending.is_empty() {
            finish(&sock, &recorder, handled.settle(&*handler.leases));
        } else if let Err(mpsc::SendError((h, _))) = commits.send((Box::new(handled), permit)) {
            // The committer is gone (it only ends with this loop): settle here.
            finish(&sock, &recorder, (*h).settle(&*handler.leases));
        }
    }
    // Replies waiting for their commit still go out (their leases are queued).
    drop(commits);
    let join = tokio::task::spawn_blocking(move || committer.join());
    if tokio::time::timeout(Duration::from_secs(3), join).await.is_err() {
        tracing::warn!("dhcp commits still running after 3 s; leaving them");
    }
    Ok(())
}

/// A reply waiting for its commit, with its in-flight slot (boxed so the
/// channel's slots stay small).
type Commit = (Box<Handled>, tokio::sync::OwnedSemaphorePermit);

/// The shortest time between two group commits of the committer. A commit that
/// comes sooner waits out the rest, so the leases answered meanwhile share its
/// fsync: at most 100 commits/s, so at 2,000 REQUESTs/s 20 leases per commit
/// instead of one each (each commit costs an fdatasync and ~10 page writes, about
/// 0.25 ms of CPU here; tests/bench/dhcp/README.md). An ACK waits at most this much
/// longer; clients retransmit after seconds (RFC 2131 §4.1). The database idea of a
/// commit delay (PostgreSQL's `commit_delay`); a lone request is never delayed.
const COMMIT_EVERY: Duration = Duration::from_millis(10);

/// The thread that settles deferred replies in arrival order and sends them. It
/// takes every reply waiting, then the first settle leads the group commit of
/// every lease begun so far (all of theirs among them: a lease is begun before its
/// reply is queued), so the rest find their result waiting.
fn spawn_committer(
    handler: Arc<Handler>,
    sock: Arc<UdpSocket>,
    recorder: Recorder,
) -> io::Result<(mpsc::Sender<Commit>, std::thread::JoinHandle<()>)> {
    let (tx, rx) = mpsc::channel::<Commit>();
    let thread = std::thread::Builder::new()
        .name("dhcp-commit".into())
        .spawn(move || {
            let mut last: Option<Instant> = None;
            while let Ok(first) = rx.recv() {
                if let Some(wait) = last.and_then(|t| COMMIT_EVERY.checked_sub(t.elapsed())) {
                    std::thread::sleep(wait);
                }
                last = Some(Instant::now());
                let batch: Vec<Commit> = std::iter::once(first).chain(rx.try_iter()).collect();
                for (h, permit) in batch {
                    finish(&sock, &recorder, (*h).settle(&*handler.leases));
                    drop(permit);
                }
            }
        })?;
    Ok((tx, thread))
}

/// Sends a settled reply and queues its timeline note.
fn finish(sock: &UdpSocket, recorder: &Recorder, (out, note): (Option<Outgoing>, Option<Note>)) {
    if let Some(o) = out {
        match socket::send(sock, &o.bytes, o.dst, o.from, o.ifindex) {
            Ok(_) => {
                metrics::counter!("provisioner_dhcp_replies_total", "type" => kind_label(o.kind))
                    .increment(1);
            }
            Err(e) => {
                tracing::warn!(error = %e, dst = %o.dst, "dhcp send failed");
                dropped("send_failed");
            }
        }
    }
    if let Some(n) = note {
        recorder.submit(n);
    }
}

/// The metric label of a reply type, without formatting one per packet.
fn kind_label(t: MessageType) -> &'static str {
    match t {
        MessageType::Offer => "offer",
        MessageType::Ack => "ack",
        MessageType::Nak => "nak",
        _ => "other",
    }
}
