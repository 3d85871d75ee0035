//! Read-only TFTP for iPXE binaries and `autoexec.ipxe`.
//!
//! The engine is our own (tests/bench/README.md says why): a pure protocol core in
//! `provisioner_core::tftp` (packets, option negotiation, the window) and, here, the
//! I/O around it on a dedicated thread ([`server`]: request socket, session caps;
//! `transfer`: one task per transfer). The engine only asks a [`TftpFiles`] what to
//! send; [`files::BootFiles`] serves a directory through a byte-bounded LRU cache.
//! Path checks are core's pure [`path::sanitize`].

pub mod files;
mod server;
pub mod settings;
mod transfer;

use std::net::SocketAddr;

use provisioner_core::tftp::path;

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

/// Where a transfer's bytes come from.
#[derive(Debug)]
pub enum Source {
    /// The whole file in memory; blocks are slices of it, sent without a copy.
    Memory(bytes::Bytes),
    /// A file too large for the cache, read block by block with `pread`.
    File {
        /// The open file.
        file: std::fs::File,
        /// Its length when opened.
        len: u64,
    },
}

impl Source {
    /// Length in bytes.
    pub fn len(&self) -> u64 {
        match self {
            Source::Memory(b) => b.len() as u64,
            Source::File { len, .. } => *len,
        }
    }

    /// Whether the file is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What the TFTP server may send. `open` runs on the engine's thread for every
/// request, so it must be fast (the cache answers repeated files from memory).
pub trait TftpFiles: Send + Sync + std::fmt::Debug {
    /// The file for `path` (already sanitised) requested by `client`.
    fn open(&self, client: SocketAddr, path: &str) -> Result<Source, Refusal>;
    /// Called (on the caller's tokio runtime) once the client acknowledged the last
    /// block of `path`.
    fn completed(&self, client: SocketAddr, path: &str, bytes: u64);
}

/// Validates a requested file name: core's one rule ([`path::sanitize`]), as a
/// TFTP refusal.
pub fn sanitize(raw: &str) -> Result<String, Refusal> {
    path::sanitize(raw).map_err(|e| Refusal::Denied(e.reason()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_names() {
        assert_eq!(sanitize("undionly.kpxe").unwrap(), "undionly.kpxe");
        assert_eq!(sanitize("arm64/snp.efi").unwrap(), "arm64/snp.efi");
    }

    #[test]
    fn refuses_traversal() {
        for p in [
            "../etc/passwd",
            "a/../../b",
            "/etc/passwd",
            "a//b",
            "./x",
            "a\\..\\b",
            "a\0b",
            "",
            "x\n",
        ] {
            assert!(sanitize(p).is_err(), "{p:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn never_panics_and_never_escapes(s in "\\PC{0,300}") {
            if let Ok(p) = sanitize(&s) {
                proptest::prop_assert!(!p.starts_with('/'));
                proptest::prop_assert!(p.split('/').all(|c| c != ".." && !c.is_empty()));
            }
        }
    }
}
