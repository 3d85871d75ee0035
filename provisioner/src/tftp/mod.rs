//! Read-only TFTP for iPXE binaries and `autoexec.ipxe`.
//!
//! The protocol engine is async-tftp, kept behind our own seam: the server only asks
//! a [`TftpFiles`] what to send, so an in-house RRQ-only server could replace the
//! engine without touching policy (crates.md §5.2). Path checks are the pure
//! [`sanitize`] below.

pub mod files;
mod server;
pub mod settings;

use std::net::SocketAddr;
use std::sync::Arc;

pub use files::BootFiles;
pub use server::{TftpError, serve};

/// Why a read request is refused; mapped to a TFTP ERROR packet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// RFC 1350 error 1.
    #[error("file not found")]
    NotFound,
    /// RFC 1350 error 2: traversal, absolute paths, odd characters.
    #[error("access violation: {0}")]
    Denied(&'static str),
}

/// What the TFTP server may send. Implementations must be fast: async-tftp serialises
/// opens behind one lock.
pub trait TftpFiles: Send + Sync + std::fmt::Debug {
    /// The whole file for `path` (already sanitised) requested by `client`.
    fn open(&self, client: SocketAddr, path: &str) -> Result<Arc<[u8]>, Refusal>;
    /// Called once the last block of `path` was handed to the engine.
    fn completed(&self, client: SocketAddr, path: &str, bytes: u64);
}

/// Validates a requested file name ([`provisioner_core::tftp::sanitize`]); a
/// refusal is an access violation.
pub fn sanitize(raw: &str) -> Result<String, Refusal> {
    provisioner_core::tftp::sanitize(raw).map_err(Refusal::Denied)
}
