//! Test doubles shared by the integration tests and the simulated lab's node agent.
//! Nothing in the appliance's own paths uses them: compiled only with the `testing`
//! feature, which the crate's own dev-dependency on itself and the lab agent turn on
//! (`cargo build --release -p provisioner` leaves it off; tests/check-release-features
//! proves it).

mod apid_auth;
pub mod fake_apid;
pub mod fake_argo;
pub mod fake_factory;
pub mod fake_kube;
pub mod peer_facts;
