//! HTTP `Range` requests (RFC 9110 §14.1.2), as a pure function the daemon's asset
//! server calls and the fuzz target `range` drives.

/// A byte range resolved against a length: inclusive start and end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    /// First byte.
    pub start: u64,
    /// Last byte (inclusive).
    pub end: u64,
}

/// Parses one `Range: bytes=...` value (RFC 9110 §14.1.2) against `len`.
/// `Ok(None)`: serve the whole body (absent, multi-range or not `bytes`);
/// `Err(())`: unsatisfiable (416).
#[allow(clippy::result_unit_err)]
pub fn parse_range(value: Option<&str>, len: u64) -> Result<Option<ByteRange>, ()> {
    let Some(v) = value else { return Ok(None) };
    let Some(spec) = v.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        // Multipart ranges: serving the full body is allowed and simpler.
        return Ok(None);
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return Ok(None);
    };
    let (a, b) = (a.trim(), b.trim());
    let range = if a.is_empty() {
        // Suffix: the last N bytes.
        let n: u64 = b.parse().map_err(|_| ())?;
        if n == 0 || len == 0 {
            return Err(());
        }
        ByteRange {
            start: len.saturating_sub(n),
            end: len - 1,
        }
    } else {
        let start: u64 = a.parse().map_err(|_| ())?;
        let end = if b.is_empty() {
            len.saturating_sub(1)
        } else {
            b.parse::<u64>().map_err(|_| ())?.min(len.saturating_sub(1))
        };
        if start >= len || end < start {
            return Err(());
        }
        ByteRange { start, end }
    };
    Ok(Some(range))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;

    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range(None, 10), Ok(None));
        assert_eq!(
            parse_range(Some("bytes=0-4"), 10),
            Ok(Some(ByteRange { start: 0, end: 4 }))
        );
        assert_eq!(
            parse_range(Some("bytes=5-"), 10),
            Ok(Some(ByteRange { start: 5, end: 9 }))
        );
        assert_eq!(
            parse_range(Some("bytes=-3"), 10),
            Ok(Some(ByteRange { start: 7, end: 9 }))
        );
        assert_eq!(
            parse_range(Some("bytes=8-100"), 10),
            Ok(Some(ByteRange { start: 8, end: 9 }))
        );
        assert_eq!(parse_range(Some("bytes=0-1,4-5"), 10), Ok(None));
        assert_eq!(parse_range(Some("items=0-1"), 10), Ok(None));
        assert_eq!(parse_range(Some("bytes=10-"), 10), Err(()));
        assert_eq!(parse_range(Some("bytes=5-2"), 10), Err(()));
        assert_eq!(parse_range(Some("bytes=x-2"), 10), Err(()));
        assert_eq!(parse_range(Some("bytes=-0"), 10), Err(()));
    }

    /// Range values as clients (and attackers) write them: `bytes=` (sometimes
    /// another unit, spaces or case), then digits, dashes, commas and blanks, with
    /// numbers near the file length so both satisfiable and unsatisfiable ranges
    /// come up. Random strings almost never start with `bytes=`.
    fn header() -> impl Strategy<Value = String> {
        let num = prop_oneof![
            (0u64..2_000).prop_map(|n| n.to_string()),
            Just(u64::MAX.to_string()),
            Just("18446744073709551616".to_string()),
            "[0-9]{0,3}",
        ];
        let spec = prop_oneof![
            (num.clone(), num.clone()).prop_map(|(a, b)| format!("{a}-{b}")),
            num.clone().prop_map(|a| format!("{a}-")),
            num.clone().prop_map(|b| format!("-{b}")),
            "[0-9, -]{0,12}",
        ];
        let unit = prop_oneof![
            8 => Just("bytes="),
            1 => Just(" bytes= "),
            1 => Just("Bytes="),
            1 => Just("items="),
        ];
        (unit, spec).prop_map(|(u, s)| format!("{u}{s}"))
    }

    proptest! {
        #[test]
        fn range_within_bounds(s in header(), len in 0u64..2_000) {
            if let Ok(Some(r)) = parse_range(Some(&s), len) {
                prop_assert!(r.start <= r.end && r.end < len, "{s:?} → {r:?} for {len}");
            }
        }
    }

    /// The generator reaches every branch: satisfiable ranges, unsatisfiable ones
    /// and the whole-body answers.
    #[test]
    fn the_generator_reaches_the_parser() {
        let mut runner = TestRunner::deterministic();
        let (mut some, mut err, mut whole) = (0, 0, 0);
        let n = 4_000;
        for _ in 0..n {
            let s = header().new_tree(&mut runner).unwrap().current();
            match parse_range(Some(&s), 1_000) {
                Ok(Some(_)) => some += 1,
                Err(()) => err += 1,
                Ok(None) => whole += 1,
            }
        }
        assert!(some * 100 >= n * 25, "only {some} of {n} satisfiable ranges");
        assert!(err * 100 >= n * 10, "only {err} of {n} unsatisfiable ranges");
        assert!(whole * 100 >= n * 5, "only {whole} of {n} whole-body answers");
    }
}
