//! The `/ipxe` query string: `BootRequest::from_query` (never fails), then the
//! booter's decision over an empty catalog for each unknown policy, as the
//! `/ipxe` handler does before rendering.
#![no_main]

use libfuzzer_sys::fuzz_target;
use provisioner_core::boot::{BootRequest, Booter, CatalogBooter, UnknownPolicy};

fuzz_target!(|data: &[u8]| {
    let Ok(q) = std::str::from_utf8(data) else { return };
    let req = BootRequest::from_query(q);
    if let Some(u) = &req.uuid {
        assert!(!u.is_empty());
    }
    for unknown in [UnknownPolicy::Record, UnknownPolicy::Ignore] {
        let booter = CatalogBooter {
            catalog: Default::default(),
            unknown,
        };
        let _ = booter.decide(&req, None);
    }
});
