//! What the appliance mirrors of Flatcar and k0s releases: the file names of one
//! version and the allowlist the boot path's `/mirror` route checks (where they sit in
//! the image cache is the daemon's `images::ImageCache`).
//!
//! `flatcar-install -b <base>/mirror/flatcar -V <version>` fetches
//! `<base>/<version>/flatcar_production_image.bin.bz2` and its `.sig` and verifies
//! the GPG signature itself (flatcar-init `bin/flatcar-install` `prep_url`). The
//! route serves only names built here from validated versions, so no request
//! reaches outside the mirror.

use std::collections::BTreeMap;

use super::cluster::{valid_flatcar_version, valid_k0s_version};

/// The disk image `flatcar-install` writes.
pub const FLATCAR_IMAGE: &str = "flatcar_production_image.bin.bz2";
/// Its detached GPG signature.
pub const FLATCAR_SIG: &str = "flatcar_production_image.bin.bz2.sig";
/// The k0s release's checksum list.
pub const K0S_SUMS: &str = "sha256sums.txt";

/// What the mirror holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Flatcar disk images.
    Flatcar,
    /// k0s binaries.
    K0s,
}

impl Kind {
    /// From the URL/CLI name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "flatcar" => Some(Self::Flatcar),
            "k0s" => Some(Self::K0s),
            _ => None,
        }
    }

    /// URL/CLI name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Flatcar => "flatcar",
            Self::K0s => "k0s",
        }
    }

    /// Whether `version` is well-formed for this kind.
    pub fn valid_version(self, version: &str) -> bool {
        match self {
            Self::Flatcar => valid_flatcar_version(version),
            Self::K0s => valid_k0s_version(version),
        }
    }

    /// The files of one version (the served allowlist).
    pub fn files(self, version: &str) -> Vec<String> {
        match self {
            Self::Flatcar => vec![FLATCAR_IMAGE.into(), FLATCAR_SIG.into()],
            Self::K0s => vec![k0s_binary(version), K0S_SUMS.into()],
        }
    }
}

/// `k0s-<tag>-amd64`, the release asset name.
pub fn k0s_binary(tag: &str) -> String {
    format!("k0s-{tag}-amd64")
}

/// The kind of a request naming a served file (`kind/version/file`): a valid version
/// of a known kind and one of its fixed file names, so no request names anything else.
pub fn served(kind: &str, version: &str, file: &str) -> Option<Kind> {
    let kind = Kind::parse(kind)?;
    (kind.valid_version(version) && kind.files(version).iter().any(|f| f == file)).then_some(kind)
}

/// Reads `SHA256SUMS`-style lines (`<hex>  <file>`, `*` binary marker allowed).
pub fn parse_sums(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            let (h, f) = (it.next()?, it.next()?);
            let ok = h.len() == 64 && h.chars().all(|c| c.is_ascii_hexdigit());
            ok.then(|| (f.trim_start_matches('*').to_string(), h.to_ascii_lowercase()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_listed_files_of_valid_versions_are_served() {
        assert_eq!(served("flatcar", "4459.2.0", FLATCAR_IMAGE), Some(Kind::Flatcar));
        assert_eq!(
            served("k0s", "v1.36.3+k0s.2", "k0s-v1.36.3+k0s.2-amd64"),
            Some(Kind::K0s)
        );
        for (k, v, f) in [
            ("flatcar", "..", FLATCAR_IMAGE),
            ("flatcar", "4459.2.0", "../../secrets.key"),
            ("flatcar", "current", "version.txt"),
            ("k0s", "v1.36.3+k0s.2", "k0s-v1.36.2+k0s.0-amd64"),
            ("talos", "4459.2.0", FLATCAR_IMAGE),
            ("flatcar", "4459.2.0/..", FLATCAR_IMAGE),
        ] {
            assert_eq!(served(k, v, f), None, "{k}/{v}/{f}");
        }
    }

    #[test]
    fn sums_parse() {
        let h = "a".repeat(64);
        let s = parse_sums(&format!("{h}  k0s-v1-amd64\n{h} *k0s.exe\nbad line\n"));
        assert_eq!(s.get("k0s-v1-amd64"), Some(&h));
        assert_eq!(s.get("k0s.exe"), Some(&h));
        assert_eq!(s.len(), 2);
    }
}
