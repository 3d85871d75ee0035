//! The TFTP server's own settings (the `tftp:` section of the configuration).

use serde::{Deserialize, Serialize};

/// TFTP settings (the engine in `tftp/`). Every bound is here so a flood of requests,
/// spoofed or not, costs at most `max_sessions` sockets for at most
/// `max_timeout_secs × (max_send_retries + 1)` seconds each.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TftpTuning {
    /// Largest blksize granted (RFC 2348); 1468 fits a 1500-byte MTU.
    pub block_size_limit: u16,
    /// Largest windowsize granted (RFC 7440).
    pub window_size_limit: u16,
    /// Retransmission timeout in seconds when the client names none.
    pub timeout_secs: u8,
    /// Largest client `timeout` option honoured (RFC 2349); a larger one is declined.
    pub max_timeout_secs: u8,
    /// Retransmissions of one window (or OACK) before a transfer is abandoned.
    pub max_send_retries: u32,
    /// Transfers at once; an RRQ beyond it gets a TFTP ERROR (counted).
    pub max_sessions: u32,
    /// Transfers at once per client IP address.
    pub max_sessions_per_ip: u32,
    /// Bytes of files kept in memory (LRU); larger files are read per block.
    pub cache_max_bytes: u64,
    /// Receive buffer of the request socket, so a storm of RRQs is queued, not dropped.
    pub recv_buffer_bytes: u32,
}

impl Default for TftpTuning {
    fn default() -> Self {
        Self {
            block_size_limit: 1468,
            window_size_limit: 16,
            timeout_secs: 2,
            max_timeout_secs: 5,
            max_send_retries: 5,
            max_sessions: 2048,
            max_sessions_per_ip: 8,
            cache_max_bytes: 64 * 1024 * 1024,
            recv_buffer_bytes: 4 * 1024 * 1024,
        }
    }
}
