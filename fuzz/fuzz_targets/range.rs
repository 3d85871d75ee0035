//! HTTP `Range` values (`provisioner_core::range::parse_range`) against a length
//! taken from the input: a satisfiable answer always lies inside the body.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (len, rest) = match data.split_first() {
        Some((l, r)) => (u64::from(*l) * 997, r),
        None => (0, data),
    };
    let Ok(v) = std::str::from_utf8(rest) else { return };
    if let Ok(Some(r)) = provisioner_core::range::parse_range(Some(v), len) {
        assert!(r.start <= r.end && r.end < len, "{v:?} → {r:?} for {len}");
    }
});
