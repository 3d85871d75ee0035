//! Keys and certificates the appliance makes: the Talos secrets bundle and
//! talosconfig ([`talos`]) and the k0s cluster CA with its admin certificate ([`k0s`]);
//! the SOPS+age format ([`sops`]: secrets bundles, talenv files) read by `inputs` and
//! `os/talos`.

pub mod k0s;
pub mod sops;
pub mod talos;
