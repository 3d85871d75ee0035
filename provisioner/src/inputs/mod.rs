//! What the operator gives the appliance besides its configuration: `images/`,
//! `profiles/`, `infra/` and `gitops/`.

pub mod arming;
