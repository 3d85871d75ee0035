//! Resetting an installed node through its OS before a reinstall.
//!
//! For Talos this is the machine API's `Reset` (graceful for a healthy control-plane
//! member, wiping the STATE and EPHEMERAL partitions, then reboot): implemented by
//! [`super::talos_reset::TalosResetter`]. Without one (no Talos cluster in `infra/`)
//! re-imaging a Talos node reports the manual command instead of pretending.

use futures::future::BoxFuture;
use provisioner_core::model::Machine;

/// Why a reset failed.
#[derive(Debug, thiserror::Error)]
#[error("node reset: {0}")]
pub struct ResetError(pub String);

/// Resets an installed node so that it reboots into a network install.
pub trait NodeResetter: Send + Sync + std::fmt::Debug {
    /// Resets `machine` (member of `cluster`, if known). Returns what was done.
    fn reset<'a>(
        &'a self,
        machine: &'a Machine,
        cluster: Option<&'a str>,
    ) -> BoxFuture<'a, Result<String, ResetError>>;
}
