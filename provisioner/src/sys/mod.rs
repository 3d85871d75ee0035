//! The host the appliance runs on: its addresses and neighbour table ([`netinfo`]),
//! systemd readiness and watchdog ([`notify`]), signals ([`shutdown`]) and the state
//! directory's ownership and modes ([`state`]).

pub mod netinfo;
pub mod notify;
pub mod shutdown;
pub mod state;
