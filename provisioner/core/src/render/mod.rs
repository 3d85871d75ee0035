//! Text rendering: iPXE scripts and the per-machine config document. Pure functions
//! of the boot decision and the URLs the daemon hands in.

pub mod config;
pub mod ipxe;

/// URLs the daemon issues for one machine's boot; the tokens inside are one-time
/// and machine-bound (created and checked by the daemon, never by the renderer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootUrls {
    /// Base of the plain-HTTP boot path, e.g. `http://10.0.0.1:8080` (no trailing `/`).
    pub base: String,
    /// One-time config URL (`<base>/config/<token>`).
    pub config: String,
    /// One-time "installed" callback (`<base>/callback/<token>/installed`).
    pub callback: String,
}
