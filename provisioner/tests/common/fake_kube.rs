//! The fake Kubernetes API moved to `provisioner::testing::fake_kube` (the simulated
//! lab's node agent serves it too); re-exported so existing tests keep their paths.

// Every test binary compiles `common`; most never use the fake API server.
#[allow(unused_imports)]
pub use provisioner::testing::fake_kube::*;
