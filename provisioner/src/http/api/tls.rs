//! HTTPS for the API listener: a provided certificate and key, or a certificate made
//! at first start and kept under `<state_dir>/tls/`:
//! - `ca.crt`: a private CA (P-256) whose key is discarded right after signing, so
//!   it can sign nothing else; clients trust this file (`provisioner … --ca`);
//! - `api.crt`: the server certificate (SANs: localhost, the host name, loopback,
//!   the advertised and API addresses) followed by the CA;
//! - `api.key`: its key, mode 0600.

use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

/// `api_tls:` in the appliance configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct ApiTls {
    /// PEM certificate chain to serve; with `key_file`. Unset: generated.
    pub cert_file: Option<PathBuf>,
    /// PEM private key for `cert_file`.
    pub key_file: Option<PathBuf>,
}

/// The files the listener uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// Certificate chain.
    pub cert: PathBuf,
    /// Private key.
    pub key: PathBuf,
    /// The generated CA clients should trust (`None` for a provided certificate).
    pub ca: Option<PathBuf>,
}

/// Why HTTPS cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Bad configuration or key material.
    #[error("API TLS: {0}")]
    Invalid(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TlsError + '_ {
    move |source| TlsError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn invalid(e: impl std::fmt::Display) -> TlsError {
    TlsError::Invalid(e.to_string())
}

/// The generated files' locations under `state_dir`.
pub fn generated_files(state_dir: &Path) -> TlsFiles {
    let dir = state_dir.join("tls");
    TlsFiles {
        cert: dir.join("api.crt"),
        key: dir.join("api.key"),
        ca: Some(dir.join("ca.crt")),
    }
}

/// The provided files, or the generated ones (made now if missing).
pub fn prepare(cfg: &ApiTls, state_dir: &Path, ips: &[IpAddr]) -> Result<TlsFiles, TlsError> {
    match (&cfg.cert_file, &cfg.key_file) {
        (Some(cert), Some(key)) => {
            return Ok(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                ca: None,
            });
        }
        (None, None) => {}
        _ => return Err(invalid("api_tls needs both cert_file and key_file")),
    }
    let files = generated_files(state_dir);
    if files.cert.exists() && files.key.exists() {
        return Ok(files);
    }
    generate(&files, ips)?;
    tracing::info!(ca = %files.ca.as_ref().map(|p| p.display().to_string()).unwrap_or_default(), "generated the API's TLS certificate");
    Ok(files)
}

fn generate(files: &TlsFiles, ips: &[IpAddr]) -> Result<(), TlsError> {
    let dir = files.cert.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let now = OffsetDateTime::now_utc();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| {
            !h.is_empty()
                && h.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        })
        .unwrap_or_else(|| "provisioner".into());

    let ca_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(invalid)?;
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(invalid)?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca.distinguished_name = DistinguishedName::new();
    ca.distinguished_name
        .push(DnType::CommonName, format!("provisioner API CA ({host})"));
    ca.not_before = now - Duration::days(1);
    ca.not_after = now + Duration::days(3650);
    let ca_cert = ca.self_signed(&ca_key).map_err(invalid)?;

    let mut names = vec!["localhost".to_string(), host];
    names.dedup();
    let mut leaf = CertificateParams::new(names).map_err(invalid)?;
    let mut all_ips: Vec<IpAddr> = vec![
        IpAddr::from([127, 0, 0, 1]),
        IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1]),
    ];
    all_ips.extend(ips.iter().filter(|ip| !ip.is_unspecified()));
    all_ips.sort();
    all_ips.dedup();
    leaf.subject_alt_names
        .extend(all_ips.into_iter().map(SanType::IpAddress));
    leaf.distinguished_name = DistinguishedName::new();
    leaf.distinguished_name
        .push(DnType::CommonName, "provisioner API");
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf.use_authority_key_identifier_extension = true;
    leaf.not_before = now - Duration::days(1);
    leaf.not_after = now + Duration::days(3650);
    let leaf_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(invalid)?;
    let issuer = Issuer::from_params(&ca, &ca_key);
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer).map_err(invalid)?;
    // ca_key is dropped here: the CA can never sign again.

    // The key first, created 0600 so it is never readable by others, not even briefly.
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&files.key)
        .map_err(io(&files.key))?;
    f.write_all(leaf_key.serialize_pem().as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(io(&files.key))?;
    let chain = format!("{}{}", leaf_cert.pem(), ca_cert.pem());
    std::fs::write(&files.cert, chain).map_err(io(&files.cert))?;
    if let Some(ca_path) = &files.ca {
        std::fs::write(ca_path, ca_cert.pem()).map_err(io(ca_path))?;
    }
    Ok(())
}

/// A rustls server configuration for `files` (HTTP/2 and HTTP/1.1 by ALPN).
pub fn server_config(files: &TlsFiles) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|e| TlsError::Invalid(format!("{}: {e}", files.cert.display())))?
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Invalid(format!("{}: {e}", files.cert.display())))?;
    if certs.is_empty() {
        return Err(TlsError::Invalid(format!(
            "{}: no certificate",
            files.cert.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| TlsError::Invalid(format!("{}: {e}", files.key.display())))?;
    let mut cfg = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(invalid)?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn generated_once_key_private_and_loadable() {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let dir = tempfile::tempdir().unwrap();
        let files = prepare(&ApiTls::default(), dir.path(), &["10.0.0.1".parse().unwrap()]).unwrap();
        let mode = std::fs::metadata(&files.key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "key must be owner-only");
        let first = std::fs::read(&files.cert).unwrap();
        server_config(&files).unwrap();
        // Second start reuses the files.
        let again = prepare(&ApiTls::default(), dir.path(), &[]).unwrap();
        assert_eq!(again, files);
        assert_eq!(std::fs::read(&again.cert).unwrap(), first);
        let half = ApiTls {
            cert_file: Some("x".into()),
            key_file: None,
        };
        assert!(prepare(&half, dir.path(), &[]).is_err());
    }
}
