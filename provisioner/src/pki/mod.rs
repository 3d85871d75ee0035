//! Keys and certificates the appliance makes: the Talos secrets bundle and
//! talosconfig ([`talos`]) and the k0s cluster CA with its admin certificate ([`k0s`]).

pub mod k0s;
pub mod talos;
