//! The appliance-owned k0s PKI (k0s-flatcar.md §11.2 option 1).
//!
//! k0s uses a pre-placed `ca.crt`/`ca.key` and `sa.key`/`sa.pub` in
//! `/var/lib/k0s/pki` instead of generating its own (k0s `docs/custom-ca.md`, which
//! makes them with `openssl genrsa 2048`; RSA-2048 here too, PKCS#8 `PRIVATE KEY`
//! PEM, which Go's key parsers and kube-apiserver read). With the CA in hand the
//! appliance signs its own admin client certificate (`O=system:masters`, the
//! group kube-apiserver's RBAC bootstrap binds to cluster-admin) and needs no
//! callback to get cluster credentials.

use provisioner_core::k0s::token::{BootstrapToken, Kubeconfig, UserEntry};
use rand::RngCore;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, PKCS_RSA_SHA256, RsaKeySize, SerialNumber,
};
use time::{Duration, OffsetDateTime};

use provisioner_core::k0s::store::K0sSecrets;

/// Why keys or certificates cannot be made or read (never secret material).
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// rcgen failed.
    #[error("certificate generation: {0}")]
    Rcgen(#[from] rcgen::Error),
}

/// CA lifetime: 10 years, as k0s's own CA.
pub const CA_VALIDITY: Duration = Duration::days(3650);
/// Admin client certificate lifetime. A `system:masters` certificate cannot be
/// revoked (Kubernetes has no CRL), so it is short-lived and re-minted on demand.
pub const ADMIN_VALIDITY: Duration = Duration::days(30);
/// The admin certificate's common name (its Kubernetes user name).
pub const ADMIN_USER: &str = "provisioner-admin";

fn serial() -> SerialNumber {
    let mut s = [0u8; 16];
    rand::rng().fill_bytes(&mut s);
    s[0] &= 0x7f;
    s[0] |= 0x01;
    SerialNumber::from_slice(&s)
}

fn ca_params(cluster: &str, now: OffsetDateTime) -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, format!("kubernetes-ca ({cluster})"));
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
    ];
    p.not_before = now - Duration::minutes(5);
    p.not_after = now + CA_VALIDITY;
    p.serial_number = Some(serial());
    p
}

/// A random bootstrap token.
pub fn new_token() -> BootstrapToken {
    let mut rng = rand::rng();
    BootstrapToken::generate(|| {
        let mut b = [0u8; 1];
        rng.fill_bytes(&mut b);
        b[0]
    })
}

/// New secrets for `cluster`: CA, service-account key pair and one join token per
/// worker hostname.
pub fn generate<'a>(
    cluster: &str,
    workers: impl IntoIterator<Item = &'a str>,
    now: OffsetDateTime,
) -> Result<K0sSecrets, PkiError> {
    let ca_key = KeyPair::generate_rsa_for(&PKCS_RSA_SHA256, RsaKeySize::_2048)?;
    let ca = ca_params(cluster, now).self_signed(&ca_key)?;
    let sa = KeyPair::generate_rsa_for(&PKCS_RSA_SHA256, RsaKeySize::_2048)?;
    let mut s = K0sSecrets {
        ca_crt: ca.pem(),
        ca_key: ca_key.serialize_pem(),
        sa_key: sa.serialize_pem(),
        sa_pub: sa.public_key_pem(),
        worker_tokens: Default::default(),
    };
    for w in workers {
        s.worker_tokens.insert(w.to_string(), new_token());
    }
    Ok(s)
}

/// A `system:masters` client certificate and key (PEM) signed by the cluster CA.
pub fn admin_client_cert(s: &K0sSecrets, now: OffsetDateTime) -> Result<(String, String), PkiError> {
    let ca_key = KeyPair::from_pem(&s.ca_key)?;
    let issuer = Issuer::from_ca_cert_pem(&s.ca_crt, ca_key)?;
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, ADMIN_USER);
    dn.push(DnType::OrganizationName, "system:masters");
    p.distinguished_name = dn;
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    p.not_before = now - Duration::minutes(5);
    p.not_after = now + ADMIN_VALIDITY;
    p.serial_number = Some(serial());
    p.use_authority_key_identifier_extension = true;
    let cert = p.signed_by(&key, &issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// The appliance's admin kubeconfig for the cluster at `api_url`.
pub fn admin_kubeconfig(
    cluster: &str,
    api_url: &str,
    s: &K0sSecrets,
    now: OffsetDateTime,
) -> Result<Kubeconfig, PkiError> {
    use base64::Engine;
    let b64 = |t: &str| base64::engine::general_purpose::STANDARD.encode(t);
    let (crt, key) = admin_client_cert(s, now)?;
    Ok(Kubeconfig::single(
        cluster,
        api_url,
        &s.ca_crt,
        ADMIN_USER,
        UserEntry {
            client_certificate_data: Some(b64(&crt)),
            client_key_data: Some(b64(&key)),
            ..Default::default()
        },
    ))
}
