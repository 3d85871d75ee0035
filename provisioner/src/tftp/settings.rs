//! The TFTP server's own settings (the `tftp:` section of the configuration).

use serde::{Deserialize, Serialize};

/// TFTP tuning. Defaults follow crates.md §5.2 (async-tftp #18: few retries, so an
/// aborted firmware `tsize` probe cannot leave a transfer running for minutes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TftpTuning {
    /// Largest blksize granted (RFC 2348); 1468 fits a 1500-byte MTU.
    pub block_size_limit: u16,
    /// Largest windowsize granted (RFC 7440).
    pub window_size_limit: u16,
    /// Retransmission timeout in seconds.
    pub timeout_secs: u64,
    /// Retransmissions before a transfer is abandoned.
    pub max_send_retries: u32,
}

impl Default for TftpTuning {
    fn default() -> Self {
        Self {
            block_size_limit: 1468,
            window_size_limit: 16,
            timeout_secs: 2,
            max_send_retries: 5,
        }
    }
}
