//! `vMAJOR.MINOR.PATCH` versions (Talos and Kubernetes), compared numerically.

use std::fmt;
use std::str::FromStr;

/// A release version such as `v1.11.6`. Pre-release suffixes (`-beta.1`) are kept for
/// display but ignored when comparing, which is what the contract checks need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    /// Major.
    pub major: u32,
    /// Minor.
    pub minor: u32,
    /// Patch.
    pub patch: u32,
    /// Anything after `-`, without the dash.
    pub pre: Option<String>,
}

impl Version {
    /// `(major, minor)` for contract checks.
    pub fn minor_pair(&self) -> (u32, u32) {
        (self.major, self.minor)
    }
}

/// A Talos version that is not `vMAJOR.MINOR.PATCH[-PRE]` (the text is the input).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a version like v1.11.6")]
pub struct VersionError(pub String);

impl FromStr for Version {
    type Err = VersionError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || VersionError(s.to_string());
        let rest = s.strip_prefix('v').ok_or_else(bad)?;
        let (nums, pre) = match rest.split_once('-') {
            Some((n, p)) => (n, Some(p.to_string())),
            None => (rest, None),
        };
        let parts: Vec<&str> = nums.split('.').collect();
        if parts.len() != 3 {
            return Err(bad());
        }
        let n = |i: usize| parts[i].parse::<u32>().map_err(|_| bad());
        Ok(Self {
            major: n(0)?,
            minor: n(1)?,
            patch: n(2)?,
            pre,
        })
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}.{}.{}", self.major, self.minor, self.patch)?;
        if let Some(p) = &self.pre {
            write!(f, "-{p}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_orders() {
        let v: Version = "v1.11.6".parse().unwrap();
        assert_eq!(v.minor_pair(), (1, 11));
        assert_eq!(v.to_string(), "v1.11.6");
        assert!("1.11.6".parse::<Version>().is_err());
        assert!("v1.11".parse::<Version>().is_err());
        assert_eq!(
            "v1.12.0-beta.1".parse::<Version>().unwrap().pre.as_deref(),
            Some("beta.1")
        );
    }
}
