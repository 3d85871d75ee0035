//! Option negotiation and the sending side of one read transfer, as pure state: the
//! transfer loop asks what to send and tells it what arrived; timers and sockets stay
//! in the daemon.

use super::packet::RequestedOptions;

/// RFC 1350 §1: without a blksize option, blocks are 512 bytes.
pub const DEFAULT_BLKSIZE: u16 = 512;

/// The server's limits for negotiation (the daemon's `tftp:` settings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest blksize granted (1468 fits a 1500-byte MTU).
    pub max_blksize: u16,
    /// Largest windowsize granted.
    pub max_window: u16,
    /// Retransmission timeout when the client names none, seconds.
    pub default_timeout_secs: u8,
    /// Largest client `timeout` honoured, seconds.
    pub max_timeout_secs: u8,
}

/// What was agreed for one transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negotiated {
    /// Bytes per DATA block.
    pub blksize: u16,
    /// Blocks sent before waiting for an ACK (RFC 7440).
    pub window: u16,
    /// Retransmission timeout, seconds.
    pub timeout_secs: u8,
    /// Options to acknowledge in an OACK, if any was accepted: (blksize, timeout,
    /// tsize, windowsize) each only when accepted.
    pub oack: Option<Acked>,
}

/// The accepted options, echoed in the OACK (RFC 2347).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Acked {
    /// RFC 2348.
    pub blksize: Option<u16>,
    /// RFC 2349.
    pub timeout: Option<u8>,
    /// RFC 2349.
    pub tsize: Option<u64>,
    /// RFC 7440.
    pub windowsize: Option<u16>,
}

impl Acked {
    /// (name, value) pairs for [`super::packet::write_oack`].
    pub fn pairs(&self) -> impl Iterator<Item = (&'static str, u64)> {
        [
            self.blksize.map(|v| ("blksize", u64::from(v))),
            self.timeout.map(|v| ("timeout", u64::from(v))),
            self.tsize.map(|v| ("tsize", v)),
            self.windowsize.map(|v| ("windowsize", u64::from(v))),
        ]
        .into_iter()
        .flatten()
    }
}

/// Negotiates a read of a `file_len`-byte file.
///
/// - blksize (RFC 2348 §"Blocksize Option Specification"): 8-65464; the server may
///   answer with a smaller value, so a request is clamped to `max_blksize`; below 8
///   the option is ignored.
/// - timeout (RFC 2349 §"Timeout Interval Option Specification"): 1-255 s, and "the
///   specified timeout value must match the value specified by the client", so a
///   value above `max_timeout_secs` is *declined* (left out of the OACK) and the
///   server keeps its own, clamped timeout. Echoing a smaller value instead would
///   break EDK2, which aborts on an OACK whose timeout differs from its request
///   (tianocore/edk2 `NetworkPkg/Mtftp4Dxe/Mtftp4Rrq.c`, `Mtftp4RrqOackValid`).
/// - tsize (RFC 2349 §"Transfer Size Option Specification"): the server returns the
///   file's size.
/// - windowsize (RFC 7440 §3): 1-65535, answered with at most `max_window`.
///
/// With no accepted option there is no OACK and DATA 1 answers the request (RFC 2347).
pub fn negotiate(req: &RequestedOptions, file_len: u64, limits: &Limits) -> Negotiated {
    let max_timeout = limits.max_timeout_secs.max(1);
    let mut acked = Acked::default();
    let mut blksize = DEFAULT_BLKSIZE;
    if let Some(b) = req.blksize
        && b >= 8
    {
        blksize = b.min(65464).min(u64::from(limits.max_blksize.max(8))) as u16;
        acked.blksize = Some(blksize);
    }
    let mut timeout_secs = limits.default_timeout_secs.clamp(1, max_timeout);
    if let Some(t) = req.timeout
        && (1..=u64::from(max_timeout)).contains(&t)
    {
        timeout_secs = t as u8;
        acked.timeout = Some(timeout_secs);
    }
    if req.tsize.is_some() {
        acked.tsize = Some(file_len);
    }
    let mut window = 1;
    if let Some(w) = req.windowsize
        && w >= 1
    {
        window = w.min(65535).min(u64::from(limits.max_window.max(1))) as u16;
        acked.windowsize = Some(window);
    }
    let any = acked != Acked::default();
    Negotiated {
        blksize,
        window,
        timeout_secs,
        oack: any.then_some(acked),
    }
}

/// What an ACK did to the transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckOutcome {
    /// The OACK (block 0) or some blocks were acknowledged; send [`Sender::to_send`].
    Advanced,
    /// The last block is acknowledged: the transfer is complete.
    Done,
    /// The client repeated its last ACK (it misses the block after it).
    Duplicate,
    /// An ACK for nothing outstanding (a delayed or forged packet): ignored, which
    /// avoids the Sorcerer's Apprentice bug (RFC 1350 §"Normal Termination"; RFC 1123
    /// §4.2.3.1: never retransmit on a duplicate ACK in lock-step mode).
    Stale,
}

/// The sending side of one read transfer. Blocks are numbered from 1 as 64-bit
/// integers; on the wire they wrap to 0 after 65535 (the rollover curl, atftp, iPXE
/// and EDK2 accept), so files over 65535 blocks work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sender {
    blksize: u64,
    window: u64,
    len: u64,
    last: u64,
    acked: u64,
    sent: u64,
    oack_pending: bool,
}

impl Sender {
    /// A transfer of `len` bytes with the negotiated parameters; `oack` when an OACK
    /// goes first (then block 1 waits for ACK 0, RFC 2347).
    pub fn new(len: u64, n: &Negotiated) -> Self {
        let blksize = u64::from(n.blksize.max(1));
        Self {
            blksize,
            window: u64::from(n.window.max(1)),
            len,
            // A file of exactly k blocks ends with an empty block k+1 (RFC 1350 §6).
            last: len / blksize + 1,
            acked: 0,
            sent: 0,
            oack_pending: n.oack.is_some(),
        }
    }

    /// Whether the OACK is still unacknowledged (resend it on timeout).
    pub fn oack_pending(&self) -> bool {
        self.oack_pending
    }

    /// The blocks to send now (first..=last), empty while the OACK is pending.
    ///
    /// Reflection bound: until the client has acknowledged a packet of ours, it gets
    /// one packet per (re)transmission: the OACK when options were negotiated, else
    /// block 1 (without options the window is 1 anyway, RFC 1350). A spoofed request,
    /// whose "client" never sees our packets and cannot guess our new port, thus costs
    /// its victim at most `max_send_retries + 1` small packets, whatever windowsize it
    /// asked for. Once the OACK is acknowledged (ACK 0), the full window goes out:
    /// holding it to one block until ACK 1 stalls every RFC 7440 client, because they
    /// acknowledge only a full window (tianocore/edk2
    /// `NetworkPkg/Mtftp4Dxe/Mtftp4Rrq.c` `Mtftp4RrqHandleData`; atftp waits for our
    /// retransmission, measured 2 s per transfer in tests/bench/README.md).
    /// After that, RFC 7440 §4: a window starts right after the last acknowledged block.
    pub fn to_send(&mut self) -> std::ops::RangeInclusive<u64> {
        if self.oack_pending {
            #[allow(clippy::reversed_empty_ranges)]
            return 1..=0;
        }
        let first = self.acked + 1;
        let last = (self.acked + self.window).min(self.last);
        self.sent = self.sent.max(last);
        first..=last
    }

    /// The wire number of absolute block `n` (wraps to 0 after 65535).
    pub fn wire(n: u64) -> u16 {
        (n & 0xffff) as u16
    }

    /// The byte range of absolute block `n` (1-based) in the file.
    pub fn range(&self, n: u64) -> std::ops::Range<u64> {
        let start = (n - 1) * self.blksize;
        start.min(self.len)..(start + self.blksize).min(self.len)
    }

    /// Applies an ACK of wire block `block`.
    pub fn on_ack(&mut self, block: u16) -> AckOutcome {
        if self.oack_pending {
            // RFC 2347: the client acknowledges the OACK with ACK 0.
            if block == 0 {
                self.oack_pending = false;
                return AckOutcome::Advanced;
            }
            return AckOutcome::Stale;
        }
        let delta = u64::from(block.wrapping_sub(Self::wire(self.acked)));
        if delta == 0 {
            return AckOutcome::Duplicate;
        }
        if delta > self.sent - self.acked {
            return AckOutcome::Stale;
        }
        self.acked += delta;
        if self.acked >= self.last {
            AckOutcome::Done
        } else {
            AckOutcome::Advanced
        }
    }

    /// Blocks acknowledged so far.
    pub fn acked(&self) -> u64 {
        self.acked
    }

    /// Whether every block was acknowledged.
    pub fn done(&self) -> bool {
        self.acked >= self.last
    }
}
