//! The TFTP read request's file name, as a pure check the daemon's TFTP server
//! (and the HTTP `/bin/` route) call and the fuzz target `tftp_path` drives.

/// Validates a requested file name. Accepts relative paths of plain components
/// (letters, digits, `._-+`); refuses absolute paths, `..`, empty components,
/// backslashes and control characters (including NUL, which RFC 1350 uses as the
/// terminator and which must never reach the filesystem). `Err` is the reason,
/// sent to the client as an access violation (RFC 1350 error 2).
pub fn sanitize(raw: &str) -> Result<String, &'static str> {
    if raw.is_empty() {
        return Err("empty file name");
    }
    if raw.starts_with('/') {
        return Err("absolute path");
    }
    if raw.len() > 255 {
        return Err("file name too long");
    }
    let mut parts = Vec::new();
    for part in raw.split('/') {
        match part {
            "" | "." => return Err("empty path component"),
            ".." => return Err("parent directory"),
            p if !p
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '+')) =>
            {
                return Err("unexpected character in file name");
            }
            p => parts.push(p),
        }
    }
    Ok(parts.join("/"))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;

    use super::*;

    #[test]
    fn accepts_plain_names() {
        assert_eq!(sanitize("undionly.kpxe").unwrap(), "undionly.kpxe");
        assert_eq!(sanitize("arm64/snp.efi").unwrap(), "arm64/snp.efi");
    }

    #[test]
    fn refuses_traversal() {
        for p in [
            "../etc/passwd",
            "a/../../b",
            "/etc/passwd",
            "a//b",
            "./x",
            "a\\..\\b",
            "a\0b",
            "",
            "x\n",
        ] {
            assert!(sanitize(p).is_err(), "{p:?}");
        }
    }

    /// Paths built from segments as requests carry them: mostly plain names, some
    /// traversal, empty, dot, backslash, control and non-ASCII segments, sometimes
    /// a leading slash or an overlong name. Random strings almost never pass.
    fn path() -> impl Strategy<Value = String> {
        let segment = prop_oneof![
            12 => "[A-Za-z0-9._+-]{1,12}",
            1 => Just("..".to_string()),
            1 => Just(".".to_string()),
            1 => Just(String::new()),
            1 => Just("a\\b".to_string()),
            1 => Just("nul\0".to_string()),
            1 => Just("é".to_string()),
            1 => "[ -~]{1,4}",
        ];
        (
            prop::bool::weighted(0.05),
            prop::collection::vec(segment, 1..5),
            prop::option::weighted(0.03, Just("x".repeat(300))),
        )
            .prop_map(|(abs, segs, long)| {
                let p = segs.join("/");
                let p = long.map_or(p.clone(), |l| format!("{p}{l}"));
                if abs { format!("/{p}") } else { p }
            })
    }

    fn plain(c: char) -> bool {
        c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '+')
    }

    proptest! {
        #[test]
        fn never_escapes(s in path()) {
            if let Ok(p) = sanitize(&s) {
                prop_assert_eq!(&p, &s, "an accepted name is served as asked");
                prop_assert!(!p.starts_with('/') && p.len() <= 255);
                prop_assert!(p.split('/').all(|c| c != ".." && c != "." && !c.is_empty()));
                prop_assert!(p.chars().all(|c| c == '/' || plain(c)));
            }
        }
    }

    /// The generator reaches both sides of the check.
    #[test]
    fn the_generator_reaches_the_check() {
        let mut runner = TestRunner::deterministic();
        let n = 4_000;
        let accepted = (0..n)
            .filter(|_| sanitize(&path().new_tree(&mut runner).unwrap().current()).is_ok())
            .count();
        assert!(accepted * 100 >= n * 30, "only {accepted} of {n} paths accepted");
        assert!(
            (n - accepted) * 100 >= n * 20,
            "only {} of {n} paths refused",
            n - accepted
        );
    }
}
