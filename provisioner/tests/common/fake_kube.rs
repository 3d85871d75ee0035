//! The fake Kubernetes API moved to `provisioner::testing::fake_kube` (the simulated
//! lab's node agent serves it too); re-exported so existing tests keep their paths.

pub use provisioner::testing::fake_kube::*;
