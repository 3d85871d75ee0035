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

    proptest::proptest! {
        #[test]
        fn never_panics_and_never_escapes(s in "\\PC{0,300}") {
            if let Ok(p) = sanitize(&s) {
                proptest::prop_assert!(!p.starts_with('/'));
                proptest::prop_assert!(p.split('/').all(|c| c != ".." && !c.is_empty()));
            }
        }
    }
}
