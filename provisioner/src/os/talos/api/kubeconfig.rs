//! The `Kubeconfig` call streams a gzip'd tar holding one file, `kubeconfig`
//! (talos `v1alpha1_server.go` Kubeconfig; talos.md §9.5). Concatenate the chunks,
//! gunzip, untar, take that file.

use std::io::Read;

/// Largest archive accepted; a kubeconfig is a few KiB.
pub const MAX_ARCHIVE: usize = 4 << 20;

/// Why a kubeconfig archive does not give a kubeconfig.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ArchiveError(String);

/// The `kubeconfig` file inside a Talos kubeconfig archive.
pub fn unpack(archive: &[u8]) -> Result<Vec<u8>, ArchiveError> {
    let bad = |what: &str, e: std::io::Error| ArchiveError(format!("{what}: {e}"));
    if archive.len() > MAX_ARCHIVE {
        return Err(ArchiveError(format!(
            "kubeconfig archive of {} bytes is too large",
            archive.len()
        )));
    }
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(archive));
    let entries = tar.entries().map_err(|e| bad("not a tar.gz", e))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| bad("bad tar entry", e))?;
        let path = entry.path().map_err(|e| bad("bad tar entry", e))?.into_owned();
        if path.file_name().and_then(|n| n.to_str()) == Some("kubeconfig") {
            let mut out = Vec::new();
            entry
                .by_ref()
                .take(MAX_ARCHIVE as u64)
                .read_to_end(&mut out)
                .map_err(|e| bad("reading kubeconfig", e))?;
            return Ok(out);
        }
    }
    Err(ArchiveError("archive has no `kubeconfig` file".into()))
}

/// Builds the archive a Talos node sends (used by the fake apid).
pub fn pack(kubeconfig: &[u8]) -> Vec<u8> {
    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::default(),
    ));
    let mut header = tar::Header::new_gnu();
    header.set_size(kubeconfig.len() as u64);
    header.set_mode(0o600);
    header.set_cksum();
    builder
        .append_data(&mut header, "kubeconfig", kubeconfig)
        .expect("writing to a Vec cannot fail");
    builder
        .into_inner()
        .and_then(|gz| gz.finish())
        .expect("writing to a Vec cannot fail")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_errors() {
        let kc = b"apiVersion: v1\nkind: Config\n";
        assert_eq!(unpack(&pack(kc)).unwrap(), kc);
        assert!(unpack(b"not gzip").is_err());
        let mut b = tar::Builder::new(flate2::write::GzEncoder::new(
            Vec::new(),
            flate2::Compression::default(),
        ));
        let mut h = tar::Header::new_gnu();
        h.set_size(1);
        h.set_cksum();
        b.append_data(&mut h, "other", &b"x"[..]).unwrap();
        let other = b.into_inner().unwrap().finish().unwrap();
        assert_eq!(
            unpack(&other).unwrap_err().to_string(),
            "archive has no `kubeconfig` file"
        );
    }
}
