//! The one file-name check for boot binaries, used by the TFTP server (RRQ file names,
//! RFC 1350 §5) and by the plain-HTTP boot path, so both refuse the same names.

/// Why a requested file name is refused (a TFTP "access violation", RFC 1350 error 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// Nothing was asked for.
    #[error("empty file name")]
    Empty,
    /// A leading `/`.
    #[error("absolute path")]
    Absolute,
    /// More than 255 bytes.
    #[error("file name too long")]
    TooLong,
    /// `a//b` or a `.` component.
    #[error("empty path component")]
    EmptyComponent,
    /// A `..` component.
    #[error("parent directory")]
    Parent,
    /// Anything but letters, digits and `._-+` in a component.
    #[error("unexpected character in file name")]
    Character,
}

impl PathError {
    /// The reason as static text (what a TFTP ERROR packet carries).
    pub fn reason(self) -> &'static str {
        match self {
            Self::Empty => "empty file name",
            Self::Absolute => "absolute path",
            Self::TooLong => "file name too long",
            Self::EmptyComponent => "empty path component",
            Self::Parent => "parent directory",
            Self::Character => "unexpected character in file name",
        }
    }
}

/// Validates a requested file name. Accepts relative paths of plain components
/// (letters, digits, `._-+`); refuses absolute paths, `..`, empty components,
/// backslashes and control characters (including NUL, which RFC 1350 uses as the
/// terminator and which must never reach the filesystem).
pub fn sanitize(raw: &str) -> Result<String, PathError> {
    if raw.is_empty() {
        return Err(PathError::Empty);
    }
    if raw.starts_with('/') {
        return Err(PathError::Absolute);
    }
    if raw.len() > 255 {
        return Err(PathError::TooLong);
    }
    let mut parts = Vec::new();
    for part in raw.split('/') {
        match part {
            "" | "." => return Err(PathError::EmptyComponent),
            ".." => return Err(PathError::Parent),
            p if !p
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '+')) =>
            {
                return Err(PathError::Character);
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
    fn refuses_traversal_with_the_reason() {
        for (p, why) in [
            ("../etc/passwd", PathError::Parent),
            ("a/../../b", PathError::Parent),
            ("/etc/passwd", PathError::Absolute),
            ("a//b", PathError::EmptyComponent),
            ("./x", PathError::EmptyComponent),
            ("a\\..\\b", PathError::Character),
            ("a\0b", PathError::Character),
            ("", PathError::Empty),
            ("x\n", PathError::Character),
        ] {
            assert_eq!(sanitize(p), Err(why), "{p:?}");
            assert_eq!(why.reason(), why.to_string());
        }
        assert_eq!(sanitize(&"a".repeat(256)), Err(PathError::TooLong));
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
