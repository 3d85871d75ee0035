//! TFTP read-request file names (`provisioner_core::tftp::path::sanitize`, also the
//! HTTP `/bin/` route): never a panic, and an accepted name never escapes the root.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // RRQ names are NUL-terminated octets; the server sees them as (lossy) text.
    let raw = String::from_utf8_lossy(data);
    if let Ok(p) = provisioner_core::tftp::path::sanitize(&raw) {
        assert_eq!(p, raw, "an accepted name is served as asked");
        assert!(!p.starts_with('/') && p.len() <= 255);
        assert!(p.split('/').all(|c| !c.is_empty() && c != "." && c != ".."));
        assert!(p.bytes().all(|b| b == b'/' || b.is_ascii_alphanumeric() || b"._-+".contains(&b)));
    }
});
