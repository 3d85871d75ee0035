//! The socket loops: one per bound socket (67, and 4011 for the PXE boot server).
//! Each datagram takes an in-flight slot and passes the per-MAC limit, or is
//! dropped and counted; accepted ones are handled on the blocking pool (the lease
//! commit is durable before the reply), the reply is sent from the same socket
//! with IP_PKTINFO addressing, and the timeline entry goes to the [`Recorder`]. Shutdown: stop reading when the token is
//! cancelled, then give in-flight requests a short deadline.

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use provisioner_core::dhcp::reply::Port;
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::handler::{Handler, Recorder, dropped};
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
    let mut tasks = JoinSet::new();
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
        while tasks.try_join_next().is_some() {}
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
        let data = data.to_vec();
        let (handler, sock, recorder) = (handler.clone(), sock.clone(), recorder.clone());
        tasks.spawn_blocking(move || {
            let _permit = permit;
            let now = time::OffsetDateTime::now_utc().unix_timestamp();
            let (out, note) = handler.handle(&data, port, &arrival, now);
            if let Some(o) = out {
                match socket::send(&*sock, &o.bytes, o.dst, o.from, o.ifindex) {
                    Ok(_) => {
                        let kind = format!("{:?}", o.kind).to_lowercase();
                        metrics::counter!("provisioner_dhcp_replies_total", "type" => kind).increment(1);
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
        });
    }
    // In-flight requests finish (their lease commits are already under way).
    let drain = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(Duration::from_secs(3), drain).await.is_err() {
        tracing::warn!("dhcp requests still running after 3 s; leaving them");
    }
    Ok(())
}
