//! The appliance's Flatcar and k0s mirror: layout on disk and the allowlist the HTTP
//! route checks.
//!
//! ```text
//! <cache_dir>/mirror/flatcar/<version>/flatcar_production_image.bin.bz2 (+ .sig)
//! <cache_dir>/mirror/k0s/<tag>/k0s-<tag>-amd64, sha256sums.txt
//! each version directory: SHA256SUMS (what the appliance verified and serves)
//! ```
//!
//! `flatcar-install -b <base>/mirror/flatcar -V <version>` fetches
//! `<base>/<version>/flatcar_production_image.bin.bz2` and its `.sig` and verifies
//! the GPG signature itself (flatcar-init `bin/flatcar-install` `prep_url`). The
//! route serves only names built here from validated versions, so no request
//! reaches outside the mirror.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use provisioner_core::k0s::cluster::{valid_flatcar_version, valid_k0s_version};

/// The disk image `flatcar-install` writes.
pub const FLATCAR_IMAGE: &str = "flatcar_production_image.bin.bz2";
/// Its detached GPG signature.
pub const FLATCAR_SIG: &str = "flatcar_production_image.bin.bz2.sig";
/// The k0s release's checksum list.
pub const K0S_SUMS: &str = "sha256sums.txt";
/// What the appliance verified, per version directory (`sha256sum` format).
pub const SUMS: &str = "SHA256SUMS";

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

/// `<cache>/mirror/<kind>/<version>`.
pub fn dir(cache: &Path, kind: Kind, version: &str) -> PathBuf {
    cache.join("mirror").join(kind.name()).join(version)
}

/// The on-disk path for a request, if the request names a served file.
pub fn resolve(cache: &Path, kind: &str, version: &str, file: &str) -> Option<PathBuf> {
    let kind = Kind::parse(kind)?;
    if !kind.valid_version(version) || !kind.files(version).iter().any(|f| f == file) {
        return None;
    }
    Some(dir(cache, kind, version).join(file))
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

/// The verified SHA-256 of a mirrored file, if it is present and recorded.
pub fn recorded_sha256(cache: &Path, kind: Kind, version: &str, file: &str) -> Option<String> {
    let d = dir(cache, kind, version);
    if !d.join(file).is_file() {
        return None;
    }
    let text = std::fs::read_to_string(d.join(SUMS)).ok()?;
    parse_sums(&text).remove(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_listed_files_of_valid_versions_resolve() {
        let c = Path::new("/cache");
        assert_eq!(
            resolve(c, "flatcar", "4459.2.0", FLATCAR_IMAGE),
            Some(PathBuf::from("/cache/mirror/flatcar/4459.2.0").join(FLATCAR_IMAGE))
        );
        assert!(resolve(c, "k0s", "v1.36.3+k0s.2", "k0s-v1.36.3+k0s.2-amd64").is_some());
        for (k, v, f) in [
            ("flatcar", "..", FLATCAR_IMAGE),
            ("flatcar", "4459.2.0", "../../secrets.key"),
            ("flatcar", "current", "version.txt"),
            ("k0s", "v1.36.3+k0s.2", "k0s-v1.36.2+k0s.0-amd64"),
            ("talos", "4459.2.0", FLATCAR_IMAGE),
            ("flatcar", "4459.2.0/..", FLATCAR_IMAGE),
        ] {
            assert_eq!(resolve(c, k, v, f), None, "{k}/{v}/{f}");
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
