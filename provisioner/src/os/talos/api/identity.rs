//! The client identity for a Talos cluster: the OS CA that signs every apid server
//! certificate, and the `os:admin` client certificate and key (the talosconfig
//! identity, talos.md §5.6, §9.3). It comes from the cluster's secrets bundle (issue 4):
//! [`IdentitySource`] is the seam, so wiring the bundle in is one implementation.

use std::fmt;

/// PEM material for mTLS to a cluster's apid. `Debug` never prints the key.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterIdentity {
    /// The OS CA certificate (Ed25519) that issues apid server certificates.
    pub os_ca_pem: String,
    /// The client certificate: O=`os:admin`, EKU clientAuth only, signed by the OS CA.
    pub client_cert_pem: String,
    /// Its private key; Talos labels Ed25519 keys `ED25519 PRIVATE KEY` (accepted).
    pub client_key_pem: String,
}

impl fmt::Debug for ClusterIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterIdentity")
            .field("os_ca_pem", &format_args!("{} bytes", self.os_ca_pem.len()))
            .field(
                "client_cert_pem",
                &format_args!("{} bytes", self.client_cert_pem.len()),
            )
            .field("client_key_pem", &"<redacted>")
            .finish()
    }
}

/// Why a cluster's talosconfig identity is not available.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// The secret store failed.
    #[error("secret store: {0}")]
    Store(String),
    /// The cluster has no secrets bundle yet.
    #[error("cluster {0:?} has no secrets bundle")]
    NoBundle(String),
    /// A certificate could not be minted or does not parse.
    #[error("{0}")]
    Pki(String),
}

/// Where a cluster's identity comes from (issue 4's secrets bundle implements this).
pub trait IdentitySource: Send + Sync + fmt::Debug {
    /// The talosconfig identity of `cluster`.
    fn talos_identity(&self, cluster: &str) -> Result<ClusterIdentity, IdentityError>;
}

/// [`IdentitySource`] over the secrets bundles (issue 4's store): the OS CA from the
/// bundle, and an `os:admin` client certificate minted from it on each call (Ed25519,
/// cheap), exactly what `talosctl gen config` puts in a talosconfig.
#[derive(Debug, Clone)]
pub struct BundleIdentity {
    secrets: std::sync::Arc<dyn provisioner_core::talos::store::SecretStore>,
}

impl BundleIdentity {
    /// Identities from `secrets`.
    pub fn new(secrets: std::sync::Arc<dyn provisioner_core::talos::store::SecretStore>) -> Self {
        Self { secrets }
    }
}

impl IdentitySource for BundleIdentity {
    fn talos_identity(&self, cluster: &str) -> Result<ClusterIdentity, IdentityError> {
        use provisioner_core::talos::secrets::pem_field;
        let bundle = self
            .secrets
            .get(cluster)
            .map_err(|e| IdentityError::Store(e.to_string()))?
            .ok_or_else(|| IdentityError::NoBundle(cluster.to_string()))?;
        let (crt, key) = crate::pki::talos::admin_client_cert(&bundle, time::OffsetDateTime::now_utc())
            .map_err(|e| IdentityError::Pki(e.to_string()))?;
        let pem =
            |field: &str, b64: &str| pem_field(field, b64).map_err(|e| IdentityError::Pki(e.to_string()));
        let (_, os_ca_pem) = pem("certs.os.crt", &bundle.certs.os.crt)?;
        let (_, client_cert_pem) = pem("client crt", &crt)?;
        let (_, client_key_pem) = pem("client key", &key)?;
        Ok(ClusterIdentity {
            os_ca_pem,
            client_cert_pem,
            client_key_pem: normalize_key_pem(&client_key_pem),
        })
    }
}

/// Talos writes Ed25519 keys as PKCS#8 DER under the label `ED25519 PRIVATE KEY`
/// (siderolabs/crypto `x509.go`); rustls' PEM reader only knows `PRIVATE KEY` for
/// PKCS#8. Same bytes, so relabel.
pub fn normalize_key_pem(pem: &str) -> String {
    pem.replace(
        "-----BEGIN ED25519 PRIVATE KEY-----",
        "-----BEGIN PRIVATE KEY-----",
    )
    .replace("-----END ED25519 PRIVATE KEY-----", "-----END PRIVATE KEY-----")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relabels_talos_ed25519_keys_only() {
        let talos = "-----BEGIN ED25519 PRIVATE KEY-----\nMC4=\n-----END ED25519 PRIVATE KEY-----\n";
        assert_eq!(
            normalize_key_pem(talos),
            "-----BEGIN PRIVATE KEY-----\nMC4=\n-----END PRIVATE KEY-----\n"
        );
        let ec = "-----BEGIN EC PRIVATE KEY-----\nx\n-----END EC PRIVATE KEY-----\n";
        assert_eq!(normalize_key_pem(ec), ec);
    }

    #[test]
    fn bundle_identity_mints_an_admin_cert_from_the_os_ca() {
        use provisioner_core::talos::store::{MemSecretStore, SecretStore};
        let store = std::sync::Arc::new(MemSecretStore::new());
        let bundle = crate::pki::talos::generate(time::OffsetDateTime::now_utc()).unwrap();
        store.put("lab", &bundle).unwrap();
        let src = BundleIdentity::new(store);
        assert!(
            src.talos_identity("other")
                .unwrap_err()
                .to_string()
                .contains("no secrets bundle")
        );
        let id = src.talos_identity("lab").unwrap();
        assert!(id.os_ca_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(id.client_key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        let der = rustls_pemfile_der(&id.client_cert_pem);
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        let org: Vec<_> = cert
            .subject()
            .iter_organization()
            .map(|o| o.as_str().unwrap())
            .collect();
        assert_eq!(org, ["os:admin"]);
        assert!(!format!("{src:?}").contains("PRIVATE"));
    }

    fn rustls_pemfile_der(pem: &str) -> Vec<u8> {
        use base64::Engine;
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        base64::engine::general_purpose::STANDARD.decode(body).unwrap()
    }

    #[test]
    fn debug_hides_the_key() {
        let id = ClusterIdentity {
            os_ca_pem: "ca".into(),
            client_cert_pem: "crt".into(),
            client_key_pem: "SECRET".into(),
        };
        assert!(!format!("{id:?}").contains("SECRET"));
    }
}
